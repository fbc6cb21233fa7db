//! Ternary matrices repacked, once at load, into the layout one SIMD level's int8 kernel reads
//! fastest ([`PackedTernary`]). The file format and [`TernaryMatrix`] stay bit-sliced; a
//! repacked matrix holds the same bits in another order (the same memory) and turns back into
//! planes exactly ([`PackedTernary::to_matrix`]).
//!
//! The one repacked layout today is the AVX2 int8 kernel's **2-bit fields** (used at AVX2 and
//! AVX-512): per row and block of eight plane words (256 columns), the fields
//! `v = 1 + t ∈ {0, 1, 2}` of the even columns (`e`) and of the odd columns (`o`), which that
//! kernel otherwise computes from the planes for every block and token
//! (`e = (p & 0x55…) + (¬m & 0x55…)`, the same of the words shifted right by one for `o`: eight
//! vector operations per block, about a fifth of the one-token product). With the fields
//! stored, a block is 64 contiguous bytes, loaded as they are (one 512-bit vector at AVX-512).

use std::sync::Arc;

use crate::kernels::aligned::Aligned;
use crate::kernels::{GroupWords, Level};
use crate::matrix::{Scales, TernaryMatrix};

/// The low bit of every 2-bit field (fields hold `1 + t`: `2`, `1`, `0` for `t = +1, 0, −1`,
/// so a word of zero trits is `EVEN`).
const EVEN: u32 = 0x5555_5555;

/// The fields `(e, o)` of one plane word pair (`p & m == 0`).
#[inline]
pub(crate) fn word_fields(p: u32, m: u32) -> (u32, u32) {
    let e = (p & EVEN) + (!m & EVEN);
    let o = ((p >> 1) & EVEN) + ((!m >> 1) & EVEN);
    (e, o)
}

/// The plane words `(p, m)` of one field pair: `p` is each field's high bit, `m` marks the
/// zero fields.
#[inline]
pub(crate) fn word_planes(e: u32, o: u32) -> (u32, u32) {
    let p = ((e >> 1) & EVEN) | (o & !EVEN);
    let m = (!(e | (e >> 1)) & EVEN) | ((!(o | (o >> 1)) & EVEN) << 1);
    (p, m)
}

/// A matrix in 2-bit fields, `2 · words_per_row` words per row (as many as its planes): per
/// block of eight plane words (256 columns), the eight `e` words (field `i` of `e[d]`, bits
/// `2i, 2i + 1`, is `1 + t` of column `32 d + 2i` of the block), then the eight `o` words
/// (column `32 d + 2i + 1`); a row's last block, of `lanes < 8` words, holds `lanes` of each.
#[derive(Debug, Clone)]
pub(crate) struct FieldMatrix {
    rows: usize,
    cols: usize,
    words_per_row: usize,
    /// From a cache line (a full block is one 64-byte load).
    fields: Aligned<u32>,
    scales: Scales,
}

/// Where the `e` and `o` words of plane word `w` lie in a row of `wpr` words.
#[inline]
fn field_index(wpr: usize, w: usize) -> (usize, usize) {
    let (b, d) = (w / 8, w % 8);
    let lanes = (wpr - 8 * b).min(8);
    (16 * b + d, 16 * b + lanes + d)
}

impl FieldMatrix {
    fn new(m: TernaryMatrix) -> Self {
        let (rows, cols, wpr) = (m.rows(), m.cols(), m.words_per_row());
        let mut fields = Aligned::new(rows * 2 * wpr);
        if wpr > 0 {
            for (r, row) in fields.as_mut_slice().chunks_exact_mut(2 * wpr).enumerate() {
                let (p, mi) = m.row_planes(r);
                for (w, (&p, &mi)) in p.iter().zip(mi).enumerate() {
                    let (ie, io) = field_index(wpr, w);
                    (row[ie], row[io]) = word_fields(p, mi);
                }
            }
        }
        let (_, _, scales) = m.into_parts();
        Self {
            rows,
            cols,
            words_per_row: wpr,
            fields,
            scales,
        }
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    pub(crate) fn scales(&self) -> &Scales {
        &self.scales
    }

    /// The scale groups, as [`GroupWords::of`] the plane matrix.
    pub(crate) fn group_words(&self) -> GroupWords {
        GroupWords::of_layout(self.scales.layout(), self.cols, self.words_per_row)
    }

    /// Row `r`'s field words (`2 · words_per_row`).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) fn row(&self, r: usize) -> &[u32] {
        let n = 2 * self.words_per_row;
        &self.fields.as_slice()[r * n..(r + 1) * n]
    }

    /// Rows `rows` as a plane matrix (exact: [`word_planes`] inverts [`word_fields`]).
    pub(crate) fn planes(&self, rows: std::ops::Range<usize>) -> TernaryMatrix {
        self.planes_reusing(rows, None)
    }

