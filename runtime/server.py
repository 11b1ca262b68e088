"""`maq serve`: an OpenAI-compatible HTTP server (Starlette + uvicorn + sse-starlette) and a chat page at ``/``.

Endpoints: ``POST /v1/chat/completions`` and ``/v1/completions`` (``stream`` as server-sent events or one JSON),
``GET /v1/models``, ``POST /v1/embeddings``, ``GET /health``, ``GET /`` (the chat page, runtime/static/index.html).
Errors use OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``.

Slots: ``--parallel N`` ``Llama`` objects sharing the loaded weights (``Llama.new_context``), each with its own KV
cache; a request takes a
free slot (the one whose cache shares the longest prefix with its prompt, so a chat's next turn re-uses the K/V of
the history) or waits in a queue of at most ``--max-queue`` requests; past that it is refused with 503 at once.
Each generation runs in a worker thread; a client that disconnects sets the slot's ``cancel_event`` and the
generation stops at its next token. Embeddings run on slot 0 (under its ``Llama`` lock: they queue behind it).

Needs the ``server`` extra: ``pip install 'maq[server]'``.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import warnings
from dataclasses import dataclass, field

from maq.errors import MAQError

log = logging.getLogger(__name__)

STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
MAX_BODY = 16 << 20      # bytes of JSON per request
# request fields handled here (not passed on to Llama)
_SERVER_FIELDS = {"model", "n", "stream", "stream_options", "user", "prompt", "messages", "cache_prompt"}


def _deps():
    try:
        import sse_starlette  # noqa: F401
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as exc:
        raise MAQError(f"maq serve needs the server extra ({exc.name} is missing): pip install 'maq[server]'") \
            from None


def error_body(message: str, type_: str = "invalid_request_error", code: str | int | None = None,
               param: str | None = None) -> dict:
    """OpenAI's error JSON."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


class HTTPError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", code=None,
                 param: str | None = None):
        super().__init__(message)
        self.status, self.type_, self.code, self.param = status, type_, code, param


@dataclass
class Slot:
    """One ``Llama`` (its own KV cache) and whether a request holds it."""
    index: int
    llm: object
    busy: bool = False
    cancel: threading.Event = field(default_factory=threading.Event)


class SlotPool:
    """``parallel`` slots and a bounded FIFO of waiting requests (asyncio side; one event loop)."""

    def __init__(self, llamas: list, max_queue: int):
        self.slots = [Slot(i, llm) for i, llm in enumerate(llamas)]
        self.max_queue = max_queue
        self.waiting = 0
        self.cancelled = 0        # generations stopped because their client disconnected
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    def stats(self) -> dict:
        busy = sum(s.busy for s in self.slots)
        return {"slots_idle": len(self.slots) - busy, "slots_processing": busy, "queued": self.waiting,
                "cancelled": self.cancelled}

    async def acquire(self, prompt_tokens: list[int] | None) -> Slot:
        cond = self._condition()
        async with cond:
            if all(s.busy for s in self.slots):
                if self.waiting >= self.max_queue:
                    raise HTTPError(503, f"server busy: {len(self.slots)} slots processing and {self.waiting} "
                                         f"requests queued (--max-queue {self.max_queue}); retry later",
                                    "server_error", "overloaded")
                self.waiting += 1
                try:
                    await cond.wait_for(lambda: any(not s.busy for s in self.slots))
                finally:
                    self.waiting -= 1
            free = [s for s in self.slots if not s.busy]
            slot = max(free, key=lambda s: _common_prefix(s.llm._tokens, prompt_tokens or []))
            slot.busy = True
            slot.cancel = threading.Event()
            slot.llm.cancel_event = slot.cancel
            return slot

    async def release(self, slot: Slot) -> None:
        cond = self._condition()
        async with cond:
            slot.busy = False
            slot.llm.cancel_event = None
            cond.notify(1)


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _timings(llm) -> dict:
    """llama-server's ``timings`` object (prompt_n counts the tokens evaluated; cache_n those re-used)."""
    t = llm.last_timings or {}
    pn, ps = t.get("prompt_evaluated", 0), t.get("prompt_s", 0.0)
    gn, gs = t.get("gen_tokens", 0), t.get("gen_s", 0.0)
    return {"cache_n": t.get("prompt_tokens", 0) - pn, "prompt_n": pn, "prompt_ms": round(ps * 1e3, 2),
            "prompt_per_second": round(pn / ps, 2) if ps else 0.0, "predicted_n": gn,
            "predicted_ms": round(gs * 1e3, 2), "predicted_per_second": round(gn / gs, 2) if gs else 0.0}


