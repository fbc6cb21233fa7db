//! Greedy and sampled (temperature, top-k, top-p) generation with a KV cache, timed per
//! phase.

use crate::decoder::{BurnDecoder, Decoder};
use crate::error::{ModelError, Result};
use crate::model::{Llama, Logits};
use burn::tensor::backend::Backend;
use std::time::Instant;
use ternary_core::rng::SplitMix64;

/// How the next token is picked from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Sampling {
    /// `argmax` (lowest id on ties).
    Greedy,
    /// A seeded draw: keep the `top_k` largest logits (all when 0), take the softmax of
    /// `logits / temperature` over them, keep the most likely until their mass reaches `top_p`
    /// (at least one), renormalize and draw with [`SplitMix64`] seeded by `seed`.
    Sample {
        /// Softmax temperature, `> 0` (use [`Sampling::new`] to map 0 to greedy).
        temperature: f32,
        /// Candidates kept by rank before the softmax; 0 keeps all.
        top_k: usize,
        /// Cumulative probability kept, in `(0, 1]`.
        top_p: f32,
        /// Seed of the generator (same seed, same text).
        seed: u64,
    },
}

impl Sampling {
    /// The sampling for command-line style settings: temperature 0 or `top_k = 1` is
    /// [`Sampling::Greedy`], anything else [`Sampling::Sample`].
    pub fn new(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Self {
        if temperature == 0.0 || top_k == 1 {
            Self::Greedy
        } else {
            Self::Sample {
                temperature,
                top_k,
                top_p,
                seed,
            }
        }
    }

    /// Checks the parameters: temperature finite and positive, `top_p` in `(0, 1]`.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Greedy => Ok(()),
            Self::Sample {
                temperature, top_p, ..
            } => {
                if !(temperature > 0.0 && temperature.is_finite()) {
                    return Err(ModelError::Input(format!(
                        "temperature {temperature} must be positive and finite (0 is greedy)"
                    )));
                }
                if !(top_p > 0.0 && top_p <= 1.0) {
                    return Err(ModelError::Input(format!(
                        "top-p {top_p} must be in (0, 1]"
                    )));
                }
                Ok(())
            }
        }
    }
}

/// Picks tokens from logits as a [`Sampling`] says, holding the seeded generator.
#[derive(Debug, Clone)]
pub struct Sampler {
    sampling: Sampling,
    rng: SplitMix64,
    /// Scratch: `(id, weight)` of the candidates.
    cand: Vec<(usize, f64)>,
}

impl Sampler {
    /// A sampler; errors on invalid parameters ([`Sampling::validate`]).
    pub fn new(sampling: Sampling) -> Result<Self> {
        sampling.validate()?;
        let seed = match sampling {
            Sampling::Sample { seed, .. } => seed,
            Sampling::Greedy => 0,
        };
        Ok(Self {
            sampling,
            rng: SplitMix64::new(seed),
            cand: Vec::new(),
        })
    }

    /// The next token for `logits` (NaN logits are never drawn).
    pub fn pick(&mut self, logits: &[f32]) -> usize {
        let Sampling::Sample {
            temperature,
            top_k,
            top_p,
            ..
        } = self.sampling
        else {
            return argmax(logits);
        };
        let cand = &mut self.cand;
        cand.clear();
        cand.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| !l.is_nan())
                .map(|(i, &l)| (i, f64::from(l))),
        );
        if cand.is_empty() {
            return argmax(logits);
        }
        // Largest logit first, lowest id first on ties.
        let by_logit = |a: &(usize, f64), b: &(usize, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        if top_k > 0 && top_k < cand.len() {
            cand.select_nth_unstable_by(top_k - 1, by_logit);
            cand.truncate(top_k);
        }
        cand.sort_unstable_by(by_logit);
        let max = cand[0].1;
        let t = f64::from(temperature);
        for c in cand.iter_mut() {
            c.1 = ((c.1 - max) / t).exp();
        }
        let z: f64 = cand.iter().map(|c| c.1).sum();
        let mut kept = 0;
        let mut mass = 0.0;
        for c in cand.iter() {
            mass += c.1 / z;
            kept += 1;
            if mass >= f64::from(top_p) {
                break;
            }
        }
        let cand = &cand[..kept];
        let total: f64 = cand.iter().map(|c| c.1).sum();
        let mut r = self.rng.unit_f64() * total;
        for &(i, w) in cand {
            if r < w {
                return i;
            }
            r -= w;
        }
        cand[kept - 1].0
    }
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

/// Generates up to `max_new` tokens after `prompt`, stopping after `stop` when given.
/// Returns the new tokens (without the prompt) and the timings.
pub fn generate<B: Backend>(
    model: &Llama<B>,
    prompt: &[u32],
    max_new: usize,
    sampling: Sampling,
    stop: Option<u32>,
    on_token: impl FnMut(u32),
) -> Result<(Vec<u32>, GenerationStats)> {
    generate_with(
        &mut BurnDecoder::new(model),
        prompt,
        max_new,
        sampling,
        stop,
        on_token,
    )
}

