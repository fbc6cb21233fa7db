//! GPTQ ternary rounding against an independent `O(n⁴)` optimal-brain-surgeon reference in
//! `f64` (the inverse Hessian of the remaining columns recomputed by Gauss–Jordan at every
//! step), on random correlated problems and edge shapes.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use ternary_convert::gptq::{
    GptqConfig, Grid, HessianFactor, gptq_levels_factored, gptq_ternary, gptq_two_plane,
    grid_scale, group_scale, inverse_cholesky_upper, output_error, refit_plane_scales,
    refit_scales, round_to_grid, round_trit,
};
use ternary_core::quant::Method;
use ternary_core::{ScaleLayout, Scales, TernaryMatrix};

/// Random weights and a Hessian `H = XᵀX` of correlated inputs (`X = Z·M`, `M` random), so
/// that error compensation has something to exploit.
fn problem(rng: &mut StdRng, rows: usize, cols: usize) -> (Vec<f32>, Vec<f64>) {
    let w: Vec<f32> = (0..rows * cols)
        .map(|_| rng.random_range(-1.0f32..1.0) * rng.random_range(0.1f32..1.0))
        .collect();
    let tokens = 2 * cols + 8;
    let mix: Vec<f64> = (0..cols * cols)
        .map(|k| {
            let (i, j) = (k / cols, k % cols);
            if i == j {
                1.0
            } else {
                rng.random_range(-0.3..0.3)
            }
        })
        .collect();
    let mut h = vec![0f64; cols * cols];
    for _ in 0..tokens {
        let z: Vec<f64> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let x: Vec<f64> = (0..cols)
            .map(|j| (0..cols).map(|i| z[i] * mix[i * cols + j]).sum())
            .collect();
        for i in 0..cols {
            for j in 0..cols {
                h[i * cols + j] += x[i] * x[j];
            }
        }
    }
    (w, h)
}

/// Inverse of a symmetric positive definite matrix by Gauss–Jordan with partial pivoting.
fn inverse(a: &[f64], n: usize) -> Vec<f64> {
    let mut m = a.to_vec();
    let mut inv: Vec<f64> = (0..n * n)
        .map(|k| if k / n == k % n { 1.0 } else { 0.0 })
        .collect();
    for c in 0..n {
        let p = (c..n)
            .max_by(|&x, &y| m[x * n + c].abs().total_cmp(&m[y * n + c].abs()))
            .unwrap();
        for k in 0..n {
            m.swap(c * n + k, p * n + k);
            inv.swap(c * n + k, p * n + k);
        }
        let d = m[c * n + c];
        for k in 0..n {
            m[c * n + k] /= d;
            inv[c * n + k] /= d;
        }
        for r in 0..n {
            if r != c {
                let f = m[r * n + c];
                for k in 0..n {
                    m[r * n + k] -= f * m[c * n + k];
                    inv[r * n + k] -= f * inv[c * n + k];
                }
            }
        }
    }
    inv
}

/// The nearest level of `{−L, …, L}·s`, ties toward zero, written independently of the
/// library: `min(L, ⌊|w|/s + ½⌋)` with exact halves rounded down, signed.
fn nearest_level(w: f64, s: f64, max_level: i8) -> i8 {
    if s <= 0.0 {
        return 0;
    }
    let a = w.abs() / s;
    let l = if a.fract() == 0.5 {
        a.floor()
    } else {
        a.round()
    };
    let l = l.min(f64::from(max_level)) as i8;
    if w < 0.0 { -l } else { l }
}

