#!/usr/bin/env python3
"""Benchmark the MAQ C kernels (issue 4, item 5; issue 9, item 4). Prints tables; the LAST line is one JSON object.

In one run:
  * machine read bandwidth: a C read-sum loop (maq_read_sum) over a buffer much larger than the last-level cache,
    1 and 2 threads (best of --reps);
  * numpy float32 matvec of the same 4096x11008 shape (numpy's BLAS with its default threads);
  * MAQ2 4096x11008 (T=4096 inputs, P=11008 rows, G=128, 2.5% salient words): ms per matvec, Gweights/s and
    effective GB/s (all bytes of words + bitmap + scales + row scales, per second) for every supported path at
    1 and 2 threads (the tensor, 11.6 MB, stays in this machine's 32 MB L3);
  * a large weight set: several 4096x11008 tensors with >= --large-mb MB of packed words in total, used
    round-robin so every matvec streams its weights from DRAM: effective GB/s per path at 1 and 2 threads;
  * the 2-thread matvec while another process keeps one core busy (the pool must not collapse);
  * SmolLM2-135M shapes at 1 thread (576x576, 1536x576, 576x1536 MAQ2 and the 49152x576 Q8_0 output head);
  * the type family at the same 4096x11008 shape (G=128): MAQ2 (2.5% salient), MAQ3, MAQ4 and Q8_0, every SIMD
    path, 1 and 2 threads: ms per matvec, Gweights/s, effective GB/s and the time per weight relative to MAQ2
    (best of many single calls: robust to a shared machine). ``--family-only`` runs just this section.

JSON keys: gweights_per_s_1t, gweights_per_s_2t and effective_gbs_2t_large are the 128-bit path ("sse" on
x86-64, "neon" on aarch64) -- the path the issue's bar is about; numpy_f32_gweights_per_s, read_bw_gbs_1t,
read_bw_gbs_2t; "paths" holds the figures of every path; "bar" the issue's pass/fail checks; "family" the type
family figures {path: {type: {...}}}.

    python scripts/bench_kernel.py            # full run (~1-2 min, ~1.2 GB of RAM)
    python scripts/bench_kernel.py --quick    # smaller large set and fewer repetitions (smoke test)
    python scripts/bench_kernel.py --family-only --md FILE   # MAQ2 / MAQ3 / MAQ4 / Q8_0 only (~30 s)
    python scripts/bench_kernel.py --ab avx2,vnni   # CPU-time A/B of two paths (SmolLM2 shapes, 11008x4096)
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

import numpy as np

from maq.runtime import format as F
from maq.runtime import kernels as K
from maq.runtime.info import cpu_model

T, P, G, SALIENT = 4096, 11008, 128, 0.025


def random_maq2(rng: np.random.Generator, T: int, P: int, G: int, frac: float) -> F.MAQTensor:
    """Random MAQ2 parts (kernel speed does not depend on the values; the bitmap density does)."""
    lay = F.Layout(T, P, G)
    words = rng.integers(0, 2 ** 32, size=lay.words_shape, dtype=np.uint32).view("<i4")
    bitmap = np.packbits(rng.random((P, T // 16)) < frac, axis=1, bitorder="little")
    scales = rng.integers(0, 256, size=lay.scales_shape, dtype=np.uint8)
    rowscale = (rng.random(lay.rowscale_shape) * 1e-3).astype("<f2")
    t = F.MAQTensor(words=words, bitmap=bitmap, scales=scales, rowscale=rowscale, T=T, G=G)
    t.validate("bench")
    return t


def random_maq_hi(rng: np.random.Generator, T: int, P: int, G: int, bits: int) -> F.MAQTensor:
    """Random MAQ3 / MAQ4 parts (any word and hi bits: every code; kernel speed does not depend on the values)."""
    lay = F.Layout(T, P, G, bits)
    hshape, hdt = lay.part_specs()[F.PART_HI]
    words = rng.integers(0, 2 ** 32, size=lay.words_shape, dtype=np.uint32).view("<i4")
    hi = rng.integers(0, 2 ** 32, size=hshape, dtype=np.uint32)
    hi = hi.astype("<u2") if bits == 3 else hi.view("<i4")
    scales = rng.integers(0, 256, size=lay.scales_shape, dtype=np.uint8)
    rowscale = (rng.random(lay.rowscale_shape) * 1e-3).astype("<f2")
    t = F.MAQTensor(words=words, bitmap=None, scales=scales, rowscale=rowscale, T=T, G=G, bits=bits,
                    hi=np.ascontiguousarray(hi, hdt))
    t.validate("bench")
    return t


def random_q8_0(rng: np.random.Generator, T: int, P: int) -> "K.Weight":
    """Random Q8_0 bytes with sane fp16 block scales."""
    q = rng.integers(0, 256, size=(P, T // 32 * 34), dtype=np.uint8)
    q.reshape(P, -1, 34)[:, :, 1] = 0x1C
    return K.Weight.q8_0(q, T, P)


def family(rng: np.random.Generator, paths: list[str], reps: int) -> dict:
    """MAQ2 / MAQ3 / MAQ4 / Q8_0 at T x P, every non-scalar path, 1 and 2 threads: {path: {type: figures}}.

    Best of ``reps`` single calls (a call takes 1-10 ms: on a shared core the best single call is one that ran
    without being preempted, where the best of a block of calls rarely is)."""
    ws = {"maq2": (K.Weight.from_maq(random_maq2(rng, T, P, G, SALIENT)), F.bits_per_weight(T, P, G, 2)),
          "maq3": (K.Weight.from_maq(random_maq_hi(rng, T, P, G, 3)), F.bits_per_weight(T, P, G, 3)),
          "maq4": (K.Weight.from_maq(random_maq_hi(rng, T, P, G, 4)), F.bits_per_weight(T, P, G, 4))}
    q8 = random_q8_0(rng, T, P)
    ws["q8_0"] = (q8, q8.nbytes * 8 / (T * P))
    x = rng.standard_normal(T).astype(np.float32)
    out = np.empty(P, np.float32)
    res: dict = {}
    base: dict = {}
    print(f"type family {P}x{T} (P x T), G={G} (MAQ2 {SALIENT:.1%} salient words), best of {reps} single calls:")
    print(f"{'path':6s} {'thr':>3s} {'type':5s} {'bits/w':>6s} {'MB':>6s} {'ms/matvec':>10s} {'Gweights/s':>11s} "
          f"{'GB/s':>6s} {'time/weight vs MAQ2':>20s}")
    with K.Pool(1) as p1, K.Pool(2) as p2:
        pools = {1: p1, 2: p2}
        for path in [p for p in paths if p != "scalar"]:
            res[path] = {}
            with K.forced_path(path):
                for n in (1, 2):
                    for kind, (w, bpw) in ws.items():
                        tm = best_time(lambda: K.matmul(w, x, pools[n], out=out), reps)
                        r = res[path].setdefault(kind, {"bits_per_weight": round(bpw, 4),
                                                        "mb": round(w.nbytes / 1e6, 2)})
                        r[f"ms_{n}t"] = round(tm * 1e3, 4)
                        r[f"gweights_per_s_{n}t"] = round(T * P / tm / 1e9, 2)
                        r[f"gbs_{n}t"] = round(w.nbytes / tm / 1e9, 2)
                        base.setdefault((path, n), tm)            # maq2 runs first
                        r[f"vs_maq2_{n}t"] = round(tm / base[(path, n)], 3)
                        print(f"{path:6s} {n:3d} {kind:5s} {bpw:6.3f} {w.nbytes / 1e6:6.1f} {tm * 1e3:10.3f} "
                              f"{T * P / tm / 1e9:11.2f} {w.nbytes / tm / 1e9:6.1f} {r[f'vs_maq2_{n}t']:19.2f}x")
    return res


def markdown_family(fam: dict, argv, load: tuple) -> str:
    """The type-family table (markdown) for docs/BENCHMARKS.md."""
    argv = sys.argv[1:] if argv is None else argv
    cmd = "python scripts/bench_kernel.py" + ("" if not argv else " " + " ".join(argv))
    lines = [f"Machine: {cpu_model()} ({platform.machine()}, {os.cpu_count()} cores), date "
             f"{datetime.date.today().isoformat()}, load average before/after {load[0]:.2f} / {load[1]:.2f}.",
             f"Command: `{cmd}`", "",
             f"{P}x{T} (P x T), G={G}, MAQ2 with {SALIENT:.1%} salient words; time per weight relative to MAQ2 "
             "of the same path and threads (< 1: faster per weight):", "",
             "| path | threads | type | bits/weight | MB | ms/matvec | Gweights/s | GB/s | time/weight vs MAQ2 |",
             "|---|---|---|---|---|---|---|---|---|"]
    for path, kinds in fam.items():
        for n in (1, 2):
            for kind, r in kinds.items():
                lines.append(f"| {path} | {n} | {kind} | {r['bits_per_weight']:.3f} | {r['mb']:.1f} | "
                             f"{r[f'ms_{n}t']:.3f} | {r[f'gweights_per_s_{n}t']:.2f} | {r[f'gbs_{n}t']:.2f} | "
                             f"{r[f'vs_maq2_{n}t']:.2f} |")
    return "\n".join(lines) + "\n"


def best_time(fn, reps: int, inner: int = 1) -> float:
    """Best wall time of `inner` calls of fn, over `reps` repetitions, per call (seconds)."""
    fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def read_bandwidth(nbytes: int, threads: int, reps: int) -> float:
    buf = np.ones(nbytes // 8, np.uint64)
    with K.Pool(threads) as pool:
        t = best_time(lambda: K.read_sum(buf, pool), reps)
    del buf
    return nbytes / t / 1e9


def ab(rng: np.random.Generator, paths: list[str], reps: int = 9) -> dict:
    """CPU-time A/B of kernel paths at 1 thread on SmolLM2's shapes and 11008x4096, B = 1 and 16: per call thread
    CPU time (robust on a shared machine: time spent preempted does not count), best of `reps` blocks, the paths
    interleaved block by block. {"kind PxT B=b": {path: Gweights/s}}."""
    shapes = [(576, 576), (1536, 576), (576, 1536), (11008, 4096)]
    out: dict = {}
    with K.Pool(1) as p1:
        for P_, T_ in shapes:
            for kind in ("maq2", "maq4", "q8_0"):
                if kind == "maq2":
                    w = K.Weight.from_maq(random_maq2(rng, T_, P_, 128, SALIENT))
                elif kind == "maq4":
                    w = K.Weight.from_maq(random_maq_hi(rng, T_, P_, 128, 4))
                elif (P_, T_) == (576, 1536):
                    continue
                else:
                    w = random_q8_0(rng, T_, P_ if P_ != 11008 else 2048)
                for B in (1, 16):
                    x = rng.standard_normal((B, T_) if B > 1 else T_).astype(np.float32)
                    n = max(1, int(2e7 // (w.P * T_ * B)))
                    best = {p: float("inf") for p in paths}
                    for _ in range(reps):
                        for p in paths:
                            with K.forced_path(p):
                                K.matmul(w, x, p1)
                                t0 = time.thread_time()
                                for _ in range(n):
                                    K.matmul(w, x, p1)
                                best[p] = min(best[p], (time.thread_time() - t0) / n)
                    key = f"{kind} {w.P}x{T_} B={B}"
                    out[key] = {p: round(w.P * T_ * B / best[p] / 1e9, 2) for p in paths}
                    print(f"{key}: " + "  ".join(f"{p} {g:6.2f}" for p, g in out[key].items()) + " Gweights/s",
                          flush=True)
    return out


def busy_process() -> subprocess.Popen:
    """A process that keeps one core busy (a pure-Python spin loop)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller large set, fewer repetitions")
    ap.add_argument("--large-mb", type=int, default=512, help="MB of packed words in the large set (>= 512)")
    ap.add_argument("--reps", type=int, default=7, help="repetitions (best of)")
    ap.add_argument("--paths", default="", help="comma-separated paths (default: all supported)")
    ap.add_argument("--md", default="", help="also write the results as a markdown section to this file")
    ap.add_argument("--family-only", action="store_true",
                    help="only the MAQ2 / MAQ3 / MAQ4 / Q8_0 comparison at 4096x11008")
    ap.add_argument("--ab", default="", metavar="PATHS",
                    help="only a CPU-time A/B of these paths (e.g. avx2,vnni) on SmolLM2 shapes and 11008x4096")
    args = ap.parse_args(argv)
    if args.ab:
        res = ab(np.random.default_rng(0), args.ab.split(","))
        print(json.dumps({"ab": res, "load_avg": round(os.getloadavg()[0], 2), "cpu": cpu_model()}))
        return 0
    if args.quick:
        args.large_mb, args.reps = 96, 3
    paths = args.paths.split(",") if args.paths else K.supported_paths()
    narrow = "neon" if "neon" in K.supported_paths() else "sse"
    rng = np.random.default_rng(0)
    load0 = os.getloadavg()[0]
    fam_reps = 15 * args.reps

    print(f"# MAQ kernel benchmark  {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(f"# cpu: {cpu_model()}  machine: {platform.machine()}  cores: {os.cpu_count()}  "
          f"paths: {','.join(K.supported_paths())}  load average before: {load0:.2f}")
    if args.family_only:
        fam = family(rng, paths, fam_reps)
        load = (load0, os.getloadavg()[0])
        if args.md:
            with open(args.md, "w", encoding="utf-8") as f:
                f.write(markdown_family(fam, argv, load))
        print(json.dumps({"family": fam, "shape": [P, T], "group": G, "salient": SALIENT,
                          "load_avg_before_after": [round(v, 2) for v in load], "cpu": cpu_model(),
                          "date": datetime.date.today().isoformat()}))
        return 0

    # ---- read bandwidth
    bw_bytes = max(args.large_mb, 256) << 20
    read_bw = {n: read_bandwidth(bw_bytes, n, args.reps) for n in (1, 2)}
    print(f"read bandwidth ({bw_bytes >> 20} MB buffer): 1 thread {read_bw[1]:.1f} GB/s, 2 threads {read_bw[2]:.1f} GB/s")

    # ---- numpy float32 matvec, same shape
    Wf = rng.standard_normal((P, T), dtype=np.float32)
    xf = rng.standard_normal(T, dtype=np.float32)
    t_np = best_time(lambda: Wf @ xf, args.reps, inner=5)
    np_gw = T * P / t_np / 1e9
    print(f"numpy float32 matvec {P}x{T}: {t_np * 1e3:.3f} ms  {np_gw:.2f} Gweights/s  "
          f"({Wf.nbytes / t_np / 1e9:.1f} GB/s)")
    del Wf

    # ---- MAQ2 4096x11008, 2.5% salient
    t = random_maq2(rng, T, P, G, SALIENT)
    w = K.Weight.from_maq(t)
    x = rng.standard_normal(T).astype(np.float32)
    out = np.empty(P, np.float32)
    print(f"MAQ2 {P}x{T} G={G} salient {F.salient_fraction(t):.3%}: {w.nbytes / 1e6:.1f} MB, "
          f"{t.bits_per_weight:.3f} bits/weight")
    print(f"{'path':8s} {'threads':>7s} {'ms/matvec':>10s} {'Gweights/s':>11s} {'GB/s':>7s} {'x numpy':>8s}")
    res: dict = {p: {} for p in paths}
    pools = {n: K.Pool(n) for n in (1, 2)}
    for path in paths:
        with K.forced_path(path):
            for n in (1, 2):
                inner = 2 if path == "scalar" else 20
                tm = best_time(lambda: K.matmul(w, x, pools[n], out=out), args.reps, inner)
                gw = T * P / tm / 1e9
                res[path][f"ms_{n}t"] = round(tm * 1e3, 4)
                res[path][f"gweights_per_s_{n}t"] = round(gw, 2)
                res[path][f"gbs_{n}t"] = round(w.nbytes / tm / 1e9, 2)
                print(f"{path:8s} {n:7d} {tm * 1e3:10.3f} {gw:11.2f} {w.nbytes / tm / 1e9:7.1f} {gw / np_gw:8.1f}")

    # ---- contended: another process keeps one core busy; 1 and 2 threads under the same contention
    for path in [p for p in (narrow, "avx2") if p in paths]:
        proc = busy_process()
        try:
            time.sleep(0.3)
            with K.forced_path(path):
                tc = {n: best_time(lambda: K.matmul(w, x, pools[n], out=out), args.reps, 20) for n in (1, 2)}
        finally:
            proc.kill()
            proc.wait()
        for n in (1, 2):
            res[path][f"gweights_per_s_{n}t_contended"] = round(T * P / tc[n] / 1e9, 2)
        print(f"{path:8s} one core busy with another process: 1 thread {T * P / tc[1] / 1e9:.2f}, 2 threads "
              f"{T * P / tc[2] / 1e9:.2f} Gweights/s (2 threads = {tc[1] / tc[2]:.2f}x 1 thread; pool stalls so far "
              f"{pools[2].stalls})")
    del w, t

    # ---- large weight set, round-robin
    one = random_maq2(rng, T, P, G, SALIENT)
    per_words = one.words.nbytes
    n_tensors = -(-(args.large_mb << 20) // per_words)
    tensors = [one] + [random_maq2(rng, T, P, G, SALIENT) for _ in range(n_tensors - 1)]
    weights = [K.Weight.from_maq(tt) for tt in tensors]
    total_words = sum(tt.words.nbytes for tt in tensors)
    total_bytes = sum(wt.nbytes for wt in weights)
    print(f"large set: {n_tensors} tensors {P}x{T}, {total_words / 2 ** 20:.0f} MB of words, "
          f"{total_bytes / 2 ** 20:.0f} MB in all, round-robin")
    for path in paths:
        if path == "scalar":
            continue
        with K.forced_path(path):
            for n in (1, 2):
                def round_robin():
                    for wt in weights:
                        K.matmul(wt, x, pools[n], out=out)
                tm = best_time(round_robin, max(2, args.reps // 2))
                gbs = total_bytes / tm / 1e9
                res[path][f"large_gbs_{n}t"] = round(gbs, 2)
                res[path][f"large_gweights_per_s_{n}t"] = round(n_tensors * T * P / tm / 1e9, 2)
                print(f"{path:8s} {n} thread(s): {tm / n_tensors * 1e3:.3f} ms/matvec  {gbs:.1f} GB/s effective  "
                      f"({gbs / read_bw[n]:.0%} of {n}-thread read bandwidth)")
    del weights, tensors, one

    # ---- SmolLM2-135M shapes (the default real model), 1 thread: the 576-wide rows and the Q8_0 output head
    small = {}
    shapes = [("maq2", 576, 576), ("maq2", 576, 1536), ("maq2", 1536, 576), ("q8_0", 576, 49152)]
    for kind, Ts, Ps in shapes:
        if kind == "maq2":
            ws = K.Weight.from_maq(random_maq2(rng, Ts, Ps, G, SALIENT))
        else:
            ws = random_q8_0(rng, Ts, Ps)
        xs = rng.standard_normal(Ts).astype(np.float32)
        outs = np.empty(Ps, np.float32)
        key = f"{kind}_{Ps}x{Ts}"
        small[key] = {}
        for path in paths:
            if path == "scalar":
                continue
            with K.forced_path(path):
                inner = max(3, int(2e7 / (Ts * Ps)))
                tm = best_time(lambda: K.matmul(ws, xs, pools[1], out=outs), args.reps, inner)
            small[key][path] = round(Ts * Ps / tm / 1e9, 2)
        print(f"SmolLM2 shape {kind} {Ps}x{Ts}, 1 thread (incl. activation prep + Python call): " +
              ", ".join(f"{p} {v} Gweights/s" for p, v in small[key].items()))
    for p in pools.values():
        p.close()

    # ---- the type family at the big shape
    fam = family(rng, paths, fam_reps)

    load1 = os.getloadavg()[0]
    head = res.get(narrow, {})
    summary = {
        "path_128bit": narrow,
        "gweights_per_s_1t": head.get("gweights_per_s_1t"),
        "gweights_per_s_2t": head.get("gweights_per_s_2t"),
        "numpy_f32_gweights_per_s": round(np_gw, 2),
        "read_bw_gbs_1t": round(read_bw[1], 2),
        "read_bw_gbs_2t": round(read_bw[2], 2),
        "effective_gbs_2t_large": head.get("large_gbs_2t"),
        "shape": [P, T], "group": G, "salient": SALIENT, "large_set_mb_words": round(total_words / 2 ** 20),
        "paths": res,
        "smollm2_shapes_1t": small,
        "family": fam,
        "load_avg_before_after": [round(load0, 2), round(load1, 2)],
        "cpu": cpu_model(),
        "date": datetime.date.today().isoformat(),
    }
    if head:
        summary["bar"] = {
            "gw_1t>=12": head["gweights_per_s_1t"] >= 12,
            "gw_2t>=20": head["gweights_per_s_2t"] >= 20,
            ">=4x_numpy(1t)": head["gweights_per_s_1t"] >= 4 * np_gw,
            ">=4x_numpy(2t)": head["gweights_per_s_2t"] >= 4 * np_gw,
            "large_2t>=40%_read_bw": head.get("large_gbs_2t", 0) >= 0.4 * read_bw[2],
        }
    if args.md:
        with open(args.md, "w", encoding="utf-8") as f:
            f.write(markdown(summary, paths, argv))
    print(json.dumps(summary))
    return 0


def markdown(s: dict, paths: list, argv) -> str:
    """The Kernels section of docs/BENCHMARKS.md from the summary."""
    argv = sys.argv[1:] if argv is None else argv
    cmd = "python scripts/bench_kernel.py" + ("" if not argv else " " + " ".join(argv))
    lines = [
        f"Machine: {s['cpu']} ({platform.machine()}, {os.cpu_count()} cores), date {s['date']}, "
        f"load average before/after {s['load_avg_before_after'][0]} / {s['load_avg_before_after'][1]}.",
        f"Command: `{cmd}`", "",
        f"Read bandwidth (C read-sum loop): {s['read_bw_gbs_1t']} GB/s at 1 thread, {s['read_bw_gbs_2t']} GB/s at 2. "
        f"numpy float32 matvec of the same shape: {s['numpy_f32_gweights_per_s']} Gweights/s.", "",
        f"MAQ2 {s['shape'][0]}x{s['shape'][1]} (P x T), G={s['group']}, {s['salient']:.1%} salient words "
        "(L3-resident), and the large set (>= 512 MB of words, round-robin, from DRAM):", "",
        "| path | threads | ms/matvec | Gweights/s | GB/s | x numpy | large set GB/s | large Gweights/s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for p in paths:
        r = s["paths"][p]
        for n in (1, 2):
            gw = r[f"gweights_per_s_{n}t"]
            lines.append(f"| {p} | {n} | {r[f'ms_{n}t']:.3f} | {gw:.2f} | {r[f'gbs_{n}t']:.2f} | "
                         f"{gw / s['numpy_f32_gweights_per_s']:.1f} | {r.get(f'large_gbs_{n}t', '-')} | "
                         f"{r.get(f'large_gweights_per_s_{n}t', '-')} |")
    cont = [p for p in paths if "gweights_per_s_2t_contended" in s["paths"][p]]
    if cont:
        lines += ["", "While another process keeps one core busy (1 thread / 2 threads, Gweights/s): " +
                  ", ".join(f"{p} {s['paths'][p]['gweights_per_s_1t_contended']} / "
                            f"{s['paths'][p]['gweights_per_s_2t_contended']}" for p in cont) + "."]
    if s.get("smollm2_shapes_1t"):
        lines += ["", "SmolLM2-135M shapes at 1 thread (Gweights/s, including activation preparation and the Python call):",
                  "", "| tensor (P x T) | " + " | ".join(p for p in paths if p != "scalar") + " |",
                  "|---|" + "---|" * len([p for p in paths if p != "scalar"])]
        for key, v in s["smollm2_shapes_1t"].items():
            lines.append(f"| {key} | " + " | ".join(str(v.get(p, "-")) for p in paths if p != "scalar") + " |")
    if s.get("family"):
        fam_md = markdown_family(s["family"], argv, tuple(s["load_avg_before_after"]))
        lines += ["", "Type family:", ""] + fam_md.splitlines()[3:]
    if "bar" in s:
        lines += ["", "Bar (128-bit path = " + s["path_128bit"] + "): " +
                  ", ".join(f"{k}: {'pass' if v else 'FAIL'}" for k, v in s["bar"].items()) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
