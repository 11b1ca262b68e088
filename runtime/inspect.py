"""``maq inspect MODEL.gguf``: what a GGUF file really holds, tensor by tensor, counted honestly.

Per logical tensor: storage type, logical shape [P, T], bytes of every part (a part is any tensor whose name begins
with the tensor's name plus a dot: a MAQ2 weight's ``.bitmap``, ``.scales``, ``.rowscale``), honest bits/weight
(all those bytes x 8 / P·T), the salient-word percentage and group size of MAQ tensors. Then per storage type and
for the linear tensors as a whole, the file size against a BF16 file of the same model, and a metadata summary.

The tensor table is read by the runtime's validating reader in its tolerant mode (``gguf_loader.GGUFFile(path,
tolerant=True)``): llama.cpp types newer than the ``gguf`` package are sized from ``gguf_loader.LLAMACPP_EXTRA_TYPES``
(Q2_0), other unknown ids from the distance between tensor offsets (flagged ``exact=False``).

``--plot out.png --tensor NAME`` draws, like the paper's Fig. 3, the salient-word bitmap of one tensor, the reference
weight magnitude per 16-weight word and the error maps |W - Ŵ| per word of this file and of ``--compare OTHER.gguf``
against ``--ref REF.gguf`` (matplotlib is imported only there; the runtime does not need it).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from maq.errors import MAQError
from maq.runtime import format as fmt
from maq.runtime import gguf_loader as gl

LINEAR_KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
_LINEAR_RE = re.compile(r"^blk\.(\d+)\.(%s)\.weight$" % "|".join(LINEAR_KINDS))

RawTensor = gl.TensorInfo     # name, ne, ggml_type, offset, nbytes, data, exact


def type_label(t: RawTensor) -> str:
    """The storage type shown for a raw tensor: ggml's name, or where the gguf package and the file disagree on
    the id's block size, ``type<id> (not <name>: sizes disagree)``."""
    name = t.type_name
    if not t.exact and gl.ggml_type_info(t.ggml_type) is not None and t.ggml_type not in gl.LLAMACPP_EXTRA_TYPES:
        return f"type{t.ggml_type} (not {name}: sizes disagree)"
    return name


@dataclasses.dataclass
class Header:
    path: Path
    file_size: int
    metadata: dict[str, Any]
    tensors: list[RawTensor]
    data_start: int


def read_header(path: str | os.PathLike) -> Header:
    """Metadata and tensor table of a GGUF (v2/v3), read by the runtime's validating reader in its tolerant mode
    (``gguf_loader.GGUFFile(path, tolerant=True)``: unknown ggml types are sized from the offsets, not refused)."""
    gf = gl.GGUFFile(path, tolerant=True)
    return Header(gf.path, len(gf.mm), gf.metadata, list(gf.tensors.values()), gf.data_start)


# ---------------------------------------------------------------------------------------------- accounting
@dataclasses.dataclass
class TensorRow:
    """One logical tensor. ``shape`` [P, T] for a weight ([n] for a vector); ``parts`` its GGUF tensors."""

    name: str
    type: str
    shape: tuple[int, ...]
    nbytes: int
    parts: list[str]
    salient_pct: float | None = None
    group: int | None = None
    exact: bool = True
    words: str | None = None     # MAQ word kinds: "2b", "2b+int8" / "2b+mean4" (with salient words), "3b", "4b"

    @property
    def nweights(self) -> int:
        return math.prod(self.shape)

    @property
    def bpw(self) -> float:
        return self.nbytes * 8 / self.nweights if self.nweights else 0.0

    @property
    def is_linear(self) -> bool:
        return bool(_LINEAR_RE.match(self.name))

    @property
    def kind(self) -> str:
        m = _LINEAR_RE.match(self.name)
        if m:
            return m.group(2)
        parts = self.name.split(".")
        return parts[2] if parts[0] == "blk" and len(parts) > 2 else parts[0]

    def as_dict(self) -> dict:
        return {"name": self.name, "type": self.type, "shape": list(self.shape), "nbytes": self.nbytes,
                "bpw": self.bpw, "parts": self.parts, "salient_pct": self.salient_pct, "group": self.group,
                "exact": self.exact, "words": self.words}


def word_kinds(mtype: str, salient_pct: float | None, coding: object) -> str:
    """The kinds of 32-bit words a MAQ tensor holds: "2b" (+ "int8" / "mean4" salient words), "3b", "4b"."""
    bits = fmt.BITS_OF_TYPE[mtype]
    if bits != 2 or not salient_pct:
        return f"{bits}b"
    return f"2b+{coding if isinstance(coding, str) else fmt.SALIENT_MEAN4}"


