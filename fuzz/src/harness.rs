//! Running inputs: each parse under `catch_unwind` and an allocation [`Guard`], failures saved
//! as regression fixtures, and whole campaigns (a count of inputs or a deadline, on several
//! threads) with their figures.

use std::cell::RefCell;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::alloc::{Guard, installed};
use crate::rng::fnv1a;
use crate::targets::{Corpus, Outcome, Parser, parse};

/// Allocation bound, per byte of input: a parse may hold at most
/// `ALLOC_PER_BYTE · len + ALLOC_BASE` bytes live at its peak.
pub const ALLOC_PER_BYTE: usize = 64;
/// Allocation bound, fixed part (tokenizer and model scaffolding): 16 MiB.
pub const ALLOC_BASE: usize = 16 << 20;

/// The most heap a parse of `len` bytes may hold at once.
pub fn alloc_bound(len: usize) -> usize {
    len.saturating_mul(ALLOC_PER_BYTE)
        .saturating_add(ALLOC_BASE)
}

/// Why an input failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The parser panicked (message, location).
    Panic(String),
    /// The parse held more than [`alloc_bound`] bytes at its peak.
    Alloc {
        /// Peak live bytes.
        peak: usize,
        /// The bound.
        bound: usize,
    },
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Panic(m) => write!(f, "panic: {m}"),
            Self::Alloc { peak, bound } => {
                write!(
                    f,
                    "allocated {peak} bytes at the peak, over the bound {bound}"
                )
            }
        }
    }
}

/// What one input did.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// Accepted or rejected (meaningless when `failure` is set).
    pub outcome: Outcome,
    /// Peak live heap bytes during the parse.
    pub peak: usize,
    /// Wall time of the parse.
    pub time: Duration,
    /// Set when the input is a bug.
    pub failure: Option<Failure>,
}

thread_local! {
    static FUZZING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    static PANIC_MSG: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once) a panic hook that records the message of a panic inside a fuzzed parse
/// instead of printing it; other panics go to the previous hook.
fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if FUZZING.with(std::cell::Cell::get) {
                let msg = match info.payload().downcast_ref::<&str>() {
                    Some(s) => (*s).to_string(),
                    None => info
                        .payload()
                        .downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| "(non-string payload)".into()),
                };
                let at = info
                    .location()
                    .map(|l| format!(" at {}:{}", l.file(), l.line()))
                    .unwrap_or_default();
                PANIC_MSG.with(|m| *m.borrow_mut() = Some(format!("{msg}{at}")));
            } else {
                prev(info);
            }
        }));
    });
}

/// Parses one input under the harness. `seed` and `index` only name it in the abort message
/// of the allocator.
pub fn check(parser: Parser, bytes: &[u8], seed: u64, index: u64) -> Verdict {
    install_hook();
    PANIC_MSG.with(|m| m.borrow_mut().take());
    FUZZING.with(|f| f.set(true));
    let guard = Guard::new(parser.name(), seed, index);
    let start = Instant::now();
    let result = catch_unwind(AssertUnwindSafe(|| parse(parser, bytes)));
    let time = start.elapsed();
    let peak = guard.finish();
    FUZZING.with(|f| f.set(false));
    let bound = alloc_bound(bytes.len());
    // A panic that a library caught and turned into an error (the tokenizer guard) still
    // counts: the guard is a safety net, the input must be rejected before it panics.
    let caught = PANIC_MSG.with(|m| m.borrow_mut().take());
    let (outcome, failure) = match (result, caught) {
        (Ok(o), Some(msg)) => (o, Some(Failure::Panic(format!("(caught inside) {msg}")))),
        (Ok(o), None) if peak > bound => (o, Some(Failure::Alloc { peak, bound })),
        (Ok(o), None) => (o, None),
        (Err(_), msg) => (
            Outcome::Rejected,
            Some(Failure::Panic(msg.unwrap_or_else(|| "(no message)".into()))),
        ),
    };
    Verdict {
        outcome,
        peak,
        time,
        failure,
    }
}

/// Where the regression fixtures of `parser` live under `root` (`root/<parser>/`).
pub fn fixture_dir(root: &Path, parser: Parser) -> PathBuf {
    root.join(parser.name())
}

