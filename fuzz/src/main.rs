//! `ternary-fuzz`: the long fuzzing campaign behind `cargo xtask fuzz` (see the library docs
//! and `docs/reliability.md`).

use std::process::ExitCode;
use std::time::{Duration, Instant};

use ternary_fuzz::harness::{ALLOC_BASE, ALLOC_PER_BYTE, save_fixture};
use ternary_fuzz::{Budget, Corpus, Parser, campaign, check, fixtures_root};

#[global_allocator]
static ALLOC: ternary_fuzz::alloc::CountingAlloc = ternary_fuzz::alloc::CountingAlloc;

const USAGE: &str = "\
usage: ternary-fuzz [--minutes M | --inputs N] [--seed S] [--parser NAME]... [--threads T]
                    [--no-save] [--save-index I]

  --minutes M      wall-clock budget, split evenly across the parsers (default 1)
  --inputs N       run inputs 0..N of each parser instead of a time budget
  --seed S         run seed (default: $TERNARY_FUZZ_SEED, else 1)
  --parser NAME    only this parser (repeatable): gguf, safetensors, model-file,
                   config-json, tokenizer-json
  --threads T      fuzzing threads (default: all cores)
  --no-save        do not write failing inputs to fixtures/fuzz/<parser>/
  --save-index I   write input I of the run (with --seed, one --parser) as a fixture, then
                   check it
  --replay FILE    check one file (with one --parser), e.g. a fixture";

