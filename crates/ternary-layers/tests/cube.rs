//! `TernaryLinear`'s cube path (`ternary-kernels` on Burn's CubeCL backend) on wgpu — Mesa's
//! lavapipe in CI (`apt-get install mesa-vulkan-drivers`) — against independent references.
//!
//! Inputs are random from a fixed seed (`ternary_testkit::seed`), printed;
//! `TERNARY_TEST_SEED=<seed>` runs another. Outputs are poisoned with NaN before the kernel writes them (debug
//! assertions, on in tests), so an unwritten value fails the comparison.
//!
//! Tolerance: `|y − y_ref| ≤ TOL · (Σ_c |s[r, g(c)] · t[r, c] · x[j, c] · d[c]| + |b[r]|)` against
//! the `f64` reference from the trits and scales; `TOL = 1e-5` covers `f32` accumulation over up
//! to 576 columns in any order, plus the `f32` products `x · d` and the `f32` bias add.
#![cfg(feature = "wgpu")]

mod common;
use common::*;

use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
use burn::tensor::Tensor;
use ternary_core::{ScaleLayout, Scales, TernaryMatrix};
use ternary_layers::Cpu;
use ternary_layers::TernaryBackend;
use ternary_layers::{LayerError, LinearPath};

/// Burn's CubeCL backend on wgpu, named explicitly (not `burn::backend::Wgpu`, which becomes a
/// fused backend when Burn's `fusion` feature is on anywhere in the build).
type Gpu = CubeBackend<WgpuRuntime, f32, i32, u32>;
/// The fused backend over it (ternary-layers' `fusion` feature turns on Burn's).
#[cfg(feature = "fusion")]
type Fused = burn::backend::Wgpu;

const TOKENS: [usize; 4] = [1, 3, 17, 70];

#[test]
fn auto_should_resolve_to_the_cube_path_on_the_cubecl_backend() {
    assert_eq!(LinearPath::Auto.resolve::<Gpu>(), LinearPath::Cube);
    // Burn's `Wgpu` alias: fused or not, depending on Burn's `fusion` feature.
    assert_eq!(
        LinearPath::Auto.resolve::<burn::backend::Wgpu>(),
        LinearPath::Cube
    );
    assert_eq!(LinearPath::Auto.resolve::<Cpu>(), LinearPath::CpuF32);
    assert_eq!(
        LinearPath::Auto.resolve::<burn::backend::NdArray<f64>>(),
        LinearPath::Float
    );
    assert_eq!("cube".parse::<LinearPath>().unwrap(), LinearPath::Cube);
}

#[test]
fn cube_path_should_match_the_reference_on_edge_shapes() {
    edge_shapes::<Gpu>();
}

#[cfg(feature = "fusion")]
#[test]
fn fused_cube_path_should_match_the_reference_on_edge_shapes() {
    edge_shapes::<Fused>();
}

fn edge_shapes<B: TernaryBackend>() {
    for_each_edge_case(&TOKENS, |c| {
        let (rows, cols) = (c.m.rows(), c.m.cols());
        for path in [LinearPath::Auto, LinearPath::Cube] {
            let l = layer::<B>(c.m, c.bias, c.d, path);
            let y = l
                .try_forward(tensor::<B, 2>(c.x.to_vec(), [c.n, cols]))
                .unwrap();
            assert_eq!(y.dims(), [c.n, rows], "{} {path}", c.tag);
            check_close(&format!("{} {path}", c.tag), &values(y), &c.want, &c.mass);
        }
    });
}

#[test]
fn cube_path_should_agree_with_the_host_kernels_on_the_same_layer() {
    let mut rng = rng();
    let m = random_matrix(
        &mut rng,
        1536,
        576,
        ScaleLayout::PerGroup { group_size: 64 },
    );
    let d = random_f32(&mut rng, 576, 0.1, 3.0);
    let b = random_f32(&mut rng, 1536, -1.0, 1.0);
    for n in [1, 8, 9, 33] {
        let x = random_f32(&mut rng, n * 576, -4.0, 4.0);
        let (want, mass) = reference_f64(&m, &x, n, Some(&d), Some(&b));
        let gpu = layer::<Gpu>(&m, Some(&b), Some(&d), LinearPath::Cube)
            .forward(tensor::<Gpu, 2>(x.clone(), [n, 576]));
        let cpu = layer::<Cpu>(&m, Some(&b), Some(&d), LinearPath::CpuF32)
            .forward(tensor::<Cpu, 2>(x, [n, 576]));
        check_close(&format!("gpu n={n}"), &values(gpu), &want, &mass);
        check_close(&format!("cpu n={n}"), &values(cpu), &want, &mass);
    }
}

#[test]
fn cube_path_should_handle_3d_strided_sliced_and_empty_inputs() {
    odd_inputs::<Gpu>();
}

#[cfg(feature = "fusion")]
#[test]
fn fused_cube_path_should_handle_3d_strided_sliced_and_empty_inputs() {
    odd_inputs::<Fused>();
}

