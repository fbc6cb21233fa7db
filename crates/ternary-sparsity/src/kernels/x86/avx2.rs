//! AVX2 skip kernels, few tokens: the chunk formats' masked kernels and the index lists'
//! gap decoding.
//!
//! For each non-empty chunk `w` (columns `32w .. 32w + 32`) each plane word is expanded to
//! lane masks: `f32`, the word broadcast and shifted left by `31 − i` (`vpsllvd`) puts bit
//! `8b + i` in the sign bit of lane `i` of octet `b`, and `blendv(0, x, mask)` adds `x` to
//! `acc⁺` or `acc⁻`; int8, the word's bytes are shuffled into place and compared with their
//! bit (`0`/`−1` per byte), `s = blendv(q & P, −q, M) = t · q`, and `maddubs(1, s)` adds pairs
//! into `i16` lanes (at most [`I16_CHUNKS`] chunks before widening to `i32`: `128 · 2 · 127 <
//! 2¹⁵`). Empty chunks are never visited. Group flushes follow the reference order exactly
//! for int8 (see the parent module).
//!
//! Index lists: each gap code is decoded 16 bytes at a time: with `v = b + 1`, the weight in
//! lane `i` sits at column `next + (v₀ + … + vᵢ) − 1`, an in-lane prefix sum of `u16` lanes in
//! three shifted adds, widened to `i32` with the low half's total carried into the high half.
//! Escape bytes (`255`: advance 255 columns, no weight) count `255` in the sum, and a step
//! holding one moves each half's weight lanes to the front with a 256-entry `vpermd` table;
//! the code's last partial step is its last 16 bytes shifted down with `pshufb`, and only a
//! code shorter than 16 bytes is decoded by scalar code. Then each
//! group's run of columns is summed into eight independent accumulators (`f32`, or int8
//! tokens widened to `i32` once per call). Loads, not `vpgatherdd`: on the AVX-512 host capped
//! at AVX2 the gathers were no faster, and Zen 3 runs them as microcode.

// Register arrays indexed by token `t` read clearer as index loops.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use ternary_core::QuantizedActivations;
use ternary_core::kernels::x86_primitives::hsum_epi32;

use super::Avx2;
use crate::kernels::{ChunkView, par_rows};
use crate::lists::ESCAPE;

/// Tokens sharing one pass over a row's chunks.
const TOKENS: usize = 2;
/// Chunks summed in `i16` lanes before widening to `i32`.
const I16_CHUNKS: usize = 128;

pub(super) fn masked_f32(_t: Avx2, v: &ChunkView<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    let work = (v.nonempty / v.rows.max(1) * 16 + 16) * n;
    par_rows(v.rows, work, n, y, |rows, out| {
        for (r, o) in rows.zip(out.chunks_exact_mut(n)) {
            let mut j = 0;
            while j + TOKENS <= n {
                // SAFETY: the token proves the CPU features; r < rows, tokens j..j + TOKENS
                // are < n, `x` holds n · cols values and the slice holds TOKENS outputs.
                unsafe { masked_f32_row::<TOKENS>(v, r, x, j, &mut o[j..j + TOKENS]) };
                j += TOKENS;
            }
            while j < n {
                // SAFETY: as above, for one token.
                unsafe { masked_f32_row::<1>(v, r, x, j, &mut o[j..j + 1]) };
                j += 1;
            }
        }
    });
}

