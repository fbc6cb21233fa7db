//! One projection (linear layer) as the runtime holds it, the activations each kind
//! multiplies, and the row-range product a worker computes.
//!
//! Kinds, with `x` the input token and `y[r]` output row `r`:
//! - [`Kernel::TernaryF32`]: `y = Q·(x ⊙ d) + b` with `f32` activations (`gemm_f32`);
//! - [`Kernel::TernaryI8`]: `y = s_x · Q·q + b`, `x ⊙ d ≈ s_x · q` per token
//!   (`QuantizedActivations`, `gemm_i8`); a token holding NaN/Inf gives NaN outputs.
//!   With [`Proj::two_codes`] (`TernaryActivations::Int8x2`) each token is two int8 codes
//!   (`QuantizedActivations::quantize_two`: `x ⊙ d ≈ s₁·q₁ + s₂·q₂`), multiplied as `2n`
//!   tokens by the same kernels and summed: `y_j = P(q₁) + P(q₂)`;
//! - [`Kernel::TwoPlaneF32`], [`Kernel::TwoPlaneI8`]: two trit-planes, `Q = M₁ + M₂`
//!   (`TwoPlaneMatrix`): `y = M₁·x' + M₂·x' + b`, each plane by the kernels above on the same
//!   prepared activations `x'` (the same int8 codes), summed in `f32` as `TernaryLinear` does;
//! - [`Kernel::BitNet`]: `y = (Σ_g s_g Σ q·t) / (k·D)` with BitNet's own activation rule
//!   (`k = 127 / max(max|x|, 1e-5)`, `q = clamp(round_half_even(x·k), −128, 127)`);
//! - [`Kernel::F32`], [`Kernel::F16`]: `y[r] = Σ_c W[r, c]·x[c]` (`dense_rows_with`:
//!   register-tiled FMA; `f16` weights widened exactly as they are loaded);
//! - [`Kernel::Quant`]: GGUF Q4_0/Q4_1/Q8_0 block dots on `f32` activations, `Q6_K` on int8
//!   activations quantized per 256 values (`QuantLinear`);
//! - [`Kernel::I8Rows`]: `y[r] = s_r · s_x · Σ_c q_w[r, c]·q_x[c]` (the int8 output head).
//!
//! Each is the arithmetic of the Burn layer it came from, in the same order where the kernels
//! allow it (the ternary and BitNet products are bit-identical at the same SIMD level).

use std::ops::Range;
use std::sync::Arc;

use ternary_core::activations::residual_row;
use ternary_core::kernels::{self, DotI8, Level, PackedTernary};
use ternary_core::{QuantizedActivations, TernaryMatrix, TwoPlaneMatrix};
use ternary_models::bitnet::BITNET_EPS;
use ternary_models::quant_linear::{QuantLinear, QuantScratch};

use crate::error::Result;
use crate::options::FloatWeights;

/// The product a projection computes (see the [module docs](self)).
#[derive(Debug, Clone)]
pub(crate) enum Kernel {
    TernaryF32(Arc<TernaryMatrix>),
    /// Shared planes, or repacked for the level ([`Model::repack`](crate::model::Model::repack)).
    TernaryI8(PackedTernary),
    TwoPlaneF32(Arc<TwoPlaneMatrix>),
    /// The high and low planes, shared or repacked as [`Kernel::TernaryI8`]'s.
    TwoPlaneI8([PackedTernary; 2]),
    BitNet {
        m: PackedTernary,
        divisor: f32,
    },
    F32(Arc<Vec<f32>>),
    F16(Arc<Vec<half::f16>>),
    Quant(QuantLinear),
    I8Rows {
        q: Vec<i8>,
        scales: Vec<f32>,
    },
}

/// The activations a kernel multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum InputKind {
    /// `x ⊙ d` in `f32`.
    F32,
    /// Per-token int8 (`QuantizedActivations::quantize` of `x ⊙ d`).
    I8,
    /// Two int8 codes per token (`QuantizedActivations::quantize_two` of `x ⊙ d`).
    I8x2,
    /// BitNet's per-token int8 codes and `k`.
    BitNet,
}

/// A linear layer `[rows, cols]` with its optional bias `b` and input scale `d`.
#[derive(Debug, Clone)]
pub(crate) struct Proj {
    pub kernel: Kernel,
    pub rows: usize,
    pub cols: usize,
    pub bias: Option<Arc<Vec<f32>>>,
    pub input_scale: Option<Arc<Vec<f32>>>,
    /// Int8 kernels on two codes per token ([`InputKind::I8x2`]).
    pub two_codes: bool,
}

