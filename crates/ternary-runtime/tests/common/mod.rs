//! Shared by the runtime's tests: the reference runs and the comparison.

#![allow(dead_code)]

use ternary_layers::Cpu;
use ternary_models::{BurnDecoder, Decoder, Llama, Logits};
use ternary_runtime::Runtime;

/// Largest logit difference allowed, relative to the range of the reference's logits of the
/// same step (`max − min`): `f32` rounding in a different order through a few layers.
pub const TOL: f64 = 1e-4;

/// Prefill `ids[..prefill]` with every position's logits, then one decode step per remaining
/// id (last position's logits); the logits of each step.
pub fn steps(d: &mut dyn Decoder, ids: &[u32], prefill: usize) -> Vec<Vec<f32>> {
    d.clear();
    let mut out = vec![d.forward(&ids[..prefill], Logits::All).unwrap().to_vec()];
    for &t in &ids[prefill..] {
        out.push(d.forward(&[t], Logits::Last).unwrap().to_vec());
    }
    out
}

/// The reference's steps ([`Llama::forward`] through [`BurnDecoder`]).
pub fn reference(model: &Llama<Cpu>, ids: &[u32], prefill: usize) -> Vec<Vec<f32>> {
    steps(&mut BurnDecoder::new(model), ids, prefill)
}

/// The tolerance for BitNet W1.58A8 models: each projection re-quantizes its input to int8, so
/// a one-ulp difference upstream (attention here sums in another order than Burn's matmul,
/// and float dots differ between SIMD levels) can move one activation code by 1, which moves
/// these fixtures' logits by up to about 3e-3 of their range (seen once in 48 runs: scalar
/// float dots on `relu2-packed`; every other run agrees to 3e-7). The products themselves are
/// bit-identical (`ternary-core`'s `row_range` tests).
pub const BITNET_TOL: f64 = 5e-3;

/// Asserts each step of `got` is within [`TOL`] of the range of `want`'s; returns the worst
/// relative difference.
pub fn assert_close(want: &[Vec<f32>], got: &[Vec<f32>], what: &str) -> f64 {
    assert_close_tol(want, got, what, TOL)
}

/// [`assert_close`] with tolerance `tol`.
pub fn assert_close_tol(want: &[Vec<f32>], got: &[Vec<f32>], what: &str, tol: f64) -> f64 {
    assert_eq!(want.len(), got.len(), "{what}: steps");
    let mut worst = 0f64;
    for (s, (w, g)) in want.iter().zip(got).enumerate() {
        assert_eq!(w.len(), g.len(), "{what}: step {s} logits");
        let (lo, hi) = w.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &v| {
            (lo.min(f64::from(v)), hi.max(f64::from(v)))
        });
        let range = (hi - lo).max(1e-6);
        for (i, (&a, &b)) in w.iter().zip(g).enumerate() {
            let rel = (f64::from(a) - f64::from(b)).abs() / range;
            assert!(
                rel <= tol,
                "{what}: step {s}, logit {i}: runtime {b}, reference {a} ({rel:e} of the range {range})"
            );
            worst = worst.max(rel);
        }
    }
    worst
}

/// Runs the runtime's steps.
pub fn runtime_steps(rt: &mut Runtime, ids: &[u32], prefill: usize) -> Vec<Vec<f32>> {
    steps(rt, ids, prefill)
}
