"""trainer.data.labels: label CSVs as spreadsheets export them, invisible characters, every bad row, CTC's floor."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from datafiles import INNA, QAALA, VOCAB, config, frames, write_clip, write_video

from trainer.data import ctc_min_frames, find_clips, load_dataset, read_words
from trainer.errors import DataError
from trainer.text import Tokenizer

TATWEEL = "\u0640"
RLM, LRM, ALM, ZWJ, BOM = "\u200f", "\u200e", "\u061c", "\u200d", "\ufeff"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_file(VOCAB)


def excel_csv(path: Path, rows: list[list[str]], sep: str = ",") -> Path:
    """As a spreadsheet's "CSV UTF-8" export writes it: a BOM, CRLF line ends, every row as wide as the widest."""
    width = max(len(r) for r in rows)
    lines = [sep.join(r + [""] * (width - len(r))) for r in rows]
    path.write_bytes(b"\xef\xbb\xbf" + "".join(line + "\r\n" for line in lines).encode("utf-8"))
    return path


@pytest.mark.parametrize("sep", [",", ";", "\t"])
def test_spreadsheet_export_with_empty_trailing_cells(tmp_path: Path, sep: str) -> None:
    """A sheet whose column B was once touched exports `word,` and `قَالَ,` rows (`;` where the decimal mark is ,)."""
    path = excel_csv(tmp_path / "a.csv", [["word", ""], [QAALA], [], [INNA]], sep)
    assert read_words(path) == [(2, QAALA), (4, INNA)]  # rows as the spreadsheet shows them; the blank row 3 skipped


def test_a_second_filled_cell_is_an_error_naming_each_row(tmp_path: Path) -> None:
    path = excel_csv(tmp_path / "a.csv", [["word", ""], [QAALA, INNA], [QAALA], [INNA, "", QAALA]])
    with pytest.raises(DataError) as e:
        read_words(path)
    assert str(e.value) == (
        f"{path}: row 2: 2 filled cells ({QAALA}, {INNA}); write one word a row; "
        f"row 4: 2 filled cells ({INNA}, {QAALA}); write one word a row "
        "(rows as a spreadsheet numbers them, the header is row 1)"
    )


def test_every_bad_row_of_a_label_is_reported(tmp_path: Path, tok: Tokenizer) -> None:
    root = tmp_path / "d"
    write_clip(root, "00001", frames(8), [QAALA])
    excel_csv(root / "00001.csv", [["word"], [QAALA], [QAALA[:2] + TATWEEL + QAALA[2:]], [QAALA, INNA], ["x" + INNA]])
    with pytest.raises(DataError) as e:
        load_dataset(config(root, tmp_path), tok, log=lambda _: None)
    message = str(e.value)
    assert "00001.csv: row 3: not in the vocabulary" in message and "'\u0640' (U+0640) at character 3" in message
    assert "; row 4: 2 filled cells" in message and "; row 5: not in the vocabulary" in message
    assert "'x' (U+0078) at character 1" in message and "the header is row 1" in message
    assert "data.unknown_to_unk=true" in message


def test_manifest_from_a_spreadsheet_reports_every_bad_row(tmp_path: Path, tok: Tokenizer) -> None:
    for k in range(3):
        write_video(tmp_path / f"c{k}.npy", frames(8, seed=k))
    rows = [
        ["id", "video", "text", "split", ""],
        ["c0", "c0.npy", f"{QAALA} {INNA}", "train"],
        ["c1", "c1.npy", QAALA, "val", "a note"],
        ["c2", "missing.npy", QAALA, "test"],
        ["c0", "c2.npy", QAALA, "train"],
    ]
    manifest = excel_csv(tmp_path / "manifest.csv", rows, ";")
    clips, bad = find_clips(manifest)
    assert [(c.id, c.text, c.split) for c in clips] == [("c0", f"{QAALA} {INNA}", "train")]
    assert [str(b) for b in bad] == [
        f"{manifest}, row 3: 5 cells, the header has 4; remove the extra cells",
        f"{manifest}, row 4: video {tmp_path / 'missing.npy'} not found",
        f"{manifest}, row 5: id 'c0' is repeated",
    ]


