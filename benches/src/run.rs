//! The report run: builds the inputs, checks every kernel against a dense reference, times it,
//! and collects a [`Report`].
//!
//! Per shape: one random ternary matrix `m`, its dequantized `f32` weights `W = s ⊙ t` and
//! their `f16` rounding. Per batch `n`: random activations `x`, their int8 quantization `q`
//! and two references computed by the dense `f32` baseline and spot-checked against `f64`
//! dot products: `y = x · Wᵀ` (for the `f32` kernels) and `y_q = x_q · Wᵀ` with
//! `x_q[j, c] = s_j · q[j, c]` (for the int8 kernels, which then agree up to `f32` rounding).
//! Every kernel's first call in every case is compared with its reference (outputs poisoned
//! with NaN first); a kernel that fails gets [`Outcome::Failed`] and is never timed.

use std::hint::black_box;
use std::time::Instant;

use half::f16;
use rayon::ThreadPool;
use ternary_core::kernels::{self, Level};
use ternary_core::{QuantizedActivations, TernaryMatrix};

use crate::baseline::{Dims, from_f16, matmul_f16, matmul_f32, parallelism, to_f16};
use crate::check::{guard, spot_check_dense};
use crate::data::{random_activations, random_ternary};
use crate::error::{BenchError, Result};
use crate::format::WeightFormat;
use crate::machine;
use crate::report::{Case, KernelKind, KernelRun, KernelSpec, Outcome, Regime, Report, RunInfo};
use crate::timing::{Budget, measure};

/// Relative error allowed for ternary kernels against the dense `f32` reference (different
/// summation order in `f32`; a wrong tile or row gives errors of order 1e-2 or more).
pub const TOL_TERNARY: f64 = 1e-4;
/// Relative error allowed for the dense `f32` baseline against the reference.
pub const TOL_DENSE_F32: f64 = 1e-4;
/// Relative error allowed for the dense `f16` baseline (weights, activations and output
/// rounded to `f16`, `2^-11` relative each).
pub const TOL_DENSE_F16: f64 = 1e-2;
/// Entry error allowed in the `f64` spot check of the reference, relative to `Σ |terms|`.
pub const TOL_SPOT: f64 = 1e-5;

/// Signature of a ternary `f32`-activation GEMM at a level.
pub type GemmF32Fn =
    fn(Level, &TernaryMatrix, &[f32], usize, &mut [f32]) -> ternary_core::Result<()>;
/// Signature of a ternary int8-activation GEMM at a level.
pub type GemmI8Fn =
    fn(Level, &TernaryMatrix, &QuantizedActivations, &mut [f32]) -> ternary_core::Result<()>;

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// `(rows, cols)` shapes (out × in).
    pub shapes: Vec<(usize, usize)>,
    /// Batch sizes.
    pub ns: Vec<usize>,
    /// Thread counts.
    pub threads: Vec<usize>,
    /// Regimes.
    pub regimes: Vec<Regime>,
    /// Timing of each kernel in each case.
    pub budget: Budget,
    /// Scalar kernels run only for `n ≤ scalar_max_n` (they are slow; skipped above).
    pub scalar_max_n: usize,
    /// AVX2 kernels, when AVX2 is not the detected level, run only for `n ≤ avx2_max_n`.
    pub avx2_max_n: usize,
    /// Secondary kernels (scalar, AVX2 when it is not the detected level) are skipped when
    /// their checked call takes longer than this many seconds.
    pub secondary_max_call_s: f64,
    /// Also measure AVX2 kernels when the detected level is higher.
    pub avx2: bool,
    /// Streaming: each kernel rotates among copies of its weights totalling at least this.
    pub streaming_bytes: usize,
    /// Buffer size for the memory bandwidth measurement.
    pub bandwidth_bytes: usize,
    /// Whether this is the `--quick` plan (recorded in the report).
    pub quick: bool,
    /// Seed of all random data.
    pub seed: u64,
    /// The ternary `f32` GEMM under test (normally [`kernels::gemm_f32_with`]).
    pub gemm_f32: GemmF32Fn,
    /// The ternary int8 GEMM under test (normally [`kernels::gemm_i8_with`]).
    pub gemm_i8: GemmI8Fn,
}

