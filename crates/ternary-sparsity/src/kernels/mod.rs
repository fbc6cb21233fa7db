//! Skip kernels: GEMV/GEMM over the sparse formats, with `f32` or int8 activations.
//!
//! Every format computes what the dense kernels of `ternary-core` compute,
//!
//! `y[j, r] = Σ_g s[r, g] · Σ_{c ∈ g} t[r, c] · x[j, c]`,
//!
//! but touches only the non-empty chunks ([`BitmapMatrix`], [`PackedChunks`]) or only the
//! non-zero weights ([`IndexLists`]). The int8 path keeps exact `i32` group sums and the `f32`
//! order of [`reference::gemm_i8`](ternary_core::reference::gemm_i8)
//! (`sum = 0; for g { sum += s[r, g] · (acc as f32) }; y = sum · s_j`), so its results equal
//! the reference bit for bit: a skipped group has `acc = 0` and would add `±0` to a sum that
//! is never `−0`, which changes nothing.
//!
//! Strategies ([`Strategy`]):
//! - [`Strategy::PerToken`]: one token at a time. Chunk formats run masked adds (`f32`) or a
//!   masked `vpdpbusd` (int8) over each non-empty 32-chunk; index lists decode their gap codes
//!   16 bytes at a time and gather `x[j, c]` at the listed columns.
//! - [`Strategy::WalkPanels`]: activations transposed into panels of up to 64 tokens
//!   (`x̃[c] = (x[j₀, c], …, x[j₀+63, c])`, `f32`, or int8 widened to `i32` up to 32 tokens and
//!   to `i16` beyond, summed in runs of at most 256 weights so `i16` cannot overflow); rows are
//!   decoded once into column lists and each non-zero weight adds or subtracts one panel
//!   column: `nnz · n / 16` (`/ 32` for `i16`) vector adds in all.
//! - [`Strategy::ChunkPanels`] (int8, chunk formats): each non-empty chunk is decoded to 32
//!   `i8` weights and multiplied into 16-token panels of `u8 = q + 128` with `vpdpbusd`
//!   (8 per chunk per 16 tokens, as the dense blocked kernel), the offset removed exactly by
//!   `−128 · Σ_{c ∈ g} t[r, c]`.
//! - [`Strategy::Auto`]: `PerToken` below [`PANEL_MIN_TOKENS`] tokens, else `WalkPanels`
//!   (`ChunkPanels` for int8 when the stored chunks hold at least [`CHUNK_PANEL_MIN_FILL`]
//!   non-zeros on average).
//!
//! Levels: [`Level::Avx512`] has dedicated kernels for every strategy; [`Level::Scalar`] (and
//! levels without dedicated kernels here: AVX2, NEON) run the portable per-token kernels,
//! whatever the strategy. Requesting a level this CPU lacks is [`TernaryError::Config`].
//! Work is split over output rows with rayon, or, from 256 tokens on, over 64-token panels
//! (each task then keeps its panel in cache for every row and writes its outputs in place).
//! `unsafe` code lives only in `x86`.

use std::ops::Range;

use rayon::prelude::*;
use ternary_core::kernels as core_kernels;
use ternary_core::{QuantizedActivations, Result, Scales, TernaryError, TernaryMatrix};

pub use ternary_core::kernels::Level;

use crate::chunks::PackedChunks;
use crate::lists::{ESCAPE, IndexLists};
use crate::matrix::BitmapMatrix;

mod scalar;
#[cfg(target_arch = "x86_64")]
mod x86;

/// From this many tokens on, [`Strategy::Auto`] uses token panels.
pub const PANEL_MIN_TOKENS: usize = 8;
/// [`Strategy::Auto`] runs int8 chunk formats with [`Strategy::ChunkPanels`] when
/// `nnz ≥ CHUNK_PANEL_MIN_FILL · stored chunks` (a `vpdpbusd` covers 4 weights; a walk add one).
pub const CHUNK_PANEL_MIN_FILL: usize = 8;

