#!/usr/bin/env bash
# Create ./.venv (once) and install MAQ into it with the conversion and test extras. Idempotent.
# torch is pinned to the CPU build (torch==2.13.0); a looser pin could pull a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "== creating .venv"
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
echo "== installing torch==2.13.0 (CPU) and MAQ (pip install -e '.[convert,dev]')"
python -m pip install -q torch==2.13.0
python -m pip install -q -e ".[convert,dev]"
