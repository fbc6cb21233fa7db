//! `cargo xtask ci`: the checks CI runs, cheapest first so a local run fails fast.

use crate::util::{cargo, step};

fn run_ci_steps(skip_fmt: bool) -> Result<(), String> {
    if !skip_fmt {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        step("fmt", fmt)?;
    }

    let mut clippy = cargo();
    clippy.args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    step("clippy", clippy)?;

    let mut test = cargo();
    test.args(["test", "--workspace", "--all-targets"]);
    step("test", test)?;

    // Doc tests are not covered by --all-targets.
    let mut doctest = cargo();
    doctest.args(["test", "--workspace", "--doc"]);
    step("doctest", doctest)?;

    // GPU kernels: conformance on wgpu (lavapipe, Mesa's software Vulkan, on machines without
    // a GPU), then compile checks of the CUDA and HIP runtimes (no device needed to compile).
    let mut clippy_gpu = cargo();
    clippy_gpu.args([
        "clippy",
        "-p",
        "ternary-kernels",
        "--features",
        "wgpu",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    step("clippy (wgpu)", clippy_gpu)?;
    let mut gpu = cargo();
    gpu.args([
        "test",
        "-p",
        "ternary-kernels",
        "--features",
        "wgpu",
        "--test",
        "wgpu",
    ]);
    step("test (wgpu)", gpu)?;
    for feature in ["cuda", "hip"] {
        let mut check = cargo();
        check.args([
            "check",
            "-p",
            "ternary-kernels",
            "--features",
            feature,
            "--all-targets",
        ]);
        check.env("CUDARC_CUDA_VERSION", "13000");
        step(&format!("check ({feature})"), check)?;
    }
    // TernaryLinear's cube path on Burn's CubeCL backends over wgpu (lavapipe), unfused and
    // fused (which also builds the model crate on Burn's wgpu backend); then compile checks of
    // the unfused-only build and of CUDA.
    let mut clippy_burn = cargo();
    clippy_burn.args([
        "clippy",
        "-p",
        "ternary-burn",
        "--features",
        "wgpu,fusion",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    step("clippy (ternary-burn, wgpu + fusion)", clippy_burn)?;
    let mut cube = cargo();
    cube.args([
        "test",
        "-p",
        "ternary-burn",
        "--features",
        "wgpu,fusion",
        "--test",
        "cube",
    ]);
    step("test (ternary-burn cube path, wgpu + fusion)", cube)?;
    for features in ["wgpu", "cuda,fusion"] {
        let mut check = cargo();
        check.args(["check", "-p", "ternary-burn", "--features", features]);
        check.env("CUDARC_CUDA_VERSION", "13000");
        step(&format!("check (ternary-burn, {features})"), check)?;
    }

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    step("doc", doc)?;
    Ok(())
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut skip_fmt = false;
    for a in args {
        match a.as_str() {
            "--skip-fmt" => skip_fmt = true,
            other => return Err(format!("ci: unknown argument `{other}`")),
        }
    }
    run_ci_steps(skip_fmt)?;
    eprintln!("\nxtask ci: all checks passed");
    Ok(())
}
