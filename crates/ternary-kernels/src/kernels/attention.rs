//! Popcount attention scoring: ternarize / binarize head vectors, then score by popcount dots.

use cubecl::prelude::*;

/// One unit per head vector `v` (`dim` values at `x[v · dim ..]`): writes its planes and
/// scales.
///
/// Ternary (`binary = false`): `ternary_core::quant::attention`'s rule, operation for operation
/// (the host function's doc states it and why the arithmetic is this). Per level `l < levels`
/// (planes at `(v · levels + l) · wpd`, zero padding) and group `g < groups` of `n` values
/// (dimensions `g · group ..`, scale at `(v · levels + l) · groups + g`) of the residual `r`:
/// `S = Σ|r_i|` in index order; if `S` is NaN or ±∞, zero trits and `alpha = poison` (NaN);
/// else `t_i = sign(r_i) · [|r_i| · n > factor · S]`, `alpha = S / n` or, with `refit`,
/// `Σ_{t_i ≠ 0} |r_i| / nnz` (`0` when `nnz = 0`). The residual of level `l` is recomputed
/// from `x` and the planes and scales already written: `r_i = x_i ∓ α` for each earlier level
/// whose trit is `±1`, in level order (the host's sequence of roundings).
///
/// Binary: one plane and one scale per vector (`levels = groups = 1`): with `S = Σ|x_i|`
/// (index order), bit `i` of `plus` set iff `x_i > 0` (`minus` stays zero), `alpha = S / dim`
/// (`0` when `dim = 0`); if `S` is NaN or ±∞, zero plane and `alpha = poison`.
#[cube(launch)]
#[allow(clippy::too_many_arguments)]
pub(crate) fn quantize_heads(
    x: &Array<f32>,
    plus: &mut Array<u32>,
    minus: &mut Array<u32>,
    alpha: &mut Array<f32>,
    vectors: u32,
    dim: u32,
    wpd: u32,
    group: u32,
    groups: u32,
    levels: u32,
    factor: f32,
    poison: f32,
    #[comptime] binary: bool,
    #[comptime] refit: bool,
) {
    let v = ABSOLUTE_POS_X;
    if v < vectors {
        let base = v * dim;
        if binary {
            let mut total: f32 = 0.0f32;
            for i in 0..dim {
                total += x[(base + i) as usize].abs();
            }
            let finite = (u32::reinterpret(total) & 0x7FFF_FFFFu32) < 0x7F80_0000u32;
            for w in 0..wpd {
                let mut pw: u32 = 0u32;
                for b in 0..32u32 {
                    let c = w * 32 + b;
                    if finite && c < dim && x[(base + c) as usize] > 0.0 {
                        pw |= 1u32 << b;
                    }
                }
                plus[(v * wpd + w) as usize] = pw;
                minus[(v * wpd + w) as usize] = 0u32;
            }
            let mut al: f32 = 0.0f32;
            if !finite {
                al = poison;
            } else if dim > 0 {
                al = total / f32::cast_from(dim);
            }
            alpha[v as usize] = al;
        } else {
            for level in 0..levels {
                let pb = (v * levels + level) * wpd;
                for w in 0..wpd {
                    plus[(pb + w) as usize] = 0u32;
                    minus[(pb + w) as usize] = 0u32;
                }
                for g in 0..groups {
                    let lo = g * group;
                    let mut hi: u32 = lo + group;
                    if hi > dim {
                        hi = dim;
                    }
                    let n = f32::cast_from(hi - lo);
                    let mut total: f32 = 0.0f32;
                    for i in lo..hi {
                        total += residual(
                            x, plus, minus, alpha, v, i, g, level, dim, wpd, groups, levels,
                        )
                        .abs();
                    }
                    let finite = (u32::reinterpret(total) & 0x7FFF_FFFFu32) < 0x7F80_0000u32;
                    let thr = factor * total;
                    let mut kept: f32 = 0.0f32;
                    let mut nnz: u32 = 0u32;
                    if finite {
                        for i in lo..hi {
                            let r = residual(
                                x, plus, minus, alpha, v, i, g, level, dim, wpd, groups, levels,
                            );
                            let a = r.abs();
                            if a * n > thr {
                                let word = (pb + i / 32) as usize;
                                let bit = 1u32 << (i % 32);
                                if r > 0.0 {
                                    plus[word] = plus[word] | bit;
                                } else {
                                    minus[word] = minus[word] | bit;
                                }
                                kept += a;
                                nnz += 1u32;
                            }
                        }
                    }
                    let mut al: f32 = 0.0f32;
                    if !finite {
                        al = poison;
                    } else if refit {
                        if nnz > 0 {
                            al = kept / f32::cast_from(nnz);
                        }
                    } else {
                        al = total / n;
                    }
                    alpha[((v * levels + level) * groups + g) as usize] = al;
                }
            }
        }
    }
}

/// Value `i` (of group `g`) of vector `v`'s residual at level `level`: `x_i`, then for each
/// earlier level `l` in order `− α` where its trit is `+1`, `+ α` where it is `−1`.
#[cube]
#[allow(clippy::too_many_arguments)]
fn residual(
    x: &Array<f32>,
    plus: &Array<u32>,
    minus: &Array<u32>,
    alpha: &Array<f32>,
    v: u32,
    i: u32,
    g: u32,
    level: u32,
    dim: u32,
    wpd: u32,
    groups: u32,
    levels: u32,
) -> f32 {
    let mut r: f32 = x[(v * dim + i) as usize];
    for l in 0..level {
        let word = ((v * levels + l) * wpd + i / 32) as usize;
        let bit = 1u32 << (i % 32);
        let a = alpha[((v * levels + l) * groups + g) as usize];
        if (plus[word] & bit) != 0u32 {
            r -= a;
        } else if (minus[word] & bit) != 0u32 {
            r += a;
        }
    }
    r
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

/// `out[h, i, j]` for query `i` and key `j` of head `h` (grid z = head), one plane level and
/// one scale per vector: with `raw`, the integer dot; else `alpha_q · alpha_k · dot · scale`,
/// and `mask_value` where `causal` and `j > i + (nk − nq)` (a query sees the keys up to its own
/// position).
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
            // Ternary vectors of `dim = 0` have no scales (and score 0).
            let mut a = 0.0f32;
            if binary || dim > 0 {
                a = qa[qv as usize] * ka[kv as usize];
            }
            scores[out] = a * f32::cast_from(d) * scale;
        }
    }
}
