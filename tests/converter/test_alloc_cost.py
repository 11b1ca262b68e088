"""Issue 13: ``--alloc-cost gptq``: --target-bpw's RTN costs scaled by GPTQ / RTN cost ratios measured on a few
blocks (allocate.gptq_cost / gptq_ratios), recorded as maq.alloc_cost."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from maq.converter.measure import structured_layer  # noqa: E402

from maq.cli import main  # noqa: E402
from maq.converter import allocate as A  # noqa: E402


def test_gptq_cost_below_rtn_cost_for_2_bits():
    W, H, _ = structured_layer()
    sens = A.Sensitivity(H=H, f=torch.ones(W.shape[0]), tokens=1)
    c = A.Candidate("maq2", 64)
    rtn = A.predicted_costs(W.numpy(), sens, [c])[c]
    g = A.gptq_cost(W.numpy(), sens, c)
    assert 0 < g < rtn
    c8 = A.Candidate("maq2", 64, 0.04)
    assert A.gptq_cost(W.numpy(), sens, c8) < g


def test_alloc_cost_gptq_file(tiny_hf, tmp_path, caplog):
    import gguf

    f = tmp_path / "g.gguf"
    caplog.set_level("INFO")
    assert main(["convert", str(tiny_hf), "--out", str(f), "--target-bpw", "3.2", "--alloc-cost", "gptq",
                 "--nsamples", "4", "--seqlen", "64", "--no-progress"]) == 0
    assert "GPTQ / RTN cost ratios" in caplog.text
    r = gguf.GGUFReader(str(f))
    assert r.fields["maq.alloc_cost"].contents() == "gptq"
    assert np.isclose(r.fields["maq.target_bpw"].contents(), 3.2)
