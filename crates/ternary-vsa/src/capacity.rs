//! Retrieval accuracy of bundles: the Gaussian model and the caps derived from it.
//!
//! A query is decoded by comparing a noisy vector with a codebook of `M` items. Let the score
//! of the correct item be `μ + σ_c·Z₀` and the scores of the `M − 1` others `σ_w·Zⱼ` with
//! independent standard normals `Zⱼ`. With `s = μ / σ_w` and `ρ = σ_c / σ_w` the probability
//! that the correct item scores highest is
//!
//! `p(s, ρ, M) = ∫ φ(h) · Φ(s + ρ·h)^(M−1) dh`.
//!
//! For `k` random key–value pairs bound and bundled in `D` dimensions (`docs/vsa.md` has the
//! derivations):
//!
//! - **count bundle** ([`CapacityModel::CountBundle`]): `μ = D`, `σ_c² = D(k−1)`,
//!   `σ_w² = Dk`, so `s = √(D/k)` and `ρ = √((k−1)/k)`;
//! - **majority bundle** ([`CapacityModel::Majority`]): each component of the unbound
//!   majority agrees with the stored value with correlation `c_k = C(n, n/2)/2ⁿ`,
//!   `n = 2⌊k/2⌋` (`≈ √(2/(πk))`), so `s = √D·c_k` and `ρ = √(1 − c_k²)`.
//!
//! With `ρ = 1` this is the textbook `p = ∫ φ(h)·Φ(h + s)^(M−1) dh`; the exact `ρ` changes
//! `p` by less than `10⁻³` for `k ≥ 100`.
//!
//! **Accuracy of the numbers**: `Φ` is computed from `erfc` by a power series (`x < 1.5`) and
//! a continued fraction (`x ≥ 1.5`) with relative error below `10⁻¹³`; the integral over
//! `[−10, 10]` (outside mass `< 10⁻²²`) is adaptive Simpson with Richardson correction to an
//! absolute tolerance of `10⁻¹²`, so [`retrieval_accuracy`] is within `10⁻⁹` of the model.

use crate::error::{Result, VsaError, check_dim};

/// `1 / √π`.
const FRAC_1_SQRT_PI: f64 = 0.564_189_583_547_756_3;
/// `ln √π`.
const LN_SQRT_PI: f64 = 0.572_364_942_924_700_1;
/// `1 / √(2π)`.
const FRAC_1_SQRT_2PI: f64 = 0.398_942_280_401_432_7;
/// Where the erfc power series hands over to the continued fraction.
const SERIES_CUTOFF: f64 = 1.5;

/// `erf(x)·e^{x²}·√π/2 = Σₙ 2ⁿ x^{2n+1} / (1·3·…·(2n+1))` for `0 ≤ x`: positive terms, no
/// cancellation.
fn erf_series_scaled(x: f64) -> f64 {
    let (mut term, mut sum) = (x, x);
    let x2 = 2.0 * x * x;
    let mut n = 0.0;
    while term > 1e-17 * sum {
        n += 1.0;
        term *= x2 / (2.0 * n + 1.0);
        sum += term;
    }
    sum
}

/// The continued fraction `f` with `erfc(x) = e^{−x²} / (√π · f)` for `x ≥ 1.5`:
/// `f = x + (1/2)/(x + 1/(x + (3/2)/(x + …)))`, evaluated by the modified Lentz method.
fn erfc_cf_denominator(x: f64) -> f64 {
    let tiny = 1e-300;
    let mut f = x;
    let (mut c, mut d) = (x, 0.0);
    for n in 1..10_000 {
        let a = n as f64 / 2.0;
        d = x + a * d;
        d = if d == 0.0 { 1.0 / tiny } else { 1.0 / d };
        c = x + a / c;
        if c == 0.0 {
            c = tiny;
        }
        let delta = c * d;
        f *= delta;
        if (delta - 1.0).abs() <= 2.3e-16 {
            break;
        }
    }
    f
}

/// The complementary error function `erfc(x) = (2/√π) ∫ₓ^∞ e^{−t²} dt` (relative error
/// below `10⁻¹³`).
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    if x < SERIES_CUTOFF {
        1.0 - 2.0 * FRAC_1_SQRT_PI * (-x * x).exp() * erf_series_scaled(x)
    } else {
        (-x * x).exp() * FRAC_1_SQRT_PI / erfc_cf_denominator(x)
    }
}

/// `ln erfc(x)` for `x ≥ 0`, without underflow for large `x`.
fn ln_erfc_nonneg(x: f64) -> f64 {
    if x < SERIES_CUTOFF {
        erfc(x).ln()
    } else {
        -x * x - LN_SQRT_PI - erfc_cf_denominator(x).ln()
    }
}

