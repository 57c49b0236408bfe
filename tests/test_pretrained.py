"""Pretrained loading: every checkpoint format, parts, truncation, vocabulary change, clear errors."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from trainer.config import DecoderConfig, EncoderConfig, FreezeConfig, FrontendConfig, ModelConfig, PretrainedConfig
from trainer.errors import CheckpointError
from trainer.model import LipReader, build_model
from trainer.model.pretrained import describe, load_pretrained

ALL = ["frontend", "proj_encoder", "encoder", "decoder", "ctc"]


def config(layers: int = 2, widths: tuple[int, ...] = (4, 8, 8, 16)) -> ModelConfig:
    return ModelConfig(
        frontend=FrontendConfig(list(widths)),
        encoder=EncoderConfig(16, 2, 32, layers, 5),
        decoder=DecoderConfig(16, 2, 32, 1),
    )


def model(seed: int, odim: int = 12, **kw) -> LipReader:
    torch.manual_seed(seed)
    return LipReader(config(**kw), odim)


def same(a: torch.nn.Module, b: torch.nn.Module, prefix: str) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if k.startswith(prefix)]
    return bool(keys) and all(torch.equal(sa[k], sb[k]) for k in keys)


def differs(a: torch.nn.Module, b: torch.nn.Module, prefix: str) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return any(not torch.equal(sa[k], sb[k]) for k in sa if k.startswith(prefix) and sa[k].is_floating_point())


def save(obj, path: Path) -> Path:
    torch.save(obj, path)
    return path


def test_plain_auto_avsr_state_dict_loads_the_chosen_parts(tmp_path):
    src, dst = model(1), model(2)
    fresh = copy.deepcopy(dst)
    report = load_pretrained(dst, save(src.state_dict(), tmp_path / "a.pth"), ["frontend", "proj_encoder", "encoder"])
    assert report.format == "auto_avsr"
    for part in ("frontend.", "proj_encoder.", "encoder."):
        assert same(dst, src, part)
    assert same(dst, fresh, "decoder.") and same(dst, fresh, "ctc.")  # not chosen: own initialisation kept
    assert report.reinitialised["ctc.ctc_lo.weight"] == "part 'ctc' not in model.pretrained.parts"
    assert report.unused["decoder.output_layer.bias"] == "part 'decoder' not in model.pretrained.parts"
    text = str(report)
    assert "loaded" in text and "re-initialised" in text and "unused" in text and "auto_avsr format" in text


def test_lrw_checkpoint_loads_into_the_frontend(tmp_path):
    src, dst = model(1), model(2)
    fresh = copy.deepcopy(dst)
    lrw = {k.removeprefix("frontend."): v for k, v in src.state_dict().items() if k.startswith("frontend.")}
    lrw["tcn.network.0.weight"] = torch.zeros(3, 3)
    lrw["trunk.layer1.0.relu1.weight"] = torch.zeros(4)  # a PReLU variant's activation weights
    report = load_pretrained(dst, save({"model_state_dict": lrw, "epoch": 30}, tmp_path / "lrw.pth"), ALL)
    assert report.format == "lrw"
    assert same(dst, src, "frontend.") and same(dst, fresh, "encoder.")
    assert "LRW" in report.unused["tcn.network.0.weight"]
    assert "PReLU" in report.unused["frontend.trunk.layer1.0.relu1.weight"]
    assert report.reinitialised["encoder.after_norm.weight"] == "not in the checkpoint"


def test_lightning_checkpoint_with_model_prefix(tmp_path):
    src, dst = model(1), model(2)
    ckpt = {"state_dict": {"model." + k: v for k, v in src.state_dict().items()}, "epoch": 3, "global_step": 9}
    report = load_pretrained(dst, save(ckpt, tmp_path / "l.ckpt"), ALL)
    assert report.format == "lightning" and not report.reinitialised and not report.unused
    assert same(dst, src, "")


def test_own_checkpoint_with_optimizer_and_config(tmp_path):
    src, dst = model(1), model(2)
    opt = torch.optim.AdamW(src.parameters())
    ckpt = {"model": src.state_dict(), "config": {"model": {"dropout": 0.1}}, "epoch": 4, "optimizer": opt.state_dict()}
    report = load_pretrained(dst, save(ckpt, tmp_path / "best.pt"), ALL)
    assert report.format == "lipsweep" and len(report.loaded) == len(dst.state_dict())
    assert same(dst, src, "")


def test_fewer_encoder_layers_keep_the_first_blocks(tmp_path):
    src, dst = model(1, layers=3), model(2, layers=2)
    report = load_pretrained(dst, save(src.state_dict(), tmp_path / "a.pth"), ALL)
    assert same(dst, src, "encoder.encoders.0.") and same(dst, src, "encoder.encoders.1.")
    assert same(dst, src, "encoder.after_norm.")
    dropped = [k for k in report.unused if k.startswith("encoder.encoders.2.")]
    assert dropped and all("keeps the first 2" in report.unused[k] for k in dropped)


def test_more_encoder_layers_than_the_checkpoint_reinitialise_the_rest(tmp_path):
    src, dst = model(1, layers=1), model(2, layers=2)
    report = load_pretrained(dst, save(src.state_dict(), tmp_path / "a.pth"), ALL)
    assert same(dst, src, "encoder.encoders.0.")
    assert "only 1 encoder blocks" in report.reinitialised["encoder.encoders.1.norm_ff.weight"]


def test_vocabulary_change_reinitialises_embedding_output_layer_and_ctc(tmp_path):
    src, dst = model(1, odim=30), model(2, odim=12)
    fresh = copy.deepcopy(dst)
    report = load_pretrained(dst, save(src.state_dict(), tmp_path / "a.pth"), ALL)
    for key in (
        "decoder.embed.0.weight",
        "decoder.output_layer.weight",
        "decoder.output_layer.bias",
        "ctc.ctc_lo.weight",
    ):
        assert report.reinitialised[key] == "output size differs: checkpoint 30, model 12"
        assert torch.equal(dst.state_dict()[key], fresh.state_dict()[key])
    assert same(dst, src, "decoder.decoders.") and same(dst, src, "encoder.")


def test_wrong_architecture_names_the_key_and_both_shapes(tmp_path):
    src, dst = model(1, widths=(8, 8, 8, 16)), model(2)
    with pytest.raises(CheckpointError) as e:
        load_pretrained(dst, save(src.state_dict(), tmp_path / "a.pth"), ALL)
    msg = str(e.value)
    assert "frontend.frontend3D.0.weight" in msg and "[8, 1, 5, 7, 7]" in msg and "[4, 1, 5, 7, 7]" in msg
    assert "model.frontend.widths=[8, 8, 8, 16]" in msg


def test_unrelated_checkpoint_loads_nothing_and_says_so(tmp_path):
    path = save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(CheckpointError, match="nothing loaded"):
        load_pretrained(model(2), path, ALL)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"])
def test_corrupted_file_is_a_checkpoint_error_naming_it(tmp_path, content):
    path = tmp_path / "broken.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="broken.pth"):
        load_pretrained(model(2), path, ALL)


def test_truncated_real_checkpoint_is_a_checkpoint_error(tmp_path):
    path = save(model(1).state_dict(), tmp_path / "full.pth")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.pth"):
        load_pretrained(model(2), cut, ALL)


class Payload:
    """Any class outside torch's weights-only allowlist stands for a pickle that carries code."""


