//! Post-training conversion of a float Llama to ternary, with automatic mixed precision.
//!
//! [`convert`] runs, with a [`Progress`] callback per stage:
//!
//! 1. **Calibrate** ([`calib`](crate::calib)): run the float model on the calibration text and
//!    collect each layer input's `E[x²]`, `E[|x|]` and Hessian `H = Σ xxᵀ`.
//! 2. **Quantize** every layer not matched by [`ConvertConfig::keep_float`]
//!    (`quantize_layer`): optional activation-aware input scaling `W' = W·diag(c)`,
//!    `c_j = E[|x_j|]^α` (the layer then computes `Q'·(x ⊙ 1/c)`; `α` chosen per layer from
//!    [`ConvertConfig::input_scale_alphas`] by the smallest output error), then GPTQ
//!    ([`gptq`](crate::gptq)) or plain rounding with the configured [`Method`](ternary_core::quant::Method) and scale layout.
//!    Each layer's error is the relative output error on the calibration inputs,
//!    `sqrt(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ))`. With [`ConvertConfig::sequential`], steps 1–2 run
//!    block by block instead ([`quantize_model_sequential`]): each block is calibrated on the
//!    model whose earlier blocks already hold their quantized weights (with
//!    [`ConvertConfig::sequential_layers`], each group of layers reading one input inside a
//!    block too).
//! 3. **Mixed precision** (when [`ConvertConfig::budget`] is set): each candidate's
//!    sensitivity is the mean KL divergence `KL(p_float ‖ p)` of the next-token distribution on a
//!    short held-out calibration chunk with only that layer ternary ([`sensitivities`]). Layers
//!    are ordered by sensitivity per weight; the largest prefix whose perplexity on held-out
//!    calibration text stays within `budget × float` is found by bisection (every prefix
//!    tried is measured, and the chosen one satisfied the budget when measured).
//!    The search runs float stand-ins holding the exact effective weights (fast GEMM).
//! 4. **Install**: the chosen layers are swapped into the model in place as
//!    [`TernaryLinear`](ternary_layers::TernaryLinear)s; the rest keep their float layers. The converted model's perplexity is
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

mod config;
mod install;
mod quantize;
mod report;
mod search;

pub use config::{ConvertConfig, Planes, matches_pattern};
pub use install::{apply_standins, restore_layers};
use install::{float_standin, swap_layer, ternary_layer};
pub use quantize::{QuantizedLayer, quantize_model, quantize_model_on, quantize_model_sequential};
pub use report::{ConversionReport, LayerReport, Progress, Stage};
pub use search::{bos_of, eval_ppl, plan_of, search_moves, sensitivities, sensitivity_order};

use ternary_layers::TernaryBackend;
use ternary_models::{Llama, Tokenizer};

use crate::error::{ConvertError, Result};
use config::{describe, validate};
use quantize::calibrate_and_quantize;

