//! Accuracy recovery by training: the ternary layers of a converted model learn from the
//! float model they came from.
//!
//! Every ternary layer of the student (one trit-plane, or two on the 9-level grid) becomes an
//! [`SteLinear`]: latent float weights, ternarized in the forward pass with a
//! straight-through estimator, and learnable group scales initialised from the conversion's
//! (GPTQ) result (see [`ste`]). The float
//! layers, the embedding and `lm_head` stay frozen; the RMSNorm weights train too when
//! [`OptimConfig::norm_lr`] is positive (at `norm_lr · η`, block by block in block-wise mode).
//! Training runs on Burn's `Autodiff` backend over any backend the model runs on (on the CPU
//! the CLI uses Burn's flex backend, [`ternary_layers::Flex`]) with AdamW, warm-up plus cosine
//! decay, gradient accumulation and clipping ([`optim`]).
//!
//! Two modes ([`Mode`]):
//!
//! - **Distillation** ([`Mode::Kd`]): the loss is the KL divergence between the float
//!   teacher's and the student's next-token distributions at temperature `τ`,
//!   `τ²·mean_i Σ_v p_t(v|i)·(log p_t(v|i) − log p_s(v|i))`, plus optionally
//!   `β·mean_l ‖h_s^l − h_t^l‖² / ‖h_t^l‖²` on every block's output. The teacher's logits are
//!   computed on the fly, or read from a cache of its top `k` per position built once
//!   ([`FinetuneConfig::top_k`], [`TeacherCache`]; the divergence is then taken over the `k`
//!   tokens and one bucket for the rest of the vocabulary).
//! - **Block-wise reconstruction** ([`Mode::Blockwise`]): block by block, the block's ternary
//!   weights and scales learn to reproduce the float model's hidden state after that block,
//!   `‖B_l(x_s) − h_t^l‖² / ‖h_t^l‖²`, on the student's own input `x_s` (earlier blocks already
//!   trained and ternary). `tokens` is then per block; blocks with nothing to train (every
//!   linear layer float, norms frozen) are skipped. A distillation run with
//!   [`FinetuneConfig::scales_only`] afterwards trains only the scales end to end.
//!
//! Both hidden-state losses normalize by the whole window's energy ([`HiddenLoss::Window`]) or
//! token by token, `mean_i ‖a_i − y_i‖² / ‖y_i‖²` ([`HiddenLoss::Token`]), so that a few
//! tokens with very large hidden states (attention sinks) do not make up the whole loss.
//!
//! Runs checkpoint atomically ([`Checkpointing`]) and resume bit for bit: the windows are
//! visited in an order fixed by the seed, and the checkpoint holds the parameters, AdamW's
//! moments and the step.

pub mod data;
pub mod optim;
pub mod ste;
mod tagged;
pub mod teacher;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Instant;

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{ElementConversion, Tensor, TensorData};
use serde::{Deserialize, Serialize};
use ternary_layers::{Linear, TernaryBackend, to_rows};
use ternary_models::{FloatLinear, Llama, perplexity};

use crate::error::{ConvertError, Result};
use crate::model_file::as_ternary;
pub use data::Windows;
pub use optim::{Moments, OptimConfig};
pub use ste::{SharedParams, SteLinear, SteParams};
pub use teacher::TeacherCache;

/// What the student learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Mode {
    /// Distillation from the teacher's next-token distributions (end to end).
    Kd,
    /// Block-wise reconstruction of the teacher's hidden states.
    Blockwise,
}

impl Mode {
    /// `"kd"` or `"blockwise"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kd => "kd",
            Self::Blockwise => "blockwise",
        }
    }
}

/// The normalization of a hidden-state loss between student output `a` and target `y`
/// (`[tokens, H]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum HiddenLoss {
    /// `Σ(a − y)² / Σy²` over the whole window.
    #[default]
    Window,
    /// `mean_i Σ_j (a_ij − y_ij)² / Σ_j y_ij²`: every token counts alike, whatever the size of
    /// its hidden state.
    Token,
}

impl HiddenLoss {
    /// `"window"` or `"token"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Window => "window",
            Self::Token => "token",
        }
    }

    /// The loss of `a` against the target `y` (which carries no gradient).
    fn of<B: Backend>(self, a: Tensor<B, 2>, y: Tensor<B, 2>) -> Tensor<B, 1> {
        match self {
            Self::Window => {
                let den: f64 = y
                    .clone()
                    .powf_scalar(2.0)
                    .sum()
                    .into_scalar()
                    .elem::<f64>()
                    .max(1e-30);
                a.sub(y).powf_scalar(2.0).sum().div_scalar(den)
            }
            Self::Token => {
                let den = y.clone().powf_scalar(2.0).sum_dim(1).clamp_min(1e-30);
                a.sub(y).powf_scalar(2.0).sum_dim(1).div(den).mean()
            }
        }
    }
}

/// The levers of a fine-tuning run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinetuneConfig {
    /// Distillation or block-wise reconstruction.
    pub mode: Mode,
    /// Training tokens: in all ([`Mode::Kd`]) or per trained block ([`Mode::Blockwise`], which
    /// skips blocks with nothing to train, see [`blockwise_blocks`]).
    pub tokens: usize,
    /// Tokens per window (sequence length of one forward pass).
    pub seq_len: usize,
    /// Windows per optimizer step (gradient accumulation).
    pub accum: usize,
    /// AdamW and schedule.
    pub optim: OptimConfig,
    /// Distillation temperature `τ`.
    pub temperature: f64,
    /// Weight `β` of the per-block hidden-state loss in distillation (0: off).
    pub hidden_mse: f64,
    /// How a hidden-state loss is normalized (block-wise mode, and distillation with
    /// [`FinetuneConfig::hidden_mse`]).
    #[serde(default)]
    pub hidden_loss: HiddenLoss,
    /// Train only the scales (latent weights, hence the trits, stay fixed).
    pub scales_only: bool,
    /// Seed of the window order.
    pub seed: u64,
    /// Distil against the teacher's top `k` tokens per position from the [`TeacherCache`]
    /// attached to the windows ([`Windows::with_teacher_cache`]) instead of its full
    /// distribution computed on the fly (distillation only, without the hidden-state loss).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
}

