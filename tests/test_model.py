"""The model: decoder incremental API, parity with auto_avsr's reference outputs, padding invariance, freezing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from trainer.config import DecoderConfig, EncoderConfig, FreezeConfig, FrontendConfig, ModelConfig
from trainer.model import LipReader, apply_freezing, attention, build_model, count_parameters
from trainer.model.decoder import TransformerDecoder
from trainer.model.encoder import ConformerEncoder, rel_shift
from trainer.model.frontend import Frontend
from trainer.model.lipreader import decoder_io, label_smoothing_loss


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
@pytest.mark.parametrize(
    "lengths, n_steps",
    [([9, 5, 2], 7), ([5, 3], 40)],  # 40 steps: a new cache buffer every `GROWTH` positions, several times
)
def test_decoder_step_matches_teacher_forcing(monkeypatch, sdpa, lengths, n_steps):
    monkeypatch.setattr(attention, "USE_SDPA", sdpa)
    decoder = small_decoder()
    memory = torch.randn(len(lengths), max(lengths), 16)
    lengths = torch.tensor(lengths)
    tokens = torch.randint(0, 11, (len(lengths), n_steps))
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


def test_decoder_state_select_reorders_expands_and_drops_utterances():
    """Rows move within their utterance (the cross-attention keys stay once per utterance); utterances can be dropped."""
    decoder = small_decoder()
    memory = torch.randn(2, 6, 16)
    lengths = torch.tensor([6, 4])
    prefix = torch.tensor([[10, 3], [10, 5]])
    with torch.no_grad():
        state = decoder.start(memory, lengths)
        for i in range(prefix.size(1)):
            _, state = decoder.step(prefix[:, i], state)
        _, state = decoder.step(torch.tensor([4, 4, 1, 1]), state.select(torch.tensor([0, 0, 1, 1])))  # 2 rows each
        seqs = torch.tensor([[10, 3, 4], [10, 3, 4], [10, 5, 1], [10, 5, 1]])
        rows = torch.tensor([1, 0, 3, 3])  # reorder within utterance 0, duplicate in utterance 1
        nxt = torch.tensor([7, 2, 2, 9])
        got, state = decoder.step(nxt, state.select(rows))
        # the same hypotheses built from scratch, each with its own copy of the encoder output
        fresh = decode_stepwise(
            decoder, torch.cat([seqs[rows], nxt[:, None]], 1), memory[[0, 0, 1, 1]], lengths[[0, 0, 1, 1]]
        )
        torch.testing.assert_close(got, fresh[:, -1], rtol=0, atol=1e-5)
        assert state.length == 4 and state.kv.shape == (2, 2, 4, 4, 4, 4) and state.src_k[1].shape[0] == 2

        # keep utterance 1 alone, its two hypotheses swapped
        kept = state.select(torch.tensor([3, 2]), utterances=torch.tensor([1]))
        got, kept = decoder.step(torch.tensor([5, 6]), kept)
        seqs = torch.cat([seqs[rows], nxt[:, None]], 1)[[3, 2]]
        fresh = decode_stepwise(
            decoder, torch.cat([seqs, torch.tensor([[5], [6]])], 1), memory[[1, 1]], lengths[[1, 1]]
        )
    torch.testing.assert_close(got, fresh[:, -1], rtol=0, atol=1e-5)
    assert kept.src_k[0].shape[0] == 1 and kept.src_mask.shape == (1, 1, 1, 6) and kept.kv.size(2) == 2


def test_decoder_step_with_more_tokens_than_hypotheses_asks_for_select():
    decoder = small_decoder()
    state = decoder.start(torch.randn(2, 5, 16), torch.tensor([5, 3]))
    with torch.no_grad(), pytest.raises(ValueError, match="select the hypotheses first"):
        decoder.step(torch.tensor([1, 2, 3, 4]), state)


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


# --------------------------------------------------------------------------- the joint model


def tiny_config(**kw) -> ModelConfig:
    cfg = ModelConfig(
        frontend=FrontendConfig([4, 8, 8, 16]),
        encoder=EncoderConfig(16, 2, 32, 2, 5),
        decoder=DecoderConfig(16, 2, 32, 1),
    )
    for k, v in kw.items():
        setattr(cfg, k, v)
    return cfg


def reference_config(expected: dict) -> ModelConfig:
    c = expected["config"]
    return ModelConfig(
        frontend=FrontendConfig(c["frontend_widths"]),
        encoder=EncoderConfig(c["adim"], c["aheads"], c["eunits"], c["elayers"], c["cnn_module_kernel"]),
        decoder=DecoderConfig(c["ddim"], c["dheads"], c["dunits"], c["dlayers"]),
        ctc_weight=c["ctc_weight"],
    )


class Reference:
    """auto_avsr's small model, its inputs and its outputs (../shared/reference/auto_avsr_small)."""

    def __init__(self, root: Path):
        folder = root / "auto_avsr_small"
        self.expected = json.loads((folder / "expected.json").read_text())
        self.tensors = torch.load(folder / "tensors.pt", weights_only=True)
        self.model = LipReader(reference_config(self.expected), self.expected["config"]["odim"])
        self.model.load_state_dict(torch.load(folder / "model.pth", weights_only=True))
        self.model.eval()
        norm = self.expected["normalize"]
        self.videos = [
            ((self.tensors[f"video.{i}"].float() / 255) - norm["mean"]) / norm["std"]  # (T, H, W)
            for i in range(len(self.expected["lengths"]))
        ]

    def targets(self) -> torch.Tensor:
        rows = self.expected["targets"]
        width = max(map(len, rows))
        return torch.tensor([r + [-1] * (width - len(r)) for r in rows])


