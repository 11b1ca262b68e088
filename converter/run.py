"""``maq convert`` end to end: open the source, plan every tensor's storage, calibrate + quantize, write the GGUF.

Storage per tensor:
- linear weights of the blocks: MAQ2 (methods maq / gptq / rtn; MAQ3 / MAQ4 with ``--bits``) or plain F32 / F16
  (methods f32 / f16); with ``--target-bpw`` each one's type and group size is chosen by ``allocate.py``
  (MAQ2/3/4 with G = 128/64/32, or Q8_0) after calibration;
- token_embd / output: ``--embed-type`` (auto: F32 for f32, F16 for f16, else Q8_0; Q8_0 needs a width that is a
  multiple of 32, MAQ4 one of 16, else F16; MAQ4: group EMBED_MAQ_GROUP, written after the blocks, GPTQ against
  the head's input Hessian from the calibration activations, rounded to nearest without calibration);
- norms and rope_freqs: F32.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from maq import __version__
from maq.converter import gguf_export as gx
from maq.converter.options import DEFAULT_SALIENT_FRAC, EMBED_MAQ_GROUP, ConvertOptions
from maq.converter.source import LINEAR_KINDS, Source, open_source
from maq.errors import MAQError
from maq.runtime import format as fmt

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TensorPlan:
    """How one source tensor is stored. shape is logical: [P, T] for a weight, [n] for a vector."""

    name: str
    shape: tuple[int, ...]
    storage: str  # "f32" | "f16" | "q8_0" | "maq2" | "maq3" | "maq4"
    group: int = fmt.DEFAULT_GROUP   # MAQ scale group G
    n_salient8: int = 0              # MAQ2 with the int8 salient coding: salient words of the tensor (else 0)
    rotated: bool = False            # --incoherence: stored rotated along its inputs (FORMAT.md section 10)

    @property
    def kind(self) -> str:
        parts = self.name.split(".")
        return parts[2] if parts[0] == "blk" else parts[0]

    @property
    def is_maq(self) -> bool:
        return self.storage in fmt.BITS_OF_TYPE

    @property
    def bits(self) -> int:
        return fmt.BITS_OF_TYPE[self.storage]

    @property
    def is_linear(self) -> bool:
        """A linear weight of the blocks (what --target-bpw budgets; not the embedding / output head)."""
        return self.name.startswith("blk.") and (self.is_maq or self.kind in LINEAR_KINDS)

    @property
    def choice(self) -> str:
        """"maq3/g64", "q8_0", ...: the storage of a linear tensor as the summary and metadata name it."""
        if not self.is_maq:
            return self.storage + ("+had" if self.rotated else "")
        return (f"{self.storage}/g{self.group}" + (f"+int8:{self.n_salient8}" if self.n_salient8 else "")
                + ("+had" if self.rotated else ""))

    @property
    def nbytes(self) -> int:
        if self.is_maq:
            P, T = self.shape
            return fmt.Layout(T, P, self.group, self.bits, self.n_salient8).nbytes
        return gx.float_decl(self.name, self.shape, self.storage).nbytes


@dataclasses.dataclass
class ConvertResult:
    """What was written, for the summary and for tests."""

    out: Path
    file_bytes: int
    bf16_bytes: int
    linear_bpw: float
    seconds: float
    rows: list[dict]                      # per tensor kind summary rows
    tensors: dict[str, fmt.MAQTensor]     # only filled when keep_tensors=True (tests)
    tensor_rows: list[dict] = dataclasses.field(default_factory=list)   # per tensor (name, choice, err, ...)


def embed_storage(opts: ConvertOptions, width: int) -> str:
    kind = opts.embed_type
    if kind == "auto":
        kind = {"f32": "f32", "f16": "f16"}.get(opts.method, "q8_0")
    if kind == "q8_0" and width % 32:
        log.warning("embedding width %d is not a multiple of 32: storing token_embd/output as F16", width)
        kind = "f16"
    if kind in fmt.BITS_OF_TYPE and width % fmt.WORD_WEIGHTS:
        log.warning("embedding width %d is not a multiple of %d: storing token_embd/output as F16", width,
                    fmt.WORD_WEIGHTS)
        kind = "f16"
    return kind


def make_plan(src: Source, opts: ConvertOptions) -> list[TensorPlan]:
    """Storage of every tensor of the source, in write order. Raises MAQError for shapes MAQ2 cannot hold."""
    plan = []
    for name in src.names():
        shape = src.shape(name)
        tp = TensorPlan(name, shape, "f32")
        if name in ("token_embd.weight", "output.weight"):
            tp.storage = embed_storage(opts, shape[-1])
            tp.group = EMBED_MAQ_GROUP
        elif len(shape) == 2 and name.startswith("blk."):
            if opts.is_float:
                tp.storage = opts.method
            else:
                P, T = shape
                if T % fmt.WORD_WEIGHTS:
                    raise MAQError(f"{src.path}: tensor {name} has {T} inputs, not a multiple of "
                                   f"{fmt.WORD_WEIGHTS} (MAQ words hold 16 inputs)")
                K = opts.resolved_top_k(P)
                if K > P:
                    raise MAQError(f"--top-k {K}: larger than the {P} output rows of {name}")
                tp.storage = fmt.TYPE_OF_BITS[opts.bits]
                tp.group = opts.group
                tp.n_salient8 = n_salient8(opts, P, T)
                tp.rotated = opts.rotation_seed is not None and fmt.is_rotated_tensor(name)
        plan.append(tp)
    # a MAQ token_embd / output goes last: quantized after the blocks, with the head's input Hessian from the
    # calibration activations (pipeline._head_hessian); GGUF readers find tensors by name, not position
    return sorted(plan, key=lambda tp: tp.is_maq and not tp.name.startswith("blk."))   # stable: order kept otherwise


def n_salient8(opts: ConvertOptions, P: int, T: int) -> int:
    """Int8-coded salient words of a [P, T] tensor for ``--salient-coding int8`` without ``--target-bpw``: the
    same share of the tensor's words as the mean4 selection (K/P of each block), chosen over the whole tensor."""
    if opts.salient_coding != fmt.SALIENT_INT8 or opts.method != "maq" or opts.bits != 2 \
            or opts.target_bpw is not None:
        return 0
    return min(opts.resolved_top_k(P) * fmt.n_words(T), P * fmt.n_words(T))


