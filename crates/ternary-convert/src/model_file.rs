//! Converted models in one safetensors file: [`save`], [`load`], [`inspect`].
//!
//! # Layout (format `"ternary-model"`, version `"1"`)
//!
//! Every linear layer `N` of [`Llama::linears`] (`model.layers.{l}.self_attn.q_proj`, …,
//! `lm_head`) is stored either
//!
//! - **ternary** (a [`TernaryLinear`]): `N.plus`, `N.minus` — `U32 [rows, words_per_row]`, the
//!   in-memory bit-planes verbatim (little-endian words, column `c` in word `c / 32`, bit
//!   `c % 32`, as in `ternary_core::io`); `N.scales` — `F32 [rows, groups_per_row]`; optional
//!   `N.bias` — `F32 [rows]`; optional `N.input_scale` — `F32 [cols]`. The layer computes
//!   `y = Q·(x ⊙ d) + b` with `Q[r, c] = s[r, g(c)] · t[r, c]`;
//! - or **float**: `N.weight` — `[rows, cols]`, the effective weight `W` of the layer.
//!
//! The other tensors keep their Hugging Face names: `model.embed_tokens.weight` `[V, H]`,
//! `model.layers.{l}.input_layernorm.weight`, `…post_attention_layernorm.weight` and
//! `model.norm.weight` `[H]`. Float linears and the embedding are stored as `F16` when every
//! value converts to `f16` and back exactly (a model that came from f16 weights), otherwise
//! as `F32`, so saving never changes a value; norms are always `F32`. A tied output head kept
//! in float is not stored (it is the embedding).
//!
//! Metadata (`__metadata__`, all strings): `format`, `format_version`, `config` (a Hugging
//! Face `config.json`, [`LlamaConfig::to_hf_json`]), `tokenizer` ([`Tokenizer::to_json`]) and
//! `layers`, a JSON object mapping each stored linear layer to
//! `{"kind": "ternary", "rows", "cols", "scale_layout": "per_row" | "per_group",
//! "group_size", "bias", "input_scale"}` or `{"kind": "float", "rows", "cols"}`.
//!
//! Reading checks everything before building the model: a truncated or garbage file, an
//! unknown format or version, a malformed config, tokenizer or layer table, a missing or
//! unexpected tensor, a wrong dtype or shape, both planes set, padding bits, and non-finite
//! values all give [`ConvertError::Format`] naming the file; nothing panics. Writing is atomic
//! (`ternary_core::io::write_atomic`: temporary file, fsync, rename).

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use half::f16;
use safetensors::{Dtype, SafeTensors, View};
use serde::{Deserialize, Serialize};
use ternary_core::{ScaleLayout, Scales, TernaryMatrix, words_per_row};
use ternary_layers::LinearLayer;
use ternary_layers::TernaryBackend;
use ternary_models::weights::{HostTensor, WeightSource};
use ternary_models::{LinearImpl, Llama, LlamaConfig, LoadedModel, Tokenizer};

use crate::error::{ConvertError, Result};
use ternary_layers::TernaryLinear;

/// The default calibration text (`fixtures/text/calibration.txt`): ~2100 words of original
/// English prose in many registers (narrative, dialogue, technical, history, instructions,
/// code, numbers), CC0, disjoint from the evaluation text.
pub const CALIBRATION_TEXT: &str = include_str!("../../../fixtures/text/calibration.txt");

/// Value of the metadata key `format`.
pub const FORMAT_NAME: &str = "ternary-model";
/// Value of the metadata key `format_version` written by, and the only one read by, this
/// version of the crate.
pub const FORMAT_VERSION: &str = "1";

const EMBED: &str = "model.embed_tokens.weight";
const FINAL_NORM: &str = "model.norm.weight";
const LM_HEAD: &str = "lm_head";

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

/// How one linear layer is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerFormat {
    /// Bit-planes and scales.
    Ternary {
        /// Scale layout (per row or per group of input columns).
        layout: ScaleLayout,
        /// Whether a bias `b` is stored.
        bias: bool,
        /// Whether an input scale `d` is stored.
        input_scale: bool,
    },
    /// A dense float weight.
    Float(FloatDtype),
}

