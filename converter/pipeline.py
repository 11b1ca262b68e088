"""Sequential calibration and quantization, one decoder block at a time.

Block i+1 is calibrated on the outputs of the already-quantized block i (GPTQ's protocol), and inside a block
each linear layer on inputs produced by the already-quantized layers before it ("true sequential"):

  X [N, L, D]: the block input (the calibration windows through the quantized blocks before)
  1. h = attn_norm(X)                         -> H_qkv   -> quantize attn_q, attn_k, attn_v
  2. a = attention(h; quantized q, k, v)       -> H_o     -> quantize attn_output;  A = X + a Woᵀ
  3. h2 = ffn_norm(A)                          -> H_gu    -> quantize ffn_gate, ffn_up
  4. act = silu(h2 Wgᵀ)·(h2 Wuᵀ) (quantized)   -> H_down  -> quantize ffn_down
  5. X = A + act Wdᵀ                           -> next block's input

Memory: one block's weights, X and A (N·L·D float32 each), one chunk of intermediates, and the activations of
step 4 in the calibration dtype if they take at most ACT_CACHE_BYTES (else step 5 recomputes them chunk by chunk);
attention runs once per block. The methods: maq / gptq through ``gptq.GPTQ``; rtn needs no calibration
(``format.quantize_rtn``).
"""
from __future__ import annotations

import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import torch

from maq.converter import block as B
from maq.converter import gguf_export as gx
from maq.converter import incoherence
from maq.converter.gptq import GPTQ, LayerResult, QuantConfig, quantize_maq
from maq.converter.hessian import HessianAccumulator, column_pool, weighted_error
from maq.converter.options import ConvertOptions
from maq.converter.source import BLOCK_TENSORS, LINEAR_KINDS, ROPE_FREQS, Source, block_name
from maq.runtime import format as fmt

log = logging.getLogger(__name__)

CHUNK_TOKENS = 8192   # tokens per forward chunk (bounds the intermediate activations)
ACT_CACHE_BYTES = 3 << 29   # 1.5 GiB: keep the MLP activations of step 4 for step 5 when they fit (else recompute)


