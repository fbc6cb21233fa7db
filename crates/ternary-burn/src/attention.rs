//! Ternary (popcount) attention scoring, an optional [`ScoreFn`] for
//! [`Llama`](ternary_models::Llama) (off by default: install it with
//! [`Llama::set_score_fn`](ternary_models::Llama::set_score_fn)).
//!
//! Every query and key vector `v ∈ ℝ^d` (per head, per token, after RoPE) is ternarized with
//! an abs-mean threshold:
//!
//! `m = mean_i |v_i|`,  `t_i = sign(v_i) · [|v_i| > m / 2]`,  scale `α` by [`ScaleRule`]:
//! [`ScaleRule::AbsMean`] `α = m`; [`ScaleRule::Refit`] `α = mean(|v_i| : t_i ≠ 0)` (the
//! least-squares scale for those trits, `0` when every `t_i = 0`).
//!
//! The raw score of query `q` and key `k` is then
//!
//! `S = α_q · α_k · Σ_i t_q,i · t_k,i`,
//!
//! the integer dot computed exactly by popcounts of bit-planes
//! (`ternary_core::kernels::ternary_dot`: `popc(q⁺&k⁺) + popc(q⁻&k⁻) − popc(q⁺&k⁻) − popc(q⁻&k⁺)`),
//! the product `α_q · α_k · dot` formed in `f64` and rounded to `f32`. Statistics (`m`, `α`)
//! are computed in `f64`. Grouped-query attention: query head `h` reads key head
//! `h / (n_h / n_kv)`; each key vector is ternarized once.
//!
//! The scores are computed on the host (rows in parallel with rayon) and copied back to the
//! device, so this is a CPU path; its cost in perplexity is measured by the
//! `ternary_attention` example.

use burn::tensor::{Tensor, TensorData, backend::Backend};
use rayon::prelude::*;
use ternary_core::kernels::ternary_dot;
use ternary_core::words_per_row;
use ternary_models::model::ScoreFn;

use crate::error::{Error, Result};

/// How the scale `α` of a ternarized vector is chosen (the trits are the same for both).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ScaleRule {
    /// `α = mean_i |v_i|` (BitNet's abs-mean scale).
    AbsMean,
    /// `α = mean(|v_i| : t_i ≠ 0)`, the least-squares scale for the chosen trits.
    #[default]
    Refit,
}

/// Ternarized vectors: per vector `words_per_row(d)` words of each plane and one scale.
#[derive(Debug, Clone, PartialEq)]
pub struct TernaryVectors {
    /// Vectors.
    pub count: usize,
    /// Values per vector.
    pub dim: usize,
    /// `+1` planes, `count × words_per_row(dim)` (column `i` in word `i / 32`, bit `i % 32`).
    pub plus: Vec<u32>,
    /// `-1` planes, same layout.
    pub minus: Vec<u32>,
    /// Scales `α`, one per vector.
    pub scales: Vec<f32>,
}

impl TernaryVectors {
    /// Ternarizes `count = v.len() / dim` row-major vectors of `dim` values with `rule` (see
    /// the [module docs](self)). A vector holding NaN or ±∞ gets zero planes and scale NaN, so
    /// every score it takes part in is NaN (as the float product would be).
    pub fn ternarize(v: &[f32], dim: usize, rule: ScaleRule) -> Result<Self> {
        if dim == 0 || !v.len().is_multiple_of(dim) {
            return Err(Error::Shape(format!(
                "{} values are not a whole number of vectors of {dim}",
                v.len()
            )));
        }
        let count = v.len() / dim;
        let wpr = words_per_row(dim);
        let mut plus = vec![0u32; count * wpr];
        let mut minus = vec![0u32; count * wpr];
        let mut scales = vec![f32::NAN; count];
        plus.par_chunks_mut(wpr)
            .zip(minus.par_chunks_mut(wpr))
            .zip(scales.par_iter_mut())
            .zip(v.par_chunks(dim))
            .for_each(|(((p, m), s), x)| *s = ternarize_one(x, p, m, rule));
        Ok(Self {
            count,
            dim,
            plus,
            minus,
            scales,
        })
    }

    /// The `+1` and `-1` words of vector `i`.
    pub fn planes(&self, i: usize) -> (&[u32], &[u32]) {
        let wpr = words_per_row(self.dim);
        (
            &self.plus[i * wpr..(i + 1) * wpr],
            &self.minus[i * wpr..(i + 1) * wpr],
        )
    }

    /// The exact integer dot `Σ_i t_a,i · t_b,i` of vector `a` of `self` and `b` of `other`.
    pub fn dot(&self, a: usize, other: &TernaryVectors, b: usize) -> Result<i64> {
        let (ap, am) = self.planes(a);
        let (bp, bm) = other.planes(b);
        Ok(ternary_dot(ap, am, bp, bm)?)
    }
}

