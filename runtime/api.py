"""A ``Llama`` shaped like llama-cpp-python's, over the MAQ runtime: ``from maq import Llama``.

Same constructor keywords (``model_path``, ``n_ctx``, ``n_threads``, ``n_batch``, ``seed``, ``verbose``), same
methods (``tokenize``/``detokenize`` on bytes, ``create_completion``/``__call__``, ``create_chat_completion``),
same OpenAI-shaped dicts and stream chunks. With ``echo=True, logprobs=N`` the prompt tokens come back with their
log-probabilities (``None`` for the first, as the OpenAI API does), so log-likelihood scorers work.

The KV cache is kept between calls: a new prompt re-uses the longest common prefix with what is cached
(a chat history is evaluated once). Errors are ``maq.MAQError``.

As llama-cpp-python: ``max_tokens`` <= 0 or None generates until the context is full; special tokens written in a
prompt string are parsed (``tokenize(..., special=True)``); ``embed`` / ``create_embedding`` (with
``embedding=True``: mean-pooled, L2-normalized final hidden states); ``save_state`` / ``load_state``; chat
``logprobs`` / ``top_logprobs`` (a stream carries them in its last chunk); ``response_format`` json_object /
json_schema and ``grammar`` (GBNF or Lark) by constrained sampling (``runtime/grammar.py``, llguidance); ``tools``
where the chat template reads them (``<tool_call>`` blocks -> ``tool_calls``), a ``MAQError`` where it does not.
Keyword arguments MAQ does not use are named in one warning; invalid UTF-8 (lone surrogates) becomes U+FFFD.

Thread safety: one lock per ``Llama``; concurrent calls queue (a stream holds the lock from its first chunk until
it is exhausted or closed). Two streams of one object interleaved in ONE thread would wait on each other forever:
that is refused with a ``MAQError``.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import re
import sys
import threading
import time
import uuid
import warnings
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import numpy as np

from maq.errors import MAQError
from maq.runtime import chat as chat_mod
from maq.runtime import grammar as grammar_mod
from maq.runtime import gguf_loader
from maq.runtime import model as model_mod
from maq.runtime import tokenizer as tok_mod
from maq.runtime.sampling import Sampler, SamplingParams, log_softmax

log = logging.getLogger(__name__)


def _resolve_path(path) -> str:
    if str(path) == "smollm2":
        from maq.runtime.models import smollm2_path
        return str(smollm2_path())
    return str(path)


def clean_text(text: str) -> str:
    """A str the tokenizer accepts: lone surrogates (invalid UTF-8 read with surrogateescape, e.g. from argv or
    stdin) become U+FFFD replacement characters."""
    if not any("\ud800" <= c <= "\udfff" for c in text):
        return text
    try:
        raw = text.encode("utf-8", errors="surrogateescape")
    except UnicodeEncodeError:
        raw = text.encode("utf-8", errors="surrogatepass")
    return raw.decode("utf-8", errors="replace")


def warn_unused(where: str, kwargs: dict) -> None:
    """One warning naming every keyword argument that MAQ does not use (never a silent ignore)."""
    if kwargs:
        warnings.warn(f"{where}: ignoring unsupported arguments: {', '.join(sorted(kwargs))}", stacklevel=3)


@dataclass
class LlamaState:
    """What ``save_state`` returns: the tokens in the context (their K/V are recomputed by ``load_state``: the C
    engine's cache is not exposed) and the seed source, so a loaded state continues as the saved one would."""
    input_ids: np.ndarray
    n_tokens: int
    rng_state: dict = field(default_factory=dict)


def _locked(fn):
    @functools.wraps(fn)
    def inner(self, *a, **kw):
        with self._acquire():
            return fn(self, *a, **kw)
    return inner


class _LazyLogSoftmax:
    """Row i of a logits matrix, turned into log-probabilities only when needed (no [n, V] float64 copy)."""

    __slots__ = ("logits", "i")

    def __init__(self, logits: np.ndarray, i: int):
        self.logits, self.i = logits, i


class _Picked:
    """What logprobs needs from one generated token's distribution: its own log-probability and the top n."""

    __slots__ = ("token", "value", "top")

    def __init__(self, logits: np.ndarray, token: int, n_top: int):
        lp = log_softmax(logits)
        self.token, self.value = token, float(lp[token])
        idx = np.argpartition(-lp, min(n_top, lp.size - 1))[:n_top] if n_top else np.zeros(0, dtype=np.int64)
        idx = idx[np.argsort(-lp[idx])]
        self.top = [(int(j), float(lp[j])) for j in idx]


def _pick(row, token: int, n_top: int) -> _Picked:
    if isinstance(row, _Picked):
        return row
    return _Picked(row.logits[row.i] if isinstance(row, _LazyLogSoftmax) else row, token, n_top)


class StopMatcher:
    """Streams text while holding back any tail that could still become one of the stop strings."""

    def __init__(self, stops: Sequence[str]):
        self.stops = [s for s in stops if s]
        self.text = ""      # all text so far
        self.sent = 0       # chars already released
        self.stopped = False

    def push(self, piece: str) -> str:
        """Add text; return what can be released now ('' once a stop string was seen)."""
        if self.stopped:
            return ""
        self.text += piece
        cut = None
        for s in self.stops:
            i = self.text.find(s, max(0, self.sent - len(s)))
            if i >= 0 and (cut is None or i < cut):
                cut = i
        if cut is not None:
            self.stopped = True
            self.text = self.text[:cut]
            out = self.text[self.sent:] if cut > self.sent else ""
            self.sent = len(self.text)
            return out
        hold = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.text) - self.sent), 0, -1):
                if self.text.endswith(s[:k]):
                    hold = max(hold, k)
                    break
        end = len(self.text) - hold
        out = self.text[self.sent:end]
        self.sent = max(self.sent, end)
        return out

    def flush(self) -> str:
        out = self.text[self.sent:]
        self.sent = len(self.text)
        return out


