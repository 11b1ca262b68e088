"""The int8 salient coding (docs/FORMAT.md section 9): format.py's pack / unpack / dequantize / validation, the
worked example byte for byte, the bits/weight figures, the C kernels (runtime/csrc/maq_s8.c) on every x86 path
against numpy and each other (bit-identical), the NEON paths under qemu (tests/csrc/s8_driver.c), and the GGUF
loader's checks of the new parts (hostile values are one clean FormatError / MAQError).

Tolerance of the product against numpy: the kernel quantizes x per 128-input block exactly as for MAQ2, so against
W @ xhat (xhat: test_kernels.quantize_x_maq2) only float rounding remains; the int8 words add one product and one
sum per salient word (rounding 2^-24 relative each) to MAQ2's bound; we allow (nb + 8 + words) * 2^-23 of
sum_j |W_j| |xhat_j| (with |W_j| covering both kinds of word).
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from maq.errors import FormatError, MAQError
from maq.runtime import format as F
from maq.runtime import kernels as K
from test_kernels import PATHS, quantize_x_maq2

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "runtime" / "csrc"
DRIVER = ROOT / "tests" / "csrc" / "s8_driver.c"
from test_neon import KERNEL_SOURCES  # noqa: E402 (the kernel sources, listed once)
CFLAGS = ["-O2", "-std=c11", "-pthread", "-ffp-contract=off", "-Wall", f"-I{CSRC}"]


# --------------------------------------------------------------------------- the worked example (section 9.4)
def example() -> F.MAQTensor:
    codes = np.zeros((2, 32), np.uint8)
    codes[0, :16] = [0, 1, 2, 3, 3, 2, 1, 0, 0, 0, 1, 1, 2, 2, 3, 3]
    sal = np.array([[False, True], [True, True]])
    sal8 = np.zeros((2, 32), np.int8)
    sal8[0, 16:] = [1, -2, 3, -4, 5, -6, 7, -8, 127, -127, 0, 64, -64, 16, -16, 100]
    sal8[1, :16] = 2
    sal8[1, 16:] = -1
    ws = np.array([[0, 2.0 ** -10], [2.0 ** -8, 2.0 ** -7]], np.float16)
    return F.pack(codes, np.zeros((2, 8), np.int8), sal, np.array([[200], [0]]), np.array([[-100], [0]]),
                  np.array([2.0 ** -10, 0]), np.array([2.0 ** -9, 0]), np.array([2.0 ** -11, 0]), G=32,
                  sal8=sal8, wscale=ws)


def hexbytes(a: np.ndarray) -> str:
    return np.ascontiguousarray(a).tobytes().hex(" ")


def test_worked_example():
    t = example()
    assert list(t.parts()) == ["", ".bitmap", ".scales", ".rowscale", ".salw", ".saloff"]
    assert hexbytes(t.words) == "e4 1b 50 fa 00 14 00 00 00 1c 00 00 00 20 00 00"
    assert hexbytes(t.bitmap) == "02 03"
    assert hexbytes(t.scales) == "c8 9c 00 00"
    assert hexbytes(t.rowscale) == "00 14 00 18 00 00 00 00 00 00 00 00"     # dsal written 0
    assert hexbytes(t.salw) == ("01 fe 03 fc 05 fa 07 f8 7f 81 00 40 c0 10 f0 64 " + "02 " * 16 + "ff " * 16).strip()
    assert hexbytes(t.saloff) == "00 00 00 00 01 00 00 00 03 00 00 00"
    assert t.nbytes == 94 and t.bits_per_weight == 11.75
    W = F.dequantize(t)
    step = np.float32(2.0 ** -10 * 200)
    assert np.array_equal(W[0, :4], np.array([-1, 0, 1, 2], np.float32) * step)
    c = np.array([1, -2, 3, -4, 5, -6, 7, -8, 127, -127, 0, 64, -64, 16, -16, 100], np.float32)
    assert np.array_equal(W[0, 16:], c / 1024)
    assert np.all(W[1, :16] == 0.0078125) and np.all(W[1, 16:] == -0.0078125)
    u = F.unpack(t)
    assert np.array_equal(F.dequantize(F.pack(u.codes, u.means, u.salient, u.sc, u.m, u.d, u.dmin, u.dsal, G=32,
                                              sal8=u.sal8, wscale=u.wscale)), W)
    w = K.Weight.from_maq(t)
    assert np.array_equal(np.stack([w.get_row(p) for p in range(2)]), W)
    x = np.linspace(-1, 1, 32, dtype=np.float32)
    for path in PATHS:
        with K.forced_path(path):
            y = K.matmul(w, x[None])[0]
        np.testing.assert_allclose(y, W.astype(np.float64) @ quantize_x_maq2(x)[0], rtol=1e-6, atol=1e-7)


def test_bits_per_weight_figures():
    """docs/FORMAT.md 9.3: bits/weight at T = P = 576, G = 128 with 1 / 2 / 4 % of the words salient."""
    W = 576 * 36
    got = [round(F.bits_per_weight(576, 576, 128, n_salient8=round(f * W)), 4) for f in (0.01, 0.02, 0.04)]
    assert got == [2.4272, 2.5074, 2.6671]
    base = F.bits_per_weight(576, 576, 128)
    n = round(0.02 * W)
    assert F.bits_per_weight(576, 576, 128, n_salient8=n) == pytest.approx(base + (16 * n + 4 * 577) * 8 / 576 ** 2)


# --------------------------------------------------------------------------- reference pack / unpack
def rand_case(T: int, P: int, G: int, frac: float, seed: int = 0):
    rng = np.random.default_rng([T, P, G, seed, int(frac * 1000)])
    W = (rng.standard_normal((P, T)) * 0.02).astype(np.float32)
    W[:, rng.integers(0, T, 3)] *= 30.0                      # outlier inputs: what salient words are for
    sal = np.ones((P, T // 16), bool) if frac == 1.0 else rng.random((P, T // 16)) < frac
    sal[0, 0] = True
    t = F.quantize_rtn(W, sal, G=G, salient_coding=F.SALIENT_INT8)
    return W, sal, t


def test_rtn_int8_keeps_salient_words():
    W, sal, t = rand_case(576, 64, 64, 0.1)
    assert t.salient_coding == F.SALIENT_INT8 and t.n_salient8 == int(sal.sum())
    Wd = F.dequantize(t)
    m = np.repeat(sal, 16, axis=1)
    ws = np.repeat(F.unpack(t).wscale.astype(np.float32), 16, axis=1)
    assert np.all(np.abs(Wd - W)[m] <= 0.5 * ws[m] * (1 + 1e-6))     # round to nearest on each word's own grid
    mean4 = F.dequantize(F.quantize_rtn(W, sal, G=64))
    assert np.abs(Wd - W)[m].sum() < 0.05 * np.abs(mean4 - W)[m].sum()


def bad(t: F.MAQTensor, **changes) -> dict:
    parts = {k: np.array(v, copy=True) for k, v in t.parts().items()}
    for k, fn in changes.items():
        fn(parts[{"words": "", "salw": ".salw", "saloff": ".saloff", "rowscale": ".rowscale"}[k]])
    return parts


def _set(idx, v):
    def f(a):
        a.reshape(-1).view(np.uint8 if a.dtype.itemsize == 1 else a.dtype)[idx] = v
    return f


HOSTILE = {
    "offset": dict(saloff=_set(1, 1000)),
    "offset-first": dict(saloff=_set(0, -1)),
    "offset-last": dict(saloff=_set(2, 7)),
    "slot-high-bits": dict(words=lambda a: a.view(np.uint32).__setitem__((0, 1), 0x00011400)),
    "scale-nan": dict(words=lambda a: a.view(np.uint32).__setitem__((0, 1), 0x7e00)),
    "scale-inf": dict(words=lambda a: a.view(np.uint32).__setitem__((0, 1), 0x7c00)),
    "scale-negative": dict(words=lambda a: a.view(np.uint32).__setitem__((0, 1), 0x9400)),
    "dsal": dict(rowscale=lambda a: a.view(np.uint16).__setitem__((1, 2), 0x3c00)),
}


@pytest.mark.parametrize("what", sorted(HOSTILE))
def test_hostile_parts_are_format_errors(what):
    parts = bad(example(), **HOSTILE[what])
    with pytest.raises(FormatError):
        F.from_parts(parts, 32, 32, salient_coding="int8")


def test_hostile_shapes():
    parts = {k: np.array(v, copy=True) for k, v in example().parts().items()}
    with pytest.raises(FormatError):
        F.from_parts({**parts, ".salw": parts[".salw"][:40]}, 32, 32, salient_coding="int8")
    with pytest.raises(FormatError):
        F.from_parts({**parts, ".salw": parts[".salw"][:32]}, 32, 32, salient_coding="int8")   # N too small
    with pytest.raises(FormatError):
        F.from_parts({k: v for k, v in parts.items() if k != ".saloff"}, 32, 32, salient_coding="int8")
    with pytest.raises(FormatError):
        F.from_parts(parts, 32, 32, salient_coding="mean8")
    assert F.from_parts(parts, 32, 32, salient_coding="int8").n_salient8 == 3


# --------------------------------------------------------------------------- C kernels
CASES = [(576, 64, 64, 0.02, 1), (576, 48, 128, 0.5, 3), (592, 40, 32, 1.0, 2), (1536, 24, 32, 0.1, 5),
         (4096 + 128 + 64 + 16, 8, 128, 0.05, 4),
         (576, 40, 32, 0.05, 9), (1024, 24, 64, 0.1, 33)]   # batches the VNNI path runs as panels (maq2.c)


@pytest.mark.parametrize("T,P,G,frac,B", CASES, ids=[f"T{c[0]}-P{c[1]}-G{c[2]}-s{c[3]}-B{c[4]}" for c in CASES])
def test_kernel_paths_against_numpy(T, P, G, frac, B):
    W, sal, t = rand_case(T, P, G, frac)
    Wd = F.dequantize(t).astype(np.float64)
    w = K.Weight.from_maq(t)
    assert np.array_equal(np.stack([w.get_row(p) for p in range(P)]), Wd.astype(np.float32))
    rng = np.random.default_rng(T + P)
    X = rng.standard_normal((B, T)).astype(np.float32)
    X[:, rng.integers(0, T, 3)] *= 20.0
    with K.forced_path("scalar"):
        ref = K.matmul(w, X)
    nb = -(-T // 128)
    for b in range(B):
        xhat = quantize_x_maq2(X[b])[0]
        tol = (nb + 8 + T // 16) * 2.0 ** -23 * (np.abs(Wd) @ np.abs(xhat)) + 1e-30
        assert np.all(np.abs(ref[b] - Wd @ xhat) <= tol)
    for path in PATHS:
        with K.forced_path(path):
            np.testing.assert_array_equal(K.matmul(w, X), ref, err_msg=path)
            with K.Pool(2) as pool:
                np.testing.assert_array_equal(K.matmul(w, X, pool=pool), ref, err_msg=f"{path}, 2 threads")
            for b in range(B):              # batched == one token at a time
                np.testing.assert_array_equal(K.matmul(w, X[b:b + 1])[0], ref[b], err_msg=f"{path}, token {b}")


def _driver_input(path: Path, t: F.MAQTensor, X: np.ndarray) -> None:
    with open(path, "wb") as f:
        f.write(b"MAQS" + np.array([t.T, t.P, t.G, X.shape[0], t.n_salient8], "<i4").tobytes())
        for a in (t.words, t.bitmap, t.scales, t.rowscale, t.salw, t.saloff, X.astype("<f4")):
            f.write(np.ascontiguousarray(a).tobytes())


def _build(cc: str, out: Path, extra: list[str]) -> None:
    cmd = [cc, *CFLAGS, *extra, str(DRIVER), *[str(CSRC / s) for s in KERNEL_SOURCES], "-lm", "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"


def test_neon_paths_under_qemu(tmp_path):
    """The driver natively (every x86 path = the extension), then for aarch64 under qemu (scalar, neon, dotprod)."""
    T, P, G, frac, B = 592, 24, 32, 0.2, 3
    W, sal, t = rand_case(T, P, G, frac, seed=3)
    w = K.Weight.from_maq(t)
    X = np.random.default_rng(5).standard_normal((B, T)).astype(np.float32)
    with K.forced_path("scalar"):
        expect = K.matmul(w, X)
    rows = F.dequantize(t)
    inp, out = tmp_path / "in.bin", tmp_path / "out.bin"
    _driver_input(inp, t, X)
    runs = []
    native = tmp_path / "native"
    _build("gcc", native, [])
    runs += [([str(native), p, str(inp), str(out)], p) for p in PATHS]
    if shutil.which("aarch64-linux-gnu-gcc") and shutil.which("qemu-aarch64"):
        arm = tmp_path / "arm"
        _build("aarch64-linux-gnu-gcc", arm, ["-static"])
        runs += [(["qemu-aarch64", str(arm), p, str(inp), str(out)], p) for p in ("scalar", "neon", "dotprod")]
    for cmd, p in runs:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0 and f"path={p}" in res.stdout, (cmd, res.stdout, res.stderr)
        raw = np.fromfile(out, "<f4")
        np.testing.assert_array_equal(raw[:B * P].reshape(B, P), expect, err_msg=" ".join(cmd[:2]))
        np.testing.assert_array_equal(raw[B * P:].reshape(P, T), rows)
    if len(runs) == len(PATHS):
        pytest.skip("aarch64-linux-gnu-gcc / qemu-aarch64 not installed (apt-get install -y gcc-aarch64-linux-gnu "
                    "qemu-user): NEON paths not checked")


# --------------------------------------------------------------------------- the GGUF loader
def _int8_gguf(src: Path, out: Path, mutate=None, coding: str = "int8") -> Path:
    """A copy of a float GGUF with every linear MAQ2 + int8 salient words (``mutate(name, parts)`` may damage
    them)."""
    import gguf

    import gguf_files as GF
    from maq.runtime import gguf_loader as gl

    gf = gl.GGUFFile(src)
    rng = np.random.default_rng(0)
    w = gguf.GGUFWriter(str(out), "llama")
    GF._copy_metadata(w, gf, skip=(F.KEY_VERSION,))
    w.add_uint32(F.KEY_VERSION, F.FORMAT_VERSION_PLAIN)
    for name, t in gf.tensors.items():
        arr = np.array(gf.view(t, "<f4", t.shape)) if t.ggml_type == gl.GGML_F32 else np.array(t.data)
        if name.startswith("blk.") and arr.ndim == 2 and name.split(".")[2] in GF.LINEARS:
            P, T = arr.shape
            sal = rng.random((P, T // 16)) < 0.1
            sal[0, :2] = True                   # word (0, 1) salient: HOSTILE's target
            mt = F.quantize_rtn(arr, sal, G=32, salient_coding=F.SALIENT_INT8)
            parts = {k: np.array(v, copy=True) for k, v in mt.parts().items()}
            if mutate:
                mutate(name, parts)
            w.add_string(F.key_tensor_type(name), F.TYPE_MAQ2)
            w.add_uint32(F.key_group_size(name), 32)
            w.add_string(F.key_salient_coding(name), coding)
            for suffix, a in parts.items():
                w.add_tensor(name + suffix, a.view(np.int8) if a.dtype == np.uint8 else a)
        else:
            w.add_tensor(name, arr)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


IDS = [504, 3575, 282, 4649, 314, 7, 9, 100, 2000, 40000, 17, 49151, 0, 1, 2, 3333]


def test_loader_runs_int8_file_like_numpy(tiny_gqa, tmp_path):
    """The C engine on an int8-salient file against the numpy reference over format.dequantize'd weights (the
    tolerance of test_model.py::test_maq_matches_numpy_reference, with the kernels' activation rounding simulated)."""
    from maq.runtime import gguf_loader as gl
    from maq.runtime import model as M
    from maq.runtime.reference import ReferenceModel

    lm = gl.load(_int8_gguf(tiny_gqa[1], tmp_path / "s8.gguf"))
    assert all(L.wq.maq.salient_coding == "int8" for L in lm.layers)
    got = M.CModel(lm, n_ctx=32, n_threads=2).forward(IDS, 0, M.LOGITS_ALL)
    exact = ReferenceModel(lm, n_ctx=32).forward(IDS, 0)
    sim = ReferenceModel(lm, n_ctx=32, act_quant=True).forward(IDS, 0)
    rounding = float(np.abs(sim - exact).max())
    assert float(np.abs(got - exact).max()) <= 2 * rounding + 1e-4
    assert float(np.abs(got - sim).max()) < rounding / 4 + 1e-5


@pytest.mark.parametrize("what", ["offset", "scale-nan", "dsal", "salw-short", "coding-on-none", "unknown-coding"])
def test_loader_rejects_hostile_int8(tiny_gqa, tmp_path, what):
    from maq.runtime import gguf_loader as gl

    target = "blk.0.attn_q.weight"

    def mutate(name, parts):
        if name != target:
            return
        if what in HOSTILE:
            bad_fn = HOSTILE[what]
            for k, fn in bad_fn.items():
                fn(parts[{"words": "", "saloff": ".saloff", "rowscale": ".rowscale"}[k]])
        elif what == "salw-short":
            parts[".salw"] = parts[".salw"][:-8]
        elif what == "coding-on-none":
            del parts[".salw"]
            del parts[".saloff"]
    coding = "int4" if what == "unknown-coding" else "int8"
    path = _int8_gguf(tiny_gqa[1], tmp_path / "bad.gguf", mutate, coding=coding)
    with pytest.raises(MAQError) as e:
        gl.load(path)
    assert "\n" not in str(e.value)
