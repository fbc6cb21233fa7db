//! One-call loading of a model and its tokenizer from a GGUF file or a Hugging Face
//! safetensors directory (single file or sharded, float or BitNet packed ternary).

use crate::checkpoint::SafetensorsCheckpoint;
use crate::config::LlamaConfig;
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::linear::LinearImpl;
use crate::model::Llama;
use crate::tokenizer::Tokenizer;
use crate::weights::{GgufWeights, HostTensor, WeightSource};
use burn::tensor::backend::Backend;
use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};
use std::path::Path;
use ternary_layers::TernaryBackend;

/// A model with its tokenizer.
#[derive(Debug)]
pub struct LoadedModel<B: Backend> {
    /// The network.
    pub model: Llama<B>,
    /// The text codec.
    pub tokenizer: Tokenizer,
}

/// Loads a GGUF file: hyper-parameters and tokenizer from its metadata, weights dequantized
/// to f32 (F32/F16/BF16/Q8_0/Q4_0/Q4_1).
pub fn load_gguf<B: TernaryBackend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<LoadedModel<B>> {
    load_gguf_with(path, device, LinearImpl::default_for::<B>())
}

/// [`load_gguf`] with an explicit kind of linear layer ([`LinearImpl::Quantized`] keeps
/// Q4_0/Q4_1/Q8_0 weights in their blocks).
pub fn load_gguf_with<B: TernaryBackend>(
    path: impl AsRef<Path>,
    device: &B::Device,
    linear_impl: LinearImpl,
) -> Result<LoadedModel<B>> {
    let file = GgufFile::open(path)?;
    let config = LlamaConfig::from_gguf(&file)?;
    let tokenizer = Tokenizer::from_gguf(&file)?;
    let weights = GgufWeights::new(&file, config.clone());
    let model = Llama::from_weights_with(config, &weights, device, linear_impl)?;
    Ok(LoadedModel { model, tokenizer })
}

/// A tensor as stored: type, shape, bytes.
pub(crate) type RawTensor<'a> = (Dtype, Vec<usize>, &'a [u8]);

/// The weights of one `model.safetensors` file (F32/F16/BF16 tensors).
#[derive(Debug)]
pub struct SafetensorsWeights {
    bytes: Vec<u8>,
}

impl SafetensorsWeights {
    /// Reads and validates a safetensors file.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_bytes(bytes)
    }

    /// Validates safetensors bytes (header, offsets) and keeps them.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        // Offsets beyond the buffer first: `safetensors` 0.8 adds the last end offset to the
        // header length unchecked (an overflow panic in builds with overflow checks).
        ternary_core::io::check_data_offsets(&bytes).map_err(ModelError::Safetensors)?;
        SafeTensors::deserialize(&bytes).map_err(|e| ModelError::Safetensors(e.to_string()))?;
        Ok(Self { bytes })
    }

    fn view(&self) -> Result<SafeTensors<'_>> {
        SafeTensors::deserialize(&self.bytes).map_err(|e| ModelError::Safetensors(e.to_string()))
    }

    /// The stored type, shape and bytes of tensor `name`, or `None` when the file lacks it.
    pub(crate) fn raw(&self, name: &str) -> Result<Option<RawTensor<'_>>> {
        let st = self.view()?;
        Ok(st
            .tensor(name)
            .ok()
            .map(|t| (t.dtype(), t.shape().to_vec(), t.data())))
    }

    /// Whether the file holds a tensor called `name`, of any type.
    pub(crate) fn contains_raw(&self, name: &str) -> bool {
        self.view().is_ok_and(|st| st.tensor(name).is_ok())
    }
}

impl WeightSource for SafetensorsWeights {
    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let st = self.view()?;
        let t = st
            .tensor(name)
            .map_err(|_| ModelError::MissingTensor(name.to_string()))?;
        let b = t.data();
        let data: Vec<f32> = match t.dtype() {
            Dtype::F32 => b
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::F16 => b
                .chunks_exact(2)
                .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::BF16 => b
                .chunks_exact(2)
                .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            other => {
                return Err(ModelError::UnsupportedType {
                    name: name.to_string(),
                    kind: format!("{other:?}"),
                });
            }
        };
        Ok(HostTensor {
            shape: t.shape().to_vec(),
            data,
        })
    }

    fn contains(&self, name: &str) -> bool {
        self.view().is_ok_and(|st| st.tensor(name).is_ok())
    }
}