impl Proj {
    pub fn input_kind(&self) -> InputKind {
        match self.kernel {
            Kernel::TernaryI8(_) | Kernel::TwoPlaneI8(..) if self.two_codes => InputKind::I8x2,
            Kernel::TernaryI8(_) | Kernel::TwoPlaneI8(..) | Kernel::I8Rows { .. } => InputKind::I8,
            Kernel::BitNet { .. } => InputKind::BitNet,
            _ => InputKind::F32,
        }
    }

    /// Bytes of weights one token's product reads.
    pub fn weight_bytes(&self) -> u64 {
        let b = match &self.kernel {
            Kernel::TernaryF32(m) => {
                4 * (m.plus().len() + m.minus().len() + m.scales().values().len())
            }
            Kernel::TernaryI8(m) | Kernel::BitNet { m, .. } => m.storage_bytes(),
            Kernel::TwoPlaneF32(m) => m.storage_bytes(),
            Kernel::TwoPlaneI8(m) => m.iter().map(PackedTernary::storage_bytes).sum(),
            Kernel::F32(w) => 4 * w.len(),
            Kernel::F16(w) => 2 * w.len(),
            Kernel::Quant(q) => {
                let n = self.rows * self.cols;
                q.ggml_type().byte_size(n).unwrap_or(4 * n)
            }
            Kernel::I8Rows { q, scales } => q.len() + 4 * scales.len(),
        };
        let v = |o: &Option<Arc<Vec<f32>>>| o.as_ref().map_or(0, |v| 4 * v.len());
        (b + v(&self.bias) + v(&self.input_scale)) as u64
    }

    /// Whether `self` and `other` multiply the same prepared activations.
    pub fn shares_input_with(&self, other: &Proj) -> bool {
        let same_scale = match (&self.input_scale, &other.input_scale) {
            (None, None) => true,
            (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
            _ => false,
        };
        self.cols == other.cols && self.input_kind() == other.input_kind() && same_scale
    }
}

/// One thread's activations prepared for a projection: `x ⊙ d` (when `d` is set), the int8
/// codes, and per token whether it was non-finite (int8) or BitNet's `k`.
#[derive(Debug)]
pub(crate) struct Prepared {
    pub kind: InputKind,
    pub scaled: bool,
    pub xs: Vec<f32>,
    pub qa: QuantizedActivations,
    /// Int8: tokens holding NaN/Inf. BitNet: unused.
    pub bad: Vec<bool>,
    /// Two codes: the rounding residuals of the first codes.
    resid: Vec<f32>,
    /// BitNet: `k_j` per token.
    pub k: Vec<f32>,
}

impl Prepared {
    pub fn new() -> Self {
        Self {
            kind: InputKind::F32,
            scaled: false,
            xs: Vec::new(),
            qa: QuantizedActivations::empty(),
            bad: Vec::new(),
            resid: Vec::new(),
            k: Vec::new(),
        }
    }

