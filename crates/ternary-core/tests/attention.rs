//! `kernels::causal_attention_with` at every available level against the `f64` reference
//! (`reference::causal_attention`), on random inputs from a fixed, printed seed
//! (`TERNARY_TEST_SEED=<seed>` runs another).
//!
//! Tolerance: `|o − o_ref| ≤ TOL · Σ_p w_p·|v_p|` per output (`w` the reference's weights),
//! `TOL = 1e-5`: `f32` scores over `d ≤ 65` values in `[−1, 1]`, a polynomial `exp` within a few
//! ulp and `f32` sums over up to 641 positions stay well inside it, while leaving out or
//! adding one position of weight `≥ 1/641` breaks it.

use rand::rngs::StdRng;
use ternary_core::kernels::{self, AttentionScratch, Level};
use ternary_core::reference;

const TOL: f64 = 1e-5;

fn random(rng: &mut StdRng, len: usize) -> Vec<f32> {
    ternary_testkit::random_f32(rng, len, -1.0, 1.0)
}

/// `[rows, cols]` → `[cols, rows]`.
fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; x.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = x[r * cols + c];
        }
    }
    t
}

/// `Σ_p w_p·|v_p,i|` per output `[nt, d]`, with the reference's weights.
fn mass(q: &[f32], keys: &[f32], values: &[f32], d: usize, pos0: usize, scale: f32) -> Vec<f64> {
    let abs: Vec<f32> = values.iter().map(|v| v.abs()).collect();
    reference::causal_attention(q, keys, &abs, d, pos0, scale)
}

#[allow(clippy::too_many_arguments)]
fn check(
    level: Level,
    rng: &mut StdRng,
    seed: u64,
    d: usize,
    pos0: usize,
    nt: usize,
    extra: usize,
) {
    let len = pos0 + nt + extra;
    let q = random(rng, nt * d);
    let keys = random(rng, len * d);
    let values = random(rng, len * d);
    let scale = (1.0 / (d as f64).sqrt()) as f32;
    let want = reference::causal_attention(&q, &keys, &values, d, pos0, scale);
    let mass = mass(&q, &keys, &values, d, pos0, scale);
    let q_t = transpose(&q, nt, d);
    let mut out_t = vec![f32::NAN; nt * d];
    let mut scratch = AttentionScratch::default();
    kernels::causal_attention_with(
        level,
        &q_t,
        nt,
        &keys,
        &values,
        d,
        pos0,
        scale,
        &mut out_t,
        &mut scratch,
    )
    .unwrap();
    let got = transpose(&out_t, d, nt);
    for (i, ((&g, &w), &m)) in got.iter().zip(&want).zip(&mass).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= TOL * m,
            "{level} d={d} pos0={pos0} nt={nt}: token {} feature {} = {g}, reference {w}, \
             error {err:e} > {TOL:e} * {m} (TERNARY_TEST_SEED={seed})",
            i / d,
            i % d
        );
    }
}

#[test]
fn causal_attention_should_match_reference_on_edge_shapes() {
    let (mut rng, seed) = ternary_testkit::seeded();
    for level in Level::available() {
        for d in [1, 8, 63, 64, 65] {
            for pos0 in [0, 1, 63, 64, 65] {
                for nt in [1, 15, 16, 17, 31, 32, 33, 63, 64, 65] {
                    check(level, &mut rng, seed, d, pos0, nt, nt % 3);
                }
            }
        }
    }
}

#[test]
fn causal_attention_should_match_reference_on_a_long_prefill() {
    let (mut rng, seed) = ternary_testkit::seeded();
    for level in Level::available() {
        check(level, &mut rng, seed, 64, 0, 576, 0);
        check(level, &mut rng, seed, 64, 65, 576, 0);
    }
}

