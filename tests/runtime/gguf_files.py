"""Test files for the runtime: tiny Llama GGUFs (F32 from the converter; MAQ2 by re-quantizing those linears with
``format.quantize_rtn`` and some random salient words), written with the stock ``gguf.GGUFWriter``."""
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


def _copy_metadata(writer, gf: gl.GGUFFile, skip=()) -> None:
    import gguf
    from gguf import GGUFValueType as VT

    for k, v in gf.metadata.items():
        if k in skip or k.startswith("GGUF.") or k == "general.architecture":
            continue
        if isinstance(v, bool):
            writer.add_bool(k, v)
        elif isinstance(v, int):
            writer.add_key_value(k, v, VT.UINT32 if 0 <= v < 2**32 else VT.INT64)
        elif isinstance(v, float):
            writer.add_float32(k, v)
        elif isinstance(v, str):
            writer.add_string(k, v)
        elif isinstance(v, list):
            writer.add_array(k, v)
        elif isinstance(v, np.ndarray):
            vt = {np.dtype("int32"): VT.INT32, np.dtype("uint32"): VT.UINT32, np.dtype("float32"): VT.FLOAT32,
                  np.dtype("int8"): VT.INT8, np.dtype("uint8"): VT.UINT8}.get(v.dtype, VT.INT32)
            writer.add_key_value(k, v.tolist(), VT.ARRAY, sub_type=vt)
        else:  # pragma: no cover
            raise TypeError(f"{k}: {type(v)}")
    del gguf


def requantize_maq(src: Path, out: Path, salient_frac: float = 0.05, G: int = 64, seed: int = 0,
                   embed: str = "q8_0") -> Path:
    """Copy a float GGUF, storing every linear as MAQ2 (RTN codes, ``salient_frac`` random salient words) and
    token_embd as Q8_0 (``embed='q8_0'``) or unchanged."""
    import gguf
    from gguf.constants import GGMLQuantizationType as Q

    gf = gl.GGUFFile(src)
    rng = np.random.default_rng(seed)
    w = gguf.GGUFWriter(str(out), "llama")
    _copy_metadata(w, gf, skip=(fmt.KEY_VERSION,))
    w.add_uint32(fmt.KEY_VERSION, fmt.FORMAT_VERSION)
    for name, t in gf.tensors.items():
        kind = name.split(".")[-2] if name.startswith("blk.") else ""
        arr = np.array(gf.view(t, "<f4", t.shape)) if t.ggml_type == gl.GGML_F32 else None
        if kind in LINEARS:
            P, T = arr.shape
            sal = rng.random((P, T // 16)) < salient_frac
            mt = fmt.quantize_rtn(arr, salient=sal, G=G)
            w.add_string(fmt.key_tensor_type(name), fmt.TYPE_MAQ2)
            w.add_uint32(fmt.key_group_size(name), G)
            w.add_string(fmt.key_salient_coding(name), fmt.SALIENT_MEAN4)
            w.add_tensor(name, mt.words)
            w.add_tensor(name + fmt.PART_BITMAP, mt.bitmap.view(np.int8))
            w.add_tensor(name + fmt.PART_SCALES, mt.scales.view(np.int8))
            w.add_tensor(name + fmt.PART_ROWSCALE, mt.rowscale)
        elif name == "token_embd.weight" and embed == "q8_0":
            q = gguf.quants.quantize(arr, Q.Q8_0)
            w.add_tensor(name, q, raw_shape=q.shape, raw_dtype=Q.Q8_0)
        else:
            w.add_tensor(name, arr if arr is not None else np.array(t.data), raw_dtype=None if arr is not None
                         else Q(t.ggml_type))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
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
        if qt == Q.F32:
            w.add_tensor(name, raw.view(np.float32).reshape(t.shape))
        elif qt == Q.F16:
            w.add_tensor(name, raw.view(np.float16).reshape(t.shape))
        elif qt == Q.I32:
            w.add_tensor(name, raw.view(np.int32).reshape(t.shape))
        elif qt == Q.I8:
            w.add_tensor(name, raw.view(np.int8).reshape(t.shape))
        else:
            w.add_tensor(name, raw.reshape(t.shape[0], -1) if len(t.shape) > 1 else raw, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out
