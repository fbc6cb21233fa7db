//! `TernaryLinear` against independent references.
//!
//! Inputs are random from a fixed seed (`ternary_testkit::seed`), printed (and shown on
//! failure); `TERNARY_TEST_SEED=<seed>` runs another.
//!
//! Tolerances:
//! - `CpuF32` and `Float` paths: `|y − y_ref| ≤ TOL · (Σ_c |s[r, g(c)] · t[r, c] · x[j, c] · d[c]|
//!   + |b[r]|)` against the `f64` reference built from the trits and scales; `TOL = 1e-5` covers
//!   `f32` accumulation over up to 576 columns in any order (and the `f32` rounding of the
//!   folded weight `s · t · d` on the float path).
//! - `CpuInt8` path: bit-exact against `ternary_core::reference::gemm_i8` on the same `f32`
//!   activations `x ⊙ d`, followed by the same `f32` bias add.

mod common;
use common::*;

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::nn::{Linear, LinearConfig};
use burn::record::{
    BinBytesRecorder, FullPrecisionSettings, NamedMpkBytesRecorder, Recorder, RecorderError,
};
use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use rand::rngs::StdRng;
use ternary_core::quant::{Method, QuantConfig, quantize};
use ternary_core::{QuantizedActivations, ScaleLayout, Scales, TernaryMatrix, reference};
use ternary_layers::Cpu;
use ternary_layers::layer::LAYOUT_PER_GROUP;
use ternary_layers::{
    LayerError, LinearPath, TernaryLinear, TernaryLinearRecord, TernaryLinearRecordData,
};

const TOKENS: [usize; 3] = [1, 3, 17];
const PATHS: [LinearPath; 5] = [
    LinearPath::Auto,
    LinearPath::CpuF32,
    LinearPath::Float,
    LinearPath::CpuInt8,
    LinearPath::CpuInt8x2,
];

/// The f64 backend: not `ternary_layers::Cpu`, so `Auto` resolves to the float path there.
type CpuF64 = burn::backend::NdArray<f64>;

/// `x ⊙ d` in `f32` (`x` itself without `d`).
fn scaled(x: &[f32], d: Option<&[f32]>, cols: usize) -> Vec<f32> {
    x.iter()
        .enumerate()
        .map(|(i, &v)| d.map_or(v, |d| v * d[i % cols]))
        .collect()
}

/// The int8 reference: `reference::gemm_i8` on `x ⊙ d` (in `f32`), one code per token
/// (`QuantizedActivations::quantize`) or two (`quantize_two`, tokens `j` and `n + j` summed),
/// then `+ b` in `f32`.
fn reference_int8(
    m: &TernaryMatrix,
    x: &[f32],
    n: usize,
    d: Option<&[f32]>,
    b: Option<&[f32]>,
    two: bool,
) -> Vec<f32> {
    let (rows, cols) = (m.rows(), m.cols());
    let xs = scaled(x, d, cols);
    let mut y = if two {
        let a = QuantizedActivations::quantize_two(&xs, n, cols).unwrap();
        let y2 = reference::gemm_i8(m, &a).unwrap();
        (0..n * rows).map(|i| y2[i] + y2[n * rows + i]).collect()
    } else {
        let a = QuantizedActivations::quantize(&xs, n, cols).unwrap();
        reference::gemm_i8(m, &a).unwrap()
    };
    if let Some(b) = b {
        for (i, v) in y.iter_mut().enumerate() {
            *v += b[i % rows];
        }
    }
    y
}

/// The two-code path is as accurate as its activations: `|y − y_ref| ≤ Σ_c |s·t| · max_c |x ⊙ d|
/// / 64516` (the codes' bound) plus `TOL` of the mass for the `f32` sums.
fn check_int8x2_bound(c: &common::EdgeCase<'_>, y: &[f32]) {
    let (rows, cols) = (c.m.rows(), c.m.cols());
    let trits = c.m.to_trits();
    for j in 0..c.n {
        let amax = (0..cols).fold(0f64, |a, k| {
            let v = f64::from(c.x[j * cols + k]) * c.d.map_or(1.0, |d| f64::from(d[k]));
            a.max(v.abs())
        });
        for r in 0..rows {
            let wsum: f64 = (0..cols)
                .map(|k| (f64::from(c.m.scale_at(r, k)) * f64::from(trits[r * cols + k])).abs())
                .sum();
            let i = j * rows + r;
            let bound = wsum * amax / 64516.0 * 1.001 + TOL * c.mass[i] + 1e-30;
            let err = (f64::from(y[i]) - c.want[i]).abs();
            assert!(
                err <= bound,
                "{} int8x2 [{i}]: got {}, want {} (err {err:e}, bound {bound:e})",
                c.tag,
                y[i],
                c.want[i]
            );
        }
    }
}

