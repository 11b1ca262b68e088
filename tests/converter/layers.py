"""Synthetic linear layers with real structure for the quantizer tests (numpy -> torch)."""
from __future__ import annotations

import numpy as np


def structured_layer(P=96, T=256, n=4096, rank=6, outliers_per_block=2, amp=8.0, seed=0):
    """(W [P, T], H [T, T], injected bool [P, T/16]) as torch float32.

    Inputs: correlated (a random mixing of independent sources) with a few high-variance channels.
    Weights: low rank + noise, plus ``outliers_per_block`` injected outlier words in every 16-input block:
    16 large weights (amp x the weights' std), nearly constant over each 4-input span.
    """
    import torch

    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((n, T))
    M = np.eye(T) + 0.6 * rng.standard_normal((T, T)) / np.sqrt(T)
    X = Z @ M
    X[:, rng.choice(T, 4, replace=False)] *= 4.0
    H = 2.0 * X.T @ X / n
    W = (rng.standard_normal((P, rank)) @ rng.standard_normal((rank, T))) / np.sqrt(rank)
    W += 0.3 * rng.standard_normal((P, T))
    W *= 0.02
    std = W.std()
    injected = np.zeros((P, T // 16), dtype=bool)
    for w in range(T // 16):
        rows = rng.choice(P, outliers_per_block, replace=False)
        injected[rows, w] = True
        for r in rows:
            level = amp * std * rng.choice([-1.0, 1.0]) * (1.0 + 0.3 * rng.random(4))
            W[r, w * 16:(w + 1) * 16] = np.repeat(level, 4) * (1.0 + 0.02 * rng.standard_normal(16))
    return (torch.from_numpy(W.astype(np.float32)), torch.from_numpy(H.astype(np.float32)), injected)
