//! `write_atomic` on a real full disk: a 64 KiB tmpfs mounted by the test itself.
//!
//! The test needs root (or `CAP_SYS_ADMIN`) for `mount`, so it is ignored (`#[ignore = "…"]`); CI runs it
//! with `-- --include-ignored`. Asked to run where it cannot mount, it fails with the reason
//! rather than passing without having tested anything. The fault-injection unit tests in
//! `src/io.rs` cover the same guarantees without root.

use std::io::ErrorKind;
use std::path::Path;

use ternary_core::TernaryError;
use ternary_core::io::write_atomic;

use ternary_testkit::Tmpfs;

fn payload(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed) ^ (i >> 9) as u8)
        .collect()
}

#[track_caller]
fn check_no_space(e: &TernaryError, target: &Path) {
    let msg = e.to_string();
    assert!(
        matches!(e, TernaryError::Io { path, source } if path == target
            && source.kind() == ErrorKind::StorageFull),
        "expected an out-of-space I/O error on {}, got {msg}",
        target.display()
    );
    for needle in [
        &target.display().to_string(),
        "No space left on device",
        "unchanged",
    ] {
        assert!(msg.contains(needle), "{needle:?} missing from {msg:?}");
    }
}

#[test]
#[ignore = "mounts a tmpfs: needs root; run with --include-ignored"]
fn write_atomic_on_a_full_tmpfs_keeps_the_previous_file_and_frees_the_space() {
    let fs = Tmpfs::mount("core", 64 * 1024);
    let target = fs.dir().join("m.safetensors");
    let previous = payload(16 * 1024, 7);
    write_atomic(&target, &previous).unwrap();

    // Far more than the 48 KiB left: fails part way through writing.
    let e = write_atomic(&target, &payload(256 * 1024, 13)).unwrap_err();
    check_no_space(&e, &target);
    assert_eq!(std::fs::read(&target).unwrap(), previous);
    assert_eq!(fs.entries(), ["m.safetensors"]);

    // Without a previous file, nothing is created.
    let fresh = fs.dir().join("fresh.safetensors");
    let e = write_atomic(&fresh, &payload(256 * 1024, 17)).unwrap_err();
    check_no_space(&e, &fresh);
    assert_eq!(fs.entries(), ["m.safetensors"]);

    // The partial temporary files were removed, so their space is free again: a 32 KiB file
    // (which would not fit beside a leftover) replaces the previous one.
    let fits = payload(32 * 1024, 19);
    write_atomic(&target, &fits).unwrap();
    assert_eq!(std::fs::read(&target).unwrap(), fits);
    assert_eq!(fs.entries(), ["m.safetensors"]);
}
