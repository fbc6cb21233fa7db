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
