//! The `#[cube]` kernels. Each is generic over the runtime; the host functions in the parent
//! modules check shapes, plan the launch and call them.
//!
//! Inside `#[cube]` code only the operators CubeCL expands are available, so integer
//! `div_ceil` / `is_multiple_of` are written out by hand.
#![allow(clippy::manual_div_ceil, clippy::manual_is_multiple_of)]

mod attention;
mod bitmap;
mod copy;
mod edit;
mod gemv;
mod pad;
mod quantize;
mod tiled;

pub(crate) use attention::{qk_scores, quantize_heads};
pub(crate) use bitmap::build_bitmap;
pub(crate) use copy::copy_words;
pub(crate) use edit::apply_edits;
pub(crate) use gemv::gemv_rows;
pub(crate) use pad::pad_rows;
pub(crate) use quantize::quantize_tokens;
pub(crate) use tiled::gemm_tiled;
