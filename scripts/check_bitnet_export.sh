#!/usr/bin/env bash
# Our GGUF export of the tiny BitNet b1.58 run by llama.cpp: `ternary export` writes
# fixtures/tiny-bitnet/silu-bf16 (bf16 master weights, ternarized on load as transformers does)
# as TQ2_0 and TQ1_0, with llama.cpp's own conversion of the same checkpoint
# (fixtures/tiny-bitnet-gguf/tiny-bitnet-tq*.gguf) as the metadata/tokenizer source. Then
# llama-perplexity and `ternary perplexity` run on each exported file (ctx 128,
# fixtures/text/declaration-gettysburg.txt), and the figures go to
# fixtures/tiny-bitnet-gguf/export.json, which crates/ternary-cli/tests/cli.rs compares with.
# llama.cpp comes from scripts/llama_cpp.sh (built once, cached); `ternary` is built in release.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CTX="${CTX:-128}"
THREADS="${THREADS:-2}"
eval "$("$ROOT/scripts/llama_cpp.sh" | sed 's/^\([a-z_]*\)=\(.*\)$/\1="\2"/')"
cargo build --release -q -p ternary-cli --manifest-path "$ROOT/Cargo.toml"
TARGET="$(cargo metadata --format-version 1 --no-deps --manifest-path "$ROOT/Cargo.toml" \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
TERNARY="$TARGET/release/ternary"
TEXT="$ROOT/fixtures/text/declaration-gettysburg.txt"
FIX="$ROOT/fixtures/tiny-bitnet-gguf"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
for q in tq2_0 tq1_0; do
  "$TERNARY" export --model "$ROOT/fixtures/tiny-bitnet/silu-bf16" \
    --source "$FIX/tiny-bitnet-$q.gguf" --format "gguf-$q" --out "$WORK/export-$q.gguf" >&2
done
python3 - "$bin" "$TERNARY" "$WORK" "$FIX" "$TEXT" "$CTX" "$THREADS" <<'PY'
import json, pathlib, re, subprocess, sys
bin_dir, ternary, work, fix, text, ctx, threads = sys.argv[1:8]
pat = re.compile(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)")

def run(cmd):
    # llama.cpp's logger thread can lose the last lines at exit: rerun until the final line
    # is there (the numbers are deterministic).
    for _ in range(8):
        r = subprocess.run(cmd, capture_output=True, text=True)
        m = pat.search(r.stdout + r.stderr)
        if r.returncode != 0 or m:
            break
    if r.returncode != 0 or not m:
        sys.exit(f"{cmd[0]} failed:\n{(r.stdout + r.stderr)[-3000:]}")
    return {"ppl": float(m.group(1)), "ppl_stderr": float(m.group(2)), "final_line": m.group(0)}

doc = {"source": "fixtures/tiny-bitnet/silu-bf16, `ternary export --source fixtures/tiny-bitnet-gguf/tiny-bitnet-<q>.gguf`",
       "text_file": "fixtures/text/declaration-gettysburg.txt", "ctx": int(ctx), "export": {}}
for q in ["tq2_0", "tq1_0"]:
    f = str(pathlib.Path(work) / f"export-{q}.gguf")
    doc["export"][q] = {
        "llama_cpp": run([f"{bin_dir}/llama-perplexity", "-m", f, "-f", text, "-c", ctx, "-b", ctx,
                          "-t", threads, "--no-warmup"]),
        "ours": run([ternary, "perplexity", "--model", f, "--text", text, "--ctx", ctx]),
    }
    e = doc["export"][q]
    rel = (e["ours"]["ppl"] - e["llama_cpp"]["ppl"]) / e["llama_cpp"]["ppl"]
    print(f"{q}: llama.cpp {e['llama_cpp']['final_line']} | ours {e['ours']['final_line']} ({100*rel:+.2f}%)")
(pathlib.Path(fix) / "export.json").write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
PY
