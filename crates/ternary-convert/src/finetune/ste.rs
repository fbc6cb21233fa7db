//! The trainable ternary layer: latent float weights, ternarized in the forward pass with a
//! straight-through estimator, and learnable group scales.
//!
//! For a row `r` and a group `g` of columns with scale `s = s[r, g] > 0` and latent weights
//! `w`, the forward pass uses
//!
//! ```text
//! u = w / s,   t = clamp(round(u), −1, 1),   Ŵ = w + s · stop_grad(t − u)   (= s · t)
//! ```
//!
//! so the value is the ternary weight `s·t` while `∂Ŵ/∂w = 1` and `∂Ŵ/∂s = t − u` (the
//! estimator of LSQ, Esser et al. 2020, inside its clipping range). After every optimizer step
//! the latent weights are projected back into `[−s, s]` ([`SteParams::project`]), so `|u| ≤ 1`
//! holds and no weight leaves the range where its gradient flows; scales stay
//! `≥ MIN_SCALE`.
//!
//! A two-plane layer (`w = s·(3·t₁ + t₂)`, the 9-level grid, [`ternary_core::TwoPlaneMatrix`])
//! trains the same way with the levels `q = clamp(round(u), −4, 4)` in place of `t`
//! (`max_level` 4): `Ŵ = w + s · stop_grad(q − u)`, latent weights projected into `[−4s, 4s]`,
//! and on export each level splits losslessly into the two planes (plane scales `3s`, `s`).

use std::sync::{Arc, PoisonError, RwLock};

use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};
use ternary_core::two_plane::{MAX_LEVEL, exact_triple_scale};
use ternary_core::{ScaleLayout, Scales, TernaryMatrix, TwoPlaneMatrix};
use ternary_layers::{LinearLayer, LinearWeights, TernaryLinear, to_rows};

use crate::error::{ConvertError, Result};

/// The smallest scale a group keeps (a zero scale would make `u = w / s` infinite).
pub const MIN_SCALE: f32 = 1e-6;

/// `clamp(round(u), −1, 1)` with ties to even: `+1` above `½`, `−1` below `−½`, else 0
/// (exactly the same for every finite `u`, without a rounding call).
#[inline]
pub fn trit(u: f32) -> i8 {
    i8::from(u > 0.5) - i8::from(u < -0.5)
}

/// `clamp(round(u), −max, max)` with ties to even: the level of a weight on a grid of
/// `2·max + 1` levels (`max` 1: [`trit`]; 4: the two-plane grid).
#[inline]
pub fn level(u: f32, max: i8) -> i8 {
    let m = f32::from(max);
    // Finite, and clamped into −max..=max: the cast is exact.
    u.round_ties_even().clamp(-m, m) as i8
}

/// A trainable layer's parameters and constants.
#[derive(Debug)]
pub struct SteParams<B: AutodiffBackend> {
    /// Latent weights `[out, in]`.
    pub latent: Tensor<B, 2>,
    /// Scales `[out, groups]`, group `g` covering columns `g·group .. (g+1)·group`.
    pub scale: Tensor<B, 2>,
    /// Columns per scale (`in` for one scale per row).
    pub group: usize,
    /// Whether the layer had one scale per row (kept on export).
    pub per_row: bool,
    /// Optional input scale `d` `[1, in]`: `y = Ŵ·(x ⊙ d) + b`.
    pub input_scale: Option<Tensor<B, 2>>,
    /// Optional bias `[1, out]`.
    pub bias: Option<Tensor<B, 2>>,
    /// The largest level: 1 for one trit-plane, 4 for two (`s·(3·t₁ + t₂)`).
    pub max_level: i8,
}

/// [`SteParams`] shared between the model (which runs the layer) and the trainer (which
/// updates it).
pub type SharedParams<B> = Arc<RwLock<SteParams<B>>>;

