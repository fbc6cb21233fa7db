//! A linear layer that keeps GGUF block-quantized weights (Q4_0/Q4_1/Q8_0/Q6_K) and multiplies
//! activations by them directly, without a dequantized copy.
//!
//! Q4_0/Q4_1/Q8_0, f32 activations: per 32-weight block with scale `d` (and minimum `m` for
//! Q4_1) and input slice `x`: `Σ x_j·w_j = d·Σ x_j·q_j + m·Σ x_j` (Q4_1),
//! `d·(Σ x_j·q_j − 8·Σ x_j)` (Q4_0), `d·Σ x_j·q_j` (Q8_0): the same weights as
//! [`crate::quant::dequantize`] gives, summed in a different order. Reads 20 (Q4_1) instead of
//! 128 bytes per block when decoding.
//!
//! Q6_K, int8 activations (as ggml multiplies K-quants, by `Q8_K` activations): each token is
//! quantized per 256 values (`Q8Blocks`), and per super-block `b` with weight scale `d_w`,
//! group scales `s_g` (16 weights each), 6-bit codes `u ∈ [0, 63]` and activation scale `d_x`,
//! `Σ_j w_j·x_j ≈ d_w·d_x·Σ_g s_g·(Σ_{j∈g} u_j·q_j − 32·Σ_{j∈g} q_j)`: the integer part is
//! exact, the blocks are summed in `f32` in order. The embedding table of a tied head is the
//! same bytes, dequantized a row at a time ([`QuantLinear::dequantize_row`]).

use crate::error::{ModelError, Result};
use crate::linear::HostLinear;
use crate::quant::{self, GgmlType, QK, QK_K};
use crate::weights::QuantizedTensor;
use burn::tensor::{Tensor, TensorData, backend::Backend};
use half::f16;
use std::sync::Arc;
use ternary_layers::LinearLayer;

/// Block-quantized linear layer `y = x·Wᵀ`, `W: [out, in]` in GGUF blocks.
#[derive(Debug, Clone)]
pub struct QuantLinear {
    kind: GgmlType,
    out: usize,
    inp: usize,
    /// Bytes of one row of blocks.
    row_bytes: usize,
    bytes: Arc<Vec<u8>>,
}

/// Bytes of a `Q6_K` super-block: `ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: f16`.
const Q6K_BYTES: usize = 210;

/// Activations quantized for a `Q6_K` product, one row of `k` int8 codes per token: per
/// 256-value block `b`, `d_b = max_j |x_j| / 127` and `q_j = round_half_even(x_j / d_b)`
/// (codes and `d_b` zero for an all-zero block; codes zero and `d_b = NaN` for a block holding
/// NaN or ±∞, so that token's outputs are NaN), and `Σ q_j` per 16 values.
#[derive(Debug, Default, Clone)]
pub(crate) struct Q8Blocks {
    codes: Vec<i8>,
    d: Vec<f32>,
    bsums: Vec<i16>,
}

impl Q8Blocks {
    /// Quantizes `x: [m, k]` (`k` a multiple of 256, `x.len() = m·k`: the caller's to check),
    /// reusing the buffers.
    pub(crate) fn quantize(&mut self, x: &[f32], m: usize, k: usize) {
        let n = m * k;
        self.codes.clear();
        self.codes.resize(n, 0);
        self.d.clear();
        self.bsums.clear();
        self.bsums.resize(n / 16, 0);
        for ((xb, qb), sb) in x[..n]
            .chunks_exact(QK_K)
            .zip(self.codes.chunks_exact_mut(QK_K))
            .zip(self.bsums.chunks_exact_mut(QK_K / 16))
        {
            if xb.iter().any(|v| !v.is_finite()) {
                self.d.push(f32::NAN);
                continue;
            }
            let amax = xb.iter().fold(0f32, |a, v| a.max(v.abs()));
            if amax == 0.0 {
                self.d.push(0.0);
                continue;
            }
            let inv = 127.0 / amax;
            for (q, &v) in qb.iter_mut().zip(xb) {
                *q = (v * inv).round_ties_even().clamp(-127.0, 127.0) as i8;
            }
            for (s, g) in sb.iter_mut().zip(qb.chunks_exact(16)) {
                *s = g.iter().map(|&q| i16::from(q)).sum();
            }
            self.d.push(amax / 127.0);
        }
    }