/// Llama-7B layer shapes (out × in): attention, MLP up/gate, MLP down, and Mistral/Llama-3 MLP.
pub const LLAMA_SHAPES: [(usize, usize); 4] =
    [(4096, 4096), (11008, 4096), (4096, 11008), (4096, 14336)];

/// The smallest streaming footprint, whatever the cache: 600 MB.
pub const MIN_STREAMING_BYTES: usize = 600_000_000;

/// Streaming footprint of this host: [`streaming_bytes_for`] its L3 size (sysfs).
pub fn streaming_bytes() -> usize {
    streaming_bytes_for(machine::l3_bytes())
}

/// Streaming footprint for a last-level cache of `l3` bytes (`None`: unknown):
/// `max(600 MB, 2 · L3)`, so at least 600 MB and at least twice the cache.
pub fn streaming_bytes_for(l3: Option<usize>) -> usize {
    MIN_STREAMING_BYTES.max(l3.unwrap_or(0).saturating_mul(2))
}

/// Thread counts to measure on a host with `cpus` logical CPUs: 1, 2 and all of them, each at
/// most `cpus`, without repeats (`[1]` on a 1-CPU host, `[1, 2]` on our 2-core hosts).
pub fn thread_counts(cpus: usize) -> Vec<usize> {
    let mut t: Vec<usize> = [1, 2, cpus]
        .into_iter()
        .filter(|&t| t >= 1 && t <= cpus.max(1))
        .collect();
    t.dedup();
    t
}

impl Plan {
    /// The full run: every shape, n = 1, 8, 512, threads [`thread_counts`], hot and streaming; scalar
    /// and AVX2 (when not the detected level) kernels skipped at n = 512.
    pub fn full() -> Self {
        Self {
            shapes: LLAMA_SHAPES.to_vec(),
            ns: vec![1, 8, 512],
            threads: thread_counts(machine::logical_cpus()),
            regimes: vec![Regime::Hot, Regime::Streaming],
            budget: Budget {
                warmup: 1,
                min_reps: 5,
                max_reps: 200,
                max_seconds: 1.0,
            },
            scalar_max_n: 64,
            avx2_max_n: 8,
            secondary_max_call_s: 3.0,
            avx2: true,
            streaming_bytes: streaming_bytes(),
            bandwidth_bytes: streaming_bytes().max(1 << 30),
            quick: false,
            seed: 0x7E57_BE4C,
            gemm_f32: kernels::gemm_f32_with,
            gemm_i8: kernels::gemm_i8_with,
        }
    }

    /// The `--quick` run (under two minutes on 2 cores): 4096×14336 and 4096×4096, n = 1, 8
    /// and 64, both regimes, the same threads, fewer repetitions, scalar only at n = 1 and
    /// AVX2 (when not the detected level) only at n ≤ 8.
    pub fn quick() -> Self {
        Self {
            shapes: vec![(4096, 14336), (4096, 4096)],
            ns: vec![1, 8, 64],
            budget: Budget {
                warmup: 1,
                min_reps: 3,
                max_reps: 30,
                max_seconds: 0.1,
            },
            scalar_max_n: 1,
            avx2_max_n: 8,
            secondary_max_call_s: 2.0,
            bandwidth_bytes: streaming_bytes().max(1 << 29),
            quick: true,
            ..Self::full()
        }
    }

