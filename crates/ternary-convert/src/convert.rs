//! Post-training conversion of a float Llama to ternary, with automatic mixed precision.
//!
//! [`convert`] runs, with a [`Progress`] callback per stage:
//!
//! 1. **Calibrate** ([`calib`](crate::calib)): run the float model on the calibration text and
//!    collect each layer input's `E[x²]`, `E[|x|]` and Hessian `H = Σ xxᵀ`.
//! 2. **Quantize** every layer not matched by [`ConvertConfig::keep_float`]
//!    ([`quantize_layer`]): optional activation-aware input scaling `W' = W·diag(c)`,
//!    `c_j = E[|x_j|]^α` (the layer then computes `Q'·(x ⊙ 1/c)`; `α` chosen per layer from
//!    [`ConvertConfig::input_scale_alphas`] by the smallest output error), then GPTQ
//!    ([`gptq`](crate::gptq)) or plain rounding with the configured [`Method`] and scale layout.
//!    Each layer's error is the relative output error on the calibration inputs,
//!    `sqrt(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ))`. With [`ConvertConfig::sequential`], steps 1–2 run
//!    block by block instead ([`quantize_model_sequential`]): each block is calibrated on the
//!    model whose earlier blocks already hold their quantized weights.
//! 3. **Mixed precision** (when [`ConvertConfig::budget`] is set): each candidate's
//!    sensitivity is the mean KL divergence `KL(p_float ‖ p)` of the next-token distribution on a
//!    short held-out calibration chunk with only that layer ternary ([`sensitivities`]). Layers
//!    are ordered by sensitivity per weight; the largest prefix whose perplexity on held-out
//!    calibration text stays within `budget × float` is found by bisection (every prefix
//!    tried is measured, and the chosen one satisfied the budget when measured).
//!    The search runs float stand-ins holding the exact effective weights (fast GEMM).
//! 4. **Install**: the chosen layers are swapped into the model in place as
//!    [`TernaryLinear`]s; the rest keep their float layers. The converted model's perplexity is
//!    measured again with the installed layers; should kernel rounding push it over the
//!    budget, the most sensitive chosen layers go back to float until it holds. The report
//!    holds the per-layer plan, both perplexities and each stage's time.
//!
//! Only the inputs of layers to be converted are recorded during calibration. Measured
//! quality on SmolLM2-135M, lever by lever: `docs/accuracy.md`.
//!
//! Calibration text is split: the first [`ConvertConfig::calib_tokens`] tokens give the
//! statistics; the next [`ConvertConfig::eval_chunks`]` × ctx` tokens (held out) give the
//! perplexities and sensitivities. A text too short for both reuses the statistics tokens
//! ([`ConversionReport::held_out`] is then `false`).

use crate::calib::{Calibration, InputStats, calibrate_layers, input_key};
use crate::error::{ConvertError, Result};
use crate::gptq::{GptqConfig, HessianFactor, gptq_ternary_factored};
use burn::tensor::{Tensor, TensorData};
use std::fmt;
use ternary_core::quant::{Method, QuantConfig, quantize, quantize_activation_aware};
use ternary_core::{ScaleLayout, TernaryMatrix};
use ternary_layers::TernaryBackend;
use ternary_layers::TernaryLinear;
use ternary_layers::{Linear, to_rows};
use ternary_models::{LinearImpl, Llama, Logits, Tokenizer, perplexity};

/// Everything [`convert`] can be told. See the [module docs](self) for the pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertConfig {
    /// Scale rule per group (with GPTQ: how each group's scale is picked before rounding).
    pub method: Method,
    /// Scales per row or per group of columns.
    pub layout: ScaleLayout,
    /// Error-compensating rounding; `None` rounds each weight independently with `method`.
    pub gptq: Option<GptqConfig>,
    /// Candidate exponents `α` of activation-aware input scaling `c_j = E[|x_j|]^α`; the one
    /// with the smallest output error is kept per layer (`0` = no scaling). Empty: off.
    pub input_scale_alphas: Vec<f32>,
    /// Perplexity budget as a ratio to the float model (e.g. `1.05`); `None`: every layer
    /// not kept float becomes ternary.
    pub budget: Option<f64>,
    /// Layers that stay float: a pattern with `*` must match the whole name (glob), one
    /// without `*` matches names containing it (e.g. `lm_head`, `layers.0.`, `down_proj`).
    pub keep_float: Vec<String>,
    /// Calibration tokens for the statistics.
    pub calib_tokens: usize,
    /// Tokens per forward pass (chunk length) for calibration and perplexity.
    pub ctx: usize,
    /// Held-out chunks of `ctx` tokens for perplexity (budget search and report); at least 2.
    pub eval_chunks: usize,
    /// Tokens of the held-out chunk used for each layer's sensitivity.
    pub sensitivity_tokens: usize,
    /// Measure the calibration perplexity of the float and the converted model for the
    /// report even without a budget.
    pub measure: bool,
    /// Sequential quantization ([`quantize_model_sequential`]): each block is calibrated on the
    /// model whose earlier blocks are already quantized, so its rounding also compensates the
    /// error of its inputs. One calibration pass per block (30 for SmolLM2); pays off when most layers end up ternary (e.g. without a budget).
    pub sequential: bool,
}

