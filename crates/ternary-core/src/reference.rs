//! Scalar reference implementations: the oracles every fast path is tested against.
//!
//! These decode one weight at a time and favour obviousness over speed. Float products are
//! computed in `f64`; the int8 path is exact integer arithmetic followed by a fixed, documented
//! order of `f32` scaling that the fast kernels reproduce bit for bit.

use crate::activations::QuantizedActivations;
use crate::error::{Result, TernaryError};
use crate::matrix::{TernaryMatrix, WORD_BITS};

pub(crate) fn check_gemm_shape(m: &TernaryMatrix, x_len: usize, n: usize) -> Result<()> {
    if x_len != n * m.cols() {
        return Err(TernaryError::shape(format!(
            "activations: expected n x cols = {n} x {} = {} values, got {x_len}",
            m.cols(),
            n * m.cols()
        )));
    }
    Ok(())
}

/// `y[j, r] = Σ_c s[r, g(c)] · t[r, c] · x[j, c]` in `f64`, for `n` tokens of `cols` values.
///
/// `x` is `n × cols` row-major; the result is `n × rows` row-major.
pub fn gemm_f32(m: &TernaryMatrix, x: &[f32], n: usize) -> Result<Vec<f64>> {
    check_gemm_shape(m, x.len(), n)?;
    let (rows, cols) = (m.rows(), m.cols());
    let trits = m.to_trits();
    let mut y = vec![0f64; n * rows];
    for j in 0..n {
        for r in 0..rows {
            let mut acc = 0f64;
            for c in 0..cols {
                let t = f64::from(trits[r * cols + c]);
                acc += f64::from(m.scale_at(r, c)) * t * f64::from(x[j * cols + c]);
            }
            y[j * rows + r] = acc;
        }
    }
    Ok(y)
}

/// The mass of each output of [`gemm_f32`], `Σ_c |s[r, g(c)] · t[r, c] · x[j, c]|` in `f64`
/// (`n × rows`): the scale of the `f32` error bound the fast kernels are tested against.
///
/// # Panics
/// If `x` holds fewer than `n · cols` values.
pub fn abs_mass(m: &TernaryMatrix, x: &[f32], n: usize) -> Vec<f64> {
    let (rows, cols) = (m.rows(), m.cols());
    let trits = m.to_trits();
    let mut out = vec![0f64; n * rows];
    for j in 0..n {
        for r in 0..rows {
            out[j * rows + r] = (0..cols)
                .map(|c| {
                    (f64::from(m.scale_at(r, c))
                        * f64::from(trits[r * cols + c])
                        * f64::from(x[j * cols + c]))
                    .abs()
                })
                .sum();
        }
    }
    out
}

/// Integer accumulators of the int8 path: `acc[j, r, g] = Σ_{c ∈ g} q[j, c] · t[r, c]`
/// (`n × rows × groups_per_row`, row-major).
pub fn gemm_i8_accumulators(m: &TernaryMatrix, a: &QuantizedActivations) -> Result<Vec<i32>> {
    check_i8_shape(m, a)?;
    let (rows, cols) = (m.rows(), m.cols());
    let layout = m.scales().layout();
    let groups = layout.groups_per_row(cols);
    let glen = layout.group_len(cols).max(1);
    let trits = m.to_trits();
    let mut acc = vec![0i32; a.n() * rows * groups];
    for j in 0..a.n() {
        let q = a.row(j);
        for r in 0..rows {
            for c in 0..cols {
                let g = c / glen;
                acc[(j * rows + r) * groups + g] +=
                    i32::from(q[c]) * i32::from(trits[r * cols + c]);
            }
        }
    }
    Ok(acc)
}

