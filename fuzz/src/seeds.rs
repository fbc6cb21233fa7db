//! The seed corpus: small, valid files of every format, built in-process (no downloads), so
//! every mutation starts from something the parser accepts and reaches deep into it.

use std::collections::HashMap;

use ternary_core::io::{FloatTensor, Storage, TensorRef, tensors_to_bytes};
use ternary_core::quant::{Method, QuantConfig, quantize};
use ternary_core::{ScaleLayout, Scales, TernaryMatrix};
use ternary_layers::{Cpu, TernaryLinear};
use ternary_models::gguf::{GgufTensorData, GgufValue, write_gguf};
use ternary_models::quant::{GgmlType, QK, QK_K, encode_ternary};
use ternary_models::weights::{HostTensor, MapWeights};
use ternary_models::{Llama, LlamaConfig, Tokenizer};

use crate::rng::Rng;

/// The tiny fixture's `config.json` (fixtures/tiny-llama).
pub const TINY_CONFIG: &str = include_str!("../../fixtures/tiny-llama/config.json");
/// The tiny fixture's `tokenizer.json` (a 300-token byte-level BPE).
pub const TINY_TOKENIZER: &str = include_str!("../../fixtures/tiny-llama/tokenizer.json");

fn values(rng: &mut Rng, n: usize, f16_exact: bool) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let v = (rng.below(2001) as f32 - 1000.0) / 1000.0;
            if f16_exact {
                (v * 64.0).round() / 64.0
            } else {
                v
            }
        })
        .collect()
}

fn matrix(rng: &mut Rng, rows: usize, cols: usize, layout: ScaleLayout) -> TernaryMatrix {
    let w = values(rng, rows * cols, false);
    let cfg = QuantConfig::new(Method::AbsMean, layout);
    quantize(&w, rows, cols, &cfg)
        .map(|(m, _)| m)
        .unwrap_or_else(|e| panic!("seed matrix {rows}x{cols}: {e}"))
}

