"""W&B sweeps without a server: the config `create` sends, supervised agents, the shared pruning study, the agent entry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
import yaml

from launch.engine.spec import PROJECT_KEYS, SweepSpec, check_sweep, load_sweep
from launch.engine.wandb_agent import PRUNE_ENV, SharedPruning, run_agents
from launch.engine.wandb_create import create_sweep

ROOT = Path(__file__).resolve().parents[1]
SWEEPS = sorted((ROOT / "sweeps").glob("*.yaml"))


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.name)
def test_create_sends_a_config_wandb_accepts(tmp_path, path):
    from wandb.apis.public.sweeps import _validate_config_and_fill_distribution

    sent = {}

    def fake_sweep(config, entity=None, project=None):
        sent.update(config=config, entity=entity, project=project)
        return "abc123"

    spec = load_sweep(path)
    created = create_sweep(spec, project="proj", send=fake_sweep, records=tmp_path)
    config = sent["config"]
    assert created.sweep_id == "abc123" and created.path == "proj/abc123" and sent["project"] == "proj"
    assert not set(PROJECT_KEYS) & set(config)  # W&B's schema refuses unknown top-level keys
    raw = {k: v for k, v in spec.raw.items() if k not in PROJECT_KEYS}
    assert raw["command"][-1] == "${args}"  # W&B's trials select by the sweep's metric: the one word added
    assert {**raw, "command": [*raw["command"][:-1], f"train.select_metric={spec.metric}", "${args}"]} == config
    assert check_sweep(SweepSpec(config)) == []  # the schema, the keys, the command
    filled = _validate_config_and_fill_distribution(config)  # wandb's own client-side check before it sends
    for spec_ in filled["parameters"].values():
        assert "distribution" in spec_ or "values" in spec_ or "value" in spec_
    assert yaml.safe_load(yaml.dump(json.loads(json.dumps(config)))) == config  # survives W&B's serialisation
    assert "${args}" in config["command"] and config["command"][2:5] == ["-m", "launch", "train"]
    assert yaml.safe_load((tmp_path / "abc123" / "sent.yaml").read_text()) == config
    assert yaml.safe_load((tmp_path / "abc123" / "sweep.yaml").read_text()) == spec.raw  # pruner kept beside the id


FAKE_AGENT = """
import json, os, sys, time
log, markers = sys.argv[1], sys.argv[2]
start = time.time()
gpu = os.environ.get("CUDA_VISIBLE_DEVICES")
crash = False
if gpu == "1":
    try:
        os.close(os.open(os.path.join(markers, "gpu1-crashed"), os.O_CREAT | os.O_EXCL))
        crash = True
    except FileExistsError:
        pass
time.sleep(0.6)
row = {"gpu": gpu, "args": sys.argv[3:], "flapping": os.environ.get("WANDB_AGENT_DISABLE_FLAPPING"),
       "prune": os.environ.get("LIPSWEEP_PRUNE"), "path0": os.environ["PATH"].split(os.pathsep)[0],
       "start": start, "end": time.time(), "crash": crash}
with open(log, "a") as f:
    f.write(json.dumps(row) + "\\n")
