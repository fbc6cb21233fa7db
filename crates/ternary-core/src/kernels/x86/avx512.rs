//! AVX-512 kernels (F, BW, VL, VNNI, VPOPCNTDQ).
//!
//! - `f32`: plane bits are loaded straight into `k` registers (16 columns each);
//!   `acc = mask_add(acc, k⁺, x)`, `acc = mask_sub(acc, k⁻, x)`; four rows per load of `x`
//!   and two tokens per mask load, over row blocks whose planes stay in L2.
//! - int8, few tokens: per 64 columns, `s = maskz_mov(k⁺, q)`, `s = mask_sub(s, k⁻, 0, q)`
//!   (`q ∈ [-127, 127]`, so `-q` never overflows), `acc = dpbusd(acc, 1, s)`; four rows per
//!   load of `q`, up to four tokens per mask load.
//!
//! Loads into mask registers issue at most about one per cycle on the machines measured, which
//! bounds both mask-based kernels at one token (two loads per 64 weights of a row for int8,
//! per 16 weights for f32).
//! - int8, few tokens, matrices repacked into 2-bit fields (`PackedTernary`, what the runtime
//!   holds): the field kernel of the AVX2 module compiled with this level's block product
//!   ([`VnniFields`]): a block's fields `e | o` (64 bytes, 256 columns) as one vector, each step
//!   `(v >> 2k) & 3` times 64 activation bytes by one `dpbusd`, 4 per block.
//! - int8, many tokens: weights are decoded once per block of rows to `i8` and reused for
//!   every token; activations are packed as `u8 = q + 128` in panels of 16 tokens so one
//!   `dpbusd` multiplies 4 columns of 16 tokens by a broadcast of 4 weights. The offset is
//!   removed exactly by starting each accumulator at `−128 · Σ_{c ∈ g} t[r, c]`.

// Register tiles are indexed by (row, token); index loops say that more plainly than zips.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;

use std::ops::Range;

use super::Avx512;
use super::avx2::{
    FieldCodes, FieldDot, PREFETCH_WORDS, RowFields, field_entry_points, field_row, gemm_i8_fields,
    small_field_row, small_field_rows8,
};
use super::f32_gemm::{FmaArgs, FmaTile, KC, gemm_f32_packed};
use super::panel_gemm::{PanelKernel, Tile, gemm_i8_panels};
use crate::activations::QuantizedActivations;
use crate::kernels::packed::{FieldMatrix, Trits};
use crate::kernels::{GroupWords, Rows, by_row_blocks};
use crate::matrix::TernaryMatrix;

/// Rows sharing one load of the activations in the `f32` and few-token int8 kernels.
const ROWS: usize = 4;
/// Tokens sharing each mask load in the few-token int8 kernel.
const TOKENS: usize = 4;
/// From this many tokens on, the int8 path decodes weights and runs the blocked GEMM.
const GEMM_MIN_TOKENS: usize = 11;
/// Plane bytes per block of rows in the `f32` kernel.
const MASK_BLOCK_BYTES: usize = 256 << 10;
/// From this many tokens on, the `f32` path decodes scaled weights and runs an FMA GEMM.
const F32_GEMM_MIN_TOKENS: usize = 16;
/// Rows of the `f32` GEMM register tile (12 rows × 32 tokens = 24 accumulators).
pub(super) const F32_MR: usize = 12;
/// Rows of the GEMM register tile (weights broadcast).
const MR: usize = 6;
/// 16-token panels of the GEMM register tile (activations in lanes).
const NZ: usize = 2;

pub(super) fn gemm_f32(t: Avx512, m: &TernaryMatrix, x: &[f32], n: usize, y: Rows<'_>) {
    if n >= F32_GEMM_MIN_TOKENS {
        gemm_f32_blocked(t, m, x, n, y);
        return;
    }
    // Rows whose plane words (both planes) fill about 256 KiB of L2; every token pair passes
    // over such a block before the next block is read, so neither x nor the planes stream
    // from L3 once per few rows.
    let block = (MASK_BLOCK_BYTES / (8 * m.words_per_row()).max(1) / ROWS).max(1) * ROWS;
    y.run(m.rows(), m.cols(), n, ROWS, |rows, out| {
        let mut b0 = rows.start;
        while b0 < rows.end {
            let b1 = (b0 + block).min(rows.end);
            let out_b = &mut out[(b0 - rows.start) * n..(b1 - rows.start) * n];
            let mut j0 = 0;
            while j0 < n {
                let pair = n - j0 >= 2;
                by_row_blocks(
                    b0..b1,
                    n,
                    ROWS,
                    out_b,
                    // SAFETY: the token proves the CPU features; `r..r + ROWS` are rows of
                    // `m`, `x` holds `n × cols` values, `o` holds `ROWS × n` outputs and
                    // `j0 + 2 ≤ n` when `pair` (else `j0 < n`).
                    |r, o| unsafe {
                        if pair {
                            f32_tile::<ROWS, 2>(m, x, n, r, j0, o)
                        } else {
                            f32_tile::<ROWS, 1>(m, x, n, r, j0, o)
                        }
                    },
                    // SAFETY: as above, for one row.
                    |r, o| unsafe {
                        if pair {
                            f32_tile::<1, 2>(m, x, n, r, j0, o)
                        } else {
                            f32_tile::<1, 1>(m, x, n, r, j0, o)
                        }
                    },
                );
                j0 += if pair { 2 } else { 1 };
            }
            b0 = b1;
        }
    });
}

