//! Ternary GGUF types, read straight into bit-planes and scales ([`decode_ternary`]) and
//! written from them ([`encode_ternary`]), without a float detour.
//!
//! Each weight is a trit `t ∈ {-1, 0, +1}` stored as the code `q = t + 1`; the weight is
//! `w = d·t` with one scale `d` per block (TQ) or per tensor (`I2_S`).
//!
//! | type    | weights/block | bytes | layout (little-endian)                                  | scales              |
//! |---------|---------------|-------|---------------------------------------------------------|---------------------|
//! | `TQ2_0` | 256           | 66    | `qs: [u8; 64], d: f16`                                  | `PerGroup{256}`     |
//! | `TQ1_0` | 256           | 54    | `qs: [u8; 48], qh: [u8; 4], d: f16`                     | `PerGroup{256}`     |
//! | `I2_S`  | 128           | 32    | `qs: [u8; 32]`; after the last block: `d: f32` + 28 pad | `PerRow` (all `d`)  |
//!
//! - **`TQ2_0`** (llama.cpp `block_tq2_0`): weight `k = 128h + 32l + m` (`h < 2`, `l < 4`,
//!   `m < 32`) has code `(qs[32h + m] >> 2l) & 3`. ggml dequantizes code 3 as `+2·d`; it is
//!   never written and [`decode_ternary`] rejects it.
//! - **`TQ1_0`** (llama.cpp `block_tq1_0`): base-3, five trits a byte. Byte `b` holds
//!   `v = Σ_n q_n·3^(4−n)` as `b = ⌈256·v / 243⌉`; trit `n` is read back as
//!   `((b·3^n mod 256)·3) >> 8`. Weights `0..160` are trit `n = k/32` of `qs[k % 32]`,
//!   `160..240` trit `n = k'/16` of `qs[32 + k' % 16]` (`k' = k − 160`), `240..256` trit
//!   `n = k'/4` of `qh[k' % 4]` (`k' = k − 240`; four trits, the fifth is 0).
//! - **`I2_S`** (bitnet.cpp; *not* in mainline ggml or gguf-py; **unverified against a
//!   published file**, only against an encoder written here from the same source):
//!   - type id 36: `GGML_TYPE_I2_S = 36` in bitnet.cpp's ggml fork
//!     (github.com/Eddie-Wang1120/llama.cpp, branch `merge-dev`, commit 406a5036,
//!     `ggml/include/ggml.h:393`);
//!   - size `n/4 + 32` bytes for `n` weights: `ggml_nbytes` there (`ggml/src/ggml.c:3480-3482`,
//!     `nbytes = nbytes / 4 + 32` for `GGML_TYPE_I2_S`, whose traits at `ggml.c:1172` are
//!     block size 1, type size 1);
//!   - packing, code map and scale: `quantize_i2_s` in github.com/microsoft/BitNet
//!     `src/ggml-bitnet-mad.cpp` (commit 16da220), x86 branch with `ACT_PARALLEL` (defined by
//!     `include/gemm-config.h:1`): codes `0, 1, 2` for `−1, 0, +1` (lines 66-71); the tensor's
//!     weights, flattened row-major, form blocks of `QK_I2_S = 128` (line 12); weight `j` of
//!     block `i` goes to byte `32i + j % 32`, bits `6 − 2·(j / 32)` and up (lines 81-87); the
//!     f32 scale `d` (`max |w|` of the ternary float weights) is written at byte `n/4`
//!     (lines 90-91) and the function reports `n/4 + 32` bytes ("32B for alignment", line 95).
//!     We require `cols % 128 == 0` so blocks never straddle rows (true of every BitNet
//!     matrix) and reject code 3 (never written). ARM builds of the current bitnet.cpp use
//!     `QK_I2_S = 64` (line 14) with 16-byte groups, a different byte order that a file does
//!     not announce: such files are read wrongly here.
//!
//! Citations are for layout facts only; the code here is our own.

