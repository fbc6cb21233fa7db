//! Portable kernels: walk the set bits of each plane word.
//!
//! These are the fallback on every CPU and the shape of what the SIMD paths compute.

use super::{GroupWords, Rows};
use crate::activations::QuantizedActivations;
use crate::activations::round_ties_even_small;
use crate::matrix::TernaryMatrix;

/// `Σ_{bit i set in word} x[base + i]`.
#[inline]
fn sum_set_f32(mut word: u32, x: &[f32]) -> f32 {
    let mut acc = 0f32;
    while word != 0 {
        acc += x[word.trailing_zeros() as usize];
        word &= word - 1;
    }
    acc
}

/// `Σ_{bit i set in word} q[i]`.
#[inline]
fn sum_set_i8(mut word: u32, q: &[i8]) -> i32 {
    let mut acc = 0i32;
    while word != 0 {
        acc += i32::from(q[word.trailing_zeros() as usize]);
        word &= word - 1;
    }
    acc
}

/// Scalar [`gemm_f32`](super::gemm_f32); shapes are checked by the caller.
pub(super) fn gemm_f32(m: &TernaryMatrix, x: &[f32], n: usize, y: Rows<'_>) {
    let gw = GroupWords::of(m);
    let cols = m.cols();
    let scales = m.scales().values();
    y.run(m.rows(), cols, n, 1, |rows, out| {
        for (r, out_r) in rows.zip(out.chunks_exact_mut(n)) {
            let (plus, minus) = m.row_planes(r);
            let s = &scales[r * gw.groups..(r + 1) * gw.groups];
            for (j, o) in out_r.iter_mut().enumerate() {
                let xj = &x[j * cols..(j + 1) * cols];
                let mut sum = 0f32;
                for (g, &sg) in s.iter().enumerate() {
                    let mut acc = 0f32;
                    for w in gw.range(g) {
                        // Words past `cols` are padding (all bits zero) and read nothing.
                        let xw = xj.get(w * 32..).unwrap_or(&[]);
                        acc += sum_set_f32(plus[w], xw) - sum_set_f32(minus[w], xw);
                    }
                    sum += sg * acc;
                }
                *o = sum;
            }
        }
    });
}

/// Scalar [`gemm_i8`](super::gemm_i8); shapes are checked by the caller.
pub(super) fn gemm_i8(m: &TernaryMatrix, a: &QuantizedActivations, y: Rows<'_>) {
    let gw = GroupWords::of(m);
    let n = a.n();
    let scales = m.scales().values();
    y.run(m.rows(), m.cols(), n, 1, |rows, out| {
        for (r, out_r) in rows.zip(out.chunks_exact_mut(n)) {
            let (plus, minus) = m.row_planes(r);
            let s = &scales[r * gw.groups..(r + 1) * gw.groups];
            for (j, o) in out_r.iter_mut().enumerate() {
                let q = a.row(j);
                let mut sum = 0f32;
                for (g, &sg) in s.iter().enumerate() {
                    let mut acc = 0i32;
                    for w in gw.range(g) {
                        let qw = &q[w * 32..];
                        acc += sum_set_i8(plus[w], qw) - sum_set_i8(minus[w], qw);
                    }
                    sum += sg * acc as f32;
                }
                *o = sum * a.scales()[j];
            }
        }
    });
}

/// `Σ_i a[i] · b[i]` over the shorter length, with 16 independent partial sums (vectorizes;
/// a fixed summation order); `a` may be `f32` or `f16` (widened exactly as it is read).
pub(super) fn dot_f32<W: super::DenseWeight>(a: &[W], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x.to_f32() * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += x[i].to_f32() * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ_i a[i] · b[i]` over the shorter length in `i32`, 16 partial sums.
pub(super) fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0i32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: i32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..16 {
            acc[i] += i32::from(x[i]) * i32::from(y[i]);
        }
    }
    acc.iter().sum::<i32>() + tail
}

/// Scalar [`dense_rows_with`](super::dense_rows_with): one [`dot_f32`] per output.
pub(super) fn dense_rows<W: super::DenseWeight>(
    w: &[W],
    cols: usize,
    x: &[f32],
    n: usize,
    rows: std::ops::Range<usize>,
    out: &mut [f32],
) {
    for (r, o) in rows.zip(out.chunks_exact_mut(n.max(1))) {
        let wr = &w[r * cols..(r + 1) * cols];
        for (j, v) in o.iter_mut().enumerate() {
            *v = dot_f32(wr, &x[j * cols..(j + 1) * cols]);
        }
    }
}

/// Per-token int8 quantization of one finite row ([`QuantizedActivations::quantize`]'s rule):
/// `s = max|x| / 127`, `q[c] = clamp(round_half_even(x[c] · (127 / max|x|)), ±127)`; returns
/// `s`, and leaves `q` untouched for an all-zero row (`s = 0`). `q.len() ≥ row.len()`.
pub(crate) fn quantize_row_i8(row: &[f32], q: &mut [i8]) -> f32 {
    let amax = row
        .iter()
        .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    if amax == 0.0 {
        return 0.0;
    }
    let inv = 127.0 / amax;
    for (c, &v) in q.iter_mut().zip(row) {
        *c = round_ties_even_small(v * inv).clamp(-127.0, 127.0) as i8;
    }
    amax / 127.0
}

/// `dst[j · stride + i] = src[i · n + j]` (`+=` when `add`) for rows `i` in `rows` and tokens
/// `j` in `toks`: a block of [`transpose_into_with`](crate::kernels::transpose_into_with).
/// Shapes are checked by the caller.
pub(crate) fn transpose_block(
    src: &[f32],
    n: usize,
    rows: std::ops::Range<usize>,
    toks: std::ops::Range<usize>,
    dst: &mut [f32],
    stride: usize,
    add: bool,
) {
    for j in toks {
        for i in rows.clone() {
            let (d, v) = (&mut dst[j * stride + i], src[i * n + j]);
            *d = if add { *d + v } else { v };
        }
    }
}

/// `up[i] *= g / (1 + e^(−g))`, `g = gate[i]` (SiLU of the gate times the up projection, the
/// reference's expression), over the shorter length.
pub(crate) fn silu_mul(gate: &[f32], up: &mut [f32]) {
    for (u, &g) in up.iter_mut().zip(gate) {
        *u *= g / (1.0 + (-g).exp());
    }
}
