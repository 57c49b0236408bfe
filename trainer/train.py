"""The training loop: one function, read top-down, in commented phases.

`train(cfg)` is what `python -m launch train`, every sweep trial and the demo call. It writes
a run folder (see trainer/tracking.py), validates with the joint beam search every
`train.val_every` epochs, keeps `best.pt` (by val/cer) and `last.pt`, and can be resumed
after a kill from `last.pt`; SIGTERM/SIGINT save `last.pt` at the next step and stop cleanly.
"""

from __future__ import annotations

import math
import random
import secrets
import signal
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from trainer import distributed
from trainer import frontend_cache as fcache
from trainer.augment import augment_batch, noise_frames
from trainer.config import Config, apply_overrides, config_from_dict, to_dict
from trainer.data import Dataset, load_dataset, make_batches
from trainer.device import Precision, select_device, select_precision
from trainer.errors import CheckpointError, UserError
from trainer.io import atomic_torch_save, remove_stale_temporaries
from trainer.model import LipReader, build_model, count_parameters
from trainer.search import SearchOptions, beam_search, ctc_greedy
from trainer.text import Tokenizer, cer, diacritic_error_rate, letter_error_rate
from trainer.tracking import RunLog, read_summary

# A pruner's hook: called after each validation with (epoch, metrics); True stops the run as pruned.
PruneHook = Callable[[int, dict[str, float]], bool]

GRAD_GROUPS = {  # grad_norm/<group>: parameter-name prefixes
    "frontend_stem": ("frontend.frontend3D.",),
    "frontend_last": ("frontend.trunk.layer4.",),
    "proj_encoder": ("proj_encoder.",),
    "adapter": ("adapter.",),
    "encoder": ("encoder.",),
    "decoder": ("decoder.",),
    "ctc": ("ctc.",),
}


class TrainingFailed(UserError):
    """The run stopped as failed (NaN losses, out of memory, a bad clip); the reason is in summary.json."""


@dataclass
class RunResult:
    run_dir: Path
    state: str  # finished | pruned | stopped | failed
    summary: dict[str, Any] = field(default_factory=dict)


def get_lr(step: int, lr: float, warmup_steps: int, total_steps: int) -> float:
    """auto_avsr's WarmupCosineScheduler: the rate for optimizer step `step` (1-based, as torch counts it)."""
    if step < warmup_steps:
        return lr * step / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * lr * (1.0 + math.cos(math.pi * progress))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    """Every RNG's state, in types `torch.load(weights_only=True)` reads back."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {
        "kind": kind,
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": pos,
        "has_gauss": has_gauss,
        "cached": cached,
    }
    state = {"python": random.getstate(), "numpy": numpy_state, "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def grad_group_norms(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The gradient L2 norm of each group present in the model, as 0-d tensors on its device (no sync)."""
    grads: dict[str, list[torch.Tensor]] = {g: [] for g in GRAD_GROUPS}
    for name, p in model.named_parameters():
        if p.grad is None:
            continue
        for group, prefixes in GRAD_GROUPS.items():
            if name.startswith(prefixes):
                grads[group].append(p.grad.detach())
                break
    return {g: torch.linalg.vector_norm(torch.stack(torch._foreach_norm(gs))) for g, gs in grads.items() if gs}


def new_run_name() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


class StopRequest:
    """SIGTERM/SIGINT set a flag; the loop saves `last.pt` at the next step and exits cleanly."""

    def __init__(self) -> None:
        self.signal: str | None = None
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopRequest:
        if sys.platform != "win32":
            import threading

            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGTERM, signal.SIGINT):
                    self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        self.signal = signal.Signals(signum).name

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


# --------------------------------------------------------------------------- evaluation


@dataclass
class EvalResult:
    metrics: dict[str, float]
    rows: list[dict[str, Any]]  # per clip: id, frames, ref, hyp, cer, score, ref_ids, hyp_ids, greedy_ids