use super::{BlockFormat, GgmlType, QK_K};
use crate::error::{ModelError, Result};
use half::f16;
use ternary_core::matrix::WORD_BITS;
use ternary_core::{ScaleLayout, Scales, TernaryMatrix, words_per_row};

/// Weights per `I2_S` block.
pub const I2S_BLOCK: usize = 128;
/// Bytes after an `I2_S` tensor's packed trits: the f32 scale and 28 bytes of padding.
pub const I2S_TAIL: usize = 32;

/// A 256-weight ternary block with one f16 scale (`TQ1_0`, `TQ2_0`).
pub trait TernaryBlock: BlockFormat {
    /// The scale's f16 bits.
    fn d_bits(&self) -> u16;
    /// The code `q = t + 1` of every weight, in order (`TQ2_0` may hold the invalid 3).
    fn codes(&self) -> [u8; QK_K];
    /// Appends the block holding `codes` (each `0..=2`) and the f16 scale bits `d` to `out`.
    fn encode(codes: &[u8; QK_K], d: u16, out: &mut Vec<u8>);
    /// Where the codes of weights `32w .. 32w + 32` sit, if as 2-bit fields at one shift of
    /// 32 consecutive bytes (`TQ2_0`): the fast decode reads them so.
    fn fields(&self, w: usize) -> Option<(&[u8], u32)> {
        let _ = w;
        None
    }
}

/// A `TQ2_0` block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockTq2_0 {
    /// Four 2-bit codes per byte.
    pub qs: [u8; 64],
    /// The scale's f16 bits.
    pub d: u16,
}

/// A `TQ1_0` block.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockTq1_0 {
    /// Five base-3 codes per byte (weights 0..240).
    pub qs: [u8; 48],
    /// Four base-3 codes per byte (weights 240..256).
    pub qh: [u8; 4],
    /// The scale's f16 bits.
    pub d: u16,
}

const _: () = assert!(BlockTq2_0::BYTES == QK_K / 4 + 2);
const _: () = assert!(BlockTq1_0::BYTES == (QK_K - 4 * QK_K / 64) / 5 + QK_K / 64 + 2);

fn array<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[at..at + N]);
    a
}

fn f16_bits_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// `w = d·(q − 1)` in f32, as ggml computes it.
fn ternary_to_float<B: TernaryBlock>(b: &B, out: &mut Vec<f32>) {
    let d = f16::from_bits(b.d_bits()).to_f32();
    out.extend(b.codes().iter().map(|&q| d * f32::from(q as i8 - 1)));
}

impl BlockFormat for BlockTq2_0 {
    const BYTES: usize = 66;

    fn parse(b: &[u8]) -> Self {
        Self {
            qs: array(b, 0),
            d: f16_bits_at(b, 64),
        }
    }

    fn to_float(&self, out: &mut Vec<f32>) {
        ternary_to_float(self, out);
    }
}

impl TernaryBlock for BlockTq2_0 {
    fn d_bits(&self) -> u16 {
        self.d
    }

    fn codes(&self) -> [u8; QK_K] {
        let mut q = [0u8; QK_K];
        for (k, qk) in q.iter_mut().enumerate() {
            let (h, l, m) = (k / 128, (k % 128) / 32, k % 32);
            *qk = (self.qs[32 * h + m] >> (2 * l)) & 3;
        }
        q
    }

    fn encode(codes: &[u8; QK_K], d: u16, out: &mut Vec<u8>) {
        let mut qs = [0u8; 64];
        for (k, &c) in codes.iter().enumerate() {
            let (h, l, m) = (k / 128, (k % 128) / 32, k % 32);
            qs[32 * h + m] |= c << (2 * l);
        }
        out.extend(qs);
        out.extend(d.to_le_bytes());
    }

    fn fields(&self, w: usize) -> Option<(&[u8], u32)> {
        // Weight k = 32w + m is bits 2l, 2l + 1 of qs[32h + m], h = w / 4, l = w mod 4.
        let (h, l) = (w / 4, w % 4);
        Some((&self.qs[32 * h..32 * h + 32], 2 * l as u32))
    }
}

