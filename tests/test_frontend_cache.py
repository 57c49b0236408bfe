"""The frozen-frontend feature cache: same function as the live path, its key, one build per sweep, refusals, bad files."""

from __future__ import annotations

import copy
import json
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from analysis.diagnose import frontend_line
from trainer import frontend_cache as FC
from trainer import train as T
from trainer.augment import augment_batch
from trainer.config import apply_overrides, save_config
from trainer.data import load_dataset
from trainer.errors import ConfigError
from trainer.model import build_model
from trainer.text import Tokenizer
from trainer.tracking import read_metrics, read_summary

SAME_FUNCTION = [  # K = 1, augmentation and dropout off: the cache must give the live path's function
    "model.freeze.frontend=true",
    "train.frontend_cache_views=1",
    "augment.crop_size=24",
    "augment.flip_prob=0.0",
    "augment.time_mask_window=0",
    "model.dropout=0.0",
]


def setup(cfg, seed: int = 0):
    tokenizer = Tokenizer.from_config(cfg.data)
    data = load_dataset(cfg.data, tokenizer, log=lambda *a: None)
    torch.manual_seed(seed)
    model = build_model(cfg.model, tokenizer.vocab_size)
    return data, model


def quiet(*args) -> None:
    pass


@pytest.fixture
def frozen(tiny_config):
    return apply_overrides(tiny_config, ["model.freeze.frontend=true"])


# --------------------------------------------------------------------------- the same function as the live path


def test_k1_without_augmentation_gives_the_live_losses_and_gradients(tiny_config):
    cfg = apply_overrides(tiny_config, SAME_FUNCTION)
    data, model = setup(cfg)
    cache = FC.load_or_build(model, data, cfg, torch.device("cpu"), log=quiet, progress=False)
    model.train()
    idx = data.split(cfg.data)["train"][:4]
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]

    batch = data.collate(idx)
    x = augment_batch(batch.video, batch.lengths, cfg.augment, train=True, generator=torch.Generator().manual_seed(1))
    live = model(x, batch.lengths, batch.targets)
    live.loss.backward()
    live_grads = {n: p.grad.clone() for n, p in trainable}
    model.zero_grad(set_to_none=True)

    views = cache.train_views(len(idx), cfg.train.seed, epoch=1, batch=0)
    assert views.tolist() == [1] * len(idx)
    feats, lengths = cache.gather(idx, views)
    torch.testing.assert_close(feats, model.frontend(x, batch.lengths), rtol=2e-3, atol=2e-3)  # fp16 storage
    cached = model.forward_from_features(feats, lengths, data.padded_targets(idx)[0])
    cached.loss.backward()
    for k in ("loss", "loss_ctc", "loss_att"):
        torch.testing.assert_close(getattr(cached, k), getattr(live, k), rtol=1e-3, atol=1e-4)
    for n, p in trainable:
        torch.testing.assert_close(p.grad, live_grads[n], rtol=1e-2, atol=1e-4, msg=n)


def test_k1_training_run_matches_the_live_run(tiny_config):
    """The loop and `evaluate` with the cache give the live run's curves (float tolerance)."""
    cfg = apply_overrides(tiny_config, [*SAME_FUNCTION, "train.train_cer_every=0"])
    off = copy.deepcopy(cfg)
    off.train.frontend_cache = "off"
    cfg.train.frontend_cache = "on"
    cached = T.train(cfg, name="cached", verbose=False)
    live = T.train(off, name="live", verbose=False)
    summary, live_summary = read_summary(cached.run_dir), read_summary(live.run_dir)
    assert summary["frontend_cache/used"] is True and summary["frontend_cache/views"] == 1
    assert live_summary["frontend_cache/used"] is False and live_summary["frontend_cache/views"] == 0
    # the diagnose report states it
    line = frontend_line(summary, cfg)
    assert "ran from the feature cache with 1 training view and" in line and "built by this run" in line
    assert "ran live" in frontend_line(live_summary, off) and "train.frontend_cache=off" in frontend_line(
        live_summary, off
    )
    assert "did not record" in frontend_line({}, None)
    a, b = read_metrics(cached.run_dir), read_metrics(live.run_dir)
    for key in ("train/loss", "train/loss_ctc", "train/loss_att", "val/loss"):
        assert [r[key] for r in a] == pytest.approx([r[key] for r in b], rel=2e-3), key


# --------------------------------------------------------------------------- views and time masking


def test_views_are_seeded_crops_and_flips_and_view_0_is_the_centre_crop(frozen):
    frozen.train.frontend_cache_views = 3
    data, model = setup(frozen)
    cache = FC.load_or_build(model, data, frozen, torch.device("cpu"), log=quiet, progress=False)
    idx = [0, 1, 2]
    batch = data.collate(idx)
    centre = model.frontend(augment_batch(batch.video, batch.lengths, frozen.augment, train=False), batch.lengths)
    torch.testing.assert_close(cache.gather(idx, 0)[0], centre, rtol=2e-3, atol=2e-3)
    v1, v2 = cache.gather(idx, 1)[0], cache.gather(idx, 2)[0]
    assert not torch.allclose(v1, v2)  # different random crops
    assert torch.equal(
        cache.train_views(5, seed=1, epoch=2, batch=3), cache.train_views(5, seed=1, epoch=2, batch=3)
    )  # a resumed epoch draws the same views
    assert set(torch.cat([cache.train_views(50, 1, e, 0) for e in range(4)]).tolist()) == {1, 2, 3}


