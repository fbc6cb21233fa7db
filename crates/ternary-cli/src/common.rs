//! Shared pieces: the error type, model loading by format (sniffed by content), progress bars, footprints,
//! perplexity and speed measurements.

use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use ternary_convert::model_file::{as_ternary, human_bytes};
use ternary_layers::Cpu;
use ternary_layers::{LinearPath, TernaryBackend};
use ternary_models::chat::template_from_tokenizer_config;
use ternary_models::{
    BurnDecoder, Decoder, Format, Llama, LoadedModel, PerplexityReport, Sampling, generate_with,
    perplexity_with, sniff,
};
use ternary_runtime::{Runtime, RuntimeOptions};

/// An error message for the user (any displayable error converts into one).
///
/// Deliberately not `Display` itself, so that the blanket `From` below does not overlap with
/// `From<T> for T`.
#[derive(Debug)]
pub struct CliError(String);

impl CliError {
    /// An error with this message.
    pub fn new(msg: impl Into<String>) -> Self {
        Self(msg.into())
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.0
    }
}

impl<E: Display> From<E> for CliError {
    fn from(e: E) -> Self {
        Self(e.to_string())
    }
}

/// `Result` with [`CliError`].
pub type Res<T> = Result<T, CliError>;

/// Whether a model came from a file written by `ternary quantize`.
pub fn is_converted(format: Format) -> bool {
    format == Format::ConvertedModel
}

/// Loads a model of any [`Format`] (told by content, see [`ternary_models::sniff()`]) onto the
/// CPU backend, with a spinner. A Hugging Face checkpoint without a chat template in its
/// tokenizer gets the one in `tokenizer_config.json`, when there is one.
pub fn load_model(path: &Path) -> Res<(LoadedModel<Cpu>, Format)> {
    load_model_on::<Cpu>(path, &Default::default())
}

/// [`load_model`] on any backend's `device`.
pub fn load_model_on<B: TernaryBackend>(
    path: &Path,
    device: &B::Device,
) -> Res<(LoadedModel<B>, Format)> {
    let format = sniff(path)?;
    let sp = spinner(format!("loading {} ({format})", path.display()));
    let m = match format {
        Format::Gguf => ternary_models::load_gguf::<B>(path, device)?,
        Format::ConvertedModel => ternary_convert::load::<B>(path, device)?,
        Format::HfDir | Format::Safetensors | Format::ShardedIndex => {
            let dir = checkpoint_dir(format, path)?;
            let mut m = ternary_models::load::<B>(&dir, device)?;
            if m.tokenizer.chat_template.is_none() {
                m.tokenizer.chat_template =
                    template_from_tokenizer_config(dir.join("tokenizer_config.json"))?;
            }
            m
        }
    };
    sp.finish_and_clear();
    Ok((m, format))
}

/// The checkpoint directory of a Hugging Face `path`: a weight file must be the directory's
/// `model.safetensors` (the loader reads that name beside `config.json`), an index the
/// directory's `model.safetensors.index.json`.
fn checkpoint_dir(format: Format, path: &Path) -> Res<PathBuf> {
    let dir = format
        .checkpoint_dir(path)
        .ok_or_else(|| CliError::new(format!("{}: no checkpoint directory", path.display())))?;
    let expected = match format {
        Format::Safetensors => Some("model.safetensors"),
        Format::ShardedIndex => Some("model.safetensors.index.json"),
        _ => None,
    };
    if let Some(name) = expected {
        if !dir.join("config.json").is_file() {
            return Err(CliError::new(format!(
                "{} is a {format}, but {} has no config.json beside it",
                path.display(),
                dir.display()
            )));
        }
        if !same_file(path, &dir.join(name)) {
            return Err(CliError::new(format!(
                "{} is a {format}; pass its checkpoint directory instead, with the file named \
                 {name} beside config.json and tokenizer.json",
                path.display()
            )));
        }
    }
    Ok(dir)
}

/// How the ternary layers of a loaded model compute (`--ternary-path`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PathArg {
    /// As loaded: int8 activations for a GGUF's ternary tensors (TQ1_0, TQ2_0, I2_S: the
    /// arithmetic of their engines) and BitNet checkpoints, host f32 kernels for other
    /// ternary layers (converted models), which the runtime computes as `cpu-int8x2` at the
    /// AVX2 level (the same accuracy; faster there).
    Auto,
    /// Host f32 ternary kernels.
    CpuF32,
    /// Host kernels with activations quantized to int8 per token.
    CpuInt8,
    /// Host int8 kernels on two int8 codes per token (the code and that of its rounding
    /// residual, about 16-bit activations): `cpu-f32`'s accuracy, two int8 products.
    CpuInt8x2,
    /// Dequantized weights and Burn's matmul.
    Float,
}