    /// Prepares `x: [n, proj.cols]` for `proj` (int8 codes by `k`).
    pub fn prepare(&mut self, k: DotI8, proj: &Proj, x: &[f32], n: usize) -> Result<()> {
        let cols = proj.cols;
        self.kind = proj.input_kind();
        self.scaled = proj.input_scale.is_some();
        let src: &[f32] = match &proj.input_scale {
            Some(d) => {
                self.xs.clear();
                self.xs.extend_from_slice(x);
                for row in self.xs.chunks_exact_mut(cols.max(1)) {
                    for (v, s) in row.iter_mut().zip(d.iter()) {
                        *v *= s;
                    }
                }
                &self.xs
            }
            None => x,
        };
        match self.kind {
            InputKind::F32 => {}
            InputKind::I8 => {
                self.bad.clear();
                self.bad.resize(n, false);
                let bad = &mut self.bad;
                // `QuantizedActivations::quantize`'s rule, with non-finite tokens zeroed (as
                // `TernaryLinear`'s int8 path does before quantizing): `quantize_row` refuses
                // such a row before writing a code, which marks the token.
                self.qa.fill_codes(n, cols, |j, q| {
                    k.quantize_row(&src[j * cols..(j + 1) * cols], q)
                        .unwrap_or_else(|_| {
                            bad[j] = true;
                            0.0
                        })
                })?;
            }
            InputKind::I8x2 => {
                // `QuantizedActivations::quantize_two`'s codes (the same rounding and residual),
                // tokens n + j the residual codes of token j; a non-finite token is zeroed as
                // above (zero residual).
                self.bad.clear();
                self.bad.resize(n, false);
                self.resid.clear();
                self.resid.resize(n * cols, 0.0);
                let (bad, resid) = (&mut self.bad, &mut self.resid);
                self.qa.fill_codes(2 * n, cols, |j, q| {
                    if j < n {
                        let row = &src[j * cols..(j + 1) * cols];
                        match k.quantize_row(row, q) {
                            Ok(s) => {
                                residual_row(row, s, &q[..cols], &mut resid[j * cols..][..cols]);
                                s
                            }
                            Err(_) => {
                                bad[j] = true;
                                0.0
                            }
                        }
                    } else {
                        // Finite: first codes of finite tokens, or zeros.
                        k.quantize_row(&resid[(j - n) * cols..][..cols], q)
                            .unwrap_or(0.0)
                    }
                })?;
            }
            InputKind::BitNet => {
                self.k.clear();
                self.k.resize(n, 0.0);
                let k = &mut self.k;
                self.qa.fill_codes(n, cols, |j, q| {
                    k[j] = bitnet_row(&src[j * cols..(j + 1) * cols], q);
                    1.0
                })?;
            }
        }
        Ok(())
    }

    /// The `f32` activations for `proj` (`x ⊙ d`, or `x` itself).
    pub fn f32_input<'a>(&'a self, x: &'a [f32]) -> &'a [f32] {
        if self.scaled { &self.xs } else { x }
    }
}

/// BitNet's activation quantization of one row (`ternary_models::bitnet::quantize_activations`):
/// returns `k` (NaN, with zero codes, for a non-finite row).
fn bitnet_row(row: &[f32], q: &mut [i8]) -> f32 {
    if row.iter().any(|v| !v.is_finite()) {
        return f32::NAN;
    }
    let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
    let k = 127.0 / amax.max(BITNET_EPS);
    for (c, &v) in q.iter_mut().zip(row) {
        *c = (v * k).round_ties_even().clamp(-127.0, 127.0) as i8;
    }
    k
}

/// The kernels of one SIMD level, resolved once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Kernels {
    pub level: Level,
    pub i8: DotI8,
}

impl Kernels {
    pub fn new(level: Level) -> Result<Self> {
        Ok(Self {
            level,
            i8: DotI8::new(level)?,
        })
    }
}

/// Per-thread scratch of the products.
#[derive(Debug, Default)]
pub(crate) struct Scratch {
    pub quant: QuantScratch,
    /// The second plane's product (two-plane kernels).
    pub plane2: Vec<f32>,
    /// Both codes' products, `2n` tokens per row (two-code activations).
    pub codes2: Vec<f32>,
}

