#!/usr/bin/env python3
"""Training text for `ternary finetune` from prose already on this machine, never committed.

Sources (none of them evaluation text):
  * the Rust toolchain's books (`rustup` docs: the Book, the Reference, the Nomicon, Rust by
    Example, the edition and embedded guides): paragraphs and list items of their HTML;
  * the README of every crate in the local Cargo registry (one version per crate).
Code blocks, markup and links are dropped; so is every paragraph that mentions licences,
warranties or copyright (evaluation texts here are licences), and exact duplicates.

Usage: scripts/make_corpus.py [OUT]   (default ~/.cache/ternary/distill/docs.txt)
"""
import glob
import hashlib
import html.parser
import os
import re
import sys

BAD = re.compile(r"licen[cs]|warrant|copyright|\bgpl\b|\bgnu\b|free software|distribut|merchantab", re.I)
BOOKS = ["book", "reference", "nomicon", "rust-by-example", "edition-guide", "embedded-book"]


class Prose(html.parser.HTMLParser):
    """Text of <p> and <li> elements, outside <pre>, <code> blocks and navigation."""

    def __init__(self):
        super().__init__()
        self.out, self.cur, self.depth, self.skip = [], [], 0, 0

    def handle_starttag(self, tag, attrs):
        if tag in ("pre", "script", "style", "nav"):
            self.skip += 1
        elif tag in ("p", "li") and not self.skip:
            self.depth += 1

    def handle_endtag(self, tag):
        if tag in ("pre", "script", "style", "nav"):
            self.skip = max(0, self.skip - 1)
        elif tag in ("p", "li") and self.depth:
            self.depth -= 1
            if not self.depth:
                self.out.append("".join(self.cur))
                self.cur = []

    def handle_data(self, data):
        if self.depth and not self.skip:
            self.cur.append(data)


def clean(paras, seen):
    kept = []
    for s in paras:
        s = re.sub(r"\s+", " ", s).strip()
        s = re.sub(r"^#+\s*", "", s)
        if len(s) < 80 or BAD.search(s):
            continue
        if sum(c.isalpha() or c == " " for c in s) < 0.8 * len(s):
            continue
        h = hashlib.md5(s.encode()).digest()
        if h not in seen:
            seen.add(h)
            kept.append(s)
    return kept


def books():
    docs = glob.glob(os.path.expanduser("~/.rustup/toolchains/*/share/doc/rust/html"))
    if not docs:
        return
    root = sorted(docs)[0]
    for book in BOOKS:
        for path in sorted(glob.glob(f"{root}/{book}/**/*.html", recursive=True)):
            if "print.html" in path or "/searchindex" in path:
                continue
            p = Prose()
            p.feed(open(path, encoding="utf-8", errors="replace").read())
            yield p.out


def readmes():
    seen = set()
    for d in sorted(glob.glob(os.path.expanduser("~/.cargo/registry/src/*/*"))):
        name = re.sub(r"-\d+\.\d+.*$", "", os.path.basename(d))
        path = next((os.path.join(d, f) for f in ("README.md", "readme.md", "Readme.md")
                     if os.path.isfile(os.path.join(d, f))), None)
        if name in seen or path is None:
            continue
        seen.add(name)
        t = open(path, encoding="utf-8", errors="replace").read()
        t = re.sub(r"```.*?```", "", t, flags=re.S)
        t = re.sub(r"<[^>]+>", "", t)
        t = re.sub(r"!\[[^\]]*\]\([^)]*\)", "", t)
        t = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", t)
        t = re.sub(r"^\[[^\]]*\]:.*$", "", t, flags=re.M)
        yield [" ".join(line.strip() for line in p.splitlines()) for p in re.split(r"\n\s*\n", t)]


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.expanduser("~/.cache/ternary/distill/docs.txt")
    seen, docs = set(), []
    for source in (books(), readmes()):
        for paras in source:
            kept = clean(paras, seen)
            if kept:
                docs.append("\n\n".join(kept))
    text = "\n\n".join(docs) + "\n"
    if len(text) < 10_000:
        sys.exit(f"make_corpus: only {len(text)} bytes of prose found (is the rust-docs component "
                 "installed, and has `cargo fetch` filled ~/.cargo/registry?)")
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    tmp = out + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, out)
    print(f"{out}: {len(docs)} documents, {len(seen)} paragraphs, {len(text)} bytes")


if __name__ == "__main__":
    main()
