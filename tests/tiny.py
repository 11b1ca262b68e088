"""Tiny random Llama models for tests, built from a LlamaConfig inside the test (needs torch + transformers).

``make_tiny_llama(dir, tokenizer_dir, ...)`` writes a Hugging Face model directory (config.json,
model.safetensors, tokenizer files) and returns the transformers model. The tokenizer is SmolLM2's, taken from
its GGUF, so the vocabulary is real (49152 tokens) while every other dimension is tiny.
"""
from __future__ import annotations

import shutil
from pathlib import Path


def save_tokenizer_from_gguf(gguf_path, out_dir) -> None:
    """Write HF tokenizer files converted from a GGUF's tokenizer.ggml.* metadata (transformers' converter)."""
    from transformers import AutoTokenizer

    gguf_path = Path(gguf_path)
    tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    tok.save_pretrained(str(out_dir))


def make_tiny_llama(out_dir, tokenizer_dir, *, hidden=64, intermediate=160, layers=2, heads=4, kv_heads=2,
                    tie=True, seed=0, vocab=49152, max_pos=512, rope_theta=10000.0, dtype="float32"):
    """Build a random LlamaForCausalLM from a config, save it (safetensors) with the tokenizer; return the model.

    Dimensions default to multiples of 16 (MAQ words); head_dim = hidden // heads.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                      max_position_embeddings=max_pos, rope_theta=rope_theta, tie_word_embeddings=tie,
                      rms_norm_eps=1e-5, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # give the norms non-trivial weights so tests see them
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.to(getattr(torch, dtype)).save_pretrained(str(out_dir), safe_serialization=True)
    for f in Path(tokenizer_dir).iterdir():
        if f.is_file():
            shutil.copy(f, out_dir / f.name)
    return model.float()
