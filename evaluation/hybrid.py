"""Hybrid models: an F32 GGUF with some linear weights replaced by another file's dequantized weights.

Used to find which tensors break a model first ("quantize one tensor kind at a time, the rest reference"): the
replacement values are exactly what the quantized file's runtime would multiply by (``inspect.read_weight``), stored
as F32 so the rest of the model stays the reference. The copy is byte-identical outside the replaced tensors' data
(header, metadata, offsets unchanged); written to a temp name and renamed.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from maq.errors import MAQError
from maq.runtime.inspect import read_header, read_weight


def write_hybrid(base_f32: str | os.PathLike, out: str | os.PathLike, replace: dict[str, np.ndarray]) -> Path:
    """Copy ``base_f32`` to ``out`` with tensors ``replace`` {name: float32 [P, T]} overwritten in place."""
    base, out = Path(base_f32), Path(out)
    h = read_header(base)
    by = {t.name: t for t in h.tensors}
    for name, W in replace.items():
        t = by.get(name)
        if t is None:
            raise MAQError(f"{base}: no tensor {name}")
        if t.type_name != "F32":
            raise MAQError(f"{base}: {name} is {t.type_name}; a hybrid needs an F32 base")
        if tuple(W.shape) != tuple(reversed(t.ne)):
            raise MAQError(f"{name}: replacement shape {list(W.shape)}, file has {list(reversed(t.ne))}")
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    shutil.copyfile(base, tmp)
    try:
        with open(tmp, "r+b") as f:
            for name, W in replace.items():
                t = by[name]
                data = np.ascontiguousarray(W, dtype="<f4").tobytes()
                assert len(data) == t.nbytes
                f.seek(t.offset)
                f.write(data)
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def replacements(quantized: str | os.PathLike, names: list[str]) -> dict[str, np.ndarray]:
    """{name: dequantized weight} of ``names`` in a quantized file."""
    h = read_header(quantized)
    return {n: read_weight(quantized, n, h)[0] for n in names}
