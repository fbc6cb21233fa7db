//! Perplexity cost of ternary (popcount) attention scores on SmolLM2-135M (float weights).
//!
//! ```text
//! cargo run --release -p ternary-burn --example ternary_attention -- [--model M] [--text F] [--ctx 512] [--chunks N]
//! ```
//! Runs llama.cpp's perplexity (`ternary_models::perplexity`) three times on the same tokens:
//! float scores `q·kᵀ` (the default), then [`TernaryScores`] with each [`ScaleRule`]. `--model`
//! defaults to the cached SmolLM2 GGUF (`cargo xtask fetch-model`), `--text` to
//! `fixtures/text/declaration-gettysburg.txt`.

use std::time::Instant;
use ternary_burn::{ScaleRule, TernaryScores};
use ternary_models::{Cpu, fetch, load, perplexity};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model_path = arg(&args, "--model").map_or_else(fetch::smollm2_path, Into::into);
    let default_text = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/text/declaration-gettysburg.txt"
    );
    let text_path = arg(&args, "--text").unwrap_or_else(|| default_text.into());
    let ctx: usize = arg(&args, "--ctx").map_or(Ok(512), |s| s.parse())?;
    let chunks: Option<usize> = arg(&args, "--chunks").map(|s| s.parse()).transpose()?;

    let mut m = load::<Cpu>(&model_path, &Default::default())?;
    let text = std::fs::read_to_string(&text_path)?;
    let tokens = m.tokenizer.encode(&text, true)?;
    let bos = if m.tokenizer.add_bos {
        m.tokenizer.bos_id
    } else {
        None
    };
    println!(
        "{}: {} tokens of {text_path}, ctx {ctx}",
        model_path.display(),
        tokens.len()
    );
    let mut results = Vec::new();
    for scores in [
        None,
        Some(TernaryScores::new(ScaleRule::AbsMean)),
        Some(TernaryScores::new(ScaleRule::Refit)),
    ] {
        match scores {
            Some(s) => m.model.set_score_fn(Box::new(s)),
            None => m.model.reset_score_fn(),
        }
        let name = m.model.score_fn().name();
        let t = Instant::now();
        let rep = perplexity(&m.model, &tokens, ctx, bos, chunks, |_, _| {})?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{name:<18} PPL = {:.4} +/- {:.5}  ({} chunks, {secs:.1} s)",
            rep.ppl, rep.ppl_stderr, rep.chunks
        );
        results.push((name, rep.ppl));
    }
    let base = results[0].1;
    for (name, ppl) in &results[1..] {
        println!("{name}: {:.3}x the float-score perplexity", ppl / base);
    }
    Ok(())
}
