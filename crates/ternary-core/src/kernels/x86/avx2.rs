//! AVX2 kernels (with FMA, POPCNT and F16C).
//!
//! - `f32`, fewer than 16 tokens: a broadcast plane word shifted left by `31 − i` (`vpsllvd`)
//!   puts bit `i` in the sign bit of lane `i`, which `blendv` uses to pick `x` or `0`; four
//!   rows per load of `x`.
//! - `f32`, 16 tokens or more: weights decoded to `s · t` in `f32` per cache block and the
//!   panel GEMM shared with AVX-512 (`f32_gemm`), a 6 × 16 broadcast-FMA tile (SmolLM2
//!   all-ternary prefill of 512 tokens on 1 thread of the Intel host at this level: 55 → 275
//!   tokens/s).
//! - int8 bit order: a broadcast plane word shifted left by `7 − d` in lane `d` puts bit
//!   `8b + d` in the sign bit of byte `4d + b`, so activations are permuted once per call to
//!   that order (byte `4d + b` of each 32-column chunk holds column `8b + d`); then one shift
//!   per plane word gives 32 byte masks.
//! - int8, few tokens (< 16), scale groups of more than 8 words ("fields"): per 256 columns
//!   and row, one load of each plane gives 2-bit fields `v = p + ¬m = 1 + t` (an integer add
//!   of the masked planes, even and odd columns apart), split by shift and mask into bytes;
//!   `maddubs(v, q)` with activations permuted to match, and `Σ t·q = Σ v·q − Σ q` per group.
//! - int8, few tokens (< 16), groups of 1, 2, 4 or 8 words (32…256 columns): the same fields
//!   over the row's 8-word blocks, `Σ q` subtracted per word, eight group sums at a time by
//!   `hadd`, scaled in one vector; one token runs eight rows at once and adds their products
//!   in group order after an 8 × 8 transpose (one row per lane).
//! - int8, few tokens (< 4), other groups: per 32 columns and row,
//!   `s = blend(blend(0, q, p), −q, m) = t · q`, `maddubs(1, s)` adds pairs into `i16` lanes
//!   (128 words before widening to `i32`); four rows per activation load, up to two tokens
//!   per expanded word.
//! - int8, 4–15 tokens where no field kernel applies: weights decoded to `i8` trits once per
//!   block of rows and chunk of columns, activations as `u = q + 128`, a 3 × 3 register tile
//!   of `maddubs(u, t)` dot products; the offset `128 · Σ t` is removed exactly per group.
//! - int8, 16 tokens or more: the panel GEMM shared with AVX-512 (`panel_gemm`), tokens in
//!   lanes: per 4 columns, `maddubs(u, broadcast(4 trits))` for 4 rows × 16 tokens, `i16`
//!   sums widened every 64 steps. On this project's Intel host at the AVX2 level it doubled a
//!   SmolLM2 prefill against the field kernels (pp512 231 → 521 tokens/s on 1 thread).
//! - popcount: the nibble-lookup method (`vpshufb` + `vpsadbw`).

// Register tiles are indexed by (row, token); index loops say that more plainly than zips.
#![allow(clippy::needless_range_loop)]

use std::arch::x86_64::*;
use std::ops::Range;

use super::Avx2;
use super::f32_gemm::{FmaArgs, FmaTile, KC, gemm_f32_packed};
use super::panel_gemm::{PanelKernel, Tile, gemm_i8_panels};
use crate::activations::QuantizedActivations;
use crate::kernels::aligned::Aligned;
use crate::kernels::packed::{FieldMatrix, Trits};
use crate::kernels::{DenseWeight, GroupWords, Rows, by_row_blocks, popcount, scalar};
use crate::matrix::TernaryMatrix;

/// Rows sharing one load of the activations.
const ROWS: usize = 4;
/// Plane bytes per block of rows kept in cache while every token passes over it.
const BLOCK_BYTES: usize = 256 << 10;
/// Words summed in `i16` lanes of `maddubs(1, ±q)` before widening: `128 · 2 · 127 < 2¹⁵`.
const I16_WORDS: usize = 128;
/// Plane words per block of the few-token field kernel: one 256-bit load of each plane.
const PACK_WORDS: usize = 8;
/// Activation bytes per block of the field kernel (`32 · PACK_WORDS`).
const PACK_BYTES: usize = 32 * PACK_WORDS;
/// Blocks summed in `i16` lanes of the field kernel before widening: a block adds four
/// `maddubs(v, q)` pairs (`|v·q + v'·q'| ≤ 2 · 2 · 127`) to each lane of the even and of the
/// odd sum, `16 · 4 · 508 < 2¹⁵`.
const FIELD_BLOCKS: usize = 16;
/// How far ahead of the current block the field kernel prefetches plane words (2 KiB per
/// plane: the next row's first blocks near a row's end).
pub(super) const PREFETCH_WORDS: usize = 512;
/// Words summed in `i16` lanes of `maddubs(q + 128, t)` before widening: `64 · 2 · 255 < 2¹⁵`.
const U8_WORDS: usize = 64;
/// From this many tokens on, the int8 path decodes weights and runs the blocked GEMM.
const GEMM_MIN_TOKENS: usize = 4;
/// The same where the field kernel serves fewer tokens (scale groups of at least
/// [`PACK_WORDS`] words): on a Zen 3 host it beat the GEMM up to 8 tokens and tied at 16.
const FIELD_GEMM_MIN_TOKENS: usize = 16;
/// The same for scale groups of 1, 2 or 4 words: the few-token kernel, run over tokens in
/// blocks ([`TOKEN_BLOCK_BYTES`]), beat the GEMM at every batch size measured on a Zen 3
/// (group 64, 4096×14336: 80–87 GFLOPS against 32–57 from 16 to 512 tokens).
const SMALL_FIELD_GEMM_MIN_TOKENS: usize = usize::MAX;
/// For groups of 8 words (256 columns) the GEMM catches up with the few-token kernel near
/// 64 tokens and passes it beyond (512 tokens: 99–140 against 106–108 GFLOPS on a Zen 3).
const BLOCK_FIELD_GEMM_MIN_TOKENS: usize = 128;
/// Rows of the int8 GEMM register tile.
const MR: usize = 3;
/// Tokens of the int8 GEMM register tile: `MR · NR` accumulators, `NR` activation vectors, a
/// weight vector and a product fit the 16 registers (4 × 3 did not: LLVM spilled).
const NR: usize = 3;
/// Rows per block of the int8 GEMM: each chunk of their weights is decoded once (`MB · 2` KiB,
/// in L2) and every token passes over it.
const MB: usize = 96;

