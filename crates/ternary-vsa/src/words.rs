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

/// `BIT_MASK[byte][j] = −1` if bit `j` of `byte` is set, else `0`: expands 8 bits to 8 lanes.
pub(crate) static BIT_MASK: [[i32; 8]; 256] = {
    let mut t = [[0i32; 8]; 256];
    let mut b = 0;
    while b < 256 {
        let mut j = 0;
        while j < 8 {
            t[b][j] = -(((b >> j) & 1) as i32);
            j += 1;
        }
        b += 1;
    }
    t
};

/// `BIPOLAR[byte][j] = +1` if bit `j` of `byte` is set, else `−1`.
pub(crate) static BIPOLAR: [[i32; 8]; 256] = {
    let mut t = [[0i32; 8]; 256];
    let mut b = 0;
    while b < 256 {
        let mut j = 0;
        while j < 8 {
            t[b][j] = 2 * (((b >> j) & 1) as i32) - 1;
            j += 1;
        }
        b += 1;
    }
    t
};

/// Applies `f(lanes, byte_a, byte_b)` to each run of 8 values and the matching bytes of two
/// planes (`values.len() ≤ 32 · a.len()`; the last run may be shorter).
#[inline]
pub(crate) fn zip_bytes<T>(
    a: &[u32],
    b: &[u32],
    values: &mut [T],
    mut f: impl FnMut(&mut [T], u8, u8),
) {
    let (full, rest) = values.as_chunks_mut::<32>();
    for ((chunk, &wa), &wb) in full.iter_mut().zip(a).zip(b) {
        let (ba, bb) = (wa.to_le_bytes(), wb.to_le_bytes());
        let (lanes, _) = chunk.as_chunks_mut::<8>();
        for (k, l) in lanes.iter_mut().enumerate() {
            f(l, ba[k], bb[k]);
        }
    }
    if !rest.is_empty() {
        let w = full.len();
        let (ba, bb) = (
            a.get(w).copied().unwrap_or(0).to_le_bytes(),
            b.get(w).copied().unwrap_or(0).to_le_bytes(),
        );
        for (k, l) in rest.chunks_mut(8).enumerate() {
            f(l, ba[k], bb[k]);
        }
    }
}

/// In-place transpose of a 32 × 32 bit matrix, LSB-first: afterwards bit `j` of `a[b]` is the
/// former bit `b` of `a[j]` (Hacker's Delight §7-3, five rounds of block swaps).
pub(crate) fn transpose32(a: &mut [u32; 32]) {
    let mut j = 16;
    let mut m: u32 = 0x0000_FFFF;
    while j != 0 {
        let mut k = 0;
        while k < 32 {
            let t = ((a[k] >> j) ^ a[k + j]) & m;
            a[k + j] ^= t;
            a[k] ^= t << j;
            k = (k + j + 1) & !j;
        }
        j >>= 1;
        m ^= m << j;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transpose32_matches_bitwise_definition() {
        let mut x = 0x1234_5678_9abc_def1u64;
        let mut a = [0u32; 32];
        for v in a.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *v = x as u32;
        }
        let orig = a;
        transpose32(&mut a);
        for (b, &row) in a.iter().enumerate() {
            for (j, &o) in orig.iter().enumerate() {
                assert_eq!(row >> j & 1, o >> b & 1, "b={b} j={j}");
            }
        }
    }

    #[test]
    fn rotate_matches_per_bit_definition() {
        for dim in [1usize, 31, 32, 33, 63, 64, 65, 100] {
            let n = words_for(dim);
            let mut src = vec![0u32; n];
            for (i, w) in src.iter_mut().enumerate() {
                *w = 0x9E37_79B9u32.wrapping_mul(i as u32 + 7) ^ 0x5555_1234;
            }
            clear_padding(&mut src, dim);
            for k in [-70isize, -1, 0, 1, 5, 31, 32, 33, 64, 99, 1000] {
                let out = rotate(&src, dim, k);
                assert!(padding_violation(&out, dim).is_none());
                let s = rotation_amount(dim, k);
                for i in 0..dim {
                    let j = (i + s) % dim;
                    assert_eq!(out[j / 32] >> (j % 32) & 1, src[i / 32] >> (i % 32) & 1);
                }
            }
        }
    }
}
