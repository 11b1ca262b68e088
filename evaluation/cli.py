"""``maq eval`` (``python scripts/evaluate.py`` runs it): convert every configuration once, measure, write the results.

For each configuration (``--preset``, ``--config NAME=SPEC``, ``--configs FILE``; see configs.py):

1. the file: the reference itself, a cached ``maq convert`` (cache key: source, converter options, tool version),
   a cached ``llama-quantize`` of an F32 copy of the reference (``+imatrix``: with an importance matrix from
   ``llama-imatrix`` over the converter's calibration text), or a given file;
2. honest bits/weight of the linear tensors and per storage type, file size vs BF16 (``maq.runtime.inspect``);
3. WikiText-2 perplexity in our runtime, both protocols from one pass (default: the whole test file at ctx 2048;
   ``--limit N`` windows), per-window NLL kept (resumable; any prefix can be re-summarized);
   llama.cpp's ``llama-perplexity`` on the reference and llama.cpp files (same windows, its protocol = second-half);
4. optional: C4 perplexity on held-out documents (``--c4``), zero-shot tasks (``--tasks name=path``);
5. decode / prefill tokens/s: ours at ``--speed-threads``, llama-bench on non-MAQ files, in the same run.

A failure in one configuration is recorded in its row (``error``) and the run goes on. Results go to
``docs/results/<run>.json`` after every step; ``--report`` regenerates docs/RESULTS.md's generated sections and the
plot from all results files without measuring anything.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
import time
import traceback
from pathlib import Path

from maq.errors import MAQError

from . import configs as C

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
C4_HELDOUT = (900, 1000)        # documents of c4_en_train_first1000.jsonl not in the shipped calibration text (0-570)


def default_data_dir() -> Path:
    env = os.environ.get("MAQ_DATA")
    if env:
        return Path(env)
    for cand in (ROOT.parent / "shared" / "data", ROOT / "data"):
        if cand.is_dir():
            return cand
    return ROOT.parent / "shared" / "data"


def default_cache() -> Path:
    from maq.runtime.models import cache_dir

    return cache_dir() / "eval"


def c4_heldout_text(data_dir: Path, cache: Path, docs: tuple[int, int] = C4_HELDOUT) -> Path:
    """Documents [a, b) of the shared C4 sample, joined as the converter joins calibration documents."""
    src = data_dir / "calib" / "c4_en_train_first1000.jsonl"
    out = cache / f"c4_heldout_docs{docs[0]}-{docs[1] - 1}.txt"
    if out.is_file():
        return out
    if not src.is_file():
        raise MAQError(f"{src}: not found (needed for --c4; give --c4 PATH to use another text)")
    lines = src.read_text(encoding="utf-8").splitlines()
    text = "".join(json.loads(ln)["text"] + "\n\n" for ln in lines[docs[0]:docs[1]])
    cache.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(out)
    return out


# ---------------------------------------------------------------------------------------------- results file
class Results:
    """docs/results/<run>.json: {"run", "meta", "rows": [...]}, rewritten atomically after every step."""

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.data = {"run": path.stem, "meta": meta, "rows": []}
        if path.is_file():
            try:
                old = json.loads(path.read_text())
                self.data["rows"] = old.get("rows", [])
            except json.JSONDecodeError:
                log.warning("%s: unreadable, starting a new results file", path)

    def row(self, name: str) -> dict | None:
        for r in self.data["rows"]:
            if r["name"] == name:
                return r
        return None

    def put(self, row: dict | None = None) -> None:
        """Store ``row`` (replacing the row of the same name) and the meta. Other processes may write other rows
        of the same file: under an exclusive lock the file is re-read and only this row replaced."""
        import fcntl

        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_suffix(".lock"), "w") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            try:
                rows = json.loads(self.path.read_text()).get("rows", []) if self.path.is_file() else []
            except json.JSONDecodeError:
                rows = list(self.data["rows"])
            if row is not None:
                for i, r in enumerate(rows):
                    if r["name"] == row["name"]:
                        rows[i] = row
                        break
                else:
                    rows.append(row)
            self.data["rows"] = rows
            self._write()

    def save(self) -> None:
        self.put(None)

    def _write(self) -> None:
        tmp = self.path.with_suffix(f".json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=1, default=str))
        tmp.replace(self.path)


# ---------------------------------------------------------------------------------------------- files
class Files:
    """Resolves a configuration to a GGUF path (converting / quantizing once, cached)."""

    def __init__(self, args, source: Path):
        self.args, self.source = args, source
        self.cache = Path(args.cache)
        self._sid = None
        self._bins = None
        self._f32 = None
        self._imatrix = None

    @property
    def source_id(self) -> dict:
        if self._sid is None:
            self._sid = C.source_identity(self.source)
        return self._sid

    @property
    def bins(self) -> Path:
        if self._bins is None:
            from . import llamacpp

            self._bins = llamacpp.bin_dir()
        return self._bins

    def f32_reference(self) -> Path:
        """An F32 GGUF of the reference (``maq convert --method f32``): what llama-quantize starts from."""
        if self._f32 is None:
            from . import convert

            r = convert.convert(C.Config("f32", "convert", flags=("--method", "f32")), self.source, self.source_id,
                                self.cache / "convert", any_tool=True)
            self._f32 = r.path
        return self._f32

    def imatrix(self) -> Path:
        if self._imatrix is None:
            from . import llamacpp

            calib = self.cache / "llamacpp" / "calib_c4_sample.txt"
            if not calib.is_file():
                import gzip

                from maq.converter.calibration import DEFAULT_CALIB

                calib.parent.mkdir(parents=True, exist_ok=True)
                calib.write_bytes(gzip.decompress(DEFAULT_CALIB.read_bytes()))
            ref = self.f32_reference()
            key = C.cache_key(self.source_id, {"imatrix": True, "chunks": self.args.imatrix_chunks, "ctx": 2048,
                                               "calib": C.file_sha256(calib)}, llamacpp.version(self.bins))
            out = self.cache / "llamacpp" / f"imatrix.{key}.gguf"
            if not out.is_file():
                log.info("llama-imatrix over %s (%d chunks of 2048)", calib.name, self.args.imatrix_chunks)
                llamacpp.imatrix(self.bins, ref, calib, out, 2048, self.args.imatrix_chunks, self.args.threads)
            self._imatrix = out
        return self._imatrix

    def resolve(self, cfg: C.Config, row: dict) -> Path:
        if cfg.kind == "reference":
            row["conversion"] = {"seconds": 0.0, "cached": True, "note": "the source file itself"}
            return self.source
        if cfg.kind == "file":
            p = Path(cfg.path)
            if not p.is_file():
                raise MAQError(f"{p}: not found")
            return p
        if cfg.kind == "convert":
            from . import convert

            r = convert.convert(cfg, self.source, self.source_id, self.cache / "convert",
                                shlex.split(self.args.convert_flags or ""), any_tool=self.args.any_tool_version,
                                threads=self.args.convert_threads)
            row["conversion"] = {"seconds": r.seconds, "cached": r.cached, "key": r.key, "tool": r.tool,
                                 "options": r.options, **({"note": r.note} if r.note else {})}
            return r.path
        from . import llamacpp

        ref = self.f32_reference()
        imat = self.imatrix() if cfg.imatrix else None
        ver = llamacpp.version(self.bins)
        opts = {"llamacpp": cfg.qtype, "imatrix": imat.name if imat else None}
        extra: list[str] = []
        if getattr(self.args, "hybrid", None):       # the type on every tensor of the kind (no k-quant mixture)
            extra = ["--tensor-type", f"{self.args.hybrid}={cfg.qtype.lower()}"]
            opts["tensor_type"] = extra[1]
        key = C.cache_key(self.source_id, opts, ver)
        out = self.cache / "llamacpp" / f"{cfg.qtype}.{key}.gguf"
        out.parent.mkdir(parents=True, exist_ok=True)
        meta_path = out.with_suffix(".json")
        if out.is_file() and meta_path.is_file():
            meta = json.loads(meta_path.read_text())
            row["conversion"] = {**meta, "cached": True}
            return out
        meta = llamacpp.quantize(self.bins, ref, out, cfg.qtype, imat, self.args.threads, extra)
        meta.update({"llamacpp_version": ver, "imatrix": str(imat) if imat else None, "from": str(ref)})
        meta_path.write_text(json.dumps(meta, indent=1))
        row["conversion"] = {**meta, "cached": False}
        return out


# ---------------------------------------------------------------------------------------------- measurements
def _is_maq(summary: dict) -> bool:
    return any(t.startswith("MAQ") for t in summary["totals"]["all_by_type"])


def runtime_loads(path: Path) -> str | None:
    """None if our runtime loads the file, else why not (one line)."""
    from maq.runtime import gguf_loader

    try:
        gguf_loader.load(path)
    except MAQError as exc:
        return str(exc)
    return None


def reuse_ppl(results_dir: Path | None, path: Path, key: str, sig: dict, this_run: str, this_row: str = ""
              ) -> dict | None:
    """The ``ppl[key]`` slot with the most windows that another row (of any results file but this row itself)
    measured on the same file (same path and size: cached conversions are named by their configuration hash) with
    the same text and ctx, or None."""
    if results_dir is None or not Path(results_dir).is_dir():
        return None
    try:
        size = path.stat().st_size
    except OSError:
        return None
    best = None
    for p in sorted(Path(results_dir).glob("*.json")):
        try:
            rows = json.loads(p.read_text()).get("rows", [])
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        for r in rows:
            if p.stem == this_run and r.get("name") == this_row:
                continue
            slot = ((r.get("ppl") or {}).get(key) or {})
            if (r.get("file") == str(path) and (r.get("size") or {}).get("file_bytes") == size
                    and slot.get("sig") == sig and slot.get("windows")
                    and (best is None or len(slot["windows"]) > len(best[1][1]["windows"]))):
                best = (p.stem, (r.get("name", ""), slot))
    if best is None:
        return None
    return {**json.loads(json.dumps(best[1][1])), "reused_from": best[0] + ": " + best[1][0]}


def reuse_llamacpp_ppl(results_dir: Path, path: Path, sig: dict, this_run: str) -> dict | None:
    """llama-perplexity's figure for the same file (path and size) and sig from another results file, or None."""
    try:
        size = path.stat().st_size
    except OSError:
        return None
    for p in sorted(Path(results_dir).glob("*.json")):
        if p.stem == this_run:
            continue
        try:
            rows = json.loads(p.read_text()).get("rows", [])
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        for r in rows:
            slot = r.get("llamacpp_ppl") or {}
            if (r.get("file") == str(path) and (r.get("size") or {}).get("file_bytes") == size
                    and slot.get("sig") == sig and slot.get("ppl") is not None):
                return {**slot, "reused_from": p.stem}
    return None


