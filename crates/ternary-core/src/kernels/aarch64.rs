//! aarch64 NEON kernels: straightforward 128-bit versions of the x86 designs.
//!
//! - `f32`: four plane bits at a time become lane masks (`vtstq_u32` against `1, 2, 4, 8`);
//!   `acc⁺ += x & mask⁺`, `acc⁻ += x & mask⁻` via bitwise select.
//! - int8: sixteen bits become byte masks (`vtstq_u8`); `t = mask⁻ − mask⁺ ∈ {−1, 0, 1}`;
//!   `q · t` (no overflow: `|q| ≤ 127`) is pairwise-added into `i16` lanes (at most 64 words,
//!   `64 · 4 · 127 < 2¹⁵`) and then into `i32`.
//! - popcount: `vcntq_u8` and pairwise widening adds.
//!
//! Tested against the references under `qemu-aarch64` (`scripts/neon.sh`, run by `.ci/run`);
//! not benchmarked: no aarch64 hardware has run them yet.

// Arithmetic intrinsics are safe to call inside `#[target_feature(enable = "neon")]` functions
// on current toolchains; the blocks below also cover loads, so keep them even where redundant.
#![allow(unused_unsafe)]

use std::arch::aarch64::*;

use super::{GroupWords, Rows, popcount};
use crate::activations::QuantizedActivations;
use crate::matrix::TernaryMatrix;

/// Words summed in `i16` lanes before widening: each word adds at most `4 · 127` per lane.
const I16_WORDS: usize = 64;

pub(super) fn has_neon() -> bool {
    std::arch::is_aarch64_feature_detected!("neon")
}

/// Proof that [`has_neon`] holds.
#[derive(Debug, Clone, Copy)]
pub(super) struct Neon(());

impl Neon {
    /// The token, if this CPU has NEON.
    pub(super) fn new() -> Option<Self> {
        has_neon().then_some(Self(()))
    }

    pub(super) fn gemm_f32(self, m: &TernaryMatrix, x: &[f32], n: usize, y: Rows<'_>) {
        y.run(m.rows(), m.cols(), n, 1, |rows, out| {
            for (r, o) in rows.zip(out.chunks_exact_mut(n)) {
                // SAFETY: the token proves NEON; `r` is a row of `m`, `x` holds `n × cols`
                // values and `o` holds `n` outputs.
                unsafe { f32_row(m, x, r, o) }
            }
        });
    }

    pub(super) fn gemm_i8(self, m: &TernaryMatrix, a: &QuantizedActivations, y: Rows<'_>) {
        let n = a.n();
        y.run(m.rows(), m.cols(), n, 1, |rows, out| {
            for (r, o) in rows.zip(out.chunks_exact_mut(n)) {
                // SAFETY: the token proves NEON; `r` is a row of `m`, `a.cols() == m.cols()`
                // was checked and `o` holds `n` outputs.
                unsafe { i8_row(m, a, r, o) }
            }
        });
    }

    pub(super) fn ternary_dot(self, ap: &[u32], am: &[u32], bp: &[u32], bm: &[u32]) -> i64 {
        // SAFETY: the token proves NEON.
        unsafe { ternary_dot(ap, am, bp, bm) }
    }

    pub(super) fn xor_popcount(self, a: &[u32], b: &[u32]) -> u64 {
        // SAFETY: the token proves NEON.
        unsafe { xor_popcount(a, b) }
    }
}

