//! The public surface: strategies, the kernel configuration, [`TernaryGemm`] for every
//! format, and the level / shape checks before dispatch.

use ternary_core::kernels as core_kernels;
use ternary_core::{QuantizedActivations, Result, TernaryError, TernaryMatrix};

use super::*;
use crate::chunks::PackedChunks;
use crate::lists::IndexLists;
use crate::matrix::BitmapMatrix;

/// From this many tokens on, [`WalkStrategy::Auto`] uses token panels.
pub const PANEL_MIN_TOKENS: usize = 8;
/// [`WalkStrategy::Auto`] runs int8 chunk formats with [`WalkStrategy::ChunkPanels`] when
/// `nnz ≥ CHUNK_PANEL_MIN_FILL · stored chunks` (a `vpdpbusd` covers 4 weights; a walk add one).
pub const CHUNK_PANEL_MIN_FILL: usize = 8;

/// How a kernel walks the weights. See the [module docs](super).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum WalkStrategy {
    /// Chosen from the token count and the format's fill.
    #[default]
    Auto,
    /// One token at a time.
    PerToken,
    /// Transposed activation panels, one vector add per non-zero weight.
    WalkPanels,
    /// Int8 only, chunk formats only: `vpdpbusd` over decoded chunks and 16-token panels
    /// (other cases run [`WalkStrategy::WalkPanels`]).
    ChunkPanels,
}

/// Which kernel to run: a SIMD [`Level`] and a [`WalkStrategy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelConfig {
    /// Instruction-set level; an error if this CPU lacks it.
    pub level: Level,
    /// How to walk the weights.
    pub strategy: WalkStrategy,
}

impl KernelConfig {
    /// [`Level::detect`] and [`WalkStrategy::Auto`].
    pub fn auto() -> Self {
        Self {
            level: Level::detect(),
            strategy: WalkStrategy::Auto,
        }
    }

    /// A chosen level and strategy.
    pub const fn new(level: Level, strategy: WalkStrategy) -> Self {
        Self { level, strategy }
    }
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self::auto()
    }
}

/// GEMV/GEMM over one ternary weight format:
/// `y[j, r] = Σ_g s[r, g] · Σ_{c ∈ g} t[r, c] · x[j, c]`.
///
/// `x` is `n × cols` row-major, `y` is `n × rows` row-major and is overwritten.
pub trait TernaryGemm {
    /// Output channels.
    fn out_features(&self) -> usize;

    /// Input channels.
    fn in_features(&self) -> usize;

    /// `f32` activations with a chosen kernel. Accumulation is in `f32`.
    fn gemm_f32_with(&self, cfg: KernelConfig, x: &[f32], n: usize, y: &mut [f32]) -> Result<()>;

    /// Int8 activations with a chosen kernel; equal to
    /// [`reference::gemm_i8`](ternary_core::reference::gemm_i8) bit for bit.
    fn gemm_i8_with(
        &self,
        cfg: KernelConfig,
        a: &QuantizedActivations,
        y: &mut [f32],
    ) -> Result<()>;

    /// [`gemm_f32_with`](Self::gemm_f32_with) with [`KernelConfig::auto`].
    fn gemm_f32(&self, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        self.gemm_f32_with(KernelConfig::auto(), x, n, y)
    }

    /// Matrix-vector product (`n = 1`).
    fn gemv_f32(&self, x: &[f32], y: &mut [f32]) -> Result<()> {
        self.gemm_f32(x, 1, y)
    }

    /// [`gemm_i8_with`](Self::gemm_i8_with) with [`KernelConfig::auto`].
    fn gemm_i8(&self, a: &QuantizedActivations, y: &mut [f32]) -> Result<()> {
        self.gemm_i8_with(KernelConfig::auto(), a, y)
    }
}

/// The plain dense kernels of `ternary-core` (the strategy is ignored): no sparsity metadata
/// is read, so a dense layer costs exactly what `ternary_core::kernels` costs.
impl TernaryGemm for TernaryMatrix {
    fn out_features(&self) -> usize {
        self.rows()
    }