    /// Token `j`'s codes, block scales and 16-value sums, for a row of `k` values.
    pub(crate) fn token(&self, j: usize, k: usize) -> (&[i8], &[f32], &[i16]) {
        (
            &self.codes[j * k..(j + 1) * k],
            &self.d[j * k / QK_K..(j + 1) * k / QK_K],
            &self.bsums[j * k / 16..(j + 1) * k / 16],
        )
    }
}

/// Per-call scratch of [`QuantLinear::forward_rows_range`] (reused, so repeated calls do not
/// allocate): the 32-wide block sums of f32 inputs, or the `Q6_K` int8 activations.
#[derive(Debug, Default, Clone)]
pub struct QuantScratch {
    sx: Vec<f32>,
    q8: Q8Blocks,
    /// The row dots, resolved once per product by `prepare`.
    dots: Option<(crate::arch::Q6kDotFn, crate::arch::QDotFn)>,
}

/// Portable oracle of the `Q6_K` row dot with int8 activations (see the [module docs](self)):
/// `Σ_b (d_w·d_b)·Σ_j s_{g(j)}·(u_j − 32)·q_j` over the super-blocks of `row`, `q` the codes,
/// `d` the block scales (the 16-value sums are not needed here).
pub fn q6k_dot_portable(row: &[u8], q: &[i8], d: &[f32], _bsums: &[i16]) -> f32 {
    let mut total = 0f32;
    for ((blk, xq), &dx) in row.chunks_exact(Q6K_BYTES).zip(q.chunks_exact(QK_K)).zip(d) {
        let (ql, qh, sc) = (&blk[..128], &blk[128..192], &blk[192..208]);
        let mut isum = 0i32;
        for h in 0..2 {
            for l in 0..32 {
                for k in 0..4 {
                    let lo = (ql[64 * h + l + 32 * (k & 1)] >> (4 * (k >> 1))) & 0xF;
                    let hi = (qh[32 * h + l] >> (2 * k)) & 3;
                    let u = i32::from(lo | (hi << 4)) - 32;
                    let j = 128 * h + 32 * k + l;
                    isum += i32::from(sc[j / 16] as i8) * u * i32::from(xq[j]);
                }
            }
        }
        total += (f16_at(blk, 208) * dx) * isum as f32;
    }
    total
}

fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[i], b[i + 1]])).to_f32()
}

/// `(Σ x_j·q_j, Σ x_j)` over one block's 32 inputs, `q` already unpacked.
fn block_dot(x: &[f32], q: &[f32; QK]) -> f32 {
    let mut acc = [0f32; 8];
    for (xc, qc) in x.chunks_exact(8).zip(q.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += xc[i] * qc[i];
        }
    }
    acc.iter().sum()
}

/// Portable oracle of the block row dot: `Σ_b (d_b·Σ_j x_j·q_j [+ m_b·Σ_j x_j])` over the
/// blocks of `row`, with `sx[b] = Σ_j x_{32b+j}`.
pub fn qdot_portable(kind: GgmlType, row: &[u8], x: &[f32], sx: &[f32]) -> f32 {
    let Some((_, bb)) = kind.block_layout().filter(|&(k, _)| k == QK) else {
        return f32::NAN;
    };
    let mut q = [0f32; QK];
    let mut sum = 0f32;
    for (b, blk) in row.chunks_exact(bb).enumerate() {
        let xb = &x[b * QK..(b + 1) * QK];
        let d = f16_at(blk, 0);
        sum += match kind {
            GgmlType::Q8_0 => {
                for (qj, &v) in q.iter_mut().zip(&blk[2..34]) {
                    *qj = f32::from(v as i8);
                }
                d * block_dot(xb, &q)
            }
            GgmlType::Q4_0 | GgmlType::Q4_1 => {
                let qs = &blk[bb - 16..bb];
                for (j, &v) in qs.iter().enumerate() {
                    q[j] = f32::from(v & 15);
                    q[j + 16] = f32::from(v >> 4);
                }
                let s = block_dot(xb, &q);
                if kind == GgmlType::Q4_1 {
                    d * s + f16_at(blk, 2) * sx[b]
                } else {
                    d * (s - 8.0 * sx[b])
                }
            }
            _ => f32::NAN,
        };
    }
    sum
}

impl QuantLinear {
    /// Adds the blocks' buffer to `pages`.
    pub fn add_huge_pages(&self, pages: &mut ternary_core::kernels::HugePages) {
        pages.add(self.bytes.as_slice());
    }

