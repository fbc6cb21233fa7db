//! Fast CPU kernels with run-time SIMD dispatch.
//!
//! - [`gemm_f32`] / [`gemv_f32`]: `y[j, r] = Σ_c s[r, g(c)] · t[r, c] · x[j, c]` with `f32`
//!   activations: masked adds and subtracts of `x` for few tokens; for many tokens (AVX-512)
//!   blocks of weights are decoded to `f32` once and multiplied by FMA.
//! - [`gemm_i8`]: the same product with per-token int8 activations, exact `i32`
//!   accumulators per row and group, then the `f32` scaling order of
//!   [`reference::gemm_i8`](crate::reference::gemm_i8), so results match it bit for bit.
//!   Few tokens: masked `q`/`−q` selection and VNNI sums; many tokens (AVX-512): weights
//!   decoded to `i8` once per block of rows, then a register-tiled VNNI GEMM.
//! - [`ternary_dot`] / [`binary_dot`]: popcount dot products of bit-planes.
//!
//! AMX is never used (it faults on some machines that advertise it).
//!
//! Every entry point has a `*_with(level, ...)` twin that runs a chosen [`Level`] (an error if
//! this CPU lacks it); the plain functions use [`Level::detect`], computed once and cached.
//! Work is split over output rows with rayon; small problems and 1-thread pools run serially.
//! `unsafe` code lives only in the architecture modules (`x86`, `aarch64`).

use std::ops::Range;
use std::sync::OnceLock;

use crate::activations::QuantizedActivations;
use crate::error::{Result, TernaryError};
use crate::matrix::TernaryMatrix;

#[cfg(target_arch = "aarch64")]
mod aarch64;
pub(crate) mod aligned;
pub mod attention;
#[cfg(target_os = "linux")]
mod linux;
pub mod packed;
mod parallel;
mod popcount;
pub(crate) mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

pub use attention::{AttentionScratch, causal_attention_with};
pub use packed::PackedTernary;
pub use parallel::RowSplit;

/// Per-ISA building blocks shared with the kernels of other crates (`ternary-sparsity`,
/// `ternary-models`): the level tokens ([`Avx2`](x86_primitives::Avx2),
/// [`Avx512`](x86_primitives::Avx512)), made only when [`Level::is_available`] says so, and
/// safe `#[target_feature]` functions, callable from code compiled for the same features.
#[cfg(target_arch = "x86_64")]
pub mod x86_primitives {
    use std::arch::x86_64::*;

    pub use super::x86::{Avx2, Avx512};

    /// Sum of the eight `i32` lanes (wrapping; exact when the true sum fits).
    ///
    /// # Safety
    /// Safe to call from code compiled with `avx2` enabled (or a feature implying it, such as
    /// `avx512f`); from anywhere else the caller must ensure the CPU has AVX2.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub fn hsum_epi32(v: __m256i) -> i32 {
        let s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
        let s = _mm_add_epi32(s, _mm_unpackhi_epi64(s, s));
        let s = _mm_add_epi32(s, _mm_shuffle_epi32::<0b01>(s));
        _mm_cvtsi128_si32(s)
    }
}

/// The environment variable that caps the SIMD level: `scalar`, `avx2`, `avx512`, `neon`
/// (or `auto`, the default: the best level this CPU has).
///
/// With `TERNARY_SIMD=avx2` an AVX-512 machine behaves as an AVX2-only one: [`Level::detect`]
/// returns [`Level::Avx2`] and [`Level::is_available`] is `false` for [`Level::Avx512`], so
/// explicit `*_with(Level::Avx512, ..)` calls fail as they would there. A level this CPU lacks
/// cannot be forced: the override is then ignored, with a warning on stderr.
pub const SIMD_ENV: &str = "TERNARY_SIMD";

/// A SIMD instruction-set level a kernel can run at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Portable Rust; always available.
    Scalar,
    /// x86-64 AVX2 + FMA + POPCNT + F16C.
    Avx2,
    /// x86-64 AVX-512 F/BW/VL with VNNI and VPOPCNTDQ (Ice Lake and later, Zen 4 and later).
    Avx512,
    /// aarch64 Advanced SIMD (NEON).
    Neon,
}

/// The parsed [`SIMD_ENV`] override and the warning it produced, read once.
fn simd_override() -> Option<Level> {
    static CAP: OnceLock<Option<Level>> = OnceLock::new();
    *CAP.get_or_init(|| {
        let raw = std::env::var(SIMD_ENV).ok();
        match Level::resolve_override(raw.as_deref(), Level::is_supported) {
            Ok(cap) => cap,
            Err(warning) => {
                eprintln!("ternary: {warning}");
                None
            }
        }
    })
}

impl Level {
    /// Every level, scalar first; the x86 levels in increasing order.
    pub const ALL: [Level; 4] = [Level::Scalar, Level::Avx2, Level::Avx512, Level::Neon];

    /// The best available level: the CPU's best, capped by [`SIMD_ENV`]; detected on first
    /// use and cached.
    pub fn detect() -> Level {
        static BEST: OnceLock<Level> = OnceLock::new();
        *BEST.get_or_init(|| Self::available().last().copied().unwrap_or(Level::Scalar))
    }

    /// Every available level ([`Level::is_available`]), [`Level::Scalar`] first, best last.
    pub fn available() -> Vec<Level> {
        Self::ALL.into_iter().filter(|l| l.is_available()).collect()
    }