def plan_decls(plan: list[TensorPlan]) -> list[gx.TensorDecl]:
    decls: list[gx.TensorDecl] = []
    for tp in plan:
        if tp.is_maq:
            P, T = tp.shape
            decls += gx.maq_decls(tp.name, T, P, tp.group, tp.bits, tp.n_salient8)
        else:
            decls.append(gx.float_decl(tp.name, tp.shape, tp.storage))
    return decls


def planned_tensor_bytes(plan: list[TensorPlan], opts: ConvertOptions) -> int:
    """Tensor data bytes of the output (with --target-bpw, an upper bound: the budget over the linear tensors)."""
    if opts.target_bpw is None:
        return sum(d.nbytes for d in plan_decls(plan))
    rest = sum(d.nbytes for d in plan_decls([tp for tp in plan if not tp.is_linear]))
    n_linear = sum(int(np.prod(tp.shape)) for tp in plan if tp.is_linear)
    return rest + int(np.ceil(n_linear * opts.target_bpw / 8))


def linear_bits_per_weight(plan: list[TensorPlan]) -> float:
    """Honest bits/weight over all linear block tensors (every byte of every part)."""
    nbytes = nweights = 0
    for tp in plan:
        if tp.is_linear:
            nweights += int(np.prod(tp.shape))
            nbytes += tp.nbytes
    return nbytes * 8 / nweights if nweights else 0.0


