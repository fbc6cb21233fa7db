//! Conformance checks: every kernel against `ternary-core`'s scalar references.
//!
//! The checks are ordinary generic functions over the runtime (`fn …<R: Runtime>(client, …)`),
//! stamped out per runtime by `tests/<runtime>.rs` and run on real GPUs by the `gpu-bench`
//! binary. Each returns `Err(description)` on the first mismatch. Inputs are fresh pseudo-random
//! data from a seed; every output buffer is poisoned (NaN / `i32::MIN` / `0xDEADBEEF`) before the
//! launch, so an output the kernel fails to write is caught.
//!
//! Tolerances (stated once, here):
//! - integer results (int8 accumulators, popcount dots, quantized activations, planes after
//!   edits, bitmaps) compare exactly;
//! - the attention quantizer's planes and scales compare bit for bit (`f32::to_bits`);
//! - `f32` products: `|y − y_ref| ≤ (cols + 64) · 2⁻²⁴ · Σ_c |s · t · x|` against the `f64`
//!   reference (the worst-case bound of `f32` summation; a missing or wrong weight breaks it);
//! - int8 results: bit-exact for per-row scales; per-group within
//!   `4 · 2⁻²⁴ · s_j · Σ_g |s_g · acc_g|` (a compiler may fuse `sum + s · acc` into an FMA);
//! - attention scores (three `f32` products): relative `1e-6` against `f64`.

use cubecl::prelude::*;
use ternary_core::{QuantizedActivations, ScaleLayout, Scales, TernaryMatrix, reference};

use crate::attention::{self, QkQuant, cpu};
use crate::buffer::DeviceArray;
use crate::edit::{Edit, launch_edits};
use crate::error::KernelError;
use crate::int8::{launch_gemm_i8, launch_quantize_into};
use crate::matrix::{DeviceActivations, DeviceMatrix, DeviceQuantized};
use crate::plan::{GemmStrategy, Plan};
use crate::skip::{DeviceBitmap, launch_gemv_skip};
use crate::{DeviceCaps, launch_gemm};
use ternary_core::ChunkBitmap;
use ternary_core::quant::attention::{AttentionQuant, ScaleRule, Threshold};
use ternary_core::rng::SplitMix64;

/// Outcome of one check: `Err` describes the first mismatch.
pub type Check = std::result::Result<(), String>;

fn dev<T>(what: &str, r: crate::Result<T>) -> std::result::Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// One matrix-product test case.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GemmCase {
    /// Output rows.
    pub rows: usize,
    /// Input columns.
    pub cols: usize,
    /// Tokens.
    pub n: usize,
    /// Scale layout.
    pub layout: ScaleLayout,
    /// Probability that a weight is zero.
    pub zero_fraction: f64,
    /// Seed of the inputs.
    pub seed: u64,
}

impl GemmCase {
    /// A case with per-row scales, a third of the weights zero.
    pub fn new(rows: usize, cols: usize, n: usize, seed: u64) -> Self {
        Self {
            rows,
            cols,
            n,
            layout: ScaleLayout::PerRow,
            zero_fraction: 1.0 / 3.0,
            seed,
        }
    }

    /// The same case with per-group scales of `group_size` columns.
    pub fn per_group(self, group_size: usize) -> Self {
        Self {
            layout: ScaleLayout::PerGroup { group_size },
            ..self
        }
    }

    /// The same case with another zero fraction.
    pub fn zeros(self, zero_fraction: f64) -> Self {
        Self {
            zero_fraction,
            ..self
        }
    }
}

/// A random matrix: trits with the given zero fraction, scales uniform in `[0.05, 2)`.
pub fn random_matrix(
    rng: &mut SplitMix64,
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
    zero_fraction: f64,
) -> TernaryMatrix {
    let trits: Vec<i8> = (0..rows * cols).map(|_| rng.trit(zero_fraction)).collect();
    let scales: Vec<f32> = (0..rows * layout.groups_per_row(cols))
        .map(|_| rng.range_f32(0.05, 2.0))
        .collect();
    TernaryMatrix::from_trits(rows, cols, &trits, Scales::new(layout, scales))
        .expect("random_matrix: generated shapes are consistent")
}

/// Random activations, standard normal.
pub fn random_activations(rng: &mut SplitMix64, n: usize, cols: usize) -> Vec<f32> {
    (0..n * cols).map(|_| rng.normal()).collect()
}

/// Compares `y` with the `f64` reference under the `f32` tolerance of the module docs.
pub fn compare_f32(
    what: &str,
    y: &[f32],
    reference: &[f64],
    magnitude: &[f64],
    cols: usize,
) -> Check {
    if y.len() != reference.len() {
        return Err(format!(
            "{what}: {} outputs, expected {}",
            y.len(),
            reference.len()
        ));
    }
    let unit = (cols as f64 + 64.0) * 2f64.powi(-24);
    for (i, ((&v, &e), &mag)) in y.iter().zip(reference).zip(magnitude).enumerate() {
        let err = (f64::from(v) - e).abs();
        if !v.is_finite() || err > unit * mag {
            return Err(format!(
                "{what}: output {i} = {v}, reference {e}, |err| {err:.3e} > {:.3e}",
                unit * mag
            ));
        }
    }
    Ok(())
}