/// Switches every ternary layer of `model` to `path` (`Auto` keeps each as loaded).
pub fn set_ternary_path(model: &mut Llama<Cpu>, path: PathArg) {
    let p = match path {
        PathArg::Auto => return,
        PathArg::CpuF32 => LinearPath::CpuF32,
        PathArg::CpuInt8 => LinearPath::CpuInt8,
        PathArg::CpuInt8x2 => LinearPath::CpuInt8x2,
        PathArg::Float => LinearPath::Float,
    };
    for (_, slot) in model.linears_mut() {
        let switched = as_ternary::<Cpu>(slot.as_ref()).map(|t| t.clone().with_path(p));
        if let Some(t) = switched {
            *slot = Box::new(t);
        }
    }
}

/// How `model`'s ternary layers take their activations, as `ternary bench` reports it:
/// `"int8"`, `"int8x2"`, `"f32"`, `"float"` (dequantized weights), `"mixed"`, or `"none"` without ternary
/// layers.
pub fn ternary_activations(model: &Llama<Cpu>) -> &'static str {
    let mut kinds = model.linears().into_iter().filter_map(|(_, l)| {
        as_ternary::<Cpu>(l.as_ref()).map(|t| match t.path().resolve::<Cpu>() {
            LinearPath::CpuInt8 => "int8",
            LinearPath::CpuInt8x2 => "int8x2",
            LinearPath::Float => "float",
            _ => "f32",
        })
    });
    match kinds.next() {
        None => "none",
        Some(k) if kinds.all(|o| o == k) => k,
        Some(_) => "mixed",
    }
}

/// Which engine runs the model (`--engine`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Engine {
    /// The CPU runtime (`ternary-runtime`): persistent workers, fused layers; the default.
    #[default]
    Runtime,
    /// The Burn model (`Llama::forward`): the portable reference path.
    Burn,
}

/// Threads for the runtime: `--threads` (which also sizes rayon's pool), else every core.
pub fn threads() -> usize {
    rayon::current_num_threads()
}

/// `m` behind the [`Decoder`] seam on `engine` (the runtime with [`threads`] threads),
/// taking the model: the runtime drops the Burn model as soon as it holds the
/// weights it needs, so a table the runtime keeps in another type (f16 instead of the Burn
/// model's f32) is held once, not twice, and repacks the ternary matrices for its kernels
/// (`Runtime::from_owned_model`).
pub fn decoder_owned(m: Llama<Cpu>, engine: Engine) -> Res<Box<dyn Decoder>> {
    Ok(match engine {
        Engine::Burn => Box::new(BurnDecoder::owning(m)),
        Engine::Runtime => {
            let rt = Runtime::from_owned_model(m, RuntimeOptions::with_threads(threads()))?;
            // What ran, for whoever compares figures (stderr; stdout stays the command's).
            eprintln!(
                "runtime: {} threads, {}, ternary activations {}",
                rt.threads(),
                rt.level(),
                rt.ternary_activations()
            );
            Box::new(rt)
        }
    })
}

/// Reads a text file, with the path in the error.
pub fn read_text(path: &Path) -> Res<String> {
    std::fs::read_to_string(path).map_err(|e| CliError::new(format!("{}: {e}", path.display())))
}

/// Whether `a` and `b` name the same existing file (or directory).
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

/// Whether `a` and `b` name the same file, whether it exists yet or not (the same file, or the
/// same name in the same canonical folder).
pub fn same_path(a: &Path, b: &Path) -> bool {
    let key = |p: &Path| {
        let dir = p
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Some(dir.canonicalize().ok()?.join(p.file_name()?))
    };
    same_file(a, b) || key(a).is_some_and(|x| Some(x) == key(b))
}

/// Whether writing `out` would replace the model at `model` or one of its files (a Hugging
/// Face directory's `model.safetensors`, `config.json`, `tokenizer.json`).
pub fn overwrites_input(model: &Path, out: &Path) -> bool {
    same_file(model, out)
        || (model.is_dir()
            && ["model.safetensors", "config.json", "tokenizer.json"]
                .iter()
                .any(|f| same_file(&model.join(f), out)))
}

/// A spinner with a message (hidden when stderr is not a terminal).
pub fn spinner(msg: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_message(msg.into());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// A bar of `len` steps named `msg`.
pub fn bar(len: u64, msg: impl Into<String>) -> ProgressBar {
    let pb = ProgressBar::new(len);
    if let Ok(style) =
        ProgressStyle::with_template("{msg:<22} [{bar:32}] {pos}/{len} {elapsed_precise} eta {eta}")
    {
        pb.set_style(style.progress_chars("=> "));
    }
    pb.set_message(msg.into());
    pb
}

/// Weight memory of a model as held for inference.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Footprint {
    /// Weights in linear layers.
    pub linear_weights: u64,
    /// Of which ternary (one or two trit-planes).
    pub ternary_weights: u64,
    /// Of which on two trit-planes.
    pub two_plane_weights: u64,
    /// Bytes of linear layers (f32 for float layers; planes, scales and vectors for ternary).
    pub linear_bytes: u64,
    /// Bytes of the embedding and norms (f32).
    pub other_bytes: u64,
}

