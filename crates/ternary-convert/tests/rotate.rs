//! Residual rotation (`ternary_convert::rotate`): the matrix is orthogonal, the rotated model
//! computes the same logits as the original (tied and untied heads, non-trivial norms), its
//! tensors equal an f64 reference of the documented formulas, and conversion with `rotate`
//! keeps a formerly tied head float on two planes. The per-head value rotation keeps the
//! logits and every block's output, follows its formulas and composes with the residual one;
//! so does the FFN rotation (`down_proj`'s rows by the signed block Hadamard `T`, recorded in
//! the config and the file).
//! Runs on the tiny Llama fixture (4 query heads over 2 key/value heads of 8).

use std::collections::HashMap;

use ternary_convert::convert::Planes;
use ternary_convert::rotate::{
    head_seed, random_orthogonal, rotate_ffn, rotate_heads, rotate_residual,
};
use ternary_convert::{ConvertConfig, ConvertError, convert};
use ternary_core::rng::Rng;
use ternary_core::rotation::SignedHadamard;
use ternary_layers::{Cpu, to_rows};
use ternary_models::weights::{HostTensor, MapWeights};
use ternary_models::{Llama, LoadedModel, Logits, load_safetensors_dir};

const SEED: u64 = 20261206;

/// Calibration text for the conversions (repeated).
const TEXT: &str = "The quick brown fox jumps over the lazy dog while the farmer counts sheep. ";

/// Converts `m` on [`TEXT`] under `cfg`.
fn convert_small(
    m: &mut LoadedModel<Cpu>,
    cfg: ConvertConfig,
) -> ternary_convert::convert::ConversionReport {
    convert(
        &mut m.model,
        &m.tokenizer,
        &TEXT.repeat(12),
        &cfg,
        &mut |_| {},
    )
    .unwrap()
}

/// A conversion small enough for the tiny fixture: no budget, no measurement, groups of 32.
fn small_cfg() -> ConvertConfig {
    ConvertConfig {
        budget: None,
        measure: false,
        calib_tokens: 256,
        ctx: 32,
        layout: ternary_core::ScaleLayout::PerGroup { group_size: 32 },
        ..ConvertConfig::default()
    }
}

fn tiny() -> LoadedModel<Cpu> {
    let dir = ternary_testkit::fixture_path("tiny-llama");
    load_safetensors_dir::<Cpu>(&dir, &Default::default()).unwrap()
}

/// Every weight of `model` by Hugging Face name (`lm_head.weight` only when untied).
fn tensors(model: &Llama<Cpu>) -> HashMap<String, HostTensor> {
    let mut out: HashMap<String, HostTensor> = model.float_tensors().unwrap().into_iter().collect();
    for (name, l) in model.linears() {
        if name == "lm_head" && model.config().tie_word_embeddings {
            continue;
        }
        let data = to_rows(l.weight()).unwrap();
        let shape = vec![l.out_features(), l.in_features()];
        out.insert(format!("{name}.weight"), HostTensor { shape, data });
    }
    out
}

/// The tiny fixture with RMSNorm weights drawn from [0.5, 1.5) (the fixture's are ones, which
/// would not test the folding), tied or untied.
fn model_with_norms(tied: bool) -> LoadedModel<Cpu> {
    let mut m = tiny();
    let mut rng = Rng::new(SEED);
    let mut w = tensors(&m.model);
    let mut names: Vec<String> = w.keys().filter(|n| n.contains("norm")).cloned().collect();
    names.sort(); // a fixed order, so that every call draws the same norms
    for name in names {
        let t = w.get_mut(&name).unwrap();
        t.data
            .iter_mut()
            .for_each(|v| *v = 0.5 + rng.next_f64() as f32);
    }
    let mut config = m.model.config().clone();
    if tied {
        w.remove("lm_head.weight");
        config.tie_word_embeddings = true;
    }
    m.model = Llama::from_weights(config, &MapWeights(w), &Default::default()).unwrap();
    m
}

