//! Dense base-3 storage: 5 trits per byte, 1.6 bits per weight (plus row padding).
//!
//! Row `r` of a `rows × cols` matrix occupies `bytes_per_row = ⌈cols / 5⌉` bytes starting at
//! byte `r · bytes_per_row` (every row starts on a byte boundary, so rows can be read at random).
//! Byte `j` of a row holds columns `5j .. 5j + 5`:
//!
//! `byte = Σ_{i<5} (t[r, 5j + i] + 1) · 3^i`, so `byte ∈ 0 ..= 242` (`3^5 − 1`).
//!
//! Columns `≥ cols` in the last byte of a row are padding trits and must be `0` (digit `1`);
//! an all-zero group of 5 is byte `121`. Storage costs `8 · ⌈cols / 5⌉ / cols` bits per weight:
//! exactly 1.6 when `5 | cols`, below `1.6 + 8 / cols` otherwise. Scales are kept as they are.
//!
//! Decoding uses a 256-entry table from a byte to the 5-bit `+1` and `−1` masks of its trits;
//! encoding uses `byte = 121 + P(plus5) − P(minus5)` with `P(m) = Σ_{i ∈ m} 3^i` (a 32-entry
//! table), reading 5 bits at a time from the `u32` plane words.

use rayon::prelude::*;

use crate::error::{Result, TernaryError, check_finite};
use crate::matrix::{ScaleLayout, Scales, TernaryMatrix, words_per_row};

/// Trits stored per byte.
pub const TRITS_PER_BYTE: usize = 5;
/// The largest valid packed byte, `3^5 − 1`.
pub const MAX_PACKED_BYTE: u8 = 242;
/// The byte of five zero trits, `Σ_{i<5} 3^i`.
pub const ZERO_BYTE: u8 = 121;

/// Matrices with at least this many weights are packed/unpacked with rayon, row-parallel.
const PARALLEL_MIN_WEIGHTS: usize = 1 << 18;

/// Bytes per packed row: `⌈cols / 5⌉`.
#[inline]
pub const fn bytes_per_row(cols: usize) -> usize {
    cols.div_ceil(TRITS_PER_BYTE)
}

/// Flag in [`DECODE`] marking a byte above [`MAX_PACKED_BYTE`].
const INVALID: u16 = 1 << 15;

/// `DECODE[b]` = `plus5 | minus5 << 5`, the masks of the `+1` and `−1` trits of byte `b`
/// (bit `i` ↔ trit `i`), or [`INVALID`] for `b > 242`.
static DECODE: [u16; 256] = build_decode();

/// `POW3_SUM[m] = Σ_{i: bit i of m set} 3^i` for 5-bit masks `m`.
static POW3_SUM: [u8; 32] = build_pow3_sum();

const fn build_decode() -> [u16; 256] {
    let mut table = [INVALID; 256];
    let mut b = 0;
    while b <= MAX_PACKED_BYTE as usize {
        let (mut v, mut plus, mut minus, mut i) = (b, 0u16, 0u16, 0);
        while i < TRITS_PER_BYTE {
            match v % 3 {
                0 => minus |= 1 << i,
                2 => plus |= 1 << i,
                _ => {}
            }
            v /= 3;
            i += 1;
        }
        table[b] = plus | (minus << 5);
        b += 1;
    }
    table
}

const fn build_pow3_sum() -> [u8; 32] {
    let mut table = [0u8; 32];
    let mut m = 0;
    while m < 32 {
        let (mut sum, mut p, mut i) = (0u32, 1u32, 0);
        while i < TRITS_PER_BYTE {
            if m & (1 << i) != 0 {
                sum += p;
            }
            p *= 3;
            i += 1;
        }
        table[m] = sum as u8;
        m += 1;
    }
    table
}