impl fmt::Display for LayerFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::Ternary {
                layout,
                bias,
                input_scale,
            } => {
                match layout {
                    ScaleLayout::PerRow => write!(f, "ternary/row")?,
                    ScaleLayout::PerGroup { group_size } => write!(f, "ternary/g{group_size}")?,
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

/// One linear layer of a converted model.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSummary {
    /// Hugging Face name without `.weight` (e.g. `model.layers.0.mlp.up_proj`).
    pub name: String,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Storage.
    pub format: LayerFormat,
    /// Fraction of zero trits (ternary layers only).
    pub zero_fraction: Option<f64>,
    /// Bytes the layer takes in the file (planes, scales, bias, input scale; or the weight).
    pub bytes: u64,
}

impl LayerSummary {
    /// `rows · cols`.
    pub fn weights(&self) -> u64 {
        self.rows as u64 * self.cols as u64
    }

    /// Whether the layer is ternary.
    pub fn is_ternary(&self) -> bool {
        matches!(self.format, LayerFormat::Ternary { .. })
    }

    /// Stored bits per weight, `8 · bytes / (rows · cols)` (planes with their row padding,
    /// scales and vectors included).
    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.bytes as f64 / self.weights().max(1) as f64
    }
}

/// What a converted-model file holds (see [`inspect`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FileSummary {
    /// The file, when the summary came from one.
    pub path: Option<PathBuf>,
    /// Format version.
    pub format_version: String,
    /// The model's hyper-parameters.
    pub config: LlamaConfig,
    /// Every linear layer in model order (a tied float head is listed with the embedding's
    /// storage and counted once, under the embedding).
    pub layers: Vec<LayerSummary>,
    /// The other tensors (embedding, norms): name, shape, storage.
    pub others: Vec<(String, Vec<usize>, FloatDtype)>,
    /// Bytes of [`FileSummary::others`].
    pub other_bytes: u64,
    /// Size of the whole file (header and metadata included).
    pub file_bytes: u64,
}

impl FileSummary {
    fn stored_layers(&self) -> impl Iterator<Item = &LayerSummary> {
        self.layers.iter().filter(|l| l.bytes > 0)
    }

    /// Weights in all linear layers (a tied head is not counted: it is the embedding).
    pub fn linear_weights(&self) -> u64 {
        self.stored_layers().map(LayerSummary::weights).sum()
    }

    /// Weights in ternary linear layers.
    pub fn ternary_weights(&self) -> u64 {
        self.stored_layers()
            .filter(|l| l.is_ternary())
            .map(LayerSummary::weights)
            .sum()
    }

    /// `ternary_weights / linear_weights` (0 for a model without linear weights).
    pub fn ternary_fraction(&self) -> f64 {
        self.ternary_weights() as f64 / self.linear_weights().max(1) as f64
    }

    /// Bytes of all linear layers.
    pub fn linear_bytes(&self) -> u64 {
        self.stored_layers().map(|l| l.bytes).sum()
    }

    /// Stored bits per linear weight, `8 · linear_bytes / linear_weights`.
    pub fn linear_bits_per_weight(&self) -> f64 {
        8.0 * self.linear_bytes() as f64 / self.linear_weights().max(1) as f64
    }

    /// Bytes of every weight (linear layers, embedding, norms).
    pub fn weight_bytes(&self) -> u64 {
        self.linear_bytes() + self.other_bytes
    }
}

/// `n` bytes as `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}

impl fmt::Display for FileSummary {
    /// A table of the layers, then the totals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            writeln!(
                f,
                "{} ({FORMAT_NAME} v{})",
                p.display(),
                self.format_version
            )?;
        }
        let c = &self.config;
        writeln!(
            f,
            "llama: {} layers, hidden {}, ffn {}, heads {}/{} (kv), vocab {}{}",
            c.num_layers,
            c.hidden_size,
            c.intermediate_size,
            c.num_heads,
            c.num_kv_heads,
            c.vocab_size,
            if c.tie_word_embeddings {
                ", tied head"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "{:<36} {:>11} {:<16} {:>7} {:>9} {:>10}",
            "layer", "shape", "format", "zeros", "bits/w", "bytes"
        )?;
        for l in &self.layers {
            let zeros = l
                .zero_fraction
                .map_or_else(|| "-".to_string(), |z| format!("{:.1}%", 100.0 * z));
            let (bits, bytes) = if l.bytes == 0 {
                ("tied".to_string(), "-".to_string())
            } else {
                (format!("{:.3}", l.bits_per_weight()), human_bytes(l.bytes))
            };
            writeln!(
                f,
                "{:<36} {:>11} {:<16} {:>7} {:>9} {:>10}",
                l.name,
                format!("{}x{}", l.rows, l.cols),
                l.format.to_string(),
                zeros,
                bits,
                bytes
            )?;
        }
        f.write_str(&self.totals())
    }
}

