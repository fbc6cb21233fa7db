//! Ternary attention scores against a reference: the quantizer's rule written out plainly
//! (`f32` statistics, as `ternary_core::quant::attention` defines them), scores in `f64` (the
//! model's score seam is tested in `ternary-models`' `score_seam` test).
//!
//! Inputs are random from a fixed seed (`ternary_testkit::seed`), printed (and shown on
//! failure); `TERNARY_TEST_SEED=<seed>` runs another.
//!
//! Tolerances: trits, scales and integer dots are exact; a score `Σ α_q · α_k · dot` is compared
//! with the `f64` reference by `|S − S_ref| ≤ 1e-6 · Σ |α_q · α_k · dot|` (the `f32` rounding of
//! the result; an integer dot off by one would be off by at least one `α_q · α_k`, i.e. a
//! relative `1/d ≥ 1/128` of that term's mass).

mod common;
use common::rng;

use burn::tensor::{Tensor, TensorData};
use rand::RngExt;
use rand::rngs::StdRng;
use ternary_layers::Cpu;
use ternary_layers::ScoreFn;
use ternary_layers::attention::{TernaryVectors, ternary_scores_host};
use ternary_layers::{ScaleRule, TernaryScoreConfig, TernaryScores};

const REL_TOL: f64 = 1e-6;

/// Random vectors; some are all zero, some have ties at the threshold, most are Gaussian-ish.
fn random_vectors(rng: &mut StdRng, count: usize, d: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(count * d);
    for _ in 0..count {
        match rng.random_range(0..8) {
            0 => v.extend(std::iter::repeat_n(0.0, d)),
            // Values ±1 and ±0.5 with mean |v| = 1 would put 0.5 exactly at the threshold m/2
            // only when the mean is exactly 1; use ±2 and ±1 (and 0) to create such ties often.
            1 => v.extend((0..d).map(|_| [2.0f32, -2.0, 1.0, -1.0, 0.0][rng.random_range(0..5)])),
            _ => v.extend((0..d).map(|_| {
                let a: f32 = rng.random_range(-1.0..1.0);
                let b: f32 = rng.random_range(-1.0..1.0);
                (a + b) * 3.0
            })),
        }
    }
    v
}

/// The rule of the module docs (`ternary_core::quant::attention`), written out plainly: per
/// level, trits and the scale of each group, statistics as `f32` sums in index order.
fn reference_ternarize(x: &[f32], cfg: &TernaryScoreConfig) -> Vec<(Vec<i64>, Vec<f64>)> {
    let d = x.len();
    let group = cfg.group.unwrap_or(d).min(d);
    let mut r = x.to_vec();
    let mut levels = Vec::new();
    for _ in 0..cfg.levels {
        let mut t = vec![0i64; d];
        let mut scales = Vec::new();
        for g0 in (0..d).step_by(group) {
            let g1 = (g0 + group).min(d);
            let n = (g1 - g0) as f32;
            let mut sum = 0f32;
            for v in &r[g0..g1] {
                sum += v.abs();
            }
            if !sum.is_finite() {
                scales.push(f64::NAN);
                continue;
            }
            let (mut kept, mut count) = (0f32, 0u32);
            for i in g0..g1 {
                // |r| > mean|r| / 2, as two f32 products.
                if r[i].abs() * n > 0.5 * sum {
                    t[i] = if r[i] > 0.0 { 1 } else { -1 };
                    kept += r[i].abs();
                    count += 1;
                }
            }
            let scale = match cfg.rule {
                ScaleRule::AbsMean => sum / n,
                ScaleRule::Refit if count == 0 => 0.0,
                ScaleRule::Refit => kept / count as f32,
            };
            // The residual uses the stored f32 scale.
            for i in g0..g1 {
                r[i] -= scale * t[i] as f32;
            }
            scales.push(f64::from(scale));
        }
        levels.push((t, scales));
    }
    levels
}

