"""The batched joint CTC/attention beam search (ESPnet's `BatchBeamSearch`, vectorised); trainer/decoding.py adds the greedy decoders.

The beam search runs every utterance of a batch and every hypothesis of each beam at once, with
fixed-shape tensors on the model's device: the decoder steps incrementally over its key/value
cache, candidates are pre-selected by the decoder score, the CTC prefix scorer scores them all
in one go, and one small host sync per step tells which utterances have finished (they leave
the batch). It returns the same n-best lists as ESPnet's search on auto_avsr's model (see
tests/test_search.py), keeping these ESPnet behaviours on purpose:

- a scorer whose weight is 0 is not run and has no entry in `Hypothesis.scores`; the pre-beam
  of `int(1.5 * beam_size)` tokens by decoder score is used only when both scorers run;
- eos is always a candidate (CTC scores it as the end of the sequence), blank never is when CTC runs;
- hypotheses that chose eos leave the beam, which refills from the others' candidates;
- at the last allowed step every running hypothesis ends with an unscored eos appended (one that
  chose eos there ends in two);
- with `max_len_ratio == 0` the limit is the number of encoder frames and ESPnet's end detection
  stops an utterance early; n-best ties keep the order in which hypotheses ended.

One difference: ESPnet computes `minlenratio` but never applies it; here eos is not allowed before
`int(min_len_ratio * frames)` tokens (the default 0 makes the two the same).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from trainer.config import DecodeConfig
from trainer.ctc_prefix import CTCPrefixScorer, CTCPrefixState

PARTS = ("decoder", "ctc", "length_bonus")
COMPACT_SHARE = 0.25  # finished utterances leave the batch once they are this share of it


@dataclass(frozen=True)
class SearchOptions:
    """Beam search settings; `from_config` reads them from `DecodeConfig`."""

    beam_size: int = 40  # hypotheses kept per utterance after each step
    ctc_weight: float = (
        0.1  # weight of CTC prefix scores, the decoder gets 1 - ctc_weight; weight 0 switches a scorer off
    )
    penalty: float = 0.0  # length bonus added per emitted token (eos included)
    max_len_ratio: float = 0.0  # at most max(1, int(ratio * frames)) steps; 0: frames, with end detection
    min_len_ratio: float = 0.0  # eos is not allowed before int(ratio * frames) tokens
    nbest: int = 1  # hypotheses returned per utterance, best first
    pre_beam_ratio: float = 1.5  # CTC scores int(ratio * beam_size) candidates per hypothesis, the decoder's best
    end_window: int = 3  # end detection: each of the last this many lengths has an ended hypothesis ...
    end_margin: float = math.log(math.exp(-10))  # ... whose best scores below the best ended one by more than this

    def __post_init__(self) -> None:
        if self.beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {self.beam_size}")
        if not 0.0 <= self.ctc_weight <= 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1], got {self.ctc_weight}")
        if self.max_len_ratio < 0 or self.min_len_ratio < 0:
            raise ValueError(
                f"max_len_ratio and min_len_ratio must be >= 0, got {self.max_len_ratio}, {self.min_len_ratio}"
            )
        if self.nbest < 1:
            raise ValueError(f"nbest must be >= 1, got {self.nbest}")

    @classmethod
    def from_config(cls, cfg: DecodeConfig) -> SearchOptions:
        return cls(cfg.beam_size, cfg.ctc_weight, cfg.penalty, cfg.max_len_ratio, cfg.min_len_ratio, cfg.nbest)

    @property
    def decoder_weight(self) -> float:
        return 1.0 - self.ctc_weight

    @property
    def pre_beam_size(self) -> int:
        return int(self.pre_beam_ratio * self.beam_size)

    @property
    def parts(self) -> tuple[str, ...]:
        """The scorers that run, as named in `Hypothesis.scores`."""
        on = (self.decoder_weight > 0, self.ctc_weight > 0, self.penalty != 0)
        return tuple(name for name, used in zip(PARTS, on, strict=True) if used)


@dataclass
class Hypothesis:
    """One decoded sequence."""

    yseq: list[int]  # sos, tokens, eos (two eos when it chose eos at the length limit), as ESPnet
    score: float  # weighted total
    scores: dict[str, float]  # unweighted totals of the parts that ran: decoder, ctc, length_bonus

    @property
    def token_ids(self) -> list[int]:
        """The tokens between sos and eos."""
        end = len(self.yseq)
        while end > 1 and self.yseq[end - 1] == self.yseq[0]:
            end -= 1
        return self.yseq[1:end]


def length_limits(lengths: Tensor, options: SearchOptions) -> tuple[Tensor, Tensor]:
    """Steps allowed and tokens required before eos, per utterance of `lengths` (B,) encoder frames (ESPnet's rule)."""
    frames = lengths.double()
    max_len = lengths.clone() if options.max_len_ratio == 0 else (options.max_len_ratio * frames).long().clamp(min=1)
    return max_len, (options.min_len_ratio * frames).long()


# --------------------------------------------------------------------------- beam search


@dataclass
class _Beams:
    """The running hypotheses of the utterances still searched; rows are utterance-major (b * per_utt + k)."""

    max_len: Tensor  # (nb,) steps allowed
    min_len: Tensor  # (nb,) tokens before eos is allowed
    tokens: Tensor  # (N,) last token of each hypothesis
    score: Tensor  # (N,) weighted total; -inf for an empty slot
    parts: Tensor  # (N, 3) unweighted decoder, ctc, length-bonus totals
    decoder: object | None  # the decoder's DecoderState of the N hypotheses
    ctc: CTCPrefixState | None
    ctc_scorer: CTCPrefixScorer | None
    best_by_len: Tensor  # (nb, L) best score of the ended hypotheses with each yseq length, for end detection

    def keep(self, index: Tensor, per_utt: int) -> _Beams:
        """Only the utterances at `index` (M,)."""
        rows = (index[:, None] * per_utt + torch.arange(per_utt, device=index.device)).view(-1)
        return _Beams(
            self.max_len[index],
            self.min_len[index],
            self.tokens[rows],
            self.score[rows],
            self.parts[rows],
            None if self.decoder is None else self.decoder.select(rows, utterances=index),
            None if self.ctc is None else self.ctc.select(rows),
            None if self.ctc_scorer is None else self.ctc_scorer.select_utterances(index),
            self.best_by_len[index],
        )


@dataclass
class _Step:
    """What one step chose for the utterances still searched, all (nb, K); kept to rebuild the n-best."""

    utt: list[int]  # index in the input batch of each of the nb utterances
    token: Tensor
    parent: Tensor  # slot of the hypothesis it extends, in the previous step
    ended: Tensor
    forced: Tensor  # (nb,) the step was the utterance's last: eos appended
    score: Tensor
    parts: Tensor  # (nb, K, 3)


def _check_inputs(
    decoder: torch.nn.Module | None, memory: Tensor | None, lengths: Tensor, ctc_log_probs: Tensor | None,
    options: SearchOptions,
) -> int:
    """The vocabulary size; a ValueError for inputs the search cannot run on."""
    use_dec, use_ctc = options.decoder_weight > 0, options.ctc_weight > 0
    if use_dec and (decoder is None or memory is None):
        raise ValueError("ctc_weight < 1 needs the decoder and the encoder output (memory)")
    if use_ctc and ctc_log_probs is None:
        raise ValueError("ctc_weight > 0 needs the CTC log-probabilities")
    vocab = ctc_log_probs.size(-1) if use_ctc else decoder.odim
    if options.beam_size > vocab:
        raise ValueError(
            f"beam_size {options.beam_size} is larger than the vocabulary ({vocab} tokens); use at most {vocab}"
        )
    if lengths.numel() and int(lengths.min()) < 1:
        raise ValueError(f"every utterance needs at least one encoder frame, got lengths {lengths.tolist()}")
    return vocab


@torch.no_grad()
def beam_search(
    decoder: torch.nn.Module | None,
    memory: Tensor | None,
    lengths: Tensor,
    ctc_log_probs: Tensor | None,
    options: SearchOptions,
    *,
    eos: int,
    blank: int = 0,
) -> list[list[Hypothesis]]:
    """Joint CTC/attention beam search over a padded batch of B utterances.

    decoder: a `TransformerDecoder` (`start`/`step`), unused when ctc_weight is 1; memory (B, T, D)
    the encoder output; lengths (B,) encoder frames; ctc_log_probs (B, T, V) log-softmax of the CTC
    head, unused when ctc_weight is 0; the sos is `eos`. Returns, per utterance, its `nbest` ended
    hypotheses, best first.
    """
    use_dec, use_ctc = options.decoder_weight > 0, options.ctc_weight > 0
    vocab = _check_inputs(decoder, memory, lengths, ctc_log_probs, options)
    batch = lengths.numel()
    if batch == 0:
        return []
    device = lengths.device
    pre_beam = use_dec and use_ctc and options.pre_beam_size < vocab
    max_len, min_len = length_limits(lengths, options)
    steps = int(max_len.max())

    scorer = CTCPrefixScorer.from_log_probs(ctc_log_probs, lengths, blank, eos) if use_ctc else None
    beams = _Beams(
        max_len=max_len,
        min_len=min_len,
        tokens=torch.full((batch,), eos, dtype=torch.long, device=device),
        score=torch.zeros(batch, device=device),
        parts=torch.zeros(batch, 3, device=device),
        decoder=decoder.start(memory, lengths) if use_dec else None,
        ctc=scorer.initial_state() if use_ctc else None,
        ctc_scorer=scorer,
        best_by_len=torch.full((batch, steps + 3), -math.inf, device=device),
    )
    active = list(range(batch))  # the input index of each utterance in `beams`
    finished = [False] * batch
    history: list[_Step] = []
    per_utt = 1  # hypotheses per utterance: the sos alone before the first step
    for i in range(steps):
        beams, step, done = _search_step(decoder, beams, i, per_utt, options, pre_beam, vocab, eos)
        history.append(dataclasses.replace(step, utt=active))
        per_utt = options.beam_size
        done_host = done.tolist()  # the one host sync per step
        newly = [d and not f for d, f in zip(done_host, finished, strict=True)]
        finished = [d or f for d, f in zip(done_host, finished, strict=True)]
        if all(finished):
            break
        beams, active, finished = _retire(beams, active, finished, newly, per_utt)
    return _nbest(history, batch, options, eos)


def _candidates(
    pre_beam_logp: Tensor | None, n: int, vocab: int, options: SearchOptions, eos: int, device: torch.device
) -> tuple[Tensor, Tensor | None]:
    """The tokens scored for each of the n hypotheses: the decoder's pre-beam plus eos (with a mask of the eos
    copies already in it), or the whole vocabulary (no mask)."""
    if pre_beam_logp is None:
        return torch.arange(vocab, device=device).expand(n, vocab), None  # (N, V)
    cands = pre_beam_logp.topk(options.pre_beam_size, dim=-1).indices  # (N, P)
    cands = torch.cat((cands, cands.new_full((n, 1), eos)), dim=1)  # (N, P + 1): eos always scored
    extra_eos = torch.zeros_like(cands, dtype=torch.bool)
    extra_eos[:, -1] = (cands[:, :-1] == eos).any(dim=1)  # already in the pre-beam: drop the copy
    return cands, extra_eos


def _retire(
    beams: _Beams, active: list[int], finished: list[bool], newly: list[bool], per_utt: int
) -> tuple[_Beams, list[int], list[bool]]:
    """Finished utterances leave the batch once they are COMPACT_SHARE of it (a copy of every state, so not each
    time one finishes); until then they stay, with no hypothesis left to extend."""
    device = beams.score.device
    if sum(finished) >= COMPACT_SHARE * len(finished):
        keep = [b for b, f in enumerate(finished) if not f]
        return beams.keep(torch.tensor(keep, device=device), per_utt), [active[b] for b in keep], [False] * len(keep)
    if any(newly):
        stop = torch.tensor(newly, device=device).repeat_interleave(per_utt)
        beams.score = beams.score.masked_fill(stop, -math.inf)
    return beams, active, finished


def _search_step(
    decoder: torch.nn.Module | None,
    beams: _Beams,
    i: int,
    per_utt: int,
    options: SearchOptions,
    pre_beam: bool,
    vocab: int,
    eos: int,
) -> tuple[_Beams, _Step, Tensor]:
    """Step i: score the candidates, keep the best `beam_size` per utterance, end hypotheses, detect the end.

    Returns the new beams, the step's record and (nb,) bool: the utterances that are finished.
    """
    nb, beam = beams.max_len.numel(), options.beam_size
    n = nb * per_utt
    device = beams.score.device

    dec_logp = dec_state = None
    if beams.decoder is not None:
        dec_logp, dec_state = decoder.step(beams.tokens, beams.decoder)  # (N, V)
    cands, extra_eos = _candidates(dec_logp if pre_beam else None, n, vocab, options, eos, device)  # (N, C)
    c = cands.size(1)

    zeros = torch.zeros(n, c, device=device)
    dec_part = dec_logp.gather(1, cands) if dec_logp is not None else zeros  # (N, C)
    psi, ctc_part = None, zeros
    if beams.ctc is not None:
        psi = beams.ctc_scorer.score(beams.ctc, beams.tokens, i, cands)  # (N, C)
        ctc_part = psi - beams.ctc.psi[:, None]
    weighted = options.decoder_weight * dec_part + options.penalty
    weighted = weighted + options.ctc_weight * ctc_part
    weighted = weighted + beams.score[:, None]  # (N, C); -inf on empty slots
    too_short = (i < beams.min_len).repeat_interleave(per_utt)[:, None] & (cands == eos)
    weighted = weighted.masked_fill(too_short if extra_eos is None else too_short | extra_eos, -math.inf)

    # the best `beam` extensions of each utterance, over all its hypotheses
    score, top = weighted.view(nb, per_utt * c).topk(beam, dim=1)  # (nb, K), sorted
    parent = top // c
    src = (torch.arange(nb, device=device)[:, None] * per_utt + parent).view(-1)  # (nb*K,) row extended
    col = (top % c).view(-1)
    token = cands[src, col]
    step_parts = torch.stack((dec_part[src, col], ctc_part[src, col], torch.ones_like(dec_part[src, col])), dim=1)
    parts = beams.parts[src] + step_parts  # (nb*K, 3)

    forced, ended, running, best_by_len, done = _ends(beams, score, token.view(nb, beam), i, options, eos)

    new = _Beams(
        beams.max_len,
        beams.min_len,
        token,
        score.view(-1).masked_fill(~running.view(-1), -math.inf),
        parts,
        None if dec_state is None else dec_state.select(src),
        None if psi is None else beams.ctc_scorer.extend(beams.ctc, src, token, beams.tokens, psi[src, col], i),
        beams.ctc_scorer,
        best_by_len,
    )
    step = _Step([], token.view(nb, beam), parent, ended, forced, score, parts.view(nb, beam, 3))
    return new, step, done


def _ends(
    beams: _Beams, score: Tensor, token: Tensor, i: int, options: SearchOptions, eos: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Which of the (nb, K) new hypotheses ended: chose eos, or step i is the utterance's last (then eos is
    appended unscored). Returns forced (nb,), ended and running (nb, K), the best ended score by length, and
    done (nb,): the utterances that are finished."""
    valid = score > -math.inf
    forced = beams.max_len - 1 == i  # (nb,)
    ended = valid & ((token == eos) | forced[:, None])
    running = valid & ~ended
    yseq_len = (i + 2 + forced.long())[:, None].expand_as(token)  # sos + i + 1 tokens (+ the appended eos)
    best_by_len = beams.best_by_len.scatter_reduce(1, yseq_len, score.masked_fill(~ended, -math.inf), reduce="amax")
    done = forced | ~running.any(dim=1)
    if options.max_len_ratio == 0:
        done = done | _end_detected(best_by_len, i, options)
    return forced, ended, running, best_by_len, done


def _end_detected(best_by_len: Tensor, i: int, options: SearchOptions) -> Tensor:
    """ESPnet's `end_detect` (Watanabe et al. 2017, eq. 50) after step i, per utterance: (nb,) bool.

    True when each of the yseq lengths i, i - 1, ..., i - M + 1 has an ended hypothesis and the
    best of them scores more than `end_margin` below the best ended hypothesis.
    """
    lens = [i - m for m in range(options.end_window)]
    if min(lens) < 0:
        return torch.zeros(best_by_len.size(0), dtype=torch.bool, device=best_by_len.device)
    best = best_by_len.amax(dim=1, keepdim=True)  # (nb, 1)
    same = best_by_len[:, lens]  # (nb, M)
    return ((same > -math.inf) & (same - best < options.end_margin)).all(dim=1)


def _nbest(history: list[_Step], batch: int, options: SearchOptions, eos: int) -> list[list[Hypothesis]]:
    """Rank each utterance's ended hypotheses (ties in the order they ended, as ESPnet) and rebuild the best ones."""
    names = options.parts
    cols = [PARTS.index(name) for name in names]
    fields = [[getattr(s, f).reshape(-1) for s in history] for f in ("token", "parent", "ended", "forced", "score")]
    token, parent, ended, forced, score = (torch.cat(f).tolist() for f in fields)  # one transfer each
    parts = torch.cat([s.parts.reshape(-1, 3) for s in history])[:, cols]  # (rows, parts)
    beam = options.beam_size

    # per step and utterance: offset of its (K,) slots in the flat lists
    offsets: list[dict[int, int]] = []
    pos = 0
    for s in history:
        offsets.append({b: pos + j * beam for j, b in enumerate(s.utt)})
        pos += len(s.utt) * beam
    forced_at: list[dict[int, bool]] = []
    pos = 0
    for s in history:
        forced_at.append({b: forced[pos + j] for j, b in enumerate(s.utt)})
        pos += len(s.utt)

    out: list[list[Hypothesis]] = []
    rows: list[int] = []  # the returned hypotheses' rows of `parts`
    for b in range(batch):
        finished = [(i, k) for i, off in enumerate(offsets) if b in off for k in range(beam) if ended[off[b] + k]]
        finished.sort(key=lambda ik: -score[offsets[ik[0]][b] + ik[1]])  # stable: ties stay in ending order
        hyps = []
        for i, k in finished[: options.nbest]:
            at = offsets[i][b] + k
            seq, slot = [], k
            for s in range(i, -1, -1):
                seq.append(token[offsets[s][b] + slot])
                slot = parent[offsets[s][b] + slot]
            yseq = [eos, *reversed(seq)] + ([eos] if forced_at[i][b] else [])
            hyps.append(Hypothesis(yseq, score[at], {}))
            rows.append(at)
        out.append(hyps)
    chosen = iter(parts[torch.tensor(rows, dtype=torch.long, device=parts.device)].tolist())  # one transfer
    for hyp in (h for hyps in out for h in hyps):
        hyp.scores = dict(zip(names, next(chosen), strict=True))
    return out