/// A toy byte-level BPE vocabulary: tokens, merges, token types (two control tokens).
pub fn toy_vocab() -> (Vec<String>, Vec<String>, Vec<u64>) {
    let mut tokens: Vec<String> = ["<s>", "</s>"].iter().map(|s| s.to_string()).collect();
    tokens.extend("abcdeħĠ12 .".chars().map(|c| c.to_string()));
    let merges: Vec<String> = ["a b", "ab c", "Ġ a", "1 2", "Ġa b"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    tokens.extend(merges.iter().map(|m| m.replace(' ', "")));
    let mut types = vec![1u64; tokens.len()];
    types[0] = 3;
    types[1] = 3;
    (tokens, merges, types)
}

/// The toy tokenizer (`pre` is `gpt2`, `default` or `smollm`).
pub fn toy_tokenizer(pre: &str) -> Tokenizer {
    let (tokens, merges, types) = toy_vocab();
    let mut t = Tokenizer::from_parts(&tokens, &merges, &types, pre)
        .unwrap_or_else(|e| panic!("toy tokenizer: {e}"));
    t.bos_id = Some(0);
    t.eos_id = Some(1);
    t.add_bos = true;
    t
}

// ---------------------------------------------------------------------------------------------
// GGUF
// ---------------------------------------------------------------------------------------------

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Encodes `n` weights of `kind` (random but valid blocks).
fn encode(rng: &mut Rng, kind: GgmlType, n: usize) -> Vec<u8> {
    let h = |x: f32| half::f16::from_f32(x).to_bits().to_le_bytes();
    let mut out = Vec::new();
    match kind {
        GgmlType::F32 => out = f32_bytes(&values(rng, n, false)),
        GgmlType::F16 => {
            for v in values(rng, n, false) {
                out.extend(h(v));
            }
        }
        GgmlType::BF16 => {
            for v in values(rng, n, false) {
                out.extend(half::bf16::from_f32(v).to_bits().to_le_bytes());
            }
        }
        GgmlType::Q4_0 | GgmlType::Q8_0 | GgmlType::Q4_1 => {
            for _ in 0..n / QK {
                out.extend(h(0.01 + rng.below(100) as f32 / 1000.0));
                if kind == GgmlType::Q4_1 {
                    out.extend(h(-0.05));
                }
                let q = if kind == GgmlType::Q8_0 { QK } else { QK / 2 };
                out.extend((0..q).map(|_| rng.below(256) as u8));
            }
        }
        GgmlType::Other(_) => out = (0..n).map(|_| rng.below(256) as u8).collect(),
        GgmlType::Q4_K | GgmlType::Q5_K | GgmlType::Q6_K | GgmlType::Q8_K => {
            let bytes = kind.byte_size(QK_K).unwrap_or(0);
            for _ in 0..n / QK_K {
                let mut b: Vec<u8> = (0..bytes).map(|_| rng.below(256) as u8).collect();
                let d = h(0.001 + rng.below(100) as f32 / 10_000.0);
                match kind {
                    GgmlType::Q6_K => b[bytes - 2..].copy_from_slice(&d),
                    GgmlType::Q8_K => b[..4].copy_from_slice(&0.01f32.to_le_bytes()),
                    _ => {
                        b[..2].copy_from_slice(&d);
                        b[2..4].copy_from_slice(&h(0.002));
                    }
                }
                out.extend(b);
            }
        }
        GgmlType::TQ1_0 | GgmlType::TQ2_0 | GgmlType::I2_S => {
            let cols = if kind == GgmlType::I2_S { 128 } else { QK_K };
            let rows = n / cols;
            let trits: Vec<i8> = (0..n).map(|_| rng.below(3) as i8 - 1).collect();
            let scales = if kind == GgmlType::I2_S {
                Scales::per_row(vec![0.5; rows])
            } else {
                Scales::per_group(QK_K, (0..rows).map(|r| 0.25 + r as f32 / 8.0).collect())
            };
            out = TernaryMatrix::from_trits(rows, cols, &trits, scales)
                .ok()
                .and_then(|m| encode_ternary(kind, &m).ok())
                .unwrap_or_default();
        }
        _ => {}
    }
    out
}

/// A one-block Llama in llama.cpp's layout: every float and block type, the tokenizer keys.
fn gguf_model(rng: &mut Rng) -> Vec<u8> {
    let (tokens, merges, types) = toy_vocab();
    let v = tokens.len();
    let (h, f, heads, kv, d) = (32usize, 32usize, 4usize, 2usize, 8usize);
    let t = |name: &str, dims: Vec<usize>, kind: GgmlType, rng: &mut Rng| {
        let n = dims.iter().product();
        GgufTensorData {
            name: name.into(),
            dims,
            kind,
            bytes: encode(rng, kind, n),
        }
    };
    let tensors = vec![
        t("token_embd.weight", vec![h, v], GgmlType::F16, rng),
        t("output_norm.weight", vec![h], GgmlType::F32, rng),
        t("output.weight", vec![h, v], GgmlType::Q8_0, rng),
        t("blk.0.attn_norm.weight", vec![h], GgmlType::F32, rng),
        t(
            "blk.0.attn_q.weight",
            vec![h, heads * d],
            GgmlType::Q8_0,
            rng,
        ),
        t("blk.0.attn_k.weight", vec![h, kv * d], GgmlType::Q4_0, rng),
        t("blk.0.attn_v.weight", vec![h, kv * d], GgmlType::Q4_1, rng),
        t(
            "blk.0.attn_output.weight",
            vec![heads * d, h],
            GgmlType::BF16,
            rng,
        ),
        t("blk.0.ffn_norm.weight", vec![h], GgmlType::F32, rng),
        t("blk.0.ffn_gate.weight", vec![h, f], GgmlType::Q4_0, rng),
        t("blk.0.ffn_up.weight", vec![h, f], GgmlType::Q4_1, rng),
        t("blk.0.ffn_down.weight", vec![f, h], GgmlType::Q8_0, rng),
    ];
    let u = |x: usize| GgufValue::U32(x as u32);
    let strings =
        |v: &[String]| GgufValue::Array(v.iter().cloned().map(GgufValue::String).collect());
    write_gguf(
        &[
            ("general.architecture", GgufValue::String("llama".into())),
            ("general.name", GgufValue::String("fuzz seed".into())),
            ("llama.block_count", u(1)),
            ("llama.context_length", u(64)),
            ("llama.embedding_length", u(h)),
            ("llama.feed_forward_length", u(f)),
            ("llama.attention.head_count", u(heads)),
            ("llama.attention.head_count_kv", u(kv)),
            ("llama.attention.key_length", u(d)),
            ("llama.rope.freq_base", GgufValue::F32(10_000.0)),
            (
                "llama.attention.layer_norm_rms_epsilon",
                GgufValue::F32(1e-5),
            ),
            ("tokenizer.ggml.model", GgufValue::String("gpt2".into())),
            ("tokenizer.ggml.pre", GgufValue::String("smollm".into())),
            ("tokenizer.ggml.tokens", strings(&tokens)),
            ("tokenizer.ggml.merges", strings(&merges)),
            (
                "tokenizer.ggml.token_type",
                GgufValue::Array(types.iter().map(|&t| GgufValue::I32(t as i32)).collect()),
            ),
            ("tokenizer.ggml.bos_token_id", u(0)),
            ("tokenizer.ggml.eos_token_id", u(1)),
            ("tokenizer.ggml.add_bos_token", GgufValue::Bool(true)),
        ],
        &tensors,
    )
}

/// Every metadata value type, nested and empty arrays, a non-default alignment, an
/// unsupported tensor type, a zero-sized and a four-dimensional tensor.
fn gguf_zoo(rng: &mut Rng) -> Vec<u8> {
    let s = |x: &str| GgufValue::String(x.into());
    let meta = vec![
        ("general.alignment", GgufValue::U32(64)),
        ("general.architecture", s("llama")),
        ("u8", GgufValue::U8(7)),
        ("i8", GgufValue::I8(-7)),
        ("u16", GgufValue::U16(700)),
        ("i16", GgufValue::I16(-700)),
        ("u32", GgufValue::U32(70_000)),
        ("i32", GgufValue::I32(-70_000)),
        ("f32", GgufValue::F32(0.5)),
        ("bool", GgufValue::Bool(true)),
        ("u64", GgufValue::U64(1 << 40)),
        ("i64", GgufValue::I64(-(1 << 40))),
        ("f64", GgufValue::F64(-0.25)),
        ("empty", GgufValue::Array(vec![])),
        (
            "nested",
            GgufValue::Array(vec![
                GgufValue::Array(vec![GgufValue::U8(1), GgufValue::U8(2)]),
                GgufValue::Array(vec![GgufValue::U8(3)]),
            ]),
        ),
        ("strings", GgufValue::Array(vec![s("a"), s(""), s("ħ")])),
    ];
    let t = |name: &str, dims: Vec<usize>, kind: GgmlType, rng: &mut Rng| {
        let n: usize = dims.iter().product();
        let bytes = match kind {
            GgmlType::Other(_) => (0..144).map(|_| rng.below(256) as u8).collect(),
            _ => encode(rng, kind, n),
        };
        GgufTensorData {
            name: name.into(),
            dims,
            kind,
            bytes,
        }
    };
    let tensors = vec![
        t("w", vec![3, 2], GgmlType::F32, rng),
        t("odd", vec![256], GgmlType::Other(16), rng),
        t("empty", vec![0, 5], GgmlType::F16, rng),
        t("four", vec![32, 1, 2, 1], GgmlType::Q4_0, rng),
    ];
    let mut bytes = write_gguf(&meta, &tensors);
    // write_gguf aligns to 32; re-align the data section to the declared 64.
    realign(&mut bytes, 64);
    bytes
}

/// Moves the data section of a file written by `write_gguf` (alignment 32) to `align`, and
/// the tensor offsets with it (tensors stay `align`-aligned relative to each other only if
/// they were; the zoo's are small enough to re-lay out here).
fn realign(bytes: &mut Vec<u8>, align: usize) {
    let fields = crate::gguf::fields(bytes);
    let Some(end) = fields.last().map(|f| f.at + f.width) else {
        return;
    };
    let old_start = end.div_ceil(32) * 32;
    let new_start = end.div_ceil(align) * align;
    let data = bytes[old_start..].to_vec();
    // Re-lay tensors at multiples of `align`.
    let offsets: Vec<_> = fields
        .iter()
        .filter(|f| f.kind == crate::gguf::FieldKind::TensorOffset)
        .copied()
        .collect();
    let mut new_data = Vec::new();
    let read = |b: &[u8], at: usize| u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or([0; 8]));
    let starts: Vec<usize> = offsets.iter().map(|f| read(bytes, f.at) as usize).collect();
    for (i, f) in offsets.iter().enumerate() {
        let from = starts[i];
        let to = starts.get(i + 1).copied().unwrap_or(data.len());
        new_data.resize(new_data.len().div_ceil(align) * align, 0);
        let off = new_data.len() as u64;
        bytes[f.at..f.at + 8].copy_from_slice(&off.to_le_bytes());
        new_data.extend_from_slice(&data[from.min(data.len())..to.min(data.len())]);
    }
    bytes.truncate(end);
    bytes.resize(new_start, 0);
    bytes.extend_from_slice(&new_data);
}

