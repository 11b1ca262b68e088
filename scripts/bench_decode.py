"""Decode and prefill speed of the MAQ runtime on SmolLM2-135M: a MAQ2 file and the Q4_1 reference, 1 and 2 threads.

    python scripts/bench_decode.py [--maq FILE] [--ref FILE] [--threads 1,2] [--gen 128] [--prompt 128]

--maq defaults to a MAQ2 file made by `maq convert smollm2 --method rtn` if the converter can, else by a built-in
round-to-nearest re-quantization of the Q4_1 reference (format.quantize_rtn, 2.5% salient words by magnitude);
speed does not depend on how the codes were chosen. Decode: greedy generation of --gen tokens after a short
prompt (one C call + argmax per token, as `maq generate` runs). Prefill: one --prompt token prompt in batches of
128. Where time goes comes from the C side's counters (matrix products, attention, the rest) and the wall clock
(Python). The last line is one JSON object.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from maq.runtime import format as fmt
from maq.runtime import gguf_loader as gl
from maq.runtime import model as M
from maq.runtime.models import cache_dir, smollm2_path

LINEARS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def make_rtn_maq(src: Path, out: Path, salient_frac: float = 0.025, G: int = 128) -> Path:
    """Re-quantize every linear of a llama GGUF to MAQ2 by RTN (salient: the words of largest |w| sum)."""
    import gguf
    from gguf import GGUFValueType as VT
    from gguf.constants import GGMLQuantizationType as Q

    lm = gl.load(src)
    gf = lm.gguf
    w = gguf.GGUFWriter(str(out) + ".part", "llama")
    for k, v in gf.metadata.items():
        if k in ("general.architecture", fmt.KEY_VERSION) or k.startswith("GGUF."):
            continue
        if isinstance(v, bool):
            w.add_bool(k, v)
        elif isinstance(v, int):
            w.add_uint32(k, v)
        elif isinstance(v, float):
            w.add_float32(k, v)
        elif isinstance(v, str):
            w.add_string(k, v)
        elif isinstance(v, list):
            w.add_array(k, v)
        else:
            sub = {np.dtype("int32"): VT.INT32, np.dtype("float32"): VT.FLOAT32}[v.dtype]
            w.add_key_value(k, v.tolist(), VT.ARRAY, sub_type=sub)
    w.add_uint32(fmt.KEY_VERSION, fmt.FORMAT_VERSION)
    weights = {x.name: x for x in lm.weights()}
    for name, t in gf.tensors.items():
        kind = name.split(".")[-2] if name.startswith("blk.") else ""
        if kind in LINEARS:
            W = weights[name].dequantize()
            P, T = W.shape
            mag = np.abs(W).reshape(P, T // 16, 16).sum(axis=2)
            sal = mag >= np.quantile(mag, 1 - salient_frac)
            mt = fmt.quantize_rtn(W, salient=sal, G=G)
            w.add_string(fmt.key_tensor_type(name), fmt.TYPE_MAQ2)
            w.add_uint32(fmt.key_group_size(name), G)
            w.add_string(fmt.key_salient_coding(name), fmt.SALIENT_MEAN4)
            w.add_tensor(name, mt.words)
            w.add_tensor(name + fmt.PART_BITMAP, mt.bitmap.view(np.int8))
            w.add_tensor(name + fmt.PART_SCALES, mt.scales.view(np.int8))
            w.add_tensor(name + fmt.PART_ROWSCALE, mt.rowscale)
        else:
            qt = Q(t.ggml_type)
            raw = np.array(t.data)
            if qt == Q.F32:
                w.add_tensor(name, raw.view(np.float32).reshape(t.shape))
            else:
                w.add_tensor(name, raw.reshape(t.shape[0], -1) if len(t.shape) > 1 else raw, raw_dtype=qt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(str(out) + ".part", out)
    return out


def default_maq(ref: Path) -> Path:
    out = cache_dir() / "SmolLM2-135M-Instruct.rtn.maq2.gguf"
    if out.is_file():
        return out
    cmd = [sys.executable, "-m", "maq", "convert", str(ref), "--out", str(out), "--method", "rtn", "--no-progress"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode == 0 and out.is_file():
        return out
    print("converter --method rtn unavailable; re-quantizing with format.quantize_rtn", file=sys.stderr)
    return make_rtn_maq(ref, out)


def rss_mb() -> dict:
    """{'VmRSS', 'RssAnon', 'RssFile'} in MB: anonymous memory (copies) vs pages of mapped files (zero-copy)."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(line.split()[1]) / 1024
    return out


