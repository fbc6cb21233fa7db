//! Causal attention with the query tokens in lanes ([`kernels::attention`](crate::kernels::attention)
//! has the math): one tile loop shared by both levels, over two per-level pieces, a register
//! tile `C[R, 2 vectors] = A·B` with `A` read by broadcasts at any strides (so keys and values
//! are used in the cache's `[len, d]` layout as they are) and a column softmax with the
//! polynomial `exp` of [`math`](super::math) (masked weights are set to zero separately).
//!
//! Fewer than [`LANE_TOKENS`] tokens (decode) run one token at a time on 8-lane vectors at
//! both levels (the work is bound by reading the cache): a dot product per visible key, a
//! row softmax, and `Σ_p w_p · v_p` with the outputs held in registers, 32 features at a time
//! with two accumulator sets (even and odd positions) so that the FMA chains overlap.

// Register tiles are indexed by row; index loops say that more plainly than zips.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::math::{exp256, exp512};
use super::{Avx2, Avx512};
use crate::kernels::attention::{AttentionScratch, Causal};

/// From this many tokens on, the tokens go in lanes; fewer (a decode step) run one token at a
/// time ([`causal_rows`]), where lanes over the tokens would stay mostly empty.
const LANE_TOKENS: usize = 8;

/// What one level gives the shared tile loop.
trait Lanes: Copy {
    /// Tokens per tile: two vectors.
    const TW: usize;
    /// Rows per register tile.
    const R: usize;

    /// `c[r·TW + l] = Σ_{k' < k} a[r·ars + k'·acs] · b[k'·TW + l]` for `r < rows ≤ R`, `l < TW`.
    ///
    /// # Safety
    /// `a` readable at every `r·ars + k'·acs`, `b` at `k·TW` values, `c` writable at `rows·TW`.
    #[allow(clippy::too_many_arguments)]
    unsafe fn tile(
        self,
        rows: usize,
        a: *const f32,
        ars: usize,
        acs: usize,
        k: usize,
        b: *const f32,
        c: *mut f32,
    );

    /// Column softmax of `s: [P, TW]` in place without the division: `s[p, l]` becomes
    /// `exp(scale·s[p, l] − m_l)` where lane `l` sees row `p` (`p ≤ diag + l`), else 0, with
    /// `m_l` the lane's largest visible scaled score; `inv[l] = 1 / Σ_p s[p, l]`.
    fn softmax(self, s: &mut [f32], diag: usize, scale: f32, inv: &mut [f32]);
}

/// The tile loop (see the module docs); shapes were checked by the caller.
fn causal<L: Lanes>(l: L, a: &Causal<'_>, out_t: &mut [f32], sc: &mut AttentionScratch) {
    if a.nt < LANE_TOKENS
        && let Some(t) = Avx2::new()
    {
        return causal_rows(t, a, out_t, sc);
    }
    let (d, nt, tw) = (a.d, a.nt, L::TW);
    let len = a.pos0 + nt;
    sc.q.resize(d * tw, 0.0);
    sc.s.resize(len * tw, 0.0);
    sc.o.resize(d * tw, 0.0);
    let mut inv = [0f32; 32];
    for t0 in (0..nt).step_by(tw) {
        let w = tw.min(nt - t0);
        let plen = a.pos0 + t0 + w;
        for i in 0..d {
            let dst = &mut sc.q[i * tw..(i + 1) * tw];
            dst[..w].copy_from_slice(&a.q_t[i * nt + t0..i * nt + t0 + w]);
            dst[w..].fill(0.0);
        }
        let mut p0 = 0;
        while p0 < plen {
            let rows = L::R.min(plen - p0);
            // SAFETY: keys hold ≥ len·d ≥ plen·d values, so rows p0..p0 + rows (r·d + i,
            // i < d) are in bounds; `q` holds d·TW values; `s` holds len·TW ≥ (p0 + rows)·TW.
            unsafe {
                l.tile(
                    rows,
                    a.keys[p0 * d..].as_ptr(),
                    d,
                    1,
                    d,
                    sc.q.as_ptr(),
                    sc.s[p0 * tw..].as_mut_ptr(),
                );
            }
            p0 += rows;
        }
        l.softmax(&mut sc.s[..plen * tw], a.pos0 + t0, a.scale, &mut inv[..tw]);
        let mut i0 = 0;
        while i0 < d {
            let rows = L::R.min(d - i0);
            // SAFETY: values[i0 + r + p·d] with r < rows ≤ d − i0 and p < plen is below
            // plen·d ≤ values.len(); `s` holds plen·TW weights; `o` holds d·TW ≥ (i0 + rows)·TW.
            unsafe {
                l.tile(
                    rows,
                    a.values[i0..].as_ptr(),
                    1,
                    d,
                    plen,
                    sc.s.as_ptr(),
                    sc.o[i0 * tw..].as_mut_ptr(),
                );
            }
            i0 += rows;
        }
        for i in 0..d {
            let o = &sc.o[i * tw..i * tw + w];
            let dst = &mut out_t[i * nt + t0..i * nt + t0 + w];
            for ((y, &v), &s) in dst.iter_mut().zip(o).zip(&inv[..w]) {
                *y = v * s;
            }
        }
    }
}

