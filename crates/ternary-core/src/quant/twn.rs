//! Ternary Weight Networks: `Δ = δ · mean|w|`, `α = mean(|w| : |w| > Δ)`.

use super::{GroupFit, Method, QuantStats, Rule, mean_abs, run};
use crate::error::Result;
use crate::matrix::{ScaleLayout, TernaryMatrix};

/// TWN threshold quantization (Li & Liu 2016), per row or per group:
///
/// `Δ = δ · mean_{j∈G} |w_j|`,  `t_j = sign(w_j) · [|w_j| > Δ]`,
/// `α = mean(|w_j| : |w_j| > Δ)`,  `ŵ_j = α · t_j`.
///
/// `δ = delta_factor` (finite, `≥ 0`; the paper's 0.7 is
/// [`TWN_DELTA_FACTOR`](super::TWN_DELTA_FACTOR)); `Δ` is computed as `f64(δ) · mean|w|`.
/// `α` is the least-squares scale for the chosen trits. A group with no `|w_j| > Δ` gets
/// `α = 0` and zero trits.
pub fn quantize_twn(
    w: &[f32],
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
    delta_factor: f32,
) -> Result<(TernaryMatrix, QuantStats)> {
    Method::Twn { delta_factor }.validate()?;
    let rule = Rule::Twn {
        delta_factor: f64::from(delta_factor),
    };
    run(w, rows, cols, layout, rule, None)
}

pub(super) fn fit(w: &[f32], delta_factor: f64) -> GroupFit {
    let delta = delta_factor * mean_abs(w);
    let (mut sum, mut n) = (0f64, 0usize);
    for &x in w {
        let a = f64::from(x.abs());
        if a > delta {
            sum += a;
            n += 1;
        }
    }
    GroupFit {
        threshold: delta,
        scale: if n == 0 { 0.0 } else { sum / n as f64 },
    }
}
