"""Fixtures of the converter tests: tiny random Llama models (HF directories) built once per session."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_hf(smollm2_tokenizer_dir, tmp_path_factory):
    """A tiny random Llama (2 blocks, dim 64, GQA 4/2, tied) with SmolLM2's tokenizer, as a HF directory."""
    pytest.importorskip("torch")
    tiny = pytest.importorskip("tiny")
    out = tmp_path_factory.mktemp("tiny_hf")
    tiny.make_tiny_llama(out, smollm2_tokenizer_dir)
    return out


@pytest.fixture(scope="session")
def tiny_hf_untied_bf16(smollm2_tokenizer_dir, tmp_path_factory):
    """Untied output head, bfloat16 safetensors, sharded into several files."""
    pytest.importorskip("torch")
    tiny = pytest.importorskip("tiny")
    import torch
    from transformers import LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny_hf_untied")
    tiny.make_tiny_llama(out, smollm2_tokenizer_dir, tie=False, seed=1, dtype="bfloat16")
    model = LlamaForCausalLM.from_pretrained(str(out), dtype=torch.bfloat16)
    for f in out.glob("*.safetensors"):
        f.unlink()
    model.save_pretrained(str(out), safe_serialization=True, max_shard_size="2MB")
    return out


@pytest.fixture(scope="session")
def tiny_f32_gguf(tiny_hf, tmp_path_factory):
    """The tiny model converted to an F32 GGUF (maq convert --method f32)."""
    from maq.cli import main

    out = tmp_path_factory.mktemp("tiny_f32") / "tiny.f32.gguf"
    assert main(["convert", str(tiny_hf), "--out", str(out), "--method", "f32", "--no-progress"]) == 0
    return out


@pytest.fixture
def gpt2_gguf(tmp_path):
    """A minimal GGUF of another architecture (general.architecture = "gpt2", one F32 tensor): gpt2.gguf."""
    import gguf
    import numpy as np

    path = tmp_path / "gpt2.gguf"
    w = gguf.GGUFWriter(str(path), arch="gpt2")
    w.add_tensor("token_embd.weight", np.zeros((4, 4), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path
