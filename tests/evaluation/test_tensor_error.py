"""Held-back Hessians from the reference forward, and relative output errors from them."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from maq.evaluation import tensor_error as TE  # noqa: E402


def test_rel_error_is_output_error_norm_ratio():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 64)).astype(np.float32)
    X[:, 3] *= 10
    W = rng.standard_normal((24, 64)).astype(np.float32)
    Wq = W + 0.1 * rng.standard_normal(W.shape).astype(np.float32)
    H = torch.from_numpy(2.0 * X.T @ X / len(X))
    direct = np.linalg.norm((W - Wq) @ X.T) / np.linalg.norm(W @ X.T)
    assert TE.rel_error(W, Wq, H) == pytest.approx(direct, rel=1e-4)


def test_mean4_and_salient_breakdown():
    rng = np.random.default_rng(1)
    W = rng.standard_normal((8, 64)).astype(np.float32)
    m = TE.mean4(W)
    assert np.allclose(m.reshape(8, 16, 4), W.reshape(8, 16, 4).mean(axis=2, keepdims=True))
    H = torch.eye(64) * 2
    sal = np.zeros((8, 4), bool)
    sal[0, 1] = sal[5, 3] = True
    M = TE.word_mask(sal)
    Q = np.where(M, m, W)                       # salient words: exact means, everything else exact
    b = TE.salient_breakdown(W, Q, sal, H, Q_other=W)
    assert b["nonsalient_only"] == 0.0 and b["other_on_salient"] == 0.0
    assert b["salient_only"] == pytest.approx(b["mean4_only"]) == pytest.approx(b["total"])
    want = math.sqrt(((W - m)[M] ** 2).sum() / (W ** 2).sum())
    assert b["total"] == pytest.approx(want, rel=1e-5)
    assert b["salient_pct"] == pytest.approx(100 * 2 / 32)


def test_hessians_equal_transformers_layer_inputs(tiny_f32):
    """H of every linear input, from our reference forward on the GGUF, equals 2·XᵀX/n of the inputs that
    transformers' LlamaForCausalLM feeds its q_proj / o_proj / gate_proj / down_proj on the same tokens."""
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(str(tiny_f32.parent / "hf")).eval().float()
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 49152, (3, 40)).astype(np.int64)
    H = TE.collect_hessians(tiny_f32, samples)
    seen: dict[str, list] = {}
    hooks = []
    for i, layer in enumerate(hf.model.layers):
        for name, mod in (("qkv", layer.self_attn.q_proj), ("o", layer.self_attn.o_proj),
                          ("gu", layer.mlp.gate_proj), ("down", layer.mlp.down_proj)):
            hooks.append(mod.register_forward_hook(
                lambda m, inp, out, key=f"blk.{i}.{name}": seen.setdefault(key, []).append(inp[0].detach())))
    with torch.no_grad():
        hf(torch.from_numpy(samples))
    for h in hooks:
        h.remove()
    assert set(seen) == set(H)
    for key, xs in seen.items():
        x = torch.cat(xs).reshape(-1, xs[0].shape[-1]).double()
        want = 2.0 * x.T @ x / x.shape[0]
        assert torch.allclose(H[key].double(), want, rtol=1e-4, atol=1e-5 * float(want.abs().max())), key


def test_file_errors_on_tiny_files(tiny_f32, tiny_maq2):
    rng = np.random.default_rng(0)
    samples = rng.integers(0, 49152, (2, 32)).astype(np.int64)
    H = TE.collect_hessians(tiny_f32, samples, blocks=[1])
    names = [TE.tensor_name(1, k) for k in ("attn_v", "ffn_down")]
    e = TE.file_errors(tiny_f32, {"same": tiny_f32, "maq": tiny_maq2}, H, names)
    assert all(v["rel_err"] == 0.0 and v["type"] == "F32" for v in e["same"].values())
    assert all(0.01 < v["rel_err"] < 2.0 and v["type"] == "MAQ2" for v in e["maq"].values())
    agg = TE.aggregate(e["maq"])
    assert agg["n"] == 2 and agg["min"] <= agg["gmean"] <= agg["max"]


def test_hybrid_replaces_only_the_named_tensors(tiny_f32, tiny_maq2, tmp_path):
    from maq.evaluation import hybrid
    from maq.runtime.inspect import read_header, read_weight

    names = ["blk.0.attn_q.weight", "blk.1.ffn_down.weight"]
    out = hybrid.write_hybrid(tiny_f32, tmp_path / "h.gguf", hybrid.replacements(tiny_maq2, names))
    h0, h1 = read_header(tiny_f32), read_header(out)
    assert h0.data_start == h1.data_start and tiny_f32.read_bytes()[:h0.data_start] == out.read_bytes()[:h0.data_start]
    for t in h0.tensors:
        a = read_weight(out, t.name, h1)[0] if len(t.ne) == 2 else None
        if t.name in names:
            assert np.array_equal(a, read_weight(tiny_maq2, t.name)[0])
            assert not np.array_equal(a, read_weight(tiny_f32, t.name)[0])
        elif a is not None:
            assert np.array_equal(a, read_weight(tiny_f32, t.name)[0])
    from maq.errors import MAQError

    with pytest.raises(MAQError, match="needs an F32 base"):
        hybrid.write_hybrid(tiny_maq2, tmp_path / "x.gguf", {names[0]: np.zeros((64, 64), np.float32)})


def test_dequantize_q2_0_matches_llamacpp_layout():
    import numpy as np

    from maq.evaluation import tensor_error as TE

    rng = np.random.default_rng(0)
    q = rng.integers(0, 4, (3, 64))
    d = np.array([0.5, -2.0, 0.125], dtype=np.float16)
    blocks = np.zeros((3, 18), np.uint8)
    blocks[:, :2] = d.view(np.uint8).reshape(3, 2)
    for j in range(64):                                   # ggml-quants.c: byte j/4, bits 2*(j%4)
        blocks[:, 2 + j // 4] |= (q[:, j] << (2 * (j % 4))).astype(np.uint8)
    got = TE.dequantize_q2_0(blocks.reshape(-1), 192).reshape(3, 64)
    np.testing.assert_array_equal(got, (q - 1) * d.astype(np.float32)[:, None])


def test_tensors_cli_lives_in_the_package():
    """The per-tensor analysis is package code (maq.evaluation.tensors); scripts/eval_tensors.py only calls it."""
    from maq.evaluation import tensors

    with pytest.raises(SystemExit) as e:
        tensors.main(["--help"])
    assert e.value.code == 0
    script = (Path(__file__).resolve().parents[2] / "scripts" / "eval_tensors.py").read_text()
    assert "from maq.evaluation.tensors import main" in script and len(script.splitlines()) < 20
