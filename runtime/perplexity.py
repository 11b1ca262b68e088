"""Perplexity over a text file, in two protocols.

The file is read as-is and tokenized once (BOS at its start only if ``tokenizer.ggml.add_bos_token`` says so;
control tokens in the text are not parsed, as llama-perplexity does), then cut into non-overlapping windows of
``ctx`` tokens (the tail shorter than a window is dropped). Each window is evaluated from an empty cache.

* ``full`` (the paper's / GPTQ's protocol): every prediction inside a window is scored, ctx-1 per window;
  ppl = exp(mean NLL over all scored tokens).
* ``second-half`` (llama.cpp's ``llama-perplexity``): if the model adds BOS, the first token of each window is
  replaced by BOS; only the logits at positions ctx/2 .. ctx-2 are scored (targets ctx/2+1 .. ctx-1), i.e.
  ctx - 1 - ctx/2 tokens per window; ppl = exp(mean NLL).
"""
from __future__ import annotations

import dataclasses
import math
import sys
from typing import Callable

import numpy as np

from maq.errors import MAQError
from maq.runtime import model as model_mod

PROTOCOLS = ("full", "second-half")


@dataclasses.dataclass
class PerplexityResult:
    ppl: float
    nll: float          # mean NLL (nats) over scored tokens
    tokens: int         # scored tokens
    windows: int
    protocol: str
    ctx: int
    text_tokens: int    # tokens of the whole file

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def window_targets(ctx: int, protocol: str) -> tuple[int, int]:
    """(first, last) logit positions scored inside a window: logits at p predict token p+1."""
    if protocol == "full":
        return 0, ctx - 2
    if protocol == "second-half":
        return ctx // 2, ctx - 2
    raise MAQError(f"protocol {protocol!r}: expected one of {PROTOCOLS}")


def nll_rows(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """-log softmax(logits)[target] per row, float64 [n]."""
    x = logits.astype(np.float32, copy=False)
    m = x.max(axis=1, keepdims=True)
    lse = np.log(np.exp(x - m).sum(axis=1, dtype=np.float64)) + m[:, 0].astype(np.float64)
    return lse - x[np.arange(len(targets)), targets].astype(np.float64)


def perplexity(engine, tokens: list[int], ctx: int, protocol: str = "full", limit: int | None = None,
               bos_id: int | None = None, progress: Callable[[int, int, float], None] | None = None
               ) -> PerplexityResult:
    """Perplexity of ``tokens`` with an engine (``model.CModel`` or ``NumpyModel``). ``bos_id``: replace each
    window's first token by it (second-half protocol with add_bos)."""
    if ctx < 4:
        raise MAQError(f"--ctx {ctx}: expected at least 4 tokens")
    if ctx > engine.n_ctx:
        raise MAQError(f"--ctx {ctx} exceeds the engine's context n_ctx={engine.n_ctx}")
    toks = np.asarray(tokens, dtype=np.int32)
    n_win = len(toks) // ctx
    if limit is not None and limit > 0:
        n_win = min(n_win, limit)
    if n_win == 0:
        raise MAQError(f"text has {len(toks)} tokens: fewer than one window of --ctx {ctx}")
    lo, hi = window_targets(ctx, protocol)
    chunk = max(1, getattr(engine, "max_batch", 128))
    buf = np.empty((chunk, engine.cfg.vocab_size), dtype=np.float32)
    total, count = 0.0, 0
    for w in range(n_win):
        win = toks[w * ctx:(w + 1) * ctx].copy()
        if protocol == "second-half" and bos_id is not None:
            win[0] = bos_id
        for start in range(0, ctx, chunk):
            end = min(ctx, start + chunk)
            if end - 1 < lo:   # no scored logits in this chunk: fill the cache only
                engine.forward(win[start:end], start, model_mod.LOGITS_NONE)
                continue
            lg = engine.forward(win[start:end], start, model_mod.LOGITS_ALL, out=buf)
            p0, p1 = max(start, lo), min(end - 1, hi)
            if p1 < p0:
                continue
            rows = lg[p0 - start:p1 - start + 1]
            nll = nll_rows(rows, win[p0 + 1:p1 + 2])
            total += float(nll.sum())
            count += len(nll)
        if progress is not None:
            progress(w + 1, n_win, math.exp(total / count))
    mean = total / count
    return PerplexityResult(ppl=math.exp(mean), nll=mean, tokens=count, windows=n_win, protocol=protocol, ctx=ctx,
                            text_tokens=len(toks))


def tqdm_progress(total: int, enabled: bool = True):
    """A progress callback drawing a tqdm bar with the running estimate on stderr."""
    if not enabled:
        return None, lambda: None
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        def cb(i, n, ppl):
            print(f"\r[{i}/{n}] ppl {ppl:.4f}", end="", file=sys.stderr, flush=True)
        return cb, lambda: print(file=sys.stderr)
    bar = tqdm(total=total, unit="win", file=sys.stderr, dynamic_ncols=True, desc="perplexity")

    def cb(i, n, ppl):
        bar.update(1)
        bar.set_postfix_str(f"ppl {ppl:.4f}")
    return cb, bar.close
