//! `bench-report [--quick] [--out DIR]`: times the ternary kernels against dense f32/f16
//! matmul and the scalar kernels; prints a markdown table and writes `DIR/bench.md` and
//! `DIR/bench.json` (default `DIR`: `target/bench-report`). Run it with
//! `cargo xtask bench [--quick]`. Progress goes to stderr.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use ternary_bench::cli::{USAGE, parse_args};
use ternary_bench::run::{Plan, failures, run};
use ternary_bench::{BenchError, Result};

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).map_err(|source| BenchError::Io {
        path: path.to_owned(),
        source,
    })
}

fn real_main() -> Result<bool> {
    let Some(args) = parse_args(std::env::args().skip(1))? else {
        println!("{USAGE}");
        return Ok(true);
    };
    let plan = if args.quick {
        Plan::quick()
    } else {
        Plan::full()
    };
    let start = Instant::now();
    eprintln!(
        "bench-report{}: {} shapes, n = {:?}, threads {:?}, regimes {:?}",
        if args.quick { " --quick" } else { "" },
        plan.shapes.len(),
        plan.ns,
        plan.threads,
        plan.regimes
    );
    let report = run(&plan, &mut |line| eprintln!("{line}"))?;
    let md = report.to_markdown();
    std::fs::create_dir_all(&args.out).map_err(|source| BenchError::Io {
        path: args.out.clone(),
        source,
    })?;
    write(&args.out.join("bench.md"), &md)?;
    let json = serde_json::to_string_pretty(&report.to_json())
        .map_err(|e| BenchError::Args(format!("JSON encoding failed: {e}")))?;
    write(&args.out.join("bench.json"), &json)?;
    println!("{md}");
    eprintln!(
        "done in {:.0} s; wrote {} and {}",
        start.elapsed().as_secs_f64(),
        args.out.join("bench.md").display(),
        args.out.join("bench.json").display()
    );
    let failed = failures(&report);
    if !failed.is_empty() {
        eprintln!(
            "\n!!! {} KERNEL(S) FAILED THE CORRECTNESS CHECK (no timings recorded):",
            failed.len()
        );
        for f in &failed {
            eprintln!("!!!   {f}");
        }
    }
    Ok(failed.is_empty())
}

fn main() -> ExitCode {
    match real_main() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(2),
        Err(e) => {
            eprintln!("bench-report: {e}");
            ExitCode::FAILURE
        }
    }
}
