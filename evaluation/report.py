"""docs/results/*.json -> the generated sections of docs/RESULTS.md and the perplexity vs bits/weight plots.

docs/RESULTS.md is hand-written prose with generated tables between markers::

    <!-- BEGIN GENERATED run:table -->  ...  <!-- END GENERATED run:table -->

``write`` re-renders every marked section whose results file exists (tables: ppl, c4, ablation, zeroshot, types,
speed, plot) and appends a section with all tables for a results file RESULTS.md does not mention yet; the block
``all:plot`` is one plot of every run's rows (each results file a series), added at the end if missing. So a new
run (``scripts/evaluate.py --run curve --config "maq 3.0=--target-bpw 3.0" ...``) gets its own section and joins
the common plot on the next ``--report``. Nothing
is measured here: the tables can be regenerated from the JSON at any time.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from maq.runtime import gguf_loader as gl

MARK = re.compile(r"<!-- BEGIN GENERATED ([\w.\-]+):(\w+) -->\n.*?<!-- END GENERATED \1:\2 -->", re.S)
ALL = "all"              # <!-- BEGIN GENERATED all:plot -->: one plot of every run's rows (runs may not be named "all")
TABLES = ("ppl", "c4", "ablation", "zeroshot", "types", "speed", "plot")
ZS_ORDER = ("piqa", "boolq", "openbookqa", "winogrande", "arc_easy", "arc_challenge", "hellaswag")


def _f(x, nd=2) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, float) and math.isinf(x):
        return "inf"
    if isinstance(x, (int, float)):
        ax = abs(x)
        if ax >= 1e5:
            return f"{x:.2e}"
        if ax >= 1000:
            return f"{x:,.0f}"
        return f"{x:.{nd}f}"
    return str(x)


def _ppl(row: dict, key: str, proto: str, first10: bool = False) -> dict | None:
    slot = (row.get("ppl") or {}).get(key) or {}
    s = (slot.get("first10") or {}).get(proto) if first10 else slot.get(proto)
    if s is None and slot.get("windows"):                 # interrupted run: summarize what is there
        from .ppl import from_json, summarize

        ws = from_json(slot["windows"])
        s = summarize(ws, proto, 10 if first10 else None)
        s["partial"] = True
    return s


def _ppl_cell(s: dict | None) -> str:
    if not s or not s.get("tokens"):
        return "—"
    return _f(s["ppl"], 3 if s["ppl"] < 100 else 1) + (" (partial)" if s.get("partial") else "")


def _method(row: dict) -> str:
    md = row.get("metadata") or {}
    if row.get("kind") == "reference":
        return "reference (source file)"
    if row.get("kind") == "llamacpp":
        return "llama.cpp " + row["spec"].split(":", 1)[1]
    m = md.get("maq.method", "?")
    extra = []
    if m == "maq":
        frac = md.get("maq.salient.fraction")
        k = md.get("maq.salient.top_k", -1)
        extra.append(f"K={k}" if k not in (-1, None) else f"F={frac:.4f}" if frac is not None else "")
        if md.get("maq.ablation"):
            extra.append(md["maq.ablation"])
        if md.get("maq.salient.feedback") is False:
            extra.append("no feedback")
    if m in ("maq", "gptq", "rtn"):
        extra.append(f"g{md.get('maq.group_size', '?')}")
        if m != "rtn":
            extra.append(md.get("maq.scale_search", ""))
    note = " (-M: same tensors as GPTQ)" if "--no-mixed" in (row.get("conversion") or {}).get("note", "") else ""
    return " ".join([m] + [e for e in extra if e]) + note


def _err(row: dict) -> str:
    return f"**failed** ({row['error'][:70]}...)" if row.get("error") else ""


def _windows(s: dict | None) -> str:
    return f"{s['windows']} / {s['tokens']}" if s and s.get("tokens") else "—"


def table_ppl(run: dict) -> str:
    """Table 1 shape: WikiText-2 perplexity with bits/weight and size."""
    out = ["| configuration | method | linear bits/w | file MiB | vs BF16 | PPL full | PPL second-half | "
           "windows / tokens (full) | llama.cpp PPL (its protocol) | PPL full, first 10 win | convert s |",
           "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in run["rows"]:
        if r.get("error") and not r.get("bpw"):
            out.append(f"| {r['name']} | {r.get('spec', '')} | — | — | — | {_err(r)} | | | | | |")
            continue
        full, half = _ppl(r, "wikitext2", "full"), _ppl(r, "wikitext2", "second-half")
        f10 = _ppl(r, "wikitext2", "full", first10=True)
        lc = r.get("llamacpp_ppl") or {}
        lc_cell = f"{_f(lc['ppl'], 3)} ({lc['windows']} win{', partial' if lc.get('partial') else ''})" \
            if lc.get("ppl") is not None else "—"
        size = r.get("size") or {}
        conv = r.get("conversion") or {}
        secs = conv.get("seconds")
        note = "" if not r.get("runtime_note") or full else " (runtime: n/a)"
        cells = [r["name"], _method(r) + note, _f((r.get("bpw") or {}).get("linear"), 3),
                 _f(size.get("file_bytes", 0) / 2**20, 1), f"{100 * size.get('size_vs_bf16', float('nan')):.1f}%",
                 _ppl_cell(full), _ppl_cell(half), _windows(full), lc_cell,
                 _ppl_cell(f10) if full and full.get("windows", 0) > 10 else "", _f(secs, 0) if secs else "—"]
        if r.get("error"):
            cells[5] += " " + _err(r)
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def table_c4(run: dict) -> str:
    """Table 2 shape: C4 perplexity (held-out documents)."""
    rows = [r for r in run["rows"] if (r.get("ppl") or {}).get("c4")]
    if not rows:
        return "_no C4 measurements in this run_"
    out = ["| configuration | method | linear bits/w | C4 PPL full | C4 PPL second-half | windows / tokens |",
           "|---|---|---|---|---|---|"]
    for r in rows:
        full, half = _ppl(r, "c4", "full"), _ppl(r, "c4", "second-half")
        out.append(f"| {r['name']} | {_method(r)} | {_f(r['bpw']['linear'], 3)} | {_ppl_cell(full)} | "
                   f"{_ppl_cell(half)} | {_windows(full)} |")
    return "\n".join(out)


def table_ablation(run: dict) -> str:
    """Table 4 shape: the full method against -G and -M (same run, same options otherwise)."""
    pick = {}
    for r in run["rows"]:
        md = r.get("metadata") or {}
        spec = r.get("spec", "")
        if md.get("maq.method") != "maq" and "--no-mixed" not in spec:
            continue
        if any(f in spec for f in ("--salient-frac", "--top-k", "--group", "--scale-search", "--no-salient-feedback")):
            continue                                     # the ablation compares the default method only
        ab = "no-mixed" if "--no-mixed" in spec else "no-grouping" if "--no-grouping" in spec else \
            md.get("maq.ablation", "")
        label = {"": "full method", "no-grouping": "without grouping (-G)",
                 "no-mixed": "without mixed precision (-M)"}.get(ab)
        if label and label not in pick:
            pick[label] = r
    if not pick:
        return "_no ablation rows in this run_"
    out = ["| variant | configuration | linear bits/w | WikiText-2 PPL full | windows / tokens |", "|---|---|---|---|---|"]
    for label in ("full method", "without grouping (-G)", "without mixed precision (-M)"):
        if label in pick:
            r = pick[label]
            full = _ppl(r, "wikitext2", "full")
            out.append(f"| {label} | {r['name']} | {_f(r['bpw']['linear'], 3)} | {_ppl_cell(full)} | "
                       f"{_windows(full)} |")
    return "\n".join(out)


def table_zeroshot(run: dict) -> str:
    """Table 3 shape: zero-shot accuracy (%); acc_norm in parentheses where the harness reports it."""
    rows = [r for r in run["rows"] if r.get("zeroshot")]
    if not rows:
        return "_no zero-shot measurements in this run_"
    tasks = [t for t in ZS_ORDER if any(t in r["zeroshot"] for r in rows)]
    tasks += sorted({t for r in rows for t in r["zeroshot"]} - set(tasks))
    out = ["| configuration | bits | " + " | ".join(tasks) + " | avg acc |", "|---" * (len(tasks) + 3) + "|"]
    for r in rows:
        cells, accs = [], []
        for t in tasks:
            z = r["zeroshot"].get(t)
            if not z:
                cells.append("—")
                continue
            accs.append(z["acc"])
            norm = f" ({100 * z['acc_norm']:.1f})" if z.get("acc_norm") is not None else ""
            cells.append(f"{100 * z['acc']:.1f}{norm} n={z['n']}")
        avg = f"{100 * sum(accs) / len(accs):.1f}" if accs else "—"
        out.append(f"| {r['name']} | {_f(r['bpw']['linear'], 3)} | " + " | ".join(cells) + f" | {avg} |")
    return "\n".join(out)


# results written before maq.runtime.inspect named llama.cpp's extra types (gguf_loader.LLAMACPP_EXTRA_TYPES)
# hold "type<id>": name those
GGML_NAMES = {f"type{t}": name for t, (name, _, _) in gl.LLAMACPP_EXTRA_TYPES.items()}


def _tname(t: str) -> str:
    return f"{GGML_NAMES[t]} (ggml type {t[4:]})" if t in GGML_NAMES else t


def table_types(run: dict) -> str:
    """What each file's linear tensors really are: per storage type, tensors / bits/weight."""
    out = ["| configuration | linear tensors by type (tensors: bits/w) | linear bits/w | all tensors bits/w | "
           "per kind |", "|---|---|---|---|---|"]
    for r in run["rows"]:
        b = r.get("bpw")
        if not b:
            continue
        types = ", ".join(f"{_tname(t)} ×{d['tensors']}: {d['bpw']:.3f}" for t, d in b["linear_by_type"].items())
        kinds = ", ".join(f"{k} {'/'.join(GGML_NAMES.get(t, t) for t in v['types'])}"
                          for k, v in b["linear_by_kind"].items())
        out.append(f"| {r['name']} | {types} | {b['linear']:.3f} | {b['all']:.3f} | {kinds} |")
    return "\n".join(out)


