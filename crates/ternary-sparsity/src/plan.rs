//! The per-layer choice between dense ternary, a sparse ternary format, and float.
//!
//! A layer is measured ([`LayerProfile`]: density `d = nnz / (rows · cols)`, chunk occupancy
//! `o` = fraction of non-empty 32-chunks, optionally the ternarization error). A [`PlanRule`]
//! (one default, overridable per layer by name in the [`Planner`]) turns those into an
//! estimated cost relative to the dense ternary kernel, linear in the work each format does:
//!
//! - dense ternary: `1` (the plain `ternary_core::kernels`; no sparsity metadata is read);
//! - [`LayerFormat::ChunkSparse`] ([`PackedChunks`]): `o / chunk_occupancy`;
//! - [`LayerFormat::IndexSparse`] ([`IndexLists`]): `d / index_density`;
//!
//! so `chunk_occupancy` and `index_density` are the crossovers where a sparse format ties
//! with dense (defaults from the measurements in `docs/sparsity.md`). The cheapest wins (ties
//! go to dense). [`LayerFormat::Float`] is chosen when the rule forces it or when the measured
//! relative ternarization error `‖W − Ŵ‖_F / ‖W‖_F` exceeds `max_rel_error`: there ternary
//! does not pay at all.
//!
//! A [`Plan`] prints as a table ([`Display`](std::fmt::Display)) and round-trips through JSON
//! ([`Plan::to_json`], [`Plan::from_json`]); [`PlannedLayer::build`] turns a decision into
//! the layer that runs.

use std::collections::BTreeMap;
use std::fmt;

use rayon::prelude::*;
use serde_json::{Map, Value, json};
use ternary_core::quant::QuantStats;
use ternary_core::{QuantizedActivations, Result, TernaryError, TernaryMatrix};

use crate::chunks::PackedChunks;
use crate::footprint::Footprint;
use crate::kernels::{KernelConfig, TernaryGemm};
use crate::lists::IndexLists;
use ternary_core::ChunkBitmap;

/// Default [`PlanRule::index_density`]: index lists tie with dense ternary at this density.
///
/// Measured crossovers (`docs/sparsity.md`): ≈ 9% for `f32` GEMV, ≈ 5% for int8 GEMV,
/// ≈ 12% for int8 GEMM at 64 tokens and above 20% for `f32` GEMM; the default takes the
/// single-token `f32` value, a layer decoded token by token being the common case.
pub const DEFAULT_INDEX_DENSITY: f64 = 0.08;
/// Default [`PlanRule::chunk_occupancy`]: packed chunks tie with dense ternary at this
/// occupancy.
///
/// Measured crossovers: ≈ 30% (int8 GEMV) to ≈ 47% (`f32` GEMV), higher with many tokens;
/// the default sits between the GEMV values.
pub const DEFAULT_CHUNK_OCCUPANCY: f64 = 0.35;

/// How one layer's weights are stored and multiplied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LayerFormat {
    /// Bit-planes and the dense `ternary-core` kernels.
    DenseTernary,
    /// [`PackedChunks`]: only non-empty 32-chunks, skip kernels.
    ChunkSparse,
    /// [`IndexLists`]: gap-coded columns of the non-zeros, walk kernels.
    IndexSparse,
    /// Dense `f32` weights.
    Float,
}

impl LayerFormat {
    /// All formats.
    pub const ALL: [LayerFormat; 4] = [
        Self::DenseTernary,
        Self::ChunkSparse,
        Self::IndexSparse,
        Self::Float,
    ];

    /// The name used in tables and JSON.
    pub fn name(self) -> &'static str {
        match self {
            Self::DenseTernary => "dense-ternary",
            Self::ChunkSparse => "chunk-sparse",
            Self::IndexSparse => "index-sparse",
            Self::Float => "float",
        }
    }

    /// Parses [`name`](Self::name).
    pub fn from_name(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| TernaryError::Config(format!("unknown layer format `{s}`")))
    }
}

impl fmt::Display for LayerFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the planner knows about a layer.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerProfile {
    /// Layer name (the key of per-layer rule overrides).
    pub name: String,
    /// Output channels.
    pub rows: usize,
    /// Input channels.
    pub cols: usize,
    /// Non-zero weights.
    pub nnz: usize,
    /// `nnz / (rows · cols)`.
    pub density: f64,
    /// Fraction of the `rows · ⌈cols / 32⌉` chunks holding a non-zero.
    pub chunk_occupancy: f64,
    /// `‖W − Ŵ‖_F / ‖W‖_F` against the float weights, when they were given.
    pub rel_error: Option<f64>,
}