def bf16_file_bytes(plan: list[TensorPlan]) -> int:
    """Tensor bytes of the same model as a llama.cpp BF16 GGUF (2-D tensors BF16, vectors F32)."""
    return sum(int(np.prod(tp.shape)) * (2 if len(tp.shape) == 2 else 4) for tp in plan)


def build_metadata(src: Source, opts: ConvertOptions, plan: list[TensorPlan], calib_meta: dict) -> dict:
    """The output's metadata: the source's general.*/llama.*/tokenizer.* then maq.* run and per-tensor keys."""
    import gguf

    md = dict(src.metadata())
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}.get(opts.method)
    if ftype is not None:
        md[gguf.Keys.General.FILE_TYPE] = gx.gguf_value(int(ftype), "u32")
    md[gguf.Keys.General.QUANTIZATION_VERSION] = gx.gguf_value(gguf.GGML_QUANT_VERSION, "u32")
    v = gx.gguf_value
    md[fmt.KEY_VERSION] = v(fmt.format_version(opts.rotation_seed is not None), "u32")
    md[fmt.KEY_TOOL_VERSION] = v(__version__, "str")
    md[gx.KEY_METHOD] = v(opts.method, "str")
    md[gx.KEY_SOURCE] = v(Path(opts.model).name, "str")
    if not opts.is_float:
        P_ref = max(tp.shape[0] for tp in plan if tp.is_linear)
        md[gx.KEY_ABLATION] = v(opts.ablation, "str")
        md[gx.KEY_TOP_K] = v(opts.top_k if (opts.top_k is not None and opts.method == "maq"
                                            and not opts.no_mixed) else -1, "i32")
        frac = 0.0 if opts.resolved_top_k(P_ref) == 0 else (
            opts.top_k / P_ref if opts.top_k is not None else
            (opts.salient_frac if opts.salient_frac is not None else DEFAULT_SALIENT_FRAC))
        md[gx.KEY_SALIENT_FRAC] = v(float(frac), "f32")
        md[gx.KEY_SALIENT_FEEDBACK] = v(bool(opts.salient_feedback), "bool")
        md[gx.KEY_GROUP] = v(opts.group, "u32")
        md[gx.KEY_BPW_LINEAR] = v(float(linear_bits_per_weight(plan)), "f32")
        md[gx.KEY_WORD_CHOICE] = v(opts.resolved_word_choice, "str")
        if opts.rotation_seed is not None:
            md[fmt.KEY_INCOHERENCE] = v(opts.incoherence, "str")
            md[fmt.KEY_INCOHERENCE_SEED] = v(opts.rotation_seed, "u32")
        if opts.target_bpw is not None:
            md[gx.KEY_TARGET_BPW] = v(float(opts.target_bpw), "f32")
            md[gx.KEY_ALLOC_COST] = v(opts.resolved_alloc_cost, "str")
        if opts.needs_calibration:
            md[gx.KEY_BLOCK] = v(opts.block, "u32")
            md[gx.KEY_DAMP] = v(float(opts.damp), "f32")
            md[gx.KEY_SCALE_SEARCH] = v(opts.scale_search, "str")
        else:
            md[gx.KEY_SCALE_SEARCH] = v("minmax", "str")
        for key, (val, kind) in calib_meta.items():
            md[key] = v(val, kind)
        for tp in plan:
            if tp.is_maq:
                for key, (val, kind) in gx.maq_tensor_metadata(tp.name, tp.group, tp.bits, tp.n_salient8).items():
                    md[key] = v(val, kind)
            if opts.target_bpw is not None and tp.is_linear:
                md[gx.key_choice(tp.name)] = v(tp.choice, "str")
            if opts.rotation_seed is not None and fmt.is_rotated_tensor(tp.name) and not tp.rotated:
                md[fmt.key_tensor_incoherence(tp.name)] = v(fmt.INCOHERENCE_NONE, "str")
    return md


