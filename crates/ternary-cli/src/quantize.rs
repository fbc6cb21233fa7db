//! `ternary quantize`: load a float model, convert it, print the plan, save it.

use std::path::PathBuf;
use std::time::Instant;

use clap::{Args, ValueEnum};
use ternary_burn::layer::TernaryLinear;
use ternary_core::ScaleLayout;
use ternary_core::quant::{Method as CoreMethod, QuantConfig, quantize};
use ternary_models::model::to_rows;
use ternary_models::{Cpu, LoadedModel};

use crate::common::{CliError, ModelKind, Res, bar, load_model, read_text, same_file, secs, shown};

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
    /// Activation-aware: threshold and scale minimising the error weighted by E[x²].
    Aware,
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
    /// calibration perplexity stays within this ratio of the float model's (e.g. 1.05).
    #[arg(long)]
    pub budget: Option<f64>,
    /// Layers to keep in float: comma-separated names or name fragments (e.g.
    /// `lm_head,layers.0.`).
    #[arg(long, value_delimiter = ',')]
    pub keep_float: Vec<String>,
    /// Convert only these layers (comma-separated names or name fragments); the others stay
    /// float. Default: every linear layer is a candidate.
    #[arg(long, value_delimiter = ',')]
    pub layers: Vec<String>,
    /// Error-compensating (GPTQ-style) rounding with the calibration Hessian.
    #[arg(long, overrides_with = "no_gptq")]
    pub gptq: bool,
    /// Plain rounding (no GPTQ).
    #[arg(long, overrides_with = "gptq")]
    pub no_gptq: bool,
    /// Activation-aware input scaling (weights scaled by per-channel activation magnitude).
    #[arg(long, overrides_with = "no_act_scale")]
    pub act_scale: bool,
    /// No activation-aware input scaling.
    #[arg(long, overrides_with = "act_scale")]
    pub no_act_scale: bool,
    /// Calibration tokens to use at most.
    #[arg(long)]
    pub calib_tokens: Option<usize>,
}

impl QuantizeArgs {
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
        if self.calib_tokens == Some(0) {
            return Err(CliError::new("--calib-tokens must be at least 1"));
        }
        Ok(())
    }

    /// Whether layer `name` may be converted: it matches `--layers` (when given) and no
    /// `--keep-float` fragment.
    pub fn is_candidate(&self, name: &str) -> bool {
        let matches = |list: &[String]| {
            list.iter()
                .any(|k| !k.is_empty() && name.contains(k.as_str()))
        };
        (self.layers.is_empty() || matches(&self.layers)) && !matches(&self.keep_float)
    }

    fn layout(&self) -> ScaleLayout {
        match self.group {
            None | Some(0) => ScaleLayout::PerRow,
            Some(g) => ScaleLayout::PerGroup { group_size: g },
        }
    }
}

/// The outcome of a conversion, for printing.
pub struct Converted {
    /// Table printed after the conversion (the plan), if the converter produced one.
    pub report: Option<String>,
}

/// Converts `m` in place as `args` say, with progress bars, on `calib` text.
pub fn convert(m: &mut LoadedModel<Cpu>, args: &QuantizeArgs, _calib: &str) -> Res<Converted> {
    let method = match args.method.unwrap_or(MethodArg::Absmean) {
        MethodArg::Absmean => CoreMethod::AbsMean,
        MethodArg::Twn => CoreMethod::Twn { delta_factor: 0.7 },
        MethodArg::Absmax => CoreMethod::AbsMax,
        MethodArg::Percentile => CoreMethod::Percentile {
            p: 0.99,
            refit: true,
        },
        MethodArg::Aware => {
            return Err(CliError::new(
                "--method aware needs the calibrated conversion, not available in this build",
            ));
        }
    };
    let cfg = QuantConfig::new(method, args.layout());
    let device = Default::default();
    let mut linears = m.model.linears_mut();
    let pb = bar(linears.len() as u64, "quantize layers");
    for (name, slot) in &mut linears {
        pb.inc(1);
        if !args.is_candidate(name) {
            continue;
        }
        let (rows, cols) = (slot.out_features(), slot.in_features());
        let w = to_rows(slot.weight())?;
        let (matrix, _) = quantize(&w, rows, cols, &cfg)?;
        **slot = Box::new(TernaryLinear::<Cpu>::new(matrix, &device)?);
    }
    pb.finish_and_clear();
    Ok(Converted { report: None })
}

/// `ternary quantize`.
pub fn run(args: &QuantizeArgs) -> Res<()> {
    args.validate()?;
    if same_file(&args.model, &args.out) {
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
    let calib = match &args.calib {
        Some(p) => read_text(p)?,
        None => ternary_burn::CALIBRATION_TEXT.to_string(),
    };
    let t0 = Instant::now();
    let (mut m, kind) = load_model(&args.model)?;
    if kind == ModelKind::Ternary {
        return Err(CliError::new(format!(
            "{} is already a converted ternary model; give the float model (GGUF or directory)",
            args.model.display()
        )));
    }
    eprintln!("loaded {} in {}", args.model.display(), secs(t0));
    let t1 = Instant::now();
    let converted = convert(&mut m, args, &calib)?;
    eprintln!("converted in {}", secs(t1));
    if let Some(r) = &converted.report {
        println!("{r}");
    }
    let summary = ternary_burn::save(&args.out, &m.model, &m.tokenizer)?;
    print!("{summary}");
    println!("wrote {}", shown(&args.out).display());
    Ok(())
}
