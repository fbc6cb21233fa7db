//! The one error type of `ternary-kernels`.

use ternary_core::TernaryError;

/// Every fallible operation in `ternary-kernels` returns this error.
///
/// Kernels never panic on a bad shape: every launch function checks its arguments on the host
/// first and returns [`KernelError::Shape`] or [`KernelError::Config`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A buffer or argument has a length or shape that disagrees with the others.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// A configuration value that cannot work (tile sizes, trit values, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The runtime or device lacks a feature this kernel needs (f16 storage, atomics, ...).
    #[error("unsupported on this device: {0}")]
    Unsupported(String),
    /// No usable device: the driver library is missing, no adapter was found, or client
    /// creation failed.
    #[error("no usable GPU device: {0}")]
    NoDevice(String),
    /// The device reported an error while launching, running or reading back a kernel.
    #[error("device error: {0}")]
    Device(String),
    /// A `ternary-core` error (invalid planes read back, bad activations, ...).
    #[error(transparent)]
    Core(#[from] TernaryError),
}

impl KernelError {
    pub(crate) fn shape(msg: impl Into<String>) -> Self {
        Self::Shape(msg.into())
    }

    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Self::Config(msg.into())
    }

    pub(crate) fn device(err: impl std::fmt::Debug) -> Self {
        Self::Device(format!("{err:?}"))
    }
}

/// `Result` with [`KernelError`].
pub type Result<T, E = KernelError> = std::result::Result<T, E>;