    /// [`FieldMatrix::planes`] into the allocations of `spare` (a matrix it returned before),
    /// when given: a kernel turning block after block of rows back into planes allocates once.
    pub(crate) fn planes_reusing(
        &self,
        rows: std::ops::Range<usize>,
        spare: Option<TernaryMatrix>,
    ) -> TernaryMatrix {
        let wpr = self.words_per_row;
        let g = self.scales.layout().groups_per_row(self.cols);
        let (mut plus, mut minus, scales) = match spare {
            Some(m) => m.into_parts(),
            None => (
                Vec::new(),
                Vec::new(),
                Scales::new(self.scales.layout(), Vec::new()),
            ),
        };
        let mut values = scales.into_values();
        plus.clear();
        minus.clear();
        plus.resize(rows.len() * wpr, 0);
        minus.resize(rows.len() * wpr, 0);
        if wpr > 0 {
            for ((p, m), r) in plus
                .chunks_exact_mut(wpr)
                .zip(minus.chunks_exact_mut(wpr))
                .zip(rows.clone())
            {
                // Block by block (the row's `e` words, then its `o` words, `lanes` of each).
                let (mut row, mut p, mut m) = (self.row(r), p, m);
                while !p.is_empty() {
                    let lanes = p.len().min(8);
                    let (e, rest) = row.split_at(lanes);
                    let (o, rest) = rest.split_at(lanes);
                    let (pb, pr) = p.split_at_mut(lanes);
                    let (mb, mr) = m.split_at_mut(lanes);
                    for (((p, m), &e), &o) in pb.iter_mut().zip(mb.iter_mut()).zip(e).zip(o) {
                        (*p, *m) = word_planes(e, o);
                    }
                    (row, p, m) = (rest, pr, mr);
                }
            }
        }
        values.clear();
        values.extend_from_slice(&self.scales.values()[rows.start * g..rows.end * g]);
        let scales = Scales::new(self.scales.layout(), values);
        TernaryMatrix::from_valid_parts(rows.len(), self.cols, plus, minus, scales)
    }
}

/// The trits a kernel reads: a plane matrix, or one repacked into fields (a kernel reading
/// fields requires the block alignment [`PackedTernary::new`] ensures).
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
pub(crate) enum Trits<'a> {
    Planes(&'a TernaryMatrix),
    Fields(&'a FieldMatrix),
}

#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
impl<'a> Trits<'a> {
    pub(crate) fn group_words(&self) -> GroupWords {
        match self {
            Trits::Planes(m) => GroupWords::of(m),
            Trits::Fields(f) => f.group_words(),
        }
    }

    /// `(rows, cols)`.
    pub(crate) fn shape(&self) -> (usize, usize) {
        match self {
            Trits::Planes(m) => (m.rows(), m.cols()),
            Trits::Fields(f) => (f.rows(), f.cols()),
        }
    }

    /// Every scale, row-major (`groups` per row).
    pub(crate) fn scale_values(&self) -> &'a [f32] {
        match self {
            Trits::Planes(m) => m.scales().values(),
            Trits::Fields(f) => f.scales().values(),
        }
    }

    /// Row `r`'s scales (`gw.groups` of them).
    pub(crate) fn row_scales(&self, r: usize, gw: &GroupWords) -> &'a [f32] {
        &self.scale_values()[r * gw.groups..(r + 1) * gw.groups]
    }
}

/// How a [`PackedTernary`] holds its trits.
#[derive(Debug, Clone)]
pub(crate) enum Repr {
    /// The planes, as loaded (possibly shared with a model).
    Planes(Arc<TernaryMatrix>),
    /// 2-bit fields for the AVX2 int8 kernel.
    Fields(Arc<FieldMatrix>),
}

/// A ternary matrix in the layout the int8 kernel of one [`Level`] reads fastest, for
/// [`gemm_i8_packed_rows_with`](super::gemm_i8_packed_rows_with). Same memory as the planes.
///
/// At [`Level::Avx2`] and [`Level::Avx512`], a matrix whose scale groups the AVX2 field kernel
/// handles (groups of 1, 2, 4 or a multiple of 8 words, or one group per row) is stored as
/// 2-bit fields (see the [module docs](self)); every other matrix and level keeps its planes.
/// At AVX-512 the few-token products run the same field kernel with a `vpdpbusd` block
/// product (a block's 64 bytes of fields as one vector): on an AMD EPYC Zen 5 it decoded the
/// BitNet-2B shape at 51–54 tokens/s against 30–37 for the VNNI kernel on planes (2 threads);
/// prefill (the VNNI panel GEMM, on blocks of rows turned back into planes) lost 4–6%. Products
/// at any level equal [`gemm_i8_rows_with`](super::gemm_i8_rows_with) on the original matrix
/// bit for bit.
///
/// Cloning shares the trits.
#[derive(Debug, Clone)]
pub struct PackedTernary {
    pub(crate) repr: Repr,
}

