#!/usr/bin/env python3
"""Training text for `ternary finetune` from prose already on this machine, never committed.

Sources (none of them evaluation text):
  * the Rust toolchain's books (`rustup` docs: the Book, the Reference, the Nomicon, Rust by
    Example, the edition and embedded guides): paragraphs and list items of their HTML;
  * the README of every crate in the local Cargo registry (one version per crate);
  * with --more: the API documentation of Rust's `std`, `core` and `alloc` (HTML), the GNU
    info manuals in /usr/share/info and the Perl pods in /usr/share/perl.
Code blocks, markup and links are dropped; so is every paragraph that mentions licences,
warranties or copyright (evaluation texts here are licences), every paragraph sharing an
8-word sequence with a file of /usr/share/common-licenses (read only for that check), and exact
duplicates.

Usage: scripts/make_corpus.py [--more] [OUT]   (default ~/.cache/ternary/distill/docs.txt, with
--more docs-more.txt)
"""
import glob
import gzip
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


def grams(text, n=8):
    """Hashes of the n-word sequences of `text` (lower case, words of letters and digits)."""
    w = re.findall(r"[a-z0-9]+", text.lower())
    return {hash(" ".join(w[i:i + n])) for i in range(len(w) - n + 1)}


HELD_OUT = set()
for f in glob.glob("/usr/share/common-licenses/*"):
    if os.path.isfile(f):
        HELD_OUT |= grams(open(f, encoding="utf-8", errors="replace").read())


def clean(paras, seen):
    kept = []
    for s in paras:
        s = re.sub(r"\s+", " ", s).strip()
        s = re.sub(r"^#+\s*", "", s)
        if len(s) < 80 or BAD.search(s):
            continue
        if sum(c.isalpha() or c == " " for c in s) < 0.8 * len(s):
            continue
        if grams(s) & HELD_OUT:
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


def rust_api():
    docs = glob.glob(os.path.expanduser("~/.rustup/toolchains/*/share/doc/rust/html"))
    if not docs:
        return
    root = sorted(docs)[0]
    for lib in ("std", "core", "alloc"):
        for path in sorted(glob.glob(f"{root}/{lib}/**/*.html", recursive=True)):
            if "/arch/" in path:  # thousands of near-identical SIMD intrinsic pages
                continue
            p = Prose()
            p.feed(open(path, encoding="utf-8", errors="replace").read())
            yield p.out


def info_manuals():
    """Paragraphs of the GNU info manuals: no node headers, menus, rules or indented examples."""
    for path in sorted(glob.glob("/usr/share/info/*.info*.gz")):
        t = gzip.open(path, "rt", encoding="utf-8", errors="replace").read()
        paras = []
        for block in re.split(r"\n\s*\n", t.replace("\x1f", "\n\n")):
            lines = block.splitlines()
            if not lines or lines[0].startswith(("File:", "*", "Tag Table", "   ")):
                continue
            if any(re.fullmatch(r"[=*.-]{3,}", ln.strip()) for ln in lines):
                continue
            paras.append(" ".join(ln.strip() for ln in lines))
        yield paras


def perl_pods():
    """Ordinary paragraphs of the Perl pods, formatting codes reduced to their text."""
    for path in sorted(glob.glob("/usr/share/perl/*/pod/*.pod")):
        paras = []
        for block in re.split(r"\n\s*\n", open(path, encoding="utf-8", errors="replace").read()):
            if not block.strip() or block[0] in " \t=":
                continue
            b = re.sub(r"[A-Z]<<+\s+(.*?)\s+>>+", r"\1", block, flags=re.S)
            b = b.replace("E<lt>", "<").replace("E<gt>", ">")
            for _ in range(3):
                b = re.sub(r"L<([^<>|]*)\|[^<>]*>", r"\1", b)
                b = re.sub(r"[A-Z]<([^<>]*)>", r"\1", b)
            paras.append(" ".join(ln.strip() for ln in b.splitlines()))
        yield paras


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
    args = sys.argv[1:]
    more = "--more" in args
    args = [a for a in args if a != "--more"]
    name = "docs-more.txt" if more else "docs.txt"
    out = args[0] if args else os.path.expanduser(f"~/.cache/ternary/distill/{name}")
    seen, docs = set(), []
    sources = [books(), readmes()]
    if more:
        sources += [rust_api(), info_manuals(), perl_pods()]
    for source in sources:
        for paras in source:
            kept = clean(paras, seen)
            if kept:
                docs.append("\n\n".join(kept))
    text = "\n\n".join(docs) + "\n"
    if len(text) < 10_000:
        sys.exit(f"make_corpus: only {len(text)} bytes of prose found (is the rust-docs component "
                 "installed, and has `cargo fetch` filled ~/.cargo/registry?)")
    write_atomic(out, text)
    print(f"{out}: {len(docs)} documents, {len(seen)} paragraphs, {len(text)} bytes")


def write_atomic(path, text):
    """Writes `text` to `path` through a temporary file renamed over it."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)


if __name__ == "__main__":
    main()
