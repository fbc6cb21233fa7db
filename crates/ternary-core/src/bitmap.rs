//! The chunk bitmap: one bit per 32-weight word of each row (the one format: the sparsity
//! crate's skip kernels and compressed formats and the GPU skip kernels all use it).
//!
//! Chunk `w` of row `r` is plane word `r · words_per_row + w` (columns `32w .. 32w + 32`). Its
//! bit is set iff `plus[r, w] | minus[r, w] ≠ 0`, i.e. iff the chunk holds a non-zero weight.
//! Bits are packed LSB-first into `u64` mask words: chunk `w` is bit `w % 64` of mask word
//! `w / 64` of the row, so one mask word covers 2048 columns. Mask bits of chunks past the
//! row's `words_per_row` are zero.
//!
//! For unstructured density `d` (each weight non-zero independently with probability `d`), a
//! chunk of 32 weights is empty with probability `(1 − d)³²`: a skip kernel reads the fraction
//! `1 − (1 − d)³²` of the chunks (81% at `d = 5%`, 27% at `d = 1%`).

use crate::{Result, TernaryError, TernaryMatrix};

/// Chunks (32-column plane words) covered by one `u64` mask word.
pub const CHUNKS_PER_MASK: usize = 64;

/// One bit per 32-weight chunk of every row, set iff the chunk holds a non-zero weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkBitmap {
    rows: usize,
    chunks_per_row: usize,
    masks_per_row: usize,
    masks: Vec<u64>,
}

impl ChunkBitmap {
    /// The bitmap of a matrix: bit `(r, w)` = `plus[r, w] | minus[r, w] ≠ 0`. One pass over
    /// the planes.
    pub fn from_matrix(m: &TernaryMatrix) -> Self {
        Self::from_planes(m.rows(), m.words_per_row(), m.plus(), m.minus())
    }

    /// The bitmap of `rows` rows of `chunks_per_row` plane words each (`plus.len() ==
    /// minus.len() == rows · chunks_per_row`; shorter planes leave the missing rows empty).
    pub fn from_planes(rows: usize, chunks_per_row: usize, plus: &[u32], minus: &[u32]) -> Self {
        let masks_per_row = chunks_per_row.div_ceil(CHUNKS_PER_MASK);
        let mut masks = vec![0u64; rows * masks_per_row];
        if chunks_per_row > 0 {
            for ((row_masks, p), m) in masks
                .chunks_exact_mut(masks_per_row)
                .zip(plus.chunks_exact(chunks_per_row))
                .zip(minus.chunks_exact(chunks_per_row))
            {
                for (w, (&pw, &mw)) in p.iter().zip(m).enumerate() {
                    row_masks[w / CHUNKS_PER_MASK] |= u64::from(pw | mw != 0) << (w % 64);
                }
            }
        }
        Self {
            rows,
            chunks_per_row,
            masks_per_row,
            masks,
        }
    }

