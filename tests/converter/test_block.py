"""The calibration forward pass (converter/block.py on llama.cpp-layout weights) against transformers."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from maq.converter import block as B  # noqa: E402
from maq.converter.source import BLOCK_TENSORS, open_source  # noqa: E402


def _logits(src, ids):
    p = src.params
    emb = torch.from_numpy(src.tensor("token_embd.weight"))
    x = emb[ids]
    rope = B.Rope.make(p, ids.shape[1], "cpu")
    for i in range(p.n_layer):
        w = {k: torch.from_numpy(src.tensor(f"blk.{i}.{k}.weight")) for k in BLOCK_TENSORS}
        x = B.block_forward(x, w, p, rope)
    x = B.rms_norm(x, torch.from_numpy(src.tensor("output_norm.weight")), p.rms_eps)
    head = torch.from_numpy(src.tensor("output.weight")) if src.has("output.weight") else emb
    return x @ head.T


@pytest.mark.parametrize("which", ["hf", "gguf"])
def test_block_forward_matches_transformers(which, tiny_hf, tiny_f32_gguf):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(tiny_hf)).eval()
    src = open_source(tiny_hf if which == "hf" else tiny_f32_gguf)
    ids = torch.randint(0, src.params.n_vocab, (2, 24), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids).logits
    got = _logits(src, ids)
    assert torch.allclose(got, ref, atol=1e-5, rtol=1e-4), (got - ref).abs().max()


def test_block_forward_untied_bf16_sharded(tiny_hf_untied_bf16):
    from transformers import LlamaForCausalLM

    model = LlamaForCausalLM.from_pretrained(str(tiny_hf_untied_bf16), dtype=torch.float32).eval()
    src = open_source(tiny_hf_untied_bf16)
    assert src.has("output.weight") and not src.params.tied
    ids = torch.randint(0, src.params.n_vocab, (1, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = model(ids).logits
    assert torch.allclose(_logits(src, ids), ref, atol=1e-4, rtol=1e-3)