    /// Kernels measured in every case, in column order: dense f32, dense f16, scalar
    /// f32/i8, detected-level f32/i8, then AVX2 f32/i8 if requested and distinct.
    pub fn kernels(&self, detected: Level, available: &[Level]) -> Vec<KernelSpec> {
        let mut k = vec![KernelSpec::DENSE_F32, KernelSpec::DENSE_F16];
        let mut levels = vec![Level::Scalar, detected];
        if self.avx2 && available.contains(&Level::Avx2) {
            levels.push(Level::Avx2);
        }
        levels.dedup();
        let mut seen = Vec::new();
        for l in levels {
            if !seen.contains(&l) {
                seen.push(l);
                k.push(KernelSpec::ternary_f32(l));
                k.push(KernelSpec::ternary_i8(l));
            }
        }
        k
    }
}

/// Inputs of one batch size on one shape, and their references.
struct Batch {
    n: usize,
    x: Vec<f32>,
    x16: Vec<f16>,
    q: QuantizedActivations,
    y_ref: Vec<f32>,
    y_ref_q: Vec<f32>,
}

/// The weights of one shape: `copies` of each format (copy 0 is the hot one).
struct Weights {
    planes: Vec<TernaryMatrix>,
    f32: Vec<Vec<f32>>,
    f16: Vec<Vec<f16>>,
}

impl Weights {
    fn copies(&self, format: WeightFormat, regime: Regime) -> usize {
        match regime {
            Regime::Hot => 1,
            Regime::Streaming => match format {
                WeightFormat::F32 => self.f32.len(),
                WeightFormat::F16 => self.f16.len(),
                WeightFormat::Planes | WeightFormat::Packed => self.planes.len(),
            },
        }
    }
}

fn copies_for(bytes: usize, target: usize) -> usize {
    target.div_ceil(bytes.max(1)).max(2)
}

/// `x_q[j, c] = s_j · q[j, c]`, the activations the int8 kernels effectively multiply.
fn dequantize_activations(q: &QuantizedActivations) -> Vec<f32> {
    let (n, cols) = (q.n(), q.cols());
    let mut out = Vec::with_capacity(n * cols);
    for j in 0..n {
        let s = q.scales()[j];
        out.extend(q.row(j)[..cols].iter().map(|&v| f32::from(v) * s));
    }
    out
}

/// Runs one kernel call on weight copy `copy`, writing `y` (or `y16` for dense f16).
struct Runner<'a> {
    plan: &'a Plan,
    w: &'a Weights,
    b: &'a Batch,
    rows: usize,
    cols: usize,
    threads: usize,
}

