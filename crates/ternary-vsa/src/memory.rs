//! Item memory (cleanup memory): nearest neighbours of a query among `M` codebook vectors.
//!
//! Similarities are popcount dots: `D − 2·popc(a ⊕ c)` for binary, the two-plane dot for
//! ternary, and for a count-vector query (an unbound [`CountBundle`]) the bit-sliced dot of
//! [`SlicedCounts`] — all exact integers. Results are ordered by similarity, highest first, ties
//! by lower index. Large scans run on the rayon pool: one query is split over codebook chunks; a
//! batch is split over blocks of queries, each block walking the codebook once so that an entry
//! is compared with the whole block while it is in cache.

use rayon::prelude::*;

use crate::Hypervector;
use crate::bundle::CountBundle;
use crate::error::{Result, VsaError, same_dim};
use crate::sliced::SlicedCounts;
use crate::words::words_for;

/// One codebook hit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Match {
    /// Index of the codebook entry.
    pub index: usize,
    /// Its similarity with the query (an exact integer dot product).
    pub similarity: i64,
}

impl Match {
    /// `self` ranks before `other`: higher similarity, then lower index.
    #[inline]
    fn beats(&self, other: &Match) -> bool {
        self.similarity > other.similarity
            || (self.similarity == other.similarity && self.index < other.index)
    }
}

/// The best `k` matches seen so far, best first.
#[derive(Debug, Clone)]
struct TopK {
    k: usize,
    best: Vec<Match>,
}

impl TopK {
    fn new(k: usize) -> Self {
        Self {
            k,
            best: Vec::with_capacity(k.min(1024) + 1),
        }
    }

    #[inline]
    fn push(&mut self, m: Match) {
        if self.k == 0 {
            return;
        }
        if self.best.len() == self.k {
            match self.best.last() {
                Some(worst) if m.beats(worst) => {
                    self.best.pop();
                }
                _ => return,
            }
        }
        let at = self.best.partition_point(|b| b.beats(&m));
        self.best.insert(at, m);
    }

    fn merge(mut self, other: TopK) -> TopK {
        for m in other.best {
            self.push(m);
        }
        self
    }
}

/// Codebook entries per rayon task need at least this many words of work.
const MIN_TASK_WORDS: usize = 1 << 15;
/// Queries compared together against each codebook entry in a batch.
const QUERY_BLOCK: usize = 8;

/// A codebook of `M ≥ 1` hypervectors of one dimension, searched by similarity.
#[derive(Debug, Clone)]
pub struct ItemMemory<V> {
    dim: usize,
    items: Vec<V>,
    /// `Σᵢ vᵢ` per entry, for the bit-sliced dot.
    sums: Vec<i64>,
}

impl<V: Hypervector> ItemMemory<V> {
    /// A memory over `items`; errors if it is empty or the dimensions differ.
    pub fn new(items: Vec<V>) -> Result<Self> {
        let dim = items
            .first()
            .ok_or_else(|| VsaError::invalid("an item memory needs at least one item"))?
            .dim();
        for v in &items {
            same_dim(dim, v.dim())?;
        }
        let sums = items.iter().map(Hypervector::sum).collect();
        Ok(Self { dim, items, sums })
    }

    /// The dimension `D`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The number of entries `M`.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Always `false` (a memory has at least one item).
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Entry `i`.
    pub fn get(&self, i: usize) -> Option<&V> {
        self.items.get(i)
    }

    /// All entries.
    pub fn items(&self) -> &[V] {
        &self.items
    }

    /// Work in words of one full scan with `planes` passes per entry.
    fn scan_words(&self, planes: usize) -> usize {
        self.items.len() * words_for(self.dim) * planes.max(1)
    }

    /// Scans entries `range` with `score(i)` into a [`TopK`].
    fn scan_serial(
        &self,
        range: std::ops::Range<usize>,
        k: usize,
        score: &(impl Fn(usize) -> Result<i64> + Sync),
    ) -> Result<TopK> {
        let mut top = TopK::new(k);
        for index in range {
            top.push(Match {
                index,
                similarity: score(index)?,
            });
        }
        Ok(top)
    }

    /// One query: serial for small scans, else split over codebook chunks.
    fn scan(
        &self,
        k: usize,
        planes: usize,
        score: &(impl Fn(usize) -> Result<i64> + Sync),
    ) -> Result<Vec<Match>> {
        let m = self.items.len();
        let per_entry = (words_for(self.dim) * planes.max(1)).max(1);
        let chunk = MIN_TASK_WORDS.div_ceil(per_entry).max(1);
        let top =
            if rayon::current_num_threads() == 1 || self.scan_words(planes) < 2 * MIN_TASK_WORDS {
                self.scan_serial(0..m, k, score)?
            } else {
                let tasks = m.div_ceil(chunk);
                (0..tasks)
                    .into_par_iter()
                    .map(|t| self.scan_serial(t * chunk..((t + 1) * chunk).min(m), k, score))
                    .try_reduce(|| TopK::new(k), |a, b| Ok(a.merge(b)))?
            };
        Ok(top.best)
    }

