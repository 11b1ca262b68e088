"""Sampling: greedy, seeds, top-k/top-p/min-p truncation, temperature, repetition penalty."""
from __future__ import annotations

import numpy as np
import pytest

from maq.errors import MAQError
from maq.runtime.sampling import Sampler, SamplingParams, apply_repeat_penalty, log_softmax


@pytest.fixture
def logits():
    return np.random.default_rng(0).standard_normal(1000).astype(np.float32) * 2


def test_greedy_is_argmax(logits):
    s = Sampler(SamplingParams.greedy())
    assert s(logits) == int(np.argmax(logits))


def test_seed_reproducible(logits):
    s1, s2 = Sampler(SamplingParams(seed=7)), Sampler(SamplingParams(seed=7))
    assert [s1(logits) for _ in range(50)] == [s2(logits) for _ in range(50)]
    s3 = Sampler(SamplingParams(seed=8))
    s4 = Sampler(SamplingParams(seed=7))
    assert [s3(logits) for _ in range(50)] != [s4(logits) for _ in range(50)]


@pytest.mark.parametrize("kw", [dict(top_k=1), dict(top_p=1e-6, top_k=0), dict(min_p=0.999, top_k=0, top_p=1.0)])
def test_truncation_to_one_is_greedy(logits, kw):
    s = Sampler(SamplingParams(temperature=1.5, seed=0, **{"top_p": 1.0, "min_p": 0.0, **kw}))
    assert {s(logits) for _ in range(30)} == {int(np.argmax(logits))}


def test_top_k_support(logits):
    s = Sampler(SamplingParams(temperature=5.0, top_k=5, top_p=1.0, min_p=0.0, seed=1))
    drawn = {s(logits) for _ in range(400)}
    assert drawn == set(np.argsort(-logits)[:5].tolist())


def test_top_p_support(logits):
    p = np.exp(log_softmax(logits).astype(np.float64))
    order = np.argsort(-p)
    n_keep = int(np.searchsorted(np.cumsum(p[order]), 0.5)) + 1
    for kw in (dict(top_k=0), dict(top_k=1000)):
        s = Sampler(SamplingParams(temperature=1.0, top_p=0.5, min_p=0.0, seed=2, **kw))
        drawn = {s(logits) for _ in range(2000)}
        assert drawn <= set(order[:n_keep].tolist()) and len(drawn) > 1


def test_min_p_support(logits):
    p = np.exp(log_softmax(logits).astype(np.float64))
    s = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.3, seed=3))
    drawn = {s(logits) for _ in range(500)}
    assert drawn == set(np.flatnonzero(p >= 0.3 * p.max()).tolist())


def test_temperature_one_follows_softmax():
    x = np.log(np.array([0.5, 0.3, 0.2], dtype=np.float32))
    s = Sampler(SamplingParams(temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=4))
    counts = np.bincount([s(x) for _ in range(6000)], minlength=3) / 6000
    assert np.allclose(counts, [0.5, 0.3, 0.2], atol=0.03)


def test_repeat_penalty():
    x = np.array([2.0, -1.0, 1.0, 0.5], dtype=np.float32)
    apply_repeat_penalty(x, [0, 1, 1], 2.0, 64)
    assert x.tolist() == [1.0, -2.0, 1.0, 0.5]
    y = np.array([2.0, 1.9], dtype=np.float32)
    assert Sampler(SamplingParams(temperature=0, repeat_penalty=1.5))(y, history=[0]) == 1


def test_bad_params():
    with pytest.raises(MAQError):
        Sampler(SamplingParams(top_p=0.0))
    with pytest.raises(MAQError):
        Sampler(SamplingParams(repeat_penalty=0.0))


@pytest.mark.parametrize("k", [1, 5, 40, 700, 5000])
def test_top_sorted_is_exact_with_ties(k):
    from maq.runtime.sampling import _top_sorted

    x = np.random.default_rng(k).standard_normal(49152).astype(np.float32) * 3
    for arr in (x, np.round(x)):                       # rounding creates many ties
        np.testing.assert_array_equal(_top_sorted(arr, k), np.argsort(-arr, kind="stable")[:k])