/// Row `r`, tokens `j0 .. j0 + T`: `out[t] = Σ_g s[r, g] · Σ_{c ∈ g} t[r, c] · x[j0 + t, c]`.
///
/// # Safety
/// AVX2 and FMA must be available; `r < rows`, `j0 + T ≤ n`, `x.len() = n · cols`,
/// `out.len() = T`.
#[target_feature(enable = "avx2,fma")]
unsafe fn masked_f32_row<const T: usize>(
    v: &ChunkView<'_>,
    r: usize,
    x: &[f32],
    j0: usize,
    out: &mut [f32],
) {
    let cols = v.cols;
    let wpg = v.words_per_group();
    let groups = v.scales.layout().groups_per_row(cols);
    let s = &v.scales.values()[r * groups..(r + 1) * groups];
    let xs: [&[f32]; T] = std::array::from_fn(|t| &x[(j0 + t) * cols..(j0 + t + 1) * cols]);
    // Shifting by SHIFTS[b] moves bit 8b + i of a word into the sign bit of lane i.
    let shifts = [
        _mm256_setr_epi32(31, 30, 29, 28, 27, 26, 25, 24),
        _mm256_setr_epi32(23, 22, 21, 20, 19, 18, 17, 16),
        _mm256_setr_epi32(15, 14, 13, 12, 11, 10, 9, 8),
        _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0),
    ];
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let zero = _mm256_setzero_ps();
    let mut total = [zero; T];
    let mut accp = [zero; T];
    let mut accm = [zero; T];
    // Current group and its first chunk past the end (a division only when it changes).
    let (mut gcur, mut gend) = (usize::MAX, 0usize);
    for ch in v.chunks(r) {
        if ch.w >= gend {
            if gcur != usize::MAX {
                flush_f32(&mut total, &mut accp, &mut accm, s[gcur]);
            }
            gcur = ch.w / wpg;
            gend = (gcur + 1) * wpg;
        }
        let wp = _mm256_set1_epi32(ch.plus as i32);
        let wm = _mm256_set1_epi32(ch.minus as i32);
        for (b, &shift) in shifts.iter().enumerate() {
            let col = 32 * ch.w + 8 * b;
            // The chunk is non-empty, so 32w < cols; an octet past `cols` has no set bits.
            if col >= cols {
                break;
            }
            let sp = _mm256_castsi256_ps(_mm256_sllv_epi32(wp, shift));
            let sm = _mm256_castsi256_ps(_mm256_sllv_epi32(wm, shift));
            for t in 0..T {
                let xv = if col + 8 <= cols {
                    // SAFETY: columns col..col + 8 ≤ cols lie in token row t.
                    unsafe { _mm256_loadu_ps(xs[t].as_ptr().add(col)) }
                } else {
                    let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32((cols - col) as i32), lane);
                    // SAFETY: only lanes col + l < cols are read.
                    unsafe { _mm256_maskload_ps(xs[t].as_ptr().add(col), keep) }
                };
                accp[t] = _mm256_add_ps(accp[t], _mm256_blendv_ps(zero, xv, sp));
                accm[t] = _mm256_add_ps(accm[t], _mm256_blendv_ps(zero, xv, sm));
            }
        }
    }
    if gcur != usize::MAX {
        flush_f32(&mut total, &mut accp, &mut accm, s[gcur]);
    }
    for t in 0..T {
        out[t] = hsum_ps(total[t]);
    }
}

