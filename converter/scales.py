"""2-bit group scale/min and the row scales, always through the format's own encoding.

A 2-bit group (G inputs of one row) decodes as value = s·q + lo, q in 0..3, with s = d·sc and lo = dmin·m
(sc uint8, m int8 per group; d, dmin float16 per row: ``format.encode_group_params/decode_group_params``).
The row scales are fixed before a GPTQ pass starts (gptq.py); every group's codes are then chosen by
``fit_group`` with the decoded values, so ``format.dequantize`` reproduces exactly what GPTQ assumed.

Search ("clip"): candidate ranges [lo, hi] shrunk from the group's min/max by fractions (a, b) of its width —
first symmetric a = b in 0..0.45, then the 3x3 neighbourhood of the best — each encoded/decoded and scored by
Σ_j w_j·(x_j − x̂_j)² over the group's non-salient inputs (w_j = 1/U_jj², GPTQ's per-column loss weight),
then one weighted least-squares refit of (s, lo) for the chosen codes. "minmax": the group's min and max.
"""
from __future__ import annotations

import torch

from maq.runtime import format as fmt

SEARCH_ROWS = 8192     # rows per slice of one search: 10 candidates x 8192 x G floats per temporary
SYM_GRID = tuple(i * 0.05 for i in range(10))      # 0 .. 0.45
NEIGHBOUR = (-0.05, 0.0, 0.05)


