//! BitNet b1.58 W1.58A8 linear layers, reproducing transformers' `BitLinear` /
//! `AutoBitLinear` (`transformers/integrations/bitnet.py`, 5.x):
//!
//! - weights: one ternary matrix `t ∈ {−1, 0, 1}` per tensor; from float master weights
//!   [`ternarize_absmean`]: `s = 1 / max(mean|W|, 1e-5)`, `t = clamp(round(W·s), −1, 1)`;
//!   from packed checkpoints [`unpack_ternary`] (4 trits per byte);
//! - activations, per token `j`: `k_j = 127 / max(max_c |x[j, c]|, 1e-5)`,
//!   `q[j, c] = clamp(round(x[j, c]·k_j), −128, 127)` with round half to even
//!   ([`quantize_activations`]);
//! - output: `y[j, r] = (Σ_c q[j, c]·t[r, c]) / (k_j · d)`, the integer sum first, then one
//!   division by the product `k_j·d` (transformers' `post_quant_process`), where the per-tensor
//!   divisor `d` is the checkpoint's `weight_scale` (BitLinear), `1/weight_scale`
//!   (AutoBitLinear offline) or `s` (online, master weights).
//!
//! [`BitLinear`] computes this on the host with the int8 ternary GEMM (`gemm_i8`, exact integer
//! sums) on the ndarray backend, and elsewhere as the same arithmetic in Burn tensor ops
//! (`q` built by Burn's half-to-even `round`, the product by [`TernaryLinear`] on the device).

use crate::error::{ModelError, Result};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use std::sync::Arc;
use ternary_core::kernels::gemm_i8;
use ternary_core::matrix::words_per_row;
use ternary_core::{QuantizedActivations, Scales, TernaryMatrix};
use ternary_layers::{LinearLayer, TernaryBackend, TernaryLinear, to_rows};

/// Floor on a token's (or a weight tensor's) absolute maximum (mean) before dividing by it:
/// transformers' `clamp(min=1e-5)`.
pub const BITNET_EPS: f32 = 1e-5;

/// Per-token int8 quantization of `x: [n, cols]` row-major, as transformers'
/// `BitLinear.activation_quant` and `ActQuant`: `k_j = 127 / max(max_c |x[j, c]|, 1e-5)`,
/// `q = clamp(round_half_even(x·k_j), −128, 127)`. Returns `(q, k)`.
///
/// `|x·k_j| ≤ 127` up to one rounding of the product, so `q` never reaches −128: the codes
/// fit the `[−127, 127]` of [`QuantizedActivations`]. A token holding NaN or ±∞ gets `k_j` NaN
/// and zero codes (its output is NaN, as in a float product).
pub fn quantize_activations(x: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    let n = x.len().checked_div(cols).unwrap_or(0);
    let mut q = vec![0i8; n * cols];
    let mut k = vec![0f32; n];
    for (j, row) in x.chunks_exact(cols.max(1)).take(n).enumerate() {
        if row.iter().any(|v| !v.is_finite()) {
            k[j] = f32::NAN;
            continue;
        }
        let amax = row.iter().fold(0f32, |m, v| m.max(v.abs()));
        let kj = 127.0 / amax.max(BITNET_EPS);
        k[j] = kj;
        for (c, &v) in q[j * cols..(j + 1) * cols].iter_mut().zip(row) {
            *c = (v * kj).round_ties_even().clamp(-127.0, 127.0) as i8;
        }
    }
    (q, k)
}

/// Training's weight quantization (transformers' `WeightQuant`): the per-tensor
/// `s = 1 / max(mean|W|, 1e-5)` (the mean summed in f64, rounded once to f32) and the trits
/// `t = clamp(round_half_even(W·s), −1, 1)` as a `[rows, cols]` matrix with unit scales.
/// Non-finite weights are an error naming `name`.
pub fn ternarize_absmean(
    name: &str,
    w: &[f32],
    rows: usize,
    cols: usize,
) -> Result<(TernaryMatrix, f32)> {
    if rows.checked_mul(cols) != Some(w.len()) || w.is_empty() {
        return Err(ModelError::Shape {
            name: name.to_string(),
            expected: vec![rows, cols],
            found: vec![w.len()],
        });
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(ModelError::Input(format!(
            "tensor '{name}': non-finite weight {} at index {i}",
            w[i]
        )));
    }
    let mean = (w.iter().map(|&v| f64::from(v.abs())).sum::<f64>() / w.len() as f64) as f32;
    let s = 1.0 / mean.max(BITNET_EPS);
    let wpr = words_per_row(cols);
    let (mut plus, mut minus) = (vec![0u32; rows * wpr], vec![0u32; rows * wpr]);
    for (r, row) in w.chunks_exact(cols).enumerate() {
        for (c, &v) in row.iter().enumerate() {
            let t = (v * s).round_ties_even();
            let bit = 1u32 << (c % 32);
            if t >= 1.0 {
                plus[r * wpr + c / 32] |= bit;
            } else if t <= -1.0 {
                minus[r * wpr + c / 32] |= bit;
            }
        }
    }
    let m = TernaryMatrix::from_planes(rows, cols, plus, minus, Scales::per_row(vec![1.0; rows]))?;
    Ok((m, s))
}

