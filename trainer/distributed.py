"""Data-parallel training under torchrun: the process group, shares of each batch, reductions and gathering.

`torchrun --nproc_per_node=N -m launch train ...` starts N copies of the trainer; each reads RANK, WORLD_SIZE
and LOCAL_RANK from the environment (`init_from_env`). In a single process every function here is the identity
or does nothing, so the training loop calls them unconditionally.

How one optimizer step is shared: every rank builds the same batch plan (a pure function of the seed), collates
and augments the whole batch with the same generator, and keeps its rows of it (`batch_share`). Its loss is
weighted by its share of the batch's clips and DDP averages the gradients, so the update is the single-process
update on the whole batch: the global batch, the schedule (counted in optimizer steps) and the loss curve do not
depend on the number of ranks. BatchNorm layers that train are synchronised across ranks (`nn.SyncBatchNorm` on
GPUs, `SyncBatchNorm` below on the CPU), so they normalise with the statistics of the whole batch. Validation
clips are split between the ranks (`shard`) and their rows gathered (`gather_rows`).
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import Tensor, nn

from trainer.errors import UserError

T = TypeVar("T")


# --------------------------------------------------------------------------- the process group


def init_from_env(device: str = "auto") -> bool:
    """Join torchrun's process group when WORLD_SIZE > 1 (NCCL for GPUs, gloo on the CPU); True when distributed.

    `device` is `train.device`: with a GPU each rank takes the GPU of its LOCAL_RANK.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return False
    if not dist.is_available():
        raise UserError(f"WORLD_SIZE={world} but this torch ({torch.__version__}) has no torch.distributed")
    use_cuda = device != "cpu" and torch.cuda.is_available()
    device_id = None
    if use_cuda:
        local, gpus = local_rank(), torch.cuda.device_count()
        if local >= gpus:
            per_node = os.environ.get("LOCAL_WORLD_SIZE", "?")
            raise UserError(
                f"torchrun started {per_node} processes on this machine but torch sees {gpus} GPU(s) "
                f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
                f"use --nproc_per_node={gpus}"
            )
        torch.cuda.set_device(local)
        device_id = torch.device("cuda", local)
    extra = {"device_id": device_id} if device_id is not None and _takes_device_id() else {}  # torch >= 2.3
    dist.init_process_group("nccl" if use_cuda else "gloo", **extra)
    atexit.register(close)
    return True


def _takes_device_id() -> bool:
    import inspect

    return "device_id" in inspect.signature(dist.init_process_group).parameters


