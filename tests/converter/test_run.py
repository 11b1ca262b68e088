"""maq convert end to end on tiny models: GGUF layout of MAQ2 tensors, methods, ablations, determinism, errors."""
from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

pytest.importorskip("torch")

from maq.cli import main  # noqa: E402
from maq.converter.options import ConvertOptions  # noqa: E402
from maq.converter.run import convert  # noqa: E402
from maq.errors import MAQError  # noqa: E402
from maq.runtime import format as fmt  # noqa: E402

CAL = ["--nsamples", "4", "--seqlen", "64", "--no-progress"]


def _reader(path):
    import gguf

    return gguf.GGUFReader(str(path))


def _maq_tensors(path) -> dict[str, fmt.MAQTensor]:
    """Every MAQ2 tensor of a GGUF file, rebuilt from its four parts with the metadata's group size."""
    r = _reader(path)
    by_name = {t.name: t for t in r.tensors}
    out = {}
    for key, field in r.fields.items():
        if key.startswith("maq.tensor.") and key.endswith(".type") and field.contents() == fmt.TYPE_MAQ2:
            name = key[len("maq.tensor."):-len(".type")]
            G = r.fields[fmt.key_group_size(name)].contents()
            assert r.fields[fmt.key_salient_coding(name)].contents() == fmt.SALIENT_MEAN4
            parts = {}
            for suffix in fmt.PART_SUFFIXES:
                t = by_name[name + suffix]
                a = np.asarray(t.data)
                parts[suffix] = a.view(np.uint8) if a.dtype == np.int8 else a
            T = parts[fmt.PART_WORDS].shape[1] * fmt.WORD_WEIGHTS
            out[name] = fmt.from_parts(parts, T, G, name)
    return out


@pytest.fixture(scope="module")
def maq_file(tiny_hf, tmp_path_factory):
    out = tmp_path_factory.mktemp("maq") / "tiny.maq.gguf"
    opts = ConvertOptions(model=tiny_hf, out=out, nsamples=4, seqlen=64, progress=False)
    res = convert(opts, keep_tensors=True)
    return out, res


def test_gguf_parts_unpack_to_the_quantizer_output(maq_file):
    out, res = maq_file
    got = _maq_tensors(out)
    assert sorted(got) == sorted(res.tensors) and len(got) == 14
    for name, t in res.tensors.items():
        for (sfx, a), b in zip(t.parts().items(), got[name].parts().values()):
            assert a.dtype == b.dtype and np.array_equal(a, b), name + sfx
    r = _reader(out)
    types = {t.name: t.tensor_type.name for t in r.tensors}
    assert types["blk.0.attn_q.weight"] == "I32" and types["blk.0.attn_q.weight.bitmap"] == "I8"
    assert types["blk.0.attn_q.weight.scales"] == "I8" and types["blk.0.attn_q.weight.rowscale"] == "F16"
    assert types["token_embd.weight"] == "Q8_0" and types["blk.0.ffn_norm.weight"] == "F32"
    words = {t.name: t for t in r.tensors}["blk.0.ffn_down.weight"]
    assert list(words.shape) == [160 // 16, 64]          # ne = [T/16, P]
    f = r.fields
    assert f[fmt.KEY_VERSION].contents() == fmt.FORMAT_VERSION_PLAIN     # nothing rotated: readable by version 1
    assert f["maq.method"].contents() == "maq" and f["maq.calib.nsamples"].contents() == 4
    assert f["maq.calib.seqlen"].contents() == 64 and len(f["maq.calib.sha256"].contents()) == 64
    assert f["maq.bits_per_weight"].contents() == pytest.approx(res.linear_bpw, rel=1e-6)
    assert f["tokenizer.ggml.pre"].contents() == "smollm"
    assert res.rows and all(r["rel_err"] < r["rel_err_rtn"] for r in res.rows)


def test_gguf_dump_opens_maq_file(maq_file):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "gguf.scripts.gguf_dump", str(maq_file[0])],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "blk.1.ffn_up.weight.rowscale" in proc.stdout


def test_same_seed_same_bytes_other_seed_differs(tiny_hf, maq_file, tmp_path):
    a = tmp_path / "a.gguf"
    assert main(["convert", str(tiny_hf), "--out", str(a), *CAL]) == 0
    assert hashlib.sha256(a.read_bytes()).digest() == hashlib.sha256(maq_file[0].read_bytes()).digest()
    b = tmp_path / "b.gguf"
    assert main(["convert", str(tiny_hf), "--out", str(b), *CAL, "--seed", "1"]) == 0
    assert a.read_bytes() != b.read_bytes()


def test_no_mixed_is_exactly_gptq(tiny_hf, tmp_path):
    g, m = tmp_path / "gptq.gguf", tmp_path / "nomixed.gguf"
    assert main(["convert", str(tiny_hf), "--out", str(g), "--method", "gptq", *CAL]) == 0
    assert main(["convert", str(tiny_hf), "--out", str(m), "--no-mixed", *CAL]) == 0
    tg, tm = _reader(g).tensors, _reader(m).tensors
    assert [t.name for t in tg] == [t.name for t in tm]
    for a, b in zip(tg, tm):
        assert np.array_equal(a.data, b.data), a.name
    assert all(fmt.salient_fraction(t) == 0 for t in _maq_tensors(g).values())