/// Decodes transformers' packed ternary weight (`pack_weights`): `uint8 [rows/4, cols]`, where
/// bits `2i, 2i+1` of byte `[p, c]` hold `t[i·rows/4 + p, c] + 1` (`0b00` → −1, `0b01` → 0,
/// `0b10` → +1), straight into bit planes, unit scales. The code `0b11` (a 2) is an error
/// naming `name`, as is a byte count other than `rows/4 · cols` or `rows` not a multiple of 4.
pub fn unpack_ternary(
    name: &str,
    packed: &[u8],
    rows: usize,
    cols: usize,
) -> Result<TernaryMatrix> {
    let p = rows / 4;
    if !rows.is_multiple_of(4) || p.checked_mul(cols) != Some(packed.len()) {
        return Err(ModelError::Shape {
            name: name.to_string(),
            expected: vec![rows.div_ceil(4), cols],
            found: vec![packed.len()],
        });
    }
    let wpr = words_per_row(cols);
    let (mut plus, mut minus) = (vec![0u32; rows * wpr], vec![0u32; rows * wpr]);
    for (pr, bytes) in packed.chunks_exact(cols.max(1)).enumerate().take(p) {
        for (c, &b) in bytes.iter().enumerate() {
            let bit = 1u32 << (c % 32);
            for i in 0..4 {
                let word = (i * p + pr) * wpr + c / 32;
                match (b >> (2 * i)) & 3 {
                    0 => minus[word] |= bit,
                    1 => {}
                    2 => plus[word] |= bit,
                    _ => {
                        return Err(ModelError::Input(format!(
                            "tensor '{name}': packed byte {b:#010b} at [{pr}, {c}] holds the \
                             code 0b11, which is not a trit"
                        )));
                    }
                }
            }
        }
    }
    Ok(TernaryMatrix::from_planes(
        rows,
        cols,
        plus,
        minus,
        Scales::per_row(vec![1.0; rows]),
    )?)
}

/// Where [`BitLinear`] computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BitLinearPath {
    /// Host int8 ternary GEMM (the ndarray backend).
    HostInt8,
    /// Burn tensor ops for the quantization and [`TernaryLinear`]'s backend path for the
    /// product (any backend).
    Burn,
}

/// A W1.58A8 linear layer: `y[j, r] = (Σ_g s[r, g]·Σ_{c∈g} q[j, c]·t[r, c]) / (k_j·d)` with the
/// activation codes `q`, `k` of [`quantize_activations`], the matrix's scales `s` (1 for
/// Hugging Face checkpoints) and the per-tensor divisor `d`. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct BitLinear<B: Backend> {
    layer: TernaryLinear<B>,
    matrix: Arc<TernaryMatrix>,
    divisor: f32,
    path: BitLinearPath,
}

impl<B: Backend> BitLinear<B> {
    /// A layer with ternary weights `matrix` (`[out, in]`) and divisor `d` (finite, non-zero),
    /// on `device`, computing on `path`; `name` is used in errors.
    pub fn new(
        name: &str,
        matrix: TernaryMatrix,
        divisor: f32,
        path: BitLinearPath,
        device: &B::Device,
    ) -> Result<Self> {
        if !divisor.is_finite() || divisor == 0.0 {
            return Err(ModelError::Input(format!(
                "tensor '{name}': weight scale divisor {divisor} is not finite and non-zero"
            )));
        }
        let layer = TernaryLinear::new(matrix, device)?;
        Ok(Self {
            matrix: Arc::clone(layer.matrix_arc()?),
            layer,
            divisor,
            path,
        })
    }

    /// The ternary weights.
    pub fn matrix(&self) -> &TernaryMatrix {
        &self.matrix
    }

    /// The shared handle on the ternary weights (cheap to clone).
    pub fn matrix_arc(&self) -> &Arc<TernaryMatrix> {
        &self.matrix
    }

