#!/usr/bin/env python3
"""Training text sampled from a model itself (data-free distillation data, as in LLM-QAT,
arXiv 2305.17888), never committed.

Each sample starts from one word drawn at random from a seed text (default
`fixtures/text/calibration.txt`) and continues with `ternary generate` (temperature 1, top-p
0.95, up to 256 tokens, one seed per sample), so the text follows the model's own distribution
rather than one corpus's. Samples that mention licences or warranties, or share an 8-word
sequence with a file of /usr/share/common-licenses (the evaluation texts; read only for that
check), are dropped, as `make_corpus.py` does. The output is rewritten atomically every 20
samples, so an interrupted run leaves a usable file.

Usage: scripts/make_synth_text.py --model MODEL --out OUT --tokens N [--seed S]
           [--words FILE] [--ternary BIN] [--threads T] [--max-tokens K]
"""
import argparse
import random
import re
import subprocess
import sys
import time

from make_corpus import BAD, HELD_OUT, grams, write_atomic


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="model file for `ternary generate`")
    ap.add_argument("--out", required=True)
    ap.add_argument("--tokens", type=int, required=True, help="generated tokens to collect")
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompts and the samples")
    ap.add_argument("--words", default="fixtures/text/calibration.txt", help="prompt words")
    ap.add_argument("--ternary", default="ternary", help="the `ternary` binary")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--max-tokens", type=int, default=256)
    a = ap.parse_args()
    words = sorted(set(re.findall(r"[A-Za-z]{3,}", open(a.words, encoding="utf-8").read())))
    if not words:
        sys.exit(f"make_synth_text: no words in {a.words}")
    rng = random.Random(a.seed)
    samples, total, dropped, start = [], 0, 0, time.time()
    i = 0
    while total < a.tokens:
        word = rng.choice(words)
        word = word.capitalize() if rng.random() < 0.5 else word
        cmd = [a.ternary, "generate", "--model", a.model, "--prompt", word,
               "--max-tokens", str(a.max_tokens), "--temperature", "1", "--top-p", "0.95",
               "--seed", str(a.seed * 1_000_003 + i), "--threads", str(a.threads)]
        i += 1
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"make_synth_text: {' '.join(cmd)} failed:\n{r.stderr}")
        m = re.search(r"generation: (\d+) tokens", r.stderr)
        text = re.sub(r"\n\s*\n+", "\n", word + r.stdout).strip()
        if not m or len(text) < 80 or BAD.search(text) or grams(text) & HELD_OUT:
            dropped += 1
            continue
        total += int(m.group(1))
        samples.append(text)
        if len(samples) % 20 == 0:
            write_atomic(a.out, "\n\n".join(samples) + "\n")
            rate = total / (time.time() - start)
            print(f"{len(samples)} samples, {total} tokens ({rate:.1f}/s), {dropped} dropped",
                  file=sys.stderr, flush=True)
    write_atomic(a.out, "\n\n".join(samples) + "\n")
    print(f"{a.out}: {len(samples)} samples, {total} generated tokens, {dropped} dropped "
          f"({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
