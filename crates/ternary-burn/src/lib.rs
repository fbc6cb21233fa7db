//! # ternary-burn
//!
//! Ternary layers for [Burn](https://burn.dev) and post-training conversion of pretrained
//! float models (Llama-family, from `ternary-models`) to ternary weights.
//!
//! - [`layer`]: `TernaryLinear`, a drop-in for `burn::nn::Linear`.
//! - [`attention`]: popcount (ternary) attention scoring, an optional score function.
//! - [`calib`]: calibration — per-layer activation statistics from running the float model.
//! - [`gptq`]: error-compensating (GPTQ-style) ternary rounding with the calibration Hessian.
//! - [`convert`]: the conversion pipeline and automatic mixed precision.
//! - [`model_file`]: saving and loading converted models (ternary safetensors).

pub mod attention;
pub mod calib;
pub mod convert;
pub mod error;
pub mod gptq;
pub mod layer;
pub mod model_file;

pub use attention::{ScaleRule, TernaryScores};
pub use calib::{Calibration, InputStats, calibrate};
pub use convert::{
    ConversionReport, ConvertConfig, LayerPlan, Progress, QuantizedLayer, Stage, convert,
};
pub use error::{Error, Result};
pub use gptq::GptqConfig;
pub use layer::{LinearPath, TernaryLinear, TernaryLinearRecord, TernaryLinearRecordData};
pub use model_file::{CALIBRATION_TEXT, FileSummary, inspect, load, save};
