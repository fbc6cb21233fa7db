//! Perplexity cost of ternary (popcount) attention scores on SmolLM2-135M (float weights).
//!
//! ```text
//! cargo run --release -p ternary-convert --example ternary_attention -- [--model M] [--text F] [--ctx 512] [--chunks N] [--subsets-only]
//! ```
//! Runs llama.cpp's perplexity (`ternary_models::perplexity`) on the same tokens with float
//! scores `q·kᵀ` (the default), then with [`TernaryScores`] in several configurations (scale
//! rule, dimensions per scale, levels), and with ternary scores in some blocks only.
//! `--model`
//! defaults to the cached SmolLM2 GGUF (`cargo xtask fetch-model`), `--text` to
//! `fixtures/text/declaration-gettysburg.txt`.
//!
//! Measured (2026-11-26, 2-core x86-64 AVX-512 VM, SmolLM2-135M-Instruct Q4_1 GGUF dequantized
//! to f32, 2885 tokens, ctx 512, 5 chunks), PPL: float scores 23.63; ternary
//! abs-mean per vector 5657 (239x); refit per vector 12216; abs-mean per 16 dims 2785;
//! per 8 dims 1367 (58x); two levels per vector 10137; two levels per 16 dims 11424.
//! In some blocks only (abs-mean, per vector): block 0, 15 or 29 alone 22.96 / 23.29 / 23.57
//! (no measurable cost); blocks 0–9 763 (32x), 10–19 104.8 (4.4x), 20–29 93.0 (3.9x),
//! 0–14 2022 (86x), every other block 320 (14x).
//! Post-training ternary Q·K scoring in every block is far too lossy to be useful on this
//! model: the score differences across keys that the softmax sees are a small part of
//! `|q||k|`, and the ternarization noise (row-centred relative error 0.6–0.9 per layer)
//! swamps them; one block tolerates it, many do not. It stays off by default.

use std::time::Instant;
use ternary_layers::Cpu;
use ternary_layers::{ScaleRule, TernaryScoreConfig, TernaryScores};
use ternary_models::{fetch, load, perplexity};

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
    let cfg = |rule, group, levels| {
        Some(TernaryScores::new(TernaryScoreConfig {
            rule,
            group,
            levels,
        }))
    };
    // `--subsets-only`: skip the whole-model configurations.
    let whole: &[_] = if args.iter().any(|a| a == "--subsets-only") {
        &[None]
    } else {
        &[
            None,
            cfg(ScaleRule::AbsMean, None, 1),
            cfg(ScaleRule::Refit, None, 1),
            cfg(ScaleRule::AbsMean, Some(16), 1),
            cfg(ScaleRule::AbsMean, Some(8), 1),
            cfg(ScaleRule::AbsMean, None, 2),
            cfg(ScaleRule::AbsMean, Some(16), 2),
        ]
    };
    for scores in whole.iter().cloned() {
        match scores {
            Some(s) => m.model.set_score_fn(Box::new(s)),
            None => m.model.reset_score_fn(),
        }
        let name = m.model.score_fn().name();
        let t = Instant::now();
        let rep = perplexity(&m.model, &tokens, ctx, bos, chunks, |_, _| {})?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{name:<34} PPL = {:.4} +/- {:.5}  ({} chunks, {secs:.1} s)",
            rep.ppl, rep.ppl_stderr, rep.chunks
        );
        results.push((name, rep.ppl));
    }
    // The cost of some blocks only (abs-mean, per vector, one level): one block, then thirds
    // and halves of the model.
    let blocks = m.model.config().num_layers;
    let third = blocks / 3;
    let mut subsets: Vec<Vec<usize>> = vec![vec![0], vec![blocks / 2], vec![blocks - 1]];
    subsets.push((0..third).collect());
    subsets.push((third..2 * third).collect());
    subsets.push((2 * third..blocks).collect());
    subsets.push((0..blocks / 2).collect());
    subsets.push((0..blocks).step_by(2).collect());
    for layers in subsets {
        let s = TernaryScores::new(TernaryScoreConfig::default()).only_layers(layers);
        m.model.set_score_fn(Box::new(s));
        let name = m.model.score_fn().name();
        let rep = perplexity(&m.model, &tokens, ctx, bos, chunks, |_, _| {})?;
        println!(
            "{name:<34}\n{:<34} PPL = {:.4} +/- {:.5}",
            "", rep.ppl, rep.ppl_stderr
        );
        results.push((name, rep.ppl));
    }
    let base = results[0].1;
    for (name, ppl) in &results[1..] {
        println!("{name}: {:.3}x the float-score perplexity", ppl / base);
    }
    Ok(())
}
