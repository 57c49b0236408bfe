"""Bad inputs through the command line, as a user meets them: each gets its message (asserted here), the
file or key it concerns and what to do, exit status 2 (1 for `sweep validate`), and no traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import av
import numpy as np
import pytest
import torch
import yaml
from conftest import ROOT, write_tiny_dataset
from datafiles import opencv_avi

from launch.cli import main
from trainer.config import save_config
from trainer.data import load_dataset
from trainer.model import LipReader
from trainer.text import Tokenizer

QAALA = "\u0642\u064e\u0627\u0644\u064e"  # قَالَ


def run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """`python -m launch ARGS` in this process: (exit status, stdout + stderr)."""
    monkeypatch.setattr(sys, "argv", ["lipsweep", *map(str, args)])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    out = capsys.readouterr()
    return code, out.out + out.err


def assert_user_error(code: int, output: str, *fragments: str, status: int = 2) -> None:
    assert code == status, output[-2000:]
    assert "Traceback" not in output, output[-2000:]
    for fragment in fragments:
        assert fragment in output, f"{fragment!r} not in:\n{output[-2000:]}"


def write_mp4(path: Path, frames: np.ndarray) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        container.start_encoding()
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="gray")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_avi(path: Path, frames: np.ndarray, size: int = 24) -> Path:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("rawvideo", rate=25)
        stream.width, stream.height, stream.pix_fmt = size, size, "gray"
        container.start_encoding()
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="gray")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def label(path: Path, text: str = f"word\n{QAALA}\n", encoding: str = "utf-8") -> None:
    path.write_text(text, encoding=encoding)


@pytest.fixture
def tiny_yaml(tiny_config, tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    save_config(tiny_config, path)
    return path


def gray(t: int, h: int = 24, w: int = 24, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w), dtype=np.uint8)


# --------------------------------------------------------------------------- clips and labels: `train` stops with the list


def truncated_mp4(root: Path) -> None:
    whole = write_mp4(root / "bad.mp4", gray(8)).read_bytes()
    (root / "bad.mp4").write_bytes(whole[: len(whole) // 2])  # a copy cut short: the index at the end is gone
    label(root / "bad.csv")


def truncated_avi(root: Path) -> None:
    whole = opencv_avi(root / "bad.avi", gray(8)).read_bytes()
    (root / "bad.avi").write_bytes(whole[: len(whole) * 6 // 10])  # the header's frame count is kept
    label(root / "bad.csv")


def zero_frame_mp4(root: Path) -> None:
    write_mp4(root / "bad.mp4", gray(0))
    label(root / "bad.csv")


def zero_frame_avi(root: Path) -> None:
    write_avi(root / "bad.avi", gray(0))
    label(root / "bad.csv")


def too_long(root: Path) -> None:
    np.save(root / "bad.npy", gray(70))
    label(root / "bad.csv")


def time_last(root: Path) -> None:
    np.save(root / "bad.npy", gray(8).transpose(1, 2, 0))  # (H, W, T), as frames stacked on the last axis are
    label(root / "bad.csv")


def zero_bytes(root: Path) -> None:
    (root / "bad.npy").touch()
    label(root / "bad.csv")


def object_array(root: Path) -> None:
    ragged = np.empty(2, dtype=object)
    ragged[:] = [gray(1)[0], gray(1, h=20)[0]]  # np.array(frames, dtype=object) of frames of two sizes
    np.save(root / "bad.npy", ragged, allow_pickle=True)
    label(root / "bad.csv")


def label_longer_than_the_clip(root: Path) -> None:
    np.save(root / "bad.npy", gray(8))
    label(root / "bad.csv", "word\n" + f"{QAALA}\n" * 4)  # 12 tokens for 8 frames


def spreadsheet_row_with_two_words(root: Path) -> None:
    np.save(root / "bad.npy", gray(8))
    label(root / "bad.csv", f"\ufeffword,\r\n{QAALA},\r\n{QAALA},{QAALA}\r\n")


def channels_first(root: Path) -> None:
    np.save(root / "bad.npy", np.stack([gray(8)] * 3, axis=1))  # (T, 3, H, W), as torchvision writes
    label(root / "bad.csv")


def float_frames(root: Path) -> None:
    np.save(root / "bad.npy", gray(8).astype(np.float32) / 255)
    label(root / "bad.csv")


def no_word_header(root: Path) -> None:
    np.save(root / "bad.npy", gray(8))
    label(root / "bad.csv", f"text\n{QAALA}\n")


def legacy_encoding(root: Path) -> None:
    np.save(root / "bad.npy", gray(8))
    label(root / "bad.csv", "word\n\u0642\u0627\u0644\n", encoding="cp1256")


def empty_csv(root: Path) -> None:
    np.save(root / "bad.npy", gray(8))
    label(root / "bad.csv", "")


def unknown_token(root: Path) -> None:
    np.save(root / "bad.npy", gray(8))
    label(root / "bad.csv", f"word\n{QAALA}\n{QAALA[:2]}\u0640{QAALA[2:]}\n")  # a tatweel (U+0640) in the second word


BAD_CLIPS = {
    "mp4 cut before its index": (truncated_mp4, ["bad.mp4: unreadable (InvalidDataError"]),
    "truncated avi (OpenCV MJPG)": (truncated_avi, ["bad.avi: truncated: the header promises 8 frames, "]),
    "zero-byte array": (zero_bytes, ["bad.npy: empty file (0 bytes)"]),
    "object array": (object_array, ["bad.npy: an object array of shape (2,)", "stack the frames into one uint8 array"]),
    "time on the last axis": (
        time_last,
        [
            "bad.npy: frames on the wrong axis: shape (24, 24, 8); axis 2 looks like time (H x W x T)",
            "save np.transpose(a, (2, 0, 1)), which is T x H x W",
        ],
    ),
    "label longer than the clip": (
        label_longer_than_the_clip,
        ["bad.npy: 8 frames, too few for its label: CTC needs at least 12 (12 tokens)", "bad.csv is this clip's label"],
    ),
    "spreadsheet row with two words": (
        spreadsheet_row_with_two_words,
        [f"bad.csv: row 3: 2 filled cells ({QAALA}, {QAALA}); write one word a row", "the header is row 1"],
    ),
    "zero-frame mp4": (zero_frame_mp4, ["bad.mp4: no video stream"]),
    "zero-frame avi": (zero_frame_avi, ["bad.avi: empty (no frames)"]),
    "longer than max_frames": (too_long, ["bad.npy: 70 frames, more than data.max_frames=64"]),
    "3 channels first": (
        channels_first,
        [
            "bad.npy: frames on the wrong axis: shape (8, 3, 24, 24); axis 0 looks like time and axis 1 like colour "
            "channels (T x C x H x W); save np.transpose(a, (0, 2, 3, 1)), which is T x H x W x C"
        ],
    ),
    "float frames": (float_frames, ["bad.npy: frames of dtype float32; save uint8 pixels 0..255"]),
    "no word header": (no_word_header, ["bad.csv: the header must be `word`, found `text`"]),
    "cp1256 label": (
        legacy_encoding,
        ["bad.csv: not UTF-8 at byte 5 (it reads as Windows-1256, a legacy Arabic encoding); re-save it as UTF-8"],
    ),
    "empty csv": (empty_csv, ["bad.csv: empty label file; write the header `word` and one word a row"]),
    "token outside the vocabulary": (
        unknown_token,
        ["bad.csv: row 3: not in the vocabulary", "'\u0640' (U+0640) at character 3", "data.unknown_to_unk=true"],
    ),
}


@pytest.mark.parametrize("case", list(BAD_CLIPS))
def test_train_stops_on_a_bad_clip_naming_file_and_reason(case, tiny_yaml, tmp_path, monkeypatch, capsys):
    make, fragments = BAD_CLIPS[case]
    root = write_tiny_dataset(tmp_path / "clips", clips=6)
    make(root)
    code, output = run_cli(monkeypatch, capsys, "train", "--config", tiny_yaml, "--name", "r", f"data.root={root}")
    assert_user_error(code, output, "error: ", f"{root}: 1 bad clip:", *fragments, "data.skip_bad=true")
    summary = yaml.safe_load((tmp_path / "runs" / "r" / "summary.json").read_text())
    assert summary["state"] == "failed" and "bad clip" in summary["reason"]


def test_colour_and_odd_sized_frames_are_converted_with_a_warning(tmp_path):
    root = write_tiny_dataset(tmp_path / "clips", clips=3)
    rgb = np.random.default_rng(1).integers(0, 256, (8, 23, 25, 3), dtype=np.uint8)  # channels last, 23 x 25
    np.save(root / "rgb.npy", rgb)
    label(root / "rgb.csv")
    logs: list[str] = []
    from trainer.config import DataConfig

    cfg = DataConfig(root=str(root), image_size=24, cache_dir=str(tmp_path / "cache"))
    data = load_dataset(cfg, Tokenizer.from_config(cfg), log=logs.append)
    assert "warning: 1 clips are 23x25, resized to 24x24 (data.image_size)" in logs
    frames = data.video(data.ids.index("rgb"))
    assert frames.shape == (8, 24, 24) and frames.dtype == np.uint8


# --------------------------------------------------------------------------- config, sweep and checkpoint files


@pytest.mark.parametrize(
    "override, fragment",
    [
        ("optim.lr=fast", "error: optim.lr: 'fast' is not allowed; expected float >= 0"),
        ("train.max_epochs=2.5", "error: train.max_epochs: '2.5' is not allowed; expected int >= 1"),
        ("--train.batch_size=many", "error: train.batch_size: 'many' is not allowed; expected int >= 1"),
        ("model.adapter=big", "error: model.adapter: 'big' is not allowed; expected one of none, linear, mlp"),
        ("optim.lrr=1e-3", "error: unknown config key 'optim.lrr'; did you mean 'optim.lr'?"),
    ],
)
def test_config_value_of_the_wrong_type_from_the_command_line(override, fragment, tiny_yaml, monkeypatch, capsys):
    code, output = run_cli(monkeypatch, capsys, "train", "--config", tiny_yaml, override)
    assert_user_error(code, output, fragment)


def test_sweep_yaml_with_keys_that_do_not_exist(tmp_path, monkeypatch, capsys):
    sweep = {
        "method": "random",
        "metric": {"name": "val/cer", "goal": "minimize"},
        "run_cap": 2,
        "early_terminte": {"type": "hyperband", "min_iter": 2},
        "parameters": {"optim.lrr": {"values": [1e-3]}, "model.encoder.layer": {"values": [2]}},
        "command": ["${env}", "${interpreter}", "-m", "launch", "train", "--config", str(ROOT / "configs/small.yaml"), "${args}"],
    }  # fmt: skip
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(sweep))
    code, output = run_cli(monkeypatch, capsys, "sweep", "validate", path)
    assert_user_error(
        code,
        output,
        f"{path}: early_terminte: not a W&B sweep key (nor base_config/pruner); did you mean early_terminate?",
        f"{path}: parameters.optim.lrr: unknown config key; did you mean optim.lr?",
        f"{path}: parameters.model.encoder.layer: unknown config key; did you mean model.encoder.layers?",
        "3 problem(s)",
        status=1,
    )
    code, output = run_cli(monkeypatch, capsys, "sweep", "local", path, "--trials", "1")  # refused before any trial
    assert code == 1 and "did you mean optim.lr?" in output and not (tmp_path / "runs").exists()


def other_architecture_checkpoint(tiny_config, path: Path) -> Path:
    """A lipsweep checkpoint of the tiny model with 32-wide encoder and decoder (the tiny config has 16)."""
    model_cfg = tiny_config.model
    model_cfg.encoder.dim = model_cfg.decoder.dim = 32
    model = LipReader(model_cfg, Tokenizer.from_config(tiny_config.data).vocab_size)
    torch.save({"model": model.state_dict(), "epoch": 1}, path)
    model_cfg.encoder.dim = model_cfg.decoder.dim = 16
    return path


def test_checkpoint_of_another_architecture(tiny_config, tiny_yaml, tmp_path, monkeypatch, capsys):
    ckpt = other_architecture_checkpoint(tiny_config, tmp_path / "wide.pt")
    expected = (
        f"{ckpt}: 'proj_encoder.weight' has shape [32, 8] in the checkpoint but [16, 8] in the model; "
        "the config does not describe this checkpoint's architecture (it looks like: "
    )
    code, output = run_cli(
        monkeypatch, capsys, "train", "--config", tiny_yaml, "--name", "p", f"model.pretrained.path={ckpt}"
    )
    assert_user_error(code, output, expected, "model.encoder.dim=32")
    code, output = run_cli(monkeypatch, capsys, "eval", "--checkpoint", ckpt, "--config", tiny_yaml)
    assert_user_error(code, output, expected)


class RunsCode:
    """Unpickling this touches a file: a stand-in for a checkpoint that carries code."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoint_that_is_a_pickle_with_code_is_refused_and_never_run(tiny_yaml, tmp_path, monkeypatch, capsys):
    marker = tmp_path / "code-ran"
    evil = tmp_path / "evil.pt"
    torch.save({"model": RunsCode(marker)}, evil)

    code, output = run_cli(
        monkeypatch, capsys, "train", "--config", tiny_yaml, "--name", "e", f"model.pretrained.path={evil}"
    )
    assert_user_error(
        code,
        output,
        f"{evil}: refused to load: the file holds Python objects beyond tensors and plain containers",
        "re-save only its state dict",
    )
    code, output = run_cli(monkeypatch, capsys, "checkpoint", "inspect", evil)
    assert_user_error(code, output, f"{evil}: refused to load")

    run = tmp_path / "runs" / "killed"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pt").write_bytes(evil.read_bytes())
    code, output = run_cli(monkeypatch, capsys, "train", "--resume", run)
    assert_user_error(code, output, f"{run / 'checkpoints' / 'last.pt'}: refused to load")
    assert not marker.exists()  # weights_only=True: the payload never ran


def test_checkpoint_that_holds_no_state_dict(tiny_yaml, tmp_path, monkeypatch, capsys):
    path = tmp_path / "list.pt"
    torch.save([torch.zeros(3)], path)
    code, output = run_cli(monkeypatch, capsys, "train", "--config", tiny_yaml, f"model.pretrained.path={path}")
    assert_user_error(code, output, f"{path}: expected a dict (a state dict or a checkpoint holding one), got list")
    path = tmp_path / "opt.pt"
    torch.save({"optimizer": {"lr": 1e-3}, "step": 3}, path)
    code, output = run_cli(monkeypatch, capsys, "train", "--config", tiny_yaml, f"model.pretrained.path={path}")
    assert_user_error(code, output, f"{path}: 'optimizer' is a dict, not a tensor: no state dict found")
