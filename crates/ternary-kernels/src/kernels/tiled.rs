//! Tiled GEMM with shared memory, generic over the activation and accumulator types.
//!
//! A cube computes a `bm × bn` tile of outputs (rows × tokens). It walks the row's plane words
//! `bk` at a time: the cube stages `bm × bk` words of each plane and `bn × 32·bk` activations
//! in shared memory (rows padded by one element against bank conflicts), then each unit
//! accumulates a `tm × tn` register block with rows `uy + i·(bm/tm)` and tokens
//! `ux + j·(bn/tn)`.
//!
//! Every unit walks the words of its rows in order and accumulates each scale group in the
//! accumulator type `A` before folding it into an `f32` sum:
//! `sum = 0; for g { sum += s[r, g] · (acc_g as f32) }; y = sum · s_j` (`s_j` only with
//! `token_scaled`). With `A = i32` this is exactly the order of `ternary_core::reference::gemm_i8`.

use cubecl::prelude::*;

/// The tiled product; see the [module docs](self).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_tiled<E: Numeric, A: Numeric>(
    plus: &Array<u32>,
    minus: &Array<u32>,
    scales: &Array<f32>,
    x: &Array<E>,
    token_scales: &Array<f32>,
    y: &mut Array<f32>,
    rows: u32,
    wpr: u32,
    groups: u32,
    wpg: u32,
    n: u32,
    #[comptime] bm: u32,
    #[comptime] bn: u32,
    #[comptime] bk: u32,
    #[comptime] tm: u32,
    #[comptime] tn: u32,
    #[comptime] token_scaled: bool,
) {
    let ux_count = bn / tn;
    let uy_count = bm / tm;
    let units = ux_count * uy_count;
    let ux = UNIT_POS_X;
    let uy = UNIT_POS_Y;
    let unit = uy * ux_count + ux;
    let row0 = CUBE_POS_X * bm;
    let tok0 = CUBE_POS_Y * bn;
    let x_stride = wpr * 32;
    let w_stride = bk + 1;
    let xs_stride = 32 * bk + 1;

    let mut wps = SharedMemory::<u32>::new((bm * w_stride) as usize);
    let mut wms = SharedMemory::<u32>::new((bm * w_stride) as usize);
    let mut xs = SharedMemory::<A>::new((bn * xs_stride) as usize);

    let mut acc = Array::<A>::new((tm * tn) as usize);
    let mut sum = Array::<f32>::new((tm * tn) as usize);
    #[unroll]
    for i in 0..tm * tn {
        acc[i as usize] = A::from_int(0);
        sum[i as usize] = 0.0;
    }
    let mut pw = Array::<u32>::new(tm as usize);
    let mut mw = Array::<u32>::new(tm as usize);
    let mut xv = Array::<A>::new(tn as usize);

    let steps = (wpr + bk - 1) / bk;
    for step in 0..steps {
        let k0 = step * bk;
        // Stage the weight words.
        #[unroll]
        for i in 0..(bm * bk + units - 1) / units {
            let idx = unit + i * units;
            if idx < bm * bk {
                let r = idx / bk;
                let kk = idx % bk;
                let gr = row0 + r;
                let gk = k0 + kk;
                let mut p = 0u32;
                let mut m = 0u32;
                if gr < rows && gk < wpr {
                    p = plus[(gr * wpr + gk) as usize];
                    m = minus[(gr * wpr + gk) as usize];
                }
                wps[(r * w_stride + kk) as usize] = p;
                wms[(r * w_stride + kk) as usize] = m;
            }
        }
        // Stage the activations.
        #[unroll]
        for i in 0..(bn * 32 * bk + units - 1) / units {
            let idx = unit + i * units;
            if idx < bn * 32 * bk {
                let t = idx / (32 * bk);
                let c = idx % (32 * bk);
                let gt = tok0 + t;
                let gc = k0 * 32 + c;
                let mut v = A::from_int(0);
                if gt < n && gc < x_stride {
                    v = A::cast_from(x[(gt * x_stride + gc) as usize]);
                }
                xs[(t * xs_stride + c) as usize] = v;
            }
        }
        sync_cube();

        #[unroll]
        for kk in 0..bk {
            let gk = k0 + kk;
            if gk < wpr {
                #[unroll]
                for i in 0..tm {
                    pw[i as usize] = wps[((uy + i * uy_count) * w_stride + kk) as usize];
                    mw[i as usize] = wms[((uy + i * uy_count) * w_stride + kk) as usize];
                }
                for b in 0..32u32 {
                    #[unroll]
                    for j in 0..tn {
                        xv[j as usize] =
                            xs[((ux + j * ux_count) * xs_stride + kk * 32 + b) as usize];
                    }
                    #[unroll]
                    for i in 0..tm {
                        let t = A::cast_from((pw[i as usize] >> b) & 1)
                            - A::cast_from((mw[i as usize] >> b) & 1);
                        #[unroll]
                        for j in 0..tn {
                            acc[(i * tn + j) as usize] += t * xv[j as usize];
                        }
                    }
                }
                // End of a scale group (or of the row): fold the group into the f32 sum.
                if (gk + 1) % wpg == 0 || gk + 1 == wpr {
                    let g = gk / wpg;
                    #[unroll]
                    for i in 0..tm {
                        let gr = row0 + uy + i * uy_count;
                        let mut s = 0.0f32;
                        // Padding words past the last group hold no weights.
                        if gr < rows && g < groups {
                            s = scales[(gr * groups + g) as usize];
                        }
                        #[unroll]
                        for j in 0..tn {
                            let a = (i * tn + j) as usize;
                            sum[a] += s * f32::cast_from(acc[a]);
                            acc[a] = A::from_int(0);
                        }
                    }
                }
            }
        }
        sync_cube();
    }

    #[unroll]
    for i in 0..tm {
        let gr = row0 + uy + i * uy_count;
        #[unroll]
        for j in 0..tn {
            let gt = tok0 + ux + j * ux_count;
            if gr < rows && gt < n {
                let mut v = sum[(i * tn + j) as usize];
                if token_scaled {
                    v *= token_scales[gt as usize];
                }
                y[(gt * rows + gr) as usize] = v;
            }
        }
    }
}
