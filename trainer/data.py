"""Clips on disk -> one memory-mapped frame cache -> padded batches.

A dataset is a folder of clips (a video and a `STEM.csv` with header `word`, matched by stem, in any
subfolders) or a manifest CSV with columns `id,video,text[,split]`. Videos: `.mp4`/`.avi` (PyAV),
`.npy`, `.npz`, `.pt` holding T x H x W uint8 (or T x H x W x C, turned gray).

Every clip is decoded once into `<cache>/<key>/frames.u8` (all frames, uint8, total_frames x H x W)
with `index.json` (ids, offsets, lengths, token ids, texts); the key hashes the file list, sizes,
mtimes, image size, frame limits and vocabulary, so a change of data or vocabulary builds a new cache
and every run and sweep trial on the same data reuses it. `split.json` beside it fixes the split.
"""

from __future__ import annotations

import csv
import hashlib
import itertools
import json
import os
import random
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import DataConfig
from trainer.errors import ConfigError, DataError
from trainer.io import atomic_write_json
from trainer.text import Tokenizer, codepoints

VIDEO_EXTS = (".mp4", ".avi", ".npy", ".npz", ".pt")
CACHE_VERSION = 1
SPLITS = ("train", "val", "test")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}
Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


# --------------------------------------------------------------------------- finding clips


@dataclass(frozen=True)
class Clip:
    """One clip as found on disk: its video and either a `word` CSV or the manifest's text."""

    id: str
    video: Path
    label: Path | None = None
    text: str | None = None
    split: str | None = None
    where: str = ""  # manifest file and row, for messages


@dataclass(frozen=True)
class BadClip:
    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


