//! Bit-sliced integer vectors, so that a count vector can be compared with binary or ternary
//! hypervectors by popcounts instead of multiply-adds.
//!
//! A vector `u ∈ ℤᴰ` is stored as `uᵢ = σᵢ·(offset + Σ_{b<B} 2^b · P_b[i])` with 0/1 planes
//! `P_b`, `B = ⌈log₂(max − min + 1)⌉`, and signs `σᵢ = ±1` from an optional sign plane `s`
//! (`σᵢ = −1` where `sᵢ = 1`). Slicing a count vector gives `σ = +1` and `offset = min u`;
//! [`SlicedCounts::bind`] with a binary key XORs the key into `s`, which is exactly the count
//! bind (negate where the key bit is `1`) — no re-slicing per query.
//!
//! For a binary `c` (values `ĉ = ±1`) let `z = c ⊕ s` (so `ẑᵢ = σᵢĉᵢ`) and `S = Σ ẑᵢ`. Then
//!
//! `⟨u, ĉ⟩ = offset·S + Σ_b 2^b · (⟨P̂_b, ẑ⟩ + S) / 2`,
//!
//! with `⟨P̂_b, ẑ⟩ = D − 2·popc(P_b ⊕ s ⊕ c)` (one `binary_dot` against the pre-XORed plane)
//! and `S = ⟨(¬s)^, ĉ⟩` (one more, or `Σ ĉ` when there is no sign plane). For a ternary `t`,
//! `⟨u, t⟩ = offset·⟨σ, t⟩ + Σ_b 2^b · ternary_dot(P_b ∧ ¬s, P_b ∧ s; t⁺, t⁻)`. The cost is
//! `B` (+1) popcount passes — about 8–10 for a bundle of a few hundred items — and the result is
//! exact.

use std::sync::OnceLock;

use ternary_core::kernels;

use crate::binary::BinaryHv;
use crate::error::{Result, check_dim, same_dim};
use crate::words::{clear_padding, transpose32, words_for};

/// Sign plane and the planes derived from it.
#[derive(Debug, Clone)]
struct Signs {
    /// `s`: bit `1` = component negated.
    sign: Vec<u32>,
    /// `¬s` (padding cleared).
    not_sign: Vec<u32>,
    /// `P_b ⊕ s`, for binary dots.
    flipped: Vec<Vec<u32>>,
    /// `(P_b ∧ ¬s, P_b ∧ s)`, for ternary dots; made on first use.
    split: OnceLock<Vec<(Vec<u32>, Vec<u32>)>>,
}

/// An integer vector in bit-sliced form (see the module docs). Exact for any `i32` input.
#[derive(Debug, Clone)]
pub struct SlicedCounts {
    dim: usize,
    offset: i64,
    planes: Vec<Vec<u32>>,
    signs: Option<Signs>,
    zeros: Vec<u32>,
}

