#!/usr/bin/env bash
# Everything a fresh machine needs: a virtual environment with the package, all
# three backends, the BigQuery client and the offline BigQuery emulator for tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# torch first, pinned: 2.13.0 is the CPU build here; an unpinned torch pulls GBs of CUDA packages.
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -c scripts/constraints.txt -e ".[torch,mlx,bigquery,pushdown,dev]"
bash scripts/setup_bqemulator.sh
touch .venv/.installed
echo "setup: ready (.venv)"
