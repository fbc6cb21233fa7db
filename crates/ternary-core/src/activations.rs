//! Per-token int8 quantization of activations for the int8 GEMV/GEMM path.
//!
//! For token `j` with values `x[j, ·]`: `a_j = max_c |x[j, c]|`, `s_j = a_j / 127`,
//! `q[j, c] = round(x[j, c] / s_j)` (ties to even, as IEEE-754's default rounding) in
//! `[-127, 127]`; `s_j = 0` and `q = 0` for an all-zero token. `-128` never occurs, so `-q` is
//! always representable.

use crate::error::{Result, TernaryError, check_finite};
use crate::kernels::aligned::Aligned;
use crate::matrix::ROW_ALIGN;

/// Int8 activations: `n` tokens of `cols` values, each row zero-padded to
/// `padded_cols = 64 · ⌈cols / 64⌉` bytes so kernels may read whole 64-byte chunks; every row
/// starts on a cache line.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedActivations {
    n: usize,
    cols: usize,
    padded_cols: usize,
    data: Aligned<i8>,
    scales: Vec<f32>,
}

impl QuantizedActivations {
    /// Quantizes `n × cols` row-major activations (`x.len() == n · cols`). NaN/Inf is an error.
    pub fn quantize(x: &[f32], n: usize, cols: usize) -> Result<Self> {
        let mut a = Self::empty();
        a.quantize_into(x, n, cols)?;
        Ok(a)
    }

    /// No tokens; a buffer for [`quantize_into`](Self::quantize_into) and
    /// [`fill_codes`](Self::fill_codes).
    pub fn empty() -> Self {
        Self {
            n: 0,
            cols: 0,
            padded_cols: 0,
            data: Aligned::empty(),
            scales: Vec::new(),
        }
    }

    /// [`quantize`](Self::quantize) into `self`, reusing its buffers (no allocation once they
    /// are large enough). On error `self` holds no tokens.
    pub fn quantize_into(&mut self, x: &[f32], n: usize, cols: usize) -> Result<()> {
        self.reset(0, 0);
        if x.len() != n * cols {
            return Err(TernaryError::shape(format!(
                "activations: expected {n}x{cols} = {} values, got {}",
                n * cols,
                x.len()
            )));
        }
        check_finite("activations", x)?;
        self.reset(n, cols);
        let padded_cols = self.padded_cols;
        for j in 0..n {
            let row = &x[j * cols..(j + 1) * cols];
            self.scales[j] = crate::kernels::scalar::quantize_row_i8(
                row,
                &mut self.data.as_mut_slice()[j * padded_cols..j * padded_cols + cols],
            );
        }
        Ok(())
    }

    /// Two int8 codes per token, about 16-bit precision through the int8 kernels: tokens
    /// `0..n` of the result hold `q₁ = quantize(x_j)` with `s₁` (as [`quantize`](Self::quantize)),
    /// tokens `n..2n` the codes `q₂` of the rounding residual `r_j = x_j − s₁·q₁`
    /// ([`residual_row`]) with its own scale `s₂`. Then `x_j ≈ s₁·q₁ + s₂·q₂` with
    /// `|error| ≤ s₂/2 ≤ max|x_j| / 64516` per value (`|r| ≤ s₁/2`, so `s₂ ≤ s₁/254`), up to `f32`
    /// rounding; a product is the sum of the products of token `j` and token `n + j`.
    /// NaN/Inf is an error.
    pub fn quantize_two(x: &[f32], n: usize, cols: usize) -> Result<Self> {
        let first = Self::quantize(x, n, cols)?;
        let mut r = vec![0f32; n * cols];
        for j in 0..n {
            residual_row(
                &x[j * cols..(j + 1) * cols],
                first.scales[j],
                &first.row(j)[..cols],
                &mut r[j * cols..(j + 1) * cols],
            );
        }
        let second = Self::quantize(&r, n, cols)?;
        let mut a = Self::empty();
        a.reset(2 * n, cols);
        let len = n * a.padded_cols;
        a.data.as_mut_slice()[..len].copy_from_slice(first.data());
        a.data.as_mut_slice()[len..].copy_from_slice(second.data());
        a.scales[..n].copy_from_slice(&first.scales);
        a.scales[n..].copy_from_slice(&second.scales);
        Ok(a)
    }

    /// Fills `self` with `n` tokens of `cols` codes from `f(j, codes)`, which writes token
    /// `j`'s `cols` codes (zero on entry) and returns its scale `s_j`, reusing the buffers.
    /// Codes of `−128` or a non-finite scale are an error (and leave no tokens).
    pub fn fill_codes(
        &mut self,
        n: usize,
        cols: usize,
        mut f: impl FnMut(usize, &mut [i8]) -> f32,
    ) -> Result<()> {
        self.reset(n, cols);
        let pc = self.padded_cols;
        for j in 0..n {
            let row = &mut self.data.as_mut_slice()[j * pc..j * pc + cols];
            let s = f(j, row);
            // Branch-free (it vectorizes); the position is looked up only on failure.
            let has_min = row.iter().fold(false, |a, &v| a | (v == i8::MIN));
            if has_min && let Some(i) = row.iter().position(|&v| v == i8::MIN) {
                self.reset(0, 0);
                return Err(TernaryError::config(format!(
                    "activation value -128 at token {j}, column {i}: int8 activations must lie \
                     in [-127, 127]"
                )));
            }
            if !s.is_finite() {
                self.reset(0, 0);
                return Err(TernaryError::config(format!(
                    "activation scale {s} of token {j} is not finite"
                )));
            }
            self.scales[j] = s;
        }
        Ok(())
    }