/// The best setting measured on SmolLM2-135M (`docs/accuracy.md`): GPTQ with activation-aware
/// group scales (groups of 64, λ = 0.01, scale refit), no input scaling, a 1.05× perplexity
/// budget, 4096 statistics tokens at most, ctx 512, 2 held-out chunks, 64 sensitivity tokens.
impl Default for ConvertConfig {
    fn default() -> Self {
        Self {
            method: Method::ActivationAware,
            layout: ScaleLayout::PerGroup { group_size: 64 },
            gptq: Some(GptqConfig::default()),
            input_scale_alphas: vec![],
            budget: Some(1.05),
            keep_float: vec![],
            calib_tokens: 4096,
            ctx: 512,
            eval_chunks: 2,
            sensitivity_tokens: 64,
            measure: true,
            sequential: false,
        }
    }
}

/// The stages of [`convert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Running the float model on calibration chunks.
    Calibrate,
    /// Ternarizing layers.
    Quantize,
    /// Measuring each layer's sensitivity.
    Sensitivity,
    /// Bisecting the number of ternary layers against the budget.
    Search,
    /// Measuring perplexities for the report.
    Measure,
}

impl Stage {
    /// A short lowercase name (`"calibrate"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Calibrate => "calibrate",
            Self::Quantize => "quantize",
            Self::Sensitivity => "sensitivity",
            Self::Search => "search",
            Self::Measure => "measure",
        }
    }
}

/// Progress of [`convert`], for progress bars: each stage sends `Start`, then `Step`s with
/// `done` counting up to `total`, then `Finish`.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A stage begins with `total` steps.
    Start {
        /// The stage.
        stage: Stage,
        /// Steps it will take (the search's count is an upper bound).
        total: usize,
    },
    /// One more step is done.
    Step {
        /// The stage.
        stage: Stage,
        /// Steps done so far.
        done: usize,
        /// Steps in the stage.
        total: usize,
        /// What the step was (a layer name, a perplexity, …).
        detail: String,
    },
    /// The stage ended.
    Finish {
        /// The stage.
        stage: Stage,
        /// A one-line summary.
        message: String,
    },
}

/// One layer of the conversion plan.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerPlan {
    /// Hugging Face name (`model.layers.3.mlp.down_proj`, `lm_head`).
    pub name: String,
    /// Output channels.
    pub rows: usize,
    /// Input channels.
    pub cols: usize,
    /// Whether the layer is ternary in the converted model.
    pub ternary: bool,
    /// How it was (or would have been) quantized; `"float (kept)"` when never quantized.
    pub method: String,
    /// Fraction of zero trits (0 for layers never quantized).
    pub zero_fraction: f64,
    /// Bits per weight as stored in memory: planes + `f32` scales for ternary layers, 32 for
    /// float layers.
    pub bits_per_weight: f64,
    /// Relative output error of the ternary candidate on the calibration inputs,
    /// `sqrt(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ))` (0 for layers never quantized).
    pub rel_error: f64,
    /// Mean KL divergence (nats/token) with only this layer ternary, when measured.
    pub sensitivity: Option<f64>,
}

/// What [`convert`] did.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversionReport {
    /// Every linear layer of the model, in model order.
    pub layers: Vec<LayerPlan>,
    /// Perplexity of the float model on the held-out calibration chunks.
    pub calib_ppl_float: Option<f64>,
    /// Perplexity of the converted model on the same chunks.
    pub calib_ppl_converted: Option<f64>,
    /// The budget that was applied.
    pub budget: Option<f64>,
    /// Calibration tokens used for statistics.
    pub calib_tokens: usize,
    /// Whether the perplexity chunks were disjoint from the statistics tokens.
    pub held_out: bool,
    /// Wall-clock seconds of each stage that ran, in order.
    pub stage_seconds: Vec<(Stage, f64)>,
}

impl ConversionReport {
    /// Fraction of linear weights (all layers, `lm_head` included) that are ternary.
    pub fn ternary_fraction(&self) -> f64 {
        let (t, all) = self.layers.iter().fold((0usize, 0usize), |(t, a), l| {
            let n = l.rows * l.cols;
            (t + if l.ternary { n } else { 0 }, a + n)
        });
        if all == 0 { 0.0 } else { t as f64 / all as f64 }
    }

    /// Mean bits per linear weight with float layers counted at `float_bits` (e.g. 16 for a
    /// bf16 checkpoint, 32 as held in memory) and ternary layers at their stored bits.
    pub fn bits_per_weight(&self, float_bits: f64) -> f64 {
        let (bits, all) = self.layers.iter().fold((0f64, 0usize), |(b, a), l| {
            let n = l.rows * l.cols;
            let per = if l.ternary {
                l.bits_per_weight
            } else {
                float_bits
            };
            (b + per * n as f64, a + n)
        });
        if all == 0 { 0.0 } else { bits / all as f64 }
    }

    /// `calib_ppl_converted / calib_ppl_float`, when both were measured.
    pub fn ppl_ratio(&self) -> Option<f64> {
        Some(self.calib_ppl_converted? / self.calib_ppl_float?)
    }
}

