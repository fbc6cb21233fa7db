//! `cargo xtask bench [--quick] [--out DIR] [--suite NAME]...`: builds the report binaries of
//! `ternary-bench` in release mode and runs them; each writes `DIR/<suite>.md` and `.json`.

use crate::util::{cargo, root, step};

/// `(suite name, binary, report file stem)`, in the order they run.
const SUITES: &[(&str, &str, &str)] = &[
    ("core", "bench-report", "bench"),
    ("sparsity", "bench-sparsity", "sparsity"),
    ("vsa", "bench-vsa", "vsa"),
];

pub fn run(args: &[String]) -> Result<(), String> {
    let mut quick = false;
    let mut out = root().join("target").join("bench-report");
    let mut chosen: Vec<&str> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = it.next().ok_or("bench: --out needs a directory")?.into(),
            "--suite" => {
                let name = it.next().ok_or("bench: --suite needs a name")?;
                let known = SUITES.iter().find(|s| s.0 == name).ok_or_else(|| {
                    let names: Vec<_> = SUITES.iter().map(|s| s.0).collect();
                    format!(
                        "bench: unknown suite `{name}` (known: {})",
                        names.join(", ")
                    )
                })?;
                chosen.push(known.0);
            }
            other => return Err(format!("bench: unknown argument `{other}`")),
        }
    }
    let mut build = cargo();
    build.args(["build", "--release", "--package", "ternary-bench", "--bins"]);
    step("build", build)?;
    let mut written = Vec::new();
    for &(name, bin, stem) in SUITES {
        if !chosen.is_empty() && !chosen.contains(&name) {
            continue;
        }
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
    eprintln!("\nreports (markdown; JSON beside each):");
    for w in written {
        eprintln!("  {}", w.display());
    }
    Ok(())
}
