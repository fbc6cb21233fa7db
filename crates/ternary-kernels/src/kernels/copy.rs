//! A plain device-to-device copy, to measure the bandwidth the other kernels are compared with.

use cubecl::prelude::*;

/// Each cube copies `4 · CUBE_DIM_X` consecutive words (unit `u` copies `u`, `u + dim`, …),
/// cubes laid out on a 2-D grid: `cube = CUBE_POS_Y · CUBE_COUNT_X + CUBE_POS_X`.
#[cube(launch)]
pub(crate) fn copy_words(input: &Array<u32>, output: &mut Array<u32>, len: u32) {
    let cube = CUBE_POS_Y * CUBE_COUNT_X + CUBE_POS_X;
    let base = cube * CUBE_DIM_X * 4 + UNIT_POS_X;
    #[unroll]
    for k in 0..4u32 {
        let i = base + k * CUBE_DIM_X;
        if i < len {
            output[i as usize] = input[i as usize];
        }
    }
}