/// How a kernel walks the weights. See the [module docs](self).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Strategy {
    /// Chosen from the token count and the format's fill.
    #[default]
    Auto,
    /// One token at a time.
    PerToken,
    /// Transposed activation panels, one vector add per non-zero weight.
    WalkPanels,
    /// Int8 only, chunk formats only: `vpdpbusd` over decoded chunks and 16-token panels
    /// (other cases run [`Strategy::WalkPanels`]).
    ChunkPanels,
}

/// Which kernel to run: a SIMD [`Level`] and a [`Strategy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KernelConfig {
    /// Instruction-set level; an error if this CPU lacks it.
    pub level: Level,
    /// How to walk the weights.
    pub strategy: Strategy,
}

impl KernelConfig {
    /// [`Level::detect`] and [`Strategy::Auto`].
    pub fn auto() -> Self {
        Self {
            level: Level::detect(),
            strategy: Strategy::Auto,
        }
    }

    /// A chosen level and strategy.
    pub const fn new(level: Level, strategy: Strategy) -> Self {
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
        let panels = strategy_uses_panels(cfg.strategy, n);
        match level {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 if panels => x86::walk_f32(&v, x, n, y),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => x86::lists_f32(&v, x, n, y),
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
        let panels = strategy_uses_panels(cfg.strategy, a.n());
        match level {
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 if panels => x86::walk_i8(&v, a, y),
            #[cfg(target_arch = "x86_64")]
            Level::Avx512 => x86::lists_i8(&v, a, y),
            _ => scalar::gemm_i8(&v, a, y),
        }
        Ok(())
    }
}

/// The AVX-512 kernels index columns with `i32` gather offsets and `u32` decoded positions;
/// wider matrices (never seen in practice) run the portable kernels.
fn simd_cols_ok(cols: usize) -> bool {
    i32::try_from(cols).is_ok()
}

fn dense_view(m: &BitmapMatrix) -> ChunkView<'_> {
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

fn strategy_uses_panels(s: Strategy, n: usize) -> bool {
    match s {
        Strategy::Auto => n >= PANEL_MIN_TOKENS,
        Strategy::PerToken => false,
        Strategy::WalkPanels | Strategy::ChunkPanels => true,
    }
}

fn chunk_gemm_f32(
    v: &ChunkView<'_>,
    cfg: KernelConfig,
    x: &[f32],
    n: usize,
    y: &mut [f32],
) -> Result<()> {
    check_f32(v.rows, v.cols, x, n, y)?;
    let level = simd_level(checked_level(cfg.level)?, v.cols);
    let panels = strategy_uses_panels(cfg.strategy, n);
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 if panels => x86::walk_f32(v, x, n, y),
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => x86::masked_f32(v, x, n, y),
        _ => scalar::gemm_f32(v, x, n, y),
    }
    Ok(())
}

fn chunk_gemm_i8(
    v: &ChunkView<'_>,
    cfg: KernelConfig,
    a: &QuantizedActivations,
    y: &mut [f32],
) -> Result<()> {
    check_i8(v.rows, v.cols, a, y)?;
    let level = simd_level(checked_level(cfg.level)?, v.cols);
    let panels = strategy_uses_panels(cfg.strategy, a.n());
    let chunk_panels = match cfg.strategy {
        Strategy::ChunkPanels => true,
        Strategy::Auto => v.nnz >= CHUNK_PANEL_MIN_FILL * v.nonempty,
        _ => false,
    };
    match level {
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 if panels && chunk_panels => x86::chunk_panels_i8(v, a, y),
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 if panels => x86::walk_i8(v, a, y),
        #[cfg(target_arch = "x86_64")]
        Level::Avx512 => x86::masked_i8(v, a, y),
        _ => scalar::gemm_i8(v, a, y),
    }
    Ok(())
}

/// `level`, or [`Level::Scalar`] when the matrix is too wide for the SIMD kernels.
fn simd_level(level: Level, cols: usize) -> Level {
    if simd_cols_ok(cols) {
        level
    } else {
        Level::Scalar
    }
}

fn checked_level(level: Level) -> Result<Level> {
    if level.is_available() {
        Ok(level)
    } else {
        Err(TernaryError::Config(format!(
            "kernel level {} is not available on this CPU",
            level.name()
        )))
    }
}

