//! Every available kernel level against the scalar oracles in `ternary_core::reference`.
//!
//! Inputs are random from a fixed seed (`ternary_testkit::seed`); the seed is printed (and
//! shown on failure), and `TERNARY_TEST_SEED=<seed>` runs another.
//!
//! Tolerances:
//! - `gemm_f32`: `|y − y_ref| ≤ F32_TOL · Σ_c |s[r, g(c)] · t[r, c] · x[j, c]|` per output, where
//!   `y_ref` is the `f64` reference. `F32_TOL = 1e-5` (≈ 84 ulp at 1.0) covers `f32`
//!   accumulation over up to 1536 columns in any summation order.
//! - `gemm_i8`, `ternary_dot`, `binary_dot`: exact (the `f32` bits of `gemm_i8` included).

use rand::RngExt;
use rand::rngs::StdRng;
use ternary_core::kernels::{self, Level};
use ternary_core::{
    QuantizedActivations, ScaleLayout, Scales, TernaryError, TernaryMatrix, reference,
};

const F32_TOL: f64 = 1e-5;
/// The edge sizes every kernel must handle, for rows and for columns.
use ternary_testkit::EDGE;
const LAYOUTS: [ScaleLayout; 5] = [
    ScaleLayout::PerRow,
    ScaleLayout::PerGroup { group_size: 32 },
    ScaleLayout::PerGroup { group_size: 64 },
    ScaleLayout::PerGroup { group_size: 96 },
    ScaleLayout::PerGroup { group_size: 128 },
];

fn rng() -> (StdRng, u64) {
    ternary_testkit::seeded()
}

fn random_matrix(rng: &mut StdRng, rows: usize, cols: usize, layout: ScaleLayout) -> TernaryMatrix {
    ternary_testkit::random_matrix(rng, rows, cols, layout)
}

fn random_f32(rng: &mut StdRng, len: usize) -> Vec<f32> {
    ternary_testkit::random_f32(rng, len, -4.0, 4.0)
}

use ternary_core::reference::abs_mass;

fn check_f32(level: Level, m: &TernaryMatrix, x: &[f32], n: usize, seed: u64) {
    let what = format!(
        "{level} gemm_f32 {}x{} {:?} n={n} (TERNARY_TEST_SEED={seed})",
        m.rows(),
        m.cols(),
        m.scales().layout()
    );
    let expected = reference::gemm_f32(m, x, n).unwrap();
    let mass = abs_mass(m, x, n);
    let mut y = vec![f32::NAN; n * m.rows()];
    kernels::gemm_f32_with(level, m, x, n, &mut y).unwrap();
    for (i, (&got, (&want, &mass))) in y.iter().zip(expected.iter().zip(&mass)).enumerate() {
        let err = (f64::from(got) - want).abs();
        assert!(
            err <= F32_TOL * mass,
            "{what}: output {i} (token {}, row {}) = {got}, reference {want}, error {err:e} > {F32_TOL:e} * {mass}",
            i / m.rows().max(1),
            i % m.rows().max(1)
        );
    }
}

fn check_i8(level: Level, m: &TernaryMatrix, a: &QuantizedActivations, seed: u64) {
    let expected = reference::gemm_i8(m, a).unwrap();
    let mut y = vec![f32::NAN; a.n() * m.rows()];
    kernels::gemm_i8_with(level, m, a, &mut y).unwrap();
    for (i, (&got, &want)) in y.iter().zip(&expected).enumerate() {
        assert_eq!(
            got.to_bits(),
            want.to_bits(),
            "{level} gemm_i8 {}x{} {:?} n={}: output {i} = {got}, reference {want} (TERNARY_TEST_SEED={seed})",
            m.rows(),
            m.cols(),
            m.scales().layout(),
            a.n()
        );
    }
}

/// Shapes covering every edge size as rows and as columns, plus empty ones.
fn edge_shapes() -> Vec<(usize, usize)> {
    let mut shapes: Vec<(usize, usize)> = EDGE.iter().map(|&r| (r, 65)).collect();
    shapes.extend(EDGE.iter().map(|&c| (33, c)));
    // A diagonal-ish sweep so each size also meets other sizes.
    shapes.extend(EDGE.iter().zip(EDGE.iter().rev()).map(|(&r, &c)| (r, c)));
    shapes.extend([(0, 0), (0, 64), (7, 0), (1536, 576), (576, 1536)]);
    shapes
}

#[test]
fn detect_is_available_and_scalar_comes_first() {
    let available = Level::available();
    assert_eq!(available.first(), Some(&Level::Scalar));
    assert!(available.contains(&Level::detect()), "{available:?}");
    assert_eq!(Level::detect(), Level::detect());
    for level in available {
        assert!(level.is_available());
        assert!(!level.name().is_empty());
    }
}

