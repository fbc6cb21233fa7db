//! Results of a report run and their two renderings: a markdown table and JSON.

use std::fmt::Write as _;

use serde_json::{Value, json};
use ternary_core::kernels::Level;

use crate::format::WeightFormat;
use crate::timing::Stats;

/// What a benchmarked kernel computes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelKind {
    /// Dense `f32` matmul (`gemm` crate).
    DenseF32,
    /// Dense `f16` matmul (`gemm` crate, `f16` in and out).
    DenseF16,
    /// Ternary planes × `f32` activations ([`ternary_core::kernels::gemm_f32_with`]).
    TernaryF32,
    /// Ternary planes × int8 activations ([`ternary_core::kernels::gemm_i8_with`]); the
    /// activation quantization is timed separately ([`Case::act_quant`]).
    TernaryI8,
}

/// A kernel at a level (`level` is `None` for the dense baselines).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelSpec {
    /// What it computes.
    pub kind: KernelKind,
    /// SIMD level of a ternary kernel.
    pub level: Option<Level>,
}

impl KernelSpec {
    /// Dense `f32` baseline.
    pub const DENSE_F32: Self = Self {
        kind: KernelKind::DenseF32,
        level: None,
    };
    /// Dense `f16` baseline.
    pub const DENSE_F16: Self = Self {
        kind: KernelKind::DenseF16,
        level: None,
    };

    /// Ternary `f32`-activation GEMM at `level`.
    pub fn ternary_f32(level: Level) -> Self {
        Self {
            kind: KernelKind::TernaryF32,
            level: Some(level),
        }
    }

    /// Ternary int8-activation GEMM at `level`.
    pub fn ternary_i8(level: Level) -> Self {
        Self {
            kind: KernelKind::TernaryI8,
            level: Some(level),
        }
    }

    /// Stable identifier: `dense-f32`, `dense-f16`, `ternary-f32/<level>`, `ternary-i8/<level>`.
    pub fn id(&self) -> String {
        match (self.kind, self.level) {
            (KernelKind::DenseF32, _) => "dense-f32".into(),
            (KernelKind::DenseF16, _) => "dense-f16".into(),
            (KernelKind::TernaryF32, l) => format!("ternary-f32/{}", level_name(l)),
            (KernelKind::TernaryI8, l) => format!("ternary-i8/{}", level_name(l)),
        }
    }

    /// Column header in the markdown tables.
    pub fn column(&self) -> String {
        match (self.kind, self.level) {
            (KernelKind::DenseF32, _) => "dense f32".into(),
            (KernelKind::DenseF16, _) => "dense f16".into(),
            (KernelKind::TernaryF32, l) => format!("tern f32 {}", level_name(l)),
            (KernelKind::TernaryI8, l) => format!("tern i8 {}", level_name(l)),
        }
    }

    /// The weight format the kernel reads.
    pub fn format(&self) -> WeightFormat {
        match self.kind {
            KernelKind::DenseF32 => WeightFormat::F32,
            KernelKind::DenseF16 => WeightFormat::F16,
            KernelKind::TernaryF32 | KernelKind::TernaryI8 => WeightFormat::Planes,
        }
    }

    /// Whether this is a ternary kernel at [`Level::Scalar`].
    pub fn is_scalar(&self) -> bool {
        self.level == Some(Level::Scalar)
    }

    /// Whether this is a ternary (not dense) kernel.
    pub fn is_ternary(&self) -> bool {
        matches!(self.kind, KernelKind::TernaryF32 | KernelKind::TernaryI8)
    }
}

fn level_name(l: Option<Level>) -> &'static str {
    l.map_or("-", Level::name)
}

/// Hot: one matrix reused. Streaming: rotate among copies totalling more than the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Regime {
    /// One matrix reused every call (weights mostly in cache).
    Hot,
    /// Each call reads a different copy; the copies together exceed the last-level cache.
    Streaming,
}

