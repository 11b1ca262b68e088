"""The MAQ2 format module: golden byte layout (docs/FORMAT.md worked example), pack/unpack, bits/weight."""
from __future__ import annotations

import numpy as np
import pytest

from maq.errors import FormatError, MAQError
from maq.runtime import format as F


def golden_row() -> F.MAQTensor:
    """The worked example of docs/FORMAT.md: one row of 32 weights, G = 32, word 0 2-bit, word 1 salient."""
    codes = np.zeros((1, 32), np.uint8)
    codes[0, :16] = [0, 1, 2, 3, 3, 2, 1, 0, 0, 0, 1, 1, 2, 2, 3, 3]
    means = np.zeros((1, 8), np.int8)
    means[0, 4:] = [10, -20, 127, -127]
    salient = np.array([[False, True]])
    return F.pack(codes, means, salient, sc=np.array([[200]], np.uint8), m=np.array([[-100]], np.int8),
                  d=np.array([2.0 ** -10]), dmin=np.array([2.0 ** -9]), dsal=np.array([2.0 ** -11]), G=32)


def test_golden_bytes():
    t = golden_row()
    assert t.words.tobytes().hex() == "e41b50fa" + "0aec7f81"      # little-endian words 0xfa501be4, 0x817fec0a
    assert t.bitmap.tobytes() == bytes([0b00000010])                  # word 1 salient
    assert t.scales.tobytes() == bytes([200, 0x9C])                   # sc = 200, m = -100 (int8 0x9c)
    assert t.rowscale.tobytes().hex() == "0014" + "0018" + "0010"     # fp16 2^-10, 2^-9, 2^-11
    assert t.nbytes == 8 + 1 + 2 + 6
    assert t.bits_per_weight == pytest.approx(17 * 8 / 32)


def test_golden_values():
    w = F.dequantize(golden_row())[0]
    step, low = 200 * 2.0 ** -10, -100 * 2.0 ** -9
    q = np.array([0, 1, 2, 3, 3, 2, 1, 0, 0, 0, 1, 1, 2, 2, 3, 3])
    np.testing.assert_array_equal(w[:16], (low + step * q).astype(np.float32))
    np.testing.assert_array_equal(w[16:], np.repeat(np.array([10, -20, 127, -127]) * 2.0 ** -11, 4).astype(np.float32))


def test_word_bit_positions():
    """Code of input j sits at bits 2j..2j+1 of its word; salient byte k covers inputs 4k..4k+3."""
    for j in range(16):
        codes = np.zeros((1, 16), np.uint8)
        codes[0, j] = 3
        t = F.pack(codes, np.zeros((1, 4), np.int8), np.zeros((1, 1), bool), np.ones((1, 1), np.uint8),
                   np.zeros((1, 1), np.int8), np.ones(1), np.ones(1), np.ones(1), G=32)
        assert int(t.words.view(np.uint32)[0, 0]) == 3 << (2 * j)


