//! Count bundles: the sum of ±1 (or ternary) vectors in integer accumulators.
//!
//! `C = Σⱼ wⱼ·x̂ⱼ ∈ ℤᴰ` keeps every vote; it can be read out as counts, as a binary majority
//! (`sign(Cᵢ)`, ties broken by a seeded random bit) or as a ternary vector (`+1` if `Cᵢ > θ`,
//! `−1` if `Cᵢ < −θ`, else `0`). Thresholding throws away the magnitudes: for `k` random items
//! the signal of one item in `C` is `D` against noise `√(D·k)` (SNR `√(D/k)`), in the majority
//! vector only `≈ √(2D/(πk))`. See `docs/vsa.md` and [`capacity`].
//!
//! A bundle may carry a [`CapacityLimit`]: adding past it is rejected
//! ([`OnExceed::Error`]) or flagged in the returned [`Load`] ([`OnExceed::Flag`]) — never
//! silent.

use crate::Hypervector;
use crate::binary::BinaryHv;
use crate::capacity::{self, CapacityModel};
use crate::error::{Result, VsaError, check_dim, same_dim};
use crate::sliced::SlicedCounts;
use crate::ternary::TernaryHv;
use crate::words::{rotation_amount, words_for};

/// What to do when a capped bundle is asked to hold more items than its cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnExceed {
    /// Reject the addition with [`VsaError::CapacityExceeded`]; the bundle is unchanged.
    Error,
    /// Perform the addition and return [`Load::OverCap`].
    Flag,
}

/// A cap on the number of items in a bundle.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CapacityLimit {
    /// The largest number of items allowed.
    pub max_items: usize,
    /// Behaviour past `max_items`.
    pub on_exceed: OnExceed,
}

impl CapacityLimit {
    /// The largest `k` whose expected one-shot retrieval accuracy (codebook of `codebook_size`
    /// items, dimension `dim`) is at least `target`, from [`capacity::max_items`].
    pub fn for_target(
        model: CapacityModel,
        dim: usize,
        codebook_size: usize,
        target: f64,
        on_exceed: OnExceed,
    ) -> Result<Self> {
        let max_items = capacity::max_items(model, dim, codebook_size, target)?;
        Ok(Self {
            max_items,
            on_exceed,
        })
    }
}

/// The state of a bundle after an addition. Marked `#[must_use]` so that a flagged overload is
/// not dropped silently.
#[must_use]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Load {
    /// Within the cap (or no cap); `items` are now bundled.
    Within {
        /// Items now in the bundle.
        items: usize,
    },
    /// Past the cap: the expected accuracy is below the target the cap was made for.
    OverCap {
        /// Items now in the bundle.
        items: usize,
        /// The cap.
        cap: usize,
    },
}

impl Load {
    /// Whether the bundle is past its cap.
    pub fn is_over_cap(&self) -> bool {
        matches!(self, Load::OverCap { .. })
    }
}

/// A `D`-dimensional count bundle: `i32` accumulators `Cᵢ = Σⱼ wⱼ·xⱼ,ᵢ`.
///
/// The bundle tracks an upper bound on `maxᵢ |Cᵢ|` (each addition raises it by at most `1`) and
/// refuses any operation that could take a count past `±i32::MAX`, so the counts never overflow.
#[derive(Debug, Clone, PartialEq)]
pub struct CountBundle {
    dim: usize,
    sums: Vec<i32>,
    added: usize,
    removed: usize,
    /// Upper bound on `maxᵢ |Cᵢ|`, at most `i32::MAX`.
    bound: u64,
    limit: Option<CapacityLimit>,
}

impl CountBundle {
    /// An empty bundle (all counts zero), uncapped.
    pub fn new(dim: usize) -> Result<Self> {
        check_dim(dim)?;
        Ok(Self {
            dim,
            sums: vec![0; dim],
            added: 0,
            removed: 0,
            bound: 0,
            limit: None,
        })
    }

    /// An empty bundle with a cap on the number of items.
    pub fn with_limit(dim: usize, limit: CapacityLimit) -> Result<Self> {
        let mut b = Self::new(dim)?;
        b.limit = Some(limit);
        Ok(b)
    }

