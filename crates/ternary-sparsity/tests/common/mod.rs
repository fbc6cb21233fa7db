//! Shared test helpers: seeded randomness, random sparse matrices, reference checks.
//!
//! The seed is fixed (`ternary_testkit::seed`), printed, and overridden by
//! `TERNARY_TEST_SEED=<seed>`.

#![allow(dead_code)]

use rand::RngExt;
use rand::rngs::StdRng;
use ternary_core::{ScaleLayout, Scales, TernaryMatrix, reference};

/// `f32` tolerance: `|y − y_ref| ≤ F32_TOL · Σ_c |s · t · x|` per output (`y_ref` in `f64`).
/// `1e-5` (≈ 84 ulp at 1.0) covers `f32` accumulation over up to 1536 columns in any order,
/// as in `ternary-core`'s kernel tests.
pub const F32_TOL: f64 = 1e-5;

/// The edge sizes of columns.
pub const EDGE_COLS: [usize; 9] = [1, 31, 32, 33, 63, 64, 65, 576, 1536];
/// The edge sizes of rows.
pub const EDGE_ROWS: [usize; 3] = [1, 3, 64];
/// Densities every kernel is tested at.
pub const DENSITIES: [f64; 6] = [0.0, 0.01, 0.05, 0.10, 0.50, 1.0];
/// Scale layouts (per row and per group).
pub const LAYOUTS: [ScaleLayout; 4] = [
    ScaleLayout::PerRow,
    ScaleLayout::PerGroup { group_size: 32 },
    ScaleLayout::PerGroup { group_size: 64 },
    ScaleLayout::PerGroup { group_size: 96 },
];

#[allow(unused_imports)] // each test binary uses a subset
pub use ternary_testkit::seeded as rng;

/// Where the non-zeros go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Structure {
    /// Each weight non-zero independently with probability `d`.
    Unstructured,
    /// Whole 32-column chunks kept with probability `min(1, 1.5 d)`, each weight of a kept
    /// chunk non-zero with probability `2/3` (overall density ≈ `d`).
    Chunks,
}

fn random_trit(rng: &mut StdRng) -> i8 {
    if rng.random_bool(0.5) { 1 } else { -1 }
}

/// Random trits of density `d` (`rows · cols`, row-major).
pub fn random_trits(
    rng: &mut StdRng,
    rows: usize,
    cols: usize,
    d: f64,
    structure: Structure,
) -> Vec<i8> {
    let mut t = vec![0i8; rows * cols];
    match structure {
        Structure::Unstructured => {
            for v in &mut t {
                if d >= 1.0 || rng.random_bool(d) {
                    *v = random_trit(rng);
                }
            }
        }
        Structure::Chunks => {
            let keep = (1.5 * d).min(1.0);
            for r in 0..rows {
                for c0 in (0..cols).step_by(32) {
                    if keep < 1.0 && !rng.random_bool(keep) {
                        continue;
                    }
                    for c in c0..(c0 + 32).min(cols) {
                        if d >= 1.0 || rng.random_bool(2.0 / 3.0) {
                            t[r * cols + c] = random_trit(rng);
                        }
                    }
                }
            }
        }
    }
    t
}

/// Random scales in ±[0.01, 2) (20% negative) for `layout`.
pub fn random_scales(rng: &mut StdRng, rows: usize, cols: usize, layout: ScaleLayout) -> Scales {
    let count = rows * layout.groups_per_row(cols);
    let values = (0..count)
        .map(|_| {
            let s: f32 = rng.random_range(0.01..2.0);
            if rng.random_bool(0.2) { -s } else { s }
        })
        .collect();
    Scales::new(layout, values)
}

/// A random matrix of density `d`.
pub fn random_matrix(
    rng: &mut StdRng,
    rows: usize,
    cols: usize,
    d: f64,
    structure: Structure,
    layout: ScaleLayout,
) -> TernaryMatrix {
    let trits = random_trits(rng, rows, cols, d, structure);
    let scales = random_scales(rng, rows, cols, layout);
    TernaryMatrix::from_trits(rows, cols, &trits, scales).unwrap()
}

pub fn random_f32(rng: &mut StdRng, len: usize) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(-4.0f32..4.0)).collect()
}

#[allow(unused_imports)] // each test binary uses a subset
pub use ternary_testkit::random_q;

#[allow(unused_imports)] // each test binary uses a subset
pub use ternary_core::reference::abs_mass;

/// The `f32` oracle and tolerance bound of `m · x` (`n` tokens).
pub struct F32Expect {
    pub y: Vec<f64>,
    pub mass: Vec<f64>,
}

impl F32Expect {
    pub fn new(m: &TernaryMatrix, x: &[f32], n: usize) -> Self {
        Self {
            y: reference::gemm_f32(m, x, n).unwrap(),
            mass: abs_mass(m, x, n),
        }
    }

    /// Panics with `what` unless every output is within the tolerance.
    pub fn check(&self, y: &[f32], what: &str) {
        assert_eq!(y.len(), self.y.len(), "{what}: output length");
        for (i, ((&got, &want), &mass)) in y.iter().zip(&self.y).zip(&self.mass).enumerate() {
            let err = (f64::from(got) - want).abs();
            assert!(
                err <= F32_TOL * mass + 1e-30 && got.is_finite(),
                "{what}: output {i}: got {got}, want {want}, err {err:e} > {F32_TOL} * {mass:e}"
            );
        }
    }
}

/// Panics unless `y` equals `want` bit for bit.
pub fn check_exact(y: &[f32], want: &[f32], what: &str) {
    assert_eq!(y.len(), want.len(), "{what}: output length");
    for (i, (&a, &b)) in y.iter().zip(want).enumerate() {
        assert!(
            a.to_bits() == b.to_bits(),
            "{what}: output {i}: got {a:e} ({:#x}), want {b:e} ({:#x})",
            a.to_bits(),
            b.to_bits()
        );
    }
}