impl FileSummary {
    /// The two total lines that end the [`Display`](fmt::Display) table: layer counts and
    /// ternary share, then bytes and bits per weight.
    pub fn totals(&self) -> String {
        let ternary = self.stored_layers().filter(|l| l.is_ternary()).count();
        format!(
            "linear layers: {} ternary, {} float; {:.1}% of {} linear weights ternary\n\
             linear weights: {} ({:.3} bits/weight); embedding and norms: {}; all weights: {}; \
             file: {}\n",
            ternary,
            self.stored_layers().count() - ternary,
            100.0 * self.ternary_fraction(),
            self.linear_weights(),
            human_bytes(self.linear_bytes()),
            self.linear_bits_per_weight(),
            human_bytes(self.other_bytes),
            human_bytes(self.weight_bytes()),
            human_bytes(self.file_bytes)
        )
    }
}

// ---------------------------------------------------------------------------------------------
// The file's contents, independent of Burn
// ---------------------------------------------------------------------------------------------

/// A linear layer as stored.
#[derive(Debug, Clone)]
enum StoredLinear {
    Ternary {
        matrix: TernaryMatrix,
        bias: Option<Vec<f32>>,
        input_scale: Option<Vec<f32>>,
    },
    Float(HostTensor),
}

/// Everything a file holds, decoded and validated.
#[derive(Debug)]
struct Contents {
    config: LlamaConfig,
    tokenizer_json: String,
    /// In model order.
    linears: Vec<(String, StoredLinear)>,
    /// Embedding and norms, in model order.
    others: Vec<(String, HostTensor)>,
    file_bytes: u64,
}

/// Per-layer metadata entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum LayerMeta {
    Ternary {
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
fn expected_linears(c: &LlamaConfig) -> Vec<(String, usize, usize)> {
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
fn expected_others(c: &LlamaConfig) -> Vec<(String, Vec<usize>)> {
    let h = c.hidden_size;
    let mut out = vec![(EMBED.to_string(), vec![c.vocab_size, h])];
    for l in 0..c.num_layers {
        out.push((format!("model.layers.{l}.input_layernorm.weight"), vec![h]));
        out.push((
            format!("model.layers.{l}.post_attention_layernorm.weight"),
            vec![h],
        ));
    }
    out.push((FINAL_NORM.to_string(), vec![h]));
    out
}

fn is_norm(name: &str) -> bool {
    name.ends_with("layernorm.weight") || name == FINAL_NORM
}

/// `F16` when every value survives `f32 → f16 → f32` exactly, else `F32`.
fn float_dtype_for(values: &[f32]) -> FloatDtype {
    let exact = values
        .iter()
        .all(|&v| f16::from_f32(v).to_f32().to_bits() == v.to_bits());
    if exact {
        FloatDtype::F16
    } else {
        FloatDtype::F32
    }
}

/// One tensor's bytes for `safetensors::serialize`, converted to little-endian lazily.
enum Blob<'a> {
    U32(Vec<usize>, &'a [u32]),
    F32(Vec<usize>, &'a [f32]),
    F16(Vec<usize>, &'a [f32]),
}

impl View for Blob<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            Self::U32(..) => Dtype::U32,
            Self::F32(..) => Dtype::F32,
            Self::F16(..) => Dtype::F16,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Self::U32(s, _) | Self::F32(s, _) | Self::F16(s, _) => s,
        }
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            Self::U32(_, d) => Cow::Owned(d.iter().flat_map(|w| w.to_le_bytes()).collect()),
            Self::F32(_, d) => Cow::Owned(d.iter().flat_map(|v| v.to_le_bytes()).collect()),
            Self::F16(_, d) => Cow::Owned(
                d.iter()
                    .flat_map(|&v| f16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
        }
    }

    fn data_len(&self) -> usize {
        match self {
            Self::U32(_, d) => d.len() * 4,
            Self::F32(_, d) => d.len() * 4,
            Self::F16(_, d) => d.len() * 2,
        }
    }
}

fn float_blob<'a>(shape: Vec<usize>, values: &'a [f32], dtype: FloatDtype) -> Blob<'a> {
    match dtype {
        FloatDtype::F16 => Blob::F16(shape, values),
        FloatDtype::F32 => Blob::F32(shape, values),
    }
}