/// One small tensor of each ternary and K-quant type (TQ1_0, TQ2_0, I2_S, Q4_K..Q8_K), so
/// mutations reach their block decoders and `GgufFile::ternary`.
fn gguf_quants(rng: &mut Rng) -> Vec<u8> {
    let t = |name: &str, dims: Vec<usize>, kind: GgmlType, rng: &mut Rng| {
        let n = dims.iter().product();
        GgufTensorData {
            name: name.into(),
            dims,
            kind,
            bytes: encode(rng, kind, n),
        }
    };
    let tensors = vec![
        t("tq1", vec![256, 2], GgmlType::TQ1_0, rng),
        t("tq2", vec![256, 2], GgmlType::TQ2_0, rng),
        t("i2s", vec![128, 2], GgmlType::I2_S, rng),
        t("q4k", vec![256], GgmlType::Q4_K, rng),
        t("q5k", vec![256], GgmlType::Q5_K, rng),
        t("q6k", vec![256], GgmlType::Q6_K, rng),
        t("q8k", vec![256], GgmlType::Q8_K, rng),
    ];
    write_gguf(
        &[("general.architecture", GgufValue::String("llama".into()))],
        &tensors,
    )
}

/// A version-2 file with a single pair and no tensors.
fn gguf_v2() -> Vec<u8> {
    let mut b = write_gguf(
        &[("general.architecture", GgufValue::String("llama".into()))],
        &[],
    );
    b[4..8].copy_from_slice(&2u32.to_le_bytes());
    b
}