/// Rows `r0..r0 + R` × tokens `j0..j0 + T`:
/// `out[i · n + j] = Σ_g s[r0 + i, g] · Σ_{c ∈ g} t[r0 + i, c] · x[j, c]`.
///
/// Each mask loaded into a `k` register serves all `T` tokens.
///
/// # Safety
/// AVX-512F/BW/VL and FMA must be available; `r0 + R ≤ rows`, `x.len() = n · cols`,
/// `out.len() = R · n`, `j0 + T ≤ n`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
unsafe fn f32_tile<const R: usize, const T: usize>(
    m: &TernaryMatrix,
    x: &[f32],
    n: usize,
    r0: usize,
    j0: usize,
    out: &mut [f32],
) {
    let cols = m.cols();
    let wpr = m.words_per_row();
    let layout = m.scales().layout();
    let groups = layout.groups_per_row(cols);
    let gcols = layout.group_len(cols);
    let scales = m.scales().values();
    // 16-column chunk `h` of row `r0 + i` is the `h`-th `u16` of its plane words.
    let plus: [*const u16; R] = std::array::from_fn(|i| m.plus()[(r0 + i) * wpr..].as_ptr().cast());
    let minus: [*const u16; R] =
        std::array::from_fn(|i| m.minus()[(r0 + i) * wpr..].as_ptr().cast());
    let xs: [&[f32]; T] = std::array::from_fn(|t| &x[(j0 + t) * cols..(j0 + t + 1) * cols]);
    let mut total = [[_mm512_setzero_ps(); T]; R];
    for g in 0..groups {
        let c0 = g * gcols;
        let c1 = (c0 + gcols).min(cols);
        let mut acc = [[_mm512_setzero_ps(); T]; R];
        let h1 = c1.div_ceil(16);
        for h in c0 / 16..h1 {
            let lanes = (c1 - 16 * h).min(16);
            let k = ((1u32 << lanes) - 1) as u16;
            // SAFETY: the (masked) loads touch columns 16h..16h + lanes ≤ c1 ≤ cols of each
            // token row; chunk h holds a column < cols, so it lies inside the plane words.
            let (xv, kp, km) = unsafe {
                let xv: [__m512; T] = std::array::from_fn(|t| {
                    if lanes == 16 {
                        _mm512_loadu_ps(xs[t].as_ptr().add(16 * h))
                    } else {
                        _mm512_maskz_loadu_ps(k, xs[t].as_ptr().add(16 * h))
                    }
                });
                let kp: [u16; R] = std::array::from_fn(|i| *plus[i].add(h));
                let km: [u16; R] = std::array::from_fn(|i| *minus[i].add(h));
                (xv, kp, km)
            };
            for i in 0..R {
                for t in 0..T {
                    acc[i][t] = _mm512_mask_add_ps(acc[i][t], kp[i], acc[i][t], xv[t]);
                    acc[i][t] = _mm512_mask_sub_ps(acc[i][t], km[i], acc[i][t], xv[t]);
                }
            }
        }
        for i in 0..R {
            let s = _mm512_set1_ps(scales[(r0 + i) * groups + g]);
            for t in 0..T {
                total[i][t] = _mm512_fmadd_ps(acc[i][t], s, total[i][t]);
            }
        }
    }
    for i in 0..R {
        for t in 0..T {
            out[i * n + j0 + t] = _mm512_reduce_add_ps(total[i][t]);
        }
    }
}

pub(super) fn gemm_i8(t: Avx512, m: &TernaryMatrix, a: &QuantizedActivations, y: Rows<'_>) {
    if a.n() > 16 {
        gemm_i8_blocked::<MR>(t, m, a, y);
        return;
    }
    if a.n() >= GEMM_MIN_TOKENS {
        // One 16-token panel: more rows per tile keep enough dot products in flight.
        gemm_i8_blocked::<{ 2 * MR }>(t, m, a, y);
        return;
    }
    let n = a.n();
    if n == 1 {
        // One token (a decode step): sixteen rows per tile, one row per lane.
        y.run(m.rows(), m.cols(), n, LANE_ROWS, |rows, out| {
            by_row_blocks(
                rows,
                n,
                LANE_ROWS,
                out,
                // SAFETY: the token proves the CPU features; `r..r + 16` are rows of `m` and
                // `o` holds 16 outputs; `a.cols() == m.cols()` was checked.
                |r, o| unsafe { i8_lane_rows(m, a, r, o) },
                // SAFETY: as above, for one row.
                |r, o| unsafe { i8_rows::<1>(m, a, r, o) },
            );
        });
        return;
    }
    y.run(m.rows(), m.cols(), n, ROWS, |rows, out| {
        by_row_blocks(
            rows,
            n,
            ROWS,
            out,
            // SAFETY: the token proves the CPU features; `r..r + ROWS` are rows of `m`
            // and `o` holds `ROWS × n` outputs; `a.cols() == m.cols()` was checked.
            |r, o| unsafe { i8_rows::<ROWS>(m, a, r, o) },
            // SAFETY: as above, for one row.
            |r, o| unsafe { i8_rows::<1>(m, a, r, o) },
        );
    });
}

/// Rows per tile of [`i8_lane_rows`]: one per `f32` lane.
const LANE_ROWS: usize = 16;