def create_app(llamas: list, *, model_name: str, api_key: str | None = None, max_queue: int = 16):
    """The ASGI app over ``llamas`` (one per slot, all the same model)."""
    _deps()
    import anyio
    import anyio.to_thread
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse
    from starlette.routing import Route

    pool = SlotPool(llamas, max_queue)
    created = int(time.time())
    first = llamas[0]

    def check_key(request: Request) -> None:
        if api_key and request.headers.get("authorization", "") != f"Bearer {api_key}":
            raise HTTPError(401, "invalid or missing API key (Authorization: Bearer ...)", "authentication_error",
                            "invalid_api_key")

    async def body(request: Request) -> dict:
        size = request.headers.get("content-length", "")
        if size.isdigit() and int(size) > MAX_BODY:
            raise HTTPError(413, f"request body of {size} bytes: at most {MAX_BODY}")
        raw = b""
        async for part in request.stream():
            raw += part
            if len(raw) > MAX_BODY:
                raise HTTPError(413, f"request body over {MAX_BODY} bytes")
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise HTTPError(400, "request body: expected a JSON object")
        if data.get("n", 1) != 1:
            raise HTTPError(400, "n: only n = 1 is supported", param="n")
        return data

    def params(data: dict) -> dict:
        kw = {k: v for k, v in data.items() if k not in _SERVER_FIELDS}
        if "max_completion_tokens" in kw:
            kw["max_tokens"] = kw.pop("max_completion_tokens")
        lp = kw.get("logprobs")
        if isinstance(lp, int) and not isinstance(lp, bool) and lp > 20:    # completions: top-N per token
            raise HTTPError(400, f"logprobs = {lp}: at most 20 per token", param="logprobs")
        return kw

    def prompt_tokens(data: dict, chat: bool) -> list[int] | None:
        """The prompt's tokens, for choosing the slot whose cache shares the longest prefix (best effort)."""
        try:
            if chat:
                text = first.apply_chat_template(data["messages"])
            else:
                text = data.get("prompt")
                if not isinstance(text, str):
                    return None
            return first.tokenize(text, special=True)
        except Exception:  # noqa: BLE001 - invalid requests are reported by the call itself
            return None

    async def watch_disconnect(request: Request, slot: Slot, done: asyncio.Event) -> None:
        while not done.is_set():
            if await request.is_disconnected():
                slot.cancel.set()
                pool.cancelled += 1
                log.info("client disconnected: generation on slot %d stopped", slot.index)
                return
            try:
                await asyncio.wait_for(done.wait(), 0.25)
            except asyncio.TimeoutError:
                pass

    async def generate(request: Request, chat: bool):
        check_key(request)
        data = await body(request)
        if chat and not isinstance(data.get("messages"), list):
            raise HTTPError(400, "messages: expected a list of {role, content}", param="messages")
        if not chat and "prompt" not in data:
            raise HTTPError(400, "prompt: required", param="prompt")
        stream = bool(data.get("stream", False))
        include_usage = bool((data.get("stream_options") or {}).get("include_usage"))
        kw = params(data)
        toks = prompt_tokens(data, chat)
        slot = await pool.acquire(toks)
        llm = slot.llm
        fresh = data.get("cache_prompt", True) is False       # llama-server's switch: do not re-use the slot's cache

        def call():
            if fresh:
                llm.reset()
            if chat:
                return llm.create_chat_completion(data["messages"], stream=stream, **kw)
            return llm.create_completion(data["prompt"], stream=stream, **kw)
        if not stream:
            done = asyncio.Event()
            watcher = asyncio.ensure_future(watch_disconnect(request, slot, done))
            try:
                res = await anyio.to_thread.run_sync(_run_logged(call))
                res["model"] = model_name
                res["timings"] = _timings(llm)
                return JSONResponse(res)
            finally:
                done.set()
                with anyio.CancelScope(shield=True):
                    await watcher
                    await pool.release(slot)
        # streaming: a worker thread runs the whole stream (one thread: the Llama lock's owner stays put) and
        # hands chunks to the event loop; the first chunk (or the error) is awaited before the response starts
        loop = asyncio.get_running_loop()
        q: asyncio.Queue = asyncio.Queue()

        def worker():
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    it = call()
                    for w in caught:
                        log.warning("%s", w.message)
                for chunk in it:
                    if slot.cancel.is_set():
                        it.close()
                        break
                    loop.call_soon_threadsafe(q.put_nowait, ("chunk", chunk))
                loop.call_soon_threadsafe(q.put_nowait, ("end", None))
            except BaseException as exc:  # noqa: BLE001 - handed to the event loop
                loop.call_soon_threadsafe(q.put_nowait, ("error", exc))

        thread = threading.Thread(target=worker, name=f"maq-slot{slot.index}", daemon=True)
        thread.start()
        kind, item = await q.get()
        if kind == "error":
            slot.cancel.set()
            await asyncio.get_running_loop().run_in_executor(None, thread.join)
            await pool.release(slot)
            raise item

        async def events():
            nonlocal kind, item
            usage = None
            ended = False
            try:
                while kind == "chunk":
                    item["model"] = model_name
                    if item["choices"][0].get("finish_reason") is not None:
                        item["timings"] = _timings(llm)
                        t = llm.last_timings
                        usage = {"prompt_tokens": t.get("prompt_tokens", 0),
                                 "completion_tokens": t.get("gen_tokens", 0),
                                 "total_tokens": t.get("prompt_tokens", 0) + t.get("gen_tokens", 0)}
                    yield {"data": json.dumps(item)}
                    kind, item = await q.get()
                if kind == "error":
                    log.error("generation failed: %s", item)
                    yield {"data": json.dumps(error_body(str(item), "server_error"))}
                    return
                if include_usage and usage:
                    yield {"data": json.dumps({"id": "", "object": "chat.completion.chunk" if chat else
                                               "text_completion", "created": int(time.time()), "model": model_name,
                                               "choices": [], "usage": usage})}
                yield {"data": "[DONE]"}
                ended = True
            finally:
                if not ended and kind == "chunk":
                    pool.cancelled += 1
                    log.info("client disconnected: generation on slot %d stopped", slot.index)
                slot.cancel.set()      # no-op when the stream ended; stops the generation when the client left
                with anyio.CancelScope(shield=True):      # a cancelled stream must still free its slot
                    await anyio.to_thread.run_sync(thread.join)
                    await pool.release(slot)

        return EventSourceResponse(events(), ping=15)

    def _run_logged(call):
        def run():
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                try:
                    return call()
                finally:
                    for w in caught:
                        log.warning("%s", w.message)
        return run

    async def chat_completions(request: Request):
        return await generate(request, chat=True)

    async def completions(request: Request):
        return await generate(request, chat=False)

    async def embeddings(request: Request):
        check_key(request)
        data = await body(request)
        inp = data.get("input")
        fmt = data.get("encoding_format") or "float"
        if fmt not in ("float", "base64"):
            raise HTTPError(400, "encoding_format: expected 'float' or 'base64'", param="encoding_format")
        if pool.waiting >= pool.max_queue:
            raise HTTPError(503, "server busy; retry later", "server_error", "overloaded")
        res = await anyio.to_thread.run_sync(lambda: first.create_embedding(inp))
        res["model"] = model_name
        if fmt == "base64":      # what the openai client asks for: float32 little-endian bytes, base64
            import base64

            import numpy as np

            for d in res["data"]:
                d["embedding"] = base64.b64encode(np.asarray(d["embedding"], dtype="<f4").tobytes()).decode()
        return JSONResponse(res)

    async def models(request: Request):
        check_key(request)
        return JSONResponse({"object": "list", "data": [{"id": model_name, "object": "model", "created": created,
                                                         "owned_by": "maq", "meta": {"n_ctx": first.n_ctx(),
                                                                                     "n_vocab": first.n_vocab()}}]})

    async def health(request: Request):
        return JSONResponse({"status": "ok", **pool.stats()})

    async def index(request: Request):
        return FileResponse(os.path.join(STATIC_DIR, "index.html"), media_type="text/html")

    async def on_http_error(request, exc: HTTPError):
        return JSONResponse(error_body(str(exc), exc.type_, exc.code, exc.param), status_code=exc.status)

    async def on_maq_error(request, exc: MAQError):
        return JSONResponse(error_body(" ".join(str(exc).split())), status_code=400)

    async def on_starlette_error(request, exc: StarletteHTTPException):
        return JSONResponse(error_body(str(exc.detail), "invalid_request_error" if exc.status_code < 500 else
                                       "server_error"), status_code=exc.status_code)

    async def on_error(request, exc: Exception):
        log.exception("internal error")
        return JSONResponse(error_body(f"internal error: {type(exc).__name__}: {exc}", "server_error"),
                            status_code=500)

    routes = [Route("/", index), Route("/health", health), Route("/v1/models", models),
              Route("/v1/chat/completions", chat_completions, methods=["POST"]),
              Route("/v1/completions", completions, methods=["POST"]),
              Route("/v1/embeddings", embeddings, methods=["POST"]),
              # llama-server's aliases
              Route("/chat/completions", chat_completions, methods=["POST"]),
              Route("/completions", completions, methods=["POST"]), Route("/models", models)]
    app = Starlette(routes=routes, exception_handlers={HTTPError: on_http_error, MAQError: on_maq_error,
                                                       StarletteHTTPException: on_starlette_error,
                                                       Exception: on_error})
    app.state.pool = pool
    return app


