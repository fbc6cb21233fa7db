//! Error-compensating ternary rounding (GPTQ; Frantar et al., 2022) with the calibration
//! Hessian, and least-squares scale refitting.
//!
//! The objective is the layer's output error on the calibration inputs,
//!
//! `E(Ŵ) = Σ_tokens ‖(W − Ŵ)x‖² = tr(ΔW · H · ΔWᵀ)`,  `ΔW = W − Ŵ`,  `H = Σ x xᵀ`.
//!
//! GPTQ quantizes the columns left to right. After column `j` of a row is rounded to
//! `q = s · l`, the nearest point of the [`Grid`] `{−L, …, L}·s` (ties toward zero; for the
//! ternary grid `L = 1`, `l = sign(w_j) · [|w_j| > s/2]`), the not-yet-quantized weights of that
//! row absorb its error:
//!
//! `w_{j+1..} −= (w_j − q) / U_jj · U_{j, j+1..}`,
//!
//! where `U` is the upper Cholesky factor of `H_λ⁻¹ = UᵀU`, `H_λ = H + λ·mean(diag H)·I`.
//! This equals the optimal-brain-surgeon update with the inverse Hessian of the remaining
//! columns (the tests check it against that `O(n⁴)` form). Columns with `H_jj = 0` (inputs that
//! are always zero) get weight 0 first, as in the paper.
//!
//! Scales: per scale group, the scale `s` is chosen by a [`Method`] from the group's weights
//! *as updated so far* when GPTQ reaches the group's first column (for per-row scales, from
//! the original row); the activation-aware rule weighs positions by `diag H`. On the
//! two-plane grid ([`Grid::TwoPlane`], `L = 4`, `s·(3·T₁ + T₂)`) the scale is searched
//! ([`grid_scale`]). With
//! [`GptqConfig::refit`], each row's scales are then re-solved by least squares for the chosen
//! trits, `min_s tr(ΔW H ΔWᵀ)`, a `groups × groups` system per row, kept only when it lowers
//! the row's error.
//!
//! With [`GptqConfig::act_order`] the columns are visited by decreasing `H_jj` instead (`U`
//! is then the factor of the permuted `H_λ`), and every group's scale is chosen up front from
//! the original weights, since a group's columns are no longer visited together.
//!
//! Arithmetic is `f64` throughout (factorizations, updates, errors); the stored scales are
//! rounded to `f32` ([`Grid::store_scale`]) and the error is evaluated with those.

use crate::error::{ConvertError, Result};
use rayon::prelude::*;
use ternary_core::quant::{Method, QuantConfig, quantize, quantize_activation_aware};
use ternary_core::two_plane::{MAX_LEVEL, exact_triple_scale};
use ternary_core::{ScaleLayout, Scales, TernaryMatrix, TwoPlaneMatrix};
use ternary_layers::LinearWeights;

/// The grid each weight is rounded to: `{−L, …, L}·s`, `s` the weight's group scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Grid {
    /// `{−1, 0, 1}·s` (`L = 1`): one trit-plane, a [`TernaryMatrix`].
    #[default]
    Ternary,
    /// `{−4, …, 4}·s = s·(3·T₁ + T₂)` (`L = 4`): two trit-planes, a [`TwoPlaneMatrix`].
    TwoPlane,
}

impl Grid {
    /// The grid of `planes` trit-planes (1 or 2).
    pub fn with_planes(planes: usize) -> Result<Self> {
        match planes {
            1 => Ok(Self::Ternary),
            2 => Ok(Self::TwoPlane),
            n => Err(ConvertError::Invalid(format!(
                "{n} trit-planes: only 1 and 2 are supported"
            ))),
        }
    }

    /// `L`: the largest level.
    pub fn max_level(self) -> i8 {
        match self {
            Self::Ternary => 1,
            Self::TwoPlane => MAX_LEVEL,
        }
    }

    /// Trit-planes the weights take.
    pub fn planes(self) -> usize {
        match self {
            Self::Ternary => 1,
            Self::TwoPlane => 2,
        }
    }

    /// The weights of `levels` (row-major `rows × cols`, in `−L..=L`) with `scales`: a
    /// [`TernaryMatrix`] on the ternary grid, the exact split `s·(3·T₁ + T₂)` on the two-plane
    /// grid.
    pub fn weights(
        self,
        rows: usize,
        cols: usize,
        levels: &[i8],
        scales: Scales,
    ) -> Result<LinearWeights> {
        Ok(match self {
            Self::Ternary => TernaryMatrix::from_trits(rows, cols, levels, scales)?.into(),
            Self::TwoPlane => TwoPlaneMatrix::from_levels(rows, cols, levels, scales)?.into(),
        })
    }

    /// The `f32` scale stored for `s`: `s` rounded to `f32`; on the two-plane grid also to a
    /// scale whose triple is exact ([`exact_triple_scale`]), so `3s·t₁ + s·t₂ = s·l` exactly.
    pub fn store_scale(self, s: f64) -> f32 {
        match self {
            Self::Ternary => s as f32,
            Self::TwoPlane => exact_triple_scale(s as f32),
        }
    }
}

