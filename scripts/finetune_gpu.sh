#!/usr/bin/env bash
# Fine-tuning recovery (`ternary finetune`, docs/accuracy.md §8) on a CUDA GPU, for when one is
# lent. The GPU machine has CUDA 13 but no cargo and no network, so the work is split:
#
#   scripts/finetune_gpu.sh prepare [STAGE]   here: build `ternary` with the `cuda` feature, stage
#                                             it with the teacher, training and evaluation text
#   scripts/finetune_gpu.sh smoke   [STAGE]   there: tiny fixture model, CPU vs CUDA, a few steps
#   scripts/finetune_gpu.sh run     [STAGE]   there: convert the student, fine-tune on CUDA for a
#                                             fixed wall-clock budget, write the curve
#
# STAGE defaults to .gpu (ignored by git through .git/info/exclude). `prepare` compresses the
# binaries and splits the teacher
# into STAGE/p1 and STAGE/p2 so that no single transfer to the GPU machine exceeds 64 MiB: carry
# STAGE/bin and STAGE/p1 with the first call (smoke), STAGE/p2 and STAGE/data with the second (run).
# The device tool replaces the checkout's carried folders at each call, so `smoke` keeps bin and
# p1 in STASH (default ~/.ternary-gpu-stash) and `run` takes them from there.
#
# `prepare` with GPU_BENCH=1 also stages the kernels' gpu-bench (conformance and timings on
# CUDA), which `smoke` then runs for at most GPU_BENCH_SECONDS (default 90).
# `run` reads these variables: BUDGET (seconds of training, default 360: with conversion and
# model loading the whole run stays under 8 minutes), SEQ (window, default 512), LR (default
# 3e-4), HIDDEN_MSE (weight of the hidden-state loss, default 1: §8i), EVAL_EVERY (steps between held-out perplexities, default: a
# twelfth of the run), EVAL_CHUNKS (default 14: all of GPL-3), DEVICE (default cuda;
# cpu tries the script without a GPU), STUDENT (a converted file to start from instead of
# converting one). Results (the curve as JSON,
# the logs, a summary) go to $OUT (default STAGE/out).
set -euo pipefail
cd "$(dirname "$0")/.."
cmd="${1:-}"
stage="${2:-.gpu}"
out="${OUT:-$stage/out}"
stash="${STASH:-$HOME/.ternary-gpu-stash}"
teacher_src="${TEACHER:-$HOME/.cache/ternary/models/SmolLM2-135M-Instruct.Q4_1.gguf}"

