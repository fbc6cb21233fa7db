//! Two trit-planes: `W = M₁ + M₂`, two [`TernaryMatrix`]es of one shape and scale layout.
//!
//! With plane scales `s₁ = 3s` and `s₂ = s` the weight is `w = s · (3·t₁ + t₂)`, and
//! `{3·t₁ + t₂ : t₁, t₂ ∈ {−1, 0, 1}}` is exactly the symmetric 9-level grid `{−4, …, 4}`:
//! every level `q` has one split, `t₁ = round(q / 3)`, `t₂ = q − 3·t₁`
//! (`4 → (1, 1)`, `3 → (1, 0)`, `2 → (1, −1)`, `1 → (0, 1)`, `0 → (0, 0)`, and negated).
//! [`TwoPlaneMatrix::from_levels`] makes that split; [`TwoPlaneMatrix::new`] takes any two planes
//! (e.g. free plane scales `a₁`, `a₂`).
//!
//! Products: `y = M₁·x + M₂·x`, each by the one-plane kernels ([`crate::kernels`]) on the same
//! activations — for int8, the same [`QuantizedActivations`] — and summed in `f32`.
//!
//! Cost: 4 bits per weight in memory (two plane pairs, with row padding) plus two sets of
//! scales; 3.2 bits per weight base-3 packed (two times 1.6).

use std::sync::Arc;

use crate::activations::QuantizedActivations;
use crate::error::{Result, TernaryError};
use crate::kernels::{gemm_f32, gemm_i8};
use crate::matrix::{Scales, TernaryMatrix};

/// The largest level of the two-plane grid: `|3·t₁ + t₂| ≤ 4`.
pub const MAX_LEVEL: i8 = 4;

/// `W = M₁ + M₂`: two ternary matrices of one shape and scale layout. See the
/// [module docs](self).
#[derive(Debug, Clone, PartialEq)]
pub struct TwoPlaneMatrix {
    high: Arc<TernaryMatrix>,
    low: Arc<TernaryMatrix>,
}

/// The split of a level `q ∈ {−4, …, 4}` into trits `(t₁, t₂)` with `q = 3·t₁ + t₂`; `None`
/// outside the grid.
#[inline]
pub fn split_level(q: i8) -> Option<(i8, i8)> {
    if !(-MAX_LEVEL..=MAX_LEVEL).contains(&q) {
        return None;
    }
    // round(q / 3) for |q| ≤ 4: −4..=−2 → −1, −1..=1 → 0, 2..=4 → 1.
    let t1 = match q {
        2.. => 1,
        ..=-2 => -1,
        _ => 0,
    };
    Some((t1, q - 3 * t1))
}

/// The nearest `f32` to `s` whose triple `3·s` is exact in `f32` (a significand of at most 22
/// bits), so that `fl(3s)·t₁ + s·t₂ = s·(3·t₁ + t₂)` exactly. Zero and non-finite values come
/// back unchanged; subnormal ones become zero (of the same sign).
pub fn exact_triple_scale(s: f32) -> f32 {
    if s == 0.0 || !s.is_finite() {
        return s;
    }
    if s.is_subnormal() {
        return 0f32.copysign(s);
    }
    // Round away the two lowest significand bits (ties to even on the kept bits).
    let bits = s.to_bits();
    let low = bits & 3;
    let mut kept = bits & !3;
    if low > 2 || (low == 2 && kept & 4 != 0) {
        kept += 4;
    }
    f32::from_bits(kept)
}

impl TwoPlaneMatrix {
    /// Two planes as they are; both must have the same `rows × cols` and scale layout.
    pub fn new(high: TernaryMatrix, low: TernaryMatrix) -> Result<Self> {
        if (high.rows(), high.cols()) != (low.rows(), low.cols()) {
            return Err(TernaryError::shape(format!(
                "two-plane matrix: plane 1 is {}x{}, plane 2 is {}x{}",
                high.rows(),
                high.cols(),
                low.rows(),
                low.cols()
            )));
        }
        if high.scales().layout() != low.scales().layout() {
            return Err(TernaryError::shape(format!(
                "two-plane matrix: plane 1 has {:?} scales, plane 2 has {:?}",
                high.scales().layout(),
                low.scales().layout()
            )));
        }
        Ok(Self {
            high: Arc::new(high),
            low: Arc::new(low),
        })
    }

