//! `gpu-bench`: the conformance suite on a GPU runtime, then timings of every kernel at
//! Llama-7B shapes, with achieved bandwidth against a measured device copy.
//!
//! ```text
//! gpu-bench [--runtime cuda|hip|wgpu] [--quick] [--no-conformance] [--json PATH]
//! ```
//!
//! - `--runtime`: which compiled-in runtime to use (default: the first of cuda, hip, wgpu that
//!   this binary was built with).
//! - `--quick`: shapes divided by 8 and n ≤ 16 (a smoke run, e.g. on lavapipe).
//! - `--json PATH`: also write one JSON object per timing (read by `scripts/cublas_bench.py`).
//!
//! Without a usable device it prints why and times `ternary-core`'s CPU kernels at the same
//! shapes instead (the CPU path remains the fallback). Exit code: 0 on success, 1 when a
//! conformance check fails.

// Built without a runtime feature, only the CPU fallback is reachable.
#![cfg_attr(
    not(any(feature = "cuda", feature = "hip", feature = "wgpu")),
    allow(dead_code, unused_imports)
)]

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use ternary_core::rng::SplitMix64;
use ternary_kernels::cubecl::prelude::*;
use ternary_kernels::{
    DeviceActivations, DeviceArray, DeviceBitmap, DeviceCaps, DeviceMatrix, DeviceQuantized,
    GemmStrategy, attention, conformance, device, launch_gemm, launch_gemm_i8, launch_gemv_skip,
    launch_quantize_into,
};

#[derive(Debug, Clone)]
struct Opts {
    runtime: Option<String>,
    quick: bool,
    conformance: bool,
    json: Option<String>,
}

fn parse_args() -> Result<Opts, String> {
    let mut opts = Opts {
        runtime: None,
        quick: false,
        conformance: true,
        json: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runtime" => opts.runtime = Some(args.next().ok_or("--runtime needs a value")?),
            "--quick" => opts.quick = true,
            "--no-conformance" => opts.conformance = false,
            "--json" => opts.json = Some(args.next().ok_or("--json needs a path")?),
            "-h" | "--help" => {
                return Err(
                    "usage: gpu-bench [--runtime cuda|hip|wgpu] [--quick] [--no-conformance] \
                     [--json PATH]"
                        .into(),
                );
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(opts)
}

/// One timing.
struct Record {
    kernel: &'static str,
    rows: usize,
    cols: usize,
    n: usize,
    seconds: f64,
    bytes: f64,
}

/// Llama-7B projection shapes `(rows, cols)`.
const SHAPES: [(usize, usize); 3] = [(4096, 4096), (11008, 4096), (4096, 11008)];
const TOKENS: [usize; 4] = [1, 4, 16, 8192];

fn main() -> ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let compiled: Vec<&str> = [
        cfg!(feature = "cuda").then_some("cuda"),
        cfg!(feature = "hip").then_some("hip"),
        cfg!(feature = "wgpu").then_some("wgpu"),
    ]
    .into_iter()
    .flatten()
    .collect();
    let runtime = opts
        .runtime
        .clone()
        .or_else(|| compiled.first().map(|s| s.to_string()));
    let result: Result<ExitCode, String> = match runtime.as_deref() {
        #[cfg(feature = "cuda")]
        Some("cuda") => match device::cuda_client() {
            Ok(c) => Ok(run(c, &opts)),
            Err(e) => Err(e.to_string()),
        },
        #[cfg(feature = "hip")]
        Some("hip") => match device::hip_client() {
            Ok(c) => Ok(run(c, &opts)),
            Err(e) => Err(e.to_string()),
        },
        #[cfg(feature = "wgpu")]
        Some("wgpu") => match device::wgpu_client() {
            Ok(c) => Ok(run(c, &opts)),
            Err(e) => Err(e.to_string()),
        },
        Some(other) => Err(format!(
            "runtime {other:?} is not compiled in (this binary has: {compiled:?}); rebuild \
             with --features cuda / hip / wgpu"
        )),
        None => Err("no GPU runtime compiled in; rebuild with --features cuda / hip / wgpu".into()),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("gpu-bench: no usable GPU: {e}");
            eprintln!("gpu-bench: falling back to ternary-core's CPU kernels");
            cpu_fallback(&opts);
            ExitCode::SUCCESS
        }
    }
}

