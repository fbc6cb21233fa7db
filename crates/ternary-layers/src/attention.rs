//! The attention-score seam [`ScoreFn`] with its two implementations: [`FloatScores`] (a
//! model's default) and [`TernaryScores`], ternary (popcount) scoring (installed with
//! `Llama::set_score_fn` in `ternary-models`).
//!
//! Every query and key vector `v ∈ ℝ^d` (per head, per token, after RoPE) is ternarized by the
//! one attention quantizer, [`ternary_core::quant::attention`] (the rule the GPU kernel of
//! `ternary-kernels` reproduces bit for bit), with the abs-mean threshold `δ = 1/2`, per group
//! of `G` consecutive dimensions (`G = d` by default):
//!
//! `S = Σ_{i ∈ g} |v_i|` (`f32`, index order), `t_i = sign(v_i) · [|v_i| · n > S / 2]` (i.e.
//! `|v_i| > m / 2` with `m = mean_{i ∈ g} |v_i|`), scale `α_g` by [`ScaleRule`]:
//! [`ScaleRule::AbsMean`] `α_g = m`; [`ScaleRule::Refit`] `α_g = mean(|v_i| : i ∈ g, t_i ≠ 0)`
//! (the least-squares scale for those trits, `0` when every `t_i = 0`).
//!
//! With `L = 2` levels the residual `v − α·t` (with the stored `f32` scales) is ternarized the
//! same way, `v ≈ α¹t¹ + α²t²`. The raw score of query `q` and key `k` is then
//!
//! `S = Σ_{a, b < L} Σ_g α_q^{a,g} · α_k^{b,g} · Σ_{i ∈ g} t_q,i^a · t_k,i^b`,
//!
//! each integer dot computed exactly by popcounts of bit-planes
//! (`popc(q⁺&k⁺ | q⁻&k⁻) − popc(q⁺&k⁻ | q⁻&k⁺)`; `ternary_core::kernels::ternary_dot` for
//! groups of whole words), the weighted sum formed in `f64` and rounded to `f32`. The
//! quantizer's statistics are `f32` sums in index order (see its docs for why). Grouped-query
//! attention: query head `h` reads key head `h / (n_h / n_kv)`; each key vector is ternarized
//! once.
//!
//! The scores are computed on the host (rows in parallel with rayon) and copied back to the
//! device, so this is a CPU path; its cost in perplexity is measured by the
//! `ternary_attention` example.

use burn::tensor::{Tensor, TensorData, backend::Backend};
use rayon::prelude::*;
use std::fmt::Debug;
use ternary_core::kernels::ternary_dot;
use ternary_core::quant::attention::{AttentionQuant, Threshold};
use ternary_core::words_per_row;

pub use ternary_core::quant::attention::ScaleRule;

use crate::error::{LayerError, Result};

/// The attention-score seam: raw scores `S[h, i, j] = q[h, i] · k[h / g, j]` per query head
/// `h` (`g = n_h / n_kv` query heads share a key head), before the `1/√d` scaling, the causal
/// mask and the softmax. A model uses [`FloatScores`] unless
/// it installs another implementation (e.g. ternary popcount scoring).
pub trait ScoreFn<B: Backend>: Debug + Send + Sync {
    /// Scores for block `layer`: `q: [n_h, n, d]` (after RoPE), `k: [n_kv, T, d]` (every cached
    /// position, after RoPE, not repeated per group) → `[n_h, n, T]`.
    fn scores(&self, layer: usize, q: Tensor<B, 3>, k: Tensor<B, 3>) -> Tensor<B, 3>;
    /// Short name (e.g. `"float"`).
    fn name(&self) -> String;
}

/// The float scores `q · kᵀ` with Burn's matmul (each key head repeated for its `g` query
/// heads): the model's default.
#[derive(Debug, Clone, Copy, Default)]
pub struct FloatScores;