def _ggml_group(t: RawTensor) -> int | None:
    """Weights per block of a ggml block type (Q8_0: 32), None for F32/F16/... and types sized from the offsets."""
    info = gl.ggml_type_info(t.ggml_type) if t.exact else None
    bs = info[1] if info else 1
    return bs if bs > 1 else None


def tensor_rows(h: Header, salient: bool = True) -> list[TensorRow]:
    """Logical tensors of the file: each base tensor with the bytes of every ``base.*`` part added."""
    names = {t.name for t in h.tensors}
    by_name = {t.name: t for t in h.tensors}
    bases = [t for t in h.tensors if not any(t.name.startswith(b + ".") for b in _prefixes(t.name) if b in names)]
    parts_of: dict[str, list[RawTensor]] = {b.name: [] for b in bases}
    for t in h.tensors:
        if t.name in parts_of:
            continue
        base = max((b for b in _prefixes(t.name) if b in parts_of), key=len)
        parts_of[base].append(t)
    rows = []
    for b in bases:
        rows.append(_tensor_row(h, b, parts_of[b.name], by_name, salient))
        if fmt.tensor_rotation(h.metadata, b.name, str(h.path)) is not None:   # stored rotated (FORMAT.md 10)
            rows[-1].words = f"{rows[-1].words} rotated" if rows[-1].words else "rotated"
    return rows


def _tensor_row(h: Header, b: RawTensor, extra: list, by_name: dict, salient: bool) -> TensorRow:
    """One logical tensor: base ``b`` and its ``extra`` parts."""
    mtype = h.metadata.get(fmt.key_tensor_type(b.name))
    parts = [b] + extra
    nbytes = sum(p.nbytes for p in parts)
    if isinstance(mtype, str) and mtype in fmt.BITS_OF_TYPE and len(b.ne) == 2:
        T, P = b.ne[0] * fmt.WORD_WEIGHTS, b.ne[1]
        G = h.metadata.get(fmt.key_group_size(b.name), fmt.DEFAULT_GROUP)
        sal = None
        bm = by_name.get(b.name + fmt.PART_BITMAP)
        if salient and bm is not None and fmt.BITS_OF_TYPE[mtype] == 2:
            bits = np.asarray(bm.data).reshape(P, -1)
            sal = 100.0 * float(fmt.unpack_bitmap(bits, fmt.n_words(T)).mean())
        elif fmt.BITS_OF_TYPE[mtype] > 2:
            sal = 0.0
        coding = h.metadata.get(fmt.key_salient_coding(b.name), fmt.SALIENT_MEAN4)
        return TensorRow(b.name, mtype.upper(), (P, T), nbytes, [p.name for p in parts], sal, G,
                         all(p.exact for p in parts), word_kinds(mtype, sal, coding))
    shape = tuple(reversed(b.ne))
    return TensorRow(b.name, type_label(b), shape, nbytes, [p.name for p in parts], None,
                     _ggml_group(b), all(p.exact for p in parts))


def _prefixes(name: str) -> list[str]:
    """'a.b.c' -> ['a', 'a.b'] (the names this one could be a part of)."""
    bits = name.split(".")
    return [".".join(bits[:i]) for i in range(1, len(bits))]


def aggregate(rows: list[TensorRow]) -> dict:
    """Totals: linear tensors (weights, bytes, bpw), per storage type of the linears and of all tensors."""
    def summ(rs):
        w = sum(r.nweights for r in rs)
        b = sum(r.nbytes for r in rs)
        return {"tensors": len(rs), "weights": w, "bytes": b, "bpw": b * 8 / w if w else 0.0}

    lin = [r for r in rows if r.is_linear]
    out = {"linear": summ(lin), "all": summ(rows), "linear_by_type": {}, "all_by_type": {}, "linear_by_kind": {}}
    for key, sel in (("linear_by_type", lin), ("all_by_type", rows)):
        for t in sorted({r.type for r in sel}):
            out[key][t] = summ([r for r in sel if r.type == t])
    for k in LINEAR_KINDS:
        rs = [r for r in lin if r.kind == k]
        if rs:
            d = summ(rs)
            d["types"] = sorted({r.type for r in rs})
            sal = [r.salient_pct for r in rs if r.salient_pct is not None]
            d["salient_pct"] = float(np.mean(sal)) if sal else None
            d["words"] = sorted({r.words for r in rs if r.words})
            out["linear_by_kind"][k] = d
    return out