@pytest.fixture
def reference(reference_dir) -> Reference:
    return Reference(reference_dir)


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max-abs difference over max-abs of the reference (the README's measure)."""
    return ((got - want).abs().max() / want.abs().max()).item()


def test_base_state_dict_keys_and_shapes_equal_auto_avsr(reference_dir):
    manifest = json.loads((reference_dir / "auto_avsr_vsr_base_keys.json").read_text())
    with torch.device("meta"):
        model = LipReader(ModelConfig(), manifest["odim"])
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == manifest["state_dict"]
    assert sum(p.numel() for p in model.parameters()) == manifest["num_parameters"]


@pytest.mark.parametrize("sdpa", [True, False])
def test_per_utterance_parity_with_auto_avsr(reference, monkeypatch, sdpa):
    monkeypatch.setattr(attention, "USE_SDPA", sdpa)
    model, t = reference.model, reference.tensors
    with torch.no_grad():
        for i, video in enumerate(reference.videos):
            x, lengths = video[None, :, None], torch.tensor([video.size(0)])
            features = model.frontend(x, lengths)
            enc, _ = model.encode(x, lengths)
            logp = model.ctc_log_probs(enc)
            assert relative_error(features[0], t[f"frontend.{i}"]) < 1e-4
            assert relative_error(enc[0], t[f"encoder.{i}"]) < 1e-4
            assert relative_error(logp[0], t[f"ctc_logp.{i}"]) < 1e-4


def test_batch_losses_accuracy_and_decoder_logits_match_auto_avsr(reference):
    want = reference.expected["batch_forward"]
    frames = want["frames"]
    video = torch.stack([v[:frames] for v in reference.videos])[:, :, None]  # (B, T, 1, H, W)
    lengths = torch.full((video.size(0),), frames)
    with torch.no_grad():
        out = reference.model(video, lengths, reference.targets())
    for name in ("loss", "loss_ctc", "loss_att"):
        assert abs(getattr(out, name).item() - want[name]) <= 1e-4 * abs(want[name]), name
    assert out.acc.item() == pytest.approx(want["acc"], abs=1e-6)
    assert relative_error(out.decoder_logits, reference.tensors["batch.decoder_logits"]) < 1e-4


def test_padded_batch_gives_each_utterance_its_own_outputs(reference):
    """Padded frames hold noise: real frames must still match the per-utterance (unpadded) references."""
    videos, t = reference.videos, reference.tensors
    frames = max(v.size(0) for v in videos)
    torch.manual_seed(0)
    batch = 3 * torch.randn(len(videos), frames, 1, 88, 88)
    for i, v in enumerate(videos):
        batch[i, : v.size(0), 0] = v
    lengths = torch.tensor([v.size(0) for v in videos])
    with torch.no_grad():
        enc, _ = reference.model.encode(batch, lengths)
        logp = reference.model.ctc_log_probs(enc)
    for i, n in enumerate(lengths.tolist()):
        assert relative_error(enc[i, :n], t[f"encoder.{i}"]) < 1e-4
        assert relative_error(logp[i, :n], t[f"ctc_logp.{i}"]) < 1e-4


def test_features_path_equals_video_path(reference):
    video = torch.stack([v[:29] for v in reference.videos])[:, :, None]
    lengths = torch.tensor([29, 25, 20])
    targets = reference.targets()
    with torch.no_grad():
        a = reference.model(video, lengths, targets)
        b = reference.model.forward_from_features(reference.model.frontend(video, lengths), lengths, targets)
    assert torch.equal(a.loss, b.loss) and torch.equal(a.decoder_logits, b.decoder_logits)


def test_encoder_padding_invariance_without_reference():
    torch.manual_seed(0)
    encoder = ConformerEncoder(16, 2, 32, 2, 7, 0.1).eval()
    x = torch.randn(1, 6, 16)
    padded = torch.cat([x, 50 * torch.randn(1, 4, 16)], dim=1)
    with torch.no_grad():
        alone, _ = encoder(x, torch.tensor([6]))
        batched, _ = encoder(torch.cat([padded, torch.randn(1, 10, 16)]), torch.tensor([6, 10]))
    torch.testing.assert_close(batched[0, :6], alone[0], rtol=0, atol=1e-5)


def test_frontend_padding_invariance_without_reference():
    torch.manual_seed(0)
    frontend = Frontend([4, 8, 8, 16]).eval()
    x = torch.randn(1, 5, 1, 24, 24)
    padded = torch.cat([x, torch.randn(1, 3, 1, 24, 24)], dim=1)
    with torch.no_grad():
        alone = frontend(x, torch.tensor([5]))
        batched = frontend(padded, torch.tensor([5]))
    torch.testing.assert_close(batched[:, :5], alone, rtol=0, atol=1e-5)


def test_rel_shift_puts_relative_position_i_minus_j_at_i_j():
    t = 5
    positions = torch.arange(t - 1, -t, -1).float()  # T-1 .. -(T-1)
    scores = positions.expand(2, 3, t, 2 * t - 1)  # each entry holds its relative position
    shifted = rel_shift(scores)
    i, j = torch.meshgrid(torch.arange(t), torch.arange(t), indexing="ij")
    assert torch.equal(shifted, (i - j).float().expand(2, 3, t, t))


def test_decoder_io_pads_inputs_with_eos_and_outputs_with_ignore():
    targets = torch.tensor([[5, 6, 7], [8, -1, -1]])
    ys_in, ys_out = decoder_io(targets, sos=9, eos=9)
    assert ys_in.tolist() == [[9, 5, 6, 7], [9, 8, 9, 9]]
    assert ys_out.tolist() == [[5, 6, 7, 9], [8, 9, -1, -1]]


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.3])
def test_label_smoothing_loss_is_kl_to_smoothed_targets(smoothing):
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 7)
    targets = torch.tensor([[1, 2, 3, -1], [4, 5, -1, -1]])
    real = targets != -1
    true = torch.full((2, 4, 7), smoothing / 6).scatter(-1, targets.clamp(min=0)[..., None], 1 - smoothing)
    kl = torch.nn.functional.kl_div(torch.log_softmax(logits, -1), true, reduction="none").sum(-1)
    want = kl[real].sum() / 2
    torch.testing.assert_close(label_smoothing_loss(logits, targets, smoothing), want)
    if smoothing == 0.0:
        ce = torch.nn.functional.cross_entropy(logits[real], targets[real], reduction="sum") / 2
        torch.testing.assert_close(label_smoothing_loss(logits, targets, 0.0), ce)


