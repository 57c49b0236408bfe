"""auto_avsr's Transformer decoder: teacher-forced `forward` and cached incremental `start`/`step` for the search."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainer.model.attention import FeedForward, MultiHeadAttention, layer_norm, sinusoid_table


class DecoderLayer(nn.Module):
    """Pre-norm block: causal self-attention, attention over the encoder output, feed-forward."""

    def __init__(self, dim: int, heads: int, ffn_dim: int, dropout: float):
        super().__init__()
        self.self_attn = MultiHeadAttention(dim, heads, dropout)
        self.src_attn = MultiHeadAttention(dim, heads, dropout)
        self.feed_forward = FeedForward(dim, ffn_dim, dropout)
        self.norm1 = layer_norm(dim)
        self.norm2 = layer_norm(dim)
        self.norm3 = layer_norm(dim)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self, x: Tensor, self_k: Tensor, self_v: Tensor, src_k: Tensor, src_v: Tensor, src_mask: Tensor, is_causal: bool
    ) -> Tensor:
        """x (B, L, D) queries; self_k/v (B, H, Lk, dk) keys of the tokens so far; src_k/v (B, H, T, dk); src_mask (B, 1, 1, T)."""
        x = x + self.dropout(self.self_attn(self.norm1(x), self_k, self_v, is_causal=is_causal))
        x = x + self.dropout(self.src_attn(self.norm2(x), src_k, src_v, src_mask))
        return x + self.dropout(self.feed_forward(self.norm3(x)))


@dataclass
class DecoderState:
    """Per-hypothesis cache for `TransformerDecoder.step`: rows are hypotheses (N).

    self_k/self_v: per layer (N, H, t, dk), the self-attention keys/values of the t tokens fed so far;
    src_k/src_v: per layer (N, H, T, dk), the encoder-output keys/values; src_mask (N, 1, 1, T) True on real frames.
    """

    self_k: list[Tensor]
    self_v: list[Tensor]
    src_k: list[Tensor]
    src_v: list[Tensor]
    src_mask: Tensor
    length: int

    def select(self, index: Tensor) -> DecoderState:
        """The hypotheses at `index` (M,) int64, in that order (M may differ from N)."""

        def pick(ts: list[Tensor]) -> list[Tensor]:
            return [t.index_select(0, index) for t in ts]

        return DecoderState(
            pick(self.self_k),
            pick(self.self_v),
            pick(self.src_k),
            pick(self.src_v),
            self.src_mask.index_select(0, index),
            self.length,
        )


def memory_mask(lengths: Tensor, frames: int) -> Tensor:
    """lengths (B,) -> (B, 1, 1, T) bool, True on real frames."""
    return (torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None])[:, None, None, :]


class TransformerDecoder(nn.Module):
    """Token embedding + sinusoidal positions, `layers` pre-norm blocks, final norm, output layer."""

    def __init__(self, odim: int, dim: int, heads: int, ffn_dim: int, layers: int, dropout: float):
        super().__init__()
        self.odim = odim
        self.dim = dim
        self.embed = nn.Sequential(nn.Embedding(odim, dim))  # `embed.0`: auto_avsr's key; `embed.1` held no weights
        self.decoders = nn.ModuleList(DecoderLayer(dim, heads, ffn_dim, dropout) for _ in range(layers))
        self.after_norm = layer_norm(dim)
        self.output_layer = nn.Linear(dim, odim)
        self.dropout = nn.Dropout(dropout)

    def embed_tokens(self, tokens: Tensor, start: int) -> Tensor:
        """tokens (B, L) at positions start..start+L-1 -> (B, L, D)."""
        positions = torch.arange(start, start + tokens.size(1), device=tokens.device)
        x = self.embed[0](tokens) * math.sqrt(self.dim) + sinusoid_table(positions, self.dim)  # (B, L, D)
        return self.dropout(x)

    def forward(self, tokens: Tensor, memory: Tensor, memory_lengths: Tensor) -> Tensor:
        """Teacher forcing: tokens (B, L) (sos first), memory (B, T, D), memory_lengths (B,) -> logits (B, L, odim)."""
        mask = memory_mask(memory_lengths, memory.size(1))
        x = self.embed_tokens(tokens, 0)  # (B, L, D)
        for layer in self.decoders:
            k, v = layer.self_attn.project_kv(layer.norm1(x))
            src_k, src_v = layer.src_attn.project_kv(memory)
            x = layer(x, k, v, src_k, src_v, mask, is_causal=True)
        return self.output_layer(self.after_norm(x))  # (B, L, odim)

    def start(self, memory: Tensor, memory_lengths: Tensor) -> DecoderState:
        """An empty cache for hypotheses over memory (N, T, D), memory_lengths (N,); cross-attention keys computed once."""
        src = [layer.src_attn.project_kv(memory) for layer in self.decoders]
        empty = memory.new_zeros(
            memory.size(0), self.decoders[0].self_attn.heads, 0, self.decoders[0].self_attn.head_dim
        )
        n = len(self.decoders)
        return DecoderState(
            [empty] * n,
            [empty] * n,
            [k for k, _ in src],
            [v for _, v in src],
            memory_mask(memory_lengths, memory.size(1)),
            0,
        )

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """Feed the last token of each hypothesis, tokens (N,) -> log-probabilities of the next one (N, odim) and the new state."""
        x = self.embed_tokens(tokens[:, None], state.length)  # (N, 1, D)
        self_k, self_v = [], []
        for i, layer in enumerate(self.decoders):
            k, v = layer.self_attn.project_kv(layer.norm1(x))  # (N, H, 1, dk)
            k = torch.cat((state.self_k[i], k), dim=2)  # (N, H, t + 1, dk)
            v = torch.cat((state.self_v[i], v), dim=2)
            x = layer(x, k, v, state.src_k[i], state.src_v[i], state.src_mask, is_causal=False)
            self_k.append(k)
            self_v.append(v)
        logits = self.output_layer(self.after_norm(x[:, 0]))  # (N, odim)
        new_state = DecoderState(self_k, self_v, state.src_k, state.src_v, state.src_mask, state.length + 1)
        return torch.log_softmax(logits.float(), dim=-1), new_state
