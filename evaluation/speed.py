"""Decode and prefill tokens/s of our runtime, measured as scripts/bench_speed.py does.

Decode (tg): greedy generation of ``n_gen`` tokens after a 17-token prompt, one ``step`` + argmax per token, as
``maq generate`` runs; prefill (pp): one ``n_prompt``-token prompt in batches of 128. Best of ``reps``. Also per
CPU-second of the process (``tg_cpu``/``pp_cpu``: meaningful at 1 thread on a shared machine) and the 1-minute load
average.
"""
from __future__ import annotations

import time

import numpy as np


def measure(path: str, threads: int, n_gen: int = 128, n_prompt: int = 128, reps: int = 2) -> dict:
    from maq.runtime.api import Llama

    llm = Llama(str(path), n_ctx=max(512, n_prompt + n_gen + 32), n_threads=threads, n_batch=128, verbose=False)
    m = llm.model
    rng = np.random.default_rng(0)
    prompt = rng.integers(100, min(40000, llm.n_vocab()), n_prompt).astype(np.int32)
    m.forward(prompt[:8], 0)        # warm-up: page in the weights, start the pool
    best_pp = best_tg = cpu_pp = cpu_tg = float("inf")
    for _ in range(reps):
        t0, c0 = time.perf_counter(), time.process_time()
        m.forward(prompt, 0)
        best_pp = min(best_pp, time.perf_counter() - t0)
        cpu_pp = min(cpu_pp, time.process_time() - c0)
    for _ in range(reps):
        m.forward(prompt[:16], 0)
        tok = int(np.argmax(m.forward(prompt[16:17], 16)))
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(n_gen):
            tok = int(np.argmax(m.step(tok, 17 + i)))
        best_tg = min(best_tg, time.perf_counter() - t0)
        cpu_tg = min(cpu_tg, time.process_time() - c0)
    import os

    # tokens per CPU-second of the whole process: on a loaded machine the wall-clock rate measures the share of
    # the CPU this process got; at 1 thread the CPU-time rate is close to what an idle core would do
    return {"threads": threads, "tg": n_gen / best_tg, "pp": n_prompt / best_pp, "n_gen": n_gen,
            "n_prompt": n_prompt, "tg_cpu": n_gen / cpu_tg, "pp_cpu": n_prompt / cpu_pp,
            "load_avg": os.getloadavg()[0]}
