"""Bad input to the runtime, through the API (``maq.Llama``) and the CLI (``maq generate/chat/perplexity``): each
one is a single ``maq.MAQError`` line naming what was wrong and what was expected; the CLI exits non-zero with
that line on stderr and no traceback. The model is the tiny MAQ GGUF of hostile_gguf.py (no torch needed)."""
from __future__ import annotations

import io
import math
import subprocess
import sys

import pytest

import hostile_gguf as H
from maq.cli import main
from maq.errors import MAQError


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    p = tmp_path_factory.mktemp("bad_input") / "tiny.maq.gguf"
    p.write_bytes(H.serialize(*H.base_model())[0])
    return p


@pytest.fixture(scope="module")
def other_arch(model):
    kvs, tensors = H.base_model()
    kvs[0] = H.KV("general.architecture", H.STR, "gpt2")
    p = model.parent / "gpt2.gguf"
    p.write_bytes(H.serialize(kvs, tensors)[0])
    return p


@pytest.fixture(scope="module")
def llm(model):
    from maq import Llama

    return Llama(str(model), n_ctx=16, n_threads=1, verbose=False)


def one_line(exc: BaseException, *needles: str) -> str:
    msg = str(exc)
    assert isinstance(exc, MAQError) and "\n" not in msg and msg.strip(), msg
    for n in needles:
        assert n in msg, (n, msg)
    return msg


# --------------------------------------------------------------------------- files
def test_bad_files_api(model, other_arch, tmp_path):
    from maq import Llama

    text = tmp_path / "notes.txt"
    text.write_text("hello, I am not a model\n" * 10)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    cases = [(tmp_path / "missing.gguf", "no such file"), (tmp_path, "not a regular file"),
             (text, "not a GGUF file"), (empty, "too small"), (other_arch, "only 'llama'")]
    for path, needle in cases:
        with pytest.raises(MAQError) as ei:
            Llama(str(path), verbose=False)
        one_line(ei.value, str(path), needle)


def test_unreadable_file(model, tmp_path):
    import os

    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their mode")
    p = tmp_path / "locked.gguf"
    p.write_bytes(model.read_bytes())
    p.chmod(0)
    from maq import Llama

    with pytest.raises(MAQError) as ei:
        Llama(str(p), verbose=False)
    one_line(ei.value, str(p), "cannot read")


# --------------------------------------------------------------------------- constructor arguments
@pytest.mark.parametrize("kw,needle", [
    (dict(n_threads=0), "n_threads"), (dict(n_threads=-1), "n_threads"), (dict(n_threads=1000), "n_threads"),
    (dict(n_threads=2.5), "n_threads"), (dict(n_threads="2"), "n_threads"), (dict(n_threads=True), "n_threads"),
    (dict(n_ctx=-5), "n_ctx"), (dict(n_ctx=2**40), "n_ctx"), (dict(n_ctx=1.5), "n_ctx"),
    (dict(n_batch=0), "n_batch"), (dict(n_batch=-1), "n_batch"), (dict(seed="x"), "seed"),
])
def test_bad_constructor_arguments(model, kw, needle):
    from maq import Llama

    with pytest.raises(MAQError) as ei:
        Llama(str(model), verbose=False, **kw)
    one_line(ei.value, needle, "expected")


def test_context_too_large_for_memory(model, monkeypatch):
    """n_ctx within range but more KV cache than the machine has (here: a machine of 16 MiB): refused before
    any allocation, naming n_ctx and the size."""
    from maq import Llama
    from maq.runtime import model as model_mod

    monkeypatch.setattr(model_mod, "physical_memory", lambda: 16 << 20)
    with pytest.raises(MAQError) as ei:
        Llama(str(model), n_ctx=1 << 16, verbose=False)        # 2 layers x (K, V) x 65536 x 32 x 4 bytes = 32 MiB
    one_line(ei.value, str(model), "n_ctx = 65536", "32.0 MiB of KV cache", "16.0 MiB")
    Llama(str(model), n_ctx=1 << 14, verbose=False)            # 8 MiB fits


