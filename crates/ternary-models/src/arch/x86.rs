//! x86-64 block-quantized row dots with AVX2 (+ FMA for the f32 ones).

use ternary_core::kernels::x86_primitives::Avx2;

use std::arch::x86_64::{
    __m256, _mm_add_ps, _mm_cvtss_f32, _mm_hadd_ps, _mm256_castps256_ps128, _mm256_extractf128_ps,
    _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
};

/// An IEEE half's bits as `f32` (exact), with F16C: inline in the block loops, where a call
/// to `half`'s converter spilled the vector registers around it once per block.
#[inline]
#[target_feature(enable = "avx2,f16c")]
fn f16_to_f32(lo: u8, hi: u8) -> f32 {
    use std::arch::x86_64::{_mm_cvtph_ps, _mm_cvtsi32_si128};
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
        u16::from_le_bytes([lo, hi]),
    ))))
}

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
    // SAFETY: this function is handed out only with an `Avx2` token (AVX2, FMA and F16C present,
    // `qdot_avx2`); `nb` blocks
    // fit in `row` (nb·bb bytes), `x` (32·nb floats) and `sx` (nb floats).
    unsafe { qdot(bb, &row[..nb * bb], &x[..nb * 32], &sx[..nb]) }
}

#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn qdot(bb: usize, row: &[u8], x: &[f32], sx: &[f32]) -> f32 {
    use std::arch::x86_64::{
        _mm_and_si128, _mm_loadl_epi64, _mm_loadu_si128, _mm_set1_epi8, _mm_srli_epi16,
        _mm_srli_si128, _mm256_cvtepi8_epi32, _mm256_cvtepi32_ps, _mm256_cvtepu8_epi32,
    };
    let px = x.as_ptr();
    let mut total = 0f32;
    let mask = _mm_set1_epi8(15);
    for (b, blk) in row.chunks_exact(bb).enumerate() {
        let d = f16_to_f32(blk[0], blk[1]);
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
                let m = f16_to_f32(blk[2], blk[3]);
                d * s + m * sx[b]
            } else {
                d * (s - 8.0 * sx[b])
            };
        }
    }
    total
}

/// `Q6_K` row · int8 activations with AVX2 (see [`crate::quant_linear::q6k_dot_portable`],
/// which it equals bit for bit), when `ternary_core`'s [`Avx2`] level token can be made.
pub fn q6k_dot_avx2() -> Option<super::Q6kDotFn> {
    Avx2::new().map(|_| q6k_checked as super::Q6kDotFn)
}

fn q6k_checked(row: &[u8], q: &[i8], d: &[f32], bsums: &[i16]) -> f32 {
    let nb = (row.len() / 210)
        .min(q.len() / 256)
        .min(d.len())
        .min(bsums.len() / 16);
    // SAFETY: handed out only with an `Avx2` token (`q6k_dot_avx2`); `nb` blocks fit in `row`
    // (210·nb bytes), `q` (256·nb codes), `d` (nb scales) and `bsums` (16·nb sums).
    unsafe { q6k_dot(row, q, d, bsums, nb) }
}