#[test]
fn every_path_should_match_the_reference_on_edge_shapes() {
    for_each_edge_case(&TOKENS, |c| {
        let (rows, cols) = (c.m.rows(), c.m.cols());
        let want_i8 = reference_int8(c.m, c.x, c.n, c.d, c.bias, false);
        let want_i8x2 = reference_int8(c.m, c.x, c.n, c.d, c.bias, true);
        for path in PATHS {
            let l = layer::<Cpu>(c.m, c.bias, c.d, path);
            let y = l.forward(tensor::<Cpu, 2>(c.x.to_vec(), [c.n, cols]));
            assert_eq!(y.dims(), [c.n, rows], "{} {path}", c.tag);
            let y = values(y);
            if path == LinearPath::CpuInt8x2 {
                assert_eq!(
                    y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want_i8x2.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{} int8x2 path vs reference::gemm_i8 on two codes",
                    c.tag
                );
                check_int8x2_bound(c, &y);
            } else if path == LinearPath::CpuInt8 {
                assert_eq!(
                    y.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    want_i8.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    "{} int8 path vs reference::gemm_i8",
                    c.tag
                );
            } else {
                check_close(&format!("{} {path}", c.tag), &y, &c.want, &c.mass);
            }
        }
    });
}

#[test]
fn three_dimensional_input_should_keep_leading_dims() {
    let mut rng = rng();
    let (rows, cols) = (65, 64);
    let m = random_matrix(
        &mut rng,
        rows,
        cols,
        ScaleLayout::PerGroup { group_size: 32 },
    );
    let bias = random_f32(&mut rng, rows, -1.0, 1.0);
    let d = random_f32(&mut rng, cols, 0.1, 3.0);
    let x = random_f32(&mut rng, 2 * 3 * cols, -4.0, 4.0);
    let (want, mass) = reference_f64(&m, &x, 6, Some(&d), Some(&bias));
    let want_i8 = reference_int8(&m, &x, 6, Some(&d), Some(&bias), false);
    let want_i8x2 = reference_int8(&m, &x, 6, Some(&d), Some(&bias), true);
    for path in PATHS {
        let l = layer::<Cpu>(&m, Some(&bias), Some(&d), path);
        let y = l.forward(tensor::<Cpu, 3>(x.clone(), [2, 3, cols]));
        assert_eq!(y.dims(), [2, 3, rows], "{path}");
        let y = values(y);
        if path == LinearPath::CpuInt8 {
            assert_eq!(y, want_i8, "{path}");
        } else if path == LinearPath::CpuInt8x2 {
            assert_eq!(y, want_i8x2, "{path}");
        } else {
            check_close(&format!("3-D {path}"), &y, &want, &mass);
        }
    }
    // A 1-D input is one token.
    let l = layer::<Cpu>(&m, Some(&bias), Some(&d), LinearPath::CpuF32);
    let y = l.forward(tensor::<Cpu, 1>(x[..cols].to_vec(), [cols]));
    assert_eq!(y.dims(), [rows]);
    check_close("1-D", &values(y), &want[..rows], &mass[..rows]);
}

#[test]
fn auto_path_should_use_cpu_kernels_only_on_the_ndarray_f32_backend() {
    assert_eq!(LinearPath::Auto.resolve::<Cpu>(), LinearPath::CpuF32);
    assert_eq!(LinearPath::Auto.resolve::<CpuF64>(), LinearPath::Float);
    assert_eq!(LinearPath::CpuInt8.resolve::<CpuF64>(), LinearPath::CpuInt8);
    // Every path also runs on another backend (here ndarray in f64).
    let mut rng = rng();
    let m = random_matrix(&mut rng, 33, 65, ScaleLayout::PerRow);
    let bias = random_f32(&mut rng, 33, -1.0, 1.0);
    let x = random_f32(&mut rng, 3 * 65, -4.0, 4.0);
    let (want, mass) = reference_f64(&m, &x, 3, None, Some(&bias));
    for path in [LinearPath::Auto, LinearPath::CpuF32, LinearPath::Float] {
        let l = layer::<CpuF64>(&m, Some(&bias), None, path);
        let y = values(l.forward(tensor::<CpuF64, 2>(x.clone(), [3, 65])));
        check_close(&format!("f64 backend {path}"), &y, &want, &mass);
    }
    let l = layer::<CpuF64>(&m, Some(&bias), None, LinearPath::CpuInt8);
    let y = values(l.forward(tensor::<CpuF64, 2>(x.clone(), [3, 65])));
    assert_eq!(y, reference_int8(&m, &x, 3, None, Some(&bias), false));
}

