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
//! `F32`, `F16` and `BF16` are plain little-endian arrays. The 256-weight K-quants
//! (`Q4_K`, `Q5_K`, `Q6_K`, `Q8_K`) are in [`kquants`]; the ternary types (`TQ1_0`, `TQ2_0`
//! and bitnet.cpp's `I2_S`), which also decode straight into a [`TernaryMatrix`](ternary_core::TernaryMatrix) with
//! [`decode_ternary`] and encode with [`encode_ternary`], are in [`ternary`].

pub mod kquants;
pub mod ternary;

use crate::error::{ModelError, Result};
use half::{bf16, f16};

pub use ternary::{
    decode_ternary, encode_q8_0_exact, encode_ternary, select_rows, with_f16_scales,
};

/// Weights per quantization block of the 32-wide formats.
pub const QK: usize = 32;
/// Weights per block of the K-quants and of `TQ1_0` / `TQ2_0` (ggml's `QK_K`).
pub const QK_K: usize = 256;

/// A GGML tensor type, as numbered in the GGUF format (`ggml_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[allow(non_camel_case_types)] // GGML's own names (`Q4_K`, `I2_S`)
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
    /// 4-bit K-quant, 144-byte super-blocks of 256 (`ggml_type` 12).
    Q4_K,
    /// 5-bit K-quant, 176-byte super-blocks of 256 (`ggml_type` 13).
    Q5_K,
    /// 6-bit K-quant, 210-byte super-blocks of 256 (`ggml_type` 14).
    Q6_K,
    /// 8-bit K-quant with an f32 scale, 292-byte blocks of 256 (`ggml_type` 15).
    Q8_K,
    /// bfloat16 (`ggml_type` 30).
    BF16,
    /// Ternary, base-3 packed (1.6875 bits/weight), 54-byte blocks of 256 (`ggml_type` 34).
    TQ1_0,
    /// Ternary, 2 bits/weight, 66-byte blocks of 256 (`ggml_type` 35).
    TQ2_0,
    /// bitnet.cpp's ternary type (`ggml_type` 36 in its ggml fork; not in mainline ggml):
    /// 2 bits/weight in 128-weight blocks plus one f32 scale per tensor, see [`ternary`].
    I2_S,
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
            12 => Self::Q4_K,
            13 => Self::Q5_K,
            14 => Self::Q6_K,
            15 => Self::Q8_K,
            30 => Self::BF16,
            34 => Self::TQ1_0,
            35 => Self::TQ2_0,
            36 => Self::I2_S,
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
            Self::Q4_K => 12,
            Self::Q5_K => 13,
            Self::Q6_K => 14,
            Self::Q8_K => 15,
            Self::BF16 => 30,
            Self::TQ1_0 => 34,
            Self::TQ2_0 => 35,
            Self::I2_S => 36,
            Self::Other(id) => id,
        }
    }

    /// `(weights per block, bytes per block)`, or `None` for a type this crate cannot decode.
    ///
    /// `I2_S` is `(128, 32)`; its tensors also carry a 32-byte tail (see [`Self::byte_size`]).
    pub fn block_layout(self) -> Option<(usize, usize)> {
        match self {
            Self::F32 => Some((1, 4)),
            Self::F16 | Self::BF16 => Some((1, 2)),
            Self::Q4_0 => Some((QK, 18)),
            Self::Q4_1 => Some((QK, 20)),
            Self::Q8_0 => Some((QK, 34)),
            Self::Q4_K => Some((QK_K, kquants::BlockQ4K::BYTES)),
            Self::Q5_K => Some((QK_K, kquants::BlockQ5K::BYTES)),
            Self::Q6_K => Some((QK_K, kquants::BlockQ6K::BYTES)),
            Self::Q8_K => Some((QK_K, kquants::BlockQ8K::BYTES)),
            Self::TQ1_0 => Some((QK_K, ternary::BlockTq1_0::BYTES)),
            Self::TQ2_0 => Some((QK_K, ternary::BlockTq2_0::BYTES)),
            Self::I2_S => Some((ternary::I2S_BLOCK, ternary::I2S_BLOCK / 4)),
            Self::Other(_) => None,
        }
    }

    /// Bytes that `n` weights take, or `None` when `n` is not a whole number of blocks, the
    /// type is unsupported, or the size overflows.
    ///
    /// `I2_S` takes `n/4 + 32` bytes: the packed trits, then a 32-byte tail whose first four
    /// bytes are the tensor's f32 scale (bitnet.cpp's `ggml_nbytes`, see [`ternary`]).
    pub fn byte_size(self, n: usize) -> Option<usize> {
        let (block, bytes) = self.block_layout()?;
        if !n.is_multiple_of(block) {
            return None;
        }
        let packed = (n / block).checked_mul(bytes)?;
        if self == Self::I2_S {
            packed.checked_add(ternary::I2S_TAIL)
        } else {
            Some(packed)
        }
    }

    /// Whether the type stores ternary weights ([`decode_ternary`] reads it).
    pub fn is_ternary(self) -> bool {
        matches!(self, Self::TQ1_0 | Self::TQ2_0 | Self::I2_S)
    }

    /// The name GGML uses for the type (`"Q4_1"`, or `"type 12"` for unknown ones).
    pub fn name(self) -> String {
        match self {
            Self::F32 => "F32".into(),
            Self::F16 => "F16".into(),
            Self::Q4_0 => "Q4_0".into(),
            Self::Q4_1 => "Q4_1".into(),
            Self::Q8_0 => "Q8_0".into(),
            Self::Q4_K => "Q4_K".into(),
            Self::Q5_K => "Q5_K".into(),
            Self::Q6_K => "Q6_K".into(),
            Self::Q8_K => "Q8_K".into(),
            Self::BF16 => "BF16".into(),
            Self::TQ1_0 => "TQ1_0".into(),
            Self::TQ2_0 => "TQ2_0".into(),
            Self::I2_S => "I2_S".into(),
            Self::Other(id) => format!("ggml type {id}"),
        }
    }
}