# --------------------------------------------------------------------------- request arguments
BAD_REQUESTS = [
    (dict(prompt=""), "empty prompt"), (dict(prompt=[]), "empty prompt"),
    (dict(prompt="the cat sat on the mat " * 10), "does not fit the context window"),
    (dict(prompt=[1, 2, 10**6]), "outside the vocabulary"), (dict(prompt=[1, -1]), "outside the vocabulary"),
    (dict(prompt=[1, "a"]), "integers"), (dict(prompt=3.5), "prompt"),
    (dict(temperature=-0.1), "temperature"), (dict(temperature=math.nan), "temperature"),
    (dict(temperature=math.inf), "temperature"), (dict(temperature="hot"), "temperature"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.5), "top_p"), (dict(top_p=-1.0), "top_p"),
    (dict(top_p=math.nan), "top_p"),
    (dict(top_k=-1), "top_k"), (dict(top_k=2.5), "top_k"),
    (dict(min_p=-0.1), "min_p"), (dict(min_p=1.1), "min_p"), (dict(min_p=math.nan), "min_p"),
    (dict(repeat_penalty=0.0), "repeat_penalty"), (dict(repeat_penalty=-1.0), "repeat_penalty"),
    (dict(repeat_penalty=math.inf), "repeat_penalty"),
    (dict(max_tokens=2.5), "max_tokens"),     # <= 0: until the context is full (llama-cpp-python; issue 17)
    (dict(logprobs=-1), "logprobs"), (dict(stop=5), "stop"), (dict(seed="x"), "seed"),
]


@pytest.mark.parametrize("kw,needle", BAD_REQUESTS, ids=[f"{list(k)[0]}={list(k.values())[0]!r}"[:40]
                                                          for k, _ in BAD_REQUESTS])
def test_bad_completion_requests(llm, kw, needle):
    kw = {"max_tokens": 2, **kw}
    prompt = kw.pop("prompt", "the cat")
    with pytest.raises(MAQError) as ei:
        llm.create_completion(prompt, **kw)
    one_line(ei.value, needle)
    with pytest.raises(MAQError) as ei:           # a stream refuses at the call, not at the first chunk
        llm.create_completion(prompt, stream=True, **kw)
    one_line(ei.value, needle)


@pytest.mark.parametrize("kw,needle", [(dict(temperature=-1.0), "temperature"), (dict(top_k=-2), "top_k"),
                                       (dict(max_tokens=2.5), "max_tokens"), (dict(min_p=2.0), "min_p")])
def test_bad_chat_requests(llm, kw, needle):
    msgs = [{"role": "user", "content": "hi"}]
    for stream in (False, True):
        with pytest.raises(MAQError) as ei:
            llm.create_chat_completion(msgs, stream=stream, **kw)
        one_line(ei.value, needle)
    for bad in ([], [{"role": "user"}], "hi", [{"role": "user", "content": 5}]):
        with pytest.raises(MAQError) as ei:
            llm.create_chat_completion(bad)
        one_line(ei.value, "messages")


def test_good_requests_still_work(llm):
    """The edges of every valid range are accepted."""
    for kw in (dict(temperature=0.0), dict(top_p=1.0, top_k=0, min_p=0.0), dict(min_p=1.0, temperature=2.0),
               dict(repeat_penalty=1e-3), dict(max_tokens=None), dict(seed=-1), dict(stop=["x", "y"])):
        res = llm.create_completion("the cat", **{"max_tokens": 2, **kw})
        assert res["usage"]["prompt_tokens"] >= 1
    assert llm.create_completion([5, 6, 7], max_tokens=1)["usage"]["prompt_tokens"] == 3


