//! Llama-family decoder in Burn: RMSNorm, RoPE, grouped-query attention with a KV cache, gated
//! MLP; the same block runs Llama and BitNet b1.58.
//!
//! Batch size 1: activations are `[tokens, width]`. Per block, with `x` the residual stream:
//!
//! ```text
//! h = x + Wo · s1(attn(RoPE(Wq·n1(x)), RoPE(Wk·n1(x)), Wv·n1(x)))   n(x) = x / sqrt(mean(x²) + ε) · w
//! x' = h + Wdown · s2(act(Wgate·n2(h)) ⊙ Wup·n2(h))                  silu(z) = z·σ(z), relu²(z) = max(z, 0)²
//! ```
//!
//! and `logits = Whead · n(x_L)`. Attention is causal, `softmax(q·kᵀ/√d)·v`, with query head
//! `j` reading key/value head `j / (n_h / n_kv)`. Llama: `s1 = s2 = identity`, `act = silu`.
//! BitNet ([`Architecture::BitNet`]): `s1`, `s2` are the RMSNorms `attn_sub_norm` and
//! `ffn_sub_norm`, `act` is `hidden_act` (relu²). With a BitNet `quantization_config`
//! ([`BitNetQuant`](crate::config::BitNetQuant)) the converted projections are W1.58A8
//! [`BitLinear`] layers.

use crate::bitnet::{BitLinear, BitLinearPath, ternarize_absmean};
use crate::config::{Activation, Architecture, BitNetLinear, LlamaConfig};
use crate::error::{ModelError, Result};
use crate::linear::{HostLinear, LinearImpl};
use crate::quant::GgmlType;
use crate::quant_linear::QuantLinear;
use crate::weights::{HostTensor, TernaryWeight, WeightSource};
use burn::tensor::activation::{relu, silu, softmax};
use burn::tensor::{Int, Tensor, TensorData, backend::Backend};
use std::fmt::Debug;
use ternary_core::rotation::SignedHadamard;
use ternary_core::{Scales, TernaryMatrix};
use ternary_layers::{
    FloatScores, Linear, LinearPath, ScoreFn, TernaryBackend, TernaryLinear, to_rows,
};

/// RMSNorm weight `w`: `y = x / sqrt(mean(x²) + ε) ⊙ w` over the last dimension.
#[derive(Debug, Clone)]
pub struct RmsNorm<B: Backend> {
    weight: Tensor<B, 1>,
    eps: f64,
}

impl<B: Backend> RmsNorm<B> {
    /// Normalizes each row of `x: [tokens, width]`.
    pub fn forward(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        let ms = x.clone().powf_scalar(2.0).mean_dim(1);
        let inv = ms.add_scalar(self.eps).sqrt().recip();
        x.mul(inv).mul(self.weight.clone().unsqueeze::<2>())
    }

    /// The weight `w` `[width]`.
    pub fn weight(&self) -> &Tensor<B, 1> {
        &self.weight
    }

    /// Replaces `w` (a trained or gradient-tracked copy, say).
    ///
    /// # Errors
    /// A weight of another width.
    pub fn set_weight(&mut self, weight: Tensor<B, 1>) -> Result<()> {
        if weight.dims() != self.weight.dims() {
            return Err(ModelError::Input(format!(
                "an RMSNorm weight of width {} cannot replace one of width {}",
                weight.dims()[0],
                self.weight.dims()[0]
            )));
        }
        self.weight = weight;
        Ok(())
    }
}

/// One decoder block's weights.
#[derive(Debug)]
pub struct Block<B: Backend> {
    /// Pre-attention RMSNorm.
    pub attn_norm: RmsNorm<B>,
    /// Query projection `[n_h·d, H]`.
    pub q_proj: Linear<B>,
    /// Key projection `[n_kv·d, H]`.
    pub k_proj: Linear<B>,
    /// Value projection `[n_kv·d, H]`.
    pub v_proj: Linear<B>,
    /// Output projection `[H, n_h·d]`.
    pub o_proj: Linear<B>,
    /// BitNet's RMSNorm on the attention output, before `o_proj` (`attn_sub_norm`).
    pub attn_sub_norm: Option<RmsNorm<B>>,
    /// Pre-MLP RMSNorm.
    pub mlp_norm: RmsNorm<B>,
    /// BitNet's RMSNorm on `act(gate) ⊙ up`, before `down_proj` (`ffn_sub_norm`).
    pub ffn_sub_norm: Option<RmsNorm<B>>,
    /// MLP gate `[F, H]`.
    pub gate_proj: Linear<B>,
    /// MLP up `[F, H]`.
    pub up_proj: Linear<B>,
    /// MLP down `[H, F]`.
    pub down_proj: Linear<B>,
}

/// Keys and values seen so far, per layer: `[n_kv, positions, d]` each.
#[derive(Debug, Clone)]
pub struct KvCache<B: Backend> {
    layers: Vec<Option<(Tensor<B, 3>, Tensor<B, 3>)>>,
    len: usize,
}

impl<B: Backend> KvCache<B> {
    /// An empty cache for `num_layers` layers.
    pub fn new(num_layers: usize) -> Self {
        Self {
            layers: vec![None; num_layers],
            len: 0,
        }
    }

