"""The C forward against transformers (F32 GGUFs of tiny random Llamas) and against the numpy reference
(MAQ2 GGUF): prefill, step-by-step decode through the KV cache, chunked prefill, threads."""
from __future__ import annotations

import numpy as np
import pytest

from maq.errors import MAQError
from maq.runtime import gguf_loader as gl
from maq.runtime import model as M
from maq.runtime.reference import ReferenceModel

IDS = [504, 3575, 282, 4649, 314, 7, 9, 100, 2000, 40000, 17, 49151, 0, 1, 2, 3333]


def hf_logits(model, ids):
    import torch

    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def rel(a, b) -> float:
    """max |a - b| / max |b|"""
    return float(np.abs(np.asarray(a) - b).max() / np.abs(b).max())


def test_prefill_matches_transformers(tiny_any):
    model, path = tiny_any
    ref = hf_logits(model, IDS)
    cm = M.CModel(gl.load(path), n_ctx=64, n_threads=2)
    assert rel(cm.forward(IDS, 0, M.LOGITS_ALL), ref) < 1e-4
    assert rel(cm.forward(IDS, 0, M.LOGITS_LAST), ref[-1]) < 1e-4


def test_decode_matches_transformers(tiny_any):
    model, path = tiny_any
    ref = hf_logits(model, IDS)
    cm = M.CModel(gl.load(path), n_ctx=64, n_threads=1)
    # 4 prompt tokens, then one token per call through the KV cache
    rows = list(cm.forward(IDS[:4], 0, M.LOGITS_ALL))
    for i in range(4, len(IDS)):
        rows.append(cm.forward(IDS[i], i).copy())
    assert rel(np.stack(rows), ref) < 1e-4


def test_numpy_reference_matches_transformers(tiny_any):
    model, path = tiny_any
    ref = hf_logits(model, IDS)
    assert rel(ReferenceModel(gl.load(path), n_ctx=64).forward(IDS, 0), ref) < 1e-4


def test_untied_and_scaled_rope_are_exercised(tiny_untied):
    lm = gl.load(tiny_untied[1])
    assert not lm.config.tied_output and lm.output is not lm.tok_embd
    assert lm.config.rope.freq_factors is not None and lm.config.n_kv_heads == 1
    assert not np.allclose(lm.config.rope.freq_factors, 1.0)


@pytest.mark.parametrize("max_batch,threads", [(3, 1), (5, 2), (64, 2)])
def test_chunked_prefill_and_threads_agree(tiny_maq, max_batch, threads):
    lm = gl.load(tiny_maq)
    base = M.CModel(lm, n_ctx=32, n_threads=1, max_batch=64).forward(IDS, 0, M.LOGITS_ALL)
    got = M.CModel(lm, n_ctx=32, n_threads=threads, max_batch=max_batch).forward(IDS, 0, M.LOGITS_ALL)
    np.testing.assert_array_equal(got, base)  # same products, same order: bit-identical


def assert_matches_reference(lm) -> np.ndarray:
    """The C logits (2 threads) of IDS against the numpy forward of the same weights, within the tolerance derived in
    test_maq_matches_numpy_reference; returns them."""
    exact = ReferenceModel(lm, n_ctx=32).forward(IDS, 0)
    rounded = ReferenceModel(lm, n_ctx=32, act_quant=True).forward(IDS, 0)
    got = M.CModel(lm, n_ctx=32, n_threads=2).forward(IDS, 0, M.LOGITS_ALL)
    rounding = rel(rounded, exact)
    assert 0 < rounding < 0.05
    assert rel(got, rounded) < rounding / 4
    assert rel(got, exact) <= 2 * rounding + 1e-4
    return got


def test_maq_matches_numpy_reference(tiny_maq):
    """C (MAQ2 + Q8_0 kernels) vs a numpy forward over format.dequantize'd weights.

    Derived tolerance: the kernels round every product's input to int8 per block (csrc/act.c: 128 inputs for
    MAQ2, 32 for Q8_0), which the float reference does not. ``rounding`` = the effect of exactly that rounding,
    measured by the same reference with it simulated (``act_quant=True``). C may differ from the exact reference
    by at most twice that effect (+1e-4), and must sit much closer to the simulation than to the exact model
    (< rounding/4: only inputs within float error of a rounding boundary may round the other way).
    """
    lm = gl.load(tiny_maq)
    assert {w.kind for L in lm.layers for w in (L.wq, L.wk, L.wv, L.wo, L.w_gate, L.w_up, L.w_down)} == {gl.KIND_MAQ2}
    assert lm.tok_embd.kind == gl.KIND_Q8_0
    got = assert_matches_reference(lm)
    # decode through the cache gives the prefill's logits
    cm2 = M.CModel(lm, n_ctx=32, n_threads=1)
    rows = [cm2.forward(t, i).copy() for i, t in enumerate(IDS)]
    assert rel(np.stack(rows), got) < 1e-5


def test_context_and_token_errors(tiny_gqa):
    cm = M.CModel(gl.load(tiny_gqa[1]), n_ctx=8, n_threads=1)
    with pytest.raises(MAQError, match="context"):
        cm.forward(list(range(9)), 0)
    cm.forward(list(range(8)), 0)
    with pytest.raises(MAQError, match="context"):
        cm.forward(5, 8)
    with pytest.raises(MAQError, match="vocabulary"):
        cm.forward([49152], 0)