/// Float GEMM/GEMV with `strategy` against `reference::gemm_f32` (`f64`).
pub fn gemm_matches_reference<R: Runtime>(
    client: &ComputeClient<R>,
    case: GemmCase,
    strategy: GemmStrategy,
) -> std::result::Result<Plan, String> {
    let mut rng = SplitMix64::new(case.seed);
    let m = random_matrix(
        &mut rng,
        case.rows,
        case.cols,
        case.layout,
        case.zero_fraction,
    );
    let x = random_activations(&mut rng, case.n, case.cols);
    let dm = dev("upload matrix", DeviceMatrix::upload(client, &m))?;
    let dx = dev(
        "upload x",
        DeviceActivations::upload(client, &x, case.n, case.cols),
    )?;
    let y = DeviceArray::<R, f32>::filled(client, case.n * case.rows, f32::NAN);
    let plan = dev("launch_gemm", launch_gemm(client, &dm, &dx, &y, strategy))?;
    let got = dev("read y", y.read(client))?;
    let want = reference::gemm_f32(&m, &x, case.n).map_err(|e| e.to_string())?;
    compare_f32(
        &format!("{case:?} {plan:?}"),
        &got,
        &want,
        &reference::abs_mass(&m, &x, case.n),
        case.cols,
    )?;
    Ok(plan)
}

/// `f16` activations: on a device with `f16` storage, against the reference over the same
/// (rounded) values; elsewhere the upload must fail with [`KernelError::Unsupported`].
pub fn gemm_f16_matches_reference<R: Runtime>(
    client: &ComputeClient<R>,
    case: GemmCase,
    strategy: GemmStrategy,
) -> Check {
    let mut rng = SplitMix64::new(case.seed);
    let m = random_matrix(
        &mut rng,
        case.rows,
        case.cols,
        case.layout,
        case.zero_fraction,
    );
    let x16: Vec<half::f16> = random_activations(&mut rng, case.n, case.cols)
        .into_iter()
        .map(half::f16::from_f32)
        .collect();
    let x: Vec<f32> = x16.iter().map(|v| v.to_f32()).collect();
    let dm = dev("upload matrix", DeviceMatrix::upload(client, &m))?;
    let dx = match DeviceActivations::upload_f16(client, &x16, case.n, case.cols) {
        Ok(dx) => dx,
        Err(KernelError::Unsupported(_)) if !DeviceCaps::of(client).f16 => return Ok(()),
        Err(e) => return Err(format!("upload f16: {e}")),
    };
    let y = DeviceArray::<R, f32>::filled(client, case.n * case.rows, f32::NAN);
    let plan = dev(
        "launch_gemm f16",
        launch_gemm(client, &dm, &dx, &y, strategy),
    )?;
    let got = dev("read y", y.read(client))?;
    let want = reference::gemm_f32(&m, &x, case.n).map_err(|e| e.to_string())?;
    compare_f32(
        &format!("f16 {case:?} {plan:?}"),
        &got,
        &want,
        &reference::abs_mass(&m, &x, case.n),
        case.cols,
    )
}

/// Device quantization against `QuantizedActivations::quantize`, exactly (values and scales).
pub fn quantize_matches_reference<R: Runtime>(
    client: &ComputeClient<R>,
    n: usize,
    cols: usize,
    seed: u64,
) -> Check {
    let mut rng = SplitMix64::new(seed);
    let mut x = random_activations(&mut rng, n, cols);
    // Exercise rounding ties and an all-zero token.
    if n > 0 && cols > 1 {
        x[0] = 127.0;
        x[1] = 0.5;
        if cols > 2 {
            x[2] = -0.5;
        }
        // Ties to even: 1.5 → 2, 2.5 → 2, −1.5 → −2, −2.5 → −2.
        for (i, v) in [1.5f32, 2.5, -1.5, -2.5].into_iter().enumerate() {
            if cols > 3 + i {
                x[3 + i] = v;
            }
        }
    }
    if n > 1 {
        x[cols..2 * cols].fill(0.0);
    }
    let host = QuantizedActivations::quantize(&x, n, cols).map_err(|e| e.to_string())?;
    let dx = dev("upload x", DeviceActivations::upload(client, &x, n, cols))?;
    let dq = dev("poisoned", DeviceQuantized::poisoned(client, n, cols))?;
    dev("launch_quantize", launch_quantize_into(client, &dx, &dq))?;
    let (q, s) = dev("read q", dq.read(client))?;
    for j in 0..n {
        if s[j].to_bits() != host.scales()[j].to_bits() {
            return Err(format!("token {j}: scale {} != {}", s[j], host.scales()[j]));
        }
        for c in 0..cols {
            let (a, b) = (q[j * cols + c], host.row(j)[c]);
            if a != b {
                return Err(format!(
                    "q[{j}, {c}] = {a}, expected {b} (x = {})",
                    x[j * cols + c]
                ));
            }
        }
    }
    Ok(())
}

