//! Abs-max: `s = max|w|`, `t = clamp(round(w/s), −1, 1)`.

use super::{GroupFit, QuantStats, Rule, run};
use crate::error::Result;
use crate::matrix::{ScaleLayout, TernaryMatrix};

/// Abs-max quantization, per row or per group:
///
/// `s = max_{j∈G} |w_j|`,  `t_j = clamp(round(w_j / s), −1, 1)`,  `ŵ_j = s · t_j`.
///
/// `round` sends ties to even, so `t_j = sign(w_j) · [|w_j| > s/2]`. Only weights larger than
/// half the group's maximum survive: on bell-shaped weights that is a few percent (the larger
/// the group, the fewer), so most trits are zero and the error is high. This is the known
/// behaviour of the rule, kept as a baseline; [`quantize_percentile`](super::quantize_percentile)
/// is its outlier-robust form.
pub fn quantize_absmax(
    w: &[f32],
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
) -> Result<(TernaryMatrix, QuantStats)> {
    run(w, rows, cols, layout, Rule::AbsMax, None)
}

pub(super) fn fit(w: &[f32]) -> GroupFit {
    let s = f64::from(w.iter().fold(0f32, |m, &x| m.max(x.abs())));
    GroupFit {
        threshold: s / 2.0,
        scale: s,
    }
}