def bf16_bytes(rows: list[TensorRow], overhead: int) -> int:
    """The same model as a llama.cpp BF16 GGUF: 2-D tensors 2 bytes per weight, vectors F32, same header size."""
    return sum(r.nweights * (2 if len(r.shape) == 2 else 4) for r in rows) + overhead


METADATA_KEYS = ("general.architecture", "general.name", "general.file_type", "general.quantization_version",
                 "llama.block_count", "llama.embedding_length", "llama.feed_forward_length",
                 "llama.attention.head_count", "llama.attention.head_count_kv", "llama.context_length",
                 "llama.vocab_size", "tokenizer.ggml.model", "tokenizer.ggml.pre")


def file_summary(path: str | os.PathLike, salient: bool = True) -> dict:
    """Everything ``maq inspect`` prints, as a dict (JSON-able)."""
    h = read_header(path)
    rows = tensor_rows(h, salient=salient)
    tensor_bytes = sum(t.nbytes for t in h.tensors)
    overhead = h.file_size - tensor_bytes
    bf16 = bf16_bytes(rows, overhead)
    md = {k: h.metadata[k] for k in METADATA_KEYS if k in h.metadata}
    md.update({k: v for k, v in h.metadata.items() if k.startswith("maq.") and not k.startswith("maq.tensor.")})
    return {"path": str(h.path), "file_bytes": h.file_size, "tensor_bytes": tensor_bytes, "bf16_bytes": bf16,
            "size_vs_bf16": h.file_size / bf16 if bf16 else float("nan"), "metadata": md,
            "exact_sizes": all(r.exact for r in rows), "totals": aggregate(rows),
            "tensors": [r.as_dict() for r in rows]}


def format_summary(s: dict, per_tensor: bool = True) -> str:
    lines = [f"{s['path']}: {s['file_bytes'] / 2**20:.2f} MiB ({100 * s['size_vs_bf16']:.1f}% of a BF16 file: "
             f"{s['bf16_bytes'] / 2**20:.2f} MiB)"]
    lines.append("metadata:")
    for k, v in s["metadata"].items():
        lines.append(f"  {k} = {v}")
    if per_tensor:
        lines.append(f"{'tensor':<32} {'type':<8} {'shape [P, T]':<14} {'bytes':>10} {'bits/w':>7} "
                     f"{'salient%':>8} {'group':>5} words")
        for r in s["tensors"]:
            shp = "x".join(map(str, r["shape"]))
            sal = f"{r['salient_pct']:.2f}" if r["salient_pct"] is not None else "-"
            grp = str(r["group"]) if r["group"] else "-"
            flag = "" if r["exact"] else "  (size from offsets)"
            lines.append(f"{r['name']:<32} {r['type']:<8} {shp:<14} {r['nbytes']:>10} {r['bpw']:>7.3f} "
                         f"{sal:>8} {grp:>5} {r.get('words') or '-'}{flag}")
    t = s["totals"]
    lines.append("linear tensors by kind:")
    for k, d in t["linear_by_kind"].items():
        sal = f", salient {d['salient_pct']:.2f}%" if d["salient_pct"] is not None else ""
        wk = f", words {' '.join(d['words'])}" if d.get("words") else ""
        lines.append(f"  {k:<12} {d['tensors']:>3} x {'/'.join(d['types']):<12} {d['bpw']:.4f} bits/weight{sal}{wk}")
    lines.append("linear tensors by type:")
    for k, d in t["linear_by_type"].items():
        lines.append(f"  {k:<8} {d['tensors']:>4} tensors {d['weights']:>11} weights {d['bytes']:>11} bytes "
                     f"{d['bpw']:.4f} bits/weight")
    lin = t["linear"]
    lines.append(f"linear total: {lin['weights']} weights, {lin['bytes']} bytes, {lin['bpw']:.4f} bits/weight")
    a = t["all"]
    lines.append(f"all tensors: {a['weights']} weights, {a['bytes']} bytes, {a['bpw']:.4f} bits/weight")
    if s["metadata"].get(fmt.KEY_INCOHERENCE, fmt.INCOHERENCE_NONE) != fmt.INCOHERENCE_NONE:
        lines.append(f"input rotation: {s['metadata'][fmt.KEY_INCOHERENCE]} (seed "
                     f"{s['metadata'].get(fmt.KEY_INCOHERENCE_SEED)}): every linear of the blocks is stored as W Rᵀ "
                     "and multiplied by R x (docs/FORMAT.md section 10; not readable by llama.cpp's MAQ extension)")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- plot
