//! AVX-512 skip kernels (F, BW, VL, VNNI, VPOPCNTDQ).
//!
//! - `masked_*` (few tokens, chunk formats): for each non-empty chunk `w` the plane words are
//!   the lane masks: `f32` `acc⁺ = mask_add(acc⁺, k⁺, x[32w..])` per 16-column half; int8
//!   `s = maskz_mov(k⁺, q)`, `s = mask_sub(s, k⁻, 0, q)`, `acc = vpdpbusd(acc, 1, s)` on the
//!   chunk's 32 bytes. Empty chunks are never visited.
//! - `walk_*` (many tokens, any walkable format): activations transposed into panels of `16Z`
//!   tokens (`Z ≤ 4`); each `+1` (`−1`) weight at column `c` adds (subtracts) the panel column
//!   `x̃[c]`: `Z` loads and `Z` adds per non-zero weight per panel.
//! - `chunk_panels_i8` (many tokens, chunk formats): each non-empty chunk is decoded to 32 `i8`
//!   trits; dword `k` (4 trits) is broadcast with `vpermd` and multiplied into the 16-token
//!   panels of `u8 = q + 128` with `vpdpbusd`; the group accumulator starts the flush with
//!   `−128 · Σ_{c ∈ g} t` (popcounts), which removes the offset exactly.
//!
//! Group flushes follow the reference order exactly for int8 (see the parent module).

// Register arrays indexed by panel `z` or token `t` read clearer as index loops.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use rayon::prelude::*;
use ternary_core::QuantizedActivations;

use super::Avx512;
use crate::kernels::{ChunkView, Cursor, WalkRows, group_len, par_rows, walk_work};

/// Tokens sharing one pass over a row's chunks in the per-token kernels.
const TOKENS: usize = 4;
/// Largest number of 16-lane vectors in a token panel (64 tokens).
const MAX_Z: usize = 4;

// ---------------------------------------------------------------------------------------------
// Per-token masked kernels
// ---------------------------------------------------------------------------------------------

pub(super) fn masked_f32(_t: Avx512, v: &ChunkView<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    let work = (v.nonempty / v.rows.max(1) * 8 + 16) * n;
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
/// AVX-512F/BW/VL must be available; `r < rows`, `j0 + T ≤ n`, `x.len() = n · cols`,
/// `out.len() = T`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
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
    let xs: [*const f32; T] = std::array::from_fn(|t| x[(j0 + t) * cols..].as_ptr());
    let zero = _mm512_setzero_ps();
    let mut total = [zero; T];
    // Per token: plus low half, plus high half, minus low half, minus high half.
    let mut acc = [[zero; 4]; T];
    let mut gcur = usize::MAX;
    for ch in v.chunks(r) {
        let g = ch.w / wpg;
        if g != gcur {
            if gcur != usize::MAX {
                flush_f32(&mut total, &mut acc, s[gcur]);
            }
            gcur = g;
        }
        for h in 0..2 {
            let kp = (ch.plus >> (16 * h)) as u16;
            let km = (ch.minus >> (16 * h)) as u16;
            let k = kp | km;
            if k == 0 {
                continue;
            }
            for t in 0..T {
                // SAFETY: a set bit b of the half means column 32w + 16h + b < cols (padding
                // bits are zero), so the base column 32w + 16h lies inside token row j0 + t,
                // and the masked load reads only lanes of set bits.
                let xv = unsafe { _mm512_maskz_loadu_ps(k, xs[t].add(32 * ch.w + 16 * h)) };
                acc[t][h] = _mm512_mask_add_ps(acc[t][h], kp, acc[t][h], xv);
                acc[t][2 + h] = _mm512_mask_add_ps(acc[t][2 + h], km, acc[t][2 + h], xv);
            }
        }
    }
    if gcur != usize::MAX {
        flush_f32(&mut total, &mut acc, s[gcur]);
    }
    for t in 0..T {
        out[t] = _mm512_reduce_add_ps(total[t]);
    }
}

