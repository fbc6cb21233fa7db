//! Popcount attention scoring.
//!
//! Q (`nq` tokens) and K (`nk` tokens) are `tokens × heads × dim` row-major `f32`; each head
//! vector is quantized into bit-planes and scales ([`QkQuant`]): ternary vectors by the one
//! attention quantizer, [`ternary_core::quant::attention`] (the device kernel reproduces the
//! host function bit for bit), or binary sign vectors. Then
//! `score[h, i, j] = α_q · α_k · dot(q_{i,h}, k_{j,h}) · scale` with the integer dot computed by
//! popcounts (device scoring takes one level and one scale per vector). With `causal`, key `j`
//! is masked for query `i` when `j > i + (nk − nq)` (queries are the last `nq` positions), and
//! masked scores are `−∞`, so the scores go straight into a float softmax. Layout of scores:
//! `heads × nq × nk`.
//!
//! [`cpu`] holds the host reference (the core quantizer, `ternary_core::reference` dots) and the
//! agreement metrics against float `QKᵀ` reported in `docs/gpu.md`.

use std::fmt;

use cubecl::prelude::*;
use ternary_core::quant::attention::{AttentionQuant, MAX_GROUP_LEN, ScaleRule};
use ternary_core::words_per_row;

use crate::buffer::DeviceArray;
use crate::device::DeviceCaps;
use crate::error::{KernelError, Result};
use crate::gemm::{check_grid, flush};
use crate::kernels::{qk_scores, quantize_heads};
use crate::matrix::check_u32_range;

/// How head vectors become bit planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QkQuant {
    /// The attention quantizer of [`ternary_core::quant::attention`] with these parameters:
    /// per group, `t_i = sign(x_i) · [|x_i| > δ · mean|x|]` (`δ = 1/2` or `0.7`), scale the
    /// abs-mean or the mean of the kept `|x_i|`, one or two residual levels.
    /// [`QkQuant::TWN`] is the default.
    Ternary(AttentionQuant),
    /// `b_i = sign(x_i)` (`x_i ≤ 0` counts as `−1`); `α = mean|x|` (`f32` sum in index order,
    /// as [`ternary_core::quant::attention::sum_abs`]); a vector whose sum is not finite gets
    /// a zero plane and `α = NaN`. One plane and one scale per vector.
    Binary,
}

impl Default for QkQuant {
    /// [`QkQuant::TWN`].
    fn default() -> Self {
        Self::TWN
    }
}

impl fmt::Display for QkQuant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Ternary(q) => q.fmt(f),
            Self::Binary => f.write_str("binary"),
        }
    }
}

impl QkQuant {
    /// Ternary with the TWN threshold `0.7 · mean|x|`, `α` the mean of the kept `|x_i|`, one
    /// scale per vector, one level ([`AttentionQuant::twn`]).
    pub const TWN: Self = Self::Ternary(AttentionQuant::twn());

    /// Checks the parameters for vectors of `dim` values (at most `2²⁴` values per group).
    pub fn check_dim(&self, dim: usize) -> Result<()> {
        match self {
            Self::Ternary(q) => Ok(q.check_dim(dim)?),
            Self::Binary if dim > MAX_GROUP_LEN => Err(KernelError::config(format!(
                "binary head vectors of {dim} values exceed {MAX_GROUP_LEN}"
            ))),
            Self::Binary => Ok(()),
        }
    }

    /// Plane words per vector in each of the two planes (levels × `words_per_row(dim)`).
    pub fn words_per_vector(&self, dim: usize) -> usize {
        match self {
            Self::Ternary(q) => q.words_per_vector(dim),
            Self::Binary => words_per_row(dim),
        }
    }

    /// Scales per vector (levels × groups; `1` for binary).
    pub fn scales_per_vector(&self, dim: usize) -> usize {
        match self {
            Self::Ternary(q) => q.scales_per_vector(dim),
            Self::Binary => 1,
        }
    }

