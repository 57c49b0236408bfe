#!/usr/bin/env bash
# Set up lipsweep on a fresh machine: a virtual environment in .venv with the CPU torch
# (or whatever torch the machine already offers) and the requirements. Safe to run again.
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
  python -m pip install -q "torch==${LIPSWEEP_TORCH:-2.13.0}"
fi
python -m pip install -q -r requirements.txt