/// `total += s · (acc⁺ − acc⁻)` per token, then clears the accumulators.
#[inline]
#[target_feature(enable = "avx512f")]
fn flush_f32<const T: usize>(total: &mut [__m512; T], acc: &mut [[__m512; 4]; T], s: f32) {
    let sv = _mm512_set1_ps(s);
    for t in 0..T {
        let a = acc[t];
        let d = _mm512_sub_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
        total[t] = _mm512_fmadd_ps(d, sv, total[t]);
        acc[t] = [_mm512_setzero_ps(); 4];
    }
}

pub(super) fn masked_i8(_t: Avx512, v: &ChunkView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    let n = a.n();
    let work = (v.nonempty / v.rows.max(1) * 4 + 16) * n;
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

/// Row `r`, tokens `j0 .. j0 + T`, int8: exact `i32` group sums, the reference's `f32` order.
///
/// # Safety
/// AVX-512F/BW/VL/VNNI must be available; `r < rows`, `j0 + T ≤ a.n()`, `a.cols() == cols`,
/// `out.len() = T`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
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
    let ones = _mm256_set1_epi8(1);
    let zero = _mm256_setzero_si256();
    let mut sum = [0f32; T];
    // Two accumulators per token, alternating by chunk, to halve the vpdpbusd latency chain.
    let mut acc = [[zero; 2]; T];
    let mut gcur = usize::MAX;
    for ch in v.chunks(r) {
        let g = ch.w / wpg;
        if g != gcur {
            if gcur != usize::MAX {
                flush_i8(&mut sum, &mut acc, s[gcur]);
            }
            gcur = g;
        }
        for t in 0..T {
            // SAFETY: chunk w < wpr, so bytes 32w .. 32w + 32 lie in the padded row.
            let q = unsafe { _mm256_loadu_si256(qs[t].add(32 * ch.w).cast()) };
            let sv = _mm256_maskz_mov_epi8(ch.plus, q);
            let sv = _mm256_mask_sub_epi8(sv, ch.minus, zero, q);
            acc[t][0] = _mm256_dpbusd_epi32(acc[t][0], ones, sv);
            acc[t].swap(0, 1);
        }
    }
    if gcur != usize::MAX {
        flush_i8(&mut sum, &mut acc, s[gcur]);
    }
    for t in 0..T {
        out[t] = sum[t] * a.scales()[j0 + t];
    }
}

/// `sum += s · (acc as f32)` per token (the reference's order), then clears the accumulators.
#[inline]
#[target_feature(enable = "avx2")]
fn flush_i8<const T: usize>(sum: &mut [f32; T], acc: &mut [[__m256i; 2]; T], s: f32) {
    for t in 0..T {
        let v = hsum_epi32(_mm256_add_epi32(acc[t][0], acc[t][1]));
        sum[t] += s * v as f32;
        acc[t] = [_mm256_setzero_si256(); 2];
    }
}

/// Sum of the eight `i32` lanes (wrapping; exact when the true sum fits).
#[inline]
#[target_feature(enable = "avx2")]
fn hsum_epi32(v: __m256i) -> i32 {
    let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
    let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
    _mm_cvtsi128_si32(s)
}

// ---------------------------------------------------------------------------------------------
// Chunk panels (int8, vpdpbusd)
// ---------------------------------------------------------------------------------------------

/// Activations as `u8 = q + 128` in `panels` panels of 16 tokens: panel `p`, step `k` (columns
/// `4k .. 4k + 4`) is 64 bytes, token `16p + t` at bytes `4t .. 4t + 4`. Missing tokens are
/// `q = 0`.
fn pack_u8_panels(a: &QuantizedActivations, panels: usize) -> Vec<u8> {
    let steps = a.padded_cols() / 4;
    let mut packed = vec![0x80u8; panels * steps * 64];
    if steps == 0 {
        return packed;
    }
    packed
        .par_chunks_mut(steps * 64)
        .enumerate()
        .for_each(|(p, panel)| {
            for t in 0..16.min(a.n().saturating_sub(16 * p)) {
                let row = a.row(16 * p + t);
                for (src, dst) in row.chunks_exact(4).zip(panel.chunks_exact_mut(64)) {
                    for (d, &s) in dst[4 * t..4 * t + 4].iter_mut().zip(src) {
                        *d = (s as u8) ^ 0x80;
                    }
                }
            }
        });
    packed
}

