//! Calibration: per-layer input statistics from running the float model on sample text.
//!
//! Every linear layer of the model is wrapped, for the duration of [`calibrate`], in a
//! recording [`LinearLayer`] that passes its input through unchanged and accumulates, over all
//! calibration tokens `x ∈ ℝ^cols` it sees,
//!
//! - `Σ x_j²` and `Σ |x_j|` per input channel `j` (so `E[x_j²]`, `E[|x_j|]`), and
//! - the (unnormalized) Hessian of the layer-wise output error, `H = Σ x xᵀ` (`cols × cols`).
//!
//! Precision: each chunk's `Σ xxᵀ` is one `f32` matmul on the backend (`Xᵀ·X` over at most
//! `ctx` tokens); the chunks' products, and every per-channel sum, are accumulated in `f64`.
//!
//! Layers reading the same input share one record: `q_proj`, `k_proj`, `v_proj` read the
//! attention norm's output, `gate_proj` and `up_proj` the MLP norm's output (see
//! [`input_key`]). After the pass the original layers are restored exactly (the same boxes).

use crate::error::{ConvertError, Result};
use burn::tensor::{Tensor, backend::Backend};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use ternary_layers::{Linear, LinearLayer};
use ternary_models::{Llama, Logits};

/// Accumulated statistics of one layer input over `tokens` calibration tokens.
#[derive(Debug, Clone, PartialEq)]
pub struct InputStats {
    /// Input width.
    pub cols: usize,
    /// Tokens seen.
    pub tokens: usize,
    /// `Σ x_j²` per channel (`cols` values).
    pub sum_sq: Vec<f64>,
    /// `Σ |x_j|` per channel (`cols` values).
    pub sum_abs: Vec<f64>,
    /// `H = Σ x xᵀ`, row-major `cols × cols`.
    pub hessian: Vec<f64>,
}

impl InputStats {
    /// Empty statistics for an input of `cols` channels.
    pub fn new(cols: usize) -> Self {
        Self {
            cols,
            tokens: 0,
            sum_sq: vec![0.0; cols],
            sum_abs: vec![0.0; cols],
            hessian: vec![0.0; cols * cols],
        }
    }

    /// Adds the rows of `x` (`n × cols`, row-major) and their Gram matrix `g = XᵀX`
    /// (`cols × cols`, computed by the caller, e.g. on the backend).
    pub fn add(&mut self, x: &[f32], n: usize, g: &[f32]) -> Result<()> {
        if x.len() != n * self.cols || g.len() != self.cols * self.cols {
            return Err(ConvertError::Shape(format!(
                "calibration statistics of width {}: got {} inputs for {n} tokens and a \
                 {}-value Gram matrix",
                self.cols,
                x.len(),
                g.len()
            )));
        }
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(ConvertError::Invalid(format!(
                "calibration activation {i} is not finite ({})",
                x[i]
            )));
        }
        for row in x.chunks_exact(self.cols.max(1)) {
            for ((s, a), &v) in self.sum_sq.iter_mut().zip(&mut self.sum_abs).zip(row) {
                let v = f64::from(v);
                *s += v * v;
                *a += v.abs();
            }
        }
        for (h, &v) in self.hessian.iter_mut().zip(g) {
            *h += f64::from(v);
        }
        self.tokens += n;
        Ok(())
    }

    /// `E[x_j²]` per channel (zeros before any token).
    pub fn mean_sq(&self) -> Vec<f32> {
        let n = self.tokens.max(1) as f64;
        self.sum_sq.iter().map(|&s| (s / n) as f32).collect()
    }

    /// `E[|x_j|]` per channel (zeros before any token).
    pub fn mean_abs(&self) -> Vec<f32> {
        let n = self.tokens.max(1) as f64;
        self.sum_abs.iter().map(|&s| (s / n) as f32).collect()
    }

    /// `H / tokens = E[x xᵀ]`, row-major `cols × cols` in `f64`.
    pub fn hessian_mean(&self) -> Vec<f64> {
        let n = self.tokens.max(1) as f64;
        self.hessian.iter().map(|&h| h / n).collect()
    }
}

/// The statistics of every linear layer of a model, by layer name.
#[derive(Debug, Clone, Default)]
pub struct Calibration {
    /// Calibration tokens run through the model.
    pub tokens: usize,
    by_input: BTreeMap<String, Arc<InputStats>>,
}

