"""lipsweep's command line (`python -m launch`) and what starts runs."""
