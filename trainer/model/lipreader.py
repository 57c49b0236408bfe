"""The joint CTC/attention lip reader (auto_avsr's `E2E`, video modality): model, losses, accuracy, freezing."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainer.config import FreezeConfig, ModelConfig
from trainer.model.decoder import TransformerDecoder
from trainer.model.encoder import ConformerEncoder
from trainer.model.frontend import Frontend

IGNORE_ID = -1

# The model's parameter groups by name prefix: the trainer logs grad_norm/<group>, diagnose reads them.
GRAD_GROUPS = {
    "frontend_stem": ("frontend.frontend3D.",),
    "frontend_last": ("frontend.trunk.layer4.",),
    "proj_encoder": ("proj_encoder.",),
    "adapter": ("adapter.",),
    "encoder": ("encoder.",),
    "decoder": ("decoder.",),
    "ctc": ("ctc.",),
}


@dataclass
class LossOutput:
    """Batch losses (summed over tokens/frames, divided by B, as auto_avsr) and what the trainer logs."""

    loss: Tensor  # ctc_weight * loss_ctc + (1 - ctc_weight) * loss_att
    loss_ctc: Tensor
    loss_att: Tensor
    acc: Tensor  # teacher-forced next-token accuracy over real target positions (0-dim)
    decoder_logits: Tensor  # (B, L + 1, odim)
    ctc_log_probs: Tensor  # (B, T, odim)
    lengths: Tensor  # (B,) encoder frames


class CTCHead(nn.Module):
    """auto_avsr's `CTC` module: dropout then `ctc_lo`."""

    def __init__(self, dim: int, odim: int, dropout: float):
        super().__init__()
        self.ctc_lo = nn.Linear(dim, odim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, D) -> log-probabilities (B, T, odim) in float32."""
        return torch.log_softmax(self.ctc_lo(self.dropout(x)).float(), dim=-1)


class Adapter(nn.Module):
    """Residual adapter between encoder and heads; starts as the identity (last layer zero-initialised).

    linear: x + W x; mlp: x + W2 relu(W1 LayerNorm(x)) with a dim / 4 bottleneck.
    """

    def __init__(self, dim: int, kind: str):
        super().__init__()
        if kind == "linear":
            self.net = nn.Sequential(nn.Linear(dim, dim))
        elif kind == "mlp":
            hidden = max(1, dim // 4)
            self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, dim))
        else:
            raise ValueError(f"adapter must be none, linear or mlp, got {kind!r}")
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.net(x)


def decoder_io(targets: Tensor, sos: int, eos: int) -> tuple[Tensor, Tensor]:
    """targets (B, L) padded with -1 -> decoder inputs (B, L + 1) `sos y` padded with eos, outputs `y eos` padded with -1."""
    pad = targets == IGNORE_ID
    lengths = (~pad).sum(1)  # (B,)
    sos_col = targets.new_full((targets.size(0), 1), sos)
    ys_in = torch.cat((sos_col, targets.masked_fill(pad, eos)), dim=1)  # (B, L + 1)
    ys_out = torch.cat((targets, targets.new_full((targets.size(0), 1), IGNORE_ID)), dim=1)  # (B, L + 1)
    positions = torch.arange(ys_out.size(1), device=targets.device)[None, :]
    ys_out = torch.where(positions == lengths[:, None], torch.full_like(ys_out, eos), ys_out)
    return ys_in, ys_out


def xlogx(v: float) -> float:
    return v * math.log(v) if v > 0 else 0.0


def label_smoothing_loss(logits: Tensor, targets: Tensor, smoothing: float) -> Tensor:
    """KL(smoothed one-hot || softmax(logits)) summed over real positions, divided by B (auto_avsr's criterion).

    logits (B, L, V), targets (B, L) with -1 on padding. The smoothed target puts 1 - smoothing on the label and
    smoothing / (V - 1) on every other class.
    """
    vocab = logits.size(-1)
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, L, V)
    real = targets != IGNORE_ID
    confidence, other = 1.0 - smoothing, smoothing / (vocab - 1)
    entropy = xlogx(confidence) + (vocab - 1) * xlogx(other)  # sum of t log t over the smoothed target
    label_logp = logp.gather(-1, targets.clamp(min=0)[..., None])[..., 0]  # (B, L)
    cross = confidence * label_logp + other * (logp.sum(-1) - label_logp)  # (B, L)
    kl = (entropy - cross).masked_fill(~real, 0.0)
    return kl.sum() / logits.size(0)


def ctc_loss(log_probs: Tensor, lengths: Tensor, targets: Tensor) -> Tensor:
    """CTC (blank 0, zero_infinity) summed over the batch, divided by B. log_probs (B, T, V), targets (B, L) padded -1."""
    target_lengths = (targets != IGNORE_ID).sum(1)
    loss = F.ctc_loss(
        log_probs.transpose(0, 1),
        targets.clamp(min=0),
        lengths,
        target_lengths,
        blank=0,
        reduction="sum",
        zero_infinity=True,
    )
    return loss / log_probs.size(0)


def accuracy(logits: Tensor, targets: Tensor) -> Tensor:
    """Share of real target positions (not -1) whose argmax is the target; a 0-dim tensor."""
    real = targets != IGNORE_ID
    hits = (logits.argmax(-1) == targets) & real
    return hits.sum() / real.sum().clamp(min=1)


class LipReader(nn.Module):
    """Frontend, `proj_encoder`, Conformer encoder, optional adapter, Transformer decoder, CTC head.

    Submodule names are auto_avsr's state-dict prefixes; blank = 0 and sos = eos = odim - 1.
    """

    def __init__(self, cfg: ModelConfig, odim: int):
        super().__init__()
        if odim < 3:
            raise ValueError(f"odim must be at least 3 (blank, a token, sos/eos), got {odim}")
        if cfg.decoder.dim != cfg.encoder.dim:
            raise ValueError(f"decoder dim {cfg.decoder.dim} must equal encoder dim {cfg.encoder.dim}")
        self.cfg = cfg
        self.odim = odim
        self.blank = 0
        self.sos = self.eos = odim - 1
        self.ctc_weight = cfg.ctc_weight
        self.label_smoothing = cfg.label_smoothing
        enc, dec = cfg.encoder, cfg.decoder
        self.frontend = Frontend(cfg.frontend.widths)
        self.proj_encoder = nn.Linear(cfg.frontend.widths[-1], enc.dim)
        self.encoder = ConformerEncoder(enc.dim, enc.heads, enc.ffn_dim, enc.layers, enc.kernel_size, cfg.dropout)
        self.adapter = None if cfg.adapter == "none" else Adapter(enc.dim, cfg.adapter)
        self.decoder = TransformerDecoder(odim, dec.dim, dec.heads, dec.ffn_dim, dec.layers, cfg.dropout)
        self.ctc = CTCHead(enc.dim, odim, cfg.dropout)
        self.frozen_norms: list[nn.Module] = []
        self.load_report = None  # a pretrained.LoadReport once build_model loaded a checkpoint

    def encode_features(self, features: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """Frontend features (B, T, widths[-1]) -> encoder output (B, T, D) (after the adapter, if any)."""
        x, lengths = self.encoder(self.proj_encoder(features), lengths)
        if self.adapter is not None:
            x = self.adapter(x)
        return x, lengths

    def encode(self, video: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        """video (B, T, 1, H, W) normalised frames, lengths (B,) -> (encoder output (B, T, D), lengths)."""
        return self.encode_features(self.frontend(video, lengths), lengths)

    def ctc_log_probs(self, enc: Tensor) -> Tensor:
        """Encoder output (B, T, D) -> CTC log-probabilities (B, T, odim), float32."""
        return torch.log_softmax(self.ctc.ctc_lo(enc).float(), dim=-1)

    def losses(self, enc: Tensor, lengths: Tensor, targets: Tensor) -> LossOutput:
        """Joint loss from the encoder output (B, T, D) and targets (B, L) padded with -1."""
        ctc_logp = self.ctc(enc)  # (B, T, odim)
        loss_ctc = ctc_loss(ctc_logp, lengths, targets)
        ys_in, ys_out = decoder_io(targets, self.sos, self.eos)
        logits = self.decoder(ys_in, enc, lengths)  # (B, L + 1, odim)
        loss_att = label_smoothing_loss(logits, ys_out, self.label_smoothing)
        loss = self.ctc_weight * loss_ctc + (1 - self.ctc_weight) * loss_att
        return LossOutput(loss, loss_ctc, loss_att, accuracy(logits, ys_out), logits, ctc_logp, lengths)

    def forward(self, video: Tensor, lengths: Tensor, targets: Tensor) -> LossOutput:
        """video (B, T, 1, H, W), lengths (B,), targets (B, L) padded with -1 -> LossOutput."""
        enc, lengths = self.encode(video, lengths)
        return self.losses(enc, lengths, targets)

    def forward_from_features(self, features: Tensor, lengths: Tensor, targets: Tensor) -> LossOutput:
        """As `forward`, from cached frontend features (B, T, widths[-1]) (a frozen frontend)."""
        enc, lengths = self.encode_features(features, lengths)
        return self.losses(enc, lengths, targets)

    def train(self, mode: bool = True) -> LipReader:
        """As nn.Module.train, but BatchNorm layers of frozen parts stay in eval mode (running statistics fixed)."""
        super().train(mode)
        for norm in self.frozen_norms:
            norm.eval()
        return self


def frozen_modules(model: LipReader, freeze: FreezeConfig) -> list[tuple[str, nn.Module]]:
    """The (name, module) pairs that `freeze` names: the frontend; proj_encoder + the first N encoder blocks (all: -1)."""
    parts: list[tuple[str, nn.Module]] = []
    if freeze.frontend:
        parts.append(("frontend", model.frontend))
    n = freeze.encoder_layers
    blocks = len(model.encoder.encoders)
    if n != 0:
        parts.append(("proj_encoder", model.proj_encoder))
        count = blocks if n < 0 or n >= blocks else n
        parts += [(f"encoder.encoders.{i}", model.encoder.encoders[i]) for i in range(count)]
        if n < 0 or n >= blocks:
            parts.append(("encoder.after_norm", model.encoder.after_norm))
    return parts


def apply_freezing(model: LipReader, freeze: FreezeConfig) -> list[str]:
    """Freeze what `freeze` names (no gradients, BatchNorm in eval mode from now on); returns the frozen part names."""
    model.requires_grad_(True)  # the config is the whole truth: parts frozen before but not named now train again
    parts = frozen_modules(model, freeze)
    norms = []
    for _, module in parts:
        for p in module.parameters():
            p.requires_grad_(False)
        norms += [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.frozen_norms = norms
    model.train(model.training)
    return [name for name, _ in parts]


@dataclass
class ParameterCount:
    part: str
    total: int
    trainable: int


@dataclass
class ParameterTable:
    """Parameters per part (total and trainable); `str()` is the table printed at start."""

    rows: list[ParameterCount]

    @property
    def total(self) -> int:
        return sum(r.total for r in self.rows)

    @property
    def trainable(self) -> int:
        return sum(r.trainable for r in self.rows)

    def __str__(self) -> str:
        lines = [f"{'part':<14}{'parameters':>14}{'trainable':>14}"]
        rows = [*self.rows, ParameterCount("total", self.total, self.trainable)]
        lines += [f"{r.part:<14}{r.total:>14,}{r.trainable:>14,}" for r in rows]
        return "\n".join(lines)


def count_parameters(model: nn.Module) -> ParameterTable:
    """Parameters of each top-level part (frontend, proj_encoder, encoder, adapter, decoder, ctc)."""
    rows = []
    for name, child in model.named_children():
        params = list(child.parameters())
        if params:
            total = sum(p.numel() for p in params)
            rows.append(ParameterCount(name, total, sum(p.numel() for p in params if p.requires_grad)))
    return ParameterTable(rows)


def build_model(cfg: ModelConfig, odim: int) -> LipReader:
    """The model of `cfg` with an `odim`-way output: pretrained weights loaded (report in `model.load_report`), parts frozen."""
    from trainer.model.pretrained import load_pretrained

    model = LipReader(cfg, odim)
    model.load_report = (
        load_pretrained(model, cfg.pretrained.path, cfg.pretrained.parts) if cfg.pretrained.path else None
    )
    apply_freezing(model, cfg.freeze)
    return model
