"""Bad input to `maq convert`: one clear `maq: error:` line each (a MAQError), exit code 1, no traceback, nothing
left on disk. Every case goes through the CLI entry point ``maq.cli.main``."""
from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

pytest.importorskip("torch")

from maq.cli import main  # noqa: E402

CAL = ["--nsamples", "2", "--seqlen", "32", "--no-progress"]


def _fails(capsys, args, *needles) -> str:
    """Run `maq convert ARGS`, expect exit 1 and exactly one error line containing every needle; return it."""
    rc = main(["convert", *args])
    err = capsys.readouterr().err
    assert rc == 1, err
    assert "Traceback" not in err
    lines = [ln for ln in err.splitlines() if ln.startswith("maq: error:")]
    assert len(lines) == 1, err
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def _copy_model(src, tmp_path):
    d = tmp_path / "model"
    shutil.copytree(src, d)
    return d


def _nothing_written(tmp_path):
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*.tmp"))


def test_missing_model_path(tmp_path, capsys):
    _fails(capsys, [str(tmp_path / "nope"), "--out", str(tmp_path / "x.gguf")], "nope", "no such file")
    _nothing_written(tmp_path)


def test_directory_without_config(tmp_path, capsys):
    d = tmp_path / "empty_model"
    d.mkdir()
    (d / "model.safetensors").write_bytes(b"")
    _fails(capsys, [str(d), "--out", str(tmp_path / "x.gguf")], "empty_model", "no config.json")
    _nothing_written(tmp_path)


def test_config_json_is_not_json(tiny_hf, tmp_path, capsys):
    d = _copy_model(tiny_hf, tmp_path)
    (d / "config.json").write_text("{ not json")
    _fails(capsys, [str(d), "--out", str(tmp_path / "x.gguf")], "config.json", "cannot read JSON")


def test_hf_architecture_gpt2_named(tiny_hf, tmp_path, capsys):
    d = _copy_model(tiny_hf, tmp_path)
    cfg = json.loads((d / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    cfg["architectures"] = ["GPT2LMHeadModel"]
    (d / "config.json").write_text(json.dumps(cfg))
    _fails(capsys, [str(d), "--out", str(tmp_path / "x.gguf"), *CAL], "config.json", "'gpt2'", "not supported")
    _nothing_written(tmp_path)


def test_gguf_architecture_gpt2_named(gpt2_gguf, tmp_path, capsys):
    path = gpt2_gguf
    _fails(capsys, [str(path), "--out", str(tmp_path / "x.gguf")], "gpt2.gguf", "'gpt2'", "not supported")
    assert not (tmp_path / "x.gguf").exists()


def test_truncated_gguf(tiny_f32_gguf, tmp_path, capsys):
    path = tmp_path / "cut.gguf"
    path.write_bytes(tiny_f32_gguf.read_bytes()[:100_000])
    _fails(capsys, [str(path), "--out", str(tmp_path / "x.gguf")], "cut.gguf")
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.parametrize("hf_name, shape", [
    ("model.layers.1.mlp.down_proj.weight", (64, 144)),       # ffn 160 in config.json
    ("model.layers.0.self_attn.k_proj.weight", (64, 64)),     # 2 KV heads x 16 = 32 rows
    ("model.embed_tokens.weight", (49000, 64)),               # vocab 49152
])
def test_safetensors_shape_differs_from_config(tiny_hf, tmp_path, capsys, hf_name, shape):
    from safetensors.numpy import load_file, save_file

    d = _copy_model(tiny_hf, tmp_path)
    st = d / "model.safetensors"
    tensors = load_file(str(st))
    tensors[hf_name] = np.zeros(shape, np.float32)
    save_file(tensors, str(st))
    line = _fails(capsys, [str(d), "--out", str(tmp_path / "x.gguf"), *CAL], hf_name, f"{list(shape)}",
                  "expected", "config.json")
    assert "Traceback" not in line
    _nothing_written(tmp_path)


@pytest.mark.parametrize("bad, method", [(np.nan, "f32"), (np.inf, "maq")])
def test_nan_or_inf_weight_named(tiny_hf, tmp_path, capsys, bad, method):
    """Found while streaming (f32) or while quantizing (maq): the error names the tensor, nothing is left."""
    from safetensors.numpy import load_file, save_file

    d = _copy_model(tiny_hf, tmp_path)
    st = d / "model.safetensors"
    tensors = load_file(str(st))
    tensors["model.layers.1.mlp.up_proj.weight"][3, 5] = bad
    save_file(tensors, str(st))
    out = tmp_path / "x.gguf"
    _fails(capsys, [str(d), "--out", str(out), "--method", method, *CAL],
           "model.layers.1.mlp.up_proj.weight", "NaN/Inf")
    _nothing_written(tmp_path)


@pytest.mark.parametrize("name, content", [
    ("empty.txt", b""),
    ("blank.txt", b"  \n\n\t \n"),
    ("empty.jsonl", b"\n\n"),
    ("empty.txt.gz", gzip.compress(b"")),
])
def test_empty_calibration_text(tiny_hf, tmp_path, capsys, name, content):
    calib = tmp_path / name
    calib.write_bytes(content)
    _fails(capsys, [str(tiny_hf), "--out", str(tmp_path / "x.gguf"), "--calib", str(calib), *CAL],
           name, "calibration text is empty")
    _nothing_written(tmp_path)


@pytest.mark.parametrize("name, content, needle", [
    ("weights.bin", bytes(range(256)) * 8, "not UTF-8"),                  # undecodable (0x80 at offset 128)
    ("latin1.txt", "caf\u00e9 cr\u00e8me".encode("latin-1"), "not UTF-8"),
    ("zeros.txt", b"hello\x00\x00\x00world", "binary"),                   # valid UTF-8, but NUL bytes
    ("fake.txt.gz", b"not gzip at all", "cannot read calibration text"),
])
def test_binary_or_undecodable_calibration(tiny_hf, tmp_path, capsys, name, content, needle):
    calib = tmp_path / name
    calib.write_bytes(content)
    _fails(capsys, [str(tiny_hf), "--out", str(tmp_path / "x.gguf"), "--calib", str(calib), *CAL], name, needle)
    _nothing_written(tmp_path)


def test_calibration_path_missing(tiny_hf, tmp_path, capsys):
    _fails(capsys, [str(tiny_hf), "--out", str(tmp_path / "x.gguf"), "--calib", str(tmp_path / "nope.txt"), *CAL],
           "nope.txt", "not found")
