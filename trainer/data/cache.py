"""Clips -> one memory-mapped frame cache, built once per dataset and setting, and the Dataset read from it.

Every clip is decoded and checked when the cache is built (`data check` or the first run, whichever comes
first; the other reuses it), into `<cache>/<key>/frames.u8` (all frames, uint8, total_frames x H x W) and
`index.json` (ids, offsets, lengths, token ids, texts, original frame sizes, the bad clips, and the
dataset's warnings). The warnings (resized clips, invisible characters removed, characters mapped to
<unk>) are printed by the process that builds the cache, once, not by every run or sweep trial that
reuses it. A dataset with bad clips gets a cache only under `data.skip_bad=true`: otherwise it stops
before any run starts, and its fix (new mtimes) would need a new cache anyway.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.config import DataConfig
from trainer.data.clips import BadClip, Clip, find_clips
from trainer.data.dataset import Dataset
from trainer.data.labels import LabelNotes, ctc_min_frames, encode_label
from trainer.data.video import read_video, resize
from trainer.errors import DataError
from trainer.io import atomic_write_json
from trainer.progress import Progress
from trainer.text import Tokenizer

CACHE_VERSION = 2
Log = Callable[[str], None]


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


@dataclass
class ClipData:
    clip: Clip
    video: np.ndarray | None  # (T, size, size) uint8
    length: int  # frames
    targets: list[int]
    text: str
    original_size: tuple[int, int]


def load_clip(clip: Clip, cfg: DataConfig, tokenizer: Tokenizer, notes: LabelNotes | None = None) -> ClipData:
    """Read, check and label one clip; any problem raises DataError naming the file."""
    targets, text = encode_label(clip, tokenizer, notes)
    video = read_video(clip.video)
    t = video.shape[0]
    if t == 0 or video.size == 0:
        raise DataError(f"{clip.video}: empty (no frames)")
    if t < cfg.min_frames:
        raise DataError(f"{clip.video}: {t} frames, fewer than data.min_frames={cfg.min_frames}")
    if t > cfg.max_frames:
        raise DataError(f"{clip.video}: {t} frames, more than data.max_frames={cfg.max_frames}")
    need = ctc_min_frames(targets)
    if t < need:  # the encoder keeps the frame rate, so CTC aligns `t` outputs to the label
        repeats = need - len(targets)
        blanks = f" and {repeats} blank{'s' if repeats != 1 else ''} between equal neighbours" if repeats else ""
        why = f"{len(targets)} tokens{blanks}"
        raise DataError(
            f"{clip.video}: {t} frames, too few for its label: CTC needs at least {need} ({why}), else its loss is "
            f"infinite and the clip trains nothing; check that {clip.label or clip.where} is this clip's label"
        )
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
    clips: Sequence[Clip], cfg: DataConfig, tokenizer: Tokenizer, notes: LabelNotes | None = None
) -> Iterator[ClipData | BadClip]:
    """Each clip loaded, or a BadClip with its reason: one at a time, so a whole dataset never sits in memory."""
    for clip in clips:
        try:
            yield load_clip(clip, cfg, tokenizer, notes)
        except DataError as e:
            yield bad_clip(clip, e)


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


def _decode_into(
    frames_file: Path, clips: Sequence[Clip], cfg: DataConfig, tokenizer: Tokenizer, log: Log
) -> tuple[list[ClipData], list[BadClip], LabelNotes]:
    """Every clip decoded and appended to `frames_file`, with a progress bar or status line."""
    good: list[ClipData] = []
    bad: list[BadClip] = []
    notes = LabelNotes()
    with open(frames_file, "wb") as f, Progress(len(clips), "decoding clips", log=log) as progress:
        for item in load_clips(clips, cfg, tokenizer, notes):
            progress.update()
            if isinstance(item, BadClip):
                bad.append(item)
                continue
            f.write(np.ascontiguousarray(item.video, dtype=np.uint8).tobytes())
            item.video = None  # the frames are on disk now
            good.append(item)
        f.flush()
        os.fsync(f.fileno())
    return good, bad, notes


def _index(good: list[ClipData], bad: list[BadClip], notes: LabelNotes, cfg: DataConfig) -> dict[str, Any]:
    lengths = [c.length for c in good]
    sizes = Counter(c.original_size for c in good if c.original_size != (cfg.image_size, cfg.image_size))
    resized = [
        f"warning: {n} clips are {h}x{w}, resized to {cfg.image_size}x{cfg.image_size} (data.image_size)"
        for (h, w), n in sorted(sizes.items())
    ]
    return {
        "version": CACHE_VERSION,
        "frame_shape": [sum(lengths), cfg.image_size, cfg.image_size],
        "ids": [c.clip.id for c in good],
        "offsets": [int(o) for o in np.cumsum([0, *lengths[:-1]])] if good else [],
        "lengths": lengths,
        "targets": [c.targets for c in good],
        "texts": [c.text for c in good],
        "splits": [c.clip.split for c in good],
        "sizes": [list(c.original_size) for c in good],
        "skipped": [[b.file, b.reason] for b in bad],
        "notes": resized + notes.reports(),
    }


def build_cache(
    folder: Path, clips: Sequence[Clip], bad: Sequence[BadClip], cfg: DataConfig, tokenizer: Tokenizer, log: Log
) -> dict[str, Any]:
    """Decode into a temporary folder, renamed to `folder` when usable (no bad clip, or skip_bad); the index."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        good, more_bad, notes = _decode_into(tmp / "frames.u8", clips, cfg, tokenizer, log)
        index = _index(good, [*bad, *more_bad], notes, cfg)
        if index["skipped"] and not cfg.skip_bad:
            return index
        atomic_write_json(tmp / "index.json", index)
        try:
            os.rename(tmp, folder)
        except OSError:
            if not (folder / "index.json").exists():  # not a finished cache from a process beside this one
                raise
        return index
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def open_cache(cfg: DataConfig, tokenizer: Tokenizer, log: Log = _stderr) -> tuple[Path, dict[str, Any], bool]:
    """(the cache folder, its index, whether this call built it): the dataset at cfg.root decoded at most once."""
    root = Path(cfg.root)
    clips, bad = find_clips(root)
    folder = cache_dir(cfg, log) / cache_key(clips, root, cfg, tokenizer)
    if (folder / "index.json").exists():
        return folder, json.loads((folder / "index.json").read_text(encoding="utf-8")), False
    log(f"decoding {len(clips)} clips of {root} into the cache {folder} (once; later runs reuse it)")
    return folder, build_cache(folder, clips, bad, cfg, tokenizer, log), True


def bad_clips_message(bad: Sequence[BadClip], root: str | Path) -> str:
    lines = "\n".join(f"  {b}" for b in bad)
    return (
        f"{root}: {len(bad)} bad clip{'s' if len(bad) != 1 else ''}:\n{lines}\n"
        f"Fix or remove them (`python -m launch data check {root}` reports everything), "
        "or set data.skip_bad=true to train without them."
    )


def load_dataset(cfg: DataConfig, tokenizer: Tokenizer, log: Log = _stderr) -> Dataset:
    """The dataset at `cfg.root`, from its cache or decoded once into a new cache; bad clips stop it unless skip_bad."""
    root = Path(cfg.root)
    folder, index, built = open_cache(cfg, tokenizer, log)
    skipped = [BadClip(f, r) for f, r in index["skipped"]]
    if skipped and not cfg.skip_bad:
        raise DataError(bad_clips_message(skipped, root))
    if built:
        for note in index["notes"]:
            log(note)
    if skipped:
        listed = ":\n" + "\n".join(f"  {b}" for b in skipped) if built else f"; `data check {root}` lists them"
        log(f"skipping {len(skipped)} bad clip{'s' if len(skipped) != 1 else ''} (data.skip_bad=true){listed}")
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
