//! [`TernaryLinear`]: a drop-in for `burn::nn::Linear` with ternary weights.
//!
//! The layer computes, for each input row `x` (the last dimension of the input),
//!
//! `y[r] = Σ_c s[r, g(c)] · t[r, c] · (x[c] · d[c]) + b[r]`,
//!
//! i.e. `y = Q·(x ⊙ d) + b` with `Q` the [`TernaryMatrix`] (`rows = out`, `cols = in`), an
//! optional per-input-channel scale `d` (activation-aware conversion folds its channel
//! scaling into `d`) and an optional bias `b`. Shapes follow `burn::nn::Linear`:
//! `[..., in] → [..., out]`.
//!
//! A two-plane layer ([`LinearWeights::Two`], [`TernaryLinear::from_weights`]) has
//! `Q = M₁ + M₂` (two plane pairs; `s·(3·T₁ + T₂)` from the 9-level grid): every path computes
//! `M₁·x' + M₂·x'` on the same `x' = x ⊙ d` (the int8 path on the same quantized activations).
//!
//! Forward paths ([`LinearPath`]):
//! - [`LinearPath::CpuF32`]: rows copied to the host, `ternary_core::kernels::gemm_f32`.
//! - [`LinearPath::CpuInt8`]: per-token int8 activations ([`QuantizedActivations`]) and
//!   `ternary_core::kernels::gemm_i8` (exact integer sums, then `f32` scaling).
//! - [`LinearPath::Cube`]: `ternary-kernels` GEMV/GEMM on the device buffers of Burn's CubeCL
//!   backends (`CubeBackend` on any CubeCL runtime, e.g. wgpu or CUDA; features `wgpu` /
//!   `cuda`), no host copy.
//! - [`LinearPath::Float`]: the dequantized weight `(Q·diag(d))ᵀ` cached on the layer's device
//!   and Burn's matmul; works on every backend.
//! - [`LinearPath::Auto`]: the backend's choice ([`TernaryBackend`]):
//!   [`LinearPath::CpuF32`] on the ndarray backend in `f32` ([`Cpu`](crate::Cpu)),
//!   [`LinearPath::Cube`] on CubeCL backends with `f32` activations, [`LinearPath::Float`]
//!   elsewhere and for inputs that track gradients (`Autodiff`).
//!
//! The host matrix sits behind an [`Arc`]: clones share it, and the CPU paths read it in place
//! (a one-row decode step copies the activations, never the weights).
//!
//! Persistence: a Burn [`Module`] whose record ([`TernaryLinearRecord`]) holds the planes as
//! `u32` words, the scales, their layout, the dims, the bias and the input scale, validated when
//! deserialized; and single-layer safetensors files through `ternary_core::io`
//! ([`TernaryLinear::save_safetensors`], [`TernaryLinear::load_safetensors`]).
//! For records from untrusted sources use a self-describing recorder (e.g. Burn's
//! `NamedMpkBytesRecorder`): Burn 0.21's `BinBytesRecorder` panics inside Burn on some garbage
//! inputs before our validation runs.

use std::any::Any;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use burn::module::{
    AutodiffModule, Content, Devices, Module, ModuleDisplay, ModuleDisplayDefault, ModuleMapper,
    ModuleVisitor,
};
use burn::record::{PrecisionSettings, Record};
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{DType, Tensor, TensorData, TensorPrimitive};
use serde::{Deserialize, Serialize};
use ternary_core::io::{self, FloatTensor, Storage, TensorRef};
use ternary_core::quant::{QuantConfig, quantize};
use ternary_core::{QuantizedActivations, ScaleLayout, Scales, TernaryMatrix, TwoPlaneMatrix};

use crate::backend::{DeviceCache, NO_GRADIENT, TernaryBackend, unsupported};
use crate::error::{LayerError, Result};
use crate::linear::to_rows;
use crate::weights::LinearWeights;

/// How [`TernaryLinear::forward`] computes the product.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum LinearPath {
    /// The backend's choice ([`TernaryBackend::auto_path`]): [`LinearPath::CpuF32`] on the
    /// ndarray backend, [`LinearPath::Cube`] on CubeCL backends (with `f32` activations, else
    /// [`LinearPath::Float`]), and [`LinearPath::Float`] for inputs that track gradients.
    #[default]
    Auto,
    /// Host `f32` ternary GEMM: `y[j, r] = Σ_c s[r, g(c)] · t[r, c] · x[j, c]`.
    CpuF32,
    /// Host int8 ternary GEMM: `x[j] ≈ s_j · q[j]` per token (`q ∈ [−127, 127]`), exact integer
    /// sums per scale group, `y[j, r] = s_j · Σ_g s[r, g] · Σ_{c ∈ g} q[j, c] · t[r, c]`.
    CpuInt8,
    /// Host int8 ternary GEMM on two int8 codes per token
    /// ([`QuantizedActivations::quantize_two`]): `x[j] ≈ s₁·q₁ + s₂·q₂`, `q₂` the codes of the
    /// rounding residual, `|error| ≤ max_c |x[j, c]| / 64516` (about 16-bit activations), and
    /// `y[j] = P(q₁) + P(q₂)` with `P` [`LinearPath::CpuInt8`]'s product of one code. The
    /// accuracy of [`LinearPath::CpuF32`] at the cost of two int8 products, which read the
    /// weights once; faster than `CpuF32` where its kernels are compute-bound (AVX2).
    CpuInt8x2,
    /// Dequantized weights cached on the device and Burn's matmul (any backend).
    Float,
    /// `ternary-kernels` on the device: `y[j, r] = Σ_c s[r, g(c)] · t[r, c] · x[j, c]` read
    /// straight from the bit planes (2 bits per weight in device memory). Needs Burn's
    /// `CubeBackend` (this crate's `wgpu` / `cuda` feature; with `fusion` also the fused
    /// backend) and `f32` activations; elsewhere [`TernaryLinear::try_forward`] errors.
    Cube,
}