impl<B: Backend> ScoreFn<B> for FloatScores {
    fn scores(&self, _layer: usize, q: Tensor<B, 3>, k: Tensor<B, 3>) -> Tensor<B, 3> {
        let [nh, _, _] = q.dims();
        let [nkv, total, d] = k.dims();
        // Repeat each key head for its `group` query heads: [n_kv, T, d] -> [n_h, T, d].
        let k = k
            .unsqueeze_dim::<4>(1)
            .expand([nkv, nh / nkv, total, d])
            .reshape([nh, total, d]);
        q.matmul(k.swap_dims(1, 2))
    }

    fn name(&self) -> String {
        "float".into()
    }
}

/// The ternarization of attention vectors: scale rule, dimensions per scale, levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TernaryScoreConfig {
    /// How each group's scale is chosen.
    pub rule: ScaleRule,
    /// Dimensions per scale group; `None` is one group per vector.
    pub group: Option<usize>,
    /// Ternary levels per vector: 1 (`v ≈ αt`) or 2 (`v ≈ α¹t¹ + α²t²`, residual).
    pub levels: usize,
}

impl Default for TernaryScoreConfig {
    /// Abs-mean, one scale per vector, one level.
    fn default() -> Self {
        Self {
            rule: ScaleRule::AbsMean,
            group: None,
            levels: 1,
        }
    }
}

impl TernaryScoreConfig {
    /// The attention quantizer this configuration stands for: the abs-mean threshold
    /// `δ = 1/2` ([`Threshold::HalfMean`]) with this scale rule, group size and levels.
    pub const fn quantizer(&self) -> AttentionQuant {
        AttentionQuant {
            threshold: Threshold::HalfMean,
            scale: self.rule,
            group: self.group,
            levels: self.levels,
        }
    }

    /// Checks the parameters (`group ≥ 1`, `levels ∈ {1, 2}`; see
    /// [`AttentionQuant::validate`]).
    pub fn validate(&self) -> Result<()> {
        Ok(self.quantizer().validate()?)
    }

    /// A short name, e.g. `"ternary(absmean, g=16, L=2)"`.
    pub fn name(&self) -> String {
        let rule = match self.rule {
            ScaleRule::AbsMean => "absmean",
            ScaleRule::Refit => "refit",
        };
        let group = self
            .group
            .map_or("vector".to_string(), |g| format!("g={g}"));
        format!("ternary({rule}, {group}, L={})", self.levels)
    }
}

/// Ternarized vectors: per vector and level `words_per_row(dim)` words of each plane and one
/// scale per group.
#[derive(Debug, Clone, PartialEq)]
pub struct TernaryVectors {
    /// Vectors.
    pub count: usize,
    /// Values per vector.
    pub dim: usize,
    /// Dimensions per scale group (the last group may be shorter).
    pub group: usize,
    /// Levels per vector.
    pub levels: usize,
    /// `+1` planes, `count × levels × words_per_row(dim)` (dimension `i` in word `i / 32`,
    /// bit `i % 32`).
    pub plus: Vec<u32>,
    /// `-1` planes, same layout.
    pub minus: Vec<u32>,
    /// Scales, `count × levels × ⌈dim / group⌉`.
    pub scales: Vec<f32>,
}

impl TernaryVectors {
    /// Ternarizes `v.len() / dim` row-major vectors of `dim` values with
    /// [`AttentionQuant::quantize_vectors`] (see the [module docs](self)). A group holding NaN
    /// or ±∞ gets zero trits and NaN scales, so every score it takes part in is NaN (as the
    /// float product would be).
    pub fn ternarize(v: &[f32], dim: usize, cfg: &TernaryScoreConfig) -> Result<Self> {
        let quant = cfg.quantizer();
        quant.check_dim(dim)?;
        if dim == 0 || !v.len().is_multiple_of(dim) {
            return Err(LayerError::Shape(format!(
                "{} values are not a whole number of vectors of {dim}",
                v.len()
            )));
        }
        let count = v.len() / dim;
        let words = count * quant.words_per_vector(dim);
        let mut plus = vec![0u32; words];
        let mut minus = vec![0u32; words];
        let mut scales = vec![f32::NAN; count * quant.scales_per_vector(dim)];
        quant.quantize_vectors(v, dim, &mut plus, &mut minus, &mut scales)?;
        Ok(Self {
            count,
            dim,
            group: quant.group_len(dim),
            levels: quant.levels,
            plus,
            minus,
            scales,
        })
    }

