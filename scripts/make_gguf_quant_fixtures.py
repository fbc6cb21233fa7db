#!/usr/bin/env python3
"""Regenerates fixtures/gguf-quants/: small tensors quantized and dequantized by llama.cpp's
own gguf-py (`pip install gguf numpy`), for crates/ternary-models/tests/gguf_quants.rs.

Every case is `<name>.q.bin` (the encoded tensor, rows x row bytes, as a GGUF file stores
it), mostly with `<name>.f32.bin` (the dequantized values, little-endian f32), listed in
index.json with where each came from:

- TQ1_0 / TQ2_0 from random floats: `gguf.quants.quantize`, then `gguf.quants.dequantize`.
  The Rust test decodes the bytes into bit-planes (must dequantize to the same f32 bits)
  and re-encodes them (must give the same bytes).
- TQ1_0 / TQ2_0 from exactly ternary floats `s * t` (f16-exact block scales `s`, every block
  holding a nonzero trit): the trits (`<name>.trits.bin`, int8) and block scales
  (`<name>.scales.bin`, f32) are stored too, so the Rust test builds the same matrix,
  encodes it and compares with gguf-py's bytes for the same floats.
- Q4_K / Q5_K / Q6_K: random blocks (random bytes, finite random f16 scales) dequantized by
  gguf-py. gguf-py has no Q8_K: its expected values come from the reference below, written
  from ggml's `block_q8_K` (`d: f32, qs: int8[256], bsums: int16[16]`, `w = d * qs`).
- I2_S: mainline ggml/gguf-py have no I2_S; `pack_i2s` below is an encoder written from
  bitnet.cpp's source (see crates/ternary-models/src/quant/ternary.rs), independent of the
  Rust one. Unverified against a published file.

The seed is fixed (printed and recorded); the output is deterministic for a given
gguf/numpy version (recorded too).
"""
import json
import os
import sys
import importlib.metadata as md

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants

SEED = 0x7E575EED
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "gguf-quants")
QK_K = 256


def q8_k_dequantize(raw: np.ndarray) -> np.ndarray:
    """ggml's dequantize_row_q8_K: per 292-byte block, d (f32) times each int8 quant."""
    blocks = raw.reshape(-1, 292)
    d = blocks[:, :4].copy().view(np.float32)
    qs = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
    return (d * qs).reshape(-1)


def pack_i2s(trits: np.ndarray, scale: np.float32) -> np.ndarray:
    """bitnet.cpp I2_S (x86 layout): codes t+1, 128-weight blocks of 32 bytes, weight j of a
    block in byte j % 32 at bits 6 - 2 * (j // 32); then the f32 scale and 28 zero bytes."""
    codes = (trits.reshape(-1).astype(np.int16) + 1).astype(np.uint8).reshape(-1, 4, 32)
    packed = (codes[:, 0] << 6) | (codes[:, 1] << 4) | (codes[:, 2] << 2) | codes[:, 3]
    tail = np.zeros(32, dtype=np.uint8)
    tail[:4] = np.frombuffer(np.float32(scale).tobytes(), dtype=np.uint8)
    return np.concatenate([packed.reshape(-1).astype(np.uint8), tail])