impl LinearPath {
    /// The path taken on backend `B` for an input that does not track gradients (resolves
    /// [`LinearPath::Auto`] with [`TernaryBackend::auto_path`]).
    pub fn resolve<B: TernaryBackend>(self) -> LinearPath {
        match self {
            LinearPath::Auto => B::auto_path(),
            other => other,
        }
    }

    /// A short lowercase name (`"auto"`, `"cpu-f32"`, `"cpu-int8"`, `"cpu-int8x2"`, `"float"`,
    /// `"cube"`).
    pub fn name(self) -> &'static str {
        match self {
            LinearPath::Auto => "auto",
            LinearPath::CpuF32 => "cpu-f32",
            LinearPath::CpuInt8 => "cpu-int8",
            LinearPath::CpuInt8x2 => "cpu-int8x2",
            LinearPath::Float => "float",
            LinearPath::Cube => "cube",
        }
    }
}

impl std::fmt::Display for LinearPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for LinearPath {
    type Err = LayerError;

    fn from_str(s: &str) -> Result<Self> {
        Ok(match s {
            "auto" => LinearPath::Auto,
            "cpu-f32" => LinearPath::CpuF32,
            "cpu-int8" => LinearPath::CpuInt8,
            "cpu-int8x2" => LinearPath::CpuInt8x2,
            "float" => LinearPath::Float,
            "cube" => LinearPath::Cube,
            other => {
                return Err(LayerError::Invalid(format!(
                    "unknown linear path {other:?} (auto | cpu-f32 | cpu-int8 | cpu-int8x2 | float | cube)"
                )));
            }
        })
    }
}

/// The activations of the host kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HostActivations {
    F32,
    Int8,
    Int8x2,
}

/// The float path's device tensors: `Wᵀ = (Q·diag(d))ᵀ: [in, out]` and the bias `[out]`.
#[derive(Debug, Clone)]
struct FloatWeights<B: Backend> {
    weight_t: Tensor<B, 2>,
    bias: Option<Tensor<B, 1>>,
}

/// The cube path's small device tensors: the input scale `d` and the bias, `[in]` / `[out]`.
#[derive(Debug, Clone)]
struct CubeVectors<B: Backend> {
    input_scale: Option<Tensor<B, 1>>,
    bias: Option<Tensor<B, 1>>,
}

/// A linear layer with ternary weights: `y = Q·(x ⊙ d) + b`. See the [module docs](self).
#[derive(Debug, Clone)]
pub struct TernaryLinear<B: Backend> {
    weights: LinearWeights,
    bias: Option<Arc<Vec<f32>>>,
    input_scale: Option<Arc<Vec<f32>>>,
    path: LinearPath,
    device: B::Device,
    /// Built on first use of the float path; reset when the weights or device change.
    float_cache: OnceLock<FloatWeights<B>>,
    /// The cube path's device tensors, built on first use; reset like `float_cache`.
    cube_vectors: OnceLock<CubeVectors<B>>,
    /// The planes uploaded by the cube path, per plane and device; reset when the weights
    /// change.
    cube_cache: [DeviceCache; 2],
}

fn check_vector(what: &str, v: &[f32], len: usize) -> Result<()> {
    if v.len() != len {
        return Err(LayerError::Shape(format!(
            "{what} has {} values, the layer needs {len}",
            v.len()
        )));
    }
    if let Some(i) = v.iter().position(|x| !x.is_finite()) {
        return Err(LayerError::Invalid(format!(
            "{what} holds a non-finite value at index {i}: {}",
            v[i]
        )));
    }
    Ok(())
}

impl<B: Backend> TernaryLinear<B> {
    /// A layer `y = Q·x` (no bias, no input scale) on `device`, [`LinearPath::Auto`].
    pub fn new(matrix: TernaryMatrix, device: &B::Device) -> Result<Self> {
        Self::from_weights(matrix, device)
    }

