"""The real model: SmolLM2-135M-Instruct (Q4_1 reference, dequantized to F32 at load) in the C runtime, and a
MAQ conversion of it end to end (slow)."""
from __future__ import annotations

import json
import os

import pytest

from maq.cli import main

WIKI = "/work/shared/data/wikitext-2-raw/wiki.test.raw"


@pytest.fixture(scope="module")
def smol(smollm2_gguf):
    from maq import Llama

    return Llama(model_path=str(smollm2_gguf), n_ctx=256, n_threads=2, verbose=False, engine="c")


def test_capital_of_france(smol):
    res = smol.create_completion("The capital of France is", max_tokens=8, temperature=0.0)
    assert "Paris" in res["choices"][0]["text"]


def test_chat_answer(smollm2_gguf):
    """In exact mode (float products) the reference answers like transformers does on the same weights: "The
    capital of France is Paris." (With the Q8_0 head's int8 activations, as in llama.cpp, its first token is a
    near tie: 'The' 25.33 vs 'L' 25.24 in float.)"""
    from maq import Llama

    smol = Llama(model_path=str(smollm2_gguf), n_ctx=128, n_threads=2, verbose=False, exact=True)
    res = smol.create_chat_completion([{"role": "user", "content": "What is the capital of France?"}],
                                      max_tokens=24, temperature=0.0)
    assert "Paris" in res["choices"][0]["message"]["content"]
    assert res["choices"][0]["finish_reason"] in ("stop", "length")


def test_smollm2_shortcut_and_perplexity(smollm2_gguf, tmp_path, capsys):
    src = WIKI if os.path.isfile(WIKI) else None
    if src is None:
        pytest.skip("WikiText-2 not present")
    text = tmp_path / "wiki.txt"
    with open(src, encoding="utf-8") as f:
        text.write_text(f.read(20000), encoding="utf-8")
    assert main(["perplexity", "smollm2", "-f", str(text), "--ctx", "256", "--limit", "1", "--json"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["windows"] == 1 and d["tokens"] == 255 and 5 < d["ppl"] < 60


@pytest.mark.slow
def test_maq_conversion_end_to_end(smollm2_gguf, tmp_path, capsys):
    """convert with a small calibration, then `maq generate` from a chat prompt and `maq perplexity --limit 2`."""
    pytest.importorskip("torch")
    out = tmp_path / "smollm2.maq.gguf"
    rc = main(["convert", str(smollm2_gguf), "--out", str(out), "--nsamples", "4", "--seqlen", "128",
               "--no-progress"])
    if rc != 0:
        pytest.fail(f"maq convert failed: {capsys.readouterr().err[-500:]}")
    capsys.readouterr()
    from maq.runtime import gguf_loader as gl

    lm = gl.load(out)
    assert lm.layers[0].wq.kind == gl.KIND_MAQ2 and lm.summary()["copied_bytes"] == 0
    assert main(["generate", str(out), "--chat", "-p", "Say hello.", "-n", "16", "--temp", "0", "--json"]) == 0
    d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert d["generated_tokens"] > 0 and isinstance(d["text"], str)
    if os.path.isfile(WIKI):
        text = tmp_path / "wiki.txt"
        with open(WIKI, encoding="utf-8") as f:
            text.write_text(f.read(40000), encoding="utf-8")
        assert main(["perplexity", str(out), "-f", str(text), "--ctx", "512", "--limit", "2", "--json"]) == 0
        d = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert d["windows"] == 2 and d["ppl"] > 1
