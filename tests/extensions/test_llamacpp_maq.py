"""llama.cpp with the MAQ extension (extensions/llama.cpp) against the MAQ runtime, on a tiny random Llama whose
linears are MAQ2 (with salient words), MAQ3, MAQ4 and Q8_0, with G = 32, 64 and 128.

Runs when the patched build is present: ``$MAQ_LLAMACPP_BIN`` or ``$MAQ_CACHE/llama.cpp-maq/bin`` (default
``~/.cache/maq/llama.cpp-maq/bin``, made by ``bash scripts/build_llamacpp.sh --maq``) holding ``maq-logits`` and
``maq-kernels``; skips with that message otherwise.

Tolerance, derived from the activation quantization each side uses. Both engines use the file's weights exactly;
they differ in how a product's input is rounded: our kernels use int8 per 128 inputs for MAQ weights (per 32, fp16
scale, for Q8_0), llama.cpp quantizes every MAQ / Q8_0 product's input to int8 per 32 with an fp16 scale (Q8_1 for
MAQ, whose extra fp16 sum only rounds the group-minimum term by 2^-11; Q8_0 for Q8_0). The numpy
reference (``ReferenceModel``, float weights) run once with each rounding (``act_quant``) gives ``d_act``, the
difference those two roundings alone make on the logits. Then
  - our runtime vs the reference with our rounding: < 1e-4 (float summation order only);
  - llama.cpp vs the reference with llama.cpp's int8 rounding: < d_act. What the reference does not model is
    llama.cpp's fp16 rounding (Q8_1's block sum S, 2^-11 relative, which carries the group-minimum term; the F16
    KV cache and flash attention's F16 Q): all 2^-11 relative, below the int8 rounding's 1/254, so bounded by the
    effect of one int8 rounding, d_act (measured: 8.7e-3 vs d_act 1.3e-2; 8.3e-3 with an F32 KV cache, so the
    S term dominates);
  - llama.cpp vs our runtime: < 2 d_act + 1e-4 (the two deviations above; measured 1.15e-2).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "runtime"))  # gguf_files

IDS = [504, 3575, 282, 4649, 314, 7, 9, 100, 2000, 40000, 17, 49151, 0, 1, 2, 3333]

# per layer: linear -> (storage, G); storage "maq2" gets 5 % random salient words
PLAN = [
    {"attn_q": ("maq2", 64), "attn_k": ("maq3", 32), "attn_v": ("maq4", 128), "attn_output": ("q8_0", 0),
     "ffn_gate": ("maq2", 128), "ffn_up": ("maq3", 64), "ffn_down": ("maq4", 32)},
    {"attn_q": ("maq4", 64), "attn_k": ("maq2", 32), "attn_v": ("maq3", 128), "attn_output": ("maq4", 32),
     "ffn_gate": ("q8_0", 0), "ffn_up": ("maq2", 64), "ffn_down": ("maq3", 128)},
]


def llamacpp_bin() -> Path | None:
    """The patched build's bin directory, or None."""
    env = os.environ.get("MAQ_LLAMACPP_BIN")
    d = Path(env) if env else Path(os.environ.get("MAQ_CACHE", Path.home() / ".cache" / "maq")) / "llama.cpp-maq" / "bin"
    return d if (d / "maq-logits").is_file() and (d / "maq-kernels").is_file() else None


def patched_source() -> Path | None:
    """The patched llama.cpp source tree ``build.sh`` leaves in the cache, or None."""
    d = Path(os.environ.get("MAQ_CACHE", Path.home() / ".cache" / "maq")) / "llama.cpp-maq"
    hits = sorted(d.glob("llama_cpp_python-*/vendor/llama.cpp/ggml/include/ggml-maq.h"))
    return hits[-1].parents[2] if hits else None


BIN = llamacpp_bin()
SRC = patched_source()
needs_bin = pytest.mark.skipif(
    BIN is None, reason="patched llama.cpp not built: run `bash scripts/build_llamacpp.sh --maq` (or set "
    "MAQ_LLAMACPP_BIN to a bin directory holding maq-logits and maq-kernels)")
