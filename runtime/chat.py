"""Chat templates: ``tokenizer.chat_template`` from the GGUF rendered with jinja2 the way transformers does
(sandboxed environment, trim_blocks + lstrip_blocks, loopcontrols, ``tojson``/``raise_exception``/
``strftime_now``, special tokens passed as variables)."""
from __future__ import annotations

import datetime
import functools
import json

from maq.errors import MAQError

# Used when a file has no template: ChatML (what SmolLM2 and many small models use).
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


@functools.lru_cache(maxsize=8)
def _compile(template: str):
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    def strftime_now(fmt):
        return datetime.datetime.now().strftime(fmt)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    try:
        return env.from_string(template)
    except jinja2.exceptions.TemplateSyntaxError as exc:
        raise MAQError(f"tokenizer.chat_template: jinja syntax error: {exc}") from None


def render(template: str | None, messages: list[dict], *, add_generation_prompt: bool = True,
           bos_token: str = "", eos_token: str = "", **extra) -> str:
    """The prompt text for messages [{role, content}, ...] (``add_generation_prompt`` opens the reply)."""
    import jinja2

    for m in messages:
        if not isinstance(m, dict) or "role" not in m:
            raise MAQError(f"chat message {m!r}: expected a dict with 'role' and 'content'")
    try:
        return _compile(template or CHATML).render(messages=messages, add_generation_prompt=add_generation_prompt,
                                                   bos_token=bos_token, eos_token=eos_token, **extra)
    except jinja2.exceptions.TemplateError as exc:
        raise MAQError(f"tokenizer.chat_template: {exc}") from None


def render_for(tokenizer, messages: list[dict], add_generation_prompt: bool = True, **extra) -> str:
    """render() with the template and special tokens of a ``tokenizer.Tokenizer``."""
    tok = tokenizer
    bos = tok.tokens[tok.bos_id] if tok.bos_id is not None else ""
    eos = tok.tokens[tok.eos_id] if tok.eos_id is not None else ""
    return render(tok.chat_template, messages, add_generation_prompt=add_generation_prompt, bos_token=bos,
                  eos_token=eos, **extra)