fn logits(m: &Llama<Cpu>, ids: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache();
    to_rows(m.forward(ids, &mut cache, Logits::All).unwrap()).unwrap()
}

#[test]
fn random_orthogonal_should_be_orthogonal_and_seeded() {
    println!("seed {SEED}");
    for d in [1usize, 2, 63, 64, 65, 96] {
        let q = random_orthogonal(d, SEED);
        assert_eq!(q.len(), d * d);
        let mut worst = 0f64;
        for i in 0..d {
            for j in 0..d {
                let dot: f64 = (0..d).map(|k| q[k * d + i] * q[k * d + j]).sum();
                let want = if i == j { 1.0 } else { 0.0 };
                worst = worst.max((dot - want).abs());
            }
        }
        assert!(worst < 1e-12, "d = {d}: |QᵀQ − I| = {worst}");
        assert_eq!(q, random_orthogonal(d, SEED), "d = {d}: not reproducible");
        if d > 1 {
            assert_ne!(q, random_orthogonal(d, SEED + 1), "d = {d}: seed ignored");
        }
    }
    assert!(random_orthogonal(0, SEED).is_empty());
}

/// Relative difference of the logits, `max |a − b| / max |b|`.
fn rel_diff(a: &[f32], b: &[f32]) -> f64 {
    assert_eq!(a.len(), b.len());
    let num = a
        .iter()
        .zip(b)
        .fold(0f64, |m, (x, y)| m.max(f64::from(x - y).abs()));
    let den = b.iter().fold(0f64, |m, y| m.max(f64::from(*y).abs()));
    num / den
}

#[test]
fn rotated_model_should_compute_the_same_logits() {
    println!("seed {SEED}");
    let ids: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % 300).collect();
    for tied in [false, true] {
        let mut m = model_with_norms(tied);
        let before = logits(&m.model, &ids);
        rotate_residual(&mut m.model, SEED).unwrap();
        let after = logits(&m.model, &ids);
        let r = rel_diff(&after, &before);
        // f32 forward passes of two different weight sets: agreement to ~1e-6 is typical.
        assert!(r < 1e-4, "tied {tied}: logits differ by {r:e} (relative)");
        assert!(
            !m.model.config().tie_word_embeddings,
            "tied {tied}: still tied"
        );
        let before: HashMap<String, Vec<f32>> = model_with_norms(tied)
            .model
            .norm_tensors()
            .unwrap()
            .into_iter()
            .map(|(n, t)| (n, t.data))
            .collect();
        for (name, norm) in m.model.norms() {
            let w = to_rows(norm.weight().clone().reshape([1, -1])).unwrap();
            let g = &before[&name];
            let c = (g.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / g.len() as f64).sqrt();
            assert!(
                w.iter().all(|&v| v == c as f32),
                "{name} is not folded to its level {c}: {w:?}"
            );
        }
    }
}

