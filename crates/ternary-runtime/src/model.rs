//! The weights in the runtime's form, built from an already-loaded Burn [`Llama`]: every
//! format (GGUF, Hugging Face checkpoints, converted files) reaches the runtime through the
//! same model, and the big tensors are shared with it (`Arc`), not copied.
//!
//! Linear layers are recognized by downcasting (`LinearLayer::as_any`): `TernaryLinear` (one
//! or two trit-planes),
//! `BitLinear`, `HostLinear`, `FloatLinear` (weights copied to the host), `QuantLinear`.
//! Any other kind is an error unless
//! [`RuntimeOptions::unknown_as_f32`](crate::RuntimeOptions::unknown_as_f32) asks for its
//! dequantized `f32` weight.

use std::collections::HashMap;
use std::sync::Arc;

use ternary_core::kernels::{DotI8, Level, PackedTernary};
use ternary_core::rotation::SignedHadamard;
use ternary_layers::{LinearPath, LinearWeights, TernaryBackend, TernaryLinear, to_rows};
use ternary_models::linear::{FloatLinear, HostLinear, HostWeights};
use ternary_models::quant_linear::QuantLinear;
use ternary_models::{Activation, BitLinear, Llama, LlamaConfig};

use crate::error::{Result, RuntimeError};
use crate::options::{FloatWeights, LmHead, RuntimeOptions, TernaryActivations};
use crate::proj::{Kernel, Proj, quantize_rows_i8, to_f16};

/// One decoder block.
#[derive(Debug)]
pub(crate) struct Layer {
    pub attn_norm: Vec<f32>,
    /// `q_proj`, `k_proj`, `v_proj`.
    pub qkv: [Proj; 3],
    pub attn_sub_norm: Option<Vec<f32>>,
    pub o: Proj,
    pub mlp_norm: Vec<f32>,
    pub ffn_sub_norm: Option<Vec<f32>>,
    /// The rotation of `act(gate) ⊙ up` before `down_proj` (`LlamaConfig::ffn_rotation`).
    pub ffn_rotation: Option<SignedHadamard>,
    pub gate: Proj,
    pub up: Proj,
    pub down: Proj,
}

/// The embedding table `[V, H]` row-major, in `f32`, in `f16` (widened exactly on lookup) or
/// in GGUF blocks (dequantized a row at a time; a tied head multiplies the same bytes).
#[derive(Debug)]
pub(crate) enum Table {
    F32(Arc<Vec<f32>>),
    F16(Arc<Vec<half::f16>>),
    Quant(QuantLinear),
}

impl Table {
    /// Bytes held.
    fn bytes(&self) -> u64 {
        match self {
            Self::F32(w) => 4 * w.len() as u64,
            Self::F16(w) => 2 * w.len() as u64,
            Self::Quant(q) => q.storage_bytes() as u64,
        }
    }

    /// Bytes one looked-up row reads (`h` values).
    fn row_bytes(&self, h: usize) -> u64 {
        match self {
            Self::F32(_) => 4 * h as u64,
            Self::F16(_) => 2 * h as u64,
            Self::Quant(q) => (q.storage_bytes() / q.shape().0.max(1)) as u64,
        }
    }

    /// Appends row `r` of width `h`, as `f32`, to `out`.
    pub fn push_row(&self, r: usize, h: usize, out: &mut Vec<f32>) {
        match self {
            Self::F32(w) => out.extend_from_slice(&w[r * h..(r + 1) * h]),
            Self::F16(w) => out.extend(w[r * h..(r + 1) * h].iter().map(|v| v.to_f32())),
            Self::Quant(q) => q.dequantize_row(r, out),
        }
    }

    /// Whether `k` multiplies this very allocation (a tied head).
    fn shared_with(&self, k: &Kernel) -> bool {
        match (self, k) {
            (Self::F32(a), Kernel::F32(b)) => Arc::ptr_eq(a, b),
            (Self::F16(a), Kernel::F16(b)) => Arc::ptr_eq(a, b),
            (Self::Quant(a), Kernel::Quant(b)) => a.shares_bytes_with(b),
            _ => false,
        }
    }
}

/// The whole model.
#[derive(Debug)]
pub(crate) struct Model {
    pub config: LlamaConfig,
    pub embed: Table,
    pub layers: Vec<Layer>,
    pub norm: Vec<f32>,
    pub lm_head: Proj,
    pub eps: f32,
    pub relu2: bool,
}

