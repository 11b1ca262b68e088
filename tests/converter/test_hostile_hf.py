"""Hostile Hugging Face directories (hostile_hf.py): every variant gives one `maq: error:` line naming the file
(and the key or tensor), exit code 1, no traceback, within a time bound, nothing written. No torch needed."""
from __future__ import annotations

import shutil
import time

import pytest

import hostile_hf
from maq.cli import main
from maq.converter.source import open_source

VARIANTS = list(hostile_hf.variants())
TIME_LIMIT_S = 3.0     # the bar is 1 s; headroom for a loaded CI machine (measured: see the report)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    from maq.cli import build_parser

    build_parser()                    # the first-import cost is not the variants' (the time bound is per variant)
    import maq.converter.run  # noqa: F401
    return hostile_hf.write_base(tmp_path_factory.mktemp("hostile_hf") / "base")


def test_base_is_valid(base_dir):
    """The base directory opens: each variant's error comes from its one change."""
    src = open_source(base_dir)
    assert src.params.n_layer == hostile_hf.LAYERS and not src.params.tied
    assert src.tensor("blk.0.attn_q.weight").shape == (hostile_hf.DIM, hostile_hf.DIM)


def test_enough_variants():
    assert len(VARIANTS) >= 100
    assert len({v.name for v in VARIANTS}) == len(VARIANTS)


@pytest.mark.parametrize("variant", VARIANTS, ids=[v.name for v in VARIANTS])
def test_variant_one_clean_error(variant, base_dir, tmp_path, capsys):
    d = tmp_path / "model"
    shutil.copytree(base_dir, d)
    variant.mutate(d)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    capsys.readouterr()
    t0 = time.perf_counter()
    rc = main(["convert", str(d), "--out", str(out_dir / "x.gguf"), "--method", "f32", "--no-progress"])
    dt = time.perf_counter() - t0
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("maq: error:")]
    assert len(lines) == 1 and len(err.strip().splitlines()) == 1, err
    assert variant.needle in lines[0], lines[0]
    assert len(lines[0]) < 1000, lines[0][:300]          # a hostile name or value is not echoed whole
    assert dt < TIME_LIMIT_S, f"{variant.name}: {dt:.2f} s"
    assert not list(out_dir.iterdir())


def test_base_converts_and_tokenizer_library_errors_are_one_line(base_dir, tmp_path, capsys):
    """The base converts end to end (f32): the checks refuse nothing valid. A tokenizer.json the checks let
    through but the tokenizers library refuses (an unknown pre-tokenizer) is still one line naming the directory."""
    import json
    import shutil

    pytest.importorskip("transformers")
    out = tmp_path / "ok.gguf"
    assert main(["convert", str(base_dir), "--out", str(out), "--method", "f32", "--no-progress",
                 "--tokenizer-pre", "gpt-2"]) == 0
    assert out.stat().st_size > 0
    d = tmp_path / "model"
    shutil.copytree(base_dir, d)
    tj = json.loads((d / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = {"type": "NoSuchPreTokenizer"}
    (d / "tokenizer.json").write_text(json.dumps(tj))
    capsys.readouterr()
    rc = main(["convert", str(d), "--out", str(tmp_path / "x.gguf"), "--method", "f32", "--no-progress",
               "--tokenizer-pre", "gpt-2"])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("maq: error:")]
    assert rc == 1 and len(lines) == 1 and "Traceback" not in err, err
    assert str(d) in lines[0], lines[0]
    assert not (tmp_path / "x.gguf").exists() and not list(tmp_path.glob(".*.tmp"))
