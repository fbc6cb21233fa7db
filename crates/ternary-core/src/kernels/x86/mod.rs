//! x86-64 kernels: AVX2 (+FMA, POPCNT, F16C) and AVX-512 (F, BW, VL, VNNI, VPOPCNTDQ).
//!
//! Each level is reached through a zero-sized token ([`Avx2`], [`Avx512`]) that can only be
//! made after run-time detection succeeds, so the safe methods on it may call the
//! `#[target_feature]` kernels.

mod attention;
mod avx2;
mod avx512;
mod f32_gemm;
mod math;
mod panel_gemm;

use crate::activations::QuantizedActivations;
use crate::kernels::Rows;
use crate::matrix::TernaryMatrix;

/// `Σ_c t[c]` over a run of plane words: `popcount(plus) − popcount(minus)`, by the POPCNT
/// instruction (`count_ones` outside a `popcnt` function is a bit-twiddling sequence).
#[target_feature(enable = "popcnt")]
fn trit_sum(plus: &[u32], minus: &[u32]) -> i32 {
    let count = |plane: &[u32]| plane.iter().map(|w| w.count_ones() as i32).sum::<i32>();
    count(plus) - count(minus)
}

/// AVX2, FMA, POPCNT and F16C are all present.
pub(super) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("popcnt")
        && is_x86_feature_detected!("f16c")
}

/// AVX-512 F/BW/VL/VNNI/VPOPCNTDQ (and AVX2) are all present.
pub(super) fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vpopcntdq")
}

/// Proof that [`Level::Avx2`](super::Level::Avx2) is available: this CPU has AVX2, FMA, POPCNT
/// and F16C and the `TERNARY_SIMD` cap allows them. Code in other crates holding one may call
/// `#[target_feature(enable = "avx2,fma,popcnt,f16c")]` functions.
#[derive(Debug, Clone, Copy)]
pub struct Avx2(());

impl Avx2 {
    /// The token, if the level is available ([`Level::is_available`](super::Level::is_available)).
    pub fn new() -> Option<Self> {
        super::Level::Avx2.is_available().then_some(Self(()))
    }

    pub(super) fn gemm_f32(self, m: &TernaryMatrix, x: &[f32], n: usize, y: Rows<'_>) {
        avx2::gemm_f32(self, m, x, n, y)
    }

    pub(super) fn gemm_i8(self, m: &TernaryMatrix, a: &QuantizedActivations, y: Rows<'_>) {
        avx2::gemm_i8(self, m, a, y)
    }

    /// [`Avx2::gemm_i8`] of a matrix repacked into 2-bit fields.
    pub(in crate::kernels) fn gemm_i8_fields(
        self,
        f: &crate::kernels::packed::FieldMatrix,
        a: &QuantizedActivations,
        y: Rows<'_>,
    ) {
        avx2::gemm_i8_packed(self, f, a, y)
    }

    /// [`transpose_into_with`](crate::kernels::transpose_into_with); shapes checked by the
    /// caller.
    pub(super) fn transpose_into(
        self,
        src: &[f32],
        rows: usize,
        n: usize,
        dst: &mut [f32],
        stride: usize,
        add: bool,
    ) {
        avx2::transpose_into(self, src, rows, n, dst, stride, add)
    }

    pub(super) fn ternary_dot(self, ap: &[u32], am: &[u32], bp: &[u32], bm: &[u32]) -> i64 {
        // SAFETY: the token exists only if AVX2 and POPCNT were detected.
        unsafe { avx2::ternary_dot(ap, am, bp, bm) }
    }

    pub(super) fn xor_popcount(self, a: &[u32], b: &[u32]) -> u64 {
        // SAFETY: the token exists only if AVX2 and POPCNT were detected.
        unsafe { avx2::xor_popcount(a, b) }
    }

    pub(super) fn dot_f32(self, a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: the token exists only if AVX2 and FMA were detected.
        unsafe { avx2::dot_f32(a, b) }
    }

    pub(super) fn dot_i8(self, a: &[i8], b: &[i8]) -> i32 {
        // SAFETY: the token exists only if AVX2 was detected.
        unsafe { avx2::dot_i8(a, b) }
    }

    /// `row` finite, `q.len() ≥ row.len()` (checked by the caller).
    pub(super) fn quantize_row_i8(self, row: &[f32], q: &mut [i8]) -> f32 {
        // SAFETY: the token exists only if AVX2 was detected; the caller checked the rest.
        unsafe { avx2::quantize_row_i8(row, q) }
    }

    pub(super) fn axpy_f32(self, a: f32, x: &[f32], y: &mut [f32]) {
        // SAFETY: the token exists only if AVX2 and FMA were detected.
        unsafe { avx2::axpy_f32(a, x, y) }
    }

