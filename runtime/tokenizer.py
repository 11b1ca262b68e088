"""Tokenizer built from GGUF metadata (``tokenizer.ggml.*``) with the `tokenizers` library; no network.

* ``gpt2`` (byte-level BPE): vocabulary and merges from the file; the pre-tokenizer follows llama.cpp's
  regexes for ``tokenizer.ggml.pre`` (llama.cpp is the tool that wrote the file and defines how it tokenizes;
  e.g. ``smollm`` splits every digit, as SmolLM2's own tokenizer.json does).
* ``llama`` (SentencePiece BPE with byte fallback): vocabulary, scores (merges derived from them when the file
  has none), ``tokenizer.ggml.add_space_prefix``.

Control tokens (token_type 3) and user-defined ones (4) are matched whole when ``special=True``.
BOS/EOS and ``add_bos_token``/``add_eos_token`` come from the metadata. Decoding goes through a per-token byte
table, so ``StreamDecoder`` can emit only complete UTF-8 characters while streaming.
"""
from __future__ import annotations

import codecs
import functools
import logging
from typing import Iterable, Sequence

import numpy as np

from maq.errors import MAQError

log = logging.getLogger(__name__)

TOKEN_NORMAL, TOKEN_UNKNOWN, TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNUSED, TOKEN_BYTE = 1, 2, 3, 4, 5, 6

