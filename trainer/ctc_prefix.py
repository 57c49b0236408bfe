"""Vectorised CTC prefix scoring for the beam search (Watanabe et al. 2017, Algorithm 2; Seki et al. 2019).

All hypotheses of all utterances, and all their candidate next tokens, are scored at once:
hypothesis rows are utterance-major (row `n` belongs to utterance `n // rows_per_utterance`),
and the only Python loop is over encoder frames. Matches ESPnet's `CTCPrefixScoreTH`, including
its finite log-zero and its treatment of padded frames (blank with probability 1).
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
    end_frames: Tensor  # (B,) index of each utterance's last frame
    blank: int
    eos: int

    @classmethod
    def from_log_probs(cls, log_probs: Tensor, lengths: Tensor, blank: int, eos: int) -> CTCPrefixScorer:
        """log_probs (B, T, V) log-softmax of the CTC head, lengths (B,) frames of each utterance."""
        frames = torch.arange(log_probs.size(1), device=log_probs.device)
        pad = frames[None, :] >= lengths[:, None]  # (B, T)
        x = log_probs.float().masked_fill(pad[:, :, None], LOGZERO)
        x[:, :, blank] = x[:, :, blank].masked_fill(pad, 0.0)
        return cls(x.transpose(0, 1).contiguous(), lengths - 1, blank, eos)

    def select_utterances(self, index: Tensor) -> CTCPrefixScorer:
        """The utterances at `index` (M,) int64."""
        return CTCPrefixScorer(
            self.x.index_select(1, index), self.end_frames.index_select(0, index), self.blank, self.eos
        )

    def initial_state(self) -> CTCPrefixState:
        """One hypothesis per utterance: the empty prefix (all-blank paths)."""
        frames, batch, _ = self.x.shape
        r = self.x.new_full((frames, 2, batch), LOGZERO)
        r[:, 1] = torch.cumsum(self.x[:, :, self.blank], dim=0)
        return CTCPrefixState(r, self.x.new_zeros(batch))

    def score(
        self, state: CTCPrefixState, last: Tensor, candidates: Tensor, output_length: int
    ) -> tuple[Tensor, Tensor]:
        """Prefix probabilities of every hypothesis extended by each of its candidate tokens.

        state: N hypotheses, all with `output_length` tokens after the sos; last (N,) their last token
        (the sos for the empty prefix); candidates (N, C) token ids.
        Returns psi (N, C), the log prefix probability of each extension (for eos: of the complete
        sequence; for blank: LOGZERO), and r (T, 2, N, C), the forward variables of each extension,
        to be picked with `next_state`.
        """
        frames, batch, _ = self.x.shape
        n, c = candidates.shape
        per_utt = n // batch
        index = candidates.reshape(1, batch, per_utt * c).expand(frames, batch, per_utt * c)
        xc = self.x.gather(2, index).view(frames, n, c)  # (T, N, C)
        xb = self.x[:, :, self.blank].repeat_interleave(per_utt, dim=1)[:, :, None]  # (T, N, 1)

        r_prev_sum = torch.logaddexp(state.r[:, 0], state.r[:, 1])  # (T, N)
        # paths into a repeated token must pass through a blank
        same = (candidates == last[:, None])[None]  # (1, N, C)
        phi = torch.where(same, state.r[:, 1, :, None], r_prev_sum[:, :, None])  # (T, N, C)

        r = self.x.new_full((frames, 2, n, c), LOGZERO)
        if output_length == 0:
            r[0, 0] = xc[0]
        start = max(output_length, 1)
        for t in range(start, frames):
            r[t, 0] = torch.logaddexp(r[t - 1, 0], phi[t - 1]) + xc[t]
            r[t, 1] = torch.logaddexp(r[t - 1, 0], r[t - 1, 1]) + xb[t]

        # the extension's last token is emitted first at frame t, for t >= start (or at frame start - 1 in r)
        first = r[start - 1, 0] if start - 1 < frames else xc.new_full((n, c), LOGZERO)
        psi = torch.logsumexp(
            torch.cat((phi[start - 1 : frames - 1] + xc[start:], first[None]), dim=0), dim=0
        )  # (N, C)

        rows = torch.arange(n, device=candidates.device)
        end = self.end_frames.repeat_interleave(per_utt)  # (N,)
        complete = r_prev_sum[end, rows]  # (N,) the hypothesis as a whole sequence
        psi = torch.where(candidates == self.eos, complete[:, None], psi)
        psi = psi.masked_fill(candidates == self.blank, LOGZERO)
        return psi, r

    @staticmethod
    def next_state(psi: Tensor, r: Tensor, rows: Tensor, cols: Tensor) -> CTCPrefixState:
        """The state of the extensions chosen by the search: hypothesis `rows` (M,) extended by candidate `cols` (M,)."""
        return CTCPrefixState(r[:, :, rows, cols], psi[rows, cols])
