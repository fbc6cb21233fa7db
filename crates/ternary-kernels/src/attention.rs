//! Popcount attention scoring.
//!
//! Q (`nq` tokens) and K (`nk` tokens) are `tokens × heads × dim` row-major `f32`; each head
//! vector is quantized into planes of `wpd = words_per_row(dim)` words plus one scale `α`
//! ([`QkQuant`]), then `score[h, i, j] = α_q · α_k · dot(q_{i,h}, k_{j,h}) · scale` with the
//! integer dot computed by popcounts. With `causal`, key `j` is masked for query `i` when
//! `j > i + (nk − nq)` (queries are the last `nq` positions), and masked scores are `−∞`, so
//! the scores go straight into a float softmax. Layout of scores: `heads × nq × nk`.
//!
//! [`cpu`] holds the host reference (bit-identical quantization, `ternary_core::reference`
//! dots) and the agreement metrics against float `QKᵀ` reported in `docs/gpu.md`.

use cubecl::prelude::*;
use ternary_core::words_per_row;

use crate::buffer::DeviceArray;
use crate::device::DeviceCaps;
use crate::error::{KernelError, Result};
use crate::gemm::{check_grid, flush};
use crate::kernels::{qk_scores, quantize_heads};
use crate::matrix::check_u32_range;

/// How head vectors become bit planes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum QkQuant {
    /// `t_i = sign(x_i)` where `|x_i| > 0.7 · mean|x|` else `0` (TWN threshold);
    /// `α = mean of the kept |x_i|`.
    #[default]
    Ternary,
    /// `b_i = sign(x_i)` (`x_i ≤ 0` counts as `−1`); `α = mean|x|`.
    Binary,
}

/// Quantized head vectors on the device: `vectors = tokens · heads` vectors of `wpd` words per
/// plane, vector `t · heads + h` for token `t`, head `h`.
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
    /// One scale per vector.
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
}

