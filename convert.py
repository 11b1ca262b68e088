#!/usr/bin/env python3
"""Convert a Llama-family model (HF directory or GGUF) to a MAQ GGUF: `python convert.py MODEL --out model.gguf`.

A thin entry point, like llama.cpp's converter scripts; the same as `maq convert MODEL --out model.gguf`.
"""
import sys

from maq.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
