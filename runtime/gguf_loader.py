"""Memory-mapped, validated loading of a Llama-family GGUF (standard types and MAQ2/3/4) for the runtime.

A small GGUF reader of our own (header, metadata, tensor infos; numpy views of one read-only ``np.memmap``):
the stock ``gguf.GGUFReader`` parses the 100k-entry tokenizer arrays one element at a time (about 2 s for
SmolLM2); here string arrays are read in one pass and numeric arrays with ``np.frombuffer``.

Every tensor is checked before any pointer can reach C: GGUF type, shape against the ``llama.*`` metadata, byte
size inside the file, alignment, and for MAQ tensors the four parts against each other (``format.from_parts``):
MAQ2 = words + bitmap + scales + rowscale, MAQ3 / MAQ4 = words + hi (I16 / I32) + scales + rowscale, by the
``maq.tensor.<name>.type`` key ("maq2", "maq3", "maq4"); a model may mix them with standard types per tensor.
Errors are ``FormatError`` / ``MAQError`` naming the file, the tensor and what was expected.

Weights stay in the mapped file (zero-copy, ``use_mmap=True``) or are read once into anonymous memory backed by
transparent huge pages (``use_mmap=False``; the default where the kernel offers huge pages and the file fits in
half of the available memory): with 4 KiB file pages every 4 KiB of weights costs a TLB miss (a nested page walk
under a hypervisor) and restarts the hardware prefetcher, which made SmolLM2 decode 20-40% slower than from 2 MiB
pages on the x86-64 test machine (docs/BENCHMARKS.md). Either way RSS is about the file size. The types kept as
they are: F32, F16, Q8_0 and MAQ2/3/4. Other ggml types that ``gguf.quants``
can dequantize (Q4_0, Q4_1, Q5_x, k-quants, BF16, ...) are dequantized **to F32 at load**: exact (a Q4_1 value
``d*q + m`` needs more mantissa than F16 has, and a Q8_0 requantization would change the reference model), at the
cost of 4 bytes per weight of RSS for those tensors.
"""
from __future__ import annotations

import dataclasses
import logging
import math
import mmap as _mmap
import os
import struct
from pathlib import Path
from typing import Any

import numpy as np

from maq.errors import FormatError, MAQError
from maq.runtime import format as fmt
from maq.runtime import kernels as K

log = logging.getLogger(__name__)

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
MAX_NAME = 64          # GGML_MAX_NAME: tensor names are shorter

# GGUF metadata value types
_VT_STRUCT = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_VT_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "<u1", 10: "<u8", 11: "<i8",
             12: "<f8"}
_VT_STRING, _VT_ARRAY = 8, 9

# ggml tensor type ids used here: the gguf package's GGMLQuantizationType owns them (and GGML_QUANT_SIZES the block
# sizes); ids newer than the installed gguf package are in LLAMACPP_EXTRA_TYPES below.
def _ggml_ids():
    from gguf.constants import GGMLQuantizationType as Q

    return tuple(int(getattr(Q, n)) for n in ("F32", "F16", "Q4_0", "Q4_1", "Q8_0", "I8", "I16", "I32"))


GGML_F32, GGML_F16, GGML_Q4_0, GGML_Q4_1, GGML_Q8_0, GGML_I8, GGML_I16, GGML_I32 = _ggml_ids()

# llama.cpp types the gguf package does not know: {id: (name, weights per block, bytes per block)}, from the ggml.h
# of the llama.cpp this project builds (llama-cpp-python 0.3.36: vendor/llama.cpp/ggml/include/ggml.h
# GGML_TYPE_Q2_0 = 42; ggml-common.h block_q2_0 = fp16 d + 64 2-bit codes = 18 bytes). gguf 0.19 knows ids up
# to 41 (Q1_0, the same in that ggml.h); tests/runtime/test_type_ids.py checks these do not collide with it.
GGML_Q2_0 = 42
LLAMACPP_EXTRA_TYPES = {GGML_Q2_0: ("Q2_0", 64, 18)}

# Logical weight kinds the C core reads directly: the C type ids of enum maq_type (csrc/maq.h, via kernels).
KIND_F32, KIND_F16, KIND_Q8_0 = K.MAQ_TYPE_F32, K.MAQ_TYPE_F16, K.MAQ_TYPE_Q8_0
KIND_MAQ2, KIND_MAQ3, KIND_MAQ4 = K.MAQ_TYPE_MAQ2, K.MAQ_TYPE_MAQ3, K.MAQ_TYPE_MAQ4
KIND_NAMES = {k: n.upper() for k, n in K.MAQ_TYPE_NAMES.items()}
KIND_OF_BITS = K.MAQ_TYPE_OF_BITS   # format code width -> kind
MAQ_KINDS = K.MAQ_TYPES
# GGUF types of the MAQ parts (the .hi part: I16 for MAQ3, I32 for MAQ4)
_MAQ_PART_GGUF = {fmt.PART_WORDS: GGML_I32, fmt.PART_BITMAP: GGML_I8, fmt.PART_SCALES: GGML_I8,
                  fmt.PART_ROWSCALE: GGML_F16, fmt.PART_SALW: GGML_I8, fmt.PART_SALOFF: GGML_I32}
_MAQ_HI_GGUF = {3: GGML_I16, 4: GGML_I32}
Q8_0_BLOCK, Q8_0_BYTES = K.Q8_0_BLOCK, K.Q8_0_BLOCK_BYTES


def _ggml_sizes() -> dict[int, tuple[str, int, int]]:
    """{ggml type id: (name, block size, bytes per block)} from the gguf package (the constants' owner)."""
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    return {int(t): (t.name, bs, ts) for t, (bs, ts) in GGML_QUANT_SIZES.items()
            for t in [GGMLQuantizationType(t)]}


_SIZES = _ggml_sizes()


def ggml_type_info(t: int) -> tuple[str, int, int] | None:
    """(name, weights per block, bytes per block) of ggml type id ``t``: the gguf package's, else llama.cpp's types
    newer than it (``LLAMACPP_EXTRA_TYPES``), else None."""
    return _SIZES.get(t) or LLAMACPP_EXTRA_TYPES.get(t)


def ggml_type_name(t: int) -> str:
    """ggml's name of type id ``t`` ("Q8_0"; llama.cpp types newer than gguf too: "Q2_0"), else "type<t>"."""
    return _SIZES.get(t, LLAMACPP_EXTRA_TYPES.get(t, (f"type{t}",)))[0]


