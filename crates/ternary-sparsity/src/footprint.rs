//! Memory of each weight format: `bits/weight = 8 · storage_bytes / (rows · cols)`, everything
//! a format keeps in memory counted (planes or codes, indexes, bitmap, scales).

use ternary_core::TernaryMatrix;

use crate::chunks::PackedChunks;
use crate::lists::IndexLists;
use crate::matrix::BitmapMatrix;

/// Bits per `f16` weight (the reference the specification's memory bar is stated against).
pub const F16_BITS: f64 = 16.0;

/// How much memory a weight format takes.
pub trait Footprint {
    /// Weights stood for (`rows · cols`).
    fn weights(&self) -> usize;

    /// Bytes held in memory.
    fn storage_bytes(&self) -> usize;

    /// `8 · storage_bytes / weights` (`0` without weights).
    fn bits_per_weight(&self) -> f64 {
        let w = self.weights();
        if w == 0 {
            0.0
        } else {
            self.storage_bytes() as f64 * 8.0 / w as f64
        }
    }

    /// Memory reduction against dense `f16` weights: `16 / bits_per_weight`.
    fn reduction_vs_f16(&self) -> f64 {
        F16_BITS / self.bits_per_weight()
    }
}

impl Footprint for TernaryMatrix {
    fn weights(&self) -> usize {
        self.rows() * self.cols()
    }
    fn storage_bytes(&self) -> usize {
        TernaryMatrix::storage_bytes(self)
    }
}

impl Footprint for BitmapMatrix {
    fn weights(&self) -> usize {
        self.rows() * self.cols()
    }
    fn storage_bytes(&self) -> usize {
        BitmapMatrix::storage_bytes(self)
    }
}

impl Footprint for PackedChunks {
    fn weights(&self) -> usize {
        self.rows() * self.cols()
    }
    fn storage_bytes(&self) -> usize {
        PackedChunks::storage_bytes(self)
    }
}

impl Footprint for IndexLists {
    fn weights(&self) -> usize {
        self.rows() * self.cols()
    }
    fn storage_bytes(&self) -> usize {
        IndexLists::storage_bytes(self)
    }
}
