//! The mixed-precision search's measures: next-token KL sensitivities, held-out perplexity, the
//! sensitivity order.

use ternary_layers::{TernaryBackend, to_rows};
use ternary_models::{Llama, Logits, Tokenizer, perplexity};

use super::*;
use crate::error::Result;

/// `log softmax` of each row of `logits` (`rows × vocab`), max-shifted, sums in `f64`.
pub(super) fn log_softmax_rows(logits: &[f32], vocab: usize) -> Vec<f32> {
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
pub(crate) fn mean_kl(lp: &[f32], lq: &[f32], vocab: usize) -> f64 {
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
pub(crate) fn log_probs<B: TernaryBackend>(model: &Llama<B>, tokens: &[u32]) -> Result<Vec<f32>> {
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

/// The search's steps, cheapest first, as `(layer, variant)` moves. `variants` holds one list
/// of candidates per grid (the same layers in the same order), most aggressive first (one
/// plane, then two: [`Planes::grids`](super::Planes::grids)); `sens[v][i]` is layer `i`'s
/// sensitivity on variant `v`.
///
/// - One variant: each layer once, in [`sensitivity_order`] (ascending KL per weight).
/// - One plane and two planes ([`Planes::Auto`](super::Planes::Auto)): each layer may move
///   float → two planes (costs `s₂`, saves `16 − b₂` bits per weight, float counted at 16) and
///   two → one plane (costs `max(s₁ − s₂, 0)`, saves `b₂ − b₁`); the moves of all layers are
///   ordered by cost per weight and saved bit (a Lagrangian order: the cheapest KL for the bits).
///   [`plan_of`] turns a prefix into a plan.
pub fn search_moves(
    variants: &[Vec<(String, QuantizedLayer)>],
    sens: &[Vec<f64>],
) -> Vec<(usize, usize)> {
    match (variants, sens) {
        ([one], [s]) => sensitivity_order(one, s)
            .into_iter()
            .map(|i| (i, 0))
            .collect(),
        ([one, two], [s1, s2]) => {
            let mut moves: Vec<(f64, usize, usize)> = Vec::with_capacity(2 * one.len());
            for (i, ((_, q1), (_, q2))) in one.iter().zip(two).enumerate() {
                let w = q1.weights().max(1) as f64;
                let (b1, b2) = (q1.matrix.bits_per_weight(), q2.matrix.bits_per_weight());
                let to_two = s2[i] / (w * (16.0 - b2).max(1e-3));
                let to_one = (s1[i] - s2[i]).max(0.0) / (w * (b2 - b1).max(1e-3));
                moves.push((to_two, i, 1));
                moves.push((to_one, i, 0));
            }
            moves.sort_by(|a, b| a.0.total_cmp(&b.0));
            moves.into_iter().map(|(_, i, v)| (i, v)).collect()
        }
        _ => Vec::new(),
    }
}

/// The layers a prefix of [`search_moves`] makes ternary, as `(layer, variant)`, ordered by
/// each layer's last move (so the budget guard gives back the latest first). A move to a less
/// aggressive variant than the layer already has (a higher index) is skipped; `n` is the number
/// of layers.
pub fn plan_of(moves: &[(usize, usize)], n: usize) -> Vec<(usize, usize)> {
    let mut state: Vec<Option<(usize, usize)>> = vec![None; n];
    for (pos, &(i, v)) in moves.iter().enumerate() {
        let Some(slot) = state.get_mut(i) else {
            continue;
        };
        match slot {
            Some((_, cur)) if *cur <= v => {}
            _ => *slot = Some((pos, v)),
        }
    }
    let mut plan: Vec<(usize, usize, usize)> = state
        .iter()
        .enumerate()
        .filter_map(|(i, s)| s.map(|(pos, v)| (pos, i, v)))
        .collect();
    plan.sort_unstable();
    plan.into_iter().map(|(_, i, v)| (i, v)).collect()
}
