"""Beam search, CTC prefix scoring and greedy decoding: parity with ESPnet's BatchBeamSearch on auto_avsr's model."""

from __future__ import annotations

import functools
import itertools
import json
import math
from pathlib import Path

import editdistance
import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from click.testing import CliRunner

from launch.cli import cli
from trainer.config import (
    DataConfig,
    DecodeConfig,
    DecoderConfig,
    EncoderConfig,
    FrontendConfig,
    ModelConfig,
    load_config,
    to_dict,
)
from trainer.ctc_prefix import LOGZERO, CTCPrefixScorer
from trainer.decoding import att_greedy, ctc_greedy, decode
from trainer.errors import CheckpointError, ConfigError
from trainer.model import LipReader
from trainer.model.decoder import TransformerDecoder
from trainer.search import Hypothesis, SearchOptions, beam_search
from trainer.text import Tokenizer

EOS = 227


@functools.cache
def load_reference(reference_dir: Path) -> tuple[dict, dict, LipReader]:
    """expected.json, tensors.pt and auto_avsr's small model in `LipReader` (read once)."""
    small = reference_dir / "auto_avsr_small"
    expected = json.loads((small / "expected.json").read_text())
    tensors = torch.load(small / "tensors.pt", weights_only=True)
    c = expected["config"]
    cfg = ModelConfig(
        frontend=FrontendConfig(c["frontend_widths"]),
        encoder=EncoderConfig(c["adim"], c["aheads"], c["eunits"], c["elayers"], c["cnn_module_kernel"]),
        decoder=DecoderConfig(c["ddim"], c["dheads"], c["dunits"], c["dlayers"]),
        ctc_weight=c["ctc_weight"],
    )
    model = LipReader(cfg, c["odim"])
    model.load_state_dict(torch.load(small / "model.pth", weights_only=True))
    return expected, tensors, model.eval()


@pytest.fixture
def reference(reference_dir: Path) -> tuple[dict, dict, TransformerDecoder]:
    """expected.json, tensors.pt and the reference model's decoder."""
    expected, tensors, model = load_reference(reference_dir)
    return expected, tensors, model.decoder


def setting_id(setting: dict) -> str:
    return f"beam{setting['beam_size']}-ctc{setting['ctc_weight']}-pen{setting.get('penalty', 0)}"


def options_of(setting: dict, **kw) -> SearchOptions:
    return SearchOptions(setting["beam_size"], setting["ctc_weight"], setting.get("penalty", 0.0), nbest=5, **kw)


