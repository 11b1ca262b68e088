"""Convert a configuration once: ``maq convert`` in a subprocess, its output cached by configuration hash.

Cache layout (``<cache>/convert/``): ``<key>.gguf`` (the converter writes a temp file and renames it, so a file
under its final name is complete) and ``<key>.json`` (what made it: source, canonical options, tool version, the
command, seconds, the converter's log tail). A conversion that fails leaves no ``.gguf``; the error is raised as
MAQError with the converter's last log line.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import re
import subprocess
import sys
import time
from pathlib import Path

from maq.errors import MAQError

from . import configs as C

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Converted:
    """A converted file and how it was made. ``cached``: found in the cache (``seconds`` is the original time)."""

    path: Path
    key: str
    seconds: float
    cached: bool
    tool: str
    options: dict
    command: list[str]
    note: str = ""

    def as_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["path"] = str(self.path)
        return d


def _sidecar(path: Path) -> dict | None:
    try:
        return json.loads(path.with_suffix(".json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def find_cached(cache: Path, key: str, source: dict, options: dict, any_tool: bool) -> Path | None:
    """The cached file of ``key``; with ``any_tool``, else the newest one with the same source and options."""
    exact = cache / f"{key}.gguf"
    if exact.is_file():
        return exact
    if not any_tool:
        return None
    best = None
    for js in cache.glob("*.json"):
        meta = _sidecar(js.with_suffix(".gguf"))
        gguf = js.with_suffix(".gguf")
        if meta and gguf.is_file() and meta.get("source") == source and meta.get("options") == options:
            if best is None or gguf.stat().st_mtime > best.stat().st_mtime:
                best = gguf
    return best


def _converting_elsewhere(cache: Path, key: str) -> bool:
    """True while another live process writes ``<key>.gguf`` (the converter's ``.<name>.<pid>.tmp``)."""
    import os

    for tmp in cache.glob(f".{key}.gguf.*.tmp"):
        try:
            pid = int(tmp.name.rsplit(".", 2)[-2])
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError):
            continue
        except PermissionError:
            pass
        return True
    return False


def same_as(flags: list[str]) -> tuple[list[str], str]:
    """Flags that write the same tensors with less work, and why ("" when none). ``--no-mixed`` (ablation -M: K = 0,
    no salient words) is GPTQ 2-bit with the same options (tests/converter/test_run.py::
    test_no_mixed_is_exactly_gptq), so it is converted (and cached) as ``--method gptq``."""
    opts = C.canonical_flags(flags)
    if opts.get("no_mixed") and opts.get("method", "maq") == "maq":
        return [f for f in flags if f != "--no-mixed"] + ["--method", "gptq"], \
            "-M (--no-mixed) is GPTQ with the same options: converted as --method gptq"
    return flags, ""


def convert(cfg: C.Config, source: Path, source_id: dict, cache: Path, common_flags: list[str] | tuple[str, ...] = (),
            any_tool: bool = False, threads: int | None = None, log_dir: Path | None = None) -> Converted:
    """Convert ``source`` with ``common_flags + cfg.flags`` (cached; see ``same_as``). ``threads``: torch threads of
    the converter."""
    flags, note = same_as(list(common_flags) + list(cfg.flags))
    if note:
        log.info("%s: %s", cfg.name, note)
    options = C.canonical_flags(flags)
    tool = C.tool_version()
    key = C.cache_key(source_id, options, tool)
    cache.mkdir(parents=True, exist_ok=True)
    hit = find_cached(cache, key, source_id, options, any_tool)
    while hit is None and _converting_elsewhere(cache, key):
        log.info("%s: another process is converting it; waiting", cfg.name)
        time.sleep(30)
        hit = find_cached(cache, key, source_id, options, any_tool)
    if hit is not None:
        meta = _sidecar(hit) or {}
        seconds = float(meta.get("seconds", float("nan")))
        if not meta:   # made by a process that did not finish its bookkeeping: the converter's own figure
            m = re.search(r"in ([0-9.]+) s$", (cache / f"{hit.stem}.log").read_text(errors="replace").strip()) \
                if (cache / f"{hit.stem}.log").is_file() else None
            seconds = float(m.group(1)) if m else seconds
        return Converted(path=hit, key=hit.stem, seconds=seconds, cached=True,
                         tool=meta.get("tool", "?"), options=options, command=meta.get("command", []), note=note)
    out = cache / f"{key}.gguf"
    cmd = [sys.executable, "-m", "maq", "convert", str(source), "--out", str(out), "--no-progress", *flags]
    if threads is not None:
        cmd += ["--threads", str(threads)]
    logf = (log_dir or cache) / f"{key}.log"
    log.info("converting %s: %s", cfg.name, " ".join(cmd[3:]))
    t0 = time.time()
    with open(logf, "w") as lf:
        proc = subprocess.run(cmd, stdout=lf, stderr=subprocess.STDOUT, text=True)
    seconds = time.time() - t0
    if proc.returncode != 0 or not out.is_file():
        tail = [ln for ln in logf.read_text(errors="replace").splitlines() if ln.strip()]
        raise MAQError(f"maq convert failed for {cfg.name!r} (exit {proc.returncode}): "
                       f"{tail[-1] if tail else 'no output'} (log: {logf})")
    meta = {"key": key, "name": cfg.name, "source": source_id, "options": options, "flags": flags, "tool": tool,
            "command": cmd, "seconds": round(seconds, 2), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "log_tail": logf.read_text(errors="replace").splitlines()[-40:]}
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    tmp.replace(out.with_suffix(".json"))
    return Converted(path=out, key=key, seconds=seconds, cached=False, tool=tool, options=options, command=cmd,
                     note=note)
