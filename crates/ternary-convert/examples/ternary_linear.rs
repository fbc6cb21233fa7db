//! SmolLM2-135M with every block linear layer ternary through [`TernaryLinear`]: perplexity and
//! decode speed of each forward path against the float model.
//!
//! ```text
//! cargo run --release -p ternary-convert --example ternary_linear -- [--model M] [--text F] [--ctx 512] [--chunks N] [--group 64] [--n 64] [--threads T] [--only a,b]
//! ```
//! Every `q/k/v/o/gate/up/down` projection (or, with `--only`, those whose name contains one
//! of the comma-separated strings) is quantized with abs-mean scales per group of
//! `--group` input columns (`lm_head` stays float); the layers then run on
//! [`LinearPath::CpuF32`], [`LinearPath::CpuInt8`] and [`LinearPath::Float`]. For each
//! configuration: llama.cpp's perplexity (`ternary_models::perplexity`, ctx 512 on
//! `fixtures/text/declaration-gettysburg.txt` by default) and greedy decoding of `--n` tokens
//! (no stop token) with `ternary_models::generate`, prefill and decode tokens/s; and how far
//! each path's logits on the first `ctx` tokens are from the `cpu-f32` path's.
//!
//! Measured (2026-11-26, 2-core x86-64 AVX-512 VM shared with other builds, so tokens/s are
//! rough; SmolLM2-135M-Instruct Q4_1 dequantized to f32, ctx 512, 5 chunks):
//!
//! | layers ternary (abs-mean, g=64) | path | PPL | prefill tok/s | decode tok/s |
//! |---|---|---|---|---|
//! | none (float HostLinear) | — | 23.63 | 64 | 13.2 |
//! | all 210 block linears | cpu-f32 | 3.28e6 | 106 | 33.5 |
//! | all 210 block linears | cpu-int8 | 5.77e6 | 108 | 28.8 |
//! | all 210 block linears | float | 3.28e6 | 38 | 4.7 |
//! | block 5 only (7 layers) | cpu-f32 / cpu-int8 / float | 26.20 / 26.21 / 26.20 | | |
//!
//! `cpu-f32` and `float` logits agree to 1.4e-6 (rms difference / rms logits); `cpu-int8`
//! (per-token int8 activations) differs by 3.6e-3 with one ternary block and 4e-2 with all
//! 30 `up_proj` ternary.

use std::time::Instant;
use ternary_core::ScaleLayout;
use ternary_core::quant::{Method, QuantConfig, QuantStats, quantize};
use ternary_layers::to_rows;
use ternary_layers::{Cpu, Linear};
use ternary_layers::{LinearPath, TernaryLinear};
use ternary_models::{Llama, Logits, Sampling, fetch, generate, load, perplexity};

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

struct Run<'a> {
    tokens: &'a [u32],
    prompt: &'a [u32],
    ctx: usize,
    chunks: Option<usize>,
    bos: Option<u32>,
    n: usize,
}

