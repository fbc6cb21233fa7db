//! Writing: a model's layers into [`Contents`], then safetensors bytes, atomically to disk.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use ternary_core::io::Blob;
use ternary_layers::{LinearLayer, LinearWeights, TernaryBackend, TernaryLinear};
use ternary_models::weights::HostTensor;
use ternary_models::{Llama, Tokenizer};

use super::schema::*;
use super::summary::FileSummary;
use crate::error::{ConvertError, Result};

impl Contents {
    /// Serializes to safetensors bytes.
    pub(super) fn to_bytes(&self, tokenizer_json: &str) -> Result<Vec<u8>> {
        let mut blobs: Vec<(String, Blob<'_>)> = Vec::new();
        let mut layers = BTreeMap::new();
        for (name, l) in &self.linears {
            match l {
                StoredLinear::Ternary {
                    matrix: m,
                    bias,
                    input_scale,
                } => {
                    let (rows, cols) = (m.rows(), m.cols());
                    let layout = m.layout();
                    let (scale_layout, group_size) = layout_meta(layout);
                    let (bias_, input_scale_) = (bias.is_some(), input_scale.is_some());
                    layers.insert(
                        name.clone(),
                        match m {
                            LinearWeights::One(_) => LayerMeta::Ternary {
                                rows,
                                cols,
                                scale_layout,
                                group_size,
                                bias: bias_,
                                input_scale: input_scale_,
                            },
                            LinearWeights::Two(_) => LayerMeta::TwoPlane {
                                rows,
                                cols,
                                scale_layout,
                                group_size,
                                bias: bias_,
                                input_scale: input_scale_,
                            },
                        },
                    );
                    // Plane k's tensors: `N.plus`, … for the first, `N.plus2`, … for the second.
                    for (k, p) in m.plane_matrices().into_iter().enumerate() {
                        let suffix = if k == 0 {
                            String::new()
                        } else {
                            format!("{}", k + 1)
                        };
                        let wpr = p.words_per_row();
                        blobs.push((
                            format!("{name}.plus{suffix}"),
                            Blob::U32(vec![rows, wpr], p.plus()),
                        ));
                        blobs.push((
                            format!("{name}.minus{suffix}"),
                            Blob::U32(vec![rows, wpr], p.minus()),
                        ));
                        blobs.push((
                            format!("{name}.scales{suffix}"),
                            Blob::F32(vec![rows, layout.groups_per_row(cols)], p.scales().values()),
                        ));
                    }
                    if let Some(b) = bias {
                        blobs.push((format!("{name}.bias"), Blob::F32(vec![rows], b)));
                    }
                    if let Some(d) = input_scale {
                        blobs.push((format!("{name}.input_scale"), Blob::F32(vec![cols], d)));
                    }
                }
                StoredLinear::Float(t) => {
                    let [rows, cols] = t.shape[..] else {
                        return Err(ConvertError::Shape(format!(
                            "float layer {name} has shape {:?}, expected 2 dimensions",
                            t.shape
                        )));
                    };
                    layers.insert(name.clone(), LayerMeta::Float { rows, cols });
                    let dtype = float_dtype_for(&t.data);
                    blobs.push((
                        format!("{name}.weight"),
                        float_blob(t.shape.clone(), &t.data, dtype),
                    ));
                }
            }
        }
        for (name, t) in &self.others {
            let dtype = if is_norm(name) {
                FloatDtype::F32
            } else {
                float_dtype_for(&t.data)
            };
            blobs.push((name.clone(), float_blob(t.shape.clone(), &t.data, dtype)));
        }
        let layers = serde_json::to_string(&layers)
            .map_err(|e| ConvertError::Invalid(format!("cannot encode the layer table: {e}")))?;
        let meta: HashMap<String, String> = [
            ("format", FORMAT_NAME.to_string()),
            ("format_version", self.version.to_string()),
            ("config", self.config.to_hf_json()),
            ("tokenizer", tokenizer_json.to_string()),
            ("layers", layers),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let bytes = safetensors::serialize(blobs, Some(meta))
            .map_err(|e| ConvertError::Invalid(format!("cannot serialize safetensors: {e}")))?;
        Ok(ternary_core::io::canonical_header(bytes)?)
    }
}

/// The [`TernaryLinear`] behind a model's linear layer, if it is one.
pub fn as_ternary<B: TernaryBackend>(layer: &dyn LinearLayer<B>) -> Option<&TernaryLinear<B>> {
    layer.as_any()?.downcast_ref::<TernaryLinear<B>>()
}

fn contents_of<B: TernaryBackend>(model: &Llama<B>, float: FloatStorage) -> Result<Contents> {
    let config = model.config().clone();
    let mut others = model.float_tensors()?;
    let mut linears = Vec::new();
    for (name, layer) in model.linears() {
        let stored = match as_ternary::<B>(layer.as_ref()) {
            Some(t) => StoredLinear::Ternary {
                matrix: t.weights().clone(),
                bias: t.bias(),
                input_scale: t.input_scale().map(<[f32]>::to_vec),
            },
            None => {
                let (rows, cols) = (layer.out_features(), layer.in_features());
                let data = ternary_layers::to_rows(layer.weight())?;
                if name == LM_HEAD
                    && config.tie_word_embeddings
                    && others.first().is_some_and(|(_, e)| e.data == data)
                {
                    continue; // tied head: it is the embedding
                }
                if let Some(i) = data.iter().position(|v| !v.is_finite()) {
                    return Err(ConvertError::Invalid(format!(
                        "layer {name} holds a non-finite weight at index {i}"
                    )));
                }
                StoredLinear::Float(HostTensor {
                    shape: vec![rows, cols],
                    data,
                })
            }
        };
        linears.push((name, stored));
    }
    // Rounded only now: the tied-head test above compares the values as the model holds them.
    for (_, l) in &mut linears {
        if let StoredLinear::Float(t) = l {
            float.apply(&mut t.data);
        }
    }
    for (name, t) in &mut others {
        if !is_norm(name) {
            float.apply(&mut t.data);
        }
    }
    let two_planes = linears.iter().any(|(_, l)| {
        matches!(
            l,
            StoredLinear::Ternary {
                matrix: LinearWeights::Two(_),
                ..
            }
        )
    });
    Ok(Contents {
        version: if two_planes {
            FORMAT_VERSION_TWO_PLANES
        } else {
            FORMAT_VERSION
        },
        config,
        tokenizer_json: String::new(),
        linears,
        others,
        embed_f16: None,
        file_bytes: 0,
    })
}

/// Serializes a model and its tokenizer to the bytes [`save`] writes.
pub fn to_bytes<B: TernaryBackend>(model: &Llama<B>, tokenizer: &Tokenizer) -> Result<Vec<u8>> {
    contents_of(model, FloatStorage::Exact)?.to_bytes(&tokenizer.to_json()?)
}

/// Writes `model` (its ternary layers as planes + scales, everything else float) and its
/// tokenizer to `path` atomically, and returns what the file holds.
///
/// The target is replaced only once the new file is complete and flushed; on error it is left
/// as it was.
pub fn save<B: TernaryBackend>(
    path: impl AsRef<Path>,
    model: &Llama<B>,
    tokenizer: &Tokenizer,
) -> Result<FileSummary> {
    save_with(path, model, tokenizer, FloatStorage::Exact)
}

/// [`save`] with the float tensors stored as `float` says: [`FloatStorage::F16`] halves the
/// embedding's and the float layers' bytes in the file and in the memory of whoever runs it,
/// at the cost of rounding each of those values to `f16` once.
pub fn save_with<B: TernaryBackend>(
    path: impl AsRef<Path>,
    model: &Llama<B>,
    tokenizer: &Tokenizer,
    float: FloatStorage,
) -> Result<FileSummary> {
    let path = path.as_ref();
    let mut contents = contents_of(model, float)?;
    let bytes = contents.to_bytes(&tokenizer.to_json()?)?;
    ternary_core::io::write_atomic(path, &bytes)?;
    contents.file_bytes = bytes.len() as u64;
    Ok(contents.summary(Some(path)))
}
