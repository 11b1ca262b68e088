"""Per-tensor output errors of quantized files on held-back activations (torch; the converter's block forward).

The reference model (its dequantized weights) runs over held-back text windows with ``maq.converter.block``'s
functions; at every linear layer the input's H = 2·XᵀX/n is summed (``maq.converter.hessian``), one H per input:
``qkv`` (attn_norm(x): attn_q/k/v), ``o`` (attention heads: attn_output), ``gu`` (ffn_norm(a): ffn_gate/up),
``down`` (silu(g)·u: ffn_down). The relative output error of a quantized weight Ŵ is then

    ||(W - Ŵ) Xᵀ||_F / ||W Xᵀ||_F = sqrt( Σ_rows (w-ŵ) H (w-ŵ)ᵀ / Σ_rows w H wᵀ )

(the square root of the converter's "H-err"), for any file the weights can be read from (MAQ2 via the format
module, llama.cpp types via gguf.quants: ``maq.runtime.inspect.read_weight``).
"""
from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import torch

from maq.runtime import format as fmt
from maq.runtime import gguf_loader as gl
from maq.runtime.inspect import read_header, read_weight

log = logging.getLogger(__name__)

LINEAR_KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
INPUT_OF = {"attn_q": "qkv", "attn_k": "qkv", "attn_v": "qkv", "attn_output": "o", "ffn_gate": "gu",
            "ffn_up": "gu", "ffn_down": "down"}


def tensor_name(i: int, kind: str) -> str:
    return f"blk.{i}.{kind}.weight"


def text_windows(model_path: str | Path, text_path: str | Path, nsamples: int, seqlen: int, seed: int
                 ) -> np.ndarray:
    """int64 [nsamples, seqlen] random windows of a text file, tokenized as the converter tokenizes calibration."""
    from maq.converter.calibration import read_text, sample_windows
    from maq.converter.source import open_source

    src = open_source(model_path)
    ids = src.encode(read_text(Path(text_path)))
    return sample_windows(np.asarray(ids, dtype=np.int64), nsamples, seqlen, seed, str(text_path))


