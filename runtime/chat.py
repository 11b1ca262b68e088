"""Chat templates: ``tokenizer.chat_template`` from the GGUF rendered with jinja2 the way transformers does
(sandboxed environment, trim_blocks + lstrip_blocks, loopcontrols, ``tojson``/``raise_exception``/
``strftime_now``, special tokens passed as variables), with limits.

A template comes from the file's metadata, so from whoever published the GGUF. The jinja sandbox limits what a
template may touch, not how long it runs or how much it allocates; here every render is also bounded:
- time: ``TIME_LIMIT_S`` of wall time, checked on every line the template's code runs (a trace function on the
  rendering thread only), so ``{% for i in range(10**5) %}{% for j in range(10**5) %}`` stops in time;
- loop ranges: ``range()`` is jinja's ``safe_range`` (<= 100000 items) and all ranges of one render share a
  budget of ``MAX_RANGE_ITEMS`` items;
- sizes: every operation that builds a string or list (``*``, ``+``, ``%``, ``~``, str methods, filters) is checked
  *before* it runs: no value longer than ``MAX_VALUE`` items, ints of at most ``MAX_INT_BITS`` bits, and all values
  built in one render together at most ``MAX_WORK`` items; the output at most ``MAX_OUTPUT`` characters. Memory of
  one render stays in the hundreds of MB at worst (``'x' * 100000000`` and doubling loops are refused up front);
- recursion: a recursive macro ends in Python's RecursionError, reported like any other failure.
Any failure (jinja errors, ZeroDivisionError, int + str, a limit) is one ``MAQError`` line naming the file and
``tokenizer.chat_template``. Nothing here runs before a chat is rendered: a broken template does not stop plain
completion.
"""
from __future__ import annotations

import datetime
import functools
import json
import re
import sys
import threading
import time
from typing import Any

from maq.errors import MAQError

# Used when a file has no template: ChatML (what SmolLM2 and many small models use).
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")

TIME_LIMIT_S = 2.0             # wall time of one render
MAX_OUTPUT = 4 << 20           # characters of rendered prompt (~1M tokens: more than any context window)
MAX_VALUE = 4 << 20            # items of any one string / list a template builds
MAX_WORK = 64 << 20            # items of all the values one render builds, together
MAX_RANGE_ITEMS = 1 << 20      # items of all range() calls of one render, together
MAX_INT_BITS = 1 << 16         # bits of an integer a template computes (10 ** 10 ** 9 is refused)
MAX_TEMPLATE = 256 << 10       # characters of the template itself (real ones: < 30 k)


class TemplateLimit(Exception):
    """A chat template went past one of the limits above."""


class _Budget:
    """The limits of one render (one per rendering thread)."""

    def __init__(self, time_limit: float):
        self.deadline = time.monotonic() + time_limit
        self.time_limit = time_limit
        self.work = 0
        self.range_items = 0
        self.lines = 0

    def charge(self, n: int, what: str) -> None:
        if n > MAX_VALUE:
            raise TemplateLimit(f"{what} would build {n} items (more than {MAX_VALUE})")
        self.work += n
        if self.work > MAX_WORK:
            raise TemplateLimit(f"builds more than {MAX_WORK} string/list items in all")

    def tick(self) -> None:
        self.lines += 1
        if not self.lines & 255 and time.monotonic() > self.deadline:
            raise TemplateLimit(f"still running after {self.time_limit:g} s (time limit)")


_state = threading.local()


def _budget() -> _Budget:
    b = getattr(_state, "budget", None)
    return b if b is not None else _Budget(TIME_LIMIT_S)   # outside render() (jinja's constant folding): per call


def _size(x: Any) -> int | None:
    return len(x) if isinstance(x, (str, list, tuple, bytes)) else None


def _check_int(x: Any, what: str) -> None:
    if isinstance(x, int) and not isinstance(x, bool) and abs(x) > MAX_VALUE:
        raise TemplateLimit(f"{what}: argument {x if abs(x) < 10**30 else 'of ' + str(x.bit_length()) + ' bits'} "
                            f"is larger than {MAX_VALUE}")


_WIDTH = re.compile(r"\d{8,}")


def _check_format(fmt: Any, what: str) -> None:
    """A format string ("%100000000s", "{:>100000000}") must not ask for widths beyond MAX_VALUE."""
    if isinstance(fmt, str):
        for m in _WIDTH.findall(fmt):
            if int(m) > MAX_VALUE:
                raise TemplateLimit(f"{what}: width {m[:20]} in a format string is larger than {MAX_VALUE}")


