"""GPTQ for MAQ tensors (MAQ2 / MAQ3 / MAQ4): one object per layer input holding H, one ``quantize`` method per weight.

Column order, blocks of B columns, error E_j = (w_j − q_j)/U_jj propagated to the rest of the block with
U_j,j+1: and to all later columns after each block (GPTQ, Frantar et al. 2022). What MAQ adds:
- salient words ([P, T/16] bitmap): each 4-input span of a salient word is one int8 mean c·dsal;
  with ``salient_feedback`` the mean is taken from the already-compensated weights when GPTQ reaches the span
  and the salient entries' errors are propagated like any other; without it (the paper's literal order) the
  means come from the original weights and salient errors are not propagated;
- 2-bit groups of G inputs: (sc, m) chosen by ``scales.fit_group`` when GPTQ reaches the group, on the
  compensated weights, through the row scales (d, dmin) fixed up front — the quantized values GPTQ propagates
  are exactly the values ``format.dequantize`` reads back;
- MAQ3 / MAQ4 (``bits`` 3 / 4): the same sweep with codes 0..7 / 0..15 and no salient words;
- salient coding ``int8`` (``cfg.n_salient`` words, the tensor's top-N by saliency): when GPTQ reaches a salient
  word its fp16 scale is taken from the compensated weights (max |w| / 127), each column is rounded to int8 with it
  and its error is propagated like any other (format section 9); the row's dsal is 0;
- ``word_choice="error"``: the K selected words per 16-input block are only candidates; when GPTQ reaches a
  candidate word it keeps the int8 means only in rows where they give a lower H-diag-weighted error than the
  2-bit codes (with the group's scale/min) on the compensated weights; ``never_worse`` then also runs the plain
  all-2-bit pass and keeps whichever has the lower Hessian-weighted error, so salient words never make a layer
  worse than all-2-bit.
"""
from __future__ import annotations

import contextlib
import dataclasses

import numpy as np
import torch

from maq.converter import scales
from maq.converter.hessian import HessianAccumulator, PreparedHessian, prepare, weighted_error
from maq.converter.saliency import select_top_k, select_top_n, word_scores
from maq.runtime import format as fmt

W16 = fmt.WORD_WEIGHTS
SPAN = fmt.MEAN_SPAN


@dataclasses.dataclass
class QuantConfig:
    """How one weight is quantized (the converter's options reduced to one layer)."""

    G: int = fmt.DEFAULT_GROUP          # 2-bit scale group
    block: int = 128                    # GPTQ column block B (a multiple of G)
    damp: float = 0.01                  # λ = damp · mean diag(H)
    top_k: int = 0                      # salient words per 16-input block
    grouped: bool = True                # False: -G (rank words by their single most salient weight)
    salient_feedback: bool = True
    scale_search: str = "clip"          # "clip" | "minmax"
    headroom: float = 1.0               # row scales sized at headroom x the original weights' largest group
    compensate: bool = True             # False: no GPTQ error propagation (RTN with the same machinery)
    refit_rows: bool = False            # second GPTQ pass with row scales sized on what the first pass met
    bits: int = 2                       # code width: 2 (MAQ2, salient words allowed), 3 (MAQ3), 4 (MAQ4)
    word_choice: str = "all"            # "all": every selected word is salient; "error": only where it helps
    never_worse: bool = False           # also run the all-2-bit pass, keep the lower H-weighted error
    salient_coding: str = fmt.SALIENT_MEAN4   # "int8": salient words keep 16 int8 codes (format section 9)
    n_salient: int = 0                  # int8 coding: salient words of the tensor (global top-N by saliency)

    @property
    def qmax(self) -> int:
        return (1 << self.bits) - 1


