//! Quantizers against independent `f64` implementations of their formulas, on seeded random
//! inputs and edge shapes; the activation-aware rule against brute-force searches.
//!
//! Seed: fixed (`ternary_testkit::seed`) and printed; `TERNARY_TEST_SEED=<u64>` runs another.
//! Tolerances: trits compare exactly; scales to 1e-6 relative (they are the same `f64`
//! value rounded to `f32`, so in practice they agree bit for bit); error statistics to 1e-9.

use rand::RngExt;
use rand::rngs::StdRng;
use ternary_core::quant::{
    Method, QuantConfig, QuantStats, TWN_DELTA_FACTOR, quantize, quantize_absmax, quantize_absmean,
    quantize_activation_aware, quantize_percentile, quantize_twn, weighted_error,
};
use ternary_core::{ScaleLayout, TernaryError, TernaryMatrix};

const COLS: [usize; 9] = [1, 31, 32, 33, 63, 64, 65, 576, 1536];
const LAYOUTS: [ScaleLayout; 4] = [
    ScaleLayout::PerRow,
    ScaleLayout::PerGroup { group_size: 32 },
    ScaleLayout::PerGroup { group_size: 64 },
    ScaleLayout::PerGroup { group_size: 128 },
];
const METHODS: [Method; 10] = [
    Method::AbsMean,
    Method::Twn {
        delta_factor: TWN_DELTA_FACTOR,
    },
    Method::Twn { delta_factor: 0.0 },
    Method::Twn { delta_factor: 1.3 },
    Method::AbsMax,
    Method::Percentile {
        p: 0.9,
        refit: false,
    },
    Method::Percentile {
        p: 0.99,
        refit: true,
    },
    Method::Percentile {
        p: 1.0,
        refit: false,
    },
    Method::Percentile {
        p: 0.5,
        refit: true,
    },
    // On the sparse data `s = Q_0.5 = 0`: zero scale, so zero trits.
    Method::Percentile {
        p: 0.5,
        refit: false,
    },
];

fn rng(test: &str) -> StdRng {
    eprintln!("{test}:");
    ternary_testkit::rng()
}

fn gaussian(rng: &mut StdRng) -> f64 {
    // Box–Muller; 1 - u keeps the log argument in (0, 1].
    let u: f64 = rng.random();
    let v: f64 = rng.random();
    (-2.0 * (1.0 - u).ln()).sqrt() * (std::f64::consts::TAU * v).cos()
}

/// Kinds of weights that stress different parts of the rules.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Gaussian,
    /// Values `k/4`, `k ∈ −4..=4`: many exact ties, including `|w| = s/2` cases.
    Ties,
    /// Gaussian with ~60 % exact zeros.
    Sparse,
    /// Gaussian with ~1 % outliers 50× larger.
    Outliers,
    /// Gaussian, but every third row all zero.
    ZeroRows,
}
const KINDS: [Kind; 5] = [
    Kind::Gaussian,
    Kind::Ties,
    Kind::Sparse,
    Kind::Outliers,
    Kind::ZeroRows,
];

fn weights(rng: &mut StdRng, kind: Kind, rows: usize, cols: usize) -> Vec<f32> {
    let scale = 10f64.powf(rng.random_range(-3.0..1.0));
    let mut w = Vec::with_capacity(rows * cols);
    for r in 0..rows {
        for _ in 0..cols {
            let g = gaussian(rng) * scale;
            let x = match kind {
                Kind::Gaussian => g,
                Kind::Ties => f64::from(rng.random_range(-4i32..=4)) / 4.0,
                Kind::Sparse => {
                    if rng.random::<f64>() < 0.6 {
                        0.0
                    } else {
                        g
                    }
                }
                Kind::Outliers => {
                    if rng.random::<f64>() < 0.01 {
                        g * 50.0
                    } else {
                        g
                    }
                }
                Kind::ZeroRows => {
                    if r % 3 == 1 {
                        0.0
                    } else {
                        g
                    }
                }
            };
            w.push(x as f32);
        }
    }
    w
}

fn group_len(layout: ScaleLayout, cols: usize) -> usize {
    match layout {
        ScaleLayout::PerRow => cols.max(1),
        ScaleLayout::PerGroup { group_size } => group_size,
    }
}

fn sign(x: f32) -> i8 {
    if x > 0.0 {
        1
    } else if x < 0.0 {
        -1
    } else {
        0
    }
}