def close() -> None:
    """Leave the process group (registered at exit by `init_from_env`)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    """Rank 0: the one that writes the run folder, the checkpoints and the W&B run."""
    return rank() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def local_device(device: torch.device) -> torch.device:
    """This rank's GPU (the one of its LOCAL_RANK) when distributed on GPUs; `device` otherwise."""
    if device.type == "cuda" and world_size() > 1:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def _comm_device() -> torch.device:
    """Where collective tensors live: the rank's GPU under NCCL, the CPU under gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


# --------------------------------------------------------------------------- collectives (identity in one process)


def broadcast_object(obj: T) -> T:
    """Rank 0's `obj` on every rank (run folder name, resolved config)."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order, on every rank."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def any_rank(flag: bool) -> bool:
    """True on every rank when `flag` is true on any (a signal or a time budget seen by one rank stops all together)."""
    if world_size() == 1:
        return bool(flag)
    t = torch.tensor([int(bool(flag))], device=_comm_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def all_reduce_sum(x: Tensor) -> Tensor:
    """The sum of `x` over ranks (a new tensor on x's device); `x` itself in a single process."""
    if world_size() == 1:
        return x
    y = x.detach().to(_comm_device(), copy=True)
    dist.all_reduce(y)
    return y.to(x.device)


def sum_over_ranks(values: dict[str, Any]) -> dict[str, Any]:
    """Named numbers (0-d tensors, ints, floats) summed over ranks in one all-reduce, each keeping its type."""
    if world_size() == 1:
        return values
    stacked = torch.tensor([float(v) for v in values.values()], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(stacked)
    out: dict[str, Any] = {}
    for (key, old), total in zip(values.items(), stacked.tolist(), strict=True):
        if isinstance(old, Tensor):
            out[key] = torch.tensor(total, dtype=old.dtype, device=old.device)
        elif isinstance(old, int):
            out[key] = round(total)
        else:
            out[key] = total
    return out


def main_first(fn: Callable[[], T]) -> T:
    """`fn()` on rank 0, then on the others (rank 0 builds the data cache, the others reuse it).

    When it fails on rank 0 every rank raises the same error, instead of waiting for rank 0 forever.
    """
    if world_size() == 1:
        return fn()
    result: Any = None
    failure: BaseException | None = None
    if is_main():
        try:
            result = fn()
        except Exception as e:
            failure = e
    sent = (
        None if failure is None else (type(failure) if isinstance(failure, UserError) else RuntimeError, str(failure))
    )
    received = broadcast_object(sent)
    if failure is not None:
        raise failure
    if received is not None:
        cls, message = received
        raise cls(message)
    return result if is_main() else fn()


# --------------------------------------------------------------------------- sharing batches and validation


def shard(indices: Sequence[int]) -> list[int]:
    """This rank's share of `indices` (every world_size-th, from its rank); all of them in a single process."""
    return list(indices)[rank() :: world_size()]


def batch_share(n: int) -> tuple[slice | list[int], int, float]:
    """This rank's rows of a batch of `n` clips, how many real clips they are, and the weight of its loss.

    The losses are sums over the rank's clips divided by their number; weighting each by (its clips x world
    size / n) makes DDP's average of the gradients the gradient of the whole batch's loss. A rank left
    without a clip (n below the world size) runs one stand-in clip with weight 0 to take part in the all-reduce
    (its frames do enter the synchronised BatchNorm statistics of that step).
    """
    world, r = world_size(), rank()
    if world == 1:
        return slice(None), n, 1.0
    rows = list(range(r, n, world))
    if not rows:
        return [0], 0, 0.0
    return rows, len(rows), len(rows) * world / n


def gather_rows(
    rows: list[dict[str, Any]], sums: dict[str, float], clips: int, order: Sequence[str]
) -> tuple[list[dict[str, Any]], dict[str, float], int]:
    """Every rank's validation rows (sorted as the clip ids in `order`), loss sums and clip count, on every rank."""
    if world_size() == 1:
        return rows, sums, clips
    parts = gather_objects((rows, sums, clips))
    position = {clip_id: i for i, clip_id in enumerate(order)}
    merged = sorted((row for part in parts for row in part[0]), key=lambda row: position[row["id"]])
    totals = {key: sum(part[1][key] for part in parts) for key in sums}
    return merged, totals, sum(part[2] for part in parts)


# --------------------------------------------------------------------------- the model


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; its gradient is the sum over ranks of the output gradients (every rank used the sum)."""

    @staticmethod
    def forward(ctx: Any, x: Tensor) -> Tensor:
        y = x.clone()
        dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics span the whole batch across ranks, for the CPU (gloo).

    GPUs use `nn.SyncBatchNorm` (CUDA only). Two-pass mean and variance through a differentiable all-reduce,
    so every rank's inputs receive the gradient of every rank's loss, as in `nn.SyncBatchNorm`.
    """

    def _check_input_dim(self, x: Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input (got {x.dim()}-D)")

    def forward(self, x: Tensor) -> Tensor:
        """x (B, C, ...) -> (B, C, ...), normalised per channel over batch and positions of all ranks."""
        if not self.training or world_size() == 1:
            return super().forward(x)
        all_reduce = _AllReduceSum.apply
        dims = [0, *range(2, x.dim())]
        shape = [1, -1] + [1] * (x.dim() - 2)
        count = all_reduce(x.new_tensor(float(x.numel() // x.size(1))))
        mean = all_reduce(x.sum(dims)) / count  # (C,)
        centred = x - mean.view(shape)
        var = all_reduce((centred * centred).sum(dims)) / count  # (C,) biased, as BatchNorm normalises
        y = centred * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / (count - 1).clamp(min=1), momentum)
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> int:
    """Replace the BatchNorm layers that train by synchronised ones, in place (same parameters and buffers).

    Frozen BatchNorm layers (`model.frozen_norms`: eval mode, fixed statistics) are left as they are. State-dict
    keys do not change, so checkpoints load with any number of ranks. Returns how many layers were replaced.
    """
    frozen = {id(m) for m in getattr(model, "frozen_norms", [])}
    cls = nn.SyncBatchNorm if device.type == "cuda" else SyncBatchNorm
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if (
                isinstance(child, nn.modules.batchnorm._BatchNorm)
                and not isinstance(child, (nn.SyncBatchNorm, SyncBatchNorm))
                and id(child) not in frozen
            ):
                new = cls(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats)
                if child.affine:
                    new.weight, new.bias = child.weight, child.bias
                if child.track_running_stats:
                    new.running_mean, new.running_var = child.running_mean, child.running_var
                    new.num_batches_tracked = child.num_batches_tracked
                new.train(child.training)
                setattr(parent, name, new)
                replaced += 1
    return replaced


def wrap_model(model: nn.Module, device: torch.device) -> nn.Module:
    """DDP around `model` (its training BatchNorm layers synchronised); `model` itself in a single process.

    Keep using `model` for everything but the training forward: its state dict has no `module.` prefix.
    """
    if world_size() == 1:
        return model
    sync_batchnorm(model, device)
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def grad_sync(net: nn.Module, sync: bool) -> AbstractContextManager[Any]:
    """DDP's `no_sync()` for the micro-batches before the last of an optimizer step: gradients are all-reduced once a step."""
    if sync or not isinstance(net, nn.parallel.DistributedDataParallel):
        return nullcontext()
    return net.no_sync()


def seed_rank(seed: int) -> None:
    """Give each rank its own torch RNG stream (dropout) when distributed; batches and augmentation stay shared."""
    if world_size() > 1:
        torch.manual_seed(seed + 1_000_003 * rank())


class RankLog:
    """Stands in for the RunLog on ranks other than 0: rank 0 alone writes the run folder and the W&B run."""

    wandb = None
    wandb_id = None
    wandb_url = None

    def __init__(self, run_dir: Path):
        self.dir = Path(run_dir)
        self.sweep_params: dict[str, Any] = {}

    def __getattr__(self, name: str) -> Callable[..., None]:
        if name.startswith("_"):
            raise AttributeError(name)
        return _nothing


def _nothing(*args: Any, **kwargs: Any) -> None:
    return None
