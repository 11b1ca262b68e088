"""Side-by-side speed of the MAQ runtime and llama.cpp on the same machine: interleaved rounds, medians, ratios.

    python scripts/bench_speed.py smollm2 [--dir DIR] [--maq4 FILE] [--maq3 FILE] [--rounds 3] [--threads 1,2]
    python scripts/bench_speed.py shape --shape 7b|tinyllama [--dir DIR] [--gen 32] [--prompts 128]
    python scripts/bench_speed.py files --ours maq4=FILE ... --theirs q4_0=FILE ... [--same q8_0=FILE ...]

What runs. "ours": a GGUF in our runtime (maq.runtime.model.CModel, in this process, one model per thread count,
kept across rounds); "theirs": the same kind of run by llama.cpp's `llama-bench` (one call per file and round,
`-r 1`, every thread count). Per round the files go ours, theirs, ours, theirs, ... and each figure is the median
over the rounds (>= 3). Tests: decode tg{--gen} (greedy: one C call + argmax per token from position 0, as
`llama-bench -n` decodes from an empty context), prompt pp{N} for every N of --prompts (one forward of N tokens in
one batch, as llama-bench's default n_ubatch 512 does). Ratios ours/theirs are computed per round (the two runs
are seconds apart, so load drift cancels) and the median is reported. Every figure carries the 1-minute load
average at the time it was taken.

Files. `smollm2`: MAQ `--target-bpw 4.0` / `3.0` (--maq4 / --maq3, else converted with `maq convert` and the
calibration flags of --convert-args), llama.cpp Q4_0, Q4_K_M and Q8_0 made by the stock `llama-quantize` from an
F32 GGUF holding the exactly dequantized Q4_1 reference; the Q8_0 file also runs in ours ("same file").
`shape`: a Llama-2-7B-shaped (or TinyLlama-1.1B-shaped) model with random F16 weights from a fixed seed, written
tensor by tensor (streaming), MAQ2/3/4 by `maq convert --method rtn` and llama.cpp Q4_0 / Q2_K / Q3_K_S from the
same F16 file. llama.cpp is found in $MAQ_CACHE/llama.cpp/bin or built by scripts/build_llamacpp.sh.

Output: a table per test, the ratios, and as the last line one JSON object: `{test}_ratio_{ours}_vs_{theirs}_{t}t`
for every pair (test = decode, prompt128, prompt512, ...), e.g. decode_ratio_maq4_vs_q4_0_1t,
prompt512_ratio_maq4_vs_q4_0_2t, decode_ratio_maq3_vs_q4_0_1t; `load_avg_start`, `load_avg_end`, `load_avg_min`,
`load_avg_max`; `tps` (every median, tokens/s) and `files`.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

log = logging.getLogger("bench_speed")
ROOT = Path(__file__).resolve().parent.parent


# ------------------------------------------------------------------ files
def llamacpp_bin() -> Path:
    """The directory of llama.cpp's tools (llama-bench, llama-quantize), built by scripts/build_llamacpp.sh."""
    from maq.runtime.models import cache_dir

    d = cache_dir() / "llama.cpp" / "bin"
    if not (d / "llama-bench").is_file() or not (d / "llama-quantize").is_file():
        out = subprocess.run(["bash", str(ROOT / "scripts" / "build_llamacpp.sh")], check=True,
                             capture_output=True, text=True).stdout.strip().splitlines()
        d = Path(out[-1])
    return d


def _env(bindir: Path) -> dict:
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = str(bindir) + os.pathsep + env.get("LD_LIBRARY_PATH", "")
    return env


def write_dequantized(src: Path, out: Path) -> Path:
    """Copy a GGUF with every quantized tensor dequantized to F32 (metadata unchanged): llama-quantize's source."""
    import gguf
    from gguf import GGUFValueType as VT

    if out.is_file():
        return out
    rd = gguf.GGUFReader(str(src))
    w = gguf.GGUFWriter(str(out) + ".part", arch=None)   # arch comes with the copied metadata
    for f in rd.fields.values():
        if f.name.startswith("GGUF.") or f.name == "general.file_type":
            continue
        vt = f.types[0]
        w.add_key_value(f.name, f.contents(), vt, sub_type=f.types[-1] if vt == VT.ARRAY else None)
    for t in rd.tensors:
        a = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        w.add_tensor(t.name, a.reshape([int(n) for n in reversed(t.shape)]))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(str(out) + ".part", out)
    return out


