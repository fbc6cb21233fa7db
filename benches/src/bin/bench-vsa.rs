//! `bench-vsa [--quick] [--out DIR]`: throughput of the hypervector operations against a naive
//! `Vec<i8>` implementation in the same run, and the capacity table (measured vs theory).
//!
//! Writes `DIR/vsa.md` and `DIR/vsa.json` (default `DIR = target/bench-report`) and prints the
//! markdown. Run with `cargo run --release -p ternary-bench --bin bench-vsa -- --out DIR`.

use std::fmt::Write as _;
use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use serde_json::{Value, json};
use ternary_core::kernels::Level;
use ternary_vsa::capacity;
use ternary_vsa::experiment::{KeyValueExperiment, Readout};
use ternary_vsa::reference as naive;
use ternary_vsa::{
    BinaryHv, CapacityModel, CountBundle, ExplainAway, ItemMemory, TernaryHv, basis,
};

/// Dimension of every throughput measurement.
const D: usize = 10_000;
/// Items bundled in the bundle benchmark.
const BUNDLE_K: usize = 500;
/// Codebook size of the similarity benchmark.
const CODEBOOK: usize = 10_000;
/// Codebook size of the capacity experiments.
const CAP_M: usize = 500;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

struct Args {
    quick: bool,
    out: PathBuf,
}

fn parse_args() -> Res<Args> {
    let mut quick = false;
    let mut out = PathBuf::from("target/bench-report");
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => quick = true,
            "--out" => out = it.next().ok_or("--out needs a directory")?.into(),
            other => return Err(format!("unknown argument `{other}`").into()),
        }
    }
    Ok(Args { quick, out })
}

/// Seconds per call of `f`: the best of three runs of at least `budget / 3` seconds each.
fn time_op(budget: f64, mut f: impl FnMut()) -> f64 {
    f();
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t0 = Instant::now();
        let mut n = 0u64;
        loop {
            f();
            n += 1;
            let e = t0.elapsed().as_secs_f64();
            if e >= budget / 3.0 {
                best = best.min(e / n as f64);
                break;
            }
        }
    }
    best
}

/// One throughput row.
struct Row {
    op: String,
    implementation: &'static str,
    threads: usize,
    /// Seconds per call.
    secs: f64,
    /// Vectors processed per call.
    vectors: f64,
    /// Bytes moved per call (read + written).
    bytes: f64,
}

impl Row {
    fn vectors_per_s(&self) -> f64 {
        self.vectors / self.secs
    }
    fn gb_per_s(&self) -> f64 {
        self.bytes / self.secs / 1e9
    }
}

fn plane_bytes() -> f64 {
    (D.div_ceil(32) * 4) as f64
}

