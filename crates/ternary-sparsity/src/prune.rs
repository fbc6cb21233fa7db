//! Pruning one layer to a target sparsity, on float weights (before ternarization) or on a
//! ternary matrix (after).
//!
//! Sparsity is the fraction of zero weights among all `rows · cols`; a target `s` means "at
//! least `k = ⌈s · rows · cols⌉` zeros". Weights that are already zero count towards `k`.
//!
//! - [`Pruning::Magnitude`] (unstructured): zero the non-zero weights of smallest magnitude
//!   until `k` are zero. Floats rank by `|w|`; ternary weights by `|w|` of the float weights
//!   they came from when given, else by their own magnitude `|s[r, g]|`.
//! - [`Pruning::Chunks`] (structured): zero whole 32-column chunks (one plane word of a row),
//!   smallest score first, until at least `k` weights are zero. The score of a chunk is
//!   `Σ|w|` over it (floats; for ternary the float weights at its non-zero trits when given,
//!   else `Σ_{t ≠ 0} |s[r, g]|`, i.e. its non-zero count weighted by scale). The result
//!   empties whole bitmap chunks, which the skip kernels never visit.
//! - [`Pruning::NOfM`] (structured, e.g. 2:4): in every run of `m` consecutive columns of a
//!   row (starting at column 0; the last run may be shorter) keep the `n` weights of largest
//!   magnitude and zero the rest: sparsity `≥ 1 − n/m`.
//!
//! Ties are broken deterministically: floats by position (the earlier weight is pruned
//! first), ternary weights without float weights by a hash of the position (so equal
//! magnitudes are pruned in a scattered, reproducible order rather than left to right).
//!
//! [`prune_then_quantize`] is the "before ternarization" pipeline: prune the floats, then
//! quantize with any `ternary_core::quant` rule (which may zero more weights).

use ternary_core::quant::{self, QuantConfig, QuantStats};
use ternary_core::{Result, Scales, TernaryError, TernaryMatrix, words_per_row};

/// Columns per chunk (one plane word).
pub const CHUNK: usize = 32;

/// A pruning rule and its target. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pruning {
    /// Unstructured magnitude pruning to at least `sparsity` zeros.
    Magnitude {
        /// Target fraction of zero weights, in `[0, 1]`.
        sparsity: f64,
    },
    /// Whole 32-column chunks, lowest score first, to at least `sparsity` zeros.
    Chunks {
        /// Target fraction of zero weights, in `[0, 1]`.
        sparsity: f64,
    },
    /// Keep the `n` largest of every `m` consecutive weights of a row.
    NOfM {
        /// Weights kept per run (`n ≤ m`).
        n: usize,
        /// Run length (`m ≥ 1`).
        m: usize,
    },
}

impl Pruning {
    /// Checks the parameters.
    pub fn validate(&self) -> Result<()> {
        match *self {
            Self::Magnitude { sparsity } | Self::Chunks { sparsity }
                if !(0.0..=1.0).contains(&sparsity) =>
            {
                Err(TernaryError::Config(format!(
                    "target sparsity must lie in [0, 1], got {sparsity}"
                )))
            }
            Self::NOfM { n, m } if m == 0 || n > m => Err(TernaryError::Config(format!(
                "N:M pruning needs 1 <= m and n <= m, got {n}:{m}"
            ))),
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Pruning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Self::Magnitude { sparsity } => write!(f, "magnitude {:.1}%", 100.0 * sparsity),
            Self::Chunks { sparsity } => write!(f, "chunks {:.1}%", 100.0 * sparsity),
            Self::NOfM { n, m } => write!(f, "{n}:{m}"),
        }
    }
}

/// Zero counts before and after pruning one layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PruneStats {
    /// Weights in the layer (`rows · cols`).
    pub weights: usize,
    /// Zero weights before pruning.
    pub zeros_before: usize,
    /// Zero weights after pruning.
    pub zeros_after: usize,
}

impl PruneStats {
    /// Fraction of zeros after pruning (`0` without weights).
    pub fn sparsity(&self) -> f64 {
        if self.weights == 0 {
            0.0
        } else {
            self.zeros_after as f64 / self.weights as f64
        }
    }
}

fn target_zeros(sparsity: f64, total: usize) -> usize {
    ((sparsity * total as f64).ceil() as usize).min(total)
}

fn check_len(what: &str, len: usize, rows: usize, cols: usize) -> Result<()> {
    if rows.checked_mul(cols) != Some(len) {
        return Err(TernaryError::Shape(format!(
            "{what}: a {rows}x{cols} layer needs {} values, got {len}",
            rows.saturating_mul(cols)
        )));
    }
    Ok(())
}

fn check_finite(what: &'static str, w: &[f32]) -> Result<()> {
    match w.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(TernaryError::NonFinite {
            what,
            index,
            value: w[index],
        }),
        None => Ok(()),
    }
}

fn check_indexable(total: usize) -> Result<()> {
    if u32::try_from(total).is_err() {
        return Err(TernaryError::Shape(format!(
            "a layer of {total} weights is too large to prune (limit 2^32)"
        )));
    }
    Ok(())
}