impl LayerProfile {
    /// Measures a ternary matrix (and its error against `float_weights`, `rows × cols`).
    pub fn measure(name: &str, m: &TernaryMatrix, float_weights: Option<&[f32]>) -> Result<Self> {
        let rel_error = match float_weights {
            Some(w) => Some(QuantStats::measure(w, m)?.rel_frobenius_error),
            None => None,
        };
        Ok(Self {
            name: name.to_owned(),
            rows: m.rows(),
            cols: m.cols(),
            nnz: m.nnz(),
            density: crate::matrix::density(m),
            chunk_occupancy: ChunkBitmap::from_matrix(m).occupancy(m.cols()),
            rel_error,
        })
    }
}

/// The thresholds of one layer's decision. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PlanRule {
    /// Density at which [`IndexLists`] tie with dense ternary (`> 0`).
    pub index_density: f64,
    /// Chunk occupancy at which [`PackedChunks`] tie with dense ternary (`> 0`).
    pub chunk_occupancy: f64,
    /// Float fallback above this relative ternarization error (needs a measured error).
    pub max_rel_error: Option<f64>,
    /// Use this format whatever the measurements say.
    pub force: Option<LayerFormat>,
}

impl Default for PlanRule {
    fn default() -> Self {
        Self {
            index_density: DEFAULT_INDEX_DENSITY,
            chunk_occupancy: DEFAULT_CHUNK_OCCUPANCY,
            max_rel_error: None,
            force: None,
        }
    }
}

impl PlanRule {
    /// Checks the thresholds.
    pub fn validate(&self) -> Result<()> {
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !positive(self.index_density) || !positive(self.chunk_occupancy) {
            return Err(TernaryError::Config(format!(
                "plan thresholds must be finite and > 0, got index_density {} and \
                 chunk_occupancy {}",
                self.index_density, self.chunk_occupancy
            )));
        }
        if let Some(e) = self.max_rel_error
            && !(e.is_finite() && e >= 0.0)
        {
            return Err(TernaryError::Config(format!(
                "max_rel_error must be finite and >= 0, got {e}"
            )));
        }
        Ok(())
    }

    /// The format for `p` and its estimated cost relative to dense ternary (`NaN` for float).
    pub fn decide(&self, p: &LayerProfile) -> (LayerFormat, f64) {
        let chunk = p.chunk_occupancy / self.chunk_occupancy;
        let index = p.density / self.index_density;
        let cost = |f: LayerFormat| match f {
            LayerFormat::DenseTernary => 1.0,
            LayerFormat::ChunkSparse => chunk,
            LayerFormat::IndexSparse => index,
            LayerFormat::Float => f64::NAN,
        };
        if let Some(f) = self.force {
            return (f, cost(f));
        }
        if let (Some(max), Some(e)) = (self.max_rel_error, p.rel_error)
            && e > max
        {
            return (LayerFormat::Float, f64::NAN);
        }
        let mut best = LayerFormat::DenseTernary;
        for f in [LayerFormat::ChunkSparse, LayerFormat::IndexSparse] {
            if cost(f) < cost(best) {
                best = f;
            }
        }
        (best, cost(best))
    }
}

/// One layer's decision.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerPlan {
    /// What was measured.
    pub profile: LayerProfile,
    /// The rule that applied.
    pub rule: PlanRule,
    /// The chosen format.
    pub format: LayerFormat,
    /// Estimated cost relative to dense ternary (`NaN` for float).
    pub est_cost: f64,
}

/// Chooses formats: a default rule and per-layer overrides.
#[derive(Debug, Clone, Default)]
pub struct Planner {
    /// The rule for layers without an override.
    pub default_rule: PlanRule,
    /// Rules by layer name.
    pub overrides: BTreeMap<String, PlanRule>,
}

impl Planner {
    /// A planner with one rule for every layer.
    pub fn new(default_rule: PlanRule) -> Self {
        Self {
            default_rule,
            overrides: BTreeMap::new(),
        }
    }

    /// Adds (or replaces) the rule of layer `name`.
    pub fn with_override(mut self, name: &str, rule: PlanRule) -> Self {
        self.overrides.insert(name.to_owned(), rule);
        self
    }

