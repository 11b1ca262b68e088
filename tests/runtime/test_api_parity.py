"""llama-cpp-python parity of ``maq.Llama`` (issue 17): max_tokens <= 0, special tokens in prompts, unknown
keywords, embeddings, save/load state, chat logprobs, constrained output, tools, invalid UTF-8, and the per-object
lock (4 threads and interleaved streams give the single-thread greedy answers)."""
from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from maq.errors import MAQError

PROMPTS = ["The capital of France is", "Once upon a time", "1, 2, 3,", "Hello"]


@pytest.fixture(scope="module")
def llm(tiny_gqa):
    from maq import Llama

    return Llama(model_path=str(tiny_gqa[1]), n_ctx=64, n_threads=1, seed=0, verbose=False, embedding=True)


def _greedy(llm, prompt, n=8):
    return llm.create_completion(prompt, max_tokens=n, temperature=0.0)["choices"][0]["text"]


@pytest.mark.parametrize("max_tokens", [None, 0, -1])
def test_max_tokens_nonpositive_runs_until_context_full(llm, max_tokens):
    res = llm.create_completion(PROMPTS[0], max_tokens=max_tokens, temperature=0.0)
    u = res["usage"]
    assert res["choices"][0]["finish_reason"] == "stop" or u["total_tokens"] == llm.n_ctx()
    assert u["completion_tokens"] > 16


def test_special_tokens_in_prompt_are_parsed(llm):
    prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    res = llm.create_completion(prompt, max_tokens=1, temperature=0.0)
    assert res["usage"]["prompt_tokens"] == len(llm.tokenize(prompt.encode(), special=True))
    assert res["usage"]["prompt_tokens"] < len(llm.tokenize(prompt.encode(), special=False))


def test_unknown_keywords_warn_once_naming_them(llm, tiny_gqa):
    from maq import Llama

    with pytest.warns(UserWarning, match="foo") as rec:
        llm.create_completion(PROMPTS[0], max_tokens=1, foo=1, frequency_penalty=0.5)
    assert len(rec) == 1 and "frequency_penalty" in str(rec[0].message)
    with pytest.warns(UserWarning, match="n_gpu_layers, use_mlock"):
        Llama(str(tiny_gqa[1]), n_ctx=16, verbose=False, n_gpu_layers=99, use_mlock=True)


def test_embeddings_are_mean_pooled_normalized_hidden_states(llm, tiny_gqa):
    torch = pytest.importorskip("torch")
    text = "The capital of France is"
    v = np.array(llm.embed(text))
    assert v.shape == (llm._lm.config.dim,) and abs(np.linalg.norm(v) - 1) < 1e-5
    ids = llm.tokenize(text.encode())
    with torch.no_grad():
        h = tiny_gqa[0](torch.tensor([ids]), output_hidden_states=True).hidden_states[-1][0].double().numpy()
    ref = h.mean(axis=0)
    ref /= np.linalg.norm(ref)
    assert np.allclose(v, ref, atol=1e-4)
    res = llm.create_embedding([text, "other"])
    assert res["object"] == "list" and [d["index"] for d in res["data"]] == [0, 1]
    assert np.allclose(res["data"][0]["embedding"], v) and not np.allclose(res["data"][1]["embedding"], v)


def test_embeddings_need_embedding_true(tiny_gqa):
    from maq import Llama

    with pytest.raises(MAQError, match="embedding=True"):
        Llama(str(tiny_gqa[1]), n_ctx=16, verbose=False).embed("x")


def test_save_and_load_state(llm):
    llm.create_completion(PROMPTS[1], max_tokens=4, temperature=0.0)
    state = llm.save_state()
    assert state.n_tokens == len(state.input_ids) > 0
    want = llm.create_completion(list(state.input_ids), max_tokens=6, temperature=0.0)["choices"][0]["text"]
    llm.create_completion(PROMPTS[2], max_tokens=4, temperature=0.0)
    llm.load_state(state)
    assert llm._tokens == [int(t) for t in state.input_ids]
    assert llm.create_completion(list(state.input_ids), max_tokens=6, temperature=0.0)["choices"][0]["text"] == want


def test_chat_logprobs(llm):
    res = llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=4, temperature=0.0,
                                     logprobs=True, top_logprobs=2)
    content = res["choices"][0]["logprobs"]["content"]
    assert len(content) == res["usage"]["completion_tokens"]
    with pytest.raises(MAQError, match="top_logprobs"):
        llm.create_chat_completion([{"role": "user", "content": "Hi"}], logprobs=True, top_logprobs=10**9)
    for c in content:
        assert c["logprob"] <= 0 and len(c["top_logprobs"]) >= 2
        assert c["top_logprobs"][0]["logprob"] >= c["logprob"] - 1e-6