impl Default for FinetuneConfig {
    /// Distillation over 65,536 tokens in windows of 256, one window per step, `τ = 1`, no
    /// hidden-state loss, seed 0, [`OptimConfig::default`].
    fn default() -> Self {
        Self {
            mode: Mode::Kd,
            tokens: 65_536,
            seq_len: 256,
            accum: 1,
            optim: OptimConfig::default(),
            temperature: 1.0,
            hidden_mse: 0.0,
            hidden_loss: HiddenLoss::Window,
            scales_only: false,
            seed: 0,
            top_k: None,
        }
    }
}

impl FinetuneConfig {
    /// Checks the levers ([`finetune`] does too).
    ///
    /// # Errors
    /// A lever out of range, or levers that do not go together (top-k with block-wise mode or
    /// the hidden-state loss).
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(ConvertError::Invalid(m));
        if self.tokens == 0 {
            return bad("the number of training tokens must be positive".into());
        }
        if self.seq_len < 2 || self.accum == 0 {
            return bad(format!(
                "windows need at least 2 tokens and a step at least one window (seq_len {}, \
                 accum {})",
                self.seq_len, self.accum
            ));
        }
        if !(self.temperature.is_finite() && self.temperature > 0.0) {
            return bad(format!("temperature {} must be positive", self.temperature));
        }
        if !(self.hidden_mse.is_finite() && self.hidden_mse >= 0.0) {
            return bad(format!(
                "hidden-state weight {} must be >= 0",
                self.hidden_mse
            ));
        }
        if let Some(k) = self.top_k {
            if k == 0 {
                return bad("top-k 0: keep at least one token per position".into());
            }
            if self.mode != Mode::Kd {
                return bad(
                    "top-k: block-wise mode does not use the teacher's logits (distillation only)"
                        .into(),
                );
            }
            if self.hidden_mse > 0.0 {
                return bad(format!(
                    "top-k: the hidden-state loss (weight {}) needs the teacher's hidden states \
                     on the fly; use a top-k cache with hidden-state weight 0",
                    self.hidden_mse
                ));
            }
        }
        self.optim.validate().map_err(ConvertError::Invalid)
    }

    /// Optimizer steps per schedule (the whole run, or one block).
    pub fn steps_per_schedule(&self) -> usize {
        self.tokens.div_ceil(self.seq_len * self.accum).max(1)
    }
}

/// Held-out perplexity measured during training (llama.cpp's algorithm, as `ternary
/// perplexity`).
#[derive(Debug, Clone)]
pub struct EvalSet {
    /// The tokenized evaluation text (never the training text).
    pub tokens: Vec<u32>,
    /// Context per chunk.
    pub ctx: usize,
    /// Chunks scored each time.
    pub chunks: usize,
    /// Evaluate every this many steps (and at the start and the end); 0: only start and end.
    pub every: usize,
    /// The BOS token that starts each chunk, if the model uses one.
    pub bos: Option<u32>,
}

/// Where and when to checkpoint, and what to resume from.
#[derive(Debug, Clone, Default)]
pub struct Checkpointing {
    /// The checkpoint file (written atomically); `None`: no checkpoints.
    pub path: Option<PathBuf>,
    /// Write every this many steps (and at the end); 0: only at the end.
    pub every: usize,
    /// Resume from this checkpoint.
    pub resume: Option<PathBuf>,
    /// Stop after this many steps in all (an interruption, for testing resumption).
    pub stop_after: Option<usize>,
    /// Stop after the first step that ends this many seconds or more after this call started
    /// (held-out perplexity measured and a checkpoint written there, as at the end).
    pub stop_after_seconds: Option<f64>,
}

/// One point of the training curve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CurvePoint {
    /// Optimizer steps done.
    pub step: usize,
    /// The block trained ([`Mode::Blockwise`]).
    pub block: Option<usize>,
    /// Training tokens seen.
    pub tokens: usize,
    /// Wall time since the run started (summed over resumptions), seconds.
    pub seconds: f64,
    /// Mean training loss of the step (`None` at step 0).
    pub loss: Option<f64>,
    /// Learning rate of the step.
    pub lr: f64,
    /// Held-out perplexity, where measured.
    pub eval_ppl: Option<f64>,
}

/// What a progress callback sees.
#[derive(Debug, Clone)]
pub struct Progress<'a> {
    /// The point just recorded.
    pub point: &'a CurvePoint,
    /// Steps in the whole run.
    pub total_steps: usize,
    /// Blocks ([`Mode::Blockwise`]).
    pub blocks: Option<usize>,
}

/// The outcome of [`finetune`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinetuneReport {
    /// The configuration.
    pub config: FinetuneConfig,
    /// Loss (and perplexity) against steps, tokens and time, including points from before a
    /// resumption.
    pub curve: Vec<CurvePoint>,
    /// Steps done in all.
    pub steps: usize,
    /// Steps of the whole schedule.
    pub total_steps: usize,
    /// Layers trained.
    pub layers: usize,
    /// Trainable values (latent weights and scales).
    pub params: usize,
    /// The step a resumption started from.
    pub resumed_at: Option<usize>,
    /// Whether the run stopped early ([`Checkpointing::stop_after`],
    /// [`Checkpointing::stop_after_seconds`]).
    pub interrupted: bool,
}

/// The trainable layers of a student and AdamW's state.
#[derive(Debug)]
pub struct Trainer<B: AutodiffBackend> {
    layers: Vec<(String, SharedParams<B>)>,
    moments: Vec<Option<[Moments<B::InnerBackend>; 2]>>,
    /// Trained RMSNorm weights as tracked `[1, width]` leaves, by the name of the weight
    /// (empty unless [`Trainer::train_norms`] was called).
    norms: Vec<(String, Tensor<B, 2>)>,
    norm_moments: Vec<Option<Moments<B::InnerBackend>>>,
}

