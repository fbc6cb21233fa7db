//! Criterion microbenchmarks: `cargo bench -p ternary-bench` (add a filter such as `gemv`).
//!
//! - `gemv_f32/<level>`, `gemv_i8/<level>`: 4096×4096, one token, every available level
//!   (throughput in weights per second); `quantize_activations/4096` separately.
//! - `ternary_dot/<level>/<D>`, `binary_dot/<level>/<D>`: popcount dots at D = 4096, 10000.
//! - `edit/set`, `edit/get`: one `m.set(r, c, t)` / `m.get(r, c)` on a 4096×4096 matrix
//!   (the issue asks for < 20 ns per edit), at a fixed position and at random positions.
//! - `base3/pack/4096x4096`, `base3/unpack/4096x4096`: base-3 storage round trip.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ternary_bench::data::{random_activations, random_ternary};
use ternary_core::kernels::{self, Level};
use ternary_core::rng::SplitMix64;
use ternary_core::{QuantizedActivations, pack};

const ROWS: usize = 4096;
const COLS: usize = 4096;

fn gemv(c: &mut Criterion) {
    let m = random_ternary(ROWS, COLS, 1).expect("random matrix");
    let x = random_activations(COLS, 2);
    let q = QuantizedActivations::quantize(&x, 1, COLS).expect("finite activations");
    let mut y = vec![0f32; ROWS];
    let mut g = c.benchmark_group("gemv_f32");
    g.throughput(Throughput::Elements((ROWS * COLS) as u64));
    for level in Level::available() {
        g.bench_function(level.name(), |b| {
            b.iter(|| kernels::gemm_f32_with(level, &m, black_box(&x), 1, &mut y))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("gemv_i8");
    g.throughput(Throughput::Elements((ROWS * COLS) as u64));
    for level in Level::available() {
        g.bench_function(level.name(), |b| {
            b.iter(|| kernels::gemm_i8_with(level, &m, black_box(&q), &mut y))
        });
    }
    g.finish();
    c.bench_function("quantize_activations/4096", |b| {
        b.iter(|| QuantizedActivations::quantize(black_box(&x), 1, COLS))
    });
}

/// Random plane pair of `d` trits (`u32` words, padding bits zero).
fn random_planes(d: usize, seed: u64) -> (Vec<u32>, Vec<u32>) {
    let m = random_ternary(1, d, seed).expect("random row");
    let words = d.div_ceil(32);
    (m.plus()[..words].to_vec(), m.minus()[..words].to_vec())
}

fn dots(c: &mut Criterion) {
    let mut g = c.benchmark_group("ternary_dot");
    for d in [4096, 10_000] {
        let (ap, am) = random_planes(d, 3);
        let (bp, bm) = random_planes(d, 4);
        g.throughput(Throughput::Elements(d as u64));
        for level in Level::available() {
            g.bench_with_input(BenchmarkId::new(level.name(), d), &d, |b, _| {
                b.iter(|| kernels::ternary_dot_with(level, black_box(&ap), &am, &bp, &bm))
            });
        }
    }
    g.finish();
    let mut g = c.benchmark_group("binary_dot");
    for d in [4096, 10_000] {
        let (a, _) = random_planes(d, 5);
        let (b2, _) = random_planes(d, 6);
        g.throughput(Throughput::Elements(d as u64));
        for level in Level::available() {
            g.bench_with_input(BenchmarkId::new(level.name(), d), &d, |b, &d| {
                b.iter(|| kernels::binary_dot_with(level, black_box(&a), &b2, d))
            });
        }
    }
    g.finish();
}

fn edits(c: &mut Criterion) {
    let mut m = random_ternary(ROWS, COLS, 7).expect("random matrix");
    // 4096 random positions and trits, cycled through so the generator is not timed.
    let mut rng = SplitMix64::new(8);
    let pos: Vec<(usize, usize, i8)> = (0..4096)
        .map(|_| {
            let v = rng.next_u64();
            let t = [-1i8, 0, 1][(v >> 60) as usize % 3];
            ((v as usize) % ROWS, (v as usize >> 20) % COLS, t)
        })
        .collect();
    let mut g = c.benchmark_group("edit");
    g.bench_function("set/fixed", |b| {
        let mut t = 1i8;
        b.iter(|| {
            t = -t;
            m.set(black_box(123), black_box(456), t)
        })
    });
    g.bench_function("set/random", |b| {
        let mut i = 0;
        b.iter(|| {
            let (r, col, t) = pos[i & 4095];
            i += 1;
            m.set(black_box(r), black_box(col), t)
        })
    });
    g.bench_function("get/random", |b| {
        let mut i = 0;
        b.iter(|| {
            let (r, col, _) = pos[i & 4095];
            i += 1;
            m.get(black_box(r), black_box(col))
        })
    });
    g.finish();
}

fn packing(c: &mut Criterion) {
    let m = random_ternary(ROWS, COLS, 9).expect("random matrix");
    let p = pack::pack(&m);
    let mut g = c.benchmark_group("base3");
    g.throughput(Throughput::Elements((ROWS * COLS) as u64));
    g.bench_function("pack/4096x4096", |b| b.iter(|| pack::pack(black_box(&m))));
    g.bench_function("unpack/4096x4096", |b| b.iter(|| black_box(&p).unpack()));
    g.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = micro;
    config = config();
    targets = gemv, dots, edits, packing
}
criterion_main!(micro);