/// Rows `r0..r0 + 16`, one token, int8. Per group, one `i32` accumulator per row (masked
/// codes, `vpdpbusd`), [`reduce16`] puts row `i`'s exact group sum in lane `i`, and
/// `sum += s[r, g] · (Σ as f32)` runs lane-wise: each lane is one row's chain in the
/// reference's order (multiply, then add; no FMA), so the outputs are bit-identical to
/// [`i8_rows`] while a group costs one reduction for sixteen rows.
///
/// # Safety
/// AVX-512F/BW/VL/VNNI must be available; `r0 + 16 ≤ rows`, `a.n() == 1`,
/// `a.cols() == m.cols()`, `out.len() = 16`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn i8_lane_rows(m: &TernaryMatrix, a: &QuantizedActivations, r0: usize, out: &mut [f32]) {
    let gw = GroupWords::of(m);
    let (wpr, groups) = (gw.words_per_row, gw.groups);
    let q = a.row(0).as_ptr();
    let plus = m.plus()[r0 * wpr..].as_ptr();
    let minus = m.minus()[r0 * wpr..].as_ptr();
    let scales = m.scales().values()[r0 * groups..].as_ptr();
    // Lane i reads scale (r0 + i, g): `i · groups` floats after (r0, g).
    let stride = _mm512_mullo_epi32(
        _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
        _mm512_set1_epi32(groups as i32),
    );
    let ones = _mm512_set1_epi8(1);
    let zero = _mm512_setzero_si512();
    let mut sum = _mm512_setzero_ps();
    for g in 0..groups {
        let words = gw.range(g);
        let mut acc = [zero; LANE_ROWS];
        let mut w = words.start;
        while w + 2 <= words.end {
            // The next tile's rows (the 16 · wpr words after these, in both planes), 128 bytes
            // per plane per step: over a tile's wpr / 2 steps, exactly the next tile. A
            // prefetch never faults; `wrapping_add` keeps the address arithmetic defined past
            // the planes' end.
            let ahead = LANE_ROWS * (wpr + w);
            _mm_prefetch::<_MM_HINT_T0>(plus.wrapping_add(ahead).cast());
            _mm_prefetch::<_MM_HINT_T0>(plus.wrapping_add(ahead + 16).cast());
            _mm_prefetch::<_MM_HINT_T0>(minus.wrapping_add(ahead).cast());
            _mm_prefetch::<_MM_HINT_T0>(minus.wrapping_add(ahead + 16).cast());
            // SAFETY: bytes 32w..32w + 64 lie in the padded token row; words w, w + 1 of each
            // of the 16 rows lie in the planes (read as one little-endian u64).
            unsafe {
                let xv = _mm512_loadu_si512(q.add(32 * w).cast());
                for (i, acc) in acc.iter_mut().enumerate() {
                    let kp = plus.add(i * wpr + w).cast::<u64>().read_unaligned();
                    let km = minus.add(i * wpr + w).cast::<u64>().read_unaligned();
                    let s = _mm512_maskz_mov_epi8(kp, xv);
                    let s = _mm512_mask_sub_epi8(s, km, zero, xv);
                    *acc = _mm512_dpbusd_epi32(*acc, ones, s);
                }
            }
            w += 2;
        }
        if w < words.end {
            // SAFETY: bytes 32w..32w + 32 lie in the padded token row; word w of each row
            // lies in the planes.
            unsafe {
                let xv = _mm512_zextsi256_si512(_mm256_loadu_si256(q.add(32 * w).cast()));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let kp = u64::from(*plus.add(i * wpr + w));
                    let km = u64::from(*minus.add(i * wpr + w));
                    let s = _mm512_maskz_mov_epi8(kp, xv);
                    let s = _mm512_mask_sub_epi8(s, km, zero, xv);
                    *acc = _mm512_dpbusd_epi32(*acc, ones, s);
                }
            }
        }
        // SAFETY: lane i reads scale (r0 + i, g), inside the scales of rows r0..r0 + 16.
        let sg = unsafe { _mm512_i32gather_ps::<4>(stride, scales.add(g)) };
        sum = _mm512_add_ps(sum, _mm512_mul_ps(sg, _mm512_cvtepi32_ps(reduce16(&acc))));
    }
    let v = _mm512_mul_ps(sum, _mm512_set1_ps(a.scales()[0]));
    // SAFETY: `out` holds 16 floats.
    unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
}

/// Rows `r0..r0 + R`, every token, int8: exact `i32` group sums, then the reference's `f32` order.
///
/// Tokens go in blocks of up to [`TOKENS`], so each plane mask loaded into a `k` register (at
/// most one such load per cycle) serves several tokens.
///
/// # Safety
/// AVX-512F/BW/VL/VNNI must be available; `r0 + R ≤ rows`, `a.cols() == m.cols()`,
/// `out.len() = R · a.n()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn i8_rows<const R: usize>(
    m: &TernaryMatrix,
    a: &QuantizedActivations,
    r0: usize,
    out: &mut [f32],
) {
    let mut j0 = 0;
    while j0 < a.n() {
        let t = (a.n() - j0).min(TOKENS);
        // SAFETY: forwarded from the caller; j0 + t ≤ n.
        unsafe {
            match t {
                1 => i8_tile::<R, 1>(m, a, r0, j0, out),
                2 => i8_tile::<R, 2>(m, a, r0, j0, out),
                3 => i8_tile::<R, 3>(m, a, r0, j0, out),
                _ => i8_tile::<R, TOKENS>(m, a, r0, j0, out),
            }
        }
        j0 += t;
    }
}

