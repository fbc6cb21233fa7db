//! x86-64 skip kernels: AVX-512 F/BW/VL/VNNI/VPOPCNTDQ (every strategy) and AVX2 (the
//! per-token kernels: masked for the chunk formats, vector gap decoding for index lists).
//!
//! The kernels are reached through `ternary-core`'s zero-sized level tokens, [`Avx512`] and
//! [`Avx2`], that exist only when their [`Level`](ternary_core::kernels::Level) is available,
//! so the safe entry points below may call the `#[target_feature]` code. The caller has
//! checked the shapes and that the level is available.

mod avx2;
mod avx512;

use ternary_core::QuantizedActivations;
use ternary_core::kernels::x86_primitives::{Avx2, Avx512};

use super::{ChunkView, ListView, WalkRows, group_len, par_rows, walk_work};

/// The level token from `ternary-core` (`Level::Avx512` available); the dispatcher checked
/// the level before calling in, so its absence is a bug, not an input error.
fn token() -> Avx512 {
    Avx512::new()
        .expect("AVX-512 kernels called on a CPU without AVX-512 (the dispatcher checks the level)")
}

/// The AVX2 level token; as [`token`].
fn token_avx2() -> Avx2 {
    Avx2::new()
        .expect("AVX2 kernels called on a CPU without AVX2 (the dispatcher checks the level)")
}

/// AVX2, `f32`, up to two tokens at a time, blended adds over non-empty chunks.
pub(super) fn masked_f32_avx2(v: &ChunkView<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    avx2::masked_f32(token_avx2(), v, x, n, y);
}

/// AVX2, int8, up to two tokens at a time, `maddubs` over non-empty chunks.
pub(super) fn masked_i8_avx2(v: &ChunkView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    avx2::masked_i8(token_avx2(), v, a, y);
}

/// AVX2, index lists, `f32`, one token at a time: vector gap decoding, then loads.
pub(super) fn lists_f32_avx2(v: &ListView<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    lists_f32_with(token_avx2(), v, x, n, y);
}

/// AVX2, index lists, int8, one token at a time: vector gap decoding, then loads.
pub(super) fn lists_i8_avx2(v: &ListView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    lists_i8_with(token_avx2(), v, a, y);
}

/// `f32`, one token at a time, masked adds over non-empty chunks.
pub(super) fn masked_f32(v: &ChunkView<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    avx512::masked_f32(token(), v, x, n, y);
}

/// Int8, one token at a time, masked `vpdpbusd` over non-empty chunks.
pub(super) fn masked_i8(v: &ChunkView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    avx512::masked_i8(token(), v, a, y);
}

/// Int8, `vpdpbusd` over decoded non-empty chunks and 16-token panels.
pub(super) fn chunk_panels_i8(v: &ChunkView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    avx512::chunk_panels_i8(token(), v, a, y);
}

/// `f32`, transposed panels, one vector add per non-zero weight.
pub(super) fn walk_f32<W: WalkRows>(m: &W, x: &[f32], n: usize, y: &mut [f32]) {
    avx512::walk_f32(token(), m, x, n, y);
}

/// Int8 widened to `i32`, transposed panels, one vector add per non-zero weight.
pub(super) fn walk_i8<W: WalkRows>(m: &W, a: &QuantizedActivations, y: &mut [f32]) {
    avx512::walk_i8(token(), m, a, y);
}

/// Index lists, `f32`, one token at a time: vector gap decoding and gathers.
pub(super) fn lists_f32(v: &ListView<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    lists_f32_with(token(), v, x, n, y);
}

/// Index lists, int8, one token at a time: vector gap decoding and gathers.
pub(super) fn lists_i8(v: &ListView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    lists_i8_with(token(), v, a, y);
}

/// One level's index-list kernels: the gap decoder and the per-group run sums.
trait ListKernels: Copy + Send + Sync {
    /// Columns the decoder may write past the last one it returns.
    const PAD: usize;

    /// Decodes a gap code (see `crate::lists`) into `out`; returns the number of columns.
    ///
    /// # Safety
    /// `out.len() ≥ k + PAD` for the `k` columns the code holds.
    unsafe fn decode(self, code: &[u8], out: &mut [u32]) -> usize;

    /// `Σ_{c ∈ run} x[c]` over one group's run of columns (`f32`).
    ///
    /// # Safety
    /// Every column is `< x.len()`.
    unsafe fn run_f32(self, run: &[u32], x: &[f32]) -> f32;