/// GGUF seeds.
pub fn gguf() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(1);
    vec![
        gguf_model(&mut rng),
        gguf_zoo(&mut rng),
        gguf_v2(),
        gguf_quants(&mut rng),
    ]
}

// ---------------------------------------------------------------------------------------------
// Safetensors
// ---------------------------------------------------------------------------------------------

/// A safetensors file written by hand (any dtype), with optional metadata.
pub fn raw_safetensors(
    tensors: &[(&str, &str, Vec<usize>, Vec<u8>)],
    metadata: Option<&[(&str, &str)]>,
) -> Vec<u8> {
    let mut header = serde_json::Map::new();
    if let Some(m) = metadata {
        let m: serde_json::Map<String, serde_json::Value> = m
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        header.insert("__metadata__".into(), m.into());
    }
    let mut data = Vec::new();
    for (name, dtype, shape, bytes) in tensors {
        let start = data.len();
        data.extend_from_slice(bytes);
        header.insert(
            name.to_string(),
            serde_json::json!({"dtype": dtype, "shape": shape, "data_offsets": [start, data.len()]}),
        );
    }
    let mut h = serde_json::Value::Object(header).to_string().into_bytes();
    while !h.len().is_multiple_of(8) {
        h.push(b' ');
    }
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend(h);
    out.extend(data);
    out
}

/// Tensor names the safetensors harness asks for (those of the seeds).
pub const SAFETENSORS_NAMES: &[&str] = &[
    "a",
    "f",
    "m",
    "n",
    "model.embed_tokens.weight",
    "model.norm.weight",
    "lm_head.weight",
    "ids",
];

/// Safetensors seeds: ternary files (planes and packed, per row and per group, a float
/// tensor) and a Hugging Face weight file (F32, F16, BF16, I64).
pub fn safetensors() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(2);
    let a = matrix(&mut rng, 3, 70, ScaleLayout::PerRow);
    let m = matrix(&mut rng, 4, 37, ScaleLayout::PerGroup { group_size: 32 });
    let n = matrix(&mut rng, 1, 5, ScaleLayout::PerRow);
    let f = FloatTensor::new(vec![2, 3], values(&mut rng, 6, false))
        .unwrap_or_else(|e| panic!("seed float tensor: {e}"));
    let planes = tensors_to_bytes(
        &[("a", TensorRef::Ternary(&a)), ("f", TensorRef::Float(&f))],
        Storage::Planes,
    );
    let packed = tensors_to_bytes(
        &[("m", TensorRef::Ternary(&m)), ("n", TensorRef::Ternary(&n))],
        Storage::Packed,
    );
    let grouped_planes = tensors_to_bytes(&[("m", TensorRef::Ternary(&m))], Storage::Planes);
    let half: Vec<u8> = values(&mut rng, 3, false)
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect();
    let bf: Vec<u8> = values(&mut rng, 8, false)
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    let hf = raw_safetensors(
        &[
            (
                "model.embed_tokens.weight",
                "F32",
                vec![4, 3],
                f32_bytes(&values(&mut rng, 12, false)),
            ),
            ("model.norm.weight", "F16", vec![3], half),
            ("lm_head.weight", "BF16", vec![2, 4], bf),
            (
                "ids",
                "I64",
                vec![2],
                [7i64, -1].iter().flat_map(|v| v.to_le_bytes()).collect(),
            ),
        ],
        Some(&[("format", "pt")]),
    );
    let mut out: Vec<Vec<u8>> = [planes, packed, grouped_planes]
        .into_iter()
        .map(|r| r.unwrap_or_else(|e| panic!("seed safetensors: {e}")))
        .collect();
    out.push(hf);
    out
}

