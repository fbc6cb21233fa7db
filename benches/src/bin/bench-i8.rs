//! `bench-i8 [--level NAME] [--shape ROWSxCOLS] [--group G] [--reps R] [--packed] [N...]`: one int8
//! ternary kernel, one thread, a few seconds per token count: a quicker loop than the core suite
//! for tuning. `--packed` multiplies the matrices as the runtime holds them (`PackedTernary`,
//! repacked for the level at load).
//!
//! `cargo run --release -p ternary-bench --bin bench-i8 -- --level avx2 1 8 64 512`
//!
//! Per `n` (default 1, 8, 64, 512) and regime, prints the median and best GFLOPS
//! (`2 · rows · cols · n / time`), the weight bytes read per second at the median, and the
//! 1-minute load average before the run. *hot* reuses
//! one matrix; *streaming* rotates over copies totalling ≥ 96 MiB, more than this host's L3,
//! so planes come from DRAM. Activation quantization is outside the timed call.

use std::time::Instant;

use ternary_bench::data::{random_activations, random_ternary_in_groups};
use ternary_core::QuantizedActivations;
use ternary_core::kernels::{self, Level, PackedTernary};

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut level = Level::detect();
    let (mut rows, mut cols) = (4096, 14336);
    let mut reps = 0usize;
    let mut group = None;
    let mut packed = false;
    let mut ns = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--level" => {
                let name = args.next().ok_or("--level needs a name")?;
                level = Level::from_name(&name).ok_or("unknown level")?;
            }
            "--shape" => {
                let s = args.next().ok_or("--shape needs ROWSxCOLS")?;
                let (r, c) = s.split_once('x').ok_or("--shape needs ROWSxCOLS")?;
                (rows, cols) = (r.parse()?, c.parse()?);
            }
            "--group" => group = Some(args.next().ok_or("--group needs a size")?.parse()?),
            "--reps" => reps = args.next().ok_or("--reps needs a number")?.parse()?,
            "--packed" => packed = true,
            n => ns.push(n.parse::<usize>()?),
        }
    }
    if ns.is_empty() {
        ns = vec![1, 8, 64, 512];
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build()?;
    // The planes, or (`--packed`) the layout the runtime repacks them into for `level`.
    let hold = |m| {
        if packed {
            PackedTernary::new(level, m)
        } else {
            PackedTernary::shared(std::sync::Arc::new(m))
        }
    };
    let hot = hold(random_ternary_in_groups(rows, cols, group, 1)?);
    let bytes = hot.storage_bytes();
    let copies = ((96 << 20) / bytes.max(1)).max(2);
    let streaming: Vec<_> = (0..copies)
        .map(|i| random_ternary_in_groups(rows, cols, group, 100 + i as u64).map(hold))
        .collect::<Result<_, _>>()?;
    println!(
        "{} {rows}x{cols}, scales {}, {}, 1 thread, {copies} streaming copies; GFLOPS median \
         (best), GB/s of weights read at the median",
        level.name(),
        group.map_or("per row".to_string(), |g| format!("per {g} columns")),
        if hot.is_repacked() {
            "repacked"
        } else {
            "planes"
        },
    );
    println!("| n | regime | load | median | best | GB/s | reps |");
    println!("|---:|---|---|---:|---:|---:|---:|");
    for &n in &ns {
        let x = random_activations(n * cols, 7);
        let a = QuantizedActivations::quantize(&x, n, cols)?;
        let mut y = vec![0f32; n * rows];
        let flops = 2.0 * (rows * cols * n) as f64;
        let calls = if reps > 0 {
            reps
        } else {
            ((8e9 / flops) as usize).clamp(5, 400)
        };
        for (regime, ms) in [
            ("hot", std::slice::from_ref(&hot)),
            ("streaming", &streaming),
        ] {
            let before = load();
            let mut times: Vec<f64> = pool.install(|| {
                let run = |m: &PackedTernary, y: &mut [f32]| {
                    kernels::gemm_i8_packed_rows_with(level, m, &a, 0..rows, y)
                };
                run(&ms[0], &mut y)?;
                (0..calls)
                    .map(|k| {
                        let m = &ms[(k + 1) % ms.len()];
                        let t0 = Instant::now();
                        run(m, &mut y)?;
                        Ok(t0.elapsed().as_secs_f64())
                    })
                    .collect::<Result<_, ternary_core::TernaryError>>()
            })?;
            times.sort_by(f64::total_cmp);
            let gf = |t: f64| flops / t / 1e9;
            let median = times[times.len() / 2];
            println!(
                "| {n} | {regime} | {before} | {:.1} | {:.1} | {:.1} | {calls} |",
                gf(median),
                gf(times[0]),
                bytes as f64 / median / 1e9,
            );
        }
    }
    Ok(())
}
