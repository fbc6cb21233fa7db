//! Command line of `bench-report`: `[--quick] [--out DIR]`, exactly what `cargo xtask bench`
//! passes.

use std::path::PathBuf;

use crate::error::{BenchError, Result};

/// Usage text.
pub const USAGE: &str = "usage: bench-report [--quick] [--out DIR]\n  \
    --quick     reduced set (4096x14336 and 4096x4096, n = 1, 8, 64), under two minutes\n  \
    --out DIR   where bench.md and bench.json go (default target/bench-report)";

/// Parsed command line.
#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    /// `--quick`: the reduced plan.
    pub quick: bool,
    /// `--out DIR`: where `bench.md` and `bench.json` go.
    pub out: PathBuf,
}

/// Parses `[--quick] [--out DIR | --out=DIR]`; `Ok(None)` for `--help`.
pub fn parse_args(args: impl IntoIterator<Item = String>) -> Result<Option<Args>> {
    let mut a = Args {
        quick: false,
        out: PathBuf::from("target/bench-report"),
    };
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--quick" => a.quick = true,
            "--out" => {
                a.out = it
                    .next()
                    .ok_or_else(|| BenchError::Args("--out needs a directory".into()))?
                    .into();
            }
            "-h" | "--help" => return Ok(None),
            other => match other.strip_prefix("--out=") {
                Some(dir) if !dir.is_empty() => a.out = dir.into(),
                _ => {
                    return Err(BenchError::Args(format!(
                        "unknown argument `{other}`\n{USAGE}"
                    )));
                }
            },
        }
    }
    Ok(Some(a))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(a: &[&str]) -> Result<Option<Args>> {
        parse_args(a.iter().map(|s| s.to_string()))
    }

    #[test]
    fn parses_what_xtask_passes() {
        let a = parse(&[]).unwrap().unwrap();
        assert_eq!(
            a,
            Args {
                quick: false,
                out: "target/bench-report".into()
            }
        );
        let a = parse(&["--quick", "--out", "/tmp/r"]).unwrap().unwrap();
        assert_eq!(
            a,
            Args {
                quick: true,
                out: "/tmp/r".into()
            }
        );
        let a = parse(&["--out=x"]).unwrap().unwrap();
        assert_eq!(
            a,
            Args {
                quick: false,
                out: "x".into()
            }
        );
        assert!(parse(&["--help"]).unwrap().is_none());
        assert!(parse(&["--out"]).is_err());
        assert!(parse(&["--out="]).is_err());
        assert!(parse(&["--fast"]).is_err());
    }
}
