"""Clips on disk -> one memory-mapped frame cache -> padded batches.

A dataset is a folder of clips (a video and a `STEM.csv` with header `word`, matched by stem, in any
subfolders) or a manifest CSV with columns `id,video,text[,split]`. Videos: `.mp4`/`.avi` (PyAV),
`.npy`, `.npz`, `.pt` holding T x H x W uint8 (or T x H x W x C, turned gray).

- `clips`: finding the clips of a folder or manifest;
- `labels`: label CSVs as spreadsheets write them, invisible characters, token ids, CTC's frame floor;
- `video`: decoding videos and arrays, truncated containers, frames on the wrong axis;
- `cache`: checking and decoding every clip once into the frame cache, `load_dataset`;
- `dataset`: the `Dataset` read from the cache, its split and the batches.

The cache key hashes the file list, sizes, mtimes, image size, frame limits and vocabulary, so a change
of data or vocabulary builds a new cache and every run, sweep trial and `data check` on the same data
reuses it. `split.json` beside it fixes the split.
"""

from trainer.data.cache import (
    CACHE_VERSION,
    ClipData,
    bad_clip,
    bad_clips_message,
    build_cache,
    cache_dir,
    cache_key,
    load_clip,
    load_clips,
    load_dataset,
    open_cache,
)
from trainer.data.clips import SPLIT_NAMES, VIDEO_EXTS, BadClip, Clip, find_clips
from trainer.data.dataset import SPLITS, Batch, Dataset, make_batches, split_ids
from trainer.data.labels import LabelNotes, ctc_min_frames, encode_label, read_words, unknown_report
from trainer.data.video import read_video, resize, to_gray

__all__ = [
    "CACHE_VERSION",
    "SPLITS",
    "SPLIT_NAMES",
    "VIDEO_EXTS",
    "BadClip",
    "Batch",
    "Clip",
    "ClipData",
    "Dataset",
    "LabelNotes",
    "bad_clip",
    "bad_clips_message",
    "build_cache",
    "cache_dir",
    "cache_key",
    "ctc_min_frames",
    "encode_label",
    "find_clips",
    "load_clip",
    "load_clips",
    "load_dataset",
    "make_batches",
    "open_cache",
    "read_video",
    "read_words",
    "resize",
    "split_ids",
    "to_gray",
    "unknown_report",
]