impl Runner<'_> {
    fn dims(&self) -> Dims {
        Dims::new(self.rows, self.cols, self.b.n)
    }

    fn call(&self, spec: KernelSpec, copy: usize, y: &mut [f32], y16: &mut [f16]) -> Result<()> {
        let (b, par) = (self.b, parallelism(self.threads));
        let level = spec.level.unwrap_or(Level::Scalar);
        match spec.kind {
            KernelKind::DenseF32 => matmul_f32(self.dims(), &self.w.f32[copy], &b.x, y, par),
            KernelKind::DenseF16 => matmul_f16(self.dims(), &self.w.f16[copy], &b.x16, y16, par),
            KernelKind::TernaryF32 => Ok((self.plan.gemm_f32)(
                level,
                &self.w.planes[copy],
                &b.x,
                b.n,
                y,
            )?),
            KernelKind::TernaryI8 => Ok((self.plan.gemm_i8)(level, &self.w.planes[copy], &b.q, y)?),
        }
    }

    /// Checks one call against the reference, then times the kernel.
    fn measure(&self, spec: KernelSpec, regime: Regime) -> KernelRun {
        let copies = self.w.copies(spec.format(), regime);
        let run = |outcome| KernelRun {
            spec,
            copies,
            outcome,
        };
        let n = self.b.n;
        let detected = Level::detect();
        let max_n = match spec.level {
            Some(l) if l == detected => usize::MAX,
            Some(Level::Scalar) => self.plan.scalar_max_n,
            Some(Level::Avx2) => self.plan.avx2_max_n,
            _ => usize::MAX,
        };
        if n > max_n {
            return run(Outcome::Skipped(format!("n > {max_n}")));
        }
        let mut y = vec![f32::NAN; n * self.rows];
        let mut y16 = vec![
            f16::NAN;
            if spec.kind == KernelKind::DenseF16 {
                n * self.rows
            } else {
                0
            }
        ];
        let t0 = Instant::now();
        if let Err(e) = self.call(spec, 0, &mut y, &mut y16) {
            return run(Outcome::Failed(e.to_string()));
        }
        let first_call = t0.elapsed().as_secs_f64();
        let (reference, tol) = match spec.kind {
            KernelKind::DenseF32 => (&self.b.y_ref, TOL_DENSE_F32),
            KernelKind::DenseF16 => {
                y = from_f16(&y16);
                (&self.b.y_ref, TOL_DENSE_F16)
            }
            KernelKind::TernaryF32 => (&self.b.y_ref, TOL_TERNARY),
            KernelKind::TernaryI8 => (&self.b.y_ref_q, TOL_TERNARY),
        };
        let rel_err = match guard(&spec.id(), &y, reference, tol) {
            Ok(e) => e,
            Err(e) => return run(Outcome::Failed(e.to_string())),
        };
        let secondary = spec.is_ternary() && spec.level != Some(detected);
        if secondary && first_call > self.plan.secondary_max_call_s {
            return run(Outcome::Skipped(format!(
                "one call took {:.1} s",
                first_call
            )));
        }
        let mut budget = self.plan.budget;
        if first_call > 0.05 {
            budget.warmup = 0; // the checked call already warmed a long kernel up
        }
        if first_call > 1.0 {
            budget.min_reps = budget.min_reps.min(3);
        }
        let mut err = None;
        let stats = measure(&budget, |i| {
            if let Err(e) = self.call(spec, (i + 1) % copies, &mut y, &mut y16) {
                err.get_or_insert(e);
            }
            black_box(&mut y);
            black_box(&mut y16);
        });
        match (err, stats) {
            (Some(e), _) => run(Outcome::Failed(e.to_string())),
            (None, Some(stats)) => run(Outcome::Measured { stats, rel_err }),
            (None, None) => run(Outcome::Skipped("no repetitions".into())),
        }
    }
}

/// Gathers machine facts and measures read bandwidth with each thread count.
/// Read bandwidth `(threads, bytes/s)` with each pool, best of 3 passes over a fresh buffer.
fn measure_bandwidth(
    plan: &Plan,
    pools: &[(usize, ThreadPool)],
    log: &mut dyn FnMut(&str),
) -> Vec<(usize, f64)> {
    let buf = machine::bandwidth_buffer(plan.bandwidth_bytes);
    let bw: Vec<(usize, f64)> = pools
        .iter()
        .map(|(t, pool)| (*t, pool.install(|| machine::read_bandwidth(&buf, 3))))
        .collect();
    let text: Vec<String> = bw
        .iter()
        .map(|(t, b)| format!("{t} thread(s) {:.1} GB/s", b / 1e9))
        .collect();
    log(&format!(
        "memory read bandwidth ({} MB buffer): {}",
        plan.bandwidth_bytes >> 20,
        text.join(", ")
    ));
    bw
}