pub(super) fn gemm_f32(t: Avx2, m: &TernaryMatrix, x: &[f32], n: usize, y: Rows<'_>) {
    if n >= F32_GEMM_MIN_TOKENS {
        let pc = 32 * m.words_per_row();
        gemm_f32_packed(
            Fma256(t),
            m.rows(),
            m.cols(),
            pc,
            x,
            n,
            y,
            |r0, nr, k0, kc, buf| decode_scaled_rows(t, m, r0, nr, k0, kc, buf),
        );
        return;
    }
    let block = row_block(m);
    y.run(m.rows(), m.cols(), n, ROWS, |rows, out| {
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

pub(super) fn gemm_i8(t: Avx2, m: &TernaryMatrix, a: &QuantizedActivations, y: Rows<'_>) {
    let n = a.n();
    let wpg = GroupWords::of(m).words_per_group;
    if n < field_kernel_tokens(wpg) {
        gemm_i8_fields::<_, false>(Maddubs(t), &Trits::Planes(m), a, y);
        return;
    }
    if n >= PANEL_GEMM_MIN_TOKENS {
        gemm_i8_panels(PanelMaddubs(t), Trits::Planes(m), a, y);
        return;
    }
    if n >= gemm_from_tokens(wpg) {
        gemm_i8_blocked(t, m, a, y);
        return;
    }
    let run = |xp: &[u8], y: Rows<'_>| {
        y.run(m.rows(), m.cols(), n, ROWS, |rows, out| {
            by_row_blocks(
                rows,
                n,
                ROWS,
                out,
                // SAFETY: the token proves the CPU features; `r..r + ROWS` are rows of `m`,
                // `o` holds `ROWS × n` outputs, `xp` is `permuted_codes(a)` and
                // `a.cols() == m.cols()` was checked.
                |r, o| unsafe { i8_rows::<ROWS>(m, a, xp, r, o) },
                // SAFETY: as above, for one row.
                |r, o| unsafe { i8_rows::<1>(m, a, xp, r, o) },
            )
        });
    };
    if y.is_serial() {
        // A row range on the calling thread (a persistent worker's decode step): the permuted
        // codes go to a buffer kept by the thread, so repeated calls do not allocate. Serial
        // work never re-enters this function while the buffer is borrowed.
        thread_local! {
            static CODES: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        CODES.with_borrow_mut(|xp| {
            xp.clear();
            xp.resize(a.data().len(), 0);
            permute_into(xp, a.data(), 0);
            run(xp, y);
        });
    } else {
        run(&permuted_codes(a, 0), y);
    }
}

/// Left shifts that move bit `8b + d` of a broadcast plane word to the sign bit of byte `b`
/// of lane `d` (lane `d` shifted by `7 − d`): byte `4d + b` of the vector then stands for
/// column `8b + d` of the word, the order [`permuted_codes`] puts activations in.
#[inline]
#[target_feature(enable = "avx2")]
fn sign_shifts() -> __m256i {
    _mm256_setr_epi32(7, 6, 5, 4, 3, 2, 1, 0)
}

/// The plane word at `p` broadcast and shifted by [`sign_shifts`]: the sign bit of byte
/// `4d + b` is bit `8b + d` of the word (the other bits are unspecified).
///
/// # Safety
/// AVX2 must be available; `p` is valid for a 4-byte read.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn plane_signs(p: *const u32, shifts: __m256i) -> __m256i {
    // SAFETY: forwarded from the caller; `vbroadcastss` from memory is a single load.
    let v = unsafe { _mm256_castps_si256(_mm256_broadcast_ss(&*p.cast::<f32>())) };
    _mm256_sllv_epi32(v, shifts)
}

/// The padded codes of every token (`n × padded_cols` bytes), each 32-column chunk permuted so
/// that byte `4d + b` holds column `8b + d` (see [`sign_shifts`]), XORed with `xor`
/// (`0`: `i8` codes `q`; `0x80`: `u8` codes `q + 128`).
fn permuted_codes(a: &QuantizedActivations, xor: u8) -> Vec<u8> {
    let mut out = vec![0u8; a.data().len()];
    permute_into(&mut out, a.data(), xor);
    out
}

/// `dst[32k + 4d + b] = src[32k + 8b + d] ^ xor` over whole 32-byte chunks.
fn permute_into(dst: &mut [u8], src: &[i8], xor: u8) {
    for (dst, src) in dst.chunks_exact_mut(32).zip(src.chunks_exact(32)) {
        for d in 0..8 {
            for b in 0..4 {
                dst[4 * d + b] = (src[8 * b + d] as u8) ^ xor;
            }
        }
    }
}

/// Rows `r0..r0 + R`, every token, few tokens: tokens in pairs (then one), each expanded
/// plane word serving both.
///
/// # Safety
/// AVX2 must be available; `r0 + R ≤ rows`, `a.cols() == m.cols()`, `xp` is
/// `permuted_codes(a, 0)`, `out.len() = R · a.n()`.
#[target_feature(enable = "avx2")]
unsafe fn i8_rows<const R: usize>(
    m: &TernaryMatrix,
    a: &QuantizedActivations,
    xp: &[u8],
    r0: usize,
    out: &mut [f32],
) {
    let mut j = 0;
    while j < a.n() {
        // SAFETY: forwarded from the caller; j + T ≤ n.
        unsafe {
            if a.n() - j >= 2 {
                i8_tile::<R, 2>(m, a, xp, r0, j, out);
                j += 2;
            } else {
                i8_tile::<R, 1>(m, a, xp, r0, j, out);
                j += 1;
            }
        }
    }
}

/// Rows `r0..r0 + R` × tokens `j0..j0 + T`, int8: exact `i32` group sums, then the reference's
/// `f32` order.
///
/// Per 32 columns and row, both plane words are broadcast and shifted so each byte's sign bit
/// is its column's bit ([`plane_signs`]); `s = blend(blend(0, q, p), −q, m) = t · q` (the
/// planes are disjoint) and `maddubs(1, s)` adds pairs into `i16` lanes, widened to `i32`
/// every [`I16_WORDS`] words (`|s| ≤ 127`, so `128 · 2 · 127 < 2¹⁵`).
///
/// # Safety
/// As [`i8_rows`], and `j0 + T ≤ a.n()`.
#[target_feature(enable = "avx2")]
unsafe fn i8_tile<const R: usize, const T: usize>(
    m: &TernaryMatrix,
    a: &QuantizedActivations,
    xp: &[u8],
    r0: usize,
    j0: usize,
    out: &mut [f32],
) {
    let gw = GroupWords::of(m);
    let wpr = gw.words_per_row;
    let pc = a.padded_cols();
    let n = a.n();
    let scales = m.scales().values();
    let plus: [*const u32; R] = std::array::from_fn(|i| m.plus()[(r0 + i) * wpr..].as_ptr());
    let minus: [*const u32; R] = std::array::from_fn(|i| m.minus()[(r0 + i) * wpr..].as_ptr());
    let q: [*const u8; T] = std::array::from_fn(|t| xp[(j0 + t) * pc..].as_ptr());
    let shifts = sign_shifts();
    let ones8 = _mm256_set1_epi8(1);
    let ones16 = _mm256_set1_epi16(1);
    let zero = _mm256_setzero_si256();
    // Opaque to the compiler, so `blendv(0, q, p)` stays one blend (one µop on AMD) instead
    // of becoming a compare and an AND.
    let blend_zero = std::hint::black_box(zero);
    let mut sum = [[0f32; T]; R];
    for g in 0..gw.groups {
        let words = gw.range(g);
        let mut acc32 = [[zero; T]; R];
        let mut w0 = words.start;
        while w0 < words.end {
            let w1 = (w0 + I16_WORDS).min(words.end);
            let mut acc16 = [[zero; T]; R];
            for w in w0..w1 {
                // SAFETY: w < words_per_row: bytes 32w..32w + 32 lie in each token's padded
                // row (32 · words_per_row = padded_cols bytes) and word w in each plane row.
                unsafe {
                    let xv: [__m256i; T] =
                        std::array::from_fn(|t| _mm256_loadu_si256(q[t].add(32 * w).cast()));
                    let nx: [__m256i; T] = std::array::from_fn(|t| _mm256_sub_epi8(zero, xv[t]));
                    for i in 0..R {
                        let sp = plane_signs(plus[i].add(w), shifts);
                        let sm = plane_signs(minus[i].add(w), shifts);
                        for t in 0..T {
                            let s = _mm256_blendv_epi8(
                                _mm256_blendv_epi8(blend_zero, xv[t], sp),
                                nx[t],
                                sm,
                            );
                            acc16[i][t] =
                                _mm256_add_epi16(acc16[i][t], _mm256_maddubs_epi16(ones8, s));
                        }
                    }
                }
            }
            for i in 0..R {
                for t in 0..T {
                    acc32[i][t] =
                        _mm256_add_epi32(acc32[i][t], _mm256_madd_epi16(acc16[i][t], ones16));
                }
            }
            w0 = w1;
        }
        for i in 0..R {
            let sg = scales[(r0 + i) * gw.groups + g];
            for t in 0..T {
                sum[i][t] += sg * crate::kernels::x86_primitives::hsum_epi32(acc32[i][t]) as f32;
            }
        }
    }
    for i in 0..R {
        for t in 0..T {
            out[i * n + j0 + t] = sum[i][t] * a.scales()[j0 + t];
        }
    }
}

/// Few tokens, scale groups of more than [`PACK_WORDS`] words (and the kernel of the
/// smaller groups, [`small_field_row`] / [`small_field_rows8`]): the "field" kernel.
///
/// Per block of eight plane words (256 columns) and row, both planes are loaded once and
/// turned into 2-bit fields `v = p + ¬m = 1 + t ∈ {0, 1, 2}` with two integer adds (the planes
/// are disjoint, so the sum never carries out of its field): `e = (p & 0x55…) + (¬m & 0x55…)`
/// holds the even columns, `o` the same for the words shifted right by one (odd columns). The
/// four fields of each byte are split by `(e >> 2k) & 3`, `k = 0..4`, and `maddubs(v, q)`
/// multiplies them with activations permuted to match ([`FieldCodes`]), about 4.75 vector
/// operations per row and 32 columns against 6.25 for sign masks. Then
/// `Σ t·q = Σ v·q − Σ q` per group, exact in `i32`, and the reference's `f32` order.
pub(super) fn gemm_i8_fields<D: FieldDot, const F: bool>(
    d: D,
    src: &Trits<'_>,
    a: &QuantizedActivations,
    y: Rows<'_>,
) {
    let t = d.avx2();
    let n = a.n();
    let gw = src.group_words();
    let small = gw.words_per_group <= PACK_WORDS;
    let (rows, cols) = src.shape();
    let run = |codes: &FieldCodes, y: Rows<'_>| {
        y.run(rows, cols, n, ROWS, |rows, out| {
            if small {
                if n == 1 {
                    // The rows' products, kept by the thread (no allocation per decode step;
                    // a nested call while it is lent out makes its own).
                    thread_local! {
                        static PROD: std::cell::RefCell<Vec<f32>> =
                            const { std::cell::RefCell::new(Vec::new()) };
                    }
                    let len = LANE_ROWS * gw.groups.next_multiple_of(8).clamp(8, CHUNK_GROUPS);
                    let mut rows8 = |prod: &mut Vec<f32>| {
                        prod.resize(len, 0.0);
                        let mut r = rows.start;
                        for o in out.chunks_mut(LANE_ROWS) {
                            // SAFETY: the token proves AVX2; rows r..r + o.len() are rows of
                            // `m` (≤ LANE_ROWS), `o` holds their outputs (one token), `codes`
                            // was filled by `fill_row_blocks` from `gw` and `a`,
                            // `a.cols() == m.cols()` was checked, the groups have 1, 2, 4 or 8
                            // words and `prod` holds `len` floats.
                            unsafe {
                                match gw.words_per_group {
                                    1 => d.rows8::<1, F>(src, &gw, a, codes, r, prod, o),
                                    2 => d.rows8::<2, F>(src, &gw, a, codes, r, prod, o),
                                    4 => d.rows8::<4, F>(src, &gw, a, codes, r, prod, o),
                                    _ => d.rows8::<8, F>(src, &gw, a, codes, r, prod, o),
                                }
                            }
                            r += o.len();
                        }
                    };
                    PROD.with(|cell| match cell.try_borrow_mut() {
                        Ok(mut prod) => rows8(&mut prod),
                        Err(_) => rows8(&mut Vec::new()),
                    });
                } else {
                    // Tokens in blocks whose codes stay in L2 while every row passes over them.
                    let tb = (TOKEN_BLOCK_BYTES / codes.token_len.max(1)).max(4) / 4 * 4;
                    for j0 in (0..n).step_by(tb) {
                        let tokens = j0..(j0 + tb).min(n);
                        for (r, o) in rows.clone().zip(out.chunks_exact_mut(n)) {
                            // SAFETY: as above, `o` holding row r's `n` outputs and
                            // `tokens` ⊂ 0..n.
                            unsafe { d.small_row::<F>(src, &gw, a, codes, r, tokens.clone(), o) }
                        }
                    }
                }
                return;
            }
            for (r, o) in rows.zip(out.chunks_exact_mut(n)) {
                // SAFETY: the token proves AVX2; `r` is a row of `m`, `o` holds its `n`
                // outputs, `codes` was filled from `m` and `a`, `a.cols() == m.cols()` was
                // checked and the groups have at least `PACK_WORDS` words.
                unsafe { d.field_row::<F>(src, a, codes, r, o) }
            }
        });
    };
    let fill = |codes: &mut FieldCodes| {
        if small {
            codes.fill_row_blocks(t, gw, a);
        } else {
            codes.fill(t, gw, a);
        }
    };
    // The permuted codes go to a buffer kept by the calling thread, so repeated calls (a
    // decode step) do not allocate. A call nested on this thread while the buffer is lent out
    // (rayon may run another task here while `run` waits) builds its own.
    thread_local! {
        static CODES: std::cell::RefCell<FieldCodes> =
            const { std::cell::RefCell::new(FieldCodes::new()) };
    }
    CODES.with(|cell| match cell.try_borrow_mut() {
        Ok(mut codes) => {
            fill(&mut codes);
            run(&codes, y);
        }
        Err(_) => {
            let mut codes = FieldCodes::new();
            fill(&mut codes);
            run(&codes, y);
        }
    });
}

/// Activations in the field kernel's order, and their sums per token and group.
///
/// Token `j`, group `g`, block `b` (words `w0 = start(g) + 8b ..`) is [`PACK_BYTES`] bytes at
/// `j · token_len + (g · blocks_per_group + b) · 256`; byte `64k + 4d + c` holds column
/// `32 (w0 + d) + 8c + 2k` (`k < 4`, even columns) and byte `64k + 32 + 4d + c` the next
/// column (odd), so that byte `4d + c` of `(e >> 2k) & 3` ([`gemm_i8_fields`]) meets its
/// activation, and the 64 bytes of step `k` meet the 64-byte block `e | o` (AVX-512). Bytes of
/// words past a group's end are zero.
///
/// For groups of 1, 2, 4 or 8 words ([`small_field_tile`], filled by
/// [`FieldCodes::fill_row_blocks`]) the blocks are the row's own: block `b` holds words
/// `8b..8b + 8` of the row in the same byte order, and `sums` holds `Σ q` per word.
pub(super) struct FieldCodes {
    bytes: Aligned<i8>,
    /// `Σ q` over group `g` of token `j` at `j · groups + g` ([`FieldCodes::fill`]), or over
    /// word `w` at `j · 8 · blocks + w` ([`FieldCodes::fill_row_blocks`]; 0 past the row).
    sums: Vec<i32>,
    token_len: usize,
}

impl FieldCodes {
    const fn new() -> Self {
        Self {
            bytes: Aligned::empty(),
            sums: Vec::new(),
            token_len: 0,
        }
    }

    fn fill(&mut self, _t: Avx2, gw: GroupWords, a: &QuantizedActivations) {
        let bpg = gw.words_per_group.div_ceil(PACK_WORDS);
        self.token_len = gw.groups * bpg * PACK_BYTES;
        self.bytes.reset(a.n() * self.token_len);
        self.sums.clear();
        self.sums.resize(a.n() * gw.groups, 0);
        for j in 0..a.n() {
            let q = a.row(j);
            let dst = &mut self.bytes.as_mut_slice()[j * self.token_len..(j + 1) * self.token_len];
            for g in 0..gw.groups {
                let words = gw.range(g);
                self.sums[j * gw.groups + g] = q[32 * words.start..32 * words.end]
                    .iter()
                    .map(|&v| i32::from(v))
                    .sum();
                for (b, w0) in words.clone().step_by(PACK_WORDS).enumerate() {
                    let w1 = (w0 + PACK_WORDS).min(words.end);
                    let block = &mut dst[(g * bpg + b) * PACK_BYTES..][..PACK_BYTES];
                    // SAFETY: the token proves AVX2.
                    unsafe { permute_block(&q[32 * w0..32 * w1], block) };
                }
            }
        }
    }

    /// The row-block layout (see the type): `⌈words_per_row / 8⌉` blocks per token.
    fn fill_row_blocks(&mut self, _t: Avx2, gw: GroupWords, a: &QuantizedActivations) {
        let blocks = gw.words_per_row.div_ceil(PACK_WORDS);
        self.token_len = blocks * PACK_BYTES;
        self.bytes.reset(a.n() * self.token_len);
        self.sums.clear();
        self.sums.resize(a.n() * blocks * PACK_WORDS, 0);
        for j in 0..a.n() {
            let q = &a.row(j)[..32 * gw.words_per_row];
            let dst = &mut self.bytes.as_mut_slice()[j * self.token_len..(j + 1) * self.token_len];
            let sums = &mut self.sums[j * blocks * PACK_WORDS..][..gw.words_per_row];
            for (s, word) in sums.iter_mut().zip(q.chunks_exact(32)) {
                *s = word.iter().map(|&v| i32::from(v)).sum();
            }
            for (block, src) in dst.chunks_exact_mut(PACK_BYTES).zip(q.chunks(PACK_BYTES)) {
                // SAFETY: the token proves AVX2.
                unsafe { permute_block(src, block) };
            }
        }
    }
}

/// One block of [`FieldCodes`] from the codes of its words (`src`: `32 · w` bytes, `w ≤ 8`;
/// missing words give zeros): per word, bytes `8c + 2k` (and `8c + 2k + 1`), `c < 4`, gathered
/// into dword `k` (`4 + k`) by two in-lane shuffles around a qword permute; then an 8 × 8
/// transpose of dwords puts dword `j` of word `d` at `block[64 (j mod 4) + 32 ⌊j / 4⌋ + 4d..]`.
///
/// # Safety
/// AVX2 must be available; `src.len() ≤ 256` is a multiple of 32, `block.len() = 256`.
#[target_feature(enable = "avx2")]
unsafe fn permute_block(src: &[i8], block: &mut [i8]) {
    #[rustfmt::skip]
    let gather = _mm256_setr_epi8(
        0, 8, 2, 10, 4, 12, 6, 14, 1, 9, 3, 11, 5, 13, 7, 15,
        0, 8, 2, 10, 4, 12, 6, 14, 1, 9, 3, 11, 5, 13, 7, 15,
    );
    #[rustfmt::skip]
    let interleave = _mm256_setr_epi8(
        0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,
        0, 1, 8, 9, 2, 3, 10, 11, 4, 5, 12, 13, 6, 7, 14, 15,
    );
    let mut v = [_mm256_setzero_si256(); PACK_WORDS];
    for (v, w) in v.iter_mut().zip(src.chunks_exact(32)) {
        // SAFETY: `w` is 32 bytes.
        let s = unsafe { _mm256_loadu_si256(w.as_ptr().cast()) };
        // Lane l (16 bytes) holds word16 j = bytes (2k, 8 + 2k) for j = k < 4, (2k + 1, 9 + 2k)
        // for j = 4 + k; the permute pairs the lanes' halves, the last shuffle interleaves
        // them: dword j = bytes (8c + 2k (+1))_c of the word.
        let s = _mm256_shuffle_epi8(s, gather);
        let s = _mm256_permute4x64_epi64::<0b11_01_10_00>(s);
        *v = _mm256_shuffle_epi8(s, interleave);
    }
    let t: [__m256i; 8] = std::array::from_fn(|i| {
        let (a, b) = (v[2 * (i / 2)], v[2 * (i / 2) + 1]);
        if i % 2 == 0 {
            _mm256_unpacklo_epi32(a, b)
        } else {
            _mm256_unpackhi_epi32(a, b)
        }
    });
    // u[4h + i]: dwords i (low lane) and 4 + i (high lane) of words 4h..4h + 4.
    let u: [__m256i; 8] = std::array::from_fn(|i| {
        let (h, i) = (i / 4, i % 4);
        let (a, b) = (t[4 * h + (i / 2)], t[4 * h + 2 + (i / 2)]);
        if i % 2 == 0 {
            _mm256_unpacklo_epi64(a, b)
        } else {
            _mm256_unpackhi_epi64(a, b)
        }
    });
    for j in 0..4 {
        let lo = _mm256_permute2x128_si256::<0x20>(u[j], u[4 + j]);
        let hi = _mm256_permute2x128_si256::<0x31>(u[j], u[4 + j]);
        // SAFETY: `block` is 256 bytes: 64j + 64 ≤ 256.
        unsafe {
            _mm256_storeu_si256(block.as_mut_ptr().add(64 * j).cast(), lo);
            _mm256_storeu_si256(block.as_mut_ptr().add(64 * j + 32).cast(), hi);
        }
    }
}

/// A level's [`FieldDot`] entry points (`rows8`, `small_row`, `field_row`): each a
/// `#[target_feature(enable = $features)]` function compiling the field kernel's body with
/// `$dot`'s block product, called with the level's token (`self`) as the proof.
macro_rules! field_entry_points {
    ($dot:ident, $features:literal) => {
        unsafe fn rows8<const G: usize, const F: bool>(
            self,
            src: &Trits<'_>,
            gw: &GroupWords,
            a: &QuantizedActivations,
            codes: &FieldCodes,
            r0: usize,
            prod: &mut [f32],
            out: &mut [f32],
        ) {
            #[target_feature(enable = $features)]
            #[allow(clippy::too_many_arguments)]
            unsafe fn imp<const G: usize, const F: bool>(
                src: &Trits<'_>,
                gw: &GroupWords,
                a: &QuantizedActivations,
                codes: &FieldCodes,
                r0: usize,
                prod: &mut [f32],
                out: &mut [f32],
            ) {
                // SAFETY: forwarded from the caller; the level's features are enabled here.
                unsafe { small_field_rows8::<$dot, G, F>(src, gw, a, codes, r0, prod, out) }
            }
            // SAFETY: `self` holds the level's token, which proves its features; the rest is
            // the caller's.
            unsafe { imp::<G, F>(src, gw, a, codes, r0, prod, out) }
        }

        unsafe fn small_row<const F: bool>(
            self,
            src: &Trits<'_>,
            gw: &GroupWords,
            a: &QuantizedActivations,
            codes: &FieldCodes,
            r: usize,
            tokens: Range<usize>,
            out: &mut [f32],
        ) {
            #[target_feature(enable = $features)]
            unsafe fn imp<const F: bool>(
                src: &Trits<'_>,
                gw: &GroupWords,
                a: &QuantizedActivations,
                codes: &FieldCodes,
                r: usize,
                tokens: Range<usize>,
                out: &mut [f32],
            ) {
                // SAFETY: forwarded from the caller; the level's features are enabled here.
                unsafe { small_field_row::<$dot, F>(src, gw, a, codes, r, tokens, out) }
            }
            // SAFETY: as in `rows8`.
            unsafe { imp::<F>(src, gw, a, codes, r, tokens, out) }
        }

        unsafe fn field_row<const F: bool>(
            self,
            src: &Trits<'_>,
            a: &QuantizedActivations,
            codes: &FieldCodes,
            r: usize,
            out: &mut [f32],
        ) {
            #[target_feature(enable = $features)]
            unsafe fn imp<const F: bool>(
                src: &Trits<'_>,
                a: &QuantizedActivations,
                codes: &FieldCodes,
                r: usize,
                out: &mut [f32],
            ) {
                // SAFETY: forwarded from the caller; the level's features are enabled here.
                unsafe { field_row::<$dot, F>(src, a, codes, r, out) }
            }
            // SAFETY: as in `rows8`.
            unsafe { imp::<F>(src, a, codes, r, out) }
        }
    };
}
pub(super) use field_entry_points;

/// How a SIMD level multiplies blocks of 2-bit fields by their activations (in
/// [`FieldCodes`] order), and its entry points into the field kernel ([`gemm_i8_fields`]).
///
/// The kernel's bodies ([`field_row`], [`small_field_rows8`], …) are generic over it and
/// `#[inline(always)]`: each level's entry points are `#[target_feature]` functions that compile
/// them with that level's features, so the block products ([`FieldDot::add`]) inline there.
pub(super) trait FieldDot: Copy + Send + Sync {
    /// A block of eight words of fields, loaded once for every token that meets it.
    type Block: Copy;
    /// A running sum of block products.
    type Acc: Copy;
    /// Blocks that one [`FieldDot::Acc`] sums without overflow.
    const BLOCKS: usize;

    /// The AVX2 token (the activation layout is built with AVX2 at every level).
    fn avx2(self) -> Avx2;

    /// An empty sum.
    ///
    /// # Safety
    /// The level's features are enabled where this is compiled (an entry point's body).
    unsafe fn zero() -> Self::Acc;

    /// The fields of words `w0..w0 + lanes` of `row` ([`RowFields::block`]).
    ///
    /// # Safety
    /// As [`FieldDot::zero`] and [`RowFields::block`].
    unsafe fn load<const F: bool>(row: RowFields<'_>, w0: usize, lanes: usize) -> Self::Block;

    /// `acc` plus block `b` times its activations at `x`.
    ///
    /// # Safety
    /// As [`FieldDot::zero`]; `x` is valid for [`PACK_BYTES`] bytes.
    unsafe fn add(acc: Self::Acc, b: Self::Block, x: *const i8) -> Self::Acc;

    /// The exact `i32` sums of `acc` per word: lane `d`, `Σ v · q` over word `d`'s 32 columns.
    ///
    /// # Safety
    /// As [`FieldDot::zero`].
    unsafe fn words(acc: Self::Acc) -> __m256i;

    /// [`FieldDot::words`] of one block.
    ///
    /// # Safety
    /// As [`FieldDot::add`].
    #[inline(always)]
    unsafe fn block_words(b: Self::Block, x: *const i8) -> __m256i {
        // SAFETY: forwarded from the caller.
        unsafe { Self::words(Self::add(Self::zero(), b, x)) }
    }

    /// [`small_field_rows8`] compiled for the level.
    ///
    /// # Safety
    /// As [`small_field_rows8`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn rows8<const G: usize, const F: bool>(
        self,
        src: &Trits<'_>,
        gw: &GroupWords,
        a: &QuantizedActivations,
        codes: &FieldCodes,
        r0: usize,
        prod: &mut [f32],
        out: &mut [f32],
    );

    /// [`small_field_row`] compiled for the level.
    ///
    /// # Safety
    /// As [`small_field_row`].
    #[allow(clippy::too_many_arguments)]
    unsafe fn small_row<const F: bool>(
        self,
        src: &Trits<'_>,
        gw: &GroupWords,
        a: &QuantizedActivations,
        codes: &FieldCodes,
        r: usize,
        tokens: Range<usize>,
        out: &mut [f32],
    );

    /// [`field_row`] compiled for the level.
    ///
    /// # Safety
    /// As [`field_row`].
    unsafe fn field_row<const F: bool>(
        self,
        src: &Trits<'_>,
        a: &QuantizedActivations,
        codes: &FieldCodes,
        r: usize,
        out: &mut [f32],
    );
}

/// The AVX2 [`FieldDot`]: `maddubs` of each 2-bit step of the fields summed in `i16`
/// ([`dot_fields`], [`steps_dot`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Maddubs(pub(super) Avx2);

impl FieldDot for Maddubs {
    /// The even and the odd fields.
    type Block = (__m256i, __m256i);
    /// Even and odd fields in separate `i16` sums: two dependency chains.
    type Acc = [__m256i; 2];
    const BLOCKS: usize = FIELD_BLOCKS;

    fn avx2(self) -> Avx2 {
        self.0
    }

    #[inline(always)]
    unsafe fn zero() -> Self::Acc {
        // SAFETY: AVX2 is enabled (caller).
        unsafe { [_mm256_setzero_si256(); 2] }
    }

    #[inline(always)]
    unsafe fn load<const F: bool>(row: RowFields<'_>, w0: usize, lanes: usize) -> Self::Block {
        // SAFETY: forwarded from the caller.
        unsafe { row.block::<F>(w0, lanes) }
    }

    /// Three shifts per field vector, shared by the tokens of a tile ([`steps_dot`] takes one
    /// but more work per token: slower from four tokens on, the same for one).
    #[inline(always)]
    unsafe fn add(acc: Self::Acc, (e, o): Self::Block, x: *const i8) -> Self::Acc {
        // SAFETY: AVX2 is enabled and `x` holds the block's 256 bytes (caller); the odd
        // fields' activations are each 64-byte step's second half.
        unsafe {
            [
                _mm256_add_epi16(acc[0], dot_fields(e, x)),
                _mm256_add_epi16(acc[1], dot_fields(o, x.add(32))),
            ]
        }
    }

    #[inline(always)]
    unsafe fn words(acc: Self::Acc) -> __m256i {
        // SAFETY: AVX2 is enabled (caller).
        unsafe {
            let ones = _mm256_set1_epi16(1);
            _mm256_add_epi32(
                _mm256_madd_epi16(acc[0], ones),
                _mm256_madd_epi16(acc[1], ones),
            )
        }
    }

    #[inline(always)]
    unsafe fn block_words((e, o): Self::Block, x: *const i8) -> __m256i {
        // SAFETY: as `add`.
        unsafe {
            let (l, h) = steps_dot(e, o, x);
            _mm256_madd_epi16(_mm256_add_epi16(l, h), _mm256_set1_epi16(1))
        }
    }

    field_entry_points!(Maddubs, "avx2");
}

/// A block's products in `i16` lanes, `(l, h)` with `l + h = Σ_k maddubs((f >> 2k) & 3, x_k)`
/// over its even and odd fields, each at most `4 · 508` per lane (`|x| ≤ 127`).
///
/// One shift per field vector instead of three: with `g = f >> 4` (16-bit lanes; the bits a
/// byte takes from its neighbour are masked off), steps 0 and 2 are `f & 3` and `g & 3`, steps
/// 1 and 3 are `f & 12` and `g & 12`, four times their fields. So `l` sums the `maddubs` of
/// steps 0 and 2 and `h` those of steps 1 and 3, a multiple of 4 (at most `4 · 2032`) shifted
/// right by 2, exactly.
///
/// # Safety
/// AVX2 must be available; `x` holds the block's 256 activation bytes, step k's even columns at
/// `64k`, its odd ones at `64k + 32`.
#[inline(always)]
unsafe fn steps_dot(e: __m256i, o: __m256i, x: *const i8) -> (__m256i, __m256i) {
    // SAFETY: AVX2 is enabled and bytes x..x + 256 are readable (caller).
    unsafe {
        let lo = _mm256_set1_epi8(3);
        let hi = _mm256_set1_epi8(12);
        let xv = |k: usize| _mm256_loadu_si256(x.add(32 * k).cast::<__m256i>());
        let (e2, o2) = (_mm256_srli_epi16::<4>(e), _mm256_srli_epi16::<4>(o));
        let dot =
            |f: __m256i, m: __m256i, k: usize| _mm256_maddubs_epi16(_mm256_and_si256(f, m), xv(k));
        let l = _mm256_add_epi16(
            _mm256_add_epi16(dot(e, lo, 0), dot(e2, lo, 4)),
            _mm256_add_epi16(dot(o, lo, 1), dot(o2, lo, 5)),
        );
        let h = _mm256_add_epi16(
            _mm256_add_epi16(dot(e, hi, 2), dot(e2, hi, 6)),
            _mm256_add_epi16(dot(o, hi, 3), dot(o2, hi, 7)),
        );
        (l, _mm256_srai_epi16::<2>(h))
    }
}

/// Row `r`, every token: tokens in fours, then pairs, then one, each tile sharing the fields.
///
/// One row at a time: its two plane streams are read in order, and the activations of a
/// block come from L1 for each row (the compiler kept them live across a tile of rows, and
/// spilled).
///
/// # Safety
/// `D`'s features are enabled (a [`FieldDot`] entry point); `r < rows`,
/// `a.cols() == m.cols()`, `codes` filled from `GroupWords::of(m)` and `a`, `out.len() = a.n()`,
/// `GroupWords::of(m).words_per_group ≥ PACK_WORDS`.
#[inline(always)]
pub(super) unsafe fn field_row<D: FieldDot, const F: bool>(
    src: &Trits<'_>,
    a: &QuantizedActivations,
    codes: &FieldCodes,
    r: usize,
    out: &mut [f32],
) {
    let mut j = 0;
    while j < a.n() {
        // SAFETY: forwarded from the caller; j + T ≤ n.
        unsafe {
            if a.n() - j >= 4 {
                field_tile::<D, 4, F>(src, a, codes, r, j, out);
                j += 4;
            } else if a.n() - j >= 2 {
                field_tile::<D, 2, F>(src, a, codes, r, j, out);
                j += 2;
            } else {
                field_tile::<D, 1, F>(src, a, codes, r, j, out);
                j += 1;
            }
        }
    }
}

/// The 2-bit fields `1 + t` of eight plane words: `(e, o)`, even and odd columns (see
/// [`gemm_i8_fields`]).
#[inline]
#[target_feature(enable = "avx2")]
fn fields(p: __m256i, m: __m256i) -> (__m256i, __m256i) {
    let k5 = _mm256_set1_epi32(0x5555_5555);
    let e = _mm256_add_epi32(_mm256_and_si256(p, k5), _mm256_andnot_si256(m, k5));
    let (p, m) = (_mm256_srli_epi32::<1>(p), _mm256_srli_epi32::<1>(m));
    let o = _mm256_add_epi32(_mm256_and_si256(p, k5), _mm256_andnot_si256(m, k5));
    (e, o)
}

/// Row `r` of `src` for the field kernel: its plane words, or its field blocks.
fn row_fields<'a>(src: &Trits<'a>, r: usize) -> RowFields<'a> {
    match src {
        Trits::Planes(m) => {
            let (plus, minus) = m.row_planes(r);
            RowFields {
                plus,
                minus,
                fields: &[],
            }
        }
        Trits::Fields(f) => RowFields {
            plus: &[],
            minus: &[],
            fields: f.row(r),
        },
    }
}