const POW3: [u8; 5] = [1, 3, 9, 27, 81];

/// Trit code `n` of a base-3 byte: `((b·3^n mod 256)·3) >> 8`.
fn tq1_code(b: u8, n: usize) -> u8 {
    ((u16::from(b.wrapping_mul(POW3[n])) * 3) >> 8) as u8
}

/// `⌈256·v / 243⌉` for `v = Σ_n q_n·3^(4−n) < 243`.
fn tq1_byte(codes: impl Iterator<Item = u8>) -> u8 {
    let v = codes
        .zip(POW3.iter().rev())
        .fold(0u16, |acc, (q, &p)| acc + u16::from(q) * u16::from(p));
    (v * 256).div_ceil(243) as u8
}

impl BlockFormat for BlockTq1_0 {
    const BYTES: usize = 54;

    fn parse(b: &[u8]) -> Self {
        Self {
            qs: array(b, 0),
            qh: array(b, 48),
            d: f16_bits_at(b, 52),
        }
    }

    fn to_float(&self, out: &mut Vec<f32>) {
        ternary_to_float(self, out);
    }
}

impl TernaryBlock for BlockTq1_0 {
    fn d_bits(&self) -> u16 {
        self.d
    }

    fn codes(&self) -> [u8; QK_K] {
        let mut q = [0u8; QK_K];
        for (k, qk) in q.iter_mut().enumerate() {
            *qk = match k {
                0..160 => tq1_code(self.qs[k % 32], k / 32),
                160..240 => tq1_code(self.qs[32 + (k - 160) % 16], (k - 160) / 16),
                _ => tq1_code(self.qh[(k - 240) % 4], (k - 240) / 4),
            };
        }
        q
    }

    fn encode(codes: &[u8; QK_K], d: u16, out: &mut Vec<u8>) {
        out.extend((0..32).map(|m| tq1_byte((0..5).map(|n| codes[32 * n + m]))));
        out.extend((0..16).map(|m| tq1_byte((0..5).map(|n| codes[160 + 16 * n + m]))));
        // Four trits, then a zero fifth (the least significant) one.
        out.extend(
            (0..4)
                .map(|j| tq1_byte((0..5).map(|n| if n < 4 { codes[240 + 4 * n + j] } else { 0 }))),
        );
        out.extend(d.to_le_bytes());
    }
}

/// Appends the f32 weights of every block in `bytes` to `out`.
pub(crate) fn dequantize_tq<B: TernaryBlock>(bytes: &[u8], out: &mut Vec<f32>) {
    for b in bytes.chunks_exact(B::BYTES) {
        B::parse(b).to_float(out);
    }
}

fn bad(kind: GgmlType, rows: usize, cols: usize, why: impl std::fmt::Display) -> ModelError {
    ModelError::Gguf(format!("{} {rows}x{cols}: {why}", kind.name()))
}

/// The error for a 2-bit code 3 at row `r`, column `c`.
fn not_a_trit(kind: GgmlType, rows: usize, cols: usize, r: usize, c: usize) -> ModelError {
    bad(
        kind,
        rows,
        cols,
        format_args!("row {r}, column {c}: 2-bit code 3 is not a trit"),
    )
}

/// Bit-planes under construction: `plus`/`minus` words of a `rows × cols` matrix.
struct Planes {
    wpr: usize,
    plus: Vec<u32>,
    minus: Vec<u32>,
}

impl Planes {
    fn new(rows: usize, cols: usize) -> Self {
        let wpr = words_per_row(cols);
        Self {
            wpr,
            plus: vec![0; rows * wpr],
            minus: vec![0; rows * wpr],
        }
    }

