//! Converted-model files: round trips on the tiny Llama fixture (logits of the loaded model
//! equal the in-memory model's bit for bit; tied and untied heads; f16 storage only when exact),
//! and clear errors for every truncation, corrupted headers, missing or stray tensors, both
//! planes set, padding bits, wrong shapes and dtypes. Runs without the real model.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use half::f16;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use ternary_convert::model_file::{FloatDtype, StoredFormat, inspect_bytes, load_bytes, to_bytes};
use ternary_convert::{ConvertError, FloatStorage, inspect, load, save, save_with};
use ternary_core::quant::{Method, QuantConfig, quantize};
use ternary_core::{ScaleLayout, words_per_row};
use ternary_layers::Cpu;
use ternary_layers::TernaryLinear;
use ternary_layers::to_rows;
use ternary_models::linear::HostLinear;
use ternary_models::loader::SafetensorsWeights;
use ternary_models::weights::{HostTensor, WeightSource};
use ternary_models::{
    LinearImpl, Llama, LlamaConfig, LoadedModel, Logits, Tokenizer, load_safetensors_dir,
};

fn fixture() -> PathBuf {
    ternary_testkit::fixture_path("tiny-llama")
}

/// A fresh directory for this test's files.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!(
        "ternary-convert-model-file-{}-{name}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn logits(model: &Llama<Cpu>, ids: &[u32]) -> Vec<f32> {
    let mut cache = model.new_cache();
    to_rows(model.forward(ids, &mut cache, Logits::All).unwrap()).unwrap()
}

/// Replaces layer `i` of the model by a ternary layer quantized from its weight with `cfg`,
/// optionally with a bias and input scale (deterministic, non-trivial values).
fn make_ternary(model: &mut Llama<Cpu>, i: usize, cfg: &QuantConfig, extras: bool) {
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
    **slot = Box::new(layer);
}

/// The tiny fixture with a mix of layers: per-row and per-group ternary, with and without
/// bias / input scale, float, and a ternary untied head.
fn mixed_tiny() -> LoadedModel<Cpu> {
    let mut m = load_safetensors_dir::<Cpu>(fixture(), &Default::default()).unwrap();
    let n = m.model.linears().len();
    let per_row = QuantConfig::new(Method::AbsMean, ScaleLayout::PerRow);
    let grouped = QuantConfig::new(
        Method::Twn { delta_factor: 0.7 },
        ScaleLayout::PerGroup { group_size: 32 },
    );
    for i in 0..n {
        match i % 4 {
            0 => make_ternary(&mut m.model, i, &per_row, false),
            1 => make_ternary(&mut m.model, i, &grouped, true),
            2 => make_ternary(&mut m.model, i, &grouped, false),
            _ => {} // stays float
        }
    }
    m
}

fn ids(t: &Tokenizer) -> Vec<u32> {
    let mut ids = t
        .encode(
            "The quick brown fox jumps over the lazy dog, 1234 times.",
            true,
        )
        .unwrap();
    ids.truncate(24);
    assert!(ids.len() >= 8);
    ids
}

