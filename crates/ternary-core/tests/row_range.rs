//! The row-range entry points (`gemm_i8_rows_with`, `gemm_f32_rows_with`) against the whole
//! products at the same level: bit for bit, for every available level, on edge shapes, token
//! counts that take each kernel's few-token and blocked paths, and row ranges that start and
//! end anywhere (empty, one row, off the kernels' row blocks).
//!
//! Inputs are random from the fixed test seed (`ternary_testkit::seed`, printed on failure).

use std::ops::Range;

use rand::RngExt;
use rand::rngs::StdRng;
use ternary_core::kernels::{self, Level};
use ternary_core::{QuantizedActivations, ScaleLayout, TernaryMatrix};

/// Row counts and column counts: the brief's edge shapes (and the empty matrix).
const SHAPES: [usize; 6] = [0, 1, 63, 64, 65, 576];
/// Token counts: 1–3 (few-token kernels), 4, 11, 16, 17 (the blocked paths' thresholds).
const TOKENS: [usize; 7] = [1, 2, 3, 4, 11, 17, 33];

/// Row ranges to try in a matrix of `rows` rows: empty, the whole, halves and odd slices.
fn ranges(rng: &mut StdRng, rows: usize) -> Vec<Range<usize>> {
    let mut out = vec![0..0, 0..rows, rows..rows];
    if rows > 1 {
        out.push(0..rows / 2);
        out.push(rows / 2..rows);
        out.push(1..rows);
        let a = rng.random_range(0..rows);
        let b = rng.random_range(a..=rows);
        out.push(a..b);
    }
    out
}

