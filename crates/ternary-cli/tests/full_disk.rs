//! `ternary quantize` onto a full disk, end to end: the output goes to a tmpfs mounted by the
//! test, sized to hold the previous output file but not the new one beside it.
//!
//! The test needs root (or `CAP_SYS_ADMIN`) for `mount`, so it is ignored (`#[ignore = "…"]`); CI runs it
//! with `-- --include-ignored`. Asked to run where it cannot mount, it fails with the reason
//! rather than passing without having tested anything.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ternary_testkit::Tmpfs;

fn fixture() -> PathBuf {
    ternary_testkit::fixture_path("tiny-llama")
}

fn quantize(out: &Path, extra: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ternary"))
        .env("NO_COLOR", "1")
        .arg("quantize")
        .arg("--model")
        .arg(fixture())
        .arg("--out")
        .arg(out)
        .args(["--calib-tokens", "64"])
        .args(extra)
        .output()
        .unwrap()
}

#[test]
#[ignore = "mounts a tmpfs: needs root; run with --include-ignored"]
fn quantize_onto_a_full_disk_fails_cleanly_and_keeps_the_previous_output() {
    // The previous output, made with other settings so that any replacement would show.
    let scratch =
        std::env::temp_dir().join(format!("ternary-cli-{}-full-disk", std::process::id()));
    std::fs::create_dir_all(&scratch).unwrap();
    let first = scratch.join("previous.safetensors");
    let o = quantize(&first, &["--no-budget", "--group", "32"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let previous = std::fs::read(&first).unwrap();
    std::fs::remove_dir_all(&scratch).unwrap();

    // Room for the previous file plus 16 KiB: the new file (tens of KiB) cannot fit beside it.
    let size = previous.len().div_ceil(4096) as u64 * 4096 + 16 * 1024;
    let fs = Tmpfs::mount("cli", size);
    let out = fs.dir().join("model.safetensors");
    std::fs::write(&out, &previous).unwrap();

    let o = quantize(&out, &[]);
    let (stdout, stderr) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(!o.status.success(), "succeeded on a full disk:\n{stdout}");
    for text in [&stdout, &stderr] {
        assert!(!text.contains("panicked"), "panicked:\n{stderr}");
    }
    assert!(
        !stdout.contains("wrote"),
        "claims to have written:\n{stdout}"
    );
    let line = stderr
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no `error:` line:\n{stderr}"));
    for needle in [
        &out.display().to_string(),
        "No space left on device",
        "unchanged",
    ] {
        assert!(line.contains(needle), "{needle:?} missing from {line:?}");
    }
    assert!(
        std::fs::read(&out).unwrap() == previous,
        "the previous output changed"
    );
    assert_eq!(
        fs.entries(),
        ["model.safetensors"],
        "a temporary file remains"
    );
}
