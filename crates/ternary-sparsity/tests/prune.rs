//! Pruning against simple sorting oracles.

mod common;

use common::*;
use rand::RngExt;
use rand::rngs::StdRng;
use ternary_core::quant::QuantConfig;
use ternary_core::{ScaleLayout, Scales, TernaryError, TernaryMatrix};
use ternary_sparsity::prune::{Pruning, prune_f32, prune_ternary, prune_then_quantize};

/// Gaussian-ish weights (sum of uniforms) with some exact zeros and exact ties.
fn weights(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len)
        .map(|_| match rng.random_range(0..20) {
            0 => 0.0,
            1 => 0.25,
            _ => (0..4).map(|_| rng.random_range(-1.0f32..1.0)).sum(),
        })
        .collect()
}

/// Oracle: sort every non-zero by (|w|, index) and zero the first `k − zeros`.
fn magnitude_oracle(w: &[f32], sparsity: f64) -> Vec<f32> {
    let k = ((sparsity * w.len() as f64).ceil() as usize).min(w.len());
    let zeros = w.iter().filter(|&&v| v == 0.0).count();
    let mut idx: Vec<usize> = (0..w.len()).filter(|&i| w[i] != 0.0).collect();
    idx.sort_by(|&a, &b| w[a].abs().total_cmp(&w[b].abs()).then(a.cmp(&b)));
    let mut out = w.to_vec();
    for &i in idx.iter().take(k.saturating_sub(zeros)) {
        out[i] = 0.0;
    }
    out
}

#[test]
fn magnitude_pruning_should_match_the_sorting_oracle() {
    let (mut rng, seed) = rng();
    for &(rows, cols) in &[(1, 1), (3, 31), (64, 65), (7, 576), (2, 1536)] {
        for s in [0.0, 0.01, 0.5, 0.9, 0.95, 0.99, 1.0] {
            let w = weights(&mut rng, rows * cols);
            let mut got = w.clone();
            let st = prune_f32(&mut got, rows, cols, Pruning::Magnitude { sparsity: s }).unwrap();
            let want = magnitude_oracle(&w, s);
            assert_eq!(got, want, "{rows}x{cols} s={s} (TERNARY_TEST_SEED={seed})");
            let k = ((s * w.len() as f64).ceil() as usize).min(w.len());
            assert_eq!(st.zeros_after, k.max(st.zeros_before));
            assert!(st.sparsity() >= s);
        }
    }
}

fn chunk_ids(cols: usize) -> usize {
    cols.div_ceil(32)
}

#[test]
fn chunk_pruning_should_zero_whole_chunks_of_smallest_mass_first() {
    let (mut rng, seed) = rng();
    for &(rows, cols) in &[(1, 31), (3, 65), (16, 576), (5, 1536)] {
        for s in [0.3, 0.5, 0.9, 0.95, 0.99] {
            let w = weights(&mut rng, rows * cols);
            let mut got = w.clone();
            let st = prune_f32(&mut got, rows, cols, Pruning::Chunks { sparsity: s }).unwrap();
            let what = format!("{rows}x{cols} s={s} (TERNARY_TEST_SEED={seed})");
            assert!(st.sparsity() >= s, "{what}");
            let (mut max_pruned, mut min_kept) = (f64::NEG_INFINITY, f64::INFINITY);
            for r in 0..rows {
                for q in 0..chunk_ids(cols) {
                    let range = r * cols + 32 * q..r * cols + (32 * q + 32).min(cols);
                    let (a, b) = (&w[range.clone()], &got[range]);
                    let mass: f64 = a.iter().map(|v| f64::from(v.abs())).sum();
                    if b.iter().all(|&v| v == 0.0) {
                        if mass > 0.0 {
                            max_pruned = max_pruned.max(mass);
                        }
                    } else {
                        assert_eq!(a, b, "{what}: a chunk is either whole or gone");
                        min_kept = min_kept.min(mass);
                    }
                }
            }
            assert!(
                max_pruned <= min_kept,
                "{what}: pruned {max_pruned} > kept {min_kept}"
            );
        }
    }
}

