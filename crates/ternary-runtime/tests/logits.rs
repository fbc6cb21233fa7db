//! The runtime's logits against the reference (`Llama::forward`, the Burn model) on the
//! committed tiny fixtures, prefill then decode steps, at every SIMD level this host has and
//! with 1, 2 and 3 threads; greedy generations token for token; bad input as errors.
//!
//! Tolerance: `common::TOL` (1e-4) of each step's logit range; a runtime that repacked its
//! ternary matrices (`Runtime::from_owned_model`) gives the shared runtime's logits bit for bit.

mod common;

use std::path::PathBuf;

use common::{BITNET_TOL, TOL, assert_close, assert_close_tol, reference, runtime_steps};
use ternary_core::ScaleLayout;
use ternary_core::kernels::Level;
use ternary_core::quant::{Method, QuantConfig, quantize};
use ternary_layers::{Cpu, LinearPath, TernaryLinear, to_rows};
use ternary_models::linear::HostLinear;
use ternary_models::{
    BurnDecoder, Llama, LoadedModel, Logits, Sampling, generate_with, load_gguf,
    load_safetensors_dir,
};
use ternary_runtime::{FloatWeights, KvType, LmHead, Runtime, RuntimeOptions, TernaryActivations};

fn fixtures() -> PathBuf {
    ternary_testkit::fixture_path("")
}

/// Token ids in the vocabulary, deterministic: a prompt of `n` tokens.
fn ids(vocab: usize, n: usize) -> Vec<u32> {
    (0..n).map(|i| ((i * 37 + 11) % vocab) as u32).collect()
}

/// Every available level × threads 1, 2, 3 (and a prefill cut into chunks of 3 tokens).
fn check_all(model: &Llama<Cpu>, what: &str) {
    check_all_tol(model, what, TOL)
}

/// [`check_all`] with tolerance `tol`.
fn check_all_tol(model: &Llama<Cpu>, what: &str, tol: f64) {
    check_all_prompt(model, what, tol, 72)
}

/// [`check_all_tol`] with whole prefills of `prefill` tokens (then 8 decode steps).
///
/// At 72 tokens the prefill's attention blocks (9–36 tokens at 1–3 threads) take the kernel
/// with tokens in lanes; the prefill cut into chunks of 3 tokens, and every decode step, take
/// its one-token-at-a-time path. The chunked case runs on a 12-token prompt: over 72 tokens, one int8
/// activation rounding that flips between the reference's and the runtime's summation orders
/// moves a logit by more than the tolerance.
fn check_all_prompt(model: &Llama<Cpu>, what: &str, tol: f64, prefill: usize) {
    let v = model.config().vocab_size;
    let long = ids(v, prefill + 8);
    let short = ids(v, 12);
    let want_long = reference(model, &long, prefill);
    let want_short = reference(model, &short, 8);
    for level in Level::available() {
        for threads in [1, 2, 3] {
            for chunk in [128, 3] {
                if chunk == 3 && threads != 2 {
                    continue;
                }
                let (tokens, want, prefill) = if chunk == 3 {
                    (&short, &want_short, 8)
                } else {
                    (&long, &want_long, prefill)
                };
                let opts = RuntimeOptions {
                    threads,
                    level: Some(level),
                    chunk,
                    // The layers' own arithmetic (the default takes two int8 codes at AVX2
                    // for layers on `Auto`: `default_activations_should_…`).
                    ternary: TernaryActivations::AsLayer,
                    ..RuntimeOptions::default()
                };
                let mut rt = Runtime::from_model(model, opts).unwrap();
                let got = runtime_steps(&mut rt, tokens, prefill);
                let worst = assert_close_tol(
                    want,
                    &got,
                    &format!("{what} {level} threads {threads} chunk {chunk}"),
                    tol,
                );
                eprintln!("{what} {level} threads {threads} chunk {chunk}: worst {worst:.2e}");
            }
        }
    }
}

fn tiny_llama() -> LoadedModel<Cpu> {
    load_safetensors_dir::<Cpu>(fixtures().join("tiny-llama"), &Default::default()).unwrap()
}

