//! `ternary quantize`: load a float model, convert it, print the plan, save it.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use indicatif::ProgressBar;
use ternary_convert::convert::{Planes, matches_pattern};
use ternary_convert::{ConversionReport, ConvertConfig, GptqConfig, Progress};
use ternary_core::ScaleLayout;
use ternary_core::quant::Method as CoreMethod;
use ternary_layers::Cpu;
use ternary_models::LoadedModel;

use crate::common::{
    CliError, Res, bar, is_converted, load_model, overwrites_input, read_text, secs, shown,
};

/// Quantization rule per scale group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MethodArg {
    /// BitNet b1.58: scale mean|w|, threshold half of it.
    Absmean,
    /// Ternary Weight Networks: threshold 0.7·mean|w|, least-squares scale.
    Twn,
    /// Scale max|w|, threshold half of it.
    Absmax,
    /// Scale the 99th percentile of |w|, least-squares refit.
    Percentile,
    /// Activation-aware: threshold and scale minimising the error weighted by `E[x²]`.
    Aware,
}

/// Trit-planes per converted layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanesArg {
    /// One plane pair: w = s·t (3 levels; ~2.5 bits/weight in memory at g64).
    #[value(name = "1")]
    One,
    /// Two plane pairs: w = s·(3·t₁ + t₂), the 9-level grid (~5 bits/weight in memory at g64,
    /// ~3.2 packed); a tied lm_head stays float.
    #[value(name = "2")]
    Two,
    /// Per layer, the budgeted search picks float, two planes or one plane.
    Auto,
}

/// Arguments of `ternary quantize`.
#[derive(Debug, Clone, Args)]
pub struct QuantizeArgs {
    /// The float model: a GGUF file or a Hugging Face directory.
    #[arg(long)]
    pub model: PathBuf,
    /// Where to write the converted model (`.safetensors`); replaced atomically.
    #[arg(long)]
    pub out: PathBuf,
    /// Conversion settings.
    #[command(flatten)]
    pub conv: ConvertArgs,
}