def table_speed(run: dict) -> str:
    rows = [r for r in run["rows"] if r.get("speed")]
    if not rows:
        return "_no speed measurements in this run_"
    ths = sorted({k for r in rows for src in r["speed"].values() for k in src}, key=lambda s: int(s[1:]))
    head = " | ".join(f"ours tg {t} | llama.cpp tg {t}" for t in ths)
    out = [f"| configuration | file MiB | {head} | ours pp128 {ths[-1]} | llama.cpp pp128 {ths[-1]} | "
           f"ours tg {ths[0]} per CPU-s | load avg |",
           "|---" * (3 + 2 * len(ths) + 3) + "|"]
    for r in rows:
        sp = r["speed"]
        cells = []
        for t in ths:
            cells.append(_f(((sp.get("maq") or {}).get(t) or {}).get("tg"), 1))
            cells.append(_f(((sp.get("llamacpp") or {}).get(t) or {}).get("tg"), 1))
        t = ths[-1]
        out.append(f"| {r['name']} | {_f(r['size']['file_bytes'] / 2**20, 1)} | " + " | ".join(cells) +
                   f" | {_f(((sp.get('maq') or {}).get(t) or {}).get('pp'), 1)} | "
                   f"{_f(((sp.get('llamacpp') or {}).get(t) or {}).get('pp'), 1)} | "
                   f"{_f(((sp.get('maq') or {}).get(ths[0]) or {}).get('tg_cpu'), 1)} | "
                   f"{_f(((sp.get('maq') or {}).get(ths[0]) or {}).get('load_avg', r.get('speed_load_avg')), 1)} |")
    return "\n".join(out)


