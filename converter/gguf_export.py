"""Write the output GGUF with ``gguf.GGUFWriter``, streaming one tensor at a time.

Every tensor is declared up front (name, shape, type, bytes), the header, metadata and tensor infos are written,
then tensor data follows in the declared order as the pipeline produces it; memory holds one block at a time.
The file is written as ``.<out>.<pid>.tmp`` in the output folder and renamed onto ``out`` only when complete;
on any error the temporary file is removed. An existing ``out`` is replaced only with ``force``.

A MAQ2 tensor ``W`` ([P, T] logical) is four GGUF tensors (``maq.runtime.format`` owns the layout):
``<name>`` I32 words ne=[T/16, P], ``<name>.bitmap`` I8 (the uint8 bytes) ne=[ceil(T/128), P],
``<name>.scales`` I8 (the uint8 bytes) ne=[2*ceil(T/G), P], ``<name>.rowscale`` F16 ne=[3, P];
plus metadata ``maq.tensor.<name>.type = "maq2"``, ``.group_size = G``, ``.salient_coding = "mean4"``.
MAQ3 / MAQ4 replace the bitmap by ``<name>.hi`` (I16 / I32, ne=[T/16, P]) and have no salient coding key.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from maq.errors import MAQError
from maq.runtime import format as fmt

log = logging.getLogger(__name__)

# Run metadata written by the converter (informational; the runtime needs only format.py's keys).
KEY_METHOD = "maq.method"                    # "maq" | "gptq" | "rtn" | "f32" | "f16"
KEY_ABLATION = "maq.ablation"                # "" | "no-grouping" | "no-mixed"
KEY_TOP_K = "maq.salient.top_k"              # int, -1 when selection is by fraction
KEY_SALIENT_FRAC = "maq.salient.fraction"    # requested fraction of salient words (float)
KEY_SALIENT_FEEDBACK = "maq.salient.feedback"  # bool: salient errors fed back into GPTQ
KEY_GROUP = "maq.group_size"                 # 2-bit scale group G
KEY_BLOCK = "maq.gptq.block_size"            # GPTQ column block B
KEY_DAMP = "maq.gptq.damp"                   # damping fraction of mean diag(H)
KEY_SCALE_SEARCH = "maq.scale_search"        # "minmax" | "clip"
KEY_NSAMPLES = "maq.calib.nsamples"
KEY_SEQLEN = "maq.calib.seqlen"
KEY_SEED = "maq.calib.seed"
KEY_CALIB_SHA256 = "maq.calib.sha256"        # sha256 of the calibration text (utf-8 bytes)
KEY_CALIB_NAME = "maq.calib.name"            # file name of the calibration text
KEY_BPW_LINEAR = "maq.bits_per_weight"       # honest bits/weight over all linear (block) tensors
KEY_SOURCE = "maq.source"                    # file name of the source model
KEY_ALLOC_COST = "maq.alloc_cost"           # --target-bpw's cost model: "rtn" | "gptq"
KEY_WORD_CHOICE = "maq.salient.word_choice"  # "all" | "error": salient words kept only where they lower the error
KEY_TARGET_BPW = "maq.target_bpw"            # --target-bpw budget (bits/weight over the linear tensors)


def key_choice(base: str) -> str:
    """Per linear tensor with --target-bpw: the chosen storage ("maq3/g64", "q8_0", ...)."""
    return f"maq.tensor.{base}.choice"


@dataclasses.dataclass
class TensorDecl:
    """One GGUF tensor to be written: numpy shape (row-major, GGUF ne reversed), numpy dtype, raw GGML type."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype
    raw_dtype: Any = None   # gguf.GGMLQuantizationType for byte-packed types (Q8_0), else None

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape)) * np.dtype(self.dtype).itemsize


