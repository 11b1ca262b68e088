"""Validation of a Hugging Face model directory before any work starts: every input file is read, typed and
range-checked here, so that a hostile or broken directory fails in well under a second with one ``MAQError``
naming the file and the key or tensor (nothing written on disk), instead of a traceback or a numerical failure
after minutes of calibration.

What is checked:
- ``config.json``: UTF-8 JSON object; every hyper-parameter the converter reads has the right type (an integer is
  an int, not 128.7, "abc", null or a list) and a sane range (``num_hidden_layers`` <= 1024, positive heads,
  ``rope_theta`` / ``rms_norm_eps`` finite and positive, ``max_position_embeddings`` <= 2^27), ``rope_scaling``
  a known kind with numeric, positive factors;
- safetensors headers (``read_safetensors_header``): the JSON header is an object of entries each with a known
  dtype, a shape of non-negative ints and ``data_offsets`` inside the data section, non-overlapping, whose size is
  exactly dtype size x prod(shape); a truncated file fails on the offsets;
- ``model.safetensors.index.json``: a JSON object with a ``weight_map`` of tensor -> file name in the directory;
- ``tokenizer.json`` (a JSON object with a BPE ``model`` and its ``vocab``), ``tokenizer_config.json``,
  ``special_tokens_map.json``, ``generation_config.json`` (JSON objects), and the YAML front matter of README.md;
- weight values (``check_weight_values``): no NaN/Inf and no magnitude above ``MAX_ABS_WEIGHT`` (3e38 is finite
  but overflows the float32 calibration), scanned from the raw bits in chunks.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from maq.converter.source import LlamaParams
from maq.errors import MAQError

log = logging.getLogger(__name__)

MAX_CONFIG_BYTES = 4 << 20           # config.json and the other small JSON files
MAX_TOKENIZER_BYTES = 512 << 20      # tokenizer.json
MAX_HEADER_BYTES = 100 << 20         # safetensors JSON header (the safetensors library's own limit)
MAX_FRONT_MATTER_BYTES = 1 << 20     # README.md YAML front matter
MAX_ABS_WEIGHT = 1e6                 # larger weights overflow float32 activations / Hessians in calibration

# safetensors dtype -> bytes per element (every dtype of the format; only the float ones can be converted)
ST_DTYPE_SIZES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "I16": 2, "U16": 2, "F16": 2,
                  "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8}
ST_FLOAT_DTYPES = ("F32", "F16", "BF16", "F64")

# ranges of the config.json integers the converter reads: key -> (lo, hi)
INT_RANGES = {
    "hidden_size": (1, 1 << 17), "intermediate_size": (1, 1 << 19), "num_hidden_layers": (1, 1024),
    "num_attention_heads": (1, 1024), "num_key_value_heads": (1, 1024), "head_dim": (2, 1 << 13),
    "vocab_size": (1, 1 << 24), "max_position_embeddings": (1, 1 << 27),
}
ROPE_KINDS = ("default", "linear", "llama3")


# --------------------------------------------------------------------------- small typed readers
def read_json(path: Path, max_bytes: int = MAX_CONFIG_BYTES, want: type = dict) -> Any:
    """The JSON value of ``path`` (UTF-8), which must be a ``want`` (dict by default); MAQError otherwise."""
    try:
        if not path.is_file():
            raise MAQError(f"{path}: not a regular file")
        with open(path, "rb") as f:
            data = f.read(max_bytes + 1)          # bounded: a file that grows or lies about its size
        if len(data) > max_bytes:
            raise MAQError(f"{path}: more than the {max_bytes} bytes a {path.name} may have")
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise MAQError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MAQError(f"{path}: cannot read JSON: {str(exc)[:120] or type(exc).__name__}") from None
    except OSError as exc:
        raise MAQError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not isinstance(value, want):
        raise MAQError(f"{path}: the JSON is {_kind(value)}, expected {_kind_name(want)}")
    return value


def _kind(v: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "null"}.get(type(v), type(v).__name__)


def _kind_name(t: type) -> str:
    return {dict: "an object", list: "a list"}.get(t, t.__name__)


def _show(v: Any) -> str:
    r = json.dumps(v) if isinstance(v, (dict, list, str, int, float, bool, type(None))) else repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


class ConfigReader:
    """Typed access to one JSON object (``where`` names the file; ``prefix`` the enclosing key, for messages)."""

    def __init__(self, obj: dict, where: Path, prefix: str = ""):
        self.obj, self.where, self.prefix = obj, where, prefix

    def _bad(self, key: str, expected: str) -> MAQError:
        return MAQError(f"{self.where}: {self.prefix}{key} = {_show(self.obj.get(key))}, expected {expected}")

    def has(self, key: str) -> bool:
        return self.obj.get(key) is not None

    def int(self, key: str, lo: int, hi: int, default: int | None = None, required: bool = False) -> int | None:
        """An integer in [lo, hi]; ``default`` when the key is absent or null (MAQError if ``required``)."""
        v = self.obj.get(key)
        if v is None:
            if required:
                raise MAQError(f"{self.where}: missing key {self.prefix}{key!r}")
            return default
        if isinstance(v, float) and v.is_integer() and lo <= v <= hi:
            v = int(v)                    # 2048.0: an integer written as a float
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self._bad(key, f"an integer in {lo}..{hi}")
        return v

    def float(self, key: str, default: float, lo: float = 0.0, hi: float = math.inf, lo_open: bool = True) -> float:
        """A finite number in (lo, hi] (or [lo, hi]); ``default`` when absent or null."""
        v = self.obj.get(key)
        if v is None:
            return default
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v <= hi and \
            (v > lo if lo_open else v >= lo)
        if not ok:
            raise self._bad(key, f"a finite number in {'(' if lo_open else '['}{lo:g}, {hi:g}]")
        return float(v)

    def _typed(self, key: str, default: Any, typ: type, expected: str) -> Any:
        """The value of ``key`` if it is a ``typ``; ``default`` when absent or null; else MAQError (``expected``)."""
        v = self.obj.get(key)
        if v is None:
            return default
        if not isinstance(v, typ):
            raise self._bad(key, expected)
        return v

    def bool(self, key: str, default: bool) -> bool:
        return self._typed(key, default, bool, "true or false")

    def str(self, key: str, default: str | None) -> str | None:
        return self._typed(key, default, str, "a string")

    def dict(self, key: str) -> dict | None:
        return self._typed(key, None, dict, "an object")


# --------------------------------------------------------------------------- config.json
HFConfig = LlamaParams  # the checked hyper-parameters of config.json: one definition, in source.py


def check_config(cfg_file: Path, supported_archs: tuple[str, ...], arch: str) -> tuple[dict, HFConfig]:
    """Read and check config.json: (the raw dict, the typed hyper-parameters). MAQError names the key."""
    raw = read_json(cfg_file)
    c = ConfigReader(raw, cfg_file)
    model_type = raw.get("model_type")
    archs = raw.get("architectures")
    if archs is not None and (not isinstance(archs, list) or not all(isinstance(a, str) for a in archs)):
        raise MAQError(f"{cfg_file}: architectures = {_show(archs)}, expected a list of strings")
    archs = archs or []
    if model_type != arch or (archs and not any(a in supported_archs for a in archs)):
        mt = model_type[:40] if isinstance(model_type, str) else model_type if model_type is None else \
            _show(model_type)
        raise MAQError(f"{cfg_file}: architecture {mt!r} {[a[:40] for a in archs[:3]]} is not supported "
                       f"(only llama: LlamaForCausalLM - Llama 2/3, SmolLM, TinyLlama)")
    if c.bool("attention_bias", False) or c.bool("mlp_bias", False):
        raise MAQError(f"{cfg_file}: attention_bias/mlp_bias models are not supported")
    act = c.str("hidden_act", "silu")
    if act != "silu":
        raise MAQError(f"{cfg_file}: hidden_act {act!r} is not supported (expected silu)")

    def req(key: str) -> int:
        return c.int(key, *INT_RANGES[key], required=True)

    n_embd, n_head = req("hidden_size"), req("num_attention_heads")
    n_layer, n_ff, n_vocab = req("num_hidden_layers"), req("intermediate_size"), req("vocab_size")
    n_head_kv = c.int("num_key_value_heads", *INT_RANGES["num_key_value_heads"], default=n_head)
    if n_head % n_head_kv:
        raise MAQError(f"{cfg_file}: num_attention_heads {n_head} is not a multiple of num_key_value_heads "
                       f"{n_head_kv}")
    head_dim = c.int("head_dim", *INT_RANGES["head_dim"])
    if head_dim is None:
        if n_embd % n_head:
            raise MAQError(f"{cfg_file}: hidden_size {n_embd} is not a multiple of num_attention_heads {n_head} "
                           f"(and no head_dim)")
        head_dim = n_embd // n_head
    if head_dim % 2:
        raise MAQError(f"{cfg_file}: head dimension {head_dim} must be even (RoPE pairs)")
    n_ctx = c.int("max_position_embeddings", *INT_RANGES["max_position_embeddings"], default=2048)
    rope_params = c.dict("rope_parameters") or {}
    rp = ConfigReader(rope_params, cfg_file, "rope_parameters.")
    theta = c.float("rope_theta", rp.float("rope_theta", 10000.0, hi=1e12), hi=1e12)
    rms_eps = c.float("rms_norm_eps", 1e-6, hi=1.0)
    tied = c.bool("tie_word_embeddings", False)
    scaling = raw.get("rope_scaling")
    key = "rope_scaling"
    if scaling is None and rope_params.get("rope_type", "default") not in ("default", None):
        scaling, key = rope_params, "rope_parameters"
    scaling = check_rope_scaling(scaling, cfg_file, key, n_ctx)
    for k in ("bos_token_id", "eos_token_id", "pad_token_id"):
        v = raw.get(k)
        ids = v if isinstance(v, list) else [v]
        lo = -1 if k == "pad_token_id" else 0           # old Llama conversions write pad_token_id -1 ("none")
        if not all(i is None or isinstance(i, int) and not isinstance(i, bool) and lo <= i < n_vocab for i in ids):
            raise MAQError(f"{cfg_file}: {k} = {_show(v)}, expected a token id in 0..{n_vocab - 1} (or a list)")
    return raw, HFConfig(n_layer=n_layer, n_embd=n_embd, n_ff=n_ff, n_head=n_head, n_head_kv=n_head_kv,
                         head_dim=head_dim, n_vocab=n_vocab, n_ctx=n_ctx, rope_theta=theta, rms_eps=rms_eps,
                         tied=tied, rope_scaling=scaling)


def check_rope_scaling(scaling: Any, where: Path, key: str, n_ctx: int) -> dict | None:
    """rope_scaling: null, or an object of a supported kind with numeric, positive factors."""
    if scaling is None:
        return None
    if not isinstance(scaling, dict):
        raise MAQError(f"{where}: {key} = {_show(scaling)}, expected an object (or null)")
    r = ConfigReader(scaling, where, key + ".")
    kind = scaling.get("rope_type", scaling.get("type", "default"))
    if not isinstance(kind, str) or kind.lower() not in ROPE_KINDS:
        raise MAQError(f"{where}: {key}.rope_type = {_show(kind)} is not supported "
                       f"(expected one of {', '.join(ROPE_KINDS)})")
    kind = kind.lower()
    if kind == "linear":
        r.float("factor", 1.0, hi=1e6)
    elif kind == "llama3":
        r.float("factor", 8.0, hi=1e6)
        low = r.float("low_freq_factor", 1.0, hi=1e6)
        high = r.float("high_freq_factor", 4.0, hi=1e6)
        if high <= low:
            raise MAQError(f"{where}: {key}.high_freq_factor = {high:g}, expected more than low_freq_factor "
                           f"{low:g}")
        r.int("original_max_position_embeddings", 1, 1 << 27, default=8192)
    return scaling


# --------------------------------------------------------------------------- safetensors
@dataclasses.dataclass(frozen=True)
class STTensor:
    """One tensor of a safetensors file: its dtype, shape and absolute byte range [start, start + nbytes)."""

    file: Path
    dtype: str
    shape: tuple[int, ...]
    start: int
    nbytes: int

    def mmap_bytes(self) -> np.ndarray:
        """The raw bytes, uint8 [nbytes], memory-mapped read-only."""
        if self.nbytes == 0:
            return np.zeros(0, np.uint8)
        return np.memmap(self.file, mode="r", dtype=np.uint8, offset=self.start, shape=(self.nbytes,))


def read_safetensors_header(path: Path) -> dict[str, STTensor]:
    """Parse and check a safetensors header: {tensor name: STTensor}. MAQError names the file and the tensor."""
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise MAQError(f"{path}: {size} bytes: too short for a safetensors file (8-byte header length)")
            n = int.from_bytes(head, "little")
            if n < 2 or n > MAX_HEADER_BYTES or 8 + n > size:
                raise MAQError(f"{path}: safetensors header length {n} does not fit the file of {size} bytes "
                               f"(truncated or not a safetensors file)")
            text = f.read(n)
    except OSError as exc:
        raise MAQError(f"{path}: cannot read: {exc.strerror or exc}") from None
    try:
        header = json.loads(text.decode("utf-8"))
    except UnicodeDecodeError:
        raise MAQError(f"{path}: safetensors header is not UTF-8") from None
    except (json.JSONDecodeError, RecursionError) as exc:
        raise MAQError(f"{path}: safetensors header is not valid JSON: {str(exc)[:100]}") from None
    if not isinstance(header, dict):
        raise MAQError(f"{path}: safetensors header is {_kind(header)}, expected an object")
    data_start, data_size = 8 + n, size - 8 - n
    out: dict[str, STTensor] = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        what = f"{path}: tensor {name[:80]!r}"
        if not isinstance(e, dict):
            raise MAQError(f"{what}: header entry is {_kind(e)}, expected an object with dtype, shape, "
                           f"data_offsets")
        dtype, shape, offs = e.get("dtype"), e.get("shape"), e.get("data_offsets")
        if not isinstance(dtype, str) or dtype not in ST_DTYPE_SIZES:
            raise MAQError(f"{what}: dtype {_show(dtype)}, expected one of {', '.join(ST_DTYPE_SIZES)}")
        if not isinstance(shape, list) or len(shape) > 8 or \
                not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 1 << 40 for d in shape):
            raise MAQError(f"{what}: shape {_show(shape)}, expected a list of at most 8 non-negative integers")
        if not isinstance(offs, list) or len(offs) != 2 or \
                not all(isinstance(o, int) and not isinstance(o, bool) for o in offs):
            raise MAQError(f"{what}: data_offsets {_show(offs)}, expected [begin, end]")
        b, end = offs
        if not 0 <= b <= end <= data_size:
            raise MAQError(f"{what}: data_offsets [{b}, {end}] outside the {data_size} bytes of data "
                           f"(file truncated?)")
        want = math.prod(shape) * ST_DTYPE_SIZES[dtype]
        if end - b != want:
            raise MAQError(f"{what}: data_offsets [{b}, {end}] hold {end - b} bytes, but {dtype} x {shape} "
                           f"needs {want}")
        out[name] = STTensor(path, dtype, tuple(shape), data_start + b, end - b)
    spans = sorted((t.start, t.start + t.nbytes, name) for name, t in out.items() if t.nbytes)
    for (b0, e0, n0), (b1, _e1, n1) in zip(spans, spans[1:]):
        if b1 < e0:
            raise MAQError(f"{path}: tensors {n0[:60]!r} and {n1[:60]!r} overlap (data bytes {b1 - data_start}.."
                           f"{e0 - data_start}); each tensor needs its own bytes")
    return dict(sorted(out.items()))


def safetensors_files(model_dir: Path) -> list[Path]:
    """The weight files: those named by ``model.safetensors.index.json``, else every ``*.safetensors``."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        wm = read_json(index, MAX_TOKENIZER_BYTES).get("weight_map")
        if not isinstance(wm, dict) or not wm:
            raise MAQError(f"{index}: weight_map = {_show(wm)}, expected an object of tensor name -> file name")
        names = set()
        for t, fname in wm.items():
            if not isinstance(fname, str) or not fname or Path(fname).name != fname or fname in (".", ".."):
                raise MAQError(f"{index}: weight_map[{t[:60]!r}] = {_show(fname)}, expected a file name in "
                               f"{model_dir}")
            names.add(fname)
        files = [model_dir / f for f in sorted(names)]
        for f in files:
            if not f.is_file():
                raise MAQError(f"{f}: listed in {index.name} but missing")
        return files
    return sorted(model_dir.glob("*.safetensors"))