class Llama:
    """Load a GGUF (MAQ2 or standard types) and generate. Mirrors llama_cpp.Llama's common surface.

    MAQ extras: ``engine`` ("auto", "c", "numpy"), ``exact`` (dequantize Q8_0/MAQ2 to F32 at load: float
    products everywhere), ``dequant`` (what Q4_0/Q4_1/k-quant tensors become: "auto", "f32", "q8_0"); see
    ``gguf_loader.load``. ``use_mmap`` as llama-cpp-python's, except that its default None picks: huge-page memory
    where the kernel offers it and the file fits in half the available memory (faster), else the mapped file."""

    def __init__(self, model_path: str, *, n_ctx: int = 512, n_threads: int | None = None, n_batch: int = 128,
                 seed: int | None = None, verbose: bool = True, engine: str = "auto", exact: bool = False,
                 dequant: str = "auto", embedding: bool = False, use_mmap: bool | None = None, **kwargs):
        if kwargs.get("n_gpu_layers", 1) in (0, None):      # CPU only, as asked: nothing ignored
            kwargs.pop("n_gpu_layers")
        warn_unused("Llama", kwargs)                           # n_gpu_layers > 0 included: MAQ runs on the CPU
        self._lock = threading.Lock()
        self._owner: int | None = None
        self.embedding = bool(embedding)
        self._embedder = None
        # set by the one caller that owns this object (the server's slot): generation stops at the next token
        self.cancel_event: threading.Event | None = None
        self.model_path = _resolve_path(model_path)
        self.verbose = verbose
        # arguments first (cheap), so a typo does not wait for the model to load
        model_mod.check_threads(n_threads)
        if n_ctx is not None and n_ctx != 0:     # 0 / None: the model's context length (llama-cpp-python)
            model_mod.check_positive("n_ctx", n_ctx)
        model_mod.check_positive("n_batch", n_batch)
        if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)):
            raise MAQError(f"seed = {seed!r}: expected an integer (negative: random) or None")
        t0 = time.perf_counter()
        self._lm = gguf_loader.load(self.model_path, exact=exact, dequant=dequant, use_mmap=use_mmap)
        self.tokenizer_ = tok_mod.from_gguf(self._lm.gguf)
        if self.tokenizer_.n_vocab != self._lm.config.vocab_size:
            raise MAQError(f"{self.model_path}: tokenizer has {self.tokenizer_.n_vocab} tokens, model vocabulary "
                           f"{self._lm.config.vocab_size}")
        if not n_ctx:
            n_ctx = self._lm.config.context_length
        self._n_ctx = model_mod.check_positive("n_ctx", n_ctx)
        if self._n_ctx > self._lm.config.context_length:
            log.warning("n_ctx=%d exceeds the model's training context (%d): quality may drop past it",
                        self._n_ctx, self._lm.config.context_length)
        self.model = model_mod.create(self._lm, n_ctx=self._n_ctx, n_threads=n_threads, engine=engine,
                                      max_batch=n_batch)
        self._engine = engine
        self.n_threads = self.model.n_threads
        self.n_batch = n_batch
        self._seed = seed if seed is not None and seed >= 0 and seed != 0xFFFFFFFF else None
        self._rng_seed_source = np.random.default_rng(self._seed)
        self._tokens: list[int] = []          # tokens whose K/V are in the cache, positions 0..len-1
        self._evaluated = 0
        self.last_timings: dict = {}
        self.metadata = {k: v for k, v in self._lm.metadata.items() if not isinstance(v, (list, np.ndarray))}
        if verbose:
            print(f"maq: loaded {self.model_path} in {time.perf_counter() - t0:.2f} s "
                  f"({self.model.__class__.__name__}, {self.n_threads} threads, n_ctx {self._n_ctx})",
                  file=sys.stderr)

    # ------------------------------------------------------------------ basics
    def n_ctx(self) -> int:
        return self._n_ctx

    def n_vocab(self) -> int:
        return self.tokenizer_.n_vocab

    def token_bos(self) -> int:
        return self.tokenizer_.bos_id if self.tokenizer_.bos_id is not None else -1

    def token_eos(self) -> int:
        return self.tokenizer_.eos_id if self.tokenizer_.eos_id is not None else -1

    def tokenize(self, text: bytes | str, add_bos: bool = True, special: bool = False) -> list[int]:
        """Token ids of text (bytes as llama-cpp-python takes, or str). BOS only if ``add_bos`` and the file's
        add_bos_token say so."""
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        elif not isinstance(text, str):
            raise MAQError(f"tokenize: expected bytes or str, got {type(text).__name__}")
        text = clean_text(text)
        return self.tokenizer_.encode(text, add_bos=add_bos and self.tokenizer_.add_bos, special=special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        b = self.tokenizer_.detokenize_bytes(tokens, special=special)
        if prev_tokens and self.tokenizer_.model_type == "llama" and self.tokenizer_.add_space_prefix:
            b = self.tokenizer_.detokenize_bytes(list(prev_tokens) + list(tokens), special)[
                len(self.tokenizer_.detokenize_bytes(prev_tokens, special)):]
        return b

    @contextlib.contextmanager
    def _acquire(self):
        """Hold this object's lock (calls from other threads queue); refuse a same-thread re-entry (deadlock)."""
        me = threading.get_ident()
        if self._owner == me:
            raise MAQError("this Llama is busy in this thread (a stream from it is still open): exhaust or close() "
                           "that stream first")
        self._lock.acquire()
        self._owner = me
        try:
            yield
        finally:
            self._owner = None
            self._lock.release()

    def _locked_iter(self, it: Iterator[dict]) -> Iterator[dict]:
        """A stream that holds the lock from its first chunk until it ends or is closed."""
        with self._acquire():
            yield from it

    @_locked
    def reset(self) -> None:
        """Forget the cached context."""
        self._tokens = []

    def new_context(self) -> "Llama":
        """Another ``Llama`` over the same loaded weights and tokenizer, with its own KV cache, lock and seed
        source (a server slot: N slots cost N KV caches, not N copies of the weights)."""
        other = object.__new__(type(self))
        other.__dict__.update(self.__dict__)
        other.model = model_mod.create(self._lm, n_ctx=self._n_ctx, n_threads=self.n_threads, engine=self._engine,
                                       max_batch=self.n_batch)
        other._lock, other._owner, other.cancel_event = threading.Lock(), None, None
        other._tokens, other._embedder, other.last_timings = [], None, {}
        other._rng_seed_source = np.random.default_rng(int(self._rng_seed_source.integers(0, 2**63 - 1)))
        return other

    @classmethod
    def from_pretrained(cls, repo_id: str, filename: str, **kwargs) -> "Llama":
        """Download ``filename`` from a Hugging Face repo (huggingface_hub) and load it, as llama-cpp-python."""
        try:
            from huggingface_hub import hf_hub_download
        except ImportError:
            raise MAQError("Llama.from_pretrained needs huggingface_hub (pip install huggingface_hub)") from None
        try:
            path = hf_hub_download(repo_id=repo_id, filename=filename)
        except Exception as exc:  # noqa: BLE001 - network/auth/not-found: one line
            raise MAQError(f"from_pretrained({repo_id!r}, {filename!r}): {type(exc).__name__}: {exc}") from None
        return cls(path, **kwargs)

    # ------------------------------------------------------------------ state
    @_locked
    def save_state(self) -> LlamaState:
        """The context (token ids) and the seed source; ``load_state`` restores both."""
        return LlamaState(input_ids=np.array(self._tokens, dtype=np.int32), n_tokens=len(self._tokens),
                          rng_state=dict(self._rng_seed_source.bit_generator.state))

    @_locked
    def load_state(self, state: LlamaState) -> None:
        """Restore a ``save_state``: the K/V of its tokens are recomputed (one prompt evaluation)."""
        if not isinstance(state, LlamaState):
            raise MAQError(f"load_state: expected a LlamaState from save_state(), got {type(state).__name__}")
        toks = [int(t) for t in np.asarray(state.input_ids).reshape(-1)]
        if len(toks) > self._n_ctx or any(not 0 <= t < self.n_vocab() for t in toks):
            raise MAQError(f"load_state: {len(toks)} tokens do not fit this model (n_ctx {self._n_ctx}, "
                           f"vocabulary {self.n_vocab()})")
        self._tokens = []
        if toks:
            self.model.forward(toks, 0, model_mod.LOGITS_NONE)
            self._tokens = toks
        if state.rng_state:
            self._rng_seed_source.bit_generator.state = state.rng_state

    # ------------------------------------------------------------------ embeddings
    def _embedding_rows(self, tokens: list[int]) -> np.ndarray:
        """Final hidden states after the output norm, float32 [n, dim] (llama.cpp's ``result_norm``), from the
        numpy reference forward with the output head swapped for the identity (built on first use)."""
        if self._embedder is None:
            from maq.runtime.reference import ReferenceModel

            ref = ReferenceModel(self._lm, n_ctx=self._n_ctx)
            ref.output = np.eye(self._lm.config.dim, dtype=ref.dt)
            ref.act_quant = False
            self._embedder = ref
        return self._embedder.forward(tokens, 0, all_logits=True)

    def _embed_tokens(self, inputs, truncate: bool) -> tuple[list[list[int]], bool]:
        if not self.embedding:
            raise MAQError("embeddings need Llama(..., embedding=True) (as llama-cpp-python)")
        single = isinstance(inputs, str)
        items = [inputs] if single else inputs
        if not isinstance(items, (list, tuple)) or not items or not all(isinstance(x, str) for x in items):
            raise MAQError("input: expected a non-empty string or a list of strings")
        out = []
        for text in items:
            toks = self.tokenize(text, add_bos=True, special=True) or ([self.token_bos()] if self.token_bos() >= 0
                                                                        else [])
            if not toks:
                raise MAQError("input: an empty string has no tokens to embed (the model has no BOS token)")
            if len(toks) > self._n_ctx:
                if not truncate:
                    raise MAQError(f"input of {len(toks)} tokens exceeds n_ctx={self._n_ctx}")
                toks = toks[:self._n_ctx]
            out.append(toks)
        return out, single

    @_locked
    def embed(self, input: str | list[str], normalize: bool = True, truncate: bool = True,
              return_count: bool = False):
        """Mean-pooled (then L2-normalized) final hidden states: list[float] [dim] for a string, a list of them
        for a list of strings (llama-cpp-python's ``embed`` with mean pooling)."""
        batches, single = self._embed_tokens(input, truncate)
        vecs = []
        for toks in batches:
            v = self._embedding_rows(toks).astype(np.float64).mean(axis=0)
            if normalize:
                v = v / max(float(np.linalg.norm(v)), 1e-12)
            vecs.append([float(x) for x in v])
        n = sum(len(t) for t in batches)
        res = vecs[0] if single else vecs
        return (res, n) if return_count else res

    def create_embedding(self, input: str | list[str], model: str | None = None, **kwargs) -> dict:
        """OpenAI-shaped embeddings response for ``input`` (a string or a list of strings)."""
        warn_unused("create_embedding", kwargs)
        vecs, n = self.embed(input, return_count=True)
        if isinstance(input, str):
            vecs = [vecs]
        return {"object": "list", "model": model or self.model_path,
                "data": [{"object": "embedding", "embedding": v, "index": i} for i, v in enumerate(vecs)],
                "usage": {"prompt_tokens": n, "total_tokens": n}}

    # ------------------------------------------------------------------ evaluation
    def _eval(self, tokens: list[int], all_logits: bool = False) -> np.ndarray:
        """Make the cache hold exactly ``tokens``; return logits of the last token ([V]) or of every token
        ([n, V], then nothing is re-used so every row is fresh)."""
        n = len(tokens)
        if n == 0:
            raise MAQError("empty prompt: nothing to evaluate")
        if n > self._n_ctx:
            raise MAQError(f"prompt of {n} tokens does not fit the context window n_ctx={self._n_ctx}")
        if all_logits:
            keep = 0
        else:
            keep = 0
            for a, b in zip(self._tokens, tokens):
                if a != b:
                    break
                keep += 1
            keep = min(keep, n - 1)      # the last token is always run, for its logits
        self._tokens = self._tokens[:keep]
        mode = model_mod.LOGITS_ALL if all_logits else model_mod.LOGITS_LAST
        self._evaluated = n - keep
        out = self.model.forward(tokens[keep:], keep, mode)
        self._tokens = list(tokens)
        self._check_finite(out, n - 1)
        return out

    def _step(self, token: int) -> np.ndarray:
        pos = len(self._tokens)
        out = self.model.step(int(token), pos)
        self._tokens.append(int(token))
        self._check_finite(out, pos)
        return out

    def _check_finite(self, logits: np.ndarray, pos: int) -> None:
        """NaN/inf logits come from corrupt or overflowing weights: say so instead of sampling garbage."""
        if not np.isfinite(logits).all():
            self._tokens = []          # the cache holds non-finite values: nothing in it can be re-used
            bad = self._lm.find_non_finite()
            why = f"tensor {bad} holds NaN/inf values" if bad else "the weights are corrupt or overflow float32"
            raise MAQError(f"{self.model_path}: the forward pass produced non-finite logits (NaN/inf) at position "
                           f"{pos}: {why}")

    def _sampler(self, temperature, top_k, top_p, min_p, repeat_penalty, seed, repeat_last_n: int = 64) -> Sampler:
        if seed is None or seed < 0:
            seed = int(self._rng_seed_source.integers(0, 2**63 - 1))
        return Sampler(SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                      repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n, seed=seed))

    def generate_tokens(self, prompt_tokens: list[int], sampler: Sampler, max_tokens: int | None,
                        all_logits: bool = False, constraint: "grammar_mod.Constraint | None" = None
                        ) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        """Yield (token, logits row the token was drawn from, finish) ... ; the last item has token -1 and
        finish in {'stop', 'length'} ('length' also when the context is full). ``constraint``: only tokens its
        grammar allows are drawn, and generation stops once the grammar is complete. Not locked: callers hold
        the lock (the public methods do)."""
        t0 = time.perf_counter()
        first = self._eval(list(prompt_tokens), all_logits=all_logits)
        self.prompt_logits = first if all_logits else None
        logits = first[-1] if all_logits else first
        t1 = time.perf_counter()
        n_prompt = len(prompt_tokens)
        # prompt_evaluated: tokens actually run (the rest was re-used from the cache)
        self.last_timings = {"prompt_tokens": n_prompt, "prompt_evaluated": self._evaluated, "prompt_s": t1 - t0,
                             "gen_tokens": 0, "gen_s": 0.0, "context_full": False}
        limit = self._n_ctx - n_prompt
        if max_tokens is not None and max_tokens > 0:
            limit = min(limit, max_tokens)
        history = list(prompt_tokens)
        n = 0
        stop_ids = self.tokenizer_.stop_ids
        finish = "length"
        while n < limit:
            if self.cancel_event is not None and self.cancel_event.is_set():
                finish = "cancelled"
                break
            if constraint is not None:
                tok = sampler(constraint.mask(logits), history)
                constraint.consume(tok)
            else:
                tok = sampler(logits, history)
            yield tok, logits, None
            n += 1
            if tok in stop_ids or (constraint is not None and constraint.done):
                finish = "stop"
                break
            history.append(tok)
            if n >= limit:
                break
            if len(self._tokens) >= self._n_ctx:
                break
            logits = self._step(tok)
            self.last_timings["gen_tokens"] = n
            self.last_timings["gen_s"] = time.perf_counter() - t1
        self.last_timings["gen_tokens"] = n
        self.last_timings["gen_s"] = time.perf_counter() - t1
        if finish == "length" and n_prompt + n >= self._n_ctx:
            self.last_timings["context_full"] = True
            log.warning("context window full (n_ctx=%d): generation stopped", self._n_ctx)
        yield -1, None, finish

    # ------------------------------------------------------------------ completions
    def _completion_stream(self, prompt, max_tokens, temperature, top_p, top_k, min_p, repeat_penalty, stop,
                           echo, logprobs, seed, chat: bool, grammar: str | None = None,
                           repeat_last_n: int = 64) -> Iterator[dict]:
        """Validate every argument now (a MAQError at the call, even for streams), then return the events."""
        if isinstance(prompt, (list, tuple, np.ndarray)):
            if len(prompt) == 0:
                raise MAQError("empty prompt: give at least one token")
            if not all(isinstance(t, (int, np.integer)) and not isinstance(t, bool) for t in prompt):
                raise MAQError("prompt: a list of token ids must hold integers only")
            n_vocab = self.n_vocab()
            bad = [int(t) for t in prompt if not 0 <= t < n_vocab]
            if bad:
                raise MAQError(f"prompt: token id {bad[0]} outside the vocabulary of {n_vocab}")
        elif isinstance(prompt, str):
            prompt = clean_text(prompt)
            if not prompt:
                raise MAQError("empty prompt: give some text (or a list of token ids)")
        else:
            raise MAQError(f"prompt: expected a string or a list of token ids, got {type(prompt).__name__}")
        if max_tokens is not None and (not isinstance(max_tokens, (int, np.integer)) or isinstance(max_tokens, bool)):
            raise MAQError(f"max_tokens = {max_tokens!r}: expected a number of tokens (<= 0 or None: until the "
                           "context window is full)")
        if max_tokens is not None and max_tokens <= 0:
            max_tokens = None            # llama-cpp-python: generate until the context window is full
        if logprobs is not None and (not isinstance(logprobs, (int, np.integer)) or isinstance(logprobs, bool)
                                     or logprobs < 0):
            raise MAQError(f"logprobs = {logprobs!r}: expected None or an integer >= 0")
        if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)):
            raise MAQError(f"seed = {seed!r}: expected an integer (negative: random) or None")
        if stop is not None and not isinstance(stop, str) and not (
                isinstance(stop, (list, tuple)) and all(isinstance(x, str) for x in stop)):
            raise MAQError(f"stop = {stop!r}: expected a string or a list of strings")
        SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                       repeat_penalty=repeat_penalty, repeat_last_n=repeat_last_n).validate()
        prompt_tokens, prompt_text = self._prompt_tokens(prompt, chat)
        constraint = grammar_mod.Constraint(self.tokenizer_, grammar) if grammar else None
        return self._completion_events(prompt_tokens, prompt_text, max_tokens, temperature, top_p, top_k, min_p,
                                       repeat_penalty, stop, echo, logprobs, seed, constraint, repeat_last_n)

    def _prompt_tokens(self, prompt, chat: bool) -> tuple[list[int], str]:
        if isinstance(prompt, (list, tuple, np.ndarray)):
            prompt_tokens = [int(t) for t in prompt]
            prompt_text = self.detokenize(prompt_tokens).decode("utf-8", errors="replace")
        else:
            prompt_text = prompt
            bos_text = self.tokenizer_.tokens[self.tokenizer_.bos_id] if self.tokenizer_.bos_id is not None else None
            add_bos = not (bos_text and prompt.startswith(bos_text))
            # special tokens in the text are parsed (tokenize(..., special=True)), as llama-cpp-python does
            prompt_tokens = self.tokenize(prompt, add_bos=add_bos, special=True)
        if not prompt_tokens:
            prompt_tokens = [self.token_bos()] if self.token_bos() >= 0 else []
        if not prompt_tokens:
            raise MAQError("empty prompt and the model has no BOS token")
        if len(prompt_tokens) >= self._n_ctx:
            raise MAQError(f"prompt of {len(prompt_tokens)} tokens does not fit the context window "
                           f"n_ctx={self._n_ctx} (with room for one generated token)")
        return prompt_tokens, prompt_text

    def _completion_events(self, prompt_tokens, prompt_text, max_tokens, temperature, top_p, top_k, min_p,
                           repeat_penalty, stop, echo, logprobs, seed, constraint=None,
                           repeat_last_n: int = 64) -> Iterator[dict]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        yield {"prompt": prompt_text}
        sampler = self._sampler(temperature, top_k, top_p, min_p, repeat_penalty, seed, repeat_last_n)
        want_lp = logprobs is not None
        matcher = StopMatcher(stops)
        decoder = self.tokenizer_.stream()
        gen_tokens: list[int] = []
        lp_rows: list[np.ndarray] = []
        finish = "length"
        for tok, row, fin in self.generate_tokens(prompt_tokens, sampler, max_tokens, all_logits=want_lp and echo,
                                                  constraint=constraint):
            if fin is not None:
                finish = fin
                break
            if tok in self.tokenizer_.stop_ids:
                continue
            gen_tokens.append(tok)
            if want_lp:
                lp_rows.append(_Picked(row, tok, logprobs))
            piece = matcher.push(decoder.feed(tok))
            if piece:
                yield {"text": piece, "token": tok}
            if matcher.stopped:
                finish = "stop"
                break
        if not matcher.stopped:
            tail = matcher.push(decoder.flush())
            tail += matcher.flush() if not matcher.stopped else ""
            if tail:
                yield {"text": tail, "token": None}
        if matcher.stopped:
            finish = "stop"
            # drop the tokens past the stop string (the last kept token may end inside it)
            keep, text_len = 0, 0
            while keep < len(gen_tokens) and text_len < len(matcher.text):
                keep += 1
                text_len = len(self.tokenizer_.decode(gen_tokens[:keep]))
            gen_tokens, lp_rows = gen_tokens[:keep], lp_rows[:keep]
        result = {"finish_reason": finish, "prompt_tokens": prompt_tokens, "completion_tokens": gen_tokens,
                  "text": matcher.text, "prompt_text": prompt_text}
        if want_lp:
            result["logprobs"] = self._logprobs(prompt_tokens, gen_tokens, lp_rows, logprobs, echo, prompt_text)
        yield {"done": result}

    def _logprobs(self, prompt_tokens, gen_tokens, gen_rows, n_top, echo, prompt_text) -> dict:
        tok = self.tokenizer_
        if echo:
            pl = self.prompt_logits
            all_tokens = list(prompt_tokens) + gen_tokens
            # row i predicts token i+1: token 0 has no log-probability (rows converted one at a time, lazily)
            rows = [None] + [_LazyLogSoftmax(pl, i) for i in range(len(prompt_tokens) - 1)] + gen_rows
        else:
            all_tokens, rows = gen_tokens, list(gen_rows)
        out = {"tokens": [], "text_offset": [], "token_logprobs": [], "top_logprobs": []}
        text_so_far = b""
        offset_base = len(prompt_text) if not echo else 0
        for i, (t, row) in enumerate(zip(all_tokens, rows)):
            piece_b = tok.detokenize_bytes([t], special=False)
            if echo and i == 0 and t == tok.bos_id:
                continue
            out["text_offset"].append(offset_base + len(text_so_far.decode("utf-8", errors="ignore")))
            text_so_far += piece_b
            s = piece_b.decode("utf-8", errors="replace")
            out["tokens"].append(s)
            if row is None:
                out["token_logprobs"].append(None)
                out["top_logprobs"].append(None)
                continue
            pk = _pick(row, t, n_top)
            out["token_logprobs"].append(pk.value)
            top = {tok.detokenize_bytes([j]).decode("utf-8", errors="replace"): v for j, v in pk.top}
            top[s] = pk.value
            out["top_logprobs"].append(top)
        if echo and out["token_logprobs"]:
            out["token_logprobs"][0] = None
            out["top_logprobs"][0] = None
        return out

    def create_completion(self, prompt: str | list[int], suffix: str | None = None, max_tokens: int | None = 16,
                          temperature: float = 0.8, top_p: float = 0.95, min_p: float = 0.05,
                          typical_p: float = 1.0, logprobs: int | None = None, echo: bool = False,
                          stop: str | list[str] | None = None, frequency_penalty: float = 0.0,
                          presence_penalty: float = 0.0, repeat_penalty: float = 1.0, top_k: int = 40,
                          stream: bool = False, seed: int | None = None, grammar=None, response_format=None,
                          repeat_last_n: int = 64, model: str | None = None, **kwargs):
        """OpenAI-shaped text completion (dict, or an iterator of chunks when ``stream``). ``max_tokens`` <= 0 or
        None: until the context window is full. ``grammar`` (GBNF/Lark text) or ``response_format``
        (json_object / json_schema): constrained sampling (llguidance)."""
        if suffix:
            raise MAQError("suffix (fill-in-the-middle) is not supported")
        _unsupported_values(dict(typical_p=(typical_p, 1.0), frequency_penalty=(frequency_penalty, 0.0),
                                 presence_penalty=(presence_penalty, 0.0)), kwargs)
        warn_unused("create_completion", kwargs)
        gtext = grammar_mod.grammar_text(response_format, grammar)
        gen = self._completion_stream(prompt, max_tokens, temperature, top_p, top_k, min_p, repeat_penalty, stop,
                                      echo, logprobs, seed, chat=False, grammar=gtext, repeat_last_n=repeat_last_n)
        cid, created = f"cmpl-{uuid.uuid4()}", int(time.time())
        if stream:
            return self._locked_iter(self._completion_chunks(gen, cid, created, echo))
        res = None
        with self._acquire():
            for ev in gen:
                if "done" in ev:
                    res = ev["done"]
        text = (res["prompt_text"] if echo else "") + res["text"]
        n_p, n_c = len(res["prompt_tokens"]), len(res["completion_tokens"])
        return {"id": cid, "object": "text_completion", "created": created, "model": self.model_path,
                "choices": [{"text": text, "index": 0, "logprobs": res.get("logprobs"),
                             "finish_reason": res["finish_reason"]}],
                "usage": {"prompt_tokens": n_p, "completion_tokens": n_c, "total_tokens": n_p + n_c}}

    def _completion_chunks(self, gen, cid, created, echo) -> Iterator[dict]:
        for ev in gen:
            if "prompt" in ev:
                if echo and ev["prompt"]:
                    yield {"id": cid, "object": "text_completion", "created": created, "model": self.model_path,
                           "choices": [{"text": ev["prompt"], "index": 0, "logprobs": None, "finish_reason": None}]}
                continue
            if "done" in ev:
                res = ev["done"]
                yield {"id": cid, "object": "text_completion", "created": created, "model": self.model_path,
                       "choices": [{"text": "", "index": 0, "logprobs": res.get("logprobs"),
                                    "finish_reason": res["finish_reason"]}]}
                return
            text = ev["text"]
            yield {"id": cid, "object": "text_completion", "created": created, "model": self.model_path,
                   "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": None}]}

    def __call__(self, prompt, **kwargs):
        return self.create_completion(prompt, **kwargs)

    # ------------------------------------------------------------------ chat
    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
        return chat_mod.render_for(self.tokenizer_, messages, add_generation_prompt=add_generation_prompt, **extra)

    def supports_tools(self) -> bool:
        """Whether the file's chat template reads a ``tools`` variable."""
        return bool(re.search(r"\btools\b", self.tokenizer_.chat_template or ""))

    def create_chat_completion(self, messages: list[dict], temperature: float = 0.2, top_p: float = 0.95,
                               top_k: int = 40, min_p: float = 0.05, stream: bool = False,
                               stop: str | list[str] | None = None, seed: int | None = None,
                               max_tokens: int | None = None, repeat_penalty: float = 1.0,
                               response_format: dict | None = None, grammar=None, tools: list | None = None,
                               tool_choice=None, logprobs: bool | None = None, top_logprobs: int | None = None,
                               typical_p: float = 1.0, frequency_penalty: float = 0.0,
                               presence_penalty: float = 0.0, repeat_last_n: int = 64, model: str | None = None,
                               **kwargs):
        """OpenAI-shaped chat completion over the GGUF's chat template. ``tools``: only where the template reads
        them (the reply's ``<tool_call>{json}</tool_call>`` blocks become ``tool_calls``); ``logprobs`` /
        ``top_logprobs``: OpenAI's chat logprobs; ``response_format`` / ``grammar``: constrained sampling."""
        _unsupported_values(dict(typical_p=(typical_p, 1.0), frequency_penalty=(frequency_penalty, 0.0),
                                 presence_penalty=(presence_penalty, 0.0)), kwargs)
        for k in ("functions", "function_call"):
            if kwargs.get(k):
                raise MAQError(f"{k} (the legacy function-calling API) is not supported: use tools=")
            kwargs.pop(k, None)
        warn_unused("create_chat_completion", kwargs)
        messages = _check_messages(messages)
        extra = {}
        if tools:
            if not self.supports_tools():
                raise MAQError(f"{self.model_path}: tools= given but the chat template (tokenizer.chat_template) "
                               "does not support tools")
            if stream:
                raise MAQError("tools= with stream=True is not supported: use stream=False")
            if tool_choice not in (None, "auto", "none"):
                raise MAQError(f"tool_choice = {tool_choice!r}: only 'auto' and 'none' are supported")
            extra["tools"] = tools
        if top_logprobs is not None and not logprobs:
            raise MAQError("top_logprobs needs logprobs=True")
        if top_logprobs is not None and (not isinstance(top_logprobs, int) or isinstance(top_logprobs, bool)
                                         or not 0 <= top_logprobs <= 20):
            raise MAQError(f"top_logprobs = {top_logprobs!r}: expected an integer 0..20 (OpenAI's range)")
        n_lp = (top_logprobs or 0) if logprobs else None
        gtext = grammar_mod.grammar_text(response_format, grammar)
        prompt = self.apply_chat_template(messages, **extra)
        gen = self._completion_stream(prompt, max_tokens, temperature, top_p, top_k, min_p, repeat_penalty, stop,
                                      False, n_lp, seed, chat=True, grammar=gtext, repeat_last_n=repeat_last_n)
        cid, created = f"chatcmpl-{uuid.uuid4()}", int(time.time())
        if stream:
            return self._locked_iter(self._chat_chunks(gen, cid, created))
        res = None
        with self._acquire():
            for ev in gen:
                if "done" in ev:
                    res = ev["done"]
        n_p, n_c = len(res["prompt_tokens"]), len(res["completion_tokens"])
        message: dict = {"role": "assistant", "content": res["text"]}
        finish = res["finish_reason"]
        if tools:
            calls = _tool_calls(res["text"])
            if calls:
                message = {"role": "assistant", "content": None, "tool_calls": calls}
                finish = "tool_calls"
        return {"id": cid, "object": "chat.completion", "created": created, "model": self.model_path,
                "choices": [{"index": 0, "message": message, "logprobs": _chat_logprobs(res.get("logprobs")),
                             "finish_reason": finish}],
                "usage": {"prompt_tokens": n_p, "completion_tokens": n_c, "total_tokens": n_p + n_c}}

    def _chat_chunks(self, gen, cid, created) -> Iterator[dict]:
        head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": self.model_path}
        yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant"}, "logprobs": None,
                                    "finish_reason": None}]}
        for ev in gen:
            if "prompt" in ev:
                continue
            if "done" in ev:
                yield {**head, "choices": [{"index": 0, "delta": {},
                                            "logprobs": _chat_logprobs(ev["done"].get("logprobs")),
                                            "finish_reason": ev["done"]["finish_reason"]}]}
                return
            yield {**head, "choices": [{"index": 0, "delta": {"content": ev["text"]}, "logprobs": None,
                                        "finish_reason": None}]}