impl Model {
    /// Puts the projections' weights (what every token streams) on huge pages where the OS
    /// allows ([`HugePages`](ternary_core::kernels::HugePages)):
    /// returns the bytes now on them.
    pub fn advise_huge_pages(&self) -> usize {
        let mut pages = ternary_core::kernels::HugePages::default();
        let projections = self
            .layers
            .iter()
            .flat_map(|l| l.qkv.iter().chain([&l.o, &l.gate, &l.up, &l.down]))
            .chain([&self.lm_head]);
        for p in projections {
            match &p.kernel {
                Kernel::TernaryF32(m) => {
                    pages.add(m.plus());
                    pages.add(m.minus());
                }
                Kernel::TernaryI8(m) | Kernel::BitNet { m, .. } => m.add_huge_pages(&mut pages),
                Kernel::TwoPlaneI8(m) => m.iter().for_each(|m| m.add_huge_pages(&mut pages)),
                Kernel::F32(w) => pages.add(w.as_slice()),
                Kernel::F16(w) => pages.add(w.as_slice()),
                Kernel::Quant(q) => q.add_huge_pages(&mut pages),
                Kernel::I8Rows { q, .. } => pages.add(q.as_slice()),
                Kernel::TwoPlaneF32(_) => {}
            }
        }
        pages.advise()
    }

    /// Repacks every int8 ternary projection for `level`'s kernel
    /// ([`PackedTernary::repacked`]) whose planes nothing else holds any more (the Burn model
    /// they came from was dropped): the same memory, and at AVX2 a faster one-token product.
    /// Returns how many were repacked.
    pub fn repack(&mut self, level: Level) -> usize {
        let mut done = 0;
        let mut one = |p: &mut Proj| {
            let k = std::mem::replace(&mut p.kernel, Kernel::F32(Arc::new(Vec::new())));
            p.kernel = match k {
                Kernel::TernaryI8(m) => Kernel::TernaryI8(m.repacked(level)),
                Kernel::TwoPlaneI8([high, low]) => {
                    Kernel::TwoPlaneI8([high.repacked(level), low.repacked(level)])
                }
                Kernel::BitNet { m, divisor } => Kernel::BitNet {
                    m: m.repacked(level),
                    divisor,
                },
                k => k,
            };
            done += usize::from(match &p.kernel {
                Kernel::TernaryI8(m) | Kernel::BitNet { m, .. } => m.is_repacked(),
                Kernel::TwoPlaneI8(m) => m.iter().all(PackedTernary::is_repacked),
                _ => false,
            });
        };
        for l in &mut self.layers {
            for p in l.qkv.iter_mut() {
                one(p);
            }
            for p in [&mut l.o, &mut l.gate, &mut l.up, &mut l.down] {
                one(p);
            }
        }
        one(&mut self.lm_head);
        done
    }

    /// How the ternary projections (the output head included) take their activations: `"f32"`,
    /// `"int8"`, `"int8x2"`, `"bitnet"` (BitNet's own int8 rule), `"mixed"`, or `"none"`
    /// without ternary projections.
    pub fn ternary_activations(&self) -> &'static str {
        let mut kinds = self
            .layers
            .iter()
            .flat_map(|l| l.qkv.iter().chain([&l.o, &l.gate, &l.up, &l.down]))
            .chain([&self.lm_head])
            .filter_map(|p| match &p.kernel {
                Kernel::TernaryF32(_) | Kernel::TwoPlaneF32(_) => Some("f32"),
                Kernel::TernaryI8(_) | Kernel::TwoPlaneI8(_) if p.two_codes => Some("int8x2"),
                Kernel::TernaryI8(_) | Kernel::TwoPlaneI8(_) => Some("int8"),
                Kernel::BitNet { .. } => Some("bitnet"),
                _ => None,
            });
        match kinds.next() {
            None => "none",
            Some(k) if kinds.all(|o| o == k) => k,
            Some(_) => "mixed",
        }
    }

    /// Weight bytes one decode token reads: every projection, the final norm's and each
    /// block's norms, and one embedding row.
    pub fn bytes_per_token(&self) -> u64 {
        let h = self.config.hidden_size as u64;
        let mut b = self.embed.row_bytes(h as usize) + self.lm_head.weight_bytes() + 4 * h;
        for l in &self.layers {
            b += l.qkv.iter().map(Proj::weight_bytes).sum::<u64>()
                + l.o.weight_bytes()
                + l.gate.weight_bytes()
                + l.up.weight_bytes()
                + l.down.weight_bytes()
                + 4 * (l.attn_norm.len() + l.mlp_norm.len()) as u64
                + 4 * l.attn_sub_norm.as_ref().map_or(0, Vec::len) as u64
                + 4 * l.ffn_sub_norm.as_ref().map_or(0, Vec::len) as u64
                + 4 * l.ffn_rotation.as_ref().map_or(0, SignedHadamard::width) as u64;
        }
        b
    }

    /// Bytes of weights the runtime keeps alive: every weight once (a tied f32 head that
    /// shares the embedding's allocation is not counted again).
    pub fn weight_bytes(&self) -> u64 {
        let head = if self.embed.shared_with(&self.lm_head.kernel) {
            self.lm_head.weight_bytes()
        } else {
            0
        };
        self.bytes_per_token() + self.embed.bytes()
            - self.embed.row_bytes(self.config.hidden_size)
            - head
    }
}