impl Calibration {
    /// The statistics of layer `name`'s input (shared with the layers reading the same input).
    pub fn get(&self, name: &str) -> Option<&InputStats> {
        self.by_input.get(&input_key(name)).map(Arc::as_ref)
    }

    /// Number of distinct inputs recorded.
    pub fn inputs(&self) -> usize {
        self.by_input.len()
    }
}

/// The key of the input that layer `name` reads: `k_proj`/`v_proj` map to their block's
/// `q_proj`, `up_proj` to its `gate_proj`; every other layer is its own key.
pub fn input_key(name: &str) -> String {
    for (from, to) in [
        ("self_attn.k_proj", "self_attn.q_proj"),
        ("self_attn.v_proj", "self_attn.q_proj"),
        ("mlp.up_proj", "mlp.gate_proj"),
    ] {
        if let Some(prefix) = name.strip_suffix(from) {
            return format!("{prefix}{to}");
        }
    }
    name.to_string()
}

/// What a recorder has accumulated, or the first error it hit.
#[derive(Debug)]
struct Sink {
    stats: InputStats,
    error: Option<ConvertError>,
}

/// A layer that records its input into `sink` (when it owns the record) and forwards it.
#[derive(Debug)]
struct Recorder<B: Backend> {
    inner: Arc<Linear<B>>,
    sink: Option<Arc<Mutex<Sink>>>,
}

impl<B: Backend> Recorder<B> {
    fn record(sink: &Mutex<Sink>, x: &Tensor<B, 2>) {
        let Ok(mut s) = sink.lock() else { return };
        if s.error.is_some() {
            return;
        }
        let [n, _] = x.dims();
        let gram = x.clone().transpose().matmul(x.clone());
        let rows = (
            ternary_layers::to_rows(x.clone()),
            ternary_layers::to_rows(gram),
        );
        let res = match rows {
            (Ok(xs), Ok(g)) => s.stats.add(&xs, n, &g),
            (Err(e), _) | (_, Err(e)) => Err(e.into()),
        };
        if let Err(e) = res {
            s.error = Some(e);
        }
    }
}

impl<B: Backend> LinearLayer<B> for Recorder<B> {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        if let Some(sink) = &self.sink {
            Self::record(sink, &x);
        }
        self.inner.forward(x)
    }
    fn in_features(&self) -> usize {
        self.inner.in_features()
    }
    fn out_features(&self) -> usize {
        self.inner.out_features()
    }
    fn weight(&self) -> Tensor<B, 2> {
        self.inner.weight()
    }
    fn kind(&self) -> String {
        self.inner.kind()
    }
}

/// A placeholder occupying a layer's slot while its box sits inside a [`Recorder`].
#[derive(Debug)]
struct Vacant;

impl<B: Backend> LinearLayer<B> for Vacant {
    fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        x
    }
    fn in_features(&self) -> usize {
        0
    }
    fn out_features(&self) -> usize {
        0
    }
    fn weight(&self) -> Tensor<B, 2> {
        Tensor::zeros([0, 0], &Default::default())
    }
    fn kind(&self) -> String {
        "vacant".into()
    }
}

/// Runs the model on `tokens` in consecutive chunks of `ctx` tokens (at most `max_chunks`;
/// a shorter tail chunk is run too when it holds at least 2 tokens), each from an empty cache
/// with its first token replaced by `bos` when given (as perplexity does), and records every
/// linear layer's input statistics. `on_chunk(done, total)` is called after each chunk.
/// The model's layers are restored before returning, also on error.
pub fn calibrate<B: Backend>(
    model: &mut Llama<B>,
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    max_chunks: Option<usize>,
    on_chunk: &mut dyn FnMut(usize, usize),
) -> Result<Calibration> {
    calibrate_layers(model, tokens, ctx, bos, max_chunks, &|_| true, on_chunk)
}

/// [`calibrate`] recording only the inputs of the layers for which `want(name)` holds (the
/// others run unrecorded; [`Calibration::get`] has no statistics for them unless they share
/// an input with a wanted layer).
pub fn calibrate_layers<B: Backend>(
    model: &mut Llama<B>,
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    max_chunks: Option<usize>,
    want: &dyn Fn(&str) -> bool,
    on_chunk: &mut dyn FnMut(usize, usize),
) -> Result<Calibration> {
    let chunks = calibration_chunks(tokens, ctx, bos, max_chunks)?;
    let total = chunks.len();
    record_inputs(model, want, &mut |m: &Llama<B>| {
        for (i, c) in chunks.iter().enumerate() {
            let mut cache = m.new_cache();
            // All positions: `lm_head` must see every token's hidden state.
            m.forward(c, &mut cache, Logits::All)?;
            on_chunk(i + 1, total);
        }
        Ok(chunks.iter().map(Vec::len).sum())
    })
}