    fn in_features(&self) -> usize {
        self.cols()
    }

    fn gemm_f32_with(&self, cfg: KernelConfig, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        core_kernels::gemm_f32_with(cfg.level, self, x, n, y)
    }

    fn gemm_i8_with(
        &self,
        cfg: KernelConfig,
        a: &QuantizedActivations,
        y: &mut [f32],
    ) -> Result<()> {
        core_kernels::gemm_i8_with(cfg.level, self, a, y)
    }
}

impl TernaryGemm for BitmapMatrix {
    fn out_features(&self) -> usize {
        self.rows()
    }

    fn in_features(&self) -> usize {
        self.cols()
    }

    fn gemm_f32_with(&self, cfg: KernelConfig, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        chunk_gemm_f32(&dense_view(self), cfg, x, n, y)
    }

    fn gemm_i8_with(
        &self,
        cfg: KernelConfig,
        a: &QuantizedActivations,
        y: &mut [f32],
    ) -> Result<()> {
        chunk_gemm_i8(&dense_view(self), cfg, a, y)
    }
}

impl TernaryGemm for PackedChunks {
    fn out_features(&self) -> usize {
        self.rows()
    }

    fn in_features(&self) -> usize {
        self.cols()
    }

    fn gemm_f32_with(&self, cfg: KernelConfig, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        chunk_gemm_f32(&self.view(), cfg, x, n, y)
    }

    fn gemm_i8_with(
        &self,
        cfg: KernelConfig,
        a: &QuantizedActivations,
        y: &mut [f32],
    ) -> Result<()> {
        chunk_gemm_i8(&self.view(), cfg, a, y)
    }
}

impl TernaryGemm for IndexLists {
    fn out_features(&self) -> usize {
        self.rows()
    }

    fn in_features(&self) -> usize {
        self.cols()
    }

    fn gemm_f32_with(&self, cfg: KernelConfig, x: &[f32], n: usize, y: &mut [f32]) -> Result<()> {
        let v = self.view();
        check_f32(v.rows, v.cols, x, n, y)?;
        let level = simd_level(checked_level(cfg.level)?, v.cols);
        match level {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 if strategy_uses_panels(cfg.strategy, n) => x86::walk_f32(&v, x, n, y),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => x86::lists_f32(&v, x, n, y),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => x86::lists_f32_avx2(&v, x, n, y),
            _ => scalar::gemm_f32(&v, x, n, y),
        }
        Ok(())
    }

    fn gemm_i8_with(
        &self,
        cfg: KernelConfig,
        a: &QuantizedActivations,
        y: &mut [f32],
    ) -> Result<()> {
        let v = self.view();
        check_i8(v.rows, v.cols, a, y)?;
        let level = simd_level(checked_level(cfg.level)?, v.cols);
        match level {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 if strategy_uses_panels(cfg.strategy, a.n()) => x86::walk_i8(&v, a, y),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => x86::lists_i8(&v, a, y),
            #[cfg(target_arch = "x86_64")]
            Level::Avx2 => x86::lists_i8_avx2(&v, a, y),
            _ => scalar::gemm_i8(&v, a, y),
        }
        Ok(())
    }
}

/// The AVX-512 kernels index columns with `i32` gather offsets and `u32` decoded positions;
/// wider matrices (never seen in practice) run the portable kernels.
pub(super) fn simd_cols_ok(cols: usize) -> bool {
    i32::try_from(cols).is_ok()
}

pub(super) fn dense_view(m: &BitmapMatrix) -> ChunkView<'_> {
    let b = m.bitmap();
    ChunkView {
        rows: m.rows(),
        cols: m.cols(),
        wpr: b.chunks_per_row(),
        mpr: b.masks_per_row(),
        masks: b.masks(),
        plus: m.matrix().plus(),
        minus: m.matrix().minus(),
        row_start: None,
        scales: m.matrix().scales(),
        nnz: m.nnz(),
        nonempty: m.nonempty_chunks(),
    }
}

