"""Augmentation invariants: per-clip crop and flip, masks inside real frames, deterministic val path."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from trainer.augment import augment_batch, crop_flip, noise_frames, time_mask, warp_indices
from trainer.config import AugmentConfig

H = W = 112


def coords_video(B: int, T: int) -> torch.Tensor:
    """Frames whose pixels encode their (row, col): value = (7 * row + 3 * col) % 251, same on every frame."""
    r = torch.arange(H)[:, None]
    c = torch.arange(W)[None, :]
    frame = ((7 * r + 3 * c) % 251).to(torch.uint8)
    return frame.expand(B, T, H, W).clone()


def denorm(x: torch.Tensor, cfg: AugmentConfig) -> torch.Tensor:
    """Output (B, T, 1, c, c) back to 0..255 pixels."""
    return (x[:, :, 0] * cfg.std + cfg.mean) * 255.0


def locate(patch: torch.Tensor) -> tuple[int, int, bool]:
    """Top, left and flip of a crop of the coords frame (brute force over all offsets)."""
    c = patch.shape[-1]
    full = coords_video(1, 1)[0, 0].float()
    for flip in (False, True):
        p = patch.flip(-1) if flip else patch
        for top in range(H - c + 1):
            for left in range(W - c + 1):
                if torch.equal(full[top : top + c, left : left + c], p):
                    return top, left, flip
    raise AssertionError("patch is not a crop of the frame")


def cfg_no_mask(**kw) -> AugmentConfig:
    return dataclasses.replace(AugmentConfig(), time_mask_window=0, **kw)


def test_shape_dtype_and_normalisation():
    cfg = AugmentConfig()
    video = torch.full((3, 20, H, W), 255, dtype=torch.uint8)
    lengths = torch.tensor([20, 12, 5])
    out = augment_batch(video, lengths, cfg, train=False)
    assert out.shape == (3, 20, 1, 88, 88) and out.dtype == torch.float32
    expected = (1.0 - cfg.mean) / cfg.std
    assert torch.allclose(out[0], torch.full_like(out[0], expected))
    assert torch.allclose(out[1, :12], torch.full_like(out[1, :12], expected))
    assert (out[1, 12:] == 0).all() and (out[2, 5:] == 0).all()


def test_val_is_exact_centre_crop_and_deterministic():
    cfg = AugmentConfig()
    video = torch.randint(0, 256, (2, 9, H, W), dtype=torch.uint8)
    lengths = torch.tensor([9, 9])
    a = augment_batch(video, lengths, cfg, train=False)
    b = augment_batch(video, lengths, cfg, train=False, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)
    off = (H - 88) // 2
    expected = (video[:, :, off : off + 88, off : off + 88].float() / 255.0 - cfg.mean) / cfg.std
    assert torch.allclose(a[:, :, 0], expected, atol=1e-6)


def test_val_passes_crop_sized_clip_unchanged():
    cfg = AugmentConfig()
    video = torch.randint(0, 256, (1, 4, 88, 88), dtype=torch.uint8)
    out = augment_batch(video, torch.tensor([4]), cfg, train=False)
    assert torch.allclose(denorm(out, cfg), video.float(), atol=1e-3)


@pytest.mark.parametrize("flip_prob", [0.0, 0.5, 1.0])
def test_same_crop_and_flip_on_all_frames_different_across_clips(flip_prob: float):
    cfg = cfg_no_mask(flip_prob=flip_prob)
    B, T = 8, 6
    out = augment_batch(coords_video(B, T), torch.full((B,), T), cfg, True, torch.Generator().manual_seed(0))
    pix = denorm(out, cfg).round()
    placements = []
    for b in range(B):
        for t in range(1, T):
            assert torch.equal(pix[b, t], pix[b, 0]), f"clip {b}: frame {t} cropped differently from frame 0"
        placements.append(locate(pix[b, 0]))
    flips = [f for _, _, f in placements]
    if flip_prob == 0.0:
        assert not any(flips)
    elif flip_prob == 1.0:
        assert all(flips)
    else:
        assert any(flips) and not all(flips)
    assert len({(top, left) for top, left, _ in placements}) > 1, "every clip got the same crop"


def test_crop_flip_matches_slicing():
    video = torch.randint(0, 256, (2, 3, 20, 24), dtype=torch.uint8)
    out = crop_flip(video, torch.tensor([1, 7]), torch.tensor([0, 9]), torch.tensor([False, True]), 10)
    assert torch.equal(out[0], video[0, :, 1:11, 0:10])
    assert torch.equal(out[1], video[1, :, 7:17, 9:19].flip(-1))


def test_seed_reproducible_and_seeds_differ():
    cfg = dataclasses.replace(AugmentConfig(), time_warp=True)
    video = torch.randint(0, 256, (4, 30, H, W), dtype=torch.uint8)
    lengths = torch.tensor([30, 29, 17, 3])
    a = augment_batch(video, lengths, cfg, True, torch.Generator().manual_seed(1))
    b = augment_batch(video, lengths, cfg, True, torch.Generator().manual_seed(1))
    c = augment_batch(video, lengths, cfg, True, torch.Generator().manual_seed(2))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


@pytest.mark.parametrize("window,stride", [(10, 25), (3, 5), (1, 1)])
def test_time_mask_bounds(window: int, stride: int):
    lengths = torch.tensor([38, 29, 25, 26, 7, 1, 0])
    T = 40
    g = torch.Generator().manual_seed(3)
    for _ in range(50):
        m = time_mask(lengths, T, window, stride, g)
        assert m.shape == (len(lengths), T)
        for b, n in enumerate(lengths.tolist()):
            assert not m[b, n:].any(), "mask touched a padded frame"
            n_masks = int((n + stride - 0.1) // stride)
            assert int(m[b].sum()) <= n_masks * window
    # with enough draws some frames are masked and widths reach the window but never exceed it per mask
    m = time_mask(torch.full((2000,), 20), 20, window, 100, g)  # one mask a clip
    widths = m.sum(1)
    assert int(widths.max()) == min(window, 20) and int(widths.min()) == 0


def test_masked_frames_get_clip_mean_and_padding_stays_zero():
    cfg = dataclasses.replace(AugmentConfig(), time_mask_window=10, time_mask_stride=5, crop_size=112)
    B, T = 6, 30
    levels = torch.arange(1, T + 1, dtype=torch.uint8) * 8  # each real frame a distinct flat level
    video = levels[None, :, None, None].expand(B, T, H, W).clone()
    lengths = torch.tensor([30, 25, 20, 12, 6, 1])
    video[torch.arange(T)[None, :] >= lengths[:, None]] = 0
    out = augment_batch(video, lengths, cfg, True, torch.Generator().manual_seed(4))
    pix = denorm(out, cfg)  # (B, T, 112, 112)
    for b, n in enumerate(lengths.tolist()):
        assert (out[b, n:] == 0).all(), "padded frames must stay exactly zero"
        clip_mean = levels[:n].float().mean()
        frame_vals = pix[b, :n, 0, 0]
        flat = pix[b, :n].amax((1, 2)) - pix[b, :n].amin((1, 2))
        assert (flat < 1e-2).all()
        masked = (frame_vals - levels[:n].float()).abs() > 1e-2
        assert torch.allclose(frame_vals[masked], clip_mean.expand(int(masked.sum())), atol=1e-2)
    total_masked = (pix[:, :, 0, 0] - levels.float()).abs()[torch.arange(T)[None] < lengths[:, None]] > 1e-2
    assert total_masked.any(), "no frame was masked in six clips"


def test_time_warp_keeps_lengths_endpoints_and_padding():
    cfg = dataclasses.replace(cfg_no_mask(flip_prob=0.0), time_warp=True, crop_size=112)
    B, T = 16, 38
    lengths = torch.randint(10, T + 1, (B,), generator=torch.Generator().manual_seed(0))
    video = torch.zeros(B, T, H, W, dtype=torch.uint8)
    for b, n in enumerate(lengths.tolist()):
        video[b, :n] = torch.linspace(0, 250, n).round().to(torch.uint8)[:, None, None]
    out = augment_batch(video, lengths, cfg, True, torch.Generator().manual_seed(7))
    assert out.shape == (B, T, 1, 112, 112)
    pix = denorm(out, cfg)[:, :, 0, 0]  # (B, T)
    changed = False
    for b, n in enumerate(lengths.tolist()):
        assert (out[b, n:] == 0).all()
        real = pix[b, :n]
        assert abs(float(real[0]) - float(video[b, 0, 0, 0])) < 0.5, "first frame must stay"
        assert abs(float(real[-1]) - float(video[b, n - 1, 0, 0])) < 0.5, "last frame must stay"
        assert (real[1:] - real[:-1] >= -1e-3).all(), "time warp must keep frame order"
        changed |= bool(((real - video[b, :n, 0, 0].float()).abs() > 1.0).any())
    assert changed, "time warp changed no clip"


def test_warp_indices_resample_at_bounded_speed():
    lengths = torch.tensor([38, 30, 29, 10, 2, 1])
    src = warp_indices(lengths, 38, torch.Generator().manual_seed(0))
    for b, n in enumerate(lengths.tolist()):
        s = src[b, :n]
        assert s[0] == 0 and s[-1] == n - 1 and (s.diff() >= 0).all() and (src[b, n:] == n - 1).all()
        if n >= 10:  # mean speed of each half within the allowed range (rounding aside)
            assert (s.diff() <= 2).all()


def test_bad_inputs_raise():
    cfg = AugmentConfig()
    with pytest.raises(ValueError, match="crop_size"):
        augment_batch(torch.zeros(1, 2, 64, 64, dtype=torch.uint8), torch.tensor([2]), cfg, train=False)
    with pytest.raises(ValueError, match="lengths"):
        augment_batch(torch.zeros(2, 2, H, W, dtype=torch.uint8), torch.tensor([2]), cfg, train=False)


def test_noise_frames_ignore_the_input_and_keep_padding_zero():
    x = torch.randn(3, 5, 1, 4, 4)
    lengths = torch.tensor([5, 2, 0])
    a = noise_frames(x, lengths, torch.Generator().manual_seed(0))
    b = noise_frames(x * 0 + 7, lengths, torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert a[1, 2:].abs().sum() == 0 and a[2].abs().sum() == 0
    assert a[0].abs().sum() > 0 and 0.5 < a[0].std() < 1.5