    /// Products with at most this many rows use the block GEMV; more rows dequantize the
    /// matrix once per call and use the f32 GEMM.
    pub const GEMV_MAX_ROWS: usize = 16;

    /// Wraps block-quantized rows; `name` is used in errors.
    pub fn new(name: &str, t: QuantizedTensor) -> Result<Self> {
        match t.kind {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 | GgmlType::Q6_K => {}
            other => {
                return Err(ModelError::UnsupportedType {
                    name: name.to_string(),
                    kind: other.name(),
                });
            }
        };
        let row_bytes = t.kind.byte_size(t.cols);
        let expected = row_bytes.and_then(|r| r.checked_mul(t.rows));
        if t.rows == 0 || t.cols == 0 || expected != Some(t.bytes.len()) {
            return Err(ModelError::Shape {
                name: name.to_string(),
                expected: vec![t.rows, t.cols],
                found: vec![t.bytes.len()],
            });
        }
        Ok(Self {
            kind: t.kind,
            out: t.rows,
            inp: t.cols,
            row_bytes: row_bytes.unwrap_or(0),
            bytes: Arc::new(t.bytes),
        })
    }

    /// Bytes of the weights (shared by clones).
    pub fn storage_bytes(&self) -> usize {
        self.bytes.len()
    }

    /// Whether `self` and `other` hold the very same weight bytes (one allocation).
    pub fn shares_bytes_with(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.bytes, &other.bytes)
    }

    /// `(rows, columns)` of `W`.
    pub fn shape(&self) -> (usize, usize) {
        (self.out, self.inp)
    }

    /// Appends row `r` of `W` dequantized to f32 (as [`crate::quant::dequantize`] gives it) to
    /// `out`; nothing for a row out of range.
    pub fn dequantize_row(&self, r: usize, out: &mut Vec<f32>) {
        if r >= self.out {
            return;
        }
        let row = &self.bytes[r * self.row_bytes..(r + 1) * self.row_bytes];
        // The row is a whole number of blocks (checked in `new`).
        if let Ok(v) = quant::dequantize("QuantLinear", self.kind, row, self.inp) {
            out.extend_from_slice(&v);
        }
    }

    /// Row `o`'s dot with each of the `m` tokens of `x` into `slot` (`Q6_K`: `q8` holds `x`
    /// quantized).
    #[inline]
    fn row_dots(&self, o: usize, x: &[f32], scratch: &QuantScratch, slot: &mut [f32]) {
        let k = self.inp;
        let row = &self.bytes[o * self.row_bytes..(o + 1) * self.row_bytes];
        let (dot, qdot) = scratch
            .dots
            .unwrap_or_else(|| (crate::arch::best_q6k_dot(), crate::arch::best_qdot()));
        let (sx, q8) = (&scratch.sx, &scratch.q8);
        if self.kind == GgmlType::Q6_K {
            for (j, s) in slot.iter_mut().enumerate() {
                let (q, d, bs) = q8.token(j, k);
                *s = dot(row, q, d, bs);
            }
        } else {
            let nb = k / QK;
            for (r, s) in slot.iter_mut().enumerate() {
                *s = qdot(
                    self.kind,
                    row,
                    &x[r * k..(r + 1) * k],
                    &sx[r * nb..(r + 1) * nb],
                );
            }
        }
    }

    /// Prepares `x: [m, in]` for [`row_dots`](Self::row_dots): block sums, or `Q6_K` codes.
    fn prepare(&self, x: &[f32], m: usize, scratch: &mut QuantScratch) {
        scratch.dots = Some((crate::arch::best_q6k_dot(), crate::arch::best_qdot()));
        if self.kind == GgmlType::Q6_K {
            scratch.q8.quantize(x, m, self.inp);
        } else {
            scratch.sx.clear();
            scratch
                .sx
                .extend(x.chunks_exact(QK).map(|c| c.iter().sum::<f32>()));
        }
    }

    /// The GGUF block type of the weights.
    pub fn ggml_type(&self) -> GgmlType {
        self.kind
    }

    /// `y = x·Wᵀ` for output rows `rows` only, on the calling thread: `x` is `[m, in]`
    /// row-major, `out[(r − rows.start) · m + j] = y[j, r]` (row-major by row), each value the
    /// block dot [`forward_rows`](Self::forward_rows) computes for `m ≤ GEMV_MAX_ROWS` (for
    /// every `m` with `Q6_K`). `scratch` is reused, so repeated calls do not allocate.
    /// Shapes are the caller's to check; a mismatch gives NaN outputs, not a panic.
    pub fn forward_rows_range(
        &self,
        x: &[f32],
        m: usize,
        rows: std::ops::Range<usize>,
        scratch: &mut QuantScratch,
        out: &mut [f32],
    ) {
        let (k, n) = (self.inp, self.out);
        if x.len() != m * k || rows.end > n || rows.start > rows.end || out.len() != rows.len() * m
        {
            out.fill(f32::NAN);
            return;
        }
        self.prepare(x, m, scratch);
        for (o, slot) in rows.zip(out.chunks_exact_mut(m.max(1))) {
            self.row_dots(o, x, scratch, slot);
        }
    }

    /// The weights as f32 `[out, in]` row-major.
    pub fn dequantized(&self) -> Vec<f32> {
        // Sizes were checked in `new`, so this cannot fail.
        quant::dequantize("QuantLinear", self.kind, &self.bytes, self.out * self.inp)
            .unwrap_or_default()
    }

    /// `y = x·Wᵀ` on host rows: `x` is `[m, in]` row-major, the result `[m, out]`.
    pub fn forward_rows(&self, x: &[f32], m: usize) -> Vec<f32> {
        use rayon::prelude::*;
        let (k, n) = (self.inp, self.out);
        if m > Self::GEMV_MAX_ROWS && self.kind != GgmlType::Q6_K {
            return match HostLinear::new("QuantLinear", self.dequantized(), n, k) {
                Ok(h) => h.forward_rows(x, m),
                Err(_) => vec![f32::NAN; m * n],
            };
        }
        if x.len() != m * k {
            return vec![f32::NAN; m * n];
        }
        let mut scratch = QuantScratch::default();
        self.prepare(x, m, &mut scratch);
        const BLOCK: usize = 32;
        let mut yt = vec![0f32; n * m];
        yt.par_chunks_mut(BLOCK * m.max(1))
            .enumerate()
            .for_each(|(bi, chunk)| {
                for (j, slot) in chunk.chunks_exact_mut(m.max(1)).enumerate() {
                    self.row_dots(bi * BLOCK + j, x, &scratch, slot);
                }
            });
        let mut y = vec![0f32; m * n];
        for o in 0..n {
            for r in 0..m {
                y[r * n + o] = yt[o * m + r];
            }
        }
        y
    }
}

