//! Quantizers: dense `f32` weights → bit-planes + scales.
//!
//! Every method works on *scale groups*: a whole row for [`ScaleLayout::PerRow`], or
//! `group_size` consecutive columns of a row for [`ScaleLayout::PerGroup`] (the last group of
//! a row may be shorter). For each group it picks a threshold `Δ ≥ 0` and a scale `α ≥ 0`:
//!
//! `t_j = sign(w_j) · [|w_j| > Δ]`,  `ŵ_j = α · t_j`.
//!
//! - [`quantize_absmean`] (BitNet b1.58): `s = mean|w|`, `Δ = s/2`, `α = s`.
//! - [`quantize_twn`] (TWN): `Δ = δ · mean|w|` (`δ = 0.7` by default),
//!   `α = mean(|w| : |w| > Δ)`.
//! - [`quantize_absmax`]: `s = max|w|`, `Δ = s/2`, `α = s`.
//! - [`quantize_percentile`]: `s = Q_p(|w|)`, `Δ = s/2`, `α = s` or the least-squares refit
//!   `α* = mean(|w| : t ≠ 0)`.
//! - [`quantize_activation_aware`]: the `(Δ, α)` minimising `Σ_j e_j (w_j − α t_j)²` for
//!   calibration statistics `e_j = E[x_j²]`; `α = Σ_S e|w| / Σ_S e` on the support `S`.
//!
//! - [`attention`] ([`AttentionQuant`]): queries and keys of popcount attention scores, per
//!   vector or group, `Δ = δ · mean|v|` with `δ = 1/2` or `0.7`, abs-mean or refit scale, one or
//!   two residual levels; its statistics are `f32` sums in index order (not `f64`, unlike the
//!   weight quantizers here) so that a GPU reproduces it bit for bit.
//!
//! [`quantize`] runs any of the first four from a [`QuantConfig`]; [`weighted_error`] and
//! [`QuantStats::measure`] evaluate a result.
//!
//! The rounding rules `t = clamp(round(w/s), −1, 1)` are computed as the threshold `|w| > s/2`,
//! which is *exactly* the same function for `s > 0` when `round` sends ties to even (as
//! PyTorch's `round`, used by BitNet, does): a tie `|w| = s/2` gives `t = 0`. (In `f64`, with `s/2`
//! exact, `fl(|w|/s) > 1/2 ⇔ |w| > s/2` because division is correctly rounded and monotone.)
//! For `s = 0` the threshold form gives the limit `t = sign(w)`.
//!
//! Shared conventions:
//! - Statistics (`mean`, percentiles, sums) are computed in `f64`; trits are chosen with the
//!   `f64` threshold; the stored scale is the `f64` scale rounded to `f32`.
//! - A group whose stored scale is `0` (e.g. an all-zero group) stores all-zero trits, so the
//!   output never holds NaN and `ŵ = 0` there.
//! - Weights and calibration statistics must be finite ([`TernaryError::NonFinite`]); lengths
//!   must match the shape ([`TernaryError::Shape`]); statistics must be `≥ 0` and method
//!   parameters in range ([`TernaryError::Config`]). `rows = 0` or `cols = 0` is fine.
//! - Rows are quantized in parallel with rayon. Planes and scales do not depend on the thread
//!   count; the `f64` error sums of [`QuantStats`] may differ in the last bits.

mod absmax;
mod absmean;
mod activation_aware;
pub mod attention;
mod percentile;
mod twn;

use std::fmt;

use rayon::prelude::*;

use crate::error::{Result, TernaryError, check_finite};
use crate::matrix::{ScaleLayout, Scales, TernaryMatrix, WORD_BITS, words_per_row};

pub use absmax::quantize_absmax;
pub use absmean::quantize_absmean;
pub use activation_aware::quantize_activation_aware;
pub use attention::AttentionQuant;
pub use percentile::quantize_percentile;
pub use twn::quantize_twn;

/// TWN's threshold factor: `Δ = 0.7 · mean|w|` (Li & Liu, *Ternary Weight Networks*, 2016).
pub const TWN_DELTA_FACTOR: f32 = 0.7;

