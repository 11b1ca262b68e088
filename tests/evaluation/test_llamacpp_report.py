"""llama.cpp output parsing, the results file, and RESULTS.md regeneration from JSON (no measurement)."""
from __future__ import annotations

import json
import math

import pytest

from maq.errors import MAQError
from maq.evaluation import cli, llamacpp, report

PPL_OUT = """perplexity: tokenizing the input ..
perplexity: calculating perplexity over 3 chunks, n_ctx=2048, batch_size=2048, n_seq=1
perplexity: 2.10 seconds per pass - ETA 0.10 minutes
[1]16.4379,[2]19.1230,[3]18.1210,
Final estimate: PPL = 18.1210 +/- 0.61472
"""


def test_parse_perplexity():
    r = llamacpp.parse_perplexity(PPL_OUT)
    assert r["ppl"] == pytest.approx(18.121) and r["ppl_stderr"] == pytest.approx(0.61472)
    assert r["windows"] == 3 and r["running"] == [16.4379, 19.123, 18.121]
    with pytest.raises(MAQError, match="Final estimate"):
        llamacpp.parse_perplexity("[1]12.0,\n")


def test_parse_bench():
    rows = [{"n_threads": 1, "n_prompt": 128, "n_gen": 0, "avg_ts": 396.0},
            {"n_threads": 1, "n_prompt": 0, "n_gen": 128, "avg_ts": 107.3},
            {"n_threads": 2, "n_prompt": 0, "n_gen": 128, "avg_ts": 150.0}]
    assert llamacpp.parse_bench(json.dumps(rows)) == {"t1": {"pp": 396.0, "tg": 107.3}, "t2": {"tg": 150.0}}


def _row(name, kind, spec, bpw, full, half, md=None, **extra):
    win = [{"i": i, "nll": {"full": math.log(full) * 100, "second-half": math.log(half) * 50},
            "tokens": {"full": 100, "second-half": 50}} for i in range(12)]
    return {"name": name, "kind": kind, "spec": spec, "bpw": {"linear": bpw, "all": bpw + 1,
            "linear_by_type": {"MAQ2": {"tensors": 2, "bpw": bpw}}, "linear_by_kind": {}},
            "size": {"file_bytes": 2**20, "bf16_bytes": 2**22, "size_vs_bf16": 0.25},
            "metadata": md or {}, "ppl": {"wikitext2": {"windows": win}}, **extra}


def _run():
    return {"run": "t", "meta": {"source": "/x/m.gguf", "ctx": 2048, "limit": None}, "rows": [
        _row("reference", "reference", "reference", 5.0, 20.0, 18.0,
             llamacpp_ppl={"ppl": 18.1, "windows": 12}),
        _row("maq", "convert", "", 2.3, 1.5e6, 1.2e6, {"maq.method": "maq", "maq.salient.fraction": 0.0244,
                                                        "maq.salient.top_k": -1, "maq.ablation": "",
                                                        "maq.group_size": 128, "maq.scale_search": "clip"},
             zeroshot={"arc_easy": {"acc": 0.5, "acc_norm": 0.25, "n": 4}}),
        _row("maq -M", "convert", "--no-mixed", 2.27, 4e5, 3e5, {"maq.method": "gptq", "maq.ablation": "no-mixed",
                                                                  "maq.group_size": 128}),
        {"name": "broken", "kind": "convert", "spec": "--group 32", "error": "convert: MAQError: boom"},
    ]}


def test_tables_render_partial_windows_and_failures():
    run = _run()
    t = report.table_ppl(run)
    assert "| reference |" in t and "20.000 (partial)" in t and "18.100 (12 win)" in t
    assert "1.50e+06" in t and "**failed** (convert: MAQError: boom...)" in t
    assert "12 / 1200" in t
    a = report.table_ablation(run)
    assert "full method | maq |" in a and "without mixed precision (-M) | maq -M |" in a
    z = report.table_zeroshot(run)
    assert "50.0 (25.0) n=4" in z
    assert "MAQ2 ×2: 2.300" in report.table_types(run)


def test_write_keeps_prose_and_fills_markers(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "t.json").write_text(json.dumps(_run()))
    md = tmp_path / "RESULTS.md"
    md.write_text("# R\n\nhand-written analysis\n\n" + report.block("t", "ppl", "stale") + "\n\nmore prose\n")
    report.write(res, md)
    text = md.read_text()
    assert "hand-written analysis" in text and "more prose" in text and "stale" not in text
    assert text.count("BEGIN GENERATED t:ppl") == 1 and "| maq |" in text
    report.write(res, md)                                   # idempotent
    assert md.read_text() == text


def test_new_run_gets_a_section(tmp_path):
    res = tmp_path / "results"
    res.mkdir()
    (res / "t.json").write_text(json.dumps(_run()))
    md = tmp_path / "RESULTS.md"
    report.write(res, md)
    text = md.read_text()
    for t in report.TABLES:
        assert f"BEGIN GENERATED t:{t}" in text


