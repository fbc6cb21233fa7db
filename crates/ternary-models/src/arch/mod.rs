//! Architecture-specific kernels of the GGML block formats, picked once at run time. The
//! portable version in [`crate::quant_linear`] stays the oracle it is tested against. (The
//! float dot product is `ternary_core::kernels::DotF32`.) The level comes from
//! `ternary_core`'s [`Level`] (so the `TERNARY_SIMD` cap applies here too): these kernels
//! need [`Level::Avx2`] available.

#[cfg(target_arch = "x86_64")]
use ternary_core::kernels::Level;

#[cfg(target_arch = "x86_64")]
pub mod x86;

/// Dot of one row of quantized blocks with an input row: `(kind, row bytes, x, block sums of x)`.
pub type QDotFn = fn(crate::quant::GgmlType, &[u8], &[f32], &[f32]) -> f32;

/// The fastest block-quantized row dot this CPU supports (AVX2+FMA, else portable).
pub fn best_qdot() -> QDotFn {
    static BEST: std::sync::OnceLock<QDotFn> = std::sync::OnceLock::new();
    *BEST.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        if let Some(f) = x86::qdot_avx2_fma().filter(|_| Level::Avx2.is_available()) {
            return f;
        }
        crate::quant_linear::qdot_portable
    })
}
