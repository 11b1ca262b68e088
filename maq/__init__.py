"""MAQ: memory-aligned 2/8-bit mixed-precision quantization of Llama-family models.

Public API:
    maq.MAQError   -- base class of every user-facing error (a ValueError)
    maq.Llama      -- llama-cpp-python shaped runtime (once the runtime lands)
"""
from maq.errors import FormatError, MAQError

__version__ = "0.1.0"

__all__ = ["MAQError", "FormatError", "__version__"]


def __getattr__(name: str):
    # Lazy so that `import maq` stays cheap and never needs the C extension.
    if name == "Llama":
        try:
            from maq.runtime.api import Llama  # noqa: WPS433
        except ImportError as exc:  # runtime API not built yet
            raise AttributeError(f"maq.Llama is not available: {exc}") from exc
        return Llama
    raise AttributeError(f"module 'maq' has no attribute {name!r}")
