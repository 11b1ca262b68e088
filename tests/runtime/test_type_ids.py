"""Type ids and block sizes have one owner each, and ours agree with theirs: the C enum maq_type (maq.h, read
through cffi), ggml's ids and block sizes (the gguf package), llama.cpp's types newer than gguf (its ggml.h)."""
from __future__ import annotations

import glob
import os
import re
from pathlib import Path

import pytest
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from maq.runtime import format as fmt
from maq.runtime import gguf_loader as gl
from maq.runtime import kernels as K
from maq.runtime._maq_c import lib

def test_ggml_ids_come_from_gguf():
    for name in ("F32", "F16", "Q4_0", "Q4_1", "Q8_0", "I8", "I16", "I32"):
        assert getattr(gl, f"GGML_{name}") == int(getattr(Q, name)), name
    assert (K.Q8_0_BLOCK, K.Q8_0_BLOCK_BYTES) == GGML_QUANT_SIZES[Q.Q8_0] == (32, 34)
    assert (gl.Q8_0_BLOCK, gl.Q8_0_BYTES) == (K.Q8_0_BLOCK, K.Q8_0_BLOCK_BYTES)


def test_c_type_ids_read_through_lib():
    assert (K.MAQ_TYPE_F32, K.MAQ_TYPE_F16, K.MAQ_TYPE_Q8_0) == (lib.MAQ_TYPE_F32, lib.MAQ_TYPE_F16,
                                                                  lib.MAQ_TYPE_Q8_0)
    assert K.MAQ_TYPE_OF_BITS == {2: lib.MAQ_TYPE_MAQ2, 3: lib.MAQ_TYPE_MAQ3, 4: lib.MAQ_TYPE_MAQ4}
    assert len(set(K.MAQ_TYPE_NAMES)) == 6
    # the loader's kinds are the C ids; the C core reads ggml's F32/F16/Q8_0 bytes under ggml's own ids
    assert (gl.KIND_F32, gl.KIND_F16, gl.KIND_Q8_0) == (gl.GGML_F32, gl.GGML_F16, gl.GGML_Q8_0)
    assert gl.KIND_OF_BITS == K.MAQ_TYPE_OF_BITS and gl.MAQ_KINDS == K.MAQ_TYPES
    # names: format's TYPE_MAQ2 is the metadata string, the C id's name is the same string
    assert all(K.MAQ_TYPE_NAMES[K.MAQ_TYPE_OF_BITS[b]] == fmt.TYPE_OF_BITS[b] for b in fmt.TYPE_OF_BITS)


def test_forward_return_codes_read_through_lib():
    from maq.runtime.model import forward_error

    codes = (lib.MAQ_FORWARD_ERR_POS, lib.MAQ_FORWARD_ERR_TOKEN, lib.MAQ_FORWARD_ERR_ARG)
    assert lib.MAQ_FORWARD_OK == 0 and len(set(codes)) == 3 and all(c < 0 for c in codes)
    assert "vocabulary" in forward_error(lib, lib.MAQ_FORWARD_ERR_TOKEN)


def test_llamacpp_extra_types_are_unknown_to_gguf():
    """An id in LLAMACPP_EXTRA_TYPES that gguf also knows would mean two names for one id (41 is Q1_0 in both gguf
    0.19 and llama.cpp; Q2_0 is 42)."""
    known = {int(t) for t in Q}
    assert gl.GGML_Q2_0 == 42 and gl.LLAMACPP_EXTRA_TYPES[gl.GGML_Q2_0] == ("Q2_0", 64, 18)
    for t in gl.LLAMACPP_EXTRA_TYPES:
        assert t not in known, f"gguf now knows id {t} as {Q(t).name}: drop it from LLAMACPP_EXTRA_TYPES"
    assert gl.ggml_type_name(41) == Q(41).name == "Q1_0"
    assert gl.ggml_type_name(gl.GGML_Q2_0) == "Q2_0"


def _ggml_h() -> Path | None:
    """llama.cpp's ggml.h: $MAQ_GGML_H, else one unpacked under the cache by scripts/build_llamacpp.sh or the
    llama.cpp extension's build (its pristine copy first), else None."""
    env = os.environ.get("MAQ_GGML_H")
    if env:
        return Path(env)
    from maq.runtime.models import cache_dir

    hits = sorted(glob.glob(str(cache_dir() / "llama.cpp*" / "**" / "ggml" / "include" / "ggml.h"), recursive=True),
                  key=lambda p: ("pristine" not in p, p))
    return Path(hits[0]) if hits else None


def test_ids_agree_with_llamacpp_ggml_h():
    h = _ggml_h()
    if h is None or not h.is_file():
        pytest.skip("llama.cpp's ggml.h not found (scripts/build_llamacpp.sh unpacks it; or set MAQ_GGML_H)")
    ids = {m[1]: int(m[2]) for m in re.finditer(r"^\s*GGML_TYPE_(\w+)\s*=\s*(\d+)\s*,", h.read_text(), re.M)}
    assert ids, f"{h}: no GGML_TYPE_* ids"
    for t in Q:                                     # gguf and llama.cpp agree wherever both know a name
        if t.name in ids:
            assert ids[t.name] == int(t), t.name
    for t, (name, _, _) in gl.LLAMACPP_EXTRA_TYPES.items():
        assert ids.get(name) == t, name