impl Run<'_> {
    fn measure(&self, name: &str, model: &Llama<Cpu>) -> Result<(), Box<dyn std::error::Error>> {
        let t = Instant::now();
        let rep = perplexity(
            model,
            self.tokens,
            self.ctx,
            self.bos,
            self.chunks,
            |_, _| {},
        )?;
        let ppl_secs = t.elapsed().as_secs_f64();
        let (_, stats) = generate(model, self.prompt, self.n, Sampling::Greedy, None, |_| {})?;
        println!(
            "{name:<22} PPL = {:>10.4} +/- {:<9.4} ({} chunks, {ppl_secs:5.1} s) | prefill {:6.1} tok/s, decode {:5.1} tok/s ({} tokens)",
            rep.ppl,
            rep.ppl_stderr,
            rep.chunks,
            stats.prefill_tokens_per_sec(),
            stats.decode_tokens_per_sec(),
            stats.generated_tokens
        );
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(n) = arg(&args, "--threads") {
        rayon::ThreadPoolBuilder::new()
            .num_threads(n.parse()?)
            .build_global()?;
    }
    let model_path = arg(&args, "--model").map_or_else(fetch::smollm2_path, Into::into);
    let default_text = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/text/declaration-gettysburg.txt"
    );
    let text_path = arg(&args, "--text").unwrap_or_else(|| default_text.into());
    let ctx: usize = arg(&args, "--ctx").map_or(Ok(512), |s| s.parse())?;
    let chunks: Option<usize> = arg(&args, "--chunks").map(|s| s.parse()).transpose()?;
    let group: usize = arg(&args, "--group").map_or(Ok(64), |s| s.parse())?;
    let n: usize = arg(&args, "--n").map_or(Ok(64), |s| s.parse())?;
    let only: Vec<String> = arg(&args, "--only")
        .map(|s| s.split(',').map(str::to_string).collect())
        .unwrap_or_default();

    let mut m = load::<Cpu>(&model_path, &Default::default())?;
    let text = std::fs::read_to_string(&text_path)?;
    let tokens = m.tokenizer.encode(&text, true)?;
    let prompt = m
        .tokenizer
        .encode("Once upon a time, in a small village,", true)?;
    let bos = if m.tokenizer.add_bos {
        m.tokenizer.bos_id
    } else {
        None
    };
    let run = Run {
        tokens: &tokens,
        prompt: &prompt,
        ctx,
        chunks,
        bos,
        n,
    };
    println!(
        "{}: {} tokens of {text_path}, ctx {ctx}; abs-mean, groups of {group}, lm_head float; {} rayon threads",
        model_path.display(),
        tokens.len(),
        rayon::current_num_threads()
    );
    run.measure("float (HostLinear)", &m.model)?;

    // Quantize every block linear layer once.
    let cfg = QuantConfig::new(Method::AbsMean, ScaleLayout::PerGroup { group_size: group });
    let device = *m.model.device();
    let t = Instant::now();
    let mut ternary: Vec<(String, TernaryLinear<Cpu>)> = Vec::new();
    let (mut err_sum, mut weights) = (0f64, 0usize);
    for (name, layer) in m.model.linears() {
        if name == "lm_head" || !(only.is_empty() || only.iter().any(|o| name.contains(o))) {
            continue;
        }
        let (rows, cols) = (layer.out_features(), layer.in_features());
        let w = to_rows(layer.weight())?;
        let (matrix, _) = quantize(&w, rows, cols, &cfg)?;
        let stats = QuantStats::measure(&w, &matrix)?;
        err_sum += stats.rel_frobenius_error * (rows * cols) as f64;
        weights += rows * cols;
        ternary.push((name, TernaryLinear::new(matrix, &device)?));
    }
    println!(
        "quantized {} layers ({weights} weights) in {:.1} s; weighted mean relative error {:.4}",
        ternary.len(),
        t.elapsed().as_secs_f64(),
        err_sum / weights as f64
    );

    let window = &tokens[..ctx.min(tokens.len())];
    let mut reference: Option<Vec<f32>> = None;
    for path in [LinearPath::CpuF32, LinearPath::CpuInt8, LinearPath::Float] {
        let mut slots: Vec<(String, &mut Linear<Cpu>)> = m.model.linears_mut();
        for (name, layer) in &ternary {
            let slot = slots
                .iter_mut()
                .find(|(n, _)| n == name)
                .ok_or_else(|| format!("no layer {name}"))?;
            *slot.1 = Box::new(layer.clone().with_path(path));
        }
        run.measure(&format!("ternary {path}"), &m.model)?;
        let logits = to_rows(
            m.model
                .forward(window, &mut m.model.new_cache(), Logits::All)?,
        )?;
        match &reference {
            None => reference = Some(logits),
            Some(r) => {
                let rms =
                    (r.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / r.len() as f64).sqrt();
                let (mut max, mut sq) = (0f64, 0f64);
                for (a, b) in logits.iter().zip(r) {
                    let e = f64::from(a - b).abs();
                    max = max.max(e);
                    sq += e * e;
                }
                println!(
                    "    logits vs cpu-f32 on {} tokens: max |diff| {max:.4}, rms diff / rms logits {:.2e}",
                    window.len(),
                    (sq / r.len() as f64).sqrt() / rms
                );
            }
        }
    }
    Ok(())
}
