"""GGUF loading: zero-copy views, dequantize-at-load, and validation errors naming file, tensor and expectation."""
from __future__ import annotations

import numpy as np
import pytest

from maq.errors import FormatError, MAQError
from maq.runtime import format as fmt
from maq.runtime import gguf_loader as gl

import gguf_files


def test_smollm2_zero_copy_and_exact_q4_1(smollm2_gguf):
    from gguf.constants import GGMLQuantizationType as Q
    from gguf.quants import dequantize

    lm = gl.load(smollm2_gguf)
    c = lm.config
    assert (c.n_layers, c.dim, c.hidden_dim, c.n_heads, c.n_kv_heads, c.vocab_size) == (30, 576, 1536, 9, 3, 49152)
    assert c.tied_output and c.rope.base == 100000.0 and c.rope.dim == 64
    assert lm.tok_embd.kind == gl.KIND_Q8_0 and not lm.tok_embd.copied
    assert np.shares_memory(lm.tok_embd.data, lm.gguf.mm)           # the embedding/head stays in the file
    assert np.shares_memory(lm.layers[0].attn_norm, lm.gguf.mm)
    wq = lm.layers[3].wq
    assert wq.kind == gl.KIND_F32 and wq.copied and wq.source_type == "Q4_1"
    raw = lm.gguf.tensors["blk.3.attn_q.weight"]
    np.testing.assert_array_equal(wq.data, dequantize(np.asarray(raw.data).reshape(576, -1), Q.Q4_1))


def test_maq_parts_are_views(tiny_maq):
    lm = gl.load(tiny_maq)
    w = lm.layers[1].w_down
    assert w.kind == gl.KIND_MAQ2 and (w.P, w.T, w.G) == (64, 160, 64)
    for part in (w.maq.words, w.maq.bitmap, w.maq.scales, w.maq.rowscale):
        assert np.shares_memory(part, lm.gguf.mm)
    assert lm.summary()["copied_bytes"] == 0
    assert 0.0 < fmt.salient_fraction(w.maq) < 0.2


def test_reader_agrees_with_gguf_package(tiny_maq):
    from gguf import GGUFReader

    r = GGUFReader(str(tiny_maq))
    gf = gl.GGUFFile(tiny_maq)
    assert set(gf.tensors) == {t.name for t in r.tensors}
    for t in r.tensors:
        mine = gf.tensors[t.name]
        assert mine.offset == t.data_offset and mine.nbytes == t.n_bytes
        assert mine.ne == tuple(int(x) for x in t.shape)
    assert gf.metadata["llama.block_count"] == r.fields["llama.block_count"].contents()
    assert gf.metadata["tokenizer.ggml.tokens"] == r.fields["tokenizer.ggml.tokens"].contents()


def _expect(path, match):
    with pytest.raises(MAQError, match=match) as ei:
        gl.load(path)
    assert str(path) in str(ei.value)
    return ei.value


def test_truncated_file(tiny_maq, tmp_path):
    data = tiny_maq.read_bytes()
    p = tmp_path / "cut.gguf"
    p.write_bytes(data[:len(data) - 1000])
    e = _expect(p, "run past the end")
    assert "tensor" in str(e)
    p.write_bytes(data[:100])
    _expect(p, "truncated or corrupt")


def test_not_gguf(tmp_path):
    p = tmp_path / "x.gguf"
    p.write_bytes(b"NOPE" + bytes(100))
    _expect(p, "not a GGUF")
    with pytest.raises(MAQError, match="no such file"):
        gl.load(tmp_path / "missing.gguf")


def test_missing_part(tiny_maq, tmp_path):
    p = gguf_files.rewrite(tiny_maq, tmp_path / "m.gguf", drop=("blk.0.ffn_up.weight.bitmap",))
    _expect(p, r"blk\.0\.ffn_up\.weight\.bitmap is missing")


def test_wrong_part_shape(tiny_maq, tmp_path):
    gf = gl.GGUFFile(tiny_maq)
    t = gf.tensors["blk.1.attn_k.weight.scales"]
    bad = np.zeros((t.shape[0], t.shape[1] + 2), np.int8)
    p = gguf_files.rewrite(tiny_maq, tmp_path / "s.gguf", tensors={"blk.1.attn_k.weight.scales": bad})
    _expect(p, r"blk\.1\.attn_k\.weight\.scales: shape .* expected")


def test_wrong_part_type(tiny_maq, tmp_path):
    gf = gl.GGUFFile(tiny_maq)
    t = gf.tensors["blk.0.attn_q.weight.rowscale"]
    p = gguf_files.rewrite(tiny_maq, tmp_path / "r.gguf",
                           tensors={"blk.0.attn_q.weight.rowscale": np.zeros(t.shape, np.float32)})
    _expect(p, r"rowscale: type F32, expected F16")


