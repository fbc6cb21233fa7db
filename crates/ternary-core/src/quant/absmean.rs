//! Abs-mean (BitNet b1.58): `s = mean|w|`, `t = clamp(round(w/s), −1, 1)`.

use super::{GroupFit, QuantStats, Rule, mean_abs, run};
use crate::error::Result;
use crate::matrix::{ScaleLayout, TernaryMatrix};

/// Abs-mean quantization (BitNet b1.58), per row or per group:
///
/// `s = mean_{j∈G} |w_j|`,  `t_j = clamp(round(w_j / s), −1, 1)`,  `ŵ_j = s · t_j`.
///
/// `round` sends ties to even, so `t_j = sign(w_j) · [|w_j| > s/2]` (computed that way). An
/// all-zero group gets `s = 0` and zero trits. BitNet's `mean|w| + ε` guard is not needed.
pub fn quantize_absmean(
    w: &[f32],
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
) -> Result<(TernaryMatrix, QuantStats)> {
    run(w, rows, cols, layout, Rule::AbsMean, None)
}

pub(super) fn fit(w: &[f32]) -> GroupFit {
    let s = mean_abs(w);
    GroupFit {
        threshold: s / 2.0,
        scale: s,
    }
}