impl fmt::Display for ConversionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<34} {:>11} {:>8} {:<22} {:>6} {:>6} {:>8} {:>10}",
            "layer", "shape", "format", "method", "zeros", "bits", "rel.err", "KL"
        )?;
        for l in &self.layers {
            let sens = l
                .sensitivity
                .map_or_else(|| "-".to_string(), |s| format!("{s:.2e}"));
            writeln!(
                f,
                "{:<34} {:>11} {:>8} {:<22} {:>5.1}% {:>6.2} {:>8.4} {:>10}",
                l.name,
                format!("{}x{}", l.rows, l.cols),
                if l.ternary { "ternary" } else { "float" },
                l.method,
                100.0 * l.zero_fraction,
                l.bits_per_weight,
                l.rel_error,
                sens
            )?;
        }
        let n_t = self.layers.iter().filter(|l| l.ternary).count();
        write!(
            f,
            "{n_t}/{} layers ternary, {:.1}% of linear weights; {:.2} bits/weight (float at 16), \
             {:.2} (float at 32)",
            self.layers.len(),
            100.0 * self.ternary_fraction(),
            self.bits_per_weight(16.0),
            self.bits_per_weight(32.0)
        )?;
        if let (Some(a), Some(b)) = (self.calib_ppl_float, self.calib_ppl_converted) {
            write!(
                f,
                "\ncalibration perplexity: float {a:.3}, converted {b:.3} ({:.3}x{}){}",
                b / a,
                self.budget
                    .map_or_else(String::new, |x| format!(", budget {x}x")),
                if self.held_out { "" } else { " (not held out)" }
            )?;
        }
        if !self.stage_seconds.is_empty() {
            let parts: Vec<String> = self
                .stage_seconds
                .iter()
                .map(|(s, t)| format!("{} {t:.1} s", s.name()))
                .collect();
            write!(f, "\nstages: {}", parts.join(", "))?;
        }
        Ok(())
    }
}

/// A ternary candidate for one layer: `y = Q·(x ⊙ d)`, `d` the optional input scale.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedLayer {
    /// The ternary matrix `Q` (of `W·diag(1/d)`).
    pub matrix: TernaryMatrix,
    /// Per-input-channel factors `d = 1/c` applied to `x` before `Q`, if any.
    pub input_scale: Option<Vec<f32>>,
    /// Relative output error `sqrt(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ))` of the effective weight.
    pub rel_error: f64,
    /// Description of how it was made.
    pub method: String,
}

impl QuantizedLayer {
    /// The effective float weight `W_eff[r, c] = Q[r, c] · d[c]`, row-major.
    pub fn effective_weight(&self) -> Vec<f32> {
        let mut w = self.matrix.dequantize();
        if let Some(d) = &self.input_scale {
            for row in w.chunks_exact_mut(self.matrix.cols().max(1)) {
                for (x, &s) in row.iter_mut().zip(d) {
                    *x *= s;
                }
            }
        }
        w
    }

    /// Weights in the layer.
    pub fn weights(&self) -> usize {
        self.matrix.rows() * self.matrix.cols()
    }
}

/// Whether `name` matches `pattern` (see [`ConvertConfig::keep_float`]).
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    if !pattern.contains('*') {
        return name.contains(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

fn describe(cfg: &ConvertConfig, alpha: f32) -> String {
    let layout = match cfg.layout {
        ScaleLayout::PerRow => "row".to_string(),
        ScaleLayout::PerGroup { group_size } => format!("g{group_size}"),
    };
    let mut s = format!(
        "{}{} {layout}",
        if cfg.gptq.is_some() { "gptq+" } else { "" },
        cfg.method
    );
    if alpha != 0.0 {
        s.push_str(&format!(" α={alpha}"));
    }
    s
}

/// `tr(ΔW H ΔWᵀ)` and `tr(W H Wᵀ)` with one `f32` matmul each on the backend.
fn output_errors<B: TernaryBackend>(
    w: &[f32],
    w_hat: &[f32],
    rows: usize,
    cols: usize,
    h: &Tensor<B, 2>,
) -> Result<(f64, f64)> {
    let device = h.device();
    let tw = Tensor::<B, 2>::from_data(TensorData::new(w.to_vec(), [rows, cols]), &device);
    let dw: Vec<f32> = w.iter().zip(w_hat).map(|(a, b)| a - b).collect();
    let td = Tensor::<B, 2>::from_data(TensorData::new(dw, [rows, cols]), &device);
    let quad = |t: Tensor<B, 2>| -> Result<f64> {
        let v = to_rows(t.clone().matmul(h.clone()).mul(t).sum().reshape([1, 1]))?;
        Ok(v.first().map_or(0.0, |&x| f64::from(x)))
    };
    Ok((quad(td)?, quad(tw)?))
}

/// Per-input factors `c_j = E[|x_j|]^α`, normalized to geometric mean 1 over live channels;
/// dead channels (`E|x_j| = 0`) get 1.
pub fn input_scale_factors(mean_abs: &[f32], alpha: f32) -> Vec<f32> {
    let live: Vec<f64> = mean_abs
        .iter()
        .filter(|&&a| a > 0.0)
        .map(|&a| f64::from(a).ln())
        .collect();
    let mean_log = if live.is_empty() {
        0.0
    } else {
        live.iter().sum::<f64>() / live.len() as f64
    };
    mean_abs
        .iter()
        .map(|&a| {
            if a > 0.0 {
                ((f64::from(a).ln() - mean_log) * f64::from(alpha)).exp() as f32
            } else {
                1.0
            }
        })
        .collect()
}

/// Cache of prepared Hessians for consecutive layers sharing an input and `α`.
#[derive(Default)]
pub struct FactorCache {
    key: Option<(String, u32)>,
    factor: Option<HessianFactor>,
}

impl fmt::Debug for FactorCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FactorCache")
            .field("key", &self.key)
            .finish()
    }
}