fn layout_meta(layout: ScaleLayout) -> (String, Option<usize>) {
    match layout {
        ScaleLayout::PerRow => ("per_row".into(), None),
        ScaleLayout::PerGroup { group_size } => ("per_group".into(), Some(group_size)),
    }
}

impl Contents {
    /// Serializes to safetensors bytes.
    fn to_bytes(&self, tokenizer_json: &str) -> Result<Vec<u8>> {
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
                    let layout = m.scales().layout();
                    let (scale_layout, group_size) = layout_meta(layout);
                    layers.insert(
                        name.clone(),
                        LayerMeta::Ternary {
                            rows,
                            cols,
                            scale_layout,
                            group_size,
                            bias: bias.is_some(),
                            input_scale: input_scale.is_some(),
                        },
                    );
                    let wpr = m.words_per_row();
                    blobs.push((format!("{name}.plus"), Blob::U32(vec![rows, wpr], m.plus())));
                    blobs.push((
                        format!("{name}.minus"),
                        Blob::U32(vec![rows, wpr], m.minus()),
                    ));
                    blobs.push((
                        format!("{name}.scales"),
                        Blob::F32(vec![rows, layout.groups_per_row(cols)], m.scales().values()),
                    ));
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
            ("format_version", FORMAT_VERSION.to_string()),
            ("config", self.config.to_hf_json()),
            ("tokenizer", tokenizer_json.to_string()),
            ("layers", layers),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        safetensors::serialize(blobs, Some(meta))
            .map_err(|e| ConvertError::Invalid(format!("cannot serialize safetensors: {e}")))
    }