    /// Number of positions cached.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every position.
    pub fn clear(&mut self) {
        self.layers.iter_mut().for_each(|l| *l = None);
        self.len = 0;
    }
}

/// Which positions [`Llama::forward`] returns logits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Every input position: `[tokens, V]`.
    All,
    /// Only the last input position: `[1, V]` (what generation needs).
    Last,
}

/// RoPE tables and causal mask of one run of positions.
struct Positions<B: Backend> {
    cos: Tensor<B, 3>,
    sin: Tensor<B, 3>,
    mask: Tensor<B, 3>,
}

/// The embedding table `[V, H]`: in host memory next to host float layers (a tied host head
/// shares it, so the table is held once), on the device otherwise.
enum Embedding<B: Backend> {
    Host(std::sync::Arc<Vec<f32>>),
    /// Host `f16` values (a file that stores them so, with no float head sharing the table):
    /// widened exactly on lookup, half the memory.
    HostF16(std::sync::Arc<Vec<half::f16>>),
    /// Host GGUF blocks (`Q6_K` in llama.cpp's files), dequantized a row at a time on lookup;
    /// a tied head multiplies the same bytes.
    Quant(QuantLinear),
    Device(Tensor<B, 2>),
}

impl<B: Backend> Debug for Embedding<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Host(w) => write!(f, "Embedding::Host({} values)", w.len()),
            Self::HostF16(w) => write!(f, "Embedding::HostF16({} values)", w.len()),
            Self::Quant(q) => write!(f, "Embedding::Quant({:?}, {:?})", q.ggml_type(), q.shape()),
            Self::Device(t) => write!(f, "Embedding::Device({:?})", t.dims()),
        }
    }
}

/// A Llama-family decoder.
#[derive(Debug)]
pub struct Llama<B: Backend> {
    config: LlamaConfig,
    embed: Embedding<B>,
    blocks: Vec<Block<B>>,
    norm: RmsNorm<B>,
    lm_head: Linear<B>,
    /// Inverse frequencies `θ^(−2i/d)`, `i < d/2`, in f64.
    inv_freq: Vec<f64>,
    device: B::Device,
    /// Raw attention scores `q·kᵀ` ([`FloatScores`] by default).
    score_fn: Box<dyn ScoreFn<B>>,
    /// The rotation before `down_proj` ([`LlamaConfig::ffn_rotation`]), or `None`.
    ffn_rotation: Option<FfnRotation<B>>,
}

/// [`LlamaConfig::ffn_rotation`] as tensors: `T(a)[blk] = (s_l[blk] ⊙ a[blk]) · H_b/√b` for
/// each row `a` of layer `l`'s `act(gate) ⊙ up` ([`SignedHadamard`]).
#[derive(Debug, Clone)]
struct FfnRotation<B: Backend> {
    /// `H_b / √b`, `[b, b]` (shared by the layers).
    matrix: Tensor<B, 2>,
    /// The signs `s_l`, `[1, F]`, per layer.
    signs: Vec<Tensor<B, 2>>,
}

impl<B: Backend> FfnRotation<B> {
    fn new(c: &LlamaConfig, seed: u64, device: &B::Device) -> Result<Self> {
        let f = c.intermediate_size;
        let rot = |l| {
            SignedHadamard::for_layer(f, seed, l).map_err(|e| ModelError::Config(e.to_string()))
        };
        let first = rot(0)?;
        let b = first.block();
        let matrix = Tensor::from_data(TensorData::new(first.block_matrix(), [b, b]), device);
        let signs = (0..c.num_layers)
            .map(|l| {
                let t = rot(l)?;
                Ok(Tensor::from_data(
                    TensorData::new(t.signs().to_vec(), [1, f]),
                    device,
                ))
            })
            .collect::<Result<_>>()?;
        Ok(Self { matrix, signs })
    }

    /// `T_l` of each row of `a: [n, F]`.
    fn apply(&self, layer: usize, a: Tensor<B, 2>) -> Tensor<B, 2> {
        let [n, f] = a.dims();
        let b = self.matrix.dims()[0];
        a.mul(self.signs[layer].clone())
            .reshape([n * f / b, b])
            .matmul(self.matrix.clone())
            .reshape([n, f])
    }
}

fn expect_shape(name: &str, t: &HostTensor, expected: &[usize]) -> Result<()> {
    if t.shape != expected || t.data.len() != expected.iter().product::<usize>() {
        return Err(ModelError::Shape {
            name: name.to_string(),
            expected: expected.to_vec(),
            found: t.shape.clone(),
        });
    }
    Ok(())
}

impl<B: TernaryBackend> Llama<B> {
    /// Builds the model from Hugging Face-named weights, checking every shape, with the
    /// backend's default float linear layers ([`LinearImpl::default_for`]).
    pub fn from_weights(
        config: LlamaConfig,
        src: &dyn WeightSource,
        device: &B::Device,
    ) -> Result<Self> {
        Self::from_weights_with(config, src, device, LinearImpl::default_for::<B>())
    }