def test_stats_account_for_time(tiny_maq):
    cm = M.CModel(gl.load(tiny_maq), n_ctx=32, n_threads=1)
    cm.forward(IDS, 0)
    s = cm.stats()
    assert s["tokens"] == len(IDS) and s["calls"] == 1
    assert s["matmul_s"] > 0 and s["total_s"] >= s["matmul_s"] + s["attention_s"]


def test_exact_mode_is_the_float_reference(tiny_maq):
    """load(exact=True): MAQ2 and Q8_0 dequantized to F32 at load, so C equals the exact numpy forward."""
    lm = gl.load(tiny_maq, exact=True)
    assert {w.kind for w in lm.weights()} == {gl.KIND_F32}
    exact = ReferenceModel(gl.load(tiny_maq), n_ctx=32).forward(IDS, 0)
    assert rel(M.CModel(lm, n_ctx=32, n_threads=1).forward(IDS, 0, M.LOGITS_ALL), exact) < 1e-5


def test_f16_gguf(tiny_gqa, tmp_path_factory):
    """An F16 GGUF (converter --method f16): F16 weights read directly by the kernels (float activations), so C
    equals the numpy forward over the same F16 values, and stays within F16 rounding of transformers' F32."""
    from maq.cli import main

    out = tmp_path_factory.mktemp("f16") / "tiny.f16.gguf"
    assert main(["convert", str(tiny_gqa[1].parent / "hf_gqa"), "--out", str(out), "--method", "f16",
                 "--no-progress"]) == 0
    lm = gl.load(out)
    assert lm.layers[0].wq.kind == gl.KIND_F16 and not lm.layers[0].wq.copied
    got = M.CModel(lm, n_ctx=32, n_threads=2).forward(IDS, 0, M.LOGITS_ALL)
    assert rel(got, ReferenceModel(lm, n_ctx=32).forward(IDS, 0)) < 1e-5
    assert rel(got, hf_logits(tiny_gqa[0], IDS)) < 1e-2


def test_long_context_crosses_attention_blocks(tiny_gqa):
    """700 positions: several prefill chunks and more than one 512-position score block, then decode steps."""
    model, path = tiny_gqa
    ids = [int(x) for x in np.random.default_rng(5).integers(3, 49152, 704)]
    ref = hf_logits(model, ids)
    cm = M.CModel(gl.load(path), n_ctx=704, n_threads=2, max_batch=128)
    got = cm.forward(ids[:700], 0, M.LOGITS_ALL)
    assert rel(got, ref[:700]) < 1e-4
    rows = [cm.step(t, 700 + i).copy() for i, t in enumerate(ids[700:])]
    assert rel(np.stack(rows), ref[700:]) < 1e-4


@pytest.mark.parametrize("name,method", [("gqa", "rtn"), ("untied", "rtn"), ("gqa", "gptq"), ("untied", "gptq")])
def test_maq4_embedding_and_head(name, method, request, tmp_path_factory, caplog):
    """--embed-type maq4: token_embd (and an untied output head) stored as MAQ4 codes (method rtn: rounded to
    nearest; gptq: GPTQ against the head's input Hessian from the calibration, the tensor written after the blocks).
    The C forward looks rows up and multiplies the head through the MAQ kernels: it equals the numpy forward over the
    same dequantized values within the activation rounding (derived as in test_maq_matches_numpy_reference), and the
    embedding is a 4-bit rounding of the source: 16 levels over a group of 32 Gaussian weights (range about 4 sigma)
    leave an RMS error near 4 sigma / 15 / sqrt(12) = 0.077 sigma; < 0.1 allows the scale encoding, > 0.01 says it
    is not a copy."""
    from maq.cli import main

    model, hf_path = request.getfixturevalue(f"tiny_{name}")
    out = tmp_path_factory.mktemp("embed_maq4") / f"{name}.{method}.gguf"
    cal = ["--nsamples", "4", "--seqlen", "64"] if method == "gptq" else []
    caplog.set_level("INFO", logger="maq.converter.pipeline")
    assert main(["convert", str(hf_path.parent / f"hf_{name}"), "--out", str(out), "--method", method, "--bits", "4",
                 "--embed-type", "maq4", "--no-progress", *cal]) == 0
    # GPTQ for the head only: the tied token_embd is the head; an untied one is only looked up (rounded)
    n_maq = 1 if name == "gqa" else 2
    n_gptq = 1 if method == "gptq" else 0
    assert caplog.text.count("(GPTQ on the head's input)") == n_gptq
    assert caplog.text.count("(rtn)") == n_maq - n_gptq
    lm = gl.load(out)
    heads = [lm.tok_embd] + ([] if lm.config.tied_output else [lm.output])
    assert {w.kind for w in heads} == {gl.KIND_MAQ4} and lm.config.tied_output == (name == "gqa")
    src = model.get_input_embeddings().weight.detach().float().numpy()
    err = float(np.sqrt(((lm.tok_embd.dequantize() - src) ** 2).mean() / (src ** 2).mean()))
    assert 0.01 < err < 0.1
    assert_matches_reference(lm)