def _walk(root: Path) -> list[Path]:
    """Files under `root`, skipping hidden files and folders (the cache lives in `.lipsweep_cache`)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out.extend(Path(dirpath) / f for f in sorted(filenames) if not f.startswith("."))
    return out


def find_clips(root: str | Path) -> tuple[list[Clip], list[BadClip]]:
    """The clips of a dataset folder or manifest, sorted by id, and the files that do not pair up."""
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset not found: {root} (data.root); give a folder of clips or a manifest CSV")
    if root.is_file():
        return _manifest_clips(root)
    videos: dict[str, list[Path]] = {}
    labels: dict[str, list[Path]] = {}
    for f in _walk(root):
        ext = f.suffix.lower()
        if ext in VIDEO_EXTS:
            videos.setdefault(f.stem, []).append(f)
        elif ext == ".csv":
            labels.setdefault(f.stem, []).append(f)
    clips, bad = [], []
    for stem in sorted(videos.keys() | labels.keys()):
        vs, ls = videos.get(stem, []), labels.get(stem, [])
        if len(vs) > 1 or len(ls) > 1:
            names = ", ".join(str(p) for p in vs + ls)
            bad.append(
                BadClip(
                    str((vs + ls)[0]),
                    f"stem '{stem}' is shared by several files ({names}); keep one video and one CSV a stem",
                )
            )
        elif not ls:
            bad.append(BadClip(str(vs[0]), f"no label file {stem}.csv"))
        elif not vs:
            bad.append(BadClip(str(ls[0]), f"no video {stem}.mp4/.avi/.npy/.npz/.pt for this label"))
        else:
            clips.append(Clip(stem, vs[0], label=ls[0]))
    if not clips and not bad:
        raise DataError(f"{root}: no clips found (videos {', '.join(VIDEO_EXTS)} with a STEM.csv label each)")
    return clips, bad


def _manifest_clips(path: Path) -> tuple[list[Clip], list[BadClip]]:
    rows = _read_csv_rows(path)
    header = [h.strip().lower() for h in rows[0]] if rows else []
    if not {"id", "video", "text"} <= set(header):
        raise DataError(
            f"{path}: a manifest needs the header id,video,text[,split]; found {','.join(header) or 'nothing'}"
        )
    col = {name: header.index(name) for name in ("id", "video", "text", "split") if name in header}
    clips, bad, seen = [], [], set()
    for row_no, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{path}, line {row_no}"
        if len(row) != len(header):
            bad.append(BadClip(where, f"{len(row)} fields, the header has {len(header)}"))
            continue
        clip_id, video, text = (row[col[k]].strip() for k in ("id", "video", "text"))
        split = (row[col["split"]].strip().lower() or None) if "split" in col else None
        if not clip_id or clip_id in seen:
            bad.append(BadClip(where, f"id '{clip_id}' is empty or repeated"))
            continue
        seen.add(clip_id)
        if split is not None and split not in SPLIT_NAMES:
            bad.append(BadClip(where, f"split '{split}' is not one of train, val, test"))
            continue
        video_path = Path(video) if Path(video).is_absolute() else path.parent / video
        if not video_path.is_file():
            bad.append(BadClip(where, f"video {video_path} not found"))
            continue
        clips.append(Clip(clip_id, video_path, text=text, split=SPLIT_NAMES[split] if split else None, where=where))
    splits = {c.split for c in clips}
    if None in splits and len(splits) > 1:
        raise DataError(
            f"{path}: the split column is filled on some rows and empty on others; fill it on every row or on none"
        )
    if not clips and not bad:
        raise DataError(f"{path}: the manifest lists no clips")
    return sorted(clips, key=lambda c: c.id), bad


# --------------------------------------------------------------------------- labels


def _decode_text(path: Path) -> str:
    raw = path.read_bytes()
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DataError(f"{path}: UTF-16 text; re-save it as UTF-8")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        hint = ""
        try:
            raw.decode("cp1256")
            hint = " (it reads as Windows-1256, a legacy Arabic encoding)"
        except UnicodeDecodeError:
            pass
        raise DataError(f"{path}: not UTF-8 at byte {e.start}{hint}; re-save it as UTF-8") from None


def _read_csv_rows(path: Path) -> list[list[str]]:
    try:
        return list(csv.reader(_decode_text(path).splitlines()))
    except csv.Error as e:
        raise DataError(f"{path}: not a valid CSV: {e}") from None


def read_words(path: str | Path) -> list[tuple[int, str]]:
    """(row, word) of a label CSV with header `word`; rows are counted from 1 after the header."""
    path = Path(path)
    rows = _read_csv_rows(path)
    if not rows or not any(cell.strip() for row in rows for cell in row):
        raise DataError(f"{path}: empty label file; write the header `word` and one word a row")
    if [c.strip().lower() for c in rows[0]] != ["word"]:
        raise DataError(f"{path}: the header must be `word`, found `{','.join(rows[0])}`")
    words = []
    for row_no, row in enumerate(rows[1:], start=1):
        cells = [c.strip() for c in row if c.strip()]
        if not cells:
            continue
        if len(cells) > 1:
            raise DataError(f"{path}, row {row_no}: {len(cells)} fields; write one word a row")
        words.append((row_no, cells[0]))
    if not words:
        raise DataError(f"{path}: no words under the header `word`")
    return words


def encode_label(clip: Clip, tokenizer: Tokenizer, unknown: Counter | None = None) -> tuple[list[int], str]:
    """A clip's token ids and its text (words joined by spaces); `unknown` counts clusters mapped to <unk>."""
    if clip.label is not None:
        rows = [(f"{clip.label}, row {r}", w) for r, w in read_words(clip.label)]
    else:
        if not (clip.text or "").strip():
            raise DataError(f"{clip.where}: empty text for clip '{clip.id}'")
        rows = [(f"{clip.where}, text", clip.text or "")]
    ids: list[int] = []
    for where, words in rows:
        if ids and tokenizer.separator is not None:
            ids.append(tokenizer.separator)
        ids.extend(tokenizer.encode(words, where=where))
        if unknown is not None:
            for pos, cluster in tokenizer.unknown_clusters(words):
                unknown[(cluster, f"{where}, character {pos}")] += 1
    return ids, " ".join(w for _, w in rows)


# --------------------------------------------------------------------------- videos


def to_gray(array: np.ndarray, where: str) -> np.ndarray:
    """T x H x W (or T x H x W x C, C = 1, 3 RGB or 4 RGBA) uint8 -> T x H x W uint8."""
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.integer) and array.size and array.min() >= 0 and array.max() <= 255:
            array = array.astype(np.uint8)
        else:
            raise DataError(f"{where}: frames of dtype {array.dtype}; save uint8 pixels 0..255")
    if array.ndim == 4 and array.shape[-1] in (1, 3, 4):
        if array.shape[-1] == 1:
            return array[..., 0]
        rgb = array[..., :3].astype(np.float32)
        return np.rint(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).clip(0, 255).astype(np.uint8)
    if array.ndim != 3:
        raise DataError(
            f"{where}: wrong shape {tuple(array.shape)}; expected T x H x W or T x H x W x C (C = 1, 3 or 4)"
        )
    return array