fn check_out(rows: usize, n: usize, y: &[f32]) -> Result<()> {
    if n.checked_mul(rows) != Some(y.len()) {
        return Err(TernaryError::Shape(format!(
            "output: expected n x rows = {n} x {rows} values, got {}",
            y.len()
        )));
    }
    Ok(())
}

fn check_f32(rows: usize, cols: usize, x: &[f32], n: usize, y: &[f32]) -> Result<()> {
    if n.checked_mul(cols) != Some(x.len()) {
        return Err(TernaryError::Shape(format!(
            "activations: expected n x cols = {n} x {cols} values, got {}",
            x.len()
        )));
    }
    check_out(rows, n, y)
}

fn check_i8(rows: usize, cols: usize, a: &QuantizedActivations, y: &[f32]) -> Result<()> {
    if a.cols() != cols {
        return Err(TernaryError::Shape(format!(
            "int8 activations have {} values per token, matrix has {cols} columns",
            a.cols()
        )));
    }
    check_out(rows, a.n(), y)
}

// ---------------------------------------------------------------------------------------------
// What the kernels read
// ---------------------------------------------------------------------------------------------

/// The chunk formats as the kernels see them: bitmap plus plane words, either the full rows
/// (`row_start = None`, word `w` of row `r` at `r · wpr + w`) or the packed non-empty chunks
/// (`Some`, the `k`-th non-empty chunk of row `r` at `row_start[r] + k`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkView<'a> {
    pub rows: usize,
    pub cols: usize,
    pub wpr: usize,
    pub mpr: usize,
    pub masks: &'a [u64],
    pub plus: &'a [u32],
    pub minus: &'a [u32],
    pub row_start: Option<&'a [u32]>,
    pub scales: &'a Scales,
    pub nnz: usize,
    pub nonempty: usize,
}

/// One non-empty chunk: index `w` in the row (columns `32w .. 32w + 32`) and its plane words.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Chunk {
    pub w: usize,
    pub plus: u32,
    pub minus: u32,
}

/// The non-empty chunks of one row, in increasing `w`.
#[derive(Debug, Clone)]
pub(crate) struct ChunkIter<'a> {
    masks: &'a [u64],
    mi: usize,
    cur: u64,
    plus: &'a [u32],
    minus: &'a [u32],
    k: usize,
    packed: bool,
}

impl<'a> ChunkView<'a> {
    /// The non-empty chunks of row `r < rows`.
    #[inline]
    pub fn chunks(&self, r: usize) -> ChunkIter<'a> {
        let masks = &self.masks[r * self.mpr..(r + 1) * self.mpr];
        let (plus, minus, packed) = match self.row_start {
            Some(start) => {
                let range = start[r] as usize..start[r + 1] as usize;
                (&self.plus[range.clone()], &self.minus[range], true)
            }
            None => {
                let range = r * self.wpr..(r + 1) * self.wpr;
                (&self.plus[range.clone()], &self.minus[range], false)
            }
        };
        ChunkIter {
            masks,
            mi: 0,
            cur: masks.first().copied().unwrap_or(0),
            plus,
            minus,
            k: 0,
            packed,
        }
    }

    /// Plane words per scale group (`wpr` for per-row scales, at least 1).
    #[inline]
    pub fn words_per_group(&self) -> usize {
        match self.scales.layout() {
            ternary_core::ScaleLayout::PerRow => self.wpr.max(1),
            ternary_core::ScaleLayout::PerGroup { group_size } => group_size / 32,
        }
    }
}

impl Iterator for ChunkIter<'_> {
    type Item = Chunk;

    #[inline]
    fn next(&mut self) -> Option<Chunk> {
        while self.cur == 0 {
            self.mi += 1;
            self.cur = *self.masks.get(self.mi)?;
        }
        let w = 64 * self.mi + self.cur.trailing_zeros() as usize;
        self.cur &= self.cur - 1;
        let i = if self.packed {
            self.k += 1;
            self.k - 1
        } else {
            w
        };
        Some(Chunk {
            w,
            plus: self.plus[i],
            minus: self.minus[i],
        })
    }
}