/// A quantization rule. See the [module docs](self) for the formulas.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Method {
    /// BitNet b1.58: `s = mean|w|`, `t = clamp(round(w/s), −1, 1)`, scale `s`.
    #[default]
    AbsMean,
    /// Ternary Weight Networks: `Δ = δ · mean|w|`, `t = sign(w) · [|w| > Δ]`,
    /// scale `α = mean(|w| : |w| > Δ)`.
    Twn {
        /// The threshold factor `δ` (finite, `≥ 0`); [`TWN_DELTA_FACTOR`] = 0.7 in the paper.
        /// Choosing it per layer is the "per-layer threshold" knob.
        delta_factor: f32,
    },
    /// `s = max|w|`, `t = clamp(round(w/s), −1, 1)`, scale `s`. Only weights with
    /// `|w| > max|w| / 2` survive, so on bell-shaped weights most trits are zero.
    AbsMax,
    /// `s = Q_p(|w|)`, the `p`-quantile of `|w|` (linear interpolation between order
    /// statistics), `t = clamp(round(w/s), −1, 1)`; scale `s`, or with `refit` the
    /// least-squares scale `α* = Σ|w|·[t ≠ 0] / Σ[t ≠ 0]`.
    Percentile {
        /// The quantile, `0 < p ≤ 1` (typically 0.9 … 0.999; `p = 1` is abs-max).
        p: f32,
        /// Replace `s` by `α*`, the L2-optimal scale for the chosen trits.
        refit: bool,
    },
    /// Minimises `Σ_j e_j (w_j − α t_j)²` over threshold rules; needs per-input-channel
    /// calibration statistics `e_j = E[x_j²]`, so it runs through
    /// [`quantize_activation_aware`], not [`quantize`].
    ActivationAware,
}

impl Method {
    /// TWN with the paper's factor `δ = 0.7`.
    pub const fn twn() -> Self {
        Self::Twn {
            delta_factor: TWN_DELTA_FACTOR,
        }
    }

    /// The `p`-percentile rule with its scale `s = Q_p(|w|)` (no refit).
    pub const fn percentile(p: f32) -> Self {
        Self::Percentile { p, refit: false }
    }

    /// Whether the method needs calibration statistics.
    pub const fn needs_calibration(&self) -> bool {
        matches!(self, Self::ActivationAware)
    }

    /// Checks the method's parameters.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Twn { delta_factor } if !(delta_factor.is_finite() && delta_factor >= 0.0) => {
                Err(TernaryError::config(format!(
                    "TWN threshold factor must be finite and >= 0, got {delta_factor}"
                )))
            }
            Self::Percentile { p, .. } if !(p > 0.0 && p <= 1.0) => Err(TernaryError::config(
                format!("percentile p must lie in (0, 1], got {p}"),
            )),
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::AbsMean => f.write_str("absmean"),
            Self::Twn { delta_factor } => write!(f, "twn(δ={delta_factor})"),
            Self::AbsMax => f.write_str("absmax"),
            Self::Percentile { p, refit: false } => write!(f, "percentile(p={p})"),
            Self::Percentile { p, refit: true } => write!(f, "percentile(p={p}, refit)"),
            Self::ActivationAware => f.write_str("activation-aware"),
        }
    }
}

/// What to quantize with: a [`Method`] and a [`ScaleLayout`]. Default: abs-mean, per row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct QuantConfig {
    /// The rule choosing trits and scales.
    pub method: Method,
    /// One scale per row, or per row and group of columns.
    pub layout: ScaleLayout,
}

impl QuantConfig {
    /// A configuration from its parts.
    pub const fn new(method: Method, layout: ScaleLayout) -> Self {
        Self { method, layout }
    }
}

impl Default for QuantConfig {
    fn default() -> Self {
        Self::new(Method::AbsMean, ScaleLayout::PerRow)
    }
}

/// Error statistics of a quantized matrix `Ŵ` against its source `W`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct QuantStats {
    /// `‖W − Ŵ‖_F / ‖W‖_F`, accumulated in `f64` with `Ŵ` exactly as
    /// [`TernaryMatrix::dequantize`] gives it; `0` when `W = 0`.
    pub rel_frobenius_error: f64,
    /// Fraction of trits that are zero (`0` for an empty matrix).
    pub zero_fraction: f64,
}

impl QuantStats {
    /// Measures `m` against the weights `w` (`rows · cols`, row-major) it was made from.
    pub fn measure(w: &[f32], m: &TernaryMatrix) -> Result<Self> {
        check_weights_shape(w, m.rows(), m.cols())?;
        let wq = m.dequantize();
        let (mut err, mut norm) = (0f64, 0f64);
        for (&a, &b) in w.iter().zip(&wq) {
            let d = f64::from(a) - f64::from(b);
            err += d * d;
            norm += f64::from(a) * f64::from(a);
        }
        Ok(Self {
            rel_frobenius_error: relative(err, norm),
            zero_fraction: m.zero_fraction(),
        })
    }
}

