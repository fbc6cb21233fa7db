//! Decoding bundles: one-shot unbind + nearest neighbour, and iterative cleanup (explaining
//! away), which decodes the most confident items first and removes their votes from the count
//! bundle so that the remaining items are decoded against less crosstalk.
//!
//! For a key–value bundle `S = Σⱼ bind(kⱼ, vⱼ)`, query `q` is decoded from
//! `u_q = bind(k_q, R)` against the codebook, where `R` is the residual bundle. Iterative
//! cleanup ([`explain_away`]) runs:
//!
//! 1. **Successive cancellation.** Score every undecided query against `R`; accept the
//!    `⌈f·n⌉` with the largest margin (best − second-best similarity); subtract
//!    `bind(k_q, v̂_q)` from `R` for each; repeat until every query is decided.
//! 2. **Refinement sweeps.** With all estimates subtracted, re-decode every query from
//!    `bind(k_q, R + bind(k_q, v̂_q))` (the residual with only its own estimate put back); apply
//!    the changes; repeat until nothing changes or the sweep budget is spent.
//!
//! Each accepted correct item removes one unit of noise variance `D` from every other query,
//! so the bundle decodes well past the one-shot capacity (`docs/vsa.md`).

use rayon::prelude::*;

use crate::Hypervector;
use crate::bundle::CountBundle;
use crate::error::{Result, VsaError, same_dim};
use crate::memory::{ItemMemory, Match};
use crate::sliced::SlicedCounts;

/// Settings of [`explain_away`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ExplainAway {
    /// Fraction of the undecided queries accepted per round (`0 < f ≤ 1`; at least one query
    /// per round). Smaller is more accurate and slower (about `1/f` scorings per query).
    pub accept_fraction: f64,
    /// Maximum number of refinement sweeps after all queries are decided.
    pub refine_sweeps: usize,
}

impl Default for ExplainAway {
    /// `accept_fraction = 0.1`, `refine_sweeps = 4`.
    fn default() -> Self {
        Self {
            accept_fraction: 0.1,
            refine_sweeps: 4,
        }
    }
}

/// The result of [`explain_away`].
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    /// The decoded codebook entry for each key, in key order (the similarity is that of the
    /// last scoring of the query).
    pub matches: Vec<Match>,
    /// Successive-cancellation rounds run.
    pub rounds: usize,
    /// Refinement sweeps run.
    pub sweeps: usize,
    /// Estimates changed by the refinement sweeps (in total).
    pub changed: usize,
}

fn check_keys<V: Hypervector>(
    bundle: &CountBundle,
    keys: &[V],
    memory: &ItemMemory<V>,
) -> Result<()> {
    same_dim(memory.dim(), bundle.dim())?;
    for k in keys {
        same_dim(memory.dim(), k.dim())?;
    }
    Ok(())
}

/// One-shot decoding: for each key, the nearest codebook entry to `bind(key, S)` (parallel over
/// keys).
pub fn unbind_nearest<V: Hypervector>(
    bundle: &CountBundle,
    keys: &[V],
    memory: &ItemMemory<V>,
) -> Result<Vec<Match>> {
    check_keys(bundle, keys, memory)?;
    let sliced = bundle.sliced();
    keys.par_iter()
        .map(|k| {
            let u = k.unbind_query(bundle, &sliced)?;
            let top = memory.top_k_sliced_serial(&u, 1)?;
            top.into_iter()
                .next()
                .ok_or_else(|| VsaError::invalid("empty item memory"))
        })
        .collect()
}

/// Scores query `key` against residual `r` (sliced: `sliced`): the best two matches.
fn top2<V: Hypervector>(
    r: &CountBundle,
    sliced: &SlicedCounts,
    key: &V,
    memory: &ItemMemory<V>,
) -> Result<Vec<Match>> {
    let u = key.unbind_query(r, sliced)?;
    memory.top_k_sliced_serial(&u, 2)
}

