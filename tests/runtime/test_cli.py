"""`maq generate`, `maq perplexity` (both protocols == a transformers computation), `maq chat` over stdin."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest

from maq.cli import main

CTX = 32


def _json_line(capsys):
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1])


def test_generate_json(tiny_gqa, capsys):
    rc = main(["generate", str(tiny_gqa[1]), "-p", "The capital of France is", "-n", "6", "--temp", "0",
               "--threads", "1", "--json", "--ctx", "64"])
    assert rc == 0
    d = _json_line(capsys)
    assert {"text", "prompt_tokens", "generated_tokens", "prompt_tps", "decode_tps"} <= set(d)
    assert d["prompt_tokens"] == 5 and d["generated_tokens"] == 6 and d["decode_tps"] > 0
    main(["generate", str(tiny_gqa[1]), "-p", "The capital of France is", "-n", "6", "--temp", "0", "--json",
          "--ctx", "64"])
    assert _json_line(capsys)["text"] == d["text"]            # greedy is reproducible


def test_generate_streams_text(tiny_gqa, capsys):
    assert main(["generate", str(tiny_gqa[1]), "-p", "Hello", "-n", "4", "--seed", "3", "--chat", "--ctx", "64"]) == 0
    cap = capsys.readouterr()
    assert cap.out.strip() and "tok/s" in cap.err


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["generate", str(tmp_path / "nope.gguf"), "-p", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("maq: error:") and "nope.gguf" in err and len(err.strip().splitlines()) == 1


def hf_perplexity(model, tokens, ctx, protocol, limit=None):
    """The same windows scored with transformers (llama-perplexity's second-half rule)."""
    import torch

    n_win = len(tokens) // ctx
    if limit:
        n_win = min(n_win, limit)
    total, count = 0.0, 0
    for w in range(n_win):
        win = torch.tensor([tokens[w * ctx:(w + 1) * ctx]])
        with torch.no_grad():
            lp = torch.log_softmax(model(win).logits[0].double(), -1)
        first = 0 if protocol == "full" else ctx // 2
        for p in range(first, ctx - 1):
            total -= float(lp[p, win[0, p + 1]])
            count += 1
    return math.exp(total / count), count, n_win


@pytest.mark.parametrize("protocol", ["full", "second-half"])
def test_perplexity_matches_transformers(tiny_untied, text_file, protocol, capsys):
    from maq.runtime import gguf_loader as gl
    from maq.runtime import tokenizer as T

    model, path = tiny_untied
    rc = main(["perplexity", str(path), "-f", str(text_file), "--ctx", str(CTX), "--limit", "4", "--protocol",
               protocol, "--json", "--threads", "1", "--batch", "7"])
    assert rc == 0
    d = _json_line(capsys)
    tokens = T.from_gguf(gl.GGUFFile(path)).encode(text_file.read_text(encoding="utf-8"), special=False)
    ppl, count, n_win = hf_perplexity(model, tokens, CTX, protocol, limit=4)
    assert d["protocol"] == protocol and d["windows"] == n_win == 4
    assert d["tokens"] == count == 4 * (CTX - 1 if protocol == "full" else CTX - 1 - CTX // 2)
    assert d["ppl"] == pytest.approx(ppl, rel=1e-4)


def test_perplexity_needs_a_window(tiny_gqa, tmp_path, capsys):
    p = tmp_path / "short.txt"
    p.write_text("too short")
    assert main(["perplexity", str(tiny_gqa[1]), "-f", str(p), "--ctx", "32"]) == 1
    assert "fewer than one window" in capsys.readouterr().err


def test_chat_repl(tiny_gqa, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hello there\n/reset\nSecond question\n/exit\nnot read\n"))
    rc = main(["chat", str(tiny_gqa[1]), "-n", "5", "--temp", "0", "--system", "Be brief.", "--ctx", "128"])
    assert rc == 0
    err = capsys.readouterr().err
    assert err.count("reply:") == 2 and "[history cleared]" in err


def test_chat_context_full_message(tiny_gqa, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("Hi\n"))
    assert main(["chat", str(tiny_gqa[1]), "-n", "500", "--temp", "0", "--ctx", "48"]) == 0
    assert "context window full" in capsys.readouterr().err


def test_perplexity_numpy_and_c_agree(tiny_gqa, text_file):
    from maq.runtime import gguf_loader as gl
    from maq.runtime import model as M
    from maq.runtime import perplexity as P
    from maq.runtime import tokenizer as T

    lm = gl.load(tiny_gqa[1])
    toks = T.from_gguf(lm.gguf).encode(text_file.read_text(encoding="utf-8"), special=False)
    a = P.perplexity(M.CModel(lm, n_ctx=CTX, n_threads=2, max_batch=5), toks, CTX, "second-half", limit=2)
    b = P.perplexity(M.NumpyModel(lm, n_ctx=CTX), toks, CTX, "second-half", limit=2)
    assert a.ppl == pytest.approx(b.ppl, rel=1e-5) and a.tokens == b.tokens
    assert np.isfinite(a.ppl)
