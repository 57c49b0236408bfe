"""The frozen-frontend feature cache: the frontend runs once over every clip, every trial reuses its output.

With `model.freeze.frontend` the Conv3d + ResNet-18 frontend is a fixed function (BatchNorm in eval mode),
so each epoch of each sweep trial would recompute the same features of the same clips. `load_or_build`
runs it once, in eval mode, over every clip of the dataset: view 0 is the validation view (centre crop, no
flip) and views 1..K are training views, each a random crop and flip drawn from a seeded generator by the
live path's own `augment_batch` (time masking and warping off), then normalised. The features are stored
as fp16, (K + 1, total frames, widths[-1]), in `<data cache>/frontend_<key>.pt`; the key hashes the frontend
weights and buffers, the data cache key, the crop/flip/normalisation settings, K, the seed and the precision.

Training from the cache draws one of the K training views for each clip (a pure function of seed, epoch
and batch, so a resumed epoch sees the same views) and applies time masking to the features: masked frames
become the clip's mean feature. This approximates the live path, which sets masked frames to the clip's
mean pixel before the 3-D stem: there the stem's 5-frame kernel also mixes the mean frame into the frames
next to a mask, and the frontend of a mean frame is not the mean of the frontend's features.

The file is written atomically (trainer/io.py) under an exclusive file lock, so concurrent sweep workers
build it once and never read half of it; a file that does not load or whose header, key or shapes differ
(truncated, foreign, stale) is rebuilt. Residency: the training device when the features fit in
`train.frontend_cache_memory` of its free memory, else pinned CPU memory (memory-mapped on a CPU run).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import pickle
import sys
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm import tqdm

from trainer.augment import augment_batch, time_mask
from trainer.config import AugmentConfig, Config
from trainer.data import Dataset
from trainer.errors import ConfigError
from trainer.io import atomic_torch_save

FORMAT = "lipsweep-frontend-cache"
VERSION = 1
BUILD_BATCH = 16  # clips per frontend batch while building (part of the key through VERSION: draws follow it)
Log = Callable[[str], None]

# Builds done by this process (the tests count them; run summaries say `frontend_cache/built`).
BUILDS = 0


# --------------------------------------------------------------------------- when the cache is allowed


def refusal(cfg: Config, model: nn.Module) -> str | None:
    """Why training from stored features would change the function trained, or None when it would not."""
    frontend = model.frontend
    if not cfg.model.freeze.frontend or any(p.requires_grad for p in frontend.parameters()):
        return "the frontend is not frozen (model.freeze.frontend=false), so its features change as it trains"
    if cfg.augment.time_warp:
        return "augment.time_warp resamples each clip's frames before the frontend, which stored views cannot do"
    was_training = model.training
    model.train()
    in_train_mode = [
        f"frontend.{name}"
        for name, m in frontend.named_modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training
    ]
    model.train(was_training)
    if in_train_mode:
        names = ", ".join(in_train_mode[:3]) + (" ..." if len(in_train_mode) > 3 else "")
        return f"the frontend's BatchNorm layers ({names}) are in train mode, so its output changes with every batch"
    if cfg.train.noise_input:
        return "train.noise_input feeds fresh noise at every step, and stored features would be a few fixed draws"
    return None


def decide(cfg: Config, model: nn.Module, log: Log) -> tuple[bool, str]:
    """(use the cache, why not); `on` with a refusal is a ConfigError, `auto` falls back and says so once."""
    mode = cfg.train.frontend_cache
    if mode == "off":
        return False, "train.frontend_cache=off"
    reason = refusal(cfg, model)
    if reason is None:
        return True, ""
    if mode == "on":
        raise ConfigError(
            f"train.frontend_cache=on, but {reason}: training from stored features would change the model trained. "
            "Set train.frontend_cache=auto (falls back to the live frontend) or off."
        )
    if cfg.model.freeze.frontend:  # auto with a frozen frontend: the user may expect the cache, say why not
        log(f"frontend cache not used: {reason}; the frontend runs at every step (train.frontend_cache=auto)")
    return False, reason


# --------------------------------------------------------------------------- key


def frontend_digest(frontend: nn.Module) -> str:
    """sha256 of every parameter and buffer of the frontend (names, shapes, dtypes, values)."""
    h = hashlib.sha256()
    for name, t in frontend.state_dict().items():
        t = t.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"{name}\0{tuple(t.shape)}\0{t.dtype}\n".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def cache_key(frontend_hash: str, data_key: str, aug: AugmentConfig, views: int, seed: int, precision: str) -> str:
    """The cache's name: what its content depends on, and nothing that only the later layers use."""
    parts = [FORMAT, VERSION, BUILD_BATCH, frontend_hash, data_key, aug.crop_size, aug.flip_prob, aug.mean, aug.std]
    parts += [views, seed, precision]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def key_for(model: nn.Module, data: Dataset, cfg: Config, precision: str = "fp32") -> str:
    """The cache key of this model's frontend on this dataset with this config."""
    return cache_key(
        frontend_digest(model.frontend),
        data.folder.name,
        cfg.augment,
        cfg.train.frontend_cache_views,
        cfg.train.seed,
        precision,
    )