/// GPTQ settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GptqConfig {
    /// Dampening `λ`: `H + λ·mean(diag H)·I` is factorized (the paper uses 0.01).
    pub damp: f64,
    /// Re-solve each row's scales by least squares afterwards (kept only if better).
    pub refit: bool,
    /// Activation order: quantize the columns by decreasing `H_jj` (the most used inputs
    /// first, while the most weights are left to absorb their error), with every group's
    /// scale fixed beforehand from the original weights ("static groups": the stored groups
    /// stay runs of adjacent columns).
    pub act_order: bool,
}

impl Default for GptqConfig {
    fn default() -> Self {
        Self {
            damp: 0.01,
            refit: true,
            act_order: false,
        }
    }
}

/// `Σ_i a_i b_i` in `f64` with 8 partial sums (so it vectorizes).
#[inline]
pub(crate) fn dot(a: &[f64], b: &[f64]) -> f64 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f64; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f64 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f64>() + tail
}

/// Lower Cholesky factor `L` of the symmetric `n × n` matrix `a` (row-major): `a = L·Lᵀ`.
/// Fails when `a` is not (numerically) positive definite.
pub fn cholesky(a: &[f64], n: usize) -> Result<Vec<f64>> {
    if a.len() != n * n {
        return Err(ConvertError::Shape(format!(
            "Cholesky of {n}x{n} needs {} values, got {}",
            n * n,
            a.len()
        )));
    }
    let mut l = vec![0f64; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s = a[i * n + j] - dot(&l[i * n..i * n + j], &l[j * n..j * n + j]);
            if i == j {
                if !(s > 0.0 && s.is_finite()) {
                    return Err(ConvertError::Invalid(format!(
                        "Hessian is not positive definite (pivot {i} is {s}); increase the dampening"
                    )));
                }
                l[i * n + i] = s.sqrt();
            } else {
                l[i * n + j] = s / l[j * n + j];
            }
        }
    }
    Ok(l)
}

/// The upper Cholesky factor `U` of `H⁻¹` (`H⁻¹ = Uᵀ·U`, row-major `n × n`) for a symmetric
/// positive definite `H`.
///
/// With `J` the reversal permutation, `J H J = L Lᵀ` gives `H = V Vᵀ` for the upper
/// triangular `V = J L J`, so `H⁻¹ = V⁻ᵀ V⁻¹ = Uᵀ U` with `U = V⁻¹ = J L⁻¹ J`: one Cholesky
/// and one triangular inverse (its columns solved in parallel).
pub fn inverse_cholesky_upper(h: &[f64], n: usize) -> Result<Vec<f64>> {
    let rev: Vec<f64> = (0..n * n)
        .map(|k| h[(n - 1 - k / n) * n + (n - 1 - k % n)])
        .collect();
    let l = cholesky(&rev, n)?;
    // Column j of M = L⁻¹ by forward substitution: m_i = (δ_ij − Σ_{j≤k<i} L_ik m_k) / L_ii.
    let cols: Vec<Vec<f64>> = (0..n)
        .into_par_iter()
        .map(|j| {
            let mut m = vec![0f64; n];
            m[j] = 1.0 / l[j * n + j];
            for i in j + 1..n {
                m[i] = -dot(&l[i * n + j..i * n + i], &m[j..i]) / l[i * n + i];
            }
            m
        })
        .collect();
    // U[a][b] = M[n−1−a][n−1−b], upper triangular.
    let mut u = vec![0f64; n * n];
    for a in 0..n {
        for b in a..n {
            u[a * n + b] = cols[n - 1 - b][n - 1 - a];
        }
    }
    Ok(u)
}

/// The dampened Hessian `H + λ·mean(diag H)·I` with dead inputs (`H_jj = 0`) given
/// `H_jj = 1`; returns it and the dead columns.
pub fn prepare_hessian(h: &[f64], n: usize, damp: f64) -> Result<(Vec<f64>, Vec<bool>)> {
    if h.len() != n * n {
        return Err(ConvertError::Shape(format!(
            "Hessian of {n}x{n} needs {} values, got {}",
            n * n,
            h.len()
        )));
    }
    if let Some(i) = h.iter().position(|v| !v.is_finite()) {
        return Err(ConvertError::Invalid(format!(
            "Hessian entry {i} is not finite"
        )));
    }
    if !(damp.is_finite() && damp >= 0.0) {
        return Err(ConvertError::Invalid(format!(
            "dampening must be finite and >= 0, got {damp}"
        )));
    }
    let mut h = h.to_vec();
    let dead: Vec<bool> = (0..n).map(|j| h[j * n + j] <= 0.0).collect();
    for j in 0..n {
        if dead[j] {
            h[j * n + j] = 1.0;
        }
    }
    let mean_diag = if n == 0 {
        0.0
    } else {
        (0..n).map(|j| h[j * n + j]).sum::<f64>() / n as f64
    };
    for j in 0..n {
        h[j * n + j] += damp * mean_diag;
    }
    Ok((h, dead))
}