/// The conversion levers (shared by `quantize` and `demo`); unset ones keep
/// [`ConvertConfig::default`].
#[derive(Debug, Clone, Default, Args)]
pub struct ConvertArgs {
    /// Quantization rule (default: the conversion's default).
    #[arg(long, value_enum)]
    pub method: Option<MethodArg>,
    /// Columns per scale group (a multiple of 32), or 0 for one scale per row.
    #[arg(long)]
    pub group: Option<usize>,
    /// Calibration text file (default: the built-in calibration text).
    #[arg(long)]
    pub calib: Option<PathBuf>,
    /// Perplexity budget: keep the fewest layers in float so that the converted model's
    /// calibration perplexity stays within this ratio of the float model's (default 1.05).
    #[arg(long, conflicts_with = "no_budget")]
    pub budget: Option<f64>,
    /// No budget: every layer not kept float becomes ternary.
    #[arg(long)]
    pub no_budget: bool,
    /// Layers to keep in float: comma-separated patterns; one with `*` must match the whole
    /// name, one without matches names containing it (e.g. `lm_head,layers.0.`).
    #[arg(long, value_delimiter = ',')]
    pub keep_float: Vec<String>,
    /// Convert only these layers (patterns as for `--keep-float`); the others stay float.
    /// Default: every linear layer is a candidate.
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<String>,
    /// Error-compensating (GPTQ-style) rounding with the calibration Hessian.
    #[arg(long, overrides_with = "no_gptq")]
    pub gptq: bool,
    /// Plain rounding (no GPTQ).
    #[arg(long, overrides_with = "gptq")]
    pub no_gptq: bool,
    /// GPTQ visits the columns by decreasing input energy (`H_jj`) instead of left to right,
    /// each group's scale fixed beforehand ("act order" with static groups).
    #[arg(long)]
    pub act_order: bool,
    /// Activation-aware input scaling (weights scaled by per-channel activation magnitude).
    #[arg(long, overrides_with = "no_act_scale")]
    pub act_scale: bool,
    /// No activation-aware input scaling.
    #[arg(long, overrides_with = "act_scale")]
    pub no_act_scale: bool,
    /// Calibration tokens for the activation statistics.
    #[arg(long)]
    pub calib_tokens: Option<usize>,
    /// Tokens per calibration / perplexity chunk during conversion.
    #[arg(long)]
    pub calib_ctx: Option<usize>,
    /// Sequential quantization: calibrate each block on the model whose earlier blocks are
    /// already ternary (about two forward passes over the calibration tokens; best when most
    /// layers become ternary).
    #[arg(long)]
    pub sequential: bool,
    /// Sequential inside each block too (implies --sequential): q/k/v, o, gate/up and down
    /// are calibrated in turn, each with the block's earlier layers already ternary.
    #[arg(long)]
    pub sequential_layers: bool,
    /// Trit-planes per converted layer: 1, 2 (the 9-level grid s·(3·t₁ + t₂); with
    /// `--no-budget` every linear layer but a tied `lm_head`), or auto (the budgeted search
    /// chooses float, two planes or one plane per layer). Default 1.
    #[arg(long, value_enum)]
    pub planes: Option<PlanesArg>,
    /// Two-plane layers get free plane scales (a₁, a₂) per group, fitted by least squares for
    /// the planes' trits instead of 3s and s: lower error, but `ternary finetune` cannot train
    /// such a file (its layers are off the 9-level grid).
    #[arg(long)]
    pub free_plane_scales: bool,
    /// Rotate the float model's residual stream by a random orthogonal matrix (from SEED,
    /// default 1) before calibrating: the same function, with the RMSNorm weights folded into
    /// the layers, outlier dimensions spread over all of them, and the output head untied (one
    /// more float vocab × hidden matrix in the file).
    #[arg(long, value_name = "SEED", num_args = 0..=1, default_missing_value = "1")]
    pub rotate: Option<u64>,
    /// Rotate each key/value head's value space by its own random orthogonal matrix (from
    /// SEED, default 1) before calibrating: the same function, with `v_proj`'s rows and
    /// `o_proj`'s input columns mixed within each head (no extra tensor).
    #[arg(long, value_name = "SEED", num_args = 0..=1, default_missing_value = "1")]
    pub rotate_heads: Option<u64>,
    /// Rotate `act(gate) ⊙ up` before each `down_proj` by a signed block Hadamard transform
    /// (from SEED, default 1): the same function, with `down_proj`'s input channels mixed; the
    /// transform runs in every forward pass (in the CPU runtime about 1,536·(log₂ 512 + 2)
    /// operations per token and layer for SmolLM2), and such a file cannot be exported to GGUF.
    #[arg(long, value_name = "SEED", num_args = 0..=1, default_missing_value = "1")]
    pub rotate_ffn: Option<u64>,
    /// How the output file stores the float tensors (the embedding and the layers kept float).
    #[arg(long, value_enum, default_value_t = FloatStoreArg::F16)]
    pub float_dtype: FloatStoreArg,
}

/// How a written model stores its float tensors (`--float-dtype`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum FloatStoreArg {
    /// Rounded to f16: half the bytes of f32 in the file and in memory (each value moves by at
    /// most 2^-11 of itself).
    #[default]
    F16,
    /// As the model holds them: f16 where that is exact, f32 otherwise.
    Exact,
}

impl FloatStoreArg {
    /// The library's rule.
    pub fn storage(self) -> ternary_convert::FloatStorage {
        match self {
            Self::F16 => ternary_convert::FloatStorage::F16,
            Self::Exact => ternary_convert::FloatStorage::Exact,
        }
    }
}

impl ConvertArgs {
    /// Checks values clap cannot.
    pub fn validate(&self) -> Res<()> {
        if let Some(g) = self.group
            && g != 0
            && g % 32 != 0
        {
            return Err(CliError::new(format!(
                "--group {g}: a group must be a positive multiple of 32 (or 0 for per-row scales)"
            )));
        }
        if let Some(b) = self.budget
            && !(b.is_finite() && b >= 1.0)
        {
            return Err(CliError::new(format!(
                "--budget {b}: the perplexity budget is a ratio >= 1 (e.g. 1.05)"
            )));
        }
        if self.act_order && self.no_gptq {
            return Err(CliError::new(
                "--act-order is an order for GPTQ's rounding; drop --no-gptq",
            ));
        }
        if self.calib_tokens == Some(0) {
            return Err(CliError::new("--calib-tokens must be at least 1"));
        }
        if let Some(c) = self.calib_ctx
            && c < 4
        {
            return Err(CliError::new(format!(
                "--calib-ctx {c} is too short (at least 4)"
            )));
        }
        if self.planes == Some(PlanesArg::Auto) && self.no_budget {
            return Err(CliError::new(
                "--planes auto is the budgeted search's choice per layer and needs a budget; \
                 use --planes 2 --no-budget to put every layer on two planes",
            ));
        }
        if self.free_plane_scales && matches!(self.planes, None | Some(PlanesArg::One)) {
            return Err(CliError::new(
                "--free-plane-scales applies to two-plane layers: add --planes 2 or auto",
            ));
        }
        if self.planes == Some(PlanesArg::Auto) && (self.sequential || self.sequential_layers) {
            return Err(CliError::new(
                "--planes auto cannot be combined with --sequential or --sequential-layers",
            ));
        }
        Ok(())
    }
}