def test_time_mask_on_features_sets_the_clip_mean_feature():
    feats = torch.randn(2, 10, 4)
    lengths = torch.tensor([10, 6])
    feats[1, 6:] = 0.0
    out = FC.mask_features(feats, lengths, window=4, stride=5, generator=torch.Generator().manual_seed(0))
    changed = (out != feats).any(-1)  # (B, T)
    assert changed.any()
    assert not changed[1, 6:].any()  # padding is never masked
    for b, n in enumerate(lengths.tolist()):
        mean = feats[b, :n].mean(0)
        for t in torch.nonzero(changed[b]).flatten().tolist():
            torch.testing.assert_close(out[b, t], mean)
    assert torch.equal(FC.mask_features(feats, lengths, 0, 5, None), feats)


# --------------------------------------------------------------------------- the key


def test_key_changes_with_what_the_features_depend_on_and_only_that(frozen, tmp_path):
    data, model = setup(frozen)
    key = FC.key_for(model, data, frozen)

    def key_with(overrides: list[str]) -> str:
        cfg = apply_overrides(copy.deepcopy(frozen), overrides)
        d, m = setup(cfg)
        return FC.key_for(m, d, cfg)

    # only later layers, the optimizer or decoding: the same features
    for same in (["optim.lr=0.01"], ["model.ctc_weight=0.7"], ["decode.beam_size=7", "decode.ctc_weight=0.4"],
                 ["model.decoder.layers=2"], ["augment.time_mask_window=5"], ["train.max_epochs=9"]):  # fmt: skip
        assert key_with(same) == key, same
    # crop, flip, normalisation, views, seed: other features
    for other in (["augment.crop_size=12"], ["augment.flip_prob=0.2"], ["augment.mean=0.5"], ["augment.std=0.2"],
                  ["train.frontend_cache_views=2"], ["train.seed=3"]):  # fmt: skip
        assert key_with(other) != key, other
    # other frontend weights
    with torch.no_grad():
        model.frontend.frontend3D[0].weight[0, 0, 0, 0, 0] += 1e-3
    assert FC.key_for(model, data, frozen) != key
    # other data: one clip's frames change
    clip = sorted(Path(frozen.data.root).glob("*.npy"))[0]
    np.save(clip, 255 - np.load(clip))
    assert key_with([]) != key


# --------------------------------------------------------------------------- built once


def two_trial_sweep(frozen, tmp_path: Path, name: str) -> Path:
    """A grid sweep YAML of two trials (two learning rates) over the frozen-frontend config."""
    base = tmp_path / "frozen.yaml"
    save_config(frozen, base)
    sweep_yaml = tmp_path / f"{name}.yaml"
    sweep_yaml.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "method": "grid",
                "metric": {"name": "val/cer", "goal": "minimize"},
                "parameters": {"optim.lr": {"values": [1e-3, 3e-3]}},
                "command": ["${env}", "${interpreter}", "-m", "launch", "train", "--config", str(base), "${args}"],
            }
        )
    )
    return sweep_yaml


def test_two_trials_of_a_local_sweep_build_the_cache_once(frozen, tmp_path):
    from launch.engine.local import run_local_sweep
    from launch.engine.plan import prepare
    from launch.engine.spec import load_sweep

    sweep_yaml = two_trial_sweep(frozen, tmp_path, "two")
    before = FC.BUILDS
    sweep = prepare(load_sweep(sweep_yaml), overrides=["train.max_epochs=1"], heartbeat=0, verbose=False)
    study = run_local_sweep(sweep, workers=1)
    assert FC.BUILDS - before == 1
    summaries = [read_summary(Path(t.user_attrs["run_dir"])) for t in sorted(study.trials, key=lambda t: t.number)]
    assert [s["state"] for s in summaries] == ["finished", "finished"]
    assert [s["frontend_cache/used"] for s in summaries] == [True, True]
    assert [s["frontend_cache/built"] for s in summaries] == [True, False]  # the second trial read it


def test_concurrent_workers_build_once_and_read_the_same_features(frozen):
    data, model = setup(frozen)
    before = FC.BUILDS
    start = threading.Barrier(2)
    results: list = [None, None]

    def worker(i: int) -> None:
        start.wait()
        results[i] = FC.load_or_build(model, data, frozen, torch.device("cpu"), log=quiet, progress=False)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert FC.BUILDS - before == 1
    assert sorted(r.built for r in results) == [False, True]
    assert torch.equal(results[0].features, results[1].features)