    /// Every level this CPU supports, ignoring [`SIMD_ENV`], scalar first, best last.
    pub fn supported() -> Vec<Level> {
        Self::ALL.into_iter().filter(|l| l.is_supported()).collect()
    }

    /// Whether kernels may run at this level: this CPU supports it ([`Level::is_supported`])
    /// and it is not above the [`SIMD_ENV`] cap.
    pub fn is_available(self) -> bool {
        self.is_supported() && simd_override().is_none_or(|cap| self.within(cap))
    }

    /// Whether this CPU (and this build's target architecture) supports the level,
    /// whatever [`SIMD_ENV`] says.
    pub fn is_supported(self) -> bool {
        match self {
            Level::Scalar => true,
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => x86::has_avx2(),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => x86::has_avx512(),
            #[cfg(target_arch = "aarch64")]
            Level::Neon => aarch64::has_neon(),
            #[allow(unreachable_patterns)]
            _ => false,
        }
    }

    /// The level [`SIMD_ENV`] caps kernels at, if it is set to a level this CPU supports.
    pub fn forced() -> Option<Level> {
        simd_override()
    }

    /// Whether `self` may run under the cap `cap`: scalar always; otherwise a level of the
    /// cap's family (x86 or aarch64) no higher than it.
    pub fn within(self, cap: Level) -> bool {
        matches!(
            (self, cap),
            (Level::Scalar, _)
                | (Level::Avx2, Level::Avx2 | Level::Avx512)
                | (Level::Avx512, Level::Avx512)
                | (Level::Neon, Level::Neon)
        )
    }

    /// Parses a level name as [`Level::name`] writes it (ASCII case-insensitive).
    pub fn from_name(name: &str) -> Option<Level> {
        Self::ALL
            .into_iter()
            .find(|l| l.name().eq_ignore_ascii_case(name.trim()))
    }

    /// The cap an [`SIMD_ENV`] value asks for, given which levels the CPU supports: `None` for
    /// no value, an empty value or `auto`. `Err` (a warning; the caller ignores the value) for
    /// an unknown name or a level the CPU lacks.
    pub fn resolve_override(
        value: Option<&str>,
        supported: impl Fn(Level) -> bool,
    ) -> std::result::Result<Option<Level>, String> {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        if v.eq_ignore_ascii_case("auto") {
            return Ok(None);
        }
        let Some(level) = Self::from_name(v) else {
            return Err(format!(
                "ignoring {SIMD_ENV}={v:?}: expected one of auto, scalar, avx2, avx512, neon"
            ));
        };
        if !supported(level) {
            return Err(format!(
                "ignoring {SIMD_ENV}={v}: this CPU (or build) does not support {}",
                level.name()
            ));
        }
        Ok(Some(level))
    }

    /// A short lowercase name (`"scalar"`, `"avx2"`, `"avx512"`, `"neon"`).
    pub fn name(self) -> &'static str {
        match self {
            Level::Scalar => "scalar",
            Level::Avx2 => "avx2",
            Level::Avx512 => "avx512",
            Level::Neon => "neon",
        }
    }
}

impl std::fmt::Display for Level {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn unavailable(level: Level) -> TernaryError {
    let why = if level.is_supported() {
        format!(" ({SIMD_ENV} caps kernels at {})", Level::detect())
    } else {
        String::new()
    };
    TernaryError::config(format!(
        "kernel level {} is not available on this CPU{why}",
        level.name()
    ))
}

/// A level made concrete: the architecture token that proves its features are present.
/// Every entry point dispatches through it, so the `match` over levels lives here once.
#[derive(Clone, Copy)]
enum Isa {
    Scalar,
    #[cfg(target_arch = "x86_64")]
    Avx2(x86::Avx2),
    #[cfg(target_arch = "x86_64")]
    Avx512(x86::Avx512),
    #[cfg(target_arch = "aarch64")]
    Neon(aarch64::Neon),
}

impl Isa {
    /// The token of `level`, if it is available ([`Level::is_available`]).
    fn of(level: Level) -> Result<Self> {
        if !level.is_available() {
            return Err(unavailable(level));
        }
        let isa = match level {
            Level::Scalar => Some(Isa::Scalar),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => x86::Avx2::new().map(Isa::Avx2),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => x86::Avx512::new().map(Isa::Avx512),
            #[cfg(target_arch = "aarch64")]
            Level::Neon => aarch64::Neon::new().map(Isa::Neon),
            #[allow(unreachable_patterns)]
            _ => None,
        };
        isa.ok_or_else(|| unavailable(level))
    }

    fn gemm_f32(self, m: &TernaryMatrix, x: &[f32], n: usize, y: Rows<'_>) {
        match self {
            Isa::Scalar => scalar::gemm_f32(m, x, n, y),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(t) => t.gemm_f32(m, x, n, y),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(t) => t.gemm_f32(m, x, n, y),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon(t) => t.gemm_f32(m, x, n, y),
        }
    }

    fn gemm_i8(self, m: &TernaryMatrix, a: &QuantizedActivations, y: Rows<'_>) {
        match self {
            Isa::Scalar => scalar::gemm_i8(m, a, y),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(t) => t.gemm_i8(m, a, y),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(t) => t.gemm_i8(m, a, y),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon(t) => t.gemm_i8(m, a, y),
        }
    }

