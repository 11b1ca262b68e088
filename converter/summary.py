"""The end-of-conversion summary table: per tensor kind bits/weight, salient %, Hessian-weighted error vs RTN."""
from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def kind_rows(per_tensor: list[dict]) -> list[dict]:
    """Aggregate per-tensor stats {kind, nbytes, nweights, salient_words, words, err, err_rtn, ref} by kind.

    err / err_rtn / ref are sums over rows of (w-q) H (w-q)^T and w H w^T, so the ratios are
    Hessian-weighted relative output errors of the kind as a whole.
    """
    out: dict[str, dict] = {}
    for r in per_tensor:
        a = out.setdefault(r["kind"], {"kind": r["kind"], "tensors": 0, "nbytes": 0, "nweights": 0,
                                       "salient_words": 0, "words": 0, "err": 0.0, "err_rtn": 0.0, "ref": 0.0})
        a["tensors"] += 1
        if r.get("choice"):
            a.setdefault("choices", {})
            a["choices"][r["choice"]] = a["choices"].get(r["choice"], 0) + 1
        if r.get("word_kinds"):
            a.setdefault("word_kinds", {})
            a["word_kinds"][r["word_kinds"]] = a["word_kinds"].get(r["word_kinds"], 0) + 1
        for k in ("nbytes", "nweights", "salient_words", "words", "err", "err_rtn", "ref"):
            a[k] += r.get(k, 0) or 0
    rows = list(out.values())
    for a in rows:
        a["bpw"] = a["nbytes"] * 8 / a["nweights"] if a["nweights"] else 0.0
        a["salient_pct"] = 100.0 * a["salient_words"] / a["words"] if a["words"] else 0.0
        a["rel_err"] = a["err"] / a["ref"] if a["ref"] else float("nan")
        a["rel_err_rtn"] = a["err_rtn"] / a["ref"] if a["ref"] else float("nan")
    return rows


def format_table(rows: list[dict]) -> list[str]:
    lines = [f"{'kind':<12} {'n':>3} {'bits/w':>7} {'salient%':>8} {'H-err':>10} {'H-err RTN':>10} {'vs RTN':>7}  "
             "words | types"]
    for a in rows:
        ratio = a["err"] / a["err_rtn"] if a["err_rtn"] else float("nan")
        types = ", ".join(f"{c} x{n}" for c, n in sorted(a.get("choices", {}).items()))
        kinds = ", ".join(f"{c} x{n}" for c, n in sorted(a.get("word_kinds", {}).items()))
        lines.append(f"{a['kind']:<12} {a['tensors']:>3} {a['bpw']:>7.4f} {a['salient_pct']:>8.2f} "
                     f"{a['rel_err']:>10.4g} {a['rel_err_rtn']:>10.4g} {ratio:>7.3f}  {kinds}"
                     + (f" | {types}" if types else ""))
    return lines


def format_choices(tensor_rows: list[dict]) -> list[str]:
    """One line per block: the storage chosen for each linear (--target-bpw)."""
    by_block: dict[str, list[str]] = {}
    for r in tensor_rows:
        parts = r["name"].split(".")
        if parts[0] == "blk" and r.get("choice"):
            by_block.setdefault(parts[1], []).append(f"{r['kind']}={r['choice']}")
    return [f"blk.{b:<3} " + " ".join(v) for b, v in sorted(by_block.items(), key=lambda kv: int(kv[0]))]


def log_summary(res, opts) -> None:
    """Log the summary table (quantized methods) and the file size against a BF16 file."""
    if res.rows:
        log.info("summary (H-err = sum (w-q) H (w-q)^T / sum w H w^T over the kind's tensors; "
                 "RTN = min/max rounding, same type and group, same salient words):")
        for line in format_table(res.rows):
            log.info("  %s", line)
    if getattr(opts, "target_bpw", None) is not None and res.tensor_rows:
        log.info("per-tensor types chosen for --target-bpw %s:", opts.target_bpw)
        for line in format_choices(res.tensor_rows):
            log.info("  %s", line)
    log.info("linear tensors: %.4f bits/weight", res.linear_bpw)
    log.info("wrote %s: %.2f MiB (a BF16 file: %.2f MiB, %.1f%%) in %.1f s", res.out, res.file_bytes / 2**20,
             res.bf16_bytes / 2**20, 100.0 * res.file_bytes / res.bf16_bytes, res.seconds)