/// A projection from a Burn layer.
fn proj_of<B: TernaryBackend + 'static>(
    name: &str,
    l: &dyn ternary_layers::LinearLayer<B>,
    opts: &RuntimeOptions,
) -> Result<Proj> {
    let (rows, cols) = (l.out_features(), l.in_features());
    let plain = |kernel| Proj {
        kernel,
        rows,
        cols,
        bias: None,
        input_scale: None,
        two_codes: false,
    };
    let any = l.as_any();
    if let Some(t) = any.and_then(|a| a.downcast_ref::<TernaryLinear<B>>()) {
        let avx2 = || opts.level.unwrap_or_else(Level::detect) == Level::Avx2;
        let (int8, two_codes) = match opts.ternary {
            TernaryActivations::Auto if t.path() == LinearPath::Auto && avx2() => (true, true),
            TernaryActivations::Auto | TernaryActivations::AsLayer => match t.path().resolve::<B>()
            {
                LinearPath::CpuInt8 => (true, false),
                LinearPath::CpuInt8x2 => (true, true),
                _ => (false, false),
            },
            TernaryActivations::Int8 => (true, false),
            TernaryActivations::Int8x2 => (true, true),
            TernaryActivations::F32 => (false, false),
        };
        // Every plane of the layer: one, or two on the same activations.
        let kernel = match (t.weights(), int8) {
            (LinearWeights::One(m), true) => {
                Kernel::TernaryI8(PackedTernary::shared(Arc::clone(m)))
            }
            (LinearWeights::One(m), false) => Kernel::TernaryF32(Arc::clone(m)),
            (LinearWeights::Two(m), true) => {
                let (high, low) = m.planes_arc();
                Kernel::TwoPlaneI8([
                    PackedTernary::shared(Arc::clone(high)),
                    PackedTernary::shared(Arc::clone(low)),
                ])
            }
            (LinearWeights::Two(m), false) => Kernel::TwoPlaneF32(Arc::clone(m)),
        };
        return Ok(Proj {
            kernel,
            rows,
            cols,
            bias: t.bias().map(Arc::new),
            input_scale: t.input_scale().map(|d| Arc::new(d.to_vec())),
            two_codes,
        });
    }
    if let Some(b) = any.and_then(|a| a.downcast_ref::<BitLinear<B>>()) {
        return Ok(plain(Kernel::BitNet {
            m: PackedTernary::shared(Arc::clone(b.matrix_arc())),
            divisor: b.divisor(),
        }));
    }
    if let Some(h) = any.and_then(|a| a.downcast_ref::<HostLinear>()) {
        return Ok(plain(match h.weights() {
            HostWeights::F32(w) => Kernel::F32(Arc::clone(w)),
            // f16 values shared with the model, or widened when f32 weights are asked for.
            HostWeights::F16(w) if opts.float_weights == FloatWeights::F32 => {
                Kernel::F32(Arc::new(w.iter().map(|v| v.to_f32()).collect()))
            }
            HostWeights::F16(w) => Kernel::F16(Arc::clone(w)),
        }));
    }
    if let Some(q) = any.and_then(|a| a.downcast_ref::<QuantLinear>()) {
        return Ok(plain(Kernel::Quant(q.clone())));
    }
    let float = any.is_some_and(|a| a.is::<FloatLinear<B>>());
    if float || opts.unknown_as_f32 {
        let w = to_rows(l.weight()).map_err(|e| RuntimeError::Unsupported(e.to_string()))?;
        return Ok(plain(Kernel::F32(Arc::new(w))));
    }
    Err(RuntimeError::Unsupported(format!(
        "layer '{name}' is a '{}' layer, which the runtime does not know (set \
         RuntimeOptions::unknown_as_f32 to multiply its dequantized f32 weight)",
        l.kind()
    )))
}

