//! The [`LinearPath::Cube`](crate::LinearPath::Cube) path: `ternary-kernels` GEMV/GEMM on the
//! buffers of Burn's CubeCL backends, with no copy to the host.
//!
//! Supported backends are Burn's `CubeBackend<R, F, I, BT>` for the runtimes whose feature is
//! on (`wgpu`, `cuda`) and, with the `fusion` feature, `Fusion<CubeBackend<R, ..>>` — what
//! `burn::backend::Wgpu` and `burn::backend::Cuda` are when Burn's `fusion` feature is on. Burn
//! and `ternary-kernels` share CubeCL 0.10, so the input tensor's handle is bound to the kernel
//! as it is and the output buffer becomes a Burn tensor. On a fused backend the product is a
//! custom operation in Burn's fusion stream: element-wise work before and after it still fuses,
//! and it runs when the stream is flushed.
//!
//! Per call, for `x: [n, in]` (`f32`, made contiguous if it is not):
//! 1. `x` is wrapped ([`DeviceArray::from_handle`]) and, when `in` is not a multiple of 64,
//!    copied by a kernel into zero-padded rows ([`DeviceActivations::from_device`]);
//! 2. `y[j, r] = Σ_c s[r, g(c)] · t[r, c] · x[j, c]` by [`launch_gemm`] (row-parallel GEMV up to
//!    8 tokens, tiled GEMM above), into a new `[n, out]` buffer.
//!
//! The planes and scales are uploaded once per layer and device ([`CubeWeights`]).

use std::any::Any;
#[cfg(feature = "fusion")]
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};

use burn::tensor::{DType, Shape};
use burn_cubecl::kernel::into_contiguous;
use burn_cubecl::tensor::CubeTensor;
use burn_cubecl::{BoolElement, CubeBackend, CubeRuntime, FloatElement, IntElement};
use ternary_core::TernaryMatrix;
use ternary_kernels::{DeviceActivations, DeviceArray, DeviceMatrix, GemmStrategy};

use crate::backend::TernaryBackend;
use crate::error::{LayerError, Result};
use crate::layer::LinearPath;

/// What the cube path needs, for errors on other backends.
pub(crate) const CUBE_NEEDS: &str = if cfg!(feature = "fusion") {
    "the cube path needs Burn's CubeBackend (or Fusion over it)"
} else {
    "the cube path needs Burn's CubeBackend (ternary-layers' `fusion` feature adds Fusion over it)"
};

/// The float primitive of `Fusion<CubeBackend<R, ..>>`.
#[cfg(feature = "fusion")]
type Fused<R> = burn_fusion::FusionTensor<burn_cubecl::fusion::FusionCubeRuntime<R>>;

/// A layer's matrix on one device, uploaded on first use.
#[derive(Debug)]
struct CubeWeights<R: CubeRuntime> {
    device: R::Device,
    matrix: DeviceMatrix<R>,
}

/// A layer's uploaded matrices, one per device it has run on (usually one), filled on first
/// use; clones share it. Opaque: only [`TernaryBackend::ternary_gemm`] implementations use it.
#[derive(Debug, Default, Clone)]
pub struct DeviceCache {
    entries: Arc<Mutex<Vec<Arc<dyn Any + Send + Sync>>>>,
}

impl DeviceCache {
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
        let matrix = DeviceMatrix::upload(&x.client, m)?;
        let entry: Arc<dyn Any + Send + Sync> = Arc::new(CubeWeights::<R> {
            device: x.device.clone(),
            matrix,
        });
        entries.push(Arc::clone(&entry));
        Ok(entry)
    }
}

impl<R, F, I, BT> TernaryBackend for CubeBackend<R, F, I, BT>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn auto_path() -> LinearPath {
        LinearPath::Cube
    }

    fn ternary_gemm(
        matrix: &Arc<TernaryMatrix>,
        cache: &DeviceCache,
        x: CubeTensor<R>,
    ) -> Result<CubeTensor<R>> {
        gemm_on(matrix, cache, x)
    }
}

#[cfg(feature = "fusion")]
impl<R, F, I, BT> TernaryBackend for burn_fusion::Fusion<CubeBackend<R, F, I, BT>>
where
    R: CubeRuntime,
    F: FloatElement,
    I: IntElement,
    BT: BoolElement,
{
    fn auto_path() -> LinearPath {
        LinearPath::Cube
    }

    fn ternary_gemm(
        matrix: &Arc<TernaryMatrix>,
        cache: &DeviceCache,
        x: Fused<R>,
    ) -> Result<Fused<R>> {
        fused::gemm(matrix, cache, x)
    }
}