/// Whether an int8 panel walk over chunks decodes them (`ChunkPanels`) rather than walking
/// their columns: when asked, or (`Auto`) when the stored chunks are full enough.
#[cfg(target_arch = "x86_64")]
fn uses_chunk_panels(s: WalkStrategy, v: &ChunkView<'_>) -> bool {
    match s {
        WalkStrategy::ChunkPanels => true,
        WalkStrategy::Auto => v.nnz >= CHUNK_PANEL_MIN_FILL * v.nonempty,
        _ => false,
    }
}

#[cfg(target_arch = "x86_64")]
pub(super) fn strategy_uses_panels(s: WalkStrategy, n: usize) -> bool {
    match s {
        WalkStrategy::Auto => n >= PANEL_MIN_TOKENS,
        WalkStrategy::PerToken => false,
        WalkStrategy::WalkPanels | WalkStrategy::ChunkPanels => true,
    }
}

pub(super) fn chunk_gemm_f32(
    v: &ChunkView<'_>,
    cfg: KernelConfig,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<()> {
    check_f32(v.rows, v.cols, x, n, y)?;
    let level = simd_level(checked_level(cfg.level)?, v.cols);
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 if strategy_uses_panels(cfg.strategy, n) => x86::walk_f32(v, x, n, y),
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => x86::masked_f32(v, x, n, y),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => x86::masked_f32_avx2(v, x, n, y),
        _ => scalar::gemm_f32(v, x, n, y),
    }
    Ok(())
}

pub(super) fn chunk_gemm_i8(
    v: &ChunkView<'_>,
    cfg: KernelConfig,
    a: &QuantizedActivations,
    y: &mut [f32],
) -> Result<()> {
    check_i8(v.rows, v.cols, a, y)?;
    let level = simd_level(checked_level(cfg.level)?, v.cols);
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512
            if strategy_uses_panels(cfg.strategy, a.n()) && uses_chunk_panels(cfg.strategy, v) =>
        {
            x86::chunk_panels_i8(v, a, y)
        }
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 if strategy_uses_panels(cfg.strategy, a.n()) => x86::walk_i8(v, a, y),
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => x86::masked_i8(v, a, y),
        #[cfg(target_arch = "x86_64")]
        Level::Avx2 => x86::masked_i8_avx2(v, a, y),
        _ => scalar::gemm_i8(v, a, y),
    }
    Ok(())
}

/// `level`, or [`Level::Scalar`] when the matrix is too wide for the SIMD kernels.
pub(super) fn simd_level(level: Level, cols: usize) -> Level {
    if simd_cols_ok(cols) {
        level
    } else {
        Level::Scalar
    }
}

pub(super) fn checked_level(level: Level) -> Result<Level> {
    if level.is_available() {
        Ok(level)
    } else {
        Err(TernaryError::Config(format!(
            "kernel level {} is not available on this CPU",
            level.name()
        )))
    }
}

pub(super) fn check_out(rows: usize, n: usize, y: &[f32]) -> Result<()> {
    if n.checked_mul(rows) != Some(y.len()) {
        return Err(TernaryError::Shape(format!(
            "output: expected n x rows = {n} x {rows} values, got {}",
            y.len()
        )));
    }
    Ok(())
}

pub(super) fn check_f32(rows: usize, cols: usize, x: &[f32], n: usize, y: &[f32]) -> Result<()> {
    if n.checked_mul(cols) != Some(x.len()) {
        return Err(TernaryError::Shape(format!(
            "activations: expected n x cols = {n} x {cols} values, got {}",
            x.len()
        )));
    }
    check_out(rows, n, y)
}

pub(super) fn check_i8(
    rows: usize,
    cols: usize,
    a: &QuantizedActivations,
    y: &[f32],
) -> Result<()> {
    if a.cols() != cols {
        return Err(TernaryError::Shape(format!(
            "int8 activations have {} values per token, matrix has {cols} columns",
            a.cols()
        )));
    }
    check_out(rows, a.n(), y)
}