impl Avx512 {
    /// [`causal_attention_with`](crate::kernels::attention::causal_attention_with); shapes
    /// checked by the caller.
    pub(in crate::kernels) fn causal_attention(
        self,
        a: &Causal<'_>,
        out_t: &mut [f32],
        scratch: &mut AttentionScratch,
    ) {
        causal(self, a, out_t, scratch)
    }
}

impl Avx2 {
    /// [`causal_attention_with`](crate::kernels::attention::causal_attention_with); shapes
    /// checked by the caller.
    pub(in crate::kernels) fn causal_attention(
        self,
        a: &Causal<'_>,
        out_t: &mut [f32],
        scratch: &mut AttentionScratch,
    ) {
        causal(self, a, out_t, scratch)
    }
}

impl Lanes for Avx512 {
    const TW: usize = 32;
    const R: usize = 8;

    unsafe fn tile(
        self,
        rows: usize,
        a: *const f32,
        ars: usize,
        acs: usize,
        k: usize,
        b: *const f32,
        c: *mut f32,
    ) {
        // SAFETY: the token proves AVX-512F; the bounds are forwarded from the caller.
        unsafe {
            match rows {
                8 => tile512::<8>(a, ars, acs, k, b, c),
                7 => tile512::<7>(a, ars, acs, k, b, c),
                6 => tile512::<6>(a, ars, acs, k, b, c),
                5 => tile512::<5>(a, ars, acs, k, b, c),
                4 => tile512::<4>(a, ars, acs, k, b, c),
                3 => tile512::<3>(a, ars, acs, k, b, c),
                2 => tile512::<2>(a, ars, acs, k, b, c),
                _ => tile512::<1>(a, ars, acs, k, b, c),
            }
        }
    }

    fn softmax(self, s: &mut [f32], diag: usize, scale: f32, inv: &mut [f32]) {
        // SAFETY: the token proves AVX-512F.
        unsafe { softmax512(s, diag, scale, inv) }
    }
}

impl Lanes for Avx2 {
    const TW: usize = 16;
    const R: usize = 6;

    unsafe fn tile(
        self,
        rows: usize,
        a: *const f32,
        ars: usize,
        acs: usize,
        k: usize,
        b: *const f32,
        c: *mut f32,
    ) {
        // SAFETY: the token proves AVX2 and FMA; the bounds are forwarded from the caller.
        unsafe {
            match rows {
                6 => tile256::<6>(a, ars, acs, k, b, c),
                5 => tile256::<5>(a, ars, acs, k, b, c),
                4 => tile256::<4>(a, ars, acs, k, b, c),
                3 => tile256::<3>(a, ars, acs, k, b, c),
                2 => tile256::<2>(a, ars, acs, k, b, c),
                _ => tile256::<1>(a, ars, acs, k, b, c),
            }
        }
    }