/// One row of a [`Trits`] source: its plane words, or its field blocks.
#[derive(Clone, Copy)]
pub(super) struct RowFields<'a> {
    plus: &'a [u32],
    minus: &'a [u32],
    /// The row's field words (`Trits::Fields`), else empty.
    pub(super) fields: &'a [u32],
}

impl RowFields<'_> {
    /// The fields `(e, o)` of words `w0..w0 + lanes`: computed from the planes
    /// ([`block_fields`]), or (`F`) loaded as stored ([`FieldMatrix`]: the block's `e` words
    /// at `2 · w0`, its `o` words `lanes` further; absent lanes load as 0, which meet zero
    /// activations, as the planes' do).
    ///
    /// # Safety
    /// AVX2 must be available. Planes: as [`block_fields`]. `F`: `w0` is a multiple of 8 and
    /// `lanes = min(8, words_per_row − w0) > 0`, so the block's `2 · lanes` words lie in
    /// `fields`.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn block<const F: bool>(self, w0: usize, lanes: usize) -> (__m256i, __m256i) {
        if !F {
            // SAFETY: as the caller guarantees.
            return unsafe { block_fields(self.plus, self.minus, w0, lanes) };
        }
        let e = self.fields.as_ptr().wrapping_add(2 * w0);
        // A hint: the address may lie past the fields, so it is not dereferenced.
        _mm_prefetch::<_MM_HINT_T0>(e.wrapping_add(2 * PREFETCH_WORDS).cast());
        // SAFETY: words 2·w0 .. 2·w0 + 2·lanes lie in the row (caller); the masked loads
        // read only the first `lanes` of each half.
        unsafe {
            if lanes == PACK_WORDS {
                (
                    _mm256_loadu_si256(e.cast()),
                    _mm256_loadu_si256(e.add(PACK_WORDS).cast()),
                )
            } else {
                let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
                let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes as i32), lane);
                (
                    _mm256_maskload_epi32(e.cast(), keep),
                    _mm256_maskload_epi32(e.add(lanes).cast(), keep),
                )
            }
        }
    }
}

