"""The C kernels (runtime/csrc via maq.runtime.kernels) against numpy references.

MAQ2 tolerance (derived; y = C result, W = format.dequantize(t) in float64, x the float32 input):
  The kernel quantizes x per 128-input block b to q_j = roundf(x_j * (1/dx_b)), dx_b = amax_b/127, and then
  computes, exactly in integers, the per-block sums of (d*sc*q + dmin*m) * q_j and dsal*c * q_j; the only
  non-integer steps are float32 products/sums. So
    (1) activation rounding: |x_j - dx_b*q_j| <= dx_b * (1/2 + 2^-15)  (the 2^-15 covers the float32 rounding
        of x*(1/dx) and of 1/dx, each a few ulp of a value <= 127.5);
    (2) float rounding in the kernel: every block term dx_b*D_b is rounded once, then summed in 4 lanes (at
        most nb/4 + 2 additions deep) and scaled by d, dmin, dsal (2 more): relative error <= (nb+8)*2^-24
        of sum_j A_j*|xhat_j|, where A_j = |d*sc*q_j| + |dmin*m| for 2-bit inputs and |dsal*c| for salient
        ones (the magnitudes of the terms before cancellation) and xhat_j = dx_b*q_j;
    (3) the reference's own float32 weights: dequantize rounds d*sc, dmin*m, their product and sum (<= 3
        roundings): |W_j - exact| <= 3*2^-24*A_j.
  Bound per row: sum_j |W_j|*dx_b(j)*(1/2 + 2^-15) + (nb+8)*2^-23*sum_j A_j|xhat_j| + 3*2^-23*sum_j A_j|x_j|
  (2^-23: a factor 2 of margin on the rounding terms). A tighter check compares with W @ xhat (xhat from a
  numpy re-implementation of the activation quantization), leaving only terms (2) and (3).
Q8_0: x is quantized the ggml way (gguf.quants.quantize Q8_0 is bit-exact with ggml's reference): xhat;
  |y - W xhat| <= (nb+4)*2^-23*sum_j |w_j xhat_j| (per block one product d_w*d_x, one product with the exact
  integer sum, then 4-lane sums); against W x add sum_j |w_j| |x_j - xhat_j| with
  |x_j - xhat_j| <= d_b(1/2 + 2^-15) + 127*|d_b - fp16(d_b)| (the activation scale is stored as fp16).
F16/F32: float32 products summed in 8 lanes: |y - W x| <= (T/8 + 4)*2^-23*sum_j |w_j x_j|.
Paths and threads: every SIMD path computes the same integers per block and the same float operations in the
  same order (no FMA; 4 lanes for MAQ2/Q8_0, 8 for F16/F32), so results are compared for exact equality with
  the scalar path; rows never depend on the thread that computes them, so threads 1/2/3 are exactly equal, and a
  batch is exactly the stack of its matvecs.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest

from maq.errors import FormatError, MAQError
from maq.runtime import format as F
from maq.runtime import kernels as K

PATHS = K.supported_paths()
SIMD_PATHS = [p for p in PATHS if p != "scalar"]
SHAPES = [(576, 576), (576, 192), (576, 1536), (1536, 576)]
BITMAPS = {"none": 0.0, "all": 1.0, "2.5%": 0.025, "50%": 0.5}
BIG_CASES = [(4096, 4096, 128, "2.5%"), (4096, 4096, 32, "50%")]
# widths whose last quad (512 inputs) holds 4, 8, 16, 20, 24 or 28 words in whole 64-input chunks, with and without
# full quads before it (the SIMD paths' remainder blocks after their quad loops)
PARTIAL_QUAD_T = [64, 320, 640, 768, 896, 960, 1600]


# --------------------------------------------------------------------------- references
def quantize_x_maq2(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """numpy re-implementation of the MAQ2 activation quantization: (xhat float64 [T], dx per input [T])."""
    x = np.asarray(x, np.float32)
    T = x.size
    xhat = np.zeros(T)
    dxj = np.zeros(T)
    for b0 in range(0, T, 128):
        blk = x[b0:b0 + 128]
        d = np.float32(np.abs(blk).max()) / np.float32(127)
        idv = np.float32(1) / d if d != 0 else np.float32(0)
        v = (blk * idv).astype(np.float64)                     # the float32 product, then roundf
        q = np.clip(np.sign(v) * np.floor(np.abs(v) + 0.5), -127, 127)
        xhat[b0:b0 + 128] = float(d) * q
        dxj[b0:b0 + 128] = float(d)
    return xhat, dxj


def maq2_magnitudes(t: F.MAQTensor) -> np.ndarray:
    """A_j of the docstring: |d*sc*q| + |dmin*m| for 2-bit inputs, |dsal*c| for salient ones; [P, T]."""
    u = F.unpack(t)
    g = np.arange(t.T) // t.G
    scale = np.abs(u.d.astype(np.float64)[:, None] * u.sc.astype(np.float64)[:, g])
    low = np.abs(u.dmin.astype(np.float64)[:, None] * u.m.astype(np.float64)[:, g])
    two = scale * u.codes + low
    eight = np.abs(u.dsal.astype(np.float64)[:, None] * np.repeat(u.means.astype(np.float64), 4, axis=1))
    return np.where(np.repeat(u.salient, 16, axis=1), eight, two)


def maq2_tolerance(t: F.MAQTensor, W: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tol vs W@x, tol vs W@xhat) per row, as derived in the module docstring."""
    xhat, dxj = quantize_x_maq2(x)
    A = maq2_magnitudes(t)
    nb = -(-t.T // 128)
    rnd = (nb + 8) * 2.0 ** -23 * (A @ np.abs(xhat)) + 3 * 2.0 ** -23 * (A @ np.abs(x.astype(np.float64)))
    act = np.abs(W) @ (dxj * (0.5 + 2.0 ** -15))
    return act + rnd, rnd


@functools.lru_cache(maxsize=None)
def maq2_case(T: int, P: int, G: int, bitmap: str, seed: int = 0):
    """(tensor, float64 weights, Weight) for a random Gaussian W quantized with format.quantize_rtn."""
    rng = np.random.default_rng([T, P, G, seed, int(BITMAPS[bitmap] * 1000)])
    W = (rng.standard_normal((P, T)) * 0.02).astype(np.float32)
    frac = BITMAPS[bitmap]
    sal = np.ones((P, T // 16), bool) if frac == 1.0 else rng.random((P, T // 16)) < frac
    t = F.quantize_rtn(W, sal, G=G)
    return t, F.dequantize(t).astype(np.float64), K.Weight.from_maq(t)


def activations(T: int, B: int, seed: int) -> np.ndarray:
    """Heavy-tailed activations (a few large outliers per row, like real hidden states)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((B, T)).astype(np.float32)
    X[:, rng.integers(0, T, size=max(1, T // 200))] *= 20.0
    return X


@pytest.fixture(scope="module")
def pools():
    ps = {n: K.Pool(n) for n in (1, 2, 3)}
    yield ps
    for p in ps.values():
        p.close()


# --------------------------------------------------------------------------- MAQ2
def check_maq2(t, Wd, w, pools, B=5, seed=1, tolerance=None):
    """Check Weight ``w`` (tensor ``t``, float64 weights Wd [P, T]) on B activations: scalar path within
    ``tolerance(t, Wd, x)`` (default maq2_tolerance; test_kernels_maqhi.py passes its own) of the float64 references,
    every path / thread count / batch bit-identical to it."""
    X = activations(t.T, B, seed)
    x = X[0]
    with K.forced_path("scalar"):
        y_scalar = K.matmul(w, x)
        Y_scalar = K.matmul(w, X, pools[2])
    # numerical: against float64 references with the derived tolerances
    tol, tol_tight = (tolerance or maq2_tolerance)(t, Wd, x)
    err = np.abs(y_scalar - Wd @ x.astype(np.float64))
    assert np.all(err <= tol), f"max err/tol {np.max(err / tol):.3f}"
    err_t = np.abs(y_scalar - Wd @ quantize_x_maq2(x)[0])
    assert np.all(err_t <= tol_tight), f"tight: max err/tol {np.max(err_t / tol_tight):.3f}"
    # batched == stacked matvecs, on the scalar path
    np.testing.assert_array_equal(Y_scalar[0], y_scalar)
    for path in PATHS:
        with K.forced_path(path):
            # every path == scalar, matvec and batched
            np.testing.assert_array_equal(K.matmul(w, x), y_scalar, err_msg=f"path {path} matvec")
            Y = K.matmul(w, X, pools[1])
            np.testing.assert_array_equal(Y, Y_scalar, err_msg=f"path {path} batched")
            # threads 1, 2, 3 identical
            for n in (2, 3):
                np.testing.assert_array_equal(K.matmul(w, X, pools[n]), Y, err_msg=f"path {path} threads {n}")
            for b in range(B):
                np.testing.assert_array_equal(K.matmul(w, X[b], pools[3]), Y[b], err_msg=f"path {path} token {b}")


@pytest.mark.parametrize("bitmap", list(BITMAPS))
@pytest.mark.parametrize("G", F.GROUP_SIZES)
@pytest.mark.parametrize("T,P", SHAPES, ids=[f"{T}x{P}" for T, P in SHAPES])
def test_maq2_matvec(T, P, G, bitmap, pools):
    t, Wd, w = maq2_case(T, P, G, bitmap)
    check_maq2(t, Wd, w, pools)


@pytest.mark.parametrize("T,P,G,bitmap", BIG_CASES, ids=[f"{c[0]}x{c[1]}-G{c[2]}-{c[3]}" for c in BIG_CASES])
def test_maq2_matvec_4096(T, P, G, bitmap, pools):
    t, Wd, w = maq2_case(T, P, G, bitmap)
    check_maq2(t, Wd, w, pools, B=3)


@pytest.mark.parametrize("T", [16, 48, 112, 592, 1024 + 128 + 64 + 16, 2048 + 80] + PARTIAL_QUAD_T)
def test_maq2_ragged_shapes(T, pools):
    """T not a multiple of 64 / 128 / 512: tail words, ragged last block and group, quads + remainders, partial
    last quads (PARTIAL_QUAD_T)."""
    for G in F.GROUP_SIZES:
        rng = np.random.default_rng(T + G)
        W = rng.standard_normal((37, T)).astype(np.float32)
        t = F.quantize_rtn(W, rng.random((37, T // 16)) < 0.3, G=G)
        check_maq2(t, F.dequantize(t).astype(np.float64), K.Weight.from_maq(t), pools, B=6, seed=T)


def test_maq2_extremes(pools):
    """Largest codes, scales and activations: no int16/int32 overflow anywhere (and all paths agree)."""
    T, P, G = 1024 + 64 + 16, 32, 32
    lay = F.Layout(T, P, G)
    rng = np.random.default_rng(3)
    words = np.full(lay.words_shape, -1, np.int32)                       # all 2-bit codes 3
    sal = rng.random((P, T // 16)) < 0.5
    words[sal] = np.int32(np.array([0x817f817f], np.uint32).view(np.int32)[0])   # c = 127, -127, 127, -127
    sc = np.full((P, lay.scales_shape[1] // 2), 255, np.uint8)
    m = np.where(rng.random(sc.shape) < 0.5, -127, 127).astype(np.int8)
    t = F.MAQTensor(words=words, bitmap=F.pack_bitmap(sal), scales=np.concatenate([sc, m.view(np.uint8)], 1),
                    rowscale=np.full((P, 3), 1e-3, "<f2"), T=T, G=G)
    w = K.Weight.from_maq(t)
    Wd = F.dequantize(t).astype(np.float64)
    X = np.where(rng.random((4, T)) < 0.5, -1.0, 1.0).astype(np.float32)   # every int8 activation = +-127
    with K.forced_path("scalar"):
        Y = K.matmul(w, X)
    np.testing.assert_allclose(Y, X.astype(np.float64) @ Wd.T, rtol=1e-5, atol=1e-3)
    for path in PATHS:
        with K.forced_path(path):
            np.testing.assert_array_equal(K.matmul(w, X, pools[2]), Y, err_msg=path)


def test_maq2_get_row_matches_dequantize():
    for T, P, G, bm in [(576, 192, 128, "2.5%"), (576, 192, 32, "50%"), (1536, 576, 64, "all")]:
        t, Wd, w = maq2_case(T, P, G, bm)
        np.testing.assert_array_equal(w.dequantize(), F.dequantize(t))


# --------------------------------------------------------------------------- Q8_0
def q8_weight(P: int, T: int, rng, adversarial: bool = False):
    import gguf
    from gguf.quants import quantize

    if adversarial:   # int8 extremes including -128 (valid in the format, never produced by quantize)
        q = quantize(np.ones((P, T), np.float32), gguf.GGMLQuantizationType.Q8_0).reshape(P, T // 32, 34)
        q[:, :, 2:] = np.where(rng.random((P, T // 32, 32)) < 0.5, 0x80, 0x7F).astype(np.uint8)
        q = q.reshape(P, -1)
    else:
        q = quantize((rng.standard_normal((P, T)) * 0.05).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    Wd = gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).astype(np.float64)
    return q, Wd


def q8_xhat(x: np.ndarray) -> np.ndarray:
    import gguf
    from gguf.quants import dequantize, quantize

    return dequantize(quantize(x[None].astype(np.float32), gguf.GGMLQuantizationType.Q8_0),
                      gguf.GGMLQuantizationType.Q8_0)[0].astype(np.float64)


@pytest.mark.parametrize("T,P,adv", [(576, 576, False), (576, 1536, False), (1536, 576, False), (4096, 256, False),
                                     (576 + 32, 64, True), (608, 53, False)])
@pytest.mark.parametrize("repack", [False, True], ids=["file", "r16"])
def test_q8_0(T, P, adv, repack, pools):
    """Every path, thread count and batch (single tokens, token tiles, panels) bit-identical to the scalar path, which
    is within the derived tolerance of the float64 reference; ``r16``: the weight repacked into load-time 16-row
    panels first (q8_0.c; the VNNI path reads those, the others the file's rows)."""
    rng = np.random.default_rng(T + P)
    q, Wd = q8_weight(P, T, rng, adv)
    w = K.Weight.q8_0(q, T, P)
    if repack and w.repack_r16() == 0:
        pytest.skip("this CPU lacks AVX-512 VNNI: no 16-row repack")
    np.testing.assert_array_equal(w.dequantize(), Wd.astype(np.float32))          # get_row
    X = activations(T, 5, T)
    if adv:
        X = np.where(X < 0, -1.0, 1.0).astype(np.float32)                            # int8 activations +-127
    x = X[0]
    with K.forced_path("scalar"):
        y = K.matmul(w, x)
        Y = K.matmul(w, X)
    nb = T // 32
    xhat = q8_xhat(x)
    tol_tight = (nb + 4) * 2.0 ** -23 * (np.abs(Wd) @ np.abs(xhat))
    assert np.all(np.abs(y - Wd @ xhat) <= tol_tight)
    d = np.abs(x.reshape(-1, 32)).max(axis=1) / np.float32(127)
    dj = np.repeat(d.astype(np.float64), 32)
    d16 = np.repeat(d.astype(np.float16).astype(np.float64), 32)
    act = np.abs(Wd) @ (dj * (0.5 + 2.0 ** -15) + 127 * np.abs(dj - d16))
    assert np.all(np.abs(y - Wd @ x.astype(np.float64)) <= act + tol_tight)
    np.testing.assert_array_equal(Y[0], y)
    # 11 tokens: the VNNI path's Q8_0 panels (q8_0.c, from 8 tokens), every other path its token tiles
    X11 = np.concatenate([X, activations(T, 6, T + 1)]) if not adv else np.concatenate([X, -X, X[:1]])
    with K.forced_path("scalar"):
        Y11 = K.matmul(w, X11)
    np.testing.assert_array_equal(Y11[:5], Y)
    for path in PATHS:
        with K.forced_path(path):
            np.testing.assert_array_equal(K.matmul(w, x), y, err_msg=path)
            for n in (1, 2, 3):
                np.testing.assert_array_equal(K.matmul(w, X, pools[n]), Y, err_msg=f"{path} threads {n}")
                np.testing.assert_array_equal(K.matmul(w, X11, pools[n]), Y11, err_msg=f"{path} threads {n}, B 11")


# --------------------------------------------------------------------------- F16 / F32
@pytest.mark.parametrize("kind", ["f16", "f32"])
@pytest.mark.parametrize("T,P", [(576, 192), (203, 17), (1536, 576)])
def test_float(kind, T, P, pools):
    rng = np.random.default_rng(T * P)
    W = rng.standard_normal((P, T)).astype(np.float16 if kind == "f16" else np.float32)
    if kind == "f16":
        W.reshape(-1)[:8] = np.array([0, -0.0, 6e-8, -6e-6, 65504, 1e-4, -2.0, 3.0], np.float16)  # subnormals, max
    w = K.Weight.f16(W) if kind == "f16" else K.Weight.f32(W)
    Wd = W.astype(np.float64)
    np.testing.assert_array_equal(w.dequantize(), W.astype(np.float32))
    X = activations(T, 6, P)
    with K.forced_path("scalar"):
        Y = K.matmul(w, X)
    ref = X.astype(np.float64) @ Wd.T
    tol = (T / 8 + 4) * 2.0 ** -23 * (np.abs(X.astype(np.float64)) @ np.abs(Wd).T)
    assert np.all(np.abs(Y - ref) <= tol)
    for path in PATHS:
        with K.forced_path(path):
            for n in (1, 2, 3):
                np.testing.assert_array_equal(K.matmul(w, X, pools[n]), Y, err_msg=f"{path} threads {n}")
            np.testing.assert_array_equal(K.matmul(w, X[4]), Y[4], err_msg=path)


# --------------------------------------------------------------------------- paths, pool, validation
def test_paths():
    assert "scalar" in K.compiled_paths()
    assert set(PATHS) <= set(K.compiled_paths())
    assert K.active_path() in PATHS
    import platform

    if platform.machine() in ("x86_64", "AMD64"):
        assert {"sse", "avx2", "vnni"} <= set(K.compiled_paths())
    old = K.active_path()
    with K.forced_path("scalar"):
        assert K.active_path() == "scalar"
    assert K.active_path() == old
    with pytest.raises(MAQError):
        K.set_path("avx512")


def test_force_path_env():
    import subprocess
    import sys

    code = "from maq.runtime import kernels as K; print(K.active_path())"
    out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "MAQ_FORCE_PATH": "scalar"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "scalar"


NO_GFNI_CHECK = """
import numpy as np
from maq.runtime import format as F, kernels as K
rng = np.random.default_rng(7)
for bits in (2, 3, 4):
    for T, G in ((576, 32), (4096, 128), (1536, 64)):
        W = rng.standard_normal((48, T)).astype(np.float32)
        sal = rng.random((48, T // 16)) < (0.05 if bits == 2 else 0.0)
        w = K.Weight.from_maq(F.quantize_rtn(W, sal, G=G, bits=bits))
        x = rng.standard_normal(T).astype(np.float32)
        X = rng.standard_normal((40, T)).astype(np.float32)   # a batch: the prompt panels' BMI2-only unpacking
        with K.forced_path("scalar"):
            ref, REF = K.matmul(w, x), K.matmul(w, X)
        with K.forced_path("vnni"):
            assert np.array_equal(K.matmul(w, x), ref), (bits, T, G)
            assert np.array_equal(K.matmul(w, X), REF), (bits, T, G, "batch")
print("ok")
"""


@pytest.mark.skipif("vnni" not in PATHS, reason="the vnni path needs AVX-512 VNNI (this CPU has none)")
def test_single_token_rows_without_gfni():
    """MAQ_NO_GFNI=1: the vnni path's single-token rows run the 256-bit code and the prompt panels unpack every word
    by bit deposits (as on AVX-512 VNNI CPUs without GFNI, e.g. Cascade Lake), still equal to the scalar reference."""
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", NO_GFNI_CHECK], env={**os.environ, "MAQ_NO_GFNI": "1"},
                         capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


@pytest.mark.parametrize("nth", [1, 2, 3, 7])
@pytest.mark.parametrize("B", [1, 5])
def test_matmul_act_part(nth, B):
    """maq_matmul_act_part (the shares a caller's own threads compute: the llama.cpp extension) together give the
    product: every share of every path equal to kernels.matmul, and no row written twice or left out."""
    from maq.runtime._maq_c import ffi, lib

    t, _, w = maq2_case(576, 77, 32, "2.5%")
    X = activations(576, B, 11)
    scratch = np.empty(w.act_bytes(B), np.uint8)
    for path in PATHS:
        with K.forced_path(path):
            ref = K.matmul(w, X)
            lib.maq_act_prepare(w.c, ffi.cast("const float *", ffi.from_buffer(X)), B,
                                ffi.cast("void *", ffi.from_buffer(scratch)))
            Y = np.full((B, w.P), np.nan, np.float32)
            for ith in range(nth):
                lib.maq_matmul_act_part(w.c, ffi.cast("const void *", ffi.from_buffer(scratch)), B,
                                        ffi.cast("float *", ffi.from_buffer(Y)), ith, nth)
            np.testing.assert_array_equal(Y, ref, err_msg=f"path {path}, {nth} shares")


def test_pool_runs_every_slot_once():
    """maq_pool_run calls fn(ctx, ith, nth) exactly once per slot, for many consecutive jobs."""
    from maq.runtime._maq_c import ffi, lib

    seen = []

    @ffi.callback("void(void *, int, int)")
    def task(ctx, ith, nth):
        seen.append((ith, nth))

    for n in (1, 2, 3, 5):
        with K.Pool(n) as pool:
            for _ in range(50):
                seen.clear()
                lib.maq_pool_run(pool.ptr, task, ffi.NULL)
                assert sorted(seen) == [(i, n) for i in range(n)]


def test_pool_lifecycle():
    p = K.Pool(2)
    assert p.n_threads == 2
    p.close()
    p.close()
    with pytest.raises(MAQError):
        K.matmul(maq2_case(576, 192, 128, "none")[2], np.zeros(576, np.float32), p)
    with pytest.raises(MAQError):
        K.Pool(0)


def test_read_sum():
    buf = np.arange(1000, dtype=np.uint64)
    with K.Pool(2) as pool:
        assert K.read_sum(buf, pool) == int(buf[:1000 // 8 * 8].sum())


def test_validation():
    t, _, w = maq2_case(576, 192, 128, "none")
    x = np.zeros(576, np.float32)
    with pytest.raises(MAQError, match="dtype"):
        K.matmul(w, x.astype(np.float64))
    with pytest.raises(MAQError, match="shape"):
        K.matmul(w, np.zeros(575, np.float32))
    with pytest.raises(MAQError, match="contiguous"):
        K.matmul(w, np.zeros((2, 1152), np.float32)[:, ::2])
    with pytest.raises(MAQError, match="range"):
        w.get_row(192)
    with pytest.raises(MAQError):
        K.matmul(w, x, out=np.zeros(191, np.float32))
    bad = F.MAQTensor(words=t.words, bitmap=t.bitmap, scales=t.scales[:, :-1], rowscale=t.rowscale, T=576, G=128)
    with pytest.raises(FormatError):
        K.Weight.from_maq(bad)
    pad = F.quantize_rtn(np.zeros((2, 592), np.float32), G=32)
    pad.bitmap[:, -1] = 0xFF                                     # padding bits beyond word 37
    with pytest.raises(FormatError):
        K.Weight.from_maq(pad)
    with pytest.raises(MAQError):
        K.Weight.q8_0(np.zeros(100, np.uint8), T=576, P=2)
    with pytest.raises(MAQError):
        K.Weight.f32(np.zeros((4, 8), np.float64))
    # raw buffers (e.g. a memmapped GGUF): zero-copy, size checked
    raw = K.Weight.from_buffers("maq2", 576, 192, t.words.tobytes(), t.bitmap.tobytes(), t.scales.tobytes(),
                                t.rowscale.tobytes(), G=128)
    np.testing.assert_array_equal(K.matmul(raw, x + 1), K.matmul(w, x + 1))
    with pytest.raises(MAQError):
        K.Weight.from_buffers("maq2", 576, 192, t.words.tobytes()[:-4], t.bitmap.tobytes(), t.scales.tobytes(),
                              t.rowscale.tobytes(), G=128)


@pytest.mark.parametrize("kind", ["maq2", "q8_0"])
def test_special_activations_agree_across_paths(kind):
    """All-zero blocks, NaN and inf in x: the activation quantization (scalar, SSE4.1 and NEON versions) and the
    products agree bit for bit across paths (NaN/inf poison only their own blocks' scale, never crash)."""
    T, P = 576, 40
    rng = np.random.default_rng(9)
    if kind == "maq2":
        w = maq2_case(T, P, 64, "2.5%")[2]
    else:
        q, _ = q8_weight(P, T, rng)
        w = K.Weight.q8_0(q, T, P)
    X = rng.standard_normal((4, T)).astype(np.float32)
    X[0, :128] = 0.0                       # an all-zero block: scale 0
    X[1, 5] = np.nan
    X[2, 300] = np.inf
    X[3, 7] = -np.inf
    X[3, 400] = 1e-30                      # tiny values next to large ones
    with K.forced_path("scalar"):
        Y = K.matmul(w, X)
    assert np.all(np.isfinite(Y[0]))
    for path in PATHS:
        with K.forced_path(path):
            np.testing.assert_array_equal(K.matmul(w, X), Y, err_msg=path)


def test_pool_oversubscribed():
    """More threads than cores, many short jobs back to back: no deadlock, same result every time."""
    t, _, w = maq2_case(576, 192, 128, "2.5%")
    X = activations(576, 2, 4)
    with K.forced_path("scalar"):
        ref = K.matmul(w, X)
    with K.Pool(8) as pool:
        for _ in range(300):
            np.testing.assert_array_equal(K.matmul(w, X, pool), ref)
