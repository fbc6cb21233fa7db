//! Accuracy experiments for post-training ternary conversion of SmolLM2-135M: every number in
//! `docs/accuracy.md` comes from this program.
//!
//! ```text
//! cargo run --release -p ternary-convert --example accuracy -- sweep \
//!     --run method=absmean,group=row,gptq=0 --run method=aware,group=64,gptq=1 ... [--pareto]
//! cargo run --release -p ternary-convert --example accuracy -- convert [--budget 1.05]
//! ```
//!
//! `sweep`: calibrates once on `--calib` (repeatable: files are concatenated; default
//! `fixtures/text/calibration.txt`; never the evaluation text, and never the held-out texts under
//! `/usr/share/common-licenses`, `/usr/share/man` or `/usr/share/doc`, which are refused), then
//! for each
//! `--run` configuration quantizes every linear layer and measures perplexity on the held-out
//! evaluation text `--text` (default `fixtures/text/declaration-gettysburg.txt`, ctx 512, all
//! chunks) with all layers ternary, with all but `lm_head` ternary and, with `--pareto`, for
//! prefixes of the layers ordered by KL sensitivity per weight (measured on a held-out chunk of
//! the calibration text; `--pareto-first`: for the first run only). Layers run as float stand-ins with the ternary layers' exact
//! effective weights. Run keys: `method=absmean|twn|absmax|p<percent>|aware`,
//! `group=row|<size>`, `gptq=0|1`, `refit=0|1`, `damp=<λ>`, `alpha=<a>[:<a>…]`, `seq=0|1`
//! (sequential: each block calibrated with the blocks before it already quantized).
//! `--subset FILE` (layer names, one per line) quantizes and measures only those layers,
//! to compare quantizers on one fixed mixed-precision plan.
//!
//! `convert`: the library's `convert` with the default configuration (or `--budget`), timed,
//! then the evaluation-text perplexity of the result.

use std::time::Instant;
use ternary_convert::convert::{
    ConvertConfig, QuantizedLayer, apply_standins, bos_of, eval_ppl, quantize_model,
    quantize_model_sequential, restore_layers, sensitivities, sensitivity_order,
};
use ternary_convert::{GptqConfig, Progress, calibrate, convert};
use ternary_core::ScaleLayout;
use ternary_core::quant::Method;
use ternary_layers::Cpu;
use ternary_models::{Llama, fetch, load};

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

fn all_args(args: &[String], name: &str) -> Vec<String> {
    args.windows(2)
        .filter(|w| w[0] == name)
        .map(|w| w[1].clone())
        .collect()
}

fn parse_run(spec: &str) -> Res<ConvertConfig> {
    let mut cfg = ConvertConfig {
        budget: None,
        input_scale_alphas: vec![],
        ..ConvertConfig::default()
    };
    let mut gptq = GptqConfig::default();
    let mut use_gptq = true;
    for kv in spec.split(',').filter(|s| !s.is_empty()) {
        let (k, v) = kv
            .split_once('=')
            .ok_or_else(|| format!("bad run key {kv}"))?;
        match k {
            "method" => {
                cfg.method = match v {
                    "absmean" => Method::AbsMean,
                    "twn" => Method::twn(),
                    "absmax" => Method::AbsMax,
                    "aware" => Method::ActivationAware,
                    p if p.starts_with('p') => Method::Percentile {
                        p: p[1..].parse::<f32>()? / 100.0,
                        refit: true,
                    },
                    _ => return Err(format!("unknown method {v}").into()),
                }
            }
            "group" => {
                cfg.layout = if v == "row" {
                    ScaleLayout::PerRow
                } else {
                    ScaleLayout::PerGroup {
                        group_size: v.parse()?,
                    }
                }
            }
            "gptq" => use_gptq = v == "1",
            "refit" => gptq.refit = v == "1",
            "damp" => gptq.damp = v.parse()?,
            "alpha" => {
                cfg.input_scale_alphas = v
                    .split(':')
                    .map(str::parse)
                    .collect::<std::result::Result<_, _>>()?
            }
            _ => return Err(format!("unknown run key {k}").into()),
        }
    }
    cfg.gptq = use_gptq.then_some(gptq);
    Ok(cfg)
}

fn default_calib() -> String {
    concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../fixtures/text/calibration.txt"
    )
    .into()
}

/// Texts held out for evaluation: never calibrated, trained or tuned on.
const HELD_OUT: [&str; 3] = [
    "/usr/share/common-licenses",
    "/usr/share/man",
    "/usr/share/doc",
];