/// Quantizes `x` (`tokens × heads × dim` values already on the device) per head vector.
pub fn launch_quantize_heads<R: Runtime>(
    client: &ComputeClient<R>,
    x: &DeviceArray<R, f32>,
    tokens: usize,
    heads: usize,
    dim: usize,
    quant: QkQuant,
) -> Result<DeviceHeads<R>> {
    let vectors = tokens
        .checked_mul(heads)
        .ok_or_else(|| KernelError::shape("tokens x heads overflows"))?;
    if vectors.checked_mul(dim) != Some(x.len()) {
        return Err(KernelError::shape(format!(
            "head vectors: expected {tokens} x {heads} x {dim} values, got {}",
            x.len()
        )));
    }
    let wpd = words_per_row(dim);
    check_u32_range("head vector values", x.len())?;
    check_u32_range("head plane words", vectors * wpd)?;
    let plus = DeviceArray::<R, u32>::filled(client, vectors * wpd, 0xDEAD_BEEF);
    let minus = DeviceArray::<R, u32>::filled(client, vectors * wpd, 0xDEAD_BEEF);
    let alpha = DeviceArray::<R, f32>::filled(client, vectors, f32::NAN);
    if vectors > 0 {
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
            wpd as u32,
            quant == QkQuant::Binary,
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
            "Q has {} heads of {} ({:?}), K has {} heads of {} ({:?})",
            q.heads, q.dim, q.quant, k.heads, k.dim, k.quant
        )));
    }
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
/// usually `1 / √dim`. Masked entries are `−∞`.
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
    use ternary_core::{reference, words_per_row};

    /// Quantized head vectors on the host: `(plus, minus, alpha)` in the device layout.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Heads {
        /// Vectors (`tokens · heads`).
        pub vectors: usize,
        /// Values per vector.
        pub dim: usize,
        /// `+1` (or sign) plane, `vectors × words_per_row(dim)`.
        pub plus: Vec<u32>,
        /// `−1` plane.
        pub minus: Vec<u32>,
        /// Scales.
        pub alpha: Vec<f32>,
    }

    /// Quantizes `vectors` head vectors of `dim` values with the device's exact `f32` rules.
    pub fn quantize_heads(x: &[f32], vectors: usize, dim: usize, quant: QkQuant) -> Heads {
        let wpd = words_per_row(dim);
        let mut plus = vec![0u32; vectors * wpd];
        let mut minus = vec![0u32; vectors * wpd];
        let mut alpha = vec![0f32; vectors];
        for v in 0..vectors {
            let xv = &x[v * dim..(v + 1) * dim];
            let mut total = 0f32;
            for &a in xv {
                total += a.abs();
            }
            let thr = 0.7f32 * total;
            let (mut kept, mut nnz) = (0f32, 0u32);
            for (c, &a) in xv.iter().enumerate() {
                let word = v * wpd + c / 32;
                let bit = 1u32 << (c % 32);
                match quant {
                    QkQuant::Binary => {
                        if a > 0.0 {
                            plus[word] |= bit;
                        }
                    }
                    QkQuant::Ternary => {
                        if a.abs() * dim as f32 > thr {
                            if a > 0.0 {
                                plus[word] |= bit;
                            } else {
                                minus[word] |= bit;
                            }
                            kept += a.abs();
                            nnz += 1;
                        }
                    }
                }
            }
            alpha[v] = match quant {
                QkQuant::Binary if dim > 0 => total / dim as f32,
                QkQuant::Ternary if nnz > 0 => kept / nnz as f32,
                _ => 0.0,
            };
        }
        Heads {
            vectors,
            dim,
            plus,
            minus,
            alpha,
        }
    }

    /// Integer dot of vectors `a` of `qh` and `b` of `kh` with `ternary_core::reference`.
    pub fn dot(qh: &Heads, a: usize, kh: &Heads, b: usize, quant: QkQuant) -> i64 {
        let wpd = words_per_row(qh.dim);
        let (ra, rb) = (a * wpd..(a + 1) * wpd, b * wpd..(b + 1) * wpd);
        match quant {
            QkQuant::Ternary => reference::ternary_dot(
                &qh.plus[ra.clone()],
                &qh.minus[ra],
                &kh.plus[rb.clone()],
                &kh.minus[rb],
            ),
            QkQuant::Binary => reference::binary_dot(&qh.plus[ra], &kh.plus[rb], qh.dim),
        }
    }

    /// Reference scores in `f64` (`heads × nq × nk`, masked entries `−∞`).
    #[allow(clippy::too_many_arguments)]
    pub fn scores(
        qh: &Heads,
        kh: &Heads,
        nq: usize,
        nk: usize,
        heads: usize,
        quant: QkQuant,
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
                    let (a, b) = (i * heads + h, j * heads + h);
                    let d = dot(qh, a, kh, b, quant) as f64;
                    out[o] = f64::from(qh.alpha[a]) * f64::from(kh.alpha[b]) * d * f64::from(scale);
                }
            }
        }
        out
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
    use crate::rng::SplitMix64;

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
    fn ternary_quantization_follows_the_threshold_rule() {
        // |x| = 4, 1, 1, 0 over dim 4: S = 6, keep |x| * 4 > 4.2, i.e. only the 4.
        let h = cpu::quantize_heads(&[-4.0, 1.0, -1.0, 0.0], 1, 4, QkQuant::Ternary);
        assert_eq!((h.plus[0], h.minus[0]), (0, 1));
        assert_eq!(h.alpha, vec![4.0]);
        let b = cpu::quantize_heads(&[-4.0, 1.0, -1.0, 0.0], 1, 4, QkQuant::Binary);
        assert_eq!(b.plus[0], 0b0010);
        assert_eq!(b.alpha, vec![1.5]);
        // Dot with itself: ternary 1, binary 4.
        assert_eq!(cpu::dot(&h, 0, &h, 0, QkQuant::Ternary), 1);
        assert_eq!(cpu::dot(&b, 0, &b, 0, QkQuant::Binary), 4);
    }
}