impl PackedTernary {
    /// Repacks `m` for `level` (consuming it: the planes' memory is freed).
    pub fn new(level: Level, m: TernaryMatrix) -> Self {
        Self {
            repr: if Self::repacks(level, &m) {
                Repr::Fields(Arc::new(FieldMatrix::new(m)))
            } else {
                Repr::Planes(Arc::new(m))
            },
        }
    }

    /// The planes of `m`, shared (no copy, not repacked): for a model that keeps its matrices.
    pub fn shared(m: Arc<TernaryMatrix>) -> Self {
        Self {
            repr: Repr::Planes(m),
        }
    }

    /// Repacks shared planes for `level` ([`PackedTernary::new`]) once nothing else holds
    /// them; otherwise returns `self` unchanged (repacking then would hold the trits twice).
    pub fn repacked(self, level: Level) -> Self {
        match self.repr {
            Repr::Planes(m) => match Arc::try_unwrap(m) {
                Ok(m) => Self::new(level, m),
                Err(m) => Self::shared(m),
            },
            fields => Self { repr: fields },
        }
    }

    /// Adds the trits' buffers (fields or both planes) to `pages`.
    pub fn add_huge_pages(&self, pages: &mut super::HugePages) {
        match &self.repr {
            Repr::Planes(m) => {
                pages.add(m.plus());
                pages.add(m.minus());
            }
            Repr::Fields(f) => pages.add(f.fields.as_slice()),
        }
    }

    /// Whether [`PackedTernary::new`] stores `m` as fields at `level`: AVX2 or AVX-512, and scale
    /// groups of 1, 2, 4 or a multiple of 8 words, or one group of at least 8 words per row
    /// (the groups whose field blocks start at the rows' 8-word blocks).
    fn repacks(level: Level, m: &TernaryMatrix) -> bool {
        let gw = GroupWords::of(m);
        let wpg = gw.words_per_group;
        matches!(level, Level::Avx2 | Level::Avx512)
            && m.words_per_row() > 0
            && (matches!(wpg, 1 | 2 | 4) || (wpg >= 8 && (wpg.is_multiple_of(8) || gw.groups == 1)))
    }

    /// Output rows.
    pub fn rows(&self) -> usize {
        match &self.repr {
            Repr::Planes(m) => m.rows(),
            Repr::Fields(f) => f.rows(),
        }
    }

    /// Input columns.
    pub fn cols(&self) -> usize {
        match &self.repr {
            Repr::Planes(m) => m.cols(),
            Repr::Fields(f) => f.cols(),
        }
    }

    /// The scales.
    pub fn scales(&self) -> &Scales {
        match &self.repr {
            Repr::Planes(m) => m.scales(),
            Repr::Fields(f) => f.scales(),
        }
    }

    /// Whether the trits are stored in another layout than the planes.
    pub fn is_repacked(&self) -> bool {
        matches!(self.repr, Repr::Fields(_))
    }

    /// Bytes of trits and scales (fields take as many bytes as planes).
    pub fn storage_bytes(&self) -> usize {
        match &self.repr {
            Repr::Planes(m) => 4 * (m.plus().len() + m.minus().len() + m.scales().values().len()),
            Repr::Fields(f) => 4 * (f.fields.as_slice().len() + f.scales.values().len()),
        }
    }

    /// The matrix in planes again, exactly.
    pub fn to_matrix(&self) -> TernaryMatrix {
        match &self.repr {
            Repr::Planes(m) => TernaryMatrix::clone(m),
            Repr::Fields(f) => f.planes(0..f.rows()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_invert_to_the_same_planes_for_every_trit_pattern() {
        // Every (t_even, t_odd) pair of each of the 16 column pairs, through random words.
        let mut rng = crate::rng::SplitMix64::new(7);
        for _ in 0..10_000 {
            let a = rng.next_u64() as u32;
            let b = rng.next_u64() as u32;
            let (p, m) = (a & !b, b & !a);
            let (e, o) = word_fields(p, m);
            assert_eq!(word_planes(e, o), (p, m), "p {p:#x} m {m:#x}");
            for c in 0..32 {
                let t = ((p >> c) & 1) as i32 - ((m >> c) & 1) as i32;
                let f = if c % 2 == 0 { e } else { o };
                assert_eq!(((f >> (c / 2 * 2)) & 3) as i32, 1 + t, "column {c}");
            }
        }
        assert_eq!(word_fields(0, 0), (EVEN, EVEN));
    }
}