    /// `n` tokens of `cols` zero codes and zero scales, in the existing buffers.
    fn reset(&mut self, n: usize, cols: usize) {
        self.n = n;
        self.cols = cols;
        self.padded_cols = cols.div_ceil(ROW_ALIGN) * ROW_ALIGN;
        self.data.reset(n * self.padded_cols);
        self.scales.clear();
        self.scales.resize(n, 0.0);
    }

    /// Builds from already-quantized values (`n × cols`, each in `[-127, 127]`) and token scales.
    pub fn from_parts(n: usize, cols: usize, q: &[i8], scales: Vec<f32>) -> Result<Self> {
        if q.len() != n * cols || scales.len() != n {
            return Err(TernaryError::shape(format!(
                "activations: expected {n}x{cols} values and {n} scales, got {} and {}",
                q.len(),
                scales.len()
            )));
        }
        if let Some(i) = q.iter().position(|&v| v == i8::MIN) {
            return Err(TernaryError::config(format!(
                "activation value -128 at index {i}: int8 activations must lie in [-127, 127]"
            )));
        }
        check_finite("activation scales", &scales)?;
        let padded_cols = cols.div_ceil(ROW_ALIGN) * ROW_ALIGN;
        let mut data = Aligned::new(n * padded_cols);
        for j in 0..n {
            data.as_mut_slice()[j * padded_cols..j * padded_cols + cols]
                .copy_from_slice(&q[j * cols..(j + 1) * cols]);
        }
        Ok(Self {
            n,
            cols,
            padded_cols,
            data,
            scales,
        })
    }

    /// Tokens.
    #[inline]
    pub fn n(&self) -> usize {
        self.n
    }

    /// Values per token.
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row stride of [`data`](Self::data): `64 · ⌈cols / 64⌉`.
    #[inline]
    pub fn padded_cols(&self) -> usize {
        self.padded_cols
    }

    /// All quantized values, `n × padded_cols`, zero in the padding.
    #[inline]
    pub fn data(&self) -> &[i8] {
        self.data.as_slice()
    }

    /// The padded quantized row of token `j`.
    #[inline]
    pub fn row(&self, j: usize) -> &[i8] {
        &self.data.as_slice()[j * self.padded_cols..(j + 1) * self.padded_cols]
    }

    /// Per-token scales `s_j`.
    #[inline]
    pub fn scales(&self) -> &[f32] {
        &self.scales
    }

    /// The codes as `u8 = q + 128` in `panels` panels of 16 tokens starting at token `first`,
    /// the operand layout of a 16-token `vpdpbusd` GEMM: panel `p`, step `k` (columns
    /// `4k .. 4k + 4`) is 64 bytes, token `first + 16p + t` at bytes `4t .. 4t + 4`. Tokens past
    /// the last are `q = 0` (`u8` 128).
    pub fn u8_panels(&self, first: usize, panels: usize) -> Vec<u8> {
        self.u8_panels_on(first, panels, true)
    }

    /// [`u8_panels`](Self::u8_panels) on the calling thread only (no rayon).
    pub fn u8_panels_serial(&self, first: usize, panels: usize) -> Vec<u8> {
        self.u8_panels_on(first, panels, false)
    }

    fn u8_panels_on(&self, first: usize, panels: usize, parallel: bool) -> Vec<u8> {
        let mut packed = vec![0; panels * (self.padded_cols() / 4) * 64];
        self.u8_panels_into(first, parallel, &mut packed);
        packed
    }

    /// [`u8_panels`](Self::u8_panels) into `packed` (`panels · padded_cols / 4 · 64` bytes,
    /// overwritten), on rayon's pool when `parallel`.
    pub(crate) fn u8_panels_into(&self, first: usize, parallel: bool, packed: &mut [u8]) {
        use rayon::prelude::*;
        let steps = self.padded_cols() / 4;
        packed.fill(0x80);
        if steps == 0 {
            return;
        }
        let fill = |(p, panel): (usize, &mut [u8])| {
            let t0 = first + 16 * p;
            for t in 0..16.min(self.n().saturating_sub(t0)) {
                let row = self.row(t0 + t);
                for (src, dst) in row.chunks_exact(4).zip(panel.chunks_exact_mut(64)) {
                    for (d, &s) in dst[4 * t..4 * t + 4].iter_mut().zip(src) {
                        *d = (s as u8) ^ 0x80;
                    }
                }
            }
        };
        if parallel {
            packed.par_chunks_mut(steps * 64).enumerate().for_each(fill);
        } else {
            packed.chunks_mut(steps * 64).enumerate().for_each(fill);
        }
    }
}

