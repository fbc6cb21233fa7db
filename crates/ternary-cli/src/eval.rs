//! `ternary eval`: perplexity, decode speed and weight memory, optionally beside a reference.

use std::path::PathBuf;

use clap::Args;

use crate::common::{
    Engine, PathArg, Res, check_measure_args, is_converted, load_model, measure,
    print_side_by_side, read_text, set_ternary_path,
};

/// Arguments of `ternary eval`.
#[derive(Debug, Clone, Args)]
pub struct EvalArgs {
    /// The model: a GGUF file, a Hugging Face directory or a converted `.safetensors` file.
    #[arg(long)]
    pub model: PathBuf,
    /// The text to score.
    #[arg(long)]
    pub text: PathBuf,
    /// A second model (usually the float original) evaluated the same way, shown first.
    #[arg(long)]
    pub reference: Option<PathBuf>,
    /// Tokens per perplexity chunk.
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Evaluate at most this many chunks.
    #[arg(long)]
    pub chunks: Option<usize>,
    /// New tokens to generate for the decode speed (0 to skip).
    #[arg(long, default_value_t = 32)]
    pub decode_tokens: usize,
    /// How ternary layers compute.
    #[arg(long, value_enum, default_value_t = PathArg::Auto)]
    pub ternary_path: PathArg,
    /// The engine: the CPU runtime (default) or the Burn reference model.
    #[arg(long, value_enum, default_value_t = Engine::Runtime)]
    pub engine: Engine,
}

/// `ternary eval`.
pub fn run(args: &EvalArgs) -> Res<()> {
    check_measure_args(args.ctx, args.chunks, args.decode_tokens)?;
    let text = read_text(&args.text)?;
    let mut cols = Vec::new();
    for (path, default_name) in args
        .reference
        .iter()
        .map(|p| (p, "reference"))
        .chain([(&args.model, "model")])
    {
        let (mut m, kind) = load_model(path)?;
        set_ternary_path(&mut m.model, args.ternary_path);
        let tokens = m.tokenizer.encode(&text, true)?;
        let name = if is_converted(kind) {
            "ternary"
        } else if args.reference.is_some() && default_name == "model" {
            "model"
        } else {
            "float"
        };
        let mut col = measure(
            name,
            m,
            &tokens,
            args.ctx,
            args.chunks,
            args.decode_tokens,
            args.engine,
        )?;
        if is_converted(kind) {
            col.file_bytes = std::fs::metadata(path).ok().map(|md| md.len());
        }
        eprintln!("{}: {}", path.display(), col.ppl.final_line());
        cols.push(col);
    }
    print_side_by_side(&cols);
    Ok(())
}