impl<B: AutodiffBackend> SteParams<B> {
    /// Builds the parameters of a one-plane ternary layer `m` (trits `t`, scales `s`) with
    /// latent weights `w = s·t + clamp(W − s·t, −0.45·s, 0.45·s)` when the float weights `W`
    /// (`[out, in]` row-major) are given, so that `round(w / s) = t` and the float weights'
    /// direction survives; `w = s·t` otherwise.
    ///
    /// # Errors
    /// A float matrix of the wrong size.
    pub fn from_matrix(
        m: &TernaryMatrix,
        float: Option<&[f32]>,
        input_scale: Option<&[f32]>,
        bias: Option<&[f32]>,
        device: &B::Device,
    ) -> Result<Self> {
        let trits = m.to_trits();
        Self::from_levels(m, &trits, 1, float, input_scale, bias, device)
    }

    /// Builds the parameters of a layer's weights: one plane as [`SteParams::from_matrix`],
    /// two planes made on the 9-level grid (plane scales `3s` and `s`) with latent weights
    /// `w = s·q + clamp(W − s·q, −0.45·s, 0.45·s)` around the levels `q = 3·t₁ + t₂`.
    ///
    /// # Errors
    /// Two planes whose scales are not `3s` and `s` (free plane scales), a float matrix of the
    /// wrong size.
    pub fn from_weights(
        weights: &LinearWeights,
        float: Option<&[f32]>,
        input_scale: Option<&[f32]>,
        bias: Option<&[f32]>,
        device: &B::Device,
    ) -> Result<Self> {
        match weights {
            LinearWeights::One(m) => Self::from_matrix(m, float, input_scale, bias, device),
            LinearWeights::Two(m) => {
                let (high, low) = (m.high().scales().values(), m.low().scales().values());
                if high.len() != low.len() || high.iter().zip(low).any(|(&h, &l)| h != 3.0 * l) {
                    return Err(ConvertError::Invalid(
                        "a two-plane layer with free plane scales (not 3s and s): fine-tuning \
                         trains two planes on the 9-level grid"
                            .into(),
                    ));
                }
                let levels = m.levels();
                Self::from_levels(
                    m.low(),
                    &levels,
                    MAX_LEVEL,
                    float,
                    input_scale,
                    bias,
                    device,
                )
            }
        }
    }

