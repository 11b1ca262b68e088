"""MAQ3 / MAQ4 C kernels (runtime/csrc/maq2.c, via maq.runtime.kernels) against numpy references, and a model
mixing MAQ2, MAQ3, MAQ4, Q8_0, F16 and F32 linears per tensor against the numpy forward; and the MAQ3 / MAQ4
worked example and bits/weight table of docs/FORMAT.md (section 7) against format.py and the C kernels.

Tolerance (derived as MAQ2's in test_kernels.py; y = C result, W = format.dequantize(t) in float64, x float32):
  the kernel quantizes x per 128-input block b exactly as for MAQ2 (the activation layout is shared), then computes
  in integers, per block, D_b = sum sc*q_j*q(x_j) (q_j = lo + 4*hi, 0..7 or 0..15) and M_b = sum m*q(x_j); so
    (1) activation rounding: |x_j - dx_b*q_j| <= dx_b*(1/2 + 2^-15), as for MAQ2;
    (2) float rounding in the kernel: as MAQ2 (one product per block, 4-lane sums at most nb/4 + 2 deep, the d and
        dmin products and their sum), plus ONE more rounding: |D_b| may reach 8*16*15*127*255 > 2^24, so (float)D_b
        is itself rounded (relative 2^-24), where MAQ2's conversions are exact. Relative error
        <= (nb+9)*2^-24 of sum_j A_j*|xhat_j|, with A_j = |d*sc*q_j| + |dmin*m| (every input: no salient words);
    (3) the reference's own float32 weights: <= 3 roundings of d*sc, dmin*m, their product and sum: 3*2^-24*A_j.
  Bound per row: sum_j |W_j|*dx_b(j)*(1/2 + 2^-15) + (nb+9)*2^-23*sum_j A_j|xhat_j| + 3*2^-23*sum_j A_j|x_j|
  (2^-23: a factor 2 of margin on the rounding terms); against W @ xhat (xhat: the numpy re-implementation of the
  activation quantization) only the two rounding terms remain.
Paths and threads: every path forms the same integers per block (codes <= 15 keep the int16 maddubs / vmull sums
  exact: 4 x 2 x 15 x 127 < 2^15) and the same float operations in the same order, so results are compared for
  exact equality with the scalar path; threads 1/2/3 and batched == stacked matvecs exactly, as for MAQ2.
Model: the C engine vs the numpy reference over format.dequantize'd weights, with the tolerance of
  test_model.py::test_maq_matches_numpy_reference (the measured effect of the kernels' int8 activation rounding).
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
import pytest

import hostile_gguf as H
import model_dump as D
from maq.errors import FormatError, MAQError
from maq.runtime import format as F
from maq.runtime import kernels as K
from test_kernels import PARTIAL_QUAD_T, PATHS, SHAPES, activations, check_maq2, pools, quantize_x_maq2  # noqa: F401 (pools: fixture)

BITS = (3, 4)
BIG_CASES = [(4096, 4096, 128, 3), (4096, 4096, 32, 4)]


# --------------------------------------------------------------------------- references
def magnitudes(t: F.MAQTensor) -> np.ndarray:
    """A_j of the docstring: |d*sc*q_j| + |dmin*m|, [P, T]."""
    u = F.unpack(t)
    g = np.arange(t.T) // t.G
    scale = np.abs(u.d.astype(np.float64)[:, None] * u.sc.astype(np.float64)[:, g])
    low = np.abs(u.dmin.astype(np.float64)[:, None] * u.m.astype(np.float64)[:, g])
    return scale * u.codes + low


def tolerance(t: F.MAQTensor, W: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(tol vs W@x, tol vs W@xhat) per row, as derived in the module docstring."""
    xhat, dxj = quantize_x_maq2(x)
    A = magnitudes(t)
    nb = -(-t.T // 128)
    rnd = (nb + 9) * 2.0 ** -23 * (A @ np.abs(xhat)) + 3 * 2.0 ** -23 * (A @ np.abs(x.astype(np.float64)))
    act = np.abs(W) @ (dxj * (0.5 + 2.0 ** -15))
    return act + rnd, rnd


@functools.lru_cache(maxsize=None)
def case(T: int, P: int, G: int, bits: int, seed: int = 0):
    """(tensor, float64 weights, Weight) for a random Gaussian W quantized with format.quantize_rtn(bits=)."""
    rng = np.random.default_rng([T, P, G, bits, seed])
    W = (rng.standard_normal((P, T)) * 0.02).astype(np.float32)
    t = F.quantize_rtn(W, G=G, bits=bits)
    return t, F.dequantize(t).astype(np.float64), K.Weight.from_maq(t)


def check(t, Wd, w, pools, B=5, seed=1):
    """test_kernels.check_maq2 with this module's MAQ3 / MAQ4 tolerance."""
    check_maq2(t, Wd, w, pools, B, seed, tolerance=tolerance)


# --------------------------------------------------------------------------- products
@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("G", F.GROUP_SIZES)
@pytest.mark.parametrize("T,P", SHAPES, ids=[f"{T}x{P}" for T, P in SHAPES])
def test_matvec(T, P, G, bits, pools):
    check(*case(T, P, G, bits), pools)


@pytest.mark.parametrize("T,P,G,bits", BIG_CASES, ids=[f"{c[0]}x{c[1]}-G{c[2]}-maq{c[3]}" for c in BIG_CASES])
def test_matvec_4096(T, P, G, bits, pools):
    check(*case(T, P, G, bits), pools, B=3)


@pytest.mark.parametrize("bits", BITS)
@pytest.mark.parametrize("T", [16, 48, 112, 592, 1024 + 128 + 64 + 16, 2048 + 80] + PARTIAL_QUAD_T)
def test_ragged_shapes(T, bits, pools):
    """T not a multiple of 64 / 128 / 512: tail words, ragged last block and group, quads + remainders, partial
    last quads (PARTIAL_QUAD_T)."""
    for G in F.GROUP_SIZES:
        rng = np.random.default_rng(T + G + bits)
        t = F.quantize_rtn(rng.standard_normal((37, T)).astype(np.float32), G=G, bits=bits)
        check(t, F.dequantize(t).astype(np.float64), K.Weight.from_maq(t), pools, B=6, seed=T)


@pytest.mark.parametrize("bits", BITS)
def test_random_parts_every_code(bits, pools):
    """Random words and hi planes (every code 0..2^bits-1 in every position), random scale bytes: paths agree and
    get_row equals format.dequantize."""
    rng = np.random.default_rng(bits)
    t = D.random_maq_hi(1024 + 64 + 16, 29, 64, bits, rng)
    assert np.array_equal(np.unique(F.unpack(t).codes), np.arange(1 << bits))
    w = K.Weight.from_maq(t)
    np.testing.assert_array_equal(w.dequantize(), F.dequantize(t))
    X = activations(t.T, 5, 3)
    with K.forced_path("scalar"):
        Y = K.matmul(w, X)
    Wd = F.dequantize(t).astype(np.float64)
    for x, y in zip(X, Y):
        assert np.all(np.abs(y - Wd @ quantize_x_maq2(x)[0]) <= tolerance(t, Wd, x)[1])
    for path in PATHS:
        with K.forced_path(path):
            for n in (1, 2, 3):
                np.testing.assert_array_equal(K.matmul(w, X, pools[n]), Y, err_msg=f"{path} threads {n}")


@pytest.mark.parametrize("bits", BITS)
def test_extremes(bits, pools):
    """Largest codes, scales and activations: no int16/int32 overflow anywhere (and all paths agree)."""
    T, P, G = 1024 + 64 + 16, 32, 32
    lay = F.Layout(T, P, G, bits)
    rng = np.random.default_rng(3)
    hshape, hdt = lay.part_specs()[F.PART_HI]
    sc = np.full((P, lay.scales_shape[1] // 2), 255, np.uint8)
    m = np.where(rng.random(sc.shape) < 0.5, -127, 127).astype(np.int8)
    t = F.MAQTensor(words=np.full(lay.words_shape, -1, np.int32), bitmap=None,
                    scales=np.concatenate([sc, m.view(np.uint8)], 1), rowscale=np.full((P, 3), 1e-3, "<f2"), T=T,
                    G=G, bits=bits, hi=np.full(hshape, -1, np.int64).astype(hdt))          # every code 2^bits - 1
    w = K.Weight.from_maq(t)
    Wd = F.dequantize(t).astype(np.float64)
    X = np.where(rng.random((4, T)) < 0.5, -1.0, 1.0).astype(np.float32)   # every int8 activation = +-127
    X[1] = 1.0                                                               # D_b at its largest: 2^25.9
    with K.forced_path("scalar"):
        Y = K.matmul(w, X)
    np.testing.assert_allclose(Y, X.astype(np.float64) @ Wd.T, rtol=1e-5, atol=1e-3)
    for path in PATHS:
        with K.forced_path(path):
            np.testing.assert_array_equal(K.matmul(w, X, pools[2]), Y, err_msg=path)


def test_get_row_matches_dequantize():
    for T, P, G, bits in [(576, 192, 128, 3), (576, 192, 32, 4), (1536, 576, 64, 3), (592, 40, 64, 4)]:
        t, _, w = case(T, P, G, bits)
        np.testing.assert_array_equal(w.dequantize(), F.dequantize(t))


@pytest.mark.parametrize("bits", BITS)
def test_special_activations_agree_across_paths(bits):
    """All-zero blocks, NaN and inf in x: paths agree bit for bit (as for MAQ2)."""
    T, P = 576, 40
    w = case(T, P, 64, bits)[2]
    rng = np.random.default_rng(9)
    X = rng.standard_normal((4, T)).astype(np.float32)
    X[0, :128] = 0.0
    X[1, 5] = np.nan
    X[2, 300] = np.inf
    X[3, 7] = -np.inf
    with K.forced_path("scalar"):
        Y = K.matmul(w, X)
    assert np.all(np.isfinite(Y[0]))
    for path in PATHS:
        with K.forced_path(path):
            np.testing.assert_array_equal(K.matmul(w, X), Y, err_msg=path)


def test_dsal_is_not_used():
    """MAQ3/4 rows have no salient words: a non-zero (even non-finite) dsal changes nothing."""
    t, _, w = case(576, 64, 128, 4)
    rs = t.rowscale.copy()
    rs[:, 2] = np.float16(np.inf)
    t2 = F.MAQTensor(t.words, None, t.scales, rs, T=t.T, G=t.G, bits=4, hi=t.hi)
    w2 = K.Weight.from_maq(t2)
    x = activations(576, 1, 5)[0]
    for path in PATHS:
        with K.forced_path(path):
            np.testing.assert_array_equal(K.matmul(w2, x), K.matmul(w, x), err_msg=path)
    np.testing.assert_array_equal(w2.get_row(3), w.get_row(3))


# --------------------------------------------------------------------------- the Python wrapper
def test_weight_validation():
    t3, _, w3 = case(576, 192, 128, 3)
    t4, _, w4 = case(576, 192, 128, 4)
    assert (w3.type, w3.type_name, w4.type, w4.type_name) == (K.MAQ_TYPE_MAQ3, "maq3", K.MAQ_TYPE_MAQ4, "maq4")
    assert w3.nbytes == t3.nbytes and w4.nbytes == t4.nbytes
    assert "G=128" in repr(w4)
    x = np.ones(576, np.float32)
    # raw buffers (e.g. a memmapped GGUF), zero-copy, sizes checked
    for t, w, kind in ((t3, w3, "maq3"), (t4, w4, "maq4")):
        raw = K.Weight.from_buffers(kind, 576, 192, t.words.tobytes(), scales=t.scales.tobytes(),
                                    rowscale=t.rowscale.tobytes(), G=128, hi=t.hi.tobytes())
        np.testing.assert_array_equal(K.matmul(raw, x), K.matmul(w, x))
        with pytest.raises(MAQError):
            K.Weight.from_buffers(kind, 576, 192, t.words.tobytes(), scales=t.scales.tobytes(),
                                  rowscale=t.rowscale.tobytes(), G=128, hi=t.hi.tobytes()[:-2])
        with pytest.raises(FormatError):
            K.Weight.from_buffers(kind, 576, 192, t.words.tobytes(), scales=t.scales.tobytes(),
                                  rowscale=t.rowscale.tobytes(), G=128)
        with pytest.raises(FormatError):
            K.Weight.from_buffers(kind, 576, 192, t.words.tobytes(), scales=t.scales.tobytes(),
                                  rowscale=t.rowscale.tobytes(), G=48, hi=t.hi.tobytes())
    # a hi part of the other member's dtype, of the wrong shape, missing, or not contiguous
    bad = [F.MAQTensor(t3.words, None, t3.scales, t3.rowscale, T=576, G=128, bits=3, hi=t4.hi),
           F.MAQTensor(t4.words, None, t4.scales, t4.rowscale, T=576, G=128, bits=4, hi=t3.hi),
           F.MAQTensor(t4.words, None, t4.scales, t4.rowscale, T=576, G=128, bits=4, hi=t4.hi[:, :-1]),
           F.MAQTensor(t4.words, None, t4.scales, t4.rowscale, T=576, G=128, bits=4, hi=None),
           F.MAQTensor(t4.words, None, t4.scales, t4.rowscale, T=576, G=128, bits=5, hi=t4.hi)]
    for b in bad:
        with pytest.raises(FormatError):
            K.Weight.from_maq(b)
    nc = np.zeros((192, 72), "<i4")[:, ::2]
    with pytest.raises(MAQError, match="contiguous"):
        K.Weight.from_maq(F.MAQTensor(t4.words, None, t4.scales, t4.rowscale, T=576, G=128, bits=4, hi=nc))
    big = t4.hi.astype(">i4")
    with pytest.raises(MAQError, match="big-endian"):
        K.Weight.from_maq(F.MAQTensor(t4.words, None, t4.scales, t4.rowscale, T=576, G=128, bits=4, hi=big))


def test_one_activation_serves_the_family():
    """MAQ2, MAQ3 and MAQ4 weights of one T prepare the same activation (model.c prepares Q/K/V once)."""
    t2 = F.quantize_rtn(np.ones((4, 576), np.float32), G=64)
    ws = [K.Weight.from_maq(t2), case(576, 192, 64, 3)[2], case(576, 192, 64, 4)[2]]
    assert len({w.act_bytes(3) for w in ws}) == 1


# --------------------------------------------------------------------------- a mixed-type model
IDS = [5, 17, 99, 3, 111, 0, 42, 7, 64, 12, 33]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """The tiny model of hostile_gguf.MIXED_MODEL: MAQ2, MAQ3, MAQ4, Q8_0, F16 and F32 linears (2 layers)."""
    from maq.runtime import gguf_loader as gl

    p = tmp_path_factory.mktemp("mixed") / "mixed.gguf"
    p.write_bytes(H.serialize(*H.build_model(**H.MIXED_MODEL))[0])
    return p, gl


def rel(a, b) -> float:
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


def test_mixed_model_matches_numpy_reference(mixed):
    """C (every kernel family in one forward) vs the numpy forward over the dequantized weights.

    Tolerance, as test_model.py derives it: the only documented difference is the kernels' int8 rounding of every
    product's input (128-input blocks for MAQ2/3/4, 32 for Q8_0; none for F16/F32); ``rounding`` is its measured
    effect (the reference with that rounding simulated, ``act_quant=True``, vs without). C must be within
    2*rounding (+1e-4) of the exact reference and within rounding/4 of the simulation."""
    from maq.runtime import model as M
    from maq.runtime.reference import ReferenceModel

    path, gl = mixed
    lm = gl.load(path)
    kinds = {w.kind for w in lm.weights()}
    assert kinds == {gl.KIND_MAQ2, gl.KIND_MAQ3, gl.KIND_MAQ4, gl.KIND_Q8_0, gl.KIND_F16, gl.KIND_F32}, kinds
    assert not any(w.copied for w in lm.weights())                       # every type read from the mapped file
    exact = ReferenceModel(lm, n_ctx=32).forward(IDS, 0)
    rounded = ReferenceModel(lm, n_ctx=32, act_quant=True).forward(IDS, 0)
    rounding = rel(rounded, exact)
    assert 0 < rounding < 0.05
    for threads, max_batch in ((1, 64), (2, 3)):
        got = M.CModel(lm, n_ctx=32, n_threads=threads, max_batch=max_batch).forward(IDS, 0, M.LOGITS_ALL)
        assert rel(got, rounded) < rounding / 4
        assert rel(got, exact) <= 2 * rounding + 1e-4
    cm = M.CModel(lm, n_ctx=32, n_threads=2)
    rows = np.stack([cm.forward(t, i).copy() for i, t in enumerate(IDS)])
    assert rel(rows, got) < 1e-5
    # every path gives the same logits (bit-identical kernels)
    ref = None
    for p in PATHS:
        with K.forced_path(p):
            out = M.CModel(lm, n_ctx=32, n_threads=2, max_batch=4).forward(IDS, 0, M.LOGITS_ALL)
        if ref is None:
            ref = out
        np.testing.assert_array_equal(out, ref, err_msg=p)


def test_mixed_model_exact_mode(mixed):
    """load(exact=True) dequantizes MAQ3/4 (with MAQ2 and Q8_0) to F32: C then equals the exact numpy forward."""
    from maq.runtime import model as M
    from maq.runtime.reference import ReferenceModel

    path, gl = mixed
    lm = gl.load(path, exact=True)
    assert {w.kind for w in lm.weights()} <= {gl.KIND_F32, gl.KIND_F16}
    exact = ReferenceModel(gl.load(path), n_ctx=32).forward(IDS, 0)
    assert rel(M.CModel(lm, n_ctx=32, n_threads=1).forward(IDS, 0, M.LOGITS_ALL), exact) < 1e-5


def test_loader_reads_maq3_maq4_zero_copy(mixed):
    path, gl = mixed
    lm = gl.load(path)
    L0 = lm.layers[0]
    assert (L0.wk.kind, L0.wv.kind, L0.wq.kind) == (gl.KIND_MAQ3, gl.KIND_MAQ4, gl.KIND_MAQ2)
    for w, bits in ((L0.wk, 3), (L0.wv, 4)):
        t = w.maq
        assert t.bits == bits and t.bitmap is None and t.hi.dtype == (np.uint16 if bits == 3 else np.int32)
        assert np.shares_memory(t.words, lm.gguf.mm) and np.shares_memory(t.hi, lm.gguf.mm)
        np.testing.assert_array_equal(w.row(5), w.dequantize()[5])
        np.testing.assert_array_equal(K.Weight.from_maq(t).get_row(5), w.row(5))
    s = lm.summary()["kinds"]
    assert s["MAQ2"] == 2 and s["MAQ3"] == 5 and s["MAQ4"] == 4, s


# --------------------------------------------------------------------------- docs/FORMAT.md section 7
FORMAT_MD = Path(__file__).resolve().parents[2] / "docs" / "FORMAT.md"


def _doc_section(start: str, end: str) -> str:
    text = FORMAT_MD.read_text(encoding="utf-8")
    i = text.index(start)
    return text[i:text.index(end, i)]


def test_format_doc_bits_per_weight():
    """The MAQ3 / MAQ4 bits/weight table of docs/FORMAT.md (section 7.3) is format.bits_per_weight, 4 decimals."""
    sec = _doc_section("### 7.3", "### 7.4")
    rows = [line for line in sec.splitlines() if re.match(r"\| \d+ ", line)]
    assert len(rows) >= 3
    for line in rows:
        cells = [c.strip() for c in line.strip("|").split("|")]
        T = int(cells[0].split()[0])
        got = [float(c) for c in cells[1:]]
        want = [F.bits_per_weight(T, 1, G, bits) for bits in (3, 4) for G in (128, 64, 32)]
        assert got == pytest.approx(want, abs=5.1e-5), line
    assert {int(r.strip("|").split()[0]) for r in rows} >= {576, 1536, 4096}


def _doc_bytes(sec: str, part: str) -> bytes:
    m = re.search(r"^\| " + re.escape(part) + r" \| `([0-9a-f ]+)`", sec, re.M)
    assert m, part
    return bytes.fromhex(m.group(1))


def test_format_doc_worked_example(pools):
    """Section 7.4 of docs/FORMAT.md: the documented codes packed by format.pack give exactly the documented bytes
    of every part; the values are 0.125*q - 0.5 in format.dequantize and the C get_row; the C products agree."""
    sec = _doc_section("### 7.4", "### 7.5")
    sec4, sec3 = sec.split("**MAQ3.**")
    codes = {4: list(range(16)) + [5, 5, 5, 5, 10, 10, 10, 10, 0, 15, 0, 15, 3, 12, 3, 12],
             3: [0, 1, 2, 3, 4, 5, 6, 7, 7, 6, 5, 4, 3, 2, 1, 0] + [0, 4, 1, 5, 2, 6, 3, 7, 7, 7, 0, 0, 4, 4, 3, 3]}
    for bits, doc in ((4, sec4), (3, sec3)):
        q = np.array([codes[bits]], np.uint8)
        assert " ".join(map(str, codes[bits][:16])) in doc      # the codes as written in the document
        t = F.pack(q, np.zeros((1, 8), np.int8), np.zeros((1, 2), bool), np.array([[32]], np.uint8),
                   np.array([[-64]], np.int8), np.array([2.0 ** -8]), np.array([2.0 ** -7]), np.zeros(1), G=32,
                   bits=bits)
        assert t.words.tobytes() == _doc_bytes(doc, "words")
        assert t.hi.tobytes() == _doc_bytes(doc, f"hi ({'I32' if bits == 4 else 'I16'})")
        assert t.scales.tobytes() == _doc_bytes(doc, "scales")
        assert t.rowscale.tobytes() == _doc_bytes(doc, "rowscale")
        assert t.nbytes == {4: 24, 3: 20}[bits]
        values = (0.125 * q[0] - 0.5).astype(np.float32)
        np.testing.assert_array_equal(F.dequantize(t)[0], values)
        w = K.Weight.from_maq(t)
        np.testing.assert_array_equal(w.get_row(0), values)
        check(t, F.dequantize(t).astype(np.float64), w, pools, B=2)


@pytest.mark.parametrize("B", [7, 8, 13, 21])
@pytest.mark.parametrize("bits", [2, 3, 4])
def test_token_tiles(bits, B, pools):
    """Batches around and past the widest token tile (the VNNI path's 8; 4 elsewhere): every tile size 1..8, rows
    revisited per token tile, all bit-identical to the scalar path (MAQ2 with salient words)."""
    T, P, G = 592, 53, 64
    rng = np.random.default_rng([T, B, bits])
    W = (rng.standard_normal((P, T)) * 0.02).astype(np.float32)
    sal = rng.random((P, T // 16)) < 0.2 if bits == 2 else None
    t = F.quantize_rtn(W, sal, G=G, bits=bits) if bits == 2 else F.quantize_rtn(W, G=G, bits=bits)
    check(t, F.dequantize(t).astype(np.float64), K.Weight.from_maq(t), pools, B=B, seed=B)


@pytest.mark.parametrize("B", [8, 9, 16, 27, 40])
@pytest.mark.parametrize("G", F.GROUP_SIZES)
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("T", [592, 1024])
def test_prompt_panels(T, bits, G, B, pools):
    """Batches on the VNNI path run 16-row panels (maq2.c "VNNI panels": from 8 tokens where T % 512 != 0, from 32
    otherwise): a ragged last panel (P = 53), a ragged last block and group (T = 592), every token tile 1..8 at a
    batch's end; MAQ2 salient words (taken out of the codes and added per block) in one panel only (rows 16-31), a
    row of salient words only (40), a salient last word (50). Every path and thread count bit-identical to the
    scalar path."""
    P = 53
    rng = np.random.default_rng([T, G, B, bits])
    W = (rng.standard_normal((P, T)) * 0.02).astype(np.float32)
    if bits == 2:
        sal = np.zeros((P, T // 16), bool)
        sal[16:32] = rng.random((16, T // 16)) < 0.2
        sal[40] = True
        sal[50, -1] = True
        t = F.quantize_rtn(W, sal, G=G, bits=2)
        check_maq2(t, F.dequantize(t).astype(np.float64), K.Weight.from_maq(t), pools, B=B, seed=B)   # MAQ2 bound
    else:
        t = F.quantize_rtn(W, G=G, bits=bits)
        check(t, F.dequantize(t).astype(np.float64), K.Weight.from_maq(t), pools, B=B, seed=B)


@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("T", [640, 704, 896, 960, 1088])
def test_partial_last_quad(T, bits, pools):
    """T % 512 != 0 with T % 64 == 0 (SmolLM2's 576, Llama's 11008): 1-4 blocks after the last full quad, the last
    one of 4 words when T % 128 == 64; every group size, MAQ2 with salient words up to the row's last word;
    bit-identical to the scalar path."""
    for G in F.GROUP_SIZES:
        rng = np.random.default_rng([T, G, bits])
        W = (rng.standard_normal((29, T)) * 0.02).astype(np.float32)
        if bits == 2:
            sal = rng.random((29, T // 16)) < 0.3
            sal[:, -1] = True
            t = F.quantize_rtn(W, sal, G=G, bits=2)
        else:
            t = F.quantize_rtn(W, G=G, bits=bits)
        check(t, F.dequantize(t).astype(np.float64), K.Weight.from_maq(t), pools, B=9, seed=T)