def weight_bytes(lm: gl.LoadedModel) -> int:
    """Bytes of weights read per decoded token (every linear, the output head, one embedding row)."""
    n = sum(w.nbytes for w in lm.weights() if w is not lm.tok_embd)
    if lm.config.tied_output:
        n += lm.tok_embd.nbytes
    return n


def bench(lm: gl.LoadedModel, threads: int, n_gen: int, n_prompt: int, reps: int = 2) -> dict:
    cm = M.CModel(lm, n_ctx=max(512, n_prompt + n_gen + 16), n_threads=threads, max_batch=128)
    rng = np.random.default_rng(0)
    prompt = rng.integers(100, 40000, n_prompt).astype(np.int32)
    cm.forward(prompt[:8], 0)  # warm-up (page in the weights, start the pool)
    best_pp = None
    for _ in range(reps):
        cm.reset_stats()
        t0 = time.perf_counter()
        cm.forward(prompt, 0)
        dt = time.perf_counter() - t0
        if best_pp is None or dt < best_pp[0]:
            best_pp = (dt, cm.stats())
    best_tg = None
    for _ in range(reps):
        cm.forward(prompt[:16], 0)
        tok = int(np.argmax(cm.forward(prompt[16], 16)))
        cm.reset_stats()
        t0 = time.perf_counter()
        for i in range(n_gen):
            tok = int(np.argmax(cm.step(tok, 17 + i)))
        dt = time.perf_counter() - t0
        if best_tg is None or dt < best_tg[0]:
            best_tg = (dt, cm.stats())
    dt, st = best_tg
    wb = weight_bytes(lm)
    return {
        "threads": threads, "prefill_tps": n_prompt / best_pp[0], "decode_tps": n_gen / dt,
        "decode_ms": 1e3 * dt / n_gen,
        "decode_split_ms": {"matmul": 1e3 * st["matmul_s"] / n_gen, "head": 1e3 * st["head_s"] / n_gen,
                            "attention": 1e3 * st["attention_s"] / n_gen,
                            "other_c": 1e3 * st["other_s"] / n_gen,
                            "python": 1e3 * (dt - st["total_s"]) / n_gen},
        "prefill_split_s": {"matmul": best_pp[1]["matmul_s"], "attention": best_pp[1]["attention_s"],
                            "other_c": best_pp[1]["other_s"], "python": best_pp[0] - best_pp[1]["total_s"]},
        "weight_mb_per_token": wb / 1e6, "effective_gbps": wb / (dt / n_gen) / 1e9,
    }