fn decode(v: &TernaryVectors, i: usize, level: usize) -> Vec<i64> {
    let (p, m) = v.planes(i, level);
    (0..v.dim)
        .map(|c| {
            let bit = 1u32 << (c % 32);
            i64::from(p[c / 32] & bit != 0) - i64::from(m[c / 32] & bit != 0)
        })
        .collect()
}

/// Every configuration the tests cover.
fn configs() -> Vec<TernaryScoreConfig> {
    let mut out = Vec::new();
    for rule in [ScaleRule::AbsMean, ScaleRule::Refit] {
        for group in [None, Some(8), Some(16), Some(32), Some(48), Some(64)] {
            for levels in [1, 2] {
                out.push(TernaryScoreConfig {
                    rule,
                    group,
                    levels,
                });
            }
        }
    }
    out
}

/// Per group, `Σ_{i ∈ g} a_i · b_i`.
fn group_dots(a: &[i64], b: &[i64], group: usize) -> Vec<i64> {
    a.chunks(group)
        .zip(b.chunks(group))
        .map(|(x, y)| x.iter().zip(y).map(|(p, q)| p * q).sum())
        .collect()
}

#[test]
fn ternarize_and_dot_should_match_the_reference_exactly() {
    let mut rng = rng();
    for d in [1usize, 31, 32, 33, 63, 64, 65, 128] {
        for cfg in configs() {
            let group = cfg.group.unwrap_or(d).min(d);
            let x = random_vectors(&mut rng, 6, d);
            let y = random_vectors(&mut rng, 5, d);
            let tx = TernaryVectors::ternarize(&x, d, &cfg).unwrap();
            let ty = TernaryVectors::ternarize(&y, d, &cfg).unwrap();
            let mut dots = vec![0i64; tx.groups()];
            for i in 0..6 {
                let rx = reference_ternarize(&x[i * d..(i + 1) * d], &cfg);
                for (la, (t, s)) in rx.iter().enumerate() {
                    let tag = format!("d={d} {cfg:?} vector {i} level {la}");
                    assert_eq!(&decode(&tx, i, la), t, "{tag}");
                    let got: Vec<f64> = tx
                        .group_scales(i, la)
                        .iter()
                        .map(|&v| f64::from(v))
                        .collect();
                    assert_eq!(&got, s, "{tag}: scales");
                    for j in 0..5 {
                        let ry = reference_ternarize(&y[j * d..(j + 1) * d], &cfg);
                        for (lb, (u, _)) in ry.iter().enumerate() {
                            tx.group_dots(i, la, &ty, j, lb, &mut dots).unwrap();
                            assert_eq!(dots, group_dots(t, u, group), "{tag}: dot with {j}/{lb}");
                        }
                    }
                }
            }
        }
    }
}

/// `S[h, i, j] = Σ_{a,b} Σ_g α_q · α_k · dot_g` in `f64` from the reference rule, with the
/// mass `Σ |α_q · α_k · dot_g|`.
#[allow(clippy::too_many_arguments)]
fn reference_scores(
    q: &[f32],
    k: &[f32],
    nh: usize,
    nkv: usize,
    n: usize,
    total: usize,
    d: usize,
    cfg: &TernaryScoreConfig,
) -> (Vec<f64>, Vec<f64>) {
    let heads_per_kv = nh / nkv;
    let group = cfg.group.unwrap_or(d).min(d);
    let keys: Vec<_> = k.chunks(d).map(|v| reference_ternarize(v, cfg)).collect();
    let mut out = vec![0f64; nh * n * total];
    let mut mass = vec![0f64; nh * n * total];
    for h in 0..nh {
        for i in 0..n {
            let qo = (h * n + i) * d;
            let rq = reference_ternarize(&q[qo..qo + d], cfg);
            for j in 0..total {
                let rk = &keys[(h / heads_per_kv) * total + j];
                let (mut acc, mut abs) = (0f64, 0f64);
                for (tq, sq) in &rq {
                    for (tk, sk) in rk {
                        for ((dot, a), b) in group_dots(tq, tk, group).iter().zip(sq).zip(sk) {
                            let term = a * b * *dot as f64;
                            acc += term;
                            abs += term.abs();
                        }
                    }
                }
                out[(h * n + i) * total + j] = acc;
                mass[(h * n + i) * total + j] = abs;
            }
        }
    }
    (out, mass)
}

