//! The one error type of `ternary-bench`.

use std::path::PathBuf;

/// Every fallible operation of the harness returns this error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// An error from `ternary-core` (bad shape, unavailable level, ...).
    #[error(transparent)]
    Core(#[from] ternary_core::TernaryError),
    /// Buffers whose lengths disagree with the stated shape.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A kernel whose output disagrees with the reference.
    #[error("correctness check failed for {kernel}: {detail}")]
    Check {
        /// Kernel name.
        kernel: String,
        /// What disagreed, with the measured error.
        detail: String,
    },
    /// A bad command-line argument.
    #[error("bad arguments: {0}")]
    Args(String),
    /// A rayon thread pool could not be built.
    #[error("thread pool: {0}")]
    Pool(#[from] rayon::ThreadPoolBuildError),
    /// Writing the report failed.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// `Result` with [`BenchError`].
pub type Result<T, E = BenchError> = std::result::Result<T, E>;