#[test]
fn gemm_f32_should_match_reference_on_edge_shapes() {
    let (mut rng, seed) = rng();
    for (i, (rows, cols)) in edge_shapes().into_iter().enumerate() {
        let layout = LAYOUTS[i % LAYOUTS.len()];
        let m = random_matrix(&mut rng, rows, cols, layout);
        // 20 tokens take the blocked GEMM path of the fast levels.
        for n in [1, 3, 8, 20] {
            if rows * cols * n > 1536 * 576 * 3 {
                continue;
            }
            let x = random_f32(&mut rng, n * cols);
            for &level in &Level::available() {
                check_f32(level, &m, &x, n, seed);
            }
        }
    }
}

#[test]
fn gemm_f32_should_match_reference_for_every_scale_layout() {
    let (mut rng, seed) = rng();
    for layout in LAYOUTS {
        for (rows, cols, n) in [(37, 576, 1), (20, 1536, 3), (65, 200, 8), (9, 1000, 24)] {
            let m = random_matrix(&mut rng, rows, cols, layout);
            let x = random_f32(&mut rng, n * cols);
            for &level in &Level::available() {
                check_f32(level, &m, &x, n, seed);
            }
        }
    }
}

#[test]
fn gemm_i8_should_match_reference_bit_for_bit_on_edge_shapes() {
    let (mut rng, seed) = rng();
    for (i, (rows, cols)) in edge_shapes().into_iter().enumerate() {
        let layout = LAYOUTS[(i + 2) % LAYOUTS.len()];
        let m = random_matrix(&mut rng, rows, cols, layout);
        // 20 tokens take the blocked GEMM path of the fast levels.
        for n in [1, 3, 8, 20] {
            if rows * cols * n > 1536 * 576 * 3 {
                continue;
            }
            let a = ternary_testkit::random_q(&mut rng, n, cols);
            for &level in &Level::available() {
                check_i8(level, &m, &a, seed);
            }
        }
    }
}

#[test]
fn gemm_i8_should_match_reference_for_every_scale_layout_and_batch() {
    let (mut rng, seed) = rng();
    for layout in LAYOUTS {
        // Batches of 11..=16 and past 16 and 32 exercise the blocked GEMM paths and their tails.
        for (rows, cols, n) in [
            (37, 576, 1),
            (20, 1536, 3),
            (65, 200, 8),
            (41, 700, 13),
            (29, 1000, 17),
            (50, 333, 70),
        ] {
            let m = random_matrix(&mut rng, rows, cols, layout);
            let a = ternary_testkit::random_q(&mut rng, n, cols);
            for &level in &Level::available() {
                check_i8(level, &m, &a, seed);
            }
        }
    }
}

#[test]
fn gemm_i8_should_match_reference_around_the_block_sizes() {
    // Tokens 1..=10 cross the few-token kernels' pairs and the GEMM's 3-token tiles (AVX2:
    // from 4 tokens on for scale groups under 8 words, from 16 for larger ones); rows cross
    // 3-row tiles and 96-row blocks; columns cross the 64-word (2048-column) chunks of the AVX2
    // GEMM and the 128-word i16 runs of its GEMV, with groups splitting into several chunks
    // (4096, 2080) or none (32, 96).
    let (mut rng, seed) = rng();
    let layouts = [
        ScaleLayout::PerRow,
        ScaleLayout::PerGroup { group_size: 32 },
        ScaleLayout::PerGroup { group_size: 96 },
        ScaleLayout::PerGroup { group_size: 2080 },
        ScaleLayout::PerGroup { group_size: 4096 },
    ];
    for (i, (rows, cols)) in [(97, 2048), (95, 2049), (193, 4160), (4, 4097), (98, 6200)]
        .into_iter()
        .enumerate()
    {
        for (k, layout) in layouts.into_iter().enumerate() {
            let m = random_matrix(&mut rng, rows, cols, layout);
            for n in 1..=10 {
                if (n + i + k) % 3 != 0 && n > 4 {
                    continue;
                }
                let a = ternary_testkit::random_q(&mut rng, n, cols);
                for &level in &Level::available() {
                    check_i8(level, &m, &a, seed);
                }
            }
        }
    }
}