    /// [`run_f32`](Self::run_f32) in exact (wrapping) `i32`.
    ///
    /// # Safety
    /// As [`run_f32`](Self::run_f32).
    unsafe fn run_i32(self, run: &[u32], x: &[i32]) -> i32;
}

/// Calls `f(g, run)` for each group `g` of `glen` columns holding columns of the sorted list
/// `pos`, `run` its columns; each run's end is found by binary search, so the sums of one run
/// do not wait on the next's bounds.
fn group_runs(pos: &[u32], glen: usize, cols: usize, mut f: impl FnMut(usize, &[u32])) {
    let mut i = 0;
    while i < pos.len() {
        let g = pos[i] as usize / glen;
        let end = ((g + 1) * glen).min(cols);
        let j = i + pos[i..].partition_point(|&c| (c as usize) < end);
        f(g, &pos[i..j]);
        i = j;
    }
}

/// The per-token index-list product at one level: per row both sign lists decoded once, then
/// per token the group sums and `Σ_g s[r, g] · acc_g` (`f32`).
fn lists_f32_with<K: ListKernels>(k: K, v: &ListView<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    let (rows, cols) = (v.rows, v.cols);
    let glen = group_len(v.scales, cols);
    let groups = v.scales.layout().groups_per_row(cols);
    let scales = v.scales.values();
    par_rows(rows, walk_work(v.nnz, rows, n), n, y, |rs, out| {
        let (mut pp, mut pm) = (vec![0u32; cols + K::PAD], vec![0u32; cols + K::PAD]);
        let mut gs = vec![0f32; groups];
        for (r, o) in rs.zip(out.chunks_exact_mut(n)) {
            let (cp, cm) = v.codes(r);
            // SAFETY: a row lists at most `cols` columns of each sign, and both buffers hold
            // cols + PAD.
            let (kp, km) = unsafe { (k.decode(cp, &mut pp), k.decode(cm, &mut pm)) };
            let s = &scales[r * groups..(r + 1) * groups];
            for (j, oj) in o.iter_mut().enumerate() {
                gs.fill(0.0);
                let xj = &x[j * cols..(j + 1) * cols];
                for (pos, sign) in [(&pp[..kp], 1f32), (&pm[..km], -1f32)] {
                    group_runs(pos, glen, cols, |g, run| {
                        // SAFETY: decoded columns are < cols (an `IndexLists` invariant).
                        gs[g] += sign * unsafe { k.run_f32(run, xj) };
                    });
                }
                *oj = s.iter().zip(&gs).map(|(&sg, &a)| sg * a).sum();
            }
        }
    });
}

/// [`lists_f32_with`] on int8 tokens (widened to `i32` once, so the sums read whole lanes):
/// exact group sums, then the reference's order, `sum += s · (acc as f32)`, then `· s_j`.
fn lists_i8_with<K: ListKernels>(k: K, v: &ListView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    let (rows, cols, n) = (v.rows, v.cols, a.n());
    let glen = group_len(v.scales, cols);
    let groups = v.scales.layout().groups_per_row(cols);
    let scales = v.scales.values();
    let xi: Vec<i32> = (0..n)
        .flat_map(|j| a.row(j)[..cols].iter().map(|&q| i32::from(q)))
        .collect();
    par_rows(rows, walk_work(v.nnz, rows, n), n, y, |rs, out| {
        let (mut pp, mut pm) = (vec![0u32; cols + K::PAD], vec![0u32; cols + K::PAD]);
        let mut gs = vec![0i32; groups];
        for (r, o) in rs.zip(out.chunks_exact_mut(n)) {
            let (cp, cm) = v.codes(r);
            // SAFETY: as in `lists_f32_with`.
            let (kp, km) = unsafe { (k.decode(cp, &mut pp), k.decode(cm, &mut pm)) };
            let s = &scales[r * groups..(r + 1) * groups];
            for (j, oj) in o.iter_mut().enumerate() {
                gs.fill(0);
                let xj = &xi[j * cols..(j + 1) * cols];
                group_runs(&pp[..kp], glen, cols, |g, run| {
                    // SAFETY: decoded columns are < cols (an `IndexLists` invariant).
                    gs[g] = gs[g].wrapping_add(unsafe { k.run_i32(run, xj) });
                });
                group_runs(&pm[..km], glen, cols, |g, run| {
                    // SAFETY: as above.
                    gs[g] = gs[g].wrapping_sub(unsafe { k.run_i32(run, xj) });
                });
                let mut sum = 0f32;
                for (&sg, &acc) in s.iter().zip(&gs) {
                    sum += sg * acc as f32;
                }
                *oj = sum * a.scales()[j];
            }
        }
    });
}
