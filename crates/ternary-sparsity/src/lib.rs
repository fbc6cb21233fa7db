//! # ternary-sparsity
//!
//! Makes zero weights cost nothing in bit-sliced ternary matrices: less memory and less work,
//! and a per-layer decision whether ternary (dense or sparse) pays at all.
//!
//! - [`ChunkBitmap`](ternary_core::ChunkBitmap) (in `ternary-core`): one bit per 32-weight chunk of a row, set iff the chunk holds a
//!   non-zero weight; [`BitmapMatrix`] keeps it exactly consistent through O(1)
//!   [`modify_dim`](BitmapMatrix::modify_dim) edits and rebuilds it when loading a file.
//! - Compressed formats for high sparsity: [`PackedChunks`] (only the non-empty chunks) and
//!   [`IndexLists`] (gap-coded column lists of the `+1` and `−1` weights), each with its
//!   bits per weight ([`Footprint`]).
//! - [`prune`]: magnitude, whole-chunk and N:M pruning of a layer to a target sparsity, on
//!   float weights before ternarization or on ternary matrices after.
//! - [`kernels`]: GEMV/GEMM with `f32` or int8 activations that skip empty chunks or walk
//!   only the non-zeros ([`TernaryGemm`]); int8 results equal
//!   `ternary_core::reference::gemm_i8` bit for bit.
//! - [`plan`]: from a layer's measured density and chunk occupancy, configurable thresholds
//!   choose dense ternary, a sparse format, or float; the [`Plan`] prints as a table and
//!   round-trips through JSON.
//!
//! Expected skip rate: with unstructured density `d`, a 32-weight chunk is empty with
//! probability `(1 − d)³²` — only 19% of chunks at `d = 5%`, so unstructured sparsity is
//! served by the index lists and chunk-structured sparsity by the bitmap. See
//! `docs/sparsity.md` for the formats, the math and measured crossovers.

pub mod chunks;
pub mod footprint;
pub mod kernels;
pub mod lists;
pub mod matrix;
pub mod plan;
pub mod prune;

pub use chunks::PackedChunks;
pub use footprint::Footprint;
pub use kernels::{KernelConfig, TernaryGemm, WalkStrategy};
pub use lists::IndexLists;
pub use matrix::{BitmapMatrix, density};
pub use plan::{
    FloatLayer, LayerFormat, LayerPlan, LayerProfile, Plan, PlanRule, PlannedLayer, Planner,
};