    /// Rows.
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Chunks per row (the matrix's `words_per_row`, padding words included).
    #[inline]
    pub fn chunks_per_row(&self) -> usize {
        self.chunks_per_row
    }

    /// `u64` mask words per row: `⌈chunks_per_row / 64⌉`.
    #[inline]
    pub fn masks_per_row(&self) -> usize {
        self.masks_per_row
    }

    /// All mask words, row-major (`rows · masks_per_row`).
    #[inline]
    pub fn masks(&self) -> &[u64] {
        &self.masks
    }

    /// The mask words of row `r`.
    ///
    /// # Panics
    /// If `r >= rows`.
    #[inline]
    pub fn row(&self, r: usize) -> &[u64] {
        &self.masks[r * self.masks_per_row..(r + 1) * self.masks_per_row]
    }

    /// Whether chunk `w` of row `r` holds a non-zero weight.
    #[inline]
    pub fn is_set(&self, r: usize, w: usize) -> Result<bool> {
        self.check(r, w)?;
        Ok(self.masks[r * self.masks_per_row + w / 64] >> (w % 64) & 1 != 0)
    }

    /// Sets bit `(r, w)` to `nonzero` in O(1); returns its old value. For edits that already
    /// checked `(r, w)`.
    ///
    /// # Panics
    /// If `r >= rows` (or `w` is past the row's mask words).
    #[inline]
    pub fn put(&mut self, r: usize, w: usize, nonzero: bool) -> bool {
        let i = r * self.masks_per_row + w / 64;
        let bit = 1u64 << (w % 64);
        let was = self.masks[i] & bit != 0;
        self.masks[i] = (self.masks[i] & !bit) | (u64::from(nonzero) << (w % 64));
        was
    }

    fn check(&self, r: usize, w: usize) -> Result<()> {
        if r >= self.rows || w >= self.chunks_per_row {
            return Err(TernaryError::Shape(format!(
                "chunk ({r}, {w}) out of bounds for a bitmap of {} rows x {} chunks",
                self.rows, self.chunks_per_row
            )));
        }
        Ok(())
    }

    /// Number of non-empty chunks (`Σ popc(mask)`).
    pub fn count_nonempty(&self) -> usize {
        self.masks.iter().map(|m| m.count_ones() as usize).sum()
    }

    /// Non-empty chunks of row `r`.
    pub fn row_nonempty(&self, r: usize) -> usize {
        self.row(r).iter().map(|m| m.count_ones() as usize).sum()
    }

    /// Fraction of the data chunks (`rows · ⌈cols / 32⌉`) that are non-empty: what a skip
    /// kernel still reads. `0` for an empty matrix.
    pub fn occupancy(&self, cols: usize) -> f64 {
        let total = self.rows * cols.div_ceil(32);
        if total == 0 {
            0.0
        } else {
            self.count_nonempty() as f64 / total as f64
        }
    }

    /// Bytes of the mask words.
    pub fn storage_bytes(&self) -> usize {
        self.masks.len() * 8
    }

    /// The first chunk where this bitmap disagrees with `m`, as an error; `Ok` if it is exactly
    /// the bitmap of `m`.
    pub fn check_matches(&self, m: &TernaryMatrix) -> Result<()> {
        if self.rows != m.rows() || self.chunks_per_row != m.words_per_row() {
            return Err(TernaryError::Shape(format!(
                "bitmap of {} rows x {} chunks does not fit a {}x{} matrix ({} words per row)",
                self.rows,
                self.chunks_per_row,
                m.rows(),
                m.cols(),
                m.words_per_row()
            )));
        }
        let fresh = Self::from_matrix(m);
        if let Some(i) = (0..self.masks.len()).find(|&i| self.masks[i] != fresh.masks[i]) {
            let diff = self.masks[i] ^ fresh.masks[i];
            let (r, mw) = (i / self.masks_per_row.max(1), i % self.masks_per_row.max(1));
            let w = mw * 64 + diff.trailing_zeros() as usize;
            return Err(TernaryError::Config(format!(
                "chunk bitmap is inconsistent with the planes at row {r}, chunk {w} \
                 (bitmap says {}, planes say {})",
                if self.masks[i] >> (w % 64) & 1 != 0 {
                    "non-empty"
                } else {
                    "empty"
                },
                if fresh.masks[i] >> (w % 64) & 1 != 0 {
                    "non-empty"
                } else {
                    "empty"
                }
            )));
        }
        Ok(())
    }

    /// The bitmap from `u64` mask words (per row `⌈chunks_per_row / 64⌉` words, chunk `w` in bit
    /// `w % 64` of word `w / 64`): an error when the length is wrong or a bit past the row's
    /// chunks is set.
    pub fn from_masks(rows: usize, chunks_per_row: usize, masks: Vec<u64>) -> Result<Self> {
        let masks_per_row = chunks_per_row.div_ceil(CHUNKS_PER_MASK);
        if Some(masks.len()) != rows.checked_mul(masks_per_row) {
            return Err(TernaryError::Shape(format!(
                "{rows} rows of {chunks_per_row} chunks need {rows} x {masks_per_row} u64 masks, \
                 got {}",
                masks.len()
            )));
        }
        for (i, &m) in masks.iter().enumerate() {
            let first = (i % masks_per_row.max(1)) * CHUNKS_PER_MASK;
            let valid = chunks_per_row.saturating_sub(first).min(CHUNKS_PER_MASK);
            if valid < CHUNKS_PER_MASK && m >> valid != 0 {
                return Err(TernaryError::Shape(format!(
                    "mask word {i} has bits set past the {chunks_per_row} chunks of a row"
                )));
            }
        }
        Ok(Self {
            rows,
            chunks_per_row,
            masks_per_row,
            masks,
        })
    }

    /// The masks as `u32` words, each `u64` split into its low then high half: per row
    /// `2 · masks_per_row` words, chunk `w` in bit `w % 32` of word `w / 32` (the GPU layout).
    pub fn to_u32_words(&self) -> Vec<u32> {
        self.masks
            .iter()
            .flat_map(|&m| [m as u32, (m >> 32) as u32])
            .collect()
    }

    /// The inverse of [`to_u32_words`](Self::to_u32_words), checked like
    /// [`from_masks`](Self::from_masks).
    pub fn from_u32_words(rows: usize, chunks_per_row: usize, words: &[u32]) -> Result<Self> {
        if !words.len().is_multiple_of(2) {
            return Err(TernaryError::Shape(format!(
                "{} u32 bitmap words do not pair into u64 masks",
                words.len()
            )));
        }
        let masks = words
            .chunks_exact(2)
            .map(|p| u64::from(p[0]) | u64::from(p[1]) << 32)
            .collect();
        Self::from_masks(rows, chunks_per_row, masks)
    }

    /// Iterates the non-empty chunk indices `w` of row `r` in increasing order.
    pub fn iter_row(&self, r: usize) -> impl Iterator<Item = usize> + '_ {
        self.row(r).iter().enumerate().flat_map(|(i, &m)| {
            let mut m = m;
            std::iter::from_fn(move || {
                if m == 0 {
                    None
                } else {
                    let b = m.trailing_zeros() as usize;
                    m &= m - 1;
                    Some(i * 64 + b)
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scales;

    #[test]
    fn bitmap_marks_exactly_the_nonempty_words() {
        // 2 rows x 200 columns: 8 words per row (7 data words + 1 padding word).
        let mut m = TernaryMatrix::zeros(2, 200, Scales::per_row(vec![1.0; 2])).unwrap();
        m.set(0, 0, 1).unwrap();
        m.set(0, 63, -1).unwrap();
        m.set(1, 199, 1).unwrap();
        let b = ChunkBitmap::from_matrix(&m);
        assert_eq!(b.chunks_per_row(), 8);
        assert_eq!(b.masks_per_row(), 1);
        assert_eq!(b.row(0), &[0b11]);
        assert_eq!(b.row(1), &[1 << 6]);
        assert_eq!(b.iter_row(0).collect::<Vec<_>>(), vec![0, 1]);
        assert_eq!(b.count_nonempty(), 3);
        assert!((b.occupancy(200) - 3.0 / 14.0).abs() < 1e-12);
        assert!(b.is_set(1, 6).unwrap());
        assert!(!b.is_set(1, 5).unwrap());
        assert!(b.is_set(2, 0).is_err());
        assert!(b.is_set(0, 8).is_err());
        b.check_matches(&m).unwrap();
        m.set(1, 0, -1).unwrap();
        let e = b.check_matches(&m).unwrap_err().to_string();
        assert!(e.contains("row 1, chunk 0"), "{e}");
    }

    #[test]
    fn masks_span_several_words_for_wide_rows() {
        // 4100 columns: 130 words per row, 3 mask words.
        let mut m = TernaryMatrix::zeros(1, 4100, Scales::per_row(vec![1.0])).unwrap();
        m.set(0, 4099, 1).unwrap();
        m.set(0, 2048, 1).unwrap();
        let b = ChunkBitmap::from_matrix(&m);
        assert_eq!(b.masks_per_row(), 3);
        assert_eq!(b.iter_row(0).collect::<Vec<_>>(), vec![64, 128]);
    }

    #[test]
    fn u32_words_split_each_mask_low_then_high_and_round_trip() {
        // 2 rows x 4200 columns: wpr = 2 * 66 = 132 words, so 3 u64 masks (6 u32) per row.
        let (rows, cols) = (2, 4200);
        let mut trits = vec![0i8; rows * cols];
        for &(r, c) in &[(0, 0), (0, 31), (0, 64 * 32 + 5), (1, 4199), (1, 32)] {
            trits[r * cols + c] = if c % 2 == 0 { 1 } else { -1 };
        }
        let m = TernaryMatrix::from_trits(rows, cols, &trits, Scales::per_row(vec![1.0; rows]))
            .unwrap();
        let b = ChunkBitmap::from_matrix(&m);
        assert_eq!(b.masks_per_row(), 3);
        let words = b.to_u32_words();
        assert_eq!(words.len(), rows * 6);
        // Row 0: chunks 0 and 64; row 1: chunks 1 and 131.
        let as_u64 = |r: usize, k: usize| {
            let w = &words[r * 6..(r + 1) * 6];
            u64::from(w[2 * k]) | (u64::from(w[2 * k + 1]) << 32)
        };
        assert_eq!(as_u64(0, 0), 1);
        assert_eq!(as_u64(0, 1), 1);
        assert_eq!(as_u64(0, 2), 0);
        assert_eq!(as_u64(1, 0), 2);
        assert_eq!(as_u64(1, 2), 1 << (131 - 128));
        assert_eq!(b.count_nonempty(), 4);
        let wpr = m.words_per_row();
        assert_eq!(ChunkBitmap::from_u32_words(rows, wpr, &words).unwrap(), b);
        assert_eq!(
            ChunkBitmap::from_masks(rows, wpr, b.masks().to_vec()).unwrap(),
            b
        );
        assert!(ChunkBitmap::from_masks(rows, wpr, b.masks()[1..].to_vec()).is_err());
        assert!(ChunkBitmap::from_u32_words(rows, wpr, &words[1..]).is_err());
        let mut bad = b.masks().to_vec();
        bad[2] |= 1 << 4; // chunk 132 does not exist (wpr = 132)
        assert!(ChunkBitmap::from_masks(rows, wpr, bad).is_err());
    }
}
