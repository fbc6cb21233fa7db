//! AVX2 kernels (with FMA and POPCNT).
//!
//! - `f32`: a broadcast plane word shifted left by `31 − i` (`vpsllvd`) puts bit `i` in the
//!   sign bit of lane `i`, which `blendv` uses to pick `x` or `0`; four rows per load of `x`.
//! - int8: each plane word is expanded to 32 bytes of `0`/`−1` (shuffle, and, compare);
//!   `t = minus − plus ∈ {−1, 0, 1}`, `s = sign(q, t)`, `maddubs(1, s)` sums pairs into
//!   `i16` lanes (at most 64 words before widening to `i32`, so no overflow).
//! - popcount: the nibble-lookup method (`vpshufb` + `vpsadbw`).

// Register tiles are indexed by (row, token); index loops say that more plainly than zips.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use super::Avx2;
use crate::activations::QuantizedActivations;
use crate::kernels::{GroupWords, by_row_blocks, par_rows, popcount};
use crate::matrix::TernaryMatrix;

/// Rows sharing one load of the activations.
const ROWS: usize = 4;
/// Plane bytes per block of rows kept in cache while every token passes over it.
const BLOCK_BYTES: usize = 256 << 10;
/// Words summed in `i16` lanes before widening: `64 · 2 · 127 < 2¹⁵`.
const I16_WORDS: usize = 64;

pub(super) fn gemm_f32(_t: Avx2, m: &TernaryMatrix, x: &[f32], n: usize, y: &mut [f32]) {
    let block = row_block(m);
    par_rows(m.rows(), m.cols(), n, ROWS, y, |rows, out| {
        by_token_in_row_blocks(rows, n, block, out, |sub, j, o| {
            by_row_blocks(
                sub,
                n,
                ROWS,
                o,
                // SAFETY: the token proves the CPU features; `r..r + ROWS` are rows of `m`,
                // `x` holds `n × cols` values, `o` holds `ROWS × n` outputs and `j < n`.
                |r, o| unsafe { f32_rows::<ROWS>(m, x, n, j, r, o) },
                // SAFETY: as above, for one row.
                |r, o| unsafe { f32_rows::<1>(m, x, n, j, r, o) },
            )
        });
    });
}

/// Rows per cache block: their plane words (both planes) fill about [`BLOCK_BYTES`].
fn row_block(m: &TernaryMatrix) -> usize {
    (BLOCK_BYTES / (8 * m.words_per_row()).max(1) / ROWS).max(1) * ROWS
}

/// For each block of rows (see [`row_block`]) and each token `j`, calls `f(block_rows, j, out)`
/// with `out` the block's `rows × n` outputs, so a block's planes stay in cache for all tokens.
fn by_token_in_row_blocks(
    rows: std::ops::Range<usize>,
    n: usize,
    block: usize,
    out: &mut [f32],
    mut f: impl FnMut(std::ops::Range<usize>, usize, &mut [f32]),
) {
    let mut b0 = rows.start;
    while b0 < rows.end {
        let b1 = (b0 + block).min(rows.end);
        let out_b = &mut out[(b0 - rows.start) * n..(b1 - rows.start) * n];
        for j in 0..n {
            f(b0..b1, j, out_b);
        }
        b0 = b1;
    }
}

/// Sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// Rows `r0..r0 + R`, token `j`: `out[i · n + j] = Σ_g s[r0 + i, g] · Σ_{c ∈ g} t · x[j, c]`.
///
/// # Safety
/// AVX2 and FMA must be available; `r0 + R ≤ rows`, `x.len() = n · cols`, `out.len() = R · n`,
/// `j < n`.
#[target_feature(enable = "avx2,fma")]
unsafe fn f32_rows<const R: usize>(
    m: &TernaryMatrix,
    x: &[f32],
    n: usize,
    j: usize,
    r0: usize,
    out: &mut [f32],
) {
    let cols = m.cols();
    let wpr = m.words_per_row();
    let layout = m.scales().layout();
    let groups = layout.groups_per_row(cols);
    let gcols = layout.group_len(cols);
    let scales = m.scales().values();
    let plus: [&[u32]; R] = std::array::from_fn(|i| &m.plus()[(r0 + i) * wpr..(r0 + i + 1) * wpr]);
    let minus: [&[u32]; R] =
        std::array::from_fn(|i| &m.minus()[(r0 + i) * wpr..(r0 + i + 1) * wpr]);
    // Shifting by SHIFTS[b] moves bit 8b + i of a word into the sign bit of lane i.
    let shifts = [
        _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24),
        _mm256_setr_epi32(23, 22, 21, 20, 19, 18, 17, 16),
        _mm256_setr_epi32(15, 14, 13, 12, 11, 10, 9, 8),
        _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0),
    ];
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let zero = _mm256_setzero_ps();
    {
        let xj = &x[j * cols..(j + 1) * cols];
        let mut total = [zero; R];
        for g in 0..groups {
            let c0 = g * gcols;
            let c1 = (c0 + gcols).min(cols);
            let mut accp = [zero; R];
            let mut accm = [zero; R];
            for w in c0 / 32..c1.div_ceil(32) {
                let wp: [__m256i; R] =
                    std::array::from_fn(|i| _mm256_set1_epi32(plus[i][w] as i32));
                let wm: [__m256i; R] =
                    std::array::from_fn(|i| _mm256_set1_epi32(minus[i][w] as i32));
                for (b, &shift) in shifts.iter().enumerate() {
                    let col = 32 * w + 8 * b;
                    if col >= c1 {
                        break;
                    }
                    let xv = if col + 8 <= c1 {
                        // SAFETY: columns col..col + 8 ≤ c1 ≤ cols lie in `xj`.
                        unsafe { _mm256_loadu_ps(xj.as_ptr().add(col)) }
                    } else {
                        let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((c1 - col) as i32), lane);
                        // SAFETY: only lanes col + l < c1 ≤ cols are read.
                        unsafe { _mm256_maskload_ps(xj.as_ptr().add(col), keep) }
                    };
                    for i in 0..R {
                        let sp = _mm256_castsi256_ps(_mm256_sllv_epi32(wp[i], shift));
                        let sm = _mm256_castsi256_ps(_mm256_sllv_epi32(wm[i], shift));
                        accp[i] = _mm256_add_ps(accp[i], _mm256_blendv_ps(zero, xv, sp));
                        accm[i] = _mm256_add_ps(accm[i], _mm256_blendv_ps(zero, xv, sm));
                    }
                }
            }
            for i in 0..R {
                let s = _mm256_set1_ps(scales[(r0 + i) * groups + g]);
                total[i] = _mm256_fmadd_ps(_mm256_sub_ps(accp[i], accm[i]), s, total[i]);
            }
        }
        for i in 0..R {
            out[i * n + j] = hsum_ps(total[i]);
        }
    }
}

pub(super) fn gemm_i8(_t: Avx2, m: &TernaryMatrix, a: &QuantizedActivations, y: &mut [f32]) {
    let n = a.n();
    let block = row_block(m);
    par_rows(m.rows(), m.cols(), n, ROWS, y, |rows, out| {
        by_token_in_row_blocks(rows, n, block, out, |sub, j, o| {
            by_row_blocks(
                sub,
                n,
                ROWS,
                o,
                // SAFETY: the token proves the CPU features; `r..r + ROWS` are rows of `m`,
                // `o` holds `ROWS × n` outputs, `j < n`; `a.cols() == m.cols()` was checked.
                |r, o| unsafe { i8_rows::<ROWS>(m, a, j, r, o) },
                // SAFETY: as above, for one row.
                |r, o| unsafe { i8_rows::<1>(m, a, j, r, o) },
            )
        });
    });
}

/// 32 bytes, byte `c` = `−1` if bit `c` of `word` is set, else `0`.
#[inline]
#[target_feature(enable = "avx2")]
fn expand_bits(word: u32) -> __m256i {
    let select = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let v = _mm256_shuffle_epi8(_mm256_set1_epi32(word as i32), select);
    _mm256_cmpeq_epi8(_mm256_and_si256(v, bits), bits)
}

/// Rows `r0..r0 + R`, token `j`, int8: exact `i32` group sums, then the reference's `f32` order.
///
/// # Safety
/// AVX2 must be available; `r0 + R ≤ rows`, `a.cols() == m.cols()`, `out.len() = R · a.n()`,
/// `j < a.n()`.
#[target_feature(enable = "avx2")]
unsafe fn i8_rows<const R: usize>(
    m: &TernaryMatrix,
    a: &QuantizedActivations,
    j: usize,
    r0: usize,
    out: &mut [f32],
) {
    let gw = GroupWords::of(m);
    let wpr = gw.words_per_row;
    let n = a.n();
    let scales = m.scales().values();
    let plus: [&[u32]; R] = std::array::from_fn(|i| &m.plus()[(r0 + i) * wpr..(r0 + i + 1) * wpr]);
    let minus: [&[u32]; R] =
        std::array::from_fn(|i| &m.minus()[(r0 + i) * wpr..(r0 + i + 1) * wpr]);
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    let zero = _mm256_setzero_si256();
    {
        let q = a.row(j);
        let mut sum = [0f32; R];
        for g in 0..gw.groups {
            let mut acc32 = [zero; R];
            let mut acc16 = [zero; R];
            for (count, w) in gw.range(g).enumerate() {
                // SAFETY: bytes 32w..32w + 32 ≤ 32 · words_per_row lie in the padded row.
                let xv = unsafe { _mm256_loadu_si256(q.as_ptr().add(32 * w).cast()) };
                for i in 0..R {
                    let t = _mm256_sub_epi8(expand_bits(minus[i][w]), expand_bits(plus[i][w]));
                    let s = _mm256_sign_epi8(xv, t);
                    acc16[i] = _mm256_add_epi16(acc16[i], _mm256_maddubs_epi16(ones8, s));
                }
                if count % I16_WORDS == I16_WORDS - 1 {
                    for i in 0..R {
                        acc32[i] = _mm256_add_epi32(acc32[i], _mm256_madd_epi16(acc16[i], ones16));
                        acc16[i] = zero;
                    }
                }
            }
            for i in 0..R {
                let acc = _mm256_add_epi32(acc32[i], _mm256_madd_epi16(acc16[i], ones16));
                sum[i] += scales[(r0 + i) * gw.groups + g]
                    * crate::kernels::x86_primitives::hsum_epi32(acc) as f32;
            }
        }
        for i in 0..R {
            out[i * n + j] = sum[i] * a.scales()[j];
        }
    }
}

