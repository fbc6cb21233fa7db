//! The one error type of `ternary-convert`.

use std::path::PathBuf;

/// Every fallible operation in `ternary-convert` returns this error; errors from the crates
/// below keep their type as the source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConvertError {
    /// An error from the ternary format, quantizers or kernels.
    #[error(transparent)]
    Core(#[from] ternary_core::TernaryError),
    /// An error from a ternary layer.
    #[error(transparent)]
    Layer(#[from] ternary_layers::LayerError),
    /// An error from the float model (loading, tokenizing, running).
    #[error(transparent)]
    Model(#[from] ternary_models::ModelError),
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
    /// A converted-model file is malformed, truncated or inconsistent.
    #[error("malformed ternary model file: {0}")]
    Format(String),
    /// A configuration or argument that cannot be used.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// `Result` with [`ConvertError`].
pub type Result<T> = std::result::Result<T, ConvertError>;