# --------------------------------------------------------------------------- CLI
def _cli(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc != 0, (argv, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("maq: error:") and "Traceback" not in err, err
    return lines[0]


CLI_BAD = [
    (["-p", ""], "--prompt is empty"),
    (["-p", "the cat sat on the mat " * 10, "--ctx", "16"], "does not fit the context window"),
    (["-t", "0"], "--threads 0"), (["-t", "-1"], "--threads -1"), (["-t", "1000"], "--threads 1000"),
    (["--temp", "-1"], "--temp -1"), (["--temp", "nan"], "--temp nan"),
    (["--top-p", "0"], "--top-p 0"), (["--top-p", "1.5"], "--top-p 1.5"),
    (["--top-k", "-1"], "--top-k -1"), (["--min-p", "1.5"], "--min-p 1.5"), (["--min-p", "-0.5"], "--min-p -0.5"),
    (["--repeat-penalty", "0"], "--repeat-penalty 0"), (["--repeat-penalty", "-2"], "--repeat-penalty -2"),
    (["--repeat-last-n", "-5"], "--repeat-last-n -5"),
    (["--batch", "0"], "--batch 0"), (["--ctx", "0"], "--ctx 0"), (["--ctx", "-4"], "--ctx -4"),
]


@pytest.mark.parametrize("extra,needle", CLI_BAD, ids=[" ".join(a)[:30] for a, _ in CLI_BAD])
def test_cli_generate_bad_arguments(model, capsys, extra, needle):
    argv = ["generate", str(model), "-p", "the cat", "-n", "2", "--ctx", "64", *extra]
    assert needle in _cli(capsys, argv)


def test_cli_bad_files(model, other_arch, tmp_path, capsys):
    text = tmp_path / "notes.txt"
    text.write_text("not a model")
    for path, needle in ((tmp_path / "missing.gguf", "no such file"), (text, "not a GGUF file"),
                         (other_arch, "only 'llama'")):
        for cmd in (["generate", str(path), "-p", "x"], ["chat", str(path)],
                    ["perplexity", str(path), "-f", str(text)]):
            line = _cli(capsys, cmd)
            assert str(path) in line and needle in line


def test_cli_chat_and_perplexity_bad_arguments(model, capsys, monkeypatch, tmp_path):
    monkeypatch.setattr("sys.stdin", io.StringIO("hello\n"))
    assert "--temp" in _cli(capsys, ["chat", str(model), "--temp", "-1"])
    assert "--threads" in _cli(capsys, ["chat", str(model), "-t", "0"])
    assert "--repeat-last-n" in _cli(capsys, ["chat", str(model), "--repeat-last-n", "-2"])
    text = tmp_path / "t.txt"
    text.write_text("the cat sat on the mat. " * 40)
    assert "--limit" in _cli(capsys, ["perplexity", str(model), "-f", str(text), "--limit", "0"])
    assert "--ctx" in _cli(capsys, ["perplexity", str(model), "-f", str(text), "--ctx", "-1"])
    assert "cannot read" in _cli(capsys, ["perplexity", str(model), "-f", str(tmp_path / "none.txt")])


def test_cli_process_exit_codes(model, tmp_path):
    """As a real process: exit status non-zero, one line on stderr, no traceback (MAQError -> 1, argparse -> 2)."""
    cases = [(["generate", str(tmp_path / "missing.gguf"), "-p", "x"], 1),
             (["generate", str(model), "-p", "x", "--temp", "-1"], 1),
             (["generate", str(model), "-p", "x", "-t", "abc"], 2)]
    for argv, code in cases:
        res = subprocess.run([sys.executable, "-m", "maq", *argv], capture_output=True, text=True, timeout=120)
        assert res.returncode == code, (argv, res.stderr)
        assert "Traceback" not in res.stderr and res.stderr.strip(), res.stderr
        if code == 1:
            assert len(res.stderr.strip().splitlines()) == 1 and res.stderr.startswith("maq: error:")


def test_engine_refuses_bad_tokens(model):
    """The C engine's Python side checks token ids before C sees them (an int32 overflow used to escape as
    OverflowError)."""
    from maq.runtime import gguf_loader as gl
    from maq.runtime import model as M

    cm = M.CModel(gl.load(model), n_ctx=8, n_threads=1)
    for toks in ([2**40], [-1], [1.5], [H.VOCAB]):
        for mode in (M.LOGITS_ALL, M.LOGITS_LAST):
            with pytest.raises(MAQError) as ei:
                cm.forward(toks, 0, mode)
            one_line(ei.value, "vocabulary")
    with pytest.raises(MAQError) as ei:
        cm.forward(2**40, 0, M.LOGITS_ALL)
    one_line(ei.value, "vocabulary")
    with pytest.raises(MAQError) as ei:
        cm.step(H.VOCAB, 0)
    one_line(ei.value, "vocabulary")
    assert cm.forward([1, 2, 3], 0, M.LOGITS_ALL).shape == (3, H.VOCAB)


def test_sampler_survives_extreme_logits():
    """Finite but huge logits (an overflowing model) or a tiny temperature draw a token without NaN
    probabilities (numpy's "probabilities contain NaN" used to escape) and without warnings."""
    import warnings

    import numpy as np

    from maq.runtime.sampling import Sampler, SamplingParams

    x = np.array([-3e38, 3e38, 1e38, 0.0, -1.0], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for kw in (dict(), dict(top_k=0), dict(top_k=0, top_p=1.0, min_p=0.0), dict(temperature=1e-30, top_k=0),
                   dict(temperature=1e30, top_k=0, min_p=0.0, top_p=1.0)):
            s = Sampler(SamplingParams(seed=0, **kw))
            got = {s(x) for _ in range(20)}
            assert got <= {0, 1, 2, 3, 4} and (1 in got)