/// Int8 GEMM against `reference::gemm_i8`: the integer part exactly (unit scales make
/// `y = Σ_g acc_g`, exact in `f32`), then real scales (bit-exact per row, tolerance per group),
/// then the device-quantization → product pipeline.
pub fn gemm_i8_matches_reference<R: Runtime>(client: &ComputeClient<R>, case: GemmCase) -> Check {
    let mut rng = SplitMix64::new(case.seed);
    let m = random_matrix(
        &mut rng,
        case.rows,
        case.cols,
        case.layout,
        case.zero_fraction,
    );
    let x = random_activations(&mut rng, case.n, case.cols);
    let a = QuantizedActivations::quantize(&x, case.n, case.cols).map_err(|e| e.to_string())?;
    let what = format!("int8 {case:?}");

    // 1. Integer part: unit weight scales and unit token scales.
    let ones = Scales::new(case.layout, vec![1.0; m.scales().values().len()]);
    let mut unit = m.clone();
    unit.set_scales(ones).map_err(|e| e.to_string())?;
    let q: Vec<i8> = (0..case.n)
        .flat_map(|j| a.row(j)[..case.cols].to_vec())
        .collect();
    let a1 = QuantizedActivations::from_parts(case.n, case.cols, &q, vec![1.0; case.n])
        .map_err(|e| e.to_string())?;
    let acc = reference::gemm_i8_accumulators(&unit, &a1).map_err(|e| e.to_string())?;
    let groups = case.layout.groups_per_row(case.cols);
    let got = run_i8(
        client,
        &unit,
        &DeviceQuantized::upload(client, &a1).map_err(|e| e.to_string())?,
    )?;
    for (o, &v) in got.iter().enumerate() {
        let exact: i64 = acc[o * groups..(o + 1) * groups]
            .iter()
            .map(|&v| i64::from(v))
            .sum();
        if v != exact as f32 || v.to_bits() != (exact as f32).to_bits() {
            return Err(format!(
                "{what}: integer output {o} = {v}, expected {exact}"
            ));
        }
    }

    // 2. Real scales, host-quantized activations.
    let want = reference::gemm_i8(&m, &a).map_err(|e| e.to_string())?;
    let acc = reference::gemm_i8_accumulators(&m, &a).map_err(|e| e.to_string())?;
    let da = DeviceQuantized::upload(client, &a).map_err(|e| e.to_string())?;
    let got = run_i8(client, &m, &da)?;
    compare_i8(&what, &m, &a, &acc, &got, &want)?;

    // 3. Quantized on the device.
    let dx = dev(
        "upload x",
        DeviceActivations::upload(client, &x, case.n, case.cols),
    )?;
    let dq = dev(
        "poisoned",
        DeviceQuantized::poisoned(client, case.n, case.cols),
    )?;
    dev("launch_quantize", launch_quantize_into(client, &dx, &dq))?;
    let got = run_i8(client, &m, &dq)?;
    compare_i8(
        &format!("{what} (device quantized)"),
        &m,
        &a,
        &acc,
        &got,
        &want,
    )
}

fn run_i8<R: Runtime>(
    client: &ComputeClient<R>,
    m: &TernaryMatrix,
    a: &DeviceQuantized<R>,
) -> std::result::Result<Vec<f32>, String> {
    let dm = dev("upload matrix", DeviceMatrix::upload(client, m))?;
    let y = DeviceArray::<R, f32>::filled(client, a.n() * m.rows(), f32::NAN);
    dev("launch_gemm_i8", launch_gemm_i8(client, &dm, a, &y, None))?;
    dev("read y", y.read(client))
}

fn compare_i8(
    what: &str,
    m: &TernaryMatrix,
    a: &QuantizedActivations,
    acc: &[i32],
    got: &[f32],
    want: &[f32],
) -> Check {
    let rows = m.rows();
    let groups = m.scales().layout().groups_per_row(m.cols());
    let s = m.scales().values();
    for (o, (&g, &w)) in got.iter().zip(want).enumerate() {
        let (j, r) = (o / rows.max(1), o % rows.max(1));
        let ok = if groups <= 1 {
            g.to_bits() == w.to_bits()
        } else {
            let mag: f64 = (0..groups)
                .map(|k| (f64::from(s[r * groups + k]) * f64::from(acc[o * groups + k])).abs())
                .sum::<f64>()
                * f64::from(a.scales()[j]);
            g.is_finite() && (f64::from(g) - f64::from(w)).abs() <= 4.0 * 2f64.powi(-24) * mag
        };
        if !ok {
            return Err(format!("{what}: output {o} = {g}, reference {w}"));
        }
    }
    Ok(())
}

/// A batch of random edits (with duplicates) against sequential `TernaryMatrix::set`.
pub fn edits_match_reference<R: Runtime>(
    client: &ComputeClient<R>,
    rows: usize,
    cols: usize,
    count: usize,
    seed: u64,
) -> Check {
    let mut rng = SplitMix64::new(seed);
    let m = random_matrix(&mut rng, rows, cols, ScaleLayout::PerRow, 0.4);
    let mut edits: Vec<Edit> = (0..count)
        .map(|_| Edit {
            row: rng.below(rows),
            col: rng.below(cols),
            value: rng.trit(1.0 / 3.0),
        })
        .collect();
    // Duplicates of one position, and several edits within one word.
    if count >= 4 {
        edits[1] = Edit {
            value: -1,
            ..edits[0]
        };
        edits[2] = Edit {
            value: 1,
            ..edits[0]
        };
        edits[3] = Edit {
            col: edits[0].col ^ 1,
            value: -1,
            ..edits[0]
        };
        if edits[3].col >= cols {
            edits[3].col = edits[0].col;
        }
    }
    let mut host = m.clone();
    let want_old: Vec<i8> = edits
        .iter()
        .map(|e| host.set(e.row, e.col, e.value))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let dm = dev("upload matrix", DeviceMatrix::upload(client, &m))?;
    let old = dev("launch_edits", launch_edits(client, &dm, &edits))?;
    if old != want_old {
        return Err(format!("old trits differ: {old:?} vs {want_old:?}"));
    }
    // `download` validates plus & minus == 0 and zero padding.
    let got = dev("download", dm.download(client))?;
    if got != host {
        let (a, b) = (got.to_trits(), host.to_trits());
        let i = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
        return Err(format!(
            "matrix after edits differs at ({}, {}): {} vs {}",
            i / cols,
            i % cols,
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0)
        ));
    }
    // Invalid edits are errors and change nothing.
    let bad = [
        Edit {
            row: rows,
            col: 0,
            value: 1,
        },
        Edit {
            row: 0,
            col: 0,
            value: 2,
        },
    ];
    for e in bad {
        match launch_edits(client, &dm, &[e]) {
            Err(KernelError::Core(_)) => {}
            other => return Err(format!("edit {e:?} should fail, got {other:?}")),
        }
    }
    Ok(())
}

