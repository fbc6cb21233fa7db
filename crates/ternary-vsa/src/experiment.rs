//! The key–value capacity experiment, seeded and reproducible, shared by the tests and the
//! `bench-vsa` report.
//!
//! One trial: a codebook of `M` random values, `k` random keys, each key paired with a value
//! drawn uniformly (with replacement) from the codebook; `S = Σⱼ bind(kⱼ, v_{iⱼ})` in a
//! [`CountBundle`]; every key is then queried and scored correct when the decoded codebook index
//! equals `iⱼ`. All randomness comes from `seed` (trial `t` uses streams `4t … 4t+3`).

use crate::BinaryHv;
use crate::basis;
use crate::bundle::CountBundle;
use crate::cleanup::{self, ExplainAway};
use crate::error::{Result, VsaError};
use crate::memory::ItemMemory;
use ternary_core::rng::{Rng, derive_seed};

/// How the bundle is decoded.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Readout {
    /// Unbind the counts with each key; nearest codebook entry by the exact count dot.
    Counts,
    /// Threshold to a binary majority first (seeded tie-break), then XOR with the key and take
    /// the nearest entry by Hamming distance.
    Majority,
    /// Iterative cleanup ([`cleanup::explain_away`]) of the counts.
    ExplainAway(ExplainAway),
}

/// Parameters of the experiment (binary spatter code, `D`-bit keys and values).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KeyValueExperiment {
    /// Dimension `D`.
    pub dim: usize,
    /// Key–value pairs `k` per bundle.
    pub pairs: usize,
    /// Codebook size `M`.
    pub codebook_size: usize,
    /// Independent trials (each a fresh codebook, keys and bundle).
    pub trials: usize,
    /// Master seed.
    pub seed: u64,
    /// Decoding method.
    pub readout: Readout,
}

/// Counts of a Monte Carlo measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Measured {
    /// Queries decoded correctly.
    pub correct: u64,
    /// Queries made.
    pub queries: u64,
}

impl Measured {
    /// `correct / queries` (`0` for no queries).
    pub fn accuracy(&self) -> f64 {
        if self.queries == 0 {
            0.0
        } else {
            self.correct as f64 / self.queries as f64
        }
    }

    /// Binomial standard error `√(p(1 − p)/n)` of [`accuracy`](Self::accuracy), with `p` taken
    /// from `expected` (pass the model's value, so that `p = 1` measurements keep a real width).
    pub fn std_error(&self, expected: f64) -> f64 {
        if self.queries == 0 {
            return f64::INFINITY;
        }
        (expected * (1.0 - expected) / self.queries as f64).sqrt()
    }
}

impl KeyValueExperiment {
    /// Runs all trials and returns the pooled counts.
    pub fn run(&self) -> Result<Measured> {
        if self.pairs == 0 || self.codebook_size == 0 {
            return Err(VsaError::invalid(
                "the experiment needs at least one pair and one codebook item",
            ));
        }
        let mut total = Measured::default();
        for t in 0..self.trials as u64 {
            let m = self.trial(t)?;
            total.correct += m.correct;
            total.queries += m.queries;
        }
        Ok(total)
    }

    fn trial(&self, t: u64) -> Result<Measured> {
        let (d, k, m) = (self.dim, self.pairs, self.codebook_size);
        let memory = ItemMemory::new(basis::random_binary(m, d, derive_seed(self.seed, 4 * t))?)?;
        let keys = basis::random_binary(k, d, derive_seed(self.seed, 4 * t + 1))?;
        let mut rng = Rng::stream(self.seed, 4 * t + 2);
        let values: Vec<usize> = (0..k).map(|_| rng.below(m as u64) as usize).collect();
        let mut pairs = Vec::with_capacity(k);
        for (key, &v) in keys.iter().zip(&values) {
            let item = memory
                .get(v)
                .ok_or_else(|| VsaError::invalid("value index outside the codebook"))?;
            pairs.push(key.bind(item)?);
        }
        let mut bundle = CountBundle::new(d)?;
        let _ = bundle.add_many(&pairs)?;
        let decoded: Vec<usize> = match self.readout {
            Readout::Counts => cleanup::unbind_nearest(&bundle, &keys, &memory)?
                .iter()
                .map(|m| m.index)
                .collect(),
            Readout::Majority => {
                let maj = bundle.majority(derive_seed(self.seed, 4 * t + 3));
                let queries = keys
                    .iter()
                    .map(|key| key.bind(&maj))
                    .collect::<Result<Vec<BinaryHv>>>()?;
                memory
                    .nearest_batch(&queries)?
                    .iter()
                    .map(|m| m.index)
                    .collect()
            }
            Readout::ExplainAway(settings) => {
                cleanup::explain_away(&bundle, &keys, &memory, &settings)?
                    .matches
                    .iter()
                    .map(|m| m.index)
                    .collect()
            }
        };
        let correct = decoded.iter().zip(&values).filter(|(a, b)| a == b).count();
        Ok(Measured {
            correct: correct as u64,
            queries: k as u64,
        })
    }
}
