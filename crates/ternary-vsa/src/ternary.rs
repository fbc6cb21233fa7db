//! Ternary / bipolar hypervectors on two bit-planes (the MAP model with optional zeros).
//!
//! Component `i` is `+1` if bit `i` of `plus` is set, `−1` if bit `i` of `minus` is set, `0`
//! otherwise; `plus & minus == 0` and the padding is zero (checked on construction).
//! Bind is the elementwise product by plane logic:
//! `p = a⁺b⁺ | a⁻b⁻`, `m = a⁺b⁻ | a⁻b⁺`; similarity is the popcount dot
//! `popc(a⁺b⁺) + popc(a⁻b⁻) − popc(a⁺b⁻) − popc(a⁻b⁺)` (`ternary_core::kernels::ternary_dot`).

use ternary_core::kernels;

use crate::bundle::CountBundle;
use crate::error::{Result, VsaError, check_dim, same_dim};
use crate::sliced::SlicedCounts;
use crate::words::{BIT_MASK, padding_violation, rotate, words_for, zip_bytes};
use crate::{Hypervector, sealed};
use ternary_core::rng::Rng;

/// A `D`-dimensional ternary hypervector: `+1`/`−1` planes of `⌈D / 32⌉` words each.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TernaryHv {
    dim: usize,
    plus: Vec<u32>,
    minus: Vec<u32>,
}

impl TernaryHv {
    /// Planes already known to be valid (crate-internal).
    pub(crate) fn from_valid_planes(dim: usize, plus: Vec<u32>, minus: Vec<u32>) -> Self {
        debug_assert_eq!(plus.len(), words_for(dim));
        debug_assert_eq!(minus.len(), words_for(dim));
        Self { dim, plus, minus }
    }

    /// The all-zero vector.
    pub fn zeros(dim: usize) -> Result<Self> {
        check_dim(dim)?;
        let n = words_for(dim);
        Ok(Self::from_valid_planes(dim, vec![0; n], vec![0; n]))
    }

    /// From the two planes; [`VsaError::InvalidPlanes`] on a wrong length, a padding bit, or a
    /// component with both bits set.
    pub fn from_planes(dim: usize, plus: Vec<u32>, minus: Vec<u32>) -> Result<Self> {
        check_dim(dim)?;
        let n = words_for(dim);
        if plus.len() != n || minus.len() != n {
            return Err(VsaError::InvalidPlanes(format!(
                "D = {dim} needs {n} words per plane, got {} and {}",
                plus.len(),
                minus.len()
            )));
        }
        if let Some(w) = padding_violation(&plus, dim).or(padding_violation(&minus, dim)) {
            return Err(VsaError::InvalidPlanes(format!(
                "padding bit set in word {w} (D = {dim})"
            )));
        }
        if let Some(w) = plus.iter().zip(&minus).position(|(p, m)| p & m != 0) {
            let bit = (plus[w] & minus[w]).trailing_zeros() as usize;
            return Err(VsaError::InvalidPlanes(format!(
                "component {} has both the +1 and the -1 bit set",
                w * 32 + bit
            )));
        }
        Ok(Self::from_valid_planes(dim, plus, minus))
    }

    /// From one trit per component; [`VsaError::InvalidArgument`] for a value outside
    /// `{−1, 0, 1}`. `D = trits.len() ≥ 1`.
    pub fn from_trits(trits: &[i8]) -> Result<Self> {
        let mut v = Self::zeros(trits.len())?;
        for (i, &t) in trits.iter().enumerate() {
            v.set(i, t)?;
        }
        Ok(v)
    }

    /// A random dense bipolar vector (every component `±1`): `plus` = [`Rng`] words from
    /// `seed` (as [`BinaryHv::random`](crate::BinaryHv::random)), `minus` = the complement.
    pub fn random_bipolar(dim: usize, seed: u64) -> Result<Self> {
        Ok(crate::BinaryHv::random(dim, seed)?.to_bipolar())
    }

