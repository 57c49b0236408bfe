"""The learning-rate schedule against auto_avsr's WarmupCosineScheduler, and the GPU-support check."""

import math

import pytest
import torch

from trainer.device import gpu_arch_supported, select_precision
from trainer.errors import UserError
from trainer.steps import get_lr


@pytest.mark.parametrize(
    "step, expected",
    [(1, 1e-4), (5, 5e-4), (10, 1e-3), (55, 0.5e-3), (100, 0.0)],
)
def test_hand_values(step, expected):
    assert get_lr(step, 1e-3, warmup_steps=10, total_steps=100) == pytest.approx(expected, abs=1e-12)


def test_matches_auto_avsr_scheduler_stepped_by_torch():
    """auto_avsr computes the rate from torch's `_step_count`, which is 1 for the first optimizer step."""
    warmup, total, base = 7, 40, 2e-3
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([p], lr=base)

    def auto_avsr(count: int) -> float:  # their get_lr, in terms of the count torch passes
        if count < warmup:
            return count / warmup * base
        return 0.5 * base * (1 + math.cos(math.pi * (count - warmup) / (total - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda epoch: auto_avsr(epoch + 1) / base)
    for step in range(1, total + 1):
        assert get_lr(step, base, warmup, total) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9, abs=1e-15)
        opt.step()
        sched.step()


@pytest.mark.parametrize(
    "capability, arch_list, ok",
    [
        ((6, 0), ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], False),  # P100 vs CUDA 12.8 torch
        ((6, 0), ["sm_50", "sm_60", "sm_70", "sm_75", "sm_80", "sm_90"], True),  # P100 vs CUDA 12.6 torch
        ((7, 5), ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], True),  # T4
        ((8, 9), ["sm_80", "sm_86"], True),  # same major, lower minor binary runs
        ((9, 0), ["sm_80", "compute_80"], True),  # PTX JIT
        ((9, 0), ["sm_80", "sm_86"], False),
    ],
)
def test_gpu_arch_supported(capability, arch_list, ok):
    assert gpu_arch_supported(capability, arch_list) is ok


def test_precision_on_cpu():
    cpu = torch.device("cpu")
    assert select_precision("auto", cpu).dtype is None
    assert select_precision("bf16", cpu).dtype is torch.bfloat16
    with pytest.raises(UserError, match="fp16 needs a CUDA GPU"):
        select_precision("fp16", cpu)
