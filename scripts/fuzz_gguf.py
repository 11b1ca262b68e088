#!/usr/bin/env python
"""Coverage-guided fuzzing of the GGUF loader with atheris (libFuzzer for Python). Not part of the test suite.

Each input is written to a file and loaded as the runtime loads a model: ``maq.Llama`` (the GGUF reader and its
validation, the tokenizer, the C model) followed by a short completion (the forward pass). A ``maq.MAQError`` is
the expected answer to a bad file; any other exception, a crash, a timeout or an out-of-memory is a finding that
libFuzzer saves as ``crash-*`` / ``timeout-*`` / ``oom-*`` in the working directory.

The seed corpus is the tiny valid MAQ GGUF of tests/runtime/hostile_gguf.py plus a sample of its hostile
variants (written to CORPUS_DIR, default ./fuzz_corpus); the Python modules of the loader are instrumented so
libFuzzer sees which branches an input reaches.

    pip install atheris
    python scripts/fuzz_gguf.py -runs=20000                    # bounded run
    python scripts/fuzz_gguf.py -max_total_time=600 fuzz_corpus # 10 minutes, growing the corpus
    python scripts/fuzz_gguf.py crash-<sha1>                    # replay one finding

Defaults added unless given: -rss_limit_mb=2048 -timeout=20 -max_len=262144.
"""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "runtime"))

try:
    import atheris
except ImportError:  # pragma: no cover
    sys.exit("fuzz_gguf.py needs atheris: pip install atheris")

with atheris.instrument_imports(include=["maq"]):
    import maq.runtime.api  # noqa: F401
    import maq.runtime.gguf_loader  # noqa: F401
    import maq.runtime.tokenizer  # noqa: F401
    from maq.errors import MAQError
    from maq.runtime.api import Llama

import hostile_gguf as H  # noqa: E402

_DIR = Path(tempfile.mkdtemp(prefix="maq_fuzz_", dir="/dev/shm" if os.path.isdir("/dev/shm") else None))
_PATH = _DIR / "input.gguf"


def test_one_input(data: bytes) -> None:
    _PATH.write_bytes(data)
    try:
        llm = Llama(str(_PATH), n_ctx=16, n_threads=1, n_batch=4, seed=0, verbose=False)
        llm.create_completion(H.PROMPT, max_tokens=2, temperature=0.8, top_k=0, seed=1, echo=True, logprobs=2)
    except MAQError as exc:
        msg = str(exc)
        if "\n" in msg or str(_PATH) not in msg:
            raise AssertionError(f"MAQError not one line naming the file: {msg!r}") from None


def write_seeds(corpus: Path, n_variants: int = 200) -> None:
    """The valid file and every k-th hostile variant (skipping the huge-nesting ones)."""
    corpus.mkdir(parents=True, exist_ok=True)
    if any(corpus.iterdir()):
        return
    variants = list(H.variants(n_random=0))
    step = max(1, len(variants) // n_variants)
    for i, v in enumerate(variants):
        if i == 0 or i % step == 0:
            (corpus / f"seed{i:05d}").write_bytes(v.data)


def main() -> None:
    import logging

    logging.disable(logging.WARNING)
    args = list(sys.argv)
    corpus_dirs = [a for a in args[1:] if not a.startswith("-") and Path(a).is_dir()]
    files = [a for a in args[1:] if not a.startswith("-") and Path(a).is_file()]
    if not corpus_dirs and not files:
        corpus = Path(os.environ.get("CORPUS_DIR", "fuzz_corpus"))
        write_seeds(corpus)
        args.append(str(corpus))
    for flag, value in (("-rss_limit_mb", "2048"), ("-timeout", "20"), ("-max_len", "262144")):
        if not any(a.startswith(flag + "=") for a in args):
            args.append(f"{flag}={value}")
    atheris.Setup(args, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