/// Tokens from which [`gemm_i8`] runs the blocked GEMM ([`gemm_i8_blocked`]) for scale groups
/// of `wpg` words (the panel GEMM takes over at [`PANEL_GEMM_MIN_TOKENS`] first).
fn gemm_from_tokens(wpg: usize) -> usize {
    if wpg == 8 {
        BLOCK_FIELD_GEMM_MIN_TOKENS
    } else if matches!(wpg, 1 | 2 | 4) {
        SMALL_FIELD_GEMM_MIN_TOKENS
    } else if wpg >= PACK_WORDS {
        FIELD_GEMM_MIN_TOKENS
    } else {
        GEMM_MIN_TOKENS
    }
}

/// Tokens below which [`gemm_i8`] runs the field kernel ([`gemm_i8_fields`]) for scale groups
/// of `wpg` words: 0 for groups it does not take (3, 5, 6 or 7 words). A repacked matrix is
/// turned back into planes from there on.
fn field_kernel_tokens(wpg: usize) -> usize {
    if matches!(wpg, 1 | 2 | 4) || wpg >= PACK_WORDS {
        gemm_from_tokens(wpg).min(PANEL_GEMM_MIN_TOKENS)
    } else {
        0
    }
}

/// [`gemm_i8`] of a matrix repacked into fields: the field kernel reading the stored blocks
/// below [`field_kernel_tokens`], the panel GEMM (which turns each block of rows back into
/// planes, exactly) from there on; bit-identical to [`gemm_i8`] on the original matrix.
pub(super) fn gemm_i8_packed(t: Avx2, f: &FieldMatrix, a: &QuantizedActivations, y: Rows<'_>) {
    let n = a.n();
    if n < field_kernel_tokens(f.group_words().words_per_group) {
        gemm_i8_fields::<_, true>(Maddubs(t), &Trits::Fields(f), a, y);
        return;
    }
    if n >= PANEL_GEMM_MIN_TOKENS {
        gemm_i8_panels(PanelMaddubs(t), Trits::Fields(f), a, y);
        return;
    }
    // Not reached for the groups `PackedTernary` repacks (the field kernel runs up to the
    // panel GEMM's limit): the whole product on planes again.
    match y {
        Rows::Range(rows, out) => {
            let m = f.planes(rows.clone());
            gemm_i8(t, &m, a, Rows::Range(0..rows.len(), out));
        }
        Rows::All(y) => gemm_i8(t, &f.planes(0..f.rows()), a, Rows::All(y)),
    }
}

/// [`fields`] of plane words `w0..w0 + lanes` (`lanes ≤ 8`; absent words load as 0, fields
/// 1, meeting zero activations), with the words [`PREFETCH_WORDS`] ahead prefetched.
///
/// # Safety
/// AVX2 must be available; words `w0..w0 + lanes` lie in `plus` and `minus`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn block_fields(plus: &[u32], minus: &[u32], w0: usize, lanes: usize) -> (__m256i, __m256i) {
    // SAFETY: the words read lie in both planes (caller; the masked load reads only those).
    let (p, m) = unsafe {
        if lanes == PACK_WORDS {
            (
                _mm256_loadu_si256(plus.as_ptr().add(w0).cast()),
                _mm256_loadu_si256(minus.as_ptr().add(w0).cast()),
            )
        } else {
            let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
            let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(lanes as i32), lane);
            (
                _mm256_maskload_epi32(plus.as_ptr().add(w0).cast(), keep),
                _mm256_maskload_epi32(minus.as_ptr().add(w0).cast(), keep),
            )
        }
    };
    // Plane words this far ahead are fetched while the block is computed (a hint: the address
    // may lie past the planes, so it is not dereferenced).
    _mm_prefetch::<_MM_HINT_T0>(plus.as_ptr().wrapping_add(w0 + PREFETCH_WORDS).cast());
    _mm_prefetch::<_MM_HINT_T0>(minus.as_ptr().wrapping_add(w0 + PREFETCH_WORDS).cast());
    fields(p, m)
}

/// `Σ_k maddubs((f >> 2k) & 3, x[64k..64k + 32])` in `i16` lanes (each at most `4 · 508`).
///
/// # Safety
/// AVX2 must be available; `x` is valid for 224 bytes.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn dot_fields(f: __m256i, x: *const i8) -> __m256i {
    let three = _mm256_set1_epi8(3);
    // SAFETY: bytes x..x + 224 are readable (caller).
    let xv: [__m256i; 4] =
        std::array::from_fn(|k| unsafe { _mm256_loadu_si256(x.add(64 * k).cast()) });
    let f0 = _mm256_and_si256(f, three);
    let f1 = _mm256_and_si256(_mm256_srli_epi16::<2>(f), three);
    let f2 = _mm256_and_si256(_mm256_srli_epi16::<4>(f), three);
    let f3 = _mm256_and_si256(_mm256_srli_epi16::<6>(f), three);
    let s01 = _mm256_add_epi16(
        _mm256_maddubs_epi16(f0, xv[0]),
        _mm256_maddubs_epi16(f1, xv[1]),
    );
    let s23 = _mm256_add_epi16(
        _mm256_maddubs_epi16(f2, xv[2]),
        _mm256_maddubs_epi16(f3, xv[3]),
    );
    _mm256_add_epi16(s01, s23)
}

/// Row `r` × tokens `j0..j0 + T` of the field kernel ([`gemm_i8_fields`]).
///
/// # Safety
/// As [`field_row`], and `j0 + T ≤ a.n()`.
#[inline(always)]
unsafe fn field_tile<D: FieldDot, const T: usize, const F: bool>(
    src: &Trits<'_>,
    a: &QuantizedActivations,
    codes: &FieldCodes,
    r: usize,
    j0: usize,
    out: &mut [f32],
) {
    let gw = src.group_words();
    let bpg = gw.words_per_group.div_ceil(PACK_WORDS);
    let row = row_fields(src, r);
    let scales = src.row_scales(r, &gw);
    let x: [*const i8; T] =
        std::array::from_fn(|t| codes.bytes.as_slice()[(j0 + t) * codes.token_len..].as_ptr());
    let mut sum = [0f32; T];
    // SAFETY: `D`'s features (which include AVX2) are enabled (caller). Words
    // w0..w0 + lanes ≤ words.end ≤ words_per_row lie in row `r` (planes: the masked load reads
    // only those; fields: `w0` is a multiple of 8, as `Trits::Fields` requires); the block's
    // 256 bytes at `xo` lie in each token's `token_len` bytes of `codes`.
    unsafe {
        let zero = _mm256_setzero_si256();
        for g in 0..gw.groups {
            let words = gw.range(g);
            let blocks = words.len().div_ceil(PACK_WORDS);
            let mut acc32 = [zero; T];
            let mut b0 = 0;
            while b0 < blocks {
                let b1 = (b0 + D::BLOCKS).min(blocks);
                let mut acc = [D::zero(); T];
                for b in b0..b1 {
                    let w0 = words.start + PACK_WORDS * b;
                    let lanes = (words.end - w0).min(PACK_WORDS);
                    let xo = (g * bpg + b) * PACK_BYTES;
                    let blk = D::load::<F>(row, w0, lanes);
                    for t in 0..T {
                        acc[t] = D::add(acc[t], blk, x[t].add(xo));
                    }
                }
                for t in 0..T {
                    acc32[t] = _mm256_add_epi32(acc32[t], D::words(acc[t]));
                }
                b0 = b1;
            }
            let sg = scales[g];
            for t in 0..T {
                let dot = crate::kernels::x86_primitives::hsum_epi32(acc32[t])
                    - codes.sums[(j0 + t) * gw.groups + g];
                sum[t] += sg * dot as f32;
            }
        }
    }
    for t in 0..T {
        out[j0 + t] = sum[t] * a.scales()[j0 + t];
    }
}

/// Activation bytes of the token block that every row of the few-token small-group kernel
/// passes over before the next (in L2 with the rows' planes).
const TOKEN_BLOCK_BYTES: usize = 48 << 10;
/// Rows per tile of the one-token small-group kernel ([`small_field_rows8`]): one `f32`
/// lane each.
const LANE_ROWS: usize = 8;
/// Groups per chunk of [`small_field_rows8`]: products of `LANE_ROWS` rows for this many
/// groups wait in a buffer (16 KiB) before their transposed sum. Large, so that each row's
/// planes are read in one sequential run (16384 columns in groups of 32): with short runs
/// (64 groups) the hardware prefetchers fell behind and a 4096 × 14336 product ran at half
/// speed on a Zen 3.
const CHUNK_GROUPS: usize = 512;

/// Row `r`, tokens `tokens`, groups of 1, 2, 4 or 8 words: tiles of four, two or one tokens
/// sharing the row's fields, each token's group products summed one at a time.
///
/// # Safety
/// `D`'s features are enabled (a [`FieldDot`] entry point); `r < rows`,
/// `a.cols() == m.cols()`, `codes` filled by [`FieldCodes::fill_row_blocks`] from
/// `gw = GroupWords::of(m)` and `a`, `out.len() = a.n()`, `tokens.end ≤ a.n()`,
/// `gw.words_per_group ∈ {1, 2, 4, 8}`.
#[inline(always)]
pub(super) unsafe fn small_field_row<D: FieldDot, const F: bool>(
    src: &Trits<'_>,
    gw: &GroupWords,
    a: &QuantizedActivations,
    codes: &FieldCodes,
    r: usize,
    tokens: Range<usize>,
    out: &mut [f32],
) {
    macro_rules! tile {
        ($t:expr, $j:expr) => {
            match gw.words_per_group {
                1 => small_field_tile::<D, $t, 1, F>(src, gw, a, codes, r, $j, out),
                2 => small_field_tile::<D, $t, 2, F>(src, gw, a, codes, r, $j, out),
                4 => small_field_tile::<D, $t, 4, F>(src, gw, a, codes, r, $j, out),
                _ => small_field_tile::<D, $t, 8, F>(src, gw, a, codes, r, $j, out),
            }
        };
    }
    let n = tokens.end;
    let mut j = tokens.start;
    while j < n {
        // SAFETY: forwarded from the caller; j + T ≤ tokens.end ≤ a.n().
        unsafe {
            j += match n - j {
                4.. => {
                    tile!(4, j);
                    4
                }
                2.. => {
                    tile!(2, j);
                    2
                }
                _ => {
                    tile!(1, j);
                    1
                }
            };
        }
    }
}