/// Rows `r0..r0 + R` × tokens `j0..j0 + T` of [`i8_rows`].
///
/// # Safety
/// As [`i8_rows`], and `j0 + T ≤ a.n()`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn i8_tile<const R: usize, const T: usize>(
    m: &TernaryMatrix,
    a: &QuantizedActivations,
    r0: usize,
    j0: usize,
    out: &mut [f32],
) {
    let gw = GroupWords::of(m);
    let wpr = gw.words_per_row;
    let n = a.n();
    let scales = m.scales().values();
    let plus: [&[u32]; R] = std::array::from_fn(|i| &m.plus()[(r0 + i) * wpr..(r0 + i + 1) * wpr]);
    let minus: [&[u32]; R] =
        std::array::from_fn(|i| &m.minus()[(r0 + i) * wpr..(r0 + i + 1) * wpr]);
    // Each padded row has 32 · words_per_row bytes.
    let q: [&[i8]; T] = std::array::from_fn(|t| a.row(j0 + t));
    let ones = _mm512_set1_epi8(1);
    let zero = _mm512_setzero_si512();
    let mut sum = [[0f32; T]; R];
    // The `R · T` group accumulators of up to `batch` groups are reduced together
    // (`reduce16`: about 3 instructions per accumulator instead of `reduce_add`'s 9); the
    // exact `i32` sums are then added to `sum` one group at a time, the reference's order.
    const { assert!(R * T <= 16) };
    let per = R * T;
    let batch = 16 / per;
    let mut pend = [zero; 16];
    let mut lanes = [0i32; 16];
    let mut g0 = 0;
    while g0 < gw.groups {
        let gn = batch.min(gw.groups - g0);
        for b in 0..gn {
            let g = g0 + b;
            let words = gw.range(g);
            let mut acc = [[zero; T]; R];
            let mut w = words.start;
            while w + 2 <= words.end {
                // SAFETY: bytes 32w..32w + 64 ≤ 32 · words_per_row lie in each padded row; words
                // w, w + 1 lie in each row's plane slice (read as one little-endian u64).
                let (xv, kp, km) = unsafe {
                    let xv: [__m512i; T] = std::array::from_fn(|t| {
                        _mm512_loadu_si512(q[t].as_ptr().add(32 * w).cast())
                    });
                    let kp: [u64; R] = std::array::from_fn(|i| {
                        plus[i].as_ptr().add(w).cast::<u64>().read_unaligned()
                    });
                    let km: [u64; R] = std::array::from_fn(|i| {
                        minus[i].as_ptr().add(w).cast::<u64>().read_unaligned()
                    });
                    (xv, kp, km)
                };
                for i in 0..R {
                    for t in 0..T {
                        let s = _mm512_maskz_mov_epi8(kp[i], xv[t]);
                        let s = _mm512_mask_sub_epi8(s, km[i], zero, xv[t]);
                        acc[i][t] = _mm512_dpbusd_epi32(acc[i][t], ones, s);
                    }
                }
                w += 2;
            }
            if w < words.end {
                // SAFETY: bytes 32w..32w + 32 lie in each padded row.
                let xv: [__m512i; T] = std::array::from_fn(|t| unsafe {
                    _mm512_zextsi256_si512(_mm256_loadu_si256(q[t].as_ptr().add(32 * w).cast()))
                });
                for i in 0..R {
                    for t in 0..T {
                        let s = _mm512_maskz_mov_epi8(u64::from(plus[i][w]), xv[t]);
                        let s = _mm512_mask_sub_epi8(s, u64::from(minus[i][w]), zero, xv[t]);
                        acc[i][t] = _mm512_dpbusd_epi32(acc[i][t], ones, s);
                    }
                }
            }
            for i in 0..R {
                for t in 0..T {
                    pend[b * per + i * T + t] = acc[i][t];
                }
            }
        }
        if gn * per == 1 {
            lanes[0] = _mm512_reduce_add_epi32(pend[0]);
        } else {
            // SAFETY: `lanes` holds 16 `i32`.
            unsafe { _mm512_storeu_si512(lanes.as_mut_ptr().cast(), reduce16(&pend)) };
        }
        for b in 0..gn {
            for i in 0..R {
                let sg = scales[(r0 + i) * gw.groups + g0 + b];
                for t in 0..T {
                    sum[i][t] += sg * lanes[b * per + i * T + t] as f32;
                }
            }
        }
        g0 += gn;
    }
    for i in 0..R {
        for t in 0..T {
            out[i * n + j0 + t] = sum[i][t] * a.scales()[j0 + t];
        }
    }
}

/// Lane `k` of the result is the sum of the sixteen `i32` lanes of `v[k]` (wrapping, as
/// `_mm512_reduce_add_epi32`; integer sums do not depend on the order). Pairs, then quads,
/// are summed inside each 128-bit lane by unpacking, then the four 128-bit lanes of four
/// vectors are transposed and summed: 45 instructions for 16 reductions.
#[inline]
#[target_feature(enable = "avx512f")]
fn reduce16(v: &[__m512i; 16]) -> __m512i {
    // Per 128-bit lane: [a0 + a2, b0 + b2, a1 + a3, b1 + b3] of a = v[2k], b = v[2k + 1].
    let p: [__m512i; 8] = std::array::from_fn(|k| {
        let (a, b) = (v[2 * k], v[2 * k + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi32(a, b), _mm512_unpackhi_epi32(a, b))
    });
    // Per 128-bit lane L: the lane-L sums of v[4k], v[4k + 1], v[4k + 2], v[4k + 3].
    let q: [__m512i; 4] = std::array::from_fn(|k| {
        let (a, b) = (p[2 * k], p[2 * k + 1]);
        _mm512_add_epi32(_mm512_unpacklo_epi64(a, b), _mm512_unpackhi_epi64(a, b))
    });
    // [x.L0 + x.L1, x.L2 + x.L3, y.L0 + y.L1, y.L2 + y.L3].
    let fold = |x: __m512i, y: __m512i| {
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0b10_00_10_00>(x, y),
            _mm512_shuffle_i32x4::<0b11_01_11_01>(x, y),
        )
    };
    fold(fold(q[0], q[1]), fold(q[2], q[3]))
}

