#!/usr/bin/env bash
# Runs on the GPU machine, from the folder gpu-bench.sh produced: conformance + timings with our
# kernels, then cuBLAS FP16 through PyTorch on the same shapes, then the ratio table.
set -euo pipefail
cd "$(dirname "$0")"
export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"   # NVRTC needs the CUDA headers at run time
OUT="${OUT:-.}"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
./gpu-bench --json "$OUT/ours.json" | tee "$OUT/ours.md"
python3 cublas_bench.py --ours "$OUT/ours.json" --out "$OUT/results.md"