/// `clamp(round(w/s), −1, 1)` with ties to even, literally (division in `f64`); `s = 0`
/// gives the documented limit `sign(w)`.
fn round_clamp(w: f32, s: f64) -> i8 {
    if s == 0.0 {
        return sign(w);
    }
    (f64::from(w) / s).round_ties_even().clamp(-1.0, 1.0) as i8
}

/// The plain formula of each method for one group: `(trits, scale in f64)`.
fn reference_group(method: Method, w: &[f32]) -> (Vec<i8>, f64) {
    let n = w.len() as f64;
    let mean_abs = w.iter().map(|&x| f64::from(x).abs()).sum::<f64>() / n;
    match method {
        Method::AbsMean => (
            w.iter().map(|&x| round_clamp(x, mean_abs)).collect(),
            mean_abs,
        ),
        Method::AbsMax => {
            let s = w.iter().map(|&x| f64::from(x).abs()).fold(0.0, f64::max);
            (w.iter().map(|&x| round_clamp(x, s)).collect(), s)
        }
        Method::Twn { delta_factor } => {
            let delta = f64::from(delta_factor) * mean_abs;
            let t: Vec<i8> = w
                .iter()
                .map(|&x| {
                    if f64::from(x).abs() > delta {
                        sign(x)
                    } else {
                        0
                    }
                })
                .collect();
            let alpha = mean_abs_where_nonzero(w, &t);
            (t, alpha)
        }
        Method::Percentile { p, refit } => {
            let mut a: Vec<f64> = w.iter().map(|&x| f64::from(x).abs()).collect();
            a.sort_by(f64::total_cmp);
            let h = f64::from(p) * (a.len() - 1) as f64;
            let lo = h.floor() as usize;
            let s = if lo + 1 < a.len() {
                a[lo] + (h - lo as f64) * (a[lo + 1] - a[lo])
            } else {
                a[lo]
            };
            let t: Vec<i8> = w.iter().map(|&x| round_clamp(x, s)).collect();
            let scale = if refit {
                mean_abs_where_nonzero(w, &t)
            } else {
                s
            };
            (t, scale)
        }
        Method::ActivationAware => unreachable!("tested against brute force"),
    }
}

/// `mean(|w_j| : t_j ≠ 0)`, `0` for an empty support.
fn mean_abs_where_nonzero(w: &[f32], t: &[i8]) -> f64 {
    let (mut sum, mut k) = (0.0, 0usize);
    for (&x, &ti) in w.iter().zip(t) {
        if ti != 0 {
            sum += f64::from(x).abs();
            k += 1;
        }
    }
    if k == 0 { 0.0 } else { sum / k as f64 }
}

/// Reference trits and scales for the whole matrix, with the shared convention that a group
/// whose `f32` scale is zero stores zero trits.
fn reference(
    method: Method,
    w: &[f32],
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
) -> (Vec<i8>, Vec<f64>) {
    let glen = group_len(layout, cols);
    let mut trits = vec![0i8; rows * cols];
    let mut scales = Vec::new();
    for r in 0..rows {
        let row = &w[r * cols..(r + 1) * cols];
        if cols == 0 {
            scales.extend(std::iter::repeat_n(0.0, layout.groups_per_row(cols)));
        }
        for (g, wg) in row.chunks(glen).enumerate() {
            let (mut t, s) = reference_group(method, wg);
            if s as f32 == 0.0 {
                t.fill(0);
            }
            let start = r * cols + g * glen;
            trits[start..start + wg.len()].copy_from_slice(&t);
            scales.push(s);
        }
    }
    (trits, scales)
}