def read_video(path: str | Path) -> np.ndarray:
    """Any supported video file -> T x H x W uint8 (no resizing)."""
    path = Path(path)
    ext = path.suffix.lower()
    try:
        if ext in (".mp4", ".avi"):
            import av
            from av.video.reformatter import VideoReformatter

            gray = VideoReformatter()  # one for all frames: building a converter per frame halves the speed
            with av.open(str(path)) as container:
                if not container.streams.video:
                    raise DataError(f"{path}: no video stream")
                frames = [gray.reformat(f, format="gray").to_ndarray() for f in container.decode(video=0)]
            if not frames:
                return np.zeros((0, 0, 0), np.uint8)
            return np.stack(frames)
        if ext == ".npy":
            array = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as z:
                keys = list(z.keys())
                key = "video" if "video" in keys else keys[0] if len(keys) == 1 else None
                if key is None:
                    raise DataError(f"{path}: {len(keys)} arrays ({', '.join(keys)}); store one, or name it 'video'")
                array = z[key]
        elif ext == ".pt":
            obj = torch.load(path, map_location="cpu", weights_only=True)
            if isinstance(obj, dict) and "video" in obj:
                obj = obj["video"]
            if not isinstance(obj, torch.Tensor):
                raise DataError(f"{path}: holds a {type(obj).__name__}; save a uint8 tensor (or {{'video': tensor}})")
            array = obj.numpy()
        else:
            raise DataError(f"{path}: unsupported video type; use one of {', '.join(VIDEO_EXTS)}")
    except DataError:
        raise
    except Exception as e:  # every decoder has its own error types; all mean the same to the user
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    return to_gray(np.asarray(array), str(path))


def resize(video: np.ndarray, size: int) -> np.ndarray:
    """T x H x W uint8 -> T x size x size uint8 (bilinear, antialiased)."""
    x = torch.from_numpy(np.ascontiguousarray(video)).float()[:, None]  # (T, 1, H, W)
    y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()


@dataclass
class ClipData:
    clip: Clip
    video: np.ndarray | None  # (T, size, size) uint8; None once written to the cache
    length: int  # frames
    targets: list[int]
    text: str
    original_size: tuple[int, int]


def load_clip(clip: Clip, cfg: DataConfig, tokenizer: Tokenizer, unknown: Counter | None = None) -> ClipData:
    """Read, check and label one clip; any problem raises DataError naming the file."""
    targets, text = encode_label(clip, tokenizer, unknown)
    video = read_video(clip.video)
    t = video.shape[0]
    if t == 0 or video.size == 0:
        raise DataError(f"{clip.video}: empty (no frames)")
    if t < cfg.min_frames:
        raise DataError(f"{clip.video}: {t} frames, fewer than data.min_frames={cfg.min_frames}")
    if t > cfg.max_frames:
        raise DataError(f"{clip.video}: {t} frames, more than data.max_frames={cfg.max_frames}")
    size = (int(video.shape[1]), int(video.shape[2]))
    if size != (cfg.image_size, cfg.image_size):
        video = resize(video, cfg.image_size)
    return ClipData(clip, video, t, targets, text, size)


def bad_clip(clip: Clip, error: DataError) -> BadClip:
    """The file an error names (the video, the label or the manifest row) and the reason."""
    message = str(error)
    for file in (clip.video, clip.label, clip.where):
        if file and message.startswith(str(file)):
            return BadClip(str(file), message[len(str(file)) :].lstrip(":, "))
    return BadClip(str(clip.video), message)


def load_clips(
    clips: Sequence[Clip], cfg: DataConfig, tokenizer: Tokenizer, unknown: Counter | None = None
) -> Iterator[ClipData | BadClip]:
    """Each clip loaded, or a BadClip with its reason: one at a time, so a whole dataset never sits in memory."""
    for clip in clips:
        try:
            yield load_clip(clip, cfg, tokenizer, unknown)
        except DataError as e:
            yield bad_clip(clip, e)


# --------------------------------------------------------------------------- cache