#[test]
fn from_linear_should_match_nn_linear_on_the_dequantized_weights() {
    let mut rng = rng();
    let device = Default::default();
    for &(inp, out, bias) in &[(64, 65, true), (576, 63, false), (65, 1, true)] {
        let lin: Linear<Cpu> = LinearConfig::new(inp, out).with_bias(bias).init(&device);
        let cfg = QuantConfig::new(Method::AbsMean, ScaleLayout::PerGroup { group_size: 64 });
        let t = TernaryLinear::from_linear(&lin, &cfg).unwrap();
        assert_eq!((t.in_features(), t.out_features()), (inp, out));
        // Independently transpose Burn's [in, out] weight to [out, in] rows and quantize.
        let wb = values(lin.weight.val());
        let mut rows = vec![0f32; inp * out];
        for c in 0..inp {
            for r in 0..out {
                rows[r * inp + c] = wb[c * out + r];
            }
        }
        let (expect, _) = quantize(&rows, out, inp, &cfg).unwrap();
        assert_eq!(t.matrix().unwrap(), &expect, "{inp}x{out}");
        assert_eq!(t.bias(), lin.bias.as_ref().map(|b| values(b.val())));
        // nn::Linear holding the dequantized weight, [in, out].
        let deq = expect.dequantize();
        let mut deq_t = vec![0f32; inp * out];
        for r in 0..out {
            for c in 0..inp {
                deq_t[c * out + r] = deq[r * inp + c];
            }
        }
        let float = Linear {
            weight: Param::from_tensor(tensor::<Cpu, 2>(deq_t, [inp, out])),
            bias: lin.bias.clone(),
        };
        let x = random_f32(&mut rng, 2 * 5 * inp, -2.0, 2.0);
        let want: Vec<f64> = values(float.forward(tensor::<Cpu, 3>(x.clone(), [2, 5, inp])))
            .into_iter()
            .map(f64::from)
            .collect();
        let b = t.bias();
        let (_, mass) = reference_f64(&expect, &x, 10, None, b.as_deref());
        for path in [LinearPath::CpuF32, LinearPath::Float] {
            let mut t = t.clone();
            t.set_path(path);
            let y = t.forward(tensor::<Cpu, 3>(x.clone(), [2, 5, inp]));
            assert_eq!(y.dims(), [2, 5, out]);
            // Both sides are f32 products: twice the reference tolerance.
            let mass2: Vec<f64> = mass.iter().map(|m| 2.0 * m).collect();
            check_close(
                &format!("from_linear {inp}x{out} {path}"),
                &values(y),
                &want,
                &mass2,
            );
        }
    }
}

fn sample_layer(rng: &mut StdRng) -> TernaryLinear<Cpu> {
    let m = random_matrix(rng, 65, 70, ScaleLayout::PerGroup { group_size: 32 });
    let bias = random_f32(rng, 65, -1.0, 1.0);
    let d = random_f32(rng, 70, 0.1, 3.0);
    layer::<Cpu>(&m, Some(&bias), Some(&d), LinearPath::CpuF32)
}

fn assert_same_layer(a: &TernaryLinear<Cpu>, b: &TernaryLinear<Cpu>, rng: &mut StdRng) {
    assert_eq!(a.weights(), b.weights());
    assert_eq!(a.bias(), b.bias());
    assert_eq!(a.input_scale(), b.input_scale());
    let x = random_f32(rng, 3 * a.in_features(), -2.0, 2.0);
    let cols = a.in_features();
    let ya = values(a.forward(tensor::<Cpu, 2>(x.clone(), [3, cols])));
    let yb = values(b.forward(tensor::<Cpu, 2>(x, [3, cols])));
    assert_eq!(ya, yb);
}

#[test]
fn burn_record_should_round_trip() {
    let mut rng = rng();
    let device = Default::default();
    let l = sample_layer(&mut rng);
    let blank = || {
        TernaryLinear::<Cpu>::new(
            TernaryMatrix::zeros(1, 1, Scales::per_row(vec![1.0])).unwrap(),
            &device,
        )
        .unwrap()
        .with_path(LinearPath::CpuF32)
    };

    let mpk = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
    let bytes = Recorder::<Cpu>::record(&mpk, l.clone().into_record(), ()).unwrap();
    let rec: TernaryLinearRecord = Recorder::<Cpu>::load(&mpk, bytes, &device).unwrap();
    assert_same_layer(&l, &blank().load_record(rec), &mut rng);

    let bin = BinBytesRecorder::<FullPrecisionSettings>::new();
    let bytes = Recorder::<Cpu>::record(&bin, l.clone().into_record(), ()).unwrap();
    let rec: TernaryLinearRecord = Recorder::<Cpu>::load(&bin, bytes, &device).unwrap();
    let loaded = TernaryLinear::<Cpu>::from_record(rec, &device).with_path(LinearPath::CpuF32);
    assert_same_layer(&l, &loaded, &mut rng);

    // Without bias and input scale, per-row scales.
    let m = random_matrix(&mut rng, 3, 1, ScaleLayout::PerRow);
    let plain = layer::<Cpu>(&m, None, None, LinearPath::CpuF32);
    let bytes = Recorder::<Cpu>::record(&mpk, plain.clone().into_record(), ()).unwrap();
    let rec: TernaryLinearRecord = Recorder::<Cpu>::load(&mpk, bytes, &device).unwrap();
    assert_same_layer(&plain, &blank().load_record(rec), &mut rng);
}