def padded(tensors: dict, prefix: str, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Utterances `idx` of `prefix.i` as one zero-padded batch (B, T, ...) and their lengths."""
    items = [tensors[f"{prefix}.{i}"] for i in idx]
    return torch.nn.utils.rnn.pad_sequence(items, batch_first=True), torch.tensor([len(x) for x in items])


def search(decoder, tensors: dict, idx: list[int], options: SearchOptions) -> list[list[Hypothesis]]:
    memory, lengths = padded(tensors, "encoder", idx)
    logp, _ = padded(tensors, "ctc_logp", idx)
    return beam_search(decoder, memory, lengths, logp, options, eos=EOS)


def assert_same_nbest(got: list[Hypothesis], want: list[dict], tol: float = 1e-3) -> None:
    assert [h.yseq for h in got] == [w["yseq"] for w in want]
    for h, w in zip(got, want, strict=True):
        assert h.score == pytest.approx(w["score"], abs=tol)
        assert h.scores.keys() == w["scores"].keys()
        for k in w["scores"]:
            assert h.scores[k] == pytest.approx(w["scores"][k], abs=tol)


# --------------------------------------------------------------------------- parity with ESPnet


def test_ctc_only_parity_needs_no_decoder(reference_dir: Path) -> None:
    """ctc_weight 1: the search depends on the CTC log-probs alone (the decoder is not run)."""
    expected, tensors, _ = load_reference(reference_dir)
    setting = next(s for s in expected["decode"] if s["ctc_weight"] == 1.0)
    for i, want in enumerate(setting["nbest"]):
        logp = tensors[f"ctc_logp.{i}"][None]
        got = beam_search(None, None, torch.tensor([logp.size(1)]), logp, options_of(setting), eos=EOS)[0]
        assert_same_nbest(got, want)


def reference_settings() -> list:
    path = Path(__file__).resolve().parents[1].parent / "shared/reference/auto_avsr_small/expected.json"
    if not path.exists():
        return [pytest.param(None, id="no-reference")]
    return [pytest.param(s, id=setting_id(s)) for s in json.loads(path.read_text())["decode"]]


@pytest.mark.parametrize("setting", reference_settings())
def test_reference_nbest_parity(reference, setting: dict) -> None:
    """Each utterance decoded alone: ESPnet's n-best (yseq, order, total and per-part scores)."""
    _, tensors, decoder = reference
    for i, want in enumerate(setting["nbest"]):
        assert_same_nbest(search(decoder, tensors, [i], options_of(setting))[0], want)


@pytest.mark.parametrize("setting_index", [1, 5])
def test_padded_batch_equals_one_by_one(reference, setting_index: int) -> None:
    """All utterances as one padded batch (29, 33, 38 frames) give ESPnet's n-best, as one by one."""
    expected, tensors, decoder = reference
    setting = expected["decode"][setting_index]
    order = [2, 0, 1]  # longest first, so that the others are padded
    batched = search(decoder, tensors, order, options_of(setting))
    for got, i in zip(batched, order, strict=True):
        assert_same_nbest(got, setting["nbest"][i], tol=1e-4)


def test_model_end_to_end_from_video(reference_dir: Path) -> None:
    """`decode` on the model's own encoding of the padded videos: ESPnet's n-best for the user's setting."""
    expected, tensors, model = load_reference(reference_dir)
    setting = next(s for s in expected["decode"] if s["beam_size"] == 40)
    norm = expected["normalize"]
    video, lengths = padded(tensors, "video", [0, 1, 2])
    video = ((video.float() / 255 - norm["mean"]) / norm["std"])[:, :, None]  # (B, T, 1, H, W)
    with torch.no_grad():
        enc, enc_lengths = model.encode(video, lengths)
    for got, want in zip(decode(model, enc, enc_lengths, options_of(setting)), setting["nbest"], strict=True):
        assert_same_nbest(got, want)
    greedy = decode(model, enc, enc_lengths, options_of(setting), method="ctc_greedy")
    assert [g[0].token_ids for g in greedy] == [
        collapse(tensors[f"ctc_logp.{i}"].argmax(-1).tolist()) for i in range(3)
    ]


def test_scores_are_independent_of_the_search(reference) -> None:
    """Per-part scores of ended hypotheses: the decoder's teacher-forced log-prob, torch's CTC loss, the length."""
    expected, tensors, decoder = reference
    setting = expected["decode"][5]  # beam 8, ctc 0.2, penalty 0.5
    hyps = search(decoder, tensors, [1], options_of(setting))[0]
    memory, logp = tensors["encoder.1"][None], tensors["ctc_logp.1"][None]
    for h in hyps:
        if h.yseq[-2] == EOS:  # forced at the length limit: not a complete CTC sequence
            continue
        ys = torch.tensor(h.yseq)
        dec = torch.log_softmax(decoder(ys[None, :-1], memory, torch.tensor([memory.size(1)])), -1)[0]
        assert h.scores["decoder"] == pytest.approx(dec.gather(1, ys[1:, None]).sum().item(), abs=1e-3)
        ctc = -F.ctc_loss(logp[0], ys[1:-1], torch.tensor([logp.size(1)]), torch.tensor([len(ys) - 2]), reduction="sum")
        assert h.scores["ctc"] == pytest.approx(ctc.item(), abs=1e-3)
        assert h.scores["length_bonus"] == len(h.yseq) - 1
        total = 0.8 * h.scores["decoder"] + 0.2 * h.scores["ctc"] + 0.5 * h.scores["length_bonus"]
        assert h.score == pytest.approx(total, abs=1e-3)


# --------------------------------------------------------------------------- CTC prefix scorer


def brute_force_prefix_probability(logp: torch.Tensor, prefix: list[int], complete: bool) -> float:
    """Sum of the probabilities of every frame path whose collapsed labels start with `prefix` (or equal it)."""
    frames, vocab = logp.shape
    total = 0.0
    for path in itertools.product(range(vocab), repeat=frames):
        labels = collapse(list(path))
        if labels == prefix or (not complete and labels[: len(prefix)] == prefix):
            total += math.exp(sum(logp[t, k].item() for t, k in enumerate(path)))
    return math.log(total) if total > 0 else -math.inf


@pytest.mark.parametrize("prefix", [[], [1], [2, 1], [1, 1]])
def test_ctc_prefix_scores_equal_brute_force(prefix: list[int]) -> None:
    """psi of every one-token extension (for eos: of the prefix as a whole) from all 4^5 frame paths."""
    torch.manual_seed(4)
    vocab, eos, frames = 4, 3, 5
    logp = torch.log_softmax(torch.randn(2, 7, vocab) * 2, -1)  # utterance 1 has 5 frames, padded to 7
    scorer = CTCPrefixScorer.from_log_probs(logp, torch.tensor([7, frames]), blank=0, eos=eos)
    state, last = scorer.initial_state(), torch.tensor([eos, eos])
    for i, token in enumerate(prefix):
        psi = scorer.score(state, last, i)
        tokens = torch.tensor([token, token])
        state = scorer.extend(state, torch.arange(2), tokens, last, psi[torch.arange(2), tokens], i)
        last = tokens
    psi = scorer.score(state, last, len(prefix))[1]  # (V,) of the 5-frame utterance
    for c in range(1, vocab):
        want = brute_force_prefix_probability(logp[1, :frames], prefix if c == eos else [*prefix, c], c == eos)
        assert psi[c].item() == pytest.approx(want, abs=1e-4)
    assert psi[0].item() == LOGZERO  # blank is never a token


@pytest.mark.parametrize("output_length", [0, 2])
def test_ctc_prefix_scores_of_candidates_equal_the_full_scores(output_length: int) -> None:
    """score(..., tokens) is score(...) gathered at the candidates: repeats, eos, blank and duplicates included."""
    torch.manual_seed(5)
    vocab, eos = 6, 5
    logp = torch.log_softmax(torch.randn(2, 8, vocab) * 2, -1)
    scorer = CTCPrefixScorer.from_log_probs(logp, torch.tensor([8, 6]), blank=0, eos=eos)
    state, last = scorer.initial_state().select(torch.tensor([0, 0, 1, 1])), torch.full((4,), eos)
    for i in range(output_length):
        tokens = torch.tensor([1, 2, 3, 1])
        psi = scorer.score(state, last, i)
        state = scorer.extend(state, torch.arange(4), tokens, last, psi[torch.arange(4), tokens], i)
        last = tokens
    cands = torch.tensor([[1, eos, 0], [2, 2, 4], [eos, 3, 1], [0, 1, 3]])  # (N, C)
    full = scorer.score(state, last, output_length)  # (N, V)
    torch.testing.assert_close(scorer.score(state, last, output_length, cands), full.gather(1, cands), rtol=0, atol=0)


# --------------------------------------------------------------------------- greedy decoders


def collapse(path: list[int], blank: int = 0) -> list[int]:
    return [t for t, _ in itertools.groupby(path) if t != blank]


def test_ctc_greedy_is_collapsed_argmax(reference_dir: Path) -> None:
    _, tensors, _ = load_reference(reference_dir)
    logp, lengths = padded(tensors, "ctc_logp", [0, 1, 2])
    got = ctc_greedy(logp, lengths)
    for i, hyp in enumerate(got):
        ref = tensors[f"ctc_logp.{i}"]
        assert hyp.token_ids == collapse(ref.argmax(-1).tolist())
        assert hyp.yseq == [EOS, *hyp.token_ids, EOS]
        assert hyp.score == pytest.approx(ref.max(-1).values.sum().item(), abs=1e-3)


def test_ctc_greedy_collapses_repeats_only_without_blank_between() -> None:
    path = [0, 3, 3, 0, 3, 5, 5, 0, 0, 2, 7]
    logp = torch.log_softmax(F.one_hot(torch.tensor(path), 8).float() * 10, -1)[None]
    got = ctc_greedy(logp, torch.tensor([9]))  # the last two frames are padding
    assert got[0].token_ids == [3, 3, 5]


def test_beam_one_without_ctc_is_attention_greedy(reference) -> None:
    _, tensors, decoder = reference
    memory, lengths = padded(tensors, "encoder", [0, 1, 2])
    greedy = att_greedy(decoder, memory, lengths, eos=EOS)
    beam = beam_search(decoder, memory, lengths, None, SearchOptions(beam_size=1, ctc_weight=0.0), eos=EOS)
    assert [h.yseq for h in greedy] == [b[0].yseq for b in beam]
    assert [h.score for h in greedy] == pytest.approx([b[0].score for b in beam], abs=1e-4)


def random_model(seed: int = 0, odim: int = 12, dim: int = 16) -> TransformerDecoder:
    torch.manual_seed(seed)
    decoder = TransformerDecoder(odim, dim, 2, 32, 2, dropout=0.0).eval()
    with torch.no_grad():
        decoder.output_layer.weight.mul_(8)  # peaked, so the search is not flat
    return decoder


def test_beam_one_is_greedy_on_random_models_that_run_to_the_limit() -> None:
    decoder = random_model()
    torch.manual_seed(1)
    memory, lengths = torch.randn(4, 7, 16), torch.tensor([7, 5, 2, 1])
    greedy = att_greedy(decoder, memory, lengths, eos=11)
    beam = beam_search(decoder, memory, lengths, None, SearchOptions(beam_size=1, ctc_weight=0.0), eos=11)
    assert [h.yseq for h in greedy] == [b[0].yseq for b in beam]
    assert any(len(h.yseq) == n + 2 for h, n in zip(greedy, lengths.tolist(), strict=True))  # some cut at the limit


# --------------------------------------------------------------------------- limits and edge cases


def test_empty_hypothesis(reference) -> None:
    """Without CTC the reference decoder prefers eos at once: yseq [sos, eos], no tokens."""
    expected, tensors, decoder = reference
    best = search(decoder, tensors, [0], options_of(expected["decode"][4]))[0][0]
    assert best.yseq == [EOS, EOS] and best.token_ids == []


def test_min_len_ratio_blocks_early_eos(reference) -> None:
    expected, tensors, decoder = reference
    hyps = search(decoder, tensors, [0], options_of(expected["decode"][4], min_len_ratio=0.1))[0]  # 29 frames: 2 tokens
    assert hyps and all(len(h.token_ids) >= 2 for h in hyps)


def test_max_length_forces_an_unscored_eos(reference) -> None:
    """max_len_ratio 0.1 of 29 frames: 2 steps; every hypothesis is cut there, eos appended with no score."""
    expected, tensors, decoder = reference
    setting = expected["decode"][5]
    hyps = search(decoder, tensors, [0], options_of(setting, max_len_ratio=0.1))[0]
    assert len(hyps) == 5
    for h in hyps:
        assert len(h.yseq) in (2, 4) and h.yseq[-1] == EOS  # ended by eos at step 0, or cut after step 1
        assert h.scores["length_bonus"] == len(h.yseq) - 1 - (len(h.yseq) == 4)
        total = 0.8 * h.scores["decoder"] + 0.2 * h.scores["ctc"] + 0.5 * h.scores["length_bonus"]
        assert h.score == pytest.approx(total, abs=1e-4)


def test_one_frame_utterances() -> None:
    """One encoder frame: a single step, every hypothesis cut after it; CTC of one token is its frame log-prob."""
    torch.manual_seed(0)
    logp = torch.log_softmax(torch.randn(2, 1, 12) * 3, -1)
    hyps = beam_search(
        None, None, torch.tensor([1, 1]), logp, SearchOptions(beam_size=4, ctc_weight=1.0, nbest=4), eos=11
    )
    for b, nbest in enumerate(hyps):
        assert len(nbest) == 4
        for h in nbest:
            assert len(h.yseq) == 3
            tok = h.yseq[1]
            expected = logp[b, 0, 0] if tok == 11 else logp[b, 0, tok]  # eos: the all-blank path
            assert h.score == pytest.approx(expected.item(), abs=1e-5)
            assert tok != 0  # blank is never a token


def test_batch_with_one_frame_and_long_utterances_equals_one_by_one() -> None:
    decoder = random_model(odim=12)
    torch.manual_seed(2)
    memory = torch.randn(3, 9, 16)
    logp = torch.log_softmax(torch.randn(3, 9, 12) * 2, -1)
    lengths = torch.tensor([9, 1, 6])
    options = SearchOptions(beam_size=5, ctc_weight=0.3, penalty=0.2, nbest=3)
    batched = beam_search(decoder, memory, lengths, logp, options, eos=11)
    for b, n in enumerate(lengths.tolist()):
        alone = beam_search(decoder, memory[b : b + 1, :n], lengths[b : b + 1], logp[b : b + 1, :n], options, eos=11)[0]
        assert [h.yseq for h in batched[b]] == [h.yseq for h in alone]
        assert [h.score for h in batched[b]] == pytest.approx([h.score for h in alone], abs=1e-4)


def test_beam_larger_than_vocabulary_is_refused() -> None:
    logp = torch.log_softmax(torch.randn(1, 5, 12), -1)
    with pytest.raises(ValueError, match="beam_size 13 is larger than the vocabulary"):
        beam_search(None, None, torch.tensor([5]), logp, SearchOptions(beam_size=13, ctc_weight=1.0), eos=11)


def test_beam_equal_to_vocabulary_works() -> None:
    torch.manual_seed(3)
    logp = torch.log_softmax(torch.randn(1, 6, 12) * 3, -1)
    hyps = beam_search(
        None, None, torch.tensor([6]), logp, SearchOptions(beam_size=12, ctc_weight=1.0, nbest=50), eos=11
    )[0]
    assert hyps and all(math.isfinite(h.score) for h in hyps)
    assert [h.score for h in hyps] == sorted((h.score for h in hyps), reverse=True)


def test_zero_length_utterance_is_refused() -> None:
    logp = torch.log_softmax(torch.randn(2, 5, 12), -1)
    with pytest.raises(ValueError, match="at least one encoder frame"):
        beam_search(None, None, torch.tensor([5, 0]), logp, SearchOptions(beam_size=2, ctc_weight=1.0), eos=11)


def test_missing_scorer_inputs_are_refused() -> None:
    logp = torch.log_softmax(torch.randn(1, 5, 12), -1)
    with pytest.raises(ValueError, match="needs the decoder"):
        beam_search(None, None, torch.tensor([5]), logp, SearchOptions(beam_size=2, ctc_weight=0.5), eos=11)


# --------------------------------------------------------------------------- options and hypotheses


def test_options_from_config_and_validation() -> None:
    cfg = DecodeConfig(beam_size=7, ctc_weight=0.3, penalty=0.5, max_len_ratio=0.5, min_len_ratio=0.1, nbest=3)
    options = SearchOptions.from_config(cfg)
    assert (options.beam_size, options.ctc_weight, options.penalty, options.nbest) == (7, 0.3, 0.5, 3)
    assert (options.max_len_ratio, options.min_len_ratio, options.pre_beam_size) == (0.5, 0.1, 10)
    assert options.parts == ("decoder", "ctc", "length_bonus")
    assert SearchOptions(ctc_weight=1.0).parts == ("ctc",)
    for bad in ({"beam_size": 0}, {"ctc_weight": 1.5}, {"max_len_ratio": -1.0}, {"nbest": 0}):
        with pytest.raises(ValueError):
            SearchOptions(**bad)


@pytest.mark.parametrize(
    ("yseq", "tokens"), [([9, 9], []), ([9, 3, 9], [3]), ([9, 3, 4, 9, 9], [3, 4]), ([9, 0, 3, 9], [0, 3])]
)
def test_token_ids_strip_sos_and_eos(yseq: list[int], tokens: list[int]) -> None:
    assert Hypothesis(yseq, 0.0, {}).token_ids == tokens


# --------------------------------------------------------------------------- the eval command


def write_clips(folder: Path, videos: list[torch.Tensor], labels: list[list[int]]) -> None:
    """Clips in the user's format: NNNNN.npy (T, H, W) uint8 and NNNNN.csv with a `word` header."""
    tokenizer = Tokenizer.from_config(DataConfig())
    folder.mkdir(parents=True, exist_ok=True)
    for i, (video, ids) in enumerate(zip(videos, labels, strict=True)):
        np.save(folder / f"{i:05d}.npy", video.numpy())
        (folder / f"{i:05d}.csv").write_text("word\n" + tokenizer.decode(ids) + "\n", encoding="utf-8")


def run_cli(*args: str):
    result = CliRunner().invoke(cli, list(args), catch_exceptions=True)
    return result


def test_eval_reference_checkpoint_end_to_end(reference_dir: Path, tmp_path: Path) -> None:
    """auto_avsr's checkpoint and its 88 x 88 clips through `eval`: the reference best hypotheses, unresized."""
    expected, tensors, _ = load_reference(reference_dir)
    c = expected["config"]
    write_clips(tmp_path / "clips", [tensors[f"video.{i}"] for i in range(3)], expected["targets"])
    cfg = tmp_path / "ref.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "model": {
                    "frontend": {"widths": c["frontend_widths"]},
                    "encoder": {
                        "dim": c["adim"],
                        "heads": c["aheads"],
                        "ffn_dim": c["eunits"],
                        "layers": c["elayers"],
                        "kernel_size": c["cnn_module_kernel"],
                    },
                    "decoder": {"dim": c["ddim"], "heads": c["dheads"], "ffn_dim": c["dunits"], "layers": c["dlayers"]},
                },
                "train": {"device": "cpu"},
            }
        )
    )
    out = tmp_path / "preds.jsonl"
    result = run_cli(
        "eval", "--checkpoint", str(reference_dir / "auto_avsr_small" / "model.pth"), "--config", str(cfg),
        "--data", str(tmp_path / "clips"), "--split", "all", "--output", str(out), "--quiet",
        "decode.beam_size=40", "decode.ctc_weight=0.1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "already cropped" in result.output
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    setting = next(s for s in expected["decode"] if s["beam_size"] == 40)
    tokenizer = Tokenizer.from_config(DataConfig())
    assert [r["id"] for r in rows] == ["00000", "00001", "00002"]
    for row, nbest, target in zip(rows, setting["nbest"], expected["targets"], strict=True):
        assert row["hyp_ids"] == nbest[0]["yseq"][1:-1]
        assert row["score"] == pytest.approx(nbest[0]["score"], abs=1e-3)
        assert row["hyp"] == tokenizer.decode(row["hyp_ids"]) and row["ref"] == tokenizer.decode(target)
        assert row["cer"] == pytest.approx(editdistance.eval(target, row["hyp_ids"]) / len(target))
    total = sum(editdistance.eval(t, r["hyp_ids"]) for t, r in zip(expected["targets"], rows, strict=True))
    assert f"{'cer':<15}{total / sum(map(len, expected['targets'])):.4f}" in result.output


@pytest.fixture
def project_checkpoint(tmp_path: Path) -> tuple[Path, Path]:
    """A lipsweep checkpoint (tiny random model, its config saved) and 10 random 112 x 112 clips."""
    torch.manual_seed(0)
    videos = [torch.randint(0, 256, (n, 112, 112), dtype=torch.uint8) for n in range(29, 39)]
    labels = [torch.randint(1, 227, (int(torch.randint(6, 12, ())),)).tolist() for _ in videos]
    write_clips(tmp_path / "clips", videos, labels)
    cfg = load_config("configs/small.yaml", ["model.encoder.layers=1", "model.decoder.layers=1", "train.device=cpu"])
    model = LipReader(cfg.model, 228)
    path = tmp_path / "best.pt"
    torch.save({"model": model.state_dict(), "config": to_dict(cfg), "epoch": 3}, path)
    return path, tmp_path / "clips"


@pytest.mark.parametrize("method", ["beam", "ctc_greedy", "att_greedy"])
def test_eval_project_checkpoint_uses_its_saved_config(project_checkpoint, tmp_path: Path, method: str) -> None:
    checkpoint, clips = project_checkpoint
    out = tmp_path / "val.jsonl"
    result = run_cli(
        "eval", "--checkpoint", str(checkpoint), "--data", str(clips), "--decoder", method,
        "--output", str(out), "--quiet", "data.val_ratio=0.3", "decode.beam_size=3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output + repr(result.exception)
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 3  # 30% of 10 clips
    for row in rows:
        assert set(row) == {"id", "frames", "ref", "hyp", "edits", "ref_tokens", "ctc_hyp", "ctc_edits", "cer", "score",
                            "ref_ids", "hyp_ids", "ctc_ids"}  # fmt: skip
        assert all(1 <= i <= 226 for i in row["hyp_ids"])
    for key in ("cer", "letter_er", "diacritic_er"):
        assert key in result.output


def test_eval_of_an_imported_checkpoint_needs_its_config(project_checkpoint, tmp_path: Path) -> None:
    checkpoint, clips = project_checkpoint
    plain = tmp_path / "plain.pth"
    torch.save(torch.load(checkpoint, weights_only=True)["model"], plain)
    result = run_cli("eval", "--checkpoint", str(plain), "--data", str(clips), "--quiet")
    assert isinstance(result.exception, ConfigError) and "--config" in str(result.exception)
    result = run_cli(
        "eval", "--checkpoint", str(plain), "--config", "configs/small.yaml", "--data", str(clips), "--quiet"
    )
    assert isinstance(result.exception, CheckpointError)  # small.yaml has 2 encoder blocks, the checkpoint 1