def _estimate(name: str, value: Any, args: tuple, kwargs: dict) -> int | None:
    """Items the str method / filter ``name`` applied to ``value`` would build (None: no growth to fear)."""
    for a in list(args) + list(kwargs.values()):
        _check_int(a, name)
    if name == "join":
        items = args[0] if args and isinstance(value, str) else value
        if isinstance(items, (list, tuple)):
            sep = value if isinstance(value, str) else (args[0] if args and isinstance(args[0], str) else "")
            return sum(len(x) if isinstance(x, str) else 16 for x in items) + len(sep) * len(items)
        return None
    if not isinstance(value, str):
        return None
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        n = value.count(args[0]) if args[0] else len(value) + 1
        return len(value) + n * len(args[1])
    if name in ("center", "ljust", "rjust", "zfill") and args and isinstance(args[0], int):
        return max(len(value), args[0])
    if name == "expandtabs":
        n = args[0] if args and isinstance(args[0], int) else kwargs.get("tabsize", 8)
        return len(value) + value.count("\t") * max(int(n), 0)
    if name == "indent":
        width = args[0] if args else kwargs.get("width", 4)
        w = len(width) if isinstance(width, str) else int(width) if isinstance(width, int) else 4
        return len(value) + (value.count("\n") + 1) * max(w, 0)
    if name in ("format", "format_map"):
        _check_format(value, name)
        return len(value) + sum(len(a) if isinstance(a, str) else 32 for a in list(args) + list(kwargs.values()))
    return None


def _limited_filter(name: str, f):
    """Filter ``f`` with its growth checked before it runs and its result counted."""
    skip = 1 if hasattr(f, "jinja_pass_arg") else 0

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        value = args[skip] if len(args) > skip else None
        if name == "format":
            _check_format(value, "format")
        n = _estimate(name, value, tuple(args[skip + 1:]), kwargs)
        if n is not None:
            _budget().charge(n, f"filter {name}")
        out = f(*args, **kwargs)
        sz = _size(out)
        if sz is not None:
            _budget().charge(sz, f"filter {name}")
        return out
    return wrapper


def _binop_size(op: str, left: Any, right: Any) -> int | None:
    """Items ``left op right`` would build; raises TemplateLimit for a huge integer result."""
    ints = isinstance(left, int) and isinstance(right, int)
    if op == "**" and ints:
        if right > 0 and max(abs(left).bit_length(), 1) * right > MAX_INT_BITS and abs(left) > 1:
            raise TemplateLimit(f"{left if abs(left) < 10**6 else 'a big int'} ** {right}: an integer of more than "
                                f"{MAX_INT_BITS} bits")
        return None
    if op == "*" and ints:
        if abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
            raise TemplateLimit(f"a product of more than {MAX_INT_BITS} bits")
        return None
    if op == "*":
        for seq, n in ((left, right), (right, left)):
            if _size(seq) is not None and isinstance(n, int):
                return len(seq) * max(n, 0)
        return None
    if op == "+":
        a, b = _size(left), _size(right)
        return a + b if a is not None and b is not None else None
    if op == "%" and isinstance(left, str):
        _check_format(left, "%")
        for a in right if isinstance(right, tuple) else (right,):
            _check_int(a, "%")
        return len(left) + sum(len(a) if isinstance(a, str) else 32
                               for a in (right if isinstance(right, tuple) else (right,)))
    return None


def _safe_range(*args):
    from jinja2.sandbox import safe_range

    rng = safe_range(*args)
    b = _budget()
    b.range_items += len(rng)
    if b.range_items > MAX_RANGE_ITEMS:
        raise TemplateLimit(f"loops over more than {MAX_RANGE_ITEMS} range() items in all")
    return rng


_safe_range.__name__ = "range"


def _checked_join(parts) -> str:
    """The ``~`` operator (jinja's str_join), with the result size checked first."""
    parts = [str(p) for p in parts]
    _budget().charge(sum(len(p) for p in parts), "~")
    return "".join(parts)


@functools.lru_cache(maxsize=1)
def _env_class():
    from jinja2.compiler import CodeGenerator
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class LimitedCodeGenerator(CodeGenerator):
        def visit_Concat(self, node, frame):            # "a ~ b": through environment.checked_join
            if frame.eval_ctx.volatile or frame.eval_ctx.autoescape:
                return super().visit_Concat(node, frame)
            self.write("environment.checked_join((")
            for arg in node.nodes:
                self.visit(arg, frame)
                self.write(", ")
            self.write("))")

    class LimitedEnvironment(ImmutableSandboxedEnvironment):
        """The sandbox plus size checks of every operator, call and filter that can build big values."""

        code_generator_class = LimitedCodeGenerator
        intercepted_binops = frozenset({"*", "+", "**", "%"})
        checked_join = staticmethod(_checked_join)

        def call_binop(self, context, operator, left, right):
            n = _binop_size(operator, left, right)
            if n is not None:
                _budget().charge(n, f"'{operator}'")
            return super().call_binop(context, operator, left, right)

        def call(__self, __context, __obj, *args, **kwargs):  # noqa: N805 - jinja's signature
            owner = getattr(__obj, "__self__", None)
            if owner is None:                            # str.format / format_map come wrapped by the sandbox
                owner = getattr(getattr(__obj, "__wrapped__", None), "__self__", None)
            name = getattr(__obj, "__name__", "")
            if isinstance(owner, (str, list, tuple)):
                n = _estimate(name, owner, args, kwargs)
                if n is not None:
                    _budget().charge(n, f"{type(owner).__name__}.{name}")
            else:
                for a in list(args) + list(kwargs.values()):
                    _check_int(a, name or "call")
            out = super().call(__context, __obj, *args, **kwargs)
            sz = _size(out)
            if sz is not None:
                _budget().charge(sz, name or "call")
            return out

    return LimitedEnvironment


