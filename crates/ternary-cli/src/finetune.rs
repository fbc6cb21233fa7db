//! `ternary finetune`: recover the accuracy of a converted ternary model by training its
//! ternary layers against the float model it came from ([`ternary_convert::finetune`]).
//!
//! The teacher is the float model (any format `ternary` reads), the student a file written by
//! `ternary quantize` (one- or two-plane layers). Training text comes from local files only. A
//! progress bar shows loss, tokens/s and ETA; the curve (loss and, with `--eval-text`,
//! held-out perplexity against steps, tokens and seconds) is written as JSON beside the output;
//! a checkpoint is kept so that `--resume` continues an interrupted run exactly. `--top-k K`
//! distils from the teacher's top `K` per position, cached once in `--teacher-cache` and
//! reused by later runs on the same text ([`TeacherCache`]). On the CPU
//! (`--device cpu`) teacher and student run on Burn's flex backend (`--device ndarray`: its
//! ndarray backend); with `--device wgpu` or `--device cuda` (a binary built with that feature)
//! on Burn's CubeCL backend on the GPU: the same training code everywhere.

use std::path::{Path, PathBuf};

use burn::backend::Autodiff;
use clap::{Args, ValueEnum};
use ternary_convert::convert::bos_of;
use ternary_convert::finetune::{
    Checkpointing, EvalSet, FinetuneConfig, HiddenLoss, Mode, OptimConfig, Progress, TeacherCache,
    Windows, finetune,
};
use ternary_layers::{Cpu, Flex, TernaryBackend};
use ternary_models::{Format, sniff};

use ternary_convert::model_file::human_bytes;

use crate::common::{
    CliError, Res, bar, load_model_on, overwrites_input, read_text, same_file, same_path,
};
use crate::quantize::FloatStoreArg;

/// What the student learns from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Distillation: KL divergence to the teacher's next-token distributions, end to end.
    Kd,
    /// Block by block, reproduce the teacher's hidden states (CPU-friendly); `--tokens` per
    /// trained block (blocks left float are skipped).
    Blockwise,
}

/// Where the training runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DeviceArg {
    /// The CPU, on Burn's flex backend (gemm matrix products, sized by --threads).
    Cpu,
    /// The CPU, on Burn's ndarray backend (matrixmultiply's products): what `cpu` was for
    /// the runs of docs/accuracy.md before §8o; 1.3× slower at distillation (Intel Xeon,
    /// AVX-512, §8o).
    Ndarray,
    /// Burn's CubeCL backend over wgpu (Vulkan, Metal, DX12); needs the `wgpu` feature.
    Wgpu,
    /// Burn's CubeCL backend over CUDA; needs the `cuda` feature.
    Cuda,
}