/// `E' = E·Q`, `W' = W·diag(g)·Q` for readers, `Qᵀ·W` for writers, `L' = L·diag(g)·Q`: each
/// against an f64 triple loop on the original tensors, relative tolerance 1e-5.
#[test]
fn rotated_tensors_should_follow_the_formulas() {
    let m0 = model_with_norms(true);
    let orig = tensors(&m0.model);
    let mut m = model_with_norms(true);
    rotate_residual(&mut m.model, SEED).unwrap();
    let rot = tensors(&m.model);
    let h = m.model.config().hidden_size;
    let q = random_orthogonal(h, SEED);
    // Readers take `g / c`, `c = rms(g)` (the level the norm keeps).
    let read = |w: &HostTensor, g: &[f32]| -> Vec<f64> {
        let c = (g.iter().map(|&v| f64::from(v).powi(2)).sum::<f64>() / g.len() as f64).sqrt();
        let rows = w.shape[0];
        let mut out = vec![0f64; rows * h];
        for r in 0..rows {
            for j in 0..h {
                out[r * h + j] = (0..h)
                    .map(|i| f64::from(w.data[r * h + i]) * f64::from(g[i]) / c * q[i * h + j])
                    .sum();
            }
        }
        out
    };
    let write = |w: &HostTensor| -> Vec<f64> {
        let cols = w.shape[1];
        let mut out = vec![0f64; h * cols];
        for i in 0..h {
            for c in 0..cols {
                out[i * cols + c] = (0..h)
                    .map(|k| q[k * h + i] * f64::from(w.data[k * cols + c]))
                    .sum();
            }
        }
        out
    };
    let check = |name: &str, want: Vec<f64>| {
        let got = &rot[name].data;
        assert_eq!(got.len(), want.len(), "{name}");
        let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
        for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
            assert!(
                (f64::from(g) - w).abs() <= 1e-5 * scale,
                "{name}[{i}]: {g} vs {w}"
            );
        }
    };
    let ones = vec![1f32; h];
    let embed = &orig["model.embed_tokens.weight"];
    check("model.embed_tokens.weight", read(embed, &ones));
    check(
        "lm_head.weight",
        read(embed, &orig["model.norm.weight"].data),
    );
    for l in 0..m.model.config().num_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        let g_attn = &orig[&p("input_layernorm.weight")].data;
        let g_mlp = &orig[&p("post_attention_layernorm.weight")].data;
        for s in ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"] {
            let n = p(&format!("{s}.weight"));
            check(&n, read(&orig[&n], g_attn));
        }
        for s in ["mlp.gate_proj", "mlp.up_proj"] {
            let n = p(&format!("{s}.weight"));
            check(&n, read(&orig[&n], g_mlp));
        }
        for s in ["self_attn.o_proj", "mlp.down_proj"] {
            let n = p(&format!("{s}.weight"));
            check(&n, write(&orig[&n]));
        }
    }
}

#[test]
fn conversion_with_rotation_should_keep_a_formerly_tied_head_float_on_two_planes() {
    let mut m = model_with_norms(true);
    let report = convert_small(
        &mut m,
        ConvertConfig {
            planes: Planes::Two,
            rotate: Some(SEED),
            ..small_cfg()
        },
    );
    let head = report.layers.iter().find(|l| l.name == "lm_head").unwrap();
    assert!(!head.ternary, "the formerly tied head was converted");
    assert!(
        report
            .layers
            .iter()
            .filter(|l| l.name != "lm_head")
            .all(|l| l.planes == 2)
    );
    // Rotation is recorded in each converted layer's method.
    let q = report.layers.iter().find(|l| l.ternary).unwrap();
    assert!(q.method.contains("rotated"), "{}", q.method);
}

#[test]
fn rotation_should_refuse_ternary_layers() {
    let mut m = tiny();
    let dev = Default::default();
    let (name, out, inp) = {
        let ls = m.model.linears();
        let (n, l) = &ls[0];
        (n.clone(), l.out_features(), l.in_features())
    };
    let w = ternary_core::TernaryMatrix::from_trits(
        out,
        inp,
        &vec![1i8; out * inp],
        ternary_core::Scales::per_row(vec![1.0; out]),
    )
    .unwrap();
    let layer = ternary_layers::TernaryLinear::<Cpu>::from_weights(w, &dev).unwrap();
    for (n, l) in m.model.linears_mut() {
        if n == name {
            *l = Box::new(layer);
            break;
        }
    }
    let err = rotate_residual(&mut m.model, SEED).unwrap_err();
    assert!(matches!(err, ConvertError::Invalid(_)), "{err}");
    assert!(err.to_string().contains(&name), "{err}");
}

#[test]
fn a_rotated_model_should_say_so_in_its_file_and_refuse_a_second_rotation() {
    let mut m = model_with_norms(true);
    rotate_residual(&mut m.model, SEED).unwrap();
    assert_eq!(m.model.config().residual_rotation, Some(SEED));
    let err = rotate_residual(&mut m.model, SEED + 1)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already rotated"), "{err}");
    let bytes = ternary_convert::model_file::to_bytes(&m.model, &m.tokenizer).unwrap();
    let back = ternary_convert::model_file::load_bytes::<Cpu>(&bytes, &Default::default()).unwrap();
    assert_eq!(back.model.config(), m.model.config());
    let ids: Vec<u32> = (0..20).map(|i| (i * 13 + 1) % 300).collect();
    assert_eq!(logits(&back.model, &ids), logits(&m.model, &ids));
}

