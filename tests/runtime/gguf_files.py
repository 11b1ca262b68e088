"""Test GGUF files: tiny Llama GGUFs (F32 from the converter; MAQ2 by re-quantizing those linears with
``format.quantize_rtn`` and some random salient words), written with the stock ``gguf.GGUFWriter``.

Every test that writes MAQ tensors or Q8_0 weights by hand goes through ``add_maq`` / ``add_q8_0``, which use the
converter's own writer path (``gguf_export.maq_arrays``, ``maq_tensor_metadata``, ``encode_float``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from maq.runtime import format as fmt
from maq.runtime import gguf_loader as gl

LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def convert_f32(hf_dir, out: Path) -> Path:
    """HF directory -> F32 GGUF through the converter CLI (``maq convert --method f32``)."""
    from maq.cli import main

    rc = main(["convert", str(hf_dir), "--out", str(out), "--method", "f32", "--force", "--no-progress"])
    assert rc == 0 and out.is_file(), f"maq convert failed (rc={rc})"
    return out


def add_maq(writer, name: str, mt: fmt.MAQTensor) -> None:
    """Add MAQ tensor ``mt`` (any width) as ``name`` to a ``gguf.GGUFWriter``: its per-tensor metadata and its
    parts, exactly as the converter writes them."""
    from maq.converter import gguf_export as ge

    for key, (value, kind) in ge.maq_tensor_metadata(name, mt.G, mt.bits).items():
        v = ge.gguf_value(value, kind)
        writer.add_key_value(key, v.value, v.type)
    for part, arr in ge.maq_arrays(name, mt):
        writer.add_tensor(part, arr)


def add_q8_0(writer, name: str, a: np.ndarray) -> None:
    """Add float [P, T] ``a`` as a ggml Q8_0 tensor (the converter's encoding)."""
    from gguf.constants import GGMLQuantizationType as Q

    from maq.converter import gguf_export as ge

    q = ge.encode_float(np.asarray(a, dtype=np.float32), "q8_0")
    writer.add_tensor(name, q, raw_shape=q.shape, raw_dtype=Q.Q8_0)


def finish(writer) -> None:
    """Write header, metadata and tensors, and close the ``gguf.GGUFWriter``."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def write_maq_file(path: Path, maq: dict, extra: dict | None = None, q8: dict | None = None) -> Path:
    """A GGUF holding MAQ2 tensors {name: (W, salient, G)} (``format.quantize_rtn``), F32 tensors ``extra``
    {name: array} and Q8_0 tensors ``q8`` {name: float [P, T]}, and the format version key."""
    import gguf

    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32(fmt.KEY_VERSION, fmt.FORMAT_VERSION_PLAIN)
    for name, (W, sal, G) in maq.items():
        add_maq(w, name, fmt.quantize_rtn(W, salient=sal, G=G))
    for name, a in (extra or {}).items():
        w.add_tensor(name, a.astype(np.float32))
    for name, a in (q8 or {}).items():
        add_q8_0(w, name, a)
    finish(w)
    return path


def _add_value(writer, k: str, v) -> None:
    """Add metadata ``k`` = ``v`` as read by ``GGUFFile`` (ints as u32 where they fit, else i64; floats f32;
    numpy arrays with their element type)."""
    from gguf import GGUFValueType as VT

    if isinstance(v, bool):                        # before int: a bool is an int
        writer.add_bool(k, v)
    elif isinstance(v, int):
        writer.add_key_value(k, v, VT.UINT32 if 0 <= v < 2**32 else VT.INT64)
    elif isinstance(v, np.ndarray):
        sub = {np.dtype("int32"): VT.INT32, np.dtype("uint32"): VT.UINT32, np.dtype("float32"): VT.FLOAT32,
               np.dtype("int8"): VT.INT8, np.dtype("uint8"): VT.UINT8}.get(v.dtype, VT.INT32)
        writer.add_key_value(k, v.tolist(), VT.ARRAY, sub_type=sub)
    else:
        add = {float: writer.add_float32, str: writer.add_string, list: writer.add_array}.get(type(v))
        if add is None:  # pragma: no cover
            raise TypeError(f"{k}: {type(v)}")
        add(k, v)


def _copy_metadata(writer, gf: gl.GGUFFile, skip=()) -> None:
    for k, v in gf.metadata.items():
        if not (k in skip or k.startswith("GGUF.") or k == "general.architecture"):
            _add_value(writer, k, v)


def requantize_maq(src: Path, out: Path, salient_frac: float = 0.05, G: int = 64, seed: int = 0,
                   embed: str = "q8_0", bits: int = 2) -> Path:
    """Copy a float GGUF, storing every linear as MAQ2 (RTN codes, ``salient_frac`` random salient words) or, with
    ``bits`` 3 / 4, as MAQ3 / MAQ4 (RTN codes), and token_embd as Q8_0 (``embed='q8_0'``) or unchanged."""
    import gguf
    from gguf.constants import GGMLQuantizationType as Q

    gf = gl.GGUFFile(src)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(out), "llama")
    _copy_metadata(w, gf, skip=(fmt.KEY_VERSION,))
    w.add_uint32(fmt.KEY_VERSION, fmt.FORMAT_VERSION_PLAIN)
    for name, t in gf.tensors.items():
        kind = name.split(".")[-2] if name.startswith("blk.") else ""
        arr = np.array(gf.view(t, "<f4", t.shape)) if t.ggml_type == gl.GGML_F32 else None
        if kind in LINEARS:
            P, T = arr.shape
            sal = rng.random((P, T // 16)) < salient_frac
            add_maq(w, name, fmt.quantize_rtn(arr, salient=sal, G=G) if bits == 2 else
                    fmt.quantize_rtn(arr, G=G, bits=bits))
        elif name == "token_embd.weight" and embed == "q8_0":
            add_q8_0(w, name, arr)
        else:
            w.add_tensor(name, arr if arr is not None else np.array(t.data), raw_dtype=None if arr is not None
                         else Q(t.ggml_type))
    finish(w)
    return out


def rewrite(src: Path, out: Path, *, drop=(), metadata: dict | None = None, tensors: dict | None = None,
            drop_keys=()) -> Path:
    """Copy a GGUF, dropping tensors/keys, overriding metadata {key: value} and tensors {name: array}
    (raw bytes of other tensors are copied as they are). For malformed-file tests."""
    import gguf
    from gguf.constants import GGMLQuantizationType as Q

    gf = gl.GGUFFile(src)
    metadata = metadata or {}
    tensors = tensors or {}
    arch = metadata.get("general.architecture", gf.metadata.get("general.architecture"))
    w = gguf.GGUFWriter(str(out), arch)
    _copy_metadata(w, gf, skip=set(metadata) | set(drop_keys))
    tmp = {k: v for k, v in metadata.items() if k != "general.architecture"}
    for k, v in tmp.items():
        if isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        else:
            w.add_uint32(k, v)
    for name, t in gf.tensors.items():
        if name in drop:
            continue
        if name in tensors:
            w.add_tensor(name, tensors[name])
            continue
        qt = Q(t.ggml_type)
        raw = np.array(t.data)
        dtype = {Q.F32: np.float32, Q.F16: np.float16, Q.I32: np.int32, Q.I8: np.int8}.get(qt)
        if dtype is not None:                      # element types: the writer infers the type from the dtype
            w.add_tensor(name, raw.view(dtype).reshape(t.shape))
        else:                                      # block types: raw bytes [rows, row bytes]
            w.add_tensor(name, raw.reshape(t.shape[0], -1) if len(t.shape) > 1 else raw, raw_dtype=qt)
    finish(w)
    return out