    /// Sets the 32 columns of word `w` of row `r` from 2-bit codes `q = t + 1` held at bits
    /// `s` and `s + 1` of 32 consecutive bytes (the `TQ2_0` and `I2_S` layouts): eight bytes
    /// at a time, the low and the high bit of each field are gathered into one mask bit per
    /// byte by a multiply (`((x >> s) & 0x01…01) · 0x0102040810204080 >> 56`); `plus = hi ∧ ¬lo`
    /// (code 2), `minus = ¬hi ∧ ¬lo` (code 0); `Err(bit)` on code 3.
    fn set_word_fields(
        &mut self,
        r: usize,
        w: usize,
        bytes: &[u8],
        s: u32,
    ) -> std::result::Result<(), usize> {
        const ONES: u64 = 0x0101_0101_0101_0101;
        const GATHER: u64 = 0x0102_0408_1020_4080;
        let (mut lo, mut hi) = (0u32, 0u32);
        for (i, chunk) in bytes.chunks_exact(8).take(4).enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(chunk);
            let x = u64::from_le_bytes(b);
            let gather = |v: u64| ((v & ONES).wrapping_mul(GATHER) >> 56) as u32;
            lo |= gather(x >> s) << (8 * i);
            hi |= gather(x >> (s + 1)) << (8 * i);
        }
        let three = lo & hi;
        if three != 0 {
            return Err(three.trailing_zeros() as usize);
        }
        self.plus[r * self.wpr + w] = hi & !lo;
        self.minus[r * self.wpr + w] = !(hi | lo);
        Ok(())
    }

    /// Sets the 32 columns of word `w` of row `r` from their codes; `Err(bit)` on code 3.
    fn set_word(&mut self, r: usize, w: usize, codes: &[u8]) -> std::result::Result<(), usize> {
        let (mut p, mut m) = (0u32, 0u32);
        for (bit, &q) in codes.iter().enumerate() {
            match q {
                0 => m |= 1 << bit,
                1 => {}
                2 => p |= 1 << bit,
                _ => return Err(bit),
            }
        }
        self.plus[r * self.wpr + w] = p;
        self.minus[r * self.wpr + w] = m;
        Ok(())
    }
}

/// Decodes a `rows × cols` tensor of `TQ1_0`, `TQ2_0` or `I2_S` into a [`TernaryMatrix`].
///
/// `TQ1_0`/`TQ2_0` give `ScaleLayout::PerGroup { group_size: 256 }` with each block's f16
/// scale converted exactly to f32; `I2_S` gives `PerRow` scales all equal to the tensor's f32
/// scale. `cols` must be a multiple of the block (256, or 128 for `I2_S`) and `bytes` exactly
/// [`GgmlType::byte_size`]`(rows·cols)` long. A non-finite scale, a code 3, an empty tensor
/// (0 rows or columns) or any size mismatch is a [`ModelError::Gguf`]; nothing is allocated
/// before the size is checked, and then about `rows·cols/4` bytes.
pub fn decode_ternary(
    kind: GgmlType,
    bytes: &[u8],
    rows: usize,
    cols: usize,
) -> Result<TernaryMatrix> {
    let block = match kind {
        GgmlType::TQ1_0 | GgmlType::TQ2_0 => QK_K,
        GgmlType::I2_S => I2S_BLOCK,
        other => {
            return Err(ModelError::Gguf(format!(
                "{} is not a ternary type (TQ1_0, TQ2_0 or I2_S)",
                other.name()
            )));
        }
    };
    if rows == 0 || cols == 0 {
        // Refused rather than built: the planes' padding masks (per column) and I2_S's scales
        // (per row) would be allocated for a dimension that no byte of the file backs.
        return Err(bad(kind, rows, cols, "an empty ternary tensor"));
    }
    if !cols.is_multiple_of(block) {
        return Err(bad(
            kind,
            rows,
            cols,
            format_args!("rows of {cols} weights are not whole {block}-weight blocks"),
        ));
    }
    let expected = rows
        .checked_mul(cols)
        .and_then(|n| kind.byte_size(n))
        .ok_or_else(|| bad(kind, rows, cols, "size overflows"))?;
    if bytes.len() != expected {
        return Err(bad(
            kind,
            rows,
            cols,
            format_args!("needs {expected} bytes, found {}", bytes.len()),
        ));
    }
    let mut planes = Planes::new(rows, cols);
    let scales = match kind {
        GgmlType::TQ1_0 => decode_tq::<BlockTq1_0>(kind, bytes, rows, cols, &mut planes)?,
        GgmlType::TQ2_0 => decode_tq::<BlockTq2_0>(kind, bytes, rows, cols, &mut planes)?,
        _ => decode_i2s(bytes, rows, cols, &mut planes)?,
    };
    Ok(TernaryMatrix::from_planes(
        rows,
        cols,
        planes.plus,
        planes.minus,
        scales,
    )?)
}

