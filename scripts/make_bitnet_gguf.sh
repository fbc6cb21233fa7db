#!/usr/bin/env bash
# The tiny BitNet through llama.cpp's own tools, as committed fixtures (fixtures/tiny-bitnet-gguf/):
#   1. convert_hf_to_gguf.py (through scripts/convert_bitnet_hf_to_gguf.py, which adds
#      transformers' sub-norm names) on fixtures/tiny-bitnet/silu-bf16 -> F32 GGUF
#      (llama.cpp's BitNet graph always uses SiLU, and its converter would ternarize packed
#      weights twice, so the comparison uses the unpacked SiLU variant);
#   2. llama-quantize to TQ1_0 and TQ2_0 (committed; the F32 file is not: 5 MB);
#   3. reference.json: llama-perplexity's PPL on fixtures/text/declaration-gettysburg.txt at
#      ctx 128 for F32, TQ1_0 and TQ2_0, and llama-tokenize's ids of the text and prompts.
# llama.cpp comes from scripts/llama_cpp.sh (built once, cached). Needs torch, safetensors,
# sentencepiece, numpy (as scripts/make_tiny_bitnet.py does).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CTX="${CTX:-128}"
THREADS="${THREADS:-2}"
eval "$("$ROOT/scripts/llama_cpp.sh" | sed 's/^\([a-z_]*\)=\(.*\)$/\1="\2"/')"
SRC="$ROOT/fixtures/tiny-bitnet/silu-bf16"
OUT="$ROOT/fixtures/tiny-bitnet-gguf"
TEXT="$ROOT/fixtures/text/declaration-gettysburg.txt"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT" "$WORK/hf"
# A plain copy (the fixture's model.safetensors is a symlink).
for f in config.json tokenizer.model tokenizer.json tokenizer_config.json model.safetensors; do
  cp -L "$SRC/$f" "$WORK/hf/$f"
done
# The converter picks its class from `architectures`, which the fixture's config leaves out.
python3 -c 'import json, sys
p = sys.argv[1]; c = json.load(open(p))
c.setdefault("architectures", ["BitNetForCausalLM"])
json.dump(c, open(p, "w"), indent=2)' "$WORK/hf/config.json"
python3 "$ROOT/scripts/convert_bitnet_hf_to_gguf.py" "$convert" "$WORK/hf" \
  --outfile "$WORK/tiny-bitnet-f32.gguf" --outtype f32 >"$WORK/convert.log" 2>&1 \
  || { cat "$WORK/convert.log" >&2; exit 1; }
for q in TQ1_0 TQ2_0; do
  lower="$(echo "$q" | tr 'A-Z' 'a-z')"
  "$bin/llama-quantize" "$WORK/tiny-bitnet-f32.gguf" "$OUT/tiny-bitnet-$lower.gguf" "$q" \
    >"$WORK/quantize-$q.log" 2>&1 || { cat "$WORK/quantize-$q.log" >&2; exit 1; }
done
python3 - "$bin" "$WORK" "$OUT" "$TEXT" "$CTX" "$THREADS" "$convert" "$gguf_py" <<'PY'
import collections, json, pathlib, re, subprocess, sys
bin_dir, work, out, text, ctx, threads, convert, gguf_py = sys.argv[1:9]
sys.path.insert(0, gguf_py)
import gguf
bin_dir, work, out = pathlib.Path(bin_dir), pathlib.Path(work), pathlib.Path(out)
root = out.parent.parent

def ppl(gguf_file):
    # llama.cpp's logger runs on a thread that exit sometimes cuts short, losing the last
    # lines: rerun until the final line is there (the numbers are deterministic).
    for attempt in range(8):
        r = subprocess.run([str(bin_dir / "llama-perplexity"), "-m", str(gguf_file), "-f", text,
                            "-c", ctx, "-b", ctx, "-t", threads, "--no-warmup"],
                           capture_output=True, text=True)
        log = r.stdout + r.stderr
        m = re.search(r"Final estimate: PPL = ([0-9.]+) \+/- ([0-9.]+)", log)
        if r.returncode != 0 or m:
            break
    if r.returncode != 0 or not m:
        sys.exit(f"llama-perplexity failed on {gguf_file}:\n{log[-3000:]}")
    return {"ppl": float(m.group(1)), "ppl_stderr": float(m.group(2)), "final_line": m.group(0),
            "tensor_types": dict(sorted(collections.Counter(
                t.tensor_type.name for t in gguf.GGUFReader(str(gguf_file)).tensors).items()))}

def tokenize(gguf, s):
    f = work / "t.txt"
    f.write_bytes(s.encode())
    r = subprocess.run([str(bin_dir / "llama-tokenize"), "-m", str(gguf), "-f", str(f), "--ids",
                        "--no-escape", "--log-disable"], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])

files = {"f32": work / "tiny-bitnet-f32.gguf",
         "tq1_0": out / "tiny-bitnet-tq1_0.gguf",
         "tq2_0": out / "tiny-bitnet-tq2_0.gguf"}
prompts = ["The keeper's daughter", "Four score and seven years ago", " two  spaces",
           "digits 1776 and unicode café 🦙", "<s>special</s>"]
tq2 = files["tq2_0"]
doc = {
    "source": "fixtures/tiny-bitnet/silu-bf16 via scripts/convert_bitnet_hf_to_gguf.py (f32), llama-quantize",
    "llama_cpp": pathlib.Path(convert).resolve().parent.parent.parent.name
                 + " (llama-cpp-python's vendored llama.cpp): llama-perplexity -c ctx -b ctx, llama-tokenize",
    "text_file": "fixtures/text/declaration-gettysburg.txt",
    "ctx": int(ctx),
    "perplexity": {k: {"file": (v.name if k != "f32" else None), **ppl(v)} for k, v in files.items()},
    "prompts": [{"text": p, "ids": tokenize(tq2, p)} for p in prompts],
    "text_ids": tokenize(tq2, pathlib.Path(text).read_text(encoding="utf-8")),
}
(out / "reference.json").write_text(json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n", encoding="utf-8")
for k, v in doc["perplexity"].items():
    print(f"{k}: {v['final_line']} (ctx {ctx}; {v['tensor_types']})")
print(f"text: {len(doc['text_ids'])} ids")
PY
ls -la "$OUT"
