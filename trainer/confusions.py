"""Token confusions from edit-distance alignments of references and hypotheses."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

EPS = None  # the empty side of an insertion or a deletion


def align(ref: Sequence[int], hyp: Sequence[int]) -> list[tuple[int | None, int | None]]:
    """A minimum-edit alignment as (ref_token, hyp_token) pairs; None marks an insertion or a deletion."""
    n, m = len(ref), len(hyp)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            sub = cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1])
            cost[i][j] = min(sub, cost[i - 1][j] + 1, cost[i][j - 1] + 1)
    pairs: list[tuple[int | None, int | None]] = []
    i, j = n, m
    while i > 0 or j > 0:  # prefer match/substitution, then deletion, then insertion
        if i > 0 and j > 0 and cost[i][j] == cost[i - 1][j - 1] + (ref[i - 1] != hyp[j - 1]):
            pairs.append((ref[i - 1], hyp[j - 1]))
            i, j = i - 1, j - 1
        elif i > 0 and cost[i][j] == cost[i - 1][j] + 1:
            pairs.append((ref[i - 1], EPS))
            i -= 1
        else:
            pairs.append((EPS, hyp[j - 1]))
            j -= 1
    return pairs[::-1]


def confusion_counts(refs: Sequence[Sequence[int]], hyps: Sequence[Sequence[int]]) -> Counter:
    """Counts of (ref, hyp) pairs over a set, errors only: substitutions, deletions (hyp None), insertions (ref None)."""
    counts: Counter = Counter()
    for ref, hyp in zip(refs, hyps, strict=True):
        counts.update(p for p in align(ref, hyp) if p[0] != p[1])
    return counts


def confusion_rows(counts: Counter, decode_token) -> list[list]:
    """Rows for confusions.csv: kind, ref, hyp, count; most frequent first."""
    rows = []
    for (r, h), c in counts.most_common():
        kind = "deletion" if h is None else "insertion" if r is None else "substitution"
        rows.append([kind, "" if r is None else decode_token(r), "" if h is None else decode_token(h), c])
    return rows
