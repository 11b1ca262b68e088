"""Both protocols from one pass equal the runtime's own perplexity, window by window; resume; prefixes."""
from __future__ import annotations

import math

import numpy as np
import pytest

from maq.evaluation import ppl
from maq.runtime import perplexity as rp


@pytest.fixture(scope="module")
def engine_tokens(tiny_f32, wiki_text):
    from maq.runtime.api import Llama

    llm = Llama(str(tiny_f32), n_ctx=256, n_threads=1, n_batch=48, verbose=False)
    toks, bos = ppl.tokenize_file(llm, str(wiki_text))
    assert len(toks) >= 4 * 256
    return llm, toks, bos


@pytest.mark.parametrize("ctx", [256, 100])
def test_one_pass_equals_runtime_perplexity(engine_tokens, ctx):
    llm, toks, bos = engine_tokens
    ws = ppl.run(llm.model, toks, ctx, limit=3, bos_id=bos)
    assert [w.index for w in ws] == [0, 1, 2]
    for proto in rp.PROTOCOLS:
        ref = rp.perplexity(llm.model, list(toks), ctx, proto, limit=3, bos_id=bos)
        got = ppl.summarize(ws, proto)
        assert got["tokens"] == ref.tokens and got["windows"] == ref.windows == 3
        assert got["ppl"] == pytest.approx(ref.ppl, rel=1e-9)
    lo, hi = rp.window_targets(ctx, "second-half")
    assert ws[0].tokens == {"full": ctx - 1, "second-half": hi - lo + 1}


def test_bos_variant_runs_second_half_separately(engine_tokens):
    llm, toks, _ = engine_tokens
    bos = 1
    ws = ppl.run(llm.model, toks, 128, limit=2, bos_id=bos)
    ref = rp.perplexity(llm.model, list(toks), 128, "second-half", limit=2, bos_id=bos)
    assert ppl.summarize(ws, "second-half")["ppl"] == pytest.approx(ref.ppl, rel=1e-9)
    ref_full = rp.perplexity(llm.model, list(toks), 128, "full", limit=2, bos_id=bos)
    assert ppl.summarize(ws, "full")["ppl"] == pytest.approx(ref_full.ppl, rel=1e-9)


def test_resume_and_json(engine_tokens):
    llm, toks, bos = engine_tokens
    full = ppl.run(llm.model, toks, 128, limit=4, bos_id=bos)
    seen = []
    part = ppl.from_json(ppl.to_json(full[:2]))
    resumed = ppl.run(llm.model, toks, 128, limit=4, bos_id=bos, done=part, on_window=lambda w, n: seen.append(w.index))
    assert seen == [2, 3]                                    # only the missing windows ran
    for a, b in zip(full, resumed):
        assert a.nll["full"] == pytest.approx(b.nll["full"], rel=1e-12)
    s2 = ppl.summarize(full, "full", first=2)
    assert s2["windows"] == 2 and s2["ppl"] == pytest.approx(
        math.exp(sum(w.nll["full"] for w in full[:2]) / sum(w.tokens["full"] for w in full[:2])))


def test_summarize_empty_and_overflow():
    assert math.isnan(ppl.summarize([], "full")["ppl"])
    w = ppl.WindowNLL(0, {"full": 1e6}, {"full": 10})
    assert ppl.summarize([w], "full")["ppl"] == float("inf")


def test_too_short(engine_tokens):
    from maq.errors import MAQError

    llm, toks, bos = engine_tokens
    with pytest.raises(MAQError, match="fewer than one window"):
        ppl.run(llm.model, np.asarray(toks[:50]), 100)
