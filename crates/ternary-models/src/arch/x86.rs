//! x86-64 block-quantized row dot with AVX2 + FMA.

use ternary_core::kernels::x86_primitives::Avx2;

use std::arch::x86_64::{
    __m256, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm256_castps256_ps128, _mm256_extractf128_ps,
    _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
};

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_hadd_ps(s, s);
    _mm_cvtss_f32(_mm_hadd_ps(s, s))
}

/// Block-quantized row dot `Σ_b block_b · x_b` for Q4_0/Q4_1/Q8_0 with AVX2 + FMA, when
/// `ternary_core`'s [`Avx2`] level token can be made (the CPU has the features and the
/// `TERNARY_SIMD` cap allows them). Arguments: block kind, one row of blocks, the input row,
/// its 32-wide block sums (see [`crate::quant_linear`]).
pub fn qdot_avx2() -> Option<super::QDotFn> {
    Avx2::new().map(|_| qdot_checked as super::QDotFn)
}

fn qdot_checked(kind: crate::quant::GgmlType, row: &[u8], x: &[f32], sx: &[f32]) -> f32 {
    use crate::quant::GgmlType;
    let bb = match kind {
        GgmlType::Q4_0 => 18,
        GgmlType::Q4_1 => 20,
        GgmlType::Q8_0 => 34,
        _ => return f32::NAN,
    };
    let nb = (row.len() / bb).min(x.len() / 32).min(sx.len());
    // SAFETY: this function is handed out only with an `Avx2` token (AVX2 and FMA present,
    // `qdot_avx2`); `nb` blocks
    // fit in `row` (nb·bb bytes), `x` (32·nb floats) and `sx` (nb floats).
    unsafe { qdot(bb, &row[..nb * bb], &x[..nb * 32], &sx[..nb]) }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn qdot(bb: usize, row: &[u8], x: &[f32], sx: &[f32]) -> f32 {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_loadl_epi64, _mm_loadu_si128, _mm_set1_epi8, _mm_srli_epi16,
        _mm_srli_si128, _mm256_cvtepi8_epi32, _mm256_cvtepi32_ps, _mm256_cvtepu8_epi32,
    };
    let px = x.as_ptr();
    let mut total = 0f32;
    let mask = _mm_set1_epi8(15);
    for (b, blk) in row.chunks_exact(bb).enumerate() {
        let d = half::f16::from_bits(u16::from_le_bytes([blk[0], blk[1]])).to_f32();
        let xb = b * 32;
        let mut acc = _mm256_setzero_ps();
        if bb == 34 {
            for c in 0..4 {
                // SAFETY: bytes 2+8c..10+8c lie inside the 34-byte block; x has 32 floats at xb.
                unsafe {
                    let q = _mm_loadl_epi64(blk.as_ptr().add(2 + 8 * c).cast());
                    let qf = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(q));
                    acc = _mm256_fmadd_ps(_mm256_loadu_ps(px.add(xb + 8 * c)), qf, acc);
                }
            }
            total += d * hsum(acc);
        } else {
            let off = bb - 16;
            // SAFETY: the 16 nibble bytes are the block's last 16 bytes.
            let qs = unsafe { _mm_loadu_si128(blk.as_ptr().add(off).cast()) };
            let lo = _mm_and_si128(qs, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(qs, 4), mask);
            for (c, v) in [lo, _mm_srli_si128(lo, 8), hi, _mm_srli_si128(hi, 8)]
                .into_iter()
                .enumerate()
            {
                let qf = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v));
                // SAFETY: x has 32 floats at xb; c < 4.
                let xv = unsafe { _mm256_loadu_ps(px.add(xb + 8 * c)) };
                acc = _mm256_fmadd_ps(xv, qf, acc);
            }
            let s = hsum(acc);
            total += if bb == 20 {
                let m = half::f16::from_bits(u16::from_le_bytes([blk[2], blk[3]])).to_f32();
                d * s + m * sx[b]
            } else {
                d * (s - 8.0 * sx[b])
            };
        }
    }
    total
}
