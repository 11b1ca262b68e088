"""Measurements behind the converter's defaults (docs/CONVERTER.md): ``python -m maq.converter.measure``.

1. the structured test layer (``structured_layer``, also the quantizer tests' fixture): maq vs gptq vs rtn, feedback, search;
2. real layers: (W, H) captured from a sequential calibration of MODEL (default: the SmolLM2 GGUF) at a few
   blocks, every variant quantized on the same (W, H); Hessian-weighted relative error Σ(w-q)H(w-q)ᵀ / ΣwHwᵀ
   summed over the captured layers.
"""
from __future__ import annotations

import argparse
import dataclasses
import logging
import time

import numpy as np
import torch

from maq.converter.gptq import QuantConfig, quantize_maq
from maq.converter.hessian import weighted_error
from maq.runtime import format as fmt

log = logging.getLogger(__name__)


def structured_layer(P=96, T=256, n=4096, rank=6, outliers_per_block=2, amp=8.0, seed=0
                     ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """A synthetic linear layer with real structure: (W [P, T], H [T, T]) as torch float32 and the injected
    outlier words, bool [P, T/16]. Also the quantizer tests' fixture (tests/converter/test_gptq.py).

    Inputs: correlated (a random mixing of independent sources) with a few high-variance channels.
    Weights: low rank + noise, plus ``outliers_per_block`` injected outlier words in every 16-input block:
    16 large weights (amp x the weights' std), nearly constant over each 4-input span.
    """
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
    return torch.from_numpy(W.astype(np.float32)), torch.from_numpy(H.astype(np.float32)), injected


def rtn_err(W: torch.Tensor, H: torch.Tensor, G: int = 128) -> float:
    q = torch.from_numpy(fmt.dequantize(fmt.quantize_rtn(W.numpy(), None, G)))
    return weighted_error(W - q, H)


def variants(frac: float) -> dict[str, tuple[str, dict]]:
    """name -> (K rule, QuantConfig overrides). K rule: "frac" (salient fraction of P) or "0"."""
    return {
        "rtn (min/max, g128)": ("rtn", {}),
        "gptq minmax": ("0", {"scale_search": "minmax"}),
        "gptq clip": ("0", {}),
        "gptq clip headroom 1.25": ("0", {"headroom": 1.25}),
        "gptq clip headroom 1.5": ("0", {"headroom": 1.5}),
        "maq clip (feedback)": ("frac", {"refit_rows": True}),
        "maq clip feedback 1 pass": ("frac", {}),
        "maq clip no-feedback": ("frac", {"salient_feedback": False}),
        "maq minmax (feedback)": ("frac", {"scale_search": "minmax", "refit_rows": True}),
        "maq -G (feedback)": ("frac", {"grouped": False, "refit_rows": True}),
        "maq 10% clip": ("frac10", {"refit_rows": True}),
        "gptq clip g32": ("0", {"G": 32}),
    }


def evaluate(layers: list[tuple[str, torch.Tensor, torch.Tensor]], frac: float, names=None) -> list[tuple]:
    rows = []
    for name, (rule, over) in variants(frac).items():
        if names and name not in names:
            continue
        err = ref = 0.0
        t0 = time.time()
        for _, W, H in layers:
            P = W.shape[0]
            if rule == "rtn":
                err += rtn_err(W, H)
            else:
                K = {"0": 0, "frac": int(round(frac * P)), "frac10": int(round(0.1 * P))}[rule]
                r = quantize_maq(W, H, dataclasses.replace(QuantConfig(top_k=K), **over))
                err += r.err
            ref += weighted_error(W, H)
        rows.append((name, err / ref, time.time() - t0))
    return rows


def capture(model: str, blocks: list[int], nsamples: int, seqlen: int) -> list[tuple[str, torch.Tensor, torch.Tensor]]:
    """(name, W, H) of every linear layer of ``blocks``, from the default maq pipeline's sequential calibration."""
    from maq.converter.calibration import load_calibration
    from maq.converter.options import ConvertOptions
    from maq.converter import block as B
    from maq.converter.pipeline import BlockQuantizer
    from maq.converter.source import open_source

    opts = ConvertOptions(model=model, out="/dev/null", nsamples=nsamples, seqlen=seqlen, progress=False)
    src = open_source(model)
    cal = load_calibration(src, opts)
    p = src.params
    out: list = []
    current = {"i": -1}

    class Capturing(BlockQuantizer):
        def _quantize(self, g, w, tp):
            if current["i"] in blocks:
                out.append((f"blk.{current['i']}", w.clone(), g.hessian().clone()))
            return super()._quantize(g, w, tp)

    with torch.inference_mode():
        rope = B.Rope.make(p, cal.samples.shape[1], "cpu")
        emb = torch.from_numpy(src.tensor("token_embd.weight"))
        X = emb[torch.from_numpy(cal.samples)]
        A = torch.empty_like(X)
        bq = Capturing(src, opts, rope, torch.device("cpu"), torch.float32)
        for i in range(max(blocks) + 1):
            current["i"] = i
            bq.run(i, X, A, lambda kind, res: None)
            log.info("block %d done", i)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="HF dir or GGUF (default: the SmolLM2 GGUF)")
    ap.add_argument("--blocks", default="0,11,24,29")
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=512)
    ap.add_argument("--frac", type=float, default=100 / 4096)
    ap.add_argument("--skip-real", action="store_true")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)

    W, H, _ = structured_layer()
    print("structured layer (P=96, T=256, 2 injected outlier words per 16-input block; K=2 for maq):")
    for name, rel, dt in evaluate([("structured", W, H)], 2 / 96):
        print(f"  {name:<26} {rel:.5f}   ({dt:.1f} s)")
    if args.skip_real:
        return 0
    if args.model is None:
        from maq.runtime.models import smollm2_path

        args.model = str(smollm2_path())
    blocks = [int(b) for b in args.blocks.split(",")]
    layers = capture(args.model, blocks, args.nsamples, args.seqlen)
    print(f"real layers: {args.model}, blocks {blocks} (all 7 linear kinds), calibration "
          f"{args.nsamples} x {args.seqlen}, salient fraction {args.frac:.4f}:")
    for name, rel, dt in evaluate(layers, args.frac):
        print(f"  {name:<26} {rel:.5f}   ({dt:.1f} s)")
    kinds = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]
    print("per kind (gptq clip / maq clip / maq no-feedback / rtn):")
    for ki, kind in enumerate(kinds):
        sub = [lay for j, lay in enumerate(layers) if j % 7 == ki]
        r = dict((n, e) for n, e, _ in evaluate(sub, args.frac, names={
            "gptq clip", "maq clip (feedback)", "maq clip no-feedback", "rtn (min/max, g128)"}))
        print(f"  {kind:<12} {r['gptq clip']:.4f} / {r['maq clip (feedback)']:.4f} / "
              f"{r['maq clip no-feedback']:.4f} / {r['rtn (min/max, g128)']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