/// Attention: device planes and scales equal the host quantization bit for bit, the integer
/// dots equal `reference::ternary_dot` / `binary_dot`, and the scores match the `f64` reference
/// (relative `1e-6`, masked entries `−∞`).
#[allow(clippy::too_many_arguments)]
pub fn attention_matches_reference<R: Runtime>(
    client: &ComputeClient<R>,
    nq: usize,
    nk: usize,
    heads: usize,
    dim: usize,
    quant: QkQuant,
    causal: bool,
    seed: u64,
) -> Check {
    let mut rng = SplitMix64::new(seed);
    let q = random_activations(&mut rng, nq * heads, dim);
    let k = random_activations(&mut rng, nk * heads, dim);
    let what = format!("attention nq={nq} nk={nk} heads={heads} dim={dim} {quant} causal={causal}");
    let dq = DeviceArray::<R, f32>::from_slice(client, &q);
    let dk = DeviceArray::<R, f32>::from_slice(client, &k);
    let qh = dev(
        "quantize Q",
        attention::launch_quantize_heads(client, &dq, nq, heads, dim, quant),
    )?;
    let kh = dev(
        "quantize K",
        attention::launch_quantize_heads(client, &dk, nk, heads, dim, quant),
    )?;
    let hq = dev("host Q", cpu::quantize_heads(&q, nq * heads, dim, quant))?;
    let hk = dev("host K", cpu::quantize_heads(&k, nk * heads, dim, quant))?;
    for (name, dh, hh) in [("Q", &qh, &hq), ("K", &kh, &hk)] {
        let (p, mi, a) = (
            dev("read", dh.plus.read(client))?,
            dev("read", dh.minus.read(client))?,
            dev("read", dh.alpha.read(client))?,
        );
        if p != hh.plus || mi != hh.minus {
            return Err(format!(
                "{what}: {name} planes differ from the host quantization"
            ));
        }
        if a.iter()
            .zip(&hh.alpha)
            .any(|(x, y)| x.to_bits() != y.to_bits())
        {
            return Err(format!(
                "{what}: {name} scales differ: {a:?} vs {:?}",
                hh.alpha
            ));
        }
    }
    let dots = DeviceArray::<R, i32>::filled(client, heads * nq * nk, i32::MIN);
    dev(
        "launch_qk_dots",
        attention::launch_qk_dots(client, &qh, &kh, &dots),
    )?;
    let dots = dev("read dots", dots.read(client))?;
    for h in 0..heads {
        for i in 0..nq {
            for j in 0..nk {
                let want = cpu::dot(&hq, i * heads + h, &hk, j * heads + h);
                let got = dots[(h * nq + i) * nk + j];
                if i64::from(got) != want {
                    return Err(format!(
                        "{what}: dot[{h}, {i}, {j}] = {got}, expected {want}"
                    ));
                }
            }
        }
    }
    let scale = 1.0 / (dim.max(1) as f32).sqrt();
    let out = DeviceArray::<R, f32>::filled(client, heads * nq * nk, f32::NAN);
    dev(
        "launch_qk_scores",
        attention::launch_qk_scores(client, &qh, &kh, scale, causal, &out),
    )?;
    let got = dev("read scores", out.read(client))?;
    let want = dev(
        "host scores",
        cpu::scores(&hq, &hk, nq, nk, heads, scale, causal),
    )?;
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let ok = if w.is_infinite() {
            g == f32::NEG_INFINITY
        } else {
            g.is_finite() && (f64::from(g) - w).abs() <= 1e-6 * w.abs() + 1e-30
        };
        if !ok {
            return Err(format!("{what}: score {i} = {g}, reference {w}"));
        }
    }
    Ok(())
}

/// Head vectors for the quantizer check, `count × dim` values, a mix per vector: all zero;
/// values in `{0, ±1, ±2}` (ties at the threshold); Gaussian times `10^u`, `u ∈ [−3, 3)`;
/// Gaussian times `2^k` per value, `k ∈ [−20, 20]` (a sum whose order matters); a NaN or ±∞ at
/// a random place; values near `10³⁸` (sums beyond `f32::MAX`); subnormals (Gaussian times
/// `10⁻⁴⁰`: a device that flushes them to zero fails, as the rule keeps them); plain Gaussian.
pub fn attention_vectors(rng: &mut SplitMix64, count: usize, dim: usize) -> Vec<f32> {
    let mut v = Vec::with_capacity(count * dim);
    for _ in 0..count {
        let start = v.len();
        match rng.below(10) {
            0 => v.extend(std::iter::repeat_n(0.0, dim)),
            1 => v.extend((0..dim).map(|_| [0.0f32, 1.0, -1.0, 2.0, -2.0][rng.below(5)])),
            2 => {
                let s = 10f32.powf(rng.range_f32(-3.0, 3.0));
                v.extend((0..dim).map(|_| s * rng.normal()));
            }
            3 => v.extend((0..dim).map(|_| {
                let k = rng.below(41) as i32 - 20;
                rng.normal() * 2f32.powi(k)
            })),
            4 => {
                v.extend((0..dim).map(|_| rng.normal()));
                if dim > 0 {
                    let bad = [f32::NAN, f32::INFINITY, f32::NEG_INFINITY][rng.below(3)];
                    v[start + rng.below(dim)] = bad;
                }
            }
            5 => v.extend((0..dim).map(|_| rng.range_f32(-3.0e38, 3.0e38))),
            6 => v.extend((0..dim).map(|_| rng.normal() * 1e-40)),
            _ => v.extend((0..dim).map(|_| rng.normal())),
        }
    }
    v
}

