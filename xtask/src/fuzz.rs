//! `cargo xtask fuzz [--minutes N] [--seed S] [--parser NAME]... [...]`: the long fuzzing
//! campaign of every parser (the `ternary-fuzz` binary of `fuzz/`). CI runs a short seeded
//! slice of it as a test (`cargo test -p ternary-fuzz`); see `docs/reliability.md`.
//!
//! The binary is built in the `test` profile: optimized (opt-level 2) but with overflow checks
//! and debug assertions, so an integer overflow in a parser is a panic the fuzzer sees, and the
//! dependencies are the ones the test suites already built.

use crate::util::{cargo, step};

/// Flags the binary takes, with whether each takes a value.
const FLAGS: &[(&str, bool)] = &[
    ("--minutes", true),
    ("--inputs", true),
    ("--seed", true),
    ("--parser", true),
    ("--threads", true),
    ("--no-save", false),
    ("--save-index", true),
    ("--replay", true),
];

pub fn run(args: &[String]) -> Result<(), String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match FLAGS.iter().find(|(f, _)| f == a) {
            Some((_, true)) => {
                it.next()
                    .ok_or_else(|| format!("fuzz: {a} needs a value"))?;
            }
            Some((_, false)) => {}
            None => {
                let names: Vec<_> = FLAGS.iter().map(|f| f.0).collect();
                return Err(format!(
                    "fuzz: unknown argument `{a}` (expected {})",
                    names.join(", ")
                ));
            }
        }
    }
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--quiet",
        "--profile",
        "test",
        "--package",
        "ternary-fuzz",
        "--bin",
        "ternary-fuzz",
        "--",
    ])
    .args(args);
    step("fuzz", cmd)
}
