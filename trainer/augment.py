"""Batched video augmentation on the batch's device (SPEC 1): crop, flip, time mask, time warp, normalise.

Train: a random `crop_size` crop and a horizontal flip (p = `flip_prob`), one draw per clip and the same
for all its frames; auto_avsr's adaptive time mask (one mask of up to `time_mask_window` frames per
`time_mask_stride` real frames, masked frames set to the clip's mean); an optional time warp. Val/test:
centre crop and normalise, nothing random. Padded frames (t >= length) are zero in the output.

Crop and flip are one integer `gather` over the flattened frame: exact pixels, no resampling, and no
read-back of the crop boxes to the host (Kornia's `crop_by_indices` reads the boxes back in eager mode
and its random crops draw from the global RNG, so it does not fit here). All randomness comes from the
`generator` argument, so a run with the same seed sees the same augmentations.
"""

from __future__ import annotations

import torch

from trainer.config import AugmentConfig

WARP_SPEED = (0.8, 1.2)  # speed range of the first part of a time-warped clip


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """U[0, 1) numbers drawn on the generator's device (if any), then moved to `device` without a sync."""
    gen_device = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, device=gen_device).to(device, non_blocking=True)


def crop_flip(
    video: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, crop: int
) -> torch.Tensor:
    """Crop every frame of clip b at (top[b], left[b]), mirrored where flip[b]; (B, T, H, W) -> (B, T, crop, crop)."""
    B, T, H, W = video.shape
    ar = torch.arange(crop, device=video.device)
    rows = top[:, None] + ar  # (B, crop)
    cols = torch.where(flip[:, None], left[:, None] + crop - 1 - ar, left[:, None] + ar)  # (B, crop)
    index = (rows[:, :, None] * W + cols[:, None, :]).reshape(B, 1, crop * crop)  # (B, 1, crop*crop)
    out = video.reshape(B, T, H * W).gather(2, index.expand(B, T, crop * crop))  # (B, T, crop*crop)
    return out.reshape(B, T, crop, crop)