#[test]
fn gemm_i8_should_match_reference_around_the_field_blocks() {
    // AVX2's few-token "field" kernel (scale groups of at least 8 words, up to 15 tokens)
    // reads 8-word blocks: groups of 8, 9, 10, 16, 65 words end on, one past and well past a
    // block; rows 1, 2, 3, 5 and columns just off the block sizes; 1..=17 tokens cross its
    // token pairs and the hand-over to the GEMM at 16.
    let (mut rng, seed) = rng();
    let layouts = [
        ScaleLayout::PerRow,
        ScaleLayout::PerGroup { group_size: 256 },
        ScaleLayout::PerGroup { group_size: 288 },
        ScaleLayout::PerGroup { group_size: 320 },
        ScaleLayout::PerGroup { group_size: 512 },
        ScaleLayout::PerGroup { group_size: 2080 },
    ];
    for (i, (rows, cols)) in [(1, 255), (2, 256), (3, 257), (5, 511), (3, 2100), (2, 4160)]
        .into_iter()
        .enumerate()
    {
        for (k, layout) in layouts.into_iter().enumerate() {
            let m = random_matrix(&mut rng, rows, cols, layout);
            for n in 1..=17 {
                if (n + i + k) % 4 != 0 && n > 3 {
                    continue;
                }
                let a = ternary_testkit::random_q(&mut rng, n, cols);
                for &level in &Level::available() {
                    check_i8(level, &m, &a, seed);
                }
            }
        }
    }
}

#[test]
fn gemm_i8_should_match_reference_around_the_small_field_blocks() {
    // AVX2's few-token kernel for scale groups of 1, 2, 4 or 8 words (up to 15 tokens) reads the
    // row in 8-word blocks and reduces eight groups at a time: columns end inside a word, on a
    // word, inside and on a block and a batch of eight groups (576 = 18 words: 9 groups of 64,
    // a partial last block); one token runs eight rows per tile (rows 1..5, 8, 9, 17, 23 give
    // full and partial tiles); per-row scales over 1, 2 and 4 words; 1..=17 tokens cross the
    // 4/2/1 token tiles; longer batches (below) cross the token blocks the kernel runs in
    // (a block holds 48 KiB of codes: 8 tokens of 4160 columns, 80 of 576) and, for groups of
    // 8 words, the hand-over to the GEMM.
    let (mut rng, seed) = rng();
    let layouts = [
        ScaleLayout::PerRow,
        ScaleLayout::PerGroup { group_size: 32 },
        ScaleLayout::PerGroup { group_size: 64 },
        ScaleLayout::PerGroup { group_size: 128 },
        ScaleLayout::PerGroup { group_size: 256 },
    ];
    let shapes = [
        (1, 1),
        (2, 33),
        (3, 64),
        (5, 65),
        (1, 128),
        (4, 255),
        (2, 257),
        (3, 576),
        (2, 1023),
        (3, 1024),
        (1, 2049),
        (2, 4160),
        (8, 64),
        (9, 576),
        (17, 1024),
        (23, 2049),
    ];
    for (i, (rows, cols)) in shapes.into_iter().enumerate() {
        for (k, layout) in layouts.into_iter().enumerate() {
            let m = random_matrix(&mut rng, rows, cols, layout);
            for n in 1..=17 {
                if (n + i + k) % 3 != 0 && n > 5 {
                    continue;
                }
                let a = ternary_testkit::random_q(&mut rng, n, cols);
                for &level in &Level::available() {
                    check_i8(level, &m, &a, seed);
                }
            }
        }
    }
    for (rows, cols) in [(3, 576), (2, 4160), (5, 1023)] {
        for layout in [
            ScaleLayout::PerGroup { group_size: 64 },
            ScaleLayout::PerGroup { group_size: 256 },
        ] {
            let m = random_matrix(&mut rng, rows, cols, layout);
            for n in [31, 81, 130] {
                let a = ternary_testkit::random_q(&mut rng, n, cols);
                for &level in &Level::available() {
                    check_i8(level, &m, &a, seed);
                }
            }
        }
    }
}

#[test]
fn gemm_i8_of_quantized_floats_matches_reference() {
    let (mut rng, seed) = rng();
    let m = random_matrix(&mut rng, 96, 4160, ScaleLayout::PerGroup { group_size: 64 });
    let x = random_f32(&mut rng, 5 * 4160);
    let a = QuantizedActivations::quantize(&x, 5, 4160).unwrap();
    for &level in &Level::available() {
        check_i8(level, &m, &a, seed);
    }
}

