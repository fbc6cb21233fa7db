//! `write_atomic` on a real full disk: a 64 KiB tmpfs mounted by the test itself.
//!
//! The test needs root (or `CAP_SYS_ADMIN`) for `mount`, so it is `#[ignore]`d; CI runs it
//! with `-- --include-ignored`. Asked to run where it cannot mount, it fails with the reason
//! rather than passing without having tested anything. The fault-injection unit tests in
//! `src/io.rs` cover the same guarantees without root.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use ternary_core::TernaryError;
use ternary_core::io::write_atomic;

/// A tmpfs of `size` bytes mounted on a fresh directory; unmounted and removed on drop, also
/// when the test fails.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(name: &str, size: u64) -> Self {
        let dir = std::env::temp_dir().join(format!("ternary-tmpfs-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .output();
        match out {
            Ok(o) if o.status.success() => Self(dir),
            other => {
                let _ = std::fs::remove_dir(&dir);
                let uid = Command::new("id")
                    .arg("-u")
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
                    .unwrap_or_else(|e| format!("unknown ({e})"));
                let why = match other {
                    Ok(o) => format!(
                        "{}: {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    ),
                    Err(e) => e.to_string(),
                };
                panic!(
                    "this test mounts a tmpfs and could not (uid {uid}; mount: {why}); run it \
                     as root (CAP_SYS_ADMIN) or leave it ignored"
                );
            }
        }
    }

    fn entries(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(&self.0)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let ok = Command::new("umount")
            .arg(&self.0)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            // Still busy (should not happen): detach it so it does not outlive the test.
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        let _ = std::fs::remove_dir(&self.0);
    }
}

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
    let target = fs.0.join("m.safetensors");
    let previous = payload(16 * 1024, 7);
    write_atomic(&target, &previous).unwrap();

    // Far more than the 48 KiB left: fails part way through writing.
    let e = write_atomic(&target, &payload(256 * 1024, 13)).unwrap_err();
    check_no_space(&e, &target);
    assert_eq!(std::fs::read(&target).unwrap(), previous);
    assert_eq!(fs.entries(), ["m.safetensors"]);

    // Without a previous file, nothing is created.
    let fresh = fs.0.join("fresh.safetensors");
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