/// Quantizes one layer `w` (`rows × cols`) named `name` with its input statistics, trying
/// each input-scaling `α` of `cfg` (or none) and keeping the lowest output error. `cache`
/// keeps the last prepared Hessian for the next layer reading the same input.
#[allow(clippy::too_many_arguments)]
pub fn quantize_layer<B: TernaryBackend>(
    name: &str,
    w: &[f32],
    rows: usize,
    cols: usize,
    stats: &InputStats,
    cfg: &ConvertConfig,
    cache: &mut FactorCache,
    device: &B::Device,
) -> Result<QuantizedLayer> {
    if stats.cols != cols || w.len() != rows * cols {
        return Err(ConvertError::Shape(format!(
            "{name}: {rows}x{cols} weights ({} values) with statistics of width {}",
            w.len(),
            stats.cols
        )));
    }
    let h = stats.hessian_mean();
    let h_t = Tensor::<B, 2>::from_data(
        TensorData::new(
            h.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            [cols, cols],
        ),
        device,
    );
    let alphas: Vec<f32> = if cfg.input_scale_alphas.is_empty() {
        vec![0.0]
    } else {
        cfg.input_scale_alphas.clone()
    };
    let mean_abs = stats.mean_abs();
    let mut best: Option<(f64, QuantizedLayer)> = None;
    for &alpha in &alphas {
        if !(alpha.is_finite()) {
            return Err(ConvertError::Invalid(format!(
                "input-scale exponent {alpha}"
            )));
        }
        let c = if alpha == 0.0 {
            None
        } else {
            Some(input_scale_factors(&mean_abs, alpha))
        };
        // W' = W·diag(c), H' = diag(1/c)·H·diag(1/c).
        let (ws, hs): (Vec<f32>, Vec<f64>) = match &c {
            None => (w.to_vec(), h.clone()),
            Some(c) => (
                w.iter()
                    .enumerate()
                    .map(|(k, &v)| v * c[k % cols])
                    .collect(),
                h.iter()
                    .enumerate()
                    .map(|(k, &v)| v / (f64::from(c[k / cols]) * f64::from(c[k % cols])))
                    .collect(),
            ),
        };
        let matrix = match cfg.gptq {
            Some(g) => {
                let key = (input_key(name), alpha.to_bits());
                if cache.key.as_ref() != Some(&key) {
                    cache.factor = Some(HessianFactor::new(hs.clone(), cols, g.damp)?);
                    cache.key = Some(key);
                }
                let factor = cache
                    .factor
                    .as_ref()
                    .ok_or_else(|| ConvertError::Invalid("Hessian cache is empty".into()))?;
                gptq_ternary_factored(&ws, rows, cols, factor, cfg.layout, cfg.method, g.refit)?
            }
            None => {
                let diag: Vec<f32> = (0..cols).map(|j| hs[j * cols + j] as f32).collect();
                match cfg.method {
                    Method::ActivationAware => {
                        quantize_activation_aware(&ws, rows, cols, cfg.layout, &diag)?.0
                    }
                    m => quantize(&ws, rows, cols, &QuantConfig::new(m, cfg.layout))?.0,
                }
            }
        };
        let q = QuantizedLayer {
            matrix,
            input_scale: c.map(|c| c.iter().map(|&v| 1.0 / v).collect()),
            rel_error: 0.0,
            method: describe(cfg, alpha),
        };
        let (err, norm) = output_errors(w, &q.effective_weight(), rows, cols, &h_t)?;
        let rel = if norm > 0.0 { (err / norm).sqrt() } else { 0.0 };
        if best.as_ref().is_none_or(|(e, _)| rel < *e) {
            best = Some((
                rel,
                QuantizedLayer {
                    rel_error: rel,
                    ..q
                },
            ));
        }
    }
    best.map(|(_, q)| q)
        .ok_or_else(|| ConvertError::Invalid(format!("{name}: no candidate")))
}

/// The layers of `model` not matched by `cfg.keep_float`, in model order.
fn candidates<B: TernaryBackend>(model: &Llama<B>, cfg: &ConvertConfig) -> Vec<String> {
    model
        .linears()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !cfg.keep_float.iter().any(|p| matches_pattern(p, n)))
        .collect()
}