/// The scale a [`Method`] picks for one group of weights `w`, with position weights `e`
/// (used by [`Method::ActivationAware`] only; `diag H` in GPTQ).
pub fn group_scale(method: Method, w: &[f32], e: &[f32]) -> Result<f32> {
    if w.is_empty() {
        return Ok(0.0);
    }
    let (m, _) = match method {
        Method::ActivationAware => {
            quantize_activation_aware(w, 1, w.len(), ScaleLayout::PerRow, e)?
        }
        _ => quantize(
            w,
            1,
            w.len(),
            &QuantConfig::new(method, ScaleLayout::PerRow),
        )?,
    };
    Ok(m.scales().values()[0])
}

/// The nearest point of `{−s, 0, s}` as a trit: `sign(w) · [|w| > s/2]` (`0` when `s = 0`).
#[inline]
pub fn round_trit(w: f64, s: f64) -> i8 {
    round_level(w, s, 1)
}

/// The nearest point of `{−L, …, L}·s` as a level, ties toward zero:
/// `sign(w) · #{k ∈ 1..=L : |w| > (k − ½)·s}` (`0` when `s ≤ 0`).
#[inline]
pub fn round_level(w: f64, s: f64, max_level: i8) -> i8 {
    // `s ≤ 0` or NaN: no grid.
    if s.is_nan() || s <= 0.0 {
        return 0;
    }
    let a = w.abs();
    let mut l = 0i8;
    while l < max_level && a > (f64::from(l) + 0.5) * s {
        l += 1;
    }
    if w > 0.0 { l } else { -l }
}

/// The scale of one group of weights `w` on `grid`, with position weights `e` (`diag H` in
/// GPTQ). On the ternary grid, [`group_scale`]. On the two-plane grid (`L = 4`): `max|w| / L`
/// for [`Method::AbsMax`]; otherwise the candidate minimizing `Σ_j e_j (w_j − s·l_j)²`
/// (`e = 1` unless [`Method::ActivationAware`]) among the least-squares rescalings
/// `s* = Σ e w l / Σ e l²` of the roundings at `s = f · max|w| / L`, `f ∈ {0.5, 0.525, …, 1}`.
/// The result is stored with [`Grid::store_scale`].
pub fn grid_scale(method: Method, grid: Grid, w: &[f32], e: &[f32]) -> Result<f32> {
    if grid == Grid::Ternary {
        return group_scale(method, w, e);
    }
    let max_level = grid.max_level();
    let amax = w.iter().fold(0f64, |m, &v| m.max(f64::from(v).abs()));
    if amax == 0.0 {
        return Ok(0.0);
    }
    let top = amax / f64::from(max_level);
    if method == Method::AbsMax {
        return Ok(grid.store_scale(top));
    }
    let weight = |j: usize| {
        if method == Method::ActivationAware {
            f64::from(e.get(j).copied().unwrap_or(1.0).max(0.0))
        } else {
            1.0
        }
    };
    let mut best = (f64::INFINITY, top);
    for k in 0..=20 {
        let s = top * (0.5 + 0.025 * f64::from(k));
        let (mut num, mut den) = (0f64, 0f64);
        for (j, &v) in w.iter().enumerate() {
            let l = f64::from(round_level(f64::from(v), s, max_level));
            num += weight(j) * f64::from(v) * l;
            den += weight(j) * l * l;
        }
        let s_ls = if den > 0.0 && num > 0.0 { num / den } else { s };
        let err: f64 = w
            .iter()
            .enumerate()
            .map(|(j, &v)| {
                let d = f64::from(v) - s_ls * f64::from(round_level(f64::from(v), s, max_level));
                weight(j) * d * d
            })
            .sum();
        if err < best.0 {
            best = (err, s_ls);
        }
    }
    Ok(grid.store_scale(best.1))
}

/// A Hessian prepared for GPTQ: `H` itself (for scale refits and `diag H`), the dead inputs
/// and the upper Cholesky factor `U` of the dampened inverse. Layers reading the same input
/// share one.
#[derive(Debug, Clone)]
pub struct HessianFactor {
    cols: usize,
    h: Vec<f64>,
    /// `U` of the dampened `H` with rows and columns in visiting order (`order`).
    u: Vec<f64>,
    dead: Vec<bool>,
    /// The order GPTQ visits the columns in: `None` left to right, else by decreasing `H_jj`.
    order: Option<Vec<usize>>,
}

impl HessianFactor {
    /// Prepares `h` (`cols × cols`, symmetric positive semi-definite) with dampening `damp`;
    /// the columns are visited left to right.
    pub fn new(h: Vec<f64>, cols: usize, damp: f64) -> Result<Self> {
        Self::with_order(h, cols, damp, false)
    }