#[test]
fn round_trip_should_give_identical_logits_and_layers() {
    let m = mixed_tiny();
    let dir = scratch("round-trip");
    let path = dir.join("tiny.safetensors");
    let summary = save(&path, &m.model, &m.tokenizer).unwrap();
    let back = load::<Cpu>(&path, &Default::default()).unwrap();
    let ids = ids(&m.tokenizer);
    let (a, b) = (logits(&m.model, &ids), logits(&back.model, &ids));
    assert_eq!(a.len(), b.len());
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(x.to_bits(), y.to_bits(), "logit {i}: {x} vs {y}");
    }
    assert_eq!(back.model.config(), m.model.config());
    assert_eq!(
        back.tokenizer.encode("hello world", true).unwrap(),
        m.tokenizer.encode("hello world", true).unwrap()
    );
    assert_eq!(
        (back.tokenizer.bos_id, back.tokenizer.eos_id),
        (m.tokenizer.bos_id, m.tokenizer.eos_id)
    );

    // Layer by layer: same kind, same planes/scales/bias/input scale or same float weight.
    let (orig, loaded) = (m.model.linears(), back.model.linears());
    assert_eq!(orig.len(), loaded.len());
    let mut ternary = 0u64;
    let mut total = 0u64;
    for ((n1, l1), (n2, l2)) in orig.iter().zip(&loaded) {
        assert_eq!(n1, n2);
        total += (l1.out_features() * l1.in_features()) as u64;
        let t1 = ternary_convert::model_file::as_ternary::<Cpu>(l1.as_ref());
        let t2 = ternary_convert::model_file::as_ternary::<Cpu>(l2.as_ref());
        match (t1, t2) {
            (Some(a), Some(b)) => {
                ternary += (a.out_features() * a.in_features()) as u64;
                assert_eq!(a.weights(), b.weights(), "{n1}");
                assert_eq!(a.bias(), b.bias(), "{n1}");
                assert_eq!(a.input_scale(), b.input_scale(), "{n1}");
            }
            (None, None) => {
                assert_eq!(
                    to_rows(l1.weight()).unwrap(),
                    to_rows(l2.weight()).unwrap(),
                    "{n1}"
                );
            }
            _ => panic!("{n1}: kind changed"),
        }
    }
    assert!(ternary > 0 && ternary < total);

    // The summary agrees with an independent count, and with inspect.
    let inspected = inspect(&path).unwrap();
    assert_eq!(inspected, summary);
    assert_eq!(summary.ternary_weights(), ternary);
    assert_eq!(summary.linear_weights(), total);
    assert_eq!(summary.file_bytes, std::fs::metadata(&path).unwrap().len());
    for (l, (name, layer)) in summary.layers.iter().zip(&orig) {
        assert_eq!(&l.name, name);
        match ternary_convert::model_file::as_ternary::<Cpu>(layer.as_ref()) {
            Some(t) => {
                let m = t.matrix().unwrap();
                let trits = m.to_trits();
                let zeros = trits.iter().filter(|&&x| x == 0).count() as f64 / trits.len() as f64;
                assert_eq!(l.zero_fraction, Some(zeros), "{name}");
                let want = 4
                    * (2 * m.rows() * words_per_row(m.cols())
                        + m.scales().values().len()
                        + t.bias().map_or(0, |b| b.len())
                        + t.input_scale().map_or(0, <[f32]>::len));
                assert_eq!(l.bytes, want as u64, "{name}");
                assert!(matches!(l.format, StoredFormat::Ternary { .. }));
            }
            None => {
                // The fixture is float32 with random values: not f16-exact, so stored as f32.
                assert_eq!(l.format, StoredFormat::Float(FloatDtype::F32), "{name}");
                assert_eq!(l.bytes, 4 * l.weights(), "{name}");
            }
        }
    }
    let text = summary.to_string();
    assert!(
        text.contains("ternary/g32+d+b") && text.contains("ternary/row"),
        "{text}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn f16_storage_should_round_float_tensors_once_and_load_them_as_f16() {
    // `save_with(.., FloatStorage::F16)`: the embedding and the float layers become their
    // nearest f16 values (norms and ternary layers are untouched), the file shrinks, the
    // loaded model holds the table as f16 (its head is ternary), and saving that model
    // exactly gives the same bytes (rounding once is the whole change). A float layer with a
    // value beyond f16's range stays exact f32.
    let mut m = mixed_tiny();
    let big = {
        let mut linears = m.model.linears_mut();
        let (name, slot) = linears
            .iter_mut()
            .find(|(_, l)| ternary_convert::model_file::as_ternary::<Cpu>(l.as_ref()).is_none())
            .unwrap();
        let (rows, cols) = (slot.out_features(), slot.in_features());
        let mut w = to_rows(slot.weight()).unwrap();
        w[0] = 70000.0;
        **slot = Box::new(HostLinear::new(name, w, rows, cols).unwrap());
        name.clone()
    };
    let dir = scratch("f16-storage");
    let (exact, half) = (dir.join("exact.safetensors"), dir.join("half.safetensors"));
    let se = save(&exact, &m.model, &m.tokenizer).unwrap();
    let sh = save_with(&half, &m.model, &m.tokenizer, FloatStorage::F16).unwrap();
    let back = load::<Cpu>(&half, &Default::default()).unwrap();
    let round = |v: &[f32]| -> Vec<f32> { v.iter().map(|&x| f16::from_f32(x).to_f32()).collect() };
    let v = m.model.config().vocab_size;
    assert!(back.model.embedding_host().is_none());
    let table = back.model.embedding_host_f16().expect("f16 table");
    let want = round(&m.model.embedding_rows(0..v).unwrap());
    assert_eq!(table.iter().map(|x| x.to_f32()).collect::<Vec<_>>(), want);
    assert_eq!(back.model.embedding_rows(0..v).unwrap(), want);
    for ((name, a), (_, b)) in m.model.linears().iter().zip(back.model.linears().iter()) {
        let (wa, wb) = (to_rows(a.weight()).unwrap(), to_rows(b.weight()).unwrap());
        if ternary_convert::model_file::as_ternary::<Cpu>(a.as_ref()).is_some() || *name == big {
            assert_eq!(wa, wb, "{name} is stored exactly");
        } else {
            assert_eq!(round(&wa), wb, "{name} is rounded to f16");
        }
    }
    assert_eq!(
        m.model.norm_tensors().unwrap(),
        back.model.norm_tensors().unwrap()
    );
    for (l, e) in sh.layers.iter().zip(&se.layers) {
        let want = match (l.name == big, e.format) {
            (false, StoredFormat::Float(_)) => StoredFormat::Float(FloatDtype::F16),
            (_, f) => f,
        };
        assert_eq!(l.format, want, "{}", l.name);
    }
    assert_eq!(sh.others[0].2, FloatDtype::F16);
    assert!(sh.others[1..].iter().all(|o| o.2 == FloatDtype::F32));
    assert!(sh.file_bytes < se.file_bytes);
    assert_eq!(inspect(&half).unwrap(), sh);
    // Rounded once: an exact save of the loaded model is the same file.
    let again = dir.join("again.safetensors");
    save(&again, &back.model, &back.tokenizer).unwrap();
    let (x, y) = (
        std::fs::read(&again).unwrap(),
        std::fs::read(&half).unwrap(),
    );
    let (x, y) = (
        SafeTensors::deserialize(&x).unwrap(),
        SafeTensors::deserialize(&y).unwrap(),
    );
    let (mut nx, mut ny) = (x.names(), y.names());
    nx.sort_unstable();
    ny.sort_unstable();
    assert_eq!(nx, ny);
    for n in nx {
        let (a, b) = (x.tensor(n).unwrap(), y.tensor(n).unwrap());
        assert!(
            a.dtype() == b.dtype() && a.shape() == b.shape() && a.data() == b.data(),
            "{n} differs after an exact re-save"
        );
    }
    // The logits move only by the rounding.
    let ids = ids(&m.tokenizer);
    let (a, b) = (logits(&m.model, &ids), logits(&back.model, &ids));
    let scale = a.iter().fold(0f32, |s, x| s.max(x.abs()));
    let worst = a
        .iter()
        .zip(&b)
        .fold(0f32, |s, (x, y)| s.max((x - y).abs()));
    assert!(worst <= 1e-2 * scale, "worst {worst} of {scale}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A weight source that rounds every tensor of another one to f16, and can report a
/// different config (to make the tiny model tied).
struct Rounded<'a>(&'a SafetensorsWeights, bool);

impl WeightSource for Rounded<'_> {
    fn tensor(&self, name: &str) -> ternary_models::Result<HostTensor> {
        let mut t = self.0.tensor(name)?;
        if self.1 {
            t.data
                .iter_mut()
                .for_each(|v| *v = f16::from_f32(*v).to_f32());
        }
        Ok(t)
    }
    fn contains(&self, name: &str) -> bool {
        self.0.contains(name)
    }
}

