//! Bit-sliced integer vectors, so that a count vector can be compared with binary or ternary
//! hypervectors by popcounts instead of multiply-adds.
//!
//! A count vector `u ∈ ℤᴰ` is stored as `uᵢ = offset + Σ_{b<B} 2^b · P_b[i]` with
//! `offset = minᵢ uᵢ` and `B = ⌈log₂(max − min + 1)⌉` 0/1 planes `P_b`. Then for a binary
//! vector `ĉ ∈ {±1}ᴰ` with `S = Σ ĉᵢ`:
//!
//! `⟨u, ĉ⟩ = offset·S + Σ_b 2^b · (⟨P̂_b, ĉ⟩ + S) / 2`,
//!
//! where `⟨P̂_b, ĉ⟩ = D − 2·popc(P_b ⊕ c)` is one `binary_dot`; for a ternary `t`,
//! `⟨u, t⟩ = offset·Σ tᵢ + Σ_b 2^b · (popc(P_b & t⁺) − popc(P_b & t⁻))`. The cost is
//! `B` popcount passes (about 8–10 for a bundle of a few hundred items) instead of `D`
//! multiply-adds, and the result is exact.

use crate::error::{Result, check_dim};
use crate::words::words_for;

/// An integer vector in bit-sliced form (see the module docs). Exact for any `i32` input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlicedCounts {
    dim: usize,
    offset: i64,
    planes: Vec<Vec<u32>>,
    zeros: Vec<u32>,
}

impl SlicedCounts {
    /// Slices `values` (`D = values.len() ≥ 1`).
    pub fn from_values(values: &[i32]) -> Result<Self> {
        check_dim(values.len())?;
        Ok(Self::slice(values))
    }

    /// [`from_values`](Self::from_values) without the `D ≥ 1` check (crate-internal).
    pub(crate) fn slice(values: &[i32]) -> Self {
        let dim = values.len();
        let (mut min, mut max) = (i64::MAX, i64::MIN);
        for &v in values {
            min = min.min(i64::from(v));
            max = max.max(i64::from(v));
        }
        let range = max.saturating_sub(min).max(0) as u64;
        let bits = (u64::BITS - range.leading_zeros()) as usize;
        let n = words_for(dim);
        let mut planes = vec![vec![0u32; n]; bits];
        let (full, rest) = values.as_chunks::<32>();
        let chunks = full.iter().map(|c| &c[..]).chain((!rest.is_empty()).then_some(rest));
        for (w, chunk) in chunks.enumerate() {
            for (b, plane) in planes.iter_mut().enumerate() {
                let mut word = 0u32;
                for (j, &v) in chunk.iter().enumerate() {
                    let shifted = (i64::from(v) - min) as u64;
                    word |= ((shifted >> b) as u32 & 1) << j;
                }
                plane[w] = word;
            }
        }
        Self {
            dim,
            offset: if dim == 0 { 0 } else { min },
            planes,
            zeros: vec![0; n],
        }
    }

    /// The dimension `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// `minᵢ uᵢ`.
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The planes `P_b`, least significant first (`⌈D / 32⌉` words each, padding zero).
    pub fn planes(&self) -> &[Vec<u32>] {
        &self.planes
    }

    /// An all-zero plane (the `−1` operand when a plane is read as a ternary vector).
    pub(crate) fn zeros(&self) -> &[u32] {
        &self.zeros
    }

    /// Component `i`, rebuilt from the planes (`None` past `D`).
    pub fn get(&self, i: usize) -> Option<i64> {
        (i < self.dim).then(|| {
            let (w, b) = (i / 32, i % 32);
            self.planes
                .iter()
                .enumerate()
                .fold(self.offset, |acc, (k, p)| acc + (i64::from(p[w] >> b & 1) << k))
        })
    }

    /// `⟨u, v⟩ = Σ uᵢ vᵢ` for a binary or ternary hypervector `v`, by `B` popcount passes.
    pub fn dot<V: crate::Hypervector>(&self, v: &V) -> Result<i64> {
        crate::sealed::Sealed::dot_sliced(v, self, v.sum())
    }
}