impl Regime {
    /// `"hot"` or `"streaming"`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Hot => "hot",
            Self::Streaming => "streaming",
        }
    }
}

/// How one kernel fared in one case.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Checked against the reference (relative error `rel_err`), then timed.
    Measured {
        /// Per-call times.
        stats: Stats,
        /// Relative error of the checked output against its reference.
        rel_err: f64,
    },
    /// Not run, with the reason.
    Skipped(String),
    /// The correctness check or the kernel failed: no timing was taken.
    Failed(String),
}

/// One kernel in one case.
#[derive(Debug, Clone, PartialEq)]
pub struct KernelRun {
    /// The kernel.
    pub spec: KernelSpec,
    /// Weight matrices rotated among (1 in the hot regime).
    pub copies: usize,
    /// The result.
    pub outcome: Outcome,
}

impl KernelRun {
    /// Median seconds per call if measured.
    pub fn median(&self) -> Option<f64> {
        match &self.outcome {
            Outcome::Measured { stats, .. } => Some(stats.median_s),
            _ => None,
        }
    }
}

/// One row of the tables: a shape, batch, regime and thread count, with every kernel.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Output channels.
    pub rows: usize,
    /// Input channels.
    pub cols: usize,
    /// Tokens (batch).
    pub n: usize,
    /// Hot or streaming.
    pub regime: Regime,
    /// Worker threads.
    pub threads: usize,
    /// Scales of the ternary matrix (for its byte count).
    pub scales: usize,
    /// Time of `QuantizedActivations::quantize` for the `n × cols` activations (not included
    /// in the int8 kernel times).
    pub act_quant: Option<Stats>,
    /// Read bandwidth (bytes/s) measured with `threads` threads, for the streaming floor.
    pub bandwidth: Option<f64>,
    /// The kernels, in column order.
    pub runs: Vec<KernelRun>,
}

impl Case {
    /// Floating-point operations of one call: `2 · rows · cols · n`.
    pub fn flops(&self) -> f64 {
        2.0 * self.rows as f64 * self.cols as f64 * self.n as f64
    }

    /// Bytes of the weights in `format`.
    pub fn weight_bytes(&self, format: WeightFormat) -> usize {
        format.bytes(self.rows, self.cols, self.scales)
    }

    /// Best possible time to stream the weights of `format` from memory: bytes / bandwidth
    /// (streaming regime only).
    pub fn floor_s(&self, format: WeightFormat) -> Option<f64> {
        match (self.regime, self.bandwidth) {
            (Regime::Streaming, Some(bw)) if bw > 0.0 => {
                Some(self.weight_bytes(format) as f64 / bw)
            }
            _ => None,
        }
    }

    /// The run of `spec`, if it is in this case.
    pub fn run(&self, spec: KernelSpec) -> Option<&KernelRun> {
        self.runs.iter().find(|r| r.spec == spec)
    }

    fn median_of(&self, spec: KernelSpec) -> Option<f64> {
        self.run(spec).and_then(KernelRun::median)
    }

    /// `time(baseline) / time(spec)`, when both were measured.
    pub fn speedup(&self, spec: KernelSpec, baseline: KernelSpec) -> Option<f64> {
        Some(self.median_of(baseline)? / self.median_of(spec)?)
    }

    /// The scalar kernel of the same kind as `spec`.
    pub fn scalar_of(spec: KernelSpec) -> KernelSpec {
        KernelSpec {
            level: Some(Level::Scalar),
            ..spec
        }
    }

    /// `time(dense f16) / (time(int8 kernel) + time(activation quantization))`.
    pub fn speedup_with_quant(&self, spec: KernelSpec, baseline: KernelSpec) -> Option<f64> {
        let q = self.act_quant?.median_s;
        Some(self.median_of(baseline)? / (self.median_of(spec)? + q))
    }
}