    /// Scale groups per vector and level.
    pub fn groups(&self) -> usize {
        self.dim.div_ceil(self.group)
    }

    /// The `+1` and `-1` words of vector `i`, level `level`.
    pub fn planes(&self, i: usize, level: usize) -> (&[u32], &[u32]) {
        let wpr = words_per_row(self.dim);
        let at = (i * self.levels + level) * wpr;
        (&self.plus[at..at + wpr], &self.minus[at..at + wpr])
    }

    /// The scales of vector `i`, level `level` (one per group).
    pub fn group_scales(&self, i: usize, level: usize) -> &[f32] {
        let g = self.groups();
        let at = (i * self.levels + level) * g;
        &self.scales[at..at + g]
    }

    /// The exact integer dots `Σ_{i ∈ g} t_a,i · t_b,i` per group, of vector `a` (level `la`)
    /// of `self` and vector `b` (level `lb`) of `other`, written to `out` (one per group).
    pub fn group_dots(
        &self,
        a: usize,
        la: usize,
        other: &TernaryVectors,
        b: usize,
        lb: usize,
        out: &mut [i64],
    ) -> Result<()> {
        if other.dim != self.dim || other.group != self.group || out.len() != self.groups() {
            return Err(LayerError::Shape(format!(
                "cannot dot vectors of {} (groups of {}) with {} (groups of {}) into {} groups",
                self.dim,
                self.group,
                other.dim,
                other.group,
                out.len()
            )));
        }
        let (ap, am) = self.planes(a, la);
        let (bp, bm) = other.planes(b, lb);
        if self.group == self.dim || self.group.is_multiple_of(32) {
            // Whole-word groups: the popcount kernel on word ranges.
            let wpg = if self.group == self.dim {
                ap.len()
            } else {
                self.group / 32
            };
            for (g, o) in out.iter_mut().enumerate() {
                let r = (g * wpg).min(ap.len())..((g + 1) * wpg).min(ap.len());
                *o = ternary_dot(&ap[r.clone()], &am[r.clone()], &bp[r.clone()], &bm[r])?;
            }
        } else {
            for (g, o) in out.iter_mut().enumerate() {
                let (lo, hi) = (g * self.group, ((g + 1) * self.group).min(self.dim));
                let mut acc = 0i64;
                let mut i = lo;
                while i < hi {
                    let (w, bit) = (i / 32, i % 32);
                    let len = (32 - bit).min(hi - i);
                    let mask = if len == 32 {
                        u32::MAX
                    } else {
                        ((1u32 << len) - 1) << bit
                    };
                    let same = ((ap[w] & bp[w]) | (am[w] & bm[w])) & mask;
                    let diff = ((ap[w] & bm[w]) | (am[w] & bp[w])) & mask;
                    acc += i64::from(same.count_ones()) - i64::from(diff.count_ones());
                    i += len;
                }
                *o = acc;
            }
        }
        Ok(())
    }
}