def read_all_headers(files: list[Path]) -> dict[str, STTensor]:
    """Every tensor of every file (a name found in two files is an error)."""
    out: dict[str, STTensor] = {}
    for f in files:
        for name, t in read_safetensors_header(f).items():
            if name in out:
                raise MAQError(f"{f}: tensor {name!r} also in {out[name].file.name}")
            out[name] = t
    return out


def check_weight_values(tensors: dict[str, STTensor], names: list[str], limit: float = MAX_ABS_WEIGHT,
                        chunk: int = 1 << 24) -> None:
    """MAQError naming the first tensor of ``names`` holding NaN/Inf or a value beyond +-limit.

    Reads the raw bits (no float conversion) in chunks of ``chunk`` bytes: about memory bandwidth."""
    t0 = time.time()
    lim32 = int(np.array(limit, np.float32).view(np.uint32))
    lim16 = int(np.array(min(limit, 65504.0), np.float16).view(np.uint16))
    limbf = lim32 >> 16
    total = 0
    for name in names:
        t = tensors[name]
        if t.dtype not in ST_FLOAT_DTYPES:
            continue                                      # refused by name elsewhere
        raw = t.mmap_bytes()
        size = ST_DTYPE_SIZES[t.dtype]
        step = chunk - chunk % size
        for b in range(0, t.nbytes, step):
            part = raw[b:b + step]
            if t.dtype == "F32":
                bad = bool(np.any((part.view("<u4") & 0x7FFFFFFF) > lim32))
            elif t.dtype == "BF16":
                bad = bool(np.any((part.view("<u2") & 0x7FFF) > limbf))
            elif t.dtype == "F16":
                bad = bool(np.any((part.view("<u2") & 0x7FFF) > lim16))
            else:
                a = part.view("<f8")
                bad = not bool(np.all(np.abs(a) <= limit))
            if bad:
                raise MAQError(f"{t.file}: tensor {name} {_describe_bad(part, t.dtype, limit)}")
        total += t.nbytes
    log.debug("weight values checked: %.1f MB in %.2f s", total / 1e6, time.time() - t0)


