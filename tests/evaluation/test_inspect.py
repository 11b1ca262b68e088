"""maq inspect: honest bits/weight from the file (every part), salient %, unknown types, dequantization, plot."""
from __future__ import annotations

import json
import struct
import subprocess
import sys

import numpy as np
import pytest

from maq.runtime import format as fmt
from maq.runtime import gguf_loader as gl
from maq.runtime import inspect as I


def _write(path, maq: dict, extra: dict | None = None, q8: dict | None = None):
    """A GGUF with MAQ2 tensors {name: (W, salient, G)}, F32 tensors ``extra`` and Q8_0 tensors ``q8``."""
    import gguf_files

    return gguf_files.write_maq_file(path, maq, extra, q8)


@pytest.fixture
def maq_file(tmp_path):
    rng = np.random.default_rng(0)
    W = rng.standard_normal((32, 256)).astype(np.float32)
    sal = np.zeros((32, 16), dtype=bool)
    sal[:4, :2] = True                                       # 8 of 512 words
    W2 = rng.standard_normal((48, 128)).astype(np.float32)
    path = _write(tmp_path / "m.gguf", {"blk.0.attn_q.weight": (W, sal, 64), "blk.0.ffn_down.weight":
                                        (W2, np.zeros((48, 8), bool), 128)},
                  extra={"blk.0.attn_norm.weight": np.ones(256), "blk.0.attn_q.weightx": np.ones((2, 32))},
                  q8={"token_embd.weight": rng.standard_normal((64, 256))})
    return path, W, sal, W2


