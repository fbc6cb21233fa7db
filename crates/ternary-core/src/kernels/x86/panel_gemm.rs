//! The int8 GEMM with the tokens in lanes, shared by AVX2 and AVX-512.
//!
//! Activations are packed as `u8 = q + 128` in panels of 16 tokens
//! ([`QuantizedActivations::u8_panels`]: per step of 4 columns, 4 bytes per token); weights are
//! decoded once per block of rows to `i8` trits (kept in L2 while every panel passes over
//! it). A level's register tile ([`PanelKernel::tile`]) multiplies `MR` rows by whole panels
//! with broadcasts of 4 weights, so the sums land one token per lane and no horizontal
//! reduction is needed. The offset is removed exactly per group by starting from
//! `−128 · Σ_{c ∈ g} t[r, c]`, and `y = s_j · Σ_g s[r, g] · (Σ q·t as f32)` in the reference's
//! order (a product then a sum per group, then the token scale), bit for bit.

use super::trit_sum;
use crate::activations::QuantizedActivations;
use crate::kernels::aligned::Aligned;
use crate::kernels::packed::Trits;
use crate::kernels::{GroupWords, Rows};
use crate::matrix::TernaryMatrix;

/// Bytes of decoded weights per block of rows (kept in L2 while all tokens pass over it).
const DECODED_BLOCK_BYTES: usize = 1 << 20;

/// What one register tile reads: `MR` rows of decoded weights (`pc = 4·steps` bytes each),
/// the panels, the per-(row, group) trit sums and scales, and 16 token scales per panel.
#[derive(Clone, Copy)]
pub(super) struct Tile<'a> {
    pub w: &'a [i8],
    pub panel: &'a [u8],
    pub steps: usize,
    pub gw: GroupWords,
    pub wsum: &'a [i32],
    pub wscale: &'a [f32],
    pub ts: &'a [f32],
}

/// A level's pieces of [`gemm_i8_panels`].
pub(super) trait PanelKernel: Copy + Sync {
    /// Rows per register tile.
    const MR: usize;
    /// 16-token panels per register tile.
    const PANELS: usize;

    /// Rows `r0..r0 + nr` as `i8` trits, `32 · words_per_row` bytes per row, columns in order.
    fn decode_rows(self, m: &TernaryMatrix, r0: usize, nr: usize, out: &mut [i8]);

    /// `out[i · 16·nz + t] = s_t · Σ_g s[i, g] · Σ_{c ∈ g} q[t, c] · w[i, c]` for the tile's
    /// `MR` rows and `16·nz` tokens.
    ///
    /// # Safety
    /// `nz ≤ PANELS`; `w` holds `MR · 4 · steps` bytes, `panel` `nz · steps · 64`,
    /// `wsum`/`wscale` `MR · groups` values, `ts` `16 · nz`, `out` `MR · 16 · PANELS`; the group
    /// word ranges end at or before `steps / 8` words.
    unsafe fn tile(self, nz: usize, t: Tile<'_>, out: &mut [f32]);
}

pub(super) fn gemm_i8_panels<K: PanelKernel>(
    k: K,
    src: Trits<'_>,
    a: &QuantizedActivations,
    y: Rows<'_>,
) {
    let (mr, nzp) = (K::MR, K::PANELS);
    let n = a.n();
    let pc = a.padded_cols();
    let steps = pc / 4;
    let gw = src.group_words();
    let groups = gw.groups;
    let panels = n.div_ceil(16);
    // From a cache line: each step of a panel is one 64-byte load.
    let mut packed = Aligned::new(panels * steps * 64);
    a.u8_panels_into(0, !y.is_serial(), packed.as_mut_slice());
    let packed = packed.as_slice();
    let mut tok_scales = a.scales().to_vec();
    tok_scales.resize(panels * 16, 0.0);
    let scales = src.scale_values();
    let (rows, cols) = src.shape();
    let block_rows = (DECODED_BLOCK_BYTES / pc.max(1) / mr).max(1) * mr;
    y.run(rows, cols, n, mr, |rows, out| {
        let block_rows = block_rows.min(rows.len().div_ceil(mr) * mr);
        let mut decoded = vec![0i8; block_rows * pc];
        let mut wsum = vec![0i32; block_rows * groups];
        let mut wscale = vec![0f32; block_rows * groups];
        let mut tile = vec![0f32; mr * nzp * 16];
        let mut spare = None;
        let mut rb = rows.start;
        while rb < rows.end {
            let nr = (rows.end - rb).min(block_rows);
            let nr_pad = nr.div_ceil(mr) * mr;
            // The block's plane rows: the matrix's own, or (fields) turned back into planes
            // in the allocations of the previous block's.
            let (m, r0) = match src {
                Trits::Planes(m) => (m, rb),
                Trits::Fields(f) => {
                    let block = f.planes_reusing(rb..rb + nr, spare.take());
                    (&*spare.insert(block), 0)
                }
            };
            k.decode_rows(m, r0, nr, &mut decoded[..nr * pc]);
            decoded[nr * pc..nr_pad * pc].fill(0);
            for i in 0..nr_pad {
                for g in 0..groups {
                    let (s, ws) = if i < nr {
                        let (p, mi) = m.row_planes(r0 + i);
                        let words = gw.range(g);
                        // SAFETY: both levels that run this GEMM have POPCNT.
                        let sum = unsafe { trit_sum(&p[words.clone()], &mi[words]) };
                        (scales[(rb + i) * groups + g], sum)
                    } else {
                        (0.0, 0)
                    };
                    wscale[i * groups + g] = s;
                    wsum[i * groups + g] = ws;
                }
            }
            for p in (0..panels).step_by(nzp) {
                let nz = (panels - p).min(nzp);
                let panel = &packed[p * steps * 64..(p + nz) * steps * 64];
                let ts = &tok_scales[16 * p..16 * (p + nz)];
                for ib in (0..nr_pad).step_by(mr) {
                    let w = &decoded[ib * pc..(ib + mr) * pc];
                    let sums = &wsum[ib * groups..(ib + mr) * groups];
                    let sc = &wscale[ib * groups..(ib + mr) * groups];
                    let tile_in = Tile {
                        w,
                        panel,
                        steps,
                        gw,
                        wsum: sums,
                        wscale: sc,
                        ts,
                    };
                    // SAFETY: `w` holds MR rows of `pc` bytes, `panel` nz ≤ PANELS panels of
                    // `steps` 64-byte steps, `ts` 16·nz scales, `sums`/`sc` MR × groups values
                    // and `tile` MR × PANELS × 16 floats.
                    unsafe { k.tile(nz, tile_in, &mut tile) };
                    let width = 16 * nz;
                    let valid_tokens = (n - 16 * p).min(width);
                    for i in 0..mr.min(nr - ib) {
                        let r = rb + ib + i - rows.start;
                        out[r * n + 16 * p..r * n + 16 * p + valid_tokens]
                            .copy_from_slice(&tile[i * width..i * width + valid_tokens]);
                    }
                }
            }
            rb += nr;
        }
    });
}
