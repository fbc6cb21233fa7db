//! Vector math: `exp`, and the SiLU gate built on it.
//!
//! `exp(x) = 2ⁿ · e^r` with `n = round(x · log₂e)`, `r = x − n·ln2` (ln2 split in two, Cody and
//! Waite), `e^r` by the degree-7 polynomial of Cephes' `expf` (within about 1 ulp on
//! `|r| ≤ ln2/2`). `x` is clamped so that `2ⁿ` stays finite (AVX-512 scales by `scalef`, which
//! underflows gracefully; AVX2 builds `2ⁿ` in the exponent field, so `n ≥ −126`): `−∞` gives a
//! tiny value instead of NaN, `+∞` a huge finite one; NaN stays NaN.

use std::arch::x86_64::*;

use super::{Avx2, Avx512};

const LOG2E: f32 = std::f32::consts::LOG2_E;
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
const EXP_POLY: [f32; 6] = [
    1.987_569_1e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    0.166_666_65,
    0.5,
];

/// `e^x` on 16 lanes (module docs); NaN stays NaN.
#[inline]
#[target_feature(enable = "avx512f")]
pub(super) fn exp512(x: __m512) -> __m512 {
    // `max(c, x)` and `min(c, x)` return `x` when it is NaN.
    let x = _mm512_max_ps(_mm512_set1_ps(-104.0), x);
    let x = _mm512_min_ps(_mm512_set1_ps(88.7), x);
    let n = _mm512_roundscale_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
        _mm512_mul_ps(x, _mm512_set1_ps(LOG2E)),
    );
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_HI), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(LN2_LO), r);
    let mut y = _mm512_set1_ps(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        y = _mm512_fmadd_ps(y, r, _mm512_set1_ps(c));
    }
    let y = _mm512_fmadd_ps(
        y,
        _mm512_mul_ps(r, r),
        _mm512_add_ps(r, _mm512_set1_ps(1.0)),
    );
    _mm512_scalef_ps(y, n)
}

/// `e^x` on 8 lanes (module docs); NaN stays NaN.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn exp256(x: __m256) -> __m256 {
    // Clamped so that 2ⁿ is a normal number: n ∈ [−126, 127].
    let x = _mm256_max_ps(_mm256_set1_ps(-87.33), x);
    let x = _mm256_min_ps(_mm256_set1_ps(88.0), x);
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(LOG2E),
    ));
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    let mut y = _mm256_set1_ps(EXP_POLY[0]);
    for &c in &EXP_POLY[1..] {
        y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(c));
    }
    let y = _mm256_fmadd_ps(
        y,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_mul_ps(y, _mm256_castsi256_ps(pow2))
}

/// `up[i] *= g / (1 + e^(−g))`, `g = gate[i]`, 16 lanes at a time (scalar tail).
#[target_feature(enable = "avx512f")]
fn silu_mul512(gate: &[f32], up: &mut [f32]) {
    let one = _mm512_set1_ps(1.0);
    let mut gc = gate.chunks_exact(16);
    let mut uc = up.chunks_exact_mut(16);
    for (g, u) in (&mut gc).zip(&mut uc) {
        // SAFETY: both chunks hold 16 values.
        unsafe {
            let g = _mm512_loadu_ps(g.as_ptr());
            let e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), g));
            let s = _mm512_div_ps(g, _mm512_add_ps(one, e));
            _mm512_storeu_ps(
                u.as_mut_ptr(),
                _mm512_mul_ps(_mm512_loadu_ps(u.as_ptr()), s),
            );
        }
    }
    crate::kernels::scalar::silu_mul(gc.remainder(), uc.into_remainder());
}

/// `up[i] *= g / (1 + e^(−g))`, 8 lanes at a time (scalar tail).
#[target_feature(enable = "avx2,fma")]
fn silu_mul256(gate: &[f32], up: &mut [f32]) {
    let one = _mm256_set1_ps(1.0);
    let mut gc = gate.chunks_exact(8);
    let mut uc = up.chunks_exact_mut(8);
    for (g, u) in (&mut gc).zip(&mut uc) {
        // SAFETY: both chunks hold 8 values.
        unsafe {
            let g = _mm256_loadu_ps(g.as_ptr());
            let e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), g));
            let s = _mm256_div_ps(g, _mm256_add_ps(one, e));
            _mm256_storeu_ps(
                u.as_mut_ptr(),
                _mm256_mul_ps(_mm256_loadu_ps(u.as_ptr()), s),
            );
        }
    }
    crate::kernels::scalar::silu_mul(gc.remainder(), uc.into_remainder());
}

impl Avx512 {
    /// [`silu_mul_with`](crate::kernels::silu_mul_with); equal lengths.
    pub(in crate::kernels) fn silu_mul(self, gate: &[f32], up: &mut [f32]) {
        // SAFETY: the token proves AVX-512F.
        unsafe { silu_mul512(gate, up) }
    }
}

impl Avx2 {
    /// [`silu_mul_with`](crate::kernels::silu_mul_with); equal lengths.
    pub(in crate::kernels) fn silu_mul(self, gate: &[f32], up: &mut [f32]) {
        // SAFETY: the token proves AVX2 and FMA.
        unsafe { silu_mul256(gate, up) }
    }
}
