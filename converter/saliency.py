"""Group saliency and the salient-word bitmap.

Per weight (row p, input j): s_pj = w_pj² / U_jj², U the upper Cholesky factor of H⁻¹ (GPTQ/BiLLM's "[H⁻¹]_jj":
U_jj² is the variance of input j given the inputs after it, the OBS denominator in GPTQ's column order).
Per word (16 consecutive inputs of one row): S = Σ_j s_pj (the paper's group saliency).
Selection: in every 16-input block (one word column, P words), the K words with the highest score.
"-G" (no grouping): a word's score is its single most salient weight, max_j s_pj, instead of the sum.
"""
from __future__ import annotations

import numpy as np
import torch

from maq.runtime import format as fmt


def weight_saliency(W: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
    """s [P, T] = W² / diag(U)²."""
    return W.float().pow(2) / torch.diagonal(U).float().pow(2)[None, :]


def word_scores(W: torch.Tensor, U: torch.Tensor, grouped: bool = True) -> torch.Tensor:
    """[P, T/16]: Σ (grouped, the paper) or max (-G) of the per-weight saliency over each word's 16 inputs."""
    s = weight_saliency(W, U)
    P, T = s.shape
    s = s.view(P, T // fmt.WORD_WEIGHTS, fmt.WORD_WEIGHTS)
    return s.sum(-1) if grouped else s.amax(-1)


def select_top_k(scores: torch.Tensor, K: int) -> np.ndarray:
    """bool [P, W]: the K highest-scoring rows of every word column (stable: ties go to the lower row index)."""
    S = scores.detach().cpu().double().numpy()
    P, W = S.shape
    out = np.zeros((P, W), dtype=bool)
    if K <= 0:
        return out
    if K >= P:
        out[:] = True
        return out
    order = np.argsort(-S, axis=0, kind="stable")[:K]      # [K, W]
    out[order, np.arange(W)[None, :]] = True
    return out


def select_top_n(scores: torch.Tensor, N: int) -> np.ndarray:
    """bool [P, W]: the N highest-scoring words of the whole tensor (int8 salient coding: a per-tensor budget, so
    important input columns may take many words). Stable: ties go to the lower flat index (row-major)."""
    S = scores.detach().cpu().double().numpy()
    out = np.zeros(S.shape, dtype=bool)
    if N <= 0:
        return out
    order = np.argsort(-S.reshape(-1), kind="stable")[:N]
    out.reshape(-1)[order] = True
    return out