#[test]
fn n_of_m_pruning_should_keep_the_largest_of_each_run() {
    let (mut rng, seed) = rng();
    for (n, m) in [(2, 4), (1, 4), (4, 8), (2, 32), (3, 3), (0, 5)] {
        for &(rows, cols) in &[(1, 1), (3, 33), (4, 576)] {
            let w = weights(&mut rng, rows * cols);
            let mut got = w.clone();
            prune_f32(&mut got, rows, cols, Pruning::NOfM { n, m }).unwrap();
            for r in 0..rows {
                for start in (0..cols).step_by(m) {
                    let end = (start + m).min(cols);
                    let run = &got[r * cols + start..r * cols + end];
                    let orig = &w[r * cols + start..r * cols + end];
                    let kept = run.iter().filter(|&&v| v != 0.0).count();
                    assert!(kept <= n, "{n}:{m} (TERNARY_TEST_SEED={seed})");
                    let min_kept = run
                        .iter()
                        .filter(|&&v| v != 0.0)
                        .map(|v| v.abs())
                        .fold(f32::INFINITY, f32::min);
                    for (&a, &b) in orig.iter().zip(run) {
                        assert!(b == 0.0 || a == b);
                        if b == 0.0 && a != 0.0 {
                            assert!(
                                a.abs() <= min_kept,
                                "{n}:{m}: pruned {a} above kept {min_kept}"
                            );
                        }
                    }
                    assert_eq!(kept, n.min(orig.iter().filter(|&&v| v != 0.0).count()));
                }
            }
        }
    }
}

#[test]
fn ternary_magnitude_pruning_ranks_by_float_weights() {
    let (mut rng, seed) = rng();
    for layout in [
        ScaleLayout::PerRow,
        ScaleLayout::PerGroup { group_size: 64 },
    ] {
        let (rows, cols) = (9, 200);
        let w = weights(&mut rng, rows * cols);
        let (m0, _) = ternary_core::quant::quantize(
            &w,
            rows,
            cols,
            &QuantConfig::new(Default::default(), layout),
        )
        .unwrap();
        for s in [0.5, 0.9, 0.99] {
            let mut m = m0.clone();
            let st = prune_ternary(&mut m, Some(&w), Pruning::Magnitude { sparsity: s }).unwrap();
            let what = format!("{layout:?} s={s} (TERNARY_TEST_SEED={seed})");
            let k = (s * (rows * cols) as f64).ceil() as usize;
            assert_eq!(st.zeros_after, k.max(st.zeros_before), "{what}");
            let (before, after) = (m0.to_trits(), m.to_trits());
            let mut max_pruned = 0f32;
            let mut min_kept = f32::INFINITY;
            for i in 0..rows * cols {
                assert!(
                    after[i] == 0 || after[i] == before[i],
                    "{what}: trits only become 0"
                );
                if before[i] != 0 && after[i] == 0 {
                    max_pruned = max_pruned.max(w[i].abs());
                } else if after[i] != 0 {
                    min_kept = min_kept.min(w[i].abs());
                }
            }
            assert!(max_pruned <= min_kept, "{what}");
            assert_eq!(m.scales(), m0.scales());
        }
    }
}