/// The activation-weighted squared error `Σ_r Σ_c e_c · (w[r, c] − ŵ[r, c])²` in `f64`, where
/// `ŵ` is `m` dequantized and `e_c = E[x_c²]` (`act_sq_mean.len() == cols`). This is the
/// expected squared output error `E‖(W − Ŵ)x‖²` when input channels are uncorrelated.
pub fn weighted_error(w: &[f32], m: &TernaryMatrix, act_sq_mean: &[f32]) -> Result<f64> {
    check_weights_shape(w, m.rows(), m.cols())?;
    check_stats(act_sq_mean, m.cols())?;
    let cols = m.cols();
    if cols == 0 {
        return Ok(0.0);
    }
    let wq = m.dequantize();
    let mut total = 0f64;
    for (row, row_q) in w.chunks_exact(cols).zip(wq.chunks_exact(cols)) {
        for ((&a, &b), &e) in row.iter().zip(row_q).zip(act_sq_mean) {
            let d = f64::from(a) - f64::from(b);
            total += f64::from(e) * d * d;
        }
    }
    Ok(total)
}

/// Quantizes `w` (`rows × cols`, row-major) with `cfg`; returns the matrix and its error
/// statistics. [`Method::ActivationAware`] needs calibration statistics: use
/// [`quantize_activation_aware`] (here it is a [`TernaryError::Config`] error).
pub fn quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    cfg: &QuantConfig,
) -> Result<(TernaryMatrix, QuantStats)> {
    let rule = match cfg.method {
        Method::AbsMean => Rule::AbsMean,
        Method::Twn { delta_factor } => Rule::Twn {
            delta_factor: f64::from(delta_factor),
        },
        Method::AbsMax => Rule::AbsMax,
        Method::Percentile { p, refit } => Rule::Percentile {
            p: f64::from(p),
            refit,
        },
        Method::ActivationAware => {
            return Err(TernaryError::config(
                "activation-aware quantization needs calibration statistics: \
                 call quantize_activation_aware",
            ));
        }
    };
    cfg.method.validate()?;
    run(w, rows, cols, cfg.layout, rule, None)
}

/// The per-group rules, with parameters in `f64`.
#[derive(Debug, Clone, Copy)]
enum Rule {
    AbsMean,
    Twn { delta_factor: f64 },
    AbsMax,
    Percentile { p: f64, refit: bool },
    ActivationAware,
}

/// A group's quantization: `t_j = sign(w_j) · [|w_j| > threshold]`, `ŵ_j = scale · t_j`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct GroupFit {
    threshold: f64,
    scale: f64,
}

/// Per-thread scratch buffers reused across groups.
#[derive(Debug, Default)]
struct Scratch {
    abs: Vec<f32>,
    order: Vec<(u32, f32)>,
}

impl Rule {
    fn fit(self, w: &[f32], e: Option<&[f32]>, scratch: &mut Scratch) -> GroupFit {
        match (self, e) {
            (Self::AbsMean, _) => absmean::fit(w),
            (Self::Twn { delta_factor }, _) => twn::fit(w, delta_factor),
            (Self::AbsMax, _) => absmax::fit(w),
            (Self::Percentile { p, refit }, _) => percentile::fit(w, p, refit, &mut scratch.abs),
            (Self::ActivationAware, e) => activation_aware::fit(w, e, &mut scratch.order),
        }
    }
}

/// `mean|w|` in `f64` (summed in order); `0` for an empty slice.
fn mean_abs(w: &[f32]) -> f64 {
    if w.is_empty() {
        return 0.0;
    }
    w.iter().map(|&x| f64::from(x.abs())).sum::<f64>() / w.len() as f64
}

/// `sqrt(err / norm)`, or `0` when `norm = 0`.
fn relative(err: f64, norm: f64) -> f64 {
    if norm > 0.0 { (err / norm).sqrt() } else { 0.0 }
}

fn check_weights_shape(w: &[f32], rows: usize, cols: usize) -> Result<()> {
    let n = rows
        .checked_mul(cols)
        .ok_or_else(|| TernaryError::shape(format!("{rows}x{cols} overflows usize")))?;
    if w.len() != n {
        return Err(TernaryError::shape(format!(
            "weights: a {rows}x{cols} matrix needs {n} values, got {}",
            w.len()
        )));
    }
    Ok(())
}

fn check_stats(e: &[f32], cols: usize) -> Result<()> {
    if e.len() != cols {
        return Err(TernaryError::shape(format!(
            "activation statistics: need one value per input column ({cols}), got {}",
            e.len()
        )));
    }
    check_finite("activation statistics", e)?;
    if let Some(i) = e.iter().position(|&v| v < 0.0) {
        return Err(TernaryError::config(format!(
            "activation statistics are mean squares and must be >= 0; index {i} is {}",
            e[i]
        )));
    }
    Ok(())
}

/// The largest `f32` that is `≤ t` (for `t ≥ 0`, not NaN), so that for every `f32` value `x`,
/// `x > f32_below(t) ⇔ f64(x) > t`: no `f32` lies strictly between it and `t`.
fn f32_below(t: f64) -> f32 {
    let c = t as f32;
    if f64::from(c) > t { c.next_down() } else { c }
}

