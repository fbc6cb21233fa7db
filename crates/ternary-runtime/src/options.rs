//! What a [`Runtime`](crate::Runtime) is built with.

use ternary_core::kernels::Level;

use crate::error::{Result, RuntimeError};

/// Element type of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KvType {
    /// `f32`: the reference's precision (the logits tests use it).
    #[default]
    F32,
    /// IEEE `f16` (half the memory; keys and values rounded once when stored).
    F16,
}

/// How the output head (`lm_head`) multiplies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LmHead {
    /// As the model holds it: f32 for float heads (exact against the reference), GGUF blocks
    /// for a block-quantized head (a `Q6_K` head multiplies int8 activations quantized per
    /// 256 values, as the Burn model does).
    #[default]
    AsModel,
    /// Int8 per row: `w[r, c] ≈ s_r · q[r, c]`, `s_r = max_c |w[r, c]| / 127`,
    /// `q = round(w / s_r)`, times per-token int8 activations
    /// ([`QuantizedActivations`](ternary_core::QuantizedActivations)):
    /// `y[j, r] = s_r · s_j · Σ_c q[r, c] · q[j, c]` (exact `i32` sums). A quarter of the f32
    /// head's bytes per token; logits move by the rounding of both operands. Only for float
    /// heads (other kinds keep their own arithmetic).
    Int8,
}

/// How float (dense `f32`) layers hold their weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatWeights {
    /// `f16` for a layer whose every weight is exactly an `f16` value (a model read from an
    /// F16 file, or one whose float layers were rounded to `f16` once), `f32` otherwise. The
    /// kernels widen `f16` exactly, so the logits are those of `f32` weights while a step
    /// reads half the bytes.
    #[default]
    Auto,
    /// `f32` always.
    F32,
    /// `f16`: weights that are not `f16` values are rounded to the nearest one (half the
    /// memory and bytes per token; logits move by that rounding). A layer holding a value
    /// beyond `f16`'s range (|v| > 65504) keeps `f32` rather than turn it into infinity.
    F16,
}

/// Which activations the ternary layers ([`TernaryLinear`](ternary_layers::TernaryLinear))
/// multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TernaryActivations {
    /// [`AsLayer`](Self::AsLayer), except that a layer left on `LinearPath::Auto` takes
    /// [`Int8x2`](Self::Int8x2) when the kernels run at the AVX2 level: there the `f32` ternary
    /// kernels are compute-bound (8 lanes of blends per weight vector) and two int8 products
    /// are faster (SmolLM2-135M all ternary on an Intel Xeon capped at AVX2, one thread: decode
    /// 87 against 44 tokens/s), at `f32`'s accuracy (activations within `max|x| / 64516`).
    /// Other levels keep `f32`.
    #[default]
    Auto,
    /// The layer's own path: `f32` activations for `LinearPath::Auto` / `CpuF32` (the CPU
    /// default), per-token int8 for `CpuInt8`, two codes for `CpuInt8x2`; the same arithmetic
    /// as the reference.
    AsLayer,
    /// Per-token int8 for every ternary layer (`CpuInt8`'s rule): the fastest kernels.
    Int8,
    /// Two int8 codes per token for every ternary layer (`CpuInt8x2`'s rule: the first code and
    /// that of its rounding residual, about 16-bit activations): `f32`'s accuracy through the
    /// int8 kernels, at the cost of two products.
    Int8x2,
    /// `f32` for every ternary layer.
    F32,
}

/// Options of [`Runtime::from_model`](crate::Runtime::from_model).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// Threads taking part in each product, the calling thread included (`threads − 1`
    /// workers are started). Default: the machine's available parallelism.
    pub threads: usize,
    /// KV cache element type.
    pub kv: KvType,
    /// Output head arithmetic.
    pub lm_head: LmHead,
    /// Ternary layers' activations.
    pub ternary: TernaryActivations,
    /// Float layers' weight type (the output head included when it stays float), and the
    /// embedding table's (one allocation with a tied float head).
    pub float_weights: FloatWeights,
    /// Tokens per prefill batch: longer inputs run in batches of this many (each product then
    /// reads the weights once per batch). At least 1.
    pub chunk: usize,
    /// Most positions the cache holds; `None`: the model's `max_position_embeddings`. The
    /// cache grows as positions arrive, up to this.
    pub max_context: Option<usize>,
    /// SIMD level of the kernels; `None`: [`Level::detect`] (capped by `TERNARY_SIMD`).
    pub level: Option<Level>,
    /// Layers of a kind the runtime does not know: `false` (default) is an error when the
    /// runtime is built; `true` multiplies their dequantized `f32` weight
    /// (`LinearLayer::weight`), which is exact only for layers that compute `y = x·Wᵀ`.
    pub unknown_as_f32: bool,
    /// Back the projections' weights with 2 MiB huge pages at start (Linux; best effort; see
    /// [`HugePages`](ternary_core::kernels::HugePages)). Default `true`; the environment variable
    /// `TERNARY_HUGE_PAGES=0` turns it off whatever this says (for comparisons).
    pub huge_pages: bool,
}

impl Default for RuntimeOptions {
    fn default() -> Self {
        Self {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kv: KvType::F32,
            lm_head: LmHead::AsModel,
            ternary: TernaryActivations::Auto,
            float_weights: FloatWeights::Auto,
            chunk: 128,
            max_context: None,
            level: None,
            unknown_as_f32: false,
            huge_pages: true,
        }
    }
}

impl RuntimeOptions {
    /// [`RuntimeOptions::default`] with `threads` threads.
    pub fn with_threads(threads: usize) -> Self {
        Self {
            threads,
            ..Self::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.threads == 0 || self.threads > 1024 {
            return Err(RuntimeError::Options(format!(
                "threads {} must be in 1..=1024",
                self.threads
            )));
        }
        if self.chunk == 0 {
            return Err(RuntimeError::Options(
                "the prefill chunk must hold at least 1 token".into(),
            ));
        }
        if self.max_context == Some(0) {
            return Err(RuntimeError::Options(
                "max_context must be at least 1".into(),
            ));
        }
        if let Some(l) = self.level
            && !l.is_available()
        {
            return Err(RuntimeError::Options(format!(
                "SIMD level {l} is not available on this CPU (or is above TERNARY_SIMD)"
            )));
        }
        Ok(())
    }
}
