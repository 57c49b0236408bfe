"""Load pretrained weights into a LipReader, part by part, and report what was loaded, re-initialised and unused.

Formats: a plain auto_avsr state dict (`vsr_trlrs3vox2_base.pth`), LRW-style `{"model_state_dict": ...}` whose
`trunk.` / `frontend3D.` keys are the frontend, Lightning `{"state_dict": ...}` with a `model.` prefix, and lipsweep's
own checkpoints (`{"model": state_dict, "config": ..., "epoch": ...}`). Files are always read with
`torch.load(weights_only=True)`: a pickle that carries code is refused.
"""

from __future__ import annotations

import pickle
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from trainer.errors import CheckpointError

PARTS = ("frontend", "proj_encoder", "encoder", "adapter", "decoder", "ctc")
# keys whose first dimension is the output size (vocabulary): re-initialised when it differs
ODIM_KEYS = (
    "decoder.embed.0.weight",
    "decoder.output_layer.weight",
    "decoder.output_layer.bias",
    "ctc.ctc_lo.weight",
    "ctc.ctc_lo.bias",
)
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / torch.compile
ENCODER_BLOCK = re.compile(r"^encoder\.encoders\.(\d+)\.")


@dataclass
class LoadReport:
    """What `load_pretrained` did with every key: model keys loaded or re-initialised, checkpoint keys unused."""

    path: str
    format: str
    parts: list[str]
    loaded: list[str] = field(default_factory=list)
    reinitialised: dict[str, str] = field(default_factory=dict)  # model key -> reason
    unused: dict[str, str] = field(default_factory=dict)  # checkpoint key -> reason
    loaded_parameters: int = 0

    def table(self, keys: bool = False) -> str:
        """Counts grouped by status, part and reason; with `keys`, every key on its own line."""
        rows: Counter[tuple[str, str, str]] = Counter()
        for k in self.loaded:
            rows["loaded", part_of(k), ""] += 1
        for k, why in self.reinitialised.items():
            rows["re-initialised", part_of(k), why] += 1
        for k, why in self.unused.items():
            rows["unused", part_of(k), why] += 1
        lines = [
            f"checkpoint {self.path} ({self.format} format), parts {', '.join(self.parts)}: "
            f"{len(self.loaded)} keys loaded ({self.loaded_parameters:,} values)",
            f"  {'status':<16}{'part':<14}{'keys':>6}  reason",
        ]
        lines += [f"  {s:<16}{p:<14}{n:>6}  {why}".rstrip() for (s, p, why), n in rows.items()]
        if keys:
            lines += [f"  loaded          {k}" for k in self.loaded]
            lines += [f"  re-initialised  {k}: {why}" for k, why in self.reinitialised.items()]
            lines += [f"  unused          {k}: {why}" for k, why in self.unused.items()]
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.table()


def part_of(key: str) -> str:
    return key.split(".", 1)[0]