/// [`IndexLists`] as the kernels see them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListView<'a> {
    pub rows: usize,
    pub cols: usize,
    pub offsets: &'a [u32],
    pub bytes: &'a [u8],
    pub scales: &'a Scales,
    pub nnz: usize,
}

/// A sorted stream of columns: `pos()` is the current one (`usize::MAX` once exhausted).
pub(crate) trait Cursor {
    fn pos(&self) -> usize;
    fn advance(&mut self);
}

/// A format whose rows can be walked as two sorted column streams (`+1` and `−1` weights).
///
/// Invariant the `unsafe` kernels rely on: every position a cursor yields is `< cols`.
pub(crate) trait WalkRows: Sync {
    type Plus<'c>: Cursor
    where
        Self: 'c;
    type Minus<'c>: Cursor
    where
        Self: 'c;
    fn rows(&self) -> usize;
    fn cols(&self) -> usize;
    fn scales(&self) -> &Scales;
    fn nnz(&self) -> usize;
    /// The `+1` and `−1` cursors of row `r < rows`.
    fn cursors(&self, r: usize) -> (Self::Plus<'_>, Self::Minus<'_>);
}

/// The set bits of one plane (`MINUS = false`: plus) over a row's non-empty chunks.
#[derive(Debug, Clone)]
pub(crate) struct BitCursor<'a, const MINUS: bool> {
    chunks: ChunkIter<'a>,
    base: usize,
    bits: u32,
}

impl<'a, const MINUS: bool> BitCursor<'a, MINUS> {
    #[inline]
    fn new(chunks: ChunkIter<'a>) -> Self {
        let mut c = Self {
            chunks,
            base: 0,
            bits: 0,
        };
        c.refill();
        c
    }

    #[inline]
    fn refill(&mut self) {
        while self.bits == 0 {
            match self.chunks.next() {
                Some(ch) => {
                    self.base = 32 * ch.w;
                    self.bits = if MINUS { ch.minus } else { ch.plus };
                }
                None => return,
            }
        }
    }
}

impl<const MINUS: bool> Cursor for BitCursor<'_, MINUS> {
    #[inline]
    fn pos(&self) -> usize {
        if self.bits == 0 {
            usize::MAX
        } else {
            self.base + self.bits.trailing_zeros() as usize
        }
    }

    #[inline]
    fn advance(&mut self) {
        self.bits &= self.bits.wrapping_sub(1);
        if self.bits == 0 {
            self.refill();
        }
    }
}

impl WalkRows for ChunkView<'_> {
    type Plus<'c>
        = BitCursor<'c, false>
    where
        Self: 'c;
    type Minus<'c>
        = BitCursor<'c, true>
    where
        Self: 'c;

    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn scales(&self) -> &Scales {
        self.scales
    }
    fn nnz(&self) -> usize {
        self.nnz
    }
    #[inline]
    fn cursors(&self, r: usize) -> (Self::Plus<'_>, Self::Minus<'_>) {
        let it = self.chunks(r);
        (BitCursor::new(it.clone()), BitCursor::new(it))
    }
}

/// Decodes a gap code (see [`crate::lists`]) one column at a time.
#[derive(Debug, Clone)]
pub(crate) struct DeltaCursor<'a> {
    code: &'a [u8],
    i: usize,
    next: usize,
    pos: usize,
}

impl<'a> DeltaCursor<'a> {
    #[inline]
    fn new(code: &'a [u8]) -> Self {
        let mut c = Self {
            code,
            i: 0,
            next: 0,
            pos: 0,
        };
        c.advance();
        c
    }
}

impl Cursor for DeltaCursor<'_> {
    #[inline]
    fn pos(&self) -> usize {
        self.pos
    }

    #[inline]
    fn advance(&mut self) {
        loop {
            let Some(&b) = self.code.get(self.i) else {
                self.pos = usize::MAX;
                return;
            };
            self.i += 1;
            if b == ESCAPE {
                self.next += ESCAPE as usize;
            } else {
                self.pos = self.next + b as usize;
                self.next = self.pos + 1;
                return;
            }
        }
    }
}