def _describe_bad(part: np.ndarray, dtype: str, limit: float) -> str:
    """What is wrong in a chunk of raw bytes known to hold a bad value (only on the error path)."""
    if dtype == "BF16":
        a = (part.view("<u2").astype(np.uint32) << 16).view(np.float32)
    else:
        a = part.view({"F32": "<f4", "F16": "<f2", "F64": "<f8"}[dtype])
    a = a.astype(np.float64)
    n_bad = int(np.count_nonzero(~np.isfinite(a)))
    if n_bad:
        return f"has {n_bad} NaN/Inf value(s)"
    big = float(np.max(np.abs(a)))
    return f"has values up to {big:.3g}, beyond +-{limit:g} (calibration would overflow float32)"


# --------------------------------------------------------------------------- tokenizer files, model card
def check_tokenizer_files(model_dir: Path, n_vocab: int) -> None:
    """tokenizer.json (a BPE model with a vocab of ids < n_vocab), the other tokenizer/generation JSON files."""
    tj = model_dir / "tokenizer.json"
    if tj.is_file():
        tok = read_json(tj, MAX_TOKENIZER_BYTES)
        model = tok.get("model")
        if not isinstance(model, dict):
            raise MAQError(f"{tj}: model = {_show(model)}, expected an object (the tokenizer model)")
        mtype = model.get("type")
        if mtype != "BPE":
            raise MAQError(f"{tj}: model.type = {_show(mtype)}, expected \"BPE\" (Llama-family tokenizers)")
        vocab = model.get("vocab")
        if not isinstance(vocab, dict) or not vocab:
            raise MAQError(f"{tj}: model.vocab = {_show(vocab)}, expected an object of token -> id")
        ids = list(vocab.values())
        added = tok.get("added_tokens") or []
        flags = ("single_word", "lstrip", "rstrip", "normalized")     # the tokenizers library requires them
        if not isinstance(added, list) or not all(
                isinstance(a, dict) and isinstance(a.get("content"), str) and
                all(isinstance(a.get(f), bool) for f in flags) and isinstance(a.get("special", False), bool)
                for a in added):
            bad_entry = next((a for a in added if not isinstance(a, dict) or not isinstance(a.get("content"), str)
                              or not all(isinstance(a.get(f), bool) for f in flags)), added) \
                if isinstance(added, list) else added
            raise MAQError(f"{tj}: added_tokens entry {_show(bad_entry)}, expected objects with id, content and "
                           f"the booleans {', '.join(flags)}, special")
        ids += [a.get("id") for a in added]
        bad = next((i for i in ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < n_vocab), "ok")
        if bad != "ok":
            raise MAQError(f"{tj}: token id {_show(bad)}, expected an integer in 0..{n_vocab - 1} "
                           f"(config.json vocab_size {n_vocab})")
        merges = model.get("merges", [])
        if not isinstance(merges, list):
            raise MAQError(f"{tj}: model.merges = {_show(merges)}, expected a list")
    for name in ("tokenizer_config.json", "special_tokens_map.json", "generation_config.json"):
        f = model_dir / name
        if f.is_file():
            obj = read_json(f, MAX_TOKENIZER_BYTES)
            if name == "tokenizer_config.json":
                ct = obj.get("chat_template")
                if ct is not None and not isinstance(ct, str) and not (
                        isinstance(ct, list) and all(isinstance(x, dict) and isinstance(x.get("template"), str)
                                                     for x in ct)):
                    raise MAQError(f"{f}: chat_template = {_show(ct)}, expected a string or a list of "
                                   f"{{name, template}} objects")
                for k in ("bos_token", "eos_token", "unk_token", "pad_token"):
                    v = obj.get(k)
                    if v is not None and not isinstance(v, (str, dict)):
                        raise MAQError(f"{f}: {k} = {_show(v)}, expected a string")
                atd = obj.get("added_tokens_decoder")
                if atd is not None and not isinstance(atd, dict):
                    raise MAQError(f"{f}: added_tokens_decoder = {_show(atd)}, expected an object")