/// The deterministic tie-break of positions: the first SplitMix64 output for seed `i`.
#[inline]
fn mix(i: u64) -> u64 {
    ternary_core::rng::mix64(i.wrapping_add(ternary_core::rng::GOLDEN))
}

/// Reorders `cands` so that its first `count` entries are the `count` smallest by `key`
/// (a total order: magnitude, then tie-break).
fn select_smallest<K: Fn(u32) -> (f64, u64)>(cands: &mut [u32], count: usize, key: K) {
    if count == 0 || count >= cands.len() {
        return;
    }
    cands.select_nth_unstable_by(count - 1, |&a, &b| {
        let (ka, kb) = (key(a), key(b));
        ka.0.total_cmp(&kb.0).then(ka.1.cmp(&kb.1))
    });
}

// ---------------------------------------------------------------------------------------------
// Float weights
// ---------------------------------------------------------------------------------------------

/// Prunes float weights `w` (`rows × cols`, row-major, finite) in place.
pub fn prune_f32(w: &mut [f32], rows: usize, cols: usize, rule: Pruning) -> Result<PruneStats> {
    rule.validate()?;
    check_len("weights", w.len(), rows, cols)?;
    check_finite("weights", w)?;
    check_indexable(w.len())?;
    let zeros_before = w.iter().filter(|&&v| v == 0.0).count();
    match rule {
        Pruning::Magnitude { sparsity } => {
            let k = target_zeros(sparsity, w.len());
            if k > zeros_before {
                let mut cands: Vec<u32> = (0..w.len() as u32)
                    .filter(|&i| w[i as usize] != 0.0)
                    .collect();
                let count = k - zeros_before;
                select_smallest(&mut cands, count, |i| {
                    (f64::from(w[i as usize].abs()), u64::from(i))
                });
                for &i in &cands[..count] {
                    w[i as usize] = 0.0;
                }
            }
        }
        Pruning::Chunks { sparsity } => {
            let k = target_zeros(sparsity, w.len());
            let per_row = cols.div_ceil(CHUNK);
            let chunk_cols = |id: usize| {
                let (r, q) = (id / per_row, id % per_row);
                r * cols + q * CHUNK..r * cols + ((q + 1) * CHUNK).min(cols)
            };
            let scored: Vec<(f64, usize, usize)> = (0..rows * per_row)
                .filter_map(|id| {
                    let c = &w[chunk_cols(id)];
                    let nz = c.iter().filter(|&&v| v != 0.0).count();
                    (nz > 0).then(|| (c.iter().map(|v| f64::from(v.abs())).sum(), id, nz))
                })
                .collect();
            zero_chunks(scored, k, zeros_before, |id| w[chunk_cols(id)].fill(0.0));
        }
        Pruning::NOfM { n, m } => {
            for row in w.chunks_exact_mut(cols.max(1)).take(rows) {
                for run in row.chunks_mut(m) {
                    keep_largest(run, n);
                }
            }
        }
    }
    let zeros_after = w.iter().filter(|&&v| v == 0.0).count();
    Ok(PruneStats {
        weights: w.len(),
        zeros_before,
        zeros_after,
    })
}

/// Sorts chunk candidates `(score, id, nnz)` by score (then id) and calls `zero(id)` on the
/// lowest until `zeros ≥ k`.
fn zero_chunks(
    mut scored: Vec<(f64, usize, usize)>,
    k: usize,
    mut zeros: usize,
    mut zero: impl FnMut(usize),
) {
    if zeros >= k {
        return;
    }
    scored.sort_unstable_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    for (_, id, nz) in scored {
        if zeros >= k {
            break;
        }
        zero(id);
        zeros += nz;
    }
}

/// Zeroes all but the `n` largest `|v|` of `run` (ties: the later position is zeroed).
fn keep_largest(run: &mut [f32], n: usize) {
    if n >= run.len() {
        return;
    }
    let mut order: Vec<usize> = (0..run.len()).collect();
    order.sort_by(|&a, &b| run[b].abs().total_cmp(&run[a].abs()).then(a.cmp(&b)));
    for &i in &order[n..] {
        run[i] = 0.0;
    }
}

/// Prunes `w` (`rows × cols`) with `rule`, then quantizes it with `cfg`: the "before
/// ternarization" pipeline. Returns the matrix, the pruning statistics (of the floats) and
/// the quantization statistics against the *unpruned* weights.
pub fn prune_then_quantize(
    w: &[f32],
    rows: usize,
    cols: usize,
    rule: Pruning,
    cfg: &QuantConfig,
) -> Result<(TernaryMatrix, PruneStats, QuantStats)> {
    let mut pruned = w.to_vec();
    let stats = prune_f32(&mut pruned, rows, cols, rule)?;
    let (m, _) = quant::quantize(&pruned, rows, cols, cfg)?;
    let q = QuantStats::measure(w, &m)?;
    Ok((m, stats, q))
}

