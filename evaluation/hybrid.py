"""Hybrid models: an F32 GGUF with some linear weights replaced by another file's dequantized weights.

Used to find which tensors break a model first ("quantize one tensor kind at a time, the rest reference"): the
replacement values are exactly what the quantized file's runtime would multiply by (``inspect.read_weight``), stored
as F32 so the rest of the model stays the reference. The copy is byte-identical outside the replaced tensors' data
(header, metadata, offsets unchanged); written to a temp name and renamed.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from maq.errors import MAQError
from maq.runtime.inspect import read_header, read_weight


def write_hybrid(base_f32: str | os.PathLike, out: str | os.PathLike, replace: dict[str, np.ndarray]) -> Path:
    """Copy ``base_f32`` to ``out`` with tensors ``replace`` {name: float32 [P, T]} overwritten in place."""
    base, out = Path(base_f32), Path(out)
    h = read_header(base)
    by = {t.name: t for t in h.tensors}
    for name, W in replace.items():
        t = by.get(name)
        if t is None:
            raise MAQError(f"{base}: no tensor {name}")
        if t.type_name != "F32":
            raise MAQError(f"{base}: {name} is {t.type_name}; a hybrid needs an F32 base")
        if tuple(W.shape) != tuple(reversed(t.ne)):
            raise MAQError(f"{name}: replacement shape {list(W.shape)}, file has {list(reversed(t.ne))}")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.copyfile(base, tmp)
    try:
        with open(tmp, "r+b") as f:
            for name, W in replace.items():
                t = by[name]
                data = np.ascontiguousarray(W, dtype="<f4").tobytes()
                assert len(data) == t.nbytes
                f.seek(t.offset)
                f.write(data)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def replacements(quantized: str | os.PathLike, names: list[str]) -> dict[str, np.ndarray]:
    """{name: dequantized weight} of ``names`` in a quantized file."""
    h = read_header(quantized)
    return {n: read_weight(quantized, n, h)[0] for n in names}


# ---------------------------------------------------------------------------------------------- one-kind hybrids
def kind_names(path: str | os.PathLike, kind: str) -> list[str]:
    """The weight tensors of one linear kind (``ffn_down``: ``blk.N.ffn_down.weight``), in file order."""
    from maq.runtime.inspect import LINEAR_KINDS

    if kind not in LINEAR_KINDS:
        raise MAQError(f"--hybrid {kind!r}: expected one of {', '.join(LINEAR_KINDS)}")
    names = [t.name for t in read_header(path).tensors
             if t.name.startswith("blk.") and t.name.endswith(f".{kind}.weight")]
    if not names:
        raise MAQError(f"{path}: no {kind} tensors")
    return names


def kind_bits(path: str | os.PathLike, kind: str) -> dict:
    """{bpw, tensors, weights, bytes, types, salient_pct} of one kind's tensors in a file, every byte counted
    (MAQ's bitmap and scale parts included: ``maq.runtime.inspect``)."""
    from maq.runtime.inspect import file_summary

    by_kind = file_summary(path)["totals"]["linear_by_kind"]
    if kind not in by_kind:
        raise MAQError(f"{path}: no {kind} tensors")
    return dict(by_kind[kind])


def prepare(quantized: str | os.PathLike, base_f32: str | os.PathLike, kind: str, out_dir: str | os.PathLike,
            is_reference: bool = False) -> tuple[Path, dict]:
    """(hybrid file, description): ``base_f32`` with the ``kind`` tensors replaced by ``quantized``'s dequantized
    ones, written once to ``out_dir/<quantized stem>.<kind>.gguf`` (the name carries the quantized file's size, so
    a re-made file of the same name is not mistaken for it). ``is_reference``: the F32 copy of the reference is the
    hybrid itself (its weights are the reference's)."""
    quantized, base_f32 = Path(quantized), Path(base_f32)
    info = {"kind": kind, "from": str(quantized), **kind_bits(quantized, kind)}
    if is_reference:
        return base_f32, info
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{quantized.stem}.{quantized.stat().st_size}.{kind}.gguf"
    if not out.is_file():
        write_hybrid(base_f32, out, replacements(quantized, kind_names(quantized, kind)))
    return out, info


def _points(run: dict) -> list[dict]:
    """One point per measured row: name, family (maq / llama.cpp / reference), bits/weight of the kind, PPL."""
    pts = []
    for r in run.get("rows", []):
        hy = r.get("hybrid") or {}
        full = ((r.get("ppl") or {}).get("wikitext2") or {}).get("full") or {}
        if not hy or not full.get("tokens"):
            continue
        fam = "reference" if r.get("kind") == "reference" else "llama.cpp" if r.get("kind") == "llamacpp" else "maq"
        pts.append({"name": r["name"], "family": fam, "bpw": hy["bpw"], "types": hy.get("types", []),
                    "salient_pct": hy.get("salient_pct"), "ppl": full["ppl"], "windows": full.get("windows"),
                    "tokens": full.get("tokens")})
    return pts


def frontier_check(points: list[dict]) -> list[str]:
    """For each llama.cpp point, whether some MAQ point at equal or fewer bits/weight has perplexity at or below it:
    lines "TYPE bpw ppl: beaten by NAME (bpw, ppl)" or "... : NOT matched"."""
    maq = [p for p in points if p["family"] == "maq"]
    out = []
    for q in sorted((p for p in points if p["family"] == "llama.cpp"), key=lambda p: p["bpw"]):
        fewer = [p for p in maq if p["bpw"] <= q["bpw"] + 1e-9]
        ok = [p for p in fewer if p["ppl"] <= q["ppl"]]
        head = f"{q['name']} ({q['bpw']:.3f} bits/w, PPL {q['ppl']:.3f}): "
        if ok:
            best = min(ok, key=lambda p: p["bpw"])
            out.append(head + f"matched by {best['name']} ({best['bpw']:.3f}, {best['ppl']:.3f})")
        elif fewer:
            best = min(fewer, key=lambda p: p["ppl"])
            out.append(head + f"NOT matched: the best MAQ point at equal or fewer bits is {best['name']} "
                       f"({best['bpw']:.3f}, {best['ppl']:.3f})")
        else:
            out.append(head + "NOT matched: no MAQ point measured at equal or fewer bits")
    return out


def table(run: dict) -> str:
    """Markdown: one row per configuration in bits/weight order (the kind's tensors), PPL, types, and the check."""
    pts = sorted(_points(run), key=lambda p: (p["family"] != "reference", p["bpw"]))
    if not pts:
        return "_no hybrid measurements yet_"
    kind = next((r["hybrid"]["kind"] for r in run["rows"] if r.get("hybrid")), "?")
    ref = next((p["ppl"] for p in pts if p["family"] == "reference"), None)
    out = [f"| configuration | family | {kind} bits/w | {kind} storage types | salient % | WikiText-2 PPL (full) | "
           "vs reference | windows / tokens |", "|---|---|---|---|---|---|---|---|"]
    for p in pts:
        sal = "—" if p["salient_pct"] is None else f"{p['salient_pct']:.2f}"
        rel = f"{p['ppl'] / ref:.3f}x" if ref else "—"
        out.append(f"| {p['name']} | {p['family']} | {p['bpw']:.3f} | {', '.join(p['types'])} | {sal} | "
                   f"{p['ppl']:.3f} | {rel} | {p['windows']} / {p['tokens']} |")
    out += ["", "Each llama.cpp point against MAQ's points at equal or fewer bits/weight:", ""]
    out += [f"- {line}" for line in frontier_check(pts)]
    return "\n".join(out)


def plot(run: dict, out: Path) -> str:
    """Perplexity against the kind's bits/weight: MAQ's points (line), llama.cpp's (labelled), the reference (dashed
    line). Returns the markdown image line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = _points(run)
    if not pts:
        return "_no hybrid measurements yet_"
    kind = next((r["hybrid"]["kind"] for r in run["rows"] if r.get("hybrid")), "?")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for fam, style in (("maq", dict(color="C0", marker="o", ls="-")), ("llama.cpp", dict(color="C3", marker="s",
                                                                                          ls=":"))):
        ps = sorted((p for p in pts if p["family"] == fam), key=lambda p: p["bpw"])
        if ps:
            ax.plot([p["bpw"] for p in ps], [p["ppl"] for p in ps], label=fam, **style)
            for p in ps:
                ax.annotate(p["name"].replace("llama.cpp ", ""), (p["bpw"], p["ppl"]), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
    for p in pts:
        if p["family"] == "reference":
            ax.axhline(p["ppl"], color="gray", ls="--", lw=1, label=f"reference ({p['bpw']:.2f} bits/w)")
    ax.set_yscale("log")
    ax.set_xlabel(f"bits/weight of the {kind} tensors (every byte counted)")
    ax.set_ylabel("WikiText-2 perplexity (log scale)")
    w = {p["windows"] for p in pts}
    ax.set_title(f"only {kind} quantized, the rest the reference ({', '.join(map(str, sorted(w)))} windows of 2048)",
                 fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return f"![{kind}-only perplexity vs bits/weight](results/{out.name})"