    fn ternary_dot(self, ap: &[u32], am: &[u32], bp: &[u32], bm: &[u32]) -> i64 {
        match self {
            Isa::Scalar => popcount::ternary_dot(ap, am, bp, bm),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(t) => t.ternary_dot(ap, am, bp, bm),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(t) => t.ternary_dot(ap, am, bp, bm),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon(t) => t.ternary_dot(ap, am, bp, bm),
        }
    }

    fn xor_popcount(self, a: &[u32], b: &[u32]) -> u64 {
        match self {
            Isa::Scalar => popcount::xor_popcount(a, b),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(t) => t.xor_popcount(a, b),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(t) => t.xor_popcount(a, b),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon(t) => t.xor_popcount(a, b),
        }
    }
}

/// A resolved `f32` dot-product kernel, `Σ_i a[i] · b[i]`: the [`Level`] is checked once, when
/// the handle is made, so a hot loop of short dots pays no dispatch (the float model's host
/// GEMV calls it once per output row).
///
/// Scalar (and NEON, for now): 16 independent partial sums in a fixed order; AVX2 and AVX-512:
/// four 8-lane FMA accumulators. Sums are in `f32`: they differ from the `f64` reference by
/// rounding only, `|Δ| ≤ ~n·ε·Σ|a_i·b_i|`.
#[derive(Clone, Copy)]
pub struct DotF32(Isa);

impl std::fmt::Debug for DotF32 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DotF32({})", self.level().name())
    }
}

impl DotF32 {
    /// The kernel at [`Level::detect`].
    pub fn detect() -> Self {
        // The detected level is available by construction; scalar is the fallback anyway.
        Self(Isa::of(Level::detect()).unwrap_or(Isa::Scalar))
    }

    /// The kernel at `level`; [`TernaryError::Config`] if it is not available.
    pub fn new(level: Level) -> Result<Self> {
        Isa::of(level).map(Self)
    }

    /// The level it runs at.
    pub fn level(self) -> Level {
        match self.0 {
            Isa::Scalar => Level::Scalar,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(_) => Level::Avx2,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(_) => Level::Avx512,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon(_) => Level::Neon,
        }
    }

    /// `Σ_i a[i] · b[i]` over the shorter of the two lengths.
    #[inline]
    pub fn dot(self, a: &[f32], b: &[f32]) -> f32 {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(t) => t.dot_f32(a, b),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(t) => t.dot_f32(a, b),
            _ => scalar::dot_f32(a, b),
        }
    }

    /// `y[i] += a · x[i]` over the shorter of the two lengths (fused multiply-add on
    /// AVX2/AVX-512, a multiply then an add in scalar code).
    #[inline]
    pub fn axpy(self, a: f32, x: &[f32], y: &mut [f32]) {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(t) => t.axpy_f32(a, x, y),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(t) => t.axpy_f32(a, x, y),
            _ => {
                for (v, &xi) in y.iter_mut().zip(x) {
                    *v += a * xi;
                }
            }
        }
    }
}

/// The buffers of the weights a model streams on every token, to be backed by 2 MiB huge pages
/// together, so that streaming them misses the TLB 512× less often. On Linux,
/// [`advise`](Self::advise) collapses (`MADV_HUGEPAGE`, then `MADV_COLLAPSE`) every 2 MiB page at
/// least half of which the buffers cover, the pages shared by neighbouring buffers included:
/// the weights of a model's small matrices (SmolLM2's are all under 2 MiB) lie next to each other
/// in memory, but few of them hold a whole huge page alone. Best effort; contents never change.
///
/// On an AMD EPYC Zen 5 VM (AVX-512) whose transparent huge pages were `madvise`-only, the
/// runtime's BitNet-2B-shape decode (786 MiB per token, 2 threads) gained 6–16% at AVX-512 and
/// 5–8% capped at AVX2 with the whole pages inside each buffer alone (58% of the weights;
/// `TERNARY_HUGE_PAGES=0|1 ternary bench …`, pairs alternated). Collapsing copies the pages:
/// about 1 s per 800 MiB at load.
#[derive(Debug, Default)]
pub struct HugePages {
    /// `(address, bytes)` of each buffer.
    spans: Vec<(usize, usize)>,
}

impl HugePages {
    /// Adds a buffer.
    pub fn add<T>(&mut self, data: &[T]) {
        let bytes = std::mem::size_of_val(data);
        if bytes > 0 {
            self.spans.push((data.as_ptr() as usize, bytes));
        }
    }

    /// Collapses the pages (see the [type docs](Self)): returns the bytes of the buffers now on
    /// huge pages (0 off Linux or where the kernel declined).
    pub fn advise(&self) -> usize {
        #[cfg(target_os = "linux")]
        {
            covered_pages(&self.spans, linux::HUGE_PAGE)
                .into_iter()
                .filter(|&(page, _)| linux::collapse(page))
                .map(|(_, bytes)| bytes)
                .sum()
        }
        #[cfg(not(target_os = "linux"))]
        {
            0
        }
    }
}