@dataclasses.dataclass
class LayerResult:
    """A quantized weight: the stored tensor, its dequantized values, the bitmap and the H-weighted errors."""

    tensor: fmt.MAQTensor | None   # None: stored as Q8_0 (pipeline.q8_0_result)
    Q: torch.Tensor            # [P, T] float32, == format.dequantize(tensor)
    salient: np.ndarray        # bool [P, T/16]
    err: float = float("nan")  # Σ (w-q) H (w-q)ᵀ
    err_rtn: float = float("nan")
    ref: float = float("nan")  # Σ w H wᵀ
    nbytes: int = 0            # stored bytes when tensor is None
    encoded: np.ndarray | None = None   # the Q8_0 bytes when tensor is None


@contextlib.contextmanager
def single_thread():
    """GPTQ's column loop is thousands of small ops: one thread avoids the intra-op threading overhead, which
    multiplies the run time several times over on a busy machine."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def quantize_maq(W: torch.Tensor, H: torch.Tensor, cfg: QuantConfig,
                 prepared: PreparedHessian | None = None) -> LayerResult:
    """W [P, T] float32, H [T, T] = 2XᵀX/n (undamped) -> LayerResult. Deterministic for given inputs.
    ``prepared``: ``hessian.prepare(H, cfg.damp)`` where the caller already has it (weights sharing one input)."""
    if W.device.type == "cpu":
        with single_thread():
            return _quantize_maq(W, H, cfg, prepared)
    return _quantize_maq(W, H, cfg, prepared)


@dataclasses.dataclass
class _Pass:
    """Codes of one GPTQ pass and the float parameters the pass would have wanted (for the row-scale refit)."""

    codes: torch.Tensor       # uint8 [P, T]
    mcodes: torch.Tensor      # int8 [P, T/4]
    sc: torch.Tensor          # uint8 [P, ng]
    m: torch.Tensor           # int8 [P, ng]
    Q: torch.Tensor           # float32 [P, T]
    want_s: torch.Tensor      # float32 [P, ng]: unencoded best scale of each group on the weights GPTQ saw
    want_lo: torch.Tensor     # float32 [P, ng]
    want_mean: torch.Tensor   # float32 [P, T/4]: the salient means GPTQ saw (0 elsewhere)
    salient: np.ndarray       # bool [P, T/16]: the words stored as int8 means
    s8: torch.Tensor | None = None      # int8 coding: int8 [P, T] codes of salient inputs
    ws: torch.Tensor | None = None      # int8 coding: float32 [P, T/16] word scales (fp16 values)


@dataclasses.dataclass
class _Carry:
    """What the column sweep carries from column to column (float32 [P] each)."""

    s: torch.Tensor | None = None       # the current scale group's (s, lo), refit every G columns
    lo: torch.Tensor | None = None
    ws: torch.Tensor | None = None      # int8 coding: the current word's fp16 scale (0: not salient), every 16
    safe_ws: torch.Tensor | None = None
    qsal: torch.Tensor | None = None    # the value a salient weight of this column takes


def _new_pass(P: int, T: int, ng: int, dev: torch.device, int8: bool) -> _Pass:
    """A zeroed _Pass for a [P, T] weight with ng scale groups (int8 coding: with s8 and ws)."""
    out = _Pass(codes=torch.zeros(P, T, dtype=torch.uint8, device=dev),
                mcodes=torch.zeros(P, T // SPAN, dtype=torch.int8, device=dev),
                sc=torch.zeros(P, ng, dtype=torch.uint8, device=dev),
                m=torch.zeros(P, ng, dtype=torch.int8, device=dev),
                Q=torch.zeros(P, T, dtype=torch.float32, device=dev),
                want_s=torch.zeros(P, ng, device=dev), want_lo=torch.zeros(P, ng, device=dev),
                want_mean=torch.zeros(P, T // SPAN, device=dev), salient=np.zeros(0, dtype=bool))
    if int8:
        out.s8 = torch.zeros(P, T, dtype=torch.int8, device=dev)
        out.ws = torch.zeros(P, T // W16, dtype=torch.float32, device=dev)
    return out


def _fit_group(out: _Pass, cur: _Carry, W1: torch.Tensor, j: int, col: int, T: int, keep: torch.Tensor,
               wts: torch.Tensor, d: torch.Tensor, dmin: torch.Tensor, cfg: QuantConfig) -> None:
    """Every G columns: fit the scale group starting at column col (W1[:, j]) on the compensated weights."""
    g = col // cfg.G
    ge = min(col + cfg.G, T) - (col - j)
    gx, gk, gw = W1[:, j:ge], keep[:, col:col + ge - j], wts[col:col + ge - j]
    gsc, gm, cur.s, cur.lo = scales.fit_group(gx, gk, gw, d, dmin, cfg.scale_search, cfg.qmax)
    out.sc[:, g], out.m[:, g] = gsc, gm
    if cfg.refit_rows:
        out.want_s[:, g], out.want_lo[:, g] = scales.search(gx, gk, gw, cfg.scale_search, qmax=cfg.qmax)


def _choose_word(sal_in: torch.Tensor, cur: _Carry, W1: torch.Tensor, j: int, col: int, wts: torch.Tensor,
                 dsal: torch.Tensor, safe_dsal: torch.Tensor) -> None:
    """Every 16 columns (word_choice "error"): keep a candidate word salient only where its means cost less."""
    cand = sal_in[:, col]
    if bool(cand.any()):
        sal_in[:, col:col + W16] = (cand & _means_help(W1[:, j:j + W16], wts[col:col + W16], cur.s, cur.lo, dsal,
                                                       safe_dsal))[:, None]


def _int8_word_scale(out: _Pass, cur: _Carry, W1: torch.Tensor, j: int, col: int, srow: torch.Tensor) -> None:
    """Every 16 columns (int8 coding): the word's fp16 scale from its (compensated) weights now; later columns of
    the word move a little with the feedback and clip at +-127 if they outgrow it."""
    dev = W1.device
    amax = W1[:, j:j + W16].abs().amax(1)
    ws = torch.from_numpy(fmt._f16_up((amax / fmt.M_MAX).cpu().numpy()).astype(np.float32)).to(dev)
    cur.ws = torch.where(srow, ws, torch.zeros_like(ws))
    out.ws[:, col // W16] = cur.ws
    cur.safe_ws = torch.where(cur.ws > 0, cur.ws, torch.ones_like(cur.ws))


def _int8_code(out: _Pass, cur: _Carry, W1: torch.Tensor, j: int, col: int, srow: torch.Tensor) -> None:
    """Every column (int8 coding): the salient weight's int8 code and value."""
    c8 = torch.clamp(torch.round(W1[:, j] / cur.safe_ws), -fmt.M_MAX, fmt.M_MAX)
    c8 = torch.where(srow & (cur.ws > 0), c8, torch.zeros_like(c8))
    out.s8[:, col] = c8.to(torch.int8)
    cur.qsal = cur.ws * c8


