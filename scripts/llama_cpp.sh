#!/usr/bin/env bash
# Build llama.cpp offline-friendly from the copy vendored in the llama-cpp-python sdist on PyPI,
# cached in ~/.cache/ternary/llama.cpp/<version>/ (override with TERNARY_LLAMA_CPP_DIR).
# A second run is a no-op. Prints three lines:
#   bin=<dir with llama-perplexity, llama-quantize, llama-tokenize, llama-completion, llama-bench>
#   convert=<path of convert_hf_to_gguf.py>
#   gguf_py=<path of gguf-py> (put it first on PYTHONPATH when running the converter; numpy is
#   installed with pip if missing)
# Usage: scripts/llama_cpp.sh [-jN] [--source-only] [--simd avx2] [--kernel-tests]
#   (default -j2; JOBS=N also works)
# --source-only: download and unpack the sources (vocabulary files for the tokenizer test) and stop.
# --simd avx2 (or LLAMA_CPP_SIMD=avx2): x86 only; a second build (build-avx2/) capped at what an
#   AVX2-only host such as AMD Zen 3 has (AVX, AVX2, FMA, F16C, BMI2; no AVX-512, no AVX-VNNI), so
#   that an AVX-512 host can compare both engines at the AVX2 level (`TERNARY_SIMD=avx2`).
# --kernel-tests: instead of the tools, build ggml's `test-backend-ops` (kernel timings, e.g.
#   `test-backend-ops perf -o MUL_MAT -b CPU -p "type_a=tq2_0"`) in a build directory of its own
#   (build-tests/ or build-avx2-tests/), so the tools' build is never reconfigured.
# AMX is turned off on x86: AMX instructions fault on some hosts here.
set -euo pipefail

VERSION="${LLAMA_CPP_PYTHON_VERSION:-0.3.36}"
JOBS="${JOBS:-2}"
usage() { echo "usage: $0 [-jN] [--source-only] [--simd avx2] [--kernel-tests]" >&2; exit 2; }
while (($#)); do
  case "$1" in
    -j*) JOBS="${1#-j}" ;;
    --source-only) SOURCE_ONLY=1 ;;
    --simd) (($# >= 2)) || usage; LLAMA_CPP_SIMD="$2"; shift ;;
    --kernel-tests) KERNEL_TESTS=1 ;;
    *) usage ;;
  esac
  shift
done
ROOT="${TERNARY_LLAMA_CPP_DIR:-$HOME/.cache/ternary/llama.cpp}/$VERSION"
SRC="$ROOT/llama_cpp_python-$VERSION/vendor/llama.cpp"
SIMD="${LLAMA_CPP_SIMD:-native}"
case "$SIMD" in
  native) BUILD="$ROOT/build" ;;
  avx2)
    case "$(uname -m)" in x86_64|i?86) ;; *) echo "--simd avx2 needs an x86 host" >&2; exit 2 ;; esac
    BUILD="$ROOT/build-avx2" ;;
  *) echo "LLAMA_CPP_SIMD must be native or avx2, not '$SIMD'" >&2; exit 2 ;;
esac
TARGETS=(llama-perplexity llama-quantize llama-tokenize llama-completion llama-bench)
TOOLS=ON
TESTS=OFF
if [[ -n "${KERNEL_TESTS:-}" ]]; then
  BUILD="$BUILD-tests"
  TARGETS=(test-backend-ops)
  TOOLS=OFF
  TESTS=ON
fi
BIN="$BUILD/bin"

built() {
  for t in "${TARGETS[@]}"; do [[ -x "$BIN/$t" ]] || return 1; done
}

report() {
  # gguf-py (used with the printed gguf_py path) needs numpy.
  python3 -c 'import numpy' 2>/dev/null || python3 -m pip install -q numpy >&2
  echo "bin=$BIN"
  echo "convert=$SRC/convert_hf_to_gguf.py"
  echo "gguf_py=$SRC/gguf-py"
}

if built && [[ -z "${SOURCE_ONLY:-}" ]]; then report; exit 0; fi

mkdir -p "$ROOT"
if [[ ! -f "$SRC/CMakeLists.txt" ]]; then
  if ! command -v cmake >/dev/null; then
    python3 -m pip install -q scikit-build-core cmake >&2
  fi
  if [[ ! -f "$ROOT/llama_cpp_python-$VERSION.tar.gz" ]]; then
    python3 -m pip download --no-deps --no-build-isolation --no-binary llama-cpp-python \
      "llama-cpp-python==$VERSION" -d "$ROOT" >&2
  fi
  tar -xzf "$ROOT/llama_cpp_python-$VERSION.tar.gz" -C "$ROOT"
fi
if [[ -n "${SOURCE_ONLY:-}" ]]; then echo "src=$SRC"; exit 0; fi
command -v cmake >/dev/null || python3 -m pip install -q cmake >&2

ARGS=(-DCMAKE_BUILD_TYPE=Release -DLLAMA_CURL=OFF "-DLLAMA_BUILD_TOOLS=$TOOLS"
      "-DLLAMA_BUILD_TESTS=$TESTS" -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF
      -DBUILD_SHARED_LIBS=OFF)
case "$(uname -m)" in
  x86_64|i?86)
    NOAMX="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
    ARGS+=(-DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF
           "-DCMAKE_C_FLAGS=$NOAMX" "-DCMAKE_CXX_FLAGS=$NOAMX")
    if [[ "$SIMD" == avx2 ]]; then
      ARGS+=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON
             -DGGML_BMI2=ON -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF
             -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF)
    fi
    ;;
esac
cmake -S "$SRC" -B "$BUILD" "${ARGS[@]}" >&2
cmake --build "$BUILD" --config Release -j "$JOBS" --target "${TARGETS[@]}" >&2
built || { echo "llama.cpp build finished but some of ${TARGETS[*]} are missing in $BIN" >&2; exit 1; }
report
