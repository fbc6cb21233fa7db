//! Row-parallel GEMV for a few tokens, with optional block skipping.
//!
//! A cube holds `rows_per_cube` rows (`UNIT_POS_Y`) of `lanes` units each (`UNIT_POS_X`).
//! The units of a row walk its plane words in order; unit `l` handles bits
//! `l, l + lanes, …` of every word, so the activations of one word are read by consecutive
//! units (coalesced) and the weight words are read uniformly. Per weight it adds
//! `(t · s[r, g(c)]) · x[j, c]` for each of the `tokens` tokens of the cube, then the row's
//! partial sums are reduced across the lanes — with `plane_sum` when the lanes form exactly
//! one plane, else with a shared-memory tree.
//!
//! Words are visited through a chunk bitmap (one bit per plane word): with `skip` the bitmap
//! buffer says which words hold a non-zero weight and all-zero words are never loaded;
//! without it every word's bit is taken as set.

use cubecl::prelude::*;

/// `y[j, r] = Σ_c s[r, g(c)] · t[r, c] · x[j, c]` for `rows_per_cube` rows and `tokens` tokens
/// per cube; see the [module docs](self).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemv_rows<F: Float>(
    plus: &Array<u32>,
    minus: &Array<u32>,
    scales: &Array<f32>,
    bitmap: &Array<u32>,
    x: &Array<F>,
    y: &mut Array<f32>,
    rows: u32,
    wpr: u32,
    groups: u32,
    wpg: u32,
    n: u32,
    bitmap_wpr: u32,
    #[comptime] lanes: u32,
    #[comptime] rows_per_cube: u32,
    #[comptime] tokens: u32,
    #[comptime] plane_reduce: bool,
    #[comptime] skip: bool,
) {
    let lane = UNIT_POS_X;
    let row = CUBE_POS_X * rows_per_cube + UNIT_POS_Y;
    let tok0 = CUBE_POS_Y * tokens;
    let x_stride = wpr * 32;

    let mut acc = Array::<f32>::new(tokens as usize);
    #[unroll]
    for j in 0..tokens {
        acc[j as usize] = 0.0;
    }
    // Clamped token offsets: tokens past `n` re-read the last token and are never written.
    let mut x_base = Array::<u32>::new(tokens as usize);
    #[unroll]
    for j in 0..tokens {
        x_base[j as usize] = min(tok0 + j, n - 1) * x_stride;
    }

    // Rows past the end do no work but still take part in the reduction.
    let mut bitmap_words = 0u32;
    if row < rows {
        bitmap_words = (wpr + 31) / 32;
    }
    for bw in 0..bitmap_words {
        let mut bits = 0xFFFF_FFFFu32;
        if skip {
            bits = bitmap[(row * bitmap_wpr + bw) as usize];
        } else {
            let count = min(wpr - bw * 32, 32u32);
            if count < 32 {
                bits = (1u32 << count) - 1;
            }
        }
        while bits != 0 {
            let w = bw * 32 + bits.trailing_zeros();
            bits &= bits - 1;
            let idx = (row * wpr + w) as usize;
            let p = plus[idx];
            let m = minus[idx];
            // Words past the last group are padding (all bits zero); clamp their group.
            let s = scales[(row * groups + min(w / wpg, groups - 1)) as usize];
            #[unroll]
            for k in 0..32 / lanes {
                let b = lane + k * lanes;
                let t = f32::cast_from((p >> b) & 1) - f32::cast_from((m >> b) & 1);
                let ts = t * s;
                let c = w * 32 + b;
                #[unroll]
                for j in 0..tokens {
                    acc[j as usize] += ts * f32::cast_from(x[(x_base[j as usize] + c) as usize]);
                }
            }
        }
    }

    if plane_reduce {
        #[unroll]
        for j in 0..tokens {
            let total = plane_sum(acc[j as usize]);
            if lane == 0 && row < rows && tok0 + j < n {
                y[((tok0 + j) * rows + row) as usize] = total;
            }
        }
    } else {
        let mut smem = SharedMemory::<f32>::new((lanes * rows_per_cube) as usize);
        let base = UNIT_POS_Y * lanes;
        #[unroll]
        for j in 0..tokens {
            smem[(base + lane) as usize] = acc[j as usize];
            sync_cube();
            // A runtime value (the comptime `lanes` cannot be mutated in a loop).
            let mut stride = CUBE_DIM_X / 2;
            while stride > 0 {
                if lane < stride {
                    let v = smem[(base + lane + stride) as usize];
                    smem[(base + lane) as usize] += v;
                }
                sync_cube();
                stride /= 2;
            }
            if lane == 0 && row < rows && tok0 + j < n {
                y[((tok0 + j) * rows + row) as usize] = smem[base as usize];
            }
            sync_cube();
        }
    }
}