def measure_ppl(path: Path, text: Path, ctx: int, limit: int | None, threads: int, row: dict, key: str,
                save, results_dir: Path | None = None, this_run: str = "") -> None:
    """Our runtime's perplexity (both protocols) into row["ppl"][key], resuming from stored windows (this row's,
    or another results file's measurement of the same file: ``reuse_ppl``)."""
    from maq.runtime.api import Llama

    from . import ppl

    slot = row.setdefault("ppl", {}).setdefault(key, {})
    sig = {"text": str(text), "ctx": ctx}
    if slot.get("sig") != sig:
        slot.clear()
        slot["sig"] = sig
    other = reuse_ppl(results_dir, path, key, sig, this_run, row.get("name", ""))
    if other is not None and len(other["windows"]) > len(slot.get("windows", [])):
        slot.clear()
        slot.update(other)
        log.info("%s: %d perplexity windows measured on the same file in %s", row.get("name"),
                 len(other["windows"]), other["reused_from"])
    done = ppl.from_json(slot.get("windows", []))
    llm = Llama(str(path), n_ctx=ctx, n_threads=threads, n_batch=128, verbose=False)
    tokens, bos = ppl.tokenize_file(llm, str(text))
    n_win = ppl.windows(tokens, ctx, limit)
    if len(done) >= n_win:
        _ppl_summary(slot, done[:n_win], len(tokens))
        return
    t0 = time.time()
    bar = _bar(n_win, f"ppl {key}", initial=len([w for w in done if w.index < n_win]))
    acc = {w.index: w for w in done}

    def on_window(w, n):
        acc[w.index] = w
        slot["windows"] = ppl.to_json([acc[i] for i in sorted(acc)])
        slot["seconds"] = slot.get("seconds_prev", 0.0) + time.time() - t0
        if bar is not None:
            bar.update(1)
            s = ppl.summarize([acc[i] for i in sorted(acc)], "full")
            bar.set_postfix_str(f"full {s['ppl']:.4g}")
        save()

    slot["seconds_prev"] = slot.get("seconds", 0.0)
    try:
        ws = ppl.run(llm.model, tokens, ctx, limit, bos_id=bos, done=done, on_window=on_window)
    finally:
        if bar is not None:
            bar.close()
    slot["threads"] = llm.n_threads
    _ppl_summary(slot, ws, len(tokens))


