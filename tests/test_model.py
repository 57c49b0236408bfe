"""The model: decoder incremental API, parity with auto_avsr's reference outputs, padding invariance, freezing."""

from __future__ import annotations

import pytest
import torch

from trainer.model import attention
from trainer.model.decoder import TransformerDecoder


def small_decoder(odim: int = 11, seed: int = 0) -> TransformerDecoder:
    torch.manual_seed(seed)
    return TransformerDecoder(odim=odim, dim=16, heads=4, ffn_dim=32, layers=2, dropout=0.1).eval()


def decode_stepwise(decoder: TransformerDecoder, tokens: torch.Tensor, memory, lengths) -> torch.Tensor:
    """Feed tokens (B, L) one position at a time through start/step -> (B, L, odim) log-probs."""
    state = decoder.start(memory, lengths)
    out = []
    for i in range(tokens.size(1)):
        logp, state = decoder.step(tokens[:, i], state)
        out.append(logp)
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("sdpa", [True, False])
def test_decoder_step_matches_teacher_forcing(monkeypatch, sdpa):
    monkeypatch.setattr(attention, "USE_SDPA", sdpa)
    decoder = small_decoder()
    memory = torch.randn(3, 9, 16)
    lengths = torch.tensor([9, 5, 2])
    tokens = torch.randint(0, 11, (3, 7))
    with torch.no_grad():
        full = torch.log_softmax(decoder(tokens, memory, lengths), dim=-1)
        steps = decode_stepwise(decoder, tokens, memory, lengths)
    torch.testing.assert_close(steps, full, rtol=0, atol=1e-5)


def test_decoder_ignores_padded_memory_frames():
    decoder = small_decoder()
    memory = torch.randn(1, 5, 16)
    tokens = torch.randint(0, 11, (1, 4))
    padded = torch.cat([memory, 100 * torch.randn(1, 3, 16)], dim=1)
    with torch.no_grad():
        alone = decoder(tokens, memory, torch.tensor([5]))
        in_batch = decoder(tokens, padded, torch.tensor([5]))
    torch.testing.assert_close(in_batch, alone, rtol=0, atol=1e-5)


def test_decoder_state_select_reorders_and_expands():
    decoder = small_decoder()
    memory = torch.randn(2, 6, 16)
    lengths = torch.tensor([6, 4])
    prefix = torch.tensor([[10, 3, 4], [10, 5, 1]])
    nxt = torch.tensor([7, 2, 2])
    index = torch.tensor([1, 0, 1])  # reorder and duplicate: M = 3 rows from N = 2
    with torch.no_grad():
        state = decoder.start(memory, lengths)
        for i in range(prefix.size(1)):
            _, state = decoder.step(prefix[:, i], state)
        got, state = decoder.step(nxt, state.select(index))
        # the same hypotheses built from scratch in the selected order
        fresh = decode_stepwise(decoder, torch.cat([prefix[index], nxt[:, None]], dim=1), memory[index], lengths[index])
    torch.testing.assert_close(got, fresh[:, -1], rtol=0, atol=1e-5)
    assert state.length == 4 and state.self_k[0].shape[:3] == (3, 4, 4)
    assert state.src_k[1].shape[0] == 3 and state.src_mask.shape == (3, 1, 1, 6)


def test_decoder_sdpa_and_plain_math_agree(monkeypatch):
    decoder = small_decoder()
    memory = torch.randn(2, 8, 16)
    lengths = torch.tensor([8, 3])
    tokens = torch.randint(0, 11, (2, 5))
    with torch.no_grad():
        a = decoder(tokens, memory, lengths)
        monkeypatch.setattr(attention, "USE_SDPA", False)
        b = decoder(tokens, memory, lengths)
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