@torch.no_grad()
def evaluate(
    model: LipReader,
    data: Dataset,
    indices: list[int],
    tokenizer: Tokenizer,
    cfg: Config,
    device: torch.device,
    precision: Precision,
    *,
    prefix: str = "val",
    losses: bool = True,
    features: fcache.FrontendCache | None = None,
) -> EvalResult:
    """Losses, joint beam-search CER and CTC-greedy CER on `indices`; per-clip rows for samples/confusions.

    With `features` (a frozen frontend's cache) the model runs from its validation view (centre crop) on.
    Under torchrun each rank decodes its share of `indices`; every rank gets all rows and the same metrics.
    """
    model.eval()
    order = [data.ids[i] for i in indices]
    indices = distributed.shard(indices)
    options = SearchOptions.from_config(cfg.decode)
    sums = {"loss": 0.0, "loss_ctc": 0.0, "loss_att": 0.0}
    n_clips = 0
    rows: list[dict[str, Any]] = []
    autocast = _autocast(device, precision)
    noise_gen = torch.Generator(device=device).manual_seed(cfg.train.seed) if cfg.train.noise_input else None
    for batch_idx in make_batches(data.lengths, indices, batch_size=cfg.decode.batch_size, shuffle=False):
        ids = [data.ids[i] for i in batch_idx]
        if features is not None:
            feats, lengths = features.gather(batch_idx, 0)  # (B, T, widths[-1]): the validation view
            targets = data.padded_targets(batch_idx)[0].to(device, non_blocking=True)
            with autocast:
                enc, enc_lengths = model.encode_features(feats, lengths)  # (B, T, D)
                if losses:
                    out = model.losses(enc, enc_lengths, targets)
        else:
            batch = data.collate(batch_idx).to(device)
            x = augment_batch(batch.video, batch.lengths, cfg.augment, train=False)  # (B, T, 1, crop, crop)
            if cfg.train.noise_input:
                x = noise_frames(x, batch.lengths, noise_gen)
            with autocast:
                enc, enc_lengths = model.encode(x, batch.lengths)  # (B, T, D)
                if losses:
                    out = model.losses(enc, enc_lengths, batch.targets)
        log_probs = model.ctc_log_probs(enc.float())  # (B, T, V)
        nbest = beam_search(model.decoder, enc.float(), enc_lengths, log_probs, options, eos=tokenizer.eos)
        greedy_hyps = ctc_greedy(log_probs, enc_lengths, eos=tokenizer.eos)
        if losses:
            b = len(ids)
            sums["loss"] += out.loss.item() * b
            sums["loss_ctc"] += out.loss_ctc.item() * b
            sums["loss_att"] += out.loss_att.item() * b
        for i, clip_id in enumerate(ids):
            ref = data.targets[batch_idx[i]]
            best = nbest[i][0]
            hyp = best.token_ids
            rows.append(
                {
                    "id": clip_id,
                    "frames": int(data.lengths[batch_idx[i]]),
                    "ref": tokenizer.decode(ref),
                    "hyp": tokenizer.decode(hyp),
                    "cer": cer([ref], [hyp]),
                    "score": float(best.score),
                    "ref_ids": ref,
                    "hyp_ids": hyp,
                    "greedy_ids": greedy_hyps[i].token_ids,
                }
            )
        n_clips += len(ids)
    rows, sums, n_clips = distributed.gather_rows(rows, sums, n_clips, order)
    refs, hyps, greedy = ([r[k] for r in rows] for k in ("ref_ids", "hyp_ids", "greedy_ids"))
    metrics = {f"{prefix}/cer": cer(refs, hyps)}
    if prefix == "val":
        metrics.update(
            {
                "val/cer_ctc_greedy": cer(refs, greedy),
                "val/letter_er": letter_error_rate(refs, hyps, tokenizer),
                "val/diacritic_er": diacritic_error_rate(refs, hyps, tokenizer),
            }
        )
    if losses:
        metrics.update({f"{prefix}/{k}": v / max(1, n_clips) for k, v in sums.items()})
    return EvalResult(metrics, rows)