fn odd_inputs<B: TernaryBackend>() {
    let mut rng = rng();
    let (rows, cols) = (67, 65);
    let m = random_matrix(&mut rng, rows, cols, ScaleLayout::PerRow);
    let l = layer::<B>(&m, None, None, LinearPath::Cube);

    // 3-D input: leading dims kept.
    let x = random_f32(&mut rng, 2 * 5 * cols, -2.0, 2.0);
    let (want, mass) = reference_f64(&m, &x, 10, None, None);
    let y = l.forward(tensor::<B, 3>(x, [2, 5, cols]));
    assert_eq!(y.dims(), [2, 5, rows]);
    check_close("3-D", &values(y), &want, &mass);

    // A transposed (non-contiguous) input: the path makes it contiguous first.
    let xt = random_f32(&mut rng, cols * 7, -2.0, 2.0);
    let x: Vec<f32> = (0..7)
        .flat_map(|j| (0..cols).map(move |c| (j, c)))
        .map(|(j, c)| xt[c * 7 + j])
        .collect();
    let (want, mass) = reference_f64(&m, &x, 7, None, None);
    let y = l.forward(tensor::<B, 2>(xt, [cols, 7]).transpose());
    check_close("transposed", &values(y), &want, &mass);

    // A slice of a larger tensor (rows 3..9): the buffer starts at an offset.
    let big = random_f32(&mut rng, 12 * cols, -2.0, 2.0);
    let x = big[3 * cols..9 * cols].to_vec();
    let (want, mass) = reference_f64(&m, &x, 6, None, None);
    let y = l.forward(tensor::<B, 2>(big, [12, cols]).slice([3..9, 0..cols]));
    check_close("sliced", &values(y), &want, &mass);

    // No tokens.
    let y = l.forward(Tensor::<B, 2>::zeros([0, cols], &Default::default()));
    assert_eq!(y.dims(), [0, rows]);
    // No input features: y = b for every token.
    let empty =
        TernaryMatrix::from_trits(3, 0, &[], Scales::new(ScaleLayout::PerRow, vec![1.0; 3]))
            .unwrap();
    let bias = [0.5f32, -1.25, 2.0];
    let y = layer::<B>(&empty, Some(&bias), None, LinearPath::Cube)
        .forward(Tensor::<B, 2>::zeros([2, 0], &Default::default()));
    assert_eq!(y.dims(), [2, 3]);
    assert_eq!(values(y), [bias, bias].concat());

    // Element-wise work around the layer (fused around the custom operation on a fused
    // backend): relu(Q·(2x + 1)).
    let x = random_f32(&mut rng, 4 * cols, -2.0, 2.0);
    let x2: Vec<f32> = x.iter().map(|v| 2.0 * v + 1.0).collect();
    let (want, mass) = reference_f64(&m, &x2, 4, None, None);
    let want: Vec<f64> = want.iter().map(|v| v.max(0.0)).collect();
    let y = l.forward(tensor::<B, 2>(x, [4, cols]).mul_scalar(2.0).add_scalar(1.0));
    let y = burn::tensor::activation::relu(y);
    check_close("relu(Q(2x+1))", &values(y), &want, &mass);
}

#[test]
fn cube_path_should_reject_bad_inputs_with_errors() {
    let mut rng = rng();
    let m = random_matrix(&mut rng, 5, 40, ScaleLayout::PerRow);
    let l = layer::<Gpu>(&m, None, None, LinearPath::Cube);
    let e = l.try_forward(Tensor::<Gpu, 2>::zeros([2, 41], &Default::default()));
    assert!(matches!(e, Err(LayerError::Shape(_))), "{e:?}");
    // The cube path on a backend it cannot run on: an error, not a panic.
    let cpu = layer::<Cpu>(&m, None, None, LinearPath::Cube);
    let e = cpu.try_forward(Tensor::<Cpu, 2>::zeros([2, 40], &Default::default()));
    match e {
        Err(LayerError::Unsupported {
            path: "cube",
            reason,
            ..
        }) => assert!(reason.contains("CubeBackend"), "{reason}"),
        other => panic!("expected an error, got {other:?}"),
    }
    // NaN activations propagate (as in a float matmul) instead of panicking.
    let mut x = vec![0.5f32; 2 * 40];
    x[3] = f32::NAN;
    let y = values(l.forward(tensor::<Gpu, 2>(x, [2, 40])));
    assert!(y[..5].iter().any(|v| v.is_nan()), "{y:?}");
    assert!(y[5..].iter().all(|v| v.is_finite()), "{y:?}");
}

/// A two-plane layer (`Q = M₁ + M₂ = s·(3·T₁ + T₂)`) on the cube path: one product per plane on
/// the same `x ⊙ d`, against the `f64` reference from the 9-level integers.
#[test]
fn two_plane_cube_path_should_match_the_reference() {
    let (mut rng, seed) = ternary_testkit::seeded();
    for (i, &(rows, cols)) in [(1, 1), (63, 65), (576, 64), (65, 576), (0, 64), (64, 0)]
        .iter()
        .enumerate()
    {
        let layout = LAYOUTS[i % LAYOUTS.len()];
        let (m, levels, scales) = ternary_testkit::random_two_plane(&mut rng, rows, cols, layout);
        let d = random_f32(&mut rng, cols, 0.1, 3.0);
        let b = random_f32(&mut rng, rows, -1.0, 1.0);
        let l = ternary_layers::TernaryLinear::<Gpu>::from_weights(m, &Default::default())
            .unwrap()
            .with_bias(b.clone())
            .unwrap()
            .with_input_scale(d.clone())
            .unwrap()
            .with_path(LinearPath::Cube);
        for n in [0, 1, 3, 17] {
            let x = random_f32(&mut rng, n * cols, -2.0, 2.0);
            let xd: Vec<f64> = x
                .iter()
                .enumerate()
                .map(|(k, &v)| f64::from(v) * f64::from(d[k % cols.max(1)]))
                .collect();
            let (want, mass) = reference_levels(&levels, &scales, (rows, cols), &xd, n, Some(&b));
            let y = l.try_forward(tensor::<Gpu, 2>(x, [n, cols])).unwrap();
            assert_eq!(y.dims(), [n, rows]);
            check_close(
                &format!("seed {seed}, two planes {rows}x{cols} n {n}"),
                &values(y),
                &want,
                &mass,
            );
        }
    }
}
