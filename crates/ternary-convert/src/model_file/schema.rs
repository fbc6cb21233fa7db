//! The file's schema, independent of Burn: metadata names, per-layer entries, the decoded
//! contents ([`Contents`]) and which tensors a configuration implies.

use std::fmt;

use half::f16;
use serde::{Deserialize, Serialize};
use ternary_core::ScaleLayout;
use ternary_core::io::Blob;
use ternary_layers::LinearWeights;
use ternary_models::weights::HostTensor;
use ternary_models::{Architecture, LlamaConfig};

/// Value of the metadata key `format`.
pub const FORMAT_NAME: &str = "ternary-model";
/// Value of the metadata key `format_version` of a file without two-plane layers (what
/// version-1 readers read).
pub const FORMAT_VERSION: &str = "1";
/// Value of the metadata key `format_version` of a file with at least one two-plane layer
/// (layer kind `"two_plane"`); version-1 readers reject it rather than misread it.
pub const FORMAT_VERSION_TWO_PLANES: &str = "2";

pub(super) const EMBED: &str = "model.embed_tokens.weight";
pub(super) const FINAL_NORM: &str = "model.norm.weight";
pub(super) const LM_HEAD: &str = "lm_head";

/// How a float tensor is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FloatDtype {
    /// IEEE half precision (2 bytes), used only when it is exact.
    F16,
    /// IEEE single precision (4 bytes).
    F32,
}

impl FloatDtype {
    /// Bytes per value.
    pub fn bytes(self) -> u64 {
        match self {
            Self::F16 => 2,
            Self::F32 => 4,
        }
    }
}

impl fmt::Display for FloatDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F16 => "f16",
            Self::F32 => "f32",
        })
    }
}

/// How [`save_with`](super::save_with) stores the float tensors: the embedding and the float
/// linear layers (norms and scales are always `f32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatStorage {
    /// Every value as it is: `f16` where that is exact, `f32` otherwise ([`save`](super::save)).
    #[default]
    Exact,
    /// Rounded to the nearest `f16` (half of `f32`'s bytes; each value moves by at most
    /// 2⁻¹¹ of itself). A tensor holding a value beyond `f16`'s range (|v| > 65504) is kept
    /// exact in `f32` rather than turned into infinity.
    F16,
}

impl FloatStorage {
    /// Applies the rule to `values` in place.
    pub(super) fn apply(self, values: &mut [f32]) {
        if self == Self::F16 && values.iter().all(|&v| f16::from_f32(v).is_finite()) {
            for v in values {
                *v = f16::from_f32(*v).to_f32();
            }
        }
    }
}

/// How one linear layer is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoredFormat {
    /// Bit-planes and scales.
    Ternary {
        /// Scale layout (per row or per group of input columns).
        layout: ScaleLayout,
        /// Whether a bias `b` is stored.
        bias: bool,
        /// Whether an input scale `d` is stored.
        input_scale: bool,
    },
    /// Two plane pairs (`W = M₁ + M₂`) and their scales.
    TwoPlanes {
        /// Scale layout (both planes).
        layout: ScaleLayout,
        /// Whether a bias `b` is stored.
        bias: bool,
        /// Whether an input scale `d` is stored.
        input_scale: bool,
    },
    /// A dense float weight.
    Float(FloatDtype),
}

impl fmt::Display for StoredFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Ternary {
                layout,
                bias,
                input_scale,
            }
            | Self::TwoPlanes {
                layout,
                bias,
                input_scale,
            } => {
                let kind = if matches!(self, Self::TwoPlanes { .. }) {
                    "2-plane"
                } else {
                    "ternary"
                };
                match layout {
                    ScaleLayout::PerRow => write!(f, "{kind}/row")?,
                    ScaleLayout::PerGroup { group_size } => write!(f, "{kind}/g{group_size}")?,
                }
                if input_scale {
                    write!(f, "+d")?;
                }
                if bias {
                    write!(f, "+b")?;
                }
                Ok(())
            }
            Self::Float(d) => write!(f, "{d}"),
        }
    }
}

/// A linear layer as stored.
#[derive(Debug, Clone)]
pub(super) enum StoredLinear {
    Ternary {
        matrix: LinearWeights,
        bias: Option<Vec<f32>>,
        input_scale: Option<Vec<f32>>,
    },
    Float(HostTensor),
}