/// `f32` GEMM with decoded weights: `w[r, c] = s[r, g(c)] · t[r, c]` is written out as `f32`
/// per block ([`gemm_f32_packed`]).
fn gemm_f32_blocked(t: Avx512, m: &TernaryMatrix, x: &[f32], n: usize, y: Rows<'_>) {
    let pc = 32 * m.words_per_row();
    gemm_f32_packed(
        Fma512(t),
        m.rows(),
        m.cols(),
        pc,
        x,
        n,
        y,
        |r0, nr, k0, kc, decoded| decode_scaled_rows(t, m, r0, nr, k0, kc, decoded),
    );
}

/// The AVX-512 register tile of the `f32` panel GEMM: 12 rows × two 16-token panels.
#[derive(Clone, Copy)]
pub(super) struct Fma512(pub(super) Avx512);

impl FmaTile for Fma512 {
    const MR: usize = F32_MR;
    const PANELS: usize = 2;

    unsafe fn tile(self, nz: usize, t: FmaArgs<'_>, out: &mut [f32]) {
        // SAFETY: the token proves AVX-512F; the bounds are the caller's.
        unsafe {
            if nz == 2 {
                fma_tile::<2>(t, out);
            } else {
                fma_tile::<1>(t, out);
            }
        }
    }

    fn avx2(self) -> super::Avx2 {
        self.0.avx2()
    }
}

/// Writes `w[r, c] = s[r, g(c)] · t[r, c]` for rows `r0..r0 + nr`, columns `k0..k0 + kc`
/// into `out[(r − r0) · KC + c − k0]`.
fn decode_scaled_rows(
    _t: Avx512,
    m: &TernaryMatrix,
    r0: usize,
    nr: usize,
    k0: usize,
    kc: usize,
    out: &mut [f32],
) {
    // SAFETY: the token proves AVX-512F/BW.
    unsafe { decode_scaled_rows_impl(m, r0, nr, k0, kc, out) }
}

/// # Safety
/// AVX-512F/BW must be available; `r0 + nr ≤ rows`, `nr ≤ MC`, `k0` and `kc` multiples of
/// 16 with `k0 + kc ≤ 32 · words_per_row`, `kc ≤ KC`, `out.len() ≥ nr · KC`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn decode_scaled_rows_impl(
    m: &TernaryMatrix,
    r0: usize,
    nr: usize,
    k0: usize,
    kc: usize,
    out: &mut [f32],
) {
    let layout = m.scales().layout();
    let groups = layout.groups_per_row(m.cols());
    // Columns per scale; a 16-column chunk never straddles two groups (groups are multiples of 32).
    let gcols = layout.group_len(m.cols()).max(1);
    let scales = m.scales().values();
    for i in 0..nr {
        let (p, mi) = m.row_planes(r0 + i);
        let s = &scales[(r0 + i) * groups..(r0 + i + 1) * groups];
        let row = &mut out[i * KC..i * KC + kc];
        for (h, dst) in row.chunks_exact_mut(16).enumerate() {
            let c = k0 + 16 * h;
            let (word, shift) = (c / 32, c % 32);
            let kp = (p[word] >> shift) as u16;
            let km = (mi[word] >> shift) as u16;
            // Padding columns past the last group have zero bits; any scale will do.
            let sg = s.get(c / gcols).copied().unwrap_or(0.0);
            let v = _mm512_mask_mov_ps(
                _mm512_maskz_mov_ps(kp, _mm512_set1_ps(sg)),
                km,
                _mm512_set1_ps(-sg),
            );
            // SAFETY: `dst` holds 16 floats.
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), v) };
        }
    }
}

