"""Thin Python wrapper over the MAQ C kernels (cffi, ``maq.runtime._maq_c``).

Python validates, C trusts: every array is checked here for dtype, byte order, C-contiguity, shape,
alignment and bounds before a pointer reaches C (``ffi.from_buffer`` would silently reinterpret a
float64 array as ``float *``). Errors are ``maq.errors.MAQError`` / ``FormatError`` with a one-line message.

    with Pool(2) as pool:
        w = Weight.from_maq(format.quantize_rtn(W))        # MAQ2 (bits=3/4: MAQ3/MAQ4); or f32/f16/q8_0/from_buffers
        y = matmul(w, x, pool)                             # x [T] -> y [P]; X [B, T] -> Y [B, P]

Paths: ``compiled_paths()``, ``supported_paths()``, ``active_path()``, ``set_path(name)`` and the context
manager ``forced_path(name)`` (tests). ``MAQ_FORCE_PATH`` in the environment picks the path at start-up;
``MAQ_NO_GFNI=1`` makes the vnni / amx paths' single-token MAQ rows run their 256-bit code, as on CPUs without
GFNI (the 512-bit rows use ``vgf2p8affineqb``; same results either way).
"""
from __future__ import annotations

import contextlib
import functools
import threading
from typing import Iterator, Optional

import numpy as np

from maq.errors import FormatError, MAQError
from maq.runtime import format as F

try:
    from maq.runtime._maq_c import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the build
    raise MAQError(f"maq C extension is not built ({exc}); run `pip install -e .` or "
                   "`python setup.py build_ext --inplace`") from exc

# enum maq_type (runtime/csrc/maq.h), read through cffi: the numbers live in maq.h only. These are C type ids
# (ints); ``format.TYPE_MAQ2`` etc. are the strings stored in GGUF metadata ("maq2").
MAQ_TYPE_F32 = lib.MAQ_TYPE_F32
MAQ_TYPE_F16 = lib.MAQ_TYPE_F16
MAQ_TYPE_Q8_0 = lib.MAQ_TYPE_Q8_0
MAQ_TYPE_MAQ2 = lib.MAQ_TYPE_MAQ2
MAQ_TYPE_MAQ3 = lib.MAQ_TYPE_MAQ3
MAQ_TYPE_MAQ4 = lib.MAQ_TYPE_MAQ4
MAQ_TYPE_OF_BITS = {bits: getattr(lib, f"MAQ_TYPE_{F.TYPE_OF_BITS[bits].upper()}") for bits in F.TYPE_OF_BITS}
MAQ_TYPES = tuple(MAQ_TYPE_OF_BITS.values())                     # the MAQ2/3/4 type ids
MAQ_TYPE_NAMES = {MAQ_TYPE_F32: "f32", MAQ_TYPE_F16: "f16", MAQ_TYPE_Q8_0: "q8_0",
                  **{MAQ_TYPE_OF_BITS[b]: F.TYPE_OF_BITS[b] for b in F.TYPE_OF_BITS}}