    /// As [`new`](Self::new), visiting the columns by decreasing `H_jj` when `act_order`
    /// (ties by index; dead inputs, `H_jj = 0`, last).
    pub fn with_order(h: Vec<f64>, cols: usize, damp: f64, act_order: bool) -> Result<Self> {
        let (hd, dead) = prepare_hessian(&h, cols, damp)?;
        if !act_order {
            let u = inverse_cholesky_upper(&hd, cols)?;
            return Ok(Self {
                cols,
                h,
                u,
                dead,
                order: None,
            });
        }
        let mut order: Vec<usize> = (0..cols).collect();
        order.sort_by(|&a, &b| h[b * cols + b].total_cmp(&h[a * cols + a]).then(a.cmp(&b)));
        let mut hp = vec![0f64; cols * cols];
        for (i, &a) in order.iter().enumerate() {
            for (k, &b) in order.iter().enumerate() {
                hp[i * cols + k] = hd[a * cols + b];
            }
        }
        let u = inverse_cholesky_upper(&hp, cols)?;
        Ok(Self {
            cols,
            h,
            u,
            dead,
            order: Some(order),
        })
    }

    /// Input width.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The (undampened) Hessian, row-major.
    pub fn hessian(&self) -> &[f64] {
        &self.h
    }
}

/// GPTQ ternarization of `w` (`rows × cols`, row-major) for the Hessian `h` (`cols × cols`,
/// `Σ x xᵀ` or any positive multiple). See the [module docs](self).
pub fn gptq_ternary(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    layout: ScaleLayout,
    method: Method,
    cfg: &GptqConfig,
) -> Result<TernaryMatrix> {
    if h.len() != cols * cols {
        return Err(ConvertError::Shape(format!(
            "Hessian of {cols}x{cols} needs {} values, got {}",
            cols * cols,
            h.len()
        )));
    }
    let f = HessianFactor::with_order(h.to_vec(), cols, cfg.damp, cfg.act_order)?;
    gptq_ternary_factored(w, rows, f.cols, &f, layout, method, cfg.refit)
}

/// Plain rounding to `grid` (no error compensation): per group, the scale of [`grid_scale`]
/// (position weights `e`, e.g. `diag H`), then each weight to its nearest level. Returns the
/// row-major levels and the scales.
pub fn round_to_grid(
    w: &[f32],
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
    method: Method,
    grid: Grid,
    e: &[f32],
) -> Result<(Vec<i8>, Scales)> {
    layout.validate()?;
    method.validate()?;
    if w.len() != rows * cols || e.len() != cols {
        return Err(ConvertError::Shape(format!(
            "rounding {rows}x{cols} weights ({} values) with {} position weights",
            w.len(),
            e.len()
        )));
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(ConvertError::Invalid(format!("weight {i} is not finite")));
    }
    let glen = layout.group_len(cols).max(1);
    let gpr = layout.groups_per_row(cols);
    let mut levels = vec![0i8; rows * cols];
    let mut scales = vec![0f32; rows * gpr];
    for r in 0..rows {
        for g in 0..gpr {
            let (a, b) = (g * glen, ((g + 1) * glen).min(cols));
            let row = &w[r * cols + a..r * cols + b];
            let s = grid_scale(method, grid, row, &e[a..b])?;
            scales[r * gpr + g] = s;
            for (l, &v) in levels[r * cols + a..r * cols + b].iter_mut().zip(row) {
                *l = round_level(f64::from(v), f64::from(s), grid.max_level());
            }
        }
    }
    Ok((levels, Scales::new(layout, scales)))
}

/// [`gptq_ternary`] with a prepared [`HessianFactor`] (`factor.cols() == cols`).
pub fn gptq_ternary_factored(
    w: &[f32],
    rows: usize,
    cols: usize,
    factor: &HessianFactor,
    layout: ScaleLayout,
    method: Method,
    refit: bool,
) -> Result<TernaryMatrix> {
    let (trits, scales) =
        gptq_levels_factored(w, rows, cols, factor, layout, method, Grid::Ternary, refit)?;
    Ok(TernaryMatrix::from_trits(rows, cols, &trits, scales)?)
}

/// GPTQ on the two-plane grid `{−4, …, 4}·s` for the Hessian `h`, split into
/// `s·(3·T₁ + T₂)` ([`TwoPlaneMatrix::from_levels`]; the split is exact).
pub fn gptq_two_plane(
    w: &[f32],
    rows: usize,
    cols: usize,
    h: &[f64],
    layout: ScaleLayout,
    method: Method,
    cfg: &GptqConfig,
) -> Result<TwoPlaneMatrix> {
    if h.len() != cols * cols {
        return Err(ConvertError::Shape(format!(
            "Hessian of {cols}x{cols} needs {} values, got {}",
            cols * cols,
            h.len()
        )));
    }
    let f = HessianFactor::with_order(h.to_vec(), cols, cfg.damp, cfg.act_order)?;
    gptq_two_plane_factored(w, rows, f.cols, &f, layout, method, cfg.refit)
}

