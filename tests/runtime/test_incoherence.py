"""Linears stored rotated (docs/FORMAT.md section 10, ``--incoherence hadamard``): format.rotate / unrotate (the
worked example, orthogonality, block lengths), the C rotation (maq_rotate_row) bit-identical to numpy on every SIMD
path, rotated products equal to the plain product of the pre-rotated input (the rotation happens before the
activation rounding, so bit-identical), the loader's metadata checks, and a rotated tiny model through the C
forward against the numpy reference.

Tolerance of the model test: as test_model.test_maq_matches_numpy_reference (the reference simulates the kernels'
int8 activation rounding on the rotated input, ``act_quant=True``; C sits within a quarter of that rounding's
effect of it); exact mode (weights un-rotated to F32 at load) equals the float reference within float error.
"""
from __future__ import annotations

import numpy as np
import pytest

from maq.errors import FormatError, MAQError
from maq.runtime import format as F
from maq.runtime import gguf_loader as gl
from maq.runtime import kernels as K
from maq.runtime import model as M
from maq.runtime.reference import ReferenceModel
from test_kernels import PATHS

IDS = [1, 17, 300, 4096, 9, 77, 5, 1200, 31, 8]


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / np.linalg.norm(b))


# --------------------------------------------------------------------------- format
def fmix32(h: int) -> int:
    m = 0xFFFFFFFF
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & m
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & m
    return h ^ (h >> 16)


def test_worked_example():
    """docs/FORMAT.md 10.3: T = 8, S = 0."""
    hashes = [fmix32(i) for i in range(8)]
    assert hashes == [0x00000000, 0x514E28B7, 0x30F4C306, 0x85F0B427, 0x249CB285, 0xCC0D53CD, 0x5CEB4D08,
                      0x18C9AEC4]
    signs = F.hadamard_signs(8, 0)
    assert signs.tolist() == [1, 1, 1, -1, 1, -1, 1, 1]
    assert signs.tolist() == [-1 if h >> 31 else 1 for h in hashes]
    x = np.arange(1, 9, dtype=np.float32)
    want = np.array([16, 16, -12, 4, -12, -4, 20, -20], np.float32) * np.float32(1 / np.sqrt(8))
    np.testing.assert_array_equal(F.rotate(x[None], 0)[0], want)
    np.testing.assert_array_equal(K.rotate(x, 0), want)
    assert np.allclose(F.rotate(x[None], 0)[0], [5.656854, 5.656854, -4.2426405, 1.4142135, -4.2426405,
                                                  -1.4142135, 7.071068, -7.071068])
    np.testing.assert_allclose(F.unrotate(want[None], 0)[0], x, rtol=1e-6)


@pytest.mark.parametrize("T,block", [(576, 64), (1536, 64), (4096, 64), (11008, 64), (40, 8), (24, 8), (7, 1)])
def test_block_lengths_and_orthogonality(T, block):
    assert F.hadamard_block(T) == block
    if T > 1536:
        return
    R = F.rotate(np.eye(T), seed=3).T                       # column i = R e_i
    np.testing.assert_allclose(R @ R.T, np.eye(T), atol=1e-12)
    x = np.random.default_rng(T).standard_normal((3, T))
    np.testing.assert_allclose(F.rotate(x, 3), x @ R.T, atol=1e-12)
    np.testing.assert_allclose(F.unrotate(F.rotate(x, 3), 3), x, atol=1e-12)
    # a row stored rotated gives the same dot products with rotated inputs
    w = np.random.default_rng(T + 1).standard_normal((5, T))
    np.testing.assert_allclose(F.rotate(w, 3) @ F.rotate(x, 3).T, w @ x.T, atol=1e-9)


def test_signs_depend_on_seed():
    a, b = F.hadamard_signs(576, 1), F.hadamard_signs(576, 2)
    assert set(np.unique(a)) == {-1.0, 1.0} and 0.4 < (a > 0).mean() < 0.6
    assert (a != b).mean() > 0.3


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("T", [576, 1536, 40, 96])
def test_c_rotation_is_numpy_bit_for_bit(path, T):
    X = (np.random.default_rng(T).standard_normal((4, T)) * 3).astype(np.float32)
    with K.forced_path(path):
        np.testing.assert_array_equal(K.rotate(X, F.DEFAULT_INCOHERENCE_SEED), F.rotate(X, F.DEFAULT_INCOHERENCE_SEED))