// ---------------------------------------------------------------------------------------------
// Converted-model files
// ---------------------------------------------------------------------------------------------

fn tiny_config(vocab: usize, tied: bool) -> LlamaConfig {
    LlamaConfig {
        vocab_size: vocab,
        hidden_size: 32,
        intermediate_size: 40,
        num_layers: 1,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 64,
        tie_word_embeddings: tied,
        architecture: Default::default(),
        hidden_act: Default::default(),
        bitnet: None,
        residual_rotation: None,
        ffn_rotation: None,
    }
}

/// A random float model with configuration `c` (values `f16`-exact when `f16_exact`).
fn float_model(c: &LlamaConfig, rng: &mut Rng, f16_exact: bool) -> Llama<Cpu> {
    let (h, f, d) = (c.hidden_size, c.intermediate_size, c.head_dim);
    let mut w = HashMap::new();
    let mut put = |name: String, shape: Vec<usize>, rng: &mut Rng| {
        let n = shape.iter().product();
        let data = values(rng, n, f16_exact);
        w.insert(name, HostTensor { shape, data });
    };
    put(
        "model.embed_tokens.weight".into(),
        vec![c.vocab_size, h],
        rng,
    );
    put("model.norm.weight".into(), vec![h], rng);
    if !c.tie_word_embeddings {
        put("lm_head.weight".into(), vec![c.vocab_size, h], rng);
    }
    for l in 0..c.num_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}.weight");
        put(p("input_layernorm"), vec![h], rng);
        put(p("post_attention_layernorm"), vec![h], rng);
        put(p("self_attn.q_proj"), vec![c.num_heads * d, h], rng);
        put(p("self_attn.k_proj"), vec![c.num_kv_heads * d, h], rng);
        put(p("self_attn.v_proj"), vec![c.num_kv_heads * d, h], rng);
        put(p("self_attn.o_proj"), vec![h, c.num_heads * d], rng);
        put(p("mlp.gate_proj"), vec![f, h], rng);
        put(p("mlp.up_proj"), vec![f, h], rng);
        put(p("mlp.down_proj"), vec![h, f], rng);
    }
    Llama::from_weights(c.clone(), &MapWeights(w), &Default::default())
        .unwrap_or_else(|e| panic!("seed model: {e}"))
}

/// Replaces layers of `model` by ternary ones: `plan[i]` is `None` (stays float) or the
/// layout, with `extras` adding a bias and an input scale.
fn ternarize(model: &mut Llama<Cpu>, rng: &mut Rng, plan: &[Option<(ScaleLayout, bool)>]) {
    let dev = Default::default();
    for (i, (_, slot)) in model.linears_mut().into_iter().enumerate() {
        let Some(&Some((layout, extras))) = plan.get(i % plan.len()) else {
            continue;
        };
        let (rows, cols) = (slot.out_features(), slot.in_features());
        let mut layer = TernaryLinear::<Cpu>::new(matrix(rng, rows, cols, layout), &dev)
            .unwrap_or_else(|e| panic!("seed layer: {e}"));
        if extras {
            layer = layer
                .with_bias(values(rng, rows, false))
                .and_then(|l| l.with_input_scale(values(rng, cols, false)))
                .unwrap_or_else(|e| panic!("seed layer extras: {e}"));
        }
        *slot = Box::new(layer);
    }
}

