"""`maq chat`, `maq generate`, `maq perplexity`, `maq serve`: the runtime's subcommands (registered by maq/cli.py).

MODEL is a GGUF path, or the literal ``smollm2`` for the cached SmolLM2-135M-Instruct Q4_1 reference, given as the
positional argument or with ``-m/--model`` (llama.cpp's habit). llama.cpp's ``-c/--ctx-size`` and ``-ngl`` are
accepted too (``-ngl``: one note, MAQ runs on the CPU).

Invalid UTF-8 in a prompt (argv or stdin) becomes U+FFFD replacement characters, with one warning line; a text
file for ``perplexity`` that is not UTF-8 is one error line.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from maq.errors import MAQError


def _common(p: argparse.ArgumentParser, ctx_default: int = 2048, ctx_help: str = "context window in tokens") -> None:
    p.add_argument("model", metavar="MODEL", nargs="?", default=None,
                   help="GGUF file (MAQ2 or standard types), or 'smollm2' (or give it with -m)")
    p.add_argument("-m", "--model", dest="model_opt", metavar="MODEL", default=None,
                   help="the model, as llama.cpp's -m (instead of the positional MODEL)")
    p.add_argument("-c", "--ctx", "--ctx-size", dest="ctx", type=int, default=ctx_default,
                   help=f"{ctx_help} (default {ctx_default})")
    p.add_argument("-ngl", "--n-gpu-layers", "--gpu-layers", dest="n_gpu_layers", type=int, default=None,
                   help="accepted for llama.cpp compatibility; MAQ runs on the CPU")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    p.add_argument("--engine", choices=("auto", "c", "numpy"), default="auto",
                   help="c: the C runtime; numpy: the slow reference forward (default: auto)")
    p.add_argument("--batch", type=int, default=128, help="prompt tokens per forward call (default 128)")
    p.add_argument("--exact", action="store_true",
                   help="dequantize Q8_0/MAQ2 weights to F32 at load: float products, no int8 activation rounding "
                        "(the reference numerics; slower, more memory)")
    p.add_argument("--dequant", choices=("auto", "f32", "q8_0"), default="auto",
                   help="Q4_0/Q4_1/k-quant tensors at load: f32 (exact), q8_0 (smaller), auto (f32 unless > 4 GiB)")
    mm = p.add_mutually_exclusive_group()
    mm.add_argument("--mmap", dest="use_mmap", action="store_true", default=None,
                    help="map the model file (zero-copy; 4 KiB pages)")
    mm.add_argument("--no-mmap", dest="use_mmap", action="store_false",
                    help="read the model into huge-page memory (faster products). Default: --no-mmap where the "
                         "kernel offers transparent huge pages and the file fits in half the available memory")


def _sampling(p: argparse.ArgumentParser, temp: float) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--temp", type=float, default=temp, help=f"temperature, 0 = greedy (default {temp})")
    g.add_argument("--top-k", type=int, default=40, help="top-k, 0 = off (default 40)")
    g.add_argument("--top-p", type=float, default=0.95, help="top-p, 1 = off (default 0.95)")
    g.add_argument("--min-p", type=float, default=0.05, help="min-p, 0 = off (default 0.05)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, help="repetition penalty, 1 = off (default 1.0)")
    g.add_argument("--repeat-last-n", type=int, default=64,
                   help="tokens the repetition penalty looks back over, -1 = all (default 64)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default: random)")


def register(subparsers) -> None:
    p = subparsers.add_parser("chat", help="interactive chat with a GGUF model (streaming)",
                              description="Chat in the terminal (line editing and history). " + _CHAT_HELP)
    _common(p)
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("-n", "--max-tokens", type=int, default=512,
                   help="max tokens per reply (default 512; <= 0: until the context window is full)")
    _sampling(p, temp=0.7)
    p.set_defaults(func=cmd_chat)

    p = subparsers.add_parser("generate", help="complete a prompt",
                              description="Complete a prompt and print the text (or one JSON line with --json).")
    _common(p)
    p.add_argument("-p", "--prompt", required=True, help="prompt text")
    p.add_argument("-n", "--max-tokens", type=int, default=128,
                   help="tokens to generate (default 128; <= 0: until the context window is full)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template as a user turn")
    p.add_argument("--system", default=None, help="system prompt (with --chat)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON line: text, prompt_tokens, generated_tokens, prompt_tps, decode_tps")
    _sampling(p, temp=0.8)
    p.set_defaults(func=cmd_generate)

    p = subparsers.add_parser("perplexity", help="perplexity of a text file (full or llama.cpp second-half)",
                              description="Perplexity over non-overlapping windows of a text file.")
    _common(p, ctx_help="window length in tokens")
    p.add_argument("-f", "--file", required=True, help="text file, read as-is")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N windows")
    p.add_argument("--protocol", choices=("full", "second-half"), default="full",
                   help="full: every prediction (GPTQ/paper); second-half: llama-perplexity's (default full)")
    p.add_argument("--json", action="store_true", help="print one JSON line: ppl, tokens, windows, protocol, ...")
    p.set_defaults(func=cmd_perplexity)

    p = subparsers.add_parser("serve", help="OpenAI-compatible HTTP server and chat page (needs maq[server])",
                              description="Serve a model over HTTP like llama-server: /v1/chat/completions, "
                                          "/v1/completions (streaming or not), /v1/models, /v1/embeddings, /health, "
                                          "and a chat page at /. --threads is per slot. Needs: pip install 'maq[server]'.")
    _common(p, ctx_default=4096, ctx_help="context window per slot in tokens")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' on /v1 requests")
    p.add_argument("-np", "--parallel", type=int, default=1,
                   help="slots: requests generated at the same time, one KV cache each (default 1)")
    p.add_argument("--max-queue", type=int, default=16,
                   help="requests waiting for a slot before new ones get 503 (default 16)")
    p.set_defaults(func=cmd_serve)


_CHAT_HELP = "Commands: /help (this list), /reset (forget the history), /exit or /quit (or Ctrl-D)."


def _llama(args, n_ctx: int):
    from maq.runtime.api import Llama

    if n_ctx <= 0:
        raise MAQError(f"--ctx {n_ctx}: expected a positive number of tokens")
    return Llama(args.model, n_ctx=n_ctx, n_threads=args.threads, n_batch=args.batch, seed=getattr(args, "seed", None),
                 verbose=False, engine=args.engine, exact=args.exact, dequant=args.dequant, use_mmap=args.use_mmap)


def _warn_if_invalid_utf8(text: str | None, where: str) -> None:
    """One warning line when text holds invalid UTF-8 (lone surrogates from argv/stdin): it is replaced by U+FFFD."""
    if text and any("\ud800" <= c <= "\udfff" for c in text):
        print(f"maq: warning: {where} is not valid UTF-8; the invalid bytes are replaced by U+FFFD", file=sys.stderr)


def _sampling_kwargs(args) -> dict:
    """The sampling options, validated (one MAQError line naming the option) before the model is loaded."""
    from maq.runtime.sampling import SamplingParams

    kw = dict(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
              repeat_penalty=args.repeat_penalty, repeat_last_n=args.repeat_last_n, seed=args.seed)
    try:
        SamplingParams(**{k: v for k, v in kw.items() if k != "seed"}).validate()
    except MAQError as exc:
        flag = {"temperature": "--temp", "top_k": "--top-k", "top_p": "--top-p", "min_p": "--min-p",
                "repeat_penalty": "--repeat-penalty", "repeat_last_n": "--repeat-last-n"}
        msg = str(exc)
        for name, opt in flag.items():
            if msg.startswith(name + " ="):
                msg = opt + " " + msg[len(name) + 3:]
                break
        raise MAQError(msg) from None
    return kw


def _check_common(args) -> None:
    """Options every subcommand shares, checked before loading the model; the model from -m or the positional."""
    from maq.runtime import model as model_mod

    if args.model and args.model_opt and args.model != args.model_opt:
        raise MAQError(f"two models given ({args.model!r} and -m {args.model_opt!r}): give one")
    args.model = args.model or args.model_opt
    if not args.model:
        raise MAQError("no model given: maq COMMAND MODEL or -m MODEL (a GGUF path, or 'smollm2')")
    if args.n_gpu_layers is not None:
        print(f"maq: note: -ngl {args.n_gpu_layers} ignored: MAQ runs on the CPU", file=sys.stderr)

    if args.threads is not None and not 1 <= args.threads <= model_mod.MAX_THREADS:
        raise MAQError(f"--threads {args.threads}: expected 1..{model_mod.MAX_THREADS}")
    if args.batch <= 0:
        raise MAQError(f"--batch {args.batch}: expected a positive number of tokens")
    if args.ctx <= 0:
        raise MAQError(f"--ctx {args.ctx}: expected a positive number of tokens")


def _rates(t: dict) -> tuple[float, float]:
    """(prompt tokens/s over the tokens actually evaluated, decode tokens/s)."""
    p = t.get("prompt_evaluated", t["prompt_tokens"]) / t["prompt_s"] if t.get("prompt_s") else 0.0
    d = t["gen_tokens"] / t["gen_s"] if t.get("gen_s") else 0.0
    return p, d


def cmd_generate(args) -> int:
    _check_common(args)
    kw = _sampling_kwargs(args)
    if not args.prompt:
        raise MAQError("--prompt is empty: give some text to complete")
    _warn_if_invalid_utf8(args.prompt, "--prompt")
    _warn_if_invalid_utf8(args.system, "--system")
    llm = _llama(args, args.ctx)
    prompt = args.prompt
    if args.chat:
        msgs = ([{"role": "system", "content": args.system}] if args.system else []) + \
               [{"role": "user", "content": prompt}]
        prompt = llm.apply_chat_template(msgs)
    stream = llm._completion_stream(prompt, args.max_tokens, kw["temperature"], kw["top_p"], kw["top_k"],
                                    kw["min_p"], kw["repeat_penalty"], None, False, None, kw["seed"],
                                    chat=args.chat, repeat_last_n=kw["repeat_last_n"])
    res = None
    for ev in stream:
        if "done" in ev:
            res = ev["done"]
        elif "text" in ev and not args.json:
            sys.stdout.write(ev["text"])
            sys.stdout.flush()
    t = llm.last_timings
    ptps, dtps = _rates(t)
    if args.json:
        print(json.dumps({"text": res["text"], "prompt_tokens": len(res["prompt_tokens"]),
                          "generated_tokens": len(res["completion_tokens"]), "prompt_tps": round(ptps, 2),
                          "decode_tps": round(dtps, 2), "finish_reason": res["finish_reason"],
                          "threads": llm.n_threads}))
    else:
        print()
        _report(llm, chat=False)
    return 0


def _report(llm, chat: bool) -> None:
    """The stderr line after a reply: a context-full note, then prompt and generation speed."""
    t = llm.last_timings
    ptps, dtps = _rates(t)
    if t.get("context_full"):
        print(f"[context window full (n_ctx={llm.n_ctx()}): " +
              ("reply cut; /reset to start over]" if chat else "generation stopped]"), file=sys.stderr)
    if chat:
        print(f"[prompt: {t['prompt_evaluated']} new tokens ({t['prompt_tokens']} in context), {ptps:.1f} tok/s | "
              f"reply: {t['gen_tokens']} tokens, {dtps:.1f} tok/s]", file=sys.stderr)
    else:
        print(f"[prompt: {t['prompt_tokens']} tokens, {ptps:.1f} tok/s | generation: {t['gen_tokens']} tokens, "
              f"{dtps:.1f} tok/s | {llm.n_threads} threads]", file=sys.stderr)


def cmd_chat(args) -> int:
    _check_common(args)
    kw = _sampling_kwargs(args)
    _warn_if_invalid_utf8(args.system, "--system")
    llm = _llama(args, args.ctx)
    history: list[dict] = []

    def reset():
        history.clear()
        if args.system:
            history.append({"role": "system", "content": args.system})
    reset()
    interactive = sys.stdin.isatty()
    _stdin_replacing()
    if interactive:
        _line_editing()
        print(f"maq chat: {args.model} ({llm.n_threads} threads, n_ctx {llm.n_ctx()}). /help lists the commands.",
              file=sys.stderr)
    while True:
        try:
            line = input("> " if interactive else "")
        except (EOFError, KeyboardInterrupt):
            print(file=sys.stderr)
            break
        msg = line.strip()
        if not msg:
            continue
        if msg in ("/exit", "/quit"):
            break
        if msg in ("/help", "/?"):
            print(_CHAT_HELP, file=sys.stderr)
            continue
        if msg == "/reset":
            reset()
            llm.reset()
            print("[history cleared]", file=sys.stderr)
            continue
        if len(msg) > 1 and msg[0] == "/" and msg[1:].isalpha():      # a single /word: a mistyped command
            print(f"[unknown command {msg}; /help lists the commands]", file=sys.stderr)
            continue
        _warn_if_invalid_utf8(msg, "the input line")
        history.append({"role": "user", "content": msg})
        reply: list[str] = []
        chunks = None
        try:
            chunks = llm.create_chat_completion(history, stream=True, max_tokens=args.max_tokens, **kw)
            for ch in chunks:
                piece = ch["choices"][0]["delta"].get("content")
                if piece:
                    reply.append(piece)
                    sys.stdout.write(piece)
                    sys.stdout.flush()
        except MAQError as exc:
            history.pop()
            print(f"\n[{exc}; /reset to start over]", file=sys.stderr)
            continue
        except KeyboardInterrupt:  # Ctrl-C stops the reply, not the chat (Ctrl-D or /exit quits)
            print("\n[interrupted]", file=sys.stderr)
        finally:
            if chunks is not None:
                chunks.close()        # releases the model's lock if the reply was cut short
        print()
        history.append({"role": "assistant", "content": "".join(reply)})
        _report(llm, chat=True)
    return 0


def _stdin_replacing() -> None:
    """Read stdin as UTF-8 with invalid bytes kept as surrogates (then replaced by U+FFFD with one warning)."""
    try:
        sys.stdin.reconfigure(errors="surrogateescape")
    except (AttributeError, ValueError):
        pass


def _line_editing() -> None:
    """Arrow keys, line editing and history (kept in ~/.cache/maq/chat_history) through readline, if present."""
    try:
        import readline
    except ImportError:
        return
    import atexit
    import os

    path = os.path.join(os.path.expanduser("~"), ".cache", "maq", "chat_history")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        readline.read_history_file(path)
    except OSError:
        pass
    readline.set_history_length(1000)

    def save():
        try:
            readline.write_history_file(path)
        except OSError:
            pass
    atexit.register(save)


def cmd_serve(args) -> int:
    from maq.runtime import server

    _check_common(args)
    if args.parallel < 1:
        raise MAQError(f"--parallel {args.parallel}: expected at least 1 slot")
    if args.max_queue < 0:
        raise MAQError(f"--max-queue {args.max_queue}: expected 0 or more")
    server.serve(args.model, host=args.host, port=args.port, api_key=args.api_key, parallel=args.parallel,
                 max_queue=args.max_queue, n_ctx=args.ctx, n_threads=args.threads, n_batch=args.batch,
                 engine=args.engine, exact=args.exact, dequant=args.dequant, use_mmap=args.use_mmap)
    return 0


def cmd_perplexity(args) -> int:
    from maq.runtime import perplexity as ppl_mod

    _check_common(args)
    if args.limit is not None and args.limit <= 0:
        raise MAQError(f"--limit {args.limit}: expected a positive number of windows")

    try:
        with open(args.file, "r", encoding="utf-8") as f:
            text = f.read()
    except OSError as exc:
        raise MAQError(f"{args.file}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise MAQError(f"{args.file}: not UTF-8 text ({exc})") from None
    llm = _llama(args, args.ctx)
    tok = llm.tokenizer_
    t0 = time.perf_counter()
    tokens = tok.encode(text, add_bos=tok.add_bos, special=False)
    t1 = time.perf_counter()
    n_win = len(tokens) // args.ctx
    if args.limit:
        n_win = min(n_win, args.limit)
    cb, close = ppl_mod.tqdm_progress(n_win, enabled=sys.stderr.isatty() or not args.json)
    try:
        res = ppl_mod.perplexity(llm.model, tokens, args.ctx, args.protocol, args.limit,
                                 bos_id=tok.bos_id if tok.add_bos else None, progress=cb)
    finally:
        close()
    t2 = time.perf_counter()
    out = res.as_dict()
    out.update({"model": llm.model_path, "file": args.file, "tokenize_s": round(t1 - t0, 3),
                "eval_s": round(t2 - t1, 3), "threads": llm.n_threads,
                "tokens_per_s": round(res.windows * args.ctx / (t2 - t1), 1)})
    if args.json:
        print(json.dumps(out))
    else:
        print(f"perplexity ({res.protocol}, ctx {res.ctx}, {res.windows} windows, {res.tokens} scored tokens): "
              f"{res.ppl:.4f}")
    return 0
