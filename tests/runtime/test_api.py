"""The llama-cpp-python shaped API on a tiny F32 model: shapes, streaming, stops, seeds, echo+logprobs, chat."""
from __future__ import annotations

import numpy as np
import pytest

from maq.errors import MAQError
from maq.runtime.api import StopMatcher

PROMPT = "The capital of France is"


@pytest.fixture(scope="module")
def llm(tiny_gqa):
    from maq import Llama

    return Llama(model_path=str(tiny_gqa[1]), n_ctx=64, n_threads=1, seed=0, verbose=False)


def test_import_and_basics(llm):
    import maq

    assert maq.Llama is type(llm)
    assert llm.n_ctx() == 64 and llm.n_vocab() == 49152 and llm.token_eos() == 2
    ids = llm.tokenize(PROMPT.encode())
    assert ids == [504, 3575, 282, 4649, 314]          # add_bos_token is false in this vocabulary
    assert llm.detokenize(ids) == PROMPT.encode()


def test_completion_shape_and_greedy_reproducible(llm):
    a = llm.create_completion(PROMPT, max_tokens=6, temperature=0.0)
    assert a["object"] == "text_completion" and a["id"].startswith("cmpl-")
    ch = a["choices"][0]
    assert set(ch) == {"text", "index", "logprobs", "finish_reason"} and ch["finish_reason"] == "length"
    assert a["usage"] == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    b = llm(PROMPT, max_tokens=6, temperature=0.0)
    assert b["choices"][0]["text"] == ch["text"]
    chunks = list(llm.create_completion(PROMPT, max_tokens=6, temperature=0.0, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == ch["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_seeded_sampling(llm):
    kw = dict(max_tokens=8, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0)
    a = llm.create_completion(PROMPT, seed=11, **kw)["choices"][0]["text"]
    b = llm.create_completion(PROMPT, seed=11, **kw)["choices"][0]["text"]
    c = llm.create_completion(PROMPT, seed=12, **kw)["choices"][0]["text"]
    assert a == b and a != c


def test_greedy_matches_transformers_generate(llm, tiny_gqa):
    torch = pytest.importorskip("torch")
    model = tiny_gqa[0]
    ids = llm.tokenize(PROMPT.encode())
    with torch.no_grad():
        out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=None,
                             pad_token_id=0)[0, len(ids):].tolist()
    res = llm.create_completion(PROMPT, max_tokens=8, temperature=0.0)
    assert res["choices"][0]["text"] == llm.detokenize(out).decode("utf-8", errors="replace")


def test_echo_logprobs_match_transformers(llm, tiny_gqa):
    torch = pytest.importorskip("torch")
    ids = llm.tokenize(PROMPT.encode())
    res = llm.create_completion(PROMPT, max_tokens=1, temperature=0.0, echo=True, logprobs=3)
    lp = res["choices"][0]["logprobs"]
    assert res["choices"][0]["text"].startswith(PROMPT)
    assert len(lp["tokens"]) == len(ids) + 1 and "".join(lp["tokens"]) == res["choices"][0]["text"]
    assert lp["token_logprobs"][0] is None and lp["top_logprobs"][0] is None
    with torch.no_grad():
        logits = tiny_gqa[0](torch.tensor([ids])).logits[0].double()
    want = torch.log_softmax(logits, -1)
    for i in range(1, len(ids)):
        assert lp["token_logprobs"][i] == pytest.approx(float(want[i - 1, ids[i]]), abs=1e-4)
        assert len(lp["top_logprobs"][i]) >= 3
    # the generated token is the greedy one: its logprob is the top of its distribution
    last = lp["top_logprobs"][-1]
    assert lp["token_logprobs"][-1] == pytest.approx(max(last.values()))
    assert lp["text_offset"] == sorted(lp["text_offset"]) and lp["text_offset"][0] == 0


def test_logprobs_without_echo(llm):
    res = llm.create_completion(PROMPT, max_tokens=3, temperature=0.0, logprobs=2)
    lp = res["choices"][0]["logprobs"]
    assert len(lp["tokens"]) == 3 and all(x is not None and x <= 0 for x in lp["token_logprobs"])
    assert lp["text_offset"][0] == len(PROMPT)


def test_stop_strings(llm):
    full = llm.create_completion(PROMPT, max_tokens=12, temperature=0.0)["choices"][0]["text"]
    assert len(full) > 4
    stop = full[3:5]
    cut = full[:full.index(stop)]
    res = llm.create_completion(PROMPT, max_tokens=12, temperature=0.0, stop=[stop])
    assert res["choices"][0]["text"] == cut and res["choices"][0]["finish_reason"] == "stop"
    chunks = list(llm.create_completion(PROMPT, max_tokens=12, temperature=0.0, stop=stop, stream=True))
    assert "".join(c["choices"][0]["text"] for c in chunks) == cut
    res = llm.create_completion(PROMPT, max_tokens=12, temperature=0.0, stop=[stop], logprobs=1)
    toks = res["choices"][0]["logprobs"]["tokens"]
    assert "".join(toks).startswith(cut) and res["usage"]["completion_tokens"] == len(toks) < 12


def test_stop_matcher_holds_back_partial_matches():
    m = StopMatcher(["END"])
    assert m.push("abcE") == "abc"
    assert m.push("N") == ""
    assert m.push("x") == "ENx"
    assert m.push("yEND tail") == "y" and m.stopped and m.text == "abcENxy"


def test_context_limit(tiny_gqa):
    from maq import Llama

    small = Llama(model_path=str(tiny_gqa[1]), n_ctx=12, n_threads=1, verbose=False)
    res = small.create_completion(PROMPT, max_tokens=100, temperature=0.0)
    assert res["choices"][0]["finish_reason"] == "length"
    assert res["usage"]["completion_tokens"] == 12 - 5
    assert small.last_timings["context_full"]
    with pytest.raises(MAQError, match="context window"):
        small.create_completion("word " * 20, max_tokens=1)


def test_cache_reuse_gives_same_result(llm, tiny_gqa):
    from maq import Llama

    llm.create_completion(PROMPT, max_tokens=4, temperature=0.0)
    longer = PROMPT + " a city in"
    a = llm.create_completion(longer, max_tokens=5, temperature=0.0)["choices"][0]["text"]
    fresh = Llama(model_path=str(tiny_gqa[1]), n_ctx=64, n_threads=1, verbose=False)
    assert fresh.create_completion(longer, max_tokens=5, temperature=0.0)["choices"][0]["text"] == a


def test_chat_completion(llm):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    res = llm.create_chat_completion(msgs, max_tokens=5, temperature=0.0)
    assert res["object"] == "chat.completion" and res["id"].startswith("chatcmpl-")
    msg = res["choices"][0]["message"]
    assert msg["role"] == "assistant" and isinstance(msg["content"], str)
    assert res["usage"]["prompt_tokens"] == len(llm.tokenize(llm.apply_chat_template(msgs).encode(), special=True))
    chunks = list(llm.create_chat_completion(msgs, max_tokens=5, temperature=0.0, stream=True))
    assert chunks[0]["object"] == "chat.completion.chunk" and chunks[0]["choices"][0]["delta"] == {"role": "assistant"}
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == msg["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_numpy_engine_agrees(tiny_gqa, llm):
    from maq import Llama

    ref = Llama(model_path=str(tiny_gqa[1]), n_ctx=64, verbose=False, engine="numpy")
    a = ref.create_completion(PROMPT, max_tokens=5, temperature=0.0)["choices"][0]["text"]
    assert a == llm.create_completion(PROMPT, max_tokens=5, temperature=0.0)["choices"][0]["text"]


def test_stream_with_echo_starts_with_the_prompt(llm):
    chunks = list(llm.create_completion(PROMPT, max_tokens=3, temperature=0.0, stream=True, echo=True))
    assert chunks[0]["choices"][0]["text"] == PROMPT
    full = llm.create_completion(PROMPT, max_tokens=3, temperature=0.0, echo=True)["choices"][0]["text"]
    assert "".join(c["choices"][0]["text"] for c in chunks) == full
