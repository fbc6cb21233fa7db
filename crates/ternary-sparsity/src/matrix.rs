//! [`BitmapMatrix`]: a [`TernaryMatrix`] plus its [`ChunkBitmap`], kept exactly consistent
//! through O(1) edits.
//!
//! Files hold the matrix alone (any [`Storage`] of `ternary_core::io`); the bitmap is rebuilt
//! on load in one pass over the planes. Storing it would save that pass (≈ 1 ms for 4096 ×
//! 4096) but would let a file carry a bitmap that disagrees with its planes; rebuilding makes
//! a loaded bitmap consistent by construction.

use std::path::Path;

use ternary_core::io::{self, Storage};
use ternary_core::{Result, Scales, TernaryMatrix};

use ternary_core::ChunkBitmap;

/// A ternary matrix with its chunk bitmap (see [`ternary_core::bitmap`]).
///
/// Invariants after every operation: `bitmap == ChunkBitmap::from_matrix(matrix)`, and the
/// cached counts equal `matrix.nnz()` and `bitmap.count_nonempty()` (kept in O(1) per edit,
/// so kernels and planners read them without a pass over the planes).
#[derive(Debug, Clone, PartialEq)]
pub struct BitmapMatrix {
    matrix: TernaryMatrix,
    bitmap: ChunkBitmap,
    nnz: usize,
    nonempty: usize,
}

impl BitmapMatrix {
    /// Wraps a matrix, building its bitmap (one pass over the planes).
    pub fn new(matrix: TernaryMatrix) -> Self {
        let bitmap = ChunkBitmap::from_matrix(&matrix);
        Self::assemble(matrix, bitmap)
    }

    fn assemble(matrix: TernaryMatrix, bitmap: ChunkBitmap) -> Self {
        let nnz = matrix.nnz();
        let nonempty = bitmap.count_nonempty();
        Self {
            matrix,
            bitmap,
            nnz,
            nonempty,
        }
    }

    /// Wraps a matrix with a bitmap computed elsewhere; [`TernaryError::Config`]
    /// (`TernaryError::Shape` for the wrong size) if it is not exactly the matrix's bitmap.
    ///
    /// [`TernaryError::Config`]: ternary_core::TernaryError::Config
    pub fn from_parts(matrix: TernaryMatrix, bitmap: ChunkBitmap) -> Result<Self> {
        bitmap.check_matches(&matrix)?;
        Ok(Self::assemble(matrix, bitmap))
    }

    /// The matrix.
    #[inline]
    pub fn matrix(&self) -> &TernaryMatrix {
        &self.matrix
    }

    /// The bitmap.
    #[inline]
    pub fn bitmap(&self) -> &ChunkBitmap {
        &self.bitmap
    }

    /// Unwraps the matrix (dropping the bitmap).
    pub fn into_matrix(self) -> TernaryMatrix {
        self.matrix
    }

    /// Output channels.
    #[inline]
    pub fn rows(&self) -> usize {
        self.matrix.rows()
    }

    /// Input channels.
    #[inline]
    pub fn cols(&self) -> usize {
        self.matrix.cols()
    }

    /// The trit at `(r, c)`. O(1).
    #[inline]
    pub fn get(&self, r: usize, c: usize) -> Result<i8> {
        self.matrix.get(r, c)
    }

    /// Sets the trit at `(r, c)` and returns the old one, in O(1): the plane bits as in
    /// [`TernaryMatrix::set`], then bit `(r, c / 32)` of the bitmap to
    /// `plus[w] | minus[w] ≠ 0` for the edited word `w` (cleared when the edit empties the
    /// chunk, set when it puts a weight into an empty one).
    #[inline]
    pub fn set(&mut self, r: usize, c: usize, t: i8) -> Result<i8> {
        let old = self.matrix.set(r, c, t)?;
        // `set` succeeded, so (r, c) is in bounds and `t` is a trit.
        let w = r * self.matrix.words_per_row() + c / 32;
        let nonzero = self.matrix.plus()[w] | self.matrix.minus()[w] != 0;
        let was = self.bitmap.put(r, c / 32, nonzero);
        self.nnz = self.nnz + usize::from(t != 0) - usize::from(old != 0);
        self.nonempty = self.nonempty + usize::from(nonzero) - usize::from(was);
        Ok(old)
    }