/// Int8 GEMM: `y[j, r] = s_j · Σ_g (s[r, g] · acc[j, r, g])`.
///
/// The float part is defined exactly as `sum = 0f32; for g in groups { sum += s[r, g] * acc as f32 };
/// y = sum * s_j` so that fast kernels can match it bit for bit.
pub fn gemm_i8(m: &TernaryMatrix, a: &QuantizedActivations) -> Result<Vec<f32>> {
    let acc = gemm_i8_accumulators(m, a)?;
    let rows = m.rows();
    let groups = m.scales().layout().groups_per_row(m.cols());
    let s = m.scales().values();
    let mut y = vec![0f32; a.n() * rows];
    for j in 0..a.n() {
        for r in 0..rows {
            let mut sum = 0f32;
            for g in 0..groups {
                sum += s[r * groups + g] * acc[(j * rows + r) * groups + g] as f32;
            }
            y[j * rows + r] = sum * a.scales()[j];
        }
    }
    Ok(y)
}

pub(crate) fn check_i8_shape(m: &TernaryMatrix, a: &QuantizedActivations) -> Result<()> {
    if a.cols() != m.cols() {
        return Err(TernaryError::shape(format!(
            "int8 activations have {} values per token, matrix has {} columns",
            a.cols(),
            m.cols()
        )));
    }
    Ok(())
}

fn decode(plus: &[u32], minus: &[u32], i: usize) -> i64 {
    let (w, bit) = (i / WORD_BITS, 1u32 << (i % WORD_BITS));
    i64::from(plus[w] & bit != 0) - i64::from(minus[w] & bit != 0)
}

/// Ternary · ternary dot of two plane pairs, one element at a time: `Σ_i a_i · b_i`.
///
/// All four slices must have the same length; the planes must satisfy `plus & minus == 0`.
pub fn ternary_dot(a_plus: &[u32], a_minus: &[u32], b_plus: &[u32], b_minus: &[u32]) -> i64 {
    assert!(
        a_plus.len() == a_minus.len()
            && a_plus.len() == b_plus.len()
            && a_plus.len() == b_minus.len(),
        "ternary_dot: plane lengths differ"
    );
    (0..a_plus.len() * WORD_BITS)
        .map(|i| decode(a_plus, a_minus, i) * decode(b_plus, b_minus, i))
        .sum()
}

/// Binary (±1) dot of the first `bits` elements, one element at a time: bit `1` is `+1`,
/// bit `0` is `-1`; `Σ_i a_i · b_i`.
pub fn binary_dot(a: &[u32], b: &[u32], bits: usize) -> i64 {
    assert!(
        a.len() == b.len() && bits <= a.len() * WORD_BITS,
        "binary_dot: bad lengths"
    );
    (0..bits)
        .map(|i| {
            let (w, bit) = (i / WORD_BITS, 1u32 << (i % WORD_BITS));
            let av = if a[w] & bit != 0 { 1 } else { -1 };
            let bv = if b[w] & bit != 0 { 1 } else { -1 };
            av * bv
        })
        .sum()
}

/// Causal attention of `nt` query tokens of one head in `f64`, the first token at position
/// `pos0`: `o_t = Σ_{p ≤ pos0 + t} softmax_p(scale · q_t · k_p) · v_p`.
///
/// `q` is `[nt, d]`, `keys` and `values` `[≥ pos0 + nt, d]`; the result is `[nt, d]`.
pub fn causal_attention(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    d: usize,
    pos0: usize,
    scale: f32,
) -> Vec<f64> {
    let nt = q.len().checked_div(d).unwrap_or(0);
    assert!(
        nt * d == q.len() && keys.len() >= (pos0 + nt) * d && values.len() >= (pos0 + nt) * d,
        "causal_attention: bad lengths"
    );
    let mut out = vec![0f64; nt * d];
    for (t, o) in out.chunks_exact_mut(d.max(1)).enumerate() {
        let qt = &q[t * d..(t + 1) * d];
        let scores: Vec<f64> = keys[..(pos0 + t + 1) * d]
            .chunks_exact(d)
            .map(|k| {
                f64::from(scale)
                    * qt.iter()
                        .zip(k)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum::<f64>()
            })
            .collect();
        let max = scores.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
        let e: Vec<f64> = scores.iter().map(|&s| (s - max).exp()).collect();
        let sum: f64 = e.iter().sum();
        for (w, v) in e.iter().zip(values.chunks_exact(d)) {
            for (oi, &vi) in o.iter_mut().zip(v) {
                *oi += w / sum * f64::from(vi);
            }
        }
    }
    out
}