    fn softmax(self, s: &mut [f32], diag: usize, scale: f32, inv: &mut [f32]) {
        // SAFETY: the token proves AVX2 and FMA.
        unsafe { softmax256(s, diag, scale, inv) }
    }
}

/// [`Lanes::tile`] with 32 lanes.
///
/// # Safety
/// AVX-512F; the bounds of [`Lanes::tile`].
#[target_feature(enable = "avx512f")]
unsafe fn tile512<const R: usize>(
    a: *const f32,
    ars: usize,
    acs: usize,
    k: usize,
    b: *const f32,
    c: *mut f32,
) {
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    for kk in 0..k {
        // SAFETY: kk < k: the loads are within the bounds the caller guarantees.
        unsafe {
            let b0 = _mm512_loadu_ps(b.add(kk * 32));
            let b1 = _mm512_loadu_ps(b.add(kk * 32 + 16));
            for r in 0..R {
                let av = _mm512_set1_ps(*a.add(r * ars + kk * acs));
                acc[r][0] = _mm512_fmadd_ps(av, b0, acc[r][0]);
                acc[r][1] = _mm512_fmadd_ps(av, b1, acc[r][1]);
            }
        }
    }
    for r in 0..R {
        // SAFETY: r < R = rows: c holds rows·32 values.
        unsafe {
            _mm512_storeu_ps(c.add(r * 32), acc[r][0]);
            _mm512_storeu_ps(c.add(r * 32 + 16), acc[r][1]);
        }
    }
}

/// [`Lanes::tile`] with 16 lanes.
///
/// # Safety
/// AVX2 and FMA; the bounds of [`Lanes::tile`].
#[target_feature(enable = "avx2,fma")]
unsafe fn tile256<const R: usize>(
    a: *const f32,
    ars: usize,
    acs: usize,
    k: usize,
    b: *const f32,
    c: *mut f32,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    for kk in 0..k {
        // SAFETY: kk < k: the loads are within the bounds the caller guarantees.
        unsafe {
            let b0 = _mm256_loadu_ps(b.add(kk * 16));
            let b1 = _mm256_loadu_ps(b.add(kk * 16 + 8));
            for r in 0..R {
                let av = _mm256_set1_ps(*a.add(r * ars + kk * acs));
                acc[r][0] = _mm256_fmadd_ps(av, b0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(av, b1, acc[r][1]);
            }
        }
    }
    for r in 0..R {
        // SAFETY: r < R = rows: c holds rows·16 values.
        unsafe {
            _mm256_storeu_ps(c.add(r * 16), acc[r][0]);
            _mm256_storeu_ps(c.add(r * 16 + 8), acc[r][1]);
        }
    }
}

/// [`Lanes::softmax`] on 32 lanes.
#[target_feature(enable = "avx512f")]
fn softmax512(s: &mut [f32], diag: usize, scale: f32, inv: &mut [f32]) {
    let lane = [
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_setr_epi32(
            16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
        ),
    ];
    // Lanes that see row p: l ≥ p − diag.
    let seen = |p: usize, h: usize| -> __mmask16 {
        if p <= diag {
            0xffff
        } else {
            let lim = _mm512_set1_epi32((p - diag).min(i32::MAX as usize) as i32);
            _mm512_cmpge_epi32_mask(lane[h], lim)
        }
    };
    let sc = _mm512_set1_ps(scale);
    let mut m = [_mm512_set1_ps(f32::NEG_INFINITY); 2];
    for (p, row) in s.chunks_exact_mut(32).enumerate() {
        for (h, half) in row.chunks_exact_mut(16).enumerate() {
            let arr = half.as_mut_ptr();
            // SAFETY: `half` is 16 values.
            let x = unsafe { _mm512_mul_ps(_mm512_loadu_ps(arr), sc) };
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(arr, x) };
            // `max(m, x)` returns `x` when it is NaN, so a NaN score reaches its lane.
            m[h] = _mm512_mask_max_ps(m[h], seen(p, h), m[h], x);
        }
    }
    let mut sum = [_mm512_setzero_ps(); 2];
    for (p, row) in s.chunks_exact_mut(32).enumerate() {
        for (h, half) in row.chunks_exact_mut(16).enumerate() {
            let arr = half.as_mut_ptr();
            // SAFETY: `half` is 16 values.
            let x = unsafe { _mm512_loadu_ps(arr) };
            let e = _mm512_maskz_mov_ps(seen(p, h), exp512(_mm512_sub_ps(x, m[h])));
            // SAFETY: as above.
            unsafe { _mm512_storeu_ps(arr, e) };
            sum[h] = _mm512_add_ps(sum[h], e);
        }
    }
    for (h, half) in inv.chunks_exact_mut(16).enumerate() {
        let arr = half.as_mut_ptr();
        // SAFETY: `half` is 16 values.
        unsafe { _mm512_storeu_ps(arr, _mm512_div_ps(_mm512_set1_ps(1.0), sum[h])) };
    }
}

