//! Swapping layers in the model: ternary layers, float stand-ins with the exact effective weights
//! (for the search), and restoring the originals.

use ternary_layers::{Linear, TernaryBackend, TernaryLinear};
use ternary_models::{LinearImpl, Llama};

use super::*;
use crate::error::{ConvertError, Result};

/// The layer that computes `q` inside a model: a [`TernaryLinear`] (path
/// [`LinearPath::Auto`](ternary_layers::LinearPath::Auto)) with `q`'s input scale.
pub(crate) fn ternary_layer<B: TernaryBackend>(
    q: &QuantizedLayer,
    device: &B::Device,
) -> Result<Linear<B>> {
    let mut layer = TernaryLinear::<B>::from_weights(q.matrix.clone(), device)?;
    if let Some(d) = &q.input_scale {
        layer = layer.with_input_scale(d.clone())?;
    }
    Ok(Box::new(layer))
}

/// A float layer with `q`'s effective weight (the fast stand-in used while searching).
pub(crate) fn float_standin<B: TernaryBackend>(
    name: &str,
    q: &QuantizedLayer,
    device: &B::Device,
) -> Result<Linear<B>> {
    Ok(LinearImpl::default_for::<B>().build::<B>(
        name,
        q.effective_weight(),
        q.matrix.rows(),
        q.matrix.cols(),
        device,
    )?)
}

/// Puts `layer` into slot `name`; returns the layer it replaced.
pub(crate) fn swap_layer<B: TernaryBackend>(
    model: &mut Llama<B>,
    name: &str,
    layer: Linear<B>,
) -> Result<Linear<B>> {
    let mut linears = model.linears_mut();
    let slot = linears
        .iter_mut()
        .find(|(n, _)| n == name)
        .map(|(_, s)| s)
        .ok_or_else(|| ConvertError::Invalid(format!("the model has no layer {name}")))?;
    if (slot.out_features(), slot.in_features()) != (layer.out_features(), layer.in_features()) {
        return Err(ConvertError::Shape(format!(
            "{name}: {}x{} cannot replace {}x{}",
            layer.out_features(),
            layer.in_features(),
            slot.out_features(),
            slot.in_features()
        )));
    }
    Ok(std::mem::replace(*slot, layer))
}

/// Swaps float stand-ins of `layers` into the model; returns the originals for
/// [`restore_layers`].
pub fn apply_standins<B: TernaryBackend>(
    model: &mut Llama<B>,
    layers: &[&(String, QuantizedLayer)],
) -> Result<Vec<(String, Linear<B>)>> {
    let device = model.device().clone();
    let mut saved = Vec::with_capacity(layers.len());
    for (name, q) in layers.iter().map(|p| (&p.0, &p.1)) {
        let l = float_standin::<B>(name, q, &device)?;
        match swap_layer(model, name, l) {
            Ok(old) => saved.push((name.clone(), old)),
            Err(e) => {
                restore_layers(model, saved)?;
                return Err(e);
            }
        }
    }
    Ok(saved)
}

/// Puts back layers returned by [`apply_standins`] (or the crate's `swap_layer`).
pub fn restore_layers<B: TernaryBackend>(
    model: &mut Llama<B>,
    saved: Vec<(String, Linear<B>)>,
) -> Result<()> {
    for (name, l) in saved.into_iter().rev() {
        swap_layer(model, &name, l)?;
    }
    Ok(())
}
