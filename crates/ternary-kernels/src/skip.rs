//! Block skipping: a bitmap of non-zero 32-weight chunks and the GEMV that skips the rest.
//!
//! Layout (the same bits as the `ternary-sparsity` crate's `u64` masks, split into `u32`
//! halves): chunk `k` of row `r` is plane word `k` of that row (columns `32k .. 32k + 32`).
//! Its bit lives in bitmap word `r · bwpr + k / 32`, bit `k % 32` (least significant first),
//! where `bwpr = 2 · ⌈wpr / 64⌉` keeps each row a whole number of `u64` words. The bit is set
//! iff `plus[r, k] | minus[r, k] != 0`; bits of padding chunks are zero.
//!
//! The bitmap describes the planes when it was built: rebuild it (on the device with
//! [`DeviceBitmap::build`]) after [edits](crate::edit).

use cubecl::prelude::*;
use ternary_core::TernaryMatrix;

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

/// A chunk bitmap on the host; see the [module docs](self) for the layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkBitmap {
    rows: usize,
    words_per_row: usize,
    words: Vec<u32>,
}

impl ChunkBitmap {
    /// Builds the bitmap of `m`: bit `k` of row `r` is set iff word `k` of the row is non-zero
    /// in either plane.
    pub fn from_matrix(m: &TernaryMatrix) -> Self {
        let wpr = m.words_per_row();
        let bwpr = bitmap_words_per_row(wpr);
        let mut words = vec![0u32; m.rows() * bwpr];
        for r in 0..m.rows() {
            let (p, mi) = m.row_planes(r);
            for k in 0..wpr {
                if p[k] | mi[k] != 0 {
                    words[r * bwpr + k / 32] |= 1 << (k % 32);
                }
            }
        }
        Self {
            rows: m.rows(),
            words_per_row: bwpr,
            words,
        }
    }

    /// Builds the bitmap from `u64` mask words in the `ternary-sparsity` layout (per row
    /// `⌈wpr / 64⌉` words, chunk `k` in bit `k % 64` of word `k / 64`) for a `rows × cols`
    /// matrix: each `u64` is split into its low and high `u32` halves.
    pub fn from_u64_masks(rows: usize, cols: usize, masks: &[u64]) -> Result<Self> {
        let wpr = ternary_core::words_per_row(cols);
        let per_row = wpr.div_ceil(64);
        if Some(masks.len()) != rows.checked_mul(per_row) {
            return Err(crate::KernelError::shape(format!(
                "{rows}x{cols} matrix needs {rows} x {per_row} u64 masks, got {}",
                masks.len()
            )));
        }
        for (i, &m) in masks.iter().enumerate() {
            let first = (i % per_row.max(1)) * 64;
            let valid = wpr.saturating_sub(first).min(64);
            if valid < 64 && m >> valid != 0 {
                return Err(crate::KernelError::shape(format!(
                    "mask word {i} has bits set past the {wpr} chunks of a row"
                )));
            }
        }
        Ok(Self {
            rows,
            words_per_row: 2 * per_row,
            words: masks
                .iter()
                .flat_map(|&m| [m as u32, (m >> 32) as u32])
                .collect(),
        })
    }

    /// Rows.
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `u32` words per row (`2 · ⌈wpr / 64⌉`).
    #[inline]
    pub fn words_per_row(&self) -> usize {
        self.words_per_row
    }

    /// All words, row-major.
    #[inline]
    pub fn words(&self) -> &[u32] {
        &self.words
    }

    /// Non-zero chunks (set bits).
    pub fn nonzero_chunks(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }
}

/// A chunk bitmap on the device.
#[derive(Debug, Clone)]
pub struct DeviceBitmap<R: Runtime> {
    rows: usize,
    words_per_row: usize,
    pub(crate) words: DeviceArray<R, u32>,
}

impl<R: Runtime> DeviceBitmap<R> {
    /// Uploads a host bitmap.
    pub fn upload(client: &ComputeClient<R>, b: &ChunkBitmap) -> Self {
        Self {
            rows: b.rows,
            words_per_row: b.words_per_row,
            words: DeviceArray::from_slice(client, &b.words),
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
            words_per_row: bwpr,
            words,
        })
    }

    /// Reads the bitmap back.
    pub fn read(&self, client: &ComputeClient<R>) -> Result<ChunkBitmap> {
        Ok(ChunkBitmap {
            rows: self.rows,
            words_per_row: self.words_per_row,
            words: self.words.read(client)?,
        })
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

#[cfg(test)]
mod tests {
    use super::*;
    use ternary_core::Scales;

    #[test]
    fn bitmap_marks_exactly_the_nonzero_chunks_in_u64_order() {
        // 2 rows x 4200 columns: wpr = 2 * 66 = 132 words, so 3 u64 bitmap words (6 u32) per row.
        let (rows, cols) = (2, 4200);
        let mut trits = vec![0i8; rows * cols];
        for &(r, c) in &[(0, 0), (0, 31), (0, 64 * 32 + 5), (1, 4199), (1, 32)] {
            trits[r * cols + c] = if c % 2 == 0 { 1 } else { -1 };
        }
        let m = TernaryMatrix::from_trits(rows, cols, &trits, Scales::per_row(vec![1.0; rows]))
            .unwrap();
        let b = ChunkBitmap::from_matrix(&m);
        assert_eq!(b.words_per_row(), bitmap_words_per_row(m.words_per_row()));
        assert_eq!(b.words_per_row(), 6);
        // Row 0: chunks 0 and 64; row 1: chunks 1 and 131.
        let as_u64 = |r: usize, k: usize| {
            let w = &b.words()[r * 6..(r + 1) * 6];
            (u64::from(w[2 * k]) | (u64::from(w[2 * k + 1]) << 32)) as u128
        };
        assert_eq!(as_u64(0, 0), 1);
        assert_eq!(as_u64(0, 1), 1);
        assert_eq!(as_u64(0, 2), 0);
        assert_eq!(as_u64(1, 0), 2);
        assert_eq!(as_u64(1, 2), 1 << (131 - 128));
        assert_eq!(b.nonzero_chunks(), 4);

        // The same bits as ternary-sparsity's u64 masks.
        let masks: Vec<u64> = (0..rows)
            .flat_map(|r| (0..3).map(move |k| (r, k)))
            .map(|(r, k)| as_u64(r, k) as u64)
            .collect();
        assert_eq!(ChunkBitmap::from_u64_masks(rows, cols, &masks).unwrap(), b);
        assert!(ChunkBitmap::from_u64_masks(rows, cols, &masks[1..]).is_err());
        let mut bad = masks.clone();
        bad[2] |= 1 << 4; // chunk 132 does not exist (wpr = 132)
        assert!(ChunkBitmap::from_u64_masks(rows, cols, &bad).is_err());
    }
}