/// The shared driver: validates, fits every group with `rule`, packs the planes and measures.
fn run(
    w: &[f32],
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
    rule: Rule,
    stats: Option<&[f32]>,
) -> Result<(TernaryMatrix, QuantStats)> {
    layout.validate()?;
    check_weights_shape(w, rows, cols)?;
    check_finite("weights", w)?;
    if let Some(e) = stats {
        check_stats(e, cols)?;
    }
    let gpr = layout.groups_per_row(cols);
    let wpr = words_per_row(cols);
    let mut scales = vec![0f32; rows * gpr];
    let mut plus = vec![0u32; rows * wpr];
    let mut minus = vec![0u32; rows * wpr];
    let (mut err, mut norm) = (0f64, 0f64);
    if rows > 0 && cols > 0 {
        let glen = layout.group_len(cols);
        (err, norm) = plus
            .par_chunks_mut(wpr)
            .zip(minus.par_chunks_mut(wpr))
            .zip(scales.par_chunks_mut(gpr))
            .zip(w.par_chunks(cols))
            .map_init(Scratch::default, |scratch, (((p, m), s), row)| {
                quantize_row(row, stats, glen, rule, p, m, s, scratch)
            })
            .reduce(|| (0.0, 0.0), |a, b| (a.0 + b.0, a.1 + b.1));
    }
    let m = TernaryMatrix::from_planes(rows, cols, plus, minus, Scales::new(layout, scales))?;
    let q = QuantStats {
        rel_frobenius_error: relative(err, norm),
        zero_fraction: m.zero_fraction(),
    };
    Ok((m, q))
}

/// Quantizes one row into its plane words and scales; returns `(Σ (w − ŵ)², Σ w²)`.
#[allow(clippy::too_many_arguments)]
fn quantize_row(
    row: &[f32],
    stats: Option<&[f32]>,
    glen: usize,
    rule: Rule,
    plus: &mut [u32],
    minus: &mut [u32],
    scales: &mut [f32],
    scratch: &mut Scratch,
) -> (f64, f64) {
    let (mut err, mut norm) = (0f64, 0f64);
    for (g, (wg, s_out)) in row.chunks(glen).zip(scales.iter_mut()).enumerate() {
        let start = g * glen;
        let eg = stats.map(|e| &e[start..start + wg.len()]);
        let fit = rule.fit(wg, eg, scratch);
        let s = fit.scale as f32;
        *s_out = s;
        // A zero scale stores zero trits: ŵ = 0 either way, and no trit claims a value.
        let threshold = if s == 0.0 {
            f32::INFINITY
        } else {
            f32_below(fit.threshold)
        };
        let s64 = f64::from(s);
        // Groups start on a word boundary (`glen` is a multiple of 32, or the whole row).
        let w0 = start / WORD_BITS;
        for (k, chunk) in wg.chunks(WORD_BITS).enumerate() {
            let (mut p, mut m) = (0u32, 0u32);
            for (i, &x) in chunk.iter().enumerate() {
                let a = x.abs();
                let keep = a > threshold;
                p |= u32::from(keep && x > 0.0) << i;
                m |= u32::from(keep && x < 0.0) << i;
                // |w − ŵ| = ||w| − s| on the support, |w| off it (ŵ = t·s as dequantized).
                let d = if keep {
                    f64::from(a) - s64
                } else {
                    f64::from(a)
                };
                err += d * d;
                norm += f64::from(a) * f64::from(a);
            }
            plus[w0 + k] = p;
            minus[w0 + k] = m;
        }
    }
    (err, norm)
}

#[cfg(test)]
mod tests {
    use super::f32_below;

    #[test]
    fn f32_below_should_preserve_strict_comparisons() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..100_000 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // A random non-negative f64 over many binades, and f32 values around it.
            let mantissa = (state >> 11) as f64 / (1u64 << 53) as f64;
            let t = mantissa * 2f64.powi((state % 290) as i32 - 160);
            let c = t as f32;
            for x in [
                c.next_down(),
                c,
                c.next_up(),
                f32_below(t),
                f32_below(t).next_up(),
            ] {
                assert_eq!(x > f32_below(t), f64::from(x) > t, "t = {t:e}, x = {x:e}");
            }
        }
        assert_eq!(f32_below(0.0), 0.0);
        assert_eq!(f32_below(f64::INFINITY), f32::INFINITY);
        assert_eq!(f32_below(1e300), f32::MAX);
        assert_eq!(f32_below(0.1), 0.1f32.next_down());
        assert_eq!(f32_below(0.5), 0.5);
    }
}
