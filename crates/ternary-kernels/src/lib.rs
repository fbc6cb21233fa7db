//! # ternary-kernels
//!
//! GPU kernels for bit-sliced ternary matrices, written once in [CubeCL](cubecl) and run on
//! every runtime enabled by a feature: `wgpu` (Vulkan / Metal / DX12, and Mesa's software
//! Vulkan "lavapipe" in CI), `cuda`, `hip`. Nothing is on by default; without a runtime
//! feature the kernels and host functions still compile (generic over [`Runtime`]).
//!
//! The device keeps `ternary-core`'s layout: `u32` plane words uploaded as-is
//! ([`DeviceMatrix`]), activations zero-padded to `64 · ⌈cols / 64⌉` per token
//! ([`DeviceActivations`]).
//!
//! | kernel | function | math |
//! |---|---|---|
//! | GEMV / GEMM, `f32`/`f16` activations | [`launch_gemm`] | `y[j,r] = Σ_c s[r,g(c)] · t[r,c] · x[j,c]` |
//! | int8 quantization | [`launch_quantize`] | `q = round(x · 127 / max|x_j|)` |
//! | int8 GEMM | [`launch_gemm_i8`] | `y = s_j · Σ_g s[r,g] · Σ_{c∈g} q · t` (exact `i32`) |
//! | edits | [`launch_edits`] | `t[r,c] ← v`, atomically, `plus & minus == 0` kept |
//! | attention scores | [`attention`] | `α_q α_k · popcount_dot(q, k) · scale`, causal mask |
//! | block skipping | [`launch_gemv_skip`] | GEMV loading only non-zero 32-weight chunks |
//!
//! Every launch function checks shapes on the host and returns [`KernelError`]; none panics on
//! a bad shape. [`conformance`] holds the checks against `ternary-core`'s scalar references,
//! run per runtime by `tests/<runtime>.rs` and by the `gpu-bench` binary.
//!
//! [`Runtime`]: cubecl::Runtime

pub mod attention;
mod buffer;
pub mod conformance;
pub mod device;
pub mod edit;
mod error;
mod gemm;
pub mod int8;
mod kernels;
mod matrix;
pub mod plan;
#[cfg(feature = "cuda")]
mod probe;
pub mod skip;

pub use buffer::{DeviceArray, DeviceElement};
pub use device::DeviceCaps;
pub use edit::{Edit, launch_edits};
pub use error::{KernelError, Result};
pub use gemm::launch_gemm;
pub use int8::{launch_gemm_i8, launch_quantize, launch_quantize_into};
pub use matrix::{DeviceActivations, DeviceMatrix, DeviceQuantized, padded_cols};
pub use plan::{GemmStrategy, Plan, TileConfig};
pub use skip::{DeviceBitmap, launch_gemv_skip};

/// Re-export of CubeCL, so callers name runtimes and clients without a direct dependency.
pub use cubecl;
