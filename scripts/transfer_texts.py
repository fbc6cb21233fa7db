#!/usr/bin/env python3
"""Two evaluation texts beside GPL-3 for `docs/accuracy.md` §8n: how far training transfers.

  * transfer-corpus.txt: three 30,000-character excerpts of the training corpus
    (`scripts/make_corpus.py --more`'s docs-more.txt, from the first paragraph break after 20%,
    50% and 80% of it): the training distribution. Training visits windows of the whole corpus
    in a shuffled order, so a run of under 0.1 M tokens has seen a few percent of them.
  * transfer-pydoc.txt: the first 90,000 characters of `pydoc` for six Python modules
    (argparse, subprocess, threading, json, collections, logging): technical prose and code
    signatures that no training text here contains.

Neither is held-out evaluation text in the sense of the data rule (nothing is trained on
them either). Usage: scripts/transfer_texts.py [CORPUS] [OUT_DIR]
(defaults ~/.cache/ternary/distill/docs-more.txt and its directory).
"""
import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_corpus import write_atomic  # noqa: E402

MODULES = ["argparse", "subprocess", "threading", "json", "collections", "logging"]


def main():
    corpus = os.path.expanduser(
        sys.argv[1] if len(sys.argv) > 1 else "~/.cache/ternary/distill/docs-more.txt"
    )
    out = os.path.expanduser(sys.argv[2]) if len(sys.argv) > 2 else os.path.dirname(corpus)
    if not os.path.isfile(corpus):
        sys.exit(f"{corpus}: missing; run scripts/make_corpus.py --more first")
    text = open(corpus, encoding="utf-8").read()
    parts = []
    for frac in (0.2, 0.5, 0.8):
        start = text.find("\n\n", int(len(text) * frac))
        if start < 0:
            sys.exit(f"{corpus}: too short for three excerpts")
        parts.append(text[start + 2 : start + 2 + 30000])
    write(os.path.join(out, "transfer-corpus.txt"), "".join(parts))

    docs = []
    for m in MODULES:
        r = subprocess.run(
            [sys.executable, "-m", "pydoc", m], capture_output=True, text=True, check=True
        )
        docs.append(re.sub(".\x08", "", r.stdout))
    write(os.path.join(out, "transfer-pydoc.txt"), "".join(docs)[:90000])


def write(path, s):
    write_atomic(path, s)
    print(f"{path}: {len(s)} characters")


if __name__ == "__main__":
    main()