/// Iterative cleanup of a key–value count bundle `S = Σⱼ bind(kⱼ, vⱼ)` (see the module docs).
/// Returns one decoded codebook entry per key.
pub fn explain_away<V: Hypervector>(
    bundle: &CountBundle,
    keys: &[V],
    memory: &ItemMemory<V>,
    settings: &ExplainAway,
) -> Result<Decoded> {
    check_keys(bundle, keys, memory)?;
    let f = settings.accept_fraction;
    if !(f > 0.0 && f <= 1.0) {
        return Err(VsaError::invalid(format!(
            "accept_fraction must be in (0, 1], got {f}"
        )));
    }
    let mut residual = bundle.clone();
    residual.set_limit(None);
    let none = Match {
        index: usize::MAX,
        similarity: i64::MIN,
    };
    let mut est = vec![none; keys.len()];
    let mut undecided: Vec<usize> = (0..keys.len()).collect();
    let mut rounds = 0;
    let value = |m: &Match| -> Result<&V> {
        memory
            .get(m.index)
            .ok_or_else(|| VsaError::invalid("decoded index outside the item memory"))
    };

    while !undecided.is_empty() {
        rounds += 1;
        let sliced = residual.sliced();
        let mut scored: Vec<(usize, Match, i64)> = undecided
            .par_iter()
            .map(|&q| {
                let top = top2(&residual, &sliced, &keys[q], memory)?;
                let best = *top
                    .first()
                    .ok_or_else(|| VsaError::invalid("empty item memory"))?;
                let margin = match top.get(1) {
                    Some(second) => best.similarity - second.similarity,
                    None => i64::MAX,
                };
                Ok((q, best, margin))
            })
            .collect::<Result<_>>()?;
        scored.sort_by(|a, b| b.2.cmp(&a.2).then(a.0.cmp(&b.0)));
        let accept = ((f * scored.len() as f64).ceil() as usize).clamp(1, scored.len());
        for &(q, best, _) in &scored[..accept] {
            est[q] = best;
            let _ = residual.subtract(&keys[q].bind(value(&best)?)?)?;
        }
        undecided = scored[accept..].iter().map(|s| s.0).collect();
        undecided.sort_unstable();
    }

    let (mut sweeps, mut changed) = (0, 0);
    while sweeps < settings.refine_sweeps {
        sweeps += 1;
        let changes: Vec<(usize, Match)> = (0..keys.len())
            .into_par_iter()
            .map(|q| {
                let mut own = residual.clone();
                let _ = own.add(&keys[q].bind(value(&est[q])?)?)?;
                let u = own.bind(&keys[q])?;
                let top = memory.top_k_sliced_serial(&u.sliced(), 1)?;
                let best = *top
                    .first()
                    .ok_or_else(|| VsaError::invalid("empty item memory"))?;
                Ok((best.index != est[q].index).then_some((q, best)))
            })
            .filter_map(Result::transpose)
            .collect::<Result<_>>()?;
        if changes.is_empty() {
            break;
        }
        changed += changes.len();
        for (q, best) in changes {
            let _ = residual.add(&keys[q].bind(value(&est[q])?)?)?;
            let _ = residual.subtract(&keys[q].bind(value(&best)?)?)?;
            est[q] = best;
        }
    }
    Ok(Decoded {
        matches: est,
        rounds,
        sweeps,
        changed,
    })
}

/// Greedy decoding of a plain bundle of codebook items `S = Σⱼ v_{iⱼ}`: `count` times, take the
/// entry most similar to the residual and subtract it. Returns the entries in the order found.
pub fn decode_set<V: Hypervector>(
    bundle: &CountBundle,
    memory: &ItemMemory<V>,
    count: usize,
) -> Result<Vec<Match>> {
    same_dim(memory.dim(), bundle.dim())?;
    let mut residual = bundle.clone();
    residual.set_limit(None);
    let mut found = Vec::with_capacity(count);
    for _ in 0..count {
        let best = memory.nearest_counts(&residual)?;
        let v = memory
            .get(best.index)
            .ok_or_else(|| VsaError::invalid("decoded index outside the item memory"))?;
        let _ = residual.subtract(v)?;
        found.push(best);
    }
    Ok(found)
}