    /// A layer with one or two trit-planes (`y = Q·x` or `y = M₁·x + M₂·x`), no bias or input
    /// scale, on `device`, [`LinearPath::Auto`].
    pub fn from_weights(weights: impl Into<LinearWeights>, device: &B::Device) -> Result<Self> {
        Ok(Self {
            weights: weights.into(),
            bias: None,
            input_scale: None,
            path: LinearPath::Auto,
            device: device.clone(),
            float_cache: OnceLock::new(),
            cube_vectors: OnceLock::new(),
            cube_cache: Default::default(),
        })
    }

    /// Adds the bias `b` (`rows` finite values): `y = Q·(x ⊙ d) + b`.
    pub fn with_bias(mut self, bias: Vec<f32>) -> Result<Self> {
        check_vector("bias", &bias, self.weights.rows())?;
        self.bias = Some(Arc::new(bias));
        self.float_cache = OnceLock::new();
        self.cube_vectors = OnceLock::new();
        Ok(self)
    }

    /// Adds the input scale `d` (`cols` finite values): `y = Q·(x ⊙ d) + b`.
    pub fn with_input_scale(mut self, d: Vec<f32>) -> Result<Self> {
        check_vector("input scale", &d, self.weights.cols())?;
        self.input_scale = Some(Arc::new(d));
        self.float_cache = OnceLock::new();
        self.cube_vectors = OnceLock::new();
        Ok(self)
    }

    /// Quantizes a `burn::nn::Linear` (weight stored `[in, out]`, optional bias `[out]`) with
    /// `cfg`: `Q = quantize(Wᵀ)` row by output channel, the bias copied, on the weight's device.
    pub fn from_linear(linear: &burn::nn::Linear<B>, cfg: &QuantConfig) -> Result<Self> {
        let weight = linear.weight.val();
        let device = weight.device();
        let [inp, out] = weight.dims();
        // Burn's `Linear` holds W as [in, out]; transposing gives PyTorch's [out, in] rows.
        let w = to_rows(weight.transpose())?;
        let (matrix, _) = quantize(&w, out, inp, cfg)?;
        let layer = Self::new(matrix, &device)?;
        match &linear.bias {
            Some(b) => {
                let b = crate::linear::to_host(b.val())
                    .map_err(|e| LayerError::Invalid(format!("cannot read the bias: {e}")))?;
                layer.with_bias(b)
            }
            None => Ok(layer),
        }
    }

    /// The weights: one trit-plane pair or two (`out × in`).
    pub fn weights(&self) -> &LinearWeights {
        &self.weights
    }

    /// Trit-planes: 1 or 2.
    pub fn planes(&self) -> usize {
        self.weights.planes()
    }

    /// The ternary weights `Q` (`out × in`) of a one-plane layer;
    /// [`LayerError::OnePlaneOnly`] for a two-plane layer (use [`weights`](Self::weights)).
    pub fn matrix(&self) -> Result<&TernaryMatrix> {
        self.weights
            .one_plane("TernaryLinear::matrix")
            .map(|m| m.as_ref())
    }

    /// The shared handle on a one-plane layer's weights (cheap to clone); an error like
    /// [`matrix`](Self::matrix).
    pub fn matrix_arc(&self) -> Result<&Arc<TernaryMatrix>> {
        self.weights.one_plane("TernaryLinear::matrix_arc")
    }

    /// The bias `b`, if any (a copy).
    pub fn bias(&self) -> Option<Vec<f32>> {
        self.bias.as_ref().map(|b| b.as_ref().clone())
    }

    /// The input scale `d`, if any.
    pub fn input_scale(&self) -> Option<&[f32]> {
        self.input_scale.as_deref().map(Vec::as_slice)
    }

    /// Selects the forward path.
    pub fn set_path(&mut self, p: LinearPath) {
        self.path = p;
    }

    /// [`set_path`](Self::set_path) by value.
    pub fn with_path(mut self, p: LinearPath) -> Self {
        self.path = p;
        self
    }

    /// The selected forward path ([`LinearPath::Auto`] unless set).
    pub fn path(&self) -> LinearPath {
        self.path
    }

    /// Input width (`cols`).
    pub fn in_features(&self) -> usize {
        self.weights.cols()
    }

    /// Output width (`rows`).
    pub fn out_features(&self) -> usize {
        self.weights.rows()
    }

    /// The device the float path's tensors live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }
}

impl<B: TernaryBackend> TernaryLinear<B> {
    /// `y = Q·(x ⊙ d) + b` over the last dimension: `[..., in] → [..., out]`.
    ///
    /// # Panics
    /// If the last dimension of `x` is not `in_features` (as `burn::nn::Linear`, whose matmul
    /// panics on mismatched shapes). Use [`try_forward`](Self::try_forward) for an error
    /// instead. Non-finite activations give non-finite outputs on every path (on the int8 path
    /// the whole output row of such a token is NaN).
    pub fn forward<const D: usize>(&self, x: Tensor<B, D>) -> Tensor<B, D> {
        match self.try_forward(x) {
            Ok(y) => y,
            Err(e) => panic!("TernaryLinear::forward: {e}"),
        }
    }