/// The pages of `page` bytes (a power of two) at least half covered by `spans` (`(address,
/// bytes)`), with the bytes of the spans in each, in address order; overlapping spans count
/// their common bytes once.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn covered_pages(spans: &[(usize, usize)], page: usize) -> Vec<(usize, usize)> {
    let mut spans = spans.to_vec();
    spans.sort_unstable();
    let mut merged: Vec<(usize, usize)> = Vec::with_capacity(spans.len());
    for (at, len) in spans {
        let end = at.saturating_add(len);
        match merged.last_mut() {
            Some((_, e)) if at <= *e => *e = (*e).max(end),
            _ => merged.push((at, end)),
        }
    }
    let mut covered = std::collections::BTreeMap::<usize, usize>::new();
    for (start, end) in merged {
        let mut at = start;
        while at < end {
            let first = at / page * page;
            let next = first.saturating_add(page).min(end);
            *covered.entry(first).or_default() += next - at;
            at = next;
        }
    }
    covered
        .into_iter()
        .filter(|&(_, bytes)| 2 * bytes >= page)
        .collect()
}

#[cfg(test)]
mod huge_page_tests {
    use rand::rngs::StdRng;
    use rand::{RngExt, SeedableRng};

    /// `covered_pages` against a byte-by-byte count on random, overlapping spans.
    #[test]
    fn covered_pages_should_match_a_byte_count() {
        let seed = 29;
        eprintln!("seed {seed}");
        let mut rng = StdRng::seed_from_u64(seed);
        let page = 64;
        for case in 0..200 {
            let n = rng.random_range(0..6);
            let spans: Vec<(usize, usize)> = (0..n)
                .map(|_| (rng.random_range(0..1000), rng.random_range(0..300)))
                .collect();
            let mut byte = vec![false; 1400];
            for &(at, len) in &spans {
                byte[at..at + len].iter_mut().for_each(|b| *b = true);
            }
            let want: Vec<(usize, usize)> = byte
                .chunks(page)
                .enumerate()
                .map(|(i, c)| (i * page, c.iter().filter(|&&b| b).count()))
                .filter(|&(_, bytes)| 2 * bytes >= page)
                .collect();
            assert_eq!(
                super::covered_pages(&spans, page),
                want,
                "case {case}: {spans:?}"
            );
        }
        assert!(super::covered_pages(&[], page).is_empty());
    }
}

/// The element types of dense weights: `f32`, and IEEE `f16` (half the bytes per product;
/// each value is widened to `f32` exactly before it is multiplied, so an `f16` matrix gives
/// the same sums as the `f32` matrix of the same values, at the same level).
pub trait DenseWeight: Copy + Send + Sync + sealed::Sealed + 'static {
    /// `true` for `f16` (the kernels widen 8 values per load with F16C).
    #[doc(hidden)]
    const HALF: bool;
    /// The value as `f32` (exact).
    fn to_f32(self) -> f32;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
}

impl DenseWeight for f32 {
    const HALF: bool = false;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        self
    }
}

impl DenseWeight for half::f16 {
    const HALF: bool = true;
    #[inline(always)]
    fn to_f32(self) -> f32 {
        half::f16::to_f32(self)
    }
}