    /// A bundle from raw counts that stand for `items` bundled vectors (`D = sums.len() ≥ 1`;
    /// `i32::MIN` is rejected because its negation, needed by [`bind`](Self::bind), overflows).
    pub fn from_sums(sums: Vec<i32>, items: usize) -> Result<Self> {
        check_dim(sums.len())?;
        if let Some(i) = sums.iter().position(|&c| c == i32::MIN) {
            return Err(VsaError::invalid(format!(
                "count {i} is i32::MIN; counts must lie in [-i32::MAX, i32::MAX]"
            )));
        }
        let bound = sums
            .iter()
            .map(|c| u64::from(c.unsigned_abs()))
            .max()
            .unwrap_or(0);
        Ok(Self {
            dim: sums.len(),
            sums,
            added: items,
            removed: 0,
            bound,
            limit: None,
        })
    }

    /// Sets or clears the cap (does not check the current load; see [`load`](Self::load)).
    pub fn set_limit(&mut self, limit: Option<CapacityLimit>) {
        self.limit = limit;
    }

    /// The cap, if any.
    pub fn limit(&self) -> Option<CapacityLimit> {
        self.limit
    }

    /// The dimension `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The counts `Cᵢ`.
    pub fn sums(&self) -> &[i32] {
        &self.sums
    }

    /// Net number of bundled items: additions minus subtractions (not below zero).
    pub fn items(&self) -> usize {
        self.added.saturating_sub(self.removed)
    }

    /// The current [`Load`] against the cap.
    pub fn load(&self) -> Load {
        let items = self.items();
        match self.limit {
            Some(l) if items > l.max_items => Load::OverCap {
                items,
                cap: l.max_items,
            },
            _ => Load::Within { items },
        }
    }

    /// Errors if raising the count bound by `by` could overflow `i32`.
    fn check_headroom(&self, by: u64) -> Result<()> {
        if self.bound + by > i32::MAX as u64 {
            return Err(VsaError::invalid(
                "count bundle: a count could exceed i32::MAX in magnitude",
            ));
        }
        Ok(())
    }

    /// Adds one item: `C ← C + x̂`. Past a cap: an error ([`OnExceed::Error`], bundle
    /// unchanged) or [`Load::OverCap`] ([`OnExceed::Flag`]).
    pub fn add<V: Hypervector>(&mut self, v: &V) -> Result<Load> {
        same_dim(self.dim, v.dim())?;
        self.check_headroom(1)?;
        if let Some(l) = self.limit
            && l.on_exceed == OnExceed::Error
            && self.items() + 1 > l.max_items
        {
            return Err(VsaError::CapacityExceeded {
                items: self.items() + 1,
                cap: l.max_items,
            });
        }
        v.accumulate(&mut self.sums, false);
        self.added += 1;
        self.bound += 1;
        Ok(self.load())
    }

    /// Adds every item of `items` in order (stops at the first error).
    pub fn add_all<'a, V: Hypervector + 'a>(
        &mut self,
        items: impl IntoIterator<Item = &'a V>,
    ) -> Result<Load> {
        let mut load = self.load();
        for v in items {
            load = self.add(v)?;
        }
        Ok(load)
    }

    /// Adds all `items` at once (for binary vectors by bit-sliced carry-save counters, several
    /// times faster than one [`add`](Self::add) per item). Same result and cap rules as adding
    /// them one by one, except that a strict cap is checked before anything is added.
    pub fn add_many<V: Hypervector>(&mut self, items: &[V]) -> Result<Load> {
        for v in items {
            same_dim(self.dim, v.dim())?;
        }
        let n = items.len();
        self.check_headroom(n as u64)?;
        if let Some(l) = self.limit
            && l.on_exceed == OnExceed::Error
            && self.items() + n > l.max_items
        {
            return Err(VsaError::CapacityExceeded {
                items: self.items() + n,
                cap: l.max_items,
            });
        }
        V::accumulate_many(items, &mut self.sums, false);
        self.added += n;
        self.bound += n as u64;
        Ok(self.load())
    }