    /// [`forward`](Self::forward) with a [`LayerError::Shape`] for a wrong input width.
    pub fn try_forward<const D: usize>(&self, x: Tensor<B, D>) -> Result<Tensor<B, D>> {
        let dims = x.dims();
        let (rows, cols) = (self.weights.rows(), self.weights.cols());
        let Some(&width) = dims.last() else {
            return Err(LayerError::Shape(
                "a rank-0 input has no feature dimension".into(),
            ));
        };
        if width != cols {
            return Err(LayerError::Shape(format!(
                "input {dims:?} has {width} features, the layer takes {cols}"
            )));
        }
        let n: usize = dims[..D - 1].iter().product();
        let y = self.forward_rows(x.reshape([n, cols]))?;
        let mut out = dims;
        out[D - 1] = rows;
        Ok(y.reshape(out))
    }

    /// `[n, in] → [n, out]` on the resolved path.
    fn forward_rows(&self, x: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        if B::tracks_gradient(&x.clone().into_primitive().tensor()) {
            // Only the float path records gradients (see `backend`'s docs).
            return match self.path {
                LinearPath::Auto | LinearPath::Float => Ok(self.forward_float(x)),
                p => Err(unsupported::<B>(p, NO_GRADIENT.into())),
            };
        }
        match self.path.resolve::<B>() {
            LinearPath::CpuInt8 => self.forward_host(x, HostActivations::Int8),
            LinearPath::CpuInt8x2 => self.forward_host(x, HostActivations::Int8x2),
            LinearPath::Float => Ok(self.forward_float(x)),
            // Auto picks the cube path by backend type; other float types take the float path.
            LinearPath::Cube if self.path == LinearPath::Auto && x.dtype() != DType::F32 => {
                Ok(self.forward_float(x))
            }
            LinearPath::Cube => self.forward_cube(x),
            _ => self.forward_host(x, HostActivations::F32),
        }
    }

    /// The cube path: `x ⊙ d` and `+ b` by Burn, the product by `ternary-kernels` (per plane,
    /// on the same `x ⊙ d`, summed by Burn).
    fn forward_cube(&self, x: Tensor<B, 2>) -> Result<Tensor<B, 2>> {
        let [n, cols] = x.dims();
        let rows = self.weights.rows();
        let v = self.cube_vectors.get_or_init(|| CubeVectors {
            input_scale: self.input_scale.as_ref().map(|d| {
                Tensor::from_data(TensorData::new(d.as_ref().clone(), [cols]), &self.device)
            }),
            bias: self.bias.as_ref().map(|b| {
                Tensor::from_data(TensorData::new(b.as_ref().clone(), [rows]), &self.device)
            }),
        });
        if n == 0 || rows == 0 || cols == 0 {
            // Nothing for a kernel to do: `y = b` (or 0) per token. (Not the float path, which
            // would build the dense weight on the device for nothing.)
            let y = Tensor::<B, 2>::zeros([n, rows], &x.device());
            return Ok(match &v.bias {
                Some(b) if n > 0 && rows > 0 => y.add(b.clone().unsqueeze::<2>()),
                _ => y,
            });
        }
        let x = match &v.input_scale {
            Some(d) => x.mul(d.clone().unsqueeze::<2>()),
            None => x,
        };
        let mut y: Option<Tensor<B, 2>> = None;
        let planes: Vec<&Arc<TernaryMatrix>> = match &self.weights {
            LinearWeights::One(m) => vec![m],
            LinearWeights::Two(m) => {
                let (high, low) = m.planes_arc();
                vec![high, low]
            }
        };
        for (m, cache) in planes.into_iter().zip(&self.cube_cache) {
            let p = B::ternary_gemm(m, cache, x.clone().into_primitive().tensor())?;
            let p = Tensor::<B, 2>::from_primitive(TensorPrimitive::Float(p));
            y = Some(match y {
                Some(acc) => acc.add(p),
                None => p,
            });
        }
        let y = y.ok_or_else(|| LayerError::Invalid("a layer without planes".into()))?;
        Ok(match &v.bias {
            Some(b) => y.add(b.clone().unsqueeze::<2>()),
            None => y,
        })
    }

