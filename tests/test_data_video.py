"""trainer.data.video: every format, truncated containers (and whole ones that must pass), arrays on the wrong axis."""

from __future__ import annotations

import re
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from datafiles import cut, ffmpeg_mp4, frames, opencv_avi, opencv_mp4, write_video

from trainer.data import read_video
from trainer.errors import DataError

FASTSTART = {"movflags": "+faststart"}  # ffmpeg -movflags +faststart: the index before the frames (web uploads)
FRAGMENTED = {"movflags": "frag_keyframe+empty_moov"}  # recorders that stream: no frame count in the header


@pytest.mark.parametrize("ext", [".mp4", ".avi", ".npy", ".npz", ".pt"])
def test_every_format_reads_the_same_array(tmp_path: Path, ext: str) -> None:
    video = frames(6, seed=1)
    got = read_video(write_video(tmp_path / f"clip{ext}", video))
    assert got.dtype == np.uint8 and got.shape == video.shape
    diff = np.abs(got.astype(int) - video.astype(int))
    assert diff.max() <= (1 if ext == ".mp4" else 0)  # yuv420p limited range rounds luma by at most 1


def test_colour_arrays_become_gray(tmp_path: Path) -> None:
    gray = frames(4, seed=2)
    rgb = np.repeat(gray[..., None], 3, axis=-1)  # (T, H, W, 3): equal channels -> the same gray
    assert np.array_equal(read_video(write_video(tmp_path / "rgb.npy", rgb)), gray)
    one = gray[..., None]
    assert np.array_equal(read_video(write_video(tmp_path / "one.pt", one)), gray)
    pure = np.zeros((1, 2, 2, 3), np.uint8)
    pure[..., 0] = 255  # pure red: 0.299 * 255
    assert read_video(write_video(tmp_path / "red.npz", pure))[0, 0, 0] == 76


# --------------------------------------------------------------------------- truncated containers

WHOLE = {
    "opencv mp4v .mp4": lambda p, v, r: opencv_mp4(p.with_suffix(".mp4"), v, r),
    "opencv MJPG .avi": lambda p, v, r: opencv_avi(p.with_suffix(".avi"), v, r),
    "ffmpeg h264 .mp4": lambda p, v, r: ffmpeg_mp4(p.with_suffix(".mp4"), v, r),
    "ffmpeg h264 faststart .mp4": lambda p, v, r: ffmpeg_mp4(p.with_suffix(".mp4"), v, r, container_options=FASTSTART),
    "fragmented mp4v .mp4": lambda p, v, r: opencv_mp4(p.with_suffix(".mp4"), v, r, container_options=FRAGMENTED),
}


@pytest.mark.parametrize("writer", list(WHOLE))
def test_whole_files_of_ordinary_writers_are_not_flagged(tmp_path: Path, writer: str) -> None:
    for t, rate in [(1, 25), (29, 25), (38, Fraction(30000, 1001)), (31, 60)]:
        path = WHOLE[writer](tmp_path / f"clip{t}", frames(t, seed=t, h=32, w=32), rate)
        assert read_video(path).shape == (t, 32, 32), (writer, t, rate)


def test_a_stream_copy_cut_between_keyframes_is_not_flagged(tmp_path: Path) -> None:
    """`ffmpeg -ss 0.2 -i in.mp4 -c copy out.mp4`: the frames from the keyframe on stay in the file, an edit
    list plays from the cut; the index counts 30 frames, 25 decode, and the file is whole."""
    src = ffmpeg_mp4(tmp_path / "src.mp4", frames(30, h=32, w=32), options={"x264-params": "keyint=250:bframes=0"})
    out = tmp_path / "copy.mp4"
    with av.open(str(src)) as inp, av.open(str(out), "w") as dst:
        stream = inp.streams.video[0]
        copy = dst.add_stream_from_template(stream)
        shift = int(5 / 25 / stream.time_base)  # the first 5 frames before the cut
        for packet in inp.demux(stream):
            if packet.dts is None:
                continue
            packet.pts -= shift
            packet.dts -= shift
            packet.stream = copy
            dst.mux(packet)
    with av.open(str(out)) as c:
        assert c.streams.video[0].frames == 30
    assert len(read_video(out)) == 25


TRUNCATED = {
    "MJPG .avi (OpenCV)": lambda p: opencv_avi(p.with_suffix(".avi"), frames(30, h=32, w=32)),
    "mp4v .mp4 with the index first": lambda p: opencv_mp4(
        p.with_suffix(".mp4"), frames(30, h=32, w=32), container_options=FASTSTART
    ),
    "h264 .mp4 with the index first": lambda p: ffmpeg_mp4(
        p.with_suffix(".mp4"), frames(30, h=32, w=32), container_options=FASTSTART
    ),
}


