//! The one error type of `ternary-layers`.

use std::path::PathBuf;

/// Every fallible operation in `ternary-layers` returns this error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LayerError {
    /// An error from the ternary format, quantizers or host kernels.
    #[error(transparent)]
    Core(#[from] ternary_core::TernaryError),
    /// A GPU kernel failed to launch or run (the cube path).
    #[cfg(any(feature = "wgpu", feature = "cuda"))]
    #[error(transparent)]
    Kernel(#[from] ternary_kernels::KernelError),
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Shapes that do not fit together.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A layer record or single-layer file is malformed, truncated or inconsistent.
    #[error("malformed layer data: {0}")]
    Format(String),
    /// A configuration, argument or record that cannot be used.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// A consumer that handles one trit-plane only was given a two-plane layer
    /// (`W = M₁ + M₂`); it refuses rather than use the first plane alone.
    #[error(
        "{0} handles one-plane ternary layers only; this layer has two trit-planes (W = M1 + M2)"
    )]
    OnePlaneOnly(String),
    /// An explicitly requested forward path that this backend cannot take (never a silent
    /// fallback to another path).
    #[error("the {path} path cannot run on backend {backend}: {reason}")]
    Unsupported {
        /// The requested path's name.
        path: &'static str,
        /// The backend's type name.
        backend: &'static str,
        /// Why, and what would make it run.
        reason: String,
    },
}

/// `Result` with [`LayerError`].
pub type Result<T> = std::result::Result<T, LayerError>;
