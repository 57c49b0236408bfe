"""`python -m launch eval`: decode a dataset split with a checkpoint, print its error rates, write one JSON line per clip."""

from __future__ import annotations

import json
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import torch
from tqdm import tqdm

from trainer.config import Config, apply_overrides, config_from_dict, load_config
from trainer.errors import CheckpointError, ConfigError, DataError

EVAL_PARTS = ("frontend", "proj_encoder", "encoder", "decoder", "ctc")


@dataclass
class EvalOutput:
    """Error rates over the clips and one row per clip, in dataset order."""

    metrics: dict[str, float]
    rows: list[dict[str, Any]]
    seconds: float


def eval_config(checkpoint_obj: Any, checkpoint: Path, config: str | None, overrides: list[str]) -> Config:
    """--config if given, else the config saved in a lipsweep checkpoint; then the overrides."""
    if config is not None:
        return load_config(config, overrides)
    saved = checkpoint_obj.get("config") if isinstance(checkpoint_obj, dict) else None
    if not isinstance(saved, dict):
        raise ConfigError(
            f"{checkpoint}: holds no lipsweep config (an auto_avsr or other imported checkpoint): pass the config that "
            "describes its architecture with --config, e.g. --config configs/base.yaml for auto_avsr's base model"
        )
    cfg = config_from_dict(saved)
    cfg.model.pretrained.path = ""  # the checkpoint holds every weight
    return apply_overrides(cfg, overrides) if overrides else cfg


def load_model(checkpoint_obj: Any, checkpoint: Path, cfg: Config, odim: int):
    """A LipReader of `cfg` with every weight from the checkpoint; a CheckpointError if any is missing or does not fit."""
    from trainer.model import LipReader
    from trainer.model.pretrained import load_state, unwrap

    model = LipReader(cfg.model, odim)
    state, fmt = unwrap(checkpoint_obj, checkpoint)
    parts = [*EVAL_PARTS, "adapter"] if model.adapter is not None else list(EVAL_PARTS)
    report = load_state(model, state, parts, source=str(checkpoint), fmt=fmt)
    if report.reinitialised:
        missing = "; ".join(f"{k}: {why}" for k, why in list(report.reinitialised.items())[:4])
        raise CheckpointError(
            f"{checkpoint}: cannot evaluate, {len(report.reinitialised)} weights of the model are not in this {fmt}-format "
            f"checkpoint or do not fit ({missing}). Pass the --config (and data.vocab) that describe the checkpoint"
        )
    return model.eval()


def already_cropped_size(cfg: Config) -> int | None:
    """The frame side when the dataset's first clip is already crop-sized (88 x 88): then no resize, else None."""
    from trainer.data import find_clips, read_video

    side = cfg.augment.crop_size
    if cfg.data.image_size == side:
        return None
    clips, _ = find_clips(cfg.data.root)
    for clip in clips:
        try:
            frames = read_video(clip.video)
        except DataError:
            if cfg.data.skip_bad:  # the dataset loader lists it with the other bad clips
                continue
            raise
        return side if frames.shape[1:3] == (side, side) else None
    return None


