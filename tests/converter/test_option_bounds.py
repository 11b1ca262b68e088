"""Numeric options beyond what a run can do are one clear error up front (not a MemoryError minutes later)."""
from __future__ import annotations

import pytest

from maq.converter.options import ConvertOptions
from maq.errors import MAQError


@pytest.mark.parametrize("kw, needle", [
    ({"nsamples": 10**9}, "--nsamples"), ({"nsamples": 0}, "--nsamples"), ({"seqlen": 1 << 30}, "--seqlen"),
    ({"threads": 10**6}, "--threads"), ({"threads": 0}, "--threads"), ({"block": 1 << 20}, "--block"),
    ({"damp": float("nan")}, "--damp"), ({"salient_frac": float("nan")}, "--salient-frac"),
    ({"target_bpw": float("nan")}, "--target-bpw"), ({"target_bpw": float("inf")}, "--target-bpw"),
])
def test_out_of_range_option(kw, needle):
    with pytest.raises(MAQError, match=needle):
        ConvertOptions(model="m", out="o.gguf", **kw).validate()