/// Gathers machine facts; `bandwidth` is the first measurement (refined at the end of the run).
fn run_info(plan: &Plan, bandwidth: Vec<(usize, f64)>) -> RunInfo {
    let b = &plan.budget;
    RunInfo {
        cpu: machine::cpu_model(),
        logical_cpus: machine::logical_cpus(),
        l3_bytes: machine::l3_bytes(),
        detected: Level::detect(),
        available: Level::available(),
        forced: Level::forced(),
        commit: machine::git_commit(),
        date: machine::utc_now(),
        quick: plan.quick,
        threads: plan.threads.clone(),
        bandwidth_samples: bandwidth.clone(),
        bandwidth,
        bandwidth_buffer_bytes: plan.bandwidth_bytes,
        streaming_bytes: plan.streaming_bytes,
        timing: format!(
            "Per kernel and case: one checked call, {} untimed warm-up call(s) if calls are \
             short (< 50 ms), then {}–{} timed calls (3 if a call takes > 1 s; more than the \
             minimum only while under {} s in total); median reported, minimum in bench.json.",
            b.warmup, b.min_reps, b.max_reps, b.max_seconds
        ),
    }
}

fn build_batch(
    w: &Weights,
    d: Dims,
    seed: u64,
    (pool, threads): (&ThreadPool, usize),
) -> Result<Batch> {
    let Dims { rows, cols, n } = d;
    let x = random_activations(n * cols, seed);
    let q = QuantizedActivations::quantize(&x, n, cols)?;
    let xq = dequantize_activations(&q);
    let (mut y_ref, mut y_ref_q) = (vec![f32::NAN; n * rows], vec![f32::NAN; n * rows]);
    pool.install(|| -> Result<()> {
        let par = parallelism(threads);
        matmul_f32(d, &w.f32[0], &x, &mut y_ref, par)?;
        matmul_f32(d, &w.f32[0], &xq, &mut y_ref_q, par)
    })?;
    let w0 = &w.f32[0];
    spot_check_dense("reference x·Wᵀ", d, (w0, &x, &y_ref), 32, TOL_SPOT)?;
    spot_check_dense("reference x_q·Wᵀ", d, (w0, &xq, &y_ref_q), 32, TOL_SPOT)?;
    Ok(Batch {
        n,
        x16: to_f16(&x),
        x,
        q,
        y_ref,
        y_ref_q,
    })
}