def _autocast(device: torch.device, precision: Precision):
    if precision.dtype is None:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=precision.dtype)


# --------------------------------------------------------------------------- checkpoints


def save_checkpoint(path: Path, **state: Any) -> None:
    """Write a checkpoint atomically; a failed write (a full disk) leaves the previous one whole."""
    try:
        atomic_torch_save(path, state)
    except OSError as e:
        raise TrainingFailed(
            f"could not write {path} ({e.strerror or e}); the previous checkpoint is intact: free space, then --resume {path.parent.parent}"
        ) from None


def load_checkpoint(path: Path) -> dict[str, Any]:
    """A lipsweep checkpoint, read with weights_only=True; a CheckpointError naming the file otherwise."""
    from trainer.model.pretrained import read_checkpoint

    ckpt = read_checkpoint(path)
    if not isinstance(ckpt, dict) or not {"model", "config", "epoch"} <= set(ckpt):
        raise CheckpointError(
            f"{path}: not a lipsweep training checkpoint (no model, config and epoch); --resume needs a run folder's last.pt"
        )
    return ckpt


# --------------------------------------------------------------------------- the loop


def train(
    cfg: Config,
    *,
    name: str | None = None,
    resume: Path | None = None,
    prune: PruneHook | None = None,
    verbose: bool = True,
) -> RunResult:
    """Train one run as `cfg` says; returns its folder, final state and summary.

    Under `torchrun --nproc_per_node=N` the N processes train one run together (trainer/distributed.py);
    rank 0 alone writes the run folder, the checkpoints and the W&B run.
    """
    # --- run folder, tracking, final config --------------------------------------------------------
    distributed.init_from_env(cfg.train.device)
    ckpt: dict[str, Any] | None = None
    if resume is not None:
        run_dir = Path(resume)
        ckpt = load_checkpoint(run_dir / "checkpoints" / "last.pt")
        if distributed.is_main():
            remove_stale_temporaries(run_dir / "checkpoints")  # what a kill -9 mid-write left
        cfg = config_from_dict(ckpt["config"])
    else:
        run_dir = distributed.broadcast_object(Path(cfg.train.run_dir) / (name or cfg.tracking.name or new_run_name()))
        if (run_dir / "checkpoints" / "last.pt").exists():
            raise UserError(f"{run_dir} already holds a run; resume it with --resume {run_dir} or pick another --name")
    log = (
        RunLog(
            run_dir,
            cfg,
            name=run_dir.name,
            wandb_id=ckpt.get("wandb_id") if ckpt else None,
            resume_epoch=ckpt["epoch"] if ckpt else None,
        )
        if distributed.is_main()
        else distributed.RankLog(run_dir)
    )
    if log.sweep_params and ckpt is None:
        cfg = apply_overrides(cfg, log.sweep_params, where="wandb.config: ")
    cfg = distributed.broadcast_object(cfg)  # a W&B sweep's values reach rank 0 only
    log.write_config(cfg)
    verbose = verbose and distributed.is_main()
    say = print if verbose else (lambda *a, **k: None)
    interactive = verbose and sys.stderr.isatty()
    summary: dict[str, Any] = read_summary(run_dir) if ckpt else {}
    summary.update({"name": run_dir.name, "state": "running", "wandb_id": log.wandb_id, "wandb_url": log.wandb_url})
    log.write_summary(summary)

    try:
        # --- device, precision, seeds --------------------------------------------------------------
        device = distributed.local_device(select_device(cfg.train.device))
        precision = select_precision(cfg.train.precision, device)
        seed_everything(cfg.train.seed)

        # --- data --------------------------------------------------------------------------------
        tokenizer = Tokenizer.from_config(cfg.data)
        data = distributed.main_first(lambda: load_dataset(cfg.data, tokenizer, log=say))
        split = distributed.main_first(lambda: data.split(cfg.data))
        train_idx, val_idx = split["train"], split["val"]
        if not train_idx or not val_idx:
            raise UserError(
                f"{cfg.data.root}: the split has {len(train_idx)} training and {len(val_idx)} validation clips; both must be non-empty"
            )
        subset_rng = random.Random(cfg.train.seed)
        train_cer_idx = sorted(subset_rng.sample(train_idx, min(cfg.train.train_cer_clips, len(train_idx))))

        # --- model, optimizer, scaler -------------------------------------------------------------
        model = build_model(cfg.model, tokenizer.vocab_size)
        if model.load_report is not None and ckpt is None:
            say(model.load_report.table())
        model.to(device)
        say(count_parameters(model))
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(
            params, lr=cfg.optim.lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=cfg.optim.weight_decay
        )
        scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
        batch_plan = lambda epoch: make_batches(  # noqa: E731  the epoch's batches, a pure function of the seed
            data.lengths,
            train_idx,
            batch_size=cfg.train.batch_size,
            batch_frames=cfg.train.batch_frames,
            shuffle=True,
            seed=cfg.train.seed * 1000 + epoch,
        )
        steps_per_epoch = math.ceil(len(batch_plan(0)) / cfg.train.accumulate)
        warmup_steps = round(cfg.optim.warmup_epochs * steps_per_epoch)
        total_steps = cfg.train.max_epochs * steps_per_epoch

        # --- resume -------------------------------------------------------------------------------
        start_epoch, step, start_batch, partial = 1, 0, 0, None
        best_cer, best_epoch, stale = math.inf, 0, 0
        if ckpt is not None:
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            scaler.load_state_dict(ckpt["scaler"])
            set_rng_state(ckpt["rng"])
            step, best_cer, best_epoch, stale = ckpt["step"], ckpt["best_cer"], ckpt["best_epoch"], ckpt["stale"]
            start_epoch = ckpt["epoch"] + 1
            if ckpt.get("partial"):  # stopped mid-epoch: continue that epoch at the next batch
                partial = ckpt["partial"]
                start_epoch, start_batch = partial["epoch"], partial["batch"]
            say(f"resuming {run_dir} at epoch {start_epoch}" + (f", batch {start_batch}" if start_batch else ""))

        def checkpoint(path: Path, epoch: int, partial_state: dict[str, Any] | None = None) -> None:
            if not distributed.is_main():
                return
            save_checkpoint(
                path,
                model=model.state_dict(),
                optimizer=optimizer.state_dict(),
                scaler=scaler.state_dict(),
                rng=rng_state(),
                step=step,
                epoch=epoch,
                best_cer=best_cer,
                best_epoch=best_epoch,
                stale=stale,
                config=to_dict(cfg),
                wandb_id=log.wandb_id,
                partial=partial_state,
            )

        # --- frozen-frontend feature cache (trainer/frontend_cache.py) ------------------------------
        use_cache, why_not = fcache.decide(cfg, model, say)
        features: fcache.FrontendCache | None = None
        if use_cache:
            features = distributed.main_first(
                lambda: fcache.load_or_build(
                    model,
                    data,
                    cfg,
                    device,
                    precision=precision.name,
                    autocast=_autocast(device, precision),
                    log=say,
                    progress=interactive,
                )
            )
            say(f"the frontend runs from its feature cache {features.path}: {features.describe()}")
        summary.update(
            {
                "frontend_cache/used": features is not None,
                "frontend_cache/views": features.views if features is not None else 0,
                "frontend_cache/reason": why_not,
                "frontend_cache/built": bool(summary.get("frontend_cache/built"))
                or (features is not None and features.built),
                "frontend_cache/residency": features.residency if features is not None else "",
            }
        )
        log.write_summary(summary)
        log.note_config(
            {"frontend_cache/used": features is not None, "frontend_cache/views": summary["frontend_cache/views"]}
        )

        # --- epochs -------------------------------------------------------------------------------
        step_model = fcache.FromFeatures(model) if features is not None else model
        net = distributed.wrap_model(step_model, device)  # DDP under torchrun, else `step_model` itself
        distributed.seed_rank(cfg.train.seed + step)
        started = time.monotonic()
        state, reason = "finished", ""
        with StopRequest() as stop:
            for epoch in range(start_epoch, cfg.train.max_epochs + 1):
                # train
                model.train()
                t0 = time.monotonic()
                gen = torch.Generator(device=device)
                gen.manual_seed(cfg.train.seed * 1000 + epoch)
                sums = {k: torch.zeros((), device=device) for k in ("loss", "loss_ctc", "loss_att", "acc")}
                norms: dict[str, torch.Tensor] = {}
                clips, n_steps, bad_steps, bad_total = 0, 0, 0, 0
                if partial is not None:
                    own = distributed.is_main()  # the saved sums are over all ranks: rank 0 carries them on
                    gen.set_state(partial["generator"])
                    sums = {k: torch.tensor(v if own else 0.0, device=device) for k, v in partial["sums"].items()}
                    norms = {k: torch.tensor(v, device=device) for k, v in partial["norms"].items()}
                    clips, n_steps, bad_total = partial["clips"] if own else 0, partial["steps"], partial["bad_total"]
                    partial = None
                batches = batch_plan(epoch)
                bar = tqdm(
                    total=len(batches), initial=start_batch, desc=f"epoch {epoch}", disable=not interactive, leave=False
                )
                pending = {k: torch.zeros((), device=device) for k in sums}  # this optimizer step's micro-batches
                pending_clips = 0
                for b, batch_idx in enumerate(batches[start_batch:], start=start_batch):
                    if features is not None:  # one stored view a clip, then time masking on the features
                        views = features.train_views(len(batch_idx), cfg.train.seed, epoch, b)
                        x, all_lengths = features.gather(batch_idx, views)  # (B, T, widths[-1])
                        aug = cfg.augment
                        x = fcache.mask_features(x, all_lengths, aug.time_mask_window, aug.time_mask_stride, gen)
                        all_targets = data.padded_targets(batch_idx)[0].to(device, non_blocking=True)
                    else:
                        batch = data.collate(batch_idx).to(device)
                        x = augment_batch(batch.video, batch.lengths, cfg.augment, train=True, generator=gen)
                        if cfg.train.noise_input:
                            x = noise_frames(x, batch.lengths, gen)  # (B, T, 1, crop, crop)
                        all_lengths, all_targets = batch.lengths, batch.targets
                    rows, n_clips, weight = distributed.batch_share(len(batch_idx))  # this rank's rows of the batch
                    steps_here = not ((b + 1) % cfg.train.accumulate and b + 1 < len(batches))
                    x, lengths, targets = x[rows], all_lengths[rows], all_targets[rows]
                    try:
                        with distributed.grad_sync(net, steps_here):
                            with _autocast(device, precision):
                                out = net(x, lengths, targets)
                            scaler.scale(out.loss * weight / cfg.train.accumulate).backward()
                    except torch.cuda.OutOfMemoryError:
                        what = "features" if features is not None else "1, H, W"
                        raise TrainingFailed(
                            f"out of GPU memory on a batch of {tuple(x.shape)} (clips, frames, {what}); "
                            "lower train.batch_frames or train.batch_size, or use train.precision=fp16"
                        ) from None
                    for k in pending:
                        pending[k] += getattr(out, k).detach().float() * n_clips
                    pending_clips += n_clips
                    bar.update(1)
                    if not steps_here:
                        continue
                    # optimizer step: unscale, check, clip, schedule, step
                    scaler.unscale_(optimizer)
                    group_norms = grad_group_norms(model)
                    total_norm = torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip or math.inf)
                    finite = torch.isfinite(distributed.all_reduce_sum(pending["loss"]) + total_norm)
                    pending_clips, step_clips = 0, pending_clips
                    if not finite:  # one host sync per optimizer step, as a grad scaler makes anyway
                        bad_steps += 1
                        bad_total += 1
                        optimizer.zero_grad(set_to_none=True)
                        scaler.update()
                        pending = {k: torch.zeros((), device=device) for k in sums}
                        if bad_steps >= cfg.train.max_bad_steps:
                            raise TrainingFailed(
                                f"{bad_steps} optimizer steps in a row had a NaN/inf loss or gradient (epoch {epoch}); "
                                "lower optim.lr, check the data, or raise train.max_bad_steps"
                            )
                        continue
                    bad_steps = 0
                    step += 1
                    for group in optimizer.param_groups:
                        group["lr"] = get_lr(step, cfg.optim.lr, warmup_steps, total_steps)
                    scaler.step(optimizer)
                    scaler.update()
                    optimizer.zero_grad(set_to_none=True)
                    n_steps += 1
                    for k in sums:
                        sums[k] += pending[k]
                        pending[k].zero_()
                    for g, v in group_norms.items():
                        norms[g] = norms.get(g, torch.zeros((), device=device)) + v
                    clips += step_clips
                    over_budget = cfg.train.max_minutes and (time.monotonic() - started) / 60 > cfg.train.max_minutes
                    if distributed.any_rank(bool(stop.signal) or bool(over_budget)):
                        reason = (
                            f"received {stop.signal}"
                            if stop.signal
                            else f"time budget of {cfg.train.max_minutes} min reached"
                        )
                        totals = distributed.sum_over_ranks({**sums, "clips": clips})
                        checkpoint(
                            run_dir / "checkpoints" / "last.pt",
                            epoch - 1,
                            {
                                "epoch": epoch,
                                "batch": b + 1,
                                "generator": gen.get_state(),
                                "sums": {k: totals[k].item() for k in sums},
                                "norms": {k: v.item() for k, v in norms.items()},
                                "clips": totals["clips"],
                                "steps": n_steps,
                                "bad_total": bad_total,
                            },
                        )
                        state = "stopped"
                        break
                bar.close()
                start_batch = 0
                if state == "stopped":
                    break
                train_s = time.monotonic() - t0

                totals = distributed.sum_over_ranks({**sums, "clips": clips})  # over all ranks
                metrics: dict[str, Any] = {"epoch": epoch}
                metrics.update({f"train/{k}": totals[k].item() / max(1, totals["clips"]) for k in sums})
                metrics["train/lr"] = optimizer.param_groups[0]["lr"]
                metrics["train/clips_per_s"] = totals["clips"] / max(train_s, 1e-9)
                metrics["train/bad_steps"] = bad_total
                metrics.update({f"grad_norm/{g}": v.item() / max(1, n_steps) for g, v in norms.items()})

                # validate
                validated = epoch % cfg.train.val_every == 0 or epoch == cfg.train.max_epochs
                if validated:
                    val = evaluate(model, data, val_idx, tokenizer, cfg, device, precision, features=features)
                    metrics.update(val.metrics)
                    if cfg.train.train_cer_every and epoch % cfg.train.train_cer_every == 0:
                        metrics.update(
                            evaluate(
                                model,
                                data,
                                train_cer_idx,
                                tokenizer,
                                cfg,
                                device,
                                precision,
                                prefix="train",
                                losses=False,
                                features=features,
                            ).metrics
                        )
                    write_samples(log, epoch, val.rows, cfg.train.worst_k)
                    write_confusions(log, val.rows, tokenizer)
                metrics["time/epoch_s"] = time.monotonic() - t0
                log.log_epoch(metrics)

                # checkpoints, early stopping, pruning
                improved = validated and metrics["val/cer"] < best_cer
                if improved:
                    best_cer, best_epoch, stale = metrics["val/cer"], epoch, 0
                elif validated:
                    stale += 1
                checkpoint(run_dir / "checkpoints" / "last.pt", epoch)
                if improved and distributed.is_main():
                    (run_dir / "checkpoints" / "best.pt").unlink(missing_ok=True)
                    checkpoint(run_dir / "checkpoints" / "best.pt", epoch)
                summary.update({"val/cer_best": best_cer, "epoch_best": best_epoch, "epochs": epoch, "step": step})
                log.write_summary(summary)
                say(epoch_line(metrics, cfg.train.max_epochs))
                if (
                    validated
                    and prune is not None
                    and distributed.broadcast_object(distributed.is_main() and prune(epoch, metrics))
                ):
                    state, reason = "pruned", f"pruned after epoch {epoch}"
                    log.tag("pruned")
                    break
                if validated and cfg.train.patience and stale >= cfg.train.patience:
                    reason = f"early stop: no better val/cer for {stale} validations"
                    break
                if distributed.any_rank(
                    bool(cfg.train.max_minutes) and (time.monotonic() - started) / 60 > cfg.train.max_minutes
                ):
                    reason = f"time budget of {cfg.train.max_minutes} min reached"
                    break
                if distributed.any_rank(bool(stop.signal)):
                    state, reason = "stopped", f"received {stop.signal or 'a stop signal (on another rank)'}"
                    break
    except Exception as e:
        summary.update({"state": "failed", "reason": f"{type(e).__name__}: {e}"})
        log.write_summary(summary)
        log.finish("failed")
        raise

    # --- finish -----------------------------------------------------------------------------------
    from analysis.plots import learning_curves
    from trainer.tracking import read_metrics

    if distributed.is_main():
        plot = learning_curves(read_metrics(run_dir), run_dir / "plots" / "learning_curves.png", title=run_dir.name)
        log.log_image("plots/learning_curves", plot)
    if cfg.tracking.log_checkpoint and (run_dir / "checkpoints" / "best.pt").exists():
        log.log_checkpoint(run_dir / "checkpoints" / "best.pt", {"val/cer": best_cer, "epoch": best_epoch})
    summary.update(
        {"state": state, "reason": reason, "runtime_s": summary.get("runtime_s", 0) + time.monotonic() - started}
    )
    log.write_summary(summary)
    log.finish(state)
    say(
        f"{state}: best val/cer {best_cer:.4f} at epoch {best_epoch}; run folder {run_dir}"
        + (f" ({reason})" if reason else "")
    )
    return RunResult(run_dir, state, summary)