/// Block `b` of a row for each of `T` tokens: lane `d`, `Σ t·q` over word `8b + d` (the level's
/// [`FieldDot::block_words`] minus the word's code sum), 0 past the row's `wpr` words.
///
/// A function, not a closure in [`chunk_pairs`]: a closure's intrinsics were not inlined into
/// the `#[target_feature]` entry point (calls per vector operation, 40× slower).
///
/// # Safety
/// As [`chunk_pairs`] (with `FULL`, `8b + 8 ≤ wpr`).
#[inline(always)]
unsafe fn block_sums<D: FieldDot, const T: usize, const F: bool, const FULL: bool>(
    row: RowFields<'_>,
    x: &[*const i8; T],
    qs: &[*const i32; T],
    b: usize,
    wpr: usize,
) -> [__m256i; T] {
    // SAFETY: forwarded from the caller.
    unsafe {
        let mut w = [_mm256_setzero_si256(); T];
        let w0 = PACK_WORDS * b;
        if !FULL && w0 >= wpr {
            return w;
        }
        let lanes = if FULL {
            PACK_WORDS
        } else {
            (wpr - w0).min(PACK_WORDS)
        };
        let blk = D::load::<F>(row, w0, lanes);
        for t in 0..T {
            let s = D::block_words(blk, x[t].add(PACK_BYTES * b));
            let q = _mm256_loadu_si256(qs[t].add(w0).cast());
            w[t] = _mm256_sub_epi32(s, q);
        }
        w
    }
}

/// Blocks `b0..b0 + G` of a row for each of `T` tokens, block `k`'s `w_k` (lane `d`: `Σ t·q`
/// over word `8 (b0 + k) + d`, the level's [`FieldDot::block_words`] minus the word's code sum;
/// 0 past the row's `wpr` words) paired as they come: `pairs[t][i] = hadd(w_2i, w_2i+1)` for
/// `i < G / 2`, or `pairs[t][0] = w_0` for `G = 1` (a pair's sums leave the loop early, in
/// four vectors instead of eight). `FULL`: every block holds eight words (no bounds, no
/// masks).
///
/// # Safety
/// `D`'s features are enabled; `x[t]` and `qs[t]` point at token `t`'s codes and word sums in
/// the row-block layout ([`FieldCodes`]), `row` has `wpr` words, and with `FULL`
/// `8 (b0 + G) ≤ wpr`.
#[inline(always)]
unsafe fn chunk_pairs<
    D: FieldDot,
    const T: usize,
    const G: usize,
    const F: bool,
    const FULL: bool,
>(
    row: RowFields<'_>,
    x: &[*const i8; T],
    qs: &[*const i32; T],
    b0: usize,
    wpr: usize,
) -> [[__m256i; 4]; T] {
    // SAFETY: forwarded from the caller: block b's words lie in the row (masked past it),
    // its 256 code bytes at x[t] + 256 b and its word sums at qs[t] + 8 b.
    unsafe {
        let zero = _mm256_setzero_si256();
        let mut pairs = [[zero; 4]; T];
        if G == 1 {
            let w = block_sums::<D, T, F, FULL>(row, x, qs, b0, wpr);
            for t in 0..T {
                pairs[t][0] = w[t];
            }
            return pairs;
        }
        for i in 0..G / 2 {
            let b = b0 + 2 * i;
            if !FULL && PACK_WORDS * b >= wpr {
                break;
            }
            let (u, v) = (
                block_sums::<D, T, F, FULL>(row, x, qs, b, wpr),
                block_sums::<D, T, F, FULL>(row, x, qs, b + 1, wpr),
            );
            for t in 0..T {
                pairs[t][i] = _mm256_hadd_epi32(u[t], v[t]);
            }
        }
        pairs
    }
}

/// Row `r`, tokens `j0..j0 + T`, groups `groups` (starting at a multiple of 8), scale groups
/// of `G ∈ {1, 2, 4, 8}` words: for each eight groups `g0..g0 + 8`, the products
/// `s[r, g] · Σ_{c ∈ g} t · q[j, c]` (lanes; 0 past the row's groups), either stored at
/// `prod[g0 − groups.start..]` (`STORE`, `T = 1`) or added to `sum[t]` one group at a time (the
/// reference's order).
///
/// Per eight groups, the row's 8-word blocks `b0..b0 + G` (`8 · b0 = G · g0`): the level's
/// [`FieldDot::block_words`] keeps each word in its own `i32` lane (lane `d` = word
/// `8b + d`); `Σ q` per word is subtracted lane-wise, giving exact `Σ t·q` per word, and
/// `hadd` (with one lane permute) reduces the `G` blocks to the eight group sums, converted
/// and multiplied by the eight scales: each lane exactly the reference's `f32` product.
///
/// # Safety
/// As [`small_field_row`], `G = gw.words_per_group`, `groups.end ≤ gw.groups`,
/// `j0 + T ≤ a.n()`; with `STORE`, `prod` valid for `groups.len()` rounded up to 8 floats.
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn small_field_span<
    D: FieldDot,
    const T: usize,
    const G: usize,
    const STORE: bool,
    const F: bool,
>(
    src: &Trits<'_>,
    gw: &GroupWords,
    codes: &FieldCodes,
    r: usize,
    j0: usize,
    groups: Range<usize>,
    prod: *mut f32,
    sum: &mut [f32; T],
) {
    let wpr = gw.words_per_row;
    let blocks = wpr.div_ceil(PACK_WORDS);
    let row = row_fields(src, r);
    let scales = src.row_scales(r, gw);
    let x: [*const i8; T] =
        std::array::from_fn(|t| codes.bytes.as_slice()[(j0 + t) * codes.token_len..].as_ptr());
    let qs: [*const i32; T] =
        std::array::from_fn(|t| codes.sums[(j0 + t) * blocks * PACK_WORDS..].as_ptr());
    // SAFETY: `D`'s features (which include AVX2) are enabled (caller). Words
    // w0..w0 + lanes ≤ words_per_row lie in row `r` (planes: the masked load reads only those;
    // fields: block b); block b's 256 bytes and 8 word sums lie in each token's part of
    // `codes` (`blocks` of them); lanes g0 + l < groups of the scales are read (the masked
    // load reads only those); with `STORE`, g0 − start + 8 floats lie in `prod` (caller).
    unsafe {
        let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        // Blocks that hold eight words: chunks of them take a loop without bounds or masks.
        let full_blocks = wpr / PACK_WORDS;
        for g0 in groups.clone().step_by(8) {
            let b0 = g0 * G / PACK_WORDS;
            let pairs = if b0 + G <= full_blocks {
                chunk_pairs::<D, T, G, F, true>(row, &x, &qs, b0, wpr)
            } else {
                chunk_pairs::<D, T, G, F, false>(row, &x, &qs, b0, wpr)
            };
            let n_g = (gw.groups - g0).min(8);
            let s = if n_g == 8 {
                _mm256_loadu_ps(scales.as_ptr().add(g0))
            } else {
                let keep = _mm256_cmpgt_epi32(_mm256_set1_epi32(n_g as i32), lane);
                _mm256_maskload_ps(scales.as_ptr().add(g0), keep)
            };
            for t in 0..T {
                let p = &pairs[t];
                // Lane l = Σ t·q over group g0 + l.
                let sums = match G {
                    1 => p[0],
                    // hadd: [g0 g1 g4 g5 | g2 g3 g6 g7] in 64-bit pairs (0, 2, 1, 3).
                    2 => _mm256_permute4x64_epi64::<0b11_01_10_00>(p[0]),
                    // hadd of hadds: [g0 g2 g4 g6 | g1 g3 g5 g7].
                    4 => _mm256_permutevar8x32_epi32(
                        _mm256_hadd_epi32(p[0], p[1]),
                        _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7),
                    ),
                    // Two levels of hadds per four blocks: [b0..b3 low halves | b0..b3 high
                    // halves], then the halves of both fours paired and added.
                    _ => {
                        let h0 = _mm256_hadd_epi32(p[0], p[1]);
                        let h1 = _mm256_hadd_epi32(p[2], p[3]);
                        _mm256_add_epi32(
                            _mm256_permute2x128_si256::<0x20>(h0, h1),
                            _mm256_permute2x128_si256::<0x31>(h0, h1),
                        )
                    }
                };
                let p = _mm256_mul_ps(_mm256_cvtepi32_ps(sums), s);
                if STORE {
                    _mm256_storeu_ps(prod.add(g0 - groups.start), p);
                } else {
                    let mut v = [0f32; 8];
                    _mm256_storeu_ps(v.as_mut_ptr(), p);
                    for &v in &v[..n_g] {
                        sum[t] += v;
                    }
                }
            }
        }
    }
}

/// Row `r` × tokens `j0..j0 + T` ([`small_field_span`] over all groups, summed in the
/// reference's order), then `y = sum · s_j`.
///
/// # Safety
/// As [`small_field_row`], `G = gw.words_per_group` and `j0 + T ≤ a.n()`.
#[inline(always)]
unsafe fn small_field_tile<D: FieldDot, const T: usize, const G: usize, const F: bool>(
    src: &Trits<'_>,
    gw: &GroupWords,
    a: &QuantizedActivations,
    codes: &FieldCodes,
    r: usize,
    j0: usize,
    out: &mut [f32],
) {
    let mut sum = [0f32; T];
    // SAFETY: forwarded from the caller; no products are stored.
    unsafe {
        small_field_span::<D, T, G, false, F>(
            src,
            gw,
            codes,
            r,
            j0,
            0..gw.groups,
            std::ptr::null_mut(),
            &mut sum,
        );
    }
    for t in 0..T {
        out[j0 + t] = sum[t] * a.scales()[j0 + t];
    }
}

/// One token, rows `r0..r0 + out.len()` (at most [`LANE_ROWS`]), groups of 1, 2, 4 or 8 words:
/// each row's group products ([`small_field_span`]) go to `prod` (the thread's buffer),
/// at most [`CHUNK_GROUPS`] groups at a time; an 8 × 8 transpose then turns eight groups of eight rows into eight
/// vectors, one group each with one row per lane, added in group order, so each lane is the
/// reference's sequential sum of its row (without a serial chain of scalar adds per row).
///
/// # Safety
/// As [`small_field_row`] with `a.n() = 1`, and `r0 + out.len() ≤ rows`,
/// `out.len() ≤ LANE_ROWS`, `prod.len() = LANE_ROWS · chunk` with `chunk` a multiple of 8.
#[inline(always)]
pub(super) unsafe fn small_field_rows8<D: FieldDot, const G: usize, const F: bool>(
    src: &Trits<'_>,
    gw: &GroupWords,
    a: &QuantizedActivations,
    codes: &FieldCodes,
    r0: usize,
    prod: &mut [f32],
    out: &mut [f32],
) {
    let nr = out.len();
    let chunk = prod.len() / LANE_ROWS;
    if nr < LANE_ROWS {
        // Lanes of absent rows are summed and dropped: zeros, not another call's products.
        prod[nr * chunk..].fill(0.0);
    }
    // SAFETY: `D`'s features (which include AVX2) are enabled, the rest is forwarded from the
    // caller; each `row` holds `chunk` ≥ c1 − c0 rounded up to 8 floats (`chunk` is a multiple
    // of 8), and b + 8 ≤ chunk floats of each row are loaded.
    unsafe {
        let mut acc = _mm256_setzero_ps();
        for c0 in (0..gw.groups).step_by(chunk) {
            let c1 = (c0 + chunk).min(gw.groups);
            for (i, row) in prod.chunks_exact_mut(chunk).enumerate().take(nr) {
                small_field_span::<D, 1, G, true, F>(
                    src,
                    gw,
                    codes,
                    r0 + i,
                    0,
                    c0..c1,
                    row.as_mut_ptr(),
                    &mut [0.0],
                );
            }
            for b in (0..c1 - c0).step_by(8) {
                let v: [__m256; LANE_ROWS] =
                    std::array::from_fn(|i| _mm256_loadu_ps(prod[i * chunk..].as_ptr().add(b)));
                let w = transpose8(v);
                for g in w.iter().take((c1 - c0 - b).min(8)) {
                    acc = _mm256_add_ps(acc, *g);
                }
            }
        }
        let mut sums = [0f32; LANE_ROWS];
        _mm256_storeu_ps(sums.as_mut_ptr(), acc);
        for (y, s) in out.iter_mut().zip(sums) {
            *y = s * a.scales()[0];
        }
    }
}

