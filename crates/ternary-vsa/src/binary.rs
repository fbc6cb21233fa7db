//! Binary (BSC) hypervectors: one bit-plane, bind = XOR, similarity = `D − 2·Hamming`.
//!
//! Bit `1` stands for `+1` and bit `0` for `−1`, as in `ternary_core::kernels::binary_dot`.
//! Under that map XOR is the *negated* product, `(a ⊕ b)^ = −â·b̂`; the sign is global and
//! cancels when a key is bound twice, so XOR is the bind of the binary spatter code.

use ternary_core::kernels;

use crate::bundle::CountBundle;
use crate::error::{Result, VsaError, check_dim, same_dim};
use crate::sliced::SlicedCounts;
use crate::ternary::TernaryHv;
use crate::words::{
    BIPOLAR, BIT_MASK, clear_padding, padding_violation, rotate, words_for, zip_bytes,
};
use crate::{Hypervector, sealed};
use ternary_core::rng::Rng;

/// A `D`-dimensional binary hypervector on `⌈D / 32⌉` `u32` words; padding bits are zero.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BinaryHv {
    dim: usize,
    words: Vec<u32>,
}

impl BinaryHv {
    /// The all-zero vector (every component `−1`).
    pub fn zeros(dim: usize) -> Result<Self> {
        check_dim(dim)?;
        Ok(Self {
            dim,
            words: vec![0; words_for(dim)],
        })
    }

    /// The all-one vector (every component `+1`).
    pub fn ones(dim: usize) -> Result<Self> {
        check_dim(dim)?;
        let mut words = vec![u32::MAX; words_for(dim)];
        clear_padding(&mut words, dim);
        Ok(Self { dim, words })
    }

    /// A uniformly random vector from `seed`: the words are the successive [`Rng`] outputs
    /// (low half first), the padding cleared. Same seed, same vector, on every platform.
    pub fn random(dim: usize, seed: u64) -> Result<Self> {
        check_dim(dim)?;
        Ok(Self {
            dim,
            words: random_words(dim, seed),
        })
    }

    /// Words already known to be valid (crate-internal).
    pub(crate) fn from_valid_words(dim: usize, words: Vec<u32>) -> Self {
        debug_assert_eq!(words.len(), words_for(dim));
        debug_assert!(padding_violation(&words, dim).is_none());
        Self { dim, words }
    }

    /// From the plane words; [`VsaError::InvalidPlanes`] if the length is not `⌈D / 32⌉` or a
    /// padding bit is set.
    pub fn from_words(dim: usize, words: Vec<u32>) -> Result<Self> {
        check_dim(dim)?;
        if words.len() != words_for(dim) {
            return Err(VsaError::InvalidPlanes(format!(
                "D = {dim} needs {} words, got {}",
                words_for(dim),
                words.len()
            )));
        }
        if let Some(w) = padding_violation(&words, dim) {
            return Err(VsaError::InvalidPlanes(format!(
                "padding bit set in word {w} (D = {dim})"
            )));
        }
        Ok(Self { dim, words })
    }

    /// From one `bool` per component (`true` = `+1`); `D = bits.len() ≥ 1`.
    pub fn from_bits(bits: &[bool]) -> Result<Self> {
        let mut v = Self::zeros(bits.len())?;
        for (i, &b) in bits.iter().enumerate() {
            v.words[i / 32] |= u32::from(b) << (i % 32);
        }
        Ok(v)
    }

    /// The dimension `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The plane words (`⌈D / 32⌉`, padding zero).
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// Bit `i` (`true` = `+1`), or `None` past `D`.
    pub fn get(&self, i: usize) -> Option<bool> {
        (i < self.dim).then(|| self.words[i / 32] >> (i % 32) & 1 == 1)
    }

    /// Sets bit `i`; [`VsaError::InvalidArgument`] past `D`.
    pub fn set(&mut self, i: usize, bit: bool) -> Result<()> {
        if i >= self.dim {
            return Err(VsaError::invalid(format!(
                "index {i} out of bounds for D = {}",
                self.dim
            )));
        }
        let m = 1u32 << (i % 32);
        if bit {
            self.words[i / 32] |= m;
        } else {
            self.words[i / 32] &= !m;
        }
        Ok(())
    }

    /// The bits as `bool`s (`true` = `+1`).
    pub fn to_bits(&self) -> Vec<bool> {
        (0..self.dim)
            .map(|i| self.words[i / 32] >> (i % 32) & 1 == 1)
            .collect()
    }

    /// Bind `a ⊕ b` (XOR; self-inverse: `(a ⊕ b) ⊕ b = a`).
    pub fn bind(&self, other: &Self) -> Result<Self> {
        let mut out = self.clone();
        out.bind_assign(other)?;
        Ok(out)
    }

    /// In-place bind `self ← self ⊕ other`.
    pub fn bind_assign(&mut self, other: &Self) -> Result<()> {
        same_dim(self.dim, other.dim)?;
        for (a, b) in self.words.iter_mut().zip(&other.words) {
            *a ^= b;
        }
        Ok(())
    }