/// The sequences [`calibrate`] runs: `tokens` in consecutive chunks of `ctx` (at most
/// `max_chunks`; a shorter tail chunk when it holds at least 2 tokens), each with its first
/// token replaced by `bos` when given.
///
/// # Errors
/// `ctx < 2`, or no chunk of at least 2 tokens.
pub fn calibration_chunks(
    tokens: &[u32],
    ctx: usize,
    bos: Option<u32>,
    max_chunks: Option<usize>,
) -> Result<Vec<Vec<u32>>> {
    if ctx < 2 {
        return Err(ConvertError::Invalid(format!(
            "calibration context {ctx} is too short (at least 2)"
        )));
    }
    let mut chunks: Vec<Vec<u32>> = tokens
        .chunks(ctx)
        .filter(|c| c.len() >= 2)
        .map(|c| {
            let mut c = c.to_vec();
            if let Some(b) = bos {
                c[0] = b;
            }
            c
        })
        .collect();
    if let Some(m) = max_chunks {
        chunks.truncate(m);
    }
    if chunks.is_empty() {
        return Err(ConvertError::Invalid(format!(
            "calibration needs at least 2 tokens, got {}",
            tokens.len()
        )));
    }
    Ok(chunks)
}

/// Wraps the layers for which `want(name)` holds in recorders, calls `run` on the model (which
/// returns how many tokens it ran), and returns what they recorded. The model's layers are
/// restored before returning, also on error. [`calibrate_layers`] runs whole sequences;
/// sequential quantization runs one block at a time on stored hidden states.
pub fn record_inputs<B: Backend>(
    model: &mut Llama<B>,
    want: &dyn Fn(&str) -> bool,
    run: &mut dyn FnMut(&Llama<B>) -> Result<usize>,
) -> Result<Calibration> {
    // Wrap every layer; the first layer of each input key owns the record.
    let mut sinks: BTreeMap<String, Arc<Mutex<Sink>>> = BTreeMap::new();
    let mut originals = Vec::new();
    let wanted: std::collections::BTreeSet<String> = model
        .linears()
        .into_iter()
        .filter(|(n, _)| want(n))
        .map(|(n, _)| input_key(&n))
        .collect();
    for (name, slot) in model.linears_mut() {
        let key = input_key(&name);
        let sink = match sinks.entry(key) {
            std::collections::btree_map::Entry::Occupied(_) => None,
            std::collections::btree_map::Entry::Vacant(v) if !wanted.contains(v.key()) => None,
            std::collections::btree_map::Entry::Vacant(v) => {
                let s = Arc::new(Mutex::new(Sink {
                    stats: InputStats::new(slot.in_features()),
                    error: None,
                }));
                v.insert(s.clone());
                Some(s)
            }
        };
        let inner = Arc::new(std::mem::replace(slot, Box::new(Vacant)));
        originals.push(inner.clone());
        *slot = Box::new(Recorder { inner, sink });
    }
    let outcome = run(model);
    restore(model, originals)?;
    let tokens = outcome?;
    let mut by_input = BTreeMap::new();
    for (key, sink) in sinks {
        let sink = Arc::try_unwrap(sink)
            .map_err(|_| ConvertError::Invalid("calibration record still shared".into()))?
            .into_inner()
            .map_err(|_| ConvertError::Invalid("a calibration recorder panicked".into()))?;
        if let Some(e) = sink.error {
            return Err(e);
        }
        by_input.insert(key, Arc::new(sink.stats));
    }
    Ok(Calibration { tokens, by_input })
}

/// Puts the original layers back into their slots (dropping the recorders first).
fn restore<B: Backend>(model: &mut Llama<B>, originals: Vec<Arc<Linear<B>>>) -> Result<()> {
    let mut lost = 0;
    for ((_, slot), original) in model.linears_mut().into_iter().zip(originals) {
        *slot = Box::new(Vacant);
        match Arc::try_unwrap(original) {
            Ok(layer) => *slot = layer,
            Err(_) => lost += 1,
        }
    }
    if lost > 0 {
        return Err(ConvertError::Invalid(format!(
            "{lost} layers could not be restored after calibration"
        )));
    }
    Ok(())
}
