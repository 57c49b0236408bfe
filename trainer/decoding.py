"""Decoding with a lipreader: `decode` picks the beam search (trainer/search.py), CTC greedy or attention greedy."""

from __future__ import annotations

import torch
from torch import Tensor

from trainer.model import LipReader
from trainer.search import Hypothesis, SearchOptions, beam_search, length_limits

METHODS = ("beam", "ctc_greedy", "att_greedy")


@torch.no_grad()
def decode(
    model: LipReader, enc: Tensor, lengths: Tensor, options: SearchOptions, method: str = "beam"
) -> list[list[Hypothesis]]:
    """Decode the encoder output (B, T, D), lengths (B,) of `model` with `method` (beam, ctc_greedy or att_greedy).

    Returns the n-best per utterance, best first (one hypothesis for the greedy methods).
    """
    if method == "beam":
        use_ctc = options.ctc_weight > 0
        logp = model.ctc_log_probs(enc) if use_ctc else None
        return beam_search(model.decoder, enc, lengths, logp, options, eos=model.eos, blank=model.blank)
    if method == "ctc_greedy":
        return [[h] for h in ctc_greedy(model.ctc_log_probs(enc), lengths, blank=model.blank, eos=model.eos)]
    if method == "att_greedy":
        return [
            [h] for h in att_greedy(model.decoder, enc, lengths, eos=model.eos, max_len_ratio=options.max_len_ratio)
        ]
    raise ValueError(f"decoding method must be one of {', '.join(METHODS)}, got {method!r}")


# --------------------------------------------------------------------------- greedy decoders


@torch.no_grad()
def ctc_greedy(log_probs: Tensor, lengths: Tensor, *, blank: int = 0, eos: int | None = None) -> list[Hypothesis]:
    """Best CTC path: argmax per frame, repeats collapsed, blanks dropped.

    log_probs (B, T, V), lengths (B,) frames. `score` and `scores["ctc"]` are the best path's log-prob;
    `yseq` is wrapped in sos/eos = `eos` (default V - 1) like the beam search's.
    """
    eos = log_probs.size(-1) - 1 if eos is None else eos
    best, path = log_probs.max(dim=-1)  # (B, T)
    real = torch.arange(log_probs.size(1), device=log_probs.device)[None, :] < lengths[:, None]  # (B, T)
    previous = torch.cat((torch.full_like(path[:, :1], -1), path[:, :-1]), dim=1)
    keep = real & (path != blank) & (path != previous)
    totals = (best.float() * real).sum(dim=1).tolist()
    paths, keeps = path.tolist(), keep.tolist()
    out = []
    for p, k, total in zip(paths, keeps, totals, strict=True):
        ids = [t for t, kept in zip(p, k, strict=True) if kept]
        out.append(Hypothesis([eos, *ids, eos], total, {"ctc": total}))
    return out


@torch.no_grad()
def att_greedy(
    decoder: torch.nn.Module, memory: Tensor, lengths: Tensor, *, eos: int, max_len_ratio: float = 0.0
) -> list[Hypothesis]:
    """Attention greedy decoding: the decoder's best token at each step until eos or the length limit.

    memory (B, T, D), lengths (B,) encoder frames. The same as the beam search with beam 1 and
    ctc_weight 0 (an unscored eos ends a hypothesis cut at the limit).
    """
    batch = lengths.numel()
    max_len, _ = length_limits(lengths, SearchOptions(beam_size=1, ctc_weight=0.0, max_len_ratio=max_len_ratio))
    state = decoder.start(memory, lengths)
    tokens = torch.full((batch,), eos, dtype=torch.long, device=lengths.device)
    total = torch.zeros(batch, device=lengths.device)
    running = torch.ones(batch, dtype=torch.bool, device=lengths.device)
    chosen = []
    for i in range(int(max_len.max())):
        logp, state = decoder.step(tokens, state)  # (B, V)
        best, tokens = logp.max(dim=-1)
        total = total + best * running
        chosen.append(tokens.masked_fill(~running, -1))
        running = running & (tokens != eos) & (max_len - 1 > i)
        if not bool(running.any()):  # the one host sync per step
            break
    out = []
    for seq, forced_len, score in zip(torch.stack(chosen, 1).tolist(), max_len.tolist(), total.tolist(), strict=True):
        ids = [t for t in seq if t != -1]
        cut = len(ids) == forced_len  # cut at the limit: eos appended
        out.append(Hypothesis([eos, *ids] + ([eos] if cut else []), score, {"decoder": score}))
    return out
