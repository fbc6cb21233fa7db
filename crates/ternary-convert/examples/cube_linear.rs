//! [`TernaryLinear`] on Burn's CubeCL backend (wgpu): the cube path (`ternary-kernels` reading
//! the bit planes) against the float fallback (dequantized `f32` weight + Burn's matmul), per
//! layer shape and, with `--model`, SmolLM2-135M end to end.
//!
//! ```text
//! cargo run --release -p ternary-convert --features wgpu --example cube_linear -- [--reps 20] [--model] [--n 16]
//! ```
//! Per shape and token count: median time of a forward (synchronized with `B::sync`) on each
//! path, their ratio, the weight bytes each path keeps on the device, and the largest difference
//! between the two outputs relative to the largest output. With `--model`: every block linear of
//! SmolLM2-135M ternary (abs-mean, groups of 64, `lm_head` float), greedy decoding of `--n`
//! tokens with the float model and with the ternary layers on each path.
//!
//! The default wgpu device is whatever the machine has; on a machine without a GPU it is Mesa's
//! lavapipe (Vulkan on the CPU), whose timings say nothing about a GPU.

use std::time::Instant;

use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ternary_core::quant::{Method, QuantConfig, quantize};
use ternary_core::{ScaleLayout, Scales, TernaryMatrix};
use ternary_layers::Linear;
use ternary_layers::to_rows;
use ternary_layers::{LinearPath, TernaryLinear};
use ternary_models::{Llama, Sampling, fetch, generate, load};

type Gpu = CubeBackend<WgpuRuntime, f32, i32, u32>;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// Deterministic pseudo-random values in `[-1, 1)` (SplitMix64).
fn values(seed: u64, len: usize) -> Vec<f32> {
    let mut rng = ternary_core::rng::SplitMix64::new(seed);
    (0..len).map(|_| rng.signed_unit_f32()).collect()
}

/// A matrix with about 1/3 zeros and scales in `[0.5, 1.5)`, groups of 64.
fn matrix(rows: usize, cols: usize) -> TernaryMatrix {
    let trits: Vec<i8> = values(1, rows * cols)
        .iter()
        .map(|&v| {
            if v < -1.0 / 3.0 {
                -1
            } else if v < 1.0 / 3.0 {
                0
            } else {
                1
            }
        })
        .collect();
    let layout = ScaleLayout::PerGroup { group_size: 64 };
    let scales = values(2, rows * layout.groups_per_row(cols))
        .iter()
        .map(|v| 1.0 + 0.5 * v)
        .collect();
    TernaryMatrix::from_trits(rows, cols, &trits, Scales::new(layout, scales))
        .expect("consistent shapes")
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn time_forward(
    layer: &TernaryLinear<Gpu>,
    x: &Tensor<Gpu, 2>,
    reps: usize,
) -> Result<(f64, Vec<f32>), Box<dyn std::error::Error>> {
    let device = Default::default();
    // Warm-up: uploads, kernel compilation, autotuning.
    let y = layer.try_forward(x.clone())?;
    let out = to_rows(y)?;
    let mut times = Vec::with_capacity(reps);
    for _ in 0..reps {
        Gpu::sync(&device)?;
        let t = Instant::now();
        let y = layer.try_forward(x.clone())?;
        Gpu::sync(&device)?;
        times.push(t.elapsed().as_secs_f64());
        drop(y);
    }
    Ok((median(times), out))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reps: usize = arg(&args, "--reps").map_or(Ok(20), |s| s.parse())?;
    let device = Default::default();
    println!("wgpu device: {:?}", <Gpu as Backend>::name(&device));
    println!(
        "| out × in | tokens | float ms | cube ms | float / cube | weight bytes float | cube | max |Δ| / max |y| |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for &(rows, cols) in &[(1536, 576), (576, 1536), (4096, 4096)] {
        let m = matrix(rows, cols);
        let cube_bytes = 4 * (m.plus().len() + m.minus().len() + m.scales().values().len());
        let float_bytes = 4 * rows * cols;
        let base = TernaryLinear::<Gpu>::new(m, &device)?;
        for &n in &[1usize, 16, 128] {
            let x = Tensor::<Gpu, 2>::from_data(
                TensorData::new(values(3 + n as u64, n * cols), [n, cols]),
                &device,
            );
            let float = base.clone().with_path(LinearPath::Float);
            let cube = base.clone().with_path(LinearPath::Cube);
            let (tf, yf) = time_forward(&float, &x, reps)?;
            let (tc, yc) = time_forward(&cube, &x, reps)?;
            let scale = yf.iter().fold(0f32, |s, v| s.max(v.abs()));
            let diff = yf
                .iter()
                .zip(&yc)
                .fold(0f32, |d, (a, b)| d.max((a - b).abs()));
            println!(
                "| {rows} × {cols} | {n} | {:.3} | {:.3} | {:.2}× | {float_bytes} | {cube_bytes} | {:.1e} |",
                tf * 1e3,
                tc * 1e3,
                tf / tc,
                diff / scale
            );
        }
    }

    if args.iter().any(|a| a == "--model") {
        let n: usize = arg(&args, "--n").map_or(Ok(16), |s| s.parse())?;
        let mut m = load::<Gpu>(fetch::smollm2_path(), &device)?;
        let prompt = m
            .tokenizer
            .encode("Once upon a time, in a small village,", true)?;
        let decode = |model: &Llama<Gpu>, name: &str| -> Result<(), Box<dyn std::error::Error>> {
            let (ids, stats) = generate(model, &prompt, n, Sampling::Greedy, None, |_| {})?;
            println!(
                "{name:<24} prefill {:6.1} tok/s, decode {:6.2} tok/s; first tokens {:?}",
                stats.prefill_tokens_per_sec(),
                stats.decode_tokens_per_sec(),
                &ids[..ids.len().min(8)]
            );
            Ok(())
        };
        decode(&m.model, "float")?;
        let cfg = QuantConfig::new(Method::AbsMean, ScaleLayout::PerGroup { group_size: 64 });
        let mut ternary = Vec::new();
        for (name, layer) in m.model.linears() {
            if name == "lm_head" {
                continue;
            }
            let w = to_rows(layer.weight())?;
            let (q, _) = quantize(&w, layer.out_features(), layer.in_features(), &cfg)?;
            ternary.push((name, TernaryLinear::<Gpu>::new(q, &device)?));
        }
        for path in [LinearPath::Float, LinearPath::Cube] {
            let mut slots: Vec<(String, &mut Linear<Gpu>)> = m.model.linears_mut();
            for (name, layer) in &ternary {
                if let Some(slot) = slots.iter_mut().find(|(s, _)| s == name) {
                    *slot.1 = Box::new(layer.clone().with_path(path));
                }
            }
            decode(&m.model, &format!("{} ternary, {path}", ternary.len()))?;
        }
    }
    Ok(())
}