#[test]
fn malformed_records_should_fail_to_load_with_an_error() {
    let mut rng = rng();
    let device = Default::default();
    let good: TernaryLinearRecordData = sample_layer(&mut rng).into_record().into();
    assert_eq!(good.layout, LAYOUT_PER_GROUP);
    let wpr = ternary_core::words_per_row(70);
    let mut cases: Vec<(&str, TernaryLinearRecordData)> = Vec::new();
    let mut both = good.clone();
    both.plus[wpr + 1] |= 1;
    both.minus[wpr + 1] |= 1;
    cases.push(("both the +1 and the -1 bit", both));
    let mut pad = good.clone();
    pad.plus[wpr - 1] |= 1 << 31; // column 127 of row 0: padding of a 70-column row
    cases.push(("padding bit", pad));
    let mut short = good.clone();
    short.minus.pop();
    cases.push(("words per plane", short));
    let mut scales = good.clone();
    scales.scales.push(1.0);
    cases.push(("scales", scales));
    let mut nan = good.clone();
    nan.scales[3] = f32::NAN;
    cases.push(("non-finite", nan));
    let mut bias = good.clone();
    bias.bias = Some(vec![0.0; 64]);
    cases.push(("bias", bias));
    let mut ds = good.clone();
    ds.input_scale = Some(vec![1.0; 71]);
    cases.push(("input scale", ds));
    let mut layout = good.clone();
    layout.layout = "diagonal".into();
    cases.push(("scale layout", layout));
    let mut group = good.clone();
    group.group_size = 48;
    cases.push(("group size", group));
    let mut huge = good.clone();
    huge.rows = u64::MAX;
    cases.push(("out of range", huge));

    let mpk = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
    for (needle, bad) in cases {
        let direct = TernaryLinearRecord::try_from(bad.clone()).unwrap_err();
        assert!(
            matches!(direct, LayerError::Format(_)),
            "{needle}: {direct}"
        );
        assert!(direct.to_string().contains(needle), "{needle}: {direct}");
        let bytes = Recorder::<Cpu>::record(&mpk, bad, ()).unwrap();
        let err: RecorderError =
            Recorder::<Cpu>::load::<TernaryLinearRecord>(&mpk, bytes, &device).unwrap_err();
        assert!(err.to_string().contains(needle), "{needle}: {err}");
    }
    // The unmodified data still loads.
    let bytes = Recorder::<Cpu>::record(&mpk, good, ()).unwrap();
    Recorder::<Cpu>::load::<TernaryLinearRecord>(&mpk, bytes, &device).unwrap();
}

fn temp_path(tag: &str) -> std::path::PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    std::env::temp_dir().join(format!(
        "ternary-layers-test-{tag}-{}-{nanos}.safetensors",
        std::process::id()
    ))
}

#[test]
fn safetensors_should_round_trip_and_reject_bad_files() {
    let mut rng = rng();
    let device = Default::default();
    let l = sample_layer(&mut rng);
    let path = temp_path("ok");
    l.save_safetensors(&path).unwrap();
    let back = TernaryLinear::<Cpu>::load_safetensors(&path, &device)
        .unwrap()
        .with_path(LinearPath::CpuF32);
    assert_same_layer(&l, &back, &mut rng);
    std::fs::remove_file(&path).unwrap();

    let m = random_matrix(&mut rng, 2, 33, ScaleLayout::PerRow);
    let plain = layer::<Cpu>(&m, None, None, LinearPath::CpuF32);
    let path = temp_path("plain");
    plain.save_safetensors(&path).unwrap();
    let back = TernaryLinear::<Cpu>::load_safetensors(&path, &device).unwrap();
    assert_eq!((back.bias(), back.input_scale()), (None, None));
    assert_eq!(back.matrix().unwrap(), &m);
    std::fs::remove_file(&path).unwrap();

    // A file without `weight`, with an unknown tensor, with a wrongly shaped bias, or garbage.
    let other = temp_path("other");
    ternary_core::io::save(&other, &[("w", &m)], ternary_core::io::Storage::Planes).unwrap();
    let e = TernaryLinear::<Cpu>::load_safetensors(&other, &device).unwrap_err();
    assert!(
        matches!(e, LayerError::Format(_)) && e.to_string().contains("\"w\""),
        "{e}"
    );
    std::fs::remove_file(&other).unwrap();
    let bad_bias = temp_path("bias");
    let b = ternary_core::io::FloatTensor::new(vec![3], vec![0.0; 3]).unwrap();
    ternary_core::io::save_tensors(
        &bad_bias,
        &[
            ("weight", ternary_core::io::TensorRef::Ternary(&m)),
            ("bias", ternary_core::io::TensorRef::Float(&b)),
        ],
        ternary_core::io::Storage::Packed,
    )
    .unwrap();
    let e = TernaryLinear::<Cpu>::load_safetensors(&bad_bias, &device).unwrap_err();
    assert!(e.to_string().contains("bias shape"), "{e}");
    std::fs::write(&bad_bias, b"not a safetensors file").unwrap();
    assert!(TernaryLinear::<Cpu>::load_safetensors(&bad_bias, &device).is_err());
    std::fs::remove_file(&bad_bias).unwrap();
    assert!(TernaryLinear::<Cpu>::load_safetensors(&bad_bias, &device).is_err());
}

