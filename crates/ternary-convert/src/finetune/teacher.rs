//! The teacher's next-token distributions cached as their top `k`: distillation without
//! running the teacher at every step ([`FinetuneConfig::top_k`](super::FinetuneConfig::top_k)).
//!
//! For every position `i` of every training window the cache holds the `k` tokens the teacher
//! finds most probable at temperature `τ`, `v_1 … v_k`, and their log-probabilities
//! `ℓ_j = log p_t(v_j|i)`. The rest of the vocabulary is one bucket of mass
//! `r_t = 1 − Σ_j p_t(v_j)`. Distillation against the cache uses the KL divergence between the
//! teacher's and the student's distributions collapsed onto these `k + 1` outcomes,
//!
//! `Σ_j p_t(v_j)·(ℓ_j − log p_s(v_j)) + r_t·(log r_t − log r_s)`, `r_s = 1 − Σ_j p_s(v_j)`,
//!
//! which is never negative, never more than the full divergence (merging outcomes loses
//! information), and equal to it when `k = V`.
//!
//! The cache is built once over every window of the training data ([`TeacherCache::build`]),
//! saved as safetensors (`ids` u32 and `logp` f32, `[windows, seq_len, k]`, with the format,
//! `k`, `τ`, the window length and a fingerprint of the tokens in the metadata) and reused by
//! later runs on the same data. [`TeacherCache::check_teacher`] recomputes one window to make
//! sure the cache came from the teacher at hand.

use std::path::Path;

use burn::tensor::backend::Backend;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};
use serde::{Deserialize, Serialize};
use ternary_layers::to_rows;
use ternary_models::Llama;

use super::data::Windows;
use crate::error::{ConvertError, Result};

const FORMAT: &str = "ternary-teacher-topk/1";

/// The largest cache [`TeacherCache::build`] makes, bytes (a larger one needs a smaller `k` or
/// less data).
pub const MAX_CACHE_BYTES: usize = 8 << 30;

/// How far a recomputed log-probability may be from the cached one, nats
/// ([`TeacherCache::check_teacher`]): far above float rounding between devices, far below what
/// another model gives.
pub const TEACHER_TOLERANCE: f32 = 0.02;

/// The teacher's top-`k` log-probabilities at every position of every training window.
#[derive(Debug, Clone, PartialEq)]
pub struct TeacherCache {
    k: usize,
    temperature: f64,
    seq_len: usize,
    windows: usize,
    fingerprint: u64,
    /// Token ids, `[windows, seq_len, k]`, most probable first.
    ids: Vec<u32>,
    /// Their log-probabilities at the temperature, same layout.
    logp: Vec<f32>,
}

#[derive(Serialize, Deserialize)]
struct Meta {
    k: usize,
    temperature: f64,
    seq_len: usize,
    windows: usize,
    fingerprint: String,
}

/// FNV-1a (64 bits) over the window length and every token of every window: which text, cut
/// how.
fn fingerprint(windows: &Windows) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    eat(windows.seq_len() as u64);
    for id in 0..windows.len() {
        for &t in windows.window(id) {
            eat(u64::from(t));
        }
    }
    h
}

/// The `k` largest entries of `row / τ` (ties: lower id first) and their log-probabilities
/// under `softmax(row / τ)`, computed in f64.
fn top_k(row: &[f32], k: usize, tau: f64) -> (Vec<u32>, Vec<f32>) {
    let z: Vec<f64> = row.iter().map(|&x| f64::from(x) / tau).collect();
    let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
    let mut order: Vec<u32> = (0..row.len() as u32).collect();
    let desc = |a: &u32, b: &u32| z[*b as usize].total_cmp(&z[*a as usize]).then(a.cmp(b));
    if k < order.len() {
        order.select_nth_unstable_by(k, desc);
        order.truncate(k);
    }
    order.sort_unstable_by(desc);
    let logp = order
        .iter()
        .map(|&v| (z[v as usize] - lse) as f32)
        .collect();
    (order, logp)
}

