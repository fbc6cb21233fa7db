//! Seeded codebooks: random items, level (correlated) and thermometer vectors.
//!
//! Item `i` of a random codebook is made from its own stream `derive_seed(seed, i)`, so it does
//! not depend on the codebook size, and generation runs in parallel with identical results.

use rayon::prelude::*;

use crate::binary::BinaryHv;
use crate::error::{Result, VsaError, check_dim};
use crate::ternary::TernaryHv;
use ternary_core::rng::{Rng, derive_seed};

/// `count` independent uniformly random binary vectors; item `i` is
/// `BinaryHv::random(D, derive_seed(seed, i))`.
pub fn random_binary(count: usize, dim: usize, seed: u64) -> Result<Vec<BinaryHv>> {
    check_dim(dim)?;
    (0..count)
        .into_par_iter()
        .map(|i| BinaryHv::random(dim, derive_seed(seed, i as u64)))
        .collect()
}

/// `count` independent random dense bipolar vectors (item `i`:
/// `TernaryHv::random_bipolar(D, derive_seed(seed, i))`).
pub fn random_bipolar(count: usize, dim: usize, seed: u64) -> Result<Vec<TernaryHv>> {
    check_dim(dim)?;
    (0..count)
        .into_par_iter()
        .map(|i| TernaryHv::random_bipolar(dim, derive_seed(seed, i as u64)))
        .collect()
}

/// `count` independent random sparse ternary vectors of the given density (item `i`:
/// `TernaryHv::random_sparse(D, density, derive_seed(seed, i))`).
pub fn random_sparse(count: usize, dim: usize, density: f64, seed: u64) -> Result<Vec<TernaryHv>> {
    check_dim(dim)?;
    (0..count)
        .into_par_iter()
        .map(|i| TernaryHv::random_sparse(dim, density, derive_seed(seed, i as u64)))
        .collect()
}

/// `levels ≥ 1` level vectors for encoding a scalar: `L₀` is random, and `Lᵢ` is `L₀` with the
/// first `f(i) = ⌊i·⌊D/2⌋/(levels − 1)⌋` positions of one seeded random permutation flipped.
///
/// So `popc(Lᵢ ⊕ Lⱼ) = |f(i) − f(j)|` exactly: neighbours are similar, and the two ends are
/// orthogonal (`⟨L₀, L_last⟩ = D − 2⌊D/2⌋ ∈ {0, 1}`).
pub fn level_binary(levels: usize, dim: usize, seed: u64) -> Result<Vec<BinaryHv>> {
    check_dim(dim)?;
    if levels == 0 {
        return Err(VsaError::invalid("level basis needs at least one level"));
    }
    let base = BinaryHv::random(dim, derive_seed(seed, 0))?;
    let mut order: Vec<usize> = (0..dim).collect();
    Rng::stream(seed, 1).shuffle(&mut order);
    let half = (dim / 2) as u128;
    let flips = |i: usize| -> usize {
        if levels == 1 {
            0
        } else {
            (i as u128 * half / (levels - 1) as u128) as usize
        }
    };
    let mut out = Vec::with_capacity(levels);
    let mut current = base;
    let mut done = 0;
    for i in 0..levels {
        let target = flips(i);
        for &pos in &order[done..target] {
            let bit = current.get(pos).unwrap_or(false);
            current.set(pos, !bit)?;
        }
        done = target;
        out.push(current.clone());
    }
    Ok(out)
}

/// `levels ≥ 1` thermometer vectors: `Lᵢ` has its first `t(i) = ⌊i·D/(levels − 1)⌋`
/// components `+1` and the rest `−1` (so `L₀` is all `−1`, `L_last` all `+1`, and
/// `⟨Lᵢ, Lⱼ⟩ = D − 2|t(i) − t(j)|`). Deterministic (no seed).
pub fn thermometer_binary(levels: usize, dim: usize) -> Result<Vec<BinaryHv>> {
    check_dim(dim)?;
    if levels == 0 {
        return Err(VsaError::invalid(
            "thermometer basis needs at least one level",
        ));
    }
    (0..levels)
        .map(|i| {
            let t = if levels == 1 {
                0
            } else {
                (i as u128 * dim as u128 / (levels - 1) as u128) as usize
            };
            let mut words = vec![0u32; crate::words::words_for(dim)];
            for (w, word) in words.iter_mut().enumerate() {
                let lo = w * 32;
                if t >= lo + 32 {
                    *word = u32::MAX;
                } else if t > lo {
                    *word = (1u32 << (t - lo)) - 1;
                }
            }
            BinaryHv::from_words(dim, words)
        })
        .collect()
}
