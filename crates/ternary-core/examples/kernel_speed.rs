//! Ad-hoc kernel timing: GFLOPS (`2 · rows · cols · n / time`) of every available level.
//!
//! ```text
//! cargo run --release -p ternary-core --example kernel_speed -- [rows] [cols] [n...]
//! ```
//! Defaults: 4096 × 14336, n = 1 and 512, one thread (`RAYON_NUM_THREADS` is ignored; set
//! `THREADS=2` to use two). Each case reports the best of several runs. The scalar level is
//! timed only for n ≤ 8, a secondary level's f32 path (AVX2 on an AVX-512 host) only for
//! n ≤ 64; `LEVEL=avx512` times one level, `F32=0` skips the f32 path; `TERNARY_SIMD=avx2`
//! makes the run look like an AVX2-only host's. Also prints a read-bandwidth probe over a
//! buffer the size of the planes, the floor for GEMV (which must stream every plane byte once).

use std::hint::black_box;
use std::time::{Duration, Instant};

use ternary_core::kernels::{self, Level};
use ternary_core::{QuantizedActivations, Scales, TernaryMatrix};

fn best_of(budget: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    let mut best = Duration::MAX;
    let mut runs = 0;
    while runs < 3 || (start.elapsed() < budget && runs < 50) {
        let t = Instant::now();
        f();
        best = best.min(t.elapsed());
        runs += 1;
    }
    best
}

/// xorshift64*: deterministic pseudo-random bits without extra dependencies.
fn next(state: &mut u64) -> u64 {
    *state ^= *state >> 12;
    *state ^= *state << 25;
    *state ^= *state >> 27;
    state.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let rows = args.first().copied().unwrap_or(4096);
    let cols = args.get(1).copied().unwrap_or(14336);
    let ns: Vec<usize> = if args.len() > 2 {
        args[2..].to_vec()
    } else {
        vec![1, 512]
    };
    let threads: usize = std::env::var("THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let only = std::env::var("LEVEL").ok();
    if let Some(o) = &only
        && !Level::available().iter().any(|l| l.name() == o)
    {
        eprintln!(
            "LEVEL={o} is not available here (available: {:?}); no kernel is timed",
            Level::available()
        );
    }
    let with_f32 = std::env::var("F32").map_or(true, |v| v != "0");
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .expect("thread pool");

    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let trits: Vec<i8> = (0..rows * cols)
        .map(|_| match next(&mut state) % 3 {
            0 => -1,
            1 => 0,
            _ => 1,
        })
        .collect();
    let m = TernaryMatrix::from_trits(rows, cols, &trits, Scales::per_row(vec![0.5; rows]))
        .expect("matrix");
    drop(trits);
    let plane_bytes = (m.plus().len() + m.minus().len()) * 4;
    println!(
        "matrix {rows}x{cols}, per-row scales, planes {:.1} MB, threads {threads}, levels {:?}",
        plane_bytes as f64 / 1e6,
        Level::available()
    );

    // Read bandwidth over plane-sized memory: sum every u64 of both planes.
    let bw = pool.install(|| {
        best_of(Duration::from_millis(500), || {
            let s: u64 = m
                .plus()
                .iter()
                .chain(m.minus())
                .map(|&w| u64::from(w))
                .sum();
            black_box(s);
        })
    });
    println!(
        "read bandwidth (planes, hot): {:.1} GB/s",
        plane_bytes as f64 / bw.as_secs_f64() / 1e9
    );

    for &n in &ns {
        let x: Vec<f32> = (0..n * cols)
            .map(|_| (next(&mut state) % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        let a = QuantizedActivations::quantize(&x, n, cols).expect("quantize");
        let flops = 2.0 * rows as f64 * cols as f64 * n as f64;
        let mut y = vec![0f32; n * rows];
        let qt = pool.install(|| {
            best_of(Duration::from_millis(300), || {
                black_box(QuantizedActivations::quantize(&x, n, cols).expect("quantize"));
            })
        });
        println!(
            "n={n}: activation quantization {:.3} ms",
            qt.as_secs_f64() * 1e3
        );
        for level in Level::available() {
            if (level == Level::Scalar && n > 8) || only.as_ref().is_some_and(|o| o != level.name())
            {
                continue;
            }
            let budget = Duration::from_secs(2);
            let ti = pool.install(|| {
                best_of(budget, || {
                    kernels::gemm_i8_with(level, &m, &a, &mut y).expect("gemm_i8")
                })
            });
            let tf = if (level != Level::detect() && n > 64) || !with_f32 {
                None
            } else {
                Some(pool.install(|| {
                    best_of(budget, || {
                        kernels::gemm_f32_with(level, &m, &x, n, &mut y).expect("gemm_f32")
                    })
                }))
            };
            let gf = |t: Duration| flops / t.as_secs_f64() / 1e9;
            print!(
                "  {:7} int8: {:9.3} ms {:7.1} GFLOPS {:6.1} GB/s planes",
                level.name(),
                ti.as_secs_f64() * 1e3,
                gf(ti),
                plane_bytes as f64 / ti.as_secs_f64() / 1e9
            );
            match tf {
                Some(tf) => println!(
                    "   | f32: {:9.3} ms {:7.1} GFLOPS",
                    tf.as_secs_f64() * 1e3,
                    gf(tf)
                ),
                None => println!(),
            }
        }
    }
}
