//! The [`LinearPath::Cube`](crate::LinearPath::Cube) path: `ternary-kernels` GEMV/GEMM on the
//! buffers of Burn's CubeCL backends, with no copy to the host.
//!
//! Supported backends are Burn's `CubeBackend<R, F, I, BT>` for the runtimes whose feature is
//! on: `wgpu` (`burn::backend::Wgpu` built without Burn's `fusion` feature) and `cuda`
//! (`burn::backend::Cuda` likewise). Burn and `ternary-kernels` share CubeCL 0.10, so the input
//! tensor's handle is bound to the kernel as it is and the output buffer becomes a Burn tensor.
//!
//! Per call, for `x: [n, in]` (`f32`, made contiguous if it is not):
//! 1. `x` is wrapped ([`DeviceArray::from_handle`]) and, when `in` is not a multiple of 64,
//!    copied by a kernel into zero-padded rows ([`DeviceActivations::from_device`]);
//! 2. `y[j, r] = Σ_c s[r, g(c)] · t[r, c] · x[j, c]` by [`launch_gemm`] (row-parallel GEMV up to
//!    8 tokens, tiled GEMM above), into a new `[n, out]` buffer.
//!
//! The planes and scales are uploaded once per layer and device ([`CubeWeights`]).

use std::any::{Any, TypeId};
use std::sync::{Arc, Mutex};

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Shape};
use burn_cubecl::CubeRuntime;
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use ternary_core::TernaryMatrix;
use ternary_kernels::{DeviceActivations, DeviceArray, DeviceMatrix, KernelError, Strategy};

use crate::error::{Error, Result};

/// The runtimes this build supports, by name (for error messages).
const RUNTIMES: &str = if cfg!(all(feature = "wgpu", feature = "cuda")) {
    "wgpu, cuda"
} else if cfg!(feature = "wgpu") {
    "wgpu"
} else {
    "cuda"
};

/// Whether `B`'s float tensors are `CubeTensor`s of a runtime this build supports.
pub(crate) fn supports<B: Backend>() -> bool {
    let id = TypeId::of::<B::FloatTensorPrimitive>();
    #[cfg(feature = "wgpu")]
    if id == TypeId::of::<CubeTensor<ternary_kernels::cubecl::wgpu::WgpuRuntime>>() {
        return true;
    }
    #[cfg(feature = "cuda")]
    if id == TypeId::of::<CubeTensor<ternary_kernels::cubecl::cuda::CudaRuntime>>() {
        return true;
    }
    let _ = id;
    false
}

/// A layer's matrix on one device, uploaded on first use.
#[derive(Debug)]
struct CubeWeights<R: CubeRuntime> {
    device: R::Device,
    matrix: DeviceMatrix<R>,
}

/// The per-layer cache of uploaded matrices (one per device the layer has run on; usually one).
#[derive(Debug, Default, Clone)]
pub(crate) struct CubeCache {
    entries: Arc<Mutex<Vec<Arc<dyn Any + Send + Sync>>>>,
}

impl CubeCache {
    /// The matrix on `x`'s device, uploading it the first time.
    fn matrix<R: CubeRuntime>(
        &self,
        m: &TernaryMatrix,
        x: &CubeTensor<R>,
    ) -> Result<Arc<dyn Any + Send + Sync>> {
        // A poisoned lock only means another thread panicked while uploading; the list itself
        // is always consistent (entries are pushed whole).
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = entries.iter().find(|e| {
            e.downcast_ref::<CubeWeights<R>>()
                .is_some_and(|w| w.device == x.device)
        }) {
            return Ok(Arc::clone(e));
        }
        let matrix = DeviceMatrix::upload(&x.client, m).map_err(kernel_error)?;
        let entry: Arc<dyn Any + Send + Sync> = Arc::new(CubeWeights::<R> {
            device: x.device.clone(),
            matrix,
        });
        entries.push(Arc::clone(&entry));
        Ok(entry)
    }
}

fn kernel_error(e: KernelError) -> Error {
    Error::Device(e.to_string())
}

