"""The one evaluation path: decode a split, score it, one row per clip.

Training's validation, `eval`, decoding sweeps, diagnose's re-decode, the sanity model and the benchmarks
all call `evaluate` (or, on a batch they built themselves, `decode_rows` and `score`). Every clip is decoded
with the configured method (the joint beam search by default) and with CTC greedy; blank and sos/eos are
dropped from every output. The metric names are the registry's (trainer/metrics.py).

A row holds: `id`, `frames`, `ref` (the label's words joined by spaces), `hyp` (text), `edits` (token edit
distance to the reference), `ref_tokens`, `ctc_hyp`, `ctc_edits` (CTC greedy), `cer` (edits / ref_tokens),
`score` (the best hypothesis' total), and the ids `ref_ids`, `hyp_ids`, `ctc_ids`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import editdistance
import torch
from tqdm import tqdm

from trainer import distributed
from trainer import frontend_cache as fcache
from trainer.config import Config
from trainer.data import Dataset, load_dataset, make_batches
from trainer.decoding import ctc_greedy, decode
from trainer.device import Precision
from trainer.errors import ConfigError
from trainer.inputs import Inputs, autocast
from trainer.metrics import METRICS
from trainer.model import LipReader
from trainer.search import Hypothesis, SearchOptions
from trainer.text import Tokenizer, cer, diacritic_error_rate, letter_error_rate, wer

LOSSES = ("loss", "loss_ctc", "loss_att")
STATUS_EVERY_S = 30.0  # without a terminal: a status line at most this often

# best_constant's limits (see its docstring)
EXACT_PAIRS = 200_000
CANDIDATES = 2000
PROBE_CLIPS = 64
FINALISTS = 16


@dataclass
class EvalSet:
    """Clips to evaluate and what scoring them needs: the tokenizer and the run's constant baseline."""

    data: Dataset
    tokenizer: Tokenizer
    indices: list[int]
    baseline: list[int]  # best_constant of the training clips: val/cer_baseline


@dataclass
class EvalResult:
    metrics: dict[str, float]
    rows: list[dict[str, Any]]  # one per clip, in the order of EvalSet.indices
    seconds: float = 0.0


def eval_set(data: Dataset, tokenizer: Tokenizer, parts: dict[str, list[int]], split: str = "val") -> EvalSet:
    """The `split` (train, val, test or all) of `data`, split as `data.split` gives `parts`."""
    indices = list(range(len(data))) if split == "all" else list(parts[split])
    return EvalSet(data, tokenizer, indices, best_constant([data.targets[i] for i in parts["train"]]))


def load_eval_set(cfg: Config, split: str = "val", log: Callable[[str], None] | None = None) -> EvalSet:
    """The dataset of cfg.data and its `split`; a ConfigError when that split is empty."""
    tokenizer = Tokenizer.from_config(cfg.data)
    data = load_dataset(cfg.data, tokenizer, log or (lambda msg: print(msg, file=sys.stderr)))
    clips = eval_set(data, tokenizer, data.split(cfg.data), split)
    if not clips.indices:
        raise ConfigError(
            f"the {split} split of {cfg.data.root} is empty (data.val_ratio / data.test_ratio); try --split all"
        )
    return clips


def best_constant(targets: Sequence[Sequence[int]]) -> list[int]:
    """The constant output with the lowest CER over `targets` (the training clips): one of them, or the empty output.

    Exact when (distinct transcripts x clips) is at most 200,000 edit distances. Otherwise, for speed:
    at most 2000 distinct transcripts (evenly spaced over their sorted order) are scored on 64 evenly
    spaced clips, then the 16 best of them and the empty output on every clip. Deterministic (no random
    draw); ties go to the shorter, then the smaller transcript.
    """
    clips = [list(t) for t in targets]
    candidates = sorted({tuple(t) for t in clips})
    if len(candidates) * len(clips) > EXACT_PAIRS:
        probe = _evenly(clips, PROBE_CLIPS)
        candidates = sorted(_evenly(candidates, CANDIDATES), key=lambda c: _rank(c, probe))[:FINALISTS]
    return list(min([(), *candidates], key=lambda c: _rank(c, clips)))