    /// Whether popcount scoring can use vectors of `dim` values quantized this way: one level
    /// and at most one scale per vector.
    pub fn check_scoring(&self, dim: usize) -> Result<()> {
        match self {
            Self::Ternary(q) if q.levels != 1 || q.groups(dim) > 1 => {
                Err(KernelError::config(format!(
                    "popcount scoring takes one level and one scale per vector; {q} has {} \
                     level(s) and {} group(s) for dim {dim} (ternary_layers' host path scores \
                     groups and levels)",
                    q.levels,
                    q.groups(dim)
                )))
            }
            _ => Ok(()),
        }
    }
}

/// Quantized head vectors on the device: `vectors = tokens · heads` vectors, vector
/// `t · heads + h` for token `t`, head `h`; the layout of
/// [`AttentionQuant::quantize_vectors`] (planes at `v · words_per_vector`, scales at
/// `v · scales_per_vector`).
#[derive(Debug, Clone)]
pub struct DeviceHeads<R: Runtime> {
    tokens: usize,
    heads: usize,
    dim: usize,
    quant: QkQuant,
    /// `+1` plane (the sign plane for [`QkQuant::Binary`]).
    pub plus: DeviceArray<R, u32>,
    /// `−1` plane (all zero for [`QkQuant::Binary`]).
    pub minus: DeviceArray<R, u32>,
    /// Scales ([`QkQuant::scales_per_vector`] per vector).
    pub alpha: DeviceArray<R, f32>,
}

impl<R: Runtime> DeviceHeads<R> {
    /// Tokens.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Heads.
    pub fn heads(&self) -> usize {
        self.heads
    }

    /// Values per head vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// How the vectors were quantized.
    pub fn quant(&self) -> QkQuant {
        self.quant
    }
}

/// Quantizes `x` (`tokens × heads × dim` values already on the device) per head vector, one
/// unit per vector; the planes and scales equal the host's ([`cpu::quantize_heads`]) bit for
/// bit.
pub fn launch_quantize_heads<R: Runtime>(
    client: &ComputeClient<R>,
    x: &DeviceArray<R, f32>,
    tokens: usize,
    heads: usize,
    dim: usize,
    quant: QkQuant,
) -> Result<DeviceHeads<R>> {
    quant.check_dim(dim)?;
    let vectors = tokens
        .checked_mul(heads)
        .ok_or_else(|| KernelError::shape("tokens x heads overflows"))?;
    if vectors.checked_mul(dim) != Some(x.len()) {
        return Err(KernelError::shape(format!(
            "head vectors: expected {tokens} x {heads} x {dim} values, got {}",
            x.len()
        )));
    }
    let (wpv, spv) = (quant.words_per_vector(dim), quant.scales_per_vector(dim));
    let plane_words = vectors
        .checked_mul(wpv)
        .ok_or_else(|| KernelError::shape("head plane words overflow"))?;
    let scales = vectors
        .checked_mul(spv)
        .ok_or_else(|| KernelError::shape("head scales overflow"))?;
    check_u32_range("head vector values", x.len())?;
    check_u32_range("head plane words", plane_words)?;
    check_u32_range("head scales", scales)?;
    let plus = DeviceArray::<R, u32>::filled(client, plane_words, 0xDEAD_BEEF);
    let minus = DeviceArray::<R, u32>::filled(client, plane_words, 0xDEAD_BEEF);
    let alpha = DeviceArray::<R, f32>::filled(client, scales, f32::NAN);
    if vectors > 0 {
        let (group, groups, levels, factor, refit) = match quant {
            QkQuant::Ternary(q) => (
                q.group_len(dim),
                q.groups(dim),
                q.levels,
                q.threshold.factor(),
                q.scale == ScaleRule::Refit,
            ),
            QkQuant::Binary => (dim.max(1), 1, 1, 0.0, false),
        };
        let caps = DeviceCaps::of(client);
        let count = check_grid(&caps, vectors.div_ceil(64), 1, 1)?;
        quantize_heads::launch::<R>(
            client,
            count,
            CubeDim::new_1d(64),
            x.arg(),
            plus.arg(),
            minus.arg(),
            alpha.arg(),
            vectors as u32,
            dim as u32,
            words_per_row(dim) as u32,
            group as u32,
            groups as u32,
            levels as u32,
            factor,
            f32::NAN,
            quant == QkQuant::Binary,
            refit,
        );
        flush(client)?;
    }
    Ok(DeviceHeads {
        tokens,
        heads,
        dim,
        quant,
        plus,
        minus,
        alpha,
    })
}