/// Dense product for the output rows `rows` on the calling thread (no rayon):
/// `out[(r − rows.start) · n + j] = Σ_c w[r, c] · x[j, c]` with `w: [w.len() / cols, cols]`
/// (`f32` or `f16`, [`DenseWeight`]) and `x: [n, cols]` row-major, `out` row-major by row
/// (`rows.len() × n`). AVX-512 from 16 tokens and 12 rows: the `f32` panel GEMM of the ternary
/// `f32` path (weight blocks widened to `f32` in L2, tokens in lanes, `12 × 32` broadcast-FMA
/// tiles); AVX2, and AVX-512 below that: `4 × 3` register tiles of FMA dot products over
/// blocks of 64 tokens (`f16` rows widened by F16C as they are loaded); scalar: one dot per
/// output. Sums are `f32` in a level-dependent order: `|Δ| ≤ ~cols·ε·Σ|w·x|` against the exact
/// sum.
pub fn dense_rows_with<W: DenseWeight>(
    level: Level,
    w: &[W],
    cols: usize,
    x: &[f32],
    n: usize,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<()> {
    let total = w.len().checked_div(cols).unwrap_or(0);
    if cols == 0 || !w.len().is_multiple_of(cols) {
        return Err(TernaryError::shape(format!(
            "dense weights: {} values are not rows of {cols}",
            w.len()
        )));
    }
    if n.checked_mul(cols) != Some(x.len()) {
        return Err(TernaryError::shape(format!(
            "activations: expected n x cols = {n} x {cols} values, got {}",
            x.len()
        )));
    }
    if rows.start > rows.end || rows.end > total || rows.len().checked_mul(n) != Some(out.len()) {
        return Err(TernaryError::shape(format!(
            "rows {rows:?} of {total} with {n} tokens need {} outputs, got {}",
            rows.len() * n,
            out.len()
        )));
    }
    if rows.is_empty() || n == 0 {
        return Ok(());
    }
    match Isa::of(level)? {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2(t) => t.dense_rows(w, cols, x, n, rows, out),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512(t) => t.dense_rows(w, cols, x, n, rows, out),
        _ => scalar::dense_rows(w, cols, x, n, rows, out),
    }
    Ok(())
}

/// Transposes a row-major block `src: [rows, n]` into columns of a row-major matrix with
/// `stride` values per row: `dst[j · stride + i] = src[i · n + j]` for `i < rows`, `j < n`, or
/// `dst[j · stride + i] += src[i · n + j]` when `add` (one `f32` add per value, the same bits
/// at every level). AVX2 and AVX-512 move 8 × 8 blocks through registers; the scalar level
/// walks them one value at a time. This is how a batch's per-thread product outputs, laid out
/// by output row, become token-major activations.
///
/// [`TernaryError::Shape`] if `src` holds fewer than `rows · n` values, `stride < rows` (with
/// more than one token), or `dst` is shorter than `(n − 1) · stride + rows`.
pub fn transpose_into_with(
    level: Level,
    src: &[f32],
    rows: usize,
    n: usize,
    dst: &mut [f32],
    stride: usize,
    add: bool,
) -> Result<()> {
    if rows == 0 || n == 0 {
        return Ok(());
    }
    let need_src = rows.checked_mul(n);
    let need_dst = (n - 1)
        .checked_mul(stride)
        .and_then(|v| v.checked_add(rows));
    match (need_src, need_dst) {
        (Some(s), Some(d)) if src.len() >= s && dst.len() >= d && (n == 1 || stride >= rows) => {}
        _ => {
            return Err(TernaryError::shape(format!(
                "transpose of {rows} rows × {n} tokens (stride {stride}): source holds {}, \
                 destination {} values",
                src.len(),
                dst.len()
            )));
        }
    }
    let isa = Isa::of(level)?;
    if n == 1 {
        // One token: a contiguous copy or add (vectorized by the compiler).
        for (d, &v) in dst[..rows].iter_mut().zip(&src[..rows]) {
            *d = if add { *d + v } else { v };
        }
        return Ok(());
    }
    match isa {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2(t) => t.transpose_into(src, rows, n, dst, stride, add),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512(t) => t.avx2().transpose_into(src, rows, n, dst, stride, add),
        _ => scalar::transpose_block(src, n, 0..rows, 0..n, dst, stride, add),
    }
    Ok(())
}

/// The SwiGLU gate: `up[i] *= silu(gate[i]) = gate[i] / (1 + e^(−gate[i]))`.
///
/// AVX2/AVX-512 compute `e^x` by a polynomial within about 2 ulp of the exact value (the
/// scalar level uses `f32::exp`), so results agree with `f64` to a few ulp; NaN stays NaN.
/// [`TernaryError::Shape`] if the lengths differ.
pub fn silu_mul_with(level: Level, gate: &[f32], up: &mut [f32]) -> Result<()> {
    if gate.len() != up.len() {
        return Err(TernaryError::shape(format!(
            "silu_mul: gate has {} values, up {}",
            gate.len(),
            up.len()
        )));
    }
    match Isa::of(level)? {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2(t) => t.silu_mul(gate, up),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512(t) => t.silu_mul(gate, up),
        _ => scalar::silu_mul(gate, up),
    }
    Ok(())
}

/// A resolved int8 dot-product kernel, `Σ_i a[i] · b[i]` in `i32`, exact for values in
/// `[−127, 127]` (the codes of [`QuantizedActivations`] and of row-quantized weights) and
/// vectors shorter than `2¹⁷`: the level is checked once, when the handle is made.
///
/// AVX2 (and AVX-512, which uses it): `maddubs(|a|, sign(b, a))` into `i16` pairs, widened to
/// `i32`; elsewhere 16 scalar partial sums. A `−128` in `a` or `b` may give a wrong sum on
/// AVX2 (never undefined behaviour).
#[derive(Clone, Copy)]
pub struct DotI8(Isa);

impl std::fmt::Debug for DotI8 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DotI8({})", DotF32(self.0).level().name())
    }
}

impl DotI8 {
    /// The kernel at `level`; [`TernaryError::Config`] if it is not available.
    pub fn new(level: Level) -> Result<Self> {
        Isa::of(level).map(Self)
    }

    /// `Σ_i a[i] · b[i]` over the shorter of the two lengths.
    #[inline]
    pub fn dot(self, a: &[i8], b: &[i8]) -> i32 {
        match self.0 {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(t) => t.dot_i8(a, b),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(t) => t.dot_i8(a, b),
            _ => scalar::dot_i8(a, b),
        }
    }

    /// Per-token int8 quantization of one row, [`QuantizedActivations::quantize`]'s rule:
    /// `s = max|x| / 127`, `q[c] = clamp(round_half_even(x[c] · 127 / max|x|), ±127)`,
    /// bit-identical at every level. Returns `s`; an all-zero row returns 0 and leaves `q`
    /// as it is.
    ///
    /// # Errors
    /// `q` shorter than `row`, or a non-finite value in `row`.
    pub fn quantize_row(self, row: &[f32], q: &mut [i8]) -> Result<f32> {
        if q.len() < row.len() {
            return Err(TernaryError::shape(format!(
                "codes: {} bytes for a row of {}",
                q.len(),
                row.len()
            )));
        }
        // An exponent of all ones (±∞, NaN) carries into the sign bit of `(bits & exp) + 1ulp
        // of exp`; the branch-free fold vectorizes, the position is looked up only on failure.
        let flags = row.iter().fold(0u32, |a, v| {
            a | ((v.to_bits() & 0x7f80_0000).wrapping_add(0x0080_0000) & 0x8000_0000)
        });
        if flags != 0
            && let Some(i) = row.iter().position(|v| !v.is_finite())
        {
            return Err(TernaryError::config(format!(
                "activation {i} is not finite: {}",
                row[i]
            )));
        }
        Ok(match self.0 {
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2(t) => t.quantize_row_i8(row, q),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512(t) => t.quantize_row_i8(row, q),
            _ => scalar::quantize_row_i8(row, q),
        })
    }
}