fn decode_tq<B: TernaryBlock>(
    kind: GgmlType,
    bytes: &[u8],
    rows: usize,
    cols: usize,
    planes: &mut Planes,
) -> Result<Scales> {
    let per_row = cols / QK_K;
    let mut scales = Vec::with_capacity(rows * per_row);
    for (i, b) in bytes.chunks_exact(B::BYTES).enumerate() {
        let (r, blk) = (i / per_row, i % per_row);
        let b = B::parse(b);
        let d = f16::from_bits(b.d_bits()).to_f32();
        if !d.is_finite() {
            return Err(bad(
                kind,
                rows,
                cols,
                format_args!("row {r}, block {blk}: scale {d} is not finite"),
            ));
        }
        scales.push(d);
        // Formats without 2-bit fields (TQ1_0) unpack the block's codes once.
        let mut codes = None;
        for w in 0..QK_K / WORD_BITS {
            let word = blk * (QK_K / WORD_BITS) + w;
            let set = match b.fields(w) {
                Some((bytes, shift)) => planes.set_word_fields(r, word, bytes, shift),
                None => {
                    let c = codes.get_or_insert_with(|| b.codes());
                    planes.set_word(r, word, &c[w * WORD_BITS..(w + 1) * WORD_BITS])
                }
            };
            set.map_err(|bit| not_a_trit(kind, rows, cols, r, word * WORD_BITS + bit))?;
        }
    }
    Ok(Scales::per_group(QK_K, scales))
}

fn decode_i2s(bytes: &[u8], rows: usize, cols: usize, planes: &mut Planes) -> Result<Scales> {
    let n = rows * cols;
    let (packed, tail) = bytes.split_at(n / 4);
    let d = f32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
    if !d.is_finite() {
        return Err(bad(
            GgmlType::I2_S,
            rows,
            cols,
            format_args!("the tensor scale {d} is not finite"),
        ));
    }
    for (i, b) in packed.chunks_exact(I2S_BLOCK / 4).enumerate() {
        let start = i * I2S_BLOCK;
        let (r, c0) = (start / cols, start % cols);
        for g in 0..4 {
            let word = c0 / WORD_BITS + g;
            planes
                .set_word_fields(r, word, b, 6 - 2 * g as u32)
                .map_err(|bit| not_a_trit(GgmlType::I2_S, rows, cols, r, word * WORD_BITS + bit))?;
        }
    }
    Ok(Scales::per_row(vec![d; rows]))
}

fn encode_err(kind: GgmlType, m: &TernaryMatrix, why: impl std::fmt::Display) -> ModelError {
    ModelError::Input(format!(
        "cannot encode a {}x{} ternary matrix as {}: {why}",
        m.rows(),
        m.cols(),
        kind.name()
    ))
}

/// The codes `t + 1` of row `r`, columns `c0..c0 + N`.
fn row_codes<const N: usize>(m: &TernaryMatrix, r: usize, c0: usize) -> [u8; N] {
    let (p, mi) = m.row_planes(r);
    let mut q = [1u8; N];
    for (k, qk) in q.iter_mut().enumerate() {
        let c = c0 + k;
        let bit = 1u32 << (c % WORD_BITS);
        let w = c / WORD_BITS;
        *qk = 1 + u8::from(p[w] & bit != 0) - u8::from(mi[w] & bit != 0);
    }
    q
}