def run_eval(
    cfg: Config,
    model,
    split: str,
    method: str,
    device: torch.device,
    progress: bool = True,
    log=lambda msg: print(msg, file=sys.stderr),
) -> EvalOutput:
    """Decode `split` (val, test or all) of cfg.data with `method`; error rates and per-clip rows."""
    from trainer.augment import augment_batch
    from trainer.data import load_dataset
    from trainer.device import select_precision
    from trainer.search import SearchOptions, decode
    from trainer.text import Tokenizer, cer, diacritic_error_rate, letter_error_rate, wer

    tokenizer = Tokenizer.from_config(cfg.data)
    data = load_dataset(cfg.data, tokenizer, log)
    indices = list(range(len(data))) if split == "all" else data.split(cfg.data)[split]
    if not indices:
        raise ConfigError(
            f"the {split} split of {cfg.data.root} is empty (data.val_ratio / data.test_ratio); try --split all"
        )
    options = SearchOptions.from_config(cfg.decode)
    precision = select_precision(cfg.train.precision, device)
    autocast = nullcontext() if precision.dtype is None else torch.autocast(device.type, dtype=precision.dtype)
    model = model.to(device).eval()

    by_length = sorted(indices, key=lambda i: int(data.lengths[i]))  # similar lengths together: less padding
    hyps: dict[int, Any] = {}
    start = time.perf_counter()
    bar = tqdm(total=len(indices), unit="utt", desc=f"eval {split} ({method})", disable=not progress, file=sys.stderr)
    for pos in range(0, len(by_length), cfg.decode.batch_size):
        chunk = by_length[pos : pos + cfg.decode.batch_size]
        batch = data.collate(chunk).to(device)
        with torch.no_grad():
            video = augment_batch(batch.video, batch.lengths, cfg.augment, train=False)  # (B, T, 1, crop, crop)
            with autocast:
                enc, enc_lengths = model.encode(video, batch.lengths)  # (B, T, D)
            nbest = decode(model, enc.float(), enc_lengths, options, method)
        for i, best in zip(chunk, nbest, strict=True):
            hyps[i] = best[0]
        bar.update(len(chunk))
    bar.close()
    seconds = time.perf_counter() - start

    rows, refs, outs = [], [], []
    for i in indices:
        ref, hyp = data.targets[i], [t for t in hyps[i].token_ids if t != tokenizer.blank]
        refs.append(ref)
        outs.append(hyp)
        rows.append(
            {
                "id": data.ids[i],
                "ref": tokenizer.decode(ref),
                "hyp": tokenizer.decode(hyp),
                "hyp_ids": hyp,
                "score": hyps[i].score,
                "cer": cer([ref], [hyp]),
            }
        )
    metrics = {
        "cer": cer(refs, outs),
        "letter_er": letter_error_rate(refs, outs, tokenizer),
        "diacritic_er": diacritic_error_rate(refs, outs, tokenizer),
    }
    if tokenizer.separator is not None:
        metrics["wer"] = wer(refs, outs, tokenizer)
    return EvalOutput(metrics, rows, seconds)


@click.command("eval", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option(
    "--checkpoint",
    required=True,
    type=click.Path(path_type=Path),
    help="lipsweep checkpoint (best.pt, last.pt) or an auto_avsr state dict",
)
@click.option(
    "--config", "config_path", default=None, help="YAML config; default: the one saved in a lipsweep checkpoint"
)
@click.option("--data", "data_root", default=None, help="dataset folder or manifest (sets data.root)")
@click.option("--split", type=click.Choice(["val", "test", "all"]), default="val", show_default=True)
@click.option(
    "--decoder", "method", type=click.Choice(["beam", "ctc_greedy", "att_greedy"]), default="beam", show_default=True
)
@click.option(
    "--output", type=click.Path(dir_okay=False, path_type=Path), default=None, help="write one JSON line per clip here"
)
@click.option("--quiet", is_flag=True, help="no progress bar")
@click.argument("overrides", nargs=-1, type=click.UNPROCESSED)
def eval_command(
    checkpoint: Path,
    config_path: str | None,
    data_root: str | None,
    split: str,
    method: str,
    output: Path | None,
    quiet: bool,
    overrides: tuple[str, ...],
) -> None:
    """Decode a dataset split with CHECKPOINT and print CER, base-letter and diacritic error rates.

    OVERRIDES are dotted key=value pairs (decode.beam_size=10 decode.ctc_weight=0.3). Clips that are
    already crop-sized (88 x 88) are used as they are: the centre crop leaves them unchanged.
    """
    from trainer.device import select_device
    from trainer.io import atomic_write_text
    from trainer.model.pretrained import read_checkpoint
    from trainer.text import Tokenizer

    obj = read_checkpoint(checkpoint)
    extra = [f"data.root={data_root}"] if data_root else []
    cfg = eval_config(obj, checkpoint, config_path, [*extra, *overrides])
    side = already_cropped_size(cfg)
    if side is not None:
        click.echo(f"clips are {side} x {side}, already cropped: data.image_size={side} (no resize)", err=True)
        cfg.data.image_size = side
    model = load_model(obj, checkpoint, cfg, Tokenizer.from_config(cfg.data).vocab_size)
    out = run_eval(cfg, model, split, method, select_device(cfg.train.device), progress=not quiet)

    if output is not None:
        atomic_write_text(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out.rows))
    n = len(out.rows)
    click.echo(f"{split}: {n} clips decoded with {method} in {out.seconds:.1f} s ({n / out.seconds:.1f} utt/s)")
    for key, value in out.metrics.items():
        click.echo(f"{key:<13}{value:.4f}")
    if output is not None:
        click.echo(f"predictions: {output}")
