//! # ternary-burn
//!
//! Ternary layers for [Burn](https://burn.dev) and post-training conversion of pretrained
//! float models (Llama-family, from `ternary-models`) to ternary weights.
//!
//! - [`layer`]: `TernaryLinear`, a drop-in for `burn::nn::Linear`.
//! - [`attention`]: popcount (ternary) attention scoring, an optional score function.
//! - [`calib`]: calibration — per-layer activation statistics from running the float model.
//! - [`gptq`]: error-compensating (GPTQ-style) ternary rounding with the calibration Hessian.
//! - [`convert`](mod@convert): the conversion pipeline and automatic mixed precision.
//! - [`model_file`]: saving and loading converted models (ternary safetensors).
//!
//! # Quantize and load a model in four lines
//!
//! Convert a float model (a GGUF file or a Hugging Face directory; here the tiny test
//! fixture) with the default configuration and the built-in calibration text, save it as one
//! ternary safetensors file, and load it back:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use ternary_models::Cpu;
//! # let dev = Default::default();
//! # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/tiny-llama");
//! # let dir = std::env::temp_dir().join(format!("ternary-burn-doctest-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let out = dir.join("tiny-ternary.safetensors");
//! let mut m = ternary_models::load::<Cpu>(model, &dev)?;
//! ternary_burn::convert(&mut m.model, &m.tokenizer, ternary_burn::CALIBRATION_TEXT, &Default::default(), &mut |_| {})?;
//! ternary_burn::save(&out, &m.model, &m.tokenizer)?;
//! let t = ternary_burn::load::<Cpu>(&out, &dev)?;
//! # assert_eq!(ternary_burn::inspect(&out)?.config, *t.model.config());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```

pub mod attention;
pub mod calib;
pub mod convert;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube;
#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
#[path = "cube_stub.rs"]
mod cube;
pub mod error;
pub mod gptq;
pub mod layer;
pub mod model_file;

pub use attention::{ScaleRule, TernaryScoreConfig, TernaryScores};
pub use calib::{Calibration, InputStats, calibrate};
pub use convert::{
    ConversionReport, ConvertConfig, LayerPlan, Progress, QuantizedLayer, Stage, convert,
};
pub use error::{Error, Result};
pub use gptq::GptqConfig;
pub use layer::{LinearPath, TernaryLinear, TernaryLinearRecord, TernaryLinearRecordData};
pub use model_file::{CALIBRATION_TEXT, FileSummary, inspect, load, save};
