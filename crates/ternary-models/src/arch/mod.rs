//! Architecture-specific kernels of the GGML block formats, picked once at run time. The
//! portable version in [`crate::quant_linear`] stays the oracle it is tested against. (The
//! float dot product is `ternary_core::kernels::DotF32`.) Dispatch goes through
//! `ternary_core`'s level tokens (`ternary_core::kernels::x86_primitives::Avx2`), so the
//! `TERNARY_SIMD` cap applies here too: these kernels need `Level::Avx2` available.

#[cfg(target_arch = "x86_64")]
pub mod x86;

/// Dot of one row of quantized blocks with an input row: `(kind, row bytes, x, block sums of x)`.
pub type QDotFn = fn(crate::quant::GgmlType, &[u8], &[f32], &[f32]) -> f32;

/// The fastest available block-quantized row dot (AVX2+FMA, else portable). Cheap: the level
/// check is cached by `ternary_core`; callers resolve it once per product.
pub fn best_qdot() -> QDotFn {
    #[cfg(target_arch = "x86_64")]
    if let Some(f) = x86::qdot_avx2() {
        return f;
    }
    crate::quant_linear::qdot_portable
}

/// Dot of one `Q6_K` row with one token's int8 activations: `(row bytes, codes, block scales,
/// 16-value code sums)` (as `crate::quant_linear` quantizes them).
pub type Q6kDotFn = fn(&[u8], &[i8], &[f32], &[i16]) -> f32;

/// The fastest available `Q6_K` × int8 row dot (AVX2, else portable), bit-identical to the
/// portable oracle: the per-block integer sums are exact and the blocks are summed in the
/// same order.
pub fn best_q6k_dot() -> Q6kDotFn {
    #[cfg(target_arch = "x86_64")]
    if let Some(f) = x86::q6k_dot_avx2() {
        return f;
    }
    crate::quant_linear::q6k_dot_portable
}