    /// Parses and validates safetensors bytes; `path` names the file in errors.
    fn from_bytes(bytes: &[u8], path: Option<&Path>) -> Result<Self> {
        let err = |reason: String| match path {
            Some(p) => ConvertError::Format(format!("{}: {reason}", p.display())),
            None => ConvertError::Format(reason),
        };
        ternary_core::io::check_data_offsets(bytes).map_err(err)?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
        let meta = header
            .metadata()
            .as_ref()
            .ok_or_else(|| err("no __metadata__ map: not a converted ternary model".into()))?;
        let key = |k: &str| {
            meta.get(k)
                .ok_or_else(|| err(format!("missing metadata key {k:?}")))
        };
        let format = key("format")?;
        if format != FORMAT_NAME {
            return Err(err(format!(
                "metadata \"format\" is {format:?}, expected {FORMAT_NAME:?}"
            )));
        }
        let version = key("format_version")?;
        if version != FORMAT_VERSION {
            return Err(err(format!(
                "unsupported format version {version:?} (this reader supports {FORMAT_VERSION:?})"
            )));
        }
        let config = LlamaConfig::from_hf_json(key("config")?)
            .map_err(|e| err(format!("metadata \"config\": {e}")))?;
        let tokenizer_json = key("tokenizer")?.clone();
        let table: BTreeMap<String, LayerMeta> =
            serde_json::from_str(key("layers")?).map_err(|e| {
                err(format!(
                    "metadata \"layers\" is not a valid layer table: {e}"
                ))
            })?;

        let mut claimed = BTreeSet::new();
        let mut fetch = |name: String, dtypes: &[Dtype], shape: &[usize]| -> Result<Vec<u8>> {
            let view = st
                .tensor(&name)
                .map_err(|_| err(format!("missing tensor {name:?}")))?;
            if !dtypes.contains(&view.dtype()) {
                return Err(err(format!(
                    "tensor {name:?} has dtype {}, expected {}",
                    view.dtype(),
                    dtypes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" or ")
                )));
            }
            if view.shape() != shape {
                return Err(err(format!(
                    "tensor {name:?} has shape {:?}, expected {shape:?}",
                    view.shape()
                )));
            }
            let data = match view.dtype() {
                Dtype::F16 => view
                    .data()
                    .chunks_exact(2)
                    .flat_map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32().to_le_bytes())
                    .collect(),
                _ => view.data().to_vec(),
            };
            claimed.insert(name);
            Ok(data)
        };
        let finite = |name: &str, v: Vec<f32>| -> Result<Vec<f32>> {
            match v.iter().position(|x| !x.is_finite()) {
                Some(i) => Err(err(format!(
                    "tensor {name:?} holds a non-finite value at index {i}"
                ))),
                None => Ok(v),
            }
        };

        let expected = expected_linears(&config);
        let expected_names: BTreeSet<&str> = expected.iter().map(|(n, ..)| n.as_str()).collect();
        if let Some(stray) = table.keys().find(|n| !expected_names.contains(n.as_str())) {
            return Err(err(format!(
                "the layer table names {stray:?}, which the model's config does not have"
            )));
        }
        let mut linears = Vec::with_capacity(expected.len());
        for (name, rows, cols) in expected {
            let Some(entry) = table.get(&name) else {
                if name == LM_HEAD && config.tie_word_embeddings {
                    continue; // the tied head is the embedding
                }
                return Err(err(format!("the layer table has no entry for {name:?}")));
            };
            let (r, c) = match entry {
                LayerMeta::Ternary { rows, cols, .. } | LayerMeta::Float { rows, cols } => {
                    (*rows, *cols)
                }
            };
            if (r, c) != (rows, cols) {
                return Err(err(format!(
                    "layer {name:?} is {r}x{c} in the layer table; the config says {rows}x{cols}"
                )));
            }
            let stored = match entry {
                LayerMeta::Float { .. } => {
                    let n = format!("{name}.weight");
                    let data = fetch(n.clone(), &[Dtype::F16, Dtype::F32], &[rows, cols])?;
                    StoredLinear::Float(HostTensor {
                        shape: vec![rows, cols],
                        data: finite(&n, le_f32(&data))?,
                    })
                }
                LayerMeta::Ternary {
                    scale_layout,
                    group_size,
                    bias,
                    input_scale,
                    ..
                } => {
                    let layout = match (scale_layout.as_str(), group_size) {
                        ("per_row", None) => ScaleLayout::PerRow,
                        ("per_group", Some(g)) => {
                            let l = ScaleLayout::PerGroup { group_size: *g };
                            l.validate()
                                .map_err(|e| err(format!("layer {name:?}: {e}")))?;
                            l
                        }
                        (other, g) => {
                            return Err(err(format!(
                                "layer {name:?}: scale layout {other:?} with group size {g:?} \
                                 (expected \"per_row\" without a group size or \"per_group\" \
                                 with one)"
                            )));
                        }
                    };
                    let wpr = words_per_row(cols);
                    let plus = fetch(format!("{name}.plus"), &[Dtype::U32], &[rows, wpr])?;
                    let minus = fetch(format!("{name}.minus"), &[Dtype::U32], &[rows, wpr])?;
                    let gpr = layout.groups_per_row(cols);
                    let sn = format!("{name}.scales");
                    let scales = finite(
                        &sn,
                        le_f32(&fetch(sn.clone(), &[Dtype::F32], &[rows, gpr])?),
                    )?;
                    let matrix = TernaryMatrix::from_planes(
                        rows,
                        cols,
                        le_u32(&plus),
                        le_u32(&minus),
                        Scales::new(layout, scales),
                    )
                    .map_err(|e| err(format!("layer {name:?}: {e}")))?;
                    let mut vector = |suffix: &str, len: usize, present: bool| -> Result<_> {
                        if !present {
                            return Ok(None);
                        }
                        let n = format!("{name}.{suffix}");
                        let v = le_f32(&fetch(n.clone(), &[Dtype::F32], &[len])?);
                        Ok(Some(finite(&n, v)?))
                    };
                    let bias = vector("bias", rows, *bias)?;
                    let input_scale = vector("input_scale", cols, *input_scale)?;
                    StoredLinear::Ternary {
                        matrix,
                        bias,
                        input_scale,
                    }
                }
            };
            linears.push((name, stored));
        }
        let mut others = Vec::new();
        for (name, shape) in expected_others(&config) {
            let dtypes: &[Dtype] = if is_norm(&name) {
                &[Dtype::F32]
            } else {
                &[Dtype::F16, Dtype::F32]
            };
            let data = finite(&name, le_f32(&fetch(name.clone(), dtypes, &shape)?))?;
            others.push((name, HostTensor { shape, data }));
        }
        let mut names = st.names();
        names.sort_unstable();
        if let Some(stray) = names.into_iter().find(|n| !claimed.contains(*n)) {
            return Err(err(format!(
                "tensor {stray:?} is not part of the model the metadata describes"
            )));
        }
        Tokenizer::from_json(&tokenizer_json)
            .map_err(|e| err(format!("metadata \"tokenizer\": {e}")))?;
        Ok(Self {
            config,
            tokenizer_json,
            linears,
            others,
            file_bytes: bytes.len() as u64,
        })
    }

    fn summary(&self, path: Option<&Path>) -> FileSummary {
        let mut layers = Vec::with_capacity(self.linears.len() + 1);
        for (name, l) in &self.linears {
            layers.push(match l {
                StoredLinear::Ternary {
                    matrix: m,
                    bias,
                    input_scale,
                } => {
                    let nonzero: u64 = m
                        .plus()
                        .iter()
                        .zip(m.minus())
                        .map(|(p, q)| u64::from((p | q).count_ones()))
                        .sum();
                    let n = (m.rows() * m.cols()) as u64;
                    let bytes = 4
                        * (2 * m.plus().len()
                            + m.scales().values().len()
                            + bias.as_ref().map_or(0, Vec::len)
                            + input_scale.as_ref().map_or(0, Vec::len))
                            as u64;
                    LayerSummary {
                        name: name.clone(),
                        rows: m.rows(),
                        cols: m.cols(),
                        format: LayerFormat::Ternary {
                            layout: m.scales().layout(),
                            bias: bias.is_some(),
                            input_scale: input_scale.is_some(),
                        },
                        zero_fraction: Some(if n == 0 {
                            0.0
                        } else {
                            (n - nonzero) as f64 / n as f64
                        }),
                        bytes,
                    }
                }
                StoredLinear::Float(t) => {
                    let dtype = float_dtype_for(&t.data);
                    LayerSummary {
                        name: name.clone(),
                        rows: t.shape[0],
                        cols: t.shape[1],
                        format: LayerFormat::Float(dtype),
                        zero_fraction: None,
                        bytes: dtype.bytes() * t.data.len() as u64,
                    }
                }
            });
        }
        let c = &self.config;
        let mut others = Vec::new();
        let mut other_bytes = 0;
        for (name, t) in &self.others {
            let dtype = if is_norm(name) {
                FloatDtype::F32
            } else {
                float_dtype_for(&t.data)
            };
            other_bytes += dtype.bytes() * t.data.len() as u64;
            others.push((name.clone(), t.shape.clone(), dtype));
        }
        if c.tie_word_embeddings && !self.linears.iter().any(|(n, _)| n == LM_HEAD) {
            let dtype = others
                .first()
                .map_or(FloatDtype::F32, |(_, _, dtype)| *dtype);
            layers.push(LayerSummary {
                name: LM_HEAD.to_string(),
                rows: c.vocab_size,
                cols: c.hidden_size,
                format: LayerFormat::Float(dtype),
                zero_fraction: None,
                bytes: 0,
            });
        }
        FileSummary {
            path: path.map(Path::to_path_buf),
            format_version: FORMAT_VERSION.to_string(),
            config: c.clone(),
            layers,
            others,
            other_bytes,
            file_bytes: self.file_bytes,
        }
    }
}