/// [`transpose_into_with`](crate::kernels::transpose_into_with):
/// `dst[j · stride + i] (+)= src[i · n + j]`, 8 rows × 8 tokens at a time through
/// [`transpose8`] (eight loads, 24 shuffles, eight stores), the edges by the scalar walk. The
/// caller checked `src.len() ≥ rows · n`, `dst.len() ≥ (n − 1) · stride + rows` and
/// `stride ≥ rows` for `n > 1`.
pub(super) fn transpose_into(
    _t: Avx2,
    src: &[f32],
    rows: usize,
    n: usize,
    dst: &mut [f32],
    stride: usize,
    add: bool,
) {
    let (r8, n8) = (rows / 8 * 8, n / 8 * 8);
    // SAFETY: the token proves AVX2; every block lies inside the checked shapes.
    unsafe {
        if add {
            transpose_blocks::<true>(src, n, r8, n8, dst, stride);
        } else {
            transpose_blocks::<false>(src, n, r8, n8, dst, stride);
        }
    }
    scalar::transpose_block(src, n, r8..rows, 0..n, dst, stride, add);
    scalar::transpose_block(src, n, 0..r8, n8..n, dst, stride, add);
}

/// The 8 × 8 blocks of [`transpose_into`] over rows `0..r8` and tokens `0..n8`; row blocks
/// outside, so one block's eight source rows stream while the 8-value destination pieces of
/// consecutive tokens fill the two halves of their cache lines on consecutive row blocks.
///
/// # Safety
/// AVX2 must be available; `r8`, `n8` are multiples of 8 with `r8 · n ≤ src.len()`, `n8 ≤ n`,
/// and `(n8 − 1) · stride + r8 ≤ dst.len()` when both are non-zero.
#[target_feature(enable = "avx2")]
unsafe fn transpose_blocks<const ADD: bool>(
    src: &[f32],
    n: usize,
    r8: usize,
    n8: usize,
    dst: &mut [f32],
    stride: usize,
) {
    let (sp, dp) = (src.as_ptr(), dst.as_mut_ptr());
    for i0 in (0..r8).step_by(8) {
        for j0 in (0..n8).step_by(8) {
            // SAFETY: rows i0..i0 + 8 ≤ r8 and tokens j0..j0 + 8 ≤ n8 ≤ n: every load reads
            // src[(i0 + a) · n + j0 .. + 8] within r8 · n, every store writes
            // dst[(j0 + g) · stride + i0 .. + 8] within (n8 − 1) · stride + r8.
            unsafe {
                let v: [__m256; 8] =
                    std::array::from_fn(|a| _mm256_loadu_ps(sp.add((i0 + a) * n + j0)));
                for (g, &t) in transpose8(v).iter().enumerate() {
                    let p = dp.add((j0 + g) * stride + i0);
                    let o = if ADD {
                        _mm256_add_ps(_mm256_loadu_ps(p), t)
                    } else {
                        t
                    };
                    _mm256_storeu_ps(p, o);
                }
            }
        }
    }
}

/// The 8 × 8 transpose: lane `i` of result `g` is lane `g` of `v[i]`.
#[inline]
#[target_feature(enable = "avx2")]
fn transpose8(v: [__m256; 8]) -> [__m256; 8] {
    let t: [__m256; 8] = std::array::from_fn(|k| {
        let (a, b) = (v[2 * (k / 2)], v[2 * (k / 2) + 1]);
        if k % 2 == 0 {
            _mm256_unpacklo_ps(a, b)
        } else {
            _mm256_unpackhi_ps(a, b)
        }
    });
    // u[4h + c]: columns c and c + 4 of rows 4h..4h + 4 (t[4h], t[4h + 2] hold columns 0, 1 |
    // 4, 5; t[4h + 1], t[4h + 3] columns 2, 3 | 6, 7).
    let u: [__m256; 8] = std::array::from_fn(|k| {
        let (h, c) = (k / 4, k % 4);
        let (a, b) = (t[4 * h + c / 2], t[4 * h + 2 + c / 2]);
        if c % 2 == 0 {
            _mm256_shuffle_ps::<0x44>(a, b)
        } else {
            _mm256_shuffle_ps::<0xEE>(a, b)
        }
    });
    std::array::from_fn(|g| {
        if g < 4 {
            _mm256_permute2f128_ps::<0x20>(u[g], u[4 + g])
        } else {
            _mm256_permute2f128_ps::<0x31>(u[g - 4], u[g])
        }
    })
}

/// Int8 GEMM with decoded weights. Activations become `u = q + 128` (`u8`, permuted like the
/// plane bits, [`permuted_codes`]). For each block of [`MB`] rows and each chunk of at most
/// [`U8_WORDS`] words inside one scale group, the chunk's weights are decoded once to trits
/// `t ∈ {−1, 0, 1}` (`i8`), and an `MR × NR` register tile ([`gemm_tile`]) runs over every
/// token: `maddubs(u, t)` adds pairs (`|u·t + u'·t'| ≤ 510`) into `i16` lanes, at most 64
/// words of them (`64 · 510 < 2¹⁵`), reduced to `i32` per chunk. At the end of group `g`,
/// `Σ q·t = Σ u·t − 128 · Σ t` (`Σ t = popc(plus) − popc(minus)` over the group) is exact and
/// `y += s[r, g] · (Σ q·t as f32)`, the reference's order; finally `y *= s_j`.
fn gemm_i8_blocked(t: Avx2, m: &TernaryMatrix, a: &QuantizedActivations, y: Rows<'_>) {
    let n = a.n();
    let gw = GroupWords::of(m);
    let chunks = chunks(gw);
    let up = chunked_u8_codes(a, &chunks);
    let scales = m.scales().values();
    y.run(m.rows(), m.cols(), n, MR, |rows, out| {
        out.fill(0.0);
        let mb = MB.min(rows.len().div_ceil(MR) * MR);
        let mut decoded = vec![0i8; mb * 32 * U8_WORDS];
        let mut acc = vec![0i32; mb * n];
        let mut rb = rows.start;
        while rb < rows.end {
            let nr = (rows.end - rb).min(mb);
            let nr_pad = nr.div_ceil(MR) * MR;
            for (ci, &(g, ref words)) in chunks.iter().enumerate() {
                let kb = 32 * words.len();
                let chunk = &mut decoded[..nr_pad * kb];
                decode_chunk(t, m, rb, nr, words.clone(), chunk);
                // This chunk's codes: token `j` at `base + j · kb` (see `chunked_u8_codes`).
                let base = n * 32 * words.start;
                let mut j = 0;
                while j < n {
                    let nt = (n - j).min(NR);
                    let u = &up[base + j * kb..base + (j + nt) * kb];
                    for ib in (0..nr_pad).step_by(MR) {
                        let w = &chunk[ib * kb..(ib + MR) * kb];
                        // SAFETY: the token proves AVX2; `w` holds MR rows of `kb` bytes and
                        // `u` `nt` tokens of `kb` bytes; `kb ≤ 32 · U8_WORDS`.
                        let sums = unsafe {
                            match nt {
                                1 => gemm_tile::<1>(w, u, kb),
                                2 => gemm_tile::<2>(w, u, kb),
                                _ => gemm_tile::<NR>(w, u, kb),
                            }
                        };
                        for i in 0..MR {
                            for (tt, s) in sums[i].iter().enumerate().take(nt) {
                                acc[(ib + i) * n + j + tt] += s;
                            }
                        }
                    }
                    j += nt;
                }
                if chunks.get(ci + 1).is_some_and(|c| c.0 == g) {
                    continue;
                }
                // End of group g: remove the offset, scale, add in the reference's order.
                let group = gw.range(g);
                for i in 0..nr {
                    let (p, mi) = m.row_planes(rb + i);
                    // SAFETY: the token proves POPCNT.
                    let sum = unsafe { super::trit_sum(&p[group.clone()], &mi[group.clone()]) };
                    let offset = 128 * sum;
                    let s = scales[(rb + i) * gw.groups + g];
                    let o = &mut out[(rb + i - rows.start) * n..(rb + i - rows.start + 1) * n];
                    for (y, acc) in o.iter_mut().zip(&mut acc[i * n..(i + 1) * n]) {
                        *y += s * (*acc - offset) as f32;
                        *acc = 0;
                    }
                }
                acc[nr * n..nr_pad * n].fill(0);
            }
            for i in 0..nr {
                let o = &mut out[(rb + i - rows.start) * n..(rb + i - rows.start + 1) * n];
                for (y, &sj) in o.iter_mut().zip(a.scales()) {
                    *y *= sj;
                }
            }
            rb += nr;
        }
    });
}

/// The GEMM's column chunks in order: `(g, words)`, each at most [`U8_WORDS`] words of group
/// `g`. A group with no words (no columns) has no chunk but is still folded in.
fn chunks(gw: GroupWords) -> Vec<(usize, Range<usize>)> {
    let mut out = Vec::new();
    for g in 0..gw.groups {
        let words = gw.range(g);
        let mut w0 = words.start;
        loop {
            let w1 = (w0 + U8_WORDS).min(words.end);
            out.push((g, w0..w1));
            w0 = w1;
            if w0 >= words.end {
                break;
            }
        }
    }
    out
}

/// The codes as `u = q + 128`, permuted like [`permuted_codes`], laid out chunk by chunk: for
/// chunk words `w0..w1` (`kb = 32 · (w1 − w0)` bytes), token `j` at `n · 32 · w0 + j · kb`, so
/// each chunk's tokens are one sequential stream.
fn chunked_u8_codes(a: &QuantizedActivations, chunks: &[(usize, Range<usize>)]) -> Vec<u8> {
    let n = a.n();
    let mut out = vec![0x80u8; a.data().len()];
    for (_, words) in chunks {
        let kb = 32 * words.len();
        let base = n * 32 * words.start;
        for j in 0..n {
            let src = &a.row(j)[32 * words.start..32 * words.end];
            let dst = &mut out[base + j * kb..base + (j + 1) * kb];
            permute_into(dst, src, 0x80);
        }
    }
    out
}

/// Decodes words `words` of rows `r0..r0 + nr` to trits in the permuted column order, row `i`
/// at `out[i · kb..(i + 1) · kb]` (`kb = 32 · words.len()`); rows `nr..` of `out` are zeroed.
fn decode_chunk(
    _t: Avx2,
    m: &TernaryMatrix,
    r0: usize,
    nr: usize,
    words: Range<usize>,
    out: &mut [i8],
) {
    let kb = 32 * words.len();
    out[nr * kb..].fill(0);
    // SAFETY: the token proves AVX2; `out` holds at least `nr · kb` bytes.
    unsafe { decode_chunk_impl(m, r0, nr, words, &mut out[..nr * kb]) }
}

/// # Safety
/// AVX2 must be available; `out.len() = nr · 32 · words.len()`, `r0 + nr ≤ rows`,
/// `words.end ≤ words_per_row`.
#[target_feature(enable = "avx2")]
unsafe fn decode_chunk_impl(
    m: &TernaryMatrix,
    r0: usize,
    nr: usize,
    words: Range<usize>,
    out: &mut [i8],
) {
    let kb = 32 * words.len();
    let shifts = sign_shifts();
    let zero = _mm256_setzero_si256();
    let ones = _mm256_set1_epi8(1);
    let minus_ones = _mm256_set1_epi8(-1);
    for i in 0..nr {
        let (p, mi) = m.row_planes(r0 + i);
        let (p, mi) = (&p[words.clone()], &mi[words.clone()]);
        let row = &mut out[i * kb..(i + 1) * kb];
        for (w, dst) in row.chunks_exact_mut(32).enumerate() {
            // SAFETY: w < words.len() indexes both plane slices; `dst` is 32 bytes.
            unsafe {
                let sp = plane_signs(p.as_ptr().add(w), shifts);
                let sm = plane_signs(mi.as_ptr().add(w), shifts);
                let v = _mm256_blendv_epi8(_mm256_blendv_epi8(zero, ones, sp), minus_ones, sm);
                _mm256_storeu_si256(dst.as_mut_ptr().cast(), v);
            }
        }
    }
}

/// One `MR × T` tile over one chunk of `kb ≤ 32 · U8_WORDS` bytes:
/// `sums[i][t] = Σ_k u[t · kb + k] · w[i · kb + k]` (exact).
///
/// # Safety
/// AVX2 must be available; `w.len() = MR · kb`; `u.len() ≥ T · kb`; `kb` is a
/// multiple of 32 and at most `32 · U8_WORDS`.
#[target_feature(enable = "avx2")]
unsafe fn gemm_tile<const T: usize>(w: &[i8], u: &[u8], kb: usize) -> [[i32; NR]; MR] {
    let wp = w.as_ptr();
    let up = u.as_ptr();
    let zero = _mm256_setzero_si256();
    let mut acc16 = [[zero; T]; MR];
    for k in (0..kb).step_by(32) {
        // SAFETY: k + 32 ≤ kb: bytes k..k + 32 of each row and token are in bounds.
        unsafe {
            let uv: [__m256i; T] =
                std::array::from_fn(|t| _mm256_loadu_si256(up.add(t * kb + k).cast()));
            for i in 0..MR {
                let wv = _mm256_loadu_si256(wp.add(i * kb + k).cast());
                for t in 0..T {
                    acc16[i][t] = _mm256_add_epi16(acc16[i][t], _mm256_maddubs_epi16(uv[t], wv));
                }
            }
        }
    }
    let ones16 = _mm256_set1_epi16(1);
    let mut sums = [[0i32; NR]; MR];
    for i in 0..MR {
        for t in 0..T {
            sums[i][t] =
                crate::kernels::x86_primitives::hsum_epi32(_mm256_madd_epi16(acc16[i][t], ones16));
        }
    }
    sums
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

/// `y[i] += a · x[i]` (fused) over the shorter length.
///
/// # Safety
/// AVX2 and FMA must be available.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn axpy_f32(a: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    let av = _mm256_set1_ps(a);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n ≤ both lengths.
        unsafe {
            let yp = y.as_mut_ptr().add(i);
            let v = _mm256_fmadd_ps(av, _mm256_loadu_ps(x.as_ptr().add(i)), _mm256_loadu_ps(yp));
            _mm256_storeu_ps(yp, v);
        }
        i += 8;
    }
    for k in i..n {
        y[k] = a.mul_add(x[k], y[k]);
    }
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