fn check_f32_shapes(m: &TernaryMatrix, x: &[f32], n: usize, y: &[f32]) -> Result<()> {
    let need_x = n.checked_mul(m.cols());
    if need_x != Some(x.len()) {
        return Err(TernaryError::shape(format!(
            "activations: expected n x cols = {n} x {} values, got {}",
            m.cols(),
            x.len()
        )));
    }
    check_y(m, n, y)
}

fn check_y(m: &TernaryMatrix, n: usize, y: &[f32]) -> Result<()> {
    let need_y = n.checked_mul(m.rows());
    if need_y != Some(y.len()) {
        return Err(TernaryError::shape(format!(
            "output: expected n x rows = {n} x {} values, got {}",
            m.rows(),
            y.len()
        )));
    }
    Ok(())
}

fn check_i8_shapes(m: &TernaryMatrix, a: &QuantizedActivations, y: &[f32]) -> Result<()> {
    if a.cols() != m.cols() {
        return Err(TernaryError::shape(format!(
            "int8 activations have {} values per token, matrix has {} columns",
            a.cols(),
            m.cols()
        )));
    }
    check_y(m, a.n(), y)
}

/// `y[j, r] = Σ_c s[r, g(c)] · t[r, c] · x[j, c]` with `f32` activations, at [`Level::detect`].
///
/// `x` is `n × cols` row-major; `y` is `n × rows` row-major and is overwritten.
/// Accumulation is in `f32` (order differs from the `f64` reference by rounding only).
pub fn gemm_f32(m: &TernaryMatrix, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
    gemm_f32_with(Level::detect(), m, x, n, y)
}