    /// The rule of layer `name`.
    pub fn rule_for(&self, name: &str) -> &PlanRule {
        self.overrides.get(name).unwrap_or(&self.default_rule)
    }

    /// Decides every layer.
    pub fn plan(&self, profiles: &[LayerProfile]) -> Result<Plan> {
        let layers = profiles
            .iter()
            .map(|p| {
                let rule = *self.rule_for(&p.name);
                rule.validate()?;
                let (format, est_cost) = rule.decide(p);
                Ok(LayerPlan {
                    profile: p.clone(),
                    rule,
                    format,
                    est_cost,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Plan { layers })
    }
}

/// The decisions for a model's layers.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Plan {
    /// One entry per layer, in the order given.
    pub layers: Vec<LayerPlan>,
}

impl Plan {
    /// The entry of layer `name`.
    pub fn get(&self, name: &str) -> Option<&LayerPlan> {
        self.layers.iter().find(|l| l.profile.name == name)
    }

    /// The plan as JSON (an object with a `layers` array).
    pub fn to_json(&self) -> String {
        let layers: Vec<Value> = self.layers.iter().map(layer_to_json).collect();
        // Serializing a `Value` cannot fail.
        serde_json::to_string_pretty(&json!({ "layers": layers })).unwrap_or_default()
    }

    /// Parses [`to_json`](Self::to_json) output; malformed input is [`TernaryError::Format`].
    pub fn from_json(s: &str) -> Result<Plan> {
        let v: Value = serde_json::from_str(s).map_err(|e| bad(format!("not JSON: {e}")))?;
        let layers = v
            .get("layers")
            .and_then(Value::as_array)
            .ok_or_else(|| bad("missing `layers` array"))?;
        let layers = layers
            .iter()
            .enumerate()
            .map(|(i, l)| layer_from_json(l).map_err(|e| bad(format!("layer {i}: {e}"))))
            .collect::<Result<Vec<_>>>()?;
        Ok(Plan { layers })
    }
}

fn bad(reason: impl Into<String>) -> TernaryError {
    TernaryError::Format {
        path: None,
        reason: format!("plan JSON: {}", reason.into()),
    }
}

fn opt_f64(v: Option<f64>) -> Value {
    v.map_or(Value::Null, |x| json!(x))
}

fn layer_to_json(l: &LayerPlan) -> Value {
    let p = &l.profile;
    json!({
        "name": p.name,
        "rows": p.rows,
        "cols": p.cols,
        "nnz": p.nnz,
        "density": p.density,
        "chunk_occupancy": p.chunk_occupancy,
        "rel_error": opt_f64(p.rel_error),
        "rule": {
            "index_density": l.rule.index_density,
            "chunk_occupancy": l.rule.chunk_occupancy,
            "max_rel_error": opt_f64(l.rule.max_rel_error),
            "force": l.rule.force.map_or(Value::Null, |f| json!(f.name())),
        },
        "format": l.format.name(),
        "est_cost": if l.est_cost.is_finite() { json!(l.est_cost) } else { Value::Null },
    })
}

fn field<'a>(o: &'a Map<String, Value>, k: &str) -> Result<&'a Value, String> {
    o.get(k).ok_or_else(|| format!("missing `{k}`"))
}

fn num(o: &Map<String, Value>, k: &str) -> Result<f64, String> {
    field(o, k)?
        .as_f64()
        .ok_or_else(|| format!("`{k}` must be a number"))
}

fn opt_num(o: &Map<String, Value>, k: &str) -> Result<Option<f64>, String> {
    match field(o, k)? {
        Value::Null => Ok(None),
        v => v
            .as_f64()
            .map(Some)
            .ok_or_else(|| format!("`{k}` must be a number or null")),
    }
}

fn count(o: &Map<String, Value>, k: &str) -> Result<usize, String> {
    field(o, k)?
        .as_u64()
        .and_then(|v| usize::try_from(v).ok())
        .ok_or_else(|| format!("`{k}` must be a non-negative integer"))
}