impl<B: Backend> LinearLayer<B> for QuantLinear {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let device = x.device();
        let [m, k] = x.dims();
        assert_eq!(k, self.inp, "QuantLinear: input width {k} != {}", self.inp);
        let y = match ternary_layers::to_rows(x) {
            Ok(xs) => self.forward_rows(&xs, m),
            Err(e) => panic!("QuantLinear: cannot read the activations: {e}"),
        };
        Tensor::from_data(TensorData::new(y, [m, self.out]), &device)
    }

    fn in_features(&self) -> usize {
        self.inp
    }

    fn out_features(&self) -> usize {
        self.out
    }

    fn weight(&self) -> Tensor<B, 2> {
        Tensor::from_data(
            TensorData::new(self.dequantized(), [self.out, self.inp]),
            &Default::default(),
        )
    }

    fn kind(&self) -> String {
        format!("{}-host", self.kind.name())
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ternary_layers::Cpu;

    fn lcg(seed: &mut u64) -> u64 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        *seed >> 33
    }

    /// The layer's product through Burn's `LinearLayer::forward` on `x: [m, in]`.
    fn burn_forward(lin: &QuantLinear, x: &[f32], m: usize) -> Vec<f32> {
        let xt = Tensor::<Cpu, 2>::from_data(
            TensorData::new(x.to_vec(), [m, lin.inp]),
            &Default::default(),
        );
        LinearLayer::<Cpu>::forward(lin, xt)
            .into_data()
            .into_vec::<f32>()
            .unwrap()
    }

    /// Random blocks of `kind` for an `[out, in]` matrix.
    fn random_blocks(kind: GgmlType, out: usize, inp: usize, seed: &mut u64) -> Vec<u8> {
        let mut b = Vec::new();
        if kind == GgmlType::Q6_K {
            for _ in 0..out * inp / QK_K {
                b.extend((0..208).map(|_| lcg(seed) as u8));
                let d = f16::from_f32((lcg(seed) % 1000) as f32 / 200000.0 + 0.0001);
                b.extend(d.to_bits().to_le_bytes());
            }
            return b;
        }
        for _ in 0..out * inp / QK {
            let d = f16::from_f32((lcg(seed) % 1000) as f32 / 20000.0 + 0.001);
            b.extend(d.to_bits().to_le_bytes());
            match kind {
                GgmlType::Q4_1 => {
                    let m = f16::from_f32(-((lcg(seed) % 1000) as f32) / 5000.0);
                    b.extend(m.to_bits().to_le_bytes());
                    b.extend((0..16).map(|_| lcg(seed) as u8));
                }
                GgmlType::Q4_0 => b.extend((0..16).map(|_| lcg(seed) as u8)),
                _ => b.extend((0..32).map(|_| lcg(seed) as u8)),
            }
        }
        b
    }

    #[test]
    fn block_gemv_should_match_f64_on_dequantized_weights() {
        let mut seed = 99;
        for kind in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            for &(m, k, n) in &[
                (1usize, 32usize, 1usize),
                (1, 576, 65),
                (3, 64, 33),
                (16, 1536, 31),
                (17, 96, 63),
            ] {
                let bytes = random_blocks(kind, n, k, &mut seed);
                let q = QuantizedTensor {
                    kind,
                    rows: n,
                    cols: k,
                    bytes,
                };
                let lin = QuantLinear::new("t", q).unwrap();
                let w = lin.dequantized();
                let x: Vec<f32> = (0..m * k)
                    .map(|_| (lcg(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
                    .collect();
                let y = lin.forward_rows(&x, m);
                assert_eq!(y, burn_forward(&lin, &x, m));
                for r in 0..m {
                    for o in 0..n {
                        let want: f64 = (0..k)
                            .map(|j| f64::from(x[r * k + j]) * f64::from(w[o * k + j]))
                            .sum();
                        let scale: f64 = (0..k)
                            .map(|j| (f64::from(x[r * k + j]) * f64::from(w[o * k + j])).abs())
                            .sum();
                        let got = f64::from(y[r * n + o]);
                        assert!(
                            (got - want).abs() <= 1e-5 * scale + 1e-6,
                            "{kind:?} {m}x{k}x{n} [{r},{o}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn fast_qdot_should_match_portable() {
        let mut seed = 5;
        for kind in [GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q8_0] {
            for k in [32usize, 64, 576, 1536] {
                let row = random_blocks(kind, 1, k, &mut seed);
                let x: Vec<f32> = (0..k)
                    .map(|_| (lcg(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
                    .collect();
                let sx: Vec<f32> = x.chunks_exact(QK).map(|c| c.iter().sum()).collect();
                let a = qdot_portable(kind, &row, &x, &sx);
                let b = crate::arch::best_qdot()(kind, &row, &x, &sx);
                assert!(
                    (a - b).abs() <= 1e-5 * a.abs().max(1.0),
                    "{kind:?} k={k}: {a} vs {b}"
                );
            }
        }
    }

    fn q6k(out: usize, inp: usize, seed: &mut u64) -> QuantLinear {
        let q = QuantizedTensor {
            kind: GgmlType::Q6_K,
            rows: out,
            cols: inp,
            bytes: random_blocks(GgmlType::Q6_K, out, inp, seed),
        };
        QuantLinear::new("t", q).unwrap()
    }

    #[test]
    fn q6k_int8_dot_should_match_f64_on_the_dequantized_values_and_the_fast_dot_exactly() {
        // The oracle against f64 sums of dequantized weights times dequantized codes
        // (`d_b·q_j`): only the f32 rounding of the block sums differs. The fast dot (AVX2
        // where the host has it) equals the oracle bit for bit.
        let mut seed = 17;
        eprintln!("seed 17");
        for k in [256usize, 512, 768, 2560] {
            let lin = q6k(3, k, &mut seed);
            let w = lin.dequantized();
            let x: Vec<f32> = (0..k)
                .map(|_| (lcg(&mut seed) % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let mut q8 = Q8Blocks::default();
            q8.quantize(&x, 1, k);
            let (q, d, bs) = q8.token(0, k);
            for r in 0..3 {
                let row = &lin.bytes[r * lin.row_bytes..(r + 1) * lin.row_bytes];
                let got = q6k_dot_portable(row, q, d, bs);
                let (mut want, mut scale) = (0f64, 0f64);
                for j in 0..k {
                    let t = f64::from(w[r * k + j]) * f64::from(q[j]) * f64::from(d[j / QK_K]);
                    want += t;
                    scale += t.abs();
                }
                assert!(
                    (f64::from(got) - want).abs() <= 1e-5 * scale,
                    "k={k} row {r}: {got} vs {want}"
                );
                // The codes approximate x: |x_j − d_b·q_j| ≤ d_b / 2 (plus rounding).
                for j in 0..k {
                    let e = (x[j] - d[j / QK_K] * f32::from(q[j])).abs();
                    assert!(e <= 0.5001 * d[j / QK_K], "k={k} code {j}");
                }
                let fast = crate::arch::best_q6k_dot()(row, q, d, bs);
                assert_eq!(
                    fast.to_bits(),
                    got.to_bits(),
                    "k={k} row {r}: {fast} vs {got}"
                );
            }
        }
    }

    #[test]
    fn q6k_products_should_agree_across_entry_points_and_edge_shapes() {
        // forward_rows (Burn's path), forward_rows_range over any row range (the runtime's),
        // and the Burn layer give the same values; rows 1, 63, 64, 65; tokens 1, 2, 17; a
        // zero token gives zeros, a token holding NaN gives NaN, the others are untouched.
        let mut seed = 23;
        for &(n, k, m) in &[
            (1usize, 256usize, 1usize),
            (63, 512, 2),
            (64, 256, 17),
            (65, 768, 3),
        ] {
            let lin = q6k(n, k, &mut seed);
            let mut x: Vec<f32> = (0..m * k)
                .map(|_| (lcg(&mut seed) % 2001) as f32 / 500.0 - 2.0)
                .collect();
            if m > 2 {
                x[k..2 * k].fill(0.0);
                x[2 * k + 7] = f32::NAN;
            }
            let y = lin.forward_rows(&x, m);
            let mut scratch = QuantScratch::default();
            let cut = n / 3;
            for range in [0..cut, cut..n] {
                let mut out = vec![0f32; range.len() * m];
                lin.forward_rows_range(&x, m, range.clone(), &mut scratch, &mut out);
                for (i, o) in range.clone().enumerate() {
                    for j in 0..m {
                        let (a, b) = (out[i * m + j], y[j * n + o]);
                        assert!(
                            a.to_bits() == b.to_bits(),
                            "{n}x{k} m={m} [{j},{o}]: {a} vs {b}"
                        );
                    }
                }
            }
            for o in 0..n {
                if m > 2 {
                    assert_eq!(y[n + o], 0.0, "zero token row {o}");
                    assert!(y[2 * n + o].is_nan(), "NaN token row {o}");
                }
                assert!(y[o].is_finite());
            }
            let yb = burn_forward(&lin, &x, m);
            assert!(y.iter().zip(&yb).all(|(a, b)| a.to_bits() == b.to_bits()));
            // Rows dequantize as the whole matrix does.
            let w = lin.dequantized();
            for r in [0, n - 1] {
                let mut row = Vec::new();
                lin.dequantize_row(r, &mut row);
                assert_eq!(row, w[r * k..(r + 1) * k]);
            }
            let mut none = Vec::new();
            lin.dequantize_row(n, &mut none);
            assert!(none.is_empty());
        }
    }

    #[test]
    fn wrong_sizes_and_types_should_be_errors() {
        let q = QuantizedTensor {
            kind: GgmlType::Q4_1,
            rows: 2,
            cols: 32,
            bytes: vec![0; 39],
        };
        assert!(QuantLinear::new("t", q).is_err());
        let q = QuantizedTensor {
            kind: GgmlType::F16,
            rows: 1,
            cols: 32,
            bytes: vec![0; 64],
        };
        assert!(QuantLinear::new("t", q).is_err());
        let q = QuantizedTensor {
            kind: GgmlType::Q8_0,
            rows: 1,
            cols: 31,
            bytes: vec![0; 34],
        };
        assert!(QuantLinear::new("t", q).is_err());
        // Q6_K rows are whole 256-weight super-blocks.
        for (cols, len) in [(128, 105), (256, 209), (256, 211)] {
            let q = QuantizedTensor {
                kind: GgmlType::Q6_K,
                rows: 1,
                cols,
                bytes: vec![0; len],
            };
            assert!(QuantLinear::new("t", q).is_err(), "{cols} {len}");
        }
    }
}