@pytest.mark.parametrize("writer", list(TRUNCATED))
@pytest.mark.parametrize("kept", [0.6, 0.9])
def test_a_copy_cut_short_is_truncated_with_both_counts(tmp_path: Path, writer: str, kept: float) -> None:
    path = cut(TRUNCATED[writer](tmp_path / "clip"), kept)
    with pytest.raises(DataError) as e:
        read_video(path)
    found = re.fullmatch(
        rf"{re.escape(str(path))}: truncated: the header promises 30 frames, (\d+) decoded .*", str(e.value)
    )
    assert found, str(e.value)
    assert int(found.group(1)) < 30


def test_an_avi_cut_between_two_frames_is_truncated(tmp_path: Path) -> None:
    """Cut where a frame ends, the decode ends without an error: the header's count alone tells."""
    path = opencv_avi(tmp_path / "clip.avi", frames(30, h=32, w=32))
    with av.open(str(path)) as c:
        ends = [packet.pos + packet.size for packet in c.demux(video=0) if packet.size]
    whole = path.read_bytes()
    for kept in (5, 20, 28):
        path.write_bytes(whole[: ends[kept - 1]])
        with pytest.raises(DataError, match=f"truncated: the header promises 30 frames, {kept} decoded"):
            read_video(path)
    path.write_bytes(whole[: ends[28]])
    assert len(read_video(path)) == 29  # one frame short on a clean decode is within the slack (SLACK = 1)


def test_an_mp4_cut_before_its_index_is_unreadable(tmp_path: Path) -> None:
    """OpenCV and ffmpeg write the mp4 index last: a copy cut short has none, and cannot be opened."""
    path = cut(opencv_mp4(tmp_path / "clip.mp4", frames(30, h=32, w=32)), 0.6)
    with pytest.raises(DataError, match=r"clip\.mp4: unreadable \("):
        read_video(path)


# --------------------------------------------------------------------------- arrays


@pytest.mark.parametrize("ext", [".npy", ".npz", ".pt", ".mp4", ".avi"])
def test_zero_byte_file(tmp_path: Path, ext: str) -> None:
    path = tmp_path / f"clip{ext}"
    path.touch()
    with pytest.raises(DataError, match=re.escape(f"{path}: empty file (0 bytes)")):
        read_video(path)


def ragged(sizes: list[tuple[int, int]]) -> np.ndarray:
    """What np.array(frames, dtype=object) makes of frames of different sizes (older numpy did it silently)."""
    out = np.empty(len(sizes), dtype=object)
    out[:] = [np.zeros(s, np.uint8) for s in sizes]
    return out


def test_object_array_says_to_stack_the_frames(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", ragged([(16, 16), (20, 24)]), allow_pickle=True)
    np.savez(tmp_path / "b.npz", video=ragged([(16, 16), (16, 18)]))
    torch.save([torch.zeros(16, 16, dtype=torch.uint8), torch.zeros(20, 24, dtype=torch.uint8)], tmp_path / "c.pt")
    for name, fragment in [
        ("a.npy", "np.stack(frames)"),
        ("b.npz", "np.stack(frames)"),
        ("c.pt", "torch.stack(frames)"),
    ]:
        with pytest.raises(DataError) as e:
            read_video(tmp_path / name)
        assert "stack the frames into one uint8" in str(e.value) and fragment in str(e.value), str(e.value)


AXES = {  # layout -> (how it is stored from T x H x W (x C) frames, the axis named time, the fix the message gives)
    "H x W x T": (lambda v: v.transpose(1, 2, 0), "axis 2 looks like time", (2, 0, 1)),
    "T x C x H x W": (
        lambda v: np.stack([v] * 3, axis=1),
        "axis 0 looks like time and axis 1 like colour",
        (0, 2, 3, 1),
    ),
    "C x T x H x W": (
        lambda v: np.stack([v] * 3, axis=0),
        "axis 1 looks like time and axis 0 like colour",
        (1, 2, 3, 0),
    ),
}


@pytest.mark.parametrize("layout", list(AXES))
def test_frames_on_the_wrong_axis_say_which_is_time_and_how_to_transpose(tmp_path: Path, layout: str) -> None:
    video = frames(8, h=24, w=24)
    store, words, order = AXES[layout]
    stored = store(video)
    np.save(tmp_path / "bad.npy", stored)
    with pytest.raises(DataError) as e:
        read_video(tmp_path / "bad.npy")
    assert words in str(e.value) and f"np.transpose(a, {order})" in str(e.value), str(e.value)
    np.save(tmp_path / "fixed.npy", np.transpose(stored, order))  # the fix it gives reads the clip back
    assert np.array_equal(read_video(tmp_path / "fixed.npy"), video)
    torch.save(torch.from_numpy(stored.copy()), tmp_path / "bad.pt")
    with pytest.raises(DataError, match=re.escape(f"a.permute{order}")):
        read_video(tmp_path / "bad.pt")


def test_ordinary_shapes_are_not_taken_for_the_wrong_axis(tmp_path: Path) -> None:
    for shape in [(5, 20, 24), (30, 30, 40), (30, 112, 112), (112, 112, 112), (1, 16, 16)]:
        np.save(tmp_path / "ok.npy", np.zeros(shape, np.uint8))
        assert read_video(tmp_path / "ok.npy").shape == shape
