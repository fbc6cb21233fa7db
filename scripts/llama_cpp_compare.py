#!/usr/bin/env python3
"""llama.cpp's numbers for SmolLM2-135M-Instruct.Q4_1, for docs/models.md.

Uses llama-cpp-python (builds llama.cpp from source: build it WITHOUT AMX on this machine,
see docs/models.md). Prints:
  - whether llama.cpp's tokenizer (pre-tokenizer "smollm") gives the same ids as the
    committed reference for the fixture prompts and the perplexity text;
  - perplexity computed the way llama-perplexity does (n_ctx chunks, second half scored,
    BOS only if the model adds one) from llama.cpp's own logits;
  - greedy decode tokens/s on N threads (default 2).
Usage: python scripts/llama_cpp_compare.py [--threads 2] [--ctx 512] [--n 64]
"""
import argparse
import json
import math
import os
import pathlib
import time

import numpy as np
from llama_cpp import Llama

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = json.loads((ROOT / "fixtures" / "smollm2" / "model.json").read_text())
REF = json.loads((ROOT / "fixtures" / "smollm2" / "reference.json").read_text())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--n", type=int, default=64)
    ap.add_argument("--skip-ppl", action="store_true")
    a = ap.parse_args()
    cache = pathlib.Path(os.environ.get("TERNARY_MODELS_DIR")
                         or pathlib.Path.home() / ".cache" / "ternary" / "models")
    llm = Llama(model_path=str(cache / SPEC["file"]), n_ctx=a.ctx, n_batch=a.ctx,
                n_threads=a.threads, n_threads_batch=a.threads, logits_all=True, verbose=False)

    same = 0
    for p in REF["prompts"]:
        ids = llm.tokenize(p["text"].encode(), add_bos=False, special=True)
        same += ids == p["ids"]
        if ids != p["ids"]:
            print("tokenizer differs:", repr(p["text"]), ids, p["ids"])
    text = (ROOT / REF["text_file"]).read_text(encoding="utf-8")
    tokens = llm.tokenize(text.encode(), add_bos=False, special=False)
    print(f"llama.cpp tokenizer: {same}/{len(REF['prompts'])} prompts identical; "
          f"text {len(tokens)} tokens, identical to reference: {tokens == REF['text_ids']}")

    if not a.skip_ppl:
        perplexity(llm, tokens, a)
    # Decoding: a second context without logits for every position (llama-cli's setting).
    llm = Llama(model_path=str(cache / SPEC["file"]), n_ctx=a.ctx, n_batch=a.ctx,
                n_threads=a.threads, n_threads_batch=a.threads, logits_all=False, verbose=False)
    decode(llm, a)


def perplexity(llm, tokens, a):
    n_ctx = a.ctx
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    t0 = time.time()
    chunks = len(tokens) // n_ctx
    for i in range(chunks):
        chunk = tokens[i * n_ctx:(i + 1) * n_ctx]
        llm.reset()
        llm.eval(chunk)
        logits = np.array(llm.scores[:n_ctx], dtype=np.float32)
        for j in range(first, n_ctx - 1):
            row = logits[j]
            m = row.max()
            lse = m + math.log(float(np.exp(row - m, dtype=np.float32).astype(np.float64).sum()))
            v = lse - float(row[tokens[i * n_ctx + j + 1]])
            nll += v
            nll2 += v * v
            count += 1
        print(f"[{i + 1}]{math.exp(nll / count):.4f},", end="", flush=True)
    dt = time.time() - t0
    mean = nll / count
    ppl = math.exp(mean)
    err = math.sqrt((nll2 / count - mean * mean) / (count - 1)) * ppl
    print(f"\nllama.cpp ({a.threads} threads): ctx {n_ctx}, {chunks} chunks, {dt:.2f} s "
          f"({chunks * n_ctx / dt:.1f} tok/s prefill)")
    print(f"Final estimate: PPL = {ppl:.4f} +/- {err:.5f}")


def decode(llm, a):
    prompt = llm.tokenize(REF["greedy"]["prompt"].encode(), add_bos=False, special=True)
    llm.reset()
    t0 = time.time()
    llm.eval(prompt)
    t1 = time.time()
    out = []
    for _ in range(a.n):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        out.append(tok)
        llm.eval([tok])
    t2 = time.time()
    print(f"greedy: prefill {len(prompt) / (t1 - t0):.1f} tok/s, decode {a.n / (t2 - t1):.1f} tok/s; "
          f"first 24 tokens identical to reference: {out[:24] == REF['greedy']['new_ids']}")
    print(repr(llm.detokenize(out).decode(errors="replace")))


if __name__ == "__main__":
    main()
