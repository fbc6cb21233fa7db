//! `ternary`: quantize pretrained models to ternary, evaluate them, inspect files.
//!
//! - `ternary quantize --model <gguf|dir> --out <file.safetensors> [...]`: calibrate, convert
//!   (mixed precision within a perplexity budget), print the per-layer plan, save.
//! - `ternary eval --model <gguf|dir|file.safetensors> --text <file> [--reference <model>]`:
//!   perplexity (llama.cpp's algorithm), decode tokens/s and weight memory, side by side.
//! - `ternary generate --model <any> --prompt "…" [--chat]`: stream text, tokens/s on stderr.
//! - `ternary perplexity --model <any> --text <file> [--ctx 512]`: llama-perplexity's number.
//! - `ternary inspect <file.safetensors>`: layers, formats, bits per weight, bytes.
//! - `ternary demo`: fetch SmolLM2-135M if needed, quantize it, compare with float.
//! - `ternary finetune --teacher <float> --student <file.safetensors> --data <text>… --out …`:
//!   recover accuracy by training (distillation or block-wise reconstruction).
//! - `ternary bench --model <any> [--prompt-tokens 512] [--gen-tokens 128] [--json]`: prefill
//!   and decode tokens/s (llama-bench's pp/tg), peak memory, bytes read per token.
//!
//! `generate`, `eval`, `perplexity` and `bench` run on the CPU runtime (`ternary-runtime`) by
//! default; `--engine burn` takes the Burn reference model. `--threads N` sizes both.
//!
//! Every model path is told apart by content (`ternary_models::sniff`), not by its name.
//!
//! Errors are printed as `error: …` with a non-zero exit code; nothing panics on bad input.

mod bench;
mod common;
mod demo;
mod eval;
mod export;
mod finetune;
mod generate;
mod perplexity;
mod quantize;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::common::CliError;

/// Ternary (1.58-bit) conversion of pretrained Llama-family models.
#[derive(Debug, Parser)]
#[command(name = "ternary", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Worker threads (default: all cores); `finetune --device cpu` trains in this pool too.
    /// Burn's ndarray matrix products (`quantize`'s calibration, `finetune --device ndarray`)
    /// run in matrixmultiply's own pool, sized by the environment variable MATMUL_NUM_THREADS
    /// (default: the physical cores): set it too for a hard limit.
    #[arg(long, global = true)]
    threads: Option<usize>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Convert a float model (GGUF file or Hugging Face directory) to a ternary model file.
    Quantize(quantize::QuantizeArgs),
    /// Perplexity, decode speed and weight memory of a model, optionally next to a reference.
    Eval(eval::EvalArgs),
    /// Stream a continuation of a prompt (or, with --chat, an answer) from any model.
    Generate(generate::GenerateArgs),
    /// llama.cpp's perplexity of a model on a text; the last line is llama-perplexity's.
    Perplexity(perplexity::PerplexityArgs),
    /// Show the layers, formats, bits per weight and sizes of a ternary model file.
    Inspect {
        /// The `.safetensors` file written by `ternary quantize`.
        file: PathBuf,
    },
    /// The README demo: fetch SmolLM2-135M, quantize it, compare float and ternary.
    Demo(demo::DemoArgs),
    /// Write a converted ternary model as a GGUF llama.cpp loads (TQ2_0 / TQ1_0).
    Export(export::ExportArgs),
    /// Prefill and decode tokens/s of a model (as llama-bench pp512 / tg128), peak memory.
    Bench(bench::BenchArgs),
    /// Recover a converted model's accuracy by training its ternary layers against the float
    /// model (distillation or block-wise reconstruction).
    Finetune(finetune::FinetuneArgs),
}

fn run(cli: Cli) -> Result<(), CliError> {
    if let Some(n) = cli.threads {
        if n == 0 {
            return Err(CliError::new("--threads must be at least 1"));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| CliError::new(format!("cannot size the thread pool: {e}")))?;
    }
    match cli.command {
        Command::Quantize(a) => quantize::run(&a),
        Command::Eval(a) => eval::run(&a),
        Command::Generate(a) => generate::run(&a),
        Command::Perplexity(a) => perplexity::run(&a),
        Command::Inspect { file } => {
            let format = ternary_models::sniff(&file)?;
            if format != ternary_models::Format::ConvertedModel {
                return Err(CliError::new(format!(
                    "{} is a {format}; `ternary inspect` shows models written by `ternary quantize`",
                    file.display()
                )));
            }
            let summary = ternary_convert::inspect(&file)?;
            print!("{summary}");
            Ok(())
        }
        Command::Demo(a) => demo::run(&a),
        Command::Export(a) => export::run(&a),
        Command::Bench(a) => bench::run(&a),
        Command::Finetune(a) => finetune::run(&a),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message());
            ExitCode::FAILURE
        }
    }
}
