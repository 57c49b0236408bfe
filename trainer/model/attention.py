"""Blocks shared by the encoder and the decoder: multi-head attention (auto_avsr's `linear_q/k/v/out` layout),
feed-forward, LayerNorm, sinusoidal positions.

`USE_SDPA` picks `torch.nn.functional.scaled_dot_product_attention` (default) or the plain
softmax(QK^T / sqrt(d)) V math; `bench/model.py` compares the two.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

USE_SDPA = True


def attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, dropout_p: float = 0.0, is_causal: bool = False
) -> Tensor:
    """Scaled dot-product attention.

    q (B, H, Tq, dk), k and v (B, H, Tk, dk); `mask` broadcastable to (B, H, Tq, Tk): bool (True = attend)
    or float (added to the scaled scores). Returns (B, H, Tq, dk).
    """
    if USE_SDPA:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p, is_causal=is_causal)
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, H, Tq, Tk)
    if is_causal:
        causal = torch.ones(q.size(-2), k.size(-2), dtype=torch.bool, device=q.device).tril()
        mask = causal if mask is None else mask & causal
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, float("-inf"))
    elif mask is not None:
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1)
    if dropout_p > 0.0:
        weights = F.dropout(weights, dropout_p)
    return weights @ v


class MultiHeadAttention(nn.Module):
    """Projections of auto_avsr's `MultiHeadedAttention`; the attention itself is `attend`."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.dropout = dropout
        self.linear_q = nn.Linear(dim, dim)
        self.linear_k = nn.Linear(dim, dim)
        self.linear_v = nn.Linear(dim, dim)
        self.linear_out = nn.Linear(dim, dim)

    def split(self, x: Tensor) -> Tensor:
        """(B, T, D) -> (B, H, T, dk)."""
        return x.view(x.size(0), x.size(1), self.heads, self.head_dim).transpose(1, 2)

    def merge(self, x: Tensor) -> Tensor:
        """(B, H, T, dk) -> (B, T, D) through `linear_out`."""
        return self.linear_out(x.transpose(1, 2).reshape(x.size(0), x.size(2), -1))

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values of `x` (B, T, D), each (B, H, T, dk)."""
        return self.split(self.linear_k(x)), self.split(self.linear_v(x))

    def forward(
        self, query: Tensor, k: Tensor, v: Tensor, mask: Tensor | None = None, is_causal: bool = False
    ) -> Tensor:
        """query (B, Tq, D) against projected k, v (B, H, Tk, dk) -> (B, Tq, D)."""
        q = self.split(self.linear_q(query))  # (B, H, Tq, dk)
        p = self.dropout if self.training else 0.0
        return self.merge(attend(q, k, v, mask, p, is_causal))


def sinusoid_table(positions: Tensor, dim: int) -> Tensor:
    """ESPnet's absolute sinusoidal encoding: positions (T,) float -> (T, dim), sin on even and cos on odd channels."""
    inv_freq = torch.exp(
        torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) * -(math.log(10000.0) / dim)
    )
    angles = positions.float()[:, None] * inv_freq  # (T, dim / 2)
    return torch.stack((angles.sin(), angles.cos()), dim=-1).flatten(1)  # (T, dim)


class FeedForward(nn.Module):
    """w_2(dropout(relu(w_1(x)))), auto_avsr's `PositionwiseFeedForward`."""

    def __init__(self, dim: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.w_1 = nn.Linear(dim, ffn_dim)
        self.w_2 = nn.Linear(ffn_dim, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.w_2(self.dropout(torch.relu(self.w_1(x))))


def layer_norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=1e-12)
