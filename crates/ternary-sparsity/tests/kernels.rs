//! Every format × level × strategy against the scalar oracles of `ternary_core::reference`.
//!
//! - int8: bit-for-bit equal to `reference::gemm_i8`.
//! - `f32`: `|y − y_ref| ≤ 1e-5 · Σ_c |s · t · x|` per output against the `f64`
//!   `reference::gemm_f32` (see `common::F32_TOL`).
//!
//! Outputs are filled with NaN before every call. Seeds are printed; replay with
//! `TERNARY_TEST_SEED=<seed>`.

mod common;

use common::*;
use rand::RngExt;
use ternary_core::kernels::Level;
use ternary_core::{QuantizedActivations, ScaleLayout, TernaryError, TernaryMatrix, reference};
use ternary_sparsity::{
    BitmapMatrix, IndexLists, KernelConfig, PackedChunks, TernaryGemm, WalkStrategy,
};

const STRATEGIES: [WalkStrategy; 4] = [
    WalkStrategy::Auto,
    WalkStrategy::PerToken,
    WalkStrategy::WalkPanels,
    WalkStrategy::ChunkPanels,
];

fn configs() -> Vec<KernelConfig> {
    let mut out = Vec::new();
    for level in Level::available() {
        for s in STRATEGIES {
            out.push(KernelConfig::new(level, s));
        }
    }
    out
}

/// Inputs and expected outputs of one matrix.
struct Case {
    x: Vec<f32>,
    n: usize,
    a: QuantizedActivations,
    f32_want: F32Expect,
    i8_want: Vec<f32>,
}

fn check_format<F: TernaryGemm>(name: &str, f: &F, case: &Case, what: &str) {
    let (rows, n) = (f.out_features(), case.n);
    for cfg in configs() {
        let mut y = vec![f32::NAN; n * rows];
        f.gemm_f32_with(cfg, &case.x, n, &mut y).unwrap();
        case.f32_want
            .check(&y, &format!("{name} f32 {cfg:?} {what}"));
        let mut y = vec![f32::NAN; n * rows];
        f.gemm_i8_with(cfg, &case.a, &mut y).unwrap();
        check_exact(&y, &case.i8_want, &format!("{name} i8 {cfg:?} {what}"));
    }
}

/// Checks all three sparse formats (and the dense matrix through the same trait) on `m`.
fn check_all(m: &TernaryMatrix, n: usize, rng: &mut rand::rngs::StdRng, what: &str) {
    let x = random_f32(rng, n * m.cols());
    let a = random_q(rng, n, m.cols());
    let case = Case {
        f32_want: F32Expect::new(m, &x, n),
        i8_want: reference::gemm_i8(m, &a).unwrap(),
        x,
        n,
        a,
    };

    let bm = BitmapMatrix::new(m.clone());
    bm.check_consistency().unwrap();
    let pc = PackedChunks::from_matrix(m).unwrap();
    assert_eq!(&pc.to_matrix().unwrap(), m, "packed round trip {what}");
    let il = IndexLists::from_matrix(m).unwrap();
    assert_eq!(&il.to_matrix().unwrap(), m, "index lists round trip {what}");

    check_format("bitmap", &bm, &case, what);
    check_format("packed", &pc, &case, what);
    check_format("lists", &il, &case, what);
    check_format("dense", m, &case, what);
}

#[test]
fn skip_kernels_should_match_reference_on_edge_shapes_and_densities() {
    let (mut rng, seed) = rng();
    let ns = [1, 3, 8];
    let mut i = 0;
    for &cols in &EDGE_COLS {
        for &rows in &EDGE_ROWS {
            for &d in &DENSITIES {
                for structure in [Structure::Unstructured, Structure::Chunks] {
                    let layout = LAYOUTS[i % LAYOUTS.len()];
                    let n = ns[(i / LAYOUTS.len() + i) % ns.len()];
                    i += 1;
                    let m = random_matrix(&mut rng, rows, cols, d, structure, layout);
                    let what = format!(
                        "{rows}x{cols} d={d} {structure:?} {layout:?} n={n} (TERNARY_TEST_SEED={seed})"
                    );
                    check_all(&m, n, &mut rng, &what);
                }
            }
        }
    }
}