/// The attention quantizer: planes and scales from the device kernel equal
/// `ternary_core::quant::attention` on the host bit for bit (scales compared with
/// `to_bits`), for `count` vectors of `dim` values ([`attention_vectors`]) quantized with
/// `quant`.
pub fn attention_quantizer_matches_core<R: Runtime>(
    client: &ComputeClient<R>,
    count: usize,
    dim: usize,
    quant: QkQuant,
    seed: u64,
) -> Check {
    let mut rng = SplitMix64::new(seed);
    let x = attention_vectors(&mut rng, count, dim);
    let what = format!("quantize {count} vectors of {dim} with {quant} (seed {seed})");
    let dx = DeviceArray::<R, f32>::from_slice(client, &x);
    let dh = dev(
        &what,
        attention::launch_quantize_heads(client, &dx, count, 1, dim, quant),
    )?;
    let host = dev(&what, cpu::quantize_heads(&x, count, dim, quant))?;
    let (wpv, spv) = (quant.words_per_vector(dim), quant.scales_per_vector(dim));
    let (plus, minus, alpha) = (
        dev("read", dh.plus.read(client))?,
        dev("read", dh.minus.read(client))?,
        dev("read", dh.alpha.read(client))?,
    );
    if (plus.len(), minus.len(), alpha.len()) != (count * wpv, count * wpv, count * spv) {
        return Err(format!(
            "{what}: device buffers of {} / {} words and {} scales",
            plus.len(),
            minus.len(),
            alpha.len()
        ));
    }
    for v in 0..count {
        let words = v * wpv..(v + 1) * wpv;
        let scales = v * spv..(v + 1) * spv;
        let bits = |a: &[f32]| a.iter().map(|s| s.to_bits()).collect::<Vec<_>>();
        if plus[words.clone()] != host.plus[words.clone()]
            || minus[words.clone()] != host.minus[words.clone()]
            || bits(&alpha[scales.clone()]) != bits(&host.alpha[scales.clone()])
        {
            return Err(format!(
                "{what}: vector {v} differs\n  x      {:?}\n  device +{:08x?} -{:08x?} {:?}\n  \
                 host   +{:08x?} -{:08x?} {:?}",
                &x[v * dim..(v + 1) * dim],
                &plus[words.clone()],
                &minus[words.clone()],
                &alpha[scales.clone()],
                &host.plus[words.clone()],
                &host.minus[words],
                &host.alpha[scales],
            ));
        }
    }
    Ok(())
}

/// Every attention quantizer configuration the checks cover: both thresholds and scale rules,
/// groups (whole vector, 1, 8, 48, 64, 1000), one and two levels, and binary.
pub fn attention_quantizers() -> Vec<QkQuant> {
    let mut out = vec![QkQuant::Binary];
    for threshold in [Threshold::HalfMean, Threshold::Twn] {
        for scale in [ScaleRule::AbsMean, ScaleRule::Refit] {
            for group in [None, Some(1), Some(8), Some(48), Some(64), Some(1000)] {
                for levels in [1, 2] {
                    out.push(QkQuant::Ternary(AttentionQuant {
                        threshold,
                        scale,
                        group,
                        levels,
                    }));
                }
            }
        }
    }
    out
}

/// Dimensions of the quantizer check.
pub const ATTENTION_QUANT_DIMS: [usize; 5] = [1, 63, 64, 65, 576];

/// The attention quantizer, device against host, bit for bit: every configuration of
/// [`attention_quantizers`] on 12 vectors of each of [`ATTENTION_QUANT_DIMS`], plus the empty
/// cases (no vectors; vectors of no values). Inputs from `seed`.
pub fn attention_quantizer_suite_seeded<R: Runtime>(
    client: &ComputeClient<R>,
    seed: u64,
) -> SuiteResult {
    let mut count = 0usize;
    for (c, quant) in attention_quantizers().into_iter().enumerate() {
        for (d, &dim) in ATTENTION_QUANT_DIMS.iter().enumerate() {
            let case_seed = seed.wrapping_add((c * 16 + d) as u64);
            attention_quantizer_matches_core(client, 12, dim, quant, case_seed)?;
            count += 1;
        }
        attention_quantizer_matches_core(client, 0, 64, quant, seed)?;
        attention_quantizer_matches_core(client, 3, 0, quant, seed)?;
        count += 2;
    }
    Ok(Ran::Passed(count))
}

/// [`attention_quantizer_suite_seeded`] with the fixed seed `9000`.
pub fn attention_quantizer_suite<R: Runtime>(client: &ComputeClient<R>) -> SuiteResult {
    attention_quantizer_suite_seeded(client, 9000)
}

