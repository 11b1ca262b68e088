"""Chat templates are untrusted code (they come from the file's metadata): every abuse ends in one MAQError line
naming the file and tokenizer.chat_template, fast, with memory bounded; real templates still render; a broken
template does not stop plain completion."""
from __future__ import annotations

import resource
import time

import pytest

from maq.errors import MAQError
from maq.runtime import chat

MSGS = [{"role": "user", "content": "hi"}]
WHERE = "/models/hostile.gguf"

ABUSE = {
    "range-1e9": "{% for i in range(10**9) %}x{% endfor %}",
    "nested-range-silent": "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "nested-range-output": "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
    "nested-lists": "{% set l = [1] * 100000 %}{% for a in l %}{% for b in l %}{% endfor %}{% endfor %}",
    "recursive-macro": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
    "mutual-recursion": "{% macro a() %}{{ b() }}{% endmacro %}{% macro b() %}{{ a() }}{% endmacro %}{{ a() }}",
    "zero-division": "{{ 1 / 0 }}",
    "int-mod-zero": "{{ 1 % 0 }}",
    "int-plus-str": "{{ 1 + 'a' }}",
    "str-times-1e8": "{{ 'x' * 100000000 }}",
    "list-times-1e9": "{{ ([0] * 1000000000) | length }}",
    "int-times-str": "{{ 100000000 * 'xy' }}",
    "pow-huge": "{{ 2 ** 100000000 }}",
    "pow-tower": "{{ 10 ** (10 ** 10) }}",
    "doubling-tilde": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}"
                      "{% endfor %}{{ ns.s | length }}",
    "doubling-plus": "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}"
                     "{% endfor %}{{ ns.s | length }}",
    "growing-capture": "{% set ns = namespace(s='') %}{% for i in range(100000) %}{% set ns.s = ns.s + "
                       "'yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy' %}{% endfor %}",
    "center-huge": "{{ 'x' | center(1000000000) }}",
    "center-method": "{{ 'x'.center(1000000000) }}",
    "ljust-method": "{{ 'x'.ljust(1000000000) }}",
    "zfill": "{{ '1'.zfill(1000000000) }}",
    "replace-blowup": "{% set s = 'a' * 1000000 %}{{ s.replace('a', s) | length }}",
    "replace-filter-blowup": "{% set s = 'a' * 1000000 %}{{ (s | replace('a', s)) | length }}",
    "join-blowup": "{% set s = 'a' * 1000000 %}{{ ([s] * 1000) | join | length }}",
    "join-method-blowup": "{% set s = 'a' * 1000000 %}{{ s.join([s] * 100) | length }}",
    "format-width": "{{ '%1000000000s' % 'x' }}",
    "format-star-width": "{{ '%*s' % (1000000000, 'x') }}",
    "str-format-width": "{{ '{:>1000000000}'.format('x') }}",
    "format-filter-width": "{{ '%1000000000d' | format(1) }}",
    "indent-blowup": "{% set s = '\\n' * 1000000 %}{{ s | indent(1000) | length }}",
    "expandtabs": "{% set s = '\\t' * 1000000 %}{{ s.expandtabs(1000) | length }}",
    "tojson-indent": "{{ [[1]] | tojson(indent=1000000000) }}",
    "output-flood": "{% for i in range(100000) %}{{ 'z' * 100 }}{% endfor %}",
    "raise-exception": "{{ raise_exception('no system role') }}",
    "syntax-error": "{% if %}",
    "undefined-call": "{{ nothing() }}",
    "attribute-of-int": "{{ (1).real.foo.bar() }}",
    "unsafe-attr": "{{ ''.__class__.__mro__ }}",
    "list-append": "{% set l = [] %}{{ l.append(1) }}",
    "items-of-str": "{{ messages[0].content.items() }}",
    "int-str-digits": "{{ (10 ** 6000) | string }}",
    "long-raise": "{{ raise_exception('m' * 4000000) }}",
    "long-syntax-error": "{% if " + "x" * 100000 + " %}",
}


@pytest.mark.parametrize("name", list(ABUSE))
def test_abuse_is_one_clean_line(name):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    with pytest.raises(MAQError) as ei:
        chat.render(ABUSE[name], MSGS, where=WHERE, time_limit=1.0)
    dt = time.monotonic() - t0
    msg = str(ei.value)
    assert msg.startswith(f"{WHERE}: tokenizer.chat_template"), msg
    assert "\n" not in msg and "Traceback" not in msg and len(msg) < 500, msg[:300]
    assert dt < 5.0, f"{name}: {dt:.1f} s"
    grown_mb = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mb < 400, f"{name}: peak RSS grew {grown_mb:.0f} MB"


def test_limits_leave_no_tracer_or_budget_behind():
    import sys

    prev = sys.gettrace()
    with pytest.raises(MAQError):
        chat.render(ABUSE["nested-range-silent"], MSGS, time_limit=0.2)
    assert sys.gettrace() is prev
    assert chat.render(None, MSGS) == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


