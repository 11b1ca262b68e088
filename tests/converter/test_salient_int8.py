"""Issue 13: ``--salient-coding int8`` in the converter: GPTQ keeping salient words at int8 (errors fed back), the
global top-N selection, the int8 candidates of ``--target-bpw`` (sizes, predicted costs), the written files (run
in the runtime, shown by ``maq inspect`` and the summary with their word kinds)."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from maq.converter.measure import structured_layer  # noqa: E402

from maq.cli import main  # noqa: E402
from maq.converter import allocate as A  # noqa: E402
from maq.converter.gptq import QuantConfig, quantize_maq  # noqa: E402
from maq.converter.saliency import select_top_n  # noqa: E402
from maq.runtime import format as fmt  # noqa: E402


@pytest.fixture(scope="module")
def layer():
    return structured_layer()


def test_select_top_n_is_the_global_top():
    s = torch.tensor([[5.0, 1.0, 3.0], [4.0, 9.0, 0.0]])
    assert select_top_n(s, 3).tolist() == [[True, False, False], [True, True, False]]
    assert not select_top_n(s, 0).any() and select_top_n(s, 6).all()


@pytest.mark.parametrize("G", [128, 32])
def test_gptq_int8_packs_exactly_and_beats_mean4_and_plain(layer, G):
    W, H, _ = layer
    P, T = W.shape
    n = 2 * T // 16 * 2                     # about the injected outlier words (2 per 16-input block)
    r = quantize_maq(W, H, QuantConfig(G=G, salient_coding="int8", n_salient=n))
    t = r.tensor
    assert t.salient_coding == "int8" and t.n_salient8 == n and int(r.salient.sum()) == n
    np.testing.assert_array_equal(fmt.dequantize(t), r.Q.numpy())   # what GPTQ propagated is what is stored
    assert not np.any(t.rowscale.view(np.uint16)[:, 2])
    plain = quantize_maq(W, H, QuantConfig(G=G))
    mean4 = quantize_maq(W, H, QuantConfig(G=G, top_k=2, refit_rows=True))
    assert r.err < 0.8 * plain.err and r.err < mean4.err
    assert r.err < r.err_rtn


def test_int8_without_feedback_still_packs(layer):
    W, H, _ = layer
    r = quantize_maq(W, H, QuantConfig(salient_coding="int8", n_salient=40, salient_feedback=False))
    np.testing.assert_array_equal(fmt.dequantize(r.tensor), r.Q.numpy())


def test_int8_candidates_sizes_and_costs(layer):
    W, H, _ = layer
    P, T = W.shape
    cands = A.candidates(int8=True)
    sal = [c for c in cands if c.sal]
    assert len(sal) == 3 * len(A.SALIENT_SHARES) and not any(c.sal for c in A.candidates())
    for c in sal:
        n = c.n_salient8(P, T)
        assert c.nbytes(P, T) == fmt.Layout(T, P, c.group, 2, n).nbytes
        assert c.nbytes(P, T) > A.Candidate("maq2", c.group).nbytes(P, T)
    sens = A.Sensitivity(H=H, f=torch.ones(P), tokens=1)
    costs = A.predicted_costs(W.numpy(), sens, cands)
    base = costs[A.Candidate("maq2", 128)]
    assert costs[A.Candidate("maq2", 128, 0.04)] < 0.8 * base      # the outlier words pay for their bytes here


def _linear_bpw(path):
    from maq.runtime.inspect import file_summary
    s = file_summary(path)
    return s["totals"]["linear"]["bpw"], s


def test_convert_int8_file_runs_and_shows_word_kinds(tiny_hf, tmp_path, caplog, capsys):
    from maq.runtime import model as M
    from maq.runtime.gguf_loader import load

    f = tmp_path / "s8.gguf"
    caplog.set_level("INFO")
    assert main(["convert", str(tiny_hf), "--out", str(f), "--salient-coding", "int8", "--salient-frac", "0.05",
                 "--nsamples", "4", "--seqlen", "64", "--no-progress"]) == 0
    assert "2b+int8" in caplog.text                         # the summary's word kinds
    bpw, s = _linear_bpw(f)
    kinds = {t["words"] for t in s["tensors"] if t["words"]}
    assert kinds == {"2b+int8"}
    sal = [t["salient_pct"] for t in s["tensors"] if t["words"]]
    assert all(2.0 < p < 8.0 for p in sal)            # round(0.05 P) per block on tiny P
    lm = load(f)
    assert all(L.w_down.maq.salient_coding == "int8" for L in lm.layers)
    out = M.create(lm, n_ctx=32, n_threads=1).forward(list(range(100, 120)), 0, M.LOGITS_ALL)
    assert np.isfinite(out).all()
    assert main(["inspect", str(f)]) == 0
    assert "2b+int8" in capsys.readouterr().out


def test_target_bpw_with_int8_fits_the_budget(tiny_hf, tmp_path):
    f = tmp_path / "t.gguf"
    assert main(["convert", str(tiny_hf), "--out", str(f), "--target-bpw", "3.6", "--salient-coding", "int8",
                 "--nsamples", "4", "--seqlen", "64", "--no-progress"]) == 0
    bpw, s = _linear_bpw(f)
    assert bpw <= 3.6 + 1e-9
    from maq.runtime.gguf_loader import load
    load(f)