// ---------------------------------------------------------------------------------------------
// Ternary matrices
// ---------------------------------------------------------------------------------------------

/// Prunes a ternary matrix in place. `weights` are the float weights it was quantized from
/// (`rows × cols`), used to rank its non-zero trits; without them trits rank by their scale
/// magnitude `|s[r, g]|` with hashed tie-breaks (see the [module docs](self)).
pub fn prune_ternary(
    m: &mut TernaryMatrix,
    weights: Option<&[f32]>,
    rule: Pruning,
) -> Result<PruneStats> {
    rule.validate()?;
    let (rows, cols) = (m.rows(), m.cols());
    let total = rows * cols;
    if let Some(w) = weights {
        check_len("float weights", w.len(), rows, cols)?;
        check_finite("float weights", w)?;
    }
    check_indexable(total)?;
    let zeros_before = total - m.nnz();
    let wpr = words_per_row(cols);
    let placeholder = TernaryMatrix::zeros(0, 0, Scales::per_row(Vec::new()))?;
    let (mut plus, mut minus, scales) = std::mem::replace(m, placeholder).into_parts();
    let layout = scales.layout();
    let groups = layout.groups_per_row(cols);
    let glen = layout.group_len(cols).max(1);
    // Magnitude of the non-zero trit at flat position i = r · cols + c, and its tie-break.
    let magnitude = |i: usize| -> (f64, u64) {
        match weights {
            Some(w) => (f64::from(w[i].abs()), i as u64),
            None => {
                let (r, c) = (i / cols, i % cols);
                (
                    f64::from(scales.values()[r * groups + c / glen].abs()),
                    mix(i as u64),
                )
            }
        }
    };
    let is_nonzero = |plus: &[u32], minus: &[u32], r: usize, c: usize| {
        (plus[r * wpr + c / 32] | minus[r * wpr + c / 32]) >> (c % 32) & 1 != 0
    };
    let clear = |plus: &mut [u32], minus: &mut [u32], r: usize, c: usize| {
        let bit = !(1u32 << (c % 32));
        plus[r * wpr + c / 32] &= bit;
        minus[r * wpr + c / 32] &= bit;
    };
    match rule {
        Pruning::Magnitude { sparsity } => {
            let k = target_zeros(sparsity, total);
            if k > zeros_before {
                let mut cands = Vec::with_capacity(total - zeros_before);
                for r in 0..rows {
                    for w in 0..wpr {
                        let mut bits = plus[r * wpr + w] | minus[r * wpr + w];
                        while bits != 0 {
                            let c = 32 * w + bits.trailing_zeros() as usize;
                            bits &= bits - 1;
                            // total < 2³² was checked.
                            cands.push((r * cols + c) as u32);
                        }
                    }
                }
                let count = k - zeros_before;
                select_smallest(&mut cands, count, |i| magnitude(i as usize));
                for &i in &cands[..count] {
                    let i = i as usize;
                    clear(&mut plus, &mut minus, i / cols, i % cols);
                }
            }
        }
        Pruning::Chunks { sparsity } => {
            let k = target_zeros(sparsity, total);
            let per_row = cols.div_ceil(CHUNK);
            let scored: Vec<(f64, usize, usize)> = (0..rows * per_row)
                .filter_map(|id| {
                    let (r, q) = (id / per_row, id % per_row);
                    let bits = plus[r * wpr + q] | minus[r * wpr + q];
                    (bits != 0).then(|| {
                        let mut score = 0f64;
                        let mut b = bits;
                        while b != 0 {
                            let c = 32 * q + b.trailing_zeros() as usize;
                            b &= b - 1;
                            score += magnitude(r * cols + c).0;
                        }
                        (score, id, bits.count_ones() as usize)
                    })
                })
                .collect();
            zero_chunks(scored, k, zeros_before, |id| {
                let (r, q) = (id / per_row, id % per_row);
                plus[r * wpr + q] = 0;
                minus[r * wpr + q] = 0;
            });
        }
        Pruning::NOfM { n, m: run } => {
            for r in 0..rows {
                for start in (0..cols).step_by(run) {
                    let end = (start + run).min(cols);
                    let mut nz: Vec<usize> = (start..end)
                        .filter(|&c| is_nonzero(&plus, &minus, r, c))
                        .collect();
                    if nz.len() <= n {
                        continue;
                    }
                    // Largest magnitude first; ties by tie-break (earliest/lowest hash kept).
                    nz.sort_by(|&a, &b| {
                        let (ka, kb) = (magnitude(r * cols + a), magnitude(r * cols + b));
                        kb.0.total_cmp(&ka.0).then(ka.1.cmp(&kb.1))
                    });
                    for &c in &nz[n..] {
                        clear(&mut plus, &mut minus, r, c);
                    }
                }
            }
        }
    }
    *m = TernaryMatrix::from_planes(rows, cols, plus, minus, scales)?;
    Ok(PruneStats {
        weights: total,
        zeros_before,
        zeros_after: total - m.nnz(),
    })
}
