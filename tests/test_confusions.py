import editdistance
import pytest

from trainer.confusions import align, confusion_counts, confusion_rows


@pytest.mark.parametrize(
    "ref, hyp",
    [
        ([1, 2, 3], [1, 2, 3]),
        ([1, 2, 3], [1, 4, 3]),
        ([1, 2, 3], [1, 3]),
        ([1, 3], [1, 2, 3]),
        ([], [5, 6]),
        ([5, 6], []),
        ([1, 2, 3, 4, 5], [2, 2, 4, 9, 5, 7]),
    ],
)
def test_alignment_cost_is_the_edit_distance_and_covers_both_sides(ref, hyp):
    pairs = align(ref, hyp)
    assert sum(r != h for r, h in pairs) == editdistance.eval(ref, hyp)
    assert [r for r, _ in pairs if r is not None] == ref
    assert [h for _, h in pairs if h is not None] == hyp


def test_counts_on_hand_made_alignments():
    counts = confusion_counts([[1, 2, 3], [1, 2, 3], [4, 5]], [[1, 9, 3], [1, 9, 3], [4]])
    assert counts[(2, 9)] == 2 and counts[(5, None)] == 1 and sum(counts.values()) == 3
    rows = confusion_rows(counts, lambda t: f"t{t}")
    assert rows[0] == ["substitution", "t2", "t9", 2] and rows[1] == ["deletion", "t5", "", 1]
    insertion = confusion_counts([[1]], [[1, 7]])
    assert insertion == {(None, 7): 1}