@pytest.mark.parametrize("T,P,G", [(576, 7, 128), (576, 3, 32), (1536, 5, 64), (4096, 2, 128), (48, 4, 32)])
@pytest.mark.parametrize("frac", [0.0, 0.025, 0.5, 1.0])
def test_pack_unpack_roundtrip(T, P, G, frac):
    rng = np.random.default_rng(T + P + G)
    nw, ng = F.n_words(T), F.n_groups(T, G)
    salient = rng.random((P, nw)) < frac
    codes = rng.integers(0, 4, (P, T), dtype=np.uint8)
    codes[np.repeat(salient, 16, axis=1)] = 0
    means = rng.integers(-127, 128, (P, T // 4)).astype(np.int8)
    means[~np.repeat(salient, 4, axis=1)] = 0
    sc = rng.integers(0, 256, (P, ng), dtype=np.uint8)
    m = rng.integers(-127, 128, (P, ng)).astype(np.int8)
    d, dmin, dsal = (rng.random(P).astype(np.float16) for _ in range(3))
    t = F.pack(codes, means, salient, sc, m, d, dmin, dsal, G=G)
    u = F.unpack(t)
    np.testing.assert_array_equal(u.codes, codes)
    np.testing.assert_array_equal(u.means, means)
    np.testing.assert_array_equal(u.salient, salient)
    np.testing.assert_array_equal(u.sc, sc)
    np.testing.assert_array_equal(u.m, m)
    np.testing.assert_array_equal(u.d, d)
    assert t.nbytes == F.Layout(T, P, G).nbytes
    assert F.salient_fraction(t) == pytest.approx(salient.mean())


def test_dequantize_matches_formula():
    """dequantize == d*sc*q + dmin*m on 2-bit inputs and dsal*c on salient inputs, input by input."""
    rng = np.random.default_rng(1)
    W = rng.standard_normal((4, 576)).astype(np.float32)
    sal = rng.random((4, 36)) < 0.3
    t = F.quantize_rtn(W, sal, G=64)
    u = F.unpack(t)
    D = F.dequantize(t)
    for p in range(4):
        for j in range(576):
            g, w = j // 64, j // 16
            if u.salient[p, w]:
                want = np.float32(u.dsal[p]) * np.float32(u.means[p, j // 4])
            else:
                want = (np.float32(u.d[p]) * np.float32(u.sc[p, g])) * np.float32(u.codes[p, j]) \
                    + np.float32(u.dmin[p]) * np.float32(u.m[p, g])
            assert D[p, j] == pytest.approx(float(want), rel=1e-6, abs=1e-9)


@pytest.mark.parametrize("G", [32, 64, 128])
def test_quantize_rtn_error_bound(G):
    """RTN 2-bit: every non-salient weight is within half a step (plus code rounding of scale/min) of its value."""
    rng = np.random.default_rng(G)
    W = rng.standard_normal((16, 1536)).astype(np.float32)
    t = F.quantize_rtn(W, None, G=G)
    u = F.unpack(t)
    scale, minv = F.decode_group_params(u.sc, u.m, u.d, u.dmin)
    err = np.abs(F.dequantize(t) - W)
    g_of = np.arange(1536) // G
    # half a step, plus the shift of the grid from coding scale (<= d/2 per step, 3 steps) and min (<= dmin/2)
    bound = scale[:, g_of] / 2 + 1.5 * u.d.astype(np.float32)[:, None] + u.dmin.astype(np.float32)[:, None] / 2
    assert np.all(err <= bound * (1 + 1e-5) + 1e-7)


def test_salient_words_are_means():
    rng = np.random.default_rng(2)
    W = rng.standard_normal((2, 64)).astype(np.float32)
    sal = np.zeros((2, 4), bool)
    sal[0, 1] = sal[1, 3] = True
    D = F.dequantize(F.quantize_rtn(W, sal, G=32))
    for p, w in [(0, 1), (1, 3)]:
        block = W[p, 16 * w:16 * w + 16].reshape(4, 4).mean(axis=1)
        dsal = np.abs(W[p].reshape(16, 4).mean(axis=1)[np.repeat(sal[p], 4)]).max() / 127
        np.testing.assert_allclose(D[p, 16 * w:16 * w + 16], np.repeat(block, 4), atol=dsal * 0.5 + 1e-3 * dsal)


def test_bits_per_weight_figures():
    """The figures stated in docs/FORMAT.md."""
    table = {(576, 128): 2.2917, (1536, 128): 2.2188, (4096, 128): 2.1992, (11008, 128): 2.1919,
             (4096, 64): 2.3242, (4096, 32): 2.5742}
    for (T, G), bpw in table.items():
        assert F.bits_per_weight(T, 4096, G) == pytest.approx(bpw, abs=1e-4)
    assert F.bits_per_weight(4096, 4096, F.DEFAULT_GROUP) <= 2.25


@pytest.mark.parametrize("T,G", [(0, 128), (100, 128), (576, 48), (576, 256)])
def test_bad_shapes(T, G):
    with pytest.raises(FormatError):
        F.Layout(T, 4, G)


def test_validate_rejects_inconsistent_parts():
    t = F.quantize_rtn(np.ones((3, 64), np.float32), None, G=32)
    assert issubclass(FormatError, MAQError)
    parts = t.parts()
    with pytest.raises(FormatError, match="bitmap"):
        F.from_parts({**parts, F.PART_BITMAP: np.zeros((3, 2), np.uint8)}, T=64, G=32)
    with pytest.raises(FormatError, match="scales"):
        F.from_parts({**parts, F.PART_SCALES: np.zeros((3, 2), np.uint8)}, T=64, G=32)
    with pytest.raises(FormatError, match="dtype"):
        F.from_parts({**parts, F.PART_WORDS: parts[F.PART_WORDS].astype(np.int64)}, T=64, G=32)
    with pytest.raises(FormatError, match="missing"):
        F.from_parts({F.PART_WORDS: parts[F.PART_WORDS]}, T=64, G=32)
    bad = parts[F.PART_BITMAP].copy()
    bad[0, 0] = 0x80                     # 4 words per row: bit 7 is padding
    with pytest.raises(FormatError, match="padding"):
        F.from_parts({**parts, F.PART_BITMAP: bad}, T=64, G=32)


# --------------------------------------------------------------------------- MAQ3 / MAQ4 (bit planes)
def test_golden_bytes_maq4_maq3():
    """Code q of input j: low 2 bits at bits 2j..2j+1 of the word, the rest in the hi plane (docs/FORMAT.md)."""
    codes = np.arange(16, dtype=np.uint8)[None]                 # 0..15, one word
    args = dict(means=np.zeros((1, 4), np.int8), salient=np.zeros((1, 1), bool), sc=np.ones((1, 1), np.uint8),
                m=np.zeros((1, 1), np.int8), d=np.ones(1), dmin=np.ones(1), dsal=np.zeros(1), G=32)
    t4 = F.pack(codes, bits=4, **args)
    lo = sum((j & 3) << (2 * j) for j in range(16))
    hi = sum((j >> 2) << (2 * j) for j in range(16))
    assert t4.words.tobytes() == lo.to_bytes(4, "little") and t4.hi.tobytes() == hi.to_bytes(4, "little")
    assert t4.bitmap is None and t4.hi.dtype == np.int32 and t4.type_name == "maq4"
    t3 = F.pack(codes % 8, bits=3, **args)
    hi3 = sum(((j % 8) >> 2) << j for j in range(16))
    assert t3.hi.tobytes() == hi3.to_bytes(2, "little") and t3.hi.dtype == np.uint16
    np.testing.assert_array_equal(F.dequantize(t4)[0], np.arange(16, dtype=np.float32))
    np.testing.assert_array_equal(F.dequantize(t3)[0], (np.arange(16) % 8).astype(np.float32))


@pytest.mark.parametrize("bits", [3, 4])
@pytest.mark.parametrize("T,P,G", [(576, 5, 128), (1536, 3, 64), (48, 2, 32)])
def test_pack_unpack_roundtrip_hi(bits, T, P, G):
    rng = np.random.default_rng(bits * 100 + T)
    ng = F.n_groups(T, G)
    codes = rng.integers(0, 1 << bits, (P, T), dtype=np.uint8)
    t = F.pack(codes, np.zeros((P, T // 4), np.int8), np.zeros((P, T // 16), bool),
               rng.integers(0, 256, (P, ng), dtype=np.uint8), rng.integers(-127, 128, (P, ng)).astype(np.int8),
               np.full(P, 0.01), np.full(P, 0.02), np.zeros(P), G=G, bits=bits)
    np.testing.assert_array_equal(F.unpack(t).codes, codes)
    assert t.nbytes == F.Layout(T, P, G, bits).nbytes
    back = F.from_parts(t.parts(), T, G, bits=bits)
    np.testing.assert_array_equal(F.dequantize(back), F.dequantize(t))


@pytest.mark.parametrize("bits", [2, 3, 4])
def test_rtn_error_shrinks_with_bits(bits):
    rng = np.random.default_rng(7)
    W = rng.standard_normal((32, 576)).astype(np.float32)
    err = np.abs(F.dequantize(F.quantize_rtn(W, None, 64, bits)) - W).mean()
    # mean |error| of uniform rounding = step/4, step = range/(2^bits-1), range of 64 N(0,1) samples ~ 4.6
    ref = 4.6 / ((1 << bits) - 1) / 4
    assert 0.8 * ref < err < 1.2 * ref


def test_bits_per_weight_hi_figures():
    assert F.bits_per_weight(576, 1, 128, bits=4) == pytest.approx(4 + 80 / 576 + 48 / 576)
    assert F.bits_per_weight(576, 1, 128, bits=3) == pytest.approx(3 + 80 / 576 + 48 / 576)
    assert F.bits_per_weight(4096, 1, 128, bits=4) == pytest.approx(4 + 0.125 + 48 / 4096)


def test_maq3_rejects_salient_and_big_codes():
    z = dict(sc=np.ones((1, 1), np.uint8), m=np.zeros((1, 1), np.int8), d=np.ones(1), dmin=np.ones(1),
             dsal=np.zeros(1), G=32)
    with pytest.raises(FormatError, match="salient"):
        F.pack(np.zeros((1, 16), np.uint8), np.zeros((1, 4), np.int8), np.ones((1, 1), bool), bits=3, **z)
    with pytest.raises(FormatError, match="0..7"):
        F.pack(np.full((1, 16), 8, np.uint8), np.zeros((1, 4), np.int8), np.zeros((1, 1), bool), bits=3, **z)
    with pytest.raises(FormatError, match="code width"):
        F.Layout(576, 1, 128, bits=5)