/// The `l` of `model.layers.{l}.…`.
fn block_of(name: &str) -> Option<usize> {
    name.strip_prefix("model.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// The blocks [`Mode::Blockwise`] visits, in order: every block when the norms train
/// (`norm_lr > 0`), else those with a ternary layer. A block left float would spend its steps on
/// a loss that moves nothing.
pub fn blockwise_blocks<B: TernaryBackend>(student: &Llama<B>, cfg: &FinetuneConfig) -> Vec<usize> {
    let blocks = student.config().num_layers;
    if cfg.optim.norm_lr > 0.0 {
        return (0..blocks).collect();
    }
    let mut has = vec![false; blocks];
    for (name, layer) in student.linears() {
        if let Some(l) = block_of(&name).filter(|&l| l < blocks)
            && as_ternary(layer.as_ref()).is_some()
        {
            has[l] = true;
        }
    }
    (0..blocks).filter(|&l| has[l]).collect()
}

/// Indices of the named items that belong to block `l`.
fn in_block<T>(items: &[(String, T)], l: usize) -> Vec<usize> {
    items
        .iter()
        .enumerate()
        .filter(|(_, (n, _))| block_of(n) == Some(l))
        .map(|(i, _)| i)
        .collect()
}

fn lock<B: AutodiffBackend>(p: &SharedParams<B>) -> std::sync::RwLockWriteGuard<'_, SteParams<B>> {
    p.write().unwrap_or_else(PoisonError::into_inner)
}

/// Host rows of a tensor on any backend, onto `device` of backend `B`.
fn transfer<T: Backend, B: Backend, const D: usize>(
    t: Tensor<T, D>,
    device: &B::Device,
) -> Tensor<B, D> {
    Tensor::from_data(t.into_data(), device)
}

impl<B: AutodiffBackend + TernaryBackend> Trainer<B> {
    /// Makes `student` trainable: every [`TernaryLinear`](ternary_layers::TernaryLinear) (one
    /// or two planes) becomes an [`SteLinear`] (latent weights from the teacher's float weights
    /// of the same name, see [`SteParams::from_weights`]); every other linear layer becomes a frozen
    /// [`FloatLinear`] (Burn's matmul, through which gradients flow).
    ///
    /// # Errors
    /// A student without ternary layers, a two-plane layer with free plane scales, mismatched
    /// teacher shapes or configurations.
    pub fn prepare<T: Backend>(student: &mut Llama<B>, teacher: &Llama<T>) -> Result<Self> {
        let (sc, tc) = (student.config(), teacher.config());
        if sc.hidden_size != tc.hidden_size
            || sc.num_layers != tc.num_layers
            || sc.vocab_size != tc.vocab_size
            || sc.intermediate_size != tc.intermediate_size
        {
            return Err(ConvertError::Invalid(format!(
                "teacher and student are different models (hidden {} vs {}, layers {} vs {}, \
                 vocabulary {} vs {})",
                tc.hidden_size,
                sc.hidden_size,
                tc.num_layers,
                sc.num_layers,
                tc.vocab_size,
                sc.vocab_size
            )));
        }
        let device = student.device().clone();
        let teacher_w: HashMap<String, &Linear<T>> = teacher.linears().into_iter().collect();
        let mut layers = Vec::new();
        for (name, slot) in student.linears_mut() {
            let replacement: Linear<B> = if let Some(t) = as_ternary(slot.as_ref()) {
                let float = match teacher_w.get(&name) {
                    Some(l) => Some(to_rows(l.weight())?),
                    None => None,
                };
                let params = SteParams::<B>::from_weights(
                    t.weights(),
                    float.as_deref(),
                    t.input_scale(),
                    t.bias().as_deref(),
                    &device,
                )?;
                let shared = Arc::new(RwLock::new(params));
                layers.push((name.clone(), shared.clone()));
                Box::new(SteLinear::new(shared))
            } else {
                let (out, inp) = (slot.out_features(), slot.in_features());
                let w = to_rows(slot.weight())?;
                Box::new(FloatLinear::<B>::from_rows(&name, &w, out, inp, &device)?)
            };
            *slot = replacement;
        }
        if layers.is_empty() {
            return Err(ConvertError::Invalid(
                "the student has no ternary layers: give a converted ternary model \
                 (`ternary quantize` output) as the student"
                    .into(),
            ));
        }
        let moments = vec![None; layers.len()];
        Ok(Self {
            layers,
            moments,
            norms: Vec::new(),
            norm_moments: Vec::new(),
        })
    }

    /// Makes every RMSNorm weight of `student` trainable as well: tracked copies, installed
    /// in `student`.
    ///
    /// # Errors
    /// A norm that cannot be replaced.
    pub fn train_norms(&mut self, student: &mut Llama<B>) -> Result<()> {
        self.norms = student
            .norms()
            .into_iter()
            .map(|(name, n)| {
                let w = n.weight().clone().detach();
                let width = w.dims()[0];
                (name, w.reshape([1, width]).require_grad())
            })
            .collect();
        self.norm_moments = vec![None; self.norms.len()];
        self.install_norms(student, true)
    }

    /// Puts the trained norm weights into `student`: the tracked leaves (training) or detached
    /// copies (evaluation, export).
    fn install_norms(&self, student: &mut Llama<B>, tracked: bool) -> Result<()> {
        if self.norms.is_empty() {
            return Ok(());
        }
        let by_name: HashMap<&str, &Tensor<B, 2>> =
            self.norms.iter().map(|(n, w)| (n.as_str(), w)).collect();
        for (name, norm) in student.norms_mut() {
            if let Some(&w) = by_name.get(name.as_str()) {
                let w = if tracked {
                    w.clone()
                } else {
                    w.clone().detach()
                };
                let width = w.dims()[1];
                norm.set_weight(w.reshape([width]))?;
            }
        }
        Ok(())
    }

    /// The trainable layers with their names.
    pub fn layers(&self) -> &[(String, SharedParams<B>)] {
        &self.layers
    }

    /// Trainable values in all.
    pub fn param_count(&self) -> usize {
        self.layers
            .iter()
            .map(|(_, p)| {
                let (o, i, g) = lock(p).dims();
                o * i + o * g
            })
            .sum::<usize>()
            + self.norms.iter().map(|(_, w)| w.dims()[1]).sum::<usize>()
    }

    /// Puts the trained ternary layers back into `student` as
    /// [`TernaryLinear`](ternary_layers::TernaryLinear) (trits `clamp(round(w/s), −1, 1)`).
    ///
    /// # Errors
    /// A layer that cannot be exported.
    pub fn finish(self, student: &mut Llama<B>) -> Result<()> {
        let device = student.device().clone();
        self.install_norms(student, false)?;
        let by_name: HashMap<String, SharedParams<B>> = self.layers.into_iter().collect();
        for (name, slot) in student.linears_mut() {
            if let Some(p) = by_name.get(&name) {
                *slot = Box::new(SteLinear::to_ternary(p, &device)?);
            }
        }
        Ok(())
    }

    /// One optimizer step: `micro` windows' losses, gradients averaged, clipped, AdamW on the
    /// layers in `active` and the norms in `active_norms` at schedule step `k` of `total`.
    /// Returns the mean loss and the rate. The updated norms are new leaves: install them
    /// before the next step.
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        cfg: &FinetuneConfig,
        active: &[usize],
        active_norms: &[usize],
        k: usize,
        total: usize,
        mut loss_of: impl FnMut(usize) -> Result<Tensor<B, 1>>,
    ) -> Result<(f64, f64)> {
        type G<B> = Option<Tensor<<B as AutodiffBackend>::InnerBackend, 2>>;
        let mut acc: Vec<[G<B>; 2]> = vec![[None, None]; active.len()];
        let mut acc_norms: Vec<G<B>> = vec![None; active_norms.len()];
        let mut loss_sum = 0.0;
        for a in 0..cfg.accum {
            let loss = loss_of(a)?;
            let v: f64 = loss.clone().into_scalar().elem();
            if !v.is_finite() {
                return Err(ConvertError::Invalid(format!(
                    "the training loss became {v} at step {k}; lower the learning rate"
                )));
            }
            loss_sum += v;
            let grads = loss.backward();
            for (slot, &i) in acc.iter_mut().zip(active) {
                let p = lock(&self.layers[i].1);
                for (j, t) in [&p.latent, &p.scale].into_iter().enumerate() {
                    if let Some(g) = t.grad(&grads) {
                        slot[j] = Some(match slot[j].take() {
                            Some(s) => s.add(g),
                            None => g,
                        });
                    }
                }
            }
            for (slot, &i) in acc_norms.iter_mut().zip(active_norms) {
                if let Some(g) = self.norms[i].1.grad(&grads) {
                    *slot = Some(match slot.take() {
                        Some(s) => s.add(g),
                        None => g,
                    });
                }
            }
        }
        let inv = 1.0 / cfg.accum as f64;
        let mut sq = 0.0f64;
        for g in acc.iter_mut().flatten().chain(&mut acc_norms).flatten() {
            *g = g.clone().mul_scalar(inv);
            let s: f64 = g.clone().powf_scalar(2.0).sum().into_scalar().elem();
            sq += s;
        }
        let factor = match cfg.optim.clip {
            Some(c) if sq.sqrt() > c => c / sq.sqrt(),
            _ => 1.0,
        };
        let lr = cfg.optim.lr_at(k, total);
        for (slot, &i) in acc.into_iter().zip(active) {
            let mut p = lock(&self.layers[i].1);
            let mom = self.moments[i].get_or_insert_with(|| {
                [
                    Moments::zeros_like(&p.latent.clone().inner()),
                    Moments::zeros_like(&p.scale.clone().inner()),
                ]
            });
            let [gl, gs] = slot;
            if let Some(g) = gl {
                let g = g.mul_scalar(factor);
                let w = p.latent.clone().inner();
                let w = optim::adamw(&cfg.optim, w, g, &mut mom[0], k, lr, true);
                p.latent = Tensor::from_inner(w);
            }
            if let Some(g) = gs {
                let g = g.mul_scalar(factor);
                let s = p.scale.clone().inner();
                let lr_s = lr * cfg.optim.scale_lr;
                let s = optim::adamw(&cfg.optim, s, g, &mut mom[1], k, lr_s, false);
                p.scale = Tensor::from_inner(s);
            }
            p.project(!cfg.scales_only);
        }
        for (g, &i) in acc_norms.into_iter().zip(active_norms) {
            if let Some(g) = g {
                let w = self.norms[i].1.clone().inner();
                let mom = self.norm_moments[i].get_or_insert_with(|| Moments::zeros_like(&w));
                let lr_n = lr * cfg.optim.norm_lr;
                let w = optim::adamw(&cfg.optim, w, g.mul_scalar(factor), mom, k, lr_n, false);
                self.norms[i].1 = Tensor::from_inner(w).require_grad();
            }
        }
        Ok((loss_sum * inv, lr))
    }

    /// Runs `f` on `student` with its trained layers exported as they would be saved
    /// ([`SteLinear::to_ternary`]: `TernaryLinear`s with the levels `clamp(round(w/s), −L, L)`,
    /// one or two planes), then puts the training layers back. Every layer is exported before
    /// any is swapped, so an export error leaves the student as it was. Held-out perplexity is measured this way: it is the
    /// perplexity of the file a run would write, it runs on the ternary kernels, and it keeps
    /// no autodiff state (a forward pass through the training layers materializes every
    /// effective weight: on the CPU, SmolLM2-135M's evaluation grew by ~2.4 GB per 512-token
    /// chunk that way).
    ///
    /// # Errors
    /// A layer that cannot be exported.
    fn exported<R>(&self, student: &mut Llama<B>, f: impl FnOnce(&Llama<B>) -> R) -> Result<R> {
        let device = student.device().clone();
        let by_name: HashMap<&str, &SharedParams<B>> =
            self.layers.iter().map(|(n, p)| (n.as_str(), p)).collect();
        let mut exported: HashMap<&str, Linear<B>> = HashMap::new();
        for (name, p) in &by_name {
            exported.insert(name, Box::new(SteLinear::to_ternary(p, &device)?));
        }
        self.install_norms(student, false)?;
        let mut saved: HashMap<String, Linear<B>> = HashMap::new();
        for (name, slot) in student.linears_mut() {
            if let Some(l) = exported.remove(name.as_str()) {
                saved.insert(name, std::mem::replace(slot, l));
            }
        }
        let r = f(student);
        for (name, slot) in student.linears_mut() {
            if let Some(l) = saved.remove(&name) {
                *slot = l;
            }
        }
        self.install_norms(student, true)?;
        Ok(r)
    }

    /// Drops the latent weights' gradient tracking (scale-only training).
    fn freeze_latent(&self) {
        for (_, p) in &self.layers {
            let mut p = lock(p);
            p.latent = p.latent.clone().detach();
        }
    }
}