def test_pickle_with_code_is_refused(tmp_path):
    path = save({"model": model(1).state_dict(), "extra": Payload()}, tmp_path / "code.pth")
    with pytest.raises(CheckpointError, match="refused"):
        load_pretrained(model(2), path, ALL)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_pretrained(model(2), tmp_path / "nope.pth", ALL)


def test_build_model_loads_then_freezes(tmp_path):
    src = model(1)
    cfg = config()
    cfg.pretrained = PretrainedConfig(str(save(src.state_dict(), tmp_path / "a.pth")), ["frontend", "encoder"])
    cfg.freeze = FreezeConfig(frontend=True, encoder_layers=0)
    built = build_model(cfg, 12)
    assert built.load_report is not None and built.load_report.parts == ["frontend", "encoder"]
    assert same(built, src, "frontend.") and same(built, src, "encoder.") and differs(built, src, "proj_encoder.")
    assert not any(p.requires_grad for p in built.frontend.parameters())


def test_describe_reads_the_architecture_off_the_shapes():
    arch = describe(model(1, odim=20, layers=3).state_dict())
    assert arch == {
        "model.frontend.widths": [4, 8, 8, 16],
        "model.encoder.dim": 16,
        "model.encoder.layers": 3,
        "model.encoder.heads": 2,
        "model.encoder.ffn_dim": 32,
        "model.encoder.kernel_size": 5,
        "model.decoder.layers": 1,
        "model.decoder.ffn_dim": 32,
        "odim": 20,
    }


