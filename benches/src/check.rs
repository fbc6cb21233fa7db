//! Correctness guards run before any timing: a fast wrong kernel must not produce numbers.

use crate::baseline::Dims;
use crate::error::{BenchError, Result};

/// Relative error `‖y − r‖₂ / ‖r‖₂`, accumulated in `f64`.
///
/// `+∞` if the lengths differ or `y` holds a NaN/Inf (poisoned outputs that a kernel did not
/// write show up here); `‖y‖₂` when `‖r‖₂ = 0`.
pub fn rel_error(y: &[f32], reference: &[f32]) -> f64 {
    if y.len() != reference.len() || y.iter().any(|v| !v.is_finite()) {
        return f64::INFINITY;
    }
    let (mut diff, mut norm) = (0f64, 0f64);
    for (&a, &b) in y.iter().zip(reference) {
        let d = f64::from(a) - f64::from(b);
        diff += d * d;
        norm += f64::from(b) * f64::from(b);
    }
    if norm == 0.0 {
        diff.sqrt()
    } else {
        (diff / norm).sqrt()
    }
}

/// Fails with [`BenchError::Check`] unless `rel_error(y, reference) ≤ tol`; returns the error.
pub fn guard(kernel: &str, y: &[f32], reference: &[f32], tol: f64) -> Result<f64> {
    let e = rel_error(y, reference);
    if e <= tol {
        Ok(e)
    } else {
        Err(BenchError::Check {
            kernel: kernel.to_owned(),
            detail: format!("relative error {e:.3e} exceeds {tol:.0e}"),
        })
    }
}

/// Spot-checks a dense product `y = x · Wᵀ` (`W` `rows × cols`, `x` `n × cols`, `y` `n × rows`)
/// against `f64` dot products at `samples` pseudo-random entries plus the four corners.
///
/// Entry error is measured against `Σ_k |x[i, k] · W[j, k]|` (the size of the rounding an
/// `f32` sum may make). Returns the largest such error, or [`BenchError::Check`] above `tol`.
pub fn spot_check_dense(
    name: &str,
    d: Dims,
    (w, x, y): (&[f32], &[f32], &[f32]),
    samples: usize,
    tol: f64,
) -> Result<f64> {
    d.check(name, w.len(), x.len(), y.len())?;
    let Dims { rows, cols, n } = d;
    if rows == 0 || n == 0 {
        return Ok(0.0);
    }
    let mut picks = vec![(0, 0), (0, rows - 1), (n - 1, 0), (n - 1, rows - 1)];
    let mut rng = ternary_core::rng::SplitMix64::new(0x5EED);
    picks.extend((0..samples).map(|_| {
        let v = rng.next_u64();
        ((v as usize >> 32) % n, (v as u32 as usize) % rows)
    }));
    let mut worst = 0f64;
    for (i, j) in picks {
        let (xi, wj) = (&x[i * cols..(i + 1) * cols], &w[j * cols..(j + 1) * cols]);
        let (mut dot, mut mag) = (0f64, 0f64);
        for (&a, &b) in xi.iter().zip(wj) {
            let p = f64::from(a) * f64::from(b);
            dot += p;
            mag += p.abs();
        }
        let got = f64::from(y[i * rows + j]);
        let e = if got.is_finite() {
            (got - dot).abs() / mag.max(f64::MIN_POSITIVE)
        } else {
            f64::INFINITY
        };
        worst = worst.max(e);
        if e > tol {
            return Err(BenchError::Check {
                kernel: name.to_owned(),
                detail: format!(
                    "y[{i}, {j}] = {got} but the f64 dot product is {dot} \
                     (error {e:.3e} of Σ|terms| = {mag}, tolerance {tol:.0e})"
                ),
            });
        }
    }
    Ok(worst)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_error_catches_poison_and_wrong_values() {
        let r = [1.0f32, -2.0, 2.0];
        assert_eq!(rel_error(&r, &r), 0.0);
        assert!(rel_error(&[1.0, f32::NAN, 2.0], &r).is_infinite());
        assert!(rel_error(&[1.0, -2.0], &r).is_infinite());
        // ‖(0, 0, 1)‖ / ‖(1, -2, 2)‖ = 1/3.
        assert!((rel_error(&[1.0, -2.0, 3.0], &r) - 1.0 / 3.0).abs() < 1e-12);
        assert_eq!(rel_error(&[3.0, 4.0], &[0.0, 0.0]), 5.0);
        assert!(guard("k", &[1.0, -2.0, 2.0001], &r, 1e-4).is_ok());
        let e = guard("k", &[1.0, -2.0, 2.1], &r, 1e-4).unwrap_err();
        assert!(
            e.to_string().contains("correctness check failed for k"),
            "{e}"
        );
    }

    #[test]
    fn spot_check_finds_a_wrong_entry() {
        // W = [[1, 2], [3, 4], [5, 6]], x = [[1, 1], [2, -1]] → y = [[3, 7, 11], [0, 2, 4]].
        let w = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let x = [1.0, 1.0, 2.0, -1.0];
        let mut y = [3.0, 7.0, 11.0, 0.0, 2.0, 4.0];
        let d = Dims::new(3, 2, 2);
        assert_eq!(
            spot_check_dense("d", d, (&w, &x, &y), 50, 1e-6).unwrap(),
            0.0
        );
        y[4] = 2.5;
        assert!(spot_check_dense("d", d, (&w, &x, &y), 50, 1e-6).is_err());
        y[4] = 2.0;
        y[5] = f32::NAN;
        // The corners are always checked, whatever the sample count.
        assert!(spot_check_dense("d", d, (&w, &x, &y), 0, 1e-6).is_err());
        assert!(spot_check_dense("d", d, (&w, &x, &y[..5]), 0, 1e-6).is_err());
    }
}
