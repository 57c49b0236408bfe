"""Diacritized Arabic characters as tokens, and the error rates computed on them.

A token is a base letter with the combining marks after it (`نَّ`, `ٱ`, `نۢ`). Text is matched on a
canonical form (NFD: precomposed `آ أ إ ؤ ئ` split into letter + madda/hamza; marks in one order,
so shadda + vowel in either order is one token) and ids come back in the vocabulary's numbering.
Ids: blank 0, the vocabulary 1..N, then `<unk>` and the word separator when switched on, and
sos = eos last (227 with the user's 226 tokens and no extras: output size 228).
"""

from __future__ import annotations

import json
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import editdistance

from trainer.errors import ConfigError, DataError

if TYPE_CHECKING:
    from trainer.config import DataConfig

UNK = "<unk>"
SEPARATOR = " "
UNK_TEXT = "\ufffd"  # how `<unk>` is written back into decoded text
LETTER_MARKS = frozenset("\u0653\u0654\u0655")  # madda and hamza belong to the letter (أ, إ, آ, ؤ, ئ), not to its vowel
# Invisible formatting characters editors put into right-to-left text: direction marks (U+200E, U+200F, U+061C),
# embeddings and isolates (U+202A..U+202E, U+2066..U+2069), zero-width space and (non-)joiners (U+200B..U+200D),
# the word joiner U+2060 and a byte-order mark U+FEFF. They draw nothing, so they are not part of a label.
# The tatweel U+0640 is not among them: it is a visible letter extender.
INVISIBLE = frozenset(
    "\u061c\u200b\u200c\u200d\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2060\u2066\u2067\u2068\u2069\ufeff"
)
UNKNOWN_HINT = (
    "Fix the label, add the token to the vocabulary, or set data.unknown_to_unk=true to map unknown characters to <unk>"
)


def codepoints(text: str) -> str:
    """'نّ' -> 'U+0646 U+0651'."""
    return " ".join(f"U+{ord(c):04X}" for c in text)


def strip_invisible(text: str) -> tuple[str, Counter]:
    """`text` without its invisible formatting characters (INVISIBLE), and how many of each were removed."""
    removed = Counter(c for c in text if c in INVISIBLE)
    if not removed:
        return text, removed
    return "".join(c for c in text if c not in INVISIBLE), removed


def is_mark(char: str) -> bool:
    return unicodedata.category(char).startswith("M")


def canonical(cluster: str) -> str:
    """One spelling per token: NFD, then the marks sorted (shadda/vowel order and precomposition do not matter)."""
    d = unicodedata.normalize("NFD", cluster)
    return d[:1] + "".join(sorted(d[1:]))


def clusters(text: str) -> list[tuple[int, str]]:
    """Split `text` (one word, no spaces) into (1-based character position, base letter + following marks)."""
    out: list[tuple[int, str]] = []
    for pos, char in enumerate(text, start=1):
        if is_mark(char) and out and not out[-1][1][0].isspace():
            out[-1] = (out[-1][0], out[-1][1] + char)
        else:
            out.append((pos, char))
    return out


def split_token(token: str) -> tuple[str, str]:
    """A vocabulary token -> (letter with hamza/madda, composed; its diacritic marks in canonical order)."""
    d = unicodedata.normalize("NFD", token)
    letter = d[:1] + "".join(c for c in d[1:] if c in LETTER_MARKS)
    marks = "".join(sorted(c for c in d[1:] if c not in LETTER_MARKS))
    return unicodedata.normalize("NFC", letter), marks


