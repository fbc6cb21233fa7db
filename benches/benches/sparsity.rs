//! Criterion: latency of one weight edit (`cargo bench -p ternary-bench --bench sparsity`).
//!
//! - `BitmapMatrix::modify_dim`: planes, chunk bitmap and cached counts, all in O(1);
//! - `TernaryMatrix::set`: the dense planes alone (the specification's "dense-plane case").
//!
//! Edits cycle through 4096 precomputed random `(row, col, trit)` triples on a 4096 × 4096
//! matrix at 95% zeros, so the cost includes the cache misses of random positions.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ternary_core::{Scales, TernaryMatrix};
use ternary_sparsity::BitmapMatrix;

const DIM: usize = 4096;

/// The first SplitMix64 output for seed `i`.
fn mix(i: u64) -> u64 {
    ternary_core::rng::mix64(i.wrapping_add(ternary_core::rng::GOLDEN))
}

fn matrix() -> TernaryMatrix {
    let trits: Vec<i8> = (0..DIM * DIM)
        .map(|i| match mix(i as u64) % 40 {
            0 => 1,
            1 => -1,
            _ => 0,
        })
        .collect();
    TernaryMatrix::from_trits(DIM, DIM, &trits, Scales::per_row(vec![1.0; DIM]))
        .expect("valid trits")
}

fn edits() -> Vec<(usize, usize, i8)> {
    (0..4096u64)
        .map(|i| {
            let v = mix(i ^ 0xed17);
            (
                (v % DIM as u64) as usize,
                ((v >> 20) % DIM as u64) as usize,
                ((v >> 40) % 3) as i8 - 1,
            )
        })
        .collect()
}

fn edit_latency(c: &mut Criterion) {
    let m = matrix();
    let edits = edits();
    let mut g = c.benchmark_group("edit");
    let mut bm = BitmapMatrix::new(m.clone());
    let mut i = 0;
    g.bench_function("bitmap_modify_dim", |b| {
        b.iter(|| {
            let (r, col, t) = edits[i % edits.len()];
            i += 1;
            black_box(bm.modify_dim(black_box(r), black_box(col), black_box(t)))
        })
    });
    let mut plain = m;
    let mut i = 0;
    g.bench_function("ternary_set", |b| {
        b.iter(|| {
            let (r, col, t) = edits[i % edits.len()];
            i += 1;
            black_box(plain.set(black_box(r), black_box(col), black_box(t)))
        })
    });
    g.finish();
    assert!(
        bm.check_consistency().is_ok(),
        "bitmap consistent after the bench"
    );
}

criterion_group!(benches, edit_latency);
criterion_main!(benches);
