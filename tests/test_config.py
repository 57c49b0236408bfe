from __future__ import annotations

import pytest
import yaml

from trainer import config as C
from trainer.errors import ConfigError


def test_defaults_validate_and_yaml_files_load():
    C.check(C.Config())
    base = C.load_config("base")
    assert base.model.encoder.layers == 12 and base.model.frontend.widths == [64, 128, 256, 512]
    small = C.load_config("configs/small.yaml")
    assert small.model.encoder.dim == small.model.decoder.dim


@pytest.mark.parametrize(
    "override, key, expected",
    [
        ("optim.lr=3e-4", "optim.lr", 3e-4),
        ("--optim.lr=3e-4", "optim.lr", 3e-4),
        ("model.frontend.widths=[8,16,32,64]", "model.frontend.widths", [8, 16, 32, 64]),
        ("model.frontend.widths=8,16,32,64", "model.frontend.widths", [8, 16, 32, 64]),
        ("train.max_epochs=3", "train.max_epochs", 3),
        ("train.max_epochs=3.0", "train.max_epochs", 3),
        ("augment.time_warp=true", "augment.time_warp", True),
        ("train.precision=bf16", "train.precision", "bf16"),
        ("tracking.tags=[a,b]", "tracking.tags", ["a", "b"]),
        ("tracking.name=123", "tracking.name", "123"),
    ],
)
def test_override_parsing(override, key, expected):
    cfg = C.load_config(None, [override])
    value = C.get_key(cfg, key)
    assert value == expected and type(value) is type(expected)


def test_dict_overrides_match_cli_overrides():
    a = C.load_config(None, ["optim.lr=0.002", "decode.beam_size=8"])
    b = C.load_config(None, {"optim.lr": 0.002, "decode": {"beam_size": 8}})
    assert C.to_flat(a) == C.to_flat(b)


@pytest.mark.parametrize(
    "override, hint",
    [("optim.lrr=1", "optim.lr"), ("model.ecnoder.dim=4", "model.encoder.dim"), ("decode.beam=3", "decode.beam_size")],
)
def test_unknown_key_names_it_and_the_closest(override, hint):
    with pytest.raises(ConfigError) as e:
        C.load_config(None, [override])
    assert override.split("=")[0] in str(e.value) and f"did you mean '{hint}'" in str(e.value)


@pytest.mark.parametrize(
    "override, allowed",
    [
        ("train.max_epochs=abc", "int >= 1"),
        ("train.max_epochs=2.5", "int >= 1"),
        ("decode.beam_size=0", "int >= 1"),
        ("model.ctc_weight=1.5", "float in [0, 1]"),
        ("augment.time_warp=maybe", "bool"),
        ("train.precision=fp8", "one of auto, fp32, fp16, bf16"),
        ("model.frontend.widths=[a,b]", "list[int]"),
    ],
)
def test_wrong_type_or_range_names_key_value_and_allowed(override, allowed):
    key, value = override.split("=")
    with pytest.raises(ConfigError) as e:
        C.load_config(None, [override])
    msg = str(e.value)
    assert key in msg and value in msg and allowed in msg


def test_cross_key_constraints():
    with pytest.raises(ConfigError, match="decoder.dim"):
        C.load_config(None, ["model.decoder.dim=256"])
    with pytest.raises(ConfigError, match="kernel_size must be odd"):
        C.load_config(None, ["model.encoder.kernel_size=30"])


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim:\n  lr: 1e-3\n  warmup: 3\n")
    with pytest.raises(ConfigError) as e:
        C.load_config(bad)
    assert str(bad) in str(e.value) and "optim.warmup_epochs" in str(e.value)


def test_save_and_reload_round_trip(tmp_path):
    cfg = C.load_config("small", ["optim.lr=1e-4", "tracking.tags=[x]"])
    C.save_config(cfg, tmp_path / "c.yaml", header="exported from test\nval/cer 0.1")
    text = (tmp_path / "c.yaml").read_text()
    assert text.startswith("# exported from test\n# val/cer 0.1\n")
    assert C.to_flat(C.load_config(tmp_path / "c.yaml")) == C.to_flat(cfg)
    assert C.to_flat(C.config_from_dict(yaml.safe_load(text))) == C.to_flat(cfg)


def test_schema_lists_every_leaf_with_help():
    specs = C.schema()
    assert "model.encoder.layers" in specs and "decode.beam_size" in specs
    assert all(s.help for s in specs.values())
