"""maq.format_version is checked at load: a newer or malformed version is one clear error naming the file."""
from __future__ import annotations

import pytest

import hostile_gguf as hg
from maq.errors import MAQError
from maq.runtime import format as fmt
from maq.runtime.api import Llama


def _with_version(tmp_path, vt, value):
    kvs, tensors = hg.base_model()
    kvs = [kv for kv in kvs if kv.key != fmt.KEY_VERSION]
    if vt is not None:
        kvs.append(hg.KV(fmt.KEY_VERSION, vt, value))
    path = tmp_path / "v.gguf"
    path.write_bytes(hg.serialize(kvs, tensors)[0])
    return path


@pytest.mark.parametrize("vt, value", [(hg.U32, 99), (hg.STR, "x"), (hg.U32, 0), (hg.I32, -1), (hg.F32, 1.0),
                                       (hg.BOOL, True)])
def test_bad_format_version_refused(tmp_path, vt, value):
    path = _with_version(tmp_path, vt, value)
    with pytest.raises(MAQError, match=f"{path}: metadata maq.format_version = .*, expected an integer in "
                                       f"1..{fmt.FORMAT_VERSION}"):
        Llama(str(path), n_ctx=16, n_threads=1, verbose=False)


@pytest.mark.parametrize("vt, value", [(hg.U32, fmt.FORMAT_VERSION), (hg.U32, fmt.FORMAT_VERSION_PLAIN),
                                       (None, None)])
def test_current_or_absent_version_loads(tmp_path, vt, value):
    Llama(str(_with_version(tmp_path, vt, value)), n_ctx=16, n_threads=1, verbose=False)