/// Layer `i` replaced by a ternary layer quantized from its weight (optionally with a bias
/// and an input scale), computing on `path`.
fn make_ternary(
    model: &mut Llama<Cpu>,
    i: usize,
    cfg: &QuantConfig,
    extras: bool,
    path: LinearPath,
) {
    let mut linears = model.linears_mut();
    let (_, slot) = &mut linears[i];
    let (rows, cols) = (slot.out_features(), slot.in_features());
    let w = to_rows(slot.weight()).unwrap();
    let (m, _) = quantize(&w, rows, cols, cfg).unwrap();
    let mut layer = TernaryLinear::<Cpu>::new(m, &Default::default()).unwrap();
    if extras {
        let b: Vec<f32> = (0..rows).map(|r| 0.01 * (r as f32 - 3.5)).collect();
        let d: Vec<f32> = (0..cols).map(|c| 0.5 + (c % 7) as f32 * 0.25).collect();
        layer = layer.with_bias(b).unwrap().with_input_scale(d).unwrap();
    }
    **slot = Box::new(layer.with_path(path));
}

/// The tiny Llama with per-row and per-group ternary layers (some with bias and input
/// scale), float layers, a ternary head, and the ternary layers on `path`.
fn mixed_tiny(path: LinearPath) -> LoadedModel<Cpu> {
    let mut m = tiny_llama();
    let n = m.model.linears().len();
    let per_row = QuantConfig::new(Method::AbsMean, ScaleLayout::PerRow);
    let grouped = QuantConfig::new(
        Method::Twn { delta_factor: 0.7 },
        ScaleLayout::PerGroup { group_size: 32 },
    );
    for i in 0..n {
        match i % 4 {
            0 => make_ternary(&mut m.model, i, &per_row, false, path),
            1 => make_ternary(&mut m.model, i, &grouped, true, path),
            2 => make_ternary(&mut m.model, i, &grouped, false, path),
            _ => {}
        }
    }
    m
}

/// `Runtime::from_owned_model` repacks the int8 ternary matrices it alone holds (at AVX2 and
/// AVX-512: 2-bit fields) and must give `Runtime::from_model`'s logits bit for bit at every level, over
/// a prefill of 20 tokens (the panel GEMM, which turns fields back into planes), one cut into
/// chunks of 3 (the field kernel) and decode steps (its one-token path).
#[test]
fn owned_runtime_should_repack_and_match_the_shared_runtime_bit_for_bit() {
    let bitnet = |v: &str| {
        load_safetensors_dir::<Cpu>(fixtures().join("tiny-bitnet").join(v), &Default::default())
            .unwrap()
    };
    type Make = Box<dyn Fn() -> LoadedModel<Cpu>>;
    let makers: [(&str, Make); 5] = [
        ("mixed int8", Box::new(|| mixed_tiny(LinearPath::CpuInt8))),
        (
            "two planes int8x2",
            Box::new(|| two_plane_tiny(LinearPath::CpuInt8x2)),
        ),
        (
            "two planes int8",
            Box::new(|| two_plane_tiny(LinearPath::CpuInt8)),
        ),
        (
            "tiny-bitnet relu2-packed",
            Box::new(move || bitnet("relu2-packed")),
        ),
        (
            "tiny-bitnet tq2_0",
            Box::new(|| {
                load_gguf::<Cpu>(
                    fixtures()
                        .join("tiny-bitnet-gguf")
                        .join("tiny-bitnet-tq2_0.gguf"),
                    &Default::default(),
                )
                .unwrap()
            }),
        ),
    ];
    let bits = |v: &[Vec<f32>]| -> Vec<Vec<u32>> {
        v.iter()
            .map(|s| s.iter().map(|x| x.to_bits()).collect())
            .collect()
    };
    for (what, make) in &makers {
        let shared = make();
        let tokens = ids(shared.model.config().vocab_size, 26);
        for level in Level::available() {
            for (threads, chunk) in [(1, 128), (2, 128), (2, 3)] {
                let opts = RuntimeOptions {
                    threads,
                    level: Some(level),
                    chunk,
                    // Every ternary layer on int8 activations, whatever its own path.
                    ternary: TernaryActivations::Int8,
                    ..RuntimeOptions::default()
                };
                let mut a = Runtime::from_model(&shared.model, opts.clone()).unwrap();
                let mut b = Runtime::from_owned_model(make().model, opts).unwrap();
                let at = format!("{what} {level} threads {threads} chunk {chunk}");
                assert_eq!(a.repacked_layers(), 0, "{at}");
                if matches!(level, Level::Avx2 | Level::Avx512) {
                    assert!(b.repacked_layers() > 0, "{at}: nothing repacked");
                } else {
                    assert_eq!(b.repacked_layers(), 0, "{at}");
                }
                let (ga, gb) = (
                    runtime_steps(&mut a, &tokens, 20),
                    runtime_steps(&mut b, &tokens, 20),
                );
                assert_eq!(bits(&ga), bits(&gb), "{at}");
                eprintln!(
                    "{at}: {} layers repacked, logits equal",
                    b.repacked_layers()
                );
            }
        }
    }
}

