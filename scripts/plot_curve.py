#!/usr/bin/env python
"""The size/quality curve of docs/RESULTS.md: perplexity vs honest bits/weight, one series per method family.

Reads a results file of ``scripts/evaluate.py`` (default docs/results/curve.json) and draws, on a log scale:
MAQ ``--target-bpw`` files (the dial, a line), the paper's MAQ default, GPTQ 2/3/4-bit (a line), RTN, and
llama.cpp's files. Left panel: the full protocol in our runtime; right panel: the second-half protocol, with
llama.cpp's own ``llama-perplexity`` figure on its files (hollow markers). Prints the figures it plots.

    python scripts/plot_curve.py [--results docs/results/curve.json] [--out docs/results/curve_series.png]
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def family(row: dict) -> str:
    spec = row.get("spec", "") or ""
    if row.get("kind") == "llamacpp" or spec.startswith("@llamacpp"):
        return "llama.cpp"
    if spec == "reference" or row.get("kind") == "reference":
        return "reference"
    if "--target-bpw" in spec:
        return "MAQ --target-bpw"
    if "--method gptq" in spec:
        return "GPTQ (uniform 2/3/4-bit)"
    if "--method rtn" in spec:
        return "RTN"
    if "--word-choice error" in spec:
        return "MAQ --word-choice error (2.3 bits)"
    return "MAQ, paper's method (2.3 bits)"


def ppl(row: dict, proto: str) -> float | None:
    w = (row.get("ppl") or {}).get("wikitext2") or {}
    v = (w.get(proto) or {}).get("ppl")
    return float(v) if v else None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", type=Path, default=Path("docs/results/curve.json"))
    ap.add_argument("--out", type=Path, default=Path("docs/results/curve_series.png"))
    args = ap.parse_args(argv)
    if not args.results.is_file():
        print(f"{args.results}: no such results file (run scripts/evaluate.py --run curve first)", file=sys.stderr)
        return 1
    run = json.loads(args.results.read_text())
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    styles = {"MAQ --target-bpw": ("o-", "C0"), "GPTQ (uniform 2/3/4-bit)": ("s--", "C1"), "RTN": ("v", "C2"),
              "MAQ, paper's method (2.3 bits)": ("D", "C3"),
              "MAQ --word-choice error (2.3 bits)": ("P", "C5"), "llama.cpp": ("^", "C4"), "reference": ("*", "k")}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.2), sharey=True)
    print(f"{'configuration':<24} {'family':<32} {'bits/w':>7} {'full':>10} {'2nd-half':>10} {'llama.cpp':>10}")
    for ax, proto in zip(axes, ("full", "second-half")):
        series: dict[str, list] = {}
        for row in run["rows"]:
            bpw = (row.get("bpw") or {}).get("linear")
            if bpw is None:
                continue
            fam = family(row)
            y = ppl(row, proto)
            lc = (row.get("llamacpp_ppl") or {}).get("ppl") if proto == "second-half" else None
            if proto == "full":
                print(f"{row['name']:<24} {fam:<32} {bpw:>7.3f} {ppl(row, 'full') or float('nan'):>10.4g} "
                      f"{ppl(row, 'second-half') or float('nan'):>10.4g} "
                      f"{(row.get('llamacpp_ppl') or {}).get('ppl') or float('nan'):>10.4g}")
            if y is not None:
                series.setdefault(fam, []).append((bpw, y, row["name"]))
            if lc is not None:
                fmt_, col = styles[fam]
                ax.plot([bpw], [lc], fmt_[0], mfc="none", color=col, ms=9)
                ax.annotate(re.sub(r"^llama\.cpp ", "", row["name"]) + " (llama.cpp tool)", (bpw, lc), fontsize=7,
                            xytext=(4, 4), textcoords="offset points")
        for fam, pts in series.items():
            pts.sort()
            fmt_, col = styles[fam]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], fmt_, color=col, label=fam, ms=7)
            for x, y, name in pts:
                ax.annotate(name, (x, y), fontsize=7, xytext=(4, -10), textcoords="offset points")
        ax.set_yscale("log")
        ax.set_xlabel("linear tensors: bits/weight (every byte, from the file)")
        ax.set_title(f"WikiText-2 perplexity, protocol {proto}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("perplexity (log scale)")
    axes[0].legend(fontsize=8)
    meta = run.get("meta", {})
    fig.suptitle(f"SmolLM2-135M-Instruct, windows of {meta.get('ctx', 2048)}, first {meta.get('limit')} windows; "
                 f"converter flags {meta.get('convert_flags', '')!s}; hollow: llama.cpp's llama-perplexity",
                 fontsize=9)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