sys.exit(3 if crash else 0)
"""


def test_agents_are_pinned_k_per_gpu_and_a_crashed_agent_is_restarted(tmp_path, capsys):
    script = tmp_path / "fake_wandb_agent.py"
    script.write_text(FAKE_AGENT)
    log = tmp_path / "agents.jsonl"
    prune = {"storage": "sqlite:///x.db", "study": "s", "pruner": {"type": "median"}}
    codes = run_agents(
        "ent/proj/abc", count=2, gpus=["0", "1"], per_gpu=2, prune=prune,
        agent_command=[sys.executable, str(script), str(log), str(tmp_path)], poll_s=0.05,
    )  # fmt: skip
    assert sorted(codes) == ["gpu0.0", "gpu0.1", "gpu1.0", "gpu1.1"]
    assert sorted(map(tuple, codes.values())) == [(0,), (0,), (0,), (3, 0)]  # the crashed agent went on
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    assert sorted(r["gpu"] for r in rows) == ["0", "0", "1", "1", "1"]
    assert all(r["args"] == ["--count", "2", "ent/proj/abc"] for r in rows)
    assert all(r["flapping"] == "true" and json.loads(r["prune"]) == prune for r in rows)
    assert all(r["path0"] == str(Path(sys.executable).parent) for r in rows)  # W&B's ${interpreter} is `python`
    first_two = [r for r in rows if r["gpu"] == "0"]
    assert first_two[0]["start"] < first_two[1]["end"] and first_two[1]["start"] < first_two[0]["end"]  # 2 at a time
    assert "agent exited with code 3; restarting it (1/3)" in capsys.readouterr().out


def test_shared_pruning_study_prunes_a_clearly_worse_run(tmp_path, monkeypatch):
    storage = f"sqlite:///{tmp_path / 'prune.db'}"
    settings = {"storage": storage, "study": "abc-pruning", "pruner": {"type": "median", "n_startup_trials": 2, "n_warmup_steps": 1},
                "metric": "val/cer", "direction": "minimize"}  # fmt: skip
    monkeypatch.setenv(PRUNE_ENV, json.dumps(settings))

    class Result:
        state, run_dir = "finished", "runs/x"

    for offset in (0.0, 0.05):  # two good runs finish
        hook = SharedPruning.from_env()
        assert not any(hook(epoch, {"val/cer": 0.3 + offset + 0.5 / epoch}) for epoch in range(1, 6))
        hook.finish(Result())
    bad = SharedPruning.from_env()
    pruned_at = next(epoch for epoch in range(1, 6) if bad(epoch, {"val/cer": 2.0 + 0.5 / epoch}))
    assert pruned_at == 1
    bad.finish(Result())  # already told: a no-op
    study = optuna.load_study(study_name="abc-pruning", storage=storage)
    assert [t.state.name for t in study.get_trials()] == ["COMPLETE", "COMPLETE", "PRUNED"]
    assert study.get_trials()[0].value == pytest.approx(0.3 + 0.5 / 5)
    monkeypatch.delenv(PRUNE_ENV)
    assert SharedPruning.from_env() is None


@pytest.mark.slow
def test_wandb_agent_entry_applies_wandb_config_exactly_once(tiny_config, tmp_path, monkeypatch):
    """`launch train` as W&B's agent starts it: env + `--key=value` args rendered by wandb's own code."""
    from click.testing import CliRunner
    from wandb.sdk.launch.sweeps.utils import create_sweep_command_args
    from wandb.sdk.lib.config_util import save_config_file_from_dict

    from launch.cli import cli
    from trainer import train as T
    from trainer.config import save_config

    params = {"optim.lr": 0.004, "model.ctc_weight": 0.5}
    command = {"args": {k: {"value": v} for k, v in params.items()}}
    param_path = tmp_path / "wandb" / "sweep-abc" / "config-run1.yaml"
    save_config_file_from_dict(str(param_path), command["args"])
    for key, value in {"WANDB_MODE": "offline", "WANDB_SWEEP_ID": "abc", "WANDB_SWEEP_PARAM_PATH": str(param_path),
                       "WANDB_RUN_ID": "run1", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():  # fmt: skip
        monkeypatch.setenv(key, value)
    config_file = tmp_path / "base.yaml"
    save_config(tiny_config, config_file)
    calls = []
    real = T.apply_overrides

    def spy(cfg, overrides, where=""):
        calls.append(dict(overrides))
        return real(cfg, overrides, where)

    monkeypatch.setattr(T, "apply_overrides", spy)
    args = create_sweep_command_args(command)["args"]
    assert args == ["--optim.lr=0.004", "--model.ctc_weight=0.5"]
    result = CliRunner().invoke(cli, ["train", "--config", str(config_file), "--name", "agentrun", *args])
    assert result.exit_code == 0, result.output
    assert calls == [params]  # wandb.config applied once
    run_dir = Path(tiny_config.train.run_dir) / "agentrun"
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())
    assert saved["optim"]["lr"] == 0.004 and saved["model"]["ctc_weight"] == 0.5
    calls.clear()
    result = CliRunner().invoke(cli, ["train", "--resume", str(run_dir), *args])
    assert result.exit_code == 0, result.output
    assert calls == []  # a resumed run keeps its config: never applied twice


# --------------------------------------------------------------------------- W&B without a login (#16.2)


def no_login_env(home: Path, **extra: str) -> dict[str, str]:
    """No W&B credentials anywhere wandb looks: no WANDB_API_KEY, an empty home, netrc and config folder."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    env.update(HOME=str(home), NETRC=str(home / "netrc"), WANDB_CONFIG_DIR=str(home / "wandb-config"),
               PYTHONPATH=str(ROOT), **extra)  # fmt: skip
    return env


def test_require_login_refuses_without_a_key_or_offline(tmp_path, monkeypatch):
    from launch.engine.login import require_login
    from trainer.errors import UserError

    for key, value in no_login_env(tmp_path).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    with pytest.raises(UserError, match="sweep create needs W&B's server and finds no W&B login: log in once with"):
        require_login("sweep create")
    monkeypatch.setenv("WANDB_MODE", "offline")
    with pytest.raises(UserError, match="but WANDB_MODE=offline: unset WANDB_MODE"):
        require_login("sweep create")


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, mode",
    [
        (["sweep", "create", "sweeps/demo.yaml"], None),
        (["sweep", "create", "sweeps/demo.yaml"], "offline"),
        (["sweep", "agent", "ent/proj/abc"], None),
        (["sweep", "scheduler", "ent/proj/abc"], "offline"),
        (["runs", "rank", "wandb://ent/proj"], None),
        (["runs", "export-best", "wandb://ent/proj/abc"], "offline"),
    ],
)
def test_commands_that_need_wandb_exit_2_with_how_to_log_in_and_never_prompt(tmp_path, args, mode):
    env = no_login_env(tmp_path, **({"WANDB_MODE": mode} if mode else {}))
    proc = subprocess.run([sys.executable, "-m", "launch", *args], cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error: "))
    assert f"{args[0]} {args[1]} needs W&B's server" in error
    assert "`wandb login`" in error and "WANDB_API_KEY" in error and "sweep local" in error
    assert (f"WANDB_MODE={mode}" in error) == bool(mode)
    for prompt in ("Create a W&B account", "Enter your choice", "Paste your API key", "/authorize"):  # W&B's menu
        assert prompt not in proc.stdout and prompt not in proc.stderr
    assert not list(tmp_path.iterdir())  # nothing written to the (empty) home: no netrc, no settings