impl<'a> ListView<'a> {
    /// The gap codes of row `r`'s `+1` and `−1` columns.
    #[inline]
    pub fn codes(&self, r: usize) -> (&'a [u8], &'a [u8]) {
        let o = &self.offsets[2 * r..2 * r + 3];
        (
            &self.bytes[o[0] as usize..o[1] as usize],
            &self.bytes[o[1] as usize..o[2] as usize],
        )
    }
}

impl WalkRows for ListView<'_> {
    type Plus<'c>
        = DeltaCursor<'c>
    where
        Self: 'c;
    type Minus<'c>
        = DeltaCursor<'c>
    where
        Self: 'c;

    fn rows(&self) -> usize {
        self.rows
    }
    fn cols(&self) -> usize {
        self.cols
    }
    fn scales(&self) -> &Scales {
        self.scales
    }
    fn nnz(&self) -> usize {
        self.nnz
    }
    #[inline]
    fn cursors(&self, r: usize) -> (Self::Plus<'_>, Self::Minus<'_>) {
        let o = &self.offsets[2 * r..2 * r + 3];
        (
            DeltaCursor::new(&self.bytes[o[0] as usize..o[1] as usize]),
            DeltaCursor::new(&self.bytes[o[1] as usize..o[2] as usize]),
        )
    }
}

/// One scale group of one row, decoded: `pos[start..plus_end]` are the columns of its `+1`
/// weights and `pos[plus_end..end]` those of its `−1` weights.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub group: u32,
    pub start: u32,
    pub plus_end: u32,
    pub end: u32,
}

/// A block of rows decoded once into plain column lists, so the panel kernels (which pass
/// over the same rows once per panel of tokens) never run a cursor in their inner loop.
#[derive(Debug, Default)]
pub(crate) struct DecodedRows {
    pub pos: Vec<u32>,
    pub segs: Vec<Segment>,
    /// `segs[row_start[i] .. row_start[i + 1]]` are the segments of the block's row `i`.
    pub row_start: Vec<usize>,
}

impl DecodedRows {
    /// Decodes rows `rows` of `m` (replacing the previous contents).
    pub fn decode<W: WalkRows>(&mut self, m: &W, rows: Range<usize>) {
        self.pos.clear();
        self.segs.clear();
        self.row_start.clear();
        let cols = m.cols();
        let glen = group_len(m.scales(), cols);
        for r in rows {
            self.row_start.push(self.segs.len());
            let (mut p, mut q) = m.cursors(r);
            loop {
                let c = p.pos().min(q.pos());
                if c == usize::MAX {
                    break;
                }
                debug_assert!(c < cols);
                let g = c / glen;
                let end = ((g + 1) * glen).min(cols);
                // Columns are < cols and the block holds fewer than 2³² of them.
                let start = self.pos.len() as u32;
                while p.pos() < end {
                    self.pos.push(p.pos() as u32);
                    p.advance();
                }
                let plus_end = self.pos.len() as u32;
                while q.pos() < end {
                    self.pos.push(q.pos() as u32);
                    q.advance();
                }
                self.segs.push(Segment {
                    group: g as u32,
                    start,
                    plus_end,
                    end: self.pos.len() as u32,
                });
            }
        }
        self.row_start.push(self.segs.len());
    }

    /// The segments of the block's row `i`.
    #[inline]
    pub fn row(&self, i: usize) -> &[Segment] {
        &self.segs[self.row_start[i]..self.row_start[i + 1]]
    }
}

/// From this many tokens on, the panel kernels split the work by 64-token panels (each task
/// owns a panel and every row, so the panel stays in the core's cache and the output is
/// written in place) instead of by rows.
pub(crate) const PANEL_PARALLEL_TOKENS: usize = 256;