/// What block-wise training relies on: every block's output of the rotated model is the
/// original's times `Q` (`h' = h·Q`), relative tolerance 1e-4 of the largest value.
#[test]
fn hidden_states_should_rotate_by_q() {
    let ids: Vec<u32> = (0..24).map(|i| (i * 29 + 3) % 300).collect();
    let m0 = model_with_norms(false);
    let mut m = model_with_norms(false);
    rotate_residual(&mut m.model, SEED).unwrap();
    let h = m.model.config().hidden_size;
    let q = random_orthogonal(h, SEED);
    let q = &q;
    let (mut x0, mut x) = (m0.model.embed(&ids).unwrap(), m.model.embed(&ids).unwrap());
    for l in 0..=m.model.config().num_layers {
        let (a, b) = (to_rows(x0.clone()).unwrap(), to_rows(x.clone()).unwrap());
        let want: Vec<f32> = a
            .chunks(h)
            .flat_map(|row| {
                (0..h).map(move |j| {
                    row.iter()
                        .enumerate()
                        .map(|(i, &v)| f64::from(v) * q[i * h + j])
                        .sum::<f64>() as f32
                })
            })
            .collect();
        let r = rel_diff(&b, &want);
        assert!(r < 1e-4, "after {l} blocks: {r:e}");
        if l < m.model.config().num_layers {
            x0 = m0.model.run_blocks(x0, l..l + 1).unwrap();
            x = m.model.run_blocks(x, l..l + 1).unwrap();
        }
    }
}

/// `v_proj` rows of head `k`: `Q_kᵀ·W_v[k]`; `o_proj` columns of query head `h`:
/// `W_o[:, h]·Q_{h / 2}` (2 query heads per key/value head); every other tensor bit for bit
/// the same. Against f64 loops, relative tolerance 1e-5.
#[test]
fn head_rotation_should_follow_its_formulas_and_keep_the_rest() {
    println!("seed {SEED}");
    for tied in [false, true] {
        let m0 = model_with_norms(tied);
        let mut m = model_with_norms(tied);
        rotate_heads(&mut m.model, SEED).unwrap();
        let c = m.model.config().clone();
        assert_eq!(&c, m0.model.config(), "config changed");
        let (heads, kv, d, hid) = (c.num_heads, c.num_kv_heads, c.head_dim, c.hidden_size);
        assert!(
            heads > kv && kv > 1,
            "the fixture should test grouped heads"
        );
        let (before, after) = (tensors(&m0.model), tensors(&m.model));
        assert_eq!(before.len(), after.len());
        for (name, t0) in &before {
            let t = &after[name];
            assert_eq!(t.shape, t0.shape, "{name}");
            let layer = name
                .strip_prefix("model.layers.")
                .and_then(|s| s.split_once('.'))
                .map(|(b, _)| b.parse::<usize>().unwrap());
            let q = |k: usize| random_orthogonal(d, head_seed(SEED, layer.unwrap(), k));
            let want: Vec<f32> = if name.ends_with("v_proj.weight") {
                (0..kv * d)
                    .flat_map(|r| {
                        let (k, i) = (r / d, r % d);
                        let q = q(k);
                        let w = &t0.data;
                        (0..hid)
                            .map(move |col| {
                                (0..d)
                                    .map(|j| q[j * d + i] * f64::from(w[(k * d + j) * hid + col]))
                                    .sum::<f64>() as f32
                            })
                            .collect::<Vec<_>>()
                    })
                    .collect()
            } else if name.ends_with("o_proj.weight") {
                let qs: Vec<Vec<f64>> = (0..kv).map(q).collect();
                let cols = heads * d;
                (0..hid)
                    .flat_map(|r| {
                        let (w, qs) = (&t0.data, &qs);
                        (0..cols).map(move |col| {
                            let (h, j) = (col / d, col % d);
                            let q = &qs[h / (heads / kv)];
                            (0..d)
                                .map(|i| f64::from(w[r * cols + h * d + i]) * q[i * d + j])
                                .sum::<f64>() as f32
                        })
                    })
                    .collect()
            } else {
                assert_eq!(t.data, t0.data, "{name} changed");
                continue;
            };
            let r = rel_diff(&t.data, &want);
            assert!(r < 1e-5, "{name}: {r:e}");
            assert!(rel_diff(&t.data, &t0.data) > 1e-2, "{name} did not move");
        }
    }
}