def cache_path(data: Dataset, key: str) -> Path:
    """Beside the data cache: `<data cache folder>/frontend_<key>.pt`."""
    return data.folder / f"frontend_{key}.pt"


# --------------------------------------------------------------------------- the cache in use


@dataclass
class FrontendCache:
    """Stored features of every clip and view, gathered per batch by clip index."""

    features: Tensor  # (V * F, D) fp16, V = views + 1, F = total frames; view v of clip i at v * F + offsets[i]
    offsets: Tensor  # (N,) int64, CPU: first frame of each clip
    lengths: Tensor  # (N,) int64, CPU
    views: int  # K training views (view 0 is the validation view)
    device: torch.device  # the training device
    residency: str  # cuda | pinned cpu | cpu (memory-mapped)
    path: Path
    key: str
    built: bool  # this process built it (else it was read)
    frames: int = 0  # F

    def gather(self, indices: list[int], views: Tensor | int) -> tuple[Tensor, Tensor]:
        """Clips `indices` in view `views` (an int, or (B,) ints) -> features (B, T, D) float32, lengths (B,) on the device.

        T is the longest clip of the batch; padded frames are zero.
        """
        idx = torch.as_tensor(indices, dtype=torch.long)
        lengths = self.lengths[idx]  # (B,)
        T = int(lengths.max())
        t = torch.arange(T)[None, :]  # (1, T)
        real = t < lengths[:, None]  # (B, T)
        view = torch.as_tensor(views, dtype=torch.long).expand(len(indices))  # (B,)
        flat = view[:, None] * self.frames + self.offsets[idx][:, None] + torch.minimum(t, lengths[:, None] - 1)
        flat = flat.to(self.features.device, non_blocking=True)
        x = self.features[flat]  # (B, T, D) fp16
        x = x * real.to(self.features.device, non_blocking=True)[..., None].to(x.dtype)
        if x.device != self.device:
            x = (x.pin_memory() if self.device.type == "cuda" else x).to(self.device, non_blocking=True)
        return x.float(), lengths.to(self.device, non_blocking=True)

    def train_views(self, n: int, seed: int, epoch: int, batch: int) -> Tensor:
        """The training view (1..K) of each of the `n` clips of batch `batch` of `epoch`: a pure function of them."""
        rng = np.random.default_rng([seed, epoch, batch])
        return torch.from_numpy(rng.integers(1, self.views + 1, size=n))

    def describe(self) -> str:
        size = self.features.numel() * self.features.element_size() / 2**20
        return f"{self.views} training views + 1 validation view, {size:.0f} MiB fp16, on {self.residency}"


def mask_features(
    features: Tensor, lengths: Tensor, window: int, stride: int, generator: torch.Generator | None
) -> Tensor:
    """Time masking on cached features (B, T, D): masked frames become the clip's mean feature over its real frames.

    The masks are the live path's (`augment.time_mask`, same keys); see the module docstring for the approximation.
    """
    B, T, _ = features.shape
    if window == 0:
        return features
    masked = time_mask(lengths, T, window, stride, generator)  # (B, T)
    real = (torch.arange(T, device=features.device)[None, :] < lengths[:, None]).to(features.dtype)  # (B, T)
    mean = (features * real[..., None]).sum(1) / lengths.clamp(min=1)[:, None].to(features.dtype)  # (B, D)
    return torch.where(masked[..., None], mean[:, None, :], features)


