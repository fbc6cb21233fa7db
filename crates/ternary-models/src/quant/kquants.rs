//! The K-quants `Q4_K`, `Q5_K`, `Q6_K` and `Q8_K`: 256-weight super-blocks, dequantized
//! exactly as ggml's `dequantize_row_q{4,5,6,8}_K` (ggml/src/ggml-quants.c) and gguf-py's
//! `gguf.quants.Q{4,5,6}_K.dequantize_blocks` compute them, operation for operation in f32
//! (no fused multiply-add), so the results are bit-identical.
//!
//! | type   | bytes | layout (little-endian)                                                   |
//! |--------|-------|--------------------------------------------------------------------------|
//! | `Q4_K` | 144   | `d: f16, dmin: f16, scales: [u8; 12], qs: [u8; 128]`                     |
//! | `Q5_K` | 176   | `d: f16, dmin: f16, scales: [u8; 12], qh: [u8; 32], qs: [u8; 128]`       |
//! | `Q6_K` | 210   | `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`                  |
//! | `Q8_K` | 292   | `d: f32, qs: [i8; 256], bsums: [i16; 16]` (`bsums` unused when decoding) |
//!
//! `Q4_K`/`Q5_K`: eight 32-weight sub-blocks `s` with 6-bit scale `sc_s` and minimum `m_s`
//! ([`scale_min_k4`]); weight `w = (d·sc_s)·q − (dmin·m_s)` with `q` the low nibble of
//! `qs[32·(s/2) + l]` for even `s`, the high nibble for odd `s` (plus `16` when bit `s` of
//! `qh[l]` is set, for `Q5_K`).
//! `Q6_K`: per 128-weight half `h` and `l < 32`, the four weights `l, l+32, l+64, l+96` take
//! the low/high nibbles of `ql[64h + l]`, `ql[64h + l + 32]` and two bits each of
//! `qh[32h + l]`; `w = (d·scales[16-weight group])·(q − 32)`.
//! `Q8_K`: `w = d·qs[j]`.

use super::{BlockFormat, QK_K, f16_at};

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

/// Scale and minimum of sub-block `j < 8` from the 12 packed bytes of a `Q4_K`/`Q5_K` block
/// (ggml's `get_scale_min_k4`): `j < 4`: the low six bits of `q[j]` and `q[j + 4]`;
/// otherwise the nibbles of `q[j + 4]` with the top two bits of `q[j − 4]` and `q[j]` on top.
pub fn scale_min_k4(j: usize, q: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// A `Q4_K` super-block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockQ4K {
    /// Super-block scale of the sub-block scales.
    pub d: f32,
    /// Super-block scale of the sub-block minimums.
    pub dmin: f32,
    /// Eight 6-bit scales and eight 6-bit minimums, packed.
    pub scales: [u8; 12],
    /// 4-bit quants, two per byte.
    pub qs: [u8; 128],
}

/// A `Q5_K` super-block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockQ5K {
    /// Super-block scale of the sub-block scales.
    pub d: f32,
    /// Super-block scale of the sub-block minimums.
    pub dmin: f32,
    /// Eight 6-bit scales and eight 6-bit minimums, packed.
    pub scales: [u8; 12],
    /// The fifth bit of each quant: bit `s` of `qh[l]` for sub-block `s`, position `l`.
    pub qh: [u8; 32],
    /// Low four bits of each quant, two per byte.
    pub qs: [u8; 128],
}

/// A `Q6_K` super-block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockQ6K {
    /// Low four bits of each quant.
    pub ql: [u8; 128],
    /// High two bits of each quant.
    pub qh: [u8; 64],
    /// Signed 8-bit scale of each 16-weight group.
    pub scales: [i8; 16],
    /// Super-block scale.
    pub d: f32,
}

/// A `Q8_K` block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockQ8K {
    /// Scale (f32, not f16).
    pub d: f32,
    /// Signed 8-bit quants.
    pub qs: [i8; 256],
}

const _: () = assert!(BlockQ4K::BYTES == 2 + 2 + 12 + QK_K / 2);
const _: () = assert!(BlockQ5K::BYTES == 2 + 2 + 12 + QK_K / 8 + QK_K / 2);
const _: () = assert!(BlockQ6K::BYTES == QK_K / 2 + QK_K / 4 + QK_K / 16 + 2);
const _: () = assert!(BlockQ8K::BYTES == 4 + QK_K + 2 * (QK_K / 16));

impl BlockFormat for BlockQ4K {
    const BYTES: usize = 144;

    fn parse(b: &[u8]) -> Self {
        Self {
            d: f16_at(b, 0),
            dmin: f16_at(b, 2),
            scales: array(b, 4),
            qs: array(b, 16),
        }
    }

    fn to_float(&self, out: &mut Vec<f32>) {
        for pair in 0..4 {
            let q = &self.qs[32 * pair..32 * pair + 32];
            for (s, shift) in [(2 * pair, 0), (2 * pair + 1, 4)] {
                let (sc, m) = scale_min_k4(s, &self.scales);
                let (d, dm) = (self.d * f32::from(sc), self.dmin * f32::from(m));
                out.extend(q.iter().map(|&v| d * f32::from((v >> shift) & 0xF) - dm));
            }
        }
    }
}

impl BlockFormat for BlockQ5K {
    const BYTES: usize = 176;

    fn parse(b: &[u8]) -> Self {
        Self {
            d: f16_at(b, 0),
            dmin: f16_at(b, 2),
            scales: array(b, 4),
            qh: array(b, 16),
            qs: array(b, 48),
        }
    }