/// Block skipping: the device-built bitmap equals the host one, and the skipping GEMV matches
/// the reference (same `f32` tolerance as the dense product).
pub fn skip_matches_reference<R: Runtime>(client: &ComputeClient<R>, case: GemmCase) -> Check {
    let mut rng = SplitMix64::new(case.seed);
    let mut m = random_matrix(
        &mut rng,
        case.rows,
        case.cols,
        case.layout,
        case.zero_fraction,
    );
    // Zero whole chunks and whole rows so that skipping has something to skip.
    let wpr = m.words_per_row();
    let (mut plus, mut minus, scales) = m.clone().into_parts();
    for r in 0..case.rows {
        let dead_row = rng.below(5) == 0;
        for w in 0..wpr {
            if dead_row || rng.below(2) == 0 {
                plus[r * wpr + w] = 0;
                minus[r * wpr + w] = 0;
            }
        }
    }
    m = TernaryMatrix::from_planes(case.rows, case.cols, plus, minus, scales)
        .map_err(|e| e.to_string())?;
    let x = random_activations(&mut rng, case.n, case.cols);
    let dm = dev("upload matrix", DeviceMatrix::upload(client, &m))?;
    let host_bitmap = ChunkBitmap::from_matrix(&m);
    let db = dev("build bitmap", DeviceBitmap::build(client, &dm))?;
    let got_bitmap = dev("read bitmap", db.read(client))?;
    if got_bitmap != host_bitmap {
        return Err(format!(
            "{case:?}: device bitmap differs from the host bitmap"
        ));
    }
    let dx = dev(
        "upload x",
        DeviceActivations::upload(client, &x, case.n, case.cols),
    )?;
    let y = DeviceArray::<R, f32>::filled(client, case.n * case.rows, f32::NAN);
    dev(
        "launch_gemv_skip",
        launch_gemv_skip(client, &dm, &db, &dx, &y),
    )?;
    let got = dev("read y", y.read(client))?;
    let want = reference::gemm_f32(&m, &x, case.n).map_err(|e| e.to_string())?;
    compare_f32(
        &format!("skip {case:?}"),
        &got,
        &want,
        &reference::abs_mass(&m, &x, case.n),
        case.cols,
    )
}

/// Activations that are already on the device, unpadded (as a Burn tensor's buffer), through
/// [`DeviceActivations::from_device`] (padded by a kernel, or wrapped when `cols % 64 == 0`) and
/// a handle re-wrapped with [`DeviceArray::from_handle`], against the reference.
pub fn device_activations_match_reference<R: Runtime>(
    client: &ComputeClient<R>,
    case: GemmCase,
) -> Check {
    let mut rng = SplitMix64::new(case.seed);
    let m = random_matrix(
        &mut rng,
        case.rows,
        case.cols,
        case.layout,
        case.zero_fraction,
    );
    let x = random_activations(&mut rng, case.n, case.cols);
    let dm = dev("upload matrix", DeviceMatrix::upload(client, &m))?;
    let raw = DeviceArray::<R, f32>::from_slice(client, &x);
    let foreign = dev(
        "from_handle",
        DeviceArray::<R, f32>::from_handle(raw.handle().clone(), x.len()),
    )?;
    let dx = dev(
        "from_device",
        DeviceActivations::from_device(client, foreign, case.n, case.cols),
    )?;
    let y = DeviceArray::<R, f32>::filled(client, case.n * case.rows, f32::NAN);
    let plan = dev(
        "launch_gemm",
        launch_gemm(client, &dm, &dx, &y, GemmStrategy::Auto),
    )?;
    let got = dev("read y", y.read(client))?;
    let want = reference::gemm_f32(&m, &x, case.n).map_err(|e| e.to_string())?;
    compare_f32(
        &format!("from_device {case:?} {plan:?}"),
        &got,
        &want,
        &reference::abs_mass(&m, &x, case.n),
        case.cols,
    )?;
    // The input buffer is read, never written.
    let back = dev("read x", raw.read(client))?;
    if back != x {
        return Err(format!("from_device {case:?}: the input buffer changed"));
    }
    Ok(())
}

/// Device-resident activations over edge shapes (padded and unpadded widths, 1 to 70 tokens),
/// plus the length checks of [`DeviceArray::from_handle`] and
/// [`DeviceActivations::from_device`].
pub fn device_activations_suite<R: Runtime>(client: &ComputeClient<R>) -> SuiteResult {
    let cases = [
        (67, 1, 1),
        (67, 33, 3),
        (67, 63, 8),
        (67, 64, 1),
        (67, 65, 17),
        (130, 576, 3),
        (67, 1536, 70),
        (5, 0, 2),
        (5, 64, 0),
    ];
    let mut count = 0;
    for (i, &(r, c, n)) in cases.iter().enumerate() {
        let case = GemmCase::new(r, c, n, 9000 + i as u64);
        device_activations_match_reference(client, case)?;
        count += 1;
        if c >= 64 {
            device_activations_match_reference(client, case.per_group(64))?;
            count += 1;
        }
    }
    let raw = DeviceArray::<R, f32>::from_slice(client, &[0.5; 12]);
    match DeviceArray::<R, f32>::from_handle(raw.handle().clone(), 13) {
        Err(KernelError::Shape(_)) => {}
        other => {
            return Err(format!(
                "from_handle past the end should fail, got {other:?}"
            ));
        }
    }
    let short = dev(
        "from_handle",
        DeviceArray::<R, f32>::from_handle(raw.handle().clone(), 12),
    )?;
    match DeviceActivations::from_device(client, short, 2, 7) {
        Err(KernelError::Shape(_)) => {}
        other => {
            return Err(format!(
                "from_device with a wrong length should fail, got {other:?}"
            ));
        }
    }
    Ok(Ran::Passed(count))
}

