"""auto_avsr's Conformer encoder: relative-position self-attention, macaron feed-forward, convolution module."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.model.attention import FeedForward, MultiHeadAttention, attend, layer_norm, sinusoid_table
from trainer.model.frontend import frame_mask


def relative_positions(frames: int, dim: int, device: torch.device) -> Tensor:
    """Encodings of the relative positions T-1, T-2, ..., -(T-1): (2T-1, dim)."""
    return sinusoid_table(torch.arange(frames - 1, -frames, -1, device=device), dim)


def rel_shift(scores: Tensor) -> Tensor:
    """(..., T, 2T-1) scores against relative positions T-1..-(T-1) -> (..., T, T) with out[i, j] at position i - j."""
    scores = scores.contiguous()
    t = scores.size(-2)
    size = (*scores.shape[:-1], t)
    stride = (*scores.stride()[:-2], scores.stride(-2) - 1, 1)
    return scores.as_strided(size, stride, scores.storage_offset() + t - 1)


class RelPositionAttention(MultiHeadAttention):
    """Transformer-XL attention (Dai et al. 2019, section 3.3): content term through `attend`, position term as its bias."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__(dim, heads, dropout)
        self.linear_pos = nn.Linear(dim, dim, bias=False)
        self.pos_bias_u = nn.Parameter(torch.empty(heads, self.head_dim))
        self.pos_bias_v = nn.Parameter(torch.empty(heads, self.head_dim))
        nn.init.xavier_uniform_(self.pos_bias_u)
        nn.init.xavier_uniform_(self.pos_bias_v)

    def forward(self, x: Tensor, pos: Tensor, key_mask: Tensor) -> Tensor:
        """x (B, T, D), pos (2T-1, D) relative encodings, key_mask (B, 1, 1, T) True on real frames -> (B, T, D)."""
        q = self.split(self.linear_q(x))  # (B, H, T, dk)
        k, v = self.project_kv(x)  # (B, H, T, dk)
        p = self.linear_pos(pos).view(-1, self.heads, self.head_dim).transpose(0, 1)  # (H, 2T-1, dk)
        position = rel_shift((q + self.pos_bias_v[:, None]) @ p.transpose(-2, -1))  # (B, H, T, T)
        bias = (position / math.sqrt(self.head_dim)).masked_fill(~key_mask, float("-inf"))  # (B, H, T, T)
        drop = self.dropout if self.training else 0.0
        return self.merge(attend(q + self.pos_bias_u[:, None], k, v, bias, drop))


class ConvolutionModule(nn.Module):
    """Pointwise conv + GLU, depthwise conv over time, BatchNorm, SiLU, pointwise conv."""

    def __init__(self, dim: int, kernel_size: int):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"convolution kernel_size must be odd, got {kernel_size}")
        self.pointwise_cov1 = nn.Conv1d(dim, 2 * dim, 1)
        self.depthwise_conv = nn.Conv1d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2, groups=dim)
        self.norm = nn.BatchNorm1d(dim)
        self.pointwise_cov2 = nn.Conv1d(dim, dim, 1)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        """x (B, T, D), mask (B, T) True on real frames; padded frames are zeroed before the depthwise convolution."""
        x = F.glu(self.pointwise_cov1(x.transpose(1, 2)), dim=1)  # (B, D, T)
        x = x.masked_fill(~mask[:, None, :], 0.0)
        x = F.silu(self.norm(self.depthwise_conv(x)))
        return self.pointwise_cov2(x).transpose(1, 2)  # (B, T, D)


class ConformerLayer(nn.Module):
    """Half feed-forward, self-attention, convolution, half feed-forward, final norm; all pre-norm residuals."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, kernel_size: int, dropout: float):
        super().__init__()
        self.self_attn = RelPositionAttention(dim, heads, 0.0)  # auto_avsr: attention dropout 0
        self.feed_forward = FeedForward(dim, ffn_dim, dropout)
        self.feed_forward_macaron = FeedForward(dim, ffn_dim, dropout)
        self.conv_module = ConvolutionModule(dim, kernel_size)
        self.norm_ff = layer_norm(dim)
        self.norm_mha = layer_norm(dim)
        self.norm_ff_macaron = layer_norm(dim)
        self.norm_conv = layer_norm(dim)
        self.norm_final = layer_norm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, pos: Tensor, mask: Tensor) -> Tensor:
        """x (B, T, D), pos (2T-1, D), mask (B, T) True on real frames -> (B, T, D)."""
        x = x + 0.5 * self.dropout(self.feed_forward_macaron(self.norm_ff_macaron(x)))
        x = x + self.dropout(self.self_attn(self.norm_mha(x), pos, mask[:, None, None, :]))
        x = x + self.dropout(self.conv_module(self.norm_conv(x), mask))
        x = x + 0.5 * self.dropout(self.feed_forward(self.norm_ff(x)))
        return self.norm_final(x)


class ConformerEncoder(nn.Module):
    """Scaled input + relative positions, `layers` Conformer blocks, final LayerNorm."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, layers: int, kernel_size: int, dropout: float):
        super().__init__()
        self.dim = dim
        self.encoders = nn.ModuleList(ConformerLayer(dim, heads, ffn_dim, kernel_size, dropout) for _ in range(layers))
        self.after_norm = layer_norm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, T, D), lengths (B,) -> ((B, T, D), lengths); padded frames never reach real ones."""
        mask = frame_mask(lengths, x.size(1))  # (B, T)
        x = self.dropout(x * math.sqrt(self.dim))
        pos = self.dropout(relative_positions(x.size(1), self.dim, x.device).to(x.dtype))  # (2T-1, D)
        for layer in self.encoders:
            x = layer(x, pos, mask)
        return self.after_norm(x), lengths