def read_weight(path: str | os.PathLike, name: str, header: Header | None = None
                ) -> tuple[np.ndarray, np.ndarray | None]:
    """(float32 [P, T] of weight ``name``, bool [P, T/16] salient words or None), read from the file: MAQ2 through
    ``format.from_parts`` + ``format.dequantize``, ggml types through ``gguf.quants.dequantize``; the values the
    model multiplies by (a tensor stored rotated, FORMAT.md section 10, is un-rotated)."""
    h = header or read_header(path)
    W, bm = _read_stored(path, name, h)
    seed = fmt.tensor_rotation(h.metadata, name, str(path))
    return (W, bm) if seed is None else (fmt.unrotate(W, seed), bm)


def _read_stored(path, name: str, h: Header) -> tuple[np.ndarray, np.ndarray | None]:
    by = {t.name: t for t in h.tensors}
    if name not in by:
        raise MAQError(f"{path}: no tensor named {name!r} (e.g. blk.0.ffn_down.weight)")
    def raw(t: RawTensor) -> np.ndarray:
        return np.asarray(t.data)

    base = by[name]
    mtype = h.metadata.get(fmt.key_tensor_type(name))
    if isinstance(mtype, str) and mtype in fmt.BITS_OF_TYPE:
        bits = fmt.BITS_OF_TYPE[mtype]
        T, P = base.ne[0] * fmt.WORD_WEIGHTS, base.ne[1]
        G = h.metadata.get(fmt.key_group_size(name), fmt.DEFAULT_GROUP)
        coding = h.metadata.get(fmt.key_salient_coding(name), fmt.SALIENT_MEAN4)
        salw = by.get(name + fmt.PART_SALW)
        n8 = salw.ne[0] // fmt.WORD_WEIGHTS if coding == fmt.SALIENT_INT8 and salw is not None else 0
        lay = fmt.Layout(T, P, G, bits, n_salient8=n8)
        parts = {}
        for suffix, (shape, dtype) in lay.part_specs().items():
            t = by.get(name + suffix)
            if t is None:
                raise MAQError(f"{path}: {name}: missing part {name + suffix}")
            parts[suffix] = raw(t).view(dtype).reshape(shape)
        mt = fmt.from_parts(parts, T, G, what=f"{path}: {name}", bits=bits,
                            salient_coding=fmt.SALIENT_INT8 if n8 else fmt.SALIENT_MEAN4)
        bm = fmt.unpack_bitmap(mt.bitmap, fmt.n_words(T)).astype(bool) if mt.bitmap is not None else None
        return fmt.dequantize(mt).astype(np.float32), bm
    from gguf.constants import GGMLQuantizationType
    from gguf.quants import dequantize

    if not base.exact:
        raise MAQError(f"{path}: {name}: type {type_label(base)} unknown to the gguf package (or sized differently "
                       "there): cannot dequantize")
    P = math.prod(base.ne[1:])
    data = raw(base).reshape(P, -1)
    qt = GGMLQuantizationType(base.ggml_type)
    if qt == GGMLQuantizationType.F32:
        w = data.view(np.float32)
    elif qt == GGMLQuantizationType.F16:
        w = data.view(np.float16)
    else:
        w = dequantize(data, qt)
    return np.asarray(w, dtype=np.float32).reshape(tuple(reversed(base.ne))), None