pub(super) fn chunk_panels_i8(
    t: Avx512,
    v: &ChunkView<'_>,
    a: &QuantizedActivations,
    y: &mut [f32],
) {
    match a.n().div_ceil(16).min(MAX_Z) {
        0 | 1 => chunk_panels_i8_z::<1>(t, v, a, y),
        2 => chunk_panels_i8_z::<2>(t, v, a, y),
        3 => chunk_panels_i8_z::<3>(t, v, a, y),
        _ => chunk_panels_i8_z::<4>(t, v, a, y),
    }
}

fn chunk_panels_i8_z<const Z: usize>(
    _t: Avx512,
    v: &ChunkView<'_>,
    a: &QuantizedActivations,
    y: &mut [f32],
) {
    let n = a.n();
    let lanes = 16 * Z;
    let steps = a.padded_cols() / 4;
    let pgroups = n.div_ceil(lanes);
    let packed = pack_u8_panels(a, pgroups * Z);
    let mut ts = a.scales().to_vec();
    ts.resize(pgroups * lanes, 0.0);
    let work = (v.nonempty / v.rows.max(1) * 16 + 16) * n;
    par_rows(v.rows, work, n, y, |rows, out| {
        let mut tile = [0f32; 16 * MAX_Z];
        for pg in 0..pgroups {
            let panel = &packed[pg * Z * steps * 64..(pg + 1) * Z * steps * 64];
            let tsv = &ts[pg * lanes..(pg + 1) * lanes];
            let valid = (n - pg * lanes).min(lanes);
            for r in rows.clone() {
                // SAFETY: the token proves the CPU features; r < rows, `panel` holds Z panels
                // of `steps` 64-byte steps (steps = 8 · wpr), `tsv` 16Z scales and `tile`
                // at least 16Z floats.
                unsafe { chunk_panel_row::<Z>(v, r, panel, steps, tsv, &mut tile) };
                let o = (r - rows.start) * n + pg * lanes;
                out[o..o + valid].copy_from_slice(&tile[..valid]);
            }
        }
    });
}

/// Row `r` against `Z` 16-token panels: `tile[16z + t] = s_t · Σ_g s[r, g] · acc[g]` with
/// `acc[g] = Σ_{c ∈ g} t[r, c] · q[t, c]` exact.
///
/// # Safety
/// AVX-512F/BW/VL/VNNI/VPOPCNTDQ must be available; `r < rows`; `panel.len() = Z · steps · 64`
/// with `steps = 8 · wpr`; `ts.len() ≥ 16Z`; `tile.len() ≥ 16Z`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,popcnt")]
unsafe fn chunk_panel_row<const Z: usize>(
    v: &ChunkView<'_>,
    r: usize,
    panel: &[u8],
    steps: usize,
    ts: &[f32],
    tile: &mut [f32],
) {
    let wpg = v.words_per_group();
    let groups = v.scales.layout().groups_per_row(v.cols);
    let s = &v.scales.values()[r * groups..(r + 1) * groups];
    let ones = _mm256_set1_epi8(1);
    let minus_ones = _mm256_set1_epi8(-1);
    let idx: [__m512i; 8] = std::array::from_fn(|k| _mm512_set1_epi32(k as i32));
    let zero = _mm512_setzero_si512();
    let mut sum = [_mm512_setzero_ps(); Z];
    // Even and odd steps accumulate separately (two vpdpbusd chains per panel).
    let mut acc = [[zero; Z]; 2];
    let mut wsum = 0i32;
    let mut gcur = usize::MAX;
    let pp = panel.as_ptr();
    for ch in v.chunks(r) {
        let g = ch.w / wpg;
        if g != gcur {
            if gcur != usize::MAX {
                flush_panels(&mut sum, &mut acc, wsum, s[gcur]);
                wsum = 0;
            }
            gcur = g;
        }
        wsum += ch.plus.count_ones() as i32 - ch.minus.count_ones() as i32;
        let w8 = _mm256_mask_mov_epi8(_mm256_maskz_mov_epi8(ch.plus, ones), ch.minus, minus_ones);
        let w8 = _mm512_zextsi256_si512(w8);
        for k in 0..8 {
            let wb = _mm512_permutexvar_epi32(idx[k], w8);
            for z in 0..Z {
                // SAFETY: step 8w + k < 8 · wpr = steps, so bytes (z · steps + 8w + k) · 64
                // .. + 64 lie in panel z.
                let av =
                    unsafe { _mm512_loadu_si512(pp.add((z * steps + 8 * ch.w + k) * 64).cast()) };
                acc[k & 1][z] = _mm512_dpbusd_epi32(acc[k & 1][z], av, wb);
            }
        }
    }
    if gcur != usize::MAX {
        flush_panels(&mut sum, &mut acc, wsum, s[gcur]);
    }
    for z in 0..Z {
        // SAFETY: ts and tile hold at least 16Z values.
        unsafe {
            let sj = _mm512_loadu_ps(ts.as_ptr().add(16 * z));
            _mm512_storeu_ps(tile.as_mut_ptr().add(16 * z), _mm512_mul_ps(sum[z], sj));
        }
    }
}

