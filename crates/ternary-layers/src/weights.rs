//! [`LinearWeights`]: what a [`TernaryLinear`](crate::TernaryLinear) multiplies by — one
//! trit-plane pair or two.
//!
//! A two-plane layer is `W = M₁ + M₂` ([`TwoPlaneMatrix`]; `s·(3·T₁ + T₂)` when converted on the
//! 9-level grid). Consumers match on the enum, so none can take the first plane for the whole
//! layer; [`TernaryLinear::matrix`](crate::TernaryLinear::matrix), for those that handle one
//! plane only, is an error ([`LayerError::OnePlaneOnly`]) on a two-plane layer.

use std::sync::Arc;

use ternary_core::{QuantizedActivations, ScaleLayout, TernaryMatrix, TwoPlaneMatrix};

use crate::error::{LayerError, Result};

/// A ternary layer's weights. See the [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub enum LinearWeights {
    /// One plane pair: `w[r, c] = s[r, g(c)] · t[r, c]`.
    One(Arc<TernaryMatrix>),
    /// Two plane pairs: `w[r, c] = s₁[r, g(c)] · t₁[r, c] + s₂[r, g(c)] · t₂[r, c]`.
    Two(Arc<TwoPlaneMatrix>),
}

impl From<TernaryMatrix> for LinearWeights {
    fn from(m: TernaryMatrix) -> Self {
        Self::One(Arc::new(m))
    }
}

impl From<TwoPlaneMatrix> for LinearWeights {
    fn from(m: TwoPlaneMatrix) -> Self {
        Self::Two(Arc::new(m))
    }
}

impl LinearWeights {
    /// Output channels.
    pub fn rows(&self) -> usize {
        match self {
            Self::One(m) => m.rows(),
            Self::Two(m) => m.rows(),
        }
    }

    /// Input channels.
    pub fn cols(&self) -> usize {
        match self {
            Self::One(m) => m.cols(),
            Self::Two(m) => m.cols(),
        }
    }

    /// Trit-planes: 1 or 2.
    pub fn planes(&self) -> usize {
        match self {
            Self::One(_) => 1,
            Self::Two(_) => 2,
        }
    }

    /// The plane matrices, in order (`[Q]` or `[M₁, M₂]`); the layer computes their sum.
    pub fn plane_matrices(&self) -> Vec<&TernaryMatrix> {
        match self {
            Self::One(m) => vec![m],
            Self::Two(m) => vec![m.high(), m.low()],
        }
    }

    /// The scale layout (both planes share it).
    pub fn layout(&self) -> ScaleLayout {
        match self {
            Self::One(m) => m.scales().layout(),
            Self::Two(m) => m.high().scales().layout(),
        }
    }

    /// Dense weights `W`, `rows × cols` row-major `f32`.
    pub fn dequantize(&self) -> Vec<f32> {
        match self {
            Self::One(m) => m.dequantize(),
            Self::Two(m) => m.dequantize(),
        }
    }

    /// Fraction of zero weights.
    pub fn zero_fraction(&self) -> f64 {
        match self {
            Self::One(m) => m.zero_fraction(),
            Self::Two(m) => m.zero_fraction(),
        }
    }

    /// Bytes of the planes and scales in memory.
    pub fn storage_bytes(&self) -> usize {
        match self {
            Self::One(m) => m.storage_bytes(),
            Self::Two(m) => m.storage_bytes(),
        }
    }

    /// Bits per weight in memory (planes with row padding, plus scales): about 2 for one plane,
    /// 4 for two, plus the scales.
    pub fn bits_per_weight(&self) -> f64 {
        match self {
            Self::One(m) => m.bits_per_weight(),
            Self::Two(m) => m.bits_per_weight(),
        }
    }

    /// `y = W·x` for `n` tokens of `f32` activations (`ternary_core::kernels::gemm_f32` per plane).
    pub fn gemm_f32(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        match self {
            Self::One(m) => ternary_core::kernels::gemm_f32(m, x, n, y)?,
            Self::Two(m) => m.gemm_f32(x, n, y)?,
        }
        Ok(())
    }

    /// `y = W·x` for int8 activations (`ternary_core::kernels::gemm_i8` per plane, the same `a`).
    pub fn gemm_i8(&self, a: &QuantizedActivations, y: &mut [f32]) -> Result<()> {
        match self {
            Self::One(m) => ternary_core::kernels::gemm_i8(m, a, y)?,
            Self::Two(m) => m.gemm_i8(a, y)?,
        }
        Ok(())
    }

    /// The one-plane matrix; [`LayerError::OnePlaneOnly`] naming `what` for two planes.
    pub fn one_plane(&self, what: &str) -> Result<&Arc<TernaryMatrix>> {
        match self {
            Self::One(m) => Ok(m),
            Self::Two(_) => Err(LayerError::OnePlaneOnly(what.to_string())),
        }
    }
}
