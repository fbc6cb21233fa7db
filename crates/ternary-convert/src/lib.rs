//! # ternary-convert
//!
//! Post-training conversion of pretrained float models (Llama-family, from `ternary-models`)
//! to ternary weights ([`TernaryLinear`](ternary_layers::TernaryLinear) layers), and the files
//! converted models live in.
//!
//! - [`calib`]: calibration — per-layer activation statistics from running the float model.
//! - [`gptq`]: error-compensating (GPTQ-style) ternary rounding with the calibration Hessian.
//! - [`convert`](mod@convert): the conversion pipeline and automatic mixed precision.
//! - [`model_file`]: saving and loading converted models (ternary safetensors).
//! - [`rotate`]: rotating a float model's residual stream before conversion (same function,
//!   weights easier to quantize).
//! - [`finetune`]: accuracy recovery by training (distillation or block-wise reconstruction
//!   with straight-through ternary layers).
//!
//! # Quantize and load a model in four lines
//!
//! Convert a float model (a GGUF file or a Hugging Face directory; here the tiny test
//! fixture) with the default configuration and the built-in calibration text, save it as one
//! ternary safetensors file, and load it back:
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # use ternary_layers::Cpu;
//! # let dev = Default::default();
//! # let model = concat!(env!("CARGO_MANIFEST_DIR"), "/../../fixtures/tiny-llama");
//! # let dir = std::env::temp_dir().join(format!("ternary-convert-doctest-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let out = dir.join("tiny-ternary.safetensors");
//! let mut m = ternary_models::load::<Cpu>(model, &dev)?;
//! ternary_convert::convert(&mut m.model, &m.tokenizer, ternary_convert::CALIBRATION_TEXT, &Default::default(), &mut |_| {})?;
//! ternary_convert::save(&out, &m.model, &m.tokenizer)?;
//! let t = ternary_convert::load::<Cpu>(&out, &dev)?;
//! # assert_eq!(ternary_convert::inspect(&out)?.config, *t.model.config());
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(()) }
//! ```

pub mod calib;
pub mod convert;
pub mod error;
pub mod finetune;
pub mod gptq;
pub mod model_file;
pub mod rotate;

pub use calib::{Calibration, InputStats, calibrate};
pub use convert::{
    ConversionReport, ConvertConfig, LayerReport, Progress, QuantizedLayer, Stage, convert,
};
pub use error::{ConvertError, Result};
pub use gptq::GptqConfig;
pub use model_file::{FileSummary, FloatStorage, inspect, load, save, save_with};

/// The default calibration text (`fixtures/text/calibration.txt`): ~2100 words of original
/// English prose in many registers (narrative, dialogue, technical, history, instructions,
/// code, numbers), CC0, disjoint from the evaluation text.
pub const CALIBRATION_TEXT: &str = include_str!("../../../fixtures/text/calibration.txt");