#[test]
fn float_llama_should_match_reference() {
    check_all(&tiny_llama().model, "tiny-llama float");
}

#[test]
fn mixed_ternary_llama_should_match_reference_on_f32_and_int8_paths() {
    check_all(&mixed_tiny(LinearPath::Auto).model, "tiny-llama mixed f32");
    check_all(
        &mixed_tiny(LinearPath::CpuInt8).model,
        "tiny-llama mixed int8",
    );
    // Two codes: a first code that rounds the other way in the runtime's summation order is
    // corrected by the second, so the long prefill stays within the tolerance.
    check_all(
        &mixed_tiny(LinearPath::CpuInt8x2).model,
        "tiny-llama mixed int8x2",
    );
}

/// A model rotating `act(gate) ⊙ up` before `down_proj` in every forward pass (with its
/// residual stream rotated too): float, then with ternary layers, saved and loaded. A runtime
/// that skipped the rotation would multiply `down_proj`'s rotated rows with unrotated inputs.
#[test]
fn ffn_rotated_llama_should_match_reference() {
    let mut m = tiny_llama();
    ternary_convert::rotate::rotate_ffn(&mut m.model, 7).unwrap();
    ternary_convert::rotate::rotate_residual(&mut m.model, 8).unwrap();
    check_all(&m.model, "tiny-llama FFN-rotated float");
    let grouped = QuantConfig::new(
        Method::Twn { delta_factor: 0.7 },
        ScaleLayout::PerGroup { group_size: 32 },
    );
    for i in (0..m.model.linears().len()).step_by(2) {
        make_ternary(&mut m.model, i, &grouped, false, LinearPath::CpuInt8);
    }
    let dir = ternary_testkit::TempDir::new("rt-ffn-rotated");
    let path = dir.path("tiny.safetensors");
    ternary_convert::save(&path, &m.model, &m.tokenizer).unwrap();
    let back = ternary_convert::load::<Cpu>(&path, &Default::default()).unwrap();
    assert_eq!(back.model.config().ffn_rotation, Some(7));
    check_all(&back.model, "tiny-llama FFN-rotated, ternary, from a file");
}

#[test]
fn converted_file_should_match_reference() {
    let m = mixed_tiny(LinearPath::Auto);
    let dir = ternary_testkit::TempDir::new("rt-converted");
    let path = dir.path("tiny.safetensors");
    ternary_convert::save(&path, &m.model, &m.tokenizer).unwrap();
    let back = ternary_convert::load::<Cpu>(&path, &Default::default()).unwrap();
    check_all(&back.model, "tiny-llama converted file");
}

