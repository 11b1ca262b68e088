"""Incoherence processing (``--incoherence hadamard``, docs/FORMAT.md section 10): every linear weight of the
decoder blocks is quantized and stored rotated along its inputs, W' = W Rᵀ, with R the format's randomized
block Walsh-Hadamard rotation; the runtime multiplies W' by R x. R spreads a few large weights (and the inputs'
outlier channels) over each 64-input block, so a 2-4-bit grid of a scale group fits W' better than W (QuIP#,
QuaRot). GPTQ sees the rotated problem: W' and H' = R H Rᵀ (H: the input second moment); the error
(W - Q) H (W - Q)ᵀ is the same in both bases, so costs, errors and the allocation compare directly.

The converter's forward (the next layers' calibration inputs) keeps running in the original basis on the
effective weights Q = Q' R (``unrotate``).
"""
from __future__ import annotations

import numpy as np
import torch

from maq.runtime import format as fmt


def applies(name: str, seed: int | None) -> bool:
    """Whether tensor ``name`` is stored rotated in a file converted with rotation ``seed`` (None: no rotation)."""
    return seed is not None and fmt.is_rotated_tensor(name)


def rotate_weight(W, seed: int):
    """W' = W Rᵀ (each row rotated) for a numpy array or torch tensor [P, T]; same type, dtype and device."""
    if isinstance(W, torch.Tensor):
        return torch.from_numpy(fmt.rotate(W.detach().cpu().numpy(), seed)).to(W.device)
    return fmt.rotate(np.asarray(W), seed)


def unrotate_weight(Q, seed: int):
    """Q = Q' R: the effective weights of a rotated Q' [P, T] (numpy or torch, same type)."""
    if isinstance(Q, torch.Tensor):
        return torch.from_numpy(fmt.unrotate(Q.detach().cpu().numpy(), seed)).to(Q.device)
    return fmt.unrotate(np.asarray(Q), seed)


def rotate_hessian(H: torch.Tensor, seed: int) -> torch.Tensor:
    """H' = R H Rᵀ [T, T] (float64 in between, H's dtype and device out)."""
    h = H.detach().cpu().double().numpy()
    h = fmt.rotate(fmt.rotate(h, seed).T, seed)           # rows of H Rᵀ rotated again: R H Rᵀ (H symmetric)
    return torch.from_numpy(np.ascontiguousarray((h + h.T) * 0.5)).to(dtype=H.dtype, device=H.device)

