"""The frame cache, splits, batches and `data check` (videos: test_data_video.py; labels: test_data_labels.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from datafiles import INNA, QAALA, SIZE, VOCAB, config, frames, make_dataset, write_clip, write_label, write_video

from launch.cli import cli
from trainer import progress
from trainer.config import DataConfig
from trainer.data import cache as cache_mod
from trainer.data import find_clips, load_dataset, make_batches, read_words, split_ids
from trainer.errors import DataError
from trainer.text import Tokenizer


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_file(VOCAB)


def test_other_sizes_are_resized_with_a_warning_once_per_dataset(tmp_path: Path, tok: Tokenizer) -> None:
    write_clip(tmp_path / "d", "00001", frames(5, h=20, w=24), [QAALA])
    write_clip(tmp_path / "d", "00002", frames(4), [INNA])
    logs: list[str] = []
    cfg = config(tmp_path / "d", tmp_path)
    ds = load_dataset(cfg, tok, log=logs.append)
    assert ds.frames.shape == (9, SIZE, SIZE)
    warning = "warning: 1 clips are 20x24, resized to 16x16 (data.image_size)"
    assert logs.count(warning) == 1
    assert np.array_equal(ds.video(1), frames(4))  # the right size is left alone
    for _ in range(3):  # the trials of a sweep, in this process or another: the cache is reused, the warning is not
        again: list[str] = []
        assert not load_dataset(cfg, tok, log=again.append).built and warning not in again


def test_videos_and_labels_in_separate_subfolders(tmp_path: Path, tok: Tokenizer) -> None:
    root = tmp_path / "d"
    (root / "videos").mkdir(parents=True)
    (root / "labels").mkdir()
    write_video(root / "videos" / "00139.mp4", frames(5))
    write_label(root / "labels" / "00139.csv", [QAALA, INNA])
    clips, bad = find_clips(root)
    assert not bad and [(c.id, c.video.parent.name, c.label.parent.name) for c in clips] == [
        ("00139", "videos", "labels")
    ]
    ds = load_dataset(config(root, tmp_path), tok, log=lambda _: None)
    assert ds.ids == ["00139"] and ds.targets == [[68, 210, 54, 215, 32]]
    assert ds.texts == [f"{QAALA} {INNA}"]


def test_label_rows_and_separator(tmp_path: Path) -> None:
    path = write_label(tmp_path / "a.csv", [QAALA, "", INNA])
    assert read_words(path) == [(2, QAALA), (4, INNA)]  # as a spreadsheet numbers rows: the header is row 1
    sep = Tokenizer.from_file(VOCAB, word_separator=True)
    write_clip(tmp_path / "d", "00001", frames(6), [QAALA, INNA])
    ds = load_dataset(config(tmp_path / "d", tmp_path, word_separator=True), sep, log=lambda _: None)
    assert ds.targets == [[68, 210, 54, sep.separator, 215, 32]]


# --------------------------------------------------------------------------- cache


def count_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    real = cache_mod.read_video

    def counting(path):
        calls.append(str(path))
        return real(path)

    monkeypatch.setattr(cache_mod, "read_video", counting)
    return calls


def test_cache_is_reused_and_invalidated(tmp_path: Path, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "d"
    videos = make_dataset(root, 5)
    cfg = config(root, tmp_path)
    reads = count_reads(monkeypatch)
    first = load_dataset(cfg, tok, log=lambda _: None)
    assert first.built and len(reads) == 5
    assert all(np.array_equal(first.video(i), v) for i, v in enumerate(videos))

    second = load_dataset(cfg, tok, log=lambda _: None)
    assert not second.built and len(reads) == 5  # nothing decoded again
    assert second.folder == first.folder and second.targets == first.targets

    label = root / "00002.csv"
    st = label.stat()
    os.utime(label, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touch: same bytes, newer mtime
    third = load_dataset(cfg, tok, log=lambda _: None)
    assert third.built and third.folder != first.folder and len(reads) == 10

    np.save(root / "00003.npy", frames(7, seed=99))  # new content
    fourth = load_dataset(cfg, tok, log=lambda _: None)
    assert fourth.built and np.array_equal(fourth.video(3), frames(7, seed=99))

    other_size = load_dataset(config(root, tmp_path, image_size=8), tok, log=lambda _: None)
    assert other_size.built and other_size.frames.shape[1:] == (8, 8)
    assert not load_dataset(cfg, tok, log=lambda _: None).built  # each setting keeps its own cache


def test_interrupted_build_leaves_no_cache(tmp_path: Path, tok: Tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "d"
    make_dataset(root, 4)
    cfg = config(root, tmp_path)
    real = cache_mod.read_video
    calls = []

    def dying(path):
        calls.append(path)
        if len(calls) == 3:
            raise KeyboardInterrupt  # a kill in the middle of the build
        return real(path)

    monkeypatch.setattr(cache_mod, "read_video", dying)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(cfg, tok, log=lambda _: None)
    assert list((tmp_path / "cache").iterdir()) == []  # no folder, not even the temporary one
    monkeypatch.setattr(cache_mod, "read_video", real)
    ds = load_dataset(cfg, tok, log=lambda _: None)
    assert ds.built and len(ds) == 4


def test_unknown_tokens_to_unk_are_reported(tmp_path: Path) -> None:
    unk = Tokenizer.from_file(VOCAB, unknown_to_unk=True)
    write_clip(tmp_path / "d", "00001", frames(4), [QAALA + "\u0640"])  # tatweel
    logs: list[str] = []
    ds = load_dataset(config(tmp_path / "d", tmp_path, unknown_to_unk=True), unk, log=logs.append)
    assert ds.targets == [[68, 210, 54, unk.unk]]
    report = "\n".join(logs)
    assert (
        "1 unknown characters mapped to <unk>" in report
        and "U+0640" in report
        and "00001.csv, row 2, character 6" in report
    )


# --------------------------------------------------------------------------- splits


def test_split_is_deterministic_with_the_asked_ratios() -> None:
    ids = [f"{k:05d}" for k in range(200)]
    a = split_ids(ids, seed=3, val_ratio=0.1, test_ratio=0.2)
    assert a == split_ids(
        list(reversed(ids)), seed=3, val_ratio=0.1, test_ratio=0.2
    )  # order of discovery is irrelevant
    assert (len(a["train"]), len(a["val"]), len(a["test"])) == (140, 20, 40)
    assert sorted(a["train"] + a["val"] + a["test"]) == ids
    assert a["val"] != split_ids(ids, seed=4, val_ratio=0.1, test_ratio=0.2)["val"]


def test_split_file_beside_the_cache(tmp_path: Path, tok: Tokenizer) -> None:
    make_dataset(tmp_path / "d", 20)
    cfg = config(tmp_path / "d", tmp_path, val_ratio=0.2, test_ratio=0.1, split_seed=7)
    ds = load_dataset(cfg, tok, log=lambda _: None)
    split = ds.split(cfg)
    saved = json.loads((ds.folder / "split.json").read_text())
    assert saved["params"] == {"seed": 7, "val_ratio": 0.2, "test_ratio": 0.1}
    assert [ds.ids[i] for i in split["val"]] == saved["val"] and len(split["val"]) == 4 and len(split["test"]) == 2
    again = load_dataset(cfg, tok, log=lambda _: None)
    assert not again.built and again.split(cfg) == split  # every trial gets the same split
    other = ds.split(DataConfig(val_ratio=0.2, test_ratio=0.1, split_seed=8))
    assert other["val"] != split["val"]


def test_manifest_with_split_column(tmp_path: Path, tok: Tokenizer) -> None:
    (tmp_path / "vids").mkdir()
    rows = ["id,video,text,split"]
    for k, s in enumerate(["train", "train", "val", "test", "train", "valid"]):
        write_video(tmp_path / "vids" / f"c{k}.npz", frames(5 + k, seed=k))
        rows.append(f"c{k},vids/c{k}.npz,{QAALA} {INNA},{s}")
    manifest = tmp_path / "manifest.csv"
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    cfg = config(manifest, tmp_path)
    ds = load_dataset(cfg, tok, log=lambda _: None)
    assert ds.targets[0] == [68, 210, 54, 215, 32] and list(ds.lengths) == [5, 6, 7, 8, 9, 10]
    split = ds.split(cfg)
    assert {k: [ds.ids[i] for i in v] for k, v in split.items()} == {
        "train": ["c0", "c1", "c4"],
        "val": ["c2", "c5"],
        "test": ["c3"],
    }
    rows[3] = rows[3].rsplit(",", 1)[0] + ","  # one row without a split
    manifest.write_text("\n".join(rows) + "\n", encoding="utf-8")
    with pytest.raises(DataError, match="split column is filled on some rows"):
        load_dataset(cfg, tok, log=lambda _: None)


# --------------------------------------------------------------------------- batches


def test_batch_padding_and_lengths(tmp_path: Path, tok: Tokenizer) -> None:
    videos = make_dataset(tmp_path / "d", 4, lengths=[3, 6, 4, 5])
    ds = load_dataset(config(tmp_path / "d", tmp_path), tok, log=lambda _: None)
    batch = ds.collate([1, 2, 0])
    assert batch.ids == ["00001", "00002", "00000"]
    assert batch.video.shape == (3, 6, SIZE, SIZE) and batch.video.dtype == torch.uint8
    assert batch.lengths.tolist() == [6, 4, 3] and batch.lengths.dtype == torch.int64
    for b, i in enumerate([1, 2, 0]):
        n = len(videos[i])
        assert np.array_equal(batch.video[b, :n].numpy(), videos[i])
        assert batch.video[b, n:].eq(0).all()
    assert batch.target_lengths.tolist() == [5, 3, 3]
    assert batch.targets.tolist() == [[68, 210, 54, 215, 32], [68, 210, 54, -1, -1], [68, 210, 54, -1, -1]]
    x, y = ds[1]
    assert np.array_equal(x, videos[1]) and y == [68, 210, 54, 215, 32]


def test_batch_frames_bound_and_seeded_shuffle() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(29, 39, size=300)
    indices = list(range(0, 300, 2))
    batches = make_batches(lengths, indices, batch_frames=200, shuffle=True, seed=5)
    assert sorted(i for b in batches for i in b) == indices
    assert all(len(b) * max(lengths[i] for i in b) <= 200 for b in batches)
    assert max(len(b) for b in batches) == 6  # 6 x 33 fits, the bound is used
    assert batches == make_batches(lengths, indices, batch_frames=200, shuffle=True, seed=5)
    assert batches != make_batches(lengths, indices, batch_frames=200, shuffle=True, seed=6)
    fixed = make_batches(lengths, indices, batch_size=16, shuffle=False)
    assert [len(b) for b in fixed] == [16] * 9 + [6] and fixed[0] == indices[:16]
    shuffled = make_batches(lengths, indices, batch_size=16, shuffle=True, seed=1)
    assert sorted(i for b in shuffled for i in b) == indices and shuffled[0] != indices[:16]
    with pytest.raises(ValueError, match="batch_frames"):
        make_batches(lengths, indices, batch_frames=30)


# --------------------------------------------------------------------------- bad clips


def plant_bad_clips(root: Path) -> dict[str, str]:
    """Good clips plus one of each kind of bad clip; {file name: expected words in its reason}."""
    make_dataset(root, 3)
    (root / "b_unreadable.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    write_label(root / "b_unreadable.csv", [QAALA])
    write_clip(root, "b_empty", np.zeros((0, SIZE, SIZE), np.uint8), [QAALA])
    write_clip(root, "b_short", frames(1), [QAALA])
    write_clip(root, "b_long", frames(70), [QAALA])
    write_clip(root, "b_shape", frames(3)[0], [QAALA])
    write_video(root / "b_emptycsv.npy", frames(3))
    (root / "b_emptycsv.csv").write_text("", encoding="utf-8")
    write_video(root / "b_header.npy", frames(3))
    (root / "b_header.csv").write_text(f"text\n{QAALA}\n", encoding="utf-8")
    write_video(root / "b_legacy.npy", frames(3))
    (root / "b_legacy.csv").write_bytes("word\n\u0642\u0627\u0644\n".encode("cp1256"))
    write_clip(root, "b_unknown", frames(3), [QAALA + "\u0640"])
    write_video(root / "b_nolabel.npy", frames(3))
    write_label(root / "b_novideo.csv", [QAALA])
    write_clip(root, "b_ctc", frames(2), [QAALA, INNA])
    return {
        "b_unreadable.mp4": "unreadable",
        "b_empty.npy": "empty (no frames)",
        "b_short.npy": "1 frames, fewer than data.min_frames=2",
        "b_long.npy": "70 frames, more than data.max_frames=64",
        "b_shape.npy": "wrong shape (16, 16)",
        "b_emptycsv.csv": "empty label file",
        "b_header.csv": "the header must be `word`",
        "b_legacy.csv": "not UTF-8",
        "b_unknown.csv": "U+0640",
        "b_nolabel.npy": "no label file b_nolabel.csv",
        "b_novideo.csv": "no video",
        "b_ctc.npy": "2 frames, too few for its label: CTC needs at least 5 (5 tokens)",
    }


def bad_lines(output: str) -> dict[str, str]:
    section = output.split("bad clips (", 1)[1].splitlines()[1:]
    return {Path(line.strip().split(": ", 1)[0].split(",")[0]).name: line for line in section if line.startswith("  ")}


def test_data_check_finds_each_bad_clip(tmp_path: Path) -> None:
    root = tmp_path / "d"
    expected = plant_bad_clips(root)
    result = CliRunner().invoke(
        cli,
        [
            "data",
            "check",
            str(root),
            "data.min_frames=2",
            f"data.image_size={SIZE}",
            "augment.crop_size=8",
            "data.augment_unused=1",
        ],
    )
    assert result.exit_code != 0 and "data.augment_unused" in str(result.exception)  # overrides are validated

    result = CliRunner().invoke(
        cli, ["data", "check", str(root), "data.min_frames=2", f"data.image_size={SIZE}", "augment.crop_size=8"]
    )
    assert result.exit_code == 1, result.output
    found = bad_lines(result.output)
    assert set(found) == set(expected)
    for name, reason in expected.items():
        assert reason in found[name], (name, found[name])
    assert f"clips: {3 + len(expected)} (3 good, {len(expected)} bad)" in result.output
    assert "frames per clip: min 5, mean 6.00, max 7" in result.output
    assert "tokens per label: min 3, mean 3.67, max 5" in result.output
    assert "token coverage: 5 of 226 vocabulary tokens seen, 11 tokens in all" in result.output
    top = result.output.split("tokens:\n", 1)[1].splitlines()
    assert top[:2] == ["  \u0642\u064e: 3", "  \u0627: 3"]


def test_data_check_clean_dataset_exits_zero(tmp_path: Path) -> None:
    make_dataset(tmp_path / "d", 4)
    result = CliRunner().invoke(
        cli, ["data", "check", str(tmp_path / "d"), f"data.image_size={SIZE}", "augment.crop_size=8"]
    )
    assert result.exit_code == 0, result.output
    assert "no bad clips" in result.output and "  5 | " in result.output  # one histogram row per frame length


def test_training_stops_on_bad_clips_unless_skip_bad(tmp_path: Path, tok: Tokenizer) -> None:
    root = tmp_path / "d"
    expected = plant_bad_clips(root)
    cfg = config(root, tmp_path, min_frames=2)
    with pytest.raises(DataError) as e:
        load_dataset(cfg, tok, log=lambda _: None)
    message = str(e.value)
    assert f"{len(expected)} bad clips" in message and "data.skip_bad=true" in message
    assert all(name in message for name in expected)  # all of them, not just the first
    assert not list((tmp_path / "cache").glob("*/index.json"))

    logs: list[str] = []
    ds = load_dataset(config(root, tmp_path, min_frames=2, skip_bad=True), tok, log=logs.append)
    assert ds.ids == ["00000", "00001", "00002"]
    assert len(ds.skipped) == len(expected) and any("skipping 12 bad clips" in line for line in logs)
    with pytest.raises(DataError, match="bad clips"):  # the cache built with skip_bad is not reused silently
        load_dataset(cfg, tok, log=lambda _: None)


# --------------------------------------------------------------------------- data check leaves the cache


def check(root: Path, *overrides: str):
    return CliRunner().invoke(
        cli, ["data", "check", str(root), f"data.image_size={SIZE}", "augment.crop_size=8", *overrides]
    )


def no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(path):
        raise AssertionError(f"{path} decoded again")

    monkeypatch.setattr(cache_mod, "read_video", refuse)


def test_train_reuses_the_cache_data_check_built(tmp_path: Path, tok: Tokenizer, monkeypatch) -> None:
    root = tmp_path / "d"
    videos = make_dataset(root, 4)
    write_clip(root, "00009", frames(5, h=20, w=24), [QAALA])
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    first = check(root, cache)
    assert first.exit_code == 0, first.output
    assert "cache: " in first.output and "(built now; train reuses it)" in first.output
    assert "warning: 1 clips are 20x24, resized to 16x16 (data.image_size)" in first.output

    no_decoding(monkeypatch)
    ds = load_dataset(config(root, tmp_path), tok, log=lambda _: None)  # what train calls, with the same settings
    assert not ds.built and len(ds) == 5 and np.array_equal(ds.video(0), videos[0])
    second = check(root, cache)  # and data check reads the cache a run built
    assert second.exit_code == 0 and "(already built; train reuses it)" in second.output
    assert second.stdout.replace("already built", "built now") == first.stdout  # the same report


def test_data_check_with_bad_clips_writes_the_cache_only_under_skip_bad(tmp_path: Path, tok: Tokenizer, monkeypatch):
    root = tmp_path / "d"
    make_dataset(root, 3)
    write_clip(root, "short", frames(2), [QAALA, INNA])
    cache = f"data.cache_dir={tmp_path / 'cache'}"
    result = check(root, cache)
    assert result.exit_code == 1 and "cache: not written (bad clips)" in result.output
    assert "short.npy: 2 frames, too few for its label" in result.output
    assert not list((tmp_path / "cache").glob("*/index.json"))
    result = check(root, cache, "data.skip_bad=true")
    assert result.exit_code == 1 and "(built now; train reuses it)" in result.output  # still bad: still status 1
    no_decoding(monkeypatch)
    ds = load_dataset(config(root, tmp_path, skip_bad=True), tok, log=lambda _: None)
    assert not ds.built and len(ds) == 3 and len(ds.skipped) == 1


def test_building_the_cache_shows_progress(tmp_path: Path, tok: Tokenizer, monkeypatch) -> None:
    """Without a terminal (a log file, Kaggle): a status line at most every STATUS_EVERY seconds."""
    make_dataset(tmp_path / "d", 3)
    monkeypatch.setattr(progress, "STATUS_EVERY", 0.0)
    logs: list[str] = []
    load_dataset(config(tmp_path / "d", tmp_path), tok, log=logs.append)
    status = [line for line in logs if line.startswith("decoding clips: ")]
    assert [line.split(",")[0] for line in status] == [f"decoding clips: {k}/3 clips" for k in (1, 2, 3)]
