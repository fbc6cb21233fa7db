//! # ternary-core
//!
//! The bit-sliced ternary weight format and everything that computes on it without a GPU.
//!
//! A ternary weight `t ∈ {-1, 0, +1}` is stored as one bit in each of two planes (`plus`,
//! `minus`, never both set), with a float scale per output row or per group of input
//! columns. A matrix-vector product then needs no multiplications:
//!
//! `y[r] = s[r] · (Σ_{c: t=+1} x[c] − Σ_{c: t=−1} x[c])`.
//!
//! - [`TernaryMatrix`]: the format, O(1) [`get`](TernaryMatrix::get)/[`set`](TernaryMatrix::set)
//!   edits, dequantization.
//! - [`quant`]: float weights → planes + scales (abs-mean, TWN, abs-max, percentile,
//!   activation-aware).
//! - [`kernels`]: fast GEMV/GEMM (f32 and int8 activations) with run-time SIMD dispatch,
//!   and popcount dots.
//! - [`reference`](mod@reference): the scalar oracles the fast paths are tested against.
//! - [`two_plane`]: two trit-planes, `W = M₁ + M₂` (`s·(3·T₁ + T₂)`, the 9-level grid).
//! - [`pack`]: base-3 storage at 1.6 bits per weight; [`io`]: safetensors files.

pub mod activations;
pub mod bitmap;
pub mod error;
pub mod io;
pub mod kernels;
pub mod matrix;
pub mod pack;
pub mod quant;
pub mod reference;
pub mod rng;
pub mod rotation;
pub mod two_plane;

pub use activations::QuantizedActivations;
pub use bitmap::ChunkBitmap;
pub use error::{Result, TernaryError};
pub use matrix::{ScaleLayout, Scales, TernaryMatrix, words_per_row};
pub use two_plane::TwoPlaneMatrix;

/// The README's code blocks, compiled and run as doc tests.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
