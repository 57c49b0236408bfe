"""auto_avsr's Transformer decoder: teacher-forced `forward` and cached incremental `start`/`step` for the search."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from trainer.model.attention import FeedForward, MultiHeadAttention, layer_norm, sinusoid_table

GROWTH = 8  # a new cache buffer has room for this many more positions (fewer allocations)


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
        """x (N, L, D) queries; self_k/v (N, H, Lk, dk) keys of the tokens so far; src_k/v (B, H, T, dk); src_mask (B, 1, 1, T).

        The N = B * K rows of x are K hypotheses of each of the B utterances, utterance-major: the K
        rows of an utterance attend to its encoder output together, as K queries.
        """
        x = x + self.dropout(self.self_attn(self.norm1(x), self_k, self_v, is_causal=is_causal))
        queries = self.norm2(x).reshape(src_k.size(0), -1, x.size(-1))  # (B, K * L, D)
        x = x + self.dropout(self.src_attn(queries, src_k, src_v, src_mask).view_as(x))
        return x + self.dropout(self.feed_forward(self.norm3(x)))


@dataclass
class DecoderState:
    """The cache of `TransformerDecoder.step` for N = B * K hypotheses of B utterances, rows utterance-major.

    kv (layers, 2, N', H, t, dk): self-attention keys (0) and values (1) of the t = `length` tokens fed
    so far, a view of `buffer`; rows (N,): the row of kv each hypothesis continues (a reorder that the
    next `step` applies while it appends), or None: kv's own rows; spare: a buffer for the next step,
    or None. src_k/src_v: per layer (B, H, T, dk), the encoder-output keys/values, once per utterance;
    src_mask (B, 1, 1, T) True on real frames. A state is used once: `step` reuses its buffers.
    """

    kv: Tensor
    buffer: Tensor
    spare: Tensor | None
    rows: Tensor | None
    src_k: list[Tensor]
    src_v: list[Tensor]
    src_mask: Tensor
    length: int

    def select(self, rows: Tensor, utterances: Tensor | None = None) -> DecoderState:
        """The hypotheses at `rows` (M,) int64, in that order; M = B' * K', utterance-major.

        Without `utterances` every new row must come from a row of the same utterance (a beam
        reordered, grown or shrunk); with `utterances` (B',) int64 only those utterances are kept,
        in that order, and `rows` pick their hypotheses. Nothing is copied until the next `step`.
        """
        rows = rows if self.rows is None else self.rows[rows]
        src_k, src_v, src_mask = self.src_k, self.src_v, self.src_mask
        if utterances is not None:
            src_k = [k.index_select(0, utterances) for k in src_k]
            src_v = [v.index_select(0, utterances) for v in src_v]
            src_mask = src_mask.index_select(0, utterances)
        return DecoderState(self.kv, self.buffer, self.spare, rows, src_k, src_v, src_mask, self.length)


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
        """An empty cache for one hypothesis per utterance of memory (B, T, D), memory_lengths (B,); cross-attention keys computed once."""
        src = [layer.src_attn.project_kv(memory) for layer in self.decoders]
        attn = self.decoders[0].self_attn
        kv = memory.new_empty(len(self.decoders), 2, memory.size(0), attn.heads, 0, attn.head_dim)
        mask = memory_mask(memory_lengths, memory.size(1))
        return DecoderState(kv, kv.view(-1), None, None, [k for k, _ in src], [v for _, v in src], mask, 0)

    def step(self, tokens: Tensor, state: DecoderState) -> tuple[Tensor, DecoderState]:
        """Feed the last token of each hypothesis, tokens (N,) -> log-probabilities of the next one (N, odim) and the new state.

        The cache is copied once per step: the hypotheses' rows gathered into the spare buffer with
        room for the new position, so that attention reads contiguous keys and values.
        """
        t, n = state.length, tokens.numel()
        layers, _, rows_before, heads, _, dk = state.kv.shape
        if state.rows is None and rows_before != n:
            raise ValueError(f"{n} tokens for {rows_before} hypotheses: select the hypotheses first")
        shape = (layers, 2, n, heads, t + 1, dk)
        buffer = state.spare
        if buffer is None or buffer.numel() < math.prod(shape):
            buffer = state.kv.new_empty(math.prod((*shape[:4], t + GROWTH, dk)))
        kv = buffer[: math.prod(shape)].view(shape)  # (layers, 2, N, H, t + 1, dk)
        if state.rows is None:
            kv[..., :t, :] = state.kv
        else:
            torch.index_select(state.kv, 2, state.rows, out=kv[..., :t, :])
        x = self.embed_tokens(tokens[:, None], t)  # (N, 1, D)
        for i, layer in enumerate(self.decoders):
            k, v = layer.self_attn.project_kv(layer.norm1(x))  # (N, H, 1, dk)
            kv[i, 0, :, :, t] = k[:, :, 0]
            kv[i, 1, :, :, t] = v[:, :, 0]
            x = layer(x, kv[i, 0], kv[i, 1], state.src_k[i], state.src_v[i], state.src_mask, is_causal=False)
        logits = self.output_layer(self.after_norm(x[:, 0]))  # (N, odim)
        new_state = DecoderState(kv, buffer, state.buffer, None, state.src_k, state.src_v, state.src_mask, t + 1)
        return torch.log_softmax(logits.float(), dim=-1), new_state