def _q8_0_sizes() -> tuple[int, int]:
    """(inputs, bytes) of one ggml Q8_0 block, from the gguf package (the owner of ggml's block sizes)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return GGML_QUANT_SIZES[GGMLQuantizationType.Q8_0]


Q8_0_BLOCK, Q8_0_BLOCK_BYTES = _q8_0_sizes()     # 32 inputs: fp16 d + 32 int8 = 34 bytes
_MAX_DIM = 1 << 30       # T, P and B must fit a C int comfortably

_path_lock = threading.Lock()


# --------------------------------------------------------------------------- paths
def _split(s) -> list[str]:
    return [p for p in ffi.string(s).decode().split(",") if p]


def compiled_paths() -> list[str]:
    """SIMD paths compiled into the extension: ['scalar', 'sse', 'avx2', 'vnni', 'amx'] or ['scalar', 'neon',
    'dotprod']."""
    return _split(lib.maq_compiled_paths())


def supported_paths() -> list[str]:
    """Compiled paths this CPU can run, narrow to wide."""
    return _split(lib.maq_supported_paths())


def active_path() -> str:
    """The path products use now ('scalar', 'sse', 'avx2', 'vnni', 'amx', 'neon' or 'dotprod').

    'vnni' (x86-64): the AVX2 kernels with AVX-512 VNNI (vpdpbusd on 256-bit registers) where they gain from it.
    'amx' (x86-64 with AMX-INT8, Linux >= 5.16): the vnni path, plus AMX int8 tiles for MAQ products of 16 or more
    tokens (prompt processing); bit-identical like every path."""
    return ffi.string(lib.maq_active_path()).decode()


def set_path(name: str) -> None:
    """Force a path for every later product (process-wide)."""
    if not isinstance(name, str) or lib.maq_set_path(name.encode()) != 0:
        raise MAQError(f"SIMD path {name!r} is not available here; supported: {', '.join(supported_paths())}")


@contextlib.contextmanager
def forced_path(name: str) -> Iterator[str]:
    """Temporarily force a path (restores the previous one); for tests and benchmarks."""
    with _path_lock:
        old = active_path()
        set_path(name)
        try:
            yield name
        finally:
            set_path(old)


# --------------------------------------------------------------------------- pool
class Pool:
    """A persistent C thread pool of ``n_threads`` (the caller counts as one). Close it (or use ``with``)."""

    def __init__(self, n_threads: int = 1):
        if isinstance(n_threads, bool) or not isinstance(n_threads, (int, np.integer)) or not 1 <= n_threads <= 1024:
            raise MAQError(f"Pool: n_threads must be an integer in 1..1024, got {n_threads!r}")
        ptr = lib.maq_pool_create(int(n_threads))
        if ptr == ffi.NULL:
            raise MAQError(f"Pool: could not start {n_threads} threads")
        self._ptr = ptr
        self.n_threads = int(n_threads)

    @property
    def ptr(self):
        if self._ptr is None:
            raise MAQError("Pool: used after close()")
        return self._ptr

    @property
    def stalls(self) -> int:
        """Jobs that stalled on a preempted worker (another process held its core); each one makes the pool
        run the next jobs on the calling thread alone for a while (20 ms, doubling while it repeats)."""
        return int(lib.maq_pool_stalls(self.ptr))

    def close(self) -> None:
        if getattr(self, "_ptr", None) is not None:
            lib.maq_pool_destroy(self._ptr)
            self._ptr = None

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:  # pragma: no cover - safety net
        self.close()

    def __repr__(self) -> str:
        return f"Pool(n_threads={self.n_threads}{', closed' if self._ptr is None else ''})"


def _pool_ptr(pool: Optional[Pool]):
    if pool is None:
        return ffi.NULL
    if not isinstance(pool, Pool):
        raise MAQError(f"pool must be a maq.runtime.kernels.Pool or None, got {type(pool).__name__}")
    return pool.ptr


# --------------------------------------------------------------------------- array checks
def _check_array(arr, what: str, shape: tuple, dtype, align: int) -> np.ndarray:
    """Return arr as an ndarray after checking dtype (kind, size, little-endian), shape, C order, alignment."""
    if not isinstance(arr, np.ndarray):
        raise MAQError(f"{what}: expected a numpy array, got {type(arr).__name__}")
    dt = np.dtype(dtype)
    if arr.dtype.kind != dt.kind or arr.dtype.itemsize != dt.itemsize:
        raise MAQError(f"{what}: dtype {arr.dtype}, expected {dt}")
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and np.little_endian is False):
        raise MAQError(f"{what}: big-endian data is not supported")
    if tuple(arr.shape) != tuple(shape):
        raise MAQError(f"{what}: shape {tuple(arr.shape)}, expected {tuple(shape)}")
    if not arr.flags.c_contiguous:
        raise MAQError(f"{what}: array must be C-contiguous")
    if arr.size and arr.ctypes.data % align:
        raise MAQError(f"{what}: data address is not {align}-byte aligned")
    return arr


def _check_dim(v, what: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 < int(v) <= _MAX_DIM:
        raise MAQError(f"{what} must be a positive integer, got {v!r}")
    return int(v)


def _as_2d_bytes(data, what: str, rows: int, row_bytes: int) -> np.ndarray:
    """A raw buffer (bytes, memoryview, mmap, ndarray) viewed as uint8 [rows, row_bytes], zero-copy."""
    if isinstance(data, np.ndarray):
        arr = data
        if not arr.flags.c_contiguous:
            raise MAQError(f"{what}: array must be C-contiguous")
        arr = arr.reshape(-1).view(np.uint8) if arr.dtype != np.uint8 else arr.reshape(-1)
    else:
        try:
            arr = np.frombuffer(data, dtype=np.uint8)
        except (TypeError, ValueError) as exc:
            raise MAQError(f"{what}: not a readable contiguous buffer ({exc})") from None
    if arr.size != rows * row_bytes:
        raise MAQError(f"{what}: {arr.size} bytes, expected {rows} x {row_bytes} = {rows * row_bytes}")
    return arr.reshape(rows, row_bytes)


# --------------------------------------------------------------------------- weights
@functools.lru_cache(maxsize=64)
def rotation_signs(T: int, seed: int) -> np.ndarray:
    """The read-only float32 [T] signs of format.rotate for (T, seed), one array per (T, seed): weights sharing an
    input (Q/K/V, gate/up) point at the same signs, which is how the model sees they share one rotated activation."""
    s = F.hadamard_signs(T, seed)
    s.flags.writeable = False
    return s


class Weight:
    """One weight matrix [P, T] as the C kernels see it (a ``maq_weight`` descriptor).

    Holds references to every buffer it points into (zero-copy; memmapped GGUF data stays mapped while the
    Weight lives). Build with ``from_maq``, ``f32``, ``f16``, ``q8_0`` or ``from_buffers``.
    ``c`` is the ``maq_weight *`` for other C code (e.g. the model structs); copy the struct, keep the Weight.
    """

    def __init__(self, wtype: int, T: int, P: int, G: int, data: np.ndarray, bitmap=None, scales=None,
                 rowscale=None, name: str = "weight", hi=None, salw=None, saloff=None):
        # private: use the classmethods, which validate
        self.type, self.T, self.P, self.G, self.name = wtype, T, P, G, name
        self._arrays = [a for a in (data, bitmap, scales, rowscale, hi, salw, saloff) if a is not None]
        self._bulk = [a for a in (data, hi) if a is not None]     # what repack_r16 may release
        buf = {id(a): ffi.from_buffer(a, require_writable=False) for a in self._arrays}
        self._bufs = list(buf.values())
        c = ffi.new("maq_weight *")
        c.type, c.T, c.P, c.G = wtype, T, P, G
        c.data = ffi.cast("const void *", buf[id(data)])
        if wtype in MAQ_TYPES:
            c.scales = ffi.cast("const uint8_t *", buf[id(scales)])
            c.rowscale = ffi.cast("const uint16_t *", buf[id(rowscale)])
        if wtype == MAQ_TYPE_MAQ2:
            c.bitmap = ffi.cast("const uint8_t *", buf[id(bitmap)])
            if salw is not None:                    # int8 salient coding (maq_s8.c)
                c.salw = ffi.cast("const int8_t *", buf[id(salw)])
                c.saloff = ffi.cast("const int32_t *", buf[id(saloff)])
        elif wtype in (MAQ_TYPE_MAQ3, MAQ_TYPE_MAQ4):
            c.hi = ffi.cast("const void *", buf[id(hi)])
        self.c = c
        self.rotation_seed: int | None = None     # set by rotate_inputs

    # -- constructors
    @classmethod
    def from_maq(cls, t: F.MAQTensor, name: str = "MAQ tensor") -> "Weight":
        """A MAQ2 / MAQ3 / MAQ4 tensor (format.MAQTensor, ``t.bits`` 2/3/4; parts may be memmaps). Validates the
        layout first (format's shape/dtype/padding checks, then contiguity, byte order and alignment)."""
        if not isinstance(t, F.MAQTensor):
            raise MAQError(f"{name}: expected a format.MAQTensor, got {type(t).__name__}")
        if isinstance(t.bits, bool) or not isinstance(t.bits, (int, np.integer)) or t.bits not in MAQ_TYPE_OF_BITS:
            raise FormatError(f"{name}: code width {t.bits!r} bits, expected one of {sorted(MAQ_TYPE_OF_BITS)}")
        t.validate(name)
        lay = t.layout
        _check_dim(t.T, f"{name}: T")
        _check_dim(t.P, f"{name}: P")
        specs = lay.part_specs()
        words = _check_array(t.words, f"{name}: words", *specs[F.PART_WORDS], align=4)
        scales = _check_array(t.scales, f"{name}: scales", *specs[F.PART_SCALES], align=1)
        rowscale = _check_array(t.rowscale, f"{name}: rowscale", *specs[F.PART_ROWSCALE], align=2)
        if t.bits == 2:
            bitmap = _check_array(t.bitmap, f"{name}: bitmap", *specs[F.PART_BITMAP], align=1)
            salw = saloff = None
            if t.salw is not None:
                salw = _check_array(t.salw, f"{name}: salw", *specs[F.PART_SALW], align=1)
                saloff = _check_array(t.saloff, f"{name}: saloff", *specs[F.PART_SALOFF], align=4)
            return cls(MAQ_TYPE_MAQ2, t.T, t.P, t.G, words, bitmap, scales, rowscale, name=name, salw=salw,
                       saloff=saloff)
        shape, dt = specs[F.PART_HI]
        hi = _check_array(t.hi, f"{name}: hi", shape, dt, align=dt.itemsize)
        return cls(MAQ_TYPE_OF_BITS[t.bits], t.T, t.P, t.G, words, None, scales, rowscale, name=name, hi=hi)

    @classmethod
    def f32(cls, W: np.ndarray, name: str = "F32 weight") -> "Weight":
        """float32 [P, T]."""
        if not isinstance(W, np.ndarray) or W.ndim != 2:
            raise MAQError(f"{name}: expected a 2-D float32 array [P, T]")
        P, T = (_check_dim(W.shape[0], f"{name}: P"), _check_dim(W.shape[1], f"{name}: T"))
        return cls(MAQ_TYPE_F32, T, P, 0, _check_array(W, name, (P, T), np.float32, align=4), name=name)

    @classmethod
    def f16(cls, W: np.ndarray, name: str = "F16 weight") -> "Weight":
        """float16 [P, T] (or uint16 IEEE half bits)."""
        if not isinstance(W, np.ndarray) or W.ndim != 2:
            raise MAQError(f"{name}: expected a 2-D float16 array [P, T]")
        P, T = (_check_dim(W.shape[0], f"{name}: P"), _check_dim(W.shape[1], f"{name}: T"))
        if W.dtype == np.uint16:
            W = W.view(np.float16)
        return cls(MAQ_TYPE_F16, T, P, 0, _check_array(W, name, (P, T), np.float16, align=2), name=name)

    @classmethod
    def q8_0(cls, data, T: int, P: int, name: str = "Q8_0 weight") -> "Weight":
        """ggml Q8_0 bytes: P rows of T/32 blocks {fp16 d, int8 qs[32]} (e.g. GGUFReader tensor.data)."""
        T, P = _check_dim(T, f"{name}: T"), _check_dim(P, f"{name}: P")
        if T % Q8_0_BLOCK:
            raise MAQError(f"{name}: T={T} is not a multiple of {Q8_0_BLOCK}")
        arr = _as_2d_bytes(data, name, P, T // Q8_0_BLOCK * Q8_0_BLOCK_BYTES)
        return cls(MAQ_TYPE_Q8_0, T, P, 0, arr, name=name)

    @classmethod
    def from_buffers(cls, wtype, T: int, P: int, data, bitmap=None, scales=None, rowscale=None,
                     G: int = 0, name: str = "weight", hi=None) -> "Weight":
        """Raw buffers (bytes, mmap, memoryview or ndarray, e.g. slices of a memmapped GGUF), zero-copy.

        wtype: 'f32' | 'f16' | 'q8_0' | 'maq2' | 'maq3' | 'maq4' (or the MAQ_TYPE_* ints). MAQ2 needs bitmap, scales,
        rowscale, G; MAQ3 / MAQ4 need hi (uint16 / int32 [P, T/16] bytes), scales, rowscale, G.
        """
        if isinstance(wtype, str):
            names = {v: k for k, v in MAQ_TYPE_NAMES.items()}
            if wtype.lower() not in names:
                raise MAQError(f"{name}: unknown weight type {wtype!r}, expected one of {sorted(names)}")
            wtype = names[wtype.lower()]
        T, P = _check_dim(T, f"{name}: T"), _check_dim(P, f"{name}: P")
        if wtype == MAQ_TYPE_F32:
            return cls.f32(_as_2d_bytes(data, name, P, 4 * T).view(np.float32), name=name)
        if wtype == MAQ_TYPE_F16:
            return cls.f16(_as_2d_bytes(data, name, P, 2 * T).view(np.float16), name=name)
        if wtype == MAQ_TYPE_Q8_0:
            return cls.q8_0(data, T, P, name=name)
        if wtype == MAQ_TYPE_MAQ2:
            if bitmap is None or scales is None or rowscale is None:
                raise FormatError(f"{name}: MAQ2 needs words, bitmap, scales and rowscale")
            F.check_shape(T, P, G, name)
            lay = F.Layout(T, P, G)
            t = F.MAQTensor(
                words=_as_2d_bytes(data, f"{name}: words", P, 4 * lay.words_shape[1]).view("<i4"),
                bitmap=_as_2d_bytes(bitmap, f"{name}: bitmap", P, lay.bitmap_shape[1]),
                scales=_as_2d_bytes(scales, f"{name}: scales", P, lay.scales_shape[1]),
                rowscale=_as_2d_bytes(rowscale, f"{name}: rowscale", P, 2 * lay.rowscale_shape[1]).view("<f2"),
                T=T, G=G)
            return cls.from_maq(t, name=name)
        if wtype in (MAQ_TYPE_MAQ3, MAQ_TYPE_MAQ4):
            bits = 3 if wtype == MAQ_TYPE_MAQ3 else 4
            if hi is None or scales is None or rowscale is None:
                raise FormatError(f"{name}: {MAQ_TYPE_NAMES[wtype].upper()} needs words, hi, scales and rowscale")
            F.check_shape(T, P, G, name, bits)
            lay = F.Layout(T, P, G, bits)
            nw = lay.words_shape[1]
            hdt = lay.part_specs()[F.PART_HI][1]
            t = F.MAQTensor(
                words=_as_2d_bytes(data, f"{name}: words", P, 4 * nw).view("<i4"), bitmap=None,
                scales=_as_2d_bytes(scales, f"{name}: scales", P, lay.scales_shape[1]),
                rowscale=_as_2d_bytes(rowscale, f"{name}: rowscale", P, 2 * lay.rowscale_shape[1]).view("<f2"),
                T=T, G=G, bits=bits, hi=_as_2d_bytes(hi, f"{name}: hi", P, hdt.itemsize * nw).view(hdt))
            return cls.from_maq(t, name=name)
        raise MAQError(f"{name}: unknown weight type {wtype!r}")

    def rotate_inputs(self, seed: int) -> "Weight":
        """Declare this weight stored rotated along its inputs (docs/FORMAT.md section 10: it holds W' = W Rᵀ):
        every product then multiplies it by R x (maq_act_prepare), so ``matmul`` returns W x. Returns self."""
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2 ** 32:
            raise MAQError(f"{self.name}: rotation seed {seed!r}, expected an integer in 0..2^32-1")
        signs = rotation_signs(self.T, int(seed))
        buf = ffi.from_buffer(signs, require_writable=False)
        self._rotation = (signs, buf)             # kept alive; not in nbytes (shared, not part of the weight)
        self.c.in_signs = ffi.cast("const float *", buf)
        self.c.in_block = F.hadamard_block(self.T)
        self.rotation_seed = int(seed)
        return self

    def repack_r16(self) -> int:
        """Repack this MAQ2 / MAQ3 / MAQ4 / Q8_0 weight into 16-row panels (see ``repack_r16``); returns the bytes, 0 if it does
        not qualify or is repacked already."""
        return repack_r16([self])

    # -- queries
    @property
    def r16_bytes(self) -> int:
        """Bytes of this weight's load-time panels (0: none)."""
        r16 = getattr(self, "_r16", None)
        return r16[2] if r16 is not None else 0

    @property
    def type_name(self) -> str:
        return MAQ_TYPE_NAMES[self.type]

    @property
    def nbytes(self) -> int:
        """Bytes of every buffer the kernel reads for one full product."""
        return int(sum(a.nbytes for a in self._arrays))

    def act_bytes(self, B: int = 1) -> int:
        """Scratch bytes for B preprocessed activation rows (alignment slack included)."""
        return int(lib.maq_act_bytes(self.c, _check_dim(B, "B")))

    def get_row(self, p: int, out: Optional[np.ndarray] = None) -> np.ndarray:
        """Row p dequantized to float32 [T] (embedding lookup)."""
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or not 0 <= int(p) < self.P:
            raise MAQError(f"{self.name}: row {p!r} out of range 0..{self.P - 1}")
        if out is None:
            out = np.empty(self.T, np.float32)
        else:
            _check_array(out, f"{self.name}: get_row out", (self.T,), np.float32, align=4)
        lib.maq_get_row(self.c, int(p), ffi.cast("float *", ffi.from_buffer(out)))
        return out

    def dequantize(self) -> np.ndarray:
        """All rows, float32 [P, T] (tests; slow for large P)."""
        out = np.empty((self.P, self.T), np.float32)
        for p in range(self.P):
            self.get_row(p, out[p])
        return out

    def __repr__(self) -> str:
        g = f", G={self.G}" if self.type in MAQ_TYPES else ""
        return f"Weight({self.type_name}, P={self.P}, T={self.T}{g})"


def repack_r16(weights: list) -> int:
    """Repack every MAQ2 (without salient words) / MAQ3 / MAQ4 / Q8_0 weight of ``weights`` that qualifies into 16-row
    interleaved panels (runtime/csrc/maq2_r16.c, q8_0.c), which the VNNI path then reads instead of the file's
    parts: single-token rows stop
    paying a per-row fixed cost, and one sequential stream replaces words + hi + scales. All panels go into one
    64-byte aligned arena in list order (give the order the products run in: each product's software prefetch then
    runs on into the next weight's panels). Returns the arena's bytes (0: nothing qualified, or this CPU lacks
    AVX-512 VNNI (+ GFNI for the MAQ types), or every weight is repacked already; the weights then stay as they are). Results do not
    change (bit-identical products). The file's parts stay where they are (``release_file_pages`` hands them back)."""
    todo = [(w, int(lib.maq_r16_bytes(w.c))) for w in weights if getattr(w, "_r16", None) is None]
    todo = [(w, n) for w, n in todo if n > 0]
    total = sum(n for _, n in todo)
    if not total:
        return 0
    raw = np.zeros(total + 64, np.uint8)
    off = (-raw.ctypes.data) % 64
    for w, n in todo:                        # every n is a multiple of 64: each weight's panels stay aligned
        p = ffi.from_buffer(raw[off:off + n])
        lib.maq_r16_pack(w.c, ffi.cast("void *", p))
        w._r16 = (raw, p, n)                 # the arena, this weight's panels, their bytes
        w.c.r16 = ffi.cast("const uint8_t *", p)
        off += n
    return total


def release_file_pages(weight: "Weight", base: np.ndarray, path: str) -> int:
    """After ``repack_r16``: hand the pages of a repacked weight's words and hi plane back to the OS, where those
    parts are bytes of the file at ``path`` held in ``base`` (the loader's whole-file buffer: its byte i is the
    file's byte i), either mapped (np.memmap) or read into anonymous memory (then remapped from the file first,
    if it still holds the same bytes: maq_pages_from_file). The parts stay readable (from the file) for the paths
    that read them. Returns the bytes handed back (0 where nothing applied)."""
    if getattr(weight, "_r16", None) is None:
        return 0
    lo, done = base.ctypes.data, 0
    for a in weight._bulk:                   # words, hi: the bulk of the file's bytes
        addr = a.ctypes.data
        if not (lo <= addr and addr + a.nbytes <= lo + base.nbytes):
            continue                         # not the file's bytes (a copy made at load)
        rc = lib.maq_pages_from_file(ffi.cast("void *", ffi.from_buffer(a, require_writable=False)), a.nbytes,
                                     str(path).encode(), addr - lo, 0 if isinstance(base, np.memmap) else 1)
        done += a.nbytes if rc == 0 else 0
    return done


# --------------------------------------------------------------------------- products
def matmul(weight: Weight, X: np.ndarray, pool: Optional[Pool] = None, out: Optional[np.ndarray] = None) -> np.ndarray:
    """Y = X W^T with the active SIMD path. X float32 [T] -> y float32 [P]; X [B, T] -> Y [B, P].

    X must be float32 and C-contiguous (no silent conversion). ``out`` (optional) receives the result.
    """
    if not isinstance(weight, Weight):
        raise MAQError(f"matmul: weight must be a kernels.Weight, got {type(weight).__name__}")
    if not isinstance(X, np.ndarray) or X.ndim not in (1, 2):
        raise MAQError("matmul: X must be a float32 array [T] or [B, T]")
    B = 1 if X.ndim == 1 else X.shape[0]
    _check_dim(B, "matmul: batch size B")
    _check_array(X, "matmul: X", (weight.T,) if X.ndim == 1 else (B, weight.T), np.float32, align=4)
    out_shape = (weight.P,) if X.ndim == 1 else (B, weight.P)
    if out is None:
        out = np.empty(out_shape, np.float32)
    else:
        _check_array(out, "matmul: out", out_shape, np.float32, align=4)
        if not out.flags.writeable:
            raise MAQError("matmul: out is read-only")
    if np.may_share_memory(out, X):
        raise MAQError("matmul: out must not overlap X")
    scratch = np.empty(weight.act_bytes(B), np.uint8)
    lib.maq_matmul(weight.c, ffi.cast("const float *", ffi.from_buffer(X, require_writable=False)), B,
                   ffi.cast("float *", ffi.from_buffer(out)), ffi.cast("void *", ffi.from_buffer(scratch)),
                   _pool_ptr(pool))
    return out


def rotate(X: np.ndarray, seed: int) -> np.ndarray:
    """R x for every row of float32 X [T] or [B, T] by the C code (maq_rotate_row; format.rotate is its numpy
    twin, docs/FORMAT.md section 10). For tests: products apply it themselves (``Weight.rotate_inputs``)."""
    if not isinstance(X, np.ndarray) or X.ndim not in (1, 2):
        raise MAQError("rotate: X must be a float32 array [T] or [B, T]")
    X2 = X.reshape(1, -1) if X.ndim == 1 else X
    T = _check_dim(X2.shape[1], "rotate: T")
    _check_array(X2, "rotate: X", X2.shape, np.float32, align=4)
    signs = rotation_signs(T, seed)
    out = np.empty_like(X2)
    sp = ffi.cast("const float *", ffi.from_buffer(signs, require_writable=False))
    for b in range(X2.shape[0]):
        lib.maq_rotate_row(ffi.cast("const float *", ffi.from_buffer(X2[b], require_writable=False)), sp, T,
                           F.hadamard_block(T), ffi.cast("float *", ffi.from_buffer(out[b])))
    return out.reshape(X.shape)


def read_sum(buf: np.ndarray, pool: Optional[Pool] = None) -> int:
    """Benchmark helper: sum of buf as uint64 (C read loop split across the pool); bytes beyond a multiple
    of 64 are ignored. Used to measure read bandwidth."""
    if not isinstance(buf, np.ndarray) or not buf.flags.c_contiguous:
        raise MAQError("read_sum: buf must be a C-contiguous numpy array")
    if buf.ctypes.data % 8:
        raise MAQError("read_sum: buf must be 8-byte aligned")
    return int(lib.maq_read_sum(ffi.cast("const void *", ffi.from_buffer(buf, require_writable=False)),
                                buf.nbytes, _pool_ptr(pool)))


__all__ = [
    "MAQ_TYPE_F32", "MAQ_TYPE_F16", "MAQ_TYPE_Q8_0", "MAQ_TYPE_MAQ2", "MAQ_TYPE_MAQ3", "MAQ_TYPE_MAQ4", "MAQ_TYPES",
    "MAQ_TYPE_OF_BITS", "MAQ_TYPE_NAMES", "Pool", "Weight",
    "matmul", "read_sum",
    "compiled_paths", "supported_paths", "active_path", "set_path", "forced_path",
]