fn layer_from_json(v: &Value) -> Result<LayerPlan, String> {
    let o = v.as_object().ok_or("not an object")?;
    let name = field(o, "name")?
        .as_str()
        .ok_or("`name` must be a string")?
        .to_owned();
    let r = field(o, "rule")?
        .as_object()
        .ok_or("`rule` must be an object")?;
    let force = match field(r, "force")? {
        Value::Null => None,
        Value::String(s) => Some(LayerFormat::from_name(s).map_err(|e| e.to_string())?),
        _ => return Err("`force` must be a format name or null".into()),
    };
    let rule = PlanRule {
        index_density: num(r, "index_density")?,
        chunk_occupancy: num(r, "chunk_occupancy")?,
        max_rel_error: opt_num(r, "max_rel_error")?,
        force,
    };
    rule.validate().map_err(|e| e.to_string())?;
    let format = LayerFormat::from_name(
        field(o, "format")?
            .as_str()
            .ok_or("`format` must be a string")?,
    )
    .map_err(|e| e.to_string())?;
    Ok(LayerPlan {
        profile: LayerProfile {
            name,
            rows: count(o, "rows")?,
            cols: count(o, "cols")?,
            nnz: count(o, "nnz")?,
            density: num(o, "density")?,
            chunk_occupancy: num(o, "chunk_occupancy")?,
            rel_error: opt_num(o, "rel_error")?,
        },
        rule,
        format,
        est_cost: opt_num(o, "est_cost")?.unwrap_or(f64::NAN),
    })
}