needs_src = pytest.mark.skipif(
    SRC is None, reason="patched llama.cpp source not found: run `bash scripts/build_llamacpp.sh --maq`")


def rel(a, b) -> float:
    """max |a - b| / max |b|"""
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


def write_mixed(src: Path, out: Path, seed: int = 0, embed: str = "q8_0") -> Path:
    """Copy the F32 tiny GGUF ``src`` with its linears stored as ``PLAN`` says and token_embd (the tied output head)
    as ``embed``: "q8_0" or "maq4" (G 32, what ``convert --embed-type maq4`` writes)."""
    import gguf
    import gguf_files as gf_
    from gguf.constants import GGMLQuantizationType as Q

    from maq.runtime import format as fmt
    from maq.runtime import gguf_loader as gl

    gf = gl.GGUFFile(src)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(out), "llama")
    gf_._copy_metadata(w, gf, skip=(fmt.KEY_VERSION,))
    w.add_uint32(fmt.KEY_VERSION, fmt.FORMAT_VERSION_PLAIN)
    for name, t in gf.tensors.items():
        arr = np.array(gf.view(t, "<f4", t.shape)) if t.ggml_type == gl.GGML_F32 else None
        parts = name.split(".")
        if name.startswith("blk.") and parts[2] in PLAN[0]:
            kind, G = PLAN[int(parts[1]) % len(PLAN)][parts[2]]
            P, T = arr.shape
            if kind == "q8_0":
                gf_.add_q8_0(w, name, arr)
                continue
            bits = fmt.BITS_OF_TYPE[kind]
            sal = rng.random((P, T // 16)) < 0.05 if bits == 2 else None
            gf_.add_maq(w, name, fmt.quantize_rtn(arr, salient=sal, G=G, bits=bits))
        elif name == "token_embd.weight" and embed == "maq4":
            gf_.add_maq(w, name, fmt.quantize_rtn(arr, G=32, bits=4))
        elif name == "token_embd.weight":
            gf_.add_q8_0(w, name, arr)
        else:
            w.add_tensor(name, arr if arr is not None else np.array(t.data),
                         raw_dtype=None if arr is not None else Q(t.ggml_type))
    gf_.finish(w)
    return out


@pytest.fixture(scope="module")
def mixed_gguf(tmp_path_factory, smollm2_tokenizer_dir):
    tiny = pytest.importorskip("tiny")
    pytest.importorskip("torch")
    import gguf_files

    root = tmp_path_factory.mktemp("llamacpp_maq")
    # every T a multiple of 64 (the extension's block); head_dim 32, GQA 4/2, tied output
    tiny.make_tiny_llama(root / "hf", smollm2_tokenizer_dir, hidden=128, intermediate=192, layers=2, heads=4,
                         kv_heads=2, seed=5)
    f32 = gguf_files.convert_f32(root / "hf", root / "tiny.f32.gguf")
    return write_mixed(f32, root / "tiny.mixed.gguf")


def llamacpp_logits(path: Path, ids, threads: int = 1, products: str = "vec_dot", f32_kv: bool = False) -> np.ndarray:
    """llama.cpp's logits at every position; ``products``: "vec_dot" (MAQ weights as ggml blocks in the CPU buffer,
    maq-cpu.c) or "cpu_maq" (MAQ weights in the CPU_MAQ buffer type, llama.cpp's default choice for them: products
    by the MAQ runtime's kernels); ``f32_kv``: an F32 KV cache and no flash attention instead of llama.cpp's F16."""
    out = path.with_suffix(f".logits{threads}.{products}.{int(f32_kv)}.f32")
    env = {k: v for k, v in os.environ.items() if k != "MAQ_LOGITS_F32_KV"}
    env["MAQ_LOGITS_EXTRA_BUFTS"] = "1" if products == "cpu_maq" else "0"
    if f32_kv:
        env["MAQ_LOGITS_F32_KV"] = "1"
    r = subprocess.run([str(BIN / "maq-logits"), str(path), str(out), str(threads), *map(str, ids)],
                       capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, f"maq-logits failed: {r.stderr[-2000:]}"
    return np.fromfile(out, dtype=np.float32).reshape(len(ids), -1)


@needs_bin
def test_file_mixes_every_member(mixed_gguf):
    from maq.runtime import gguf_loader as gl

    lm = gl.load(mixed_gguf)
    kinds = {getattr(L, k).kind for L in lm.layers for k in ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")}
    assert kinds == {gl.KIND_MAQ2, gl.KIND_MAQ3, gl.KIND_MAQ4, gl.KIND_Q8_0}


@needs_bin
def test_logits_match_runtime(mixed_gguf):
    from maq.runtime import gguf_loader as gl
    from maq.runtime import model as M
    from maq.runtime.reference import ReferenceModel, round_activations

    class LlamaCppRounding(ReferenceModel):
        """The reference with llama.cpp's activation rounding: Q8_0 (int8 per 32, fp16 scale) for every MAQ and
        Q8_0 product."""

        def _in(self, x, how):
            kind, seed = how
            assert seed is None                  # the extension refuses rotated files (test_rotated_file_refused)
            q8 = (gl.KIND_MAQ2, gl.KIND_MAQ3, gl.KIND_MAQ4, gl.KIND_Q8_0)
            return round_activations(x, gl.KIND_Q8_0) if kind in q8 else x

    lm = gl.load(mixed_gguf)
    ours = M.CModel(lm, n_ctx=64, n_threads=1).forward(IDS, 0, M.LOGITS_ALL)
    ref_ours = ReferenceModel(lm, n_ctx=64, act_quant=True).forward(IDS, 0)
    ref_ll = LlamaCppRounding(lm, n_ctx=64).forward(IDS, 0)
    ll = llamacpp_logits(mixed_gguf, IDS, threads=1)
    d_act = rel(ref_ll, ref_ours)
    print(f"d_act={d_act:.2e} ours-vs-ref={rel(ours, ref_ours):.2e} llama-vs-ref={rel(ll, ref_ll):.2e} "
          f"llama-vs-ours={rel(ll, ours):.2e}")
    assert ll.shape == ours.shape
    assert rel(ours, ref_ours) < 1e-4
    assert 0 < d_act < 0.05              # the two roundings differ, by a small amount: the tolerance is not vacuous
    assert rel(ll, ref_ll) < d_act
    assert rel(ll, ours) < 2 * d_act + 1e-4
    assert (ll.argmax(axis=1) == ours.argmax(axis=1)).mean() >= 0.75
    assert rel(llamacpp_logits(mixed_gguf, IDS, threads=2), ll) < 1e-6   # threads split rows, not sums


@needs_bin
def test_int8_salient_coding_refused(mixed_gguf, tmp_path):
    """A tensor whose salient words are int8-coded (--salient-coding int8, FORMAT.md section 9: an overflow area the
    extension does not read) makes the file refused with one line naming the tensor's salient_coding key."""
    import gguf_files

    key = "maq.tensor.blk.0.attn_q.weight.salient_coding"
    bad = gguf_files.rewrite(mixed_gguf, tmp_path / "int8.gguf", metadata={key: "int8"})
    r = subprocess.run([str(BIN / "maq-logits"), str(bad), str(tmp_path / "x.f32"), "1", "1", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert key in r.stderr and "Traceback" not in r.stderr


@needs_bin
def test_logits_cpu_maq_match_runtime(mixed_gguf):
    """llama.cpp's default for MAQ weights, the CPU_MAQ buffer type: every MAQ product is the MAQ runtime's own (same
    kernels, same int8-per-128 activation rounding) and Q8_0 products round their input per 32 with an fp16 scale on
    both sides. With an F32 KV cache (no flash attention) only llama.cpp's float order in norms, attention and
    softmax differs: < 1e-5 (measured 8e-8). With its default F16 KV cache and flash attention's F16 Q (2^-11
    relative, below the int8 rounding's 1/254) the bound is the effect of one int8 rounding of every product's
    input, d_act (as in test_logits_match_runtime; measured 7.9e-3 vs 8.2e-3 on this random model)."""
    from maq.runtime import gguf_loader as gl
    from maq.runtime import model as M
    from maq.runtime.reference import ReferenceModel

    lm = gl.load(mixed_gguf)
    ours = M.CModel(lm, n_ctx=64, n_threads=1).forward(IDS, 0, M.LOGITS_ALL)
    d_act = rel(ReferenceModel(lm, n_ctx=64, act_quant=False).forward(IDS, 0),
                ReferenceModel(lm, n_ctx=64, act_quant=True).forward(IDS, 0))
    exact = llamacpp_logits(mixed_gguf, IDS, threads=1, products="cpu_maq", f32_kv=True)
    ll = llamacpp_logits(mixed_gguf, IDS, threads=1, products="cpu_maq")
    print(f"d_act={d_act:.2e} cpu_maq-vs-ours: f32 kv {rel(exact, ours):.2e}, default {rel(ll, ours):.2e}")
    assert rel(exact, ours) < 1e-5
    assert 0 < d_act < 0.05
    assert rel(ll, ours) < d_act
    assert (ll.argmax(axis=1) == ours.argmax(axis=1)).mean() >= 0.75
    for threads in (2, 3):   # threads split output rows, not sums
        assert rel(llamacpp_logits(mixed_gguf, IDS, threads=threads, products="cpu_maq", f32_kv=True), exact) < 1e-6


@needs_bin
def test_maq4_embedding_cpu_maq_match_runtime(mixed_gguf, tmp_path):
    """A MAQ4 token_embd (--embed-type maq4): llama.cpp looks its rows up through the MAQ type's to_float and runs
    the tied output head as a MAQ product; with an F32 KV cache its logits equal ours as in
    test_logits_cpu_maq_match_runtime (< 1e-5: only llama.cpp's float order in norms / attention / softmax)."""
    from maq.runtime import gguf_loader as gl
    from maq.runtime import model as M

    path = write_mixed(mixed_gguf.with_name("tiny.f32.gguf"), tmp_path / "tiny.embed_maq4.gguf", embed="maq4")
    lm = gl.load(path)
    assert lm.tok_embd.kind == gl.KIND_MAQ4 and lm.config.tied_output
    ours = M.CModel(lm, n_ctx=64, n_threads=1).forward(IDS, 0, M.LOGITS_ALL)
    exact = llamacpp_logits(path, IDS, threads=1, products="cpu_maq", f32_kv=True)
    print(f"maq4 embedding, cpu_maq-vs-ours (f32 kv): {rel(exact, ours):.2e}")
    assert rel(exact, ours) < 1e-5


@needs_bin
def test_rotated_file_refused(mixed_gguf, tmp_path):
    """A file whose linears are stored rotated (--incoherence, FORMAT.md section 10) is refused with one line
    naming maq.incoherence, not run with unrotated activations."""
    import gguf_files

    from maq.runtime import format as fmt

    rot = gguf_files.rewrite(mixed_gguf, tmp_path / "rot.gguf", metadata={fmt.KEY_INCOHERENCE: "hadamard",
                                                                          fmt.KEY_INCOHERENCE_SEED: 5})
    r = subprocess.run([str(BIN / "maq-logits"), str(rot), str(tmp_path / "x.f32"), "1", "1", "2"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode != 0
    assert "maq.incoherence" in r.stderr and "Traceback" not in r.stderr


@needs_bin
@pytest.mark.parametrize("bits,G,T", [(2, 128, 320), (2, 32, 192), (3, 64, 320), (3, 32, 128), (4, 128, 320),
                                      (4, 32, 192)])
def test_kernels_repack_dequantize_and_dot(tmp_path, bits, G, T):
    """The repacked rows dequantize to ``format.dequantize`` exactly; the build's SIMD vec_dot (MAQ x Q8_1) equals
    the scalar reference bit for bit and the float64 product of the dequantized weights and activation."""
    from maq.runtime import format as fmt

    rng = np.random.default_rng(bits * 1000 + G + T)
    P = 7
    W = rng.standard_normal((P, T)).astype(np.float32) * rng.uniform(0.01, 2.0, (P, 1)).astype(np.float32)
    sal = rng.random((P, T // 16)) < 0.25 if bits == 2 else None
    mt = fmt.quantize_rtn(W, salient=sal, G=G, bits=bits)
    parts = list(mt.parts().values())
    for name, arr in zip(("words", "second", "scales", "rowscale"), parts):
        (tmp_path / f"{name}.bin").write_bytes(np.ascontiguousarray(arr).tobytes())
    x = (rng.standard_normal(T) * np.repeat(rng.uniform(0.1, 10, T // 32), 32)).astype(np.float32)
    x.tofile(tmp_path / "x.f32")
    r = subprocess.run([str(BIN / "maq-kernels"), str(bits), str(T), str(P), str(G), str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    deq = np.fromfile(tmp_path / "deq.f32", dtype=np.float32).reshape(P, T)
    np.testing.assert_array_equal(deq, fmt.dequantize(mt))
    xq = np.fromfile(tmp_path / "xq.f32", dtype=np.float32)[:T]
    dot = np.fromfile(tmp_path / "dot.f32", dtype=np.float32).reshape(P, 2)
    np.testing.assert_array_equal(dot[:, 0], dot[:, 1])
    exact = deq.astype(np.float64) @ xq.astype(np.float64)
    scale = np.abs(deq).astype(np.float64) @ np.abs(xq).astype(np.float64)
    # the group minimum's term uses Q8_1's fp16 S = dy * sum(y) (2^-11 relative, as llama.cpp's Q4_1 does)
    assert np.all(np.abs(dot[:, 0] - exact) <= 2e-3 * scale + 1e-30)


SIMD_BUILDS = [("gcc", "-march=native", None), ("gcc", "-march=x86-64 -mssse3", None), ("gcc", "-march=x86-64", None),
               ("aarch64-linux-gnu-gcc", "-march=armv8.2-a+dotprod", "qemu-aarch64"),
               ("aarch64-linux-gnu-gcc", "-march=armv8-a", "qemu-aarch64")]


@needs_src
@pytest.mark.parametrize("cc,flags,runner", SIMD_BUILDS, ids=[f"{c}{f}" for c, f, _ in SIMD_BUILDS])
def test_simd_paths_match_scalar(tmp_path, cc, flags, runner):
    """tools/maq-simd-check.c built for one path (AVX2 / SSSE3 / scalar on x86-64; NEON+dotprod / NEON on aarch64,
    cross-compiled and run in qemu): that path's vec_dot equals the scalar reference bit for bit on random blocks."""
    import platform
    import shutil

    if shutil.which(cc) is None or (runner and shutil.which(runner) is None):
        pytest.skip(f"{cc}{' / ' + runner if runner else ''} not installed")
    if cc == "gcc" and platform.machine() != "x86_64":
        pytest.skip("x86-64 builds need an x86-64 host")
    ll = SRC
    exe = tmp_path / "chk"
    src = Path(__file__).resolve().parents[2] / "extensions" / "llama.cpp" / "tools" / "maq-simd-check.c"
    cmd = [cc, "-O2", *flags.split(), f"-I{ll}/ggml/include", f"-I{ll}/ggml/src", f"-I{ll}/ggml/src/ggml-cpu",
           str(src), "-o", str(exe), "-lm"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    run = ([runner, "-L", "/usr/aarch64-linux-gnu"] if runner else []) + [str(exe)]
    r = subprocess.run(run, capture_output=True, text=True, timeout=120)
    if runner and r.returncode != 0 and "not found" in r.stderr:
        pytest.skip(f"{runner} cannot run it: {r.stderr.strip()[:200]}")
    assert r.returncode == 0 and r.stdout.startswith("ok "), r.stdout + r.stderr
