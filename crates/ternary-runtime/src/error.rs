//! The one error type of `ternary-runtime`.

/// Every fallible operation in `ternary-runtime` returns this error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RuntimeError {
    /// The model holds something the runtime cannot run (a layer kind it does not know, a
    /// custom attention-score function, ...).
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// Bad options (zero threads, a chunk of zero tokens, ...).
    #[error("invalid runtime options: {0}")]
    Options(String),
    /// A request that cannot be served: no tokens, a token id outside the vocabulary, more
    /// positions than the context holds.
    #[error("invalid input: {0}")]
    Input(String),
    /// A kernel rejected its operands (a bug: shapes are fixed when the runtime is built).
    #[error(transparent)]
    Core(#[from] ternary_core::TernaryError),
    /// Reading the model failed.
    #[error(transparent)]
    Model(#[from] ternary_models::ModelError),
    /// A worker thread could not be started, or one panicked (the runtime is then unusable).
    #[error("runtime worker: {0}")]
    Worker(String),
}

/// `Result` with [`RuntimeError`].
pub type Result<T> = std::result::Result<T, RuntimeError>;
