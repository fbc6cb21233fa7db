//! # ternary-bench
//!
//! The benchmark harness of the `ternary` workspace.
//!
//! - `bench-report` (run by `cargo xtask bench [--quick]`): one process that times the ternary
//!   kernels of [`ternary_core::kernels`] against dense `f32`/`f16` matmul (the `gemm` crate,
//!   which candle's CPU backend uses) and the scalar kernels, on Llama-7B layer shapes, hot and
//!   streaming, with 1 and 2 threads; writes `bench.md` and `bench.json`.
//! - `benches/micro.rs` (criterion, `cargo bench -p ternary-bench`): GEMV per level, popcount
//!   dots, single-weight edits, pack/unpack.
//!
//! This library holds what both share: random data ([`data`]), the dense baselines
//! ([`baseline`]), correctness guards ([`check`]), timing ([`timing`]), weight-format sizes
//! ([`format`](mod@format)), machine facts ([`machine`]), the report tables ([`report`]) and the run
//! itself ([`run`]).

pub mod baseline;
pub mod check;
pub mod cli;
pub mod data;
pub mod error;
pub mod format;
pub mod machine;
pub mod report;
pub mod run;
pub mod timing;

pub use error::{BenchError, Result};