/// Converted-model seeds: an untied model mixing per-row and per-group ternary layers (with
/// and without bias and input scale) with `f16` float layers, and a tied all-ternary model
/// with `f32` floats (both with the toy tokenizer), and an untied model with the tiny
/// fixture's 300-token `tokenizer.json`.
pub fn model_files() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(3);
    let toy = toy_tokenizer("smollm");
    let row = Some((ScaleLayout::PerRow, false));
    let group = Some((ScaleLayout::PerGroup { group_size: 32 }, true));
    let row_extras = Some((ScaleLayout::PerRow, true));

    let mut mixed = float_model(&tiny_config(toy.vocab_size(), false), &mut rng, true);
    ternarize(&mut mixed, &mut rng, &[row, group, None, row_extras]);
    let mut tied = float_model(&tiny_config(toy.vocab_size(), true), &mut rng, false);
    // Every linear ternary but the head, which stays the (tied, unstored) embedding.
    ternarize(
        &mut tied,
        &mut rng,
        &[row, row, row, row, row, row, row, None],
    );
    let fixture_tok = Tokenizer::from_hf_json(TINY_TOKENIZER)
        .unwrap_or_else(|e| panic!("fixture tokenizer: {e}"));
    let mut big_vocab = float_model(
        &tiny_config(fixture_tok.vocab_size(), false),
        &mut rng,
        false,
    );
    ternarize(&mut big_vocab, &mut rng, &[group, row]);
    [
        ternary_convert::model_file::to_bytes(&mixed, &toy),
        ternary_convert::model_file::to_bytes(&tied, &toy),
        ternary_convert::model_file::to_bytes(&big_vocab, &fixture_tok),
    ]
    .into_iter()
    .map(|r| canonical(&r.unwrap_or_else(|e| panic!("seed model file: {e}"))))
    .collect()
}

/// A safetensors file with its header keys in sorted order. The converted-model writer emits
/// its metadata map in `HashMap` order, which changes from process to process; the seeds, and
/// so every input derived from them, must not.
fn canonical(file: &[u8]) -> Vec<u8> {
    let parts = crate::safetensors::split(file)
        .unwrap_or_else(|| panic!("seed model file is not a safetensors file"));
    let sorted: std::collections::BTreeMap<_, _> = parts.header.into_iter().collect();
    let mut header = String::from("{");
    for (i, (k, v)) in sorted.into_iter().enumerate() {
        if i > 0 {
            header.push(',');
        }
        header.push_str(&serde_json::Value::String(k).to_string());
        header.push(':');
        header.push_str(&v.to_string());
    }
    header.push('}');
    while !header.len().is_multiple_of(8) {
        header.push(' ');
    }
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&parts.data);
    out
}

// ---------------------------------------------------------------------------------------------
// config.json and tokenizer.json
// ---------------------------------------------------------------------------------------------

/// `config.json` seeds: the fixture's (transformers 5, `rope_parameters`), SmolLM2's as
/// transformers 4 writes it (`rope_scaling: null`, integer `rope_theta`), and ours.
pub fn configs() -> Vec<Vec<u8>> {
    let smollm_v4 = r#"{"architectures":["LlamaForCausalLM"],"attention_bias":false,"bos_token_id":0,
"eos_token_id":0,"hidden_act":"silu","hidden_size":576,"initializer_range":0.041666666666666664,
"intermediate_size":1536,"max_position_embeddings":8192,"model_type":"llama","num_attention_heads":9,
"num_hidden_layers":30,"num_key_value_heads":3,"pretraining_tp":1,"rms_norm_eps":1e-05,
"rope_scaling":null,"rope_theta":100000,"tie_word_embeddings":true,"torch_dtype":"bfloat16",
"transformers_version":"4.40.1","use_cache":true,"vocab_size":49152}"#;
    let scaled = r#"{"hidden_size":64,"intermediate_size":128,"num_attention_heads":4,
"num_key_value_heads":null,"head_dim":null,"num_hidden_layers":2,"vocab_size":300,
"rope_scaling":{"type":"default","factor":1.0},"rope_theta":500.5,"max_position_embeddings":256}"#;
    vec![
        TINY_CONFIG.as_bytes().to_vec(),
        smollm_v4.as_bytes().to_vec(),
        scaled.as_bytes().to_vec(),
        LlamaConfig::smollm2_135m().to_hf_json().into_bytes(),
    ]
}

/// A Llama-2 style SentencePiece-as-BPE `tokenizer.json` (byte fallback, `▁` normalizer,
/// template post-processor, a decoder sequence).
const SPM_TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,
"added_tokens":[{"id":0,"content":"<unk>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true},
{"id":1,"content":"<s>","single_word":false,"lstrip":false,"rstrip":false,"normalized":false,"special":true}],
"normalizer":{"type":"Sequence","normalizers":[{"type":"Prepend","prepend":"▁"},{"type":"Replace","pattern":{"String":" "},"content":"▁"}]},
"pre_tokenizer":null,
"post_processor":{"type":"TemplateProcessing","single":[{"SpecialToken":{"id":"<s>","type_id":0}},{"Sequence":{"id":"A","type_id":0}}],
"pair":[{"Sequence":{"id":"A","type_id":0}},{"Sequence":{"id":"B","type_id":1}}],"special_tokens":{"<s>":{"id":"<s>","ids":[1],"tokens":["<s>"]}}},
"decoder":{"type":"Sequence","decoders":[{"type":"Replace","pattern":{"String":"▁"},"content":" "},{"type":"ByteFallback"},{"type":"Fuse"},{"type":"Strip","content":" ","start":1,"stop":0}]},
"model":{"type":"BPE","dropout":null,"unk_token":"<unk>","continuing_subword_prefix":null,"end_of_word_suffix":null,
"fuse_unk":true,"byte_fallback":true,"ignore_merges":false,
"vocab":{"<unk>":0,"<s>":1,"<0x41>":2,"▁":3,"a":4,"b":5,"ab":6,"▁ab":7},"merges":["a b","▁ ab"]}}"#;

