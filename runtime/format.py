"""The MAQ tensor format: the single owner of its constants, layout and reference pack/unpack.

Both the converter and the runtime import this module; nothing else defines a byte of the layout.
docs/FORMAT.md describes the same thing in prose, byte by byte, with a worked example.

A MAQ2 tensor is the quantized form of one linear weight ``W`` of logical shape ``[P, T]``
(P output rows, T inputs; GGUF ``ne = [T, P]``, each output row holds T contiguous input weights).
T must be a multiple of 16. It is stored as four parts, all row-major with one output row per line:

==========  ===========  =====================  ===========================================================
part        dtype        shape                  meaning
==========  ===========  =====================  ===========================================================
words       int32 (LE)   [P, T/16]              one 32-bit word per 16 consecutive inputs of a row
bitmap      uint8        [P, ceil(T/128)]       bit w%8 of byte w//8 set <=> word w is a salient (8-bit) word
scales      uint8        [P, 2*ceil(T/G)]       per 2-bit group of G inputs: sc (uint8) ... then m (int8) ...
rowscale    float16      [P, 3]                 per row: d, dmin, dsal
==========  ===========  =====================  ===========================================================

2-bit word (bitmap bit clear): weight j (0..15) of the word has code ``q_j = (word >> 2j) & 3`` and value
``d * sc[g] * q_j + dmin * m[g]`` where ``g = (16*w + j) // G`` is the 2-bit group of that input.

8-bit salient word (bitmap bit set): byte k (0..3) is an int8 ``c_k``; weights 4k..4k+3 of the word all have
value ``dsal * c_k`` (the paper's "mean of 4 weights, quantized to int8").

MAQ3 / MAQ4 (``bits`` = 3 or 4, the higher-precision members of the family, no salient words, no bitmap):
the words hold the low 2 bits of every code exactly as a MAQ2 2-bit word does, and a ``hi`` part holds the rest
of the code for the same 16 inputs: for MAQ4 an int32 [P, T/16] word in the same 2-bit layout (bits 2j..2j+1 =
bits 2..3 of input j's code), for MAQ3 a uint16 [P, T/16] (bit j = bit 2 of input j's code). The code is
``q = lo + 4*hi`` (0..7 or 0..15) and the value ``d * sc[g] * q + dmin * m[g]``, scales and row scales as MAQ2
(``dsal`` unused, stored 0). One word per 16 inputs stays the unit: the kernels run the 2-bit path on each plane.

Salient coding ``int8`` (MAQ2 only; docs/FORMAT.md section 9): a salient word keeps its 16 weights as int8
codes in a per-row overflow area. Two more parts: ``salw`` int8 [16*N] (N salient words of the tensor, rows in
order, words of a row in order) and ``saloff`` int32 [P+1] (saloff[p] = salient words in rows < p). The codes of
salient word w of row p start at 16 * (saloff[p] + popcount of row p's bitmap bits before w): one base address
plus an offset. The word's own 32-bit slot holds its fp16 scale s_w (low 16 bits; high 16 bits 0), input j has
value ``float(s_w) * c_j``; ``dsal`` is stored 0 (a mean4 reader of the slot multiplies it by 0).

Bits per weight are counted honestly: every byte of every part x 8 / (P*T).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from maq.errors import FormatError

# --------------------------------------------------------------------------- constants
FORMAT_VERSION = 2           # the newest this code reads and writes; 2 = linears may be stored rotated (section 10)
FORMAT_VERSION_PLAIN = 1     # written when nothing is rotated, so readers of version 1 keep reading those files
WORD_WEIGHTS = 16            # inputs per 32-bit word (one 128-bit SIMD register of int8)
WORDS_PER_BITMAP_BYTE = 8
MEAN_SPAN = 4                # a salient word holds 4 int8 means of 4 weights each
CODE_BITS = 2
CODE_MAX = (1 << CODE_BITS) - 1
GROUP_SIZES = (32, 64, 128)  # allowed 2-bit scale group sizes G (inputs)
DEFAULT_GROUP = 128
ROWSCALE_FIELDS = ("d", "dmin", "dsal")

TYPE_MAQ2 = "maq2"           # logical tensor type name recorded in GGUF metadata
TYPE_MAQ3 = "maq3"           # 3-bit codes: low 2-bit plane (words) + 1-bit plane (hi, uint16 per word)
TYPE_MAQ4 = "maq4"           # 4-bit codes: low 2-bit plane (words) + high 2-bit plane (hi, int32 per word)
BITS = (2, 3, 4)
TYPE_OF_BITS = {2: TYPE_MAQ2, 3: TYPE_MAQ3, 4: TYPE_MAQ4}
BITS_OF_TYPE = {v: k for k, v in TYPE_OF_BITS.items()}
SALIENT_MEAN4 = "mean4"      # the paper's salient coding
SALIENT_INT8 = "int8"        # salient words keep 16 int8 codes in a per-row overflow area (section 9)
SALIENT_CODINGS = (SALIENT_MEAN4, SALIENT_INT8)

# GGUF part names: the words keep the llama.cpp tensor name, the other parts add a suffix.
PART_WORDS = ""
PART_BITMAP = ".bitmap"
PART_SCALES = ".scales"
PART_ROWSCALE = ".rowscale"
PART_HI = ".hi"
PART_SALW = ".salw"          # int8 overflow codes [16*N] (salient coding int8)
PART_SALOFF = ".saloff"      # int32 [P+1]: salient words before each row (salient coding int8)
PART_SUFFIXES = (PART_WORDS, PART_BITMAP, PART_SCALES, PART_ROWSCALE)   # MAQ2's parts
PART_SUFFIXES_HI = (PART_WORDS, PART_HI, PART_SCALES, PART_ROWSCALE)    # MAQ3 / MAQ4's parts


def part_suffixes(bits: int = 2, salient_coding: str = SALIENT_MEAN4) -> tuple[str, ...]:
    """The GGUF part suffixes of a MAQ tensor with ``bits``-bit codes, in file order."""
    if bits == 2 and salient_coding == SALIENT_INT8:
        return PART_SUFFIXES + (PART_SALW, PART_SALOFF)
    return PART_SUFFIXES if bits == 2 else PART_SUFFIXES_HI

# GGUF metadata keys (general.* / llama.* / tokenizer.* stay llama.cpp's own).
KEY_VERSION = "maq.format_version"
KEY_TOOL_VERSION = "maq.tool_version"


def key_tensor_type(base: str) -> str:
    """Metadata key holding the logical type (``"maq2"``) of tensor ``base``."""
    return f"maq.tensor.{base}.type"


def key_group_size(base: str) -> str:
    """Metadata key holding the 2-bit group size G of tensor ``base``."""
    return f"maq.tensor.{base}.group_size"


def key_salient_coding(base: str) -> str:
    """Metadata key holding the salient-word coding (``"mean4"``) of tensor ``base``."""
    return f"maq.tensor.{base}.salient_coding"


# --------------------------------------------------------------------------- incoherence (docs/FORMAT.md section 10)
# A file converted with ``--incoherence hadamard`` stores every linear weight of the decoder blocks rotated along
# its input dimension, W' = W Rᵀ, and the runtime multiplies W' by the rotated activation R x (W' R x = W x).
# R = (block-diagonal Walsh-Hadamard, blocks of hadamard_block(T), scaled to be orthonormal) · diag(signs), with
# signs = hadamard_signs(T, seed). The output head and the embeddings are never rotated; a block linear whose own
# key_tensor_incoherence says "none" is stored as is (the converter's per-tensor choice).
INCOHERENCE_NONE = "none"
INCOHERENCE_HADAMARD = "hadamard"
INCOHERENCE_KINDS = (INCOHERENCE_NONE, INCOHERENCE_HADAMARD)
KEY_INCOHERENCE = "maq.incoherence"            # str: "hadamard" (absent: "none")
KEY_INCOHERENCE_SEED = "maq.incoherence.seed"  # uint32: the sign seed
HADAMARD_BLOCK_MAX = 64       # block length: the largest power of two dividing T, at most this
DEFAULT_INCOHERENCE_SEED = 0x4D4151           # "MAQ"
ROTATED_KINDS = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def is_rotated_tensor(name: str) -> bool:
    """True for the tensors an incoherence-processed file stores rotated: blk.N.<ROTATED_KINDS>.weight."""
    parts = name.split(".")
    return (len(parts) == 4 and parts[0] == "blk" and parts[1].isdigit() and parts[2] in ROTATED_KINDS
            and parts[3] == "weight")


def key_tensor_incoherence(base: str) -> str:
    """Per-tensor exception in a rotated file: ``"none"`` = tensor ``base`` is stored as is (absent: rotated)."""
    return f"maq.tensor.{base}.incoherence"


def tensor_rotation(metadata: dict, name: str, where: str = "file") -> int | None:
    """The rotation seed of tensor ``name`` in a file with ``metadata`` (None: stored as is): the file's
    ``maq.incoherence`` is ``"hadamard"``, ``name`` is a block linear, and its own key does not say ``"none"``.
    Raises FormatError (naming ``where`` and the key) for values this reader does not know."""
    kind = metadata.get(KEY_INCOHERENCE, INCOHERENCE_NONE)
    if not isinstance(kind, str) or kind not in INCOHERENCE_KINDS:
        raise FormatError(f"{where}: metadata {KEY_INCOHERENCE} = {str(kind)[:40]!r}, expected one of "
                          f"{', '.join(INCOHERENCE_KINDS)}")
    if kind == INCOHERENCE_NONE or not is_rotated_tensor(name):
        return None
    own = metadata.get(key_tensor_incoherence(name), INCOHERENCE_HADAMARD)
    if not isinstance(own, str) or own not in INCOHERENCE_KINDS:
        raise FormatError(f"{where}: metadata {key_tensor_incoherence(name)} = {str(own)[:40]!r}, expected one of "
                          f"{', '.join(INCOHERENCE_KINDS)}")
    if own == INCOHERENCE_NONE:
        return None
    seed = metadata.get(KEY_INCOHERENCE_SEED)
    if seed is None:
        raise FormatError(f"{where}: metadata key {KEY_INCOHERENCE_SEED} is missing ({KEY_INCOHERENCE} = {kind!r})")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2 ** 32:
        raise FormatError(f"{where}: metadata {KEY_INCOHERENCE_SEED} = {str(seed)[:40]!r}, expected an integer in "
                          f"0..{2 ** 32 - 1}")
    return seed


def format_version(rotated: bool) -> int:
    """The ``maq.format_version`` a file gets: FORMAT_VERSION if any tensor is stored rotated (a version-1 reader
    would ignore the rotation and compute garbage: it refuses a newer version instead), else FORMAT_VERSION_PLAIN."""
    return FORMAT_VERSION if rotated else FORMAT_VERSION_PLAIN


def hadamard_block(T: int) -> int:
    """Hadamard block length for T inputs: the largest power of two dividing T, at most HADAMARD_BLOCK_MAX."""
    b = 1
    while b < HADAMARD_BLOCK_MAX and T % (2 * b) == 0:
        b *= 2
    return b


def hadamard_signs(T: int, seed: int) -> np.ndarray:
    """float32 [T] of +-1: sign i is - when bit 31 of fmix32((i + seed * 0x9E3779B9) mod 2^32) is set (fmix32:
    MurmurHash3's finalizer: h ^= h >> 16; h *= 0x85EBCA6B; h ^= h >> 13; h *= 0xC2B2AE35; h ^= h >> 16)."""
    m = np.uint64(0xFFFFFFFF)
    h = (np.arange(T, dtype=np.uint64) + np.uint64((seed * 0x9E3779B9) & 0xFFFFFFFF)) & m
    h ^= h >> np.uint64(16)
    h = (h * np.uint64(0x85EBCA6B)) & m
    h ^= h >> np.uint64(13)
    h = (h * np.uint64(0xC2B2AE35)) & m
    h ^= h >> np.uint64(16)
    return np.where(h >> np.uint64(31), np.float32(-1.0), np.float32(1.0)).astype(np.float32)


def _fwht_blocks(X: np.ndarray, b: int) -> np.ndarray:
    """Unnormalized Walsh-Hadamard transform of each block of b along the last axis (natural order), butterflies
    in the order of the C code (runtime/csrc/act.c maq_rotate_row): span h = 1, 2, 4, ..., pairs (i, i + h)."""
    shape = X.shape
    Y = X.reshape(-1, shape[-1] // b, b)
    h = 1
    while h < b:
        Z = Y.reshape(Y.shape[0], Y.shape[1], b // (2 * h), 2, h)
        a, c = Z[:, :, :, 0, :], Z[:, :, :, 1, :]
        Y = np.stack([a + c, a - c], axis=3).reshape(Y.shape)
        h *= 2
    return Y.reshape(shape)


def rotate(X: np.ndarray, seed: int) -> np.ndarray:
    """R x for every row x of X [..., T] (float32 or float64, same dtype out): signs, then each block's
    Walsh-Hadamard transform, then the scale 1/sqrt(b). Applied to weight rows it gives W' = W Rᵀ."""
    T = X.shape[-1]
    b = hadamard_block(T)
    s = hadamard_signs(T, seed).astype(X.dtype)
    return _fwht_blocks(X * s, b) * X.dtype.type(1.0 / np.sqrt(b))


def unrotate(Y: np.ndarray, seed: int) -> np.ndarray:
    """Rᵀ y for every row of Y [..., T] (the inverse of ``rotate``): W = W' R row by row."""
    T = Y.shape[-1]
    b = hadamard_block(T)
    s = hadamard_signs(T, seed).astype(Y.dtype)
    return _fwht_blocks(Y, b) * Y.dtype.type(1.0 / np.sqrt(b)) * s


# --------------------------------------------------------------------------- layout
def n_words(T: int) -> int:
    """Words per row: T/16."""
    return T // WORD_WEIGHTS


def n_bitmap_bytes(T: int) -> int:
    """Bitmap bytes per row: one bit per word, byte-aligned per row."""
    return -(-n_words(T) // WORDS_PER_BITMAP_BYTE)


def n_groups(T: int, G: int) -> int:
    """2-bit scale groups per row (the last may be ragged)."""
    return -(-T // G)


def check_shape(T: int, P: int, G: int, what: str = "tensor", bits: int = 2) -> None:
    """Raise FormatError unless (T, P, G, bits) is a valid MAQ shape."""
    if bits not in BITS:
        raise FormatError(f"{what}: code width {bits} bits, expected one of {BITS}")
    if T <= 0 or P <= 0:
        raise FormatError(f"{what}: shape [P={P}, T={T}] must be positive")
    if T % WORD_WEIGHTS:
        raise FormatError(f"{what}: input dimension T={T} is not a multiple of {WORD_WEIGHTS}")
    if G not in GROUP_SIZES:
        raise FormatError(f"{what}: group size G={G}, expected one of {GROUP_SIZES}")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Shapes and dtypes of the four parts of one MAQ tensor (MAQ2 / MAQ3 / MAQ4) of logical shape [P, T]."""

    T: int
    P: int
    G: int = DEFAULT_GROUP
    bits: int = 2
    n_salient8: int = 0      # salient coding int8: salient words of the tensor (0: mean4, no overflow parts)

    def __post_init__(self) -> None:
        check_shape(self.T, self.P, self.G, bits=self.bits)
        if self.n_salient8 and (self.bits != 2 or not 0 < self.n_salient8 <= self.P * n_words(self.T)):
            raise FormatError(f"layout: {self.n_salient8} int8 salient words do not fit a {self.type_name} "
                              f"tensor of {self.P} x {n_words(self.T)} words")

    @property
    def salient_coding(self) -> str:
        return SALIENT_INT8 if self.n_salient8 else SALIENT_MEAN4

    @property
    def words_shape(self) -> tuple[int, int]:
        return (self.P, n_words(self.T))

    @property
    def bitmap_shape(self) -> tuple[int, int]:
        return (self.P, n_bitmap_bytes(self.T))

    @property
    def scales_shape(self) -> tuple[int, int]:
        return (self.P, 2 * n_groups(self.T, self.G))

    @property
    def rowscale_shape(self) -> tuple[int, int]:
        return (self.P, len(ROWSCALE_FIELDS))

    @property
    def type_name(self) -> str:
        return TYPE_OF_BITS[self.bits]

    def part_specs(self) -> dict[str, tuple[tuple[int, int], np.dtype]]:
        """{suffix: (shape, dtype)} for every part, in file order."""
        if self.bits == 2:
            second = (PART_BITMAP, (self.bitmap_shape, np.dtype(np.uint8)))
        else:
            second = (PART_HI, (self.words_shape, np.dtype("<u2" if self.bits == 3 else "<i4")))
        specs = [
            (PART_WORDS, (self.words_shape, np.dtype("<i4"))),
            second,
            (PART_SCALES, (self.scales_shape, np.dtype(np.uint8))),
            (PART_ROWSCALE, (self.rowscale_shape, np.dtype("<f2"))),
        ]
        if self.n_salient8:
            specs += [(PART_SALW, ((WORD_WEIGHTS * self.n_salient8,), np.dtype(np.int8))),
                      (PART_SALOFF, ((self.P + 1,), np.dtype("<i4")))]
        return dict(specs)

    @property
    def nbytes(self) -> int:
        """Every byte of every part."""
        return sum(int(np.prod(s)) * dt.itemsize for s, dt in self.part_specs().values())

    @property
    def bits_per_weight(self) -> float:
        return self.nbytes * 8 / (self.P * self.T)


def bits_per_weight(T: int, P: int = 1, G: int = DEFAULT_GROUP, bits: int = 2, n_salient8: int = 0) -> float:
    """Honest bits/weight of a MAQ tensor: all bytes of words, bitmap (or hi), scales, row scales and (int8
    salient coding) overflow codes and row offsets x 8 / P*T."""
    return Layout(T, P, G, bits, n_salient8).bits_per_weight


@dataclasses.dataclass
class MAQTensor:
    """The four stored parts of one MAQ tensor (see module docstring for their meaning).

    words    int32   [P, T/16]
    bitmap   uint8   [P, ceil(T/128)]   (MAQ2 only; None for MAQ3/MAQ4)
    scales   uint8   [P, 2*ceil(T/G)]   (first half sc as uint8, second half m as int8 bits)
    rowscale float16 [P, 3]             (d, dmin, dsal)
    hi       uint16 / int32 [P, T/16]   (MAQ3 / MAQ4 only: the high bits of every code)
    salw     int8 [16*N]                (salient coding int8 only: the overflow codes)
    saloff   int32 [P+1]                (salient coding int8 only: salient words before each row)
    """

    words: np.ndarray
    bitmap: np.ndarray | None
    scales: np.ndarray
    rowscale: np.ndarray
    T: int
    G: int = DEFAULT_GROUP
    bits: int = 2
    hi: np.ndarray | None = None
    salw: np.ndarray | None = None
    saloff: np.ndarray | None = None

    @property
    def P(self) -> int:
        return int(self.words.shape[0])

    @property
    def n_salient8(self) -> int:
        """Words in the int8 overflow area (0 for the mean4 coding)."""
        return 0 if self.salw is None else int(np.asarray(self.salw).size) // WORD_WEIGHTS

    @property
    def salient_coding(self) -> str:
        return SALIENT_INT8 if self.salw is not None else SALIENT_MEAN4

    @property
    def layout(self) -> Layout:
        return Layout(self.T, self.P, self.G, self.bits, self.n_salient8)

    @property
    def type_name(self) -> str:
        return TYPE_OF_BITS[self.bits]

    def validate(self, what: str = "MAQ tensor") -> None:
        """Raise FormatError unless every part has the shape and dtype the layout demands."""
        if self.words.ndim != 2:
            raise FormatError(f"{what}: words must be 2-D [P, T/16], got shape {self.words.shape}")
        lay = self.layout
        parts = self.parts()
        for suffix, (shape, dtype) in lay.part_specs().items():
            arr = parts[suffix]
            name = suffix or "words"
            if arr is None:
                raise FormatError(f"{what}: part {name} is missing for a {lay.type_name} tensor")
            if tuple(arr.shape) != shape:
                raise FormatError(f"{what}: part {name} has shape {tuple(arr.shape)}, expected {shape}")
            if arr.dtype.kind != dtype.kind or arr.dtype.itemsize != dtype.itemsize:
                raise FormatError(f"{what}: part {name} has dtype {arr.dtype}, expected {dtype}")
        pad = n_bitmap_bytes(self.T) * 8 - n_words(self.T)
        if self.bits == 2 and pad and np.any(self.bitmap[:, -1] >> (8 - pad)):
            raise FormatError(f"{what}: bitmap padding bits beyond word {n_words(self.T)} are set")
        if self.salw is not None or self.saloff is not None:
            self._validate_int8(what)

    def _validate_int8(self, what: str) -> None:
        """The int8 salient coding's own rules (docs/FORMAT.md 9.5): offsets, slots, dsal."""
        if self.salw is None or self.saloff is None or self.bits != 2:
            raise FormatError(f"{what}: int8 salient coding needs both .salw and .saloff on a maq2 tensor")
        W = n_words(self.T)
        sal = unpack_bitmap(self.bitmap, W)
        per_row = sal.sum(axis=1).astype(np.int64)
        off = np.asarray(self.saloff).astype(np.int64)
        want = np.concatenate([[0], np.cumsum(per_row)])
        if not np.array_equal(off, want):
            bad = int(np.argmax(off != want))
            raise FormatError(f"{what}: .saloff[{bad}] = {off[bad]}, expected {want[bad]} (salient words of the "
                              f"bitmap before row {bad})")
        if self.n_salient8 != int(want[-1]):
            raise FormatError(f"{what}: .salw holds {self.n_salient8} words, the bitmap marks {int(want[-1])}")
        slot = self.words.view(np.uint32)[sal]
        if np.any(slot >> np.uint32(16)):
            raise FormatError(f"{what}: a salient word's slot has nonzero high 16 bits (int8 coding: fp16 scale only)")
        h = (slot & np.uint32(0xFFFF)).astype(np.uint16)
        if np.any(h & np.uint16(0x8000)) or np.any((h & np.uint16(0x7C00)) == np.uint16(0x7C00)):
            raise FormatError(f"{what}: a salient word's fp16 scale is negative, infinite or NaN")
        if np.any(np.asarray(self.rowscale).view(np.uint16)[:, 2] & np.uint16(0x7FFF)):
            raise FormatError(f"{what}: int8 salient coding needs dsal = 0 in every row")

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.parts().values())

    @property
    def bits_per_weight(self) -> float:
        return self.nbytes * 8 / (self.P * self.T)

    def parts(self) -> dict[str, np.ndarray]:
        """{suffix: array} in the order they are written to GGUF."""
        second = (PART_BITMAP, self.bitmap) if self.bits == 2 else (PART_HI, self.hi)
        parts = [(PART_WORDS, self.words), second, (PART_SCALES, self.scales), (PART_ROWSCALE, self.rowscale)]
        if self.salw is not None:
            parts += [(PART_SALW, self.salw), (PART_SALOFF, self.saloff)]
        return dict(parts)


@dataclasses.dataclass
class Unpacked:
    """The decoded contents of a MAQ2 tensor, one value per meaningful field.

    codes    uint8   [P, T]          codes 0..2^bits-1 (0 where the word is salient)
    means    int8    [P, T/4]        int8 means (0 where the word is not salient)
    salient  bool    [P, T/16]       True for 8-bit salient words
    sc       uint8   [P, ceil(T/G)]  2-bit group scale codes
    m        int8    [P, ceil(T/G)]  2-bit group min codes
    d, dmin, dsal  float16 [P]       per-row scales
    sal8     int8    [P, T]          int8 salient coding: the codes of salient inputs (0 elsewhere); else None
    wscale   float16 [P, T/16]       int8 salient coding: each salient word's scale (0 elsewhere); else None
    """

    codes: np.ndarray
    means: np.ndarray
    salient: np.ndarray
    sc: np.ndarray
    m: np.ndarray
    d: np.ndarray
    dmin: np.ndarray
    dsal: np.ndarray
    G: int = DEFAULT_GROUP
    bits: int = 2
    sal8: np.ndarray | None = None
    wscale: np.ndarray | None = None


# --------------------------------------------------------------------------- reference pack / unpack
def pack_bitmap(salient: np.ndarray) -> np.ndarray:
    """bool [P, W] -> uint8 [P, ceil(W/8)]; bit w%8 of byte w//8 is word w (LSB first)."""
    P, W = salient.shape
    out = np.zeros((P, -(-W // 8)), dtype=np.uint8)
    for w in range(W):
        out[:, w // 8] |= (salient[:, w].astype(np.uint8) << (w % 8))
    return out


def unpack_bitmap(bitmap: np.ndarray, W: int) -> np.ndarray:
    """uint8 [P, ceil(W/8)] -> bool [P, W]."""
    out = np.zeros((bitmap.shape[0], W), dtype=bool)
    for w in range(W):
        out[:, w] = (bitmap[:, w // 8] >> (w % 8)) & 1
    return out


def pack(codes: np.ndarray, means: np.ndarray, salient: np.ndarray,
         sc: np.ndarray, m: np.ndarray, d: np.ndarray, dmin: np.ndarray, dsal: np.ndarray,
         G: int = DEFAULT_GROUP, bits: int = 2, sal8: np.ndarray | None = None,
         wscale: np.ndarray | None = None) -> MAQTensor:
    """Pack decoded fields (see ``Unpacked``) into the stored parts. Slow and obviously correct.

    codes uint8 [P, T] in 0..2^bits-1; means int8 [P, T/4]; salient bool [P, T/16] (all False for bits > 2);
    sc uint8 [P, ng]; m int8 [P, ng]; d, dmin, dsal float [P] (stored as float16).
    For salient words only ``means`` is stored; for 2-bit words only ``codes``.
    Salient coding int8 (``sal8`` int8 [P, T] and ``wscale`` float16 [P, T/16] given, at least one salient
    word): salient words store ``sal8`` in the overflow part and their fp16 ``wscale`` in the word slot; ``means``
    and ``dsal`` are ignored (dsal stored 0).
    """
    codes = np.asarray(codes)
    P, T = codes.shape
    check_shape(T, P, G, "pack", bits)
    W = n_words(T)
    ng = n_groups(T, G)
    salient = np.asarray(salient, dtype=bool)
    means = np.asarray(means)
    if salient.shape != (P, W) or means.shape != (P, T // MEAN_SPAN):
        raise FormatError(f"pack: salient {salient.shape} / means {means.shape} do not match codes [P={P}, T={T}]")
    if np.any(codes > (1 << bits) - 1):
        raise FormatError(f"pack: {bits}-bit codes must be in 0..{(1 << bits) - 1}")
    if bits > 2 and salient.any():
        raise FormatError(f"pack: a {TYPE_OF_BITS[bits]} tensor has no salient words")
    if np.asarray(sc).shape != (P, ng) or np.asarray(m).shape != (P, ng):
        raise FormatError(f"pack: sc/m must have shape {(P, ng)}")

    words = np.zeros((P, W), dtype=np.uint32)
    hi = np.zeros((P, W), dtype=np.uint32)
    for w in range(W):
        two_bit = np.zeros(P, dtype=np.uint32)
        for j in range(WORD_WEIGHTS):
            c = codes[:, w * WORD_WEIGHTS + j].astype(np.uint32)
            two_bit |= (c & np.uint32(3)) << np.uint32(2 * j)
            if bits == 3:
                hi[:, w] |= (c >> np.uint32(2)) << np.uint32(j)
            elif bits == 4:
                hi[:, w] |= (c >> np.uint32(2)) << np.uint32(2 * j)
        eight_bit = np.zeros(P, dtype=np.uint32)
        for k in range(MEAN_SPAN):
            byte = means[:, w * 4 + k].astype(np.int8).view(np.uint8).astype(np.uint32)
            eight_bit |= byte << np.uint32(8 * k)
        if sal8 is not None:
            eight_bit = np.asarray(wscale, dtype="<f2")[:, w].view(np.uint16).astype(np.uint32)
        words[:, w] = np.where(salient[:, w], eight_bit, two_bit)

    scales = np.concatenate([np.asarray(sc, dtype=np.uint8),
                             np.asarray(m, dtype=np.int8).view(np.uint8)], axis=1)
    rowscale = np.stack([np.asarray(d), np.asarray(dmin), np.asarray(dsal)], axis=1).astype("<f2")
    if bits == 2 and sal8 is not None:
        sal8 = np.asarray(sal8, dtype=np.int8)
        ws = np.asarray(wscale, dtype="<f2")
        if sal8.shape != (P, T) or ws.shape != (P, W) or not salient.any():
            raise FormatError(f"pack: int8 coding needs sal8 [P={P}, T={T}], wscale [P, {W}] and a salient word")
        rowscale[:, 2] = 0
        salw = np.ascontiguousarray(sal8.reshape(P, W, WORD_WEIGHTS)[salient]).reshape(-1)   # rows, then words
        saloff = np.concatenate([[0], np.cumsum(salient.sum(axis=1))]).astype("<i4")
        t = MAQTensor(words=words.view("<i4"), bitmap=pack_bitmap(salient), scales=scales, rowscale=rowscale,
                      T=T, G=G, salw=salw, saloff=saloff)
    elif bits == 2:
        t = MAQTensor(words=words.view("<i4"), bitmap=pack_bitmap(salient), scales=scales,
                      rowscale=rowscale, T=T, G=G)
    else:
        hi_arr = hi.astype("<u2") if bits == 3 else hi.view("<i4")
        t = MAQTensor(words=words.view("<i4"), bitmap=None, scales=scales, rowscale=rowscale, T=T, G=G,
                      bits=bits, hi=hi_arr)
    t.validate("pack")
    return t


def unpack(t: MAQTensor) -> Unpacked:
    """Inverse of ``pack``: stored parts -> decoded fields."""
    t.validate()
    P, T, G = t.P, t.T, t.G
    W = n_words(T)
    ng = n_groups(T, G)
    salient = unpack_bitmap(t.bitmap, W) if t.bits == 2 else np.zeros((P, W), dtype=bool)
    u = t.words.view(np.uint32)
    hi = None if t.bits == 2 else t.hi.view(np.uint16 if t.bits == 3 else np.uint32).astype(np.uint32)
    codes = np.zeros((P, T), dtype=np.uint8)
    means = np.zeros((P, T // MEAN_SPAN), dtype=np.int8)
    for w in range(W):
        for j in range(WORD_WEIGHTS):
            c = (u[:, w] >> np.uint32(2 * j)) & 3
            if t.bits == 3:
                c = c | (((hi[:, w] >> np.uint32(j)) & 1) << np.uint32(2))
            elif t.bits == 4:
                c = c | (((hi[:, w] >> np.uint32(2 * j)) & 3) << np.uint32(2))
            codes[:, w * WORD_WEIGHTS + j] = np.where(salient[:, w], 0, c)
        for k in range(MEAN_SPAN):
            byte = ((u[:, w] >> np.uint32(8 * k)) & 0xFF).astype(np.uint8).view(np.int8)
            means[:, w * 4 + k] = np.where(salient[:, w], byte, 0)
    rs = t.rowscale.astype(np.float16)
    sal8 = wscale = None
    if t.salw is not None:
        means[:] = 0
        sal8 = np.zeros((P, W, WORD_WEIGHTS), dtype=np.int8)
        off = np.asarray(t.saloff).astype(np.int64)
        for p in range(P):                                  # word w's codes: 16 * (saloff[p] + rank of w in row p)
            for r, w in enumerate(np.flatnonzero(salient[p])):
                k = int(off[p]) + r
                sal8[p, w] = t.salw[WORD_WEIGHTS * k:WORD_WEIGHTS * (k + 1)]
        sal8 = sal8.reshape(P, T)
        wscale = np.where(salient, (u & np.uint32(0xFFFF)).astype(np.uint16), 0).astype(np.uint16).view("<f2")
    return Unpacked(codes=codes, means=means, salient=salient,
                    sc=t.scales[:, :ng].astype(np.uint8), m=t.scales[:, ng:].view(np.int8).copy(),
                    d=rs[:, 0].copy(), dmin=rs[:, 1].copy(), dsal=rs[:, 2].copy(), G=G, bits=t.bits,
                    sal8=sal8, wscale=wscale)


def dequantize(t: MAQTensor) -> np.ndarray:
    """Stored parts -> float32 weights [P, T] (reference; every product computed in float32)."""
    f = unpack(t)
    P, T = f.codes.shape
    g_of_input = np.arange(T) // t.G                               # [T]
    d = f.d.astype(np.float32)[:, None]
    dmin = f.dmin.astype(np.float32)[:, None]
    scale = d * f.sc.astype(np.float32)[:, g_of_input]             # [P, T]
    low = dmin * f.m.astype(np.float32)[:, g_of_input]              # [P, T]
    two_bit = scale * f.codes.astype(np.float32) + low
    if f.sal8 is not None:      # int8 coding: float(s_w) * c_j
        eight_bit = np.repeat(f.wscale.astype(np.float32), WORD_WEIGHTS, axis=1) * f.sal8.astype(np.float32)
    else:
        eight_bit = f.dsal.astype(np.float32)[:, None] * np.repeat(f.means.astype(np.float32), MEAN_SPAN, axis=1)
    sal_inputs = np.repeat(f.salient, WORD_WEIGHTS, axis=1)        # [P, T]
    return np.where(sal_inputs, eight_bit, two_bit).astype(np.float32)


def empty(T: int, P: int, G: int = DEFAULT_GROUP, bits: int = 2) -> MAQTensor:
    """A zero MAQ tensor of the given shape (no salient words, all scales zero)."""
    specs = Layout(T, P, G, bits).part_specs()
    arrs = {k: np.zeros(s, dtype=dt) for k, (s, dt) in specs.items()}
    return MAQTensor(words=arrs[PART_WORDS], bitmap=arrs.get(PART_BITMAP), scales=arrs[PART_SCALES],
                     rowscale=arrs[PART_ROWSCALE], T=T, G=G, bits=bits, hi=arrs.get(PART_HI))


def from_parts(parts: dict[str, np.ndarray], T: int, G: int, what: str = "MAQ tensor", bits: int = 2,
               salient_coding: str = SALIENT_MEAN4) -> MAQTensor:
    """Build a MAQTensor from ``{suffix: array}`` (e.g. read from GGUF), validating shapes, dtypes and (int8
    salient coding) the offsets, slots and dsal."""
    if salient_coding not in SALIENT_CODINGS:
        raise FormatError(f"{what}: salient coding {salient_coding!r}, expected one of {SALIENT_CODINGS}")
    missing = [s or "words" for s in part_suffixes(bits, salient_coding) if s not in parts]
    if missing:
        raise FormatError(f"{what}: missing part(s) {missing}")
    P = parts[PART_WORDS].shape[0] if parts[PART_WORDS].ndim == 2 else -1
    check_shape(T, max(P, 1), G, what, bits)
    t = MAQTensor(words=parts[PART_WORDS], bitmap=parts.get(PART_BITMAP) if bits == 2 else None,
                  scales=parts[PART_SCALES], rowscale=parts[PART_ROWSCALE], T=T, G=G, bits=bits,
                  hi=parts.get(PART_HI) if bits > 2 else None)
    if salient_coding == SALIENT_INT8:
        t.salw, t.saloff = parts[PART_SALW], parts[PART_SALOFF]
        if t.salw.ndim != 1 or t.salw.size % WORD_WEIGHTS or not t.salw.size:
            raise FormatError(f"{what}: part .salw has shape {t.salw.shape}, expected [16*N] with N >= 1")
    t.validate(what)
    return t


def salient_fraction(t: MAQTensor) -> float:
    """Fraction of words that are salient (8-bit); 0 for MAQ3 / MAQ4."""
    W = n_words(t.T)
    if t.bits != 2 or not W:
        return 0.0
    return float(unpack_bitmap(t.bitmap, W).mean())


# --------------------------------------------------------------------------- scale encoding
SC_MAX = 255   # sc is uint8
M_MAX = 127    # m is int8 in -127..127


def _f16_up(x: np.ndarray) -> np.ndarray:
    """Round float32 up to the next representable float16 (so x / _f16_up(x) <= 1)."""
    x = np.asarray(x, dtype=np.float32)
    h = x.astype(np.float16)
    low = h.astype(np.float32) < x
    h[low] = np.nextafter(h[low], np.float16(np.inf))
    return h


def encode_group_params(scale: np.ndarray, minv: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-group float (scale >= 0, min) [P, ng] -> codes (sc uint8, m int8) [P, ng] and row d, dmin float16 [P].

    d = max_g scale / 255 and dmin = max_g |min| / 127 (float16, rounded up so codes never clip);
    sc = round(scale / d), m = round(min / dmin). Decode with ``decode_group_params``.
    """
    scale = np.maximum(np.asarray(scale, dtype=np.float32), 0.0)
    minv = np.asarray(minv, dtype=np.float32)
    d = _f16_up(scale.max(axis=1) / SC_MAX)
    dmin = _f16_up(np.abs(minv).max(axis=1) / M_MAX)
    d32 = d.astype(np.float32)[:, None]
    dm32 = dmin.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d32 > 0, np.rint(scale / d32), 0.0)
        m = np.where(dm32 > 0, np.rint(minv / dm32), 0.0)
    return (np.clip(sc, 0, SC_MAX).astype(np.uint8), np.clip(m, -M_MAX, M_MAX).astype(np.int8), d, dmin)


def decode_group_params(sc: np.ndarray, m: np.ndarray, d: np.ndarray, dmin: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Codes -> the float32 (scale, min) [P, ng] that ``dequantize`` and the C kernels use."""
    scale = d.astype(np.float32)[:, None] * sc.astype(np.float32)
    minv = dmin.astype(np.float32)[:, None] * m.astype(np.float32)
    return scale, minv


def encode_means(means: np.ndarray, salient: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float means [P, T/4] of the salient words -> (int8 codes [P, T/4], dsal float16 [P]); symmetric int8.

    Only means inside salient words ([P, T/16] bool) count for the row's scale; the others code to 0.
    """
    means = np.asarray(means, dtype=np.float32)
    mask = np.repeat(np.asarray(salient, dtype=bool), WORD_WEIGHTS // MEAN_SPAN, axis=1)
    amax = np.where(mask, np.abs(means), 0.0).max(axis=1) if means.size else np.zeros(means.shape[0], np.float32)
    dsal = _f16_up(amax / M_MAX)
    ds = dsal.astype(np.float32)[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where((ds > 0) & mask, np.rint(means / ds), 0.0)
    return np.clip(c, -M_MAX, M_MAX).astype(np.int8), dsal


def encode_words_int8(W: np.ndarray, salient: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float W [P, T] -> (int8 codes [P, T], fp16 word scales [P, T/16]) for the salient words ([P, T/16] bool):
    s_w = max |w| / 127 rounded up to fp16, c = round(w / s_w) (0 outside salient words)."""
    W = np.asarray(W, dtype=np.float32)
    P, T = W.shape
    x = W.reshape(P, T // WORD_WEIGHTS, WORD_WEIGHTS)
    s = _f16_up(np.abs(x).max(axis=2) / M_MAX)
    s = np.where(salient, s, np.float16(0)).astype(np.float16)
    s32 = s.astype(np.float32)[:, :, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(s32 > 0, np.rint(x / s32), 0.0)
    c = np.where(np.asarray(salient, bool)[:, :, None], np.clip(c, -M_MAX, M_MAX), 0)
    return c.astype(np.int8).reshape(P, T), s


def quantize_rtn(W: np.ndarray, salient: np.ndarray | None = None, G: int = DEFAULT_GROUP,
                 bits: int = 2, salient_coding: str = SALIENT_MEAN4) -> MAQTensor:
    """Reference round-to-nearest MAQ quantization of float W [P, T] (no Hessian, no compensation).

    Groups use min/max over their non-salient inputs with 2^bits levels; salient words ([P, T/16] bool, MAQ2
    only) store the int8 means of each 4 weights. Used by tests and as the converter's RTN baseline.
    """
    W = np.asarray(W, dtype=np.float32)
    P, T = W.shape
    check_shape(T, P, G, "quantize_rtn", bits)
    qmax = (1 << bits) - 1
    nw, ng = n_words(T), n_groups(T, G)
    sal = np.zeros((P, nw), dtype=bool) if salient is None else np.asarray(salient, dtype=bool)
    sal_in = np.repeat(sal, WORD_WEIGHTS, axis=1)
    lo = np.zeros((P, ng), np.float32)
    hi = np.zeros((P, ng), np.float32)
    for g in range(ng):
        blk = W[:, g * G:(g + 1) * G]
        keep = ~sal_in[:, g * G:(g + 1) * G]
        lo[:, g] = np.where(keep, blk, np.inf).min(axis=1)
        hi[:, g] = np.where(keep, blk, -np.inf).max(axis=1)
    empty_g = ~np.isfinite(lo)
    lo[empty_g] = 0.0
    hi[empty_g] = 0.0
    sc, m, d, dmin = encode_group_params((hi - lo) / qmax, lo)
    scale, minv = decode_group_params(sc, m, d, dmin)
    g_of = np.arange(T) // G
    s_full, m_full = scale[:, g_of], minv[:, g_of]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s_full > 0, np.rint((W - m_full) / s_full), 0.0)
    codes = np.clip(q, 0, qmax).astype(np.uint8)
    codes[sal_in] = 0
    means_f = W.reshape(P, T // MEAN_SPAN, MEAN_SPAN).mean(axis=2)
    means, dsal = encode_means(means_f, sal)
    if salient_coding == SALIENT_INT8 and sal.any():
        sal8, ws = encode_words_int8(W, sal)
        return pack(codes, means, sal, sc, m, d, dmin, dsal, G=G, bits=bits, sal8=sal8, wscale=ws)
    return pack(codes, means, sal, sc, m, d, dmin, dsal, G=G, bits=bits)


__all__ = [
    "FORMAT_VERSION", "FORMAT_VERSION_PLAIN", "format_version", "WORD_WEIGHTS", "MEAN_SPAN", "GROUP_SIZES",
    "DEFAULT_GROUP", "TYPE_MAQ2", "SALIENT_MEAN4",
    "SALIENT_INT8", "SALIENT_CODINGS", "PART_SALW", "PART_SALOFF", "encode_words_int8",
    "PART_WORDS", "PART_BITMAP", "PART_SCALES", "PART_ROWSCALE", "PART_SUFFIXES", "PART_HI", "PART_SUFFIXES_HI",
    "part_suffixes", "BITS", "TYPE_MAQ3", "TYPE_MAQ4", "TYPE_OF_BITS", "BITS_OF_TYPE",
    "KEY_VERSION", "KEY_TOOL_VERSION", "key_tensor_type", "key_group_size", "key_salient_coding",
    "n_words", "n_bitmap_bytes", "n_groups", "check_shape", "Layout", "bits_per_weight", "MAQTensor", "Unpacked",
    "pack", "unpack", "dequantize", "empty", "from_parts", "pack_bitmap", "unpack_bitmap", "salient_fraction",
    "encode_group_params", "decode_group_params", "encode_means", "quantize_rtn",
    "INCOHERENCE_NONE", "INCOHERENCE_HADAMARD", "INCOHERENCE_KINDS", "KEY_INCOHERENCE", "KEY_INCOHERENCE_SEED",
    "HADAMARD_BLOCK_MAX", "DEFAULT_INCOHERENCE_SEED", "ROTATED_KINDS", "is_rotated_tensor", "hadamard_block",
    "hadamard_signs", "rotate", "unrotate", "key_tensor_incoherence", "tensor_rotation",
]