/// Refuses a calibration file under a held-out directory (resolving links and `..`).
fn check_calibration_path(path: &str) -> Res<()> {
    let p = std::fs::canonicalize(path).map_err(|e| format!("--calib {path}: {e}"))?;
    if let Some(dir) = HELD_OUT.iter().find(|d| p.starts_with(d)) {
        return Err(format!(
            "--calib {path}: texts under {dir} are held out for evaluation; calibrate on \
             fixtures/text/ instead"
        )
        .into());
    }
    Ok(())
}

fn log_progress(p: Progress) {
    match p {
        Progress::Step {
            stage,
            done,
            total,
            detail,
        } if done == total || done % 20 == 0 || stage == ternary_convert::Stage::Search => {
            eprintln!("  [{}] {done}/{total} {detail}", stage.name());
        }
        Progress::Finish { stage, message } => eprintln!("  [{}] {message}", stage.name()),
        _ => {}
    }
}

/// Linear weights in `layers` and in the whole model.
fn weights(model: &Llama<Cpu>) -> usize {
    model
        .linears()
        .iter()
        .map(|(_, l)| l.in_features() * l.out_features())
        .sum()
}

/// Mean bits per linear weight with the ternary `chosen` layers at their stored bits and every
/// other layer at `float_bits`.
fn bits(model: &Llama<Cpu>, chosen: &[&(String, QuantizedLayer)], float_bits: f64) -> f64 {
    let total = weights(model) as f64;
    let t_w: usize = chosen.iter().map(|p| p.1.weights()).sum();
    let t_bits: f64 = chosen
        .iter()
        .map(|p| {
            let q = &p.1;
            let extra = q
                .input_scale
                .as_ref()
                .map_or(0.0, |d| 32.0 * d.len() as f64);
            q.matrix.bits_per_weight() * q.weights() as f64 + extra
        })
        .sum();
    (t_bits + (total - t_w as f64) * float_bits) / total
}

