"""Perplexity in both protocols (runtime/perplexity.py's definitions) from one pass over the windows.

The ``full`` protocol scores logits 0..ctx-2 of each window, ``second-half`` logits ctx/2..ctx-2. When the model
does not add BOS (SmolLM2) the two protocols see the same windows, so one forward pass gives both; with add_bos the
second-half windows start with BOS and get their own pass. Per-window NLL sums are kept, so any prefix of the
windows (e.g. the first 10) can be recomputed from a full run, and an interrupted run resumes where it stopped.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable

import numpy as np

from maq.errors import MAQError
from maq.runtime import model as model_mod
from maq.runtime.perplexity import PROTOCOLS, nll_rows, window_targets


@dataclasses.dataclass
class WindowNLL:
    """Summed NLL (nats) and scored tokens of one window, per protocol."""

    index: int
    nll: dict[str, float]
    tokens: dict[str, int]


def window_nll(engine, win: np.ndarray, protocols: tuple[str, ...], buf: np.ndarray) -> tuple[dict, dict]:
    """Forward one window from an empty cache; summed NLL per protocol over its scored positions."""
    ctx = len(win)
    spans = {p: window_targets(ctx, p) for p in protocols}
    lo = min(a for a, _ in spans.values())
    chunk = buf.shape[0]
    sums = {p: 0.0 for p in protocols}
    counts = {p: 0 for p in protocols}
    for start in range(0, ctx, chunk):
        end = min(ctx, start + chunk)
        if end - 1 < lo:
            engine.forward(win[start:end], start, model_mod.LOGITS_NONE)
            continue
        lg = engine.forward(win[start:end], start, model_mod.LOGITS_ALL, out=buf)
        p0 = max(start, lo)
        p1 = min(end - 1, ctx - 2)
        if p1 < p0:
            continue
        nll = nll_rows(lg[p0 - start:p1 - start + 1], win[p0 + 1:p1 + 2])   # positions p0..p1
        for p, (a, b) in spans.items():
            x0, x1 = max(a, p0), min(b, p1)
            if x1 >= x0:
                sums[p] += float(nll[x0 - p0:x1 - p0 + 1].sum())
                counts[p] += x1 - x0 + 1
    return sums, counts


def windows(tokens: np.ndarray, ctx: int, limit: int | None) -> int:
    n = len(tokens) // ctx
    if limit:
        n = min(n, limit)
    if n == 0:
        raise MAQError(f"text has {len(tokens)} tokens: fewer than one window of ctx {ctx}")
    return n


def run(engine, tokens, ctx: int, limit: int | None = None, bos_id: int | None = None,
        done: list[WindowNLL] | None = None,
        on_window: Callable[[WindowNLL, int], None] | None = None) -> list[WindowNLL]:
    """Per-window NLL of both protocols. ``bos_id``: the model adds BOS (second-half windows start with it: a
    separate pass). ``done``: windows already measured (skipped). ``on_window(w, n)`` after each window."""
    if ctx < 4 or ctx > engine.n_ctx:
        raise MAQError(f"ctx {ctx}: expected 4..{engine.n_ctx} (the engine's context)")
    toks = np.asarray(tokens, dtype=np.int32)
    n_win = windows(toks, ctx, limit)
    out = {w.index: w for w in (done or []) if w.index < n_win}
    buf = np.empty((max(1, getattr(engine, "max_batch", 128)), engine.cfg.vocab_size), dtype=np.float32)
    for i in range(n_win):
        if i in out:
            continue
        win = toks[i * ctx:(i + 1) * ctx].copy()
        if bos_id is None:
            s, c = window_nll(engine, win, PROTOCOLS, buf)
        else:
            s, c = window_nll(engine, win, ("full",), buf)
            win[0] = bos_id
            s2, c2 = window_nll(engine, win, ("second-half",), buf)
            s.update(s2)
            c.update(c2)
        out[i] = WindowNLL(i, s, c)
        if on_window is not None:
            on_window(out[i], n_win)
    return [out[i] for i in range(n_win)]


def summarize(ws: list[WindowNLL], protocol: str, first: int | None = None) -> dict:
    """{ppl, nll, tokens, windows} over the first ``first`` windows (all by default)."""
    sel = ws[:first] if first else ws
    tot = sum(w.nll[protocol] for w in sel)
    cnt = sum(w.tokens[protocol] for w in sel)
    if not cnt:
        return {"ppl": float("nan"), "nll": float("nan"), "tokens": 0, "windows": 0}
    mean = tot / cnt
    ppl = math.exp(mean) if mean < 700 else float("inf")
    return {"ppl": ppl, "nll": mean, "tokens": cnt, "windows": len(sel)}


def to_json(ws: list[WindowNLL]) -> list[dict]:
    return [{"i": w.index, "nll": w.nll, "tokens": w.tokens} for w in ws]


def from_json(rows: list[dict]) -> list[WindowNLL]:
    return [WindowNLL(r["i"], {k: float(v) for k, v in r["nll"].items()},
                      {k: int(v) for k, v in r["tokens"].items()}) for r in rows]


def tokenize_file(llm, path: str) -> tuple[np.ndarray, int | None]:
    """Tokens of a text file as ``maq perplexity`` makes them (BOS only if the GGUF adds it), and the BOS id to
    put at the start of second-half windows (None when the model does not add BOS)."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise MAQError(f"{path}: cannot read as UTF-8 text ({exc})") from None
    tok = llm.tokenizer_
    t0 = time.perf_counter()
    ids = tok.encode(text, add_bos=tok.add_bos, special=False)
    _ = time.perf_counter() - t0
    return np.asarray(ids, dtype=np.int32), (tok.bos_id if tok.add_bos else None)
