//! `cargo xtask bench [--quick] [--out DIR] [--suite NAME]...`: builds the report binaries of
//! `ternary-bench` in release mode and runs them; each writes `DIR/<suite>.md` and `.json`.
//!
//! The `model` suite (our engine against llama.cpp, [`crate::bench_model`]) runs only when
//! named: it builds llama.cpp and takes minutes.

use crate::bench_model;
use crate::util::{cargo, root, step};

/// `(suite name, binary, report file stem)`, in the order they run.
const SUITES: &[(&str, &str, &str)] = &[
    ("core", "bench-report", "bench"),
    ("sparsity", "bench-sparsity", "sparsity"),
    ("vsa", "bench-vsa", "vsa"),
];

/// The suite run only when asked for.
const MODEL: &str = "model";

pub fn run(args: &[String]) -> Result<(), String> {
    let mut quick = false;
    let mut out = root().join("target").join("bench-report");
    let mut chosen: Vec<&str> = Vec::new();
    let mut bitnet = None;
    let mut threads = Vec::new();
    let mut reps = None;
    let mut our_flags = Vec::new();
    let mut wait_idle = None;
    let mut model_only = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = it.next().ok_or("bench: --out needs a directory")?.into(),
            "--suite" => {
                let name = it.next().ok_or("bench: --suite needs a name")?;
                if name == MODEL {
                    chosen.push(MODEL);
                    continue;
                }
                let known = SUITES.iter().find(|s| s.0 == name).ok_or_else(|| {
                    let names: Vec<_> = SUITES.iter().map(|s| s.0).chain([MODEL]).collect();
                    format!(
                        "bench: unknown suite `{name}` (known: {})",
                        names.join(", ")
                    )
                })?;
                chosen.push(known.0);
            }
            "--with-2b" | "--no-2b" => {
                bitnet = Some(a == "--with-2b");
                model_only.push(a.clone());
            }
            "--threads" => {
                let list = it.next().ok_or("bench: --threads needs a list, e.g. 1,2")?;
                threads = parse_threads(list)?;
                model_only.push(a.clone());
            }
            "--reps" => {
                let n = it.next().ok_or("bench: --reps needs a number")?;
                reps = Some(
                    n.parse::<usize>()
                        .ok()
                        .filter(|&n| n >= 1)
                        .ok_or_else(|| format!("bench: bad --reps `{n}`"))?,
                );
                model_only.push(a.clone());
            }
            "--wait-idle" => {
                let m = it.next().ok_or("bench: --wait-idle needs minutes")?;
                wait_idle = Some(
                    m.parse::<f64>()
                        .ok()
                        .filter(|m| *m >= 0.0)
                        .ok_or_else(|| format!("bench: bad --wait-idle `{m}`"))?,
                );
                model_only.push(a.clone());
            }
            "--our-flags" => {
                let f = it
                    .next()
                    .ok_or("bench: --our-flags needs a string, e.g. \"--kv f16\"")?;
                our_flags = f.split_whitespace().map(str::to_owned).collect();
                model_only.push(a.clone());
            }
            other => return Err(format!("bench: unknown argument `{other}`")),
        }
    }
    if !model_only.is_empty() && !chosen.contains(&MODEL) {
        return Err(format!(
            "bench: {} only apply to --suite {MODEL}",
            model_only.join(", ")
        ));
    }
    let others: Vec<&(&str, &str, &str)> = SUITES
        .iter()
        .filter(|s| chosen.is_empty() || chosen.contains(&s.0))
        .collect();
    let mut written = Vec::new();
    if !others.is_empty() {
        let mut build = cargo();
        build.args(["build", "--release", "--package", "ternary-bench", "--bins"]);
        step("build", build)?;
    }
    for &&(name, bin, stem) in &others {
        let mut cmd = cargo();
        cmd.args([
            "run",
            "--quiet",
            "--release",
            "--package",
            "ternary-bench",
            "--bin",
            bin,
            "--",
        ]);
        if quick {
            cmd.arg("--quick");
        }
        cmd.arg("--out").arg(&out);
        step(&format!("bench {name}"), cmd)?;
        written.push(out.join(format!("{stem}.md")));
    }
    if chosen.contains(&MODEL) {
        bench_model::run(&bench_model::Options {
            quick,
            out: out.clone(),
            bitnet,
            threads,
            reps,
            our_flags,
            wait_idle,
        })?;
        written.push(out.join("model.md"));
    }
    eprintln!("\nreports (markdown; JSON beside each):");
    for w in written {
        eprintln!("  {}", w.display());
    }
    Ok(())
}

/// `1,2` → `[1, 2]` (each at least 1).
fn parse_threads(list: &str) -> Result<Vec<usize>, String> {
    list.split(',')
        .map(|t| match t.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("bench: bad thread count `{t}` in --threads {list}")),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_lists() {
        assert_eq!(parse_threads("1,2").unwrap(), vec![1, 2]);
        assert_eq!(parse_threads(" 4 ").unwrap(), vec![4]);
        assert!(parse_threads("0").is_err());
        assert!(parse_threads("1,x").is_err());
    }

    #[test]
    fn model_flags_need_the_model_suite() {
        let args: Vec<String> = ["--with-2b"].iter().map(|s| s.to_string()).collect();
        assert!(run(&args).unwrap_err().contains("only apply"));
    }
}
