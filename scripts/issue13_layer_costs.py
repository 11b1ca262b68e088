"""Per-tensor predicted cost (Fisher-weighted output error) of MAQ2 candidates with and without int8 salient
words, by round-to-nearest and after GPTQ, on SmolLM2 blocks 0/14/29 (sensitivity pass H and f).

usage: python scripts/issue13_layer_costs.py MODEL.gguf [OUT.json]   (docs/RESULTS.md, "Issue 13 levers")
"""
import json, sys, time
import numpy as np, torch
from maq.converter import allocate as A
from maq.converter.calibration import load_calibration
from maq.converter.options import ConvertOptions
from maq.converter.source import open_source
torch.set_num_threads(1)
M = sys.argv[1]
opts = ConvertOptions(model=M, out="/tmp/none.gguf", nsamples=16, seqlen=1024, threads=1, progress=False)
src = open_source(M)
samples = load_calibration(src, opts).samples
t0 = time.time()
with torch.enable_grad():
    sens = A.measure(src, samples, torch.device("cpu"), progress=False)
print("sens", time.time() - t0, flush=True)
C = A.Candidate
cands = [C("maq2", 128), C("maq2", 64), C("maq2", 32), C("maq2", 128, 0.01), C("maq2", 128, 0.02), C("maq2", 128, 0.04),
         C("maq2", 64, 0.02), C("maq3", 128)]
out = []
with torch.inference_mode():
    for b in (0, 14, 29):
        for k in ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"):
            n = f"blk.{b}.{k}.weight"
            W = src.tensor(n)
            P, T = W.shape
            rtn = A.predicted_costs(W, sens[n], cands)
            for c in cands:
                g = A.gptq_cost(W, sens[n], c)
                row = dict(tensor=n, cand=c.name, bpw=c.nbytes(P, T) * 8 / (P * T), rtn=rtn[c], gptq=g)
                out.append(row)
                print(json.dumps(row), flush=True)
json.dump(out, open(sys.argv[2] if len(sys.argv) > 2 else "layer_costs.json", "w"), indent=1)
print("done", time.time() - t0)