fn rel_diff(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

/// Every output invariant, and the statistics recomputed from `dequantize()`.
fn check_output(
    what: &str,
    w: &[f32],
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
    m: &TernaryMatrix,
    stats: &QuantStats,
) {
    assert_eq!((m.rows(), m.cols()), (rows, cols), "{what}: shape");
    assert_eq!(m.scales().layout(), layout, "{what}: layout");
    assert_eq!(
        m.scales().values().len(),
        rows * layout.groups_per_row(cols),
        "{what}: scale count"
    );
    assert!(
        m.scales()
            .values()
            .iter()
            .all(|s| s.is_finite() && *s >= 0.0),
        "{what}: scales must be finite and >= 0"
    );
    // The planes satisfy every invariant of the format: rebuilding validates them.
    let (p, mi, s) = m.clone().into_parts();
    let rebuilt = TernaryMatrix::from_planes(rows, cols, p, mi, s)
        .unwrap_or_else(|e| panic!("{what}: output violates the format: {e}"));
    assert_eq!(&rebuilt, m);

    let wq = m.dequantize();
    assert!(
        wq.iter().all(|v| v.is_finite()),
        "{what}: non-finite output"
    );
    let (mut err, mut norm) = (0f64, 0f64);
    for (&a, &b) in w.iter().zip(&wq) {
        err += (f64::from(a) - f64::from(b)).powi(2);
        norm += f64::from(a).powi(2);
    }
    let rel = if norm > 0.0 { (err / norm).sqrt() } else { 0.0 };
    assert!(
        rel_diff(rel, stats.rel_frobenius_error) <= 1e-9,
        "{what}: rel error {} vs recomputed {rel}",
        stats.rel_frobenius_error
    );
    let zeros = m.to_trits().iter().filter(|&&t| t == 0).count();
    let zf = if rows * cols == 0 {
        0.0
    } else {
        zeros as f64 / (rows * cols) as f64
    };
    assert!(
        (zf - stats.zero_fraction).abs() <= 1e-12,
        "{what}: zero fraction {} vs {zf}",
        stats.zero_fraction
    );
    let measured = QuantStats::measure(w, m).unwrap();
    assert!(rel_diff(measured.rel_frobenius_error, stats.rel_frobenius_error) <= 1e-9);
}

fn run_method(
    method: Method,
    w: &[f32],
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
) -> (TernaryMatrix, QuantStats) {
    let cfg = QuantConfig::new(method, layout);
    let via_config = quantize(w, rows, cols, &cfg).unwrap();
    // The convenience functions are the same rules.
    let direct = match method {
        Method::AbsMean => quantize_absmean(w, rows, cols, layout),
        Method::Twn { delta_factor } => quantize_twn(w, rows, cols, layout, delta_factor),
        Method::AbsMax => quantize_absmax(w, rows, cols, layout),
        Method::Percentile { p, refit } => quantize_percentile(w, rows, cols, layout, p, refit),
        Method::ActivationAware => unreachable!(),
    }
    .unwrap();
    assert_eq!(
        via_config.0, direct.0,
        "{method}: quantize vs convenience fn"
    );
    assert_eq!(via_config.1, direct.1);
    via_config
}

#[test]
fn quantizers_should_match_their_formulas() {
    let mut rng = rng("quantizers_should_match_their_formulas");
    let mut checked = 0usize;
    for &cols in &COLS {
        for &layout in &LAYOUTS {
            for &kind in &KINDS {
                let rows = if cols >= 576 { 2 } else { 3 };
                let w = weights(&mut rng, kind, rows, cols);
                for &method in &METHODS {
                    let what = format!("{method} {rows}x{cols} {layout:?} {kind:?}");
                    let (m, stats) = run_method(method, &w, rows, cols, layout);
                    check_output(&what, &w, rows, cols, layout, &m, &stats);
                    let (trits, scales) = reference(method, &w, rows, cols, layout);
                    let got = m.to_trits();
                    if let Some(i) = (0..trits.len()).find(|&i| got[i] != trits[i]) {
                        panic!(
                            "{what}: trit ({}, {}) is {}, formula says {} (w = {})",
                            i / cols,
                            i % cols,
                            got[i],
                            trits[i],
                            w[i]
                        );
                    }
                    for (i, (&s, &r)) in m.scales().values().iter().zip(&scales).enumerate() {
                        assert!(
                            rel_diff(f64::from(s), r) <= 1e-6,
                            "{what}: scale {i} is {s}, formula says {r}"
                        );
                    }
                    checked += 1;
                }
            }
        }
    }
    println!("{checked} (method, shape, layout, data) cases match");
}

/// Ties at exactly `|w| = s/2` go to zero (round half to even), for abs-mean and abs-max.
#[test]
fn ties_should_round_to_even() {
    // abs-mean: s = (1 + 0.25 + 0 + 0.75) / 4 = 0.5; -0.25 is exactly s/2 → 0; 0.75 → +1.
    let w = [1.0f32, -0.25, 0.0, 0.75];
    let (m, _) = quantize_absmean(&w, 1, 4, ScaleLayout::PerRow).unwrap();
    assert_eq!(m.to_trits(), vec![1, 0, 0, 1]);
    assert_eq!(m.scales().values(), &[0.5]);
    // abs-max: s = 1, s/2 = 0.5: 0.5 → 0, 0.5000001 → 1.
    let w = [1.0f32, 0.5, -0.500_000_06, -1.0];
    let (m, _) = quantize_absmax(&w, 1, 4, ScaleLayout::PerRow).unwrap();
    assert_eq!(m.to_trits(), vec![1, 0, -1, -1]);
}

#[test]
fn hand_computed_examples_should_match() {
    // TWN: mean|w| = 4 / 8 = 0.5, Δ = 0.35: support {1.0, -0.6, 0.4, 1.4}, α = 3.4 / 4.
    let w = [1.0f32, -0.6, 0.4, 0.0, 0.1, -0.3, 0.2, 1.4];
    let (m, _) = quantize_twn(&w, 1, 8, ScaleLayout::PerRow, TWN_DELTA_FACTOR).unwrap();
    assert_eq!(m.to_trits(), vec![1, -1, 1, 0, 0, 0, 0, 1]);
    assert!(rel_diff(f64::from(m.scales().values()[0]), 0.85) < 1e-7);
    // Percentile p = 0.5 of |w| over 4 values: sorted (0, 1, 2, 4), h = 1.5 → 1.5.
    // s/2 = 0.75: trits (0, +1, -1, +1); refit α = (1 + 2 + 4) / 3.
    let w = [0.0f32, 1.0, -2.0, 4.0];
    let (m, _) = quantize_percentile(&w, 1, 4, ScaleLayout::PerRow, 0.5, false).unwrap();
    assert_eq!(m.to_trits(), vec![0, 1, -1, 1]);
    assert_eq!(m.scales().values(), &[1.5]);
    let (m, _) = quantize_percentile(&w, 1, 4, ScaleLayout::PerRow, 0.5, true).unwrap();
    assert!(rel_diff(f64::from(m.scales().values()[0]), 7.0 / 3.0) < 1e-7);
    // Activation-aware with a channel that never fires: its weight is ignored.
    let w = [10.0f32, 1.0, 1.0, 1.0];
    let e = [0.0f32, 1.0, 1.0, 1.0];
    let (m, _) = quantize_activation_aware(&w, 1, 4, ScaleLayout::PerRow, &e).unwrap();
    assert_eq!(m.to_trits(), vec![1, 1, 1, 1]);
    assert_eq!(m.scales().values(), &[1.0]);
    assert_eq!(weighted_error(&w, &m, &e).unwrap(), 0.0);
}

// ---------------------------------------------------------------------------------------------
// Activation-aware.

fn stats_vec(rng: &mut StdRng, cols: usize, skew: f64) -> Vec<f32> {
    (0..cols)
        .map(|_| (skew * gaussian(rng)).exp() as f32)
        .collect()
}

/// `Σ e (w − α t)²` for one group in `f64`, with `α` the optimum for the support of `t`.
fn best_error_for_support(w: &[f32], e: &[f32], t: &[i8]) -> f64 {
    let (mut a, mut b) = (0f64, 0f64);
    for ((&x, &ej), &tj) in w.iter().zip(e).zip(t) {
        if tj != 0 {
            a += f64::from(ej) * f64::from(x).abs();
            b += f64::from(ej);
        }
    }
    let alpha = if b > 0.0 { a / b } else { 0.0 };
    w.iter()
        .zip(e)
        .zip(t)
        .map(|((&x, &ej), &tj)| f64::from(ej) * (f64::from(x) - alpha * f64::from(tj)).powi(2))
        .sum()
}

/// Brute force over every threshold `Δ ∈ {∞} ∪ {|w_j|} ∪ {−1}`: the smallest weighted error.
fn brute_force_threshold(w: &[f32], e: &[f32]) -> f64 {
    let mut candidates: Vec<f64> = w.iter().map(|&x| f64::from(x).abs()).collect();
    candidates.push(f64::INFINITY);
    candidates.push(-1.0);
    candidates
        .iter()
        .map(|&delta| {
            let t: Vec<i8> = w
                .iter()
                .map(|&x| {
                    if f64::from(x).abs() > delta {
                        sign(x)
                    } else {
                        0
                    }
                })
                .collect();
            best_error_for_support(w, e, &t)
        })
        .fold(f64::INFINITY, f64::min)
}

/// Brute force over all `2^n` supports with `t_j = sign(w_j)` (any ternary pattern with a
/// sign against `w_j` is worse for `α ≥ 0`).
fn brute_force_all_supports(w: &[f32], e: &[f32]) -> f64 {
    let n = w.len();
    (0u32..1 << n)
        .map(|mask| {
            let t: Vec<i8> = (0..n)
                .map(|j| if mask >> j & 1 == 1 { sign(w[j]) } else { 0 })
                .collect();
            best_error_for_support(w, e, &t)
        })
        .fold(f64::INFINITY, f64::min)
}

/// Per-group weighted errors of a quantized matrix, from `dequantize()`.
fn group_errors(
    w: &[f32],
    e: &[f32],
    m: &TernaryMatrix,
    layout: ScaleLayout,
) -> Vec<(f64, f64, usize, usize)> {
    let (rows, cols) = (m.rows(), m.cols());
    let glen = group_len(layout, cols);
    let wq = m.dequantize();
    let mut out = Vec::new();
    for r in 0..rows {
        for g0 in (0..cols).step_by(glen) {
            let g1 = (g0 + glen).min(cols);
            let (mut err, mut energy) = (0f64, 0f64);
            for c in g0..g1 {
                let x = f64::from(w[r * cols + c]);
                err += f64::from(e[c]) * (x - f64::from(wq[r * cols + c])).powi(2);
                energy += f64::from(e[c]) * x * x;
            }
            out.push((err, energy, r * cols + g0, g1 - g0));
        }
    }
    out
}

#[test]
fn activation_aware_should_be_optimal_over_threshold_rules() {
    let mut rng = rng("activation_aware_should_be_optimal_over_threshold_rules");
    for &cols in &COLS {
        for &layout in &LAYOUTS {
            for &kind in &KINDS {
                let rows = if cols >= 576 { 2 } else { 3 };
                let what = &format!("{rows}x{cols} {layout:?} {kind:?}");
                let w = weights(&mut rng, kind, rows, cols);
                let mut e = stats_vec(&mut rng, cols, 1.5);
                // Some dead channels.
                for c in (0..cols).step_by(7) {
                    e[c] = 0.0;
                }
                let (m, stats) = quantize_activation_aware(&w, rows, cols, layout, &e).unwrap();
                check_output(what, &w, rows, cols, layout, &m, &stats);
                let trits = m.to_trits();
                for (gi, (err, energy, start, len)) in
                    group_errors(&w, &e, &m, layout).into_iter().enumerate()
                {
                    let c0 = start % cols.max(1);
                    let (wg, eg) = (&w[start..start + len], &e[c0..c0 + len]);
                    let best = brute_force_threshold(wg, eg);
                    assert!(
                        err <= best + 1e-6 * energy,
                        "{what}: group {gi} error {err} > brute-force optimum {best} (energy {energy})"
                    );
                    // The scale is the optimal one for its own support.
                    let tg = &trits[start..start + len];
                    let (mut a, mut b) = (0f64, 0f64);
                    for ((&x, &ej), &tj) in wg.iter().zip(eg).zip(tg) {
                        if tj != 0 {
                            a += f64::from(ej) * f64::from(x).abs();
                            b += f64::from(ej);
                        }
                    }
                    let s = f64::from(m.scales().values()[gi]);
                    if b > 0.0 {
                        assert!(
                            rel_diff(s, a / b) <= 1e-6,
                            "{what}: group {gi} scale {s} vs {}",
                            a / b
                        );
                    } else {
                        assert_eq!(s, 0.0, "{what}: group {gi} has no weighted support");
                    }
                    // Trits are a threshold rule with signs of w.
                    let min_in = wg
                        .iter()
                        .zip(tg)
                        .filter(|(_, t)| **t != 0)
                        .map(|(x, _)| x.abs())
                        .fold(f32::INFINITY, f32::min);
                    let max_out = wg
                        .iter()
                        .zip(tg)
                        .filter(|(_, t)| **t == 0)
                        .map(|(x, _)| x.abs())
                        .fold(0.0, f32::max);
                    assert!(
                        max_out < min_in || min_in == f32::INFINITY,
                        "{what}: group {gi} is not a threshold support"
                    );
                    assert!(wg.iter().zip(tg).all(|(&x, &t)| t == 0 || t == sign(x)));
                }
            }
        }
    }
}

#[test]
fn activation_aware_should_match_exhaustive_search_on_small_groups() {
    let mut rng = rng("activation_aware_should_match_exhaustive_search_on_small_groups");
    for trial in 0..400 {
        let n = rng.random_range(1..=12usize);
        let kind = KINDS[trial % KINDS.len()];
        let w = weights(&mut rng, kind, 1, n);
        // Uniform statistics: the threshold optimum is the optimum over all supports.
        let e = vec![rng.random_range(0.1f32..10.0); n];
        let (m, _) = quantize_activation_aware(&w, 1, n, ScaleLayout::PerRow, &e).unwrap();
        let err = weighted_error(&w, &m, &e).unwrap();
        let energy: f64 = w
            .iter()
            .zip(&e)
            .map(|(&x, &ej)| f64::from(ej) * f64::from(x).powi(2))
            .sum();
        let best = brute_force_all_supports(&w, &e);
        assert!(
            err <= best + 1e-6 * energy,
            "trial {trial} n={n} {kind:?}: {err} > exhaustive optimum {best}"
        );
        // Skewed statistics: optimal over threshold rules (a non-threshold support may win).
        let e = stats_vec(&mut rng, n, 2.0);
        let (m, _) = quantize_activation_aware(&w, 1, n, ScaleLayout::PerRow, &e).unwrap();
        let err = weighted_error(&w, &m, &e).unwrap();
        let energy: f64 = w
            .iter()
            .zip(&e)
            .map(|(&x, &ej)| f64::from(ej) * f64::from(x).powi(2))
            .sum();
        let best = brute_force_threshold(&w, &e);
        assert!(
            err <= best + 1e-6 * energy,
            "trial {trial}: {err} > threshold optimum {best}"
        );
        assert!(brute_force_all_supports(&w, &e) <= err + 1e-6 * energy);
    }
}

fn unweighted_methods() -> [Method; 5] {
    [
        Method::AbsMean,
        Method::twn(),
        Method::AbsMax,
        Method::percentile(0.95),
        Method::Percentile {
            p: 0.95,
            refit: true,
        },
    ]
}

#[test]
fn activation_aware_should_not_lose_to_unweighted_methods_with_uniform_stats() {
    let mut rng = rng("activation_aware_should_not_lose_to_unweighted_methods_with_uniform_stats");
    for &layout in &LAYOUTS {
        for &kind in &KINDS {
            let (rows, cols) = (8, 576);
            let w = weights(&mut rng, kind, rows, cols);
            let e = vec![1.0f32; cols];
            let (m, _) = quantize_activation_aware(&w, rows, cols, layout, &e).unwrap();
            let aa = weighted_error(&w, &m, &e).unwrap();
            for method in unweighted_methods() {
                let (mq, _) = quantize(&w, rows, cols, &QuantConfig::new(method, layout)).unwrap();
                let other = weighted_error(&w, &mq, &e).unwrap();
                assert!(
                    aa <= other * (1.0 + 1e-6),
                    "{layout:?} {kind:?}: activation-aware {aa} > {method} {other}"
                );
            }
        }
    }
}

#[test]
fn activation_aware_should_beat_unweighted_methods_with_skewed_stats() {
    let mut rng = rng("activation_aware_should_beat_unweighted_methods_with_skewed_stats");
    // Every pair strictly; on average by a wide margin. (Observed over 40 seeds: per-pair
    // ratios 0.06 … 0.98, the highest for TWN per row, where only Δ and α of a whole row can
    // adapt; geometric mean of all 20 ratios 0.35 … 0.56.)
    let mut log_ratio_sum = 0f64;
    let mut pairs = 0usize;
    for &layout in &LAYOUTS {
        let (rows, cols) = (16, 576);
        let w = weights(&mut rng, Kind::Gaussian, rows, cols);
        // Log-normal channel energies spanning orders of magnitude (outlier channels).
        let e = stats_vec(&mut rng, cols, 2.0);
        let (m, _) = quantize_activation_aware(&w, rows, cols, layout, &e).unwrap();
        let aa = weighted_error(&w, &m, &e).unwrap();
        for method in unweighted_methods() {
            let (mq, _) = quantize(&w, rows, cols, &QuantConfig::new(method, layout)).unwrap();
            let other = weighted_error(&w, &mq, &e).unwrap();
            println!(
                "{layout:?}: activation-aware / {method} weighted error = {:.3}",
                aa / other
            );
            assert!(
                aa < other,
                "{layout:?}: activation-aware {aa} not below {method} {other}"
            );
            log_ratio_sum += (aa / other).ln();
            pairs += 1;
        }
    }
    let geo_mean = (log_ratio_sum / pairs as f64).exp();
    println!("geometric mean ratio {geo_mean:.3}");
    assert!(
        geo_mean < 0.75,
        "activation-aware gains too little: {geo_mean}"
    );
}

// ---------------------------------------------------------------------------------------------
// Edge cases and errors.

#[test]
fn empty_and_zero_inputs_should_give_zero_scales() {
    for &layout in &LAYOUTS {
        for (rows, cols) in [(0, 0), (0, 64), (3, 0), (2, 33), (1, 576)] {
            let w = vec![0f32; rows * cols];
            let e = vec![1f32; cols];
            let mut outs = Vec::new();
            for method in METHODS {
                outs.push((
                    method.to_string(),
                    run_method(method, &w, rows, cols, layout),
                ));
            }
            outs.push((
                "activation-aware".into(),
                quantize_activation_aware(&w, rows, cols, layout, &e).unwrap(),
            ));
            for (name, (m, stats)) in outs {
                let what = format!("{name} {rows}x{cols} {layout:?}");
                check_output(&what, &w, rows, cols, layout, &m, &stats);
                assert!(m.scales().values().iter().all(|&s| s == 0.0), "{what}");
                assert_eq!(m.nnz(), 0, "{what}");
                assert_eq!(stats.rel_frobenius_error, 0.0, "{what}");
                let zf = if rows * cols == 0 { 0.0 } else { 1.0 };
                assert_eq!(stats.zero_fraction, zf, "{what}");
            }
        }
    }
}

#[test]
fn extreme_magnitudes_should_stay_finite() {
    for w in [
        vec![f32::MAX, -f32::MAX, 1.0, -f32::MAX / 3.0],
        vec![f32::MIN_POSITIVE, -1e-45, 1e-45, 0.0],
        vec![1e30, 1e-30, -1e-30, -1e30],
    ] {
        let e = [f32::MAX, 1.0, 0.0, 1e-30];
        let mut outs = Vec::new();
        for method in METHODS {
            outs.push(run_method(method, &w, 1, 4, ScaleLayout::PerRow));
        }
        outs.push(quantize_activation_aware(&w, 1, 4, ScaleLayout::PerRow, &e).unwrap());
        for (m, stats) in outs {
            check_output("extreme", &w, 1, 4, ScaleLayout::PerRow, &m, &stats);
            assert!(stats.rel_frobenius_error.is_finite());
            assert!(weighted_error(&w, &m, &e).unwrap().is_finite());
        }
    }
}

#[test]
fn bad_inputs_should_be_clear_errors() {
    let pr = ScaleLayout::PerRow;
    let mut w = vec![0.5f32; 2 * 40];
    let e = vec![1f32; 40];
    let all = |w: &[f32], rows: usize, cols: usize, layout: ScaleLayout, e: &[f32]| {
        let mut r: Vec<Result<_, TernaryError>> = METHODS
            .iter()
            .map(|&m| quantize(w, rows, cols, &QuantConfig::new(m, layout)))
            .collect();
        r.push(quantize_activation_aware(w, rows, cols, layout, e));
        r
    };
    // Wrong weight count.
    for r in all(&w[..79], 2, 40, pr, &e) {
        assert!(matches!(r, Err(TernaryError::Shape(_))), "{r:?}");
    }
    // NaN / Inf weights.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        w[45] = bad;
        for r in all(&w, 2, 40, pr, &e) {
            assert!(
                matches!(
                    r,
                    Err(TernaryError::NonFinite {
                        what: "weights",
                        index: 45,
                        ..
                    })
                ),
                "{r:?}"
            );
        }
    }
    w[45] = 0.5;
    // Bad group sizes.
    for g in [0, 16, 48, 33] {
        for r in all(&w, 2, 40, ScaleLayout::PerGroup { group_size: g }, &e) {
            assert!(
                matches!(r, Err(TernaryError::Config(_))),
                "group {g}: {r:?}"
            );
        }
    }
    // Statistics: wrong length, non-finite, negative.
    let r = quantize_activation_aware(&w, 2, 40, pr, &e[..39]);
    assert!(matches!(r, Err(TernaryError::Shape(_))), "{r:?}");
    for bad in [f32::NAN, f32::INFINITY] {
        let mut e2 = e.clone();
        e2[7] = bad;
        let r = quantize_activation_aware(&w, 2, 40, pr, &e2);
        assert!(
            matches!(
                r,
                Err(TernaryError::NonFinite {
                    what: "activation statistics",
                    index: 7,
                    ..
                })
            ),
            "{r:?}"
        );
    }
    let mut e2 = e.clone();
    e2[3] = -1e-6;
    let r = quantize_activation_aware(&w, 2, 40, pr, &e2);
    assert!(matches!(r, Err(TernaryError::Config(_))), "{r:?}");
    let r = weighted_error(&w, &quantize_absmean(&w, 2, 40, pr).unwrap().0, &e2);
    assert!(matches!(r, Err(TernaryError::Config(_))), "{r:?}");
    // Method parameters.
    for d in [f32::NAN, -0.1, f32::INFINITY] {
        let r = quantize_twn(&w, 2, 40, pr, d);
        assert!(
            matches!(r, Err(TernaryError::Config(_))),
            "delta {d}: {r:?}"
        );
        let r = quantize(
            &w,
            2,
            40,
            &QuantConfig::new(Method::Twn { delta_factor: d }, pr),
        );
        assert!(
            matches!(r, Err(TernaryError::Config(_))),
            "delta {d}: {r:?}"
        );
    }
    for p in [0.0, -0.5, 1.0001, f32::NAN] {
        let r = quantize_percentile(&w, 2, 40, pr, p, false);
        assert!(matches!(r, Err(TernaryError::Config(_))), "p {p}: {r:?}");
    }
    // Activation-aware through `quantize` has no statistics.
    let r = quantize(&w, 2, 40, &QuantConfig::new(Method::ActivationAware, pr));
    assert!(matches!(r, Err(TernaryError::Config(_))), "{r:?}");
    // Measuring against the wrong weights.
    let (m, _) = quantize_absmean(&w, 2, 40, pr).unwrap();
    assert!(matches!(
        QuantStats::measure(&w[..40], &m),
        Err(TernaryError::Shape(_))
    ));
    assert!(matches!(
        weighted_error(&w, &m, &e[..3]),
        Err(TernaryError::Shape(_))
    ));
}

