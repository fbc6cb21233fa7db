//! The bit-sliced ternary matrix: two bit-planes and float scales.
//!
//! Weight `t[r, c] ∈ {-1, 0, +1}` is stored as one bit in each plane:
//! `plus` has the bit set iff `t = +1`, `minus` iff `t = -1`.
//! Column `c` of row `r` lives in word `r · words_per_row + c / 32`, bit `c % 32`
//! (least significant bit first). Each row is padded to a multiple of 64 columns, so
//! `words_per_row` is even and word pairs `(2k, 2k+1)` read as one little-endian `u64`.
//!
//! Invariants, checked by every constructor:
//! - `plus & minus == 0` in every word;
//! - padding bits (columns `cols..` of each row) are zero in both planes;
//! - every scale is finite.
//!
//! The real-valued weight the matrix stands for is `w[r, c] = s[r, g(c)] · t[r, c]`, where
//! `g(c) = c / group_size` for per-group scales and `g(c) = 0` for per-row scales.

use crate::error::{Result, TernaryError, check_finite};

/// Bits in one plane word.
pub const WORD_BITS: usize = 32;
/// Each row is padded to a multiple of this many columns.
pub const ROW_ALIGN: usize = 64;

/// Number of `u32` words per row of a plane for `cols` columns (always even).
///
/// `words_per_row(cols) = 2 · ⌈cols / 64⌉`.
#[inline]
pub const fn words_per_row(cols: usize) -> usize {
    cols.div_ceil(ROW_ALIGN) * (ROW_ALIGN / WORD_BITS)
}

/// How scales map onto weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScaleLayout {
    /// One scale per output channel (row): `w[r, c] = s[r] · t[r, c]`.
    PerRow,
    /// One scale per row and per group of `group_size` consecutive input columns:
    /// `w[r, c] = s[r, c / group_size] · t[r, c]`. `group_size` is a positive multiple of 32;
    /// the last group of a row may be shorter.
    PerGroup {
        /// Columns per group (a positive multiple of 32).
        group_size: usize,
    },
}