fn run<R: Runtime>(client: ComputeClient<R>, opts: &Opts) -> ExitCode {
    let caps = DeviceCaps::of(&client);
    println!("# gpu-bench on {} ({caps:?})", R::name(&client));
    let mut failed = false;
    if opts.conformance {
        println!("\n## Conformance (vs ternary-core scalar references)\n");
        for (name, r) in conformance::run_all(&client) {
            match r {
                Ok(conformance::Ran::Passed(n)) => println!("- {name}: ok ({n} checks)"),
                Ok(conformance::Ran::Unsupported(m)) => {
                    println!("- {name}: unsupported on this device ({m})")
                }
                Err(e) => {
                    failed = true;
                    println!("- {name}: FAILED: {e}");
                }
            }
        }
        if failed {
            println!("\nconformance failed: timings skipped");
            return ExitCode::from(1);
        }
    }
    match bench(&client, opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            println!("benchmark error: {e}");
            ExitCode::from(1)
        }
    }
}

/// Times `f` (which launches work) until about `budget` seconds are spent; returns seconds per
/// call, after one warm-up call (which also compiles the kernel).
fn time_it<R: Runtime>(
    client: &ComputeClient<R>,
    mut f: impl FnMut() -> ternary_kernels::Result<()>,
) -> ternary_kernels::Result<f64> {
    f()?;
    device::sync(client)?;
    let t = Instant::now();
    f()?;
    device::sync(client)?;
    let one = t.elapsed().as_secs_f64().max(1e-7);
    let iters = ((0.25 / one) as usize).clamp(2, 200);
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    device::sync(client)?;
    Ok(t.elapsed().as_secs_f64() / iters as f64)
}

fn copy_bandwidth<R: Runtime>(
    client: &ComputeClient<R>,
    words: usize,
) -> ternary_kernels::Result<f64> {
    let src = DeviceArray::<R, u32>::from_slice(client, &vec![7u32; words]);
    let dst = DeviceArray::<R, u32>::empty(client, words);
    let s = time_it(client, || device::launch_copy(client, &src, &dst))?;
    Ok(8.0 * words as f64 / s)
}