    /// Cyclic permutation `ρᵏ`: component `i` moves to `(i + k) mod D` (any integer `k`;
    /// `permute(-k)` is the inverse).
    pub fn permute(&self, k: isize) -> Self {
        Self {
            dim: self.dim,
            words: rotate(&self.words, self.dim, k),
        }
    }

    /// The inverse permutation `ρ⁻ᵏ` (`permute(k).inverse_permute(k) == self`).
    pub fn inverse_permute(&self, k: isize) -> Self {
        self.permute(k.wrapping_neg())
    }

    /// Hamming distance `popc(a ⊕ b)`.
    pub fn hamming(&self, other: &Self) -> Result<u64> {
        let dot = self.dot(other)?;
        // dot = D − 2·H, so H = (D − dot) / 2 ≥ 0.
        Ok(((self.dim as i64 - dot) / 2) as u64)
    }

    /// Similarity `⟨a, b⟩ = Σ âᵢ b̂ᵢ = D − 2·popc(a ⊕ b)` (SIMD popcount from `ternary-core`).
    pub fn dot(&self, other: &Self) -> Result<i64> {
        same_dim(self.dim, other.dim)?;
        Ok(kernels::binary_dot(&self.words, &other.words, self.dim)?)
    }

    /// Cosine similarity `⟨a, b⟩ / D` in `[−1, 1]`.
    pub fn cosine(&self, other: &Self) -> Result<f64> {
        Ok(self.dot(other)? as f64 / self.dim as f64)
    }

    /// Number of `+1` components.
    pub fn count_ones(&self) -> u64 {
        self.words.iter().map(|w| u64::from(w.count_ones())).sum()
    }

    /// The same vector as a dense bipolar [`TernaryHv`] (`+` plane = bits, `−` plane = the rest).
    pub fn to_bipolar(&self) -> TernaryHv {
        let mut minus: Vec<u32> = self.words.iter().map(|w| !w).collect();
        clear_padding(&mut minus, self.dim);
        TernaryHv::from_valid_planes(self.dim, self.words.clone(), minus)
    }
}

impl Hypervector for BinaryHv {
    fn dim(&self) -> usize {
        self.dim
    }

    fn value(&self, i: usize) -> Option<i8> {
        self.get(i).map(|b| if b { 1 } else { -1 })
    }

    fn dot(&self, other: &Self) -> Result<i64> {
        BinaryHv::dot(self, other)
    }

    fn bind(&self, other: &Self) -> Result<Self> {
        BinaryHv::bind(self, other)
    }

    fn permute(&self, k: isize) -> Self {
        BinaryHv::permute(self, k)
    }

    fn sum(&self) -> i64 {
        2 * self.count_ones() as i64 - self.dim as i64
    }
}

impl sealed::Sealed for BinaryHv {
    fn accumulate(&self, sums: &mut [i32], subtract: bool) {
        // sums += ±(2b − 1), 8 lanes per table row.
        if subtract {
            zip_bytes(&self.words, &self.words, sums, |l, b, _| {
                for (s, t) in l.iter_mut().zip(&BIPOLAR[b as usize]) {
                    *s -= t;
                }
            });
        } else {
            zip_bytes(&self.words, &self.words, sums, |l, b, _| {
                for (s, t) in l.iter_mut().zip(&BIPOLAR[b as usize]) {
                    *s += t;
                }
            });
        }
    }

    fn accumulate_many(items: &[Self], sums: &mut [i32], subtract: bool) {
        // Below one carry-save group the per-vector tables are as fast.
        if items.len() < 8 {
            for v in items {
                v.accumulate(sums, subtract);
            }
        } else {
            crate::vertical::add_binary_bulk(items, sums, subtract);
        }
    }

    fn bind_counts(&self, sums: &mut [i32]) {
        // XOR with a bit 1 flips the bit, i.e. negates its ±1 value: s ← (s ⊕ m) − m.
        zip_bytes(&self.words, &self.words, sums, |l, b, _| {
            for (s, m) in l.iter_mut().zip(&BIT_MASK[b as usize]) {
                *s = (*s ^ m) - m;
            }
        });
    }

    fn unbind_query(&self, counts: &CountBundle, sliced: &SlicedCounts) -> Result<SlicedCounts> {
        same_dim(counts.dim(), self.dim)?;
        sliced.bind(self)
    }

    fn dot_sliced(&self, counts: &SlicedCounts, sum: i64) -> Result<i64> {
        same_dim(counts.dim(), self.dim)?;
        counts.dot_binary(&self.words, sum)
    }
}

/// The words of [`BinaryHv::random`]: successive [`Rng`] outputs, low half first, padding
/// cleared.
pub(crate) fn random_words(dim: usize, seed: u64) -> Vec<u32> {
    let mut rng = Rng::new(seed);
    let mut words = vec![0u32; words_for(dim)];
    for pair in words.chunks_mut(2) {
        let r = rng.next_u64();
        pair[0] = r as u32;
        if let Some(hi) = pair.get_mut(1) {
            *hi = (r >> 32) as u32;
        }
    }
    clear_padding(&mut words, dim);
    words
}