#[test]
fn panel_kernels_should_match_reference_for_every_panel_width() {
    let (mut rng, seed) = rng();
    // n covers 1..4 vectors per panel, partial panels and several panel groups.
    let ns = [1, 3, 8, 16, 17, 33, 50, 64, 65, 130];
    let shapes = [(3, 65), (64, 576), (5, 4100)];
    for &n in &ns {
        for &(rows, cols) in &shapes {
            for d in [0.002, 0.05, 0.5] {
                for structure in [Structure::Unstructured, Structure::Chunks] {
                    let layout = LAYOUTS[rng.random_range(0..LAYOUTS.len())];
                    let m = random_matrix(&mut rng, rows, cols, d, structure, layout);
                    let what = format!(
                        "{rows}x{cols} d={d} {structure:?} {layout:?} n={n} (TERNARY_TEST_SEED={seed})"
                    );
                    check_all(&m, n, &mut rng, &what);
                }
            }
        }
    }
}

#[test]
fn panel_parallel_kernels_should_match_reference_for_many_tokens() {
    let (mut rng, seed) = rng();
    // From 256 tokens on, the panel kernels split the work by 64-token panels; 300 leaves a
    // partial last panel.
    let four = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    for &(rows, cols, n) in &[(5, 100, 256), (33, 65, 300)] {
        for d in [0.05, 0.6] {
            for structure in [Structure::Unstructured, Structure::Chunks] {
                let layout = LAYOUTS[rng.random_range(0..LAYOUTS.len())];
                let m = random_matrix(&mut rng, rows, cols, d, structure, layout);
                let what = format!(
                    "{rows}x{cols} d={d} {structure:?} {layout:?} n={n} (TERNARY_TEST_SEED={seed})"
                );
                // 4 threads whatever the host has, so the panels are split between threads.
                four.install(|| check_all(&m, n, &mut rng, &what));
            }
        }
    }
}

#[test]
fn group_sizes_larger_than_a_mask_word_work() {
    let (mut rng, seed) = rng();
    // Groups of 2560 columns span more than one u64 mask word; 128-column groups several
    // chunks.
    for layout in [
        ScaleLayout::PerGroup { group_size: 2560 },
        ScaleLayout::PerGroup { group_size: 128 },
    ] {
        for structure in [Structure::Unstructured, Structure::Chunks] {
            let m = random_matrix(&mut rng, 7, 5000, 0.03, structure, layout);
            check_all(
                &m,
                20,
                &mut rng,
                &format!("{layout:?} (TERNARY_TEST_SEED={seed})"),
            );
        }
    }
}

#[test]
fn empty_shapes_work() {
    let (mut rng, _) = rng();
    for (rows, cols, n) in [(0, 64, 3), (3, 0, 2), (4, 40, 0)] {
        let m = random_matrix(
            &mut rng,
            rows,
            cols,
            0.5,
            Structure::Unstructured,
            ScaleLayout::PerRow,
        );
        check_all(&m, n, &mut rng, &format!("{rows}x{cols} n={n}"));
    }
}

/// A format's `gemm_f32_with`.
type GemmFn<'a> = dyn Fn(KernelConfig, &[f32], usize, &mut [f32]) -> ternary_core::Result<()> + 'a;