    /// Removes one item's votes: `C ← C − x̂` (explaining away). Never exceeds a cap.
    pub fn subtract<V: Hypervector>(&mut self, v: &V) -> Result<Load> {
        same_dim(self.dim, v.dim())?;
        self.check_headroom(1)?;
        v.accumulate(&mut self.sums, true);
        self.removed += 1;
        self.bound += 1;
        Ok(self.load())
    }

    /// The sum of two bundles (`items` add up; the cap of `self` applies).
    pub fn merge(&mut self, other: &CountBundle) -> Result<Load> {
        same_dim(self.dim, other.dim)?;
        self.check_headroom(other.bound)?;
        if let Some(l) = self.limit
            && l.on_exceed == OnExceed::Error
            && self.items() + other.items() > l.max_items
        {
            return Err(VsaError::CapacityExceeded {
                items: self.items() + other.items(),
                cap: l.max_items,
            });
        }
        for (a, b) in self.sums.iter_mut().zip(&other.sums) {
            *a += b;
        }
        self.added += other.added;
        self.removed += other.removed;
        self.bound += other.bound;
        Ok(self.load())
    }

    /// Binds every bundled item with `key` at once: `bind(key, Σ x̂ⱼ) = Σ bind(key, x̂ⱼ)`.
    ///
    /// For a binary key this negates `Cᵢ` where the key bit is `1` (XOR flips the bit); for a
    /// ternary key it multiplies `Cᵢ` by the trit. The result is uncapped.
    pub fn bind<V: Hypervector>(&self, key: &V) -> Result<CountBundle> {
        same_dim(self.dim, key.dim())?;
        let mut out = self.clone();
        out.limit = None;
        key.bind_counts(&mut out.sums);
        Ok(out)
    }

    /// Cyclic permutation of the counts: `Cᵢ` moves to `(i + k) mod D`.
    pub fn permute(&self, k: isize) -> CountBundle {
        let mut out = self.clone();
        out.sums.rotate_right(rotation_amount(self.dim, k));
        out
    }

    /// `⟨C, v⟩ = Σ Cᵢ vᵢ` computed directly (`i64` multiply-adds).
    pub fn dot<V: Hypervector>(&self, v: &V) -> Result<i64> {
        same_dim(self.dim, v.dim())?;
        Ok(self
            .sums
            .iter()
            .enumerate()
            .map(|(i, &c)| i64::from(c) * i64::from(v.value(i).unwrap_or(0)))
            .sum())
    }

    /// The bit-sliced form of the counts, for fast exact dots against many vectors.
    pub fn sliced(&self) -> SlicedCounts {
        SlicedCounts::slice(&self.sums)
    }

    /// Binary majority readout: bit `i` is `Cᵢ > 0`; ties `Cᵢ = 0` take bit `i` of
    /// [`BinaryHv::random(D, tie_seed)`](BinaryHv::random), so they are reproducible.
    pub fn majority(&self, tie_seed: u64) -> BinaryHv {
        let mut words = vec![0u32; words_for(self.dim)];
        let ties = crate::binary::random_words(self.dim, tie_seed);
        for (w, (chunk, &tie)) in words.iter_mut().zip(self.sums.chunks(32).zip(&ties)) {
            let mut pos = 0u32;
            let mut zero = 0u32;
            for (j, &c) in chunk.iter().enumerate() {
                pos |= u32::from(c > 0) << j;
                zero |= u32::from(c == 0) << j;
            }
            *w = pos | (zero & tie);
        }
        BinaryHv::from_valid_words(self.dim, words)
    }

    /// Ternary readout with threshold `θ`: `+1` if `Cᵢ > θ`, `−1` if `Cᵢ < −θ`, else `0`.
    pub fn threshold(&self, theta: u32) -> TernaryHv {
        let n = words_for(self.dim);
        let (mut plus, mut minus) = (vec![0u32; n], vec![0u32; n]);
        let t = i64::from(theta);
        for (w, chunk) in self.sums.chunks(32).enumerate() {
            let (mut p, mut m) = (0u32, 0u32);
            for (j, &c) in chunk.iter().enumerate() {
                p |= u32::from(i64::from(c) > t) << j;
                m |= u32::from(i64::from(c) < -t) << j;
            }
            plus[w] = p;
            minus[w] = m;
        }
        TernaryHv::from_valid_planes(self.dim, plus, minus)
    }
}
