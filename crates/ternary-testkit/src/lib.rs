//! # ternary-testkit
//!
//! Dev-only support shared by the workspace's tests (a `[dev-dependencies]` entry, never a
//! normal dependency):
//!
//! - [`seed`] / [`rng`]: every random test starts from one seed, [`DEFAULT_SEED`] unless the
//!   environment variable [`SEED_ENV`] (`TERNARY_TEST_SEED`, decimal or `0x` hex) overrides it.
//!   The seed is printed to stderr, which the test harness shows with a failure, so any failing
//!   run can be replayed exactly. A run never depends on the clock.
//! - [`random_matrix`], [`random_f32`], [`random_q`]: the random ternary matrices, float and
//!   int8 activations the kernel, layer and sparsity tests draw from.
//! - [`EDGE`]: the edge sizes every kernel must handle.
//! - [`TempDir`], [`Tmpfs`]: a scratch directory, and a small tmpfs mounted for full-disk tests,
//!   both removed on drop (also when the test fails).
//! - [`fixture_path`]: a file under the running checkout's `fixtures/`.

use std::path::{Path, PathBuf};
use std::process::Command;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use ternary_core::two_plane::{MAX_LEVEL, exact_triple_scale};
use ternary_core::{QuantizedActivations, ScaleLayout, Scales, TernaryMatrix, TwoPlaneMatrix};

pub use rand;

/// The environment variable that overrides the test seed.
pub const SEED_ENV: &str = "TERNARY_TEST_SEED";

/// The seed of every random test unless [`SEED_ENV`] says otherwise.
pub const DEFAULT_SEED: u64 = 0x7E57_5EED;

/// The edge sizes of rows and columns: around a 32-bit word, a 64-column row pad, SmolLM2's
/// hidden size (576) and FFN size (1536).
pub const EDGE: [usize; 9] = [1, 31, 32, 33, 63, 64, 65, 576, 1536];

/// Parses a seed: decimal, or hexadecimal with a `0x` prefix.
pub fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The test seed: [`SEED_ENV`] if set (a value that does not parse is a panic, not a silent
/// default), else [`DEFAULT_SEED`]; printed as `TERNARY_TEST_SEED=<seed>`.
pub fn seed() -> u64 {
    let seed = match std::env::var(SEED_ENV) {
        Ok(v) => parse_seed(&v)
            .unwrap_or_else(|| panic!("{SEED_ENV}={v:?} is not a decimal or 0x-hex u64")),
        Err(_) => DEFAULT_SEED,
    };
    eprintln!("{SEED_ENV}={seed}");
    seed
}

/// A generator from [`seed`].
pub fn rng() -> StdRng {
    StdRng::seed_from_u64(seed())
}

/// A generator from [`seed`], and the seed (for messages).
pub fn seeded() -> (StdRng, u64) {
    let s = seed();
    (StdRng::seed_from_u64(s), s)
}

/// A random `rows × cols` matrix: the zero probability `p ∈ [0, 0.9)` drawn once, each trit
/// `0` with probability `p`, else `±1` with equal odds; scales `±[0.01, 2)`, negative with
/// probability 0.2 (scales may be negative in the format).
pub fn random_matrix(
    rng: &mut StdRng,
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
) -> TernaryMatrix {
    let p_zero: f64 = rng.random_range(0.0..0.9);
    let trits: Vec<i8> = (0..rows * cols)
        .map(|_| {
            if rng.random_bool(p_zero) {
                0
            } else if rng.random_bool(0.5) {
                1
            } else {
                -1
            }
        })
        .collect();
    let count = rows * layout.groups_per_row(cols);
    let scales = (0..count)
        .map(|_| {
            let s: f32 = rng.random_range(0.01..2.0);
            if rng.random_bool(0.2) { -s } else { s }
        })
        .collect();
    match TernaryMatrix::from_trits(rows, cols, &trits, Scales::new(layout, scales)) {
        Ok(m) => m,
        Err(e) => panic!("random_matrix({rows}, {cols}, {layout:?}): {e}"),
    }
}

/// Random two-plane weights `rows × cols`: levels uniform in `−4..=4` (row-major, returned) and
/// scales `±[0.001, 0.5)` (negative with probability 0.2, rounded so that `3s` is exact), split
/// by [`TwoPlaneMatrix::from_levels`]; also returns the scales (`w = s · level`).
pub fn random_two_plane(
    rng: &mut StdRng,
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
) -> (TwoPlaneMatrix, Vec<i8>, Scales) {
    let levels: Vec<i8> = (0..rows * cols)
        .map(|_| rng.random_range(-MAX_LEVEL..=MAX_LEVEL))
        .collect();
    let scales: Vec<f32> = (0..rows * layout.groups_per_row(cols))
        .map(|_| {
            let s: f32 = rng.random_range(0.001..0.5);
            exact_triple_scale(if rng.random_bool(0.2) { -s } else { s })
        })
        .collect();
    let scales = Scales::new(layout, scales);
    match TwoPlaneMatrix::from_levels(rows, cols, &levels, scales.clone()) {
        Ok(m) => (m, levels, scales),
        Err(e) => panic!("random_two_plane({rows}, {cols}, {layout:?}): {e}"),
    }
}

/// `len` values uniform in `[lo, hi)`.
pub fn random_f32(rng: &mut StdRng, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..len).map(|_| rng.random_range(lo..hi)).collect()
}

