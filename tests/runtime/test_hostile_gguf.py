"""Hostile GGUF files: thousands of variants of a tiny valid MAQ GGUF (tests/runtime/hostile_gguf.py), each loaded
with ``maq.Llama`` and run through a completion in a worker process under an address-space limit and a timeout.

Every variant must either load and run, or raise ``maq.MAQError`` whose message is one line naming the file and
(for the targeted variants) the key or tensor that was changed. A worker that dies (segfault, abort), hangs,
raises anything else, or grows past a memory bound fails the test with the variant's name; the worker is
replaced and the run goes on, so one report lists every failure.

The corruption classes are llama.cpp's tests/test-gguf.cpp (bad magic, version 0/1/future, bad n_tensors / n_kv,
bad or empty key, bad value type, duplicate key, bad / wrong-typed / inconsistent alignment, bad name size,
bad n_dims, bad or zero shape, ne and nbytes too big, padding wrap, bad tensor type, bad offset, duplicate name,
not enough data, size overflow) plus: every metadata key rewritten with 18 wrong types, huge and zero model
dimensions, MAQ2 / MAQ3 / MAQ4 parts disagreeing (shapes, types, group size key, type key naming another member,
a part of another member, bitmap padding bits, non-finite row scales, missing parts), truncation at and around
every field boundary, and random byte flips.
``MAQ_HOSTILE_SEED`` changes the random flips (default 0; the seed is in every random variant's name).
"""
from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import hostile_gguf as H

HERE = Path(__file__).resolve().parent
N_WORKERS = 2
TIMEOUT_S = 30.0          # per variant (a healthy one takes milliseconds)
STARTUP_S = 300.0         # a worker's imports
MAX_RSS_KB = 256 * 1024   # a worker's peak RSS (VmHWM): about 50 MB here; the model needs a few MB


class Worker:
    """One ``hostile_gguf.py --worker`` process: send a path, read one JSON line, with a timeout."""

    def __init__(self, selftest: bool = False):
        env = dict(os.environ, PYTHONFAULTHANDLER="1", MAQ_THREADS="2", MAQ_HOSTILE_SELFTEST="1" if selftest else "0")
        self.selftest = selftest
        self.p = subprocess.Popen([sys.executable, str(HERE / "hostile_gguf.py"), "--worker"], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(HERE))
        self.buf = b""
        ready = self._answer(STARTUP_S)
        if ready.get("status") != "ready":
            raise RuntimeError(f"hostile_gguf worker did not start: {ready}")

    def run(self, path: str, timeout: float) -> dict:
        try:
            self.p.stdin.write(path.encode() + b"\n")
            self.p.stdin.flush()
        except BrokenPipeError:
            return self._dead()
        return self._answer(timeout)

    def _answer(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        fd = self.p.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                self.kill()
                return {"status": "hang", "msg": f"no answer within {timeout:.0f} s"}
            r, _, _ = select.select([fd], [], [], left)
            if r:
                chunk = os.read(fd, 65536)
                if not chunk:
                    return self._dead()
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def _dead(self) -> dict:
        rc = self.p.wait(timeout=10)
        err = self.p.stderr.read().decode(errors="replace")[-3000:]
        return {"status": "crash", "msg": f"worker exited with {rc}: {err}"}

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.wait(timeout=10)

    def close(self) -> None:
        try:
            self.p.stdin.close()
            self.p.wait(timeout=10)
        except Exception:  # noqa: BLE001
            self.kill()


def judge(v: H.Variant, path: str, res: dict) -> str | None:
    """None if the result is acceptable for the variant, else why not."""
    st = res["status"]
    if res.get("maxrss_kb", 0) > MAX_RSS_KB:
        return f"peak RSS {res['maxrss_kb'] // 1024} MB"
    if st in ("crash", "hang", "exception"):
        return f"{st}: {res['msg']}"
    if st == "ok":
        return "loaded, but must be refused" if v.must_fail else None
    if v.must_load:
        return f"a valid file refused: {res.get('msg')!r}"
    msg = res["msg"]
    if "\n" in msg:
        return f"message is not one line: {msg!r}"
    if path not in msg:
        return f"message does not name the file: {msg!r}"
    if "could not allocate" in msg:
        return f"tried a huge allocation: {msg!r}"
    if v.expect and not any(e in msg for e in v.expect):
        return f"message names none of {v.expect}: {msg!r}"
    return None


def run_variants(variants, tmp: Path, n_workers: int = N_WORKERS, timeout: float = TIMEOUT_S, selftest=False,
                 names=None):
    """[(variant, result, problem or None)] for every variant, run on a pool of workers."""
    items = list(variants)
    results: list = [None] * len(items)
    lock = threading.Lock()
    nxt = [0]

    def drive():
        w = Worker(selftest)
        try:
            while True:
                with lock:
                    i = nxt[0]
                    nxt[0] += 1
                if i >= len(items):
                    return
                v = items[i]
                path = str(tmp / (names[i] if names else f"v{i:05d}.gguf"))
                with open(path, "wb") as f:
                    f.write(v.data)
                res = w.run(path, timeout)
                if res["status"] in ("crash", "hang"):
                    w.kill()
                    w = Worker(selftest)
                results[i] = (v, res, judge(v, path, res))
                os.unlink(path)
        finally:
            w.close()

    threads = [threading.Thread(target=drive) for _ in range(n_workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_hostile_variants(tmp_path):
    seed = int(os.environ.get("MAQ_HOSTILE_SEED", "0"))
    t0 = time.perf_counter()
    variants = list(H.variants(seed=seed))
    assert len(variants) >= 1000
    results = run_variants(variants, tmp_path)
    elapsed = time.perf_counter() - t0
    bad = [(v.id, problem) for v, _, problem in results if problem]
    counts: dict = {}
    for v, res, _ in results:
        counts[res["status"]] = counts.get(res["status"], 0) + 1
    peak = max(res.get("maxrss_kb", 0) for _, res, _ in results) // 1024
    print(f"\n{len(variants)} hostile variants in {elapsed:.1f} s: {counts}, worker peak RSS {peak} MB")
    base = results[0]
    assert base[0].id == "base" and base[1]["status"] == "ok", base
    assert counts.get("ok", 0) >= 100 and counts.get("error", 0) >= 1000   # both outcomes are exercised
    assert not bad, f"{len(bad)} of {len(variants)} variants mishandled:\n" + "\n".join(
        f"  {i}: {p[:600]}" for i, p in bad[:40])


def test_harness_catches_crashes_hangs_and_memory(tmp_path):
    """The harness itself: a worker that segfaults, aborts, hangs, hits the address-space limit or grows past the
    RSS bound is reported against its variant (and replaced), and the variants after it still run."""
    base = H.Variant("base", H.serialize(*H.base_model())[0])
    kinds = ["segv", "ok1", "abort", "hang", "ok2", "alloc", "rss", "ok3"]
    res = run_variants([base] * len(kinds), tmp_path, n_workers=1, timeout=5.0, selftest=True,
                       names=[f"{k}.gguf" for k in kinds])
    got = {k: (r[1]["status"], r[2]) for k, r in zip(kinds, res)}
    assert got["segv"][0] == "crash" and "-11" in got["segv"][1]
    assert got["abort"][0] == "crash" and "-6" in got["abort"][1]
    assert got["hang"][0] == "hang"
    assert got["alloc"][0] == "exception" and "MemoryError" in got["alloc"][1]
    assert got["rss"][1] and "peak RSS" in got["rss"][1]
    for k in ("ok1", "ok2", "ok3"):
        assert got[k] == ("ok", None) or k == "ok3" and got[k][0] == "ok", (k, got[k])