/// Loads a Hugging Face checkpoint directory: `config.json`, `model.safetensors` (or the
/// shards of `model.safetensors.index.json`) and `tokenizer.json`, with the backend's default
/// linear layers.
///
/// Llama and BitNet b1.58 (`model_type: "bitnet"`) configurations; with a BitNet
/// `quantization_config` the converted layers are W1.58A8, from packed `uint8` weights and
/// their `weight_scale` or from float master weights ternarized as in training (see
/// [`BitNetLinear`](crate::config::BitNetLinear)). BOS is prepended when
/// `tokenizer_config.json` says `add_bos_token`, or else when the `tokenizer.json`
/// post-processor starts with the BOS token.
pub fn load_safetensors_dir<B: TernaryBackend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<LoadedModel<B>> {
    load_safetensors_dir_with(dir, device, LinearImpl::default_for::<B>())
}

/// [`load_safetensors_dir`] with an explicit kind of linear layer ([`LinearImpl::Burn`] also
/// runs W1.58A8 layers in Burn tensor ops instead of the host int8 kernels).
pub fn load_safetensors_dir_with<B: TernaryBackend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
    linear_impl: LinearImpl,
) -> Result<LoadedModel<B>> {
    let dir = dir.as_ref();
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(|source| ModelError::Io { path: p, source })
    };
    let config_text = read("config.json")?;
    let config = LlamaConfig::from_hf_json(&config_text)?;
    let weights = SafetensorsCheckpoint::open_dir(dir)?;
    let tokenizer_text = read("tokenizer.json")?;
    let mut tokenizer = Tokenizer::from_hf_json(&tokenizer_text).map_err(|e| match e {
        ModelError::Tokenizer(m) => {
            ModelError::Tokenizer(format!("{}: {m}", dir.join("tokenizer.json").display()))
        }
        other => other,
    })?;
    let json: serde_json::Value = serde_json::from_str(&config_text)
        .map_err(|e| ModelError::Config(format!("config.json: {e}")))?;
    let id = |k: &str| {
        json.get(k)
            .and_then(|v| v.as_u64())
            .and_then(|v| u32::try_from(v).ok())
    };
    if let Some(b) = id("bos_token_id") {
        tokenizer.bos_id = Some(b);
    }
    if let Some(e) = id("eos_token_id") {
        tokenizer.eos_id = Some(e);
    }
    tokenizer.add_bos = adds_bos(
        dir.join("tokenizer_config.json"),
        &tokenizer_text,
        tokenizer.bos_id,
    );
    let model = Llama::from_weights_with(config, &weights, device, linear_impl)?;
    Ok(LoadedModel { model, tokenizer })
}

/// Whether a Hugging Face tokenizer prepends BOS: `add_bos_token` in `tokenizer_config.json`
/// when it says, else whether the `tokenizer.json` post-processor's single-sequence template
/// starts with the token whose id is `bos` (as transformers' Llama tokenizer writes it).
fn adds_bos(config: impl AsRef<Path>, tokenizer_json: &str, bos: Option<u32>) -> bool {
    let from_config = std::fs::read_to_string(config)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v.get("add_bos_token").and_then(serde_json::Value::as_bool));
    if let Some(b) = from_config {
        return b;
    }
    let Some(bos) = bos else {
        return false;
    };
    let Ok(doc) = serde_json::from_str::<serde_json::Value>(tokenizer_json) else {
        return false;
    };
    let Some(p) = doc.get("post_processor").filter(|p| !p.is_null()) else {
        return false;
    };
    // A `TemplateProcessing` directly or as the first of a `Sequence`.
    let template = match p.get("processors").and_then(serde_json::Value::as_array) {
        Some(list) => list.iter().find(|q| q.get("single").is_some()),
        None => Some(p),
    };
    let first_special = template
        .and_then(|t| t.get("single"))
        .and_then(serde_json::Value::as_array)
        .and_then(|s| s.first())
        .and_then(|f| f.get("SpecialToken"))
        .and_then(|s| s.get("id"))
        .and_then(serde_json::Value::as_str);
    let Some(token) = first_special else {
        return false;
    };
    template
        .and_then(|t| t.get("special_tokens"))
        .and_then(|m| m.get(token))
        .and_then(|s| s.get("ids"))
        .and_then(serde_json::Value::as_array)
        .is_some_and(|ids| ids.len() == 1 && ids[0].as_u64() == Some(u64::from(bos)))
}

/// Loads a `.gguf` file or a safetensors directory, whichever `path` is.
pub fn load<B: TernaryBackend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<LoadedModel<B>> {
    let path = path.as_ref();
    if path.is_dir() {
        load_safetensors_dir(path, device)
    } else {
        load_gguf(path, device)
    }
}