/// Random int8 activations for `n` tokens of `cols`: per token, all zero, all `±127`, or
/// uniform in `[−127, 127]` (the extremes show up often); scales in `[1e-4, 0.1)`.
pub fn random_q(rng: &mut StdRng, n: usize, cols: usize) -> QuantizedActivations {
    let mut q = Vec::with_capacity(n * cols);
    let mut scales = Vec::with_capacity(n);
    for _ in 0..n {
        let kind = rng.random_range(0..4);
        for _ in 0..cols {
            q.push(match kind {
                0 => 0,
                1 => {
                    if rng.random_bool(0.5) {
                        127
                    } else {
                        -127
                    }
                }
                _ => rng.random_range(-127..=127),
            });
        }
        scales.push(rng.random_range(1e-4f32..0.1));
    }
    match QuantizedActivations::from_parts(n, cols, &q, scales) {
        Ok(a) => a,
        Err(e) => panic!("random_q({n}, {cols}): {e}"),
    }
}

/// `fixtures/<rel>` of the checkout whose tests are running (`rel` may be empty).
///
/// The checkout is found from `CARGO_MANIFEST_DIR` as cargo sets it when it runs a test (the
/// package's directory, whose ancestor holds `fixtures/`), not from where the test was compiled:
/// cargo reuses a test binary built from another checkout that shares the target directory (its
/// freshness check reads the sources relative to the package), and a path compiled in would
/// point into that other checkout. Run outside cargo, the directory this crate was compiled in
/// is the start.
pub fn fixture_path(rel: &str) -> PathBuf {
    let start = std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")), PathBuf::from);
    let root = start
        .ancestors()
        .find(|d| d.join("fixtures").is_dir())
        .unwrap_or(&start);
    let dir = root.join("fixtures");
    if rel.is_empty() { dir } else { dir.join(rel) }
}

/// The sorted file names in `dir`.
///
/// # Panics
/// If `dir` cannot be listed.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .map(|e| match e {
            Ok(e) => e.file_name().to_string_lossy().into_owned(),
            Err(e) => panic!("cannot list {}: {e}", dir.display()),
        })
        .collect();
    v.sort();
    v
}

/// A fresh, empty directory `ternary-<tag>-<pid>` under the system temp dir, removed with its
/// contents on drop. Tags must differ between tests that run at the same time.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates (after removing any leftover of) the directory.
    ///
    /// # Panics
    /// If it cannot be created.
    pub fn new(tag: &str) -> Self {
        let p = std::env::temp_dir().join(format!("ternary-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", p.display()));
        Self(p)
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// `name` inside the directory.
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// The sorted file names in the directory.
    pub fn entries(&self) -> Vec<String> {
        entries(&self.0)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A tmpfs of `size` bytes mounted on a fresh directory, for tests of a full disk; unmounted
/// (lazily if still busy) and removed on drop.
///
/// Mounting needs root (`CAP_SYS_ADMIN`): tests using it are `#[ignore = "mounts a tmpfs: ..."]`
/// and CI runs them with `--include-ignored`. Where it cannot mount, [`Tmpfs::mount`] panics
/// with the reason, so such a test never passes without having tested anything.
#[derive(Debug)]
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts the tmpfs on `ternary-tmpfs-<pid>-<name>` under the system temp dir.
    ///
    /// # Panics
    /// If the directory cannot be created or the mount fails (with the uid and `mount`'s
    /// message).
    pub fn mount(name: &str, size: u64) -> Self {
        let dir = std::env::temp_dir().join(format!("ternary-tmpfs-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
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

    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.0
    }

    /// The sorted file names on the tmpfs.
    pub fn entries(&self) -> Vec<String> {
        entries(&self.0)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixture_paths_should_lie_in_the_running_checkout() {
        // Cargo runs this test with CARGO_MANIFEST_DIR = this crate's directory, two levels
        // below the checkout's root.
        let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap());
        let root = manifest.parent().and_then(Path::parent).unwrap();
        assert_eq!(fixture_path(""), root.join("fixtures"));
        let text = fixture_path("text/calibration.txt");
        assert_eq!(text, root.join("fixtures/text/calibration.txt"));
        assert!(text.is_file(), "{}", text.display());
    }

    #[test]
    fn seeds_parse_in_decimal_and_hex_and_reject_garbage() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0x2A "), Some(42));
        assert_eq!(parse_seed("0X2a"), Some(42));
        assert_eq!(parse_seed("18446744073709551615"), Some(u64::MAX));
        for bad in ["", "x", "0x", "-1", "18446744073709551616", "1.5"] {
            assert_eq!(parse_seed(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn generators_are_deterministic_for_a_seed_and_respect_their_ranges() {
        let mk = |s| {
            let mut r = StdRng::seed_from_u64(s);
            let m = random_matrix(&mut r, 5, 70, ScaleLayout::PerGroup { group_size: 32 });
            (
                m,
                random_f32(&mut r, 100, -2.0, 3.0),
                random_q(&mut r, 4, 9),
            )
        };
        let (a, b) = (mk(1), mk(1));
        assert_eq!(a.0, b.0);
        assert_eq!(a.1, b.1);
        assert_eq!((a.2.data(), a.2.scales()), (b.2.data(), b.2.scales()));
        assert_ne!(mk(2).1, a.1);
        assert!(a.1.iter().all(|v| (-2.0..3.0).contains(v)));
        assert!(
            a.0.scales()
                .values()
                .iter()
                .all(|s| (0.01..2.0).contains(&s.abs()))
        );
    }
}
