"""The NEON (and NEON + dotprod) paths: the same runtime/csrc kernel sources cross-compiled for aarch64 with
tests/csrc/kernel_driver.c (``aarch64-linux-gnu-gcc -O2 -static``) and run under ``qemu-aarch64``, on reference
vectors written by this test (MAQ2, MAQ3, MAQ4, Q8_0, F16, F32; products and get_row).

Expected results come from the x86 Python extension's scalar path. Every path of every architecture is
bit-identical by construction (exact integers per block, the same float operations in the same order, no FMA
contraction: -ffp-contract=off), so the comparison is exact equality. The same driver is also built natively
(its scalar, sse and avx2 paths must equal the extension) and its scalar path is run under qemu, which proves the
driver and the cross build right independently of the NEON code.

Skips (with the apt packages to install) when the cross toolchain or qemu is missing.
"""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import model_dump as D
from maq.runtime import format as F
from maq.runtime import kernels as K

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "runtime" / "csrc"
DRIVER = ROOT / "tests" / "csrc" / "kernel_driver.c"
# The kernel files (not csrc/model.c and friends: the driver only needs maq.h).
# every kernel source (as runtime/_build.py compiles them: all of csrc/), without the model
KERNEL_SOURCES = sorted(p.name for p in CSRC.glob("*.c") if p.name != "model.c")
CFLAGS = ["-O2", "-std=c11", "-pthread", "-ffp-contract=off", "-Wall", f"-I{CSRC}"]
CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
APT_HINT = "apt-get install -y gcc-aarch64-linux-gnu qemu-user"

# (type, T, P, G, salient fraction, B); MAQ3 / MAQ4 with random parts (every word and hi bit pattern)
CASES = [
    ("maq2", 576, 192, 128, 0.025, 1),
    ("maq2", 576, 64, 64, 0.5, 3),
    ("maq2", 1536, 48, 32, 0.025, 5),
    ("maq2", 592, 40, 32, 1.0, 2),          # ragged last block with a tail word, all salient
    ("maq2", 4096 + 128 + 64 + 16, 24, 128, 0.0, 4),   # quads + full, half and tail remainder blocks
    ("maq3", 576, 192, 128, 0.0, 1),
    ("maq3", 1536, 48, 32, 0.0, 5),
    ("maq3", 4096 + 128 + 64 + 16, 24, 64, 0.0, 4),  # quads + full, half and tail remainder blocks
    ("maq4", 576, 64, 64, 0.0, 3),
    ("maq4", 592, 40, 32, 0.0, 2),          # ragged last block with a tail word
    ("maq4", 4096 + 128 + 64 + 16, 24, 128, 0.0, 4),
    ("q8_0", 576, 96, 0, 0.0, 3),
    ("f16", 200, 33, 0, 0.0, 2),
    ("f32", 203, 17, 0, 0.0, 5),
]


