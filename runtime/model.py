"""The C engine: a validated ``LoadedModel`` handed to ``csrc/model.c`` (one C call per forward).

Python validates (gguf_loader), then builds the ``maq_model_config`` / ``maq_layer_weights`` / ``maq_model_weights``
structs with pointers into the mapped file (``ffi.from_buffer``, zero-copy); C trusts them. Every buffer the C side
reads is referenced from this object, so nothing is freed while the model lives.
"""
from __future__ import annotations

import logging
import os

import numpy as np

from maq.errors import MAQError
from maq.runtime.gguf_loader import LoadedModel, Weight

log = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 128
LOGITS_NONE, LOGITS_LAST, LOGITS_ALL = 0, 1, 2


def _c():
    """(ffi, lib) of the compiled extension, or raise MAQError if it lacks the model entry points."""
    try:
        from maq.runtime._maq_c import ffi, lib
    except ImportError as exc:
        raise MAQError(f"the C extension is not built ({exc}); run `python setup.py build_ext --inplace`") from None
    if not hasattr(lib, "maq_model_create"):
        raise MAQError("the C extension has no model entry points (csrc/model.c not compiled in); rebuild it")
    return ffi, lib


def forward_error(lib, rc: int) -> str:
    """What a maq_model_forward return code means (the codes are model.h's MAQ_FORWARD_ERR_* defines)."""
    return {lib.MAQ_FORWARD_ERR_POS: "positions beyond the context",
            lib.MAQ_FORWARD_ERR_TOKEN: "token id outside the vocabulary",
            lib.MAQ_FORWARD_ERR_ARG: "bad argument"}.get(rc, f"return code {rc}")


def physical_cores() -> int:
    """Physical cores available to this process (falls back to logical CPUs)."""
    try:
        avail = os.sched_getaffinity(0)
    except AttributeError:
        avail = set(range(os.cpu_count() or 1))
    cores = set()
    for cpu in avail:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/core_id") as f:
                core = f.read().strip()
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/physical_package_id") as f:
                pkg = f.read().strip()
            cores.add((pkg, core))
        except OSError:
            return max(1, len(avail))
    return max(1, len(cores) or len(avail))


MAX_THREADS = 256
MAX_CTX = 1 << 24


def _is_int(v) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))


def check_threads(n_threads) -> int | None:
    """None (the default: physical cores) or an integer thread count in 1..MAX_THREADS."""
    if n_threads is None:
        return None
    if not _is_int(n_threads) or not 1 <= n_threads <= MAX_THREADS:
        raise MAQError(f"n_threads = {n_threads!r}: expected an integer in 1..{MAX_THREADS} (or None for the "
                       "number of physical cores)")
    return int(n_threads)


def check_positive(name: str, v, hi: int = MAX_CTX) -> int:
    if not _is_int(v) or not 1 <= v <= hi:
        raise MAQError(f"{name} = {v!r}: expected an integer in 1..{hi}")
    return int(v)


def physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def _size(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n / 2**20:.1f} MiB"


def repack_default() -> bool:
    """Whether a CModel repacks MAQ and Q8_0 weights into 16-row panels (kernels.repack_r16) when not told: yes,
    unless the environment variable MAQ_REPACK is 0."""
    v = os.environ.get("MAQ_REPACK", "1").strip()
    if v not in ("0", "1"):
        raise MAQError(f"MAQ_REPACK = {v!r}: expected 0 (read the file's layout) or 1 (repack MAQ weights "
                       "and Q8_0 weights into 16-row panels where the CPU has AVX-512 VNNI; the default)")
    return v == "1"


