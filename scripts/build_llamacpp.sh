#!/usr/bin/env bash
# Build llama.cpp's tools (llama-quantize, llama-imatrix, llama-perplexity, llama-bench, test-backend-ops) from
# the source vendored in the PyPI sdist of llama-cpp-python, for side-by-side figures. Nothing is committed:
# the build lives in $MAQ_CACHE/llama.cpp (default ~/.cache/maq/llama.cpp). Prints the bin directory.
#   bash scripts/build_llamacpp.sh [VERSION]      (default: the newest sdist on PyPI)
#   bash scripts/build_llamacpp.sh --maq          llama.cpp with the MAQ2/MAQ3/MAQ4 extension (extensions/llama.cpp,
#                                                 pinned to llama-cpp-python 0.3.36) in $MAQ_CACHE/llama.cpp-maq:
#                                                 llama-cli, llama-completion, llama-server, llama-perplexity,
#                                                 llama-bench, llama-quantize, maq-logits; see docs/LLAMACPP.md
set -euo pipefail
CACHE=${MAQ_CACHE:-$HOME/.cache/maq}
if [ "${1:-}" = "--maq" ]; then
  shift
  exec bash "$(dirname "$0")/../extensions/llama.cpp/build.sh" "$@"
fi
DEST=$CACHE/llama.cpp
VERSION=${1:-}
mkdir -p "$DEST"
if [ -x "$DEST/bin/llama-perplexity" ] && [ -x "$DEST/bin/llama-quantize" ]; then
  echo "$DEST/bin"; exit 0
fi
command -v cmake >/dev/null || { echo "cmake is required (apt-get install cmake)" >&2; exit 1; }
tmp=$(mktemp -d "$DEST/build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
spec="llama-cpp-python${VERSION:+==$VERSION}"
echo "== downloading the $spec sdist" >&2
python3 -m pip download -q --no-deps --no-binary :all: "$spec" -d "$tmp" >&2
tar xzf "$tmp"/llama_cpp_python-*.tar.gz -C "$tmp"
src=$(echo "$tmp"/llama_cpp_python-*/vendor/llama.cpp)
echo "== building llama.cpp tools ($(nproc) jobs; takes ~10 min on 2 cores)" >&2
cmake -S "$src" -B "$tmp/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_BUILD_TESTS=ON \
  -DLLAMA_CURL=OFF -DLLAMA_BUILD_SERVER=OFF -DBUILD_SHARED_LIBS=OFF >&2
cmake --build "$tmp/build" -j"$(nproc)" --target llama-quantize llama-imatrix llama-perplexity llama-bench \
  test-backend-ops >&2
mkdir -p "$DEST/bin"
cp "$tmp"/build/bin/llama-quantize "$tmp"/build/bin/llama-imatrix "$tmp"/build/bin/llama-perplexity \
   "$tmp"/build/bin/llama-bench "$tmp"/build/bin/test-backend-ops "$DEST/bin/"
basename "$(echo "$tmp"/llama_cpp_python-*)" > "$DEST/VERSION"
echo "$DEST/bin"
