"""Evaluation of MAQ files against the reference, RTN, GPTQ and llama.cpp (``maq eval``, scripts/evaluate.py).

One job per module:

| module | job |
| --- | --- |
| ``configs.py`` | configurations (name + converter flags / reference / llama.cpp type), canonical cache key |
| ``convert.py`` | convert each configuration once, cached under a hash of (source, flags, tool version) |
| ``ppl.py`` | perplexity in both protocols from one pass over the windows |
| ``speed.py`` | decode / prefill tokens/s of our runtime |
| ``zeroshot.py`` | multiple-choice log-likelihood scoring (acc, acc_norm) of the usual public task formats |
| ``llamacpp.py`` | llama.cpp's tools: quantize, imatrix, perplexity, bench (output parsing) |
| ``tensor_error.py`` | reference forward collecting layer Hessians; relative output errors of quantized tensors |
| ``tensors.py`` | per-tensor analysis: output errors, salient-word breakdown, one-kind hybrids (scripts/eval_tensors.py) |
| ``hybrid.py`` | an F32 GGUF with some weights replaced by a quantized file's dequantized ones |
| ``report.py`` | results JSON -> docs/RESULTS.md tables and the perplexity vs bits/weight plot |
| ``cli.py`` | ``maq eval`` (scripts/evaluate.py runs it) |

Bits/weight and file sizes are read from the GGUF itself by ``maq.runtime.inspect``.
Imports torch only inside ``tensor_error`` (and through the converter, run as a subprocess).
"""