    /// [`Llama::from_weights`] with an explicit kind of float linear layer.
    ///
    /// Linear layers the configuration's [`BitNetQuant`](crate::config::BitNetQuant) converts
    /// are [`BitLinear`] (host int8 kernels unless `linear_impl` is [`LinearImpl::Burn`], which
    /// takes the Burn path); weights the source stores ternary ([`WeightSource::ternary`]) in
    /// a float model are [`TernaryLinear`] layers.
    pub fn from_weights_with(
        config: LlamaConfig,
        src: &dyn WeightSource,
        device: &B::Device,
        linear_impl: LinearImpl,
    ) -> Result<Self> {
        config.validate()?;
        let c = &config;
        let (h, f, d) = (c.hidden_size, c.intermediate_size, c.head_dim);
        let get = |name: &str, shape: &[usize]| -> Result<HostTensor> {
            let t = src.tensor(name)?;
            expect_shape(name, &t, shape)?;
            Ok(t)
        };
        let quantized = |name: &str, out: usize, inp: usize| -> Result<Option<Linear<B>>> {
            if linear_impl != LinearImpl::Quantized {
                return Ok(None);
            }
            let Some(q) = src.quantized(name)? else {
                return Ok(None);
            };
            if (q.rows, q.cols) != (out, inp) {
                return Err(ModelError::Shape {
                    name: name.to_string(),
                    expected: vec![out, inp],
                    found: vec![q.rows, q.cols],
                });
            }
            Ok(Some(Box::new(QuantLinear::new(name, q)?)))
        };
        let bit_path = match linear_impl {
            LinearImpl::Burn => BitLinearPath::Burn,
            LinearImpl::Host | LinearImpl::Quantized => BitLinearPath::HostInt8,
        };
        let ternary = |name: &str, out: usize, inp: usize| -> Result<Option<TernaryWeight>> {
            let Some(t) = src.ternary(name)? else {
                return Ok(None);
            };
            if (t.matrix.rows(), t.matrix.cols()) != (out, inp) {
                return Err(ModelError::Shape {
                    name: name.to_string(),
                    expected: vec![out, inp],
                    found: vec![t.matrix.rows(), t.matrix.cols()],
                });
            }
            Ok(Some(t))
        };
        // A W1.58A8 layer: trits and the divisor `d` of `y = Σ q·t / (k·d)` per the linear class.
        let bitnet = |name: &str, linear: BitNetLinear, out: usize, inp: usize| {
            let scale_name = format!("{}_scale", name);
            let weight_scale = || -> Result<f32> {
                let t = src.tensor(&scale_name)?;
                let [v] = t.data[..] else {
                    return Err(ModelError::Shape {
                        name: scale_name.clone(),
                        expected: vec![1],
                        found: t.shape,
                    });
                };
                if !v.is_finite() || v == 0.0 {
                    return Err(ModelError::Input(format!(
                        "tensor '{scale_name}': weight scale {v} is not finite and non-zero"
                    )));
                }
                Ok(v)
            };
            let (matrix, divisor) = match (ternary(name, out, inp)?, linear) {
                (Some(_), BitNetLinear::Online) => {
                    return Err(ModelError::Config(format!(
                        "tensor '{name}' is stored ternary, but quantization_mode 'online' \
                         expects float master weights"
                    )));
                }
                (Some(t), BitNetLinear::Packed) => {
                    let ws = t.weight_scale.map_or_else(weight_scale, Ok)?;
                    (t.matrix, ws)
                }
                (Some(t), BitNetLinear::AutoOffline) => {
                    let ws = t.weight_scale.map_or_else(weight_scale, Ok)?;
                    (t.matrix, 1.0 / ws)
                }
                (None, BitNetLinear::Online) => {
                    let w = get(name, &[out, inp])?;
                    ternarize_absmean(name, &w.data, out, inp)?
                }
                (None, BitNetLinear::AutoOffline) => {
                    let w = get(name, &[out, inp])?;
                    let mut trits = Vec::with_capacity(w.data.len());
                    for (i, &v) in w.data.iter().enumerate() {
                        match v {
                            -1.0 => trits.push(-1i8),
                            0.0 => trits.push(0),
                            1.0 => trits.push(1),
                            _ => {
                                return Err(ModelError::Input(format!(
                                    "tensor '{name}': value {v} at index {i} is not a trit \
                                     (offline autobitlinear weights are -1, 0 or 1)"
                                )));
                            }
                        }
                    }
                    let m = TernaryMatrix::from_trits(
                        out,
                        inp,
                        &trits,
                        Scales::per_row(vec![1.0; out]),
                    )?;
                    (m, 1.0 / weight_scale()?)
                }
                (None, BitNetLinear::Packed) => {
                    if !src.contains(name) {
                        return Err(ModelError::MissingTensor(name.to_string()));
                    }
                    return Err(ModelError::UnsupportedType {
                        name: name.to_string(),
                        kind: "float (linear_class 'bitlinear' stores packed uint8 weights)".into(),
                    });
                }
            };
            let l: Linear<B> = Box::new(BitLinear::<B>::new(
                name, matrix, divisor, bit_path, device,
            )?);
            Ok(l)
        };
        // A layer the source replaces right after building: zeros that are allocated but
        // never written (no resident memory on the host path).
        let placeholder = |name: &str, out: usize, inp: usize| -> Result<Linear<B>> {
            linear_impl.build::<B>(name, vec![0.0; out * inp], out, inp, device)
        };
        let linear = |name: &str, out: usize, inp: usize| -> Result<Linear<B>> {
            if src.placeholder(name) {
                return placeholder(name, out, inp);
            }
            let module = name.strip_suffix(".weight").unwrap_or(name);
            if let Some(q) = c.bitnet.as_ref().filter(|q| q.converts(module)) {
                return bitnet(name, q.linear, out, inp);
            }
            if let Some(l) = quantized(name, out, inp)? {
                return Ok(l);
            }
            if let Some(t) = ternary(name, out, inp)? {
                if t.weight_scale.is_some() {
                    return Err(ModelError::Config(format!(
                        "tensor '{name}' is packed ternary with a weight_scale, but config.json \
                         has no quantization_config with quant_method 'bitnet' (or lists the \
                         module in modules_to_not_convert)"
                    )));
                }
                // GGUF's ternary types (TQ1_0, TQ2_0, I2_S) are the native models' weights,
                // which their engines multiply with int8 activations (llama.cpp: `Q8_K`, per
                // 256 values; BitNet b1.58: per token): on the host they compute on per-token
                // int8 too, as `BitLinear` does, unless the caller switches the layer's path.
                let l = TernaryLinear::<B>::new(t.matrix, device)?;
                let l = if linear_impl.is_host() {
                    l.with_path(LinearPath::CpuInt8)
                } else {
                    l
                };
                return Ok(Box::new(l));
            }
            if linear_impl.is_host()
                && src.half_layers()
                && let Some(w) = src.half(name)?
            {
                let w = std::sync::Arc::new(w);
                return Ok(Box::new(HostLinear::from_shared_f16(name, w, out, inp)?));
            }
            let t = get(name, &[out, inp])?;
            linear_impl.build::<B>(name, t.data, out, inp, device)
        };
        let norm_of = |name: &str, width: usize| -> Result<RmsNorm<B>> {
            let t = get(name, &[width])?;
            Ok(RmsNorm {
                weight: Tensor::from_data(TensorData::new(t.data, [width]), device),
                eps: c.rms_norm_eps,
            })
        };
        let norm = |name: &str| norm_of(name, h);
        let bitnet_arch = c.architecture == Architecture::BitNet;
        let embed_name = "model.embed_tokens.weight";
        // A host table no float head shares may stay in the f16 the source holds it in.
        let head_shares = !src.placeholder("lm_head.weight")
            && (c.tie_word_embeddings || !src.contains("lm_head.weight"));
        // A host table the source keeps in blocks stays in them: always for `Q6_K` (multiplied
        // with int8 activations, as llama.cpp does), for Q4_0/Q4_1/Q8_0 with
        // `LinearImpl::Quantized`. A tied head then multiplies the same bytes.
        let table = match linear_impl.is_host() {
            true => src
                .quantized(embed_name)?
                .filter(|q| q.kind == GgmlType::Q6_K || linear_impl == LinearImpl::Quantized),
            false => None,
        };
        let table = match table {
            Some(q) if (q.rows, q.cols) != (c.vocab_size, h) => {
                return Err(ModelError::Shape {
                    name: embed_name.to_string(),
                    expected: vec![c.vocab_size, h],
                    found: vec![q.rows, q.cols],
                });
            }
            Some(q) => Some(QuantLinear::new(embed_name, q)?),
            None => None,
        };
        let half =
            if linear_impl.is_host() && (!head_shares || src.half_layers()) && table.is_none() {
                src.half(embed_name)?
            } else {
                None
            };
        let (embed, half) = match (&table, half) {
            (Some(_), _) => (std::sync::Arc::new(Vec::new()), None),
            (None, half) => match half {
                Some(w) if w.len() == c.vocab_size * h => (
                    std::sync::Arc::new(Vec::new()),
                    Some(std::sync::Arc::new(w)),
                ),
                Some(w) => {
                    return Err(ModelError::Shape {
                        name: embed_name.to_string(),
                        expected: vec![c.vocab_size, h],
                        found: vec![w.len()],
                    });
                }
                None => (
                    std::sync::Arc::new(get(embed_name, &[c.vocab_size, h])?.data),
                    None,
                ),
            },
        };
        let lm_head: Linear<B> = if src.placeholder("lm_head.weight") {
            placeholder("lm_head.weight", c.vocab_size, h)?
        } else if c.tie_word_embeddings || !src.contains("lm_head.weight") {
            if c.bitnet.as_ref().is_some_and(|q| q.converts("lm_head")) {
                return Err(ModelError::Config(
                    "a tied output head converted to W1.58A8 (modules_to_not_convert without \
                     'lm_head') is not supported"
                        .into(),
                ));
            }
            let shared = match (&table, &half) {
                (Some(t), _) => Some(Box::new(t.clone()) as Linear<B>),
                (None, Some(w)) => Some(Box::new(HostLinear::from_shared_f16(
                    embed_name,
                    std::sync::Arc::clone(w),
                    c.vocab_size,
                    h,
                )?) as Linear<B>),
                (None, None) => None,
            };
            match shared.map_or_else(|| quantized(embed_name, c.vocab_size, h), |l| Ok(Some(l)))? {
                Some(l) => l,
                None => linear_impl.build_shared::<B>(
                    embed_name,
                    std::sync::Arc::clone(&embed),
                    c.vocab_size,
                    h,
                    device,
                )?,
            }
        } else {
            linear("lm_head.weight", c.vocab_size, h)?
        };
        // Grown as blocks load: `num_layers` comes from the file and is checked only by the
        // tensors each block needs.
        let mut blocks = Vec::new();
        for l in 0..c.num_layers {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            blocks.push(Block {
                attn_norm: norm(&p("input_layernorm.weight"))?,
                q_proj: linear(&p("self_attn.q_proj.weight"), c.num_heads * d, h)?,
                k_proj: linear(&p("self_attn.k_proj.weight"), c.num_kv_heads * d, h)?,
                v_proj: linear(&p("self_attn.v_proj.weight"), c.num_kv_heads * d, h)?,
                attn_sub_norm: bitnet_arch
                    .then(|| norm_of(&p("self_attn.attn_sub_norm.weight"), c.num_heads * d))
                    .transpose()?,
                o_proj: linear(&p("self_attn.o_proj.weight"), h, c.num_heads * d)?,
                mlp_norm: norm(&p("post_attention_layernorm.weight"))?,
                ffn_sub_norm: bitnet_arch
                    .then(|| norm_of(&p("mlp.ffn_sub_norm.weight"), f))
                    .transpose()?,
                gate_proj: linear(&p("mlp.gate_proj.weight"), f, h)?,
                up_proj: linear(&p("mlp.up_proj.weight"), f, h)?,
                down_proj: linear(&p("mlp.down_proj.weight"), h, f)?,
            });
        }
        let inv_freq = (0..d / 2)
            .map(|i| c.rope_theta.powf(-((2 * i) as f64) / d as f64))
            .collect();
        Ok(Self {
            embed: if let Some(t) = table {
                Embedding::Quant(t)
            } else if let Some(w) = half {
                Embedding::HostF16(w)
            } else if linear_impl.is_host() {
                Embedding::Host(embed)
            } else {
                // Unshared once the head is built on the device: moved, not copied.
                let data = std::sync::Arc::try_unwrap(embed).unwrap_or_else(|a| (*a).clone());
                Embedding::Device(Tensor::from_data(
                    TensorData::new(data, [c.vocab_size, h]),
                    device,
                ))
            },
            blocks,
            norm: norm("model.norm.weight")?,
            lm_head,
            inv_freq,
            device: device.clone(),
            score_fn: Box::new(FloatScores),
            ffn_rotation: config
                .ffn_rotation
                .map(|seed| FfnRotation::new(&config, seed, device))
                .transpose()?,
            config,
        })
    }
}