fn throughput(budget: f64) -> Res<Vec<Row>> {
    let threads = rayon::current_num_threads();
    let pb = plane_bytes();
    let mut rows = Vec::new();
    let mut push = |op: &str, implementation, threads, secs, vectors, bytes| {
        eprintln!("  {op:40} {implementation:8} {:10.3} µs", secs * 1e6);
        rows.push(Row {
            op: op.to_string(),
            implementation,
            threads,
            secs,
            vectors,
            bytes,
        });
    };

    // Bind: two inputs read, one output written.
    let a = BinaryHv::random(D, 1)?;
    let b = BinaryHv::random(D, 2)?;
    let mut acc = a.clone();
    let t = time_op(budget, || {
        acc.bind_assign(black_box(&b)).ok();
        black_box(&acc);
    });
    push("bind (binary XOR, in place)", "planes", 1, t, 1.0, 3.0 * pb);
    let t = time_op(budget, || {
        black_box(black_box(&a).bind(black_box(&b)).ok());
    });
    push(
        "bind (binary XOR, new vector)",
        "planes",
        1,
        t,
        1.0,
        3.0 * pb,
    );
    let (ai, bi) = (naive::binary_to_i8(&a), naive::binary_to_i8(&b));
    let t = time_op(budget, || {
        black_box(naive::xor_bind_i8(black_box(&ai), black_box(&bi)));
    });
    push(
        "bind (binary XOR, new vector)",
        "naive i8",
        1,
        t,
        1.0,
        3.0 * D as f64,
    );
    let x = TernaryHv::random_sparse(D, 0.7, 3)?;
    let y = TernaryHv::random_bipolar(D, 4)?;
    let t = time_op(budget, || {
        black_box(black_box(&x).bind(black_box(&y)).ok());
    });
    push(
        "bind (ternary product, new vector)",
        "planes",
        1,
        t,
        1.0,
        6.0 * pb,
    );
    let (xi, yi) = (naive::ternary_to_i8(&x), naive::ternary_to_i8(&y));
    let t = time_op(budget, || {
        black_box(naive::mul_i8(black_box(&xi), black_box(&yi)));
    });
    push(
        "bind (ternary product, new vector)",
        "naive i8",
        1,
        t,
        1.0,
        3.0 * D as f64,
    );

    // Bundle k = 500 into counts, then the majority readout.
    let items = basis::random_binary(BUNDLE_K, D, 5)?;
    let k = BUNDLE_K as f64;
    let t = time_op(budget, || {
        let mut c = CountBundle::new(D).ok();
        if let Some(c) = c.as_mut() {
            let _ = c.add_many(black_box(&items));
            black_box(c.majority(7));
        }
    });
    push(
        "bundle k=500 + majority",
        "planes",
        1,
        t,
        k,
        k * pb + 4.0 * D as f64,
    );
    let t = time_op(budget, || {
        let mut c = CountBundle::new(D).ok();
        if let Some(c) = c.as_mut() {
            for v in &items {
                let _ = c.add(black_box(v));
            }
            black_box(c.majority(7));
        }
    });
    push(
        "bundle k=500 + majority",
        "planes (one add per vector)",
        1,
        t,
        k,
        k * pb + 4.0 * D as f64,
    );
    let items_i8: Vec<Vec<i8>> = items.iter().map(naive::binary_to_i8).collect();
    let ties = naive::binary_to_i8(&BinaryHv::random(D, 7)?);
    let t = time_op(budget, || {
        let sums = naive::bundle_i8(black_box(&items_i8), D);
        black_box(naive::majority_i8(&sums, &ties));
    });
    push(
        "bundle k=500 + majority",
        "naive i8",
        1,
        t,
        k,
        k * D as f64 + 4.0 * D as f64,
    );

    // Similarity of one query against M = 10,000 entries.
    let codebook = basis::random_binary(CODEBOOK, D, 8)?;
    let memory = ItemMemory::new(codebook.clone())?;
    let q = BinaryHv::random(D, 9)?;
    let m = CODEBOOK as f64;
    let t = time_op(budget, || {
        let mut best = (i64::MIN, 0usize);
        for (i, c) in codebook.iter().enumerate() {
            let s = q.dot(c).unwrap_or(i64::MIN);
            if s > best.0 {
                best = (s, i);
            }
        }
        black_box(best);
    });
    push(
        "similarity: 1 query x 10,000 entries",
        "planes",
        1,
        t,
        m,
        m * pb,
    );
    let t = time_op(budget, || {
        black_box(memory.nearest(black_box(&q)).ok());
    });
    push(
        "similarity: 1 query x 10,000 entries",
        "planes",
        threads,
        t,
        m,
        m * pb,
    );
    let queries = basis::random_binary(64, D, 10)?;
    let t = time_op(budget, || {
        black_box(memory.top_k_batch(black_box(&queries), 5).ok());
    });
    push(
        "similarity: 64 queries x 10,000 (top-5)",
        "planes",
        threads,
        t,
        64.0 * m,
        64.0 * m * pb,
    );
    let code_i8: Vec<Vec<i8>> = codebook.iter().map(naive::binary_to_i8).collect();
    let qi = naive::binary_to_i8(&q);
    let t = time_op(budget, || {
        let mut best = (i64::MIN, 0usize);
        for (i, c) in code_i8.iter().enumerate() {
            let s = naive::dot_i8(black_box(&qi), c);
            if s > best.0 {
                best = (s, i);
            }
        }
        black_box(best);
    });
    push(
        "similarity: 1 query x 10,000 entries",
        "naive i8",
        1,
        t,
        m,
        m * D as f64,
    );

    // Count query: a k = 500 bundle unbound with a key, against the 10,000 entries.
    let mut bundle = CountBundle::new(D)?;
    for (key, v) in basis::random_binary(BUNDLE_K, D, 11)?.iter().zip(&codebook) {
        let _ = bundle.add(&key.bind(v)?)?;
    }
    let key = BinaryHv::random(D, 11)?;
    let sliced = bundle.sliced();
    eprintln!("  (count query: {} bit planes)", sliced.passes());
    let t = time_op(budget, || {
        if let Ok(u) = sliced.bind(black_box(&key)) {
            black_box(memory.top_k_sliced(&u, 1).ok());
        }
    });
    push(
        "count query (k=500 bundle) x 10,000",
        "sliced",
        threads,
        t,
        m,
        m * pb,
    );
    let unbound = bundle.bind(&key)?;
    let t = time_op(budget, || {
        let mut best = (i64::MIN, 0usize);
        for (i, c) in code_i8.iter().enumerate() {
            let s = naive::count_dot_i8(black_box(unbound.sums()), c);
            if s > best.0 {
                best = (s, i);
            }
        }
        black_box(best);
    });
    push(
        "count query (k=500 bundle) x 10,000",
        "naive i8",
        1,
        t,
        m,
        m * D as f64,
    );
    Ok(rows)
}

