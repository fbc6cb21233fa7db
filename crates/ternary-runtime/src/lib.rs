//! CPU inference runtime for Llama-family and BitNet b1.58 models.
//!
//! [`Runtime::from_model`] takes a model already loaded by `ternary-models` or
//! `ternary-convert` (any format: GGUF, Hugging Face checkpoints, converted ternary files),
//! shares its weights, and runs whole tokens — or whole prefill batches — per dispatch on
//! persistent worker threads:
//!
//! - **threads**: `threads − 1` std threads started once; each product is split by output
//!   rows, workers meet at a spin-then-yield barrier, idle workers sleep; no rayon, no
//!   task spawning per operation, buffers reused from token to token;
//! - **fusion**: RMSNorm and the int8 quantization once per input, shared by q/k/v (one
//!   phase, head-aligned row shares) and by gate/up; `act(gate)·up` in the product's epilogue;
//!   residual adds fused into the gathers of `o_proj` / `down_proj`; five barriers per block;
//! - **attention**: grouped-query attention over a KV cache `[layer][kv head][pos][d]`, all
//!   query heads of a kv head in one pass, `f32` or `f16` cache ([`KvType`]);
//! - **output head**: as the model holds it, or int8 per row ([`LmHead::Int8`]), split evenly
//!   over the workers; logits only for the positions asked for;
//! - **weight layout**: [`Runtime::from_owned_model`] takes the model, drops it once the
//!   runtime holds what it needs, and repacks the int8 ternary matrices for the kernels' level
//!   (`ternary_core::kernels::PackedTernary`: at AVX2 and AVX-512, 2-bit fields `1 + t` read
//!   as stored, the same memory as the planes; BitNet-2B-shape decode 30–37 → 51–54 tokens/s
//!   on an AMD EPYC Zen 5 at AVX-512). [`Runtime::from_model`] shares the planes instead;
//! - **huge pages**: on Linux the projections' weights are put on 2 MiB pages when the runtime
//!   starts (`ternary_core::kernels::HugePages`; best effort; the environment variable
//!   `TERNARY_HUGE_PAGES=0` turns it off; [`Runtime::huge_page_bytes`] says how much):
//!   BitNet-2B-shape decode +6–16% on that AMD EPYC Zen 5.
//!
//! The arithmetic is the reference's ([`Llama::forward`](ternary_models::Llama::forward)):
//! ternary and BitNet products are bit-identical to the Burn layers' host paths at the same
//! SIMD level; float products, norms, RoPE and softmax differ by `f32` rounding only. The
//! tests hold the logits to `1e-4` of their range against the reference, prefill and decode.
//! One default departs from the layers' own path: at the AVX2 level, converted ternary layers
//! (`LinearPath::Auto`, `f32` activations in the reference) take two int8 codes per token
//! ([`TernaryActivations::Auto`]: `f32`'s accuracy within `max|x| / 64516` per activation,
//! about twice the `f32` kernels' decode speed there on an Intel Xeon capped at AVX2,
//! `docs/benchmarks.md`); [`TernaryActivations::AsLayer`] keeps
//! the reference's arithmetic everywhere.
//!
//! ```no_run
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use ternary_runtime::{Runtime, RuntimeOptions};
//! use ternary_models::Logits;
//! let m = ternary_models::load::<ternary_layers::Cpu>("SmolLM2-135M", &Default::default())?;
//! let mut rt = Runtime::from_owned_model(m.model, RuntimeOptions::default())?;
//! let logits = rt.forward(&[1, 2, 3], Logits::Last)?; // prefill
//! let next = ternary_models::generate::argmax(logits) as u32;
//! let logits = rt.forward(&[next], Logits::Last)?; // one decode step
//! # let _ = logits; Ok(()) }
//! ```

mod error;
mod kv;
mod model;
mod options;
mod pool;
mod proj;
mod runtime;

pub use error::{Result, RuntimeError};
pub use options::{FloatWeights, KvType, LmHead, RuntimeOptions, TernaryActivations};
pub use runtime::Runtime;