def describe_plan(src: Source, opts: ConvertOptions, plan: list[TensorPlan]) -> list[str]:
    """Human-readable lines for --dry-run and the log."""
    p = src.params
    counts: dict[str, int] = {}
    for tp in plan:
        counts[tp.storage] = counts.get(tp.storage, 0) + 1
    decls = plan_decls(plan)
    size = sum(d.nbytes for d in decls)
    lines = [
        f"source    {src.path} ({src.kind}): llama, {p.n_layer} blocks, dim {p.n_embd}, ffn {p.n_ff}, "
        f"heads {p.n_head}/{p.n_head_kv}, vocab {p.n_vocab}, {'tied' if p.tied else 'untied'} output",
        f"output    {opts.out}{' (replacing)' if Path(opts.out).exists() else ''}",
        f"method    {opts.method}" + (f" ({opts.ablation})" if not opts.is_float and opts.ablation else ""),
        "tensors   " + ", ".join(f"{n} {k}" for k, n in sorted(counts.items())),
        f"size      ~{size / 2**20:.1f} MiB of tensor data (BF16 file: ~{bf16_file_bytes(plan) / 2**20:.1f} MiB)",
    ]
    if opts.target_bpw is not None:   # the per-tensor types are chosen after calibration: the lines above are not it
        lines[-2:] = [f"tensors   per-tensor types decided after calibration (--target-bpw {opts.target_bpw:g}: "
                      "MAQ2/3/4 or Q8_0 per linear tensor; the summary lists the choice)",
                      f"size      decided after calibration (BF16 file: ~{bf16_file_bytes(plan) / 2**20:.1f} MiB)"]
    if not opts.is_float:
        P0 = next(tp.shape[0] for tp in plan if tp.is_linear)
        K = opts.resolved_top_k(P0) if opts.bits == 2 else 0
        int8 = opts.salient_coding == fmt.SALIENT_INT8 and opts.method == "maq"
        if int8:
            K = 0
            n8 = sum(tp.n_salient8 for tp in plan)
            nw = sum(tp.shape[0] * fmt.n_words(tp.shape[1]) for tp in plan if tp.is_maq)
            lines.append("salient   int8 coding (16 int8 codes per salient word, per-row overflow area): "
                         + ("the share of each tensor's words chosen by --target-bpw" if opts.target_bpw is not None
                            else f"{n8} of {nw} words ({n8 / max(nw, 1):.2%}), the top of each tensor by saliency"))
        lines.append(f"{fmt.TYPE_OF_BITS[opts.bits].upper():<9} group {opts.group}, linear tensors "
                     f"{linear_bits_per_weight(plan):.4f} bits/weight, salient words per 16-input block: "
                     f"{K} of {P0} ({K / P0:.2%})"
                     + (" [ranked by single weight: -G]" if opts.no_grouping else "")
                     + ("" if opts.salient_feedback else " [no salient feedback]")
                     + (" [kept only where they lower the error]" if K and opts.resolved_word_choice == "error"
                        else ""))
    if opts.rotation_seed is not None:
        lines.append(f"rotation  --incoherence {opts.incoherence}: every linear of the blocks stored as W Rᵀ "
                     f"(randomized Walsh-Hadamard over blocks of {fmt.HADAMARD_BLOCK_MAX} inputs, seed "
                     f"{opts.rotation_seed}); the runtime rotates the activations (not llama.cpp's MAQ extension)")
    if opts.target_bpw is not None:
        from maq.converter import allocate   # imports torch: only with --target-bpw (bad input fails fast)

        lines.append(f"target    <= {opts.target_bpw} bits/weight over the linear tensors: per-tensor types among "
                     f"{', '.join(c.name for c in allocate.candidates(opts.salient_coding == fmt.SALIENT_INT8 and opts.method == 'maq', opts.rotation_seed is not None))} chosen after calibration "
                     f"(the smallest file possible: {allocate.min_bpw(plan):.4f})")
    if opts.needs_calibration:
        lines.append(f"calib     {opts.calib or 'shipped C4 sample'}: {opts.nsamples} x {opts.seqlen} tokens "
                     f"(seed {opts.seed}), GPTQ block {opts.block}, damp {opts.damp}, scale search "
                     f"{opts.scale_search}, {opts.calib_dtype} on {opts.device}")
    return lines


