//! The seam every linear layer of a model goes through.
//!
//! A model holds each projection as a [`Linear`], a boxed [`LinearLayer`]. `ternary-models`
//! implements it for its float layers, this crate for [`TernaryLinear`](crate::TernaryLinear);
//! a conversion swaps one for the other per layer without touching the model code.

use burn::tensor::{Tensor, backend::Backend};
use std::fmt::Debug;

use crate::error::{LayerError, Result};

/// A linear map `y = x·Wᵀ` on rows: `x` is `[tokens, in]`, `y` is `[tokens, out]`,
/// `W` is `[out, in]` (PyTorch's layout).
pub trait LinearLayer<B: Backend>: Debug + Send + Sync {
    /// `y = x·Wᵀ` for `x: [tokens, in_features]`.
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2>;
    /// Input width.
    fn in_features(&self) -> usize;
    /// Output width.
    fn out_features(&self) -> usize;
    /// The effective weight `W: [out, in]` as floats (dequantized for non-float layers), for
    /// conversion and inspection.
    fn weight(&self) -> Tensor<B, 2>;
    /// Short description of the layer kind (e.g. `"f32"`).
    fn kind(&self) -> String;
    /// The concrete layer, for downcasting (`layer.as_any()?.downcast_ref::<T>()`); `None`
    /// for layers that do not opt in.
    fn as_any(&self) -> Option<&dyn std::any::Any> {
        None
    }
}

/// A model's handle on one linear layer; the boxed implementation can be replaced.
pub type Linear<B> = Box<dyn LinearLayer<B>>;

/// Copies a 2-D tensor to the host as row-major `f32`.
pub fn to_rows<B: Backend>(t: Tensor<B, 2>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| LayerError::Invalid(format!("cannot read a tensor back to the host: {e:?}")))
}