def epoch_line(m: dict[str, Any], max_epochs: int) -> str:
    parts = [f"epoch {m['epoch']}/{max_epochs}", f"loss {m['train/loss']:.3f}"]
    for key in ("val/loss", "val/cer", "val/cer_ctc_greedy", "train/cer"):
        if key in m:
            parts.append(f"{key} {m[key]:.4f}")
    parts.append(f"{m['train/clips_per_s']:.1f} clips/s")
    parts.append(f"{m['time/epoch_s']:.1f} s")
    return " | ".join(parts)


def write_samples(log: RunLog, epoch: int, rows: list[dict[str, Any]], k: int) -> None:
    """samples/epoch_NNN.csv: the k worst validation clips; a wandb.Table under samples/worst."""
    if k <= 0:
        return
    worst = sorted(rows, key=lambda r: (-r["cer"], r["id"]))[:k]
    columns = ["id", "frames", "ref", "hyp", "cer", "score"]
    log.write_table(
        f"samples/epoch_{epoch:03d}.csv", columns, [[r[c] for c in columns] for r in worst], wandb_key="samples/worst"
    )


def write_confusions(log: RunLog, rows: list[dict[str, Any]], tokenizer: Tokenizer) -> None:
    """confusions.csv: token substitutions, deletions and insertions of the last validation."""
    from analysis.confusions import confusion_counts, confusion_rows

    counts = confusion_counts([r["ref_ids"] for r in rows], [r["hyp_ids"] for r in rows])
    log.write_table(
        "confusions.csv", ["kind", "ref", "hyp", "count"], confusion_rows(counts, lambda t: tokenizer.decode([t]))
    )