/// [`generate`] on any [`Decoder`] (its cache is cleared first).
pub fn generate_with(
    model: &mut dyn Decoder,
    prompt: &[u32],
    max_new: usize,
    sampling: Sampling,
    stop: Option<u32>,
    mut on_token: impl FnMut(u32),
) -> Result<(Vec<u32>, GenerationStats)> {
    if prompt.is_empty() {
        return Err(ModelError::Input("empty prompt".into()));
    }
    let mut sampler = Sampler::new(sampling)?;
    let mut pick = |logits: &[f32]| -> u32 { sampler.pick(logits) as u32 };
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
    model.clear();
    let t0 = Instant::now();
    let mut next = pick(model.forward(prompt, Logits::Last)?);
    stats.prefill_secs = t0.elapsed().as_secs_f64();
    out.push(next);
    on_token(next);
    let t1 = Instant::now();
    while out.len() < max_new && Some(next) != stop {
        next = pick(model.forward(&[next], Logits::Last)?);
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

    fn sample(temperature: f32, top_k: usize, top_p: f32, seed: u64) -> Sampler {
        Sampler::new(Sampling::Sample {
            temperature,
            top_k,
            top_p,
            seed,
        })
        .unwrap()
    }

    fn random_logits(rng: &mut SplitMix64, n: usize) -> Vec<f32> {
        (0..n).map(|_| 4.0 * rng.signed_unit_f32()).collect()
    }

    #[test]
    fn temperature_zero_and_top_k_one_should_be_greedy() {
        assert_eq!(Sampling::new(0.0, 40, 0.9, 1), Sampling::Greedy);
        assert_eq!(Sampling::new(0.8, 1, 0.9, 1), Sampling::Greedy);
        let seed = ternary_testkit::seed();
        let mut rng = SplitMix64::new(seed);
        let mut greedy = Sampler::new(Sampling::new(0.0, 0, 1.0, seed)).unwrap();
        let mut top1 = sample(1.5, 1, 1.0, seed);
        for _ in 0..200 {
            let l = random_logits(&mut rng, 97);
            assert_eq!(greedy.pick(&l), argmax(&l));
            assert_eq!(top1.pick(&l), argmax(&l));
        }
    }

    #[test]
    fn a_fixed_seed_should_reproduce_the_draws() {
        let seed = ternary_testkit::seed();
        let mut rng = SplitMix64::new(seed);
        let logits: Vec<Vec<f32>> = (0..100).map(|_| random_logits(&mut rng, 50)).collect();
        let draws = |s: u64| {
            let mut smp = sample(1.0, 20, 0.95, s);
            logits.iter().map(|l| smp.pick(l)).collect::<Vec<_>>()
        };
        assert_eq!(draws(seed), draws(seed));
        assert_ne!(draws(seed), draws(seed ^ 1), "seed {seed}");
    }

    /// Counts of `n` draws against the expected probabilities: every count within 5 standard
    /// deviations of `n · p`, and zero where `p` is zero.
    fn check_distribution(mut smp: Sampler, logits: &[f32], want: &[f64], n: usize) {
        let mut seen = vec![0usize; logits.len()];
        for _ in 0..n {
            seen[smp.pick(logits)] += 1;
        }
        for (i, (&c, &p)) in seen.iter().zip(want).enumerate() {
            let mean = n as f64 * p;
            let sd = (n as f64 * p * (1.0 - p)).sqrt();
            if p == 0.0 {
                assert_eq!(c, 0, "token {i}: {seen:?}");
            } else {
                assert!(
                    (c as f64 - mean).abs() <= 5.0 * sd,
                    "token {i}: {seen:?} vs {want:?}"
                );
            }
        }
    }

    fn softmax(l: &[f64]) -> Vec<f64> {
        let z: f64 = l.iter().map(|x| x.exp()).sum();
        l.iter().map(|x| x.exp() / z).collect()
    }

    #[test]
    fn draws_should_follow_the_tempered_truncated_softmax() {
        let seed = ternary_testkit::seed();
        let l = [2.0f32, 1.0, 0.0, -1.0, f32::NAN];
        let n = 40_000;
        // Full softmax.
        let mut p = softmax(&[2.0, 1.0, 0.0, -1.0]);
        p.push(0.0);
        check_distribution(sample(1.0, 0, 1.0, seed), &l, &p, n);
        // Temperature 2 flattens: softmax(l / 2).
        let mut p = softmax(&[1.0, 0.5, 0.0, -0.5]);
        p.push(0.0);
        check_distribution(sample(2.0, 0, 1.0, seed), &l, &p, n);
        // Top-k 2: the two largest, renormalized.
        let mut p = softmax(&[2.0, 1.0]);
        p.extend([0.0; 3]);
        check_distribution(sample(1.0, 2, 1.0, seed), &l, &p, n);
        // Top-p 0.8 on [0.64, 0.24, 0.09, 0.03]: the first two reach 0.88.
        check_distribution(sample(1.0, 0, 0.8, seed), &l, &p, n);
        // A tiny top-p keeps only the best.
        check_distribution(
            sample(1.0, 0, 1e-6, seed),
            &l,
            &[1.0, 0.0, 0.0, 0.0, 0.0],
            100,
        );
    }

    #[test]
    fn invalid_parameters_should_be_errors() {
        for (t, p) in [
            (-1.0, 0.9),
            (f32::NAN, 0.9),
            (f32::INFINITY, 0.9),
            (1.0, 0.0),
            (1.0, 1.5),
        ] {
            assert!(
                Sampler::new(Sampling::Sample {
                    temperature: t,
                    top_k: 0,
                    top_p: p,
                    seed: 0
                })
                .is_err()
            );
        }
    }
}
