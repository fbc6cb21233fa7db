//! [`PackedChunks`]: only the non-empty 32-weight chunks of each row, indexed by the bitmap.
//!
//! Row `r` stores, for each set bit `w` of its [`ChunkBitmap`] row in increasing order, the
//! pair `(plus[r, w], minus[r, w])`; `row_start[r]` is the index of its first pair. With a
//! fraction `o` of non-empty chunks the weights cost
//!
//! `bits/weight = 2 · o · (32 · ⌈cols/32⌉ / cols) + (64 · ⌈cols/2048⌉ + 32 + 32 · groups) / cols`
//!
//! (planes of the kept chunks; bitmap, row start and scales per row). For unstructured
//! density `d`, `o = 1 − (1 − d)³²`; for chunk-pruned rows `o` is the kept fraction of chunks.

use ternary_core::{Result, Scales, TernaryError, TernaryMatrix};

use crate::kernels::ChunkView;
use crate::matrix::BitmapMatrix;
use ternary_core::ChunkBitmap;

/// A ternary matrix that stores only its non-empty chunks. See the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct PackedChunks {
    rows: usize,
    cols: usize,
    bitmap: ChunkBitmap,
    row_start: Vec<u32>,
    plus: Vec<u32>,
    minus: Vec<u32>,
    scales: Scales,
    nnz: usize,
}

impl PackedChunks {
    /// Packs a matrix. [`TernaryError::Shape`] if it has 2³² or more non-empty chunks.
    pub fn from_matrix(m: &TernaryMatrix) -> Result<Self> {
        Self::build(m, ChunkBitmap::from_matrix(m))
    }

    /// Packs a matrix whose bitmap is already known.
    pub fn from_bitmap_matrix(m: &BitmapMatrix) -> Result<Self> {
        Self::build(m.matrix(), m.bitmap().clone())
    }

    fn build(m: &TernaryMatrix, bitmap: ChunkBitmap) -> Result<Self> {
        let total = bitmap.count_nonempty();
        if u32::try_from(total).is_err() {
            return Err(TernaryError::Shape(format!(
                "{total} non-empty chunks do not fit the u32 row index of PackedChunks"
            )));
        }
        let mut row_start = Vec::with_capacity(m.rows() + 1);
        let mut plus = Vec::with_capacity(total);
        let mut minus = Vec::with_capacity(total);
        for r in 0..m.rows() {
            // `plus.len() ≤ total < 2³²`.
            row_start.push(plus.len() as u32);
            let (p, mi) = m.row_planes(r);
            for w in bitmap.iter_row(r) {
                plus.push(p[w]);
                minus.push(mi[w]);
            }
        }
        row_start.push(plus.len() as u32);
        Ok(Self {
            rows: m.rows(),
            cols: m.cols(),
            bitmap,
            row_start,
            plus,
            minus,
            scales: m.scales().clone(),
            nnz: m.nnz(),
        })
    }

    /// Unpacks into the dense bit-sliced form.
    pub fn to_matrix(&self) -> Result<TernaryMatrix> {
        let wpr = self.bitmap.chunks_per_row();
        let mut plus = vec![0u32; self.rows * wpr];
        let mut minus = vec![0u32; self.rows * wpr];
        for r in 0..self.rows {
            let k0 = self.row_start[r] as usize;
            for (k, w) in self.bitmap.iter_row(r).enumerate() {
                plus[r * wpr + w] = self.plus[k0 + k];
                minus[r * wpr + w] = self.minus[k0 + k];
            }
        }
        TernaryMatrix::from_planes(self.rows, self.cols, plus, minus, self.scales.clone())
    }

    /// Output channels.
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input channels.
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The bitmap indexing the stored chunks.
    #[inline]
    pub fn bitmap(&self) -> &ChunkBitmap {
        &self.bitmap
    }

    /// The scales.
    #[inline]
    pub fn scales(&self) -> &Scales {
        &self.scales
    }

    /// Non-zero weights.
    #[inline]
    pub fn nnz(&self) -> usize {
        self.nnz
    }

    /// Stored (non-empty) chunks.
    #[inline]
    pub fn stored_chunks(&self) -> usize {
        self.plus.len()
    }

    /// Bytes in memory: stored plane words, bitmap, row starts and scales.
    pub fn storage_bytes(&self) -> usize {
        (self.plus.len() + self.minus.len() + self.row_start.len() + self.scales.values().len()) * 4
            + self.bitmap.storage_bytes()
    }

    pub(crate) fn view(&self) -> ChunkView<'_> {
        ChunkView {
            rows: self.rows,
            cols: self.cols,
            wpr: self.bitmap.chunks_per_row(),
            mpr: self.bitmap.masks_per_row(),
            masks: self.bitmap.masks(),
            plus: &self.plus,
            minus: &self.minus,
            row_start: Some(&self.row_start),
            scales: &self.scales,
            nnz: self.nnz,
            nonempty: self.plus.len(),
        }
    }
}
