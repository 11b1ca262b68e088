"""`maq chat`, `maq generate`, `maq perplexity`: the runtime's subcommands (registered by maq/cli.py).

MODEL is a GGUF path, or the literal ``smollm2`` for the cached SmolLM2-135M-Instruct Q4_1 reference.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

from maq.errors import MAQError


def _common(p: argparse.ArgumentParser, ctx_default: int | None = 2048) -> None:
    p.add_argument("model", metavar="MODEL", help="GGUF file (MAQ2 or standard types), or 'smollm2'")
    p.add_argument("-t", "--threads", type=int, default=None, help="threads (default: physical cores)")
    p.add_argument("--engine", choices=("auto", "c", "numpy"), default="auto",
                   help="c: the C runtime; numpy: the slow reference forward (default: auto)")
    p.add_argument("--batch", type=int, default=128, help="prompt tokens per forward call (default 128)")
    p.add_argument("--exact", action="store_true",
                   help="dequantize Q8_0/MAQ2 weights to F32 at load: float products, no int8 activation rounding "
                        "(the reference numerics; slower, more memory)")
    p.add_argument("--dequant", choices=("auto", "f32", "q8_0"), default="auto",
                   help="Q4_0/Q4_1/k-quant tensors at load: f32 (exact), q8_0 (smaller), auto (f32 unless > 4 GiB)")


def _sampling(p: argparse.ArgumentParser, temp: float) -> None:
    g = p.add_argument_group("sampling")
    g.add_argument("--temp", type=float, default=temp, help=f"temperature, 0 = greedy (default {temp})")
    g.add_argument("--top-k", type=int, default=40, help="top-k, 0 = off (default 40)")
    g.add_argument("--top-p", type=float, default=0.95, help="top-p, 1 = off (default 0.95)")
    g.add_argument("--min-p", type=float, default=0.05, help="min-p, 0 = off (default 0.05)")
    g.add_argument("--repeat-penalty", type=float, default=1.0, help="repetition penalty, 1 = off (default 1.0)")
    g.add_argument("--seed", type=int, default=None, help="random seed (default: random)")


def register(subparsers) -> None:
    p = subparsers.add_parser("chat", help="interactive chat with a GGUF model (streaming)",
                              description="Chat in the terminal. Commands: /reset (forget history), /exit.")
    _common(p)
    p.add_argument("--ctx", type=int, default=2048, help="context window in tokens (default 2048)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("-n", "--max-tokens", type=int, default=512, help="max tokens per reply (default 512)")
    _sampling(p, temp=0.7)
    p.set_defaults(func=cmd_chat)

    p = subparsers.add_parser("generate", help="complete a prompt",
                              description="Complete a prompt and print the text (or one JSON line with --json).")
    _common(p)
    p.add_argument("-p", "--prompt", required=True, help="prompt text")
    p.add_argument("-n", "--max-tokens", type=int, default=128, help="tokens to generate (default 128)")
    p.add_argument("--ctx", type=int, default=2048, help="context window in tokens (default 2048)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template as a user turn")
    p.add_argument("--system", default=None, help="system prompt (with --chat)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON line: text, prompt_tokens, generated_tokens, prompt_tps, decode_tps")
    _sampling(p, temp=0.8)
    p.set_defaults(func=cmd_generate)

    p = subparsers.add_parser("perplexity", help="perplexity of a text file (full or llama.cpp second-half)",
                              description="Perplexity over non-overlapping windows of a text file.")
    _common(p)
    p.add_argument("-f", "--file", required=True, help="text file, read as-is")
    p.add_argument("--ctx", type=int, default=2048, help="window length in tokens (default 2048)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N windows")
    p.add_argument("--protocol", choices=("full", "second-half"), default="full",
                   help="full: every prediction (GPTQ/paper); second-half: llama-perplexity's (default full)")
    p.add_argument("--json", action="store_true", help="print one JSON line: ppl, tokens, windows, protocol, ...")
    p.set_defaults(func=cmd_perplexity)


def _llama(args, n_ctx: int):
    from maq.runtime.api import Llama

    if n_ctx <= 0:
        raise MAQError(f"--ctx {n_ctx}: expected a positive number of tokens")
    return Llama(args.model, n_ctx=n_ctx, n_threads=args.threads, n_batch=args.batch, seed=getattr(args, "seed", None),
                 verbose=False, engine=args.engine, exact=args.exact, dequant=args.dequant)


def _sampling_kwargs(args) -> dict:
    """The sampling options, validated (one MAQError line naming the option) before the model is loaded."""
    from maq.runtime.sampling import SamplingParams

    kw = dict(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
              repeat_penalty=args.repeat_penalty, seed=args.seed)
    try:
        SamplingParams(**{k: v for k, v in kw.items() if k != "seed"}).validate()
    except MAQError as exc:
        flag = {"temperature": "--temp", "top_k": "--top-k", "top_p": "--top-p", "min_p": "--min-p",
                "repeat_penalty": "--repeat-penalty"}
        msg = str(exc)
        for name, opt in flag.items():
            if msg.startswith(name + " ="):
                msg = opt + " " + msg[len(name) + 3:]
                break
        raise MAQError(msg) from None
    if args.max_tokens is not None and args.max_tokens <= 0:
        raise MAQError(f"--max-tokens {args.max_tokens}: expected a positive number of tokens")
    return kw


def _check_common(args) -> None:
    """Options every subcommand shares, checked before loading the model."""
    from maq.runtime import model as model_mod

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
    llm = _llama(args, args.ctx)
    prompt = args.prompt
    if args.chat:
        msgs = ([{"role": "system", "content": args.system}] if args.system else []) + \
               [{"role": "user", "content": prompt}]
        prompt = llm.apply_chat_template(msgs)
    stream = llm._completion_stream(prompt, args.max_tokens, kw["temperature"], kw["top_p"], kw["top_k"],
                                    kw["min_p"], kw["repeat_penalty"], None, False, None, kw["seed"],
                                    chat=args.chat)
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
        if t.get("context_full"):
            print(f"[context window full (n_ctx={llm.n_ctx()}): generation stopped]", file=sys.stderr)
        print(f"[prompt: {t['prompt_tokens']} tokens, {ptps:.1f} tok/s | generation: {t['gen_tokens']} tokens, "
              f"{dtps:.1f} tok/s | {llm.n_threads} threads]", file=sys.stderr)
    return 0


def cmd_chat(args) -> int:
    _check_common(args)
    kw = _sampling_kwargs(args)
    llm = _llama(args, args.ctx)
    history: list[dict] = []

    def reset():
        history.clear()
        if args.system:
            history.append({"role": "system", "content": args.system})
    reset()
    interactive = sys.stdin.isatty()
    if interactive:
        print(f"maq chat: {args.model} ({llm.n_threads} threads, n_ctx {llm.n_ctx()}). /reset clears the "
              "history, /exit quits.", file=sys.stderr)
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
        if msg == "/reset":
            reset()
            llm.reset()
            print("[history cleared]", file=sys.stderr)
            continue
        history.append({"role": "user", "content": msg})
        reply: list[str] = []
        try:
            chunks = llm.create_chat_completion(history, stream=True, max_tokens=args.max_tokens, **kw)
            finish = None
            for ch in chunks:
                c = ch["choices"][0]
                piece = c["delta"].get("content")
                if piece:
                    reply.append(piece)
                    sys.stdout.write(piece)
                    sys.stdout.flush()
                finish = c["finish_reason"] or finish
        except MAQError as exc:
            history.pop()
            print(f"\n[{exc}; /reset to start over]", file=sys.stderr)
            continue
        except KeyboardInterrupt:  # Ctrl-C stops the reply, not the chat (Ctrl-D or /exit quits)
            print("\n[interrupted]", file=sys.stderr)
        print()
        history.append({"role": "assistant", "content": "".join(reply)})
        t = llm.last_timings
        ptps, dtps = _rates(t)
        if t.get("context_full"):
            print(f"[context window full (n_ctx={llm.n_ctx()}): reply cut; /reset to start over]", file=sys.stderr)
        print(f"[prompt: {t['prompt_evaluated']} new tokens ({t['prompt_tokens']} in context), {ptps:.1f} tok/s | "
              f"reply: {t['gen_tokens']} tokens, {dtps:.1f} tok/s]", file=sys.stderr)
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