    /// The per-tensor divisor `d`.
    pub fn divisor(&self) -> f32 {
        self.divisor
    }

    /// Where the layer computes.
    pub fn path(&self) -> BitLinearPath {
        self.path
    }

    fn forward_host(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let device = x.device();
        let [n, cols] = x.dims();
        let rows = self.matrix.rows();
        let xs = match to_rows(x) {
            Ok(v) => v,
            Err(e) => panic!("BitLinear: {e}"),
        };
        let (q, k) = quantize_activations(&xs, cols);
        let mut y = vec![0f32; n * rows];
        let acts = QuantizedActivations::from_parts(n, cols, &q, vec![1.0; n])
            .and_then(|a| gemm_i8(&self.matrix, &a, &mut y));
        if let Err(e) = acts {
            panic!("BitLinear: {e}");
        }
        for (row, &kj) in y.chunks_exact_mut(rows.max(1)).zip(&k) {
            let den = kj * self.divisor;
            for v in row {
                *v /= den;
            }
        }
        Tensor::from_data(TensorData::new(y, [n, rows]), &device)
    }
}

impl<B: TernaryBackend> BitLinear<B> {
    fn forward_burn(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, _] = x.dims();
        let amax = x.clone().abs().max_dim(1).clamp_min(BITNET_EPS);
        let k = Tensor::<B, 2>::full([n, 1], 127.0, &x.device()).div(amax);
        let q = x.mul(k.clone()).round().clamp(-128.0, 127.0);
        self.layer.forward(q).div(k.mul_scalar(self.divisor))
    }
}

