//! The float implementations of the linear-layer seam ([`LinearLayer`], from `ternary-layers`):
//! [`FloatLinear`] (Burn's matmul), [`HostLinear`] (host GEMV/GEMM), and the choice between them
//! ([`LinearImpl`]). A conversion swaps in ternary layers per layer with
//! [`Llama::linears_mut`](crate::model::Llama::linears_mut), without touching the model code.

use crate::error::{ModelError, Result};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use ternary_layers::{Linear, LinearLayer, TernaryBackend};

/// Plain float linear layer. Stores `Wᵀ: [in, out]` contiguously so the product is one
/// row-major matmul `x · Wᵀ`.
#[derive(Debug, Clone)]
pub struct FloatLinear<B: Backend> {
    weight_t: Tensor<B, 2>,
}

impl<B: Backend> FloatLinear<B> {
    /// Builds the layer from `W: [out, in]` given row-major in `w`; `name` is used in errors.
    pub fn from_rows(
        name: &str,
        w: &[f32],
        out: usize,
        inp: usize,
        device: &B::Device,
    ) -> Result<Self> {
        if out.checked_mul(inp) != Some(w.len()) || w.is_empty() {
            return Err(ModelError::Shape {
                name: name.to_string(),
                expected: vec![out, inp],
                found: vec![w.len()],
            });
        }
        let mut t = vec![0f32; w.len()];
        for (o, row) in w.chunks_exact(inp).enumerate() {
            for (i, &v) in row.iter().enumerate() {
                t[i * out + o] = v;
            }
        }
        Ok(Self {
            weight_t: Tensor::from_data(TensorData::new(t, [inp, out]), device),
        })
    }
}

impl<B: Backend> LinearLayer<B> for FloatLinear<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x.matmul(self.weight_t.clone())
    }

    fn in_features(&self) -> usize {
        self.weight_t.dims()[0]
    }

    fn out_features(&self) -> usize {
        self.weight_t.dims()[1]
    }

    fn weight(&self) -> Tensor<B, 2> {
        self.weight_t.clone().transpose()
    }

    fn kind(&self) -> String {
        "float".into()
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

/// Float linear layer computed on the host: `W: [out, in]` row-major in memory, rows of `x`
/// copied to the host. Products of up to [`HostLinear::GEMV_MAX_ROWS`] rows (decoding) are
/// row-parallel dot products that stream `W` once; larger ones use matrixmultiply's GEMM.
///
/// Burn's ndarray matmul packs the whole weight matrix on every call, which makes one-token
/// decoding ~10x slower than streaming it; this is the CPU default (see
/// [`LinearImpl::default_for`]).
///
/// `W` is held in `f32`, or in the IEEE `f16` a file stores it in (half the memory; each value
/// is widened exactly, and the products run `ternary_core::kernels::dense_rows_with`, so the
/// results equal the `f32` layer of the same values up to summation order).
#[derive(Debug, Clone)]
pub struct HostLinear {
    weight: HostWeights,
    out: usize,
    inp: usize,
}

/// The storage of a [`HostLinear`]'s `W: [out, in]` row-major (shared handles).
#[derive(Debug, Clone)]
pub enum HostWeights {
    /// `f32` values.
    F32(std::sync::Arc<Vec<f32>>),
    /// IEEE `f16` values, widened exactly when multiplied.
    F16(std::sync::Arc<Vec<half::f16>>),
}

/// Which float linear layer the loaders build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinearImpl {
    /// [`FloatLinear`]: Burn's matmul on the backend's device.
    Burn,
    /// [`HostLinear`]: host-side GEMV/GEMM (CPU backends).
    Host,
    /// [`QuantLinear`](crate::quant_linear::QuantLinear) for weights stored in GGUF block
    /// formats (multiplies the blocks directly), [`HostLinear`] for the rest.
    Quantized,
}

impl LinearImpl {
    /// [`LinearImpl::Host`] on backends whose ternary layers take the host kernels (the ndarray
    /// CPU backend: [`TernaryBackend::auto_path`] is `CpuF32`), [`LinearImpl::Burn`] otherwise.
    pub fn default_for<B: TernaryBackend>() -> Self {
        if B::auto_path() == ternary_layers::LinearPath::CpuF32 {
            Self::Host
        } else {
            Self::Burn
        }
    }

    /// Builds a layer of this kind from `W: [out, in]` row-major.
    pub fn build<B: Backend>(
        self,
        name: &str,
        w: Vec<f32>,
        out: usize,
        inp: usize,
        device: &B::Device,
    ) -> Result<Linear<B>> {
        self.build_shared(name, std::sync::Arc::new(w), out, inp, device)
    }

