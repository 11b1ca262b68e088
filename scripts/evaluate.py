"""Evaluate configurations of a model: convert each once (cached), measure perplexity (WikiText-2, both protocols;
C4 held-out with --c4), honest bits/weight, size vs BF16, conversion time, decode/prefill tokens/s, zero-shot tasks,
llama.cpp's types side by side; write docs/results/<run>.json and docs/RESULTS.md. Same as `maq eval`.

    python scripts/evaluate.py --preset headline                       # the whole WikiText-2 test, ctx 2048
    python scripts/evaluate.py --preset analysis --convert-flags "--nsamples 32" --limit 10 --no-speed
    python scripts/evaluate.py --config gptq='--method gptq' --config q2k=@llamacpp:Q2_K+imatrix --limit 2
    python scripts/evaluate.py --report                                # regenerate docs/RESULTS.md only
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _evalpath  # noqa: E402

_evalpath.ensure()

from maq.evaluation.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
