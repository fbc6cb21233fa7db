//! Block skipping: a bitmap of non-zero 32-weight chunks and the GEMV that skips the rest.
//!
//! Layout (the host format is `ternary_core::ChunkBitmap`; on the device its `u64` masks are
//! split into `u32` halves, [`ChunkBitmap::to_u32_words`]): chunk `k` of row `r` is plane word `k` of that row (columns `32k .. 32k + 32`).
//! Its bit lives in bitmap word `r · bwpr + k / 32`, bit `k % 32` (least significant first),
//! where `bwpr = 2 · ⌈wpr / 64⌉` keeps each row a whole number of `u64` words. The bit is set
//! iff `plus[r, k] | minus[r, k] != 0`; bits of padding chunks are zero.
//!
//! The bitmap describes the planes when it was built: rebuild it (on the device with
//! [`DeviceBitmap::build`]) after [edits](crate::edit).

use cubecl::prelude::*;
use ternary_core::ChunkBitmap;

use crate::buffer::{DeviceArray, DeviceElement};
use crate::device::DeviceCaps;
use crate::error::Result;
use crate::gemm::{check_activations, check_grid, check_output, flush, launch_rows};
use crate::kernels::build_bitmap;
use crate::matrix::{DeviceActivations, DeviceMatrix};
use crate::plan::{RowsConfig, plan_rows};

/// Bitmap words per row for `wpr` plane words: `2 · ⌈wpr / 64⌉`.
#[inline]
pub const fn bitmap_words_per_row(wpr: usize) -> usize {
    wpr.div_ceil(64) * 2
}

/// A chunk bitmap on the device.
#[derive(Debug, Clone)]
pub struct DeviceBitmap<R: Runtime> {
    rows: usize,
    chunks_per_row: usize,
    words_per_row: usize,
    pub(crate) words: DeviceArray<R, u32>,
}

impl<R: Runtime> DeviceBitmap<R> {
    /// Uploads a host bitmap ([`ChunkBitmap::to_u32_words`]).
    pub fn upload(client: &ComputeClient<R>, b: &ChunkBitmap) -> Self {
        Self {
            rows: b.rows(),
            chunks_per_row: b.chunks_per_row(),
            words_per_row: 2 * b.masks_per_row(),
            words: DeviceArray::from_slice(client, &b.to_u32_words()),
        }
    }

    /// Builds the bitmap of a device matrix on the device (one unit per bitmap word).
    pub fn build(client: &ComputeClient<R>, m: &DeviceMatrix<R>) -> Result<Self> {
        let geo = m.geometry();
        let bwpr = bitmap_words_per_row(m.words_per_row());
        let words = DeviceArray::<R, u32>::filled(client, m.rows() * bwpr, 0);
        let total = m.rows() * bwpr;
        if total > 0 {
            let caps = DeviceCaps::of(client);
            let count = check_grid(&caps, total.div_ceil(256), 1, 1)?;
            build_bitmap::launch::<R>(
                client,
                count,
                CubeDim::new_1d(256),
                m.plus.arg(),
                m.minus.arg(),
                words.arg(),
                geo.rows,
                geo.wpr,
                bwpr as u32,
            );
            flush(client)?;
        }
        Ok(Self {
            rows: m.rows(),
            chunks_per_row: m.words_per_row(),
            words_per_row: bwpr,
            words,
        })
    }

    /// Reads the bitmap back.
    pub fn read(&self, client: &ComputeClient<R>) -> Result<ChunkBitmap> {
        let words = self.words.read(client)?;
        Ok(ChunkBitmap::from_u32_words(
            self.rows,
            self.chunks_per_row,
            &words,
        )?)
    }

    /// `u32` words per row.
    #[inline]
    pub fn words_per_row(&self) -> usize {
        self.words_per_row
    }
}

/// `y = W · x` like [`launch_gemm`](crate::launch_gemm) with the row-parallel kernel, loading
/// only the chunks whose bit is set in `bitmap` (all-zero chunks contribute nothing).
///
/// The result equals the dense product when the bitmap was built from the current planes.
/// Returns the configuration that ran.
pub fn launch_gemv_skip<R: Runtime, F: Float + DeviceElement>(
    client: &ComputeClient<R>,
    m: &DeviceMatrix<R>,
    bitmap: &DeviceBitmap<R>,
    x: &DeviceActivations<R, F>,
    y: &DeviceArray<R, f32>,
) -> Result<RowsConfig> {
    check_activations(m, x.cols())?;
    check_output(m.rows(), x.n(), y)?;
    if bitmap.rows != m.rows() || bitmap.words_per_row != bitmap_words_per_row(m.words_per_row()) {
        return Err(crate::KernelError::shape(format!(
            "bitmap is {} rows x {} words, matrix needs {} x {}",
            bitmap.rows,
            bitmap.words_per_row,
            m.rows(),
            bitmap_words_per_row(m.words_per_row())
        )));
    }
    let caps = DeviceCaps::of(client);
    let cfg = plan_rows(&caps, x.n(), true).or_else(|_| plan_rows(&caps, x.n(), false))?;
    if m.rows() > 0 && x.n() > 0 {
        launch_rows(client, &caps, m, x, Some(bitmap), y, cfg)?;
    }
    Ok(cfg)
}