impl fmt::Display for Plan {
    /// A markdown table: one row per layer.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "| layer | shape | density | chunk occupancy | rel. error | format | est. cost vs dense |"
        )?;
        writeln!(f, "|---|---|---:|---:|---:|---|---:|")?;
        for l in &self.layers {
            let p = &l.profile;
            let err = p
                .rel_error
                .map_or_else(|| "-".to_owned(), |e| format!("{e:.4}"));
            let cost = if l.est_cost.is_finite() {
                format!("{:.3}", l.est_cost)
            } else {
                "-".to_owned()
            };
            let forced = if l.rule.force.is_some() {
                " (forced)"
            } else {
                ""
            };
            writeln!(
                f,
                "| {} | {}x{} | {:.2}% | {:.2}% | {} | {}{} | {} |",
                p.name,
                p.rows,
                p.cols,
                100.0 * p.density,
                100.0 * p.chunk_occupancy,
                err,
                l.format,
                forced,
                cost
            )?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Planned layers
// ---------------------------------------------------------------------------------------------

/// A dense `f32` layer `rows × cols` (row-major), the float fallback.
#[derive(Debug, Clone, PartialEq)]
pub struct FloatLayer {
    rows: usize,
    cols: usize,
    weights: Vec<f32>,
}

impl FloatLayer {
    /// Wraps finite weights (`rows · cols` values).
    pub fn new(rows: usize, cols: usize, weights: Vec<f32>) -> Result<Self> {
        if rows.checked_mul(cols) != Some(weights.len()) {
            return Err(TernaryError::Shape(format!(
                "float layer {rows}x{cols} needs {} weights, got {}",
                rows.saturating_mul(cols),
                weights.len()
            )));
        }
        if let Some(i) = weights.iter().position(|v| !v.is_finite()) {
            return Err(TernaryError::NonFinite {
                what: "float weights",
                index: i,
                value: weights[i],
            });
        }
        Ok(Self {
            rows,
            cols,
            weights,
        })
    }

    /// The weights, row-major.
    pub fn weights(&self) -> &[f32] {
        &self.weights
    }

    /// `y[j, r] = Σ_c w[r, c] · x[j, c]` in `f32` (16 partial sums per dot product).
    pub fn gemm_f32(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        let (rows, cols) = (self.rows, self.cols);
        if n.checked_mul(cols) != Some(x.len()) || n.checked_mul(rows) != Some(y.len()) {
            return Err(TernaryError::Shape(format!(
                "float layer {rows}x{cols}, n = {n}: x has {} values, y {}",
                x.len(),
                y.len()
            )));
        }
        if rows == 0 {
            return Ok(());
        }
        y.par_chunks_mut(rows).enumerate().for_each(|(j, yj)| {
            let xj = &x[j * cols..(j + 1) * cols];
            for (r, o) in yj.iter_mut().enumerate() {
                *o = dot(&self.weights[r * cols..(r + 1) * cols], xj);
            }
        });
        Ok(())
    }
}

/// `Σ a_i b_i` with 16 independent partial sums (vectorizes without reassociation flags).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 16];
    let (ac, bc) = (a.chunks_exact(16), b.chunks_exact(16));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (x, y) in ac.zip(bc) {
        for i in 0..16 {
            acc[i] += x[i] * y[i];
        }
    }
    let tail: f32 = ar.iter().zip(br).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

impl Footprint for FloatLayer {
    fn weights(&self) -> usize {
        self.rows * self.cols
    }
    fn storage_bytes(&self) -> usize {
        self.weights.len() * 4
    }
}

/// A layer in the format its plan chose, ready to run.
#[derive(Debug, Clone, PartialEq)]
pub enum PlannedLayer {
    /// Plain bit-planes, run by `ternary_core::kernels` (no metadata).
    DenseTernary(TernaryMatrix),
    /// Non-empty chunks only.
    ChunkSparse(PackedChunks),
    /// Gap-coded index lists.
    IndexSparse(IndexLists),
    /// Float weights.
    Float(FloatLayer),
}

impl PlannedLayer {
    /// Converts `m` to `format`. The float format uses `float_weights` (`rows × cols`) when
    /// given, else `m` dequantized.
    pub fn build(
        format: LayerFormat,
        m: TernaryMatrix,
        float_weights: Option<Vec<f32>>,
    ) -> Result<Self> {
        Ok(match format {
            LayerFormat::DenseTernary => Self::DenseTernary(m),
            LayerFormat::ChunkSparse => Self::ChunkSparse(PackedChunks::from_matrix(&m)?),
            LayerFormat::IndexSparse => Self::IndexSparse(IndexLists::from_matrix(&m)?),
            LayerFormat::Float => {
                let w = match float_weights {
                    Some(w) => w,
                    None => m.dequantize(),
                };
                Self::Float(FloatLayer::new(m.rows(), m.cols(), w)?)
            }
        })
    }

    /// The format.
    pub fn format(&self) -> LayerFormat {
        match self {
            Self::DenseTernary(_) => LayerFormat::DenseTernary,
            Self::ChunkSparse(_) => LayerFormat::ChunkSparse,
            Self::IndexSparse(_) => LayerFormat::IndexSparse,
            Self::Float(_) => LayerFormat::Float,
        }
    }

    /// `y = x · Wᵀ` with `f32` activations (`x`: `n × cols`, `y`: `n × rows`).
    pub fn forward_f32(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        let cfg = KernelConfig::auto();
        match self {
            Self::DenseTernary(m) => m.gemm_f32_with(cfg, x, n, y),
            Self::ChunkSparse(m) => m.gemm_f32_with(cfg, x, n, y),
            Self::IndexSparse(m) => m.gemm_f32_with(cfg, x, n, y),
            Self::Float(m) => m.gemm_f32(x, n, y),
        }
    }

    /// `y = x · Wᵀ` with int8 activations. Ternary formats equal `reference::gemm_i8` bit for
    /// bit; the float format multiplies the dequantized activations `q · s_j` in `f32`.
    pub fn forward_i8(&self, a: &QuantizedActivations, y: &mut [f32]) -> Result<()> {
        let cfg = KernelConfig::auto();
        match self {
            Self::DenseTernary(m) => m.gemm_i8_with(cfg, a, y),
            Self::ChunkSparse(m) => m.gemm_i8_with(cfg, a, y),
            Self::IndexSparse(m) => m.gemm_i8_with(cfg, a, y),
            Self::Float(m) => {
                let (n, cols) = (a.n(), a.cols());
                let mut x = Vec::with_capacity(n * cols);
                for j in 0..n {
                    let s = a.scales()[j];
                    x.extend(a.row(j)[..cols].iter().map(|&q| f32::from(q) * s));
                }
                m.gemm_f32(&x, n, y)
            }
        }
    }
}

impl Footprint for PlannedLayer {
    fn weights(&self) -> usize {
        match self {
            Self::DenseTernary(m) => m.weights(),
            Self::ChunkSparse(m) => m.weights(),
            Self::IndexSparse(m) => m.weights(),
            Self::Float(m) => Footprint::weights(m),
        }
    }
    fn storage_bytes(&self) -> usize {
        match self {
            Self::DenseTernary(m) => Footprint::storage_bytes(m),
            Self::ChunkSparse(m) => Footprint::storage_bytes(m),
            Self::IndexSparse(m) => Footprint::storage_bytes(m),
            Self::Float(m) => m.storage_bytes(),
        }
    }
}
