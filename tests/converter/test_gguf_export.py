"""GGUF writing: float path (f32/f16), llama.cpp metadata and tokenizer, stock readers, atomic output."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from maq.cli import main
from maq.converter.source import open_source, permute_qk


def _reader(path):
    import gguf

    return gguf.GGUFReader(str(path))


def test_f32_gguf_opens_and_holds_the_model(tiny_hf, tiny_f32_gguf):
    from safetensors.numpy import load_file

    r = _reader(tiny_f32_gguf)
    t = {x.name: x for x in r.tensors}
    assert all(x.tensor_type.name == "F32" for x in r.tensors)
    hf = load_file(str(tiny_hf / "model.safetensors"))
    assert np.array_equal(t["token_embd.weight"].data, hf["model.embed_tokens.weight"])
    assert np.array_equal(t["blk.1.attn_v.weight"].data, hf["model.layers.1.self_attn.v_proj.weight"])
    # Q/K rows in llama.cpp's permuted order (n_head for Q, n_head_kv for K)
    assert np.array_equal(t["blk.0.attn_q.weight"].data, permute_qk(hf["model.layers.0.self_attn.q_proj.weight"], 4))
    assert np.array_equal(t["blk.0.attn_k.weight"].data, permute_qk(hf["model.layers.0.self_attn.k_proj.weight"], 2))
    assert "output.weight" not in t  # tied
    f = r.fields
    assert f["general.architecture"].contents() == "llama"
    assert f["llama.attention.head_count_kv"].contents() == 2
    assert f["llama.rope.dimension_count"].contents() == 16
    assert f["general.file_type"].contents() == 0


def test_tokenizer_metadata_equals_llama_cpp_smollm2(tiny_f32_gguf, smollm2_gguf):
    """The HF tokenizer files (made from SmolLM2's GGUF) convert back to exactly llama.cpp's metadata."""
    ours, ref = _reader(tiny_f32_gguf).fields, _reader(smollm2_gguf).fields
    for key in ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
                "tokenizer.ggml.merges", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id",
                "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
                "tokenizer.ggml.add_bos_token", "tokenizer.chat_template"):
        assert ours[key].contents() == ref[key].contents(), key


def test_gguf_dump_opens_it(tiny_f32_gguf):
    proc = subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_dump", str(tiny_f32_gguf)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "blk.1.ffn_down.weight" in proc.stdout and "tokenizer.ggml.tokens" in proc.stdout


def test_f32_from_gguf_equals_f32_from_hf(tiny_f32_gguf, tmp_path):
    """GGUF -> F32 GGUF reproduces every tensor byte and every model key (Q/K permutation not applied twice)."""
    out = tmp_path / "again.gguf"
    assert main(["convert", str(tiny_f32_gguf), "--out", str(out), "--method", "f32", "--no-progress"]) == 0
    a, b = _reader(tiny_f32_gguf), _reader(out)
    assert [t.name for t in a.tensors] == [t.name for t in b.tensors]
    for ta, tb in zip(a.tensors, b.tensors):
        assert ta.tensor_type == tb.tensor_type and np.array_equal(ta.data, tb.data), ta.name
    for key, fa in a.fields.items():
        if key.startswith("GGUF.") or key == "maq.source":
            continue
        assert fa.contents() == b.fields[key].contents(), key


def test_f16_method_and_embed_types(tiny_hf, tmp_path):
    out = tmp_path / "f16.gguf"
    assert main(["convert", str(tiny_hf), "--out", str(out), "--method", "f16", "--embed-type", "q8_0"]) == 0
    types = {t.name: t.tensor_type.name for t in _reader(out).tensors}
    assert types["blk.0.attn_q.weight"] == "F16" and types["blk.0.attn_norm.weight"] == "F32"
    assert types["token_embd.weight"] == "Q8_0" and types["output_norm.weight"] == "F32"
    assert _reader(out).fields["general.file_type"].contents() == 1


def test_untied_output_written(tiny_hf_untied_bf16, tmp_path):
    out = tmp_path / "untied.gguf"
    assert main(["convert", str(tiny_hf_untied_bf16), "--out", str(out), "--method", "f32"]) == 0
    names = [t.name for t in _reader(out).tensors]
    assert names[-1] == "output.weight"
    src = open_source(tiny_hf_untied_bf16)
    got = {t.name: t for t in _reader(out).tensors}["output.weight"].data
    assert np.array_equal(got, src.tensor("output.weight"))


def test_existing_output_needs_force(tiny_hf, tmp_path, capsys):
    out = tmp_path / "x.gguf"
    out.write_bytes(b"keep me")
    assert main(["convert", str(tiny_hf), "--out", str(out), "--method", "f32"]) == 1
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"keep me"
    assert main(["convert", str(tiny_hf), "--out", str(out), "--method", "f32", "--force"]) == 0
    assert out.read_bytes()[:4] == b"GGUF"
    assert not list(tmp_path.glob(".*.tmp"))


def test_unwritable_output(tiny_hf, tmp_path, capsys):
    assert main(["convert", str(tiny_hf), "--out", str(tmp_path / "no" / "dir" / "x.gguf"), "--method", "f32"]) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(["convert", str(tiny_hf), "--out", str(tmp_path), "--method", "f32"]) == 1
    assert "directory" in capsys.readouterr().err


def test_failure_leaves_nothing(tiny_hf, tmp_path, monkeypatch):
    """An error in the middle of writing removes the temporary file and never creates --out."""
    from maq.converter import source as source_mod

    def boom(self, name):
        if name == "blk.1.ffn_up.weight":
            raise RuntimeError("simulated failure")
        return orig(self, name)

    orig = source_mod.HFSource.tensor
    monkeypatch.setattr(source_mod.HFSource, "tensor", boom)
    out = tmp_path / "x.gguf"
    with pytest.raises(RuntimeError, match="simulated"):
        main(["convert", str(tiny_hf), "--out", str(out), "--method", "f32"])
    assert not out.exists() and not list(tmp_path.iterdir())


def test_dry_run_writes_nothing(tiny_hf, tmp_path, caplog):
    import logging

    out = tmp_path / "x.gguf"
    with caplog.at_level(logging.INFO):
        assert main(["convert", str(tiny_hf), "--out", str(out), "--dry-run"]) == 0
    assert not out.exists()
    assert "bits/weight" in caplog.text and "salient" in caplog.text


def test_maq_embedding_needs_a_quantizing_method(tiny_hf, tmp_path, capsys):
    out = tmp_path / "f16.gguf"
    assert main(["convert", str(tiny_hf), "--out", str(out), "--method", "f16", "--embed-type", "maq4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--embed-type maq4" in err[0] and "--method f16" in err[0] and not out.exists()