def _build(cc: str, out: Path, extra: list[str]) -> None:
    cmd = [cc, *CFLAGS, *extra, str(DRIVER), *[str(CSRC / s) for s in KERNEL_SOURCES], "-lm", "-o", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, f"{' '.join(cmd)}\n{res.stderr}"


@pytest.fixture(scope="module")
def drivers(tmp_path_factory):
    """{'native': path, 'aarch64': path or None}."""
    d = tmp_path_factory.mktemp("kernel_driver")
    out = {"native": d / "driver_native", "aarch64": None}
    _build("gcc", out["native"], [])
    if shutil.which(CROSS_CC) and shutil.which(QEMU):
        out["aarch64"] = d / "driver_aarch64"
        _build(CROSS_CC, out["aarch64"], ["-static"])
    return out


def _make_weight(kind: str, T: int, P: int, G: int, frac: float, rng) -> tuple[K.Weight, list[bytes]]:
    """(Weight, the five byte parts of kernel_driver.c's input: data, bitmap, scales, rowscale, hi)."""
    if kind == "maq2":
        W = rng.standard_normal((P, T)).astype(np.float32)
        t = F.quantize_rtn(W, rng.random((P, T // 16)) < frac, G=G)
        parts = [t.words.tobytes(), t.bitmap.tobytes(), t.scales.tobytes(), t.rowscale.tobytes(), b""]
        return K.Weight.from_maq(t), parts
    return D.kernel_case(kind, T, P, G, rng)


def _write_input(path: Path, w: K.Weight, parts: list[bytes], X: np.ndarray, n_threads: int, n_rows: int) -> None:
    D.write_kernel_input(path, w, parts, X, n_threads, n_rows)


def _run(cmd: list[str], out: Path, B: int, P: int, T: int, n_rows: int) -> tuple[np.ndarray, np.ndarray, str]:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, f"{' '.join(cmd)} -> {res.returncode}\n{res.stdout}{res.stderr}"
    raw = np.fromfile(out, dtype="<f4")
    assert raw.size == B * P + n_rows * T
    return raw[:B * P].reshape(B, P), raw[B * P:].reshape(n_rows, T), res.stdout.strip()


@pytest.mark.parametrize("kind,T,P,G,frac,B", CASES, ids=[f"{c[0]}-T{c[1]}-P{c[2]}-G{c[3]}-s{c[4]}-B{c[5]}"
                                                          for c in CASES])
def test_driver_paths_match_extension(drivers, tmp_path, kind, T, P, G, frac, B):
    rng = np.random.default_rng(T * 7 + P)
    w, parts = _make_weight(kind, T, P, G, frac, rng)
    X = rng.standard_normal((B, T)).astype(np.float32)
    if B >= 3:                      # special activations: an all-zero block, NaN, inf
        X[0, :128] = 0.0
        X[1, 5] = np.nan
        X[2, 7] = -np.inf
    n_rows = min(P, 5)
    with K.forced_path("scalar"):
        expect = K.matmul(w, X)
    expect_rows = np.stack([w.get_row(p) for p in range(n_rows)])
    inp, out = tmp_path / "in.bin", tmp_path / "out.bin"
    _write_input(inp, w, parts, X, n_threads=3, n_rows=n_rows)

    # the driver built natively: every x86 path (proves the driver and the file round trip)
    for path in K.supported_paths():
        Y, rows, msg = _run([str(drivers["native"]), path, str(inp), str(out)], out, B, P, T, n_rows)
        assert f"path={path}" in msg
        np.testing.assert_array_equal(Y, expect, err_msg=f"native driver, path {path}")
        np.testing.assert_array_equal(rows, expect_rows)

    if drivers["aarch64"] is None:
        pytest.skip(f"{CROSS_CC} / {QEMU} not installed ({APT_HINT}): NEON path not checked")
    for path in ("scalar", "neon", "dotprod"):       # qemu's default CPU ("max") has the dot product extension
        Y, rows, msg = _run([QEMU, str(drivers["aarch64"]), path, str(inp), str(out)], out, B, P, T, n_rows)
        assert f"path={path}" in msg and "compiled=scalar,neon,dotprod" in msg
        np.testing.assert_array_equal(Y, expect, err_msg=f"aarch64 under qemu, path {path}")
        np.testing.assert_array_equal(rows, expect_rows)


def test_neon_is_default_on_aarch64(drivers, tmp_path):
    """Without a forced path the aarch64 build picks the widest path the CPU has (qemu's "max" CPU: dotprod);
    with the dot product extension hidden (qemu -cpu cortex-a72) it picks plain NEON."""
    if drivers["aarch64"] is None:
        pytest.skip(f"{CROSS_CC} / {QEMU} not installed ({APT_HINT})")
    rng = np.random.default_rng(5)
    w, parts = _make_weight("maq2", 576, 16, 128, 0.025, rng)
    X = rng.standard_normal((1, 576)).astype(np.float32)
    inp, out = tmp_path / "in.bin", tmp_path / "out.bin"
    _write_input(inp, w, parts, X, n_threads=1, n_rows=0)
    _, _, msg = _run([QEMU, str(drivers["aarch64"]), "default", str(inp), str(out)], out, 1, 16, 576, 0)
    assert msg.startswith("path=dotprod")
    _, _, msg = _run([QEMU, "-cpu", "cortex-a72", str(drivers["aarch64"]), "default", str(inp), str(out)], out, 1, 16,
                     576, 0)
    assert msg.startswith("path=neon")