/// Runs the plan. `log` receives progress lines (the binary prints them to stderr).
pub fn run(plan: &Plan, log: &mut dyn FnMut(&str)) -> Result<Report> {
    let start = Instant::now();
    let mut pools = Vec::new();
    for &t in &plan.threads {
        pools.push((t, rayon::ThreadPoolBuilder::new().num_threads(t).build()?));
    }
    let (max_threads, ref_pool) = pools
        .iter()
        .max_by_key(|(t, _)| *t)
        .map(|(t, p)| (*t, p))
        .ok_or_else(|| BenchError::Args("no thread counts".into()))?;
    let mut info = run_info(plan, measure_bandwidth(plan, &pools, log));
    let specs = plan.kernels(info.detected, &info.available);
    let total = plan.shapes.len() * plan.ns.len() * plan.regimes.len() * pools.len();
    let mut cases = Vec::with_capacity(total);
    let mut shapes = Vec::new();
    for (si, &(rows, cols)) in plan.shapes.iter().enumerate() {
        let t0 = Instant::now();
        let m = random_ternary(rows, cols, plan.seed ^ si as u64)?;
        let t_rand = t0.elapsed().as_secs_f64();
        let scales = m.scales().values().len();
        shapes.push((rows, cols, scales));
        let w32 = m.dequantize();
        let t_deq = t0.elapsed().as_secs_f64();
        let w16 = to_f16(&w32);
        let t_f16 = t0.elapsed().as_secs_f64();
        let streaming = plan.regimes.contains(&Regime::Streaming);
        let count = |f: WeightFormat| {
            if streaming {
                copies_for(f.bytes(rows, cols, scales), plan.streaming_bytes)
            } else {
                1
            }
        };
        let (np, n32, n16) = (
            count(WeightFormat::Planes),
            count(WeightFormat::F32),
            count(WeightFormat::F16),
        );
        let w = Weights {
            planes: std::iter::repeat_n(m, np).collect(),
            f32: std::iter::repeat_n(w32, n32).collect(),
            f16: std::iter::repeat_n(w16, n16).collect(),
        };
        log(&format!(
            "{rows}×{cols}: built weights in {:.1} s (random {t_rand:.2}, dequantize {:.2}, f16 {:.2}; \
             {np} planes / {n32} f32 / {n16} f16 copies for streaming)",
            t0.elapsed().as_secs_f64(),
            t_deq - t_rand,
            t_f16 - t_deq
        ));
        for &n in &plan.ns {
            let seed = plan.seed ^ ((si as u64) << 32) ^ n as u64;
            let b = build_batch(&w, Dims::new(rows, cols, n), seed, (ref_pool, max_threads))?;
            for &regime in &plan.regimes {
                for (threads, pool) in &pools {
                    let runner = Runner {
                        plan,
                        w: &w,
                        b: &b,
                        rows,
                        cols,
                        threads: *threads,
                    };
                    let case = pool.install(|| {
                        let act_quant = measure(&plan.budget, |_| {
                            black_box(QuantizedActivations::quantize(&b.x, n, cols).ok());
                        });
                        let runs = specs.iter().map(|s| runner.measure(*s, regime)).collect();
                        Case {
                            rows,
                            cols,
                            n,
                            regime,
                            threads: *threads,
                            scales,
                            act_quant,
                            bandwidth: None, // set at the end of the run
                            runs,
                        }
                    });
                    log(&progress_line(&case, cases.len() + 1, total, start));
                    cases.push(case);
                }
            }
        }
    }
    // Other processes can depress one measurement; the floor uses the best seen, at the start
    // or at the end of the run.
    let end = measure_bandwidth(plan, &pools, log);
    info.bandwidth_samples.extend(end.iter().copied());
    for (t, b) in &mut info.bandwidth {
        if let Some((_, e)) = end.iter().find(|(te, _)| te == t) {
            *b = b.max(*e);
        }
    }
    for c in &mut cases {
        c.bandwidth = info
            .bandwidth
            .iter()
            .find(|(t, _)| *t == c.threads)
            .map(|(_, b)| *b);
    }
    Ok(Report {
        info,
        shapes,
        cases,
    })
}

fn progress_line(c: &Case, i: usize, total: usize, start: Instant) -> String {
    let parts: Vec<String> = c
        .runs
        .iter()
        .map(|r| match &r.outcome {
            Outcome::Measured { stats, .. } => format!(
                "{} {:.3} ms ({:.1} GFLOPS)",
                r.spec.id(),
                stats.median_s * 1e3,
                c.flops() / stats.median_s / 1e9
            ),
            Outcome::Skipped(_) => format!("{} skipped", r.spec.id()),
            Outcome::Failed(why) => format!("{} FAILED: {why}", r.spec.id()),
        })
        .collect();
    format!(
        "[{i}/{total} {:.0} s] {}×{} n={} {} t={}: {}",
        start.elapsed().as_secs_f64(),
        c.rows,
        c.cols,
        c.n,
        c.regime.name(),
        c.threads,
        parts.join(", ")
    )
}

