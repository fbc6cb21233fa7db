//! The attention-score quantizer: query and key vectors → bit-planes + scales for popcount
//! scores. One rule, defined here, for the host (`ternary-layers`' `TernaryScores`, the
//! model's score seam) and the device (`ternary-kernels`' `quantize_heads` kernel, which
//! reproduces this function bit for bit).
//!
//! # The rule
//!
//! A vector `v ∈ ℝ^d` is cut into groups of `G` consecutive dimensions ([`AttentionQuant::group`];
//! `G = d` by default, the last group may be shorter). Level by level (`L` =
//! [`AttentionQuant::levels`], 1 or 2), with the residual `r = v` at the first level, each
//! group `g` of `n` values gets
//!
//! - `S = Σ_{i ∈ g} |r_i|`, summed in `f32` in index order (`((|r₀| + |r₁|) + |r₂|) + …`);
//! - trits `t_i = sign(r_i) · [|r_i| · n > δ · S]`, i.e. `|r_i| > δ · mean_{i ∈ g} |r_i|`
//!   written with two `f32` products and no division, `δ` from [`Threshold`]: `1/2`
//!   ([`Threshold::HalfMean`]: BitNet's abs-mean rounding `clamp(round(r/m), −1, 1)`, ties to
//!   `0`, with `m = mean|r|`) or `0.7` ([`Threshold::Twn`], Ternary Weight Networks);
//! - a scale by [`ScaleRule`]: [`ScaleRule::AbsMean`] `α = S / n`; [`ScaleRule::Refit`]
//!   `α = K / k` with `K = Σ_{t_i ≠ 0} |r_i|` (`f32`, index order) and `k` the number of
//!   nonzero trits (`α = 0` when `k = 0`), the least-squares scale for those trits;
//! - for the next level, `r_i ← r_i − α` where `t_i = +1` and `r_i ← r_i + α` where
//!   `t_i = −1` (one `f32` rounding each, `r_i` untouched where `t_i = 0`), so that
//!   `v ≈ α¹t¹ + α²t²` with the stored scales.
//!
//! Counts (`n`, `k`) enter as exact `f32` values: a group may hold at most
//! [`MAX_GROUP_LEN`] `= 2²⁴` values.
//!
//! **Non-finite input.** A group whose `S` is not finite (a NaN or ±∞ in it, or `|r|` values
//! whose sum exceeds `f32::MAX`) gets zero trits and the scale [`f32::NAN`]; its residual stays
//! as it is, so later levels poison it too. Every popcount score that takes part in such a group
//! is then NaN (`NaN · 0 = NaN`), as the float product would be non-finite.
//!
//! # Why this arithmetic
//!
//! A GPU (WGSL has no `f64`) must reproduce the planes and scales bit for bit, so the rule uses
//! only `f32` additions, products, divisions and comparisons, each correctly rounded
//! (IEEE 754, round to nearest even), in an order one device unit per vector follows exactly:
//! sequential sums, no reassociation. No product is ever added to anything (products are only
//! compared, `α · t` is `±α`), so a compiler contracting `a · b + c` into a fused multiply-add
//! cannot change a result. What the device must provide: correctly rounded `f32` division
//! (CUDA's default, lavapipe; Vulkan itself only promises 2.5 ulp) and subnormals kept (not
//! flushed to zero). `ternary-kernels`' conformance suite checks the bits on each device.

use std::fmt;

use rayon::prelude::*;

use crate::error::{Result, TernaryError};
use crate::matrix::{WORD_BITS, words_per_row};
use crate::quant::TWN_DELTA_FACTOR;

/// The longest group (`2²⁴` values): every count up to it is an exact `f32`.
pub const MAX_GROUP_LEN: usize = 1 << 24;

/// The threshold factor `δ` of `t_i = sign(r_i) · [|r_i| > δ · mean|r|]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Threshold {
    /// `δ = 1/2`: BitNet b1.58's abs-mean rounding (the model path's rule).
    #[default]
    HalfMean,
    /// `δ = 0.7` ([`TWN_DELTA_FACTOR`], Ternary Weight Networks).
    Twn,
}

impl Threshold {
    /// `δ` as the `f32` the rule multiplies by (`0.5` exactly, or `0.7f32`).
    pub const fn factor(self) -> f32 {
        match self {
            Self::HalfMean => 0.5,
            Self::Twn => TWN_DELTA_FACTOR,
        }
    }
}

/// How the scale `α` of a ternarized group is chosen (the trits are the same for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ScaleRule {
    /// `α = mean_{i ∈ g} |r_i| = S / n` (BitNet's abs-mean scale).
    #[default]
    AbsMean,
    /// `α = mean(|r_i| : i ∈ g, t_i ≠ 0)`, the least-squares scale for the chosen trits.
    Refit,
}

