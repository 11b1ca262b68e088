"""`maq serve` through the official openai client (issue 17): chat, streaming, completions, models, embeddings,
JSON output, errors in OpenAI's shape, API key, KV prefix reuse between chat turns, a disconnecting client stops
its generation, and 16 concurrent clients x 3 requests all answered or refused (429/503) with bounded RSS."""
from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")
pytest.importorskip("sse_starlette")
openai = pytest.importorskip("openai")

from server_proc import Server  # noqa: E402

KEY = "sk-test-key"


@pytest.fixture(scope="module")
def server(tiny_gqa):
    s = Server(tiny_gqa[1], "--ctx", "256", "--parallel", "2", "--max-queue", "3", "--api-key", KEY)
    yield s
    out = s.stop()
    assert "Traceback" not in out, out


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.base + "/v1", api_key=KEY, max_retries=0, timeout=120)


def _post(server, path, body, key=KEY, raw=None):
    req = urllib.request.Request(server.base + path, data=raw if raw is not None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json",
                                          **({"Authorization": f"Bearer {key}"} if key else {})})
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_models_and_health(client, server):
    models = client.models.list()
    assert [m.id for m in models.data] == ["gqa.f32.gguf"]
    with urllib.request.urlopen(server.base + "/health") as r:
        h = json.loads(r.read())
    assert h["status"] == "ok" and h["slots_idle"] == 2


def test_chat_and_chat_stream(client):
    msgs = [{"role": "user", "content": "Hi"}]
    res = client.chat.completions.create(model="x", messages=msgs, max_tokens=8, temperature=0)
    text = res.choices[0].message.content
    assert res.object == "chat.completion" and res.usage.completion_tokens >= 1
    chunks = list(client.chat.completions.create(model="x", messages=msgs, max_tokens=8, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text
    assert chunks[-1].usage.completion_tokens == res.usage.completion_tokens


def test_completion_and_stream(client):
    res = client.completions.create(model="x", prompt="The capital of France is", max_tokens=6, temperature=0)
    assert res.choices[0].finish_reason == "length" and res.usage.completion_tokens == 6
    chunks = list(client.completions.create(model="x", prompt="The capital of France is", max_tokens=6,
                                            temperature=0, stream=True))
    assert "".join(c.choices[0].text for c in chunks) == res.choices[0].text


def test_embeddings(client):
    res = client.embeddings.create(model="x", input=["hello world", "goodbye"])
    a, b = (d.embedding for d in res.data)
    assert len(a) == 64 and abs(sum(x * x for x in a) - 1) < 1e-4 and a != b


def test_json_object(client):
    pytest.importorskip("llguidance")
    res = client.chat.completions.create(model="x", messages=[{"role": "user", "content": "JSON please"}],
                                         max_tokens=200, temperature=0, response_format={"type": "json_object"})
    assert isinstance(json.loads(res.choices[0].message.content), dict)


def test_errors_are_openai_shaped(server, client):
    code, body = _post(server, "/v1/chat/completions", None, raw=b"{not json")
    assert code == 400 and set(body["error"]) == {"message", "type", "param", "code"}
    code, body = _post(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}],
                                                        "temperature": -5})
    assert code == 400 and "temperature" in body["error"]["message"]
    code, body = _post(server, "/v1/models", {}, key="wrong")
    assert code in (401, 405)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=server.base + "/v1", api_key="wrong", max_retries=0).models.list()
    code, body = _post(server, "/v1/nothing", {})
    assert code == 404 and "error" in body
    import socket

    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as c:   # answered before the body
        c.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
                  b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n{" % (17 << 20))
        head = b""
        while b"at most" not in head:
            part = c.recv(4096)
            if not part:
                break
            head += part
    assert head.startswith(b"HTTP/1.1 413") and b"at most" in head


def test_chat_turns_reuse_the_kv_cache(server):
    msgs = [{"role": "system", "content": "You are a helpful assistant. " * 8}, {"role": "user", "content": "Hi"}]
    _, r1 = _post(server, "/v1/chat/completions", {"messages": msgs, "max_tokens": 4, "temperature": 0})
    msgs += [r1["choices"][0]["message"], {"role": "user", "content": "And then?"}]
    _, r2 = _post(server, "/v1/chat/completions", {"messages": msgs, "max_tokens": 4, "temperature": 0})
    t = r2["timings"]
    assert t["cache_n"] >= r1["usage"]["prompt_tokens"] - 1 and t["prompt_n"] < r2["usage"]["prompt_tokens"] / 2


def test_disconnecting_client_stops_generation(server):
    def health():
        with urllib.request.urlopen(server.base + "/health") as r:
            return json.loads(r.read())
    before = health()["cancelled"]
    req = urllib.request.Request(server.base + "/v1/completions",
                                 data=json.dumps({"prompt": "Once", "max_tokens": -1, "stream": True,
                                                  "temperature": 0}).encode(),
                                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"})
    r = urllib.request.urlopen(req, timeout=60)
    r.readline()
    r.close()
    deadline = time.time() + 30
    while time.time() < deadline and health()["cancelled"] == before:
        time.sleep(0.2)
    h = health()
    assert h["cancelled"] == before + 1
    deadline = time.time() + 10
    while time.time() < deadline and health()["slots_idle"] != 2:
        time.sleep(0.2)
    assert health()["slots_idle"] == 2


def test_16_clients_x_3_requests_answered_or_refused(server, client):
    rss0 = server.rss_kib()
    results: list = []
    lock = threading.Lock()

    def one(i):
        for k in range(3):
            try:
                if (i + k) % 2:
                    r = client.chat.completions.create(model="x", messages=[{"role": "user", "content": f"Hi {i}"}],
                                                       max_tokens=8, temperature=0.5, seed=i)
                    ok = r.choices[0].message.content is not None
                else:
                    chunks = list(client.completions.create(model="x", prompt=f"Count {i}:", max_tokens=8,
                                                            stream=True))
                    ok = chunks[-1].choices[0].finish_reason in ("length", "stop")
                out = "ok" if ok else "bad"
            except openai.APIStatusError as exc:
                out = exc.status_code
            except Exception as exc:  # noqa: BLE001
                out = repr(exc)
            with lock:
                results.append(out)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(16)]
    [t.start() for t in threads]
    [t.join(timeout=300) for t in threads]
    assert len(results) == 48
    assert all(r in ("ok", 429, 503) for r in results), results
    assert results.count("ok") >= 6
    assert server.rss_kib() < rss0 + 150 * 1024
    assert client.models.list().data          # still serving


def test_busy_port_is_one_line_before_loading(tiny_gqa, capsys):
    import socket

    from maq.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", str(tiny_gqa[1]), "--port", str(port)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("maq: error: cannot listen on 127.0.0.1:") and err.count("\n") == 1
    assert main(["serve", str(tiny_gqa[1]), "--parallel", "0"]) == 1
    assert "--parallel 0" in capsys.readouterr().err