/// Encodes `m` as `TQ1_0`, `TQ2_0` or `I2_S` bytes that [`decode_ternary`] reads back exactly.
///
/// Rules (each violation is a [`ModelError::Input`] naming the row and block):
/// - `TQ1_0`/`TQ2_0`: `cols % 256 == 0`; within each 256-column block of a row every scale of
///   `m` is the same f32 (bit for bit: per-row scales, or groups of 256, or smaller groups
///   that happen to agree), and that scale is exactly an f16 (`f16(s) as f32 == s`; round
///   first with [`with_f16_scales`] if needed). An all-zero block keeps its scale.
/// - `I2_S`: `cols % 128 == 0` and one scale for the whole tensor (every scale equal).
///
/// With these rules `decode_ternary(kind, encode_ternary(kind, m)) == m` for `PerGroup{256}`
/// (TQ) / `PerRow` (`I2_S`) matrices, and has the same weights `s·t` for the other layouts.
pub fn encode_ternary(kind: GgmlType, m: &TernaryMatrix) -> Result<Vec<u8>> {
    match kind {
        GgmlType::TQ1_0 => encode_tq::<BlockTq1_0>(kind, m),
        GgmlType::TQ2_0 => encode_tq::<BlockTq2_0>(kind, m),
        GgmlType::I2_S => encode_i2s(m),
        other => Err(encode_err(
            other,
            m,
            "not a ternary type (TQ1_0, TQ2_0 or I2_S)",
        )),
    }
}

/// The one f16-exact scale of row `r`, columns `c0..c0 + len`.
fn block_scale(kind: GgmlType, m: &TernaryMatrix, r: usize, c0: usize, len: usize) -> Result<u16> {
    let s = m.scale_at(r, c0);
    if let Some(c) = (c0..c0 + len)
        .step_by(WORD_BITS)
        .find(|&c| m.scale_at(r, c).to_bits() != s.to_bits())
    {
        return Err(encode_err(
            kind,
            m,
            format_args!(
                "row {r}: the scales vary inside the {len}-weight block at column {c0} \
                 ({s} at column {c0}, {} at column {c}); the type has one scale per block",
                m.scale_at(r, c)
            ),
        ));
    }
    let h = f16::from_f32(s);
    if h.to_f32().to_bits() != s.to_bits() {
        return Err(encode_err(
            kind,
            m,
            format_args!(
                "row {r}, column {c0}: scale {s:e} is not exactly an f16 (nearest {:e}); \
                 round the scales with with_f16_scales first",
                h.to_f32()
            ),
        ));
    }
    Ok(h.to_bits())
}

fn encode_tq<B: TernaryBlock>(kind: GgmlType, m: &TernaryMatrix) -> Result<Vec<u8>> {
    if !m.cols().is_multiple_of(QK_K) {
        return Err(encode_err(
            kind,
            m,
            format_args!("{} columns are not whole 256-weight blocks", m.cols()),
        ));
    }
    let per_row = m.cols() / QK_K;
    let mut out = Vec::with_capacity(m.rows() * per_row * B::BYTES);
    for r in 0..m.rows() {
        for b in 0..per_row {
            let d = block_scale(kind, m, r, b * QK_K, QK_K)?;
            B::encode(&row_codes::<QK_K>(m, r, b * QK_K), d, &mut out);
        }
    }
    Ok(out)
}

fn encode_i2s(m: &TernaryMatrix) -> Result<Vec<u8>> {
    let kind = GgmlType::I2_S;
    if !m.cols().is_multiple_of(I2S_BLOCK) {
        return Err(encode_err(
            kind,
            m,
            format_args!("{} columns are not whole 128-weight blocks", m.cols()),
        ));
    }
    let values = m.scales().values();
    let d = values.first().copied().unwrap_or(0.0);
    if let Some(i) = values.iter().position(|v| v.to_bits() != d.to_bits()) {
        return Err(encode_err(
            kind,
            m,
            format_args!(
                "I2_S has one scale per tensor; scale #{i} is {} but #0 is {d}",
                values[i]
            ),
        ));
    }
    let mut out = Vec::with_capacity(m.rows() * m.cols() / 4 + I2S_TAIL);
    for r in 0..m.rows() {
        for c0 in (0..m.cols()).step_by(I2S_BLOCK) {
            let q = row_codes::<I2S_BLOCK>(m, r, c0);
            out.extend((0..32).map(|p| (0..4).fold(0u8, |b, g| b | q[32 * g + p] << (6 - 2 * g))));
        }
    }
    out.extend(d.to_le_bytes());
    out.resize(out.len() + I2S_TAIL - 4, 0);
    Ok(out)
}

