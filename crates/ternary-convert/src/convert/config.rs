//! What [`convert`](super::convert) can be told: [`ConvertConfig`], its validation, and layer-name patterns.

use ternary_core::ScaleLayout;
use ternary_core::quant::Method;

use crate::error::{ConvertError, Result};
use crate::gptq::{GptqConfig, Grid};

/// How many trit-planes a converted layer gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Planes {
    /// One plane pair, `w = s·t` (the 3-level grid).
    #[default]
    One,
    /// Two plane pairs, `w = s·(3·t₁ + t₂)` (the 9-level grid; about 4 bits per weight in
    /// memory with the scales, ~3.2 packed).
    Two,
    /// Each layer quantized both ways; the budgeted search picks float, two planes or one plane
    /// per layer ([`ConvertConfig::budget`] required).
    Auto,
}

impl Planes {
    /// The name on the command line: `"1"`, `"2"`, `"auto"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::One => "1",
            Self::Two => "2",
            Self::Auto => "auto",
        }
    }

    /// The grids layers are quantized on, in the order the search uses them.
    pub fn grids(self) -> &'static [Grid] {
        match self {
            Self::One => &[Grid::Ternary],
            Self::Two => &[Grid::TwoPlane],
            Self::Auto => &[Grid::Ternary, Grid::TwoPlane],
        }
    }
}

impl std::fmt::Display for Planes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Planes {
    type Err = ConvertError;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "1" => Ok(Self::One),
            "2" => Ok(Self::Two),
            "auto" => Ok(Self::Auto),
            other => Err(ConvertError::Invalid(format!(
                "trit-planes {other:?}: expected 1, 2 or auto"
            ))),
        }
    }
}

/// Everything [`convert`](super::convert) can be told. See the [module docs](super) for the
/// pipeline.
#[derive(Debug, Clone, PartialEq)]
pub struct ConvertConfig {
    /// Scale rule per group (with GPTQ: how each group's scale is picked before rounding).
    pub method: Method,
    /// Scales per row or per group of columns.
    pub layout: ScaleLayout,
    /// Error-compensating rounding; `None` rounds each weight independently with `method`.
    pub gptq: Option<GptqConfig>,
    /// Candidate exponents `α` of activation-aware input scaling `c_j = E[|x_j|]^α`; the one
    /// with the smallest output error is kept per layer (`0` = no scaling). Empty: off.
    pub input_scale_alphas: Vec<f32>,
    /// Perplexity budget as a ratio to the float model (e.g. `1.05`); `None`: every layer
    /// not kept float becomes ternary.
    pub budget: Option<f64>,
    /// Layers that stay float: a pattern with `*` must match the whole name (glob), one
    /// without `*` matches names containing it (e.g. `lm_head`, `layers.0.`, `down_proj`).
    pub keep_float: Vec<String>,
    /// Calibration tokens for the statistics.
    pub calib_tokens: usize,
    /// Tokens per forward pass (chunk length) for calibration and perplexity.
    pub ctx: usize,
    /// Held-out chunks of `ctx` tokens for perplexity (budget search and report); at least 2.
    pub eval_chunks: usize,
    /// Tokens of the held-out chunk used for each layer's sensitivity.
    pub sensitivity_tokens: usize,
    /// Measure the calibration perplexity of the float and the converted model for the
    /// report even without a budget.
    pub measure: bool,
    /// Sequential quantization
    /// ([`quantize_model_sequential`](super::quantize_model_sequential)): each block is
    /// calibrated on the model whose earlier blocks are already quantized, so its rounding also
    /// compensates the error of its inputs. About two forward passes over the statistics
    /// tokens; pays off when most layers end up ternary (e.g. without a budget).
    pub sequential: bool,
    /// With [`ConvertConfig::sequential`], calibrate and quantize each block group by group of
    /// layers reading one input (`q/k/v`, then `o`, `gate/up`, `down`), each group with the
    /// block's earlier groups already quantized ("true sequential"), instead of the whole block
    /// on its float inputs. About five forward passes instead of two.
    pub sequential_layers: bool,
    /// Trit-planes per converted layer: one (default), two, or chosen per layer by the
    /// budgeted search ([`Planes::Auto`]). With two planes (or `Auto`) a tied `lm_head` stays
    /// float: it is also the embedding table.
    pub planes: Planes,
    /// Two-plane layers get free plane scales: each group's `(a₁, a₂)` re-solved by least
    /// squares for the planes' trits ([`refit_plane_scales`](crate::gptq::refit_plane_scales))
    /// instead of `3s` and `s`, with GPTQ's dampening. Such a layer is no longer on the 9-level
    /// grid, so `ternary finetune` cannot train it. Default off: on SmolLM2-135M it gained
    /// 0.2% of held-out perplexity (`docs/accuracy.md` §7b).
    pub free_plane_scales: bool,
    /// Before calibrating, rotate the residual stream by a random orthogonal matrix from this
    /// seed ([`rotate_residual`](crate::rotate::rotate_residual)): the same function, with
    /// the RMSNorm weights folded into the layers and the output head untied (one more float
    /// `vocab × hidden` matrix). A head that was tied stays float with two planes, as without
    /// rotation. Default off.
    pub rotate: Option<u64>,
    /// Before calibrating, rotate each key/value head's value space by its own random
    /// orthogonal matrix from this seed ([`rotate_heads`](crate::rotate::rotate_heads)): the
    /// same function, with `v_proj`'s rows and `o_proj`'s columns mixed within each head.
    /// Composes with [`rotate`](Self::rotate). Default off.
    pub rotate_heads: Option<u64>,
    /// Before calibrating, rotate `act(gate) ⊙ up` before `down_proj` by a signed block
    /// Hadamard transform from this seed ([`rotate_ffn`](crate::rotate::rotate_ffn)): the same
    /// function, with `down_proj`'s input channels mixed; the transform runs in every forward
    /// pass (the file records the seed). Composes with the other rotations. Default off.
    pub rotate_ffn: Option<u64>,
}

