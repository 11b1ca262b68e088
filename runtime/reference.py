"""Pure-numpy Llama forward: the test oracle for the C engine, and a slow fallback engine.

Every weight is dequantized to float32 once (``format.dequantize`` for MAQ2/3/4, ``gguf.quants`` for ggml types),
then the forward is the textbook one, in float32 (or float64 with ``dtype=np.float64``):
RMSNorm -> Q/K/V -> RoPE on adjacent pairs (2i, 2i+1) (llama.cpp's LLAMA convention; GGUF Q/K rows were permuted
by the HF->GGUF converter so this equals transformers' rotate-half) -> causal GQA attention over a KV cache ->
output projection -> residual -> RMSNorm -> SwiGLU MLP -> residual; final RMSNorm and the (tied) output head.
"""
from __future__ import annotations

import numpy as np

from maq.errors import MAQError
from maq.runtime import format as fmt
from maq.runtime.gguf_loader import KIND_MAQ2, KIND_MAQ3, KIND_MAQ4, KIND_Q8_0, Q8_0_BLOCK, LoadedModel

# Activation rounding of the C kernels (csrc/act.c), for ``act_quant=True``: symmetric int8 per block of the
# input, d = amax/127, q = roundf(x * (1/d)); MAQ2/3/4 blocks of 128 inputs (one shared activation layout), Q8_0
# blocks of 32 with d rounded to fp16.
ACT_BLOCK = {KIND_MAQ2: 128, KIND_MAQ3: 128, KIND_MAQ4: 128, KIND_Q8_0: Q8_0_BLOCK}


def round_activations(x: np.ndarray, kind: int) -> np.ndarray:
    """x [n, T] as the kernels see it for a weight of ``kind`` (float weights: unchanged)."""
    block = ACT_BLOCK.get(kind)
    if block is None:
        return x
    n, T = x.shape
    out = np.empty_like(x)
    for t0 in range(0, T, block):
        xb = x[:, t0:t0 + block].astype(np.float32)
        d = (np.abs(xb).max(axis=1, keepdims=True) / np.float32(127.0)).astype(np.float32)
        if kind == KIND_Q8_0:
            d = d.astype(np.float16).astype(np.float32)
            dq = (np.abs(xb).max(axis=1, keepdims=True) / np.float32(127.0)).astype(np.float32)
        else:
            dq = d
        with np.errstate(divide="ignore"):
            inv = np.where(dq != 0, np.float32(1.0) / dq, np.float32(0.0)).astype(np.float32)
        v = xb * inv
        q = np.clip(np.sign(v) * np.floor(np.abs(v) + np.float32(0.5)), -127, 127)   # roundf: half away from 0
        out[:, t0:t0 + block] = (q * d).astype(x.dtype)
    return out