    /// Splits row-major levels `q ∈ {−4, …, 4}` (`rows · cols`) with scales `s` into
    /// `t₁, t₂` (`q = 3·t₁ + t₂`) with plane scales `3s` and `s`: `w = s · q` exactly.
    ///
    /// Every scale must satisfy `3·s` exact in `f32` (see [`exact_triple_scale`]).
    pub fn from_levels(rows: usize, cols: usize, levels: &[i8], scales: Scales) -> Result<Self> {
        if levels.len() != rows * cols {
            return Err(TernaryError::shape(format!(
                "{rows}x{cols} two-plane matrix needs {} levels, got {}",
                rows * cols,
                levels.len()
            )));
        }
        let mut t1 = Vec::with_capacity(levels.len());
        let mut t2 = Vec::with_capacity(levels.len());
        for &q in levels {
            let (a, b) = split_level(q).ok_or_else(|| {
                TernaryError::config(format!("level {q} is outside the two-plane grid −4..=4"))
            })?;
            t1.push(a);
            t2.push(b);
        }
        let high_scales: Vec<f32> = scales
            .values()
            .iter()
            .enumerate()
            .map(|(i, &s)| {
                let t = 3.0 * s;
                if f64::from(t) == 3.0 * f64::from(s) {
                    Ok(t)
                } else {
                    Err(TernaryError::config(format!(
                        "scale {i} ({s:e}) times 3 is not exact in f32; round it with \
                         exact_triple_scale"
                    )))
                }
            })
            .collect::<Result<_>>()?;
        let layout = scales.layout();
        let high = TernaryMatrix::from_trits(rows, cols, &t1, Scales::new(layout, high_scales))?;
        let low = TernaryMatrix::from_trits(rows, cols, &t2, scales)?;
        Self::new(high, low)
    }

    /// Plane 1 (`M₁`, scales `3s` when made by [`from_levels`](Self::from_levels)).
    pub fn high(&self) -> &TernaryMatrix {
        &self.high
    }

    /// Plane 2 (`M₂`, scales `s`).
    pub fn low(&self) -> &TernaryMatrix {
        &self.low
    }

    /// Shared handles on both planes, `(M₁, M₂)` (cheap to clone).
    pub fn planes_arc(&self) -> (&Arc<TernaryMatrix>, &Arc<TernaryMatrix>) {
        (&self.high, &self.low)
    }

    /// Both planes, `(M₁, M₂)`.
    pub fn into_planes(self) -> (TernaryMatrix, TernaryMatrix) {
        (
            Arc::unwrap_or_clone(self.high),
            Arc::unwrap_or_clone(self.low),
        )
    }

    /// Output channels.
    pub fn rows(&self) -> usize {
        self.high.rows()
    }

    /// Input channels.
    pub fn cols(&self) -> usize {
        self.high.cols()
    }

    /// `3·t₁ + t₂` per weight, row-major (the grid levels when the plane scales are `3s`, `s`).
    pub fn levels(&self) -> Vec<i8> {
        self.high
            .to_trits()
            .iter()
            .zip(self.low.to_trits())
            .map(|(&a, b)| 3 * a + b)
            .collect()
    }

    /// Dense weights `w[r, c] = s₁[r, g(c)]·t₁[r, c] + s₂[r, g(c)]·t₂[r, c]`, row-major `f32`.
    pub fn dequantize(&self) -> Vec<f32> {
        let mut w = self.high.dequantize();
        for (a, b) in w.iter_mut().zip(self.low.dequantize()) {
            *a += b;
        }
        w
    }

    /// Fraction of weights with `3·t₁ + t₂ = 0` (both trits zero).
    pub fn zero_fraction(&self) -> f64 {
        let total = self.rows() * self.cols();
        if total == 0 {
            return 0.0;
        }
        let nonzero: usize = self
            .high
            .plus()
            .iter()
            .zip(self.high.minus())
            .zip(self.low.plus().iter().zip(self.low.minus()))
            .map(|((a, b), (c, d))| (a | b | c | d).count_ones() as usize)
            .sum();
        (total - nonzero) as f64 / total as f64
    }

    /// Bytes of both planes and both sets of scales in memory.
    pub fn storage_bytes(&self) -> usize {
        self.high.storage_bytes() + self.low.storage_bytes()
    }

    /// Bits per weight in memory: 4 for the planes (with row padding) plus the scales.
    pub fn bits_per_weight(&self) -> f64 {
        let total = self.rows() * self.cols();
        if total == 0 {
            0.0
        } else {
            self.storage_bytes() as f64 * 8.0 / total as f64
        }
    }

    /// `y = M₁·x + M₂·x` for `n` tokens of `f32` activations (`x`: `n × cols`, `y`: `n × rows`,
    /// overwritten): [`gemm_f32`] per plane, summed in `f32`.
    pub fn gemm_f32(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        gemm_f32(&self.high, x, n, y)?;
        let mut low = vec![0f32; y.len()];
        gemm_f32(&self.low, x, n, &mut low)?;
        for (a, b) in y.iter_mut().zip(low) {
            *a += b;
        }
        Ok(())
    }

    /// `y = M₁·x + M₂·x` for int8 activations: [`gemm_i8`] per plane on the same quantized
    /// activations `a`, summed in `f32` (`y`: `n × rows`, overwritten).
    pub fn gemm_i8(&self, a: &QuantizedActivations, y: &mut [f32]) -> Result<()> {
        gemm_i8(&self.high, a, y)?;
        let mut low = vec![0f32; y.len()];
        gemm_i8(&self.low, a, &mut low)?;
        for (a, b) in y.iter_mut().zip(low) {
            *a += b;
        }
        Ok(())
    }
}
