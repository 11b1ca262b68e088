"""The runtime's whole forward pass on aarch64: runtime/csrc (kernels + model.c) cross-compiled with
tests/csrc/model_driver.c (``aarch64-linux-gnu-gcc -O2 -static``), run under ``qemu-aarch64`` on the scalar, NEON
and NEON+dotprod paths with 1 and 2 threads, fed the same tensors as the x86 Python extension (model_dump.py writes
them from the loaded GGUF), logits compared: a prefill in chunks (every token's logits) and a token-by-token decode.

Tolerance, derived: the kernels of every ISA are bit-identical by construction (exact integer block sums, the same
float operations in the same order, -ffp-contract=off; tests/runtime/test_neon.py), and model.c's norms, softmax,
exp and SwiGLU are plain C with fixed-order sums, so the only inputs that may differ between x86-64 and aarch64
are libm's cos/sin of the RoPE table (double, rounded to float: at most 1 float ulp apart). The tolerance is 4x
the change of the x86 logits when every RoPE angle moves by about one float ulp (``rope.base`` nudged by 2^-23
relative), floored at 4 ulps of the largest logit. In practice the two are equal bit for bit (max |diff| = 0).

Skips (with the apt packages to install) when the cross compiler or qemu-user is missing.
"""
from __future__ import annotations

import copy
import shutil
import subprocess

import numpy as np
import pytest

import hostile_gguf as H
import model_dump as D

CROSS_CC = "aarch64-linux-gnu-gcc"
QEMU = "qemu-aarch64"
APT_HINT = "apt-get install -y gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user"

MODELS = {
    # the hostile test's base: GQA 4/2, head_dim 16, MAQ2 (G 32/64/128, ragged) + MAQ3/MAQ4 + a Q8_0 linear, F32 head
    "gqa-hd16": dict(),
    # head_dim 64 (the register-resident values path), MQA, tied Q8_0 head, an F16 and an F32 linear
    "mqa-hd64-tied": dict(dim=128, hidden=192, layers=1, heads=2, kv_heads=1, tied=True, rope_freqs=False,
                          groups={k: 128 for k in H.LINEARS},
                          standard={"blk.0.ffn_up.weight": H.T_F16, "blk.0.attn_v.weight": H.T_F32}),
    # SmolLM2's widths: 576 = 4.5 blocks of 128, ffn 1536, GQA 9/3, head_dim 64
    "smollm2-shaped": dict(dim=576, hidden=1536, layers=1, heads=9, kv_heads=3, groups={k: 128 for k in H.LINEARS}),
    # every linear type per tensor, as --target-bpw files: MAQ2, MAQ3, MAQ4, Q8_0, F16, F32
    "mixed": H.MIXED_MODEL,
    # SmolLM2's widths with MAQ3 / MAQ4 linears (quads and half blocks of the hi-plane kernels)
    "smollm2-shaped-maq34": dict(dim=576, hidden=1536, layers=1, heads=9, kv_heads=3, groups={k: 64 for k in H.LINEARS},
                                 bits={"blk.0.attn_q.weight": 3, "blk.0.attn_k.weight": 4, "blk.0.attn_v.weight": 3,
                                       "blk.0.attn_output.weight": 4, "blk.0.ffn_gate.weight": 3,
                                       "blk.0.ffn_up.weight": 4, "blk.0.ffn_down.weight": 3}, standard={}),
}
N_CTX, MAX_BATCH = 32, 5
TOKENS = [int(t) for t in np.random.default_rng(7).integers(0, H.VOCAB, 21)]   # > 8 positions: softmax tails


@pytest.fixture(scope="module")
def arm_driver(tmp_path_factory):
    if not (shutil.which(CROSS_CC) and shutil.which(QEMU)):
        pytest.skip(f"{CROSS_CC} / {QEMU} not installed ({APT_HINT}): the aarch64 forward pass is not checked")
    d = tmp_path_factory.mktemp("arm_model")
    return D.build_many(CROSS_CC, {"model": D.MODEL_DRIVER}, d, ["-O2"], ldextra=["-static"])["model"]


def derived_tolerance(lm, ref: np.ndarray) -> float:
    """4 x the logit change from moving every RoPE angle by ~1 float ulp, at least 4 ulps of max |logit|."""
    lm2 = copy.copy(lm)
    lm2.config = copy.deepcopy(lm.config)
    lm2.config.rope.base = float(np.float32(lm.config.rope.base) * np.float32(1 + 2**-23))
    pert, _ = D.reference(lm2, TOKENS, N_CTX, MAX_BATCH, 1)
    ulp = float(np.spacing(np.float32(np.abs(ref).max())))
    return 4 * max(float(np.abs(pert - ref).max()), ulp)


@pytest.mark.parametrize("name", list(MODELS))
def test_aarch64_forward_equals_x86(arm_driver, tmp_path, name):
    from maq.runtime import gguf_loader as gl

    p = tmp_path / f"{name}.gguf"
    p.write_bytes(H.serialize(*H.build_model(**MODELS[name]))[0])
    lm = gl.load(p)
    out = tmp_path / "out.bin"
    tol = None
    worst = 0.0
    for n_threads in (1, 2):
        inp = tmp_path / f"in{n_threads}.bin"
        D.write_input(inp, lm, TOKENS, N_CTX, MAX_BATCH, n_threads)
        ref_prefill, ref_decode = D.reference(lm, TOKENS, N_CTX, MAX_BATCH, n_threads)
        if tol is None:
            tol = derived_tolerance(lm, ref_prefill)
        for path in ("scalar", "neon", "dotprod"):     # qemu's default CPU ("max") has the dot product extension
            res = subprocess.run([QEMU, str(arm_driver), path, str(inp), str(out)], capture_output=True, text=True,
                                 timeout=600)
            assert res.returncode == 0, f"{path}: exit {res.returncode}\n{res.stderr[-3000:]}"
            assert f"path={path}" in res.stdout and "compiled=scalar,neon,dotprod" in res.stdout, res.stdout
            prefill, decode = D.read_output(out, len(TOKENS), lm.config.vocab_size)
            assert np.all(np.isfinite(prefill)) and np.all(np.isfinite(decode))
            d = max(float(np.abs(prefill - ref_prefill).max()), float(np.abs(decode - ref_decode).max()))
            worst = max(worst, d)
            assert d <= tol, f"{name} {path} {n_threads} threads: max |aarch64 - x86| = {d:.3g} > {tol:.3g}"
    print(f"\n{name}: max |aarch64 - x86| = {worst:.3g} (tolerance {tol:.3g}, max |logit| "
          f"{np.abs(ref_prefill).max():.3g})")