/// [`Lanes::softmax`] on 16 lanes.
#[target_feature(enable = "avx2,fma")]
fn softmax256(s: &mut [f32], diag: usize, scale: f32, inv: &mut [f32]) {
    let lane = [
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        _mm256_setr_epi32(8, 9, 10, 11, 12, 13, 14, 15),
    ];
    // Lanes that do not see row p (all ones): l < p − diag.
    let hidden = |p: usize, h: usize| -> __m256 {
        if p <= diag {
            _mm256_setzero_ps()
        } else {
            let lim = _mm256_set1_epi32((p - diag).min(i32::MAX as usize) as i32);
            _mm256_castsi256_ps(_mm256_cmpgt_epi32(lim, lane[h]))
        }
    };
    let sc = _mm256_set1_ps(scale);
    let mut m = [_mm256_set1_ps(f32::NEG_INFINITY); 2];
    for (p, row) in s.chunks_exact_mut(16).enumerate() {
        for (h, half) in row.chunks_exact_mut(8).enumerate() {
            let arr = half.as_mut_ptr();
            // SAFETY: `half` is 8 values.
            let x = unsafe { _mm256_mul_ps(_mm256_loadu_ps(arr), sc) };
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(arr, x) };
            // `max(m, x)` returns `x` when it is NaN, so a NaN score reaches its lane.
            m[h] = _mm256_blendv_ps(_mm256_max_ps(m[h], x), m[h], hidden(p, h));
        }
    }
    let mut sum = [_mm256_setzero_ps(); 2];
    for (p, row) in s.chunks_exact_mut(16).enumerate() {
        for (h, half) in row.chunks_exact_mut(8).enumerate() {
            let arr = half.as_mut_ptr();
            // SAFETY: `half` is 8 values.
            let x = unsafe { _mm256_loadu_ps(arr) };
            let e = _mm256_andnot_ps(hidden(p, h), exp256(_mm256_sub_ps(x, m[h])));
            // SAFETY: as above.
            unsafe { _mm256_storeu_ps(arr, e) };
            sum[h] = _mm256_add_ps(sum[h], e);
        }
    }
    for (h, half) in inv.chunks_exact_mut(8).enumerate() {
        let arr = half.as_mut_ptr();
        // SAFETY: `half` is 8 values.
        unsafe { _mm256_storeu_ps(arr, _mm256_div_ps(_mm256_set1_ps(1.0), sum[h])) };
    }
}

/// [`causal`] for few tokens: one token at a time (module docs).
fn causal_rows(_t: Avx2, a: &Causal<'_>, out_t: &mut [f32], sc: &mut AttentionScratch) {
    let (d, nt) = (a.d, a.nt);
    sc.q.resize(d, 0.0);
    sc.o.resize(d, 0.0);
    for tok in 0..nt {
        let visible = a.pos0 + tok + 1;
        for (i, q) in sc.q.iter_mut().enumerate() {
            *q = a.q_t[i * nt + tok];
        }
        sc.s.resize(visible, 0.0);
        let (keys, values) = (&a.keys[..visible * d], &a.values[..visible * d]);
        // SAFETY: the token proves AVX2 and FMA.
        let inv = unsafe {
            rows256(
                &sc.q,
                keys,
                values,
                d,
                a.scale,
                &mut sc.s[..visible],
                &mut sc.o,
            )
        };
        for (i, &o) in sc.o.iter().enumerate() {
            out_t[i * nt + tok] = o * inv;
        }
    }
}