/// Ternary scores on host data: `q` is `[n_h, n, d]`, `k` is `[n_kv, T, d]` (row-major), the
/// result `[n_h, n, T]` (see the [module docs](self)) for query head `h` and key head
/// `h / (n_h / n_kv)`.
#[allow(clippy::too_many_arguments)]
pub fn ternary_scores_host(
    q: &[f32],
    k: &[f32],
    heads: usize,
    kv_heads: usize,
    n: usize,
    total: usize,
    d: usize,
    cfg: &TernaryScoreConfig,
) -> Result<Vec<f32>> {
    cfg.validate()?;
    if kv_heads == 0 || !heads.is_multiple_of(kv_heads) {
        return Err(LayerError::Shape(format!(
            "{heads} query heads cannot share {kv_heads} key heads"
        )));
    }
    if q.len() != heads * n * d || k.len() != kv_heads * total * d {
        return Err(LayerError::Shape(format!(
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
    let tq = TernaryVectors::ternarize(q, d, cfg)?;
    let tk = TernaryVectors::ternarize(k, d, cfg)?;
    let levels = cfg.levels;
    // One output row per (head, query): [T] scores.
    out.par_chunks_mut(total)
        .enumerate()
        .try_for_each(|(row, o)| -> Result<()> {
            let kh = (row / n) / group;
            let mut dots = vec![0i64; tq.groups()];
            for (j, s) in o.iter_mut().enumerate() {
                let key = kh * total + j;
                let mut acc = 0f64;
                for la in 0..levels {
                    let sq = tq.group_scales(row, la);
                    for lb in 0..levels {
                        tq.group_dots(row, la, &tk, key, lb, &mut dots)?;
                        let sk = tk.group_scales(key, lb);
                        for ((&dot, &a), &b) in dots.iter().zip(sq).zip(sk) {
                            acc += f64::from(a) * f64::from(b) * dot as f64;
                        }
                    }
                }
                *s = acc as f32;
            }
            Ok(())
        })?;
    Ok(out)
}

/// Popcount attention scores (see the [module docs](self)) as a [`ScoreFn`], in every block
/// or only in chosen ones ([`FloatScores`] elsewhere).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TernaryScores {
    cfg: TernaryScoreConfig,
    layers: Option<Vec<usize>>,
}

impl TernaryScores {
    /// Ternary scores in every block with the configuration `cfg` (checked on use).
    pub fn new(cfg: TernaryScoreConfig) -> Self {
        Self { cfg, layers: None }
    }

    /// Restricts the ternary scores to the blocks in `layers`; the others use [`FloatScores`].
    pub fn only_layers(mut self, layers: Vec<usize>) -> Self {
        self.layers = Some(layers);
        self
    }

    /// Whether block `layer` uses ternary scores.
    pub fn applies_to(&self, layer: usize) -> bool {
        self.layers.as_ref().is_none_or(|l| l.contains(&layer))
    }

    /// The configuration.
    pub fn config(&self) -> &TernaryScoreConfig {
        &self.cfg
    }

    /// [`ScoreFn::scores`] with an error instead of a panic for misshaped input or an invalid
    /// configuration.
    pub fn try_scores<B: Backend>(&self, q: Tensor<B, 3>, k: Tensor<B, 3>) -> Result<Tensor<B, 3>> {
        let device = q.device();
        let [nh, n, d] = q.dims();
        let [nkv, total, dk] = k.dims();
        if dk != d {
            return Err(LayerError::Shape(format!(
                "queries have {d} values per head, keys {dk}"
            )));
        }
        let host = |t: Tensor<B, 3>| {
            crate::linear::to_host(t)
                .map_err(|e| LayerError::Invalid(format!("cannot read attention inputs: {e}")))
        };
        let s = ternary_scores_host(&host(q)?, &host(k)?, nh, nkv, n, total, d, &self.cfg)?;
        Ok(Tensor::from_data(
            TensorData::new(s, [nh, n, total]),
            &device,
        ))
    }
}

impl<B: Backend> ScoreFn<B> for TernaryScores {
    /// # Panics
    /// On an invalid configuration or inconsistent shapes (`n_h` not a multiple of `n_kv`,
    /// different head sizes), which the model never passes; [`TernaryScores::try_scores`]
    /// returns these as errors.
    fn scores(&self, layer: usize, q: Tensor<B, 3>, k: Tensor<B, 3>) -> Tensor<B, 3> {
        if !self.applies_to(layer) {
            return FloatScores.scores(layer, q, k);
        }
        match self.try_scores(q, k) {
            Ok(s) => s,
            Err(e) => panic!("TernaryScores: {e}"),
        }
    }

    fn name(&self) -> String {
        match &self.layers {
            None => self.cfg.name(),
            Some(l) => format!("{} in layers {l:?}", self.cfg.name()),
        }
    }
}
