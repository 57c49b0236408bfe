"""Video files -> T x H x W uint8 frames: containers decoded with PyAV and held to their header, arrays to their shape.

A container is truncated when it decodes fewer frames than its header announces: the frame count of its
index (nb_frames) or, where the header gives none (fragmented mp4), its duration times its frame rate.
Measured with PyAV 18 on whole files (mp4: mp4v and H.264 with B-frames, fragmented; avi: MJPG, mp4v,
raw; 1 to 101 frames at 25, 29.97, 30 and 60 fps), every one decodes exactly the index's count, and
duration x rate is within half a frame of it. The tolerance: none when the decode ends on an error (a
frame cut in half), one frame when it ends cleanly (a count from a duration rounds; a clip cut just
before its last frame is let through, as one frame lost does not change what a lip reader learns).
An mp4 edit list (a stream copy cut between keyframes) plays fewer frames than its index holds and its
duration says so: there the fewer of the two must decode. Two cut files no header reveals: a fragmented
mp4 cut between fragments, and an mp4 whose index, written last, was lost with its end (the usual
OpenCV or ffmpeg file cut short): that one does not open and is reported unreadable.
"""

from __future__ import annotations

from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np
import torch

from trainer.data.clips import VIDEO_EXTS
from trainer.errors import DataError

if TYPE_CHECKING:
    from av.container import InputContainer
    from av.video.stream import VideoStream

CHANNELS = (1, 3, 4)
SLACK = 1  # frames a clean decode may fall short of the header (see above)


def read_video(path: str | Path) -> np.ndarray:
    """Any supported video file -> T x H x W uint8 (no resizing)."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in VIDEO_EXTS:
        raise DataError(f"{path}: unsupported video type; use one of {', '.join(VIDEO_EXTS)}")
    try:
        if path.stat().st_size == 0:
            raise DataError(f"{path}: empty file (0 bytes): the copy or the writer never wrote it; write it again")
        if ext in (".mp4", ".avi"):
            return read_container(path)
        array = read_array(path)
    except DataError:
        raise
    except Exception as e:  # every decoder has its own error types; all mean the same to the user
        raise DataError(f"{path}: unreadable ({type(e).__name__}: {e})") from None
    return to_gray(np.asarray(array), str(path), tensor=ext == ".pt")


def read_container(path: Path) -> np.ndarray:
    """An .mp4 / .avi -> T x H x W uint8, refused when truncated (fewer frames than its header announces)."""
    import av
    from av.video.reformatter import VideoReformatter

    gray = VideoReformatter()  # one for all frames: building a converter per frame halves the speed
    frames = []
    error = None
    with av.open(str(path)) as container:
        if not container.streams.video:
            raise DataError(f"{path}: no video stream")
        stream = container.streams.video[0]
        announced, playable = header_frames(stream, container)
        try:
            for frame in container.decode(stream):
                frames.append(gray.reformat(frame, format="gray").to_ndarray())
        except av.FFmpegError as e:  # a packet cut in half ends the decode: truncated if frames are missing
            error = e
    check_complete(path, len(frames), announced, playable, error)
    if not frames:
        return np.zeros((0, 0, 0), np.uint8)
    return np.stack(frames)


def header_frames(stream: VideoStream, container: InputContainer) -> tuple[int | None, int]:
    """(frames the header announces, frames it says play); None and 0 where it says nothing.

    The announced count is the index's frame count, else the duration times the frame rate. Only an mp4
    may play fewer frames than it holds (an edit list), and then its duration says so.
    """
    import av

    count = int(stream.frames) or None
    if stream.duration and stream.time_base:
        seconds = float(stream.duration * stream.time_base)
    else:
        seconds = container.duration / av.time_base if container.duration else 0.0
    rate = float(stream.average_rate) if stream.average_rate else 0.0
    span = round(seconds * rate) or None
    announced = count or span
    if count and span and "mp4" in container.format.name.split(","):
        return announced, min(count, span)
    return announced, announced or 0


def check_complete(path: Path, decoded: int, announced: int | None, playable: int, error: Exception | None) -> None:
    """Raise if the decode fell short of the header (see the module's docstring for the tolerance)."""
    if error is not None and (announced is None or decoded >= announced):
        raise error  # not a shortfall: an unreadable file
    if decoded < (announced if error is not None else playable - SLACK):
        raise DataError(
            f"{path}: truncated: the header promises {announced} frames, {decoded} decoded "
            "(a copy, download or recording cut short); copy or export it again"
        )


def read_array(path: Path) -> np.ndarray:
    """The frames of an .npy, .npz (one array, or the one named 'video') or .pt (a tensor, or {'video': tensor})."""
    ext = path.suffix.lower()
    if ext == ".pt":
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and "video" in obj:
            obj = obj["video"]
        if isinstance(obj, list | tuple):
            raise DataError(
                f"{path}: holds a {type(obj).__name__} of {len(obj)} items; stack the frames into one uint8 tensor "
                "(torch.stack(frames), every frame the same size) and save that"
            )
        if not isinstance(obj, torch.Tensor):
            raise DataError(f"{path}: holds a {type(obj).__name__}; save a uint8 tensor (or {{'video': tensor}})")
        return obj.numpy()
    if ext == ".npy":
        with open(path, "rb") as f:
            _refuse_objects(path, f)
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as z:
        keys = list(z.keys())
        key = "video" if "video" in keys else keys[0] if len(keys) == 1 else None
        if key is None:
            raise DataError(f"{path}: {len(keys)} arrays ({', '.join(keys)}); store one, or name it 'video'")
        with z.zip.open(f"{key}.npy") as f:
            _refuse_objects(path, f)
        return z[key]


def _refuse_objects(path: Path, f: IO[bytes]) -> None:
    """An object array (np.save of frames of different sizes) holds Python objects, not pixels: say what to save."""
    version = np.lib.format.read_magic(f)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(f)
    if dtype.hasobject:
        raise DataError(
            f"{path}: an object array of shape {shape} (frames of different sizes?), not pixels; stack the frames "
            "into one uint8 array (np.stack(frames), every frame the same size) and save that"
        )


def to_gray(array: np.ndarray, where: str, tensor: bool = False) -> np.ndarray:
    """T x H x W (or T x H x W x C, C = 1, 3 RGB or 4 RGBA) uint8 -> T x H x W uint8."""
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.integer) and array.size and array.min() >= 0 and array.max() <= 255:
            array = array.astype(np.uint8)
        else:
            raise DataError(f"{where}: frames of dtype {array.dtype}; save uint8 pixels 0..255")
    hint = axis_hint(array.shape, tensor)
    if hint:
        raise DataError(f"{where}: frames on the wrong axis: shape {tuple(array.shape)}; {hint}")
    if array.ndim == 4 and array.shape[-1] in CHANNELS:
        if array.shape[-1] == 1:
            return array[..., 0]
        rgb = array[..., :3].astype(np.float32)
        return np.rint(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)).clip(0, 255).astype(np.uint8)
    if array.ndim != 3:
        raise DataError(
            f"{where}: wrong shape {tuple(array.shape)}; expected T x H x W or T x H x W x C (C = 1, 3 or 4)"
        )
    return array