/// `y = Q·x` for a 2-D `f32` float primitive `x: [n, in]` of a supported backend; `[n, out]`.
///
/// Errors with [`Error::Invalid`] when `B` is not a supported CubeCL backend or `x` is not
/// `f32`, and with [`Error::Device`] when a kernel fails.
pub(crate) fn gemm<B: Backend>(
    m: &TernaryMatrix,
    cache: &CubeCache,
    x: B::FloatTensorPrimitive,
) -> Result<B::FloatTensorPrimitive> {
    let x: Box<dyn Any> = Box::new(x);
    #[cfg(feature = "wgpu")]
    let x = match x.downcast::<CubeTensor<ternary_kernels::cubecl::wgpu::WgpuRuntime>>() {
        Ok(t) => return back::<B, _>(gemm_on(m, cache, *t)?),
        Err(other) => other,
    };
    #[cfg(feature = "cuda")]
    let x = match x.downcast::<CubeTensor<ternary_kernels::cubecl::cuda::CudaRuntime>>() {
        Ok(t) => return back::<B, _>(gemm_on(m, cache, *t)?),
        Err(other) => other,
    };
    drop(x);
    Err(unsupported::<B>())
}

/// The error for a backend the cube path cannot run on.
pub(crate) fn unsupported<B: Backend>() -> Error {
    Error::Invalid(format!(
        "the cube path needs Burn's CubeBackend on one of [{RUNTIMES}] (without Burn's \
         `fusion` feature); backend {} is not one",
        std::any::type_name::<B>()
    ))
}

/// Turns a concrete `CubeTensor<R>` back into `B`'s primitive (the same type, by construction).
fn back<B: Backend, T: 'static>(t: T) -> Result<B::FloatTensorPrimitive> {
    let t: Box<dyn Any> = Box::new(t);
    t.downcast::<B::FloatTensorPrimitive>()
        .map(|b| *b)
        .map_err(|_| {
            Error::Invalid("cube path: output tensor type differs from the input's".into())
        })
}

fn gemm_on<R: CubeRuntime>(
    m: &TernaryMatrix,
    cache: &CubeCache,
    x: CubeTensor<R>,
) -> Result<CubeTensor<R>> {
    if x.dtype != DType::F32 {
        return Err(Error::Invalid(format!(
            "the cube path takes f32 activations, got {:?}",
            x.dtype
        )));
    }
    let dims = x.meta.shape().clone();
    let (n, cols) = match dims.num_dims() {
        2 => (dims[0], dims[1]),
        d => {
            return Err(Error::Shape(format!(
                "cube path: expected a 2-D input, got {d}-D"
            )));
        }
    };
    if cols != m.cols() {
        return Err(Error::Shape(format!(
            "input has {cols} features, the layer takes {}",
            m.cols()
        )));
    }
    let x = into_contiguous(x);
    let entry = cache.matrix(m, &x)?;
    let weights = entry
        .downcast_ref::<CubeWeights<R>>()
        .ok_or_else(|| Error::Invalid("cube path: cached matrix of another runtime".into()))?;
    let client = x.client.clone();
    let device = x.device.clone();
    let len = n * cols;
    let xa = DeviceArray::<R, f32>::from_handle(x.handle.clone(), len).map_err(kernel_error)?;
    let xa = DeviceActivations::from_device(&client, xa, n, cols).map_err(kernel_error)?;
    let rows = m.rows();
    // Debug builds (and tests) poison the output, so a value the kernel fails to write shows.
    let y = if cfg!(debug_assertions) {
        DeviceArray::<R, f32>::filled(&client, n * rows, f32::NAN)
    } else {
        DeviceArray::<R, f32>::empty(&client, n * rows)
    };
    ternary_kernels::launch_gemm(&client, &weights.matrix, &xa, &y, Strategy::Auto)
        .map_err(kernel_error)?;
    // `x` (and its handle) must stay alive until the launch is queued; it is dropped here.
    drop(x);
    Ok(CubeTensor::new_contiguous(
        client,
        device,
        Shape::new([n, rows]),
        y.into_handle(),
        DType::F32,
    ))
}
