#!/usr/bin/env bash
# The test command: set up ./.venv (scripts/setup_env.sh) and run the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# shellcheck disable=SC1091
. .venv/bin/activate
python -m maq info || true
exec python -m pytest -q "$@"