#[test]
fn ternary_pruning_without_floats_uses_scales_and_counts() {
    let (mut rng, seed) = rng();
    let (rows, cols) = (6, 300);
    let m0 = random_matrix(
        &mut rng,
        rows,
        cols,
        0.6,
        Structure::Unstructured,
        ScaleLayout::PerRow,
    );
    // Magnitude: pruned trits never have a larger |s| than kept ones.
    let mut m = m0.clone();
    let st = prune_ternary(&mut m, None, Pruning::Magnitude { sparsity: 0.8 }).unwrap();
    assert_eq!(st.zeros_after, (0.8f64 * 1800.0).ceil() as usize);
    let s = m0.scales().values();
    let (before, after) = (m0.to_trits(), m.to_trits());
    let pruned_max = (0..rows * cols)
        .filter(|&i| before[i] != 0 && after[i] == 0)
        .map(|i| s[i / cols].abs())
        .fold(0f32, f32::max);
    let kept_min = (0..rows * cols)
        .filter(|&i| after[i] != 0)
        .map(|i| s[i / cols].abs())
        .fold(f32::INFINITY, f32::min);
    assert!(pruned_max <= kept_min, "(TERNARY_TEST_SEED={seed})");
    // Chunks: with equal scales, chunks with fewer non-zeros go first.
    let trits = random_trits(&mut rng, rows, cols, 0.5, Structure::Unstructured);
    let m1 =
        TernaryMatrix::from_trits(rows, cols, &trits, Scales::per_row(vec![0.5; rows])).unwrap();
    let mut m = m1.clone();
    let st = prune_ternary(&mut m, None, Pruning::Chunks { sparsity: 0.9 }).unwrap();
    assert!(st.sparsity() >= 0.9);
    let wpr = m.words_per_row();
    let (mut max_pruned, mut min_kept) = (0u32, u32::MAX);
    for i in 0..rows * wpr {
        let nz = (m1.plus()[i] | m1.minus()[i]).count_ones();
        let now = m.plus()[i] | m.minus()[i];
        if now == 0 && nz > 0 {
            max_pruned = max_pruned.max(nz);
        } else if now != 0 {
            assert_eq!((m.plus()[i], m.minus()[i]), (m1.plus()[i], m1.minus()[i]));
            min_kept = min_kept.min(nz);
        }
    }
    assert!(max_pruned <= min_kept, "(TERNARY_TEST_SEED={seed})");
    // N:M on ternary: at most n non-zeros per run.
    let mut m = m1.clone();
    prune_ternary(&mut m, None, Pruning::NOfM { n: 2, m: 8 }).unwrap();
    let t = m.to_trits();
    for row in t.chunks(cols) {
        for run in row.chunks(8) {
            assert!(run.iter().filter(|&&v| v != 0).count() <= 2);
        }
    }
}

#[test]
fn prune_then_quantize_reaches_the_target() {
    let (mut rng, _) = rng();
    let (rows, cols) = (32, 256);
    let w = weights(&mut rng, rows * cols);
    for rule in [
        Pruning::Magnitude { sparsity: 0.9 },
        Pruning::Chunks { sparsity: 0.9 },
        Pruning::NOfM { n: 2, m: 4 },
    ] {
        let (m, st, q) =
            prune_then_quantize(&w, rows, cols, rule, &QuantConfig::default()).unwrap();
        assert!(m.zero_fraction() >= st.sparsity() - 1e-12, "{rule}");
        assert!(q.rel_frobenius_error > 0.0 && q.rel_frobenius_error.is_finite());
        if let Pruning::Magnitude { sparsity } | Pruning::Chunks { sparsity } = rule {
            assert!(m.zero_fraction() >= sparsity, "{rule}");
        }
    }
}

#[test]
fn bad_pruning_input_is_an_error() {
    let mut w = vec![1.0f32; 12];
    for rule in [
        Pruning::Magnitude { sparsity: 1.5 },
        Pruning::Chunks { sparsity: -0.1 },
        Pruning::Magnitude { sparsity: f64::NAN },
        Pruning::NOfM { n: 3, m: 2 },
        Pruning::NOfM { n: 0, m: 0 },
    ] {
        assert!(
            matches!(prune_f32(&mut w, 3, 4, rule), Err(TernaryError::Config(_))),
            "{rule:?}"
        );
    }
    let ok = Pruning::Magnitude { sparsity: 0.5 };
    assert!(matches!(
        prune_f32(&mut w, 3, 5, ok),
        Err(TernaryError::Shape(_))
    ));
    w[3] = f32::NAN;
    assert!(matches!(
        prune_f32(&mut w, 3, 4, ok),
        Err(TernaryError::NonFinite { index: 3, .. })
    ));
    let mut m = TernaryMatrix::zeros(2, 6, Scales::per_row(vec![1.0; 2])).unwrap();
    assert!(matches!(
        prune_ternary(&mut m, Some(&[0.0; 5]), ok),
        Err(TernaryError::Shape(_))
    ));
    assert_eq!(m.rows(), 2, "a failed call leaves the matrix alone");
}