impl TeacherCache {
    /// Runs `teacher` over every window of `windows` and keeps the top `k` of its next-token
    /// distribution at temperature `temperature` per position; `progress(done, total)` after
    /// every window.
    ///
    /// # Errors
    /// `k` outside `1..=V`, a temperature that is not positive, a cache above
    /// [`MAX_CACHE_BYTES`], the teacher failing.
    pub fn build<T: Backend>(
        teacher: &Llama<T>,
        windows: &Windows,
        k: usize,
        temperature: f64,
        progress: &mut dyn FnMut(usize, usize),
    ) -> Result<Self> {
        let vocab = teacher.config().vocab_size;
        if k == 0 || k > vocab {
            return Err(ConvertError::Invalid(format!(
                "top-k {k}: give 1 to the vocabulary size ({vocab})"
            )));
        }
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(ConvertError::Invalid(format!(
                "temperature {temperature} must be positive"
            )));
        }
        let (n, seq) = (windows.len(), windows.seq_len());
        let bytes = n.saturating_mul(seq).saturating_mul(k).saturating_mul(8);
        if bytes > MAX_CACHE_BYTES {
            return Err(ConvertError::Invalid(format!(
                "a top-{k} cache of {n} windows of {seq} tokens takes {:.1} GB (at most {:.0}): \
                 lower the top-k or give less training text",
                bytes as f64 / 1e9,
                MAX_CACHE_BYTES as f64 / 1e9
            )));
        }
        let mut ids = Vec::with_capacity(n * seq * k);
        let mut logp = Vec::with_capacity(n * seq * k);
        for id in 0..n {
            let rows = window_logits(teacher, windows.window(id))?;
            for row in rows.chunks_exact(vocab) {
                let (i, l) = top_k(row, k, temperature);
                ids.extend(i);
                logp.extend(l);
            }
            progress(id + 1, n);
        }
        Ok(Self {
            k,
            temperature,
            seq_len: seq,
            windows: n,
            fingerprint: fingerprint(windows),
            ids,
            logp,
        })
    }

    /// Tokens kept per position.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The temperature `τ` of the cached distributions.
    pub fn temperature(&self) -> f64 {
        self.temperature
    }

    /// Windows covered.
    pub fn windows(&self) -> usize {
        self.windows
    }

    /// Size of the cached values, bytes.
    pub fn bytes(&self) -> usize {
        self.ids.len() * 4 + self.logp.len() * 4
    }

    /// Ids and log-probabilities of window `id`, `[seq_len, k]` row-major each.
    ///
    /// # Errors
    /// `id` out of range.
    pub fn window(&self, id: usize) -> Result<(&[u32], &[f32])> {
        if id >= self.windows {
            return Err(ConvertError::Invalid(format!(
                "window {id} is not in the teacher cache ({} windows)",
                self.windows
            )));
        }
        let span = self.seq_len * self.k;
        let r = id * span..(id + 1) * span;
        Ok((&self.ids[r.clone()], &self.logp[r]))
    }

    /// Checks that the cache was built on exactly these windows (same text, same window
    /// length).
    ///
    /// # Errors
    /// Another window length, window count or text.
    pub fn check_windows(&self, windows: &Windows) -> Result<()> {
        if self.seq_len != windows.seq_len()
            || self.windows != windows.len()
            || self.fingerprint != fingerprint(windows)
        {
            return Err(ConvertError::Invalid(format!(
                "the teacher cache was built on {} windows of {} tokens of another text (this \
                 run: {} windows of {}); build it again for this data",
                self.windows,
                self.seq_len,
                windows.len(),
                windows.seq_len()
            )));
        }
        Ok(())
    }

    /// Recomputes window `id` with `teacher` and checks every cached log-probability against
    /// it to within [`TEACHER_TOLERANCE`] nats, and that every id is inside its vocabulary.
    ///
    /// # Errors
    /// Ids beyond the vocabulary, or log-probabilities that disagree: a cache from another
    /// teacher (or temperature).
    pub fn check_teacher<T: Backend>(
        &self,
        teacher: &Llama<T>,
        windows: &Windows,
        id: usize,
    ) -> Result<()> {
        let vocab = teacher.config().vocab_size;
        if let Some(&bad) = self.ids.iter().find(|&&v| v as usize >= vocab) {
            return Err(ConvertError::Invalid(format!(
                "the teacher cache holds token {bad}, beyond the teacher's vocabulary of {vocab}"
            )));
        }
        let (ids, logp) = self.window(id)?;
        let rows = window_logits(teacher, windows.window(id))?;
        let mut worst = 0.0f32;
        for ((row, ids), logp) in rows
            .chunks_exact(vocab)
            .zip(ids.chunks_exact(self.k))
            .zip(logp.chunks_exact(self.k))
        {
            let z: Vec<f64> = row
                .iter()
                .map(|&x| f64::from(x) / self.temperature)
                .collect();
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + z.iter().map(|x| (x - max).exp()).sum::<f64>().ln();
            for (&v, &l) in ids.iter().zip(logp) {
                let d = ((z[v as usize] - lse) as f32 - l).abs();
                worst = if d.is_nan() {
                    f32::INFINITY
                } else {
                    worst.max(d)
                };
            }
        }
        if worst > TEACHER_TOLERANCE {
            return Err(ConvertError::Invalid(format!(
                "the teacher cache does not match this teacher: on window {id} a cached \
                 log-probability is {worst:.3} nats off (tolerance {TEACHER_TOLERANCE}); it was \
                 built with another model or temperature: build it again"
            )));
        }
        Ok(())
    }

    /// Writes the cache to `path` atomically (module docs for the layout).
    ///
    /// # Errors
    /// I/O.
    pub fn save(&self, path: &Path) -> Result<()> {
        let shape = vec![self.windows, self.seq_len, self.k];
        let ids: Vec<u8> = self.ids.iter().flat_map(|v| v.to_le_bytes()).collect();
        let logp: Vec<u8> = self.logp.iter().flat_map(|v| v.to_le_bytes()).collect();
        fn view<'a>(dtype: Dtype, shape: &[usize], bytes: &'a [u8]) -> Result<TensorView<'a>> {
            TensorView::new(dtype, shape.to_vec(), bytes)
                .map_err(|e| ConvertError::Invalid(format!("teacher cache: {e}")))
        }
        let meta = Meta {
            k: self.k,
            temperature: self.temperature,
            seq_len: self.seq_len,
            windows: self.windows,
            fingerprint: format!("{:016x}", self.fingerprint),
        };
        let tensors = vec![
            ("ids".to_string(), view(Dtype::U32, &shape, &ids)?),
            ("logp".to_string(), view(Dtype::F32, &shape, &logp)?),
        ];
        super::tagged::write(path, "teacher cache", FORMAT, "cache", &meta, tensors)
    }

    /// Reads a cache written by [`TeacherCache::save`].
    ///
    /// # Errors
    /// I/O, not a teacher cache, tensors of the wrong type or shape, log-probabilities that are
    /// not those of a distribution (positive, not finite, or summing past 1), a token kept twice
    /// at one position.
    pub fn load(path: &Path) -> Result<Self> {
        let bad = |m: String| ConvertError::Format(format!("{}: {m}", path.display()));
        let (bytes, meta): (Vec<u8>, Meta) =
            super::tagged::read(path, "teacher cache", FORMAT, "cache")?;
        let fingerprint = u64::from_str_radix(&meta.fingerprint, 16)
            .map_err(|e| bad(format!("fingerprint {:?}: {e}", meta.fingerprint)))?;
        if meta.k == 0 || meta.seq_len < 2 || meta.windows == 0 {
            return Err(bad(format!(
                "k {}, windows {} of {} tokens: nothing cached",
                meta.k, meta.windows, meta.seq_len
            )));
        }
        if !(meta.temperature.is_finite() && meta.temperature > 0.0) {
            return Err(bad(format!("temperature {}", meta.temperature)));
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let shape = [meta.windows, meta.seq_len, meta.k];
        let get = |name: &str, dtype: Dtype| {
            let t = st
                .tensor(name)
                .map_err(|_| bad(format!("{name} is missing")))?;
            if t.dtype() != dtype || t.shape() != shape {
                return Err(bad(format!(
                    "{name} is {:?} {:?}, expected {dtype:?} {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            Ok(t.data().to_vec())
        };
        let ids = ternary_core::io::le_u32(&get("ids", Dtype::U32)?);
        let logp = ternary_core::io::le_f32(&get("logp", Dtype::F32)?);
        for (i, row) in logp.chunks_exact(meta.k).enumerate() {
            let mass: f64 = row.iter().map(|&l| f64::from(l).exp()).sum();
            if row.iter().any(|l| !l.is_finite() || *l > 1e-4) || mass > 1.0 + 1e-3 {
                return Err(bad(format!(
                    "position {i}: cached log-probabilities are not a distribution's"
                )));
            }
        }
        let mut row = Vec::with_capacity(meta.k);
        for (i, ids) in ids.chunks_exact(meta.k).enumerate() {
            row.clear();
            row.extend_from_slice(ids);
            row.sort_unstable();
            if row.windows(2).any(|w| w[0] == w[1]) {
                return Err(bad(format!("position {i}: a token is cached twice")));
            }
        }
        Ok(Self {
            k: meta.k,
            temperature: meta.temperature,
            seq_len: meta.seq_len,
            windows: meta.windows,
            fingerprint,
            ids,
            logp,
        })
    }
}

/// The teacher's logits for one window, `[seq_len, V]` row-major on the host.
///
/// # Errors
/// The teacher failing, or logits that are not `V` wide.
fn window_logits<T: Backend>(teacher: &Llama<T>, tokens: &[u32]) -> Result<Vec<f32>> {
    let (layers, vocab) = (teacher.config().num_layers, teacher.config().vocab_size);
    let x = teacher.run_blocks(teacher.embed(tokens)?, 0..layers)?;
    let rows = to_rows(teacher.head(x))?;
    if rows.len() != tokens.len() * vocab {
        return Err(ConvertError::Invalid(format!(
            "the teacher gave {} logits for {} tokens, not {vocab} per token",
            rows.len(),
            tokens.len()
        )));
    }
    Ok(rows)
}

/// The collapsed divergence of the module docs for one window, summed over its positions, from
/// the student's log-probabilities `ls` (`[n, V]`) and the cached `ids`/`logp` (`[n, k]`).
pub(super) fn topk_kl<B: Backend>(
    ls: burn::tensor::Tensor<B, 2>,
    ids: &[u32],
    logp: &[f32],
    k: usize,
) -> burn::tensor::Tensor<B, 1> {
    use burn::tensor::{Int, Tensor, TensorData};
    let n = ids.len() / k;
    let dev = ls.device();
    let idx: Vec<i64> = ids.iter().map(|&v| i64::from(v)).collect();
    let idx = Tensor::<B, 2, Int>::from_data(TensorData::new(idx, [n, k]), &dev);
    let ls_k = ls.gather(1, idx);
    let pt: Vec<f32> = logp.iter().map(|l| l.exp()).collect();
    // r_t per position and the constant Σ r_t·log r_t.
    let mut rt = Vec::with_capacity(n);
    let mut rt_log_rt = 0.0f64;
    for row in logp.chunks_exact(k) {
        let r = (1.0 - row.iter().map(|&l| f64::from(l).exp()).sum::<f64>()).max(0.0);
        if r > 0.0 {
            rt_log_rt += r * r.ln();
        }
        rt.push(r as f32);
    }
    let lt = Tensor::<B, 2>::from_data(TensorData::new(logp.to_vec(), [n, k]), &dev);
    let pt = Tensor::<B, 2>::from_data(TensorData::new(pt, [n, k]), &dev);
    let rt = Tensor::<B, 2>::from_data(TensorData::new(rt, [n, 1]), &dev);
    let head = pt.mul(lt.sub(ls_k.clone())).sum();
    let log_rs = ls_k
        .exp()
        .sum_dim(1)
        .neg()
        .add_scalar(1.0)
        .clamp_min(1e-12)
        .log();
    let tail = rt.mul(log_rs).sum().neg().add_scalar(rt_log_rt);
    head.add(tail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ternary_core::rng::Rng;

    /// Top-k against a full sort in f64 (seed 5; rows of 1, 7, 64 and 65 with ties; k of 1,
    /// 3 and the whole row): the same ids, most probable first with lower ids first among ties,
    /// and log-probabilities within 1e-6.
    #[test]
    fn top_k_should_match_a_full_sort() {
        println!("seed 5");
        let mut rng = Rng::new(5);
        for len in [1usize, 7, 64, 65] {
            let row: Vec<f32> = (0..len)
                .map(|i| if i % 5 == 0 { 1.5 } else { rng.normal() as f32 })
                .collect();
            for k in [1, 3, len] {
                let k = k.min(len);
                let tau = 0.7;
                let (ids, logp) = top_k(&row, k, tau);
                let mut all: Vec<u32> = (0..len as u32).collect();
                all.sort_by(|&a, &b| row[b as usize].total_cmp(&row[a as usize]).then(a.cmp(&b)));
                assert_eq!(ids, all[..k], "len {len} k {k}");
                let z: Vec<f64> = row.iter().map(|&x| f64::from(x) / tau).collect();
                let lse = z.iter().map(|x| x.exp()).sum::<f64>().ln();
                for (&v, &l) in ids.iter().zip(&logp) {
                    assert!((f64::from(l) - (z[v as usize] - lse)).abs() < 1e-6);
                }
            }
        }
    }
}
