//! The SIMD level override (`TERNARY_SIMD`): parsing, the cap rule, and that a process started
//! with it runs exactly the levels it allows. The last test re-runs this test binary once per
//! level the CPU supports, so the override is exercised whatever the CI configuration.

use ternary_core::kernels::{self, Level, SIMD_ENV};
use ternary_core::{Scales, TernaryMatrix};

#[test]
fn override_values_parse_as_documented() {
    let all = |_: Level| true;
    assert_eq!(Level::resolve_override(None, all), Ok(None));
    assert_eq!(Level::resolve_override(Some(""), all), Ok(None));
    assert_eq!(Level::resolve_override(Some(" auto "), all), Ok(None));
    assert_eq!(Level::resolve_override(Some("AUTO"), all), Ok(None));
    for level in Level::ALL {
        assert_eq!(
            Level::resolve_override(Some(level.name()), all),
            Ok(Some(level))
        );
        assert_eq!(
            Level::resolve_override(Some(&level.name().to_uppercase()), all),
            Ok(Some(level))
        );
        assert_eq!(Level::from_name(level.name()), Some(level));
    }
    let bad = Level::resolve_override(Some("avx1024"), all).unwrap_err();
    assert!(
        bad.contains("TERNARY_SIMD") && bad.contains("avx2"),
        "{bad}"
    );
    // A level the CPU lacks is refused (ignored with a warning), never forced.
    let only_scalar = |l: Level| l == Level::Scalar;
    let lacking = Level::resolve_override(Some("avx512"), only_scalar).unwrap_err();
    assert!(lacking.contains("does not support avx512"), "{lacking}");
    assert_eq!(
        Level::resolve_override(Some("scalar"), only_scalar),
        Ok(Some(Level::Scalar))
    );
}

#[test]
fn cap_allows_scalar_and_lower_levels_of_its_family() {
    use Level::*;
    let allowed =
        |cap: Level| -> Vec<Level> { Level::ALL.into_iter().filter(|l| l.within(cap)).collect() };
    assert_eq!(allowed(Scalar), [Scalar]);
    assert_eq!(allowed(Avx2), [Scalar, Avx2]);
    assert_eq!(allowed(Avx512), [Scalar, Avx2, Avx512]);
    assert_eq!(allowed(Neon), [Scalar, Neon]);
}

/// Every aarch64 CPU that runs Linux has Advanced SIMD, so an aarch64 run that does not reach
/// the NEON level (and with it the NEON kernels in every level-sweeping test) is a defect.
#[cfg(target_arch = "aarch64")]
#[test]
fn aarch64_hosts_detect_neon() {
    assert!(Level::Neon.is_supported(), "NEON not detected");
    assert!(Level::supported().contains(&Level::Neon));
}

/// What this process was started with, checked against what the kernels do.
#[test]
fn env_override_is_honoured() {
    let raw = std::env::var(SIMD_ENV).ok();
    let expected = Level::resolve_override(raw.as_deref(), Level::is_supported);
    let supported = Level::supported();
    eprintln!(
        "{SIMD_ENV}={raw:?}: detected {}, available {:?}, supported {supported:?}",
        Level::detect(),
        Level::available()
    );
    assert_eq!(supported.first(), Some(&Level::Scalar));
    match expected {
        Ok(Some(cap)) => {
            assert_eq!(Level::forced(), Some(cap));
            assert_eq!(Level::detect(), cap);
            assert_eq!(Level::available().last(), Some(&cap));
        }
        Ok(None) | Err(_) => {
            assert_eq!(Level::forced(), None);
            assert_eq!(Level::available(), supported);
            assert_eq!(Some(&Level::detect()), supported.last());
        }
    }
    // Every supported level above the cap is refused with an error that names the override;
    // every available one runs.
    let m = TernaryMatrix::from_trits(2, 2, &[1, -1, 0, 1], Scales::per_row(vec![1.0, 2.0]))
        .expect("valid matrix");
    let x = [3.0f32, 5.0];
    for level in supported {
        let mut y = [0f32; 2];
        let r = kernels::gemm_f32_with(level, &m, &x, 1, &mut y);
        if level.is_available() {
            r.expect("available level runs");
            assert_eq!(y, [-2.0, 10.0], "{level}");
        } else {
            let e = r.expect_err("capped level is refused").to_string();
            assert!(e.contains(SIMD_ENV), "{e}");
        }
    }
}

/// Re-runs [`env_override_is_honoured`] in a child process for every supported level and
/// for two refused values, so the cap is tested on any host, with or without CI's matrix.
/// Under an emulator without `binfmt_misc` (e.g. `qemu-aarch64`, see `scripts/neon.sh`),
/// `TERNARY_TEST_RUNNER` names the command that runs the child (split on spaces).
#[test]
fn each_supported_level_can_be_forced_in_a_child_process() {
    let exe = std::env::current_exe().expect("test binary path");
    let runner: Vec<String> = std::env::var("TERNARY_TEST_RUNNER")
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_owned)
        .collect();
    let mut values: Vec<String> = Level::supported()
        .iter()
        .map(|l| l.name().to_owned())
        .collect();
    values.push("bogus".to_owned());
    values.extend(
        Level::ALL
            .iter()
            .filter(|l| !l.is_supported())
            .map(|l| l.name().to_owned()),
    );
    for value in values {
        let mut cmd = match runner.split_first() {
            Some((program, args)) => {
                let mut c = std::process::Command::new(program);
                c.args(args).arg(&exe);
                c
            }
            None => std::process::Command::new(&exe),
        };
        let out = cmd
            .args(["--exact", "env_override_is_honoured", "--nocapture"])
            .env(SIMD_ENV, &value)
            .output()
            .expect("run the test binary");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{SIMD_ENV}={value}:\n{text}");
        assert!(
            text.contains("1 passed"),
            "{SIMD_ENV}={value} ran no test:\n{text}"
        );
        if Level::from_name(&value).is_none_or(|l| !l.is_supported()) {
            assert!(text.contains("ignoring TERNARY_SIMD"), "{value}: {text}");
        }
    }
}
