"""llama.cpp's own tools beside ours: requantize, importance matrix, perplexity, decode speed.

The tools come from ``scripts/build_llamacpp.sh`` (which prints their folder, building them on first use from the
llama.cpp vendored in llama-cpp-python's sdist). Every run's command line and output tail are kept in the results.

* ``quantize``: ``llama-quantize [--imatrix F] SRC OUT TYPE`` (``--allow-requantize`` when SRC is not float);
* ``imatrix``: ``llama-imatrix -m SRC -f TEXT -c CTX --chunks N`` (the first N chunks of CTX tokens of the text);
* ``perplexity``: ``llama-perplexity -m F -f TEXT -c CTX [--chunks N]``: llama.cpp scores the second half of each
  window (our ``second-half`` protocol); its final estimate is parsed;
* ``bench``: ``llama-bench -m F -p P -n N -t T -o json``: tokens/s of prompt processing and generation.
"""
from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import time
from pathlib import Path

from maq.errors import MAQError

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
FLOAT_TYPES = ("F32", "F16", "BF16")


def bin_dir() -> Path:
    """The folder of llama.cpp's tools (built by scripts/build_llamacpp.sh if missing)."""
    script = ROOT / "scripts" / "build_llamacpp.sh"
    proc = subprocess.run(["bash", str(script)], capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()
        raise MAQError(f"scripts/build_llamacpp.sh failed: {tail[-1] if tail else proc.returncode}")
    return Path(proc.stdout.strip().splitlines()[-1])


def version(bins: Path) -> str:
    try:
        return (bins.parent / "VERSION").read_text().strip()
    except OSError:
        return "unknown"


def _run(cmd: list, log_path: Path | None = None, timeout: float | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(Path(cmd[0]).parent) + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, timeout=timeout)
    if log_path is not None:
        log_path.write_text(f"$ {' '.join(map(str, cmd))}\n{proc.stdout}\n--- stderr ---\n{proc.stderr}")
    return proc


def _fail(what: str, proc: subprocess.CompletedProcess) -> MAQError:
    lines = [ln for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return MAQError(f"{what} failed (exit {proc.returncode}): {lines[-1] if lines else 'no output'}")


def quantize(bins: Path, src: Path, out: Path, qtype: str, imatrix: Path | None = None, threads: int = 2,
             extra: list[str] | tuple[str, ...] = ()) -> dict:
    """Write ``out`` (through a temp name); ``extra``: more options (``--tensor-type ffn_down=iq2_xs``); returns
    {seconds, command}."""
    tmp = out.with_name(out.name + ".tmp")
    cmd = [bins / "llama-quantize", *extra]
    if imatrix is not None:
        cmd += ["--imatrix", imatrix]
    from maq.runtime.inspect import read_header

    src_types = {t.type_name for t in read_header(src).tensors if len(t.ne) == 2}
    if not src_types <= set(FLOAT_TYPES):
        cmd.append("--allow-requantize")
    cmd += [src, tmp, qtype, str(threads)]
    t0 = time.time()
    proc = _run(cmd, out.with_suffix(".quantize.log"))
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise _fail(f"llama-quantize {qtype}", proc)
    tmp.replace(out)
    return {"seconds": time.time() - t0, "command": [str(c) for c in cmd]}


def imatrix(bins: Path, src: Path, text: Path, out: Path, ctx: int = 2048, chunks: int = 32,
            threads: int = 2) -> dict:
    tmp = out.with_name(out.name + ".tmp.gguf")
    cmd = [bins / "llama-imatrix", "-m", src, "-f", text, "-c", ctx, "--chunks", chunks, "-t", threads,
           "-o", tmp]
    t0 = time.time()
    proc = _run(cmd, out.with_suffix(".imatrix.log"))
    if proc.returncode != 0 or not tmp.is_file():
        tmp.unlink(missing_ok=True)
        raise _fail("llama-imatrix", proc)
    tmp.replace(out)
    return {"seconds": time.time() - t0, "command": [str(c) for c in cmd]}


_FINAL = re.compile(r"Final estimate: PPL = ([0-9.]+|inf|nan) \+/- ([0-9.]+|inf|nan)")
_CHUNK = re.compile(r"\[(\d+)\]([0-9.]+|inf|nan|-nan)")


def parse_perplexity(text: str) -> dict:
    """{ppl, ppl_stderr, windows, running} from llama-perplexity's output."""
    m = _FINAL.search(text)
    running = [(int(i), float(v.replace("-nan", "nan"))) for i, v in _CHUNK.findall(text)]
    if not m:
        raise MAQError("llama-perplexity: no 'Final estimate' in its output")
    return {"ppl": float(m.group(1)), "ppl_stderr": float(m.group(2)), "windows": running[-1][0] if running else 0,
            "running": [v for _, v in running]}


def perplexity(bins: Path, model: Path, text: Path, ctx: int = 2048, chunks: int | None = None,
               threads: int = 2, log_path: Path | None = None) -> dict:
    cmd = [bins / "llama-perplexity", "-m", model, "-f", text, "-c", ctx, "-b", ctx, "-t", threads]
    if chunks:
        cmd += ["--chunks", chunks]
    t0 = time.time()
    proc = _run(cmd, log_path)
    if proc.returncode != 0:
        raise _fail("llama-perplexity", proc)
    out = parse_perplexity(proc.stdout + proc.stderr)
    out.update({"seconds": time.time() - t0, "command": [str(c) for c in cmd], "protocol": "second-half",
                "tokens": out["windows"] * (ctx - 1 - ctx // 2)})
    return out


def bench(bins: Path, model: Path, threads: list[int], n_gen: int = 128, n_prompt: int = 128,
          reps: int = 3) -> dict:
    """{"t{threads}": {"tg": tok/s, "pp": tok/s}} from llama-bench's JSON."""
    cmd = [bins / "llama-bench", "-m", model, "-p", n_prompt, "-n", n_gen, "-t", ",".join(map(str, threads)),
           "-r", reps, "-o", "json"]
    proc = _run(cmd)
    if proc.returncode != 0:
        raise _fail("llama-bench", proc)
    return parse_bench(proc.stdout)


def parse_bench(text: str) -> dict:
    out: dict = {}
    for row in json.loads(text):
        key = f"t{row['n_threads']}"
        out.setdefault(key, {})["pp" if row.get("n_prompt") else "tg"] = float(row["avg_ts"])
    return out
