//! Building the chunk bitmap on the device.

use cubecl::prelude::*;

/// Bitmap word `i = r · bwpr + q`: bit `k` set iff plane word `32q + k` of row `r` is non-zero
/// in either plane.
#[cube(launch)]
pub(crate) fn build_bitmap(
    plus: &Array<u32>,
    minus: &Array<u32>,
    out: &mut Array<u32>,
    rows: u32,
    wpr: u32,
    bwpr: u32,
) {
    let i = ABSOLUTE_POS_X;
    if i < rows * bwpr {
        let r = i / bwpr;
        let q = i % bwpr;
        let mut bits = 0u32;
        for k in 0..32u32 {
            let w = q * 32 + k;
            if w < wpr {
                let idx = (r * wpr + w) as usize;
                if (plus[idx] | minus[idx]) != 0 {
                    bits |= 1u32 << k;
                }
            }
        }
        out[i as usize] = bits;
    }
}
