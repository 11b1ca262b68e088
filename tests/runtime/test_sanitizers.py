"""The C kernels and model.c under AddressSanitizer + UndefinedBehaviorSanitizer: zero reports.

Every runtime/csrc/*.c is compiled once with ``-fsanitize=address,undefined,float-cast-overflow
-fno-sanitize-recover=all`` and linked into the standalone drivers of tests/csrc/: the kernel engineer's
kernel_driver.c (one product + get_row per run) and model_driver.c (a whole prefill and a token-by-token decode
through maq_model_forward). They run

* over kernel test vectors: MAQ2 with random words / bitmaps / scales (every code value, salient and 2-bit words),
  MAQ3 / MAQ4 with random words / hi planes / scales (every 3- / 4-bit code), G = 32/64/128, ragged T (tail words,
  half and partial 128-blocks, T < G), odd P, B = 1..5 with zero / NaN / inf activations; Q8_0, F16 and F32 with
  odd shapes -- on every SIMD path this CPU supports (MAQ_FORCE_PATH-style path argument) and 1, 2 and 3 threads;
* over three tiny models (MAQ2 + MAQ3 + MAQ4 + Q8_0 + F32 head, GQA 4/2, head_dim 16; head_dim 64, MQA, tied Q8_0
  head, F16 and F32 linears; and one layer mixing all of MAQ2/3/4, Q8_0, F16 and F32 linears), every path, 1/2/3
  threads, prefill chunks of 3 tokens.

A run passes when it exits 0 with no sanitizer line on stderr (halt_on_error makes the first report fatal) and its
results equal the Python extension's (the sanitized build must compute the same thing, bit for bit).
Skips when gcc cannot build or run sanitized programs.
"""
from __future__ import annotations

import os
import shutil
import subprocess

import numpy as np
import pytest

import hostile_gguf as H
import model_dump as D

SAN_FLAGS = ["-O1", "-g", "-fsanitize=address,undefined,float-cast-overflow", "-fno-omit-frame-pointer",
             "-fno-sanitize-recover=all"]
SAN_ENV = {
    "ASAN_OPTIONS": "halt_on_error=1:abort_on_error=0:detect_leaks=1:detect_stack_use_after_return=1:"
                    "strict_string_checks=1:check_initialization_order=1:detect_invalid_pointer_pairs=1",
    "UBSAN_OPTIONS": "print_stacktrace=1:halt_on_error=1",
}
REPORT_MARKS = ("AddressSanitizer", "LeakSanitizer", "UndefinedBehaviorSanitizer", "runtime error:")
THREADS = (1, 2, 3)


@pytest.fixture(scope="module")
def drivers(tmp_path_factory):
    if not shutil.which("gcc"):
        pytest.skip("gcc not found")
    d = tmp_path_factory.mktemp("sanitized")
    probe = d / "probe.c"
    probe.write_text("#include <stdlib.h>\nint main(void){void *p = malloc(4); free(p); return 0;}\n")
    res = subprocess.run(["gcc", *SAN_FLAGS, str(probe), "-o", str(d / "probe")], capture_output=True, text=True)
    if res.returncode != 0 or subprocess.run([str(d / "probe")], env=_env()).returncode != 0:
        pytest.skip(f"gcc cannot build/run -fsanitize=address,undefined here: {res.stderr[-300:]}")
    return D.build_many("gcc", {"kernel": D.KERNEL_DRIVER, "model": D.MODEL_DRIVER}, d, SAN_FLAGS)


def _env(leaks: bool = True) -> dict:
    env = dict(os.environ, **SAN_ENV)
    if not leaks:
        env["ASAN_OPTIONS"] = env["ASAN_OPTIONS"].replace("detect_leaks=1", "detect_leaks=0")
    env.pop("MAQ_FORCE_PATH", None)
    return env


