//! BitNet b1.58 against transformers: the checkpoints of `fixtures/tiny-bitnet`
//! (`scripts/make_tiny_bitnet.py`: packed `uint8` + `weight_scale`, bf16 master weights, a
//! SiLU variant, a Llama-architecture packed twin), their logits and greedy tokens against transformers' float32 reference, the
//! same trits from the packed and master files, sharded = unsharded, and clear errors for
//! missing tensors and for every truncation of a checkpoint.

use burn::tensor::backend::Backend;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use ternary_layers::{Cpu, LinearPath, TernaryBackend, TernaryLinear, to_rows};
use ternary_models::generate::argmax;
use ternary_models::loader::SafetensorsWeights;
use ternary_models::{
    Architecture, BitLinear, BitNetLinear, BitNetQuant, LinearImpl, Llama, LlamaConfig, Logits,
    ModelError, SafetensorsCheckpoint, load_safetensors_dir, load_safetensors_dir_with,
};
use ternary_testkit::TempDir;

/// Largest logit difference allowed, as a fraction of the reference logit range (issue 13).
const TOL_OF_RANGE: f64 = 1e-4;

fn fixture(variant: &str) -> PathBuf {
    ternary_testkit::fixture_path("tiny-bitnet").join(variant)
}

fn reference(variant: &str) -> Value {
    let text = std::fs::read_to_string(fixture(variant).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| u32::try_from(x.as_u64().unwrap()).unwrap())
        .collect()
}

/// Logits at every prompt position and the 8 greedy tokens (KV cache, one token per step).
fn run<B: TernaryBackend>(model: &Llama<B>, prompt: &[u32], new: usize) -> (Vec<f32>, Vec<u32>) {
    let mut cache = model.new_cache();
    let logits = to_rows(model.forward(prompt, &mut cache, Logits::All).unwrap()).unwrap();
    let v = model.config().vocab_size;
    let mut next = argmax(&logits[logits.len() - v..]) as u32;
    let mut greedy = vec![next];
    while greedy.len() < new {
        let l = to_rows(model.forward(&[next], &mut cache, Logits::Last).unwrap()).unwrap();
        next = argmax(&l) as u32;
        greedy.push(next);
    }
    (logits, greedy)
}