/// [`gptq_two_plane`] with a prepared [`HessianFactor`].
pub fn gptq_two_plane_factored(
    w: &[f32],
    rows: usize,
    cols: usize,
    factor: &HessianFactor,
    layout: ScaleLayout,
    method: Method,
    refit: bool,
) -> Result<TwoPlaneMatrix> {
    let (levels, scales) =
        gptq_levels_factored(w, rows, cols, factor, layout, method, Grid::TwoPlane, refit)?;
    Ok(TwoPlaneMatrix::from_levels(rows, cols, &levels, scales)?)
}

/// GPTQ on `grid`: the row-major levels `l ∈ {−L, …, L}` and the scales, `ŵ = s·l`. With
/// `refit`, each row's scales are then re-solved by least squares ([`refit_level_scales`]).
#[allow(clippy::too_many_arguments)]
pub fn gptq_levels_factored(
    w: &[f32],
    rows: usize,
    cols: usize,
    factor: &HessianFactor,
    layout: ScaleLayout,
    method: Method,
    grid: Grid,
    refit: bool,
) -> Result<(Vec<i8>, Scales)> {
    layout.validate()?;
    method.validate()?;
    if w.len() != rows * cols || factor.cols != cols {
        return Err(ConvertError::Shape(format!(
            "weights of {rows}x{cols} ({} values) with a Hessian of width {}",
            w.len(),
            factor.cols
        )));
    }
    if let Some(i) = w.iter().position(|v| !v.is_finite()) {
        return Err(ConvertError::Invalid(format!("weight {i} is not finite")));
    }
    let (h, u, dead) = (&factor.h, &factor.u, &factor.dead);
    let diag: Vec<f32> = (0..cols).map(|j| h[j * cols + j].max(0.0) as f32).collect();
    let glen = layout.group_len(cols).max(1);
    let gpr = layout.groups_per_row(cols);
    let mut levels = vec![0i8; rows * cols];
    let mut scales = vec![0f32; rows * gpr];
    const TILE: usize = 16;
    let tile = Tile {
        cols,
        u,
        dead,
        order: factor.order.as_deref(),
        diag: &diag,
        glen,
        gpr,
        method,
        grid,
    };
    let results: Vec<Result<()>> = levels
        .par_chunks_mut(TILE * cols.max(1))
        .zip(scales.par_chunks_mut(TILE * gpr.max(1)))
        .zip(w.par_chunks(TILE * cols.max(1)))
        .map(|((l, s), w)| tile.run(w, l, s))
        .collect();
    results.into_iter().collect::<Result<()>>()?;
    if refit {
        scales = refit_level_scales(w, rows, cols, &levels, layout, &scales, h, grid)?;
    }
    Ok((levels, Scales::new(layout, scales)))
}

/// What every tile of rows shares in [`gptq_levels_factored`].
struct Tile<'a> {
    cols: usize,
    u: &'a [f64],
    dead: &'a [bool],
    order: Option<&'a [usize]>,
    diag: &'a [f32],
    glen: usize,
    gpr: usize,
    method: Method,
    grid: Grid,
}