/// One line per kernel whose correctness check (or call) failed.
pub fn failures(report: &Report) -> Vec<String> {
    report
        .cases
        .iter()
        .flat_map(|c| {
            c.runs.iter().filter_map(move |r| match &r.outcome {
                Outcome::Failed(why) => Some(format!(
                    "{} on {}×{} n={} {} t={}: {why}",
                    r.spec.id(),
                    c.rows,
                    c.cols,
                    c.n,
                    c.regime.name(),
                    c.threads
                )),
                _ => None,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny_plan() -> Plan {
        Plan {
            shapes: vec![(64, 128), (33, 65)],
            ns: vec![1, 3],
            threads: thread_counts(machine::logical_cpus()),
            regimes: vec![Regime::Hot, Regime::Streaming],
            budget: Budget {
                warmup: 1,
                min_reps: 2,
                max_reps: 3,
                max_seconds: 0.0,
            },
            scalar_max_n: 1,
            avx2_max_n: usize::MAX,
            secondary_max_call_s: 10.0,
            avx2: true,
            streaming_bytes: 100_000,
            bandwidth_bytes: 1 << 20,
            quick: true,
            ..Plan::full()
        }
    }

    #[test]
    fn run_should_check_and_time_every_kernel() {
        let plan = tiny_plan();
        let mut lines = 0;
        let report = run(&plan, &mut |_| lines += 1).unwrap();
        assert_eq!(report.cases.len(), 2 * 2 * 2 * 2);
        assert!(failures(&report).is_empty(), "{:?}", failures(&report));
        let kernels = plan.kernels(Level::detect(), &Level::available());
        for c in &report.cases {
            assert_eq!(c.runs.len(), kernels.len());
            for r in &c.runs {
                let skipped = r.spec.is_scalar() && c.n > 1 && Level::detect() != Level::Scalar;
                match &r.outcome {
                    Outcome::Measured { stats, rel_err } => {
                        assert!(!skipped);
                        assert_eq!(stats.reps, 2);
                        assert!(*rel_err <= TOL_DENSE_F16, "{} {rel_err}", r.spec.id());
                    }
                    Outcome::Skipped(why) => assert!(skipped, "{}: {why}", r.spec.id()),
                    Outcome::Failed(why) => panic!("{}: {why}", r.spec.id()),
                }
                let expect_copies = match (c.regime, r.spec.format()) {
                    (Regime::Hot, _) => 1,
                    (Regime::Streaming, f) => {
                        copies_for(f.bytes(c.rows, c.cols, c.scales), 100_000)
                    }
                };
                assert_eq!(r.copies, expect_copies);
            }
            assert!(c.act_quant.is_some());
        }
        // Bandwidth at start and end, setup line per shape, and one line per case.
        assert_eq!(lines, 2 + 2 + 16);
        assert!(report.cases.iter().all(|c| c.bandwidth.is_some()));
        assert_eq!(report.info.bandwidth_samples.len(), 4);
        let md = report.to_markdown();
        assert!(md.contains("| 33×65 | 3 | streaming | 2 |"), "{md}");
    }

    fn off_by_one_row(
        level: Level,
        m: &TernaryMatrix,
        x: &[f32],
        n: usize,
        y: &mut [f32],
    ) -> ternary_core::Result<()> {
        kernels::gemm_f32_with(level, m, x, n, y)?;
        // A plausible bug: the last output row of every token is left at zero.
        for j in 0..n {
            y[j * m.rows() + m.rows() - 1] = 0.0;
        }
        Ok(())
    }

    fn leaves_output_unwritten(
        _: Level,
        _: &TernaryMatrix,
        _: &QuantizedActivations,
        _: &mut [f32],
    ) -> ternary_core::Result<()> {
        Ok(())
    }

    #[test]
    fn wrong_kernels_should_fail_the_check_and_get_no_numbers() {
        let plan = Plan {
            shapes: vec![(64, 128)],
            ns: vec![2],
            threads: vec![1],
            gemm_f32: off_by_one_row,
            gemm_i8: leaves_output_unwritten,
            ..tiny_plan()
        };
        let report = run(&plan, &mut |_| {}).unwrap();
        let failed = failures(&report);
        assert!(!failed.is_empty());
        for c in &report.cases {
            for r in &c.runs {
                let ok = matches!(r.outcome, Outcome::Measured { .. });
                // Only the dense baselines (and skipped scalar kernels) may have numbers.
                assert_eq!(ok, !r.spec.is_ternary(), "{}: {:?}", r.spec.id(), r.outcome);
                if r.spec.is_ternary() && !r.spec.is_scalar() {
                    assert!(matches!(r.outcome, Outcome::Failed(_)), "{}", r.spec.id());
                }
            }
        }
        assert!(report.to_markdown().contains("**FAILED CHECK**"));
    }

    #[test]
    fn plans_list_each_kernel_once() {
        let p = Plan::quick();
        let k = p.kernels(Level::Scalar, &[Level::Scalar]);
        assert_eq!(k.len(), 4);
        let k = p.kernels(Level::Avx512, &[Level::Scalar, Level::Avx2, Level::Avx512]);
        let ids: Vec<String> = k.iter().map(KernelSpec::id).collect();
        assert_eq!(
            ids,
            [
                "dense-f32",
                "dense-f16",
                "ternary-f32/scalar",
                "ternary-i8/scalar",
                "ternary-f32/avx512",
                "ternary-i8/avx512",
                "ternary-f32/avx2",
                "ternary-i8/avx2"
            ]
        );
        assert_eq!(
            p.kernels(Level::Avx2, &[Level::Scalar, Level::Avx2]).len(),
            6
        );
        // What the plan promises, on this host whatever its cache.
        let l3 = crate::machine::l3_bytes().unwrap_or(0);
        let full = Plan::full().streaming_bytes;
        assert!(
            full >= MIN_STREAMING_BYTES && full >= 2 * l3,
            "{full} for L3 {l3}"
        );
    }

    #[test]
    fn thread_counts_fit_the_host() {
        assert_eq!(thread_counts(0), [1]);
        assert_eq!(thread_counts(1), [1]);
        assert_eq!(thread_counts(2), [1, 2]);
        assert_eq!(thread_counts(16), [1, 2, 16]);
        let here = crate::machine::logical_cpus();
        assert!(Plan::full().threads.iter().all(|&t| t >= 1 && t <= here));
    }

    #[test]
    fn streaming_footprint_holds_for_any_cache_size() {
        // 0 = unknown, the AMD Zen 3 hosts' 32 MiB, the boundary where 2 · L3 = 600 MB, the
        // Xeon hosts' 480 MiB, 1 GiB.
        let sizes = [
            None,
            Some(0),
            Some(1),
            Some(32 << 20),
            Some(MIN_STREAMING_BYTES / 2 - 1),
            Some(MIN_STREAMING_BYTES / 2),
            Some(MIN_STREAMING_BYTES / 2 + 1),
            Some(480 << 20),
            Some(1 << 30),
        ];
        for l3 in sizes {
            let b = streaming_bytes_for(l3);
            let l3 = l3.unwrap_or(0);
            assert!(b >= MIN_STREAMING_BYTES, "{b} for L3 {l3}");
            assert!(b >= 2 * l3, "{b} for L3 {l3}");
            assert_eq!(b, MIN_STREAMING_BYTES.max(2 * l3), "L3 {l3}");
        }
        // The sysfs strings those sizes come from.
        for (text, l3) in [
            ("0K", 0),
            ("0", 0),
            ("32768K\n", 32 << 20),
            ("491520K", 480 << 20),
            ("1048576K", 1 << 30),
            ("1G", 1 << 30),
        ] {
            let parsed = crate::machine::parse_cache_size(text);
            assert_eq!(parsed, Some(l3), "{text:?}");
            assert!(streaming_bytes_for(parsed) >= MIN_STREAMING_BYTES);
        }
        assert_eq!(streaming_bytes_for(Some(usize::MAX)), usize::MAX);
    }

    #[test]
    fn dequantized_activations_follow_the_scales() {
        let q = QuantizedActivations::quantize(&[0.5, -1.0, 0.0, 2.0], 2, 2).unwrap();
        let x = dequantize_activations(&q);
        assert_eq!(x.len(), 4);
        assert!((x[0] - 64.0 / 127.0).abs() < 1e-6 && (x[1] + 1.0).abs() < 1e-6);
        assert_eq!(x[2], 0.0);
        assert!((x[3] - 2.0).abs() < 1e-6);
    }
}