impl ScaleLayout {
    /// Checks that the layout is usable.
    pub fn validate(self) -> Result<()> {
        match self {
            Self::PerRow => Ok(()),
            Self::PerGroup { group_size } => {
                if group_size == 0 || group_size % WORD_BITS != 0 {
                    Err(TernaryError::config(format!(
                        "group size {group_size} must be a positive multiple of {WORD_BITS}"
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Scales per row for a matrix of `cols` columns.
    ///
    /// A row of zero columns has no groups, but a per-row scale is still stored.
    #[inline]
    pub fn groups_per_row(self, cols: usize) -> usize {
        match self {
            Self::PerRow => 1,
            Self::PerGroup { group_size } => cols.div_ceil(group_size),
        }
    }

    /// Columns covered by one scale in a row of `cols` columns (`cols` for per-row).
    #[inline]
    pub fn group_len(self, cols: usize) -> usize {
        match self {
            Self::PerRow => cols,
            Self::PerGroup { group_size } => group_size,
        }
    }
}

/// The scales of a [`TernaryMatrix`]: `rows × groups_per_row` finite `f32` values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Scales {
    layout: ScaleLayout,
    values: Vec<f32>,
}

impl Scales {
    /// One scale per row.
    pub fn per_row(values: Vec<f32>) -> Self {
        Self {
            layout: ScaleLayout::PerRow,
            values,
        }
    }

    /// Scales per row and group of `group_size` columns (`rows × ⌈cols / group_size⌉` values).
    pub fn per_group(group_size: usize, values: Vec<f32>) -> Self {
        Self {
            layout: ScaleLayout::PerGroup { group_size },
            values,
        }
    }

    /// Builds scales from a layout and values.
    pub fn new(layout: ScaleLayout, values: Vec<f32>) -> Self {
        Self { layout, values }
    }

    /// The layout.
    #[inline]
    pub fn layout(&self) -> ScaleLayout {
        self.layout
    }

    /// All values, row-major (`rows × groups_per_row`).
    #[inline]
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// The values, taken (for reuse of the allocation).
    pub(crate) fn into_values(self) -> Vec<f32> {
        self.values
    }

    /// Mutable access to the values (e.g. to refit scales after an edit).
    #[inline]
    pub fn values_mut(&mut self) -> &mut [f32] {
        &mut self.values
    }

    fn validate(&self, rows: usize, cols: usize) -> Result<()> {
        self.layout.validate()?;
        let expected = rows * self.layout.groups_per_row(cols);
        if self.values.len() != expected {
            return Err(TernaryError::shape(format!(
                "{rows}x{cols} matrix with {:?} scales needs {expected} scales, got {}",
                self.layout,
                self.values.len()
            )));
        }
        check_finite("scales", &self.values)
    }
}

/// A ternary matrix `rows × cols` in bit-sliced form. See the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct TernaryMatrix {
    rows: usize,
    cols: usize,
    plus: Vec<u32>,
    minus: Vec<u32>,
    scales: Scales,
}

impl TernaryMatrix {
    /// Builds a matrix from its planes, validating every invariant.
    ///
    /// `plus` and `minus` hold `rows · words_per_row(cols)` words each.
    pub fn from_planes(
        rows: usize,
        cols: usize,
        plus: Vec<u32>,
        minus: Vec<u32>,
        scales: Scales,
    ) -> Result<Self> {
        let wpr = words_per_row(cols);
        let expected = rows
            .checked_mul(wpr)
            .ok_or_else(|| TernaryError::shape(format!("{rows}x{cols} overflows usize")))?;
        if plus.len() != expected || minus.len() != expected {
            return Err(TernaryError::shape(format!(
                "{rows}x{cols} matrix needs {expected} words per plane, got plus={} minus={}",
                plus.len(),
                minus.len()
            )));
        }
        scales.validate(rows, cols)?;
        let tail_mask = padding_masks(cols);
        for r in 0..rows {
            let base = r * wpr;
            for w in 0..wpr {
                let (p, m) = (plus[base + w], minus[base + w]);
                let both = p & m;
                if both != 0 {
                    let col = w * WORD_BITS + both.trailing_zeros() as usize;
                    if col < cols {
                        return Err(TernaryError::BothPlanesSet { row: r, col });
                    }
                }
                if (p | m) & tail_mask[w] != 0 {
                    return Err(TernaryError::PaddingBitSet { row: r, word: w });
                }
            }
        }
        Ok(Self {
            rows,
            cols,
            plus,
            minus,
            scales,
        })
    }

    /// Builds a matrix from row-major trits (`rows · cols` values in `{-1, 0, +1}`).
    pub fn from_trits(rows: usize, cols: usize, trits: &[i8], scales: Scales) -> Result<Self> {
        if trits.len() != rows * cols {
            return Err(TernaryError::shape(format!(
                "{rows}x{cols} matrix needs {} trits, got {}",
                rows * cols,
                trits.len()
            )));
        }
        scales.validate(rows, cols)?;
        let wpr = words_per_row(cols);
        let mut plus = vec![0u32; rows * wpr];
        let mut minus = vec![0u32; rows * wpr];
        for (r, row) in trits.chunks_exact(cols.max(1)).enumerate().take(rows) {
            for (c, &t) in row.iter().enumerate() {
                let word = r * wpr + c / WORD_BITS;
                let bit = 1u32 << (c % WORD_BITS);
                match t {
                    1 => plus[word] |= bit,
                    -1 => minus[word] |= bit,
                    0 => {}
                    other => return Err(TernaryError::InvalidTrit(other.into())),
                }
            }
        }
        Ok(Self {
            rows,
            cols,
            plus,
            minus,
            scales,
        })
    }

    /// An all-zero matrix with the given scales.
    pub fn zeros(rows: usize, cols: usize, scales: Scales) -> Result<Self> {
        let n = rows * words_per_row(cols);
        Self::from_planes(rows, cols, vec![0; n], vec![0; n], scales)
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

    /// `u32` words per row of each plane (even; `2 · ⌈cols / 64⌉`).
    #[inline]
    pub fn words_per_row(&self) -> usize {
        words_per_row(self.cols)
    }

    /// The `+1` plane, row-major, `rows · words_per_row` words.
    #[inline]
    pub fn plus(&self) -> &[u32] {
        &self.plus
    }

    /// The `-1` plane, row-major, `rows · words_per_row` words.
    #[inline]
    pub fn minus(&self) -> &[u32] {
        &self.minus
    }

    /// The `+1` and `-1` words of row `r`.
    ///
    /// # Panics
    /// If `r >= rows`.
    #[inline]
    pub fn row_planes(&self, r: usize) -> (&[u32], &[u32]) {
        let wpr = self.words_per_row();
        let range = r * wpr..(r + 1) * wpr;
        (&self.plus[range.clone()], &self.minus[range])
    }

    /// The scales.
    #[inline]
    pub fn scales(&self) -> &Scales {
        &self.scales
    }

    /// Replaces the scales (validated against the shape).
    pub fn set_scales(&mut self, scales: Scales) -> Result<()> {
        scales.validate(self.rows, self.cols)?;
        self.scales = scales;
        Ok(())
    }

    /// Scale of weight `(r, c)`; the caller guarantees the index is in bounds.
    #[inline]
    pub fn scale_at(&self, r: usize, c: usize) -> f32 {
        let layout = self.scales.layout;
        let g = match layout {
            ScaleLayout::PerRow => 0,
            ScaleLayout::PerGroup { group_size } => c / group_size,
        };
        self.scales.values[r * layout.groups_per_row(self.cols) + g]
    }

    /// A matrix from parts known to be valid (made from a valid matrix by an exact
    /// transformation), without [`TernaryMatrix::from_planes`]'s checks.
    pub(crate) fn from_valid_parts(
        rows: usize,
        cols: usize,
        plus: Vec<u32>,
        minus: Vec<u32>,
        scales: Scales,
    ) -> Self {
        debug_assert_eq!(plus.len(), rows * words_per_row(cols));
        debug_assert_eq!(minus.len(), plus.len());
        debug_assert!(scales.validate(rows, cols).is_ok());
        debug_assert!(plus.iter().zip(&minus).all(|(p, m)| p & m == 0));
        Self {
            rows,
            cols,
            plus,
            minus,
            scales,
        }
    }

    /// Consumes the matrix into `(plus, minus, scales)`.
    pub fn into_parts(self) -> (Vec<u32>, Vec<u32>, Scales) {
        (self.plus, self.minus, self.scales)
    }

    #[inline]
    fn locate(&self, r: usize, c: usize) -> Result<(usize, u32)> {
        if r >= self.rows || c >= self.cols {
            return Err(TernaryError::OutOfBounds {
                row: r,
                col: c,
                rows: self.rows,
                cols: self.cols,
            });
        }
        Ok((
            r * self.words_per_row() + c / WORD_BITS,
            1u32 << (c % WORD_BITS),
        ))
    }

    /// The trit at `(r, c)`: `+1` if the plus bit is set, `-1` if the minus bit is, else `0`. O(1).
    #[inline]
    pub fn get(&self, r: usize, c: usize) -> Result<i8> {
        let (w, bit) = self.locate(r, c)?;
        Ok(i8::from(self.plus[w] & bit != 0) - i8::from(self.minus[w] & bit != 0))
    }

    /// Sets the trit at `(r, c)` in O(1): clears the bit in both planes, then sets it in the
    /// plane of `t` (so `plus & minus == 0` holds after every edit). Returns the old trit.
    #[inline]
    pub fn set(&mut self, r: usize, c: usize, t: i8) -> Result<i8> {
        let (w, bit) = self.locate(r, c)?;
        let (p, m) = match t {
            1 => (bit, 0),
            -1 => (0, bit),
            0 => (0, 0),
            other => return Err(TernaryError::InvalidTrit(other.into())),
        };
        let old = i8::from(self.plus[w] & bit != 0) - i8::from(self.minus[w] & bit != 0);
        self.plus[w] = (self.plus[w] & !bit) | p;
        self.minus[w] = (self.minus[w] & !bit) | m;
        Ok(old)
    }

    /// All trits, row-major (`rows · cols` values).
    pub fn to_trits(&self) -> Vec<i8> {
        let wpr = self.words_per_row();
        let mut out = Vec::with_capacity(self.rows * self.cols);
        for r in 0..self.rows {
            for c in 0..self.cols {
                let w = r * wpr + c / WORD_BITS;
                let bit = 1u32 << (c % WORD_BITS);
                out.push(i8::from(self.plus[w] & bit != 0) - i8::from(self.minus[w] & bit != 0));
            }
        }
        out
    }

    /// Dense `f32` weights, row-major: `w[r, c] = s[r, g(c)] · t[r, c]` (the float fallback path).
    pub fn dequantize(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        self.dequantize_into(&mut out);
        out
    }

    /// Writes the dense weights into `out` (`rows · cols` values).
    ///
    /// # Panics
    /// If `out.len() != rows · cols`.
    pub fn dequantize_into(&self, out: &mut [f32]) {
        assert_eq!(
            out.len(),
            self.rows * self.cols,
            "dequantize_into: wrong length"
        );
        let wpr = self.words_per_row();
        for (r, row) in out
            .chunks_exact_mut(self.cols.max(1))
            .enumerate()
            .take(self.rows)
        {
            for (c, o) in row.iter_mut().enumerate() {
                let w = r * wpr + c / WORD_BITS;
                let bit = 1u32 << (c % WORD_BITS);
                let t = f32::from(
                    i8::from(self.plus[w] & bit != 0) - i8::from(self.minus[w] & bit != 0),
                );
                *o = t * self.scale_at(r, c);
            }
        }
    }

    /// Number of non-zero weights (`Σ popc(plus) + popc(minus)`).
    pub fn nnz(&self) -> usize {
        self.plus
            .iter()
            .chain(&self.minus)
            .map(|w| w.count_ones() as usize)
            .sum()
    }

    /// Fraction of weights that are zero (`0` for an empty matrix).
    pub fn zero_fraction(&self) -> f64 {
        let total = self.rows * self.cols;
        if total == 0 {
            0.0
        } else {
            1.0 - self.nnz() as f64 / total as f64
        }
    }

    /// Bytes of the in-memory planes plus scales.
    pub fn storage_bytes(&self) -> usize {
        (self.plus.len() + self.minus.len()) * 4 + self.scales.values.len() * 4
    }

    /// Bits per weight of the in-memory form (planes with row padding, plus scales).
    pub fn bits_per_weight(&self) -> f64 {
        let total = self.rows * self.cols;
        if total == 0 {
            0.0
        } else {
            self.storage_bytes() as f64 * 8.0 / total as f64
        }
    }
}

/// Per-word masks of the padding bits of a row of `cols` columns.
fn padding_masks(cols: usize) -> Vec<u32> {
    (0..words_per_row(cols))
        .map(|w| {
            let start = w * WORD_BITS;
            if start >= cols {
                u32::MAX
            } else if start + WORD_BITS <= cols {
                0
            } else {
                u32::MAX << (cols - start)
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_per_row_pads_to_64() {
        assert_eq!(words_per_row(0), 0);
        assert_eq!(words_per_row(1), 2);
        assert_eq!(words_per_row(64), 2);
        assert_eq!(words_per_row(65), 4);
        assert_eq!(words_per_row(576), 18);
    }

    #[test]
    fn both_planes_set_is_rejected() {
        let err = TernaryMatrix::from_planes(
            1,
            40,
            vec![0, 0b100],
            vec![0, 0b110],
            Scales::per_row(vec![1.0]),
        )
        .unwrap_err();
        assert!(
            matches!(err, TernaryError::BothPlanesSet { row: 0, col: 34 }),
            "{err}"
        );
    }

    #[test]
    fn padding_bit_is_rejected() {
        let err = TernaryMatrix::from_planes(
            1,
            33,
            vec![0, 0b10],
            vec![0, 0],
            Scales::per_row(vec![1.0]),
        )
        .unwrap_err();
        assert!(
            matches!(err, TernaryError::PaddingBitSet { row: 0, word: 1 }),
            "{err}"
        );
        let err = TernaryMatrix::from_planes(
            1,
            33,
            vec![0, 0, 0, 0],
            vec![0, 0, 0, 0],
            Scales::per_row(vec![1.0]),
        )
        .unwrap_err();
        assert!(matches!(err, TernaryError::Shape(_)), "{err}");
    }

    #[test]
    fn bad_scales_are_rejected() {
        let e = TernaryMatrix::zeros(2, 64, Scales::per_row(vec![1.0])).unwrap_err();
        assert!(matches!(e, TernaryError::Shape(_)));
        let e = TernaryMatrix::zeros(2, 64, Scales::per_row(vec![1.0, f32::NAN])).unwrap_err();
        assert!(matches!(e, TernaryError::NonFinite { index: 1, .. }));
        let e = TernaryMatrix::zeros(2, 64, Scales::per_group(48, vec![1.0; 4])).unwrap_err();
        assert!(matches!(e, TernaryError::Config(_)));
        // 100 columns in groups of 64: two groups per row.
        TernaryMatrix::zeros(2, 100, Scales::per_group(64, vec![1.0; 4])).unwrap();
    }

    #[test]
    fn get_set_round_trip_and_keep_invariants() {
        let mut m = TernaryMatrix::zeros(3, 65, Scales::per_row(vec![1.0; 3])).unwrap();
        assert_eq!(m.set(1, 64, 1).unwrap(), 0);
        assert_eq!(m.get(1, 64).unwrap(), 1);
        assert_eq!(m.set(1, 64, -1).unwrap(), 1);
        assert_eq!(m.get(1, 64).unwrap(), -1);
        assert_eq!(m.nnz(), 1);
        assert!(m.set(3, 0, 1).is_err());
        assert!(m.set(0, 65, 1).is_err());
        assert!(matches!(m.set(0, 0, 2), Err(TernaryError::InvalidTrit(2))));
        let (p, mi, s) = m.clone().into_parts();
        assert_eq!(TernaryMatrix::from_planes(3, 65, p, mi, s).unwrap(), m);
    }

    #[test]
    fn dequantize_uses_group_scales() {
        let trits: Vec<i8> = (0..2 * 70).map(|i| [1i8, 0, -1][i % 3]).collect();
        let scales = Scales::per_group(32, (0..6).map(|i| i as f32 + 1.0).collect());
        let m = TernaryMatrix::from_trits(2, 70, &trits, scales).unwrap();
        let d = m.dequantize();
        for r in 0..2 {
            for c in 0..70 {
                let expected = f32::from(trits[r * 70 + c]) * (r * 3 + c / 32 + 1) as f32;
                assert_eq!(d[r * 70 + c], expected);
            }
        }
        assert_eq!(m.to_trits(), trits);
    }

    #[test]
    fn empty_shapes_work() {
        let m = TernaryMatrix::zeros(0, 10, Scales::per_row(vec![])).unwrap();
        assert!(m.dequantize().is_empty());
        let m = TernaryMatrix::from_trits(3, 0, &[], Scales::per_row(vec![1.0; 3])).unwrap();
        assert_eq!(m.words_per_row(), 0);
        assert!(m.to_trits().is_empty());
        assert_eq!(m.zero_fraction(), 0.0);
    }
}
