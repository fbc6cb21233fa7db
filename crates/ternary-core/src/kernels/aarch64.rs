//! aarch64 NEON kernels (work in progress: forwards to the portable kernels).

use super::{popcount, scalar};
use crate::activations::QuantizedActivations;
use crate::matrix::TernaryMatrix;

pub(super) fn has_neon() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Neon(());

impl Neon {
    pub(super) fn new() -> Option<Self> {
        has_neon().then_some(Self(()))
    }
    pub(super) fn gemm_f32(self, m: &TernaryMatrix, x: &[f32], n: usize, y: &mut [f32]) {
        scalar::gemm_f32(m, x, n, y)
    }
    pub(super) fn gemm_i8(self, m: &TernaryMatrix, a: &QuantizedActivations, y: &mut [f32]) {
        scalar::gemm_i8(m, a, y)
    }
    pub(super) fn ternary_dot(self, ap: &[u32], am: &[u32], bp: &[u32], bm: &[u32]) -> i64 {
        popcount::ternary_dot(ap, am, bp, bm)
    }
    pub(super) fn xor_popcount(self, a: &[u32], b: &[u32]) -> u64 {
        popcount::xor_popcount(a, b)
    }
}
