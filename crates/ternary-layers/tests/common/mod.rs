//! Helpers shared by the `TernaryLinear` tests (`layer.rs`, `cube.rs`, `attention.rs`): seeded
//! random inputs, the `f64` reference and the tolerance check.
#![allow(dead_code)] // each test binary uses a subset

use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ternary_core::{ScaleLayout, Scales, TernaryMatrix};
use ternary_layers::{LinearPath, TernaryLinear};

/// Relative tolerance of [`check_close`] (see the test files' docs).
pub const TOL: f64 = 1e-5;
/// Edge sizes for rows and columns.
pub const EDGE: [usize; 5] = [1, 63, 64, 65, 576];
/// Scale layouts cycled through the edge-shape cases.
pub const LAYOUTS: [ScaleLayout; 4] = [
    ScaleLayout::PerRow,
    ScaleLayout::PerGroup { group_size: 32 },
    ScaleLayout::PerGroup { group_size: 64 },
    ScaleLayout::PerGroup { group_size: 128 },
];

#[allow(unused_imports)] // each test binary uses a subset
pub use ternary_testkit::{random_f32, random_matrix, rng};

/// `y_ref[j, r] = Σ_c s[r, g(c)] · t[r, c] · x[j, c] · d[c] + b[r]` in `f64`, with the mass
/// `Σ_c |…| + |b[r]|` used for the tolerance.
pub fn reference_f64(
    m: &TernaryMatrix,
    x: &[f32],
    n: usize,
    d: Option<&[f32]>,
    b: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let (rows, cols) = (m.rows(), m.cols());
    let trits = m.to_trits();
    let mut y = vec![0f64; n * rows];
    let mut mass = vec![0f64; n * rows];
    for j in 0..n {
        for r in 0..rows {
            let (mut acc, mut abs) = (0f64, 0f64);
            for c in 0..cols {
                let dc = d.map_or(1.0, |d| f64::from(d[c]));
                let term = f64::from(m.scale_at(r, c))
                    * f64::from(trits[r * cols + c])
                    * f64::from(x[j * cols + c])
                    * dc;
                acc += term;
                abs += term.abs();
            }
            let br = b.map_or(0.0, |b| f64::from(b[r]));
            y[j * rows + r] = acc + br;
            mass[j * rows + r] = abs + br.abs();
        }
    }
    (y, mass)
}

pub fn tensor<B: Backend, const D: usize>(x: Vec<f32>, shape: [usize; D]) -> Tensor<B, D> {
    Tensor::from_data(TensorData::new(x, shape), &Default::default())
}

pub fn values<B: Backend, const D: usize>(t: Tensor<B, D>) -> Vec<f32> {
    t.into_data().convert::<f32>().into_vec::<f32>().unwrap()
}

pub fn check_close(what: &str, got: &[f32], want: &[f64], mass: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, ((&g, &w), &m)) in got.iter().zip(want).zip(mass).enumerate() {
        let err = (f64::from(g) - w).abs();
        assert!(
            err <= TOL * m + 1e-30,
            "{what} [{i}]: got {g}, want {w} (err {err:e}, bound {:e})",
            TOL * m
        );
    }
}

/// Builds the layer with the case's optional bias and input scale.
pub fn layer<B: Backend>(
    m: &TernaryMatrix,
    bias: Option<&[f32]>,
    d: Option<&[f32]>,
    path: LinearPath,
) -> TernaryLinear<B> {
    let mut l = TernaryLinear::<B>::new(m.clone(), &Default::default()).unwrap();
    if let Some(b) = bias {
        l = l.with_bias(b.to_vec()).unwrap();
    }
    if let Some(d) = d {
        l = l.with_input_scale(d.to_vec()).unwrap();
    }
    l.set_path(path);
    l
}

/// One case of [`for_each_edge_case`]: a random layer and input with the `f64` reference.
pub struct EdgeCase<'a> {
    /// The matrix (`rows × cols`).
    pub m: &'a TernaryMatrix,
    /// `n × cols` activations.
    pub x: &'a [f32],
    /// Tokens.
    pub n: usize,
    /// Bias, if this case has one.
    pub bias: Option<&'a [f32]>,
    /// Input scale, if this case has one.
    pub d: Option<&'a [f32]>,
    /// [`reference_f64`] of the case.
    pub want: Vec<f64>,
    /// Its tolerance mass `Σ_c |terms| + |b|`.
    pub mass: Vec<f64>,
    /// A description for failure messages.
    pub tag: String,
}

/// Runs `f` on every rows × cols in [`EDGE`]², each token count in `tokens`, scale layouts
/// cycled through [`LAYOUTS`] and every combination of bias and input scale across the token
/// counts; random values from `rng()` (the fixed test seed).
pub fn for_each_edge_case(tokens: &[usize], mut f: impl FnMut(&EdgeCase<'_>)) {
    let mut rng = rng();
    let mut case = 0usize;
    for &rows in &EDGE {
        for &cols in &EDGE {
            let layout = LAYOUTS[case % LAYOUTS.len()];
            let m = random_matrix(&mut rng, rows, cols, layout);
            let bias = random_f32(&mut rng, rows, -1.0, 1.0);
            let d = random_f32(&mut rng, cols, 0.1, 3.0);
            for (t, &n) in tokens.iter().enumerate() {
                case += 1;
                let flags = (case + t) % 4;
                let b = (flags & 1 != 0).then_some(bias.as_slice());
                let ds = (flags & 2 != 0).then_some(d.as_slice());
                let x = random_f32(&mut rng, n * cols, -4.0, 4.0);
                let (want, mass) = reference_f64(&m, &x, n, ds, b);
                let tag = format!(
                    "{rows}x{cols} {layout:?} n={n} bias={} d={}",
                    b.is_some(),
                    ds.is_some()
                );
                f(&EdgeCase {
                    m: &m,
                    x: &x,
                    n,
                    bias: b,
                    d: ds,
                    want,
                    mass,
                    tag,
                });
            }
        }
    }
}

/// `y[j, r] = Σ_c s[r, g(c)] · l[r, c] · x[j, c] + b[r]` in `f64` from the 9-level integers `l`
/// (never the planes), and the mass `Σ_c |…| + |b[r]|`.
pub fn reference_levels(
    levels: &[i8],
    scales: &Scales,
    (rows, cols): (usize, usize),
    x: &[f64],
    n: usize,
    b: Option<&[f32]>,
) -> (Vec<f64>, Vec<f64>) {
    let layout = scales.layout();
    let gpr = layout.groups_per_row(cols);
    let glen = layout.group_len(cols).max(1);
    let mut y = vec![0f64; n * rows];
    let mut mass = vec![0f64; n * rows];
    for j in 0..n {
        for r in 0..rows {
            let (mut acc, mut abs) = (0f64, 0f64);
            for c in 0..cols {
                let term = f64::from(scales.values()[r * gpr + c / glen])
                    * f64::from(levels[r * cols + c])
                    * x[j * cols + c];
                acc += term;
                abs += term.abs();
            }
            let br = b.map_or(0.0, |b| f64::from(b[r]));
            y[j * rows + r] = acc + br;
            mass[j * rows + r] = abs + br.abs();
        }
    }
    (y, mass)
}