def load_slots(model: str, parallel: int, **llama_kwargs) -> list:
    """``parallel`` Llama objects sharing one loaded model (``Llama.new_context``: one KV cache each)."""
    from maq.runtime.api import Llama

    slots = [Llama(model, embedding=True, verbose=False, **llama_kwargs)]
    for _ in range(parallel - 1):
        slots.append(slots[0].new_context())
    return slots


def _check_listen(host: str, port: int) -> None:
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise MAQError(f"--host {host}: cannot resolve ({exc.strerror})") from None
    family, _, _, _, addr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(addr)
        except OSError as exc:
            raise MAQError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def serve(model: str, *, host: str = "127.0.0.1", port: int = 8080, api_key: str | None = None,
          parallel: int = 1, max_queue: int = 16, **llama_kwargs) -> None:
    """Load the model and serve until interrupted."""
    _deps()
    import uvicorn

    if parallel < 1:
        raise MAQError(f"--parallel {parallel}: expected at least 1 slot")
    if max_queue < 0:
        raise MAQError(f"--max-queue {max_queue}: expected 0 or more")
    if not 0 <= port <= 65535:
        raise MAQError(f"--port {port}: expected 0..65535")
    _check_listen(host, port)         # before the model loads: a busy port is one line at once
    llamas = load_slots(model, parallel, **llama_kwargs)
    name = os.path.basename(llamas[0].model_path)
    app = create_app(llamas, model_name=name, api_key=api_key, max_queue=max_queue)
    print(f"maq serve: {name} on http://{host}:{port} ({parallel} slot(s), {llamas[0].n_threads} threads each, "
          f"n_ctx {llamas[0].n_ctx()}, queue {max_queue}); chat page at /, API at /v1", flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
    except OSError as exc:
        raise MAQError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


if __name__ == "__main__":     # python -m maq.runtime.server MODEL [flags]: the same as `maq serve`
    import sys

    from maq.cli import main

    sys.exit(main(["serve", *sys.argv[1:]]))
