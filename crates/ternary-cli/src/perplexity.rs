//! `ternary perplexity`: llama.cpp's `llama-perplexity` on a text file.
//!
//! The text is tokenized whole (BOS first when the model adds one), cut into chunks of
//! `--ctx` tokens whose first token is replaced by BOS when the model adds one, and the second
//! half of each chunk is scored ([`ternary_models::perplexity()`]). stdout gets llama.cpp's
//! running values `[1]x,[2]y,…` and, as the last line, `Final estimate: PPL = X +/- Y`;
//! stderr gets the progress bar and a summary.

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;

use crate::common::{
    CliError, Engine, PathArg, Res, bos_of, check_measure_args, decoder_owned, load_model,
    ppl_with_bar, read_text, secs, set_ternary_path,
};

/// Arguments of `ternary perplexity`.
#[derive(Debug, Clone, Args)]
pub struct PerplexityArgs {
    /// The model, in any format `ternary` reads (told by content, not by name).
    #[arg(long)]
    pub model: PathBuf,
    /// The text to score (UTF-8).
    #[arg(long)]
    pub text: PathBuf,
    /// Tokens per chunk (llama-perplexity's `-c`).
    #[arg(long, default_value_t = 512)]
    pub ctx: usize,
    /// Evaluate at most this many chunks (llama-perplexity's `--chunks`).
    #[arg(long)]
    pub chunks: Option<usize>,
    /// The engine: the CPU runtime (default) or the Burn reference model.
    #[arg(long, value_enum, default_value_t = Engine::Runtime)]
    pub engine: Engine,
    /// How ternary layers compute (`cpu-int8`: int8 activations per token, the fastest
    /// kernels; converted models lose a little perplexity with it).
    #[arg(long, value_enum, default_value_t = PathArg::Auto)]
    pub ternary_path: PathArg,
}

/// `ternary perplexity`.
pub fn run(args: &PerplexityArgs) -> Res<()> {
    check_measure_args(args.ctx, args.chunks, 0)?;
    let text = read_text(&args.text)?;
    let (mut m, format) = load_model(&args.model)?;
    set_ternary_path(&mut m.model, args.ternary_path);
    let tokens = m.tokenizer.encode(&text, true)?;
    if tokens.len() < 2 * args.ctx {
        return Err(CliError::new(format!(
            "{} has {} tokens; perplexity with --ctx {} needs at least {} (2 × ctx), as in \
             llama-perplexity",
            args.text.display(),
            tokens.len(),
            args.ctx,
            2 * args.ctx
        )));
    }
    let all = tokens.len() / args.ctx;
    let chunks = args.chunks.map_or(all, |c| c.min(all));
    eprintln!(
        "{} ({format}): {} tokens, {chunks} chunks of {} (BOS {})",
        args.model.display(),
        tokens.len(),
        args.ctx,
        if m.tokenizer.add_bos {
            "added"
        } else {
            "not added"
        }
    );
    let t0 = Instant::now();
    let bos = bos_of(&m.tokenizer);
    let mut dec = decoder_owned(m.model, args.engine)?;
    let r = ppl_with_bar(
        "perplexity",
        dec.as_mut(),
        bos,
        &tokens,
        args.ctx,
        args.chunks,
    )?;
    eprintln!(
        "{} tokens scored in {} ({:.1} tokens/s evaluated)",
        r.scored,
        secs(t0),
        (r.chunks * r.n_ctx) as f64 / t0.elapsed().as_secs_f64().max(1e-9)
    );
    let running: Vec<String> = r
        .running_ppl
        .iter()
        .enumerate()
        .map(|(i, p)| format!("[{}]{p:.4},", i + 1))
        .collect();
    println!("{}", running.concat());
    println!("{}", r.final_line());
    Ok(())
}
