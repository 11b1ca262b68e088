"""MAQ2 (without salient words) / MAQ3 / MAQ4 weights repacked into 16-row panels at load time (runtime/csrc/maq2_r16.c, kernels.repack_r16): the
panel bytes against a numpy re-implementation of the documented layout, products bit-identical to the scalar path
(every path, 1-3 threads, single tokens, token tiles and the unpacked-panel batches), the file's pages released and
read again, and a model whose logits do not change with the repack.

The repacked products form the same integers per group (code dots C, D_b += sc*C, M_b += m*XS_g) and the same float
steps per block as the scalar reference (lanes = rows instead of one row at a time), so equality is exact; the
numerical tolerance is the one of test_kernels_maqhi.py (check()).
"""
from __future__ import annotations

import mmap

import numpy as np
import pytest

import gguf_files
from maq.runtime import format as F
from maq.runtime import gguf_loader as gl
from maq.runtime import kernels as K
from maq.runtime import model as M
from maq.runtime._maq_c import lib
from test_kernels import pools  # noqa: F401 (fixture)
from test_kernels_maqhi import check

IDS = [504, 3575, 282, 4649, 314, 7, 9, 100, 2000, 17, 0, 1, 2, 3333, 12, 99, 1234, 5, 6, 8]


def _tensor(P: int, T: int, G: int, bits: int, seed: int = 0) -> F.MAQTensor:
    """RTN codes of a random Gaussian weight (MAQ2: no salient words)."""
    rng = np.random.default_rng([P, T, G, bits, seed])
    W = (rng.standard_normal((P, T)) * 0.02).astype(np.float32)
    return F.quantize_rtn(W, np.zeros((P, T // 16), bool), G=G) if bits == 2 else F.quantize_rtn(W, G=G, bits=bits)


def _eligible() -> bool:
    return lib.maq_r16_bytes(K.Weight.from_maq(_tensor(16, 64, 32, 4)).c) > 0


needs_r16 = pytest.mark.skipif(not _eligible(), reason="this CPU lacks AVX-512 VNNI + GFNI: no 16-row repack")


def panels_numpy(t: F.MAQTensor) -> np.ndarray:
    """The repacked bytes as maq2_r16.c's header comment documents them, built with numpy from format.unpack."""
    u = F.unpack(t)
    P, T, ng = t.P, t.T, -(-t.T // t.G)
    npan = -(-P // 16)
    codes = np.zeros((npan * 16, T), np.uint8)
    codes[:P] = u.codes
    sc = np.zeros((npan * 16, ng), np.uint8)
    m = np.zeros((npan * 16, ng), np.int8)
    sc[:P], m[:P] = u.sc, u.m
    d, dmin, dsal = (np.zeros(npan * 16, np.float32) for _ in range(3))
    d[:P], dmin[:P] = u.d, u.dmin
    if t.bits == 2:
        dsal[:P] = np.asarray(t.rowscale, np.float32)[:, 2]
    out = []
    for i in range(npan):
        c = codes[16 * i:16 * i + 16]                              # [16 rows][T]
        if t.bits == 2:
            c16 = c.reshape(16, T // 16, 4, 4)                     # [r][k][f][j]: input 16k + 4f + j
            body = np.bitwise_or.reduce(c16 << (2 * np.arange(4)[None, None, :, None]), axis=2, dtype=np.uint8)
            body = body.transpose(1, 0, 2).reshape(-1)
        elif t.bits == 4:
            c8 = c.reshape(16, T // 8, 2, 4)                       # [r][k][half][j]: input 8k + 4 half + j
            body = (c8[:, :, 0] | c8[:, :, 1] << 4).transpose(1, 0, 2).reshape(-1)
        else:
            c32 = c.reshape(16, T // 32, 2, 4, 4)                  # [r][k][s][f][j]: input 32k + 16s + 4f + j
            lo = np.zeros((T // 32, 2, 16, 4), np.uint8)
            hi = np.zeros((T // 32, 16, 4), np.uint8)
            for s in range(2):
                for f in range(4):
                    lo[:, s] |= ((c32[:, :, s, f] & 3) << (2 * f)).transpose(1, 0, 2)
                    hi |= ((c32[:, :, s, f] >> 2) << (4 * s + f)).transpose(1, 0, 2)
            body = np.concatenate([lo.reshape(T // 32, -1), hi.reshape(T // 32, -1)], axis=1).reshape(-1)
        rows = slice(16 * i, 16 * i + 16)
        tail = [sc[rows].T.reshape(-1), m[rows].T.reshape(-1).view(np.uint8), d[rows].view(np.uint8),
                dmin[rows].view(np.uint8)] + ([dsal[rows].view(np.uint8)] if t.bits == 2 else [])
        panel = np.concatenate([body] + tail)
        out.append(np.concatenate([panel, np.zeros(-len(panel) % 64, np.uint8)]))
    return np.concatenate(out)


@needs_r16
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("P,T,G", [(53, 576, 32), (16, 96, 128), (37, 640, 64), (20, 1536, 128)])
def test_panel_bytes(P, T, G, bits):
    t = _tensor(P, T, G, bits)
    w = K.Weight.from_maq(t)
    n = w.repack_r16()
    want = panels_numpy(t)
    assert n == want.nbytes == lib.maq_r16_bytes(w.c)
    got = np.frombuffer(K.ffi.buffer(w.c.r16, n), np.uint8)
    np.testing.assert_array_equal(got, want)
    before = int(K.ffi.cast("uintptr_t", w.c.r16))
    assert w.repack_r16() == 0 and int(K.ffi.cast("uintptr_t", w.c.r16)) == before   # once only


@needs_r16
@pytest.mark.parametrize("P,T", [(53, 576), (16, 32), (37, 1536), (21, 608)])
def test_q8_0_panel_bytes(P, T):
    """Q8_0 panels (q8_0.c): per 16 rows the weights + 128 as [T/4][16][4] bytes, then the fp16 block scales
    [T/32][16]; products are checked in test_kernels.py::test_q8_0[r16]."""
    import gguf
    from gguf.quants import quantize

    q = quantize((np.random.default_rng(P).standard_normal((P, T)) * 0.05).astype(np.float32),
                 gguf.GGMLQuantizationType.Q8_0).reshape(P, T // 32, 34)
    npan = -(-P // 16)
    qs = np.zeros((npan * 16, T // 32, 32), np.uint8)
    dh = np.zeros((npan * 16, T // 32, 2), np.uint8)
    qs[:P], dh[:P] = q[:, :, 2:] ^ 0x80, q[:, :, :2]
    want = []
    for i in range(npan):
        rows = slice(16 * i, 16 * i + 16)
        want += [qs[rows].reshape(16, T // 4, 4).transpose(1, 0, 2).reshape(-1), dh[rows].transpose(1, 0, 2).reshape(-1),
                 np.zeros(-17 * T % 64, np.uint8)]
    want = np.concatenate(want)
    w = K.Weight.q8_0(q.reshape(P, -1), T, P)
    n = w.repack_r16()
    assert n == want.nbytes
    np.testing.assert_array_equal(np.frombuffer(K.ffi.buffer(w.c.r16, n), np.uint8), want)


@needs_r16
@pytest.mark.parametrize("B", [1, 2, 5, 8, 9, 20, 40])
@pytest.mark.parametrize("G", F.GROUP_SIZES)
@pytest.mark.parametrize("bits", [2, 3, 4])
@pytest.mark.parametrize("T", [96, 576, 640])
def test_products_bit_identical(T, bits, G, B, pools):
    """Ragged last panel (P = 53), ragged last block and group (T = 96, 576, 640), every token tile 1..8 (B 9, 20,
    40: several tiles over unpacked panels); check() compares every path and thread count with the scalar path
    (which reads the file's layout) and the scalar path with the float64 references."""
    t = _tensor(53, T, G, bits, seed=B)
    w = K.Weight.from_maq(t)
    assert w.repack_r16() > 0
    check(t, F.dequantize(t).astype(np.float64), w, pools, B=B, seed=B)


@pytest.mark.parametrize("T,bits", [(592, 4), (592, 3), (1040, 3)])
def test_ineligible_widths_stay(T, bits, pools):
    """T % 32 != 0 is not repacked (0 bytes, r16 stays NULL) and the products are those of the file's layout."""
    t = _tensor(21, T, 64, bits)
    w = K.Weight.from_maq(t)
    assert w.repack_r16() == 0 and w.c.r16 == K.ffi.NULL
    check(t, F.dequantize(t).astype(np.float64), w, pools, B=3)


def test_other_types_stay():
    """MAQ2 with salient words (one is enough; mean4 or int8 coding), Q8_0, F16 and F32 weights are never
    repacked."""
    rng = np.random.default_rng(5)
    W = (rng.standard_normal((32, 64)) * 0.02).astype(np.float32)
    one = np.zeros((32, 4), bool)
    one[31, 3] = True
    ws = [K.Weight.from_maq(F.quantize_rtn(W, one, G=32)), K.Weight.f32(W), K.Weight.f16(W.astype(np.float16)),
          K.Weight.from_maq(F.quantize_rtn(W, one, G=32, salient_coding="int8"))]
    assert K.repack_r16(ws) == 0
    assert all(w.c.r16 == K.ffi.NULL for w in ws)


@needs_r16
@pytest.mark.parametrize("mapped", [True, False], ids=["memmap", "read-into-memory"])
def test_release_keeps_file_pages_readable(tmp_path, pools, mapped):
    """release_file_pages hands a repacked weight's words and hi plane back to the OS, whether the file is mapped
    (np.memmap) or was read into anonymous memory (remapped from the file first); every path, including those that
    read the file's parts (avx2, scalar), still gets the same results, and the parts still read as the file's bytes.
    A file that no longer holds those bytes is not remapped (nothing released, nothing changed)."""
    t = _tensor(256, 1536, 64, 4)
    path = tmp_path / "parts.bin"
    blob = bytearray()
    offsets = []
    for a in (t.words, t.hi):
        offsets.append(len(blob))
        blob += np.ascontiguousarray(a).tobytes() + b"\0" * (-a.nbytes % 4096)
    path.write_bytes(bytes(blob))
    if mapped:
        base = np.memmap(path, dtype=np.uint8, mode="r")
    else:
        base = np.frombuffer(mmap.mmap(-1, len(blob)), np.uint8)      # page aligned, as the loader's buffer
        base[:] = np.frombuffer(bytes(blob), np.uint8)

    def parts(b):
        words = b[offsets[0]:offsets[0] + t.words.nbytes].view(t.words.dtype).reshape(t.words.shape)
        hi = b[offsets[1]:offsets[1] + t.hi.nbytes].view(t.hi.dtype).reshape(t.hi.shape)
        return F.MAQTensor(words, None, t.scales, t.rowscale, T=t.T, G=t.G, bits=4, hi=hi)

    w, ref = K.Weight.from_maq(parts(base)), K.Weight.from_maq(t)
    assert K.release_file_pages(w, base, str(path)) == 0             # not repacked: nothing to hand back
    assert K.repack_r16([w]) > 0
    if not mapped:                                                    # a changed file is not remapped
        path.write_bytes(bytes(len(blob)))
        assert K.release_file_pages(w, base, str(path)) == 0
        path.write_bytes(bytes(blob))
    assert K.release_file_pages(w, base, str(path)) >= t.words.nbytes - 4096
    X = np.random.default_rng(0).standard_normal((3, t.T)).astype(np.float32)
    for p in K.supported_paths():
        with K.forced_path(p):
            np.testing.assert_array_equal(K.matmul(w, X, pools[2]), K.matmul(ref, X, pools[2]), err_msg=p)
    np.testing.assert_array_equal(np.asarray(parts(base).words), t.words)
    np.testing.assert_array_equal(np.asarray(parts(base).hi), t.hi)


@pytest.fixture(scope="module", params=[2, 3, 4])
def tiny_maqhi(request, tiny_gqa, tmp_path_factory):
    """tiny_gqa's linears as MAQ2 (no salient words), MAQ3 or MAQ4 (RTN, G = 32), token_embd Q8_0."""
    out = tmp_path_factory.mktemp("r16") / f"gqa.maq{request.param}.gguf"
    return gguf_files.requantize_maq(tiny_gqa[1], out, bits=request.param, G=32, salient_frac=0.0)


@needs_r16
@pytest.mark.parametrize("threads", [1, 2])
def test_model_logits_unchanged(tiny_maqhi, threads):
    """A model's prompt and decode logits are the same with and without the repack (MAQ_REPACK / repack=)."""
    lm = gl.load(tiny_maqhi)
    on = M.CModel(lm, n_ctx=32, n_threads=threads, repack=True)
    off = M.CModel(lm, n_ctx=32, n_threads=threads, repack=False)
    assert on.repacked_bytes > 0 and off.repacked_bytes == 0
    np.testing.assert_array_equal(on.forward(IDS, 0, M.LOGITS_ALL), off.forward(IDS, 0, M.LOGITS_ALL))
    for i in range(4):
        np.testing.assert_array_equal(on.step(IDS[i], i).copy(), off.step(IDS[i], i))


def test_repack_env(monkeypatch):
    monkeypatch.setenv("MAQ_REPACK", "0")
    assert M.repack_default() is False
    monkeypatch.setenv("MAQ_REPACK", "yes")
    with pytest.raises(M.MAQError, match="MAQ_REPACK"):
        M.repack_default()
