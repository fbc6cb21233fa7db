//! Applying a batch of weight edits with atomic bit operations.

use cubecl::prelude::*;

/// Edit `i` sets the weight at plane word `words[i]`, bit mask `bits[i]` (one bit) to
/// `values[i] ∈ {-1, 0, +1}` and writes the previous trit to `old[i]`.
///
/// The batch must not hold two edits of the same weight (the host resolves duplicates).
/// Edits of different bits in one word commute because each is an atomic `and`/`or` on that
/// word; the plane that must lose the bit is cleared before the other gains it, so
/// `plus & minus == 0` holds when the kernel ends.
#[cube(launch)]
pub(crate) fn apply_edits(
    plus: &mut Array<Atomic<u32>>,
    minus: &mut Array<Atomic<u32>>,
    words: &Array<u32>,
    bits: &Array<u32>,
    values: &Array<i32>,
    old: &mut Array<i32>,
    count: u32,
) {
    let i = ABSOLUTE_POS_X;
    if i < count {
        let w = words[i as usize] as usize;
        let bit = bits[i as usize];
        let v = values[i as usize];
        let nbit = !bit;
        let mut op = 0u32;
        let mut om = 0u32;
        if v == 1 {
            om += minus[w].fetch_and(nbit);
            op += plus[w].fetch_or(bit);
        } else if v == -1 {
            op += plus[w].fetch_and(nbit);
            om += minus[w].fetch_or(bit);
        } else {
            op += plus[w].fetch_and(nbit);
            om += minus[w].fetch_and(nbit);
        }
        let mut t = 0i32;
        if (op & bit) != 0 {
            t = 1;
        }
        if (om & bit) != 0 {
            t -= 1;
        }
        old[i as usize] = t;
    }
}
