//! Fast, reproducible random inputs: ternary matrices and activations.
//!
//! Plane words are drawn directly (no per-weight loop), so a 4096×14336 matrix takes
//! milliseconds. Each weight is `0` with probability `5/16` and `±1` with `11/32` each, close
//! to what abs-mean quantization of Gaussian weights gives (`P(|z| < 0.4) ≈ 0.31`); the
//! scalar kernels walk set bits, so the density matters for them.

use rayon::prelude::*;
use ternary_core::matrix::WORD_BITS;
use ternary_core::rng::SplitMix64;
use ternary_core::{Scales, TernaryMatrix, words_per_row};

use crate::error::Result;

/// Mask of the valid (non-padding) bits of word `w` of a row of `cols` columns.
fn valid_mask(w: usize, cols: usize) -> u32 {
    let start = w * WORD_BITS;
    if start + WORD_BITS <= cols {
        u32::MAX
    } else if start >= cols {
        0
    } else {
        (1u32 << (cols - start)) - 1
    }
}

/// A random `rows × cols` ternary matrix with per-row scales `s_r ∈ [0.5, 1.5) / √cols`.
///
/// Per word: `nz = a | (b & (c | d))` (each bit set with probability 11/16), sign from `e`;
/// `plus = nz & e`, `minus = nz & !e`, masked to the valid columns.
pub fn random_ternary(rows: usize, cols: usize, seed: u64) -> Result<TernaryMatrix> {
    random_ternary_in_groups(rows, cols, None, seed)
}

/// As [`random_ternary`], with one scale per `group` columns (`None`: per row).
pub fn random_ternary_in_groups(
    rows: usize,
    cols: usize,
    group: Option<usize>,
    seed: u64,
) -> Result<TernaryMatrix> {
    let wpr = words_per_row(cols);
    let mut rng = SplitMix64::new(seed);
    let mut plus = vec![0u32; rows * wpr];
    let mut minus = vec![0u32; rows * wpr];
    for (i, (p, m)) in plus.iter_mut().zip(minus.iter_mut()).enumerate() {
        let (r1, r2, r3) = (rng.next_u64(), rng.next_u64(), rng.next_u64());
        let (a, b, c, d, e) = (
            r1 as u32,
            (r1 >> 32) as u32,
            r2 as u32,
            (r2 >> 32) as u32,
            r3 as u32,
        );
        let nz = (a | (b & (c | d))) & valid_mask(i % wpr.max(1), cols);
        *p = nz & e;
        *m = nz & !e;
    }
    let inv_sqrt = 1.0 / (cols.max(1) as f32).sqrt();
    let scales = match group {
        None => Scales::per_row(
            (0..rows)
                .map(|_| rng.range_f32(0.5, 1.5) * inv_sqrt)
                .collect(),
        ),
        Some(g) => Scales::per_group(
            g,
            (0..rows * cols.div_ceil(g.max(1)))
                .map(|_| rng.range_f32(0.5, 1.5) * inv_sqrt)
                .collect(),
        ),
    };
    Ok(TernaryMatrix::from_planes(rows, cols, plus, minus, scales)?)
}

/// `len` activations uniform in `[-1, 1)`.
pub fn random_activations(len: usize, seed: u64) -> Vec<f32> {
    let mut rng = SplitMix64::new(seed);
    (0..len).map(|_| rng.signed_unit_f32()).collect()
}

/// Uniform in `(0, 1]` (53 bits), so that `ln` of it is finite.
fn unit_open(r: &mut SplitMix64) -> f64 {
    ((r.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
}

/// `len` values from `gen`, generated in parallel blocks seeded by `seed` and the block index.
fn random_vec(len: usize, seed: u64, g: impl Fn(&mut SplitMix64) -> f32 + Sync) -> Vec<f32> {
    let mut v = vec![0f32; len];
    v.par_chunks_mut(1 << 16).enumerate().for_each(|(b, c)| {
        let mut r = SplitMix64::new(seed ^ (b as u64).wrapping_mul(0xd134_2543_de82_ef95));
        for x in c {
            *x = g(&mut r);
        }
    });
    v
}

/// Standard normal values (Box–Muller).
pub fn gaussian_vec(len: usize, seed: u64) -> Vec<f32> {
    random_vec(len, seed, |r| {
        let (u, v) = (unit_open(r), unit_open(r));
        ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
    })
}

/// Uniform values in `[-1, 1)`.
pub fn uniform_vec(len: usize, seed: u64) -> Vec<f32> {
    random_vec(len, seed, |r| (2.0 * unit_open(r) - 1.0) as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_matrix_is_valid_with_expected_density() {
        for cols in [1, 31, 33, 64, 65, 576] {
            let m = random_ternary(7, cols, cols as u64).unwrap();
            assert_eq!((m.rows(), m.cols()), (7, cols));
            // from_planes validated plus & minus == 0 and zero padding.
            assert_eq!(m.to_trits().len(), 7 * cols);
        }
        let m = random_ternary(64, 1536, 1).unwrap();
        let zeros = m.zero_fraction();
        assert!((zeros - 5.0 / 16.0).abs() < 0.01, "zero fraction {zeros}");
        let t = m.to_trits();
        let plus = t.iter().filter(|&&v| v == 1).count() as f64 / t.len() as f64;
        assert!((plus - 11.0 / 32.0).abs() < 0.01, "plus fraction {plus}");
    }

    #[test]
    fn seeds_are_reproducible_and_distinct() {
        let a = random_ternary(8, 100, 5).unwrap();
        assert_eq!(a, random_ternary(8, 100, 5).unwrap());
        assert_ne!(a, random_ternary(8, 100, 6).unwrap());
        let x = random_activations(1000, 3);
        assert!(x.iter().all(|v| (-1.0..1.0).contains(v)));
        let mean = x.iter().map(|&v| f64::from(v)).sum::<f64>() / 1000.0;
        assert!(mean.abs() < 0.1, "mean {mean}");
    }
}