/// The standard normal density `φ(x) = e^{−x²/2} / √(2π)`.
pub fn normal_pdf(x: f64) -> f64 {
    FRAC_1_SQRT_2PI * (-0.5 * x * x).exp()
}

/// The standard normal distribution function `Φ(x) = erfc(−x/√2) / 2`.
pub fn normal_cdf(x: f64) -> f64 {
    0.5 * erfc(-x / std::f64::consts::SQRT_2)
}

/// `ln Φ(x)`, accurate in both tails (`ln(1 − Q)` by `ln_1p` for `x ≥ 0`, `ln Q(−x)` in log
/// space for `x < 0`).
pub fn ln_normal_cdf(x: f64) -> f64 {
    let y = x.abs() / std::f64::consts::SQRT_2;
    if x >= 0.0 {
        (-0.5 * erfc(y)).ln_1p()
    } else {
        ln_erfc_nonneg(y) - std::f64::consts::LN_2
    }
}

/// The model's accuracy `p(s, ρ, M) = ∫ φ(h)·Φ(s + ρh)^(M−1) dh`: the probability that the
/// correct item (score `s + ρ·Z₀` in units of the wrong items' spread) beats `M − 1`
/// independent standard normal scores. `1` for `M ≤ 1`; `ρ ≥ 0`.
pub fn retrieval_accuracy(s: f64, rho: f64, codebook_size: usize) -> f64 {
    if codebook_size <= 1 {
        return 1.0;
    }
    let others = (codebook_size - 1) as f64;
    let f = |h: f64| normal_pdf(h) * (others * ln_normal_cdf(s + rho * h)).exp();
    integrate(&f, -10.0, 10.0, 1e-12).clamp(0.0, 1.0)
}

/// Adaptive Simpson integration of `f` over `[a, b]` to absolute tolerance `tol`, starting from
/// 64 equal panels (so that no feature narrower than the function's scale is skipped).
pub(crate) fn integrate(f: &impl Fn(f64) -> f64, a: f64, b: f64, tol: f64) -> f64 {
    const PANELS: usize = 64;
    let width = (b - a) / PANELS as f64;
    (0..PANELS)
        .map(|i| {
            let (l, r) = (a + i as f64 * width, a + (i + 1) as f64 * width);
            let m = 0.5 * (l + r);
            let (fl, fm, fr) = (f(l), f(m), f(r));
            let whole = (r - l) / 6.0 * (fl + 4.0 * fm + fr);
            simpson_step(f, l, r, fl, fm, fr, whole, tol / PANELS as f64, 40)
        })
        .sum()
}

#[allow(clippy::too_many_arguments)]
fn simpson_step(
    f: &impl Fn(f64) -> f64,
    a: f64,
    b: f64,
    fa: f64,
    fm: f64,
    fb: f64,
    whole: f64,
    tol: f64,
    depth: u32,
) -> f64 {
    let m = 0.5 * (a + b);
    let (lm, rm) = (0.5 * (a + m), 0.5 * (m + b));
    let (flm, frm) = (f(lm), f(rm));
    let left = (m - a) / 6.0 * (fa + 4.0 * flm + fm);
    let right = (b - m) / 6.0 * (fm + 4.0 * frm + fb);
    let delta = left + right - whole;
    if depth == 0 || delta.abs() <= 15.0 * tol {
        return left + right + delta / 15.0;
    }
    simpson_step(f, a, m, fa, flm, fm, left, tol / 2.0, depth - 1)
        + simpson_step(f, m, b, fm, frm, fb, right, tol / 2.0, depth - 1)
}

/// `c_k = E[sign(Σⱼ x̂ⱼ)·x̂₁]` for `k` independent random `±1` votes with random tie-break:
/// `C(n, n/2) / 2ⁿ` with `n = 2⌊k/2⌋` (`c₁ = 1`, `c₂ = c₃ = 1/2`, `c_k ≈ √(2/(πk))`).
/// `0` for `k = 0`.
pub fn majority_correlation(k: usize) -> f64 {
    if k == 0 {
        return 0.0;
    }
    let n = 2 * (k / 2);
    if n <= 4096 {
        // a₀ = 1, a_{m+2} = a_m · (m + 1) / (m + 2).
        let mut a = 1.0f64;
        let mut m = 0;
        while m < n {
            a *= (m + 1) as f64 / (m + 2) as f64;
            m += 2;
        }
        a
    } else {
        // Asymptotic series of the central binomial coefficient (relative error < 10⁻¹⁶).
        let n = n as f64;
        (2.0 / (std::f64::consts::PI * n)).sqrt()
            * (1.0 - 1.0 / (4.0 * n) + 1.0 / (32.0 * n * n) + 5.0 / (128.0 * n * n * n))
    }
}

