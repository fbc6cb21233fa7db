//! The one error type of `ternary-vsa`.

use ternary_core::TernaryError;

/// Every fallible operation in `ternary-vsa` returns this error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VsaError {
    /// Two operands have different dimensions `D`.
    #[error("dimension mismatch: expected D = {expected}, got D = {got}")]
    DimensionMismatch {
        /// The dimension of the first operand (or of the container).
        expected: usize,
        /// The dimension of the offending operand.
        got: usize,
    },
    /// An argument outside its valid range (zero dimension, bad density, bad trit, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A buffer whose length or padding disagrees with the dimension.
    #[error("invalid planes: {0}")]
    InvalidPlanes(String),
    /// A bundle with a strict capacity limit was asked to hold more items than the limit.
    #[error(
        "capacity exceeded: a bundle capped at {cap} items cannot take item {items} \
         (expected retrieval accuracy would fall below the target)"
    )]
    CapacityExceeded {
        /// The number of items the bundle would hold after the rejected addition.
        items: usize,
        /// The configured maximum.
        cap: usize,
    },
    /// An error from a `ternary-core` kernel.
    #[error(transparent)]
    Core(#[from] TernaryError),
}

impl VsaError {
    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }
}

/// `Result` with [`VsaError`].
pub type Result<T, E = VsaError> = std::result::Result<T, E>;

/// `Ok(())` when `got == expected`, else [`VsaError::DimensionMismatch`].
pub(crate) fn same_dim(expected: usize, got: usize) -> Result<()> {
    if expected == got {
        Ok(())
    } else {
        Err(VsaError::DimensionMismatch { expected, got })
    }
}

/// `Ok(())` for `dim ≥ 1`.
pub(crate) fn check_dim(dim: usize) -> Result<()> {
    if dim == 0 {
        Err(VsaError::invalid("a hypervector needs dimension D >= 1"))
    } else {
        Ok(())
    }
}
