//! Popcount attention scoring: ternarize / binarize head vectors, then score by popcount dots.

use cubecl::prelude::*;

/// One unit per head vector `v` (`dim` values at `x[v · dim ..]`): writes its planes
/// (`wpd` words each, zero padding) and its scale `alpha[v]`.
///
/// Ternary (`binary = false`): with `S = Σ_i |x_i|` summed in index order,
/// `t_i = sign(x_i)` if `|x_i| · dim > 0.7 · S` else `0`; `alpha = Σ_{t_i ≠ 0} |x_i| / nnz`
/// (`0` when `nnz = 0`). Binary: bit `i` of `plus` set iff `x_i > 0` (`minus` stays zero);
/// `alpha = S / dim`.
#[cube(launch)]
pub(crate) fn quantize_heads(
    x: &Array<f32>,
    plus: &mut Array<u32>,
    minus: &mut Array<u32>,
    alpha: &mut Array<f32>,
    vectors: u32,
    dim: u32,
    wpd: u32,
    #[comptime] binary: bool,
) {
    let v = ABSOLUTE_POS_X;
    if v < vectors {
        let base = v * dim;
        let mut total = 0.0f32;
        for i in 0..dim {
            total += x[(base + i) as usize].abs();
        }
        let thr = 0.7f32 * total;
        let dim_f = f32::cast_from(dim);
        let mut kept: f32 = 0.0f32;
        let mut nnz: u32 = 0u32;
        for w in 0..wpd {
            let mut pw = 0u32;
            let mut mw = 0u32;
            for b in 0..32u32 {
                let c = w * 32 + b;
                if c < dim {
                    let xv = x[(base + c) as usize];
                    if binary {
                        if xv > 0.0 {
                            pw |= 1u32 << b;
                        }
                    } else {
                        let a = xv.abs();
                        if a * dim_f > thr {
                            if xv > 0.0 {
                                pw |= 1u32 << b;
                            } else {
                                mw |= 1u32 << b;
                            }
                            kept += a;
                            nnz += 1u32;
                        }
                    }
                }
            }
            plus[(v * wpd + w) as usize] = pw;
            minus[(v * wpd + w) as usize] = mw;
        }
        let mut al = 0.0f32;
        if binary {
            if dim > 0 {
                al = total / dim_f;
            }
        } else if nnz > 0 {
            al = kept / f32::cast_from(nnz);
        }
        alpha[v as usize] = al;
    }
}

/// `Σ_i a_i · b_i` of two vectors of `wpd` words (`dim` valid bits): ternary
/// `popc(a⁺&b⁺ | a⁻&b⁻) − popc(a⁺&b⁻ | a⁻&b⁺)`, binary `dim − 2 · popc((a ⊕ b) & valid)`.
#[cube]
fn popcount_dot(
    qp: &Array<u32>,
    qm: &Array<u32>,
    kp: &Array<u32>,
    km: &Array<u32>,
    qb: u32,
    kb: u32,
    wpd: u32,
    dim: u32,
    #[comptime] binary: bool,
) -> i32 {
    let mut same = 0u32;
    let mut diff = 0u32;
    for w in 0..wpd {
        let a = qp[(qb + w) as usize];
        let b = kp[(kb + w) as usize];
        if binary {
            let first = w * 32;
            let mut valid = 0u32;
            if first + 32 <= dim {
                valid = 0xFFFF_FFFFu32;
            } else if first < dim {
                valid = (1u32 << (dim - first)) - 1;
            }
            diff += ((a ^ b) & valid).count_ones();
        } else {
            let am = qm[(qb + w) as usize];
            let bm = km[(kb + w) as usize];
            same += ((a & b) | (am & bm)).count_ones();
            diff += ((a & bm) | (am & b)).count_ones();
        }
    }
    let mut dot = i32::cast_from(same) - i32::cast_from(diff);
    if binary {
        dot = i32::cast_from(dim) - 2 * i32::cast_from(diff);
    }
    dot
}

/// `out[h, i, j]` for query `i` and key `j` of head `h` (grid z = head): with `raw`, the
/// integer dot; else `alpha_q · alpha_k · dot · scale`, and `mask_value` where `causal` and
/// `j > i + (nk − nq)` (a query sees the keys up to its own position).
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn qk_scores(
    qp: &Array<u32>,
    qm: &Array<u32>,
    qa: &Array<f32>,
    kp: &Array<u32>,
    km: &Array<u32>,
    ka: &Array<f32>,
    scores: &mut Array<f32>,
    dots: &mut Array<i32>,
    nq: u32,
    nk: u32,
    heads: u32,
    dim: u32,
    wpd: u32,
    scale: f32,
    mask_value: f32,
    #[comptime] binary: bool,
    #[comptime] causal: bool,
    #[comptime] raw: bool,
) {
    let j = ABSOLUTE_POS_X;
    let i = ABSOLUTE_POS_Y;
    let h = CUBE_POS_Z;
    if i < nq && j < nk {
        let out = ((h * nq + i) * nk + j) as usize;
        let qv = i * heads + h;
        let kv = j * heads + h;
        if raw {
            dots[out] = popcount_dot(qp, qm, kp, km, qv * wpd, kv * wpd, wpd, dim, binary);
        } else if causal && j > i + (nk - nq) {
            scores[out] = mask_value;
        } else {
            let d = popcount_dot(qp, qm, kp, km, qv * wpd, kv * wpd, wpd, dim, binary);
            let a = qa[qv as usize] * ka[kv as usize];
            scores[out] = a * f32::cast_from(d) * scale;
        }
    }
}