    /// A batch: blocks of queries in parallel, each block walking the codebook once.
    fn scan_batch(
        &self,
        queries: usize,
        k: usize,
        score: &(impl Fn(usize, usize) -> Result<i64> + Sync),
    ) -> Result<Vec<Vec<Match>>> {
        let blocks: Vec<usize> = (0..queries.div_ceil(QUERY_BLOCK)).collect();
        let per_block = blocks
            .par_iter()
            .map(|&b| {
                let qs = b * QUERY_BLOCK..((b + 1) * QUERY_BLOCK).min(queries);
                let mut tops: Vec<TopK> = qs.clone().map(|_| TopK::new(k)).collect();
                for index in 0..self.items.len() {
                    for (top, q) in tops.iter_mut().zip(qs.clone()) {
                        top.push(Match {
                            index,
                            similarity: score(q, index)?,
                        });
                    }
                }
                Ok(tops.into_iter().map(|t| t.best).collect::<Vec<_>>())
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(per_block.into_iter().flatten().collect())
    }

    /// The `k` entries most similar to `query`, best first (fewer if `k > M`).
    pub fn top_k(&self, query: &V, k: usize) -> Result<Vec<Match>> {
        same_dim(self.dim, query.dim())?;
        self.scan(k, 1, &|i| query.dot(&self.items[i]))
    }

    /// The entry most similar to `query`.
    pub fn nearest(&self, query: &V) -> Result<Match> {
        first(self.top_k(query, 1)?)
    }

    /// [`top_k`](Self::top_k) for every query of a batch, in parallel.
    pub fn top_k_batch(&self, queries: &[V], k: usize) -> Result<Vec<Vec<Match>>> {
        for q in queries {
            same_dim(self.dim, q.dim())?;
        }
        self.scan_batch(queries.len(), k, &|q, i| queries[q].dot(&self.items[i]))
    }

    /// [`nearest`](Self::nearest) for every query of a batch, in parallel.
    pub fn nearest_batch(&self, queries: &[V]) -> Result<Vec<Match>> {
        self.top_k_batch(queries, 1)?
            .into_iter()
            .map(first)
            .collect()
    }

    /// The `k` entries with the largest `⟨C, v⟩` for a count vector `C` (for example a bundle
    /// unbound with a key), exact, by bit-sliced popcounts.
    pub fn top_k_counts(&self, query: &CountBundle, k: usize) -> Result<Vec<Match>> {
        same_dim(self.dim, query.dim())?;
        self.top_k_sliced(&query.sliced(), k)
    }

    /// The entry with the largest `⟨C, v⟩`.
    pub fn nearest_counts(&self, query: &CountBundle) -> Result<Match> {
        first(self.top_k_counts(query, 1)?)
    }

    /// [`top_k_counts`](Self::top_k_counts) for every query of a batch, in parallel.
    pub fn top_k_counts_batch(&self, queries: &[CountBundle], k: usize) -> Result<Vec<Vec<Match>>> {
        for q in queries {
            same_dim(self.dim, q.dim())?;
        }
        let sliced: Vec<SlicedCounts> = queries.par_iter().map(CountBundle::sliced).collect();
        self.top_k_sliced_batch(&sliced, k)
    }

    /// The `k` entries with the largest `⟨u, v⟩` for an already sliced (possibly key-bound)
    /// count vector `u`.
    pub fn top_k_sliced(&self, query: &SlicedCounts, k: usize) -> Result<Vec<Match>> {
        same_dim(self.dim, query.dim())?;
        self.scan(k, query.passes(), &|i| {
            self.items[i].dot_sliced(query, self.sums[i])
        })
    }

    /// [`top_k_sliced`](Self::top_k_sliced) for every query of a batch, in parallel.
    pub fn top_k_sliced_batch(
        &self,
        queries: &[SlicedCounts],
        k: usize,
    ) -> Result<Vec<Vec<Match>>> {
        for q in queries {
            same_dim(self.dim, q.dim())?;
        }
        self.scan_batch(queries.len(), k, &|q, i| {
            self.items[i].dot_sliced(&queries[q], self.sums[i])
        })
    }

    /// [`top_k_sliced`](Self::top_k_sliced) without parallelism (for callers that parallelise
    /// over queries themselves).
    pub(crate) fn top_k_sliced_serial(
        &self,
        sliced: &SlicedCounts,
        k: usize,
    ) -> Result<Vec<Match>> {
        same_dim(self.dim, sliced.dim())?;
        let top = self.scan_serial(0..self.items.len(), k, &|i| {
            self.items[i].dot_sliced(sliced, self.sums[i])
        })?;
        Ok(top.best)
    }
}

/// The first match of a non-empty result (an item memory is never empty).
fn first(matches: Vec<Match>) -> Result<Match> {
    matches
        .into_iter()
        .next()
        .ok_or_else(|| VsaError::invalid("empty item memory"))
}
