//! `bench-sparsity`: sparse ternary formats and skip kernels on Llama-7B shapes, against the
//! dense ternary kernels of `ternary-core` and dense `f32`/`f16` matmuls (`gemm` 0.19) in the
//! same run.
//!
//! ```text
//! cargo run --release -p ternary-bench --bin bench-sparsity -- [--quick] [--out DIR]
//! ```
//!
//! Writes `DIR/sparsity.md` and `DIR/sparsity.json` (default `DIR = target/bench-sparsity`)
//! and prints the markdown. Workloads: Gaussian weights → abs-mean ternary (per-row scales) →
//! pruned after ternarization to 50/90/95/99% zeros, unstructured (smallest `|w|` first) or
//! structured (whole 32-chunks, smallest `Σ|w|` first), with `ternary_sparsity::prune`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;
use ternary_core::rng::SplitMix64;

use half::f16;
use serde_json::{Value, json};
use ternary_bench::baseline::{Dims, matmul_f16, matmul_f32, parallelism, to_f16};
use ternary_bench::data::{gaussian_vec, uniform_vec};
use ternary_bench::machine::{Flusher, cpu_model, load_average};
use ternary_bench::timing::{TimeBudget, best_cold_time, best_time};
use ternary_core::kernels::Level;
use ternary_core::quant::{self, QuantConfig};
use ternary_core::{QuantizedActivations, TernaryMatrix, kernels as core_kernels};
use ternary_sparsity::prune::{Pruning, prune_ternary};
use ternary_sparsity::{
    BitmapMatrix, Footprint, IndexLists, KernelConfig, LayerFormat, LayerProfile, PackedChunks,
    Planner, TernaryGemm,
};

const SPARSITIES: [f64; 4] = [0.50, 0.90, 0.95, 0.99];
const SHAPES: [(&str, usize, usize); 2] = [
    ("attn 4096x4096", 4096, 4096),
    ("mlp 11008x4096", 11008, 4096),
];

// ---------------------------------------------------------------------------------------------
// Arguments and settings
// ---------------------------------------------------------------------------------------------

struct Args {
    quick: bool,
    out: PathBuf,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        out: PathBuf::from("target/bench-sparsity"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => args.quick = true,
            "--out" => args.out = it.next().ok_or("--out needs a directory")?.into(),
            "-h" | "--help" => {
                return Err("usage: bench-sparsity [--quick] [--out DIR]".into());
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(args)
}

/// Run sizes: the batch of the GEMM rows, the sweep batch and the timing budget.
#[derive(Clone, Copy)]
struct Settings {
    n_big: usize,
    n_sweep: usize,
    /// Timed calls per measurement (after one untimed warm-up call).
    budget: TimeBudget,
    /// Sweep points per structure (the densest ones are dropped first).
    sweep_points: usize,
    /// Calls per cold-cache measurement (n = 1).
    cold_reps: usize,
}

// ---------------------------------------------------------------------------------------------
// Random data (SplitMix64; deterministic, parallel by block)
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Timing
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Dense baselines (gemm 0.19)
// ---------------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------------
// Workloads
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Structure {
    Unstructured,
    Chunks,
}

impl Structure {
    fn name(self) -> &'static str {
        match self {
            Self::Unstructured => "unstructured",
            Self::Chunks => "chunks",
        }
    }

    fn rule(self, sparsity: f64) -> Pruning {
        match self {
            Self::Unstructured => Pruning::Magnitude { sparsity },
            Self::Chunks => Pruning::Chunks { sparsity },
        }
    }
}

/// One pruned layer in every format.
struct Layer {
    name: String,
    structure: Structure,
    sparsity: f64,
    dense: TernaryMatrix,
    bitmap: BitmapMatrix,
    packed: PackedChunks,
    lists: IndexLists,
    profile: LayerProfile,
}

impl Layer {
    fn build(
        name: String,
        m0: &TernaryMatrix,
        w: &[f32],
        structure: Structure,
        sparsity: f64,
    ) -> Layer {
        let mut m = m0.clone();
        prune_ternary(&mut m, Some(w), structure.rule(sparsity)).expect("pruning a valid layer");
        let bitmap = BitmapMatrix::new(m.clone());
        let packed = PackedChunks::from_bitmap_matrix(&bitmap).expect("packing");
        let lists = IndexLists::from_matrix(&m).expect("index lists");
        let profile = LayerProfile::measure(&name, &m, None).expect("profile");
        Layer {
            name,
            structure,
            sparsity,
            dense: m,
            bitmap,
            packed,
            lists,
            profile,
        }
    }