def test_plot(tmp_path):
    pytest.importorskip("matplotlib")
    line = report.plot(_run(), tmp_path / "p.png")
    assert line.startswith("![") and (tmp_path / "p.png").stat().st_size > 10000


def test_results_file_roundtrip(tmp_path):
    r = cli.Results(tmp_path / "x.json", {"a": 1})
    r.put({"name": "one", "v": 1})
    r.put({"name": "one", "v": 2})
    r.put({"name": "two"})
    again = cli.Results(tmp_path / "x.json", {"a": 2})
    assert [x["name"] for x in again.data["rows"]] == ["one", "two"] and again.row("one")["v"] == 2


def test_c4_heldout_documents(tmp_path):
    data = tmp_path / "data" / "calib"
    data.mkdir(parents=True)
    (data / "c4_en_train_first1000.jsonl").write_text("".join(json.dumps({"text": f"doc {i}"}) + "\n"
                                                              for i in range(1000)))
    p = cli.c4_heldout_text(tmp_path / "data", tmp_path / "cache", (900, 902))
    assert p.read_text() == "doc 900\n\ndoc 901\n\n"


def test_two_writers_keep_each_others_rows(tmp_path):
    a = cli.Results(tmp_path / "x.json", {})
    b = cli.Results(tmp_path / "x.json", {})
    a.put({"name": "a", "v": 1})
    b.put({"name": "b", "v": 1})          # b never saw row a in memory
    a.put({"name": "a", "v": 2})
    rows = {r["name"]: r["v"] for r in cli.Results(tmp_path / "x.json", {}).data["rows"]}
    assert rows == {"a": 2, "b": 1}


def test_all_runs_plot_block(tmp_path):
    pytest.importorskip("matplotlib")
    res = tmp_path / "results"
    res.mkdir()
    (res / "t.json").write_text(json.dumps(_run()))
    curve = _run()
    curve["rows"] = [_row(f"maq {b}", "convert", f"--target-bpw {b}", b, 30.0 / b, 25.0 / b) for b in (3.0, 4.0)]
    (res / "curve.json").write_text(json.dumps(curve))
    md = tmp_path / "RESULTS.md"
    md.write_text("# R\n")
    report.write(res, md)
    text = md.read_text()
    assert text.count("BEGIN GENERATED all:plot") == 1 and "results/all_ppl_vs_bpw.png" in text
    assert (res / "all_ppl_vs_bpw.png").stat().st_size > 10000
    assert "BEGIN GENERATED curve:ppl" in text and "| maq 3.0 |" in text    # a new run: its own section
    report.write(res, md)
    assert md.read_text() == text


def test_ppl_reused_from_another_run_of_the_same_file(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"x" * 100)
    sig = {"text": "/t.raw", "ctx": 2048}
    slot = {"sig": sig, "windows": [{"i": 0, "nll": {"full": 1.0, "second-half": 0.5},
                                     "tokens": {"full": 10, "second-half": 5}}]}
    rows = [{"name": "a", "file": str(f), "size": {"file_bytes": 100}, "ppl": {"wikitext2": slot},
             "llamacpp_ppl": {"sig": {**sig, "limit": 1}, "ppl": 3.0}}]
    (tmp_path / "one.json").write_text(json.dumps({"rows": rows}))
    got = cli.reuse_ppl(tmp_path, f, "wikitext2", sig, "two")
    assert got["windows"] == slot["windows"] and got["reused_from"] == "one: a"
    assert cli.reuse_ppl(tmp_path, f, "wikitext2", sig, "one", "a") is None     # not from the row itself
    assert cli.reuse_ppl(tmp_path, f, "wikitext2", sig, "one", "b")["reused_from"] == "one: a"   # another row
    assert cli.reuse_ppl(tmp_path, f, "wikitext2", {**sig, "ctx": 512}, "two") is None
    f.write_bytes(b"x" * 99)                                                    # another file under that name
    assert cli.reuse_ppl(tmp_path, f, "wikitext2", sig, "two") is None
    f.write_bytes(b"x" * 100)
    assert cli.reuse_llamacpp_ppl(tmp_path, f, {**sig, "limit": 1}, "two")["ppl"] == 3.0
    assert cli.reuse_llamacpp_ppl(tmp_path, f, {**sig, "limit": 2}, "two") is None


def test_rows_in_reading_order():
    run = {"meta": {"command": ["evaluate.py", "--preset", "headline"]}, "rows": [
        {"name": "llama.cpp Q2_K", "kind": "llamacpp"}, {"name": "extra", "kind": "convert"},
        {"name": "maq", "kind": "convert"}, {"name": "reference", "kind": "reference"},
        {"name": "gptq g128", "kind": "convert"}]}
    assert [r["name"] for r in report.order_rows(run)] == ["reference", "gptq g128", "maq", "extra", "llama.cpp Q2_K"]