/// Quantizes layer `name` of `model` with its statistics in `calib`.
fn quantize_named<B: TernaryBackend>(
    model: &Llama<B>,
    name: &str,
    calib: &Calibration,
    cfg: &ConvertConfig,
    cache: &mut FactorCache,
    device: &B::Device,
) -> Result<QuantizedLayer> {
    let layer = model
        .linears()
        .into_iter()
        .find(|(n, _)| n == name)
        .map(|(_, l)| l)
        .ok_or_else(|| ConvertError::Invalid(format!("layer {name} vanished")))?;
    let (rows, cols) = (layer.out_features(), layer.in_features());
    let w = to_rows(layer.weight())?;
    let stats = calib
        .get(name)
        .ok_or_else(|| ConvertError::Invalid(format!("no calibration statistics for {name}")))?;
    quantize_layer::<B>(name, &w, rows, cols, stats, cfg, cache, device)
}

/// Quantizes every layer of `model` not matched by `cfg.keep_float`, in model order.
pub fn quantize_model<B: TernaryBackend>(
    model: &Llama<B>,
    calib: &Calibration,
    cfg: &ConvertConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<(String, QuantizedLayer)>> {
    let names = candidates(model, cfg);
    let total = names.len();
    progress(Progress::Start {
        stage: Stage::Quantize,
        total,
    });
    let mut cache = FactorCache::default();
    let mut out = Vec::with_capacity(total);
    let device = model.device().clone();
    for (i, name) in names.into_iter().enumerate() {
        let q = quantize_named(model, &name, calib, cfg, &mut cache, &device)?;
        progress(Progress::Step {
            stage: Stage::Quantize,
            done: i + 1,
            total,
            detail: format!("{name}: rel. error {:.4}", q.rel_error),
        });
        out.push((name, q));
    }
    progress(Progress::Finish {
        stage: Stage::Quantize,
        message: format!("{total} layers quantized"),
    });
    Ok(out)
}

/// The block a layer belongs to for [`quantize_model_sequential`]: `model.layers.<i>.` for block
/// layers, the name itself otherwise (e.g. `lm_head`).
fn block_of(name: &str) -> String {
    if let Some(rest) = name.strip_prefix("model.layers.")
        && let Some((i, _)) = rest.split_once('.')
    {
        return format!("model.layers.{i}.");
    }
    name.to_string()
}

/// [`quantize_model`] block by block, each block calibrated on the model whose earlier blocks
/// are already quantized ("sequential" GPTQ): the statistics of block `b` (`E|x|`, `E[x²]`, the
/// Hessian `H = Σ x xᵀ`) are collected with blocks `< b` replaced by float stand-ins holding
/// their quantized weights, so each block's rounding also compensates the error its inputs
/// carry from the blocks before it. One calibration pass over `tokens` per block (the whole
/// model runs each time). The model is restored before returning.
pub fn quantize_model_sequential<B: TernaryBackend>(
    model: &mut Llama<B>,
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    cfg: &ConvertConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<(String, QuantizedLayer)>> {
    let names = candidates(model, cfg);
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    for n in names {
        let b = block_of(&n);
        match blocks.last_mut() {
            Some((key, members)) if *key == b => members.push(n),
            _ => blocks.push((b, vec![n])),
        }
    }
    let total = blocks.iter().map(|(_, m)| m.len()).sum();
    progress(Progress::Start {
        stage: Stage::Quantize,
        total,
    });
    let device = model.device().clone();
    let mut cache = FactorCache::default();
    let mut out: Vec<(String, QuantizedLayer)> = Vec::with_capacity(total);
    let mut saved: Vec<(String, Linear<B>)> = Vec::new();
    let result = (|| -> Result<()> {
        for (_, members) in &blocks {
            let calib = calibrate_layers(
                model,
                tokens,
                ctx,
                bos,
                None,
                &|n: &str| members.iter().any(|m| m == n),
                &mut |_, _| {},
            )?;
            let start = out.len();
            for name in members {
                let q = quantize_named(model, name, &calib, cfg, &mut cache, &device)?;
                progress(Progress::Step {
                    stage: Stage::Quantize,
                    done: out.len() + 1,
                    total,
                    detail: format!("{name}: rel. error {:.4} (sequential)", q.rel_error),
                });
                out.push((name.clone(), q));
            }
            // The next blocks see this one quantized.
            for (name, q) in &out[start..] {
                let l = float_standin::<B>(name, q, &device)?;
                saved.push((name.clone(), swap_layer(model, name, l)?));
            }
        }
        Ok(())
    })();
    restore_layers(model, saved)?;
    result?;
    progress(Progress::Finish {
        stage: Stage::Quantize,
        message: format!("{total} layers quantized sequentially"),
    });
    Ok(out)
}

/// The layer that computes `q` inside a model: a [`TernaryLinear`] (path
/// [`LinearPath::Auto`](crate::layer::LinearPath::Auto)) with `q`'s input scale.
pub fn ternary_layer<B: TernaryBackend>(
    q: &QuantizedLayer,
    device: &B::Device,
) -> Result<Linear<B>> {
    let mut layer = TernaryLinear::<B>::new(q.matrix.clone(), device)?;
    if let Some(d) = &q.input_scale {
        layer = layer.with_input_scale(d.clone())?;
    }
    Ok(Box::new(layer))
}

/// A float layer with `q`'s effective weight (the fast stand-in used while searching).
pub fn float_standin<B: TernaryBackend>(
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
pub fn swap_layer<B: TernaryBackend>(
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

/// Puts back layers returned by [`apply_standins`] / [`swap_layer`].
pub fn restore_layers<B: TernaryBackend>(
    model: &mut Llama<B>,
    saved: Vec<(String, Linear<B>)>,
) -> Result<()> {
    for (name, l) in saved.into_iter().rev() {
        swap_layer(model, &name, l)?;
    }
    Ok(())
}

/// `log softmax` of each row of `logits` (`rows × vocab`), max-shifted, sums in `f64`.
fn log_softmax_rows(logits: &[f32], vocab: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(logits.len());
    for row in logits.chunks_exact(vocab.max(1)) {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let lse = f64::from(max)
            + row
                .iter()
                .map(|&l| f64::from(l - max).exp())
                .sum::<f64>()
                .ln();
        out.extend(row.iter().map(|&l| (f64::from(l) - lse) as f32));
    }
    out
}

/// Mean over positions of `KL(p ‖ q) = Σ_v p_v (log p_v − log q_v)` for log-probabilities
/// `lp`, `lq` (`positions × vocab`), in `f64`.
pub fn mean_kl(lp: &[f32], lq: &[f32], vocab: usize) -> f64 {
    let rows = lp.len() / vocab.max(1);
    if rows == 0 {
        return 0.0;
    }
    let total: f64 = lp
        .chunks_exact(vocab)
        .zip(lq.chunks_exact(vocab))
        .map(|(a, b)| {
            a.iter()
                .zip(b)
                .map(|(&x, &y)| f64::from(x).exp() * (f64::from(x) - f64::from(y)))
                .sum::<f64>()
        })
        .sum();
    total / rows as f64
}

/// Log-probabilities of the model on `tokens` (one chunk from an empty cache).
pub fn log_probs<B: TernaryBackend>(model: &Llama<B>, tokens: &[u32]) -> Result<Vec<f32>> {
    let mut cache = model.new_cache();
    let logits = to_rows(model.forward(tokens, &mut cache, Logits::All)?)?;
    Ok(log_softmax_rows(&logits, model.config().vocab_size))
}

/// Each layer's sensitivity: the mean KL divergence from the current model's next-token
/// distribution on `tokens` (one chunk) when only that layer is replaced by its stand-in.
pub fn sensitivities<B: TernaryBackend>(
    model: &mut Llama<B>,
    layers: &[(String, QuantizedLayer)],
    tokens: &[u32],
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<f64>> {
    let vocab = model.config().vocab_size;
    let reference = log_probs(model, tokens)?;
    let total = layers.len();
    progress(Progress::Start {
        stage: Stage::Sensitivity,
        total,
    });
    let mut out = Vec::with_capacity(total);
    for (i, pair) in layers.iter().enumerate() {
        let saved = apply_standins(model, &[pair])?;
        let lq = log_probs(model, tokens);
        restore_layers(model, saved)?;
        let kl = mean_kl(&reference, &lq?, vocab);
        progress(Progress::Step {
            stage: Stage::Sensitivity,
            done: i + 1,
            total,
            detail: format!("{}: KL {kl:.3e}", pair.0),
        });
        out.push(kl);
    }
    progress(Progress::Finish {
        stage: Stage::Sensitivity,
        message: format!("{total} layers measured"),
    });
    Ok(out)
}

/// Perplexity (llama.cpp's algorithm) of the model on `tokens` in chunks of `ctx`.
pub fn eval_ppl<B: TernaryBackend>(
    model: &Llama<B>,
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
) -> Result<f64> {
    Ok(perplexity(model, tokens, ctx, bos, None, |_, _| {})?.ppl)
}

/// Order of `layers` for mixed precision: ascending sensitivity per weight.
pub fn sensitivity_order(layers: &[(String, QuantizedLayer)], sens: &[f64]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..layers.len()).collect();
    order.sort_by(|&a, &b| {
        let ka = sens[a] / layers[a].1.weights().max(1) as f64;
        let kb = sens[b] / layers[b].1.weights().max(1) as f64;
        ka.total_cmp(&kb)
    });
    order
}

/// The tokenizer's BOS when the model adds one (what perplexity puts first in each chunk).
pub fn bos_of(tokenizer: &Tokenizer) -> Option<u32> {
    if tokenizer.add_bos {
        tokenizer.bos_id
    } else {
        None
    }
}

/// Converts `model` in place. See the [module docs](self).
pub fn convert<B: TernaryBackend>(
    model: &mut Llama<B>,
    tokenizer: &Tokenizer,
    calib_text: &str,
    cfg: &ConvertConfig,
    outer: &mut dyn FnMut(Progress),
) -> Result<ConversionReport> {
    validate(cfg)?;
    let mut stage_seconds: Vec<(Stage, f64)> = Vec::new();
    let mut started: Option<(Stage, std::time::Instant)> = None;
    let mut timed = |p: Progress| {
        match &p {
            Progress::Start { stage, .. } => started = Some((*stage, std::time::Instant::now())),
            Progress::Finish { stage, .. } => {
                if let Some((s, t)) = started.take()
                    && s == *stage
                {
                    stage_seconds.push((s, t.elapsed().as_secs_f64()));
                }
            }
            Progress::Step { .. } => {}
        }
        outer(p);
    };
    let progress: &mut dyn FnMut(Progress) = &mut timed;
    let tokens = tokenizer.encode(calib_text, true)?;
    let bos = bos_of(tokenizer);
    let ctx = cfg.ctx;
    let wants_ppl = cfg.budget.is_some() || cfg.measure;
    let held = cfg.eval_chunks * ctx;
    // Split: statistics first, held-out perplexity chunks after.
    let (stats_tokens, eval_tokens, held_out): (&[u32], Option<&[u32]>, bool) = if !wants_ppl {
        (&tokens[..tokens.len().min(cfg.calib_tokens)], None, false)
    } else if tokens.len() >= held + ctx.min(cfg.calib_tokens) {
        let n = cfg.calib_tokens.min(tokens.len() - held);
        (&tokens[..n], Some(&tokens[n..n + held]), true)
    } else if tokens.len() >= 2 * ctx {
        let e = tokens.len().min(held);
        (
            &tokens[..tokens.len().min(cfg.calib_tokens)],
            Some(&tokens[..e]),
            false,
        )
    } else {
        return Err(ConvertError::Invalid(format!(
            "the calibration text has {} tokens; measuring perplexity with a context of {ctx} \
             needs at least {}",
            tokens.len(),
            2 * ctx
        )));
    };
    if stats_tokens.len() < 2 {
        return Err(ConvertError::Invalid(format!(
            "the calibration text has {} tokens; at least 2 are needed",
            tokens.len()
        )));
    }
    let quantized = if cfg.sequential {
        quantize_model_sequential(model, stats_tokens, ctx, bos, cfg, progress)?
    } else {
        calibrate_and_quantize(model, stats_tokens, ctx, bos, cfg, progress)?
    };

    let ppl_float = match eval_tokens {
        Some(t) => Some(eval_ppl(model, t, ctx, bos)?),
        None => None,
    };
    let mut sens: Option<Vec<f64>> = None;
    // Layers to make ternary, most important last (the budget guard drops from the end).
    let mut install: Vec<usize> = (0..quantized.len()).collect();
    let mut ppl_converted: Option<f64> = None;
    if let (Some(budget), Some(eval), Some(pf)) = (cfg.budget, eval_tokens, ppl_float) {
        let mut sens_chunk = eval[..cfg.sensitivity_tokens.min(eval.len())].to_vec();
        if let (Some(b), Some(first)) = (bos, sens_chunk.first_mut()) {
            *first = b;
        }
        let s = sensitivities(model, &quantized, &sens_chunk, progress)?;
        let order = sensitivity_order(&quantized, &s);
        sens = Some(s);
        let limit = budget * pf;
        let n = quantized.len();
        let steps = usize::BITS as usize - n.leading_zeros() as usize + 1;
        progress(Progress::Start {
            stage: Stage::Search,
            total: steps,
        });
        // Invariant: prefix `lo` is within budget (0 trivially), prefix `hi` is over it or
        // `hi = n + 1` (untried).
        let (mut lo, mut hi) = (0usize, n + 1);
        let mut lo_ppl = pf;
        let mut step = 0;
        // Try everything first: often cheap to confirm, and the common no-budget-pressure case.
        let mut probe = n;
        while hi - lo > 1 {
            let prefix: Vec<&(String, QuantizedLayer)> =
                order[..probe].iter().map(|&i| &quantized[i]).collect();
            let saved = apply_standins(model, &prefix)?;
            let p = eval_ppl(model, eval, ctx, bos);
            restore_layers(model, saved)?;
            let p = p?;
            step += 1;
            progress(Progress::Step {
                stage: Stage::Search,
                done: step,
                total: steps,
                detail: format!("{probe} layers ternary: ppl {p:.3} ({:.3}x)", p / pf),
            });
            if p <= limit {
                lo = probe;
                lo_ppl = p;
            } else {
                hi = probe;
            }
            probe = (lo + hi) / 2;
        }
        install = order[..lo].to_vec();
        ppl_converted = Some(lo_ppl);
        progress(Progress::Finish {
            stage: Stage::Search,
            message: format!(
                "{lo}/{n} candidate layers ternary at {:.3}x float perplexity",
                lo_ppl / pf
            ),
        });
    }
    // Install the chosen layers.
    let device = model.device().clone();
    let mut replaced = Vec::with_capacity(install.len());
    for &i in &install {
        let (name, q) = &quantized[i];
        replaced.push(swap_layer(model, name, ternary_layer::<B>(q, &device)?)?);
    }
    if let (Some(eval), true) = (eval_tokens, cfg.measure || cfg.budget.is_some()) {
        progress(Progress::Start {
            stage: Stage::Measure,
            total: 1,
        });
        let mut p = eval_ppl(model, eval, ctx, bos)?;
        // The search measured float stand-ins; the installed kernels round differently. Should
        // that cross the budget, give back the most sensitive layers until it holds.
        if let (Some(budget), Some(pf)) = (cfg.budget, ppl_float) {
            while p > budget * pf {
                let (Some(i), Some(old)) = (install.pop(), replaced.pop()) else {
                    break;
                };
                swap_layer(model, &quantized[i].0, old)?;
                p = eval_ppl(model, eval, ctx, bos)?;
            }
        }
        ppl_converted = Some(p);
        progress(Progress::Step {
            stage: Stage::Measure,
            done: 1,
            total: 1,
            detail: format!("converted ppl {p:.3}"),
        });
        progress(Progress::Finish {
            stage: Stage::Measure,
            message: format!("converted ppl {p:.3}"),
        });
    }
    let mut chosen = vec![false; quantized.len()];
    for &i in &install {
        chosen[i] = true;
    }
    // The plan, in model order.
    let mut layers = Vec::new();
    for (name, l) in model.linears() {
        let k = quantized.iter().position(|(n, _)| *n == name);
        let plan = match k {
            Some(k) => {
                let q = &quantized[k].1;
                let extra = q
                    .input_scale
                    .as_ref()
                    .map_or(0.0, |d| 32.0 * d.len() as f64 / q.weights().max(1) as f64);
                LayerPlan {
                    name,
                    rows: q.matrix.rows(),
                    cols: q.matrix.cols(),
                    ternary: chosen[k],
                    method: q.method.clone(),
                    zero_fraction: q.matrix.zero_fraction(),
                    bits_per_weight: if chosen[k] {
                        q.matrix.bits_per_weight() + extra
                    } else {
                        32.0
                    },
                    rel_error: q.rel_error,
                    sensitivity: sens.as_ref().map(|s| s[k]),
                }
            }
            None => LayerPlan {
                name,
                rows: l.out_features(),
                cols: l.in_features(),
                ternary: false,
                method: "float (kept)".into(),
                zero_fraction: 0.0,
                bits_per_weight: 32.0,
                rel_error: 0.0,
                sensitivity: None,
            },
        };
        layers.push(plan);
    }
    Ok(ConversionReport {
        layers,
        calib_ppl_float: ppl_float,
        calib_ppl_converted: ppl_converted,
        budget: cfg.budget,
        calib_tokens: stats_tokens.len(),
        held_out,
        stage_seconds,
    })
}

/// Calibrates every layer not kept float on `stats_tokens`, then quantizes them.
fn calibrate_and_quantize<B: TernaryBackend>(
    model: &mut Llama<B>,
    stats_tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    cfg: &ConvertConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<(String, QuantizedLayer)>> {
    let n_chunks = stats_tokens.len().div_ceil(ctx);
    progress(Progress::Start {
        stage: Stage::Calibrate,
        total: n_chunks,
    });
    let want = |name: &str| !cfg.keep_float.iter().any(|p| matches_pattern(p, name));
    let calib = calibrate_layers(
        model,
        stats_tokens,
        ctx,
        bos,
        None,
        &want,
        &mut |done, total| {
            progress(Progress::Step {
                stage: Stage::Calibrate,
                done,
                total,
                detail: format!("{} tokens", done * ctx),
            });
        },
    )?;
    progress(Progress::Finish {
        stage: Stage::Calibrate,
        message: format!("{} tokens, {} inputs", calib.tokens, calib.inputs()),
    });
    quantize_model(model, &calib, cfg, progress)
}

fn validate(cfg: &ConvertConfig) -> Result<()> {
    cfg.layout.validate()?;
    cfg.method.validate()?;
    if cfg.ctx < 4 {
        return Err(ConvertError::Invalid(format!(
            "context {} is too short (at least 4)",
            cfg.ctx
        )));
    }
    if cfg.eval_chunks < 2 && (cfg.budget.is_some() || cfg.measure) {
        return Err(ConvertError::Invalid(format!(
            "perplexity needs at least 2 held-out chunks, got {}",
            cfg.eval_chunks
        )));
    }
    if let Some(b) = cfg.budget
        && !(b.is_finite() && b >= 1.0)
    {
        return Err(ConvertError::Invalid(format!(
            "the perplexity budget is a ratio to the float model and must be >= 1, got {b}"
        )));
    }
    if cfg.calib_tokens < 2 {
        return Err(ConvertError::Invalid(format!(
            "at least 2 calibration tokens are needed, got {}",
            cfg.calib_tokens
        )));
    }
    if cfg.sensitivity_tokens < 2 && cfg.budget.is_some() {
        return Err(ConvertError::Invalid(format!(
            "sensitivity needs at least 2 tokens, got {}",
            cfg.sensitivity_tokens
        )));
    }
    if let Some(g) = cfg.gptq
        && !(g.damp.is_finite() && g.damp >= 0.0)
    {
        return Err(ConvertError::Invalid(format!(
            "GPTQ dampening must be finite and >= 0, got {}",
            g.damp
        )));
    }
    if let Some(a) = cfg.input_scale_alphas.iter().find(|a| !a.is_finite()) {
        return Err(ConvertError::Invalid(format!("input-scale exponent {a}")));
    }
    Ok(())
}