    fn formats(&self) -> [(&'static str, &dyn TernaryGemm, f64); 3] {
        [
            (
                "bitmap",
                &self.bitmap as &dyn TernaryGemm,
                self.bitmap.bits_per_weight(),
            ),
            ("packed", &self.packed, self.packed.bits_per_weight()),
            ("lists", &self.lists, self.lists.bits_per_weight()),
        ]
    }
}

/// The first `k` rows of `m` as a matrix (for cheap exactness checks at large `n`).
fn first_rows(m: &TernaryMatrix, k: usize) -> TernaryMatrix {
    let k = k.min(m.rows());
    let wpr = m.words_per_row();
    let groups = m.scales().layout().groups_per_row(m.cols());
    let scales = ternary_core::Scales::new(
        m.scales().layout(),
        m.scales().values()[..k * groups].to_vec(),
    );
    TernaryMatrix::from_planes(
        k,
        m.cols(),
        m.plus()[..k * wpr].to_vec(),
        m.minus()[..k * wpr].to_vec(),
        scales,
    )
    .expect("a row slice of a valid matrix")
}

// ---------------------------------------------------------------------------------------------
// Measurements
// ---------------------------------------------------------------------------------------------

struct Baseline {
    shape: String,
    n: usize,
    f32_s: f64,
    f16_s: f64,
    tern_f32_s: f64,
    tern_i8_s: f64,
    /// Cold-cache seconds of (f32, f16, ternary f32, ternary int8), n = 1 only.
    cold: Option<[f64; 4]>,
}

struct Measure {
    shape: String,
    n: usize,
    layer: String,
    structure: Structure,
    sparsity: f64,
    density: f64,
    occupancy: f64,
    format: &'static str,
    f32_s: f64,
    i8_s: f64,
    bits: f64,
    planned: bool,
    /// int8 outputs equal the dense ternary kernel's bit for bit (checked rows).
    i8_exact: bool,
    /// max |y − y_dense| / max |y_dense| of the f32 outputs (n = 1 only).
    f32_rel_err: Option<f64>,
    /// Cold-cache seconds of (f32, int8), n = 1 and packed/lists only.
    cold: Option<(f64, f64)>,
    /// Dense ternary seconds (f32, int8) the ratios use: timed next to this layer at n = 1,
    /// the block's baseline otherwise.
    dense_s: (f64, f64),
}

struct SweepPoint {
    structure: Structure,
    n: usize,
    density: f64,
    occupancy: f64,
    dense_f32_s: f64,
    dense_i8_s: f64,
    packed_f32_s: f64,
    packed_i8_s: f64,
    lists_f32_s: f64,
    lists_i8_s: f64,
    packed_bits: f64,
    lists_bits: f64,
}

fn max_rel(y: &[f32], want: &[f32]) -> f64 {
    let scale = want
        .iter()
        .fold(0f64, |m, &v| m.max(f64::from(v).abs()))
        .max(1e-30);
    y.iter().zip(want).fold(0f64, |m, (&a, &b)| {
        m.max((f64::from(a) - f64::from(b)).abs())
    }) / scale
}

fn ms(s: f64) -> String {
    if s >= 1.0 {
        format!("{:.0}", s * 1e3)
    } else if s >= 0.01 {
        format!("{:.1}", s * 1e3)
    } else {
        format!("{:.3}", s * 1e3)
    }
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("bench-sparsity: {e}");
            std::process::exit(2);
        }
    };
    let settings = if args.quick {
        Settings {
            n_big: 64,
            n_sweep: 64,
            budget: TimeBudget {
                seconds: 0.1,
                max_reps: 20,
                single_call_s: 1.0,
            },
            sweep_points: 4,
            cold_reps: 5,
        }
    } else {
        Settings {
            n_big: 8192,
            n_sweep: 512,
            budget: TimeBudget {
                seconds: 0.5,
                max_reps: 20,
                single_call_s: 2.0,
            },
            sweep_points: 7,
            cold_reps: 5,
        }
    };
    let t_start = Instant::now();
    if let Some(l) = load_average() {
        let _ = LOAD_AT_START.set(l);
    }
    let level = Level::detect();
    let threads = rayon::current_num_threads();
    eprintln!(
        "bench-sparsity: level {level}, {threads} threads, n = 1 and {}",
        settings.n_big
    );

    let flusher = Flusher::new();
    eprintln!("cache flush buffer: {} MiB", flusher.bytes() >> 20);
    let mut baselines = Vec::new();
    let mut measures = Vec::new();
    let mut profiles = Vec::new();
    let mut memory = Vec::new();
    let mut sweep = Vec::new();
    let mut edit = None;

