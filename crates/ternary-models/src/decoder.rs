//! The seam between text-level loops (generation, perplexity) and the engine that runs the
//! model: a [`Decoder`] keeps its own KV cache and returns logits on the host.
//!
//! [`BurnDecoder`] wraps the Burn [`Llama`] (the portable reference); `ternary-runtime`'s CPU
//! runtime implements the same trait, so [`generate_with`](crate::generate_with) and
//! [`perplexity_with`](crate::perplexity_with) run unchanged on either.

use crate::error::Result;
use crate::model::{KvCache, Llama, Logits};
use burn::tensor::backend::Backend;
use ternary_layers::to_rows;

/// A causal language model with its own cache of earlier positions.
pub trait Decoder {
    /// Logits per position (the vocabulary size `V`).
    fn vocab_size(&self) -> usize;
    /// Positions cached so far.
    fn position(&self) -> usize;
    /// Forgets every cached position.
    fn clear(&mut self);
    /// Runs `tokens` after the cached positions, appends them to the cache and returns the
    /// logits, `[tokens or 1, V]` row-major ([`Logits`]). Bad input (no tokens, an id outside
    /// the vocabulary, a context overflow) is an error.
    fn forward(&mut self, tokens: &[u32], which: Logits) -> Result<&[f32]>;
}

/// A model a decoder borrows or owns.
#[derive(Debug)]
enum Held<'m, B: Backend> {
    Borrowed(&'m Llama<B>),
    Owned(Box<Llama<B>>),
}

impl<B: Backend> std::ops::Deref for Held<'_, B> {
    type Target = Llama<B>;

    fn deref(&self) -> &Llama<B> {
        match self {
            Self::Borrowed(m) => m,
            Self::Owned(m) => m,
        }
    }
}

/// The Burn model as a [`Decoder`]: [`Llama::forward`] with a [`KvCache`].
#[derive(Debug)]
pub struct BurnDecoder<'m, B: Backend> {
    model: Held<'m, B>,
    cache: KvCache<B>,
    logits: Vec<f32>,
}

impl<B: Backend> BurnDecoder<'static, B> {
    /// A decoder that owns `model` (for callers that hand the model over).
    pub fn owning(model: Llama<B>) -> Self {
        Self {
            cache: model.new_cache(),
            model: Held::Owned(Box::new(model)),
            logits: Vec::new(),
        }
    }
}

impl<'m, B: Backend> BurnDecoder<'m, B> {
    /// A decoder on `model` with an empty cache.
    pub fn new(model: &'m Llama<B>) -> Self {
        Self {
            model: Held::Borrowed(model),
            cache: model.new_cache(),
            logits: Vec::new(),
        }
    }
}

impl<B: Backend> Decoder for BurnDecoder<'_, B> {
    fn vocab_size(&self) -> usize {
        self.model.config().vocab_size
    }

    fn position(&self) -> usize {
        self.cache.len()
    }

    fn clear(&mut self) {
        self.cache.clear();
    }

    fn forward(&mut self, tokens: &[u32], which: Logits) -> Result<&[f32]> {
        self.logits = to_rows(self.model.forward(tokens, &mut self.cache, which)?)?;
        Ok(&self.logits)
    }
}
