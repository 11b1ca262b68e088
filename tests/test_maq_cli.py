"""The top-level ``maq`` CLI: ``--help`` of the program and of every subcommand renders (argparse expands
``%`` in help strings only when printing, so a stray ``%`` fails only there)."""
from __future__ import annotations

import argparse

import pytest

from maq.cli import build_parser, main


def _subcommands() -> list[str]:
    p = build_parser()
    for a in p._actions:
        if isinstance(a, argparse._SubParsersAction):
            return sorted(a.choices)
    return []


def test_top_level_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in ("convert", "generate", "chat", "perplexity", "inspect", "eval", "fetch", "info"):
        assert name in out


@pytest.mark.parametrize("cmd", _subcommands())
def test_subcommand_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([cmd, "--help"])
    assert e.value.code == 0
    assert "usage: maq " + cmd in capsys.readouterr().out


def test_missing_subcommand_module_is_an_error(monkeypatch, capsys):
    """A stale install lacking a subcommand's module fails loudly (one line naming it), never drops it."""
    import maq.cli

    monkeypatch.setattr(maq.cli, "SUBCOMMAND_MODULES", maq.cli.SUBCOMMAND_MODULES + ("maq.nonexistent.cli",))
    assert main(["--help"]) == 1
    err = capsys.readouterr().err
    assert "maq.nonexistent.cli" in err and "reinstall" in err and "Traceback" not in err
