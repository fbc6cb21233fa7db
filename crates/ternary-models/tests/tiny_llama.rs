//! A tiny random Llama written by `scripts/make_tiny_llama.py` (transformers, float32):
//! safetensors + config.json + tokenizer.json loading, logits against transformers, the same
//! weights through a GGUF written here (llama.cpp names and Q/K permutation), the KV cache
//! against the full forward, and clear errors for bad checkpoints. Runs without the real model.

use half::f16;
use serde_json::Value;
use std::path::PathBuf;
use ternary_layers::Cpu;
use ternary_layers::to_rows;
use ternary_models::gguf::{GgufFile, GgufTensorData, GgufValue, write_gguf};
use ternary_models::linear::HostLinear;
use ternary_models::loader::SafetensorsWeights;
use ternary_models::quant::GgmlType;
use ternary_models::weights::{GgufWeights, HostTensor, WeightSource, gguf_name};
use ternary_models::{LinearImpl, Llama, LlamaConfig, Logits, ModelError, load_safetensors_dir};

/// f32 here vs. f32 PyTorch on a 2-layer model with O(1..10) logits.
const TOL: f64 = 1e-4;

fn dir() -> PathBuf {
    ternary_testkit::fixture_path("tiny-llama")
}

fn reference() -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir().join("reference.json")).unwrap()).unwrap()
}