def convert(opts: ConvertOptions, keep_tensors: bool = False) -> ConvertResult | None:
    """Run the conversion described by ``opts``. Returns None for a dry run."""
    t0 = time.time()
    opts.validate()
    src = open_source(opts.model, opts.tokenizer_pre)
    plan = make_plan(src, opts)
    if opts.target_bpw is not None:
        from maq.converter import allocate   # imports torch: only with --target-bpw (bad input fails fast)
    if opts.target_bpw is not None and opts.target_bpw < allocate.min_bpw(plan):
        raise MAQError(f"--target-bpw {opts.target_bpw}: below the smallest MAQ file of {src.path} "
                       f"({allocate.min_bpw(plan):.4f} bits/weight over the linear tensors: every one MAQ2 g128)")
    gx.check_output(Path(opts.out), opts.force)
    for line in describe_plan(src, opts, plan):
        log.info("%s", line)
    if opts.dry_run:
        return None
    # up front, before minutes of calibration: leftovers of killed runs, the tokenizer / model card (read now,
    # so their errors come first), and the disk space the planned file needs
    gx.remove_stale_tmp(Path(opts.out))
    tensor_bytes = planned_tensor_bytes(plan, opts)
    gx.check_space(Path(opts.out), tensor_bytes)     # at once: the tensor data alone must fit
    gx.check_space(Path(opts.out), tensor_bytes + gx.metadata_bytes(src.metadata(), plan_decls(plan)))

    calib_meta: dict = {}
    samples = None
    if opts.needs_calibration:
        from maq.converter.calibration import load_calibration

        calib = load_calibration(src, opts)
        samples = calib.samples
        calib_meta = calib.metadata()
    if opts.target_bpw is not None:
        allocate.allocate(src, opts, plan, samples)

    metadata = build_metadata(src, opts, plan, calib_meta)
    decls = plan_decls(plan)
    by_name = {tp.name: tp for tp in plan}
    kept: dict[str, fmt.MAQTensor] = {}
    rows: list[dict] = []
    tensor_rows: list[dict] = []

    with gx.StreamingGGUF(Path(opts.out), opts.force, metadata, decls) as g:
        def write_float(name: str, a: np.ndarray) -> None:
            """a: float values to encode as the tensor's storage, or (Q8_0 linears) the bytes already encoded."""
            storage = by_name[name].storage
            g.write(name, a if storage == "q8_0" and a.dtype == np.uint8 else gx.encode_float(a, storage))

        def write_maq(name: str, t: fmt.MAQTensor) -> None:
            for part_name, arr in gx.maq_arrays(name, t):
                g.write(part_name, arr)
            if keep_tensors:
                kept[name] = t

        if opts.is_float:
            for tp in plan:
                write_float(tp.name, src.tensor(tp.name))
        else:
            from maq.converter.pipeline import quantize_model

            rows, tensor_rows = quantize_model(src, opts, plan, samples, write_float, write_maq)

    size = Path(opts.out).stat().st_size
    meta_bytes = size - sum(d.nbytes for d in decls)
    res = ConvertResult(out=Path(opts.out), file_bytes=size, bf16_bytes=bf16_file_bytes(plan) + max(meta_bytes, 0),
                        linear_bpw=linear_bits_per_weight(plan), seconds=time.time() - t0,
                        rows=rows, tensors=kept, tensor_rows=tensor_rows)
    from maq.converter.summary import log_summary

    log_summary(res, opts)
    return res
