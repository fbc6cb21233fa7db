//! `cargo xtask ci`: the checks CI runs, cheapest first so a local run fails fast.
//!
//! The CPU test suites run once at the SIMD level the host detects (with the ignored (`#[ignore = "…"]`)
//! real-model tests), then again at every lower level it supports, forced with `TERNARY_SIMD`
//! (an AVX-512 host runs the AVX2 and scalar paths an AVX2-only or a non-x86 host would take).
//! The host line and the levels that ran are printed at the start and the end.

use std::path::Path;

use crate::util::{cargo, step};

/// Runs the `host` binary of ternary-bench: the host line, or with `--levels` the available
/// SIMD levels (best last).
fn host(args: &[&str]) -> Result<String, String> {
    let out = cargo()
        // The test profile shares its dependency builds with the test step.
        .args(["run", "--quiet", "--profile", "test", "-p", "ternary-bench"])
        .args(["--bin", "host", "--"])
        .args(args)
        .output()
        .map_err(|e| format!("could not run the host probe: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "host probe failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Whether a Vulkan driver is installed (an ICD manifest in the loader's standard places, or
/// named by `VK_ICD_FILENAMES` / `VK_DRIVER_FILES`).
fn vulkan_driver_present() -> bool {
    if ["VK_ICD_FILENAMES", "VK_DRIVER_FILES"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|p| !p.is_empty()))
    {
        return true;
    }
    [
        "/usr/share/vulkan/icd.d",
        "/etc/vulkan/icd.d",
        "/usr/local/share/vulkan/icd.d",
    ]
    .iter()
    .filter_map(|d| std::fs::read_dir(Path::new(d)).ok())
    .flatten()
    .flatten()
    .any(|e| e.path().extension().is_some_and(|x| x == "json"))
}

/// The workspace's tests again at each available SIMD level below the best, forced with
/// `TERNARY_SIMD`, without the ignored (`#[ignore = "…"]`) real-model tests (they ran once at the
/// best level; every kernel's conformance at each level is in the fixture tests). The package
/// selection is the first test step's, so features unify the same way and nothing is rebuilt
/// (a `-p` subset recompiled the workspace, about 20 minutes per level on 2 cores). Returns the
/// levels that ran, best first.
fn simd_matrix(levels: &[String]) -> Result<Vec<String>, String> {
    let mut ran: Vec<String> = levels.last().cloned().into_iter().collect();
    for level in levels.iter().rev().skip(1) {
        let mut test = cargo();
        test.args(["test", "--workspace", "--tests"]);
        test.env("TERNARY_SIMD", level);
        step(&format!("test at TERNARY_SIMD={level}"), test)?;
        ran.push(level.clone());
    }
    Ok(ran)
}

fn run_ci_steps(skip_fmt: bool, skip_gpu: bool) -> Result<(), String> {
    if !skip_gpu && !vulkan_driver_present() {
        return Err(
            "no Vulkan driver found (no ICD manifest in /usr/share/vulkan/icd.d or \
             /etc/vulkan/icd.d): the GPU suites run on one. Install Mesa's software driver \
             (`apt-get install mesa-vulkan-drivers`) or a GPU driver, or pass --skip-gpu"
                .to_owned(),
        );
    }

    if !skip_fmt {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        step("fmt", fmt)?;
    }
    let host_line = host(&[])?;
    eprintln!("\n{host_line}");
    let levels: Vec<String> = host(&["--levels"])?
        .split_whitespace()
        .map(str::to_owned)
        .collect();

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
    // Tests that need the real model are ignored (`#[ignore = "…"]`); CI has fetched it, so they run here.
    test.args([
        "test",
        "--workspace",
        "--all-targets",
        "--",
        "--include-ignored",
    ]);
    step(
        &format!(
            "test (SIMD level {})",
            levels.last().map_or("?", String::as_str)
        ),
        test,
    )?;
    let ran = simd_matrix(&levels)?;

    // Doc tests are not covered by --all-targets.
    let mut doctest = cargo();
    doctest.args(["test", "--workspace", "--doc"]);
    step("doctest", doctest)?;

    if skip_gpu {
        eprintln!("\n==> GPU suites (wgpu, cube path) and CUDA/HIP checks: SKIPPED (--skip-gpu)");
    } else {
        gpu_steps()?;
    }

    let mut doc = cargo();
    doc.args(["doc", "--workspace", "--no-deps"]);
    doc.env("RUSTDOCFLAGS", "-D warnings");
    step("doc", doc)?;

    eprintln!("\n{host_line}");
    let cap = match std::env::var("TERNARY_SIMD") {
        Ok(v) if !v.is_empty() => format!("TERNARY_SIMD={v} in the environment caps the first"),
        _ => "the first is the host's best".to_string(),
    };
    eprintln!(
        "SIMD levels tested: {} ({cap}; TERNARY_SIMD forced the others)",
        ran.join(", ")
    );
    Ok(())
}

/// The GPU kernels' suites over wgpu (lavapipe on machines without a GPU), the cube path of
/// TernaryLinear, and compile checks of the CUDA and HIP runtimes.
fn gpu_steps() -> Result<(), String> {
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
    // fused, and a converted model on it (which also builds the model crate on Burn's wgpu
    // backend); then compile checks of the unfused-only build and of CUDA.
    let mut clippy_burn = cargo();
    clippy_burn.args([
        "clippy",
        "-p",
        "ternary-layers",
        "-p",
        "ternary-convert",
        "--features",
        "wgpu,fusion",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]);
    step(
        "clippy (ternary-layers, ternary-convert; wgpu + fusion)",
        clippy_burn,
    )?;
    let mut cube = cargo();
    cube.args(["test", "-p", "ternary-layers", "-p", "ternary-convert"])
        .args([
            "--features",
            "wgpu,fusion",
            "--test",
            "cube",
            "--test",
            "cube_model",
        ]);
    step("test (cube path and converted model, wgpu + fusion)", cube)?;
    for features in ["wgpu", "cuda,fusion"] {
        let mut check = cargo();
        check.args(["check", "-p", "ternary-layers", "-p", "ternary-convert"]);
        check.args(["--features", features]);
        check.env("CUDARC_CUDA_VERSION", "13000");
        step(
            &format!("check (ternary-layers, ternary-convert; {features})"),
            check,
        )?;
    }
    // `ternary finetune --device wgpu|cuda`: the CLI with both GPU backends.
    let mut clippy_cli = cargo();
    clippy_cli.args([
        "clippy",
        "-p",
        "ternary-cli",
        "--features",
        "wgpu,cuda",
        "--",
        "-D",
        "warnings",
    ]);
    clippy_cli.env("CUDARC_CUDA_VERSION", "13000");
    step("clippy (ternary-cli; wgpu + cuda)", clippy_cli)?;
    Ok(())
}

pub fn run(args: &[String]) -> Result<(), String> {
    let mut skip_fmt = false;
    let mut skip_gpu = false;
    for a in args {
        match a.as_str() {
            "--skip-fmt" => skip_fmt = true,
            "--skip-gpu" => skip_gpu = true,
            other => {
                return Err(format!(
                    "ci: unknown argument `{other}` (expected --skip-fmt, --skip-gpu)"
                ));
            }
        }
    }
    run_ci_steps(skip_fmt, skip_gpu)?;
    eprintln!("\nxtask ci: all checks passed");
    Ok(())
}