def test_bad_group_size_and_metadata_mismatch(tiny_maq, tmp_path):
    p = gguf_files.rewrite(tiny_maq, tmp_path / "g.gguf", metadata={fmt.key_group_size("blk.0.attn_v.weight"): 48})
    _expect(p, "group_size = 48")
    p = gguf_files.rewrite(tiny_maq, tmp_path / "d.gguf", metadata={"llama.feed_forward_length": 176})
    _expect(p, r"ffn_gate\.weight.*expected")


def test_part_without_type_key(tiny_maq, tmp_path):
    p = gguf_files.rewrite(tiny_maq, tmp_path / "k.gguf", drop_keys=(fmt.key_tensor_type("blk.1.ffn_gate.weight"),))
    _expect(p, r"blk\.1\.ffn_gate\.weight: (shape|type)")


def test_bitmap_padding_bits(tiny_maq, tmp_path):
    gf = gl.GGUFFile(tiny_maq)
    name = "blk.0.ffn_down.weight.bitmap"     # T = 160: 10 words -> 2 bytes, 6 padding bits
    bm = np.array(gf.view(gf.tensors[name], np.uint8, gf.tensors[name].shape))
    bm[0, -1] |= 0x80
    p = gguf_files.rewrite(tiny_maq, tmp_path / "b.gguf", tensors={name: bm.view(np.int8)})
    _expect(p, "padding bits")


def test_non_llama_refused(tiny_gqa, tmp_path):
    p = gguf_files.rewrite(tiny_gqa[1], tmp_path / "a.gguf", metadata={"general.architecture": "gpt2"})
    e = _expect(p, "only 'llama'")
    assert "gpt2" in str(e)


def test_errors_are_format_errors_for_layout(tiny_maq, tmp_path):
    p = gguf_files.rewrite(tiny_maq, tmp_path / "f.gguf", drop=("output_norm.weight",))
    with pytest.raises(FormatError, match="output_norm.weight is missing"):
        gl.load(p)


def test_dequant_q8_0_option(smollm2_gguf):
    """dequant='q8_0': Q4_1 linears re-quantized to Q8_0 at load (4x less memory than F32, close to it)."""
    lm = gl.load(smollm2_gguf, dequant="q8_0")
    w = lm.layers[5].w_up
    assert w.kind == gl.KIND_Q8_0 and w.copied and w.source_type == "Q4_1"
    exact = gl.load(smollm2_gguf).layers[5].w_up.data
    err = np.abs(w.dequantize() - exact).max() / np.abs(exact).max()
    assert 0 < err < 1e-2
    with pytest.raises(MAQError, match="dequant"):
        gl.load(smollm2_gguf, dequant="q4")


def test_use_mmap_false_reads_into_memory_same_model(tiny_maq):
    from maq.runtime import model as M

    mapped, mem = gl.load(tiny_maq, use_mmap=True), gl.load(tiny_maq, use_mmap=False)
    assert isinstance(mapped.gguf.mm, np.memmap) and not isinstance(mem.gguf.mm, np.memmap)
    assert not mem.gguf.mm.flags.writeable
    w = mem.layers[1].w_down
    for part in (w.maq.words, w.maq.bitmap, w.maq.scales, w.maq.rowscale):
        assert np.shares_memory(part, mem.gguf.mm) and not part.flags.writeable
    for name, t in mapped.gguf.tensors.items():
        np.testing.assert_array_equal(np.asarray(t.data), mem.gguf.tensors[name].data, err_msg=name)
    ids = np.array([1, 5, 9, 2, 7], np.int32)
    a = M.CModel(mapped, n_ctx=16, n_threads=1).forward(ids, 0, M.LOGITS_ALL)
    b = M.CModel(mem, n_ctx=16, n_threads=1).forward(ids, 0, M.LOGITS_ALL)
    np.testing.assert_array_equal(a, b)


def test_into_memory_refuses_a_file_that_shrank(tiny_maq, tmp_path):
    import shutil

    p = tmp_path / "m.gguf"
    shutil.copy(tiny_maq, p)
    gf = gl.GGUFFile(p)
    with open(p, "r+b") as f:
        f.truncate(p.stat().st_size // 2)
    with pytest.raises(FormatError, match="ended at byte") as ei:
        gf.into_memory()
    assert str(p) in str(ei.value)


def test_resolve_use_mmap(monkeypatch):
    assert gl.resolve_use_mmap(True, 10) is True and gl.resolve_use_mmap(False, 10) is False
    monkeypatch.setattr(gl, "available_memory", lambda: 1 << 30)
    monkeypatch.setattr(gl, "huge_pages_available", lambda: True)
    assert gl.resolve_use_mmap(None, 100 << 20) is False          # fits: huge-page memory
    assert gl.resolve_use_mmap(None, 600 << 20) is True           # over half the available memory: map
    monkeypatch.setattr(gl, "huge_pages_available", lambda: False)
    assert gl.resolve_use_mmap(None, 100 << 20) is True
