"""Per-tensor analysis of quantized files against the reference (docs/RESULTS.md, issue 8 items 3 and 5).
Run as ``python scripts/eval_tensors.py CMD ...`` or ``python -m maq.evaluation.tensors CMD ...``:

    python scripts/eval_tensors.py errors  --file gptq=G.gguf --file maq=M.gguf --file q2k=Q2_K.gguf ...
    python scripts/eval_tensors.py salient --maq maq=M.gguf --other gptq=G.gguf
    python scripts/eval_tensors.py hybrid  --file gptq=G.gguf --limit 3

errors:  relative output error ||(W-Ŵ)X|| / ||WX|| of every linear tensor of every file, X = held-back activations
         of the reference model (default: 8 random 2048-token windows of C4 documents 900-999, which are not in the
         converter's calibration text), with each tensor's type and bits/weight read from the file.
salient: for MAQ files, where the error comes from: the salient words alone (stored values / exact mean of 4),
         everything else alone, what the other file (GPTQ) costs on the same words, and how large H is on the
         inputs the salient words cover.
hybrid:  perplexity (our runtime, first --limit WikiText-2 windows, ctx 2048) of the reference with ONE tensor kind
         taken from a quantized file (the rest reference): which kinds break the model first.

Each writes docs/results/<name>.json with the numbers and ready markdown tables (``tables``), which
``maq eval --report`` copies into docs/RESULTS.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import sys
import time
from pathlib import Path

import numpy as np

from maq.evaluation import cli as E
from maq.evaluation import tensor_error as TE

log = logging.getLogger(__name__)
ROOT = Path(__file__).resolve().parents[1]
KINDS = TE.LINEAR_KINDS


def _pairs(items: list[str]) -> dict[str, str]:
    out = {}
    for s in items:
        k, sep, v = s.partition("=")
        if not sep or not Path(v).is_file():
            raise SystemExit(f"expected LABEL=EXISTING.gguf, got {s!r}")
        out[k] = v
    return out


def hessians(args, ref: str):
    """Held-back H per block input, cached on disk by (reference, text, windows)."""
    import torch

    text = args.heldout if args.heldout != "c4" else str(E.c4_heldout_text(E.default_data_dir(), Path(args.cache)))
    from maq.evaluation.configs import file_sha256

    key = hashlib.sha256(json.dumps([file_sha256(ref), file_sha256(text), args.nsamples, args.seqlen,
                                     args.seed]).encode()).hexdigest()[:16]
    path = Path(args.cache) / f"hessians.{key}.pt"
    info = {"text": text, "nsamples": args.nsamples, "seqlen": args.seqlen, "seed": args.seed}
    if path.is_file():
        return torch.load(path), info
    t0 = time.time()
    samples = TE.text_windows(ref, text, args.nsamples, args.seqlen, args.seed)
    H = TE.collect_hessians(ref, samples)
    log.info("held-back Hessians: %d windows of %d from %s in %.0f s", args.nsamples, args.seqlen, text,
             time.time() - t0)
    tmp = path.with_suffix(".tmp")
    torch.save(H, tmp)
    tmp.replace(path)
    return H, info


def kind_error(errs: dict, kind: str, refw: dict | None = None) -> float:
    v = [e["rel_err"] for n, e in errs.items() if n.split(".")[2] == kind]
    return float(np.sqrt(np.mean(np.square(v)))) if v else float("nan")


def cmd_errors(args) -> dict:
    ref = args.ref
    files = _pairs(args.file)
    H, info = hessians(args, ref)
    n_layer = max(int(k.split(".")[1]) for k in H) + 1
    kinds = args.kinds.split(",") if args.kinds else list(KINDS)
    names = [TE.tensor_name(i, k) for i in range(n_layer) for k in kinds]
    t0 = time.time()
    errs = TE.file_errors(ref, files, H, names)
    log.info("errors of %d tensors x %d files in %.0f s", len(names), len(files), time.time() - t0)
    tables = {}
    # per kind: RMS over layers of the relative output error; bits/weight of that kind in the file
    head = "| file | " + " | ".join(kinds) + " | all (RMS) | linear bits/w |"
    lines = [head, "|---" * (len(kinds) + 3) + "|"]
    for label, e in errs.items():
        cells = [f"{kind_error(e, k):.4f}" for k in kinds]
        allv = float(np.sqrt(np.mean([x["rel_err"] ** 2 for x in e.values()])))
        bpw = np.mean([x["bpw"] for x in e.values()])
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {allv:.4f} | {bpw:.3f} |")
    tables["by_kind"] = "\n".join(lines)
    # every tensor of one kind (default ffn_down), with its type and bits/weight per file
    k = args.detail_kind
    if k in kinds:
        lines = ["| layer | " + " | ".join(f"{lb} err | {lb} type (bits/w)" for lb in errs) + " |",
                 "|---" * (1 + 2 * len(errs)) + "|"]
        for i in range(n_layer):
            n = TE.tensor_name(i, k)
            cells = []
            for lb, e in errs.items():
                cells += [f"{e[n]['rel_err']:.4f}", f"{e[n]['type']} ({e[n]['bpw']:.3f})"]
            lines.append(f"| {i} | " + " | ".join(cells) + " |")
        summ = []
        for lb, e in errs.items():
            sub = {n: v for n, v in e.items() if n.split(".")[2] == k}
            a = TE.aggregate(sub)
            summ.append(f"| {lb} | {'/'.join(a['types'])} | {a['bpw']:.3f} | {a['gmean']:.4f} | {a['mean']:.4f} | "
                        f"{a['min']:.4f} | {a['max']:.4f} |")
        tables[f"{k}_summary"] = "\n".join(["| file | types | bits/w | geo-mean err | mean err | min | max |",
                                            "|---|---|---|---|---|---|---|"] + summ)
        tables[f"{k}_layers"] = "\n".join(lines)
    if args.plot:
        _plot_layers(errs, kinds, n_layer, Path(args.plot))
        tables["plot"] = f"![relative output error per layer]({Path(args.plot).resolve().relative_to(ROOT / 'docs')})"
    return {"heldout": info, "files": files, "errors": errs, "tables": tables}


def _plot_layers(errs: dict, kinds: list[str], n_layer: int, out: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 4
    rows = math.ceil(len(kinds) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3.2 * rows), squeeze=False)
    for ax, k in zip(axes.flat, kinds):
        for lb, e in errs.items():
            ax.plot(range(n_layer), [e[TE.tensor_name(i, k)]["rel_err"] for i in range(n_layer)], label=lb,
                    marker=".", lw=1)
        ax.set_yscale("log")
        ax.set_title(k, fontsize=9)
        ax.set_xlabel("layer")
        ax.grid(True, which="both", alpha=0.3)
    for ax in list(axes.flat)[len(kinds):]:
        ax.axis("off")
    axes.flat[0].set_ylabel("||(W-Ŵ)X|| / ||WX||")
    axes.flat[0].legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def cmd_salient(args) -> dict:
    import torch

    from maq.runtime.inspect import read_header, read_weight

    ref = args.ref
    maqs, others = _pairs(args.maq), _pairs(args.other)
    H, info = hessians(args, ref)
    n_layer = max(int(k.split(".")[1]) for k in H) + 1
    ref_h = read_header(ref)
    oth_label, oth_path = next(iter(others.items())) if others else (None, None)
    out = {}
    tables = {}
    for label, path in maqs.items():
        h = read_header(path)
        oh = read_header(oth_path) if oth_path else None
        rows = {}
        for i in range(n_layer):
            for k in KINDS:
                n = TE.tensor_name(i, k)
                Hk = H[f"blk.{i}.{TE.INPUT_OF[k]}"]
                W = read_weight(ref, n, ref_h)[0]
                Q, sal = read_weight(path, n, h)
                Qo = read_weight(oth_path, n, oh)[0] if oh else None
                b = TE.salient_breakdown(W, Q, sal, Hk, Qo)
                # how important are the inputs the salient words cover: max H_jj of a word over the median H_jj
                d = torch.diagonal(Hk).numpy()
                dw = d.reshape(-1, 16).max(axis=1)
                med = float(np.median(d)) or 1e-30
                cols = np.nonzero(sal.any(axis=0))[0]
                b["h_ratio_salient_words"] = float(np.median(np.repeat(dw[None, :], sal.shape[0], 0)[sal]) / med) \
                    if sal.any() else float("nan")
                b["h_ratio_all_words"] = float(np.median(dw) / med)
                b["salient_word_columns"] = int(len(cols))
                rows[n] = b
        out[label] = rows
        keys = ["total", "salient_only", "mean4_only", "nonsalient_only", "other_on_salient", "other_total",
                "mean4_loss_salient", "mean4_loss_all", "adjacent_corr"]
        lines = ["| kind | salient % | " + " | ".join(keys) + " | energy of salient words | median max-H_jj of "
                 "salient words / of all words (x median H_jj) |", "|---" * (len(keys) + 4) + "|"]
        for k in KINDS:
            sub = [v for n, v in rows.items() if n.split(".")[2] == k]
            rms = {kk: float(np.sqrt(np.mean([v.get(kk, float("nan")) ** 2 for v in sub]))) for kk in keys[:6]}
            rms.update({kk: float(np.mean([v[kk] for v in sub])) for kk in keys[6:]})
            lines.append(f"| {k} | {np.mean([v['salient_pct'] for v in sub]):.2f} | " +
                         " | ".join(f"{rms[kk]:.4f}" for kk in keys) +
                         f" | {np.mean([v['energy_salient'] for v in sub]):.3f} | "
                         f"{np.nanmedian([v['h_ratio_salient_words'] for v in sub]):.1f} / "
                         f"{np.median([v['h_ratio_all_words'] for v in sub]):.1f} |")
        tables[f"{label}"] = "\n".join(lines)
    return {"heldout": info, "maq": maqs, "other": others, "breakdown": out, "tables": tables}


def cmd_hybrid(args) -> dict:
    from maq.evaluation import hybrid, ppl
    from maq.runtime.api import Llama

    files = _pairs(args.file)
    f32 = args.f32 or str(_f32_reference(args))
    text = args.text or str(E.default_data_dir() / "wikitext-2-raw" / "wiki.test.raw")
    res_path = Path(args.out)
    prev = json.loads(res_path.read_text()) if res_path.is_file() else {}
    results = prev.get("results", {})
    from maq.runtime.inspect import read_header

    n_layer = int(read_header(f32).metadata["llama.block_count"])
    kinds = args.kinds.split(",") if args.kinds else list(KINDS)
    groups: list[tuple[str, list[str]]] = []
    for k in kinds:
        groups.append((k, [TE.tensor_name(i, k) for i in range(n_layer)]))
    if args.layers:
        for spec in args.layers.split(";"):
            a, b = (int(x) for x in spec.split("-"))
            groups.append((f"blocks {a}-{b}", [TE.tensor_name(i, k) for i in range(a, b + 1) for k in KINDS]))
    tmpdir = Path(args.cache) / "hybrid"
    tmpdir.mkdir(parents=True, exist_ok=True)
    tokens = None
    for label, path in files.items():
        for gname, names in groups:
            key = f"{label} | {gname}"
            if key in results and results[key].get("windows") == args.limit:
                continue
            hpath = tmpdir / "hybrid.gguf"
            hybrid.write_hybrid(f32, hpath, hybrid.replacements(path, names))
            llm = Llama(str(hpath), n_ctx=2048, n_threads=args.threads, n_batch=128, verbose=False)
            if tokens is None:
                tokens, bos = ppl.tokenize_file(llm, text)
            t0 = time.time()
            ws = ppl.run(llm.model, tokens, 2048, args.limit, bos_id=bos)
            s = ppl.summarize(ws, "full")
            results[key] = {"file": label, "group": gname, "ppl": s["ppl"], "tokens": s["tokens"],
                            "windows": s["windows"], "seconds": time.time() - t0}
            log.info("%s: ppl %.4g (%d windows)", key, s["ppl"], s["windows"])
            del llm
            res_path.write_text(json.dumps({"results": results, "tables": {}}, indent=1))
    lines = ["| replaced by the quantized file (rest reference) | " + " | ".join(files) + " |",
             "|---" * (len(files) + 1) + "|"]
    for gname, _ in groups:
        cells = []
        for label in files:
            r = results.get(f"{label} | {gname}")
            cells.append(f"{r['ppl']:.4g}" if r else "—")
        lines.append(f"| {gname} | " + " | ".join(cells) + " |")
    return {"f32": f32, "text": text, "limit": args.limit, "files": files, "results": results,
            "tables": {"hybrid": "\n".join(lines)}}


def _f32_reference(args) -> Path:
    from maq.evaluation import configs as C
    from maq.evaluation import convert
    from maq.runtime.models import smollm2_path

    src = Path(args.ref)
    r = convert.convert(C.Config("f32", "convert", flags=("--method", "f32")), src, C.source_identity(src),
                        Path(args.cache) / "convert", any_tool=True)
    return r.path


def main(argv=None) -> int:
    from maq.runtime.models import smollm2_path

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("errors", "salient", "hybrid"):
        p = sub.add_parser(name)
        p.add_argument("--ref", default=None, help="reference GGUF (default: the SmolLM2 Q4_1 file)")
        p.add_argument("--cache", default=str(E.default_cache()))
        p.add_argument("--out", default=None, help="results JSON (default docs/results/tensors_<cmd>.json)")
        p.add_argument("--heldout", default="c4", help="held-back text: 'c4' (documents 900-999) or a path")
        p.add_argument("--nsamples", type=int, default=8)
        p.add_argument("--seqlen", type=int, default=2048)
        p.add_argument("--seed", type=int, default=1)
        p.add_argument("--threads", type=int, default=2)
    e = sub.choices["errors"]
    e.add_argument("--file", action="append", default=[], metavar="LABEL=PATH")
    e.add_argument("--kinds", default="")
    e.add_argument("--detail-kind", default="ffn_down")
    e.add_argument("--plot", default=None, help="PNG of the error per layer (e.g. docs/results/tensor_errors.png)")
    s = sub.choices["salient"]
    s.add_argument("--maq", action="append", default=[], metavar="LABEL=PATH")
    s.add_argument("--other", action="append", default=[], metavar="LABEL=PATH")
    hy = sub.choices["hybrid"]
    hy.add_argument("--file", action="append", default=[], metavar="LABEL=PATH")
    hy.add_argument("--f32", default=None, help="F32 reference GGUF (default: maq convert --method f32, cached)")
    hy.add_argument("--kinds", default="")
    hy.add_argument("--layers", default="", help="also replace all kinds of block ranges, e.g. '0-9;10-19;20-29'")
    hy.add_argument("--limit", type=int, default=3)
    hy.add_argument("--text", default=None)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("gguf").setLevel(logging.WARNING)
    args.ref = args.ref or str(smollm2_path())
    args.out = args.out or str(ROOT / "docs" / "results" / f"tensors_{args.cmd}.json")
    Path(args.cache).mkdir(parents=True, exist_ok=True)
    res = {"errors": cmd_errors, "salient": cmd_salient, "hybrid": cmd_hybrid}[args.cmd](args)
    res["command"] = sys.argv
    res["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=1, default=float))
    for name, md in res["tables"].items():
        print(f"\n### {name}\n{md}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