fn ref_ids(r: &Value) -> Vec<u32> {
    r["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn config() -> LlamaConfig {
    LlamaConfig::from_hf_json(&std::fs::read_to_string(dir().join("config.json")).unwrap()).unwrap()
}

fn assert_matches_reference(model: &Llama<Cpu>, what: &str) {
    let r = reference();
    let ids = ref_ids(&r);
    let mut cache = model.new_cache();
    let got = to_rows(model.forward(&ids, &mut cache, Logits::All).unwrap()).unwrap();
    let want: Vec<f64> = r["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    assert_eq!(got.len(), want.len(), "{what}");
    let worst = got
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0f64, f64::max);
    assert!(worst < TOL, "{what}: largest logit difference {worst:e}");
}

#[test]
fn safetensors_checkpoint_should_match_transformers() {
    let m = load_safetensors_dir::<Cpu>(dir(), &Default::default()).unwrap();
    assert_eq!(m.model.config().num_kv_heads, 2);
    assert!(!m.model.config().tie_word_embeddings);
    assert_matches_reference(&m.model, "safetensors, host linears");
    let w = SafetensorsWeights::open(dir().join("model.safetensors")).unwrap();
    let burn = Llama::<Cpu>::from_weights_with(config(), &w, &Default::default(), LinearImpl::Burn)
        .unwrap();
    assert_matches_reference(&burn, "safetensors, Burn matmul linears");
}

#[test]
fn hf_tokenizer_json_should_match_python_ids() {
    let m = load_safetensors_dir::<Cpu>(dir(), &Default::default()).unwrap();
    let r = reference();
    let text = r["text"].as_str().unwrap();
    assert_eq!(m.tokenizer.encode(text, false).unwrap(), ref_ids(&r));
    assert_eq!(m.tokenizer.decode(&ref_ids(&r)).unwrap(), text);
    // Special ids from config.json.
    assert_eq!((m.tokenizer.bos_id, m.tokenizer.eos_id), (Some(1), Some(2)));
}

/// llama.cpp's `permute` from convert_hf_to_gguf.py: rows (heads, 2, d/2) -> (heads, d/2, 2).
fn permute(t: &HostTensor, heads: usize) -> Vec<f32> {
    let (rows, cols) = (t.shape[0], t.shape[1]);
    let d = rows / heads;
    let mut out = Vec::with_capacity(t.data.len());
    for h in 0..heads {
        for i in 0..d / 2 {
            for s in 0..2 {
                let r = h * d + s * (d / 2) + i;
                out.extend_from_slice(&t.data[r * cols..(r + 1) * cols]);
            }
        }
    }
    out
}

/// The tiny checkpoint as llama.cpp's converter would write it (F32 tensors).
fn tiny_gguf() -> Vec<u8> {
    tiny_gguf_as(GgmlType::F32, false, false)
}

/// [`tiny_gguf`] with the matrices (not the norms) stored as `kind` (F32 or F16), their values
/// rounded to f16 first when `round` (so an F32 and an F16 file hold the same values), and the
/// output matrix left out (a tied head) when `tied`.
fn tiny_gguf_as(kind: GgmlType, round: bool, tied: bool) -> Vec<u8> {
    let c = config();
    let w = SafetensorsWeights::open(dir().join("model.safetensors")).unwrap();
    let mut names = vec![
        "model.embed_tokens.weight".to_string(),
        "model.norm.weight".to_string(),
    ];
    if !tied {
        names.push("lm_head.weight".to_string());
    }
    for l in 0..c.num_layers {
        for p in [
            "input_layernorm",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "post_attention_layernorm",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            names.push(format!("model.layers.{l}.{p}.weight"));
        }
    }
    let tensors: Vec<GgufTensorData> = names
        .iter()
        .map(|n| {
            let t = w.tensor(n).unwrap();
            let data = if n.ends_with("q_proj.weight") {
                permute(&t, c.num_heads)
            } else if n.ends_with("k_proj.weight") {
                permute(&t, c.num_kv_heads)
            } else {
                t.data.clone()
            };
            let matrix = t.shape.len() == 2;
            let data: Vec<f32> = if matrix && round {
                data.iter().map(|&x| f16::from_f32(x).to_f32()).collect()
            } else {
                data
            };
            let (kind, bytes) = if matrix && kind == GgmlType::F16 {
                let b = data
                    .iter()
                    .flat_map(|&x| f16::from_f32(x).to_bits().to_le_bytes());
                (GgmlType::F16, b.collect())
            } else {
                (
                    GgmlType::F32,
                    data.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            };
            GgufTensorData {
                name: gguf_name(n).unwrap(),
                dims: t.shape.iter().rev().copied().collect(),
                kind,
                bytes,
            }
        })
        .collect();
    let u = |v: usize| GgufValue::U32(v as u32);
    write_gguf(
        &[
            ("general.architecture", GgufValue::String("llama".into())),
            ("llama.block_count", u(c.num_layers)),
            ("llama.context_length", u(c.max_position_embeddings)),
            ("llama.embedding_length", u(c.hidden_size)),
            ("llama.feed_forward_length", u(c.intermediate_size)),
            ("llama.attention.head_count", u(c.num_heads)),
            ("llama.attention.head_count_kv", u(c.num_kv_heads)),
            ("llama.attention.key_length", u(c.head_dim)),
            ("llama.rope.freq_base", GgufValue::F32(c.rope_theta as f32)),
            (
                "llama.attention.layer_norm_rms_epsilon",
                GgufValue::F32(c.rms_norm_eps as f32),
            ),
            ("llama.vocab_size", u(c.vocab_size)),
        ],
        &tensors,
    )
}

#[test]
fn gguf_with_llama_cpp_layout_should_match_transformers() {
    let file = GgufFile::from_bytes(tiny_gguf()).unwrap();
    let mut c = LlamaConfig::from_gguf(&file).unwrap();
    // GGUF stores eps as f32.
    assert!((c.rms_norm_eps - config().rms_norm_eps).abs() < 1e-12);
    c.rms_norm_eps = config().rms_norm_eps;
    assert_eq!(c, config());
    let m = Llama::<Cpu>::from_weights(c.clone(), &GgufWeights::new(&file, c), &Default::default())
        .unwrap();
    assert_matches_reference(&m, "GGUF");
}

#[test]
fn f16_gguf_should_keep_f16_host_layers_and_give_the_logits_of_its_values_in_f32() {
    // An F16 file's matrices stay f16 in the host layers (and the table, one allocation with a
    // tied head); its logits equal those of an F32 file holding the same values, up to the
    // summation order of the dense kernels (relative 1e-5 of the logit range).
    for tied in [false, true] {
        let load = |kind| {
            let file = GgufFile::from_bytes(tiny_gguf_as(kind, true, tied)).unwrap();
            let c = LlamaConfig::from_gguf(&file).unwrap();
            assert_eq!(c.tie_word_embeddings, tied);
            Llama::<Cpu>::from_weights(c.clone(), &GgufWeights::new(&file, c), &Default::default())
                .unwrap()
        };
        let (half, full) = (load(GgmlType::F16), load(GgmlType::F32));
        for (name, l) in half.linears() {
            assert_eq!(l.kind(), "float-host-f16", "{name} tied={tied}");
        }
        for (name, l) in full.linears() {
            assert_eq!(l.kind(), "float-host", "{name} tied={tied}");
        }
        let table = half.embedding_host_f16().expect("an f16 table");
        assert!(full.embedding_host().is_some());
        if tied {
            let (_, head) = half.linears().pop().unwrap();
            let head = head.as_any().unwrap().downcast_ref::<HostLinear>().unwrap();
            assert!(std::sync::Arc::ptr_eq(
                head.weight_f16_arc().unwrap(),
                &table
            ));
        }
        let ids = ref_ids(&reference());
        let a = to_rows(
            half.forward(&ids, &mut half.new_cache(), Logits::All)
                .unwrap(),
        )
        .unwrap();
        let b = to_rows(
            full.forward(&ids, &mut full.new_cache(), Logits::All)
                .unwrap(),
        )
        .unwrap();
        let range = b.iter().fold(0f32, |m, v| m.max(v.abs()));
        let worst = a
            .iter()
            .zip(&b)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst <= 1e-5 * range, "tied={tied}: {worst} of {range}");
    }
}

#[test]
fn kv_cache_decoding_should_match_the_full_forward() {
    let m = load_safetensors_dir::<Cpu>(dir(), &Default::default())
        .unwrap()
        .model;
    let ids = ref_ids(&reference());
    let v = m.config().vocab_size;
    let full = to_rows(m.forward(&ids, &mut m.new_cache(), Logits::All).unwrap()).unwrap();
    // Prefill 5 tokens, then one at a time, then a 3-token step.
    let mut cache = m.new_cache();
    let mut rows = to_rows(m.forward(&ids[..5], &mut cache, Logits::All).unwrap()).unwrap();
    let mut at = 5;
    while at < ids.len() {
        let step = if at == 12 { 3 } else { 1 };
        let end = (at + step).min(ids.len());
        rows.extend(to_rows(m.forward(&ids[at..end], &mut cache, Logits::All).unwrap()).unwrap());
        at = end;
    }
    assert_eq!(cache.len(), ids.len());
    assert_eq!(rows.len(), full.len());
    for (i, (a, b)) in rows.iter().zip(&full).enumerate() {
        // Different row counts take different product paths (GEMV vs GEMM), so sums differ
        // in order: f32 rounding only.
        assert!(
            (a - b).abs() < 1e-4,
            "position {} id {}: {a} vs {b}",
            i / v,
            i % v
        );
    }
    let last = to_rows(m.forward(&ids, &mut m.new_cache(), Logits::Last).unwrap()).unwrap();
    for (a, b) in last.iter().zip(&full[full.len() - v..]) {
        assert!((a - b).abs() < 1e-4, "last row: {a} vs {b}");
    }
}

#[test]
fn f16_safetensors_should_load_the_rounded_weights() {
    let w = SafetensorsWeights::open(dir().join("model.safetensors")).unwrap();
    let raw = std::fs::read(dir().join("model.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&raw).unwrap();
    let names: Vec<String> = st.names().into_iter().map(String::from).collect();
    let halves: Vec<(String, Vec<usize>, Vec<u8>)> = names
        .iter()
        .map(|n| {
            let t = w.tensor(n).unwrap();
            let b = t
                .data
                .iter()
                .flat_map(|&x| f16::from_f32(x).to_le_bytes())
                .collect();
            (n.clone(), t.shape, b)
        })
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = halves
        .iter()
        .map(|(n, s, b)| {
            (
                n.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F16, s.clone(), b)
                    .unwrap(),
            )
        })
        .collect();
    let bytes = safetensors::serialize(views, None).unwrap();
    let half_w = SafetensorsWeights::from_bytes(bytes).unwrap();
    for n in &names {
        let (a, b) = (half_w.tensor(n).unwrap(), w.tensor(n).unwrap());
        assert_eq!(a.shape, b.shape);
        for (x, y) in a.data.iter().zip(&b.data) {
            assert_eq!(*x, f16::from_f32(*y).to_f32(), "{n}");
        }
    }
    // And the model built from it runs.
    let m = Llama::<Cpu>::from_weights(config(), &half_w, &Default::default()).unwrap();
    let out = to_rows(
        m.forward(&[1, 2, 3], &mut m.new_cache(), Logits::Last)
            .unwrap(),
    )
    .unwrap();
    assert!(out.iter().all(|x| x.is_finite()));
}

#[test]
fn bad_checkpoints_should_name_the_problem() {
    let w = SafetensorsWeights::open(dir().join("model.safetensors")).unwrap();
    let device = Default::default();
    let mut c = config();
    c.intermediate_size = 64;
    let e = Llama::<Cpu>::from_weights(c, &w, &device).unwrap_err();
    assert!(
        matches!(&e, ModelError::Shape { name, .. } if name.contains("mlp.gate_proj")),
        "{e}"
    );
    let mut c = config();
    c.num_layers = 3;
    let e = Llama::<Cpu>::from_weights(c, &w, &device).unwrap_err();
    assert!(e.to_string().contains("model.layers.2."), "{e}");
    assert!(SafetensorsWeights::from_bytes(vec![1, 2, 3]).is_err());
    let m = Llama::<Cpu>::from_weights(config(), &w, &device).unwrap();
    assert!(m.forward(&[], &mut m.new_cache(), Logits::All).is_err());
    assert!(m.forward(&[300], &mut m.new_cache(), Logits::All).is_err());
    // A truncated GGUF of the same model.
    let g = tiny_gguf();
    let e = GgufFile::from_bytes(g[..g.len() - 100].to_vec()).unwrap_err();
    assert!(e.to_string().contains("truncated"), "{e}");
}

#[test]
fn perplexity_should_follow_llama_cpp_chunking() {
    let m = load_safetensors_dir::<Cpu>(dir(), &Default::default())
        .unwrap()
        .model;
    let tokens: Vec<u32> = (0..70u32).map(|i| (i * 37 + 11) % 300).collect();
    let n_ctx = 16;
    // Too short a text is an error, as in llama.cpp (needs 2·n_ctx tokens).
    assert!(ternary_models::perplexity(&m, &tokens[..31], n_ctx, None, None, |_, _| {}).is_err());
    let rep = ternary_models::perplexity(&m, &tokens, n_ctx, Some(5), None, |_, _| {}).unwrap();
    // By hand: 70 / 16 = 4 chunks, first token replaced by BOS 5, positions 8..=14 scored.
    let (mut sum, mut sum2, mut count) = (0f64, 0f64, 0usize);
    for c in 0..4 {
        let mut chunk = tokens[c * n_ctx..(c + 1) * n_ctx].to_vec();
        chunk[0] = 5;
        let logits = to_rows(m.forward(&chunk, &mut m.new_cache(), Logits::All).unwrap()).unwrap();
        for j in 8..15 {
            let row: Vec<f64> = logits[j * 300..(j + 1) * 300]
                .iter()
                .map(|&x| f64::from(x))
                .collect();
            let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
            let nll = lse - row[tokens[c * n_ctx + j + 1] as usize];
            sum += nll;
            sum2 += nll * nll;
            count += 1;
        }
    }
    let mean = sum / count as f64;
    let err = ((sum2 / count as f64 - mean * mean) / (count - 1) as f64).sqrt() * mean.exp();
    assert_eq!((rep.chunks, rep.scored), (4, 28));
    assert!(
        (rep.mean_nll - mean).abs() < 1e-5,
        "{} vs {mean}",
        rep.mean_nll
    );
    assert!(
        (rep.ppl_stderr - err).abs() < 1e-4 * err.max(1.0),
        "{} vs {err}",
        rep.ppl_stderr
    );
    assert_eq!(rep.running_ppl.len(), 4);
}

#[test]
fn greedy_generation_should_equal_argmax_of_full_recomputation() {
    let m = load_safetensors_dir::<Cpu>(dir(), &Default::default())
        .unwrap()
        .model;
    let prompt = vec![10u32, 20, 30];
    let (got, stats) = ternary_models::generate(
        &m,
        &prompt,
        12,
        ternary_models::Sampling::Greedy,
        None,
        |_| {},
    )
    .unwrap();
    let mut seq = prompt.clone();
    for _ in 0..12 {
        let last = to_rows(m.forward(&seq, &mut m.new_cache(), Logits::Last).unwrap()).unwrap();
        seq.push(ternary_models::generate::argmax(&last) as u32);
    }
    assert_eq!(got, seq[3..]);
    assert_eq!((stats.prompt_tokens, stats.generated_tokens), (3, 12));
    // A stop token ends generation right after it is produced.
    let (stopped, _) = ternary_models::generate(
        &m,
        &prompt,
        12,
        ternary_models::Sampling::Greedy,
        Some(got[2]),
        |_| {},
    )
    .unwrap();
    assert_eq!(
        stopped,
        got[..=got.iter().position(|&t| t == got[2]).unwrap()]
    );
    // Seeded top-p is reproducible.
    let s = ternary_models::Sampling::Sample {
        top_p: 0.9,
        top_k: 0,
        temperature: 0.8,
        seed: 3,
    };
    let a = ternary_models::generate(&m, &prompt, 8, s, None, |_| {})
        .unwrap()
        .0;
    let b = ternary_models::generate(&m, &prompt, 8, s, None, |_| {})
        .unwrap()
        .0;
    assert_eq!(a, b);
}
