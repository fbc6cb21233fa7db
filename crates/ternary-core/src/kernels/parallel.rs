//! Splitting a product's output rows over rayon's threads: one scheme for the dense kernels
//! here and the sparse kernels of `ternary-sparsity`.

use std::ops::Range;

use rayon::prelude::*;

/// How [`RowSplit::run`] cuts `rows` output rows into tasks: about `rows / (threads ·
/// parts_per_thread)` rows per task for balance, but at least `min_task_work / work_per_row`
/// rows (a task must be worth scheduling), rounded up to a multiple of `align` rows (kernels
/// that produce several rows at once). One task (no rayon) when that covers every row or the
/// pool has one thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RowSplit {
    /// Work units (e.g. multiply-accumulates) below which a task is not worth a rayon job.
    pub min_task_work: usize,
    /// Tasks per thread aimed at when rows are plentiful.
    pub parts_per_thread: usize,
    /// Chunk sizes are multiples of this many rows (`≥ 1`).
    pub align: usize,
}

impl RowSplit {
    /// Runs `f(rows, out)` over chunks of output rows, in parallel when worthwhile.
    ///
    /// `f` writes row `r ∈ rows`, token `j` to `out[(r − rows.start) · n + j]` (row-major by
    /// row). `y` is `n × rows` row-major (`rows · n` values); for `n > 1` the row-major result
    /// is transposed into it in 32 × 32 blocks. `work_per_row` is one row's work for all `n`
    /// tokens, in the unit of `min_task_work`.
    ///
    /// # Panics
    /// If `y` is shorter than `rows · n` (callers check shapes first).
    pub fn run<F>(self, rows: usize, work_per_row: usize, n: usize, y: &mut [f32], f: F)
    where
        F: Fn(Range<usize>, &mut [f32]) + Sync,
    {
        if rows == 0 || n == 0 {
            return;
        }
        let y = &mut y[..rows * n];
        let threads = rayon::current_num_threads();
        let min_rows = self.min_task_work.div_ceil(work_per_row.max(1));
        let target = rows
            .div_ceil(threads * self.parts_per_thread.max(1))
            .max(min_rows)
            .max(1);
        let align = self.align.max(1);
        let chunk = target.div_ceil(align) * align;
        let serial = threads == 1 || chunk >= rows;

        let run = |out: &mut [f32]| {
            if serial {
                f(0..rows, out);
            } else {
                out.par_chunks_mut(chunk * n)
                    .enumerate()
                    .for_each(|(i, o)| {
                        let r0 = i * chunk;
                        f(r0..r0 + o.len() / n, o);
                    });
            }
        };
        if n == 1 {
            run(y);
        } else {
            let mut tmp = vec![0f32; rows * n];
            run(&mut tmp);
            transpose_into(&tmp, rows, n, y, serial);
        }
    }
}

/// `y[j, r] = src[r, j]` for `src: rows × n`, in square blocks so both sides stay in cache.
fn transpose_into(src: &[f32], rows: usize, n: usize, y: &mut [f32], serial: bool) {
    const B: usize = 32;
    let transpose = |j0: usize, dst: &mut [f32]| {
        for r0 in (0..rows).step_by(B) {
            let r1 = (r0 + B).min(rows);
            for (dj, d) in dst.chunks_exact_mut(rows).enumerate() {
                let j = j0 + dj;
                for (v, r) in d[r0..r1].iter_mut().zip(r0..r1) {
                    *v = src[r * n + j];
                }
            }
        }
    };
    if serial {
        for (b, dst) in y.chunks_mut(B * rows).enumerate() {
            transpose(b * B, dst);
        }
    } else {
        y.par_chunks_mut(B * rows)
            .enumerate()
            .for_each(|(b, dst)| transpose(b * B, dst));
    }
}
