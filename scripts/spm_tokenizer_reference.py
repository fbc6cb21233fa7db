#!/usr/bin/env python3
"""llama.cpp's own token ids for SentencePiece GGUF vocabularies, as a JSON fixture.

Runs `llama-tokenize` (built by scripts/llama_cpp.sh) on each test text and writes
fixtures/tokenizer-spm/<name>.json:
  {"vocab": <where the GGUF comes from>, "llama_cpp": "llama-cpp-python <version> vendor",
   "add_bos": true, "cases": [{"text": ..., "ids": [...]}, ...]}
The texts are llama.cpp's own tokenizer test inputs (models/ggml-vocab-llama-spm.gguf.inp),
a few of ours, and the perplexity text. Ids include the BOS llama.cpp adds; special tokens
in the text are parsed (llama-tokenize's default, and ours).

Usage: python scripts/spm_tokenizer_reference.py [--gguf PATH --name NAME]
  default: llama.cpp's models/ggml-vocab-llama-spm.gguf (LLaMA's 32k SentencePiece vocab)
"""
import argparse
import json
import pathlib
import subprocess
import tempfile

ROOT = pathlib.Path(__file__).resolve().parent.parent

OURS = [
    "Hello world",
    " leading and  double  spaces ",
    "tabs\tand\nnewlines\n\n",
    "unicode: café, naïve, Ærøskøbing, 東京, emoji 🦙🦙",
    "digits 1234567890 and 3.14159",
    "<s>special</s> tokens <unk> in text",
    "",
]


def llama_cpp():
    out = subprocess.run([str(ROOT / "scripts" / "llama_cpp.sh")], check=True,
                         capture_output=True, text=True).stdout
    info = dict(line.split("=", 1) for line in out.strip().splitlines())
    return pathlib.Path(info["bin"]), pathlib.Path(info["convert"]).parent


def tokenize(bin_dir, gguf, text):
    with tempfile.NamedTemporaryFile("wb", suffix=".txt") as f:
        f.write(text.encode("utf-8"))
        f.flush()
        r = subprocess.run([str(bin_dir / "llama-tokenize"), "-m", str(gguf), "-f", f.name,
                            "--ids", "--no-escape", "--log-disable"],
                           check=True, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf")
    ap.add_argument("--name", default="llama-spm")
    a = ap.parse_args()
    bin_dir, src = llama_cpp()
    gguf = pathlib.Path(a.gguf) if a.gguf else src / "models" / "ggml-vocab-llama-spm.gguf"
    inp = src / "models" / "ggml-vocab-llama-spm.gguf.inp"
    texts = inp.read_text(encoding="utf-8").split("\n__ggml_vocab_test__\n")
    texts = [t for t in texts if t.strip("\n") != "__ggml_vocab_test__"]
    texts += OURS
    texts.append((ROOT / "fixtures" / "text" / "declaration-gettysburg.txt").read_text(encoding="utf-8"))
    cases = [{"text": t, "ids": tokenize(bin_dir, gguf, t)} for t in texts]
    version = src.parent.parent.name
    doc = {
        "vocab": "llama.cpp models/ggml-vocab-llama-spm.gguf" if not a.gguf else a.name,
        "llama_cpp": f"{version} (llama-cpp-python's vendored llama.cpp), llama-tokenize",
        "cases": cases,
    }
    out = ROOT / "fixtures" / "tokenizer-spm" / f"{a.name}.json"
    out.write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
    print(f"{out}: {len(cases)} texts, {sum(len(c['ids']) for c in cases)} ids")


if __name__ == "__main__":
    main()
