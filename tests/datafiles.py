"""Clips and labels written the way real tools write them, for the data tests.

OpenCV is not installed: its writers are reproduced with PyAV and the codecs and containers it uses
(`cv2.VideoWriter_fourcc(*"mp4v")` in .mp4: ffmpeg's mpeg4 encoder, index at the end; `*"MJPG"` in .avi).
The ffmpeg command line's defaults are H.264 with B-frames; `-movflags +faststart` moves the index first.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import torch

from trainer.config import DataConfig

VOCAB = Path(__file__).resolve().parents[1] / "configs" / "vocab" / "vocab.json"
SIZE = 16
QAALA = "\u0642\u064e\u0627\u0644\u064e"  # قَالَ  -> 68 210 54
INNA = "\u0625\u0650\u0646\u064e\u0651"  # إِنَّ  -> 215 32


def frames(t: int, seed: int = 0, h: int = SIZE, w: int = SIZE) -> np.ndarray:
    """Smooth T x H x W uint8 frames (a moving gradient plus a little noise), codec-friendly."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([(xx * 9 + yy * 5 + 11 * k) % 200 + 20 for k in range(t)])
    return (base + rng.integers(0, 8, (t, h, w))).astype(np.uint8)


def encode(
    path: Path,
    video: np.ndarray,
    codec: str,
    pix_fmt: str,
    *,
    rate: int | Fraction = 25,
    options: dict[str, str] | None = None,
    container_options: dict[str, str] | None = None,
) -> Path:
    """Gray frames (T, H, W) through one PyAV encoder into `path` (the container from its suffix)."""
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = video.shape[2], video.shape[1], pix_fmt
        stream.options = options or {}
        container.start_encoding()
        for f in video:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="gray")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def opencv_mp4(path: Path, video: np.ndarray, rate: int | Fraction = 25, **kw) -> Path:
    """As cv2.VideoWriter(path, fourcc 'mp4v', ...) writes it."""
    return encode(path, video, "mpeg4", "yuv420p", rate=rate, **kw)


def opencv_avi(path: Path, video: np.ndarray, rate: int | Fraction = 25) -> Path:
    """As cv2.VideoWriter(path, fourcc 'MJPG', ...) writes it."""
    return encode(path, video, "mjpeg", "yuvj420p", rate=rate)


def ffmpeg_mp4(path: Path, video: np.ndarray, rate: int | Fraction = 25, **kw) -> Path:
    """As `ffmpeg -i ... out.mp4` writes it: H.264 (B-frames), yuv420p."""
    return encode(path, video, "libx264", "yuv420p", rate=rate, **kw)


def lossless_mp4(path: Path, video: np.ndarray) -> Path:
    return encode(path, video, "libx264", "yuv420p", options={"qp": "0"})  # lossless luma


def raw_avi(path: Path, video: np.ndarray) -> Path:
    return encode(path, video, "rawvideo", "gray")


def cut(path: Path, fraction: float) -> Path:
    """Keep the first `fraction` of the file's bytes: a copy or download cut short."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def write_video(path: Path, video: np.ndarray) -> Path:
    ext = path.suffix
    if ext == ".mp4":
        lossless_mp4(path, video)
    elif ext == ".avi":
        raw_avi(path, video)
    elif ext == ".npy":
        np.save(path, video)
    elif ext == ".npz":
        np.savez(path, video=video)
    elif ext == ".pt":
        torch.save(torch.from_numpy(video.copy()), path)
    return path


def write_label(path: Path, words: list[str]) -> Path:
    path.write_text("word\n" + "".join(w + "\n" for w in words), encoding="utf-8")
    return path


def write_clip(folder: Path, stem: str, video: np.ndarray, words: list[str], ext: str = ".npy") -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_video(folder / f"{stem}{ext}", video)
    write_label(folder / f"{stem}.csv", words)


def make_dataset(folder: Path, n: int, lengths: list[int] | None = None) -> list[np.ndarray]:
    """`n` clips of 5-8 frames (or `lengths`), labelled قَالَ (3 tokens) or قَالَ إِنَّ (5 tokens) in turn."""
    videos = []
    for k in range(n):
        video = frames(lengths[k] if lengths else 5 + k % 4, seed=k)
        write_clip(folder, f"{k:05d}", video, [QAALA, INNA][: 1 + k % 2])
        videos.append(video)
    return videos


def config(root: Path, tmp_path: Path, **kw) -> DataConfig:
    return DataConfig(**{"root": str(root), "cache_dir": str(tmp_path / "cache"), "image_size": SIZE, **kw})
