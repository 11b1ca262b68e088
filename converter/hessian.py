"""The layer Hessian H = 2·XᵀX/n of a linear layer's inputs, its damping, and the factor GPTQ needs.

Shapes: X [n, T] (n tokens, T inputs), H [T, T], U [T, T] upper triangular with H_damped⁻¹ = Uᵀ U.

Determinism: the result must not depend on the number of torch threads (docs/CONVERTER.md, "Failures and
determinism"). MKL's LAPACK (Cholesky, cholesky_inverse) splits its blocked updates by thread count and rounds
differently with 1 and 2 threads, so ``prepare`` runs them on one thread; ``weighted_error`` sums in float64 in
numpy (a fixed pairwise order) instead of torch's full reduction, whose partial sums follow the thread count.
The XᵀX products (``addmm``) split over output tiles, not over tokens, on the AMD EPYC machines where this was
first measured (bit-identical for 1, 2, 4 and 8 threads), but on an Intel Xeon with AMX (2026-12-06) the 1- and
2-thread sums of T = 64 and 576 inputs differed in the last bit, so on the CPU ``add`` runs each product on one thread:
always as ``COLUMN_PARTS`` products of column slices of XᵀX (the same slices whatever the thread count; a slice's
columns come out as in the whole product, since the token sum of each element is unchanged), one slice per thread
at once, up to torch's thread count (tests/converter/test_determinism.py checks both).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

log = logging.getLogger(__name__)

COLUMN_PARTS = 2      # XᵀX on the CPU: column slices, each one single-threaded product (see the module docstring)


class HessianAccumulator:
    """Running sum of XᵀX over calibration tokens, in float32 on the accumulator's device.

    ``pool``: threads for the CPU product's column slices (``column_pool``; None: one after another, same sums)."""

    def __init__(self, T: int, device: torch.device | str = "cpu", pool: ThreadPoolExecutor | None = None):
        self.T = T
        self.sum = torch.zeros(T, T, dtype=torch.float32, device=device)
        self.n = 0
        self.pool = pool

    def add(self, x: torch.Tensor) -> None:
        """x [..., T]: every row is one token's input vector."""
        x = x.reshape(-1, self.T).to(device=self.sum.device, dtype=torch.float32)
        if self.sum.device.type == "cpu":
            pinned_addmm_(self.sum, x.t(), x, self.pool)
        else:
            self.sum.addmm_(x.t(), x)
        self.n += x.shape[0]

    def hessian(self) -> torch.Tensor:
        """H = 2·XᵀX/n [T, T] (float32)."""
        if self.n == 0:
            raise RuntimeError("Hessian of a layer that saw no calibration tokens")
        return self.sum * (2.0 / self.n)


def pinned_addmm_(out: torch.Tensor, a: torch.Tensor, b: torch.Tensor, pool: ThreadPoolExecutor | None = None
                  ) -> torch.Tensor:
    """out [M, N] += a [M, K] @ b [K, N] on the CPU as COLUMN_PARTS column-slice products, each on one thread, at
    once on pool's threads where there is a pool. The CPU BLAS splits a long inner sum by thread count (XᵀX over
    tokens; the vocabulary-long sum of an output head's input gradient); these sums do not depend on it."""
    N = out.shape[1]
    edges = [N * i // COLUMN_PARTS for i in range(COLUMN_PARTS + 1)]
    slices = [slice(lo, hi) for lo, hi in zip(edges, edges[1:]) if hi > lo]
    inference = torch.is_inference_mode_enabled()

    def part(sl: slice) -> None:
        with torch.inference_mode(inference):                 # per thread (a pool thread: one BLAS thread too)
            out[:, sl].addmm_(a, b[:, sl])

    with one_thread():                                        # this thread's products and MKL's global count
        if pool is not None:
            list(pool.map(part, slices))
        else:
            for sl in slices:
                part(sl)
    return out


def _one_blas_thread() -> None:
    """column_pool's thread initializer: that thread's own OpenMP thread count is 1 (OpenMP's count is per thread;
    torch.set_num_threads sets the calling thread's)."""
    torch.set_num_threads(1)


@contextlib.contextmanager
def column_pool():
    """Threads for ``pinned_addmm_``'s column slices: min(torch's thread count, COLUMN_PARTS), or None for one.
    One pool serves a whole conversion (a thread's first BLAS call pays its setup, ~10 ms)."""
    n = min(torch.get_num_threads(), COLUMN_PARTS)
    if n < 2:
        yield None
        return
    with ThreadPoolExecutor(n, thread_name_prefix="maq-pinned", initializer=_one_blas_thread) as pool:
        yield pool


@contextlib.contextmanager
def one_thread():
    """Run the enclosed torch/LAPACK calls on one thread (their rounding depends on the thread count)."""
    prev = torch.get_num_threads()
    if prev == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


@dataclasses.dataclass
class PreparedHessian:
    """H [T,T] as measured (dead inputs' diagonal set to 1), dead [T] bool, U [T,T] upper: (H + λI)⁻¹ = UᵀU."""

    H: torch.Tensor
    dead: torch.Tensor
    U: torch.Tensor
    damp_used: float


def prepare(H: torch.Tensor, damp: float) -> PreparedHessian:
    """Dead inputs (zero diagonal: never active) get H_jj = 1 (their weights are zeroed by the caller, as in GPTQ);
    λ = damp · mean(diag H); U = upper Cholesky factor of (H + λI)⁻¹, computed in float64.

    If the damped H is still not positive definite (numerically), λ is multiplied by 10 until it is (logged).
    """
    H = H.clone()
    diag = torch.diagonal(H)
    dead = diag <= 0
    H[dead, dead] = 1.0
    H64 = H.double()
    eye = torch.eye(H.shape[0], dtype=torch.float64, device=H.device)
    with one_thread():
        mean_diag = float(torch.diagonal(H).mean())   # one thread: a fixed order even beyond torch's grain size
        lam = damp * mean_diag
        for attempt in range(6):
            L, info = torch.linalg.cholesky_ex(H64 + lam * eye)
            if int(info) == 0:
                Hinv = torch.cholesky_inverse(L)
                U, info2 = torch.linalg.cholesky_ex(Hinv, upper=True)
                if int(info2) == 0:
                    if attempt:
                        log.warning("H not positive definite with damp %.3g: used %.3g", damp, lam / mean_diag)
                    return PreparedHessian(H=H, dead=dead, U=U.float(), damp_used=lam / mean_diag)
            lam *= 10.0
    raise RuntimeError("Hessian is not positive definite even with 1e5 x damping")


def weighted_error(D: torch.Tensor, H: torch.Tensor) -> float:
    """Σ_rows d H dᵀ for D [P, T]: the summed squared output error (x2) over the calibration tokens' mean."""
    E = (D.float() @ H) * D.float()
    return float(np.sum(E.cpu().numpy(), dtype=np.float64))   # numpy: one fixed order, whatever the threads