/// The best setting measured on SmolLM2-135M (`docs/accuracy.md`): GPTQ with activation-aware
/// group scales (groups of 64, λ = 0.01, scale refit), no input scaling, a 1.05× perplexity
/// budget, 4096 statistics tokens at most, ctx 512, 2 held-out chunks, 64 sensitivity tokens.
impl Default for ConvertConfig {
    fn default() -> Self {
        Self {
            method: Method::ActivationAware,
            layout: ScaleLayout::PerGroup { group_size: 64 },
            gptq: Some(GptqConfig::default()),
            input_scale_alphas: vec![],
            budget: Some(1.05),
            keep_float: vec![],
            calib_tokens: 4096,
            ctx: 512,
            eval_chunks: 2,
            sensitivity_tokens: 64,
            measure: true,
            sequential: false,
            sequential_layers: false,
            planes: Planes::One,
            free_plane_scales: false,
            rotate: None,
            rotate_heads: None,
            rotate_ffn: None,
        }
    }
}

/// Whether `name` matches `pattern` (see [`ConvertConfig::keep_float`]).
pub fn matches_pattern(pattern: &str, name: &str) -> bool {
    if !pattern.contains('*') {
        return name.contains(pattern);
    }
    let parts: Vec<&str> = pattern.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for p in &parts[1..parts.len() - 1] {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    true
}

pub(super) fn describe(cfg: &ConvertConfig, grid: Grid, alpha: f32) -> String {
    let layout = match cfg.layout {
        ScaleLayout::PerRow => "row".to_string(),
        ScaleLayout::PerGroup { group_size } => format!("g{group_size}"),
    };
    let mut s = format!(
        "{}{} {layout}",
        if cfg.gptq.is_some() { "gptq+" } else { "" },
        cfg.method
    );
    if grid == Grid::TwoPlane {
        s.push_str(if cfg.free_plane_scales {
            " 2p free"
        } else {
            " 2p"
        });
    }
    if cfg.rotate.is_some() {
        s.push_str(" rotated");
    }
    if cfg.rotate_heads.is_some() {
        s.push_str(" heads rotated");
    }
    if cfg.rotate_ffn.is_some() {
        s.push_str(" ffn rotated");
    }
    if alpha != 0.0 {
        s.push_str(&format!(" α={alpha}"));
    }
    s
}

pub(super) fn validate(cfg: &ConvertConfig) -> Result<()> {
    cfg.layout.validate()?;
    cfg.method.validate()?;
    if cfg.ctx < 4 {
        return Err(ConvertError::Invalid(format!(
            "context {} is too short (at least 4)",
            cfg.ctx
        )));
    }
    if cfg.eval_chunks < 2 && (cfg.budget.is_some() || cfg.measure) {
        return Err(ConvertError::Invalid(format!(
            "perplexity needs at least 2 held-out chunks, got {}",
            cfg.eval_chunks
        )));
    }
    if let Some(b) = cfg.budget
        && !(b.is_finite() && b >= 1.0)
    {
        return Err(ConvertError::Invalid(format!(
            "the perplexity budget is a ratio to the float model and must be >= 1, got {b}"
        )));
    }
    if cfg.calib_tokens < 2 {
        return Err(ConvertError::Invalid(format!(
            "at least 2 calibration tokens are needed, got {}",
            cfg.calib_tokens
        )));
    }
    if cfg.sensitivity_tokens < 2 && cfg.budget.is_some() {
        return Err(ConvertError::Invalid(format!(
            "sensitivity needs at least 2 tokens, got {}",
            cfg.sensitivity_tokens
        )));
    }
    if let Some(g) = cfg.gptq
        && !(g.damp.is_finite() && g.damp >= 0.0)
    {
        return Err(ConvertError::Invalid(format!(
            "GPTQ dampening must be finite and >= 0, got {}",
            g.damp
        )));
    }
    if cfg.planes == Planes::Auto && cfg.budget.is_none() {
        return Err(ConvertError::Invalid(
            "planes = auto lets the budgeted search choose per layer; it needs a perplexity \
             budget"
                .into(),
        ));
    }
    if cfg.planes == Planes::Auto && cfg.sequential {
        return Err(ConvertError::Invalid(
            "planes = auto with sequential quantization is not supported (each block would be \
             calibrated on one choice of planes)"
                .into(),
        ));
    }
    if cfg.sequential_layers && !cfg.sequential {
        return Err(ConvertError::Invalid(
            "sequential_layers refines sequential quantization; set sequential too".into(),
        ));
    }
    if let Some(a) = cfg.input_scale_alphas.iter().find(|a| !a.is_finite()) {
        return Err(ConvertError::Invalid(format!("input-scale exponent {a}")));
    }
    Ok(())
}