    fn to_float(&self, out: &mut Vec<f32>) {
        for pair in 0..4 {
            let q = &self.qs[32 * pair..32 * pair + 32];
            for (s, shift) in [(2 * pair, 0), (2 * pair + 1, 4)] {
                let (sc, m) = scale_min_k4(s, &self.scales);
                let (d, dm) = (self.d * f32::from(sc), self.dmin * f32::from(m));
                out.extend(q.iter().zip(&self.qh).map(|(&v, &h)| {
                    let hi = ((h >> s) & 1) << 4;
                    d * f32::from(((v >> shift) & 0xF) | hi) - dm
                }));
            }
        }
    }
}

impl BlockFormat for BlockQ6K {
    const BYTES: usize = 210;

    fn parse(b: &[u8]) -> Self {
        Self {
            ql: array(b, 0),
            qh: array(b, 128),
            scales: array::<16>(b, 192).map(|v| v as i8),
            d: f16_at(b, 208),
        }
    }

    fn to_float(&self, out: &mut Vec<f32>) {
        let start = out.len();
        out.resize(start + QK_K, 0.0);
        let y = &mut out[start..];
        for h in 0..2 {
            let (ql, qh, sc) = (
                &self.ql[64 * h..],
                &self.qh[32 * h..],
                &self.scales[8 * h..],
            );
            for l in 0..32 {
                let q = [
                    (ql[l] & 0xF) | ((qh[l] & 3) << 4),
                    (ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4),
                    (ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4),
                    (ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4),
                ];
                for (k, &qk) in q.iter().enumerate() {
                    let d = self.d * f32::from(sc[l / 16 + 2 * k]);
                    y[128 * h + 32 * k + l] = d * f32::from(qk as i8 - 32);
                }
            }
        }
    }
}

impl BlockFormat for BlockQ8K {
    const BYTES: usize = 292;

    fn parse(b: &[u8]) -> Self {
        Self {
            d: f32::from_le_bytes(array(b, 0)),
            qs: array::<256>(b, 4).map(|v| v as i8),
        }
    }

    fn to_float(&self, out: &mut Vec<f32>) {
        out.extend(self.qs.iter().map(|&q| self.d * f32::from(q)));
    }
}

/// Appends the weights of every block in `bytes` (a whole number of `B::BYTES`) to `out`.
pub(crate) fn dequantize<B: BlockFormat>(bytes: &[u8], out: &mut Vec<f32>) {
    for b in bytes.chunks_exact(B::BYTES) {
        B::parse(b).to_float(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    fn h(x: f32) -> [u8; 2] {
        f16::from_f32(x).to_bits().to_le_bytes()
    }

    #[test]
    fn scale_min_k4_should_unpack_six_bit_fields() {
        // Sub-block 5: scale = (q[9] & 15) | (q[1] >> 6) << 4, min = (q[9] >> 4) | (q[5] >> 6) << 4.
        let mut q = [0u8; 12];
        q[1] = 0b10_000000;
        q[5] = 0b01_000000;
        q[9] = 0x3A;
        assert_eq!(scale_min_k4(5, &q), (0xA | 0x20, 0x3 | 0x10));
        q[2] = 0x7F;
        q[6] = 0xC5;
        assert_eq!(scale_min_k4(2, &q), (0x3F, 0x05));
    }

    #[test]
    fn q4_k_block_should_follow_the_ggml_formula() {
        // d = 0.5, dmin = 0.25, every scale 2 and min 3 (sub-blocks 0..4 direct, 4..8 nibbles).
        let mut b = h(0.5).to_vec();
        b.extend(h(0.25));
        b.extend([2, 2, 2, 2, 3, 3, 3, 3, 0x32, 0x32, 0x32, 0x32]);
        b.extend((0..128).map(|i| (i % 16) as u8 | (((i + 5) % 16) as u8) << 4));
        let mut y = Vec::new();
        dequantize::<BlockQ4K>(&b, &mut y);
        assert_eq!(y.len(), 256);
        for pair in 0..4 {
            for l in 0..32 {
                let i = 32 * pair + l;
                assert_eq!(y[64 * pair + l], 1.0 * (i % 16) as f32 - 0.75);
                assert_eq!(y[64 * pair + 32 + l], 1.0 * ((i + 5) % 16) as f32 - 0.75);
            }
        }
    }

    #[test]
    fn q6_k_and_q8_k_blocks_should_follow_the_ggml_formula() {
        // Q6_K: all ql = 0x21, qh = 0b11_10_01_00: q = 1|0<<4, 1|1<<4, 2|2<<4, 2|3<<4.
        let mut b = vec![0x21u8; 128];
        b.extend([0b11_10_01_00u8; 64]);
        b.extend((0..16).map(|i| (i as i8 - 8) as u8));
        b.extend(h(0.5));
        let mut y = Vec::new();
        dequantize::<BlockQ6K>(&b, &mut y);
        let q = [1 - 32, 17 - 32, 34 - 32, 50 - 32];
        for (i, &v) in y.iter().enumerate() {
            let (half, k, l) = (i / 128, (i % 128) / 32, i % 32);
            let sc = (8 * half + l / 16 + 2 * k) as f32 - 8.0;
            assert_eq!(v, 0.5 * sc * q[k] as f32, "weight {i}");
        }
        let mut b = 0.125f32.to_le_bytes().to_vec();
        b.extend((0..256).map(|i| i as u8));
        b.extend([0xAB; 32]);
        let mut y = Vec::new();
        dequantize::<BlockQ8K>(&b, &mut y);
        assert!(
            y.iter()
                .enumerate()
                .all(|(i, &v)| v == (i as u8 as i8) as f32 * 0.125)
        );
    }
}
