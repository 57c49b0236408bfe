#!/usr/bin/env bash
# Set up lipsweep on a fresh machine: a virtual environment in .venv with torch, the requirements and
# lipsweep itself (editable, with the `lipsweep` command). Safe to run again.
#
# torch: an installed torch is kept. Otherwise `pip install torch==$LIPSWEEP_TORCH` from pip's configured
# index: on Linux x86_64 PyPI serves the CUDA build (about 3 GB with its NVIDIA libraries; it runs on a CPU
# too). On a machine without a GPU choose the CPU build (about 200 MB) with
#   LIPSWEEP_TORCH_INDEX=https://download.pytorch.org/whl/cpu bash scripts/setup.sh
# The script says at the end which build it found.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${LIPSWEEP_APT:-1}" = 1 ] && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  # Noto Arabic fonts for plots of Arabic tokens; PostgreSQL for the multi-machine sweep test.
  if ! dpkg -s fonts-noto-core postgresql >/dev/null 2>&1; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fonts-noto-core postgresql >/dev/null
  fi
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
. .venv/bin/activate
if ! python -c "import torch" 2>/dev/null; then
  python -m pip install -q --upgrade pip
  index=()
  if [ -n "${LIPSWEEP_TORCH_INDEX:-}" ]; then index=(--index-url "$LIPSWEEP_TORCH_INDEX"); fi
  python -m pip install -q "${index[@]}" "torch==${LIPSWEEP_TORCH:-2.13.0}"
fi
python -m pip install -q -r requirements.txt
# setuptools explains editable installs at length on every run: its output is shown only on failure
python -m pip install -q --no-deps -e . >.venv/install-lipsweep.log 2>&1 || { cat .venv/install-lipsweep.log; exit 1; }
python - <<'PY'
import torch
build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU only"
print(f"lipsweep is set up in .venv: torch {torch.__version__} ({build}); activate it with `. .venv/bin/activate`")
PY
