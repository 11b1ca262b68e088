"""Model sources: a Hugging Face Llama directory or a GGUF file, read one tensor at a time.

Both sources present the same thing: llama.cpp tensor names (``blk.0.attn_q.weight``), float32 numpy arrays in
llama.cpp's layout (a 2-D weight is ``[P, T]``: P output rows of T contiguous inputs, GGUF ``ne = [T, P]``), and
Q/K rows in llama.cpp's permuted order (``permute_qk``, exactly as llama.cpp's ``convert_hf_to_gguf.py`` writes
them), plus the model's ``LlamaParams`` and the GGUF metadata (general.*, llama.*, tokenizer.*) to carry over.

No torch here: every Hugging Face input is checked by ``hf_check`` first; safetensors are memory-mapped.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import mmap
from pathlib import Path
from typing import Any

import numpy as np

from maq.errors import MAQError

log = logging.getLogger(__name__)

ARCH = "llama"
HF_ARCHITECTURES = ("LlamaForCausalLM",)

# per-block tensor kinds, llama.cpp names, and the HF names they come from
BLOCK_TENSORS = {
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
}
LINEAR_KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")
NORM_KINDS = ("attn_norm", "ffn_norm")
GLOBAL_TENSORS = {"token_embd.weight": "model.embed_tokens.weight", "output_norm.weight": "model.norm.weight",
                  "output.weight": "lm_head.weight"}
ROPE_FREQS = "rope_freqs.weight"
HF_IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)


def block_name(i: int, kind: str) -> str:
    """llama.cpp name of tensor ``kind`` of block ``i``: ``blk.{i}.{kind}.weight``."""
    return f"blk.{i}.{kind}.weight"


@dataclasses.dataclass(frozen=True)
class LlamaParams:
    """Hyper-parameters of a Llama-family model (names follow llama.cpp's GGUF keys)."""

    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    n_ctx: int
    rope_theta: float
    rms_eps: float
    tied: bool = True                          # no separate output.weight: the head is token_embd
    rope_scaling: dict[str, Any] | None = None  # HF rope scaling dict (rope_type, factor, ...) or None

    def check(self, what: str) -> None:
        for f in ("n_layer", "n_embd", "n_ff", "n_head", "n_head_kv", "head_dim", "n_vocab"):
            if getattr(self, f) <= 0:
                raise MAQError(f"{what}: {f} = {getattr(self, f)} must be positive")
        if self.n_head % self.n_head_kv:
            raise MAQError(f"{what}: {self.n_head} attention heads are not a multiple of {self.n_head_kv} KV heads")
        if self.head_dim % 2:
            raise MAQError(f"{what}: head_dim {self.head_dim} must be even (RoPE pairs)")


# --------------------------------------------------------------------------- Q/K permutation
def permute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """HF rotate-half row order -> llama.cpp's interleaved-pair order (``LlamaModel.permute`` in llama.cpp).

    w: [n_head * head_dim, ...]. Within each head, rows (r, r + head_dim/2) of HF become rows (2r, 2r+1).
    """
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def unpermute_qk(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of ``permute_qk``: llama.cpp row order -> HF rotate-half order."""
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama3_rope_factors(params: LlamaParams) -> np.ndarray | None:
    """The ``rope_freqs.weight`` llama.cpp writes for rope_type "llama3" (Llama 3.1+), else None.

    float32 [head_dim/2]."""
    rs = params.rope_scaling or {}
    if str(rs.get("rope_type", rs.get("type", ""))).lower() != "llama3":
        return None
    dim = params.head_dim
    freqs = 1.0 / (params.rope_theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    factor = float(rs.get("factor", 8.0))
    low_ff = float(rs.get("low_freq_factor", 1.0))
    high_ff = float(rs.get("high_freq_factor", 4.0))
    old_ctx = float(rs.get("original_max_position_embeddings", 8192))
    low_wl, high_wl = old_ctx / low_ff, old_ctx / high_ff
    out = []
    for f in freqs:
        wl = 2 * math.pi / f
        if wl < high_wl:
            out.append(1.0)
        elif wl > low_wl:
            out.append(factor)
        else:
            smooth = (old_ctx / wl - low_ff) / (high_ff - low_ff)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, dtype=np.float32)


def expected_shape(name: str, p: LlamaParams) -> tuple[int, ...] | None:
    """Logical shape ([P, T] for a weight, [n] for a vector) tensor ``name`` must have under ``p``; None: unknown."""
    if name in ("token_embd.weight", "output.weight"):
        return (p.n_vocab, p.n_embd)
    if name == "output_norm.weight":
        return (p.n_embd,)
    if name == ROPE_FREQS:
        return (p.head_dim // 2,)
    parts = name.split(".")
    if len(parts) != 4 or parts[0] != "blk":
        return None
    q, kv = p.n_head * p.head_dim, p.n_head_kv * p.head_dim
    return {"attn_norm": (p.n_embd,), "ffn_norm": (p.n_embd,),
            "attn_q": (q, p.n_embd), "attn_k": (kv, p.n_embd), "attn_v": (kv, p.n_embd),
            "attn_output": (p.n_embd, q), "ffn_gate": (p.n_ff, p.n_embd), "ffn_up": (p.n_ff, p.n_embd),
            "ffn_down": (p.n_embd, p.n_ff)}.get(parts[2])


def check_shapes(src: "Source", what: str, stored_name=lambda n: n) -> None:
    """Raise MAQError naming the first tensor whose shape does not follow the model's hyper-parameters."""
    p = src.params
    for name in src.names():
        want = expected_shape(name, p)
        got = src.shape(name)
        if want is not None and tuple(got) != tuple(want):
            raise MAQError(f"{src.path}: tensor {stored_name(name)} has shape {list(got)}, expected {list(want)} "
                           f"from {what} (hidden {p.n_embd}, ffn {p.n_ff}, heads {p.n_head}/{p.n_head_kv} x "
                           f"{p.head_dim}, vocab {p.n_vocab})")


def check_finite(name: str, a: np.ndarray, path: Path) -> None:
    """Raise MAQError if tensor ``name`` holds NaN or Inf, or values beyond +-hf_check.MAX_ABS_WEIGHT (finite, but
    they overflow the float32 calibration: "Hessian is not positive definite" much later)."""
    from maq.converter.hf_check import MAX_ABS_WEIGHT

    if not np.all(np.isfinite(a)):
        bad = int(np.size(a) - np.count_nonzero(np.isfinite(a)))
        raise MAQError(f"{path}: tensor {name} has {bad} NaN/Inf value(s)")
    big = float(np.max(np.abs(a))) if np.size(a) else 0.0
    if big > MAX_ABS_WEIGHT:
        raise MAQError(f"{path}: tensor {name} has values up to {big:.3g}, beyond +-{MAX_ABS_WEIGHT:g} "
                       f"(calibration would overflow float32)")


# --------------------------------------------------------------------------- sources
class Source:
    """Common interface: ``params``, ``names()``, ``tensor(name)``, ``metadata()``, ``encode(text)``."""

    path: Path
    params: LlamaParams
    kind: str  # "hf" or "gguf"

    def names(self) -> list[str]:
        """llama.cpp names of every tensor the model has, in llama.cpp's write order."""
        p = self.params
        out = ["token_embd.weight"]
        if self.has(ROPE_FREQS):
            out.insert(0, ROPE_FREQS)
        for i in range(p.n_layer):
            out += [block_name(i, k) for k in BLOCK_TENSORS]
        out.append("output_norm.weight")
        if self.has("output.weight"):
            out.append("output.weight")
        return out

    def has(self, name: str) -> bool:
        raise NotImplementedError

    def tensor(self, name: str) -> np.ndarray:
        raise NotImplementedError

    def shape(self, name: str) -> tuple[int, ...]:
        raise NotImplementedError

    def metadata(self):  # -> dict[str, gguf.GGUFValue]
        raise NotImplementedError

    def encode(self, text: str) -> list[int]:
        """Token ids of a plain text (calibration) as llama.cpp tokenizes it with the model's tokenizer.ggml.*
        metadata (``metadata()``; the MAQ runtime's tokenizer, so a HF directory and its GGUF give the same ids):
        no BOS / EOS added, control tokens written in the text not matched."""
        from maq.runtime.tokenizer import Tokenizer

        def runtime_value(v):                 # numeric arrays as the runtime's GGUF reader gives them
            return np.asarray(v) if isinstance(v, list) and v and not isinstance(v[0], str) else v

        md = {k: runtime_value(v.value) for k, v in self.metadata().items() if k.startswith("tokenizer.")}
        return Tokenizer(md, where=str(self.path)).encode(text, add_bos=False, special=False)


def open_source(path: str | Path, tokenizer_pre: str | None = None) -> Source:
    """Open MODEL: a HF directory (config.json + safetensors) or a .gguf file. Raises MAQError with the reason.

    tokenizer_pre overrides tokenizer.ggml.pre for a HF BPE tokenizer llama.cpp's hash table does not know.
    """
    p = Path(path)
    if not p.exists():
        raise MAQError(f"{p}: no such file or directory")
    if p.is_dir():
        return HFSource(p, tokenizer_pre)
    with open(p, "rb") as f:
        magic = f.read(4)
    if magic == b"GGUF":
        return GGUFSource(p)
    raise MAQError(f"{p}: neither a Hugging Face model directory nor a GGUF file (magic {magic!r})")


# --------------------------------------------------------------------------- Hugging Face directory
def _st_to_f32(raw: np.ndarray, dtype: str, shape: tuple[int, ...], what: str) -> np.ndarray:
    if dtype == "F32":
        return raw.view("<f4").reshape(shape).astype(np.float32)
    if dtype == "F16":
        return raw.view("<f2").reshape(shape).astype(np.float32)
    if dtype == "BF16":
        return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32).reshape(shape)
    if dtype == "F64":
        return raw.view("<f8").reshape(shape).astype(np.float32)
    raise MAQError(f"{what}: safetensors dtype {dtype} is not supported (expected F32, F16, BF16 or F64)")


class HFSource(Source):
    kind = "hf"

    def __init__(self, path: Path, tokenizer_pre: str | None = None):
        from maq.converter import hf_check

        self.path = path
        self.tokenizer_pre = tokenizer_pre
        self._metadata = None
        cfg_file = path / "config.json"
        if not cfg_file.is_file():
            raise MAQError(f"{path}: not a Hugging Face model directory (no config.json)")
        # every input file is checked here, before any work (hf_check): types, ranges, headers, values
        self.config, c = hf_check.check_config(cfg_file, HF_ARCHITECTURES, ARCH)
        self.params = c  # hf_check.HFConfig is LlamaParams
        self.params.check(str(cfg_file))
        files = hf_check.safetensors_files(path)
        if not files:
            bins = list(path.glob("*.bin"))
            hint = " (only .bin files found: convert them to safetensors first)" if bins else ""
            raise MAQError(f"{path}: no *.safetensors weights{hint}")
        self._tensors: dict[str, hf_check.STTensor] = hf_check.read_all_headers(files)
        self._map = self._name_map()
        check_shapes(self, "config.json", lambda n: self._map.get(n, n))
        lm = self._tensors.get("lm_head.weight")
        if lm is not None and lm.shape != (self.params.n_vocab, self.params.n_embd):
            raise MAQError(f"{lm.file}: tensor lm_head.weight has shape {list(lm.shape)}, expected "
                           f"{[self.params.n_vocab, self.params.n_embd]} from config.json (vocab, hidden)")
        for hf in self._map.values():
            t = self._tensors[hf]
            if t.dtype not in hf_check.ST_FLOAT_DTYPES:
                raise MAQError(f"{t.file}: tensor {hf}: safetensors dtype {t.dtype} is not supported "
                               f"(expected {', '.join(hf_check.ST_FLOAT_DTYPES)})")
        hf_check.check_tokenizer_files(path, self.params.n_vocab)
        hf_check.check_model_card(path)
        hf_check.check_weight_values(self._tensors, list(self._map.values()))

    def _name_map(self) -> dict[str, str]:
        """llama.cpp name -> HF name, checking that every tensor of the model is present and nothing is unknown."""
        p = self.params
        m = {g: h for g, h in GLOBAL_TENSORS.items()}
        if p.tied or "lm_head.weight" not in self._tensors:
            m.pop("output.weight")
        for i in range(p.n_layer):
            for kind, hf in BLOCK_TENSORS.items():
                m[block_name(i, kind)] = f"model.layers.{i}.{hf}.weight"
        missing = [h for h in m.values() if h not in self._tensors]
        if missing:
            raise MAQError(f"{self.path}: missing tensor(s) {missing[:3]}{' ...' if len(missing) > 3 else ''}")
        known = set(m.values()) | {"lm_head.weight"}
        extra = [n for n in self._tensors if n not in known and not n.endswith(HF_IGNORED_SUFFIXES)]
        if extra:
            raise MAQError(f"{self.path}: unexpected tensor(s) for a llama model: {[n[:80] for n in extra[:3]]}")
        return m

    def has(self, name: str) -> bool:
        if name == ROPE_FREQS:
            return llama3_rope_factors(self.params) is not None
        return name in self._map

    def shape(self, name: str) -> tuple[int, ...]:
        if name == ROPE_FREQS:
            return (self.params.head_dim // 2,)
        return tuple(int(s) for s in self._tensors[self._map[name]].shape)

    def tensor(self, name: str) -> np.ndarray:
        if name == ROPE_FREQS:
            f = llama3_rope_factors(self.params)
            assert f is not None
            return f
        hf = self._map[name]
        lt = self._tensors[hf]
        a = _st_to_f32(lt.mmap_bytes(), lt.dtype, tuple(lt.shape), f"{self.path}: {hf}")
        check_finite(hf, a, self.path)
        if name.endswith(".attn_q.weight"):
            a = permute_qk(a, self.params.n_head)
        elif name.endswith(".attn_k.weight"):
            a = permute_qk(a, self.params.n_head_kv)
        return np.ascontiguousarray(a, dtype=np.float32)

    def metadata(self):
        """general.* / llama.* / tokenizer.* for the output (computed once; hf_check has vetted the inputs, so a
        failure left in the third-party readers is reported as one line naming the directory)."""
        from maq.converter.vocab import hf_metadata

        if self._metadata is None:
            total = sum(int(np.prod(self.shape(n))) for n in self.names())
            try:
                self._metadata = hf_metadata(self.path, self.params, total, self.tokenizer_pre)
            except MAQError:
                raise
            except Exception as exc:  # noqa: BLE001 - third-party parsers of the files (tokenizers raises bare
                # Exception): whatever they raise on a file hf_check let through is still one line naming the dir
                raise MAQError(f"{self.path}: cannot read its tokenizer files / model card for the GGUF metadata: "
                               f"{type(exc).__name__}: {' '.join(str(exc).split())[:160]}") from exc
        return self._metadata


# --------------------------------------------------------------------------- GGUF file
def reader_value(field) -> Any:
    """The Python value of a GGUFReader field (str, number, bool or list)."""
    return field.contents()


class GGUFSource(Source):
    kind = "gguf"

    def __init__(self, path: Path):
        import gguf

        self.path = path
        try:
            self.reader = gguf.GGUFReader(str(path))
        except (ValueError, OSError) as exc:
            raise MAQError(f"{path}: cannot read GGUF: {exc}") from exc
        f = self.reader.fields
        arch_field = f.get("general.architecture")
        arch = reader_value(arch_field) if arch_field else None
        if arch != ARCH:
            raise MAQError(f"{path}: architecture {arch!r} is not supported (only llama)")
        if any(k.startswith("maq.tensor.") for k in f):
            raise MAQError(f"{path}: already a MAQ file; convert from the original model")
        self._tensors = {t.name: t for t in self.reader.tensors}

        def get(key: str, default=None):
            fld = f.get(f"{ARCH}.{key}")
            if fld is None:
                if default is None:
                    raise MAQError(f"{path}: missing metadata key {ARCH}.{key}")
                return default
            return reader_value(fld)

        emb = self._tensors.get("token_embd.weight")
        if emb is None:
            raise MAQError(f"{path}: missing tensor token_embd.weight")
        n_embd = int(get("embedding_length"))
        n_head = int(get("attention.head_count"))
        tok = f.get("tokenizer.ggml.tokens")
        n_vocab = int(get("vocab_size", len(tok.data) if tok is not None else int(emb.shape[1])))
        scaling = None
        stype = f.get(f"{ARCH}.rope.scaling.type")
        if stype is not None:
            scaling = {"rope_type": reader_value(stype),
                       "factor": float(get("rope.scaling.factor", 1.0))}
        self.params = LlamaParams(
            n_layer=int(get("block_count")), n_embd=n_embd, n_ff=int(get("feed_forward_length")),
            n_head=n_head, n_head_kv=int(get("attention.head_count_kv", n_head)),
            head_dim=int(get("attention.key_length", n_embd // n_head)), n_vocab=n_vocab,
            n_ctx=int(get("context_length", 2048)), rope_theta=float(get("rope.freq_base", 10000.0)),
            rms_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            tied="output.weight" not in self._tensors, rope_scaling=scaling)
        self.params.check(str(path))
        missing = [n for n in self.names() if n not in self._tensors]
        if missing:
            raise MAQError(f"{path}: missing tensor(s) {missing[:3]}")
        extra = [n for n in self._tensors if n not in set(self.names())]
        if extra:
            raise MAQError(f"{path}: unexpected tensor(s) for a llama model: {[n[:80] for n in extra[:3]]}")
        check_shapes(self, "its llama.* metadata")

    def has(self, name: str) -> bool:
        return name in self._tensors

    def shape(self, name: str) -> tuple[int, ...]:
        return tuple(int(s) for s in reversed(self._tensors[name].shape.tolist()))

    def tensor(self, name: str) -> np.ndarray:
        import gguf

        t = self._tensors[name]
        try:
            a = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError as exc:
            raise MAQError(f"{self.path}: tensor {name}: type {t.tensor_type.name} cannot be dequantized "
                           f"by the gguf package") from exc
        a = np.array(a, dtype=np.float32).reshape(self.shape(name))
        self._drop_pages(t)
        check_finite(name, a, self.path)
        return a

    def _drop_pages(self, t) -> None:
        """Take tensor t's mapped file pages out of this process's RSS (they stay in the page cache; a later read
        maps them again): a conversion reads each tensor once, and otherwise the whole source (13.5 GB for a 7B F16
        file) would end up counted in the converter's RSS."""
        mm = getattr(self.reader.data, "_mmap", None)
        if mm is None or not hasattr(mmap, "MADV_DONTNEED"):
            return
        start = int(t.data_offset) - int(t.data_offset) % mmap.PAGESIZE
        try:
            mm.madvise(mmap.MADV_DONTNEED, start, int(t.data_offset) + int(t.n_bytes) - start)
        except (OSError, ValueError):
            pass

    # keys the writer sets itself (or that describe the source file, not the model)
    _SKIP_PREFIXES = ("GGUF.", "maq.", "split.")
    _SKIP_KEYS = ("general.architecture", "general.file_type", "general.quantization_version")

    def metadata(self):
        """Every general.* / llama.* / tokenizer.* key of the source, with its GGUF value type (read once)."""
        from gguf import GGUFValue, GGUFValueType

        if getattr(self, "_metadata", None) is not None:
            return self._metadata
        out = {}
        for key, fld in self.reader.fields.items():
            if key.startswith(self._SKIP_PREFIXES) or key in self._SKIP_KEYS:
                continue
            vtype = GGUFValueType(fld.types[0])
            sub = None
            if vtype == GGUFValueType.ARRAY:
                if len(fld.types) != 2:
                    log.warning("%s: skipping nested-array metadata key %s", self.path, key)
                    continue
                sub = GGUFValueType(fld.types[1])
            out[key] = GGUFValue(value=reader_value(fld), type=vtype, sub_type=sub)
        self._metadata = out
        return out