    for (si, &(shape, rows, cols)) in SHAPES.iter().enumerate() {
        let t0 = Instant::now();
        let w = gaussian_vec(rows * cols, 0x5eed_0000 + si as u64);
        let (m0, _) = quant::quantize(&w, rows, cols, &QuantConfig::default()).expect("quantize");
        let mut layers = Vec::new();
        for structure in [Structure::Unstructured, Structure::Chunks] {
            for &s in &SPARSITIES {
                let name = format!("{shape} {} {:.0}%", structure.name(), 100.0 * s);
                layers.push(Layer::build(name, &m0, &w, structure, s));
            }
        }
        eprintln!("{shape}: workloads in {:.1} s", t0.elapsed().as_secs_f64());
        for l in &layers {
            profiles.push(l.profile.clone());
            memory.push(json!({
                "shape": shape,
                "layer": l.name,
                "structure": l.structure.name(),
                "sparsity": l.sparsity,
                "density": l.profile.density,
                "occupancy": l.profile.chunk_occupancy,
                "bits_planes": Footprint::bits_per_weight(&l.dense),
                "bits_bitmap": l.bitmap.bits_per_weight(),
                "bits_packed": l.packed.bits_per_weight(),
                "bits_lists": l.lists.bits_per_weight(),
            }));
        }
        let plan = Planner::default()
            .plan(&layers.iter().map(|l| l.profile.clone()).collect::<Vec<_>>())
            .expect("plan");
        let w16 = to_f16(&w);

        for n in [1, settings.n_big] {
            let x = uniform_vec(n * cols, 0xacc0 + n as u64);
            let x16 = to_f16(&x);
            let a = QuantizedActivations::quantize(&x, n, cols).expect("quantize activations");
            let mut y = vec![0f32; n * rows];
            let mut y16 = vec![f16::ZERO; n * rows];
            let f32_s = best_time(settings.budget, || {
                matmul_f32(Dims::new(rows, cols, n), &w, &x, &mut y, par()).expect("dense f32")
            });
            let f16_s = best_time(settings.budget, || {
                matmul_f16(Dims::new(rows, cols, n), &w16, &x16, &mut y16, par())
                    .expect("dense f16")
            });
            let tern_f32_s = best_time(settings.budget, || {
                core_kernels::gemm_f32(&m0, &x, n, &mut y).expect("dense f32")
            });
            let tern_i8_s = best_time(settings.budget, || {
                core_kernels::gemm_i8(&m0, &a, &mut y).expect("dense i8")
            });
            eprintln!(
                "{shape} n={n}: f32 {} ms, f16 {} ms, ternary f32 {} ms, ternary i8 {} ms",
                ms(f32_s),
                ms(f16_s),
                ms(tern_f32_s),
                ms(tern_i8_s)
            );
            let cold = (n == 1).then(|| {
                let r = settings.cold_reps;
                [
                    best_cold_time(r, &flusher, || {
                        matmul_f32(Dims::new(rows, cols, n), &w, &x, &mut y, par())
                            .expect("dense f32")
                    }),
                    best_cold_time(r, &flusher, || {
                        matmul_f16(Dims::new(rows, cols, n), &w16, &x16, &mut y16, par())
                            .expect("dense f16")
                    }),
                    best_cold_time(r, &flusher, || {
                        core_kernels::gemm_f32(&m0, &x, n, &mut y).expect("dense f32")
                    }),
                    best_cold_time(r, &flusher, || {
                        core_kernels::gemm_i8(&m0, &a, &mut y).expect("dense i8")
                    }),
                ]
            });
            if let Some(c) = cold {
                eprintln!(
                    "{shape} n=1 cold: f32 {} ms, f16 {} ms, ternary f32 {} ms, ternary i8 {} ms",
                    ms(c[0]),
                    ms(c[1]),
                    ms(c[2]),
                    ms(c[3])
                );
            }
            baselines.push(Baseline {
                shape: shape.to_owned(),
                n,
                f32_s,
                f16_s,
                tern_f32_s,
                tern_i8_s,
                cold,
            });

            let check_rows = if n == 1 { rows } else { 64 };
            let a_check = if n == 1 { None } else { Some(a.clone()) };
            for (li, l) in layers.iter().enumerate() {
                // Dense references of the pruned layer (all rows at n = 1, 64 rows otherwise).
                let sub = if n == 1 {
                    l.dense.clone()
                } else {
                    first_rows(&l.dense, check_rows)
                };
                let mut want_i8 = vec![0f32; n * check_rows];
                core_kernels::gemm_i8(&sub, a_check.as_ref().unwrap_or(&a), &mut want_i8)
                    .expect("dense i8");
                let want_f32 = (n == 1).then(|| {
                    let mut v = vec![0f32; rows];
                    core_kernels::gemm_f32(&l.dense, &x, 1, &mut v).expect("dense f32");
                    v
                });
                let planned = plan.layers[li].format;
                // At n = 1 the dense kernel is timed again next to this layer's formats, so
                // the ratios compare measurements taken under the same load.
                let dense_s = if n == 1 {
                    (
                        best_time(settings.budget, || {
                            core_kernels::gemm_f32(&m0, &x, n, &mut y).expect("dense f32")
                        }),
                        best_time(settings.budget, || {
                            core_kernels::gemm_i8(&m0, &a, &mut y).expect("dense i8")
                        }),
                    )
                } else {
                    (tern_f32_s, tern_i8_s)
                };
                for (fname, f, bits) in l.formats() {
                    // The bitmap format runs the packed format's kernels through the dense
                    // planes (it exists for O(1) edits); at the large batch only packed and
                    // lists are timed, to keep the full run short.
                    if fname == "bitmap" && n > 1 && !args.quick {
                        continue;
                    }
                    let cfg = KernelConfig::auto();
                    y.fill(f32::NAN);
                    let f32_s = best_time(settings.budget, || {
                        f.gemm_f32_with(cfg, &x, n, &mut y).expect("sparse f32")
                    });
                    let f32_rel_err = want_f32.as_ref().map(|v| max_rel(&y, v));
                    y.fill(f32::NAN);
                    let i8_s = best_time(settings.budget, || {
                        f.gemm_i8_with(cfg, &a, &mut y).expect("sparse i8")
                    });
                    let i8_exact = (0..n).all(|j| {
                        (0..check_rows).all(|r| {
                            y[j * rows + r].to_bits() == want_i8[j * check_rows + r].to_bits()
                        })
                    });
                    let cold = (n == 1 && fname != "bitmap").then(|| {
                        let r = settings.cold_reps;
                        (
                            best_cold_time(r, &flusher, || {
                                f.gemm_f32_with(cfg, &x, n, &mut y).expect("sparse f32")
                            }),
                            best_cold_time(r, &flusher, || {
                                f.gemm_i8_with(cfg, &a, &mut y).expect("sparse i8")
                            }),
                        )
                    });
                    let is_planned = matches!(
                        (planned, fname),
                        (LayerFormat::ChunkSparse, "packed") | (LayerFormat::IndexSparse, "lists")
                    );
                    measures.push(Measure {
                        shape: shape.to_owned(),
                        n,
                        layer: l.name.clone(),
                        structure: l.structure,
                        sparsity: l.sparsity,
                        density: l.profile.density,
                        occupancy: l.profile.chunk_occupancy,
                        format: fname,
                        f32_s,
                        i8_s,
                        bits,
                        planned: is_planned,
                        i8_exact,
                        f32_rel_err,
                        cold,
                        dense_s,
                    });
                }
                eprintln!(
                    "  {} n={n}: done ({:.0} s elapsed)",
                    l.name,
                    t_start.elapsed().as_secs_f64()
                );
            }
        }

        if si == 0 {
            sweep = run_sweep(&settings, &m0, &w, rows, cols);
            edit = Some(edit_latency(&layers[2].dense));
        }
    }

