#!/usr/bin/env bash
# Create ./.venv (once) and install MAQ into it with the conversion, test and server extras. Idempotent.
# torch is pinned to the CPU build (torch==2.13.0); a looser pin could pull a multi-GB CUDA build.
# Progress: each step is announced with its elapsed time; pip prints one line per package it collects/installs.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
T0=$(date +%s)
step() { echo "== [$(( $(date +%s) - T0 )) s] $*"; }
if [ ! -x .venv/bin/python ]; then
  step "creating .venv"
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
# pip's own progress, shortened to one line per package (no -q: a silent 3-minute install looks hung); the full
# output goes to .venv/pip.log, and its tail is shown when pip fails
pip_progress() {
  local rc
  set +e
  python -m pip install --progress-bar off "$@" 2>&1 | tee .venv/pip.log |
    grep -E --line-buffered '^(Collecting|Building|Installing|Successfully|ERROR)'
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" != 0 ]; then
    echo "setup_env.sh: pip install $* failed (exit $rc); the end of .venv/pip.log:" >&2
    tail -n 30 .venv/pip.log >&2
  fi
  return "$rc"
}
step "installing torch==2.13.0 (CPU build; the largest download)"
pip_progress torch==2.13.0
step "installing MAQ (pip install -e '.[convert,dev,server]'; builds the C extension)"
pip_progress -e ".[convert,dev,server]"
step "done: . .venv/bin/activate"
