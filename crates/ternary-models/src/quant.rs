//! GGML tensor types and their exact dequantization formulas.
//!
//! Block formats (32 weights a block, little-endian, `f16` = IEEE half):
//!
//! | type   | bytes | layout                         | weight `j` (`j < 16`, `j + 16`)          |
//! |--------|-------|--------------------------------|------------------------------------------|
//! | `Q4_0` | 18    | `d: f16, qs: [u8; 16]`         | `d·((qs[j] & 15) − 8)`, `d·((qs[j] >> 4) − 8)` |
//! | `Q4_1` | 20    | `d: f16, m: f16, qs: [u8; 16]` | `d·(qs[j] & 15) + m`, `d·(qs[j] >> 4) + m` |
//! | `Q8_0` | 34    | `d: f16, qs: [i8; 32]`         | `d·qs[j]` for all 32                     |
//!
//! `F32`, `F16` and `BF16` are plain little-endian arrays.

use crate::error::{ModelError, Result};
use half::{bf16, f16};

/// Weights per quantization block of the 32-wide formats.
pub const QK: usize = 32;

/// A GGML tensor type, as numbered in the GGUF format (`ggml_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GgmlType {
    /// 32-bit float.
    F32,
    /// 16-bit IEEE float.
    F16,
    /// 4-bit, scale only (`ggml_type` 2).
    Q4_0,
    /// 4-bit, scale and minimum (`ggml_type` 3).
    Q4_1,
    /// 8-bit, scale only (`ggml_type` 8).
    Q8_0,
    /// bfloat16 (`ggml_type` 30).
    BF16,
    /// A type this crate recognises by number but cannot decode.
    Other(u32),
}

impl GgmlType {
    /// The type for a `ggml_type` id.
    pub fn from_id(id: u32) -> Self {
        match id {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            30 => Self::BF16,
            other => Self::Other(other),
        }
    }