def main() -> int:
    rng = np.random.default_rng(SEED)
    print(f"seed = {SEED:#x}")
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".bin") or f == "index.json":
            os.remove(os.path.join(OUT, f))
    cases = []

    def save(name, kind, rows, cols, q, deq, source, extra=None):
        q = np.ascontiguousarray(q, dtype=np.uint8)
        q.tofile(os.path.join(OUT, f"{name}.q.bin"))
        case = {"name": name, "type": kind, "rows": rows, "cols": cols, "source": source}
        if deq is not None:
            deq = np.ascontiguousarray(deq, dtype=np.float32).reshape(-1)
            assert deq.size == rows * cols, (name, deq.size)
            deq.astype("<f4").tofile(os.path.join(OUT, f"{name}.f32.bin"))
            case["f32"] = f"{name}.f32.bin"
        if extra:
            for key, arr in extra.items():
                arr.tofile(os.path.join(OUT, f"{name}.{key}.bin"))
                case[key] = f"{name}.{key}.bin"
        cases.append(case)

    tq_shapes = [(1, 256), (1, 512), (65, 256)]
    for kind in (T.TQ1_0, T.TQ2_0):
        for rows, cols in tq_shapes:
            # Random floats with a per-row spread; one all-zero block, one tiny block
            # (f16-subnormal scale) and one with exact ties (x = ±d/2) where there is room.
            x = (rng.standard_normal((rows, cols)) * rng.uniform(0.01, 2.0, (rows, 1))).astype(np.float32)
            if rows > 2:
                x[1, :256] = 0.0
                x[2, :256] *= np.float32(1e-6)
                x[0, :256] = np.float32(0.5) * rng.choice([-1.0, 1.0, 0.0], 256).astype(np.float32)
                x[0, 7] = np.float32(1.0)
            q = quants.quantize(x, kind)
            save(f"{kind.name.lower()}_random_{rows}x{cols}", kind.name, rows, cols, q,
                 quants.dequantize(q, kind), "gguf-py quantize(random floats), gguf-py dequantize")
        for rows, cols in [(1, 512), (63, 256)]:
            t = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
            t[:, ::256] = 1  # every block holds a nonzero trit, so gguf-py's d = max|x| = s
            s = np.abs(rng.standard_normal((rows, cols // 256)) * 0.05).astype(np.float16).astype(np.float32)
            s[s == 0] = np.float32(0.0625)
            x = (np.repeat(s, 256, axis=1) * t.astype(np.float32)).astype(np.float32)
            q = quants.quantize(x, kind)
            assert np.array_equal(quants.dequantize(q, kind), x), "gguf-py does not round-trip s*t"
            save(f"{kind.name.lower()}_ternary_{rows}x{cols}", kind.name, rows, cols, q,
                 None, "gguf-py quantize(s*t) (its dequantize gives s*t back exactly)",
                 {"trits": t, "scales": s.astype("<f4")})

    for kind, nbytes in ((T.Q4_K, 144), (T.Q5_K, 176), (T.Q6_K, 210), (T.Q8_K, 292)):
        for rows, cols in [(1, 256), (3, 512), (8, 256)]:
            nb = rows * cols // QK_K
            raw = rng.integers(0, 256, (nb, nbytes), dtype=np.uint8)
            h = lambda n: (rng.standard_normal(n) * 0.02).astype(np.float16).view(np.uint8).reshape(n, 2)
            if kind in (T.Q4_K, T.Q5_K):
                raw[:, 0:2] = h(nb)
                raw[:, 2:4] = h(nb)
            elif kind == T.Q6_K:
                raw[:, 208:210] = h(nb)
            else:
                raw[:, 0:4] = (rng.standard_normal(nb) * 0.01).astype(np.float32).view(np.uint8).reshape(nb, 4)
            q = raw.reshape(rows, -1)
            if kind == T.Q8_K:
                deq, src = q8_k_dequantize(raw), "random blocks, numpy reference of ggml dequantize_row_q8_K (gguf-py has no Q8_K)"
            else:
                deq, src = quants.dequantize(q, kind), "random blocks, gguf-py dequantize"
            save(f"{kind.name.lower()}_{rows}x{cols}", kind.name, rows, cols, q, deq, src)

    for rows, cols in [(1, 128), (4, 256), (65, 128)]:
        t = rng.integers(-1, 2, (rows, cols)).astype(np.int8)
        scale = np.float32(abs(rng.standard_normal()) + 0.01)
        q = pack_i2s(t, scale)
        save(f"i2_s_{rows}x{cols}", "I2_S", rows, cols, q, None,
             "pack_i2s (this script, from bitnet.cpp's source); weights = scale * trits",
             {"trits": t})
        cases[-1]["scale"] = float(scale)

    index = {
        "generator": "scripts/make_gguf_quant_fixtures.py",
        "seed": SEED,
        "gguf_py_version": md.version("gguf"),
        "numpy_version": np.__version__,
        "cases": cases,
    }
    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"{len(cases)} cases, {total} bytes in {os.path.normpath(OUT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
