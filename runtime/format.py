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

Bits per weight are counted honestly: every byte of every part x 8 / (P*T).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from maq.errors import FormatError

# --------------------------------------------------------------------------- constants
FORMAT_VERSION = 1
WORD_WEIGHTS = 16            # inputs per 32-bit word (one 128-bit SIMD register of int8)
WORDS_PER_BITMAP_BYTE = 8
MEAN_SPAN = 4                # a salient word holds 4 int8 means of 4 weights each
CODE_BITS = 2
CODE_MAX = (1 << CODE_BITS) - 1
GROUP_SIZES = (32, 64, 128)  # allowed 2-bit scale group sizes G (inputs)
DEFAULT_GROUP = 128
ROWSCALE_FIELDS = ("d", "dmin", "dsal")

TYPE_MAQ2 = "maq2"           # logical tensor type name recorded in GGUF metadata
SALIENT_MEAN4 = "mean4"      # the paper's salient coding

# GGUF part names: the words keep the llama.cpp tensor name, the other parts add a suffix.
PART_WORDS = ""
PART_BITMAP = ".bitmap"
PART_SCALES = ".scales"
PART_ROWSCALE = ".rowscale"
PART_SUFFIXES = (PART_WORDS, PART_BITMAP, PART_SCALES, PART_ROWSCALE)

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


def check_shape(T: int, P: int, G: int, what: str = "tensor") -> None:
    """Raise FormatError unless (T, P, G) is a valid MAQ2 shape."""
    if T <= 0 or P <= 0:
        raise FormatError(f"{what}: shape [P={P}, T={T}] must be positive")
    if T % WORD_WEIGHTS:
        raise FormatError(f"{what}: input dimension T={T} is not a multiple of {WORD_WEIGHTS}")
    if G not in GROUP_SIZES:
        raise FormatError(f"{what}: group size G={G}, expected one of {GROUP_SIZES}")


@dataclasses.dataclass(frozen=True)
class Layout:
    """Shapes and dtypes of the four parts of one MAQ2 tensor of logical shape [P, T]."""

    T: int
    P: int
    G: int = DEFAULT_GROUP

    def __post_init__(self) -> None:
        check_shape(self.T, self.P, self.G)

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

    def part_specs(self) -> dict[str, tuple[tuple[int, int], np.dtype]]:
        """{suffix: (shape, dtype)} for every part."""
        return {
            PART_WORDS: (self.words_shape, np.dtype("<i4")),
            PART_BITMAP: (self.bitmap_shape, np.dtype(np.uint8)),
            PART_SCALES: (self.scales_shape, np.dtype(np.uint8)),
            PART_ROWSCALE: (self.rowscale_shape, np.dtype("<f2")),
        }

    @property
    def nbytes(self) -> int:
        """Every byte of every part."""
        return sum(int(np.prod(s)) * dt.itemsize for s, dt in self.part_specs().values())

    @property
    def bits_per_weight(self) -> float:
        return self.nbytes * 8 / (self.P * self.T)


def bits_per_weight(T: int, P: int = 1, G: int = DEFAULT_GROUP) -> float:
    """Honest bits/weight of a MAQ2 tensor: all bytes of words, bitmap, scales and row scales x 8 / P*T."""
    return Layout(T, P, G).bits_per_weight


@dataclasses.dataclass
class MAQTensor:
    """The four stored parts of one MAQ2 tensor (see module docstring for their meaning).

    words    int32   [P, T/16]
    bitmap   uint8   [P, ceil(T/128)]
    scales   uint8   [P, 2*ceil(T/G)]   (first half sc as uint8, second half m as int8 bits)
    rowscale float16 [P, 3]             (d, dmin, dsal)
    """

    words: np.ndarray
    bitmap: np.ndarray
    scales: np.ndarray
    rowscale: np.ndarray
    T: int
    G: int = DEFAULT_GROUP

    @property
    def P(self) -> int:
        return int(self.words.shape[0])

    @property
    def layout(self) -> Layout:
        return Layout(self.T, self.P, self.G)

    def validate(self, what: str = "MAQ tensor") -> None:
        """Raise FormatError unless every part has the shape and dtype the layout demands."""
        if self.words.ndim != 2:
            raise FormatError(f"{what}: words must be 2-D [P, T/16], got shape {self.words.shape}")
        lay = self.layout
        parts = {PART_WORDS: self.words, PART_BITMAP: self.bitmap,
                 PART_SCALES: self.scales, PART_ROWSCALE: self.rowscale}
        for suffix, (shape, dtype) in lay.part_specs().items():
            arr = parts[suffix]
            name = suffix or "words"
            if tuple(arr.shape) != shape:
                raise FormatError(f"{what}: part {name} has shape {tuple(arr.shape)}, expected {shape}")
            if arr.dtype.kind != dtype.kind or arr.dtype.itemsize != dtype.itemsize:
                raise FormatError(f"{what}: part {name} has dtype {arr.dtype}, expected {dtype}")
        pad = n_bitmap_bytes(self.T) * 8 - n_words(self.T)
        if pad and np.any(self.bitmap[:, -1] >> (8 - pad)):
            raise FormatError(f"{what}: bitmap padding bits beyond word {n_words(self.T)} are set")

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.words, self.bitmap, self.scales, self.rowscale))

    @property
    def bits_per_weight(self) -> float:
        return self.nbytes * 8 / (self.P * self.T)

    def parts(self) -> dict[str, np.ndarray]:
        """{suffix: array} in the order they are written to GGUF."""
        return {PART_WORDS: self.words, PART_BITMAP: self.bitmap,
                PART_SCALES: self.scales, PART_ROWSCALE: self.rowscale}


