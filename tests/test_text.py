"""Tokenizer (canonical forms, ids, unknown reports) and the error rates."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from trainer.config import DataConfig
from trainer.errors import ConfigError, DataError
from trainer.text import (
    INVISIBLE,
    Tokenizer,
    canonical,
    cer,
    codepoints,
    diacritic_error_rate,
    letter_error_rate,
    strip_invisible,
    wer,
)

VOCAB = Path(__file__).resolve().parents[1] / "configs" / "vocab" / "vocab.json"
SHADDA, FATHA, KASRA, SUKUN = "\u0651", "\u064e", "\u0650", "\u0652"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_file(VOCAB)


def vocab_items() -> list[tuple[str, int]]:
    return list(json.loads(VOCAB.read_text(encoding="utf-8")).items())


def test_ids_and_sizes(tok: Tokenizer) -> None:
    assert (tok.blank, tok.sos, tok.eos, tok.vocab_size) == (0, 227, 227, 228)
    assert tok.unk is None and tok.separator is None
    both = Tokenizer.from_file(VOCAB, unknown_to_unk=True, word_separator=True)
    assert (both.unk, both.separator, both.sos, both.vocab_size) == (227, 228, 229, 230)
    cfg_tok = Tokenizer.from_config(DataConfig(word_separator=True))
    assert (cfg_tok.unk, cfg_tok.separator, cfg_tok.eos) == (None, 227, 228)


def test_round_trip_every_token_in_every_spelling(tok: Tokenizer) -> None:
    items = vocab_items()
    assert len(items) == 226
    for token, i in items:
        base, marks = token[0], token[1:]
        spellings = {
            token,
            base + marks[::-1],  # vowel before shadda (and back)
            unicodedata.normalize("NFC", token),  # precomposed letters, Unicode mark order
            unicodedata.normalize("NFD", token),  # أ -> ا + hamza above, etc.
            unicodedata.normalize("NFD", base) + marks[::-1],
        }
        for s in spellings:
            assert tok.encode(s) == [i], (token, codepoints(s))
        assert tok.decode([i]) == token  # the vocabulary's own spelling, shadda first
    ids = [i for _, i in items]
    assert tok.decode(tok.encode(tok.decode(ids))) == tok.decode(ids)


def test_mark_order_and_precomposition_are_one_token(tok: Tokenizer) -> None:
    # يِّ is spelled ي + shadda + kasra in the vocabulary (id 4); NFC would write kasra first.
    assert tok.encode("\u064a" + SHADDA + KASRA) == tok.encode("\u064a" + KASRA + SHADDA) == [4]
    # أَ (id 221): precomposed U+0623 or alef + hamza above U+0654, with the fatha before or after the hamza.
    assert (
        tok.encode("\u0623" + FATHA)
        == tok.encode("\u0627\u0654" + FATHA)
        == tok.encode("\u0627" + FATHA + "\u0654")
        == [221]
    )
    # آ (id 222) as U+0622 or alef + madda U+0653; plain alef is another token (210).
    assert tok.encode("\u0622") == tok.encode("\u0627\u0653") == [222]
    assert tok.encode("\u0627") == [210]
    # alef wasla ٱ U+0671 is its own letter (id 1), not alef; نۢ with small high meem U+06E2 is id 28.
    assert tok.encode("\u0671") == [1]
    assert tok.encode("\u0646\u06e2") == [28]
    assert canonical("\u0646" + FATHA + SHADDA) == canonical("\u0646" + SHADDA + FATHA)


# The user's three example label files (user-notes.txt), word by word with their code points;
# their إِنَّ writes the fatha before the shadda, the vocabulary the shadda first.
QAALA = "\u0642\u064e\u0627\u0644\u064e"  # قَالَ
INNA = "\u0625\u0650\u0646\u064e\u0651"  # إِنَّ
EXAMPLES = {
    "00139": (
        [
            QAALA,
            INNA,
            "\u0671\u0644\u0652\u0625\u0650\u0646\u0652\u062a\u0650\u062e\u064e\u0627\u0628\u064e\u0627",
        ],  # ٱلْإِنْتِخَابَا
        [68, 210, 54, 215, 32, 1, 47, 215, 29, 190, 166, 210, 207, 210],
    ),
    "00154": (
        [
            "\u0642\u064e\u0627\u0644\u064e\u062a\u0652",  # قَالَتْ
            INNA,
            "\u0645\u064f\u0648\u064e\u0627\u0637\u0650\u0646\u0652",  # مُوَاطِنْ
        ],
        [68, 210, 54, 186, 215, 32, 42, 20, 210, 95, 29],
    ),
    "00156": (
        [
            "\u0642\u064e\u062f\u0652",  # قَدْ
            QAALA,
            INNA,
            "\u0625\u0650\u0633\u0652\u062a\u0650\u0639\u064e\u0627\u062f\u064e\u0629\u0652",  # إِسْتِعَادَةْ
        ],
        [68, 152, 68, 210, 54, 215, 32, 215, 123, 190, 84, 210, 159, 195],
    ),
}


@pytest.mark.parametrize("stem", sorted(EXAMPLES))
def test_user_examples(tok: Tokenizer, stem: str) -> None:
    words, expected = EXAMPLES[stem]
    assert tok.encode(" ".join(words)) == expected
    assert [i for w in words for i in tok.encode(w)] == expected
    sep = Tokenizer.from_file(VOCAB, word_separator=True)
    with_sep = sep.encode(" ".join(words))
    assert with_sep.count(sep.separator) == len(words) - 1
    assert [i for i in with_sep if i != sep.separator] == expected
    assert sep.decode(with_sep).split(" ") == [sep.decode(tok.encode(w)) for w in words]


def test_unknown_cluster_report(tok: Tokenizer) -> None:
    text = "\u0642\u064e\u0640\u0644\u0654"  # قَ, tatweel U+0640, lam + hamza above (not a token)
    with pytest.raises(DataError) as e:
        tok.encode(text, where="data/00007.csv, row 2")
    msg = str(e.value)
    assert "data/00007.csv, row 2" in msg
    assert "at character 3" in msg and "U+0640" in msg
    assert "at character 4" in msg and "U+0644 U+0654" in msg
    assert "data.unknown_to_unk" in msg
    assert tok.unknown_clusters(text) == [(3, "\u0640"), (4, "\u0644\u0654")]
    # a mark with no letter before it is reported too
    assert tok.unknown_clusters(FATHA + "\u0627") == [(1, FATHA)]


def test_unknown_to_unk(tok: Tokenizer) -> None:
    unk = Tokenizer.from_file(VOCAB, unknown_to_unk=True)
    ids = unk.encode("\u0642\u064e\u0640\u0627")
    assert ids == [68, unk.unk, 210]
    assert unk.decode(ids) == "\u0642\u064e\ufffd\u0627"


def test_bad_vocabulary(tmp_path: Path) -> None:
    gap = tmp_path / "gap.json"
    gap.write_text(json.dumps({"\u0627": 1, "\u0628": 3}), encoding="utf-8")
    with pytest.raises(ConfigError, match="1..2"):
        Tokenizer.from_file(gap)
    dup = tmp_path / "dup.json"
    dup.write_text(json.dumps({"\u0646" + SHADDA + FATHA: 1, "\u0646" + FATHA + SHADDA: 2}), encoding="utf-8")
    with pytest.raises(ConfigError, match="canonical"):
        Tokenizer.from_file(dup)
    with pytest.raises(ConfigError, match="not found"):
        Tokenizer.from_file(tmp_path / "missing.json")


def test_cer_sums_edits_over_reference_lengths() -> None:
    refs = [[1, 2, 3, 4], [5, 6]]
    hyps = [[1, 2, 3, 4], [5, 7, 8]]  # 0 edits; 1 substitution + 1 insertion
    assert cer(refs, hyps) == pytest.approx(2 / 6)
    assert cer([refs[1]], [hyps[1]]) == pytest.approx(1.0)
    assert cer([[1, 2]], [[]]) == 1.0
    assert cer([[]], [[]]) == 0.0
    with pytest.raises(ValueError):
        cer([[1]], [])


def test_letter_and_diacritic_rates_separate_the_two_kinds(tok: Tokenizer) -> None:
    ref = tok.encode("\u0642\u064e\u0627\u0644\u064e")  # قَالَ: 68 210 54
    vowel_wrong = tok.encode("\u0642\u064f\u0627\u0644\u064e")  # قُالَ: damma for fatha
    letter_wrong = tok.encode("\u0643\u064e\u0627\u0644\u064e")  # كَالَ: kaf for qaf, same vowel
    assert cer([ref], [vowel_wrong]) == cer([ref], [letter_wrong]) == pytest.approx(1 / 3)
    assert letter_error_rate([ref], [vowel_wrong], tok) == 0.0
    assert diacritic_error_rate([ref], [vowel_wrong], tok) == pytest.approx(1 / 3)
    assert letter_error_rate([ref], [letter_wrong], tok) == pytest.approx(1 / 3)
    assert diacritic_error_rate([ref], [letter_wrong], tok) == 0.0
    # hamza is part of the letter: أَ vs اَ-less alef is a letter error, not a diacritic one
    assert tok.letters(tok.encode("\u0623\u064e")) == ["\u0623"]
    assert tok.marks(tok.encode("\u0646\u064e\u0651")) == [FATHA + SHADDA]
    assert tok.marks(tok.encode("\u0627")) == [""]


def test_wer_needs_separator(tok: Tokenizer) -> None:
    sep = Tokenizer.from_file(VOCAB, word_separator=True)
    ref = sep.encode(f"{QAALA} {INNA}")
    hyp = sep.encode(f"{QAALA} {QAALA}")
    assert wer([ref], [hyp], sep) == pytest.approx(0.5)
    assert wer([ref], [ref], sep) == 0.0
    with pytest.raises(ValueError, match="word_separator"):
        wer([ref], [hyp], tok)


def test_strip_invisible_removes_formatting_characters_only() -> None:
    word = "\u0642\u064e\u0627\u0644\u064e"  # قَالَ
    marked = "\ufeff\u200f" + word[:2] + "\u200d" + word[2:] + "\u2069\u200f"
    clean, removed = strip_invisible(marked)
    assert clean == word and removed == {"\u200f": 2, "\ufeff": 1, "\u200d": 1, "\u2069": 1}
    assert strip_invisible(word + "\u0640") == (word + "\u0640", {})  # tatweel is a visible letter extender
    assert all(unicodedata.category(c) == "Cf" for c in INVISIBLE)  # format characters, none of them drawn
