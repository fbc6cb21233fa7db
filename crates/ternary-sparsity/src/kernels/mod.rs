//! Skip kernels: GEMV/GEMM over the sparse formats, with `f32` or int8 activations.
//!
//! Every format computes what the dense kernels of `ternary-core` compute,
//!
//! `y[j, r] = Σ_g s[r, g] · Σ_{c ∈ g} t[r, c] · x[j, c]`,
//!
//! but touches only the non-empty chunks ([`BitmapMatrix`](crate::BitmapMatrix), [`PackedChunks`](crate::PackedChunks)) or only the
//! non-zero weights ([`IndexLists`](crate::IndexLists)). The int8 path keeps exact `i32` group sums and the `f32`
//! order of [`reference::gemm_i8`](ternary_core::reference::gemm_i8)
//! (`sum = 0; for g { sum += s[r, g] · (acc as f32) }; y = sum · s_j`), so its results equal
//! the reference bit for bit: a skipped group has `acc = 0` and would add `±0` to a sum that
//! is never `−0`, which changes nothing.
//!
//! Strategies ([`WalkStrategy`]):
//! - [`WalkStrategy::PerToken`]: one token at a time. Chunk formats run masked adds (`f32`) or a
//!   masked `vpdpbusd` (int8) over each non-empty 32-chunk; index lists decode their gap codes
//!   16 bytes at a time and gather `x[j, c]` at the listed columns.
//! - [`WalkStrategy::WalkPanels`]: activations transposed into panels of up to 64 tokens
//!   (`x̃[c] = (x[j₀, c], …, x[j₀+63, c])`, `f32`, or int8 widened to `i32` up to 32 tokens and
//!   to `i16` beyond, summed in runs of at most 256 weights so `i16` cannot overflow); rows are
//!   decoded once into column lists and each non-zero weight adds or subtracts one panel
//!   column: `nnz · n / 16` (`/ 32` for `i16`) vector adds in all.
//! - [`WalkStrategy::ChunkPanels`] (int8, chunk formats): each non-empty chunk is decoded to 32
//!   `i8` weights and multiplied into 16-token panels of `u8 = q + 128` with `vpdpbusd`
//!   (8 per chunk per 16 tokens, as the dense blocked kernel), the offset removed exactly by
//!   `−128 · Σ_{c ∈ g} t[r, c]`.
//! - [`WalkStrategy::Auto`]: `PerToken` below [`PANEL_MIN_TOKENS`] tokens, else `WalkPanels`
//!   (`ChunkPanels` for int8 when the stored chunks hold at least [`CHUNK_PANEL_MIN_FILL`]
//!   non-zeros on average).
//!
//! Levels: [`Level::Avx512`] has dedicated kernels for every strategy; [`Level::Avx2`] has
//! the per-token kernels (masked for the chunk formats; vector gap decoding for index
//! lists), which it runs whatever the strategy; [`Level::Scalar`] (and NEON) run the portable
//! per-token kernels, whatever the strategy. Requesting a level this CPU lacks is [`TernaryError::Config`](ternary_core::TernaryError::Config).
//! Work is split over output rows with rayon, or, from 256 tokens on, over 64-token panels
//! (each task then keeps its panel in cache for every row and writes its outputs in place).
//! `unsafe` code lives only in `x86`.

use ternary_core::kernels::Level;

mod api;
mod parallel;
mod scalar;
mod views;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use api::{CHUNK_PANEL_MIN_FILL, KernelConfig, PANEL_MIN_TOKENS, TernaryGemm, WalkStrategy};
#[allow(unused_imports)] // what the per-ISA kernels use
pub(crate) use {api::*, parallel::*, views::*};