/// One capacity row: `k` and the measured/theory accuracies.
struct CapRow {
    k: usize,
    queries: u64,
    count: f64,
    count_theory: f64,
    majority: f64,
    majority_theory: f64,
}

fn capacity_table(quick: bool) -> Res<Vec<CapRow>> {
    let ks: Vec<usize> = if quick {
        vec![100, 300, 500, 700, 1000]
    } else {
        (100..=1000).step_by(100).collect()
    };
    let target_queries: usize = if quick { 1000 } else { 10_000 };
    let mut rows = Vec::new();
    for k in ks {
        let trials = target_queries.div_ceil(k);
        let run = |readout| {
            KeyValueExperiment {
                dim: D,
                pairs: k,
                codebook_size: CAP_M,
                trials,
                seed: 0xC0FFEE + k as u64,
                readout,
            }
            .run()
        };
        let count = run(Readout::Counts)?;
        let majority = run(Readout::Majority)?;
        let row = CapRow {
            k,
            queries: count.queries,
            count: count.accuracy(),
            count_theory: CapacityModel::CountBundle.accuracy(D, k, CAP_M),
            majority: majority.accuracy(),
            majority_theory: CapacityModel::Majority.accuracy(D, k, CAP_M),
        };
        eprintln!(
            "  k={k:5}: count {:.4} (theory {:.4}), majority {:.4} (theory {:.4})",
            row.count, row.count_theory, row.majority, row.majority_theory
        );
        rows.push(row);
    }
    Ok(rows)
}

/// One iterative-cleanup row.
struct IterRow {
    k: usize,
    queries: u64,
    accuracy: f64,
    one_shot_theory: f64,
    secs_per_trial: f64,
}

/// Sweeps `k` upward until explain-away accuracy drops below 0.90.
fn iterative_sweep(quick: bool) -> Res<(Vec<IterRow>, usize)> {
    let step = if quick { 250 } else { 100 };
    let trials = if quick { 1 } else { 2 };
    let mut rows = Vec::new();
    let mut best = 0;
    let mut k = 1000;
    loop {
        let t0 = Instant::now();
        let m = KeyValueExperiment {
            dim: D,
            pairs: k,
            codebook_size: CAP_M,
            trials,
            seed: 0xBEEF + k as u64,
            readout: Readout::ExplainAway(ExplainAway::default()),
        }
        .run()?;
        let secs = t0.elapsed().as_secs_f64() / trials as f64;
        let row = IterRow {
            k,
            queries: m.queries,
            accuracy: m.accuracy(),
            one_shot_theory: CapacityModel::CountBundle.accuracy(D, k, CAP_M),
            secs_per_trial: secs,
        };
        eprintln!(
            "  explain-away k={k:5}: {:.4} (one-shot theory {:.4}), {secs:.1} s/trial",
            row.accuracy, row.one_shot_theory
        );
        let pass = row.accuracy >= 0.90;
        rows.push(row);
        if !pass || k >= 20_000 {
            break;
        }
        best = k;
        k += step;
    }
    Ok((rows, best))
}