def read_checkpoint(path: str | Path) -> Any:
    """torch.load with weights_only=True; a CheckpointError naming the file for a missing, corrupted or code-carrying one."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}{_checkpoint_hint(path)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" in str(e).lower():
            raise CheckpointError(
                f"{path}: refused to load: the file holds Python objects beyond tensors and plain containers, and "
                "unpickling them could run code. If you trust it, load it yourself and re-save only its state dict "
                "(torch.save(model.state_dict(), 'clean.pth'))"
            ) from None
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupted or another format): {e}") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (corrupted or truncated?): {e}") from None


def _checkpoint_hint(path: Path) -> str:
    """'; did you mean RUN/checkpoints/best.pt?' where `path` names a run folder or a file beside its checkpoints/."""
    for candidate in (path / "checkpoints" / "best.pt", path.parent / "checkpoints" / path.name):
        if candidate.is_file():
            return f"; did you mean {candidate}? (a run keeps best.pt and last.pt in RUN/checkpoints/)"
    return ""


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    changed = True
    while changed:
        changed = False
        for p in prefixes:
            if key.startswith(p):
                key, changed = key[len(p) :], True
    return key


def unwrap(obj: Any, path: str | Path = "checkpoint") -> tuple[dict[str, Tensor], str]:
    """Find the state dict in a loaded checkpoint and name its keys as the LipReader does -> (state dict, format)."""
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{path}: expected a dict (a state dict or a checkpoint holding one), got {type(obj).__name__}"
        )
    if isinstance(obj.get("model"), dict):
        state, fmt, prefixes = obj["model"], "lipsweep", WRAPPER_PREFIXES
    elif isinstance(obj.get("state_dict"), dict):
        state, fmt, prefixes = obj["state_dict"], "lightning", ("model.", *WRAPPER_PREFIXES)
    elif isinstance(obj.get("model_state_dict"), dict):
        state, fmt, prefixes = obj["model_state_dict"], "lrw", WRAPPER_PREFIXES
    else:
        state, fmt, prefixes = obj, "auto_avsr", WRAPPER_PREFIXES
    out: dict[str, Tensor] = {}
    for key, value in state.items():
        if not isinstance(value, Tensor):
            top = ", ".join(map(str, list(obj)[:8]))
            raise CheckpointError(
                f"{path}: '{key}' is a {type(value).__name__}, not a tensor: no state dict found "
                f"(top-level keys: {top}); expected a state dict, {{'model': ...}}, {{'state_dict': ...}} or {{'model_state_dict': ...}}"
            )
        name = _strip(str(key), prefixes)
        if fmt == "lrw" and name.startswith(("trunk.", "frontend3D.")):
            name = "frontend." + name
        out[name] = value
    if not out:
        raise CheckpointError(f"{path}: the state dict is empty")
    return out, fmt


def describe(state: dict[str, Tensor]) -> dict[str, Any]:
    """The architecture a state dict implies, in config keys (what can be read off the shapes)."""
    arch: dict[str, Any] = {}
    widths = [state.get(f"frontend.trunk.layer{i}.0.conv1.weight") for i in range(1, 5)]
    if all(w is not None for w in widths):
        arch["model.frontend.widths"] = [int(w.shape[0]) for w in widths]
    if "proj_encoder.weight" in state:
        arch["model.encoder.dim"] = int(state["proj_encoder.weight"].shape[0])
    blocks = {int(m.group(1)) for k in state if (m := ENCODER_BLOCK.match(k))}
    if blocks:
        arch["model.encoder.layers"] = max(blocks) + 1
    if "encoder.encoders.0.self_attn.pos_bias_u" in state:
        arch["model.encoder.heads"] = int(state["encoder.encoders.0.self_attn.pos_bias_u"].shape[0])
    if "encoder.encoders.0.feed_forward.w_1.weight" in state:
        arch["model.encoder.ffn_dim"] = int(state["encoder.encoders.0.feed_forward.w_1.weight"].shape[0])
    if "encoder.encoders.0.conv_module.depthwise_conv.weight" in state:
        arch["model.encoder.kernel_size"] = int(state["encoder.encoders.0.conv_module.depthwise_conv.weight"].shape[-1])
    dec_blocks = {int(k.split(".")[2]) for k in state if k.startswith("decoder.decoders.")}
    if dec_blocks:
        arch["model.decoder.layers"] = max(dec_blocks) + 1
    if "decoder.decoders.0.feed_forward.w_1.weight" in state:
        arch["model.decoder.ffn_dim"] = int(state["decoder.decoders.0.feed_forward.w_1.weight"].shape[0])
    for key in ("decoder.output_layer.weight", "ctc.ctc_lo.weight"):
        if key in state:
            arch["odim"] = int(state[key].shape[0])
            break
    return arch


def load_pretrained(model: nn.Module, path: str | Path, parts: list[str] | tuple[str, ...]) -> LoadReport:
    """Copy the weights of `parts` from the checkpoint at `path` into `model` (a LipReader); the rest keep their init.

    Fewer encoder blocks in the model: the first ones are loaded. A different output size: the decoder embedding,
    output layer and CTC head are re-initialised. Any other shape mismatch is a CheckpointError naming the key.
    """
    state, fmt = unwrap(read_checkpoint(path), path)
    return load_state(model, state, parts, source=str(path), fmt=fmt)


def _why_unused(key: str, part: str, fmt: str, model_blocks: int, ckpt_blocks: int) -> str:
    """Why a checkpoint key that the model does not have is left out."""
    m = ENCODER_BLOCK.match(key)
    if m and int(m.group(1)) >= model_blocks:
        dropped = f"s {model_blocks}..{ckpt_blocks - 1}" if ckpt_blocks - 1 > model_blocks else f" {model_blocks}"
        return f"encoder block{dropped} dropped (the model keeps the first {model_blocks})"
    if re.search(r"\.relu\d?\.|frontend3D\.2\.", key):
        return "PReLU weights: this model uses SiLU (swish) activations, as auto_avsr"
    if fmt == "lrw" and part != "frontend":
        return "LRW classifier part: only the frontend (trunk, frontend3D) is used"
    return "no such key in this model"


def load_state(
    model: nn.Module, state: dict[str, Tensor], parts: list[str] | tuple[str, ...], source: str, fmt: str
) -> LoadReport:
    """`load_pretrained` on an already read and unwrapped state dict (`source` names it in messages)."""
    for p in parts:
        if p not in PARTS:
            raise ValueError(f"unknown part {p!r}; parts are {', '.join(PARTS)}")
    path = source
    report = LoadReport(source, fmt, list(parts))
    target = model.state_dict()
    model_blocks = len(model.encoder.encoders)
    arch = describe(state)
    ckpt_blocks = arch.get("model.encoder.layers", 0)
    hint = ", ".join(f"{k}={v}" for k, v in arch.items())

    for key in state:
        part = part_of(key)
        if key not in target:
            report.unused[key] = _why_unused(key, part, fmt, model_blocks, ckpt_blocks)
        elif part not in parts:
            report.unused[key] = f"part '{part}' not in model.pretrained.parts"

    with torch.no_grad():
        for key, param in target.items():
            part = part_of(key)
            if part not in parts:
                report.reinitialised[key] = f"part '{part}' not in model.pretrained.parts"
                continue
            if key not in state:
                m = ENCODER_BLOCK.match(key)
                if m and ckpt_blocks and int(m.group(1)) >= ckpt_blocks:
                    report.reinitialised[key] = f"the checkpoint has only {ckpt_blocks} encoder blocks"
                else:
                    report.reinitialised[key] = "not in the checkpoint"
                continue
            value = state[key]
            if value.shape != param.shape:
                if key in ODIM_KEYS and value.shape[1:] == param.shape[1:]:
                    report.reinitialised[key] = (
                        f"output size differs: checkpoint {value.shape[0]}, model {param.shape[0]}"
                    )
                    report.unused[key] = report.reinitialised[key]
                    continue
                raise CheckpointError(
                    f"{path}: '{key}' has shape {list(value.shape)} in the checkpoint but {list(param.shape)} in the model; "
                    f"the config does not describe this checkpoint's architecture (it looks like: {hint})"
                )
            param.copy_(value)
            report.loaded.append(key)
            report.loaded_parameters += value.numel()
    if not report.loaded:
        raise CheckpointError(
            f"{path}: nothing loaded: no key of the parts {', '.join(parts)} is in this {fmt}-format checkpoint "
            f"(its keys look like: {', '.join(list(state)[:3])}); is it a lip-reading checkpoint of this architecture?"
        )
    return report
