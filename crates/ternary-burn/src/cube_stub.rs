//! Stand-in for the `cube` module when neither the `wgpu` nor the `cuda` feature is on:
//! [`LinearPath::Cube`](crate::LinearPath::Cube) is then unavailable and reports why.

use burn::tensor::backend::Backend;
use ternary_core::TernaryMatrix;

use crate::error::{Error, Result};

/// No CubeCL backend is supported in this build.
#[allow(clippy::extra_unused_type_parameters)] // same signature as the real module
pub(crate) fn supports<B: Backend>() -> bool {
    false
}

/// Nothing to cache without a CubeCL runtime.
#[derive(Debug, Default, Clone)]
pub(crate) struct CubeCache;

/// The error for a backend the cube path cannot run on (every backend, in this build).
pub(crate) fn unsupported<B: Backend>() -> Error {
    Error::Invalid(format!(
        "the cube path needs ternary-burn's `wgpu` or `cuda` feature (backend {})",
        std::any::type_name::<B>()
    ))
}

/// Always an error: the cube path needs the `wgpu` or `cuda` feature.
pub(crate) fn gemm<B: Backend>(
    _m: &std::sync::Arc<TernaryMatrix>,
    _cache: &CubeCache,
    _x: B::FloatTensorPrimitive,
) -> Result<B::FloatTensorPrimitive> {
    Err(unsupported::<B>())
}
