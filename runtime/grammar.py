"""Constrained sampling: ``response_format`` (json_object / json_schema) and GBNF/Lark ``grammar`` via llguidance.

llguidance (https://github.com/guidance-ai/llguidance) is the grammar engine llama.cpp itself links; it ships wheels
for x86_64 and aarch64 Linux (one 3 MB wheel, no dependencies besides the Python ABI), computes a token mask in
microseconds, and reads JSON schema, Lark and llama.cpp's GBNF. It is optional (``pip install .[server]`` or
``pip install llguidance``); without it a constrained request is a ``MAQError``, never a silent ignore.
"""
from __future__ import annotations

import json
import weakref

import numpy as np

from maq.errors import MAQError

_TOKENIZERS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _llguidance():
    try:
        import llguidance
    except ImportError:
        raise MAQError("constrained output (response_format / grammar) needs llguidance: "
                       "pip install 'maq[server]' (or pip install llguidance)") from None
    return llguidance


def grammar_text(response_format=None, grammar=None) -> str | None:
    """The llguidance grammar for a request's ``response_format`` / ``grammar``, or None when unconstrained.

    response_format: {"type": "text" | "json_object" | "json_schema", "schema": {...}?,
    "json_schema": {"schema": {...}}?} (OpenAI's and llama-cpp-python's shapes); grammar: GBNF or Lark text, or
    an object with a ``_grammar`` / ``grammar`` string (llama-cpp-python's LlamaGrammar)."""
    if grammar is not None and response_format is not None and _rf_type(response_format) != "text":
        raise MAQError("give either grammar or response_format, not both")
    if grammar is not None:
        text = grammar if isinstance(grammar, str) else getattr(grammar, "_grammar", getattr(grammar, "grammar", None))
        if not isinstance(text, str) or not text.strip():
            raise MAQError(f"grammar = {grammar!r}: expected GBNF or Lark grammar text")
        llg = _llguidance()
        try:
            return llg.grammar_from("grammar", text)
        except (ValueError, RuntimeError) as exc:
            raise MAQError(f"grammar: {exc}") from None
    if response_format is None:
        return None
    kind = _rf_type(response_format)
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("schema") or {"type": "object"}
    elif kind == "json_schema":
        js = response_format.get("json_schema")
        schema = js.get("schema") if isinstance(js, dict) else None
        schema = schema if schema is not None else response_format.get("schema")
        if not isinstance(schema, dict):
            raise MAQError("response_format json_schema: expected {'json_schema': {'schema': {...}}}")
    else:
        raise MAQError(f"response_format type {kind!r}: expected 'text', 'json_object' or 'json_schema'")
    llg = _llguidance()
    return llg.grammar_from("json_schema", json.dumps(schema))


def _rf_type(rf) -> str:
    if not isinstance(rf, dict) or not isinstance(rf.get("type"), str):
        raise MAQError(f"response_format = {rf!r}: expected {{'type': 'text' | 'json_object' | 'json_schema'}}")
    return rf["type"]


class _Wrapper:
    """What llguidance.TokenizerWrapper reads from a tokenizer: token bytes, EOS/BOS, an encode callable."""

    def __init__(self, tok):
        self._tok = tok
        self.eos_token_id = tok.eos_id if tok.eos_id is not None else 0
        self.bos_token_id = tok.bos_id
        # control tokens are b"\xff" + their text: llguidance's mark for "special, never plain text" (as its
        # llama.cpp binding does), so a grammar cannot spell a string with <|im_start|>
        self.tokens = [tok.token_bytes(i) if not tok.is_control(i) else b"\xff" + tok.tokens[i].encode("utf-8")
                       for i in range(tok.n_vocab)]
        self.special_token_ids = [i for i in range(tok.n_vocab) if tok.is_control(i)]

    def __call__(self, s):
        if isinstance(s, bytes):
            s = s.decode("utf-8", errors="replace")
        return self._tok.encode(s, add_bos=False, special=False)


def _ll_tokenizer(tok):
    """One LLTokenizer per runtime tokenizer (building it costs ~1 s for a 49k vocabulary)."""
    cached = _TOKENIZERS.get(tok)
    if cached is None:
        llg = _llguidance()
        stops = sorted(tok.stop_ids) or [tok.eos_id or 0]
        wrapper = llg.TokenizerWrapper(_Wrapper(tok))
        try:
            cached = llg.LLTokenizer(wrapper, n_vocab=tok.n_vocab, eos_token=stops)
        except TypeError:    # llguidance < 1.7 (the newest aarch64 manylinux2014 wheel is 1.6.0): one EOS id
            eos = tok.eos_id if tok.eos_id in tok.stop_ids else stops[0]
            cached = llg.LLTokenizer(wrapper, n_vocab=tok.n_vocab, eos_token=eos)
        _TOKENIZERS[tok] = cached
    return cached


class Constraint:
    """A grammar matcher over one generation: ``mask(logits)`` -> logits with disallowed tokens at -inf
    (float32 [V], a copy), ``consume(token)`` after each draw; ``done`` once the grammar is complete."""

    def __init__(self, tok, grammar: str):
        llg = _llguidance()
        self.n_vocab = tok.n_vocab
        self.stop_ids = set(tok.stop_ids)
        self.matcher = llg.LLMatcher(_ll_tokenizer(tok), grammar, log_level=0)
        if self.matcher.is_error():
            raise MAQError(f"grammar: {self.matcher.get_error()}")

    def mask(self, logits: np.ndarray) -> np.ndarray:
        bits = np.frombuffer(self.matcher.compute_bitmask(), dtype=np.uint8)
        allowed = np.unpackbits(bits, bitorder="little")[:self.n_vocab].astype(bool)
        if not allowed.any():
            raise MAQError(f"grammar: no token can continue the output ({self.matcher.get_error() or 'dead end'})")
        out = np.array(logits, dtype=np.float32, copy=True)
        out[~allowed] = -np.inf
        return out

    def consume(self, token: int) -> None:
        if token in self.stop_ids:
            return
        if not self.matcher.consume_token(int(token)):
            raise MAQError(f"grammar: token {token} rejected ({self.matcher.get_error()})")

    @property
    def done(self) -> bool:
        return self.matcher.is_stopped()