    let plan = Planner::default().plan(&profiles).expect("plan");
    let md = report_md(
        &args,
        &settings,
        level,
        threads,
        &baselines,
        &measures,
        &memory,
        &sweep,
        edit,
        &plan,
        t_start.elapsed().as_secs_f64(),
    );
    let js = report_json(
        &args, &settings, level, threads, &baselines, &measures, &memory, &sweep, edit, &plan,
    );
    if let Err(e) = std::fs::create_dir_all(&args.out)
        .and_then(|()| std::fs::write(args.out.join("sparsity.md"), &md))
        .and_then(|()| {
            std::fs::write(
                args.out.join("sparsity.json"),
                serde_json::to_string_pretty(&js).unwrap_or_default(),
            )
        })
    {
        eprintln!(
            "bench-sparsity: cannot write to {}: {e}",
            args.out.display()
        );
        std::process::exit(1);
    }
    println!("{md}");
    eprintln!(
        "bench-sparsity: wrote {} and {} in {:.0} s",
        args.out.join("sparsity.md").display(),
        args.out.join("sparsity.json").display(),
        t_start.elapsed().as_secs_f64()
    );
}

/// Density sweep on one shape: where do the sparse formats overtake dense ternary?
fn run_sweep(
    s: &Settings,
    m0: &TernaryMatrix,
    w: &[f32],
    rows: usize,
    cols: usize,
) -> Vec<SweepPoint> {
    let mut out = Vec::new();
    let points: [(Structure, &[f64]); 2] = [
        (
            Structure::Unstructured,
            &[0.60, 0.70, 0.75, 0.80, 0.85, 0.90, 0.95],
        ),
        (Structure::Chunks, &[0.45, 0.55, 0.65, 0.75, 0.85, 0.95]),
    ];
    for n in [1, s.n_sweep] {
        let x = uniform_vec(n * cols, 0x5eeb + n as u64);
        let a = QuantizedActivations::quantize(&x, n, cols).expect("quantize activations");
        let mut y = vec![0f32; n * rows];
        for (structure, sparsities) in points {
            let skip = sparsities.len().saturating_sub(s.sweep_points);
            for &sp in &sparsities[skip..] {
                let l = Layer::build(String::new(), m0, w, structure, sp);
                let cfg = KernelConfig::auto();
                // Dense and sparse are timed next to each other, in two interleaved rounds
                // (minimum of each), so that load from other processes hits both alike.
                let mut best = [f64::INFINITY; 6];
                for _round in 0..2 {
                    let t = [
                        best_time(s.budget, || {
                            core_kernels::gemm_f32(m0, &x, n, &mut y).expect("dense")
                        }),
                        best_time(s.budget, || {
                            l.packed.gemm_f32_with(cfg, &x, n, &mut y).expect("sparse")
                        }),
                        best_time(s.budget, || {
                            l.lists.gemm_f32_with(cfg, &x, n, &mut y).expect("sparse")
                        }),
                        best_time(s.budget, || {
                            core_kernels::gemm_i8(m0, &a, &mut y).expect("dense")
                        }),
                        best_time(s.budget, || {
                            l.packed.gemm_i8_with(cfg, &a, &mut y).expect("sparse")
                        }),
                        best_time(s.budget, || {
                            l.lists.gemm_i8_with(cfg, &a, &mut y).expect("sparse")
                        }),
                    ];
                    for (b, v) in best.iter_mut().zip(t) {
                        *b = b.min(v);
                    }
                }
                let [
                    dense_f32_s,
                    packed_f32_s,
                    lists_f32_s,
                    dense_i8_s,
                    packed_i8_s,
                    lists_i8_s,
                ] = best;
                out.push(SweepPoint {
                    structure,
                    n,
                    density: l.profile.density,
                    occupancy: l.profile.chunk_occupancy,
                    dense_f32_s,
                    dense_i8_s,
                    packed_f32_s,
                    packed_i8_s,
                    lists_f32_s,
                    lists_i8_s,
                    packed_bits: l.packed.bits_per_weight(),
                    lists_bits: l.lists.bits_per_weight(),
                });
            }
        }
        eprintln!("sweep n={n}: done");
    }
    out
}