    /// [`LinearImpl::build`] from a shared `W`: a host layer keeps the handle (no copy), so a
    /// tied output head and the embedding table are one allocation.
    pub fn build_shared<B: Backend>(
        self,
        name: &str,
        w: std::sync::Arc<Vec<f32>>,
        out: usize,
        inp: usize,
        device: &B::Device,
    ) -> Result<Linear<B>> {
        Ok(match self {
            Self::Burn => Box::new(FloatLinear::<B>::from_rows(name, &w, out, inp, device)?),
            Self::Host | Self::Quantized => Box::new(HostLinear::from_shared(name, w, out, inp)?),
        })
    }

    /// Whether float layers of this kind keep their weights in host memory.
    pub fn is_host(self) -> bool {
        matches!(self, Self::Host | Self::Quantized)
    }
}

impl HostLinear {
    /// Products with at most this many rows use the streaming GEMV.
    pub const GEMV_MAX_ROWS: usize = 16;

    /// Builds the layer from `W: [out, in]` row-major; `name` is used in errors.
    pub fn new(name: &str, w: Vec<f32>, out: usize, inp: usize) -> Result<Self> {
        Self::from_shared(name, std::sync::Arc::new(w), out, inp)
    }

    /// [`HostLinear::new`] on a shared `W` (e.g. the embedding table of a tied head).
    pub fn from_shared(
        name: &str,
        w: std::sync::Arc<Vec<f32>>,
        out: usize,
        inp: usize,
    ) -> Result<Self> {
        Self::check(name, w.len(), out, inp)?;
        Ok(Self {
            weight: HostWeights::F32(w),
            out,
            inp,
        })
    }

    /// [`HostLinear::from_shared`] on `f16` values, kept as they are.
    pub fn from_shared_f16(
        name: &str,
        w: std::sync::Arc<Vec<half::f16>>,
        out: usize,
        inp: usize,
    ) -> Result<Self> {
        Self::check(name, w.len(), out, inp)?;
        Ok(Self {
            weight: HostWeights::F16(w),
            out,
            inp,
        })
    }

    fn check(name: &str, len: usize, out: usize, inp: usize) -> Result<()> {
        if out.checked_mul(inp) != Some(len) || len == 0 {
            return Err(ModelError::Shape {
                name: name.to_string(),
                expected: vec![out, inp],
                found: vec![len],
            });
        }
        Ok(())
    }

    /// The shared handle on `W: [out, in]` row-major when it is held in `f32` (cheap to clone).
    pub fn weight_arc(&self) -> Option<&std::sync::Arc<Vec<f32>>> {
        match &self.weight {
            HostWeights::F32(w) => Some(w),
            HostWeights::F16(_) => None,
        }
    }

    /// `W` as held.
    pub fn weights(&self) -> &HostWeights {
        &self.weight
    }

    /// The shared handle on `W` when it is held in `f16`.
    pub fn weight_f16_arc(&self) -> Option<&std::sync::Arc<Vec<half::f16>>> {
        match &self.weight {
            HostWeights::F16(w) => Some(w),
            HostWeights::F32(_) => None,
        }
    }

