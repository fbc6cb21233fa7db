//! # ternary-layers
//!
//! Ternary layers for [Burn](https://burn.dev), independent of any model architecture.
//!
//! - [`layer`]: [`TernaryLinear`], a drop-in for `burn::nn::Linear`: `y = Q·(x ⊙ d) + b` with
//!   `Q` a bit-sliced ternary matrix, on host kernels, CubeCL kernels or Burn's matmul.
//! - [`backend`]: [`TernaryBackend`], the backend-extension trait that decides which of those
//!   paths a backend takes (ndarray, CubeCL, fused, `Autodiff`).
//! - [`weights`]: [`LinearWeights`], one trit-plane pair or two (`W = M₁ + M₂`).
//! - [`linear`]: [`LinearLayer`], the seam a model's projections go through.
//! - [`attention`]: the attention-score seam ([`ScoreFn`]) with float and popcount (ternary)
//!   scores.
//!
//! ```
//! use burn::tensor::{Tensor, TensorData};
//! use ternary_core::quant::QuantConfig;
//! use ternary_layers::{Cpu, TernaryLinear};
//!
//! # fn main() -> ternary_layers::Result<()> {
//! let device = Default::default();
//! let linear = burn::nn::LinearConfig::new(64, 8).init::<Cpu>(&device);
//! let layer = TernaryLinear::from_linear(&linear, &QuantConfig::default())?;
//! let x = Tensor::<Cpu, 2>::from_data(TensorData::new(vec![0.5f32; 2 * 64], [2, 64]), &device);
//! assert_eq!(layer.forward(x).dims(), [2, 8]);
//! # Ok(()) }
//! ```

pub mod attention;
pub mod backend;
#[cfg(any(feature = "wgpu", feature = "cuda"))]
mod cube;
#[cfg(not(any(feature = "wgpu", feature = "cuda")))]
#[path = "cube_stub.rs"]
mod cube;
pub mod error;
pub mod layer;
pub mod linear;
pub mod weights;

pub use attention::{FloatScores, ScaleRule, ScoreFn, TernaryScoreConfig, TernaryScores};
pub use backend::TernaryBackend;
pub use error::{LayerError, Result};
pub use layer::{LinearPath, TernaryLinear, TernaryLinearRecord, TernaryLinearRecordData};
pub use linear::{Linear, LinearLayer, to_host, to_rows};
pub use weights::LinearWeights;

/// The CPU backend: Burn's ndarray backend in `f32` (multi-threaded matmul).
pub type Cpu = burn::backend::NdArray<f32>;

/// Burn's flex CPU backend (`f32` by default): `gemm`'s matrix products (AVX-512 kernels where
/// the CPU has them, sized by the rayon pool), copy-on-write buffers, and sums accurate to the
/// last bits where ndarray's drift over millions of terms. `ternary finetune` trains on it
/// (1.3× the tokens/s of [`Cpu`] for distillation on SmolLM2-135M on an Intel Xeon with
/// AVX-512; `docs/accuracy.md` §8o).
pub use burn_flex::Flex;