def llama_quantize(bindir: Path, src: Path, out: Path, qtype: str, threads: int = 1) -> Path:
    """`llama-quantize --allow-requantize SRC OUT QTYPE` unless OUT exists."""
    if not out.is_file():
        # absolute paths: llama-quantize reads a positional that starts with a digit ("7b.F16.gguf") as a type id
        cmd = [str(bindir / "llama-quantize"), "--allow-requantize", str(Path(src).resolve()),
               str(Path(out).resolve()) + ".part", qtype, str(threads)]
        subprocess.run(cmd, check=True, capture_output=True, env=_env(bindir))
        os.replace(str(out) + ".part", out)
    return out


def maq_convert(src: Path, out: Path, args: list[str]) -> Path:
    """`maq convert SRC --out OUT ARGS` unless OUT exists."""
    if not out.is_file():
        cmd = [sys.executable, "-m", "maq", "convert", str(src), "--out", str(out), "--no-progress", *args]
        log.info("converting: %s", " ".join(cmd))
        subprocess.run(cmd, check=True)
    return out


SHAPES = {   # Llama-2-7B and TinyLlama-1.1B (vocab 32000, rope 10000, eps 1e-5)
    "7b": dict(dim=4096, ffn=11008, layers=32, heads=32, kv_heads=32, vocab=32000),
    "tinyllama": dict(dim=2048, ffn=5632, layers=22, heads=32, kv_heads=4, vocab=32000),
}