/// The reference: left to right, column `j` rounded to the nearest point of the grid
/// (`{−s, 0, s}`, or `{−4s, …, 4s}` for two planes) and its error spread over the remaining
/// columns `F = j..` with `(H_F)⁻¹`: `w_F −= (w_j − q) / [H_F⁻¹]_jj · [H_F⁻¹]_{F, j}`. Returns
/// levels and scales.
#[allow(clippy::too_many_arguments)]
fn reference(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    layout: ScaleLayout,
    method: Method,
    damp: f64,
    grid: Grid,
) -> (Vec<i8>, Vec<f32>) {
    let mut hd = h.to_vec();
    let dead: Vec<bool> = (0..cols).map(|j| h[j * cols + j] <= 0.0).collect();
    for j in 0..cols {
        if dead[j] {
            hd[j * cols + j] = 1.0;
        }
    }
    let mean = (0..cols).map(|j| hd[j * cols + j]).sum::<f64>() / cols as f64;
    for j in 0..cols {
        hd[j * cols + j] += damp * mean;
    }
    // (H_F)⁻¹ for F = j..cols, for every j.
    let invs: Vec<Vec<f64>> = (0..cols)
        .map(|j| {
            let m = cols - j;
            let sub: Vec<f64> = (0..m * m)
                .map(|k| hd[(j + k / m) * cols + j + k % m])
                .collect();
            inverse(&sub, m)
        })
        .collect();
    let diag: Vec<f32> = (0..cols).map(|j| h[j * cols + j] as f32).collect();
    let glen = layout.group_len(cols);
    let gpr = layout.groups_per_row(cols);
    let mut trits = vec![0i8; rows * cols];
    let mut scales = vec![0f32; rows * gpr];
    for r in 0..rows {
        let mut wr: Vec<f64> = (0..cols)
            .map(|c| {
                if dead[c] {
                    0.0
                } else {
                    f64::from(w[r * cols + c])
                }
            })
            .collect();
        for j in 0..cols {
            if j % glen == 0 {
                let end = (j + glen).min(cols);
                let g: Vec<f32> = wr[j..end].iter().map(|&v| v as f32).collect();
                scales[r * gpr + j / glen] = grid_scale(method, grid, &g, &diag[j..end]).unwrap();
            }
            let s = f64::from(scales[r * gpr + j / glen]);
            let t = match grid {
                Grid::Ternary => round_trit(wr[j], s),
                Grid::TwoPlane => nearest_level(wr[j], s, 4),
            };
            trits[r * cols + j] = t;
            let e = wr[j] - s * f64::from(t);
            let inv = &invs[j];
            let m = cols - j;
            for i in 1..m {
                wr[j + i] -= e / inv[0] * inv[i * m];
            }
            wr[j] = s * f64::from(t);
        }
    }
    (trits, scales)
}

/// Plain rounding to nearest with each group's scale chosen from the original weights.
fn round_to_nearest(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    layout: ScaleLayout,
    method: Method,
) -> TernaryMatrix {
    let diag: Vec<f32> = (0..cols).map(|j| h[j * cols + j] as f32).collect();
    let glen = layout.group_len(cols);
    let gpr = layout.groups_per_row(cols);
    let mut trits = vec![0i8; rows * cols];
    let mut scales = vec![0f32; rows * gpr];
    for r in 0..rows {
        for g in 0..gpr {
            let (a, b) = (g * glen, ((g + 1) * glen).min(cols));
            let s = group_scale(method, &w[r * cols + a..r * cols + b], &diag[a..b]).unwrap();
            scales[r * gpr + g] = s;
            for c in a..b {
                trits[r * cols + c] = round_trit(f64::from(w[r * cols + c]), f64::from(s));
            }
        }
    }
    TernaryMatrix::from_trits(rows, cols, &trits, Scales::new(layout, scales)).unwrap()
}

fn methods() -> [Method; 4] {
    [
        Method::AbsMean,
        Method::twn(),
        Method::ActivationAware,
        Method::Percentile {
            p: 0.9,
            refit: true,
        },
    ]
}

const NO_REFIT: GptqConfig = GptqConfig {
    damp: 0.01,
    refit: false,
    act_order: false,
};

