//! Percentile: `s = Q_p(|w|)`, `t = clamp(round(w/s), −1, 1)`, optional least-squares refit.

use super::{GroupFit, Method, QuantStats, Rule, run};
use crate::error::Result;
use crate::matrix::{ScaleLayout, TernaryMatrix};

/// Percentile quantization, per row or per group:
///
/// `s = Q_p(|w|)`,  `t_j = clamp(round(w_j / s), −1, 1)`,  `ŵ_j = α · t_j`, with `α = s`, or
/// with `refit` the least-squares scale for those trits, `α* = Σ|w_j|·[t_j ≠ 0] / Σ[t_j ≠ 0]`.
///
/// `Q_p` is the `p`-quantile of the group's `|w|` with linear interpolation between order
/// statistics (NumPy's default): with `a_0 ≤ … ≤ a_{n−1}` sorted and `h = p·(n−1)`,
/// `Q_p = a_⌊h⌋ + (h − ⌊h⌋)·(a_⌊h⌋+1 − a_⌊h⌋)`. `0 < p ≤ 1`; `p = 1` is abs-max. As with
/// abs-mean, ties go to even, so `t_j = sign(w_j) · [|w_j| > s/2]`; if `s = 0` that is the
/// limit `sign(w_j)`, kept only when the refit scale is non-zero.
///
/// Why refit: `s` clips outliers but is not a reconstruction scale — it over-estimates the
/// surviving weights (all have `|w| > s/2`, most far below `s`). For fixed trits,
/// `Σ(w_j − α t_j)²` is a parabola in `α` with minimum at `α*`, so the refit never increases
/// the error. It is off by default to keep the rule as written.
pub fn quantize_percentile(
    w: &[f32],
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
    p: f32,
    refit: bool,
) -> Result<(TernaryMatrix, QuantStats)> {
    Method::Percentile { p, refit }.validate()?;
    let rule = Rule::Percentile {
        p: f64::from(p),
        refit,
    };
    run(w, rows, cols, layout, rule, None)
}

pub(super) fn fit(w: &[f32], p: f64, refit: bool, abs: &mut Vec<f32>) -> GroupFit {
    let s = quantile_abs(w, p, abs);
    let threshold = s / 2.0;
    let scale = if refit {
        let (mut sum, mut n) = (0f64, 0usize);
        for &x in w {
            let a = f64::from(x.abs());
            if a > threshold {
                sum += a;
                n += 1;
            }
        }
        if n == 0 { 0.0 } else { sum / n as f64 }
    } else {
        s
    };
    GroupFit { threshold, scale }
}

/// `Q_p(|w|)` by selection (O(n)); `0` for an empty slice.
fn quantile_abs(w: &[f32], p: f64, abs: &mut Vec<f32>) -> f64 {
    let n = w.len();
    if n == 0 {
        return 0.0;
    }
    abs.clear();
    abs.extend(w.iter().map(|x| x.abs()));
    let h = p * (n - 1) as f64;
    // `h ∈ [0, n − 1]`; the clamp guards the float-to-int conversion.
    let lo = (h.floor() as usize).min(n - 1);
    let frac = h - lo as f64;
    let (_, &mut a_lo, upper) = abs.select_nth_unstable_by(lo, f32::total_cmp);
    let a_lo = f64::from(a_lo);
    if frac == 0.0 || upper.is_empty() {
        return a_lo;
    }
    let a_hi = f64::from(upper.iter().fold(f32::INFINITY, |m, &x| m.min(x)));
    a_lo + frac * (a_hi - a_lo)
}