/// The conversion configuration the arguments describe: [`ConvertConfig::default`] with each
/// given flag applied; `names` are the model's linear layers (for `--layers`).
pub fn convert_config(args: &ConvertArgs, names: &[String]) -> ConvertConfig {
    let mut cfg = ConvertConfig::default();
    if let Some(m) = args.method {
        cfg.method = match m {
            MethodArg::Absmean => CoreMethod::AbsMean,
            MethodArg::Twn => CoreMethod::twn(),
            MethodArg::Absmax => CoreMethod::AbsMax,
            MethodArg::Percentile => CoreMethod::Percentile {
                p: 0.99,
                refit: true,
            },
            MethodArg::Aware => CoreMethod::ActivationAware,
        };
    }
    if let Some(g) = args.group {
        cfg.layout = if g == 0 {
            ScaleLayout::PerRow
        } else {
            ScaleLayout::PerGroup { group_size: g }
        };
    }
    if args.gptq {
        cfg.gptq = Some(GptqConfig::default());
    }
    if args.no_gptq {
        cfg.gptq = None;
    }
    if args.act_order
        && let Some(g) = cfg.gptq.as_mut()
    {
        g.act_order = true;
    }
    if args.act_scale {
        cfg.input_scale_alphas = ACT_SCALE_ALPHAS.to_vec();
    }
    if args.no_act_scale {
        cfg.input_scale_alphas.clear();
    }
    if args.budget.is_some() {
        cfg.budget = args.budget;
    }
    if args.no_budget {
        cfg.budget = None;
    }
    if let Some(t) = args.calib_tokens {
        cfg.calib_tokens = t;
    }
    if let Some(c) = args.calib_ctx {
        cfg.ctx = c;
    }
    if args.sequential || args.sequential_layers {
        cfg.sequential = true;
    }
    cfg.sequential_layers = args.sequential_layers;
    cfg.free_plane_scales = args.free_plane_scales;
    cfg.rotate = args.rotate;
    cfg.rotate_heads = args.rotate_heads;
    cfg.rotate_ffn = args.rotate_ffn;
    if let Some(p) = args.planes {
        cfg.planes = match p {
            PlanesArg::One => Planes::One,
            PlanesArg::Two => Planes::Two,
            PlanesArg::Auto => Planes::Auto,
        };
    }
    cfg.keep_float.extend(args.keep_float.iter().cloned());
    if !args.layers.is_empty() {
        // `--layers`: every other layer is kept float, by its exact name.
        cfg.keep_float.extend(
            names
                .iter()
                .filter(|n| !args.layers.iter().any(|p| matches_pattern(p, n)))
                .map(|n| format!("{n}*")),
        );
    }
    cfg
}

/// How often a conversion logs a progress line when stderr is not a terminal.
const LINE_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Candidate exponents of activation-aware input scaling with `--act-scale`.
const ACT_SCALE_ALPHAS: [f32; 3] = [0.0, 0.25, 0.5];

