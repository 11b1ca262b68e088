"""Runtime fixtures: tiny random Llama models (transformers) converted to F32 GGUF by the converter, a MAQ2
re-quantization of one of them, and a short text. Session-scoped: built once per test run."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # gguf_files importable

# name -> make_tiny_llama keywords. "gqa": GQA 4/2, tied output, rope base 1e4. "untied": GQA 4/1, separate
# output head, llama3 rope scaling (written by the converter as rope_freqs.weight), rope base 5e5.
TINY = {
    "gqa": dict(heads=4, kv_heads=2, tie=True, seed=0),
    "untied": dict(heads=4, kv_heads=1, tie=False, seed=1, rope_theta=500000.0),
    "hd128": dict(hidden=256, heads=2, kv_heads=1, intermediate=128, layers=1, seed=2),
    "hd64": dict(hidden=128, heads=2, kv_heads=2, intermediate=128, layers=1, seed=3),
}
LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                  "original_max_position_embeddings": 64}


def _build(name, root, tokenizer_dir):
    tiny = pytest.importorskip("tiny")
    pytest.importorskip("torch")
    import gguf_files

    hf_dir = root / f"hf_{name}"
    model = tiny.make_tiny_llama(hf_dir, tokenizer_dir, **TINY[name])
    if name == "untied":  # add llama3 rope scaling to the saved config, reload so HF uses it
        import json

        from transformers import LlamaForCausalLM

        cfg = json.loads((hf_dir / "config.json").read_text())
        cfg["rope_parameters"] = {**LLAMA3_SCALING, "rope_theta": cfg["rope_parameters"]["rope_theta"]}
        (hf_dir / "config.json").write_text(json.dumps(cfg))
        model = LlamaForCausalLM.from_pretrained(str(hf_dir)).eval().float()
        assert model.config.rope_parameters["rope_theta"] == TINY[name]["rope_theta"]
    path = gguf_files.convert_f32(hf_dir, root / f"{name}.f32.gguf")
    return model, path


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory):
    return tmp_path_factory.mktemp("tiny_runtime")


def _tiny_fixture(name: str, doc: str):
    """A session fixture ``tiny_<name>``: (transformers model, F32 GGUF path) of TINY[name]."""
    @pytest.fixture(scope="session", name=f"tiny_{name}")
    def fixture(tiny_root, smollm2_tokenizer_dir):
        return _build(name, tiny_root, smollm2_tokenizer_dir)

    fixture.__doc__ = f"(transformers model, F32 GGUF path): {doc}"
    return fixture


tiny_gqa = _tiny_fixture("gqa", "GQA 4/2, tied embeddings.")
tiny_untied = _tiny_fixture("untied", "GQA 4/1, separate output head, llama3 rope scaling.")
tiny_hd128 = _tiny_fixture("hd128", "head_dim 128 (the register-resident attention path), MQA 2/1.")
tiny_hd64 = _tiny_fixture("hd64", "head_dim 64, plain multi-head attention (2/2).")


@pytest.fixture(scope="session", params=["gqa", "untied", "hd128", "hd64"])
def tiny_any(request):
    return request.getfixturevalue(f"tiny_{request.param}")


@pytest.fixture(scope="session")
def tiny_maq(tiny_gqa, tiny_root):
    """MAQ2 GGUF: tiny_gqa's linears RTN-quantized (5% random salient words, G=64), token_embd Q8_0."""
    import gguf_files

    return gguf_files.requantize_maq(tiny_gqa[1], tiny_root / "gqa.maq.gguf")


@pytest.fixture(scope="session")
def text_file(tmp_path_factory):
    """A few hundred tokens of English (the first lines of WikiText-2 test when present)."""
    src = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "wikitext-2-raw",
                       "wiki.test.raw")
    candidates = [src, "/work/shared/data/wikitext-2-raw/wiki.test.raw"]
    text = None
    for c in candidates:
        if os.path.isfile(c):
            with open(c, encoding="utf-8") as f:
                text = f.read(6000)
            break
    if text is None:
        text = ("The quick brown fox jumps over the lazy dog. " * 60) + "Numbers 12345 and ünïcödé 日本語.\n"
    p = tmp_path_factory.mktemp("text") / "text.txt"
    p.write_text(text, encoding="utf-8")
    return p