/// How a bundle is read out before the codebook comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CapacityModel {
    /// Integer counts, unbound and compared directly (`s = √(D/k)`).
    CountBundle,
    /// Thresholded to a binary majority vector first (`s = √D·c_k ≈ √(2D/(πk))`).
    Majority,
}

impl CapacityModel {
    /// `(s, ρ)` of the model for `k ≥ 1` items in `D` dimensions (see the module docs).
    pub fn signal(self, dim: usize, k: usize) -> (f64, f64) {
        let (d, kf) = (dim as f64, k.max(1) as f64);
        match self {
            CapacityModel::CountBundle => ((d / kf).sqrt(), ((kf - 1.0) / kf).sqrt()),
            CapacityModel::Majority => {
                let c = majority_correlation(k.max(1));
                (d.sqrt() * c, (1.0 - c * c).max(0.0).sqrt())
            }
        }
    }

    /// Expected one-shot retrieval accuracy for `k` key–value pairs in `D` dimensions against a
    /// codebook of `M` items: [`retrieval_accuracy`] at [`signal`](Self::signal). `1` for `k = 0`.
    pub fn accuracy(self, dim: usize, k: usize, codebook_size: usize) -> f64 {
        if k == 0 {
            return 1.0;
        }
        let (s, rho) = self.signal(dim, k);
        retrieval_accuracy(s, rho, codebook_size)
    }

    /// A short lowercase name (`"count"`, `"majority"`).
    pub fn name(self) -> &'static str {
        match self {
            CapacityModel::CountBundle => "count",
            CapacityModel::Majority => "majority",
        }
    }
}

/// The largest `k` with `model.accuracy(D, k, M) ≥ target` (`0` if even one item misses it).
///
/// Exponential then binary search, assuming accuracy falls with `k` (true for both models in
/// the range of useful targets). Errors: `D = 0`, `M < 2`, `target` not in `(1/M, 1)`
/// (at or below chance level every `k` would pass).
pub fn max_items(
    model: CapacityModel,
    dim: usize,
    codebook_size: usize,
    target: f64,
) -> Result<usize> {
    check_dim(dim)?;
    if codebook_size < 2 {
        return Err(VsaError::invalid(
            "a capacity cap needs a codebook of at least 2 items",
        ));
    }
    let chance = 1.0 / codebook_size as f64;
    if !(target > chance && target < 1.0) {
        return Err(VsaError::invalid(format!(
            "target accuracy must be in (1/M, 1) = ({chance}, 1), got {target}"
        )));
    }
    let ok = |k: usize| model.accuracy(dim, k, codebook_size) >= target;
    if !ok(1) {
        return Ok(0);
    }
    let mut hi = 2usize;
    while ok(hi) {
        if hi >= 1 << 50 {
            return Err(VsaError::invalid("capacity search did not terminate"));
        }
        hi *= 2;
    }
    // ok(lo), !ok(hi).
    let mut lo = hi / 2;
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if ok(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    Ok(lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Composite Simpson with a fixed number of panels: the brute-force check of `integrate`.
    fn simpson_fixed(f: impl Fn(f64) -> f64, a: f64, b: f64, panels: usize) -> f64 {
        let h = (b - a) / panels as f64;
        let mut acc = f(a) + f(b);
        for i in 1..panels {
            let w = if i % 2 == 1 { 4.0 } else { 2.0 };
            acc += w * f(a + i as f64 * h);
        }
        acc * h / 3.0
    }

    #[test]
    fn adaptive_integral_matches_fine_fixed_grid_within_1e9() {
        for &(s, rho, m) in &[
            (4.472, 0.999, 500usize),
            (3.0, 1.0, 10_000),
            (6.0, 0.5, 1_000_000),
            (1.0, 0.1, 2),
            (0.0, 1.0, 50),
        ] {
            let others = (m - 1) as f64;
            let f = |h: f64| normal_pdf(h) * (others * ln_normal_cdf(s + rho * h)).exp();
            let fine = simpson_fixed(f, -10.0, 10.0, 400_000);
            let got = retrieval_accuracy(s, rho, m);
            assert!(
                (got - fine).abs() < 1e-9,
                "s={s} rho={rho} M={m}: adaptive {got} vs fixed {fine}"
            );
        }
    }

    #[test]
    fn integrate_is_exact_on_cubics_and_normal_mass() {
        let cubic = integrate(&|x: f64| 3.0 * x * x * x - x + 2.0, -1.0, 3.0, 1e-12);
        // ∫_{-1}^{3} (3x³ − x + 2) dx = 3·(81 − 1)/4 − (9 − 1)/2 + 8 = 60 − 4 + 8.
        assert!((cubic - 64.0).abs() < 1e-10, "{cubic}");
        let mass = integrate(&normal_pdf, -10.0, 10.0, 1e-12);
        assert!((mass - 1.0).abs() < 1e-11, "{mass}");
    }
}