fn main() -> Res<()> {
    let args = parse_args()?;
    let budget = if args.quick { 0.15 } else { 1.0 };
    let threads = rayon::current_num_threads();
    let machine = format!(
        "{} ({} threads, kernels: {})",
        ternary_bench::machine::cpu_model(),
        threads,
        Level::detect()
    );
    let command = format!(
        "cargo run --release -p ternary-bench --bin bench-vsa --{}",
        if args.quick { " --quick" } else { "" }
    );
    eprintln!("bench-vsa on {machine}\nthroughput at D = {D}:");
    let rows = throughput(budget)?;
    eprintln!("capacity, D = {D}, M = {CAP_M}:");
    let caps = capacity_table(args.quick)?;
    eprintln!("iterative cleanup:");
    let (iters, best_k) = iterative_sweep(args.quick)?;

    // Markdown.
    let mut md = String::new();
    writeln!(md, "# ternary-vsa benchmark\n")?;
    writeln!(md, "Machine: {machine}. Command: `{command}`.\n")?;
    writeln!(
        md,
        "## Throughput at D = {D}\n\nGB/s counts the bytes an operation reads and writes \
         (planes: {} B per binary vector; naive: 1 byte per component). Ratio = naive time / \
         planes time for the same operation and thread count.\n",
        plane_bytes()
    )?;
    writeln!(
        md,
        "| operation | implementation | threads | time/call | vectors/s | GB/s | speed-up vs naive |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|")?;
    let naive_time = |op: &str| {
        rows.iter()
            .find(|r| r.op == op && r.implementation == "naive i8")
            .map(|r| r.secs)
    };
    let mut json_rows = Vec::new();
    for r in &rows {
        let ratio = naive_time(&r.op)
            .filter(|_| r.implementation != "naive i8")
            .map(|n| n / r.secs);
        writeln!(
            md,
            "| {} | {} | {} | {:.2} µs | {:.3e} | {:.2} | {} |",
            r.op,
            r.implementation,
            r.threads,
            r.secs * 1e6,
            r.vectors_per_s(),
            r.gb_per_s(),
            ratio.map_or("—".into(), |x| format!("{x:.1}×"))
        )?;
        json_rows.push(json!({
            "op": r.op, "implementation": r.implementation, "threads": r.threads,
            "seconds_per_call": r.secs, "vectors_per_s": r.vectors_per_s(),
            "gb_per_s": r.gb_per_s(), "speedup_vs_naive": ratio,
        }));
    }
    writeln!(
        md,
        "\n## Capacity: D = {D}, M = {CAP_M}, k key–value pairs\n\nOne-shot retrieval accuracy, \
         measured (seeded Monte Carlo) vs the model `p = ∫φ(h)·Φ(s + ρh)^(M−1) dh` \
         (count: `s = √(D/k)`; majority: `s = √D·c_k ≈ √(2D/(πk))`).\n"
    )?;
    writeln!(
        md,
        "| k | queries | count measured | count theory | majority measured | majority theory |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---:|---:|")?;
    let mut json_caps = Vec::new();
    for c in &caps {
        writeln!(
            md,
            "| {} | {} | {:.4} | {:.4} | {:.4} | {:.4} |",
            c.k, c.queries, c.count, c.count_theory, c.majority, c.majority_theory
        )?;
        json_caps.push(json!({
            "k": c.k, "queries": c.queries, "count_measured": c.count,
            "count_theory": c.count_theory, "majority_measured": c.majority,
            "majority_theory": c.majority_theory,
        }));
    }
    writeln!(
        md,
        "\n## Caps: largest k with model accuracy ≥ target (D = {D}, M = {CAP_M})\n\n\
         From `capacity::max_items`; a `CountBundle` with a `CapacityLimit` rejects or flags \
         items past the cap.\n"
    )?;
    writeln!(md, "| target | count bundle | majority |")?;
    writeln!(md, "|---:|---:|---:|")?;
    let mut json_limits = Vec::new();
    for target in [0.99, 0.95, 0.9, 0.5] {
        let count = capacity::max_items(CapacityModel::CountBundle, D, CAP_M, target)?;
        let maj = capacity::max_items(CapacityModel::Majority, D, CAP_M, target)?;
        writeln!(md, "| {target} | {count} | {maj} |")?;
        json_limits.push(json!({ "target": target, "count": count, "majority": maj }));
    }
    let ea = ExplainAway::default();
    writeln!(
        md,
        "\n## Iterative cleanup (explaining away)\n\nAccept fraction {}, up to {} refinement \
         sweeps. Largest k tried with accuracy ≥ 0.90: **{best_k}**.\n",
        ea.accept_fraction, ea.refine_sweeps
    )?;
    writeln!(
        md,
        "| k | queries | accuracy | one-shot theory | seconds per trial |"
    )?;
    writeln!(md, "|---:|---:|---:|---:|---:|")?;
    let mut json_iters = Vec::new();
    for r in &iters {
        writeln!(
            md,
            "| {} | {} | {:.4} | {:.4} | {:.2} |",
            r.k, r.queries, r.accuracy, r.one_shot_theory, r.secs_per_trial
        )?;
        json_iters.push(json!({
            "k": r.k, "queries": r.queries, "accuracy": r.accuracy,
            "one_shot_theory": r.one_shot_theory, "seconds_per_trial": r.secs_per_trial,
        }));
    }
    let report: Value = json!({
        "machine": machine, "command": command, "quick": args.quick, "dim": D,
        "throughput": json_rows,
        "capacity": { "codebook_size": CAP_M, "rows": json_caps, "caps": json_limits },
        "iterative_cleanup": {
            "accept_fraction": ea.accept_fraction, "refine_sweeps": ea.refine_sweeps,
            "largest_k_at_0_90": best_k, "rows": json_iters,
        },
    });
    std::fs::create_dir_all(&args.out)?;
    std::fs::write(args.out.join("vsa.md"), &md)?;
    std::fs::write(
        args.out.join("vsa.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    print!("{md}");
    Ok(())
}
