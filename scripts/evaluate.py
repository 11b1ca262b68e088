"""``maq eval`` as a script (same arguments): convert configurations once, measure, write docs/results/ and
docs/RESULTS.md. See ``maq eval --help`` and ``maq.evaluation.cli``.

    python scripts/evaluate.py --preset headline                       # the whole WikiText-2 test, ctx 2048
    python scripts/evaluate.py --preset analysis --convert-flags "--nsamples 32" --limit 10 --no-speed
    python scripts/evaluate.py --config gptq='--method gptq' --config q2k=@llamacpp:Q2_K+imatrix --limit 2
    python scripts/evaluate.py --report                                # regenerate docs/RESULTS.md only
"""
import sys

from maq.cli import main

if __name__ == "__main__":
    sys.exit(main(["eval", *sys.argv[1:]]))