@functools.lru_cache(maxsize=8)
def _compile(template: str):
    import jinja2
    import jinja2.ext

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        _check_int(indent, "tojson")
        out = json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)
        _budget().charge(len(out), "tojson")
        return out

    def strftime_now(fmt):
        _check_format(fmt, "strftime_now")
        return datetime.datetime.now().strftime(str(fmt)[:256])

    env = _env_class()(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters = {name: _limited_filter(name, f) for name, f in env.filters.items()}
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    env.globals["range"] = _safe_range
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        msg = " ".join(str(exc).split())
        raise MAQError(f"tokenizer.chat_template: jinja syntax error: {msg[:200]}") from None


def _run_limited(fn, time_limit: float):
    """fn() with this thread's budget set and every line it runs checked against the deadline."""
    prev_budget = getattr(_state, "budget", None)
    b = _state.budget = _Budget(time_limit)

    def local(frame, event, arg):
        if event == "line":
            b.tick()
        return local

    def tracer(frame, event, arg):        # line events only in the template's own code (its loops and macros)
        b.tick()
        return local if frame.f_code.co_filename == "<template>" else None

    prev_trace = sys.gettrace()
    sys.settrace(tracer)
    try:
        return fn()
    finally:
        sys.settrace(prev_trace)
        _state.budget = prev_budget


def render(template: str | None, messages: list[dict], *, add_generation_prompt: bool = True,
           bos_token: str = "", eos_token: str = "", where: str = "GGUF", time_limit: float = TIME_LIMIT_S,
           **extra) -> str:
    """The prompt text for messages [{role, content}, ...] (``add_generation_prompt`` opens the reply).

    ``where`` names the file the template comes from, for the one-line error of any failure."""
    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise MAQError(f"chat message {m!r}: expected a dict with 'role' and 'content'")
    what = f"{where}: tokenizer.chat_template"
    if template is not None and len(template) > MAX_TEMPLATE:
        raise MAQError(f"{what}: {len(template)} characters, more than the {MAX_TEMPLATE} a template may have")
    try:
        tmpl = _compile(template or CHATML)
    except MAQError as exc:
        raise MAQError(f"{where}: {exc}") from None

    def go() -> str:
        out, n = [], 0
        for chunk in tmpl.generate(messages=messages, add_generation_prompt=add_generation_prompt,
                                   bos_token=bos_token, eos_token=eos_token, **extra):
            n += len(chunk)
            if n > MAX_OUTPUT:
                raise TemplateLimit(f"output longer than {MAX_OUTPUT} characters")
            out.append(chunk)
        return "".join(out)

    try:
        return _run_limited(go, time_limit)
    except TemplateLimit as exc:
        raise MAQError(f"{what}: refused: {exc}") from None
    except RecursionError:
        raise MAQError(f"{what}: recursion too deep (a recursive macro?)") from None
    except MemoryError:
        raise MAQError(f"{what}: out of memory while rendering") from None
    except Exception as exc:  # noqa: BLE001 - the template is untrusted code: any error it raises is its failure
        import jinja2

        kind = "" if isinstance(exc, jinja2.exceptions.TemplateError) else f"{type(exc).__name__}: "
        msg = " ".join(str(exc).split())
        raise MAQError(f"{what}: {kind}{msg[:200] if len(msg) > 200 else msg}") from None


def render_for(tokenizer, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
    """render() with the template and special tokens of a ``tokenizer.Tokenizer``."""
    tok = tokenizer
    bad = getattr(tok, "chat_template_error", None)
    if bad:
        raise MAQError(bad)
    bos = tok.tokens[tok.bos_id] if tok.bos_id is not None else ""
    eos = tok.tokens[tok.eos_id] if tok.eos_id is not None else ""
    return render(tok.chat_template, messages, add_generation_prompt=add_generation_prompt, bos_token=bos,
                  eos_token=eos, where=getattr(tok, "where", "GGUF"), **extra)
