//! Generation and perplexity on a GGUF/safetensors model, for measurements.
//!
//! ```text
//! cargo run --release -p ternary-models --example smollm2 -- generate [--model M] [--prompt P] [--n N]
//! cargo run --release -p ternary-models --example smollm2 -- perplexity [--model M] [--text F] [--ctx 512] [--chunks N]
//! ```
//! `--quantized` keeps GGUF Q4_0/Q4_1/Q8_0 weights in their blocks (`QuantLinear`).
//! `--model` defaults to the cached SmolLM2 GGUF; `--text` to the fixture text;
//! `--threads N` sizes the rayon pool (GEMV, Burn's ops); matrixmultiply's GEMM (prompts over
//! 16 tokens) reads `MATMUL_NUM_THREADS` (default: all cores).

use std::time::Instant;
use ternary_layers::Cpu;
use ternary_models::{LinearImpl, Sampling, fetch, generate, load, load_gguf_with, perplexity};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().cloned().unwrap_or_else(|| "generate".into());
    if let Some(n) = arg(&args, "--threads") {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.parse()?)
            .build_global()?;
    }
    let model_path = arg(&args, "--model").map_or_else(fetch::smollm2_path, Into::into);
    let t = Instant::now();
    // `--quantized`: keep the GGUF's Q4_1/Q8_0 blocks (QuantLinear) instead of f32 weights.
    let m = if args.iter().any(|a| a == "--quantized") {
        load_gguf_with::<Cpu>(&model_path, &Default::default(), LinearImpl::Quantized)?
    } else {
        load::<Cpu>(&model_path, &Default::default())?
    };
    eprintln!(
        "loaded {} in {:.2} s",
        model_path.display(),
        t.elapsed().as_secs_f64()
    );
    match cmd.as_str() {
        "generate" => {
            let prompt = arg(&args, "--prompt")
                .unwrap_or_else(|| "Once upon a time, in a small village,".into());
            let n: usize = arg(&args, "--n").map_or(Ok(64), |s| s.parse())?;
            let ids = m.tokenizer.encode(&prompt, true)?;
            let (out, stats) = generate(
                &m.model,
                &ids,
                n,
                Sampling::Greedy,
                m.tokenizer.eos_id,
                |_| {},
            )?;
            println!("{prompt}{}", m.tokenizer.decode(&out)?);
            println!(
                "prompt {} tokens: {:.1} tok/s prefill; {} tokens generated: {:.1} tok/s decode",
                stats.prompt_tokens,
                stats.prefill_tokens_per_sec(),
                stats.generated_tokens,
                stats.decode_tokens_per_sec()
            );
        }
        "perplexity" => {
            let default_text = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../fixtures/text/declaration-gettysburg.txt"
            );
            let text = std::fs::read_to_string(
                arg(&args, "--text").unwrap_or_else(|| default_text.into()),
            )?;
            let ctx: usize = arg(&args, "--ctx").map_or(Ok(512), |s| s.parse())?;
            let chunks: Option<usize> = arg(&args, "--chunks").map(|s| s.parse()).transpose()?;
            let tokens = m.tokenizer.encode(&text, true)?;
            let bos = if m.tokenizer.add_bos {
                m.tokenizer.bos_id
            } else {
                None
            };
            let t = Instant::now();
            let rep = perplexity(&m.model, &tokens, ctx, bos, chunks, |i, p| {
                eprint!("[{}]{p:.4},", i + 1)
            })?;
            eprintln!();
            println!(
                "{} tokens, ctx {ctx}, {} chunks, {:.2} s ({:.1} tok/s)",
                tokens.len(),
                rep.chunks,
                t.elapsed().as_secs_f64(),
                (rep.chunks * ctx) as f64 / t.elapsed().as_secs_f64()
            );
            println!("{}", rep.final_line());
        }
        other => return Err(format!("unknown command {other} (generate | perplexity)").into()),
    }
    Ok(())
}