class CModel:
    """``forward(tokens, pos, mode)`` -> logits, over a KV cache of ``n_ctx`` positions, in C.

    ``repack`` (default: ``repack_default()``, i.e. on unless MAQ_REPACK=0): MAQ3 / MAQ4 and Q8_0 linears (the
    output head included), and MAQ2 ones without salient words, are repacked at load
    into 16-row panels (``kernels.repack_r16``; bit-identical results) where the CPU has AVX-512 VNNI (+ GFNI for
    the MAQ types).
    ``repacked_bytes`` says how much; the file's pages of those weights' codes are handed back to the OS
    (``released_bytes``; ``kernels.release_file_pages``), so memory stays about the file's size."""

    def __init__(self, lm: LoadedModel, n_ctx: int | None = None, n_threads: int | None = None,
                 max_batch: int = DEFAULT_MAX_BATCH, repack: bool | None = None, _c_api=None):
        self.ffi, self.lib = _c_api or _c()
        self.lm = lm
        cfg = self.cfg = lm.config
        self.n_ctx = check_positive("n_ctx", min(cfg.context_length, 4096) if n_ctx is None else n_ctx)
        self.n_threads = check_threads(n_threads) or physical_cores()
        self.max_batch = min(check_positive("n_batch", max_batch), self.n_ctx)
        kv_bytes = 2 * 4 * cfg.n_layers * self.n_ctx * cfg.kv_dim
        mem = physical_memory()
        if mem and kv_bytes > mem:
            raise MAQError(f"{lm.path}: n_ctx = {self.n_ctx} needs {_size(kv_bytes)} of KV cache, more than this "
                           f"machine's {_size(mem)} of memory")
        self._keep: list = []  # every buffer whose address C holds
        ffi = self.ffi

        self._inv_freq = np.ascontiguousarray(cfg.rope.inv_freq(), dtype=np.float32)
        c = ffi.new("maq_model_config *")
        c.dim, c.hidden_dim, c.n_layers = cfg.dim, cfg.hidden_dim, cfg.n_layers
        c.n_heads, c.n_kv_heads, c.head_dim = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
        c.vocab_size, c.seq_len, c.rope_dim = cfg.vocab_size, self.n_ctx, cfg.rope.dim
        c.norm_eps = cfg.norm_eps
        c.rope_inv_freq = self._ptr("float *", self._inv_freq)

        layers = ffi.new("maq_layer_weights[]", cfg.n_layers)
        weights = ffi.new("maq_model_weights *")
        fills = []    # (struct, field, kernels.Weight) in the order the forward runs the products
        for i, L in enumerate(lm.layers):
            lw = layers[i]
            lw.attn_norm = self._ptr("float *", self._f32(L.attn_norm, cfg.dim))
            lw.ffn_norm = self._ptr("float *", self._f32(L.ffn_norm, cfg.dim))
            for field, w in (("wq", L.wq), ("wk", L.wk), ("wv", L.wv), ("wo", L.wo), ("w_gate", L.w_gate),
                             ("w_up", L.w_up), ("w_down", L.w_down)):
                fills.append((lw, field, w.kernel_weight()))
        fills.append((weights, "output", lm.output.kernel_weight()))
        self.repack = repack_default() if repack is None else bool(repack)
        self._repack([kw for _, _, kw in fills])       # (token_embd only serves row lookups)
        fills.append((weights, "tok_embd", lm.tok_embd.kernel_weight()))
        for parent, field, kw in fills:
            self._keep.append(kw)
            setattr(parent, field, kw.c[0])
            if not self.repack:                      # this engine reads the file's layout
                getattr(parent, field).r16 = ffi.NULL
        self._keep.append(layers)
        weights.layers = layers
        weights.output_norm = self._ptr("float *", self._f32(lm.output_norm, cfg.dim))
        self._cfg_c, self._weights_c = c, weights

        ptr = self.lib.maq_model_create(c, weights, self.max_batch, self.n_threads)
        if ptr == ffi.NULL:
            raise MAQError(f"{lm.path}: could not allocate the run state (n_ctx={self.n_ctx}, "
                           f"max_batch={self.max_batch})")
        self._m = ffi.gc(ptr, self.lib.maq_model_free)
        self._tok_buf = np.zeros(1, dtype=np.int32)
        self._tok_p = ffi.cast("int32_t *", ffi.from_buffer(self._tok_buf))
        self._last = np.zeros(cfg.vocab_size, dtype=np.float32)
        self._last_p = ffi.cast("float *", ffi.from_buffer(self._last))
        self._forward_c = self.lib.maq_model_forward
        self._ok = self.lib.MAQ_FORWARD_OK

    def step(self, token: int, pos: int) -> np.ndarray:
        """Decode fast path: one token at ``pos`` -> logits float32 [V] (a reused buffer: copy to keep)."""
        if not 0 <= pos < self.n_ctx:
            raise MAQError(f"context full: position {pos} exceeds n_ctx={self.n_ctx}")
        if not 0 <= token < self.cfg.vocab_size:
            raise MAQError(f"token id {token} outside the vocabulary of {self.cfg.vocab_size}")
        self._tok_buf[0] = token
        rc = self._forward_c(self._m, self._tok_p, 1, pos, self._last_p, LOGITS_LAST)
        if rc != self._ok:
            raise MAQError(f"forward failed: {forward_error(self.lib, rc)} (pos={pos}, token={token}, "
                           f"n_ctx={self.n_ctx})")
        return self._last

    # -- struct filling
    def _ptr(self, ctype: str, arr: np.ndarray):
        buf = self.ffi.from_buffer(arr)
        self._keep.append((arr, buf))
        return self.ffi.cast(ctype, buf)

    @staticmethod
    def _f32(a: np.ndarray, n: int) -> np.ndarray:
        a = np.ascontiguousarray(a)
        if a.dtype != np.float32 or a.shape != (n,):
            raise MAQError(f"internal: vector {a.dtype}{a.shape}, expected float32 [{n}]")
        return a

    def _repack(self, products: list) -> None:
        """Load-time panels for the products' weights (``repack``; kernels.repack_r16), the file's copies of their
        codes handed back (kernels.release_file_pages). The kernel weights belong to the loaded model, so a second
        engine on it shares their panels. Sets ``repacked_bytes`` (panels this engine reads) and ``released_bytes``."""
        from maq.runtime import kernels as K

        gguf = self.lm.gguf
        self.released_bytes = 0
        if self.repack and K.repack_r16(products):
            self.released_bytes = sum(K.release_file_pages(kw, gguf.mm, gguf.path) for kw in products)
        self.repacked_bytes = sum(kw.r16_bytes for kw in products) if self.repack else 0

    # -- running
    def forward(self, tokens, pos: int, mode: int = LOGITS_LAST, out: np.ndarray | None = None) -> np.ndarray | None:
        """Run tokens at positions pos.. ; mode LOGITS_LAST -> float32 [V] (a reused buffer: copy to keep),
        LOGITS_ALL -> float32 [n, V] (into ``out`` if given), LOGITS_NONE -> None."""
        if isinstance(tokens, (int, np.integer)) and mode == LOGITS_LAST:
            return self.step(int(tokens), pos)
        if isinstance(tokens, (int, np.integer)):
            tokens = [int(tokens)]
        toks = np.asarray(tokens).reshape(-1)
        if toks.size and (toks.dtype.kind not in "iu" or toks.min() < 0 or toks.max() >= self.cfg.vocab_size):
            raise MAQError(f"token ids must be integers inside the vocabulary (0..{self.cfg.vocab_size - 1})")
        toks = np.ascontiguousarray(toks, dtype=np.int32)
        n = toks.size
        if pos < 0 or pos + n > self.n_ctx:
            raise MAQError(f"context full: positions {pos}..{pos + n - 1} exceed n_ctx={self.n_ctx}")
        ffi = self.ffi
        if mode == LOGITS_ALL:
            if out is None:
                out = np.empty((n, self.cfg.vocab_size), dtype=np.float32)
            elif out.dtype != np.float32 or out.shape[0] < n or out.shape[1:] != (self.cfg.vocab_size,) \
                    or not out.flags.c_contiguous:
                raise MAQError("internal: logits buffer must be float32 [>=n, V] and contiguous")
            lp = ffi.cast("float *", ffi.from_buffer(out))
        elif mode == LOGITS_LAST:
            lp = self._last_p
        else:
            lp = ffi.NULL
        rc = self.lib.maq_model_forward(self._m, ffi.cast("int32_t *", ffi.from_buffer(toks)), n, pos, lp, mode)
        if rc != self._ok:
            raise MAQError(f"forward failed: {forward_error(self.lib, rc)} (pos={pos}, n={n}, n_ctx={self.n_ctx})")
        if mode == LOGITS_ALL:
            return out[:n]
        return self._last if mode == LOGITS_LAST else None

    def stats(self) -> dict:
        s = self.ffi.new("maq_model_stats *")
        self.lib.maq_model_get_stats(self._m, s)
        return {"matmul_s": s.matmul, "head_s": s.head, "attention_s": s.attention, "other_s": s.other, "total_s": s.total,
                "tokens": s.tokens, "calls": s.calls}

    def reset_stats(self) -> None:
        self.lib.maq_model_reset_stats(self._m)


