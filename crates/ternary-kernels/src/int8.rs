//! Host side of the int8 path: per-token quantization on the device and the int8 product
//! `y[j, r] = s_j · Σ_g s[r, g] · acc[j, r, g]`, `acc[j, r, g] = Σ_{c ∈ g} q[j, c] · t[r, c]`
//! accumulated exactly in `i32`.
//!
//! The `f32` part follows `ternary_core::reference::gemm_i8`'s order
//! (`sum = 0; for g in order { sum += s[r, g] · (acc as f32) }; y = sum · s_j`). A compiler
//! may contract `sum + s · acc` into one fused multiply-add (NVRTC does by default), which can
//! change the last bit of per-group results; per-row results (one group) are unaffected.
//!
//! There is no dp4a/`dot` path: CubeCL 0.10 lowers `dot` on `i8` vectors to scalar multiplies
//! in the element type on CUDA/HIP (overflowing `i8`) and WGSL's `dot` has no packed-`i8` form
//! there, and a ternary weight needs no multiply anyway (`±q` or `0`).

use cubecl::prelude::*;

use crate::buffer::{DeviceArray, DeviceElement};
use crate::device::DeviceCaps;
use crate::error::Result;
use crate::gemm::{check_activations, check_grid, check_output, flush, launch_tiled};
use crate::kernels::quantize_tokens;
use crate::matrix::{DeviceActivations, DeviceMatrix, DeviceQuantized, padded_cols};
use crate::plan::{TileConfig, plan_tiled};

/// Units per token of the quantization kernel.
const QUANT_UNITS: u32 = 64;

/// Quantizes every token of `x` to int8 on the device, exactly as
/// `ternary_core::QuantizedActivations::quantize` does on the host (`s_j = max|x_j| / 127`,
/// `q = round(x · 127 / max|x_j|)`, ties to even).
pub fn launch_quantize<R: Runtime, F: Float + DeviceElement>(
    client: &ComputeClient<R>,
    x: &DeviceActivations<R, F>,
) -> Result<DeviceQuantized<R>> {
    let out = DeviceQuantized::empty(client, x.n(), x.cols())?;
    launch_quantize_into(client, x, &out)?;
    Ok(out)
}

/// [`launch_quantize`] into existing buffers (`out` must have the shape of `x`).
pub fn launch_quantize_into<R: Runtime, F: Float + DeviceElement>(
    client: &ComputeClient<R>,
    x: &DeviceActivations<R, F>,
    out: &DeviceQuantized<R>,
) -> Result<()> {
    if out.n() != x.n() || out.cols() != x.cols() {
        return Err(crate::KernelError::shape(format!(
            "quantized output is {} x {}, activations are {} x {}",
            out.n(),
            out.cols(),
            x.n(),
            x.cols()
        )));
    }
    let pc = padded_cols(x.cols());
    if x.n() > 0 {
        let caps = DeviceCaps::of(client);
        let count = check_grid(&caps, x.n(), 1, 1)?;
        quantize_tokens::launch::<F, R>(
            client,
            count,
            CubeDim::new_1d(QUANT_UNITS),
            x.data.arg(),
            out.q.arg(),
            out.scales.arg(),
            pc as u32,
            QUANT_UNITS,
        );
        flush(client)?;
    }
    Ok(())
}

/// Int8 product on the device (see the [module docs](self)); `y` is `n × rows`, overwritten.
///
/// `tile` overrides the planner ([`plan_tiled`]). Returns the tile that ran.
pub fn launch_gemm_i8<R: Runtime>(
    client: &ComputeClient<R>,
    m: &DeviceMatrix<R>,
    a: &DeviceQuantized<R>,
    y: &DeviceArray<R, f32>,
    tile: Option<TileConfig>,
) -> Result<TileConfig> {
    check_activations(m, a.cols())?;
    check_output(m.rows(), a.n(), y)?;
    let caps = DeviceCaps::of(client);
    let cfg = match tile {
        Some(t) => t.setup(&caps)?,
        None => plan_tiled(&caps, a.n())?,
    };
    if m.rows() > 0 && a.n() > 0 {
        launch_tiled::<R, i32, i32>(client, &caps, m, &a.q, a.n(), Some(&a.scales), y, cfg)?;
    }
    Ok(cfg)
}
