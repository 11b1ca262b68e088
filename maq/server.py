"""``python -m maq.server MODEL [flags]``: the same as ``maq serve`` (llama-cpp-python's ``python -m llama_cpp.server``
habit). The server itself is ``maq.runtime.server``."""
from __future__ import annotations

import sys

from maq.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
