"""Synthetic clips: the user's file format, label statistics, determinism, and frames that follow the tokens."""

from __future__ import annotations

import itertools
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from click.testing import CliRunner

from launch.synth import synth_command
from trainer import progress
from trainer import synthetic as S
from trainer.text import Tokenizer, split_token

TOKENS = S.load_vocab()
WEIGHTS = S.token_weights(TOKENS)
TOKENIZER = Tokenizer.from_file(S.VOCAB)
MIN, MAX = S.MIN_FRAMES, S.MAX_FRAMES


def decode(path: Path) -> tuple[np.ndarray, av.video.stream.VideoStream]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = np.stack([f.to_ndarray(format="gray") for f in container.decode(stream)])
        return frames, stream


def read_csv(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "word"
    return lines[1:]


@pytest.fixture(scope="module")
def mp4_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("synth_mp4")
    S.write_dataset(out, 4, seed=3)
    return out


def test_mp4_files_in_the_users_format(mp4_dir: Path):
    assert sorted(p.name for p in mp4_dir.iterdir()) == [f"0000{i}.{e}" for i in range(4) for e in ("csv", "mp4")]
    for i in range(4):
        frames, stream = decode(mp4_dir / f"0000{i}.mp4")
        assert MIN <= len(frames) <= MAX and frames.shape[1:] == (112, 112) and frames.dtype == np.uint8
        assert stream.codec_context.name == "h264" and stream.format.name == "yuv420p"
        assert stream.average_rate == Fraction(25)
        words = read_csv(mp4_dir / f"0000{i}.csv")
        assert 2 <= len(words) <= 6 and all(words)
        ids = TOKENIZER.encode(" ".join(words), where=f"0000{i}.csv")
        assert 6 <= len(ids) <= 24


def test_npy_matches_generated_frames_and_mp4_is_close(tmp_path: Path, mp4_dir: Path):
    S.write_dataset(tmp_path, 2, seed=3, fmt="npy")
    for i in range(2):
        arr = np.load(tmp_path / f"0000{i}.npy")
        clip = S.make_clip(np.random.default_rng([3, i]), TOKENS, WEIGHTS)
        assert np.array_equal(arr, clip.frames)
        assert read_csv(tmp_path / f"0000{i}.csv") == clip.text
        frames, _ = decode(mp4_dir / f"0000{i}.mp4")
        assert frames.shape == arr.shape
        assert np.abs(frames.astype(float) - arr).mean() < 4.0, "H.264 must keep the picture (crf 18)"


def test_deterministic_for_a_seed_and_prefix_stable(tmp_path: Path):
    a, b, c = (tmp_path / n for n in "abc")
    S.write_dataset(a, 3, seed=1, fmt="npy")
    S.write_dataset(b, 2, seed=1, fmt="npy")
    S.write_dataset(c, 2, seed=2, fmt="npy")
    for i in range(2):
        name = f"0000{i}"
        assert np.array_equal(np.load(a / f"{name}.npy"), np.load(b / f"{name}.npy"))
        assert (a / f"{name}.csv").read_bytes() == (b / f"{name}.csv").read_bytes()
        assert (a / f"{name}.csv").read_bytes() != (c / f"{name}.csv").read_bytes()


def test_labels_round_trip_with_the_tokenizer_and_lengths_in_range():
    lengths, n_words = [], []
    for i in range(400):
        words = S.sample_words(np.random.default_rng([0, i]), TOKENS, WEIGHTS)
        tokens = [t for w in words for t in w]
        ids = TOKENIZER.encode(" ".join("".join(w) for w in words))
        assert ids == [TOKENS.index(t) + 1 for t in tokens]
        assert TOKENIZER.decode(ids) == "".join(tokens)
        assert all(1 <= i <= 226 for i in ids)
        lengths.append(len(ids))
        n_words.append(len(words))
        assert all(len(w) >= 2 for w in words)
        assert all(t != S.ARTICLE[0] or j == 0 for w in words for j, t in enumerate(w)), "wasla only starts a word"
    assert min(lengths) >= 6 and max(lengths) <= 24 and 12.5 < np.mean(lengths) < 16
    assert set(n_words) <= set(range(2, 7)) and len(set(n_words)) >= 4


def test_token_frequencies_follow_the_histogram():
    counts = {t: 0 for t in TOKENS}
    for i in range(300):
        for w in S.sample_words(np.random.default_rng([9, i]), TOKENS, WEIGHTS):
            for t in w:
                counts[t] += 1
    ranked = sorted(counts, key=counts.get, reverse=True)
    assert {"ا", "ٱ", "لْ"} <= set(ranked[:6]), ranked[:6]
    assert sum(v > 0 for v in counts.values()) > 150, "smoothing must let rare tokens appear"


def pure_image(token: str) -> list[np.ndarray]:
    """The token's key shapes rendered with one fixed head pose, lighting and noise."""
    return [S.render(k[None], np.random.default_rng(0))[0].astype(float) for k in S.articulation(token).keys]


def test_different_tokens_give_different_mouths_and_visemes_are_shared():
    images = {t: pure_image(t) for t in TOKENS}
    shared = 0
    for a, b in itertools.combinations(TOKENS, 2):
        same_shape = len(images[a]) == len(images[b]) and all(
            np.array_equal(x, y) for x, y in zip(images[a], images[b], strict=True)
        )
        if same_shape and S.articulation(a).hold == S.articulation(b).hold:
            shared += 1
            la, lb = split_token(a), split_token(b)
            assert la[1] == lb[1], f"{a} and {b} share a shape but not their marks"
            assert any(la[0] in g and lb[0] in g for g, _, _ in S._PLACES), f"{a}, {b}: not one viseme"
    assert 0 < shared < 40, f"{shared} token pairs share a shape"
    # the mark changes the mouth: fatha, kasra, damma, sukun of one letter all differ visibly
    for letter in "لرنسدعقه":
        imgs = [pure_image(letter + m)[0] for m in (S.FATHA, S.KASRA, S.DAMMA, S.SUKUN)]
        for x, y in itertools.combinations(imgs, 2):
            assert np.abs(x - y).mean() > 0.5


@pytest.mark.parametrize("n_frames,n_tokens", [(29, 24), (38, 6), (31, 15), (29, 20)])
def test_every_token_peaks_on_its_own_frame_in_order(n_frames: int, n_tokens: int):
    rng = np.random.default_rng(n_frames * 100 + n_tokens)
    pool = ["لَ", "مُ", "سِ", "ا", "وْ", "نَّ", "بِ", "ي", "آ", "قُ"]  # holds (shadda, madda) included
    tokens = [str(t) for t in rng.choice(pool, n_tokens)]
    arts = [S.articulation(t) for t in tokens]
    params, peaks = S.timeline(arts, n_frames, rng)
    assert params.shape == (n_frames, len(S.SHAPE_DIMS))
    assert peaks.shape == (n_tokens,) and (np.diff(peaks) >= 1).all() and peaks[0] >= 0 and peaks[-1] < n_frames
    for i, (a, t) in enumerate(zip(arts, peaks, strict=True)):
        mine = np.abs(params[t] - a.keys[0]).sum()
        for j in (i - 1, i + 1):
            if 0 <= j < n_tokens and not np.allclose(arts[j].keys[0], a.keys[0]):
                theirs = np.abs(params[t] - arts[j].keys[0]).sum()
                assert mine < theirs, f"frame {t} shows token {j} ({tokens[j]}) more than token {i} ({tokens[i]})"


def test_tanween_adds_a_nasal_peak_when_frames_allow():
    arts = [S.articulation(t) for t in ["لَ", "رً", "سِ"]]
    params, peaks = S.timeline(arts, 30, np.random.default_rng(0))
    between = params[peaks[1] + 1 : peaks[2]]  # frames after the vowel's peak, before the next token's
    to_nasal = np.abs(between - S.NASAL).sum(1)
    to_vowel = np.abs(between - arts[1].keys[0]).sum(1)
    to_next = np.abs(between - arts[2].keys[0]).sum(1)
    assert ((to_nasal < to_vowel) & (to_nasal < to_next)).any(), "the nasal key must peak after the vowel"


def test_frames_follow_the_text():
    """Two clips drawn with the same head motion and noise but different tokens differ in the mouth."""
    a, _ = S.timeline([S.articulation(t) for t in ["مَ", "لُ", "سِ", "ا", "وْ", "بَ"]], 30, np.random.default_rng(0))
    b, _ = S.timeline([S.articulation(t) for t in ["لِ", "ي", "عَ", "قُ", "ٱ", "تْ"]], 30, np.random.default_rng(0))
    fa, fb = S.render(a, np.random.default_rng(1)), S.render(b, np.random.default_rng(1))
    assert np.abs(fa.astype(float) - fb).mean() > 1.0


def test_cli_writes_npy_with_progress(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(progress, "STATUS_EVERY", 0.0)  # without a terminal: a status line every STATUS_EVERY s
    result = CliRunner().invoke(
        synth_command, ["--out", str(tmp_path), "--clips", "2", "--seed", "5", "--format", "npy"]
    )
    assert result.exit_code == 0, result.output
    assert [line.split(",")[0] for line in result.stderr.splitlines()] == [
        "data synth: 1/2 clips",
        "data synth: 2/2 clips",
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["00000.csv", "00000.npy", "00001.csv", "00001.npy"]
    assert np.array_equal(
        np.load(tmp_path / "00001.npy"), S.make_clip(np.random.default_rng([5, 1]), TOKENS, WEIGHTS).frames
    )


def test_bad_arguments():
    with pytest.raises(ValueError, match="format"):
        S.write_dataset("unused", 1, fmt="avi")
    with pytest.raises(ValueError, match="fit"):
        S.timeline([S.articulation("لَ")] * 30, 29, np.random.default_rng(0))


def test_clips_load_through_the_data_pipeline(mp4_dir: Path, tmp_path: Path):
    """The project's loader finds every clip, reads its frames and labels with ids in 1..226 and 6..24 tokens."""
    from trainer.config import DataConfig
    from trainer.data import load_dataset, read_video

    cfg = DataConfig(root=str(mp4_dir), cache_dir=str(tmp_path / "cache"), val_ratio=0.0, test_ratio=0.0)
    ds = load_dataset(cfg, TOKENIZER, log=lambda msg: None)
    assert len(ds) == 4
    for i in range(4):
        video, targets = ds[i]
        assert np.array_equal(video, read_video(mp4_dir / f"0000{i}.mp4"))
        assert MIN <= len(video) <= MAX and 6 <= len(targets) <= 24 and all(1 <= t <= 226 for t in targets)
        assert targets == TOKENIZER.encode(" ".join(read_csv(mp4_dir / f"0000{i}.csv")))


def test_nuisance_off_makes_the_mouth_the_only_signal():
    params, _ = S.timeline([S.articulation(t) for t in ["لَ", "مُ", "سِ", "ا"]], 29, np.random.default_rng(0))
    off = S.Nuisance(motion=0, lighting=0, noise=0, speaker=0)
    a, b = S.render(params, np.random.default_rng(1), off), S.render(params, np.random.default_rng(2), off)
    assert np.array_equal(a, b), "with every nuisance off, frames depend on the mouth alone"
    c, d = S.render(params, np.random.default_rng(1)), S.render(params, np.random.default_rng(2))
    assert np.abs(c.astype(float) - d).mean() > 2.0, "default nuisances change head pose, lighting and noise"