    /// The common constructor: levels `q` (`|q| ≤ max_level`, row-major) with the scales and
    /// shape of `m`.
    fn from_levels(
        m: &TernaryMatrix,
        trits: &[i8],
        max_level: i8,
        float: Option<&[f32]>,
        input_scale: Option<&[f32]>,
        bias: Option<&[f32]>,
        device: &B::Device,
    ) -> Result<Self> {
        let (rows, cols) = (m.rows(), m.cols());
        if let Some(w) = float
            && w.len() != rows * cols
        {
            return Err(ConvertError::Shape(format!(
                "float weights of a {rows}x{cols} layer have {} values",
                w.len()
            )));
        }
        let layout = m.scales().layout();
        let group = layout.group_len(cols).max(1);
        let groups = layout.groups_per_row(cols);
        let mut scales: Vec<f32> = m.scales().values().to_vec();
        let mut latent = vec![0f32; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let gi = r * groups + c / group;
                let s = scales[gi].abs().max(MIN_SCALE);
                let sign = if scales[gi] < 0.0 { -1.0 } else { 1.0 };
                let base = s * f32::from(trits[r * cols + c]) * sign;
                let i = r * cols + c;
                latent[i] = match float {
                    Some(w) => base + (w[i] - base).clamp(-0.45 * s, 0.45 * s),
                    None => base,
                };
            }
        }
        for s in &mut scales {
            *s = s.abs().max(MIN_SCALE);
        }
        let row = |v: &[f32], n: usize| {
            Tensor::<B, 2>::from_data(TensorData::new(v.to_vec(), [1, n]), device)
        };
        Ok(Self {
            latent: Tensor::from_data(TensorData::new(latent, [rows, cols]), device).require_grad(),
            scale: Tensor::from_data(TensorData::new(scales, [rows, groups]), device)
                .require_grad(),
            group,
            per_row: matches!(layout, ScaleLayout::PerRow),
            input_scale: input_scale.map(|d| row(d, cols)),
            bias: bias.map(|b| row(b, rows)),
            max_level,
        })
    }

    /// `[out, in]` and the number of groups per row.
    pub fn dims(&self) -> (usize, usize, usize) {
        let [out, inp] = self.latent.dims();
        (out, inp, self.scale.dims()[1])
    }

    /// The scales broadcast to `[out, in]`.
    fn expand<BB: Backend>(scale: Tensor<BB, 2>, group: usize, inp: usize) -> Tensor<BB, 2> {
        let [out, groups] = scale.dims();
        let s = scale
            .unsqueeze_dim::<3>(2)
            .expand([out, groups, group])
            .reshape([out, groups * group]);
        if groups * group == inp {
            s
        } else {
            s.slice([0..out, 0..inp])
        }
    }

    /// The effective weight with the straight-through gradients of the module docs, computed
    /// as `Ŵ = w + D ⊙ s` with the constant `D = t − u` ([`SteParams::offsets`]): its value is
    /// `w + s·t − w = s·t` (up to rounding), `∂Ŵ/∂w = 1` and `∂Ŵ/∂s = D = t − u`. Where the
    /// groups tile the row exactly, `s` broadcasts over `[out, groups, group]` as the right-hand
    /// operand without being expanded (the form Burn's flex backend has a SIMD path for; with
    /// `s` on the left it walks the product element by element).
    pub fn weight(&self) -> Tensor<B, 2> {
        let [out, inp] = self.latent.dims();
        let groups = self.scale.dims()[1];
        let d = self.offsets();
        if groups * self.group == inp {
            let g = self.group;
            let w = self.latent.clone().reshape([out, groups, g]);
            let s = self.scale.clone().reshape([out, groups, 1]);
            w.add(d.reshape([out, groups, g]).mul(s))
                .reshape([out, inp])
        } else {
            let s = Self::expand(self.scale.clone(), self.group, inp);
            self.latent.clone().add(d.mul(s))
        }
    }

    /// `D = t − u` per weight (`u = w / s`, `t = [u > ½] − [u < −½]`, [`trit`]; with two
    /// planes `t = clamp(round(u), −4, 4)`, [`level`]), as an untracked constant computed on
    /// the inner backend.
    pub fn offsets(&self) -> Tensor<B, 2> {
        let [out, inp] = self.latent.dims();
        let groups = self.scale.dims()[1];
        let w = self.latent.clone().inner();
        let s = self.scale.clone().inner();
        let u = if groups * self.group == inp {
            let g = self.group;
            w.reshape([out, groups, g])
                .div(s.reshape([out, groups, 1]))
                .reshape([out, inp])
        } else {
            w.div(Self::expand(s, self.group, inp))
        };
        let t = if self.max_level == 1 {
            u.clone()
                .greater_elem(0.5)
                .float()
                .sub(u.clone().lower_elem(-0.5).float())
        } else {
            let m = f32::from(self.max_level);
            u.clone().round().clamp(-m, m)
        };
        Tensor::from_inner(t.sub(u))
    }

    /// Projects the parameters back into their domain after an update: scales `≥ MIN_SCALE`,
    /// latent weights into `[−L·s, L·s]` (`L` = `max_level`). Works on the inner (untracked) tensors and returns fresh
    /// leaves that require gradients (`train_latent` false: the latent weights stay constant).
    pub fn project(&mut self, train_latent: bool) {
        let [_, inp] = self.latent.dims();
        let scale = self.scale.clone().inner().clamp_min(MIN_SCALE);
        let s = Self::expand(scale.clone(), self.group, inp);
        let s = if self.max_level == 1 {
            s
        } else {
            s.mul_scalar(f32::from(self.max_level))
        };
        let latent = self
            .latent
            .clone()
            .inner()
            .max_pair(s.clone().neg())
            .min_pair(s);
        self.scale = Tensor::from_inner(scale).require_grad();
        let latent = Tensor::from_inner(latent);
        self.latent = if train_latent {
            latent.require_grad()
        } else {
            latent
        };
    }

    /// The ternary matrix the parameters stand for: `t = clamp(round(w / s), −1, 1)` (ties to
    /// even, as the forward pass rounds) with the current scales.
    ///
    /// # Errors
    /// Tensors that cannot be read back.
    pub fn to_matrix(&self) -> Result<TernaryMatrix> {
        if self.max_level != 1 {
            return Err(ConvertError::Invalid(
                "a two-plane layer has no one-plane matrix (see SteParams::to_weights)".into(),
            ));
        }
        let (rows, cols, levels, scales) = self.levels()?;
        Ok(TernaryMatrix::from_trits(rows, cols, &levels, scales)?)
    }

    /// The weights the parameters stand for: [`SteParams::to_matrix`] for one plane; for two,
    /// the levels `q = clamp(round(w / s), −4, 4)` split into planes with scales `3s'` and
    /// `s'`, where `s'` is `s` rounded so that `3s'` is exact in `f32`
    /// ([`exact_triple_scale`], a relative change of at most 2⁻²²).
    ///
    /// # Errors
    /// Tensors that cannot be read back.
    pub fn to_weights(&self) -> Result<LinearWeights> {
        if self.max_level == 1 {
            return Ok(self.to_matrix()?.into());
        }
        let (rows, cols, levels, scales) = self.levels()?;
        let exact: Vec<f32> = scales
            .values()
            .iter()
            .map(|&s| exact_triple_scale(s))
            .collect();
        let scales = Scales::new(scales.layout(), exact);
        Ok(TwoPlaneMatrix::from_levels(rows, cols, &levels, scales)?.into())
    }

    /// `(rows, cols, levels, scales)`: `clamp(round(w / s), −L, L)` per weight.
    fn levels(&self) -> Result<(usize, usize, Vec<i8>, Scales)> {
        let (rows, cols, groups) = self.dims();
        let w = to_rows(self.latent.clone().inner())?;
        let s = to_rows(self.scale.clone().inner())?;
        let mut levels = vec![0i8; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                let u = w[r * cols + c] / s[r * groups + c / self.group];
                levels[r * cols + c] = if self.max_level == 1 {
                    trit(u)
                } else {
                    level(u, self.max_level)
                };
            }
        }
        let scales = if self.per_row {
            Scales::per_row(s)
        } else {
            Scales::per_group(self.group, s)
        };
        Ok((rows, cols, levels, scales))
    }
}