    fn forward_float(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, cols] = x.dims();
        let rows = self.weights.rows();
        if n == 0 || rows == 0 || cols == 0 {
            // `y = b` (or 0) per token; Burn's ndarray matmul divides by a zero dimension.
            let y = Tensor::<B, 2>::zeros([n, rows], &x.device());
            return match &self.bias {
                Some(b) if n > 0 && rows > 0 => y.add(
                    Tensor::<B, 1>::from_data(
                        TensorData::new(b.as_ref().clone(), [rows]),
                        &x.device(),
                    )
                    .unsqueeze::<2>(),
                ),
                _ => y,
            };
        }
        let w = self.float_weights();
        let y = x.matmul(w.weight_t.clone());
        match &w.bias {
            Some(b) => y.add(b.clone().unsqueeze::<2>()),
            None => y,
        }
    }

    /// The float path's tensors, built on first use: `Wᵀ[c, r] = s[r, g(c)] · t[r, c] · d[c]`.
    fn float_weights(&self) -> &FloatWeights<B> {
        self.float_cache.get_or_init(|| {
            let (rows, cols) = (self.weights.rows(), self.weights.cols());
            let w = self.effective_weight_rows();
            let mut wt = vec![0f32; rows * cols];
            for (r, row) in w.chunks_exact(cols.max(1)).enumerate().take(rows) {
                for (c, &v) in row.iter().enumerate() {
                    wt[c * rows + r] = v;
                }
            }
            FloatWeights {
                weight_t: Tensor::from_data(TensorData::new(wt, [cols, rows]), &self.device),
                bias: self.bias.as_ref().map(|b| {
                    Tensor::from_data(TensorData::new(b.as_ref().clone(), [rows]), &self.device)
                }),
            }
        })
    }

    /// The host kernels: copy `x` to the host, scale by `d`, ternary GEMM (per plane, on the
    /// same activations), add `b`.
    fn forward_host(&self, x: Tensor<B, 2>, acts: HostActivations) -> Result<Tensor<B, 2>> {
        let device = x.device();
        let [n, cols] = x.dims();
        let rows = self.weights.rows();
        let mut xs = to_rows(x)?;
        if let (Some(d), 1..) = (&self.input_scale, cols) {
            for row in xs.chunks_exact_mut(cols) {
                for (v, s) in row.iter_mut().zip(d.iter()) {
                    *v *= s;
                }
            }
        }
        // Poisoned: every element must be written by the kernel.
        let mut y = vec![f32::NAN; n * rows];
        if acts != HostActivations::F32 {
            // Per-token quantization rejects NaN/Inf: such tokens are zeroed for the kernel and
            // their outputs set to NaN afterwards, as a float product would give.
            let mut bad = Vec::new();
            if cols > 0 {
                for (j, row) in xs.chunks_exact_mut(cols).enumerate() {
                    if row.iter().any(|v| !v.is_finite()) {
                        row.fill(0.0);
                        bad.push(j);
                    }
                }
            }
            if acts == HostActivations::Int8x2 {
                // Tokens n + j hold the residual codes of token j: sum their products.
                let a = QuantizedActivations::quantize_two(&xs, n, cols)?;
                let mut y2 = vec![f32::NAN; 2 * n * rows];
                self.weights.gemm_i8(&a, &mut y2)?;
                let (first, second) = y2.split_at(n * rows);
                for ((v, a), b) in y.iter_mut().zip(first).zip(second) {
                    *v = a + b;
                }
            } else {
                let a = QuantizedActivations::quantize(&xs, n, cols)?;
                self.weights.gemm_i8(&a, &mut y)?;
            }
            for j in bad {
                y[j * rows..(j + 1) * rows].fill(f32::NAN);
            }
        } else {
            self.weights.gemm_f32(&xs, n, &mut y)?;
        }
        if let (Some(b), 1..) = (&self.bias, rows) {
            for row in y.chunks_exact_mut(rows) {
                for (v, bi) in row.iter_mut().zip(b.iter()) {
                    *v += bi;
                }
            }
        }
        Ok(Tensor::from_data(TensorData::new(y, [n, rows]), &device))
    }
}

impl<B: Backend> TernaryLinear<B> {
    /// The effective weight `W = Q·diag(d)` as `out × in` row-major `f32` (`Q = M₁ + M₂` for
    /// two planes).
    pub fn effective_weight_rows(&self) -> Vec<f32> {
        let mut w = self.weights.dequantize();
        if let (Some(d), cols @ 1..) = (&self.input_scale, self.weights.cols()) {
            for row in w.chunks_exact_mut(cols) {
                for (v, s) in row.iter_mut().zip(d.iter()) {
                    *v *= s;
                }
            }
        }
        w
    }

    /// The layer's record (shares the weights; no copy).
    pub fn to_record(&self) -> TernaryLinearRecord {
        TernaryLinearRecord {
            weights: self.weights.clone(),
            bias: self.bias.clone(),
            input_scale: self.input_scale.clone(),
        }
    }

    /// A layer from a (validated) record on `device`, [`LinearPath::Auto`].
    pub fn from_record(record: TernaryLinearRecord, device: &B::Device) -> Self {
        Self {
            weights: record.weights,
            bias: record.bias,
            input_scale: record.input_scale,
            path: LinearPath::Auto,
            device: device.clone(),
            float_cache: OnceLock::new(),
            cube_vectors: OnceLock::new(),
            cube_cache: Default::default(),
        }
    }