#[test]
fn bad_shapes_and_levels_are_errors() {
    let (mut rng, _) = rng();
    let m = random_matrix(
        &mut rng,
        4,
        40,
        0.3,
        Structure::Unstructured,
        ScaleLayout::PerRow,
    );
    let bm = BitmapMatrix::new(m.clone());
    let pc = PackedChunks::from_matrix(&m).unwrap();
    let il = IndexLists::from_matrix(&m).unwrap();
    let formats: [&GemmFn<'_>; 3] = [
        &|c, x, n, y| bm.gemm_f32_with(c, x, n, y),
        &|c, x, n, y| pc.gemm_f32_with(c, x, n, y),
        &|c, x, n, y| il.gemm_f32_with(c, x, n, y),
    ];
    let cfg = KernelConfig::auto();
    for f in formats {
        assert!(matches!(
            f(cfg, &[0.0; 79], 2, &mut [0.0; 8]),
            Err(TernaryError::Shape(_))
        ));
        assert!(matches!(
            f(cfg, &[0.0; 80], 2, &mut [0.0; 7]),
            Err(TernaryError::Shape(_))
        ));
        f(cfg, &[0.0; 80], 2, &mut [0.0; 8]).unwrap();
        for level in [Level::Avx2, Level::Avx512, Level::Neon] {
            if !level.is_available() {
                let e = f(
                    KernelConfig::new(level, WalkStrategy::Auto),
                    &[0.0; 80],
                    2,
                    &mut [0.0; 8],
                );
                assert!(matches!(e, Err(TernaryError::Config(_))), "{level}: {e:?}");
            }
        }
    }
    let a = random_q(&mut rng, 2, 41);
    let mut y = [0.0; 8];
    assert!(matches!(
        bm.gemm_i8(&a, &mut y),
        Err(TernaryError::Shape(_))
    ));
    assert!(matches!(
        pc.gemm_i8(&a, &mut y),
        Err(TernaryError::Shape(_))
    ));
    assert!(matches!(
        il.gemm_i8(&a, &mut y),
        Err(TernaryError::Shape(_))
    ));
    let a = random_q(&mut rng, 2, 40);
    assert!(matches!(
        il.gemm_i8(&a, &mut y[..7]),
        Err(TernaryError::Shape(_))
    ));
}

#[test]
fn gemv_should_equal_gemm_with_one_token() {
    let (mut rng, _) = rng();
    let m = random_matrix(
        &mut rng,
        33,
        300,
        0.05,
        Structure::Unstructured,
        ScaleLayout::PerRow,
    );
    let x = random_f32(&mut rng, 300);
    let il = IndexLists::from_matrix(&m).unwrap();
    let (mut a, mut b) = (vec![f32::NAN; 33], vec![f32::NAN; 33]);
    il.gemv_f32(&x, &mut a).unwrap();
    il.gemm_f32(&x, 1, &mut b).unwrap();
    check_exact(&a, &b, "gemv vs gemm");
}

#[test]
fn int8_sums_far_past_the_i16_range_stay_exact() {
    let (mut rng, seed) = rng();
    // All weights +1 (then all −1) against activations of ±127: every partial sum of a row
    // leaves the i16 range many times over.
    let (rows, cols, n) = (3, 4100, 70);
    for t in [1i8, -1] {
        for layout in [
            ScaleLayout::PerRow,
            ScaleLayout::PerGroup { group_size: 1024 },
        ] {
            let trits = vec![t; rows * cols];
            let scales = random_scales(&mut rng, rows, cols, layout);
            let m = TernaryMatrix::from_trits(rows, cols, &trits, scales).unwrap();
            let q: Vec<i8> = (0..n * cols)
                .map(|i| if (i / cols) % 3 == 0 { -127 } else { 127 })
                .collect();
            let a = QuantizedActivations::from_parts(n, cols, &q, vec![0.01; n]).unwrap();
            let want = reference::gemm_i8(&m, &a).unwrap();
            let bm = BitmapMatrix::new(m.clone());
            let pc = PackedChunks::from_matrix(&m).unwrap();
            let il = IndexLists::from_matrix(&m).unwrap();
            let formats: [(&str, &dyn TernaryGemm); 3] =
                [("bitmap", &bm), ("packed", &pc), ("lists", &il)];
            for (name, f) in formats {
                for cfg in configs() {
                    let mut y = vec![f32::NAN; n * rows];
                    f.gemm_i8_with(cfg, &a, &mut y).unwrap();
                    check_exact(
                        &y,
                        &want,
                        &format!("{name} {cfg:?} t={t} {layout:?} (TERNARY_TEST_SEED={seed})"),
                    );
                }
            }
        }
    }
}
