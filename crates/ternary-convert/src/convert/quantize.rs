//! Quantizing layers: activation-aware input scaling, GPTQ or plain rounding, per layer, for the
//! whole model at once or block by block.

use burn::tensor::{Tensor, TensorData};
use std::fmt;
use ternary_core::quant::{Method, QuantConfig, quantize, quantize_activation_aware};
use ternary_layers::{Linear, LinearWeights, TernaryBackend, to_rows};
use ternary_models::Llama;

use super::*;
use crate::calib::{Calibration, InputStats, calibrate_layers, input_key, record_inputs};
use crate::error::{ConvertError, Result};
use crate::gptq::{
    GptqConfig, Grid, HessianFactor, gptq_levels_factored, refit_plane_scales, round_to_grid,
};
use std::sync::Arc;

/// A ternary candidate for one layer: `y = Q·(x ⊙ d)`, `d` the optional input scale.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedLayer {
    /// The ternary weights `Q` (of `W·diag(1/d)`): one plane pair, or two (`Q = M₁ + M₂`).
    pub matrix: LinearWeights,
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

/// `tr(ΔW H ΔWᵀ)` and `tr(W H Wᵀ)` with one `f32` matmul each on the backend.
pub(super) fn output_errors<B: TernaryBackend>(
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
pub(crate) fn input_scale_factors(mean_abs: &[f32], alpha: f32) -> Vec<f32> {
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
pub(crate) struct FactorCache {
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
pub(crate) fn quantize_layer<B: TernaryBackend>(
    name: &str,
    w: &[f32],
    rows: usize,
    cols: usize,
    stats: &InputStats,
    cfg: &ConvertConfig,
    grid: Grid,
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
                    cache.factor = Some(HessianFactor::with_order(
                        hs.clone(),
                        cols,
                        g.damp,
                        g.act_order,
                    )?);
                    cache.key = Some(key);
                }
                let factor = cache
                    .factor
                    .as_ref()
                    .ok_or_else(|| ConvertError::Invalid("Hessian cache is empty".into()))?;
                let (levels, scales) = gptq_levels_factored(
                    &ws, rows, cols, factor, cfg.layout, cfg.method, grid, g.refit,
                )?;
                grid.weights(rows, cols, &levels, scales)?
            }
            None => {
                let diag: Vec<f32> = (0..cols).map(|j| hs[j * cols + j] as f32).collect();
                match (grid, cfg.method) {
                    (Grid::Ternary, Method::ActivationAware) => {
                        quantize_activation_aware(&ws, rows, cols, cfg.layout, &diag)?
                            .0
                            .into()
                    }
                    (Grid::Ternary, m) => {
                        quantize(&ws, rows, cols, &QuantConfig::new(m, cfg.layout))?
                            .0
                            .into()
                    }
                    (Grid::TwoPlane, m) => {
                        let (levels, scales) =
                            round_to_grid(&ws, rows, cols, cfg.layout, m, grid, &diag)?;
                        grid.weights(rows, cols, &levels, scales)?
                    }
                }
            }
        };
        // Free plane scales: each group's (a₁, a₂) re-solved for the planes' trits in the
        // dampened output-error metric (never a larger error there than `3s` and `s`).
        let matrix = match matrix {
            LinearWeights::Two(m) if cfg.free_plane_scales => {
                let damp = cfg.gptq.map_or(GptqConfig::default().damp, |g| g.damp);
                LinearWeights::Two(Arc::new(refit_plane_scales(&ws, &m, &hs, damp)?))
            }
            m => m,
        };
        let q = QuantizedLayer {
            matrix,
            input_scale: c.map(|c| c.iter().map(|&v| 1.0 / v).collect()),
            rel_error: 0.0,
            method: describe(cfg, grid, alpha),
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

/// The layers of `model` not matched by `cfg.keep_float`, in model order. With two planes
/// ([`Planes::Two`], [`Planes::Auto`]) a tied `lm_head` is not a candidate: it is the embedding
/// table, which the model keeps in float for the token lookup anyway.
pub(super) fn candidates<B: TernaryBackend>(model: &Llama<B>, cfg: &ConvertConfig) -> Vec<String> {
    let tied_head = cfg.planes != Planes::One && model.config().tie_word_embeddings;
    model
        .linears()
        .into_iter()
        .map(|(n, _)| n)
        .filter(|n| !(tied_head && n == "lm_head"))
        .filter(|n| !cfg.keep_float.iter().any(|p| matches_pattern(p, n)))
        .collect()
}

/// Quantizes layer `name` of `model` with its statistics in `calib`.
pub(super) fn quantize_named<B: TernaryBackend>(
    model: &Llama<B>,
    name: &str,
    calib: &Calibration,
    cfg: &ConvertConfig,
    grid: Grid,
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
    quantize_layer::<B>(name, &w, rows, cols, stats, cfg, grid, cache, device)
}

/// Quantizes every layer of `model` not matched by `cfg.keep_float`, in model order, on the
/// grid of [`ConvertConfig::planes`] (one plane for [`Planes::Auto`](super::Planes::Auto);
/// [`quantize_model_on`] picks the grid).
pub fn quantize_model<B: TernaryBackend>(
    model: &Llama<B>,
    calib: &Calibration,
    cfg: &ConvertConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<(String, QuantizedLayer)>> {
    quantize_model_on(model, calib, cfg, primary_grid(cfg), progress)
}

/// The grid of [`ConvertConfig::planes`]; one plane for `Auto` (which also quantizes on two).
pub(super) fn primary_grid(cfg: &ConvertConfig) -> Grid {
    cfg.planes.grids()[0]
}

/// [`quantize_model`] on `grid`.
pub fn quantize_model_on<B: TernaryBackend>(
    model: &Llama<B>,
    calib: &Calibration,
    cfg: &ConvertConfig,
    grid: Grid,
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
        let q = quantize_named(model, &name, calib, cfg, grid, &mut cache, &device)?;
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
pub(super) fn block_of(name: &str) -> String {
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
/// carry from the blocks before it. With [`ConvertConfig::sequential_layers`] the same holds
/// inside each block, group by group of layers reading one input (`q/k/v`, `o`, `gate/up`,
/// `down`: "true sequential" GPTQ). The residual stream of every calibration sequence
/// (`tokens` in chunks of `ctx`, as [`calibrate`](crate::calib::calibrate) runs them) is kept
/// between blocks, so each block runs twice in all — once float to record its inputs, once
/// quantized to advance the stream (five times with `sequential_layers`) — and `lm_head` once:
/// about two forward passes instead of one per block (memory: the stream, `tokens × hidden`
/// `f32`). Bit for bit the same statistics as a whole forward pass per group. The model is
/// restored before returning.
pub fn quantize_model_sequential<B: TernaryBackend>(
    model: &mut Llama<B>,
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    cfg: &ConvertConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<(String, QuantizedLayer)>> {
    let names = candidates(model, cfg);
    // Groups quantized together, in model order: a block's layers, or with `sequential_layers`
    // the layers of a block that read one input (`q/k/v`, `o`, `gate/up`, `down`).
    let mut blocks: Vec<(String, Vec<String>)> = Vec::new();
    let mut last_group = String::new();
    for n in names {
        let group = if cfg.sequential_layers {
            input_key(&n)
        } else {
            block_of(&n)
        };
        match blocks.last_mut() {
            Some((_, members)) if group == last_group => members.push(n),
            _ => blocks.push((block_of(&n), vec![n])),
        }
        last_group = group;
    }
    let layers = model.config().num_layers;
    // Where each group runs: block `i`, or (`None`) the head after the last block.
    let mut at: Vec<Option<usize>> = Vec::with_capacity(blocks.len());
    for (key, members) in &blocks {
        let pos = if let Some(rest) = key.strip_prefix("model.layers.") {
            match rest.trim_end_matches('.').parse::<usize>() {
                Ok(i) if i < layers => Some(i),
                _ => {
                    return Err(ConvertError::Invalid(format!(
                        "sequential quantization: {key} is not a block of this model"
                    )));
                }
            }
        } else if members.iter().all(|m| m == "lm_head") {
            None
        } else {
            return Err(ConvertError::Invalid(format!(
                "sequential quantization does not know where layer {key} runs"
            )));
        };
        match (at.last(), pos) {
            (Some(None), _) => {
                return Err(ConvertError::Invalid(
                    "sequential quantization: lm_head must be the last group".into(),
                ));
            }
            (Some(&Some(prev)), Some(i)) if i < prev => {
                return Err(ConvertError::Invalid(format!(
                    "sequential quantization: {key} is listed after block {prev}"
                )));
            }
            _ => at.push(pos),
        }
    }
    let total = blocks.iter().map(|(_, m)| m.len()).sum();
    let grid = primary_grid(cfg);
    let chunks = crate::calib::calibration_chunks(tokens, ctx, bos, None)?;
    let n_tokens: usize = chunks.iter().map(Vec::len).sum();
    progress(Progress::Start {
        stage: Stage::Quantize,
        total,
    });
    let device = model.device().clone();
    let mut cache = FactorCache::default();
    let mut out: Vec<(String, QuantizedLayer)> = Vec::with_capacity(total);
    let mut saved: Vec<(String, Linear<B>)> = Vec::new();
    let result = (|| -> Result<()> {
        // The residual stream before block `next` of every chunk.
        let mut stream = chunks
            .iter()
            .map(|c| model.embed(c))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let mut next = 0;
        let advance = |model: &Llama<B>, stream: Vec<Tensor<B, 2>>, blocks| {
            stream
                .into_iter()
                .map(|x| model.run_blocks(x, std::ops::Range::clone(&blocks)))
                .collect::<std::result::Result<Vec<_>, _>>()
        };
        for ((_, members), pos) in blocks.iter().zip(&at) {
            let want = |n: &str| members.iter().any(|m| m == n);
            let calib = match *pos {
                Some(i) => {
                    if next < i {
                        stream = advance(model, stream, next..i)?;
                        next = i;
                    }
                    record_inputs(model, &want, &mut |m: &Llama<B>| {
                        for x in &stream {
                            m.run_blocks(x.clone(), i..i + 1)?;
                        }
                        Ok(n_tokens)
                    })?
                }
                None => {
                    stream = advance(model, stream, next..layers)?;
                    next = layers;
                    record_inputs(model, &want, &mut |m: &Llama<B>| {
                        for x in &stream {
                            drop(m.head(x.clone()));
                        }
                        Ok(n_tokens)
                    })?
                }
            };
            let start = out.len();
            for name in members {
                let q = quantize_named(model, name, &calib, cfg, grid, &mut cache, &device)?;
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

/// Calibrates every layer not kept float on `stats_tokens`, then quantizes them on each grid of
/// [`ConvertConfig::planes`] (one list per grid, in [`Planes::grids`](super::Planes::grids)
/// order).
pub(super) fn calibrate_and_quantize<B: TernaryBackend>(
    model: &mut Llama<B>,
    stats_tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    cfg: &ConvertConfig,
    progress: &mut dyn FnMut(Progress),
) -> Result<Vec<Vec<(String, QuantizedLayer)>>> {
    let n_chunks = stats_tokens.len().div_ceil(ctx);
    progress(Progress::Start {
        stage: Stage::Calibrate,
        total: n_chunks,
    });
    let names = candidates(model, cfg);
    let want = |name: &str| names.iter().any(|n| n == name);
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
    cfg.planes
        .grids()
        .iter()
        .map(|&grid| quantize_model_on(model, &calib, cfg, grid, progress))
        .collect()
}