#[test]
fn one_thread_pool_gives_identical_results() {
    let (mut rng, seed) = rng();
    let m = random_matrix(&mut rng, 640, 1536, ScaleLayout::PerRow);
    let a = ternary_testkit::random_q(&mut rng, 40, 1536);
    let x = random_f32(&mut rng, 3 * 1536);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    // The other side runs on 4 threads whatever this host's core count, so the split work is
    // compared with the serial one even on a 1-CPU machine.
    let four = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    for &level in &Level::available() {
        let mut many = vec![f32::NAN; 40 * 640];
        four.install(|| kernels::gemm_i8_with(level, &m, &a, &mut many))
            .unwrap();
        let mut one = vec![f32::NAN; 40 * 640];
        pool.install(|| kernels::gemm_i8_with(level, &m, &a, &mut one))
            .unwrap();
        assert!(
            many.iter()
                .zip(&one)
                .all(|(p, q)| p.to_bits() == q.to_bits()),
            "{level} gemm_i8 differs under a 1-thread pool (TERNARY_TEST_SEED={seed})"
        );
        pool.install(|| check_f32(level, &m, &x, 3, seed));
    }
}

#[test]
fn random_inputs_never_give_nan_or_inf() {
    let (mut rng, seed) = rng();
    for &level in &Level::available() {
        for case in 0..1000 {
            let rows = rng.random_range(0..24);
            let cols = rng.random_range(0..200);
            // Up to 20 tokens, so the blocked GEMM kernels are among those checked.
            let n = rng.random_range(1..21);
            let layout = LAYOUTS[case % LAYOUTS.len()];
            let m = random_matrix(&mut rng, rows, cols, layout);
            let x = random_f32(&mut rng, n * cols);
            let mut y = vec![f32::NAN; n * rows];
            kernels::gemm_f32_with(level, &m, &x, n, &mut y).unwrap();
            assert!(
                y.iter().all(|v| v.is_finite()),
                "{level} gemm_f32 {rows}x{cols} n={n}: {y:?} (TERNARY_TEST_SEED={seed})"
            );
            let a = QuantizedActivations::quantize(&x, n, cols).unwrap();
            let mut y = vec![f32::NAN; n * rows];
            kernels::gemm_i8_with(level, &m, &a, &mut y).unwrap();
            assert!(
                y.iter().all(|v| v.is_finite()),
                "{level} gemm_i8 {rows}x{cols} n={n}: {y:?} (TERNARY_TEST_SEED={seed})"
            );
        }
    }
}

/// Random ternary planes; with `valid == false` some positions have both bits set.
fn random_planes(rng: &mut StdRng, words: usize, valid: bool) -> (Vec<u32>, Vec<u32>) {
    let plus: Vec<u32> = (0..words).map(|_| rng.random()).collect();
    let mut minus: Vec<u32> = (0..words).map(|_| rng.random()).collect();
    if valid {
        for (m, p) in minus.iter_mut().zip(&plus) {
            *m &= !p;
        }
    }
    (plus, minus)
}

#[test]
fn ternary_dot_should_match_reference_exactly() {
    let (mut rng, seed) = rng();
    let lengths = [0, 1, 2, 3, 7, 8, 15, 16, 17, 31, 32, 33, 48, 100, 1000];
    for &level in &Level::available() {
        for &len in &lengths {
            for valid in [true, false] {
                let (ap, am) = random_planes(&mut rng, len, valid);
                let (bp, bm) = random_planes(&mut rng, len, true);
                let want = reference::ternary_dot(&ap, &am, &bp, &bm);
                let got = kernels::ternary_dot_with(level, &ap, &am, &bp, &bm).unwrap();
                assert_eq!(
                    got, want,
                    "{level} ternary_dot len={len} valid={valid} (TERNARY_TEST_SEED={seed})"
                );
            }
        }
        // All +1 against all +1: the dot is the number of positions.
        let ones = vec![u32::MAX; 33];
        let zeros = vec![0u32; 33];
        assert_eq!(
            kernels::ternary_dot_with(level, &ones, &zeros, &ones, &zeros).unwrap(),
            33 * 32
        );
        assert_eq!(
            kernels::ternary_dot_with(level, &ones, &zeros, &zeros, &ones).unwrap(),
            -33 * 32
        );
    }
}

#[test]
fn binary_dot_should_match_reference_exactly() {
    let (mut rng, seed) = rng();
    for &level in &Level::available() {
        for len in [0usize, 1, 2, 3, 15, 16, 17, 33, 100, 1000] {
            let a: Vec<u32> = (0..len).map(|_| rng.random()).collect();
            let b: Vec<u32> = (0..len).map(|_| rng.random()).collect();
            let max_bits = len * 32;
            for bits in [
                0,
                max_bits,
                max_bits.saturating_sub(1),
                max_bits / 2,
                rng.random_range(0..=max_bits),
            ] {
                let want = reference::binary_dot(&a, &b, bits);
                let got = kernels::binary_dot_with(level, &a, &b, bits).unwrap();
                assert_eq!(
                    got, want,
                    "{level} binary_dot len={len} bits={bits} (TERNARY_TEST_SEED={seed})"
                );
            }
        }
        let a = vec![0x0F0F_0F0Fu32; 4];
        assert_eq!(kernels::binary_dot_with(level, &a, &a, 100).unwrap(), 100);
    }
}

