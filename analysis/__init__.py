"""lipsweep's analysis: runs table, ranking, export, plots, diagnostics."""