/// Row `i` of the result is row `order[i]` of `m`, with its scales (a permutation or a
/// selection; any `order` whose entries are `< m.rows()`).
pub fn select_rows(m: &TernaryMatrix, order: &[usize]) -> Result<TernaryMatrix> {
    let (wpr, cols) = (m.words_per_row(), m.cols());
    let layout = m.scales().layout();
    let gpr = layout.groups_per_row(cols);
    let mut plus = Vec::with_capacity(order.len() * wpr);
    let mut minus = Vec::with_capacity(order.len() * wpr);
    let mut scales = Vec::with_capacity(order.len() * gpr);
    for &src in order {
        if src >= m.rows() {
            return Err(ModelError::Input(format!(
                "select_rows: row {src} of a {}-row matrix",
                m.rows()
            )));
        }
        let (p, mi) = m.row_planes(src);
        plus.extend_from_slice(p);
        minus.extend_from_slice(mi);
        scales.extend_from_slice(&m.scales().values()[src * gpr..(src + 1) * gpr]);
    }
    Ok(TernaryMatrix::from_planes(
        order.len(),
        cols,
        plus,
        minus,
        Scales::new(layout, scales),
    )?)
}

/// `m` with every scale rounded to the nearest f16 (ties to even), so the TQ encoders accept
/// it. The weights change by at most 2⁻¹¹ relative (f16 has an 11-bit significand; 2⁻²⁴
/// absolute below 2⁻¹⁴). A scale beyond ±65504 is an error, not infinity.
pub fn with_f16_scales(m: &TernaryMatrix) -> Result<TernaryMatrix> {
    let layout: ScaleLayout = m.scales().layout();
    let mut values = Vec::with_capacity(m.scales().values().len());
    for (i, &s) in m.scales().values().iter().enumerate() {
        let h = f16::from_f32(s).to_f32();
        if !h.is_finite() {
            return Err(ModelError::Input(format!(
                "scale #{i} = {s:e} is outside the f16 range (±65504)"
            )));
        }
        values.push(h);
    }
    let mut out = m.clone();
    out.set_scales(Scales::new(layout, values))?;
    Ok(out)
}

/// `m` as `Q8_0` blocks that hold its weights exactly: per 32 columns `d = f16(s)` (the
/// block's one scale, which must be exactly an f16) and `q = t`, so ggml's `d·q` is `s·t`.
///
/// The fallback for matrices the TQ types cannot hold (a width that is not a multiple of
/// 256, like SmolLM2's 576, or scale groups smaller than 256): 8.5 bits a weight instead of
/// 2.06, with the same weights. Needs `cols % 32 == 0` (scale groups are multiples of 32).
pub fn encode_q8_0_exact(m: &TernaryMatrix) -> Result<Vec<u8>> {
    let kind = GgmlType::Q8_0;
    if !m.cols().is_multiple_of(super::QK) {
        return Err(encode_err(
            kind,
            m,
            format_args!("{} columns are not whole 32-weight blocks", m.cols()),
        ));
    }
    let mut out = Vec::with_capacity(m.rows() * m.cols() / 32 * 34);
    for r in 0..m.rows() {
        for c0 in (0..m.cols()).step_by(super::QK) {
            out.extend(block_scale(kind, m, r, c0, super::QK)?.to_le_bytes());
            out.extend(row_codes::<32>(m, r, c0).map(|q| (q as i8 - 1) as u8));
        }
    }
    Ok(out)
}
