"""Calibration text -> nsamples random windows of seqlen tokens (fixed seed), and what identifies them.

The text is ``--calib FILE`` (plain UTF-8 text; ``.jsonl`` files contribute their "text" fields joined by blank
lines; ``.gz`` is decompressed) or the shipped C4 sample (``data/c4_en_sample.txt.gz``). It is tokenized once,
without special tokens, and windows start at ``numpy.random.default_rng(seed).integers(0, n - seqlen + 1)``.
The sha256 of the text's UTF-8 bytes goes into the output's metadata.
"""
from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import logging
import zlib
from pathlib import Path

import numpy as np

from maq.errors import MAQError

log = logging.getLogger(__name__)

DEFAULT_CALIB = Path(__file__).parent / "data" / "c4_en_sample.txt.gz"


@dataclasses.dataclass
class Calibration:
    """samples int64 [nsamples, seqlen]; sha256/name of the text; n_tokens in the whole text."""

    samples: np.ndarray
    sha256: str
    name: str
    n_tokens: int
    seed: int

    def metadata(self) -> dict[str, tuple]:
        from maq.converter import gguf_export as gx

        return {gx.KEY_NSAMPLES: (int(self.samples.shape[0]), "u32"),
                gx.KEY_SEQLEN: (int(self.samples.shape[1]), "u32"),
                gx.KEY_SEED: (int(self.seed), "u32"),
                gx.KEY_CALIB_SHA256: (self.sha256, "str"),
                gx.KEY_CALIB_NAME: (self.name, "str")}


def read_text(path: Path) -> str:
    """The calibration text of ``path`` (plain, .jsonl with "text" fields, optionally .gz)."""
    try:
        raw = path.read_bytes()
        if path.suffix == ".gz":
            raw = gzip.decompress(raw)
    except (OSError, EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise MAQError(f"{path}: cannot read calibration text: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MAQError(f"{path}: calibration text is not UTF-8 (byte 0x{raw[exc.start]:02x} at offset {exc.start}); "
                       f"expected plain text, .jsonl with a 'text' field, or either gzipped") from exc
    if "\x00" in text:
        raise MAQError(f"{path}: calibration file looks binary (NUL byte at offset {raw.index(bytes(1))}); "
                       f"expected plain UTF-8 text")
    stem = path.name[:-3] if path.suffix == ".gz" else path.name
    if stem.endswith(".jsonl"):
        parts = []
        for i, line in enumerate(text.splitlines()):
            if not line.strip():
                continue
            try:
                parts.append(json.loads(line)["text"] + "\n\n")
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise MAQError(f"{path}: line {i + 1} is not a JSON object with a 'text' field") from exc
        text = "".join(parts)
    if not text.strip():
        raise MAQError(f"{path}: calibration text is empty")
    return text


def sample_windows(tokens: np.ndarray, nsamples: int, seqlen: int, seed: int, what: str) -> np.ndarray:
    """nsamples windows [nsamples, seqlen] of ``tokens`` at seeded random starts."""
    n = int(tokens.shape[0])
    if n < seqlen:
        raise MAQError(f"{what}: calibration text has {n} tokens, shorter than one window of --seqlen {seqlen}")
    starts = np.random.default_rng(seed).integers(0, n - seqlen + 1, size=nsamples)
    return np.stack([tokens[s:s + seqlen] for s in starts]).astype(np.int64)


def load_calibration(src, opts) -> Calibration:
    """Tokenize the calibration text with the source model's tokenizer and draw the windows."""
    path = Path(opts.calib) if opts.calib is not None else DEFAULT_CALIB
    text = read_text(path)
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    seqlen = opts.seqlen
    if seqlen > src.params.n_ctx:
        log.warning("--seqlen %d capped at the model's context length %d", seqlen, src.params.n_ctx)
        seqlen = src.params.n_ctx
    tokens = np.asarray(src.encode(text), dtype=np.int64)
    if tokens.size and (tokens.max() >= src.params.n_vocab or tokens.min() < 0):
        raise MAQError(f"{src.path}: tokenizer produced ids outside the vocabulary of {src.params.n_vocab}")
    samples = sample_windows(tokens, opts.nsamples, seqlen, opts.seed, str(path))
    overlap = opts.nsamples * seqlen / max(tokens.size, 1)
    log.info("calibration: %s, %d tokens, %d windows of %d (sha256 %s...)%s", path.name, tokens.size,
             opts.nsamples, seqlen, digest[:12],
             f"; windows cover the text {overlap:.1f}x over" if overlap > 1 else "")
    return Calibration(samples=samples, sha256=digest, name=path.name, n_tokens=int(tokens.size), seed=opts.seed)
