//! [`TernaryBackend`]: what a Burn backend can do for [`TernaryLinear`](crate::TernaryLinear),
//! in Burn's backend-extension style (a trait over `Backend`, implemented per backend type).
//!
//! | backend | `Auto` resolves to | cube path | gradients |
//! |---|---|---|---|
//! | `NdArray<E, I, Q>` ([`Cpu`](crate::Cpu)) | `CpuF32` (host kernels) for `f32`, else `Float` | error | — |
//! | [`Flex`](crate::Flex) (`f32`) | `CpuF32` (host kernels) | error | — |
//! | `CubeBackend<R, F, I, BT>` (features `wgpu` / `cuda`) | `Cube` for `f32`, else `Float` | yes | — |
//! | `Fusion<CubeBackend<..>>` (feature `fusion`) | as `CubeBackend` | yes, a custom op in the stream | — |
//! | `Autodiff<B, C>` | `B`'s choice; `Float` for a tracked input | `B`'s, untracked inputs only | `Float` path only |
//!
//! Under `Autodiff`, inference (an input that does not track gradients) is forwarded to the inner
//! backend's path. When the input tracks gradients, only [`LinearPath::Float`] records them:
//! `∂L/∂x = ∂L/∂y · Q·diag(d)` (the ternary matrix, scales and `d` are constants; training them
//! needs latent float weights). `Auto` then takes the float path; an explicitly requested host or
//! cube path is an [`LayerError::Unsupported`] error, never a silently gradient-free result.
//!
//! Every other backend type gets no implementation, so `TernaryLinear::forward` does not compile
//! for it (rather than running a path it was not written for); implement the trait to add one.

use std::sync::Arc;

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::ndarray::{
    FloatNdArrayElement, IntNdArrayElement, NdArray, NdArrayTensor, QuantElement, SharedArray,
};
use burn::tensor::DType;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::ops::FloatTensor;
use ternary_core::TernaryMatrix;

use crate::error::{LayerError, Result};
use crate::layer::LinearPath;

pub use crate::cube::DeviceCache;

/// A Burn backend [`TernaryLinear`](crate::TernaryLinear) can run on. See the [module docs](self).
pub trait TernaryBackend: Backend {
    /// The path [`LinearPath::Auto`] takes on this backend for an `f32` input that does not
    /// track gradients.
    fn auto_path() -> LinearPath;

    /// Whether `x` records operations for gradients (only under `Autodiff`).
    fn tracks_gradient(_x: &FloatTensor<Self>) -> bool {
        false
    }

    /// `y = Q·x` on the device for a 2-D `f32` input `x: [n, in]`, `[n, out]` out; `cache`
    /// holds the matrix's uploads per device. The cube path; an error where the backend has none.
    fn ternary_gemm(
        _matrix: &Arc<TernaryMatrix>,
        _cache: &DeviceCache,
        _x: FloatTensor<Self>,
    ) -> Result<FloatTensor<Self>> {
        Err(unsupported::<Self>(
            LinearPath::Cube,
            crate::cube::CUBE_NEEDS.into(),
        ))
    }
}

/// The error for `path` requested on backend `B`.
pub(crate) fn unsupported<B: Backend>(path: LinearPath, reason: String) -> LayerError {
    LayerError::Unsupported {
        path: path.name(),
        backend: std::any::type_name::<B>(),
        reason,
    }
}

impl<E: FloatNdArrayElement, I: IntNdArrayElement, Q: QuantElement> TernaryBackend
    for NdArray<E, I, Q>
where
    NdArrayTensor: From<SharedArray<E>> + From<SharedArray<I>>,
{
    /// The host kernels compute in `f32`: other element types keep Burn's matmul.
    fn auto_path() -> LinearPath {
        if E::dtype() == DType::F32 {
            LinearPath::CpuF32
        } else {
            LinearPath::Float
        }
    }
}

impl TernaryBackend for burn_flex::Flex {
    /// `Flex` is `Flex<f32>`: the host kernels' own type.
    fn auto_path() -> LinearPath {
        LinearPath::CpuF32
    }
}

impl<B: TernaryBackend, C: CheckpointStrategy> TernaryBackend for Autodiff<B, C> {
    fn auto_path() -> LinearPath {
        B::auto_path()
    }

    fn tracks_gradient(x: &FloatTensor<Self>) -> bool {
        x.is_tracked()
    }

    /// Forwards an untracked input to `B`'s kernel; the result is an untracked leaf. (The layer
    /// never calls this for a tracked input: see the [module docs](self).)
    fn ternary_gemm(
        matrix: &Arc<TernaryMatrix>,
        cache: &DeviceCache,
        x: FloatTensor<Self>,
    ) -> Result<FloatTensor<Self>> {
        if x.is_tracked() {
            return Err(unsupported::<Self>(LinearPath::Cube, NO_GRADIENT.into()));
        }
        let y = B::ternary_gemm(matrix, cache, <Self as AutodiffBackend>::inner(x))?;
        Ok(<Self as AutodiffBackend>::from_inner(y))
    }
}

/// Why a host or cube path refuses an input that tracks gradients.
pub(crate) const NO_GRADIENT: &str = "the input tracks gradients and this path records none; \
     use LinearPath::Float (LinearPath::Auto picks it for such inputs)";