def float_decl(name: str, shape: tuple[int, ...], kind: str) -> TensorDecl:
    """Declaration of a float tensor stored as kind "f32" | "f16" | "q8_0" (shape = logical [rows, cols])."""
    import gguf

    if kind == "f32":
        return TensorDecl(name, tuple(shape), np.dtype(np.float32))
    if kind == "f16":
        return TensorDecl(name, tuple(shape), np.dtype(np.float16))
    if kind == "q8_0":
        q = gguf.GGMLQuantizationType.Q8_0
        return TensorDecl(name, tuple(gguf.quant_shape_to_byte_shape(shape, q)), np.dtype(np.uint8), q)
    raise ValueError(f"unknown float storage {kind!r}")


def encode_float(a: np.ndarray, kind: str) -> np.ndarray:
    """float32 array -> the bytes/array to write for storage kind "f32" | "f16" | "q8_0"."""
    import gguf

    if kind == "f32":
        return np.ascontiguousarray(a, dtype=np.float32)
    if kind == "f16":
        return np.ascontiguousarray(a, dtype=np.float16)
    if kind == "q8_0":
        return gguf.quants.quantize(np.ascontiguousarray(a, dtype=np.float32), gguf.GGMLQuantizationType.Q8_0)
    raise ValueError(f"unknown float storage {kind!r}")


_SIGNED = {np.dtype(np.uint8): np.dtype(np.int8), np.dtype("<u2"): np.dtype("<i2")}


