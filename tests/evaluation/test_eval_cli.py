"""maq eval end to end on a tiny model: a failing configuration is reported in its row, the others measured;
conversions are cached by configuration hash; RESULTS.md regenerates from the JSON."""
from __future__ import annotations

import json

import pytest

from maq.evaluation import cli


def _args(tmp_path, model, text, *extra):
    ap = cli.argparse.ArgumentParser()
    cli.add_arguments(ap)
    return ap.parse_args([str(model), "--text", str(text), "--ctx", "128", "--limit", "2", "--no-speed",
                          "--no-llamacpp-ppl", "--run", "t", "--results-dir", str(tmp_path / "res"),
                          "--results-md", str(tmp_path / "RESULTS.md"), "--cache", str(tmp_path / "cache"), *extra])


def test_run_isolates_failures_and_caches_conversions(tiny_f32, tiny_maq2, wiki_text, tmp_path, caplog):
    args = _args(tmp_path, tiny_f32, wiki_text, "--config", "ref=reference", "--config", "gone=@file:/nonexistent.gguf",
                 "--config", f"maq=@file:{tiny_maq2}", "--config", "rtn=--method rtn --group 64",
                 "--config", "badflag=--group 64 --block 100")
    assert cli.run(args) == 0
    data = json.loads((tmp_path / "res" / "t.json").read_text())
    rows = {r["name"]: r for r in data["rows"]}
    assert "error" in rows["gone"] and "not found" in rows["gone"]["error"]
    assert "error" in rows["badflag"] and "convert" in rows["badflag"]["error"]
    for name in ("ref", "maq", "rtn"):
        r = rows[name]
        assert "error" not in r, r.get("error")
        w = r["ppl"]["wikitext2"]
        assert w["full"]["windows"] == 2 and w["full"]["tokens"] == 2 * 127
        assert w["second-half"]["tokens"] == 2 * (127 - 64)
    assert rows["ref"]["bpw"]["linear"] == pytest.approx(32.0)
    assert 2.0 < rows["rtn"]["bpw"]["linear"] < 3.5 and rows["rtn"]["conversion"]["cached"] is False
    # the same configuration again: converted once, measured again from the stored windows
    args2 = _args(tmp_path, tiny_f32, wiki_text, "--config", "rtn=--group 64 --method rtn")
    assert cli.run(args2) == 0
    again = {r["name"]: r for r in json.loads((tmp_path / "res" / "t.json").read_text())["rows"]}
    assert again["rtn"]["conversion"]["cached"] is True
    assert again["rtn"]["conversion"]["key"] == rows["rtn"]["conversion"]["key"]
    md = (tmp_path / "RESULTS.md").read_text()
    assert "BEGIN GENERATED t:ppl" in md and "| rtn |" in md and "**failed**" in md


def test_no_configurations(tiny_f32, wiki_text, tmp_path):
    from maq.errors import MAQError

    with pytest.raises(MAQError, match="no configurations"):
        cli.run(_args(tmp_path, tiny_f32, wiki_text))
    with pytest.raises(MAQError, match="--only"):
        cli.run(_args(tmp_path, tiny_f32, wiki_text, "--config", "a=reference", "--only", "b"))


def test_maq_cli_has_eval_and_inspect():
    from maq.cli import build_parser

    p = build_parser()
    args = p.parse_args(["eval", "--preset", "analysis", "--limit", "1"])
    assert args.func is cli.run and args.limit == 1
    from maq.runtime import inspect

    assert p.parse_args(["inspect", "x.gguf"]).func is inspect._run