def _unsupported_values(values: dict, kwargs: dict) -> None:
    """Sampling options MAQ does not implement: moved into kwargs (so they are warned about) unless left at the
    value that means 'off'."""
    for name, (v, off) in values.items():
        if v is not None and v != off:
            kwargs[name] = v


def _check_messages(messages) -> list[dict]:
    """OpenAI messages -> [{'role', 'content': str, ...}]: text parts joined, None content (assistant tool calls)
    as '', invalid UTF-8 replaced."""
    bad = MAQError("messages: expected a non-empty list of {'role': str, 'content': str} dicts")
    if not isinstance(messages, (list, tuple)) or not messages:
        raise bad
    out = []
    for m in messages:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise bad
        c = m.get("content")
        if c is None and (m.get("tool_calls") or m["role"] == "assistant"):
            c = ""
        elif isinstance(c, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in c):
                raise MAQError("messages: content parts other than {'type': 'text', 'text': str} are not supported")
            c = "".join(p["text"] for p in c)
        if not isinstance(c, str):
            raise bad
        out.append({**m, "content": clean_text(c)})
    return out


_TOOL_CALL = re.compile(r"<tool_call>\s*(\{.*?\})\s*</tool_call>", re.S)


def _tool_calls(text: str) -> list[dict]:
    """``<tool_call>{"name": ..., "arguments": {...}}</tool_call>`` blocks (Hermes/Qwen/SmolLM3 convention) as
    OpenAI tool_calls; blocks that are not such JSON are left as text."""
    calls = []
    for m in _TOOL_CALL.finditer(text):
        try:
            obj = json.loads(m.group(1))
        except ValueError:
            continue
        if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
            continue
        args = obj.get("arguments", obj.get("parameters", {}))
        calls.append({"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
                      "function": {"name": obj["name"],
                                   "arguments": args if isinstance(args, str) else json.dumps(args)}})
    return calls


def _chat_logprobs(lp: dict | None) -> dict | None:
    """Completion-shaped logprobs -> OpenAI chat shape {'content': [{token, logprob, bytes, top_logprobs}]}."""
    if lp is None:
        return None
    content = []
    for tok, v, top in zip(lp["tokens"], lp["token_logprobs"], lp["top_logprobs"]):
        tops = sorted((top or {}).items(), key=lambda kv: -kv[1])
        content.append({"token": tok, "logprob": v, "bytes": list(tok.encode("utf-8")),
                        "top_logprobs": [{"token": t, "logprob": x, "bytes": list(t.encode("utf-8"))}
                                         for t, x in tops]})
    return {"content": content}
