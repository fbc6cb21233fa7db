//! x86-64 skip kernels: AVX-512 F/BW/VL/VNNI/VPOPCNTDQ (every strategy) and AVX2 (the
//! per-token kernels: masked for the chunk formats, vector gap decoding for index lists).
//!
//! The kernels are reached through `ternary-core`'s zero-sized level tokens, [`Avx512`] and
//! [`Avx2`], that exist only when their [`Level`](ternary_core::kernels::Level) is available,
//! so the safe entry points below may call the `#[target_feature]` code. The caller has
//! checked the shapes and that the level is available.

mod avx2;
mod avx512;

use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};

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

/// Index lists, `f32`, one token at a time: vector gap decoding and gathers (on AMD, the
/// AVX2 kernel: see [`gathers_lose`]).
pub(super) fn lists_f32(v: &ListView<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    if gathers_lose() {
        lists_f32_with(token_avx2(), v, x, n, y);
    } else {
        lists_f32_with(token(), v, x, n, y);
    }
}

/// Index lists, int8, one token at a time: vector gap decoding and gathers (on AMD, the
/// AVX2 kernel: see [`gathers_lose`]).
pub(super) fn lists_i8(v: &ListView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    if gathers_lose() {
        lists_i8_with(token_avx2(), v, a, y);
    } else {
        lists_i8_with(token(), v, a, y);
    }
}

