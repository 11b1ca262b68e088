"""Configurations: specs, files, and the cache key (canonical converter options)."""
from __future__ import annotations

import json

import pytest

from maq.errors import MAQError
from maq.evaluation import configs as C


@pytest.mark.parametrize("spec,kind", [("reference", "reference"), ("@llamacpp:q2_k+imatrix", "llamacpp"),
                                       ("@file:/x.gguf", "file"), ("--method gptq --group 32", "convert"),
                                       ("", "convert")])
def test_parse_spec_kinds(spec, kind):
    c = C.parse_spec("x", spec)
    assert c.kind == kind
    assert C.parse_spec("x", c.spec) == c          # spec round-trips


def test_llamacpp_spec_fields():
    c = C.parse_spec("q", "@llamacpp:IQ2_XXS+imatrix")
    assert (c.qtype, c.imatrix) == ("IQ2_XXS", True)
    assert C.parse_spec("q", "@llamacpp:Q4_0").imatrix is False


@pytest.mark.parametrize("bad", ["@llamacpp:", "@nope", "--method 'unclosed"])
def test_bad_specs(bad):
    with pytest.raises(MAQError):
        C.parse_spec("x", bad)


def test_parse_arg_needs_name():
    with pytest.raises(MAQError, match="NAME=SPEC"):
        C.parse_arg("--method gptq")
    assert C.parse_arg("g=--method gptq").flags == ("--method", "gptq")


def test_config_files(tmp_path):
    t = tmp_path / "c.txt"
    t.write_text("# comment\nref = reference\ng32 = --method gptq --group 32  # trailing\n\n")
    assert [(c.name, c.spec) for c in C.load_file(t)] == [("ref", "reference"), ("g32", "--method gptq --group 32")]
    j = tmp_path / "c.json"
    j.write_text(json.dumps({"a": "--no-mixed", "b": "@llamacpp:Q4_0"}))
    assert [c.kind for c in C.load_file(j)] == ["convert", "llamacpp"]
    j.write_text(json.dumps([{"name": "a", "spec": "reference"}]))
    assert C.load_file(j)[0].kind == "reference"
    t.write_text("no equals sign\n")
    with pytest.raises(MAQError, match="NAME = SPEC"):
        C.load_file(t)


def test_unique_names():
    with pytest.raises(MAQError, match="twice"):
        C.check_unique([C.parse_spec("a", ""), C.parse_spec("a", "reference")])


def test_presets_parse():
    for name in C.PRESETS:
        cfgs = C.preset(name)
        C.check_unique(cfgs)
        for c in cfgs:
            if c.kind == "convert":
                C.canonical_flags(c.flags)


def test_canonical_flags_ignore_defaults_and_order():
    assert C.canonical_flags([]) == {}
    assert C.canonical_flags(["--method", "maq", "--group", "128", "--threads", "3", "--no-progress"]) == {}
    a = C.canonical_flags(["--method", "gptq", "--nsamples", "32"])
    b = C.canonical_flags(["--nsamples", "32", "--method", "gptq"])
    assert a == b == {"method": "gptq", "nsamples": 32}
    assert C.canonical_flags(["--no-salient-feedback"]) == {"salient_feedback": False}


def test_canonical_calib_by_content(tmp_path):
    x, y, z = tmp_path / "x.txt", tmp_path / "y.txt", tmp_path / "z.txt"
    x.write_text("same text")
    y.write_text("same text")
    z.write_text("other text")
    kx, ky, kz = (C.canonical_flags(["--calib", str(p)]) for p in (x, y, z))
    assert kx == ky != kz
    with pytest.raises(MAQError, match="not found"):
        C.canonical_flags(["--calib", str(tmp_path / "missing.txt")])


def test_bad_converter_flag():
    with pytest.raises(MAQError, match="converter flags"):
        C.canonical_flags(["--group", "48"])


def test_cache_key_changes_with_each_part():
    src = {"name": "m.gguf", "size": 10, "sha256": "ab"}
    base = C.cache_key(src, {"method": "gptq"}, "t1")
    assert base == C.cache_key(dict(src), {"method": "gptq"}, "t1")
    assert base != C.cache_key({**src, "sha256": "ac"}, {"method": "gptq"}, "t1")
    assert base != C.cache_key(src, {"method": "rtn"}, "t1")
    assert base != C.cache_key(src, {"method": "gptq"}, "t2")


def test_tool_version_names_converter_digest():
    v = C.tool_version()
    assert v.startswith("maq ") and "converter+format" in v


def test_source_identity(tmp_path):
    f = tmp_path / "m.gguf"
    f.write_bytes(b"GGUF" + b"\0" * 20)
    a = C.source_identity(f)
    f.write_bytes(b"GGUF" + b"\1" * 20)
    assert C.source_identity(f)["sha256"] != a["sha256"] and a["size"] == 24


def test_no_mixed_converted_as_gptq():
    from maq.evaluation import convert

    flags, note = convert.same_as(["--nsamples", "32", "--no-mixed"])
    assert "--no-mixed" not in flags and flags[-2:] == ["--method", "gptq"] and "-M" in note
    assert C.canonical_flags(flags) == C.canonical_flags(["--nsamples", "32", "--method", "gptq"])
    assert convert.same_as(["--no-grouping"]) == (["--no-grouping"], "")