def _ppl_summary(slot: dict, ws, n_tokens: int) -> None:
    from . import ppl

    for proto in ("full", "second-half"):
        slot[proto] = ppl.summarize(ws, proto)
    slot["first10"] = {p: ppl.summarize(ws, p, 10) for p in ("full", "second-half")}
    slot["text_tokens"] = n_tokens


def _bar(total: int, desc: str, initial: int = 0):
    if not sys.stderr.isatty():
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="win", leave=False, dynamic_ncols=True)


def measure_speed(path: Path, threads: list[int], row: dict) -> None:
    from . import speed

    sp = row.setdefault("speed", {}).setdefault("maq", {})
    for t in threads:
        r = speed.measure(str(path), t)
        sp[f"t{t}"] = {k: r[k] for k in ("tg", "pp", "tg_cpu", "pp_cpu", "load_avg")}


def run_config(cfg: C.Config, args, files: Files, res: Results) -> dict:
    row = res.row(cfg.name) or {"name": cfg.name}
    if row.get("spec") != cfg.spec:
        row = {"name": cfg.name}
    row.update({"spec": cfg.spec, "kind": cfg.kind})
    row.pop("error", None)
    save = lambda: res.put(row)  # noqa: E731
    step = "convert"
    try:
        path = files.resolve(cfg, row)
        if args.hybrid:
            step = "hybrid"
            from . import hybrid

            path, row["hybrid"] = hybrid.prepare(path, files.f32_reference(), args.hybrid,
                                                 Path(args.cache) / "hybrid", cfg.kind == "reference")
        row["file"] = str(path)
        save()
        step = "inspect"
        from maq.runtime.inspect import file_summary

        s = file_summary(path)
        t = s["totals"]
        row["size"] = {"file_bytes": s["file_bytes"], "bf16_bytes": s["bf16_bytes"],
                       "size_vs_bf16": s["size_vs_bf16"], "exact": s["exact_sizes"]}
        row["bpw"] = {"linear": t["linear"]["bpw"], "all": t["all"]["bpw"],
                      "linear_by_type": t["linear_by_type"], "all_by_type": t["all_by_type"],
                      "linear_by_kind": {k: {kk: v[kk] for kk in ("bpw", "types", "salient_pct")}
                                         for k, v in t["linear_by_kind"].items()}}
        row["metadata"] = {k: v for k, v in s["metadata"].items() if k.startswith(("maq.", "general.file_type"))}
        save()
        is_maq = _is_maq(s)
        ours = is_maq or cfg.kind in ("reference", "convert", "file") or cfg.qtype in args.ours_on_llamacpp \
            or bool(args.hybrid)
        why = runtime_loads(path) if ours else "not requested (--ours-on-llamacpp)"
        if why:
            row["runtime_note"] = why
        if not args.no_ppl and not why:
            step = "perplexity"
            measure_ppl(path, Path(args.text), args.ctx, args.limit, args.threads, row, "wikitext2", save,
                        Path(args.results_dir), res.path.stem)
            save()
        if args.c4 and not why:
            step = "c4 perplexity"
            measure_ppl(path, Path(args.c4), args.ctx, args.c4_limit, args.threads, row, "c4", save,
                        Path(args.results_dir), res.path.stem)
            save()
        if not is_maq and (cfg.kind in ("reference", "llamacpp")) and args.llamacpp_ppl:
            step = "llama-perplexity"
            from . import llamacpp

            slot = row.setdefault("llamacpp_ppl", {})
            sig = {"text": str(args.text), "ctx": args.ctx, "limit": args.limit}
            if slot.get("sig") != sig or "ppl" not in slot:
                other = reuse_llamacpp_ppl(Path(args.results_dir), path, sig, res.path.stem)
                if other is not None:
                    slot.clear()
                    slot.update(other)
                    save()
            if slot.get("sig") != sig or "ppl" not in slot:
                r = llamacpp.perplexity(files.bins, path, Path(args.text), args.ctx, args.limit, args.threads,
                                        log_path=Path(args.cache) / "llamacpp" / f"ppl.{cfg.name.replace(' ', '_')}.log")
                slot.clear()
                slot.update({"sig": sig, **{k: r[k] for k in ("ppl", "ppl_stderr", "windows", "tokens", "seconds",
                                                              "protocol")}})
                save()
        if not args.no_speed:
            step = "speed"
            if not why:
                measure_speed(path, args.speed_threads, row)
                save()
            if not is_maq and cfg.kind in ("reference", "llamacpp", "file"):
                from . import llamacpp

                row.setdefault("speed", {})["llamacpp"] = llamacpp.bench(files.bins, path, args.speed_threads)
                row["speed_load_avg"] = os.getloadavg()[0]
                save()
        if args.tasks and not why:
            step = "zero-shot"
            run_tasks(path, args, row, save)
    except Exception as exc:   # noqa: BLE001 - one configuration's failure is reported in its row, the run goes on
        row["error"] = f"{step}: {type(exc).__name__}: {exc}"
        row["traceback"] = traceback.format_exc().splitlines()[-6:]
        log.error("%s: %s", cfg.name, row["error"])
    save()
    return row


