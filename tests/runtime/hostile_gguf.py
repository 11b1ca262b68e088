"""Hostile GGUF files for the runtime's loader (used by test_hostile_gguf.py and scripts/fuzz_gguf.py).

* ``base_model()`` describes a tiny valid MAQ GGUF (2 layers, width 64, MLP 96, GQA 4/2, a 112-token byte-level
  BPE vocabulary): every linear MAQ2 (G = 32, 64 and 128; ragged groups; bitmap padding bits) except two MAQ3 and
  two MAQ4 linears (``HI_LINEARS``) and one Q8_0 linear, a Q8_0 embedding, an untied F32 output head, F32 norms and
  rope_freqs.
* ``serialize()`` is a GGUF writer of our own that can write anything (duplicate keys, empty names, lying counts,
  wrong types, bad offsets) and records the byte span of every field, so variants can be made both semantically
  (edit the description, write it again) and at the byte level (flip/overwrite/truncate at a field).
* ``variants()`` derives the hostile files: every corruption class of llama.cpp's tests/test-gguf.cpp, wrong
  metadata types for every key, huge dimensions, MAQ2/3/4 parts disagreeing (shapes, GGUF types, a part of the
  other members, type keys naming another member), truncation around every section boundary, random byte flips.
* ``check(path)`` is what one variant must survive: ``maq.Llama`` on it (loader, tokenizer, C model) and a
  completion that runs the forward pass (prompt logits for every token, then decode). It returns a dict; the
  ``worker`` entry point runs it for paths read from stdin, one JSON line per answer, under an address-space limit,
  so that a crash or a hang kills only the worker (the test sees it and restarts one).
"""
from __future__ import annotations

import dataclasses
import json
import os
import random
import struct
import sys
from typing import Iterator

import numpy as np

# GGUF value types
U8, I8, U16, I16, U32, I32, F32, BOOL, STR, ARR, U64, I64, F64 = range(13)
_SCALAR = {U8: "<B", I8: "<b", U16: "<H", I16: "<h", U32: "<I", I32: "<i", F32: "<f", BOOL: "<?", U64: "<Q",
           I64: "<q", F64: "<d"}


def _ggml_ids() -> tuple[int, ...]:
    """ggml type ids of F32, F16, Q8_0, I8, I16, I32 from the gguf package (their owner)."""
    from gguf.constants import GGMLQuantizationType as Q

    return tuple(int(getattr(Q, n)) for n in ("F32", "F16", "Q8_0", "I8", "I16", "I32"))


T_F32, T_F16, T_Q8_0, T_I8, T_I16, T_I32 = _ggml_ids()

DIM, HIDDEN, N_LAYERS, N_HEADS, N_KV, HEAD_DIM, VOCAB, CTX = 64, 96, 2, 4, 2, 16, 112, 64
ROPE_DIM = HEAD_DIM


@dataclasses.dataclass
class KV:
    key: str | bytes
    vt: int
    value: object
    et: int | None = None          # element type of an array
    raw: bytes | None = None       # the value's bytes as written (overrides value/et)


@dataclasses.dataclass
class TI:
    name: str | bytes
    ne: list[int]
    gtype: int
    data: bytes
    offset: int | None = None       # override of the computed (aligned, sequential) offset


# --------------------------------------------------------------------------- writer
def _b(s) -> bytes:
    return s if isinstance(s, bytes) else s.encode("utf-8")


def _enc_value(vt: int, value, et=None) -> bytes:
    if vt in _SCALAR:
        return struct.pack(_SCALAR[vt], value)
    if vt == STR:
        s = _b(value)
        return struct.pack("<Q", len(s)) + s
    if vt == ARR:
        items = list(value)
        out = struct.pack("<IQ", et, len(items))
        if et == ARR:
            return out + b"".join(_enc_value(ARR, v, e) for e, v in items)
        return out + b"".join(_enc_value(et, v) for v in items)
    raise ValueError(vt)