def axis_hint(shape: tuple[int, ...], tensor: bool) -> str | None:
    """Which axis looks like time (and channels) when frames are stored on the wrong axis, and how to move it."""
    if len(shape) == 4 and shape[-1] not in CHANNELS:
        if shape[1] in CHANNELS:
            layout, order = "axis 0 looks like time and axis 1 like colour channels (T x C x H x W)", (0, 2, 3, 1)
        elif shape[0] in CHANNELS:
            layout, order = "axis 1 looks like time and axis 0 like colour channels (C x T x H x W)", (1, 2, 3, 0)
        else:
            return None
        target = "T x H x W x C"
    elif len(shape) == 3:
        a, b, c = shape
        if a == b != c and c < a:  # two equal sides (frames are square crops) and a shorter third: time
            layout, order = "axis 2 looks like time (H x W x T)", (2, 0, 1)
            if c in CHANNELS:
                layout += f", unless it is one image of {c} channels (a clip has T frames)"
        elif a == c != b and b < a:
            layout, order = "axis 1 looks like time (H x T x W)", (1, 0, 2)
        else:
            return None
        target = "T x H x W"
    else:
        return None
    move = f"a.permute{order}" if tensor else f"np.transpose(a, {order})"
    return f"{layout}; save {move}, which is {target}"


def resize(video: np.ndarray, size: int) -> np.ndarray:
    """T x H x W uint8 -> T x size x size uint8 (bilinear, antialiased)."""
    x = torch.from_numpy(np.ascontiguousarray(video)).float()[:, None]  # (T, 1, H, W)
    y = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return y[:, 0].round().clamp(0, 255).to(torch.uint8).numpy()