/// `sum += s · ((acc − 128 · wsum) as f32)` per lane (mul, then add: the reference's
/// rounding), then clears the accumulators.
#[inline]
#[target_feature(enable = "avx512f")]
fn flush_panels<const Z: usize>(
    sum: &mut [__m512; Z],
    acc: &mut [[__m512i; Z]; 2],
    wsum: i32,
    s: f32,
) {
    let corr = _mm512_set1_epi32(wsum.wrapping_mul(128));
    let sv = _mm512_set1_ps(s);
    for z in 0..Z {
        let exact = _mm512_sub_epi32(_mm512_add_epi32(acc[0][z], acc[1][z]), corr);
        sum[z] = _mm512_add_ps(sum[z], _mm512_mul_ps(sv, _mm512_cvtepi32_ps(exact)));
        acc[0][z] = _mm512_setzero_si512();
        acc[1][z] = _mm512_setzero_si512();
    }
}

// ---------------------------------------------------------------------------------------------
// Walk panels
// ---------------------------------------------------------------------------------------------

/// Transposes `n` rows of `src` (row stride `stride`, first `cols` values used) into panels of
/// `lanes` tokens: `out[(p · cols + c) · lanes + t] = conv(src[(p · lanes + t) · stride + c])`,
/// zero for missing tokens.
fn transpose_panels<S, T>(
    src: &[S],
    n: usize,
    cols: usize,
    stride: usize,
    lanes: usize,
    conv: impl Fn(S) -> T + Sync,
) -> Vec<T>
where
    S: Copy + Sync,
    T: Copy + Default + Send,
{
    let panels = n.div_ceil(lanes);
    let mut out = vec![T::default(); panels * cols * lanes];
    if cols == 0 {
        return out;
    }
    out.par_chunks_mut(cols * lanes)
        .enumerate()
        .for_each(|(p, panel)| {
            let tokens = lanes.min(n - p * lanes);
            for c0 in (0..cols).step_by(64) {
                let c1 = (c0 + 64).min(cols);
                for t in 0..tokens {
                    let row = &src[(p * lanes + t) * stride..];
                    for c in c0..c1 {
                        panel[c * lanes + t] = conv(row[c]);
                    }
                }
            }
        });
    out
}

pub(super) fn walk_f32<W: WalkRows>(t: Avx512, m: &W, x: &[f32], n: usize, y: &mut [f32]) {
    match n.div_ceil(16).min(MAX_Z) {
        0 | 1 => walk_f32_z::<1, W>(t, m, x, n, y),
        2 => walk_f32_z::<2, W>(t, m, x, n, y),
        3 => walk_f32_z::<3, W>(t, m, x, n, y),
        _ => walk_f32_z::<4, W>(t, m, x, n, y),
    }
}