/// Outputs `[d, nt]` of `causal_attention_with` at `level`.
#[allow(clippy::too_many_arguments)]
fn attend(
    level: Level,
    q_t: &[f32],
    nt: usize,
    keys: &[f32],
    values: &[f32],
    d: usize,
    pos0: usize,
    scale: f32,
) -> Vec<f32> {
    let mut out_t = vec![0f32; nt * d];
    let mut scratch = AttentionScratch::default();
    kernels::causal_attention_with(
        level,
        q_t,
        nt,
        keys,
        values,
        d,
        pos0,
        scale,
        &mut out_t,
        &mut scratch,
    )
    .unwrap();
    out_t
}

#[test]
fn causal_attention_levels_should_agree_on_the_masking() {
    // A value row far larger than the others shows at once if any token sees a position past
    // its own (the reference check above bounds the error; this one names the failure).
    let (mut rng, seed) = ternary_testkit::seeded();
    let (d, pos0, nt) = (16, 3, 40);
    let len = pos0 + nt;
    let q_t = random(&mut rng, nt * d);
    let keys = random(&mut rng, len * d);
    let mut values = random(&mut rng, len * d);
    values[(len - 1) * d..].fill(1e6);
    for level in Level::available() {
        let out_t = attend(level, &q_t, nt, &keys, &values, d, pos0, 0.25);
        for t in 0..nt - 1 {
            for i in 0..d {
                let o = out_t[i * nt + t];
                assert!(
                    o.abs() < 2.0,
                    "{level}: token {t} sees the last position ({o}) (TERNARY_TEST_SEED={seed})"
                );
            }
        }
        assert!(
            out_t[nt - 1] > 1e3,
            "{level}: the last token must see itself"
        );
    }
}

#[test]
fn non_finite_scores_should_give_nan_for_the_tokens_that_see_them() {
    let (mut rng, seed) = ternary_testkit::seeded();
    let (d, pos0, nt) = (8, 2, 20);
    let len = pos0 + nt;
    let q_t = random(&mut rng, nt * d);
    let mut keys = random(&mut rng, len * d);
    let values = random(&mut rng, len * d);
    // Position 10 is seen by tokens 8.. (pos0 + t ≥ 10).
    keys[10 * d] = f32::NAN;
    for level in Level::available() {
        let out_t = attend(level, &q_t, nt, &keys, &values, d, pos0, 0.3);
        // Feature 0 of every token: the first `nt` outputs.
        for (t, &o) in out_t[..nt].iter().enumerate() {
            assert_eq!(
                o.is_nan(),
                t >= 8,
                "{level}: token {t} output {o} (TERNARY_TEST_SEED={seed})"
            );
        }
    }
}

#[test]
fn bad_attention_shapes_should_be_errors() {
    let mut scratch = AttentionScratch::default();
    let level = Level::Scalar;
    let (q, kv) = (vec![0f32; 8], vec![0f32; 16]);
    let mut out = vec![0f32; 8];
    // Too few key rows for pos0 + nt positions.
    assert!(
        kernels::causal_attention_with(level, &q, 2, &kv, &kv, 4, 3, 1.0, &mut out, &mut scratch)
            .is_err()
    );
    // Queries not d × nt.
    assert!(
        kernels::causal_attention_with(level, &q, 3, &kv, &kv, 4, 0, 1.0, &mut out, &mut scratch)
            .is_err()
    );
    // Output of the wrong size.
    let mut short = vec![0f32; 4];
    assert!(
        kernels::causal_attention_with(level, &q, 2, &kv, &kv, 4, 0, 1.0, &mut short, &mut scratch)
            .is_err()
    );
    // Position overflow.
    assert!(
        kernels::causal_attention_with(
            level,
            &q,
            2,
            &kv,
            &kv,
            4,
            usize::MAX,
            1.0,
            &mut out,
            &mut scratch
        )
        .is_err()
    );
    // Nothing to do.
    let mut none: Vec<f32> = Vec::new();
    kernels::causal_attention_with(level, &[], 0, &[], &[], 4, 0, 1.0, &mut none, &mut scratch)
        .unwrap();
}