def test_json_schema_and_grammar_constrain_output(llm):
    pytest.importorskip("llguidance")
    schema = {"type": "object", "properties": {"a": {"enum": ["x", "y"]}}, "required": ["a"],
              "additionalProperties": False}
    res = llm.create_chat_completion([{"role": "user", "content": "Hi"}], max_tokens=40, temperature=0.0,
                                     response_format={"type": "json_schema", "json_schema": {"schema": schema}})
    assert json.loads(res["choices"][0]["message"]["content"])["a"] in ("x", "y")
    res = llm.create_completion("Answer:", max_tokens=10, temperature=0.7, seed=3,
                                grammar='root ::= "yes" | "no"')
    assert res["choices"][0]["text"] in ("yes", "no") and res["choices"][0]["finish_reason"] == "stop"
    with pytest.raises(MAQError, match="response_format"):
        llm.create_completion("x", response_format={"type": "xml"})


def test_tools_without_template_support_is_an_error(llm):
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    with pytest.raises(MAQError, match="tools"):
        llm.create_chat_completion([{"role": "user", "content": "Hi"}], tools=tools)


def test_tool_call_blocks_are_parsed():
    from maq.runtime.api import _tool_calls

    calls = _tool_calls('x <tool_call>{"name": "f", "arguments": {"a": 1}}</tool_call>')
    assert calls[0]["function"] == {"name": "f", "arguments": '{"a": 1}'}


def test_invalid_utf8_prompts(llm):
    bad = b"caf\xe9".decode("utf-8", errors="surrogateescape")
    assert llm.create_completion(bad, max_tokens=1)["usage"]["prompt_tokens"] > 0
    assert llm.create_chat_completion([{"role": "user", "content": "\ud800x"}], max_tokens=1)["choices"]


def test_threads_queue_and_match_single_thread(llm):
    want = {p: _greedy(llm, p) for p in PROMPTS}
    got: dict = {}
    errors: list = []

    def worker(i):
        try:
            for k in range(3):
                p = PROMPTS[(i + k) % len(PROMPTS)]
                got[(i, k)] = (p, _greedy(llm, p))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert not errors and len(got) == 12
    assert all(text == want[p] for p, text in got.values())


def test_interleaved_streams_from_two_threads(llm):
    want = [_greedy(llm, p, 10) for p in PROMPTS[:2]]
    out = ["", ""]
    barrier = threading.Barrier(2)

    def consume(i):
        stream = llm.create_completion(PROMPTS[i], max_tokens=10, temperature=0.0, stream=True)
        barrier.wait()
        for ch in stream:
            out[i] += ch["choices"][0]["text"]
    threads = [threading.Thread(target=consume, args=(i,)) for i in range(2)]
    [t.start() for t in threads]
    [t.join(timeout=120) for t in threads]
    assert out == want


def test_two_streams_in_one_thread_refused_not_deadlocked(llm):
    a = llm.create_completion(PROMPTS[0], max_tokens=5, temperature=0.0, stream=True)
    next(a)
    b = llm.create_completion(PROMPTS[1], max_tokens=5, temperature=0.0, stream=True)
    with pytest.raises(MAQError, match="busy"):
        next(b)
    a.close()
    assert _greedy(llm, PROMPTS[1], 3)


def test_tools_where_the_template_supports_them(tiny_gqa):
    """A template that reads ``tools`` gets them; a ``<tool_call>`` reply (forced here by a grammar: the tiny model
    is random) comes back as OpenAI tool_calls."""
    pytest.importorskip("llguidance")
    from maq import Llama

    llm = Llama(str(tiny_gqa[1]), n_ctx=128, n_threads=1, verbose=False)
    llm.tokenizer_.chat_template = ("{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n"
                                    "{% endfor %}{% if tools %}<|im_start|>system\nTools: {{ tools | tojson }}"
                                    "<|im_end|>\n{% endif %}<|im_start|>assistant\n")
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    msgs = [{"role": "user", "content": "Weather?"}]
    assert "get_weather" in llm.apply_chat_template(msgs, tools=tools)
    g = 'root ::= "<tool_call>{\\"name\\": \\"get_weather\\", \\"arguments\\": {\\"city\\": \\"Paris\\"}}</tool_call>"'
    res = llm.create_chat_completion(msgs, tools=tools, grammar=g, max_tokens=60, temperature=0)
    ch = res["choices"][0]
    assert ch["finish_reason"] == "tool_calls" and ch["message"]["content"] is None
    call = ch["message"]["tool_calls"][0]["function"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}


def test_new_context_shares_weights_not_the_cache(llm):
    other = llm.new_context()
    assert other._lm is llm._lm and other.model is not llm.model and other._lock is not llm._lock
    want = _greedy(llm, PROMPTS[0])
    assert _greedy(other, PROMPTS[2]) == _greedy(llm, PROMPTS[2]) and _greedy(llm, PROMPTS[0]) == want
    assert other._tokens[:3] != llm._tokens[:3]
