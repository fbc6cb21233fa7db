//! Facts about the machine and the run: CPU model, caches, git commit, date, and the
//! measured memory read bandwidth that bounds the streaming regime.

use std::path::Path;
use std::process::Command;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use rayon::prelude::*;

/// The CPU model from `/proc/cpuinfo` (`model name`), or `"unknown"`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| parse_cpuinfo_model(&s))
        .unwrap_or_else(|| "unknown".to_owned())
}

/// The first `model name` value of a `/proc/cpuinfo` text.
pub fn parse_cpuinfo_model(cpuinfo: &str) -> Option<String> {
    cpuinfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k.trim() == "model name").then(|| v.trim().to_owned())
    })
}

/// Logical CPUs available to this process.
pub fn logical_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Size in bytes of the last-level (L3) cache from sysfs, if known.
pub fn l3_bytes() -> Option<usize> {
    let dir = Path::new("/sys/devices/system/cpu/cpu0/cache");
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let p = entry.path();
        let level = std::fs::read_to_string(p.join("level")).ok();
        if level.as_deref().map(str::trim) == Some("3") {
            return parse_cache_size(&std::fs::read_to_string(p.join("size")).ok()?);
        }
    }
    None
}

/// Bytes to read to evict the caches: `1.25 · L3`, within [64 MiB, 1 GiB]; 256 MiB when the
/// L3 size is unknown (`None`). A reported size of 0 still gets the 64 MiB floor.
pub fn flush_bytes_for(l3: Option<usize>) -> usize {
    match l3 {
        None => 256 << 20,
        Some(l3) => l3.saturating_add(l3 / 4).clamp(64 << 20, 1 << 30),
    }
}

/// Parses a sysfs cache size such as `"491520K"`, `"480M"` or `"1024"` into bytes.
pub fn parse_cache_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, mult) = match s.as_bytes().last()? {
        b'K' => (&s[..s.len() - 1], 1 << 10),
        b'M' => (&s[..s.len() - 1], 1 << 20),
        b'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<usize>().ok()?.checked_mul(mult)
}

/// `git rev-parse --short HEAD`, with `-dirty` if the work tree has changes; `None` without git.
pub fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let mut rev = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .is_some_and(|o| o.status.success() && !o.stdout.is_empty());
    if dirty {
        rev.push_str("-dirty");
    }
    Some(rev)
}

/// Current UTC time as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(secs)
}

/// Formats seconds since the Unix epoch as `YYYY-MM-DDTHH:MM:SSZ` (proleptic Gregorian).
pub fn format_utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// `Σ v²` with the widest `f32` dot kernel the host has (`DotF32` at the detected level), in
/// chunks: one full-width load per vector, the arithmetic hidden behind memory. (A plain
/// integer sum compiled for baseline x86-64 issues 16-byte loads and read about 25% slower
/// than the kernels do on the AVX-512 host, which made the ceiling too low.)
fn sum_squares(v: &[f32]) -> f32 {
    let k = ternary_core::kernels::DotF32::detect();
    v.chunks(1 << 14).map(|c| k.dot(c, c)).sum()
}

/// A buffer for [`read_bandwidth`] (`bytes / 4` small floats), touched once so its pages
/// exist.
pub fn bandwidth_buffer(bytes: usize) -> Vec<f32> {
    (0..bytes / 4).map(|i| (i % 7) as f32).collect()
}

/// Best-of-`passes` read bandwidth in bytes per second: sums `buf` split into one chunk per
/// thread of the current rayon pool. With `buf` far larger than the last-level cache this
/// is the DRAM read bandwidth, the limit of the streaming regime.
pub fn read_bandwidth(buf: &[f32], passes: usize) -> f64 {
    let threads = rayon::current_num_threads().max(1);
    let chunk = buf.len().div_ceil(threads).max(8);
    let mut best = f64::INFINITY;
    for _ in 0..passes.max(1) {
        let t0 = Instant::now();
        let s = buf.par_chunks(chunk).map(sum_squares).sum::<f32>();
        std::hint::black_box(s);
        // A coarse clock can read 0 for a tiny buffer; one nanosecond keeps the result finite.
        best = best.min(t0.elapsed().as_secs_f64().max(1e-9));
    }
    std::mem::size_of_val(buf) as f64 / best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_machine_files() {
        let info = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Intel(R) Xeon(R) X\n";
        assert_eq!(
            parse_cpuinfo_model(info).as_deref(),
            Some("Intel(R) Xeon(R) X")
        );
        assert_eq!(parse_cpuinfo_model("processor: 0\n"), None);
        assert_eq!(parse_cache_size("491520K\n"), Some(480 << 20));
        assert_eq!(parse_cache_size("32M"), Some(32 << 20));
        assert_eq!(parse_cache_size("1024"), Some(1024));
        assert_eq!(parse_cache_size("x"), None);
        for bad in [
            "",
            "K",
            "-1K",
            "1.5M",
            "99999999999999999999G",
            "18014398509481984G",
        ] {
            assert_eq!(parse_cache_size(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn flush_buffer_covers_any_cache_size() {
        assert_eq!(flush_bytes_for(None), 256 << 20);
        assert_eq!(flush_bytes_for(Some(0)), 64 << 20);
        assert_eq!(flush_bytes_for(Some(32 << 20)), 64 << 20);
        assert_eq!(flush_bytes_for(Some(480 << 20)), 600 << 20);
        assert_eq!(flush_bytes_for(Some(1 << 30)), 1 << 30);
        assert_eq!(flush_bytes_for(Some(usize::MAX)), 1 << 30);
        for l3 in [1usize, 1 << 20, 100 << 20, 819 << 20] {
            let b = flush_bytes_for(Some(l3));
            assert!(b > l3 && (64 << 20..=1 << 30).contains(&b), "{b} for {l3}");
        }
    }

    #[test]
    fn formats_dates() {
        assert_eq!(format_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_utc(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(format_utc(1_798_761_599), "2026-12-31T23:59:59Z");
    }

    #[test]
    fn sum_and_bandwidth() {
        let buf = bandwidth_buffer(4 * 70_001);
        // Σ (i mod 7)² over 70,001 values: 10,000 full cycles of 91, then 0.
        assert_eq!(sum_squares(&buf), 910_000.0);
        let bw = read_bandwidth(&buf, 2);
        assert!(bw.is_finite() && bw > 0.0);
    }
}

/// Evicts the caches by reading a buffer larger than the last-level cache.
#[derive(Debug)]
pub struct Flusher {
    buf: Vec<u64>,
}

impl Flusher {
    /// A buffer of [`flush_bytes_for`] this host's L3 (sysfs).
    pub fn new() -> Self {
        let bytes = flush_bytes_for(l3_bytes());
        let buf = (0..bytes / 8)
            .into_par_iter()
            .map(|i| (i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
            .collect();
        Self { buf }
    }

    /// The buffer's size.
    pub fn bytes(&self) -> usize {
        self.buf.len() * 8
    }

    /// Reads the whole buffer (in parallel).
    pub fn flush(&self) {
        let x = self
            .buf
            .par_chunks(1 << 16)
            .map(|c| c.iter().fold(0u64, |a, &b| a ^ b))
            .reduce(|| 0, |a, b| a ^ b);
        std::hint::black_box(x);
    }
}

impl Default for Flusher {
    fn default() -> Self {
        Self::new()
    }
}

/// The 1-minute load average from `/proc/loadavg`; `None` where it cannot be read.
pub fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
