"""2-bit group scale/min search through the format's encoding."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from maq.converter import scales  # noqa: E402
from maq.runtime import format as fmt  # noqa: E402


def _data(P=64, g=128, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(P, g, generator=gen) * (0.5 + torch.rand(P, 1, generator=gen))
    keep = torch.rand(P, g, generator=gen) > 0.1
    keep[0] = False                                    # a row with nothing to quantize
    wts = 0.5 + torch.rand(g, generator=gen)
    return x, keep, wts


def _err(x, keep, wts, s, lo):
    xh = scales.value(scales.codes(x, s, lo), s, lo)
    return (((x - xh) ** 2) * wts * keep).sum(1)


def test_encode_decode_matches_format():
    x, keep, wts = _data()
    s, lo = scales.search(x, keep, wts, "minmax")
    sc8, m8, d16, dmin16 = fmt.encode_group_params(s[:, None].numpy(), lo[:, None].numpy())
    d = torch.from_numpy(d16.astype(np.float32))
    dmin = torch.from_numpy(dmin16.astype(np.float32))
    sc, m, s2, lo2 = scales.encode_decode(s, lo, d, dmin)
    assert np.array_equal(sc.numpy().astype(np.uint8), sc8[:, 0])
    assert np.array_equal(m.numpy().astype(np.int8), m8[:, 0])
    ref_s, ref_lo = fmt.decode_group_params(sc8, m8, d16, dmin16)
    assert np.array_equal(s2.numpy(), ref_s[:, 0]) and np.array_equal(lo2.numpy(), ref_lo[:, 0])
    # decoded values re-encode to the same codes
    sc3, m3, s3, lo3 = scales.encode_decode(s2, lo2, d, dmin)
    assert torch.equal(sc3, sc) and torch.equal(m3, m) and torch.equal(s3, s2) and torch.equal(lo3, lo2)


def test_minmax_is_the_kept_range():
    x, keep, wts = _data()
    s, lo = scales.search(x, keep, wts, "minmax")
    big = torch.where(keep, x, torch.tensor(float("inf"))).amin(1)
    assert torch.allclose(lo[1:], big[1:]) and s[0] == 0 and lo[0] == 0


@pytest.mark.parametrize("decode", [False, True])
def test_clip_never_worse_than_minmax(decode):
    x, keep, wts = _data(seed=3)
    dec = None
    if decode:
        s0, lo0 = scales.search(x, keep, wts, "minmax")
        _, _, d16, dmin16 = fmt.encode_group_params((1.2 * s0)[:, None].numpy(), (1.2 * lo0)[:, None].numpy())
        dec = (torch.from_numpy(d16.astype(np.float32)), torch.from_numpy(dmin16.astype(np.float32)))
    sm, lm = scales.search(x, keep, wts, "minmax", dec)
    sc, lc = scales.search(x, keep, wts, "clip", dec)
    em, ec = _err(x, keep, wts, sm, lm), _err(x, keep, wts, sc, lc)
    assert torch.all(ec <= em + 1e-7)
    assert ec.sum() < 0.8 * em.sum()   # 2-bit: clipping the tails pays off on Gaussian data


@pytest.mark.parametrize("decode", [False, True])
def test_many_rows_go_through_in_slices(decode):
    """More than SEARCH_ROWS rows: searched slice by slice, each row's result as if searched alone."""
    n = scales.SEARCH_ROWS + 300
    x, keep, _ = _data(P=n, g=32, seed=5)
    wts = 0.5 + torch.rand(n, 32, generator=torch.Generator().manual_seed(6))      # per-row weights are sliced too
    dec = None
    if decode:
        dec = (torch.linspace(0.005, 0.02, n), torch.linspace(0.01, 0.03, n))
    s, lo = scales.search(x, keep, wts, "clip", dec, qmax=7)
    for rows in (slice(0, 50), slice(n - 50, n), slice(scales.SEARCH_ROWS - 5, scales.SEARCH_ROWS + 5)):
        d = None if dec is None else tuple(t[rows] for t in dec)
        s1, lo1 = scales.search(x[rows], keep[rows], wts[rows], "clip", d, qmax=7)
        assert torch.equal(s[rows], s1) and torch.equal(lo[rows], lo1)