    /// Writes the layer to a safetensors file (atomically): the matrix as `weight` (planes +
    /// scales, `ternary_core::io` format; a two-plane layer's `M₁` as `weight` and `M₂` as
    /// `weight_plane2`), `bias` `[out]` and `input_scale` `[in]` as `f32`.
    pub fn save_safetensors(&self, path: impl AsRef<Path>) -> Result<()> {
        let bias = self
            .bias
            .as_ref()
            .map(|b| FloatTensor::new(vec![b.len()], b.as_ref().clone()))
            .transpose()?;
        let scale = self
            .input_scale
            .as_ref()
            .map(|d| FloatTensor::new(vec![d.len()], d.as_ref().clone()))
            .transpose()?;
        let mut tensors = match &self.weights {
            LinearWeights::One(m) => vec![(TENSOR_WEIGHT, TensorRef::Ternary(m))],
            LinearWeights::Two(m) => vec![
                (TENSOR_WEIGHT, TensorRef::Ternary(m.high())),
                (TENSOR_WEIGHT_PLANE2, TensorRef::Ternary(m.low())),
            ],
        };
        if let Some(b) = &bias {
            tensors.push((TENSOR_BIAS, TensorRef::Float(b)));
        }
        if let Some(d) = &scale {
            tensors.push((TENSOR_INPUT_SCALE, TensorRef::Float(d)));
        }
        io::save_tensors(path, &tensors, Storage::Planes)?;
        Ok(())
    }

    /// Reads a layer written by [`save_safetensors`](Self::save_safetensors); every tensor is
    /// validated (a missing `weight`, a wrong kind or shape, or an unknown tensor is
    /// [`LayerError::Format`]).
    pub fn load_safetensors(path: impl AsRef<Path>, device: &B::Device) -> Result<Self> {
        let path = path.as_ref();
        let fmt = |why: String| LayerError::Format(format!("{}: {why}", path.display()));
        let (mut matrix, mut plane2) = (None, None);
        let (mut bias, mut scale) = (None, None);
        for (name, t) in io::load_tensors(path)? {
            match (name.as_str(), t) {
                (TENSOR_WEIGHT, io::Tensor::Ternary(m)) => matrix = Some(m),
                (TENSOR_WEIGHT_PLANE2, io::Tensor::Ternary(m)) => plane2 = Some(m),
                (TENSOR_BIAS, io::Tensor::Float(f)) => bias = Some(f),
                (TENSOR_INPUT_SCALE, io::Tensor::Float(f)) => scale = Some(f),
                (other, _) => {
                    return Err(fmt(format!(
                        "unexpected tensor {other:?} (a layer file holds a ternary `weight`, an \
                         optional ternary `weight_plane2` and optional f32 `bias` and \
                         `input_scale`)"
                    )));
                }
            }
        }
        let matrix = matrix.ok_or_else(|| fmt("no ternary tensor `weight`".into()))?;
        let (rows, cols) = (matrix.rows(), matrix.cols());
        let weights: LinearWeights = match plane2 {
            None => matrix.into(),
            Some(low) => TwoPlaneMatrix::new(matrix, low)
                .map_err(|e| fmt(format!("`{TENSOR_WEIGHT_PLANE2}`: {e}")))?
                .into(),
        };
        let mut layer = Self::from_weights(weights, device)?;
        if let Some(b) = bias {
            if b.shape() != [rows] {
                return Err(fmt(format!(
                    "bias shape {:?}, expected [{rows}]",
                    b.shape()
                )));
            }
            layer = layer.with_bias(b.into_parts().1)?;
        }
        if let Some(d) = scale {
            if d.shape() != [cols] {
                return Err(fmt(format!(
                    "input_scale shape {:?}, expected [{cols}]",
                    d.shape()
                )));
            }
            layer = layer.with_input_scale(d.into_parts().1)?;
        }
        Ok(layer)
    }
}

/// Tensor names of a single-layer safetensors file.
const TENSOR_WEIGHT: &str = "weight";
const TENSOR_WEIGHT_PLANE2: &str = "weight_plane2";
const TENSOR_BIAS: &str = "bias";
const TENSOR_INPUT_SCALE: &str = "input_scale";

impl<B: TernaryBackend> crate::linear::LinearLayer<B> for TernaryLinear<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        TernaryLinear::forward(self, x)
    }

    fn in_features(&self) -> usize {
        self.weights.cols()
    }

    fn out_features(&self) -> usize {
        self.weights.rows()
    }

    /// The effective weight `Q·diag(d)` as `[out, in]` (the bias is not part of it).
    fn weight(&self) -> Tensor<B, 2> {
        Tensor::from_data(
            TensorData::new(
                self.effective_weight_rows(),
                [self.weights.rows(), self.weights.cols()],
            ),
            &self.device,
        )
    }

    fn kind(&self) -> String {
        match self.weights.planes() {
            1 => "ternary".into(),
            n => format!("ternary ({n} planes)"),
        }
    }

    fn as_any(&self) -> Option<&dyn Any> {
        Some(self)
    }
}

// ---------------------------------------------------------------------------------------------
// Burn module and record
// ---------------------------------------------------------------------------------------------

