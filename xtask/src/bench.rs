//! `cargo xtask bench [--quick] [--out DIR]`: builds and runs the report binary in release mode.

use crate::util::{cargo, root, step};

pub fn run(args: &[String]) -> Result<(), String> {
    let mut quick = false;
    let mut out = root().join("target").join("bench-report");
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => {
                out = it.next().ok_or("bench: --out needs a directory")?.into();
            }
            other => return Err(format!("bench: unknown argument `{other}`")),
        }
    }
    let mut cmd = cargo();
    cmd.args([
        "run",
        "--release",
        "--package",
        "ternary-bench",
        "--bin",
        "bench-report",
        "--",
    ]);
    if quick {
        cmd.arg("--quick");
    }
    cmd.arg("--out").arg(&out);
    step("bench", cmd)?;
    eprintln!(
        "report: {} and {}",
        out.join("bench.md").display(),
        out.join("bench.json").display()
    );
    Ok(())
}