    /// `y = x·Wᵀ` for `f16` weights: blocks of 64 output rows in parallel, each by
    /// `dense_rows_with` at the detected level (NaN outputs if it refused the shapes).
    fn forward_rows_f16(&self, w: &[half::f16], x: &[f32], m: usize) -> Vec<f32> {
        use rayon::prelude::*;
        let (k, n) = (self.inp, self.out);
        const BLOCK: usize = 64;
        let level = ternary_core::kernels::Level::detect();
        let mut yt = vec![0f32; n * m]; // [out, m]
        yt.par_chunks_mut(BLOCK * m.max(1))
            .enumerate()
            .for_each(|(bi, chunk)| {
                let r0 = bi * BLOCK;
                let rows = r0..(r0 + BLOCK).min(n);
                if ternary_core::kernels::dense_rows_with(level, w, k, x, m, rows, chunk).is_err() {
                    chunk.fill(f32::NAN);
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

    /// `y = x·Wᵀ` on host rows: `x` is `[m, in]` row-major, the result `[m, out]`.
    pub fn forward_rows(&self, x: &[f32], m: usize) -> Vec<f32> {
        use rayon::prelude::*;
        let (k, n) = (self.inp, self.out);
        debug_assert_eq!(x.len(), m * k);
        let weight = match &self.weight {
            HostWeights::F32(w) => w,
            HostWeights::F16(w) => return self.forward_rows_f16(w, x, m),
        };
        if m <= Self::GEMV_MAX_ROWS {
            // y[r, o] = dot(x_r, W_o); parallel over blocks of output rows.
            const BLOCK: usize = 64;
            let dot = ternary_core::kernels::DotF32::detect();
            let mut yt = vec![0f32; n * m]; // [out, m]
            yt.par_chunks_mut(BLOCK * m)
                .enumerate()
                .for_each(|(bi, chunk)| {
                    for (j, slot) in chunk.chunks_exact_mut(m).enumerate() {
                        let o = bi * BLOCK + j;
                        let w = &weight[o * k..(o + 1) * k];
                        for (r, s) in slot.iter_mut().enumerate() {
                            *s = dot.dot(&x[r * k..(r + 1) * k], w);
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
        } else {
            use ndarray::{ArrayView2, ShapeBuilder};
            // Shapes agree by construction, so the views cannot fail; fall back to GEMV rows
            // if they ever did.
            let (Ok(a), Ok(b)) = (
                ArrayView2::from_shape((m, k), x),
                ArrayView2::from_shape((k, n).strides((1, k)), &weight[..]),
            ) else {
                return (0..m)
                    .flat_map(|r| self.forward_rows(&x[r * k..(r + 1) * k], 1))
                    .collect();
            };
            a.dot(&b).into_iter().collect()
        }
    }
}

impl<B: Backend> LinearLayer<B> for HostLinear {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let device = x.device();
        let [m, k] = x.dims();
        assert_eq!(k, self.inp, "HostLinear: input width {k} != {}", self.inp);
        let y = match ternary_layers::to_rows(x) {
            Ok(xs) => self.forward_rows(&xs, m),
            Err(e) => panic!("HostLinear: cannot read the activations: {e}"),
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
        let w = match &self.weight {
            HostWeights::F32(w) => w.as_ref().clone(),
            HostWeights::F16(w) => w.iter().map(|v| v.to_f32()).collect(),
        };
        Tensor::from_data(
            TensorData::new(w, [self.out, self.inp]),
            &Default::default(),
        )
    }

    fn kind(&self) -> String {
        match self.weight {
            HostWeights::F32(_) => "float-host".into(),
            HostWeights::F16(_) => "float-host-f16".into(),
        }
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ternary_layers::Cpu;

    /// f64 reference `x·Wᵀ`.
    fn reference(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f64> {
        let mut y = vec![0f64; m * n];
        for r in 0..m {
            for o in 0..n {
                y[r * n + o] = (0..k)
                    .map(|i| f64::from(x[r * k + i]) * f64::from(w[o * k + i]))
                    .sum();
            }
        }
        y
    }

    fn lcg(seed: &mut u64) -> f32 {
        *seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    #[test]
    fn host_and_burn_linears_should_match_f64_reference() {
        let mut seed = 42;
        let device = Default::default();
        for &(m, k, n) in &[
            (1, 1, 1),
            (1, 31, 33),
            (2, 64, 65),
            (4, 576, 63),
            (16, 33, 31),
            (17, 65, 576),
            (1, 1536, 32),
        ] {
            let x: Vec<f32> = (0..m * k).map(|_| lcg(&mut seed)).collect();
            let w: Vec<f32> = (0..n * k).map(|_| lcg(&mut seed)).collect();
            let want = reference(&x, &w, m, k, n);
            let xt = Tensor::<Cpu, 2>::from_data(TensorData::new(x.clone(), [m, k]), &device);
            for kind in [LinearImpl::Burn, LinearImpl::Host] {
                let lin = kind.build::<Cpu>("t", w.clone(), n, k, &device).unwrap();
                assert_eq!((lin.in_features(), lin.out_features()), (k, n));
                let y = lin
                    .forward(xt.clone())
                    .into_data()
                    .into_vec::<f32>()
                    .unwrap();
                assert_eq!(y.len(), m * n);
                for (i, (&g, &r)) in y.iter().zip(&want).enumerate() {
                    let tol = 1e-5 * (k as f64).sqrt() * 4.0;
                    assert!(
                        (f64::from(g) - r).abs() <= tol,
                        "{kind:?} {m}x{k}x{n} [{i}]: {g} vs {r}"
                    );
                }
                let back = lin.weight().into_data().into_vec::<f32>().unwrap();
                assert_eq!(back, w, "{kind:?} weight()");
            }
        }
    }

    #[test]
    fn bad_shapes_should_be_errors() {
        assert!(HostLinear::new("w", vec![0.0; 5], 2, 3).is_err());
        assert!(FloatLinear::<Cpu>::from_rows("w", &[0.0; 5], 2, 3, &Default::default()).is_err());
        assert!(HostLinear::new("w", vec![], 0, 3).is_err());
    }
}