fn le_u32(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Llama <-> file
// ---------------------------------------------------------------------------------------------

/// The [`TernaryLinear`] behind a model's linear layer, if it is one.
pub fn as_ternary<B: TernaryBackend>(layer: &dyn LinearLayer<B>) -> Option<&TernaryLinear<B>> {
    layer.as_any()?.downcast_ref::<TernaryLinear<B>>()
}

fn contents_of<B: TernaryBackend>(model: &Llama<B>) -> Result<Contents> {
    let config = model.config().clone();
    let others = model.float_tensors()?;
    let mut linears = Vec::new();
    for (name, layer) in model.linears() {
        let stored = match as_ternary::<B>(layer.as_ref()) {
            Some(t) => StoredLinear::Ternary {
                matrix: t.matrix().clone(),
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
    Ok(Contents {
        config,
        tokenizer_json: String::new(),
        linears,
        others,
        file_bytes: 0,
    })
}

/// Serializes a model and its tokenizer to the bytes [`save`] writes.
pub fn to_bytes<B: TernaryBackend>(model: &Llama<B>, tokenizer: &Tokenizer) -> Result<Vec<u8>> {
    contents_of(model)?.to_bytes(&tokenizer.to_json()?)
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
    let path = path.as_ref();
    let mut contents = contents_of(model)?;
    let bytes = contents.to_bytes(&tokenizer.to_json()?)?;
    ternary_core::io::write_atomic(path, &bytes)?;
    contents.file_bytes = bytes.len() as u64;
    Ok(contents.summary(Some(path)))
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads and validates a converted-model file and says what it holds (layers, formats, bits
/// per weight, bytes) without building the model.
pub fn inspect(path: impl AsRef<Path>) -> Result<FileSummary> {
    let path = path.as_ref();
    let bytes = read(path)?;
    Ok(Contents::from_bytes(&bytes, Some(path))?.summary(Some(path)))
}

/// [`inspect`] on bytes.
pub fn inspect_bytes(bytes: &[u8]) -> Result<FileSummary> {
    Ok(Contents::from_bytes(bytes, None)?.summary(None))
}

/// Loads a file written by [`save`]: the model (ternary layers as [`TernaryLinear`], float
/// layers as the backend's default float linear) and its tokenizer.
pub fn load<B: TernaryBackend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<LoadedModel<B>> {
    let path = path.as_ref();
    let bytes = read(path)?;
    build(Contents::from_bytes(&bytes, Some(path))?, device)
}

/// [`load`] from bytes.
pub fn load_bytes<B: TernaryBackend>(bytes: &[u8], device: &B::Device) -> Result<LoadedModel<B>> {
    build(Contents::from_bytes(bytes, None)?, device)
}

/// Serves the file's float tensors under their Hugging Face names; a ternary layer's
/// `.weight` is served as zeros (never read: the layer is replaced right after building).
struct FileWeights<'a> {
    contents: &'a Contents,
}

impl FileWeights<'_> {
    fn linear(&self, name: &str) -> Option<&StoredLinear> {
        let layer = name.strip_suffix(".weight")?;
        self.contents
            .linears
            .iter()
            .find(|(n, _)| n == layer)
            .map(|(_, l)| l)
    }
}

impl WeightSource for FileWeights<'_> {
    fn tensor(&self, name: &str) -> ternary_models::Result<HostTensor> {
        if let Some((_, t)) = self.contents.others.iter().find(|(n, _)| n == name) {
            return Ok(t.clone());
        }
        match self.linear(name) {
            Some(StoredLinear::Float(t)) => Ok(t.clone()),
            Some(StoredLinear::Ternary { matrix, .. }) => Ok(HostTensor {
                shape: vec![matrix.rows(), matrix.cols()],
                data: vec![0.0; matrix.rows() * matrix.cols()],
            }),
            None => Err(ternary_models::ModelError::MissingTensor(name.to_string())),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.contents.others.iter().any(|(n, _)| n == name) || self.linear(name).is_some()
    }
}

fn build<B: TernaryBackend>(contents: Contents, device: &B::Device) -> Result<LoadedModel<B>> {
    let tokenizer = Tokenizer::from_json(&contents.tokenizer_json)?;
    let linear_impl = LinearImpl::default_for::<B>();
    let mut model = Llama::<B>::from_weights_with(
        contents.config.clone(),
        &FileWeights {
            contents: &contents,
        },
        device,
        linear_impl,
    )?;
    let tied = contents.config.tie_word_embeddings;
    let mut stored: HashMap<String, StoredLinear> = contents.linears.into_iter().collect();
    for (name, slot) in model.linears_mut() {
        match stored.remove(&name) {
            Some(StoredLinear::Ternary {
                matrix,
                bias,
                input_scale,
            }) => {
                let mut layer = TernaryLinear::<B>::new(matrix, device)?;
                if let Some(b) = bias {
                    layer = layer.with_bias(b)?;
                }
                if let Some(d) = input_scale {
                    layer = layer.with_input_scale(d)?;
                }
                *slot = Box::new(layer);
            }
            // The builder ignores `lm_head.weight` when the head is tied; a float head that
            // differs from the embedding was stored, so put it in.
            Some(StoredLinear::Float(t)) if name == LM_HEAD && tied => {
                let (rows, cols) = (t.shape[0], t.shape[1]);
                *slot = linear_impl.build::<B>("lm_head.weight", t.data, rows, cols, device)?;
            }
            Some(StoredLinear::Float(_)) | None => {}
        }
    }
    if let Some(name) = stored.keys().next() {
        return Err(ConvertError::Format(format!(
            "layer {name:?} is not a linear layer of the model"
        )));
    }
    Ok(LoadedModel { model, tokenizer })
}