def per_word(x: np.ndarray) -> np.ndarray:
    """[P, T] -> [P, T/16]: mean over each 16-weight word."""
    P, T = x.shape
    return x.reshape(P, T // fmt.WORD_WEIGHTS, fmt.WORD_WEIGHTS).mean(axis=2)


def plot(path: str, tensor: str, out: str, compare: str | None = None, ref: str | None = None,
         max_rows: int = 256) -> dict:
    """Fig. 3-style panels for one tensor; returns the numbers drawn (mean errors) for the caller to print."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.colors import LogNorm
    except ImportError:
        raise MAQError("--plot needs matplotlib (pip install matplotlib); the rest of `maq inspect` does not") \
            from None
    if compare and not ref:
        raise MAQError("--compare needs --ref REF.gguf (the weights both files are compared against)")
    Wq, bm = read_weight(path, tensor)
    panels = []
    if bm is not None:
        panels.append(("salient words (bitmap) of " + Path(path).name, bm.astype(float), None, "gray_r"))
    info: dict = {"tensor": tensor, "shape": list(Wq.shape),
                  "salient_pct": 100.0 * float(bm.mean()) if bm is not None else None}
    if ref:
        W = read_weight(ref, tensor)[0]
        if W.shape != Wq.shape:
            raise MAQError(f"{ref}: {tensor} has shape {list(W.shape)}, {path} has {list(Wq.shape)}")
        panels.append((f"reference |w| per word ({Path(ref).name})", per_word(np.abs(W)), "log", "viridis"))
        errs = [(Path(path).name, per_word(np.abs(W - Wq)))]
        info["rel_err_" + Path(path).name] = float(np.linalg.norm(W - Wq) / np.linalg.norm(W))
        if compare:
            Wc = read_weight(compare, tensor)[0]
            errs.append((Path(compare).name, per_word(np.abs(W - Wc))))
            info["rel_err_" + Path(compare).name] = float(np.linalg.norm(W - Wc) / np.linalg.norm(W))
        hi = max(float(e.max()) for _, e in errs)
        lo = max(min(float(e[e > 0].min()) if (e > 0).any() else hi for _, e in errs), hi * 1e-4)
        for nm, e in errs:
            panels.append((f"|W - Ŵ| per word: {nm}", e, ("log", lo, hi), "magma"))
        if compare:
            d = errs[0][1] - errs[1][1]
            m = float(np.abs(d).max()) or 1.0
            panels.append((f"error difference: {errs[0][0]} - {errs[1][0]}", d, ("div", -m, m), "RdBu_r"))
    rows = slice(0, min(max_rows, Wq.shape[0]))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 5.0), squeeze=False)
    for ax, (title, img, scale, cmap) in zip(axes[0], panels):
        kw = {}
        if scale == "log":
            pos = img[img > 0]
            kw["norm"] = LogNorm(vmin=float(pos.min()) if pos.size else 1e-8, vmax=float(img.max()) or 1.0)
        elif isinstance(scale, tuple) and scale[0] == "log":
            kw["norm"] = LogNorm(vmin=scale[1], vmax=scale[2])
        elif isinstance(scale, tuple) and scale[0] == "div":
            kw.update(vmin=scale[1], vmax=scale[2])
        im = ax.imshow(np.clip(img[rows], 1e-30, None) if "norm" in kw else img[rows], aspect="auto", cmap=cmap,
                       interpolation="nearest", **kw)
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("16-input word")
        ax.set_ylabel(f"output row (first {rows.stop})")
        fig.colorbar(im, ax=ax, fraction=0.046)
    fig.suptitle(f"{tensor} [{Wq.shape[0]} x {Wq.shape[1]}]", fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    info["out"] = out
    return info


# ---------------------------------------------------------------------------------------------- CLI
def _run(args) -> int:
    s = file_summary(args.model, salient=not args.no_salient)
    if args.json:
        print(json.dumps(s if args.tensors else {k: v for k, v in s.items() if k != "tensors"}, default=str))
    else:
        print(format_summary(s, per_tensor=args.tensors))
    if args.plot:
        if not args.tensor:
            raise MAQError("--plot needs --tensor NAME (e.g. blk.11.ffn_down.weight)")
        info = plot(args.model, args.tensor, args.plot, compare=args.compare, ref=args.ref)
        if not args.json:
            extra = ", ".join(f"{k} {v:.4f}" for k, v in info.items() if k.startswith("rel_err"))
            print(f"wrote {args.plot}" + (f" ({extra})" if extra else ""))
    return 0


def register(subparsers) -> None:
    """Add `maq inspect` (see maq/cli.py)."""
    p = subparsers.add_parser("inspect", help="per-tensor type, bits/weight, salient %%, metadata of a GGUF",
                              description="Per-tensor storage type, shape, honest bits/weight (every byte of every "
                                          "part), salient-word % and group size, totals per type and for the linear "
                                          "tensors, file size vs BF16, metadata. --plot draws Fig. 3-style maps.")
    p.add_argument("model", help="GGUF file")
    p.add_argument("--json", action="store_true", help="one JSON object")
    p.add_argument("--no-tensors", dest="tensors", action="store_false", help="totals only (no per-tensor rows)")
    p.add_argument("--no-salient", action="store_true", help="skip reading the bitmaps (salient %%)")
    p.add_argument("--plot", metavar="OUT.png", help="draw bitmap / magnitude / error maps of --tensor")
    p.add_argument("--tensor", metavar="NAME", help="tensor for --plot, e.g. blk.11.ffn_down.weight")
    p.add_argument("--compare", metavar="OTHER.gguf", help="second quantized file (e.g. gptq) for the error maps")
    p.add_argument("--ref", metavar="REF.gguf", help="reference weights the errors are measured against")
    p.set_defaults(func=_run)
