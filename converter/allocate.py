"""``--target-bpw B``: choose every linear tensor's storage for the lowest predicted loss under a size budget.

Candidates per tensor (``candidates()``): MAQ2, MAQ3, MAQ4 with scale groups G = 128, 64, 32, and Q8_0 (8.5 bits);
their honest sizes come from ``format.Layout`` (every byte of every part) and the GGUF Q8_0 block. With
``--incoherence`` every MAQ candidate also comes rotated (``rot``: scored on W Rᵀ against R H Rᵀ, the same error in
the original basis), so the rotation is chosen per tensor.

Sensitivity (``measure``): the float model runs forward and backward over a few calibration windows
(``SENS_WINDOWS`` x ``SENS_SEQLEN`` tokens from the same samples as the quantization). For every linear y = W x:
  - H = 2/n Σ x xᵀ over the tokens (its input Hessian, as GPTQ uses),
  - f [P] = 1/n Σ (∂loss/∂y_p)² (the diagonal empirical Fisher of its outputs, loss = next-token cross-entropy).
A weight error D = W − Ŵ changes the outputs by δy = D x, and to second order the loss by ½ Σ_tokens δyᵀ F δy;
with F ≈ diag(f) this is ∝ Σ_p f_p · (D H Dᵀ)_pp, the Fisher-weighted output error: the predicted cost of a
candidate, computed for each candidate on the tensor quantized by round-to-nearest with the clipping search
(``scales.search``; the GPTQ pass that follows lowers every error further).

Allocation (``choose``): every tensor starts at its smallest candidate; upgrades along each tensor's lower convex
hull of (bytes, predicted cost) are taken greedily by cost saved per byte while they fit the budget, then any
single move that still lowers the cost and fits is taken. The budget is B x (weights of the linear tensors) / 8
bytes, so the file's honest bits/weight over the linear tensors is <= B.

Memory: one H per layer input for the whole model (n_layer x (3 D² + F²) floats: 0.4 GB for SmolLM2) and the
float model with one window's activations for the backward pass.
"""
from __future__ import annotations

import dataclasses
import heapq
import logging
import time

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

from maq.converter import block as B
from maq.converter import incoherence
from maq.converter import gguf_export
from maq.converter import scales
from maq.converter.hessian import column_pool, pinned_addmm_
from maq.converter.source import LINEAR_KINDS, ROPE_FREQS, Source, block_name
from maq.runtime import format as fmt

log = logging.getLogger(__name__)