#[test]
fn defaults_should_be_documented_values() {
    let cfg = QuantConfig::default();
    assert_eq!(cfg.method, Method::AbsMean);
    assert_eq!(cfg.layout, ScaleLayout::PerRow);
    assert_eq!(Method::twn(), Method::Twn { delta_factor: 0.7 });
    assert!(Method::ActivationAware.needs_calibration());
    assert!(!Method::AbsMean.needs_calibration());
}

/// The table in the README: each method on a 576×1536 Gaussian matrix, per row and per group
/// of 64. Run with `cargo test -p ternary-core --test quant -- readme_table --nocapture`.
#[test]
fn readme_table_576x1536_gaussian() {
    let mut rng = rng("readme_table_576x1536_gaussian");
    let (rows, cols) = (576, 1536);
    let w = weights(&mut rng, Kind::Gaussian, rows, cols);
    let uniform = vec![1f32; cols];
    println!("| method | layout | rel. Frobenius error | zero fraction |");
    println!("|---|---|---|---|");
    for layout in [
        ScaleLayout::PerRow,
        ScaleLayout::PerGroup { group_size: 64 },
    ] {
        let mut results = Vec::new();
        for method in [
            Method::AbsMean,
            Method::twn(),
            Method::AbsMax,
            Method::percentile(0.9),
            Method::Percentile {
                p: 0.9,
                refit: true,
            },
            Method::percentile(0.99),
            Method::Percentile {
                p: 0.99,
                refit: true,
            },
        ] {
            let r = quantize(&w, rows, cols, &QuantConfig::new(method, layout)).unwrap();
            results.push((method.to_string(), r));
        }
        results.push((
            "activation-aware, uniform stats (L2-optimal threshold)".into(),
            quantize_activation_aware(&w, rows, cols, layout, &uniform).unwrap(),
        ));
        let layout_name = match layout {
            ScaleLayout::PerRow => "per row".to_string(),
            ScaleLayout::PerGroup { group_size } => format!("group {group_size}"),
        };
        for (name, (m, s)) in &results {
            check_output(name, &w, rows, cols, layout, m, s);
            println!(
                "| {name} | {layout_name} | {:.4} | {:.4} |",
                s.rel_frobenius_error, s.zero_fraction
            );
        }
        // Known shape of the numbers on Gaussian weights: abs-max zeros most weights, and
        // the L2-optimal threshold rule is the most accurate.
        let aa = results
            .last()
            .map_or(f64::NAN, |r| r.1.1.rel_frobenius_error);
        for (name, (_, s)) in &results {
            assert!(aa <= s.rel_frobenius_error * (1.0 + 1e-9), "{name}");
        }
        assert!(results[2].1.1.zero_fraction > 0.7, "abs-max zero fraction");
    }
}