# --------------------------------------------------------------------------- raw file
@dataclasses.dataclass
class TensorInfo:
    """One tensor as the file declares it. ``ne`` is GGUF order (ne[0] fastest); ``data`` a read-only view."""

    name: str
    ne: tuple[int, ...]
    ggml_type: int
    offset: int           # absolute byte offset in the file
    nbytes: int
    data: np.ndarray      # uint8 view [nbytes] of the memmap
    exact: bool = True    # False only in a tolerant read: type unknown / sized differently, nbytes from the offsets

    @property
    def type_name(self) -> str:
        return ggml_type_name(self.ggml_type)

    @property
    def shape(self) -> tuple[int, ...]:
        """numpy order (reversed ne)."""
        return tuple(reversed(self.ne))


def _show(name: str) -> str:
    """A key or tensor name from the file as it can appear in a one-line message (quoted when it is empty or holds
    characters that are not printable)."""
    return name if name and name.isprintable() and " " not in name else repr(name)[:80]


HUGE_PAGE = 2 << 20           # x86-64 / aarch64 (4 KiB base pages) PMD size: the alignment that lets THP map it
READ_CHUNK = 64 << 20


def huge_pages_available() -> bool:
    """True when the kernel offers transparent huge pages to a process that asks (madvise) or to all (always)."""
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled", encoding="ascii") as f:
            mode = f.read()
    except OSError:
        return False
    return "[always]" in mode or "[madvise]" in mode