impl Footprint {
    /// Measures `model`'s layers.
    pub fn of(model: &Llama<Cpu>) -> Self {
        let mut f = Self {
            linear_weights: 0,
            ternary_weights: 0,
            two_plane_weights: 0,
            linear_bytes: 0,
            other_bytes: 0,
        };
        for (_, l) in model.linears() {
            let n = (l.out_features() * l.in_features()) as u64;
            f.linear_weights += n;
            match as_ternary::<Cpu>(l.as_ref()) {
                Some(t) => {
                    f.ternary_weights += n;
                    if t.planes() == 2 {
                        f.two_plane_weights += n;
                    }
                    // Every plane pair and its scales, then the vectors.
                    f.linear_bytes += (t.weights().storage_bytes()
                        + 4 * (t.bias().map_or(0, |b| b.len())
                            + t.input_scale().map_or(0, <[f32]>::len)))
                        as u64;
                }
                None => f.linear_bytes += 4 * n,
            }
        }
        let c = model.config();
        f.other_bytes =
            4 * (c.vocab_size * c.hidden_size + (2 * c.num_layers + 1) * c.hidden_size) as u64;
        f
    }

    /// Bits per linear weight.
    pub fn linear_bits_per_weight(&self) -> f64 {
        8.0 * self.linear_bytes as f64 / self.linear_weights.max(1) as f64
    }

    /// All weight bytes.
    pub fn total_bytes(&self) -> u64 {
        self.linear_bytes + self.other_bytes
    }
}

/// The BOS token a chunk starts with, if the tokenizer adds one.
pub fn bos_of(t: &ternary_models::Tokenizer) -> Option<u32> {
    if t.add_bos { t.bos_id } else { None }
}

/// Perplexity of `dec` with a bar over chunks.
pub fn ppl_with_bar(
    label: &str,
    dec: &mut dyn Decoder,
    bos: Option<u32>,
    tokens: &[u32],
    ctx: usize,
    chunks: Option<usize>,
) -> Res<PerplexityReport> {
    let total = (tokens.len() / ctx.max(1)).min(chunks.unwrap_or(usize::MAX).max(1));
    let pb = bar(total as u64, format!("perplexity ({label})"));
    let r = perplexity_with(dec, tokens, ctx, bos, chunks, |i, _| {
        pb.set_position(i as u64 + 1)
    })?;
    pb.finish_and_clear();
    Ok(r)
}

/// Greedy decode speed of `dec`: `n` new tokens after `prompt`; returns decode tokens per
/// second.
pub fn measure_decode(dec: &mut dyn Decoder, prompt: &[u32], n: usize) -> Res<f64> {
    if n < 2 {
        return Err(CliError::new("decode speed needs at least 2 new tokens"));
    }
    let sp = spinner("decode speed");
    let (_, stats) = generate_with(dec, prompt, n, Sampling::Greedy, None, |_| {})?;
    sp.finish_and_clear();
    Ok(stats.decode_tokens_per_sec())
}

/// One model's measured numbers.
#[derive(Debug, Clone)]
pub struct Measured {
    /// Column title.
    pub name: String,
    /// Weight memory.
    pub footprint: Footprint,
    /// Perplexity.
    pub ppl: PerplexityReport,
    /// Decode tokens per second.
    pub decode_tps: Option<f64>,
    /// File size when the model came from a ternary file.
    pub file_bytes: Option<u64>,
}

/// Measures a loaded model: perplexity with a bar over chunks, then decode speed, on one
/// decoder that owns the model (the runtime repacks its ternary matrices, as
/// `ternary generate` does).
pub fn measure(
    name: &str,
    m: LoadedModel<Cpu>,
    tokens: &[u32],
    ctx: usize,
    chunks: Option<usize>,
    decode_tokens: usize,
    engine: Engine,
) -> Res<Measured> {
    let footprint = Footprint::of(&m.model);
    let bos = bos_of(&m.tokenizer);
    let mut dec = decoder_owned(m.model, engine)?;
    let ppl = ppl_with_bar(name, dec.as_mut(), bos, tokens, ctx, chunks)?;
    let decode_tps = if decode_tokens >= 2 {
        let prompt = &tokens[..tokens.len().min(16)];
        Some(measure_decode(dec.as_mut(), prompt, decode_tokens)?)
    } else {
        None
    };
    Ok(Measured {
        name: name.to_string(),
        footprint,
        ppl,
        decode_tps,
        file_bytes: None,
    })
}