def llama_bench(exe: Path, path: Path, threads: list[int], n_gen: int, n_prompt: int) -> dict:
    """llama.cpp's llama-bench on a standard GGUF: {(threads, 'pp'|'tg'): tokens/s} ({} if it cannot run)."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(exe.parent) + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    cmd = [str(exe), "-m", str(path), "-p", str(n_prompt), "-n", str(n_gen), "-t", ",".join(map(str, threads)),
           "-r", "3", "-o", "json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return {}
    out = {}
    for row in json.loads(proc.stdout):
        out[(row["n_threads"], "pp" if row["n_prompt"] else "tg")] = row["avg_ts"]
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--maq", type=Path, default=None, help="MAQ2 GGUF (default: an RTN MAQ2 SmolLM2 in the cache)")
    ap.add_argument("--ref", type=Path, default=None, help="reference GGUF (default: SmolLM2 Q4_1)")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--skip-ref", action="store_true")
    ap.add_argument("--also", type=Path, nargs="*", default=[],
                    help="more GGUF files to run in our runtime (e.g. a Q8_0 or Q4_0 one from llama-quantize)")
    ap.add_argument("--llama-bench", type=Path, default=cache_dir() / "llama.cpp" / "bin" / "llama-bench",
                    help="llama.cpp's llama-bench (scripts/build_llamacpp.sh), run on every non-MAQ file if present")
    args = ap.parse_args(argv)
    from maq.runtime import kernels

    ref = args.ref or smollm2_path()
    maq = args.maq or default_maq(ref)
    threads = [int(t) for t in args.threads.split(",")]
    load = os.getloadavg()
    print(f"# kernels path {kernels.active_path()}, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"{os.cpu_count()} CPUs")
    results = {}
    files = [("maq", maq), ("ref", ref)] + [(p.name, p) for p in args.also]
    for label, path in files:
        if label == "ref" and args.skip_ref:
            continue
        r0 = rss_mb()
        t0 = time.perf_counter()
        lm = gl.load(path)
        load_s = time.perf_counter() - t0
        r1 = rss_mb()
        kinds = lm.summary()["kinds"]
        print(f"\n## {label}: {path}\n# load {load_s:.2f} s, RSS +{r1['VmRSS'] - r0['VmRSS']:.0f} MB (anonymous "
              f"+{r1['RssAnon'] - r0['RssAnon']:.0f} MB, mapped file +{r1['RssFile'] - r0['RssFile']:.0f} MB), "
              f"weights {kinds}, {weight_bytes(lm) / 1e6:.1f} MB read per token")
        results[label] = []
        for t in threads:
            r = bench(lm, t, args.gen, args.prompt)
            results[label].append(r)
            s = r["decode_split_ms"]
            print(f"threads {t}: decode {r['decode_tps']:7.1f} tok/s ({r['decode_ms']:.2f} ms/token: matmul "
                  f"{s['matmul']:.2f} (head {s['head']:.2f}), attention {s['attention']:.3f}, other C {s['other_c']:.3f}, Python "
                  f"{s['python']:.3f}; {r['effective_gbps']:.1f} GB/s of weights) | prefill {r['prefill_tps']:7.1f} "
                  f"tok/s ({args.prompt} tokens)")
        del lm
        if label != "maq" and args.llama_bench.is_file():
            lb = llama_bench(args.llama_bench, path, threads, args.gen, args.prompt)
            for t in threads:
                if (t, "tg") in lb:
                    print(f"threads {t}: llama.cpp llama-bench on the same file: tg{args.gen} {lb[(t, 'tg')]:7.1f} "
                          f"tok/s | pp{args.prompt} {lb[(t, 'pp')]:7.1f} tok/s")
            if lb:
                results[label + "_llamacpp"] = [{"threads": t, "decode_tps": lb.get((t, "tg")),
                                                 "prefill_tps": lb.get((t, "pp"))} for t in threads]
    by = {(k, r["threads"]): r for k, rs in results.items() for r in rs}
    get = lambda k, t, f: round(by[(k, t)][f], 1) if (k, t) in by and by[(k, t)][f] else None  # noqa: E731
    summary = {"decode_tps_1t": get("maq", 1, "decode_tps"), "decode_tps_2t": get("maq", 2, "decode_tps"),
               "prefill_tps_1t": get("maq", 1, "prefill_tps"), "prefill_tps_2t": get("maq", 2, "prefill_tps"),
               "ref_decode_tps_1t": get("ref", 1, "decode_tps"), "ref_decode_tps_2t": get("ref", 2, "decode_tps"),
               "ref_prefill_tps_2t": get("ref", 2, "prefill_tps"),
               "llamacpp_ref_decode_tps_1t": get("ref_llamacpp", 1, "decode_tps"),
               "llamacpp_ref_decode_tps_2t": get("ref_llamacpp", 2, "decode_tps"),
               "load_avg": round(load[0], 2),
               "maq_file": str(maq), "ref_file": str(ref)}
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