/// [`FmaTile::tile`] with `Z` panels: `out[first + i · n + t] += Σ_k w[i · KC + k] ·
/// panel[z · pstride + k · 16 + t mod 16]` for rows `i < rows` and tokens `t < tokens`.
///
/// # Safety
/// AVX-512F must be available; the bounds of [`FmaTile::tile`] with `PANELS = Z`.
#[target_feature(enable = "avx512f")]
unsafe fn fma_tile<const Z: usize>(t: FmaArgs<'_>, out: &mut [f32]) {
    let FmaArgs {
        w,
        panel,
        pstride,
        kc,
        first,
        n,
        rows,
        tokens,
    } = t;
    let lanes: [u16; Z] = std::array::from_fn(|z| {
        let l = tokens.saturating_sub(16 * z).min(16);
        ((1u32 << l) - 1) as u16
    });
    let mut acc = [[_mm512_setzero_ps(); Z]; F32_MR];
    let wp = w.as_ptr();
    let pp = panel.as_ptr();
    // Rows past `rows` read row 0 again (their results are dropped).
    let row_at: [usize; F32_MR] = std::array::from_fn(|i| if i < rows { i * KC } else { 0 });
    for k in 0..kc {
        // SAFETY: k < kc: panel floats z · pstride + 16k .. +16 and weight i · KC + k are
        // in bounds.
        unsafe {
            let xv: [__m512; Z] =
                std::array::from_fn(|z| _mm512_loadu_ps(pp.add(z * pstride + 16 * k)));
            for i in 0..F32_MR {
                let wv = _mm512_set1_ps(*wp.add(row_at[i] + k));
                for z in 0..Z {
                    acc[i][z] = _mm512_fmadd_ps(wv, xv[z], acc[i][z]);
                }
            }
        }
    }
    for i in 0..rows {
        for z in 0..Z {
            if lanes[z] == 0 {
                continue;
            }
            let at = first + i * n + 16 * z;
            // SAFETY: the masked lanes are tokens 16z.. < tokens, inside out[first + i · n ..].
            unsafe {
                let o = out.as_mut_ptr().add(at);
                let v = _mm512_add_ps(_mm512_maskz_loadu_ps(lanes[z], o), acc[i][z]);
                _mm512_mask_storeu_ps(o, lanes[z], v);
            }
        }
    }
}

/// The VNNI tile of the panel GEMM with `MR` rows per register tile.
#[derive(Clone, Copy)]
struct Vnni<const MR: usize>(Avx512);

impl<const MR: usize> PanelKernel for Vnni<MR> {
    const MR: usize = MR;
    const PANELS: usize = NZ;

    fn decode_rows(self, m: &TernaryMatrix, r0: usize, nr: usize, out: &mut [i8]) {
        decode_rows(self.0, m, r0, nr, out)
    }

    unsafe fn tile(self, nz: usize, t: Tile<'_>, out: &mut [f32]) {
        let Tile {
            w,
            panel,
            steps,
            gw,
            wsum,
            wscale,
            ts,
        } = t;
        // SAFETY: the token proves the CPU features; the bounds are the caller's.
        unsafe {
            if nz == NZ {
                tile_kernel::<MR, NZ>(w, panel, steps, gw, wsum, wscale, ts, out);
            } else {
                tile_kernel::<MR, 1>(w, panel, steps, gw, wsum, wscale, ts, out);
            }
        }
    }
}

/// [`gemm_i8`] of a matrix repacked into 2-bit fields (`PackedTernary`): below
/// [`GEMM_MIN_TOKENS`] the field kernel reading the fields as stored, with this level's block
/// product ([`VnniFields`]); from there on the VNNI panel GEMM on blocks of rows turned back
/// into planes. Bit-identical to [`gemm_i8`] on the planes (both equal the reference's order).
pub(super) fn gemm_i8_packed(t: Avx512, f: &FieldMatrix, a: &QuantizedActivations, y: Rows<'_>) {
    let fields = Trits::Fields(f);
    if a.n() > 16 {
        gemm_i8_panels(Vnni::<MR>(t), fields, a, y);
    } else if a.n() >= GEMM_MIN_TOKENS {
        gemm_i8_panels(Vnni::<{ 2 * MR }>(t), fields, a, y);
    } else {
        gemm_i8_fields::<_, true>(VnniFields(t), &fields, a, y);
    }
}

/// The AVX-512 [`FieldDot`]: a block's even and odd fields as one 512-bit vector `e | o`,
/// each 2-bit step `(v >> 2k) & 3` multiplied by the 64 activation bytes of step `k` with
/// `dpbusd` (`u8` fields × `i8` codes, four products per `i32` lane, exact), so lane `d` sums
/// word `d`'s even columns and lane `8 + d` its odd ones: 4 `dpbusd` per 256 columns, where
/// the AVX2 kernel needs 8 `maddubs` and their `i16` adds.
#[derive(Clone, Copy, Debug)]
struct VnniFields(Avx512);

impl FieldDot for VnniFields {
    /// `e | o`.
    type Block = __m512i;
    type Acc = __m512i;
    /// `i32` lanes: at most 4 · 4 · 2 · 127 = 4064 per block, so 2¹⁶ blocks (16.7M columns)
    /// stay below 2³¹.
    const BLOCKS: usize = 1 << 16;

    fn avx2(self) -> super::Avx2 {
        self.0.avx2()
    }

    #[inline(always)]
    unsafe fn zero() -> __m512i {
        // SAFETY: AVX-512F is enabled (caller).
        unsafe { _mm512_setzero_si512() }
    }

    #[inline(always)]
    unsafe fn load<const F: bool>(row: RowFields<'_>, w0: usize, lanes: usize) -> __m512i {
        // SAFETY: AVX-512F is enabled and the words lie in the row (caller); a full block of
        // fields is its 16 words `e | o` from `2 · w0` (`FieldMatrix`).
        unsafe {
            if F && lanes == 8 {
                let e = row.fields.as_ptr().add(2 * w0);
                // A hint, as `RowFields::block` gives: the address may lie past the fields.
                _mm_prefetch::<_MM_HINT_T0>(e.wrapping_add(2 * PREFETCH_WORDS).cast());
                _mm512_loadu_si512(e.cast())
            } else {
                let (e, o) = row.block::<F>(w0, lanes);
                _mm512_inserti64x4::<1>(_mm512_castsi256_si512(e), o)
            }
        }
    }

