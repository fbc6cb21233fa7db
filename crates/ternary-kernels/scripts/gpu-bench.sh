#!/usr/bin/env bash
# Builds, on a machine without a GPU, the CUDA gpu-bench binary and packages it with the scripts
# that run on the GPU machine (CUDA 13.0, no cargo there):
#   crates/ternary-kernels/scripts/gpu-bench.sh [DEST]      (default DEST: target/gpu-bench-dist)
# then copy DEST to the GPU machine and run DEST/run_on_gpu.sh there.
set -euo pipefail
cd "$(dirname "$0")/../../.."
# Without nvcc here cudarc would assume the newest CUDA it knows; the GPU machine has 13.0.
export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
TARGET="${CARGO_TARGET_DIR:-target}"
DEST="${1:-target/gpu-bench-dist}"
cargo build --release -p ternary-kernels --features cuda --bin gpu-bench
mkdir -p "$DEST"
strip -o "$DEST/gpu-bench" "$TARGET/release/gpu-bench"
cp crates/ternary-kernels/scripts/cublas_bench.py crates/ternary-kernels/scripts/run_on_gpu.sh "$DEST/"
chmod +x "$DEST/gpu-bench" "$DEST/run_on_gpu.sh"
ls -la "$DEST"