def cache_key(clips: Sequence[Clip], root: Path, cfg: DataConfig, tokenizer: Tokenizer) -> str:
    """Hash of the file list with sizes and mtimes, the image size, frame limits and the vocabulary."""
    h = hashlib.sha256()
    h.update(json.dumps([CACHE_VERSION, cfg.image_size, cfg.min_frames, cfg.max_frames]).encode())
    h.update(
        json.dumps([tokenizer.tokens, tokenizer.unknown_to_unk, tokenizer.word_separator], ensure_ascii=False).encode()
    )
    files = [root] if root.is_file() else []
    for clip in clips:
        files += [clip.video] + ([clip.label] if clip.label else [])
    for f in files:
        st = f.stat()
        h.update(f"{f.resolve()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    for clip in clips:
        h.update(f"{clip.id}\0{clip.text}\0{clip.split}\n".encode())
    return h.hexdigest()[:16]


def cache_dir(cfg: DataConfig, log: Log = _stderr) -> Path:
    """data.cache_dir, else `<root>/.lipsweep_cache`, else (read-only data, as on Kaggle) ~/.cache/lipsweep."""
    if cfg.cache_dir:
        return Path(cfg.cache_dir)
    root = Path(cfg.root)
    folder = (root.parent if root.is_file() else root) / ".lipsweep_cache"
    writable = os.access(folder, os.W_OK) if folder.is_dir() else os.access(folder.parent, os.W_OK)
    if writable:
        return folder
    fallback = Path.home() / ".cache" / "lipsweep"
    log(f"{folder.parent} is read-only; the cache goes to {fallback} (set data.cache_dir to choose)")
    return fallback


def build_cache(folder: Path, items: Iterator[ClipData | BadClip], cfg: DataConfig, log: Log) -> None:
    """Decode into a temporary folder, then rename it to `folder`, so a half-written cache is never read."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        good: list[ClipData] = []
        bad: list[BadClip] = []
        offsets, lengths, total = [], [], 0
        sizes: Counter = Counter()
        with open(tmp / "frames.u8", "wb") as f:
            for item in items:
                if isinstance(item, BadClip):
                    bad.append(item)
                    continue
                offsets.append(total)
                lengths.append(item.length)
                total += lengths[-1]
                f.write(np.ascontiguousarray(item.video, dtype=np.uint8).tobytes())
                if item.original_size != (cfg.image_size, cfg.image_size):
                    sizes[item.original_size] += 1
                good.append(replace(item, video=None))  # the frames are on disk now
            f.flush()
            os.fsync(f.fileno())
        if bad and not cfg.skip_bad:
            raise DataError(bad_clips_message(bad, cfg.root))
        notes = [
            f"warning: {n} clips are {h}x{w}, resized to {cfg.image_size}x{cfg.image_size} (data.image_size)"
            for (h, w), n in sorted(sizes.items())
        ]
        index = {
            "version": CACHE_VERSION,
            "frame_shape": [total, cfg.image_size, cfg.image_size],
            "ids": [c.clip.id for c in good],
            "offsets": offsets,
            "lengths": lengths,
            "targets": [c.targets for c in good],
            "texts": [c.text for c in good],
            "splits": [c.clip.split for c in good],
            "skipped": [[b.file, b.reason] for b in bad],
            "notes": notes,
        }
        atomic_write_json(tmp / "index.json", index)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "index.json").exists():  # not a finished cache from a process beside this one
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bad_clips_message(bad: Sequence[BadClip], root: str | Path) -> str:
    lines = "\n".join(f"  {b}" for b in bad)
    return (
        f"{root}: {len(bad)} bad clip{'s' if len(bad) != 1 else ''}:\n{lines}\n"
        f"Fix or remove them (`python -m launch data check {root}` reports everything), "
        "or set data.skip_bad=true to train without them."
    )


# --------------------------------------------------------------------------- dataset and batches


@dataclass
class Batch:
    ids: list[str]
    video: torch.Tensor  # (B, T, H, W) uint8, zero after each clip's length
    lengths: torch.Tensor  # (B,) int64 frames
    targets: torch.Tensor  # (B, L) int64, -1 after each label's length
    target_lengths: torch.Tensor  # (B,) int64

    def to(self, device: torch.device | str, non_blocking: bool = True) -> Batch:
        move = lambda t: t.to(device, non_blocking=non_blocking)  # noqa: E731
        return Batch(self.ids, move(self.video), move(self.lengths), move(self.targets), move(self.target_lengths))

    def pin_memory(self) -> Batch:
        """Called by a DataLoader with `pin_memory=True`."""
        pin = lambda t: t.pin_memory()  # noqa: E731
        return Batch(self.ids, pin(self.video), pin(self.lengths), pin(self.targets), pin(self.target_lengths))


@dataclass
class Dataset:
    """The cached clips: frames in one memmap, labels in lists. `dataset[i]` is (frames (T, H, W), target ids)."""

    folder: Path
    ids: list[str]
    offsets: np.ndarray  # (N,) int64
    lengths: np.ndarray  # (N,) int64
    targets: list[list[int]]
    texts: list[str]
    manifest_splits: list[str | None]
    skipped: list[BadClip] = field(default_factory=list)
    built: bool = False  # True when this call decoded the clips, False when it reused the cache
    frames: np.ndarray = field(init=False, repr=False)  # (total_frames, H, W) uint8 memmap

    def __post_init__(self) -> None:
        self._open()

    def _open(self) -> None:
        shape = tuple(json.loads((self.folder / "index.json").read_text())["frame_shape"])
        if shape[0] == 0:
            self.frames = np.zeros(shape, np.uint8)
        else:
            self.frames = np.memmap(self.folder / "frames.u8", dtype=np.uint8, mode="r", shape=shape)

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers reopen the memmap instead of copying it
        state = self.__dict__.copy()
        del state["frames"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._open()

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> tuple[np.ndarray, list[int]]:
        return self.video(i), self.targets[i]

    def video(self, i: int) -> np.ndarray:
        """(T, H, W) uint8 view into the memmap."""
        start = int(self.offsets[i])
        return self.frames[start : start + int(self.lengths[i])]

    def collate(self, indices: Sequence[int]) -> Batch:
        """A padded batch of the clips at `indices`."""
        indices = [int(i) for i in indices]
        lengths = self.lengths[indices]
        _, h, w = self.frames.shape
        video = np.zeros((len(indices), int(lengths.max()), h, w), np.uint8)  # (B, T, H, W)
        for b, i in enumerate(indices):
            video[b, : lengths[b]] = self.video(i)
        targets, target_lengths = self.padded_targets(indices)
        return Batch(
            [self.ids[i] for i in indices],
            torch.from_numpy(video),
            torch.from_numpy(lengths.astype(np.int64)),
            targets,
            target_lengths,
        )

    def padded_targets(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Target ids of the clips at `indices`, (B, L) padded with -1, and their lengths (B,); no frames read."""
        target_lengths = [len(self.targets[int(i)]) for i in indices]
        targets = torch.full((len(target_lengths), max(target_lengths)), -1, dtype=torch.int64)  # (B, L)
        for b, i in enumerate(indices):
            targets[b, : target_lengths[b]] = torch.tensor(self.targets[int(i)], dtype=torch.int64)
        return targets, torch.tensor(target_lengths, dtype=torch.int64)

    def loader(
        self, batches: Sequence[Sequence[int]], num_workers: int = 0, pin_memory: bool = False
    ) -> torch.utils.data.DataLoader:
        """A DataLoader yielding `Batch`es for a fixed list of index batches (see `make_batches`)."""
        return torch.utils.data.DataLoader(
            range(len(self)),
            batch_sampler=[list(b) for b in batches],
            collate_fn=self.collate,
            num_workers=num_workers,
            pin_memory=pin_memory,
        )

    def split(self, cfg: DataConfig) -> dict[str, list[int]]:
        """Train/val/test indices: the manifest's split column, else a seeded shuffle; kept in split.json."""
        path = self.folder / "split.json"
        params = {"seed": cfg.split_seed, "val_ratio": cfg.val_ratio, "test_ratio": cfg.test_ratio}
        if all(s is not None for s in self.manifest_splits) and self.ids:
            params = {"from": "manifest split column"}
        if path.exists():
            saved = json.loads(path.read_text(encoding="utf-8"))
            if saved.get("params") == params and sorted(sum((saved[s] for s in SPLITS), [])) == sorted(self.ids):
                return self._indices(saved)
        if "from" in params:
            by_id = {s: [i for i, sp in zip(self.ids, self.manifest_splits, strict=True) if sp == s] for s in SPLITS}
        else:
            by_id = split_ids(self.ids, cfg.split_seed, cfg.val_ratio, cfg.test_ratio)
        atomic_write_json(path, {"params": params, **by_id})
        return self._indices(by_id)

    def _indices(self, by_id: dict[str, list[str]]) -> dict[str, list[int]]:
        pos = {clip_id: i for i, clip_id in enumerate(self.ids)}
        return {s: sorted(pos[c] for c in by_id[s]) for s in SPLITS}


def split_ids(ids: Sequence[str], seed: int, val_ratio: float, test_ratio: float) -> dict[str, list[str]]:
    """A seeded shuffle of the sorted ids cut into val, test and train (the rest)."""
    order = sorted(ids)
    random.Random(seed).shuffle(order)
    n_val, n_test = round(len(order) * val_ratio), round(len(order) * test_ratio)
    return {
        "train": sorted(order[n_val + n_test :]),
        "val": sorted(order[:n_val]),
        "test": sorted(order[n_val : n_val + n_test]),
    }


def load_dataset(cfg: DataConfig, tokenizer: Tokenizer, log: Log = _stderr) -> Dataset:
    """The dataset at `cfg.root`, from its cache or decoded once into a new cache; bad clips stop it unless skip_bad."""
    root = Path(cfg.root)
    clips, bad = find_clips(root)
    folder = cache_dir(cfg, log) / cache_key(clips, root, cfg, tokenizer)
    built = False
    if not (folder / "index.json").exists():
        log(f"decoding {len(clips)} clips of {root} into the cache {folder} (once; later runs reuse it)")
        unknown: Counter = Counter()
        items = itertools.chain(bad, load_clips(clips, cfg, tokenizer, unknown))
        build_cache(folder, items, cfg, log)
        if unknown:
            log(unknown_report(unknown))
        built = True
    index = json.loads((folder / "index.json").read_text(encoding="utf-8"))
    skipped = [BadClip(f, r) for f, r in index["skipped"]]
    if skipped and not cfg.skip_bad:
        raise DataError(bad_clips_message(skipped, root))
    for note in index["notes"]:
        log(note)
    if skipped:
        log(f"skipping {len(skipped)} bad clips (data.skip_bad=true):\n" + "\n".join(f"  {b}" for b in skipped))
    if not index["ids"]:
        raise DataError(f"{root}: no usable clips")
    return Dataset(
        folder,
        index["ids"],
        np.asarray(index["offsets"], np.int64),
        np.asarray(index["lengths"], np.int64),
        index["targets"],
        index["texts"],
        index["splits"],
        skipped,
        built,
    )


def unknown_report(unknown: Counter) -> str:
    """Each cluster mapped to <unk>: code points, count and first place."""
    per: Counter = Counter()
    first: dict[str, str] = {}
    for (cluster, where), n in unknown.items():
        per[cluster] += n
        first.setdefault(cluster, where)
    lines = [f"  '{c}' ({codepoints(c)}): {n}x, first at {first[c]}" for c, n in per.most_common()]
    return f"{sum(per.values())} unknown characters mapped to <unk> (data.unknown_to_unk=true):\n" + "\n".join(lines)


def make_batches(
    lengths: Sequence[int] | np.ndarray,
    indices: Sequence[int],
    *,
    batch_size: int = 16,
    batch_frames: int = 0,
    shuffle: bool = False,
    seed: int = 0,
) -> list[list[int]]:
    """Index batches: by padded frames (B x longest clip <= batch_frames, similar lengths together) or of batch_size.

    With `shuffle`, the membership among equal lengths and the batch order come from `seed`.
    """
    rng = random.Random(seed)
    order = [int(i) for i in indices]
    if shuffle:
        rng.shuffle(order)
    if batch_frames <= 0:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    longest = max((int(lengths[i]) for i in order), default=0)
    if longest > batch_frames:
        raise ConfigError(f"train.batch_frames={batch_frames} is below the longest clip ({longest} frames); raise it")
    order.sort(key=lambda i: int(lengths[i]))
    batches: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and (len(current) + 1) * int(lengths[i]) > batch_frames:
            batches.append(current)
            current = []
        current.append(i)
    if current:
        batches.append(current)
    if shuffle:
        rng.shuffle(batches)
    return batches
