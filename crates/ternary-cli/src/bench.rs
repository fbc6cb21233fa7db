//! `ternary bench`: prefill and decode speed of a model, as `llama-bench`'s `pp512` / `tg128`.
//!
//! - prefill (`pp`): `--prompt-tokens` token ids (fixed pseudo-random, seed 42) run as one
//!   request from an empty cache, logits of the last position only;
//!   `tokens/s = prompt_tokens / seconds`.
//! - decode (`tg`): `--gen-tokens` single-token steps from an empty cache (fixed ids, as
//!   `llama-bench`'s `tg`, which does not sample); `tokens/s = gen_tokens / seconds`.
//! - each is run once to warm up, then `--reps` times: mean and sample standard deviation.
//! - `peak_rss_bytes`: the process's peak resident memory (`VmHWM` in `/proc/self/status`,
//!   Linux), model loading included; `weight_bytes_per_token`: weight bytes one decode step
//!   reads (every projection, the norms, one embedding row).
//! - `ternary_activations`: how the ternary layers took their activations (`f32`, `int8`,
//!   `int8x2`: two int8 codes per token, the runtime's default for converted layers at AVX2;
//!   `bitnet`, `mixed`, `none`).
//!
//! `--json` prints one JSON object whose keys are stable (`schema` names the version):
//!
//! ```text
//! {"schema": "ternary-bench/1", "model": "…", "engine": "runtime", "threads": 2,
//!  "simd": "avx2", "cpu": "AMD EPYC …", "prompt_tokens": 512, "gen_tokens": 128, "reps": 3,
//!  "kv": "f32", "lm_head": "as-model", "ternary_activations": "f32",
//!  "float_weights": "auto",
//!  "prefill_tokens_per_sec": {"mean": …, "sd": …, "runs": [ … ]},
//!  "decode_tokens_per_sec": {"mean": …, "sd": …, "runs": [ … ]},
//!  "peak_rss_bytes": …, "weight_bytes": …, "weight_bytes_per_token": …}
//! ```

use std::path::PathBuf;
use std::time::Instant;

use clap::Args;
use ternary_core::kernels::Level;
use ternary_core::rng::SplitMix64;
use ternary_models::{BurnDecoder, Decoder, Logits};
use ternary_runtime::{FloatWeights, KvType, LmHead, Runtime, RuntimeOptions, TernaryActivations};

use crate::common::{
    CliError, Engine, PathArg, Res, load_model, set_ternary_path, ternary_activations, threads,
};