def run_clean(cmd: list[str], leaks: bool = True, env: dict | None = None) -> str:
    """Run a sanitized driver; fail on a non-zero exit or any sanitizer line. Returns stdout."""
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={**_env(leaks), **(env or {})})
    reports = [line for line in res.stderr.splitlines() if any(m in line for m in REPORT_MARKS)]
    assert res.returncode == 0 and not reports, (f"{' '.join(cmd)} -> exit {res.returncode}\n"
                                                 f"{res.stderr[-6000:]}")
    return res.stdout


def _paths() -> list[str]:
    from maq.runtime import kernels as K

    return K.supported_paths()


# --------------------------------------------------------------------------- kernels
# (type, T, P, G, B)
KERNEL_CASES = [
    ("maq2", 16, 1, 32, 1),            # one word, T < G
    ("maq2", 48, 5, 64, 3),            # three words: a partial 64-chunk only
    ("maq2", 112, 7, 128, 2),          # 7 words: ragged everything, bitmap padding
    ("maq2", 144, 9, 32, 5),           # one 128-block + a 16-input tail
    ("maq2", 592, 17, 64, 4),          # 4 blocks + half block + tail word
    ("maq2", 1536, 13, 32, 1),         # SmolLM2 ffn_down width
    ("maq2", 4096 + 208, 6, 128, 2),   # quads of blocks + remainders
    ("maq3", 16, 1, 32, 1),            # one word, T < G
    ("maq3", 48, 5, 64, 3),
    ("maq3", 592, 17, 64, 4),
    ("maq3", 4096 + 208, 6, 128, 2),
    ("maq4", 16, 2, 128, 2),
    ("maq4", 112, 7, 128, 5),
    ("maq4", 1536, 13, 32, 1),
    ("maq4", 4096 + 208, 6, 32, 3),
    ("maq2", 592, 21, 64, 9),          # prompt panels (maq2.c, VNNI CPUs): ragged last panel and block, salient
    ("maq4", 1040, 17, 32, 10),        # words, a last tile of 2 tokens; T % 512 == 0 from 32 tokens:
    ("maq3", 1024, 19, 128, 33),
    ("maq4", 576, 37, 32, 1),          # and with the 16-row repack (maq2_r16.c, VNNI + GFNI CPUs; R16_CASES):
    ("maq3", 96, 19, 64, 3),           # single tokens, a ragged last panel, token tiles, unpacked panels
    ("maq4", 640, 21, 128, 11),
    ("q8_0", 32, 1, 0, 1),
    ("q8_0", 96, 7, 0, 3),
    ("q8_0", 576, 33, 0, 2),
    ("q8_0", 96, 21, 0, 9),            # Q8_0 panels (VNNI CPUs): a ragged last panel, a last tile of one token
    ("q8_0", 608, 21, 0, 1),           # and load-time Q8_0 panels (R16_CASES: 17 T bytes padded to 64)
    ("f16", 1, 1, 0, 1),
    ("f16", 7, 3, 0, 2),
    ("f16", 203, 17, 0, 3),
    ("f32", 1, 2, 0, 1),
    ("f32", 33, 5, 0, 4),
    ("f32", 203, 17, 0, 2),
]


R16_CASES = {("maq4", 576, 37, 32, 1), ("maq3", 96, 19, 64, 3), ("maq4", 640, 21, 128, 11), ("q8_0", 608, 21, 0, 1),
             ("q8_0", 96, 21, 0, 9)}


def _maq2_parts(T: int, P: int, G: int, rng):
    """Random but valid MAQ2 parts: any word bits, any bitmap bits (padding clear), any scale bytes, finite
    row scales."""
    from maq.runtime import format as F

    lay = F.Layout(T, P, G)
    words = rng.integers(-2**31, 2**31, size=lay.words_shape, dtype=np.int64).astype("<i4")
    bitmap = rng.integers(0, 256, size=lay.bitmap_shape, dtype=np.int64).astype(np.uint8)
    pad = lay.bitmap_shape[1] * 8 - T // 16
    if pad:
        bitmap[:, -1] &= np.uint8((1 << (8 - pad)) - 1)
    scales = rng.integers(0, 256, size=lay.scales_shape, dtype=np.int64).astype(np.uint8)
    rowscale = (rng.standard_normal(lay.rowscale_shape) * 1e-3).astype("<f2")
    return F.MAQTensor(words, bitmap, scales, rowscale, T=T, G=G)


