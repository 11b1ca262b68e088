"""A ``Llama`` shaped like llama-cpp-python's, over the MAQ runtime: ``from maq import Llama``.

Same constructor keywords (``model_path``, ``n_ctx``, ``n_threads``, ``n_batch``, ``seed``, ``verbose``), same
methods (``tokenize``/``detokenize`` on bytes, ``create_completion``/``__call__``, ``create_chat_completion``),
same OpenAI-shaped dicts and stream chunks. With ``echo=True, logprobs=N`` the prompt tokens come back with their
log-probabilities (``None`` for the first, as the OpenAI API does), so log-likelihood scorers work.

The KV cache is kept between calls: a new prompt re-uses the longest common prefix with what is cached
(a chat history is evaluated once). Errors are ``maq.MAQError``.
"""
from __future__ import annotations

import logging
import sys
import time
import uuid
from typing import Iterator, Sequence

import numpy as np

from maq.errors import MAQError
from maq.runtime import chat as chat_mod
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
    ``gguf_loader.load``."""

    def __init__(self, model_path: str, *, n_ctx: int = 512, n_threads: int | None = None, n_batch: int = 128,
                 seed: int | None = None, verbose: bool = True, engine: str = "auto", exact: bool = False,
                 dequant: str = "auto", **kwargs):
        if kwargs:
            log.debug("ignoring llama-cpp-python options not used by MAQ: %s", ", ".join(sorted(kwargs)))
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
        self._lm = gguf_loader.load(self.model_path, exact=exact, dequant=dequant)
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
        return self.tokenizer_.encode(text, add_bos=add_bos and self.tokenizer_.add_bos, special=special)

    def detokenize(self, tokens: Sequence[int], prev_tokens: Sequence[int] | None = None,
                   special: bool = False) -> bytes:
        b = self.tokenizer_.detokenize_bytes(tokens, special=special)
        if prev_tokens and self.tokenizer_.model_type == "llama" and self.tokenizer_.add_space_prefix:
            b = self.tokenizer_.detokenize_bytes(list(prev_tokens) + list(tokens), special)[
                len(self.tokenizer_.detokenize_bytes(prev_tokens, special)):]
        return b

    def reset(self) -> None:
        """Forget the cached context."""
        self._tokens = []

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

    def _sampler(self, temperature, top_k, top_p, min_p, repeat_penalty, seed) -> Sampler:
        if seed is None or seed < 0:
            seed = int(self._rng_seed_source.integers(0, 2**63 - 1))
        return Sampler(SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                                      repeat_penalty=repeat_penalty, seed=seed))

    def generate_tokens(self, prompt_tokens: list[int], sampler: Sampler, max_tokens: int | None,
                        all_logits: bool = False) -> Iterator[tuple[int, np.ndarray | None, str | None]]:
        """Yield (token, logits row the token was drawn from, finish) ... ; the last item has token -1 and
        finish in {'stop', 'length'} ('length' also when the context is full)."""
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
            tok = sampler(logits, history)
            yield tok, logits, None
            n += 1
            if tok in stop_ids:
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
                           echo, logprobs, seed, chat: bool) -> Iterator[dict]:
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
            if not prompt:
                raise MAQError("empty prompt: give some text (or a list of token ids)")
        else:
            raise MAQError(f"prompt: expected a string or a list of token ids, got {type(prompt).__name__}")
        if max_tokens is not None and (not isinstance(max_tokens, (int, np.integer)) or isinstance(max_tokens, bool)
                                       or max_tokens <= 0):
            raise MAQError(f"max_tokens = {max_tokens!r}: expected a positive number of tokens (or None: until the "
                           "context window is full)")
        if logprobs is not None and (not isinstance(logprobs, (int, np.integer)) or isinstance(logprobs, bool)
                                     or logprobs < 0):
            raise MAQError(f"logprobs = {logprobs!r}: expected None or an integer >= 0")
        if seed is not None and (not isinstance(seed, (int, np.integer)) or isinstance(seed, bool)):
            raise MAQError(f"seed = {seed!r}: expected an integer (negative: random) or None")
        if stop is not None and not isinstance(stop, str) and not (
                isinstance(stop, (list, tuple)) and all(isinstance(x, str) for x in stop)):
            raise MAQError(f"stop = {stop!r}: expected a string or a list of strings")
        SamplingParams(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p,
                       repeat_penalty=repeat_penalty).validate()
        prompt_tokens, prompt_text = self._prompt_tokens(prompt, chat)
        return self._completion_events(prompt_tokens, prompt_text, max_tokens, temperature, top_p, top_k, min_p,
                                       repeat_penalty, stop, echo, logprobs, seed)

    def _prompt_tokens(self, prompt, chat: bool) -> tuple[list[int], str]:
        if isinstance(prompt, (list, tuple, np.ndarray)):
            prompt_tokens = [int(t) for t in prompt]
            prompt_text = self.detokenize(prompt_tokens).decode("utf-8", errors="replace")
        else:
            prompt_text = prompt
            bos_text = self.tokenizer_.tokens[self.tokenizer_.bos_id] if self.tokenizer_.bos_id is not None else None
            add_bos = not (bos_text and prompt.startswith(bos_text))
            prompt_tokens = self.tokenize(prompt, add_bos=add_bos, special=chat)
        if not prompt_tokens:
            prompt_tokens = [self.token_bos()] if self.token_bos() >= 0 else []
        if not prompt_tokens:
            raise MAQError("empty prompt and the model has no BOS token")
        if len(prompt_tokens) >= self._n_ctx:
            raise MAQError(f"prompt of {len(prompt_tokens)} tokens does not fit the context window "
                           f"n_ctx={self._n_ctx} (with room for one generated token)")
        return prompt_tokens, prompt_text

    def _completion_events(self, prompt_tokens, prompt_text, max_tokens, temperature, top_p, top_k, min_p,
                           repeat_penalty, stop, echo, logprobs, seed) -> Iterator[dict]:
        stops = [stop] if isinstance(stop, str) else list(stop or [])
        yield {"prompt": prompt_text}
        sampler = self._sampler(temperature, top_k, top_p, min_p, repeat_penalty, seed)
        want_lp = logprobs is not None
        matcher = StopMatcher(stops)
        decoder = self.tokenizer_.stream()
        gen_tokens: list[int] = []
        lp_rows: list[np.ndarray] = []
        finish = "length"
        for tok, row, fin in self.generate_tokens(prompt_tokens, sampler, max_tokens, all_logits=want_lp and echo):
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
                          stream: bool = False, seed: int | None = None, **kwargs):
        """OpenAI-shaped text completion (dict, or an iterator of chunks when ``stream``)."""
        if suffix:
            raise MAQError("suffix (fill-in-the-middle) is not supported")
        gen = self._completion_stream(prompt, max_tokens, temperature, top_p, top_k, min_p, repeat_penalty, stop,
                                      echo, logprobs, seed, chat=False)
        cid, created = f"cmpl-{uuid.uuid4()}", int(time.time())
        if stream:
            return self._completion_chunks(gen, cid, created, echo)
        res = None
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
    def apply_chat_template(self, messages: list[dict], add_generation_prompt: bool = True) -> str:
        return chat_mod.render_for(self.tokenizer_, messages, add_generation_prompt=add_generation_prompt)

    def create_chat_completion(self, messages: list[dict], temperature: float = 0.2, top_p: float = 0.95,
                               top_k: int = 40, min_p: float = 0.05, stream: bool = False,
                               stop: str | list[str] | None = None, seed: int | None = None,
                               max_tokens: int | None = None, repeat_penalty: float = 1.0, **kwargs):
        """OpenAI-shaped chat completion over the GGUF's chat template."""
        if not isinstance(messages, (list, tuple)) or not messages or not all(
                isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                for m in messages):
            raise MAQError("messages: expected a non-empty list of {'role': str, 'content': str} dicts")
        prompt = self.apply_chat_template(messages)
        gen = self._completion_stream(prompt, max_tokens, temperature, top_p, top_k, min_p, repeat_penalty, stop,
                                      False, None, seed, chat=True)
        cid, created = f"chatcmpl-{uuid.uuid4()}", int(time.time())
        if stream:
            return self._chat_chunks(gen, cid, created)
        res = None
        for ev in gen:
            if "done" in ev:
                res = ev["done"]
        n_p, n_c = len(res["prompt_tokens"]), len(res["completion_tokens"])
        return {"id": cid, "object": "chat.completion", "created": created, "model": self.model_path,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": res["text"]},
                             "logprobs": None, "finish_reason": res["finish_reason"]}],
                "usage": {"prompt_tokens": n_p, "completion_tokens": n_c, "total_tokens": n_p + n_c}}

    def _chat_chunks(self, gen, cid, created) -> Iterator[dict]:
        head = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": self.model_path}
        yield {**head, "choices": [{"index": 0, "delta": {"role": "assistant"}, "logprobs": None,
                                    "finish_reason": None}]}
        for ev in gen:
            if "prompt" in ev:
                continue
            if "done" in ev:
                yield {**head, "choices": [{"index": 0, "delta": {}, "logprobs": None,
                                            "finish_reason": ev["done"]["finish_reason"]}]}
                return
            yield {**head, "choices": [{"index": 0, "delta": {"content": ev["text"]}, "logprobs": None,
                                        "finish_reason": None}]}