fn main() -> Res<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let cmd = args.first().cloned().unwrap_or_else(|| "sweep".into());
    let t0 = Instant::now();
    let mut m = load::<Cpu>(fetch::smollm2_path(), &Default::default())?;
    let text_path = arg(&args, "--text").unwrap_or_else(|| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../fixtures/text/declaration-gettysburg.txt"
        )
        .into()
    });
    let mut calib_paths = all_args(&args, "--calib");
    if calib_paths.is_empty() {
        calib_paths.push(default_calib());
    }
    for p in &calib_paths {
        check_calibration_path(p)?;
    }
    let calib_path = calib_paths.join(" + ");
    let eval_text = std::fs::read_to_string(&text_path)?;
    let mut calib_text = String::new();
    for p in &calib_paths {
        calib_text.push_str(&std::fs::read_to_string(p)?);
        calib_text.push('\n');
    }
    let ctx: usize = arg(&args, "--ctx").map_or(Ok(512), |s| s.parse())?;
    let bos = bos_of(&m.tokenizer);
    let eval_tokens = m.tokenizer.encode(&eval_text, true)?;
    let calib_tokens = m.tokenizer.encode(&calib_text, true)?;
    eprintln!(
        "calibration {calib_path}: {} tokens; evaluation {text_path}: {} tokens",
        calib_tokens.len(),
        eval_tokens.len()
    );
    let t = Instant::now();
    let ppl_float = eval_ppl(&m.model, &eval_tokens, ctx, bos)?;
    println!(
        "float model: eval ppl {ppl_float:.4} ({:.1} s)",
        t.elapsed().as_secs_f64()
    );
    if cmd == "convert" {
        let mut cfg = ConvertConfig::default();
        if let Some(b) = arg(&args, "--budget") {
            cfg.budget = if b == "none" { None } else { Some(b.parse()?) };
        }
        for p in all_args(&args, "--keep-float") {
            cfg.keep_float.push(p);
        }
        let t = Instant::now();
        let report = convert(
            &mut m.model,
            &m.tokenizer,
            &calib_text,
            &cfg,
            &mut log_progress,
        )?;
        let secs = t.elapsed().as_secs_f64();
        println!("{report}");
        let ppl = eval_ppl(&m.model, &eval_tokens, ctx, bos)?;
        println!(
            "convert (default config{}) took {secs:.1} s; eval ppl {ppl:.4} = {:.4}x float; \
             {:.1}% of linear weights ternary",
            cfg.budget
                .map_or_else(String::new, |b| format!(", budget {b}")),
            ppl / ppl_float,
            100.0 * report.ternary_fraction()
        );
        return Ok(());
    }
    let n_calib: usize = arg(&args, "--calib-tokens").map_or(Ok(4096), |s| s.parse())?;
    let sens_tokens: usize = arg(&args, "--sens-tokens").map_or(Ok(128), |s| s.parse())?;
    let fractions: Vec<f64> = arg(&args, "--fractions")
        .unwrap_or_else(|| "0.25,0.5,0.6,0.7,0.8,0.9".into())
        .split(',')
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    let n_calib = n_calib.min(calib_tokens.len().saturating_sub(sens_tokens));
    let t = Instant::now();
    let calib = calibrate(
        &mut m.model,
        &calib_tokens[..n_calib],
        ctx,
        bos,
        None,
        &mut |_, _| {},
    )?;
    eprintln!(
        "calibrated on {} tokens in {:.1} s",
        calib.tokens,
        t.elapsed().as_secs_f64()
    );
    let mut sens_chunk = calib_tokens[n_calib..n_calib + sens_tokens].to_vec();
    if let Some(b) = bos {
        sens_chunk[0] = b;
    }
    let total_w = weights(&m.model) as f64;
    println!(
        "| run | ternary layers | ternary weights | bits/weight (float=16) | eval ppl | ratio |"
    );
    println!("|---|---|---|---|---|---|");
    // `--subset FILE`: quantize and measure only the layers named in FILE (one per line).
    let subset: Option<Vec<String>> = match arg(&args, "--subset") {
        Some(f) => Some(
            std::fs::read_to_string(f)?
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect(),
        ),
        None => None,
    };
    for (run_idx, spec) in all_args(&args, "--run").into_iter().enumerate() {
        // `seq=1`: sequential quantization (each block calibrated after the previous ones
        // are quantized), on the same calibration tokens.
        let seq = spec.split(',').any(|kv| kv == "seq=1");
        let cfg_spec: Vec<&str> = spec
            .split(',')
            .filter(|kv| !kv.starts_with("seq="))
            .collect();
        let mut cfg = parse_run(&cfg_spec.join(","))?;
        if let Some(sub) = &subset {
            cfg.keep_float = m
                .model
                .linears()
                .into_iter()
                .map(|(n, _)| n)
                .filter(|n| !sub.contains(n))
                .collect();
        }
        let t = Instant::now();
        let q = if seq {
            quantize_model_sequential(
                &mut m.model,
                &calib_tokens[..n_calib],
                ctx,
                bos,
                &cfg,
                &mut log_progress,
            )?
        } else {
            quantize_model(&m.model, &calib, &cfg, &mut log_progress)?
        };
        let q_secs = t.elapsed().as_secs_f64();
        let mean_err = q.iter().map(|p| p.1.rel_error).sum::<f64>() / q.len().max(1) as f64;
        eprintln!("{spec}: quantized in {q_secs:.1} s, mean rel. output error {mean_err:.4}");
        let point = |model: &mut Llama<Cpu>,
                     label: &str,
                     chosen: Vec<&(String, QuantizedLayer)>|
         -> Res<()> {
            let saved = apply_standins(model, &chosen)?;
            let ppl = eval_ppl(model, &eval_tokens, ctx, bos);
            let b = bits(model, &chosen, 16.0);
            restore_layers(model, saved)?;
            let ppl = ppl?;
            let tw: usize = chosen.iter().map(|p| p.1.weights()).sum();
            println!(
                "| {spec} {label} | {} | {:.1}% | {b:.2} | {ppl:.3} | {:.3} |",
                chosen.len(),
                100.0 * tw as f64 / total_w,
                ppl / ppl_float
            );
            Ok(())
        };
        if subset.is_some() {
            point(&mut m.model, "subset", q.iter().collect())?;
            continue;
        }
        point(&mut m.model, "all", q.iter().collect())?;
        point(
            &mut m.model,
            "all but lm_head",
            q.iter().filter(|p| p.0 != "lm_head").collect(),
        )?;
        let pareto = args.iter().any(|a| a == "--pareto")
            || (run_idx == 0 && args.iter().any(|a| a == "--pareto-first"));
        if pareto {
            let t = Instant::now();
            let s = sensitivities(&mut m.model, &q, &sens_chunk, &mut log_progress)?;
            eprintln!("sensitivities in {:.1} s", t.elapsed().as_secs_f64());
            let order = sensitivity_order(&q, &s);
            for (rank, &i) in order.iter().enumerate() {
                eprintln!(
                    "  sens #{rank} {} KL {:.3e} per-weight {:.3e} rel.err {:.4}",
                    q[i].0,
                    s[i],
                    s[i] / q[i].1.weights() as f64,
                    q[i].1.rel_error
                );
            }
            let mut last_len = usize::MAX;
            for &f in &fractions {
                let mut chosen = Vec::new();
                let mut acc = 0usize;
                for &i in &order {
                    if (acc as f64) >= f * total_w {
                        break;
                    }
                    acc += q[i].1.weights();
                    chosen.push(&q[i]);
                }
                if chosen.len() == last_len {
                    continue;
                }
                last_len = chosen.len();
                point(&mut m.model, &format!("sens-prefix {f}"), chosen)?;
            }
        }
    }
    eprintln!("total {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
}