def available_memory() -> int | None:
    """MemAvailable in bytes (Linux), else None."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def read_huge(path: Path, size: int) -> np.ndarray:
    """The first ``size`` bytes of ``path`` as a read-only uint8 array in anonymous memory, 2 MiB aligned and advised
    MADV_HUGEPAGE (where the platform has it), read with readinto: no file page is mapped into the process."""
    buf = _mmap.mmap(-1, size + HUGE_PAGE, flags=_mmap.MAP_PRIVATE | _mmap.MAP_ANONYMOUS)
    if hasattr(_mmap, "MADV_HUGEPAGE"):
        try:
            buf.madvise(_mmap.MADV_HUGEPAGE)
        except OSError:
            pass
    whole = np.frombuffer(buf, dtype=np.uint8)
    start = -whole.ctypes.data % HUGE_PAGE
    arr = whole[start:start + size]
    view = memoryview(arr)
    pos = 0
    try:
        with open(path, "rb", buffering=0) as f:
            while pos < size:
                n = f.readinto(view[pos:pos + READ_CHUNK])
                if not n:
                    raise FormatError(f"{path}: the file ended at byte {pos} while being read into memory "
                                      f"({size} bytes when it was parsed): was it changed meanwhile?")
                pos += n
    except OSError as exc:
        raise MAQError(f"{path}: cannot read ({exc.strerror or exc})") from None
    finally:
        view.release()
    arr.flags.writeable = False
    return arr


def resolve_use_mmap(use_mmap: bool | None, size: int) -> bool:
    """None (auto): read into huge pages when the kernel offers them and the file takes at most half of the
    available memory, else map the file."""
    if use_mmap is not None:
        return bool(use_mmap)
    avail = available_memory()
    return not (huge_pages_available() and avail is not None and 2 * size <= avail)


class GGUFFile:
    """A parsed GGUF file: ``metadata`` {key: value} and ``tensors`` {name: TensorInfo} over one memmap.

    Strings are str, string arrays list[str], numeric arrays numpy arrays, scalars Python numbers; ``types``
    {key: GGUF value type} keeps what the file declared. The header is validated as llama.cpp's gguf.cpp does
    (magic, version 2/3, counts that fit the file, non-empty unique UTF-8 keys, known value types, no nested arrays,
    ``general.alignment`` a u32 power of two, tensor names unique and < 64 bytes, 1..4 dimensions each >= 1,
    known ggml types, each tensor's data aligned, following the previous one, inside the file). Any failure is a
    ``FormatError`` naming the file, the key or tensor being read, and what was expected.

    ``tolerant=True`` (``maq inspect``, evaluation): a tensor whose ggml type id the gguf package does not know, or
    whose block size does not fit the file's offsets (ids get reused across versions), is kept with ``exact=False``
    and sized from the distance to the next tensor's data instead of refused; data offsets may come in any order.
    llama.cpp types newer than the gguf package (``LLAMACPP_EXTRA_TYPES``) are sized from that table.
    """

    def __init__(self, path: str | os.PathLike, tolerant: bool = False):
        self.path = Path(path)
        self.tolerant = tolerant
        if not self.path.exists():
            raise MAQError(f"{self.path}: no such file")
        if not self.path.is_file():
            raise MAQError(f"{self.path}: not a regular file")
        try:
            size = self.path.stat().st_size
            with open(self.path, "rb") as f:
                magic = f.read(4)
            if size >= 4 and magic != GGUF_MAGIC:
                raise FormatError(f"{self.path}: not a GGUF file (magic {magic!r}, expected b'GGUF')")
            if size < 24:
                raise FormatError(f"{self.path}: {size} bytes is too small for a GGUF file (header: 24 bytes)")
            self.mm = np.memmap(self.path, dtype=np.uint8, mode="r")
        except OSError as exc:
            raise MAQError(f"{self.path}: cannot read ({exc.strerror or exc})") from None
        self._buf = memoryview(self.mm)  # zero-copy byte view for struct parsing
        self._pos = 0
        self._what = "header"            # what is being read, for error messages
        self.metadata: dict[str, Any] = {}
        self.types: dict[str, int] = {}
        self.tensors: dict[str, TensorInfo] = {}
        try:
            self._parse()
        except (struct.error, IndexError):
            raise FormatError(f"{self.path}: {self._what}: truncated or corrupt file (it ends inside this "
                              f"field: byte {self._pos} of {len(self._buf)})") from None

    def into_memory(self) -> None:
        """Read the whole file into anonymous memory advised for transparent huge pages and point every tensor's
        ``data`` there, dropping the file mapping (see the module docstring for why). A file that shrank since it
        was parsed is a FormatError."""
        if not isinstance(self.mm, np.memmap):
            return
        arr = read_huge(self.path, len(self.mm))
        for t in self.tensors.values():
            t.data = arr[t.offset:t.offset + t.nbytes]
        old, self.mm = self.mm, arr
        self._buf = memoryview(arr)
        mm = getattr(old, "_mmap", None)
        del old
        if mm is not None:
            try:
                mm.close()
            except (BufferError, ValueError):   # a view of the old mapping is still alive: it goes with it
                pass

    def _fail(self, msg: str) -> FormatError:
        return FormatError(f"{self.path}: {self._what}: {msg}")

    # -- primitive readers
    def _unpack(self, f: str):
        v = struct.unpack_from(f, self._buf, self._pos)
        self._pos += struct.calcsize(f)
        return v[0]

    def _bytes(self, what: str) -> bytes:
        n = self._unpack("<Q")
        if n > len(self._buf) - self._pos:
            raise self._fail(f"{what} of {n} bytes at byte {self._pos} runs past the end of the file "
                             f"({len(self._buf)} bytes)")
        b = bytes(self._buf[self._pos:self._pos + n])
        self._pos += n
        return b

    def _string(self, what: str = "string") -> str:
        b = self._bytes(what)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail(f"{what} {b[:40]!r} is not valid UTF-8") from None

    def _value(self, vt: int, key: str):
        if vt in _VT_STRUCT:
            v = self._unpack(_VT_STRUCT[vt])
            return bool(v) if vt == 7 else v
        if vt == _VT_STRING:
            return self._string("string value")
        if vt == _VT_ARRAY:
            et = self._unpack("<I")
            n = self._unpack("<Q")
            left = len(self._buf) - self._pos
            if et in _VT_NUMPY:
                dt = np.dtype(_VT_NUMPY[et])
                if n > left // dt.itemsize:
                    raise self._fail(f"array of {n} x {dt.itemsize} bytes runs past the end of the file")
                end = self._pos + n * dt.itemsize
                arr = np.frombuffer(self._buf[self._pos:end], dtype=dt).copy()
                self._pos = end
                return arr.astype(bool) if et == 7 else arr
            if et == _VT_STRING:
                if n > left // 8:
                    raise self._fail(f"array of {n} strings runs past the end of the file")
                return self._string_array(n, key)
            if et == _VT_ARRAY:
                raise self._fail("arrays of arrays are not supported (llama.cpp refuses them too)")
            raise self._fail(f"unknown array element type {et} (expected 0..12)")
        raise self._fail(f"unknown value type {vt} (expected 0..12)")

    def _string_array(self, n: int, key: str) -> list[str]:
        """n length-prefixed strings, decoded from byte windows of at most 16 MiB (one copy per window, not per
        string, and never the whole file). Invalid UTF-8 is kept as surrogate escapes (byte-level vocabularies)."""
        buf, pos, out = self._buf, self._pos, []
        size = len(buf)
        win_start, win = pos, b""
        for i in range(n):
            if pos + 8 > size:
                self._pos = pos
                raise self._fail(f"string {i} of {n} starts past the end of the file")
            if pos + 8 > win_start + len(win):
                win_start, win = pos, bytes(buf[pos:min(size, pos + (16 << 20))])
            (ln,) = struct.unpack_from("<Q", win, pos - win_start)
            if ln > size - pos - 8:
                self._pos = pos
                raise self._fail(f"string {i} of {n} ({ln} bytes) runs past the end of the file")
            if pos + 8 + ln > win_start + len(win):
                win_start, win = pos, bytes(buf[pos:min(size, pos + 8 + max(ln, 16 << 20))])
            a = pos + 8 - win_start
            out.append(win[a:a + ln].decode("utf-8", errors="surrogateescape"))
            pos += 8 + ln
        self._pos = pos
        return out

    def _parse(self) -> None:
        if bytes(self._buf[:4]) != GGUF_MAGIC:
            raise FormatError(f"{self.path}: not a GGUF file (magic {bytes(self._buf[:4])!r}, expected b'GGUF')")
        self._pos = 4
        version = self._unpack("<I")
        if version not in (2, 3):
            raise FormatError(f"{self.path}: GGUF version {version} unsupported (expected 2 or 3, little-endian)")
        n_tensors = self._unpack("<Q")
        n_kv = self._unpack("<Q")
        left = len(self._buf) - self._pos
        # the smallest key/value is 13 bytes (empty key refused, 1-byte value), a tensor info 8+1+4+8+4+8 = 33
        if n_kv > left // 13 or n_tensors > left // 33:
            raise FormatError(f"{self.path}: header declares {n_kv} keys and {n_tensors} tensors, more than the "
                              f"{left} remaining bytes can hold (truncated or corrupt file)")
        self.version = version
        for i in range(n_kv):
            self._what = f"metadata key #{i}"
            key = self._string("key")
            if not key:
                raise self._fail("empty key")
            self._what = f"metadata key {_show(key)}"
            if key in self.metadata:
                raise self._fail("appears twice")
            vt = self._unpack("<I")
            self.metadata[key] = self._value(vt, key)
            self.types[key] = vt
        infos = []
        names: set[str] = set()
        for i in range(n_tensors):
            self._what = f"tensor info #{i}"
            name = self._string("tensor name")
            self._what = f"tensor {_show(name)}"
            if not name or len(name.encode()) >= MAX_NAME:
                raise self._fail(f"name of {len(name.encode())} bytes (expected 1..{MAX_NAME - 1})")
            if name in names:
                raise self._fail("appears twice")
            names.add(name)
            nd = self._unpack("<I")
            if not 1 <= nd <= 4:
                raise self._fail(f"{nd} dimensions (expected 1..4)")
            ne = tuple(self._unpack("<Q") for _ in range(nd))
            t = self._unpack("<I")
            off = self._unpack("<Q")
            infos.append((name, ne, t, off))
        self._what = "metadata general.alignment"
        align = self.metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if "general.alignment" in self.metadata and self.types["general.alignment"] != 4:
            raise self._fail(f"value type {self.types['general.alignment']}, expected 4 (u32)")
        if align <= 0 or align & (align - 1):
            raise self._fail(f"{align}, expected a power of two")
        self.alignment = align
        self.data_start = -(-self._pos // align) * align
        size = len(self._buf)
        if infos and self.data_start > size:
            self._what = "metadata general.alignment"
            raise self._fail(f"{align} puts the tensor data at byte {self.data_start}, past the end of the file "
                             f"({size} bytes)")
        if self.tolerant:
            self._tolerant_tensors(infos, size)
            self._what = "header"
            return
        expect_off, prev = 0, "the start of the data section"
        for name, ne, t, off in infos:
            self._what = f"tensor {_show(name)}"
            if t not in _SIZES:
                raise self._fail(f"unknown ggml type id {t}")
            tname, bs, ts = _SIZES[t]
            if any(d <= 0 or d >= 1 << 63 for d in ne):
                raise self._fail(f"bad shape ne={list(ne)} (every dimension must be 1..2^63-1)")
            n_el = math.prod(ne)
            if n_el >= 1 << 63:
                raise self._fail(f"shape ne={list(ne)} has {n_el} elements (more than 2^63-1)")
            if ne[0] % bs:
                raise self._fail(f"ne[0]={ne[0]} not a multiple of the {tname} block size {bs}")
            nbytes = n_el // bs * ts
            if off != expect_off:
                raise self._fail(f"data offset {off}, expected {expect_off}: the end of {prev}, padded to {align} "
                                 "bytes (each tensor's data follows the previous one's)")
            start = self.data_start + off
            if nbytes > size - min(start, size):
                raise self._fail(f"{nbytes} bytes of {tname} data at byte {start} run past the end of the file "
                                 f"({size} bytes): truncated file?")
            expect_off = off + -(-nbytes // align) * align
            prev = f"tensor {_show(name)} ({nbytes} bytes of {tname}, ne={list(ne)})"
            self.tensors[name] = TensorInfo(name, ne, t, start, nbytes, self.mm[start:start + nbytes])
        self._what = "header"

    def _tolerant_tensors(self, infos: list, size: int) -> None:
        """Tensor infos of a tolerant read: sizes from the type where it fits the offsets, else from the offsets."""
        align = self.alignment
        order = sorted(range(len(infos)), key=lambda i: infos[i][3])
        ends = {i: (self.data_start + infos[order[j + 1]][3] if j + 1 < len(order) else size)
                for j, i in enumerate(order)}
        for i, (name, ne, t, off) in enumerate(infos):
            self._what = f"tensor {_show(name)}"
            start = self.data_start + off
            if start > size:
                raise self._fail(f"data at byte {start} is past the end of the file ({size} bytes)")
            gap = ends[i] - start                 # the tensor's bytes plus alignment padding
            nbytes, exact = gap, False
            info = ggml_type_info(t)
            if info is not None:
                _, bs, ts = info
                n_el = math.prod(ne)
                want = n_el // bs * ts if n_el % bs == 0 else -1
                if 0 <= gap - want < align or (ends[i] == size and 0 <= gap - want):
                    nbytes, exact = want, True
            self.tensors[name] = TensorInfo(name, ne, t, start, nbytes, self.mm[start:start + nbytes], exact)

    def get(self, key: str, default=None):
        return self.metadata.get(key, default)

    def _bad(self, key: str, v, expected: str) -> FormatError:
        r = repr(v)
        return FormatError(f"{self.path}: metadata {key} = {r[:60] + '...' if len(r) > 60 else r}, "
                           f"expected {expected}")

    def require(self, key: str, types=(int,)):
        if key not in self.metadata:
            raise FormatError(f"{self.path}: metadata key {key} is missing")
        v = self.metadata[key]
        if not isinstance(v, types) or isinstance(v, bool) and bool not in types:
            raise self._bad(key, v, "/".join(t.__name__ for t in types))
        return v

    def get_int(self, key: str, default: int | None = None, lo: int = 1, hi: int = 2**31 - 1,
                required: bool = False) -> int | None:
        """An integer value in [lo, hi] (any GGUF integer type), ``default`` when absent."""
        if key not in self.metadata:
            if required:
                raise FormatError(f"{self.path}: metadata key {key} is missing")
            return default
        v = self.metadata[key]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise self._bad(key, v, f"an integer in {lo}..{hi}")
        return v

    def get_float(self, key: str, default: float | None = None, lo: float = -math.inf, hi: float = math.inf,
                  lo_open: bool = False) -> float | None:
        """A finite number in [lo, hi] (or (lo, hi] with ``lo_open``), ``default`` when absent."""
        if key not in self.metadata:
            return default
        v = self.metadata[key]
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v <= hi and \
            (v > lo if lo_open else v >= lo)
        if not ok:
            raise self._bad(key, v, f"a finite number in {'(' if lo_open else '['}{lo}, {hi}]")
        return float(v)

    def get_str(self, key: str, default: str | None = None) -> str | None:
        if key not in self.metadata:
            return default
        v = self.metadata[key]
        if not isinstance(v, str):
            raise self._bad(key, v, "a string")
        return v

    def view(self, info: TensorInfo, dtype, shape) -> np.ndarray:
        """The tensor's bytes as a read-only numpy array (zero-copy)."""
        return info.data.view(np.dtype(dtype)).reshape(shape)


# --------------------------------------------------------------------------- model config
@dataclasses.dataclass
class RopeConfig:
    """RoPE on adjacent pairs (2i, 2i+1) of the first ``dim`` dims of each head (llama.cpp's LLAMA convention)."""

    dim: int
    base: float
    scaling: str = "none"            # none | linear | llama3
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_context: int = 8192
    freq_factors: np.ndarray | None = None  # llama.cpp's rope_freqs.weight [dim/2]: theta_i /= factor_i

    def inv_freq(self) -> np.ndarray:
        """float32 [dim/2]: the angle per position of pair i (scaling applied), as transformers computes it."""
        inv = 1.0 / (self.base ** (np.arange(0, self.dim, 2, dtype=np.int64).astype(np.float32) / self.dim))
        inv = inv.astype(np.float32)
        if self.scaling == "linear":
            inv = inv / np.float32(self.factor)
        elif self.scaling == "llama3":
            low_wl = self.original_context / self.low_freq_factor
            high_wl = self.original_context / self.high_freq_factor
            wl = 2 * math.pi / inv
            scaled = np.where(wl > low_wl, inv / self.factor, inv)
            smooth = (self.original_context / wl - self.low_freq_factor) / (self.high_freq_factor
                                                                          - self.low_freq_factor)
            smoothed = (1 - smooth) * scaled / self.factor + smooth * scaled
            medium = ~(wl < high_wl) & ~(wl > low_wl)
            inv = np.where(medium, smoothed, scaled).astype(np.float32)
        if self.freq_factors is not None:
            inv = (inv / self.freq_factors.astype(np.float32)).astype(np.float32)
        return inv


@dataclasses.dataclass
class ModelConfig:
    n_layers: int
    dim: int
    hidden_dim: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    vocab_size: int
    context_length: int
    norm_eps: float
    rope: RopeConfig
    tied_output: bool = True

    @property
    def q_dim(self) -> int:
        return self.n_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.n_kv_heads * self.head_dim


# --------------------------------------------------------------------------- weights
@dataclasses.dataclass
class Weight:
    """One logical weight [P, T] in a form the C core reads.

    kind F32: data float32 [P, T]; F16: data uint16 [P, T]; Q8_0: data uint8 [P, T/32*34];
    MAQ2/3/4: ``maq`` (words int32 [P, T/16], bitmap (MAQ2) or hi (MAQ3 uint16 / MAQ4 int32 [P, T/16]),
    scales uint8, rowscale float16). Views of the mapped file unless ``copied`` (dequantized at load).
    """

    name: str
    kind: int
    P: int
    T: int
    data: np.ndarray | None = None
    maq: fmt.MAQTensor | None = None
    source_type: str = ""
    copied: bool = False
    rotation_seed: int | None = None   # stored rotated along its inputs (FORMAT.md section 10): holds W' = W Rᵀ
    _kernel: K.Weight | None = dataclasses.field(default=None, repr=False, compare=False)   # kernel_weight's

    @property
    def G(self) -> int:
        return self.maq.G if self.maq is not None else 0

    @property
    def nbytes(self) -> int:
        return self.maq.nbytes if self.maq is not None else int(self.data.nbytes)

    def dequantize(self) -> np.ndarray:
        """float32 [P, T]: the weight the model multiplies by (a rotated weight's stored values times R)."""
        W = self.stored()
        return W if self.rotation_seed is None else fmt.unrotate(W, self.rotation_seed)

    def stored(self) -> np.ndarray:
        """float32 [P, T] as stored (reference: format.dequantize for MAQ2/3/4, gguf.quants for ggml types)."""
        if self.kind in MAQ_KINDS:
            return fmt.dequantize(self.maq)
        if self.kind == KIND_F32:
            return np.asarray(self.data, dtype=np.float32)
        if self.kind == KIND_F16:
            return self.data.view(np.float16).astype(np.float32)
        from gguf.constants import GGMLQuantizationType
        from gguf.quants import dequantize
        return dequantize(np.asarray(self.data), GGMLQuantizationType.Q8_0).reshape(self.P, self.T).astype(np.float32)

    def kernel_weight(self) -> K.Weight:
        """The C descriptor of this weight (``kernels.Weight``: validated, zero-copy; keep it while C reads it).
        The one route from a loaded weight to a ``maq_weight`` (the model structs copy ``.c[0]``). Made once and
        kept: engines built on one loaded model share it (and its load-time panels, ``kernels.repack_r16``)."""
        if self._kernel is None:
            self._kernel = self._make_kernel_weight()
        return self._kernel

    def _make_kernel_weight(self) -> K.Weight:
        if self.kind in MAQ_KINDS:
            kw = K.Weight.from_maq(self.maq, name=self.name)
        elif self.kind == KIND_F32:
            kw = K.Weight.f32(self.data, name=self.name)
        elif self.kind == KIND_F16:
            kw = K.Weight.f16(self.data, name=self.name)
        elif self.kind == KIND_Q8_0:
            kw = K.Weight.q8_0(self.data, self.T, self.P, name=self.name)
        else:
            raise MAQError(f"internal: {self.name} has kind {self.kind}, which the C core does not read")
        if kw.type != self.kind:
            raise MAQError(f"internal: {self.name} kind {self.kind} does not match its parts ({kw.type_name})")
        return kw if self.rotation_seed is None else kw.rotate_inputs(self.rotation_seed)

    def row(self, p: int) -> np.ndarray:
        """float32 [T]: row p dequantized (embedding lookup in the reference), un-rotated if stored rotated."""
        r = self._stored_row(p)
        return r if self.rotation_seed is None else fmt.unrotate(r, self.rotation_seed)

    def _stored_row(self, p: int) -> np.ndarray:
        if self.kind in MAQ_KINDS:
            t = self.maq
            sub = fmt.MAQTensor(t.words[p:p + 1], None if t.bitmap is None else t.bitmap[p:p + 1],
                                t.scales[p:p + 1], t.rowscale[p:p + 1], T=self.T, G=self.G, bits=t.bits,
                                hi=None if t.hi is None else t.hi[p:p + 1])
            if t.salw is not None and t.saloff[p + 1] > t.saloff[p]:       # int8 salient words of row p
                a, b = int(t.saloff[p]), int(t.saloff[p + 1])
                sub.salw = t.salw[16 * a:16 * b]
                sub.saloff = np.array([0, b - a], dtype="<i4")
            return fmt.dequantize(sub)[0]
        if self.kind == KIND_F32:
            return np.asarray(self.data[p], dtype=np.float32)
        if self.kind == KIND_F16:
            return self.data[p].view(np.float16).astype(np.float32)
        blk = self.data[p].reshape(-1, Q8_0_BYTES)
        d = blk[:, :2].copy().view("<f2").astype(np.float32)
        q = blk[:, 2:].view(np.int8).astype(np.float32)
        return (d * q).reshape(-1)


@dataclasses.dataclass
class Layer:
    attn_norm: np.ndarray   # float32 [dim]
    wq: Weight              # [q_dim, dim]
    wk: Weight              # [kv_dim, dim]
    wv: Weight              # [kv_dim, dim]
    wo: Weight              # [dim, q_dim]
    ffn_norm: np.ndarray    # float32 [dim]
    w_gate: Weight          # [hidden, dim]
    w_up: Weight            # [hidden, dim]
    w_down: Weight          # [dim, hidden]


@dataclasses.dataclass
class LoadedModel:
    path: Path
    gguf: GGUFFile
    config: ModelConfig
    tok_embd: Weight        # [vocab, dim]
    layers: list[Layer]
    output_norm: np.ndarray  # float32 [dim]
    output: Weight          # [vocab, dim] (tok_embd when tied)

    @property
    def metadata(self) -> dict[str, Any]:
        return self.gguf.metadata

    def weights(self):
        yield self.tok_embd
        for L in self.layers:
            yield from (L.wq, L.wk, L.wv, L.wo, L.w_gate, L.w_up, L.w_down)
        if not self.config.tied_output:
            yield self.output

    def find_non_finite(self) -> str | None:
        """Name of the first weight or norm holding NaN/inf (F32/F16 values, Q8_0 block scales), else None. Reads
        every such tensor: for error messages only (MAQ row scales are checked at load)."""
        vectors = [("output_norm.weight", self.output_norm)] + [
            (f"blk.{i}.{n}.weight", getattr(L, n)) for i, L in enumerate(self.layers) for n in ("attn_norm",
                                                                                               "ffn_norm")]
        for name, v in vectors:
            if not np.all(np.isfinite(v)):
                return name
        for w in self.weights():
            if w.kind == KIND_F32:
                bad = not np.all(np.isfinite(w.data))
            elif w.kind == KIND_F16:
                bad = not np.all(np.isfinite(w.data.view(np.float16)))
            elif w.kind == KIND_Q8_0:
                bad = not np.all(np.isfinite(w.data.reshape(w.P, -1, Q8_0_BYTES)[:, :, :2].copy().view("<f2")))
            else:
                bad = False
            if bad:
                return w.name
        return None

    def summary(self) -> dict[str, Any]:
        kinds: dict[str, int] = {}
        for w in self.weights():
            key = KIND_NAMES[w.kind] + ("(from %s)" % w.source_type if w.copied else "")
            kinds[key] = kinds.get(key, 0) + 1
        return {"kinds": kinds, "copied_bytes": sum(w.nbytes for w in self.weights() if w.copied)}


LAYER_TENSORS = ("attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up",
                 "ffn_down")
OPTIONAL_TENSORS = ("rope_freqs.weight",)


class _Loader:
    def __init__(self, gf: GGUFFile, exact: bool = False, dequant: str = "f32"):
        self.f = gf
        self.where = str(gf.path)
        self.used: set[str] = set()
        self.exact = exact
        self.dequant = dequant

    def err(self, tensor: str, msg: str) -> FormatError:
        return FormatError(f"{self.where}: tensor {tensor}: {msg}")

    def info(self, name: str) -> TensorInfo:
        t = self.f.tensors.get(name)
        if t is None:
            hint = f" (llama.block_count = {self.f.get('llama.block_count')})" if name.startswith("blk.") else ""
            raise FormatError(f"{self.where}: tensor {name} is missing{hint}")
        self.used.add(name)
        return t

    def _check_align(self, t: TensorInfo, need: int) -> None:
        if t.offset % need:
            raise self.err(t.name, f"data at byte {t.offset} is not {need}-byte aligned")

    def vector(self, name: str, n: int) -> np.ndarray:
        t = self.info(name)
        if t.ne != (n,):
            raise self.err(name, f"shape ne={list(t.ne)}, expected [{n}] (llama.embedding_length)"
                           if n == self.f.get("llama.embedding_length") else f"shape ne={list(t.ne)}, expected [{n}]")
        if t.ggml_type == GGML_F32:
            self._check_align(t, 4)
            return self.f.view(t, "<f4", (n,))
        if t.ggml_type == GGML_F16:
            return self.f.view(t, "<f2", (n,)).astype(np.float32)
        raise self.err(name, f"type {t.type_name}, expected F32 (or F16) for a norm/vector")

    def weight(self, name: str, P: int, T: int, src: str = "llama.* metadata") -> Weight:
        """Tensor ``name`` as a [P, T] weight; exact mode: MAQ, Q8_0 and rotated weights as F32 of their values."""
        w = self._stored_weight(name, P, T, src)
        w.rotation_seed = fmt.tensor_rotation(self.f.metadata, name, self.where)
        return self._exact(w) if self.exact and (w.kind in MAQ_KINDS or w.kind == KIND_Q8_0 or
                                                 w.rotation_seed is not None) else w

    def _stored_weight(self, name: str, P: int, T: int, src: str) -> Weight:
        key = fmt.key_tensor_type(name)
        if key in self.f.metadata:
            v = self.f.metadata[key]
            if not isinstance(v, str) or v not in fmt.BITS_OF_TYPE:
                r = repr(v)
                raise FormatError(f"{self.where}: metadata {key} = {r[:60]}, expected one of "
                                  f"{', '.join(repr(t) for t in fmt.BITS_OF_TYPE)} (the logical types this runtime "
                                  "knows)")
            return self.maq_weight(name, P, T, src, bits=fmt.BITS_OF_TYPE[v])
        t = self.info(name)
        if t.ggml_type in (GGML_I8, GGML_I16, GGML_I32):
            raise self.err(name, f"type {t.type_name} is not a weight type (a MAQ part without its {key} "
                                 "metadata?)")
        if t.ne != (T, P):
            raise self.err(name, f"shape ne={list(t.ne)}, expected [{T}, {P}] ({src})")
        if t.ggml_type == GGML_F32:
            self._check_align(t, 4)
            return Weight(name, KIND_F32, P, T, self.f.view(t, "<f4", (P, T)), source_type="F32")
        if t.ggml_type == GGML_F16:
            self._check_align(t, 2)
            return Weight(name, KIND_F16, P, T, self.f.view(t, "<u2", (P, T)), source_type="F16")
        if t.ggml_type == GGML_Q8_0:
            self._check_align(t, 2)
            return Weight(name, KIND_Q8_0, P, T, self.f.view(t, np.uint8, (P, T // Q8_0_BLOCK * Q8_0_BYTES)),
                          source_type="Q8_0")
        return self.dequantized(t, P, T)

    @staticmethod
    def _exact(w: Weight) -> Weight:
        """The weight dequantized to F32 (exact mode: float products, no int8 activation rounding)."""
        return Weight(w.name, KIND_F32, w.P, w.T, np.ascontiguousarray(w.dequantize(), dtype=np.float32),
                      source_type=w.source_type, copied=True)

    def dequantized(self, t: TensorInfo, P: int, T: int) -> Weight:
        from gguf.constants import GGMLQuantizationType
        from gguf.quants import dequantize

        if t.ggml_type in (GGML_I8, GGML_I16, GGML_I32) or t.ggml_type not in _SIZES:
            raise self.err(t.name, f"type {t.type_name} is not a weight type (a MAQ part without its "
                                   f"{fmt.key_tensor_type(t.name)} metadata?)")
        qt = GGMLQuantizationType(t.ggml_type)
        try:
            w = dequantize(np.asarray(t.data).reshape(P, -1), qt).reshape(P, T).astype(np.float32)
        except NotImplementedError:
            raise self.err(t.name, f"type {t.type_name} cannot be read (supported: F32, F16, Q8_0, MAQ2/3/4 and "
                                   "what gguf.quants dequantizes)") from None
        if not np.all(np.isfinite(w)):
            raise self.err(t.name, f"{t.type_name} dequantizes to non-finite values")
        if self.dequant == "q8_0" and T % Q8_0_BLOCK == 0:
            from gguf.quants import quantize
            q = quantize(w, GGMLQuantizationType.Q8_0).reshape(P, T // Q8_0_BLOCK * Q8_0_BYTES)
            log.debug("%s: %s re-quantized to Q8_0 at load", t.name, t.type_name)
            return Weight(t.name, KIND_Q8_0, P, T, np.ascontiguousarray(q), source_type=t.type_name, copied=True)
        log.debug("%s: %s dequantized to F32 at load", t.name, t.type_name)
        return Weight(t.name, KIND_F32, P, T, np.ascontiguousarray(w), source_type=t.type_name, copied=True)

    def _n_salient8(self, name: str, P: int, T: int) -> int:
        """Int8 salient words of MAQ2 tensor ``name``: from its .salw part's length (checked: 16*N, 1 <= N <= P*T/16)."""
        t = self.info(name + fmt.PART_SALW)
        if len(t.ne) != 1 or t.ne[0] % fmt.WORD_WEIGHTS or not 0 < t.ne[0] // fmt.WORD_WEIGHTS <= P * (T // 16):
            raise self.err(t.name, f"shape ne={list(t.ne)}, expected [16*N] with 1 <= N <= {P * (T // 16)} "
                                   "(salient words of the tensor)")
        return t.ne[0] // fmt.WORD_WEIGHTS

    def maq_weight(self, name: str, P: int, T: int, src: str = "llama.* metadata", bits: int = 2) -> Weight:
        """A MAQ2 / MAQ3 / MAQ4 (``bits`` 2 / 3 / 4) tensor: its four parts checked against each other, the metadata
        and the model's dimensions, then handed over as views of the mapped file."""
        md = self.f.metadata
        tname = fmt.TYPE_OF_BITS[bits].upper()
        gkey = fmt.key_group_size(name)
        G = md.get(gkey, fmt.DEFAULT_GROUP)
        coding = self.f.get_str(fmt.key_salient_coding(name), fmt.SALIENT_MEAN4)
        if coding not in (fmt.SALIENT_CODINGS if bits == 2 else (fmt.SALIENT_MEAN4,)):
            raise FormatError(f"{self.where}: metadata {fmt.key_salient_coding(name)} = {coding!r}, expected "
                              + " or ".join(repr(c) for c in (fmt.SALIENT_CODINGS if bits == 2 else
                                                               (fmt.SALIENT_MEAN4,))))
        if isinstance(G, bool) or not isinstance(G, int) or G not in fmt.GROUP_SIZES:
            raise FormatError(f"{self.where}: metadata {gkey} = {G!r}, expected one of {fmt.GROUP_SIZES}")
        g_src = f"{gkey} = {G}" if gkey in md else f"{gkey} missing: default {G}"
        if T % fmt.WORD_WEIGHTS:
            raise self.err(name, f"{tname} needs the input dimension T={T} to be a multiple of {fmt.WORD_WEIGHTS}")
        n8 = self._n_salient8(name, P, T) if coding == fmt.SALIENT_INT8 else 0
        lay = fmt.Layout(T, P, G, bits, n8)
        parts = {}
        for suffix, (shape, dtype) in lay.part_specs().items():
            pname = name + suffix
            t = self.info(pname)
            want = _MAQ_HI_GGUF[bits] if suffix == fmt.PART_HI else _MAQ_PART_GGUF[suffix]
            if t.ggml_type != want:
                raise self.err(pname, f"type {t.type_name}, expected {ggml_type_name(want)} ({tname} part)")
            want_ne = tuple(reversed(shape))
            if t.ne != want_ne:
                raise self.err(pname, f"shape ne={list(t.ne)}, expected {list(want_ne)} for {tname} "
                                      f"[P={P}, T={T}] ({src}), G={G} ({g_src})")
            self._check_align(t, dtype.itemsize)
            parts[suffix] = self.f.view(t, dtype, shape)
        other = fmt.PART_HI if bits == 2 else fmt.PART_BITMAP       # the other members' part: not ours
        if name + other in self.f.tensors:
            raise self.err(name + other, f"is a part of {'MAQ3/MAQ4' if bits == 2 else 'MAQ2'} tensors, but "
                                         f"{fmt.key_tensor_type(name)} = {fmt.TYPE_OF_BITS[bits]!r}")
        for extra in (fmt.PART_SALW, fmt.PART_SALOFF):
            if not n8 and name + extra in self.f.tensors:
                raise self.err(name + extra, f"is a part of int8 salient coding, but "
                                             f"{fmt.key_salient_coding(name)} = {coding!r}")
        mt = fmt.from_parts(parts, T, G, what=f"{self.where}: tensor {name}", bits=bits, salient_coding=coding)
        rs = mt.rowscale.view(np.float16)
        if not np.all(np.isfinite(rs)):
            raise self.err(name + fmt.PART_ROWSCALE, "row scales contain inf/nan")
        return Weight(name, KIND_OF_BITS[bits], P, T, maq=mt, source_type=tname)


def _config(gf: GGUFFile) -> ModelConfig:
    """The model's dimensions from its ``llama.*`` metadata, every value type- and range-checked."""
    where = str(gf.path)
    if "general.architecture" not in gf.metadata:
        raise MAQError(f"{where}: metadata general.architecture is missing (not a model file?)")
    arch = gf.metadata["general.architecture"]
    if not isinstance(arch, str) or arch != "llama":
        r = repr(arch)
        raise MAQError(f"{where}: general.architecture = {r[:40]}; only 'llama' models are supported")
    version = gf.get_int(fmt.KEY_VERSION, None, lo=1, hi=fmt.FORMAT_VERSION)   # a newer (or broken) format: refuse
    if version is not None and version < fmt.FORMAT_VERSION and gf.metadata.get(fmt.KEY_INCOHERENCE, "none") != "none":
        raise FormatError(f"{where}: metadata {fmt.KEY_INCOHERENCE} needs {fmt.KEY_VERSION} >= {fmt.FORMAT_VERSION} "
                          f"(the file says {version})")
    a = "llama."
    n_layers = gf.get_int(a + "block_count", required=True)
    dim = gf.get_int(a + "embedding_length", required=True)
    hidden = gf.get_int(a + "feed_forward_length", required=True)
    n_heads = gf.get_int(a + "attention.head_count", required=True)
    n_kv = gf.get_int(a + "attention.head_count_kv", n_heads)
    if n_heads % n_kv:
        raise FormatError(f"{where}: metadata {a}attention.head_count_kv = {n_kv}, expected a divisor of "
                          f"head_count {n_heads}")
    head_dim = gf.get_int(a + "attention.key_length", dim // n_heads or 1)
    if gf.get_int(a + "attention.value_length", head_dim) != head_dim:
        raise FormatError(f"{where}: metadata {a}attention.value_length differs from key_length {head_dim} "
                          "(unsupported)")
    if head_dim % 2:
        src = f"{a}attention.key_length" if a + "attention.key_length" in gf.metadata else \
            f"{a}embedding_length {dim} / {a}attention.head_count {n_heads}"
        raise FormatError(f"{where}: head dimension {head_dim} ({src}) must be even for RoPE")
    tokens = gf.get("tokenizer.ggml.tokens")
    vocab = gf.get_int(a + "vocab_size", None)
    if vocab is None and isinstance(tokens, list):
        vocab = len(tokens)
    emb = gf.tensors.get("token_embd.weight")
    if vocab is None and emb is not None and len(emb.ne) == 2:
        vocab = emb.ne[1]
    if vocab is None:
        raise FormatError(f"{where}: vocabulary size unknown (no llama.vocab_size, no tokenizer.ggml.tokens)")
    ctx = gf.get_int(a + "context_length", 2048)
    eps = gf.get_float(a + "attention.layer_norm_rms_epsilon", 1e-5, lo=0.0, hi=1.0)
    rope_dim = gf.get_int(a + "rope.dimension_count", head_dim, hi=head_dim)
    if rope_dim % 2:
        raise FormatError(f"{where}: metadata {a}rope.dimension_count = {rope_dim}, expected even and <= head "
                          f"dim {head_dim}")
    rope = RopeConfig(dim=rope_dim, base=gf.get_float(a + "rope.freq_base", 10000.0, lo=0.0, lo_open=True))
    stype = gf.get_str(a + "rope.scaling.type", "none")
    raw_factor = gf.get(a + "rope.scaling.factor")
    if type(raw_factor) in (int, float) and raw_factor == 0:    # llama.cpp writes 0 for "no scaling"
        factor = 1.0
    else:
        factor = gf.get_float(a + "rope.scaling.factor", 1.0, lo=0.0, lo_open=True)
    if stype == "none" or factor == 1.0 and stype == "linear":
        pass
    elif stype == "linear":
        rope.scaling, rope.factor = "linear", factor
    elif stype == "llama3":
        rope.scaling, rope.factor = "llama3", factor
        rope.low_freq_factor = gf.get_float(a + "rope.scaling.low_freq_factor", 1.0, lo=0.0, lo_open=True)
        rope.high_freq_factor = gf.get_float(a + "rope.scaling.high_freq_factor", 4.0, lo=0.0, lo_open=True)
        if rope.high_freq_factor <= rope.low_freq_factor:
            raise FormatError(f"{where}: metadata {a}rope.scaling.high_freq_factor = {rope.high_freq_factor}, "
                              f"expected > low_freq_factor {rope.low_freq_factor}")
        rope.original_context = gf.get_int(a + "rope.scaling.original_context_length", 8192)
    else:
        raise MAQError(f"{where}: metadata {a}rope.scaling.type = {stype!r} unsupported (none, linear, llama3; "
                       "llama3 files from llama.cpp carry rope_freqs.weight instead)")
    tied = "output.weight" not in gf.tensors
    return ModelConfig(n_layers=n_layers, dim=dim, hidden_dim=hidden, n_heads=n_heads, n_kv_heads=n_kv,
                       head_dim=head_dim, vocab_size=vocab, context_length=ctx, norm_eps=eps, rope=rope,
                       tied_output=tied)


DEQUANT_AUTO_LIMIT = 4 << 30   # bytes of F32 copies above which dequant="auto" re-quantizes to Q8_0


def load(path: str | os.PathLike, exact: bool = False, dequant: str = "auto",
         use_mmap: bool | None = None) -> LoadedModel:
    """Open, validate and map a llama GGUF. Raises MAQError/FormatError naming file, tensor and expectation.

    ``exact``: dequantize every weight that is not F32/F16 (Q8_0 and MAQ2/3/4 included) to F32 at load, so every
    product is computed in float: the model exactly as its dequantized weights define it (the "reference"
    numerics of the paper's evaluation), at the cost of speed and 4 bytes per weight. By default Q8_0 and MAQ
    stay in the mapped file and the kernels round activations to int8 (as llama.cpp does).

    ``dequant``: what ggml types the kernels do not read (Q4_0, Q4_1, k-quants, ...) become at load: "f32" (exact,
    4 bytes/weight), "q8_0" (re-quantized, ~1.06 bytes/weight, not exact), or "auto" = f32 unless those copies
    would exceed 4 GiB (SmolLM2's Q4_1 linears: 425 MB, so F32)."""
    if dequant not in ("auto", "f32", "q8_0"):
        raise MAQError(f"dequant={dequant!r}: expected auto, f32 or q8_0")
    gf = GGUFFile(path)
    cfg = _config(gf)
    if not resolve_use_mmap(use_mmap, len(gf.mm)):
        log.info("%s: reading %.1f MB into huge-page memory (use_mmap=True maps the file instead)", gf.path,
                 len(gf.mm) / 1e6)
        gf.into_memory()
    if dequant == "auto":
        native = (GGML_F32, GGML_F16, GGML_Q8_0, GGML_I8, GGML_I16, GGML_I32)
        f32_bytes = sum(4 * math.prod(t.ne) for t in gf.tensors.values() if t.ggml_type not in native)
        dequant = "q8_0" if f32_bytes > DEQUANT_AUTO_LIMIT and not exact else "f32"
        if dequant == "q8_0":
            log.warning("%s: %.1f GB of weights in types the kernels do not read; re-quantizing them to Q8_0 at "
                        "load (dequant='f32' keeps them exact)", gf.path, f32_bytes / 1e9)
    ld = _Loader(gf, exact=exact, dequant=dequant)
    D, H, Q, KV = cfg.dim, cfg.hidden_dim, cfg.q_dim, cfg.kv_dim
    if "rope_freqs.weight" in gf.tensors:
        ff = np.array(ld.vector("rope_freqs.weight", cfg.rope.dim // 2), dtype=np.float32)
        if not np.all(np.isfinite(ff) & (ff > 0)):
            raise FormatError(f"{gf.path}: tensor rope_freqs.weight: expected finite positive factors")
        cfg.rope.freq_factors = ff
    with np.errstate(all="ignore"):
        inv = cfg.rope.inv_freq()
    if not np.all(np.isfinite(inv)):
        raise FormatError(f"{gf.path}: RoPE angles overflow float32 (llama.rope.freq_base = {cfg.rope.base}, "
                          "llama.rope.scaling.*, rope_freqs.weight): expected finite frequencies")
    # where each dimension comes from, for shape errors: [T, P] = [inputs, outputs]
    sD, sH, sV = "llama.embedding_length", "llama.feed_forward_length", "llama.vocab_size"
    hd = "llama.attention.key_length" if "llama.attention.key_length" in gf.metadata else \
        "llama.embedding_length / head_count"
    sQ, sKV = f"llama.attention.head_count x {hd}", f"llama.attention.head_count_kv x {hd}"
    tok = ld.weight("token_embd.weight", cfg.vocab_size, D, f"[{sD}, {sV}]")
    layers = []
    for i in range(cfg.n_layers):
        b = f"blk.{i}."
        layers.append(Layer(
            attn_norm=ld.vector(b + "attn_norm.weight", D),
            wq=ld.weight(b + "attn_q.weight", Q, D, f"[{sD}, {sQ}]"),
            wk=ld.weight(b + "attn_k.weight", KV, D, f"[{sD}, {sKV}]"),
            wv=ld.weight(b + "attn_v.weight", KV, D, f"[{sD}, {sKV}]"),
            wo=ld.weight(b + "attn_output.weight", D, Q, f"[{sQ}, {sD}]"),
            ffn_norm=ld.vector(b + "ffn_norm.weight", D),
            w_gate=ld.weight(b + "ffn_gate.weight", H, D, f"[{sD}, {sH}]"),
            w_up=ld.weight(b + "ffn_up.weight", H, D, f"[{sD}, {sH}]"),
            w_down=ld.weight(b + "ffn_down.weight", D, H, f"[{sH}, {sD}]")))
    out_norm = ld.vector("output_norm.weight", D)
    out = tok if cfg.tied_output else ld.weight("output.weight", cfg.vocab_size, D, f"[{sD}, {sV}]")
    extra = sorted(set(gf.tensors) - ld.used)
    if extra:
        log.warning("%s: ignoring %d unused tensor(s): %s", gf.path, len(extra), ", ".join(extra[:5]))
    return LoadedModel(path=gf.path, gguf=gf, config=cfg, tok_embd=tok, layers=layers, output_norm=out_norm,
                       output=out)


__all__ = ["GGUFFile", "TensorInfo", "ModelConfig", "RopeConfig", "Weight", "Layer", "LoadedModel", "load",
           "KIND_F32", "KIND_F16", "KIND_Q8_0", "KIND_MAQ2", "KIND_MAQ3", "KIND_MAQ4", "KIND_OF_BITS", "MAQ_KINDS",
           "GGML_Q2_0", "LLAMACPP_EXTRA_TYPES", "ggml_type_info", "ggml_type_name"]
