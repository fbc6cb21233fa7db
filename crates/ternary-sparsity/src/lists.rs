//! [`IndexLists`]: per row, the sorted columns of the `+1` weights and of the `−1` weights,
//! gap-coded in bytes.
//!
//! A list of columns `c₀ < c₁ < …` is stored as the gaps `gᵢ = cᵢ − cᵢ₋₁ − 1` (with
//! `c₋₁ = −1`). A gap `g < 255` is the byte `g`; a larger gap is `⌊g / 255⌋` bytes `255`
//! (each: "skip 255 columns, no weight") followed by the byte `g mod 255`. Decoding keeps
//! `next = 0`; a byte `b < 255` emits column `next + b` and sets `next` to that column `+ 1`;
//! `255` adds 255 to `next`.
//!
//! Row `r`'s `+1` list is `bytes[offsets[2r] .. offsets[2r+1]]` and its `−1` list
//! `bytes[offsets[2r+1] .. offsets[2r+2]]`. Memory:
//!
//! `bits/weight ≈ 8 · (d + e) + (64 + 32 · groups) / cols`,
//!
//! for density `d` and `e` escape bytes per weight. For unstructured weights with random signs
//! each sign's list has density `d/2`, a gap reaches `255k` with probability `q^k`,
//! `q = (1 − d/2)^255`, so `e ≈ d · q / (1 − q)`: 0.2% of `d` at `d = 5%`, 39% of `d` at
//! `d = 1%`. It undercuts the 2-bit planes below `d ≈ 24%`.

use ternary_core::{Result, Scales, TernaryError, TernaryMatrix, words_per_row};

use crate::kernels::ListView;

/// The escape byte: advance 255 columns without a weight.
pub const ESCAPE: u8 = 255;

/// A ternary matrix as gap-coded index lists. See the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct IndexLists {
    rows: usize,
    cols: usize,
    offsets: Vec<u32>,
    bytes: Vec<u8>,
    scales: Scales,
    nnz: usize,
}

/// Appends the gap code of the set bits of `words` (columns `32w + b`) to `out`.
fn encode_plane(words: &[u32], out: &mut Vec<u8>) {
    let mut next = 0usize;
    for (w, &word) in words.iter().enumerate() {
        let mut bits = word;
        while bits != 0 {
            let c = 32 * w + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let mut gap = c - next;
            while gap >= ESCAPE as usize {
                out.push(ESCAPE);
                gap -= ESCAPE as usize;
            }
            // gap < 255 here.
            out.push(gap as u8);
            next = c + 1;
        }
    }
}

impl IndexLists {
    /// Encodes a matrix. [`TernaryError::Shape`] if the code exceeds 2³² − 1 bytes.
    pub fn from_matrix(m: &TernaryMatrix) -> Result<Self> {
        let mut offsets = Vec::with_capacity(2 * m.rows() + 1);
        let mut bytes = Vec::new();
        offsets.push(0);
        for r in 0..m.rows() {
            let (p, mi) = m.row_planes(r);
            for plane in [p, mi] {
                encode_plane(plane, &mut bytes);
                let end = u32::try_from(bytes.len()).map_err(|_| {
                    TernaryError::Shape(format!(
                        "index lists of a {}x{} matrix exceed 2^32 bytes",
                        m.rows(),
                        m.cols()
                    ))
                })?;
                offsets.push(end);
            }
        }
        Ok(Self {
            rows: m.rows(),
            cols: m.cols(),
            offsets,
            bytes,
            scales: m.scales().clone(),
            nnz: m.nnz(),
        })
    }

    /// Decodes into the dense bit-sliced form.
    pub fn to_matrix(&self) -> Result<TernaryMatrix> {
        let wpr = words_per_row(self.cols);
        let mut planes = [vec![0u32; self.rows * wpr], vec![0u32; self.rows * wpr]];
        for r in 0..self.rows {
            for (s, plane) in planes.iter_mut().enumerate() {
                let code = &self.bytes[self.offsets[2 * r + s] as usize..][..self.len(r, s)];
                for c in decode(code) {
                    if c >= self.cols {
                        return Err(TernaryError::Config(format!(
                            "index list of row {r} names column {c} of {}",
                            self.cols
                        )));
                    }
                    plane[r * wpr + c / 32] |= 1 << (c % 32);
                }
            }
        }
        let [plus, minus] = planes;
        TernaryMatrix::from_planes(self.rows, self.cols, plus, minus, self.scales.clone())
    }

    fn len(&self, r: usize, s: usize) -> usize {
        (self.offsets[2 * r + s + 1] - self.offsets[2 * r + s]) as usize
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

    /// Bytes of gap code (`nnz` plus escape bytes).
    #[inline]
    pub fn code_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The columns of the `+1` weights of row `r`, in increasing order.
    ///
    /// # Panics
    /// If `r >= rows`.
    pub fn plus_columns(&self, r: usize) -> impl Iterator<Item = usize> + '_ {
        decode(&self.bytes[self.offsets[2 * r] as usize..][..self.len(r, 0)])
    }

    /// The columns of the `−1` weights of row `r`, in increasing order.
    ///
    /// # Panics
    /// If `r >= rows`.
    pub fn minus_columns(&self, r: usize) -> impl Iterator<Item = usize> + '_ {
        decode(&self.bytes[self.offsets[2 * r + 1] as usize..][..self.len(r, 1)])
    }

    /// Bytes in memory: code, offsets and scales.
    pub fn storage_bytes(&self) -> usize {
        self.bytes.len() + (self.offsets.len() + self.scales.values().len()) * 4
    }

    pub(crate) fn view(&self) -> ListView<'_> {
        ListView {
            rows: self.rows,
            cols: self.cols,
            offsets: &self.offsets,
            bytes: &self.bytes,
            scales: &self.scales,
            nnz: self.nnz,
        }
    }
}

/// The columns a gap code stands for, in increasing order.
pub(crate) fn decode(code: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut next = 0usize;
    code.iter().filter_map(move |&b| {
        if b == ESCAPE {
            next += ESCAPE as usize;
            None
        } else {
            let c = next + b as usize;
            next = c + 1;
            Some(c)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gap_code_round_trips_with_escapes() {
        let cols = 2000;
        let mut m = TernaryMatrix::zeros(2, cols, Scales::per_row(vec![1.0; 2])).unwrap();
        for c in [0, 1, 254, 255, 510, 765, 766, 1999] {
            m.set(0, c, 1).unwrap();
        }
        m.set(1, 1000, -1).unwrap();
        let l = IndexLists::from_matrix(&m).unwrap();
        assert_eq!(
            l.plus_columns(0).collect::<Vec<_>>(),
            vec![0, 1, 254, 255, 510, 765, 766, 1999]
        );
        assert_eq!(l.minus_columns(1).collect::<Vec<_>>(), vec![1000]);
        assert_eq!(l.plus_columns(1).count(), 0);
        // 0 → [0]; 1 → [0]; 254 → [252]; 255 → [0]; 510 → gap 254 → [254];
        // 765 → gap 254 → [254]; 766 → [0]; 1999 → gap 1232 = 4·255 + 212 → [255 ×4, 212].
        let row0 = &l.bytes[..l.offsets[1] as usize];
        assert_eq!(row0, &[0, 0, 252, 0, 254, 254, 0, 255, 255, 255, 255, 212]);
        // 1000 = 3·255 + 235.
        assert_eq!(&l.bytes[l.offsets[3] as usize..], &[255, 255, 255, 235]);
        assert_eq!(l.to_matrix().unwrap(), m);
    }
}