def test_reference_auto_avsr_checkpoint_loads_completely(reference_dir):
    import json

    expected = json.loads((reference_dir / "auto_avsr_small" / "expected.json").read_text())
    c = expected["config"]
    cfg = ModelConfig(
        frontend=FrontendConfig(c["frontend_widths"]),
        encoder=EncoderConfig(c["adim"], c["aheads"], c["eunits"], c["elayers"], c["cnn_module_kernel"]),
        decoder=DecoderConfig(c["ddim"], c["dheads"], c["dunits"], c["dlayers"]),
    )
    dst = LipReader(cfg, c["odim"])
    report = load_pretrained(dst, reference_dir / "auto_avsr_small" / "model.pth", ALL)
    assert report.format == "auto_avsr" and not report.unused and not report.reinitialised
    want = torch.load(reference_dir / "auto_avsr_small" / "model.pth", weights_only=True)
    assert all(torch.equal(dst.state_dict()[k], v) for k, v in want.items())


def test_cli_inspect_reports_without_training(reference_dir, tmp_path):
    from click.testing import CliRunner

    from launch.cli import cli

    config_file = tmp_path / "ref.yaml"
    config_file.write_text(
        "model:\n"
        "  frontend: {widths: [16, 32, 64, 128]}\n"
        "  encoder: {dim: 64, heads: 4, ffn_dim: 128, layers: 1, kernel_size: 31}\n"
        "  decoder: {dim: 64, heads: 4, ffn_dim: 128, layers: 2}\n"
        "  freeze: {frontend: true}\n"
    )
    checkpoint = str(reference_dir / "auto_avsr_small" / "model.pth")
    result = CliRunner().invoke(cli, ["checkpoint", "inspect", checkpoint, "--config", str(config_file)])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "auto_avsr format, 263 keys" in out and "model.encoder.layers = 2" in out and "odim = 228" in out
    assert "encoder block 1 dropped (the model keeps the first 1)" in out
    assert "part 'decoder' not in model.pretrained.parts" in out
    frontend_row = next(line for line in out.splitlines() if line.startswith("frontend "))
    assert frontend_row.split()[-1] == "0"  # frozen: no trainable parameters

    result = CliRunner().invoke(cli, ["checkpoint", "inspect", checkpoint])  # base config: 768-dim model
    assert isinstance(result.exception, CheckpointError)
    msg = str(result.exception)
    assert "frontend.frontend3D.0.weight" in msg and "[16, 1, 5, 7, 7]" in msg and "[64, 1, 5, 7, 7]" in msg


def test_cli_inspect_of_an_own_checkpoint_lists_every_part_as_eval_loads_it(tiny_config, tmp_path):
    from click.testing import CliRunner

    from launch.cli import cli
    from trainer.config import to_dict
    from trainer.text import Tokenizer

    run = tmp_path / "runs" / "r1"
    (run / "checkpoints").mkdir(parents=True)
    model = LipReader(tiny_config.model, Tokenizer.from_config(tiny_config.data).vocab_size)
    torch.save({"model": model.state_dict(), "config": to_dict(tiny_config), "epoch": 1}, run / "checkpoints" / "best.pt")

    result = CliRunner().invoke(cli, ["checkpoint", "inspect", str(run / "checkpoints" / "best.pt")])
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line.startswith("  loaded ")]
    assert {r[1] for r in rows} == {"frontend", "proj_encoder", "encoder", "decoder", "ctc"}
    assert "re-initialised" not in result.output.split("status")[1]

    # the path a reader guesses from the run folder's layout: the message names the real one
    result = CliRunner().invoke(cli, ["checkpoint", "inspect", str(run / "best.pt")])
    assert isinstance(result.exception, CheckpointError)
    assert f"did you mean {run / 'checkpoints' / 'best.pt'}?" in str(result.exception)