    /// Writes weight `value ∈ {−1, 0, +1}` at input dimension `col` of output `row`: the edit
    /// API of the specification, [`set`](Self::set) under its name. Returns the old trit.
    #[inline]
    pub fn modify_dim(&mut self, row: usize, col: usize, value: i8) -> Result<i8> {
        self.set(row, col, value)
    }

    /// Replaces the scales (validated against the shape); the bitmap does not depend on them.
    pub fn set_scales(&mut self, scales: Scales) -> Result<()> {
        self.matrix.set_scales(scales)
    }

    /// Re-derives the bitmap and the counts from the planes and compares: `Ok` iff the
    /// invariants hold.
    pub fn check_consistency(&self) -> Result<()> {
        self.bitmap.check_matches(&self.matrix)?;
        if self.nnz != self.matrix.nnz() || self.nonempty != self.bitmap.count_nonempty() {
            return Err(ternary_core::TernaryError::Config(format!(
                "cached counts (nnz {}, non-empty chunks {}) disagree with the planes ({}, {})",
                self.nnz,
                self.nonempty,
                self.matrix.nnz(),
                self.bitmap.count_nonempty()
            )));
        }
        Ok(())
    }

    /// Non-zero weights (cached).
    #[inline]
    pub fn nnz(&self) -> usize {
        self.nnz
    }

    /// Non-empty chunks (cached).
    #[inline]
    pub fn nonempty_chunks(&self) -> usize {
        self.nonempty
    }

    /// Fraction of non-zero weights (`nnz / (rows · cols)`, `0` for an empty matrix).
    pub fn density(&self) -> f64 {
        let total = self.rows() * self.cols();
        if total == 0 {
            0.0
        } else {
            self.nnz as f64 / total as f64
        }
    }

    /// Fraction of data chunks that hold a non-zero weight (see [`ChunkBitmap::occupancy`]).
    pub fn occupancy(&self) -> f64 {
        let total = self.rows() * self.cols().div_ceil(32);
        if total == 0 {
            0.0
        } else {
            self.nonempty as f64 / total as f64
        }
    }

    /// Bytes in memory: planes, scales and bitmap.
    pub fn storage_bytes(&self) -> usize {
        self.matrix.storage_bytes() + self.bitmap.storage_bytes()
    }

    /// Serializes named matrices to safetensors bytes (the matrices only; see the module docs).
    pub fn to_bytes(matrices: &[(&str, &BitmapMatrix)], storage: Storage) -> Result<Vec<u8>> {
        io::to_bytes(&inner(matrices), storage)
    }

    /// Reads every matrix from safetensors bytes and rebuilds each bitmap.
    pub fn from_bytes(bytes: &[u8]) -> Result<Vec<(String, BitmapMatrix)>> {
        Ok(wrap(io::from_bytes(bytes)?))
    }

    /// Writes named matrices to `path` atomically (see [`ternary_core::io::save`]).
    pub fn save(
        path: impl AsRef<Path>,
        matrices: &[(&str, &BitmapMatrix)],
        storage: Storage,
    ) -> Result<()> {
        io::save(path, &inner(matrices), storage)
    }

    /// Reads every matrix from the file at `path` and rebuilds each bitmap.
    pub fn load(path: impl AsRef<Path>) -> Result<Vec<(String, BitmapMatrix)>> {
        Ok(wrap(io::load(path)?))
    }

    /// Reads the matrix `name` from the file at `path` and rebuilds its bitmap.
    pub fn load_one(path: impl AsRef<Path>, name: &str) -> Result<BitmapMatrix> {
        Ok(Self::new(io::load_one(path, name)?))
    }
}

impl From<TernaryMatrix> for BitmapMatrix {
    fn from(m: TernaryMatrix) -> Self {
        Self::new(m)
    }
}

fn inner<'a>(matrices: &[(&'a str, &'a BitmapMatrix)]) -> Vec<(&'a str, &'a TernaryMatrix)> {
    matrices.iter().map(|&(n, m)| (n, &m.matrix)).collect()
}

fn wrap(v: Vec<(String, TernaryMatrix)>) -> Vec<(String, BitmapMatrix)> {
    v.into_iter()
        .map(|(n, m)| (n, BitmapMatrix::new(m)))
        .collect()
}

/// `nnz / (rows · cols)` of a matrix (`0` when it has no weights).
pub fn density(m: &TernaryMatrix) -> f64 {
    let total = m.rows() * m.cols();
    if total == 0 {
        0.0
    } else {
        m.nnz() as f64 / total as f64
    }
}