#[test]
fn gptq_should_match_the_obs_reference_on_edge_shapes() {
    let mut rng = StdRng::seed_from_u64(5);
    let mut checked = 0;
    for &(rows, cols) in &[(1, 1), (3, 31), (2, 32), (3, 33), (2, 63), (4, 64), (3, 65)] {
        for layout in [
            ScaleLayout::PerRow,
            ScaleLayout::PerGroup { group_size: 32 },
        ] {
            for method in methods() {
                let (w, h) = problem(&mut rng, rows, cols);
                let m = gptq_ternary(&w, rows, cols, &h, layout, method, &NO_REFIT).unwrap();
                let (trits, scales) =
                    reference(&w, rows, cols, &h, layout, method, 0.01, Grid::Ternary);
                // Scales come from f32 casts of f64 weights that agree to ~1e-12 relative; one
                // f32 ulp of difference is allowed.
                for (i, (&a, &b)) in m.scales().values().iter().zip(&scales).enumerate() {
                    assert!(
                        (a - b).abs() <= 2.0 * f32::EPSILON * b.abs(),
                        "{rows}x{cols} {layout:?} {method}: scale {i} {a} vs {b}"
                    );
                }
                assert_eq!(
                    m.to_trits(),
                    trits,
                    "{rows}x{cols} {layout:?} {method}: trits"
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 56);
}

#[test]
fn gptq_should_not_be_worse_than_rounding_and_refit_should_help() {
    let mut rng = StdRng::seed_from_u64(11);
    for &(rows, cols) in &[(16, 64), (8, 96), (12, 128)] {
        for layout in [
            ScaleLayout::PerRow,
            ScaleLayout::PerGroup { group_size: 32 },
        ] {
            for method in methods() {
                let (w, h) = problem(&mut rng, rows, cols);
                let rtn = round_to_nearest(&w, rows, cols, &h, layout, method);
                let e_rtn = output_error(&w, &rtn.dequantize(), cols, &h).unwrap();
                let plain = gptq_ternary(&w, rows, cols, &h, layout, method, &NO_REFIT).unwrap();
                let e_gptq = output_error(&w, &plain.dequantize(), cols, &h).unwrap();
                let refit = gptq_ternary(
                    &w,
                    rows,
                    cols,
                    &h,
                    layout,
                    method,
                    &GptqConfig {
                        damp: 0.01,
                        refit: true,
                        act_order: false,
                    },
                )
                .unwrap();
                let e_refit = output_error(&w, &refit.dequantize(), cols, &h).unwrap();
                let what = format!("{rows}x{cols} {layout:?} {method}");
                assert!(e_gptq < e_rtn, "{what}: GPTQ {e_gptq} vs rounding {e_rtn}");
                assert!(
                    e_refit <= e_gptq * (1.0 + 1e-12),
                    "{what}: refit {e_refit} vs {e_gptq}"
                );
                // The refit changes scales only: the same trits.
                assert_eq!(refit.to_trits(), plain.to_trits(), "{what}");
            }
        }
    }
}

#[test]
fn refit_should_reach_the_least_squares_optimum() {
    let mut rng = StdRng::seed_from_u64(3);
    let (rows, cols) = (5, 96);
    let (w, h) = problem(&mut rng, rows, cols);
    for layout in [
        ScaleLayout::PerRow,
        ScaleLayout::PerGroup { group_size: 32 },
    ] {
        let mut m = round_to_nearest(&w, rows, cols, &h, layout, Method::AbsMean);
        let e0 = output_error(&w, &m.dequantize(), cols, &h).unwrap();
        refit_scales(&w, &mut m, &h).unwrap();
        let e = output_error(&w, &m.dequantize(), cols, &h).unwrap();
        assert!(e < e0, "{layout:?}: refit {e} vs {e0}");
        // Optimality: no single scale moved by ±0.1% lowers the error (the objective is a
        // convex quadratic in the scales, so a first-order change must not help).
        let base = m.scales().values().to_vec();
        for i in 0..base.len() {
            for f in [0.999f32, 1.001] {
                let mut s = base.clone();
                s[i] *= f;
                let mut p = m.clone();
                p.set_scales(Scales::new(layout, s)).unwrap();
                let ep = output_error(&w, &p.dequantize(), cols, &h).unwrap();
                assert!(
                    ep >= e * (1.0 - 1e-9),
                    "{layout:?} scale {i}x{f}: {ep} < {e}"
                );
            }
        }
    }
}

#[test]
fn inverse_cholesky_factor_should_invert_the_hessian() {
    let mut rng = StdRng::seed_from_u64(9);
    for n in [1usize, 2, 31, 33, 64, 65] {
        let (_, mut h) = problem(&mut rng, 1, n);
        for j in 0..n {
            h[j * n + j] += 0.01;
        }
        let u = inverse_cholesky_upper(&h, n).unwrap();
        for i in 0..n {
            for j in 0..i {
                assert_eq!(
                    u[i * n + j],
                    0.0,
                    "n={n}: U is not upper triangular at ({i},{j})"
                );
            }
        }
        // UᵀU·H = I.
        let mut hinv = vec![0f64; n * n];
        for i in 0..n {
            for j in 0..n {
                hinv[i * n + j] = (0..n).map(|k| u[k * n + i] * u[k * n + j]).sum();
            }
        }
        for i in 0..n {
            for j in 0..n {
                let v: f64 = (0..n).map(|k| hinv[i * n + k] * h[k * n + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                assert!((v - want).abs() < 1e-8, "n={n} ({i},{j}): {v}");
            }
        }
    }
}

#[test]
fn dead_inputs_should_get_zero_trits_and_match_the_reference() {
    let mut rng = StdRng::seed_from_u64(21);
    let (rows, cols) = (4, 40);
    let (w, mut h) = problem(&mut rng, rows, cols);
    for dead in [0usize, 7, 39] {
        for k in 0..cols {
            h[dead * cols + k] = 0.0;
            h[k * cols + dead] = 0.0;
        }
    }
    let layout = ScaleLayout::PerGroup { group_size: 32 };
    let m = gptq_ternary(&w, rows, cols, &h, layout, Method::AbsMean, &NO_REFIT).unwrap();
    let (trits, _) = reference(
        &w,
        rows,
        cols,
        &h,
        layout,
        Method::AbsMean,
        0.01,
        Grid::Ternary,
    );
    assert_eq!(m.to_trits(), trits);
    for r in 0..rows {
        for c in [0usize, 7, 39] {
            assert_eq!(m.get(r, c).unwrap(), 0);
        }
    }
}

#[test]
fn bad_inputs_should_be_errors() {
    let h = vec![1.0f64, 0.0, 0.0, 1.0];
    let lay = ScaleLayout::PerRow;
    let m = Method::AbsMean;
    assert!(gptq_ternary(&[1.0; 3], 2, 2, &h, lay, m, &NO_REFIT).is_err());
    assert!(gptq_ternary(&[1.0; 4], 2, 2, &h[..3], lay, m, &NO_REFIT).is_err());
    assert!(gptq_ternary(&[f32::NAN; 4], 2, 2, &h, lay, m, &NO_REFIT).is_err());
    let bad_h = vec![1.0, 2.0, 2.0, 1.0]; // indefinite
    let cfg = GptqConfig {
        damp: 0.0,
        refit: false,
        act_order: false,
    };
    assert!(gptq_ternary(&[1.0; 4], 2, 2, &bad_h, lay, m, &cfg).is_err());
    let neg = GptqConfig {
        damp: -1.0,
        refit: false,
        act_order: false,
    };
    assert!(gptq_ternary(&[1.0; 4], 2, 2, &h, lay, m, &neg).is_err());
    assert!(
        gptq_ternary(
            &[1.0; 4],
            2,
            2,
            &h,
            ScaleLayout::PerGroup { group_size: 3 },
            m,
            &NO_REFIT
        )
        .is_err()
    );
    // Empty matrices are fine.
    let e = gptq_ternary(&[], 0, 2, &h, lay, m, &NO_REFIT).unwrap();
    assert_eq!((e.rows(), e.cols()), (0, 2));
}

// ---------------------------------------------------------------------------------------------
// Two trit-planes: GPTQ on the 9-level grid {−4, …, 4}·s, split into s·(3·T₁ + T₂)
// ---------------------------------------------------------------------------------------------

#[test]
fn nine_level_gptq_should_match_the_obs_reference_on_edge_shapes() {
    let mut rng = StdRng::seed_from_u64(7);
    for &(rows, cols) in &[(1, 1), (3, 31), (2, 32), (3, 33), (2, 63), (4, 64), (3, 65)] {
        for layout in [
            ScaleLayout::PerRow,
            ScaleLayout::PerGroup { group_size: 32 },
        ] {
            for method in [Method::AbsMean, Method::ActivationAware, Method::AbsMax] {
                let (w, h) = problem(&mut rng, rows, cols);
                let f = HessianFactor::new(h.clone(), cols, 0.01).unwrap();
                let (levels, scales) =
                    gptq_levels_factored(&w, rows, cols, &f, layout, method, Grid::TwoPlane, false)
                        .unwrap();
                let (want, want_scales) =
                    reference(&w, rows, cols, &h, layout, method, 0.01, Grid::TwoPlane);
                let what = format!("{rows}x{cols} {layout:?} {method}");
                for (i, (&a, &b)) in scales.values().iter().zip(&want_scales).enumerate() {
                    assert!(
                        (a - b).abs() <= 2.0 * f32::EPSILON * b.abs(),
                        "{what}: scale {i} {a} vs {b}"
                    );
                }
                assert_eq!(levels, want, "{what}: levels");
                assert!(levels.iter().all(|l| (-4..=4).contains(l)), "{what}");
            }
        }
    }
}

#[test]
fn two_plane_split_should_equal_the_nine_level_gptq_weights_exactly() {
    let mut rng = StdRng::seed_from_u64(13);
    for &(rows, cols) in &[(1, 1), (5, 63), (4, 64), (6, 65), (8, 130)] {
        for layout in [
            ScaleLayout::PerRow,
            ScaleLayout::PerGroup { group_size: 64 },
        ] {
            for refit in [false, true] {
                let (w, h) = problem(&mut rng, rows, cols);
                let cfg = GptqConfig {
                    damp: 0.01,
                    refit,
                    act_order: false,
                };
                let f = HessianFactor::new(h.clone(), cols, cfg.damp).unwrap();
                let (levels, scales) = gptq_levels_factored(
                    &w,
                    rows,
                    cols,
                    &f,
                    layout,
                    Method::ActivationAware,
                    Grid::TwoPlane,
                    refit,
                )
                .unwrap();
                let m = gptq_two_plane(&w, rows, cols, &h, layout, Method::ActivationAware, &cfg)
                    .unwrap();
                let what = format!("{rows}x{cols} {layout:?} refit {refit}");
                // The integers: 3·t₁ + t₂ is the GPTQ level, each trit in {−1, 0, 1}.
                assert_eq!(m.levels(), levels, "{what}");
                assert_eq!(m.low().scales(), &scales, "{what}: plane 2 scales are s");
                for (&s1, &s) in m.high().scales().values().iter().zip(scales.values()) {
                    assert_eq!(f64::from(s1), 3.0 * f64::from(s), "{what}: plane 1 is 3s");
                }
                // The weights: M₁ + M₂ = s · level, exactly, in f32.
                let glen = layout.group_len(cols);
                let gpr = layout.groups_per_row(cols);
                for (k, &v) in m.dequantize().iter().enumerate() {
                    let (r, c) = (k / cols, k % cols);
                    let s = scales.values()[r * gpr + c / glen];
                    assert_eq!(v, s * f32::from(levels[k]), "{what}: weight {k}");
                }
            }
        }
    }
}

#[test]
fn two_planes_should_beat_one_and_nine_level_gptq_should_beat_its_rounding() {
    let mut rng = StdRng::seed_from_u64(17);
    for &(rows, cols) in &[(16, 64), (12, 128)] {
        let layout = ScaleLayout::PerGroup { group_size: 32 };
        let method = Method::ActivationAware;
        let (w, h) = problem(&mut rng, rows, cols);
        let one = gptq_ternary(&w, rows, cols, &h, layout, method, &NO_REFIT).unwrap();
        let two = gptq_two_plane(&w, rows, cols, &h, layout, method, &NO_REFIT).unwrap();
        let diag: Vec<f32> = (0..cols).map(|j| h[j * cols + j] as f32).collect();
        let (levels, scales) =
            round_to_grid(&w, rows, cols, layout, method, Grid::TwoPlane, &diag).unwrap();
        let rtn = Grid::TwoPlane.weights(rows, cols, &levels, scales).unwrap();
        let e1 = output_error(&w, &one.dequantize(), cols, &h).unwrap();
        let e2 = output_error(&w, &two.dequantize(), cols, &h).unwrap();
        let e_rtn = output_error(&w, &rtn.dequantize(), cols, &h).unwrap();
        assert!(e2 < 0.5 * e1, "{rows}x{cols}: two planes {e2} vs one {e1}");
        assert!(e2 < e_rtn, "{rows}x{cols}: GPTQ {e2} vs rounding {e_rtn}");
    }
}

#[test]
fn the_ternary_grid_should_reproduce_gptq_ternary() {
    let mut rng = StdRng::seed_from_u64(19);
    let (rows, cols) = (6, 96);
    let (w, h) = problem(&mut rng, rows, cols);
    let layout = ScaleLayout::PerGroup { group_size: 32 };
    for refit in [false, true] {
        let cfg = GptqConfig {
            damp: 0.01,
            refit,
            act_order: false,
        };
        let m = gptq_ternary(&w, rows, cols, &h, layout, Method::ActivationAware, &cfg).unwrap();
        let f = HessianFactor::new(h.clone(), cols, 0.01).unwrap();
        let (levels, scales) = gptq_levels_factored(
            &w,
            rows,
            cols,
            &f,
            layout,
            Method::ActivationAware,
            Grid::Ternary,
            refit,
        )
        .unwrap();
        assert_eq!(m.to_trits(), levels);
        assert_eq!(m.scales(), &scales);
    }
    assert!(Grid::with_planes(3).is_err());
    assert_eq!(Grid::with_planes(2).unwrap(), Grid::TwoPlane);
}

/// Free plane scales: the trits stay, the error never grows, and at the solution the error's
/// gradient with respect to every plane scale of a group with a non-zero trit vanishes
/// (`p_iᵀ H_d (w − ŵ) = 0`, checked in `f64` apart from the solver; `H_d` the dampened `H`),
/// i.e. it is the least-squares optimum; rows, columns and groups at edge sizes (partial last
/// group, empty rows), undampened and dampened; a bad dampening is an error.
#[test]
fn free_plane_scales_should_be_the_least_squares_optimum_for_the_trits() {
    let seed = 23;
    eprintln!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let shapes = [
        (1, 1, 32),
        (3, 63, 32),
        (4, 64, 32),
        (5, 65, 32),
        (6, 96, 64),
    ];
    for (&(rows, cols, group), damp) in shapes.iter().flat_map(|s| [(s, 0.0), (s, 0.05)]) {
        let layout = ScaleLayout::PerGroup { group_size: group };
        let (w, h) = problem(&mut rng, rows, cols);
        let two = gptq_two_plane(
            &w,
            rows,
            cols,
            &h,
            layout,
            Method::ActivationAware,
            &NO_REFIT,
        )
        .unwrap();
        let free = refit_plane_scales(&w, &two, &h, damp).unwrap();
        assert_eq!(free.high().to_trits(), two.high().to_trits());
        assert_eq!(free.low().to_trits(), two.low().to_trits());
        // The metric the fit uses: H + damp·mean(diag H)·I.
        let mean_diag = (0..cols).map(|i| h[i * cols + i]).sum::<f64>() / cols as f64;
        let mut hd = h.clone();
        (0..cols).for_each(|i| hd[i * cols + i] += damp * mean_diag);
        let e_before = output_error(&w, &two.dequantize(), cols, &hd).unwrap();
        let e_after = output_error(&w, &free.dequantize(), cols, &hd).unwrap();
        assert!(e_after <= e_before, "{rows}x{cols}: {e_after} > {e_before}");
        // Stationarity, per row: g_i = p_iᵀ H_d r with r = w − ŵ, relative to |p_i|·|r| in H_d.
        let wq = free.dequantize();
        let gpr = cols.div_ceil(group);
        let mut improved = false;
        for r in 0..rows {
            let res: Vec<f64> = (0..cols)
                .map(|c| f64::from(w[r * cols + c]) - f64::from(wq[r * cols + c]))
                .collect();
            let hr: Vec<f64> = (0..cols)
                .map(|i| (0..cols).map(|j| hd[i * cols + j] * res[j]).sum())
                .collect();
            let rr: f64 = res.iter().zip(&hr).map(|(a, b)| a * b).sum();
            for plane in [free.high().to_trits(), free.low().to_trits()] {
                for g in 0..gpr {
                    let cs = g * group..((g + 1) * group).min(cols);
                    let p: Vec<f64> = (0..cols)
                        .map(|c| {
                            if cs.contains(&c) {
                                f64::from(plane[r * cols + c])
                            } else {
                                0.0
                            }
                        })
                        .collect();
                    if p.iter().all(|&x| x == 0.0) {
                        continue;
                    }
                    let grad: f64 = p.iter().zip(&hr).map(|(a, b)| a * b).sum();
                    let pp: f64 = (0..cols)
                        .map(|i| p[i] * (0..cols).map(|j| hd[i * cols + j] * p[j]).sum::<f64>())
                        .sum();
                    let rel = grad.abs() / (pp.sqrt() * rr.sqrt()).max(1e-30);
                    // f32 storage of the scales leaves a small gradient: 1e-3 of the norms.
                    assert!(
                        rel < 1e-3,
                        "{rows}x{cols} damp {damp} row {r} group {g}: {rel}"
                    );
                }
            }
            let before: Vec<f32> = two.high().scales().values()[r * gpr..(r + 1) * gpr].to_vec();
            improved |= before != free.high().scales().values()[r * gpr..(r + 1) * gpr];
        }
        if cols >= 63 {
            assert!(improved, "{rows}x{cols}: no row changed its scales");
            assert!(e_after < e_before, "{rows}x{cols}: {e_after} vs {e_before}");
        }
    }
    let (w, h) = problem(&mut rng, 2, 32);
    let layout = ScaleLayout::PerGroup { group_size: 32 };
    let two = gptq_two_plane(&w, 2, 32, &h, layout, Method::ActivationAware, &NO_REFIT).unwrap();
    for bad in [-0.1, f64::NAN, f64::INFINITY] {
        let err = refit_plane_scales(&w, &two, &h, bad)
            .unwrap_err()
            .to_string();
        assert!(err.contains("dampening"), "{err}");
    }
    let err = refit_plane_scales(&w, &two, &h[..10], 0.0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("Hessian"), "{err}");
}

/// The act-order reference: every group's scale from the original weights first, then the
/// columns visited in `order`, column `order[k]` rounded and its error spread over the columns
/// not yet visited, `F = order[k..]`, with `(H_F)⁻¹` of the dampened `H` restricted to `F`.
#[allow(clippy::too_many_arguments)]
fn reference_ordered(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    layout: ScaleLayout,
    method: Method,
    grid: Grid,
    order: &[usize],
) -> (Vec<i8>, Vec<f32>) {
    let mut hd = h.to_vec();
    let dead: Vec<bool> = (0..cols).map(|j| h[j * cols + j] <= 0.0).collect();
    for j in 0..cols {
        if dead[j] {
            hd[j * cols + j] = 1.0;
        }
    }
    let mean = (0..cols).map(|j| hd[j * cols + j]).sum::<f64>() / cols as f64;
    for j in 0..cols {
        hd[j * cols + j] += 0.01 * mean;
    }
    let invs: Vec<Vec<f64>> = (0..cols)
        .map(|k| {
            let f = &order[k..];
            let m = f.len();
            let sub: Vec<f64> = (0..m * m).map(|i| hd[f[i / m] * cols + f[i % m]]).collect();
            inverse(&sub, m)
        })
        .collect();
    let diag: Vec<f32> = (0..cols).map(|j| h[j * cols + j] as f32).collect();
    let glen = layout.group_len(cols);
    let gpr = layout.groups_per_row(cols);
    let mut levels = vec![0i8; rows * cols];
    let mut scales = vec![0f32; rows * gpr];
    for r in 0..rows {
        let mut wr: Vec<f64> = (0..cols)
            .map(|c| {
                if dead[c] {
                    0.0
                } else {
                    f64::from(w[r * cols + c])
                }
            })
            .collect();
        for g in 0..gpr {
            let (a, b) = (g * glen, ((g + 1) * glen).min(cols));
            let gw: Vec<f32> = wr[a..b].iter().map(|&v| v as f32).collect();
            scales[r * gpr + g] = grid_scale(method, grid, &gw, &diag[a..b]).unwrap();
        }
        for (k, &j) in order.iter().enumerate() {
            let s = f64::from(scales[r * gpr + j / glen]);
            let l = nearest_level(wr[j], s, grid.max_level());
            levels[r * cols + j] = l;
            let e = wr[j] - s * f64::from(l);
            let inv = &invs[k];
            let m = cols - k;
            for i in 1..m {
                wr[order[k + i]] -= e / inv[0] * inv[i * m];
            }
            wr[j] = s * f64::from(l);
        }
    }
    (levels, scales)
}

#[test]
fn act_order_gptq_should_match_its_obs_reference_on_edge_shapes() {
    let seed = 11;
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut checked = 0;
    for &(rows, cols) in &[(1, 1), (3, 31), (2, 32), (3, 33), (2, 63), (4, 64), (3, 65)] {
        for layout in [
            ScaleLayout::PerRow,
            ScaleLayout::PerGroup { group_size: 32 },
        ] {
            for grid in [Grid::Ternary, Grid::TwoPlane] {
                let (w, mut h) = problem(&mut rng, rows, cols);
                // Inputs of very different sizes (so the order is far from 0, 1, 2, …), and a
                // dead one where there are several.
                let gain: Vec<f64> = (0..cols).map(|_| rng.random_range(0.2..3.0)).collect();
                for i in 0..cols {
                    for j in 0..cols {
                        h[i * cols + j] *= gain[i] * gain[j];
                    }
                }
                if cols > 2 {
                    let d = cols / 2;
                    for k in 0..cols {
                        h[d * cols + k] = 0.0;
                        h[k * cols + d] = 0.0;
                    }
                }
                let mut order: Vec<usize> = (0..cols).collect();
                order.sort_by(|&a, &b| {
                    h[b * cols + b]
                        .partial_cmp(&h[a * cols + a])
                        .unwrap()
                        .then(a.cmp(&b))
                });
                let method = Method::ActivationAware;
                let f = HessianFactor::with_order(h.clone(), cols, 0.01, true).unwrap();
                let (levels, scales) =
                    gptq_levels_factored(&w, rows, cols, &f, layout, method, grid, false).unwrap();
                let (want, want_scales) =
                    reference_ordered(&w, rows, cols, &h, layout, method, grid, &order);
                let what = format!("{rows}x{cols} {layout:?} {grid:?}");
                assert_eq!(scales.values(), &want_scales[..], "{what}: scales");
                assert_eq!(levels, want, "{what}: levels");
                if cols > 2 {
                    assert!(levels[cols / 2] == 0, "{what}: dead input");
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 28);
}

#[test]
fn act_order_should_lower_the_output_error_when_inputs_differ_in_size() {
    // Summed over problems whose inputs differ in size by up to 15×, visiting the large inputs
    // first leaves less output error than left to right (on both grids).
    let seed = 12;
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let (rows, cols) = (8, 96);
    let layout = ScaleLayout::PerGroup { group_size: 32 };
    for grid in [Grid::Ternary, Grid::TwoPlane] {
        let (mut plain, mut ordered) = (0.0, 0.0);
        for _ in 0..6 {
            let (w, mut h) = problem(&mut rng, rows, cols);
            let gain: Vec<f64> = (0..cols).map(|_| rng.random_range(0.2..3.0)).collect();
            for i in 0..cols {
                for j in 0..cols {
                    h[i * cols + j] *= gain[i] * gain[j];
                }
            }
            for (act, sum) in [(false, &mut plain), (true, &mut ordered)] {
                let f = HessianFactor::with_order(h.clone(), cols, 0.01, act).unwrap();
                let (levels, scales) = gptq_levels_factored(
                    &w,
                    rows,
                    cols,
                    &f,
                    layout,
                    Method::ActivationAware,
                    grid,
                    false,
                )
                .unwrap();
                let glen = layout.group_len(cols);
                let w_hat: Vec<f32> = levels
                    .iter()
                    .enumerate()
                    .map(|(k, &l)| {
                        let (r, c) = (k / cols, k % cols);
                        scales.values()[r * (cols / glen) + c / glen] * f32::from(l)
                    })
                    .collect();
                *sum += output_error(&w, &w_hat, cols, &h).unwrap();
            }
        }
        println!("{grid:?}: output error left to right {plain:.4}, act order {ordered:.4}");
        assert!(ordered < plain, "{grid:?}: {ordered} vs {plain}");
    }
}
