"""MAQ converter: load a Llama-family model, calibrate, quantize (MAQ / GPTQ / RTN), write GGUF.

Needs the `convert` extra (torch, transformers, safetensors). Imports the format from maq.runtime.format.
"""