#[test]
fn converted_file_with_f16_floats_should_match_reference_and_hold_half_the_bytes() {
    // A file written with `FloatStorage::F16`: the loaded model keeps the table (its head is
    // ternary) as f16 and the runtime shares it; the float layers are f16 values, which
    // `FloatWeights::Auto` holds as f16. The runtime gives the reference logits of that
    // model, and holds 2 bytes less per embedding and float-layer value than for the exact
    // (f32) file.
    let m = mixed_tiny(LinearPath::Auto);
    let dir = ternary_testkit::TempDir::new("rt-converted-f16");
    let (exact, half) = (dir.path("exact.safetensors"), dir.path("half.safetensors"));
    ternary_convert::save(&exact, &m.model, &m.tokenizer).unwrap();
    ternary_convert::save_with(
        &half,
        &m.model,
        &m.tokenizer,
        ternary_convert::FloatStorage::F16,
    )
    .unwrap();
    let back = ternary_convert::load::<Cpu>(&half, &Default::default()).unwrap();
    assert!(back.model.embedding_host_f16().is_some());
    check_all(&back.model, "tiny-llama converted file, f16 floats");
    let e = ternary_convert::load::<Cpu>(&exact, &Default::default()).unwrap();
    let bytes = |model: &Llama<Cpu>| {
        Runtime::from_model(model, RuntimeOptions::with_threads(1))
            .unwrap()
            .weight_bytes()
    };
    let c = m.model.config();
    let float: usize = m
        .model
        .linears()
        .iter()
        .filter(|(_, l)| ternary_convert::model_file::as_ternary::<Cpu>(l.as_ref()).is_none())
        .map(|(_, l)| l.out_features() * l.in_features())
        .sum();
    assert!(float > 0);
    assert_eq!(
        bytes(&e.model) - bytes(&back.model),
        2 * (c.vocab_size * c.hidden_size + float) as u64
    );
}

#[test]
fn bitnet_checkpoints_should_match_reference() {
    for variant in ["relu2-packed", "relu2-bf16", "silu-bf16", "llama-packed"] {
        let m = load_safetensors_dir::<Cpu>(
            fixtures().join("tiny-bitnet").join(variant),
            &Default::default(),
        )
        .unwrap();
        // W1.58A8: every projection re-quantizes its input, so the 8-token prompt keeps the
        // chance of a code flip (common::BITNET_TOL) low; the float models cover long prefills.
        check_all_prompt(&m.model, &format!("tiny-bitnet {variant}"), BITNET_TOL, 8);
    }
}

#[test]
fn bitnet_gguf_should_match_reference() {
    for file in ["tiny-bitnet-tq1_0.gguf", "tiny-bitnet-tq2_0.gguf"] {
        let m = load_gguf::<Cpu>(
            fixtures().join("tiny-bitnet-gguf").join(file),
            &Default::default(),
        )
        .unwrap();
        check_all_prompt(&m.model, file, BITNET_TOL, 8);
    }
}

#[test]
fn greedy_generation_should_match_reference_token_for_token() {
    let models = [
        tiny_llama(),
        mixed_tiny(LinearPath::CpuInt8),
        load_safetensors_dir::<Cpu>(
            fixtures().join("tiny-bitnet/relu2-packed"),
            &Default::default(),
        )
        .unwrap(),
    ];
    for m in &models {
        let prompt = ids(m.model.config().vocab_size, 5);
        let (want, _) = generate_with(
            &mut BurnDecoder::new(&m.model),
            &prompt,
            12,
            Sampling::Greedy,
            None,
            |_| {},
        )
        .unwrap();
        for threads in [1, 2] {
            let mut rt =
                Runtime::from_model(&m.model, RuntimeOptions::with_threads(threads)).unwrap();
            let (got, _) =
                generate_with(&mut rt, &prompt, 12, Sampling::Greedy, None, |_| {}).unwrap();
            assert_eq!(got, want, "threads {threads}");
        }
    }
}

