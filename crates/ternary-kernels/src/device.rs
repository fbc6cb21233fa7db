//! Creating compute clients without panicking, and describing what a device offers.
//!
//! CubeCL 0.10 creates a runtime's server in a device thread and panics there when the driver
//! is missing (for CUDA: `Unable to dynamically load the "cuda" shared library`, then a
//! `RecvError` in the caller). The functions here probe first and turn every failure into
//! [`KernelError::NoDevice`], so a caller can fall back to the CPU kernels of `ternary-core`.

use std::panic::{AssertUnwindSafe, catch_unwind};

use cubecl::features::Plane;
use cubecl::ir::{ElemType, FloatKind, StorageType};
use cubecl::prelude::*;

#[allow(unused_imports)]
use crate::error::{KernelError, Result};

/// Runs `make` and converts a panic (CubeCL's way of reporting a missing device) into
/// [`KernelError::NoDevice`].
#[allow(dead_code)]
fn client_or_error<R: Runtime>(
    what: &str,
    make: impl FnOnce() -> ComputeClient<R>,
) -> Result<ComputeClient<R>> {
    catch_unwind(AssertUnwindSafe(make)).map_err(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".to_string());
        KernelError::NoDevice(format!("{what} client creation failed: {msg}"))
    })
}

/// The default wgpu device (Vulkan, Metal or DX12; Mesa's lavapipe on a machine without a GPU).
#[cfg(feature = "wgpu")]
pub fn wgpu_client() -> Result<ComputeClient<cubecl::wgpu::WgpuRuntime>> {
    use cubecl::wgpu::{WgpuDevice, WgpuRuntime};
    let client = client_or_error("wgpu", || WgpuRuntime::client(&WgpuDevice::default()))?;
    // Adapter selection happens lazily; a trivial query forces it so failures surface here.
    client_or_error("wgpu", move || {
        let _ = client.properties();
        client
    })
}

/// The first CUDA device, after checking that `libcuda`, `libnvrtc` and the CUDA headers
/// (needed by NVRTC at run time: `CUDA_PATH` or `/usr/local/cuda`) are present and that the
/// driver reports at least one device.
#[cfg(feature = "cuda")]
pub fn cuda_client() -> Result<ComputeClient<cubecl::cuda::CudaRuntime>> {
    use cubecl::cuda::{CudaDevice, CudaRuntime};
    crate::probe::cuda()?;
    client_or_error("CUDA", || CudaRuntime::client(&CudaDevice::new(0)))
}

/// The first HIP (ROCm) device.
#[cfg(feature = "hip")]
pub fn hip_client() -> Result<ComputeClient<cubecl::hip::HipRuntime>> {
    use cubecl::hip::{AmdDevice, HipRuntime};
    client_or_error("HIP", || HipRuntime::client(&AmdDevice { index: 0 }))
}

/// What a device offers to the kernels of this crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceCaps {
    /// Runtime name as CubeCL reports it (e.g. `wgpu<wgsl>`, `cuda`).
    pub runtime: &'static str,
    /// Plane (warp / subgroup) operations such as `plane_sum` are available.
    pub plane_ops: bool,
    /// Smallest and largest plane size.
    pub plane_size: (u32, u32),
    /// Shared memory per cube, bytes.
    pub max_shared_memory: usize,
    /// Units per cube.
    pub max_units_per_cube: u32,
    /// Cubes per launch dimension.
    pub max_cube_count: (u32, u32, u32),
    /// `f16` can be stored in buffers and converted.
    pub f16: bool,
}

impl DeviceCaps {
    /// Reads the capabilities of `client`'s device.
    pub fn of<R: Runtime>(client: &ComputeClient<R>) -> Self {
        let props = client.properties();
        let hw = &props.hardware;
        let f16 = props
            .features
            .types
            .storage
            .contains_key(&StorageType::Scalar(ElemType::Float(FloatKind::F16)));
        Self {
            runtime: R::name(client),
            plane_ops: props.features.plane.contains(Plane::Ops),
            plane_size: (hw.plane_size_min, hw.plane_size_max),
            max_shared_memory: hw.max_shared_memory_size,
            max_units_per_cube: hw.max_units_per_cube,
            max_cube_count: hw.max_cube_count,
            f16,
        }
    }

    /// The plane size when it is fixed (min = max), else `None`.
    pub fn fixed_plane_size(&self) -> Option<u32> {
        (self.plane_ops && self.plane_size.0 == self.plane_size.1).then_some(self.plane_size.0)
    }
}

/// Copies `src` into `dst` on the device (`dst.len() >= src.len()`); used to measure the copy
/// bandwidth that the benchmark compares kernels with. Moves `8 · src.len()` bytes.
pub fn launch_copy<R: Runtime>(
    client: &ComputeClient<R>,
    src: &crate::DeviceArray<R, u32>,
    dst: &crate::DeviceArray<R, u32>,
) -> Result<()> {
    if dst.len() < src.len() {
        return Err(KernelError::shape(format!(
            "copy: destination holds {} words, source {}",
            dst.len(),
            src.len()
        )));
    }
    crate::matrix::check_u32_range("copy words", src.len())?;
    if src.is_empty() {
        return Ok(());
    }
    let caps = DeviceCaps::of(client);
    let cubes = src.len().div_ceil(4 * 256);
    let x = cubes.min(caps.max_cube_count.0 as usize);
    let count = crate::gemm::check_grid(&caps, x, cubes.div_ceil(x), 1)?;
    crate::kernels::copy_words::launch::<R>(
        client,
        count,
        CubeDim::new_1d(256),
        src.arg(),
        dst.arg(),
        src.len() as u32,
    );
    crate::gemm::flush(client)
}

/// Blocks until every queued kernel has finished (for timing).
pub fn sync<R: Runtime>(client: &ComputeClient<R>) -> Result<()> {
    cubecl::future::block_on(client.sync()).map_err(KernelError::device)
}
