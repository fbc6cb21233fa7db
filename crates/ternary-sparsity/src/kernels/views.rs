//! Read-only views of the sparse formats the kernels walk: chunk views, index-list views, the
//! cursors over their positions, and rows decoded into column segments.

#[cfg(target_arch = "x86_64")]
use std::ops::Range;

use ternary_core::Scales;

use crate::lists::ESCAPE;

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
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))] // the x86 work estimates
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

    #[cfg(target_arch = "x86_64")]
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
    #[cfg(target_arch = "x86_64")]
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

#[cfg(target_arch = "x86_64")]
/// One scale group of one row, decoded: `pos[start..plus_end]` are the columns of its `+1`
/// weights and `pos[plus_end..end]` those of its `−1` weights.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Segment {
    pub group: u32,
    pub start: u32,
    pub plus_end: u32,
    pub end: u32,
}

#[cfg(target_arch = "x86_64")]
/// A block of rows decoded once into plain column lists, so the panel kernels (which pass
/// over the same rows once per panel of tokens) never run a cursor in their inner loop.
#[derive(Debug, Default)]
pub(crate) struct DecodedRows {
    pub pos: Vec<u32>,
    pub segs: Vec<Segment>,
    /// `segs[row_start[i] .. row_start[i + 1]]` are the segments of the block's row `i`.
    pub row_start: Vec<usize>,
}

#[cfg(target_arch = "x86_64")]
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

/// Columns of scale group `g` of a row of `cols` columns: `g · glen .. min((g + 1) · glen, cols)`.
#[inline]
pub(crate) fn group_len(scales: &Scales, cols: usize) -> usize {
    scales.layout().group_len(cols).max(1)
}