/// The attention-score quantizer's parameters (see the [module docs](self) for the rule).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AttentionQuant {
    /// The threshold factor `δ`.
    pub threshold: Threshold,
    /// How each group's scale is chosen.
    pub scale: ScaleRule,
    /// Dimensions per scale group; `None` is one group per vector.
    pub group: Option<usize>,
    /// Ternary levels per vector: 1 (`v ≈ αt`) or 2 (`v ≈ α¹t¹ + α²t²`, residual).
    pub levels: usize,
}

impl Default for AttentionQuant {
    /// [`AttentionQuant::abs_mean`].
    fn default() -> Self {
        Self::abs_mean()
    }
}

impl AttentionQuant {
    /// The model path's default: `δ = 1/2`, `α = mean|v|`, one group per vector, one level.
    pub const fn abs_mean() -> Self {
        Self {
            threshold: Threshold::HalfMean,
            scale: ScaleRule::AbsMean,
            group: None,
            levels: 1,
        }
    }

    /// TWN: `δ = 0.7`, `α` refit to the kept values, one group per vector, one level.
    pub const fn twn() -> Self {
        Self {
            threshold: Threshold::Twn,
            scale: ScaleRule::Refit,
            group: None,
            levels: 1,
        }
    }

    /// Checks the parameters: `group ∈ 1..=2²⁴`, `levels ∈ {1, 2}`.
    pub fn validate(&self) -> Result<()> {
        if let Some(g) = self.group
            && !(1..=MAX_GROUP_LEN).contains(&g)
        {
            return Err(TernaryError::config(format!(
                "attention group size must lie in 1..={MAX_GROUP_LEN}, got {g}"
            )));
        }
        if !(1..=2).contains(&self.levels) {
            return Err(TernaryError::config(format!(
                "the attention quantizer supports 1 or 2 levels, got {}",
                self.levels
            )));
        }
        Ok(())
    }

    /// Values per group for vectors of `dim` values (`1` when `dim = 0`).
    pub fn group_len(&self, dim: usize) -> usize {
        self.group.unwrap_or(dim).clamp(1, dim.max(1))
    }

    /// Scale groups per vector and level: `⌈dim / G⌉` (`0` when `dim = 0`).
    pub fn groups(&self, dim: usize) -> usize {
        dim.div_ceil(self.group_len(dim))
    }

    /// Plane words per vector (in each of the `+1` and `−1` planes): `levels ·
    /// words_per_row(dim)`, level `l` at words `l · words_per_row(dim) ..`.
    pub fn words_per_vector(&self, dim: usize) -> usize {
        self.levels * words_per_row(dim)
    }

    /// Scales per vector: `levels · groups(dim)`, level `l`, group `g` at `l · groups + g`.
    pub fn scales_per_vector(&self, dim: usize) -> usize {
        self.levels * self.groups(dim)
    }

    /// Checks the parameters and that vectors of `dim` values fit the rule (groups of at most
    /// [`MAX_GROUP_LEN`] values).
    pub fn check_dim(&self, dim: usize) -> Result<()> {
        self.validate()?;
        let g = self.group_len(dim);
        if g > MAX_GROUP_LEN {
            return Err(TernaryError::config(format!(
                "attention groups of {g} values exceed {MAX_GROUP_LEN}; choose a group size"
            )));
        }
        Ok(())
    }

    /// Quantizes one vector `x` (see the [module docs](self)) into `plus` / `minus`
    /// ([`words_per_vector`](Self::words_per_vector) words each, zero padding; dimension `i`
    /// of level `l` in word `l · words_per_row(d) + i / 32`, bit `i % 32`) and `scales`
    /// ([`scales_per_vector`](Self::scales_per_vector)). Every output word and scale is
    /// written.
    pub fn quantize_vector(
        &self,
        x: &[f32],
        plus: &mut [u32],
        minus: &mut [u32],
        scales: &mut [f32],
    ) -> Result<()> {
        let dim = x.len();
        self.check_dim(dim)?;
        let (words, nscales) = (self.words_per_vector(dim), self.scales_per_vector(dim));
        if plus.len() != words || minus.len() != words || scales.len() != nscales {
            return Err(TernaryError::shape(format!(
                "a vector of {dim} values takes {words} words per plane and {nscales} scales, \
                 got {} / {} words and {} scales",
                plus.len(),
                minus.len(),
                scales.len()
            )));
        }
        self.quantize_unchecked(x, plus, minus, scales);
        Ok(())
    }

