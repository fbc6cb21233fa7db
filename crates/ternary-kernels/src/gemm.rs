//! Host side of the float-activation products: `y[j, r] = Σ_c s[r, g(c)] · t[r, c] · x[j, c]`.

use cubecl::prelude::*;

use crate::buffer::{DeviceArray, DeviceElement};
use crate::device::DeviceCaps;
use crate::error::{KernelError, Result};
use crate::kernels::{gemm_tiled, gemv_rows};
use crate::matrix::{DeviceActivations, DeviceMatrix, Geometry};
use crate::plan::{GemmStrategy, Plan, RowsConfig, TileConfig, plan};
use crate::skip::DeviceBitmap;

/// Checks that `y` holds `n × rows` outputs.
pub(crate) fn check_output<R: Runtime>(
    rows: usize,
    n: usize,
    y: &DeviceArray<R, f32>,
) -> Result<()> {
    if Some(y.len()) != n.checked_mul(rows) {
        return Err(KernelError::shape(format!(
            "output: expected n x rows = {n} x {rows} values, got {}",
            y.len()
        )));
    }
    crate::matrix::check_u32_range("outputs", y.len())
}

/// Checks that a launch grid fits the device.
pub(crate) fn check_grid(caps: &DeviceCaps, x: usize, y: usize, z: usize) -> Result<CubeCount> {
    let (mx, my, mz) = caps.max_cube_count;
    if x > mx as usize || y > my as usize || z > mz as usize {
        return Err(KernelError::Unsupported(format!(
            "grid {x} x {y} x {z} exceeds the device limit {mx} x {my} x {mz}"
        )));
    }
    Ok(CubeCount::Static(x as u32, y as u32, z as u32))
}

/// Submits queued work and turns a device-side failure into [`KernelError::Device`].
pub(crate) fn flush<R: Runtime>(client: &ComputeClient<R>) -> Result<()> {
    client.flush().map_err(KernelError::device)
}

/// `y[j, r] = Σ_c s[r, g(c)] · t[r, c] · x[j, c]` on the device, `y` row-major `n × rows`.
///
/// `y` is overwritten; activations may be `f32` or `f16` (accumulation is always `f32`).
/// Returns the plan that ran. Errors: [`KernelError::Shape`] when `x` or `y` disagree with the
/// matrix, [`KernelError::Unsupported`] when the strategy cannot run on this device.
pub fn launch_gemm<R: Runtime, F: Float + DeviceElement>(
    client: &ComputeClient<R>,
    m: &DeviceMatrix<R>,
    x: &DeviceActivations<R, F>,
    y: &DeviceArray<R, f32>,
    strategy: GemmStrategy,
) -> Result<Plan> {
    check_activations(m, x.cols())?;
    check_output(m.rows(), x.n(), y)?;
    let caps = DeviceCaps::of(client);
    let plan = plan(&caps, x.n(), strategy)?;
    if m.rows() == 0 || x.n() == 0 {
        return Ok(plan);
    }
    match plan {
        Plan::Rows(cfg) => launch_rows(client, &caps, m, x, None, y, cfg)?,
        Plan::Tiled(cfg) => {
            launch_tiled::<R, F, f32>(client, &caps, m, &x.data, x.n(), None, y, cfg)?
        }
    }
    Ok(plan)
}

pub(crate) fn check_activations<R: Runtime>(m: &DeviceMatrix<R>, cols: usize) -> Result<()> {
    if cols != m.cols() {
        return Err(KernelError::shape(format!(
            "activations have {cols} values per token, matrix has {} columns",
            m.cols()
        )));
    }
    Ok(())
}

/// Launches the row-parallel kernel, dense or skipping chunks through `bitmap`.
pub(crate) fn launch_rows<R: Runtime, F: Float + DeviceElement>(
    client: &ComputeClient<R>,
    caps: &DeviceCaps,
    m: &DeviceMatrix<R>,
    x: &DeviceActivations<R, F>,
    bitmap: Option<&DeviceBitmap<R>>,
    y: &DeviceArray<R, f32>,
    cfg: RowsConfig,
) -> Result<()> {
    let Geometry {
        rows,
        wpr,
        groups,
        wpg,
    } = m.geometry();
    let count = check_grid(
        caps,
        (rows as usize).div_ceil(cfg.rows_per_cube as usize),
        x.n().div_ceil(cfg.tokens as usize),
        1,
    )?;
    let (bitmap_arg, bitmap_wpr, skip) = match bitmap {
        Some(b) => (b.words.arg(), b.words_per_row() as u32, true),
        None => (m.dummy_u32.arg(), 0, false),
    };
    gemv_rows::launch::<F, R>(
        client,
        count,
        CubeDim::new_2d(cfg.lanes, cfg.rows_per_cube),
        m.plus.arg(),
        m.minus.arg(),
        m.scales.arg(),
        bitmap_arg,
        x.data.arg(),
        y.arg(),
        rows,
        wpr,
        groups,
        wpg,
        x.n() as u32,
        bitmap_wpr,
        cfg.lanes,
        cfg.rows_per_cube,
        cfg.tokens,
        cfg.plane_reduce,
        skip,
    );
    flush(client)
}

/// Launches the tiled kernel over activations of element type `E` accumulated in `A`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch_tiled<R: Runtime, E: Numeric + DeviceElement, A: Numeric>(
    client: &ComputeClient<R>,
    caps: &DeviceCaps,
    m: &DeviceMatrix<R>,
    x: &DeviceArray<R, E>,
    n: usize,
    token_scales: Option<&DeviceArray<R, f32>>,
    y: &DeviceArray<R, f32>,
    cfg: TileConfig,
) -> Result<()> {
    let cfg = cfg.setup(caps)?;
    let Geometry {
        rows,
        wpr,
        groups,
        wpg,
    } = m.geometry();
    let count = check_grid(
        caps,
        (rows as usize).div_ceil(cfg.bm as usize),
        n.div_ceil(cfg.bn as usize),
        1,
    )?;
    let (ts_arg, token_scaled) = match token_scales {
        Some(s) => (s.arg(), true),
        None => (m.dummy_f32.arg(), false),
    };
    gemm_tiled::launch::<E, A, R>(
        client,
        count,
        CubeDim::new_2d(cfg.bn / cfg.tn, cfg.bm / cfg.tm),
        m.plus.arg(),
        m.minus.arg(),
        m.scales.arg(),
        x.arg(),
        ts_arg,
        y.arg(),
        rows,
        wpr,
        groups,
        wpg,
        n as u32,
        cfg.bm,
        cfg.bn,
        cfg.bk,
        cfg.tm,
        cfg.tn,
        token_scaled,
    );
    flush(client)
}