/// Bad shapes give errors, never panics or launches.
pub fn bad_shapes_are_errors<R: Runtime>(client: &ComputeClient<R>) -> Check {
    let mut rng = SplitMix64::new(7);
    let m = random_matrix(&mut rng, 5, 40, ScaleLayout::PerRow, 0.3);
    let dm = dev("upload", DeviceMatrix::upload(client, &m))?;
    let expect_shape = |what: &str, r: crate::Result<()>| match r {
        Err(KernelError::Shape(_)) => Ok(()),
        other => Err(format!("{what}: expected a shape error, got {other:?}")),
    };
    let x = dev(
        "x",
        DeviceActivations::upload(client, &[0.5; 2 * 41], 2, 41),
    )?;
    let y = DeviceArray::<R, f32>::filled(client, 10, f32::NAN);
    expect_shape(
        "cols mismatch",
        launch_gemm(client, &dm, &x, &y, GemmStrategy::Auto).map(|_| ()),
    )?;
    let x = dev(
        "x",
        DeviceActivations::upload(client, &[0.5; 2 * 40], 2, 40),
    )?;
    let y_bad = DeviceArray::<R, f32>::filled(client, 9, f32::NAN);
    expect_shape(
        "y too short",
        launch_gemm(client, &dm, &x, &y_bad, GemmStrategy::Auto).map(|_| ()),
    )?;
    expect_shape(
        "x length",
        DeviceActivations::<R>::upload(client, &[0.5; 7], 2, 4).map(|_| ()),
    )?;
    let a = QuantizedActivations::quantize(&[0.5; 2 * 41], 2, 41).map_err(|e| e.to_string())?;
    let da = dev("upload q", DeviceQuantized::upload(client, &a))?;
    expect_shape(
        "int8 cols",
        launch_gemm_i8(client, &dm, &da, &y, None).map(|_| ()),
    )?;
    let other = random_matrix(&mut rng, 6, 40, ScaleLayout::PerRow, 0.3);
    let db = DeviceBitmap::upload(client, &ChunkBitmap::from_matrix(&other));
    expect_shape(
        "bitmap rows",
        launch_gemv_skip(client, &dm, &db, &x, &y).map(|_| ()),
    )?;
    let heads = DeviceArray::<R, f32>::from_slice(client, &[0.5; 12]);
    expect_shape(
        "head vectors",
        attention::launch_quantize_heads(client, &heads, 2, 2, 4, QkQuant::TWN).map(|_| ()),
    )?;
    let grouped = QkQuant::Ternary(AttentionQuant {
        group: Some(2),
        ..AttentionQuant::abs_mean()
    });
    let gq = dev(
        "grouped heads",
        attention::launch_quantize_heads(client, &heads, 3, 1, 4, grouped),
    )?;
    let scores = DeviceArray::<R, f32>::filled(client, 9, f32::NAN);
    match attention::launch_qk_scores(client, &gq, &gq, 1.0, false, &scores) {
        Err(KernelError::Config(_)) => {}
        other => return Err(format!("scoring grouped heads should fail, got {other:?}")),
    }
    let zero_group = QkQuant::Ternary(AttentionQuant {
        group: Some(0),
        ..AttentionQuant::abs_mean()
    });
    match attention::launch_quantize_heads(client, &heads, 3, 1, 4, zero_group) {
        Err(KernelError::Core(_)) => {}
        other => return Err(format!("group size 0 should fail, got {other:?}")),
    }
    match DeviceActivations::upload(client, &[f32::NAN; 40], 1, 40) {
        Err(KernelError::Core(_)) => {}
        other => return Err(format!("NaN activations should fail, got {other:?}")),
    }
    Ok(())
}

/// What a suite did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ran {
    /// This many checks ran and passed.
    Passed(usize),
    /// The device lacks the feature; the kernel returned [`KernelError::Unsupported`] with this
    /// message (asserted, not skipped silently).
    Unsupported(String),
}

/// Outcome of a suite.
pub type SuiteResult = std::result::Result<Ran, String>;

/// Column counts of the edge-shape cases.
pub const EDGE_COLS: [usize; 5] = [1, 31, 33, 576, 1536];

/// The float product with `strategy` over edge shapes: rows 1 and 67, cols [`EDGE_COLS`],
/// n = 1, 3, 8 for the row kernels (plus 17 and 70 for the tiled one), per-row and per-group
/// (64) scales. A strategy the device cannot run must fail with `Unsupported`.
pub fn gemm_suite<R: Runtime>(client: &ComputeClient<R>, strategy: GemmStrategy) -> SuiteResult {
    let caps = DeviceCaps::of(client);
    if let Err(e) = crate::plan::plan(&caps, 1, strategy) {
        return match e {
            KernelError::Unsupported(msg) => Ok(Ran::Unsupported(msg)),
            other => Err(format!("planning {strategy:?}: {other}")),
        };
    }
    let mut cases: Vec<(usize, usize, usize)> = Vec::new();
    let ns: &[usize] = match strategy {
        GemmStrategy::Tiled => &[1, 3, 8, 17],
        _ => &[1, 3, 8],
    };
    for &n in ns {
        for &r in &[1, 67] {
            for &c in &EDGE_COLS {
                cases.push((r, c, n));
            }
        }
    }
    if strategy == GemmStrategy::Tiled {
        cases.extend([(130, 31, 70), (130, 1536, 70)]);
    }
    let mut count = 0;
    for (i, &(r, c, n)) in cases.iter().enumerate() {
        let case = GemmCase::new(r, c, n, 1000 + i as u64);
        gemm_matches_reference(client, case, strategy)?;
        count += 1;
        if c >= 64 {
            gemm_matches_reference(client, case.per_group(64), strategy)?;
            count += 1;
        }
    }
    Ok(Ran::Passed(count))
}

/// [`GemmStrategy::Auto`] with other group sizes (groups ending inside a word pair, a short last
/// group, padding words past the last group) and empty shapes (cols 0, rows 0, n 0).
pub fn gemm_groups_suite<R: Runtime>(client: &ComputeClient<R>) -> SuiteResult {
    let cases = [
        (67, 576, 1, 128),
        (67, 576, 70, 128),
        (5, 33, 3, 32),
        (5, 65, 2, 32),
        (9, 1536, 8, 256),
        (3, 0, 2, 32),
        (0, 64, 3, 32),
        (4, 64, 0, 32),
    ];
    for (i, &(r, c, n, g)) in cases.iter().enumerate() {
        let case = GemmCase::new(r, c, n, 2000 + i as u64);
        gemm_matches_reference(client, case.per_group(g), GemmStrategy::Auto)?;
        gemm_matches_reference(client, case, GemmStrategy::Auto)?;
    }
    Ok(Ran::Passed(2 * cases.len()))
}