/// Converts `model` in place. See the [module docs](self).
pub fn convert<B: TernaryBackend>(
    model: &mut Llama<B>,
    tokenizer: &Tokenizer,
    calib_text: &str,
    cfg: &ConvertConfig,
    outer: &mut dyn FnMut(Progress),
) -> Result<ConversionReport> {
    validate(cfg)?;
    let rotated_cfg;
    let cfg = match cfg.rotate {
        Some(seed) => {
            let tied = model.config().tie_word_embeddings;
            crate::rotate::rotate_residual(model, seed)?;
            let mut c = cfg.clone();
            if tied && c.planes != Planes::One {
                c.keep_float.push("lm_head*".into());
            }
            rotated_cfg = c;
            &rotated_cfg
        }
        None => cfg,
    };
    if let Some(seed) = cfg.rotate_heads {
        crate::rotate::rotate_heads(model, seed)?;
    }
    if let Some(seed) = cfg.rotate_ffn {
        crate::rotate::rotate_ffn(model, seed)?;
    }
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
    let variants: Vec<Vec<(String, QuantizedLayer)>> = if cfg.sequential {
        vec![quantize_model_sequential(
            model,
            stats_tokens,
            ctx,
            bos,
            cfg,
            progress,
        )?]
    } else {
        calibrate_and_quantize(model, stats_tokens, ctx, bos, cfg, progress)?
    };
    let n = variants.first().map_or(0, Vec::len);

    let ppl_float = match eval_tokens {
        Some(t) => Some(eval_ppl(model, t, ctx, bos)?),
        None => None,
    };
    // Per variant (grid), each layer's sensitivity, when the search runs.
    let mut sens: Option<Vec<Vec<f64>>> = None;
    // The plan: (layer, variant) to make ternary, most important last (the budget guard drops
    // from the end). Without a budget, every candidate on the first variant.
    let mut install: Vec<(usize, usize)> = (0..n).map(|i| (i, 0)).collect();
    let mut ppl_converted: Option<f64> = None;
    if let (Some(budget), Some(eval), Some(pf)) = (cfg.budget, eval_tokens, ppl_float) {
        let mut sens_chunk = eval[..cfg.sensitivity_tokens.min(eval.len())].to_vec();
        if let (Some(b), Some(first)) = (bos, sens_chunk.first_mut()) {
            *first = b;
        }
        let s: Vec<Vec<f64>> = variants
            .iter()
            .map(|v| sensitivities(model, v, &sens_chunk, progress))
            .collect::<Result<_>>()?;
        let moves = search_moves(&variants, &s);
        sens = Some(s);
        let limit = budget * pf;
        let m = moves.len();
        let steps = usize::BITS as usize - m.leading_zeros() as usize + 1;
        progress(Progress::Start {
            stage: Stage::Search,
            total: steps,
        });
        // Invariant: prefix `lo` is within budget (0 trivially), prefix `hi` is over it or
        // `hi = m + 1` (untried).
        let (mut lo, mut hi) = (0usize, m + 1);
        let mut lo_ppl = pf;
        let mut step = 0;
        // Try everything first: often cheap to confirm, and the common no-budget-pressure case.
        let mut probe = m;
        while hi - lo > 1 {
            let plan = plan_of(&moves[..probe], n);
            let prefix: Vec<&(String, QuantizedLayer)> =
                plan.iter().map(|&(i, v)| &variants[v][i]).collect();
            let saved = apply_standins(model, &prefix)?;
            let p = eval_ppl(model, eval, ctx, bos);
            restore_layers(model, saved)?;
            let p = p?;
            step += 1;
            progress(Progress::Step {
                stage: Stage::Search,
                done: step,
                total: steps,
                detail: format!(
                    "{} layers ternary ({probe}/{m} steps): ppl {p:.3} ({:.3}x)",
                    plan.len(),
                    p / pf
                ),
            });
            if p <= limit {
                lo = probe;
                lo_ppl = p;
            } else {
                hi = probe;
            }
            probe = (lo + hi) / 2;
        }
        install = plan_of(&moves[..lo], n);
        ppl_converted = Some(lo_ppl);
        progress(Progress::Finish {
            stage: Stage::Search,
            message: format!(
                "{}/{n} candidate layers ternary at {:.3}x float perplexity",
                install.len(),
                lo_ppl / pf
            ),
        });
    }
    // Install the chosen layers.
    let device = model.device().clone();
    let mut replaced = Vec::with_capacity(install.len());
    for &(i, v) in &install {
        let (name, q) = &variants[v][i];
        replaced.push(swap_layer(model, name, ternary_layer::<B>(q, &device)?)?);
    }
    if let (Some(eval), true) = (eval_tokens, cfg.measure || cfg.budget.is_some()) {
        progress(Progress::Start {
            stage: Stage::Measure,
            total: 1,
        });
        let mut p = eval_ppl(model, eval, ctx, bos)?;
        // The search measured float stand-ins; the installed kernels round differently. Should
        // that cross the budget, give back the last chosen layers until it holds.
        if let (Some(budget), Some(pf)) = (cfg.budget, ppl_float) {
            while p > budget * pf {
                let (Some((i, v)), Some(old)) = (install.pop(), replaced.pop()) else {
                    break;
                };
                swap_layer(model, &variants[v][i].0, old)?;
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
    let mut chosen: Vec<Option<usize>> = vec![None; n];
    for &(i, v) in &install {
        chosen[i] = Some(v);
    }
    // The plan, in model order.
    let mut layers = Vec::new();
    for (name, l) in model.linears() {
        let k = variants
            .first()
            .and_then(|v| v.iter().position(|(n, _)| *n == name));
        let plan = match k {
            Some(k) => {
                let v = chosen[k].unwrap_or(0);
                let q = &variants[v][k].1;
                let extra = q
                    .input_scale
                    .as_ref()
                    .map_or(0.0, |d| 32.0 * d.len() as f64 / q.weights().max(1) as f64);
                LayerReport {
                    name,
                    rows: q.matrix.rows(),
                    cols: q.matrix.cols(),
                    ternary: chosen[k].is_some(),
                    planes: chosen[k].map_or(0, |_| q.matrix.planes()),
                    method: q.method.clone(),
                    zero_fraction: q.matrix.zero_fraction(),
                    bits_per_weight: if chosen[k].is_some() {
                        q.matrix.bits_per_weight() + extra
                    } else {
                        32.0
                    },
                    rel_error: q.rel_error,
                    sensitivity: sens.as_ref().map(|s| s[v][k]),
                }
            }
            None => LayerReport {
                name,
                rows: l.out_features(),
                cols: l.in_features(),
                ternary: false,
                planes: 0,
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