/// A BERT-style WordPiece `tokenizer.json` and a Unigram one.
const WORDPIECE_TOKENIZER: &str = r###"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
"normalizer":{"type":"BertNormalizer","clean_text":true,"handle_chinese_chars":true,"strip_accents":null,"lowercase":true},
"pre_tokenizer":{"type":"BertPreTokenizer"},
"post_processor":{"type":"BertProcessing","sep":["[SEP]",2],"cls":["[CLS]",1]},
"decoder":{"type":"WordPiece","prefix":"##","cleanup":true},
"model":{"type":"WordPiece","unk_token":"[UNK]","continuing_subword_prefix":"##","max_input_chars_per_word":100,
"vocab":{"[UNK]":0,"[CLS]":1,"[SEP]":2,"a":3,"##b":4,"hello":5}}}"###;

const UNIGRAM_TOKENIZER: &str = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
"normalizer":null,
"pre_tokenizer":{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true},
"post_processor":null,
"decoder":{"type":"Metaspace","replacement":"▁","prepend_scheme":"always","split":true},
"model":{"type":"Unigram","unk_id":0,"vocab":[["<unk>",0.0],["▁",-1.0],["a",-2.0],["b",-2.5],["▁ab",-1.5]],"byte_fallback":false}}"#;

/// `tokenizer.json` seeds: the fixture's byte-level BPE, our own document
/// ([`Tokenizer::to_json`]) and the Hugging Face part of it, and three other model families.
pub fn tokenizers() -> Vec<Vec<u8>> {
    let ours = toy_tokenizer("smollm")
        .to_json()
        .unwrap_or_else(|e| panic!("toy tokenizer JSON: {e}"));
    let inner = serde_json::from_str::<serde_json::Value>(&ours)
        .ok()
        .and_then(|v| v.get("tokenizer").map(ToString::to_string))
        .unwrap_or_default();
    vec![
        TINY_TOKENIZER.as_bytes().to_vec(),
        ours.into_bytes(),
        inner.into_bytes(),
        SPM_TOKENIZER.as_bytes().to_vec(),
        WORDPIECE_TOKENIZER.as_bytes().to_vec(),
        UNIGRAM_TOKENIZER.as_bytes().to_vec(),
    ]
}

// ---------------------------------------------------------------------------------------------
// Hugging Face checkpoints: transformers' packed BitNet layout, single and sharded
// ---------------------------------------------------------------------------------------------

/// The configuration of the checkpoint seeds: a one-block BitNet b1.58 (ReLU², sub-norms) whose
/// linear layers are packed `uint8` with a `weight_scale` (`linear_class: "bitlinear"`), tied
/// embeddings.
pub fn bitnet_config() -> LlamaConfig {
    LlamaConfig {
        architecture: ternary_models::Architecture::BitNet,
        hidden_act: ternary_models::Activation::Relu2,
        bitnet: Some(ternary_models::BitNetQuant {
            linear: ternary_models::BitNetLinear::Packed,
            modules_to_not_convert: None,
        }),
        ..tiny_config(40, true)
    }
}

/// transformers' `pack_weights` of the trits `t` (`rows × cols`, `rows % 4 == 0`): byte `[p, c]`
/// holds `t[i·rows/4 + p, c] + 1` in bits `2i, 2i+1` (the inverse of
/// `ternary_models::bitnet::unpack_ternary`).
fn pack_trits(t: &[i8], rows: usize, cols: usize) -> Vec<u8> {
    let p = rows / 4;
    let mut out = vec![0u8; p * cols];
    for (r, row) in t.chunks_exact(cols).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            out[(r % p) * cols + c] |= ((v + 1) as u8) << (2 * (r / p));
        }
    }
    out
}