# --------------------------------------------------------------------------- rotated products
def _weights(T: int, P: int = 48):
    rng = np.random.default_rng(T + P)
    W = (rng.standard_normal((P, T)) * 0.05).astype(np.float32)
    sal = rng.random((P, T // 16)) < 0.1
    yield "maq2", lambda: K.Weight.from_maq(F.quantize_rtn(W, sal, G=64))
    yield "maq2-int8", lambda: K.Weight.from_maq(F.quantize_rtn(W, sal, G=64, salient_coding=F.SALIENT_INT8))
    yield "maq4", lambda: K.Weight.from_maq(F.quantize_rtn(W, None, G=32, bits=4))
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import quantize
    q = quantize(W, GGMLQuantizationType.Q8_0)
    yield "q8_0", lambda: K.Weight.q8_0(q, T, P)
    yield "f32", lambda: K.Weight.f32(W)


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("T", [576, 128])
@pytest.mark.parametrize("B", [1, 5])
def test_rotated_product_is_product_of_rotated_input(path, T, B):
    """W' (R x) computed by the kernels (rotation inside maq_act_prepare) == the plain kernel on format.rotate(x)."""
    X = np.random.default_rng(B).standard_normal((B, T)).astype(np.float32)
    Xr = F.rotate(X, 11)
    with K.forced_path(path):
        for name, make in _weights(T):
            w_rot, w_plain = make().rotate_inputs(11), make()
            assert w_rot.act_bytes(B) == w_plain.act_bytes(B) + 4 * T
            np.testing.assert_array_equal(K.matmul(w_rot, X), K.matmul(w_plain, Xr), err_msg=name)


def test_rotate_inputs_checks_seed():
    w = K.Weight.f32(np.zeros((16, 32), np.float32))
    for bad in (-1, 2 ** 32, 1.5, True):
        with pytest.raises(MAQError, match="rotation seed"):
            w.rotate_inputs(bad)


# --------------------------------------------------------------------------- files
@pytest.fixture(scope="module")
def tiny_rotated(tiny_gqa, tmp_path_factory):
    """tiny_gqa's F32 file converted with --method rtn --bits 4 --incoherence hadamard."""
    from maq.cli import main

    out = tmp_path_factory.mktemp("rotated") / "gqa.rot.gguf"
    assert main(["convert", str(tiny_gqa[1]), "--out", str(out), "--method", "rtn", "--bits", "4",
                 "--incoherence", "hadamard", "--no-progress"]) == 0
    return out


def test_loader_marks_block_linears(tiny_rotated, tiny_gqa):
    lm = gl.load(tiny_rotated)
    assert lm.gguf.metadata[F.KEY_INCOHERENCE] == "hadamard"
    seed = lm.gguf.metadata[F.KEY_INCOHERENCE_SEED]
    for L in lm.layers:
        for w in (L.wq, L.wk, L.wv, L.wo, L.w_gate, L.w_up, L.w_down):
            assert w.rotation_seed == seed
            np.testing.assert_allclose(w.dequantize(), F.unrotate(w.stored(), seed), rtol=0, atol=0)
            kw = w.kernel_weight()
            assert kw.rotation_seed == seed and kw.c.in_block == F.hadamard_block(w.T)
    assert lm.tok_embd.rotation_seed is None and lm.output.rotation_seed is None
    # the stored values are the RTN codes of the rotated source weights; un-rotated they approximate the source
    src = gl.load(tiny_gqa[1])
    W, Wq = src.layers[0].w_down.dequantize(), lm.layers[0].w_down.dequantize()
    assert rel(Wq, W) < 0.15
    rtn = F.dequantize(F.quantize_rtn(F.rotate(W, seed), None, G=F.DEFAULT_GROUP, bits=4))
    np.testing.assert_allclose(lm.layers[0].w_down.stored(), rtn, rtol=0, atol=1e-7)


def test_rotated_model_matches_numpy_reference(tiny_rotated):
    lm = gl.load(tiny_rotated)
    exact = ReferenceModel(lm, n_ctx=32).forward(IDS, 0)
    rounded = ReferenceModel(lm, n_ctx=32, act_quant=True).forward(IDS, 0)
    got = M.CModel(lm, n_ctx=32, n_threads=2).forward(IDS, 0, M.LOGITS_ALL)
    rounding = rel(rounded, exact)
    assert 0 < rounding < 0.05
    assert rel(got, rounded) < rounding / 4
    cm = M.CModel(lm, n_ctx=32, n_threads=1)
    rows = [cm.forward(t, i).copy() for i, t in enumerate(IDS)]
    assert rel(np.stack(rows), got) < 1e-5
    # exact mode: every rotated weight un-rotated to F32 at load, no activation rotation left
    lx = gl.load(tiny_rotated, exact=True)
    assert all(w.rotation_seed is None and w.kind == gl.KIND_F32 for w in lx.weights())
    assert rel(M.CModel(lx, n_ctx=32, n_threads=1).forward(IDS, 0, M.LOGITS_ALL), exact) < 1e-5


def test_without_rotation_the_file_is_wrong(tiny_rotated, tmp_path):
    """The rotation is load-bearing: the same tensors read as unrotated give other logits."""
    import gguf_files

    plain = gguf_files.rewrite(tiny_rotated, tmp_path / "norot.gguf", drop_keys=(F.KEY_INCOHERENCE,))
    a = M.CModel(gl.load(tiny_rotated), n_ctx=32, n_threads=1).forward(IDS, 0, M.LOGITS_ALL)
    b = M.CModel(gl.load(plain), n_ctx=32, n_threads=1).forward(IDS, 0, M.LOGITS_ALL)
    assert rel(b, a) > 0.1


@pytest.mark.parametrize("metadata,match", [
    ({F.KEY_INCOHERENCE: "quip"}, "maq.incoherence = 'quip', expected one of none, hadamard"),
    ({F.KEY_INCOHERENCE: 7}, "maq.incoherence"),
    ({F.KEY_INCOHERENCE_SEED: "zero"}, "maq.incoherence.seed"),
])
def test_bad_metadata_is_one_error(tiny_rotated, tmp_path, metadata, match):
    import gguf_files

    bad = gguf_files.rewrite(tiny_rotated, tmp_path / "bad.gguf", metadata=metadata)
    with pytest.raises(FormatError, match=match):
        gl.load(bad)


def test_missing_seed_is_one_error(tiny_rotated, tmp_path):
    import gguf_files

    bad = gguf_files.rewrite(tiny_rotated, tmp_path / "noseed.gguf", drop_keys=(F.KEY_INCOHERENCE_SEED,))
    with pytest.raises(FormatError, match="maq.incoherence.seed is missing"):
        gl.load(bad)


def test_per_tensor_exception(tiny_rotated, tmp_path):
    """maq.tensor.<name>.incoherence = "none": that block linear is stored as is (the allocation's choice)."""
    import gguf_files

    name = "blk.0.attn_q.weight"
    md = gl.GGUFFile(tiny_rotated).metadata
    seed = md[F.KEY_INCOHERENCE_SEED]
    assert F.tensor_rotation(md, name) == seed and F.tensor_rotation(md, "output.weight") is None
    assert F.tensor_rotation({**md, F.key_tensor_incoherence(name): "none"}, name) is None
    with pytest.raises(FormatError, match=f"{F.key_tensor_incoherence(name)} = 'maybe'"):
        F.tensor_rotation({**md, F.key_tensor_incoherence(name): "maybe"}, name)
    assert F.tensor_rotation({}, name) is None
    mixed = gguf_files.rewrite(tiny_rotated, tmp_path / "mixed.gguf",
                               metadata={F.key_tensor_incoherence(name): "none"})
    lm = gl.load(mixed)
    assert lm.layers[0].wq.rotation_seed is None and lm.layers[0].wk.rotation_seed == seed
    # q is now read as stored (rotated values, unrotated inputs): its logits move, the loader follows the key
    ref = ReferenceModel(lm, n_ctx=32, act_quant=True).forward(IDS, 0)
    got = M.CModel(lm, n_ctx=32, n_threads=2).forward(IDS, 0, M.LOGITS_ALL)
    assert rel(got, ref) < 0.02


def test_rotated_file_is_format_version_2(tiny_rotated, tmp_path):
    """A rotated file says maq.format_version 2, so a version-1 reader refuses it rather than ignoring the rotation;
    a file claiming the rotation at version 1 is refused by this one."""
    import gguf_files

    assert gl.GGUFFile(tiny_rotated).metadata[F.KEY_VERSION] == F.FORMAT_VERSION == 2
    old = gguf_files.rewrite(tiny_rotated, tmp_path / "v1.gguf", metadata={F.KEY_VERSION: 1})
    with pytest.raises(FormatError, match="maq.incoherence needs maq.format_version >= 2"):
        gl.load(old)
