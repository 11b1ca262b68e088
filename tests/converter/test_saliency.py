"""Group saliency and top-K selection per 16-input block."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from maq.converter.saliency import select_top_k, weight_saliency, word_scores  # noqa: E402


def test_word_scores_sum_and_max():
    torch.manual_seed(0)
    W = torch.randn(8, 64)
    U = torch.triu(torch.rand(64, 64) + 0.5)
    s = W ** 2 / torch.diagonal(U) ** 2
    assert torch.allclose(weight_saliency(W, U), s)
    assert torch.allclose(word_scores(W, U), s.view(8, 4, 16).sum(-1))
    assert torch.allclose(word_scores(W, U, grouped=False), s.view(8, 4, 16).amax(-1))


def test_select_top_k_per_block():
    S = torch.tensor([[5.0, 0.0], [1.0, 3.0], [4.0, 3.0], [0.0, 2.0]])
    got = select_top_k(S, 2)
    assert got.tolist() == [[True, False], [False, True], [True, True], [False, False]]  # tie -> lower row
    assert not select_top_k(S, 0).any() and select_top_k(S, 9).all()


def test_grouping_changes_the_choice():
    """A word with one huge weight wins under -G (max); a word of many large weights wins grouped (sum)."""
    W = torch.zeros(2, 16)
    W[0, 0] = 10.0            # one spike
    W[1, :] = 3.0             # broad: sum 144 > 100
    U = torch.eye(16)
    assert select_top_k(word_scores(W, U), 1)[:, 0].tolist() == [False, True]
    assert select_top_k(word_scores(W, U, grouped=False), 1)[:, 0].tolist() == [True, False]
    assert np.issubdtype(select_top_k(word_scores(W, U), 1).dtype, np.bool_)