@pytest.mark.parametrize("P,T,G", [(32, 256, 64), (48, 128, 128), (7, 160, 32)])
def test_maq2_bpw_counts_every_part(tmp_path, P, T, G):
    W = np.random.default_rng(P).standard_normal((P, T)).astype(np.float32)
    path = _write(tmp_path / "x.gguf", {"blk.3.attn_v.weight": (W, np.zeros((P, T // 16), bool), G)})
    rows = I.tensor_rows(I.read_header(path))
    assert len(rows) == 1
    r = rows[0]
    lay = fmt.Layout(T, P, G)
    assert r.shape == (P, T) and r.type == "MAQ2" and r.group == G
    assert r.nbytes == lay.nbytes == P * T // 16 * 4 + P * -(-T // 128) + P * 2 * -(-T // G) + P * 6
    assert r.bpw == pytest.approx(fmt.bits_per_weight(T, P, G))
    assert len(r.parts) == 4 and r.is_linear


def test_file_summary(maq_file):
    path, W, sal, W2 = maq_file
    s = I.file_summary(path)
    by = {t["name"]: t for t in s["tensors"]}
    # a tensor whose name merely starts with another's (no dot) is its own tensor, not a part
    assert "blk.0.attn_q.weightx" in by and by["blk.0.attn_q.weight"]["parts"][1:] == [
        "blk.0.attn_q.weight" + p for p in (fmt.PART_BITMAP, fmt.PART_SCALES, fmt.PART_ROWSCALE)]
    assert by["blk.0.attn_q.weight"]["salient_pct"] == pytest.approx(100 * 8 / 512)
    assert by["token_embd.weight"]["type"] == "Q8_0" and by["token_embd.weight"]["bpw"] == pytest.approx(8.5)
    lin = s["totals"]["linear"]
    assert lin["weights"] == W.size + W2.size
    assert lin["bytes"] == fmt.Layout(256, 32, 64).nbytes + fmt.Layout(128, 48, 128).nbytes
    assert s["tensor_bytes"] == sum(t["nbytes"] for t in s["tensors"])
    assert s["file_bytes"] == path.stat().st_size
    bf16 = (W.size + W2.size + 64 * 256 + 64) * 2 + 256 * 4 + (s["file_bytes"] - s["tensor_bytes"])
    assert s["bf16_bytes"] == bf16
    assert s["exact_sizes"]


def test_read_weight_matches_format_and_gguf(maq_file):
    import gguf
    from gguf.constants import GGMLQuantizationType as Q

    path, W, sal, _ = maq_file
    Wq, bm = I.read_weight(path, "blk.0.attn_q.weight")
    assert np.array_equal(Wq, fmt.dequantize(fmt.quantize_rtn(W, salient=sal, G=64)))
    assert np.array_equal(bm, sal)
    E, bm2 = I.read_weight(path, "token_embd.weight")
    assert bm2 is None and E.shape == (64, 256)
    rng = np.random.default_rng(0)
    rng.standard_normal((32, 256)), rng.standard_normal((48, 128))
    ref = gguf.quants.dequantize(gguf.quants.quantize(rng.standard_normal((64, 256)).astype(np.float32), Q.Q8_0),
                                 Q.Q8_0)
    assert np.array_equal(E, ref)


def _patch_type(path, name: str, new_type: int):
    """Rewrite the ggml type id of tensor ``name`` in the header (offsets unchanged)."""
    h = I.read_header(path)
    raw = bytearray(path.read_bytes())
    key = struct.pack("<Q", len(name)) + name.encode()
    i = raw.index(key, 0, h.data_start) + len(key)
    nd = struct.unpack_from("<I", raw, i)[0]
    struct.pack_into("<I", raw, i + 4 + 8 * nd, new_type)
    path.write_bytes(bytes(raw))


def test_unknown_type_sized_from_offsets(tmp_path):
    a = np.ones((16, 64), np.float32)     # 4096 bytes: a multiple of the alignment
    path = _write(tmp_path / "u.gguf", {}, extra={"blk.0.ffn_up.weight": a, "output_norm.weight": np.ones(64)})
    _patch_type(path, "blk.0.ffn_up.weight", gl.GGML_Q2_0)     # llama.cpp's Q2_0 (42): unknown to gguf 0.19
    rows = {r.name: r for r in I.tensor_rows(I.read_header(path))}
    r = rows["blk.0.ffn_up.weight"]
    assert r.type == "Q2_0" and not r.exact and r.nbytes == 4096
    assert rows["output_norm.weight"].exact
    with pytest.raises(Exception, match="unknown to the gguf package"):
        I.read_weight(path, "blk.0.ffn_up.weight")


def test_known_id_with_other_sizes_flagged(tmp_path):
    """An id the gguf package knows whose block size does not fit the file's offsets is named as such, sized from
    the offsets, and the strict runtime reader refuses the file."""
    from maq.errors import FormatError

    a = np.ones((16, 64), np.float32)
    path = _write(tmp_path / "k.gguf", {}, extra={"blk.0.ffn_up.weight": a, "output_norm.weight": np.ones(64)})
    _patch_type(path, "blk.0.ffn_up.weight", gl.GGML_Q4_0)
    r = {r.name: r for r in I.tensor_rows(I.read_header(path))}["blk.0.ffn_up.weight"]
    assert r.type == f"type{gl.GGML_Q4_0} (not Q4_0: sizes disagree)" and not r.exact and r.nbytes == 4096
    with pytest.raises(FormatError, match="blk.0.ffn_up.weight"):
        gl.GGUFFile(path)


def test_not_gguf(tmp_path):
    from maq.errors import MAQError

    p = tmp_path / "x.gguf"
    p.write_bytes(b"NOPE" + b"\0" * 40)
    with pytest.raises(MAQError, match="not a GGUF"):
        I.read_header(p)


def test_cli_json(maq_file, capsys):
    from maq.cli import main

    assert main(["inspect", str(maq_file[0]), "--json", "--no-tensors"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["totals"]["linear_by_type"]["MAQ2"]["tensors"] == 2 and "tensors" not in d


def test_cli_text(maq_file, capsys):
    from maq.cli import main

    assert main(["inspect", str(maq_file[0])]) == 0
    out = capsys.readouterr().out
    assert "blk.0.attn_q.weight" in out and "linear total" in out


def test_plot(maq_file, tmp_path):
    pytest.importorskip("matplotlib")
    path, W, sal, _ = maq_file
    ref = _write(tmp_path / "ref.gguf", {}, extra={"blk.0.attn_q.weight": W})
    other = _write(tmp_path / "o.gguf", {"blk.0.attn_q.weight": (W, np.zeros_like(sal), 64)})
    out = tmp_path / "fig.png"
    info = I.plot(str(path), "blk.0.attn_q.weight", str(out), compare=str(other), ref=str(ref))
    assert out.stat().st_size > 10000
    Wq = fmt.dequantize(fmt.quantize_rtn(W, salient=sal, G=64))
    assert info["rel_err_m.gguf"] == pytest.approx(np.linalg.norm(W - Wq) / np.linalg.norm(W), rel=1e-5)
    assert info["salient_pct"] == pytest.approx(100 * sal.mean())


def test_runtime_import_does_not_need_matplotlib():
    code = "import sys; import maq.runtime.inspect; assert 'matplotlib' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