@dataclass(frozen=True)
class Tokenizer:
    """Vocabulary tokens (index i holds id i + 1, in the vocabulary's own spelling) and the optional extra ids."""

    tokens: tuple[str, ...]
    unknown_to_unk: bool = False
    word_separator: bool = False
    source: str = "vocabulary"

    blank = 0

    @classmethod
    def from_file(cls, path: str | Path, *, unknown_to_unk: bool = False, word_separator: bool = False) -> Tokenizer:
        """Read a JSON {token: id} with ids 1..N."""
        path = Path(path)
        try:
            mapping = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"vocabulary file not found: {path} (data.vocab)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{path}: not a UTF-8 JSON vocabulary: {e}") from None
        if not isinstance(mapping, dict) or not all(isinstance(i, int) for i in mapping.values()):
            raise ConfigError(f"{path}: the vocabulary must be a JSON object {{token: id}} with integer ids")
        if sorted(mapping.values()) != list(range(1, len(mapping) + 1)):
            raise ConfigError(f"{path}: token ids must be exactly 1..{len(mapping)} (0 is the CTC blank), each once")
        tokens = tuple(t for t, _ in sorted(mapping.items(), key=lambda kv: kv[1]))
        return cls(tokens, unknown_to_unk, word_separator, str(path))

    @classmethod
    def from_config(cls, data: DataConfig) -> Tokenizer:
        from trainer.config import PROJECT_ROOT

        path = Path(data.vocab)
        if not path.is_absolute() and not path.exists() and (PROJECT_ROOT / path).exists():
            path = PROJECT_ROOT / path
        return cls.from_file(path, unknown_to_unk=data.unknown_to_unk, word_separator=data.word_separator)

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for token in self.tokens:
            if not token or is_mark(token[0]) or any(not is_mark(c) for c in token[1:]):
                raise ConfigError(
                    f"{self.source}: token '{token}' ({codepoints(token)}) is not one letter with its marks"
                )
            key = canonical(token)
            if key in seen:
                raise ConfigError(
                    f"{self.source}: tokens '{seen[key]}' and '{token}' are the same character in canonical form"
                )
            seen[key] = token

    # ------------------------------------------------------------------ ids

    @property
    def unk(self) -> int | None:
        return len(self.tokens) + 1 if self.unknown_to_unk else None

    @property
    def separator(self) -> int | None:
        return len(self.tokens) + 1 + self.unknown_to_unk if self.word_separator else None

    @property
    def sos(self) -> int:
        return len(self.tokens) + 1 + self.unknown_to_unk + self.word_separator

    @property
    def eos(self) -> int:
        return self.sos

    @property
    def vocab_size(self) -> int:
        """Output size of the model: blank, tokens, extras, sos/eos."""
        return self.sos + 1

    @cached_property
    def _ids(self) -> dict[str, int]:
        return {canonical(t): i for i, t in enumerate(self.tokens, start=1)}

    def token(self, i: int) -> str:
        """Text of one id ('' for blank and sos/eos)."""
        if 1 <= i <= len(self.tokens):
            return self.tokens[i - 1]
        if i == self.unk:
            return UNK_TEXT
        if i == self.separator:
            return SEPARATOR
        if i in (self.blank, self.sos):
            return ""
        raise ValueError(f"token id {i} is outside 0..{self.vocab_size - 1}")

    # ------------------------------------------------------------------ text <-> ids

    def unknown_clusters(self, text: str) -> list[tuple[int, str]]:
        """(1-based character position, cluster) of every cluster of `text` not in the vocabulary."""
        return [(p, c) for p, c in clusters(text) if not c.isspace() and canonical(c) not in self._ids]

    def describe_unknown(self, unknown: Sequence[tuple[int, str]]) -> str:
        """What `unknown_clusters` found, as: not in the vocabulary V: 'ـ' (U+0640) at character 3."""
        found = "; ".join(f"'{c}' ({codepoints(c)}) at character {p}" for p, c in unknown)
        return f"not in the vocabulary {self.source}: {found}"

    def encode(self, text: str, where: str = "") -> list[int]:
        """Text (words separated by white space) -> ids; unknown clusters raise DataError or become `<unk>`."""
        unknown = self.unknown_clusters(text)
        if unknown and not self.unknown_to_unk:
            raise DataError(f"{where or 'text'}: {self.describe_unknown(unknown)}. {UNKNOWN_HINT}")
        ids: list[int] = []
        for word in text.split():
            if ids and self.separator is not None:
                ids.append(self.separator)
            ids.extend(self._ids.get(canonical(c), self.unk) for _, c in clusters(word))  # type: ignore[misc]
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        """Ids -> text in the vocabulary's own spelling; blank and sos/eos are dropped."""
        return "".join(self.token(int(i)) for i in ids)

    # ------------------------------------------------------------------ views for the error rates

    @cached_property
    def _parts(self) -> dict[int, tuple[str, str]]:
        parts = {i: split_token(t) for i, t in enumerate(self.tokens, start=1)}
        if self.unk is not None:
            parts[self.unk] = (UNK, "")
        return parts

    def letters(self, ids: Sequence[int]) -> list[str]:
        """The base letter of each token (hamza and madda kept: أ is not ا); the separator is dropped."""
        return [self._parts[i][0] for i in ids if i in self._parts]

    def marks(self, ids: Sequence[int]) -> list[str]:
        """The diacritic marks of each token ('' where none), one entry a token; the separator is dropped."""
        return [self._parts[i][1] for i in ids if i in self._parts]

    def words(self, ids: Sequence[int]) -> list[tuple[int, ...]]:
        if self.separator is None:
            raise ValueError("words need the word separator: set data.word_separator=true")
        out: list[list[int]] = [[]]
        for i in ids:
            if i == self.separator:
                out.append([])
            else:
                out[-1].append(i)
        return [tuple(w) for w in out if w]


# ---------------------------------------------------------------------- error rates


def error_rate(refs: Sequence[Sequence], hyps: Sequence[Sequence]) -> float:
    """Sum of edit distances over sum of reference lengths (0 when every reference and hypothesis is empty)."""
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    edits = sum(editdistance.eval(list(r), list(h)) for r, h in zip(refs, hyps, strict=True))
    total = sum(len(r) for r in refs)
    if total == 0:
        return 0.0 if edits == 0 else float("inf")
    return edits / total


def cer(refs: Sequence[Sequence[int]], hyps: Sequence[Sequence[int]]) -> float:
    """Token error rate over a set of clips (pass one clip for a per-clip CER)."""
    return error_rate([[int(i) for i in r] for r in refs], [[int(i) for i in h] for h in hyps])


def letter_error_rate(refs: Sequence[Sequence[int]], hyps: Sequence[Sequence[int]], tokenizer: Tokenizer) -> float:
    """Error rate on base letters only (diacritic marks removed): consonant/letter mistakes."""
    return error_rate([tokenizer.letters(r) for r in refs], [tokenizer.letters(h) for h in hyps])


def diacritic_error_rate(refs: Sequence[Sequence[int]], hyps: Sequence[Sequence[int]], tokenizer: Tokenizer) -> float:
    """Error rate on the sequence of each token's marks (no mark counts as a value): vowel-mark mistakes."""
    return error_rate([tokenizer.marks(r) for r in refs], [tokenizer.marks(h) for h in hyps])


def wer(refs: Sequence[Sequence[int]], hyps: Sequence[Sequence[int]], tokenizer: Tokenizer) -> float:
    """Word error rate; needs the word separator (data.word_separator=true)."""
    return error_rate([tokenizer.words(r) for r in refs], [tokenizer.words(h) for h in hyps])
