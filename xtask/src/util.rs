//! Running commands with a visible banner.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

/// The workspace root (the parent of `xtask/`).
pub fn root() -> PathBuf {
    // Cargo sets the variable when it runs xtask (and its tests); the compile-time value is
    // the fallback, which a binary reused from another checkout's build would get wrong.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// `cargo` as invoked by the user (respects `$CARGO`).
pub fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(root());
    c
}

/// Runs `cmd`, printing a banner and the elapsed time; an unsuccessful exit is an error.
pub fn step(name: &str, mut cmd: Command) -> Result<(), String> {
    eprintln!("\n==> {name}: {cmd:?}");
    let start = Instant::now();
    let status = cmd
        .status()
        .map_err(|e| format!("{name}: could not start {cmd:?}: {e}"))?;
    let secs = start.elapsed().as_secs_f64();
    if status.success() {
        eprintln!("==> {name}: ok ({secs:.1} s)");
        Ok(())
    } else {
        Err(format!("{name} failed ({status}) after {secs:.1} s"))
    }
}