/// Arguments of `ternary finetune`.
#[derive(Debug, Clone, Args)]
pub struct FinetuneArgs {
    /// The float model the student was converted from (any format `ternary` reads).
    #[arg(long)]
    pub teacher: PathBuf,
    /// The ternary model to train: a file written by `ternary quantize` (one or two trit-planes).
    #[arg(long)]
    pub student: PathBuf,
    /// Training text files (UTF-8; never the evaluation text).
    #[arg(long, num_args = 1.., required = true)]
    pub data: Vec<PathBuf>,
    /// Training tokens: in all (kd) or per trained block (blockwise; float blocks are skipped).
    #[arg(long, default_value_t = 65_536)]
    pub tokens: usize,
    /// Distillation or block-wise reconstruction.
    #[arg(long, value_enum, default_value_t = ModeArg::Kd)]
    pub mode: ModeArg,
    /// Where to write the trained model (a ternary model file, written atomically).
    #[arg(long)]
    pub out: PathBuf,
    /// Tokens per training window.
    #[arg(long, default_value_t = 256)]
    pub seq_len: usize,
    /// Windows per optimizer step (gradient accumulation).
    #[arg(long, default_value_t = 1)]
    pub accum: usize,
    /// Peak learning rate (AdamW).
    #[arg(long, default_value_t = 2e-4)]
    pub lr: f64,
    /// Learning-rate multiplier for the scales.
    #[arg(long, default_value_t = 1.0)]
    pub scale_lr: f64,
    /// Also train the RMSNorm weights, at this multiple of --lr (0: frozen). Trained norms
    /// are saved in the output file.
    #[arg(long, default_value_t = 0.0)]
    pub norm_lr: f64,
    /// Fraction of the steps spent warming up.
    #[arg(long, default_value_t = 0.05)]
    pub warmup: f64,
    /// Floor of the cosine decay, as a fraction of --lr.
    #[arg(long, default_value_t = 0.1)]
    pub min_lr_ratio: f64,
    /// Decoupled weight decay on the latent weights.
    #[arg(long, default_value_t = 0.0)]
    pub weight_decay: f64,
    /// Global gradient-norm limit (0: no clipping).
    #[arg(long, default_value_t = 1.0)]
    pub clip: f64,
    /// Distillation temperature.
    #[arg(long, default_value_t = 1.0)]
    pub temperature: f64,
    /// Weight of the per-block hidden-state MSE added to the distillation loss (0: off).
    #[arg(long, default_value_t = 0.0)]
    pub hidden_mse: f64,
    /// How a hidden-state loss (block-wise, or `--hidden-mse`) is normalized: by the whole
    /// window's energy, or token by token (so that tokens with very large hidden states, such
    /// as attention sinks, do not dominate).
    #[arg(long, value_enum, default_value_t = HiddenLossArg::Window)]
    pub hidden_loss: HiddenLossArg,
    /// Train only the scales (the trits stay as they are), e.g. after a block-wise run.
    #[arg(long)]
    pub scales_only: bool,
    /// Distil against the teacher's K most probable tokens per position (the rest of the
    /// vocabulary as one bucket), cached once over the training windows in --teacher-cache,
    /// instead of running the teacher at every step (kd mode, --hidden-mse 0).
    #[arg(long, value_name = "K")]
    pub top_k: Option<usize>,
    /// The cache of --top-k (default: OUT with `.teacher.safetensors` appended): reused when
    /// it exists (it must have been built on the same data, teacher, K and temperature), else
    /// built and written there.
    #[arg(long)]
    pub teacher_cache: Option<PathBuf>,
    /// Seed of the window order.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Held-out text for perplexity during training (never a training file).
    #[arg(long)]
    pub eval_text: Option<PathBuf>,
    /// Context of the held-out perplexity.
    #[arg(long, default_value_t = 512)]
    pub eval_ctx: usize,
    /// Chunks of the held-out text scored each time.
    #[arg(long, default_value_t = 2)]
    pub eval_chunks: usize,
    /// Measure held-out perplexity every this many steps (0: at the start and the end only).
    #[arg(long, default_value_t = 0)]
    pub eval_every: usize,
    /// The checkpoint file (default: OUT with `.ckpt` appended).
    #[arg(long)]
    pub checkpoint: Option<PathBuf>,
    /// Checkpoint every this many steps (and at the end).
    #[arg(long, default_value_t = 50)]
    pub checkpoint_every: usize,
    /// Continue from the checkpoint (same options as the interrupted run).
    #[arg(long)]
    pub resume: bool,
    /// Where to write the curve as JSON (default: OUT with `.curve.json` appended).
    #[arg(long)]
    pub curve: Option<PathBuf>,
    /// Where teacher and student run (`wgpu` and `cuda` need a binary built with that feature).
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    /// Stop after this many seconds of training (checkpoint and output written as at the end;
    /// the curve says where it stopped). For runs that must fit a time slot.
    #[arg(long, allow_negative_numbers = true)]
    pub max_seconds: Option<f64>,
    /// How the output file stores the float tensors (the embedding and the layers kept float).
    #[arg(long, value_enum, default_value_t = FloatStoreArg::F16)]
    pub float_dtype: FloatStoreArg,
}

fn with_suffix(p: &Path, suffix: &str) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// `ternary finetune`: checks the device, then trains there ([`run_on`]).
pub fn run(args: &FinetuneArgs) -> Res<()> {
    if args.teacher_cache.is_some() && args.top_k.is_none() {
        return Err(CliError::new(
            "--teacher-cache holds the teacher's top-k distributions: give --top-k K with it",
        ));
    }
    if let Some(s) = args.max_seconds
        && !(s.is_finite() && s >= 0.0)
    {
        return Err(CliError::new(format!(
            "--max-seconds {s}: give a number of seconds, 0 or more"
        )));
    }
    match args.device {
        DeviceArg::Cpu => run_on::<Flex>(args, &Default::default()),
        DeviceArg::Ndarray => run_on::<Cpu>(args, &Default::default()),
        DeviceArg::Wgpu => {
            #[cfg(feature = "wgpu")]
            {
                let client = ternary_kernels::device::wgpu_client()?;
                eprintln!(
                    "device: wgpu ({})",
                    ternary_kernels::DeviceCaps::of(&client).runtime
                );
                run_on::<burn::backend::Wgpu>(args, &Default::default())
            }
            #[cfg(not(feature = "wgpu"))]
            Err(not_built("wgpu"))
        }
        DeviceArg::Cuda => {
            #[cfg(feature = "cuda")]
            {
                let client = ternary_kernels::device::cuda_client()?;
                eprintln!(
                    "device: CUDA ({})",
                    ternary_kernels::DeviceCaps::of(&client).runtime
                );
                run_on::<burn::backend::Cuda>(args, &Default::default())
            }
            #[cfg(not(feature = "cuda"))]
            Err(not_built("cuda"))
        }
    }
}

