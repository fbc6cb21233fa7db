//! Converted models in one safetensors file: [`save`], [`load`], [`inspect`].
//!
//! # Layout (format `"ternary-model"`, version `"1"`)
//!
//! Every linear layer `N` of [`Llama::linears`](ternary_models::Llama::linears) (`model.layers.{l}.self_attn.q_proj`, …,
//! `lm_head`) is stored either
//!
//! - **ternary** (a [`TernaryLinear`](ternary_layers::TernaryLinear)): `N.plus`, `N.minus` — `U32 [rows, words_per_row]`, the
//!   in-memory bit-planes verbatim (little-endian words, column `c` in word `c / 32`, bit
//!   `c % 32`, as in `ternary_core::io`); `N.scales` — `F32 [rows, groups_per_row]`; optional
//!   `N.bias` — `F32 [rows]`; optional `N.input_scale` — `F32 [cols]`. The layer computes
//!   `y = Q·(x ⊙ d) + b` with `Q[r, c] = s[r, g(c)] · t[r, c]`;
//! - or **two-plane** (a [`TernaryLinear`](ternary_layers::TernaryLinear) with
//!   [`LinearWeights::Two`](ternary_layers::LinearWeights::Two), `Q = M₁ + M₂`): `M₁` as
//!   `N.plus`, `N.minus`, `N.scales` and `M₂` as `N.plus2`, `N.minus2`, `N.scales2` (same
//!   shapes), the optional vectors as above; only in version `"2"` files;
//! - or **float**: `N.weight` — `[rows, cols]`, the effective weight `W` of the layer.
//!
//! The other tensors keep their Hugging Face names: `model.embed_tokens.weight` `[V, H]`,
//! `model.layers.{l}.input_layernorm.weight`, `…post_attention_layernorm.weight` and
//! `model.norm.weight` `[H]`. Float linears and the embedding are stored as `F16` when every
//! value converts to `f16` and back exactly (a model that came from f16 weights), otherwise
//! as `F32`, so [`save`] never changes a value; [`save_with`] and [`FloatStorage::F16`] round
//! them to `f16` first (what `ternary quantize` does by default). Norms are always `F32`. A tied output head kept
//! in float is not stored (it is the embedding).
//!
//! Metadata (`__metadata__`, all strings): `format`, `format_version` (`"1"`, or `"2"` when some
//! layer has two planes, so that version-1 readers refuse it), `config` (a Hugging
//! Face `config.json`, [`LlamaConfig::to_hf_json`](ternary_models::LlamaConfig::to_hf_json)), `tokenizer` ([`Tokenizer::to_json`](ternary_models::Tokenizer::to_json)) and
//! `layers`, a JSON object mapping each stored linear layer to
//! `{"kind": "ternary" | "two_plane", "rows", "cols", "scale_layout": "per_row" | "per_group",
//! "group_size", "bias", "input_scale"}` or `{"kind": "float", "rows", "cols"}`.
//!
//! Reading checks everything before building the model: a truncated or garbage file, an
//! unknown format or version, a malformed config, tokenizer or layer table, a missing or
//! unexpected tensor, a wrong dtype or shape, both planes set, padding bits, and non-finite
//! values all give [`ConvertError::Format`](crate::ConvertError::Format) naming the file; nothing panics. Writing is atomic
//! (`ternary_core::io::write_atomic`: temporary file, fsync, rename).

mod read;
mod schema;
mod summary;
mod write;

pub use read::{load, load_bytes};
pub use schema::{
    FORMAT_NAME, FORMAT_VERSION, FORMAT_VERSION_TWO_PLANES, FloatDtype, FloatStorage, StoredFormat,
};
pub use summary::{FileSummary, LayerSummary, human_bytes, inspect, inspect_bytes};
pub use write::{as_ternary, save, save_with, to_bytes};