fn bench<R: Runtime>(client: &ComputeClient<R>, opts: &Opts) -> ternary_kernels::Result<()> {
    let div = if opts.quick { 8 } else { 1 };
    let tokens: Vec<usize> = TOKENS
        .iter()
        .copied()
        .filter(|&n| !opts.quick || n <= 16)
        .collect();
    let copy_words = if opts.quick { 1 << 22 } else { 1 << 28 };
    let bw = copy_bandwidth(client, copy_words)?;
    println!(
        "\n## Timings\n\nmeasured copy bandwidth: {:.1} GB/s ({} MiB copied)\n",
        bw / 1e9,
        (copy_words * 4) >> 20
    );
    println!(
        "| kernel | rows x cols | n | time (us) | GB/s | % of copy | G weights x tokens / s \
         (scores: G q x k x heads / s; edits: G edits / s) |"
    );
    println!("|---|---|---|---|---|---|---|");
    let mut records = Vec::new();
    let mut rng = SplitMix64::new(42);
    for &(rows, cols) in &SHAPES {
        let (rows, cols) = (rows / div, cols / div);
        for (kernel, zeros) in [("dense", 1.0 / 3.0), ("sparse95", 0.95)] {
            let m = conformance::random_matrix(
                &mut rng,
                rows,
                cols,
                ternary_core::ScaleLayout::PerRow,
                zeros,
            );
            let dm = DeviceMatrix::upload(client, &m)?;
            let plane_bytes = 2.0 * 4.0 * (rows * m.words_per_row()) as f64 + 4.0 * rows as f64;
            let bitmap = DeviceBitmap::build(client, &dm)?;
            for &n in &tokens {
                if kernel == "sparse95" && n > 16 {
                    continue;
                }
                let x = conformance::random_activations(&mut rng, n, cols);
                let dx = DeviceActivations::upload(client, &x, n, cols)?;
                let y = DeviceArray::<R, f32>::empty(client, n * rows);
                let io = 4.0 * (n * (ternary_kernels::padded_cols(cols) + rows)) as f64;
                let mut push = |name: &'static str, s: f64, bytes: f64| {
                    print_row(name, rows, cols, n, s, bytes, bw);
                    records.push(Record {
                        kernel: name,
                        rows,
                        cols,
                        n,
                        seconds: s,
                        bytes,
                    });
                };
                if kernel == "dense" {
                    let s = time_it(client, || {
                        launch_gemm(client, &dm, &dx, &y, GemmStrategy::Auto).map(|_| ())
                    })?;
                    push("f32", s, plane_bytes + io);
                    let dq = DeviceQuantized::empty(client, n, cols)?;
                    launch_quantize_into(client, &dx, &dq)?;
                    let s = time_it(client, || {
                        launch_gemm_i8(client, &dm, &dq, &y, None).map(|_| ())
                    })?;
                    push("int8", s, plane_bytes + io);
                    let s = time_it(client, || {
                        launch_quantize_into(client, &dx, &dq)?;
                        launch_gemm_i8(client, &dm, &dq, &y, None).map(|_| ())
                    })?;
                    push("int8+quantize", s, plane_bytes + 2.0 * io);
                } else {
                    let s = time_it(client, || {
                        launch_gemm(client, &dm, &dx, &y, GemmStrategy::Auto).map(|_| ())
                    })?;
                    push("f32 (95% zeros, dense kernel)", s, plane_bytes + io);
                    let nz = bitmap.read(client)?.count_nonempty() as f64;
                    let s = time_it(client, || {
                        launch_gemv_skip(client, &dm, &bitmap, &dx, &y).map(|_| ())
                    })?;
                    push("f32 skip (95% zeros)", s, 8.0 * nz + io);
                }
            }
        }
    }
    // Attention scoring at Llama-7B head sizes: 32 heads of 128.
    let (heads, dim) = (32, 128);
    for &(nq, nk) in &[(1usize, 4096usize), (2048, 2048)] {
        let (nq, nk) = (nq.div_ceil(div), nk / div);
        let q = conformance::random_activations(&mut rng, nq * heads, dim);
        let k = conformance::random_activations(&mut rng, nk * heads, dim);
        let dq = DeviceArray::<R, f32>::from_slice(client, &q);
        let dk = DeviceArray::<R, f32>::from_slice(client, &k);
        let qh =
            attention::launch_quantize_heads(client, &dq, nq, heads, dim, attention::QkQuant::TWN)?;
        let kh =
            attention::launch_quantize_heads(client, &dk, nk, heads, dim, attention::QkQuant::TWN)?;
        let out = DeviceArray::<R, f32>::empty(client, heads * nq * nk);
        let s = time_it(client, || {
            attention::launch_qk_scores(client, &qh, &kh, 0.088, true, &out)
        })?;
        let bytes = 4.0 * (heads * nq * nk) as f64 + 8.0 * 4.0 * (nq + nk) as f64 * heads as f64;
        print_row("qk scores (causal)", nq, nk, heads, s, bytes, bw);
        records.push(Record {
            kernel: "qk_scores",
            rows: nq,
            cols: nk,
            n: heads,
            seconds: s,
            bytes,
        });
    }
    // A batch of 100k edits on the 11008 x 4096 matrix.
    {
        let (rows, cols) = (11008 / div, 4096 / div);
        let m = conformance::random_matrix(
            &mut rng,
            rows,
            cols,
            ternary_core::ScaleLayout::PerRow,
            0.4,
        );
        let dm = DeviceMatrix::upload(client, &m)?;
        let edits: Vec<ternary_kernels::Edit> = (0..100_000 / div)
            .map(|_| ternary_kernels::Edit {
                row: rng.below(rows),
                col: rng.below(cols),
                value: rng.trit(1.0 / 3.0),
            })
            .collect();
        let s = time_it(client, || {
            ternary_kernels::launch_edits(client, &dm, &edits).map(|_| ())
        })?;
        print_row(
            "edits (host dedupe + kernel + readback)",
            rows,
            cols,
            edits.len(),
            s,
            0.0,
            bw,
        );
        records.push(Record {
            kernel: "edits",
            rows,
            cols,
            n: edits.len(),
            seconds: s,
            bytes: 0.0,
        });
    }
    if let Some(path) = &opts.json {
        let mut f = std::fs::File::create(path)
            .map_err(|e| ternary_kernels::KernelError::Device(e.to_string()))?;
        for r in &records {
            let line = format!(
                "{{\"runtime\":\"{}\",\"kernel\":\"{}\",\"rows\":{},\"cols\":{},\"n\":{},\"us\":{:.3},\"bytes\":{},\"copy_gbs\":{:.3}}}\n",
                R::name(client),
                r.kernel,
                r.rows,
                r.cols,
                r.n,
                r.seconds * 1e6,
                r.bytes,
                bw / 1e9
            );
            f.write_all(line.as_bytes())
                .map_err(|e| ternary_kernels::KernelError::Device(e.to_string()))?;
        }
        println!("\nwrote {} records to {path}", records.len());
    }
    Ok(())
}

