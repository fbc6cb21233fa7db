//! # ternary-models
//!
//! Pretrained Llama-family models in Burn, checked against an independent implementation, as
//! the float baseline every ternary experiment is measured against.
//!
//! - [`gguf`] / [`quant`]: a bounds-checked GGUF reader and exact dequantization of
//!   F32/F16/BF16/Q8_0/Q4_0/Q4_1; [`loader`]: GGUF files and safetensors directories
//!   ([`checkpoint`]: single or sharded, with transformers' packed BitNet weights).
//! - [`bitnet`]: BitNet b1.58's W1.58A8 linear layer, reproducing transformers' activation and
//!   weight quantization.
//! - [`model`]: Llama (RMSNorm, RoPE, grouped-query attention with a KV cache, SwiGLU),
//!   generic over the Burn backend; every projection goes through the [`linear`] seam.
//! - [`tokenizer`]: byte-level BPE (the `tokenizers` crate) and SentencePiece (llama.cpp's
//!   algorithm) from GGUF metadata; [`chat`]: the model's Jinja chat template.
//! - [`sniff`](mod@sniff): a model path's [`Format`], by content.
//! - [`generate`](mod@generate): greedy / temperature, top-k, top-p decoding with prefill and decode tokens/s;
//!   [`perplexity`](mod@perplexity): llama.cpp's `llama-perplexity` algorithm.
//! - [`fetch`]: where the cached SmolLM2-135M GGUF lives and how it is fetched.
//!
//! The layer seams ([`LinearLayer`](ternary_layers::LinearLayer),
//! [`ScoreFn`](ternary_layers::ScoreFn)) and the CPU backend ([`Cpu`](ternary_layers::Cpu)) come
//! from `ternary-layers`.

mod arch;
pub mod bitnet;
pub mod chat;
pub mod checkpoint;
pub mod config;
pub mod decoder;
pub mod error;
pub mod fetch;
pub mod generate;
pub mod gguf;
pub mod linear;
pub mod loader;
pub mod model;
pub mod perplexity;
pub mod quant;
pub mod quant_linear;
pub mod sniff;
mod spm;
pub mod tokenizer;
mod tokenizer_json;
pub mod weights;

pub use bitnet::{BitLinear, BitLinearPath};
pub use checkpoint::SafetensorsCheckpoint;
pub use config::{Activation, Architecture, BitNetLinear, BitNetQuant, LlamaConfig};
pub use decoder::{BurnDecoder, Decoder};
pub use error::{ModelError, Result};
pub use generate::{GenerationStats, Sampler, Sampling, generate, generate_with};
pub use linear::{FloatLinear, HostLinear, LinearImpl};
pub use loader::{
    LoadedModel, load, load_gguf, load_gguf_with, load_safetensors_dir, load_safetensors_dir_with,
};
pub use model::{KvCache, Llama, Logits, RmsNorm};
pub use perplexity::{PerplexityReport, perplexity, perplexity_with};
pub use sniff::{Format, sniff};
pub use tokenizer::Tokenizer;