    /// A random sparse ternary vector: component `i` is non-zero with probability `density`
    /// (`u32` threshold `⌊density · 2³²⌋` on the high half of one `u64` draw per component),
    /// with a fair sign (its low bit). `density ∈ [0, 1]`.
    pub fn random_sparse(dim: usize, density: f64, seed: u64) -> Result<Self> {
        if !(0.0..=1.0).contains(&density) {
            return Err(VsaError::invalid(format!(
                "density must be in [0, 1], got {density}"
            )));
        }
        let mut v = Self::zeros(dim)?;
        let threshold = (density * 4_294_967_296.0) as u64; // 2³² for density = 1.
        let mut rng = Rng::new(seed);
        for i in 0..dim {
            let r = rng.next_u64();
            if (r >> 32) < threshold {
                let bit = 1u32 << (i % 32);
                if r & 1 == 1 {
                    v.plus[i / 32] |= bit;
                } else {
                    v.minus[i / 32] |= bit;
                }
            }
        }
        Ok(v)
    }

    /// The dimension `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The `+1` plane.
    pub fn plus(&self) -> &[u32] {
        &self.plus
    }

    /// The `−1` plane.
    pub fn minus(&self) -> &[u32] {
        &self.minus
    }

    /// Component `i` in `{−1, 0, 1}`, or `None` past `D`.
    pub fn get(&self, i: usize) -> Option<i8> {
        (i < self.dim).then(|| {
            let (w, b) = (i / 32, i % 32);
            (self.plus[w] >> b & 1) as i8 - (self.minus[w] >> b & 1) as i8
        })
    }

    /// Sets component `i` to `t ∈ {−1, 0, 1}`.
    pub fn set(&mut self, i: usize, t: i8) -> Result<()> {
        if i >= self.dim {
            return Err(VsaError::invalid(format!(
                "index {i} out of bounds for D = {}",
                self.dim
            )));
        }
        if !(-1..=1).contains(&t) {
            return Err(VsaError::invalid(format!(
                "invalid trit {t} at component {i}: must be -1, 0 or 1"
            )));
        }
        let (w, m) = (i / 32, 1u32 << (i % 32));
        self.plus[w] &= !m;
        self.minus[w] &= !m;
        match t {
            1 => self.plus[w] |= m,
            -1 => self.minus[w] |= m,
            _ => {}
        }
        Ok(())
    }

    /// The components as trits.
    pub fn to_trits(&self) -> Vec<i8> {
        (0..self.dim).filter_map(|i| self.get(i)).collect()
    }

    /// Bind = elementwise product: `p = a⁺b⁺ | a⁻b⁻`, `m = a⁺b⁻ | a⁻b⁺`. Self-inverse on the
    /// support of `b`: `(a ⊙ b) ⊙ b = a ⊙ |b|` (exactly `a` for bipolar `b`).
    pub fn bind(&self, other: &Self) -> Result<Self> {
        same_dim(self.dim, other.dim)?;
        let (ap, am, bp, bm) = (&self.plus, &self.minus, &other.plus, &other.minus);
        // Two straight passes (each vectorises): p = a⁺b⁺ | a⁻b⁻, m = a⁺b⁻ | a⁻b⁺.
        let plus: Vec<u32> = (ap.iter().zip(bp))
            .zip(am.iter().zip(bm))
            .map(|((&ap, &bp), (&am, &bm))| (ap & bp) | (am & bm))
            .collect();
        let minus: Vec<u32> = (ap.iter().zip(bm))
            .zip(am.iter().zip(bp))
            .map(|((&ap, &bm), (&am, &bp))| (ap & bm) | (am & bp))
            .collect();
        Ok(Self::from_valid_planes(self.dim, plus, minus))
    }

    /// Cyclic permutation `ρᵏ` of both planes: component `i` moves to `(i + k) mod D`.
    pub fn permute(&self, k: isize) -> Self {
        Self::from_valid_planes(
            self.dim,
            rotate(&self.plus, self.dim, k),
            rotate(&self.minus, self.dim, k),
        )
    }