def serialize(kvs: list[KV], tensors: list[TI], *, alignment: int = 32, version: int = 3, magic: bytes = b"GGUF",
              n_kv: int | None = None, n_tensors: int | None = None, data_alignment: int | None = None
              ) -> tuple[bytes, dict[str, tuple[int, int]]]:
    """(file bytes, {field: (start, end)}). ``alignment`` pads the header and every tensor's data as a correct
    writer would; ``data_alignment`` (default ``alignment``) lets the data disagree with the declared value."""
    da = data_alignment or alignment
    spans: dict[str, tuple[int, int]] = {}
    out = bytearray()

    def put(field: str, b: bytes) -> None:
        spans[field] = (len(out), len(out) + len(b))
        out.extend(b)

    put("magic", magic)
    put("version", struct.pack("<I", version))
    put("n_tensors", struct.pack("<Q", len(tensors) if n_tensors is None else n_tensors))
    put("n_kv", struct.pack("<Q", len(kvs) if n_kv is None else n_kv))
    for i, kv in enumerate(kvs):
        k = _b(kv.key)
        start = len(out)
        put(f"kv{i}.keylen", struct.pack("<Q", len(k)))
        put(f"kv{i}.key", k)
        put(f"kv{i}.type", struct.pack("<I", kv.vt))
        if kv.raw is not None:
            put(f"kv{i}.value", kv.raw)
        elif kv.vt == ARR:
            put(f"kv{i}.etype", struct.pack("<I", kv.et))
            put(f"kv{i}.count", struct.pack("<Q", len(kv.value)))
            body = _enc_value(ARR, kv.value, kv.et)[12:]
        else:
            body = _enc_value(kv.vt, kv.value)
        put(f"kv{i}.value", body)
        spans[f"kv{i}"] = (start, len(out))
    offsets, off = [], 0
    for t in tensors:
        offsets.append(off if t.offset is None else t.offset)
        off += -(-len(t.data) // da) * da
    for i, t in enumerate(tensors):
        n = _b(t.name)
        start = len(out)
        put(f"ti{i}.namelen", struct.pack("<Q", len(n)))
        put(f"ti{i}.name", n)
        put(f"ti{i}.ndims", struct.pack("<I", len(t.ne)))
        for j, d in enumerate(t.ne):
            put(f"ti{i}.ne{j}", struct.pack("<Q", d % (1 << 64)))
        put(f"ti{i}.type", struct.pack("<I", t.gtype % (1 << 32)))
        put(f"ti{i}.offset", struct.pack("<Q", offsets[i] % (1 << 64)))
        spans[f"ti{i}"] = (start, len(out))
    spans["header"] = (0, len(out))
    out.extend(bytes(-len(out) % da))
    data_start = len(out)
    spans["data"] = (data_start, data_start)
    pos = 0
    for i, t in enumerate(tensors):
        p = data_start + pos
        out.extend(bytes(p - len(out)) if p > len(out) else b"")
        spans[f"data{i}"] = (len(out), len(out) + len(t.data))
        out.extend(t.data)
        pos += -(-len(t.data) // da) * da
    out.extend(bytes(data_start + pos - len(out)))
    spans["data"] = (data_start, len(out))
    return bytes(out), spans


# --------------------------------------------------------------------------- the tiny valid model
def _vocab() -> tuple[list[str], list[int], list[str]]:
    controls = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    chars = [chr(c) for c in range(33, 127)] + ["\u0120"]          # printable ASCII + byte-level space
    pairs = ["\u0120 t", "t h", "h e", "\u0120 a", "i n", "e r", "a n", "r e", "o n", "a t", "e n", "n d", "t i",
             "e s"]
    merged = [p.replace(" ", "") for p in pairs]
    tokens = controls + chars + merged
    assert len(tokens) == VOCAB, len(tokens)
    types = [3] * len(controls) + [1] * (len(tokens) - len(controls))
    return tokens, types, pairs


CHAT_TEMPLATE = ("{% for m in messages %}{{'<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n'}}"
                 "{% endfor %}{% if add_generation_prompt %}{{'<|im_start|>assistant\n'}}{% endif %}")

# linear -> (P, T, G or None for Q8_0)
LINEARS = {
    "attn_q": (N_HEADS * HEAD_DIM, DIM, 32), "attn_k": (N_KV * HEAD_DIM, DIM, 64),
    "attn_v": (N_KV * HEAD_DIM, DIM, 128), "attn_output": (DIM, N_HEADS * HEAD_DIM, 64),
    "ffn_gate": (HIDDEN, DIM, 32), "ffn_up": (HIDDEN, DIM, 128), "ffn_down": (DIM, HIDDEN, 64),
}
Q8_LINEAR = "blk.1.ffn_up.weight"    # one standard-type linear among the MAQ2 ones
# MAQ3 / MAQ4 linears of the base model {tensor name: code bits} (T=96 with G=64: a ragged group; T < G)
HI_LINEARS = {"blk.0.attn_k.weight": 3, "blk.0.ffn_down.weight": 4, "blk.1.attn_output.weight": 3,
              "blk.1.ffn_gate.weight": 4}


# ggml type of a MAQ part array as gguf_export.maq_arrays gives it (uint8 parts as int8, MAQ3's uint16 hi as int16)
_PART_TYPE_OF_DTYPE = {np.dtype("int8"): T_I8, np.dtype("<i2"): T_I16, np.dtype("<i4"): T_I32,
                       np.dtype("<u4"): T_I32, np.dtype("<f2"): T_F16}

# build_model() keywords of a model mixing every linear type the runtime reads, per tensor (as --target-bpw files
# do): MAQ2, MAQ3, MAQ4, Q8_0, F16 and F32 linears; MAQ2/3/4 Q, K, V share one prepared activation; ffn_down has
# T = 576 (one 512-input quad + a half block, ragged G = 128 group).
MIXED_MODEL = dict(
    dim=128, hidden=576, layers=2, heads=4, kv_heads=2,
    groups={"attn_q": 32, "attn_k": 64, "attn_v": 128, "attn_output": 64, "ffn_gate": 32, "ffn_up": 128,
            "ffn_down": 128},
    bits={"blk.0.attn_k.weight": 3, "blk.0.attn_v.weight": 4, "blk.0.ffn_gate.weight": 4, "blk.0.ffn_up.weight": 3,
          "blk.0.ffn_down.weight": 4, "blk.1.attn_q.weight": 3, "blk.1.attn_k.weight": 4,
          "blk.1.attn_output.weight": 3, "blk.1.ffn_down.weight": 3},
    standard={"blk.0.attn_output.weight": T_Q8_0, "blk.1.ffn_up.weight": T_F16, "blk.1.attn_v.weight": T_F32})


def _q8_0(W: np.ndarray) -> bytes:
    import gguf
    from gguf.quants import quantize

    return quantize(W.astype(np.float32), gguf.GGMLQuantizationType.Q8_0).tobytes()


def base_model(seed: int = 0) -> tuple[list[KV], list[TI]]:
    """(metadata, tensors) of the valid tiny MAQ GGUF the hostile variants derive from."""
    return build_model(seed=seed)


def build_model(*, dim: int = DIM, hidden: int = HIDDEN, layers: int = N_LAYERS, heads: int = N_HEADS,
                kv_heads: int = N_KV, groups: dict | None = None, standard: dict | None = None, tied: bool = False,
                rope_freqs: bool = True, seed: int = 0, bits: dict | None = None) -> tuple[list[KV], list[TI]]:
    """(metadata, tensors) of a tiny llama GGUF: every linear MAQ2 with group sizes ``groups`` {kind: G}
    (default: LINEARS' 32/64/128 mix) except ``standard`` {tensor name: ggml type F32/F16/Q8_0} and the MAQ3 / MAQ4
    linears ``bits`` {tensor name: 3 or 4} (default HI_LINEARS); Q8_0 embedding, F32 norms, F32 output head unless
    ``tied``. head_dim = dim / heads; rope over the whole head."""
    from maq.converter import gguf_export as ge
    from maq.runtime import format as fmt

    rng = np.random.default_rng(seed)
    tokens, types, merges = _vocab()
    head_dim = dim // heads
    groups = {k: G for k, (_, _, G) in LINEARS.items()} if groups is None else groups
    standard = {Q8_LINEAR: T_Q8_0} if standard is None else standard
    bits = HI_LINEARS if bits is None else bits
    shapes = {"attn_q": (heads * head_dim, dim), "attn_k": (kv_heads * head_dim, dim),
              "attn_v": (kv_heads * head_dim, dim), "attn_output": (dim, heads * head_dim),
              "ffn_gate": (hidden, dim), "ffn_up": (hidden, dim), "ffn_down": (dim, hidden)}
    kvs = [
        KV("general.architecture", STR, "llama"),
        KV("general.name", STR, "hostile-tiny"),
        KV("general.alignment", U32, 32),
        KV("llama.block_count", U32, layers),
        KV("llama.context_length", U32, CTX),
        KV("llama.embedding_length", U32, dim),
        KV("llama.feed_forward_length", U32, hidden),
        KV("llama.attention.head_count", U32, heads),
        KV("llama.attention.head_count_kv", U32, kv_heads),
        KV("llama.rope.freq_base", F32, 10000.0),
        KV("llama.rope.dimension_count", U32, head_dim),
        KV("llama.attention.layer_norm_rms_epsilon", F32, 1e-5),
        KV("llama.vocab_size", U32, VOCAB),
        KV(fmt.KEY_VERSION, U32, fmt.FORMAT_VERSION_PLAIN),
        KV("tokenizer.ggml.model", STR, "gpt2"),
        KV("tokenizer.ggml.pre", STR, "gpt2"),
        KV("tokenizer.ggml.tokens", ARR, tokens, STR),
        KV("tokenizer.ggml.token_type", ARR, types, I32),
        KV("tokenizer.ggml.merges", ARR, merges, STR),
        KV("tokenizer.ggml.bos_token_id", U32, 1),
        KV("tokenizer.ggml.eos_token_id", U32, 2),
        KV("tokenizer.ggml.add_bos_token", BOOL, False),
        KV("tokenizer.chat_template", STR, CHAT_TEMPLATE),
    ]
    f32 = lambda a: np.ascontiguousarray(a, dtype="<f4").tobytes()  # noqa: E731
    tensors = [TI("token_embd.weight", [dim, VOCAB], T_Q8_0, _q8_0(rng.standard_normal((VOCAB, dim))))]
    if rope_freqs:
        tensors.append(TI("rope_freqs.weight", [head_dim // 2], T_F32, f32(1.0 + 0.05 * np.arange(head_dim // 2))))
    for layer in range(layers):
        b = f"blk.{layer}."
        tensors.append(TI(b + "attn_norm.weight", [dim], T_F32, f32(1 + 0.1 * rng.standard_normal(dim))))
        tensors.append(TI(b + "ffn_norm.weight", [dim], T_F32, f32(1 + 0.1 * rng.standard_normal(dim))))
        for kind, (P, T) in shapes.items():
            name = b + kind + ".weight"
            W = (rng.standard_normal((P, T)) / np.sqrt(T)).astype(np.float32)
            gt = standard.get(name)
            if gt == T_Q8_0:
                tensors.append(TI(name, [T, P], T_Q8_0, _q8_0(W)))
                continue
            if gt in (T_F16, T_F32):
                tensors.append(TI(name, [T, P], gt, W.astype("<f2" if gt == T_F16 else "<f4").tobytes()))
                continue
            G = groups[kind]
            nb = bits.get(name, 2)
            if nb == 2:
                mt = fmt.quantize_rtn(W, salient=rng.random((P, T // 16)) < 0.1, G=G)
            else:
                mt = fmt.quantize_rtn(W, G=G, bits=nb)
            # metadata and parts as the converter writes them (gguf_export)
            kvs += [KV(key, {"str": STR, "u32": U32}[kind_], value)
                    for key, (value, kind_) in ge.maq_tensor_metadata(name, G, nb).items()]
            for part, arr in ge.maq_arrays(name, mt):
                tensors.append(TI(part, [arr.shape[1], arr.shape[0]], _PART_TYPE_OF_DTYPE[arr.dtype], arr.tobytes()))
    tensors.append(TI("output_norm.weight", [dim], T_F32, f32(1 + 0.1 * rng.standard_normal(dim))))
    if not tied:
        tensors.append(TI("output.weight", [dim, VOCAB], T_F32, f32(rng.standard_normal((VOCAB, dim)) / 8)))
    return kvs, tensors


# --------------------------------------------------------------------------- the check a variant must pass
PROMPT = "the cat"


def check(path: str, selftest: bool = False) -> dict:
    """Load ``path`` with maq.Llama and run a completion (all prompt logits + 2 decode steps).

    {"status": "ok"} / {"status": "error", "etype", "msg"} for a MAQError / {"status": "exception", "msg": traceback}
    for anything else."""
    import traceback

    from maq import MAQError
    from maq.runtime.api import Llama

    try:
        if selftest:                  # misbehaviours the test harness itself must catch
            _selftest(os.path.basename(path))
        llm = Llama(path, n_ctx=16, n_threads=2, n_batch=4, seed=0, verbose=False)
        res = llm.create_completion(PROMPT, max_tokens=2, temperature=0.8, top_k=0, seed=1, echo=True, logprobs=2)
        assert res["usage"]["prompt_tokens"] >= 1, res
        out = {"status": "ok", "tokens": res["usage"]["completion_tokens"]}
        del llm
        return out
    except MAQError as exc:
        return {"status": "error", "etype": type(exc).__name__, "msg": str(exc)}
    except BaseException:  # noqa: BLE001 - the point is to report anything else
        return {"status": "exception", "msg": traceback.format_exc()}


AS_LIMIT = 2 << 30     # address-space limit of a worker (bytes, on top of what it had after imports)


def worker() -> None:
    """stdin: one path per line; stdout: one JSON answer per line (with the worker's peak RSS in KiB)."""
    import logging
    import resource

    logging.disable(logging.WARNING)
    import maq.runtime.api  # noqa: F401 - import before the limit is set
    import maq.runtime.kernels  # noqa: F401
    import tokenizers  # noqa: F401

    with open("/proc/self/status") as f:
        vm = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmSize:"))
    limit = vm + AS_LIMIT
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    out = sys.stdout
    selftest = os.environ.get("MAQ_HOSTILE_SELFTEST") == "1"
    out.write(json.dumps({"status": "ready"}) + "\n")      # imports done: per-file timeouts start now
    out.flush()
    for line in sys.stdin:
        path = line.strip()
        if not path:
            continue
        res = check(path, selftest)
        res["maxrss_kb"] = _vm_hwm_kb()
        out.write(json.dumps(res) + "\n")
        out.flush()


def _vm_hwm_kb() -> int:
    """Peak RSS of this process image (VmHWM; unlike ru_maxrss it does not inherit the parent's peak across
    fork + exec)."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def _selftest(name: str) -> None:
    import signal
    import time

    if name.startswith("segv"):
        os.kill(os.getpid(), signal.SIGSEGV)
    elif name.startswith("abort"):
        os.abort()
    elif name.startswith("hang"):
        time.sleep(3600)
    elif name.startswith("alloc"):
        np.ones(4 << 30, dtype=np.uint8)      # 4 GiB: over the address-space limit -> MemoryError
    elif name.startswith("rss"):
        globals().setdefault("_hog", []).append(np.ones(320 << 20, dtype=np.uint8))   # 320 MB resident (bound: 256 MB)


# --------------------------------------------------------------------------- variants
@dataclasses.dataclass
class Variant:
    id: str
    data: bytes
    expect: tuple[str, ...] = ()    # if it fails, the message must contain one of these (besides the path)
    must_fail: bool = False         # a loader that accepts it is wrong
    must_load: bool = False         # a valid file: refusing it is wrong


def _kv_index(kvs: list[KV], key: str) -> int:
    return next(i for i, kv in enumerate(kvs) if kv.key == key)


def _ti_index(tensors: list[TI], name: str) -> int:
    return next(i for i, t in enumerate(tensors) if t.name == name)


def _patch(data: bytes, at: int, new: bytes) -> bytes:
    return data[:at] + new + data[at + len(new):]


# wrong-typed replacements for a metadata value: (label, vt, value, et)
WRONG_VALUES = [
    ("u8_0", U8, 0, None), ("i8_-1", I8, -1, None), ("u16_7", U16, 7, None), ("i32_-5", I32, -5, None),
    ("u32_0", U32, 0, None), ("u32_max", U32, 2**32 - 1, None), ("u64_huge", U64, 2**63 + 5, None),
    ("i64_min", I64, -2**63, None), ("f32_nan", F32, float("nan"), None), ("f32_1.5", F32, 1.5, None),
    ("f64_inf", F64, float("inf"), None), ("bool_true", BOOL, True, None), ("str_x", STR, "x", None),
    ("str_empty", STR, "", None), ("str_badutf8", STR, b"\xff\xfe", None), ("arr_u32", ARR, [1, 2, 3], U32),
    ("arr_empty_f32", ARR, [], F32), ("arr_str", ARR, ["a", "b"], STR), ("arr_arr", ARR, [(U8, [1])], ARR),
]

HUGE_DIMS = [0, 1, 3, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1]


def variants(seed: int = 0, n_random: int = 300) -> Iterator[Variant]:
    """Every hostile variant of the base model (deterministic for a seed)."""
    from maq.runtime import format as fmt

    rng = random.Random(seed)
    kvs, tensors = base_model()
    base, spans = serialize(kvs, tensors)
    yield Variant("base", base, must_load=True)

    def ser(k=None, t=None, **kw) -> bytes:
        return serialize(kvs if k is None else k, tensors if t is None else t, **kw)[0]

    # ---- header (test-gguf: HEADER_BAD_MAGIC, BAD_VERSION_0/1/FUTURE, BAD_N_TENSORS, BAD_N_KV, EMPTY)
    for m in (b"FUGG", b"GGUF"[::-1], b"\0\0\0\0", b"GGML", b"GGJT"):
        yield Variant(f"magic/{m!r}", ser(magic=m), ("magic",), True)
    for v in (0, 1, 4, 0xFFFF, 2**31, 2**32 - 1, 0x03000000):
        yield Variant(f"version/{v}", ser(version=v), ("version",), True)
    for n in (0, len(tensors) - 1, len(tensors) + 1, 2**24 + 1, 2**32, 2**63, 2**64 - 1):
        yield Variant(f"n_tensors/{n}", ser(n_tensors=n), (), n != len(tensors))
    for n in (0, len(kvs) - 1, len(kvs) + 1, 2**24 + 1, 2**32, 2**63, 2**64 - 1):
        yield Variant(f"n_kv/{n}", ser(n_kv=n), (), True)
    yield Variant("empty-file", b"", (), True)
    yield Variant("header-only", ser(k=[], t=[]), (), True)
    for n in (4, 8, 16, 23, 24):
        yield Variant(f"tiny-file/{n}", base[:n], (), True)

    # ---- metadata (KV_BAD_KEY_SIZE, KV_EMPTY_KEY, KV_BAD_TYPE, KV_DUPLICATE_KEY, KV_BAD_ALIGN, KV_WRONG_TYPE_ALIGN)
    for i, kv in enumerate(kvs):
        key = kv.key
        a, _ = spans[f"kv{i}.keylen"]
        for n in (2**64 - 1, 2**63, len(base), len(_b(key)) + 1, max(len(_b(key)) - 1, 0)):
            yield Variant(f"kv/{key}/keylen={n}", _patch(base, a, struct.pack("<Q", n)), (), False)
        a, _ = spans[f"kv{i}.type"]
        for vt in (13, 255, 2**32 - 1):
            yield Variant(f"kv/{key}/type={vt}", _patch(base, a, struct.pack("<I", vt)), (key, "type"), True)
        if kv.vt == ARR:
            a, _ = spans[f"kv{i}.etype"]
            for et in (13, 2**32 - 1):
                yield Variant(f"kv/{key}/etype={et}", _patch(base, a, struct.pack("<I", et)), (key, "type"), True)
            a, _ = spans[f"kv{i}.count"]
            for n in (len(kv.value) + 1, len(kv.value) - 1, 2**40, 2**64 - 1):
                if n >= 0:
                    yield Variant(f"kv/{key}/count={n}", _patch(base, a, struct.pack("<Q", n)), (), False)
        if kv.vt == STR:
            a, _ = spans[f"kv{i}.value"]
            for n in (2**64 - 1, len(base), len(_b(kv.value)) + 3):
                yield Variant(f"kv/{key}/strlen={n}", _patch(base, a, struct.pack("<Q", n)), (), False)
        k2 = list(kvs)
        k2[i] = KV("", kv.vt, kv.value, kv.et)
        yield Variant(f"kv/{key}/empty-key", ser(k=k2), ("empty", "key", key), True)
        k2[i] = KV(b"\xff" + _b(key), kv.vt, kv.value, kv.et)
        yield Variant(f"kv/{key}/badutf8-key", ser(k=k2), ("key",), False)
        yield Variant(f"kv/{key}/duplicate", ser(k=kvs[:i + 1] + [kv] + kvs[i + 1:]), (key,), True)
        for label, vt, value, et in WRONG_VALUES:
            if vt == kv.vt and et == kv.et:
                continue
            k2 = list(kvs)
            k2[i] = KV(key, vt, value, et)
            yield Variant(f"kv/{key}/wrong-type={label}", ser(k=k2), (key,), False)
        yield Variant(f"kv/{key}/dropped", ser(k=kvs[:i] + kvs[i + 1:]), (key, "missing"), False)
    # nested arrays, deep
    deep = struct.pack("<IQ", ARR, 1) * 5000 + struct.pack("<IQ", U8, 1) + b"\x01"
    yield Variant("kv/nested-array-5000", ser(k=kvs + [KV("x.deep", ARR, None, raw=deep)]), ("x.deep",), False)
    yield Variant("kv/nested-array-1", ser(k=kvs + [KV("x.nest", ARR, [(U32, [1, 2])], ARR)]), ("x.nest",), False)
    # names with control characters in messages (must stay one line)
    for key in ("bad\nkey", "tab\tkey", "\x1b[31mred", " "):
        yield Variant(f"kv/{key!r}/bad-type", ser(k=kvs + [KV(key, 13, None, raw=b"")]), ("type",), True)
        yield Variant(f"kv/{key!r}/duplicate", ser(k=kvs + [KV(key, U8, 1), KV(key, U8, 1)]), ("twice",), True)
        yield Variant(f"ti/{key!r}/bad-type", ser(t=tensors + [TI(key, [4], 1000, bytes(16))]), ("type",), True)
    ia = _kv_index(kvs, "general.alignment")
    for al in (0, 3, 13, 48, 2**31, 2**32 - 1):       # declared alignment not a power of two / absurd
        k2 = list(kvs)
        k2[ia] = KV("general.alignment", U32, al)
        yield Variant(f"align/bad={al}", ser(k=k2), ("general.alignment",), True)
    for label, vt, value in (("i32", I32, 32), ("u64", U64, 32), ("str", STR, "32"), ("f32", F32, 32.0),
                             ("bool", BOOL, True), ("u16", U16, 32)):
        k2 = list(kvs)
        k2[ia] = KV("general.alignment", vt, value)
        yield Variant(f"align/wrong-type={label}", ser(k=k2), ("general.alignment",), vt != U32)
    for al in (1, 2, 8, 64, 256):                      # custom alignment, consistent (CUSTOM_ALIGN)
        k2 = list(kvs)
        k2[ia] = KV("general.alignment", U32, al)
        yield Variant(f"align/custom={al}", ser(k=k2, alignment=al), ("aligned",), False, must_load=al >= 8)
    for al, da in ((64, 32), (32, 1), (16, 32)):       # data written with another alignment (INCONSISTENT_ALIGN)
        k2 = list(kvs)
        k2[ia] = KV("general.alignment", U32, al)
        yield Variant(f"align/inconsistent={al}/{da}", ser(k=k2, alignment=al, data_alignment=da), (), False)

    # ---- metadata values: huge / zero / inconsistent model dimensions
    for key in ("llama.block_count", "llama.context_length", "llama.embedding_length", "llama.feed_forward_length",
                "llama.attention.head_count", "llama.attention.head_count_kv", "llama.rope.dimension_count",
                "llama.vocab_size", "tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        i = _kv_index(kvs, key)
        for v in HUGE_DIMS + [kvs[i].value + 1, kvs[i].value * 2]:
            k2 = list(kvs)
            k2[i] = KV(key, U64 if v >= 2**32 else U32, v)
            yield Variant(f"dims/{key}={v}", ser(k=k2), (), False)
        for v in (-1, -2**31):
            k2 = list(kvs)
            k2[i] = KV(key, I32, v)
            yield Variant(f"dims/{key}={v}", ser(k=k2), (key,), True)
    for key, vals in (("llama.attention.layer_norm_rms_epsilon", (float("nan"), -1.0, float("inf"), 0.0, 1e30)),
                      ("llama.rope.freq_base", (float("nan"), 0.0, -1.0, float("inf"), 1e-30))):
        i = _kv_index(kvs, key)
        for v in vals:
            k2 = list(kvs)
            k2[i] = KV(key, F32, v)
            yield Variant(f"float/{key}={v}", ser(k=k2), (key,), False)
    for key, vt, v in (("llama.attention.key_length", U32, 8), ("llama.attention.key_length", U32, 0),
                       ("llama.attention.key_length", U32, 2**32 - 1), ("llama.attention.value_length", U32, 8),
                       ("llama.rope.scaling.type", STR, "yarn"), ("llama.rope.scaling.type", STR, "linear"),
                       ("llama.rope.scaling.factor", F32, 0.0), ("llama.rope.scaling.factor", F32, -4.0),
                       ("llama.rope.scaling.factor", F32, float("nan")),
                       ("llama.rope.scaling.type", STR, "llama3"), ("llama.rope.scaling.original_context_length",
                                                                    U32, 0),
                       ("general.architecture", STR, "gpt2"), ("general.architecture", STR, ""),
                       ("tokenizer.ggml.model", STR, "bert"), ("tokenizer.ggml.padding_token_id", U32, 2**31),
                       ("tokenizer.ggml.eot_token_id", I32, -1), ("tokenizer.ggml.eom_token_id", U32, 10**6),
                       ("tokenizer.chat_template", STR, "{% for %}"), ("tokenizer.ggml.add_bos_token", BOOL, True)):
        k2 = [kv for kv in kvs if kv.key != key] + [KV(key, vt, v)]
        if key == "llama.rope.scaling.factor":
            k2.append(KV("llama.rope.scaling.type", STR, "linear"))
        if key == "llama.rope.scaling.original_context_length":
            k2 += [KV("llama.rope.scaling.type", STR, "llama3"), KV("llama.rope.scaling.factor", F32, 8.0)]
        yield Variant(f"meta/{key}={v!r}", ser(k=k2), (key, "llama.rope.dimension_count"), False)
    it = _kv_index(kvs, "tokenizer.ggml.tokens")
    for label, toks in (("dup", ["a"] * VOCAB), ("short", kvs[it].value[:-1]), ("long", kvs[it].value + ["zz"]),
                        ("empty-strings", [""] * VOCAB), ("invalid-utf8", [b"\xff\xfe"] * VOCAB)):
        k2 = list(kvs)
        k2[it] = KV("tokenizer.ggml.tokens", ARR, toks, STR)
        yield Variant(f"tokens/{label}", ser(k=k2), ("tokenizer",), False)
    # SentencePiece ("llama") tokenizer: merges derived from scores
    spm = [kv for kv in kvs if kv.key not in ("tokenizer.ggml.model", "tokenizer.ggml.merges")]
    spm += [KV("tokenizer.ggml.model", STR, "llama")]
    scores = [0.0] * 3 + [-float(i) for i in range(VOCAB - 3)]
    yield Variant("spm/valid", ser(k=spm + [KV("tokenizer.ggml.scores", ARR, scores, F32)]), (), must_load=True)
    for label, sc, et in (("nan", [float("nan")] * VOCAB, F32), ("short", scores[:-1], F32),
                          ("strings", ["x"] * VOCAB, STR), ("missing", None, None)):
        extra = [] if sc is None else [KV("tokenizer.ggml.scores", ARR, sc, et)]
        yield Variant(f"spm/scores-{label}", ser(k=spm + extra), ("tokenizer.ggml.scores",), True)
    giant = list(kvs[it].value)
    giant[50] = "a" * 300_000                  # one huge token: deriving merges must not cost len^2
    yield Variant("spm/giant-token", ser(k=[kv if kv.key != "tokenizer.ggml.tokens" else
                                             KV(kv.key, ARR, giant, STR) for kv in spm] +
                                            [KV("tokenizer.ggml.scores", ARR, scores, F32)]), (), must_load=True)
    bad_bytes = list(kvs[it].value)
    bad_bytes[10:14] = ["<0xZZ>", "<0x>", "<0x0G>", "<0xff>"]
    btypes = list(kvs[_kv_index(kvs, "tokenizer.ggml.token_type")].value)
    btypes[10:14] = [6, 6, 6, 6]
    yield Variant("spm/bad-byte-tokens", ser(k=[kv for kv in spm if kv.key not in (
        "tokenizer.ggml.tokens", "tokenizer.ggml.token_type")] + [
        KV("tokenizer.ggml.tokens", ARR, bad_bytes, STR), KV("tokenizer.ggml.token_type", ARR, btypes, I32),
        KV("tokenizer.ggml.scores", ARR, scores, F32)]), (), must_load=True)
    im = _kv_index(kvs, "tokenizer.ggml.merges")
    for label, merges in (("no-space", ["ab"]), ("unknown", ["q q"]), ("empty", [])):
        k2 = list(kvs)
        k2[im] = KV("tokenizer.ggml.merges", ARR, merges, STR)
        yield Variant(f"merges/{label}", ser(k=k2), ("merges", "tokenizer"), False)

    # ---- tensor infos (TENSORS_BAD_NAME_SIZE, BAD_N_DIMS, BAD_SHAPE, ZERO_DIM, NE_TOO_BIG, NBYTES_TOO_BIG,
    #      NBYTES_PAD_WRAP, BAD_TYPE, BAD_OFFSET, DUPLICATE_NAME, BAD_ALIGN)
    names = [t.name for t in tensors]
    full = {"token_embd.weight", "rope_freqs.weight", "blk.0.attn_norm.weight", "blk.0.attn_q.weight",
            "blk.0.attn_q.weight.bitmap", "blk.0.attn_q.weight.scales", "blk.0.attn_q.weight.rowscale",
            "blk.1.ffn_down.weight", "blk.1.ffn_down.weight.bitmap", Q8_LINEAR, "output.weight", "output_norm.weight"}
    for i, t in enumerate(tensors):
        name = t.name
        a, _ = spans[f"ti{i}.namelen"]
        for n in (2**64 - 1, len(base), len(name) + 1):
            yield Variant(f"ti/{name}/namelen={n}", _patch(base, a, struct.pack("<Q", n)), (), False)
        a, _ = spans[f"ti{i}.ndims"]
        for nd in ((0, 5, 2**32 - 1) if name in full else (5,)):
            yield Variant(f"ti/{name}/ndims={nd}", _patch(base, a, struct.pack("<I", nd)), (), True)
        a, _ = spans[f"ti{i}.type"]
        for gt in ((4, 5, 31, 42, 1000, 2**32 - 1) if name in full else (42,)):
            yield Variant(f"ti/{name}/type={gt}", _patch(base, a, struct.pack("<I", gt)), (name,), True)
        a, _ = spans[f"ti{i}.offset"]
        off = struct.unpack_from("<Q", base, a)[0]
        for o in ((2**64 - 1, 2**63, off + 1, off + 32, off + 4096, len(base)) if name in full else (2**64 - 1, off + 1)):
            yield Variant(f"ti/{name}/offset={o}", _patch(base, a, struct.pack("<Q", o % 2**64)), (name,), True)
        a, _ = spans[f"ti{i}.ne0"]
        dims = [0, 2**64 - 1, 2**63, 4 * (2**31 - 1), 2**32 + t.ne[0]] + ([1, 2**31, t.ne[0] + 16] if name in full
                                                                           else [])
        for d in dims:
            yield Variant(f"ti/{name}/ne0={d}", _patch(base, a, struct.pack("<Q", d)), (name,), d != t.ne[0])
        if name not in full:
            continue
        t2 = list(tensors)
        t2[i] = TI(name, t.ne + [1], t.gtype, t.data)
        yield Variant(f"ti/{name}/extra-dim", ser(t=t2), (name,), False)
        t2[i] = TI(name, [0] + t.ne[1:], t.gtype, t.data)
        yield Variant(f"ti/{name}/zero-dim", ser(t=t2), (name,), True)
        t2[i] = TI(name, [4, 2**30 - 1, 2**30 + 1], T_F32, t.data)           # nbytes = 2^64 - 16: pad wrap
        yield Variant(f"ti/{name}/pad-wrap", ser(t=t2), (name,), True)
        t2[i] = TI(name, [2**61, 2**61], T_F32, t.data)                        # nbytes overflows 64 bits
        yield Variant(f"ti/{name}/nbytes-too-big", ser(t=t2), (name,), True)
        t2[i] = TI(name, [2**31 - 1] * 4, T_I8, t.data)
        yield Variant(f"ti/{name}/ne-too-big", ser(t=t2), (name,), True)
        t2[i] = TI("", t.ne, t.gtype, t.data)
        yield Variant(f"ti/{name}/empty-name", ser(t=t2), (), True)
        t2[i] = TI(name + "_with_a_very_long_name_which_is_longer_than_what_is_allowed_for_ggml_tensors" * 2,
                   t.ne, t.gtype, t.data)
        yield Variant(f"ti/{name}/long-name", ser(t=t2), (), True)
        t2[i] = TI(b"\xc3" + _b(name), t.ne, t.gtype, t.data)
        yield Variant(f"ti/{name}/badutf8-name", ser(t=t2), (), True)
        other = names[(i + 1) % len(names)]
        t2[i] = TI(other, t.ne, t.gtype, t.data)
        yield Variant(f"ti/{name}/duplicate-name", ser(t=t2), (other,), True)
        t2 = tensors[:i + 1] + [TI(name, t.ne, t.gtype, t.data)] + tensors[i + 1:]
        yield Variant(f"ti/{name}/duplicate-entry", ser(t=t2), (name,), True)
        t2 = list(tensors)
        t2[i] = TI(name, t.ne, t.gtype, t.data, offset=0)                        # overlaps tensor 0
        yield Variant(f"ti/{name}/offset-overlap", ser(t=t2), (name,), False)
        yield Variant(f"ti/{name}/dropped", ser(t=tensors[:i] + tensors[i + 1:]), (name, "missing"), name !=
                      "output.weight" and name != "rope_freqs.weight")
    # a linear stored in every ggml type (consistent sizes, random bytes): dequantized at load, or refused
    from gguf.constants import GGML_QUANT_SIZES

    iq = _ti_index(tensors, Q8_LINEAR)
    T8, P8 = tensors[iq].ne
    drng = np.random.default_rng(seed + 1)
    for qt, (bs, ts) in sorted(GGML_QUANT_SIZES.items(), key=lambda x: int(x[0])):
        if T8 % bs:
            continue
        data = drng.integers(0, 256, P8 * (T8 // bs) * ts, dtype=np.uint8).tobytes()
        t2 = list(tensors)
        t2[iq] = TI(Q8_LINEAR, [T8, P8], int(qt), data)
        yield Variant(f"ti/{Q8_LINEAR}/as-{qt.name}", ser(t=t2), (Q8_LINEAR,), False)
    # DATA_MEM_SIZE_OVERFLOW: two huge I8 tensors
    big = [TI("huge.a", [0x7FFFFFFFFFFFFFC0], T_I8, b""), TI("huge.b", [0x7FFFFFFFFFFFFFC0], T_I8, b"")]
    yield Variant("data/mem-size-overflow", ser(t=tensors + big), ("huge.",), True)

    # ---- MAQ parts disagreeing with each other / with the metadata (MAQ2, MAQ3 and MAQ4 tensors)
    maq_names = ("blk.0.attn_q.weight", "blk.0.ffn_down.weight", "blk.1.attn_v.weight", "blk.1.ffn_down.weight",
                 "blk.0.attn_k.weight", "blk.1.ffn_gate.weight")
    for name in maq_names:
        P, T, G = LINEARS[name.split(".")[2]]
        nb = HI_LINEARS.get(name, 2)
        idx = {s: _ti_index(tensors, name + s) for s in fmt.part_suffixes(nb)}
        for s, i in idx.items():
            t = tensors[i]
            part = s or ".words"
            for label, ne in (("T+1", [t.ne[0] + 1, t.ne[1]]), ("T-1", [t.ne[0] - 1, t.ne[1]]),
                              ("P+1", [t.ne[0], t.ne[1] + 1]), ("P-1", [t.ne[0], t.ne[1] - 1]),
                              ("swap", [t.ne[1], t.ne[0]]), ("flat", [t.ne[0] * t.ne[1]])):
                if min(ne) <= 0:
                    continue
                nbytes = -(-int(np.prod(ne)) * len(t.data) // (t.ne[0] * t.ne[1]))
                data = (t.data * 2)[:nbytes]
                t2 = list(tensors)
                t2[i] = TI(t.name, ne, t.gtype, data)
                yield Variant(f"maq/{name}{part}/{label}", ser(t=t2), (t.name, name), True)
            for gt in (T_F32, T_F16, T_I8, T_I16, T_I32, T_Q8_0):
                if gt == t.gtype:
                    continue
                t2 = list(tensors)
                t2[i] = TI(t.name, t.ne, gt, t.data)
                yield Variant(f"maq/{name}{part}/type={gt}", ser(t=t2), (t.name, name), True)
            yield Variant(f"maq/{name}{part}/missing", ser(t=tensors[:i] + tensors[i + 1:]), (t.name,), True)
        if nb > 2:   # the .hi part re-declared with the other member's type and the matching byte size
            i = idx[fmt.PART_HI]
            t = tensors[i]
            hi = np.frombuffer(t.data, "<u2" if nb == 3 else "<i4").reshape(t.ne[1], t.ne[0])
            other = hi.astype("<i4") if nb == 3 else hi.astype("<u2")
            t2 = list(tensors)
            t2[i] = TI(t.name, t.ne, T_I32 if nb == 3 else T_I16, other.tobytes())
            yield Variant(f"maq/{name}.hi/as-maq{7 - nb}-hi", ser(t=t2), (t.name,), True)
        # a part of the other members next to the right ones (MAQ2 + .hi, MAQ3/4 + .bitmap)
        stray = fmt.PART_HI if nb == 2 else fmt.PART_BITMAP
        sshape = (P, T // 16) if nb == 2 else fmt.Layout(T, P, G).bitmap_shape
        sdata = np.zeros(sshape, "<i4" if nb == 2 else np.uint8).tobytes()
        ins = max(idx.values()) + 1
        t2 = tensors[:ins] + [TI(name + stray, [sshape[1], sshape[0]], T_I32 if nb == 2 else T_I8, sdata)] + \
            tensors[ins:]
        yield Variant(f"maq/{name}/stray{stray}", ser(t=t2), (name + stray,), True)
        ig = _kv_index(kvs, fmt.key_group_size(name))
        for g in (0, 16, 48, 96, 256, 2**32 - 1) + tuple(x for x in fmt.GROUP_SIZES if x != G):
            k2 = list(kvs)
            k2[ig] = KV(fmt.key_group_size(name), U32, g)
            yield Variant(f"maq/{name}/group_size={g}", ser(k=k2), (name,), -(-T // g if g else 0) != -(-T // G))
        yield Variant(f"maq/{name}/group_size-missing", ser(k=kvs[:ig] + kvs[ig + 1:]), (name,),
                      -(-T // fmt.DEFAULT_GROUP) != -(-T // G))
        itype = _kv_index(kvs, fmt.key_tensor_type(name))
        yield Variant(f"maq/{name}/type-key-missing", ser(k=kvs[:itype] + kvs[itype + 1:]), (name,), True)
        others = [fmt.TYPE_OF_BITS[b] for b in fmt.BITS if b != nb]   # the parts of one member, the key of another
        for v in others + ["", fmt.TYPE_OF_BITS[nb].upper(), "q8_0", "maq5"]:
            k2 = list(kvs)
            k2[itype] = KV(fmt.key_tensor_type(name), STR, v)
            yield Variant(f"maq/{name}/type-key={v!r}", ser(k=k2), (name,), True)
        k2 = list(kvs)
        k2[itype] = KV(fmt.key_tensor_type(name), U32, nb)
        yield Variant(f"maq/{name}/type-key-u32", ser(k=k2), (name,), True)
        if nb == 2:
            isc = _kv_index(kvs, fmt.key_salient_coding(name))
            for v in ("mean8", ""):
                k2 = list(kvs)
                k2[isc] = KV(fmt.key_salient_coding(name), STR, v)
                yield Variant(f"maq/{name}/salient_coding={v!r}", ser(k=k2), (name,), True)
            # bitmap padding bits (T/16 words; the last byte's bits past the last word)
            ib = idx[fmt.PART_BITMAP]
            nbytes_row = tensors[ib].ne[0]
            pad = nbytes_row * 8 - T // 16
            if pad:
                bm = bytearray(tensors[ib].data)
                for row in (0, P - 1):
                    bm[row * nbytes_row + nbytes_row - 1] |= 0x80
                t2 = list(tensors)
                t2[ib] = TI(tensors[ib].name, tensors[ib].ne, T_I8, bytes(bm))
                yield Variant(f"maq/{name}/bitmap-padding", ser(t=t2), ("padding",), True)
        else:   # every hi bit set: the largest codes (valid)
            i = idx[fmt.PART_HI]
            t2 = list(tensors)
            t2[i] = TI(tensors[i].name, tensors[i].ne, tensors[i].gtype, b"\xff" * len(tensors[i].data))
            yield Variant(f"maq/{name}/hi-all-ones", ser(t=t2), (), False, must_load=True)
        ir = idx[fmt.PART_ROWSCALE]
        for label, bits16 in (("inf", 0x7C00), ("nan", 0x7E00), ("-inf", 0xFC00)):
            rs = bytearray(tensors[ir].data)
            rs[2:4] = struct.pack("<H", bits16)
            t2 = list(tensors)
            t2[ir] = TI(tensors[ir].name, tensors[ir].ne, T_F16, bytes(rs))
            yield Variant(f"maq/{name}/rowscale-{label}", ser(t=t2), (name,), True)
    # a MAQ type key on a tensor that has no parts
    for v in (fmt.TYPE_MAQ2, fmt.TYPE_MAQ3, fmt.TYPE_MAQ4):
        k2 = kvs + [KV(fmt.key_tensor_type("output.weight"), STR, v)]
        yield Variant(f"maq/type-key-on-output={v}", ser(k=k2), ("output.weight",), True)
    # a whole MAQ tensor's parts replaced by another tensor's parts of a different shape (same member)
    for src, dst in (("blk.1.ffn_down.weight", "blk.0.attn_q.weight"),      # MAQ2 [64, 96] -> [64, 64]
                     ("blk.0.ffn_down.weight", "blk.1.ffn_gate.weight"),    # MAQ4 [64, 96] -> [96, 64]
                     ("blk.0.attn_k.weight", "blk.1.attn_output.weight")):  # MAQ3 [32, 64] -> [64, 64]
        t2 = list(tensors)
        for s in fmt.part_suffixes(HI_LINEARS.get(src, 2)):
            t = tensors[_ti_index(tensors, src + s)]
            t2[_ti_index(tensors, dst + s)] = TI(dst + s, t.ne, t.gtype, t.data)
        yield Variant(f"maq/parts-of-another-shape/{src}->{dst}", ser(t=t2), (dst,), True)

    # ---- weight values that overflow: NaN / inf in float weights, Q8_0 block scales, norms
    def with_values(name: str, fn) -> bytes:
        i = _ti_index(tensors, name)
        t = tensors[i]
        t2 = list(tensors)
        t2[i] = TI(t.name, t.ne, t.gtype, fn(bytearray(t.data)))
        return ser(t=t2)

    for label, f32 in (("nan", b"\x00\x00\xc0\x7f"), ("inf", b"\x00\x00\x80\x7f"), ("huge", b"\xff\xff\x7f\x7f")):
        for name in ("output.weight", "blk.0.attn_norm.weight", "output_norm.weight", "rope_freqs.weight"):
            yield Variant(f"values/{name}/{label}", with_values(name, lambda d: bytes(d[:8] + f32 + d[12:])),
                          (name, "non-finite"), False)
    for label, f16 in (("nan", b"\x00\x7e"), ("inf", b"\x00\x7c"), ("max", b"\xff\x7b")):
        for name in ("token_embd.weight", Q8_LINEAR):
            yield Variant(f"values/{name}/d-{label}", with_values(name, lambda d: bytes(f16 * 16 + d[32:])),
                          (name, "non-finite"), False)

    # ---- data: NOT_ENOUGH_DATA, truncation at and around every section boundary, trailing bytes
    bounds = {0, len(base)} | {spans[k][0] for k in spans} | {spans[k][1] for k in spans}
    sections = sorted(b for b in bounds if b <= len(base))
    major = sorted({spans[k][e] for k in spans for e in (0, 1)
                    if k.startswith(("kv", "ti", "data")) and "." not in k} | {spans["header"][1], spans["data"][0]})
    cut_at = set()
    for b in major:
        cut_at |= {b - 1, b, b + 1}
    for b in sections:
        cut_at.add(b)
    for c in sorted(x for x in cut_at if 0 <= x < len(base)):
        yield Variant(f"truncate/{c}", base[:c], (), c < spans["data"][1] - 32 and c != len(base))
    for extra in (1, 31, 4096):
        yield Variant(f"trailing/{extra}", base + bytes(extra), (), False, must_load=True)

    # ---- random byte flips / overwrites (half of them in the header, where they matter most)
    hdr_end = spans["header"][1]
    for k in range(n_random):
        d = bytearray(base)
        n = rng.choice((1, 1, 2, 4, 8, 32))
        for _ in range(n):
            pos = rng.randrange(hdr_end) if k % 2 == 0 else rng.randrange(len(d))
            if rng.random() < 0.5:
                d[pos] ^= 1 << rng.randrange(8)
            else:
                d[pos] = rng.choice((0, 0xFF, 0x7F, 0x80, rng.randrange(256)))
        yield Variant(f"random/{seed}/{k}/{n}", bytes(d))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker()
    elif len(sys.argv) > 1 and sys.argv[1] == "--write-base":
        data, _ = serialize(*base_model())
        with open(sys.argv[2], "wb") as f:
            f.write(data)
    else:
        print(sum(1 for _ in variants()), "variants")
