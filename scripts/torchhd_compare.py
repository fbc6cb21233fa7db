#!/usr/bin/env python3
"""Compare torchhd (PyPI package `torch-hd`) with ternary-vsa on the operations of bench-vsa.

Optional; nothing in the Rust tests depends on it. Usage:

    cargo run --release -p ternary-bench --bin bench-vsa -- --out DIR
    python3 scripts/torchhd_compare.py --ours DIR/vsa.json [--quick]

It times, at D = 10,000 on the CPU, the same operations as bench-vsa — bind of two vectors,
bundling k = 500 vectors with a majority read-out, and the similarity of one query with a
codebook of M = 10,000 — for torchhd's BSC (bool tensors) and MAP (float32 ±1) models, reads the
ternary-vsa times from DIR/vsa.json, prints a markdown table with the ratio
torchhd time / ternary-vsa time (> 1: ternary-vsa is faster), and writes DIR/torchhd.json.
"""

import argparse
import json
import os
import time

import torch
import torchhd

D = 10_000
K = 500
M = 10_000


def time_op(budget, fn):
    """Seconds per call: the best of three runs of at least budget/3 seconds."""
    fn()
    best = float("inf")
    for _ in range(3):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            e = time.perf_counter() - t0
            if e >= budget / 3:
                best = min(best, e / n)
                break
    return best


def ours(report, op, threads):
    for row in report["throughput"]:
        if row["op"] == op and row["implementation"] == "planes" and row["threads"] == threads:
            return row["seconds_per_call"]
    return None


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ours", required=True, help="vsa.json written by bench-vsa")
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    with open(args.ours) as f:
        report = json.load(f)
    budget = 0.3 if args.quick else 1.0
    threads_all = max(r["threads"] for r in report["throughput"])
    torch.manual_seed(0)

    bsc = torchhd.random(2, D, vsa="BSC")
    bsc_items = torchhd.random(K, D, vsa="BSC")
    bsc_code = torchhd.random(M, D, vsa="BSC")
    mp = torchhd.random(2, D, vsa="MAP")
    mp_code = torchhd.random(M, D, vsa="MAP")

    cases = [
        # (our op, threads, torchhd label, callable)
        ("bind (binary XOR, new vector)", 1, "BSC bind (bool XOR)",
         lambda: torchhd.bind(bsc[0], bsc[1])),
        ("bind (ternary product, new vector)", 1, "MAP bind (float32 product)",
         lambda: torchhd.bind(mp[0], mp[1])),
        ("bundle k=500 + majority", 1, "BSC multiset k=500 (majority)",
         lambda: torchhd.multiset(bsc_items)),
        ("similarity: 1 query x 10,000 entries", 1, "BSC hamming_similarity 1 x 10,000",
         lambda: torchhd.hamming_similarity(bsc[0], bsc_code)),
        ("similarity: 1 query x 10,000 entries", 1, "MAP dot_similarity 1 x 10,000",
         lambda: torchhd.dot_similarity(mp[0], mp_code)),
        ("similarity: 1 query x 10,000 entries", threads_all, "BSC hamming_similarity 1 x 10,000",
         lambda: torchhd.hamming_similarity(bsc[0], bsc_code)),
        ("similarity: 1 query x 10,000 entries", threads_all, "MAP dot_similarity 1 x 10,000",
         lambda: torchhd.dot_similarity(mp[0], mp_code)),
    ]

    rows = []
    for op, threads, label, fn in cases:
        torch.set_num_threads(threads)
        t = time_op(budget, fn)
        mine = ours(report, op, threads)
        ratio = t / mine if mine else None
        rows.append({"torchhd_op": label, "ternary_vsa_op": op, "threads": threads,
                     "torchhd_seconds": t, "ternary_vsa_seconds": mine,
                     "torchhd_over_ternary_vsa": ratio})

    machine = report.get("machine", "unknown machine")
    print(f"# torchhd {torchhd.__version__} (torch {torch.__version__}, CPU) vs ternary-vsa\n")
    print(f"Machine: {machine}. D = {D}. Ratio = torchhd time / ternary-vsa time.\n")
    print("| torchhd operation | ternary-vsa operation | threads | torchhd | ternary-vsa | ratio |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        mine = r["ternary_vsa_seconds"]
        ratio = r["torchhd_over_ternary_vsa"]
        mine_s = "—" if mine is None else f"{mine * 1e6:.1f} µs"
        ratio_s = "—" if ratio is None else f"{ratio:.1f}×"
        print(f"| {r['torchhd_op']} | {r['ternary_vsa_op']} | {r['threads']} "
              f"| {r['torchhd_seconds'] * 1e6:.1f} µs | {mine_s} | {ratio_s} |")
    out = os.path.join(os.path.dirname(os.path.abspath(args.ours)), "torchhd.json")
    with open(out, "w") as f:
        json.dump({"torchhd": torchhd.__version__, "torch": torch.__version__,
                   "machine": machine, "rows": rows}, f, indent=2)


if __name__ == "__main__":
    main()