def test_invisible_formatting_characters_are_removed_with_one_warning(tmp_path: Path, tok: Tokenizer) -> None:
    """Direction marks after copying from a right-to-left editor, a joiner, a BOM pasted inside the file."""
    root = tmp_path / "d"
    write_clip(root, "00001", frames(8), [QAALA + RLM, LRM + INNA])
    write_clip(root, "00002", frames(8, seed=2), [BOM + QAALA[:2] + ZWJ + QAALA[2:] + ALM])
    (root / "00003.npy").write_bytes((root / "00002.npy").read_bytes())
    (root / "00003.csv").write_text(f"word\n\u2067{INNA}\u2069\n", encoding="utf-8")
    logs: list[str] = []
    cfg = config(root, tmp_path)
    ds = load_dataset(cfg, tok, log=logs.append)
    assert ds.targets == [[68, 210, 54, 215, 32], [68, 210, 54], [215, 32]]
    assert ds.texts == [f"{QAALA} {INNA}", QAALA, INNA]
    warnings = [line for line in logs if line.startswith("warning:")]
    assert warnings == [
        "warning: removed 7 invisible formatting characters from the labels (U+200F 1x, U+200E 1x, U+FEFF 1x, "
        f"U+200D 1x, U+061C 1x, U+2067 1x, U+2069 1x; the first at {root / '00001.csv'}, row 2); "
        "they draw nothing and are not tokens"
    ]
    again: list[str] = []
    load_dataset(cfg, tok, log=again.append)
    assert not again  # the warning belongs to the dataset: printed when its cache is built, not by every run


def test_tatweel_stays_an_error(tmp_path: Path, tok: Tokenizer) -> None:
    write_clip(tmp_path / "d", "00001", frames(8), [QAALA + TATWEEL])
    with pytest.raises(DataError, match="U\\+0640"):
        load_dataset(config(tmp_path / "d", tmp_path), tok, log=lambda _: None)


# --------------------------------------------------------------------------- CTC: frames enough for the label


def test_ctc_min_frames_is_where_ctc_loss_turns_infinite() -> None:
    for ids in ([5, 6, 7], [5, 5, 6], [5, 5, 5, 2, 2], [9, 9]):
        need = ctc_min_frames(ids)
        targets = torch.tensor([ids])
        for t, finite in [(need, True), (need - 1, False)]:
            log_probs = torch.randn(t, 1, 10).log_softmax(-1)  # (T, B, V)
            loss = torch.nn.functional.ctc_loss(log_probs, targets, torch.tensor([t]), torch.tensor([len(ids)]))
            assert torch.isfinite(loss).item() == finite, (ids, t)
    assert ctc_min_frames([5, 5, 6]) == 4


def test_a_clip_shorter_than_its_label_is_a_bad_clip(tmp_path: Path, tok: Tokenizer) -> None:
    root = tmp_path / "d"
    for k in range(3):
        write_clip(root, f"ok{k}", frames(8, seed=k), [QAALA, INNA])
    write_clip(root, "short", frames(4), [QAALA, INNA])  # 5 tokens, 4 frames
    mama = "\u0645\u064e\u0645\u064e"  # مَمَ: the same token twice, so CTC needs a blank between them
    write_clip(root, "repeat", frames(2), [mama])
    with pytest.raises(DataError) as e:
        load_dataset(config(root, tmp_path), tok, log=lambda _: None)
    message = str(e.value)
    assert "2 bad clips" in message
    assert f"{root / 'short.npy'}: 4 frames, too few for its label: CTC needs at least 5 (5 tokens)" in message
    assert f"{root / 'repeat.npy'}: 2 frames, too few for its label: CTC needs at least 3 " in message
    assert "(2 tokens and 1 blank between equal neighbours)" in message

    logs: list[str] = []
    ds = load_dataset(config(root, tmp_path, skip_bad=True), tok, log=logs.append)
    assert ds.ids == ["ok0", "ok1", "ok2"] and len(ds.skipped) == 2
    assert any(line.startswith("skipping 2 bad clips (data.skip_bad=true):") for line in logs)
    again: list[str] = []
    load_dataset(config(root, tmp_path, skip_bad=True), tok, log=again.append)
    assert again == [f"skipping 2 bad clips (data.skip_bad=true); `data check {root}` lists them"]