def run_tasks(path: Path, args, row: dict, save) -> None:
    """Zero-shot accuracy of each ``--tasks`` entry (first ``--tasks-limit`` items) into row["zeroshot"]; a task
    already measured on the same file, item count and data file is kept."""
    from maq.runtime.api import Llama

    from . import zeroshot as Z

    zs = row.setdefault("zeroshot", {})
    llm = None
    for name, tpath in Z.resolve_tasks(args.tasks, default_data_dir()):
        fmt_name, docs = Z.load_task(name, tpath, args.tasks_limit)
        done = zs.get(name) or {}
        if done.get("n") == len(docs) and done.get("file") == str(tpath) and done.get("model") == str(path):
            continue
        if llm is None:
            llm = Llama(str(path), n_ctx=args.ctx, n_threads=args.threads, verbose=False)
        bar = _bar(len(docs), f"{name}")
        t0 = time.time()
        r = Z.evaluate(Z.LlamaScorer(llm), docs, fmt_name, progress=(lambda i, n: bar.update(1)) if bar else None)
        if bar:
            bar.close()
        zs[name] = {k: v for k, v in r.items() if k != "items"}
        zs[name].update({"file": str(tpath), "of": Z.count_items(tpath), "limit": args.tasks_limit,
                         "model": str(path), "seconds": round(time.time() - t0, 1),
                         "load_avg": os.getloadavg()[0]})
        log.info("%s: %s acc %.3f acc_norm %s (n=%d)", row.get("name"), name, r["acc"],
                 "—" if r["acc_norm"] is None else f"{r['acc_norm']:.3f}", r["n"])
        save()


