//! Bytes and bits per weight of each weight format a kernel reads.

use ternary_core::words_per_row;

/// A stored form of a `rows × cols` weight matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WeightFormat {
    /// Bit-planes: two `u32` planes, rows padded to 64 columns, plus `f32` scales:
    /// `8 · words_per_row(cols) · rows + 4 · scales` bytes (2 bits per weight + scales).
    Planes,
    /// Base-3, 5 trits per byte: `rows · ⌈cols / 5⌉ + 4 · scales` bytes (1.6 bits + scales).
    Packed,
    /// Dense half precision: `2 · rows · cols` bytes.
    F16,
    /// Dense single precision: `4 · rows · cols` bytes.
    F32,
}

impl WeightFormat {
    /// Every format, smallest first.
    pub const ALL: [WeightFormat; 4] = [Self::Packed, Self::Planes, Self::F16, Self::F32];

    /// Short name (`"planes"`, `"packed"`, `"f16"`, `"f32"`).
    pub fn name(self) -> &'static str {
        match self {
            Self::Planes => "planes",
            Self::Packed => "packed",
            Self::F16 => "f16",
            Self::F32 => "f32",
        }
    }

    /// Bytes of a `rows × cols` matrix with `scales` `f32` scales (ignored by dense formats).
    pub fn bytes(self, rows: usize, cols: usize, scales: usize) -> usize {
        match self {
            Self::Planes => 2 * 4 * rows * words_per_row(cols) + 4 * scales,
            Self::Packed => rows * cols.div_ceil(5) + 4 * scales,
            Self::F16 => 2 * rows * cols,
            Self::F32 => 4 * rows * cols,
        }
    }

    /// Bits per weight, `8 · bytes / (rows · cols)` (`0` for an empty matrix).
    pub fn bits_per_weight(self, rows: usize, cols: usize, scales: usize) -> f64 {
        let weights = rows * cols;
        if weights == 0 {
            0.0
        } else {
            8.0 * self.bytes(rows, cols, scales) as f64 / weights as f64
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::random_ternary;

    #[test]
    fn sizes_follow_the_formulas() {
        // 4096×4096, per-row scales: planes 2 + 32/4096 bits, packed 8·820/4096 + 32/4096.
        let (r, c) = (4096, 4096);
        assert_eq!(
            WeightFormat::Planes.bytes(r, c, r),
            2 * 4096 * 4096 / 8 + 4 * 4096
        );
        let bpw = WeightFormat::Planes.bits_per_weight(r, c, r);
        assert!((bpw - (2.0 + 32.0 / 4096.0)).abs() < 1e-12);
        let bpw = WeightFormat::Packed.bits_per_weight(r, c, 0);
        assert!((bpw - 8.0 * 820.0 / 4096.0).abs() < 1e-12);
        assert_eq!(WeightFormat::Packed.bits_per_weight(10, 5, 0), 1.6);
        assert_eq!(WeightFormat::F16.bits_per_weight(3, 7, 3), 16.0);
        assert_eq!(WeightFormat::F32.bits_per_weight(3, 7, 3), 32.0);
        assert_eq!(WeightFormat::F32.bits_per_weight(0, 7, 0), 0.0);
        // Padding to 64 columns counts: 65 columns take 128 bits per plane.
        assert_eq!(WeightFormat::Planes.bytes(1, 65, 0), 2 * 16);
    }

    #[test]
    fn packed_bytes_match_the_pack_module() {
        for (rows, cols) in [(3, 1), (5, 64), (7, 101), (2, 1536)] {
            let m = random_ternary(rows, cols, 2).unwrap();
            let p = ternary_core::pack::pack(&m);
            let s = m.scales().values().len();
            assert_eq!(WeightFormat::Packed.bytes(rows, cols, s), p.storage_bytes());
        }
    }

    #[test]
    fn planes_bytes_match_a_real_matrix() {
        let m = random_ternary(5, 100, 1).unwrap();
        let s = m.scales().values().len();
        assert_eq!(
            WeightFormat::Planes.bytes(5, 100, s),
            4 * (m.plus().len() + m.minus().len() + s)
        );
    }
}