#[test]
fn int8_options_should_stay_close_to_reference() {
    // The int8 head and int8 ternary activations change the arithmetic: checked loosely
    // (1e-2 of the range) against the reference, and the int8 ternary activations exactly
    // against the reference with its layers switched to CpuInt8.
    // Two codes per token likewise against CpuInt8x2 layers, and far closer to the f32
    // activations than one code (below).
    let m = mixed_tiny(LinearPath::Auto);
    let tokens = ids(m.model.config().vocab_size, 10);
    let [got, got2] = [
        (TernaryActivations::Int8, LinearPath::CpuInt8),
        (TernaryActivations::Int8x2, LinearPath::CpuInt8x2),
    ]
    .map(|(ternary, path)| {
        let opts = RuntimeOptions {
            threads: 2,
            ternary,
            ..RuntimeOptions::default()
        };
        let got = runtime_steps(
            &mut Runtime::from_model(&m.model, opts).unwrap(),
            &tokens,
            6,
        );
        let want = reference(&mixed_tiny(path).model, &tokens, 6);
        assert_close(&want, &got, &format!("TernaryActivations::{ternary:?}"));
        got
    });
    let want_f32 = reference(&m.model, &tokens, 6);
    let worst = |got: &[Vec<f32>]| {
        want_f32
            .iter()
            .zip(got)
            .map(|(w, g)| {
                let range = w.iter().fold(0f32, |m, v| m.max(v.abs())) as f64 * 2.0;
                let e = w
                    .iter()
                    .zip(g)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0f32, f32::max);
                f64::from(e) / range
            })
            .fold(0f64, f64::max)
    };
    let (one, two) = (worst(&got), worst(&got2));
    eprintln!("worst logit error, share of the range: int8 {one:e}, int8x2 {two:e}");
    assert!(
        two <= 2.0 * TOL && two * 20.0 <= one,
        "int8 {one:e}, int8x2 {two:e}"
    );
    let f = tiny_llama();
    let want = reference(&f.model, &tokens, 6);
    for (kv, head) in [(KvType::F16, LmHead::AsModel), (KvType::F32, LmHead::Int8)] {
        let opts = RuntimeOptions {
            threads: 2,
            kv,
            lm_head: head,
            ..RuntimeOptions::default()
        };
        let got = runtime_steps(
            &mut Runtime::from_model(&f.model, opts).unwrap(),
            &tokens,
            6,
        );
        for (w, g) in want.iter().zip(&got) {
            let range = w.iter().fold(0f32, |m, v| m.max(v.abs())) as f64 * 2.0;
            let worst = w
                .iter()
                .zip(g)
                .map(|(a, b)| f64::from((a - b).abs()))
                .fold(0f64, f64::max);
            assert!(
                worst <= 1e-2 * range,
                "{kv:?} {head:?}: {worst} of range {range}"
            );
        }
    }
    let _ = TOL;
}

/// The default activations: two int8 codes for `Auto` layers at AVX2, `f32` at the other
/// levels and for layers set to `CpuF32`; within 2·`TOL` of the `f32` reference either way.
#[test]
fn default_activations_should_take_two_codes_at_avx2_only() {
    let auto = mixed_tiny(LinearPath::Auto);
    let f32_layers = mixed_tiny(LinearPath::CpuF32);
    let tokens = ids(auto.model.config().vocab_size, 40);
    let want = reference(&auto.model, &tokens, 32);
    for level in Level::available() {
        let opts = RuntimeOptions {
            threads: 2,
            level: Some(level),
            ..RuntimeOptions::default()
        };
        let mut rt = Runtime::from_model(&auto.model, opts.clone()).unwrap();
        let expect = if level == Level::Avx2 {
            "int8x2"
        } else {
            "f32"
        };
        assert_eq!(rt.ternary_activations(), expect, "{level}");
        let got = runtime_steps(&mut rt, &tokens, 32);
        assert_close_tol(&want, &got, &format!("default at {level}"), 2.0 * TOL);
        let explicit = Runtime::from_model(&f32_layers.model, opts).unwrap();
        assert_eq!(
            explicit.ternary_activations(),
            "f32",
            "{level} CpuF32 layers"
        );
    }
    let float = Runtime::from_model(&tiny_llama().model, RuntimeOptions::with_threads(1)).unwrap();
    assert_eq!(float.ternary_activations(), "none");
}

