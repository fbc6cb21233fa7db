#!/usr/bin/env python3
"""Reference tokenization, logits, greedy tokens and perplexity for SmolLM2-135M-Instruct.Q4_1.

An implementation independent of the Rust crate: Hugging Face `transformers` loads the GGUF
(dequantized to float32 by the `gguf` package's numpy code, tokenizer rebuilt by
transformers' GGUF converter) and runs its own PyTorch Llama in float32 on the CPU.

Writes fixtures/smollm2/reference.json:
  - for each prompt: token ids (no BOS: the GGUF says add_bos_token = false) and, at a few
    positions, the top-20 logits, the logits at every 211th vocabulary id and the row's
    log-sum-exp (so a whole row is checked without storing 49152 floats);
  - 24 greedy tokens for one prompt (run with transformers' KV cache);
  - the token ids of fixtures/text/declaration-gettysburg.txt and its perplexity computed the
    way llama.cpp's llama-perplexity does (non-overlapping n_ctx chunks, second half scored).

Environment (what produced the committed file): a venv with
  pip install torch transformers gguf numpy accelerate
Usage: python scripts/make_reference.py [path/to/SmolLM2-135M-Instruct.Q4_1.gguf]
"""
import hashlib
import json
import math
import os
import pathlib
import sys

import numpy as np
import torch
import transformers
import gguf
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = pathlib.Path(__file__).resolve().parent.parent
SPEC = json.loads((ROOT / "fixtures" / "smollm2" / "model.json").read_text())
TEXT = ROOT / "fixtures" / "text" / "declaration-gettysburg.txt"
OUT = ROOT / "fixtures" / "smollm2" / "reference.json"

PROMPTS = [
    "The capital of France is",
    "In 2024, 12345 people walked 6.5 km; the rest (about 1/3) stayed home!",
    "<|im_start|>user\nWhat is the boiling point of water?<|im_end|>\n<|im_start|>assistant\n",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return",
    "Ünïcödé, emoji 🙂 and   multiple   spaces\ttabs\n\nnewlines.",
]
GREEDY_PROMPT = "Once upon a time, in a small village,"
SAMPLE_STEP = 211
TOP_K = 20


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def row_record(pos, row):
    row64 = row.double()
    top = torch.topk(row, TOP_K)
    return {
        "pos": pos,
        "top_ids": top.indices.tolist(),
        "top_logits": [float(x) for x in top.values],
        "sample_logits": [float(x) for x in row[::SAMPLE_STEP]],
        "logsumexp": float(torch.logsumexp(row64, 0)),
    }


def perplexity(model, ids, n_ctx, max_chunks=None):
    """llama.cpp's perplexity(): chunks of n_ctx, score positions n_ctx/2 .. n_ctx-2."""
    n_chunks = len(ids) // n_ctx
    if max_chunks is not None:
        n_chunks = min(n_chunks, max_chunks)
    first = n_ctx // 2
    nll = nll2 = 0.0
    count = 0
    running = []
    for i in range(n_chunks):
        chunk = ids[i * n_ctx:(i + 1) * n_ctx]
        with torch.no_grad():
            logits = model(torch.tensor([chunk])).logits[0].float()
        logp = torch.log_softmax(logits.double(), dim=-1)
        for j in range(first, n_ctx - 1):
            v = -float(logp[j, ids[i * n_ctx + j + 1]])
            nll += v
            nll2 += v * v
            count += 1
        running.append(math.exp(nll / count))
    mean = nll / count
    var = nll2 / count - mean * mean
    ppl = math.exp(mean)
    err = math.sqrt(var / (count - 1)) * ppl if var > 0 else 0.0
    return {"n_ctx": n_ctx, "chunks": n_chunks, "scored": count, "mean_nll": mean,
            "ppl": ppl, "ppl_stderr": err, "running_ppl": running}


def main():
    path = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else (
        pathlib.Path(os.environ.get("TERNARY_MODELS_DIR")
                     or pathlib.Path.home() / ".cache" / "ternary" / "models") / SPEC["file"])
    digest = sha256(path)
    if digest != SPEC["sha256"]:
        sys.exit(f"{path}: sha256 {digest} != {SPEC['sha256']}")
    torch.set_num_threads(2)
    tok = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, dtype=torch.float32)
    model.eval()

    prompts = []
    for text in PROMPTS:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()
        positions = sorted({0, len(ids) // 2, len(ids) - 1})
        prompts.append({"text": text, "ids": ids,
                        "rows": [row_record(p, logits[p]) for p in positions]})
        print(f"{len(ids):3} tokens: {text[:40]!r}")

    g_ids = tok(GREEDY_PROMPT, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        out = model.generate(torch.tensor([g_ids]), max_new_tokens=24, do_sample=False,
                             attention_mask=torch.ones(1, len(g_ids), dtype=torch.long),
                             pad_token_id=tok.eos_token_id or 2)
    new_ids = out[0, len(g_ids):].tolist()
    greedy = {"prompt": GREEDY_PROMPT, "ids": g_ids, "new_ids": new_ids,
              "text": tok.decode(new_ids)}
    print("greedy:", repr(greedy["text"]))

    text = TEXT.read_text(encoding="utf-8")
    text_ids = tok(text, add_special_tokens=False)["input_ids"]
    ppl = [perplexity(model, text_ids, 512), perplexity(model, text_ids, 128, max_chunks=4)]
    for p in ppl:
        print(f"ctx {p['n_ctx']}, {p['chunks']} chunks: PPL = {p['ppl']:.4f} +/- {p['ppl_stderr']:.5f}")

    ref = {
        "generator": "scripts/make_reference.py",
        "implementation": "transformers LlamaForCausalLM from GGUF, float32, CPU",
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__,
                     "transformers": transformers.__version__, "numpy": np.__version__,
                     "gguf": getattr(gguf, "__version__", "unknown")},
        "model_file": SPEC["file"],
        "model_sha256": digest,
        "sample_step": SAMPLE_STEP,
        "prompts": prompts,
        "greedy": greedy,
        "text_file": "fixtures/text/declaration-gettysburg.txt",
        "text_ids": text_ids,
        "perplexity": ppl,
    }
    OUT.write_text(json.dumps(ref, ensure_ascii=False, separators=(",", ":")) + "\n")
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