    #[inline(always)]
    unsafe fn add(acc: __m512i, v: __m512i, x: *const i8) -> __m512i {
        // SAFETY: AVX-512F/BW/VNNI are enabled and `x` holds the block's 256 bytes (caller).
        unsafe {
            let three = _mm512_set1_epi8(3);
            let step = |k: usize| _mm512_loadu_si512(x.add(64 * k).cast());
            let a0 = _mm512_dpbusd_epi32(acc, _mm512_and_si512(v, three), step(0));
            let a1 = _mm512_dpbusd_epi32(
                _mm512_setzero_si512(),
                _mm512_and_si512(_mm512_srli_epi16::<2>(v), three),
                step(1),
            );
            let a0 = _mm512_dpbusd_epi32(
                a0,
                _mm512_and_si512(_mm512_srli_epi16::<4>(v), three),
                step(2),
            );
            let a1 = _mm512_dpbusd_epi32(
                a1,
                _mm512_and_si512(_mm512_srli_epi16::<6>(v), three),
                step(3),
            );
            _mm512_add_epi32(a0, a1)
        }
    }

    #[inline(always)]
    unsafe fn words(acc: __m512i) -> __m256i {
        // SAFETY: AVX-512F is enabled (caller).
        unsafe {
            _mm256_add_epi32(
                _mm512_castsi512_si256(acc),
                _mm512_extracti64x4_epi64::<1>(acc),
            )
        }
    }

    field_entry_points!(VnniFields, "avx512f,avx512bw,avx512vl,avx512vnni,avx2");
}

fn gemm_i8_blocked<const MR: usize>(
    t: Avx512,
    m: &TernaryMatrix,
    a: &QuantizedActivations,
    y: Rows<'_>,
) {
    gemm_i8_panels(Vnni::<MR>(t), Trits::Planes(m), a, y)
}

/// Decodes `nr` rows from `r0` to `i8` trits, `32 · words_per_row` bytes per row.
fn decode_rows(_t: Avx512, m: &TernaryMatrix, r0: usize, nr: usize, out: &mut [i8]) {
    // SAFETY: the token proves AVX-512F/BW.
    unsafe { decode_rows_impl(m, r0, nr, out) }
}

/// # Safety
/// AVX-512F/BW must be available; `out.len() = nr · 32 · words_per_row`, `r0 + nr ≤ rows`.
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn decode_rows_impl(m: &TernaryMatrix, r0: usize, nr: usize, out: &mut [i8]) {
    let wpr = m.words_per_row();
    let pc = 32 * wpr;
    let ones = _mm512_set1_epi8(1);
    let minus_ones = _mm512_set1_epi8(-1);
    for i in 0..nr {
        let (p, mi) = m.row_planes(r0 + i);
        let row = &mut out[i * pc..(i + 1) * pc];
        for (c, dst) in row.chunks_exact_mut(64).enumerate() {
            let kp = u64::from(p[2 * c]) | (u64::from(p[2 * c + 1]) << 32);
            let km = u64::from(mi[2 * c]) | (u64::from(mi[2 * c + 1]) << 32);
            let v = _mm512_mask_mov_epi8(_mm512_maskz_mov_epi8(kp, ones), km, minus_ones);
            // SAFETY: `dst` is 64 bytes.
            unsafe { _mm512_storeu_si512(dst.as_mut_ptr().cast(), v) };
        }
    }
}

/// One `MR × 16·Z` tile over all columns: `tile[i · 16Z + t] = y` of row `i`, token `t`.
///
/// # Safety
/// AVX-512F/BW/VNNI must be available; `w.len() = MR · 4 · steps`, `panel.len() ≥ Z · steps · 64`,
/// `wsum.len() = wscale.len() = MR · groups`, `ts.len() ≥ 16 · Z`, `tile.len() ≥ MR · 16 · Z`,
/// and the group word ranges end at or before `steps / 8` words.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni")]
unsafe fn tile_kernel<const MR: usize, const Z: usize>(
    w: &[i8],
    panel: &[u8],
    steps: usize,
    gw: GroupWords,
    wsum: &[i32],
    wscale: &[f32],
    ts: &[f32],
    tile: &mut [f32],
) {
    let pc = 4 * steps;
    let groups = gw.groups;
    let wp = w.as_ptr();
    let pp = panel.as_ptr();
    let mut sum = [[_mm512_setzero_ps(); Z]; MR];
    for g in 0..groups {
        let words = gw.range(g);
        let mut acc: [[__m512i; Z]; MR] =
            std::array::from_fn(|i| [_mm512_set1_epi32(-128 * wsum[i * groups + g]); Z]);
        for k in 8 * words.start..8 * words.end {
            // SAFETY: k < steps, so panel bytes (z · steps + k) · 64 .. +64 and weight bytes
            // i · pc + 4k .. +4 are in bounds.
            unsafe {
                let av: [__m512i; Z] = std::array::from_fn(|z| {
                    _mm512_loadu_si512(pp.add((z * steps + k) * 64).cast())
                });
                for i in 0..MR {
                    let wv =
                        _mm512_set1_epi32(wp.add(i * pc + 4 * k).cast::<i32>().read_unaligned());
                    for z in 0..Z {
                        acc[i][z] = _mm512_dpbusd_epi32(acc[i][z], av[z], wv);
                    }
                }
            }
        }
        for i in 0..MR {
            let s = _mm512_set1_ps(wscale[i * groups + g]);
            for z in 0..Z {
                sum[i][z] =
                    _mm512_add_ps(sum[i][z], _mm512_mul_ps(s, _mm512_cvtepi32_ps(acc[i][z])));
            }
        }
    }
    for z in 0..Z {
        // SAFETY: ts holds at least 16 · Z scales.
        let sj = unsafe { _mm512_loadu_ps(ts.as_ptr().add(16 * z)) };
        for i in 0..MR {
            let v = _mm512_mul_ps(sum[i][z], sj);
            // SAFETY: i · 16Z + 16z + 16 ≤ MR · 16 · Z ≤ tile.len().
            unsafe { _mm512_storeu_ps(tile.as_mut_ptr().add(i * 16 * Z + 16 * z), v) };
        }
    }
}