/// `Σ_i a[i] · b[i]` over the shorter length in `i32`, 32 bytes per step:
/// `maddubs(|a|, sign(b, a))` adds pairs `|a|·(±b)` into `i16` lanes (`2 · 127 · 127 < 2¹⁵`,
/// so no saturation for values in `[−127, 127]`), `madd` by ones widens them to `i32`.
///
/// # Safety
/// AVX2 must be available.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let ones = _mm256_set1_epi16(1);
    let mut acc = [_mm256_setzero_si256(); 2];
    let mut i = 0;
    while i + 64 <= n {
        for (j, s) in acc.iter_mut().enumerate() {
            // SAFETY: i + 32j + 32 <= i + 64 <= n, within both slices.
            let (x, y) = unsafe {
                (
                    _mm256_loadu_si256(pa.add(i + 32 * j).cast()),
                    _mm256_loadu_si256(pb.add(i + 32 * j).cast()),
                )
            };
            let p = _mm256_maddubs_epi16(_mm256_abs_epi8(x), _mm256_sign_epi8(y, x));
            *s = _mm256_add_epi32(*s, _mm256_madd_epi16(p, ones));
        }
        i += 64;
    }
    while i + 32 <= n {
        // SAFETY: i + 32 <= n, within both slices.
        let (x, y) = unsafe {
            (
                _mm256_loadu_si256(pa.add(i).cast()),
                _mm256_loadu_si256(pb.add(i).cast()),
            )
        };
        let p = _mm256_maddubs_epi16(_mm256_abs_epi8(x), _mm256_sign_epi8(y, x));
        acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(p, ones));
        i += 32;
    }
    let tail: i32 = a[i..n]
        .iter()
        .zip(&b[i..n])
        .map(|(&x, &y)| i32::from(x) * i32::from(y))
        .sum();
    crate::kernels::x86_primitives::hsum_epi32(_mm256_add_epi32(acc[0], acc[1])) + tail
}

/// Tokens per block of the dense `f32` GEMM: their activations (`64 · cols · 4` bytes) stay in
/// L2 while every block of weight rows passes over them.
const DENSE_TOKENS: usize = 64;

/// Bytes of `f32` weight rows widened from `f16` at a time for a prefill ([`dense_rows`]):
/// with a block of [`DENSE_TOKENS`] activations, within a 512 KiB L2.
const DENSE_PANEL_BYTES: usize = 128 << 10;

/// Dense product for rows `rows` of `w: [rows, cols]` (row-major, `f32` or `f16`) and every
/// token of `x: [n, cols]`: `out[(r − rows.start) · n + j] = Σ_c w[r, c] · x[j, c]`, in
/// `4 × 3` register tiles (twelve 8-lane FMA accumulators, seven loads per twelve FMAs) over
/// blocks of [`DENSE_TOKENS`] tokens. Shapes are checked by the caller.
pub(super) fn dense_rows<W: DenseWeight>(
    _t: Avx2,
    w: &[W],
    cols: usize,
    x: &[f32],
    n: usize,
    rows: Range<usize>,
    out: &mut [f32],
) {
    // One token: eight rows per tile (eight streams in flight); more: 4 × 3 tiles.
    let rstep = if n == 1 { 8 } else { 4 };
    if W::HALF && n >= 4 {
        // `f16` rows shared by several tokens are widened (exactly) once, a panel of
        // [`DENSE_PANEL_BYTES`] at a time, so the tiles of a prefill run on `f32` loads; each
        // block of tokens then passes over the panel.
        let panel = (DENSE_PANEL_BYTES / (4 * cols.max(1))).max(rstep) / rstep * rstep;
        let mut wide: Vec<f32> = Vec::new();
        let mut r = rows.start;
        while r < rows.end {
            let pr = (rows.end - r).min(panel);
            wide.resize(pr * cols, 0.0);
            widen(_t, &w[r * cols..(r + pr) * cols], &mut wide);
            // The next panel's `f16` rows, prefetched spread over this panel's tiles (which
            // are bound by the FMA ports, not by memory), so that widening them reads the
            // cache (SmolLM2 F16 prefill at this level, 2 threads on a Zen 5: +2%).
            let end = rows.end * cols;
            let next = &w[((r + pr) * cols).min(end)..((r + 2 * pr) * cols).min(end)];
            let lines = std::mem::size_of_val(next).div_ceil(64);
            let per = lines.div_ceil(n.div_ceil(DENSE_TOKENS) * pr.div_ceil(rstep));
            let mut line = 0;
            for j0 in (0..n).step_by(DENSE_TOKENS) {
                let j1 = (j0 + DENSE_TOKENS).min(n);
                for i0 in (0..pr).step_by(rstep) {
                    if line < lines {
                        for _ in 0..per {
                            // SAFETY: SSE is part of x86-64; a prefetch reads nothing
                            // architecturally and never faults.
                            unsafe {
                                _mm_prefetch::<_MM_HINT_T1>(
                                    next.as_ptr().cast::<u8>().wrapping_add(64 * line).cast(),
                                )
                            };
                            line += 1;
                        }
                    }
                    let nr = (pr - i0).min(rstep);
                    let o = &mut out[(r + i0 - rows.start) * n..];
                    // SAFETY: the token proves AVX2, FMA and F16C; `wide` holds the panel's
                    // pr rows (i0 + nr ≤ pr), tokens j0..j1 of `x` and outputs i · n + j
                    // (i < nr, j < j1) of `o` are in bounds (the caller checked x: n × cols,
                    // out: rows.len() × n).
                    unsafe { dense_block(&wide, i0, nr, x, cols, j0..j1, n, o) }
                }
            }
            r += pr;
        }
        return;
    }
    let mut j0 = 0;
    while j0 < n {
        let j1 = (j0 + DENSE_TOKENS).min(n);
        let mut r = rows.start;
        while r < rows.end {
            let nr = (rows.end - r).min(rstep);
            let o = &mut out[(r - rows.start) * n..];
            // SAFETY: the token proves AVX2, FMA and F16C; rows r..r + nr of `w` (w holds
            // every row of `rows`), tokens j0..j1 of `x` and outputs i · n + j (i < nr,
            // j < j1) of `o` are in bounds (the caller checked x: n × cols, out:
            // rows.len() × n).
            unsafe { dense_block(w, r, nr, x, cols, j0..j1, n, o) }
            r += nr;
        }
        j0 = j1;
    }
}

/// `dst[i] = src[i]` as `f32` (equal lengths): `f16` widened exactly by F16C, eight values
/// per instruction (the `half` crate's slice conversion calls a function per eight values,
/// a fifth of an F16 prefill's time on a Zen 5), `f32` copied.
pub(super) fn widen<W: DenseWeight>(_t: Avx2, src: &[W], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len(), "widen: lengths differ");
    if !W::HALF {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = s.to_f32();
        }
        return;
    }
    // SAFETY: the token proves F16C; the lengths are equal (asserted).
    unsafe { widen_f16(src, dst) }
}

/// [`widen`] for `f16`.
///
/// # Safety
/// F16C must be available; `W` is `f16` (two bytes, `W::HALF`); `dst.len() == src.len()`.
#[target_feature(enable = "avx2,f16c")]
unsafe fn widen_f16<W: DenseWeight>(src: &[W], dst: &mut [f32]) {
    let n = src.len();
    let (sp, dp) = (src.as_ptr().cast::<u16>(), dst.as_mut_ptr());
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: i + 8 ≤ n for both slices; `f16` is a `u16` in memory.
        unsafe {
            let h = _mm_loadu_si128(sp.add(i).cast());
            _mm256_storeu_ps(dp.add(i), _mm256_cvtph_ps(h));
        }
        i += 8;
    }
    for k in i..n {
        dst[k] = src[k].to_f32();
    }
}

/// Rows `r0..r0 + nr` of `w` (`nr ≤ 8`; 8 only with one token) × `tokens`, in register
/// tiles: `out[i · n + j] = Σ_c w[r0 + i, c] · x[j, c]`.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` holds at least `(r0 + nr) · cols` values, `x`
/// at least `tokens.end · cols`, `out` at least `(nr − 1) · n + tokens.end`.
#[allow(clippy::too_many_arguments)]
unsafe fn dense_block<V: DenseWeight>(
    w: &[V],
    r0: usize,
    nr: usize,
    x: &[f32],
    cols: usize,
    tokens: Range<usize>,
    n: usize,
    out: &mut [f32],
) {
    let mut j = tokens.start;
    while j < tokens.end {
        let nt = (tokens.end - j).min(3);
        // SAFETY: forwarded from the caller; j + nt ≤ tokens.end.
        unsafe {
            match (nr, nt) {
                (8, 1) => dense_tile::<V, 8, 1>(w, x, cols, r0, j, n, out),
                (4, 3) => dense_tile::<V, 4, 3>(w, x, cols, r0, j, n, out),
                (4, 2) => dense_tile::<V, 4, 2>(w, x, cols, r0, j, n, out),
                (4, 1) => dense_tile::<V, 4, 1>(w, x, cols, r0, j, n, out),
                _ => {
                    for i in 0..nr {
                        let o = &mut out[i * n..];
                        match nt {
                            3 => dense_tile::<V, 1, 3>(w, x, cols, r0 + i, j, n, o),
                            2 => dense_tile::<V, 1, 2>(w, x, cols, r0 + i, j, n, o),
                            _ => dense_tile::<V, 1, 1>(w, x, cols, r0 + i, j, n, o),
                        }
                    }
                }
            }
        }
        j += nt;
    }
}

/// Rows `r0..r0 + R` × tokens `j0..j0 + T`: `out[i · n + j0 + t] = Σ_c w[r0 + i, c] · x[j0 + t, c]`.
///
/// # Safety
/// AVX2, FMA and F16C must be available; `w` holds at least `(r0 + R) · cols` values, `x` at
/// least `(j0 + T) · cols`, `out` at least `(R − 1) · n + j0 + T`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dense_tile<W: DenseWeight, const R: usize, const T: usize>(
    w: &[W],
    x: &[f32],
    cols: usize,
    r0: usize,
    j0: usize,
    n: usize,
    out: &mut [f32],
) {
    let wp: [*const W; R] = std::array::from_fn(|i| w[(r0 + i) * cols..].as_ptr());
    let xp: [*const f32; T] = std::array::from_fn(|t| x[(j0 + t) * cols..].as_ptr());
    let mut acc = [[_mm256_setzero_ps(); T]; R];
    // One token (decode) streams the weights once: prefetch the same columns of the next
    // tile's rows, one line per row per 64 bytes, so the next tile starts with its lines on
    // the way. A prefetch never faults; `wrapping_add` keeps the address arithmetic defined
    // past the matrix's end.
    let per_line = 64 / std::mem::size_of::<W>();
    let mut c = 0;
    while c + 8 <= cols {
        if T == 1 && c % per_line == 0 {
            for i in 0..R {
                _mm_prefetch::<_MM_HINT_T0>(wp[i].wrapping_add(R * cols + c).cast());
            }
        }
        // SAFETY: c + 8 ≤ cols: eight values of each row and token are in bounds.
        unsafe {
            let xv: [__m256; T] = std::array::from_fn(|t| _mm256_loadu_ps(xp[t].add(c)));
            for i in 0..R {
                let wv = if W::HALF {
                    // Eight f16 values (16 bytes) widened exactly.
                    _mm256_cvtph_ps(_mm_loadu_si128(wp[i].add(c).cast()))
                } else {
                    _mm256_loadu_ps(wp[i].add(c).cast())
                };
                for t in 0..T {
                    acc[i][t] = _mm256_fmadd_ps(wv, xv[t], acc[i][t]);
                }
            }
        }
        c += 8;
    }
    for i in 0..R {
        for t in 0..T {
            let mut s = hsum_ps(acc[i][t]);
            for k in c..cols {
                s += w[(r0 + i) * cols + k].to_f32() * x[(j0 + t) * cols + k];
            }
            out[i * n + j0 + t] = s;
        }
    }
}

