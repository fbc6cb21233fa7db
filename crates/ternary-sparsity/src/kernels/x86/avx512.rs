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
use crate::kernels::{
    ChunkView, DecodedRows, PANEL_PARALLEL_TOKENS, WalkRows, decode_all, decode_block_rows,
    par_panels, par_rows, walk_work,
};

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
    // Current group and its first chunk past the end (a division only when it changes).
    let (mut gcur, mut gend) = (usize::MAX, 0usize);
    for ch in v.chunks(r) {
        if ch.w >= gend {
            if gcur != usize::MAX {
                flush_f32(&mut total, &mut acc, s[gcur]);
            }
            gcur = ch.w / wpg;
            gend = (gcur + 1) * wpg;
        }
        // Both halves always run (an empty half loads and adds nothing): a branch on
        // emptiness would mispredict on unstructured weights.
        for h in 0..2 {
            let kp = (ch.plus >> (16 * h)) as u16;
            let km = (ch.minus >> (16 * h)) as u16;
            let k = kp | km;
            // Column 32w is < cols (the chunk is non-empty); 32w + 16h is < cols when the
            // half has a set bit. An empty half loads from 32w with an empty mask.
            let base = if k == 0 {
                32 * ch.w
            } else {
                32 * ch.w + 16 * h
            };
            for t in 0..T {
                // SAFETY: `base` is a column < cols of token row j0 + t (see above), and the
                // masked load reads only lanes of set bits, which are columns < cols.
                let xv = unsafe { _mm512_maskz_loadu_ps(k, xs[t].add(base)) };
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
    // Current group and its first chunk past the end (a division only when it changes).
    let (mut gcur, mut gend) = (usize::MAX, 0usize);
    for ch in v.chunks(r) {
        if ch.w >= gend {
            if gcur != usize::MAX {
                flush_i8(&mut sum, &mut acc, s[gcur]);
            }
            gcur = ch.w / wpg;
            gend = (gcur + 1) * wpg;
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
        let v = ternary_core::kernels::x86_primitives::hsum_epi32(_mm256_add_epi32(
            acc[t][0], acc[t][1],
        ));
        sum[t] += s * v as f32;
        acc[t] = [_mm256_setzero_si256(); 2];
    }
}

// ---------------------------------------------------------------------------------------------
// Chunk panels (int8, vpdpbusd)
// ---------------------------------------------------------------------------------------------

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
    if n >= PANEL_PARALLEL_TOKENS && Z == MAX_Z {
        chunk_panels_i8_by_panels(_t, v, a, y);
        return;
    }
    let packed = a.u8_panels(0, pgroups * Z);
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

/// [`chunk_panels_i8_z`] with 64-token panels as the parallel unit: each task packs its own
/// panels and writes its tokens' outputs in place.
fn chunk_panels_i8_by_panels(
    _t: Avx512,
    v: &ChunkView<'_>,
    a: &QuantizedActivations,
    y: &mut [f32],
) {
    let (rows, n) = (v.rows, a.n());
    let lanes = 16 * MAX_Z;
    let steps = a.padded_cols() / 4;
    par_panels(rows, lanes, y, |p, yp| {
        let valid = yp.len() / rows;
        let panel = a.u8_panels(p * lanes, MAX_Z);
        let mut ts = a.scales()[p * lanes..(p * lanes + valid).min(n)].to_vec();
        ts.resize(lanes, 0.0);
        let mut tile = [0f32; 16 * MAX_Z];
        for r in 0..rows {
            // SAFETY: the token proves the CPU features; r < rows, `panel` holds MAX_Z panels
            // of `steps` 64-byte steps (steps = 8 · wpr), `ts` 64 scales and `tile` 64 floats.
            unsafe { chunk_panel_row::<MAX_Z>(v, r, &panel, steps, &ts, &mut tile) };
            for (t, &val) in tile[..valid].iter().enumerate() {
                yp[t * rows + r] = val;
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
    // Current group and its first chunk past the end (a division only when it changes).
    let (mut gcur, mut gend) = (usize::MAX, 0usize);
    let pp = panel.as_ptr();
    for ch in v.chunks(r) {
        if ch.w >= gend {
            if gcur != usize::MAX {
                flush_panels(&mut sum, &mut acc, wsum, s[gcur]);
                wsum = 0;
            }
            gcur = ch.w / wpg;
            gend = (gcur + 1) * wpg;
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
    if n >= PANEL_PARALLEL_TOKENS && Z == MAX_Z {
        walk_f32_by_panels(_t, m, x, n, y);
        return;
    }
    let lanes = 16 * Z;
    let xt = transpose_panels(x, n, cols, cols, lanes, |v| v);
    let panels = n.div_ceil(lanes);
    let groups = m.scales().layout().groups_per_row(cols);
    let scales = m.scales().values();
    let block = decode_block_rows(m.nnz(), rows);
    par_rows(rows, walk_work(m.nnz(), rows, n), n, y, |rs, out| {
        let mut tile = [0f32; 16 * MAX_Z];
        let mut dec = DecodedRows::default();
        let mut r0 = rs.start;
        while r0 < rs.end {
            let r1 = (r0 + block).min(rs.end);
            dec.decode(m, r0..r1);
            for p in 0..panels {
                let panel = &xt[p * cols * lanes..(p + 1) * cols * lanes];
                let valid = (n - p * lanes).min(lanes);
                for (i, r) in (r0..r1).enumerate() {
                    let s = &scales[r * groups..(r + 1) * groups];
                    // SAFETY: the token proves the CPU features; the decoded columns are
                    // < cols, `panel` holds cols · 16Z values and `tile` at least 16Z.
                    unsafe { walk_f32_row::<Z>(&dec, i, s, panel, &mut tile) };
                    let o = (r - rs.start) * n + p * lanes;
                    out[o..o + valid].copy_from_slice(&tile[..valid]);
                }
            }
            r0 = r1;
        }
    });
}

/// [`walk_f32_z`] with 64-token panels as the parallel unit: all rows are decoded once, each
/// task transposes its own panel and writes its tokens' outputs in place.
fn walk_f32_by_panels<W: WalkRows>(_t: Avx512, m: &W, x: &[f32], n: usize, y: &mut [f32]) {
    let (rows, cols) = (m.rows(), m.cols());
    let lanes = 16 * MAX_Z;
    let groups = m.scales().layout().groups_per_row(cols);
    let scales = m.scales().values();
    let decoded = decode_all(m);
    par_panels(rows, lanes, y, |p, yp| {
        let valid = yp.len() / rows;
        let xs = &x[p * lanes * cols..(p * lanes + valid).min(n) * cols];
        let panel = transpose_panels(xs, valid, cols, cols, lanes, |v| v);
        let mut tile = [0f32; 16 * MAX_Z];
        for (range, dec) in &decoded {
            for (i, r) in range.clone().enumerate() {
                let s = &scales[r * groups..(r + 1) * groups];
                // SAFETY: the token proves the CPU features; the decoded columns are < cols,
                // `panel` holds cols · 64 values and `tile` 64.
                unsafe { walk_f32_row::<MAX_Z>(dec, i, s, &panel, &mut tile) };
                for (t, &val) in tile[..valid].iter().enumerate() {
                    yp[t * rows + r] = val;
                }
            }
        }
    });
}

/// Sum of the panel columns listed in `pos`, into two alternating accumulator sets.
///
/// # Safety
/// AVX-512F must be available; every position is `< cols` and `pp` points at a panel of
/// `cols · 16Z` floats.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn sum_columns_f32<const Z: usize>(pos: &[u32], pp: *const f32, acc: &mut [[__m512; Z]; 2]) {
    let mut pairs = pos.chunks_exact(2);
    for pair in &mut pairs {
        for (k, &c) in pair.iter().enumerate() {
            // SAFETY: c < cols, so lanes c · 16Z .. c · 16Z + 16Z lie in the panel.
            let col = unsafe { pp.add(c as usize * 16 * Z) };
            for z in 0..Z {
                // SAFETY: as above.
                let v = unsafe { _mm512_loadu_ps(col.add(16 * z)) };
                acc[k][z] = _mm512_add_ps(acc[k][z], v);
            }
        }
    }
    for &c in pairs.remainder() {
        // SAFETY: as above.
        let col = unsafe { pp.add(c as usize * 16 * Z) };
        for z in 0..Z {
            // SAFETY: as above.
            let v = unsafe { _mm512_loadu_ps(col.add(16 * z)) };
            acc[0][z] = _mm512_add_ps(acc[0][z], v);
        }
    }
}

/// Decoded row `i` against one `f32` panel:
/// `tile[l] = Σ_g s[g] · (Σ_{c ∈ g, t=+1} x̃[c][l] − Σ_{c ∈ g, t=−1} x̃[c][l])`.
///
/// # Safety
/// AVX-512F must be available; the decoded columns are `< cols`; `panel.len() = cols · 16Z`;
/// `s` holds the row's scales; `tile.len() ≥ 16Z`.
#[target_feature(enable = "avx512f")]
unsafe fn walk_f32_row<const Z: usize>(
    dec: &DecodedRows,
    i: usize,
    s: &[f32],
    panel: &[f32],
    tile: &mut [f32],
) {
    let pp = panel.as_ptr();
    let zero = _mm512_setzero_ps();
    let mut total = [zero; Z];
    for seg in dec.row(i) {
        let mut a = [[zero; Z]; 2];
        let mut b = [[zero; Z]; 2];
        let (start, mid, end) = (seg.start as usize, seg.plus_end as usize, seg.end as usize);
        // SAFETY: decoded columns are < cols and the panel holds cols · 16Z floats.
        unsafe {
            sum_columns_f32::<Z>(&dec.pos[start..mid], pp, &mut a);
            sum_columns_f32::<Z>(&dec.pos[mid..end], pp, &mut b);
        }
        let sv = _mm512_set1_ps(s[seg.group as usize]);
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
    match a.n().div_ceil(16) {
        0 | 1 => walk_i8_z::<1, W>(t, m, a, y),
        2 => walk_i8_z::<2, W>(t, m, a, y),
        // Above 32 tokens: 64-token panels of i16, half the bytes per weight.
        _ => walk_i16(t, m, a, y),
    }
}

/// Elements summed in `i16` lanes before widening: `256 · 127 < 2¹⁵`.
const I16_RUN: usize = 256;

fn walk_i16<W: WalkRows>(_t: Avx512, m: &W, a: &QuantizedActivations, y: &mut [f32]) {
    let (rows, cols, n) = (m.rows(), m.cols(), a.n());
    if n >= PANEL_PARALLEL_TOKENS {
        walk_i16_by_panels(_t, m, a, y);
        return;
    }
    let lanes = 64;
    let xt = transpose_panels(a.data(), n, cols, a.padded_cols(), lanes, i16::from);
    let panels = n.div_ceil(lanes);
    let mut ts = a.scales().to_vec();
    ts.resize(panels * lanes, 0.0);
    let groups = m.scales().layout().groups_per_row(cols);
    let scales = m.scales().values();
    let block = decode_block_rows(m.nnz(), rows);
    par_rows(rows, walk_work(m.nnz(), rows, n), n, y, |rs, out| {
        let mut tile = [0f32; 64];
        let mut dec = DecodedRows::default();
        let mut r0 = rs.start;
        while r0 < rs.end {
            let r1 = (r0 + block).min(rs.end);
            dec.decode(m, r0..r1);
            for p in 0..panels {
                let panel = &xt[p * cols * lanes..(p + 1) * cols * lanes];
                let tsv = &ts[p * lanes..(p + 1) * lanes];
                let valid = (n - p * lanes).min(lanes);
                for (i, r) in (r0..r1).enumerate() {
                    let s = &scales[r * groups..(r + 1) * groups];
                    // SAFETY: the token proves the CPU features; the decoded columns are
                    // < cols, `panel` holds cols · 64 values, `tsv` 64 scales and `tile` 64.
                    unsafe { walk_i16_row(&dec, i, s, panel, tsv, &mut tile) };
                    let o = (r - rs.start) * n + p * lanes;
                    out[o..o + valid].copy_from_slice(&tile[..valid]);
                }
            }
            r0 = r1;
        }
    });
}

/// [`walk_i16`] with 64-token panels as the parallel unit (see [`walk_f32_by_panels`]).
fn walk_i16_by_panels<W: WalkRows>(_t: Avx512, m: &W, a: &QuantizedActivations, y: &mut [f32]) {
    let (rows, cols, n) = (m.rows(), m.cols(), a.n());
    let (lanes, pc) = (64, a.padded_cols());
    let groups = m.scales().layout().groups_per_row(cols);
    let scales = m.scales().values();
    let decoded = decode_all(m);
    par_panels(rows, lanes, y, |p, yp| {
        let valid = yp.len() / rows;
        let t0 = p * lanes;
        let qs = &a.data()[t0 * pc..(t0 + valid).min(n) * pc];
        let panel = transpose_panels(qs, valid, cols, pc, lanes, i16::from);
        let mut ts = a.scales()[t0..(t0 + valid).min(n)].to_vec();
        ts.resize(lanes, 0.0);
        let mut tile = [0f32; 64];
        for (range, dec) in &decoded {
            for (i, r) in range.clone().enumerate() {
                let s = &scales[r * groups..(r + 1) * groups];
                // SAFETY: the token proves the CPU features; the decoded columns are < cols,
                // `panel` holds cols · 64 values, `ts` 64 scales and `tile` 64.
                unsafe { walk_i16_row(dec, i, s, &panel, &ts, &mut tile) };
                for (t, &val) in tile[..valid].iter().enumerate() {
                    yp[t * rows + r] = val;
                }
            }
        }
    });
}

/// `acc32 += acc16` widened (64 token lanes: two `i16` vectors into four `i32` vectors).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn widen_add(acc32: &mut [__m512i; 4], acc16: [__m512i; 2]) {
    for z in 0..2 {
        let lo = _mm512_cvtepi16_epi32(_mm512_castsi512_si256(acc16[z]));
        let hi = _mm512_cvtepi16_epi32(_mm512_extracti64x4_epi64::<1>(acc16[z]));
        acc32[2 * z] = _mm512_add_epi32(acc32[2 * z], lo);
        acc32[2 * z + 1] = _mm512_add_epi32(acc32[2 * z + 1], hi);
    }
}

/// Decoded row `i` against one 64-token `i16` panel: runs of at most 256 weights summed in
/// `i16` (exact: `|Σ| ≤ 256 · 127`), widened to `i32`, then the reference's `f32` order.
///
/// # Safety
/// AVX-512F/BW must be available; the decoded columns are `< cols`;
/// `panel.len() = cols · 64`; `s` holds the row's scales; `ts.len() ≥ 64`; `tile.len() ≥ 64`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn walk_i16_row(
    dec: &DecodedRows,
    i: usize,
    s: &[f32],
    panel: &[i16],
    ts: &[f32],
    tile: &mut [f32],
) {
    let pp = panel.as_ptr();
    let zero = _mm512_setzero_si512();
    let mut sum = [_mm512_setzero_ps(); 4];
    for seg in dec.row(i) {
        let mut acc32 = [zero; 4];
        let (start, mid, end) = (seg.start as usize, seg.plus_end as usize, seg.end as usize);
        for run in dec.pos[start..mid].chunks(I16_RUN) {
            let mut acc = [zero; 2];
            for &c in run {
                // SAFETY: c < cols, so lanes c · 64 .. c · 64 + 64 lie in the panel.
                unsafe {
                    let col = pp.add(c as usize * 64);
                    acc[0] = _mm512_add_epi16(acc[0], _mm512_loadu_si512(col.cast()));
                    acc[1] = _mm512_add_epi16(acc[1], _mm512_loadu_si512(col.add(32).cast()));
                }
            }
            widen_add(&mut acc32, acc);
        }
        for run in dec.pos[mid..end].chunks(I16_RUN) {
            let mut acc = [zero; 2];
            for &c in run {
                // SAFETY: as above.
                unsafe {
                    let col = pp.add(c as usize * 64);
                    acc[0] = _mm512_sub_epi16(acc[0], _mm512_loadu_si512(col.cast()));
                    acc[1] = _mm512_sub_epi16(acc[1], _mm512_loadu_si512(col.add(32).cast()));
                }
            }
            widen_add(&mut acc32, acc);
        }
        let sv = _mm512_set1_ps(s[seg.group as usize]);
        for z in 0..4 {
            sum[z] = _mm512_add_ps(sum[z], _mm512_mul_ps(sv, _mm512_cvtepi32_ps(acc32[z])));
        }
    }
    for z in 0..4 {
        // SAFETY: ts and tile hold at least 64 values.
        unsafe {
            let sj = _mm512_loadu_ps(ts.as_ptr().add(16 * z));
            _mm512_storeu_ps(tile.as_mut_ptr().add(16 * z), _mm512_mul_ps(sum[z], sj));
        }
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
    let groups = m.scales().layout().groups_per_row(cols);
    let scales = m.scales().values();
    let block = decode_block_rows(m.nnz(), rows);
    par_rows(rows, walk_work(m.nnz(), rows, n), n, y, |rs, out| {
        let mut tile = [0f32; 16 * MAX_Z];
        let mut dec = DecodedRows::default();
        let mut r0 = rs.start;
        while r0 < rs.end {
            let r1 = (r0 + block).min(rs.end);
            dec.decode(m, r0..r1);
            for p in 0..panels {
                let panel = &xt[p * cols * lanes..(p + 1) * cols * lanes];
                let tsv = &ts[p * lanes..(p + 1) * lanes];
                let valid = (n - p * lanes).min(lanes);
                for (i, r) in (r0..r1).enumerate() {
                    let s = &scales[r * groups..(r + 1) * groups];
                    // SAFETY: the token proves the CPU features; the decoded columns are
                    // < cols, `panel` holds cols · 16Z values, `tsv` 16Z scales and `tile`
                    // at least 16Z floats.
                    unsafe { walk_i8_row::<Z>(&dec, i, s, panel, tsv, &mut tile) };
                    let o = (r - rs.start) * n + p * lanes;
                    out[o..o + valid].copy_from_slice(&tile[..valid]);
                }
            }
            r0 = r1;
        }
    });
}

/// Decoded row `i` against one widened int8 panel: exact `i32` group sums, the reference's
/// `f32` order, then `· s_t`.
///
/// # Safety
/// AVX-512F must be available; the decoded columns are `< cols`; `panel.len() = cols · 16Z`;
/// `s` holds the row's scales; `ts.len() ≥ 16Z`; `tile.len() ≥ 16Z`.
#[target_feature(enable = "avx512f")]
unsafe fn walk_i8_row<const Z: usize>(
    dec: &DecodedRows,
    i: usize,
    s: &[f32],
    panel: &[i32],
    ts: &[f32],
    tile: &mut [f32],
) {
    let pp = panel.as_ptr();
    let zero = _mm512_setzero_si512();
    let mut sum = [_mm512_setzero_ps(); Z];
    for seg in dec.row(i) {
        let mut acc = [zero; Z];
        let (start, mid, end) = (seg.start as usize, seg.plus_end as usize, seg.end as usize);
        for &c in &dec.pos[start..mid] {
            // SAFETY: c < cols, so lanes c · 16Z .. c · 16Z + 16Z lie in the panel.
            let col = unsafe { pp.add(c as usize * 16 * Z) };
            for z in 0..Z {
                // SAFETY: as above.
                let v = unsafe { _mm512_loadu_si512(col.add(16 * z).cast()) };
                acc[z] = _mm512_add_epi32(acc[z], v);
            }
        }
        for &c in &dec.pos[mid..end] {
            // SAFETY: as above.
            let col = unsafe { pp.add(c as usize * 16 * Z) };
            for z in 0..Z {
                // SAFETY: as above.
                let v = unsafe { _mm512_loadu_si512(col.add(16 * z).cast()) };
                acc[z] = _mm512_sub_epi32(acc[z], v);
            }
        }
        let sv = _mm512_set1_ps(s[seg.group as usize]);
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

// ---------------------------------------------------------------------------------------------
// Index lists, few tokens: vector gap decoding and gathers
// ---------------------------------------------------------------------------------------------

/// Decodes a gap code (see `crate::lists`) into its columns, 16 bytes per step: with
/// `v = b + 1` for a weight byte and `v = 255` for an escape, the weight in lane `i` sits at
/// column `next + (v₀ + … + vᵢ) − 1` (an inclusive prefix sum in four shifted adds); the
/// weight lanes are compressed into `out`. Returns the number of columns written.
///
/// # Safety
/// AVX-512F/BW/VL must be available; `out.len() ≥ k + 16` where `k` is the number of columns
/// the code holds.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn decode_gaps(code: &[u8], out: &mut [u32]) -> usize {
    let ones = _mm512_set1_epi32(1);
    let escape = _mm512_set1_epi32(i32::from(crate::lists::ESCAPE));
    let last = _mm512_set1_epi32(15);
    let zero = _mm512_setzero_si512();
    let mut next = zero;
    let mut count = 0usize;
    let mut i = 0;
    while i < code.len() {
        let lanes = (code.len() - i).min(16);
        let tail = ((1u32 << lanes) - 1) as u16;
        // SAFETY: the mask reads only bytes i .. i + lanes of `code`.
        let b = _mm512_cvtepu8_epi32(unsafe {
            _mm_maskz_loadu_epi8(tail, code.as_ptr().add(i).cast())
        });
        let esc = _mm512_cmpeq_epi32_mask(b, escape);
        let v = _mm512_maskz_add_epi32(tail, b, _mm512_maskz_mov_epi32(!esc, ones));
        let v = _mm512_add_epi32(v, _mm512_alignr_epi32::<15>(v, zero));
        let v = _mm512_add_epi32(v, _mm512_alignr_epi32::<14>(v, zero));
        let v = _mm512_add_epi32(v, _mm512_alignr_epi32::<12>(v, zero));
        let v = _mm512_add_epi32(v, _mm512_alignr_epi32::<8>(v, zero));
        let cols = _mm512_sub_epi32(_mm512_add_epi32(next, v), ones);
        let keep = tail & !esc;
        // SAFETY: `count` columns were written so far, at most k − (weights in this step), so
        // out[count .. count + 16] lies in `out` (len ≥ k + 16).
        unsafe {
            _mm512_storeu_si512(
                out.as_mut_ptr().add(count).cast(),
                _mm512_maskz_compress_epi32(keep, cols),
            );
        }
        count += keep.count_ones() as usize;
        next = _mm512_add_epi32(next, _mm512_permutexvar_epi32(last, v));
        i += 16;
    }
    count
}

/// `Σ_{c ∈ run} x[c]` (`f32`): two 16-lane gathers a step, the tail masked.
///
/// # Safety
/// AVX-512F must be available; every column of `run` is `< cols` and `x` points at `cols`
/// floats.
#[target_feature(enable = "avx512f")]
unsafe fn gather_run_f32(run: &[u32], x: *const f32) -> f32 {
    let (mut a0, mut a1) = (_mm512_setzero_ps(), _mm512_setzero_ps());
    let mut k = 0;
    while k + 32 <= run.len() {
        // SAFETY: run[k .. k + 32] are in bounds; gathered lanes are columns < cols.
        unsafe {
            let v0 = _mm512_loadu_si512(run.as_ptr().add(k).cast());
            let v1 = _mm512_loadu_si512(run.as_ptr().add(k + 16).cast());
            a0 = _mm512_add_ps(a0, _mm512_i32gather_ps::<4>(v0, x));
            a1 = _mm512_add_ps(a1, _mm512_i32gather_ps::<4>(v1, x));
        }
        k += 32;
    }
    while k < run.len() {
        let m = ((1u32 << (run.len() - k).min(16)) - 1) as u16;
        // SAFETY: the mask covers run[k .. min(k + 16, len)]; gathered lanes are columns
        // < cols.
        unsafe {
            let v = _mm512_maskz_loadu_epi32(m, run.as_ptr().add(k).cast());
            a0 = _mm512_add_ps(
                a0,
                _mm512_mask_i32gather_ps::<4>(_mm512_setzero_ps(), m, v, x),
            );
        }
        k += 16;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(a0, a1))
}

/// `Σ_{c ∈ run} x[c]` in exact (wrapping) `i32`.
///
/// # Safety
/// As [`gather_run_f32`], with `x` pointing at `cols` `i32` values.
#[target_feature(enable = "avx512f")]
unsafe fn gather_run_i32(run: &[u32], x: *const i32) -> i32 {
    let (mut a0, mut a1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
    let mut k = 0;
    while k + 32 <= run.len() {
        // SAFETY: run[k .. k + 32] are in bounds; gathered lanes are columns < cols.
        unsafe {
            let v0 = _mm512_loadu_si512(run.as_ptr().add(k).cast());
            let v1 = _mm512_loadu_si512(run.as_ptr().add(k + 16).cast());
            a0 = _mm512_add_epi32(a0, _mm512_i32gather_epi32::<4>(v0, x));
            a1 = _mm512_add_epi32(a1, _mm512_i32gather_epi32::<4>(v1, x));
        }
        k += 32;
    }
    while k < run.len() {
        let m = ((1u32 << (run.len() - k).min(16)) - 1) as u16;
        // SAFETY: the mask covers run[k .. min(k + 16, len)]; gathered lanes are columns
        // < cols.
        unsafe {
            let v = _mm512_maskz_loadu_epi32(m, run.as_ptr().add(k).cast());
            a0 = _mm512_add_epi32(
                a0,
                _mm512_mask_i32gather_epi32::<4>(_mm512_setzero_si512(), m, v, x),
            );
        }
        k += 16;
    }
    _mm512_reduce_add_epi32(_mm512_add_epi32(a0, a1))
}

impl super::ListKernels for Avx512 {
    const PAD: usize = 16;

    unsafe fn decode(self, code: &[u8], out: &mut [u32]) -> usize {
        // SAFETY: the token proves the CPU features; the caller gives `out` the slack.
        unsafe { decode_gaps(code, out) }
    }

    unsafe fn run_f32(self, run: &[u32], x: &[f32]) -> f32 {
        // SAFETY: the token proves the CPU features; the caller keeps every column < x.len().
        unsafe { gather_run_f32(run, x.as_ptr()) }
    }

    unsafe fn run_i32(self, run: &[u32], x: &[i32]) -> i32 {
        // SAFETY: as `run_f32`.
        unsafe { gather_run_i32(run, x.as_ptr()) }
    }
}