/// The same logits (tied and untied) and the same output of every block, alone and after
/// the residual rotation; a different seed gives different weights.
#[test]
fn head_rotation_should_keep_logits_and_block_outputs() {
    println!("seed {SEED}");
    let ids: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % 300).collect();
    for (tied, residual) in [(false, false), (true, false), (true, true)] {
        let mut reference = model_with_norms(tied).model;
        let mut m = model_with_norms(tied);
        if residual {
            rotate_residual(&mut reference, SEED).unwrap();
            rotate_residual(&mut m.model, SEED).unwrap();
        }
        let before = logits(&m.model, &ids);
        rotate_heads(&mut m.model, SEED + 1).unwrap();
        let r = rel_diff(&logits(&m.model, &ids), &before);
        assert!(
            r < 1e-4,
            "tied {tied}, residual {residual}: logits differ by {r:e}"
        );
        let (mut x0, mut x) = (reference.embed(&ids).unwrap(), m.model.embed(&ids).unwrap());
        for l in 0..m.model.config().num_layers {
            x0 = reference.run_blocks(x0, l..l + 1).unwrap();
            x = m.model.run_blocks(x, l..l + 1).unwrap();
            let (a, b) = (to_rows(x0.clone()).unwrap(), to_rows(x.clone()).unwrap());
            let r = rel_diff(&b, &a);
            assert!(
                r < 1e-4,
                "tied {tied}, residual {residual}: block {l}: {r:e}"
            );
        }
    }
    let (mut a, mut b) = (model_with_norms(false), model_with_norms(false));
    rotate_heads(&mut a.model, SEED).unwrap();
    rotate_heads(&mut b.model, SEED + 1).unwrap();
    let v = "model.layers.0.self_attn.v_proj.weight";
    assert_ne!(
        tensors(&a.model)[v].data,
        tensors(&b.model)[v].data,
        "seed ignored"
    );
}

#[test]
fn head_rotation_should_refuse_ternary_layers_and_run_in_conversion() {
    let mut m = tiny();
    let report = convert_small(
        &mut m,
        ConvertConfig {
            rotate_heads: Some(SEED),
            ..small_cfg()
        },
    );
    let q = report.layers.iter().find(|l| l.ternary).unwrap();
    assert!(q.method.contains("heads rotated"), "{}", q.method);
    let err = rotate_heads(&mut m.model, SEED).unwrap_err();
    assert!(matches!(err, ConvertError::Invalid(_)), "{err}");
    assert!(
        err.to_string().contains("head rotation needs float layers"),
        "{err}"
    );
}

/// `H_b[i][j] = (−1)^popcount(i & j)`.
fn sylvester(i: usize, j: usize) -> f64 {
    if (i & j).count_ones().is_multiple_of(2) {
        1.0
    } else {
        -1.0
    }
}

