//! The one seam every linear layer of the model goes through.
//!
//! The model holds each projection as a [`Linear`], a boxed [`LinearLayer`]. The float
//! implementation is [`FloatLinear`]; another crate (the ternary conversion) implements the
//! trait for its own layer and swaps it in per layer with
//! [`Llama::linears_mut`](crate::model::Llama::linears_mut), without touching the model code.

use crate::error::{ModelError, Result};
use burn::tensor::{Tensor, TensorData, backend::Backend};
use std::fmt::Debug;

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
}

/// A model's handle on one linear layer; the boxed implementation can be replaced.
pub type Linear<B> = Box<dyn LinearLayer<B>>;

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
}
