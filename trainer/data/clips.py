"""Finding a dataset's clips: a folder of videos with `STEM.csv` labels, or a manifest CSV `id,video,text[,split]`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from trainer.data.labels import read_csv_rows
from trainer.errors import DataError

VIDEO_EXTS = (".mp4", ".avi", ".npy", ".npz", ".pt")
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "dev": "val", "test": "test"}


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
            reason = f"stem '{stem}' is shared by several files ({names}); keep one video and one CSV a stem"
            bad.append(BadClip(str((vs + ls)[0]), reason))
        elif not ls:
            bad.append(BadClip(str(vs[0]), f"no label file {stem}.csv"))
        elif not vs:
            bad.append(BadClip(str(ls[0]), f"no video {stem}.mp4/.avi/.npy/.npz/.pt for this label"))
        else:
            clips.append(Clip(stem, vs[0], label=ls[0]))
    if not clips and not bad:
        raise DataError(f"{root}: no clips found (videos {', '.join(VIDEO_EXTS)} with a STEM.csv label each)")
    return clips, bad


def _manifest_row(path: Path, row_no: int, row: list[str], header: list[str]) -> Clip | BadClip:
    where = f"{path}, row {row_no}"
    if len(row) > len(header):
        return BadClip(where, f"{len(row)} cells, the header has {len(header)}; remove the extra cells")
    row = row + [""] * (len(header) - len(row))  # empty cells at the end of a row may be left out
    col = {name: header.index(name) for name in ("id", "video", "text", "split") if name in header}
    clip_id, video, text = (row[col[k]] for k in ("id", "video", "text"))
    split = (row[col["split"]].lower() or None) if "split" in col else None
    if split is not None and split not in SPLIT_NAMES:
        return BadClip(where, f"split '{split}' is not one of train, val, test")
    if not clip_id:
        return BadClip(where, "empty id")
    video_path = Path(video) if Path(video).is_absolute() else path.parent / video
    if not video or not video_path.is_file():
        return BadClip(where, f"video {video_path} not found")
    return Clip(clip_id, video_path, text=text, split=SPLIT_NAMES[split] if split else None, where=where)


def _manifest_clips(path: Path) -> tuple[list[Clip], list[BadClip]]:
    """Rows as a spreadsheet numbers them (the header is row 1); every bad row is reported."""
    rows = read_csv_rows(path)
    header = [h.lower() for h in rows[0]] if rows else []
    if not {"id", "video", "text"} <= set(header):
        raise DataError(
            f"{path}: a manifest needs the header id,video,text[,split]; found {','.join(header) or 'nothing'}"
        )
    clips, bad, seen = [], [], set()
    for row_no, row in enumerate(rows[1:], start=2):
        if not row:
            continue
        item = _manifest_row(path, row_no, row, header)
        if isinstance(item, Clip) and item.id in seen:
            item = BadClip(item.where, f"id '{item.id}' is repeated")
        if isinstance(item, Clip):
            seen.add(item.id)
            clips.append(item)
        else:
            bad.append(item)
    splits = {c.split for c in clips}
    if None in splits and len(splits) > 1:
        raise DataError(
            f"{path}: the split column is filled on some rows and empty on others; fill it on every row or on none"
        )
    if not clips and not bad:
        raise DataError(f"{path}: the manifest lists no clips")
    return sorted(clips, key=lambda c: c.id), bad