fn tiny_config() -> LlamaConfig {
    LlamaConfig::from_hf_json(&std::fs::read_to_string(fixture().join("config.json")).unwrap())
        .unwrap()
}

#[test]
fn tied_heads_and_f16_exact_weights_should_round_trip() {
    let w = SafetensorsWeights::open(fixture().join("model.safetensors")).unwrap();
    let tok = Tokenizer::from_hf_file(fixture().join("tokenizer.json")).unwrap();
    let ids = ids(&tok);
    let mut cfg = tiny_config();
    cfg.tie_word_embeddings = true;
    let dir = scratch("tied");
    let path = dir.join("m.safetensors");
    let build = |f16: bool| {
        Llama::<Cpu>::from_weights_with(
            cfg.clone(),
            &Rounded(&w, f16),
            &Default::default(),
            LinearImpl::Host,
        )
        .unwrap()
    };
    for (f16_exact, ternary_head) in [(false, false), (true, false), (true, true)] {
        let mut model = build(f16_exact);
        make_ternary(&mut model, 0, &QuantConfig::default(), false);
        if ternary_head {
            let last = model.linears().len() - 1;
            make_ternary(&mut model, last, &QuantConfig::default(), true);
        }
        let s = save(&path, &model, &tok).unwrap();
        let back = load::<Cpu>(&path, &Default::default()).unwrap();
        let (a, b) = (logits(&model, &ids), logits(&back.model, &ids));
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "f16={f16_exact} head={ternary_head}"
        );
        // Loaded on the host, a tied float head and the embedding are one allocation; a
        // ternary head is a ternary layer (its float placeholder is gone), and an f16 table
        // no head shares stays f16.
        let (_, loaded_head) = back.model.linears().pop().unwrap();
        let any = loaded_head.as_any().unwrap();
        if ternary_head {
            assert!(any.is::<TernaryLinear<Cpu>>(), "{}", loaded_head.kind());
            assert_eq!(back.model.embedding_host_f16().is_some(), f16_exact);
            assert_eq!(back.model.embedding_host().is_some(), !f16_exact);
        } else {
            let table = back.model.embedding_host().expect("host f32 embedding");
            let host = any.downcast_ref::<HostLinear>().expect("host float head");
            assert!(Arc::ptr_eq(host.weight_arc().expect("an f32 head"), &table));
            assert!(back.model.embedding_host_f16().is_none());
        }
        let head = s.layers.last().unwrap();
        assert_eq!(head.name, "lm_head");
        if ternary_head {
            assert!(head.is_ternary() && head.bytes > 0);
        } else {
            // The tied float head is the embedding: not stored, not counted twice.
            assert_eq!(head.bytes, 0);
            assert_eq!(
                s.linear_weights(),
                s.layers
                    .iter()
                    .filter(|l| l.name != "lm_head")
                    .map(|l| l.weights())
                    .sum::<u64>()
            );
        }
        let want = if f16_exact {
            FloatDtype::F16
        } else {
            FloatDtype::F32
        };
        assert_eq!(s.others[0].0, "model.embed_tokens.weight");
        assert_eq!(s.others[0].2, want);
        assert!(
            s.others[1..].iter().all(|o| o.2 == FloatDtype::F32),
            "norms are f32"
        );
        assert!(
            s.layers
                .iter()
                .filter(|l| !l.is_ternary() && l.bytes > 0)
                .all(|l| l.format == StoredFormat::Float(want))
        );
        // The raw file agrees with the summary.
        let bytes = std::fs::read(&path).unwrap();
        let st = SafeTensors::deserialize(&bytes).unwrap();
        let want_dtype = if f16_exact { Dtype::F16 } else { Dtype::F32 };
        assert_eq!(
            st.tensor("model.embed_tokens.weight").unwrap().dtype(),
            want_dtype
        );
        assert!(st.tensor("lm_head.weight").is_err());
        assert_eq!(st.tensor("lm_head.plus").is_ok(), ternary_head);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Malformed files
// ---------------------------------------------------------------------------------------------

/// A 1-block model small enough to truncate at every length: width 32, 2 heads of 16, one
/// key/value head, vocabulary 6, a 6-token tokenizer.
fn micro() -> (LoadedModel<Cpu>, Vec<u8>) {
    let cfg = LlamaConfig::from_hf_json(
        r#"{"hidden_size":32,"intermediate_size":64,"num_attention_heads":2,
        "num_key_value_heads":1,"head_dim":16,"num_hidden_layers":1,"vocab_size":6,
        "rms_norm_eps":1e-5,"rope_theta":10000.0,"tie_word_embeddings":true}"#,
    )
    .unwrap();
    struct Src(LlamaConfig);
    impl WeightSource for Src {
        fn tensor(&self, name: &str) -> ternary_models::Result<HostTensor> {
            let c = &self.0;
            let shape = if name.contains("norm") {
                vec![c.hidden_size]
            } else if name.contains("embed") {
                vec![c.vocab_size, c.hidden_size]
            } else if name.contains("q_proj") {
                vec![32, 32]
            } else if name.contains("k_proj") || name.contains("v_proj") {
                vec![16, 32]
            } else if name.contains("o_proj") {
                vec![32, 32]
            } else if name.contains("down") {
                vec![32, 64]
            } else {
                vec![64, 32]
            };
            let n: usize = shape.iter().product();
            let seed = name.len() as u32;
            let data = (0..n as u32)
                .map(|i| {
                    ((i.wrapping_mul(2654435761).wrapping_add(seed * 97)) % 1000) as f32 / 1000.0
                        - 0.5
                })
                .collect();
            Ok(HostTensor { shape, data })
        }
        fn contains(&self, _: &str) -> bool {
            false
        }
    }
    let mut model = Llama::<Cpu>::from_weights_with(
        cfg.clone(),
        &Src(cfg),
        &Default::default(),
        LinearImpl::Host,
    )
    .unwrap();
    for i in 0..7 {
        let cfg = if i % 2 == 0 {
            QuantConfig::default()
        } else {
            QuantConfig::new(Method::AbsMean, ScaleLayout::PerGroup { group_size: 32 })
        };
        make_ternary(&mut model, i, &cfg, i == 1);
    }
    let tokens: Vec<String> = ["a", "b", "c", "d", "ab", "<s>"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let tokenizer =
        Tokenizer::from_parts(&tokens, &["a b".to_string()], &[1, 1, 1, 1, 1, 3], "gpt2").unwrap();
    let bytes = to_bytes(&model, &tokenizer).unwrap();
    (LoadedModel { model, tokenizer }, bytes)
}

/// The parts of a safetensors file, to edit and re-serialize.
struct Parts {
    meta: HashMap<String, String>,
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
}

impl Parts {
    fn of(bytes: &[u8]) -> Self {
        let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
        let st = SafeTensors::deserialize(bytes).unwrap();
        let mut tensors: Vec<_> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
            .collect();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        Self {
            meta: header.metadata().clone().unwrap(),
            tensors,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        let views: Vec<_> = self
            .tensors
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, Some(self.meta.clone())).unwrap()
    }

    fn tensor(&mut self, name: &str) -> &mut (String, Dtype, Vec<usize>, Vec<u8>) {
        self.tensors.iter_mut().find(|t| t.0 == name).unwrap()
    }

    fn remove(&mut self, name: &str) {
        self.tensors.retain(|t| t.0 != name);
    }
}

/// Loading must fail with a format error whose message contains `needle`.
#[track_caller]
fn assert_format_error(bytes: &[u8], needle: &str) {
    let e = load_bytes::<Cpu>(bytes, &Default::default()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, ConvertError::Format(_)), "{msg}");
    assert!(msg.contains(needle), "expected {needle:?} in {msg:?}");
    assert!(inspect_bytes(bytes).is_err());
}