/// The persistent state of a [`TernaryLinear`]: the weights (one or two plane pairs), the bias
/// and the input scale.
///
/// It can only hold a valid matrix: it serializes as [`TernaryLinearRecordData`] and
/// deserializing validates that form (both planes set, padding bits, plane or scale lengths,
/// non-finite values, bias and input-scale lengths), so a malformed record fails to load with
/// a recorder error instead of building a broken layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TernaryLinearRecordData", into = "TernaryLinearRecordData")]
pub struct TernaryLinearRecord {
    weights: LinearWeights,
    bias: Option<Arc<Vec<f32>>>,
    input_scale: Option<Arc<Vec<f32>>>,
}

impl TernaryLinearRecord {
    /// The weights.
    pub fn weights(&self) -> &LinearWeights {
        &self.weights
    }

    /// A one-plane record's matrix; [`LayerError::OnePlaneOnly`] for two planes.
    pub fn matrix(&self) -> Result<&TernaryMatrix> {
        self.weights
            .one_plane("TernaryLinearRecord::matrix")
            .map(|m| m.as_ref())
    }

    /// The bias, if any.
    pub fn bias(&self) -> Option<&[f32]> {
        self.bias.as_deref().map(Vec::as_slice)
    }

    /// The input scale, if any.
    pub fn input_scale(&self) -> Option<&[f32]> {
        self.input_scale.as_deref().map(Vec::as_slice)
    }
}

/// Scale-layout name of per-row scales in [`TernaryLinearRecordData::layout`].
pub const LAYOUT_PER_ROW: &str = "per_row";
/// Scale-layout name of per-group scales in [`TernaryLinearRecordData::layout`].
pub const LAYOUT_PER_GROUP: &str = "per_group";

/// The serialized form of a [`TernaryLinearRecord`], unvalidated.
///
/// `plus`/`minus` are the planes' `u32` words (`rows · words_per_row(cols)` each, see
/// [`TernaryMatrix`]); `scales` are `rows · groups_per_row` values; `layout` is
/// [`LAYOUT_PER_ROW`] or [`LAYOUT_PER_GROUP`] with `group_size` (0 for per-row). A two-plane
/// layer stores `M₁` there and `M₂` in `plus2`/`minus2`/`scales2` (all three or none).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TernaryLinearRecordData {
    /// Output channels.
    pub rows: u64,
    /// Input channels.
    pub cols: u64,
    /// [`LAYOUT_PER_ROW`] or [`LAYOUT_PER_GROUP`].
    pub layout: String,
    /// Columns per scale group (per-group layout), else 0.
    pub group_size: u64,
    /// The `+1` plane.
    pub plus: Vec<u32>,
    /// The `-1` plane.
    pub minus: Vec<u32>,
    /// The scales, row-major.
    pub scales: Vec<f32>,
    /// The bias (`rows` values).
    pub bias: Option<Vec<f32>>,
    /// The input scale (`cols` values).
    pub input_scale: Option<Vec<f32>>,
    /// Plane 2's `+1` plane (two-plane layers).
    #[serde(default)]
    pub plus2: Option<Vec<u32>>,
    /// Plane 2's `-1` plane.
    #[serde(default)]
    pub minus2: Option<Vec<u32>>,
    /// Plane 2's scales.
    #[serde(default)]
    pub scales2: Option<Vec<f32>>,
}

impl From<TernaryLinearRecord> for TernaryLinearRecordData {
    fn from(r: TernaryLinearRecord) -> Self {
        let (m, low) = match &r.weights {
            LinearWeights::One(m) => (m.as_ref(), None),
            LinearWeights::Two(m) => (m.high(), Some(m.low())),
        };
        let (layout, group_size) = match m.scales().layout() {
            ScaleLayout::PerRow => (LAYOUT_PER_ROW, 0),
            ScaleLayout::PerGroup { group_size } => (LAYOUT_PER_GROUP, group_size as u64),
        };
        Self {
            rows: m.rows() as u64,
            cols: m.cols() as u64,
            layout: layout.into(),
            group_size,
            plus: m.plus().to_vec(),
            minus: m.minus().to_vec(),
            scales: m.scales().values().to_vec(),
            bias: r.bias.map(|b| b.as_ref().clone()),
            input_scale: r.input_scale.map(|d| d.as_ref().clone()),
            plus2: low.map(|l| l.plus().to_vec()),
            minus2: low.map(|l| l.minus().to_vec()),
            scales2: low.map(|l| l.scales().values().to_vec()),
        }
    }
}

impl TryFrom<TernaryLinearRecordData> for TernaryLinearRecord {
    type Error = LayerError;