fn walk_f32_z<const Z: usize, W: WalkRows>(_t: Avx512, m: &W, x: &[f32], n: usize, y: &mut [f32]) {
    let (rows, cols) = (m.rows(), m.cols());
    let lanes = 16 * Z;
    let xt = transpose_panels(x, n, cols, cols, lanes, |v| v);
    let panels = n.div_ceil(lanes);
    par_rows(rows, walk_work(m.nnz(), rows, n), n, y, |rs, out| {
        let mut tile = [0f32; 16 * MAX_Z];
        for p in 0..panels {
            let panel = &xt[p * cols * lanes..(p + 1) * cols * lanes];
            let valid = (n - p * lanes).min(lanes);
            for r in rs.clone() {
                // SAFETY: the token proves the CPU features; r < rows, `panel` holds
                // cols · 16Z values and `tile` at least 16Z.
                unsafe { walk_f32_row::<Z, W>(m, r, panel, &mut tile) };
                let o = (r - rs.start) * n + p * lanes;
                out[o..o + valid].copy_from_slice(&tile[..valid]);
            }
        }
    });
}

/// Row `r` against one `f32` panel: `tile[l] = Σ_g s[r, g] · Σ_{c ∈ g} t[r, c] · x̃[c][l]`.
///
/// # Safety
/// AVX-512F must be available; `r < rows`; `panel.len() = cols · 16Z`; `tile.len() ≥ 16Z`.
#[target_feature(enable = "avx512f")]
unsafe fn walk_f32_row<const Z: usize, W: WalkRows>(
    m: &W,
    r: usize,
    panel: &[f32],
    tile: &mut [f32],
) {
    let cols = m.cols();
    let glen = group_len(m.scales(), cols);
    let groups = m.scales().layout().groups_per_row(cols);
    let s = &m.scales().values()[r * groups..(r + 1) * groups];
    let pp = panel.as_ptr();
    let zero = _mm512_setzero_ps();
    let (mut p, mut q) = m.cursors(r);
    let mut total = [zero; Z];
    loop {
        let c = p.pos().min(q.pos());
        if c == usize::MAX {
            break;
        }
        debug_assert!(c < cols);
        let g = c / glen;
        let end = ((g + 1) * glen).min(cols);
        // Two accumulator sets per sign, alternating, to halve the add latency chain.
        let mut a = [[zero; Z]; 2];
        let mut b = [[zero; Z]; 2];
        let mut k = 0;
        while p.pos() < end {
            // SAFETY: cursor positions are < cols (the `WalkRows` invariant) and the panel
            // holds cols · 16Z floats.
            let col = unsafe { pp.add(p.pos() * 16 * Z) };
            for z in 0..Z {
                // SAFETY: lanes 16z .. 16z + 16 of column `c` lie in the panel.
                a[k & 1][z] =
                    _mm512_add_ps(a[k & 1][z], unsafe { _mm512_loadu_ps(col.add(16 * z)) });
            }
            k += 1;
            p.advance();
        }
        while q.pos() < end {
            // SAFETY: as above.
            let col = unsafe { pp.add(q.pos() * 16 * Z) };
            for z in 0..Z {
                // SAFETY: as above.
                b[k & 1][z] =
                    _mm512_add_ps(b[k & 1][z], unsafe { _mm512_loadu_ps(col.add(16 * z)) });
            }
            k += 1;
            q.advance();
        }
        let sv = _mm512_set1_ps(s[g]);
        for z in 0..Z {
            let d = _mm512_sub_ps(
                _mm512_add_ps(a[0][z], a[1][z]),
                _mm512_add_ps(b[0][z], b[1][z]),
            );
            total[z] = _mm512_fmadd_ps(d, sv, total[z]);
        }
    }
    for z in 0..Z {
        // SAFETY: tile holds at least 16Z floats.
        unsafe { _mm512_storeu_ps(tile.as_mut_ptr().add(16 * z), total[z]) };
    }
}

pub(super) fn walk_i8<W: WalkRows>(t: Avx512, m: &W, a: &QuantizedActivations, y: &mut [f32]) {
    match a.n().div_ceil(16).min(MAX_Z) {
        0 | 1 => walk_i8_z::<1, W>(t, m, a, y),
        2 => walk_i8_z::<2, W>(t, m, a, y),
        3 => walk_i8_z::<3, W>(t, m, a, y),
        _ => walk_i8_z::<4, W>(t, m, a, y),
    }
}