#[test]
fn linear_layer_seam_should_expose_the_layer() {
    let mut rng = rng();
    let l = sample_layer(&mut rng);
    let boxed: ternary_layers::Linear<Cpu> = Box::new(l.clone());
    assert_eq!(boxed.kind(), "ternary");
    assert_eq!((boxed.in_features(), boxed.out_features()), (70, 65));
    let back = boxed
        .as_any()
        .and_then(|a| a.downcast_ref::<TernaryLinear<Cpu>>())
        .expect("downcast to TernaryLinear");
    assert!(Arc::ptr_eq(
        back.matrix_arc().unwrap(),
        l.matrix_arc().unwrap()
    ));
    // weight() is Q·diag(d), [out, in].
    let w = values(boxed.weight());
    let deq = l.matrix().unwrap().dequantize();
    let d = l.input_scale().unwrap();
    for (i, (&got, &q)) in w.iter().zip(&deq).enumerate() {
        assert_eq!(got, q * d[i % 70], "[{i}]");
    }
    // The seam's forward is the layer's (bias included).
    let x = random_f32(&mut rng, 2 * 70, -2.0, 2.0);
    let y1 = values(boxed.forward(tensor::<Cpu, 2>(x.clone(), [2, 70])));
    let y2 = values(l.forward(tensor::<Cpu, 2>(x, [2, 70])));
    assert_eq!(y1, y2);
}

#[test]
fn bad_inputs_should_be_errors_or_nan_not_panics() {
    let mut rng = rng();
    let m = random_matrix(&mut rng, 5, 64, ScaleLayout::PerRow);
    let device = Default::default();
    let l = TernaryLinear::<Cpu>::new(m.clone(), &device).unwrap();
    assert!(matches!(
        l.clone().with_bias(vec![0.0; 4]),
        Err(LayerError::Shape(_))
    ));
    assert!(matches!(
        l.clone().with_bias(vec![f32::NAN; 5]),
        Err(LayerError::Invalid(_))
    ));
    assert!(matches!(
        l.clone().with_input_scale(vec![1.0; 63]),
        Err(LayerError::Shape(_))
    ));
    let e = l
        .try_forward(tensor::<Cpu, 2>(vec![0.0; 2 * 63], [2, 63]))
        .unwrap_err();
    assert!(matches!(e, LayerError::Shape(_)), "{e}");
    // A token holding NaN gives a NaN row on the int8 path; the other tokens are unaffected.
    let mut x = random_f32(&mut rng, 3 * 64, -1.0, 1.0);
    x[64 + 7] = f32::NAN;
    let y = values(
        l.clone()
            .with_path(LinearPath::CpuInt8)
            .forward(tensor::<Cpu, 2>(x.clone(), [3, 64])),
    );
    assert!(y[5..10].iter().all(|v| v.is_nan()));
    let mut clean = x.clone();
    clean[64..128].fill(0.0);
    let want = reference_int8(&m, &clean, 3, None, None, false);
    assert_eq!(&y[..5], &want[..5]);
    assert_eq!(&y[10..], &want[10..]);
    // Parsing path names.
    assert_eq!(
        "cpu-int8".parse::<LinearPath>().unwrap(),
        LinearPath::CpuInt8
    );
    assert!("gpu".parse::<LinearPath>().is_err());
}

#[test]
fn clones_should_share_the_host_matrix() {
    let mut rng = rng();
    let l = sample_layer(&mut rng);
    let c = l.clone();
    assert!(Arc::ptr_eq(
        l.matrix_arc().unwrap(),
        c.matrix_arc().unwrap()
    ));
    let rec = c.into_record();
    let back = TernaryLinear::<Cpu>::from_record(rec, &Default::default());
    assert!(Arc::ptr_eq(
        l.matrix_arc().unwrap(),
        back.matrix_arc().unwrap()
    ));
}

/// A user model mixing `TernaryLinear` with `burn::nn::Linear`, as `#[derive(Module)]` sees it.
#[derive(Module, Debug)]
struct Net<B: Backend> {
    ternary: TernaryLinear<B>,
    float: Linear<B>,
}