impl Tile<'_> {
    /// GPTQ on a tile of rows sharing `U` (each row of `U` is read once per tile).
    fn run(&self, w: &[f32], levels: &mut [i8], scales: &mut [f32]) -> Result<()> {
        if let Some(order) = self.order {
            return self.run_ordered(order, w, levels, scales);
        }
        let Self {
            cols,
            dead,
            diag,
            glen,
            gpr,
            method,
            grid,
            ..
        } = *self;
        if cols == 0 {
            return Ok(());
        }
        let n = w.len() / cols;
        let mut work: Vec<f64> = w
            .iter()
            .enumerate()
            .map(|(k, &v)| if dead[k % cols] { 0.0 } else { f64::from(v) })
            .collect();
        let mut err = vec![0f64; n];
        let mut group_w = vec![0f32; glen];
        for j in 0..cols {
            let g = j / glen;
            if j % glen == 0 {
                let end = (j + glen).min(cols);
                for r in 0..n {
                    for (dst, &v) in group_w.iter_mut().zip(&work[r * cols + j..r * cols + end]) {
                        *dst = v as f32;
                    }
                    scales[r * gpr + g] =
                        grid_scale(method, grid, &group_w[..end - j], &diag[j..end])?;
                }
            }
            self.step(j, j, &mut work, &mut err, levels, scales);
        }
        Ok(())
    }

    /// The `k`-th column visited, column `j` of the rows: each row's weight `work[r, k]` is
    /// rounded to its group's grid (level stored at `j`) and the error, divided by `U_kk`,
    /// is taken off the columns not yet visited, `work[r, k+1..] −= e · U_{k, k+1..}`.
    fn step(
        &self,
        k: usize,
        j: usize,
        work: &mut [f64],
        err: &mut [f64],
        levels: &mut [i8],
        scales: &[f32],
    ) {
        let (cols, u) = (self.cols, self.u);
        let g = j / self.glen;
        let ukk = u[k * cols + k];
        for (r, e) in err.iter_mut().enumerate() {
            let s = f64::from(scales[r * self.gpr + g]);
            let x = work[r * cols + k];
            let l = round_level(x, s, self.grid.max_level());
            levels[r * cols + j] = l;
            *e = (x - s * f64::from(l)) / ukk;
        }
        let urow = &u[k * cols + k + 1..(k + 1) * cols];
        for (r, &e) in err.iter().enumerate() {
            if e != 0.0 {
                for (x, &uv) in work[r * cols + k + 1..(r + 1) * cols].iter_mut().zip(urow) {
                    *x -= e * uv;
                }
            }
        }
    }

    /// [`run`](Self::run) visiting the columns in `order` (`order[k]` is the `k`-th column
    /// visited, `U` is in that order): group scales first, from the original weights (dead
    /// inputs as 0), then the same rounding and error propagation in the permuted space.
    fn run_ordered(
        &self,
        order: &[usize],
        w: &[f32],
        levels: &mut [i8],
        scales: &mut [f32],
    ) -> Result<()> {
        let Self {
            cols,
            dead,
            diag,
            glen,
            gpr,
            method,
            grid,
            ..
        } = *self;
        if cols == 0 {
            return Ok(());
        }
        let n = w.len() / cols;
        let live = |r: usize, j: usize| if dead[j] { 0.0 } else { w[r * cols + j] };
        let mut group_w = vec![0f32; glen];
        for r in 0..n {
            for g in 0..gpr {
                let (a, b) = (g * glen, ((g + 1) * glen).min(cols));
                for (dst, j) in group_w.iter_mut().zip(a..b) {
                    *dst = live(r, j);
                }
                scales[r * gpr + g] = grid_scale(method, grid, &group_w[..b - a], &diag[a..b])?;
            }
        }
        // Row r's weights in visiting order.
        let mut work: Vec<f64> = (0..n * cols)
            .map(|i| f64::from(live(i / cols, order[i % cols])))
            .collect();
        let mut err = vec![0f64; n];
        for (k, &j) in order.iter().enumerate() {
            self.step(k, j, &mut work, &mut err, levels, scales);
        }
        Ok(())
    }
}

/// `Σ_r (w_r − ŵ_r)ᵀ H (w_r − ŵ_r)` in `f64` for the rows of `w` and `w_hat`
/// (`rows × cols`), `H` row-major `cols × cols`.
pub fn output_error(w: &[f32], w_hat: &[f32], cols: usize, h: &[f64]) -> Result<f64> {
    if w.len() != w_hat.len()
        || h.len() != cols * cols
        || (cols > 0 && !w.len().is_multiple_of(cols))
    {
        return Err(ConvertError::Shape(format!(
            "output error: {} weights, {} approximations, width {cols}, Hessian of {} values",
            w.len(),
            w_hat.len(),
            h.len()
        )));
    }
    if cols == 0 {
        return Ok(0.0);
    }
    Ok(w.par_chunks(cols)
        .zip(w_hat.par_chunks(cols))
        .map(|(a, b)| {
            let d: Vec<f64> = a
                .iter()
                .zip(b)
                .map(|(&x, &y)| f64::from(x) - f64::from(y))
                .collect();
            quad_form(&d, h, cols)
        })
        .sum())
}

/// `dᵀ H d`.
fn quad_form(d: &[f64], h: &[f64], n: usize) -> f64 {
    (0..n)
        .filter(|&i| d[i] != 0.0)
        .map(|i| d[i] * dot(&h[i * n..(i + 1) * n], d))
        .sum()
}

/// Re-solves each row's scales of `m` for its trits by least squares in the `H` metric
/// ([`refit_level_scales`] on the ternary grid).
pub fn refit_scales(w: &[f32], m: &mut TernaryMatrix, h: &[f64]) -> Result<()> {
    let (rows, cols) = (m.rows(), m.cols());
    let layout = m.scales().layout();
    let scales = refit_level_scales(
        w,
        rows,
        cols,
        &m.to_trits(),
        layout,
        m.scales().values(),
        h,
        Grid::Ternary,
    )?;
    m.set_scales(Scales::new(layout, scales))?;
    Ok(())
}

/// Re-solves each row's scales for its levels `l` (row-major `rows × cols`) by least squares
/// in the `H` metric,
///
/// `min_s Σ_r (w_r − Σ_g s_rg l_rg)ᵀ H (w_r − Σ_g s_rg l_rg)`  ⇔  `A s = b`,
/// `A_gk = l_gᵀ H l_k`, `b_g = l_gᵀ H w_r`,
///
/// over the groups of the row with a non-zero level, and keeps a row's new scales (stored with
/// [`Grid::store_scale`]) only when they lower its error. Returns the scales.
#[allow(clippy::too_many_arguments)]
pub fn refit_level_scales(
    w: &[f32],
    rows: usize,
    cols: usize,
    levels: &[i8],
    layout: ScaleLayout,
    old: &[f32],
    h: &[f64],
    grid: Grid,
) -> Result<Vec<f32>> {
    let store = |s: f64| grid.store_scale(s);
    let mut out = refit_patterns(w, rows, cols, &[levels], layout, &[old], h, &store)?;
    Ok(out.pop().unwrap_or_default())
}

