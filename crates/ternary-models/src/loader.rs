//! One-call loading of a model and its tokenizer from a GGUF file or a Hugging Face
//! safetensors directory.

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
pub fn load_gguf_with<B: Backend>(
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

/// Loads a Hugging Face checkpoint directory: `config.json`, `model.safetensors` and
/// `tokenizer.json`.
pub fn load_safetensors_dir<B: TernaryBackend>(
    dir: impl AsRef<Path>,
    device: &B::Device,
) -> Result<LoadedModel<B>> {
    let dir = dir.as_ref();
    let read = |name: &str| {
        let p = dir.join(name);
        std::fs::read_to_string(&p).map_err(|source| ModelError::Io { path: p, source })
    };
    let config_text = read("config.json")?;
    let config = LlamaConfig::from_hf_json(&config_text)?;
    let weights = SafetensorsWeights::open(dir.join("model.safetensors"))?;
    let mut tokenizer = Tokenizer::from_hf_file(dir.join("tokenizer.json"))?;
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
    let model = Llama::from_weights(config, &weights, device)?;
    Ok(LoadedModel { model, tokenizer })
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