    /// The `ggml_type` id.
    pub fn id(self) -> u32 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::Q4_0 => 2,
            Self::Q4_1 => 3,
            Self::Q8_0 => 8,
            Self::BF16 => 30,
            Self::Other(id) => id,
        }
    }

    /// `(weights per block, bytes per block)`, or `None` for a type this crate cannot decode.
    pub fn block_layout(self) -> Option<(usize, usize)> {
        match self {
            Self::F32 => Some((1, 4)),
            Self::F16 | Self::BF16 => Some((1, 2)),
            Self::Q4_0 => Some((QK, 18)),
            Self::Q4_1 => Some((QK, 20)),
            Self::Q8_0 => Some((QK, 34)),
            Self::Other(_) => None,
        }
    }

    /// Bytes that `n` weights take, or `None` when `n` is not a whole number of blocks, the
    /// type is unsupported, or the size overflows.
    pub fn byte_size(self, n: usize) -> Option<usize> {
        let (block, bytes) = self.block_layout()?;
        if !n.is_multiple_of(block) {
            return None;
        }
        (n / block).checked_mul(bytes)
    }

    /// The name GGML uses for the type (`"Q4_1"`, or `"type 12"` for unknown ones).
    pub fn name(self) -> String {
        match self {
            Self::F32 => "F32".into(),
            Self::F16 => "F16".into(),
            Self::Q4_0 => "Q4_0".into(),
            Self::Q4_1 => "Q4_1".into(),
            Self::Q8_0 => "Q8_0".into(),
            Self::BF16 => "BF16".into(),
            Self::Other(id) => format!("ggml type {id}"),
        }
    }
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Dequantizes `n` weights of type `kind` from `bytes` into f32.
///
/// `bytes` must hold exactly [`GgmlType::byte_size`]`(n)` bytes; `name` is only used in errors.
pub fn dequantize(name: &str, kind: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>> {
    let unsupported = || ModelError::UnsupportedType {
        name: name.to_string(),
        kind: kind.name(),
    };
    let (block, _) = kind.block_layout().ok_or_else(unsupported)?;
    let expected = kind.byte_size(n).ok_or_else(|| {
        ModelError::Gguf(format!(
            "tensor '{name}': {n} weights is not a whole number of {}-weight {} blocks",
            block,
            kind.name()
        ))
    })?;
    if bytes.len() != expected {
        return Err(ModelError::Gguf(format!(
            "tensor '{name}': {} holds {n} weights in {expected} bytes, found {}",
            kind.name(),
            bytes.len()
        )));
    }
    let mut out = Vec::with_capacity(n);
    match kind {
        GgmlType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(|c| f16_at(c, 0))),
        GgmlType::BF16 => out.extend(
            bytes
                .chunks_exact(2)
                .map(|c| bf16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()),
        ),
        GgmlType::Q4_0 => {
            for b in bytes.chunks_exact(18) {
                let d = f16_at(b, 0);
                let qs = &b[2..18];
                out.extend(qs.iter().map(|&q| ((q & 15) as i32 - 8) as f32 * d));
                out.extend(qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d));
            }
        }
        GgmlType::Q4_1 => {
            for b in bytes.chunks_exact(20) {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| (q & 15) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
        GgmlType::Q8_0 => {
            for b in bytes.chunks_exact(34) {
                let d = f16_at(b, 0);
                out.extend(b[2..34].iter().map(|&q| q as i8 as f32 * d));
            }
        }
        GgmlType::Other(_) => return Err(unsupported()),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_bits().to_le_bytes()
    }

    #[test]
    fn q4_0_block_should_follow_the_ggml_formula() {
        // d = 0.5; nibble pair k: low = k, high = 15 - k.
        let mut b = h(0.5).to_vec();
        b.extend((0..16u8).map(|k| k | ((15 - k) << 4)));
        let x = dequantize("t", GgmlType::Q4_0, &b, 32).unwrap();
        for k in 0..16 {
            assert_eq!(x[k], (k as f32 - 8.0) * 0.5, "low nibble {k}");
            assert_eq!(x[k + 16], ((15 - k) as f32 - 8.0) * 0.5, "high nibble {k}");
        }
    }

    #[test]
    fn q4_1_block_should_follow_the_ggml_formula() {
        // Two blocks: (d, m) = (0.25, -1.5) then (2.0, 3.0).
        let mut b = Vec::new();
        for (d, m) in [(0.25f32, -1.5f32), (2.0, 3.0)] {
            b.extend(h(d));
            b.extend(h(m));
            b.extend((0..16u8).map(|k| ((k * 7) % 16) | (((k * 3 + 1) % 16) << 4)));
        }
        let x = dequantize("t", GgmlType::Q4_1, &b, 64).unwrap();
        for (blk, (d, m)) in [(0.25f32, -1.5f32), (2.0, 3.0)].into_iter().enumerate() {
            for k in 0..16usize {
                let lo = ((k * 7) % 16) as f32;
                let hi = ((k * 3 + 1) % 16) as f32;
                assert_eq!(x[blk * 32 + k], lo * d + m);
                assert_eq!(x[blk * 32 + k + 16], hi * d + m);
            }
        }
    }

    #[test]
    fn q8_0_block_should_follow_the_ggml_formula() {
        let mut b = h(0.125).to_vec();
        let qs: Vec<i8> = (0..32).map(|k| (k * 9 - 128) as i8).collect();
        b.extend(qs.iter().map(|&q| q as u8));
        let x = dequantize("t", GgmlType::Q8_0, &b, 32).unwrap();
        for k in 0..32 {
            assert_eq!(x[k], qs[k] as f32 * 0.125);
        }
        assert_eq!(x[0], -16.0);
    }

    #[test]
    fn plain_float_types_should_round_trip() {
        let v = [1.5f32, -2.25, 0.0, 65504.0];
        let f32b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(dequantize("t", GgmlType::F32, &f32b, 4).unwrap(), v);
        let f16b: Vec<u8> = v.iter().flat_map(|&x| h(x)).collect();
        assert_eq!(dequantize("t", GgmlType::F16, &f16b, 4).unwrap(), v);
        let bf: Vec<u8> = [1.5f32, -2.25, 0.0, 256.0]
            .iter()
            .flat_map(|&x| bf16::from_f32(x).to_bits().to_le_bytes())
            .collect();
        assert_eq!(
            dequantize("t", GgmlType::BF16, &bf, 4).unwrap(),
            [1.5, -2.25, 0.0, 256.0]
        );
    }

    #[test]
    fn wrong_byte_counts_and_partial_blocks_should_be_errors() {
        let b = vec![0u8; 20];
        assert!(dequantize("t", GgmlType::Q4_1, &b[..19], 32).is_err());
        assert!(dequantize("t", GgmlType::Q4_1, &b, 31).is_err());
        assert!(dequantize("t", GgmlType::Q4_1, &b, 64).is_err());
        let err = dequantize("blk.0.x", GgmlType::Other(12), &b, 32).unwrap_err();
        assert!(err.to_string().contains("blk.0.x"), "{err}");
    }

    #[test]
    fn type_ids_should_round_trip() {
        for id in 0..40 {
            assert_eq!(GgmlType::from_id(id).id(), id);
        }
    }
}