    fn try_from(d: TernaryLinearRecordData) -> Result<Self> {
        let dim = |what: &str, v: u64| {
            usize::try_from(v)
                .ok()
                .filter(|&v| v <= io::MAX_DIM)
                .ok_or_else(|| LayerError::Format(format!("record {what} {v} is out of range")))
        };
        let (rows, cols) = (dim("rows", d.rows)?, dim("cols", d.cols)?);
        let layout = match d.layout.as_str() {
            LAYOUT_PER_ROW => ScaleLayout::PerRow,
            LAYOUT_PER_GROUP => ScaleLayout::PerGroup {
                group_size: dim("group size", d.group_size)?,
            },
            other => {
                return Err(LayerError::Format(format!(
                    "record scale layout {other:?} is neither {LAYOUT_PER_ROW:?} nor \
                     {LAYOUT_PER_GROUP:?}"
                )));
            }
        };
        let matrix =
            TernaryMatrix::from_planes(rows, cols, d.plus, d.minus, Scales::new(layout, d.scales))
                .map_err(|e| LayerError::Format(format!("record weights: {e}")))?;
        let weights: LinearWeights = match (d.plus2, d.minus2, d.scales2) {
            (None, None, None) => matrix.into(),
            (Some(p), Some(m), Some(s)) => {
                let low = TernaryMatrix::from_planes(rows, cols, p, m, Scales::new(layout, s))
                    .map_err(|e| LayerError::Format(format!("record weights, plane 2: {e}")))?;
                TwoPlaneMatrix::new(matrix, low)
                    .map_err(|e| LayerError::Format(format!("record weights: {e}")))?
                    .into()
            }
            _ => {
                return Err(LayerError::Format(
                    "record plane 2 needs all of plus2, minus2 and scales2".into(),
                ));
            }
        };
        if let Some(b) = &d.bias {
            check_vector("record bias", b, rows).map_err(|e| LayerError::Format(e.to_string()))?;
        }
        if let Some(s) = &d.input_scale {
            check_vector("record input scale", s, cols)
                .map_err(|e| LayerError::Format(e.to_string()))?;
        }
        Ok(Self {
            weights,
            bias: d.bias.map(Arc::new),
            input_scale: d.input_scale.map(Arc::new),
        })
    }
}

impl<B: Backend> Record<B> for TernaryLinearRecord {
    type Item<S: PrecisionSettings> = TernaryLinearRecord;

    fn into_item<S: PrecisionSettings>(self) -> Self::Item<S> {
        self
    }

    fn from_item<S: PrecisionSettings>(item: Self::Item<S>, _device: &B::Device) -> Self {
        item
    }
}

impl<B: Backend> Record<B> for TernaryLinearRecordData {
    type Item<S: PrecisionSettings> = TernaryLinearRecordData;

    fn into_item<S: PrecisionSettings>(self) -> Self::Item<S> {
        self
    }

    fn from_item<S: PrecisionSettings>(item: Self::Item<S>, _device: &B::Device) -> Self {
        item
    }
}

/// A Burn module without trainable float parameters: visitors and mappers see nothing (the
/// ternary weights are not gradient-trained); the record carries the weights.
impl<B: Backend> Module<B> for TernaryLinear<B> {
    type Record = TernaryLinearRecord;

    fn collect_devices(&self, mut devices: Devices<B>) -> Devices<B> {
        if !devices.contains(&self.device) {
            devices.push(self.device.clone());
        }
        devices
    }

    fn fork(self, device: &B::Device) -> Self {
        self.to_device(device)
    }

    fn to_device(mut self, device: &B::Device) -> Self {
        self.device = device.clone();
        self.float_cache = OnceLock::new();
        self.cube_vectors = OnceLock::new();
        self
    }

    fn visit<V: ModuleVisitor<B>>(&self, _visitor: &mut V) {}

    fn map<M: ModuleMapper<B>>(self, _mapper: &mut M) -> Self {
        self
    }

    fn load_record(mut self, record: Self::Record) -> Self {
        self.weights = record.weights;
        self.bias = record.bias;
        self.input_scale = record.input_scale;
        self.float_cache = OnceLock::new();
        self.cube_vectors = OnceLock::new();
        self.cube_cache = Default::default();
        self
    }

    fn into_record(self) -> Self::Record {
        self.to_record()
    }
}

impl<B: AutodiffBackend> AutodiffModule<B> for TernaryLinear<B> {
    type InnerModule = TernaryLinear<B::InnerBackend>;

    fn valid(&self) -> Self::InnerModule {
        TernaryLinear {
            weights: self.weights.clone(),
            bias: self.bias.clone(),
            input_scale: self.input_scale.clone(),
            path: self.path,
            device: self.device.clone(),
            float_cache: OnceLock::new(),
            cube_vectors: OnceLock::new(),
            cube_cache: Default::default(),
        }
    }

    fn from_inner(module: Self::InnerModule) -> Self {
        TernaryLinear {
            weights: module.weights,
            bias: module.bias,
            input_scale: module.input_scale,
            path: module.path,
            device: module.device,
            float_cache: OnceLock::new(),
            cube_vectors: OnceLock::new(),
            cube_cache: Default::default(),
        }
    }
}

impl<B: Backend> ModuleDisplayDefault for TernaryLinear<B> {
    fn content(&self, content: Content) -> Option<Content> {
        content
            .add("d_input", &self.weights.cols())
            .add("d_output", &self.weights.rows())
            .add("planes", &self.weights.planes())
            .add("bias", &self.bias.is_some())
            .add("input_scale", &self.input_scale.is_some())
            .optional()
    }
}

impl<B: Backend> ModuleDisplay for TernaryLinear<B> {}