/// Facts about the machine and the run.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs.
    pub logical_cpus: usize,
    /// Last-level cache bytes, if known.
    pub l3_bytes: Option<usize>,
    /// The level `Level::detect` chose.
    pub detected: Level,
    /// Every available level.
    pub available: Vec<Level>,
    /// The `TERNARY_SIMD` cap in force (`Level::forced`), if any: then `detected` may be below
    /// what the CPU supports.
    pub forced: Option<Level>,
    /// Git commit of the tree, if known.
    pub commit: Option<String>,
    /// UTC start time.
    pub date: String,
    /// Whether this is the reduced `--quick` run.
    pub quick: bool,
    /// Thread counts measured.
    pub threads: Vec<usize>,
    /// `(threads, bytes/s)` read bandwidth: the best of [`bandwidth_samples`](Self::bandwidth_samples).
    pub bandwidth: Vec<(usize, f64)>,
    /// Every bandwidth measurement `(threads, bytes/s)`, at the start and the end of the run.
    pub bandwidth_samples: Vec<(usize, f64)>,
    /// Size of the buffer the bandwidth was measured on.
    pub bandwidth_buffer_bytes: usize,
    /// Minimum total bytes of the copies each kernel rotates among when streaming.
    pub streaming_bytes: usize,
    /// Timing policy, in words.
    pub timing: String,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Machine and run facts.
    pub info: RunInfo,
    /// Shapes `(rows, cols, scales)` measured, for the format table.
    pub shapes: Vec<(usize, usize, usize)>,
    /// All cases, in table order.
    pub cases: Vec<Case>,
}

/// Formats seconds with a unit that keeps 3 significant digits (`812 µs`, `12.3 ms`, `1.23 s`).
pub fn fmt_time(s: f64) -> String {
    let (v, unit) = if s >= 1.0 {
        (s, "s")
    } else if s >= 1e-3 {
        (s * 1e3, "ms")
    } else if s >= 1e-6 {
        (s * 1e6, "µs")
    } else {
        (s * 1e9, "ns")
    };
    format!("{} {unit}", sig3(v))
}

