"""Hostile Hugging Face model directories for ``maq convert`` (used by test_hostile_hf.py).

* ``write_base(dir)`` writes a tiny valid Llama directory without torch or transformers: config.json (2 layers,
  width 32, MLP 64, GQA 4/2, vocab 64, untied head), model.safetensors written by ``write_safetensors`` (our own
  writer: it can write any header), a 64-token byte-less BPE tokenizer.json, tokenizer_config.json and a README.md
  with YAML front matter. ``maq.converter.source.open_source`` accepts it.
* ``variants()`` yields ``Variant(name, mutate, needle)``: ``mutate(dir)`` turns a copy of the base into one
  hostile directory, ``needle`` is what the one ``maq: error:`` line must contain (the file, often the key or
  tensor too). The classes: config.json values of the wrong type / null / list / float for an int / out of range
  for every hyper-parameter, a config that is a list, not UTF-8, not JSON or nested 100k deep; rope_scaling
  malformed (string, list, unknown kind, non-numeric or non-positive factors, llama3 low_freq_factor 0);
  safetensors headers (a list, entries without dtype / as strings, bad dtypes and shapes, offsets past the end,
  reversed, overlapping, too few bytes for the shape, the file cut in half, a lying header length); the index
  (bad JSON, no weight_map, a path outside the directory, a missing shard, a tensor in two shards); tokenizer
  files (``[]``, ``{}``, a non-BPE model, ids beyond vocab_size, not UTF-8); README front matter (bad YAML, a
  list); weights (NaN, Inf, 3e38 in F32 and BF16, missing / extra / misshapen tensors, an lm_head of the wrong
  shape).
"""
from __future__ import annotations

import dataclasses
import json
import struct
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

DIM, FF, LAYERS, HEADS, KV_HEADS, VOCAB = 32, 64, 2, 4, 2, 64
HEAD_DIM = DIM // HEADS

BASE_CONFIG = {
    "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": DIM, "intermediate_size": FF,
    "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV_HEADS,
    "vocab_size": VOCAB, "max_position_embeddings": 128, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
    "torch_dtype": "float32",
}
README = "---\nlicense: apache-2.0\nlanguage:\n- en\ntags:\n- tiny\n---\n# tiny\n"


def hf_shapes() -> dict[str, tuple[int, ...]]:
    """HF tensor name -> shape of the base model (torch layout [out, in])."""
    q, kv = HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM
    out = {"model.embed_tokens.weight": (VOCAB, DIM), "model.norm.weight": (DIM,), "lm_head.weight": (VOCAB, DIM)}
    for i in range(LAYERS):
        b = f"model.layers.{i}."
        out.update({b + "input_layernorm.weight": (DIM,), b + "post_attention_layernorm.weight": (DIM,),
                    b + "self_attn.q_proj.weight": (q, DIM), b + "self_attn.k_proj.weight": (kv, DIM),
                    b + "self_attn.v_proj.weight": (kv, DIM), b + "self_attn.o_proj.weight": (DIM, q),
                    b + "mlp.gate_proj.weight": (FF, DIM), b + "mlp.up_proj.weight": (FF, DIM),
                    b + "mlp.down_proj.weight": (DIM, FF)})
    return out