/// Rounds `v` to the nearest integer, ties to even, for `|v| < 2^22`.
///
/// Adding and subtracting `1.5 · 2^23` makes the FPU's round-to-nearest-even do the work in two
/// plain additions (SSE2 on any x86-64), where `f32::round_ties_even` would be a libm call
/// without SSE4.1. Exact for the values used here (`|v| ≤ 127` plus rounding error).
#[inline(always)]
pub(crate) fn round_ties_even_small(v: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23
    (v + MAGIC) - MAGIC
}

/// The rounding residual of one quantized token: `r[c] = x[c] − s · q[c]` in `f32` (the second
/// code of [`QuantizedActivations::quantize_two`] quantizes it). Lengths must match.
pub fn residual_row(x: &[f32], s: f32, q: &[i8], r: &mut [f32]) {
    debug_assert!(x.len() == q.len() && x.len() == r.len());
    for ((r, &v), &c) in r.iter_mut().zip(x).zip(q) {
        *r = v - s * f32::from(c);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_follows_the_formula() {
        let x = [0.5f32, -1.0, 0.25, 0.0, 2.0, -2.0];
        let q = QuantizedActivations::quantize(&x, 2, 3).unwrap();
        assert_eq!(q.padded_cols(), 64);
        assert_eq!(&q.row(0)[..3], &[64, -127, 32]);
        assert!(q.row(0)[3..].iter().all(|&v| v == 0));
        assert_eq!(&q.row(1)[..3], &[0, 127, -127]);
        assert_eq!(q.scales(), &[1.0 / 127.0, 2.0 / 127.0]);
    }

    #[test]
    fn two_codes_should_reconstruct_tokens_within_the_stated_bound() {
        // Tokens with a large outlier (where one code loses the small values), all-zero, tiny,
        // one value, and widths 1, 63, 64, 65, 576.
        let seed = ternary_testkit::seed();
        for cols in [1usize, 63, 64, 65, 576] {
            let mut rng = crate::rng::SplitMix64::new(seed ^ cols as u64);
            let n = 5;
            let mut x: Vec<f32> = (0..n * cols).map(|_| rng.signed_unit_f32()).collect();
            x[0] = 300.0; // token 0: one outlier
            x[cols..2 * cols].fill(0.0); // token 1: zero
            for v in &mut x[2 * cols..3 * cols] {
                *v *= 1e-30; // token 2: tiny
            }
            let a = QuantizedActivations::quantize_two(&x, n, cols).unwrap();
            assert_eq!((a.n(), a.cols()), (2 * n, cols));
            let one = QuantizedActivations::quantize(&x, n, cols).unwrap();
            for j in 0..n {
                let xj = &x[j * cols..(j + 1) * cols];
                assert_eq!(&a.row(j)[..cols], &one.row(j)[..cols], "seed {seed:#x}");
                assert_eq!(a.scales()[j], one.scales()[j]);
                let amax = xj.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
                let (s1, s2) = (f64::from(a.scales()[j]), f64::from(a.scales()[n + j]));
                assert!(s2 <= s1 / 254.0 * (1.0 + 1e-6), "s2 {s2} s1 {s1}");
                for (c, &v) in xj.iter().enumerate() {
                    let y = s1 * f64::from(a.row(j)[c]) + s2 * f64::from(a.row(n + j)[c]);
                    let bound = amax / 64516.0 * (1.0 + 1e-4) + amax * 1e-7;
                    assert!(
                        (y - f64::from(v)).abs() <= bound,
                        "seed {seed:#x} cols {cols} token {j} col {c}: {y} vs {v}"
                    );
                }
            }
        }
        assert!(QuantizedActivations::quantize_two(&[f32::NAN], 1, 1).is_err());
        let e = QuantizedActivations::quantize_two(&[], 0, 8).unwrap();
        assert_eq!(e.n(), 0);
    }

    #[test]
    fn magic_rounding_matches_round_ties_even() {
        let mut v = -200.0f32;
        while v <= 200.0 {
            assert_eq!(round_ties_even_small(v), v.round_ties_even(), "{v}");
            v += 0.125;
        }
        for v in [
            0.5f32,
            1.5,
            2.5,
            -0.5,
            -1.5,
            126.5,
            -126.5,
            0.499_999_97,
            63.500_004,
        ] {
            assert_eq!(round_ties_even_small(v), v.round_ties_even(), "{v}");
        }
    }

    #[test]
    fn zero_token_and_bad_input() {
        let q = QuantizedActivations::quantize(&[0.0; 5], 1, 5).unwrap();
        assert_eq!(q.scales(), &[0.0]);
        assert!(QuantizedActivations::quantize(&[1.0, f32::INFINITY], 1, 2).is_err());
        assert!(QuantizedActivations::quantize(&[1.0; 3], 2, 2).is_err());
        assert!(QuantizedActivations::from_parts(1, 1, &[-128], vec![1.0]).is_err());
    }
}