fn walk_i8_z<const Z: usize, W: WalkRows>(
    _t: Avx512,
    m: &W,
    a: &QuantizedActivations,
    y: &mut [f32],
) {
    let (rows, cols, n) = (m.rows(), m.cols(), a.n());
    let lanes = 16 * Z;
    let xt = transpose_panels(a.data(), n, cols, a.padded_cols(), lanes, i32::from);
    let panels = n.div_ceil(lanes);
    let mut ts = a.scales().to_vec();
    ts.resize(panels * lanes, 0.0);
    par_rows(rows, walk_work(m.nnz(), rows, n), n, y, |rs, out| {
        let mut tile = [0f32; 16 * MAX_Z];
        for p in 0..panels {
            let panel = &xt[p * cols * lanes..(p + 1) * cols * lanes];
            let tsv = &ts[p * lanes..(p + 1) * lanes];
            let valid = (n - p * lanes).min(lanes);
            for r in rs.clone() {
                // SAFETY: the token proves the CPU features; r < rows, `panel` holds
                // cols · 16Z values, `tsv` 16Z scales and `tile` at least 16Z floats.
                unsafe { walk_i8_row::<Z, W>(m, r, panel, tsv, &mut tile) };
                let o = (r - rs.start) * n + p * lanes;
                out[o..o + valid].copy_from_slice(&tile[..valid]);
            }
        }
    });
}

/// Row `r` against one widened int8 panel: exact `i32` group sums, the reference's `f32` order,
/// then `· s_t`.
///
/// # Safety
/// AVX-512F must be available; `r < rows`; `panel.len() = cols · 16Z`; `ts.len() ≥ 16Z`;
/// `tile.len() ≥ 16Z`.
#[target_feature(enable = "avx512f")]
unsafe fn walk_i8_row<const Z: usize, W: WalkRows>(
    m: &W,
    r: usize,
    panel: &[i32],
    ts: &[f32],
    tile: &mut [f32],
) {
    let cols = m.cols();
    let glen = group_len(m.scales(), cols);
    let groups = m.scales().layout().groups_per_row(cols);
    let s = &m.scales().values()[r * groups..(r + 1) * groups];
    let pp = panel.as_ptr();
    let zero = _mm512_setzero_si512();
    let (mut p, mut q) = m.cursors(r);
    let mut sum = [_mm512_setzero_ps(); Z];
    loop {
        let c = p.pos().min(q.pos());
        if c == usize::MAX {
            break;
        }
        debug_assert!(c < cols);
        let g = c / glen;
        let end = ((g + 1) * glen).min(cols);
        let mut acc = [zero; Z];
        while p.pos() < end {
            // SAFETY: cursor positions are < cols (the `WalkRows` invariant) and the panel
            // holds cols · 16Z values.
            let col = unsafe { pp.add(p.pos() * 16 * Z) };
            for z in 0..Z {
                // SAFETY: lanes 16z .. 16z + 16 of column `c` lie in the panel.
                acc[z] = _mm512_add_epi32(acc[z], unsafe {
                    _mm512_loadu_si512(col.add(16 * z).cast())
                });
            }
            p.advance();
        }
        while q.pos() < end {
            // SAFETY: as above.
            let col = unsafe { pp.add(q.pos() * 16 * Z) };
            for z in 0..Z {
                // SAFETY: as above.
                acc[z] = _mm512_sub_epi32(acc[z], unsafe {
                    _mm512_loadu_si512(col.add(16 * z).cast())
                });
            }
            q.advance();
        }
        let sv = _mm512_set1_ps(s[g]);
        for z in 0..Z {
            sum[z] = _mm512_add_ps(sum[z], _mm512_mul_ps(sv, _mm512_cvtepi32_ps(acc[z])));
        }
    }
    for z in 0..Z {
        // SAFETY: ts and tile hold at least 16Z values.
        unsafe {
            let sj = _mm512_loadu_ps(ts.as_ptr().add(16 * z));
            _mm512_storeu_ps(tile.as_mut_ptr().add(16 * z), _mm512_mul_ps(sum[z], sj));
        }
    }
}
