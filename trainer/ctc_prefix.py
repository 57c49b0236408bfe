"""Vectorised CTC prefix scoring for the beam search (Watanabe et al. 2017, Algorithm 2; Seki et al. 2019).

All hypotheses of all utterances are scored at once, rows utterance-major (row `n` belongs to
utterance `n // rows_per_utterance`). ESPnet's `CTCPrefixScoreTH` runs the forward recursion over
frames for every candidate token of every hypothesis; here the work is split in two:

- `score`: the prefix probability of a hypothesis extended by token c,
  psi(c) = sum_t phi(t - 1) x_t(c), needs only the hypothesis' own forward variables (phi) and the
  token's frame probabilities, so for all tokens at once it is one matrix product per utterance,
  (hypotheses x frames) @ (frames x vocabulary), in float64 with per-row and per-column scaling;
  the rest (logarithms, special tokens) is done for the search's candidates only;
- `extend`: the forward variables only for the extensions the search kept, all frames at once
  (the recursion is linear: cumulative sums in float64, no loop over frames).

The conventions are ESPnet's (a finite log-zero, padded frames as blank with probability 1, eos
scored as the end of the sequence, blank never a token), so the scores agree to float rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

LOGZERO = -1e10  # ESPnet's log(0): finite, so that differences of impossible paths stay finite


@dataclass
class CTCPrefixState:
    """The CTC state of N hypotheses (their prefixes, without the sos)."""

    r: Tensor  # (T, 2, N) log-prob of the prefix over frames 0..t, ending in a non-blank (0) / a blank (1)
    psi: Tensor  # (N,) log prefix probability: the hypothesis' CTC score so far

    def select(self, index: Tensor) -> CTCPrefixState:
        """The hypotheses at `index` (M,) int64."""
        return CTCPrefixState(self.r.index_select(2, index), self.psi.index_select(0, index))


@dataclass
class CTCPrefixScorer:
    """The CTC log-probabilities of B utterances, laid out for prefix scoring."""

    x: Tensor  # (T, B, V) log-probs; frames past an utterance's end: LOGZERO, blank 0
    scaled: Tensor  # (B, T, V) float64 exp(x - peak): frame probabilities relative to each token's peak
    peak: Tensor  # (B, V) each token's highest log-prob over the frames
    end_frames: Tensor  # (B,) index of each utterance's last frame
    blank: int
    eos: int

    @classmethod
    def from_log_probs(cls, log_probs: Tensor, lengths: Tensor, blank: int, eos: int) -> CTCPrefixScorer:
        """log_probs (B, T, V) log-softmax of the CTC head, lengths (B,) frames of each utterance (>= 1)."""
        frames = torch.arange(log_probs.size(1), device=log_probs.device)
        pad = frames[None, :] >= lengths[:, None]  # (B, T)
        x = log_probs.float().masked_fill(pad[:, :, None], LOGZERO)
        x[:, :, blank] = x[:, :, blank].masked_fill(pad, 0.0)
        peak = x.amax(dim=1)  # (B, V)
        scaled = torch.exp(x.double() - peak.double()[:, None, :])  # (B, T, V)
        return cls(x.transpose(0, 1).contiguous(), scaled, peak, lengths - 1, blank, eos)

    def select_utterances(self, index: Tensor) -> CTCPrefixScorer:
        """The utterances at `index` (M,) int64."""
        return CTCPrefixScorer(
            self.x.index_select(1, index),
            self.scaled.index_select(0, index),
            self.peak.index_select(0, index),
            self.end_frames.index_select(0, index),
            self.blank,
            self.eos,
        )

    def initial_state(self) -> CTCPrefixState:
        """One hypothesis per utterance: the empty prefix (all-blank paths)."""
        frames, batch, _ = self.x.shape
        r = self.x.new_full((frames, 2, batch), LOGZERO)
        r[:, 1] = torch.cumsum(self.x[:, :, self.blank], dim=0)
        return CTCPrefixState(r, self.x.new_zeros(batch))

    def _frame_log_probs(self, tokens: Tensor) -> Tensor:
        """tokens (N,), rows utterance-major -> their log-probs at every frame (T, N)."""
        frames, batch, _ = self.x.shape
        index = tokens.view(1, batch, -1).expand(frames, -1, -1)
        return self.x.gather(2, index).view(frames, -1)

    def score(self, state: CTCPrefixState, last: Tensor, output_length: int, tokens: Tensor | None = None) -> Tensor:
        """Log prefix probability psi (N, C) of every hypothesis extended by each of its candidate tokens.

        state: N hypotheses, all with `output_length` tokens after the sos; last (N,) their last token
        (the sos for the empty prefix); tokens (N, C) the candidates, default every token (C = V).
        For eos psi is the probability of the hypothesis as a complete sequence, for blank LOGZERO.
        """
        frames, batch, vocab = self.x.shape
        n = last.numel()
        if tokens is None:
            tokens = torch.arange(vocab, device=last.device).expand(n, vocab)
        per_utt = n // batch
        by_utt = tokens.reshape(batch, per_utt, -1)  # (B, K, C)
        start = max(output_length, 1)  # the new token is first emitted at frame t >= start ...
        r_sum = torch.logaddexp(state.r[:, 0], state.r[:, 1])  # (T, N)
        phi = r_sum[start - 1 : frames - 1]  # (T', N) ... after the prefix, complete at t - 1
        if phi.size(0):
            top = phi.amax(dim=0)  # (N,)
            weights = torch.exp(phi.double() - top.double()).T.reshape(batch, per_utt, -1)  # (B, K, T')
            total = torch.bmm(weights, self.scaled[:, start:]).gather(2, by_utt)  # (B, K, C)
            peak = self.peak[:, None, :].expand(-1, per_utt, -1).gather(2, by_utt)  # (B, K, C)
            psi = (torch.log(total) + peak.double()).view(n, -1) + top.double()[:, None]
            psi = psi.float().clamp(min=LOGZERO)  # (N, C)
            # repeating the last token needs a blank in between: only blank-ending prefixes count
            repeat = torch.logsumexp(state.r[start - 1 : frames - 1, 1] + self._frame_log_probs(last)[start:], dim=0)
            psi = torch.where(tokens == last[:, None], repeat[:, None], psi)
        else:
            psi = self.x.new_full(tokens.shape, LOGZERO)
        if output_length == 0:  # or at frame 0, for the first token
            first = self.x[0][:, None, :].expand(-1, per_utt, -1).gather(2, by_utt).view(n, -1)  # (N, C)
            psi = torch.logaddexp(psi, first)

        rows = torch.arange(n, device=last.device)
        end = self.end_frames.repeat_interleave(per_utt)  # (N,)
        psi = torch.where(tokens == self.eos, r_sum[end, rows][:, None], psi)
        return psi.masked_fill(tokens == self.blank, LOGZERO)

    def extend(
        self, state: CTCPrefixState, rows: Tensor, tokens: Tensor, last: Tensor, psi: Tensor, output_length: int
    ) -> CTCPrefixState:
        """The state of the extensions the search kept: hypotheses `rows` (M,) of `state` + `tokens` (M,).

        last (N,): the last tokens of the hypotheses of `state`; psi (M,): the extensions' prefix
        probabilities from `score`. The M rows must be utterance-major.

        ESPnet's recursion r_n[t] = (r_n[t-1] + phi[t-1]) x_t(token), r_b[t] = (r_n[t-1] + r_b[t-1]) x_t(blank)
        is linear, so it is solved for all frames at once with cumulative sums in float64:
        r_n[t] = sum_{s<=t} enter[s] prod_{u=s..t} x_u(token), r_b[t] = sum_{s<t} r_n[s] prod_{u=s+1..t} x_u(blank).
        """
        m = rows.numel()
        parent = state.select(rows)
        r_sum = torch.logaddexp(parent.r[:, 0], parent.r[:, 1])  # (T, M)
        phi = torch.where(tokens == last[rows], parent.r[:, 1], r_sum)  # (T, M)
        x_token = self._frame_log_probs(tokens).double()  # (T, M)
        x_blank = self.x[:, :, self.blank].repeat_interleave(m // self.x.size(1), dim=1).double()
        # enter[s]: the token first emitted at frame s, after the prefix complete at s - 1 (or at once, if empty);
        # ESPnet starts the recursion at frame max(output_length, 1)
        enter = torch.cat((phi.new_full((1, m), 0.0 if output_length == 0 else LOGZERO), phi[:-1])).double()
        enter[1 : max(output_length, 1)] = LOGZERO
        cum_token = torch.cumsum(x_token, dim=0)  # (T, M)
        r_n = torch.logcumsumexp(enter - (cum_token - x_token), dim=0) + cum_token
        cum_blank = torch.cumsum(x_blank, dim=0)
        r_b = torch.logcumsumexp(r_n - cum_blank, dim=0)[:-1] + cum_blank[1:]
        r_b = torch.cat((r_b.new_full((1, m), LOGZERO), r_b))
        return CTCPrefixState(torch.stack((r_n, r_b), dim=1).float(), psi)
