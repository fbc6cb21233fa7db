#!/usr/bin/env python3
"""Training text for `ternary finetune` without any data set: samples of a model itself
(data-free distillation, as in LLM-QAT, Liu et al. 2023, arXiv 2305.17888), never committed.

Two ways to prompt `ternary generate`:
  * fixed prompts (default): each of the 32 one-line prompts below, of many registers, once,
    TOKENS_PER_PROMPT tokens (default 384) at temperature 0.8, top-p 0.95, seeds SEED0,
    SEED0 + 1, ... (environment, default 1: another SEED0 gives another set of samples);
  * --words FILE --tokens N: one word drawn at random (seed --seed) from FILE per sample,
    continued at temperature 1, top-p 0.95 for up to --max-tokens tokens (default 256), until N
    generated tokens are collected; the output is rewritten atomically every 20 samples.
Samples that mention licences or warranties, or share an 8-word sequence with a file of
/usr/share/common-licenses (the evaluation texts; read only for that check), are dropped, as in
`make_corpus.py` (since 2026-12-07; the sample files of docs/accuracy.md §8h–§8j were written
without this check). The output is written atomically.

Usage: scripts/make_distill_text.py [TEACHER] [OUT] [TOKENS_PER_PROMPT]
       scripts/make_distill_text.py [TEACHER] [OUT] --words FILE --tokens N [--seed S]
Environment: THREADS (default 1), SEED0, TERNARY_BIN (default: the workspace's release build,
built when missing).
"""
import argparse
import json
import os
import random
import re
import subprocess
import sys
import time

from make_corpus import BAD, HELD_OUT, grams, write_atomic

PROMPTS = [
    "The history of the printing press begins",
    "In the small village by the river, the old miller",
    "Photosynthesis is the process by which",
    "To bake a simple loaf of bread, you will need",
    "The first law of thermodynamics states that",
    "Once upon a time, in a kingdom far to the north,",
    "A computer program is a sequence of instructions",
    "The Roman Empire at its height stretched from",
    "Dear friend, I write to you from the harbour town of",
    "The rules of chess are simple to learn:",
    "Volcanoes form when",
    "In mathematics, a prime number is",
    "The museum's new exhibition on ancient Egypt",
    "Here is a short guide to planting tomatoes in spring.",
    "The committee met on Tuesday to discuss the budget for",
    "Water boils at a lower temperature at high altitude because",
    "She opened the letter slowly, afraid of what it might say.",
    "The invention of the steam engine changed",
    "A healthy breakfast usually includes",
    "The stars we see at night are",
    "In 1492, sailors crossing the Atlantic",
    "How to write a good essay: first,",
    "The city council announced today that",
    "Bees communicate with one another by",
    "The detective looked at the muddy footprints and said,",
    "Electricity flows through a wire when",
    "The Great Wall of China was built",
    "My grandmother's kitchen always smelled of",
    "The economy of a country depends on",
    "A function that returns the n-th Fibonacci number can be written",
    "The mountain trail was steep and narrow, and",
    "Learning a new language is easier when",
]


def ternary_bin():
    """$TERNARY_BIN, or the workspace's release `ternary`, built when missing."""
    if os.environ.get("TERNARY_BIN"):
        return os.environ["TERNARY_BIN"]
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                          capture_output=True, text=True, check=True)
    path = os.path.join(json.loads(meta.stdout)["target_directory"], "release", "ternary")
    if not os.access(path, os.X_OK):
        subprocess.run(["cargo", "build", "--release", "-p", "ternary-cli"], check=True)
    return path


def generate(binary, model, prompt, tokens, temperature, seed):
    """One sample: (continuation, generated tokens), or None if it is dropped."""
    cmd = [binary, "--threads", os.environ.get("THREADS", "1"), "generate", "--model", model,
           "--prompt", prompt, "--max-tokens", str(tokens), "--temperature", str(temperature),
           "--top-p", "0.95", "--seed", str(seed)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"make_distill_text: {' '.join(cmd)} failed:\n{r.stderr}")
    m = re.search(r"generation: (\d+) tokens", r.stderr)
    if not m:
        sys.exit(f"make_distill_text: no token count in the output of {' '.join(cmd)}:\n{r.stderr}")
    if BAD.search(prompt + r.stdout) or grams(prompt + r.stdout) & HELD_OUT:
        return None
    return r.stdout, int(m.group(1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    home = os.path.expanduser("~/.cache/ternary")
    ap.add_argument("teacher", nargs="?", default=f"{home}/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    ap.add_argument("out", nargs="?", default=f"{home}/distill/smollm2-samples.txt")
    ap.add_argument("per", nargs="?", type=int, default=384, help="tokens per fixed prompt")
    ap.add_argument("--words", help="draw one-word prompts from this file instead")
    ap.add_argument("--tokens", type=int, default=65536, help="generated tokens (--words)")
    ap.add_argument("--seed", type=int, default=0, help="seed of the words and samples (--words)")
    ap.add_argument("--max-tokens", type=int, default=256, help="tokens per sample (--words)")
    a = ap.parse_args()
    teacher, out = a.teacher or ap.get_default("teacher"), a.out or ap.get_default("out")
    if a.per < 1 or a.tokens < 1 or a.max_tokens < 1:
        sys.exit("make_distill_text: TOKENS_PER_PROMPT, --tokens and --max-tokens must be positive")
    binary, start, dropped = ternary_bin(), time.time(), 0
    if not a.words:
        parts, seed = [], int(os.environ.get("SEED0", "1"))
        for prompt in PROMPTS:
            s = generate(binary, teacher, prompt, a.per, 0.8, seed)
            dropped += s is None
            parts.append((s[0] if s else "") + "\n\n")
            seed += 1
        write_atomic(out, "".join(parts))
        print(f"{out}: {len(PROMPTS) - dropped} samples, {dropped} dropped")
        return
    try:
        seed_text = open(a.words, encoding="utf-8").read()
    except (OSError, UnicodeDecodeError) as e:
        sys.exit(f"make_distill_text: cannot read {a.words}: {e}")
    words = sorted(set(re.findall(r"[A-Za-z]{3,}", seed_text)))
    if not words:
        sys.exit(f"make_distill_text: no words in {a.words}")
    rng = random.Random(a.seed)
    samples, total, i, run_dropped = [], 0, 0, 0
    while total < a.tokens:
        word = rng.choice(words)
        word = word.capitalize() if rng.random() < 0.5 else word
        s = generate(binary, teacher, word, a.max_tokens, 1, a.seed * 1_000_003 + i)
        i += 1
        text = re.sub(r"\n\s*\n+", "\n", word + s[0]).strip() if s else ""
        if len(text) < 80:
            dropped += 1
            run_dropped += 1
            if run_dropped >= 100:
                sys.exit(f"make_distill_text: {teacher}: 100 samples in a row dropped (short, or "
                         "licence-like); is it a language model?")
            continue
        run_dropped = 0
        total += s[1]
        samples.append(text)
        if len(samples) % 20 == 0:
            write_atomic(out, "\n\n".join(samples) + "\n")
            print(f"{len(samples)} samples, {total} tokens ({total / (time.time() - start):.1f}/s), "
                  f"{dropped} dropped", file=sys.stderr, flush=True)
    write_atomic(out, "\n\n".join(samples) + "\n")
    print(f"{out}: {len(samples)} samples, {total} generated tokens, {dropped} dropped "
          f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