/// A ternary output head counts among the ternary projections (the only one here).
#[test]
fn ternary_activations_should_count_a_ternary_head() {
    let per_row = QuantConfig::new(Method::AbsMean, ScaleLayout::PerRow);
    for (path, want) in [(LinearPath::CpuF32, "f32"), (LinearPath::CpuInt8, "int8")] {
        let mut m = tiny_llama();
        let head = m.model.linears().len() - 1;
        assert_eq!(m.model.linears()[head].0, "lm_head");
        make_ternary(&mut m.model, head, &per_row, false, path);
        let rt = Runtime::from_model(&m.model, RuntimeOptions::with_threads(1)).unwrap();
        assert_eq!(rt.ternary_activations(), want, "{path:?}");
    }
}

#[test]
fn bad_input_should_be_errors_and_leave_the_runtime_usable() {
    let m = tiny_llama();
    let v = m.model.config().vocab_size as u32;
    let opts = RuntimeOptions {
        threads: 2,
        max_context: Some(10),
        ..RuntimeOptions::default()
    };
    let mut rt = Runtime::from_model(&m.model, opts).unwrap();
    assert!(rt.forward(&[], Logits::Last).is_err());
    assert!(rt.forward(&[1, v], Logits::Last).is_err());
    assert!(rt.forward(&[1; 11], Logits::Last).is_err());
    assert_eq!(rt.position(), 0);
    rt.forward(&[1; 9], Logits::Last).unwrap();
    assert!(rt.forward(&[1, 2], Logits::Last).is_err());
    rt.forward(&[1], Logits::Last).unwrap();
    assert_eq!(rt.position(), 10);
    assert!(rt.forward(&[1], Logits::Last).is_err());
    rt.clear();
    assert_eq!(
        rt.forward(&[1, 2, 3], Logits::All).unwrap().len(),
        3 * v as usize
    );
    for bad in [
        RuntimeOptions {
            threads: 0,
            ..RuntimeOptions::default()
        },
        RuntimeOptions {
            chunk: 0,
            ..RuntimeOptions::default()
        },
        RuntimeOptions {
            max_context: Some(0),
            ..RuntimeOptions::default()
        },
    ] {
        assert!(Runtime::from_model(&m.model, bad).is_err());
    }
}

/// The tiny Llama with every linear layer on two trit-planes (`Q = M₁ + M₂`, the conversion's
/// `planes: Two` without a budget), on the host f32 and int8 paths: two products on the same
/// activations, as `TernaryLinear` computes them.
#[test]
fn two_plane_llama_should_match_reference() {
    for path in [
        LinearPath::CpuF32,
        LinearPath::CpuInt8,
        LinearPath::CpuInt8x2,
    ] {
        let m = two_plane_tiny(path);
        // Every layer on int8 activations: a 72-token prefill meets an activation rounding
        // that flips between summation orders (4e-4 of the logit range at AVX2); the float
        // path covers the long prefill.
        let prefill = if path == LinearPath::CpuInt8 { 8 } else { 72 };
        check_all_prompt(
            &m.model,
            &format!("tiny-llama two planes {path}"),
            TOL,
            prefill,
        );
    }
}

/// The tiny Llama with every linear layer on two trit-planes, computing on `path`.
fn two_plane_tiny(path: LinearPath) -> LoadedModel<Cpu> {
    let mut m = tiny_llama();
    let cfg = ternary_convert::ConvertConfig {
        planes: ternary_convert::convert::Planes::Two,
        budget: None,
        gptq: None,
        measure: false,
        calib_tokens: 256,
        ctx: 32,
        ..Default::default()
    };
    let text = ternary_convert::CALIBRATION_TEXT;
    ternary_convert::convert(&mut m.model, &m.tokenizer, text, &cfg, &mut |_| {}).unwrap();
    for (name, slot) in m.model.linears_mut() {
        let t = slot
            .as_any()
            .and_then(|a| a.downcast_ref::<TernaryLinear<Cpu>>())
            .unwrap_or_else(|| panic!("{name} is not ternary"))
            .clone();
        assert_eq!(t.planes(), 2, "{name}");
        *slot = Box::new(t.with_path(path));
    }
    m
}

