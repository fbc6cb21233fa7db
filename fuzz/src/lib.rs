//! # ternary-fuzz
//!
//! Structure-aware fuzzing of every file parser of the workspace on stable Rust (no
//! `cargo-fuzz`, no nightly): GGUF, our safetensors files and the Hugging Face weight files,
//! converted-model files, Hugging Face `config.json` and `tokenizer.json` (see [`Parser`]).
//!
//! Inputs are mutants of small valid seeds built in-process ([`seeds`]): format-blind byte
//! edits ([`bytes`]) and edits that know the format — GGUF integer fields and freshly
//! generated GGUF files ([`gguf`]), safetensors headers and data ([`safetensors`]), JSON
//! documents ([`json`]). Input `i` of a run is a pure function of `(seed, parser, i)`
//! ([`rng::input_rng`]), so any input can be regenerated from its index.
//!
//! Each parse runs under `catch_unwind` and a counting allocator ([`alloc`]): a panic, a peak
//! of live heap bytes above [`harness::alloc_bound`] (`64 · len + 16 MiB`), or a single
//! request above [`alloc::HARD_CAP`] (which aborts, naming the input) is a failure. Failing
//! inputs are kept as regression fixtures in `fixtures/fuzz/<parser>/crash-<hash>.bin` and
//! replayed by this crate's tests.
//!
//! `cargo xtask fuzz --minutes N` runs the long campaign; the `ci_slice` test runs a short
//! seeded one (see `docs/reliability.md`).

pub mod alloc;
pub mod bytes;
pub mod gguf;
pub mod harness;
pub mod json;
pub mod rng;
pub mod safetensors;
pub mod seeds;
pub mod targets;

pub use harness::{Budget, Failure, Stats, Verdict, alloc_bound, campaign, check};
pub use targets::{Corpus, Outcome, Parser};

/// The workspace's `fixtures/fuzz` directory (the regression fixtures).
///
/// The workspace is found from `CARGO_MANIFEST_DIR` as cargo sets it when it runs this crate's
/// tests and binaries; the compile-time value is the fallback, which a binary reused from
/// another checkout's build (a shared target directory) would get wrong.
pub fn fixtures_root() -> std::path::PathBuf {
    let crate_dir = std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(
        || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
        std::path::PathBuf::from,
    );
    crate_dir
        .parent()
        .unwrap_or(&crate_dir)
        .join("fixtures")
        .join("fuzz")
}
