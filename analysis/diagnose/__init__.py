"""Diagnose one run: the user's checklist as a report (Markdown + PNGs, and an HTML page holding them).

1. learning curves (train loss and val CER per epoch, side by side);
2. a fitting verdict: over-fitting, under-fitting, stuck or healthy, with the numbers behind it (fitting.py);
3. gradient flow per module group, flagging frozen (no gradient), zero and vanishing groups (gradients.py);
4. CTC-only greedy CER beside the joint beam-search CER, and what the gap means (ctc_joint.py);
5. the worst-k validation clips (frames, target, prediction, score, CER) (samples.py);
6. token confusions (a heatmap of the most confused tokens, the top pairs, base-letter vs diacritic errors)
   (confusions.py);
7. hyperparameter sanity warnings, each with its reason (hyperparameters.py).
(8, the sanity model, is `python -m launch sanity`, analysis/sanity.py.)

With a checkpoint and the dataset at hand, the validation split is decoded again with the chosen
checkpoint (best or last; decode.py); otherwise sections 5 and 6 use the CSVs the run wrote. report.py
puts the sections together.
"""

from analysis.diagnose.common import Finding, Verdict, series
from analysis.diagnose.confusions import (
    confusion_heatmap,
    confusion_matrix,
    confusions_from_csv,
    error_kind,
    length_note,
)
from analysis.diagnose.ctc_joint import ctc_vs_joint
from analysis.diagnose.decode import Decoded, decode_validation
from analysis.diagnose.fitting import fitting_verdict
from analysis.diagnose.gradients import GROUPS, frozen_groups, gradient_flow, gradient_plot
from analysis.diagnose.hyperparameters import hyperparameter_checks
from analysis.diagnose.report import diagnose, frontend_line
from analysis.diagnose.samples import filmstrip

__all__ = [
    "GROUPS",
    "Decoded",
    "Finding",
    "Verdict",
    "confusion_heatmap",
    "confusion_matrix",
    "confusions_from_csv",
    "ctc_vs_joint",
    "decode_validation",
    "diagnose",
    "error_kind",
    "filmstrip",
    "fitting_verdict",
    "frontend_line",
    "frozen_groups",
    "gradient_flow",
    "gradient_plot",
    "hyperparameter_checks",
    "length_note",
    "series",
]