impl<B: ternary_layers::TernaryBackend> Net<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.float.forward(self.ternary.forward(x))
    }
}

#[test]
fn derived_module_should_hold_the_layer_and_round_trip_its_record() {
    let mut rng = rng();
    let device = Default::default();
    let net = Net::<Cpu> {
        ternary: sample_layer(&mut rng),
        float: LinearConfig::new(65, 9).init(&device),
    };
    // Burn initializes parameters lazily; clones of an uninitialized one initialize apart.
    let _ = net.float.weight.val();
    let _ = net.float.bias.as_ref().map(|b| b.val());
    let mpk = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
    let bytes = Recorder::<Cpu>::record(&mpk, net.clone().into_record(), ()).unwrap();
    let blank = Net::<Cpu> {
        ternary: TernaryLinear::new(
            TernaryMatrix::zeros(1, 1, Scales::per_row(vec![1.0])).unwrap(),
            &device,
        )
        .unwrap()
        .with_path(LinearPath::CpuF32),
        float: LinearConfig::new(65, 9).init(&device),
    };
    let loaded = blank.load_record(Recorder::<Cpu>::load(&mpk, bytes, &device).unwrap());
    assert_eq!(loaded.ternary.weights(), net.ternary.weights());
    assert_eq!(
        values(loaded.float.weight.val()),
        values(net.float.weight.val()),
        "float weight"
    );
    assert_eq!(loaded.ternary.bias(), net.ternary.bias());
    assert_eq!(loaded.ternary.input_scale(), net.ternary.input_scale());
    assert_eq!(
        loaded.float.bias.as_ref().map(|b| values(b.val())),
        net.float.bias.as_ref().map(|b| values(b.val())),
        "float bias"
    );
    let x = random_f32(&mut rng, 4 * 70, -2.0, 2.0);
    let a = values(net.forward(tensor::<Cpu, 2>(x.clone(), [4, 70])));
    let b = values(loaded.forward(tensor::<Cpu, 2>(x, [4, 70])));
    // Same weights; the float layer's threaded matmul may round differently run to run.
    for (i, (p, q)) in a.iter().zip(&b).enumerate() {
        assert!((p - q).abs() <= 1e-5 * (1.0 + q.abs()), "[{i}] {p} vs {q}");
    }
    // The ternary weights are not float parameters: only the float layer counts.
    assert_eq!(net.num_params(), 65 * 9 + 9);
}

/// Burn's autodiff backend over the CPU backend.
type Ad = burn::backend::Autodiff<Cpu>;