/// Converts `m` in place as `args` say on `calib` text, with one progress bar per stage, and
/// returns the conversion report (the per-layer plan).
pub fn convert(m: &mut LoadedModel<Cpu>, args: &ConvertArgs, calib: &str) -> Res<ConversionReport> {
    args.validate()?;
    let names: Vec<String> = m.model.linears().into_iter().map(|(n, _)| n).collect();
    let cfg = convert_config(args, &names);
    let mut current: Option<ProgressBar> = None;
    let tty = std::io::stderr().is_terminal();
    let t0 = Instant::now();
    let mut last_line = t0;
    let mut on_progress = |p: Progress| match p {
        Progress::Start { stage, total } => {
            if let Some(pb) = current.take() {
                pb.finish_and_clear();
            }
            current = Some(bar(total as u64, stage.name()));
        }
        Progress::Step {
            stage,
            done,
            total,
            detail,
        } => {
            if let Some(pb) = &current {
                pb.set_length(total as u64);
                pb.set_position(done as u64);
            }
            // Without a terminal the bar is hidden: a line at most every 10 s instead.
            if !tty && (last_line.elapsed() >= LINE_EVERY || done == total) {
                last_line = Instant::now();
                let secs = t0.elapsed().as_secs();
                eprintln!(
                    "  {:<12} {done}/{total} [{}:{:02}] {detail}",
                    stage.name(),
                    secs / 60,
                    secs % 60
                );
            }
        }
        Progress::Finish { stage, message } => {
            if let Some(pb) = current.take() {
                pb.finish_and_clear();
            }
            eprintln!("  {:<12} {message}", stage.name());
        }
    };
    let report =
        ternary_convert::convert(&mut m.model, &m.tokenizer, calib, &cfg, &mut on_progress);
    if let Some(pb) = current.take() {
        pb.finish_and_clear();
    }
    Ok(report?)
}

