//! A linear layer that keeps GGUF block-quantized weights (Q4_0/Q4_1/Q8_0) and multiplies
//! f32 activations by them directly, without a dequantized copy.
//!
//! Per 32-weight block with scale `d` (and minimum `m` for Q4_1) and input slice `x`:
//! `Σ x_j·w_j = d·Σ x_j·q_j + m·Σ x_j` (Q4_1), `d·(Σ x_j·q_j − 8·Σ x_j)` (Q4_0),
//! `d·Σ x_j·q_j` (Q8_0): the same weights as [`crate::quant::dequantize`] gives, summed in a
//! different order. Reads 20 (Q4_1) instead of 128 bytes per block when decoding.

use crate::error::{ModelError, Result};
use crate::linear::HostLinear;
use crate::quant::{self, GgmlType, QK};
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
    block_bytes: usize,
    bytes: Arc<Vec<u8>>,
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
    /// Products with at most this many rows use the block GEMV; more rows dequantize the
    /// matrix once per call and use the f32 GEMM.
    pub const GEMV_MAX_ROWS: usize = 16;

    /// Wraps block-quantized rows; `name` is used in errors.
    pub fn new(name: &str, t: QuantizedTensor) -> Result<Self> {
        let block_bytes = match t.kind {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => {
                t.kind.block_layout().map_or(0, |(_, b)| b)
            }
            other => {
                return Err(ModelError::UnsupportedType {
                    name: name.to_string(),
                    kind: other.name(),
                });
            }
        };
        let expected = t.rows.checked_mul(t.cols).and_then(|n| t.kind.byte_size(n));
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
            block_bytes,
            bytes: Arc::new(t.bytes),
        })
    }

    /// The GGUF block type of the weights.
    pub fn ggml_type(&self) -> GgmlType {
        self.kind
    }

    /// `y = x·Wᵀ` for output rows `rows` only, on the calling thread: `x` is `[m, in]`
    /// row-major, `out[(r − rows.start) · m + j] = y[j, r]` (row-major by row), each value the
    /// block dot [`forward_rows`](Self::forward_rows) computes for `m ≤ GEMV_MAX_ROWS`. `sx` is
    /// scratch for the per-block input sums (reused, so repeated calls do not allocate).
    /// Shapes are the caller's to check; a mismatch gives NaN outputs, not a panic.
    pub fn forward_rows_range(
        &self,
        x: &[f32],
        m: usize,
        rows: std::ops::Range<usize>,
        sx: &mut Vec<f32>,
        out: &mut [f32],
    ) {
        let (k, n) = (self.inp, self.out);
        if x.len() != m * k || rows.end > n || rows.start > rows.end || out.len() != rows.len() * m
        {
            out.fill(f32::NAN);
            return;
        }
        sx.clear();
        sx.extend(x.chunks_exact(QK).map(|c| c.iter().sum::<f32>()));
        let nb = k / QK;
        let row_len = nb * self.block_bytes;
        let qdot = crate::arch::best_qdot();
        for (o, slot) in rows.zip(out.chunks_exact_mut(m.max(1))) {
            let row = &self.bytes[o * row_len..(o + 1) * row_len];
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
        if m > Self::GEMV_MAX_ROWS {
            return match HostLinear::new("QuantLinear", self.dequantized(), n, k) {
                Ok(h) => h.forward_rows(x, m),
                Err(_) => vec![f32::NAN; m * n],
            };
        }
        let sx: Vec<f32> = x.chunks_exact(QK).map(|c| c.iter().sum()).collect();
        let nb = k / QK;
        let row_len = nb * self.block_bytes;
        let qdot = crate::arch::best_qdot();
        const BLOCK: usize = 32;
        let mut yt = vec![0f32; n * m];
        yt.par_chunks_mut(BLOCK * m)
            .enumerate()
            .for_each(|(bi, chunk)| {
                for (j, slot) in chunk.chunks_exact_mut(m).enumerate() {
                    let o = bi * BLOCK + j;
                    for (r, s) in slot.iter_mut().enumerate() {
                        let row = &self.bytes[o * row_len..(o + 1) * row_len];
                        *s = qdot(
                            self.kind,
                            row,
                            &x[r * k..(r + 1) * k],
                            &sx[r * nb..(r + 1) * nb],
                        );
                    }
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
        let data = x.into_data().convert::<f32>();
        let y = match data.as_slice::<f32>() {
            Ok(xs) => self.forward_rows(xs, m),
            Err(e) => panic!("QuantLinear: activations are not f32: {e:?}"),
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

    /// Random blocks of `kind` for an `[out, in]` matrix.
    fn random_blocks(kind: GgmlType, out: usize, inp: usize, seed: &mut u64) -> Vec<u8> {
        let mut b = Vec::new();
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
                let xt = Tensor::<Cpu, 2>::from_data(
                    TensorData::new(x.clone(), [m, k]),
                    &Default::default(),
                );
                let yb = LinearLayer::<Cpu>::forward(&lin, xt)
                    .into_data()
                    .into_vec::<f32>()
                    .unwrap();
                assert_eq!(y, yb);
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
    }
}