class FromFeatures(nn.Module):
    """The training forward from cached features, as a module (DDP wraps it instead of the whole model)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    @property
    def frozen_norms(self) -> list[nn.Module]:  # distributed.sync_batchnorm leaves these as they are
        return self.model.frozen_norms

    def forward(self, features: Tensor, lengths: Tensor, targets: Tensor):
        return self.model.forward_from_features(features, lengths, targets)


# --------------------------------------------------------------------------- build, read, lock


def _build_batches(n: int) -> Iterator[list[int]]:
    for start in range(0, n, BUILD_BATCH):
        yield list(range(start, min(n, start + BUILD_BATCH)))


@torch.no_grad()
def build_features(
    frontend: nn.Module,
    data: Dataset,
    aug: AugmentConfig,
    views: int,
    seed: int,
    device: torch.device,
    autocast: contextlib.AbstractContextManager | None = None,
    progress: bool = True,
) -> Tensor:
    """Run the frontend (eval mode) over every clip: (views + 1, total frames, D) fp16 on the CPU."""
    modes = [(m, m.training) for m in frontend.modules()]  # restored one by one: frozen BatchNorm stays in eval
    frontend.eval()
    plain = dataclasses.replace(aug, time_mask_window=0, time_warp=False)  # masks are drawn later, on features
    gens = [torch.Generator().manual_seed(seed * 1009 + v) for v in range(views + 1)]  # CPU draws, any device
    out = torch.empty(views + 1, int(data.lengths.sum()), frontend.widths[-1], dtype=torch.float16)
    total = len(data) * (views + 1)
    bar = tqdm(total=total, desc="frontend cache", unit="clip", disable=not progress, mininterval=1.0, leave=False)
    try:
        for idx in _build_batches(len(data)):
            batch = data.collate(idx).to(device)
            lengths = torch.as_tensor(data.lengths[idx])  # (B,) on the CPU
            t = torch.arange(int(lengths.max()))[None, :]  # (1, T)
            real = t < lengths[:, None]  # (B, T)
            rows = (torch.as_tensor(data.offsets[idx])[:, None] + t)[real]  # (R,) frame rows of the real frames
            for v in range(views + 1):
                x = augment_batch(batch.video, batch.lengths, plain, train=v > 0, generator=gens[v])
                with autocast or contextlib.nullcontext():
                    feats = frontend(x, batch.lengths)  # (B, T, D)
                out[v, rows] = feats.float().cpu()[real].half()
                bar.update(len(idx))
    finally:
        bar.close()
        for m, mode in modes:
            m.training = mode
    return out


def _header(key: str, data: Dataset, views: int) -> dict:
    return {"format": FORMAT, "version": VERSION, "key": key, "views": views, "clips": len(data)}


def read_cache(path: Path, key: str, data: Dataset, views: int) -> tuple[dict | None, str]:
    """The stored cache if it is whole and exactly this one (memory-mapped), else (None, why not)."""
    if not path.exists():
        return None, "absent"
    try:
        with zipfile.ZipFile(path) as z:  # torch.save's format: a truncated file has no central directory
            damaged = z.testzip()  # every member's CRC-32: a changed byte is found before anything is used
        if damaged is not None:
            return None, f"damaged (member {damaged} fails its CRC check)"
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile) as e:
        return None, f"unreadable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    if not isinstance(obj, dict) or obj.get("header") != _header(key, data, views):
        return None, "not this cache (another format, key or dataset)"
    feats, offsets, lengths = obj.get("features"), obj.get("offsets"), obj.get("lengths")
    frames = int(data.lengths.sum())
    if (
        not isinstance(feats, Tensor)
        or feats.dtype != torch.float16
        or feats.ndim != 3
        or tuple(feats.shape[:2]) != (views + 1, frames)
        or not isinstance(offsets, Tensor)
        or not torch.equal(offsets, torch.as_tensor(data.offsets, dtype=torch.long))
        or not isinstance(lengths, Tensor)
        or not torch.equal(lengths, torch.as_tensor(data.lengths, dtype=torch.long))
    ):
        return None, "its features do not match the dataset's clips and frames"
    return obj, ""


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` (created) across processes and threads; a no-op where fcntl is missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # Windows: the atomic write still keeps readers from half a file; two may build
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def load_or_build(
    model: nn.Module,
    data: Dataset,
    cfg: Config,
    device: torch.device,
    *,
    precision: str = "fp32",
    autocast: contextlib.AbstractContextManager | None = None,
    log: Log = _stderr,
    progress: bool = True,
) -> FrontendCache:
    """The cache of this frontend, data and augmentation settings: read if stored and whole, else built once."""
    global BUILDS
    views, seed = cfg.train.frontend_cache_views, cfg.train.seed
    key = key_for(model, data, cfg, precision)
    path = cache_path(data, key)
    built = False
    with file_lock(path.with_suffix(".lock")):
        obj, why = read_cache(path, key, data, views)
        if obj is None:
            if why != "absent":
                log(f"frontend cache {path} is {why}: building it again")
            log(f"running the frozen frontend once over {len(data)} clips x {views + 1} views into {path}")
            t0 = time.monotonic()
            feats = build_features(model.frontend, data, cfg.augment, views, seed, device, autocast, progress)
            obj = {
                "header": _header(key, data, views),
                "features": feats,
                "offsets": torch.as_tensor(data.offsets, dtype=torch.long),
                "lengths": torch.as_tensor(data.lengths, dtype=torch.long),
            }
            atomic_torch_save(path, obj)
            BUILDS += 1
            built = True
            took = time.monotonic() - t0
            log(f"frontend cache built in {took:.1f} s ({len(data) * (views + 1) / max(took, 1e-9):.1f} clips/s)")
            obj, why = read_cache(path, key, data, views)  # what every later run reads: memory-mapped
            if obj is None:
                raise OSError(f"{path}: the frontend cache just written does not read back ({why}); check the disk")
    feats = obj["features"]
    frames = feats.shape[1]
    flat = feats.reshape(-1, feats.shape[-1])  # (V * F, D)
    residency = "cpu (memory-mapped)"
    if device.type == "cuda":
        nbytes = flat.numel() * flat.element_size()
        free, _ = torch.cuda.mem_get_info(device)
        if nbytes <= cfg.train.frontend_cache_memory * free:
            flat, residency = flat.to(device), str(device)
        else:
            flat, residency = flat.pin_memory(), "pinned cpu"
    return FrontendCache(flat, obj["offsets"], obj["lengths"], views, device, residency, path, key, built, frames)