/// Row `r` of `down_proj` in layer `l` becomes `T_l(w_r)`, against an f64 product with the
/// defining matrix (relative 1e-5); every other tensor is kept bit for bit; the config records
/// the seed; logits and block outputs are kept (alone, tied, and after the residual rotation,
/// in either order); a second FFN rotation is refused; the file keeps it.
#[test]
fn ffn_rotation_should_follow_its_formula_and_keep_the_function() {
    println!("seed {SEED}");
    let ids: Vec<u32> = (0..40).map(|i| (i * 37 + 5) % 300).collect();
    for tied in [false, true] {
        let m0 = model_with_norms(tied);
        let mut m = model_with_norms(tied);
        rotate_ffn(&mut m.model, SEED).unwrap();
        let c = m.model.config().clone();
        assert_eq!(c.ffn_rotation, Some(SEED));
        let f = c.intermediate_size;
        let (before, after) = (tensors(&m0.model), tensors(&m.model));
        for (name, t0) in &before {
            let t = &after[name];
            let Some(l) = name
                .strip_prefix("model.layers.")
                .and_then(|s| s.strip_suffix(".mlp.down_proj.weight"))
            else {
                assert_eq!(t.data, t0.data, "{name} changed");
                continue;
            };
            let rot = SignedHadamard::for_layer(f, SEED, l.parse().unwrap()).unwrap();
            let (b, s) = (rot.block(), rot.signs());
            let want: Vec<f32> = t0
                .data
                .chunks(f)
                .flat_map(|w| {
                    (0..f).map(move |col| {
                        let (k, i) = (col / b, col % b);
                        (0..b)
                            .map(|j| {
                                sylvester(i, j) * f64::from(s[k * b + j]) * f64::from(w[k * b + j])
                            })
                            .sum::<f64>() as f32
                            / (b as f32).sqrt()
                    })
                })
                .collect();
            let r = rel_diff(&t.data, &want);
            assert!(r < 1e-5, "{name}: {r:e}");
        }
        let r = rel_diff(&logits(&m.model, &ids), &logits(&m0.model, &ids));
        assert!(r < 1e-4, "tied {tied}: logits differ by {r:e}");
        let (mut x0, mut x) = (m0.model.embed(&ids).unwrap(), m.model.embed(&ids).unwrap());
        for l in 0..c.num_layers {
            x0 = m0.model.run_blocks(x0, l..l + 1).unwrap();
            x = m.model.run_blocks(x, l..l + 1).unwrap();
            let r = rel_diff(&to_rows(x.clone()).unwrap(), &to_rows(x0.clone()).unwrap());
            assert!(r < 1e-4, "tied {tied}: block {l}: {r:e}");
        }
        let err = rotate_ffn(&mut m.model, SEED).unwrap_err().to_string();
        assert!(err.contains("already rotated"), "{err}");
        let bytes = ternary_convert::model_file::to_bytes(&m.model, &m.tokenizer).unwrap();
        let back = ternary_convert::model_file::load_bytes::<Cpu>(&bytes, &Default::default());
        let back = back.unwrap();
        assert_eq!(back.model.config(), m.model.config());
        assert_eq!(logits(&back.model, &ids), logits(&m.model, &ids));
    }
    // With the residual rotation, in either order: the same logits.
    let want = logits(&model_with_norms(true).model, &ids);
    let (mut a, mut b) = (model_with_norms(true), model_with_norms(true));
    rotate_ffn(&mut a.model, SEED).unwrap();
    rotate_residual(&mut a.model, SEED).unwrap();
    rotate_residual(&mut b.model, SEED).unwrap();
    rotate_ffn(&mut b.model, SEED).unwrap();
    assert_eq!(a.model.config(), b.model.config());
    for m in [&a, &b] {
        let r = rel_diff(&logits(&m.model, &ids), &want);
        assert!(r < 1e-4, "with the residual rotation: {r:e}");
    }
}

/// Conversion with `rotate_ffn` keeps the rotation in the converted model, and the config
/// then refuses a second one.
#[test]
fn conversion_should_keep_the_ffn_rotation() {
    let mut m = model_with_norms(false);
    let report = convert_small(
        &mut m,
        ConvertConfig {
            rotate_ffn: Some(SEED),
            ..small_cfg()
        },
    );
    let q = report.layers.iter().find(|l| l.ternary).unwrap();
    assert!(q.method.contains("ffn rotated"), "{}", q.method);
    assert_eq!(m.model.config().ffn_rotation, Some(SEED));
    let err = rotate_ffn(&mut m.model, SEED + 1).unwrap_err().to_string();
    assert!(err.contains("FFN"), "{err}");
}
