#!/usr/bin/env python3
"""A random F16 GGUF shaped like BitNet b1.58 2B4T, for speed measurements only.

    PYTHONPATH=<llama.cpp gguf-py> python3 scripts/make_random_bitnet_gguf.py OUT.gguf [--seed S]
        [--layers N] [--vocab V]

Architecture `bitnet` (llama.cpp's LLM_ARCH_BITNET; our GGUF reader maps it to
`Architecture::BitNet`): hidden 2560, 30 layers, FFN 6912, 20 heads, 5 KV heads, head dim
128, vocabulary 128256, tied embeddings (llama.cpp's BitNet graph always uses `token_embd`
as the output matrix), `attn_sub_norm` / `ffn_sub_norm` as in 2B4T. The activation is not
stored in GGUF: llama.cpp's BitNet graph uses its own (SiLU), 2B4T's is ReLU²; the cost is
the same.

Weights: every linear weight is `s · t` with `t` uniform in {-1, 0, +1} and one f16 scale
`s = f16(1 / sqrt(2/3 · fan_in))` per tensor (keeps activations near unit variance), so
llama.cpp's TQ2_0 (`llama-quantize OUT.gguf OUT-tq2_0.gguf TQ2_0`, one f16 scale per 256
weights = the block's max |w|) holds them exactly. The embedding is N(0, 0.02²) in f16,
the norms are ones (F32). The tokenizer is a synthetic SentencePiece-style vocabulary
(`llama`): `<unk>`, `<s>`, `</s>`, the 256 byte tokens, a few pieces so that "the the ..."
encodes as one token per word, and filler pieces up to the vocabulary size.

Memory: tensors are generated and written one at a time (gguf-py's streaming writer); the
largest is the embedding (V·2560 f16, 0.66 GB). The file is written to OUT.tmp and renamed.
Needs numpy and gguf-py (llama.cpp's copy: `scripts/llama_cpp.sh` prints `gguf_py=`).
"""
import argparse
import math
import os
import sys

import numpy as np

try:
    import gguf
except ImportError:
    sys.exit("gguf-py not found: put llama.cpp's gguf-py first on PYTHONPATH "
             "(scripts/llama_cpp.sh prints gguf_py=) or pip install gguf")

HIDDEN = 2560
FFN = 6912
HEADS = 20
KV_HEADS = 5
HEAD_DIM = 128
VOCAB = 128256
LAYERS = 30
CTX = 4096


def vocab(n):
    """Token strings, scores and types of a synthetic SentencePiece vocabulary of size n."""
    tokens = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    types = [2, 3, 3] + [6] * 256
    # "the" merges t+h -> th, th+e -> the, ▁+the -> ▁the; no other pair of these is a piece.
    pieces = ["\u2581", "t", "h", "e", "th", "the", "\u2581the"]
    pieces += [c for c in "abcdfgijklmnopqrsuvwxyz0123456789.,"]
    tokens += pieces
    types += [1] * len(pieces)
    i = 0
    while len(tokens) < n:
        tokens.append(f"\u2581w{i}")
        types.append(1)
        i += 1
    tokens, types = tokens[:n], types[:n]
    # Higher score merges first (llama.cpp's SPM tokenizer); the chain above wins over fillers.
    scores = [0.0] * n
    for rank, tok in enumerate(tokens):
        scores[rank] = -float(rank)
    return tokens, scores, types


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--layers", type=int, default=LAYERS)
    ap.add_argument("--vocab", type=int, default=VOCAB)
    a = ap.parse_args()
    rng = np.random.default_rng(a.seed)
    kv = KV_HEADS * HEAD_DIM
    tmp = a.out + ".tmp"
    w = gguf.GGUFWriter(tmp, "bitnet")
    w.add_name("BitNet-b1.58-2B-4T-shape random ternary")
    w.add_context_length(CTX)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(a.layers)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(500000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_vocab_size(a.vocab)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    tokens, scores, types = vocab(a.vocab)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores(scores)
    w.add_token_types(types)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_unk_token_id(0)
    w.add_add_bos_token(True)
    w.add_add_space_prefix(True)

    # (name, numpy shape [rows, cols], kind) in file order.
    plan = [("token_embd.weight", (a.vocab, HIDDEN), "embed"),
            ("output_norm.weight", (HIDDEN,), "norm")]
    for l in range(a.layers):
        b = f"blk.{l}."
        plan += [(b + "attn_norm.weight", (HIDDEN,), "norm"),
                 (b + "attn_q.weight", (HIDDEN, HIDDEN), "linear"),
                 (b + "attn_k.weight", (kv, HIDDEN), "linear"),
                 (b + "attn_v.weight", (kv, HIDDEN), "linear"),
                 (b + "attn_output.weight", (HIDDEN, HIDDEN), "linear"),
                 (b + "attn_sub_norm.weight", (HIDDEN,), "norm"),
                 (b + "ffn_norm.weight", (HIDDEN,), "norm"),
                 (b + "ffn_gate.weight", (FFN, HIDDEN), "linear"),
                 (b + "ffn_up.weight", (FFN, HIDDEN), "linear"),
                 (b + "ffn_down.weight", (HIDDEN, FFN), "linear"),
                 (b + "ffn_sub_norm.weight", (FFN,), "norm")]
    for name, shape, kind in plan:
        dtype = np.float32 if kind == "norm" else np.float16
        n = math.prod(shape)
        w.add_tensor_info(name, shape, np.dtype(dtype), n * np.dtype(dtype).itemsize)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()

    total = 0
    for name, shape, kind in plan:
        if kind == "norm":
            t = np.ones(shape, dtype=np.float32)
        elif kind == "embed":
            t = np.empty(shape, dtype=np.float16)
            step = 8192
            for r in range(0, shape[0], step):
                rows = min(step, shape[0] - r)
                t[r:r + rows] = (rng.standard_normal((rows, shape[1]), dtype=np.float32)
                                 * 0.02).astype(np.float16)
        else:
            s = np.float16(1.0 / math.sqrt(2.0 / 3.0 * shape[1]))
            t = rng.integers(-1, 2, size=shape, dtype=np.int8).astype(np.float16) * s
        w.write_tensor_data(t)
        total += t.nbytes
        del t
    w.close()
    os.replace(tmp, a.out)
    print(f"wrote {a.out}: {len(plan)} tensors, {total / 1e9:.2f} GB of weights", file=sys.stderr)


if __name__ == "__main__":
    main()