/// `y[j, r]` of the whole product, `n × rows`, read at rows `range` row-major by row.
fn slice_by_row(y: &[f32], rows: usize, n: usize, range: &Range<usize>) -> Vec<u32> {
    let mut out = Vec::with_capacity(range.len() * n);
    for r in range.clone() {
        for j in 0..n {
            out.push(y[j * rows + r].to_bits());
        }
    }
    out
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn layouts(cols: usize) -> Vec<ScaleLayout> {
    let mut l = vec![ScaleLayout::PerRow];
    if cols >= 64 {
        l.push(ScaleLayout::PerGroup { group_size: 64 });
    }
    l
}

#[test]
fn row_range_products_should_match_whole_products_bit_for_bit() {
    let (mut rng, seed) = ternary_testkit::seeded();
    for &rows in &SHAPES {
        for &cols in &SHAPES {
            for layout in layouts(cols) {
                let m: TernaryMatrix = ternary_testkit::random_matrix(&mut rng, rows, cols, layout);
                for &n in &TOKENS {
                    // Large shapes with many tokens add nothing the block tests don't cover.
                    if rows * cols * n > 576 * 576 * 4 && n > 4 {
                        continue;
                    }
                    let a = ternary_testkit::random_q(&mut rng, n, cols);
                    let x = ternary_testkit::random_f32(&mut rng, n * cols, -4.0, 4.0);
                    let rs = ranges(&mut rng, rows);
                    for level in Level::available() {
                        let what = |k: &str, r: &Range<usize>| {
                            format!(
                                "{level} {k} {rows}x{cols} {layout:?} n={n} rows {r:?} \
                                 (TERNARY_TEST_SEED={seed})"
                            )
                        };
                        let mut yi = vec![f32::NAN; n * rows];
                        kernels::gemm_i8_with(level, &m, &a, &mut yi).unwrap();
                        let mut yf = vec![f32::NAN; n * rows];
                        kernels::gemm_f32_with(level, &m, &x, n, &mut yf).unwrap();
                        for r in &rs {
                            let mut out = vec![f32::NAN; r.len() * n];
                            kernels::gemm_i8_rows_with(level, &m, &a, r.clone(), &mut out).unwrap();
                            assert_eq!(
                                bits(&out),
                                slice_by_row(&yi, rows, n, r),
                                "{}",
                                what("gemm_i8", r)
                            );
                            let mut out = vec![f32::NAN; r.len() * n];
                            kernels::gemm_f32_rows_with(level, &m, &x, n, r.clone(), &mut out)
                                .unwrap();
                            assert_eq!(
                                bits(&out),
                                slice_by_row(&yf, rows, n, r),
                                "{}",
                                what("gemm_f32", r)
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn row_ranges_should_tile_a_long_product_exactly() {
    // Rows past the kernels' row blocks (AVX2 f32: 256 KiB of planes; int8 GEMM: 96 rows),
    // split the way a persistent pool of 3 workers splits them.
    let (mut rng, seed) = ternary_testkit::seeded();
    let (rows, cols) = (1000, 1536);
    let m = ternary_testkit::random_matrix(&mut rng, rows, cols, ScaleLayout::PerRow);
    for n in [1, 5] {
        let a = ternary_testkit::random_q(&mut rng, n, cols);
        for level in Level::available() {
            let mut whole = vec![f32::NAN; n * rows];
            kernels::gemm_i8_with(level, &m, &a, &mut whole).unwrap();
            let mut tiled = Vec::new();
            for t in 0..3 {
                let r = rows * t / 3..rows * (t + 1) / 3;
                let mut out = vec![f32::NAN; r.len() * n];
                kernels::gemm_i8_rows_with(level, &m, &a, r, &mut out).unwrap();
                tiled.extend(bits(&out));
            }
            assert_eq!(
                tiled,
                slice_by_row(&whole, rows, n, &(0..rows)),
                "{level} n={n} (TERNARY_TEST_SEED={seed})"
            );
        }
    }
}

#[test]
fn bad_row_ranges_should_be_errors() {
    let mut rng = ternary_testkit::rng();
    let m = ternary_testkit::random_matrix(&mut rng, 10, 64, ScaleLayout::PerRow);
    let a = QuantizedActivations::quantize(&[1.0; 64], 1, 64).unwrap();
    let x = vec![1.0f32; 64];
    for level in Level::available() {
        let mut out = vec![0f32; 4];
        #[allow(clippy::reversed_empty_ranges)]
        let bad: [Range<usize>; 3] = [8..12, 11..11, 5..3];
        for r in bad {
            let mut o = vec![0f32; r.len()];
            assert!(kernels::gemm_i8_rows_with(level, &m, &a, r.clone(), &mut o).is_err());
            assert!(kernels::gemm_f32_rows_with(level, &m, &x, 1, r, &mut o).is_err());
        }
        // Output of the wrong length; activations of the wrong width.
        assert!(kernels::gemm_i8_rows_with(level, &m, &a, 0..3, &mut out).is_err());
        assert!(kernels::gemm_f32_rows_with(level, &m, &x, 1, 0..3, &mut out).is_err());
        assert!(kernels::gemm_f32_rows_with(level, &m, &x[..63], 1, 0..4, &mut out).is_err());
        let narrow = QuantizedActivations::quantize(&[1.0; 32], 1, 32).unwrap();
        assert!(kernels::gemm_i8_rows_with(level, &m, &narrow, 0..4, &mut out).is_err());
    }
}

#[test]
fn dense_rows_should_match_the_f64_reference() {
    // |Δ| ≤ 1e-5 · Σ|w·x| per output (f32 sums of up to 1536 products in any order), for f32
    // weights and for f16 weights; an f16 matrix gives exactly the sums of the f32 matrix of
    // its (widened) values at the same level.
    let (mut rng, seed) = ternary_testkit::seeded();
    for &(rows, cols) in &[(1, 1), (5, 7), (63, 64), (65, 576), (9, 1536), (3, 23)] {
        let w = ternary_testkit::random_f32(&mut rng, rows * cols, -2.0, 2.0);
        let w16: Vec<half::f16> = w.iter().map(|&v| half::f16::from_f32(v)).collect();
        let w16f: Vec<f32> = w16.iter().map(|v| v.to_f32()).collect();
        for &n in &[1, 2, 3, 4, 7, 15, 16, 33, 65, 130] {
            let x = ternary_testkit::random_f32(&mut rng, n * cols, -2.0, 2.0);
            for r in ranges(&mut rng, rows) {
                for level in Level::available() {
                    let mut out = vec![f32::NAN; r.len() * n];
                    kernels::dense_rows_with(level, &w, cols, &x, n, r.clone(), &mut out).unwrap();
                    let mut out16 = vec![f32::NAN; r.len() * n];
                    kernels::dense_rows_with(level, &w16, cols, &x, n, r.clone(), &mut out16)
                        .unwrap();
                    let mut out16f = vec![f32::NAN; r.len() * n];
                    kernels::dense_rows_with(level, &w16f, cols, &x, n, r.clone(), &mut out16f)
                        .unwrap();
                    assert_eq!(
                        out16.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        out16f.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                        "{level} {rows}x{cols} n={n} rows {r:?}: f16 weights vs their f32 values \
                         (TERNARY_TEST_SEED={seed})"
                    );
                    for (wv, got_all) in [(&w, &out), (&w16f, &out16)] {
                        for (i, row) in r.clone().enumerate() {
                            for j in 0..n {
                                let (want, mass) = (0..cols).fold((0f64, 0f64), |(s, m), c| {
                                    let p =
                                        f64::from(wv[row * cols + c]) * f64::from(x[j * cols + c]);
                                    (s + p, m + p.abs())
                                });
                                let got = f64::from(got_all[i * n + j]);
                                assert!(
                                    (got - want).abs() <= 1e-5 * mass + 1e-30,
                                    "{level} {rows}x{cols} n={n} rows {r:?} [{row}, {j}]: {got} \
                                     vs {want} (TERNARY_TEST_SEED={seed})"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    let w = vec![0f32; 12];
    let mut out = vec![0f32; 2];
    assert!(kernels::dense_rows_with(Level::Scalar, &w, 5, &[0.0; 5], 1, 0..2, &mut out).is_err());
    assert!(kernels::dense_rows_with(Level::Scalar, &w, 4, &[0.0; 4], 1, 2..4, &mut out).is_err());
    assert!(kernels::dense_rows_with(Level::Scalar, &w, 4, &[0.0; 3], 1, 0..2, &mut out).is_err());
}