/// # Safety
/// AVX-512F and VPOPCNTDQ must be available; all slices have the same length.
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
pub(super) unsafe fn ternary_dot(ap: &[u32], am: &[u32], bp: &[u32], bm: &[u32]) -> i64 {
    let len = ap.len();
    let mut same = _mm512_setzero_si512();
    let mut diff = _mm512_setzero_si512();
    let mut i = 0;
    while i < len {
        let k = if len - i >= 16 {
            u16::MAX
        } else {
            ((1u32 << (len - i)) - 1) as u16
        };
        // SAFETY: the mask covers only words i..min(i + 16, len) of each slice.
        let (a_p, a_m, b_p, b_m) = unsafe {
            (
                _mm512_maskz_loadu_epi32(k, ap.as_ptr().add(i).cast()),
                _mm512_maskz_loadu_epi32(k, am.as_ptr().add(i).cast()),
                _mm512_maskz_loadu_epi32(k, bp.as_ptr().add(i).cast()),
                _mm512_maskz_loadu_epi32(k, bm.as_ptr().add(i).cast()),
            )
        };
        let s = _mm512_or_si512(_mm512_and_si512(a_p, b_p), _mm512_and_si512(a_m, b_m));
        let d = _mm512_or_si512(_mm512_and_si512(a_p, b_m), _mm512_and_si512(a_m, b_p));
        same = _mm512_add_epi64(same, _mm512_popcnt_epi64(s));
        diff = _mm512_add_epi64(diff, _mm512_popcnt_epi64(d));
        i += 16;
    }
    _mm512_reduce_add_epi64(same) - _mm512_reduce_add_epi64(diff)
}

/// `popc(a XOR b)` over all words.
///
/// # Safety
/// AVX-512F and VPOPCNTDQ must be available; `a.len() == b.len()`.
#[target_feature(enable = "avx512f,avx512vpopcntdq")]
pub(super) unsafe fn xor_popcount(a: &[u32], b: &[u32]) -> u64 {
    let len = a.len();
    let mut acc = _mm512_setzero_si512();
    let mut i = 0;
    while i < len {
        let k = if len - i >= 16 {
            u16::MAX
        } else {
            ((1u32 << (len - i)) - 1) as u16
        };
        // SAFETY: the mask covers only words i..min(i + 16, len) of each slice.
        let (va, vb) = unsafe {
            (
                _mm512_maskz_loadu_epi32(k, a.as_ptr().add(i).cast()),
                _mm512_maskz_loadu_epi32(k, b.as_ptr().add(i).cast()),
            )
        };
        acc = _mm512_add_epi64(acc, _mm512_popcnt_epi64(_mm512_xor_si512(va, vb)));
        i += 16;
    }
    _mm512_reduce_add_epi64(acc) as u64
}

/// [`scalar::quantize_row_i8`](crate::kernels::scalar::quantize_row_i8), sixteen lanes at a
/// time (the AVX2 version's arithmetic; the tail by masked loads and stores).
///
/// # Safety
/// AVX-512F/BW must be available; `q.len() ≥ row.len()`; `row` is finite.
#[target_feature(enable = "avx512f,avx512bw")]
pub(super) unsafe fn quantize_row_i8(row: &[f32], q: &mut [i8]) -> f32 {
    let n = row.len();
    let mask = |c: usize| -> u16 {
        let k = (n - c).min(16);
        ((1u32 << k) - 1) as u16
    };
    let mut m = _mm512_setzero_ps();
    for c in (0..n).step_by(16) {
        // SAFETY: the mask covers elements c..min(c + 16, n) only.
        let v = unsafe { _mm512_maskz_loadu_ps(mask(c), row.as_ptr().add(c)) };
        m = _mm512_max_ps(m, _mm512_abs_ps(v));
    }
    let amax = _mm512_reduce_max_ps(m);
    if amax == 0.0 {
        return 0.0;
    }
    let inv = 127.0 / amax;
    let (vinv, magic) = (_mm512_set1_ps(inv), _mm512_set1_ps(12_582_912.0));
    let (lo, hi) = (_mm512_set1_ps(-127.0), _mm512_set1_ps(127.0));
    for c in (0..n).step_by(16) {
        let k = mask(c);
        // SAFETY: the masked load and store touch elements c..min(c + 16, n) ≤ q.len().
        unsafe {
            let v = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, row.as_ptr().add(c)), vinv);
            let r = _mm512_sub_ps(_mm512_add_ps(v, magic), magic);
            let i = _mm512_cvttps_epi32(_mm512_min_ps(_mm512_max_ps(r, lo), hi));
            _mm512_mask_cvtepi32_storeu_epi8(q.as_mut_ptr().add(c).cast(), k, i);
        }
    }
    amax / 127.0
}