class NumpyModel:
    """The numpy reference behind the same interface as CModel (slow; tests and fallback)."""

    def __init__(self, lm: LoadedModel, n_ctx: int | None = None, **_):
        from maq.runtime.reference import ReferenceModel

        self.ref = ReferenceModel(lm, n_ctx=n_ctx)
        self.lm, self.cfg, self.n_ctx, self.n_threads, self.max_batch = lm, lm.config, self.ref.n_ctx, 1, 512

    def forward(self, tokens, pos: int, mode: int = LOGITS_LAST, out=None):
        toks = [int(tokens)] if isinstance(tokens, (int, np.integer)) else list(np.asarray(tokens).reshape(-1))
        if pos < 0 or pos + len(toks) > self.n_ctx:
            raise MAQError(f"context full: positions {pos}..{pos + len(toks) - 1} exceed n_ctx={self.n_ctx}")
        lg = self.ref.forward(toks, pos, all_logits=mode == LOGITS_ALL)
        if mode == LOGITS_ALL:
            if out is not None:
                out[:len(toks)] = lg
                return out[:len(toks)]
            return lg
        return lg[-1] if mode == LOGITS_LAST else None

    def step(self, token: int, pos: int) -> np.ndarray:
        return self.forward(int(token), pos, LOGITS_LAST)

    def stats(self) -> dict:
        return {}

    def reset_stats(self) -> None:
        pass


def create(lm: LoadedModel, n_ctx: int | None = None, n_threads: int | None = None, engine: str = "auto",
           max_batch: int = DEFAULT_MAX_BATCH):
    """The engine for a loaded model: ``c`` (default when built), ``numpy`` (reference), or ``auto``."""
    if engine == "numpy":
        return NumpyModel(lm, n_ctx=n_ctx)
    if engine == "auto":
        try:
            _c()
        except MAQError as exc:
            log.warning("C engine unavailable (%s); using the slow numpy reference", exc)
            return NumpyModel(lm, n_ctx=n_ctx)
    elif engine != "c":
        raise MAQError(f"engine {engine!r}: expected c, numpy or auto")
    return CModel(lm, n_ctx=n_ctx, n_threads=n_threads, max_batch=max_batch)