    /// Quantizes `x.len() / dim` row-major vectors of `dim` values (in parallel with rayon;
    /// the result does not depend on the thread count) into `plus` / `minus` (vector `v` at
    /// `v · words_per_vector(dim)`) and `scales` (vector `v` at `v · scales_per_vector(dim)`).
    /// With `dim = 0` every buffer must be empty.
    pub fn quantize_vectors(
        &self,
        x: &[f32],
        dim: usize,
        plus: &mut [u32],
        minus: &mut [u32],
        scales: &mut [f32],
    ) -> Result<()> {
        self.check_dim(dim)?;
        let (words, nscales) = (self.words_per_vector(dim), self.scales_per_vector(dim));
        let count = x.len().checked_div(dim).unwrap_or(0);
        if count * dim != x.len()
            || plus.len() != count * words
            || minus.len() != count * words
            || scales.len() != count * nscales
        {
            return Err(TernaryError::shape(format!(
                "{} values in vectors of {dim} need {words} words per plane and {nscales} \
                 scales per vector; got {} / {} words and {} scales",
                x.len(),
                plus.len(),
                minus.len(),
                scales.len()
            )));
        }
        if count == 0 {
            return Ok(());
        }
        plus.par_chunks_mut(words)
            .zip(minus.par_chunks_mut(words))
            .zip(scales.par_chunks_mut(nscales))
            .zip(x.par_chunks(dim))
            .for_each(|(((p, m), s), v)| self.quantize_unchecked(v, p, m, s));
        Ok(())
    }

    /// The rule on one vector, buffers already checked.
    fn quantize_unchecked(
        &self,
        x: &[f32],
        plus: &mut [u32],
        minus: &mut [u32],
        scales: &mut [f32],
    ) {
        plus.fill(0);
        minus.fill(0);
        let dim = x.len();
        if dim == 0 {
            return;
        }
        let (wpr, group, groups) = (words_per_row(dim), self.group_len(dim), self.groups(dim));
        let delta = self.threshold.factor();
        let mut r = x.to_vec();
        for ((p, m), s) in plus
            .chunks_exact_mut(wpr)
            .zip(minus.chunks_exact_mut(wpr))
            .zip(scales.chunks_exact_mut(groups))
        {
            for ((g, rg), alpha_out) in r.chunks_mut(group).enumerate().zip(s.iter_mut()) {
                let n = rg.len() as f32;
                let total = sum_abs(rg);
                if !total.is_finite() {
                    *alpha_out = f32::NAN;
                    continue;
                }
                let thr = delta * total;
                let (mut kept, mut nnz) = (0f32, 0u32);
                for (j, &v) in rg.iter().enumerate() {
                    let a = v.abs();
                    if a * n > thr {
                        let i = g * group + j;
                        let (word, bit) = (i / WORD_BITS, 1u32 << (i % WORD_BITS));
                        if v > 0.0 {
                            p[word] |= bit;
                        } else {
                            m[word] |= bit;
                        }
                        kept += a;
                        nnz += 1;
                    }
                }
                let alpha = match self.scale {
                    ScaleRule::AbsMean => total / n,
                    ScaleRule::Refit if nnz == 0 => 0.0,
                    ScaleRule::Refit => kept / nnz as f32,
                };
                *alpha_out = alpha;
                // The next level's residual, with the stored scale.
                for (j, v) in rg.iter_mut().enumerate() {
                    let i = g * group + j;
                    let (word, bit) = (i / WORD_BITS, 1u32 << (i % WORD_BITS));
                    if p[word] & bit != 0 {
                        *v -= alpha;
                    } else if m[word] & bit != 0 {
                        *v += alpha;
                    }
                }
            }
        }
    }
}

impl fmt::Display for AttentionQuant {
    /// E.g. `ternary(δ=0.5, absmean, g=16, L=2)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scale = match self.scale {
            ScaleRule::AbsMean => "absmean",
            ScaleRule::Refit => "refit",
        };
        write!(f, "ternary(δ={}, {scale}, ", self.threshold.factor())?;
        match self.group {
            Some(g) => write!(f, "g={g}")?,
            None => f.write_str("vector")?,
        }
        write!(f, ", L={})", self.levels)
    }
}