def check_model_card(model_dir: Path) -> None:
    """README.md: its YAML front matter (between ``---`` lines), if any, must parse to a mapping."""
    readme = model_dir / "README.md"
    if not readme.is_file():
        return
    try:
        with open(readme, "rb") as f:
            head = f.read(MAX_FRONT_MATTER_BYTES + 8)
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        raise MAQError(f"{readme}: not UTF-8 text") from None
    except OSError as exc:
        raise MAQError(f"{readme}: cannot read: {exc.strerror or exc}") from None
    lines = text.splitlines()
    if not lines or lines[0] != "---":
        return
    try:
        end = lines.index("---", 1)
    except ValueError:
        if len(head) > MAX_FRONT_MATTER_BYTES:
            raise MAQError(f"{readme}: model card front matter longer than {MAX_FRONT_MATTER_BYTES} bytes") \
                from None
        end = len(lines)
    import yaml

    front = "\n".join(lines[1:end]).replace("\t", "  ") + "\n"
    try:
        data = yaml.safe_load(front)
    except (yaml.YAMLError, RecursionError, ValueError) as exc:
        msg = " ".join(str(exc).split())[:120]
        raise MAQError(f"{readme}: model card front matter is not valid YAML: {msg}") from None
    if data is not None and not isinstance(data, dict):
        raise MAQError(f"{readme}: model card front matter is {_kind(data)}, expected a YAML mapping")
    for k in ("license", "language", "tags", "datasets", "base_model", "pipeline_tag", "model_name"):
        v = data.get(k) if data else None
        if v is not None and not isinstance(v, (str, list)):
            raise MAQError(f"{readme}: model card {k} = {_show(str(v))}, expected a string or a list")
        if isinstance(v, list) and not all(isinstance(x, (str, dict)) for x in v):
            raise MAQError(f"{readme}: model card {k} has items of the wrong type, expected strings")