/// `total += s · (acc⁺ − acc⁻)` per token, then clears the accumulators.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn flush_f32<const T: usize>(
    total: &mut [__m256; T],
    accp: &mut [__m256; T],
    accm: &mut [__m256; T],
    s: f32,
) {
    let sv = _mm256_set1_ps(s);
    for t in 0..T {
        total[t] = _mm256_fmadd_ps(_mm256_sub_ps(accp[t], accm[t]), sv, total[t]);
        accp[t] = _mm256_setzero_ps();
        accm[t] = _mm256_setzero_ps();
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

pub(super) fn masked_i8(_t: Avx2, v: &ChunkView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    let n = a.n();
    let work = (v.nonempty / v.rows.max(1) * 8 + 16) * n;
    par_rows(v.rows, work, n, y, |rows, out| {
        for (r, o) in rows.zip(out.chunks_exact_mut(n)) {
            let mut j = 0;
            while j + TOKENS <= n {
                // SAFETY: the token proves the CPU features; r < rows, tokens j..j + TOKENS
                // are < n, a.cols() == cols was checked and the slice holds TOKENS outputs.
                unsafe { masked_i8_row::<TOKENS>(v, r, a, j, &mut o[j..j + TOKENS]) };
                j += TOKENS;
            }
            while j < n {
                // SAFETY: as above, for one token.
                unsafe { masked_i8_row::<1>(v, r, a, j, &mut o[j..j + 1]) };
                j += 1;
            }
        }
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

/// Row `r`, tokens `j0 .. j0 + T`, int8: exact `i32` group sums, the reference's `f32` order.
///
/// # Safety
/// AVX2 must be available; `r < rows`, `j0 + T ≤ a.n()`, `a.cols() == cols`,
/// `out.len() = T`.
#[target_feature(enable = "avx2")]
unsafe fn masked_i8_row<const T: usize>(
    v: &ChunkView<'_>,
    r: usize,
    a: &QuantizedActivations,
    j0: usize,
    out: &mut [f32],
) {
    let wpg = v.words_per_group();
    let groups = v.scales.layout().groups_per_row(v.cols);
    let s = &v.scales.values()[r * groups..(r + 1) * groups];
    // Each padded row has padded_cols = 32 · wpr bytes.
    let qs: [*const i8; T] = std::array::from_fn(|t| a.row(j0 + t).as_ptr());
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    let zero = _mm256_setzero_si256();
    let mut sum = [0f32; T];
    let mut acc16 = [zero; T];
    let mut acc32 = [zero; T];
    let mut count = 0usize;
    // Current group and its first chunk past the end (a division only when it changes).
    let (mut gcur, mut gend) = (usize::MAX, 0usize);
    for ch in v.chunks(r) {
        if ch.w >= gend {
            if gcur != usize::MAX {
                for t in 0..T {
                    let acc = _mm256_add_epi32(acc32[t], _mm256_madd_epi16(acc16[t], ones16));
                    sum[t] += s[gcur] * hsum_epi32(acc) as f32;
                }
                acc16 = [zero; T];
                acc32 = [zero; T];
                count = 0;
            }
            gcur = ch.w / wpg;
            gend = (gcur + 1) * wpg;
        }
        let p = expand_bits(ch.plus);
        let m = expand_bits(ch.minus);
        for t in 0..T {
            // SAFETY: chunk w < wpr, so bytes 32w .. 32w + 32 lie in the padded row.
            let q = unsafe { _mm256_loadu_si256(qs[t].add(32 * ch.w).cast()) };
            let sv = _mm256_blendv_epi8(_mm256_and_si256(q, p), _mm256_sub_epi8(zero, q), m);
            acc16[t] = _mm256_add_epi16(acc16[t], _mm256_maddubs_epi16(ones8, sv));
        }
        count += 1;
        if count == I16_CHUNKS {
            for t in 0..T {
                acc32[t] = _mm256_add_epi32(acc32[t], _mm256_madd_epi16(acc16[t], ones16));
            }
            acc16 = [zero; T];
            count = 0;
        }
    }
    if gcur != usize::MAX {
        for t in 0..T {
            let acc = _mm256_add_epi32(acc32[t], _mm256_madd_epi16(acc16[t], ones16));
            sum[t] += s[gcur] * hsum_epi32(acc) as f32;
        }
    }
    for t in 0..T {
        out[t] = sum[t] * a.scales()[j0 + t];
    }
}

// ---------------------------------------------------------------------------------------------
// Index lists, few tokens: vector gap decoding, then loads
// ---------------------------------------------------------------------------------------------

/// For each 8-lane mask, the indices of its set lanes in order (one byte each, the rest 0):
/// the `vpermd` that moves the kept lanes to the front.
const COMPRESS: [u64; 256] = compress_table();

const fn compress_table() -> [u64; 256] {
    let mut t = [0u64; 256];
    let mut m = 0;
    while m < 256 {
        let (mut v, mut k, mut i) = (0u64, 0, 0);
        while i < 8 {
            if (m >> i) & 1 == 1 {
                v |= (i as u64) << (8 * k);
                k += 1;
            }
            i += 1;
        }
        t[m] = v;
        m += 1;
    }
    t
}

/// Decodes a gap code (see `crate::lists`) into its columns, 16 bytes per step (see the
/// [module docs](self)); only a code shorter than one step runs scalar code. Returns the
/// number of columns written.
///
/// # Safety
/// AVX2 must be available; `out.len() ≥ k + 16` where `k` is the number of columns the code
/// holds.
#[target_feature(enable = "avx2")]
unsafe fn decode_gaps(code: &[u8], out: &mut [u32]) -> usize {
    let all = _mm_set1_epi8(-1);
    // `base` = the next column − 1, in every lane.
    let mut base = _mm256_set1_epi32(-1);
    let mut count = 0usize;
    let mut step = |bytes: __m128i, len: usize| {
        let escm = _mm_cmpeq_epi8(bytes, all);
        // Escapes among the step's `len` real bytes (the rest is padding).
        let esc = _mm_movemask_epi8(escm) as u32 & ((1u32 << len) - 1);
        let (plo, phi) = prefix_columns(bytes, escm);
        let (lo, hi) = (_mm256_add_epi32(base, plo), _mm256_add_epi32(base, phi));
        let o = out.as_mut_ptr();
        if esc == 0 {
            // SAFETY: `count` columns were written so far, at most k − len (this step holds
            // `len` weights), so out[count .. count + 16] lies in `out` (len ≥ k + 16).
            unsafe {
                _mm256_storeu_si256(o.add(count).cast(), lo);
                _mm256_storeu_si256(o.add(count + 8).cast(), hi);
            }
            count += len;
        } else {
            // Escapes (0.2% of the bytes at 5% density, 39% at 1%): the weight lanes of each
            // half moved to the front by a permutation from the table, then stored.
            let keep = !esc & ((1u32 << len) - 1);
            for (half, k) in [(lo, keep & 0xFF), (hi, keep >> 8)] {
                let idx = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(COMPRESS[k as usize] as i64));
                // SAFETY: as above: the step holds `popcount(keep)` weights, so at most
                // k − popcount(keep) were written before, and 8 lanes from `count` fit.
                unsafe {
                    _mm256_storeu_si256(o.add(count).cast(), _mm256_permutevar8x32_epi32(half, idx))
                };
                count += k.count_ones() as usize;
            }
        }
        // Lane len − 1 of the prefix sums: how far this step advanced (off the loop-carried
        // chain, which is this one add).
        let (v, lane) = if len > 8 {
            (phi, len - 9)
        } else {
            (plo, len - 1)
        };
        base = _mm256_add_epi32(
            base,
            _mm256_permutevar8x32_epi32(v, _mm256_set1_epi32(lane as i32)),
        );
    };
    let mut chunks = code.chunks_exact(16);
    for c in &mut chunks {
        // SAFETY: `c` holds 16 bytes.
        step(unsafe { _mm_loadu_si128(c.as_ptr().cast()) }, 16);
    }
    let len = chunks.remainder().len();
    if len > 0 && code.len() >= 16 {
        // The last 16 bytes of the code, shifted down so the tail starts at lane 0 (lanes from
        // `len` on hold bytes that `step` ignores). A copy into a buffer would stall the load
        // on store forwarding.
        let shift = _mm_add_epi8(
            _mm_set1_epi8((16 - len) as i8),
            _mm_setr_epi8(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        );
        // SAFETY: code[code.len() − 16 ..] holds 16 bytes (code.len() ≥ 16).
        let last = unsafe { _mm_loadu_si128(code.as_ptr().add(code.len() - 16).cast()) };
        step(_mm_shuffle_epi8(last, shift), len);
    } else if len > 0 {
        // A code shorter than 16 bytes: scalar.
        let mut next = (_mm256_cvtsi256_si32(base) as u32).wrapping_add(1);
        for &b in chunks.remainder() {
            next = push_byte(b, next, out, &mut count);
        }
    }
    count
}

/// For 16 gap bytes `b` (`escm` = `−1` at the escapes), `(v₀ + … + vᵢ)` with `v = b + 1` for a
/// weight and `v = 255` for an escape, lanes 0–7 and 8–15 as `i32`: an in-lane prefix sum of
/// `u16` lanes (at most `16 · 256`: no overflow) in three shifted adds, widened, the low
/// half's total carried into the high half.
#[inline]
#[target_feature(enable = "avx2")]
fn prefix_columns(bytes: __m128i, escm: __m128i) -> (__m256i, __m256i) {
    let v = _mm256_add_epi16(_mm256_cvtepu8_epi16(bytes), _mm256_set1_epi16(1));
    let v = _mm256_add_epi16(v, _mm256_cvtepi8_epi16(escm));
    let v = _mm256_add_epi16(v, _mm256_slli_si256::<2>(v));
    let v = _mm256_add_epi16(v, _mm256_slli_si256::<4>(v));
    let v = _mm256_add_epi16(v, _mm256_slli_si256::<8>(v));
    let lo = _mm256_cvtepu16_epi32(_mm256_castsi256_si128(v));
    let hi = _mm256_cvtepu16_epi32(_mm256_extracti128_si256::<1>(v));
    let hi = _mm256_add_epi32(hi, _mm256_permutevar8x32_epi32(lo, _mm256_set1_epi32(7)));
    (lo, hi)
}

/// One byte of a gap code, scalar: a weight at `next + b` (written at `out[count]`), or an
/// escape. Returns the new `next`.
#[inline(always)]
fn push_byte(b: u8, next: u32, out: &mut [u32], count: &mut usize) -> u32 {
    if b == ESCAPE {
        next + u32::from(ESCAPE)
    } else {
        let c = next + u32::from(b);
        out[*count] = c;
        *count += 1;
        c + 1
    }
}

/// `Σ_{c ∈ run} x[c]` (`f32`), eight independent scalar accumulators, each add taking its
/// operand straight from memory (`vaddss acc, [x + 4c]`): two loads per weight and nothing
/// else (the compiler's own pairing of loads into vectors cost more than it saved).
///
/// # Safety
/// AVX2 must be available; every column of `run` is `< x.len()`.
#[target_feature(enable = "avx2")]
unsafe fn sum_run_f32(run: &[u32], x: &[f32]) -> f32 {
    let xp = x.as_ptr();
    let mut acc = [_mm_setzero_ps(); 8];
    let mut it = run.chunks_exact(8);
    for c in &mut it {
        for (a, &p) in acc.iter_mut().zip(c) {
            // SAFETY: columns are < x.len() (the caller's contract).
            *a = _mm_add_ss(*a, unsafe { _mm_load_ss(xp.add(p as usize)) });
        }
    }
    for (a, &p) in acc.iter_mut().zip(it.remainder()) {
        // SAFETY: as above.
        *a = _mm_add_ss(*a, unsafe { _mm_load_ss(xp.add(p as usize)) });
    }
    let s = |i: usize| _mm_cvtss_f32(acc[i]);
    ((s(0) + s(1)) + (s(2) + s(3))) + ((s(4) + s(5)) + (s(6) + s(7)))
}

/// `Σ_{c ∈ run} x[c]` in exact (wrapping) `i32`.
///
/// # Safety
/// As [`sum_run_f32`].
unsafe fn sum_run_i32(run: &[u32], x: &[i32]) -> i32 {
    let mut acc = [0i32; 8];
    let mut it = run.chunks_exact(8);
    for c in &mut it {
        for (a, &p) in acc.iter_mut().zip(c) {
            // SAFETY: columns are < x.len() (the caller's contract).
            *a = a.wrapping_add(unsafe { *x.get_unchecked(p as usize) });
        }
    }
    for (a, &p) in acc.iter_mut().zip(it.remainder()) {
        // SAFETY: as above.
        *a = a.wrapping_add(unsafe { *x.get_unchecked(p as usize) });
    }
    acc.iter().fold(0i32, |s, &v| s.wrapping_add(v))
}

impl super::ListKernels for Avx2 {
    const PAD: usize = 16;

    unsafe fn decode(self, code: &[u8], out: &mut [u32]) -> usize {
        // SAFETY: the token proves the CPU features; the caller gives `out` the slack.
        unsafe { decode_gaps(code, out) }
    }

    unsafe fn run_f32(self, run: &[u32], x: &[f32]) -> f32 {
        // SAFETY: the caller keeps every column < x.len().
        unsafe { sum_run_f32(run, x) }
    }

    unsafe fn run_i32(self, run: &[u32], x: &[i32]) -> i32 {
        // SAFETY: as `run_f32`.
        unsafe { sum_run_i32(run, x) }
    }
}
