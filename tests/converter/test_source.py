"""Model sources: HF directories and GGUF files, Q/K permutation, refusals with one-line errors."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from maq.converter.source import llama3_rope_factors, open_source, permute_qk, unpermute_qk
from maq.errors import MAQError


@pytest.mark.parametrize("n_head,head_dim", [(4, 16), (3, 64), (1, 8)])
def test_permute_qk_matches_llama_cpp_and_inverts(n_head, head_dim):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((n_head * head_dim, 32)).astype(np.float32)
    p = permute_qk(w, n_head)
    # llama.cpp: row r of head h (r < hd/2) goes to 2r, row r + hd/2 goes to 2r + 1
    half = head_dim // 2
    for h in range(n_head):
        for r in range(half):
            assert np.array_equal(p[h * head_dim + 2 * r], w[h * head_dim + r])
            assert np.array_equal(p[h * head_dim + 2 * r + 1], w[h * head_dim + half + r])
    assert np.array_equal(unpermute_qk(p, n_head), w)


def test_hf_and_gguf_sources_agree(tiny_hf, tiny_f32_gguf):
    a, b = open_source(tiny_hf), open_source(tiny_f32_gguf)
    import dataclasses

    pa, pb = dataclasses.asdict(a.params), dataclasses.asdict(b.params)
    assert pa.pop("rms_eps") == pytest.approx(pb.pop("rms_eps"), rel=1e-6)  # GGUF stores float32
    assert pa == pb
    assert a.names() == b.names()
    for n in a.names():
        assert np.array_equal(a.tensor(n), b.tensor(n)), n


def test_sharded_bf16_untied(tiny_hf_untied_bf16):
    files = list(tiny_hf_untied_bf16.glob("*.safetensors"))
    assert len(files) > 1 and (tiny_hf_untied_bf16 / "model.safetensors.index.json").is_file()
    src = open_source(tiny_hf_untied_bf16)
    assert "output.weight" in src.names()
    w = src.tensor("blk.0.ffn_up.weight")
    assert w.dtype == np.float32 and w.shape == (160, 64)
    # bf16 values are exactly representable: the low 16 bits of every float32 are zero
    assert not np.any(w.view(np.uint32) & 0xFFFF)


def test_smollm2_gguf_source(smollm2_gguf):
    src = open_source(smollm2_gguf)
    p = src.params
    assert (p.n_layer, p.n_embd, p.n_ff, p.n_head, p.n_head_kv, p.n_vocab) == (30, 576, 1536, 9, 3, 49152)
    assert p.tied and not src.has("output.weight")
    w = src.tensor("blk.0.attn_k.weight")  # Q4_1 dequantized by gguf's own quants module
    assert w.shape == (192, 576) and w.dtype == np.float32 and np.isfinite(w).all()


def _copy_model(src_dir, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(src_dir, d)
    return d


def test_refuses_missing_path(tmp_path):
    with pytest.raises(MAQError, match="no such file"):
        open_source(tmp_path / "nope")


def test_refuses_other_architecture(tiny_hf, tmp_path):
    d = _copy_model(tiny_hf, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "mistral"
    cfg["architectures"] = ["MistralForCausalLM"]
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(MAQError, match="mistral"):
        open_source(d)


def test_refuses_other_gguf_architecture(gpt2_gguf):
    with pytest.raises(MAQError, match="'gpt2'"):
        open_source(gpt2_gguf)


def test_refuses_not_a_model(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello world")
    with pytest.raises(MAQError, match="neither"):
        open_source(f)
    with pytest.raises(MAQError, match="config.json"):
        open_source(tmp_path)


def test_nan_weights_named(tiny_hf, tmp_path):
    from safetensors.numpy import load_file, save_file

    d = _copy_model(tiny_hf, tmp_path)
    st = d / "model.safetensors"
    tensors = load_file(str(st))
    tensors["model.layers.1.mlp.up_proj.weight"][3, 5] = np.nan
    save_file(tensors, str(st))
    with pytest.raises(MAQError, match="model.layers.1.mlp.up_proj.weight.*NaN"):   # checked up front (hf_check)
        open_source(d)


def test_llama3_rope_factors():
    from maq.converter.source import LlamaParams

    p = LlamaParams(n_layer=1, n_embd=64, n_ff=64, n_head=1, n_head_kv=1, head_dim=64, n_vocab=10, n_ctx=8192,
                    rope_theta=500000.0, rms_eps=1e-5,
                    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192})
    f = llama3_rope_factors(p)
    assert f.shape == (32,) and f[0] == 1.0 and f[-1] == 8.0 and np.all(np.diff(f) >= 0)
    assert llama3_rope_factors(LlamaParams(**{**p.__dict__, "rope_scaling": None})) is None