SENS_WINDOWS = 4        # calibration windows for the sensitivity pass (at most)
SENS_SEQLEN = 512       # tokens per window (at most)
SCORE_ROWS = 128        # output rows (evenly spaced) on which each candidate's cost is measured, scaled to all rows
Q8_0_BLOCK, Q8_0_BYTES = GGML_QUANT_SIZES[GGMLQuantizationType.Q8_0]     # 32 weights, 34 bytes


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One storage a linear tensor can get: ``storage`` "maq2" | "maq3" | "maq4" | "q8_0", MAQ group G."""

    storage: str
    group: int = fmt.DEFAULT_GROUP
    sal: float = 0.0            # MAQ2 with the int8 salient coding: this share of the tensor's words salient
    rot: bool = False           # --incoherence: stored rotated along its inputs (FORMAT.md section 10)

    @property
    def name(self) -> str:
        if self.storage == "q8_0":
            return self.storage
        return (f"{self.storage}/g{self.group}" + (f"+int8:{self.sal:.1%}" if self.sal else "")
                + ("+had" if self.rot else ""))

    def n_salient8(self, P: int, T: int) -> int:
        """Int8 salient words this candidate stores in a [P, T] tensor (0 without the int8 coding)."""
        return max(1, round(self.sal * P * fmt.n_words(T))) if self.sal else 0

    @property
    def bits(self) -> int:
        return fmt.BITS_OF_TYPE.get(self.storage, 8)

    def nbytes(self, P: int, T: int) -> int:
        if self.storage == "q8_0":
            return P * (T // Q8_0_BLOCK) * Q8_0_BYTES
        return fmt.Layout(T, P, self.group, self.bits, self.n_salient8(P, T)).nbytes

    def fits(self, P: int, T: int) -> bool:
        return T % (Q8_0_BLOCK if self.storage == "q8_0" else fmt.WORD_WEIGHTS) == 0


SALIENT_SHARES = (0.005, 0.01, 0.02, 0.04)   # int8 salient candidates: share of a MAQ2 tensor's words


def candidates(int8: bool = False, rot: bool = False) -> list[Candidate]:
    """The storages ``--target-bpw`` chooses from; with ``int8`` also MAQ2 with SALIENT_SHARES int8 salient words;
    with ``rot`` (--incoherence) every MAQ candidate also rotated: the allocation decides per tensor whether the
    rotation pays (it does not where the source's own grid fits a MAQ grid, e.g. 4-bit g32 on a Q4_1 source)."""
    base = [Candidate(t, g) for t in (fmt.TYPE_MAQ2, fmt.TYPE_MAQ3, fmt.TYPE_MAQ4) for g in (128, 64, 32)]
    sal = [Candidate(fmt.TYPE_MAQ2, g, f) for g in (128, 64, 32) for f in SALIENT_SHARES] if int8 else []
    maq = base + sal
    return maq + ([dataclasses.replace(c, rot=True) for c in maq] if rot else []) + [Candidate("q8_0")]


def min_bpw(plan) -> float:
    """Bits/weight over the linear tensors when every one is MAQ2 with G = 128 (the smallest file)."""
    nbytes = nweights = 0
    for tp in plan:
        if tp.is_linear:
            P, T = tp.shape
            nweights += P * T
            nbytes += Candidate(fmt.TYPE_MAQ2, 128).nbytes(P, T)
    return nbytes * 8 / nweights if nweights else 0.0


# ------------------------------------------------------------------------------------------------ sensitivity
@dataclasses.dataclass
class Sensitivity:
    """Per linear tensor: its input's H [T, T] (shared object between tensors reading the same input), the
    output Fisher diagonal f [P], and the tokens both were measured on."""

    H: torch.Tensor
    f: torch.Tensor
    tokens: int


class _PinnedHead(torch.autograd.Function):
    """logits = h Wᵀ (``block.linear``) whose input gradient g W — a sum over the 49k-vocabulary, which the CPU BLAS
    splits by thread count — is computed by ``hessian.pinned_addmm_``, so the Fisher diagonals of every layer below
    do not depend on --threads. W takes no gradient."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, W: torch.Tensor, pool) -> torch.Tensor:
        ctx.save_for_backward(W)
        ctx.pool = pool
        return B.linear(h, W)

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        (W,) = ctx.saved_tensors
        g2 = g.reshape(-1, g.shape[-1]).to(W.dtype)
        out = torch.zeros(g2.shape[0], W.shape[1], dtype=W.dtype, device=W.device)
        if out.device.type == "cpu":
            pinned_addmm_(out, g2, W, ctx.pool)
        else:
            out.addmm_(g2, W)
        return out.view(*g.shape[:-1], W.shape[1]), None, None


def measure(src: Source, samples: np.ndarray, device: torch.device, progress: bool = True) -> dict[str, Sensitivity]:
    """Forward + backward of the float model over at most SENS_WINDOWS x SENS_SEQLEN calibration tokens."""
    from tqdm import tqdm

    p = src.params
    win = samples[:SENS_WINDOWS, :SENS_SEQLEN]
    N, L = win.shape
    freq = torch.from_numpy(src.tensor(ROPE_FREQS)) if src.has(ROPE_FREQS) else None
    rope = B.Rope.make(p, L, device, freq)
    t = {n: torch.from_numpy(src.tensor(n)).to(device) for n in src.names()
         if n.startswith("blk.") or n in ("token_embd.weight", "output_norm.weight", "output.weight")}
    head = t.get("output.weight", t["token_embd.weight"])
    inputs = {"attn_q": "qkv", "attn_k": "qkv", "attn_v": "qkv", "attn_output": "o", "ffn_gate": "gu",
              "ffn_up": "gu", "ffn_down": "down"}
    Hsum: dict[tuple[int, str], torch.Tensor] = {}
    fsum: dict[str, torch.Tensor] = {}

    def lin(i: int, kind: str, x: torch.Tensor) -> torch.Tensor:
        key = (i, inputs[kind])
        if kind in ("attn_q", "attn_output", "ffn_gate", "ffn_down"):      # first reader of its input
            xd = x.detach().reshape(-1, x.shape[-1]).float()
            if key not in Hsum:
                Hsum[key] = torch.zeros(x.shape[-1], x.shape[-1], dtype=torch.float64, device=device)
            Hsum[key].add_((xd.t() @ xd).double())
        name = block_name(i, kind)
        y = B.linear(x, t[name])

        def hook(g: torch.Tensor, name: str = name) -> None:
            s = g.detach().reshape(-1, g.shape[-1]).double().pow(2).sum(0)
            fsum[name] = fsum[name] + s if name in fsum else s

        if y.requires_grad:
            y.register_hook(hook)
        return y

    bar = tqdm(total=N, desc="sensitivity", unit="window", disable=not progress, dynamic_ncols=True)
    t0 = time.time()
    with column_pool() as pool:   # the head's input gradient: a 49k-long sum, pinned (_PinnedHead)
        for s in range(N):
            ids = torch.from_numpy(win[s:s + 1]).to(device)
            x = t["token_embd.weight"][ids].float().requires_grad_(True)               # [1, L, D]
            hd = p.head_dim
            for i in range(p.n_layer):
                w = lambda k: t[block_name(i, k)]                                     # noqa: E731
                h = B.rms_norm(x, w("attn_norm"), p.rms_eps)
                q = rope.apply(lin(i, "attn_q", h).view(1, L, p.n_head, hd))
                k = rope.apply(lin(i, "attn_k", h).view(1, L, p.n_head_kv, hd))
                v = lin(i, "attn_v", h).view(1, L, p.n_head_kv, hd)
                o = torch.nn.functional.scaled_dot_product_attention(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True,
                    enable_gqa=p.n_head != p.n_head_kv).transpose(1, 2).reshape(1, L, p.n_head * hd)
                x = x + lin(i, "attn_output", o)
                h = B.rms_norm(x, w("ffn_norm"), p.rms_eps)
                act = torch.nn.functional.silu(lin(i, "ffn_gate", h)) * lin(i, "ffn_up", h)
                x = x + lin(i, "ffn_down", act)
            logits = _PinnedHead.apply(B.rms_norm(x, t["output_norm.weight"], p.rms_eps), head, pool)[0, :-1]
            loss = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="sum")
            loss.backward()
            bar.update(1)
    bar.close()
    n = N * L
    log.info("sensitivity: float model forward + backward on %d x %d calibration tokens in %.1f s", N, L,
             time.time() - t0)
    out = {}
    Hs = {key: (h * (2.0 / n)).float() for key, h in Hsum.items()}
    for i in range(p.n_layer):
        for kind in LINEAR_KINDS:
            name = block_name(i, kind)
            out[name] = Sensitivity(H=Hs[(i, inputs[kind])], f=(fsum[name] / n).float(), tokens=n)
    return out


def quick_quantize(W: torch.Tensor, wts: torch.Tensor, c: Candidate) -> torch.Tensor:
    """Ŵ [P, T] float32: W rounded to candidate c (MAQ: clipping search per group weighted by wts [T], then the
    format's own scale encoding; Q8_0: gguf's quantizer)."""
    if c.storage == "q8_0":
        return torch.from_numpy(gguf_export.q8_0_roundtrip(W.cpu().numpy())[1])
    P, T = W.shape
    qmax = (1 << c.bits) - 1
    G = c.group
    ng = fmt.n_groups(T, G)
    pad = ng * G - T                     # the ragged last group: padded, the padding not kept
    Wp = torch.nn.functional.pad(W, (0, pad)).view(P * ng, G)
    sal = None
    if c.sal:                            # int8 salient words: the top share by w²·H_jj, out of their groups' fits
        score = (W.pow(2) * wts[None, :]).view(P, T // fmt.WORD_WEIGHTS, fmt.WORD_WEIGHTS).sum(-1)
        from maq.converter.saliency import select_top_n
        sal = select_top_n(score, c.n_salient8(P, T))
    keep_in = torch.ones(P, T, dtype=torch.bool) if sal is None else \
        ~torch.from_numpy(sal).repeat_interleave(fmt.WORD_WEIGHTS, dim=1)
    keep = torch.nn.functional.pad(keep_in, (0, pad)).view(P * ng, G)
    wp = torch.nn.functional.pad(wts, (0, pad)).view(ng, G).repeat(P, 1)
    s, lo = scales.search(Wp, keep, wp, "clip", qmax=qmax)          # every (row, group) at once
    sc, m, d, dmin = fmt.encode_group_params(s.view(P, ng).numpy(), lo.view(P, ng).numpy())
    sd, md = (torch.from_numpy(v) for v in fmt.decode_group_params(sc, m, d, dmin))        # [P, ng]
    x = Wp.view(P, ng, G)
    Q = scales.value(scales.codes(x, sd, md, qmax), sd, md).view(P, ng * G)[:, :T]
    if sal is not None:
        c8, ws = fmt.encode_words_int8(W.numpy(), sal)
        q8 = np.repeat(ws.astype(np.float32), fmt.WORD_WEIGHTS, axis=1) * c8.astype(np.float32)
        Q = torch.where(keep_in, Q, torch.from_numpy(q8))
    return Q


def predicted_costs(W: np.ndarray, sens: Sensitivity, cands: list[Candidate],
                    damp: float = 0.01) -> dict[Candidate, float]:
    """{candidate: Σ_p f_p (D H Dᵀ)_pp} for W [P, T] (candidates that do not fit the shape are left out).

    H is damped by ``damp`` x its mean diagonal (the sensitivity pass may see fewer tokens than inputs); the sums
    are float64 numpy (no thread-count-dependent reductions: the choice is the same on 1 or 2 threads). The cost is
    measured on SCORE_ROWS evenly spaced rows and scaled by P / rows (the clipping search over every row of
    every candidate took ~8 s per SmolLM2 tensor)."""
    P, T = W.shape
    rows = np.unique(np.linspace(0, P - 1, min(P, SCORE_ROWS)).round().astype(np.int64))
    Wt = torch.from_numpy(np.ascontiguousarray(W[rows], dtype=np.float32))
    H = sens.H.cpu().float()
    H = H + damp * float(torch.diagonal(H).double().mean()) * torch.eye(T)
    wts = torch.diagonal(H).clamp(min=0)
    f = sens.f.cpu().double().numpy()[rows] * (P / len(rows))
    out = {}
    for c in cands:
        if not c.fits(P, T):
            continue
        D = Wt - quick_quantize(Wt, wts, c)
        out[c] = float(f @ np.einsum("pt,pt->p", (D @ H).double().numpy(), D.double().numpy()))
    return out


GPTQ_BLOCKS = 3         # --alloc-cost gptq: blocks (evenly spaced) whose tensors calibrate the GPTQ / RTN ratios


def cost_key(c: Candidate) -> tuple:
    """What a GPTQ / RTN cost ratio is shared by: the code width, whether int8 salient words are kept, rotation."""
    return (c.bits, c.sal > 0, c.rot)


def candidate_costs(W: np.ndarray, name: str, sens: dict[str, Sensitivity], sens_rot: dict[str, Sensitivity],
                    cands: list[Candidate], seed: int | None, cost=None) -> dict[Candidate, float]:
    """{candidate: cost} of tensor ``name`` (W [P, T]): plain candidates on W and sens, rotated ones (``c.rot``,
    block linears only) on W Rᵀ and R H Rᵀ. ``cost(W, sens, c)`` per candidate (default: ``predicted_costs``)."""
    def score(Wx: np.ndarray, s: Sensitivity, cs: list[Candidate]) -> dict[Candidate, float]:
        return predicted_costs(Wx, s, cs) if cost is None else {c: cost(Wx, s, c) for c in cs}

    out = score(W, sens[name], [c for c in cands if not c.rot])
    rot = [c for c in cands if c.rot] if incoherence.applies(name, seed) else []
    if rot:
        out.update(score(incoherence.rotate_weight(W, seed), sens_rot[name], rot))
    return out


def gptq_cost(W: np.ndarray, sens: Sensitivity, c: Candidate, damp: float = 0.01) -> float:
    """Σ_p f_p (D H Dᵀ)_pp as ``predicted_costs`` with D from GPTQ (``gptq.quantize_maq`` with H = sens.H) on the
    same SCORE_ROWS rows instead of round-to-nearest."""
    from maq.converter.gptq import QuantConfig, quantize_maq

    P, T = W.shape
    rows = np.unique(np.linspace(0, P - 1, min(P, SCORE_ROWS)).round().astype(np.int64))
    Wt = torch.from_numpy(np.ascontiguousarray(W[rows], dtype=np.float32))
    Hu = sens.H.cpu().float()
    cfg = QuantConfig(G=c.group, bits=c.bits, damp=damp, salient_coding=fmt.SALIENT_INT8 if c.sal else
                      fmt.SALIENT_MEAN4, n_salient=c.n_salient8(len(rows), T))
    D = Wt - quantize_maq(Wt, Hu, cfg).Q
    H = Hu + damp * float(torch.diagonal(Hu).double().mean()) * torch.eye(T)
    f = sens.f.cpu().double().numpy()[rows] * (P / len(rows))
    return float(f @ np.einsum("pt,pt->p", (D @ H).double().numpy(), D.double().numpy()))


def gptq_ratios(src: Source, linear, sens: dict[str, Sensitivity], costs: dict[str, dict[Candidate, float]],
                cands: list[Candidate], n_layer: int, sens_rot: dict[str, Sensitivity] | None = None,
                seed: int | None = None) -> dict[tuple, float]:
    """{(kind, cost_key): GPTQ cost / RTN cost} (geometric mean over the kind's tensors in GPTQ_BLOCKS evenly
    spaced blocks), measured with one representative candidate per key (G = 64; int8 at the middle share)."""
    blocks = sorted({int(round(x)) for x in np.linspace(0, n_layer - 1, GPTQ_BLOCKS)})
    reps: dict[tuple, Candidate] = {}
    for c in cands:
        if c.storage != "q8_0":
            reps.setdefault(cost_key(c), Candidate(c.storage, 64, SALIENT_SHARES[len(SALIENT_SHARES) // 2]
                                                   if c.sal else 0.0, c.rot))
    logs: dict[tuple, list[float]] = {}
    for tp in linear:
        if int(tp.name.split(".")[1]) not in blocks:
            continue
        W = src.tensor(tp.name)
        rtn = candidate_costs(W, tp.name, sens, sens_rot, list(reps.values()), seed)
        gq = candidate_costs(W, tp.name, sens, sens_rot, list(reps.values()), seed, cost=gptq_cost)
        for key, c in reps.items():
            g = gq.get(c, 0)
            if rtn.get(c, 0) > 0 and g > 0:
                logs.setdefault((tp.kind, key), []).append(float(np.log(g / rtn[c])))
    out = {k: float(np.exp(np.mean(v))) for k, v in logs.items()}
    log.info("--alloc-cost gptq: GPTQ / RTN cost ratios (blocks %s): %s", blocks,
             ", ".join(f"{k[0]} {k[1][0]}b{'+int8' if k[1][1] else ''}{'+had' if k[1][2] else ''} {v:.3f}"
                       for k, v in sorted(out.items())))
    return out


# ------------------------------------------------------------------------------------------------ allocation
def choose(sizes: dict[str, dict[Candidate, int]], costs: dict[str, dict[Candidate, float]],
           budget: int) -> dict[str, Candidate]:
    """Per tensor the candidate, minimizing Σ cost under Σ bytes <= budget (greedy on convex hulls, then single
    moves). Raises ValueError if even the smallest candidates exceed the budget."""
    names = sorted(sizes)
    hulls: dict[str, list[Candidate]] = {}
    for n in names:
        opts = sorted(costs[n], key=lambda c: (sizes[n][c], costs[n][c]))
        pts: list[Candidate] = []
        for c in opts:                                  # drop dominated (bigger, not better)
            if pts and costs[n][c] >= costs[n][pts[-1]]:
                continue
            while len(pts) >= 2:                        # keep the lower convex hull
                a, b = pts[-2], pts[-1]
                s_ab = (costs[n][a] - costs[n][b]) / max(sizes[n][b] - sizes[n][a], 1)
                s_bc = (costs[n][b] - costs[n][c]) / max(sizes[n][c] - sizes[n][b], 1)
                if s_bc >= s_ab:
                    pts.pop()
                else:
                    break
            pts.append(c)
        hulls[n] = pts
    pick = {n: min(costs[n], key=lambda c: (sizes[n][c], costs[n][c])) for n in names}
    used = sum(sizes[n][pick[n]] for n in names)
    if used > budget:
        raise ValueError(f"the smallest candidates take {used} bytes, over the budget of {budget}")
    idx = {n: hulls[n].index(pick[n]) if pick[n] in hulls[n] else 0 for n in names}
    heap = []

    def push(n: str) -> None:
        h, i = hulls[n], idx[n]
        if i + 1 < len(h):
            db = sizes[n][h[i + 1]] - sizes[n][h[i]]
            dc = costs[n][h[i]] - costs[n][h[i + 1]]
            heapq.heappush(heap, (-dc / max(db, 1), n))

    for n in names:
        push(n)
    while heap:
        _, n = heapq.heappop(heap)
        nxt = hulls[n][idx[n] + 1]
        extra = sizes[n][nxt] - sizes[n][pick[n]]
        if used + extra > budget:
            continue                                    # this tensor cannot grow further along its hull
        used += extra
        idx[n] += 1
        pick[n] = nxt
        push(n)
    # single moves that still fit and lower the cost (best saving per byte first)
    while True:
        best = None
        for n in names:
            for c, cost in costs[n].items():
                extra = sizes[n][c] - sizes[n][pick[n]]
                gain = costs[n][pick[n]] - cost
                if gain > 0 and used + extra <= budget:
                    score = gain / max(extra, 1) if extra > 0 else float("inf")
                    if best is None or score > best[0]:
                        best = (score, n, c, extra)
        if best is None:
            break
        _, n, c, extra = best
        pick[n] = c
        used += extra
    return pick


def allocate(src: Source, opts, plan, samples: np.ndarray) -> dict[str, Candidate]:
    """Measure sensitivities, choose candidates for ``opts.target_bpw`` and write them into ``plan`` (storage,
    group of every linear TensorPlan). Returns {tensor name: candidate}."""
    dev = torch.device(opts.device)
    linear = [tp for tp in plan if tp.is_linear]
    # one torch thread unless --threads says otherwise: the many small ops of this pass ran 7x (backward) to
    # 30x (scoring) slower with 2 intra-op threads on a busy 2-core machine (measured; docs/CONVERTER.md)
    nthreads = torch.get_num_threads()
    torch.set_num_threads(opts.threads or 1)
    try:
        with torch.enable_grad():
            sens = measure(src, samples, dev, opts.progress)
        return _choose_for(src, opts, linear, sens)
    finally:
        torch.set_num_threads(nthreads)


def rotated_sensitivities(sens: dict[str, Sensitivity], seed: int) -> dict[str, Sensitivity]:
    """The sensitivities of the rotated weights (--incoherence): H' = R H Rᵀ (one per shared H), f unchanged."""
    done: dict[int, torch.Tensor] = {}
    out = {}
    for name, s in sens.items():
        if not incoherence.applies(name, seed):
            out[name] = s
            continue
        if id(s.H) not in done:
            done[id(s.H)] = incoherence.rotate_hessian(s.H, seed)
        out[name] = Sensitivity(H=done[id(s.H)], f=s.f, tokens=s.tokens)
    return out


def _choose_for(src: Source, opts, linear, sens: dict[str, Sensitivity]) -> dict[str, Candidate]:
    from tqdm import tqdm

    from maq.errors import MAQError

    seed = getattr(opts, "rotation_seed", None)
    cands = candidates(int8=opts.salient_coding == fmt.SALIENT_INT8 and opts.method == "maq", rot=seed is not None)
    sens_rot = rotated_sensitivities(sens, seed) if seed is not None else {}   # --incoherence: R H Rᵀ
    sizes, costs = {}, {}
    t0 = time.time()
    with torch.inference_mode():
        for tp in tqdm(linear, desc="candidates", unit="tensor", disable=not opts.progress, dynamic_ncols=True):
            P, T = tp.shape
            costs[tp.name] = candidate_costs(src.tensor(tp.name), tp.name, sens, sens_rot, cands, seed)
            sizes[tp.name] = {c: c.nbytes(P, T) for c in costs[tp.name]}
    log.info("sensitivity: %d candidates x %d tensors scored in %.1f s", len(cands), len(linear), time.time() - t0)
    if opts.resolved_alloc_cost == "gptq":
        t0 = time.time()
        with torch.inference_mode():
            ratios = gptq_ratios(src, linear, sens, costs, cands, src.params.n_layer, sens_rot, seed)
        for tp in linear:
            for c in costs[tp.name]:
                if c.storage != "q8_0":
                    costs[tp.name][c] *= ratios.get((tp.kind, cost_key(c)), 1.0)
        log.info("--alloc-cost gptq: ratios measured in %.1f s", time.time() - t0)
    nweights = sum(int(np.prod(tp.shape)) for tp in linear)
    budget = int(opts.target_bpw * nweights // 8)
    try:
        pick = choose(sizes, costs, budget)
    except ValueError as exc:
        raise MAQError(f"--target-bpw {opts.target_bpw}: {exc}") from None
    for tp in linear:
        c = pick[tp.name]
        tp.storage, tp.group = c.storage, c.group
        tp.n_salient8 = c.n_salient8(*tp.shape)
        tp.rotated = c.rot
    total = sum(sizes[n][c] for n, c in pick.items())
    pred = sum(costs[n][c] for n, c in pick.items())
    counts: dict[str, int] = {}
    for c in pick.values():
        counts[c.name] = counts.get(c.name, 0) + 1
    log.info("allocation for --target-bpw %s: %.4f bits/weight over the linear tensors, predicted cost %.4g "
             "(all MAQ2 g128: %.4g); %s", opts.target_bpw, total * 8 / nweights, pred,
             sum(costs[n][Candidate(fmt.TYPE_MAQ2, 128)] for n in pick),
             ", ".join(f"{k} x{v}" for k, v in sorted(counts.items())))
    return pick
