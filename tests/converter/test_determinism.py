"""Determinism: the same input, flags and seed give a byte-identical GGUF on 1 or 2 torch threads.

End to end on the tiny model, and op by op at SmolLM2's sizes (T = 576 / 1536), where MKL's LAPACK rounds
differently with 1 and 2 threads unless ``hessian.prepare`` pins it to one thread.
"""
from __future__ import annotations

import hashlib

import pytest

torch = pytest.importorskip("torch")

from maq.cli import main  # noqa: E402
from maq.converter import hessian  # noqa: E402

CAL = ["--nsamples", "4", "--seqlen", "64", "--no-progress"]


@pytest.fixture
def restore_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _on_threads(n, fn):
    torch.set_num_threads(n)
    return fn()


@pytest.mark.parametrize("extra", [[], ["--calib-dtype", "bfloat16", "--no-salient-feedback"]])
def test_threads_1_and_2_byte_identical(tiny_hf, tmp_path, restore_threads, extra):
    outs = []
    for threads in ("1", "2", "1"):
        out = tmp_path / f"t{threads}_{len(outs)}.gguf"
        assert main(["convert", str(tiny_hf), "--out", str(out), "--threads", threads, *CAL, *extra]) == 0
        outs.append(_sha(out))
    assert outs[0] == outs[1] == outs[2]


@pytest.mark.parametrize("T", [64, 576, 1536])
def test_prepare_is_thread_count_independent(restore_threads, T):
    g = torch.Generator().manual_seed(T)
    X = torch.randn(2 * T, T, generator=g)
    H = 2 * X.t() @ X / X.shape[0]
    H[3, :] = 0
    H[:, 3] = 0                                   # a dead input
    a = _on_threads(1, lambda: hessian.prepare(H, 0.01))
    b = _on_threads(2, lambda: hessian.prepare(H, 0.01))
    assert torch.equal(a.U, b.U) and a.damp_used == b.damp_used
    assert torch.get_num_threads() == 2           # prepare restored the caller's thread count


def test_weighted_error_is_thread_count_independent(restore_threads):
    """884k products per error: torch's own full .sum() splits them per thread (differed in 6 of 10 draws)."""
    for seed in range(5):
        g = torch.Generator().manual_seed(seed)
        X = torch.randn(4096, 576, generator=g)
        H = X.t() @ X / 4096
        D = 0.01 * torch.randn(1536, 576, generator=g)
        a = _on_threads(1, lambda: hessian.weighted_error(D, H))
        b = _on_threads(2, lambda: hessian.weighted_error(D, H))
        assert a == b, seed


@pytest.mark.parametrize("T, n", [(64, 8192), (576, 8192), (1536, 8192)])
def test_hessian_accumulation_is_thread_count_independent(restore_threads, T, n):
    """XᵀX over a chunk of n tokens (pipeline.CHUNK_TOKENS) through addmm: BLAS splits the output, not the sum."""
    g = torch.Generator().manual_seed(1)
    chunks = [torch.randn(n, T, generator=g) for _ in range(2)]

    def acc():
        with hessian.column_pool() as pool:                 # 2 threads: the slices at once (the pipeline's way)
            a = hessian.HessianAccumulator(T, pool=pool)
            for c in chunks:
                a.add(c)
            return a.hessian()

    one = _on_threads(1, acc)
    assert torch.equal(one, _on_threads(2, acc))
    whole = torch.zeros(T, T)
    for c in chunks:
        whole.addmm_(c.t(), c)
    assert torch.allclose(one, whole * (2.0 / (2 * n)), rtol=1e-5, atol=1e-5 * float(whole.abs().max()) / n)


def test_column_pool_threads(restore_threads):
    torch.set_num_threads(1)
    with hessian.column_pool() as pool:
        assert pool is None                                 # one thread: the slices one after another
    torch.set_num_threads(2)
    with hessian.column_pool() as pool:
        assert pool is not None and pool._max_workers == min(2, hessian.COLUMN_PARTS)


def test_sensitivity_head_gradient_is_pinned(restore_threads):
    """The sensitivity pass's output head: its input gradient g W sums over the whole vocabulary, which MKL splits
    by thread count; allocate._PinnedHead computes it in single-threaded column slices: the same bits on 1 and 2
    threads, and the gradient autograd gives for block.linear."""
    from maq.converter import allocate, block

    g = torch.Generator().manual_seed(3)
    W = torch.randn(49152, 64, generator=g) * 0.05
    h0 = torch.randn(1, 96, 64, generator=g)
    target = torch.randint(0, 49152, (96,), generator=g)

    def grad(head):
        def run():
            h = h0.clone().requires_grad_(True)
            with hessian.column_pool() as pool:
                logits = head(h, pool)[0]
                torch.nn.functional.cross_entropy(logits, target, reduction="sum").backward()
            return h.grad
        return run

    pinned = grad(lambda h, pool: allocate._PinnedHead.apply(h, W, pool))
    a, b = _on_threads(1, pinned), _on_threads(2, pinned)
    assert torch.equal(a, b)
    plain = _on_threads(1, grad(lambda h, pool: block.linear(h, W)))
    assert torch.allclose(a, plain, rtol=1e-4, atol=1e-5 * float(plain.abs().max()))
