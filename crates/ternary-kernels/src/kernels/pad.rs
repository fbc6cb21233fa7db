//! Zero-padding of activations on the device: `n × cols` values (a foreign buffer, e.g. a Burn
//! tensor) into rows of `padded = 64 · ⌈cols / 64⌉` values, the layout every product kernel reads.

use cubecl::prelude::*;

/// `out[j · padded + c] = x[j · cols + c]` for `c < cols`, `0` for `cols ≤ c < padded`.
///
/// One unit per output value; cubes on a 2-D grid: `cube = CUBE_POS_Y · CUBE_COUNT_X + CUBE_POS_X`.
#[cube(launch)]
pub(crate) fn pad_rows<E: Numeric>(
    x: &Array<E>,
    out: &mut Array<E>,
    cols: u32,
    padded: u32,
    total: u32,
) {
    let cube = CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X;
    let i = cube * CUBE_DIM_X + UNIT_POS_X;
    if i < total {
        let j = i / padded;
        let c = i % padded;
        let mut v = E::from_int(0);
        if c < cols {
            v = x[(j * cols + c) as usize];
        }
        out[i as usize] = v;
    }
}