/// A ternary matrix in base-3 storage (see the [module docs](self)).
///
/// Invariants (checked by [`PackedTernary::from_parts`], guaranteed by [`pack`]):
/// `bytes.len() = rows · ⌈cols / 5⌉`, every byte `≤ 242`, padding trits zero, scales finite and
/// shaped as for a [`TernaryMatrix`].
#[derive(Debug, Clone, PartialEq)]
pub struct PackedTernary {
    rows: usize,
    cols: usize,
    bytes: Vec<u8>,
    scales: Scales,
}

/// Packs a matrix into base-3 bytes (bit-exact; [`PackedTernary::unpack`] inverts it).
pub fn pack(m: &TernaryMatrix) -> PackedTernary {
    let (rows, cols) = (m.rows(), m.cols());
    let (bpr, wpr) = (bytes_per_row(cols), words_per_row(cols));
    let mut bytes = vec![0u8; rows * bpr];
    if bpr > 0 {
        let (plus, minus) = (m.plus(), m.minus());
        let row = |(r, out): (usize, &mut [u8])| {
            let range = r * wpr..(r + 1) * wpr;
            pack_row(&plus[range.clone()], &minus[range], out);
        };
        if rows * cols >= PARALLEL_MIN_WEIGHTS {
            bytes.par_chunks_mut(bpr).enumerate().for_each(row);
        } else {
            bytes.chunks_mut(bpr).enumerate().for_each(row);
        }
    }
    PackedTernary {
        rows,
        cols,
        bytes,
        scales: m.scales().clone(),
    }
}

/// Encodes one row: 5 bits of each plane at a time through a 64-bit bit buffer.
///
/// Bits beyond the row's words read as zero (they are padding, so zero trits).
#[inline]
fn pack_row(plus: &[u32], minus: &[u32], out: &mut [u8]) {
    let (mut acc_p, mut acc_m, mut nbits, mut wi) = (0u64, 0u64, 0u32, 0usize);
    for o in out {
        if nbits < TRITS_PER_BYTE as u32 {
            let (p, m) = match (plus.get(wi), minus.get(wi)) {
                (Some(&p), Some(&m)) => (p, m),
                _ => (0, 0),
            };
            acc_p |= u64::from(p) << nbits;
            acc_m |= u64::from(m) << nbits;
            nbits += 32;
            wi += 1;
        }
        // `plus & minus == 0`, so each digit is 1 + p_i − m_i ∈ {0, 1, 2}.
        *o = ZERO_BYTE + POW3_SUM[(acc_p & 31) as usize] - POW3_SUM[(acc_m & 31) as usize];
        acc_p >>= TRITS_PER_BYTE;
        acc_m >>= TRITS_PER_BYTE;
        nbits -= TRITS_PER_BYTE as u32;
    }
}

/// Decodes one validated row into its plane words (`plus`, `minus` are zeroed on entry).
#[inline]
fn unpack_row(bytes: &[u8], plus: &mut [u32], minus: &mut [u32]) {
    let (mut acc_p, mut acc_m, mut nbits, mut wi) = (0u64, 0u64, 0u32, 0usize);
    for &b in bytes {
        let e = DECODE[usize::from(b)];
        acc_p |= u64::from(e & 31) << nbits;
        acc_m |= u64::from((e >> 5) & 31) << nbits;
        nbits += TRITS_PER_BYTE as u32;
        if nbits >= 32 {
            if let (Some(p), Some(m)) = (plus.get_mut(wi), minus.get_mut(wi)) {
                *p = acc_p as u32;
                *m = acc_m as u32;
            }
            acc_p >>= 32;
            acc_m >>= 32;
            nbits -= 32;
            wi += 1;
        }
    }
    if nbits > 0
        && let (Some(p), Some(m)) = (plus.get_mut(wi), minus.get_mut(wi))
    {
        *p = acc_p as u32;
        *m = acc_m as u32;
    }
}

