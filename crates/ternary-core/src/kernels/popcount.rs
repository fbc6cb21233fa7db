//! Portable popcount dot products over `u64` word pairs.

/// Views `a[2i], a[2i+1]` as one little-endian `u64` (same bit order as the planes).
#[inline]
fn pair(a: &[u32]) -> u64 {
    u64::from(a[0]) | (u64::from(a[1]) << 32)
}

/// `Σ_i a_i · b_i` for ternary planes: `popc(a⁺&b⁺ | a⁻&b⁻) − popc(a⁺&b⁻ | a⁻&b⁺)`.
///
/// The two terms of each sum are disjoint when `plus & minus == 0`; a position with both bits
/// set in one vector adds the same bit to both counts, so it contributes `0`.
pub(super) fn ternary_dot(a_plus: &[u32], a_minus: &[u32], b_plus: &[u32], b_minus: &[u32]) -> i64 {
    let mut same = 0u64;
    let mut diff = 0u64;
    let pairs = a_plus.len() / 2;
    for i in 0..pairs {
        let k = 2 * i..2 * i + 2;
        let (ap, am) = (pair(&a_plus[k.clone()]), pair(&a_minus[k.clone()]));
        let (bp, bm) = (pair(&b_plus[k.clone()]), pair(&b_minus[k]));
        same += u64::from(((ap & bp) | (am & bm)).count_ones());
        diff += u64::from(((ap & bm) | (am & bp)).count_ones());
    }
    if a_plus.len() % 2 == 1 {
        let i = a_plus.len() - 1;
        let (ap, am, bp, bm) = (a_plus[i], a_minus[i], b_plus[i], b_minus[i]);
        same += u64::from(((ap & bp) | (am & bm)).count_ones());
        diff += u64::from(((ap & bm) | (am & bp)).count_ones());
    }
    same as i64 - diff as i64
}

/// `popc(a XOR b)` over all words (equal lengths).
pub(super) fn xor_popcount(a: &[u32], b: &[u32]) -> u64 {
    let mut acc = 0u64;
    let pairs = a.len() / 2;
    for i in 0..pairs {
        acc += u64::from((pair(&a[2 * i..]) ^ pair(&b[2 * i..])).count_ones());
    }
    if a.len() % 2 == 1 {
        let i = a.len() - 1;
        acc += u64::from((a[i] ^ b[i]).count_ones());
    }
    acc
}
