"""cffi build script (API mode) for the MAQ C kernels: ffibuilder.cdef + set_source, used by setup.py."""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(HERE, "csrc")

ffibuilder = FFI()
ffibuilder.cdef("const char *maq_compiled_paths(void);")
ffibuilder.set_source(
    "maq.runtime._maq_c",
    '#include "maq.h"\nconst char *maq_compiled_paths(void) { return "scalar"; }\n',
    include_dirs=[CSRC],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