/// A number with 3 significant digits (no exponent for values in `[0.001, 1e6)`).
pub fn sig3(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn mb(bytes: usize) -> String {
    format!("{} MB", sig3(bytes as f64 / 1e6))
}

fn shape(rows: usize, cols: usize) -> String {
    format!("{rows}×{cols}")
}

fn stats_json(s: &Stats) -> Value {
    json!({ "median_s": s.median_s, "min_s": s.min_s, "reps": s.reps })
}

impl Report {
    /// Column specs in table order: every kernel that appears in any case.
    pub fn columns(&self) -> Vec<KernelSpec> {
        let mut cols: Vec<KernelSpec> = Vec::new();
        for c in &self.cases {
            for r in &c.runs {
                if !cols.contains(&r.spec) {
                    cols.push(r.spec);
                }
            }
        }
        cols
    }

    /// The markdown report.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let i = &self.info;
        let levels: Vec<&str> = i.available.iter().map(|l| l.name()).collect();
        let _ = writeln!(
            s,
            "# ternary bench report{}\n",
            if i.quick { " (--quick)" } else { "" }
        );
        let _ = writeln!(
            s,
            "- Machine: {}, {} logical CPUs, L3 {}; kernel level detected: **{}** (available: {}){}.",
            i.cpu,
            i.logical_cpus,
            i.l3_bytes
                .map_or("unknown".into(), |b| format!("{} MiB", b >> 20)),
            i.detected.name(),
            levels.join(", "),
            i.forced
                .map_or(String::new(), |l| format!("; capped by TERNARY_SIMD={l}"))
        );
        let _ = writeln!(
            s,
            "- Run: {}, commit {}, threads {:?}. {}",
            i.date,
            i.commit.as_deref().unwrap_or("unknown"),
            i.threads,
            i.timing
        );
        let bw: Vec<String> = i
            .bandwidth
            .iter()
            .map(|(t, b)| {
                format!(
                    "{t} thread{}: {} GB/s",
                    if *t == 1 { "" } else { "s" },
                    sig3(b / 1e9)
                )
            })
            .collect();
        let _ = writeln!(
            s,
            "- Memory read bandwidth (full-width SIMD sum of squares over a {} buffer, no software prefetch; best of 3 passes at the start and 3 at \
             the end of the run): {}.",
            mb(i.bandwidth_buffer_bytes),
            bw.join(", ")
        );
        let _ = writeln!(
            s,
            "- Regimes: *hot* reuses one matrix; *streaming* rotates each kernel among copies of \
             its weights totalling ≥ {} (L3 is {}), so weights come from DRAM. \
             **Bandwidth floor** (streaming rows, column `floor`): planes bytes / measured \
             bandwidth = the best possible time for a kernel that reads its weights once.",
            mb(i.streaming_bytes),
            i.l3_bytes.map_or("unknown".into(), mb)
        );
        let _ = writeln!(
            s,
            "- GFLOPS = 2·rows·cols·n / time. GB/s = bytes of the weight format read / time. \
             Int8 kernel times exclude activation quantization (column `act quant`, timed \
             separately); `+q` speedups include it. Slow secondary kernels (scalar, AVX2 below \
             the detected level) are skipped where marked.\n"
        );

        let _ = writeln!(
            s,
            "## Weight formats (bits per weight, including f32 per-row scales)\n"
        );
        let _ = writeln!(s, "| shape | packed base-3 | planes | f16 | f32 |");
        let _ = writeln!(s, "|---|---|---|---|---|");
        for &(r, c, sc) in &self.shapes {
            let cell = |f: WeightFormat| {
                format!(
                    "{:.3} ({})",
                    f.bits_per_weight(r, c, sc),
                    mb(f.bytes(r, c, sc))
                )
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                shape(r, c),
                cell(WeightFormat::Packed),
                cell(WeightFormat::Planes),
                cell(WeightFormat::F16),
                cell(WeightFormat::F32)
            );
        }

        let cols = self.columns();
        let head = |extra: &[String]| {
            let mut h = String::from("| shape | n | regime | thr |");
            let mut sep = String::from("|---|---:|---|---:|");
            for e in extra {
                h.push_str(&format!(" {e} |"));
                sep.push_str("---:|");
            }
            format!("{h}\n{sep}\n")
        };
        let row_key = |c: &Case| {
            format!(
                "| {} | {} | {} | {} |",
                shape(c.rows, c.cols),
                c.n,
                c.regime.name(),
                c.threads
            )
        };
        let fail_cell = |o: &Outcome| match o {
            Outcome::Skipped(why) => format!("skipped ({why})"),
            Outcome::Failed(_) => "**FAILED CHECK**".to_owned(),
            Outcome::Measured { .. } => String::new(),
        };

        // Time table.
        let _ = writeln!(s, "\n## Time per call, median (GFLOPS)\n");
        let mut names: Vec<String> = cols.iter().map(KernelSpec::column).collect();
        names.push("act quant".into());
        names.push("floor (planes)".into());
        s.push_str(&head(&names));
        for c in &self.cases {
            let mut line = row_key(c);
            for spec in &cols {
                let cell = match c.run(*spec) {
                    None => "—".to_owned(),
                    Some(KernelRun {
                        outcome: Outcome::Measured { stats, .. },
                        ..
                    }) => format!(
                        "{} ({})",
                        fmt_time(stats.median_s),
                        sig3(c.flops() / stats.median_s / 1e9)
                    ),
                    Some(r) => fail_cell(&r.outcome),
                };
                line.push_str(&format!(" {cell} |"));
            }
            let q = c.act_quant.map_or("—".into(), |q| fmt_time(q.median_s));
            let floor = c.floor_s(WeightFormat::Planes).map_or("—".into(), |f| {
                format!("{} ({})", fmt_time(f), sig3(c.flops() / f / 1e9))
            });
            let _ = writeln!(s, "{line} {q} | {floor} |");
        }

        // Bandwidth table.
        let _ = writeln!(
            s,
            "\n## Effective weight traffic, GB/s (weight bytes / time)\n"
        );
        let names: Vec<String> = cols
            .iter()
            .map(|k| format!("{} ({})", k.column(), k.format().name()))
            .collect();
        s.push_str(&head(&names));
        for c in &self.cases {
            let mut line = row_key(c);
            for spec in &cols {
                let cell = match c.run(*spec) {
                    None => "—".to_owned(),
                    Some(r) => match r.median() {
                        Some(t) => sig3(c.weight_bytes(spec.format()) as f64 / t / 1e9),
                        None => fail_cell(&r.outcome),
                    },
                };
                line.push_str(&format!(" {cell} |"));
            }
            let _ = writeln!(s, "{line}");
        }

        // Speedup table.
        let fast: Vec<KernelSpec> = cols
            .iter()
            .copied()
            .filter(|k| k.is_ternary() && !k.is_scalar())
            .collect();
        let _ = writeln!(
            s,
            "\n## Speedup of the ternary kernels (baseline time / kernel time): ×f16 / ×f32 / ×scalar\n"
        );
        let mut names: Vec<String> = fast.iter().map(KernelSpec::column).collect();
        for k in fast.iter().filter(|k| k.kind == KernelKind::TernaryI8) {
            names.push(format!("{} +q ×f16", k.column()));
        }
        s.push_str(&head(&names));
        let x = |v: Option<f64>| v.map_or("—".into(), |v| format!("{}×", sig3(v)));
        for c in &self.cases {
            let mut line = row_key(c);
            for spec in &fast {
                let cell = format!(
                    "{} / {} / {}",
                    x(c.speedup(*spec, KernelSpec::DENSE_F16)),
                    x(c.speedup(*spec, KernelSpec::DENSE_F32)),
                    x(c.speedup(*spec, Case::scalar_of(*spec)))
                );
                line.push_str(&format!(" {cell} |"));
            }
            for spec in fast.iter().filter(|k| k.kind == KernelKind::TernaryI8) {
                let v = x(c.speedup_with_quant(*spec, KernelSpec::DENSE_F16));
                line.push_str(&format!(" {v} |"));
            }
            let _ = writeln!(s, "{line}");
        }

        self.targets_markdown(&mut s);

        let failed: Vec<String> = self
            .cases
            .iter()
            .flat_map(|c| {
                c.runs.iter().filter_map(move |r| match &r.outcome {
                    Outcome::Failed(why) => Some(format!(
                        "- {} {} n={} {} t={}: {}",
                        r.spec.id(),
                        shape(c.rows, c.cols),
                        c.n,
                        c.regime.name(),
                        c.threads,
                        why
                    )),
                    _ => None,
                })
            })
            .collect();
        if !failed.is_empty() {
            let _ = writeln!(s, "\n## FAILED correctness checks (no timing taken)\n");
            s.push_str(&failed.join("\n"));
            s.push('\n');
        }
        s
    }

    /// The goals, for 4096×14336 on one thread: int8 path ≥ 150 GFLOPS at n = 1 and
    /// ≥ 300 GFLOPS at n = 512 (llama.cpp measured here: TQ2_0 ~100 GFLOPS at n = 1 and 512,
    /// f16 ~6 GFLOPS at n = 1), next to the bandwidth floor.
    fn targets_markdown(&self, s: &mut String) {
        let detected = self.info.detected;
        let rows: Vec<&Case> = self
            .cases
            .iter()
            .filter(|c| (c.rows, c.cols, c.threads) == (4096, 14336, 1))
            .collect();
        if rows.is_empty() {
            return;
        }
        let _ = writeln!(
            s,
            "\n## Against the issue's targets (4096×14336, 1 thread, kernels at {})\n",
            detected.name()
        );
        let _ = writeln!(
            s,
            "Targets: int8 path ≥ 150 GFLOPS at n = 1 and ≥ 300 GFLOPS at n = 512. llama.cpp on \
             this machine (from the issue): TQ2_0 ~100 GFLOPS (n = 1 and 512), f16 ~6 GFLOPS \
             (n = 1). `floor` = the GFLOPS a kernel reaches if it only waits for its planes to \
             stream from DRAM once.\n"
        );
        let _ = writeln!(
            s,
            "| n | regime | int8 GFLOPS | int8 +q GFLOPS | f32-act GFLOPS | dense f16 GFLOPS | target | floor GFLOPS |"
        );
        let _ = writeln!(s, "|---:|---|---:|---:|---:|---:|---:|---:|");
        for c in rows {
            let gf = |t: Option<f64>| t.map_or("—".into(), |t| sig3(c.flops() / t / 1e9));
            let i8t = c.median_of(KernelSpec::ternary_i8(detected));
            let q = c.act_quant.map(|q| q.median_s);
            let target = match c.n {
                1 => "≥ 150",
                n if n >= 512 => "≥ 300",
                _ => "—",
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {target} | {} |",
                c.n,
                c.regime.name(),
                gf(i8t),
                gf(i8t.zip(q).map(|(a, b)| a + b)),
                gf(c.median_of(KernelSpec::ternary_f32(detected))),
                gf(c.median_of(KernelSpec::DENSE_F16)),
                gf(c.floor_s(WeightFormat::Planes))
            );
        }
    }

    /// The JSON report: `machine`, `formats` and one record per case with every kernel.
    pub fn to_json(&self) -> Value {
        let i = &self.info;
        let machine = json!({
            "cpu": i.cpu,
            "logical_cpus": i.logical_cpus,
            "l3_bytes": i.l3_bytes,
            "detected_level": i.detected.name(),
            "available_levels": i.available.iter().map(|l| l.name()).collect::<Vec<_>>(),
            "forced_level": i.forced.map(Level::name),
            "commit": i.commit,
            "date": i.date,
            "quick": i.quick,
            "threads": i.threads,
            "read_bandwidth_bytes_per_s": i.bandwidth.iter()
                .map(|(t, b)| json!({ "threads": t, "bytes_per_s": b }))
                .collect::<Vec<_>>(),
            "read_bandwidth_samples": i.bandwidth_samples.iter()
                .map(|(t, b)| json!({ "threads": t, "bytes_per_s": b }))
                .collect::<Vec<_>>(),
            "bandwidth_buffer_bytes": i.bandwidth_buffer_bytes,
            "streaming_bytes": i.streaming_bytes,
            "timing": i.timing,
        });
        let formats: Vec<Value> = self
            .shapes
            .iter()
            .map(|&(r, c, sc)| {
                let f: serde_json::Map<String, Value> = WeightFormat::ALL
                    .iter()
                    .map(|f| {
                        (
                            f.name().to_owned(),
                            json!({ "bytes": f.bytes(r, c, sc),
                                    "bits_per_weight": f.bits_per_weight(r, c, sc) }),
                        )
                    })
                    .collect();
                json!({ "rows": r, "cols": c, "scales": sc, "formats": f })
            })
            .collect();
        let cases: Vec<Value> = self.cases.iter().map(|c| self.case_json(c)).collect();
        json!({ "machine": machine, "formats": formats, "cases": cases })
    }

    fn case_json(&self, c: &Case) -> Value {
        let kernels: Vec<Value> = c
            .runs
            .iter()
            .map(|r| {
                let f = r.spec.format();
                let mut k = json!({
                    "kernel": r.spec.id(),
                    "level": r.spec.level.map(Level::name),
                    "format": f.name(),
                    "weight_bytes": c.weight_bytes(f),
                    "copies": r.copies,
                });
                let (status, extra) = match &r.outcome {
                    Outcome::Measured { stats, rel_err } => {
                        let t = stats.median_s;
                        let mut m = json!({
                            "time": stats_json(stats),
                            "gflops": c.flops() / t / 1e9,
                            "weight_gb_per_s": c.weight_bytes(f) as f64 / t / 1e9,
                            "rel_err": rel_err,
                            "speedup_vs_dense_f16": c.speedup(r.spec, KernelSpec::DENSE_F16),
                            "speedup_vs_dense_f32": c.speedup(r.spec, KernelSpec::DENSE_F32),
                        });
                        if r.spec.is_ternary() {
                            m["speedup_vs_scalar"] =
                                json!(c.speedup(r.spec, Case::scalar_of(r.spec)));
                        }
                        if r.spec.kind == KernelKind::TernaryI8 {
                            m["speedup_vs_dense_f16_incl_quant"] =
                                json!(c.speedup_with_quant(r.spec, KernelSpec::DENSE_F16));
                        }
                        ("ok", m)
                    }
                    Outcome::Skipped(why) => ("skipped", json!({ "reason": why })),
                    Outcome::Failed(why) => ("failed", json!({ "reason": why })),
                };
                k["status"] = json!(status);
                if let (Value::Object(dst), Value::Object(src)) = (&mut k, extra) {
                    dst.extend(src);
                }
                k
            })
            .collect();
        let floors: serde_json::Map<String, Value> = WeightFormat::ALL
            .iter()
            .filter_map(|f| Some((f.name().to_owned(), json!(c.floor_s(*f)?))))
            .collect();
        json!({
            "rows": c.rows,
            "cols": c.cols,
            "n": c.n,
            "regime": c.regime.name(),
            "threads": c.threads,
            "flops": c.flops(),
            "act_quant_time": c.act_quant.as_ref().map(stats_json),
            "read_bandwidth_bytes_per_s": c.bandwidth,
            "bandwidth_floor_s": floors,
            "kernels": kernels,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(t: f64) -> Stats {
        Stats {
            median_s: t,
            min_s: t * 0.9,
            reps: 5,
        }
    }

    fn sample() -> Report {
        let measured = |spec, t| KernelRun {
            spec,
            copies: 1,
            outcome: Outcome::Measured {
                stats: stats(t),
                rel_err: 1e-7,
            },
        };
        let runs = vec![
            measured(KernelSpec::DENSE_F32, 8e-3),
            measured(KernelSpec::DENSE_F16, 16e-3),
            measured(KernelSpec::ternary_f32(Level::Scalar), 40e-3),
            KernelRun {
                spec: KernelSpec::ternary_i8(Level::Scalar),
                copies: 1,
                outcome: Outcome::Skipped("n=512".into()),
            },
            measured(KernelSpec::ternary_f32(Level::Avx2), 2e-3),
            KernelRun {
                spec: KernelSpec::ternary_i8(Level::Avx2),
                copies: 1,
                outcome: Outcome::Failed("relative error 1 exceeds 1e-4".into()),
            },
        ];
        let case = Case {
            rows: 4096,
            cols: 4096,
            n: 8,
            regime: Regime::Streaming,
            threads: 1,
            scales: 4096,
            act_quant: Some(stats(1e-4)),
            bandwidth: Some(10e9),
            runs,
        };
        Report {
            info: RunInfo {
                cpu: "Test CPU".into(),
                logical_cpus: 2,
                l3_bytes: Some(480 << 20),
                detected: Level::Avx2,
                available: vec![Level::Scalar, Level::Avx2],
                forced: None,
                commit: Some("abc".into()),
                date: "2026-01-01T00:00:00Z".into(),
                quick: true,
                threads: vec![1, 2],
                bandwidth: vec![(1, 10e9)],
                bandwidth_samples: vec![(1, 9e9), (1, 10e9)],
                bandwidth_buffer_bytes: 1 << 30,
                streaming_bytes: 1 << 30,
                timing: "median".into(),
            },
            shapes: vec![(4096, 4096, 4096)],
            cases: vec![case],
        }
    }

    #[test]
    fn formats_numbers() {
        assert_eq!(fmt_time(1.234), "1.23 s");
        assert_eq!(fmt_time(0.01234), "12.3 ms");
        assert_eq!(fmt_time(812e-6), "812 µs");
        assert_eq!(fmt_time(5e-9), "5.00 ns");
        assert_eq!(sig3(0.1234), "0.123");
    }

    #[test]
    fn markdown_shows_numbers_speedups_and_failures() {
        let md = sample().to_markdown();
        // 2·4096·4096·8 / 2 ms = 134 GFLOPS; planes 4.21 MB / 2 ms = 2.11 GB/s.
        assert!(md.contains("| 4096×4096 | 8 | streaming | 1 |"), "{md}");
        assert!(md.contains("2.00 ms (134)"), "{md}");
        assert!(md.contains("| 2.11 |"), "{md}");
        // ×f16 = 16/2, ×f32 = 8/2, ×scalar = 40/2.
        assert!(md.contains("8.00× / 4.00× / 20.0×"), "{md}");
        assert!(md.contains("skipped (n=512)"), "{md}");
        assert!(md.contains("**FAILED CHECK**"), "{md}");
        assert!(md.contains("## FAILED correctness checks"), "{md}");
        // Floor: 4.21 MB / 10 GB/s = 421 µs.
        assert!(md.contains("421 µs"), "{md}");
        // The failed kernel gets no numbers: its cell in the time and GB/s rows is the marker.
        let header: Vec<&str> = md
            .lines()
            .find(|l| l.starts_with("| shape | n | regime | thr | dense f32"))
            .unwrap()
            .split('|')
            .map(str::trim)
            .collect();
        let col = header.iter().position(|h| *h == "tern i8 avx2").unwrap();
        let rows: Vec<Vec<&str>> = md
            .lines()
            .filter(|l| l.starts_with("| 4096×4096 |"))
            .map(|l| l.split('|').map(str::trim).collect())
            .collect();
        // Formats, time, GB/s and speedup tables.
        assert_eq!(rows.len(), 4);
        assert_eq!(rows[1][col], "**FAILED CHECK**");
        assert_eq!(rows[2][col], "**FAILED CHECK**");
    }

    #[test]
    fn targets_section_reports_the_int8_path() {
        let mut r = sample();
        assert!(!r.to_markdown().contains("issue's targets"));
        let c = &mut r.cases[0];
        (c.rows, c.cols, c.n) = (4096, 14336, 1);
        c.runs[5].outcome = Outcome::Measured {
            stats: stats(1e-3),
            rel_err: 0.0,
        };
        let md = r.to_markdown();
        // 2·4096·14336 / 1 ms = 117 GFLOPS; +q: / 1.1 ms = 107; f32 kernel 2 ms: 58.7;
        // f16 16 ms: 7.34; floor 14.70 MB / 10 GB/s = 1.470 ms → 79.9.
        assert!(
            md.contains("| 1 | streaming | 117 | 107 | 58.7 | 7.34 | ≥ 150 | 79.9 |"),
            "{md}"
        );
    }

    #[test]
    fn json_has_one_record_per_case_with_every_kernel() {
        let j = sample().to_json();
        assert_eq!(j["machine"]["cpu"], "Test CPU");
        assert_eq!(j["machine"]["quick"], true);
        let case = &j["cases"][0];
        assert_eq!(case["n"], 8);
        let k = case["kernels"].as_array().unwrap();
        assert_eq!(k.len(), 6);
        assert_eq!(k[4]["kernel"], "ternary-f32/avx2");
        assert_eq!(k[4]["status"], "ok");
        assert_eq!(k[4]["speedup_vs_dense_f16"], 8.0);
        assert_eq!(k[4]["speedup_vs_scalar"], 20.0);
        assert_eq!(k[5]["status"], "failed");
        assert!(k[5].get("gflops").is_none());
        assert_eq!(k[3]["status"], "skipped");
        let floor = case["bandwidth_floor_s"]["planes"].as_f64().unwrap();
        assert!((floor - 4_210_688.0 / 10e9).abs() < 1e-12);
        assert_eq!(j["formats"][0]["formats"]["f16"]["bits_per_weight"], 16.0);
    }
}