/// Writes the planes of one vector (zeroed first) and returns its scale.
fn ternarize_one(x: &[f32], plus: &mut [u32], minus: &mut [u32], rule: ScaleRule) -> f32 {
    plus.fill(0);
    minus.fill(0);
    if x.iter().any(|v| !v.is_finite()) {
        return f32::NAN;
    }
    let abs_sum: f64 = x.iter().map(|v| f64::from(v.abs())).sum();
    let mean = abs_sum / x.len() as f64;
    let threshold = mean / 2.0;
    let (mut kept_sum, mut kept) = (0f64, 0usize);
    for (i, &v) in x.iter().enumerate() {
        let a = f64::from(v.abs());
        if a > threshold {
            let bit = 1u32 << (i % 32);
            if v > 0.0 {
                plus[i / 32] |= bit;
            } else {
                minus[i / 32] |= bit;
            }
            kept_sum += a;
            kept += 1;
        }
    }
    match rule {
        ScaleRule::AbsMean => mean as f32,
        ScaleRule::Refit if kept == 0 => 0.0,
        ScaleRule::Refit => (kept_sum / kept as f64) as f32,
    }
}

/// Ternary scores on host data: `q` is `[n_h, n, d]`, `k` is `[n_kv, T, d]` (row-major), the
/// result `[n_h, n, T]` with `S[h, i, j] = α_q · α_k · Σ t_q t_k` for query head `h` and key
/// head `h / (n_h / n_kv)`.
#[allow(clippy::too_many_arguments)]
pub fn ternary_scores_host(
    q: &[f32],
    k: &[f32],
    heads: usize,
    kv_heads: usize,
    n: usize,
    total: usize,
    d: usize,
    rule: ScaleRule,
) -> Result<Vec<f32>> {
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(Error::Shape(format!(
            "{heads} query heads cannot share {kv_heads} key heads"
        )));
    }
    if q.len() != heads * n * d || k.len() != kv_heads * total * d {
        return Err(Error::Shape(format!(
            "q has {} values (expected {heads}x{n}x{d}), k has {} (expected {kv_heads}x{total}x{d})",
            q.len(),
            k.len()
        )));
    }
    let group = heads / kv_heads;
    let mut out = vec![f32::NAN; heads * n * total];
    if out.is_empty() {
        return Ok(out);
    }
    let tq = TernaryVectors::ternarize(q, d, rule)?;
    let tk = TernaryVectors::ternarize(k, d, rule)?;
    // One output row per (head, query): [T] scores.
    out.par_chunks_mut(total)
        .enumerate()
        .try_for_each(|(row, o)| -> Result<()> {
            let h = row / n;
            let kh = h / group;
            let sq = f64::from(tq.scales[row]);
            let (qp, qm) = tq.planes(row);
            for (j, s) in o.iter_mut().enumerate() {
                let key = kh * total + j;
                let (kp, km) = tk.planes(key);
                let dot = ternary_dot(qp, qm, kp, km)?;
                *s = (sq * f64::from(tk.scales[key]) * dot as f64) as f32;
            }
            Ok(())
        })?;
    Ok(out)
}

/// Popcount attention scores (see the [module docs](self)) as a [`ScoreFn`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TernaryScores {
    rule: ScaleRule,
}

impl TernaryScores {
    /// Ternary scores with the scale `rule`.
    pub fn new(rule: ScaleRule) -> Self {
        Self { rule }
    }

    /// The scale rule.
    pub fn rule(&self) -> ScaleRule {
        self.rule
    }

    /// [`ScoreFn::scores`] with an error instead of a panic for misshaped input.
    pub fn try_scores<B: Backend>(&self, q: Tensor<B, 3>, k: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        let device = q.device();
        let [nh, n, d] = q.dims();
        let [nkv, total, dk] = k.dims();
        if dk != d {
            return Err(Error::Shape(format!(
                "queries have {d} values per head, keys {dk}"
            )));
        }
        let host = |t: Tensor<B, 3>| {
            t.into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| Error::Invalid(format!("cannot read attention inputs: {e:?}")))
        };
        let s = ternary_scores_host(&host(q)?, &host(k)?, nh, nkv, n, total, d, self.rule)?;
        Ok(Tensor::from_data(
            TensorData::new(s, [nh, n, total]),
            &device,
        ))
    }
}

impl<B: Backend> ScoreFn<B> for TernaryScores {
    /// # Panics
    /// On inconsistent shapes (`n_h` not a multiple of `n_kv`, different head sizes), which
    /// the model never passes; [`TernaryScores::try_scores`] returns these as errors.
    fn scores(&self, _layer: usize, q: Tensor<B, 3>, k: Tensor<B, 3>) -> Tensor<B, 3> {
        match self.try_scores(q, k) {
            Ok(s) => s,
            Err(e) => panic!("TernaryScores: {e}"),
        }
    }

    fn name(&self) -> String {
        match self.rule {
            ScaleRule::AbsMean => "ternary(absmean)".into(),
            ScaleRule::Refit => "ternary(refit)".into(),
        }
    }
}
