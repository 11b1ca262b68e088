"""Per-tensor analysis of quantized files against the reference: a thin wrapper of ``maq.evaluation.tensors``
(see its docstring for the commands errors / salient / hybrid).

    python scripts/eval_tensors.py errors  --file gptq=G.gguf --file maq=M.gguf ...
    python scripts/eval_tensors.py salient --maq maq=M.gguf --other gptq=G.gguf
    python scripts/eval_tensors.py hybrid  --file gptq=G.gguf --limit 3
"""
import sys

from maq.evaluation.tensors import main

if __name__ == "__main__":
    sys.exit(main())
