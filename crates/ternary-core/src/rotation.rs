//! The signed block Walsh–Hadamard rotation of activation vectors.
//!
//! For a width `n`, the block `b` is the largest power of two dividing `n` (at most
//! [`MAX_BLOCK`]), `H_b` the Sylvester Hadamard matrix (`H_1 = [1]`,
//! `H_2k = [[H_k, H_k], [H_k, −H_k]]`, symmetric, `H_b·H_b = b·I`) and `s ∈ {±1}ⁿ` random
//! signs from a seed. The rotation of a vector `x` is, block by block,
//!
//! `T(x)[blk] = H_b·(s[blk] ⊙ x[blk]) / √b`,
//!
//! orthogonal (`TᵀT = I`), and computed in place by the fast transform in `n·log₂ b` additions.
//! A linear layer `y = W·x` that reads `x` gives the same `y` from `T(x)` with its rows rotated
//! the same way, `W' = W·Tᵀ` (row `r` of `W'` is `T(w_r)`): a rotated model computes the same
//! function with incoherent inputs to `W'` (QuaRot's online Hadamard before `down_proj`,
//! arXiv 2404.00456).

use crate::error::{Result, TernaryError};
use crate::rng::{Rng, derive_seed};

/// The largest block: wider transforms add little mixing for their cost.
pub const MAX_BLOCK: usize = 1024;

/// The block of width `n`: its largest power-of-two divisor, at most [`MAX_BLOCK`] (1 for 0).
#[must_use]
pub fn hadamard_block(n: usize) -> usize {
    if n == 0 {
        1
    } else {
        (1usize << n.trailing_zeros()).min(MAX_BLOCK)
    }
}

/// `T` for one width and seed (module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct SignedHadamard {
    signs: Vec<f32>,
    block: usize,
}

impl SignedHadamard {
    /// `T` of width `n`, its signs drawn from `seed`.
    ///
    /// # Errors
    /// `n = 0`, or a width whose block is below 16 (too little mixing to be worth a pass).
    pub fn new(n: usize, seed: u64) -> Result<Self> {
        let block = hadamard_block(n);
        if n == 0 || block < 16 {
            return Err(TernaryError::Config(format!(
                "a Hadamard rotation of width {n} would mix blocks of {block}: the width needs a \
                 power-of-two divisor of at least 16"
            )));
        }
        let mut rng = Rng::new(seed);
        let signs = (0..n)
            .map(|_| if rng.next_u64() >> 63 == 0 { 1.0 } else { -1.0 })
            .collect();
        Ok(Self { signs, block })
    }

    /// `T` of width `n` for layer `layer` of a model rotated with `seed` (an independent sign
    /// stream per layer).
    ///
    /// # Errors
    /// As [`SignedHadamard::new`].
    pub fn for_layer(n: usize, seed: u64, layer: usize) -> Result<Self> {
        Self::new(n, derive_seed(seed, layer as u64))
    }

    /// The width `n`.
    #[must_use]
    pub fn width(&self) -> usize {
        self.signs.len()
    }

    /// The block `b`.
    #[must_use]
    pub fn block(&self) -> usize {
        self.block
    }

    /// The signs `s`.
    #[must_use]
    pub fn signs(&self) -> &[f32] {
        &self.signs
    }

    /// `x ← T(x)` for each row of `x` (rows of [`width`](Self::width) values).
    ///
    /// # Errors
    /// `x.len()` not a multiple of the width.
    pub fn apply(&self, x: &mut [f32]) -> Result<()> {
        let n = self.width();
        if !x.len().is_multiple_of(n) {
            return Err(TernaryError::Shape(format!(
                "{} values are not rows of {n}",
                x.len()
            )));
        }
        let norm = 1.0 / (self.block as f32).sqrt();
        for row in x.chunks_exact_mut(n) {
            row.iter_mut().zip(&self.signs).for_each(|(v, s)| *v *= s);
            for blk in row.chunks_exact_mut(self.block) {
                fwht(blk);
                blk.iter_mut().for_each(|v| *v *= norm);
            }
        }
        Ok(())
    }

