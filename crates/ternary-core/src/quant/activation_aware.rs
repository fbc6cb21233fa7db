//! Activation-aware: the threshold rule minimising `Σ_j e_j (w_j − α t_j)²`, `e_j = E[x_j²]`.

use super::{GroupFit, QuantStats, Rule, run};
use crate::error::Result;
use crate::matrix::{ScaleLayout, TernaryMatrix};

/// Activation-aware quantization, per row or per group: minimises the expected output error
/// contributed by the group,
///
/// `E(Δ, α) = Σ_{j∈G} e_j · (w_j − α · t_j)²`,  `t_j = sign(w_j) · [|w_j| > Δ]`,
///
/// where `e_j = act_sq_mean[c]` is the calibration mean square `E[x_c²]` of input column `c`
/// of group position `j` (`act_sq_mean.len() == cols`, finite, `≥ 0`).
///
/// For a support `S = {j : |w_j| > Δ}` with `Σ_S e > 0`, the optimal scale is
/// `α_S = Σ_S e_j|w_j| / Σ_S e_j` and the error is `Σ_G e w² − (Σ_S e|w|)² / Σ_S e`. Every
/// threshold support is a prefix of the group sorted by `|w|` descending (cut only between
/// distinct values), so one sort and one scan of prefix sums finds the `(Δ, α)` that is
/// **optimal over all threshold rules** (exactly, up to `f64` rounding of the sums; equal
/// errors go to the smaller support). The result is never worse in `E` than abs-mean, TWN,
/// abs-max or percentile, whose supports are threshold supports too. With equal `e_j` it is
/// the L2-optimal ternarization of the group (the best support of each size is the largest
/// `|w|`). A group whose statistics are all zero has `E = 0` for every choice and gets `α = 0`.
pub fn quantize_activation_aware(
    w: &[f32],
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
    act_sq_mean: &[f32],
) -> Result<(TernaryMatrix, QuantStats)> {
    run(
        w,
        rows,
        cols,
        layout,
        Rule::ActivationAware,
        Some(act_sq_mean),
    )
}

/// The optimal threshold rule for one group; `e = None` weighs every position by 1.
pub(super) fn fit(w: &[f32], e: Option<&[f32]>, order: &mut Vec<(u32, f32)>) -> GroupFit {
    // Key: the bits of |w|, whose integer order is the numeric order for finite |w| ≥ 0.
    order.clear();
    match e {
        Some(e) => order.extend(w.iter().zip(e).map(|(x, &e)| (x.abs().to_bits(), e))),
        None => order.extend(w.iter().map(|x| (x.abs().to_bits(), 1.0))),
    }
    order.sort_unstable_by_key(|&(bits, _)| std::cmp::Reverse(bits));
    let mut best = GroupFit {
        threshold: f64::INFINITY,
        scale: 0.0,
    };
    let mut best_gain = 0f64;
    let (mut sum_ew, mut sum_e) = (0f64, 0f64);
    for (i, &(bits, ej)) in order.iter().enumerate() {
        let ej = f64::from(ej);
        sum_ew += ej * f64::from(f32::from_bits(bits));
        sum_e += ej;
        let next = order.get(i + 1).map(|&(b, _)| b);
        if next == Some(bits) || sum_e <= 0.0 {
            // Inside a run of equal |w| (no threshold separates it), or α undefined.
            continue;
        }
        // Error = Σ e w² − gain; maximise the gain, which avoids the cancellation.
        let gain = sum_ew * sum_ew / sum_e;
        if gain > best_gain {
            best_gain = gain;
            best = GroupFit {
                threshold: next.map_or(0.0, |b| f64::from(f32::from_bits(b))),
                scale: sum_ew / sum_e,
            };
        }
    }
    best
}