/// Per-`u64` popcounts of a 256-bit vector.
#[inline]
#[target_feature(enable = "avx2")]
fn popcnt256(v: __m256i) -> __m256i {
    let lookup = _mm256_setr_epi8(
        0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4, 0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3,
        3, 4,
    );
    let low = _mm256_set1_epi8(0x0f);
    let lo = _mm256_and_si256(v, low);
    let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), low);
    let counts = _mm256_add_epi8(
        _mm256_shuffle_epi8(lookup, lo),
        _mm256_shuffle_epi8(lookup, hi),
    );
    _mm256_sad_epu8(counts, _mm256_setzero_si256())
}

/// Sum of the four `u64` lanes.
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_epi64(v: __m256i) -> u64 {
    let s = _mm_add_epi64(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    (_mm_cvtsi128_si64(s) + _mm_extract_epi64::<1>(s)) as u64
}

/// # Safety
/// AVX2 and POPCNT must be available; all slices have the same length.
#[target_feature(enable = "avx2,popcnt")]
pub(super) unsafe fn ternary_dot(ap: &[u32], am: &[u32], bp: &[u32], bm: &[u32]) -> i64 {
    let chunks = ap.len() / 8;
    let mut same = _mm256_setzero_si256();
    let mut diff = _mm256_setzero_si256();
    for c in 0..chunks {
        // SAFETY: words 8c..8c + 8 ≤ len of each slice.
        let (a_p, a_m, b_p, b_m) = unsafe {
            (
                _mm256_loadu_si256(ap.as_ptr().add(8 * c).cast()),
                _mm256_loadu_si256(am.as_ptr().add(8 * c).cast()),
                _mm256_loadu_si256(bp.as_ptr().add(8 * c).cast()),
                _mm256_loadu_si256(bm.as_ptr().add(8 * c).cast()),
            )
        };
        let s = _mm256_or_si256(_mm256_and_si256(a_p, b_p), _mm256_and_si256(a_m, b_m));
        let d = _mm256_or_si256(_mm256_and_si256(a_p, b_m), _mm256_and_si256(a_m, b_p));
        same = _mm256_add_epi64(same, popcnt256(s));
        diff = _mm256_add_epi64(diff, popcnt256(d));
    }
    let k = 8 * chunks;
    let tail = popcount::ternary_dot(&ap[k..], &am[k..], &bp[k..], &bm[k..]);
    hsum_epi64(same) as i64 - hsum_epi64(diff) as i64 + tail
}

/// `popc(a XOR b)` over all words.
///
/// # Safety
/// AVX2 and POPCNT must be available; `a.len() == b.len()`.
#[target_feature(enable = "avx2,popcnt")]
pub(super) unsafe fn xor_popcount(a: &[u32], b: &[u32]) -> u64 {
    let chunks = a.len() / 8;
    let mut acc = _mm256_setzero_si256();
    for c in 0..chunks {
        // SAFETY: words 8c..8c + 8 ≤ len of both slices.
        let (va, vb) = unsafe {
            (
                _mm256_loadu_si256(a.as_ptr().add(8 * c).cast()),
                _mm256_loadu_si256(b.as_ptr().add(8 * c).cast()),
            )
        };
        acc = _mm256_add_epi64(acc, popcnt256(_mm256_xor_si256(va, vb)));
    }
    let k = 8 * chunks;
    hsum_epi64(acc) + popcount::xor_popcount(&a[k..], &b[k..])
}

/// `Σ_i a[i] · b[i]` over the shorter length with four 8-lane FMA accumulators.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, s) in acc.iter_mut().enumerate() {
            // SAFETY: i + 8j + 8 <= i + 32 <= n, within both slices.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_ps(pa.add(i + 8 * j)),
                    _mm256_loadu_ps(pb.add(i + 8 * j)),
                )
            };
            *s = _mm256_fmadd_ps(x, y, *s);
        }
        i += 32;
    }
    while i + 8 <= n {
        // SAFETY: i + 8 <= n, within both slices.
        let (x, y) = unsafe { (_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i))) };
        acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let tail: f32 = a[i..n].iter().zip(&b[i..n]).map(|(x, y)| x * y).sum();
    hsum_ps(v) + tail
}
