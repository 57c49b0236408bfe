"""Token confusions: the code lives in trainer/confusions.py (the trainer writes confusions.csv); imported here for analysis."""

from trainer.confusions import EPS, align, confusion_counts, confusion_rows

__all__ = ["EPS", "align", "confusion_counts", "confusion_rows"]