/// `out[(r − rows.start) · n + j] = y[j, r]` for `r ∈ rows` (row-major by row), `x: [n, cols]`
/// the layer's input as given (before `d`), `p` its preparation.
#[allow(clippy::too_many_arguments)]
pub(crate) fn product_rows(
    k: &Kernels,
    proj: &Proj,
    p: &Prepared,
    x: &[f32],
    n: usize,
    rows: Range<usize>,
    out: &mut [f32],
    scratch: &mut Scratch,
) -> Result<()> {
    if rows.is_empty() || n == 0 {
        return Ok(());
    }
    let cols = proj.cols;
    match &proj.kernel {
        Kernel::TernaryF32(m) => {
            kernels::gemm_f32_rows_with(k.level, m, p.f32_input(x), n, rows.clone(), out)?
        }
        Kernel::TernaryI8(m) => int8_rows(k, &[m], p, n, rows.clone(), out, scratch)?,
        Kernel::TwoPlaneF32(m) => {
            let xs = p.f32_input(x);
            kernels::gemm_f32_rows_with(k.level, m.high(), xs, n, rows.clone(), out)?;
            scratch.plane2.clear();
            scratch.plane2.resize(out.len(), 0.0);
            kernels::gemm_f32_rows_with(
                k.level,
                m.low(),
                xs,
                n,
                rows.clone(),
                &mut scratch.plane2,
            )?;
            for (v, w) in out.iter_mut().zip(&scratch.plane2) {
                *v += w;
            }
        }
        Kernel::TwoPlaneI8([high, low]) => {
            int8_rows(k, &[high, low], p, n, rows.clone(), out, scratch)?
        }
        Kernel::BitNet { m, divisor } => {
            kernels::gemm_i8_packed_rows_with(k.level, m, &p.qa, rows.clone(), out)?;
            for o in out.chunks_exact_mut(n) {
                for (v, &kj) in o.iter_mut().zip(&p.k) {
                    *v /= kj * divisor;
                }
            }
        }
        Kernel::F32(w) => {
            kernels::dense_rows_with(k.level, w, cols, p.f32_input(x), n, rows.clone(), out)?
        }
        Kernel::F16(w) => {
            kernels::dense_rows_with(k.level, w, cols, p.f32_input(x), n, rows.clone(), out)?
        }
        Kernel::Quant(q) => {
            q.forward_rows_range(p.f32_input(x), n, rows.clone(), &mut scratch.quant, out);
        }
        Kernel::I8Rows { q, scales } => {
            let pc = p.qa.padded_cols();
            for (r, o) in rows.clone().zip(out.chunks_exact_mut(n)) {
                let wr = &q[r * cols..(r + 1) * cols];
                for (j, v) in o.iter_mut().enumerate() {
                    let xr = &p.qa.data()[j * pc..j * pc + cols];
                    *v = scales[r] * p.qa.scales()[j] * k.i8.dot(wr, xr) as f32;
                }
                for (j, _) in p.bad.iter().enumerate().filter(|b| *b.1) {
                    o[j] = f32::NAN;
                }
            }
        }
    }
    if let Some(b) = &proj.bias {
        for (r, o) in rows.zip(out.chunks_exact_mut(n)) {
            for v in o {
                *v += b[r];
            }
        }
    }
    Ok(())
}

/// The int8 product of `planes` (summed in order, as `TwoPlaneMatrix::gemm_i8`) over `rows`,
/// `out[(r − rows.start) · n + j]`: on `p`'s `n` codes, or on its `2n` two-code tokens with
/// tokens `j` and `n + j` summed (as `TernaryLinear`'s `CpuInt8x2`); NaN for non-finite tokens.
fn int8_rows(
    k: &Kernels,
    planes: &[&PackedTernary],
    p: &Prepared,
    n: usize,
    rows: Range<usize>,
    out: &mut [f32],
    scratch: &mut Scratch,
) -> Result<()> {
    let codes = p.qa.n();
    let two = codes != n;
    let Scratch { plane2, codes2, .. } = scratch;
    let dst: &mut [f32] = if two {
        codes2.clear();
        codes2.resize(rows.len() * codes, 0.0);
        codes2
    } else {
        out
    };
    for (i, m) in planes.iter().enumerate() {
        if i == 0 {
            kernels::gemm_i8_packed_rows_with(k.level, m, &p.qa, rows.clone(), dst)?;
        } else {
            plane2.clear();
            plane2.resize(dst.len(), 0.0);
            kernels::gemm_i8_packed_rows_with(k.level, m, &p.qa, rows.clone(), plane2)?;
            for (v, w) in dst.iter_mut().zip(plane2.iter()) {
                *v += w;
            }
        }
    }
    if two {
        for (o, c) in out.chunks_exact_mut(n).zip(codes2.chunks_exact(codes)) {
            let (first, second) = c.split_at(n);
            for ((v, a), b) in o.iter_mut().zip(first).zip(second) {
                *v = a + b;
            }
        }
    }
    for (j, _) in p.bad.iter().enumerate().filter(|b| *b.1) {
        for o in out.chunks_exact_mut(n) {
            o[j] = f32::NAN;
        }
    }
    Ok(())
}

/// `w` as `f16` under `mode`: `Some` when `mode` is `Auto` and every value is an `f16` value
/// (exact), or `F16` and every finite value stays finite in `f16` (|v| ≤ 65504 after
/// rounding: a layer that would overflow to infinity keeps `f32`); `None` keeps `f32`.
pub(crate) fn to_f16(w: &[f32], mode: FloatWeights) -> Option<Vec<half::f16>> {
    let exact = |v: f32| half::f16::from_f32(v).to_f32().to_bits() == v.to_bits();
    let fits = |v: f32| !v.is_finite() || half::f16::from_f32(v).is_finite();
    let keep = match mode {
        FloatWeights::F32 => false,
        FloatWeights::Auto => w.iter().all(|&v| exact(v)),
        FloatWeights::F16 => w.iter().all(|&v| fits(v)),
    };
    keep.then(|| w.iter().map(|&v| half::f16::from_f32(v)).collect())
}