/// `Σ_i |x_i|` in `f32`, summed sequentially in index order: the statistic of the
/// [module docs](self), which a device unit reproduces exactly.
pub fn sum_abs(x: &[f32]) -> f32 {
    x.iter().fold(0f32, |s, v| s + v.abs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(x: &[f32], q: &AttentionQuant) -> (Vec<u32>, Vec<u32>, Vec<f32>) {
        let d = x.len();
        let mut p = vec![0xDEAD_BEEF; q.words_per_vector(d)];
        let mut m = vec![0xDEAD_BEEF; q.words_per_vector(d)];
        let mut s = vec![-1.0; q.scales_per_vector(d)];
        q.quantize_vector(x, &mut p, &mut m, &mut s).unwrap();
        (p, m, s)
    }

    #[test]
    fn half_mean_threshold_ties_go_to_zero() {
        // S = 8, n = 4, m = 2: keep |x| * 4 > 4, so the ties |x| = 1 are zero.
        let (p, m, s) = run(&[2.0, -1.0, 1.0, -4.0], &AttentionQuant::abs_mean());
        assert_eq!((p, m, s), (vec![0b0001, 0], vec![0b1000, 0], vec![2.0]));
        let refit = AttentionQuant {
            scale: ScaleRule::Refit,
            ..AttentionQuant::abs_mean()
        };
        assert_eq!(run(&[2.0, -1.0, 1.0, -4.0], &refit).2, vec![3.0]);
    }

    #[test]
    fn twn_threshold_follows_the_rule() {
        // |x| = 4, 1, 1, 0: S = 6, keep |x| * 4 > 4.2: only the 4.
        let (p, m, s) = run(&[-4.0, 1.0, -1.0, 0.0], &AttentionQuant::twn());
        assert_eq!((p, m, s), (vec![0, 0], vec![1, 0], vec![4.0]));
    }

    #[test]
    fn groups_and_levels_use_the_stored_scales() {
        let q = AttentionQuant {
            group: Some(2),
            levels: 2,
            ..AttentionQuant::abs_mean()
        };
        // Group 0: [3, 1] S = 4, keep |x|·2 > 2 → only the 3 (the 1 is a tie), α = 2,
        //   residual [1, 1]; level 2: S = 2, keep |r|·2 > 1 → both, α = 1.
        // Group 1: [0, 0]: zero trits, α = 0 at both levels.
        let (p, m, s) = run(&[3.0, 1.0, 0.0, 0.0], &q);
        assert_eq!(p, vec![0b0001, 0, 0b0011, 0]);
        assert_eq!(m, vec![0; 4]);
        assert_eq!(s, vec![2.0, 0.0, 1.0, 0.0]);
    }

    #[test]
    fn non_finite_groups_get_nan_scales_and_zero_trits() {
        let q = AttentionQuant {
            group: Some(2),
            levels: 2,
            ..AttentionQuant::abs_mean()
        };
        // Group 0 holds the NaN: zero trits, NaN scales at both levels; group 1 is normal.
        let (p, m, s) = run(&[f32::NAN, 1.0, 2.0, -2.0], &q);
        assert_eq!((p[0], m[0]), (0b0100, 0b1000));
        assert!(s[0].is_nan() && s[2].is_nan(), "{s:?}");
        assert_eq!((s[1], s[3]), (2.0, 0.0));
        // A finite vector whose |v| sum overflows f32.
        let (p, _, s) = run(&[3e38, 3e38], &AttentionQuant::abs_mean());
        assert_eq!(p, vec![0, 0]);
        assert!(s[0].is_nan());
    }

    #[test]
    fn bad_parameters_and_buffers_are_errors() {
        for bad in [
            AttentionQuant {
                levels: 0,
                ..Default::default()
            },
            AttentionQuant {
                levels: 3,
                ..Default::default()
            },
            AttentionQuant {
                group: Some(0),
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let q = AttentionQuant::default();
        let (mut p, mut m, mut s) = (vec![0u32; 2], vec![0u32; 2], vec![0f32; 1]);
        assert!(q.quantize_vector(&[1.0; 3], &mut p, &mut m, &mut s).is_ok());
        assert!(
            q.quantize_vector(&[1.0; 65], &mut p, &mut m, &mut s)
                .is_err()
        );
        assert!(
            q.quantize_vectors(&[1.0; 5], 2, &mut p, &mut m, &mut s)
                .is_err()
        );
        // dim = 0: no vectors, no output.
        assert!(
            q.quantize_vectors(&[], 0, &mut [], &mut [], &mut [])
                .is_ok()
        );
    }

    #[test]
    fn batch_equals_one_by_one() {
        let q = AttentionQuant {
            group: Some(5),
            levels: 2,
            ..AttentionQuant::twn()
        };
        let d = 37;
        let x: Vec<f32> = (0..d * 6)
            .map(|i| ((i * 7919 % 113) as f32 - 56.0) * 0.37)
            .collect();
        let (w, ns) = (q.words_per_vector(d), q.scales_per_vector(d));
        let (mut p, mut m, mut s) = (vec![0; 6 * w], vec![0; 6 * w], vec![0f32; 6 * ns]);
        q.quantize_vectors(&x, d, &mut p, &mut m, &mut s).unwrap();
        for v in 0..6 {
            let (p1, m1, s1) = run(&x[v * d..(v + 1) * d], &q);
            assert_eq!(&p[v * w..(v + 1) * w], &p1[..]);
            assert_eq!(&m[v * w..(v + 1) * w], &m1[..]);
            assert_eq!(&s[v * ns..(v + 1) * ns], &s1[..]);
        }
    }
}
