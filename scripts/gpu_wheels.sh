#!/usr/bin/env bash
# The wheels the GPU check (python -m bench.gpu) needs on a GPU machine that has Python 3.12 and torch but no
# network and none of optuna, wandb, editdistance: downloaded here into .whl/ (git ignores it), under 64 MiB.
#
#   bash scripts/gpu_wheels.sh                          # .whl/*.whl for CPython 3.12, manylinux x86_64
#   bash scripts/gpu_wheels.sh --auto-avsr ../auto_avsr # also copy auto_avsr's espnet/ (its search) into .whl/
#   PYTHON_VERSION=3.11 bash scripts/gpu_wheels.sh --dest /tmp/whl311   # the same set for another Python
#
# On the GPU machine (see the README's "GPU check"):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
#
# Only what that machine lacks is here (it has numpy, pandas, matplotlib, click, pyyaml, tqdm, requests, httpx
# and their kind); typing_extensions and protobuf come too, at the versions these were tested with. Never torch.
# Each wheel is pinned, with --no-deps: the set is complete by itself, one version of each.
set -euo pipefail
cd "$(dirname "$0")/.."

DEST=.whl
AUTO_AVSR=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dest) DEST=$2; shift 2 ;;
    --auto-avsr) AUTO_AVSR=$2; shift 2 ;;
    *) echo "usage: bash scripts/gpu_wheels.sh [--dest DIR] [--auto-avsr DIR]" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
VERSION=${PYTHON_VERSION:-3.12}
LIMIT_MIB=60  # of the 64 MiB that travel with the working tree, the repository itself needs about 2

WHEELS=(
  editdistance==0.8.1                      # trainer/text.py
  optuna==5.0.0 SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3 colorlog==6.12.0   # sweep local
  wandb==0.31.0 pydantic==2.14.4 pydantic_core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  platformdirs==4.14.9 cwevals==0.0.1b1 distro==1.9.0 sniffio==1.3.1 googleapis-common-protos==1.76.0
  opentelemetry-api==1.45.2 opentelemetry-sdk==1.45.2 opentelemetry-proto==1.45.2
  opentelemetry-semantic-conventions==0.66b2 opentelemetry-exporter-otlp-proto-http==1.45.2
  opentelemetry-exporter-otlp-proto-common==1.45.2 opentelemetry-exporter-otlp-common==0.66b2
  opentelemetry-exporter-http-transport==0.66b2   # wandb: its mapping of sweep parameters to Optuna
  protobuf==7.36.2 typing_extensions==4.16.0
  espnet==202611 typeguard==4.6.1          # bench/search.py --espnet: ESPnet's batched BatchBeamSearch
)
PLATFORMS=()
for p in manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 \
  manylinux_2_28_x86_64 manylinux_2_31_x86_64 manylinux_2_34_x86_64 manylinux_2_35_x86_64 manylinux1_x86_64; do
  PLATFORMS+=(--platform "$p")
done

mkdir -p "$DEST"
"$PY" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: --ignore-requires-python \
  --python-version "$VERSION" --implementation cp "${PLATFORMS[@]}" --platform any -d "$DEST" "${WHEELS[@]}"

if [ -n "$AUTO_AVSR" ]; then
  [ -f "$AUTO_AVSR/espnet/nets/batch_beam_search.py" ] || { echo "$AUTO_AVSR: no espnet/nets/batch_beam_search.py (an auto_avsr checkout?)" >&2; exit 2; }
  rm -rf "$DEST/auto_avsr"
  mkdir -p "$DEST/auto_avsr"
  cp -r "$AUTO_AVSR/espnet" "$DEST/auto_avsr/espnet"
  find "$DEST/auto_avsr" -name __pycache__ -prune -exec rm -rf {} +
fi

count=$(ls "$DEST"/*.whl | wc -l)
mib=$(du -sm "$DEST" | cut -f1)
echo "$DEST: $count wheels for CPython $VERSION$([ -n "$AUTO_AVSR" ] && echo ' + auto_avsr/espnet'), $mib MiB"
if [ "$mib" -gt "$LIMIT_MIB" ]; then
  echo "$DEST is over $LIMIT_MIB MiB: it would not travel with the working tree; remove old wheels from it" >&2
  exit 1
fi