fn check_pair<R: Runtime>(q: &DeviceHeads<R>, k: &DeviceHeads<R>) -> Result<()> {
    if q.heads != k.heads || q.dim != k.dim || q.quant != k.quant {
        return Err(KernelError::shape(format!(
            "Q has {} heads of {} ({}), K has {} heads of {} ({})",
            q.heads, q.dim, q.quant, k.heads, k.dim, k.quant
        )));
    }
    q.quant.check_scoring(q.dim)?;
    if q.tokens > k.tokens {
        return Err(KernelError::shape(format!(
            "{} queries but only {} keys: queries are the last positions of the keys",
            q.tokens, k.tokens
        )));
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn launch_scores<R: Runtime>(
    client: &ComputeClient<R>,
    q: &DeviceHeads<R>,
    k: &DeviceHeads<R>,
    scores: &DeviceArray<R, f32>,
    dots: &DeviceArray<R, i32>,
    scale: f32,
    causal: bool,
    raw: bool,
) -> Result<()> {
    let (nq, nk, heads) = (q.tokens, k.tokens, q.heads);
    if nq == 0 || nk == 0 || heads == 0 {
        return Ok(());
    }
    check_u32_range("scores", heads * nq * nk)?;
    let caps = DeviceCaps::of(client);
    let count = check_grid(&caps, nk.div_ceil(16), nq.div_ceil(16), heads)?;
    qk_scores::launch::<R>(
        client,
        count,
        CubeDim::new_2d(16, 16),
        q.plus.arg(),
        q.minus.arg(),
        q.alpha.arg(),
        k.plus.arg(),
        k.minus.arg(),
        k.alpha.arg(),
        scores.arg(),
        dots.arg(),
        nq as u32,
        nk as u32,
        heads as u32,
        q.dim as u32,
        words_per_row(q.dim) as u32,
        scale,
        f32::NEG_INFINITY,
        q.quant == QkQuant::Binary,
        causal,
        raw,
    );
    flush(client)
}

/// Scaled scores `heads × nq × nk` into `out` (see the [module docs](self)); `scale` is
/// usually `1 / √dim`. Masked entries are `−∞`. Vectors quantized with more than one level or
/// scale group are a [`KernelError::Config`] ([`QkQuant::check_scoring`]).
pub fn launch_qk_scores<R: Runtime>(
    client: &ComputeClient<R>,
    q: &DeviceHeads<R>,
    k: &DeviceHeads<R>,
    scale: f32,
    causal: bool,
    out: &DeviceArray<R, f32>,
) -> Result<()> {
    check_pair(q, k)?;
    if !scale.is_finite() {
        return Err(KernelError::config(format!(
            "score scale {scale} is not finite"
        )));
    }
    let need = q.heads * q.tokens * k.tokens;
    if out.len() != need {
        return Err(KernelError::shape(format!(
            "scores: expected heads x nq x nk = {need} values, got {}",
            out.len()
        )));
    }
    let dummy = DeviceArray::<R, i32>::from_slice(client, &[0]);
    launch_scores(client, q, k, out, &dummy, scale, causal, false)
}

/// The exact integer dots `heads × nq × nk` (no scales, no mask) into `out`.
pub fn launch_qk_dots<R: Runtime>(
    client: &ComputeClient<R>,
    q: &DeviceHeads<R>,
    k: &DeviceHeads<R>,
    out: &DeviceArray<R, i32>,
) -> Result<()> {
    check_pair(q, k)?;
    let need = q.heads * q.tokens * k.tokens;
    if out.len() != need {
        return Err(KernelError::shape(format!(
            "dots: expected heads x nq x nk = {need} values, got {}",
            out.len()
        )));
    }
    let dummy = DeviceArray::<R, f32>::from_slice(client, &[0.0]);
    launch_scores(client, q, k, &dummy, out, 1.0, false, true)
}

/// Host reference of the attention path and agreement metrics.
pub mod cpu {
    use super::QkQuant;
    use crate::error::{KernelError, Result};
    use ternary_core::quant::attention::sum_abs;
    use ternary_core::{reference, words_per_row};

    /// Quantized head vectors on the host, in the device layout ([`super::DeviceHeads`]).
    #[derive(Debug, Clone, PartialEq)]
    pub struct Heads {
        /// Vectors (`tokens · heads`).
        pub vectors: usize,
        /// Values per vector.
        pub dim: usize,
        /// How they were quantized.
        pub quant: QkQuant,
        /// `+1` (or sign) planes, `vectors × quant.words_per_vector(dim)`.
        pub plus: Vec<u32>,
        /// `−1` planes.
        pub minus: Vec<u32>,
        /// Scales, `vectors × quant.scales_per_vector(dim)`.
        pub alpha: Vec<f32>,
    }

    /// Quantizes `vectors` head vectors of `dim` values: ternary with
    /// [`AttentionQuant::quantize_vectors`](ternary_core::quant::AttentionQuant::quantize_vectors)
    /// (the rule the device kernel reproduces bit for bit), binary as [`QkQuant::Binary`]
    /// states.
    pub fn quantize_heads(x: &[f32], vectors: usize, dim: usize, quant: QkQuant) -> Result<Heads> {
        quant.check_dim(dim)?;
        if vectors.checked_mul(dim) != Some(x.len()) {
            return Err(KernelError::shape(format!(
                "head vectors: expected {vectors} x {dim} values, got {}",
                x.len()
            )));
        }
        let wpv = quant.words_per_vector(dim);
        let mut plus = vec![0u32; vectors * wpv];
        let mut minus = vec![0u32; vectors * wpv];
        let mut alpha = vec![f32::NAN; vectors * quant.scales_per_vector(dim)];
        match quant {
            QkQuant::Ternary(q) => q.quantize_vectors(x, dim, &mut plus, &mut minus, &mut alpha)?,
            QkQuant::Binary => {
                for (v, a) in alpha.iter_mut().enumerate() {
                    let xv = &x[v * dim..(v + 1) * dim];
                    let total = sum_abs(xv);
                    if !total.is_finite() {
                        *a = f32::NAN;
                        continue;
                    }
                    for (c, &value) in xv.iter().enumerate() {
                        if value > 0.0 {
                            plus[v * wpv + c / 32] |= 1u32 << (c % 32);
                        }
                    }
                    *a = if dim > 0 { total / dim as f32 } else { 0.0 };
                }
            }
        }
        Ok(Heads {
            vectors,
            dim,
            quant,
            plus,
            minus,
            alpha,
        })
    }

    /// Integer dot of the first-level planes of vector `a` of `qh` and vector `b` of `kh`
    /// with `ternary_core::reference`.
    pub fn dot(qh: &Heads, a: usize, kh: &Heads, b: usize) -> i64 {
        let (wpv, wpd) = (qh.quant.words_per_vector(qh.dim), words_per_row(qh.dim));
        let (ra, rb) = (a * wpv..a * wpv + wpd, b * wpv..b * wpv + wpd);
        match qh.quant {
            QkQuant::Ternary(_) => reference::ternary_dot(
                &qh.plus[ra.clone()],
                &qh.minus[ra],
                &kh.plus[rb.clone()],
                &kh.minus[rb],
            ),
            QkQuant::Binary => reference::binary_dot(&qh.plus[ra], &kh.plus[rb], qh.dim),
        }
    }

    /// Reference scores in `f64` (`heads × nq × nk`, masked entries `−∞`); like the device, one
    /// level and one scale per vector ([`QkQuant::check_scoring`]), and `Q`, `K` quantized alike.
    pub fn scores(
        qh: &Heads,
        kh: &Heads,
        nq: usize,
        nk: usize,
        heads: usize,
        scale: f32,
        causal: bool,
    ) -> Result<Vec<f64>> {
        if qh.quant != kh.quant || qh.dim != kh.dim {
            return Err(KernelError::shape(format!(
                "Q is {} of {}, K is {} of {}",
                qh.quant, qh.dim, kh.quant, kh.dim
            )));
        }
        qh.quant.check_scoring(qh.dim)?;
        if qh.vectors != nq * heads || kh.vectors != nk * heads || nk < nq {
            return Err(KernelError::shape(format!(
                "{} query and {} key vectors for nq = {nq}, nk = {nk}, heads = {heads}",
                qh.vectors, kh.vectors
            )));
        }
        let mut out = vec![0f64; heads * nq * nk];
        for h in 0..heads {
            for i in 0..nq {
                for j in 0..nk {
                    let o = (h * nq + i) * nk + j;
                    if causal && j > i + (nk - nq) {
                        out[o] = f64::NEG_INFINITY;
                        continue;
                    }
                    let (a, b) = (i * heads + h, j * heads + h);
                    // Ternary vectors of `dim = 0` have no scales (and score 0).
                    let (sa, sb) = match (qh.alpha.get(a), kh.alpha.get(b)) {
                        (Some(&x), Some(&y)) if qh.dim > 0 || qh.quant == QkQuant::Binary => (x, y),
                        _ => (0.0, 0.0),
                    };
                    let d = dot(qh, a, kh, b) as f64;
                    out[o] = f64::from(sa) * f64::from(sb) * d * f64::from(scale);
                }
            }
        }
        Ok(out)
    }

    /// Float `QKᵀ · scale` in `f64` (`heads × nq × nk`, masked entries `−∞`).
    #[allow(clippy::too_many_arguments)]
    pub fn float_scores(
        q: &[f32],
        k: &[f32],
        nq: usize,
        nk: usize,
        heads: usize,
        dim: usize,
        scale: f32,
        causal: bool,
    ) -> Vec<f64> {
        let mut out = vec![0f64; heads * nq * nk];
        for h in 0..heads {
            for i in 0..nq {
                for j in 0..nk {
                    let o = (h * nq + i) * nk + j;
                    if causal && j > i + (nk - nq) {
                        out[o] = f64::NEG_INFINITY;
                        continue;
                    }
                    let qa = &q[(i * heads + h) * dim..][..dim];
                    let ka = &k[(j * heads + h) * dim..][..dim];
                    let d: f64 = qa
                        .iter()
                        .zip(ka)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum();
                    out[o] = d * f64::from(scale);
                }
            }
        }
        out
    }

    /// Agreement of approximate scores with exact ones, averaged over (head, query) rows.
    #[derive(Debug, Clone, Copy, PartialEq)]
    pub struct Agreement {
        /// Mean Pearson correlation of the unmasked scores of a row.
        pub correlation: f64,
        /// Mean `|top-k(approx) ∩ top-k(exact)| / k`.
        pub top_k_overlap: f64,
        /// Fraction of rows whose arg-max agrees.
        pub top1: f64,
        /// Mean total-variation distance between the two softmax distributions.
        pub softmax_tv: f64,
    }

    /// Compares `approx` with `exact` row by row (`rows` rows of `len` scores; `−∞` entries
    /// are masked in both and skipped). Rows with fewer than 2 unmasked entries are skipped.
    pub fn agreement(
        approx: &[f64],
        exact: &[f64],
        rows: usize,
        len: usize,
        k: usize,
    ) -> Agreement {
        let (mut corr, mut overlap, mut top1, mut tv, mut counted) =
            (0f64, 0f64, 0f64, 0f64, 0usize);
        for r in 0..rows {
            let a = &approx[r * len..(r + 1) * len];
            let e = &exact[r * len..(r + 1) * len];
            let idx: Vec<usize> = (0..len).filter(|&i| e[i].is_finite()).collect();
            if idx.len() < 2 {
                continue;
            }
            counted += 1;
            let m = idx.len() as f64;
            let (ma, me) = (
                idx.iter().map(|&i| a[i]).sum::<f64>() / m,
                idx.iter().map(|&i| e[i]).sum::<f64>() / m,
            );
            let (mut sab, mut saa, mut see) = (0f64, 0f64, 0f64);
            for &i in &idx {
                let (da, de) = (a[i] - ma, e[i] - me);
                sab += da * de;
                saa += da * da;
                see += de * de;
            }
            corr += if saa > 0.0 && see > 0.0 {
                sab / (saa * see).sqrt()
            } else {
                0.0
            };
            let kk = k.min(idx.len());
            let top = |v: &[f64]| {
                let mut order = idx.clone();
                order.sort_by(|&x, &y| v[y].total_cmp(&v[x]).then(x.cmp(&y)));
                order.truncate(kk);
                order
            };
            let (ta, te) = (top(a), top(e));
            overlap += ta.iter().filter(|i| te.contains(i)).count() as f64 / kk as f64;
            top1 += f64::from(u8::from(ta[0] == te[0]));
            let softmax = |v: &[f64]| {
                let mx = idx.iter().map(|&i| v[i]).fold(f64::NEG_INFINITY, f64::max);
                let ex: Vec<f64> = idx.iter().map(|&i| (v[i] - mx).exp()).collect();
                let s: f64 = ex.iter().sum();
                ex.into_iter().map(|x| x / s).collect::<Vec<_>>()
            };
            let (pa, pe) = (softmax(a), softmax(e));
            tv += 0.5 * pa.iter().zip(&pe).map(|(x, y)| (x - y).abs()).sum::<f64>();
        }
        let c = counted.max(1) as f64;
        Agreement {
            correlation: corr / c,
            top_k_overlap: overlap / c,
            top1: top1 / c,
            softmax_tv: tv / c,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::QkQuant;
    use super::cpu;
    use ternary_core::quant::AttentionQuant;
    use ternary_core::rng::SplitMix64;

    #[test]
    fn agreement_of_identical_scores_is_perfect_and_of_reversed_is_not() {
        let mut rng = SplitMix64::new(3);
        let exact: Vec<f64> = (0..40).map(|_| f64::from(rng.normal())).collect();
        let a = cpu::agreement(&exact, &exact, 4, 10, 3);
        assert!((a.correlation - 1.0).abs() < 1e-12);
        assert_eq!((a.top_k_overlap, a.top1), (1.0, 1.0));
        assert!(a.softmax_tv < 1e-12);
        let neg: Vec<f64> = exact.iter().map(|v| -v).collect();
        let b = cpu::agreement(&neg, &exact, 4, 10, 3);
        assert!((b.correlation + 1.0).abs() < 1e-12);
        assert_eq!(b.top1, 0.0);
    }

    #[test]
    fn host_reference_is_the_core_rule() {
        // |x| = 4, 1, 1, 0 over dim 4: S = 6, keep |x| * 4 > 0.7 * 6, i.e. only the 4.
        let h = cpu::quantize_heads(&[-4.0, 1.0, -1.0, 0.0], 1, 4, QkQuant::TWN).unwrap();
        assert_eq!((h.plus[0], h.minus[0]), (0, 1));
        assert_eq!(h.alpha, vec![4.0]);
        let b = cpu::quantize_heads(&[-4.0, 1.0, -1.0, 0.0], 1, 4, QkQuant::Binary).unwrap();
        assert_eq!(b.plus[0], 0b0010);
        assert_eq!(b.alpha, vec![1.5]);
        // Dot with itself: ternary 1, binary 4.
        assert_eq!(cpu::dot(&h, 0, &h, 0), 1);
        assert_eq!(cpu::dot(&b, 0, &b, 0), 4);
        // Grouped / two-level vectors quantize, but do not score.
        let q = AttentionQuant {
            group: Some(2),
            levels: 2,
            ..AttentionQuant::abs_mean()
        };
        let g = cpu::quantize_heads(&[3.0, 1.0, 0.0, 0.0], 1, 4, QkQuant::Ternary(q)).unwrap();
        assert_eq!(g.alpha, vec![2.0, 0.0, 1.0, 0.0]);
        assert!(cpu::scores(&g, &g, 1, 1, 1, 1.0, false).is_err());
        assert!(cpu::quantize_heads(&[1.0; 5], 2, 2, QkQuant::TWN).is_err());
    }
}