/// Free plane scales for a two-plane matrix: each group's two plane scales `(a₁, a₂)` re-solved
/// jointly by least squares in the `H` metric for the planes' trits,
///
/// `min_a Σ_r (w_r − Σ_g (a₁_rg T₁_rg + a₂_rg T₂_rg))ᵀ H (…)`,
///
/// the least-squares half of an alternation between trits and scales; the trits (GPTQ's,
/// error-compensated) stay. `3s` and `s` is one point of that space, so a row's error in the
/// (dampened, below) metric never grows: its new scales are kept only when they lower it. The grid is then
/// `{0, ±a₂, ±(a₁ − a₂), ±a₁, ±(a₁ + a₂)}` per group: still nine levels, no longer evenly spaced.
///
/// `H` is dampened like GPTQ's, `H + damp·mean(diag H)·I` (`damp` ≥ 0): twice the unknowns of
/// one scale per group fit the calibration statistics too closely otherwise. Measured on
/// SmolLM2-135M (`--planes 2 --no-budget --group 32 --sequential`, held-out GPL-3, ctx 512):
/// `3s, s` 1.891× the float perplexity; free, undampened 9.89×; free, `damp = 0.01` 1.888×.
pub fn refit_plane_scales(
    w: &[f32],
    m: &TwoPlaneMatrix,
    h: &[f64],
    damp: f64,
) -> Result<TwoPlaneMatrix> {
    let (rows, cols) = (m.rows(), m.cols());
    let (hi, lo) = (m.high(), m.low());
    let layout = hi.scales().layout();
    if lo.scales().layout() != layout {
        return Err(ConvertError::Invalid(
            "free plane scales: the two planes have different scale layouts".into(),
        ));
    }
    if !(damp >= 0.0 && damp.is_finite()) || h.len() != cols * cols {
        return Err(ConvertError::Invalid(format!(
            "free plane scales: dampening {damp} or a {}-value Hessian for {cols} columns",
            h.len()
        )));
    }
    let mean_diag = (0..cols).map(|i| h[i * cols + i]).sum::<f64>() / cols.max(1) as f64;
    let mut hd = h.to_vec();
    for i in 0..cols {
        hd[i * cols + i] += damp * mean_diag;
    }
    let (t1, t2) = (hi.to_trits(), lo.to_trits());
    let store = |s: f64| s as f32;
    let mut new = refit_patterns(
        w,
        rows,
        cols,
        &[&t1, &t2],
        layout,
        &[hi.scales().values(), lo.scales().values()],
        &hd,
        &store,
    )?;
    let (a2, a1) = (new.pop().unwrap_or_default(), new.pop().unwrap_or_default());
    let high = TernaryMatrix::from_trits(rows, cols, &t1, Scales::new(layout, a1))?;
    let low = TernaryMatrix::from_trits(rows, cols, &t2, Scales::new(layout, a2))?;
    Ok(TwoPlaneMatrix::new(high, low)?)
}