/// The error for a device whose feature this binary was built without.
#[allow(dead_code)]
fn not_built(feature: &str) -> CliError {
    CliError::new(format!(
        "--device {feature}: this `ternary` was built without the `{feature}` feature; build it \
         with `cargo build --release -p ternary-cli --features {feature}`"
    ))
}

/// `--hidden-loss`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum HiddenLossArg {
    /// `Σ(a − y)² / Σy²` over the window.
    Window,
    /// `mean_i ‖a_i − y_i‖² / ‖y_i‖²` over its tokens.
    Token,
}

/// Loads `--teacher-cache` when it exists (checked against these windows), else builds the
/// teacher's top-`k` cache over every window and writes it there; returns the windows with the
/// cache attached.
fn attach_teacher_cache<T: burn::tensor::backend::Backend>(
    args: &FinetuneArgs,
    cfg: &FinetuneConfig,
    teacher: &ternary_models::Llama<T>,
    windows: Windows,
    k: usize,
) -> Res<Windows> {
    cfg.validate()?;
    let path = args
        .teacher_cache
        .clone()
        .unwrap_or_else(|| with_suffix(&args.out, ".teacher.safetensors"));
    // Neither an input nor one of the run's outputs (which would overwrite the cache).
    let outputs = [
        args.out.clone(),
        args.checkpoint
            .clone()
            .unwrap_or_else(|| with_suffix(&args.out, ".ckpt")),
        args.curve
            .clone()
            .unwrap_or_else(|| with_suffix(&args.out, ".curve.json")),
    ];
    let inputs = [&args.teacher, &args.student]
        .into_iter()
        .chain(&args.data)
        .chain(&args.eval_text);
    for input in inputs {
        if overwrites_input(input, &path) {
            return Err(CliError::new(format!(
                "--teacher-cache {} would overwrite {}",
                path.display(),
                input.display()
            )));
        }
    }
    if let Some(o) = outputs.iter().find(|o| same_path(o, &path)) {
        return Err(CliError::new(format!(
            "--teacher-cache {} is also where this run writes {}; choose another path",
            path.display(),
            o.display()
        )));
    }
    if path.exists() {
        let cache = TeacherCache::load(&path)?;
        if cache.k() != k || cache.temperature() != cfg.temperature {
            return Err(CliError::new(format!(
                "--teacher-cache {} keeps the top {} at temperature {}; this run asks for \
                 --top-k {k} at --temperature {}: give another --teacher-cache path (or delete \
                 that file to build it again)",
                path.display(),
                cache.k(),
                cache.temperature(),
                cfg.temperature
            )));
        }
        eprintln!(
            "teacher cache {}: top {k} over {} windows ({}), reused",
            path.display(),
            cache.windows(),
            human_bytes(cache.bytes() as u64)
        );
        return windows.with_teacher_cache(cache).map_err(|e| {
            CliError::new(format!(
                "--teacher-cache {}: {e}; give another path (or delete that file to build it \
                 again)",
                path.display()
            ))
        });
    }
    let pb = bar(windows.len() as u64, "teacher top-k");
    let start = std::time::Instant::now();
    // Without a terminal the bar is hidden: a line every tenth of the windows instead.
    let cache = TeacherCache::build(teacher, &windows, k, cfg.temperature, &mut |d, n| {
        pb.set_position(d as u64);
        if pb.is_hidden() && (d * 10 / n) != ((d - 1) * 10 / n) {
            eprintln!(
                "teacher top-{k}: {d}/{n} windows, {:.0} s",
                start.elapsed().as_secs_f64()
            );
        }
    })?;
    pb.finish_and_clear();
    cache.save(&path)?;
    eprintln!(
        "teacher cache {}: top {k} over {} windows ({}) built in {:.1} s",
        path.display(),
        cache.windows(),
        human_bytes(cache.bytes() as u64),
        start.elapsed().as_secs_f64()
    );
    Ok(windows.with_teacher_cache(cache)?)
}

