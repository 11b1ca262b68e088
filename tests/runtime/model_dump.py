"""Run runtime/csrc outside Python: build tests/csrc/model_driver.c / kernel_driver.c with any compiler and flags,
and write their inputs (used by test_sanitizers.py, test_arm_forward.py and test_neon.py).

``write_input(path, lm, tokens, ...)`` serializes a ``gguf_loader.LoadedModel`` (config, RoPE angles from
``RopeConfig.inv_freq`` as CModel computes them, every weight's parts) in the format documented at the top of
model_driver.c; ``read_output`` returns (prefill logits [n, V], decode logits [n, V]); ``reference`` computes the
same two arrays with the Python extension (``model.CModel``). ``write_kernel_input`` writes kernel_driver.c's input
(one weight's five parts and the activations); ``random_maq_hi`` makes random but valid MAQ3 / MAQ4 parts."""
from __future__ import annotations

import glob
import struct
import subprocess
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "runtime" / "csrc"
MODEL_DRIVER = ROOT / "tests" / "csrc" / "model_driver.c"
KERNEL_DRIVER = ROOT / "tests" / "csrc" / "kernel_driver.c"
# the extension's flags that change results (runtime/_build.py): no FMA contraction
BASE_CFLAGS = ["-std=c11", "-pthread", "-ffp-contract=off", "-fno-strict-aliasing", "-Wall", f"-I{CSRC}"]


def csrc_sources() -> list[str]:
    """Every runtime/csrc/*.c, as runtime/_build.py compiles them."""
    return sorted(glob.glob(str(CSRC / "*.c")))


def _run_cc(cmd: list[str], timeout: float) -> None:
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)}\n{res.stderr[-4000:]}")


def build(cc: str, driver: Path, out: Path, extra: list[str], timeout: float = 600) -> None:
    """One driver + every csrc/*.c in one compiler call."""
    _run_cc([cc, *BASE_CFLAGS, *extra, str(driver), *csrc_sources(), "-lm", "-o", str(out)], timeout)


def build_many(cc: str, drivers: dict[str, Path], outdir: Path, extra: list[str], ldextra: tuple = (),
               timeout: float = 600) -> dict[str, Path]:
    """Several drivers over one compilation of csrc/*.c: {name: executable}."""
    outdir.mkdir(parents=True, exist_ok=True)
    objs = []
    for src in csrc_sources():
        o = outdir / (Path(src).stem + ".o")
        _run_cc([cc, *BASE_CFLAGS, *extra, "-c", src, "-o", str(o)], timeout)
        objs.append(str(o))
    out = {}
    for name, drv in drivers.items():
        exe = outdir / name
        _run_cc([cc, *BASE_CFLAGS, *extra, str(drv), *objs, *ldextra, "-lm", "-o", str(exe)], timeout)
        out[name] = exe
    return out


def _weight(f, w) -> None:
    from maq.runtime import gguf_loader as gl

    if w.kind in gl.MAQ_KINDS:
        t = w.maq
        parts = [np.ascontiguousarray(a).tobytes() if a is not None else b""
                 for a in (t.words, t.bitmap, t.scales, t.rowscale, t.hi)]
    else:
        parts = [np.ascontiguousarray(w.data).tobytes(), b"", b"", b"", b""]
    f.write(struct.pack("<4i", w.kind, w.T, w.P, w.G))
    f.write(struct.pack("<5q", *[len(p) for p in parts]))
    for p in parts:
        f.write(p)


def _vector(f, v: np.ndarray) -> None:
    v = np.ascontiguousarray(v, dtype="<f4")
    f.write(struct.pack("<q", v.size))
    f.write(v.tobytes())


def write_input(path: Path, lm, tokens, n_ctx: int, max_batch: int, n_threads: int) -> None:
    cfg = lm.config
    inv = np.ascontiguousarray(cfg.rope.inv_freq(), dtype="<f4")
    assert inv.size == cfg.rope.dim // 2
    with open(path, "wb") as f:
        f.write(b"MAQM" + struct.pack("<i", 2))
        f.write(struct.pack("<13i", cfg.dim, cfg.hidden_dim, cfg.n_layers, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim,
                            cfg.vocab_size, n_ctx, cfg.rope.dim, max_batch, n_threads, len(tokens),
                            int(cfg.tied_output)))
        f.write(struct.pack("<f", cfg.norm_eps))
        f.write(inv.tobytes())
        f.write(np.asarray(tokens, dtype="<i4").tobytes())
        _weight(f, lm.tok_embd)
        for L in lm.layers:
            _vector(f, L.attn_norm)
            for w in (L.wq, L.wk, L.wv, L.wo):
                _weight(f, w)
            _vector(f, L.ffn_norm)
            for w in (L.w_gate, L.w_up, L.w_down):
                _weight(f, w)
        _vector(f, lm.output_norm)
        if not cfg.tied_output:
            _weight(f, lm.output)