/// Saves `bytes` as `root/<parser>/crash-<fnv1a>.bin`; returns the path.
pub fn save_fixture(root: &Path, parser: Parser, bytes: &[u8]) -> std::io::Result<PathBuf> {
    let dir = fixture_dir(root, parser);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("crash-{:016x}.bin", fnv1a(bytes)));
    std::fs::write(&path, bytes)?;
    Ok(path)
}

/// One failing input of a campaign.
#[derive(Debug, Clone)]
pub struct Found {
    /// Its index in the run.
    pub index: u64,
    /// What went wrong.
    pub failure: Failure,
    /// Where it was saved, if it was.
    pub saved: Option<PathBuf>,
}

/// A campaign's figures for one parser.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Inputs run.
    pub inputs: u64,
    /// Inputs accepted.
    pub accepted: u64,
    /// Wall time.
    pub elapsed: Duration,
    /// Failing inputs (at most [`MAX_FOUND`] kept).
    pub found: Vec<Found>,
    /// Failing inputs in all.
    pub failures: u64,
    /// Largest peak allocation, and the input length it came with.
    pub max_peak: (usize, usize),
    /// Largest `peak / bound` seen.
    pub max_bound_fraction: f64,
    /// Slowest input: time and index.
    pub slowest: (Duration, u64),
}

/// Failing inputs kept per campaign.
pub const MAX_FOUND: usize = 64;

/// How long a campaign runs.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    /// Inputs `0..n`.
    Inputs(u64),
    /// Until this instant.
    Until(Instant),
}

/// Runs `parser`'s inputs from `seed` on `threads` threads until `budget` is spent; failing
/// inputs are saved under `save` (as `<parser>/crash-<hash>.bin`) when it is given.
pub fn campaign(
    corpus: &Corpus,
    seed: u64,
    budget: Budget,
    threads: usize,
    save: Option<&Path>,
) -> Stats {
    assert!(
        installed(),
        "ternary_fuzz::alloc::CountingAlloc is not the global allocator of this program"
    );
    let parser = corpus.parser;
    let next = AtomicU64::new(0);
    let stats = Mutex::new(Stats::default());
    let start = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| {
                let mut local = Stats::default();
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    match budget {
                        Budget::Inputs(n) if index >= n => break,
                        Budget::Until(t) if Instant::now() >= t => break,
                        _ => {}
                    }
                    let bytes = corpus.input(seed, index);
                    let v = check(parser, &bytes, seed, index);
                    local.inputs += 1;
                    if v.outcome == Outcome::Accepted && v.failure.is_none() {
                        local.accepted += 1;
                    }
                    if v.peak > local.max_peak.0 {
                        local.max_peak = (v.peak, bytes.len());
                    }
                    let frac = v.peak as f64 / alloc_bound(bytes.len()) as f64;
                    local.max_bound_fraction = local.max_bound_fraction.max(frac);
                    if v.time > local.slowest.0 {
                        local.slowest = (v.time, index);
                    }
                    if let Some(failure) = v.failure {
                        local.failures += 1;
                        if local.found.len() < MAX_FOUND {
                            let saved =
                                save.and_then(|root| save_fixture(root, parser, &bytes).ok());
                            local.found.push(Found {
                                index,
                                failure,
                                saved,
                            });
                        }
                    }
                }
                let mut s = stats.lock().unwrap_or_else(|e| e.into_inner());
                s.inputs += local.inputs;
                s.accepted += local.accepted;
                s.failures += local.failures;
                s.found.extend(local.found);
                s.found.truncate(MAX_FOUND);
                if local.max_peak.0 > s.max_peak.0 {
                    s.max_peak = local.max_peak;
                }
                s.max_bound_fraction = s.max_bound_fraction.max(local.max_bound_fraction);
                if local.slowest.0 > s.slowest.0 {
                    s.slowest = local.slowest;
                }
            });
        }
    });
    let mut s = stats.into_inner().unwrap_or_else(|e| e.into_inner());
    s.elapsed = start.elapsed();
    s.found.sort_by_key(|f| f.index);
    s
}

/// Every regression fixture under `root`: `(parser, path)` for `root/<parser>/*.bin`.
pub fn fixtures(root: &Path) -> Vec<(Parser, PathBuf)> {
    let mut out = Vec::new();
    for p in Parser::ALL {
        let Ok(entries) = std::fs::read_dir(fixture_dir(root, p)) else {
            continue;
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|f| f.extension().is_some_and(|x| x == "bin"))
            .collect();
        files.sort();
        out.extend(files.into_iter().map(|f| (p, f)));
    }
    out
}
