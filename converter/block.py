"""A Llama decoder block in plain torch, on weights in llama.cpp's layout (the calibration forward pass).

Weights are the GGUF ones: [P, T] matrices with Q/K rows in llama.cpp's permuted order, so RoPE rotates adjacent
pairs (2i, 2i+1) of each head exactly as llama.cpp's "normal" rope mode does; this equals Hugging Face's
rotate-half RoPE on the unpermuted weights (tests check the whole model against transformers).

Shapes: x [N, L, D] (N sequences of L tokens, D = n_embd); every function works on one chunk of sequences.
"""
from __future__ import annotations

import dataclasses

import torch

from maq.converter.source import LlamaParams


@dataclasses.dataclass
class Rope:
    """cos/sin tables [L, head_dim/2] for positions 0..L-1."""

    cos: torch.Tensor
    sin: torch.Tensor

    @staticmethod
    def make(params: LlamaParams, L: int, device, freq_factors: torch.Tensor | None = None) -> "Rope":
        hd = params.head_dim
        inv = 1.0 / (params.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float64, device=device) / hd))
        if freq_factors is not None:                       # llama3 rope_freqs: theta_i / factor_i
            inv = inv / freq_factors.to(device=device, dtype=torch.float64)
        pos = torch.arange(L, dtype=torch.float64, device=device)
        rs = params.rope_scaling or {}
        if str(rs.get("rope_type", rs.get("type", ""))).lower() == "linear":
            pos = pos / float(rs.get("factor", 1.0))
        ang = torch.outer(pos, inv)
        return Rope(cos=ang.cos().float(), sin=ang.sin().float())

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, L, H, hd] float32 -> rotated, adjacent pairs (llama.cpp normal mode):
        (x0, x1) -> (x0·cos − x1·sin, x0·sin + x1·cos), as one complex multiplication."""
        L = x.shape[1]
        rot = torch.complex(self.cos[:L, None, :], self.sin[:L, None, :])           # [L, 1, hd/2]
        xc = torch.view_as_complex(x.float().contiguous().view(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * rot).reshape(x.shape).to(x.dtype)


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """x [..., D] float32 -> normalized * w (float32)."""
    x = x.float()
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def linear(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """x [..., T] @ w[P, T]^T in w's dtype -> float32 [..., P]."""
    return torch.matmul(x.to(w.dtype), w.t()).float()


def attention(h: torch.Tensor, wq: torch.Tensor, wk: torch.Tensor, wv: torch.Tensor, params: LlamaParams,
              rope: Rope) -> torch.Tensor:
    """Causal GQA self-attention of normed input h [N, L, D] -> concatenated heads [N, L, n_head*hd] (float32)."""
    N, L, _ = h.shape
    hd = params.head_dim
    q = rope.apply(linear(h, wq).view(N, L, params.n_head, hd))
    k = rope.apply(linear(h, wk).view(N, L, params.n_head_kv, hd))
    v = linear(h, wv).view(N, L, params.n_head_kv, hd)
    dt = wq.dtype
    q, k, v = (t.transpose(1, 2).to(dt) for t in (q, k, v))       # [N, H, L, hd]
    o = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                         enable_gqa=params.n_head != params.n_head_kv)
    return o.transpose(1, 2).reshape(N, L, params.n_head * hd).float()


def mlp_act(h: torch.Tensor, wg: torch.Tensor, wu: torch.Tensor) -> torch.Tensor:
    """SwiGLU inner activation silu(h Wg^T) * (h Wu^T): [N, L, n_ff] float32."""
    return torch.nn.functional.silu(linear(h, wg)) * linear(h, wu)


def block_forward(x: torch.Tensor, w: dict[str, torch.Tensor], params: LlamaParams, rope: Rope) -> torch.Tensor:
    """One full decoder block: x [N, L, D] -> [N, L, D]; w maps kinds (attn_q, ..., ffn_norm) to tensors."""
    h = rms_norm(x, w["attn_norm"], params.rms_eps)
    x = x + linear(attention(h, w["attn_q"], w["attn_k"], w["attn_v"], params, rope), w["attn_output"])
    h = rms_norm(x, w["ffn_norm"], params.rms_eps)
    return x + linear(mlp_act(h, w["ffn_gate"], w["ffn_up"]), w["ffn_down"])