def test_rtn_and_ablations_run(tiny_hf, tmp_path):
    for extra in (["--method", "rtn"], ["--no-grouping"], ["--no-salient-feedback"], ["--top-k", "3"],
                  ["--group", "32", "--scale-search", "minmax", "--embed-type", "f16"],
                  ["--calib-dtype", "bfloat16"]):
        out = tmp_path / "x.gguf"
        assert main(["convert", str(tiny_hf), "--out", str(out), "--force", *CAL, *extra]) == 0, extra
        ts = _maq_tensors(out)
        assert len(ts) == 14
        if extra == ["--method", "rtn"]:
            src = __import__("maq.converter.source", fromlist=["x"]).open_source(tiny_hf)
            w = src.tensor("blk.0.attn_v.weight")
            ref = fmt.quantize_rtn(w, None, 128)
            assert np.array_equal(ts["blk.0.attn_v.weight"].words, ref.words)
        if extra == ["--top-k", "3"]:
            q = ts["blk.0.attn_q.weight"]
            assert np.array_equal(fmt.unpack(q).salient.sum(0), np.full(4, 3))
        if extra[0] == "--group":
            assert ts["blk.0.ffn_down.weight"].G == 32


def test_calibration_shorter_than_one_window(tiny_hf, tmp_path, capsys):
    txt = tmp_path / "short.txt"
    txt.write_text("Just a few words.")
    assert main(["convert", str(tiny_hf), "--out", str(tmp_path / "x.gguf"), "--calib", str(txt), *CAL]) == 1
    assert "shorter than one window" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.gguf")) and not list(tmp_path.glob(".*.tmp"))


def test_calibration_jsonl_and_sha(tiny_hf, tmp_path):
    from maq.converter.calibration import read_text

    docs = [{"text": "alpha " * 200}, {"text": "beta " * 200}]
    p = tmp_path / "c.jsonl"
    p.write_text("\n".join(json.dumps(d) for d in docs))
    assert read_text(p) == "".join(d["text"] + "\n\n" for d in docs)
    out = tmp_path / "x.gguf"
    assert main(["convert", str(tiny_hf), "--out", str(out), "--calib", str(p), *CAL]) == 0
    sha = hashlib.sha256(read_text(p).encode()).hexdigest()
    assert _reader(out).fields["maq.calib.sha256"].contents() == sha


def test_width_not_multiple_of_16(smollm2_tokenizer_dir, tmp_path, capsys):
    import tiny

    d = tmp_path / "odd"
    tiny.make_tiny_llama(d, smollm2_tokenizer_dir, hidden=72, heads=4, kv_heads=2, intermediate=160, layers=1)
    capsys.readouterr()
    assert main(["convert", str(d), "--out", str(tmp_path / "x.gguf"), *CAL]) == 1
    err = capsys.readouterr().err
    assert err.startswith("maq: error: ")
    assert "72 inputs, not a multiple of 16" in err and "\n" == err[-1] and err.count("\n") == 1
    assert main(["convert", str(d), "--out", str(tmp_path / "f.gguf"), "--method", "f32"]) == 0


@pytest.mark.parametrize("args,msg", [
    (["--top-k", "2", "--method", "gptq"], "--method maq only"),
    (["--no-mixed", "--top-k", "2"], "cannot be combined"),
    (["--block", "100"], "multiple of --group"),
    (["--top-k", "999"], "larger than"),
    (["--calib", "/nonexistent.txt"], "not found"),
    (["--device", "nonsense"], "--device"),
])
def test_bad_options(tiny_hf, tmp_path, capsys, args, msg):
    assert main(["convert", str(tiny_hf), "--out", str(tmp_path / "x.gguf"), *CAL, *args]) == 1
    assert msg in capsys.readouterr().err


def test_option_validation_direct():
    with pytest.raises(MAQError, match="alternatives"):
        ConvertOptions(model=".", out="x", top_k=1, salient_frac=0.1).validate()


def test_gguf_source_quantizes_like_hf_source(tiny_hf, tiny_f32_gguf, maq_file, tmp_path):
    """Converting the F32 GGUF of the tiny model gives the same MAQ tensors as converting its HF directory."""
    out = tmp_path / "from_gguf.gguf"
    assert main(["convert", str(tiny_f32_gguf), "--out", str(out), *CAL]) == 0
    a, b = _maq_tensors(maq_file[0]), _maq_tensors(out)
    for name in a:
        for x, y in zip(a[name].parts().values(), b[name].parts().values()):
            assert np.array_equal(x, y), name


def test_activation_cache_and_recompute_agree(tiny_hf, maq_file, tmp_path, monkeypatch):
    """Step 5 of the pipeline reads cached MLP activations or recomputes them: the same file either way."""
    from maq.converter import pipeline

    monkeypatch.setattr(pipeline, "ACT_CACHE_BYTES", 0)
    out = tmp_path / "recompute.gguf"
    assert main(["convert", str(tiny_hf), "--out", str(out), *CAL]) == 0
    assert out.read_bytes() == maq_file[0].read_bytes()


def test_rtn_threads_write_the_same_file(tiny_hf, tmp_path):
    """--method rtn quantizes up to --threads tensors at once (a thread pool); the file is byte-identical to the
    one-thread conversion (same tensors, same order), for MAQ2 and for MAQ4 with --incoherence."""
    for extra in ([], ["--bits", "4", "--incoherence", "hadamard"]):
        outs = []
        for n in (1, 3):
            out = tmp_path / f"rtn{n}.gguf"
            assert main(["convert", str(tiny_hf), "--out", str(out), "--force", "--no-progress", "--method", "rtn",
                         "--threads", str(n), *extra]) == 0
            outs.append(out.read_bytes())
        assert outs[0] == outs[1], extra
