//! x86-64 kernels: AVX2 and AVX-512 (work in progress: forwards to the scalar kernels).

use super::{popcount, scalar};
use crate::activations::QuantizedActivations;
use crate::matrix::TernaryMatrix;

pub(super) fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("popcnt")
}

pub(super) fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("avx512vpopcntdq")
}

pub(super) fn gemm_f32_avx2(m: &TernaryMatrix, x: &[f32], n: usize, y: &mut [f32]) {
    scalar::gemm_f32(m, x, n, y)
}
pub(super) fn gemm_f32_avx512(m: &TernaryMatrix, x: &[f32], n: usize, y: &mut [f32]) {
    scalar::gemm_f32(m, x, n, y)
}
pub(super) fn gemm_i8_avx2(m: &TernaryMatrix, a: &QuantizedActivations, y: &mut [f32]) {
    scalar::gemm_i8(m, a, y)
}
pub(super) fn gemm_i8_avx512(m: &TernaryMatrix, a: &QuantizedActivations, y: &mut [f32]) {
    scalar::gemm_i8(m, a, y)
}
pub(super) fn ternary_dot_avx2(ap: &[u32], am: &[u32], bp: &[u32], bm: &[u32]) -> i64 {
    popcount::ternary_dot(ap, am, bp, bm)
}
pub(super) fn ternary_dot_avx512(ap: &[u32], am: &[u32], bp: &[u32], bm: &[u32]) -> i64 {
    popcount::ternary_dot(ap, am, bp, bm)
}
pub(super) fn xor_popcount_avx2(a: &[u32], b: &[u32]) -> u64 {
    popcount::xor_popcount(a, b)
}
pub(super) fn xor_popcount_avx512(a: &[u32], b: &[u32]) -> u64 {
    popcount::xor_popcount(a, b)
}