impl SlicedCounts {
    /// Slices `values` (`D = values.len() ≥ 1`; no signs).
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
        let min = if dim == 0 { 0 } else { min };
        let range = max.saturating_sub(min).max(0) as u64;
        let bits = (u64::BITS - range.leading_zeros()) as usize;
        let n = words_for(dim);
        let mut planes = vec![vec![0u32; n]; bits];
        for (w, chunk) in values.chunks(32).enumerate() {
            // Rows = the 32 offsets of this word, transposed into 32 bit-planes.
            let mut block = [0u32; 32];
            for (r, &v) in block.iter_mut().zip(chunk) {
                // 0 ≤ v − min ≤ 2³² − 1.
                *r = (i64::from(v) - min) as u32;
            }
            transpose32(&mut block);
            for (plane, &word) in planes.iter_mut().zip(&block) {
                plane[w] = word;
            }
        }
        Self {
            dim,
            offset: min,
            planes,
            signs: None,
            zeros: vec![0; n],
        }
    }

    /// The dimension `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The common offset (the minimum before any sign flips).
    pub fn offset(&self) -> i64 {
        self.offset
    }

    /// The magnitude planes `P_b`, least significant first (`⌈D / 32⌉` words, padding zero).
    pub fn planes(&self) -> &[Vec<u32>] {
        &self.planes
    }

    /// The sign plane `s`, if a key has been bound.
    pub fn sign(&self) -> Option<&[u32]> {
        self.signs.as_ref().map(|s| s.sign.as_slice())
    }

    /// Number of popcount passes of one dot with a binary vector (`B`, plus one with signs).
    pub fn passes(&self) -> usize {
        self.planes.len() + usize::from(self.signs.is_some())
    }

    /// Component `uᵢ`, rebuilt from the planes (`None` past `D`).
    pub fn get(&self, i: usize) -> Option<i64> {
        (i < self.dim).then(|| {
            let (w, b) = (i / 32, i % 32);
            let mag = self
                .planes
                .iter()
                .enumerate()
                .fold(self.offset, |acc, (k, p)| {
                    acc + (i64::from(p[w] >> b & 1) << k)
                });
            match &self.signs {
                Some(s) if s.sign[w] >> b & 1 == 1 => -mag,
                _ => mag,
            }
        })
    }

    /// The sliced form of `bind(key, u)`: `uᵢ` negated where the key bit is `1` (the binary
    /// count bind). Costs `O(B · D / 32)` word operations.
    pub fn bind(&self, key: &BinaryHv) -> Result<SlicedCounts> {
        same_dim(self.dim, key.dim())?;
        let sign: Vec<u32> = match &self.signs {
            Some(s) => s.sign.iter().zip(key.words()).map(|(a, b)| a ^ b).collect(),
            None => key.words().to_vec(),
        };
        let mut not_sign: Vec<u32> = sign.iter().map(|s| !s).collect();
        clear_padding(&mut not_sign, self.dim);
        let flipped = self
            .planes
            .iter()
            .map(|p| p.iter().zip(&sign).map(|(a, s)| a ^ s).collect())
            .collect();
        Ok(SlicedCounts {
            dim: self.dim,
            offset: self.offset,
            planes: self.planes.clone(),
            signs: Some(Signs {
                sign,
                not_sign,
                flipped,
                split: OnceLock::new(),
            }),
            zeros: self.zeros.clone(),
        })
    }

    /// `⟨u, v⟩ = Σ uᵢ vᵢ` for a binary or ternary hypervector `v`, by popcount passes.
    pub fn dot<V: crate::Hypervector>(&self, v: &V) -> Result<i64> {
        crate::sealed::Sealed::dot_sliced(v, self, v.sum())
    }

    /// `⟨u, ĉ⟩` for binary plane `c` with `sum_c = Σ ĉᵢ` (lengths checked by the caller).
    pub(crate) fn dot_binary(&self, c: &[u32], sum_c: i64) -> Result<i64> {
        let d = self.dim;
        match &self.signs {
            None => {
                let mut acc = self.offset * sum_c;
                for (b, plane) in self.planes.iter().enumerate() {
                    let dot = kernels::binary_dot(plane, c, d)?;
                    acc += ((dot + sum_c) / 2) << b;
                }
                Ok(acc)
            }
            Some(s) => {
                let sum_z = kernels::binary_dot(&s.not_sign, c, d)?;
                let mut acc = self.offset * sum_z;
                for (b, plane) in s.flipped.iter().enumerate() {
                    let dot = kernels::binary_dot(plane, c, d)?;
                    acc += ((dot + sum_z) / 2) << b;
                }
                Ok(acc)
            }
        }
    }

    /// `⟨u, t⟩` for ternary planes `(t⁺, t⁻)` with `sum_t = Σ tᵢ`.
    pub(crate) fn dot_ternary(&self, plus: &[u32], minus: &[u32], sum_t: i64) -> Result<i64> {
        match &self.signs {
            None => {
                let mut acc = self.offset * sum_t;
                for (b, plane) in self.planes.iter().enumerate() {
                    acc += kernels::ternary_dot(plane, &self.zeros, plus, minus)? << b;
                }
                Ok(acc)
            }
            Some(s) => {
                let split = s.split.get_or_init(|| {
                    self.planes
                        .iter()
                        .map(|p| {
                            let pos = p.iter().zip(&s.sign).map(|(a, s)| a & !s).collect();
                            let neg = p.iter().zip(&s.sign).map(|(a, s)| a & s).collect();
                            (pos, neg)
                        })
                        .collect()
                });
                let mut acc =
                    self.offset * kernels::ternary_dot(&s.not_sign, &s.sign, plus, minus)?;
                for (b, (pos, neg)) in split.iter().enumerate() {
                    acc += kernels::ternary_dot(pos, neg, plus, minus)? << b;
                }
                Ok(acc)
            }
        }
    }
}