    /// Dot products at every batch size: at 8 lanes they already reach the FMA ports' peak
    /// (SmolLM2 F16, 512 tokens, 1 thread on the Intel host at this level: 262 tokens/s with
    /// them, 260–270 with the `f32` panel GEMM), and they were tuned on a Zen 3. One token
    /// (decode) is bound by memory, not width: a 16-lane AVX-512 version decoded no faster
    /// on a Zen 5 (both ≈ 109 tokens/s on SmolLM2 F16, 1 thread) once this one prefetched.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn dense_rows<W: crate::kernels::DenseWeight>(
        self,
        w: &[W],
        cols: usize,
        x: &[f32],
        n: usize,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        avx2::dense_rows(self, w, cols, x, n, rows, out)
    }
}

/// Proof that [`Level::Avx512`](super::Level::Avx512) is available: this CPU has AVX-512
/// F/BW/VL/VNNI/VPOPCNTDQ (and AVX2) and the `TERNARY_SIMD` cap allows them. Code in other
/// crates holding one may call `#[target_feature]` functions needing those features.
#[derive(Debug, Clone, Copy)]
pub struct Avx512(());

impl Avx512 {
    /// The token, if the level is available ([`Level::is_available`](super::Level::is_available)).
    pub fn new() -> Option<Self> {
        super::Level::Avx512.is_available().then_some(Self(()))
    }

    pub(super) fn gemm_f32(self, m: &TernaryMatrix, x: &[f32], n: usize, y: Rows<'_>) {
        avx512::gemm_f32(self, m, x, n, y)
    }

    /// The AVX2 token: `has_avx512` requires AVX2's features.
    pub(super) fn avx2(self) -> Avx2 {
        Avx2(())
    }

    pub(super) fn gemm_i8(self, m: &TernaryMatrix, a: &QuantizedActivations, y: Rows<'_>) {
        avx512::gemm_i8(self, m, a, y)
    }

    /// [`Avx512::gemm_i8`] of a matrix repacked into 2-bit fields.
    pub(in crate::kernels) fn gemm_i8_fields(
        self,
        f: &crate::kernels::packed::FieldMatrix,
        a: &QuantizedActivations,
        y: Rows<'_>,
    ) {
        avx512::gemm_i8_packed(self, f, a, y)
    }

    pub(super) fn ternary_dot(self, ap: &[u32], am: &[u32], bp: &[u32], bm: &[u32]) -> i64 {
        // SAFETY: the token exists only if the AVX-512 features were detected.
        unsafe { avx512::ternary_dot(ap, am, bp, bm) }
    }

    pub(super) fn xor_popcount(self, a: &[u32], b: &[u32]) -> u64 {
        // SAFETY: the token exists only if the AVX-512 features were detected.
        unsafe { avx512::xor_popcount(a, b) }
    }

    /// The AVX2 kernel: a streaming `f32` dot is bound by memory, not by vector width.
    pub(super) fn dot_f32(self, a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: the token exists only if the AVX-512 features were detected, which
        // `has_avx512` requires to include AVX2 and FMA.
        unsafe { avx2::dot_f32(a, b) }
    }

    /// The AVX2 kernel.
    pub(super) fn axpy_f32(self, a: f32, x: &[f32], y: &mut [f32]) {
        // SAFETY: the token exists only if the AVX-512 features were detected, which
        // `has_avx512` requires to include AVX2 and FMA.
        unsafe { avx2::axpy_f32(a, x, y) }
    }

    /// The AVX2 kernel (a streaming dot is bound by memory).
    pub(super) fn dot_i8(self, a: &[i8], b: &[i8]) -> i32 {
        // SAFETY: the token exists only if the AVX-512 features were detected, which
        // `has_avx512` requires to include AVX2.
        unsafe { avx2::dot_i8(a, b) }
    }

    /// `row` finite, `q.len() ≥ row.len()` (checked by the caller).
    pub(super) fn quantize_row_i8(self, row: &[f32], q: &mut [i8]) -> f32 {
        // SAFETY: the token exists only if AVX-512F/BW were detected; the caller checked the
        // rest.
        unsafe { avx512::quantize_row_i8(row, q) }
    }

    /// Many tokens and rows: the `f32` panel GEMM with the 12-row tile (at 16 lanes it doubles
    /// the FMA peak of the dot kernels); otherwise the AVX2 dot products (which prefetch for
    /// one token).
    pub(super) fn dense_rows<W: crate::kernels::DenseWeight>(
        self,
        w: &[W],
        cols: usize,
        x: &[f32],
        n: usize,
        rows: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        if n >= f32_gemm::DENSE_MIN_TOKENS && rows.len() >= avx512::F32_MR {
            return f32_gemm::dense_gemm(avx512::Fma512(self), w, cols, x, n, rows, out);
        }
        self.avx2().dense_rows(w, cols, x, n, rows, out)
    }
}
