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
    to_host(t)
}

/// Copies a tensor of any rank to the host as `f32` in row-major (C) order.
///
/// Burn's ndarray backend hands a tensor's buffer over without copying only when the tensor
/// owns it alone and is row-major; a shared (cloned) or strided one is copied element by
/// element through a dynamic-rank iterator, about 10× slower than a vectorized pass. So the
/// tensor is first flattened (which makes a strided one row-major) and multiplied by 1 (a
/// fresh, unshared buffer; exact for every value): on a GPU backend one extra elementwise
/// kernel.
pub fn to_host<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    let n = t.shape().num_elements();
    if n == 0 {
        // (`reshape` reads a 0 as "keep this dimension".)
        return Ok(Vec::new());
    }
    t.reshape([n])
        .mul_scalar(1.0)
        .into_data()
        .convert::<f32>()
        .into_vec::<f32>()
        .map_err(|e| LayerError::Invalid(format!("cannot read a tensor back to the host: {e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use burn::backend::NdArray;
    use burn::tensor::TensorData;

    type B = NdArray<f32>;

    /// Row-major reference: element `[i, j, k]` of a `[a, b, c]` tensor made from `0..n`.
    fn seq(a: usize, b: usize, c: usize) -> (Tensor<B, 3>, Vec<f32>) {
        let v: Vec<f32> = (0..a * b * c).map(|i| i as f32 - 7.5).collect();
        let t = Tensor::from_data(TensorData::new(v.clone(), [a, b, c]), &Default::default());
        (t, v)
    }

    #[test]
    fn to_host_should_give_row_major_values_of_shared_strided_and_empty_tensors() {
        for (a, b, c) in [(1, 1, 1), (2, 63, 65), (3, 64, 1), (0, 5, 4), (2, 0, 3)] {
            let (t, v) = seq(a, b, c);
            let kept = t.clone(); // shared buffer
            assert_eq!(to_host(t.clone()).unwrap(), v, "shared {a}x{b}x{c}");
            // Strided: swap the last two axes, then compare with the transposed reference.
            let tt = t.clone().swap_dims(1, 2);
            let mut want = vec![0f32; v.len()];
            for i in 0..a {
                for j in 0..b {
                    for k in 0..c {
                        want[(i * c + k) * b + j] = v[(i * b + j) * c + k];
                    }
                }
            }
            assert_eq!(to_host(tt).unwrap(), want, "swapped {a}x{b}x{c}");
            drop(kept);
            assert_eq!(to_host(t).unwrap(), v, "unique {a}x{b}x{c}");
        }
        // Signed zeros, infinities and NaN survive the multiplication by 1.
        let special = vec![
            -0.0f32,
            0.0,
            f32::INFINITY,
            f32::NEG_INFINITY,
            f32::MIN_POSITIVE,
        ];
        let t: Tensor<B, 1> =
            Tensor::from_data(TensorData::new(special.clone(), [5]), &Default::default());
        let back = to_host(t).unwrap();
        assert!(
            back.iter()
                .zip(&special)
                .all(|(x, y)| x.to_bits() == y.to_bits())
        );
        let t: Tensor<B, 1> =
            Tensor::from_data(TensorData::new(vec![f32::NAN], [1]), &Default::default());
        assert!(to_host(t).unwrap()[0].is_nan());
    }
}
