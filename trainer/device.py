"""Device choice, the torch-has-kernels-for-this-GPU check, and mixed-precision settings."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from trainer.errors import UserError


def select_device(name: str = "auto") -> torch.device:
    """`auto`: the first CUDA GPU when there is one, else the CPU; checks the GPU is usable first."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(name)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"train.device is {name!r} but torch sees no CUDA GPU (torch {torch.__version__})")
        check_gpu_supported(device)
    return device


def check_gpu_supported(device: torch.device) -> None:
    """Fail before any work when this torch has no kernels for the GPU (Kaggle's P100 with a CUDA 12.8 torch)."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    arch = f"sm_{major}{minor}"
    built = torch.cuda.get_arch_list()  # e.g. ['sm_75', 'sm_80', ..., 'compute_90']
    if not gpu_arch_supported((major, minor), built):
        gpu = torch.cuda.get_device_name(index)
        raise UserError(
            f"this torch ({torch.__version__}, CUDA {torch.version.cuda}) has no kernels for the {gpu} ({arch}); "
            f"it was built for {', '.join(built) or 'no GPU architecture'}.\n"
            "Two ways out: switch the notebook to a T4 (or L4) GPU, or install a torch built for CUDA 12.6, "
            "which still supports this GPU, e.g. `pip install torch --index-url https://download.pytorch.org/whl/cu126`. "
            "lipsweep never changes your torch itself."
        )


def gpu_arch_supported(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """True when a binary for this capability is in the list (same major, lower or equal minor) or PTX can JIT it."""
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        if not digits.isdigit():
            continue
        a_major, a_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and a_major == major and a_minor <= minor:
            return True
        if kind == "compute" and (a_major, a_minor) <= (major, minor):
            return True
    return False


@dataclass(frozen=True)
class Precision:
    """What autocast and the grad scaler do for `train.precision` on a device."""

    name: str  # fp32, fp16 or bf16
    dtype: torch.dtype | None  # autocast dtype; None: no autocast
    scaler: bool  # fp16 needs a grad scaler


def select_precision(precision: str, device: torch.device) -> Precision:
    """auto: fp32 on CPU; bf16 on GPUs that have it (Ampere+); fp16 with a grad scaler on P100/T4."""
    if precision == "auto":
        if device.type != "cuda":
            precision = "fp32"
        else:
            precision = "bf16" if torch.cuda.get_device_capability(device)[0] >= 8 else "fp16"
    if precision == "fp32":
        return Precision("fp32", None, False)
    if precision == "bf16":
        if device.type == "cuda" and torch.cuda.get_device_capability(device)[0] < 8:
            raise UserError(
                f"train.precision=bf16 needs an Ampere or newer GPU; {torch.cuda.get_device_name(device)} has none: use fp16"
            )
        return Precision("bf16", torch.bfloat16, False)
    if device.type != "cuda":
        raise UserError("train.precision=fp16 needs a CUDA GPU; use fp32 or bf16 on the CPU")
    return Precision("fp16", torch.float16, True)