def test_training_step_gives_finite_gradients_everywhere():
    torch.manual_seed(0)
    model = LipReader(tiny_config(adapter="mlp"), odim=12).train()
    video = torch.randn(2, 6, 1, 24, 24)
    out = model(video, torch.tensor([6, 4]), torch.tensor([[1, 2, 3], [4, -1, -1]]))
    out.loss.backward()
    assert out.decoder_logits.shape == (2, 4, 12) and out.ctc_log_probs.shape == (2, 6, 12)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_adapter_starts_as_identity_and_adds_only_adapter_keys(kind):
    torch.manual_seed(0)
    plain = LipReader(tiny_config(), odim=12).eval()
    adapted = LipReader(tiny_config(adapter=kind), odim=12).eval()
    extra = set(adapted.state_dict()) - set(plain.state_dict())
    assert extra and all(k.startswith("adapter.") for k in extra)
    adapted.load_state_dict(plain.state_dict(), strict=False)
    video, lengths = torch.randn(1, 5, 1, 24, 24), torch.tensor([5])
    with torch.no_grad():
        torch.testing.assert_close(adapted.encode(video, lengths)[0], plain.encode(video, lengths)[0])


@pytest.mark.parametrize("encoder_layers", [1, -1])
def test_freezing_keeps_frozen_weights_bit_identical_after_an_optimizer_step(encoder_layers):
    torch.manual_seed(0)
    cfg = tiny_config(adapter="linear")
    cfg.freeze = FreezeConfig(frontend=True, encoder_layers=encoder_layers)
    model = build_model(cfg, odim=12)
    frozen = ["frontend.", "proj_encoder.", "encoder.encoders.0."]
    frozen += ["encoder.encoders.1.", "encoder.after_norm."] if encoder_layers == -1 else []
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    bn = model.frontend.frontend3D[1]
    assert not bn.training and model.decoder.training  # frozen BatchNorm stays in eval mode
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.1)
    out = model(torch.randn(2, 6, 1, 24, 24), torch.tensor([6, 5]), torch.tensor([[1, 2], [3, -1]]))
    out.loss.backward()
    opt.step()
    after = model.state_dict()
    for key, old in before.items():
        if key.startswith(tuple(frozen)):
            assert torch.equal(after[key], old), f"{key} changed although frozen"
    changed = [k for k in before if not k.startswith(tuple(frozen)) and not torch.equal(after[k], before[k])]
    assert any(k.startswith("decoder.") for k in changed) and any(k.startswith("adapter.") for k in changed)
    if encoder_layers == 1:
        assert any(k.startswith("encoder.encoders.1.") for k in changed)
    table = count_parameters(model)
    rows = {r.part: r for r in table.rows}
    assert rows["frontend"].trainable == 0 and rows["decoder"].trainable == rows["decoder"].total
    assert "frontend" in str(table) and table.total == sum(p.numel() for p in model.parameters())


def test_apply_freezing_names_frozen_parts():
    model = LipReader(tiny_config(), odim=12)
    names = apply_freezing(model, FreezeConfig(frontend=False, encoder_layers=1))
    assert names == ["proj_encoder", "encoder.encoders.0"]
    assert not any(p.requires_grad for p in model.encoder.encoders[0].parameters())
    assert all(p.requires_grad for p in model.encoder.encoders[1].parameters())
    assert apply_freezing(model, FreezeConfig(frontend=True, encoder_layers=0)) == ["frontend"]
    assert all(p.requires_grad for p in model.encoder.parameters())
    model.train()
    assert not model.frontend.trunk.layer1[0].bn1.training and model.encoder.encoders[0].conv_module.norm.training