def read_output(path: Path, n: int, V: int) -> tuple[np.ndarray, np.ndarray]:
    raw = np.fromfile(path, dtype="<f4")
    assert raw.size == 2 * n * V, (raw.size, n, V)
    return raw[:n * V].reshape(n, V), raw[n * V:].reshape(n, V)


def reference(lm, tokens, n_ctx: int, max_batch: int, n_threads: int) -> tuple[np.ndarray, np.ndarray]:
    """The same two computations with the Python extension: one prefill call (all logits), then a fresh model
    fed one token per call."""
    from maq.runtime import model as M

    prefill = M.CModel(lm, n_ctx=n_ctx, n_threads=n_threads, max_batch=max_batch).forward(tokens, 0, M.LOGITS_ALL)
    m1 = M.CModel(lm, n_ctx=n_ctx, n_threads=n_threads, max_batch=max_batch)
    decode = np.stack([m1.forward(int(t), i).copy() for i, t in enumerate(tokens)])
    return np.array(prefill), decode


def write_kernel_input(path: Path, w, parts: list, X: np.ndarray, n_threads: int, n_rows: int) -> None:
    """tests/csrc/kernel_driver.c's input (version 2, see the comment at its top): ``w`` a kernels.Weight, ``parts``
    its five byte strings (data, bitmap, scales, rowscale, hi; b"" where unused), X float32 [B, T]."""
    assert len(parts) == 5
    with open(path, "wb") as f:
        f.write(b"MAQD")
        f.write(struct.pack("<8i", 2, w.type, w.T, w.P, w.G, X.shape[0], n_threads, n_rows))
        f.write(struct.pack("<5q", *[len(p) for p in parts]))
        for p in parts:
            f.write(p)
        f.write(np.ascontiguousarray(X, dtype="<f4").tobytes())


def random_maq_hi(T: int, P: int, G: int, bits: int, rng):
    """Random but valid MAQ3 / MAQ4 parts (format.MAQTensor): any word and hi bits (every 3- / 4-bit code), any scale
    bytes, finite row scales."""
    from maq.runtime import format as F

    lay = F.Layout(T, P, G, bits)
    hshape, hdt = lay.part_specs()[F.PART_HI]
    words = rng.integers(0, 2**32, size=lay.words_shape, dtype=np.uint64).astype(np.uint32).view("<i4")
    hi = rng.integers(0, 2**32, size=hshape, dtype=np.uint64).astype(np.uint32)
    hi = hi.astype("<u2") if bits == 3 else hi.view("<i4")
    scales = rng.integers(0, 256, size=lay.scales_shape, dtype=np.uint8)
    rowscale = (rng.standard_normal(lay.rowscale_shape) * 1e-2).astype("<f2")
    return F.MAQTensor(words, None, scales, rowscale, T=T, G=G, bits=bits, hi=np.ascontiguousarray(hi, hdt))


def kernel_case(kind: str, T: int, P: int, G: int, rng):
    """(kernels.Weight, the five byte parts of kernel_driver.c's input) for a random weight of ``kind`` in maq3, maq4,
    q8_0, f16, f32 (MAQ2 is built by each test its own way): P rows of T."""
    from maq.runtime import kernels as K

    if kind in ("maq3", "maq4"):
        t = random_maq_hi(T, P, G, int(kind[-1]), rng)
        parts = [t.words.tobytes(), b"", t.scales.tobytes(), t.rowscale.tobytes(), t.hi.tobytes()]
        return K.Weight.from_maq(t), parts
    if kind == "q8_0":
        import gguf
        from gguf.quants import quantize

        q = quantize(rng.standard_normal((P, T)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
        return K.Weight.q8_0(q, T, P), [q.tobytes(), b"", b"", b"", b""]
    if kind == "f16":
        W = rng.standard_normal((P, T)).astype(np.float16)
        return K.Weight.f16(W), [W.tobytes(), b"", b"", b"", b""]
    W = rng.standard_normal((P, T)).astype(np.float32)
    return K.Weight.f32(W), [W.tobytes(), b"", b"", b"", b""]
