//! A converted model on the GPU: the tiny fixture converted on the CPU, saved, and loaded on
//! Burn's CubeCL backend over wgpu (Mesa's lavapipe in CI), where its ternary layers take the
//! cube path; its logits must match the CPU's.
#![cfg(feature = "wgpu")]

use burn::backend::wgpu::{CubeBackend, WgpuRuntime};
use burn::tensor::backend::Backend;
use ternary_core::ScaleLayout;
use ternary_layers::{Cpu, TernaryBackend, to_rows};
use ternary_models::{Llama, Logits, load_safetensors_dir};

/// Burn's CubeCL backend on wgpu, named explicitly (not `burn::backend::Wgpu`, which becomes a
/// fused backend when Burn's `fusion` feature is on anywhere in the build).
type Gpu = CubeBackend<WgpuRuntime, f32, i32, u32>;
/// The fused backend over it (the `fusion` feature turns on Burn's).
#[cfg(feature = "fusion")]
type Fused = burn::backend::Wgpu;

fn fixture() -> std::path::PathBuf {
    ternary_testkit::fixture_path("tiny-llama")
}

/// Logits of `model` for `ids`, all positions.
fn logits<B: Backend>(model: &Llama<B>, ids: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache();
    to_rows(model.forward(ids, &mut cache, Logits::All).unwrap()).unwrap()
}

#[test]
fn converted_model_should_give_the_same_logits_on_the_gpu_cube_path() {
    converted_model::<Gpu>();
}

#[cfg(feature = "fusion")]
#[test]
fn converted_model_should_give_the_same_logits_on_the_fused_cube_path() {
    converted_model::<Fused>();
}

fn converted_model<B: TernaryBackend>() {
    // Convert the tiny fixture on the CPU (every linear layer ternary), save it, load it on
    // the GPU backend: its layers then take the cube path.
    let mut m = load_safetensors_dir::<Cpu>(fixture(), &Default::default()).unwrap();
    let cfg = ternary_convert::ConvertConfig {
        layout: ScaleLayout::PerGroup { group_size: 32 },
        input_scale_alphas: vec![0.0, 0.5],
        budget: None,
        measure: false,
        ..Default::default()
    };
    ternary_convert::convert(
        &mut m.model,
        &m.tokenizer,
        ternary_convert::CALIBRATION_TEXT,
        &cfg,
        &mut |_| {},
    )
    .unwrap();
    // One directory per backend: the tests run in parallel.
    let tag: String = std::any::type_name::<B>()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .collect();
    let dir =
        std::env::temp_dir().join(format!("ternary-convert-cube-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("tiny.safetensors");
    ternary_convert::save(&path, &m.model, &m.tokenizer).unwrap();
    let gpu = ternary_convert::load::<B>(&path, &Default::default()).unwrap();
    let cpu = ternary_convert::load::<Cpu>(&path, &Default::default()).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();

    let ternary = gpu
        .model
        .linears()
        .iter()
        .filter(|(_, l)| l.kind() == "ternary")
        .count();
    assert!(ternary > 0, "the converted model has no ternary layer");
    let ids: Vec<u32> = gpu
        .tokenizer
        .encode("The quick brown fox jumps over the lazy dog.", true)
        .unwrap();
    let (a, b) = (logits(&cpu.model, &ids), logits(&gpu.model, &ids));
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0f32, |s, v| s.max(v.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |w, (x, y)| w.max((x - y).abs()));
    eprintln!("{ternary} ternary layers; max |logit| {scale}, max |cpu − gpu| {worst:e}");
    // Both run f32 throughout; the whole network's rounding differences stay far below 1e-3
    // of the logit scale, while one wrong layer moves logits by O(scale).
    assert!(
        worst <= 1e-3 * scale,
        "max |cpu − gpu| {worst} vs scale {scale}"
    );
}
