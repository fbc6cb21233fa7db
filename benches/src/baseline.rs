//! Dense baselines: `y = x · Wᵀ` in `f32` and `f16` with the `gemm` crate (0.19), the matmul
//! behind candle's CPU backend.
//!
//! `W` is `rows × cols` row-major (out × in, as the ternary matrices), `x` is `n × cols`
//! row-major, `y` is `n × rows` row-major. The `f16` path takes `f16` weights, activations and
//! output, as candle's `f16` matmul does (gemm widens to `f32` internally).

use gemm::Parallelism;
use half::f16;
use half::slice::HalfFloatSliceExt;

use crate::error::{BenchError, Result};

/// Dimensions of `y = x · Wᵀ`: `W` is `rows × cols`, `x` is `n × cols`, `y` is `n × rows`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Dims {
    /// Output channels (rows of `W`).
    pub rows: usize,
    /// Input channels (columns of `W` and `x`).
    pub cols: usize,
    /// Tokens (rows of `x` and `y`).
    pub n: usize,
}

impl Dims {
    /// `Dims { rows, cols, n }`.
    pub fn new(rows: usize, cols: usize, n: usize) -> Self {
        Self { rows, cols, n }
    }

    /// Checks slice lengths `W: rows·cols`, `x: n·cols`, `y: n·rows`.
    pub fn check(&self, what: &str, w: usize, x: usize, y: usize) -> Result<()> {
        let Self { rows, cols, n } = *self;
        let need = (
            rows.checked_mul(cols),
            n.checked_mul(cols),
            n.checked_mul(rows),
        );
        if need != (Some(w), Some(x), Some(y)) {
            return Err(BenchError::Shape(format!(
                "{what} {rows}x{cols}, n={n}: need W {rows}x{cols}, x {n}x{cols}, y {n}x{rows}; \
                 got {w}, {x}, {y} values"
            )));
        }
        Ok(())
    }
}

/// `gemm`'s parallelism for `threads` worker threads (`None` for one, else rayon's
/// current pool with `threads` tasks).
pub fn parallelism(threads: usize) -> Parallelism {
    if threads <= 1 {
        Parallelism::None
    } else {
        Parallelism::Rayon(threads)
    }
}

/// Calls `gemm::gemm::<T>` for `y = x · Wᵀ`; `T` must be `f32` or `gemm::f16`.
fn dense<T: 'static + Copy>(
    d: Dims,
    w: &[T],
    x: &[T],
    y: &mut [T],
    (zero, one): (T, T),
    par: Parallelism,
) -> Result<()> {
    d.check("dense matmul", w.len(), x.len(), y.len())?;
    let Dims { rows, cols, n } = d;
    let (rows_i, cols_i) = (rows as isize, cols as isize);
    // SAFETY: the lengths were checked above: `y` holds n·rows values addressed as
    // y[i·rows + j] (i < n, j < rows), `x` holds n·cols addressed as x[i·cols + k], and `w`
    // holds rows·cols addressed as w[j·cols + k] (k < cols), so every access is in bounds.
    // `y` is a unique borrow, so it aliases neither input. `read_dst = false` means the
    // initial contents of `y` are never read (alpha is ignored); beta = 1 gives y = x·Wᵀ.
    // `T` is f32 or f16 (the only callers below), both supported by gemm.
    unsafe {
        gemm::gemm(
            n,
            rows,
            cols,
            y.as_mut_ptr(),
            1,
            rows_i,
            false,
            x.as_ptr(),
            1,
            cols_i,
            w.as_ptr(),
            cols_i,
            1,
            zero,
            one,
            false,
            false,
            false,
            par,
        );
    }
    Ok(())
}

/// Dense `f32` product `y[i, j] = Σ_k x[i, k] · W[j, k]`.
pub fn matmul_f32(d: Dims, w: &[f32], x: &[f32], y: &mut [f32], par: Parallelism) -> Result<()> {
    dense(d, w, x, y, (0.0, 1.0), par)
}

/// Dense `f16` product `y[i, j] = Σ_k x[i, k] · W[j, k]` (inputs and output `f16`).
pub fn matmul_f16(d: Dims, w: &[f16], x: &[f16], y: &mut [f16], par: Parallelism) -> Result<()> {
    dense(d, w, x, y, (f16::ZERO, f16::ONE), par)
}

/// Converts `f32` values to `f16` (round to nearest even; F16C when the CPU has it).
pub fn to_f16(v: &[f32]) -> Vec<f16> {
    let mut out = vec![f16::ZERO; v.len()];
    out.convert_from_f32_slice(v);
    out
}

/// Converts `f16` values to `f32` (exact).
pub fn from_f16(v: &[f16]) -> Vec<f32> {
    let mut out = vec![0f32; v.len()];
    v.convert_to_f32_slice(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::random_activations;

    /// `y[i, j] = Σ_k x[i, k] · W[j, k]` in f64.
    fn reference(w: &[f32], rows: usize, cols: usize, x: &[f32], n: usize) -> Vec<f64> {
        let mut y = vec![0f64; n * rows];
        for i in 0..n {
            for j in 0..rows {
                y[i * rows + j] = (0..cols)
                    .map(|k| f64::from(x[i * cols + k]) * f64::from(w[j * cols + k]))
                    .sum();
            }
        }
        y
    }

    fn max_rel(y: &[f32], r: &[f64], scale: f64) -> f64 {
        y.iter()
            .zip(r)
            .map(|(&a, &b)| (f64::from(a) - b).abs() / scale)
            .fold(0.0, f64::max)
    }

    #[test]
    fn dense_matmul_should_match_f64_reference() {
        for (rows, cols, n) in [
            (1, 1, 1),
            (31, 33, 3),
            (65, 64, 8),
            (64, 576, 1),
            (33, 65, 17),
        ] {
            let w = random_activations(rows * cols, 1);
            let x = random_activations(n * cols, 2);
            let r = reference(&w, rows, cols, &x, n);
            // |x|, |w| < 1, so every |y| ≤ cols; errors are measured against √cols.
            let scale = (cols as f64).sqrt();
            for par in [parallelism(1), parallelism(2)] {
                let mut y = vec![f32::NAN; n * rows];
                matmul_f32(Dims::new(rows, cols, n), &w, &x, &mut y, par).unwrap();
                let e = max_rel(&y, &r, scale);
                assert!(e < 1e-5, "f32 {rows}x{cols} n={n}: {e}");

                let (w16, x16) = (to_f16(&w), to_f16(&x));
                let r16 = reference(&from_f16(&w16), rows, cols, &from_f16(&x16), n);
                let mut y16 = vec![f16::NAN; n * rows];
                matmul_f16(Dims::new(rows, cols, n), &w16, &x16, &mut y16, par).unwrap();
                // Output rounding to f16: 2^-11 relative of |y| ≤ √cols-ish values.
                let e = max_rel(&from_f16(&y16), &r16, scale);
                assert!(e < 2e-3, "f16 {rows}x{cols} n={n}: {e}");
            }
        }
    }

    #[test]
    fn bad_lengths_are_errors() {
        let mut y = vec![0f32; 5];
        let none = Parallelism::None;
        let d = Dims::new(2, 3, 2);
        matmul_f32(d, &[0.0; 6], &[0.0; 6], &mut y[..4], none).unwrap();
        assert!(matmul_f32(d, &[0.0; 6], &[0.0; 6], &mut y, none).is_err());
        assert!(matmul_f32(d, &[0.0; 6], &[0.0; 5], &mut y[..4], none).is_err());
        assert!(matmul_f32(d, &[0.0; 5], &[0.0; 6], &mut y[..4], none).is_err());
    }
}