/// Mean nanoseconds per `modify_dim` (and per plain `TernaryMatrix::set`) over random edits.
fn edit_latency(m: &TernaryMatrix) -> (f64, f64) {
    let (rows, cols) = (m.rows(), m.cols());
    let mut r = SplitMix64::new(0xed17);
    let edits: Vec<(usize, usize, i8)> = (0..1 << 20)
        .map(|_| {
            let v = r.next_u64();
            (
                (v % rows as u64) as usize,
                ((v >> 20) % cols as u64) as usize,
                ((v >> 40) % 3) as i8 - 1,
            )
        })
        .collect();
    let mut bm = BitmapMatrix::new(m.clone());
    let t0 = Instant::now();
    for &(rr, c, t) in &edits {
        std::hint::black_box(bm.modify_dim(rr, c, t).expect("in bounds"));
    }
    let with_bitmap = t0.elapsed().as_secs_f64() * 1e9 / edits.len() as f64;
    let mut plain = m.clone();
    let t0 = Instant::now();
    for &(rr, c, t) in &edits {
        std::hint::black_box(plain.set(rr, c, t).expect("in bounds"));
    }
    let plain_ns = t0.elapsed().as_secs_f64() * 1e9 / edits.len() as f64;
    assert!(
        bm.check_consistency().is_ok(),
        "bitmap consistent after the edit benchmark"
    );
    (with_bitmap, plain_ns)
}

/// Density (or occupancy) where `ratio(x) = sparse / dense` crosses 1, by linear
/// interpolation between the sweep points: `Below(lo)` if the sparse format is slower at every
/// point, `Above(hi)` if it is faster at every point.
fn crossover(points: &[(f64, f64)]) -> Cross {
    let mut p = points.to_vec();
    p.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (Some(&(lo, _)), Some(&(hi, _))) = (p.first(), p.last()) else {
        return Cross::None;
    };
    if p.iter().all(|&(_, r)| r > 1.0) {
        return Cross::Below(lo);
    }
    if p.iter().all(|&(_, r)| r <= 1.0) {
        return Cross::Above(hi);
    }
    // The last point (from the sparse end) where the sparse format still wins.
    p.windows(2)
        .rev()
        .find_map(|w| {
            let ((x0, r0), (x1, r1)) = (w[0], w[1]);
            (r0 <= 1.0 && r1 > 1.0).then(|| Cross::At(x0 + (1.0 - r0) * (x1 - x0) / (r1 - r0)))
        })
        .unwrap_or(Cross::None)
}

/// A measured crossover.
enum Cross {
    At(f64),
    Below(f64),
    Above(f64),
    None,
}

fn fmt_cross(c: Cross) -> String {
    match c {
        Cross::At(v) => format!("{:.1}%", 100.0 * v),
        Cross::Below(v) => format!("< {:.1}%", 100.0 * v),
        Cross::Above(v) => format!("> {:.1}%", 100.0 * v),
        Cross::None => "-".to_owned(),
    }
}

