//! # ternary-vsa
//!
//! Vector-symbolic architectures (hyperdimensional computing) on the bit-planes of
//! `ternary-core`: `D`-dimensional binary and ternary hypervectors, stored as `⌈D / 32⌉` `u32`
//! words per plane, compared by the popcount kernels of `ternary_core::kernels`.
//!
//! | operation | binary ([`BinaryHv`], BSC) | ternary ([`TernaryHv`], MAP) |
//! |---|---|---|
//! | bind | `a ⊕ b` | `p = a⁺b⁺ \| a⁻b⁻`, `m = a⁺b⁻ \| a⁻b⁺` (product) |
//! | similarity | `D − 2·popc(a ⊕ b)` | `Σ aᵢbᵢ` by four popcounts |
//! | permute | cyclic rotation `ρᵏ`, any `D` | same, both planes |
//! | bundle | [`CountBundle`]: `i32` counts → majority / threshold | same |
//!
//! - [`CountBundle`]: integer accumulators; read out as counts or thresholded; optional
//!   [`CapacityLimit`] that is enforced or flagged, never silent.
//! - [`basis`]: seeded random, level and thermometer codebooks (bit-exact across platforms).
//! - [`ItemMemory`]: exact nearest neighbours / top-k over a codebook, batched, on rayon; count
//!   queries by bit-sliced popcounts ([`SlicedCounts`]).
//! - [`capacity`]: the Gaussian model `p = ∫φ(h)·Φ(s + ρh)^(M−1) dh` and caps on `k`.
//! - [`cleanup`]: one-shot decoding and iterative cleanup (explaining away).
//! - [`experiment`]: the seeded key–value capacity experiment used by the tests and benches.
//! - [`reference`](mod@reference): naive `Vec<i8>` oracles.
//!
//! Components are `±1` (bit `1` = `+1`) or `−1/0/+1`; padding bits past `D` are zero in every
//! vector this crate makes or accepts. The math is in `docs/vsa.md`.

pub mod basis;
pub mod binary;
pub mod bundle;
pub mod capacity;
pub mod cleanup;
pub mod error;
pub mod experiment;
pub mod memory;
pub mod reference;
pub mod sliced;
pub mod ternary;
mod vertical;
mod words;

pub use binary::BinaryHv;
pub use bundle::{CapacityLimit, CountBundle, Load, OnExceed};
pub use capacity::CapacityModel;
pub use cleanup::{Decoded, ExplainAway};
pub use error::{Result, VsaError};
pub use memory::{ItemMemory, Match};
pub use sliced::SlicedCounts;
pub use ternary::TernaryHv;

/// A hypervector model: [`BinaryHv`] or [`TernaryHv`] (sealed).
pub trait Hypervector: Clone + Send + Sync + std::fmt::Debug + sealed::Sealed {
    /// The dimension `D`.
    fn dim(&self) -> usize;
    /// Component `i` as `−1`, `0` or `+1` (`None` past `D`).
    fn value(&self, i: usize) -> Option<i8>;
    /// Similarity `⟨a, b⟩ = Σ aᵢbᵢ` (exact, by popcounts).
    fn dot(&self, other: &Self) -> Result<i64>;
    /// The model's bind (XOR for binary, elementwise product for ternary).
    fn bind(&self, other: &Self) -> Result<Self>;
    /// Cyclic permutation: component `i` moves to `(i + k) mod D`.
    fn permute(&self, k: isize) -> Self;
    /// `Σᵢ vᵢ`.
    fn sum(&self) -> i64;
}

pub(crate) mod sealed {
    use crate::bundle::CountBundle;
    use crate::sliced::SlicedCounts;

    /// The crate-internal operations of a [`Hypervector`](crate::Hypervector).
    pub trait Sealed {
        /// `sums[i] ± vᵢ` (`−` if `subtract`; `sums.len() == D`, checked by the caller).
        fn accumulate(&self, sums: &mut [i32], subtract: bool);
        /// `sums[i] ± Σⱼ items[j]ᵢ` for many items at once (the caller checked dimensions and
        /// headroom).
        fn accumulate_many(items: &[Self], sums: &mut [i32], subtract: bool)
        where
            Self: Sized,
        {
            for v in items {
                v.accumulate(sums, subtract);
            }
        }
        /// `sums[i] ← bind(vᵢ, sums[i])`: negate where a binary bit is 1, multiply by a trit.
        fn bind_counts(&self, sums: &mut [i32]);
        /// The sliced form of `bind(self, C)`, given `sliced` = the sliced form of `C`.
        fn unbind_query(
            &self,
            counts: &CountBundle,
            sliced: &SlicedCounts,
        ) -> crate::Result<SlicedCounts>;
        /// `⟨u, v⟩` for a sliced count vector `u`, given `sum = Σ vᵢ`.
        fn dot_sliced(&self, counts: &SlicedCounts, sum: i64) -> crate::Result<i64>;
    }
}