/// Logits within `TOL_OF_RANGE` of the range and identical greedy tokens; returns the largest
/// difference over the range.
fn check_against_transformers(variant: &str, linear_impl: LinearImpl) -> f64 {
    let r = reference(variant);
    let m = load_safetensors_dir_with::<Cpu>(fixture(variant), &Default::default(), linear_impl)
        .unwrap();
    let prompt = ids(&r["ids"]);
    let text = r["text"].as_str().unwrap();
    assert_eq!(
        m.tokenizer.encode(text, true).unwrap(),
        prompt,
        "{variant} ids"
    );
    let want: Vec<f64> = r["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()))
        .collect();
    let greedy_want = ids(&r["greedy"]);
    let (got, greedy) = run(&m.model, &prompt, greedy_want.len());
    assert_eq!(got.len(), want.len(), "{variant}");
    let range = r["logit_range"].as_f64().unwrap();
    let worst = got
        .iter()
        .zip(&want)
        .map(|(&g, &w)| (f64::from(g) - w).abs())
        .fold(0f64, f64::max);
    eprintln!(
        "{variant} ({linear_impl:?}): max |Δlogit| = {worst:.3e}, range {range:.4}, ratio {:.3e}",
        worst / range
    );
    assert!(
        worst <= TOL_OF_RANGE * range,
        "{variant} ({linear_impl:?}): max |Δlogit| {worst:e} > {TOL_OF_RANGE} · range {range}"
    );
    assert_eq!(
        greedy, greedy_want,
        "{variant} ({linear_impl:?}) greedy tokens"
    );
    worst / range
}

#[test]
fn packed_checkpoint_should_match_transformers() {
    check_against_transformers("relu2-packed", LinearImpl::Host);
    check_against_transformers("relu2-packed", LinearImpl::Burn);
}

#[test]
fn bf16_master_checkpoint_should_match_transformers() {
    check_against_transformers("relu2-bf16", LinearImpl::Host);
    check_against_transformers("relu2-bf16", LinearImpl::Burn);
}

#[test]
fn silu_checkpoint_should_match_transformers() {
    check_against_transformers("silu-bf16", LinearImpl::Host);
}

#[test]
fn llama_architecture_packed_checkpoint_should_match_transformers() {
    // Falcon3-1.58bit / Llama3-8B-1.58 style: `model_type: llama` + packed BitLinear.
    check_against_transformers("llama-packed", LinearImpl::Host);
    check_against_transformers("llama-packed", LinearImpl::Burn);
}

#[test]
fn configs_should_parse_as_transformers_wrote_them() {
    let read = |v: &str| {
        LlamaConfig::from_hf_json(&std::fs::read_to_string(fixture(v).join("config.json")).unwrap())
            .unwrap()
    };
    let packed = read("relu2-packed");
    assert_eq!(packed.architecture, Architecture::BitNet);
    assert_eq!(packed.hidden_act.name(), "relu2");
    assert_eq!(packed.bitnet.as_ref().unwrap().linear, BitNetLinear::Packed);
    let master = read("relu2-bf16");
    assert_eq!(master.bitnet.as_ref().unwrap().linear, BitNetLinear::Online);
    assert_eq!(read("silu-bf16").hidden_act.name(), "silu");
    let llama = read("llama-packed");
    assert_eq!(llama.architecture, Architecture::Llama);
    assert_eq!(llama.bitnet.as_ref().unwrap().linear, BitNetLinear::Packed);
    for c in [packed, master] {
        assert_eq!(LlamaConfig::from_hf_json(&c.to_hf_json()).unwrap(), c);
    }
}

fn bit_linears<B: Backend>(m: &Llama<B>) -> Vec<(String, &BitLinear<B>)> {
    m.linears()
        .into_iter()
        .filter_map(|(n, l)| {
            l.as_any()
                .and_then(|a| a.downcast_ref::<BitLinear<B>>())
                .map(|b| (n, b))
        })
        .collect()
}

#[test]
fn packed_and_master_should_hold_the_same_trits() {
    let device = Default::default();
    let packed = load_safetensors_dir::<Cpu>(fixture("relu2-packed"), &device).unwrap();
    let master = load_safetensors_dir::<Cpu>(fixture("relu2-bf16"), &device).unwrap();
    let (p, m) = (bit_linears(&packed.model), bit_linears(&master.model));
    // 7 projections per layer; the tied head stays float.
    assert_eq!(p.len(), 7 * 2);
    assert_eq!(m.len(), p.len());
    for ((np, lp), (nm, lm)) in p.iter().zip(&m) {
        assert_eq!(np, nm);
        assert_eq!(lp.matrix().to_trits(), lm.matrix().to_trits(), "{np}");
        assert!(lp.matrix().nnz() > 0, "{np}");
        // Packed: weight_scale = 1/mean|W| in bf16; master: the same in f32.
        let (dp, dm) = (lp.divisor(), lm.divisor());
        assert!((dp - dm).abs() <= dm * 2f32.powi(-8), "{np}: {dp} vs {dm}");
    }
    assert!(
        packed
            .model
            .linears()
            .iter()
            .any(|(n, l)| n == "lm_head" && l.kind() == "float-host")
    );
}

/// A safetensors file's tensors, in file order.
type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

fn read_tensors(path: &Path) -> Tensors {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Tensors = st
        .tensors()
        .into_iter()
        .map(|(n, t)| (n, t.dtype(), t.shape().to_vec(), t.data().to_vec()))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn write_tensors(tensors: &[(String, Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: BTreeMap<String, TensorView<'_>> = tensors
        .iter()
        .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize(&views, None).unwrap()
}

/// A copy of a fixture directory's config and tokenizer files in `dir`.
fn copy_meta(variant: &str, dir: &Path) {
    for f in ["config.json", "tokenizer.json", "tokenizer_config.json"] {
        std::fs::copy(fixture(variant).join(f), dir.join(f)).unwrap();
    }
}

#[test]
fn sharded_checkpoint_should_equal_unsharded() {
    let tmp = TempDir::new("bitnet-shards");
    let all = read_tensors(&fixture("relu2-packed").join("model.safetensors"));
    // Layer 0 and the embedding in the first shard, the rest in the second.
    let (a, b): (Tensors, Tensors) = all
        .into_iter()
        .partition(|t| t.0.starts_with("model.layers.0.") || t.0 == "model.embed_tokens.weight");
    let files = [
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ];
    let mut map = serde_json::Map::new();
    for (shard, file) in [&a, &b].into_iter().zip(files) {
        std::fs::write(tmp.path(file), write_tensors(shard)).unwrap();
        for t in shard {
            map.insert(t.0.clone(), Value::String(file.into()));
        }
    }
    let index = serde_json::json!({"metadata": {"total_size": 0}, "weight_map": map});
    std::fs::write(tmp.path("model.safetensors.index.json"), index.to_string()).unwrap();
    copy_meta("relu2-packed", tmp.dir());
    let device = Default::default();
    let sharded = load_safetensors_dir::<Cpu>(tmp.dir(), &device).unwrap();
    let single = load_safetensors_dir::<Cpu>(fixture("relu2-packed"), &device).unwrap();
    let prompt = ids(&reference("relu2-packed")["ids"]);
    let (ls, gs) = run(&sharded.model, &prompt, 4);
    let (l1, g1) = run(&single.model, &prompt, 4);
    assert_eq!(ls, l1, "sharded logits must be bit-identical");
    assert_eq!(gs, g1);
    let ck = SafetensorsCheckpoint::open_dir(tmp.dir()).unwrap();
    assert_eq!(ck.num_shards(), 2);

    // An index that puts a tensor in the wrong shard, or names a path, is an error.
    let mut bad = map.clone();
    bad.insert(
        "model.norm.weight".into(),
        Value::String("model-00001-of-00002.safetensors".into()),
    );
    let e = index_error(tmp.dir(), &serde_json::json!({ "weight_map": bad }));
    assert!(
        e.contains("model.norm.weight") && e.contains("00001"),
        "{e}"
    );
    let mut bad = map.clone();
    bad.insert(
        "model.norm.weight".into(),
        Value::String("../model.safetensors".into()),
    );
    let e = index_error(tmp.dir(), &serde_json::json!({ "weight_map": bad }));
    assert!(e.contains("../model.safetensors"), "{e}");
    let e = index_error(tmp.dir(), &serde_json::json!({ "weight_map": {} }));
    assert!(e.contains("empty"), "{e}");
    // A missing shard file names it.
    let mut bad = map;
    bad.insert(
        "model.norm.weight".into(),
        Value::String("model-00003-of-00002.safetensors".into()),
    );
    let e = index_error(tmp.dir(), &serde_json::json!({ "weight_map": bad }));
    assert!(e.contains("model-00003-of-00002.safetensors"), "{e}");
}

fn index_error(dir: &Path, index: &Value) -> String {
    let text = index.to_string();
    SafetensorsCheckpoint::from_index(&text, |f| SafetensorsWeights::open(dir.join(f)))
        .unwrap_err()
        .to_string()
}

/// Loads the packed fixture's tensors after `edit`, with its config.
fn load_edited(edit: impl FnOnce(&mut Tensors)) -> Result<Llama<Cpu>, ModelError> {
    let mut t = read_tensors(&fixture("relu2-packed").join("model.safetensors"));
    edit(&mut t);
    let w = SafetensorsWeights::from_bytes(write_tensors(&t))?;
    let config = LlamaConfig::from_hf_json(
        &std::fs::read_to_string(fixture("relu2-packed").join("config.json")).unwrap(),
    )?;
    Llama::<Cpu>::from_weights(
        config,
        &SafetensorsCheckpoint::single("model.safetensors", w),
        &Default::default(),
    )
}

#[test]
fn missing_and_malformed_tensors_should_be_named() {
    for name in [
        "model.layers.1.mlp.ffn_sub_norm.weight",
        "model.layers.0.self_attn.attn_sub_norm.weight",
        "model.layers.1.self_attn.k_proj.weight_scale",
        "model.layers.0.mlp.down_proj.weight",
        "model.norm.weight",
    ] {
        let e = load_edited(|t| t.retain(|x| x.0 != name)).unwrap_err();
        assert!(matches!(e, ModelError::MissingTensor(_)), "{name}: {e}");
        assert!(e.to_string().contains(name), "{name}: {e}");
    }
    // A packed weight with a wrong row count.
    let name = "model.layers.0.mlp.up_proj.weight";
    let e = load_edited(|t| {
        let x = t.iter_mut().find(|x| x.0 == name).unwrap();
        x.2[0] -= 1;
        let keep = x.2[0] * x.2[1];
        x.3.truncate(keep);
    })
    .unwrap_err();
    assert!(
        matches!(e, ModelError::Shape { .. }) && e.to_string().contains(name),
        "{e}"
    );
    // A byte holding the code 0b11.
    let e = load_edited(|t| {
        t.iter_mut().find(|x| x.0 == name).unwrap().3[5] = 0b1100_0000;
    })
    .unwrap_err();
    assert!(
        e.to_string().contains(name) && e.to_string().contains("0b11"),
        "{e}"
    );
    // A weight_scale of two values, and a zero one.
    let scale = "model.layers.1.self_attn.o_proj.weight_scale";
    let e = load_edited(|t| {
        let x = t.iter_mut().find(|x| x.0 == scale).unwrap();
        x.2 = vec![2];
        x.3 = vec![0x80, 0x3f, 0x80, 0x3f];
    })
    .unwrap_err();
    assert!(e.to_string().contains(scale), "{e}");
    let e = load_edited(|t| {
        t.iter_mut().find(|x| x.0 == scale).unwrap().3 = vec![0, 0];
    })
    .unwrap_err();
    assert!(e.to_string().contains("weight scale"), "{e}");
    // Float weights under linear_class bitlinear.
    let e = load_edited(|t| {
        let x = t.iter_mut().find(|x| x.0 == name).unwrap();
        x.1 = Dtype::BF16;
        x.2 = vec![512, 256];
        x.3 = vec![0; 512 * 256 * 2];
    })
    .unwrap_err();
    assert!(
        e.to_string().contains(name) && e.to_string().contains("packed"),
        "{e}"
    );
}

/// A small packed BitNet checkpoint (1 layer, hidden 64), so that every truncation point can
/// be tried.
fn small_packed() -> (LlamaConfig, Vec<u8>) {
    let c = LlamaConfig {
        vocab_size: 8,
        hidden_size: 64,
        intermediate_size: 64,
        num_layers: 1,
        num_heads: 2,
        num_kv_heads: 1,
        head_dim: 32,
        rope_theta: 10_000.0,
        rms_norm_eps: 1e-5,
        max_position_embeddings: 16,
        tie_word_embeddings: true,
        architecture: Architecture::BitNet,
        hidden_act: ternary_models::Activation::Relu2,
        bitnet: Some(BitNetQuant::default()),
        residual_rotation: None,
        ffn_rotation: None,
    };
    let bf16 = |n: usize, v: f32| -> Vec<u8> {
        (0..n)
            .flat_map(|i| half::bf16::from_f32(v + 0.01 * (i % 7) as f32).to_le_bytes())
            .collect()
    };
    let mut t: Tensors = vec![
        (
            "model.embed_tokens.weight".into(),
            Dtype::BF16,
            vec![8, 64],
            bf16(512, -0.02),
        ),
        (
            "model.norm.weight".into(),
            Dtype::BF16,
            vec![64],
            bf16(64, 1.0),
        ),
    ];
    let p = |s: &str| format!("model.layers.0.{s}");
    for (n, w) in [
        ("input_layernorm.weight", 64),
        ("post_attention_layernorm.weight", 64),
        ("self_attn.attn_sub_norm.weight", 64),
        ("mlp.ffn_sub_norm.weight", 64),
    ] {
        t.push((p(n), Dtype::BF16, vec![w], bf16(w, 1.0)));
    }
    for (n, out, inp) in [
        ("self_attn.q_proj", 64, 64),
        ("self_attn.k_proj", 32, 64),
        ("self_attn.v_proj", 32, 64),
        ("self_attn.o_proj", 64, 64),
        ("mlp.gate_proj", 64, 64),
        ("mlp.up_proj", 64, 64),
        ("mlp.down_proj", 64, 64),
    ] {
        let packed: Vec<u8> = (0..out / 4 * inp)
            .map(|i| [0x00, 0x55, 0xaa, 0x19][i % 4])
            .collect();
        t.push((
            p(&format!("{n}.weight")),
            Dtype::U8,
            vec![out / 4, inp],
            packed,
        ));
        t.push((
            p(&format!("{n}.weight_scale")),
            Dtype::BF16,
            vec![1],
            bf16(1, 2.0),
        ));
    }
    (c, write_tensors(&t))
}

#[test]
fn every_truncation_of_a_checkpoint_should_be_an_error() {
    let (c, full) = small_packed();
    let load = |bytes: Vec<u8>| -> Result<Llama<Cpu>, ModelError> {
        let w = SafetensorsWeights::from_bytes(bytes)?;
        Llama::<Cpu>::from_weights(
            c.clone(),
            &SafetensorsCheckpoint::single("m", w),
            &Default::default(),
        )
    };
    let m = load(full.clone()).unwrap();
    let mut cache = m.new_cache();
    let y = to_rows(m.forward(&[1, 2, 3], &mut cache, Logits::All).unwrap()).unwrap();
    assert!(y.iter().all(|v| v.is_finite()));
    for cut in 0..full.len() {
        assert!(
            load(full[..cut].to_vec()).is_err(),
            "cut at {cut} of {} loaded",
            full.len()
        );
    }
    // A truncated index is an error, never a panic.
    let index =
        r#"{"metadata":{"total_size":1},"weight_map":{"model.norm.weight":"a.safetensors"}}"#;
    for cut in 0..index.len() {
        let r = SafetensorsCheckpoint::from_index(&index[..cut], |_| {
            SafetensorsWeights::from_bytes(full.clone())
        });
        assert!(r.is_err(), "index cut at {cut}");
    }
}

/// The packed fixture as a `bitnet` GGUF: linears TQ2_0 (scale `1/weight_scale` per block
/// of 256, rounded to f16 by the encoder) or the same weights in F32; Q/K rows in Hugging
/// Face's order, as llama.cpp's converter leaves them for `bitnet` (its graph uses NEOX RoPE).
fn packed_as_gguf(ternary: bool) -> (Vec<u8>, LlamaConfig) {
    use ternary_models::gguf::{GgufTensorData, GgufValue, write_gguf};
    use ternary_models::quant::{GgmlType, encode_ternary};
    use ternary_models::weights::{WeightSource, gguf_name};
    let dir = fixture("relu2-packed");
    let c = LlamaConfig::from_hf_json(&std::fs::read_to_string(dir.join("config.json")).unwrap())
        .unwrap();
    let ck = SafetensorsCheckpoint::open_dir(&dir).unwrap();
    let f32_tensor = |name: String, dims: Vec<usize>, data: &[f32]| GgufTensorData {
        name,
        dims,
        kind: GgmlType::F32,
        bytes: data.iter().flat_map(|x| x.to_le_bytes()).collect(),
    };
    let mut tensors = Vec::new();
    for n in ["model.embed_tokens.weight", "model.norm.weight"] {
        let t = ck.tensor(n).unwrap();
        tensors.push(f32_tensor(
            gguf_name(n).unwrap(),
            t.shape.iter().rev().copied().collect(),
            &t.data,
        ));
    }
    for l in 0..c.num_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}.weight");
        for n in [
            "input_layernorm",
            "post_attention_layernorm",
            "self_attn.attn_sub_norm",
            "mlp.ffn_sub_norm",
        ] {
            let t = ck.tensor(&p(n)).unwrap();
            tensors.push(f32_tensor(
                gguf_name(&p(n)).unwrap(),
                t.shape.clone(),
                &t.data,
            ));
        }
        for n in [
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            let name = p(n);
            let t = ck.ternary(&name).unwrap().unwrap();
            let (rows, cols) = (t.matrix.rows(), t.matrix.cols());
            let trits = t.matrix.to_trits();
            let scales = ternary_core::Scales::per_group(
                256,
                vec![
                    half::f16::from_f32(1.0 / t.weight_scale.unwrap()).to_f32();
                    rows * cols / 256
                ],
            );
            let m = ternary_core::TernaryMatrix::from_trits(rows, cols, &trits, scales).unwrap();
            let bytes = encode_ternary(GgmlType::TQ2_0, &m).unwrap();
            let gname = gguf_name(&name).unwrap();
            tensors.push(if ternary {
                GgufTensorData {
                    name: gname,
                    dims: vec![cols, rows],
                    kind: GgmlType::TQ2_0,
                    bytes,
                }
            } else {
                let back =
                    ternary_models::quant::decode_ternary(GgmlType::TQ2_0, &bytes, rows, cols)
                        .unwrap();
                f32_tensor(gname, vec![cols, rows], &back.dequantize())
            });
        }
    }
    let u = |v: usize| GgufValue::U32(v as u32);
    let bytes = write_gguf(
        &[
            ("general.architecture", GgufValue::String("bitnet".into())),
            ("bitnet.block_count", u(c.num_layers)),
            ("bitnet.context_length", u(c.max_position_embeddings)),
            ("bitnet.embedding_length", u(c.hidden_size)),
            ("bitnet.feed_forward_length", u(c.intermediate_size)),
            ("bitnet.attention.head_count", u(c.num_heads)),
            ("bitnet.attention.head_count_kv", u(c.num_kv_heads)),
            ("bitnet.attention.key_length", u(c.head_dim)),
            ("bitnet.rope.freq_base", GgufValue::F32(c.rope_theta as f32)),
            (
                "bitnet.attention.layer_norm_rms_epsilon",
                GgufValue::F32(c.rms_norm_eps as f32),
            ),
            ("bitnet.vocab_size", u(c.vocab_size)),
        ],
        &tensors,
    );
    (bytes, c)
}

#[test]
fn gguf_ternary_tensors_should_load_as_ternary_layers() {
    use ternary_models::gguf::GgufFile;
    use ternary_models::weights::GgufWeights;
    let device = Default::default();
    let build = |ternary: bool| {
        let (bytes, hf) = packed_as_gguf(ternary);
        let file = GgufFile::from_bytes(bytes).unwrap();
        let c = LlamaConfig::from_gguf(&file).unwrap();
        assert_eq!(
            (c.architecture, c.bitnet.is_none()),
            (Architecture::BitNet, true)
        );
        assert_eq!(
            (c.hidden_size, c.num_kv_heads, c.head_dim),
            (hf.hidden_size, hf.num_kv_heads, hf.head_dim)
        );
        Llama::<Cpu>::from_weights(c.clone(), &GgufWeights::new(&file, c), &device).unwrap()
    };
    let (mut tq, float) = (build(true), build(false));
    let kinds: Vec<String> = tq.linears().iter().map(|(_, l)| l.kind()).collect();
    assert_eq!(
        kinds.iter().filter(|k| *k == "ternary").count(),
        14,
        "{kinds:?}"
    );
    // As loaded they take int8 activations (as llama.cpp's TQ kernels do); on f32 activations
    // they must give the float file's logits.
    let mut switched = 0;
    for (name, slot) in tq.linears_mut() {
        let t = slot
            .as_any()
            .and_then(|a| a.downcast_ref::<TernaryLinear<Cpu>>())
            .cloned();
        if let Some(t) = t {
            assert_eq!(t.path(), LinearPath::CpuInt8, "{name}: path as loaded");
            *slot = Box::new(t.with_path(LinearPath::CpuF32));
            switched += 1;
        }
    }
    assert_eq!(switched, 14);
    assert!(float.linears().iter().all(|(_, l)| l.kind() != "ternary"));
    let prompt = ids(&reference("relu2-packed")["ids"]);
    let (a, ga) = run(&tq, &prompt, 4);
    let (b, gb) = run(&float, &prompt, 4);
    let range =
        b.iter().copied().fold(f32::MIN, f32::max) - b.iter().copied().fold(f32::MAX, f32::min);
    let worst = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 1e-5 * range,
        "TQ2_0 vs F32 GGUF: {worst} (range {range})"
    );
    assert_eq!(ga, gb);
}