#[allow(clippy::too_many_arguments)]
fn report_md(
    args: &Args,
    s: &Settings,
    level: Level,
    threads: usize,
    baselines: &[Baseline],
    measures: &[Measure],
    memory: &[Value],
    sweep: &[SweepPoint],
    edit: Option<(f64, f64)>,
    plan: &ternary_sparsity::Plan,
    total_s: f64,
) -> String {
    let mut o = String::new();
    let cmd = format!(
        "cargo run --release -p ternary-bench --bin bench-sparsity --{} --out {}",
        if args.quick { " --quick" } else { "" },
        args.out.display()
    );
    let _ = writeln!(
        o,
        "# Sparse ternary kernels{}\n",
        if args.quick { " (quick)" } else { "" }
    );
    let _ = writeln!(o, "- command: `{cmd}`");
    let _ = writeln!(
        o,
        "- machine: {}, {threads} threads, kernel level {level}",
        cpu_model()
    );
    let _ = writeln!(
        o,
        "- batch: n = 1 and n = {} (sweep n = {}); minimum of timed calls after one warm-up (≈ {:.2} s of calls per measurement; a first call over {:.0} s is the measurement)",
        s.n_big, s.n_sweep, s.budget.seconds, s.budget.single_call_s
    );
    let _ = writeln!(
        o,
        "- dense f32/f16: `gemm` 0.19 on the unpruned float weights (pruning does not speed up a dense matmul); dense ternary: `ternary_core::kernels` on the unpruned ternary matrix (its cost does not depend on the zeros)"
    );
    let _ = writeln!(
        o,
        "- sparse formats run `KernelConfig::auto()`; `plan` marks the format the default `Planner` picks; int8 results are checked bit for bit against the dense ternary kernel (all rows at n = 1, 64 rows otherwise)"
    );
    let _ = writeln!(
        o,
        "- load average (1 min) at start / end: {} / {} (the machine may be shared: times are minima over repeated calls)",
        LOAD_AT_START
            .get()
            .map_or("?".to_owned(), |l| format!("{l:.1}")),
        load_average().map_or("?".to_owned(), |l| format!("{l:.1}"))
    );
    let _ = writeln!(o, "- total run time {total_s:.0} s\n");

    let _ = writeln!(o, "## Dense baselines (ms per call)\n");
    let _ = writeln!(
        o,
        "| shape | n | f32 (gemm) | f16 (gemm) | ternary f32 | ternary int8 |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
    for b in baselines {
        let _ = writeln!(
            o,
            "| {} | {} | {} | {} | {} | {} |",
            b.shape,
            b.n,
            ms(b.f32_s),
            ms(b.f16_s),
            ms(b.tern_f32_s),
            ms(b.tern_i8_s)
        );
    }

    for b in baselines {
        let _ = writeln!(o, "\n## {}, n = {}\n", b.shape, b.n);
        let _ = writeln!(
            o,
            "Speed-ups are dense time / sparse time (higher is better). f32 activations vs dense ternary f32, f32 and f16; int8 activations vs dense ternary int8 and f16. At n = 1 the dense ternary kernel is re-timed next to each layer.\n"
        );
        let _ = writeln!(
            o,
            "| structure | zeros | density | chunk occ. | format | f32 ms | × tern f32 | × f32 | × f16 | int8 ms | × tern int8 | × f16 | bits/w | int8 exact |"
        );
        let _ = writeln!(
            o,
            "|---|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        );
        for m in measures.iter().filter(|m| m.shape == b.shape && m.n == b.n) {
            let _ = writeln!(
                o,
                "| {} | {:.0}% | {:.2}% | {:.1}% | {}{} | {} | {:.2} | {:.2} | {:.2} | {} | {:.2} | {:.2} | {:.3} | {} |",
                m.structure.name(),
                100.0 * m.sparsity,
                100.0 * m.density,
                100.0 * m.occupancy,
                m.format,
                if m.planned { " (plan)" } else { "" },
                ms(m.f32_s),
                m.dense_s.0 / m.f32_s,
                b.f32_s / m.f32_s,
                b.f16_s / m.f32_s,
                ms(m.i8_s),
                m.dense_s.1 / m.i8_s,
                b.f16_s / m.i8_s,
                m.bits,
                if m.i8_exact { "yes" } else { "NO" },
            );
        }
    }

    let _ = writeln!(
        o,
        "\n## GEMV with cold caches (n = 1, weights read from memory)\n"
    );
    let _ = writeln!(
        o,
        "Each call runs right after reading a buffer larger than the last-level cache, so the weights come from DRAM as when decoding a model far larger than the cache; minimum of {} calls. Speed-ups are dense time / sparse time, both cold.\n",
        s.cold_reps
    );
    let _ = writeln!(
        o,
        "| shape | f32 (gemm) | f16 (gemm) | ternary f32 | ternary int8 |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|");
    for b in baselines {
        if let Some(c) = b.cold {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} |",
                b.shape,
                ms(c[0]),
                ms(c[1]),
                ms(c[2]),
                ms(c[3])
            );
        }
    }
    let _ = writeln!(
        o,
        "\n| shape | structure | zeros | format | f32 ms | × tern f32 | × f16 | int8 ms | × tern int8 | × f16 |"
    );
    let _ = writeln!(o, "|---|---|---:|---|---:|---:|---:|---:|---:|---:|");
    for b in baselines {
        let Some(c) = b.cold else { continue };
        for m in measures.iter().filter(|m| m.shape == b.shape && m.n == 1) {
            if let Some((f, i)) = m.cold {
                let _ = writeln!(
                    o,
                    "| {} | {} | {:.0}% | {}{} | {} | {:.2} | {:.2} | {} | {:.2} | {:.2} |",
                    m.shape,
                    m.structure.name(),
                    100.0 * m.sparsity,
                    m.format,
                    if m.planned { " (plan)" } else { "" },
                    ms(f),
                    c[2] / f,
                    c[1] / f,
                    ms(i),
                    c[3] / i,
                    c[1] / i
                );
            }
        }
    }

    let _ = writeln!(
        o,
        "\n## Memory (bits per weight, everything in memory counted)\n"
    );
    let _ = writeln!(
        o,
        "| layer | density | planes | planes + bitmap | packed chunks | index lists | best × f16 |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|");
    for v in memory {
        let g = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
        let best = g("bits_packed").min(g("bits_lists")).min(g("bits_planes"));
        let _ = writeln!(
            o,
            "| {} | {:.2}% | {:.3} | {:.3} | {:.3} | {:.3} | {:.1} |",
            v["layer"].as_str().unwrap_or("?"),
            100.0 * g("density"),
            g("bits_planes"),
            g("bits_bitmap"),
            g("bits_packed"),
            g("bits_lists"),
            16.0 / best
        );
    }

    // The specification's bars at 95% pruned.
    let _ = writeln!(o, "\n## Specification bars at 95% pruned\n");
    let _ = writeln!(
        o,
        "| bar | shape | n | structure | best format | measured | pass |"
    );
    let _ = writeln!(o, "|---|---|---:|---|---|---:|---|");
    for b in baselines {
        for structure in [Structure::Unstructured, Structure::Chunks] {
            let at95 = measures.iter().filter(|m| {
                m.shape == b.shape
                    && m.n == b.n
                    && m.structure == structure
                    && (m.sparsity - 0.95).abs() < 1e-9
            });
            if let Some(best) = at95.clone().min_by(|a, c| a.f32_s.total_cmp(&c.f32_s)) {
                let r = b.f16_s / best.f32_s;
                let _ = writeln!(
                    o,
                    "| ≥ 5× over dense f16 (f32 activations) | {} | {} | {} | {} | {:.2}× | {} |",
                    b.shape,
                    b.n,
                    structure.name(),
                    best.format,
                    r,
                    if r >= 5.0 { "yes" } else { "no" }
                );
            }
            if let Some(best) = at95.clone().min_by(|a, c| a.i8_s.total_cmp(&c.i8_s)) {
                let r = b.f16_s / best.i8_s;
                let _ = writeln!(
                    o,
                    "| ≥ 5× over dense f16 (int8 activations) | {} | {} | {} | {} | {:.2}× | {} |",
                    b.shape,
                    b.n,
                    structure.name(),
                    best.format,
                    r,
                    if r >= 5.0 { "yes" } else { "no" }
                );
            }
            if let Some(c) = b.cold {
                let cold = at95
                    .clone()
                    .filter_map(|m| m.cold.map(|(f, i)| (m.format, f, i)));
                if let Some((fmt, f, _)) = cold.clone().min_by(|a, d| a.1.total_cmp(&d.1)) {
                    let r = c[1] / f;
                    let _ = writeln!(
                        o,
                        "| ≥ 5× over dense f16, cold caches (f32 activations) | {} | 1 | {} | {} | {:.2}× | {} |",
                        b.shape,
                        structure.name(),
                        fmt,
                        r,
                        if r >= 5.0 { "yes" } else { "no" }
                    );
                }
                if let Some((fmt, _, i)) = cold.min_by(|a, d| a.2.total_cmp(&d.2)) {
                    let r = c[1] / i;
                    let _ = writeln!(
                        o,
                        "| ≥ 5× over dense f16, cold caches (int8 activations) | {} | 1 | {} | {} | {:.2}× | {} |",
                        b.shape,
                        structure.name(),
                        fmt,
                        r,
                        if r >= 5.0 { "yes" } else { "no" }
                    );
                }
            }
            if b.n == 1
                && let Some(best) = at95.min_by(|a, c| a.bits.total_cmp(&c.bits))
            {
                let r = 16.0 / best.bits;
                let _ = writeln!(
                    o,
                    "| ≥ 20× weight memory vs f16 | {} | - | {} | {} ({:.3} bits/w) | {:.1}× | {} |",
                    b.shape,
                    structure.name(),
                    best.format,
                    best.bits,
                    r,
                    if r >= 20.0 { "yes" } else { "no" }
                );
            }
        }
    }

    if !sweep.is_empty() {
        let _ = writeln!(
            o,
            "\n## Crossover sweep ({}; time relative to dense ternary, < 1 is faster)\n",
            SHAPES[0].0
        );
        let _ = writeln!(
            o,
            "| structure | n | density | chunk occ. | packed f32 | packed int8 | lists f32 | lists int8 | packed bits/w | lists bits/w |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for p in sweep {
            let _ = writeln!(
                o,
                "| {} | {} | {:.2}% | {:.1}% | {:.2} | {:.2} | {:.2} | {:.2} | {:.3} | {:.3} |",
                p.structure.name(),
                p.n,
                100.0 * p.density,
                100.0 * p.occupancy,
                p.packed_f32_s / p.dense_f32_s,
                p.packed_i8_s / p.dense_i8_s,
                p.lists_f32_s / p.dense_f32_s,
                p.lists_i8_s / p.dense_i8_s,
                p.packed_bits,
                p.lists_bits,
            );
        }
        let _ = writeln!(
            o,
            "\nCrossovers (interpolated; below the value the sparse format is faster than dense ternary):\n"
        );
        let _ = writeln!(
            o,
            "| structure | n | lists f32 (density) | lists int8 (density) | packed f32 (occupancy) | packed int8 (occupancy) |"
        );
        let _ = writeln!(o, "|---|---:|---:|---:|---:|---:|");
        for structure in [Structure::Unstructured, Structure::Chunks] {
            for n in [1, s.n_sweep] {
                let pts: Vec<&SweepPoint> = sweep
                    .iter()
                    .filter(|p| p.structure == structure && p.n == n)
                    .collect();
                if pts.is_empty() {
                    continue;
                }
                let by = |x: fn(&SweepPoint) -> f64, r: fn(&SweepPoint) -> f64| {
                    fmt_cross(crossover(
                        &pts.iter().map(|p| (x(p), r(p))).collect::<Vec<_>>(),
                    ))
                };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} |",
                    structure.name(),
                    n,
                    by(|p| p.density, |p| p.lists_f32_s / p.dense_f32_s),
                    by(|p| p.density, |p| p.lists_i8_s / p.dense_i8_s),
                    by(|p| p.occupancy, |p| p.packed_f32_s / p.dense_f32_s),
                    by(|p| p.occupancy, |p| p.packed_i8_s / p.dense_i8_s),
                );
            }
        }
    }

    if let Some((bm, plain)) = edit {
        let _ = writeln!(
            o,
            "\n## Edit latency ({}, 95% unstructured, 2^20 random edits)\n",
            SHAPES[0].0
        );
        let _ = writeln!(o, "| operation | ns per edit |");
        let _ = writeln!(o, "|---|---:|");
        let _ = writeln!(
            o,
            "| `BitmapMatrix::modify_dim` (planes + bitmap) | {bm:.1} |"
        );
        let _ = writeln!(o, "| `TernaryMatrix::set` (planes only) | {plain:.1} |");
    }

    let _ = writeln!(o, "\n## Plan (default `Planner`)\n");
    let _ = write!(o, "{plan}");
    o
}