#[test]
fn autodiff_backend_should_forward_inference_and_take_gradients_through_the_float_path() {
    let mut rng = rng();
    let (rows, cols, n) = (33, 65, 3);
    let m = random_matrix(
        &mut rng,
        rows,
        cols,
        ScaleLayout::PerGroup { group_size: 32 },
    );
    let bias = random_f32(&mut rng, rows, -1.0, 1.0);
    let d = random_f32(&mut rng, cols, 0.5, 2.0);
    let x = random_f32(&mut rng, n * cols, -4.0, 4.0);
    let (want, mass) = reference_f64(&m, &x, n, Some(&d), Some(&bias));
    assert_eq!(LinearPath::Auto.resolve::<Ad>(), LinearPath::CpuF32);

    // Inference (the input tracks nothing): the inner backend's paths, same values as on `Cpu`.
    for path in [LinearPath::Auto, LinearPath::CpuF32, LinearPath::CpuInt8] {
        let cpu = values(
            layer::<Cpu>(&m, Some(&bias), Some(&d), path)
                .forward(tensor::<Cpu, 2>(x.clone(), [n, cols])),
        );
        let ad = values(
            layer::<Ad>(&m, Some(&bias), Some(&d), path)
                .forward(tensor::<Ad, 2>(x.clone(), [n, cols])),
        );
        assert_eq!(ad, cpu, "{path}");
    }
    let ad = values(
        layer::<Ad>(&m, Some(&bias), Some(&d), LinearPath::Auto)
            .forward(tensor::<Ad, 2>(x.clone(), [n, cols])),
    );
    check_close("autodiff inference", &ad, &want, &mass);
    // The cube path does not exist on this backend: an error naming it, not a fallback.
    let l = layer::<Ad>(&m, None, None, LinearPath::Cube);
    match l.try_forward(tensor::<Ad, 2>(x.clone(), [n, cols])) {
        Err(LayerError::Unsupported { path: "cube", .. }) => {}
        other => panic!("expected Unsupported(cube), got {other:?}"),
    }

    // Training: a tracked input takes the float path under Auto, and the gradient of
    // L = Σ_{j,r} g[j, r] · y[j, r] is ∂L/∂x[j, c] = Σ_r g[j, r] · s[r, g(c)] · t[r, c] · d[c].
    let g = random_f32(&mut rng, n * rows, -1.0, 1.0);
    let l = layer::<Ad>(&m, Some(&bias), Some(&d), LinearPath::Auto);
    let xt = tensor::<Ad, 2>(x.clone(), [n, cols]).require_grad();
    let y = l.forward(xt.clone());
    check_close(
        "autodiff training forward",
        &values(y.clone()),
        &want,
        &mass,
    );
    let loss = y.mul(tensor::<Ad, 2>(g.clone(), [n, rows])).sum();
    let grads = loss.backward();
    let gx = values(xt.grad(&grads).expect("x has a gradient"));
    let w = m.dequantize();
    for j in 0..n {
        for c in 0..cols {
            let (mut s, mut mass) = (0f64, 0f64);
            for r in 0..rows {
                let t = f64::from(g[j * rows + r]) * f64::from(w[r * cols + c]) * f64::from(d[c]);
                s += t;
                mass += t.abs();
            }
            let got = f64::from(gx[j * cols + c]);
            assert!(
                (got - s).abs() <= TOL * mass + 1e-12,
                "∂L/∂x[{j}, {c}] = {got}, reference {s} (mass {mass})"
            );
        }
    }
    // Explicit host paths would drop the gradient: an error instead.
    for path in [LinearPath::CpuF32, LinearPath::CpuInt8, LinearPath::Cube] {
        let l = layer::<Ad>(&m, None, None, path);
        let xt = tensor::<Ad, 2>(x.clone(), [n, cols]).require_grad();
        match l.try_forward(xt) {
            Err(LayerError::Unsupported {
                path: p, reason, ..
            }) => {
                assert_eq!(p, path.name());
                assert!(reason.contains("gradients"), "{reason}");
            }
            other => panic!("{path}: expected Unsupported, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Two trit-planes: `Q = M₁ + M₂ = s·(3·T₁ + T₂)`
// ---------------------------------------------------------------------------------------------

fn two_plane_layer(
    rng: &mut StdRng,
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
) -> (TernaryLinear<Cpu>, Vec<i8>, Scales) {
    let (m, levels, scales) = ternary_testkit::random_two_plane(rng, rows, cols, layout);
    let l = TernaryLinear::<Cpu>::from_weights(m, &Default::default())
        .unwrap()
        .with_bias(random_f32(rng, rows, -1.0, 1.0))
        .unwrap()
        .with_input_scale(random_f32(rng, cols, 0.1, 3.0))
        .unwrap();
    (l, levels, scales)
}

#[test]
fn two_plane_layer_should_match_the_f64_reference_on_every_host_path_and_edge_shape() {
    let (mut rng, seed) = ternary_testkit::seeded();
    let sizes = [0, 1, 63, 64, 65, 576];
    let mut case = 0;
    for rows in sizes {
        for cols in sizes {
            let layout = LAYOUTS[case % LAYOUTS.len()];
            case += 1;
            let (l, levels, scales) = two_plane_layer(&mut rng, rows, cols, layout);
            assert_eq!(
                (l.planes(), l.out_features(), l.in_features()),
                (2, rows, cols)
            );
            let d = l.input_scale().unwrap().to_vec();
            let b = l.bias();
            for n in [0, 1, 3] {
                let x = random_f32(&mut rng, n * cols, -2.0, 2.0);
                let what = format!("seed {seed}, {rows}x{cols} {layout:?}, n {n}");
                // f32 and float paths: against x ⊙ d in f64.
                let xd: Vec<f64> = x
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| f64::from(v) * f64::from(d[k % cols.max(1)]))
                    .collect();
                let (want, mass) =
                    reference_levels(&levels, &scales, (rows, cols), &xd, n, b.as_deref());
                for path in [LinearPath::Auto, LinearPath::CpuF32, LinearPath::Float] {
                    let y = l
                        .clone()
                        .with_path(path)
                        .forward(tensor::<Cpu, 2>(x.clone(), [n, cols]));
                    assert_eq!(y.dims(), [n, rows], "{what} {path}");
                    check_close(&format!("{what} {path}"), &values(y), &want, &mass);
                }
                // Int8: one per-token quantization of the f32 x ⊙ d for both planes.
                let xs: Vec<f32> = x
                    .iter()
                    .enumerate()
                    .map(|(k, &v)| v * d[k % cols.max(1)])
                    .collect();
                // Two codes: x ⊙ d ≈ s₁·q₁ + s₂·q₂ (tokens j and n + j), both planes.
                let one = QuantizedActivations::quantize(&xs, n, cols).unwrap();
                let two = QuantizedActivations::quantize_two(&xs, n, cols).unwrap();
                for (path, a, codes) in [
                    (LinearPath::CpuInt8, &one, 1),
                    (LinearPath::CpuInt8x2, &two, 2),
                ] {
                    let code =
                        |t: usize, k: usize| f64::from(a.row(t)[k]) * f64::from(a.scales()[t]);
                    let xq: Vec<f64> = (0..n * cols)
                        .map(|k| (0..codes).map(|i| code(i * n + k / cols, k % cols)).sum())
                        .collect();
                    let (want, mass) =
                        reference_levels(&levels, &scales, (rows, cols), &xq, n, b.as_deref());
                    let y = l
                        .clone()
                        .with_path(path)
                        .forward(tensor::<Cpu, 2>(x.clone(), [n, cols]));
                    check_close(&format!("{what} {path}"), &values(y), &want, &mass);
                }
            }
        }
    }
}

#[test]
fn two_plane_layer_should_round_trip_records_and_files_exactly() {
    let mut rng = rng();
    let device = Default::default();
    let (l, ..) = two_plane_layer(&mut rng, 65, 70, ScaleLayout::PerGroup { group_size: 32 });
    let l = l.with_path(LinearPath::CpuF32);
    // Burn record through a self-describing recorder, into a one-plane layer.
    let mpk = NamedMpkBytesRecorder::<FullPrecisionSettings>::new();
    let bytes = Recorder::<Cpu>::record(&mpk, l.clone().into_record(), ()).unwrap();
    let blank = TernaryLinear::<Cpu>::new(
        TernaryMatrix::zeros(1, 1, Scales::per_row(vec![1.0])).unwrap(),
        &device,
    )
    .unwrap()
    .with_path(LinearPath::CpuF32);
    let back = blank.load_record(Recorder::<Cpu>::load(&mpk, bytes, &device).unwrap());
    assert_eq!(back.planes(), 2);
    assert_same_layer(&l, &back, &mut rng);
    // The record's plain form and back.
    let data = TernaryLinearRecordData::from(l.to_record());
    assert!(data.plus2.is_some() && data.minus2.is_some() && data.scales2.is_some());
    let rec = TernaryLinearRecord::try_from(data).unwrap();
    assert_eq!(rec.weights(), l.weights());
    // Single-layer safetensors file.
    let path = temp_path("two-plane");
    l.save_safetensors(&path).unwrap();
    let back = TernaryLinear::<Cpu>::load_safetensors(&path, &device)
        .unwrap()
        .with_path(LinearPath::CpuF32);
    assert_same_layer(&l, &back, &mut rng);
    std::fs::remove_file(&path).unwrap();
    // The seam: kind, and the effective weight M₁ + M₂ scaled by d.
    let boxed: ternary_layers::Linear<Cpu> = Box::new(l.clone());
    assert_eq!(boxed.kind(), "ternary (2 planes)");
    assert_eq!(values(boxed.weight()), l.effective_weight_rows());
}

#[test]
fn two_plane_bad_inputs_should_be_clear_errors() {
    let mut rng = rng();
    let device = Default::default();
    let (l, ..) = two_plane_layer(&mut rng, 4, 64, ScaleLayout::PerRow);
    // A one-plane consumer is refused, never handed plane 1 alone.
    for e in [
        l.matrix().unwrap_err(),
        l.matrix_arc().unwrap_err(),
        l.to_record().matrix().unwrap_err(),
    ] {
        assert!(
            matches!(e, LayerError::OnePlaneOnly(_)) && e.to_string().contains("two trit-planes"),
            "{e}"
        );
    }
    let good = TernaryLinearRecordData::from(l.to_record());
    // Plane 2 of the wrong length, with both bits set, or incomplete.
    let mut d = good.clone();
    d.plus2.as_mut().unwrap().push(0);
    let e = TernaryLinearRecord::try_from(d).unwrap_err();
    assert!(e.to_string().contains("plane 2"), "{e}");
    let mut d = good.clone();
    d.plus2.as_mut().unwrap()[0] |= 1;
    d.minus2.as_mut().unwrap()[0] |= 1;
    let e = TernaryLinearRecord::try_from(d).unwrap_err();
    assert!(
        e.to_string().contains("plane 2") && e.to_string().contains("both"),
        "{e}"
    );
    let mut d = good.clone();
    d.scales2 = None;
    let e = TernaryLinearRecord::try_from(d).unwrap_err();
    assert!(e.to_string().contains("all of plus2"), "{e}");
    // A layer file whose plane 2 has another shape.
    let path = temp_path("two-plane-bad");
    let m1 = random_matrix(&mut rng, 4, 64, ScaleLayout::PerRow);
    let m2 = random_matrix(&mut rng, 4, 65, ScaleLayout::PerRow);
    ternary_core::io::save(
        &path,
        &[("weight", &m1), ("weight_plane2", &m2)],
        ternary_core::io::Storage::Planes,
    )
    .unwrap();
    let e = TernaryLinear::<Cpu>::load_safetensors(&path, &device).unwrap_err();
    assert!(
        matches!(e, LayerError::Format(_)) && e.to_string().contains("weight_plane2"),
        "{e}"
    );
    std::fs::remove_file(&path).unwrap();
}
