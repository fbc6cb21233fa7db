//! Two trit-planes (`W = M₁ + M₂ = s·(3·T₁ + T₂)`) against independent `f64` references.
//!
//! Inputs are random from the fixed test seed (`ternary_testkit::seed`, printed;
//! `TERNARY_TEST_SEED=<seed>` runs another). The reference multiplies the 9-level integers and
//! the scales in `f64`, never the planes. Tolerances as in `tests/kernels.rs`: `f32` products
//! within `1e-5 ·` the absolute mass of each output; int8 products exactly the per-plane int8
//! reference summed in `f32`.

use rand::RngExt;
use ternary_core::two_plane::{MAX_LEVEL, exact_triple_scale, split_level};
use ternary_core::{QuantizedActivations, ScaleLayout, Scales, TwoPlaneMatrix, reference};

const F32_TOL: f64 = 1e-5;
/// Edge sizes of rows and columns (0 = empty).
const SHAPES: [usize; 6] = [0, 1, 63, 64, 65, 576];
const LAYOUTS: [ScaleLayout; 2] = [
    ScaleLayout::PerRow,
    ScaleLayout::PerGroup { group_size: 64 },
];

fn scale(scales: &Scales, cols: usize, r: usize, c: usize) -> f64 {
    let layout = scales.layout();
    let g = match layout {
        ScaleLayout::PerRow => 0,
        ScaleLayout::PerGroup { group_size } => c / group_size,
    };
    f64::from(scales.values()[r * layout.groups_per_row(cols) + g])
}

#[test]
fn split_should_cover_the_nine_levels_exactly_once() {
    let mut seen = std::collections::BTreeSet::new();
    for q in -MAX_LEVEL..=MAX_LEVEL {
        let (t1, t2) = split_level(q).expect("a grid level");
        assert!((-1..=1).contains(&t1) && (-1..=1).contains(&t2), "{q}");
        assert_eq!(3 * t1 + t2, q);
        assert!(seen.insert((t1, t2)), "{q}: split used twice");
    }
    assert_eq!(seen.len(), 9);
    for q in [-128, -5, 5, 127] {
        assert_eq!(split_level(q), None, "{q}");
    }
}

#[test]
fn exact_triple_scale_should_make_three_s_exact_and_stay_within_2_pow_minus_22() {
    let (mut rng, seed) = ternary_testkit::seeded();
    for i in 0..100_000 {
        let s: f32 = if i % 2 == 0 {
            rng.random_range(-1e3..1e3)
        } else {
            f32::from_bits(rng.random_range(0x0080_0000..0x7e00_0000))
        };
        let r = exact_triple_scale(s);
        assert_eq!(
            f64::from(3.0 * r),
            3.0 * f64::from(r),
            "seed {seed}: {s:e} -> {r:e}"
        );
        assert!(
            (f64::from(r) - f64::from(s)).abs() <= f64::from(s).abs() * 2f64.powi(-22),
            "seed {seed}: {s:e} -> {r:e}"
        );
    }
    assert_eq!(exact_triple_scale(0.0), 0.0);
    assert_eq!(exact_triple_scale(f32::from_bits(1)), 0.0);
}

#[test]
fn from_levels_should_round_trip_the_levels_and_dequantize_to_s_times_q_exactly() {
    let (mut rng, seed) = ternary_testkit::seeded();
    for layout in LAYOUTS {
        for rows in SHAPES {
            for cols in SHAPES {
                let (m, levels, scales) =
                    ternary_testkit::random_two_plane(&mut rng, rows, cols, layout);
                let what = format!("seed {seed}, {rows}x{cols}, {layout:?}");
                assert_eq!(m.levels(), levels, "{what}");
                assert_eq!((m.rows(), m.cols()), (rows, cols), "{what}");
                for (k, (&w, &q)) in m.dequantize().iter().zip(&levels).enumerate() {
                    let s = scale(&scales, cols, k / cols, k % cols);
                    assert_eq!(f64::from(w), s * f64::from(q), "{what}, weight {k}");
                }
                let zeros = levels.iter().filter(|&&q| q == 0).count();
                let want = if levels.is_empty() {
                    0.0
                } else {
                    zeros as f64 / levels.len() as f64
                };
                assert!((m.zero_fraction() - want).abs() < 1e-12, "{what}");
            }
        }
    }
}

