"""Data-parallel training: shares of a batch, synchronised BatchNorm, and torchrun on 2 CPU processes (gloo)
giving the loss curve of one process with the same global batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from trainer import distributed
from trainer.config import save_config
from trainer.tracking import read_metrics

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------- one process: everything is the identity


def test_single_process_helpers_are_the_identity():
    assert distributed.world_size() == 1 and distributed.rank() == 0 and distributed.is_main()
    assert distributed.shard([5, 3, 9]) == [5, 3, 9]
    rows, n, weight = distributed.batch_share(7)
    assert rows == slice(None) and n == 7 and weight == 1.0
    sums = {"loss": torch.tensor(2.5), "clips": 3}
    assert distributed.sum_over_ranks(sums) is sums
    assert distributed.broadcast_object("x") == "x" and distributed.any_rank(False) is False
    model = nn.Sequential(nn.BatchNorm1d(3))
    assert distributed.wrap_model(model, torch.device("cpu")) is model and isinstance(model[0], nn.BatchNorm1d)


@pytest.mark.parametrize("world, n", [(2, 3), (2, 4), (3, 7), (4, 9)])
def test_batch_shares_partition_the_batch_and_weight_back_to_its_mean(monkeypatch, world, n):
    """DDP averages the ranks' weighted losses: (1/W) sum_r weight_r * mean_r must be the batch mean."""
    values = torch.arange(1.0, n + 1, dtype=torch.float64) ** 2  # one loss a clip
    seen, averaged = [], 0.0
    for r in range(world):
        monkeypatch.setattr(distributed, "world_size", lambda world=world: world)
        monkeypatch.setattr(distributed, "rank", lambda r=r: r)
        rows, clips, weight = distributed.batch_share(n)
        assert clips == len(rows)
        seen += rows
        averaged += weight * values[rows].mean().item() / world
    assert sorted(seen) == list(range(n))
    assert averaged == pytest.approx(values.mean().item(), rel=1e-12)


def test_a_rank_without_a_clip_gets_a_stand_in_of_weight_zero(monkeypatch):
    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    monkeypatch.setattr(distributed, "rank", lambda: 3)
    assert distributed.batch_share(2) == ([0], 0, 0.0)
    assert distributed.shard(list(range(10))) == [3, 7]


def test_rank_log_writes_nothing(tmp_path):
    log = distributed.RankLog(tmp_path / "run")
    log.write_config(object())
    log.log_epoch({"epoch": 1})
    log.write_table("a.csv", ["x"], [[1]], wandb_key="t")
    log.finish("finished")
    assert not (tmp_path / "run").exists() and log.wandb_id is None and log.sweep_params == {}


# --------------------------------------------------------------------------- 2 gloo processes: synchronised BatchNorm


def _sync_bn_worker(rank: int, port: int, x: torch.Tensor, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE="2")
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(3, 4, 1), nn.BatchNorm1d(4)).double()
    assert distributed.sync_batchnorm(model, torch.device("cpu")) == 1
    part = x[rank::2].clone().requires_grad_(True)  # (B/2, 3, T)
    y = model(part)
    (y.square() * torch.arange(1.0, 5.0)[:, None]).sum().backward()
    torch.save(
        {
            "y": y.detach(),
            "grad_x": part.grad,
            "grad_w": model[0].weight.grad,
            "running": model[1].running_var.clone(),
        },
        Path(out_dir) / f"rank{rank}.pt",
    )
    torch.distributed.destroy_process_group()


def test_sync_batchnorm_on_two_cpu_ranks_equals_batchnorm_on_the_whole_batch(tmp_path):
    x = torch.randn(6, 3, 5, dtype=torch.float64) * 3 + 1  # float64: compare the algebra, not rounding
    torch.multiprocessing.spawn(_sync_bn_worker, args=(free_port(), x, str(tmp_path)), nprocs=2)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(3, 4, 1), nn.BatchNorm1d(4)).double()
    whole = x.clone().requires_grad_(True)
    y = model(whole)
    (y.square() * torch.arange(1.0, 5.0)[:, None]).sum().backward()
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    for r, got in enumerate(ranks):
        torch.testing.assert_close(got["y"], y.detach()[r::2], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got["grad_x"], whole.grad[r::2], rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(got["running"], model[1].running_var, rtol=1e-10, atol=1e-10)
    # each rank's weight gradient is its part; DDP's average times 2 ranks is the whole batch's gradient
    torch.testing.assert_close(ranks[0]["grad_w"] + ranks[1]["grad_w"], model[0].weight.grad, rtol=1e-8, atol=1e-8)


# --------------------------------------------------------------------------- torchrun: 2 processes train one run


@pytest.mark.slow
def test_two_gloo_ranks_train_the_loss_curve_of_one_process(tiny_config, tmp_path):
    from trainer import train as T
    from trainer.model import build_model
    from trainer.text import Tokenizer

    cfg = tiny_config
    # 9 training clips in batches of 3 (ranks take 2 + 1 clips: uneven shares), 2 batches a step (no_sync, then
    # a short last step), no dropout (its masks are per rank); BatchNorm trains, so it must be synchronised.
    cfg.train.batch_size, cfg.train.accumulate, cfg.model.dropout, cfg.train.max_epochs = 3, 2, 0.0, 2
    save_config(cfg, tmp_path / "tiny.yaml")
    single = T.train(cfg, name="single", verbose=False)

    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(free_port()),
               "-m", "launch", "train", "--config", str(tmp_path / "tiny.yaml"), "--name", "ddp"]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ddp = Path(cfg.train.run_dir) / "ddp"

    a, b = read_metrics(single.run_dir), read_metrics(ddp)
    assert [r["epoch"] for r in b] == [1, 2]  # rank 0 alone wrote the run folder: one line an epoch
    for one, two in zip(a, b, strict=True):
        for key, value in one.items():
            if key.startswith(("train/loss", "grad_norm/")) or key == "train/lr":
                assert two[key] == pytest.approx(value, rel=1e-5), key
            elif key.startswith("val/") or key == "train/cer":  # decoded by both ranks, gathered
                assert two[key] == pytest.approx(value, rel=1e-4), key
    summary = json.loads((ddp / "summary.json").read_text())
    assert (
        summary["state"] == "finished"
        and summary["step"] == json.loads((single.run_dir / "summary.json").read_text())["step"]
    )
    assert done.stdout.count("epoch 2/2") == 1  # one rank prints

    # the DDP checkpoint is the plain model's state dict: it loads in one process
    state = torch.load(ddp / "checkpoints" / "last.pt", weights_only=True)["model"]
    assert set(state) == set(torch.load(single.run_dir / "checkpoints" / "last.pt", weights_only=True)["model"])
    build_model(cfg.model, Tokenizer.from_config(cfg.data).vocab_size).load_state_dict(state)