fn check_scores(what: &str, got: &[f32], want: &[f64], mass: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (idx, ((&g, &w), &m)) in got.iter().zip(want).zip(mass).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(err <= REL_TOL * m, "{what} [{idx}]: got {g}, want {w}");
    }
}

#[test]
fn scores_should_match_the_reference_with_grouped_heads() {
    let mut rng = rng();
    // (n_h, n_kv): SmolLM2's 9/3, plain multi-head, one shared key head.
    for &(nh, nkv) in &[(9usize, 3usize), (2, 2), (4, 1)] {
        for &d in &[1usize, 33, 64, 65] {
            for (c, &(n, total)) in [(1usize, 1usize), (1, 17), (5, 7), (17, 17)]
                .iter()
                .enumerate()
            {
                for cfg in configs().into_iter().skip(c % 2).step_by(2) {
                    let q = random_vectors(&mut rng, nh * n, d);
                    let k = random_vectors(&mut rng, nkv * total, d);
                    let (want, mass) = reference_scores(&q, &k, nh, nkv, n, total, d, &cfg);
                    let got = ternary_scores_host(&q, &k, nh, nkv, n, total, d, &cfg).unwrap();
                    let tag = format!("{nh}/{nkv} heads d={d} n={n} T={total} {cfg:?}");
                    check_scores(&tag, &got, &want, &mass);
                    // Through the ScoreFn seam, on Burn tensors.
                    let dev = Default::default();
                    let qt = Tensor::<Cpu, 3>::from_data(TensorData::new(q, [nh, n, d]), &dev);
                    let kt = Tensor::<Cpu, 3>::from_data(TensorData::new(k, [nkv, total, d]), &dev);
                    let s = TernaryScores::new(cfg).scores(0, qt, kt);
                    assert_eq!(s.dims(), [nh, n, total], "{tag}");
                    let s = s.into_data().into_vec::<f32>().unwrap();
                    assert_eq!(s, got, "{tag}: seam vs host");
                }
            }
        }
    }
}

#[test]
fn bad_shapes_should_be_errors_and_nan_inputs_nan_scores() {
    let cfg = TernaryScoreConfig::default();
    assert!(ternary_scores_host(&[0.0; 8], &[0.0; 8], 3, 2, 1, 1, 4, &cfg).is_err());
    assert!(ternary_scores_host(&[0.0; 8], &[0.0; 7], 2, 2, 1, 1, 4, &cfg).is_err());
    assert!(TernaryVectors::ternarize(&[1.0; 5], 2, &cfg).is_err());
    for bad in [
        TernaryScoreConfig { levels: 3, ..cfg },
        TernaryScoreConfig { levels: 0, ..cfg },
        TernaryScoreConfig {
            group: Some(0),
            ..cfg
        },
    ] {
        assert!(ternary_scores_host(&[0.0; 4], &[0.0; 4], 1, 1, 1, 1, 4, &bad).is_err());
    }
    let dev = Default::default();
    let q = Tensor::<Cpu, 3>::zeros([2, 1, 4], &dev);
    let k = Tensor::<Cpu, 3>::zeros([2, 1, 5], &dev);
    assert!(TernaryScores::default().try_scores(q, k).is_err());
    // A NaN key poisons exactly the scores it takes part in.
    let q = vec![1.0f32, -1.0, 0.5, 2.0];
    let mut k = vec![1.0f32; 8];
    k[5] = f32::NAN;
    let s = ternary_scores_host(&q, &k, 1, 1, 1, 2, 4, &cfg).unwrap();
    assert!(s[0].is_finite() && s[1].is_nan(), "{s:?}");
}