/// Per super-block: the 6-bit codes `u` rebuilt 32 at a time from `ql` and `qh`,
/// `maddubs(u, q)` (pairs, at most 2·63·128 in `i16`), `madd` by the group scales (16-weight
/// groups: the low and high 128-bit lanes take one scale each), minus `32·Σ_g s_g·Σ_{j∈g} q_j`
/// from the code sums; the exact `i32` total times `d_w·d_x` is added to the `f32` sum.
#[target_feature(enable = "avx2,f16c")]
unsafe fn q6k_dot(row: &[u8], q: &[i8], d: &[f32], bsums: &[i16], nb: usize) -> f32 {
    use std::arch::x86_64::{
        __m256i, _MM_HINT_T0, _mm_add_epi32, _mm_cvtepi8_epi16, _mm_cvtsi128_si32, _mm_loadl_epi64,
        _mm_loadu_si128, _mm_prefetch, _mm_set1_epi16, _mm_shuffle_epi32, _mm256_add_epi32,
        _mm256_and_si256, _mm256_broadcastsi128_si256, _mm256_castsi256_si128,
        _mm256_cvtepi8_epi16, _mm256_extracti128_si256, _mm256_loadu_si256, _mm256_madd_epi16,
        _mm256_maddubs_epi16, _mm256_or_si256, _mm256_set_m128i, _mm256_set1_epi8,
        _mm256_setzero_si256, _mm256_shuffle_epi8, _mm256_slli_epi16, _mm256_slli_epi32,
        _mm256_srli_epi16, _mm256_sub_epi32,
    };
    let m4 = _mm256_set1_epi8(0x0F);
    let m30 = _mm256_set1_epi8(0x30);
    // Byte shuffles that spread group scale 2k (low lane) and 2k+1 (high lane) of a half's
    // eight `i16` scales over eight `i16` lanes each.
    let spread = |k: i16| {
        let pair = |g: i16| ((4 * g + 1) << 8) | (4 * g);
        _mm256_set_m128i(_mm_set1_epi16(pair(k) + 0x0202), _mm_set1_epi16(pair(k)))
    };
    let shuf = [spread(0), spread(1), spread(2), spread(3)];
    let mut total = 0f32;
    for (b, &dx) in d[..nb].iter().enumerate() {
        // SAFETY: block `b` is bytes 210b..210b+210 of `row`, its codes 256b..256b+256 of `q`,
        // its sums 16b..16b+16 of `bsums` (b < nb, see `q6k_checked`).
        let (blk, xq) = unsafe { (row.as_ptr().add(210 * b), q.as_ptr().add(256 * b)) };
        // The same block of the next row (which follows this one in a matrix): a prefetch never
        // faults, and `wrapping_add` keeps the address arithmetic defined past the end.
        let next = blk.wrapping_add(210 * nb);
        for line in [0, 64, 128, 192] {
            _mm_prefetch::<_MM_HINT_T0>(next.wrapping_add(line).cast());
        }
        let mut acc = _mm256_setzero_si256();
        for h in 0..2 {
            // SAFETY: ql half h is bytes 64h..64h+64, qh half h 128+32h..160+32h, the scales
            // 192+8h..200+8h; codes 128h..128h+128 of the block.
            let (ql0, ql1, qh, sc) = unsafe {
                (
                    _mm256_loadu_si256(blk.add(64 * h).cast()),
                    _mm256_loadu_si256(blk.add(64 * h + 32).cast()),
                    _mm256_loadu_si256(blk.add(128 + 32 * h).cast()),
                    _mm_loadl_epi64(blk.add(192 + 8 * h).cast()),
                )
            };
            let sc = _mm256_broadcastsi128_si256(_mm_cvtepi8_epi16(sc));
            // Code k's two high bits, `(qh >> 2k) & 3`, land at bits 4..6 by one shift of the
            // 16-bit lanes to there (none for k = 2) and one mask: bits a byte takes from its
            // neighbour fall outside the mask.
            let u: [__m256i; 4] = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    _mm256_and_si256(qh, m30),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m30),
                ),
            ];
            for (k, (uk, sk)) in u.into_iter().zip(shuf).enumerate() {
                // SAFETY: codes 128h+32k..128h+32k+32 of the block (k < 4).
                let x = unsafe { _mm256_loadu_si256(xq.add(128 * h + 32 * k).cast()) };
                let p = _mm256_maddubs_epi16(uk, x);
                acc = _mm256_add_epi32(acc, _mm256_madd_epi16(p, _mm256_shuffle_epi8(sc, sk)));
            }
        }
        // SAFETY: the 16 scales are bytes 192..208 of the block; the sums as above.
        let (sc16, bs) = unsafe {
            (
                _mm256_cvtepi8_epi16(_mm_loadu_si128(blk.add(192).cast())),
                _mm256_loadu_si256(bsums.as_ptr().add(16 * b).cast()),
            )
        };
        let corr = _mm256_madd_epi16(sc16, bs);
        acc = _mm256_sub_epi32(acc, _mm256_slli_epi32::<5>(corr));
        let s = _mm_add_epi32(
            _mm256_castsi256_si128(acc),
            _mm256_extracti128_si256::<1>(acc),
        );
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01_00_11_10>(s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b10_11_00_01>(s));
        let isum = _mm_cvtsi128_si32(s);
        // SAFETY: bytes 208..210 of the block are its f16 scale.
        let dw = unsafe { f16_to_f32(*blk.add(208), *blk.add(209)) };
        total += (dw * dx) * isum as f32;
    }
    total
}
