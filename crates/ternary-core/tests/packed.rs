//! `PackedTernary` (matrices repacked at load for one level's int8 kernel) against the scalar
//! reference product (`reference::gemm_i8`), bit for bit: packed for every available level and
//! multiplied at every available level (so a matrix packed for AVX2 is also checked where it
//! is turned back into planes, and one packed for AVX-512 meets the AVX2 field kernel), on
//! edge shapes, every scale-group size the AVX2 field kernel
//! takes (1, 2, 4, 8, 16 words and one group per row) and some it does not (3 words), token
//! counts on both sides of the field kernel's limit, and row ranges off the row blocks.
//!
//! Inputs are random from the fixed test seed (`ternary_testkit::seed`, printed on failure).

use std::ops::Range;

use rand::RngExt;
use ternary_core::kernels::{self, Level, PackedTernary};
use ternary_core::{ScaleLayout, TernaryMatrix};

const ROWS: [usize; 5] = [0, 1, 7, 64, 65];
const COLS: [usize; 8] = [1, 63, 64, 65, 96, 257, 576, 2560];
/// 1–3 and 15 (the field kernel), 16 and 17 (turned back into planes: panel GEMM).
const TOKENS: [usize; 6] = [1, 2, 3, 15, 16, 17];

fn layouts(cols: usize) -> Vec<ScaleLayout> {
    let mut l = vec![ScaleLayout::PerRow];
    for g in [32, 64, 96, 128, 256, 512] {
        if cols >= g {
            l.push(ScaleLayout::PerGroup { group_size: g });
        }
    }
    l
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn packed_products_should_equal_the_reference_bit_for_bit_at_every_level() {
    let (mut rng, seed) = ternary_testkit::seeded();
    let mut repacked = 0;
    for &rows in &ROWS {
        for &cols in &COLS {
            for layout in layouts(cols) {
                let m: TernaryMatrix = ternary_testkit::random_matrix(&mut rng, rows, cols, layout);
                for pack_level in Level::available() {
                    let p = PackedTernary::new(pack_level, m.clone());
                    repacked += usize::from(p.is_repacked());
                    let what = |k: &str| {
                        format!(
                            "{k}: {rows}x{cols} {layout:?} packed for {pack_level} \
                             (TERNARY_TEST_SEED={seed})"
                        )
                    };
                    assert_eq!(p.to_matrix(), m, "{}", what("to_matrix"));
                    assert_eq!((p.rows(), p.cols()), (rows, cols), "{}", what("shape"));
                    assert_eq!(p.scales(), m.scales(), "{}", what("scales"));
                    // Same memory as the planes.
                    let planes = 4 * (m.plus().len() + m.minus().len() + m.scales().values().len());
                    assert_eq!(p.storage_bytes(), planes, "{}", what("storage"));
                    for &n in &TOKENS {
                        if rows * cols * n > 65 * 2560 * 3 && n > 3 {
                            continue;
                        }
                        let a = ternary_testkit::random_q(&mut rng, n, cols);
                        let want = ternary_core::reference::gemm_i8(&m, &a).unwrap(); // n × rows
                        let range: Range<usize> = if rows > 2 {
                            let s = rng.random_range(0..rows);
                            s..rng.random_range(s..=rows)
                        } else {
                            0..rows
                        };
                        for level in Level::available() {
                            for r in [0..rows, range.clone()] {
                                let mut out = vec![f32::NAN; r.len() * n];
                                kernels::gemm_i8_packed_rows_with(
                                    level,
                                    &p,
                                    &a,
                                    r.clone(),
                                    &mut out,
                                )
                                .unwrap();
                                let mut expect = Vec::with_capacity(r.len() * n);
                                for row in r.clone() {
                                    for j in 0..n {
                                        expect.push(want[j * rows + row]);
                                    }
                                }
                                assert_eq!(
                                    bits(&out),
                                    bits(&expect),
                                    "{} at {level}, n={n}, rows {r:?}",
                                    what("product")
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    if Level::available().contains(&Level::Avx2) {
        assert!(repacked > 0, "nothing was repacked at AVX2 or AVX-512");
    }
}

#[test]
fn packed_products_should_reject_bad_shapes() {
    let (mut rng, _) = ternary_testkit::seeded();
    let m = ternary_testkit::random_matrix(&mut rng, 8, 64, ScaleLayout::PerRow);
    for level in Level::available() {
        let p = PackedTernary::new(level, m.clone());
        let a = ternary_testkit::random_q(&mut rng, 1, 65);
        let mut out = vec![0.0; 8];
        assert!(kernels::gemm_i8_packed_rows_with(level, &p, &a, 0..8, &mut out).is_err());
        let a = ternary_testkit::random_q(&mut rng, 1, 64);
        assert!(kernels::gemm_i8_packed_rows_with(level, &p, &a, 0..9, &mut out).is_err());
        assert!(kernels::gemm_i8_packed_rows_with(level, &p, &a, 0..7, &mut out).is_err());
    }
}

#[test]
fn shared_planes_should_be_repacked_only_once_nothing_else_holds_them() {
    let (mut rng, _) = ternary_testkit::seeded();
    let m = std::sync::Arc::new(ternary_testkit::random_matrix(
        &mut rng,
        9,
        256,
        ScaleLayout::PerGroup { group_size: 64 },
    ));
    for level in Level::available() {
        let held = PackedTernary::shared(std::sync::Arc::clone(&m)).repacked(level);
        assert!(
            !held.is_repacked(),
            "{level}: repacked while the model holds the planes"
        );
        let alone = PackedTernary::shared(std::sync::Arc::new(TernaryMatrix::clone(&m)));
        let alone = alone.repacked(level);
        let fields = matches!(level, Level::Avx2 | Level::Avx512);
        assert_eq!(alone.is_repacked(), fields, "{level}");
        assert_eq!(alone.to_matrix(), *m, "{level}");
    }
}