/// `ternary quantize`.
pub fn run(args: &QuantizeArgs) -> Res<()> {
    args.conv.validate()?;
    if overwrites_input(&args.model, &args.out) {
        return Err(CliError::new(format!(
            "--out {} is the input model; refusing to overwrite it",
            args.out.display()
        )));
    }
    if args.out.is_dir() {
        return Err(CliError::new(format!(
            "--out {} is a directory; give a file name",
            args.out.display()
        )));
    }
    let calib = match &args.conv.calib {
        Some(p) => read_text(p)?,
        None => ternary_convert::CALIBRATION_TEXT.to_string(),
    };
    let t0 = Instant::now();
    let (mut m, kind) = load_model(&args.model)?;
    if is_converted(kind) {
        return Err(CliError::new(format!(
            "{} is already a converted ternary model; give the float model (GGUF or directory)",
            args.model.display()
        )));
    }
    eprintln!("loaded {} in {}", args.model.display(), secs(t0));
    let t1 = Instant::now();
    let report = convert(&mut m, &args.conv, &calib)?;
    eprintln!("converted in {}", secs(t1));
    println!("{report}");
    let summary = ternary_convert::save_with(
        &args.out,
        &m.model,
        &m.tokenizer,
        args.conv.float_dtype.storage(),
    )?;
    print!("{}", summary.totals());
    println!("wrote {}", shown(&args.out).display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct T {
        #[command(flatten)]
        conv: ConvertArgs,
    }

    fn cfg(args: &[&str], names: &[String]) -> ConvertConfig {
        let t = T::try_parse_from(std::iter::once("t").chain(args.iter().copied())).unwrap();
        t.conv.validate().unwrap();
        convert_config(&t.conv, names)
    }

    fn names() -> Vec<String> {
        let mut v: Vec<String> = (0..12)
            .flat_map(|l| {
                ["self_attn.q_proj", "mlp.down_proj"].map(|p| format!("model.layers.{l}.{p}"))
            })
            .collect();
        v.push("lm_head".into());
        v
    }

    fn kept(c: &ConvertConfig, name: &str) -> bool {
        c.keep_float.iter().any(|p| matches_pattern(p, name))
    }

    #[test]
    fn no_flags_should_give_the_library_default() {
        assert_eq!(cfg(&[], &names()), ConvertConfig::default());
    }

    #[test]
    fn flags_should_set_their_levers() {
        let c = cfg(
            &[
                "--method",
                "twn",
                "--group",
                "0",
                "--no-gptq",
                "--act-scale",
                "--budget",
                "1.2",
                "--calib-tokens",
                "100",
                "--calib-ctx",
                "64",
            ],
            &names(),
        );
        assert_eq!(c.method, CoreMethod::twn());
        assert_eq!(c.layout, ScaleLayout::PerRow);
        assert_eq!(c.gptq, None);
        assert_eq!(c.input_scale_alphas, ACT_SCALE_ALPHAS.to_vec());
        assert_eq!(c.budget, Some(1.2));
        assert_eq!((c.calib_tokens, c.ctx), (100, 64));
        assert!(!c.sequential);
        assert!(cfg(&["--sequential"], &names()).sequential);
        let c = cfg(
            &["--group", "128", "--no-budget", "--no-gptq", "--gptq"],
            &names(),
        );
        assert_eq!(c.layout, ScaleLayout::PerGroup { group_size: 128 });
        assert_eq!(c.budget, None);
        assert_eq!(
            c.gptq,
            Some(GptqConfig::default()),
            "the last of --gptq/--no-gptq wins"
        );
        for (m, want) in [
            ("absmean", CoreMethod::AbsMean),
            ("absmax", CoreMethod::AbsMax),
            ("aware", CoreMethod::ActivationAware),
        ] {
            assert_eq!(cfg(&["--method", m], &names()).method, want);
        }
    }

    #[test]
    fn layers_and_keep_float_should_select_exactly_the_named_layers() {
        let names = names();
        let c = cfg(
            &["--layers", "layers.1.,lm_head", "--keep-float", "q_proj"],
            &names,
        );
        let converted: Vec<&String> = names.iter().filter(|n| !kept(&c, n)).collect();
        assert_eq!(
            converted,
            ["model.layers.1.mlp.down_proj", "lm_head"]
                .iter()
                .collect::<Vec<_>>(),
            "layers.1. must not match layers.10. or layers.11."
        );
        let c = cfg(&["--keep-float", "down_proj,lm_head"], &names);
        assert_eq!(names.iter().filter(|n| !kept(&c, n)).count(), 12);
    }

    #[test]
    fn rotate_should_take_an_optional_seed() {
        assert_eq!(cfg(&[], &names()).rotate, None);
        assert_eq!(cfg(&["--rotate"], &names()).rotate, Some(1));
        assert_eq!(cfg(&["--rotate", "7"], &names()).rotate, Some(7));
        let bad = T::try_parse_from(["t", "--rotate", "-1"]);
        assert!(bad.is_err());
        assert_eq!(cfg(&[], &names()).rotate_heads, None);
        assert_eq!(cfg(&["--rotate-heads"], &names()).rotate_heads, Some(1));
        let c = cfg(&["--rotate", "3", "--rotate-heads", "4"], &names());
        assert_eq!((c.rotate, c.rotate_heads), (Some(3), Some(4)));
        assert_eq!(cfg(&["--rotate-ffn", "5"], &names()).rotate_ffn, Some(5));
    }

    #[test]
    fn planes_should_parse_and_default_to_one() {
        assert_eq!(cfg(&[], &names()).planes, Planes::One);
        for (v, want) in [
            ("1", Planes::One),
            ("2", Planes::Two),
            ("auto", Planes::Auto),
        ] {
            assert_eq!(cfg(&["--planes", v], &names()).planes, want, "{v}");
        }
        let c = cfg(&["--planes", "2", "--no-budget"], &names());
        assert_eq!((c.planes, c.budget), (Planes::Two, None));
        let c = cfg(&["--planes", "auto", "--budget", "1.1"], &names());
        assert_eq!((c.planes, c.budget), (Planes::Auto, Some(1.1)));
        assert!(!c.free_plane_scales);
        let c = cfg(&["--planes", "2", "--free-plane-scales"], &names());
        assert!(c.free_plane_scales);
        for bad in ["3", "0", "two", ""] {
            assert!(
                T::try_parse_from(["t", "--planes", bad]).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn bad_values_should_be_rejected() {
        for bad in [
            &["--group", "48"][..],
            &["--budget", "0.9"],
            &["--budget", "NaN"],
            &["--calib-tokens", "0"],
            &["--calib-ctx", "2"],
            &["--planes", "auto", "--no-budget"],
            &["--planes", "auto", "--sequential"],
            &["--free-plane-scales"],
            &["--planes", "1", "--free-plane-scales"],
        ] {
            let t = T::try_parse_from(std::iter::once("t").chain(bad.iter().copied())).unwrap();
            assert!(t.conv.validate().is_err(), "{bad:?}");
        }
        assert!(T::try_parse_from(["t", "--budget", "1.1", "--no-budget"]).is_err());
        assert!(T::try_parse_from(["t", "--method", "magic"]).is_err());
    }
}