def _mean_code(out: _Pass, cur: _Carry, W0: torch.Tensor, W1: torch.Tensor, j: int, col: int, srow: torch.Tensor,
               dsal: torch.Tensor, safe_dsal: torch.Tensor, feedback: bool) -> None:
    """Every 4 columns (means coding): the salient span's int8 mean code and value."""
    src = W1[:, j:j + SPAN] if feedback else W0[:, col:col + SPAN]
    mean = src.mean(-1)
    out.want_mean[:, col // SPAN] = torch.where(srow, mean, torch.zeros_like(mean))
    c = torch.clamp(torch.round(mean / safe_dsal), -fmt.M_MAX, fmt.M_MAX)
    c = torch.where(srow & (dsal > 0), c, torch.zeros_like(c))
    out.mcodes[:, col // SPAN] = c.to(torch.int8)
    cur.qsal = dsal * c


def _code_column(out: _Pass, cur: _Carry, w: torch.Tensor, col: int, srow: torch.Tensor | None,
                 qmax: int) -> torch.Tensor:
    """Every column: the 2-bit (or wider) code of w [P] in the current group; returns its value q [P].
    srow None: the tensor has no salient words (every row takes the code)."""
    q2 = scales.codes(w[:, None], cur.s, cur.lo, qmax)[:, 0]
    v2 = cur.s * q2 + cur.lo
    if srow is None:
        out.codes[:, col] = q2.to(torch.uint8)
        out.Q[:, col] = v2
        return v2
    q = torch.where(srow, cur.qsal, v2)
    out.codes[:, col] = torch.where(srow, torch.zeros_like(q2), q2).to(torch.uint8)
    out.Q[:, col] = q
    return q


def _propagate(W1: torch.Tensor, j: int, q: torch.Tensor, U1: torch.Tensor, srow: torch.Tensor | None,
               feedback: bool) -> torch.Tensor:
    """GPTQ's update: spread column j's rounding error over the block's later columns; returns the error [P]."""
    e = (W1[:, j] - q) / U1[j, j]
    if not feedback and srow is not None:
        e = torch.where(srow, torch.zeros_like(e), e)
    W1[:, j:] -= e[:, None] * U1[j, j:][None, :]
    return e


def _gptq_pass(W0: torch.Tensor, Wz: torch.Tensor, U: torch.Tensor, sal_in: torch.Tensor, wts: torch.Tensor,
               d: torch.Tensor, dmin: torch.Tensor, dsal: torch.Tensor, cfg: QuantConfig) -> _Pass:
    """One GPTQ sweep over the columns with fixed row scales (d, dmin, dsal float32 [P])."""
    P, T = Wz.shape
    dev = Wz.device
    keep = ~sal_in
    int8 = cfg.salient_coding == fmt.SALIENT_INT8
    out = _new_pass(P, T, fmt.n_groups(T, cfg.G), dev, int8)
    cur = _Carry(qsal=torch.zeros(P, dtype=torch.float32, device=dev))
    if int8:
        cur.ws = torch.zeros(P, dtype=torch.float32, device=dev)
        cur.safe_ws = torch.ones(P, dtype=torch.float32, device=dev)
    any_salient = bool(sal_in.any())
    choose = cfg.word_choice == "error" and any_salient and not int8
    if choose:
        sal_in = sal_in.clone()     # candidates in, decisions out (this pass only)
    Wq = Wz.clone()
    safe_dsal = torch.where(dsal > 0, dsal, torch.ones_like(dsal))
    B = cfg.block
    for i1 in range(0, T, B):
        i2 = min(i1 + B, T)
        W1 = Wq[:, i1:i2].clone()
        Err1 = torch.zeros(P, i2 - i1, dtype=torch.float32, device=dev)
        U1 = U[i1:i2, i1:i2]
        for j in range(i2 - i1):
            col = i1 + j
            if col % cfg.G == 0:
                _fit_group(out, cur, W1, j, col, T, keep, wts, d, dmin, cfg)
            if choose and col % W16 == 0:
                _choose_word(sal_in, cur, W1, j, col, wts, dsal, safe_dsal)
            srow = sal_in[:, col] if any_salient else None   # None: no salient word, nothing of theirs to code
            if srow is not None and int8:
                if col % W16 == 0:
                    _int8_word_scale(out, cur, W1, j, col, srow)
                _int8_code(out, cur, W1, j, col, srow)
            elif srow is not None and col % SPAN == 0:
                _mean_code(out, cur, W0, W1, j, col, srow, dsal, safe_dsal, cfg.salient_feedback)
            q = _code_column(out, cur, W1[:, j], col, srow, cfg.qmax)
            if cfg.compensate:
                Err1[:, j] = _propagate(W1, j, q, U1, srow, cfg.salient_feedback)
        if cfg.compensate and i2 < T:
            Wq[:, i2:] -= Err1 @ U[i1:i2, i2:]
    out.salient = sal_in[:, ::W16].cpu().numpy()
    return out


def _means_help(x: torch.Tensor, wts: torch.Tensor, s: torch.Tensor, lo: torch.Tensor, dsal: torch.Tensor,
                safe_dsal: torch.Tensor) -> torch.Tensor:
    """bool [P]: rows where the word x [P, 16] costs less (Σ wts·err²) as 4 int8 means than as 2-bit codes."""
    P = x.shape[0]
    v2 = scales.value(scales.codes(x, s, lo), s, lo)
    e2 = (((x - v2) ** 2) * wts[None, :]).sum(1)
    c = torch.clamp(torch.round(x.view(P, W16 // SPAN, SPAN).mean(-1) / safe_dsal[:, None]), -fmt.M_MAX, fmt.M_MAX)
    v8 = (dsal[:, None] * c).repeat_interleave(SPAN, dim=1)
    e8 = (((x - v8) ** 2) * wts[None, :]).sum(1)
    return (e8 < e2) & (dsal > 0)


def _row_scales_from(s: torch.Tensor, lo: torch.Tensor, means: torch.Tensor, salient: np.ndarray, headroom: float):
    """(d16, dmin16, dsal16) numpy float16 [P] sized to cover group params (s, lo) and salient means."""
    _, _, d16, dmin16 = fmt.encode_group_params((s * headroom).cpu().numpy(), (lo * headroom).cpu().numpy())
    _, dsal16 = fmt.encode_means((means * headroom).cpu().numpy(), salient)
    return d16, dmin16, dsal16


def _quantize_maq(W: torch.Tensor, H: torch.Tensor, cfg: QuantConfig, ph: PreparedHessian | None) -> LayerResult:
    if cfg.bits != 2 and (cfg.top_k or cfg.n_salient):
        raise ValueError(f"{fmt.TYPE_OF_BITS[cfg.bits]} has no salient words (top_k={cfg.top_k})")
    if ph is None or ph.H.device != W.device:
        ph = prepare(H.to(W.device), cfg.damp)
    res = _quantize_once(W, ph, cfg)
    if cfg.never_worse and cfg.top_k > 0 and cfg.salient_coding != fmt.SALIENT_INT8:
        plain = _quantize_once(W, ph, dataclasses.replace(cfg, top_k=0, refit_rows=False, word_choice="all"))
        if plain.err <= res.err:
            return plain
    return res


def _quantize_once(W: torch.Tensor, ph: PreparedHessian, cfg: QuantConfig) -> LayerResult:
    W0 = W.float()
    P, T = W0.shape
    fmt.check_shape(T, P, cfg.G, "quantize_maq", cfg.bits)
    dev = W0.device
    U = ph.U
    Wz = W0.clone()
    Wz[:, ph.dead] = 0.0

    # salient words: bitmap from the original weights
    int8 = cfg.salient_coding == fmt.SALIENT_INT8
    if int8:
        salient = select_top_n(word_scores(Wz, U, grouped=cfg.grouped), cfg.n_salient)
    else:
        salient = select_top_k(word_scores(Wz, U, grouped=cfg.grouped), cfg.top_k)
    sal_in = torch.from_numpy(salient).to(dev).repeat_interleave(W16, dim=1)      # [P, T]
    wts = 1.0 / torch.diagonal(U).pow(2)                                          # GPTQ's per-column loss weight

    # row scales sized on the original weights (group search per group, salient means), times headroom
    ng = fmt.n_groups(T, cfg.G)
    s0 = torch.zeros(P, ng, device=dev)
    lo0 = torch.zeros(P, ng, device=dev)
    for g in range(ng):
        sl = slice(g * cfg.G, min((g + 1) * cfg.G, T))
        s0[:, g], lo0[:, g] = scales.search(Wz[:, sl], ~sal_in[:, sl], wts[sl], cfg.scale_search, qmax=cfg.qmax)
    means0 = Wz.view(P, T // SPAN, SPAN).mean(-1)
    rows = _row_scales_from(s0, lo0, means0, salient, cfg.headroom)
    if int8:
        rows = (rows[0], rows[1], np.zeros(P, dtype=np.float16))

    def run(rows16):
        d, dmin, dsal = (torch.from_numpy(r.astype(np.float32)).to(dev) for r in rows16)
        return _gptq_pass(W0, Wz, U, sal_in, wts, d, dmin, dsal, cfg)

    ps = run(rows)
    if cfg.refit_rows and not int8:
        # second pass with row scales sized on what the first pass met (GPTQ's updates widen later groups)
        rows2 = _row_scales_from(torch.maximum(ps.want_s, s0), torch.where(ps.want_lo.abs() > lo0.abs(),
                                 ps.want_lo, lo0), torch.where(ps.want_mean.abs() > means0.abs(), ps.want_mean,
                                 means0), salient, cfg.headroom)
        ps2 = run(rows2)
        if weighted_error(W0 - ps2.Q, ph.H) <= weighted_error(W0 - ps.Q, ph.H):
            ps, rows = ps2, rows2

    d16, dmin16, dsal16 = rows
    salient = ps.salient
    s8 = ws16 = None
    if int8 and salient.any():
        s8, ws16 = ps.s8.cpu().numpy(), ps.ws.cpu().numpy().astype(np.float16)
    t = fmt.pack(ps.codes.cpu().numpy(), ps.mcodes.cpu().numpy(), salient, ps.sc.cpu().numpy(),
                 ps.m.cpu().numpy(), d16, dmin16, dsal16, G=cfg.G, bits=cfg.bits, sal8=s8, wscale=ws16)
    res = LayerResult(tensor=t, Q=ps.Q, salient=salient)
    Hm = ph.H
    res.err = weighted_error(W0 - ps.Q, Hm)
    res.ref = weighted_error(W0, Hm)
    rtn = torch.from_numpy(fmt.dequantize(fmt.quantize_rtn(W0.cpu().numpy(), salient, cfg.G, cfg.bits))).to(dev)
    res.err_rtn = weighted_error(W0 - rtn, Hm)
    return res


class GPTQ:
    """One layer input: accumulates H from calibration activations, quantizes the weights that read it."""

    def __init__(self, T: int, device: torch.device | str = "cpu", pool=None):
        self.acc = HessianAccumulator(T, device, pool)   # pool: hessian.column_pool's threads, or None
        self._prepared: dict = {}                         # (damp, transform key) -> (H, PreparedHessian)

    def add_batch(self, x: torch.Tensor) -> None:
        """x [..., T] activations entering the layer(s)."""
        self.acc.add(x)
        self._prepared.clear()

    def prepared(self, damp: float, key=None, transform=None) -> tuple[torch.Tensor, PreparedHessian]:
        """(H, hessian.prepare(H, damp)) with H = transform(hessian()) (e.g. the rotated H'), computed once per
        (damp, key) for the weights that read this input (q / k / v, gate / up)."""
        if (damp, key) not in self._prepared:
            H = self.hessian() if transform is None else transform(self.hessian())
            self._prepared[(damp, key)] = (H, prepare(H, damp))
        return self._prepared[(damp, key)]

    @property
    def nsamples(self) -> int:
        return self.acc.n

    def hessian(self) -> torch.Tensor:
        return self.acc.hessian()

    def quantize(self, W: torch.Tensor, cfg: QuantConfig) -> LayerResult:
        """W [P, T] -> LayerResult (MAQ tensor + dequantized weights + errors)."""
        H, ph = self.prepared(cfg.damp)
        return quantize_maq(W, H, cfg, ph)