/// Arguments of `ternary bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {
    /// The model, in any format `ternary` reads.
    #[arg(long)]
    pub model: PathBuf,
    /// Prompt tokens of the prefill measurement (`llama-bench -p`).
    #[arg(long, default_value_t = 512)]
    pub prompt_tokens: usize,
    /// Decode steps of the decode measurement (`llama-bench -n`).
    #[arg(long, default_value_t = 128)]
    pub gen_tokens: usize,
    /// Measured repetitions of each (after one warm-up run).
    #[arg(long, default_value_t = 3)]
    pub reps: usize,
    /// The engine: the CPU runtime (default) or the Burn reference model.
    #[arg(long, value_enum, default_value_t = Engine::Runtime)]
    pub engine: Engine,
    /// How ternary layers compute (the runtime follows each layer's path).
    #[arg(long, value_enum, default_value_t = PathArg::Auto)]
    pub ternary_path: PathArg,
    /// Runtime: KV cache element type.
    #[arg(long, value_enum, default_value_t = KvArg::F32)]
    pub kv: KvArg,
    /// Runtime: output head arithmetic (`int8`: row-quantized weights, int8 activations).
    #[arg(long, value_enum, default_value_t = HeadArg::AsModel)]
    pub lm_head: HeadArg,
    /// Runtime: float layers' weights (`auto`: f16 where every value is an f16 value).
    #[arg(long, value_enum, default_value_t = FloatArg::Auto)]
    pub float_weights: FloatArg,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `--kv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KvArg {
    /// f32 keys and values.
    F32,
    /// f16 keys and values.
    F16,
}

/// `--lm-head`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HeadArg {
    /// As the model holds it.
    AsModel,
    /// Int8 per row.
    Int8,
}

/// `--float-weights`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FloatArg {
    /// f16 for layers whose values are all f16 values (exact), f32 otherwise.
    Auto,
    /// f32 always.
    F32,
    /// f16 always (rounded).
    F16,
}

impl FloatArg {
    fn name(self) -> &'static str {
        match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::F16 => "f16",
        }
    }
}

/// Mean and sample standard deviation.
fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len().max(1) as f64;
    let mean = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (mean, var.sqrt())
}

/// `VmHWM` of this process in bytes (0 where `/proc` is missing).
pub(crate) fn peak_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// The CPU's model name (`/proc/cpuinfo`), or `unknown`.
fn cpu_name() -> String {
    let s = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|v| v.split_once(':'))
        .map_or_else(|| "unknown".into(), |(_, v)| v.trim().to_string())
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    let mut o = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn json_stat(v: &[f64]) -> String {
    let (m, sd) = mean_sd(v);
    let runs: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
    format!(
        "{{\"mean\": {m:.3}, \"sd\": {sd:.3}, \"runs\": [{}]}}",
        runs.join(", ")
    )
}

/// `ternary bench`.
pub fn run(args: &BenchArgs) -> Res<()> {
    if args.prompt_tokens == 0 || args.gen_tokens == 0 || args.reps == 0 {
        return Err(CliError::new(
            "--prompt-tokens, --gen-tokens and --reps must be at least 1",
        ));
    }
    let (mut m, _) = load_model(&args.model)?;
    set_ternary_path(&mut m.model, args.ternary_path);
    let layer_acts = ternary_activations(&m.model);
    let c = m.model.config().clone();
    let need = args.prompt_tokens.max(args.gen_tokens);
    if need > c.max_position_embeddings {
        return Err(CliError::new(format!(
            "{need} positions exceed the model's context of {}",
            c.max_position_embeddings
        )));
    }
    let mut rng = SplitMix64::new(42);
    let ids: Vec<u32> = (0..need)
        .map(|_| (rng.next_u64() % c.vocab_size as u64) as u32)
        .collect();
    let opts = RuntimeOptions {
        threads: threads(),
        kv: match args.kv {
            KvArg::F32 => KvType::F32,
            KvArg::F16 => KvType::F16,
        },
        lm_head: match args.lm_head {
            HeadArg::AsModel => LmHead::AsModel,
            HeadArg::Int8 => LmHead::Int8,
        },
        // The runtime's default, as `generate`, `eval` and `perplexity` run it; the Burn
        // engine computes as its layers say.
        ternary: match args.engine {
            Engine::Runtime => TernaryActivations::Auto,
            Engine::Burn => TernaryActivations::AsLayer,
        },
        float_weights: match args.float_weights {
            FloatArg::Auto => FloatWeights::Auto,
            FloatArg::F32 => FloatWeights::F32,
            FloatArg::F16 => FloatWeights::F16,
        },
        ..RuntimeOptions::default()
    };
    // The runtime takes the Burn model and drops it once it holds what it needs (peak RSS is
    // the runtime's own); the Burn engine's figures come from a runtime built beside it.
    let (rt, model) = match args.engine {
        Engine::Runtime => (Runtime::from_owned_model(m.model, opts.clone())?, None),
        // Only for its figures: the Burn model's own buffers stay on the pages Burn gave them.
        Engine::Burn => {
            let opts = RuntimeOptions {
                huge_pages: false,
                ..opts.clone()
            };
            (Runtime::from_model(&m.model, opts)?, Some(m.model))
        }
    };
    let (bytes_per_token, weight_bytes) = (rt.weight_bytes_per_token(), rt.weight_bytes());
    let acts = match args.engine {
        Engine::Runtime => rt.ternary_activations(),
        Engine::Burn => layer_acts,
    };
    // Int8 ternary matrices the runtime repacked for its kernels (`PackedTernary`).
    let (repacked, huge) = if model.is_none() {
        (rt.repacked_layers(), rt.huge_page_bytes())
    } else {
        (0, 0)
    };
    let mut dec: Box<dyn Decoder> = match model {
        None => Box::new(rt),
        Some(model) => {
            drop(rt);
            Box::new(BurnDecoder::owning(model))
        }
    };
    let prompt = &ids[..args.prompt_tokens];
    let gen_ids = &ids[..args.gen_tokens];
    let mut prefill = Vec::with_capacity(args.reps);
    let mut decode = Vec::with_capacity(args.reps);
    for rep in 0..=args.reps {
        dec.clear();
        let t = Instant::now();
        dec.forward(prompt, Logits::Last)?;
        let pp = args.prompt_tokens as f64 / t.elapsed().as_secs_f64().max(1e-12);
        dec.clear();
        let t = Instant::now();
        for &id in gen_ids {
            dec.forward(&[id], Logits::Last)?;
        }
        let tg = args.gen_tokens as f64 / t.elapsed().as_secs_f64().max(1e-12);
        if rep > 0 {
            prefill.push(pp);
            decode.push(tg);
        }
    }
    let engine = match args.engine {
        Engine::Runtime => "runtime",
        Engine::Burn => "burn",
    };
    let simd = Level::detect().name();
    let rss = peak_rss();
    let kv = match args.kv {
        KvArg::F32 => "f32",
        KvArg::F16 => "f16",
    };
    let head = match args.lm_head {
        HeadArg::AsModel => "as-model",
        HeadArg::Int8 => "int8",
    };
    if args.json {
        println!(
            "{{\"schema\": \"ternary-bench/1\", \"model\": {}, \"engine\": \"{engine}\", \
             \"threads\": {}, \"simd\": \"{simd}\", \"cpu\": {}, \"prompt_tokens\": {}, \
             \"gen_tokens\": {}, \"reps\": {}, \"kv\": \"{kv}\", \"lm_head\": \"{head}\", \
             \"ternary_activations\": \"{acts}\", \"float_weights\": \"{}\", \
             \"repacked_layers\": {repacked}, \"huge_page_bytes\": {huge}, \
             \"prefill_tokens_per_sec\": {}, \
             \"decode_tokens_per_sec\": {}, \"peak_rss_bytes\": {rss}, \"weight_bytes\": \
             {weight_bytes}, \"weight_bytes_per_token\": {bytes_per_token}}}",
            json_str(&args.model.display().to_string()),
            opts.threads,
            json_str(&cpu_name()),
            args.prompt_tokens,
            args.gen_tokens,
            args.reps,
            args.float_weights.name(),
            json_stat(&prefill),
            json_stat(&decode),
        );
    } else {
        let (pm, ps) = mean_sd(&prefill);
        let (dm, ds) = mean_sd(&decode);
        println!(
            "{} ({engine}, {} threads, {simd}, {}; kv {kv}, lm_head {head}, ternary activations \
             {acts}, float weights {}, {repacked} ternary layers repacked, {:.1} MiB of weights on \
             huge pages)",
            args.model.display(),
            opts.threads,
            cpu_name(),
            args.float_weights.name(),
            huge as f64 / f64::from(1u32 << 20)
        );
        println!("pp{:<6} {pm:>10.1} ± {ps:.1} tokens/s", args.prompt_tokens);
        println!("tg{:<6} {dm:>10.1} ± {ds:.1} tokens/s", args.gen_tokens);
        println!(
            "peak RSS {:.1} MiB, weights {:.1} MiB, {:.1} MiB read per decode token",
            rss as f64 / (1 << 20) as f64,
            weight_bytes as f64 / (1 << 20) as f64,
            bytes_per_token as f64 / (1 << 20) as f64
        );
    }
    Ok(())
}