/// Row `r`, every token: `out[j] = Σ_g s[r, g] · Σ_{c ∈ g} t[r, c] · x[j, c]`.
///
/// # Safety
/// NEON must be available; `r < rows`, `x.len() = out.len() · cols` (one output per token).
#[target_feature(enable = "neon")]
unsafe fn f32_row(m: &TernaryMatrix, x: &[f32], r: usize, out: &mut [f32]) {
    let cols = m.cols();
    let layout = m.scales().layout();
    let groups = layout.groups_per_row(cols);
    let gcols = layout.group_len(cols);
    let scales = &m.scales().values()[r * groups..(r + 1) * groups];
    let (plus, minus) = m.row_planes(r);
    let lane_bits: [u32; 4] = [1, 2, 4, 8];
    // SAFETY: `lane_bits` holds four u32.
    let bits = unsafe { vld1q_u32(lane_bits.as_ptr()) };
    // SAFETY: NEON is available (caller); no memory is accessed.
    let zero = unsafe { vdupq_n_f32(0.0) };
    for (j, o) in out.iter_mut().enumerate() {
        let xj = &x[j * cols..(j + 1) * cols];
        let mut total = zero;
        for (g, &s) in scales.iter().enumerate() {
            let c0 = g * gcols;
            let c1 = (c0 + gcols).min(cols);
            let mut accp = zero;
            let mut accm = zero;
            let mut c = c0;
            while c < c1 {
                let (w, shift) = (c / 32, c % 32);
                let pn = (plus[w] >> shift) & 0xf;
                let mn = (minus[w] >> shift) & 0xf;
                let mut tail = [0f32; 4];
                let len = (c1 - c).min(4);
                tail[..len].copy_from_slice(&xj[c..c + len]);
                // SAFETY: `tail` holds four f32; the rest is register arithmetic.
                unsafe {
                    let xv = vld1q_f32(tail.as_ptr());
                    let pm = vtstq_u32(vdupq_n_u32(pn), bits);
                    let mm = vtstq_u32(vdupq_n_u32(mn), bits);
                    accp = vaddq_f32(accp, vbslq_f32(pm, xv, zero));
                    accm = vaddq_f32(accm, vbslq_f32(mm, xv, zero));
                }
                c += 4;
            }
            // SAFETY: register arithmetic only.
            total = unsafe { vfmaq_f32(total, vsubq_f32(accp, accm), vdupq_n_f32(s)) };
        }
        // SAFETY: register arithmetic only.
        *o = unsafe { vaddvq_f32(total) };
    }
}

/// Row `r`, every token, int8: exact `i32` group sums, then the reference's `f32` order.
///
/// # Safety
/// NEON must be available; `r < rows`, `a.cols() == m.cols()`, `out.len() = a.n()`.
#[target_feature(enable = "neon")]
unsafe fn i8_row(m: &TernaryMatrix, a: &QuantizedActivations, r: usize, out: &mut [f32]) {
    let gw = GroupWords::of(m);
    let scales = &m.scales().values()[r * gw.groups..(r + 1) * gw.groups];
    let (plus, minus) = m.row_planes(r);
    let byte_bits: [u8; 16] = [1, 2, 4, 8, 16, 32, 64, 128, 1, 2, 4, 8, 16, 32, 64, 128];
    // SAFETY: `byte_bits` holds sixteen bytes.
    let bits = unsafe { vld1q_u8(byte_bits.as_ptr()) };
    for (j, o) in out.iter_mut().enumerate() {
        // The padded row has 32 · words_per_row bytes.
        let q = a.row(j);
        let mut sum = 0f32;
        for (g, &s) in scales.iter().enumerate() {
            // SAFETY: register arithmetic only.
            let (mut acc32, mut acc16) = unsafe { (vdupq_n_s32(0), vdupq_n_s16(0)) };
            for (count, w) in gw.range(g).enumerate() {
                for half in 0..2 {
                    let pb = (plus[w] >> (16 * half)) as u16;
                    let mb = (minus[w] >> (16 * half)) as u16;
                    let xs = &q[32 * w + 16 * half..32 * w + 16 * half + 16];
                    // SAFETY: `xs` holds sixteen bytes; the rest is register arithmetic.
                    unsafe {
                        let pm = vtstq_u8(
                            vcombine_u8(vdup_n_u8(pb as u8), vdup_n_u8((pb >> 8) as u8)),
                            bits,
                        );
                        let mm = vtstq_u8(
                            vcombine_u8(vdup_n_u8(mb as u8), vdup_n_u8((mb >> 8) as u8)),
                            bits,
                        );
                        let t = vsubq_s8(vreinterpretq_s8_u8(mm), vreinterpretq_s8_u8(pm));
                        let xv = vld1q_s8(xs.as_ptr());
                        acc16 = vpadalq_s8(acc16, vmulq_s8(xv, t));
                    }
                }
                if count % I16_WORDS == I16_WORDS - 1 {
                    // SAFETY: register arithmetic only.
                    unsafe {
                        acc32 = vpadalq_s16(acc32, acc16);
                        acc16 = vdupq_n_s16(0);
                    }
                }
            }
            // SAFETY: register arithmetic only.
            let total = unsafe { vaddvq_s32(vpadalq_s16(acc32, acc16)) };
            sum += s * total as f32;
        }
        *o = sum * a.scales()[j];
    }
}