/// [`gemm_f32`] at a chosen level; [`TernaryError::Config`] if this CPU lacks it.
pub fn gemm_f32_with(
    level: Level,
    m: &TernaryMatrix,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<()> {
    check_f32_shapes(m, x, n, y)?;
    Isa::of(level)?.gemm_f32(m, x, n, Rows::All(y));
    Ok(())
}

/// Checks that `rows` lies in `m` and `out` holds `rows.len() × n` values.
fn check_row_range(m: &TernaryMatrix, n: usize, rows: &Range<usize>, out: &[f32]) -> Result<()> {
    check_rows_of(m.rows(), n, rows, out)
}

/// The shapes of a row-range int8 product of a `total × cols` matrix.
fn check_i8_rows(
    total: usize,
    cols: usize,
    a: &QuantizedActivations,
    rows: &Range<usize>,
    out: &[f32],
) -> Result<()> {
    if a.cols() != cols {
        return Err(TernaryError::shape(format!(
            "int8 activations have {} values per token, matrix has {cols} columns",
            a.cols()
        )));
    }
    check_rows_of(total, a.n(), rows, out)
}

/// [`check_row_range`] for a matrix of `total` rows.
fn check_rows_of(total: usize, n: usize, rows: &Range<usize>, out: &[f32]) -> Result<()> {
    if rows.start > rows.end || rows.end > total {
        return Err(TernaryError::shape(format!(
            "row range {rows:?} is not within the matrix's {total} rows"
        )));
    }
    if rows.len().checked_mul(n) != Some(out.len()) {
        return Err(TernaryError::shape(format!(
            "output: expected rows x n = {} x {n} values, got {}",
            rows.len(),
            out.len()
        )));
    }
    Ok(())
}

/// [`gemm_f32_with`] for the output rows `rows` only, on the calling thread (no rayon): for a
/// persistent worker that owns a slice of a product's rows.
///
/// `out` is **row-major by row**: `out[(r − rows.start) · n + j] = y[j, r]`
/// (`rows.len() × n` values). Each value equals [`gemm_f32_with`]'s at the same level, bit for
/// bit (the per-row arithmetic does not depend on how rows are split).
pub fn gemm_f32_rows_with(
    level: Level,
    m: &TernaryMatrix,
    x: &[f32],
    n: usize,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<()> {
    if n.checked_mul(m.cols()) != Some(x.len()) {
        return Err(TernaryError::shape(format!(
            "activations: expected n x cols = {n} x {} values, got {}",
            m.cols(),
            x.len()
        )));
    }
    check_row_range(m, n, &rows, out)?;
    Isa::of(level)?.gemm_f32(m, x, n, Rows::Range(rows, out));
    Ok(())
}

/// [`gemm_i8_with`] for the output rows `rows` only, on the calling thread (no rayon).
///
/// `out` is **row-major by row**: `out[(r − rows.start) · n + j] = y[j, r]`
/// (`rows.len() × n` values), each bit-identical to [`gemm_i8_with`] at the same level.
pub fn gemm_i8_rows_with(
    level: Level,
    m: &TernaryMatrix,
    a: &QuantizedActivations,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<()> {
    check_i8_rows(m.rows(), m.cols(), a, &rows, out)?;
    Isa::of(level)?.gemm_i8(m, a, Rows::Range(rows, out));
    Ok(())
}

/// [`gemm_i8_rows_with`] on a [`PackedTernary`]: the same values, bit for bit, as the
/// original matrix's product at `level`. A matrix repacked for another level than `level` is
/// turned back into planes for the call (correct, not fast).
pub fn gemm_i8_packed_rows_with(
    level: Level,
    w: &PackedTernary,
    a: &QuantizedActivations,
    rows: Range<usize>,
    out: &mut [f32],
) -> Result<()> {
    check_i8_rows(w.rows(), w.cols(), a, &rows, out)?;
    let isa = Isa::of(level)?;
    match (&w.repr, isa) {
        (packed::Repr::Planes(m), isa) => isa.gemm_i8(m, a, Rows::Range(rows, out)),
        #[cfg(target_arch = "x86_64")]
        (packed::Repr::Fields(f), Isa::Avx2(t)) => t.gemm_i8_fields(f, a, Rows::Range(rows, out)),
        #[cfg(target_arch = "x86_64")]
        (packed::Repr::Fields(f), Isa::Avx512(t)) => t.gemm_i8_fields(f, a, Rows::Range(rows, out)),
        #[allow(unreachable_patterns)]
        (packed::Repr::Fields(f), isa) => {
            let m = f.planes(rows.clone());
            isa.gemm_i8(&m, a, Rows::Range(0..rows.len(), out))
        }
    }
    Ok(())
}

/// Matrix-vector product `y[r] = Σ_c s[r, g(c)] · t[r, c] · x[c]` ([`gemm_f32`] with `n = 1`).
pub fn gemv_f32(m: &TernaryMatrix, x: &[f32], y: &mut [f32]) -> Result<()> {
    gemm_f32(m, x, 1, y)
}

/// Int8 GEMM at [`Level::detect`]: `y[j, r] = s_j · Σ_g s[r, g] · acc[j, r, g]` with exact
/// `acc[j, r, g] = Σ_{c ∈ g} q[j, c] · t[r, c]`.
///
/// `y` is `n × rows` row-major. The result equals
/// [`reference::gemm_i8`](crate::reference::gemm_i8) bit for bit (same `f32` order:
/// `sum = 0; for g { sum += s[r, g] · (acc as f32) }; y = sum · s_j`).
pub fn gemm_i8(m: &TernaryMatrix, a: &QuantizedActivations, y: &mut [f32]) -> Result<()> {
    gemm_i8_with(Level::detect(), m, a, y)
}

/// [`gemm_i8`] at a chosen level; [`TernaryError::Config`] if this CPU lacks it.
pub fn gemm_i8_with(
    level: Level,
    m: &TernaryMatrix,
    a: &QuantizedActivations,
    y: &mut [f32],
) -> Result<()> {
    check_i8_shapes(m, a, y)?;
    Isa::of(level)?.gemm_i8(m, a, Rows::All(y));
    Ok(())
}

fn check_ternary_planes(
    a_plus: &[u32],
    a_minus: &[u32],
    b_plus: &[u32],
    b_minus: &[u32],
) -> Result<()> {
    let len = a_plus.len();
    if a_minus.len() != len || b_plus.len() != len || b_minus.len() != len {
        return Err(TernaryError::shape(format!(
            "ternary_dot: plane lengths differ (a+ {}, a- {}, b+ {}, b- {})",
            len,
            a_minus.len(),
            b_plus.len(),
            b_minus.len()
        )));
    }
    Ok(())
}

/// Ternary dot `Σ_i a_i · b_i` of two plane pairs, at [`Level::detect`]:
/// `popc(a⁺&b⁺) + popc(a⁻&b⁻) − popc(a⁺&b⁻) − popc(a⁻&b⁺)`.
///
/// All four slices must have the same length. A position with both bits set in one vector
/// counts as `0`, as in [`reference::ternary_dot`](crate::reference::ternary_dot).
pub fn ternary_dot(
    a_plus: &[u32],
    a_minus: &[u32],
    b_plus: &[u32],
    b_minus: &[u32],
) -> Result<i64> {
    ternary_dot_with(Level::detect(), a_plus, a_minus, b_plus, b_minus)
}

/// [`ternary_dot`] at a chosen level; [`TernaryError::Config`] if this CPU lacks it.
pub fn ternary_dot_with(
    level: Level,
    a_plus: &[u32],
    a_minus: &[u32],
    b_plus: &[u32],
    b_minus: &[u32],
) -> Result<i64> {
    check_ternary_planes(a_plus, a_minus, b_plus, b_minus)?;
    Ok(Isa::of(level)?.ternary_dot(a_plus, a_minus, b_plus, b_minus))
}

/// Binary (±1, bit `1` = `+1`) dot of the first `bits` elements, at [`Level::detect`]:
/// `bits − 2 · popc(a XOR b)` over those bits. Bits past `bits` are ignored.
///
/// `a` and `b` must have the same length and hold at least `bits` bits.
pub fn binary_dot(a: &[u32], b: &[u32], bits: usize) -> Result<i64> {
    binary_dot_with(Level::detect(), a, b, bits)
}

/// [`binary_dot`] at a chosen level; [`TernaryError::Config`] if this CPU lacks it.
pub fn binary_dot_with(level: Level, a: &[u32], b: &[u32], bits: usize) -> Result<i64> {
    if a.len() != b.len() || bits.div_ceil(32) > a.len() {
        return Err(TernaryError::shape(format!(
            "binary_dot: {bits} bits need two vectors of at least {} words, got {} and {}",
            bits.div_ceil(32),
            a.len(),
            b.len()
        )));
    }
    let full = bits / 32;
    let tail = bits % 32;
    let (af, bf) = (&a[..full], &b[..full]);
    let mut differ = Isa::of(level)?.xor_popcount(af, bf);
    if tail != 0 {
        let mask = (1u32 << tail) - 1;
        differ += u64::from(((a[full] ^ b[full]) & mask).count_ones());
    }
    // bits ≤ 32 · len fits in i64 for any slice that fits in memory.
    Ok(bits as i64 - 2 * differ as i64)
}

/// Column ranges (in `u32` words) of the scale groups of one row: group `g` covers words
/// `g · words_per_group .. min((g + 1) · words_per_group, words_per_row)`.
///
/// For per-row scales there is one group spanning the whole row (possibly zero words).
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupWords {
    pub groups: usize,
    pub words_per_group: usize,
    pub words_per_row: usize,
}

impl GroupWords {
    pub(crate) fn of(m: &TernaryMatrix) -> Self {
        Self::of_layout(m.scales().layout(), m.cols(), m.words_per_row())
    }

    /// [`GroupWords::of`] a matrix of `cols` columns (`wpr` words per row) and this layout.
    pub(crate) fn of_layout(layout: crate::matrix::ScaleLayout, cols: usize, wpr: usize) -> Self {
        let groups = layout.groups_per_row(cols);
        let words_per_group = match layout {
            crate::matrix::ScaleLayout::PerRow => wpr.max(1),
            crate::matrix::ScaleLayout::PerGroup { group_size } => group_size / 32,
        };
        Self {
            groups,
            words_per_group,
            words_per_row: wpr,
        }
    }

    /// Words of group `g`.
    #[inline]
    pub(crate) fn range(&self, g: usize) -> Range<usize> {
        let start = (g * self.words_per_group).min(self.words_per_row);
        start..((g + 1) * self.words_per_group).min(self.words_per_row)
    }
}

/// Where a kernel's row loop runs: every row of the product, split over rayon's threads
/// ([`par_rows`], output `y` is `n × rows`), or one range of rows on the calling thread (the
/// `*_rows_with` entry points, output row-major by row: `out[(r − start) · n + j]`).
pub(crate) enum Rows<'y> {
    /// All rows, in parallel when worthwhile; `y` is `n × rows` row-major.
    All(&'y mut [f32]),
    /// `range` only, serially; `out` holds `range.len() × n` values, row-major by row.
    Range(Range<usize>, &'y mut [f32]),
}

impl Rows<'_> {
    /// Whether the work runs on the calling thread only (no rayon anywhere in the kernel).
    #[cfg(target_arch = "x86_64")]
    pub(crate) fn is_serial(&self) -> bool {
        matches!(self, Rows::Range(..))
    }

    /// Runs `f(rows, out)` over the target's rows: [`par_rows`] for [`Rows::All`], one call
    /// for [`Rows::Range`] (none when it or `n` is empty). `out` is row-major by row.
    pub(crate) fn run<F>(self, rows: usize, cols: usize, n: usize, align: usize, f: F)
    where
        F: Fn(Range<usize>, &mut [f32]) + Sync,
    {
        match self {
            Rows::All(y) => par_rows(rows, cols, n, align, y, f),
            Rows::Range(range, out) => {
                if !range.is_empty() && n > 0 {
                    f(range, out);
                }
            }
        }
    }
}

/// Multiply-accumulates below which a row chunk of the dense kernels is not worth a rayon task.
const MIN_TASK_WORK: usize = 1 << 20;

/// [`RowSplit::run`] for the dense kernels: chunks of about a quarter of a thread's share,
/// at least `MIN_TASK_WORK` multiply-accumulates, multiples of `align` rows.
pub(crate) fn par_rows<F>(rows: usize, cols: usize, n: usize, align: usize, y: &mut [f32], f: F)
where
    F: Fn(Range<usize>, &mut [f32]) + Sync,
{
    let split = RowSplit {
        min_task_work: MIN_TASK_WORK,
        parts_per_thread: 4,
        align,
    };
    split.run(rows, cols.max(1) * n, n, y, f);
}

/// Calls `full(r, out)` on blocks of `block` rows and `single(r, out)` on the remaining rows.
///
/// `out` holds `rows.len() × n` outputs (row-major by row); each call gets its rows' part.
#[cfg(target_arch = "x86_64")]
pub(crate) fn by_row_blocks(
    rows: Range<usize>,
    n: usize,
    block: usize,
    out: &mut [f32],
    mut full: impl FnMut(usize, &mut [f32]),
    mut single: impl FnMut(usize, &mut [f32]),
) {
    let mut r = rows.start;
    while r < rows.end {
        let take = (rows.end - r).min(block);
        let base = (r - rows.start) * n;
        if take == block {
            full(r, &mut out[base..base + block * n]);
        } else {
            for i in 0..take {
                single(r + i, &mut out[base + i * n..base + (i + 1) * n]);
            }
        }
        r += take;
    }
}
