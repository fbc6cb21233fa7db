//! The one error type of `ternary-models`.

use std::path::PathBuf;

/// Every fallible operation in `ternary-models` returns this error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// Reading a file failed.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A GGUF file is malformed or truncated.
    #[error("malformed GGUF file: {0}")]
    Gguf(String),
    /// A safetensors checkpoint or its `config.json` is malformed.
    #[error("malformed safetensors checkpoint: {0}")]
    Safetensors(String),
    /// A tensor is stored in a type this crate cannot decode.
    #[error("tensor '{name}': unsupported tensor type {kind}")]
    UnsupportedType {
        /// Name of the tensor.
        name: String,
        /// The type, as the file names it.
        kind: String,
    },
    /// A tensor has a shape that disagrees with the model configuration.
    #[error("tensor '{name}': expected shape {expected:?}, found {found:?}")]
    Shape {
        /// Name of the tensor.
        name: String,
        /// Shape the configuration implies (outermost dimension first).
        expected: Vec<usize>,
        /// Shape in the file.
        found: Vec<usize>,
    },
    /// A tensor the model needs is not in the file.
    #[error("tensor '{0}' is missing from the checkpoint")]
    MissingTensor(String),
    /// A hyper-parameter is missing, has the wrong type or an impossible value.
    #[error("invalid model configuration: {0}")]
    Config(String),
    /// The tokenizer cannot be built or cannot encode/decode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// An error from the ternary format or its host kernels.
    #[error(transparent)]
    Core(#[from] ternary_core::TernaryError),
    /// An error from a layer (the ternary layers, the score seam).
    #[error(transparent)]
    Layer(#[from] ternary_layers::LayerError),
    /// A request that cannot be served (empty prompt, context too long, ...).
    #[error("invalid input: {0}")]
    Input(String),
    /// Another inference engine behind the [`Decoder`](crate::Decoder) seam failed (e.g. the
    /// CPU runtime of `ternary-runtime`).
    #[error("{0}")]
    Engine(String),
}

/// `Result` with [`ModelError`].
pub type Result<T> = std::result::Result<T, ModelError>;