/// [`scalar::quantize_row_i8`](crate::kernels::scalar::quantize_row_i8), eight lanes at a
/// time: the maximum of `|x|` (exact in any order), then per lane the same multiply, the same
/// round-half-even by adding and subtracting 1.5 · 2²³, the same clamp, and an exact
/// conversion of the integer-valued result.
///
/// # Safety
/// AVX2 must be available; `q.len() ≥ row.len()`; `row` is finite.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn quantize_row_i8(row: &[f32], q: &mut [i8]) -> f32 {
    let n = row.len();
    let full = n / 8 * 8;
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut m = _mm256_setzero_ps();
    for c in (0..full).step_by(8) {
        // SAFETY: c + 8 ≤ n.
        let v = unsafe { _mm256_loadu_ps(row.as_ptr().add(c)) };
        m = _mm256_max_ps(m, _mm256_and_ps(v, abs));
    }
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), m) };
    let amax = row[full..]
        .iter()
        .chain(&lanes)
        .fold(0f32, |m, v| if v.abs() > m { v.abs() } else { m });
    if amax == 0.0 {
        return 0.0;
    }
    let inv = 127.0 / amax;
    let (vinv, magic) = (_mm256_set1_ps(inv), _mm256_set1_ps(12_582_912.0));
    let (lo, hi) = (_mm256_set1_ps(-127.0), _mm256_set1_ps(127.0));
    for c in (0..full).step_by(8) {
        // SAFETY: c + 8 ≤ n ≤ q.len().
        unsafe {
            let v = _mm256_mul_ps(_mm256_loadu_ps(row.as_ptr().add(c)), vinv);
            let r = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
            let i = _mm256_cvttps_epi32(_mm256_min_ps(_mm256_max_ps(r, lo), hi));
            // Bytes 0..4 of each 128-bit lane are the lane's four codes.
            let b = _mm256_packs_epi16(_mm256_packs_epi32(i, i), _mm256_setzero_si256());
            let p = q.as_mut_ptr().add(c).cast::<i32>();
            p.write_unaligned(_mm256_extract_epi32::<0>(b));
            p.add(1).write_unaligned(_mm256_extract_epi32::<4>(b));
        }
    }
    for (c, &v) in q[full..n].iter_mut().zip(&row[full..]) {
        *c = crate::activations::round_ties_even_small(v * inv).clamp(-127.0, 127.0) as i8;
    }
    amax / 127.0
}

/// From this many tokens on, the int8 path runs the panel GEMM ([`gemm_i8_panels`]).
const PANEL_GEMM_MIN_TOKENS: usize = 16;

/// Panel steps (4 columns each) whose `maddubs` pairs one `i16` lane holds before widening:
/// each step adds one pair `|u·t + u'·t'| ≤ 510`, `64 · 510 < 2¹⁵`.
const PANEL_I16_STEPS: usize = 64;

/// The AVX2 tile of the panel GEMM ([`gemm_i8_panels`]): [`PanelMaddubs::MR`] rows × one
/// 16-token panel as two 8-token halves; per step, `maddubs(u, broadcast(w[4k..4k + 4]))`
/// adds each token's two column pairs into `i16` lanes, widened by `madd(·, 1)` every
/// [`PANEL_I16_STEPS`] steps and at the end of each group.
#[derive(Clone, Copy)]
struct PanelMaddubs(Avx2);

impl PanelKernel for PanelMaddubs {
    const MR: usize = 4;
    const PANELS: usize = 1;

    fn decode_rows(self, m: &TernaryMatrix, r0: usize, nr: usize, out: &mut [i8]) {
        // SAFETY: the token proves AVX2; `out` holds nr rows of 32 · words_per_row bytes
        // (the driver's decoded block), `r0 + nr ≤ rows`.
        unsafe { decode_rows_in_order(m, r0, nr, out) }
    }

    unsafe fn tile(self, _nz: usize, t: Tile<'_>, out: &mut [f32]) {
        // SAFETY: the token proves AVX2; the bounds are the caller's (PANELS = 1).
        unsafe { panel_tile::<4>(t, out) }
    }
}

/// Rows `r0..r0 + nr` as `i8` trits in column order, `32 · words_per_row` bytes per row: each
/// plane word is broadcast, byte `j` of the vector picks byte `j / 8` of the word and keeps
/// bit `j mod 8`, so `cmpeq` gives `−1` where the bit is set; `t = minus − plus`.
///
/// # Safety
/// AVX2 must be available; `out.len() ≥ nr · 32 · words_per_row`, `r0 + nr ≤ rows`.
#[target_feature(enable = "avx2")]
unsafe fn decode_rows_in_order(m: &TernaryMatrix, r0: usize, nr: usize, out: &mut [i8]) {
    let pc = 32 * m.words_per_row();
    let pick = _mm256_setr_epi8(
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3,
        3, 3,
    );
    let bits = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
    let expand = |word: u32| {
        let v = _mm256_shuffle_epi8(_mm256_set1_epi32(word as i32), pick);
        _mm256_cmpeq_epi8(_mm256_and_si256(v, bits), bits)
    };
    for i in 0..nr {
        let (p, mi) = m.row_planes(r0 + i);
        let row = &mut out[i * pc..(i + 1) * pc];
        for ((dst, &wp), &wm) in row.chunks_exact_mut(32).zip(p).zip(mi) {
            let t = _mm256_sub_epi8(expand(wm), expand(wp));
            // SAFETY: `dst` is 32 bytes.
            unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), t) };
        }
    }
}

/// One `R × 16` tile of [`PanelMaddubs`] over all columns: `out[i · 16 + t]`.
///
/// # Safety
/// AVX2 must be available; the bounds of [`PanelKernel::tile`] with `MR = R`, one panel.
#[target_feature(enable = "avx2")]
unsafe fn panel_tile<const R: usize>(t: Tile<'_>, out: &mut [f32]) {
    let pc = 4 * t.steps;
    let groups = t.gw.groups;
    let wp = t.w.as_ptr();
    let pp = t.panel.as_ptr();
    let ones = _mm256_set1_epi16(1);
    let mut sum = [[_mm256_setzero_ps(); 2]; R];
    for g in 0..groups {
        let words = t.gw.range(g);
        let mut acc: [[__m256i; 2]; R] =
            std::array::from_fn(|i| [_mm256_set1_epi32(-128 * t.wsum[i * groups + g]); 2]);
        let (mut k0, k1) = (8 * words.start, 8 * words.end);
        while k0 < k1 {
            let ke = (k0 + PANEL_I16_STEPS).min(k1);
            let mut acc16 = [[_mm256_setzero_si256(); 2]; R];
            for k in k0..ke {
                // SAFETY: k < steps: panel bytes 64k .. 64k + 64 and weight bytes
                // i · pc + 4k .. +4 are in bounds.
                unsafe {
                    let av = [
                        _mm256_loadu_si256(pp.add(64 * k).cast()),
                        _mm256_loadu_si256(pp.add(64 * k + 32).cast()),
                    ];
                    for i in 0..R {
                        let wv = _mm256_set1_epi32(
                            wp.add(i * pc + 4 * k).cast::<i32>().read_unaligned(),
                        );
                        for z in 0..2 {
                            acc16[i][z] =
                                _mm256_add_epi16(acc16[i][z], _mm256_maddubs_epi16(av[z], wv));
                        }
                    }
                }
            }
            for i in 0..R {
                for z in 0..2 {
                    acc[i][z] = _mm256_add_epi32(acc[i][z], _mm256_madd_epi16(acc16[i][z], ones));
                }
            }
            k0 = ke;
        }
        for i in 0..R {
            let s = _mm256_set1_ps(t.wscale[i * groups + g]);
            for z in 0..2 {
                sum[i][z] =
                    _mm256_add_ps(sum[i][z], _mm256_mul_ps(s, _mm256_cvtepi32_ps(acc[i][z])));
            }
        }
    }
    for z in 0..2 {
        // SAFETY: ts holds 16 scales, out R · 16 floats.
        unsafe {
            let sj = _mm256_loadu_ps(t.ts.as_ptr().add(8 * z));
            for i in 0..R {
                _mm256_storeu_ps(
                    out.as_mut_ptr().add(i * 16 + 8 * z),
                    _mm256_mul_ps(sum[i][z], sj),
                );
            }
        }
    }
}

/// From this many tokens on, the `f32` ternary path decodes scaled weights and runs the panel
/// GEMM ([`gemm_f32_packed`]).
const F32_GEMM_MIN_TOKENS: usize = 16;

/// The AVX2 register tile of the `f32` panel GEMM: 6 rows × one 16-token panel (two vectors,
/// twelve accumulators).
#[derive(Clone, Copy)]
pub(super) struct Fma256(pub(super) Avx2);

impl FmaTile for Fma256 {
    const MR: usize = 6;
    const PANELS: usize = 1;

    unsafe fn tile(self, _nz: usize, t: FmaArgs<'_>, out: &mut [f32]) {
        // SAFETY: the token proves AVX2 and FMA; the bounds are the caller's (PANELS = 1).
        unsafe { fma_tile256(t, out) }
    }

    fn avx2(self) -> Avx2 {
        self.0
    }
}

/// [`FmaTile::tile`] for [`Fma256`].
///
/// # Safety
/// AVX2 and FMA must be available; the bounds of [`FmaTile::tile`] with one panel.
#[target_feature(enable = "avx2,fma")]
unsafe fn fma_tile256(t: FmaArgs<'_>, out: &mut [f32]) {
    const R: usize = 6;
    let FmaArgs {
        w,
        panel,
        kc,
        first,
        n,
        rows,
        tokens,
        ..
    } = t;
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let wp = w.as_ptr();
    let pp = panel.as_ptr();
    // Rows past `rows` read row 0 again (their results are dropped).
    let row_at: [usize; R] = std::array::from_fn(|i| if i < rows { i * KC } else { 0 });
    for k in 0..kc {
        // SAFETY: k < kc: panel floats 16k .. 16k + 16 and weight i · KC + k are in bounds.
        unsafe {
            let x0 = _mm256_loadu_ps(pp.add(16 * k));
            let x1 = _mm256_loadu_ps(pp.add(16 * k + 8));
            for i in 0..R {
                let wv = _mm256_set1_ps(*wp.add(row_at[i] + k));
                acc[i][0] = _mm256_fmadd_ps(wv, x0, acc[i][0]);
                acc[i][1] = _mm256_fmadd_ps(wv, x1, acc[i][1]);
            }
        }
    }
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    let masks: [__m256i; 2] = std::array::from_fn(|z| {
        let left = tokens.saturating_sub(8 * z).min(8) as i32;
        _mm256_cmpgt_epi32(_mm256_set1_epi32(left), lane)
    });
    for i in 0..rows {
        for z in 0..2 {
            if tokens <= 8 * z {
                continue;
            }
            // SAFETY: the unmasked lanes are tokens 8z + l < tokens of row i, inside
            // out[first + i · n ..]; masked-out lanes are neither read nor written.
            unsafe {
                let o = out.as_mut_ptr().add(first + i * n + 8 * z);
                let v = _mm256_add_ps(_mm256_maskload_ps(o, masks[z]), acc[i][z]);
                _mm256_maskstore_ps(o, masks[z], v);
            }
        }
    }
}

/// Writes `w[r, c] = s[r, g(c)] · t[r, c]` for rows `r0..r0 + nr`, columns `k0..k0 + kc`
/// into `out[(r − r0) · KC + c − k0]`: eight columns at a time, each plane byte broadcast and
/// tested against one bit per lane, then two blends.
fn decode_scaled_rows(
    _t: Avx2,
    m: &TernaryMatrix,
    r0: usize,
    nr: usize,
    k0: usize,
    kc: usize,
    out: &mut [f32],
) {
    // SAFETY: the token proves AVX2.
    unsafe { decode_scaled_rows_impl(m, r0, nr, k0, kc, out) }
}

/// # Safety
/// AVX2 must be available; `r0 + nr ≤ rows`, `nr ≤ MC`, `k0` and `kc` multiples of 16 with
/// `k0 + kc ≤ 32 · words_per_row`, `kc ≤ KC`, `out.len() ≥ nr · KC`.
#[target_feature(enable = "avx2")]
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
    // Columns per scale; an 8-column chunk never straddles two groups (groups are multiples of 32).
    let gcols = layout.group_len(m.cols()).max(1);
    let scales = m.scales().values();
    let bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    let lanes = |byte: u32| {
        let v = _mm256_and_si256(_mm256_set1_epi32(byte as i32), bit);
        _mm256_castsi256_ps(_mm256_cmpeq_epi32(v, bit))
    };
    for i in 0..nr {
        let (p, mi) = m.row_planes(r0 + i);
        let s = &scales[(r0 + i) * groups..(r0 + i + 1) * groups];
        let row = &mut out[i * KC..i * KC + kc];
        for (h, dst) in row.chunks_exact_mut(8).enumerate() {
            let c = k0 + 8 * h;
            let (word, shift) = (c / 32, c % 32);
            let (kp, km) = ((p[word] >> shift) & 0xFF, (mi[word] >> shift) & 0xFF);
            // Padding columns past the last group have zero bits; any scale will do.
            let sg = s.get(c / gcols).copied().unwrap_or(0.0);
            let v = _mm256_blendv_ps(
                _mm256_blendv_ps(_mm256_setzero_ps(), _mm256_set1_ps(sg), lanes(kp)),
                _mm256_set1_ps(-sg),
                lanes(km),
            );
            // SAFETY: `dst` holds 8 floats.
            unsafe { _mm256_storeu_ps(dst.as_mut_ptr(), v) };
        }
    }
}