@pytest.mark.slow
def test_two_worker_processes_build_the_cache_once(frozen, tmp_path):
    from launch.engine.local import run_local_sweep
    from launch.engine.plan import prepare
    from launch.engine.spec import load_sweep

    sweep_yaml = two_trial_sweep(frozen, tmp_path, "par")
    sweep = prepare(load_sweep(sweep_yaml), overrides=["train.max_epochs=1"], heartbeat=0, verbose=False)
    study = run_local_sweep(sweep, workers=2)
    summaries = [read_summary(Path(t.user_attrs["run_dir"])) for t in study.trials]
    assert len(summaries) == 2 and all(s["frontend_cache/used"] for s in summaries)
    assert sum(s["frontend_cache/built"] for s in summaries) == 1


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    "overrides, words",
    [
        (["model.freeze.frontend=false"], "not frozen"),
        (["augment.time_warp=true"], "augment.time_warp"),
        (["train.noise_input=true"], "train.noise_input"),
        ([], "BatchNorm"),  # the model's frontend BatchNorm is put back in train mode below
    ],
)
def test_each_refusal_says_why_and_how_to_turn_it_off(frozen, overrides, words):
    cfg = apply_overrides(frozen, overrides)
    _, model = setup(cfg)
    if not overrides:
        model.frozen_norms = []  # as if the frontend were frozen without its BatchNorm kept in eval mode
    cfg.train.frontend_cache = "on"
    with pytest.raises(ConfigError, match=words) as err:
        FC.decide(cfg, model, quiet)
    assert "train.frontend_cache=auto" in str(err.value) and "off" in str(err.value)

    said: list[str] = []
    cfg.train.frontend_cache = "auto"
    use, reason = FC.decide(cfg, model, said.append)
    assert not use and words in reason
    assert len(said) == (1 if cfg.model.freeze.frontend else 0)  # a frozen frontend falls back and says so once
    cfg.train.frontend_cache = "off"
    assert FC.decide(cfg, model, said.append) == (False, "train.frontend_cache=off")


def test_auto_with_time_warp_trains_live_and_records_why(frozen):
    frozen.augment.time_warp = True
    frozen.train.max_epochs = 1
    said: list[str] = []
    import builtins

    real_print = builtins.print
    builtins.print = lambda *a, **k: said.append(" ".join(map(str, a)))
    try:
        result = T.train(frozen, name="warp", verbose=True)
    finally:
        builtins.print = real_print
    summary = read_summary(result.run_dir)
    assert summary["frontend_cache/used"] is False and "time_warp" in summary["frontend_cache/reason"]
    assert sum("frontend cache not used" in line for line in said) == 1


# --------------------------------------------------------------------------- bad files are rebuilt


def _damage_truncate(path: Path) -> None:
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])


def _damage_foreign_torch(path: Path) -> None:
    torch.save({"model": {"w": torch.zeros(3)}, "epoch": 1}, path)


def _damage_garbage(path: Path) -> None:
    path.write_bytes(b"not a cache at all\n" * 100)


def _damage_other_key(path: Path) -> None:
    obj = torch.load(path, weights_only=True)
    obj["header"]["key"] = "0123456789abcdef"
    torch.save(obj, path)


def _damage_other_shape(path: Path) -> None:
    obj = torch.load(path, weights_only=True)
    obj["features"] = obj["features"][:, :-1]
    torch.save(obj, path)


@pytest.mark.parametrize(
    "damage", [_damage_truncate, _damage_foreign_torch, _damage_garbage, _damage_other_key, _damage_other_shape]
)
def test_a_truncated_or_foreign_file_is_rebuilt_never_read(frozen, damage):
    data, model = setup(frozen)
    good = FC.load_or_build(model, data, frozen, torch.device("cpu"), log=quiet, progress=False)
    expected = good.features.clone()
    damage(good.path)
    said: list[str] = []
    before = FC.BUILDS
    again = FC.load_or_build(model, data, frozen, torch.device("cpu"), log=said.append, progress=False)
    assert FC.BUILDS - before == 1 and again.built
    assert any("building it again" in line for line in said)
    assert torch.equal(again.features, expected)  # rebuilt from the same seed: the same features
    header = torch.load(again.path, weights_only=True)["header"]
    assert header["key"] == FC.key_for(model, data, frozen)
    assert json.dumps(header)  # a plain header a person can read


@pytest.mark.slow
def test_two_gloo_ranks_from_the_cache_train_the_loss_curve_of_one_process(frozen, tmp_path):
    import os
    import socket
    import subprocess
    import sys

    frozen.train.batch_size, frozen.model.dropout, frozen.train.max_epochs = 3, 0.0, 2
    frozen.train.frontend_cache = "on"
    save_config(frozen, tmp_path / "tiny.yaml")
    single = T.train(frozen, name="single", verbose=False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port", str(port),
               "-m", "launch", "train", "--config", str(tmp_path / "tiny.yaml"), "--name", "ddp"]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(command, cwd=root, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ddp = Path(frozen.train.run_dir) / "ddp"
    summary = read_summary(ddp)
    assert summary["frontend_cache/used"] is True and summary["frontend_cache/built"] is False
    for one, two in zip(read_metrics(single.run_dir), read_metrics(ddp), strict=True):
        for key in ("train/loss", "train/loss_ctc", "train/loss_att", "val/loss"):
            assert two[key] == pytest.approx(one[key], rel=1e-5), key
