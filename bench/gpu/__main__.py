"""`python -m bench.gpu` (or `python bench/gpu`): see bench/gpu/__init__.py."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from bench.gpu.harness import main  # noqa: E402

sys.exit(main())