/// Whether the AVX-512 level should run the AVX2 index-list kernels (16-byte `u16` gap
/// decoding, plain loads) instead of its own (`vpcompressd` decoding, 16-lane gathers): on AMD
/// CPUs. On an AMD EPYC Zen 5, 95%-pruned 4096 × 4096, one token, 2 threads, the AVX2 kernels
/// took 160 µs against 190 µs (`f32`; int8 165 against 193); on the Intel Xeon the gathers
/// were 3.7× faster than the AVX2 loads (`docs/sparsity.md`). Both give the same int8 results
/// bit for bit; `f32` sums differ only in their order.
fn gathers_lose() -> bool {
    static AMD: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AMD.get_or_init(|| {
        // CPUID leaf 0: the vendor string.
        let r = std::arch::x86_64::__cpuid(0);
        [r.ebx, r.edx, r.ecx]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .eq(*b"AuthenticAMD")
    })
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
/// `pos`, `run` its columns. A run that reaches the end of the list (every run with per-row
/// scales) is found with one comparison; otherwise its end is found by galloping then binary
/// search, so short runs cost a probe or two and the sums of one run never wait on a scan.
fn group_runs(pos: &[u32], glen: usize, cols: usize, mut f: impl FnMut(usize, &[u32])) {
    let mut i = 0;
    while i < pos.len() {
        let g = pos[i] as usize / glen;
        let end = ((g + 1) * glen).min(cols);
        let rest = &pos[i..];
        let j = if rest.last().is_some_and(|&c| (c as usize) < end) {
            pos.len()
        } else {
            i + first_at_or_past(rest, end)
        };
        f(g, &pos[i..j]);
        i = j;
    }
}

/// The first index of the sorted `s` whose column is `≥ end`, given `s[0] < end ≤ s.last()`:
/// probes at 1, 2, 4, … then a binary search between the last two probes.
fn first_at_or_past(s: &[u32], end: usize) -> usize {
    let mut hi = 1;
    while hi < s.len() && (s[hi] as usize) < end {
        hi *= 2;
    }
    // s[hi / 2] < end, and s[hi] ≥ end (or hi ≥ len).
    let lo = hi / 2 + 1;
    let hi = hi.min(s.len());
    lo + s[lo..hi].partition_point(|&c| (c as usize) < end)
}

/// How many rows ahead the list kernels prefetch the gap codes.
const PREFETCH_ROWS: usize = 4;

/// Prefetches row `r`'s gap codes (both signs, contiguous) into the cache, if `r < end`. With
/// cold caches (AMD EPYC Zen 5, 2 threads, 95%-pruned 4096 × 4096) the product took 140–180 µs
/// with it against 150–226 µs without: a gain inside this host's noise, at a few prefetches
/// per row.
#[inline]
fn prefetch_codes(v: &ListView<'_>, r: usize, end: usize) {
    if r >= end {
        return;
    }
    let (cp, cm) = v.codes(r);
    let (start, len) = (cp.as_ptr(), cp.len() + cm.len());
    for off in (0..len).step_by(64) {
        // SAFETY: SSE is part of x86-64; a prefetch reads nothing architecturally and never
        // faults, and `start + off` lies inside the codes anyway.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(start.wrapping_add(off).cast()) };
    }
}

/// Every row `r` of `v`, split over the threads by rows: its two sign lists decoded once
/// (`plus`, `minus`: sorted columns; the codes prefetched [`PREFETCH_ROWS`] ahead), then
/// `f(scratch, r, plus, minus, out)` with the row's `n` outputs and a per-task `init()`.
fn for_decoded_rows<K: ListKernels, S>(
    k: K,
    v: &ListView<'_>,
    n: usize,
    y: &mut [f32],
    init: impl Fn() -> S + Sync,
    f: impl Fn(&mut S, usize, &[u32], &[u32], &mut [f32]) + Sync,
) {
    par_rows(v.rows, walk_work(v.nnz, v.rows, n), n, y, |rs, out| {
        let (mut pp, mut pm) = (vec![0u32; v.cols + K::PAD], vec![0u32; v.cols + K::PAD]);
        let mut scratch = init();
        let last = rs.end;
        for (r, o) in rs.zip(out.chunks_exact_mut(n)) {
            prefetch_codes(v, r + PREFETCH_ROWS, last);
            let (cp, cm) = v.codes(r);
            // SAFETY: a row lists at most `cols` columns of each sign, and both buffers hold
            // cols + PAD.
            let (kp, km) = unsafe { (k.decode(cp, &mut pp), k.decode(cm, &mut pm)) };
            f(&mut scratch, r, &pp[..kp], &pm[..km], o);
        }
    });
}

/// The per-token index-list product at one level: per row both sign lists decoded once, then
/// per token the group sums and `Σ_g s[r, g] · acc_g` (`f32`).
fn lists_f32_with<K: ListKernels>(k: K, v: &ListView<'_>, x: &[f32], n: usize, y: &mut [f32]) {
    let cols = v.cols;
    let glen = group_len(v.scales, cols);
    let groups = v.scales.layout().groups_per_row(cols);
    let scales = v.scales.values();
    let init = || vec![0f32; groups];
    for_decoded_rows(k, v, n, y, init, |gs, r, plus, minus, o| {
        let s = &scales[r * groups..(r + 1) * groups];
        for (j, oj) in o.iter_mut().enumerate() {
            let xj = &x[j * cols..(j + 1) * cols];
            if groups == 1 {
                // Per-row scales: each list is one run.
                // SAFETY: decoded columns are < cols (an `IndexLists` invariant).
                let acc = unsafe { k.run_f32(plus, xj) - k.run_f32(minus, xj) };
                *oj = s[0] * acc;
                continue;
            }
            gs.fill(0.0);
            for (pos, sign) in [(plus, 1f32), (minus, -1f32)] {
                group_runs(pos, glen, cols, |g, run| {
                    // SAFETY: decoded columns are < cols (an `IndexLists` invariant).
                    gs[g] += sign * unsafe { k.run_f32(run, xj) };
                });
            }
            *oj = s.iter().zip(gs.iter()).map(|(&sg, &a)| sg * a).sum();
        }
    });
}

/// [`lists_f32_with`] on int8 tokens (widened to `i32` once, so the sums read whole lanes):
/// exact group sums, then the reference's order, `sum += s · (acc as f32)`, then `· s_j`.
fn lists_i8_with<K: ListKernels>(k: K, v: &ListView<'_>, a: &QuantizedActivations, y: &mut [f32]) {
    let (cols, n) = (v.cols, a.n());
    let glen = group_len(v.scales, cols);
    let groups = v.scales.layout().groups_per_row(cols);
    let scales = v.scales.values();
    let xi: Vec<i32> = (0..n)
        .flat_map(|j| a.row(j)[..cols].iter().map(|&q| i32::from(q)))
        .collect();
    let init = || vec![0i32; groups];
    for_decoded_rows(k, v, n, y, init, |gs, r, plus, minus, o| {
        let s = &scales[r * groups..(r + 1) * groups];
        for (j, oj) in o.iter_mut().enumerate() {
            let xj = &xi[j * cols..(j + 1) * cols];
            if groups == 1 {
                // Per-row scales: each list is one run. The reference's `0 + s · acc` (the
                // `0 +` turns a `−0` into `+0`).
                // SAFETY: decoded columns are < cols (an `IndexLists` invariant).
                let acc = unsafe { k.run_i32(plus, xj).wrapping_sub(k.run_i32(minus, xj)) };
                *oj = (0f32 + s[0] * acc as f32) * a.scales()[j];
                continue;
            }
            gs.fill(0);
            group_runs(plus, glen, cols, |g, run| {
                // SAFETY: decoded columns are < cols (an `IndexLists` invariant).
                gs[g] = gs[g].wrapping_add(unsafe { k.run_i32(run, xj) });
            });
            group_runs(minus, glen, cols, |g, run| {
                // SAFETY: as above.
                gs[g] = gs[g].wrapping_sub(unsafe { k.run_i32(run, xj) });
            });
            let mut sum = 0f32;
            for (&sg, &acc) in s.iter().zip(gs.iter()) {
                sum += sg * acc as f32;
            }
            *oj = sum * a.scales()[j];
        }
    });
}

#[cfg(test)]
mod tests {
    use rand::RngExt;

    use super::*;
    use crate::lists::{ESCAPE, decode};

    fn check<K: ListKernels>(k: K, code: &[u8], what: &str) {
        let want: Vec<u32> = decode(code).map(|c| c as u32).collect();
        let mut out = vec![u32::MAX; want.len() + K::PAD];
        // SAFETY: `out` holds the code's columns plus PAD.
        let got = unsafe { k.decode(code, &mut out) };
        assert_eq!(&out[..got], &want[..], "{what}: code {code:?}");
    }

    /// Every code length from 0 to 80 bytes (whole 16-byte steps, tails, codes shorter than a
    /// step), with escapes nowhere, rarely, often, in the tail only and everywhere, against the
    /// scalar decoding, at each x86 level this CPU has.
    #[test]
    fn gap_decoders_match_the_scalar_decoding() {
        let (mut rng, seed) = ternary_testkit::seeded();
        for len in 0..=80usize {
            for escapes in [0.0, 0.02, 0.3, 1.0] {
                for tail_only in [false, true] {
                    let code: Vec<u8> = (0..len)
                        .map(|i| {
                            let esc_here = !tail_only || i >= len / 16 * 16;
                            if esc_here && rng.random_bool(escapes) {
                                ESCAPE
                            } else {
                                rng.random_range(0..ESCAPE)
                            }
                        })
                        .collect();
                    let what = format!("seed {seed}, len {len}, escapes {escapes}");
                    if let Some(t) = Avx2::new() {
                        check(t, &code, &format!("avx2, {what}"));
                    }
                    if let Some(t) = Avx512::new() {
                        check(t, &code, &format!("avx512, {what}"));
                    }
                }
            }
        }
    }
}

/// Both list-kernel pairs at the AVX-512 level (the dispatcher runs only one of them on a given
/// CPU, see [`gathers_lose`]), against the references: int8 exact, `f32` within
/// `1e-5 · Σ_c |s · t · x|` of the `f64` reference.
#[cfg(test)]
mod list_kernel_tests {
    use ternary_core::{ScaleLayout, reference};
    use ternary_testkit::{random_f32, random_matrix, random_q, seeded};

    use super::*;
    use crate::IndexLists;
    use ternary_core::TernaryMatrix;

    fn check<K: ListKernels>(k: K, m: &TernaryMatrix, n: usize, x: &[f32], what: &str) {
        let lists = IndexLists::from_matrix(m).unwrap();
        let v = lists.view();
        let (rows, cols) = (m.rows(), m.cols());
        let want = reference::gemm_f32(m, x, n).unwrap();
        let mut y = vec![f32::NAN; n * rows];
        lists_f32_with(k, &v, x, n, &mut y);
        let trits = m.to_trits();
        let glen = group_len(m.scales(), cols);
        let groups = m.scales().layout().groups_per_row(cols);
        let s = m.scales().values();
        for j in 0..n {
            for r in 0..rows {
                let mag: f64 = (0..cols)
                    .map(|c| {
                        let w = s[r * groups + c / glen] * f32::from(trits[r * cols + c]);
                        f64::from((w * x[j * cols + c]).abs())
                    })
                    .sum();
                let (got, exp) = (f64::from(y[j * rows + r]), want[j * rows + r]);
                assert!(
                    (got - exp).abs() <= 1e-5 * mag + 1e-30,
                    "f32 {what}: {got} vs {exp}"
                );
            }
        }
        let a = random_q(&mut seeded().0, n, cols);
        let mut y = vec![f32::NAN; n * rows];
        lists_i8_with(k, &v, &a, &mut y);
        let want = reference::gemm_i8(m, &a).unwrap();
        assert!(
            y.iter().zip(&want).all(|(g, w)| g.to_bits() == w.to_bits()),
            "i8 {what}"
        );
    }

    #[test]
    fn both_list_kernels_match_the_references() {
        let (mut rng, seed) = seeded();
        for cols in [1, 63, 64, 65, 576, 4100] {
            for layout in [
                ScaleLayout::PerRow,
                ScaleLayout::PerGroup { group_size: 64 },
            ] {
                let m = random_matrix(&mut rng, 5, cols, layout);
                for n in [1, 3] {
                    let x = random_f32(&mut rng, n * cols, -1.0, 1.0);
                    let what = format!("seed {seed}, cols {cols}, {layout:?}, n {n}");
                    if let Some(t) = Avx2::new() {
                        check(t, &m, n, &x, &format!("avx2, {what}"));
                    }
                    if let Some(t) = Avx512::new() {
                        check(t, &m, n, &x, &format!("avx512, {what}"));
                    }
                }
            }
        }
    }
}