/// One block format: its size, how to parse a block, and its weights in f32.
pub trait BlockFormat: Sized {
    /// Bytes per block.
    const BYTES: usize;
    /// Parses one block; `b` holds exactly [`Self::BYTES`] bytes.
    fn parse(b: &[u8]) -> Self;
    /// Appends the block's weights, in order, to `out`.
    fn to_float(&self, out: &mut Vec<f32>);
}

pub(crate) fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// Whether every value survives `f32 → f16 → f32` bit for bit.
pub fn is_f16_exact(values: &[f32]) -> bool {
    values
        .iter()
        .all(|&v| f16::from_f32(v).to_f32().to_bits() == v.to_bits())
}

/// Encodes f32 values as a plain `F32`, `F16` (round to nearest even) or `BF16` array.
pub fn encode_float(kind: GgmlType, values: &[f32]) -> Result<Vec<u8>> {
    Ok(match kind {
        GgmlType::F32 => values.iter().flat_map(|v| v.to_le_bytes()).collect(),
        GgmlType::F16 => values
            .iter()
            .flat_map(|&v| f16::from_f32(v).to_bits().to_le_bytes())
            .collect(),
        GgmlType::BF16 => values
            .iter()
            .flat_map(|&v| bf16::from_f32(v).to_bits().to_le_bytes())
            .collect(),
        other => {
            return Err(ModelError::Input(format!(
                "encode_float: {} is not a plain float type",
                other.name()
            )));
        }
    })
}

/// Dequantizes `n` weights of type `kind` from `bytes` into f32, exactly as ggml's
/// `dequantize_row_*` (and gguf-py's `gguf.quants.dequantize`) compute them.
///
/// `bytes` must hold exactly [`GgmlType::byte_size`]`(n)` bytes; `name` is only used in errors.
/// `I2_S` is read through [`decode_ternary`] (rows of `n` weights), so a 2-bit code 3 is an
/// error there; `TQ2_0` code 3 dequantizes to `2·d` as in ggml.
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
        GgmlType::Q4_K => kquants::dequantize::<kquants::BlockQ4K>(bytes, &mut out),
        GgmlType::Q5_K => kquants::dequantize::<kquants::BlockQ5K>(bytes, &mut out),
        GgmlType::Q6_K => kquants::dequantize::<kquants::BlockQ6K>(bytes, &mut out),
        GgmlType::Q8_K => kquants::dequantize::<kquants::BlockQ8K>(bytes, &mut out),
        GgmlType::TQ1_0 => ternary::dequantize_tq::<ternary::BlockTq1_0>(bytes, &mut out),
        GgmlType::TQ2_0 => ternary::dequantize_tq::<ternary::BlockTq2_0>(bytes, &mut out),
        GgmlType::I2_S if n == 0 => {}
        GgmlType::I2_S => {
            let m = decode_ternary(kind, bytes, 1, n).map_err(|e| match e {
                ModelError::Gguf(m) => ModelError::Gguf(format!("tensor '{name}': {m}")),
                other => other,
            })?;
            out = m.dequantize();
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
        let err = dequantize("blk.0.x", GgmlType::Other(16), &b, 32).unwrap_err();
        assert!(err.to_string().contains("blk.0.x"), "{err}");
    }

    #[test]
    fn type_ids_should_round_trip() {
        for id in 0..40 {
            assert_eq!(GgmlType::from_id(id).id(), id);
        }
    }
}