    /// The `b × b` matrix `H_b / √b`, row-major (symmetric and orthogonal), so that with the
    /// signs `T(x)[blk] = (s[blk] ⊙ x[blk]) · (H_b / √b)` for a row vector `x`.
    #[must_use]
    pub fn block_matrix(&self) -> Vec<f32> {
        let b = self.block;
        let mut m = vec![0f32; b * b];
        for (i, row) in m.chunks_exact_mut(b).enumerate() {
            row[i] = 1.0;
            fwht(row);
        }
        let norm = 1.0 / (b as f32).sqrt();
        m.iter_mut().for_each(|v| *v *= norm);
        m
    }
}

/// The unnormalized Walsh–Hadamard transform `x ← H·x` in place (`x.len()` a power of two).
fn fwht(x: &mut [f32]) {
    let mut h = 1;
    while h < x.len() {
        for pair in x.chunks_exact_mut(2 * h) {
            let (a, b) = pair.split_at_mut(h);
            for (u, v) in a.iter_mut().zip(b.iter_mut()) {
                let (p, q) = (*u, *v);
                *u = p + q;
                *v = p - q;
            }
        }
        h *= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `H_b` by its definition, `H[i][j] = (−1)^popcount(i & j)`, in f64.
    fn sylvester(b: usize) -> Vec<f64> {
        (0..b * b)
            .map(|k| {
                if ((k / b) & (k % b)).count_ones().is_multiple_of(2) {
                    1.0
                } else {
                    -1.0
                }
            })
            .collect()
    }

    #[test]
    fn block_should_be_the_largest_power_of_two_divisor() {
        for (n, b) in [
            (0, 1),
            (1, 1),
            (48, 16),
            (576, 64),
            (1536, 512),
            (6912, 256),
            (4096, 1024),
        ] {
            assert_eq!(hadamard_block(n), b, "n = {n}");
        }
        assert!(SignedHadamard::new(0, 1).is_err());
        assert!(SignedHadamard::new(24, 1).is_err());
        assert!(SignedHadamard::new(48, 1).is_ok());
    }

    /// Against an f64 product with the defining matrix, relative 1e-5, on random rows of the
    /// widths 16, 48, 576 and 1536; orthogonality (norms kept); rows of the wrong width refused.
    #[test]
    fn apply_should_match_the_definition_and_keep_norms() {
        let seed = 20261206;
        println!("seed {seed}");
        let mut rng = Rng::new(seed);
        for n in [16usize, 48, 576, 1536] {
            let t = SignedHadamard::new(n, seed + n as u64).unwrap();
            let b = t.block();
            let h = sylvester(b);
            let x: Vec<f32> = (0..3 * n).map(|_| rng.normal() as f32).collect();
            let mut y = x.clone();
            t.apply(&mut y).unwrap();
            for (xr, yr) in x.chunks(n).zip(y.chunks(n)) {
                let mut worst = 0f64;
                for k in 0..n / b {
                    for i in 0..b {
                        let want: f64 = (0..b)
                            .map(|j| {
                                h[i * b + j]
                                    * f64::from(t.signs()[k * b + j])
                                    * f64::from(xr[k * b + j])
                            })
                            .sum::<f64>()
                            / (b as f64).sqrt();
                        worst = worst.max((f64::from(yr[k * b + i]) - want).abs());
                    }
                }
                let scale = xr.iter().fold(0f64, |m, v| m.max(f64::from(v.abs())));
                assert!(
                    worst <= 1e-5 * scale * (b as f64).sqrt(),
                    "n = {n}: {worst}"
                );
                let (nx, ny) = (
                    xr.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>(),
                    yr.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>(),
                );
                assert!((nx - ny).abs() <= 1e-5 * nx, "n = {n}: norm {nx} -> {ny}");
            }
            let m = t.block_matrix();
            for (k, (&a, &e)) in m.iter().zip(&h).enumerate() {
                assert!(
                    (f64::from(a) - e / (b as f64).sqrt()).abs() < 1e-6,
                    "n = {n}, entry {k}"
                );
            }
            assert!(t.apply(&mut vec![0.0; n + 1]).is_err());
        }
        let (a, b) = (
            SignedHadamard::new(576, 1).unwrap(),
            SignedHadamard::new(576, 2).unwrap(),
        );
        assert_ne!(a.signs(), b.signs(), "seed ignored");
        assert_eq!(a, SignedHadamard::new(576, 1).unwrap(), "not reproducible");
        assert_ne!(
            SignedHadamard::for_layer(576, 1, 0).unwrap(),
            SignedHadamard::for_layer(576, 1, 1).unwrap()
        );
    }
}