/// Every row of `m`, decoded in parallel in blocks of [`decode_block_rows`] rows.
pub(crate) fn decode_all<W: WalkRows>(m: &W) -> Vec<(Range<usize>, DecodedRows)> {
    let rows = m.rows();
    let block = decode_block_rows(m.nnz(), rows);
    (0..rows.div_ceil(block))
        .into_par_iter()
        .map(|b| {
            let range = b * block..((b + 1) * block).min(rows);
            let mut dec = DecodedRows::default();
            dec.decode(m, range.clone());
            (range, dec)
        })
        .collect()
}

/// Runs `f(p, y_p)` over token panels of `lanes` tokens in parallel, where `y_p` is the part
/// of `y` (`n × rows`, row-major) holding tokens `p · lanes ..` (`y_p.len() / rows` of them).
pub(crate) fn par_panels<F>(rows: usize, lanes: usize, y: &mut [f32], f: F)
where
    F: Fn(usize, &mut [f32]) + Sync,
{
    if rows == 0 || y.is_empty() {
        return;
    }
    y.par_chunks_mut(lanes * rows)
        .enumerate()
        .for_each(|(p, yp)| f(p, yp));
}

/// Rows per decoded block: about 2¹⁵ positions (128 KiB), at least 1 and at most 256 rows.
pub(crate) fn decode_block_rows(nnz: usize, rows: usize) -> usize {
    (32768 / (nnz / rows.max(1) + 1)).clamp(1, 256)
}

/// Columns of scale group `g` of a row of `cols` columns: `g · glen .. min((g + 1) · glen, cols)`.
#[inline]
pub(crate) fn group_len(scales: &Scales, cols: usize) -> usize {
    scales.layout().group_len(cols).max(1)
}

// ---------------------------------------------------------------------------------------------
// Threading
// ---------------------------------------------------------------------------------------------

/// Estimated work below which a row chunk is not worth a rayon task.
const MIN_TASK_WORK: usize = 1 << 15;

/// Runs `f(rows, out)` over chunks of output rows, in parallel when worthwhile.
///
/// `f` writes row `r ∈ rows`, token `j` to `out[(r − rows.start) · n + j]`; `y` is `n × rows`
/// row-major (for `n > 1` the row-major result is transposed into it). `work_per_row`
/// estimates the cost of one row for all tokens.
pub(crate) fn par_rows<F>(rows: usize, work_per_row: usize, n: usize, y: &mut [f32], f: F)
where
    F: Fn(Range<usize>, &mut [f32]) + Sync,
{
    if rows == 0 || n == 0 {
        return;
    }
    let threads = rayon::current_num_threads();
    let min_rows = MIN_TASK_WORK.div_ceil(work_per_row.max(1));
    let chunk = rows.div_ceil(threads * 8).max(min_rows).max(1);
    let serial = threads == 1 || chunk >= rows;
    let run = |out: &mut [f32]| {
        if serial {
            f(0..rows, out);
        } else {
            out.par_chunks_mut(chunk * n)
                .enumerate()
                .for_each(|(i, o)| {
                    let r0 = i * chunk;
                    f(r0..r0 + o.len() / n, o);
                });
        }
    };
    if n == 1 {
        run(y);
    } else {
        let mut tmp = vec![0f32; rows * n];
        run(&mut tmp);
        transpose_into(&tmp, rows, n, y);
    }
}

/// `y[j · rows + r] = src[r · n + j]`, in parallel over blocks of tokens, cache-blocked.
fn transpose_into(src: &[f32], rows: usize, n: usize, y: &mut [f32]) {
    const B: usize = 32;
    y.par_chunks_mut(B * rows).enumerate().for_each(|(jb, yb)| {
        let j0 = jb * B;
        let nj = yb.len() / rows;
        for r0 in (0..rows).step_by(B) {
            for j in 0..nj {
                for r in r0..(r0 + B).min(rows) {
                    yb[j * rows + r] = src[r * n + j0 + j];
                }
            }
        }
    });
}

/// Work estimate for one row of a walk over `nnz` weights in `rows` rows and `n` tokens.
#[inline]
pub(crate) fn walk_work(nnz: usize, rows: usize, n: usize) -> usize {
    (nnz / rows.max(1) + 16) * n
}