def q8_0_roundtrip(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 [P, T] -> (the Q8_0 bytes to write, the float32 [P, T] values they decode to)."""
    import gguf

    q = encode_float(a, "q8_0")
    return q, gguf.quants.dequantize(q, gguf.GGMLQuantizationType.Q8_0).reshape(np.shape(a))


def maq_decls(name: str, T: int, P: int, G: int, bits: int = 2, n_salient8: int = 0) -> list[TensorDecl]:
    """The GGUF tensors of a MAQ2 / MAQ3 / MAQ4 tensor (shapes from ``format.Layout``; six with the int8 salient
    coding of ``n_salient8`` words)."""
    lay = fmt.Layout(T, P, G, bits, n_salient8)
    out = []
    for suffix, (shape, dtype) in lay.part_specs().items():
        # gguf has no U8 / U16 tensor types: those parts are stored as I8 / I16 (same bytes)
        dt = _SIGNED.get(np.dtype(dtype), dtype)
        out.append(TensorDecl(name + suffix, tuple(shape), dt))
    return out


def maq_arrays(name: str, t: fmt.MAQTensor) -> list[tuple[str, np.ndarray]]:
    """(GGUF name, array) of every part of ``t``, in declaration order (uint8 parts viewed as int8)."""
    t.validate(name)
    out = []
    for suffix, arr in t.parts().items():
        a = np.ascontiguousarray(arr)
        if a.dtype in _SIGNED:
            a = a.view(_SIGNED[a.dtype])
        out.append((name + suffix, a))
    return out


def maq_tensor_metadata(name: str, G: int, bits: int = 2, n_salient8: int = 0) -> dict[str, tuple[Any, str]]:
    """Per-tensor metadata {key: (value, kind)} for MAQ tensor ``name`` (salient coding int8 when it holds
    ``n_salient8`` > 0 int8 salient words, else mean4)."""
    md = {fmt.key_tensor_type(name): (fmt.TYPE_OF_BITS[bits], "str"),
          fmt.key_group_size(name): (int(G), "u32")}
    if bits == 2:
        md[fmt.key_salient_coding(name)] = (fmt.SALIENT_INT8 if n_salient8 else fmt.SALIENT_MEAN4, "str")
    return md


def check_output(out: Path, force: bool) -> None:
    """Raise MAQError if ``out`` cannot be written (exists without force, folder missing or not writable)."""
    if out.exists() and out.is_dir():
        raise MAQError(f"{out}: is a directory; --out must be a file path")
    if out.exists() and not force:
        raise MAQError(f"{out}: already exists (use --force to replace it)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise MAQError(f"{out}: output folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise MAQError(f"{out}: output folder {parent} is not writable")


def tmp_path_for(out: Path, pid: int | None = None) -> Path:
    """The temporary file a conversion writes before renaming it onto ``out``: ``.<out name>.<pid>.tmp``."""
    return out.parent / f".{out.name}.{os.getpid() if pid is None else pid}.tmp"


def _pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (on this machine); unsure answers count as alive."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (OverflowError, ValueError):
        return False                  # not a possible pid
    except OSError:
        return True                   # EPERM: exists, someone else's
    return True


def remove_stale_tmp(out: Path) -> list[Path]:
    """Remove the temporary files of earlier conversions to ``out`` whose process is gone (killed with SIGKILL,
    a crash, a power cut); files of running conversions are kept. Returns the removed paths."""
    parent = out.parent if str(out.parent) else Path(".")
    pat = re.compile(re.escape(f".{out.name}.") + r"(\d{1,12})\.tmp")
    removed = []
    try:
        entries = list(parent.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = pat.fullmatch(p.name)
        if not m or int(m.group(1)) == os.getpid() or _pid_alive(int(m.group(1))):
            continue
        try:
            p.unlink()
        except OSError as exc:
            log.warning("%s: cannot remove the leftover of an earlier conversion: %s", p, exc.strerror or exc)
            continue
        log.info("removed %s, left by a conversion that no longer runs (pid %s)", p, m.group(1))
        removed.append(p)
    return removed


def _human(n: int) -> str:
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:.1f} {unit}"
    return f"{n} bytes"


def metadata_bytes(metadata: dict, decls: list[TensorDecl]) -> int:
    """Upper estimate of the GGUF header: metadata keys and values ({key: gguf.GGUFValue}) and tensor infos."""
    n = 24
    for key, v in metadata.items():
        n += len(key) + 16
        val = v.value
        if isinstance(val, (list, tuple)):
            n += 16 + sum(len(x.encode("utf-8", "surrogatepass")) + 8 if isinstance(x, str) else 8 for x in val)
        elif isinstance(val, str):
            n += len(val.encode("utf-8", "surrogatepass")) + 8
        else:
            n += 8
    return n + sum(len(d.name) + 160 for d in decls)   # tensor info, alignment padding, per-tensor maq.* keys


def check_space(out: Path, need: int) -> None:
    """Raise MAQError up front if ``need`` bytes cannot be written next to ``out`` (free space of its folder, the
    process's file size limit). An existing ``out`` stays until the new file is complete, so it does not count."""
    import shutil

    parent = out.parent if str(out.parent) else Path(".")
    try:
        free = shutil.disk_usage(parent).free
    except OSError:
        free = None
    if free is not None and need > free:
        raise MAQError(f"{out}: no space left on device: need {_human(need)}, have {_human(free)} in {parent}; "
                       f"nothing was written")
    try:
        import resource

        limit = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return
    if limit != resource.RLIM_INFINITY and need > limit:
        raise MAQError(f"{out}: file too large for the process's file size limit: need {_human(need)}, limit "
                       f"{_human(limit)}; nothing was written")


class StreamingGGUF:
    """Declare tensors, write header + metadata, then stream tensor data in declared order; rename at the end.

    with StreamingGGUF(out, force, metadata, decls) as g:
        g.write(name, array)   # for every declared tensor, in order
    """

    def __init__(self, out: Path, force: bool, metadata: dict, decls: list[TensorDecl]):
        self.out = Path(out)
        self.force = force
        self.metadata = metadata
        self.decls = list(decls)
        self.tmp = tmp_path_for(self.out)
        self._next = 0
        self._w = None

    def __enter__(self) -> "StreamingGGUF":
        import gguf

        check_output(self.out, self.force)
        names = [d.name for d in self.decls]
        if len(set(names)) != len(names):
            raise MAQError(f"{self.out}: duplicated tensor names in the plan")
        w = gguf.GGUFWriter(path=None, arch="llama")
        for key, v in self.metadata.items():
            if key == gguf.Keys.General.ARCHITECTURE:
                continue
            w.add_key_value(key, v.value, v.type, v.sub_type)
        for d in self.decls:
            w.add_tensor_info(d.name, d.shape, d.dtype, d.nbytes, raw_dtype=d.raw_dtype)
        try:
            w.write_header_to_file(path=self.tmp)
            w.write_kv_data_to_file()
            w.write_ti_data_to_file()
        except BaseException as exc:  # OSError, but also Ctrl-C: __exit__ is not called when __enter__ fails
            self._abort(w)
            if isinstance(exc, OSError):
                raise MAQError(self._write_error("cannot write the header", exc)) from exc
            raise
        self._w = w
        return self

    def write(self, name: str, arr: np.ndarray) -> None:
        """Write the data of the next declared tensor (must be ``name``, with the declared shape and dtype)."""
        if self._next >= len(self.decls):
            raise RuntimeError(f"tensor {name} written after the last declared tensor")
        d = self.decls[self._next]
        if d.name != name:
            raise RuntimeError(f"tensor {name} written out of order (expected {d.name})")
        if tuple(arr.shape) != d.shape or arr.dtype != d.dtype:
            raise RuntimeError(f"tensor {name}: got {arr.shape} {arr.dtype}, declared {d.shape} {d.dtype}")
        try:
            self._w.write_tensor_data(np.ascontiguousarray(arr))
        except OSError as exc:
            raise MAQError(self._write_error(f"cannot write tensor {name}", exc)) from exc
        self._next += 1

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:          # an error or Ctrl-C while the tensors were produced: nothing is kept
            self._abort(self._w)
            return
        if self._next != len(self.decls):
            self._abort(self._w)
            raise RuntimeError(f"{self.out}: only {self._next} of {len(self.decls)} tensors were written")
        try:
            self._finish()
        except BaseException as e:        # disk full at the last flush, Ctrl-C during fsync/rename, ...
            self._abort(self._w)
            if isinstance(e, OSError):
                raise MAQError(self._write_error("cannot finish the file", e)) from e
            raise

    def _finish(self) -> None:
        """Flush and fsync the temporary file, then rename it onto ``out`` (atomic on POSIX filesystems)."""
        w = self._w
        for f in w.fout or ():
            f.flush()                     # buffered padding: a full disk shows up here at the latest
            os.fsync(f.fileno())          # the data is on disk before the rename makes it visible as ``out``
        w.close()
        os.replace(self.tmp, self.out)
        self._w = None

    def _write_error(self, what: str, exc: OSError) -> str:
        """One line naming the output file, what failed and why (a full disk said plainly)."""
        if exc.errno == errno.ENOSPC:
            why = "no space left on device"
        elif exc.errno == errno.EFBIG:
            why = "file too large for this filesystem or the process's file size limit"
        else:
            why = exc.strerror or str(exc)
        return f"{self.out}: {what}: {why}; nothing was written" + (
            " (the existing file is unchanged)" if self.out.exists() else "")

    def _abort(self, w) -> None:
        """Close the writer and remove the temporary file; a second Ctrl-C cannot interrupt this."""
        prev = _block_sigint()
        try:
            if w is not None:
                try:
                    w.close()
                except OSError:
                    pass                  # the buffered tail could not be flushed: the file is removed anyway
            self._cleanup()
        finally:
            _restore_sigint(prev)
        self._w = None

    def _cleanup(self) -> None:
        try:
            self.tmp.unlink()
        except FileNotFoundError:
            pass


def _block_sigint():
    """Ignore SIGINT (main thread only) while the temporary file is removed; returns the previous handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None
    try:
        return signal.signal(signal.SIGINT, signal.SIG_IGN)
    except (ValueError, OSError):
        return None


def _restore_sigint(prev) -> None:
    import signal

    if prev is not None:
        signal.signal(signal.SIGINT, prev)


def gguf_value(value: Any, kind: str):
    """A gguf.GGUFValue from a Python value and a short kind: str, u32, i32, f32, bool."""
    from gguf import GGUFValue, GGUFValueType

    t = {"str": GGUFValueType.STRING, "u32": GGUFValueType.UINT32, "i32": GGUFValueType.INT32,
         "f32": GGUFValueType.FLOAT32, "bool": GGUFValueType.BOOL}[kind]
    return GGUFValue(value=value, type=t)