/// The least squares behind [`refit_level_scales`] and [`refit_plane_scales`]: `patterns`
/// (each row-major `rows × cols`, with its own per-group scales in `old`) combine as
/// `ŵ_r = Σ_p Σ_g s_prg p_rg`; per row the scales of every (pattern, group) with a non-zero
/// entry are re-solved jointly (`A_ij = p_iᵀ H p_j`, `b_i = p_iᵀ H w_r`, by Cholesky), stored
/// with `store`, and kept only when they lower the row's error `(w_r − ŵ_r)ᵀ H (w_r − ŵ_r)`.
#[allow(clippy::too_many_arguments)]
fn refit_patterns(
    w: &[f32],
    rows: usize,
    cols: usize,
    patterns: &[&[i8]],
    layout: ScaleLayout,
    old: &[&[f32]],
    h: &[f64],
    store: &(dyn Fn(f64) -> f32 + Sync),
) -> Result<Vec<Vec<f32>>> {
    let gpr = layout.groups_per_row(cols);
    if w.len() != rows * cols
        || h.len() != cols * cols
        || patterns.len() != old.len()
        || patterns.iter().any(|p| p.len() != rows * cols)
        || old.iter().any(|o| o.len() != rows * gpr)
    {
        return Err(ConvertError::Shape(format!(
            "refit: {rows}x{cols} with {} weights, levels {:?}, scales {:?} and a {}-value Hessian",
            w.len(),
            patterns.iter().map(|p| p.len()).collect::<Vec<_>>(),
            old.iter().map(|o| o.len()).collect::<Vec<_>>(),
            h.len()
        )));
    }
    let glen = layout.group_len(cols).max(1);
    if rows == 0 || cols == 0 {
        return Ok(old.iter().map(|o| o.to_vec()).collect());
    }
    let group = |g: usize| g * glen..((g + 1) * glen).min(cols);
    let per_row: Vec<Vec<Vec<f32>>> = (0..rows)
        .into_par_iter()
        .map(|r| {
            let rows_of: Vec<&[i8]> = patterns
                .iter()
                .map(|p| &p[r * cols..(r + 1) * cols])
                .collect();
            let wr: Vec<f64> = w[r * cols..(r + 1) * cols]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let s_old: Vec<&[f32]> = old.iter().map(|o| &o[r * gpr..(r + 1) * gpr]).collect();
            let keep = || s_old.iter().map(|s| s.to_vec()).collect::<Vec<_>>();
            // The unknowns: (pattern, group) pairs with a non-zero entry.
            let active: Vec<(usize, usize)> = (0..patterns.len())
                .flat_map(|p| (0..gpr).map(move |g| (p, g)))
                .filter(|&(p, g)| rows_of[p][group(g)].iter().any(|&x| x != 0))
                .collect();
            let k = active.len();
            if k == 0 {
                return keep();
            }
            // Columns of the design: v_i = H p_i (cols values each).
            let mut v = vec![0f64; k * cols];
            for (i, &(p, g)) in active.iter().enumerate() {
                let vi = &mut v[i * cols..(i + 1) * cols];
                let t = rows_of[p];
                for c in group(g) {
                    if t[c] != 0 {
                        let sign = f64::from(t[c]);
                        for (x, &hv) in vi.iter_mut().zip(&h[c * cols..(c + 1) * cols]) {
                            *x += sign * hv;
                        }
                    }
                }
            }
            // A_ij = v_iᵀ p_j (p_j lives on its group's columns), b_i = v_iᵀ w_r (H symmetric).
            let mut amat = vec![0f64; k * k];
            let mut b = vec![0f64; k];
            for i in 0..k {
                let vi = &v[i * cols..(i + 1) * cols];
                b[i] = dot(vi, &wr);
                for (j, &(p, g)) in active.iter().enumerate() {
                    let t = rows_of[p];
                    amat[i * k + j] = group(g).map(|col| vi[col] * f64::from(t[col])).sum();
                }
            }
            // Dependent patterns (two planes equal up to sign on a group, e.g. a one-column
            // group) make A singular: then a ridge towards the old scales,
            // (A + λI)·s = b + λ·s_old with λ = 1e-9·mean(diag A), picks the solution nearest
            // to them.
            let sol = solve_spd(&amat, &b, k).or_else(|| {
                let lambda = 1e-9 * (0..k).map(|i| amat[i * k + i]).sum::<f64>() / k as f64;
                let mut ridge = amat.clone();
                let mut rhs = b.clone();
                for (i, &(p, g)) in active.iter().enumerate() {
                    ridge[i * k + i] += lambda;
                    rhs[i] += lambda * f64::from(s_old[p][g]);
                }
                solve_spd(&ridge, &rhs, k)
            });
            let Some(sol) = sol else {
                return keep();
            };
            // E(s) = wᵀHw − 2·sᵀb + sᵀAs over the active scales (the others multiply zero
            // entries); compare the new f32 scales with the old without forming ΔW.
            let e_rel = |s: &[f64]| -> f64 {
                let mut e = 0f64;
                for i in 0..k {
                    e -= 2.0 * s[i] * b[i];
                    e += s[i] * dot(&amat[i * k..(i + 1) * k], s);
                }
                e
            };
            let new32: Vec<f32> = sol.iter().map(|&x| store(x)).collect();
            if new32.iter().any(|s| !s.is_finite()) {
                return keep();
            }
            let new64: Vec<f64> = new32.iter().map(|&x| f64::from(x)).collect();
            let old64: Vec<f64> = active
                .iter()
                .map(|&(p, g)| f64::from(s_old[p][g]))
                .collect();
            let mut s_new = keep();
            if e_rel(&new64) < e_rel(&old64) {
                for (i, &(p, g)) in active.iter().enumerate() {
                    s_new[p][g] = new32[i];
                }
            }
            s_new
        })
        .collect();
    let mut out: Vec<Vec<f32>> = vec![Vec::with_capacity(rows * gpr); patterns.len()];
    for row in per_row {
        for (o, s) in out.iter_mut().zip(row) {
            o.extend(s);
        }
    }
    Ok(out)
}

/// Solves `A x = b` for a symmetric positive definite `k × k` `A` by Cholesky; `None` when it
/// is not positive definite.
fn solve_spd(a: &[f64], b: &[f64], k: usize) -> Option<Vec<f64>> {
    let l = cholesky(a, k).ok()?;
    let mut y = vec![0f64; k];
    for i in 0..k {
        y[i] = (b[i] - dot(&l[i * k..i * k + i], &y[..i])) / l[i * k + i];
    }
    let mut x = vec![0f64; k];
    for i in (0..k).rev() {
        let s: f64 = (i + 1..k).map(|j| l[j * k + i] * x[j]).sum();
        x[i] = (y[i] - s) / l[i * k + i];
    }
    Some(x)
}