class ReferenceModel:
    """Same interface as the C engine (``forward(tokens, pos)`` -> logits), numpy only."""

    def __init__(self, lm: LoadedModel, n_ctx: int | None = None, dtype=np.float32, act_quant: bool = False):
        """``act_quant``: round every product's input the way the C kernels do (``round_activations``), to
        separate the kernels' documented activation rounding from any other difference in tests."""
        self.lm = lm
        self.act_quant = act_quant
        self.cfg = cfg = lm.config
        self.n_ctx = int(n_ctx or min(cfg.context_length, 2048))
        self.dt = np.dtype(dtype)
        # a weight stored rotated (FORMAT.md section 10) is kept as stored and its input rotated, as the C core does
        f = lambda w: (w.dequantize() if w.rotation_seed is None else w.stored()).astype(self.dt)  # noqa: E731
        self.layers = []
        self.kinds = []      # per layer {weight: (kind, rotation seed or None)}: how the kernels see its input
        for L in lm.layers:
            self.kinds.append({k: (getattr(L, k).kind, getattr(L, k).rotation_seed)
                               for k in ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")})
            self.layers.append(dict(
                attn_norm=np.asarray(L.attn_norm, self.dt), ffn_norm=np.asarray(L.ffn_norm, self.dt),
                wq=f(L.wq), wk=f(L.wk), wv=f(L.wv), wo=f(L.wo),
                w_gate=f(L.w_gate), w_up=f(L.w_up), w_down=f(L.w_down)))
        self.output_norm = np.asarray(lm.output_norm, self.dt)
        self.output = f(lm.output)
        self.output_kind = (lm.output.kind, lm.output.rotation_seed)
        self.inv_freq = cfg.rope.inv_freq()
        self.k_cache = np.zeros((cfg.n_layers, self.n_ctx, cfg.kv_dim), self.dt)
        self.v_cache = np.zeros((cfg.n_layers, self.n_ctx, cfg.kv_dim), self.dt)

    def embed(self, tokens) -> np.ndarray:
        return np.stack([self.lm.tok_embd.row(int(t)) for t in tokens]).astype(self.dt)

    def _in(self, x: np.ndarray, how: tuple[int, int | None]) -> np.ndarray:
        """x as the product with a weight of (kind, rotation seed) reads it: rotated, then rounded (act_quant)."""
        kind, seed = how
        if seed is not None:
            x = fmt.rotate(np.ascontiguousarray(x), seed)
        return round_activations(x, kind) if self.act_quant else x

    def _rms(self, x: np.ndarray, w: np.ndarray) -> np.ndarray:
        ms = np.mean(x * x, axis=-1, keepdims=True)
        return x / np.sqrt(ms + self.dt.type(self.cfg.norm_eps)) * w

    def _rope(self, x: np.ndarray, positions: np.ndarray) -> np.ndarray:
        """x [n, heads, head_dim]; rotate pairs (2i, 2i+1) of the first rope.dim dims by angle pos*inv_freq[i]."""
        ang = positions[:, None].astype(np.float32) * self.inv_freq[None, :]          # [n, rope_dim/2] float32
        cos = np.cos(ang).astype(self.dt)[:, None, :]
        sin = np.sin(ang).astype(self.dt)[:, None, :]
        out = x.copy()
        r = self.cfg.rope.dim
        x0, x1 = x[..., 0:r:2], x[..., 1:r:2]
        out[..., 0:r:2] = x0 * cos - x1 * sin
        out[..., 1:r:2] = x0 * sin + x1 * cos
        return out

    def forward(self, tokens, pos: int, all_logits: bool = True) -> np.ndarray:
        """Run tokens [n] at positions pos..pos+n-1 through the model; returns logits [n, vocab] (or [1, vocab])."""
        cfg = self.cfg
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        n = len(tokens)
        if pos < 0 or pos + n > self.n_ctx:
            raise MAQError(f"context full: positions {pos}..{pos + n - 1} exceed n_ctx={self.n_ctx}")
        if n == 0:
            return np.zeros((0, cfg.vocab_size), np.float32)
        hd, nh, nkv = cfg.head_dim, cfg.n_heads, cfg.n_kv_heads
        positions = np.arange(pos, pos + n)
        x = self.embed(tokens)
        scale = self.dt.type(1.0 / np.sqrt(hd))
        mask = np.triu(np.full((n, pos + n), -np.inf, dtype=self.dt), k=pos + 1)   # [n, pos+n]
        for li, L in enumerate(self.layers):
            kd = self.kinds[li]
            h = self._rms(x, L["attn_norm"])
            q = (self._in(h, kd["wq"]) @ L["wq"].T).reshape(n, nh, hd)
            k = (self._in(h, kd["wk"]) @ L["wk"].T).reshape(n, nkv, hd)
            v = self._in(h, kd["wv"]) @ L["wv"].T
            q = self._rope(q, positions)
            k = self._rope(k, positions)
            self.k_cache[li, pos:pos + n] = k.reshape(n, -1)
            self.v_cache[li, pos:pos + n] = v
            K = self.k_cache[li, :pos + n].reshape(pos + n, nkv, hd)
            V = self.v_cache[li, :pos + n].reshape(pos + n, nkv, hd)
            rep = nh // nkv
            att_out = np.empty((n, nh, hd), self.dt)
            for hh in range(nh):
                kv = hh // rep
                s = (q[:, hh, :] @ K[:, kv, :].T) * scale + mask                  # [n, pos+n]
                s = s - s.max(axis=1, keepdims=True)
                p = np.exp(s)
                p /= p.sum(axis=1, keepdims=True)
                att_out[:, hh, :] = p @ V[:, kv, :]
            x = x + self._in(att_out.reshape(n, -1), kd["wo"]) @ L["wo"].T
            h = self._rms(x, L["ffn_norm"])
            g = self._in(h, kd["w_gate"]) @ L["w_gate"].T
            u = self._in(h, kd["w_up"]) @ L["w_up"].T
            a = g / (1 + np.exp(-g)) * u
            x = x + self._in(a, kd["w_down"]) @ L["w_down"].T
        if not all_logits:
            x = x[-1:]
        x = self._rms(x, self.output_norm)
        return (self._in(x, self.output_kind) @ self.output.T).astype(np.float32)

    def reset(self) -> None:
        """Forget the cache (positions restart at 0; stale entries are overwritten before use)."""