/// Checks the scale count and values for a `rows × cols` matrix.
fn validate_scales(rows: usize, cols: usize, scales: &Scales) -> Result<()> {
    let layout = scales.layout();
    layout.validate()?;
    let expected = rows
        .checked_mul(layout.groups_per_row(cols))
        .ok_or_else(|| TernaryError::Shape(format!("{rows}x{cols} overflows usize")))?;
    if scales.values().len() != expected {
        return Err(TernaryError::Shape(format!(
            "{rows}x{cols} matrix with {layout:?} scales needs {expected} scales, got {}",
            scales.values().len()
        )));
    }
    check_finite("scales", scales.values())
}

fn packed_error(reason: String) -> TernaryError {
    TernaryError::Format { path: None, reason }
}

impl PackedTernary {
    /// Builds packed storage from its parts, validating every invariant: `bytes.len() =
    /// rows · ⌈cols / 5⌉`, every byte `≤ 242`, padding trits zero, scales well-formed and finite.
    ///
    /// An invalid byte or padding trit gives [`TernaryError::Format`] naming the row and byte.
    pub fn from_parts(rows: usize, cols: usize, bytes: Vec<u8>, scales: Scales) -> Result<Self> {
        let bpr = bytes_per_row(cols);
        let expected = rows
            .checked_mul(bpr)
            .ok_or_else(|| TernaryError::Shape(format!("{rows}x{cols} overflows usize")))?;
        if bytes.len() != expected {
            return Err(TernaryError::Shape(format!(
                "packed {rows}x{cols} matrix needs {expected} bytes ({bpr} per row), got {}",
                bytes.len()
            )));
        }
        validate_scales(rows, cols, &scales)?;
        if bytes.iter().copied().max().unwrap_or(0) > MAX_PACKED_BYTE
            && let Some(i) = bytes.iter().position(|&b| b > MAX_PACKED_BYTE)
        {
            return Err(packed_error(format!(
                "packed row {}, byte {}: value {} exceeds {MAX_PACKED_BYTE} (not 5 base-3 digits)",
                i / bpr,
                i % bpr,
                bytes[i]
            )));
        }
        // Trits of the last byte of each row at columns >= cols must be zero.
        let used = cols - (bpr.saturating_sub(1)) * TRITS_PER_BYTE;
        if bpr > 0 && used < TRITS_PER_BYTE {
            for r in 0..rows {
                let b = bytes[r * bpr + bpr - 1];
                let e = DECODE[usize::from(b)];
                let nonzero = (e | (e >> 5)) & 31;
                if nonzero >> used != 0 {
                    return Err(packed_error(format!(
                        "packed row {r}, byte {}: value {b} has a non-zero padding trit \
                         (only its first {used} trits are columns)",
                        bpr - 1
                    )));
                }
            }
        }
        Ok(Self {
            rows,
            cols,
            bytes,
            scales,
        })
    }

