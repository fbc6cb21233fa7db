//! x86-64 skip kernels: AVX-512 F/BW/VL/VNNI/VPOPCNTDQ (every strategy) and AVX2 (the
//! per-token kernels: masked for the chunk formats, vector gap decoding for index lists).
//!
//! The kernels are reached through `ternary-core`'s zero-sized level tokens, [`Avx512`] and
//! [`Avx2`], that exist only when their [`Level`](ternary_core::kernels::Level) is available,
//! so the safe entry points below may call the `#[target_feature]` code. The caller has
//! checked the shapes and that the level is available.

mod avx2;
mod avx512;

use ternary_core::QuantizedActivations;
use ternary_core::kernels::x86_primitives::{Avx2, Avx512};

use super::{ChunkView, ListView, WalkRows};

/// The level token from `ternary-core` (`Level::Avx512` available); the dispatcher checked
/// the level before calling in, so its absence is a bug, not an input error.
fn token() -> Avx512 {
    Avx512::new()
        .expect("AVX-512 kernels called on a CPU without AVX-512 (the dispatcher checks the level)")
}

/// The AVX2 level token; as [`token`].
fn token_avx2() -> Avx2 {
    Avx2::new()
        .expect("AVX2 kernels called on a CPU without AVX2 (the dispatcher checks the level)")
}

/// AVX2, `f32`, up to two tokens at a time, blended adds over non-empty chunks.
pub(super) fn masked_f32_avx2(v: &ChunkView<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    avx2::masked_f32(token_avx2(), v, x, n, y);
}

/// AVX2, int8, up to two tokens at a time, `maddubs` over non-empty chunks.
pub(super) fn masked_i8_avx2(v: &ChunkView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    avx2::masked_i8(token_avx2(), v, a, y);
}

/// AVX2, index lists, `f32`, one token at a time: vector gap decoding, then loads.
pub(super) fn lists_f32_avx2(v: &ListView<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    avx2::lists_f32(token_avx2(), v, x, n, y);
}

/// AVX2, index lists, int8, one token at a time: vector gap decoding, then loads.
pub(super) fn lists_i8_avx2(v: &ListView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    avx2::lists_i8(token_avx2(), v, a, y);
}

/// `f32`, one token at a time, masked adds over non-empty chunks.
pub(super) fn masked_f32(v: &ChunkView<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    avx512::masked_f32(token(), v, x, n, y);
}

/// Int8, one token at a time, masked `vpdpbusd` over non-empty chunks.
pub(super) fn masked_i8(v: &ChunkView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    avx512::masked_i8(token(), v, a, y);
}

/// Int8, `vpdpbusd` over decoded non-empty chunks and 16-token panels.
pub(super) fn chunk_panels_i8(v: &ChunkView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    avx512::chunk_panels_i8(token(), v, a, y);
}

/// `f32`, transposed panels, one vector add per non-zero weight.
pub(super) fn walk_f32<W: WalkRows>(m: &W, x: &[f32], n: usize, y: &mut [f32]) {
    avx512::walk_f32(token(), m, x, n, y);
}

/// Int8 widened to `i32`, transposed panels, one vector add per non-zero weight.
pub(super) fn walk_i8<W: WalkRows>(m: &W, a: &QuantizedActivations, y: &mut [f32]) {
    avx512::walk_i8(token(), m, a, y);
}

/// Index lists, `f32`, one token at a time: vector gap decoding and gathers.
pub(super) fn lists_f32(v: &ListView<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    avx512::lists_f32(token(), v, x, n, y);
}

/// Index lists, int8, one token at a time: vector gap decoding and gathers.
pub(super) fn lists_i8(v: &ListView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    avx512::lists_i8(token(), v, a, y);
}