/// The tiny Llama with every linear layer a `HostLinear` whose weights are rounded to `f16`
/// values (as an F16 GGUF's are).
fn f16_valued_tiny() -> LoadedModel<Cpu> {
    let mut m = tiny_llama();
    for (name, slot) in m.model.linears_mut() {
        let (rows, cols) = (slot.out_features(), slot.in_features());
        let w: Vec<f32> = to_rows(slot.weight())
            .unwrap()
            .iter()
            .map(|&v| half::f16::from_f32(v).to_f32())
            .collect();
        *slot = Box::new(HostLinear::new(&name, w, rows, cols).unwrap());
    }
    m
}

/// [`f16_valued_tiny`] with the layers holding the `f16` values themselves (as a model loaded
/// from an F16 GGUF does).
fn f16_held_tiny() -> LoadedModel<Cpu> {
    let mut m = f16_valued_tiny();
    for (name, slot) in m.model.linears_mut() {
        let (rows, cols) = (slot.out_features(), slot.in_features());
        let w: Vec<half::f16> = to_rows(slot.weight())
            .unwrap()
            .iter()
            .map(|&v| half::f16::from_f32(v))
            .collect();
        *slot = Box::new(HostLinear::from_shared_f16(&name, w.into(), rows, cols).unwrap());
    }
    m
}

#[test]
fn f16_weights_should_give_the_f32_logits_where_exact() {
    // `FloatWeights::Auto` holds f16-valued layers as f16 (half the bytes per token): the
    // kernels widen them exactly, so the logits are bit-identical to `FloatWeights::F32` at
    // every level; both match the reference. On weights that are not f16 values, Auto keeps
    // f32 (bit-identical to F32) and forced `F16` rounds them (close to the reference).
    let m = f16_valued_tiny();
    let tokens = ids(m.model.config().vocab_size, 10);
    let want = reference(&m.model, &tokens, 6);
    let f = tiny_llama();
    let want_f = reference(&f.model, &tokens, 6);
    let held = f16_held_tiny();
    let want_held = reference(&held.model, &tokens, 6);
    for level in Level::available() {
        let run = |model: &Llama<Cpu>, float_weights| {
            let opts = RuntimeOptions {
                threads: 2,
                level: Some(level),
                float_weights,
                ..RuntimeOptions::default()
            };
            let mut rt = Runtime::from_model(model, opts).unwrap();
            let per_token = rt.weight_bytes_per_token();
            (runtime_steps(&mut rt, &tokens, 6), per_token)
        };
        let (auto, auto_bytes) = run(&m.model, FloatWeights::Auto);
        let (f32s, f32_bytes) = run(&m.model, FloatWeights::F32);
        assert!(
            auto_bytes < f32_bytes,
            "{level}: auto reads {auto_bytes} bytes per token, f32 {f32_bytes}"
        );
        assert_eq!(auto, f32s, "{level}: f16-valued weights, Auto vs F32");
        assert_close(&want, &auto, &format!("{level} f16-valued Auto"));
        // Layers holding f16: the same kernels on the same values (shared, or widened for F32).
        let (held_auto, held_bytes) = run(&held.model, FloatWeights::Auto);
        let (held_f32, _) = run(&held.model, FloatWeights::F32);
        assert_eq!(held_bytes, auto_bytes, "{level}: f16 held");
        assert_eq!(held_auto, auto, "{level}: f16 held, Auto");
        assert_eq!(held_f32, f32s, "{level}: f16 held, F32");
        assert_close(
            &want_held,
            &held_auto,
            &format!("{level} f16 held vs its reference"),
        );
        let (auto, auto_bytes) = run(&f.model, FloatWeights::Auto);
        let (f32s, f32_bytes) = run(&f.model, FloatWeights::F32);
        assert_eq!(auto_bytes, f32_bytes, "{level}: Auto kept f32 weights");
        assert_eq!(auto, f32s, "{level}: f32 weights, Auto vs F32");
        let (forced, forced_bytes) = run(&f.model, FloatWeights::F16);
        assert!(forced_bytes < f32_bytes);
        assert_close_tol(&want_f, &forced, &format!("{level} forced F16"), 1e-2);
    }
}