def _kernel_case(kind: str, T: int, P: int, G: int, rng):
    from maq.runtime import kernels as K

    if kind == "maq2":
        t = _maq2_parts(T, P, G, rng)
        return K.Weight.from_maq(t), [a.tobytes() for a in (t.words, t.bitmap, t.scales, t.rowscale)] + [b""]
    return D.kernel_case(kind, T, P, G, rng)


def _write_kernel_input(path, w, parts, X, n_threads: int, n_rows: int) -> None:
    """tests/csrc/kernel_driver.c's input format (see the comment at its top)."""
    D.write_kernel_input(path, w, parts, X, n_threads, n_rows)


@pytest.mark.parametrize("kind,T,P,G,B", KERNEL_CASES, ids=[f"{c[0]}-T{c[1]}-P{c[2]}-G{c[3]}-B{c[4]}"
                                                            for c in KERNEL_CASES])
def test_kernels_sanitized(drivers, tmp_path, kind, T, P, G, B):
    from maq.runtime import kernels as K

    rng = np.random.default_rng(T * 31 + P)
    w, parts = _kernel_case(kind, T, P, G, rng)
    X = rng.standard_normal((B, T)).astype(np.float32)
    if B >= 3:                     # an all-zero block, NaN and inf activations
        X[0, :min(T, 128)] = 0.0
        X[1, T // 2] = np.nan
        X[2, T - 1] = np.inf
    with K.forced_path("scalar"):
        expect = K.matmul(w, X)
    n_rows = min(P, 3)
    expect_rows = np.stack([w.get_row(p) for p in range(n_rows)])
    out = tmp_path / "out.bin"
    for n_threads in THREADS:
        inp = tmp_path / f"in{n_threads}.bin"
        _write_kernel_input(inp, w, parts, X, n_threads, n_rows)
        for path in _paths():
            # kernel_driver.c leaves its buffers to the OS at exit: leaks are checked with model_driver.c
            # (maq_model_create/free, the pool), which frees everything
            r16 = (kind, T, P, G, B) in R16_CASES and path in ("vnni", "amx")
            msg = run_clean([str(drivers["kernel"]), path, str(inp), str(out)], leaks=False,
                            env={"MAQ_DRIVER_R16": "1"} if r16 else None)
            assert f"path={path}" in msg
            assert ("r16=" in msg) == (r16 and K.lib.maq_r16_bytes(w.c) > 0)
            raw = np.fromfile(out, dtype="<f4")
            np.testing.assert_array_equal(raw[:B * P].reshape(B, P), expect, err_msg=f"{path}, {n_threads} threads")
            np.testing.assert_array_equal(raw[B * P:].reshape(n_rows, T), expect_rows)


# --------------------------------------------------------------------------- the whole forward pass
MODELS = {
    "gqa-hd16": dict(),                                                    # the hostile test's base model
    "mqa-hd64-tied": dict(dim=128, hidden=192, layers=1, heads=2, kv_heads=1, tied=True, rope_freqs=False,
                          groups={k: 128 for k in H.LINEARS},
                          standard={"blk.0.ffn_up.weight": H.T_F16, "blk.0.attn_v.weight": H.T_F32}),
    "mixed": H.MIXED_MODEL,                                                # MAQ2/3/4, Q8_0, F16, F32 in one layer
}
TOKENS = [5, 17, 99, 3, 111, 0, 42, 7]


def tiny_model(tmp_path, name: str):
    from maq.runtime import gguf_loader as gl

    p = tmp_path / f"{name}.gguf"
    p.write_bytes(H.serialize(*H.build_model(**MODELS[name]))[0])
    return gl.load(p)


@pytest.mark.parametrize("name", list(MODELS))
def test_model_forward_sanitized(drivers, tmp_path, name):
    lm = tiny_model(tmp_path, name)
    kinds = {w.kind for w in lm.weights()}
    n_ctx, max_batch = 16, 3
    out = tmp_path / "out.bin"
    for n_threads in THREADS:
        inp = tmp_path / f"in{n_threads}.bin"
        D.write_input(inp, lm, TOKENS, n_ctx, max_batch, n_threads)
        ref_prefill, ref_decode = D.reference(lm, TOKENS, n_ctx, max_batch, n_threads)
        for path in _paths():
            msg = run_clean([str(drivers["model"]), path, str(inp), str(out)])
            assert f"path={path}" in msg
            prefill, decode = D.read_output(out, len(TOKENS), lm.config.vocab_size)
            np.testing.assert_array_equal(prefill, ref_prefill, err_msg=f"{name} {path} {n_threads} threads")
            np.testing.assert_array_equal(decode, ref_decode, err_msg=f"{name} {path} {n_threads} threads")
    assert len(kinds) >= 3, kinds


def test_sanitizers_are_live(drivers, tmp_path):
    """The sanitized build really reports: an out-of-bounds read and a signed overflow in a tiny program built
    with the same flags and run under the same options fail the run."""
    src = tmp_path / "bad.c"
    src.write_text("#include <stdlib.h>\n#include <limits.h>\nint main(int c, char **v) {\n"
                   "  int *p = malloc(4 * sizeof(int));\n"
                   "  if (c > 1 && v[1][0] == 'o') { int x = p[4]; free(p); return x; }\n"
                   "  int big = INT_MAX - 1 + c; free(p); return big + c > 0 ? 0 : 1; }\n")
    exe = tmp_path / "bad"
    subprocess.run(["gcc", *SAN_FLAGS, str(src), "-o", str(exe)], check=True, capture_output=True)
    for arg in ("oob", "x"):     # p[4] is past the block; INT_MAX - 1 + 2 + 2 overflows
        res = subprocess.run([str(exe), arg], capture_output=True, text=True, env=_env())
        assert res.returncode != 0 and any(m in res.stderr for m in REPORT_MARKS), (arg, res.stderr[-500:])


def test_accepted_hostile_files_sanitized(drivers, tmp_path):
    """Files the loader accepts from the hostile set (flipped weight bytes, custom alignment, trailing bytes, odd
    metadata values...) run clean through the sanitized model.c too, with the extension's results."""
    from maq.errors import MAQError
    from maq.runtime import gguf_loader as gl

    accepted = []
    families = ("values/", "align/", "trailing/", "random/", "meta/", "float/", "dims/")   # where files load
    for i, v in enumerate(v for v in H.variants(n_random=120) if v.id.startswith(families)):
        p = tmp_path / f"v{i}.gguf"           # one file each: the loaded models map them
        p.write_bytes(v.data)
        try:
            lm = gl.load(p)
        except MAQError:
            continue
        accepted.append((v.id, lm))
    assert len(accepted) >= 50
    values = [a for a in accepted if a[0].startswith("values/")]       # NaN / inf / huge weights
    others = [a for a in accepted if not a[0].startswith("values/")]
    out = tmp_path / "out.bin"
    for vid, lm in values + others[::max(1, len(others) // 30)]:
        n = min(len(TOKENS), 6)
        inp = tmp_path / "in.bin"
        D.write_input(inp, lm, TOKENS[:n], 8, 4, 2)
        run_clean([str(drivers["model"]), "default", str(inp), str(out)])
        prefill, decode = D.read_output(out, n, lm.config.vocab_size)
        ref_prefill, ref_decode = D.reference(lm, TOKENS[:n], 8, 4, 2)
        np.testing.assert_array_equal(prefill, ref_prefill, err_msg=vid)
        np.testing.assert_array_equal(decode, ref_decode, err_msg=vid)