/// A ternary linear layer being trained: [`SteParams::weight`] in the forward pass. It
/// implements the model's linear-layer seam, so it replaces a `TernaryLinear` in place.
#[derive(Debug, Clone)]
pub struct SteLinear<B: AutodiffBackend> {
    params: SharedParams<B>,
    out: usize,
    inp: usize,
}

impl<B: AutodiffBackend> SteLinear<B> {
    /// The layer over shared parameters.
    pub fn new(params: SharedParams<B>) -> Self {
        let (out, inp, _) = params.read().map_or((0, 0, 0), |p| p.dims());
        Self { params, out, inp }
    }

    /// The layer's exported form: a [`TernaryLinear`] with the trained trits and scales (and
    /// the input scale and bias it had).
    ///
    /// # Errors
    /// Tensors that cannot be read back, or a poisoned lock.
    pub fn to_ternary(params: &SharedParams<B>, device: &B::Device) -> Result<TernaryLinear<B>>
    where
        B: ternary_layers::TernaryBackend,
    {
        let p = params.read().unwrap_or_else(PoisonError::into_inner);
        let mut layer = TernaryLinear::from_weights(p.to_weights()?, device)?;
        if let Some(d) = &p.input_scale {
            layer = layer.with_input_scale(to_rows(d.clone())?)?;
        }
        if let Some(b) = &p.bias {
            layer = layer.with_bias(to_rows(b.clone())?)?;
        }
        Ok(layer)
    }
}

impl<B: AutodiffBackend> LinearLayer<B> for SteLinear<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let p = self.params.read().unwrap_or_else(PoisonError::into_inner);
        let x = match &p.input_scale {
            Some(d) => x.mul(d.clone()),
            None => x,
        };
        let y = x.matmul(p.weight().transpose());
        match &p.bias {
            Some(b) => y.add(b.clone()),
            None => y,
        }
    }

    fn in_features(&self) -> usize {
        self.inp
    }

    fn out_features(&self) -> usize {
        self.out
    }

    fn weight(&self) -> Tensor<B, 2> {
        let p = self.params.read().unwrap_or_else(PoisonError::into_inner);
        p.weight().detach()
    }

    fn kind(&self) -> String {
        "ternary (training)".into()
    }

    fn as_any(&self) -> Option<&dyn std::any::Any> {
        Some(self)
    }
}