    /// The inverse permutation `ρ⁻ᵏ`.
    pub fn inverse_permute(&self, k: isize) -> Self {
        self.permute(k.wrapping_neg())
    }

    /// Similarity `⟨a, b⟩ = Σ aᵢbᵢ` by popcounts (SIMD kernel from `ternary-core`).
    pub fn dot(&self, other: &Self) -> Result<i64> {
        same_dim(self.dim, other.dim)?;
        Ok(kernels::ternary_dot(
            &self.plus,
            &self.minus,
            &other.plus,
            &other.minus,
        )?)
    }

    /// Number of non-zero components `‖a‖²`.
    pub fn nnz(&self) -> u64 {
        self.plus
            .iter()
            .zip(&self.minus)
            .map(|(p, m)| u64::from((p | m).count_ones()))
            .sum()
    }

    /// Cosine similarity `⟨a, b⟩ / √(nnz(a)·nnz(b))` (`0` if either vector is zero).
    pub fn cosine(&self, other: &Self) -> Result<f64> {
        let dot = self.dot(other)?;
        let norm = (self.nnz() as f64 * other.nnz() as f64).sqrt();
        Ok(if norm == 0.0 { 0.0 } else { dot as f64 / norm })
    }
}

impl Hypervector for TernaryHv {
    fn dim(&self) -> usize {
        self.dim
    }

    fn value(&self, i: usize) -> Option<i8> {
        self.get(i)
    }

    fn dot(&self, other: &Self) -> Result<i64> {
        TernaryHv::dot(self, other)
    }

    fn bind(&self, other: &Self) -> Result<Self> {
        TernaryHv::bind(self, other)
    }

    fn permute(&self, k: isize) -> Self {
        TernaryHv::permute(self, k)
    }

    fn sum(&self) -> i64 {
        let p: u64 = self.plus.iter().map(|w| u64::from(w.count_ones())).sum();
        let m: u64 = self.minus.iter().map(|w| u64::from(w.count_ones())).sum();
        p as i64 - m as i64
    }
}

impl sealed::Sealed for TernaryHv {
    fn accumulate(&self, sums: &mut [i32], subtract: bool) {
        // t = [p] − [m] = mask(m) − mask(p) with masks of 0 / −1.
        // Subtracting adds −t = mask(p) − mask(m): swap the planes.
        let (p_plane, m_plane) = if subtract {
            (&self.minus, &self.plus)
        } else {
            (&self.plus, &self.minus)
        };
        zip_bytes(p_plane, m_plane, sums, |l, p, m| {
            let (mp, mm) = (&BIT_MASK[p as usize], &BIT_MASK[m as usize]);
            for ((s, a), b) in l.iter_mut().zip(mp).zip(mm) {
                *s += b - a;
            }
        });
    }

    fn bind_counts(&self, sums: &mut [i32]) {
        // s ← s·t: negate where t = −1, then zero where t = 0.
        zip_bytes(&self.plus, &self.minus, sums, |l, p, m| {
            let (mp, mm) = (&BIT_MASK[p as usize], &BIT_MASK[m as usize]);
            for ((s, a), b) in l.iter_mut().zip(mp).zip(mm) {
                *s = ((*s ^ b) - b) & (a | b);
            }
        });
    }

    fn unbind_query(&self, counts: &CountBundle, _sliced: &SlicedCounts) -> Result<SlicedCounts> {
        // A ternary key zeroes components, which the sliced form cannot express by a sign
        // plane: unbind the counts and slice them afresh.
        Ok(SlicedCounts::slice(counts.bind(self)?.sums()))
    }

    fn dot_sliced(&self, counts: &SlicedCounts, sum: i64) -> Result<i64> {
        same_dim(counts.dim(), self.dim)?;
        counts.dot_ternary(&self.plus, &self.minus, sum)
    }
}