#[test]
fn bad_shapes_are_errors_not_panics() {
    let m = TernaryMatrix::zeros(4, 40, Scales::per_row(vec![1.0; 4])).unwrap();
    let a = QuantizedActivations::quantize(&[0.5; 2 * 40], 2, 40).unwrap();
    let a_wrong = QuantizedActivations::quantize(&[0.5; 2 * 41], 2, 41).unwrap();
    for &level in &Level::available() {
        let shape = |r: ternary_core::Result<()>| matches!(r, Err(TernaryError::Shape(_)));
        assert!(shape(kernels::gemm_f32_with(
            level,
            &m,
            &[0.0; 79],
            2,
            &mut [0.0; 8]
        )));
        assert!(shape(kernels::gemm_f32_with(
            level,
            &m,
            &[0.0; 80],
            2,
            &mut [0.0; 7]
        )));
        assert!(shape(kernels::gemm_f32_with(
            level,
            &m,
            &[0.0; 80],
            usize::MAX,
            &mut [0.0; 8]
        )));
        assert!(shape(kernels::gemm_i8_with(level, &m, &a, &mut [0.0; 7])));
        assert!(shape(kernels::gemm_i8_with(
            level,
            &m,
            &a_wrong,
            &mut [0.0; 8]
        )));
        let dot = kernels::ternary_dot_with(level, &[0; 3], &[0; 3], &[0; 3], &[0; 2]);
        assert!(matches!(dot, Err(TernaryError::Shape(_))));
        assert!(matches!(
            kernels::binary_dot_with(level, &[0; 2], &[0; 3], 10),
            Err(TernaryError::Shape(_))
        ));
        assert!(matches!(
            kernels::binary_dot_with(level, &[0; 2], &[0; 2], 65),
            Err(TernaryError::Shape(_))
        ));
    }
    assert!(matches!(
        kernels::gemv_f32(&m, &[0.0; 39], &mut [0.0; 4]),
        Err(TernaryError::Shape(_))
    ));
}

#[test]
fn unavailable_levels_are_config_errors() {
    let m = TernaryMatrix::zeros(2, 64, Scales::per_row(vec![1.0; 2])).unwrap();
    let a = QuantizedActivations::quantize(&[0.5; 64], 1, 64).unwrap();
    for level in [Level::Scalar, Level::Avx2, Level::Avx512, Level::Neon] {
        if level.is_available() {
            continue;
        }
        let config = |r: ternary_core::Result<()>| matches!(r, Err(TernaryError::Config(_)));
        assert!(config(kernels::gemm_f32_with(
            level,
            &m,
            &[0.0; 64],
            1,
            &mut [0.0; 2]
        )));
        assert!(config(kernels::gemm_i8_with(level, &m, &a, &mut [0.0; 2])));
        assert!(kernels::ternary_dot_with(level, &[0], &[0], &[0], &[0]).is_err());
        assert!(kernels::binary_dot_with(level, &[0], &[0], 1).is_err());
    }
}

#[test]
fn gemv_f32_is_gemm_with_one_token() {
    let (mut rng, seed) = rng();
    let m = random_matrix(&mut rng, 65, 577, ScaleLayout::PerGroup { group_size: 96 });
    let x = random_f32(&mut rng, 577);
    let mut y1 = vec![f32::NAN; 65];
    let mut y2 = vec![f32::NAN; 65];
    kernels::gemv_f32(&m, &x, &mut y1).unwrap();
    kernels::gemm_f32(&m, &x, 1, &mut y2).unwrap();
    assert_eq!(y1, y2, "TERNARY_TEST_SEED={seed}");
    check_f32(Level::detect(), &m, &x, 1, seed);
}