/// The tensors of a packed tiny BitNet checkpoint: `(name, dtype, shape, bytes)`, floats as
/// `float` (`"F32"`, `"F16"` or `"BF16"`).
fn bitnet_tensors(rng: &mut Rng, float: &str) -> Vec<(String, &'static str, Vec<usize>, Vec<u8>)> {
    let c = bitnet_config();
    let (h, f, d) = (c.hidden_size, c.intermediate_size, c.head_dim);
    let dtype: &'static str = match float {
        "F16" => "F16",
        "BF16" => "BF16",
        _ => "F32",
    };
    let encode = |v: &[f32]| -> Vec<u8> {
        match dtype {
            "F16" => v
                .iter()
                .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
                .collect(),
            "BF16" => v
                .iter()
                .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
                .collect(),
            _ => f32_bytes(v),
        }
    };
    let mut out = Vec::new();
    let mut float_t = |name: String, shape: Vec<usize>, rng: &mut Rng| {
        let v = values(rng, shape.iter().product(), true);
        out.push((name, dtype, shape, encode(&v)));
    };
    float_t(
        "model.embed_tokens.weight".into(),
        vec![c.vocab_size, h],
        rng,
    );
    float_t("model.norm.weight".into(), vec![h], rng);
    let p = |s: &str| format!("model.layers.0.{s}.weight");
    float_t(p("input_layernorm"), vec![h], rng);
    float_t(p("post_attention_layernorm"), vec![h], rng);
    float_t(p("self_attn.attn_sub_norm"), vec![c.num_heads * d], rng);
    float_t(p("mlp.ffn_sub_norm"), vec![f], rng);
    for (name, rows, cols) in [
        ("self_attn.q_proj", c.num_heads * d, h),
        ("self_attn.k_proj", c.num_kv_heads * d, h),
        ("self_attn.v_proj", c.num_kv_heads * d, h),
        ("self_attn.o_proj", h, c.num_heads * d),
        ("mlp.gate_proj", f, h),
        ("mlp.up_proj", f, h),
        ("mlp.down_proj", h, f),
    ] {
        let t: Vec<i8> = (0..rows * cols).map(|_| rng.below(3) as i8 - 1).collect();
        out.push((
            p(name),
            "U8",
            vec![rows / 4, cols],
            pack_trits(&t, rows, cols),
        ));
        let scale = values(rng, 1, true)[0].abs() + 0.5;
        out.push((
            format!("model.layers.0.{name}.weight_scale"),
            dtype,
            vec![1],
            encode(&[scale]),
        ));
    }
    out
}

fn tensors_file(tensors: &[(String, &'static str, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(&str, &str, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.as_str(), *d, s.clone(), b.clone()))
        .collect();
    raw_safetensors(&refs, Some(&[("format", "pt")]))
}

/// Single-file checkpoint seeds: the packed tiny BitNet with `f32`, `f16` and `bf16` floats.
pub fn checkpoints() -> Vec<Vec<u8>> {
    let mut rng = Rng::new(5);
    ["F32", "F16", "BF16"]
        .iter()
        .map(|f| tensors_file(&bitnet_tensors(&mut rng, f)))
        .collect()
}

/// The shards the index seeds name: the packed tiny BitNet split over two files.
pub fn shards() -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng::new(6);
    let all = bitnet_tensors(&mut rng, "BF16");
    let (a, b): (Vec<_>, Vec<_>) = all.into_iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let strip = |v: Vec<(usize, _)>| v.into_iter().map(|(_, t)| t).collect::<Vec<_>>();
    vec![
        (
            "model-00001-of-00002.safetensors".into(),
            tensors_file(&strip(a)),
        ),
        (
            "model-00002-of-00002.safetensors".into(),
            tensors_file(&strip(b)),
        ),
    ]
}

/// `model.safetensors.index.json` seeds over [`shards`]: the full weight map (with and without
/// `metadata`), and one naming a single shard for tensors that all live there.
pub fn indexes() -> Vec<Vec<u8>> {
    let mut map = serde_json::Map::new();
    let mut first_only = serde_json::Map::new();
    for (i, (file, bytes)) in shards().iter().enumerate() {
        if let Some(p) = crate::safetensors::split(bytes) {
            for name in p.header.keys().filter(|k| *k != "__metadata__") {
                map.insert(name.clone(), file.clone().into());
                if i == 0 {
                    first_only.insert(name.clone(), file.clone().into());
                }
            }
        }
    }
    vec![
        serde_json::json!({"metadata": {"total_size": 1234}, "weight_map": map}).to_string(),
        serde_json::json!({ "weight_map": map }).to_string(),
        serde_json::json!({ "weight_map": first_only }).to_string(),
    ]
    .into_iter()
    .map(String::into_bytes)
    .collect()
}