#[allow(clippy::too_many_arguments)]
fn report_json(
    args: &Args,
    s: &Settings,
    level: Level,
    threads: usize,
    baselines: &[Baseline],
    measures: &[Measure],
    memory: &[Value],
    sweep: &[SweepPoint],
    edit: Option<(f64, f64)>,
    plan: &ternary_sparsity::Plan,
) -> Value {
    json!({
        "quick": args.quick,
        "machine": { "cpu": cpu_model(), "threads": threads, "level": level.name() },
        "n_big": s.n_big,
        "n_sweep": s.n_sweep,
        "baselines": baselines.iter().map(|b| json!({
            "shape": b.shape, "n": b.n, "f32_s": b.f32_s, "f16_s": b.f16_s,
            "ternary_f32_s": b.tern_f32_s, "ternary_i8_s": b.tern_i8_s,
            "cold_s": b.cold.map(|c| json!({"f32": c[0], "f16": c[1], "ternary_f32": c[2], "ternary_i8": c[3]})),
        })).collect::<Vec<_>>(),
        "measures": measures.iter().map(|m| json!({
            "shape": m.shape, "n": m.n, "layer": m.layer, "structure": m.structure.name(),
            "sparsity": m.sparsity, "density": m.density, "occupancy": m.occupancy,
            "format": m.format, "f32_s": m.f32_s, "i8_s": m.i8_s, "bits_per_weight": m.bits,
            "planned": m.planned, "i8_exact": m.i8_exact, "f32_rel_err": m.f32_rel_err,
            "dense_ternary_s": json!({"f32": m.dense_s.0, "i8": m.dense_s.1}),
            "cold_s": m.cold.map(|(f, i)| json!({"f32": f, "i8": i})),
        })).collect::<Vec<_>>(),
        "memory": memory,
        "sweep": sweep.iter().map(|p| json!({
            "structure": p.structure.name(), "n": p.n, "density": p.density, "occupancy": p.occupancy,
            "dense_f32_s": p.dense_f32_s, "dense_i8_s": p.dense_i8_s,
            "packed_f32_s": p.packed_f32_s, "packed_i8_s": p.packed_i8_s,
            "lists_f32_s": p.lists_f32_s, "lists_i8_s": p.lists_i8_s,
            "packed_bits": p.packed_bits, "lists_bits": p.lists_bits,
        })).collect::<Vec<_>>(),
        "edit_ns": edit.map(|(a, b)| json!({ "modify_dim": a, "ternary_set": b })),
        "plan": serde_json::from_str::<Value>(&plan.to_json()).unwrap_or(Value::Null),
    })
}

/// The 1-minute load average when the run started.
static LOAD_AT_START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// `gemm`'s parallelism over rayon's current pool.
fn par() -> gemm::Parallelism {
    parallelism(rayon::current_num_threads())
}