/// Prints measured models side by side; the last column is each row's ratio of the last
/// model to the first when there are two.
pub fn print_side_by_side(cols: &[Measured]) {
    // Wide enough for every header ("a / b" included) with two spaces before it.
    let w = cols
        .iter()
        .map(|c| c.name.len() + cols.first().map_or(0, |f| f.name.len() + 3) + 2)
        .max()
        .unwrap_or(0)
        .max(24);
    let mut header = format!("{:<28}", "");
    for c in cols {
        header.push_str(&format!("{:>w$}", c.name));
    }
    for c in cols.iter().skip(1) {
        header.push_str(&format!("{:>w$}", format!("{} / {}", c.name, cols[0].name)));
    }
    println!("{header}");
    let row = |label: &str, vals: Vec<String>, ratios: Option<Vec<f64>>| {
        let mut s = format!("{label:<28}");
        for v in vals {
            s.push_str(&format!("{v:>w$}"));
        }
        for r in ratios.unwrap_or_default() {
            s.push_str(&format!("{:>w$}", format!("{r:.3}x")));
        }
        println!("{s}");
    };
    // Each later column relative to the first (the float model).
    let ratio = |f: &dyn Fn(&Measured) -> f64| {
        cols.split_first().map(|(first, rest)| {
            let base = f(first).max(f64::MIN_POSITIVE);
            rest.iter().map(|c| f(c) / base).collect::<Vec<_>>()
        })
    };
    row(
        "weights in memory",
        cols.iter()
            .map(|c| human_bytes(c.footprint.total_bytes()))
            .collect(),
        ratio(&|c| c.footprint.total_bytes() as f64),
    );
    row(
        "  linear layers",
        cols.iter()
            .map(|c| human_bytes(c.footprint.linear_bytes))
            .collect(),
        ratio(&|c| c.footprint.linear_bytes as f64),
    );
    row(
        "  embedding + norms",
        cols.iter()
            .map(|c| human_bytes(c.footprint.other_bytes))
            .collect(),
        None,
    );
    row(
        "bits/weight (linear)",
        cols.iter()
            .map(|c| format!("{:.3}", c.footprint.linear_bits_per_weight()))
            .collect(),
        ratio(&|c| c.footprint.linear_bits_per_weight()),
    );
    row(
        "ternary share (linear)",
        cols.iter()
            .map(|c| {
                format!(
                    "{:.1}%",
                    100.0 * c.footprint.ternary_weights as f64
                        / c.footprint.linear_weights.max(1) as f64
                )
            })
            .collect(),
        None,
    );
    if cols.iter().any(|c| c.footprint.two_plane_weights > 0) {
        row(
            "  of which two planes",
            cols.iter()
                .map(|c| {
                    format!(
                        "{:.1}%",
                        100.0 * c.footprint.two_plane_weights as f64
                            / c.footprint.linear_weights.max(1) as f64
                    )
                })
                .collect(),
            None,
        );
    }
    if cols.iter().any(|c| c.file_bytes.is_some()) {
        row(
            "file size",
            cols.iter()
                .map(|c| c.file_bytes.map_or_else(|| "-".into(), human_bytes))
                .collect(),
            None,
        );
    }
    row(
        "perplexity",
        cols.iter()
            .map(|c| format!("{:.2} ± {:.2}", c.ppl.ppl, c.ppl.ppl_stderr))
            .collect(),
        ratio(&|c| c.ppl.ppl),
    );
    row(
        "decode tokens/s",
        cols.iter()
            .map(|c| {
                c.decode_tps
                    .map_or_else(|| "-".into(), |t| format!("{t:.1}"))
            })
            .collect(),
        if cols.iter().all(|c| c.decode_tps.is_some()) {
            ratio(&|c| c.decode_tps.unwrap_or(0.0))
        } else {
            None
        },
    );
    if let Some(c) = cols.first() {
        println!(
            "(perplexity: ctx {}, {} chunks, {} tokens scored)",
            c.ppl.n_ctx, c.ppl.chunks, c.ppl.scored
        );
    }
}

/// Seconds since `t` as `12.3 s`.
pub fn secs(t: Instant) -> String {
    format!("{:.1} s", t.elapsed().as_secs_f64())
}

/// `path` made absolute for messages (unchanged when that fails).
pub fn shown(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Checks the perplexity / decode flags shared by `eval` and `demo`.
pub fn check_measure_args(ctx: usize, chunks: Option<usize>, decode_tokens: usize) -> Res<()> {
    if ctx < 4 {
        return Err(CliError::new(format!(
            "--ctx {ctx} is too short (at least 4)"
        )));
    }
    if chunks == Some(0) {
        return Err(CliError::new("--chunks must be at least 1"));
    }
    if decode_tokens == 1 {
        return Err(CliError::new(
            "--decode-tokens must be 0 (skip) or at least 2",
        ));
    }
    Ok(())
}