def _evenly(items: Sequence, k: int) -> list:
    """At most `k` of `items`, evenly spaced, the first included."""
    if len(items) <= k:
        return list(items)
    return [items[i * len(items) // k] for i in range(k)]


def _rank(candidate: Sequence[int], clips: Sequence[Sequence[int]]) -> tuple[int, int, Sequence[int]]:
    return sum(editdistance.eval(t, list(candidate)) for t in clips), len(candidate), candidate


def output_ids(ids: Sequence[int], tokenizer: Tokenizer) -> list[int]:
    """A decoder's token ids without blank and sos/eos: what is scored and shown."""
    return [int(t) for t in ids if t != tokenizer.blank and t != tokenizer.eos]


def decode_rows(
    model: LipReader,
    enc: torch.Tensor,
    enc_lengths: torch.Tensor,
    clips: EvalSet,
    indices: Sequence[int],
    options: SearchOptions,
    method: str = "beam",
) -> list[dict[str, Any]]:
    """Decode one batch's encoder output (B, T, D) of the clips `indices` with `method` and CTC greedy: a row each."""
    best = [nbest[0] for nbest in decode(model, enc, enc_lengths, options, method)]
    if method == "ctc_greedy":
        greedy = best
    else:
        greedy = ctc_greedy(model.ctc_log_probs(enc), enc_lengths, blank=model.blank, eos=model.eos)
    return [clip_row(clips, i, b, g) for i, b, g in zip(indices, best, greedy, strict=True)]


def clip_row(clips: EvalSet, i: int, best: Hypothesis, greedy: Hypothesis) -> dict[str, Any]:
    """The row of clip `i` (module docstring) from its best hypothesis and its CTC-greedy one."""
    tokenizer, data = clips.tokenizer, clips.data
    ref = [int(t) for t in data.targets[i]]
    hyp, ctc = output_ids(best.token_ids, tokenizer), output_ids(greedy.token_ids, tokenizer)
    return {
        "id": data.ids[i],
        "frames": int(data.lengths[i]),
        "ref": data.texts[i],
        "hyp": tokenizer.decode(hyp),
        "edits": int(editdistance.eval(ref, hyp)),
        "ref_tokens": len(ref),
        "ctc_hyp": tokenizer.decode(ctc),
        "ctc_edits": int(editdistance.eval(ref, ctc)),
        "cer": cer([ref], [hyp]),
        "score": float(best.score),
        "ref_ids": ref,
        "hyp_ids": hyp,
        "ctc_ids": ctc,
    }


def metric_names(prefix: str) -> dict[str, str]:
    """{logged name: what is computed} for the registry's validation metrics of `prefix` (val's for other splits)."""
    own = {n: n.split("/", 1)[1] for n, m in METRICS.items() if m.validation and n.startswith(prefix + "/")}
    if own:
        return own
    return {
        f"{prefix}/{n.split('/', 1)[1]}": n.split("/", 1)[1]
        for n, m in METRICS.items()
        if m.validation and n.startswith("val/")
    }


def score(
    rows: Sequence[dict[str, Any]], tokenizer: Tokenizer, prefix: str = "val", baseline: Sequence[int] | None = None
) -> dict[str, float]:
    """The error rates, collapse measures and baseline of decoded rows, under the registry's names for `prefix`.

    `val/distinct` is distinct outputs / clips (1/N: one output for every clip), `val/hyp_len_ratio` output
    tokens / reference tokens, `val/cer_baseline` the CER of the constant `baseline` on these clips.
    """
    refs, hyps, ctc = ([r[k] for r in rows] for k in ("ref_ids", "hyp_ids", "ctc_ids"))
    values = {
        "cer": cer(refs, hyps),
        "cer_ctc_greedy": cer(refs, ctc),
        "letter_er": letter_error_rate(refs, hyps, tokenizer),
        "diacritic_er": diacritic_error_rate(refs, hyps, tokenizer),
        "distinct": len({tuple(h) for h in hyps}) / max(1, len(rows)),
        "hyp_len_ratio": sum(map(len, hyps)) / max(1, sum(map(len, refs))),
    }
    if tokenizer.separator is not None:
        values["wer"] = wer(refs, hyps, tokenizer)
    if baseline is not None:
        values["cer_baseline"] = cer(refs, [list(baseline)] * len(refs))
    return {name: values[what] for name, what in metric_names(prefix).items() if what in values}


@torch.no_grad()
def evaluate(
    model: LipReader,
    clips: EvalSet,
    cfg: Config,
    device: torch.device,
    precision: Precision,
    *,
    method: str = "beam",
    prefix: str = "val",
    losses: bool = True,
    features: fcache.FrontendCache | None = None,
    progress: bool = False,
) -> EvalResult:
    """Decode and score `clips`: `method` (beam, ctc_greedy or att_greedy) and CTC greedy; the losses too.

    With `features` (a frozen frontend's cache) the model runs from its validation view (centre crop) on.
    Under torchrun each rank decodes its share; every rank gets all rows and the same metrics. `progress`
    shows a bar on a terminal, else a status line at most every 30 s.
    """
    model.eval()
    inputs = Inputs(clips.data, cfg, device, features)
    mine = distributed.shard(clips.indices)
    options = SearchOptions.from_config(cfg.decode)
    generator = torch.Generator(device=device).manual_seed(cfg.train.seed)  # the noise of train.noise_input
    sums = dict.fromkeys(LOSSES, 0.0)
    rows: list[dict[str, Any]] = []
    status = Progress(len(mine), f"decoding {prefix} ({method})", progress)
    started = time.perf_counter()
    for idx in make_batches(clips.data.lengths, mine, batch_size=cfg.decode.batch_size, shuffle=False):
        x, lengths, targets = inputs.batch(idx, generator, train=False)
        with autocast(device, precision):
            enc, enc_lengths = inputs.encode(model, x, lengths)  # (B, T, D)
            out = model.losses(enc, enc_lengths, targets) if losses else None
        rows += decode_rows(model, enc.float(), enc_lengths, clips, idx, options, method)
        if out is not None:
            for k in sums:
                sums[k] += getattr(out, k).item() * len(idx)
        status.update(len(idx))
    status.close()
    order = [clips.data.ids[i] for i in clips.indices]
    rows, sums, n_clips = distributed.gather_rows(rows, sums, len(mine), order)
    metrics = score(rows, clips.tokenizer, prefix, clips.baseline)
    if losses:
        metrics.update({f"{prefix}/{k}": v / max(1, n_clips) for k, v in sums.items()})
    return EvalResult(metrics, rows, time.perf_counter() - started)


class Progress:
    """A bar on a terminal; without one (Kaggle logs) a status line at most every 30 s; nothing when off."""

    def __init__(self, total: int, what: str, enabled: bool):
        self.total, self.what, self.done = total, what, 0
        self.enabled = enabled
        self.bar = (
            tqdm(total=total, desc=what, unit="clip", file=sys.stderr, leave=False)
            if enabled and sys.stderr.isatty()
            else None
        )
        self.started = self.shown = time.monotonic()

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        elif self.enabled and time.monotonic() - self.shown >= STATUS_EVERY_S:
            self.shown = time.monotonic()
            rate = self.done / max(self.shown - self.started, 1e-9)
            print(f"{self.what}: {self.done}/{self.total} clips, {rate:.1f} clips/s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