struct Args {
    minutes: f64,
    inputs: Option<u64>,
    seed: u64,
    parsers: Vec<Parser>,
    threads: usize,
    save: bool,
    save_index: Option<u64>,
    replay: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let env_seed = match std::env::var("TERNARY_FUZZ_SEED") {
        Ok(s) if !s.is_empty() => Some(
            s.parse::<u64>()
                .map_err(|_| format!("TERNARY_FUZZ_SEED={s:?} is not an unsigned integer"))?,
        ),
        _ => None,
    };
    let mut a = Args {
        minutes: 1.0,
        inputs: None,
        seed: env_seed.unwrap_or(1),
        parsers: Vec::new(),
        threads: std::thread::available_parallelism().map_or(1, usize::from),
        save: true,
        save_index: None,
        replay: None,
    };
    let mut it = std::env::args().skip(1);
    let num = |flag: &str, v: Option<String>| -> Result<String, String> {
        v.ok_or_else(|| format!("{flag} needs a value"))
    };
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--minutes" => {
                let v = num("--minutes", it.next())?;
                a.minutes = v
                    .parse()
                    .ok()
                    .filter(|m: &f64| m.is_finite() && *m > 0.0)
                    .ok_or_else(|| format!("--minutes {v:?} is not a positive number"))?;
            }
            "--inputs" => {
                let v = num("--inputs", it.next())?;
                a.inputs = Some(v.parse().map_err(|_| format!("--inputs {v:?}"))?);
            }
            "--seed" => {
                let v = num("--seed", it.next())?;
                a.seed = v.parse().map_err(|_| format!("--seed {v:?}"))?;
            }
            "--parser" => {
                let v = num("--parser", it.next())?;
                a.parsers.push(Parser::from_name(&v).ok_or_else(|| {
                    let names: Vec<_> = Parser::ALL.iter().map(|p| p.name()).collect();
                    format!("unknown parser {v:?} (known: {})", names.join(", "))
                })?);
            }
            "--threads" => {
                let v = num("--threads", it.next())?;
                a.threads = v
                    .parse()
                    .ok()
                    .filter(|&t: &usize| t > 0)
                    .ok_or_else(|| format!("--threads {v:?}"))?;
            }
            "--no-save" => a.save = false,
            "--save-index" => {
                let v = num("--save-index", it.next())?;
                a.save_index = Some(v.parse().map_err(|_| format!("--save-index {v:?}"))?);
            }
            "--replay" => a.replay = Some(num("--replay", it.next())?),
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    if a.parsers.is_empty() {
        a.parsers = Parser::ALL.to_vec();
    }
    Ok(a)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn run() -> Result<bool, String> {
    let a = parse_args()?;
    let root = fixtures_root();
    if let Some(file) = &a.replay {
        let [parser] = a.parsers[..] else {
            return Err("--replay needs exactly one --parser".into());
        };
        let bytes = std::fs::read(file).map_err(|e| format!("{file}: {e}"))?;
        let v = check(parser, &bytes, a.seed, 0);
        return Ok(match v.failure {
            Some(f) => {
                println!("{file}: FAIL: {f}");
                false
            }
            None => {
                println!(
                    "{file}: ok ({:?}, peak {} bytes, {:.1} ms)",
                    v.outcome,
                    v.peak,
                    1e3 * secs(v.time)
                );
                true
            }
        });
    }
    if let Some(index) = a.save_index {
        let [parser] = a.parsers[..] else {
            return Err("--save-index needs exactly one --parser".into());
        };
        let corpus = Corpus::new(parser);
        let bytes = corpus.input(a.seed, index);
        let path = save_fixture(&root, parser, &bytes).map_err(|e| format!("saving: {e}"))?;
        println!(
            "saved {} input #{index} of seed {} ({} bytes) as {}",
            parser.name(),
            a.seed,
            bytes.len(),
            path.display()
        );
        let v = check(parser, &bytes, a.seed, index);
        match v.failure {
            Some(f) => println!("it fails: {f}"),
            None => println!(
                "it passes now ({:?}, peak {} bytes, {:.1} ms)",
                v.outcome,
                v.peak,
                1e3 * secs(v.time)
            ),
        }
        return Ok(true);
    }
    let budget_each = Duration::from_secs_f64(a.minutes * 60.0 / a.parsers.len() as f64);
    println!(
        "ternary-fuzz: seed {} (TERNARY_FUZZ_SEED overrides), {} thread(s), {}; allocation bound \
         {ALLOC_PER_BYTE}·len + {} MiB per parse",
        a.seed,
        a.threads,
        match a.inputs {
            Some(n) => format!("{n} inputs per parser"),
            None => format!("{:.1} s per parser", secs(budget_each)),
        },
        ALLOC_BASE >> 20
    );
    let mut rows = Vec::new();
    let mut clean = true;
    let total = Instant::now();
    for &parser in &a.parsers {
        let t = Instant::now();
        let corpus = Corpus::new(parser);
        let sizes: Vec<_> = corpus.seeds.iter().map(Vec::len).collect();
        println!(
            "\n== {}: {} seeds ({:?} bytes), built in {:.2} s",
            parser.name(),
            corpus.seeds.len(),
            sizes,
            secs(t.elapsed())
        );
        let budget = match a.inputs {
            Some(n) => Budget::Inputs(n),
            None => Budget::Until(Instant::now() + budget_each),
        };
        let save = a.save.then_some(root.as_path());
        let s = campaign(&corpus, a.seed, budget, a.threads, save);
        let rate = s.inputs as f64 / secs(s.elapsed).max(1e-9);
        println!(
            "{}: {} inputs in {:.1} s ({:.0}/s), {:.1}% accepted, {} failing; peak heap {} bytes \
             (input of {} bytes), at most {:.1}% of the bound; slowest input #{} took {:.1} ms",
            parser.name(),
            s.inputs,
            secs(s.elapsed),
            rate,
            100.0 * s.accepted as f64 / s.inputs.max(1) as f64,
            s.failures,
            s.max_peak.0,
            s.max_peak.1,
            100.0 * s.max_bound_fraction,
            s.slowest.1,
            1e3 * secs(s.slowest.0)
        );
        for f in &s.found {
            clean = false;
            println!(
                "  FAIL input #{} (replay: cargo xtask fuzz --seed {} --parser {} --save-index {}): {}{}",
                f.index,
                a.seed,
                parser.name(),
                f.index,
                f.failure,
                f.saved
                    .as_ref()
                    .map(|p| format!("\n       saved as {}", p.display()))
                    .unwrap_or_default()
            );
        }
        if s.failures > s.found.len() as u64 {
            println!("  ... {} failing inputs in all", s.failures);
        }
        rows.push((parser, s, rate));
    }
    println!(
        "\n| parser | inputs | time (s) | inputs/s | accepted | failures | peak heap (bytes) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (p, s, rate) in &rows {
        println!(
            "| {} | {} | {:.0} | {:.0} | {:.1}% | {} | {} |",
            p.name(),
            s.inputs,
            secs(s.elapsed),
            rate,
            100.0 * s.accepted as f64 / s.inputs.max(1) as f64,
            s.failures,
            s.max_peak.0
        );
    }
    println!(
        "\nseed {}, {} thread(s), {:.1} s in all: {}",
        a.seed,
        a.threads,
        secs(total.elapsed()),
        if clean {
            "no failures"
        } else {
            "FAILURES (see above)"
        }
    );
    Ok(clean)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("ternary-fuzz: {e}");
            ExitCode::from(2)
        }
    }
}