#[test]
fn gemm_should_match_the_f64_reference_of_the_levels_on_edge_shapes() {
    let (mut rng, seed) = ternary_testkit::seeded();
    for layout in LAYOUTS {
        for rows in SHAPES {
            for cols in SHAPES {
                for n in [0, 1, 3] {
                    let (m, levels, scales) =
                        ternary_testkit::random_two_plane(&mut rng, rows, cols, layout);
                    let x = ternary_testkit::random_f32(&mut rng, n * cols, -4.0, 4.0);
                    let what = format!("seed {seed}, {rows}x{cols}, n {n}, {layout:?}");
                    // y[j, r] = Σ_c s[r, g(c)] · q[r, c] · x[j, c] in f64.
                    let mut y = vec![f32::NAN; n * rows];
                    m.gemm_f32(&x, n, &mut y).expect("shapes fit");
                    for j in 0..n {
                        for r in 0..rows {
                            let (mut want, mut mass) = (0f64, 0f64);
                            for c in 0..cols {
                                let v = scale(&scales, cols, r, c)
                                    * f64::from(levels[r * cols + c])
                                    * f64::from(x[j * cols + c]);
                                want += v;
                                mass += v.abs();
                            }
                            let got = f64::from(y[j * rows + r]);
                            assert!(
                                (got - want).abs() <= F32_TOL * mass + 1e-30,
                                "{what}: y[{j}, {r}] = {got}, want {want}"
                            );
                        }
                    }
                    // Int8: one quantization of x for both planes; the same f32 sums as the
                    // per-plane reference, and close to the f64 product of the quantized x.
                    let a = QuantizedActivations::quantize(&x, n, cols).expect("finite");
                    let mut yq = vec![f32::NAN; n * rows];
                    m.gemm_i8(&a, &mut yq).expect("shapes fit");
                    let hi = reference::gemm_i8(m.high(), &a).expect("shapes fit");
                    let lo = reference::gemm_i8(m.low(), &a).expect("shapes fit");
                    for k in 0..n * rows {
                        assert_eq!(yq[k].to_bits(), (hi[k] + lo[k]).to_bits(), "{what}, {k}");
                        let (j, r) = (k / rows, k % rows);
                        let (mut want, mut mass) = (0f64, 0f64);
                        for c in 0..cols {
                            let v = scale(&scales, cols, r, c)
                                * f64::from(levels[r * cols + c])
                                * f64::from(a.row(j)[c])
                                * f64::from(a.scales()[j]);
                            want += v;
                            mass += v.abs();
                        }
                        assert!(
                            (f64::from(yq[k]) - want).abs() <= F32_TOL * mass + 1e-30,
                            "{what}: int8 y[{j}, {r}] = {}, want {want}",
                            yq[k]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn bad_inputs_should_be_errors() {
    let mut rng = ternary_testkit::rng();
    let layout = ScaleLayout::PerRow;
    let high = ternary_testkit::random_matrix(&mut rng, 4, 64, layout);
    let low = ternary_testkit::random_matrix(&mut rng, 4, 65, layout);
    let e = TwoPlaneMatrix::new(high.clone(), low).unwrap_err();
    assert!(e.to_string().contains("plane 2 is 4x65"), "{e}");
    let grouped =
        ternary_testkit::random_matrix(&mut rng, 4, 64, ScaleLayout::PerGroup { group_size: 32 });
    let e = TwoPlaneMatrix::new(high.clone(), grouped).unwrap_err();
    assert!(e.to_string().contains("scales"), "{e}");

    let one = Scales::per_row(vec![1.0]);
    let e = TwoPlaneMatrix::from_levels(1, 2, &[0, 5], one.clone()).unwrap_err();
    assert!(e.to_string().contains("level 5"), "{e}");
    let e = TwoPlaneMatrix::from_levels(1, 3, &[0, 1], one).unwrap_err();
    assert!(e.to_string().contains("needs 3 levels"), "{e}");
    // 1 + 2⁻²³: its triple needs 25 significant bits.
    let inexact = Scales::per_row(vec![f32::from_bits(0x3f80_0001)]);
    let e = TwoPlaneMatrix::from_levels(1, 1, &[1], inexact).unwrap_err();
    assert!(e.to_string().contains("not exact"), "{e}");

    let m = TwoPlaneMatrix::new(high.clone(), high).expect("same shape");
    let mut y = vec![0f32; 3];
    assert!(m.gemm_f32(&[0.0; 64], 1, &mut y).is_err());
    assert!(m.gemm_f32(&[0.0; 63], 1, &mut [0f32; 4]).is_err());
}
