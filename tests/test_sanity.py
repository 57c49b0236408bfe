"""The sanity model: overfits a few synthetic clips with real frames, does not learn their content from noise."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from runfolders import TINY

from analysis.sanity import NEAR_ZERO, NOT_LEARNED, LinearFrontend, run_sanity, verdict_for
from trainer.config import load_config


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory) -> list[str]:
    from trainer.synthetic import write_dataset

    root = tmp_path_factory.mktemp("sanity")
    write_dataset(root / "data", 12, seed=5, fmt="npy")
    return [f"data.root={root / 'data'}", f"data.cache_dir={root / 'cache'}", "data.image_size=24", "augment.crop_size=16",
            "data.val_ratio=0.2", "data.test_ratio=0", "decode.beam_size=2", "model.dropout=0", "optim.lr=5e-3"]  # fmt: skip


# a model that overfits 8 clips of 16 x 16 crops in 100 steps (70-80 s a run on the shared 2-core VM)
SMALL = ["model.frontend.widths=[8,8,16,16]", "model.encoder.dim=32", "model.decoder.dim=32", "model.encoder.heads=2",
         "model.decoder.heads=2", "model.encoder.ffn_dim=64", "model.decoder.ffn_dim=64", "model.encoder.layers=1",
         "model.decoder.layers=1"]  # fmt: skip


@pytest.mark.slow
def test_learns_with_real_frames_and_not_from_noise(synthetic):
    cfg = load_config("small", [*SMALL, *synthetic])
    real = run_sanity(cfg, clips=8, frontend="real", steps=100, eval_every=100, log=lambda m: None)
    noise = run_sanity(cfg, clips=8, frontend="noise", steps=100, eval_every=100, log=lambda m: None)
    assert real.cer <= NEAR_ZERO and real.learned and real.ok, real.history
    assert noise.cer >= NOT_LEARNED and not noise.learned and noise.ok, noise.history
    assert "the loop can learn" in real.verdict and "as expected" in noise.verdict
    assert real.history[-1]["loss"] < noise.history[-1]["loss"]


def test_linear_frontend_masks_padding_and_keeps_shapes():
    torch.manual_seed(0)
    frontend = LinearFrontend(16 * 16, 8)
    x = torch.randn(2, 5, 1, 16, 16)
    out = frontend(x, torch.tensor([5, 3]))
    assert out.shape == (2, 5, 8)
    assert torch.equal(out[1, 3:], torch.zeros(2, 8))
    # a real frame's features do not depend on the padding after it
    x2 = x.clone()
    x2[1, 3:] = 7.0
    assert torch.equal(frontend(x2, torch.tensor([5, 3])), out)


@pytest.mark.parametrize(
    ("frontend", "cer", "ok", "phrase"),
    [
        ("real", 0.02, True, "the loop can learn"),
        ("real", 0.4, False, "did not overfit"),
        ("linear", 0.05, True, "with a linear frontend overfits"),
        ("noise", 0.8, True, "cannot learn the content"),
        ("noise", 0.1, False, "labels leak from outside the frames"),
    ],
)
def test_verdicts(frontend, cer, ok, phrase):
    text, good = verdict_for(frontend, cer, steps=100, clips=10)
    assert good is ok and phrase in text and f"{cer:.3f}" in text


def test_cli_runs_every_frontend_and_exits_1_when_the_outcome_is_wrong(synthetic, tmp_path: Path):
    from launch.cli import cli

    args = ["sanity", "--config", "small", "--clips", "3", "--steps", "2", "--eval-every", "1", *TINY, *synthetic]
    for frontend in ("linear", "noise"):
        result = CliRunner().invoke(cli, [*args, "--frontend", frontend])
        assert "verdict (" in result.output, result.output
        # two steps cannot overfit: linear is a problem (exit 1), noise is as expected (exit 0)
        assert result.exit_code == (1 if frontend == "linear" else 0), result.output
        assert result.output.count("CTC-greedy CER") == 2  # a line per evaluated step