def time_mask(
    lengths: torch.Tensor, T: int, window: int, stride: int, generator: torch.Generator | None
) -> torch.Tensor:
    """(B, T) bool, True on masked frames: per clip int((len + stride - 0.1) // stride) masks of 0..window frames.

    Each mask lies inside the clip's real frames [0, len); masks may overlap, like auto_avsr's.
    """
    B, device = lengths.shape[0], lengths.device
    n_max = int((T + stride - 0.1) // stride)
    if window == 0 or n_max == 0:
        return torch.zeros(B, T, dtype=torch.bool, device=device)
    n_masks = torch.div(
        lengths + stride - 1, stride, rounding_mode="floor"
    )  # (B,) equals int((len+stride-0.1)//stride)
    u = _uniform((B, n_max, 2), generator, device)
    max_width = torch.clamp(lengths, max=window)[:, None]  # (B, 1)
    width = torch.floor(u[..., 0] * (max_width + 1)).long()  # (B, n_max) in [0, min(window, len)]
    start = torch.floor(u[..., 1] * (lengths[:, None] - width + 1)).long()  # (B, n_max) in [0, len - width]
    used = torch.arange(n_max, device=device)[None, :] < n_masks[:, None]  # (B, n_max)
    t = torch.arange(T, device=device)[None, None, :]  # (1, 1, T)
    hit = (t >= start[..., None]) & (t < (start + width)[..., None]) & used[..., None]  # (B, n_max, T)
    return hit.any(dim=1)


def warp_indices(lengths: torch.Tensor, T: int, generator: torch.Generator | None) -> torch.Tensor:
    """Source frame of every output frame, (B, T) long: each clip's real frames resampled along time, length kept.

    A random pivot (30 % to 70 % of the clip) moves so that the part before it plays at a random speed in
    WARP_SPEED and the part after it at the speed that brings the clip back to its own length. The first
    and last real frames stay in place, so nothing said is cut off; frames are dropped or repeated, as a
    change of speed does. Padded positions point at the last real frame.
    """
    B, device = lengths.shape[0], lengths.device
    u = _uniform((B, 2), generator, device)
    last = (lengths - 1).clamp(min=0).float()[:, None]  # (B, 1)
    pivot = (0.3 + 0.4 * u[:, :1]) * last  # (B, 1) source position of the pivot
    speed = WARP_SPEED[0] + (WARP_SPEED[1] - WARP_SPEED[0]) * u[:, 1:]  # (B, 1)
    target = torch.minimum(pivot / speed, last - 1e-3).clamp(min=1e-3)  # (B, 1) output position of the pivot
    t = torch.arange(T, device=device, dtype=torch.float32)[None, :]  # (1, T)
    before = t * pivot / target
    after = pivot + (t - target) * (last - pivot) / (last - target).clamp(min=1e-3)
    src = torch.where(t <= target, before, after)
    return torch.minimum(src.clamp(min=0), last).round().long()  # (B, T)


def augment_batch(
    video: torch.Tensor,
    lengths: torch.Tensor,
    cfg: AugmentConfig,
    train: bool,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Zero-padded uint8 clips (B, T, H, W) with `lengths` (B,) -> normalised float (B, T, 1, crop, crop).

    `train` draws crops, flips, masks (and warps if `cfg.time_warp`) from `generator`; otherwise a
    deterministic centre crop. Frames at t >= length are 0 in the output.
    """
    if video.ndim != 4:
        raise ValueError(f"video must be (B, T, H, W), got shape {tuple(video.shape)}")
    B, T, H, W = video.shape
    crop = cfg.crop_size
    if crop > min(H, W):
        raise ValueError(f"frames of {H}x{W} are smaller than augment.crop_size={crop}; lower it or use larger clips")
    if lengths.shape != (B,):
        raise ValueError(f"lengths must be ({B},), got shape {tuple(lengths.shape)}")
    device = video.device
    lengths = lengths.to(device=device, dtype=torch.long)
    real = torch.arange(T, device=device)[None, :] < lengths[:, None]  # (B, T)

    if train:
        u = _uniform((B, 3), generator, device)
        top = torch.floor(u[:, 0] * (H - crop + 1)).long()
        left = torch.floor(u[:, 1] * (W - crop + 1)).long()
        flip = u[:, 2] < cfg.flip_prob
    else:
        top = torch.full((B,), (H - crop) // 2, device=device, dtype=torch.long)
        left = torch.full((B,), (W - crop) // 2, device=device, dtype=torch.long)
        flip = torch.zeros(B, dtype=torch.bool, device=device)
    x = crop_flip(video, top, left, flip, crop)  # (B, T, crop, crop) uint8
    if train and cfg.time_warp:
        src = warp_indices(lengths, T, generator)  # (B, T)
        x = x.gather(1, src[:, :, None, None].expand_as(x))
    x = x.float()  # pixels 0..255

    # the rest is one pass: out = x * scale + shift with a scale and shift per frame, (B, T, 1, 1)
    scale = real.to(x.dtype) / (255.0 * cfg.std)  # (B, T): padded frames -> 0
    shift = -cfg.mean / cfg.std * real.to(x.dtype)
    if train and cfg.time_mask_window > 0:
        masked = time_mask(lengths, T, cfg.time_mask_window, cfg.time_mask_stride, generator)  # (B, T)
        frame_sums = x.sum(dim=(2, 3)) * real  # (B, T)
        clip_mean = frame_sums.sum(dim=1) / (lengths.clamp(min=1) * crop * crop * 255.0)  # (B,) on [0, 1]
        scale = scale.masked_fill(masked, 0.0)
        shift = torch.where(masked, (clip_mean[:, None] - cfg.mean) / cfg.std, shift)
    x = x.mul_(scale[:, :, None, None]).add_(shift[:, :, None, None])
    return x[:, :, None]  # (B, T, 1, crop, crop)


def noise_frames(x: torch.Tensor, lengths: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """The `train.noise_input` control: N(0, 1) noise shaped like the model input x (B, T, ...), 0 on padded frames.

    A model fed this can only learn the label prior, so its CER stays high; if it does not, labels leak.
    """
    real = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]  # (B, T)
    gen_device = generator.device if generator is not None else x.device
    noise = torch.randn(x.shape, generator=generator, device=gen_device, dtype=x.dtype).to(x.device)
    return noise * real.reshape(*real.shape, *([1] * (x.ndim - 2)))