/// Row-quantizes `w: [rows, cols]` to int8: `s_r = max_c |w[r, c]| / 127`, `q = round(w / s_r)`
/// (ties to even), `s_r = 0` and `q = 0` for a zero row.
pub(crate) fn quantize_rows_i8(
    k: DotI8,
    w: &[f32],
    rows: usize,
    cols: usize,
) -> Result<(Vec<i8>, Vec<f32>)> {
    let mut q = vec![0i8; rows * cols];
    let mut s = vec![0f32; rows];
    for (r, row) in w.chunks_exact(cols.max(1)).take(rows).enumerate() {
        s[r] = k.quantize_row(row, &mut q[r * cols..(r + 1) * cols])?;
    }
    Ok((q, s))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int8_tokens_should_match_the_reference_and_a_non_finite_token_give_nan() {
        // Three tokens, the middle one holding a NaN (and an infinity): the finite tokens'
        // outputs equal the reference (`QuantizedActivations::quantize` of those tokens, then
        // `reference::gemm_i8`) bit for bit, the bad token's outputs are NaN, at every level.
        let (mut rng, seed) = ternary_testkit::seeded();
        let (rows, cols, n) = (37, 100, 3);
        let m = Arc::new(ternary_testkit::random_matrix(
            &mut rng,
            rows,
            cols,
            ternary_core::ScaleLayout::PerGroup { group_size: 32 },
        ));
        let mut x = ternary_testkit::random_f32(&mut rng, n * cols, -3.0, 3.0);
        x[cols + 5] = f32::NAN;
        x[cols + 7] = f32::INFINITY;
        let proj = Proj {
            kernel: Kernel::TernaryI8(PackedTernary::shared(Arc::clone(&m))),
            rows,
            cols,
            bias: None,
            input_scale: None,
            two_codes: false,
        };
        let mut good = x[..cols].to_vec();
        good.extend_from_slice(&x[2 * cols..]);
        let qa = QuantizedActivations::quantize(&good, 2, cols).unwrap();
        let want = ternary_core::reference::gemm_i8(&m, &qa).unwrap(); // [2, rows]
        for level in Level::available() {
            let k = Kernels::new(level).unwrap();
            let mut p = Prepared::new();
            p.prepare(k.i8, &proj, &x, n).unwrap();
            assert_eq!(p.bad, [false, true, false], "{level} seed {seed}");
            let mut out = vec![0f32; rows * n];
            product_rows(
                &k,
                &proj,
                &p,
                &x,
                n,
                0..rows,
                &mut out,
                &mut Scratch::default(),
            )
            .unwrap();
            for r in 0..rows {
                let got = &out[r * n..(r + 1) * n];
                assert!(got[1].is_nan(), "{level} row {r} seed {seed}");
                for (jj, j) in [(0, 0), (1, 2)] {
                    assert_eq!(
                        got[j].to_bits(),
                        want[jj * rows + r].to_bits(),
                        "{level} row {r} token {j} seed {seed}"
                    );
                }
            }
        }
    }

    #[test]
    fn f16_conversion_follows_the_mode_and_never_overflows() {
        let exact = [0.5f32, -2.0, 65504.0, 0.0];
        let inexact = [0.1f32, 1.0];
        let huge = [1.0f32, 70000.0];
        assert!(to_f16(&exact, FloatWeights::F32).is_none());
        let h = to_f16(&exact, FloatWeights::Auto).expect("exact values go to f16");
        assert!(h.iter().zip(exact).all(|(a, b)| a.to_f32() == b));
        assert!(to_f16(&inexact, FloatWeights::Auto).is_none());
        let r = to_f16(&inexact, FloatWeights::F16).expect("forced f16 rounds");
        assert_eq!(r[0], half::f16::from_f32(0.1));
        // 70000 rounds to infinity in f16: the layer keeps f32, under every mode.
        assert!(to_f16(&huge, FloatWeights::F16).is_none());
        assert!(to_f16(&huge, FloatWeights::Auto).is_none());
        assert!(to_f16(&[], FloatWeights::Auto).is_some_and(|v| v.is_empty()));
    }
}