REAL = {
    "chatml": chat.CHATML,
    "llama3": ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
               "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + "
               "'<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
               "{{ content }}{% endfor %}{% if add_generation_prompt %}"
               "{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"),
    "tilde-and-filters": ("{% for m in messages %}{{ m.role | upper ~ ': ' ~ m.content | trim }}"
                          "{{ '\\n' if not loop.last }}{% endfor %}{{ (messages | map(attribute='role') | list) "
                          "| tojson }}{{ '%s/%d' % ('n', messages | length) }}{{ 'ab'.replace('a', 'x') }}"
                          "{{ range(3) | join(',') }}{{ 2 ** 10 }}"),
}


@pytest.mark.parametrize("name", list(REAL))
def test_real_templates_render_as_plain_jinja(name):
    """The limits change nothing for ordinary templates: same text as an unlimited jinja sandbox."""
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "  Hi  "},
            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "x" * 200000}]
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.filters["tojson"] = lambda x, **kw: __import__("json").dumps(x, **kw)
    want = env.from_string(REAL[name]).render(messages=msgs, add_generation_prompt=True, bos_token="<s>",
                                              eos_token="</s>")
    assert chat.render(REAL[name], msgs, bos_token="<s>", eos_token="</s>") == want


def test_long_conversation_renders_fast():
    msgs = [{"role": "user" if i % 2 else "assistant", "content": "word " * 200} for i in range(400)]
    t0 = time.monotonic()
    out = chat.render(REAL["llama3"], msgs, bos_token="<s>")
    assert len(out) > 400 * 1000 and time.monotonic() - t0 < 2.0


def test_template_too_long():
    with pytest.raises(MAQError, match="tokenizer.chat_template: .* characters"):
        chat.render("x" * (chat.MAX_TEMPLATE + 1), MSGS, where=WHERE)


# 10**9 silent iterations over small lists: no size or range() budget trips, only the time limit (a range() loop
# can trip the range budget first on a fast, idle machine).
SLOW_LISTS = "{% set l = [1] * 1000 %}{% for a in l %}{% for b in l %}{% for c in l %}{% endfor %}{% endfor %}{% endfor %}"


def test_threads_keep_their_own_budgets():
    """A render that times out on one thread does not disturb a render on another."""
    import threading

    errors, outs = [], []

    def bad():
        try:
            chat.render(SLOW_LISTS, MSGS, time_limit=0.5)
        except MAQError as exc:
            errors.append(str(exc))

    def good():
        for _ in range(50):
            outs.append(chat.render(REAL["llama3"], MSGS, bos_token="<s>"))

    ts = [threading.Thread(target=bad), threading.Thread(target=good)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(errors) == 1 and "time limit" in errors[0]
    assert len(set(outs)) == 1 and len(outs) == 50


@pytest.mark.parametrize("template", ["{{ 1 / 0 }}", "{% for i in range(10**9) %}x{% endfor %}", 7])
def test_broken_template_still_allows_plain_generate(tmp_path, capsys, template):
    """Llama loads and completes; only a chat (API or `generate --chat`) reports the template, naming the file."""
    import hostile_gguf as hg

    from maq.cli import main
    from maq.runtime.api import Llama

    kvs, tensors = hg.base_model()
    kvs = [kv for kv in kvs if kv.key != "tokenizer.chat_template"]
    kvs.append(hg.KV("tokenizer.chat_template", hg.STR if isinstance(template, str) else hg.U32, template))
    path = tmp_path / "bad_template.gguf"
    path.write_bytes(hg.serialize(kvs, tensors)[0])
    llm = Llama(str(path), n_ctx=16, n_threads=1, seed=0, verbose=False)
    assert llm.create_completion("the cat", max_tokens=2, temperature=0.0)["usage"]["completion_tokens"] >= 1
    with pytest.raises(MAQError, match=f"{path}: (metadata )?tokenizer.chat_template"):
        llm.apply_chat_template(MSGS)
    capsys.readouterr()
    assert main(["generate", str(path), "-p", "the cat", "-n", "2", "--temp", "0"]) == 0
    assert main(["generate", str(path), "-p", "the cat", "-n", "2", "--chat"]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("maq: error:")]
    assert len(lines) == 1 and "tokenizer.chat_template" in lines[0] and str(path) in lines[0], err
    assert "Traceback" not in err


def test_every_abuse_through_a_gguf_names_the_file(tmp_path):
    """The same abuse set stored in a GGUF's tokenizer.chat_template: the model loads and completes, and the chat
    API refuses each template with one line naming that file."""
    import hostile_gguf as hg

    from maq.runtime.api import Llama

    kvs, tensors = hg.base_model()
    kvs = [kv for kv in kvs if kv.key != "tokenizer.chat_template"]
    for i, (name, template) in enumerate(ABUSE.items()):
        path = tmp_path / f"t{i}.gguf"
        path.write_bytes(hg.serialize(kvs + [hg.KV("tokenizer.chat_template", hg.STR, template)], tensors)[0])
        llm = Llama(str(path), n_ctx=16, n_threads=1, seed=0, verbose=False)
        with pytest.raises(MAQError) as ei:
            llm.create_chat_completion(MSGS, max_tokens=1)
        assert str(ei.value).startswith(f"{path}: tokenizer.chat_template"), (name, str(ei.value))
        assert "\n" not in str(ei.value)
