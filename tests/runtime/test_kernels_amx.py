"""The "amx" path (x86-64 with AMX-TILE / AMX-INT8 and Linux >= 5.16): batched MAQ2 / MAQ3 / MAQ4 products in
16-row x 16-token int8 tiles (maq2.c amx_rows: code, min, mean and one streams; act.c's operand tiles),
bit-identical to the scalar path like every other path (the exact integers D_b, M_b, S_b, then the same float
operations in the same order; maq2.c's header).

The shapes cover what the tiles pad: partial row panels (P % 16), partial token tiles (B % 16), T not a multiple of
64 (a zero-padded last chunk) or of 128 (a ragged last block), and each group size (G = 32 uses two 32-input tiles per
chunk). Other machines skip (test_kernels_maqhi.py covers the same products on their paths)."""
import numpy as np
import pytest

from maq.runtime import format as F
from maq.runtime import kernels as K

from test_kernels import check_maq2, pools  # noqa: F401 (pools: fixture)
from test_kernels_maqhi import check

pytestmark = pytest.mark.skipif("amx" not in K.supported_paths(),
                                reason="no AMX here (needs AMX-TILE/AMX-INT8 and Linux >= 5.16)")


@pytest.mark.parametrize("B", [16, 17, 40])
@pytest.mark.parametrize("G", F.GROUP_SIZES)
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("T,P", [(16, 5), (112, 37), (592, 53), (1232, 16), (2128, 33)])
def test_amx_tiles(T, P, bits, G, B, pools):
    """MAQ2 with ~20 % salient words (mean4 coding), including a row with every word salient and one with none."""
    rng = np.random.default_rng([T, P, bits, G, B])
    W = (rng.standard_normal((P, T)) * 0.02).astype(np.float32)
    if bits == 2:
        sal = rng.random((P, T // 16)) < 0.2
        sal[0] = True
        sal[-1] = False
        t = F.quantize_rtn(W, sal, G=G, bits=2)
        check_maq2(t, F.dequantize(t).astype(np.float64), K.Weight.from_maq(t), pools, B=B, seed=B)
    else:
        t = F.quantize_rtn(W, G=G, bits=bits)
        check(t, F.dequantize(t).astype(np.float64), K.Weight.from_maq(t), pools, B=B, seed=B)


def test_amx_rotated_and_shared_activation():
    """A rotated MAQ4 weight (its activation rotated before the tiles are laid out) and a MAQ2 weight with salient
    words on one batch: both equal the scalar path."""
    rng = np.random.default_rng(7)
    T, P, B = 576, 40, 24
    X = rng.standard_normal((B, T)).astype(np.float32)
    t4 = F.quantize_rtn((rng.standard_normal((P, T)) * 0.02).astype(np.float32), G=32, bits=4)
    t2 = F.quantize_rtn((rng.standard_normal((P, T)) * 0.02).astype(np.float32), rng.random((P, T // 16)) < 0.1,
                        G=64, bits=2)
    for w in (K.Weight.from_maq(t4).rotate_inputs(F.DEFAULT_INCOHERENCE_SEED), K.Weight.from_maq(t2)):
        with K.forced_path("scalar"):
            ref = K.matmul(w, X)
        with K.forced_path("amx"):
            np.testing.assert_array_equal(K.matmul(w, X), ref)


def test_amx_reads_tiles_only_when_laid_out():
    """An activation prepared on the vnni path (no operand tiles, the trailer says so) and multiplied on the amx path
    runs the VNNI code: the result equals the scalar path, not stale tile bytes (poisoned here)."""
    from maq.runtime.kernels import ffi, lib

    rng = np.random.default_rng(3)
    T, P, B = 576, 48, 32
    t = F.quantize_rtn((rng.standard_normal((P, T)) * 0.02).astype(np.float32), G=32, bits=4)
    w = K.Weight.from_maq(t)
    X = rng.standard_normal((B, T)).astype(np.float32)
    with K.forced_path("scalar"):
        ref = K.matmul(w, X)
    scratch = np.full(w.act_bytes(B), 0x5A, np.uint8)     # poisoned: a stale "tile" region
    Y = np.empty((B, P), np.float32)
    xp = ffi.cast("const float *", ffi.from_buffer(X, require_writable=False))
    act = ffi.cast("void *", ffi.from_buffer(scratch))
    with K.forced_path("vnni"):
        lib.maq_act_prepare(w.c, xp, B, act)
    with K.forced_path("amx"):
        lib.maq_matmul_act(w.c, act, B, ffi.cast("float *", ffi.from_buffer(Y)), ffi.NULL)
    np.testing.assert_array_equal(Y, ref)
    with K.forced_path("amx"):                             # and prepared on amx: the tiles are used
        lib.maq_act_prepare(w.c, xp, B, act)
        lib.maq_matmul_act(w.c, act, B, ffi.cast("float *", ffi.from_buffer(Y)), ffi.NULL)
    np.testing.assert_array_equal(Y, ref)