/// `f16` activations through both kernels, or `Unsupported` on a device without `f16`.
pub fn f16_suite<R: Runtime>(client: &ComputeClient<R>) -> SuiteResult {
    if !DeviceCaps::of(client).f16 {
        gemm_f16_matches_reference(client, GemmCase::new(3, 64, 1, 1), GemmStrategy::Auto)?;
        return Ok(Ran::Unsupported(format!(
            "{}: no f16 storage",
            R::name(client)
        )));
    }
    gemm_f16_matches_reference(client, GemmCase::new(67, 576, 3, 3000), GemmStrategy::Auto)?;
    gemm_f16_matches_reference(
        client,
        GemmCase::new(67, 33, 1, 3001),
        GemmStrategy::RowsShared,
    )?;
    gemm_f16_matches_reference(
        client,
        GemmCase::new(67, 576, 17, 3002),
        GemmStrategy::Tiled,
    )?;
    Ok(Ran::Passed(3))
}

/// Device quantization, exact, over edge shapes.
pub fn quantize_suite<R: Runtime>(client: &ComputeClient<R>) -> SuiteResult {
    let cases = [(1, 1), (3, 31), (8, 33), (2, 576), (5, 1536), (0, 64)];
    for (i, &(n, c)) in cases.iter().enumerate() {
        quantize_matches_reference(client, n, c, 4000 + i as u64)?;
    }
    Ok(Ran::Passed(cases.len()))
}

/// The int8 product over edge shapes: rows 67, cols [`EDGE_COLS`], n = 1, 3, 8, 70, per-row and
/// per-group (64) scales.
pub fn int8_suite<R: Runtime>(client: &ComputeClient<R>) -> SuiteResult {
    let mut count = 0;
    for (k, &n) in [1, 3, 8, 70].iter().enumerate() {
        for (i, &c) in EDGE_COLS.iter().enumerate() {
            let case = GemmCase::new(67, c, n, 5000 + (k * 10 + i) as u64);
            gemm_i8_matches_reference(client, case)?;
            count += 1;
            if c >= 64 {
                gemm_i8_matches_reference(client, case.per_group(64))?;
                count += 1;
            }
        }
    }
    Ok(Ran::Passed(count))
}

/// Edit batches: a single edit, many edits with duplicates, more edits than weights per row.
pub fn edits_suite<R: Runtime>(client: &ComputeClient<R>) -> SuiteResult {
    edits_match_reference(client, 7, 33, 1, 6000)?;
    edits_match_reference(client, 67, 576, 500, 6001)?;
    edits_match_reference(client, 3, 40, 300, 6002)?;
    Ok(Ran::Passed(3))
}

/// Attention scoring, ternary and binary, causal or not, over a few head sizes.
pub fn attention_suite<R: Runtime>(client: &ComputeClient<R>) -> SuiteResult {
    let mut count = 0;
    for quant in [
        QkQuant::TWN,
        QkQuant::Ternary(AttentionQuant::abs_mean()),
        QkQuant::Binary,
    ] {
        for causal in [false, true] {
            for &(nq, nk, dim) in &[(1, 5, 64), (5, 37, 80), (17, 17, 128), (3, 40, 33)] {
                count += 1;
                attention_matches_reference(client, nq, nk, 2, dim, quant, causal, 7000 + count)?;
            }
        }
    }
    Ok(Ran::Passed(count as usize))
}

/// Block skipping at 1/3 and 95 % zeros, with zeroed chunks and rows.
pub fn skip_suite<R: Runtime>(client: &ComputeClient<R>) -> SuiteResult {
    let cases = [
        (67, 33, 1),
        (67, 1536, 3),
        (130, 576, 8),
        (5, 4096, 1),
        (3, 2112, 9),
    ];
    let mut count = 0;
    for (i, &(r, c, n)) in cases.iter().enumerate() {
        let case = GemmCase::new(r, c, n, 8000 + i as u64);
        skip_matches_reference(client, case)?;
        skip_matches_reference(client, case.zeros(0.95))?;
        count += 2;
    }
    skip_matches_reference(client, GemmCase::new(67, 576, 3, 8100).per_group(128))?;
    Ok(Ran::Passed(count + 1))
}

/// Every suite, by name, in order (what the `gpu-bench` binary runs first).
pub fn run_all<R: Runtime>(client: &ComputeClient<R>) -> Vec<(&'static str, SuiteResult)> {
    vec![
        (
            "gemv rows (plane_sum)",
            gemm_suite(client, GemmStrategy::RowsPlane),
        ),
        (
            "gemv rows (shared tree)",
            gemm_suite(client, GemmStrategy::RowsShared),
        ),
        ("gemm tiled", gemm_suite(client, GemmStrategy::Tiled)),
        ("gemm groups / empty", gemm_groups_suite(client)),
        ("f16 activations", f16_suite(client)),
        ("int8 quantize", quantize_suite(client)),
        ("int8 gemm", int8_suite(client)),
        ("edits", edits_suite(client)),
        ("attention quantizer", attention_quantizer_suite(client)),
        ("attention", attention_suite(client)),
        ("block skipping", skip_suite(client)),
        (
            "device-resident activations",
            device_activations_suite(client),
        ),
        (
            "bad shapes",
            bad_shapes_are_errors(client).map(|()| Ran::Passed(1)),
        ),
    ]
}