def write_random_f16(shape: str, out: Path, seed: int = 0) -> Path:
    """A llama GGUF of SHAPES[shape] with F16 weights ~ N(0, 0.02) (norms 1) from `seed`, written one tensor at a
    time (peak memory: the largest tensor, ~0.5 GB at 7B), with a placeholder vocabulary of `vocab` tokens."""
    import gguf

    if out.is_file():
        return out
    s = SHAPES[shape]
    D, H, L, V = s["dim"], s["ffn"], s["layers"], s["vocab"]
    KV = D // s["heads"] * s["kv_heads"]
    w = gguf.GGUFWriter(str(out) + ".part", "llama")
    w.add_name(f"random-{shape}")
    w.add_context_length(4096)
    w.add_embedding_length(D)
    w.add_feed_forward_length(H)
    w.add_block_count(L)
    w.add_head_count(s["heads"])
    w.add_head_count_kv(s["kv_heads"])
    w.add_rope_dimension_count(D // s["heads"])
    w.add_rope_freq_base(10000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(V)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    w.add_tokenizer_model("llama")
    w.add_token_list([f"<t{i}>".encode() for i in range(V)])
    w.add_token_scores([0.0] * V)
    w.add_token_types([gguf.TokenType.NORMAL] * V)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    shapes = [("token_embd.weight", (V, D))]
    for i in range(L):
        b = f"blk.{i}."
        shapes += [(b + "attn_norm.weight", (D,)), (b + "attn_q.weight", (D, D)), (b + "attn_k.weight", (KV, D)),
                   (b + "attn_v.weight", (KV, D)), (b + "attn_output.weight", (D, D)),
                   (b + "ffn_norm.weight", (D,)), (b + "ffn_gate.weight", (H, D)), (b + "ffn_up.weight", (H, D)),
                   (b + "ffn_down.weight", (D, H))]
    shapes += [("output_norm.weight", (D,)), ("output.weight", (V, D))]
    for name, shp in shapes:
        w.add_tensor_info(name, shp, np.dtype(np.float32 if len(shp) == 1 else np.float16),
                          int(np.prod(shp)) * (4 if len(shp) == 1 else 2))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(seed)
    for name, shp in shapes:
        if len(shp) == 1:
            a = np.ones(shp, np.float32)
        else:
            a = np.empty(shp, np.float16)
            for r0 in range(0, shp[0], 1024):   # 1024 rows at a time: float32 temporaries stay small
                a[r0:r0 + 1024] = (rng.standard_normal((min(1024, shp[0] - r0), shp[1]), np.float32) * 0.02)
        w.write_tensor_data(a)
        del a
    w.close()
    os.replace(str(out) + ".part", out)
    return out


# ------------------------------------------------------------------ runs
def load1() -> float:
    return round(os.getloadavg()[0], 2)


@dataclass
class Entry:
    """One file in one engine: label, path, engine ('ours' | 'theirs'), per (test, threads) lists of (tok/s, load)."""
    label: str
    path: Path
    engine: str
    runs: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)   # ours: threads -> CModel (kept across rounds)
    lm: object = None
    kpath: str | None = None                      # ours: kernel path forced for this entry (None: the default)

    def add(self, test: str, threads: int, tps: float, load: float) -> None:
        self.runs.setdefault((test, threads), []).append((tps, load))

    def median(self, test: str, threads: int) -> float | None:
        r = self.runs.get((test, threads))
        return statistics.median(x for x, _ in r) if r else None


def ours_round(e: Entry, threads: list[int], n_gen: int, prompts: list[int]) -> None:
    """One round of every test of our runtime on e (decode from position 0, then one forward per prompt length),
    with e.kpath's kernel path forced if set."""
    from maq.runtime import kernels

    if e.kpath:
        with kernels.forced_path(e.kpath):
            return _ours_round(e, threads, n_gen, prompts)
    return _ours_round(e, threads, n_gen, prompts)


def _ours_round(e: Entry, threads: list[int], n_gen: int, prompts: list[int]) -> None:
    from maq.runtime import gguf_loader as gl
    from maq.runtime import model as M

    if e.lm is None:
        e.lm = gl.load(e.path)
    n_ctx = max(prompts + [n_gen]) + 16
    rng = np.random.default_rng(0)
    V = e.lm.config.vocab_size
    for t in threads:
        if t not in e.models:
            e.models[t] = M.CModel(e.lm, n_ctx=n_ctx, n_threads=t, max_batch=max(prompts))
            e.models[t].forward(rng.integers(3, V, 8).astype(np.int32), 0)   # warm-up: page in, start the pool
        m = e.models[t]
        tok = 1
        t0 = time.perf_counter()
        for i in range(n_gen):
            tok = int(np.argmax(m.step(tok, i)))
        e.add(f"tg{n_gen}", t, n_gen / (time.perf_counter() - t0), load1())
        for n in prompts:
            toks = rng.integers(3, V, n).astype(np.int32)
            t0 = time.perf_counter()
            m.forward(toks, 0)
            e.add(f"pp{n}", t, n / (time.perf_counter() - t0), load1())


def _llama_bench(bindir: Path, path: Path, extra: list[str]) -> subprocess.CompletedProcess:
    cmd = [str(bindir / "llama-bench"), "-m", str(path), "-r", "1", "-o", "json", *extra]
    return subprocess.run(cmd, capture_output=True, text=True, env=_env(bindir))


def theirs_round(e: Entry, bindir: Path, threads: list[int], n_gen: int, prompts: list[int]) -> None:
    """One round of llama-bench on e (`-r 1`, every thread count): decode, then the prompt lengths. llama.cpp's
    defaults throughout, except that a prompt run that crashes (here: its AMX int8 matmul, SIGSEGV in
    ggml_backend_amx_mul_mat on this VM) is run again with `--repack 0` (no AMX / repacked weights), noted in
    e.runs['notes']."""
    t = ["-t", ",".join(map(str, threads))]
    calls = [["-p", "0", "-n", str(n_gen), *t]]
    if prompts:
        calls.append(["-p", ",".join(map(str, prompts)), "-n", "0", *t] + e.runs.get("pp_extra", []))
    for extra in calls:
        proc = _llama_bench(bindir, e.path, extra)
        if proc.returncode < 0 and "-n" in extra and extra[extra.index("-n") + 1] == "0" \
                and "--repack" not in extra:
            e.runs["pp_extra"] = ["--repack", "0"]
            e.runs.setdefault("notes", []).append(f"llama-bench prompt run died (signal {-proc.returncode}) "
                                                  "with the default repacking; rerun with --repack 0")
            log.warning("%s: %s", e.path.name, e.runs["notes"][-1])
            proc = _llama_bench(bindir, e.path, extra + ["--repack", "0"])
        if proc.returncode != 0:
            raise RuntimeError(f"llama-bench failed ({proc.returncode}) on {e.path}: {proc.stderr.strip()[-400:]}")
        load = load1()
        for row in json.loads(proc.stdout):
            test = f"pp{row['n_prompt']}" if row["n_prompt"] else f"tg{row['n_gen']}"
            e.add(test, row["n_threads"], row["avg_ts"], load)


def test_key(test: str) -> str:
    """'tg128' -> 'decode', 'pp512' -> 'prompt512' (the JSON key stems)."""
    return "decode" if test.startswith("tg") else "prompt" + test[2:]


def run(entries: list[Entry], rounds: int, threads: list[int], n_gen: int, prompts: list[int],
        json_out: Path | None = None) -> dict:
    """Interleaved rounds over entries (in the given order); prints the tables; returns the JSON summary."""
    bindir = llamacpp_bin() if any(e.engine == "theirs" for e in entries) else None
    from maq.runtime import kernels

    load0 = load1()
    loads = [load0]
    print(f"# kernels path {kernels.active_path()} (supported {kernels.supported_paths()}), {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()}, {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    for e in entries:
        print(f"# {e.engine:6s} {e.label:8s} {e.path} ({e.path.stat().st_size / 1e6:.1f} MB)")
    tests = [f"tg{n_gen}"] + [f"pp{n}" for n in prompts]
    for r in range(rounds):
        for e in entries:
            if e.engine == "ours":
                ours_round(e, threads, n_gen, prompts)
            else:
                theirs_round(e, bindir, threads, n_gen, prompts)
            loads.append(load1())
        print(f"# round {r + 1}/{rounds} done, load {loads[-1]}", flush=True)
        if json_out:   # partial results survive an interrupted run
            json_out.write_text(json.dumps(summarize(entries, tests, threads, loads, r + 1)) + "\n")
    # tables
    for test in tests:
        print(f"\n## {test}: tokens/s, median of {rounds} rounds [each round's figure @ 1-min load average]")
        print("| file | engine | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads) + " |")
        print("|---|---|" + "---|" * len(threads))
        for e in entries:
            cells = []
            for t in threads:
                rr = e.runs.get((test, t), [])
                cells.append(f"**{e.median(test, t):.1f}** [" + ", ".join(f"{x:.0f}@{ld}" for x, ld in rr) + "]"
                             if rr else "-")
            print(f"| {e.label} | {e.engine} | " + " | ".join(cells) + " |")
    summary = summarize(entries, tests, threads, loads, rounds)
    print("\n## ratios ours / theirs (median over rounds of the per-round ratio)")
    for k, v in summary.items():
        if "_ratio_" in k:
            print(f"{k} = {v:.3f}")
    return summary


def summarize(entries: list[Entry], tests: list[str], threads: list[int], loads: list[float], rounds: int) -> dict:
    """The JSON summary: every ours/theirs ratio (median of per-round ratios), every median, loads, files."""
    from maq.runtime import kernels

    summary: dict = {}
    ours = [e for e in entries if e.engine == "ours"]
    theirs = [e for e in entries if e.engine == "theirs"]
    for test in tests:
        for a in ours:
            for b in theirs + [e for e in ours if e.kpath and not a.kpath and e.path == a.path]:
                for t in threads:
                    ra, rb = a.runs.get((test, t), []), b.runs.get((test, t), [])
                    if ra and rb:
                        ratio = statistics.median(x / y for (x, _), (y, _) in zip(ra, rb))
                        summary[f"{test_key(test)}_ratio_{a.label}_vs_{b.label}_{t}t"] = round(ratio, 3)
    summary["tps"] = {f"{e.engine}_{e.label}_{test}_{t}t": round(e.median(test, t), 1)
                      for e in entries for test in tests for t in threads if e.median(test, t)}
    summary.update(load_avg_start=loads[0], load_avg_end=loads[-1], load_avg_min=min(loads), load_avg_max=max(loads),
                   rounds=rounds, threads=threads, kernels_path=kernels.active_path(),
                   files={f"{e.engine}_{e.label}": str(e.path) for e in entries},
                   notes={f"{e.engine}_{e.label}": e.runs["notes"] for e in entries if "notes" in e.runs})
    return summary


def interleave(ours: list[Entry], theirs: list[Entry]) -> list[Entry]:
    """ours[0], theirs[0], ours[1], theirs[1], ... (the longer list's tail last)."""
    out = []
    for i in range(max(len(ours), len(theirs))):
        out += ours[i:i + 1] + theirs[i:i + 1]
    return out


def _pairs(specs: list[str], engine: str) -> list[Entry]:
    out = []
    for s in specs:
        label, _, path = s.partition("=")
        if not path or not Path(path).is_file():
            raise SystemExit(f"{s}: expected LABEL=FILE with an existing file")
        out.append(Entry(label, Path(path), engine))
    return out


# ------------------------------------------------------------------ presets
def smollm2_entries(args) -> list[Entry]:
    from maq.runtime.models import smollm2_path

    d = args.dir
    d.mkdir(parents=True, exist_ok=True)
    ref = smollm2_path()
    conv = args.convert_args.split()
    maq4 = args.maq4 or maq_convert(ref, d / "smol.maq4.0.gguf", ["--target-bpw", "4.0", *conv])
    maq3 = args.maq3 or maq_convert(ref, d / "smol.maq3.0.gguf", ["--target-bpw", "3.0", *conv])
    bindir = llamacpp_bin()
    f32 = write_dequantized(ref, d / "smol.F32.gguf")
    q = {k: llama_quantize(bindir, f32, d / f"smol.{k}.gguf", k) for k in ("Q4_0", "Q4_K_M", "Q8_0")}
    ours = [Entry("maq4", Path(maq4), "ours"), Entry("maq3", Path(maq3), "ours"), Entry("q8_0", q["Q8_0"], "ours")]
    theirs = [Entry("q4_0", q["Q4_0"], "theirs"), Entry("q4_k_m", q["Q4_K_M"], "theirs"),
              Entry("q8_0", q["Q8_0"], "theirs")]
    return interleave(ours, theirs)


def shape_entries(args) -> list[Entry]:
    d = args.dir
    d.mkdir(parents=True, exist_ok=True)
    f16 = write_random_f16(args.shape, d / f"{args.shape}.F16.gguf", seed=args.seed)
    bindir = llamacpp_bin()
    ours = [Entry(f"maq{b}", maq_convert(f16, d / f"{args.shape}.maq{b}.gguf",
                                         ["--method", "rtn", "--bits", str(b), "--threads", "1"]), "ours")
            for b in args.bits]
    theirs = [Entry(k.lower(), llama_quantize(bindir, f16, d / f"{args.shape}.{k}.gguf", k), "theirs")
              for k in ("Q4_0", "Q2_K", "Q3_K_S")]
    return interleave(ours, theirs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("preset", choices=("smollm2", "shape", "files"))
    ap.add_argument("--dir", type=Path, default=None, help="where made files live (default: $MAQ_CACHE/bench)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--gen", type=int, default=128, help="decode test tg N (default 128)")
    ap.add_argument("--prompts", default="128,512", help="prompt tests pp N (default 128,512)")
    ap.add_argument("--maq4", type=Path, default=None, help="smollm2: MAQ --target-bpw 4.0 file (else converted)")
    ap.add_argument("--maq3", type=Path, default=None, help="smollm2: MAQ --target-bpw 3.0 file (else converted)")
    ap.add_argument("--convert-args", default="--nsamples 16 --seqlen 1024 --threads 1",
                    help="smollm2: calibration flags for maq convert")
    ap.add_argument("--shape", choices=sorted(SHAPES), default="tinyllama")
    ap.add_argument("--bits", default="2,3,4", help="shape: MAQ widths to convert (rtn)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ours", nargs="*", default=[], help="files: LABEL=FILE run in our runtime")
    ap.add_argument("--theirs", nargs="*", default=[], help="files: LABEL=FILE run by llama-bench")
    ap.add_argument("--same", nargs="*", default=[], help="files: LABEL=FILE run by both")
    ap.add_argument("--baseline-path", default=None,
                    help="also run the first 'ours' file with this kernel path forced (label FILE@PATH), e.g. avx2 "
                         "= the kernels before the vnni path, in the same interleaved run")
    ap.add_argument("--json-out", type=Path, default=None, help="also write the JSON summary here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from maq.runtime.models import cache_dir

    args.dir = args.dir or cache_dir() / "bench"
    args.bits = [int(b) for b in args.bits.split(",")]
    threads = [int(t) for t in args.threads.split(",")]
    prompts = [int(p) for p in args.prompts.split(",") if p]
    if args.preset == "smollm2":
        entries = smollm2_entries(args)
    elif args.preset == "shape":
        entries = shape_entries(args)
    else:
        same_o, same_t = _pairs(args.same, "ours"), _pairs(args.same, "theirs")
        entries = interleave(_pairs(args.ours, "ours") + same_o, _pairs(args.theirs, "theirs") + same_t)
    if args.baseline_path:
        first = next(e for e in entries if e.engine == "ours")
        entries.insert(entries.index(first) + 1, Entry(f"{first.label}@{args.baseline_path}", first.path, "ours",
                                                       kpath=args.baseline_path))
    if args.rounds < 1:
        raise SystemExit("--rounds must be >= 1")
    summary = run(entries, args.rounds, threads, args.gen, prompts, args.json_out)
    if args.json_out:
        args.json_out.write_text(json.dumps(summary) + "\n")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