/// Builds the runtime's model from `m`.
pub(crate) fn build<B: TernaryBackend + 'static>(
    m: &Llama<B>,
    opts: &RuntimeOptions,
) -> Result<Model> {
    let config = m.config().clone();
    if m.score_fn().name() != "float" {
        return Err(RuntimeError::Unsupported(format!(
            "the model's attention scores are '{}'; the runtime computes float scores \
             (reset_score_fn)",
            m.score_fn().name()
        )));
    }
    let (h, v) = (config.hidden_size, config.vocab_size);
    // The model's host table is shared (with a tied f32 head, one allocation serves both);
    // a table on a device is copied.
    let half = m.embedding_host_f16();
    let blocks = m.embedding_quant().cloned();
    let embed = match (m.embedding_host(), &half, &blocks) {
        (Some(w), _, _) => w,
        (None, Some(_), _) | (None, None, Some(_)) => Arc::new(Vec::new()),
        (None, None, None) => Arc::new(m.embedding_rows(0..v)?),
    };
    let held = match (&half, &blocks) {
        (Some(w), _) => w.len(),
        (None, Some(q)) => q.shape().0 * q.shape().1,
        (None, None) => embed.len(),
    };
    if held != v * h {
        return Err(RuntimeError::Unsupported(format!(
            "the embedding holds {held} values, expected {v} x {h}"
        )));
    }
    let mut tied = false;
    let mut projs: HashMap<String, Proj> = HashMap::new();
    for (name, l) in m.linears() {
        let mut p = proj_of::<B>(&name, l.as_ref(), opts)?;
        if name == "lm_head" {
            tied = matches!(&p.kernel, Kernel::F32(w) if Arc::ptr_eq(w, &embed));
        }
        if name == "lm_head" && opts.lm_head == LmHead::Int8 {
            let widened: Vec<f32>;
            let w: Option<&[f32]> = match &p.kernel {
                Kernel::F32(w) => Some(w),
                Kernel::F16(w) => {
                    widened = w.iter().map(|v| v.to_f32()).collect();
                    Some(&widened)
                }
                _ => None,
            };
            if let Some(w) = w {
                let k = DotI8::new(opts.level.unwrap_or_else(Level::detect))
                    .map_err(|e| RuntimeError::Options(e.to_string()))?;
                let (q, scales) = quantize_rows_i8(k, w, p.rows, p.cols)
                    .map_err(|e| RuntimeError::Unsupported(format!("lm_head: {e}")))?;
                p.kernel = Kernel::I8Rows { q, scales };
            }
        }
        if let Kernel::F32(w) = &p.kernel
            && let Some(h) = to_f16(w, opts.float_weights)
        {
            p.kernel = Kernel::F16(Arc::new(h));
        }
        projs.insert(name, p);
    }
    let mut norms: HashMap<String, Vec<f32>> = m
        .norm_tensors()?
        .into_iter()
        .map(|(n, t)| (n, t.data))
        .collect();
    let mut take_norm = |name: &str| {
        norms
            .remove(name)
            .ok_or_else(|| RuntimeError::Unsupported(format!("the model has no tensor '{name}'")))
    };
    let mut take = |name: String| {
        projs
            .remove(&name)
            .ok_or_else(|| RuntimeError::Unsupported(format!("the model has no layer '{name}'")))
    };
    let mut layers = Vec::with_capacity(config.num_layers);
    for l in 0..config.num_layers {
        let p = |s: &str| format!("model.layers.{l}.{s}");
        layers.push(Layer {
            attn_norm: take_norm(&p("input_layernorm.weight"))?,
            qkv: [
                take(p("self_attn.q_proj"))?,
                take(p("self_attn.k_proj"))?,
                take(p("self_attn.v_proj"))?,
            ],
            attn_sub_norm: take_norm(&p("self_attn.attn_sub_norm.weight")).ok(),
            o: take(p("self_attn.o_proj"))?,
            mlp_norm: take_norm(&p("post_attention_layernorm.weight"))?,
            ffn_sub_norm: take_norm(&p("mlp.ffn_sub_norm.weight")).ok(),
            ffn_rotation: config
                .ffn_rotation
                .map(|seed| SignedHadamard::for_layer(config.intermediate_size, seed, l))
                .transpose()
                .map_err(|e| RuntimeError::Unsupported(format!("FFN rotation: {e}")))?,
            gate: take(p("mlp.gate_proj"))?,
            up: take(p("mlp.up_proj"))?,
            down: take(p("mlp.down_proj"))?,
        });
    }
    let lm_head = take("lm_head".into())?;
    let norm = take_norm("model.norm.weight")?;
    // A tied float head and the table stay one allocation, in the head's type; otherwise
    // the table follows `float_weights` (so a table of f16 values is held as f16).
    let embed = match (&lm_head.kernel, tied, half, blocks) {
        (_, _, _, Some(q)) => Table::Quant(q),
        (_, _, Some(w), None) => Table::F16(w),
        (Kernel::F32(w), true, None, None) => Table::F32(Arc::clone(w)),
        (Kernel::F16(w), true, None, None) => Table::F16(Arc::clone(w)),
        _ => match to_f16(&embed, opts.float_weights) {
            Some(w) => Table::F16(Arc::new(w)),
            None => Table::F32(embed),
        },
    };
    let eps = config.rms_norm_eps as f32;
    let relu2 = config.hidden_act == Activation::Relu2;
    Ok(Model {
        config,
        embed,
        layers,
        norm,
        lm_head,
        eps,
        relu2,
    })
}
