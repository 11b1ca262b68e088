"""cffi build script (API mode) for the MAQ C kernels: ``ffibuilder`` is used by setup.py (``cffi_modules``).

What gets compiled: EVERY ``runtime/csrc/*.c`` file (globbed, so a new kernel or model file only needs to be
dropped into csrc/), into the extension module ``maq.runtime._maq_c``.

What Python sees (the cdef): ``runtime/csrc/maq.h`` plus every other ``runtime/csrc/*.h`` that carries the
marker line ``/* cdef */`` within its first 10 lines. Such a header must be plain C declarations that cffi
can parse once preprocessor lines are removed: ``#include``/``#ifndef``/``#endif``/include guards and the
``#ifdef __cplusplus`` / ``extern "C" {`` / ``}`` wrappers are stripped; ``#define NAME <integer>`` lines are
kept (cffi understands integer constants); no other macros, no inline function bodies.
Headers without the marker (e.g. ``maq_internal.h``) stay private to C.

Flags: -O3 -std=c11 -pthread -ffp-contract=off (no FMA contraction: all SIMD paths are bit-identical to the
scalar reference). SIMD paths are selected at run time (x86-64: target attributes + __builtin_cpu_supports),
so the build itself is portable: plain ``gcc`` on x86-64 or aarch64.
"""
import glob
import os
import re

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")
CDEF_MARKER = "/* cdef */"
_DEFINE_INT = re.compile(r"^\s*#\s*define\s+[A-Za-z_]\w*\s+(?:0x[0-9A-Fa-f]+|-?\d+)[uUlL]*\s*(?:/\*.*\*/)?\s*$")


def cdef_headers() -> list:
    """maq.h first, then every other csrc/*.h carrying the cdef marker near the top, sorted by name."""
    out = [os.path.join(CSRC, "maq.h")]
    for path in sorted(glob.glob(os.path.join(CSRC, "*.h"))):
        if os.path.basename(path) == "maq.h":
            continue
        with open(path, encoding="utf-8") as f:
            head = [next(f, "") for _ in range(10)]
        if any(CDEF_MARKER in line for line in head):
            out.append(path)
    return out


def header_to_cdef(text: str) -> str:
    """Strip what cffi's cdef cannot parse: preprocessor lines (keeping `#define NAME integer`) and the
    `extern "C"` wrapper of C++-compatible headers."""
    text = text.replace("\\\n", " ")          # join continued preprocessor lines
    lines = []
    cplusplus = 0                              # inside `#ifdef __cplusplus ... #endif`
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("#"):
            if re.match(r"#\s*if(def)?\s+(defined\s*\(?\s*)?__cplusplus", s):
                cplusplus += 1
            elif cplusplus and re.match(r"#\s*endif", s):
                cplusplus -= 1
            elif not cplusplus and _DEFINE_INT.match(line):
                lines.append(line)
            continue
        if cplusplus:
            continue                           # `extern "C" {` or `}`
        lines.append(line)
    return "\n".join(lines)


def build_cdef() -> str:
    parts = []
    for path in cdef_headers():
        with open(path, encoding="utf-8") as f:
            parts.append(header_to_cdef(f.read()))
    return "\n".join(parts)


SOURCES = sorted(glob.glob(os.path.join(CSRC, "*.c")))
HEADERS = cdef_headers()

ffibuilder = FFI()
ffibuilder.cdef(build_cdef())
ffibuilder.set_source(
    "maq.runtime._maq_c",
    "\n".join(f'#include "{os.path.basename(h)}"' for h in HEADERS) + "\n",
    sources=[os.path.relpath(s, os.path.dirname(HERE)) for s in SOURCES],
    include_dirs=[CSRC],
    extra_compile_args=["-O3", "-std=c11", "-pthread", "-ffp-contract=off", "-fno-strict-aliasing"],
    extra_link_args=["-pthread"],
    libraries=["m"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
