"""Evaluation fixtures: a tiny Llama GGUF (F32) and its MAQ2 re-quantization (built with the runtime tests'
helpers, tests/runtime/gguf_files.py), a short text file."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))   # gguf_files


@pytest.fixture(scope="session")
def tiny_f32(tmp_path_factory, smollm2_tokenizer_dir):
    """F32 GGUF of a tiny random Llama (2 layers, hidden 64, GQA 4/2, SmolLM2's vocabulary)."""
    tiny = pytest.importorskip("tiny")
    pytest.importorskip("torch")
    import gguf_files

    root = tmp_path_factory.mktemp("tiny_eval")
    tiny.make_tiny_llama(root / "hf", smollm2_tokenizer_dir, heads=4, kv_heads=2, tie=True, seed=7)
    return gguf_files.convert_f32(root / "hf", root / "tiny.f32.gguf")


@pytest.fixture(scope="session")
def tiny_maq2(tiny_f32, tmp_path_factory):
    """tiny_f32's linears RTN-quantized to MAQ2 (5% random salient words, G=64), token_embd Q8_0."""
    import gguf_files

    return gguf_files.requantize_maq(tiny_f32, tmp_path_factory.mktemp("tiny_eval_maq") / "tiny.maq.gguf")


@pytest.fixture(scope="session")
def wiki_text(tmp_path_factory):
    """About 3000 tokens of English: the start of WikiText-2 test when present, else generated text."""
    cands = [ROOT.parent / "shared" / "data" / "wikitext-2-raw" / "wiki.test.raw"]
    text = None
    for c in cands:
        if c.is_file():
            text = c.read_text(encoding="utf-8")[:14000]
    if text is None:
        text = " ".join(f"The {i}th quick brown fox jumps over the lazy dog number {i * 7}." for i in range(900))
    p = tmp_path_factory.mktemp("text") / "text.txt"
    p.write_text(text, encoding="utf-8")
    return p
