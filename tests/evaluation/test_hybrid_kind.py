"""One-kind hybrids (the ffn_down preset): the replaced tensors are exactly the quantized file's, the rest and the
header are the base's; bits/weight of the kind; the table, the frontier check and the plot; Table 3's renderer."""
from __future__ import annotations

import numpy as np
import pytest

from maq.errors import MAQError
from maq.evaluation import configs as C
from maq.evaluation import hybrid as H
from maq.evaluation import zeroshot as Z
from maq.runtime.inspect import read_header, read_weight


def test_prepare_replaces_only_the_kind(tiny_f32, tiny_maq2, tmp_path):
    names = H.kind_names(tiny_maq2, "ffn_down")
    assert names == [f"blk.{i}.ffn_down.weight" for i in range(len(names))] and names
    out, info = H.prepare(tiny_maq2, tiny_f32, "ffn_down", tmp_path)
    assert info["kind"] == "ffn_down" and info["types"] == ["MAQ2"] and 2.0 < info["bpw"] < 3.0
    h_out, h_base = read_header(out), read_header(tiny_f32)
    assert [t.name for t in h_out.tensors] == [t.name for t in h_base.tensors]
    for t in h_base.tensors:
        got = read_weight(out, t.name, h_out)[0]
        if t.name in names:
            assert np.array_equal(got, read_weight(tiny_maq2, t.name)[0])
            assert not np.array_equal(got, read_weight(tiny_f32, t.name, h_base)[0])
        else:
            assert np.array_equal(got, read_weight(tiny_f32, t.name, h_base)[0]), t.name
    again, _ = H.prepare(tiny_maq2, tiny_f32, "ffn_down", tmp_path)      # made once
    assert again == out and again.stat().st_mtime == out.stat().st_mtime
    same, ref_info = H.prepare(tiny_f32, tiny_f32, "ffn_down", tmp_path, is_reference=True)
    assert same == tiny_f32 and ref_info["bpw"] == pytest.approx(32.0)
    with pytest.raises(MAQError, match="expected one of"):
        H.kind_names(tiny_maq2, "ffn_sideways")


def _row(name, kind, bpw, ppl, types=("X",)):
    return {"name": name, "kind": kind, "hybrid": {"kind": "ffn_down", "bpw": bpw, "types": list(types),
                                                   "salient_pct": None},
            "ppl": {"wikitext2": {"full": {"ppl": ppl, "tokens": 4094, "windows": 2}}}}


def test_table_plot_and_frontier(tmp_path):
    run = {"rows": [_row("reference", "reference", 5.0, 20.0), _row("maq a", "convert", 2.3, 30.0),
                    _row("maq b", "convert", 3.1, 22.0), _row("llama.cpp IQ2_XXS", "llamacpp", 2.06, 40.0),
                    _row("llama.cpp Q3_K", "llamacpp", 3.44, 21.0), {"name": "failed", "error": "x"}]}
    lines = H.frontier_check(H._points(run))
    assert lines[0].startswith("llama.cpp IQ2_XXS") and "no MAQ point measured" in lines[0]  # none at <= 2.06
    assert "NOT matched: the best MAQ point at equal or fewer bits is maq b" in lines[1]       # 22.0 > 21.0
    run["rows"][2]["ppl"]["wikitext2"]["full"]["ppl"] = 20.5
    assert "matched by maq b" in H.frontier_check(H._points(run))[1]
    md = H.table(run)
    assert md.splitlines()[2].startswith("| reference | reference | 5.000") and "1.500x" in md
    pytest.importorskip("matplotlib")
    assert H.plot(run, tmp_path / "p.png").startswith("![") and (tmp_path / "p.png").stat().st_size > 1000


def test_presets_and_hybrid_kind():
    assert C.HYBRID_PRESETS["ffn_down"] == "ffn_down"
    ffn = {c.name: c for c in C.preset("ffn_down")}
    assert {c.qtype for c in ffn.values() if c.kind == "llamacpp"} == {
        "Q2_K", "IQ2_XXS", "IQ2_XS", "IQ2_S", "IQ3_XXS", "Q3_K", "IQ4_XS", "Q4_K"}
    assert all(c.imatrix for c in ffn.values() if c.kind == "llamacpp")
    t3 = {c.name: c for c in C.preset("table3")}
    for name in ("maq 2.5", "maq 3.0", "maq 3.5", "maq 4.0", "gptq 3-bit", "gptq 4-bit"):
        assert t3[name].flags == ffn[name].flags                 # one cached conversion serves both presets
    assert t3["llama.cpp Q4_0"].qtype == "Q4_0" and not t3["llama.cpp Q4_0"].imatrix


def test_table3_shape():
    def zs(acc, norm):
        return {t: {"acc": acc, "acc_norm": None if t in Z.ACC_ONLY else norm, "n": 30, "of": 100}
                for t in Z.QA_FOLDERS}

    run = {"rows": [{"name": "reference", "bpw": {"linear": 5.0}, "zeroshot": zs(0.5, 0.6)},
                    {"name": "maq 4.0", "bpw": {"linear": 4.0}, "zeroshot": zs(0.45, 0.5)},
                    {"name": "partial", "bpw": {"linear": 3.0}, "zeroshot": {"piqa": zs(0.4, 0.4)["piqa"]}}]}
    md = Z.table3(run).splitlines()
    assert md[0].startswith("| configuration | linear bits/w | PIQA (30/100) | BoolQ (30/100)")
    assert "| 50.0 / 60.0 | 50.0 |" in md[2]                   # PIQA acc / acc_norm, BoolQ acc only
    ref_avg_norm = (5 * 60 + 2 * 50) / 7
    assert md[2].endswith(f"| 50.0 | {ref_avg_norm:.1f} | — |")
    assert md[3].endswith("| -5.0 |")
    assert [c.strip() for c in md[4].split("|")[-4:-1]] == ["—", "—", "—"]   # incomplete: no average


def test_report_refreshes_the_runs_own_tables(tmp_path):
    import json

    from maq.evaluation import cli

    rows = [_row("reference", "reference", 5.0, 20.0), _row("llama.cpp Q3_K", "llamacpp", 3.44, 21.0)]
    (tmp_path / "ffn.json").write_text(json.dumps({"meta": {"hybrid": "ffn_down"}, "rows": rows}))
    (tmp_path / "plain.json").write_text(json.dumps({"meta": {}, "rows": rows}))
    pytest.importorskip("matplotlib")
    cli.refresh_tables(tmp_path)
    t = json.loads((tmp_path / "ffn.json").read_text())["tables"]
    assert "| llama.cpp Q3_K | llama.cpp | 3.440 |" in t["hybrid"] and (tmp_path / "ffn_ppl_vs_bpw.png").is_file()
    assert "tables" not in json.loads((tmp_path / "plain.json").read_text())
