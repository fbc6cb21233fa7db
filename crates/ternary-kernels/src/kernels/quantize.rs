//! Per-token int8 quantization on the device, matching `ternary_core::QuantizedActivations`.

use cubecl::prelude::*;

/// One cube of `units` units per token `j`: `a = max_c |x[j, c]|` (shared-memory tree),
/// `s_j = a / 127`, `q[j, c] = round(x[j, c] · (127 / a))` with ties to even (IEEE's default, as on the host), clamped to
/// `[-127, 127]`; `s_j = 0`, `q = 0` when `a = 0`. Writes all `padded` values of the token
/// (the padding of `x` is zero, so its `q` is zero).
#[cube(launch)]
pub(crate) fn quantize_tokens<F: Float>(
    x: &Array<F>,
    q: &mut Array<i32>,
    scales: &mut Array<f32>,
    padded: u32,
    #[comptime] units: u32,
) {
    let j = CUBE_POS_X;
    let u = UNIT_POS_X;
    let base = j * padded;
    let mut smem = SharedMemory::<f32>::new(units as usize);

    let mut amax = 0.0f32;
    let mut c = u;
    while c < padded {
        amax = max(amax, f32::cast_from(x[(base + c) as usize]).abs());
        c += units;
    }
    smem[u as usize] = amax;
    sync_cube();
    // A runtime value (the comptime `units` cannot be mutated in a loop).
    let mut stride = CUBE_DIM_X / 2;
    while stride > 0 {
        if u < stride {
            let other = smem[(u + stride) as usize];
            smem[u as usize] = max(smem[u as usize], other);
        }
        sync_cube();
        stride /= 2;
    }
    let a = smem[0];
    if u == 0 {
        let mut s = 0.0f32;
        if a > 0.0 {
            s = a / 127.0;
        }
        scales[j as usize] = s;
    }
    let mut inv = 0.0f32;
    if a > 0.0 {
        inv = 127.0 / a;
    }
    let mut c = u;
    while c < padded {
        let v = f32::cast_from(x[(base + c) as usize]) * inv;
        // Round half to even, spelled out so every runtime agrees (CUDA's `round` is half away
        // from zero, WGSL's half to even); `v - t` is exact.
        let t = v.trunc();
        let d = v - t;
        // `t` is odd iff t - 2·trunc(t / 2) ≠ 0 (exact for |t| < 2^24).
        let odd = t - 2.0 * (t * 0.5).trunc() != 0.0;
        let mut r = t;
        if d > 0.5 || (d == 0.5 && odd) {
            r = t + 1.0;
        } else if d < -0.5 || (d == -0.5 && odd) {
            r = t - 1.0;
        }
        r = max(min(r, 127.0f32), -127.0f32);
        q[(base + c) as usize] = i32::cast_from(r);
        c += units;
    }
}