def base_arrays(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {n: (1.0 + 0.1 * rng.standard_normal(s) if len(s) == 1 else 0.05 * rng.standard_normal(s))
            .astype(np.float32) for n, s in hf_shapes().items()}


def write_safetensors(path: Path, arrays: dict[str, np.ndarray], *, header: dict | None = None,
                      header_bytes: bytes | None = None, length: int | None = None, dtype: str = "F32") -> None:
    """A safetensors file of ``arrays`` (stored as dtype F32 or BF16); ``header`` / ``header_bytes`` replace the
    computed JSON header, ``length`` the 8-byte header length."""
    data, entries, off = [], {}, 0
    for name, a in arrays.items():
        if dtype == "BF16":
            b = (np.ascontiguousarray(a, np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            b = np.ascontiguousarray(a, "<f4").tobytes()
        entries[name] = {"dtype": dtype, "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        data.append(b)
        off += len(b)
    hb = header_bytes if header_bytes is not None else json.dumps(header if header is not None else entries).encode()
    path.write_bytes(struct.pack("<Q", len(hb) if length is None else length) + hb + b"".join(data))


def base_header(arrays: dict[str, np.ndarray] | None = None) -> dict:
    """The header write_safetensors computes for ``arrays`` (F32)."""
    out, off = {}, 0
    for name, a in (arrays or base_arrays()).items():
        out[name] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + a.size * 4]}
        off += a.size * 4
    return out


def tokenizer_json() -> dict:
    vocab = {f"t{i}": i for i in range(VOCAB - 3)}
    vocab.update({"<unk>": VOCAB - 3, "<s>": VOCAB - 2, "</s>": VOCAB - 1})
    added = [{"id": VOCAB - 2, "content": "<s>", "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": True}]
    return {"version": "1.0", "added_tokens": added,
            "model": {"type": "BPE", "vocab": vocab, "merges": []}}


def write_base(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "config.json").write_text(json.dumps(BASE_CONFIG))
    write_safetensors(d / "model.safetensors", base_arrays())
    (d / "tokenizer.json").write_text(json.dumps(tokenizer_json()))
    (d / "tokenizer_config.json").write_text(json.dumps({"bos_token": "<s>", "eos_token": "</s>",
                                                         "chat_template": "{{ messages }}"}))
    (d / "README.md").write_text(README)
    return d


# --------------------------------------------------------------------------- variants
@dataclasses.dataclass
class Variant:
    name: str
    mutate: Callable[[Path], None]
    needle: str          # the error line must contain this (a file name, with the key or tensor where useful)


def _config(**changes) -> Callable[[Path], None]:
    def f(d: Path) -> None:
        cfg = dict(BASE_CONFIG)
        for k, v in changes.items():
            if v is _DROP:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        (d / "config.json").write_text(json.dumps(cfg))
    return f


_DROP = object()


def _write(name: str, content: bytes | str) -> Callable[[Path], None]:
    def f(d: Path) -> None:
        (d / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return f


def _header(edit: Callable[[dict], None]) -> Callable[[Path], None]:
    def f(d: Path) -> None:
        h = base_header()
        edit(h)
        write_safetensors(d / "model.safetensors", base_arrays(), header=h)
    return f


def _arrays(edit: Callable[[dict], None], dtype: str = "F32") -> Callable[[Path], None]:
    def f(d: Path) -> None:
        a = base_arrays()
        edit(a)
        write_safetensors(d / "model.safetensors", a, dtype=dtype)
    return f


def _truncate(frac: float) -> Callable[[Path], None]:
    def f(d: Path) -> None:
        p = d / "model.safetensors"
        b = p.read_bytes()
        p.write_bytes(b[:int(len(b) * frac)])
    return f


def _sharded(index: dict | str | None, shards: dict[str, list[str]] | None = None) -> Callable[[Path], None]:
    """Split the weights into shards {file: [tensors]} (default: two halves) and write ``index`` as the index."""
    def f(d: Path) -> None:
        a = base_arrays()
        names = list(a)
        sh = shards or {"model-00001-of-00002.safetensors": names[:10],
                        "model-00002-of-00002.safetensors": names[10:]}
        (d / "model.safetensors").unlink()
        for fname, ns in sh.items():
            write_safetensors(d / fname, {n: a[n] for n in ns})
        idx = index if index is not None else {"weight_map": {n: fn for fn, ns in sh.items() for n in ns}}
        (d / "model.safetensors.index.json").write_text(idx if isinstance(idx, str) else json.dumps(idx))
    return f


def variants() -> Iterator[Variant]:
    C = "config.json"
    int_keys = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
    bad_ints = {"str": "abc", "null": None, "list": [64], "float": 128.7, "zero": 0, "neg": -1, "bool": True,
                "huge": 2**40, "1e9": 1e9}
    for k in int_keys:
        for tag, v in bad_ints.items():
            yield Variant(f"config-{k}-{tag}", _config(**{k: v}), f"{C}: " + ("missing key" if v is None else k))
    for tag, v in {"zero": 0, "str": "x", "float": 1.5, "not-divisor": 3, "list": [2]}.items():
        yield Variant(f"config-kv-heads-{tag}", _config(num_key_value_heads=v), C)
    for tag, v in {"zero": 0, "odd": 7, "str": "x", "neg": -8}.items():
        yield Variant(f"config-head-dim-{tag}", _config(head_dim=v), C)
    yield Variant("config-heads-zero-no-head-dim", _config(num_attention_heads=0, head_dim=_DROP),
                  f"{C}: num_attention_heads")
    for tag, v in {"zero": 0, "neg": -5, "2^40": 2**40, "str": "x", "list": [128]}.items():
        yield Variant(f"config-max-pos-{tag}", _config(max_position_embeddings=v), "max_position_embeddings")
    for key in ("rope_theta", "rms_norm_eps"):
        for tag, v in {"str": "x", "zero": 0, "neg": -1.0, "list": [1.0], "bool": False}.items():
            yield Variant(f"config-{key}-{tag}", _config(**{key: v}), f"{C}: {key}")
    yield Variant("config-rope-theta-nan", _write(C, json.dumps(BASE_CONFIG).replace('"rope_theta": 10000.0',
                                                                                       '"rope_theta": NaN')),
                  "rope_theta")
    yield Variant("config-rms-eps-inf", _write(C, json.dumps(BASE_CONFIG).replace('"rms_norm_eps": 1e-05',
                                                                                    '"rms_norm_eps": Infinity')),
                  "rms_norm_eps")
    l3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64}
    for tag, v in {"string": "linear", "list": [1, 2], "kind-int": {"type": 5},
                   "yarn": {"rope_type": "yarn", "factor": 2.0},
                   "factor-str": {"rope_type": "linear", "factor": "x"},
                   "factor-neg": {"rope_type": "linear", "factor": -2.0},
                   "llama3-low-0": {**l3, "low_freq_factor": 0},
                   "llama3-high-le-low": {**l3, "high_freq_factor": 1.0},
                   "llama3-orig-ctx-str": {**l3, "original_max_position_embeddings": "x"},
                   "llama3-factor-list": {**l3, "factor": [8]}}.items():
        yield Variant(f"config-rope-scaling-{tag}", _config(rope_scaling=v), f"{C}: rope_scaling")
    for tag, kv in {"tie-str": {"tie_word_embeddings": "yes"}, "archs-str": {"architectures": "LlamaForCausalLM"},
                    "archs-int": {"architectures": [1]}, "model-type-int": {"model_type": 5},
                    "hidden-act-list": {"hidden_act": ["silu"]}, "bos-str": {"bos_token_id": "1"},
                    "eos-huge": {"eos_token_id": 10**6}, "model-type-long": {"model_type": "x" * 1_000_000},
                    "archs-long": {"architectures": ["GPT2" * 100_000] * 100}, "rope-params-list": {"rope_parameters": [1]}}.items():
        yield Variant(f"config-{tag}", _config(**kv), C)
    for tag, content in {"is-list": "[]", "is-number": "5", "not-utf8": b"{\"hidden_size\": \"\xff\xfe\"}",
                         "bad-json": "{ not json", "empty": "", "deep": "[" * 100000 + "]" * 100000}.items():
        yield Variant(f"config-file-{tag}", _write(C, content), C)

    S = "model.safetensors"
    emb, q0 = "model.embed_tokens.weight", "model.layers.0.self_attn.q_proj.weight"
    yield Variant("st-header-list", lambda d: write_safetensors(d / S, base_arrays(), header_bytes=b"[1, 2]"), S)
    yield Variant("st-header-not-json", lambda d: write_safetensors(d / S, base_arrays(), header_bytes=b"{oops"), S)
    yield Variant("st-header-not-utf8", lambda d: write_safetensors(d / S, base_arrays(),
                                                                    header_bytes=b'{"\xff": 1}'), S)
    yield Variant("st-header-length-huge", lambda d: write_safetensors(d / S, base_arrays(), length=2**62), S)
    yield Variant("st-header-length-zero", lambda d: write_safetensors(d / S, base_arrays(), length=0), S)
    yield Variant("st-file-4-bytes", _write(S, b"abcd"), S)
    yield Variant("st-file-empty", _write(S, b""), S)
    yield Variant("st-entry-no-dtype", _header(lambda h: h[emb].pop("dtype")), f"{S}: tensor '{emb}'")
    yield Variant("st-entry-string", _header(lambda h: h.__setitem__(emb, "F32")), f"{S}: tensor '{emb}'")
    yield Variant("st-entry-list", _header(lambda h: h.__setitem__(emb, [1])), f"{S}: tensor '{emb}'")
    yield Variant("st-dtype-unknown", _header(lambda h: h[emb].__setitem__("dtype", "Q4")), f"'{emb}': dtype")
    yield Variant("st-dtype-int", _header(lambda h: h[emb].__setitem__("dtype", 4)), f"'{emb}': dtype")
    yield Variant("st-dtype-i32", _header(lambda h: h[emb].__setitem__("dtype", "I32")), emb)
    yield Variant("st-shape-str", _header(lambda h: h[emb].__setitem__("shape", "64x32")), f"'{emb}': shape")
    yield Variant("st-shape-neg", _header(lambda h: h[emb].__setitem__("shape", [-64, -32])), f"'{emb}': shape")
    yield Variant("st-shape-float", _header(lambda h: h[emb].__setitem__("shape", [64.0, 32])), f"'{emb}': shape")
    yield Variant("st-offsets-past-end", _header(lambda h: h[q0].__setitem__("data_offsets", [10**9, 10**9 + 4096])),
                  f"'{q0}': data_offsets")
    yield Variant("st-offsets-reversed", _header(lambda h: h[q0].__setitem__("data_offsets",
                                                                             h[q0]["data_offsets"][::-1])), q0)
    yield Variant("st-offsets-three", _header(lambda h: h[q0].__setitem__("data_offsets", [0, 1, 2])), q0)
    yield Variant("st-offsets-str", _header(lambda h: h[q0].__setitem__("data_offsets", ["0", "4096"])), q0)

    def overlap(h: dict) -> None:
        h[q0]["data_offsets"] = list(h[emb]["data_offsets"][:1]) + [h[emb]["data_offsets"][0] + 4 * DIM * DIM]
    yield Variant("st-offsets-overlap", _header(overlap), "overlap")

    def too_few(h: dict) -> None:
        b, e = h[q0]["data_offsets"]
        h[q0]["data_offsets"] = [b, e - 4]
    yield Variant("st-too-few-bytes", _header(too_few), f"'{q0}'")
    yield Variant("st-shape-mismatch-bytes", _header(lambda h: h[q0].__setitem__("shape", [DIM, DIM * 2])), q0)
    yield Variant("st-cut-in-half", _truncate(0.5), S)
    yield Variant("st-cut-header", _truncate(0.01), S)

    I = "model.safetensors.index.json"
    yield Variant("index-bad-json", _sharded("{ nope"), I)
    yield Variant("index-no-weight-map", _sharded({"metadata": {}}), f"{I}: weight_map")
    yield Variant("index-weight-map-list", _sharded({"weight_map": ["a"]}), f"{I}: weight_map")
    yield Variant("index-is-list", _sharded("[]"), I)
    yield Variant("index-path-escape", _sharded({"weight_map": {emb: "../config.json"}}), I)
    yield Variant("index-file-int", _sharded({"weight_map": {emb: 5}}), I)
    yield Variant("index-missing-shard", _sharded({"weight_map": {emb: "model-00009-of-00009.safetensors"}}),
                  "model-00009-of-00009.safetensors")
    names = list(hf_shapes())
    yield Variant("shards-duplicate-tensor", _sharded(None, {"model-00001-of-00002.safetensors": names[:10],
                                                             "model-00002-of-00002.safetensors": names[5:]}),
                  "also in")

    T = "tokenizer.json"
    for tag, content in {"list": "[]", "empty-object": "{}", "model-list": '{"model": []}',
                         "unigram": '{"model": {"type": "Unigram", "vocab": [["a", 0.0]]}}',
                         "vocab-list": '{"model": {"type": "BPE", "vocab": ["a"]}}',
                         "id-beyond-vocab": json.dumps({"model": {"type": "BPE", "vocab": {"a": 0, "b": 100}}}),
                         "id-str": json.dumps({"model": {"type": "BPE", "vocab": {"a": "0"}}}),
                         "added-tokens-str": json.dumps({**tokenizer_json(), "added_tokens": "x"}),
                         "added-token-no-flags": json.dumps({**tokenizer_json(),
                                                             "added_tokens": [{"id": 1, "content": "<s>"}]}),
                         "merges-str": json.dumps({"model": {**tokenizer_json()["model"], "merges": "a b"}}),
                         "not-utf8": b'{"model": "\xff"}', "bad-json": "{"}.items():
        yield Variant(f"tokenizer-{tag}", _write(T, content), T)
    TC = "tokenizer_config.json"
    for tag, content in {"list": "[]", "template-int": '{"chat_template": 5}',
                         "bos-int": '{"bos_token": 1}', "decoder-list": '{"added_tokens_decoder": []}'}.items():
        yield Variant(f"tokenizer-config-{tag}", _write(TC, content), TC)
    yield Variant("generation-config-str", _write("generation_config.json", '"x"'), "generation_config.json")
    yield Variant("special-tokens-map-bad", _write("special_tokens_map.json", "{"), "special_tokens_map.json")

    R = "README.md"
    for tag, content in {"bad-yaml": "---\nlicense: [unclosed\ntags: {a\n---\n# x\n",
                         "yaml-tab-mess": "---\n\tlicense: : :\n  - x\n---\n",
                         "list": "---\n- a\n- b\n---\n", "license-dict": "---\nlicense: {a: 1}\n---\n",
                         "tags-numbers": "---\ntags:\n- [1]\n---\n", "not-utf8": b"---\nlicense: \xff\n---\n",
                         "alias-bomb": "---\na: &a [x, x]\nb: &b [*a, *a]\nc: &c [*b, *b]\nlicense: *c\n---\n"}.items():
        yield Variant(f"readme-{tag}", _write(R, content), R)

    up = "model.layers.1.mlp.up_proj.weight"

    def put(value: float, name: str = up) -> Callable[[dict], None]:
        return lambda a: a[name].__setitem__((3, 5), value)
    yield Variant("weights-nan", _arrays(put(np.nan)), f"{up} has 1 NaN/Inf")
    yield Variant("weights-inf", _arrays(put(np.inf)), f"{up} has 1 NaN/Inf")
    yield Variant("weights-3e38", _arrays(put(3e38)), f"{up} has values up to 3e+38")
    yield Variant("weights-neg-3e38-bf16", _arrays(put(-3e38), dtype="BF16"), f"{up} has values up to")
    yield Variant("weights-1e7-embedding", _arrays(put(1e7, emb)), emb)
    yield Variant("weights-nan-norm", _arrays(lambda a: a["model.norm.weight"].__setitem__(0, np.nan)),
                  "model.norm.weight")
    yield Variant("weights-lm-head-shape", _arrays(lambda a: a.__setitem__("lm_head.weight",
                                                                            np.zeros((VOCAB, DIM // 2), np.float32))),
                  "lm_head.weight")
    yield Variant("weights-lm-head-shape-tied", lambda d: (_config(tie_word_embeddings=True)(d), _arrays(
        lambda a: a.__setitem__("lm_head.weight", np.zeros((VOCAB + 1, DIM), np.float32)))(d)), "lm_head.weight")
    yield Variant("weights-missing", _arrays(lambda a: a.pop(q0)), "missing tensor")
    yield Variant("weights-extra", _arrays(lambda a: a.__setitem__("model.layers.5.mlp.up_proj.weight",
                                                                    np.zeros((FF, DIM), np.float32))), "unexpected")
    yield Variant("weights-extra-long-name", _arrays(lambda a: a.__setitem__("x" * 1_000_000, np.zeros(4, np.float32))),
                  "unexpected")
    yield Variant("weights-shape", _arrays(lambda a: a.__setitem__(q0, np.zeros((DIM, DIM + 16), np.float32))), q0)
    yield Variant("weights-none", lambda d: (d / S).unlink(), "no *.safetensors")
