//! The `f32` GEMM with the tokens in lanes, shared by AVX2 and AVX-512: weights are made `f32`
//! one cache block at a time (decoded trits times their scales, or dense `f32`/`f16` rows
//! widened exactly), activations are packed in panels of 16 tokens, and a level's register
//! tile ([`FmaTile`]) accumulates `y += w · x` with one broadcast of a weight per row and step
//! and no horizontal reduction.

use std::ops::Range;

use rayon::prelude::*;

use crate::kernels::{DenseWeight, Rows};

/// From this many tokens on (and a register tile of rows), AVX-512's dense products run
/// [`dense_gemm`]; fewer, and AVX2's at any size, run the dot-product kernels.
pub(super) const DENSE_MIN_TOKENS: usize = 16;
/// Rows of `f32` weights per cache block.
pub(super) const MC: usize = 192;
/// Columns per cache block (a multiple of 64); decoded rows are `KC` floats apart.
pub(super) const KC: usize = 128;

/// What one register tile reads and where it adds.
#[derive(Clone, Copy)]
pub(super) struct FmaArgs<'a> {
    /// `rows` rows of `kc` weights, `KC` floats apart.
    pub w: &'a [f32],
    /// The panels: step `k` of panel `z` at `z · pstride + 16k`, 16 tokens.
    pub panel: &'a [f32],
    pub pstride: usize,
    pub kc: usize,
    /// Output of row `i`, token `t` at `first + i · n + t`.
    pub first: usize,
    pub n: usize,
    pub rows: usize,
    pub tokens: usize,
}

/// A level's register tile.
pub(super) trait FmaTile: Copy + Sync {
    /// Rows per register tile.
    const MR: usize;
    /// 16-token panels per register tile.
    const PANELS: usize;

    /// `out[first + i · n + t] += Σ_{k < kc} w[i · KC + k] · panel[z · pstride + 16k + t mod 16]`
    /// for `i < rows ≤ MR`, `t < tokens ≤ 16 · nz`, `t = 16z + lane`.
    ///
    /// # Safety
    /// `nz ≤ PANELS`; `w` holds `rows` rows of `kc` floats at stride `KC`, `panel` `nz` panels
    /// of `kc · 16` floats at stride `pstride`; `out[first + i · n .. + tokens]` is in bounds for
    /// `i < rows`.
    unsafe fn tile(self, nz: usize, t: FmaArgs<'_>, out: &mut [f32]);

    /// The AVX2 token every level with an FMA tile implies (for F16C widening).
    fn avx2(self) -> super::Avx2;
}

/// Dense weights `w: [rows, cols]` (`f32` or `f16`, widened exactly) through
/// [`gemm_f32_packed`]: `out[(r − rows.start) · n + j] = Σ_c w[r, c] · x[j, c]`. Shapes are
/// checked by the caller.
pub(super) fn dense_gemm<K: FmaTile, W: DenseWeight>(
    k: K,
    w: &[W],
    cols: usize,
    x: &[f32],
    n: usize,
    rows: Range<usize>,
    out: &mut [f32],
) {
    let total = w.len() / cols.max(1);
    let pc = cols.div_ceil(16) * 16;
    let y = Rows::Range(rows, out);
    gemm_f32_packed(k, total, cols, pc, x, n, y, |r0, nr, k0, kc, decoded| {
        let valid = cols.saturating_sub(k0).min(kc);
        for i in 0..nr {
            let src = &w[(r0 + i) * cols + k0..(r0 + i) * cols + k0 + valid];
            let dst = &mut decoded[i * KC..i * KC + kc];
            super::avx2::widen(k.avx2(), src, &mut dst[..valid]);
            dst[valid..].fill(0.0);
        }
    });
}

/// `f32` GEMM over weights made `f32` one block at a time: `decode(r0, nr, k0, kc, buf)`
/// writes rows `r0..r0 + nr`, columns `k0..k0 + kc` (zero past the real columns) to
/// `buf[(r − r0) · KC + c − k0]`, for blocks of `MC` rows × `KC` columns (L2); activations are
/// packed in panels of 16 tokens (`x[j, c]` at `(p · pc + c) · 16 + j mod 16`, `pc ≥ cols` a
/// multiple of 16, zero-padded), and the level's `MR × 16·PANELS` register tile accumulates
/// `y += w · x`, reading and writing `out` per block.
#[allow(clippy::too_many_arguments)]
pub(super) fn gemm_f32_packed<K: FmaTile, D>(
    k: K,
    total_rows: usize,
    cols: usize,
    pc: usize,
    x: &[f32],
    n: usize,
    y: Rows<'_>,
    decode: D,
) where
    D: Fn(usize, usize, usize, usize, &mut [f32]) + Sync,
{
    let (mr, np) = (K::MR, K::PANELS);
    let panels = n.div_ceil(16);
    let mut packed = vec![0f32; panels * pc * 16];
    let pack = |(p, panel): (usize, &mut [f32])| {
        for t in 0..16.min(n - 16 * p) {
            let row = &x[(16 * p + t) * cols..(16 * p + t + 1) * cols];
            for (dst, &v) in panel.chunks_exact_mut(16).zip(row) {
                dst[t] = v;
            }
        }
    };
    if pc > 0 {
        if y.is_serial() {
            packed.chunks_mut(pc * 16).enumerate().for_each(pack);
        } else {
            packed.par_chunks_mut(pc * 16).enumerate().for_each(pack);
        }
    }
    y.run(total_rows, cols, n, mr, |rows, out| {
        out.fill(0.0);
        let mut decoded = vec![0f32; MC * KC];
        let mut b0 = rows.start;
        while b0 < rows.end {
            let nr = (rows.end - b0).min(MC);
            for k0 in (0..pc).step_by(KC) {
                let kc = (pc - k0).min(KC);
                decode(b0, nr, k0, kc, &mut decoded);
                for p in (0..panels).step_by(np) {
                    let nz = (panels - p).min(np);
                    for ib in (0..nr).step_by(mr) {
                        let args = FmaArgs {
                            w: &decoded[ib * KC..],
                            panel: &packed[(p * pc + k0) * 16..],
                            pstride: pc * 16,
                            kc,
                            first: (b0 - rows.start + ib) * n + 16 * p,
                            n,
                            rows: (nr - ib).min(mr),
                            tokens: (n - 16 * p).min(16 * nz),
                        };
                        // SAFETY: `w` holds `rows` decoded rows of `kc ≤ KC` weights at stride
                        // KC, `panel` `nz ≤ PANELS` panels of `kc` columns at stride `pc · 16`
                        // (from column k0 of panel p), and `out` the `rows × tokens` outputs from
                        // `first` at stride `n` (rows of this block, tokens of these panels).
                        unsafe { k.tile(nz, args, out) };
                    }
                }
            }
            b0 += nr;
        }
    });
}
