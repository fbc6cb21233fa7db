//! Probing for the CUDA driver before CubeCL touches it.

use crate::error::{KernelError, Result};

/// Checks that `libcuda` and `libnvrtc` load, that the CUDA headers NVRTC needs exist, and
/// that the driver sees at least one device.
pub(crate) fn cuda() -> Result<()> {
    // SAFETY: `is_culib_present` only tries `dlopen` on the candidate library names and
    // drops the handle; it runs no code from the library beyond its initialisers.
    let driver = unsafe { cudarc::driver::sys::is_culib_present() };
    if !driver {
        return Err(KernelError::NoDevice(
            "the CUDA driver library (libcuda.so) was not found; is an NVIDIA driver installed?"
                .into(),
        ));
    }
    // SAFETY: as above, for the NVRTC library.
    let nvrtc = unsafe { cudarc::nvrtc::sys::is_culib_present() };
    if !nvrtc {
        return Err(KernelError::NoDevice(
            "NVRTC (libnvrtc.so) was not found; CubeCL compiles CUDA kernels at run time with it"
                .into(),
        ));
    }
    match cubecl::cuda::install::cuda_path() {
        Some(p) if p.join("include").join("cuda.h").exists() => {}
        Some(p) => {
            return Err(KernelError::NoDevice(format!(
                "CUDA headers not found under {} (NVRTC needs include/cuda.h); set CUDA_PATH",
                p.display()
            )));
        }
        None => {
            return Err(KernelError::NoDevice(
                "CUDA installation not found: set CUDA_PATH (NVRTC needs the CUDA headers)".into(),
            ));
        }
    }
    cudarc::driver::result::init()
        .map_err(|e| KernelError::NoDevice(format!("cuInit failed: {e:?}")))?;
    let count = cudarc::driver::result::device::get_count()
        .map_err(|e| KernelError::NoDevice(format!("cuDeviceGetCount failed: {e:?}")))?;
    if count < 1 {
        return Err(KernelError::NoDevice(
            "the CUDA driver reports no device".into(),
        ));
    }
    Ok(())
}