def quant_config(opts: ConvertOptions, tp) -> QuantConfig:
    """The options reduced to one linear weight (a run.TensorPlan: [P, T], MAQ type, group)."""
    P = tp.shape[0]
    bits = tp.bits
    n8 = getattr(tp, "n_salient8", 0)
    K = opts.resolved_top_k(P) if bits == 2 and not n8 and opts.salient_coding != fmt.SALIENT_INT8 else 0
    # fed-back salient errors widen the later 2-bit groups: size the row scales on a first pass (measured:
    # docs/CONVERTER.md); without salient words GPTQ's updates barely move the ranges and one pass is kept
    choice = opts.resolved_word_choice
    block = opts.block if opts.block % tp.group == 0 else max(opts.block // tp.group, 1) * tp.group
    return QuantConfig(G=tp.group, block=block, damp=opts.damp, top_k=K,
                       grouped=not opts.no_grouping, salient_feedback=opts.salient_feedback,
                       scale_search=opts.scale_search, refit_rows=K > 0 and opts.salient_feedback, bits=bits,
                       word_choice=choice, never_worse=choice == "error",
                       salient_coding=fmt.SALIENT_INT8 if n8 else fmt.SALIENT_MEAN4, n_salient=n8)


def q8_0_result(W: torch.Tensor, H: torch.Tensor | None) -> LayerResult:
    """A linear stored as Q8_0 (no GPTQ: 8-bit rounding error is negligible): Q = its dequantized values."""
    q, deq = gx.q8_0_roundtrip(W.float().cpu().numpy())
    P, T = deq.shape
    res = LayerResult(tensor=None, Q=torch.from_numpy(deq).to(W.device),
                      salient=np.zeros((P, T // fmt.WORD_WEIGHTS), bool), encoded=q)
    res.nbytes = int(q.nbytes)
    if H is not None:
        res.err = weighted_error(W.float() - res.Q, H)
        res.ref = weighted_error(W.float(), H)
        res.err_rtn = res.err
    return res


def tensor_row(name: str, kind: str, res: LayerResult | None, t: fmt.MAQTensor | None, choice: str = "") -> dict:
    """Per-tensor stats for the summary (t None: a Q8_0 linear, its bytes in res.nbytes)."""
    P, T = (t.P, t.T) if t is not None else tuple(res.Q.shape)
    sal = 0 if t is None or t.bitmap is None else int(fmt.unpack_bitmap(t.bitmap, fmt.n_words(T)).sum())
    if t is None:
        kinds = "q8_0"
    else:
        kinds = f"{t.bits}b" + (f"+{t.salient_coding}" if sal else "")
    row = {"name": name, "kind": kind, "nbytes": t.nbytes if t is not None else res.nbytes, "nweights": P * T,
           "words": P * fmt.n_words(T), "salient_words": sal, "choice": choice, "word_kinds": kinds}
    if res is not None:
        row.update(err=res.err, err_rtn=res.err_rtn, ref=res.ref)
    return row


def _chunks(N: int, L: int):
    step = max(1, CHUNK_TOKENS // L)
    for s in range(0, N, step):
        yield slice(s, min(s + step, N))


class _LapTimer:
    """Wall time summed per named stage: ``lap(what)`` charges the time since the previous lap to ``what``."""

    def __init__(self) -> None:
        self.tick = time.time()
        self.times: dict[str, float] = {}

    def lap(self, what: str) -> None:
        now = time.time()
        self.times[what] = self.times.get(what, 0.0) + now - self.tick
        self.tick = now

    def summary(self) -> str:
        return ", ".join(f"{k} {v:.1f} s" for k, v in sorted(self.times.items()))


class BlockQuantizer:
    """Runs stages 1-5 above for one block; ``X`` (the calibration activations) is updated in place."""

    def __init__(self, src: Source, opts: ConvertOptions, rope: B.Rope, device: torch.device, cdtype: torch.dtype,
                 act_cache: torch.Tensor | None = None, pool=None):
        self.src, self.opts, self.rope, self.dev, self.cdtype = src, opts, rope, device, cdtype
        self.params = src.params
        self.act_cache = act_cache     # [N, L, n_ff] in cdtype, or None
        self.pool = pool               # hessian.column_pool's threads for the XᵀX products, or None

    def _weights(self, i: int) -> dict[str, torch.Tensor]:
        return {k: torch.from_numpy(self.src.tensor(block_name(i, k))).to(self.dev) for k in BLOCK_TENSORS}

    def _quantize(self, g: GPTQ, w: torch.Tensor, tp) -> LayerResult:
        """One linear: its stored form (rotated with --incoherence) and Q, the effective weights the next
        stages' forward uses (original basis)."""
        seed = self.opts.rotation_seed
        if tp.rotated:
            w = incoherence.rotate_weight(w, seed)
            H, ph = g.prepared(self.opts.damp, seed, lambda h: incoherence.rotate_hessian(h, seed))
        else:
            H, ph = g.prepared(self.opts.damp)
        if tp.storage == "q8_0":
            res = q8_0_result(w, H)
        else:
            res = quantize_maq(w, H, quant_config(self.opts, tp), ph)
        if tp.rotated:
            res.Q = incoherence.unrotate_weight(res.Q, seed)
        return res

    def _timed_quantize(self, g: GPTQ, w: torch.Tensor, timer: _LapTimer, tp) -> LayerResult:
        timer.lap("other")
        res = self._quantize(g, w, tp)
        timer.lap("gptq")
        return res

    def run(self, i: int, X: torch.Tensor, A: torch.Tensor, on_result: Callable[[str, LayerResult], None],
            plans: dict) -> None:
        """Quantize block i; ``plans`` maps each linear kind to its run.TensorPlan (storage, group)."""
        p, dev, cdt = self.params, self.dev, self.cdtype
        w = self._weights(i)
        N, L, D = X.shape
        chunks = list(_chunks(N, L))
        qw: dict[str, torch.Tensor] = {}       # quantized weights (dequantized values) in the compute dtype
        timer = _LapTimer()

        def done(kind: str, res: LayerResult) -> None:
            qw[kind] = res.Q.to(cdt)
            on_result(kind, res)

        # 1. q, k, v
        g = GPTQ(D, dev, self.pool)
        for c in chunks:
            g.add_batch(B.rms_norm(X[c], w["attn_norm"], p.rms_eps))
        timer.lap("1 H_qkv")
        for kind in ("attn_q", "attn_k", "attn_v"):
            done(kind, self._timed_quantize(g, w[kind], timer, plans[kind]))
        del g
        # 2. attention output
        g = GPTQ(p.n_head * p.head_dim, dev, self.pool)
        for c in chunks:
            h = B.rms_norm(X[c], w["attn_norm"], p.rms_eps)
            a = B.attention(h, qw["attn_q"], qw["attn_k"], qw["attn_v"], p, self.rope)
            timer.lap("2 attention")
            g.add_batch(a)
            A[c] = a
            timer.lap("2 H_o")
        done("attn_output", self._timed_quantize(g, w["attn_output"], timer, plans["attn_output"]))
        del g
        # 3. gate, up
        g = GPTQ(D, dev, self.pool)
        for c in chunks:
            A[c] = X[c] + B.linear(A[c], qw["attn_output"])
        timer.lap("2 o_proj")
        for c in chunks:
            g.add_batch(B.rms_norm(A[c], w["ffn_norm"], p.rms_eps))
        timer.lap("3 H_gu")
        for kind in ("ffn_gate", "ffn_up"):
            done(kind, self._timed_quantize(g, w[kind], timer, plans[kind]))
        del g
        # 4. down
        g = GPTQ(p.n_ff, dev, self.pool)
        for c in chunks:
            act = B.mlp_act(B.rms_norm(A[c], w["ffn_norm"], p.rms_eps), qw["ffn_gate"], qw["ffn_up"])
            if self.act_cache is not None:
                self.act_cache[c] = act
            timer.lap("4 gate/up")
            g.add_batch(act)
            timer.lap("4 H_down")
        done("ffn_down", self._timed_quantize(g, w["ffn_down"], timer, plans["ffn_down"]))
        del g
        # 5. block output -> next block's input
        for c in chunks:
            if self.act_cache is not None:
                act = self.act_cache[c]
            else:
                act = B.mlp_act(B.rms_norm(A[c], w["ffn_norm"], p.rms_eps), qw["ffn_gate"], qw["ffn_up"])
            X[c] = A[c] + B.linear(act, qw["ffn_down"])
        timer.lap("5 output")
        log.debug("block %d: %s; %s", i, timer.summary(), _rss_mib())


def _rss_mib() -> str:
    """Current and peak resident memory (Linux /proc), for the debug log."""
    try:
        with open("/proc/self/status") as f:
            st = dict(line.split(":", 1) for line in f if ":" in line)
        return f"rss {int(st['VmRSS'].split()[0]) >> 10} MiB, peak {int(st['VmHWM'].split()[0]) >> 10} MiB"
    except (OSError, KeyError, ValueError):
        return "rss n/a"


def _set_threads(opts: ConvertOptions) -> None:
    if opts.threads:
        torch.set_num_threads(opts.threads)


WriteFloat = Callable[[str, np.ndarray], None]
WriteMAQ = Callable[[str, fmt.MAQTensor], None]


def quantize_embedding(W: np.ndarray, bits: int, G: int, H: torch.Tensor | None = None) -> fmt.MAQTensor:
    """W [V, D] float32 (token_embd / output) -> MAQ tensor. H [D, D]: the output head's input Hessian (2·XᵀX/n of
    the final norm's outputs on the calibration text): GPTQ against it; None: every group rounded to nearest after the
    clip search (``QuantConfig(compensate=False)`` with H = I, every input weighted alike)."""
    cfg = QuantConfig(G=G, bits=bits, compensate=H is not None)
    Wt = torch.from_numpy(np.ascontiguousarray(W, dtype=np.float32))
    return quantize_maq(Wt, torch.eye(W.shape[1]) if H is None else H.cpu(), cfg).tensor


def _write_outside(src: Source, tp, write_float: WriteFloat, write_maq: WriteMAQ,
                   H_head: torch.Tensor | None = None) -> None:
    """A tensor outside the blocks (token_embd, output_norm, output) as planned: float, Q8_0 or (--embed-type maq4)
    MAQ codes, GPTQ against ``H_head`` when the calibration gave it (the MAQ head comes after the blocks: make_plan)."""
    if tp.is_maq:
        t0 = time.time()
        write_maq(tp.name, quantize_embedding(src.tensor(tp.name), tp.bits, tp.group, H_head))
        log.info("%s: %s/g%d (%s) in %.1f s", tp.name, tp.storage, tp.group,
                 "rtn" if H_head is None else "GPTQ on the head's input", time.time() - t0)
    else:
        write_float(tp.name, src.tensor(tp.name))


def _head_hessian(src: Source, X: torch.Tensor, pool) -> torch.Tensor:
    """H [D, D] = 2·hᵀh/n of the output head's input h = output_norm(X) over the calibration tokens X [N, L, D]."""
    N, L, D = X.shape
    acc = HessianAccumulator(D, X.device, pool)
    w = torch.from_numpy(src.tensor("output_norm.weight")).to(X.device)
    for c in _chunks(N, L):
        acc.add(B.rms_norm(X[c], w, src.params.rms_eps))
    return acc.hessian()


def _split_plan(plan) -> tuple[list, dict[int, list], list]:
    """Split the tensor plan into (tensors before the blocks, {block index: its tensors}, tensors after)."""
    by_block: dict[int, list] = {}
    head, tail = [], []
    for tp in plan:
        if tp.name.startswith("blk."):
            by_block.setdefault(int(tp.name.split(".")[1]), []).append(tp)
        elif not by_block:
            head.append(tp)
        else:
            tail.append(tp)
    return head, by_block, tail


def _rtn_block(src: Source, tensors: list, write_float: WriteFloat, write_maq: WriteMAQ, rows: list[dict],
               pool: ThreadPoolExecutor, width: int, seed: int | None = None) -> None:
    """Round one block's MAQ tensors to nearest (no calibration), copy the rest (``tp.rotated`` linears rotated
    with ``seed``, --incoherence); append per-tensor rows. Up to ``width`` tensors are quantized at once in ``pool``
    (numpy's array loops release the GIL) while the next one is read; tensors are still written in plan order and
    at most ``width`` are held in memory."""
    pending: list[tuple] = []   # (plan entry, future), oldest first

    def drain(keep: int) -> None:
        while len(pending) > keep:
            tp, job = pending.pop(0)
            t = job.result()
            write_maq(tp.name, t)
            rows.append(tensor_row(tp.name, tp.kind, None, t, tp.choice))

    for tp in tensors:
        W = src.tensor(tp.name)
        if tp.rotated:
            W = incoherence.rotate_weight(W, seed)
        if not tp.is_maq:
            drain(0)
            write_float(tp.name, W)
            continue
        pending.append((tp, pool.submit(fmt.quantize_rtn, W, None, tp.group, tp.bits)))
        del W
        drain(width - 1)
    drain(0)


def _write_block(src: Source, tensors: list, results: dict[str, LayerResult], write_float: WriteFloat,
                 write_maq: WriteMAQ, rows: list[dict]) -> None:
    """Write one calibrated block: each linear's result (MAQ tensor or Q8_0 bytes), other tensors copied."""
    for tp in tensors:
        if tp.kind in LINEAR_KINDS:
            res = results[tp.kind]
            if res.tensor is None:
                write_float(tp.name, res.encoded)       # the Q8_0 bytes q8_0_result made
            else:
                write_maq(tp.name, res.tensor)
            rows.append(tensor_row(tp.name, tp.kind, res, res.tensor, tp.choice))
        else:
            write_float(tp.name, src.tensor(tp.name))


def _calibrated_blocks(src: Source, opts: ConvertOptions, by_block: dict[int, list], samples: np.ndarray,
                       dev: torch.device, write_float: WriteFloat, write_maq: WriteMAQ, rows: list[dict],
                       bar, head_hessian: bool = False) -> torch.Tensor | None:
    """Quantize the blocks in order on calibration activations X [N, L, D] that each block carries forward.
    Returns the output head's input Hessian (``_head_hessian``) when ``head_hessian``, else None."""
    p = src.params
    cdtype = torch.bfloat16 if opts.calib_dtype == "bfloat16" else torch.float32
    N, L = samples.shape
    freq = torch.from_numpy(src.tensor(ROPE_FREQS)) if src.has(ROPE_FREQS) else None
    rope = B.Rope.make(p, L, dev, freq)
    emb = torch.from_numpy(src.tensor("token_embd.weight"))
    X = emb[torch.from_numpy(samples)].to(dev)                          # [N, L, D] float32
    del emb
    A = torch.empty_like(X)
    act_bytes = N * L * p.n_ff * torch.tensor([], dtype=cdtype).element_size()
    act = torch.empty(N, L, p.n_ff, dtype=cdtype, device=dev) if act_bytes <= ACT_CACHE_BYTES else None
    with column_pool() as pool:
        _run_blocks(src, by_block, BlockQuantizer(src, opts, rope, dev, cdtype, act, pool), X, A, write_float,
                    write_maq, rows, bar)
        H_head = _head_hessian(src, X, pool) if head_hessian else None
    del X, A, act
    return H_head


def _run_blocks(src: Source, by_block: dict[int, list], bq: BlockQuantizer, X: torch.Tensor, A: torch.Tensor,
                write_float: WriteFloat, write_maq: WriteMAQ, rows: list[dict], bar) -> None:
    N, L, _ = X.shape
    for i in range(src.params.n_layer):
        t0 = time.time()
        results: dict[str, LayerResult] = {}
        plans = {tp.kind: tp for tp in by_block[i] if tp.kind in LINEAR_KINDS}
        bq.run(i, X, A, lambda kind, res: results.__setitem__(kind, res), plans)
        _write_block(src, by_block[i], results, write_float, write_maq, rows)
        errs = ", ".join(f"{k} {r.err / r.ref:.3g}" for k, r in results.items() if r.ref > 0)
        log.debug("block %d: %.1f s; H-weighted relative error %s", i, time.time() - t0, errs)
        if not all(bool(torch.isfinite(X[c]).all()) for c in _chunks(N, L)):   # chunked: no X-sized temporaries
            raise RuntimeError(f"block {i}: calibration activations became NaN/Inf")
        bar.update(1)


def quantize_model(src: Source, opts: ConvertOptions, plan, samples: np.ndarray | None,
                   write_float: WriteFloat, write_maq: WriteMAQ) -> tuple[list[dict], list[dict]]:
    """Quantize every block in order and hand each finished tensor to the writer.

    Returns (per-kind rows, per-tensor rows)."""
    from tqdm import tqdm

    _set_threads(opts)
    p = src.params
    rows: list[dict] = []
    head, by_block, tail = _split_plan(plan)
    for tp in head:
        _write_outside(src, tp, write_float, write_maq)
    if head:
        log.debug("wrote %s; %s", ", ".join(tp.name for tp in head), _rss_mib())

    dev = torch.device(opts.device)
    bar = tqdm(total=p.n_layer, desc="blocks", unit="block", disable=not opts.progress, dynamic_ncols=True)
    H_head = None
    with torch.inference_mode():
        if opts.method == "rtn":
            workers = opts.threads or os.cpu_count() or 1
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for i in range(p.n_layer):
                    _rtn_block(src, by_block[i], write_float, write_maq, rows, pool, workers, opts.rotation_seed)
                    bar.update(1)
        else:
            H_head = _calibrated_blocks(src, opts, by_block, samples, dev, write_float, write_maq, rows, bar,
                                        head_hessian=any(tp.is_maq for tp in tail))   # the MAQ head is in tail
    bar.close()
    head_name = "token_embd.weight" if p.tied else "output.weight"   # an untied token_embd is only looked up
    for tp in tail:
        _write_outside(src, tp, write_float, write_maq, H_head if tp.name == head_name else None)
    from maq.converter.summary import kind_rows

    return kind_rows(rows), rows
