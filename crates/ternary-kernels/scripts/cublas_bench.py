#!/usr/bin/env python3
"""Time cuBLAS FP16 (through PyTorch) on the shapes gpu-bench measured, and print a ratio table.

Usage (on the GPU machine, after `./gpu-bench --json ours.json`):

    python3 cublas_bench.py --ours ours.json [--out results.md]

For each (rows, cols, n) of the product kernels in ours.json, times
`torch.nn.functional.linear(x, W)` with x: n x cols and W: rows x cols in float16 on the GPU
(CUDA events, warm-up first), measures PyTorch's device copy bandwidth, and prints a markdown
table: our time, cuBLAS time, speedup (cuBLAS / ours), and the bytes each moves per second as a
fraction of the copy bandwidth. `--self-test` renders a table from synthetic numbers without
torch (checks the script itself).
"""

import argparse
import datetime
import json
import sys

PRODUCT_KERNELS = ("f32", "int8", "int8+quantize", "f32 skip (95% zeros)",
                   "f32 (95% zeros, dense kernel)")


def load_ours(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def cublas_bytes(rows, cols, n):
    """FP16 bytes a linear layer must move: weights, activations in, outputs out."""
    return 2 * (rows * cols + n * cols + n * rows)


def render(records, cublas_us, copy_gbs_torch, header):
    """Markdown table. records: our JSON records; cublas_us: {(rows, cols, n): microseconds}."""
    lines = [header, "",
             "| kernel | rows x cols | n | ours (us) | cuBLAS FP16 (us) | speedup | ours GB/s "
             "(% of copy) | cuBLAS GB/s (% of copy) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in records:
        if r["kernel"] not in PRODUCT_KERNELS:
            continue
        key = (r["rows"], r["cols"], r["n"])
        ours = r["us"]
        cub = cublas_us.get(key)
        ours_gbs = r["bytes"] / ours / 1e3
        if cub is None:
            cub_s, speed, cub_bw = "-", "-", "-"
        else:
            cub_gbs = cublas_bytes(*key) / cub / 1e3
            cub_s = f"{cub:.1f}"
            speed = f"{cub / ours:.2f}x"
            cub_bw = f"{cub_gbs:.0f} ({100 * cub_gbs / copy_gbs_torch:.0f}%)"
        lines.append(
            f"| {r['kernel']} | {key[0]} x {key[1]} | {key[2]} | {ours:.1f} | {cub_s} | {speed} | "
            f"{ours_gbs:.0f} ({100 * ours_gbs / copy_gbs_torch:.0f}%) | {cub_bw} |")
    others = [r for r in records if r["kernel"] not in PRODUCT_KERNELS]
    if others:
        lines += ["", "| other kernel | shape | count | ours (us) |", "|---|---|---|---|"]
        for r in others:
            lines.append(f"| {r['kernel']} | {r['rows']} x {r['cols']} | {r['n']} | {r['us']:.1f} |")
    return "\n".join(lines)


def time_cuda(torch, fn, budget_s=0.25):
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    fn()
    end.record()
    torch.cuda.synchronize()
    one_ms = max(start.elapsed_time(end), 1e-4)
    iters = int(min(max(budget_s * 1e3 / one_ms, 3), 200))
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1e3 / iters  # microseconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ours", help="JSON lines written by gpu-bench --json")
    ap.add_argument("--out", help="also write the markdown table here")
    ap.add_argument("--self-test", action="store_true")
    args = ap.parse_args()

    if args.self_test:
        recs = [{"kernel": "f32", "rows": 4096, "cols": 4096, "n": 1, "us": 10.0,
                 "bytes": 8.4e6, "copy_gbs": 3000.0},
                {"kernel": "edits", "rows": 11008, "cols": 4096, "n": 100000, "us": 900.0,
                 "bytes": 0, "copy_gbs": 3000.0}]
        table = render(recs, {(4096, 4096, 1): 30.0}, 3000.0, "# self-test")
        assert "3.00x" in table and "edits" in table, table
        print(table)
        return 0

    if not args.ours:
        ap.error("--ours is required")
    import torch  # noqa: E402  (only needed on the GPU machine)
    if not torch.cuda.is_available():
        print("cublas_bench: torch sees no CUDA device", file=sys.stderr)
        return 2
    records = load_ours(args.ours)
    dev = torch.device("cuda")
    # Copy bandwidth: 1 GiB device-to-device.
    a = torch.empty(1 << 28, dtype=torch.float32, device=dev)
    b = torch.empty_like(a)
    copy_us = time_cuda(torch, lambda: b.copy_(a))
    copy_gbs = 2 * a.numel() * 4 / copy_us / 1e3
    del a, b

    cublas_us = {}
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = True
    for key in sorted({(r["rows"], r["cols"], r["n"]) for r in records
                       if r["kernel"] in PRODUCT_KERNELS}):
        rows, cols, n = key
        w = torch.randn(rows, cols, device=dev, dtype=torch.float16)
        x = torch.randn(n, cols, device=dev, dtype=torch.float16)
        cublas_us[key] = time_cuda(torch, lambda: torch.nn.functional.linear(x, w))
        del w, x

    name = torch.cuda.get_device_name(0)
    ours_copy = records[0]["copy_gbs"] if records else float("nan")
    header = (f"# gpu-bench vs cuBLAS FP16 on {name}, {datetime.date.today().isoformat()}\n\n"
              f"torch {torch.__version__}, CUDA {torch.version.cuda}; copy bandwidth: "
              f"PyTorch {copy_gbs:.0f} GB/s, our copy kernel {ours_copy:.0f} GB/s "
              f"(percentages below are of the PyTorch figure). Speedup = cuBLAS time / ours.")
    table = render(records, cublas_us, copy_gbs, header)
    print(table)
    if args.out:
        with open(args.out, "w") as f:
            f.write(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
