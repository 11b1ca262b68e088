"""Token sampling: greedy, temperature, top-k, top-p, min-p, repetition penalty, seeded.

The chain and its order are llama.cpp's defaults: repetition penalty -> top-k -> top-p -> min-p ->
temperature -> draw. top-p and min-p are measured on the distribution before temperature (as llama.cpp does).
``temperature <= 0`` is greedy (argmax after the penalty). Works on one logits row (float32 [vocab]) in numpy
without sorting the whole vocabulary unless top-p alone needs it.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from maq.errors import MAQError


@dataclasses.dataclass
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40             # <= 0: off
    top_p: float = 0.95         # >= 1: off
    min_p: float = 0.05         # <= 0: off
    repeat_penalty: float = 1.0  # 1: off (llama.cpp: logit > 0 divided, else multiplied)
    repeat_last_n: int = 64     # how many recent tokens the penalty looks at (-1: all)
    seed: int | None = None

    def validate(self) -> None:
        """Raise MAQError (one line naming the parameter and the valid range) unless every field is usable."""
        def num(v) -> bool:
            return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_)) \
                and bool(np.isfinite(v))

        def integer(v) -> bool:
            return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

        if not num(self.temperature) or self.temperature < 0:
            raise MAQError(f"temperature = {self.temperature!r}: expected a finite number >= 0 (0 = greedy)")
        if not integer(self.top_k) or self.top_k < 0:
            raise MAQError(f"top_k = {self.top_k!r}: expected an integer >= 0 (0 = off)")
        if not num(self.top_p) or not 0 < self.top_p <= 1:
            raise MAQError(f"top_p = {self.top_p!r}: expected 0 < top_p <= 1 (1 = off)")
        if not num(self.min_p) or not 0 <= self.min_p <= 1:
            raise MAQError(f"min_p = {self.min_p!r}: expected 0 <= min_p <= 1 (0 = off)")
        if not num(self.repeat_penalty) or self.repeat_penalty <= 0:
            raise MAQError(f"repeat_penalty = {self.repeat_penalty!r}: expected a finite number > 0 (1 = off)")
        if not integer(self.repeat_last_n) or self.repeat_last_n < -1:
            raise MAQError(f"repeat_last_n = {self.repeat_last_n!r}: expected an integer >= -1 (-1 = all)")
        if self.seed is not None and (not integer(self.seed) or self.seed < 0):
            raise MAQError(f"seed = {self.seed!r}: expected None or an integer >= 0")

    @classmethod
    def greedy(cls) -> "SamplingParams":
        return cls(temperature=0.0, top_k=0, top_p=1.0, min_p=0.0)


def apply_repeat_penalty(logits: np.ndarray, history: Sequence[int], penalty: float, last_n: int) -> None:
    """In place: each distinct token of the last ``last_n`` history entries is penalized once."""
    if penalty == 1.0 or not len(history) or last_n == 0:
        return
    recent = history if last_n < 0 else history[-last_n:]
    ids = np.unique(np.asarray(recent, dtype=np.int64))
    v = logits[ids]
    logits[ids] = np.where(v > 0, v / penalty, v * penalty)


def _top_sorted(x: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest entries of x, largest first (ties: lower index first).

    Fast path for small k: t = the k-th largest of every 8th entry; at least k entries of x are >= t, so the
    top k of x are among them (exact), and only those few are partitioned and sorted."""
    if k >= x.size:
        return np.argsort(-x, kind="stable")
    if 8 * k < x.size // 8:
        sub = x[::8]
        t = np.partition(sub, sub.size - k)[sub.size - k]
        cand = np.flatnonzero(x >= t)
    else:
        cand = np.arange(x.size)
    if cand.size > k:
        part = np.argpartition(-x[cand], k - 1)[:k]
        kth = x[cand[part]].min()
        # keep every entry tied with the k-th so that the stable sort below decides ties by index
        cand = cand[x[cand] >= kth]
    order = np.argsort(-x[cand], kind="stable")[:k]
    return cand[order]


class Sampler:
    """Draws token ids from logits rows with one seeded generator (reproducible for a given seed)."""

    def __init__(self, params: SamplingParams | None = None):
        self.params = params or SamplingParams()
        self.params.validate()
        self.rng = np.random.default_rng(self.params.seed)

    def reseed(self, seed: int | None) -> None:
        self.params.seed = seed
        self.rng = np.random.default_rng(seed)

    def __call__(self, logits: np.ndarray, history: Sequence[int] = ()) -> int:
        p = self.params
        x = np.array(logits, dtype=np.float32).reshape(-1)
        apply_repeat_penalty(x, history, p.repeat_penalty, p.repeat_last_n)
        if p.temperature <= 0:
            return int(np.argmax(x))
        with np.errstate(over="ignore", under="ignore"):   # huge finite logits: exp underflows to 0, no warning
            return self._draw(x)

    def _draw(self, x: np.ndarray) -> int:
        p = self.params
        V = x.size
        top_k = p.top_k if 0 < p.top_k < V else V
        mx = float(x.max())
        z = None  # normalizer of the distribution top-p/min-p see
        if top_k < V:
            cand = _top_sorted(x, top_k)
        elif p.top_p < 1.0:
            # top-p over the full vocabulary: grow a sorted prefix until it holds top_p of the mass
            z = float(np.exp(x - mx).sum())
            m = 256
            while True:
                cand = _top_sorted(x, min(m, V))
                if m >= V or np.exp(x[cand] - mx).sum() / z >= p.top_p:
                    break
                m *= 4
        else:
            cand = None
        if cand is None:
            cx = x
        else:
            cx = x[cand]
        probs = np.exp(cx - mx)
        probs /= probs.sum() if z is None else z
        keep = np.ones(cx.size, dtype=bool)
        if p.top_p < 1.0 and cand is not None:
            cum = np.cumsum(probs)
            n_keep = int(np.searchsorted(cum, p.top_p, side="left")) + 1  # first index where cum >= top_p
            keep[min(n_keep, cx.size):] = False
        if p.min_p > 0.0:
            keep &= probs >= p.min_p * probs.max()
        keep[int(np.argmax(cx))] = True
        idx = np.flatnonzero(keep)
        # (x - max) / T <= 0: huge finite logits or a tiny T underflow to 0 instead of making inf - inf = NaN
        t = (cx[idx] - cx[idx].max()) / np.float32(p.temperature)
        w = np.exp(t)
        w /= w.sum()
        choice = idx[int(self.rng.choice(idx.size, p=w))] if idx.size > 1 else idx[0]
        return int(cand[choice]) if cand is not None else int(choice)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float32 log-probabilities along the last axis (computed in float64 for stability)."""
    x = np.asarray(logits, dtype=np.float64)
    m = x.max(axis=-1, keepdims=True)
    return (x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))).astype(np.float32)