def _minmax(x: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-row min/max over kept entries; rows with nothing kept -> (0, 0)."""
    inf = torch.tensor(float("inf"), dtype=x.dtype, device=x.device)
    mn = torch.where(keep, x, inf).amin(dim=1)
    mx = torch.where(keep, x, -inf).amax(dim=1)
    empty = ~keep.any(dim=1)
    mn = torch.where(empty, torch.zeros_like(mn), mn)
    mx = torch.where(empty, torch.zeros_like(mx), mx)
    return mn, mx


def codes(x: torch.Tensor, s: torch.Tensor, lo: torch.Tensor, qmax: int = fmt.CODE_MAX) -> torch.Tensor:
    """Codes (float 0..qmax; 3 for 2-bit words) of x [..., P, g] for s, lo [..., P]; s == 0 -> code 0."""
    pos = s > 0
    safe = torch.where(pos, s, torch.ones_like(s))
    q = (x - lo[..., None]).div_(safe[..., None]).round_().clamp_(0, qmax)
    return q.mul_(pos[..., None])


def value(q: torch.Tensor, s: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
    """s·q + lo in float32, the same two roundings as ``format.dequantize``."""
    return (s[..., None] * q).add_(lo[..., None])


def _werr(x: torch.Tensor, q: torch.Tensor, s: torch.Tensor, lo: torch.Tensor, wk: torch.Tensor) -> torch.Tensor:
    """Σ_g wk·(x − (s·q + lo))² [..., P] for codes q [..., P, g] (overwritten: in place, one temporary)."""
    d = q.mul_(s[..., None]).add_(lo[..., None]).sub_(x)     # x̂ − x: its square is (x − x̂)²
    return d.mul_(d).mul_(wk).sum(-1)


def encode_decode(s: torch.Tensor, lo: torch.Tensor, d: torch.Tensor, dmin: torch.Tensor):
    """Float (s, lo) [..., P] -> codes (sc, m) for row scales d, dmin [P] (float32 values of the fp16 ones),
    and the decoded (s', lo') the format reproduces. sc is clipped to 0..255, m to -127..127."""
    dp, mp = d > 0, dmin > 0
    sc = torch.clamp(torch.round(s / torch.where(dp, d, torch.ones_like(d))), 0, fmt.SC_MAX) * dp
    m = torch.clamp(torch.round(lo / torch.where(mp, dmin, torch.ones_like(dmin))), -fmt.M_MAX, fmt.M_MAX) * mp
    return sc, m, d * sc, dmin * m


def _eval(x, wk, mn, width, a, b, decode, qmax=fmt.CODE_MAX):
    """Candidates a, b [C, P] (fractions clipped from the low/high end) -> error [C, P], s, lo [C, P]."""
    lo = mn + a * width
    s = torch.clamp(width * (1.0 - a - b), min=0.0) / qmax
    if decode is not None:
        _, _, s, lo = encode_decode(s, lo, *decode)
    return _werr(x, codes(x, s, lo, qmax), s, lo, wk), s, lo


def _first_min(e: torch.Tensor) -> torch.Tensor:
    """argmin over dim 0 of e [C, P] (the first candidate among equals), reduced along contiguous rows."""
    return torch.argmin(e.t().contiguous(), dim=1)


def search(x: torch.Tensor, keep: torch.Tensor, wts: torch.Tensor, method: str = "clip",
           decode: tuple[torch.Tensor, torch.Tensor] | None = None,
           qmax: int = fmt.CODE_MAX) -> tuple[torch.Tensor, torch.Tensor]:
    """Best (s, lo) [P] for group x [P, g] (kept entries only; keep bool [P, g]; wts [g] or [P, g] >= 0) with codes
    0..qmax (3: MAQ2's 2-bit words, 7: MAQ3, 15: MAQ4).

    decode=(d, dmin): candidates are scored after encoding/decoding with those row scales and the returned
    (s, lo) are the decoded values; None: plain float search (used to size the row scales).
    Ties keep the earlier candidate (min/max first). Rows are independent: many rows go through in slices of
    SEARCH_ROWS (the candidates' temporaries stay in cache; the same result per row).
    """
    if x.shape[0] > SEARCH_ROWS:
        parts = [search(x[i:i + SEARCH_ROWS], keep[i:i + SEARCH_ROWS],
                        wts[i:i + SEARCH_ROWS] if wts.dim() == 2 else wts, method,
                        None if decode is None else tuple(t[i:i + SEARCH_ROWS] for t in decode), qmax)
                 for i in range(0, x.shape[0], SEARCH_ROWS)]
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    x = x.float()
    wk = keep.float() * (wts if wts.dim() == 2 else wts[None, :])      # wts [g] or per row [P, g]
    mn, mx = _minmax(x, keep)
    width = mx - mn
    P = x.shape[0]
    zero = torch.zeros(1, P, dtype=x.dtype, device=x.device)
    if method == "minmax":
        _, s, lo = _eval(x, wk, mn, width, zero, zero, decode, qmax)
        return s[0], lo[0]
    # symmetric shrink
    sym = torch.tensor(SYM_GRID, dtype=x.dtype, device=x.device)[:, None].expand(-1, P)
    e1, s1, lo1 = _eval(x, wk, mn, width, sym, sym, decode, qmax)
    k = _first_min(e1)                                             # first minimum: ties keep min/max
    ar = torch.arange(P, device=x.device)
    best_e, best_s, best_lo = e1[k, ar], s1[k, ar], lo1[k, ar]
    ca = sym[k, ar]
    # 3x3 neighbourhood of the best (a, b)
    offs = [(da, db) for da in NEIGHBOUR for db in NEIGHBOUR if da or db]
    a2 = torch.stack([torch.clamp(ca + da, min=0.0) for da, _ in offs])
    b2 = torch.stack([torch.clamp(ca + db, min=0.0) for _, db in offs])
    e2, s2, lo2 = _eval(x, wk, mn, width, a2, b2, decode, qmax)
    e2 = torch.where(a2 + b2 < 0.95, e2, torch.full_like(e2, float("inf")))
    k2 = _first_min(e2)
    e2b, s2b, lo2b = e2[k2, ar], s2[k2, ar], lo2[k2, ar]
    better = e2b < best_e
    best_e = torch.where(better, e2b, best_e)
    best_s = torch.where(better, s2b, best_s)
    best_lo = torch.where(better, lo2b, best_lo)
    # one weighted least-squares refit of (s, lo) for the chosen codes
    q = codes(x, best_s, best_lo, qmax)
    sw, sq, sqq = wk.sum(1), (wk * q).sum(1), (wk * q * q).sum(1)
    sx, sqx = (wk * x).sum(1), (wk * q * x).sum(1)
    det = sw * sqq - sq * sq
    ok = det > 1e-12 * torch.clamp(sw * sqq, min=1e-30)
    safe = torch.where(ok, det, torch.ones_like(det))
    s_ls = torch.clamp(torch.where(ok, (sw * sqx - sq * sx) / safe, best_s), min=0.0)
    lo_ls = torch.where(ok, (sqq * sx - sq * sqx) / safe, best_lo)
    if decode is not None:
        _, _, s_ls, lo_ls = encode_decode(s_ls, lo_ls, *decode)
    e = _werr(x, codes(x, s_ls, lo_ls, qmax), s_ls, lo_ls, wk)
    better = e < best_e
    return torch.where(better, s_ls, best_s), torch.where(better, lo_ls, best_lo)


def fit_group(x: torch.Tensor, keep: torch.Tensor, wts: torch.Tensor, d: torch.Tensor, dmin: torch.Tensor,
              method: str, qmax: int = fmt.CODE_MAX) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Codes (sc uint8, m int8) [P] and decoded (s, lo) float32 [P] of one group x [P, g] (codes 0..qmax)."""
    s, lo = search(x, keep, wts, method, decode=(d, dmin), qmax=qmax)
    sc, m, s_dec, lo_dec = encode_decode(s, lo, d, dmin)
    # s, lo are already decoded values: re-encoding them is exact, so (s_dec, lo_dec) == (s, lo)
    return sc.to(torch.uint8), m.to(torch.int8), s_dec, lo_dec
