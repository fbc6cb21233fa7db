//! `host`: what CI and bench reports say about the machine: CPU model, logical CPUs, L3 size
//! and the SIMD levels (supported, lacking, and the `TERNARY_SIMD` cap).
//!
//! `host --levels` prints only the available levels, best last, one line, for scripts.
//!
//! `host --json [--bandwidth T1,T2,...]` prints the same facts as one JSON object (for
//! `cargo xtask bench --suite model`), with the 1-minute load average, the git commit and, per
//! thread count, the memory read bandwidth ([`machine::read_bandwidth`], best of 3 passes over
//! a buffer of at least 1 GiB and 1.25 × L3, as the core suite measures it).

use rayon::ThreadPoolBuilder;
use serde_json::json;
use ternary_bench::{machine, run};
use ternary_core::kernels::{Level, SIMD_ENV};

fn names(levels: &[Level]) -> String {
    levels
        .iter()
        .map(|l| l.name())
        .collect::<Vec<_>>()
        .join(" ")
}

/// `host --json`: the machine facts and the read bandwidth with each of `threads`.
fn print_json(threads: &[usize]) -> Result<(), String> {
    let bytes = run::streaming_bytes().max(1 << 30);
    let buf = machine::bandwidth_buffer(if threads.is_empty() { 0 } else { bytes });
    let mut bandwidth = Vec::new();
    for &t in threads {
        let pool = ThreadPoolBuilder::new()
            .num_threads(t)
            .build()
            .map_err(|e| format!("thread pool of {t}: {e}"))?;
        let b = pool.install(|| machine::read_bandwidth(&buf, 3));
        bandwidth.push(json!({ "threads": t, "bytes_per_s": b }));
    }
    let v = json!({
        "cpu": machine::cpu_model(),
        "arch": std::env::consts::ARCH,
        "logical_cpus": machine::logical_cpus(),
        "l3_bytes": machine::l3_bytes(),
        "detected_level": Level::detect().name(),
        "available_levels": Level::available().iter().map(|l| l.name()).collect::<Vec<_>>(),
        "forced_level": Level::forced().map(Level::name),
        "commit": machine::git_commit(),
        "date": machine::utc_now(),
        "load_average": machine::load_average(),
        "read_bandwidth": bandwidth,
        "bandwidth_buffer_bytes": if threads.is_empty() { 0 } else { bytes },
    });
    println!("{v}");
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let available = Level::available();
    match args.first().map(String::as_str) {
        Some("--levels") => {
            println!("{}", names(&available));
            return std::process::ExitCode::SUCCESS;
        }
        Some("--json") => {
            let threads: Result<Vec<usize>, String> = match args.get(1).map(String::as_str) {
                None => Ok(Vec::new()),
                Some("--bandwidth") => args
                    .get(2)
                    .map_or("", String::as_str)
                    .split(',')
                    .map(|t| match t.trim().parse::<usize>() {
                        Ok(n) if n >= 1 => Ok(n),
                        _ => Err(format!("--bandwidth: bad thread count `{t}`")),
                    })
                    .collect(),
                Some(other) => Err(format!("unknown argument `{other}`")),
            };
            return match threads.and_then(|t| print_json(&t)) {
                Ok(()) => std::process::ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("host: {e}");
                    std::process::ExitCode::FAILURE
                }
            };
        }
        _ => {}
    }
    let supported = Level::supported();
    let lacking: Vec<Level> = Level::ALL
        .into_iter()
        .filter(|l| !l.is_supported())
        .collect();
    let l3 = machine::l3_bytes().map_or_else(
        || "unknown (no sysfs cache entry)".to_owned(),
        |b| format!("{} MiB", b >> 20),
    );
    println!(
        "host: {} on {}, {} logical CPUs, L3 {l3}",
        machine::cpu_model(),
        std::env::consts::ARCH,
        machine::logical_cpus()
    );
    let cap = match Level::forced() {
        Some(l) => format!("{SIMD_ENV}={l}"),
        None => format!("{SIMD_ENV} not set"),
    };
    println!(
        "simd: supported {}; lacking {}; {cap}; kernels run at {}",
        names(&supported),
        if lacking.is_empty() {
            "none".to_owned()
        } else {
            names(&lacking)
        },
        Level::detect()
    );
    std::process::ExitCode::SUCCESS
}
