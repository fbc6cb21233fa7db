//! Splitting the work: by output rows (`ternary_core::kernels::RowSplit`), by token panels,
//! and parallel decoding of rows.

use std::ops::Range;

#[cfg(target_arch = "x86_64")]
use rayon::prelude::*;
use ternary_core::kernels as core_kernels;

#[cfg(target_arch = "x86_64")]
use super::*;

#[cfg(target_arch = "x86_64")]
/// From this many tokens on, the panel kernels split the work by 64-token panels (each task
/// owns a panel and every row, so the panel stays in the core's cache and the output is
/// written in place) instead of by rows.
pub(crate) const PANEL_PARALLEL_TOKENS: usize = 256;

#[cfg(target_arch = "x86_64")]
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

#[cfg(target_arch = "x86_64")]
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

#[cfg(target_arch = "x86_64")]
/// Rows per decoded block: about 2¹⁵ positions (128 KiB), at least 1 and at most 256 rows.
pub(crate) fn decode_block_rows(nnz: usize, rows: usize) -> usize {
    (32768 / (nnz / rows.max(1) + 1)).clamp(1, 256)
}

/// Work units (walk steps) below which a row chunk of the sparse kernels is not worth a task.
pub(super) const MIN_TASK_WORK: usize = 1 << 15;

/// `ternary_core::kernels::RowSplit::run` for the sparse kernels: about an eighth of a
/// thread's share per task, at least `MIN_TASK_WORK` walk steps.
pub(crate) fn par_rows<F>(rows: usize, work_per_row: usize, n: usize, y: &mut [f32], f: F)
where
    F: Fn(Range<usize>, &mut [f32]) + Sync,
{
    let split = core_kernels::RowSplit {
        min_task_work: MIN_TASK_WORK,
        parts_per_thread: 8,
        align: 1,
    };
    split.run(rows, work_per_row, n, y, f);
}

/// Work estimate for one row of a walk over `nnz` weights in `rows` rows and `n` tokens.
#[inline]
pub(crate) fn walk_work(nnz: usize, rows: usize, n: usize) -> usize {
    (nnz / rows.max(1) + 16) * n
}