    /// Decodes back to the bit-sliced form (bit-exact inverse of [`pack`]).
    ///
    /// The result goes through [`TernaryMatrix::from_planes`], whose checks cannot fail on a
    /// validated `PackedTernary`.
    pub fn unpack(&self) -> Result<TernaryMatrix> {
        let (rows, cols) = (self.rows, self.cols);
        let (bpr, wpr) = (bytes_per_row(cols), words_per_row(cols));
        let n = rows
            .checked_mul(wpr)
            .ok_or_else(|| TernaryError::Shape(format!("{rows}x{cols} overflows usize")))?;
        let mut plus = vec![0u32; n];
        let mut minus = vec![0u32; n];
        if bpr > 0 {
            let bytes = &self.bytes;
            let row = |(r, (p, m)): (usize, (&mut [u32], &mut [u32]))| {
                unpack_row(&bytes[r * bpr..(r + 1) * bpr], p, m);
            };
            if rows * cols >= PARALLEL_MIN_WEIGHTS {
                plus.par_chunks_mut(wpr)
                    .zip(minus.par_chunks_mut(wpr))
                    .enumerate()
                    .for_each(row);
            } else {
                plus.chunks_mut(wpr)
                    .zip(minus.chunks_mut(wpr))
                    .enumerate()
                    .for_each(row);
            }
        }
        TernaryMatrix::from_planes(rows, cols, plus, minus, self.scales.clone())
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

    /// Bytes per row, `⌈cols / 5⌉`.
    #[inline]
    pub fn bytes_per_row(&self) -> usize {
        bytes_per_row(self.cols)
    }

    /// All packed bytes, row-major (`rows · ⌈cols / 5⌉`).
    #[inline]
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The packed bytes of row `r`.
    ///
    /// # Panics
    /// If `r >= rows`.
    #[inline]
    pub fn row_bytes(&self, r: usize) -> &[u8] {
        let bpr = self.bytes_per_row();
        &self.bytes[r * bpr..(r + 1) * bpr]
    }

    /// The scales (unchanged by packing).
    #[inline]
    pub fn scales(&self) -> &Scales {
        &self.scales
    }

    /// The trit at `(r, c)`: digit `⌊byte / 3^(c mod 5)⌋ mod 3` of byte `c / 5` of row `r`,
    /// minus 1. O(1).
    pub fn get(&self, r: usize, c: usize) -> Result<i8> {
        if r >= self.rows || c >= self.cols {
            return Err(TernaryError::OutOfBounds {
                row: r,
                col: c,
                rows: self.rows,
                cols: self.cols,
            });
        }
        let b = self.bytes[r * self.bytes_per_row() + c / TRITS_PER_BYTE];
        let e = DECODE[usize::from(b)];
        let bit = 1u16 << (c % TRITS_PER_BYTE);
        Ok(i8::from(e & bit != 0) - i8::from((e >> 5) & bit != 0))
    }

    /// Consumes the storage into `(bytes, scales)`.
    pub fn into_parts(self) -> (Vec<u8>, Scales) {
        (self.bytes, self.scales)
    }

    /// Bits per weight of the packed trits alone: `8 · ⌈cols / 5⌉ / cols` (`0` if empty).
    pub fn bits_per_weight(&self) -> f64 {
        let total = self.rows * self.cols;
        if total == 0 {
            0.0
        } else {
            self.bytes.len() as f64 * 8.0 / total as f64
        }
    }

    /// Bytes of the packed trits plus the `f32` scales.
    pub fn storage_bytes(&self) -> usize {
        self.bytes.len() + self.scales.values().len() * 4
    }

    /// Bits per weight including the scales, `8 · storage_bytes / (rows · cols)` (`0` if empty).
    pub fn total_bits_per_weight(&self) -> f64 {
        let total = self.rows * self.cols;
        if total == 0 {
            0.0
        } else {
            self.storage_bytes() as f64 * 8.0 / total as f64
        }
    }

    /// The scale layout.
    #[inline]
    pub fn scale_layout(&self) -> ScaleLayout {
        self.scales.layout()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_match_the_formula() {
        for (b, &e) in DECODE.iter().enumerate() {
            if b > 242 {
                assert_eq!(e, INVALID);
                continue;
            }
            let mut v = 0usize;
            for i in (0..5).rev() {
                let t = i32::from(e >> i & 1 != 0) - i32::from(e >> (5 + i) & 1 != 0);
                v = v * 3 + (t + 1) as usize;
            }
            assert_eq!(v, b);
        }
        assert_eq!(POW3_SUM[0b11111], 121);
        assert_eq!(POW3_SUM[0b10010], 3 + 81);
    }

    #[test]
    fn one_byte_encodes_documented_example() {
        // Trits (+1, 0, -1, -1, +1): 2·1 + 1·3 + 0·9 + 0·27 + 2·81 = 167.
        let m = TernaryMatrix::from_trits(1, 5, &[1, 0, -1, -1, 1], Scales::per_row(vec![1.0]))
            .unwrap();
        let p = pack(&m);
        assert_eq!(p.bytes(), &[167]);
        assert_eq!(p.unpack().unwrap(), m);
    }
}