# Unpacks STAGE/bin/*.xz (staged by `prepare`) next to themselves, with Python's lzma (the GPU
# machine may lack the xz tool).
unpack() {
  for f in "$stage"/bin/*.xz; do
    [ -f "$f" ] || continue
    [ -x "${f%.xz}" ] && continue
    python3 -c 'import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], "wb"))' "$f" "${f%.xz}"
    chmod +x "${f%.xz}"
  done
}

case "$cmd" in
prepare)
  # Without nvcc here cudarc would assume the newest CUDA it knows; the GPU machine has 13.0.
  export CUDARC_CUDA_VERSION="${CUDARC_CUDA_VERSION:-13000}"
  target="$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  cargo build --release -p ternary-cli --features cuda --bin ternary
  [ -f "$teacher_src" ] || python3 scripts/fetch_model.py
  grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
  rm -rf "$stage/bin" "$stage/p1" "$stage/p2" "$stage/data"
  mkdir -p "$stage/bin" "$stage/p1" "$stage/p2" "$stage/data"
  # Binaries go stripped and xz-compressed (35 MB → about a quarter), unpacked by `unpack`.
  strip -o "$stage/bin/ternary" "$target/release/ternary"
  if [ -n "${GPU_BENCH:-}" ]; then
    cargo build --release -p ternary-kernels --features cuda --bin gpu-bench
    strip -o "$stage/bin/gpu-bench" "$target/release/gpu-bench"
  fi
  xz -9 -T0 -f "$stage"/bin/*
  # A transfer carries the working tree (tracked files) too: the first one takes the binaries
  # and as much of the teacher as fits in 62 MiB with the tree, the second the rest.
  bin_bytes=$(du -cb "$stage"/bin/* | tail -1 | cut -f1)
  tree_bytes=$(git ls-files -z | xargs -0 du -cb | tail -1 | cut -f1)
  first=$(( 62 * 1024 * 1024 - tree_bytes - bin_bytes ))
  [ "$first" -gt 0 ] || { echo "the binaries and the tree alone are over 62 MiB" >&2; exit 1; }
  head -c "$first" "$teacher_src" > "$stage/p1/teacher.part1"
  tail -c +"$(( first + 1 ))" "$teacher_src" > "$stage/p2/teacher.part2"
  sha256sum "$teacher_src" | cut -d' ' -f1 > "$stage/p2/teacher.sha256"
  # Training text: the calibration fixture, the teacher's own samples
  # (scripts/make_distill_text.py) and prose from the machine (scripts/make_corpus.py: docs.txt,
  # or with --more docs-more.txt, which contains it and is staged instead); never the evaluation
  # text.
  cp fixtures/text/calibration.txt "$stage/data/"
  distill="${DISTILL:-$HOME/.cache/ternary/distill}"
  for f in "$distill"/*.txt; do
    [ "$(basename "$f")" = docs.txt ] && [ -f "$distill/docs-more.txt" ] && continue
    [ -f "$f" ] && cp "$f" "$stage/data/distill-$(basename "$f")"
  done
  # Held out for evaluation only.
  cp /usr/share/common-licenses/GPL-3 "$stage/data/eval-GPL-3.txt"
  du -sh "$stage"/*
  second=$(du -cb "$stage"/p2 "$stage"/data | tail -1 | cut -f1)
  if [ $(( second + tree_bytes )) -gt $(( 62 * 1024 * 1024 )) ]; then
    echo "the second transfer (p2, data and the tree) is over 62 MiB: stage less text (DISTILL=)" >&2
    exit 1
  fi
  ;;
smoke)
  export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"   # NVRTC needs the CUDA headers at run time
  mkdir -p "$out"
  # The device tool replaces the carried folders of the checkout at every call: keep this
  # call's binaries and first part of the teacher outside it for `run`.
  mkdir -p "$stash"
  cp -r "$stage/bin" "$stage/p1" "$stash/"
  unpack
  T="$stage/bin/ternary"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv || true
  timev=(); [ -x /usr/bin/time ] && timev=(/usr/bin/time -v)
  tmp="$(mktemp -d)"
  "$T" quantize --model fixtures/tiny-llama --out "$tmp/tiny.safetensors" --no-budget 2>&1 | tail -2
  for dev in cpu cuda; do
    "${timev[@]}" "$T" finetune --device "$dev" --teacher fixtures/tiny-llama \
      --student "$tmp/tiny.safetensors" --data fixtures/text/calibration.txt --tokens 1024 \
      --seq-len 64 --out "$tmp/tiny-$dev.safetensors" \
      --eval-text fixtures/text/declaration-gettysburg.txt --eval-ctx 64 --eval-chunks 2 \
      --eval-every 8 > "$out/smoke-$dev.log" 2>&1 || { tail -30 "$out/smoke-$dev.log"; exit 1; }
    cp "$tmp/tiny-$dev.safetensors.curve.json" "$out/smoke-$dev.curve.json"
    grep -E 'held-out|tokens/s|Maximum resident' "$out/smoke-$dev.log" | tail -4
  done
  # The CUDA curve must follow the CPU's: same losses to float tolerance.
  python3 - "$out/smoke-cpu.curve.json" "$out/smoke-cuda.curve.json" <<'PY'
import json, sys
a, b = (json.load(open(p))["curve"] for p in sys.argv[1:3])
la = [p["loss"] for p in a if p["loss"] is not None]
lb = [p["loss"] for p in b if p["loss"] is not None]
worst = max(abs(x - y) / max(abs(x), 1e-9) for x, y in zip(la, lb))
print(f"smoke: {len(la)} steps, worst relative loss difference CPU vs CUDA {worst:.2e}")
sys.exit(0 if len(la) == len(lb) and worst < 5e-2 else 1)
PY
  # The kernels' own conformance suite and timings on CUDA, when the binary was staged.
  if [ -x "$stage/bin/gpu-bench" ]; then
    timeout "${GPU_BENCH_SECONDS:-90}" "$stage/bin/gpu-bench" --json "$out/gpu-bench.json" \
      > "$out/gpu-bench.md" 2>&1 || echo "gpu-bench: exit $? (log in gpu-bench.md)"
    tail -25 "$out/gpu-bench.md"
  fi
  ;;
run)
  export CUDA_PATH="${CUDA_PATH:-/usr/local/cuda}"
  mkdir -p "$out"
  for d in bin p1; do
    [ -d "$stage/$d" ] || [ ! -d "$stash/$d" ] || cp -r "$stash/$d" "$stage/"
  done
  unpack
  T="$stage/bin/ternary"
  for f in "$T" "$stage/p1/teacher.part1" "$stage/p2/teacher.part2"; do
    [ -f "$f" ] || { echo "missing $f: carry $stage/bin and $stage/p1 with the first call" >&2; exit 1; }
  done
  work="$(mktemp -d)"
  cat "$stage/p1/teacher.part1" "$stage/p2/teacher.part2" > "$work/teacher.gguf"
  [ "$(sha256sum "$work/teacher.gguf" | cut -d' ' -f1)" = "$(cat "$stage/p2/teacher.sha256")" ] \
    || { echo "the joined teacher does not match its checksum" >&2; exit 1; }
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$out/gpu.txt" || true
  lscpu | grep -E 'Model name|^CPU\(s\)' | tee -a "$out/gpu.txt"
  start=$(date +%s)
  # The student: every block linear layer one-plane ternary (one-shot GPTQ, g64), lm_head float.
  if [ -n "${STUDENT:-}" ]; then
    cp "$STUDENT" "$work/student.safetensors"
  else
    "$T" quantize --model "$work/teacher.gguf" --out "$work/student.safetensors" --no-budget \
      --keep-float lm_head 2>&1 | tail -4 | tee "$out/quantize.log"
  fi
  data=("$stage"/data/calibration.txt "$stage"/data/distill-*.txt)
  common=(--device "${DEVICE:-cuda}" --teacher "$work/teacher.gguf" --student "$work/student.safetensors"
    --data "${data[@]}" --seq-len "${SEQ:-512}" --lr "${LR:-3e-4}" --hidden-mse "${HIDDEN_MSE:-1}")
  # Probe the speed with 5 steps (the first ones pay for kernel compilation and autotuning: the
  # rate is taken over steps 2 to 5), then plan a schedule that ends inside the budget.
  "$T" finetune "${common[@]}" --tokens $(( 5 * ${SEQ:-512} )) --out "$work/probe.safetensors" \
    --curve "$out/probe.curve.json" > "$out/probe.log" 2>&1 || { tail -30 "$out/probe.log"; exit 1; }
  tps=$(python3 -c "
import json; c = json.load(open('$out/probe.curve.json'))['curve']
a, b = c[2], c[-1]
print((b['tokens'] - a['tokens']) / (b['seconds'] - a['seconds']))")
  budget="${BUDGET:-360}"
  # 80% of the budget at the probed rate: the rest is left for held-out evaluations.
  tokens=$(python3 -c "print(max(1, int(0.8 * $tps * $budget) // ${SEQ:-512}) * ${SEQ:-512})")
  timev=(); [ -x /usr/bin/time ] && timev=(/usr/bin/time -v)
  steps=$(( tokens / ${SEQ:-512} ))
  every="${EVAL_EVERY:-$(( steps / 12 > 0 ? steps / 12 : 1 ))}"
  echo "probe: $tps tokens/s; planning $tokens training tokens ($steps steps, held-out" \
    "perplexity every $every) for ${budget} s" | tee "$out/plan.txt"
  "${timev[@]}" "$T" finetune "${common[@]}" --tokens "$tokens" --out "$work/kd.safetensors" \
    --eval-text "$stage/data/eval-GPL-3.txt" --eval-ctx 512 --eval-chunks "${EVAL_CHUNKS:-14}" \
    --eval-every "$every" --checkpoint-every 0 --max-seconds "$budget" \
    --curve "$out/curve.json" > "$out/finetune.log" 2>&1 || { tail -30 "$out/finetune.log"; exit 1; }
  end=$(date +%s)
  grep -E 'held-out|tokens/s|stopped|Maximum resident|Elapsed' "$out/finetune.log" | tail -8
  echo "conversion + probe + fine-tuning: $(( end - start )) s wall clock" | tee -a "$out/plan.txt"
  ;;
*)
  sed -n 2,20p "$0"
  exit 2
  ;;
esac