/// Hidden states of `model` after every block for `tokens` (`[n, H]` each, detached).
fn hidden_states<M: Backend>(model: &Llama<M>, tokens: &[u32]) -> Result<Vec<Tensor<M, 2>>> {
    let mut x = model.embed(tokens)?;
    let mut out = Vec::with_capacity(model.config().num_layers);
    for l in 0..model.config().num_layers {
        x = model.run_blocks(x, l..l + 1)?;
        out.push(x.clone());
    }
    Ok(out)
}

/// The distillation loss of window `id` (module docs), against the teacher's cached top k
/// when `cached`.
fn kd_loss<B: AutodiffBackend + TernaryBackend, T: Backend>(
    cfg: &FinetuneConfig,
    student: &Llama<B>,
    teacher: &Llama<T>,
    windows: &Windows,
    id: usize,
    cached: Option<&TeacherCache>,
) -> Result<Tensor<B, 1>> {
    let tokens = windows.window(id);
    let layers = student.config().num_layers;
    let tau = cfg.temperature;
    if let Some(c) = cached {
        let (ids, logp) = c.window(id)?;
        let x = student.run_blocks(student.embed(tokens)?, 0..layers)?;
        let ls = log_softmax(student.head(x).div_scalar(tau), 1);
        let n = tokens.len() as f64;
        return Ok(teacher::topk_kl(ls, ids, logp, c.k()).mul_scalar(tau * tau / n));
    }
    let dev = student.device().clone();
    let (logits_t, hidden_t) = if cfg.hidden_mse > 0.0 {
        let h = hidden_states(teacher, tokens)?;
        let last = h
            .last()
            .cloned()
            .ok_or_else(|| ConvertError::Invalid("the teacher has no blocks".into()))?;
        (teacher.head(last), Some(h))
    } else {
        let x = teacher.run_blocks(teacher.embed(tokens)?, 0..layers)?;
        (teacher.head(x), None)
    };
    let logits_t: Tensor<B, 2> = transfer(logits_t, &dev);
    let mut x = student.embed(tokens)?;
    let mut hidden_loss: Option<Tensor<B, 1>> = None;
    match &hidden_t {
        Some(h) => {
            for (l, ht) in h.iter().enumerate() {
                x = student.run_blocks(x, l..l + 1)?;
                let term = cfg.hidden_loss.of(x.clone(), transfer(ht.clone(), &dev));
                hidden_loss = Some(match hidden_loss {
                    Some(s) => s.add(term),
                    None => term,
                });
            }
        }
        None => x = student.run_blocks(x, 0..layers)?,
    }
    let logits_s = student.head(x);
    let ls = log_softmax(logits_s.div_scalar(tau), 1);
    let lt = log_softmax(logits_t.div_scalar(tau), 1);
    let n = tokens.len() as f64;
    let kl = lt
        .clone()
        .exp()
        .mul(lt.sub(ls))
        .sum()
        .mul_scalar(tau * tau / n);
    Ok(match hidden_loss {
        Some(h) => kl.add(h.mul_scalar(cfg.hidden_mse / layers as f64)),
        None => kl,
    })
}