/// One table row; the last column is weights × tokens per second (for the products), or items
/// per second for the other kernels (scores, edits).
fn print_row(name: &str, rows: usize, cols: usize, n: usize, s: f64, bytes: f64, bw: f64) {
    let gbs = bytes / s / 1e9;
    let rate = if name.starts_with("edits") {
        n as f64 / s / 1e9
    } else {
        (rows * cols * n) as f64 / s / 1e9
    };
    println!(
        "| {name} | {rows} x {cols} | {n} | {:.1} | {gbs:.1} | {:.0}% | {rate:.3} |",
        s * 1e6,
        100.0 * bytes / s / bw,
    );
}

/// Times `ternary-core`'s CPU GEMM at the same shapes (n ≤ 16).
fn cpu_fallback(opts: &Opts) {
    let div = if opts.quick { 8 } else { 1 };
    let mut rng = SplitMix64::new(42);
    println!(
        "# CPU fallback: ternary_core::kernels::gemm_f32 ({} level)\n",
        ternary_core::kernels::Level::detect()
    );
    println!("| rows x cols | n | time (us) |");
    println!("|---|---|---|");
    for &(rows, cols) in &SHAPES {
        let (rows, cols) = (rows / div, cols / div);
        let m = conformance::random_matrix(
            &mut rng,
            rows,
            cols,
            ternary_core::ScaleLayout::PerRow,
            1.0 / 3.0,
        );
        for &n in TOKENS.iter().filter(|&&n| n <= 16) {
            let x = conformance::random_activations(&mut rng, n, cols);
            let mut y = vec![0f32; n * rows];
            let iters = 5;
            let t = Instant::now();
            for _ in 0..iters {
                if let Err(e) = ternary_core::kernels::gemm_f32(&m, &x, n, &mut y) {
                    println!("cpu gemm failed: {e}");
                    return;
                }
            }
            println!(
                "| {rows} x {cols} | {n} | {:.1} |",
                t.elapsed().as_secs_f64() * 1e6 / iters as f64
            );
        }
    }
}