/// Everything a file holds, decoded and validated.
#[derive(Debug)]
pub(super) struct Contents {
    /// [`FORMAT_VERSION`] or [`FORMAT_VERSION_TWO_PLANES`].
    pub(super) version: &'static str,
    pub(super) config: LlamaConfig,
    pub(super) tokenizer_json: String,
    /// In model order.
    pub(super) linears: Vec<(String, StoredLinear)>,
    /// Embedding and norms, in model order; the embedding is missing when `embed_f16` holds it.
    pub(super) others: Vec<(String, HostTensor)>,
    /// The embedding `[V, H]` when the file stores it as `f16`: read as such (half the memory
    /// of widening it), widened only if the model needs `f32` (a tied float head).
    pub(super) embed_f16: Option<Vec<f16>>,
    pub(super) file_bytes: u64,
}

/// Per-layer metadata entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub(super) enum LayerMeta {
    Ternary {
        rows: usize,
        cols: usize,
        scale_layout: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_size: Option<usize>,
        bias: bool,
        input_scale: bool,
    },
    /// Plane 1 as `N.plus`, `N.minus`, `N.scales`; plane 2 as `N.plus2`, `N.minus2`,
    /// `N.scales2` (same shapes). Version 2 files only.
    TwoPlane {
        rows: usize,
        cols: usize,
        scale_layout: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group_size: Option<usize>,
        bias: bool,
        input_scale: bool,
    },
    Float {
        rows: usize,
        cols: usize,
    },
}

/// The `[rows, cols]` of every linear layer a model with `c` has, in model order.
pub(super) fn expected_linears(c: &LlamaConfig) -> Vec<(String, usize, usize)> {
    let (h, f, d) = (c.hidden_size, c.intermediate_size, c.head_dim);
    let mut out = Vec::with_capacity(7 * c.num_layers + 1);
    for l in 0..c.num_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        out.push((p("self_attn.q_proj"), c.num_heads * d, h));
        out.push((p("self_attn.k_proj"), c.num_kv_heads * d, h));
        out.push((p("self_attn.v_proj"), c.num_kv_heads * d, h));
        out.push((p("self_attn.o_proj"), h, c.num_heads * d));
        out.push((p("mlp.gate_proj"), f, h));
        out.push((p("mlp.up_proj"), f, h));
        out.push((p("mlp.down_proj"), h, f));
    }
    out.push((LM_HEAD.to_string(), c.vocab_size, h));
    out
}

/// The shapes of the non-linear tensors a model with `c` has, in model order.
pub(super) fn expected_others(c: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let h = c.hidden_size;
    let mut out = vec![(EMBED.to_string(), vec![c.vocab_size, h])];
    for l in 0..c.num_layers {
        out.push((format!("model.layers.{l}.input_layernorm.weight"), vec![h]));
        out.push((
            format!("model.layers.{l}.post_attention_layernorm.weight"),
            vec![h],
        ));
        if c.architecture == Architecture::BitNet {
            out.push((
                format!("model.layers.{l}.self_attn.attn_sub_norm.weight"),
                vec![c.num_heads * c.head_dim],
            ));
            out.push((
                format!("model.layers.{l}.mlp.ffn_sub_norm.weight"),
                vec![c.intermediate_size],
            ));
        }
    }
    out.push((FINAL_NORM.to_string(), vec![h]));
    out
}

pub(super) fn is_norm(name: &str) -> bool {
    name.ends_with("layernorm.weight") || name.ends_with("_sub_norm.weight") || name == FINAL_NORM
}

/// `F16` when every value survives `f32 → f16 → f32` exactly, else `F32`.
pub(super) fn float_dtype_for(values: &[f32]) -> FloatDtype {
    let exact = values
        .iter()
        .all(|&v| f16::from_f32(v).to_f32().to_bits() == v.to_bits());
    if exact {
        FloatDtype::F16
    } else {
        FloatDtype::F32
    }
}

pub(super) fn float_blob<'a>(shape: Vec<usize>, values: &'a [f32], dtype: FloatDtype) -> Blob<'a> {
    match dtype {
        FloatDtype::F16 => Blob::F16(shape, values),
        FloatDtype::F32 => Blob::F32(shape, values),
    }
}

pub(super) fn layout_meta(layout: ScaleLayout) -> (String, Option<usize>) {
    match layout {
        ScaleLayout::PerRow => ("per_row".into(), None),
        ScaleLayout::PerGroup { group_size } => ("per_group".into(), Some(group_size)),
    }
}