# ---------------------------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="smollm2",
                   help="source model (GGUF or HF directory; default smollm2 = the SmolLM2 Q4_1 GGUF)")
    g = p.add_argument_group("configurations")
    g.add_argument("--preset", choices=sorted(C.PRESETS), help="a built-in list of configurations")
    g.add_argument("--config", action="append", default=[], metavar="NAME=SPEC",
                   help="a configuration: NAME=reference | NAME=@llamacpp:TYPE[+imatrix] | NAME=@file:PATH | "
                        "NAME='maq convert flags' (repeatable)")
    g.add_argument("--configs", metavar="FILE", help="configurations file (NAME = SPEC lines, or JSON)")
    g.add_argument("--hybrid", default=None, metavar="KIND",
                   help="measure each configuration as the reference with only its KIND tensors (e.g. ffn_down) "
                        "replaced; llama.cpp's type is forced on those tensors (default for --preset ffn_down)")
    g.add_argument("--only", default="", help="comma-separated names: run only these configurations")
    g.add_argument("--convert-flags", default="", metavar="FLAGS",
                   help="flags given to every maq convert before the configuration's own (e.g. '--nsamples 32')")
    g.add_argument("--convert-threads", type=int, default=None, help="torch threads of the converter")
    g.add_argument("--any-tool-version", action="store_true",
                   help="re-use a cached conversion made by another converter version (same source and options)")
    m = p.add_argument_group("measurements")
    m.add_argument("--text", default=None, help="perplexity text (default: WikiText-2 raw test)")
    m.add_argument("--ctx", type=int, default=2048, help="window length (default 2048)")
    m.add_argument("--limit", type=int, default=None, help="first N windows only (default: the whole text)")
    m.add_argument("--c4", nargs="?", const="heldout", default=None, metavar="PATH",
                   help="also C4 perplexity: PATH, or held-out documents 900-999 of the shared C4 sample")
    m.add_argument("--c4-limit", type=int, default=None, help="first N C4 windows only")
    m.add_argument("--threads", type=int, default=2, help="threads for perplexity and llama.cpp's tools")
    m.add_argument("--no-ppl", action="store_true", help="skip WikiText-2 perplexity")
    m.add_argument("--no-speed", action="store_true", help="skip decode/prefill speed")
    m.add_argument("--speed-threads", default="1,2", help="thread counts for speed (default 1,2)")
    m.add_argument("--no-llamacpp-ppl", dest="llamacpp_ppl", action="store_false",
                   help="skip llama-perplexity on the reference and llama.cpp files")
    m.add_argument("--ours-on-llamacpp", default="Q4_0",
                   help="llama.cpp types our runtime also measures (default Q4_0; cross-check)")
    m.add_argument("--imatrix-chunks", type=int, default=32, help="llama-imatrix chunks of 2048 (default 32)")
    m.add_argument("--tasks", nargs="*", default=[], metavar="TASK",
                   help="zero-shot tasks: qa (the seven shared sets in DATA/qa), a task name (arc_easy, piqa...), a "
                        "task folder, or NAME=PATH (a file in an official or HF format)")
    m.add_argument("--tasks-limit", type=int, default=None, help="first N items of each task")
    o = p.add_argument_group("output")
    o.add_argument("--run", default=None, help="results name: docs/results/<run>.json (default: the preset or 'eval')")
    o.add_argument("--results-dir", default=str(ROOT / "docs" / "results"))
    o.add_argument("--cache", default=None, help="cache folder (default: ~/.cache/maq/eval)")
    o.add_argument("--report", action="store_true", help="only regenerate docs/RESULTS.md and the plots from the "
                                                         "results files")
    o.add_argument("--results-md", default=str(ROOT / "docs" / "RESULTS.md"))
    o.add_argument("--no-report", action="store_true", help="do not regenerate docs/RESULTS.md after the run")


