"""llama.cpp habits on the CLI (issue 17): -m/--model, -c/--ctx-size, -ngl, --repeat-last-n, -n <= 0, chat /help,
and invalid UTF-8 from argv or stdin -> U+FFFD replacement characters with one warning line, never a traceback."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys

from maq.cli import main


def _json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_model_flag_ctx_size_and_ngl(tiny_gqa, capsys):
    path = str(tiny_gqa[1])
    assert main(["generate", "-m", path, "-p", "Hello", "-n", "3", "-c", "64", "-ngl", "99", "--temp", "0",
                 "--json"]) == 0
    cap = capsys.readouterr()
    a = json.loads(cap.out.strip().splitlines()[-1])
    assert "-ngl 99 ignored: MAQ runs on the CPU" in cap.err and cap.err.count("\n") == 1
    assert main(["generate", path, "-p", "Hello", "-n", "3", "--ctx-size", "64", "--temp", "0", "--json"]) == 0
    assert _json(capsys)["text"] == a["text"]


def test_model_errors_are_one_line(tiny_gqa, capsys):
    assert main(["generate", "-p", "Hello"]) == 1
    assert "no model given" in capsys.readouterr().err
    assert main(["generate", str(tiny_gqa[1]), "-m", "other.gguf", "-p", "Hello"]) == 1
    assert "two models given" in capsys.readouterr().err


def test_max_tokens_nonpositive_fills_the_context(tiny_gqa, capsys):
    assert main(["generate", str(tiny_gqa[1]), "-p", "Hello", "-n", "-1", "-c", "24", "--temp", "0", "--json",
                 "--repeat-last-n", "8", "--repeat-penalty", "1.1"]) == 0
    res = _json(capsys)
    assert res["finish_reason"] == "stop" or res["prompt_tokens"] + res["generated_tokens"] == 24


def test_chat_help_and_unknown_command(tiny_gqa, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("/help\n/hlep\nHi\n"))
    assert main(["chat", str(tiny_gqa[1]), "-n", "2", "--temp", "0", "--ctx", "64"]) == 0
    err = capsys.readouterr().err
    assert "/reset" in err and "unknown command /hlep" in err and err.count("reply:") == 1


def _run(args, stdin=b""):
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    return subprocess.run([sys.executable, "-m", "maq", *args], input=stdin, capture_output=True, env=env,
                          timeout=300)


def test_invalid_utf8_from_argv_and_stdin(tiny_gqa):
    path = str(tiny_gqa[1])
    bad = os.fsdecode(b"caf\xe9 au lait")           # what Python makes of invalid UTF-8 in argv
    r = _run(["generate", path, "-p", bad, "-n", "2", "-c", "64", "--json"])
    assert r.returncode == 0, r.stderr
    assert b"Traceback" not in r.stderr and b"--prompt is not valid UTF-8" in r.stderr
    assert json.loads(r.stdout.splitlines()[-1])["prompt_tokens"] > 0
    # three exchanges: a context with room for all of them and a fixed seed (a random 2-token reply can re-tokenize
    # longer in the history: with -c 64 and a random seed the third turn sometimes did not fit, a flaky failure)
    r = _run(["chat", path, "-n", "2", "-c", "256", "--seed", "1"], stdin=b"caf\xe9\n\xff\xfe\nok\n")
    assert r.returncode == 0, r.stderr
    assert b"Traceback" not in r.stderr and r.stderr.count(b"input line is not valid UTF-8") == 2
    assert r.stderr.count(b"reply:") == 3