#[test]
fn gemm_i8_extreme_values_do_not_overflow_narrow_accumulators() {
    // 5000 columns of +127 against rows of all +1, all −1 and alternating signs: partial sums
    // far beyond i16 range must still be exact. 1, 2 and 5 tokens take AVX2's field kernel
    // (single tokens and pairs), 20 the GEMM.
    let cols = 5000;
    let mut trits = vec![1i8; cols];
    trits.extend(std::iter::repeat_n(-1i8, cols));
    trits.extend((0..cols).map(|c| if c % 2 == 0 { 1 } else { -1 }));
    for layout in [
        ScaleLayout::PerRow,
        ScaleLayout::PerGroup { group_size: 4096 },
    ] {
        let count = 3 * layout.groups_per_row(cols);
        let m = TernaryMatrix::from_trits(3, cols, &trits, Scales::new(layout, vec![1.0; count]))
            .unwrap();
        for n in [1, 2, 5, 20] {
            let q: Vec<i8> = (0..n * cols)
                .map(|i| if i / cols % 2 == 0 { 127 } else { -127 })
                .collect();
            let a = QuantizedActivations::from_parts(n, cols, &q, vec![1.0; n]).unwrap();
            for &level in &Level::available() {
                check_i8(level, &m, &a, 0);
                let mut y = vec![f32::NAN; n * 3];
                kernels::gemm_i8_with(level, &m, &a, &mut y).unwrap();
                assert_eq!(y[0], 127.0 * cols as f32, "{level} {layout:?}");
                assert_eq!(y[1], -127.0 * cols as f32, "{level} {layout:?}");
            }
        }
    }
}

#[test]
fn long_rows_cross_the_kernels_row_blocks() {
    // 14336 columns make the kernels split rows into several cache blocks and threads.
    let (mut rng, seed) = rng();
    for layout in [
        ScaleLayout::PerRow,
        ScaleLayout::PerGroup { group_size: 128 },
    ] {
        let m = random_matrix(&mut rng, 150, 14336, layout);
        let x = random_f32(&mut rng, 20 * 14336);
        let a = ternary_testkit::random_q(&mut rng, 20, 14336);
        // 4 threads whatever the host has, so the rows are split between threads.
        let four = rayon::ThreadPoolBuilder::new()
            .num_threads(4)
            .build()
            .unwrap();
        four.install(|| {
            for &level in &Level::available() {
                check_f32(level, &m, &x[..3 * 14336], 3, seed);
                check_f32(level, &m, &x, 20, seed);
                check_i8(level, &m, &a, seed);
            }
        });
    }
}

#[test]
fn f32_dot_at_every_level_should_match_the_f64_reference_on_edge_lengths() {
    let (mut rng, seed) = rng();
    let lengths = [
        0usize, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 576, 1536,
    ];
    for level in Level::available() {
        let dot = kernels::DotF32::new(level).unwrap();
        assert_eq!(dot.level(), level);
        for &n in &lengths {
            let a = random_f32(&mut rng, n);
            let b = random_f32(&mut rng, n + 3); // longer: the dot covers the shorter length
            let (want, mass) = a.iter().zip(&b).fold((0f64, 0f64), |(s, m), (&x, &y)| {
                let p = f64::from(x) * f64::from(y);
                (s + p, m + p.abs())
            });
            let got = f64::from(dot.dot(&a, &b));
            // f32 sums of n products: |Δ| ≤ F32_TOL · Σ|a_i b_i| (as for gemm_f32).
            assert!(
                (got - want).abs() <= F32_TOL * mass + 1e-30,
                "{level:?} n={n} seed {seed}: {got} vs {want}"
            );
            assert_eq!(dot.dot(&b, &a), dot.dot(&a, &b[..n]), "{level:?} n={n}");
        }
    }
    assert_eq!(kernels::DotF32::detect().level(), Level::detect());
}

#[test]
fn f32_axpy_at_every_level_should_match_the_f64_reference_on_edge_lengths() {
    // y + a·x: one rounding (fused) or two (scalar): |Δ| ≤ 2ε·(|y| + |a·x|) per element.
    let (mut rng, seed) = rng();
    for level in Level::available() {
        let k = kernels::DotF32::new(level).unwrap();
        for n in [0usize, 1, 7, 8, 9, 63, 64, 65, 576] {
            let x = random_f32(&mut rng, n + 2); // longer: only the shorter length is touched
            let y0 = random_f32(&mut rng, n);
            let a = random_f32(&mut rng, 1)[0];
            let mut y = y0.clone();
            k.axpy(a, &x, &mut y);
            for i in 0..n {
                let p = f64::from(a) * f64::from(x[i]);
                let want = f64::from(y0[i]) + p;
                let bound = 2.0 * f64::from(f32::EPSILON) * (f64::from(y0[i]).abs() + p.abs());
                assert!(
                    (f64::from(y[i]) - want).abs() <= bound + 1e-30,
                    "{level:?} n={n} [{i}] seed {seed}: {} vs {want}",
                    y[i]
                );
            }
        }
    }
}