@dataclasses.dataclass
class Unpacked:
    """The decoded contents of a MAQ2 tensor, one value per meaningful field.

    codes    uint8   [P, T]          2-bit codes 0..3 (0 where the word is salient)
    means    int8    [P, T/4]        int8 means (0 where the word is not salient)
    salient  bool    [P, T/16]       True for 8-bit salient words
    sc       uint8   [P, ceil(T/G)]  2-bit group scale codes
    m        int8    [P, ceil(T/G)]  2-bit group min codes
    d, dmin, dsal  float16 [P]       per-row scales
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
         G: int = DEFAULT_GROUP) -> MAQTensor:
    """Pack decoded fields (see ``Unpacked``) into the stored parts. Slow and obviously correct.

    codes uint8 [P, T] in 0..3; means int8 [P, T/4]; salient bool [P, T/16];
    sc uint8 [P, ng]; m int8 [P, ng]; d, dmin, dsal float [P] (stored as float16).
    For salient words only ``means`` is stored; for 2-bit words only ``codes``.
    """
    codes = np.asarray(codes)
    P, T = codes.shape
    check_shape(T, P, G, "pack")
    W = n_words(T)
    ng = n_groups(T, G)
    salient = np.asarray(salient, dtype=bool)
    means = np.asarray(means)
    if salient.shape != (P, W) or means.shape != (P, T // MEAN_SPAN):
        raise FormatError(f"pack: salient {salient.shape} / means {means.shape} do not match codes [P={P}, T={T}]")
    if np.any(codes > CODE_MAX):
        raise FormatError("pack: 2-bit codes must be in 0..3")
    if np.asarray(sc).shape != (P, ng) or np.asarray(m).shape != (P, ng):
        raise FormatError(f"pack: sc/m must have shape {(P, ng)}")

    words = np.zeros((P, W), dtype=np.uint32)
    for w in range(W):
        two_bit = np.zeros(P, dtype=np.uint32)
        for j in range(WORD_WEIGHTS):
            two_bit |= codes[:, w * WORD_WEIGHTS + j].astype(np.uint32) << np.uint32(2 * j)
        eight_bit = np.zeros(P, dtype=np.uint32)
        for k in range(MEAN_SPAN):
            byte = means[:, w * 4 + k].astype(np.int8).view(np.uint8).astype(np.uint32)
            eight_bit |= byte << np.uint32(8 * k)
        words[:, w] = np.where(salient[:, w], eight_bit, two_bit)

    scales = np.concatenate([np.asarray(sc, dtype=np.uint8),
                             np.asarray(m, dtype=np.int8).view(np.uint8)], axis=1)
    rowscale = np.stack([np.asarray(d), np.asarray(dmin), np.asarray(dsal)], axis=1).astype("<f2")
    t = MAQTensor(words=words.view("<i4"), bitmap=pack_bitmap(salient), scales=scales,
                  rowscale=rowscale, T=T, G=G)
    t.validate("pack")
    return t


def unpack(t: MAQTensor) -> Unpacked:
    """Inverse of ``pack``: stored parts -> decoded fields."""
    t.validate()
    P, T, G = t.P, t.T, t.G
    W = n_words(T)
    ng = n_groups(T, G)
    salient = unpack_bitmap(t.bitmap, W)
    u = t.words.view(np.uint32)
    codes = np.zeros((P, T), dtype=np.uint8)
    means = np.zeros((P, T // MEAN_SPAN), dtype=np.int8)
    for w in range(W):
        for j in range(WORD_WEIGHTS):
            codes[:, w * WORD_WEIGHTS + j] = np.where(salient[:, w], 0, (u[:, w] >> np.uint32(2 * j)) & 3)
        for k in range(MEAN_SPAN):
            byte = ((u[:, w] >> np.uint32(8 * k)) & 0xFF).astype(np.uint8).view(np.int8)
            means[:, w * 4 + k] = np.where(salient[:, w], byte, 0)
    rs = t.rowscale.astype(np.float16)
    return Unpacked(codes=codes, means=means, salient=salient,
                    sc=t.scales[:, :ng].astype(np.uint8), m=t.scales[:, ng:].view(np.int8).copy(),
                    d=rs[:, 0].copy(), dmin=rs[:, 1].copy(), dsal=rs[:, 2].copy(), G=G)


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
    eight_bit = f.dsal.astype(np.float32)[:, None] * np.repeat(f.means.astype(np.float32), MEAN_SPAN, axis=1)
    sal_inputs = np.repeat(f.salient, WORD_WEIGHTS, axis=1)        # [P, T]
    return np.where(sal_inputs, eight_bit, two_bit).astype(np.float32)


def empty(T: int, P: int, G: int = DEFAULT_GROUP) -> MAQTensor:
    """A zero MAQ2 tensor of the given shape (all words 2-bit, all scales zero)."""
    lay = Layout(T, P, G)
    specs = lay.part_specs()
    arrs = {k: np.zeros(s, dtype=dt) for k, (s, dt) in specs.items()}
    return MAQTensor(words=arrs[PART_WORDS], bitmap=arrs[PART_BITMAP], scales=arrs[PART_SCALES],
                     rowscale=arrs[PART_ROWSCALE], T=T, G=G)


def from_parts(parts: dict[str, np.ndarray], T: int, G: int, what: str = "MAQ tensor") -> MAQTensor:
    """Build a MAQTensor from ``{suffix: array}`` (e.g. read from GGUF), validating shapes and dtypes."""
    missing = [s or "words" for s in PART_SUFFIXES if s not in parts]
    if missing:
        raise FormatError(f"{what}: missing part(s) {missing}")
    P = parts[PART_WORDS].shape[0] if parts[PART_WORDS].ndim == 2 else -1
    check_shape(T, max(P, 1), G, what)
    t = MAQTensor(words=parts[PART_WORDS], bitmap=parts[PART_BITMAP], scales=parts[PART_SCALES],
                  rowscale=parts[PART_ROWSCALE], T=T, G=G)
    t.validate(what)
    return t


def salient_fraction(t: MAQTensor) -> float:
    """Fraction of words that are salient (8-bit)."""
    W = n_words(t.T)
    return float(unpack_bitmap(t.bitmap, W).mean()) if W else 0.0


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


def quantize_rtn(W: np.ndarray, salient: np.ndarray | None = None, G: int = DEFAULT_GROUP) -> MAQTensor:
    """Reference round-to-nearest MAQ2 quantization of float W [P, T] (no Hessian, no compensation).

    2-bit groups use min/max over their non-salient inputs; salient words ([P, T/16] bool) store the int8
    means of each 4 weights. Used by tests and as the converter's RTN baseline building block.
    """
    W = np.asarray(W, dtype=np.float32)
    P, T = W.shape
    check_shape(T, P, G, "quantize_rtn")
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
    sc, m, d, dmin = encode_group_params((hi - lo) / CODE_MAX, lo)
    scale, minv = decode_group_params(sc, m, d, dmin)
    g_of = np.arange(T) // G
    s_full, m_full = scale[:, g_of], minv[:, g_of]
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(s_full > 0, np.rint((W - m_full) / s_full), 0.0)
    codes = np.clip(q, 0, CODE_MAX).astype(np.uint8)
    codes[sal_in] = 0
    means_f = W.reshape(P, T // MEAN_SPAN, MEAN_SPAN).mean(axis=2)
    means, dsal = encode_means(means_f, sal)
    return pack(codes, means, sal, sc, m, d, dmin, dsal, G=G)


__all__ = [
    "FORMAT_VERSION", "WORD_WEIGHTS", "MEAN_SPAN", "GROUP_SIZES", "DEFAULT_GROUP", "TYPE_MAQ2", "SALIENT_MEAN4",
    "PART_WORDS", "PART_BITMAP", "PART_SCALES", "PART_ROWSCALE", "PART_SUFFIXES",
    "KEY_VERSION", "KEY_TOOL_VERSION", "key_tensor_type", "key_group_size", "key_salient_coding",
    "n_words", "n_bitmap_bytes", "n_groups", "check_shape", "Layout", "bits_per_weight", "MAQTensor", "Unpacked",
    "pack", "unpack", "dequantize", "empty", "from_parts", "pack_bitmap", "unpack_bitmap", "salient_fraction",
    "encode_group_params", "decode_group_params", "encode_means", "quantize_rtn",
]
