"""The converter's options (one dataclass, filled by the CLI or by tests) and their validation."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from maq.errors import MAQError
from maq.runtime import format as fmt

METHODS = ("maq", "gptq", "rtn", "f32", "f16")
FLOAT_METHODS = ("f32", "f16")
EMBED_TYPES = ("auto", "q8_0", "f16", "f32", "maq4")
EMBED_MAQ_GROUP = 32     # --embed-type maq4: scale group of the embedding / output head
SCALE_SEARCHES = ("clip", "minmax")
CALIB_DTYPES = ("float32", "bfloat16")
WORD_CHOICES = ("all", "error")
ALLOC_COSTS = ("rtn", "gptq")
SALIENT_CODINGS = fmt.SALIENT_CODINGS   # "mean4" (the paper), "int8" (16 int8 codes per salient word)
BITS_CHOICES = (2, 3, 4)
TARGET_BPW_MAX = 8.5     # every linear tensor Q8_0

# The paper's K = 100 on Llama2-7B (P = 4096 outputs): 100/4096 of the words of each 16-input block.
PAPER_K = 100
PAPER_P = 4096
DEFAULT_SALIENT_FRAC = PAPER_K / PAPER_P


# upper bounds of the numeric options (beyond them a run only ends in a MemoryError or an endless loop)
MAX_NSAMPLES = 100_000
MAX_SEQLEN = 1 << 20
MAX_BLOCK = 1 << 16
MAX_THREADS = 1024


@dataclasses.dataclass
class ConvertOptions:
    """Everything ``maq convert`` does is decided by these fields."""

    model: Path
    out: Path
    method: str = "maq"
    force: bool = False
    dry_run: bool = False
    # salient words
    top_k: int | None = None               # the paper's K: salient words per 16-input block
    salient_frac: float | None = None      # else this fraction of each block's words (default: paper's K=100/4096)
    salient_feedback: bool = True          # feed salient-word errors back into GPTQ (False: paper's literal order)
    no_grouping: bool = False              # "-G": rank words by their single most salient weight
    no_mixed: bool = False                 # "-M": no salient words (K = 0)
    salient_coding: str = "mean4"          # how a salient word stores its 16 weights: mean4 (paper) | int8
    word_choice: str | None = None         # "all" | "error" (None: "error" with --target-bpw, else "all")
    # size / quality dial
    bits: int = 2                          # code width of every linear tensor (3, 4: MAQ3 / MAQ4, no salient words)
    target_bpw: float | None = None        # per-tensor types chosen for the lowest predicted loss under this budget
    alloc_cost: str | None = None          # --target-bpw costs: "rtn" | "gptq" (RTN costs x measured GPTQ/RTN
                                           # ratio); None: gptq with --incoherence, else rtn (resolved_alloc_cost)
    incoherence: str = "none"              # "hadamard": block linears stored rotated (FORMAT.md section 10)
    # 2-bit words
    group: int = fmt.DEFAULT_GROUP         # inputs per 2-bit scale/min group
    block: int = 128                       # GPTQ column block B
    damp: float = 0.01                     # damping, fraction of mean diag(H)
    scale_search: str = "clip"             # 2-bit group scale/min choice
    # storage of the other tensors
    embed_type: str = "auto"               # token_embd / output: auto = f32|f16 for float methods, else q8_0
    # calibration
    calib: Path | None = None              # plain text (or .jsonl with "text"); None: the shipped C4 sample
    nsamples: int = 128
    seqlen: int = 2048
    seed: int = 0
    device: str = "cpu"
    calib_dtype: str = "float32"           # dtype of the calibration forward passes (H always accumulates in fp32)
    threads: int | None = None             # torch threads; rtn: tensors quantized at once (default: torch / CPU count)
    tokenizer_pre: str | None = None       # override tokenizer.ggml.pre for an unknown HF BPE tokenizer
    progress: bool = True                  # tqdm bars

    @property
    def is_float(self) -> bool:
        return self.method in FLOAT_METHODS

    @property
    def needs_calibration(self) -> bool:
        return self.method in ("maq", "gptq")

    def resolved_top_k(self, P: int) -> int:
        """Salient words per 16-input block for a tensor with P output rows."""
        if self.method != "maq" or self.no_mixed:
            return 0
        if self.top_k is not None:
            return self.top_k
        frac = DEFAULT_SALIENT_FRAC if self.salient_frac is None else self.salient_frac
        return int(round(frac * P))

    @property
    def resolved_word_choice(self) -> str:
        if self.word_choice is not None:
            return self.word_choice
        return "error" if self.target_bpw is not None else "all"

    @property
    def resolved_alloc_cost(self) -> str:
        """RTN costs never pick a rotated candidate (rounding the rotated weights to nearest loses the grid a
        quantized source was on, while GPTQ gains far more on them: docs/RESULTS.md), so --incoherence defaults to
        GPTQ-scaled costs; otherwise RTN."""
        if self.alloc_cost is not None:
            return self.alloc_cost
        return "gptq" if self.rotation_seed is not None else "rtn"

    @property
    def rotation_seed(self) -> int | None:
        """The sign seed of the block linears' input rotation (``--incoherence hadamard``), else None."""
        return fmt.DEFAULT_INCOHERENCE_SEED if self.incoherence == fmt.INCOHERENCE_HADAMARD else None

    @property
    def ablation(self) -> str:
        return "no-mixed" if self.no_mixed else ("no-grouping" if self.no_grouping else "")

    def validate(self) -> None:
        """Raise MAQError for an inconsistent combination (one line, naming the option)."""
        if self.method not in METHODS:
            raise MAQError(f"--method {self.method!r}: expected one of {METHODS}")
        if self.embed_type not in EMBED_TYPES:
            raise MAQError(f"--embed-type {self.embed_type!r}: expected one of {EMBED_TYPES}")
        if self.embed_type in fmt.BITS_OF_TYPE and self.is_float:
            raise MAQError(f"--embed-type {self.embed_type} with --method {self.method}: a float file keeps its "
                           "embedding in float (use --embed-type f32 / f16 / q8_0)")
        if self.scale_search not in SCALE_SEARCHES:
            raise MAQError(f"--scale-search {self.scale_search!r}: expected one of {SCALE_SEARCHES}")
        if self.calib_dtype not in CALIB_DTYPES:
            raise MAQError(f"--calib-dtype {self.calib_dtype!r}: expected one of {CALIB_DTYPES}")
        if self.word_choice is not None and self.word_choice not in WORD_CHOICES:
            raise MAQError(f"--word-choice {self.word_choice!r}: expected one of {WORD_CHOICES}")
        if self.salient_coding not in SALIENT_CODINGS:
            raise MAQError(f"--salient-coding {self.salient_coding!r}: expected one of {SALIENT_CODINGS}")
        if self.alloc_cost is not None and self.alloc_cost not in ALLOC_COSTS:
            raise MAQError(f"--alloc-cost {self.alloc_cost!r}: expected one of {ALLOC_COSTS}")
        if self.alloc_cost is not None and self.target_bpw is None:
            raise MAQError("--alloc-cost is --target-bpw's cost model: give --target-bpw too")
        if self.incoherence not in fmt.INCOHERENCE_KINDS:
            raise MAQError(f"--incoherence {self.incoherence!r}: expected one of {fmt.INCOHERENCE_KINDS}")
        if self.is_float and self.incoherence != fmt.INCOHERENCE_NONE:
            raise MAQError(f"--incoherence {self.incoherence}: rotates weights for quantization; --method "
                           f"{self.method} does not quantize")
        if self.bits not in BITS_CHOICES:
            raise MAQError(f"--bits {self.bits}: expected one of {BITS_CHOICES}")
        if self.bits != 2 and self.method == "maq" and not self.no_mixed:
            raise MAQError(f"--bits {self.bits}: MAQ3/MAQ4 words have no salient words; use --method gptq or rtn "
                           "(or --target-bpw to mix widths per tensor)")
        if self.target_bpw is not None:
            if self.method not in ("maq", "gptq"):
                raise MAQError(f"--target-bpw needs --method maq or gptq (got --method {self.method})")
            if self.bits != 2:
                raise MAQError("--target-bpw chooses the code width per tensor: do not combine it with --bits")
            if not 1.0 <= self.target_bpw <= TARGET_BPW_MAX:
                raise MAQError(f"--target-bpw {self.target_bpw}: expected bits/weight between the smallest MAQ2 "
                               f"file (~2.2) and {TARGET_BPW_MAX} (every linear tensor Q8_0)")
        if self.top_k is not None and self.salient_frac is not None:
            raise MAQError("--top-k and --salient-frac are alternatives: give one")
        salient_opts = self.top_k is not None or self.salient_frac is not None or self.no_grouping \
            or not self.salient_feedback or self.word_choice is not None
        if self.method != "maq" and (salient_opts or self.no_mixed):
            raise MAQError("--top-k/--salient-frac/--no-grouping/--no-mixed/--no-salient-feedback/--word-choice "
                           f"apply to --method maq only (got --method {self.method})")
        if self.no_mixed and (self.top_k or self.salient_frac or self.no_grouping):
            raise MAQError("--no-mixed means no salient words: it cannot be combined with --top-k, "
                           "--salient-frac or --no-grouping")
        if self.top_k is not None and self.top_k < 0:
            raise MAQError(f"--top-k {self.top_k}: must be >= 0")
        if self.salient_frac is not None and not 0.0 <= self.salient_frac <= 1.0:
            raise MAQError(f"--salient-frac {self.salient_frac}: must be in [0, 1]")
        if self.group not in fmt.GROUP_SIZES:
            raise MAQError(f"--group {self.group}: expected one of {fmt.GROUP_SIZES}")
        if self.block <= 0 or self.block % self.group:
            raise MAQError(f"--block {self.block}: must be a positive multiple of --group {self.group}")
        if not 0.0 < self.damp < 10.0:
            raise MAQError(f"--damp {self.damp}: expected a small positive fraction (GPTQ uses 0.01)")
        if not 0 < self.nsamples <= MAX_NSAMPLES or not 0 < self.seqlen <= MAX_SEQLEN:
            raise MAQError(f"--nsamples {self.nsamples} / --seqlen {self.seqlen}: expected 1..{MAX_NSAMPLES} windows "
                           f"of 1..{MAX_SEQLEN} tokens")
        if self.block > MAX_BLOCK:
            raise MAQError(f"--block {self.block}: expected at most {MAX_BLOCK}")
        if self.threads is not None and not 0 < self.threads <= MAX_THREADS:
            raise MAQError(f"--threads {self.threads}: expected 1..{MAX_THREADS}")
        if self.needs_calibration and self.device != "cpu":
            import torch

            try:
                dev = torch.device(self.device)
            except RuntimeError as exc:
                raise MAQError(f"--device {self.device!r}: {exc}") from exc
            if dev.type == "cuda" and not torch.cuda.is_available():
                raise MAQError(f"--device {self.device}: CUDA is not available to this torch build")
        if self.calib is not None and not Path(self.calib).is_file():
            raise MAQError(f"{self.calib}: calibration text not found")