/// Checks an input of `dtype` and `shape` for `m`; returns `(n, in)`.
fn check_input(m: &TernaryMatrix, dtype: DType, shape: &Shape) -> Result<(usize, usize)> {
    if dtype != DType::F32 {
        return Err(LayerError::Invalid(format!(
            "the cube path takes f32 activations, got {dtype:?}"
        )));
    }
    let (n, cols) = match shape.num_dims() {
        2 => (shape[0], shape[1]),
        d => {
            return Err(LayerError::Shape(format!(
                "cube path: expected a 2-D input, got {d}-D"
            )));
        }
    };
    if cols != m.cols() {
        return Err(LayerError::Shape(format!(
            "input has {cols} features, the layer takes {}",
            m.cols()
        )));
    }
    Ok((n, cols))
}

fn gemm_on<R: CubeRuntime>(
    m: &TernaryMatrix,
    cache: &DeviceCache,
    x: CubeTensor<R>,
) -> Result<CubeTensor<R>> {
    let (n, cols) = check_input(m, x.dtype, x.meta.shape())?;
    let x = into_contiguous(x);
    let entry = cache.matrix(m, &x)?;
    let weights = entry
        .downcast_ref::<CubeWeights<R>>()
        .ok_or_else(|| LayerError::Invalid("cube path: cached matrix of another runtime".into()))?;
    let client = x.client.clone();
    let device = x.device.clone();
    let len = n * cols;
    let xa = DeviceArray::<R, f32>::from_handle(x.handle.clone(), len)?;
    let xa = DeviceActivations::from_device(&client, xa, n, cols)?;
    let rows = m.rows();
    // Debug builds (and tests) poison the output, so a value the kernel fails to write shows.
    let y = if cfg!(debug_assertions) {
        DeviceArray::<R, f32>::filled(&client, n * rows, f32::NAN)
    } else {
        DeviceArray::<R, f32>::empty(&client, n * rows)
    };
    ternary_kernels::launch_gemm(&client, &weights.matrix, &xa, &y, GemmStrategy::Auto)?;
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

/// The product as a custom operation in Burn's fusion stream.
#[cfg(feature = "fusion")]
mod fused {
    use burn_cubecl::fusion::FusionCubeRuntime;
    use burn_fusion::FusionRuntime;
    use burn_fusion::stream::{Operation, OperationStreams};
    use burn_ir::{CustomOpIr, HandleContainer, OperationIr, OperationOutput, TensorIr};

    use super::*;

    /// The unfused backend whose tensors the stream's handles hold (element types do not
    /// change a `CubeTensor`).
    type Inner<R> = CubeBackend<R, f32, i32, u32>;

    /// `y = Q·x`, run by the fusion server when the stream reaches it.
    #[derive(Debug)]
    struct TernaryGemm<R: CubeRuntime> {
        desc: CustomOpIr,
        matrix: Arc<TernaryMatrix>,
        cache: DeviceCache,
        _runtime: PhantomData<R>,
    }

    impl<R: CubeRuntime> Operation<FusionCubeRuntime<R>> for TernaryGemm<R> {
        fn execute(
            &self,
            handles: &mut HandleContainer<<FusionCubeRuntime<R> as FusionRuntime>::FusionHandle>,
        ) {
            let ([x], [out]) = self.desc.as_fixed::<1, 1>();
            let x = handles.get_float_tensor::<Inner<R>>(x);
            // Shapes, dtype and matrix size were checked when the operation was registered, so
            // only a device failure (a lost device, out of memory) can fail here, where no error
            // can be returned; Burn's own operations panic in that case too.
            let y = match gemm_on(&self.matrix, &self.cache, x) {
                Ok(y) => y,
                Err(e) => panic!("TernaryLinear cube path (fused backend): {e}"),
            };
            handles.register_float_tensor::<Inner<R>>(&out.id, y);
        }
    }

    /// Registers `y = Q·x` on `x`'s stream and returns the (lazy) output `[n, out]`.
    pub(super) fn gemm<R: CubeRuntime>(
        m: &Arc<TernaryMatrix>,
        cache: &DeviceCache,
        x: Fused<R>,
    ) -> Result<Fused<R>> {
        let (n, _) = check_input(m, x.dtype, &x.shape)?;
        // What `DeviceMatrix::upload` would reject, rejected before the operation is queued.
        let words = m.plus().len().max(m.scales().values().len()).max(m.rows());
        if words > i32::MAX as usize {
            return Err(LayerError::Shape(format!(
                "{} x {} matrix exceeds the 32-bit addressing of the kernels",
                m.rows(),
                m.cols()
            )));
        }
        let client = x.client.clone();
        let streams = OperationStreams::with_inputs([&x]);
        let out = TensorIr::uninit(
            client.create_empty_handle(),
            Shape::new([n, m.rows()]),
            DType::F32,
        );
        let desc = CustomOpIr::new("ternary_linear", &[x.into_ir()], &[out]);
        let op = TernaryGemm::<R> {
            desc: desc.clone(),
            matrix: Arc::clone(m),
            cache: cache.clone(),
            _runtime: PhantomData,
        };
        Ok(client
            .register(streams, OperationIr::Custom(desc), op)
            .output())
    }
}