@torch.inference_mode()
def collect_hessians(model_path: str | Path, samples: np.ndarray, blocks: list[int] | None = None,
                     inputs: tuple[str, ...] = ("qkv", "o", "gu", "down"), chunk_tokens: int = 8192
                     ) -> dict[str, torch.Tensor]:
    """{"blk.{i}.{input}": H [T, T] float32} from the reference model's forward over ``samples`` [N, L]."""
    from maq.converter import block as B
    from maq.converter.hessian import HessianAccumulator
    from maq.converter.source import BLOCK_TENSORS, block_name, open_source

    src = open_source(model_path)
    p = src.params
    N, L = samples.shape
    last = max(blocks) if blocks else p.n_layer - 1
    want = set(blocks) if blocks else set(range(p.n_layer))
    rope = B.Rope.make(p, L, "cpu")
    emb = torch.from_numpy(src.tensor("token_embd.weight"))
    X = emb[torch.from_numpy(samples)]                      # [N, L, D]
    step = max(1, chunk_tokens // L)
    out: dict[str, torch.Tensor] = {}
    for i in range(last + 1):
        w = {k: torch.from_numpy(src.tensor(block_name(i, k))) for k in BLOCK_TENSORS}
        acc = {k: None for k in inputs} if i in want else {}
        for s in range(0, N, step):
            x = X[s:s + step]
            h = B.rms_norm(x, w["attn_norm"], p.rms_eps)
            a = B.attention(h, w["attn_q"], w["attn_k"], w["attn_v"], p, rope)
            x = x + B.linear(a, w["attn_output"])
            h2 = B.rms_norm(x, w["ffn_norm"], p.rms_eps)
            act = B.mlp_act(h2, w["ffn_gate"], w["ffn_up"])
            for name, val in (("qkv", h), ("o", a), ("gu", h2), ("down", act)):
                if name in acc:
                    if acc[name] is None:
                        acc[name] = HessianAccumulator(val.shape[-1])
                    acc[name].add(val)
            X[s:s + step] = x + B.linear(act, w["ffn_down"])
        for name, a in acc.items():
            out[f"blk.{i}.{name}"] = a.hessian()
        log.debug("block %d: H collected", i)
    return out


def weighted(D: np.ndarray | torch.Tensor, H: torch.Tensor) -> float:
    """Σ_rows d H dᵀ (float64 result)."""
    D = torch.from_numpy(np.array(D, dtype=np.float32)) if not isinstance(D, torch.Tensor) else D.float()
    return float(((D @ H) * D).sum(dtype=torch.float64))


def rel_error(W: np.ndarray, Wq: np.ndarray, H: torch.Tensor) -> float:
    """||(W - Ŵ)X|| / ||WX|| from H."""
    return math.sqrt(weighted(W - Wq, H) / weighted(W, H))


def word_mask(mask: np.ndarray) -> np.ndarray:
    """bool [P, T/16] -> bool [P, T]."""
    return np.repeat(mask, fmt.WORD_WEIGHTS, axis=1)


def mean4(W: np.ndarray) -> np.ndarray:
    """Every 4 consecutive inputs replaced by their mean (the paper's salient coding before int8 rounding)."""
    P, T = W.shape
    m = W.reshape(P, T // fmt.MEAN_SPAN, fmt.MEAN_SPAN).mean(axis=2, keepdims=True)
    return np.broadcast_to(m, (P, T // fmt.MEAN_SPAN, fmt.MEAN_SPAN)).reshape(P, T)


def adjacent_corr(W: np.ndarray) -> float:
    """Correlation of weights of neighbouring inputs inside a 4-input span (what a mean of 4 relies on)."""
    P, T = W.shape
    s = W.reshape(P, T // fmt.MEAN_SPAN, fmt.MEAN_SPAN)
    a, b = s[:, :, :-1].ravel(), s[:, :, 1:].ravel()
    return float(np.corrcoef(a, b)[0, 1])


def salient_breakdown(W: np.ndarray, Q: np.ndarray, sal: np.ndarray, H: torch.Tensor,
                      Q_other: np.ndarray | None = None) -> dict:
    """Where a MAQ tensor's output error comes from. ``sal`` bool [P, T/16]; ``Q_other`` e.g. the GPTQ tensor.

    total: ||(W-Q)X||/||WX||; salient_only: only the salient words take their stored values (the rest exact);
    mean4_only: only the salient words replaced by the exact (unrounded) mean of 4 of the original weights;
    nonsalient_only: everything but the salient words takes its stored value; other_on_salient: the salient words
    take ``Q_other``'s values (what 2-bit would have cost on those words); energy_salient: share of ΣwHwᵀ that the
    salient words' weights carry alone.
    """
    M = word_mask(sal)
    ref = weighted(W, H)
    r = lambda D: math.sqrt(max(weighted(D, H), 0.0) / ref)  # noqa: E731
    out = {"salient_pct": 100.0 * float(sal.mean()), "total": r(W - Q),
           "salient_only": r(np.where(M, W - Q, 0.0)),
           "mean4_only": r(np.where(M, W - mean4(W), 0.0)),
           "nonsalient_only": r(np.where(M, 0.0, W - Q)),
           "energy_salient": weighted(np.where(M, W, 0.0), H) / ref,
           # unweighted: the share of the salient words' own energy their mean-of-4 coding loses (0.75 for
           # independent inputs: a mean of 4 keeps 1/4 of the energy), and the same for the whole tensor
           "mean4_loss_salient": float(((W - mean4(W))[M] ** 2).sum() / max((W[M] ** 2).sum(), 1e-30)),
           "mean4_loss_all": float(((W - mean4(W)) ** 2).sum() / max((W ** 2).sum(), 1e-30)),
           "adjacent_corr": adjacent_corr(W)}
    if Q_other is not None:
        out["other_total"] = r(W - Q_other)
        out["other_on_salient"] = r(np.where(M, W - Q_other, 0.0))
    return out


def dequantize_q2_0(data: np.ndarray, n: int) -> np.ndarray:
    """llama.cpp's Q2_0 (ggml-quants.c dequantize_row_q2_0): blocks of 64 weights = fp16 d + 16 bytes of 2-bit
    codes, 4 per byte from the low bits; value (q - 1) * d, q in 0..3. ``data`` uint8, ``n`` weights."""
    _, bs, ts = gl.LLAMACPP_EXTRA_TYPES[gl.GGML_Q2_0]          # 64 weights, 18 bytes
    blocks = np.asarray(data, dtype=np.uint8).reshape(-1, ts)
    if blocks.shape[0] * bs != n:
        raise ValueError(f"Q2_0: {blocks.shape[0]} blocks for {n} weights")
    d = blocks[:, :2].copy().view(np.float16).astype(np.float32)             # [nb, 1]
    qs = blocks[:, 2:]
    q = np.stack([(qs >> s) & 3 for s in (0, 2, 4, 6)], axis=2).reshape(-1, bs).astype(np.float32)
    return ((q - 1.0) * d).reshape(-1)


def read_weight_any(path: str | Path, name: str, header) -> tuple[np.ndarray, np.ndarray | None]:
    """``maq.runtime.inspect.read_weight``, plus the ggml types the gguf package cannot dequantize (Q2_0)."""
    by = {t.name: t for t in header.tensors}
    t = by.get(name)
    if t is not None and t.ggml_type == gl.GGML_Q2_0:
        n = int(np.prod(t.ne))
        _, bs, ts = gl.LLAMACPP_EXTRA_TYPES[gl.GGML_Q2_0]
        return dequantize_q2_0(np.asarray(t.data)[:n // bs * ts], n).reshape(int(np.prod(t.ne[1:])), t.ne[0]), None
    return read_weight(path, name, header)


def file_errors(ref: str | Path, files: dict[str, str | Path], H: dict[str, torch.Tensor],
                names: list[str]) -> dict[str, dict[str, dict]]:
    """{label: {tensor: {"rel_err", "bpw", "type"}}} for every file and tensor name (H keyed by blk.i.input)."""
    from maq.runtime.inspect import tensor_rows

    ref_h = read_header(ref)
    out: dict[str, dict[str, dict]] = {}
    refW = {n: read_weight(ref, n, ref_h)[0] for n in names}
    for label, path in files.items():
        h = read_header(path)
        rows = {r.name: r for r in tensor_rows(h, salient=False)}
        res = {}
        for n in names:
            i, kind = int(n.split(".")[1]), n.split(".")[2]
            Wq, _ = read_weight_any(path, n, h)
            res[n] = {"rel_err": rel_error(refW[n], Wq, H[f"blk.{i}.{INPUT_OF[kind]}"]), "bpw": rows[n].bpw,
                      "type": rows[n].type}
        out[label] = res
    return out


def aggregate(errs: dict[str, dict], refW: dict[str, np.ndarray] | None = None) -> dict:
    """Mean, geometric mean, min and max of rel_err over tensors, and their bits/weight (by weights)."""
    v = np.array([e["rel_err"] for e in errs.values()])
    return {"mean": float(v.mean()), "gmean": float(np.exp(np.log(np.maximum(v, 1e-30)).mean())),
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size),
            "bpw": float(np.mean([e["bpw"] for e in errs.values()])),
            "types": sorted({e["type"] for e in errs.values()})}