impl<B: TernaryBackend> LinearLayer<B> for BitLinear<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        match self.path {
            BitLinearPath::HostInt8 => self.forward_host(x),
            BitLinearPath::Burn => self.forward_burn(x),
        }
    }

    fn in_features(&self) -> usize {
        self.matrix.cols()
    }

    fn out_features(&self) -> usize {
        self.matrix.rows()
    }

    /// The effective weight `t·s / d` (activation quantization aside).
    fn weight(&self) -> Tensor<B, 2> {
        let mut w = self.matrix.dequantize();
        for v in &mut w {
            *v /= self.divisor;
        }
        Tensor::from_data(
            TensorData::new(w, [self.matrix.rows(), self.matrix.cols()]),
            self.layer.device(),
        )
    }

    fn kind(&self) -> String {
        match self.path {
            BitLinearPath::HostInt8 => "bitnet-w1.58a8-host".into(),
            BitLinearPath::Burn => "bitnet-w1.58a8".into(),
        }
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ternary_core::ScaleLayout;
    use ternary_layers::Cpu;
    use ternary_testkit::{random_f32, random_matrix};

    #[test]
    fn activation_quantization_should_follow_transformers() {
        // max 2 → k = 63.5: 1 → 63.5 → 64 (tie to even), −0.5 → −31.75 → −32, 2 → 127.
        let x = [1.0f32, -0.5, 2.0, 0.0, 0.25, -2.0];
        let (q, k) = quantize_activations(&x, 3);
        assert_eq!(k, vec![63.5, 63.5]);
        assert_eq!(q, vec![64, -32, 127, 0, 16, -127]);
        // 0.5·127/… ties: 1.5 → 2, 2.5 → 2, −2.5 → −2.
        let x = [
            1.5f32 / 127.0 * 4.0,
            2.5 / 127.0 * 4.0,
            -2.5 / 127.0 * 4.0,
            4.0,
        ];
        let (q, _) = quantize_activations(&x, 4);
        assert_eq!(&q[..3], &[2, 2, -2]);
        // The ε floor: a token below 1e-5 keeps the coarse grid 127/1e-5 (our absmax rule
        // would give ±127 for its largest value).
        let tiny = [1e-6f32, -5e-7];
        let (q, k) = quantize_activations(&tiny, 2);
        assert_eq!(k, vec![127.0 / 1e-5]);
        assert_eq!(q, vec![13, -6]);
        let ours = QuantizedActivations::quantize(&tiny, 1, 2).unwrap();
        assert_eq!(&ours.row(0)[..2], &[127, -64]);
        // All zero: k = 127/1e-5, codes 0. Non-finite: NaN scale, codes 0.
        let (q, k) = quantize_activations(&[0.0, 0.0, f32::NAN, 1.0], 2);
        assert_eq!(q, vec![0, 0, 0, 0]);
        assert_eq!(k[0], 127.0 / 1e-5);
        assert!(k[1].is_nan());
    }

    #[test]
    fn ternarize_should_follow_weight_quant() {
        // mean|W| = 0.5, s = 2: 0.2 → 0.4 → 0; 0.25 → 0.5 → 0 (tie to even); 0.3 → 1; −1.25 → −1.
        let w = [0.2f32, 0.25, 0.3, -1.25];
        let (m, s) = ternarize_absmean("w", &w, 2, 2).unwrap();
        assert_eq!(s, 2.0);
        assert_eq!(m.to_trits(), vec![0, 0, 1, -1]);
        let (m, s) = ternarize_absmean("z", &[0.0; 4], 1, 4).unwrap();
        assert_eq!((s, m.nnz()), (1e5, 0));
        assert!(ternarize_absmean("w", &[1.0, f32::NAN], 1, 2).is_err());
        assert!(ternarize_absmean("w", &[1.0; 3], 2, 2).is_err());
    }

    /// transformers' `pack_weights` on `[rows, cols]` trits (rows a multiple of 4).
    fn pack(t: &[i8], rows: usize, cols: usize) -> Vec<u8> {
        let p = rows / 4;
        let mut out = vec![0u8; p * cols];
        for i in 0..4 {
            for pr in 0..p {
                for c in 0..cols {
                    out[pr * cols + c] |= ((t[(i * p + pr) * cols + c] + 1) as u8) << (2 * i);
                }
            }
        }
        out
    }

    #[test]
    fn unpack_should_invert_transformers_pack() {
        // The docstring example of transformers' `unpack_weights`.
        let packed = [0b1010_0001u8, 0b0001_1000, 0b1001_0000, 0b0000_1010];
        let m = unpack_ternary("w", &packed, 8, 2).unwrap();
        assert_eq!(
            m.to_trits(),
            vec![0, -1, -1, 1, -1, 1, -1, 1, 1, 0, 0, -1, 1, -1, 1, -1]
        );
        let mut rng = ternary_testkit::rng();
        for &(rows, cols) in &[(4, 1), (8, 33), (12, 64), (16, 65), (4, 129)] {
            let t = random_matrix(&mut rng, rows, cols, ScaleLayout::PerRow).to_trits();
            let m = unpack_ternary("w", &pack(&t, rows, cols), rows, cols).unwrap();
            assert_eq!(m.to_trits(), t, "{rows}x{cols}");
        }
        assert!(unpack_ternary("w", &[0b11], 4, 1).is_err());
        assert!(unpack_ternary("w", &[0; 3], 4, 2).is_err());
        assert!(unpack_ternary("w", &[0; 2], 6, 2).is_err());
    }

    #[test]
    fn host_and_burn_paths_should_agree_with_f64_reference() {
        let device = Default::default();
        let mut rng = ternary_testkit::rng();
        for &(n, rows, cols) in &[(1, 1, 1), (3, 5, 64), (2, 64, 65), (17, 33, 256)] {
            let m = random_matrix(&mut rng, rows, cols, ScaleLayout::PerRow);
            let (t, sr) = (m.to_trits(), m.scales().values().to_vec());
            let mut x = random_f32(&mut rng, n * cols, -3.0, 3.0);
            x[..cols].iter_mut().for_each(|v| *v *= 1e-7); // a token under the ε floor
            let (q, k) = quantize_activations(&x, cols);
            let d = 0.37f32;
            let xt = Tensor::<Cpu, 2>::from_data(TensorData::new(x.clone(), [n, cols]), &device);
            for path in [BitLinearPath::HostInt8, BitLinearPath::Burn] {
                let l = BitLinear::<Cpu>::new("w", m.clone(), d, path, &device).unwrap();
                let y = to_rows(l.forward(xt.clone())).unwrap();
                for j in 0..n {
                    for r in 0..rows {
                        let prod =
                            |c: usize| i64::from(q[j * cols + c]) * i64::from(t[r * cols + c]);
                        let s: i64 = (0..cols).map(prod).sum();
                        let mag: i64 = (0..cols).map(|c| prod(c).abs()).sum();
                        let den = f64::from(k[j]) * f64::from(d);
                        let want = s as f64 * f64::from(sr[r]) / den;
                        // The host sums are exact; the Burn path sums `q·t·s` in f32.
                        let tol = 1e-6 * (mag as f64 * f64::from(sr[r].abs()) / den);
                        let got = f64::from(y[j * rows + r]);
                        assert!(
                            (got - want).abs() <= tol,
                            "{path:?} {n}x{rows}x{cols} [{j},{r}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}