/// Block-wise inputs and targets of one window, advanced block by block: the student's input
/// of block `at` and the teacher's hidden state after block `at`.
struct BlockCache<B: Backend, T: Backend> {
    at: usize,
    x: Tensor<B, 2>,
    y: Tensor<T, 2>,
}

/// Fine-tunes the ternary layers of `student` against `teacher` on `windows`; on return the
/// student holds the trained [`TernaryLinear`](ternary_layers::TernaryLinear) layers (save it
/// with [`save`](crate::save)). `progress` sees every step.
///
/// # Errors
/// Bad configuration, a student without ternary layers, teacher/student mismatch (shapes, or a
/// residual rotation one has and the other not), a checkpoint that does not belong to this run, a loss that stops being finite, I/O.
pub fn finetune<B: AutodiffBackend + TernaryBackend, T: Backend>(
    teacher: &Llama<T>,
    student: &mut Llama<B>,
    windows: &Windows,
    cfg: &FinetuneConfig,
    eval: Option<&EvalSet>,
    ckpt: &Checkpointing,
    progress: &mut dyn FnMut(&Progress<'_>),
) -> Result<FinetuneReport> {
    cfg.validate()?;
    if windows.seq_len() != cfg.seq_len {
        return Err(ConvertError::Invalid(format!(
            "windows of {} tokens for a configuration of {}",
            windows.seq_len(),
            cfg.seq_len
        )));
    }
    let (rs, rt) = (
        student.config().residual_rotation,
        teacher.config().residual_rotation,
    );
    if rs != rt {
        let says = |r: Option<u64>| {
            r.map_or("not rotated".to_string(), |s| {
                format!("rotated by seed {s}")
            })
        };
        return Err(ConvertError::Invalid(format!(
            "the student's residual stream is {}, the teacher's {}: their hidden states are in              different bases (rotate the float teacher with rotate::rotate_residual)",
            says(rs),
            says(rt)
        )));
    }
    let cached = match cfg.top_k {
        None => None,
        Some(k) => {
            let c = windows.teacher_cache().ok_or_else(|| {
                ConvertError::Invalid(format!(
                    "top-k {k}: no teacher cache is attached to the windows (build one with \
                     TeacherCache::build and Windows::with_teacher_cache)"
                ))
            })?;
            if c.k() != k || c.temperature() != cfg.temperature {
                return Err(ConvertError::Invalid(format!(
                    "the teacher cache keeps the top {} at temperature {}, the run asks for the \
                     top {k} at {}: build it again with these",
                    c.k(),
                    c.temperature(),
                    cfg.temperature
                )));
            }
            c.check_windows(windows)?;
            let sv = student.config().vocab_size;
            if sv != teacher.config().vocab_size {
                return Err(ConvertError::Invalid(format!(
                    "the student's vocabulary has {sv} tokens, the teacher's {}",
                    teacher.config().vocab_size
                )));
            }
            c.check_teacher(teacher, windows, windows.index(0))?;
            Some(c)
        }
    };
    let schedule = blockwise_blocks(student, cfg);
    let mut trainer = Trainer::prepare(student, teacher)?;
    if cfg.optim.norm_lr > 0.0 {
        trainer.train_norms(student)?;
    }
    let blocks = student.config().num_layers;
    let per = cfg.steps_per_schedule();
    if cfg.mode == Mode::Blockwise && schedule.is_empty() {
        return Err(ConvertError::Invalid(
            "block-wise mode: no block has a ternary layer (or a norm) to train".into(),
        ));
    }
    let total = match cfg.mode {
        Mode::Kd => per,
        Mode::Blockwise => per * schedule.len(),
    };
    let mut curve: Vec<CurvePoint> = Vec::new();
    let mut done = 0usize;
    let mut prior_seconds = 0.0;
    let mut resumed_at = None;
    if let Some(path) = &ckpt.resume {
        let state = checkpoint::load(path, &mut trainer, cfg, blocks, &schedule)?;
        trainer.install_norms(student, true)?;
        done = state.step;
        prior_seconds = state.seconds;
        curve = state.curve;
        resumed_at = Some(done);
    }
    if cfg.scales_only {
        trainer.freeze_latent();
    }
    let start = Instant::now();
    let seconds = |s: &Instant| prior_seconds + s.elapsed().as_secs_f64();
    let measure = |trainer: &Trainer<B>, student: &mut Llama<B>| -> Result<Option<f64>> {
        let Some(e) = eval else { return Ok(None) };
        let r = trainer.exported(student, |m| {
            perplexity(m, &e.tokens, e.ctx, e.bos, Some(e.chunks), |_, _| {})
        })??;
        Ok(Some(r.ppl))
    };
    let blocks_opt = (cfg.mode == Mode::Blockwise).then_some(blocks);
    if done == 0 {
        let point = CurvePoint {
            step: 0,
            block: None,
            tokens: 0,
            seconds: 0.0,
            loss: None,
            lr: 0.0,
            eval_ppl: measure(&trainer, student)?,
        };
        progress(&Progress {
            point: &point,
            total_steps: total,
            blocks: blocks_opt,
        });
        curve.push(point);
    }
    let mut cache: HashMap<usize, BlockCache<B, T>> = HashMap::new();
    let all: Vec<usize> = (0..trainer.layers.len()).collect();
    let all_norms: Vec<usize> = (0..trainer.norms.len()).collect();
    let mut interrupted = false;
    while done < total {
        if ckpt.stop_after.is_some_and(|s| done >= s) {
            interrupted = true;
            break;
        }
        let (k, block) = match cfg.mode {
            Mode::Kd => (done + 1, None),
            Mode::Blockwise => (done % per + 1, Some(schedule[done / per])),
        };
        let (loss, lr) = match block {
            None => {
                let first = (done) * cfg.accum;
                trainer.step(cfg, &all, &all_norms, k, per, |a| {
                    let id = windows.index(first + a);
                    kd_loss(cfg, student, teacher, windows, id, cached)
                })?
            }
            Some(l) => {
                if k == 1 {
                    // A new block: drop the moments of the finished one.
                    for m in &mut trainer.moments {
                        *m = None;
                    }
                    for m in &mut trainer.norm_moments {
                        *m = None;
                    }
                }
                let active = in_block(&trainer.layers, l);
                let active_norms = in_block(&trainer.norms, l);
                let first = (k - 1) * cfg.accum;
                let dev = student.device().clone();
                // The windows of this block's remaining steps, advanced to block `l`'s input
                // through the earlier blocks as exported (ternary, untracked): once per block,
                // and once after a resume. (A forward through the training layers that no
                // backward pass consumes keeps its autodiff state: advancing every window that
                // way grew a SmolLM2 run past 24 GB.)
                let needed: Vec<usize> =
                    (first..per * cfg.accum).map(|i| windows.index(i)).collect();
                if needed
                    .iter()
                    .any(|id| cache.get(id).is_none_or(|e| e.at != l))
                {
                    trainer.exported(student, |m| -> Result<()> {
                        for &id in &needed {
                            let tokens = windows.window(id);
                            let entry = match cache.remove(&id) {
                                Some(e) => e,
                                None => BlockCache {
                                    at: 0,
                                    x: m.embed(tokens)?.detach(),
                                    y: teacher.run_blocks(teacher.embed(tokens)?, 0..1)?,
                                },
                            };
                            let entry = if entry.at < l {
                                BlockCache {
                                    at: l,
                                    x: m.run_blocks(entry.x, entry.at..l)?.detach(),
                                    y: teacher.run_blocks(entry.y, entry.at + 1..l + 1)?,
                                }
                            } else {
                                entry
                            };
                            cache.insert(id, entry);
                        }
                        Ok(())
                    })??;
                }
                trainer.step(cfg, &active, &active_norms, k, per, |a| {
                    let id = windows.index(first + a);
                    let entry = cache.get(&id).ok_or_else(|| {
                        ConvertError::Invalid(format!("window {id} was not prepared for block {l}"))
                    })?;
                    let out = student.run_blocks(entry.x.clone(), l..l + 1)?;
                    Ok(cfg.hidden_loss.of(out, transfer(entry.y.clone(), &dev)))
                })?
            }
        };
        trainer.install_norms(student, true)?;
        done += 1;
        let last = done == total;
        let timed_out = !last
            && ckpt
                .stop_after_seconds
                .is_some_and(|s| start.elapsed().as_secs_f64() >= s);
        let eval_now =
            last || timed_out || eval.is_some_and(|e| e.every > 0 && done.is_multiple_of(e.every));
        let point = CurvePoint {
            step: done,
            block,
            tokens: done * cfg.accum * cfg.seq_len,
            seconds: seconds(&start),
            loss: Some(loss),
            lr,
            eval_ppl: if eval_now {
                measure(&trainer, student)?
            } else {
                None
            },
        };
        progress(&Progress {
            point: &point,
            total_steps: total,
            blocks: blocks_opt,
        });
        curve.push(point);
        let stopping = timed_out || ckpt.stop_after.is_some_and(|s| done >= s);
        if let Some(path) = &ckpt.path
            && (last || stopping || (ckpt.every > 0 && done.is_multiple_of(ckpt.every)))
        {
            checkpoint::save(
                path,
                &trainer,
                cfg,
                &schedule,
                done,
                seconds(&start),
                &curve,
            )?;
        }
        if timed_out {
            interrupted = true;
            break;
        }
    }
    let report = FinetuneReport {
        config: cfg.clone(),
        steps: done,
        total_steps: total,
        layers: trainer.layers.len(),
        params: trainer.param_count(),
        curve,
        resumed_at,
        interrupted,
    };
    trainer.finish(student)?;
    Ok(report)
}

mod checkpoint {
    //! The checkpoint file: safetensors with every layer's latent weights, scales and AdamW
    //! moments (`{layer}.latent`, `.scale`, `.latent.m`, `.latent.v`, `.scale.m`, `.scale.v`,
    //! f32), the trained RMSNorm weights with theirs (`{norm}`, `{norm}.m`, `{norm}.v`,
    //! `[1, width]`) and, in the metadata, the format name, the configuration, the step, the elapsed time
    //! and the curve so far.

    use super::*;
    use safetensors::tensor::{Dtype, SafeTensors, TensorView};

    const FORMAT: &str = "ternary-finetune/1";

    /// What a checkpoint restores besides the parameters.
    pub(super) struct State {
        pub step: usize,
        pub seconds: f64,
        pub curve: Vec<CurvePoint>,
    }

    #[derive(Serialize, Deserialize)]
    struct Meta {
        config: FinetuneConfig,
        /// The blocks block-wise mode visits (absent in checkpoints written before float
        /// blocks were skipped: those visited every block).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        schedule: Option<Vec<usize>>,
        step: usize,
        seconds: f64,
        curve: Vec<CurvePoint>,
    }

    fn bytes_of<M: Backend>(t: Tensor<M, 2>) -> Result<(Vec<usize>, Vec<u8>)> {
        let shape = t.dims().to_vec();
        let v = to_rows(t)?;
        Ok((shape, v.iter().flat_map(|x| x.to_le_bytes()).collect()))
    }

    pub(super) fn save<B: AutodiffBackend>(
        path: &Path,
        trainer: &Trainer<B>,
        cfg: &FinetuneConfig,
        schedule: &[usize],
        step: usize,
        seconds: f64,
        curve: &[CurvePoint],
    ) -> Result<()> {
        let mut blobs: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for ((name, p), mom) in trainer.layers.iter().zip(&trainer.moments) {
            let p = lock(p);
            let (s, b) = bytes_of(p.latent.clone().inner())?;
            blobs.push((format!("{name}.latent"), s, b));
            let (s, b) = bytes_of(p.scale.clone().inner())?;
            blobs.push((format!("{name}.scale"), s, b));
            if let Some([ml, ms]) = mom {
                for (suffix, t) in [
                    ("latent.m", &ml.m),
                    ("latent.v", &ml.v),
                    ("scale.m", &ms.m),
                    ("scale.v", &ms.v),
                ] {
                    let (s, b) = bytes_of(t.clone())?;
                    blobs.push((format!("{name}.{suffix}"), s, b));
                }
            }
        }
        for ((name, w), mom) in trainer.norms.iter().zip(&trainer.norm_moments) {
            let (s, b) = bytes_of(w.clone().inner())?;
            blobs.push((name.clone(), s, b));
            if let Some(m) = mom {
                for (suffix, t) in [("m", &m.m), ("v", &m.v)] {
                    let (s, b) = bytes_of(t.clone())?;
                    blobs.push((format!("{name}.{suffix}"), s, b));
                }
            }
        }
        let meta = Meta {
            config: cfg.clone(),
            schedule: (cfg.mode == Mode::Blockwise).then(|| schedule.to_vec()),
            step,
            seconds,
            curve: curve.to_vec(),
        };
        let views = blobs
            .iter()
            .map(|(n, s, b)| {
                TensorView::new(Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| ConvertError::Invalid(format!("checkpoint tensor {n}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        super::tagged::write(path, "checkpoint", FORMAT, "state", &meta, views)
    }

    pub(super) fn load<B: AutodiffBackend>(
        path: &Path,
        trainer: &mut Trainer<B>,
        cfg: &FinetuneConfig,
        blocks: usize,
        schedule: &[usize],
    ) -> Result<State> {
        let bad = |m: String| ConvertError::Format(format!("{}: {m}", path.display()));
        let (bytes, meta): (Vec<u8>, Meta) =
            super::tagged::read(path, "checkpoint", FORMAT, "state")?;
        if meta.config != *cfg {
            return Err(ConvertError::Invalid(format!(
                "{}: the checkpoint was written with another configuration; resume with the \
                 same options (checkpoint: {})",
                path.display(),
                serde_json::to_string(&meta.config).unwrap_or_default()
            )));
        }
        if cfg.mode == Mode::Blockwise {
            let visited = meta.schedule.unwrap_or_else(|| (0..blocks).collect());
            if visited != schedule {
                return Err(ConvertError::Invalid(format!(
                    "{}: the checkpoint's run visits blocks {visited:?}, this student's \
                     trainable blocks are {schedule:?} (a checkpoint from before float blocks \
                     were skipped, or another student): start the run again",
                    path.display()
                )));
            }
        }
        let st = SafeTensors::deserialize(&bytes).map_err(|e| bad(e.to_string()))?;
        let dev_of = |p: &SteParams<B>| p.latent.device();
        let get = |name: &str,
                   shape: [usize; 2],
                   dev: &B::Device|
         -> Result<Option<Tensor<B::InnerBackend, 2>>> {
            let Ok(t) = st.tensor(name) else {
                return Ok(None);
            };
            if t.dtype() != Dtype::F32 || t.shape() != shape {
                return Err(bad(format!(
                    "{name} is {:?} {:?}, expected F32 {shape:?}",
                    t.dtype(),
                    t.shape()
                )));
            }
            let v = ternary_core::io::le_f32(t.data());
            Ok(Some(Tensor::from_data(TensorData::new(v, shape), dev)))
        };
        for ((name, p), mom) in trainer.layers.iter().zip(trainer.moments.iter_mut()) {
            let mut p = lock(p);
            let dev = dev_of(&p);
            let (o, i, g) = p.dims();
            let need = |t: Option<Tensor<B::InnerBackend, 2>>, what: &str| {
                t.ok_or_else(|| bad(format!("{name}.{what} is missing")))
            };
            let latent = need(get(&format!("{name}.latent"), [o, i], &dev)?, "latent")?;
            let scale = need(get(&format!("{name}.scale"), [o, g], &dev)?, "scale")?;
            p.latent = Tensor::from_inner(latent).require_grad();
            p.scale = Tensor::from_inner(scale).require_grad();
            let parts = [
                get(&format!("{name}.latent.m"), [o, i], &dev)?,
                get(&format!("{name}.latent.v"), [o, i], &dev)?,
                get(&format!("{name}.scale.m"), [o, g], &dev)?,
                get(&format!("{name}.scale.v"), [o, g], &dev)?,
            ];
            *mom = match parts {
                [Some(lm), Some(lv), Some(sm), Some(sv)] => {
                    Some([Moments { m: lm, v: lv }, Moments { m: sm, v: sv }])
                }
                [None, None, None, None] => None,
                _ => return Err(bad(format!("{name}: incomplete optimizer state"))),
            };
        }
        for ((name, w), mom) in trainer
            .norms
            .iter_mut()
            .zip(trainer.norm_moments.iter_mut())
        {
            let dev = w.device();
            let shape = [1, w.dims()[1]];
            let value = get(name, shape, &dev)?.ok_or_else(|| bad(format!("{name} is missing")))?;
            *w = Tensor::from_inner(value).require_grad();
            *mom = match [
                get(&format!("{name}.m"), shape, &dev)?,
                get(&format!("{name}.v"), shape, &dev)?,
            ] {
                [Some(m), Some(v)] => Some(Moments { m, v }),
                [None, None] => None,
                _ => return Err(bad(format!("{name}: incomplete optimizer state"))),
            };
        }
        Ok(State {
            step: meta.step,
            seconds: meta.seconds,
            curve: meta.curve,
        })
    }
}

#[cfg(test)]
mod hidden_loss_tests {
    use super::*;
    use ternary_core::rng::Rng;
    use ternary_layers::Cpu;

    fn tensor(v: &[f64], n: usize, h: usize) -> Tensor<Cpu, 2> {
        let v: Vec<f32> = v.iter().map(|&x| x as f32).collect();
        Tensor::from_data(TensorData::new(v, [n, h]), &Default::default())
    }

    /// Both normalizations against f64 sums on random `[n, h]` pairs (seed 9, shapes 1×1,
    /// 5×7, 3×64, 2×65), relative tolerance 1e-5; then a window whose first token is 100×
    /// larger: it makes up the window loss and one token's share of the token loss.
    #[test]
    fn hidden_losses_should_match_their_formulas() {
        let mut rng = Rng::new(9);
        for (n, h) in [(1usize, 1usize), (5, 7), (3, 64), (2, 65)] {
            let a: Vec<f64> = (0..n * h).map(|_| rng.normal()).collect();
            let y: Vec<f64> = (0..n * h).map(|_| rng.normal()).collect();
            let num = |i: usize| {
                (0..h)
                    .map(|j| (a[i * h + j] - y[i * h + j]).powi(2))
                    .sum::<f64>()
            };
            let den = |i: usize| (0..h).map(|j| y[i * h + j].powi(2)).sum::<f64>();
            let window = (0..n).map(num).sum::<f64>() / (0..n).map(den).sum::<f64>();
            let token = (0..n).map(|i| num(i) / den(i)).sum::<f64>() / n as f64;
            for (kind, want) in [(HiddenLoss::Window, window), (HiddenLoss::Token, token)] {
                let got = kind
                    .of(tensor(&a, n, h), tensor(&y, n, h))
                    .into_scalar()
                    .elem::<f64>();
                assert!(
                    (got - want).abs() <= 1e-5 * want,
                    "{n}x{h} {}: {got} vs {want}",
                    kind.name()
                );
            }
        }
        // Token 0 of y is 100× the others, and so is its error: the window loss is that token's.
        let (n, h) = (4, 8);
        let y: Vec<f64> = (0..n * h)
            .map(|i| if i < h { 100.0 } else { 1.0 })
            .collect();
        let a: Vec<f64> = y.iter().map(|v| v * 1.1).collect();
        let of = |k: HiddenLoss| {
            k.of(tensor(&a, n, h), tensor(&y, n, h))
                .into_scalar()
                .elem::<f64>()
        };
        assert!((of(HiddenLoss::Window) - 0.01).abs() < 1e-6);
        assert!((of(HiddenLoss::Token) - 0.01).abs() < 1e-6);
        let a2: Vec<f64> = y
            .iter()
            .enumerate()
            .map(|(i, v)| if i < h { *v } else { v * 1.1 })
            .collect();
        let of2 = |k: HiddenLoss| {
            k.of(tensor(&a2, n, h), tensor(&y, n, h))
                .into_scalar()
                .elem::<f64>()
        };
        // Exact first token: the window loss hardly sees the other three, the token loss does.
        assert!(
            of2(HiddenLoss::Window) < 1e-5,
            "{}",
            of2(HiddenLoss::Window)
        );
        assert!((of2(HiddenLoss::Token) - 0.0075).abs() < 1e-6);
    }
}