#[test]
fn micro_file_should_round_trip() {
    let (m, bytes) = micro();
    let back = load_bytes::<Cpu>(&bytes, &Default::default()).unwrap();
    let ids = [0u32, 1, 2, 3, 4, 5, 1];
    assert_eq!(logits(&m.model, &ids), logits(&back.model, &ids));
    let s = inspect_bytes(&bytes).unwrap();
    assert_eq!(s.layers.iter().filter(|l| l.is_ternary()).count(), 7);
}

#[test]
fn equal_models_should_give_byte_identical_files() {
    // The header's keys are written sorted: every `HashMap` iterates in its own random order,
    // so unsorted headers differ between two writes (5! orders of the metadata keys alone).
    let (m, bytes) = micro();
    for _ in 0..4 {
        assert!(to_bytes(&m.model, &m.tokenizer).unwrap() == bytes);
    }
    let back = load_bytes::<Cpu>(&bytes, &Default::default()).unwrap();
    assert!(to_bytes(&back.model, &back.tokenizer).unwrap() == bytes);
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header = std::str::from_utf8(&bytes[8..8 + n]).unwrap();
    assert!(
        header.starts_with("{\"__metadata__\":{\"config\":"),
        "{}",
        &header[..60]
    );
}

#[test]
fn file_reads_should_equal_byte_reads_and_fail_on_every_cut() {
    // `load` and `inspect` read a file one tensor at a time; they must give what the bytes give,
    // and every truncation of the file (a stride of cuts, and the last bytes) must be a format
    // error that names the file.
    let (m, bytes) = micro();
    let dir = scratch("file-reads");
    let path = dir.join("micro.safetensors");
    std::fs::write(&path, &bytes).unwrap();
    let back = load::<Cpu>(&path, &Default::default()).unwrap();
    let ids = [0u32, 1, 2, 3, 4, 5, 1];
    assert_eq!(logits(&m.model, &ids), logits(&back.model, &ids));
    let (a, b) = (inspect(&path).unwrap(), inspect_bytes(&bytes).unwrap());
    assert_eq!(a.layers.len(), b.layers.len());
    assert_eq!(a.linear_weights(), b.linear_weights());
    let cut = dir.join("cut.safetensors");
    let n = bytes.len();
    for len in (0..n).step_by(7).chain(n - 8..n) {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let e = load::<Cpu>(&cut, &Default::default());
        assert!(
            matches!(&e, Err(ConvertError::Format(m)) if m.contains("cut.safetensors")),
            "truncated to {len} of {n} bytes: {:?}",
            e.err()
        );
        assert!(inspect(&cut).is_err(), "inspect, truncated to {len}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn every_truncation_should_be_an_error() {
    let (_, bytes) = micro();
    assert!(bytes.len() > 1000, "{}", bytes.len());
    for len in 0..bytes.len() {
        let e = load_bytes::<Cpu>(&bytes[..len], &Default::default());
        assert!(
            matches!(e, Err(ConvertError::Format(_))),
            "truncated to {len} of {} bytes",
            bytes.len()
        );
    }
    // Trailing garbage is an error too.
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(load_bytes::<Cpu>(&longer, &Default::default()).is_err());
    // And on disk, the error names the file.
    let dir = scratch("truncated");
    let path = dir.join("cut.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = load::<Cpu>(&path, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("cut.safetensors"), "{msg}");
    assert!(inspect(&path).is_err());
    let missing = dir.join("absent.safetensors");
    assert!(matches!(
        load::<Cpu>(&missing, &Default::default()),
        Err(ConvertError::Io { .. })
    ));
    assert!(matches!(inspect(&missing), Err(ConvertError::Io { .. })));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn corrupted_headers_should_be_errors() {
    let (_, bytes) = micro();
    // Header length beyond the file, huge, and garbage JSON.
    let mut b = bytes.clone();
    b[..8].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
    assert_format_error(&b, "safetensors");
    let mut b = bytes.clone();
    b[..8].copy_from_slice(&((bytes.len() as u64) * 2).to_le_bytes());
    assert_format_error(&b, "safetensors");
    let mut b = bytes.clone();
    b[8] = b'[';
    assert_format_error(&b, "safetensors");
    assert_format_error(b"", "safetensors");
    assert_format_error(&[0u8; 64], "safetensors");
    // A data offset near u64::MAX must not overflow inside the safetensors crate.
    let header = br#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,18446744073709551615]}}"#;
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(&[0; 4]);
    assert_format_error(&b, "data offset");

    let parts = Parts::of(&bytes);
    let edit = |f: &dyn Fn(&mut Parts)| {
        let mut p = Parts::of(&bytes);
        f(&mut p);
        p.bytes()
    };
    assert_eq!(parts.bytes().len(), bytes.len());
    let meta = |k: &'static str, v: Option<&'static str>| {
        edit(&move |p| match v {
            Some(v) => {
                p.meta.insert(k.into(), v.into());
            }
            None => {
                p.meta.remove(k);
            }
        })
    };
    assert_format_error(&meta("format", Some("ternary")), "\"format\"");
    assert_format_error(&meta("format", None), "\"format\"");
    assert_format_error(&meta("format_version", Some("3")), "version");
    assert_format_error(&meta("config", Some("{")), "config");
    assert_format_error(&meta("config", Some(r#"{"hidden_size":0}"#)), "config");
    assert_format_error(&meta("tokenizer", Some("{}")), "tokenizer");
    assert_format_error(&meta("tokenizer", None), "tokenizer");
    assert_format_error(&meta("layers", Some("[1,2]")), "layer table");
    assert_format_error(&meta("layers", Some("{}")), "no entry");
    let no_meta = {
        let p = Parts::of(&bytes);
        let views: Vec<_> = p
            .tensors
            .iter()
            .map(|(n, d, s, b)| (n.clone(), TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        safetensors::serialize(views, None).unwrap()
    };
    assert_format_error(&no_meta, "__metadata__");

    // Layer table edits.
    let table = |f: &dyn Fn(&mut serde_json::Map<String, serde_json::Value>)| {
        edit(&|p| {
            let mut t: serde_json::Value = serde_json::from_str(&p.meta["layers"]).unwrap();
            f(t.as_object_mut().unwrap());
            p.meta.insert("layers".into(), t.to_string());
        })
    };
    let q = "model.layers.0.self_attn.q_proj";
    assert_format_error(
        &table(&|t| {
            t.insert("model.layers.1.mlp.up_proj".into(), t[q].clone());
        }),
        "does not have",
    );
    assert_format_error(&table(&|t| t[q]["rows"] = 31.into()), "31x32");
    assert_format_error(&table(&|t| t[q]["kind"] = "packed".into()), "layer table");
    assert_format_error(
        &table(&|t| t[q]["scale_layout"] = "per_group".into()),
        "scale layout",
    );
    assert_format_error(
        &table(&|t| {
            t[q]["scale_layout"] = "per_group".into();
            t[q]["group_size"] = 48.into();
        }),
        "multiple of 32",
    );
    assert_format_error(&table(&|t| t[q]["bias"] = true.into()), "missing tensor");
    assert_format_error(&table(&|t| t[q]["extra"] = 1.into()), "layer table");

    // Tensor edits.
    assert_format_error(
        &edit(&|p| p.remove(&format!("{q}.minus"))),
        "missing tensor",
    );
    assert_format_error(&edit(&|p| p.remove("model.norm.weight")), "missing tensor");
    assert_format_error(
        &edit(&|p| p.remove("model.embed_tokens.weight")),
        "missing tensor",
    );
    assert_format_error(
        &edit(&|p| {
            let t = p.tensor("model.norm.weight").clone();
            p.tensors.push(("stray".into(), t.1, t.2, t.3));
        }),
        "stray",
    );
    // Both planes set: copy a non-zero plus word into the minus plane.
    assert_format_error(
        &edit(&|p| {
            let plus = p.tensor(&format!("{q}.plus")).3.clone();
            let i = plus.iter().position(|&b| b != 0).unwrap();
            p.tensor(&format!("{q}.minus")).3[i] |= plus[i];
        }),
        "both",
    );
    // A padding bit: the micro model's rows are 32 columns in 64-column rows, so word 1.
    assert_format_error(
        &edit(&|p| p.tensor(&format!("{q}.plus")).3[4] = 1),
        "padding",
    );
    assert_format_error(
        &edit(&|p| {
            let t = p.tensor(&format!("{q}.scales"));
            t.3[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        }),
        "non-finite",
    );
    assert_format_error(
        &edit(&|p| {
            let t = p.tensor("model.norm.weight");
            t.3[..4].copy_from_slice(&f32::INFINITY.to_le_bytes());
        }),
        "non-finite",
    );
    // Shape and dtype mismatches.
    assert_format_error(
        &edit(&|p| {
            let t = p.tensor(&format!("{q}.scales"));
            t.2 = vec![t.2[1], t.2[0]];
        }),
        "shape",
    );
    assert_format_error(
        &edit(&|p| {
            let t = p.tensor(&format!("{q}.plus"));
            t.1 = Dtype::F32;
        }),
        "dtype",
    );
    assert_format_error(
        &edit(&|p| {
            let t = p.tensor("model.norm.weight");
            t.1 = Dtype::F16;
            t.2 = vec![t.2[0] * 2];
        }),
        "dtype",
    );
}

#[test]
fn save_should_be_atomic_and_leave_no_temporary_files() {
    let (m, _) = micro();
    let dir = scratch("atomic");
    let path = dir.join("m.safetensors");
    std::fs::write(&path, b"old contents").unwrap();
    save(&path, &m.model, &m.tokenizer).unwrap();
    assert!(load::<Cpu>(&path, &Default::default()).is_ok());
    let bad = dir.join("no-such-dir").join("m.safetensors");
    assert!(matches!(
        save(&bad, &m.model, &m.tokenizer),
        Err(ConvertError::Core(_))
    ));
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(save(Path::new("/"), &m.model, &m.tokenizer).is_err());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn converted_tiny_model_should_round_trip_exactly() {
    let mut m = load_safetensors_dir::<Cpu>(fixture(), &Default::default()).unwrap();
    let cfg = ternary_convert::ConvertConfig {
        input_scale_alphas: vec![0.0, 0.5, 1.0],
        budget: None,
        keep_float: vec!["layers.1.mlp.down_proj".into()],
        calib_tokens: 256,
        ctx: 32,
        ..Default::default()
    };
    let report = ternary_convert::convert(
        &mut m.model,
        &m.tokenizer,
        ternary_convert::CALIBRATION_TEXT,
        &cfg,
        &mut |_| {},
    )
    .unwrap();
    let bytes = to_bytes(&m.model, &m.tokenizer).unwrap();
    let back = load_bytes::<Cpu>(&bytes, &Default::default()).unwrap();
    let ids = ids(&m.tokenizer);
    let (a, b) = (logits(&m.model, &ids), logits(&back.model, &ids));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    // The file's plan agrees with the conversion report, layer by layer.
    let s = inspect_bytes(&bytes).unwrap();
    assert_eq!(s.layers.len(), report.layers.len());
    for (l, p) in s.layers.iter().zip(&report.layers) {
        assert_eq!(
            (&l.name, l.rows, l.cols, l.is_ternary()),
            (&p.name, p.rows, p.cols, p.ternary)
        );
        if p.ternary {
            let z = l.zero_fraction.unwrap();
            assert!(
                (z - p.zero_fraction).abs() < 1e-12,
                "{}: {z} vs {}",
                l.name,
                p.zero_fraction
            );
        }
    }
    assert_eq!(s.layers.iter().filter(|l| l.is_ternary()).count(), 14);
}

// ---------------------------------------------------------------------------------------------
// Two trit-planes (format version 2)
// ---------------------------------------------------------------------------------------------

/// The tiny fixture converted with every linear layer but one on two planes.
fn two_plane_tiny() -> (LoadedModel<Cpu>, Vec<u8>) {
    let mut m = load_safetensors_dir::<Cpu>(fixture(), &Default::default()).unwrap();
    let cfg = ternary_convert::ConvertConfig {
        planes: ternary_convert::convert::Planes::Two,
        input_scale_alphas: vec![0.0, 0.5],
        budget: None,
        measure: false,
        keep_float: vec!["layers.1.mlp.down_proj".into()],
        calib_tokens: 256,
        ctx: 32,
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
    let bytes = to_bytes(&m.model, &m.tokenizer).unwrap();
    (m, bytes)
}

#[test]
fn two_plane_model_should_round_trip_exactly_as_version_2() {
    let (m, bytes) = two_plane_tiny();
    assert_eq!(Parts::of(&bytes).meta["format_version"], "2");
    assert_eq!(Parts::of(&micro().1).meta["format_version"], "1");
    let back = load_bytes::<Cpu>(&bytes, &Default::default()).unwrap();
    let ids = ids(&m.tokenizer);
    let (a, b) = (logits(&m.model, &ids), logits(&back.model, &ids));
    assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    let s = inspect_bytes(&bytes).unwrap();
    assert_eq!(s.format_version, "2");
    let mut two = 0;
    for ((name, l1), ((_, l2), l)) in m
        .model
        .linears()
        .iter()
        .zip(back.model.linears().iter().zip(&s.layers))
    {
        let t1 = ternary_convert::model_file::as_ternary::<Cpu>(l1.as_ref());
        let t2 = ternary_convert::model_file::as_ternary::<Cpu>(l2.as_ref());
        match (t1, t2) {
            (Some(a), Some(b)) => {
                assert_eq!(a.planes(), 2, "{name}");
                assert_eq!(a.weights(), b.weights(), "{name}");
                assert_eq!(a.input_scale(), b.input_scale(), "{name}");
                assert!(matches!(l.format, StoredFormat::TwoPlanes { .. }), "{name}");
                assert_eq!(l.planes(), 2);
                let want = a.weights().storage_bytes()
                    + 4 * a.input_scale().map_or(0, <[f32]>::len)
                    + 4 * a.bias().map_or(0, |b| b.len());
                assert_eq!(l.bytes, want as u64, "{name}");
                assert_eq!(l.zero_fraction, Some(a.weights().zero_fraction()));
                two += 1;
            }
            (None, None) => assert_eq!(l.planes(), 0, "{name}"),
            _ => panic!("{name}: kind changed"),
        }
    }
    assert_eq!(two, 14);
    assert_eq!(s.weights_with_planes(2), s.ternary_weights());
    let text = s.to_string();
    assert!(
        text.contains("2-plane/g64") && text.contains("14 on two trit-planes"),
        "{text}"
    );
}

#[test]
fn malformed_two_plane_files_should_be_clear_errors() {
    let (_, bytes) = two_plane_tiny();
    let edit = |f: &dyn Fn(&mut Parts)| {
        let mut p = Parts::of(&bytes);
        f(&mut p);
        p.bytes()
    };
    let q = "model.layers.0.self_attn.q_proj";
    // A two-plane layer in a version-1 file.
    assert_format_error(
        &edit(&|p| {
            p.meta.insert("format_version".into(), "1".into());
        }),
        "two trit-planes",
    );
    // Plane 2 missing, of the wrong shape or dtype, with both bits set, with NaN scales.
    assert_format_error(
        &edit(&|p| p.remove(&format!("{q}.scales2"))),
        "missing tensor",
    );
    assert_format_error(
        &edit(&|p| {
            let t = p.tensor(&format!("{q}.plus2"));
            t.2[1] += 2;
            t.3.extend([0u8; 8].repeat(t.2[0]));
        }),
        "shape",
    );
    assert_format_error(
        &edit(&|p| {
            let t = p.tensor(&format!("{q}.minus2"));
            t.1 = Dtype::I32;
        }),
        "dtype",
    );
    assert_format_error(
        &edit(&|p| {
            p.tensor(&format!("{q}.plus2")).3[0] |= 1;
            p.tensor(&format!("{q}.minus2")).3[0] |= 1;
        }),
        "plane 2",
    );
    assert_format_error(
        &edit(&|p| {
            p.tensor(&format!("{q}.scales2")).3[..4].copy_from_slice(&f32::NAN.to_le_bytes());
        }),
        "non-finite",
    );
    // A stray plane-2 tensor on a one-plane file.
    let (_, one) = micro();
    let mut p = Parts::of(&one);
    let t = p.tensor("model.layers.0.self_attn.q_proj.plus").clone();
    p.tensors.push((
        "model.layers.0.self_attn.q_proj.plus2".into(),
        t.1,
        t.2,
        t.3,
    ));
    assert_format_error(&p.bytes(), "plus2");
}
