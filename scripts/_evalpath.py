"""Make ``maq.evaluation`` importable from the source tree when the installed ``maq`` predates it.

``pip install -e .`` maps ``maq.evaluation`` to ``evaluation/`` (setup.py); an editable install made before that
folder existed does not know it, so scripts load it from the tree instead.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ensure() -> None:
    try:
        import maq.evaluation  # noqa: F401
        return
    except ModuleNotFoundError as exc:
        if exc.name != "maq.evaluation":
            raise
    pkg = ROOT / "evaluation"
    spec = importlib.util.spec_from_file_location("maq.evaluation", pkg / "__init__.py",
                                                  submodule_search_locations=[str(pkg)])
    mod = importlib.util.module_from_spec(spec)
    sys.modules["maq.evaluation"] = mod
    spec.loader.exec_module(mod)
    import maq
    maq.evaluation = mod
