//! `host`: what CI and bench reports say about the machine: CPU model, logical CPUs, L3 size
//! and the SIMD levels (supported, lacking, and the `TERNARY_SIMD` cap).
//!
//! `host --levels` prints only the available levels, best last, one line, for scripts.

use ternary_bench::machine;
use ternary_core::kernels::{Level, SIMD_ENV};

fn names(levels: &[Level]) -> String {
    levels
        .iter()
        .map(|l| l.name())
        .collect::<Vec<_>>()
        .join(" ")
}

fn main() {
    let available = Level::available();
    if std::env::args().nth(1).as_deref() == Some("--levels") {
        println!("{}", names(&available));
        return;
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
}
