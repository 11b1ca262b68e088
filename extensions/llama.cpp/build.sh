#!/usr/bin/env bash
# Build llama.cpp with the MAQ2/MAQ3/MAQ4 extension (this folder) from the source vendored in the pinned
# llama-cpp-python sdist. Run through `bash scripts/build_llamacpp.sh --maq`. Prints the bin directory last.
#   $MAQ_CACHE/llama.cpp-maq/llama_cpp_python-$V   the patched sdist (pip install-able, docs/LLAMACPP.md)
#   $MAQ_CACHE/llama.cpp-maq/build                 the CMake build (incremental: unchanged files keep their mtime)
#   $MAQ_CACHE/llama.cpp-maq/bin                   llama-cli, llama-completion, llama-server, llama-perplexity,
#                                                  llama-bench, llama-quantize; maq-logits, maq-kernels (tests)
# MAQ_JOBS (default: nproc) sets the parallel jobs; MAQ_LLAMACPP_TARGETS overrides the target list.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
VERSION=0.3.36                       # the llama-cpp-python sdist hooks.patch applies to
CACHE=${MAQ_CACHE:-$HOME/.cache/maq}
DEST=$CACHE/llama.cpp-maq
SRC=$DEST/llama_cpp_python-$VERSION
TARGETS=${MAQ_LLAMACPP_TARGETS:-llama-cli llama-completion llama-server llama-perplexity llama-bench llama-quantize}
JOBS=${MAQ_JOBS:-$(nproc)}
command -v cmake >/dev/null || { echo "cmake is required (apt-get install cmake)" >&2; exit 1; }
mkdir -p "$DEST"

# the MAQ runtime's kernels (runtime/csrc: every file but the model and the benchmark helper), which the CPU_MAQ
# buffer type (src/ggml/src/ggml-cpu/maq-runtime.cpp) compiles into ggml-cpu as ggml-cpu/maq-runtime/
CSRC=$(cd "$HERE/../../runtime/csrc" && pwd)
runtime_files=$(cd "$CSRC" && ls -- *.c *.h | grep -v -x -e model.c -e model.h -e bench.c)
# the patched source: sdist + new files (src/) + runtime kernels + hooks.patch; stamped with their hash
stamp=$( { (cd "$HERE" && find src hooks.patch -type f | sort | xargs sha256sum);
           (cd "$CSRC" && echo "$runtime_files" | xargs sha256sum); } | sha256sum | cut -c1-16)
if [ "$(cat "$SRC/.maq-stamp" 2>/dev/null)" != "$stamp" ]; then
  tarball=$DEST/llama_cpp_python-$VERSION.tar.gz
  if [ ! -f "$tarball" ]; then
    echo "== downloading the llama-cpp-python==$VERSION sdist" >&2
    python3 -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$DEST" >&2
  fi
  tmp=$(mktemp -d "$DEST/src.XXXXXX")
  trap 'rm -rf "$tmp"' EXIT
  tar xzf "$tarball" -C "$tmp"
  new=$tmp/llama_cpp_python-$VERSION
  cp -r "$HERE"/src/. "$new/vendor/llama.cpp/"
  mkdir -p "$new/vendor/llama.cpp/ggml/src/ggml-cpu/maq-runtime"
  (cd "$CSRC" && echo "$runtime_files" | xargs cp -t "$new/vendor/llama.cpp/ggml/src/ggml-cpu/maq-runtime/")
  (cd "$new/vendor/llama.cpp" && patch -p1 --no-backup-if-mismatch -s < "$HERE/hooks.patch") >&2
  echo "$stamp" > "$new/.maq-stamp"
  if [ -d "$SRC" ]; then   # copy only what changed, so that the build stays incremental
    (cd "$new" && find . -type f) | while read -r f; do
      cmp -s "$new/$f" "$SRC/$f" || { mkdir -p "$(dirname "$SRC/$f")"; cp "$new/$f" "$SRC/$f"; }
    done
  else
    mv "$new" "$SRC"
  fi
  echo "== patched source: $SRC" >&2
fi

LL=$SRC/vendor/llama.cpp
launcher=()
command -v ccache >/dev/null && launcher=(-DCMAKE_C_COMPILER_LAUNCHER=ccache -DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
echo "== building ${TARGETS} ($JOBS jobs; cold, on 2 idle cores: the libraries alone ~2 min, the tools ~10, far more on a loaded machine)" >&2
cmake -S "$LL" -B "$DEST/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DBUILD_SHARED_LIBS=OFF \
  -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF "${launcher[@]}" >&2
# shellcheck disable=SC2086
cmake --build "$DEST/build" -j"$JOBS" --target $TARGETS >&2
mkdir -p "$DEST/bin"
for t in $TARGETS; do
  [ -x "$DEST/build/bin/$t" ] && cp "$DEST/build/bin/$t" "$DEST/bin/"
done
# maq-logits: the test's probe (every position's logits), linked against the static libraries just built
libs=$(find "$DEST/build" -name 'libllama.a' -o -name 'libggml*.a' | sort -r)
g++ -O2 -std=c++17 -I"$LL/include" -I"$LL/ggml/include" "$HERE/tools/maq-logits.cpp" -o "$DEST/bin/maq-logits" \
  -Wl,--start-group $libs -Wl,--end-group -fopenmp -lpthread -ldl >&2
gcc -O2 -I"$LL/ggml/include" "$HERE/tools/maq-kernels.c" -o "$DEST/bin/maq-kernels" \
  -Wl,--start-group $libs -Wl,--end-group -fopenmp -lpthread -ldl -lm -lstdc++ >&2
echo "llama-cpp-python $VERSION + MAQ extension $stamp" > "$DEST/VERSION"
echo "$DEST/bin"