PROTOCOLS = ("full", "second-half")


def _pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def _ppl_points(r: dict, proto: str) -> tuple[float | None, list[tuple[float, bool]]]:
    """(linear bits/weight or None, [(perplexity, ours)]) of a row under a protocol: our runtime's figure, and for
    the second-half protocol llama.cpp's own (``ours`` False)."""
    b = (r.get("bpw") or {}).get("linear")
    if b is None:
        return None, []
    pts = []
    s = _ppl(r, "wikitext2", proto)
    if s and s.get("tokens") and math.isfinite(s["ppl"]):
        pts.append((s["ppl"], True))
    lc = (r.get("llamacpp_ppl") or {}).get("ppl") if proto == "second-half" else None
    if lc is not None and math.isfinite(lc):
        pts.append((lc, False))
    return b, pts


def _save(plt, fig, out: Path, n_points: int, image_md: str) -> str:
    """Save (when anything was drawn) and close the figure; the markdown image line or a placeholder."""
    fig.tight_layout()
    if not n_points:
        plt.close(fig)
        return "_no perplexity measured yet_"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return image_md


def plot(run: dict, out: Path) -> str:
    """PNG: perplexity vs linear bits/weight, log y; left our runtime's full protocol, right the second-half
    protocol (ours, and llama.cpp's own figure for its files). Returns the markdown image line."""
    plt = _pyplot()
    if plt is None:
        return "_matplotlib not installed: no plot_"
    fig, axes = plt.subplots(1, 2, figsize=(12, 5), sharey=True)
    n_points = 0
    for ax, proto in zip(axes, PROTOCOLS):
        for r in run["rows"]:
            b, pts = _ppl_points(r, proto)
            for y, ours in pts:
                color = "C3" if r.get("kind") == "llamacpp" else ("C0" if "maq" in _method(r) else "C2")
                ax.scatter([b], [y], marker="o" if ours else "x", color=color, s=40)
                ax.annotate(r["name"] + ("" if ours else " (llama.cpp)"), (b, y), fontsize=7,
                            xytext=(4, 3), textcoords="offset points")
                n_points += 1
        ax.set_xscale("linear")
        ax.set_yscale("log")
        ax.set_xlabel("linear tensors: bits/weight (honest, from the file)")
        ax.set_title(f"WikiText-2, protocol {proto}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("perplexity (log)")
    meta = run.get("meta", {})
    fig.suptitle(f"{run['run']}: {Path(meta.get('source', '')).name}, ctx {meta.get('ctx')}, "
                 f"limit {meta.get('limit') or 'all'} windows", fontsize=10)
    return _save(plt, fig, out, n_points, f"![perplexity vs bits/weight ({run['run']})](results/{out.name})")


def plot_all(runs: dict[str, dict], out: Path) -> str:
    """PNG: perplexity vs linear bits/weight of every row of every results file, one series (colour, marker) per
    run; left the full protocol (our runtime), right the second-half protocol (ours; llama.cpp's own figure for its
    files drawn hollow). A file measured in several runs (same path) is labelled once. Runs named ``curve*`` are
    drawn as lines through their rows in bits/weight order (a size/quality dial). Returns the markdown image line."""
    plt = _pyplot()
    if plt is None:
        return "_matplotlib not installed: no plot_"
    markers = "osD^v<>Pph*"
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    n_points = 0
    for ax, proto in zip(axes, PROTOCOLS):
        labelled: set[tuple[str, str]] = set()
        for si, (name, run) in enumerate(sorted((n, r) for n, r in runs.items()      # hybrids: their own plot
                                                if "rows" in r and not (r.get("meta") or {}).get("hybrid"))):
            color, marker = f"C{si % 10}", markers[si % len(markers)]
            xs, ys = [], []
            for r in run["rows"]:
                b, pts = _ppl_points(r, proto)
                for y, ours in pts:
                    ax.scatter([b], [y], marker=marker, s=42, color=color if ours else "none",
                               edgecolors=color, linewidths=1.2,
                               label=name if (ours and (name, proto) not in labelled) else None)
                    labelled.add((name, proto))
                    key = (r.get("file") or r["name"], "ours" if ours else "llama.cpp")
                    if key not in labelled:
                        labelled.add(key)
                        ax.annotate(r["name"] + ("" if ours else " (llama.cpp tool)"), (b, y), fontsize=6.5,
                                    xytext=(4, 3), textcoords="offset points")
                    if ours:
                        xs.append(b)
                        ys.append(y)
                    n_points += 1
            if name.startswith("curve") and len(xs) > 1:
                order = sorted(range(len(xs)), key=xs.__getitem__)
                ax.plot([xs[i] for i in order], [ys[i] for i in order], color=color, lw=1)
        ax.set_yscale("log")
        ax.set_xlabel("linear tensors: bits/weight (from the file)")
        ax.set_title(f"WikiText-2 perplexity, protocol {proto}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, title="run (results file)", title_fontsize=7)
    axes[0].set_ylabel("perplexity (log scale)")
    lims = sorted({(r.get("meta") or {}).get("limit") for r in runs.values() if "rows" in r}, key=str)
    fig.suptitle("all runs in docs/results/ (windows of 2048; --limit " + ", ".join(str(x or "all") for x in lims)
                 + "); hollow: llama.cpp's llama-perplexity on its own file", fontsize=9)
    return _save(plt, fig, out, n_points, f"![perplexity vs bits/weight, all runs](results/{out.name})")


def render(run: dict, table: str, results_dir: Path) -> str:
    if table == "plot":
        return plot(run, results_dir / f"{run['run']}_ppl_vs_bpw.png")
    return {"ppl": table_ppl, "c4": table_c4, "ablation": table_ablation, "zeroshot": table_zeroshot,
            "types": table_types, "speed": table_speed}[table](run)


def run_header(run: dict) -> str:
    m = run.get("meta", {})
    return (f"Source `{Path(m.get('source', '')).name}`, text `{Path(m.get('text', '')).name}`, ctx {m.get('ctx')}, "
            f"limit {m.get('limit') or 'none (whole text)'}, common converter flags `{m.get('convert_flags') or ''}`, "
            f"{m.get('cpu', '')}, started {m.get('started', '')}, finished {m.get('finished', 'not yet')}.")


def block(run_name: str, table: str, body: str) -> str:
    return f"<!-- BEGIN GENERATED {run_name}:{table} -->\n{body}\n<!-- END GENERATED {run_name}:{table} -->"


def order_rows(run: dict) -> list[dict]:
    """Rows in a reading order: the reference first, then our conversions, then llama.cpp's files; inside each, the
    order of the preset named in the run's command (if any), else the order they were first measured."""
    from .configs import PRESETS

    cmd = (run.get("meta") or {}).get("command") or []
    names: list[str] = []
    for i, a in enumerate(cmd):
        if a == "--preset" and i + 1 < len(cmd) and cmd[i + 1] in PRESETS:
            names = [n for n, _ in PRESETS[cmd[i + 1]]]
    rank = {"reference": 0, "convert": 1, "file": 1, "llamacpp": 2}
    idx = {r["name"]: i for i, r in enumerate(run["rows"])}
    return sorted(run["rows"], key=lambda r: (rank.get(r.get("kind"), 1),
                                              names.index(r["name"]) if r["name"] in names else 1000 + idx[r["name"]]))


def load_runs(results_dir: Path) -> dict[str, dict]:
    runs = {}
    for p in sorted(results_dir.glob("*.json")):
        try:
            d = json.loads(p.read_text())
        except json.JSONDecodeError:
            continue
        if isinstance(d, dict) and ("rows" in d or "tables" in d):
            d["run"] = p.stem
            if "rows" in d:
                d["rows"] = order_rows(d)
            runs[p.stem] = d
    return runs


def write(results_dir: Path, md_path: Path) -> None:
    runs = load_runs(results_dir)
    text = md_path.read_text() if md_path.is_file() else "# Results\n"

    def sub(m: re.Match) -> str:
        name, table = m.group(1), m.group(2)
        if name == ALL and table == "plot":
            return block(ALL, "plot", plot_all(runs, results_dir / "all_ppl_vs_bpw.png"))
        run = runs.get(name)
        if run is None:
            return m.group(0)
        if table in (run.get("tables") or {}):              # analysis files carry their own markdown
            return block(name, table, run["tables"][table])
        if table not in TABLES or "rows" not in run:
            return m.group(0)
        return block(name, table, render(run, table, results_dir))

    if f"BEGIN GENERATED {ALL}:plot" not in text:
        text += "\n## Perplexity vs bits/weight, all runs\n\n" + block(ALL, "plot", "") + "\n"
    text = MARK.sub(sub, text)
    for name, run in runs.items():
        if f"BEGIN GENERATED {name}:" in text:
            continue
        if "rows" not in run:
            parts = [f"\n## `{name}`\n"] + [block(name, t, md) + "\n" for t, md in run["tables"].items()]
            text += "\n".join(parts)
            continue
        parts = [f"\n## Run `{name}`\n", run_header(run) + "\n"]
        for t in TABLES:
            parts.append(block(name, t, render(run, t, results_dir)) + "\n")
        text += "\n".join(parts)
    tmp = md_path.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(md_path)


def one_line(row: dict) -> str:
    if row.get("error"):
        return f"{row['name']}: FAILED {row['error']}"
    full = _ppl(row, "wikitext2", "full")
    half = _ppl(row, "wikitext2", "second-half")
    lc = (row.get("llamacpp_ppl") or {}).get("ppl")
    return (f"{row['name']}: {(row.get('bpw') or {}).get('linear', float('nan')):.3f} bits/w, "
            f"ppl full {_ppl_cell(full)}, second-half {_ppl_cell(half)}"
            + (f", llama.cpp {lc:.3f}" if lc else "") + f" ({_windows(full)})")