# llama.cpp's pre-tokenizer regexes (src/llama-vocab.cpp), by tokenizer.ggml.pre.
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
           r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_QWEN2 = (r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
          r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
          r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
          r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
_DIGITS = r"\p{N}"
PRE_TOKENIZER_REGEXES: dict[str, tuple[str, ...]] = {
    "default": (_GPT2,), "gpt2": (_GPT2,), "gpt-2": (_GPT2,), "olmo": (_GPT2,), "jais": (_GPT2,),
    "smollm": (_DIGITS, _GPT2), "starcoder": (_DIGITS, _GPT2), "refact": (_DIGITS, _GPT2),
    "command-r": (_DIGITS, _GPT2), "codeshell": (_DIGITS, _GPT2), "exaone": (_DIGITS, _GPT2),
    "minerva-7b": (_DIGITS, _GPT2),
    "llama3": (_LLAMA3,), "llama-v3": (_LLAMA3,), "llama-bpe": (_LLAMA3,), "falcon3": (_LLAMA3,),
    "smaug-bpe": (_LLAMA3,), "dbrx": (_LLAMA3,), "pixtral": (_LLAMA3,),
    "qwen2": (_QWEN2,), "deepseek-r1-qwen": (_QWEN2,), "megrez": (_QWEN2,),
    "gpt-4o": (_GPT4O,), "llama4": (_GPT4O,),
}


@functools.lru_cache(maxsize=1)
def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map (byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


class Tokenizer:
    """encode/decode for one GGUF's vocabulary. ``tokens``/``token_types`` as the file lists them."""

    def __init__(self, metadata: dict, where: str = "GGUF"):
        self.where = where
        md = metadata
        self.model_type = md.get("tokenizer.ggml.model")
        self.tokens: list[str] = md.get("tokenizer.ggml.tokens")
        if self.model_type is None or self.tokens is None:
            raise MAQError(f"{where}: no tokenizer in the file (tokenizer.ggml.model / tokenizer.ggml.tokens missing)")
        self.model_type = self._str(md, "tokenizer.ggml.model", None)
        self.tokens = self._str_list(md, "tokenizer.ggml.tokens")
        n = len(self.tokens)
        if n == 0:
            raise MAQError(f"{where}: tokenizer.ggml.tokens is empty")
        tt = md.get("tokenizer.ggml.token_type")
        self.token_types = self._int_list(md, "tokenizer.ggml.token_type", n, 0, 6) if tt is not None \
            else [TOKEN_NORMAL] * n
        self.pre = self._str(md, "tokenizer.ggml.pre", "default")
        self.bos_id = self._id(md, "tokenizer.ggml.bos_token_id", n)
        self.eos_id = self._id(md, "tokenizer.ggml.eos_token_id", n)
        self.eot_id = self._id(md, "tokenizer.ggml.eot_token_id", n)
        self.pad_id = self._id(md, "tokenizer.ggml.padding_token_id", n)
        default_bos = self.model_type == "llama"
        self.add_bos = self._bool(md, "tokenizer.ggml.add_bos_token", default_bos) and self.bos_id is not None
        self.add_eos = self._bool(md, "tokenizer.ggml.add_eos_token", False) and self.eos_id is not None
        self.add_space_prefix = self._bool(md, "tokenizer.ggml.add_space_prefix", self.model_type == "llama")
        # a bad template must not stop plain completion: chat.render_for reports it when a chat is rendered
        ct = md.get("tokenizer.chat_template")
        self.chat_template: str | None = ct if isinstance(ct, str) else None
        self.chat_template_error: str | None = None if ct is None or isinstance(ct, str) else \
            str(self._bad("tokenizer.chat_template", ct, "a string"))
        self.stop_ids = {i for i in (self.eos_id, self.eot_id) if i is not None}
        eom = self._id(md, "tokenizer.ggml.eom_token_id", n)
        if eom is not None:
            self.stop_ids.add(eom)
        if self.model_type == "gpt2":
            self._build_bpe(md)
        elif self.model_type == "llama":
            self._build_spm(md)
        else:
            raise MAQError(f"{where}: tokenizer.ggml.model = {self.model_type!r} unsupported (gpt2, llama)")
        self._plain = None  # lazily: the same tokenizer without special-token matching

    # -- metadata, type-checked (a hostile file may put anything under any key)
    def _bad(self, key: str, v, expected: str) -> MAQError:
        r = repr(v)
        return MAQError(f"{self.where}: metadata {key} = {r[:60] + '...' if len(r) > 60 else r}, expected {expected}")

    def _str(self, md: dict, key: str, default):
        v = md.get(key, default)
        if v is not default and not isinstance(v, str):
            raise self._bad(key, v, "a string")
        return v

    def _bool(self, md: dict, key: str, default: bool) -> bool:
        v = md.get(key, default)
        if isinstance(v, (bool, np.bool_)) or isinstance(v, int) and v in (0, 1):
            return bool(v)
        raise self._bad(key, v, "a bool")

    def _id(self, md: dict, key: str, n: int) -> int | None:
        v = md.get(key)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < n:
            raise self._bad(key, v, f"a token id in 0..{n - 1}")
        return v

    def _str_list(self, md: dict, key: str) -> list[str]:
        v = md.get(key)
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self._bad(key, v, "an array of strings")
        return v

    def _int_list(self, md: dict, key: str, n: int, lo: int, hi: int) -> list[int]:
        v = md.get(key)
        if not isinstance(v, np.ndarray) or v.ndim != 1 or v.dtype.kind not in "iu":
            raise self._bad(key, v, f"an array of {n} integers")
        if len(v) != n:
            raise MAQError(f"{self.where}: {key} has {len(v)} entries, expected {n} (one per token)")
        if v.size and (v.min() < lo or v.max() > hi):
            raise MAQError(f"{self.where}: {key} has values outside {lo}..{hi}")
        return [int(x) for x in v]

    # -- construction
    def _specials(self):
        from tokenizers import AddedToken

        out = []
        for i, (t, ty) in enumerate(zip(self.tokens, self.token_types)):
            if not t or _has_surrogates(t):
                continue
            if ty == TOKEN_CONTROL:
                out.append(AddedToken(t, special=True, normalized=False))
            elif ty == TOKEN_USER_DEFINED:
                out.append(AddedToken(t, special=False, normalized=False))
        return out

    def _build_bpe(self, md: dict) -> None:
        from tokenizers import Regex, decoders, pre_tokenizers

        if md.get("tokenizer.ggml.merges") is None:
            raise MAQError(f"{self.where}: byte-level BPE without tokenizer.ggml.merges")
        merges = self._str_list(md, "tokenizer.ggml.merges")
        vocab = {t: i for i, t in enumerate(self.tokens)}
        pairs = []
        for m in merges:
            a, sep, b = m.partition(" ")
            if not sep:
                raise MAQError(f"{self.where}: tokenizer.ggml.merges entry {m!r} is not 'a b'")
            pairs.append((a, b))
        self._model_args = (vocab, pairs)
        regexes = PRE_TOKENIZER_REGEXES.get(self.pre)
        if regexes is None:
            log.warning("%s: tokenizer.ggml.pre = %r unknown; using GPT-2's pre-tokenizer", self.where, self.pre)
            regexes = (_GPT2,)
        self._pre = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in regexes]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        self._normalizer = None
        self._decoder = decoders.ByteLevel()
        self.tok = self._make(with_specials=True)
        inv = {c: b for b, c in bytes_to_unicode().items()}
        table = []
        for t, ty in zip(self.tokens, self.token_types):
            if ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED) or any(c not in inv for c in t):
                table.append(t.encode("utf-8", errors="surrogateescape"))
            else:
                table.append(bytes(inv[c] for c in t))
        self._bytes = table

    def _build_spm(self, md: dict) -> None:
        from tokenizers import decoders, normalizers

        scores = md.get("tokenizer.ggml.scores")
        vocab = {t: i for i, t in enumerate(self.tokens)}
        if md.get("tokenizer.ggml.merges") is not None:
            pairs = []
            for m in self._str_list(md, "tokenizer.ggml.merges"):
                a, sep, b = m.partition(" ")
                if not sep:
                    raise MAQError(f"{self.where}: tokenizer.ggml.merges entry {m!r} is not 'a b'")
                pairs.append((a, b))
        else:
            if scores is None:
                raise MAQError(f"{self.where}: SentencePiece vocabulary without tokenizer.ggml.scores or merges")
            if not isinstance(scores, np.ndarray) or scores.ndim != 1 or scores.dtype.kind not in "fiu" or \
                    len(scores) != len(self.tokens) or not np.all(np.isfinite(scores)):
                raise self._bad("tokenizer.ggml.scores", scores, f"{len(self.tokens)} finite numbers")
            pairs = _merges_from_scores(self.tokens, [float(s) for s in scores], self.token_types)
        self._model_args = (vocab, pairs)
        self._pre = None
        norm = [normalizers.Replace(" ", "\u2581")]
        if self.add_space_prefix:
            norm.insert(0, normalizers.Prepend("\u2581"))
        self._normalizer = normalizers.Sequence(norm)
        self._decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse()])
        self.tok = self._make(with_specials=True)
        table = []
        hexdigits = set("0123456789abcdefABCDEF")
        for t, ty in zip(self.tokens, self.token_types):
            if ty == TOKEN_BYTE and len(t) == 6 and t.startswith("<0x") and t.endswith(">") and \
                    set(t[3:5]) <= hexdigits:
                table.append(bytes([int(t[3:5], 16)]))
            elif ty in (TOKEN_CONTROL, TOKEN_USER_DEFINED, TOKEN_UNKNOWN):
                table.append(t.encode("utf-8", errors="surrogateescape"))
            else:
                table.append(t.replace("\u2581", " ").encode("utf-8", errors="surrogateescape"))
        self._bytes = table

    def _make(self, with_specials: bool):
        """The `tokenizers` object. Tokens that are not valid UTF-8 (kept as surrogate escapes) cannot enter it:
        they get a placeholder no text can produce (the byte table still decodes them). Anything the library
        refuses (a merge of unknown tokens, ...) is a MAQError naming the file."""
        try:
            return self._make_unchecked(with_specials)
        except MAQError:
            raise
        except Exception as exc:  # noqa: BLE001 - the tokenizers library raises plain Exception
            raise MAQError(f"{self.where}: tokenizer.ggml.* rejected by the tokenizers library "
                           f"({str(exc).splitlines()[0][:120]})") from None

    def _make_unchecked(self, with_specials: bool):
        from tokenizers import Tokenizer as HFTokenizer, models

        vocab, pairs = self._model_args
        if any(_has_surrogates(t) for t in vocab):
            vocab = {(f"<maq-invalid-utf8-{i}>" if _has_surrogates(t) else t): i for t, i in vocab.items()}
            pairs = [(a, b) for a, b in pairs if not _has_surrogates(a) and not _has_surrogates(b)]
        if self.model_type == "gpt2":
            # llama.cpp sets ignore_merges for the llama3 family (whole words in the vocabulary win)
            model = models.BPE(vocab=dict(vocab), merges=list(pairs),
                               ignore_merges=PRE_TOKENIZER_REGEXES.get(self.pre) == (_LLAMA3,))
        else:
            unk = next((t for t, ty in zip(self.tokens, self.token_types) if ty == TOKEN_UNKNOWN), None)
            model = models.BPE(vocab=dict(vocab), merges=list(pairs), byte_fallback=True, unk_token=unk, fuse_unk=True)
        tok = HFTokenizer(model)
        if self._normalizer is not None:
            tok.normalizer = self._normalizer
        if self._pre is not None:
            tok.pre_tokenizer = self._pre
        tok.decoder = self._decoder
        if with_specials:
            specials = self._specials()
            if specials:
                tok.add_special_tokens([s for s in specials if s.special])
                tok.add_tokens([s for s in specials if not s.special])
        return tok

    # -- API
    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, add_bos: bool | None = None, special: bool = True) -> list[int]:
        """Token ids of text. ``special``: match control tokens written in the text (chat templates need it;
        llama-perplexity does not). BOS/EOS added per the file's add_bos/add_eos unless ``add_bos`` says."""
        if not isinstance(text, str):
            raise MAQError(f"text to tokenize: expected str, got {type(text).__name__}")
        if _has_surrogates(text):         # lone surrogates (a str decoded with surrogateescape): U+FFFD each
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
        if special:
            tok = self.tok
        else:
            if self._plain is None:
                self._plain = self._make(with_specials=False)
            tok = self._plain
        ids = tok.encode(text, add_special_tokens=False).ids if text else []
        if self.add_bos if add_bos is None else add_bos:
            ids = [self.bos_id] + ids
        if self.add_eos and add_bos is None:
            ids = ids + [self.eos_id]
        return ids

    def token_bytes(self, token_id: int) -> bytes:
        return self._bytes[token_id]

    def is_control(self, token_id: int) -> bool:
        return self.token_types[token_id] == TOKEN_CONTROL

    def detokenize_bytes(self, ids: Iterable[int], special: bool = False) -> bytes:
        """Raw bytes of ids; control tokens (BOS, EOS, <|im_start|>...) only when ``special``."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self._bytes):
                raise MAQError(f"token id {i} outside the vocabulary of {len(self._bytes)}")
            if not special and self.token_types[i] == TOKEN_CONTROL:
                continue
            out.append(self._bytes[i])
        b = b"".join(out)
        if self.model_type == "llama" and self.add_space_prefix and b.startswith(b" "):
            b = b[1:]
        return b

    def decode(self, ids: Sequence[int], special: bool = False) -> str:
        return self.detokenize_bytes(ids, special).decode("utf-8", errors="replace")

    def stream(self, special: bool = False, strip_first_space: bool | None = None) -> "StreamDecoder":
        return StreamDecoder(self, special, strip_first_space)


class StreamDecoder:
    """Feed token ids one at a time; each ``feed`` returns only whole UTF-8 characters (bytes of a character
    that spans tokens are held back until it is complete); ``flush`` returns the rest."""

    def __init__(self, tok: Tokenizer, special: bool = False, strip_first_space: bool | None = None):
        self.tok = tok
        self.special = special
        self.dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.first = (tok.model_type == "llama" and tok.add_space_prefix) if strip_first_space is None \
            else strip_first_space

    def feed(self, token_id: int) -> str:
        t = int(token_id)
        if not self.special and self.tok.token_types[t] == TOKEN_CONTROL:
            return ""
        b = self.tok.token_bytes(t)
        if self.first and b:
            if b.startswith(b" "):
                b = b[1:]
            self.first = False
        return self.dec.decode(b)

    def flush(self) -> str:
        return self.dec.decode(b"", final=True)


def _has_surrogates(t: str) -> bool:
    try:
        t.encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _merges_from_scores(tokens: list[str], scores: list[float], types: list[int]) -> list[tuple[str, str]]:
    """SentencePiece BPE merges implied by a scored vocabulary (as transformers' generate_merges does):
    every split of a normal token into two vocabulary pieces, ordered by the merged token's score."""
    vocab = {t: i for i, t in enumerate(tokens) if types[i] in (TOKEN_NORMAL, TOKEN_USER_DEFINED, TOKEN_UNUSED)}
    # both pieces are vocabulary tokens, so only split points at a token length need looking at (a hostile
    # vocabulary with one huge token would otherwise cost len^2)
    lengths = sorted({len(t) for t in vocab})
    length_set = set(lengths)
    found = []
    for t, i in vocab.items():
        n = len(t)
        for k in lengths:
            if k >= n:
                break
            if k == 0 or n - k not in length_set:
                continue
            a, b = t[:k], t[k:]
            if a in vocab and b in vocab:
                found.append((-scores[i], vocab[a], vocab[b], a, b))
    found.sort()
    return [(a, b) for _, _, _, a, b in found]


def from_gguf(gguf_file) -> Tokenizer:
    """Tokenizer of a ``gguf_loader.GGUFFile``."""
    return Tokenizer(gguf_file.metadata, where=str(gguf_file.path))