#[test]
fn i8_dot_at_every_level_should_be_exact_on_edge_lengths() {
    let (mut rng, seed) = rng();
    let lengths = [
        0usize, 1, 15, 16, 31, 32, 33, 63, 64, 65, 127, 576, 1536, 4099,
    ];
    for level in Level::available() {
        let dot = kernels::DotI8::new(level).unwrap();
        for &n in &lengths {
            for extreme in [false, true] {
                let code = |rng: &mut StdRng| -> i8 {
                    if extreme {
                        if rng.random_bool(0.5) { 127 } else { -127 }
                    } else {
                        rng.random_range(-127..=127)
                    }
                };
                let a: Vec<i8> = (0..n).map(|_| code(&mut rng)).collect();
                let b: Vec<i8> = (0..n + 5).map(|_| code(&mut rng)).collect();
                let want: i64 = a
                    .iter()
                    .zip(&b)
                    .map(|(&x, &y)| i64::from(x) * i64::from(y))
                    .sum();
                assert_eq!(
                    i64::from(dot.dot(&a, &b)),
                    want,
                    "{level:?} n={n} extreme={extreme} seed {seed}"
                );
            }
        }
    }
}

#[test]
fn row_quantization_at_every_level_should_equal_the_reference_rule() {
    // `DotI8::quantize_row` against an independent f64 statement of the rule
    // (`s = max|x| / 127`, `q = clamp(round_half_even(x · 127 / max|x|), ±127)` with the
    // product rounded to f32 first, as the kernels compute it) and against
    // `QuantizedActivations::quantize`, bit for bit: random rows, rows built to hit exact
    // .5 ties, an all-zero row (codes untouched), and bad input as errors.
    let (mut rng, seed) = rng();
    let lengths = [0usize, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 576, 1536];
    for level in Level::available() {
        let k = kernels::DotI8::new(level).unwrap();
        for &n in &lengths {
            for kind in 0..3 {
                let row: Vec<f32> = (0..n)
                    .map(|i| match kind {
                        0 => rng.random_range(-3.0f32..3.0),
                        // max 127, others on half-integers: every code is a tie.
                        1 if i == 0 => 127.0,
                        1 => (rng.random_range(-126i32..126) as f32) + 0.5,
                        _ => 0.0,
                    })
                    .collect();
                let mut q = vec![5i8; n + 3];
                let s = k.quantize_row(&row, &mut q).unwrap();
                let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
                let what = format!("{level} n={n} kind={kind} seed {seed}");
                if amax == 0.0 {
                    assert_eq!(s, 0.0, "{what}");
                    assert!(q.iter().all(|&c| c == 5), "{what}: codes untouched");
                    continue;
                }
                assert_eq!(s.to_bits(), (amax / 127.0).to_bits(), "{what}");
                let inv = 127.0 / amax;
                for (c, &v) in row.iter().enumerate() {
                    let want = f64::from(v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
                    assert_eq!(q[c], want, "{what} col {c}: {v}");
                }
                assert!(q[n..].iter().all(|&c| c == 5), "{what}: past the row");
                let a = ternary_core::QuantizedActivations::quantize(&row, 1, n).unwrap();
                assert_eq!(&a.row(0)[..n], &q[..n], "{what}");
                assert_eq!(a.scales()[0].to_bits(), s.to_bits(), "{what}");
            }
        }
        let mut q = vec![0i8; 4];
        assert!(k.quantize_row(&[1.0, f32::NAN], &mut q).is_err());
        assert!(k.quantize_row(&[1.0; 5], &mut q).is_err());
        // Every non-finite value, anywhere (SIMD body and tail); the extreme finite ones pass.
        let mut q41 = vec![0i8; 41];
        for bad in [f32::INFINITY, f32::NEG_INFINITY, f32::NAN, -f32::NAN] {
            for at in [0, 15, 16, 17, 40] {
                let mut row = vec![0.5f32; 41];
                row[at] = bad;
                let e = k.quantize_row(&row, &mut q41).unwrap_err().to_string();
                assert!(
                    e.contains(&format!("activation {at} ")),
                    "{level} {bad} at {at}: {e}"
                );
            }
        }
        let mut row = vec![0.5f32; 41];
        (row[3], row[30]) = (f32::MAX, f32::MIN);
        assert!(
            k.quantize_row(&row, &mut q41).is_ok(),
            "{level}: extreme finite values"
        );
    }
}

/// `silu_mul_with` against `u · g / (1 + e^(−g))` in `f64`, relative `2e-6` (the polynomial
/// `exp` is within about 2 ulp, then a division and a product), on gates in `[−100, 100]`
/// (past both ends of `exp`'s clamp) and every edge length; NaN stays NaN; lengths must agree.
#[test]
fn silu_mul_should_match_reference_at_every_level() {
    let (mut rng, seed) = rng();
    for level in Level::available() {
        for len in EDGE.iter().copied().chain([0, 7, 8, 9, 15, 16, 17]) {
            let gate = ternary_testkit::random_f32(&mut rng, len, -100.0, 100.0);
            let up = random_f32(&mut rng, len);
            let mut got = up.clone();
            kernels::silu_mul_with(level, &gate, &mut got).unwrap();
            for (i, ((&g, &u), &y)) in gate.iter().zip(&up).zip(&got).enumerate() {
                let (g64, u64_) = (f64::from(g), f64::from(u));
                let want = u64_ * g64 / (1.0 + (-g64).exp());
                assert!(
                    (f64::from(y) - want).abs() <= 2e-6 * want.abs() + 1e-30,
                    "{level} len {len}: silu_mul at {i} (gate {g}, up {u}) = {y}, reference {want} (TERNARY_TEST_SEED={seed})"
                );
            }
        }
        let mut up = vec![1.0f32; 17];
        let mut gate = vec![0.5f32; 17];
        gate[3] = f32::NAN;
        gate[16] = f32::NAN;
        kernels::silu_mul_with(level, &gate, &mut up).unwrap();
        assert!(
            up[3].is_nan() && up[16].is_nan() && up[4].is_finite(),
            "{level}: NaN gate"
        );
        assert!(kernels::silu_mul_with(level, &gate, &mut up[..16]).is_err());
    }
}

/// `transpose_into_with` against the plain double loop, bit for bit (it only moves values,
/// or adds each once): every level, row and token counts around the 8 × 8 blocks and the edge
/// sizes, strides with and without slack, both modes, and destination values outside the
/// block left alone; short buffers and a stride under `rows` are refused.
#[test]
fn transpose_into_should_match_the_double_loop_at_every_level() {
    let (mut rng, seed) = rng();
    let sizes = [0usize, 1, 7, 8, 9, 16, 63, 64, 65];
    for level in Level::available() {
        for &rows in sizes.iter().chain(&[576]) {
            for &n in &sizes {
                for slack in [0usize, 5] {
                    let stride = rows + slack;
                    let src = random_f32(&mut rng, rows * n);
                    let len = n * stride + 3;
                    let base = random_f32(&mut rng, len);
                    for add in [false, true] {
                        let mut want = base.clone();
                        for i in 0..rows {
                            for j in 0..n {
                                let v = src[i * n + j];
                                let d = &mut want[j * stride + i];
                                *d = if add { *d + v } else { v };
                            }
                        }
                        let mut got = base.clone();
                        kernels::transpose_into_with(level, &src, rows, n, &mut got, stride, add)
                            .unwrap();
                        let bad = want
                            .iter()
                            .zip(&got)
                            .position(|(w, g)| w.to_bits() != g.to_bits());
                        assert!(
                            bad.is_none(),
                            "{level} transpose rows {rows} n {n} stride {stride} add {add}: \
                             first difference at {bad:?} (TERNARY_TEST_SEED={seed})"
                        );
                    }
                }
            }
        }
        let src = vec![1f32; 9 * 4];
        let mut dst = vec![0f32; 4 * 9];
        assert!(kernels::transpose_into_with(level, &src[..35], 9, 4, &mut dst, 9, false).is_err());
        assert!(kernels::transpose_into_with(level, &src, 9, 4, &mut dst[..35], 9, false).is_err());
        assert!(kernels::transpose_into_with(level, &src, 9, 4, &mut dst, 8, false).is_err());
        assert!(
            dst.iter().all(|&v| v == 0.0),
            "{level}: a refused call wrote to the destination"
        );
        assert!(kernels::transpose_into_with(level, &src, 9, 4, &mut dst, 9, true).is_ok());
        assert!(dst.iter().all(|&v| v == 1.0), "{level}: 0 + 1 everywhere");
    }
}

/// `fill_codes` refuses a `−128` code wherever the filler writes it (and a non-finite scale),
/// and leaves the activations empty.
#[test]
fn fill_codes_should_refuse_minus_128_and_bad_scales() {
    let mut a = QuantizedActivations::empty();
    for at in [0, 15, 16, 17, 40] {
        let e = a
            .fill_codes(2, 41, |j, q| {
                q.fill(3);
                if j == 1 {
                    q[at] = i8::MIN;
                }
                1.0
            })
            .unwrap_err()
            .to_string();
        assert!(e.contains(&format!("token 1, column {at}")), "{e}");
        assert_eq!(a.n(), 0);
    }
    assert!(a.fill_codes(1, 41, |_, _| f32::NAN).is_err());
    a.fill_codes(2, 41, |_, q| {
        q.fill(-127);
        0.5
    })
    .unwrap();
    assert_eq!(a.row(1)[40], -127);
}
