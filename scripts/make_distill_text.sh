#!/usr/bin/env bash
# Training text for `ternary finetune` without any data set: samples of the float teacher itself
# (data-free distillation, as in LLM-QAT, Liu et al. 2023, arXiv 2305.17888), from short prompts
# of many registers. Writes OUT (default ~/.cache/ternary/distill/smollm2-samples.txt); never
# committed. Usage: scripts/make_distill_text.sh [TEACHER] [OUT] [TOKENS_PER_PROMPT]
# Environment: THREADS (default 1), SEED0 (first sampling seed, default 1: another SEED0 gives
# another set of samples from the same prompts), TERNARY_BIN.
set -euo pipefail
cd "$(dirname "$0")/.."
teacher="${1:-$HOME/.cache/ternary/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
out="${2:-$HOME/.cache/ternary/distill/smollm2-samples.txt}"
per="${3:-384}"
bin="${TERNARY_BIN:-$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')/release/ternary}"
[ -x "$bin" ] || cargo build --release -p ternary-cli
mkdir -p "$(dirname "$out")"
tmp="$out.tmp"
: > "$tmp"
seed="${SEED0:-1}"
while IFS= read -r prompt; do
  [ -z "$prompt" ] && continue
  "$bin" --threads "${THREADS:-1}" generate --model "$teacher" --prompt "$prompt" \
    --max-tokens "$per" --temperature 0.8 --top-p 0.95 --seed "$seed" 2>/dev/null >> "$tmp" || true
  printf '\n\n' >> "$tmp"
  seed=$((seed + 1))
done <<'PROMPTS'
The history of the printing press begins
In the small village by the river, the old miller
Photosynthesis is the process by which
To bake a simple loaf of bread, you will need
The first law of thermodynamics states that
Once upon a time, in a kingdom far to the north,
A computer program is a sequence of instructions
The Roman Empire at its height stretched from
Dear friend, I write to you from the harbour town of
The rules of chess are simple to learn:
Volcanoes form when
In mathematics, a prime number is
The museum's new exhibition on ancient Egypt
Here is a short guide to planting tomatoes in spring.
The committee met on Tuesday to discuss the budget for
Water boils at a lower temperature at high altitude because
She opened the letter slowly, afraid of what it might say.
The invention of the steam engine changed
A healthy breakfast usually includes
The stars we see at night are
In 1492, sailors crossing the Atlantic
How to write a good essay: first,
The city council announced today that
Bees communicate with one another by
The detective looked at the muddy footprints and said,
Electricity flows through a wire when
The Great Wall of China was built
My grandmother's kitchen always smelled of
The economy of a country depends on
A function that returns the n-th Fibonacci number can be written
The mountain trail was steep and narrow, and
Learning a new language is easier when
PROMPTS
mv "$tmp" "$out"
wc -w "$out"