def collect_configs(args) -> list[C.Config]:
    cfgs: list[C.Config] = []
    if args.preset:
        cfgs += C.preset(args.preset)
    if args.configs:
        cfgs += C.load_file(args.configs)
    cfgs += [C.parse_arg(a) for a in args.config]
    if args.only:
        want = [n.strip() for n in args.only.split(",") if n.strip()]
        missing = [n for n in want if n not in {c.name for c in cfgs}]
        if missing:
            raise MAQError(f"--only: no configuration named {missing[0]!r}")
        cfgs = [c for c in cfgs if c.name in want]
    if not cfgs:
        raise MAQError("no configurations: give --preset, --config NAME=SPEC or --configs FILE")
    C.check_unique(cfgs)
    for c in cfgs:        # bad converter flags are reported before anything runs
        if c.kind == "convert":
            C.canonical_flags(shlex.split(args.convert_flags or "") + list(c.flags))
    return cfgs


def run(args) -> int:
    from . import report

    logging.getLogger("gguf").setLevel(logging.WARNING)
    if args.report:
        refresh_tables(Path(args.results_dir))
        report.write(Path(args.results_dir), Path(args.results_md))
        return 0
    if args.model == "smollm2":
        from maq.runtime.models import smollm2_path

        source = smollm2_path()
    else:
        source = Path(args.model)
    if not source.exists():
        raise MAQError(f"{source}: model not found")
    data = default_data_dir()
    args.text = args.text or str(data / "wikitext-2-raw" / "wiki.test.raw")
    if not Path(args.text).is_file():
        raise MAQError(f"{args.text}: perplexity text not found (give --text)")
    args.cache = args.cache or str(default_cache())
    if args.c4 == "heldout":
        args.c4 = str(c4_heldout_text(data, Path(args.cache)))
    args.speed_threads = [int(t) for t in str(args.speed_threads).split(",") if t.strip()]
    args.ours_on_llamacpp = {t.strip().upper() for t in args.ours_on_llamacpp.split(",") if t.strip()}
    cfgs = collect_configs(args)
    args.hybrid = args.hybrid or C.HYBRID_PRESETS.get(args.preset or "")
    name = args.run or args.preset or "eval"
    from maq.runtime.info import cpu_model

    meta = {"source": str(source), "text": args.text, "ctx": args.ctx, "limit": args.limit, "c4": args.c4,
            "c4_limit": args.c4_limit, "convert_flags": args.convert_flags, "threads": args.threads,
            "speed_threads": args.speed_threads, "cpu": cpu_model(), "cores": os.cpu_count(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": sys.argv, "hybrid": args.hybrid,
            "tasks": args.tasks, "tasks_limit": args.tasks_limit, "load_avg_start": os.getloadavg()}
    res = Results(Path(args.results_dir) / f"{name}.json", meta)
    res.save()
    files = Files(args, source)
    from tqdm import tqdm

    failed = 0
    for cfg in tqdm(cfgs, desc="configurations", unit="cfg", dynamic_ncols=True, disable=not sys.stderr.isatty()):
        log.info("== %s (%s)", cfg.name, cfg.spec or "defaults")
        row = run_config(cfg, args, files, res)
        failed += "error" in row
        log.info("%s", report.one_line(row))
    render_tables(res, args)
    res.data["meta"]["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    res.data["meta"]["load_avg_end"] = os.getloadavg()
    res.save()
    if not args.no_report:
        report.write(Path(args.results_dir), Path(args.results_md))
    log.info("results: %s (%d of %d configurations failed)", res.path, failed, len(cfgs))
    return 1 if failed == len(cfgs) else 0


def run_tables(data: dict, results_dir: Path, stem: str) -> dict:
    """A run's own markdown tables (docs/RESULTS.md's ``run:table`` markers show them): ``hybrid`` +
    ``hybrid_plot`` for a --hybrid run, ``table3`` for a run with --tasks."""
    meta = data.get("meta") or {}
    tables = dict(data.get("tables") or {})
    if meta.get("hybrid"):
        from . import hybrid

        tables["hybrid"] = hybrid.table(data)
        tables["hybrid_plot"] = hybrid.plot(data, Path(results_dir) / f"{stem}_ppl_vs_bpw.png")
    if meta.get("tasks"):
        from . import zeroshot as Z

        tables["table3"] = Z.table3(data)
    return tables


def render_tables(res: Results, args) -> None:
    """Store the run's own tables in its results file (``run_tables``)."""
    res.data["tables"] = run_tables(res.data, Path(args.results_dir), res.path.stem)


def refresh_tables(results_dir: Path) -> None:
    """Re-render every results file's own tables from its rows (``--report``; also after an interrupted run)."""
    for p in sorted(Path(results_dir).glob("*.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if not isinstance(data, dict) or "rows" not in data:
            continue
        meta = data.get("meta") or {}
        if not (meta.get("hybrid") or meta.get("tasks")):
            continue
        data["tables"] = run_tables(data, Path(results_dir), p.stem)
        tmp = p.with_suffix(f".json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, default=str))
        tmp.replace(p)


def register(subparsers) -> None:
    """Add `maq eval` (see maq/cli.py)."""
    p = subparsers.add_parser("eval", help="convert configurations once and measure perplexity, size, speed",
                              description=__doc__.split("\n\n")[0])
    add_arguments(p)
    p.set_defaults(func=run)
