//! Word-level helpers shared by the vector types: plane length, padding mask, cyclic rotation.
//!
//! A `D`-dimensional plane is `⌈D / 32⌉` `u32` words; component `i` is bit `i mod 32` (LSB
//! first) of word `⌊i / 32⌋`, as in `ternary-core`. Bits at positions `≥ D` (the padding) are
//! kept zero by every operation.

/// Number of `u32` words of a `dim`-bit plane: `⌈dim / 32⌉`.
#[inline]
pub(crate) fn words_for(dim: usize) -> usize {
    dim.div_ceil(32)
}

/// Mask of the valid bits of the last word of a `dim`-bit plane (`dim ≥ 1`).
#[inline]
pub(crate) fn tail_mask(dim: usize) -> u32 {
    match dim % 32 {
        0 => u32::MAX,
        r => (1u32 << r) - 1,
    }
}

/// Clears the padding bits (positions `≥ dim`) of a `dim`-bit plane.
#[inline]
pub(crate) fn clear_padding(words: &mut [u32], dim: usize) {
    if let Some(last) = words.last_mut() {
        *last &= tail_mask(dim);
    }
}

/// Index of the first word with a padding bit set, if any.
pub(crate) fn padding_violation(words: &[u32], dim: usize) -> Option<usize> {
    let last = words.len().checked_sub(1)?;
    (words[last] & !tail_mask(dim) != 0).then_some(last)
}

/// `dst |= src << shift` over a multi-word little-endian bit string (bits shifted past the end
/// are dropped).
fn or_shl(dst: &mut [u32], src: &[u32], shift: usize) {
    let (ws, bs) = (shift / 32, (shift % 32) as u32);
    for w in ws..dst.len() {
        let lo = src[w - ws];
        let mut v = lo << bs;
        if bs != 0 && w > ws {
            v |= src[w - ws - 1] >> (32 - bs);
        }
        dst[w] |= v;
    }
}

/// `dst |= src >> shift` over a multi-word little-endian bit string.
fn or_shr(dst: &mut [u32], src: &[u32], shift: usize) {
    let (ws, bs) = (shift / 32, (shift % 32) as u32);
    let n = src.len();
    for w in 0..n.saturating_sub(ws) {
        let mut v = src[w + ws] >> bs;
        if bs != 0 && w + ws + 1 < n {
            v |= src[w + ws + 1] << (32 - bs);
        }
        dst[w] |= v;
    }
}

/// Cyclic rotation of a `dim`-bit plane (`dim ≥ 1`, padding zero): output bit `(i + k) mod dim`
/// is input bit `i`, for any integer `k` (negative `k` rotates the other way).
///
/// Computed as `(x << k') | (x >> (dim − k'))` with `k' = k mod dim`, then the padding cleared.
pub(crate) fn rotate(src: &[u32], dim: usize, k: isize) -> Vec<u32> {
    let shift = rotation_amount(dim, k);
    if shift == 0 {
        return src.to_vec();
    }
    let mut out = vec![0u32; src.len()];
    or_shl(&mut out, src, shift);
    clear_padding(&mut out, dim);
    or_shr(&mut out, src, dim - shift);
    out
}

/// `k mod dim` in `0..dim` for a signed shift (`dim ≥ 1`).
#[inline]
pub(crate) fn rotation_amount(dim: usize, k: isize) -> usize {
    let d = dim as i128;
    (k as i128).rem_euclid(d) as usize
}