/// `ternary finetune` with teacher and student on backend `B`'s `dev`.
fn run_on<B: TernaryBackend>(args: &FinetuneArgs, dev: &B::Device) -> Res<()> {
    for input in [&args.teacher, &args.student] {
        if overwrites_input(input, &args.out) {
            return Err(CliError::new(format!(
                "--out {} would overwrite the input {}",
                args.out.display(),
                input.display()
            )));
        }
    }
    let fmt = sniff(&args.student)?;
    if fmt != Format::ConvertedModel {
        return Err(CliError::new(format!(
            "--student {} is a {fmt}; give a ternary model written by `ternary quantize`",
            args.student.display()
        )));
    }
    let mut text = String::new();
    for d in &args.data {
        if let Some(e) = &args.eval_text
            && same_file(d, e)
        {
            return Err(CliError::new(format!(
                "{} is both training data and the evaluation text",
                d.display()
            )));
        }
        let t = read_text(d)?;
        if t.trim().is_empty() {
            return Err(CliError::new(format!(
                "{}: the training file is empty",
                d.display()
            )));
        }
        text.push_str(&t);
        text.push('\n');
    }
    let eval_text = args.eval_text.as_ref().map(|p| read_text(p)).transpose()?;

    let (mut teacher, tfmt) = load_model_on::<B>(&args.teacher, dev)?;
    let mut student = ternary_convert::load::<Autodiff<B>>(&args.student, dev)?;
    // A student converted with `--rotate` has its residual stream rotated: the teacher gets
    // the same rotation (same logits, hidden states in the student's basis).
    if let (Some(seed), None) = (
        student.model.config().residual_rotation,
        teacher.model.config().residual_rotation,
    ) {
        eprintln!("rotating the teacher's residual stream as the student's was (seed {seed})");
        ternary_convert::rotate::rotate_residual(&mut teacher.model, seed)?;
    }
    if teacher.tokenizer.vocab_size() != student.tokenizer.vocab_size()
        || teacher.tokenizer.to_json()? != student.tokenizer.to_json()?
    {
        return Err(CliError::new(format!(
            "the teacher's tokenizer ({} tokens) is not the student's ({} tokens): the student \
             must be converted from this teacher",
            teacher.tokenizer.vocab_size(),
            student.tokenizer.vocab_size()
        )));
    }
    let tokens = student.tokenizer.encode(&text, true)?;
    let windows = Windows::new(tokens, args.seq_len, args.seed)?;
    let eval = match &eval_text {
        Some(t) => {
            let tokens = student.tokenizer.encode(t, true)?;
            if tokens.len() < 2 * args.eval_ctx {
                return Err(CliError::new(format!(
                    "the evaluation text has {} tokens; --eval-ctx {} needs at least {}",
                    tokens.len(),
                    args.eval_ctx,
                    2 * args.eval_ctx
                )));
            }
            Some(EvalSet {
                tokens,
                ctx: args.eval_ctx,
                chunks: args.eval_chunks.max(1),
                every: args.eval_every,
                bos: bos_of(&student.tokenizer),
            })
        }
        None => None,
    };
    let cfg = FinetuneConfig {
        mode: match args.mode {
            ModeArg::Kd => Mode::Kd,
            ModeArg::Blockwise => Mode::Blockwise,
        },
        tokens: args.tokens,
        seq_len: args.seq_len,
        accum: args.accum,
        optim: OptimConfig {
            lr: args.lr,
            scale_lr: args.scale_lr,
            norm_lr: args.norm_lr,
            warmup: args.warmup,
            min_lr_ratio: args.min_lr_ratio,
            weight_decay: args.weight_decay,
            clip: (args.clip > 0.0).then_some(args.clip),
            ..OptimConfig::default()
        },
        temperature: args.temperature,
        hidden_mse: args.hidden_mse,
        hidden_loss: match args.hidden_loss {
            HiddenLossArg::Window => HiddenLoss::Window,
            HiddenLossArg::Token => HiddenLoss::Token,
        },
        scales_only: args.scales_only,
        seed: args.seed,
        top_k: args.top_k,
    };
    let windows = match args.top_k {
        Some(k) => attach_teacher_cache(args, &cfg, &teacher.model, windows, k)?,
        None => windows,
    };
    let ckpt_path = args
        .checkpoint
        .clone()
        .unwrap_or_else(|| with_suffix(&args.out, ".ckpt"));
    if args.resume && !ckpt_path.is_file() {
        return Err(CliError::new(format!(
            "--resume: no checkpoint at {}",
            ckpt_path.display()
        )));
    }
    let blocks = student.model.config().num_layers;
    let visited = ternary_convert::finetune::blockwise_blocks(&student.model, &cfg);
    eprintln!(
        "teacher {} ({tfmt}), student {}: {} mode, {} training tokens in {} windows of {}, \
         {} steps{}",
        args.teacher.display(),
        args.student.display(),
        cfg.mode.name(),
        windows.len() * args.seq_len,
        windows.len(),
        args.seq_len,
        match cfg.mode {
            Mode::Kd => cfg.steps_per_schedule(),
            Mode::Blockwise => cfg.steps_per_schedule() * visited.len(),
        },
        if args.resume { " (resuming)" } else { "" }
    );
    if cfg.mode == Mode::Blockwise {
        let skipped: Vec<String> = (0..blocks)
            .filter(|l| !visited.contains(l))
            .map(|l| l.to_string())
            .collect();
        if !skipped.is_empty() {
            eprintln!(
                "blocks with nothing to train (every linear layer float, norms frozen), skipped: {}",
                skipped.join(", ")
            );
        }
    }
    let pb = bar(0, "fine-tuning");
    let mut last_loss = f64::NAN;
    let mut on_progress = |p: &Progress<'_>| {
        pb.set_length(p.total_steps as u64);
        pb.set_position(p.point.step as u64);
        if let Some(l) = p.point.loss {
            last_loss = l;
        }
        let tps = p.point.tokens as f64 / p.point.seconds.max(1e-9);
        let block = p
            .point
            .block
            .zip(p.blocks)
            .map_or(String::new(), |(b, n)| format!("block {}/{n} ", b + 1));
        let status = format!("{block}loss {last_loss:.4} {tps:.0} tok/s");
        pb.set_message(status.clone());
        let eval = p
            .point
            .eval_ppl
            .map_or(String::new(), |ppl| format!("  held-out ppl {ppl:.4}"));
        let line = format!(
            "step {:>6}/{} tokens {:>9} {:>8.1}s  {status}{eval}",
            p.point.step, p.total_steps, p.point.tokens, p.point.seconds
        );
        // Without a terminal the bar is hidden: a status line every 10 steps and at each
        // perplexity measurement instead.
        if pb.is_hidden() {
            if !eval.is_empty() || p.point.step.is_multiple_of(10) {
                eprintln!("{line}");
            }
        } else if !eval.is_empty() {
            pb.println(line);
        }
    };
    let report = finetune(
        &teacher.model,
        &mut student.model,
        &windows,
        &cfg,
        eval.as_ref(),
        &Checkpointing {
            path: Some(ckpt_path.clone()),
            every: args.checkpoint_every,
            resume: args.resume.then(|| ckpt_path.clone()),
            stop_after: None,
            stop_after_seconds: args.max_seconds,
        },
        &mut on_progress,
    )?;
    pb.finish_and_clear();
    let summary = ternary_convert::save_with(
        &args.out,
        &student.model,
        &student.tokenizer,
        args.float_dtype.storage(),
    )?;
    let curve_path = args
        .curve
        .clone()
        .unwrap_or_else(|| with_suffix(&args.out, ".curve.json"));
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| CliError::new(format!("cannot encode the curve: {e}")))?;
    ternary_core::io::write_atomic(&curve_path, json.as_bytes())?;
    let last = report.curve.last();
    let seconds = last.map_or(0.0, |p| p.seconds);
    let tokens = last.map_or(0, |p| p.tokens);
    eprintln!(
        "{} steps, {tokens} tokens in {seconds:.1} s ({:.0} tokens/s), {} layers, {} trainable \
         values, peak memory {:.2} GB",
        report.steps,
        tokens as f64 / seconds.max(1e-9),
        report.layers,
        report.params,
        crate::bench::peak_rss() as f64 / 1e9
    );
    if report.interrupted {
        eprintln!(
            "stopped by --max-seconds after step {} of {}; the output holds the weights of that \
             step, and `--resume` with the same options continues the schedule",
            report.steps, report.total_steps
        );
    }
    let ppls: Vec<f64> = report.curve.iter().filter_map(|p| p.eval_ppl).collect();
    if let (Some(a), Some(b)) = (ppls.first(), ppls.last()) {
        eprintln!("held-out perplexity {a:.4} -> {b:.4}");
    }
    println!(
        "wrote {} ({:.1}% of linear weights ternary, {}); curve {}; checkpoint {}",
        args.out.display(),
        100.0 * summary.ternary_fraction(),
        human_bytes(summary.file_bytes),
        curve_path.display(),
        ckpt_path.display()
    );
    Ok(())
}