impl<B: Backend> Llama<B> {
    /// The configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// A fresh cache sized for this model.
    pub fn new_cache(&self) -> KvCache<B> {
        KvCache::new(self.config.num_layers)
    }

    /// Replaces the attention-score function of every block (see [`ScoreFn`]).
    pub fn set_score_fn(&mut self, score_fn: Box<dyn ScoreFn<B>>) {
        self.score_fn = score_fn;
    }

    /// Restores the default float scores ([`FloatScores`]).
    pub fn reset_score_fn(&mut self) {
        self.score_fn = Box::new(FloatScores);
    }

    /// The attention-score function in use.
    pub fn score_fn(&self) -> &dyn ScoreFn<B> {
        self.score_fn.as_ref()
    }

    /// Every linear layer with its Hugging Face name (e.g.
    /// `model.layers.0.self_attn.q_proj`, `lm_head`), for inspection or replacement.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear<B>)> {
        let mut out = Vec::with_capacity(self.blocks.len() * 7 + 1);
        for (l, b) in self.blocks.iter_mut().enumerate() {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            out.push((p("self_attn.q_proj"), &mut b.q_proj));
            out.push((p("self_attn.k_proj"), &mut b.k_proj));
            out.push((p("self_attn.v_proj"), &mut b.v_proj));
            out.push((p("self_attn.o_proj"), &mut b.o_proj));
            out.push((p("mlp.gate_proj"), &mut b.gate_proj));
            out.push((p("mlp.up_proj"), &mut b.up_proj));
            out.push((p("mlp.down_proj"), &mut b.down_proj));
        }
        out.push(("lm_head".to_string(), &mut self.lm_head));
        out
    }

    /// Every RMSNorm with the Hugging Face name of its weight, in [`Llama::norm_tensors`]'
    /// order (e.g. `model.layers.0.input_layernorm.weight`, last `model.norm.weight`).
    pub fn norms_mut(&mut self) -> Vec<(String, &mut RmsNorm<B>)> {
        let mut out = Vec::with_capacity(self.blocks.len() * 4 + 1);
        for (l, b) in self.blocks.iter_mut().enumerate() {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            out.push((p("input_layernorm.weight"), &mut b.attn_norm));
            out.push((p("post_attention_layernorm.weight"), &mut b.mlp_norm));
            if let Some(sub) = &mut b.attn_sub_norm {
                out.push((p("self_attn.attn_sub_norm.weight"), sub));
            }
            if let Some(sub) = &mut b.ffn_sub_norm {
                out.push((p("mlp.ffn_sub_norm.weight"), sub));
            }
        }
        out.push(("model.norm.weight".to_string(), &mut self.norm));
        out
    }

    /// Every RMSNorm with the name of its weight, read-only ([`Llama::norms_mut`]).
    pub fn norms(&self) -> Vec<(String, &RmsNorm<B>)> {
        let mut out = Vec::with_capacity(self.blocks.len() * 4 + 1);
        for (l, b) in self.blocks.iter().enumerate() {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            out.push((p("input_layernorm.weight"), &b.attn_norm));
            out.push((p("post_attention_layernorm.weight"), &b.mlp_norm));
            if let Some(sub) = &b.attn_sub_norm {
                out.push((p("self_attn.attn_sub_norm.weight"), sub));
            }
            if let Some(sub) = &b.ffn_sub_norm {
                out.push((p("mlp.ffn_sub_norm.weight"), sub));
            }
        }
        out.push(("model.norm.weight".to_string(), &self.norm));
        out
    }

    /// Every linear layer with its Hugging Face name, read-only.
    pub fn linears(&self) -> Vec<(String, &Linear<B>)> {
        let mut out = Vec::with_capacity(self.blocks.len() * 7 + 1);
        for (l, b) in self.blocks.iter().enumerate() {
            let p = |s: &str| format!("model.layers.{l}.{s}");
            out.push((p("self_attn.q_proj"), &b.q_proj));
            out.push((p("self_attn.k_proj"), &b.k_proj));
            out.push((p("self_attn.v_proj"), &b.v_proj));
            out.push((p("self_attn.o_proj"), &b.o_proj));
            out.push((p("mlp.gate_proj"), &b.gate_proj));
            out.push((p("mlp.up_proj"), &b.up_proj));
            out.push((p("mlp.down_proj"), &b.down_proj));
        }
        out.push(("lm_head".to_string(), &self.lm_head));
        out
    }

    /// `cos` and `sin` tables `[positions, d]` for positions `start..start + n`, each row
    /// `[cos(p·f_0) … cos(p·f_{d/2−1}), cos(p·f_0) … ]` (Hugging Face's duplicated halves).
    fn rope_tables(&self, start: usize, n: usize) -> (Tensor<B, 3>, Tensor<B, 3>) {
        let d = self.config.head_dim;
        let mut cos = Vec::with_capacity(n * d);
        let mut sin = Vec::with_capacity(n * d);
        for p in start..start + n {
            for _ in 0..2 {
                for &f in &self.inv_freq {
                    let a = p as f64 * f;
                    cos.push(a.cos() as f32);
                    sin.push(a.sin() as f32);
                }
            }
        }
        let t = |v: Vec<f32>| Tensor::from_data(TensorData::new(v, [1, n, d]), &self.device);
        (t(cos), t(sin))
    }

    /// `x·cos + rotate_half(x)·sin` on `x: [heads, tokens, d]`, `rotate_half(x) = [−x₂, x₁]`.
    fn rope(x: Tensor<B, 3>, cos: &Tensor<B, 3>, sin: &Tensor<B, 3>) -> Tensor<B, 3> {
        let [hd, n, d] = x.dims();
        let x1 = x.clone().slice([0..hd, 0..n, 0..d / 2]);
        let x2 = x.clone().slice([0..hd, 0..n, d / 2..d]);
        let rot = Tensor::cat(vec![x2.neg(), x1], 2);
        x.mul(cos.clone()).add(rot.mul(sin.clone()))
    }

    /// Checks `tokens` against the vocabulary.
    fn check_tokens(&self, tokens: &[u32]) -> Result<()> {
        if tokens.is_empty() {
            return Err(ModelError::Input("no tokens to run".into()));
        }
        let v = self.config.vocab_size;
        if let Some(&bad) = tokens.iter().find(|&&t| t as usize >= v) {
            return Err(ModelError::Input(format!(
                "token id {bad} is outside the vocabulary of {v}"
            )));
        }
        Ok(())
    }

    /// The embedding rows of `tokens`: `[tokens, H]`.
    ///
    /// # Errors
    /// No tokens, or a token outside the vocabulary.
    pub fn embed(&self, tokens: &[u32]) -> Result<Tensor<B, 2>> {
        self.check_tokens(tokens)?;
        match &self.embed {
            Embedding::Host(_) | Embedding::HostF16(_) | Embedding::Quant(_) => {
                let h = self.config.hidden_size;
                let mut rows = Vec::with_capacity(tokens.len() * h);
                for &t in tokens {
                    let t = t as usize;
                    match &self.embed {
                        Embedding::Host(w) => rows.extend_from_slice(&w[t * h..(t + 1) * h]),
                        Embedding::HostF16(w) => {
                            rows.extend(w[t * h..(t + 1) * h].iter().map(|v| v.to_f32()));
                        }
                        Embedding::Quant(q) => q.dequantize_row(t, &mut rows),
                        Embedding::Device(_) => {}
                    }
                }
                Ok(Tensor::from_data(
                    TensorData::new(rows, [tokens.len(), h]),
                    &self.device,
                ))
            }
            Embedding::Device(e) => {
                let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
                let ids = Tensor::<B, 1, Int>::from_data(
                    TensorData::new(ids, [tokens.len()]),
                    &self.device,
                );
                Ok(e.clone().select(0, ids))
            }
        }
    }

    /// The embedding table `[V, H]` row-major when the model keeps it in host memory (with
    /// host float layers): a shared handle, the same allocation as a tied float head's.
    pub fn embedding_host(&self) -> Option<std::sync::Arc<Vec<f32>>> {
        match &self.embed {
            Embedding::Host(w) => Some(std::sync::Arc::clone(w)),
            Embedding::HostF16(_) | Embedding::Quant(_) | Embedding::Device(_) => None,
        }
    }

    /// The embedding table `[V, H]` row-major when the model keeps it in host memory as
    /// `f16` values (a shared handle).
    pub fn embedding_host_f16(&self) -> Option<std::sync::Arc<Vec<half::f16>>> {
        match &self.embed {
            Embedding::HostF16(w) => Some(std::sync::Arc::clone(w)),
            Embedding::Host(_) | Embedding::Quant(_) | Embedding::Device(_) => None,
        }
    }

    /// The embedding table when the model keeps it in GGUF blocks on the host (a handle that
    /// shares the bytes, with a tied head's too).
    pub fn embedding_quant(&self) -> Option<&QuantLinear> {
        match &self.embed {
            Embedding::Quant(q) => Some(q),
            Embedding::Host(_) | Embedding::HostF16(_) | Embedding::Device(_) => None,
        }
    }

    /// The position tables of `n` tokens after `start` cached ones: RoPE `cos`, `sin` and the
    /// causal mask `[1, n, start + n]` (query `i` sees keys `j ≤ start + i`).
    fn positions(&self, start: usize, n: usize) -> Positions<B> {
        let total = start + n;
        let (cos, sin) = self.rope_tables(start, n);
        let mask: Vec<f32> = (0..n)
            .flat_map(|i| {
                (0..total).map(move |j| {
                    if j > start + i {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
            })
            .collect();
        let mask = Tensor::<B, 3>::from_data(TensorData::new(mask, [1, n, total]), &self.device);
        Positions { cos, sin, mask }
    }

    /// Block `layer` on the residual stream `x: [n, H]` (see the module docs), with the keys
    /// and values of earlier positions in `slot` (updated).
    fn block(
        &self,
        layer: usize,
        x: Tensor<B, 2>,
        pos: &Positions<B>,
        slot: &mut Option<(Tensor<B, 3>, Tensor<B, 3>)>,
    ) -> Tensor<B, 2> {
        let c = &self.config;
        let b = &self.blocks[layer];
        let n = x.dims()[0];
        let total = pos.mask.dims()[2];
        let (nh, nkv, d) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let group = nh / nkv;
        let scale = 1.0 / (d as f64).sqrt();
        let h = b.attn_norm.forward(x.clone());
        let heads = |t: Tensor<B, 2>, k: usize| t.reshape([n, k, d]).swap_dims(0, 1);
        let q = Self::rope(heads(b.q_proj.forward(h.clone()), nh), &pos.cos, &pos.sin);
        let k = Self::rope(heads(b.k_proj.forward(h.clone()), nkv), &pos.cos, &pos.sin);
        let v = heads(b.v_proj.forward(h), nkv);
        let (k, v) = match slot.take() {
            Some((pk, pv)) => (Tensor::cat(vec![pk, k], 1), Tensor::cat(vec![pv, v], 1)),
            None => (k, v),
        };
        *slot = Some((k.clone(), v.clone()));
        // Repeat each value head for its `group` query heads: [n_kv, T, d] -> [n_h, T, d].
        let v = v
            .unsqueeze_dim::<4>(1)
            .expand([nkv, group, total, d])
            .reshape([nh, total, d]);
        let scores = self
            .score_fn
            .scores(layer, q, k)
            .mul_scalar(scale)
            .add(pos.mask.clone());
        let attn = softmax(scores, 2).matmul(v); // [n_h, n, d]
        let attn = attn.swap_dims(0, 1).reshape([n, nh * d]);
        let attn = match &b.attn_sub_norm {
            Some(sub) => sub.forward(attn),
            None => attn,
        };
        let x = x.add(b.o_proj.forward(attn));
        let h = b.mlp_norm.forward(x.clone());
        let g = b.gate_proj.forward(h.clone());
        let g = match c.hidden_act {
            Activation::Silu => silu(g),
            Activation::Relu2 => {
                let r = relu(g);
                r.clone().mul(r)
            }
        };
        let a = g.mul(b.up_proj.forward(h));
        let a = match &b.ffn_sub_norm {
            Some(sub) => sub.forward(a),
            None => a,
        };
        let a = match &self.ffn_rotation {
            Some(r) => r.apply(layer, a),
            None => a,
        };
        x.add(b.down_proj.forward(a))
    }

    /// Blocks `layers` on the residual stream `x: [n, H]` of a whole sequence from position 0
    /// (no cache): the hidden state after block `layers.end − 1`, `[n, H]`. With
    /// [`Llama::embed`] and [`Llama::head`] this is [`Llama::forward`] split at block
    /// boundaries (for block-wise training and inspection).
    ///
    /// # Errors
    /// `layers` outside the model, or `x` not `[n ≥ 1, H]`.
    pub fn run_blocks(
        &self,
        x: Tensor<B, 2>,
        layers: std::ops::Range<usize>,
    ) -> Result<Tensor<B, 2>> {
        let [n, h] = x.dims();
        if n == 0 || h != self.config.hidden_size {
            return Err(ModelError::Input(format!(
                "hidden states must be [n >= 1, {}], got [{n}, {h}]",
                self.config.hidden_size
            )));
        }
        if layers.start > layers.end || layers.end > self.blocks.len() {
            return Err(ModelError::Input(format!(
                "blocks {layers:?} outside the model's {}",
                self.blocks.len()
            )));
        }
        let pos = self.positions(0, n);
        let mut x = x;
        for layer in layers {
            x = self.block(layer, x, &pos, &mut None);
        }
        Ok(x)
    }

    /// The final RMSNorm and `lm_head` on hidden states `[n, H]`: logits `[n, V]`.
    pub fn head(&self, x: Tensor<B, 2>) -> Tensor<B, 2> {
        self.lm_head.forward(self.norm.forward(x))
    }

    /// Runs `tokens` after the `cache.len()` positions already in `cache`, appends their keys
    /// and values to it, and returns logits `[tokens or 1, V]` (see [`Logits`]).
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache<B>,
        which: Logits,
    ) -> Result<Tensor<B, 2>> {
        let c = &self.config;
        let n = tokens.len();
        let mut x = self.embed(tokens)?;
        if cache.layers.len() != c.num_layers {
            return Err(ModelError::Input(format!(
                "cache has {} layers, model has {}",
                cache.layers.len(),
                c.num_layers
            )));
        }
        let start = cache.len;
        let pos = self.positions(start, n);
        for (layer, slot) in cache.layers.iter_mut().enumerate() {
            x = self.block(layer, x, &pos, slot);
        }
        cache.len = start + n;
        let x = match which {
            Logits::All => x,
            Logits::Last => x.slice([n - 1..n, 0..c.hidden_size]),
        };
        Ok(self.head(x))
    }

    /// The float tensors that are not linear layers, copied to the host in Hugging Face
    /// naming and shapes: `model.embed_tokens.weight` `[V, H]`, then per block
    /// `model.layers.{l}.input_layernorm.weight` and `…post_attention_layernorm.weight` `[H]`
    /// (BitNet also `…self_attn.attn_sub_norm.weight` `[n_h·d]` and `…mlp.ffn_sub_norm.weight`
    /// `[F]`), then `model.norm.weight` `[H]`. With [`Llama::linears`] this is every weight of the
    /// model (for saving it).
    pub fn float_tensors(&self) -> Result<Vec<(String, HostTensor)>> {
        let mut out = Vec::with_capacity(2 * self.blocks.len() + 2);
        let (v, h) = (self.config.vocab_size, self.config.hidden_size);
        out.push((
            "model.embed_tokens.weight".to_string(),
            HostTensor {
                shape: vec![v, h],
                data: self.embedding_rows(0..v)?,
            },
        ));
        out.extend(self.norm_tensors()?);
        Ok(out)
    }

    /// Rows `rows` of the embedding `[V, H]` copied to the host, row-major (`rows` is clamped
    /// to the vocabulary).
    pub fn embedding_rows(&self, rows: std::ops::Range<usize>) -> Result<Vec<f32>> {
        let (v, h) = (self.config.vocab_size, self.config.hidden_size);
        let (a, b) = (rows.start.min(v), rows.end.min(v));
        if a >= b {
            return Ok(Vec::new());
        }
        match &self.embed {
            Embedding::Host(w) => Ok(w[a * h..b * h].to_vec()),
            Embedding::HostF16(w) => Ok(w[a * h..b * h].iter().map(|v| v.to_f32()).collect()),
            Embedding::Quant(q) => {
                let mut out = Vec::with_capacity((b - a) * h);
                for r in a..b {
                    q.dequantize_row(r, &mut out);
                }
                Ok(out)
            }
            Embedding::Device(e) => Ok(to_rows(e.clone().slice([a..b, 0..h]))?),
        }
    }

    /// [`Llama::float_tensors`] without the embedding: the RMSNorm weights, in the same order.
    pub fn norm_tensors(&self) -> Result<Vec<(String, HostTensor)>> {
        let host1 = |name: String, t: &Tensor<B, 1>| -> Result<(String, HostTensor)> {
            let shape = t.dims().to_vec();
            let data = t
                .clone()
                .into_data()
                .convert::<f32>()
                .into_vec::<f32>()
                .map_err(|e| ModelError::Input(format!("cannot read {name} back: {e:?}")))?;
            Ok((name, HostTensor { shape, data }))
        };
        self.norms()
            .into_iter()
            .map(|(name, n)| host1(name, &n.weight))
            .collect()
    }
}
