//! Training windows: the token stream of local text files cut into windows of `seq_len`
//! tokens, visited in a seeded order that is reshuffled every epoch.

use std::sync::Arc;

use ternary_core::rng::Rng;

use super::teacher::TeacherCache;
use crate::error::{ConvertError, Result};

/// Non-overlapping windows of a token stream and their order.
#[derive(Debug, Clone)]
pub struct Windows {
    tokens: Vec<u32>,
    seq_len: usize,
    seed: u64,
    /// The teacher's cached top-k distributions over these windows, if attached.
    teacher: Option<Arc<TeacherCache>>,
}

impl Windows {
    /// Windows of `seq_len` tokens over `tokens` (the rest after the last whole window is
    /// dropped).
    ///
    /// # Errors
    /// `seq_len < 2`, or fewer tokens than one window.
    pub fn new(tokens: Vec<u32>, seq_len: usize, seed: u64) -> Result<Self> {
        if seq_len < 2 {
            return Err(ConvertError::Invalid(format!(
                "a training window needs at least 2 tokens, got {seq_len}"
            )));
        }
        if tokens.len() < seq_len {
            return Err(ConvertError::Invalid(format!(
                "the training data has {} tokens, fewer than one window of {seq_len}; give more \
                 text or a shorter --seq-len",
                tokens.len()
            )));
        }
        Ok(Self {
            tokens,
            seq_len,
            seed,
            teacher: None,
        })
    }

    /// These windows with the teacher's cached distributions over them attached (what
    /// distillation with [`FinetuneConfig::top_k`](super::FinetuneConfig::top_k) reads).
    ///
    /// # Errors
    /// A cache built on other windows ([`TeacherCache::check_windows`]).
    pub fn with_teacher_cache(mut self, cache: TeacherCache) -> Result<Self> {
        cache.check_windows(&self)?;
        self.teacher = Some(Arc::new(cache));
        Ok(self)
    }

    /// The attached teacher cache.
    pub fn teacher_cache(&self) -> Option<&TeacherCache> {
        self.teacher.as_deref()
    }

    /// Number of windows.
    pub fn len(&self) -> usize {
        self.tokens.len() / self.seq_len
    }

    /// Always false (a window set is never empty).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Tokens per window.
    pub fn seq_len(&self) -> usize {
        self.seq_len
    }

    /// The id of the `k`-th window visited: epoch `k / len` visits every window once, in the
    /// order of a shuffle seeded by `(seed, epoch)`.
    pub fn index(&self, k: usize) -> usize {
        let n = self.len();
        let (epoch, i) = (k / n, k % n);
        let mut order: Vec<usize> = (0..n).collect();
        let mut rng = Rng::stream(self.seed, epoch as u64);
        rng.shuffle(&mut order);
        order[i]
    }

    /// Window `id` (`id < len`).
    pub fn window(&self, id: usize) -> &[u32] {
        &self.tokens[id * self.seq_len..(id + 1) * self.seq_len]
    }

    /// The `k`-th window visited ([`Windows::index`]).
    pub fn get(&self, k: usize) -> &[u32] {
        self.window(self.index(k))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_epoch_should_visit_each_window_once() {
        let w = Windows::new((0..100).collect(), 10, 7).expect("windows");
        assert_eq!(w.len(), 10);
        for epoch in 0..3 {
            let mut firsts: Vec<u32> = (0..10).map(|i| w.get(epoch * 10 + i)[0]).collect();
            firsts.sort_unstable();
            assert_eq!(firsts, (0..10).map(|i| i * 10).collect::<Vec<_>>());
        }
        assert!(Windows::new(vec![1, 2, 3], 4, 0).is_err());
        assert!(Windows::new(vec![1, 2, 3], 1, 0).is_err());
    }
}