/// Per-`u64` popcounts of a 128-bit vector, added to `acc`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn add_popcounts(acc: uint64x2_t, v: uint32x4_t) -> uint64x2_t {
    // SAFETY: register arithmetic only.
    unsafe {
        vpadalq_u32(
            acc,
            vpaddlq_u16(vpaddlq_u8(vcntq_u8(vreinterpretq_u8_u32(v)))),
        )
    }
}

/// # Safety
/// NEON must be available; all slices have the same length.
#[target_feature(enable = "neon")]
unsafe fn ternary_dot(ap: &[u32], am: &[u32], bp: &[u32], bm: &[u32]) -> i64 {
    let chunks = ap.len() / 4;
    // SAFETY: register arithmetic only.
    let (mut same, mut diff) = unsafe { (vdupq_n_u64(0), vdupq_n_u64(0)) };
    for c in 0..chunks {
        let k = 4 * c;
        // SAFETY: words k..k + 4 ≤ len of each slice.
        unsafe {
            let a_p = vld1q_u32(ap[k..k + 4].as_ptr());
            let a_m = vld1q_u32(am[k..k + 4].as_ptr());
            let b_p = vld1q_u32(bp[k..k + 4].as_ptr());
            let b_m = vld1q_u32(bm[k..k + 4].as_ptr());
            same = add_popcounts(same, vorrq_u32(vandq_u32(a_p, b_p), vandq_u32(a_m, b_m)));
            diff = add_popcounts(diff, vorrq_u32(vandq_u32(a_p, b_m), vandq_u32(a_m, b_p)));
        }
    }
    let k = 4 * chunks;
    let tail = popcount::ternary_dot(&ap[k..], &am[k..], &bp[k..], &bm[k..]);
    // SAFETY: register arithmetic only.
    let (s, d) = unsafe { (vaddvq_u64(same), vaddvq_u64(diff)) };
    s as i64 - d as i64 + tail
}

/// `popc(a XOR b)` over all words.
///
/// # Safety
/// NEON must be available; `a.len() == b.len()`.
#[target_feature(enable = "neon")]
unsafe fn xor_popcount(a: &[u32], b: &[u32]) -> u64 {
    let chunks = a.len() / 4;
    // SAFETY: register arithmetic only.
    let mut acc = unsafe { vdupq_n_u64(0) };
    for c in 0..chunks {
        let k = 4 * c;
        // SAFETY: words k..k + 4 ≤ len of both slices.
        unsafe {
            let x = veorq_u32(
                vld1q_u32(a[k..k + 4].as_ptr()),
                vld1q_u32(b[k..k + 4].as_ptr()),
            );
            acc = add_popcounts(acc, x);
        }
    }
    let k = 4 * chunks;
    // SAFETY: register arithmetic only.
    unsafe { vaddvq_u64(acc) + popcount::xor_popcount(&a[k..], &b[k..]) }
}