/// One token: `s[p] = scale · q·k_p`, `s ← exp(s − max s)`, `o = Σ_p s[p] · v_p`; returns
/// `1 / Σ_p s[p]`. `keys`/`values` hold `s.len()` rows of `d`, `q` and `o` `d` values.
#[target_feature(enable = "avx2,fma")]
fn rows256(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    d: usize,
    scale: f32,
    s: &mut [f32],
    o: &mut [f32],
) -> f32 {
    for (sp, k) in s.iter_mut().zip(keys.chunks_exact(d)) {
        // SAFETY: AVX2 and FMA are enabled in this function.
        *sp = unsafe { super::avx2::dot_f32(q, k) } * scale;
    }
    // The largest score (a NaN score makes its own weight, so the sum, NaN).
    let mut chunks = s.chunks_exact(8);
    let mut mv = _mm256_set1_ps(f32::NEG_INFINITY);
    for c in &mut chunks {
        // SAFETY: `c` is 8 values.
        mv = _mm256_max_ps(mv, unsafe { _mm256_loadu_ps(c.as_ptr()) });
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` is 8 values.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), mv) };
    let max = lanes
        .iter()
        .chain(chunks.remainder())
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v));
    let maxv = _mm256_set1_ps(max);
    let mut sum = _mm256_setzero_ps();
    let mut chunks = s.chunks_exact_mut(8);
    for c in &mut chunks {
        // SAFETY: `c` is 8 values.
        unsafe {
            let e = exp256(_mm256_sub_ps(_mm256_loadu_ps(c.as_ptr()), maxv));
            _mm256_storeu_ps(c.as_mut_ptr(), e);
            sum = _mm256_add_ps(sum, e);
        }
    }
    let mut tail = 0f32;
    for v in chunks.into_remainder() {
        *v = (*v - max).exp();
        tail += *v;
    }
    // SAFETY: `lanes` is 8 values.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    let total = lanes.iter().sum::<f32>() + tail;
    weighted_sum256(s, values, d, o);
    1.0 / total
}

/// `o[i] = Σ_p w[p] · values[p·d + i]`, 32 features at a time in registers (masked loads and
/// stores past `d`), even and odd positions in separate accumulators.
#[target_feature(enable = "avx2,fma")]
fn weighted_sum256(w: &[f32], values: &[f32], d: usize, o: &mut [f32]) {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let vp = values.as_ptr();
    let mut c0 = 0;
    while c0 < d {
        let width = (d - c0).min(32);
        // Lanes 8j + l < width of each of the four vectors.
        let masks: [__m256i; 4] = std::array::from_fn(|j| {
            let left = width.saturating_sub(8 * j).min(8) as i32;
            _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lane)
        });
        let mut acc = [[_mm256_setzero_ps(); 4]; 2];
        for (p, &wp) in w.iter().enumerate() {
            let wv = _mm256_set1_ps(wp);
            let row = vp.wrapping_add(p * d + c0);
            for j in 0..4 {
                // SAFETY: the unmasked lanes are features c0 + 8j + l < d of row p, inside
                // `values` (w.len() rows of d); masked-out lanes are not read.
                let v = unsafe { _mm256_maskload_ps(row.wrapping_add(8 * j), masks[j]) };
                acc[p & 1][j] = _mm256_fmadd_ps(wv, v, acc[p & 1][j]);
            }
        }
        for j in 0..4 {
            let r = _mm256_add_ps(acc[0][j], acc[1][j]);
            // SAFETY: the unmasked lanes are outputs c0 + 8j + l < d = o.len().
            unsafe { _mm256_maskstore_ps(o.as_mut_ptr().wrapping_add(c0 + 8 * j), masks[j], r) };
        }
        c0 += 32;
    }
}
