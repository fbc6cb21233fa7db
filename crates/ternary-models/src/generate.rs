//! Greedy and top-p generation with a KV cache, timed per phase.

use crate::error::{ModelError, Result};
use crate::model::{Llama, Logits};
use burn::tensor::backend::Backend;
use std::time::Instant;
use ternary_core::rng::SplitMix64;
use ternary_layers::to_rows;

/// How the next token is picked from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// `argmax` (lowest id on ties).
    Greedy,
    /// Nucleus sampling: softmax of `logits / temperature`, keep the most likely tokens until
    /// their mass reaches `top_p`, renormalize, draw with a seeded generator.
    TopP {
        /// Cumulative probability kept, in `(0, 1]`.
        top_p: f32,
        /// Softmax temperature, `> 0`.
        temperature: f32,
        /// Seed of the generator (same seed, same text).
        seed: u64,
    },
}

/// Timings of one generation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationStats {
    /// Prompt tokens run in the prefill.
    pub prompt_tokens: usize,
    /// Tokens generated (each decode step runs one token).
    pub generated_tokens: usize,
    /// Seconds for the prefill (prompt forward + first token choice).
    pub prefill_secs: f64,
    /// Seconds for all decode steps.
    pub decode_secs: f64,
}

impl GenerationStats {
    /// Prompt tokens per second.
    pub fn prefill_tokens_per_sec(&self) -> f64 {
        self.prompt_tokens as f64 / self.prefill_secs.max(1e-12)
    }

    /// Decode tokens per second (tokens run through the model after the prefill).
    pub fn decode_tokens_per_sec(&self) -> f64 {
        self.generated_tokens.saturating_sub(1) as f64 / self.decode_secs.max(1e-12)
    }
}

/// Index of the largest logit (lowest index on ties; NaN never wins).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] || logits[best].is_nan() {
            best = i;
        }
    }
    best
}

fn sample_top_p(logits: &[f32], top_p: f32, temperature: f32, rng: &mut SplitMix64) -> usize {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let t = f64::from(temperature);
    let mut p: Vec<(usize, f64)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i, ((f64::from(l) - f64::from(max)) / t).exp()))
        .collect();
    let z: f64 = p.iter().map(|x| x.1).sum();
    p.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut kept = 0;
    let mut mass = 0.0;
    for &(_, w) in &p {
        mass += w / z;
        kept += 1;
        if mass >= f64::from(top_p) {
            break;
        }
    }
    let p = &p[..kept];
    let total: f64 = p.iter().map(|x| x.1).sum();
    let mut r = rng.unit_f64() * total;
    for &(i, w) in p {
        if r < w {
            return i;
        }
        r -= w;
    }
    p[kept - 1].0
}

/// Generates up to `max_new` tokens after `prompt`, stopping after `stop` when given.
/// Returns the new tokens (without the prompt) and the timings.
pub fn generate<B: Backend>(
    model: &Llama<B>,
    prompt: &[u32],
    max_new: usize,
    sampling: Sampling,
    stop: Option<u32>,
    mut on_token: impl FnMut(u32),
) -> Result<(Vec<u32>, GenerationStats)> {
    if prompt.is_empty() {
        return Err(ModelError::Input("empty prompt".into()));
    }
    if let Sampling::TopP {
        top_p, temperature, ..
    } = sampling
        && !(top_p > 0.0 && top_p <= 1.0 && temperature > 0.0 && temperature.is_finite())
    {
        return Err(ModelError::Input(format!(
            "top-p {top_p} must be in (0, 1] and temperature {temperature} positive"
        )));
    }
    let mut rng = SplitMix64::new(match sampling {
        Sampling::TopP { seed, .. } => seed,
        Sampling::Greedy => 0,
    });
    let mut pick = |logits: &[f32]| -> u32 {
        let i = match sampling {
            Sampling::Greedy => argmax(logits),
            Sampling::TopP {
                top_p, temperature, ..
            } => sample_top_p(logits, top_p, temperature, &mut rng),
        };
        i as u32
    };
    let mut out = Vec::with_capacity(max_new);
    let mut stats = GenerationStats {
        prompt_tokens: prompt.len(),
        generated_tokens: 0,
        prefill_secs: 0.0,
        decode_secs: 0.0,
    };
    if max_new == 0 {
        return Ok((out, stats));
    }
    let mut cache = model.new_cache();
    let t0 = Instant::now();
    let logits = to_rows(model.forward(prompt, &mut cache, Logits::Last)?)?;
    let mut next = pick(&logits);
    stats.prefill_secs = t0.elapsed().as_secs_f64();
    out.push(next);
    on_token(next);
    let t1 = Instant::now();
    while out.len() < max_new && Some(next) != stop {
        let logits = to_rows(model.forward(&[next], &mut cache, Logits::Last)?)?;
        next = pick(&logits);
        out.push(next);
        on_token(next);
    }
    stats.decode_secs = t1.elapsed().as_secs_f64();
    stats.generated_tokens = out.len();
    Ok((out, stats))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_should_take_the_first_maximum() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 0.5]), 1);
    }

    #[test]
    fn top_p_should_only_draw_from_the_nucleus() {
        // Probabilities ~ [0.64, 0.24, 0.09, 0.03]: top-p 0.8 keeps the first two.
        let l = [2.0f32, 1.0, 0.0, -1.0];
        let mut rng = SplitMix64::new(7);
        let mut seen = [0usize; 4];
        for _ in 0..2000 {
            seen[sample_top_p(&l, 0.8, 1.0, &mut rng)] += 1;
        }
        assert_eq!(seen[2] + seen[3], 0, "{seen:?}");
        assert!(seen[0] > seen[1] && seen[1] > 300, "{seen:?}");
        // A tiny top-p is greedy.
        assert_eq!(sample_top_p(&l, 1e-6, 1.0, &mut rng), 0);
    }
}
