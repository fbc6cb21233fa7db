//! Portable kernels: one token at a time, walking the `+1` and `−1` columns of each row.
//!
//! For row `r` and token `j`, group by group in increasing order (groups without a weight are
//! skipped): `acc = Σ_{c ∈ g, t=+1} x[j, c] − Σ_{c ∈ g, t=−1} x[j, c]`, `sum += s[r, g] · acc`.

use super::{Cursor, WalkRows, group_len, par_rows, walk_work};
use ternary_core::QuantizedActivations;

/// Scalar `f32` GEMM over any walkable format; shapes are checked by the caller.
pub(super) fn gemm_f32<W: WalkRows>(m: &W, x: &[f32], n: usize, y: &mut [f32]) {
    let (rows, cols) = (m.rows(), m.cols());
    let glen = group_len(m.scales(), cols);
    let groups = m.scales().layout().groups_per_row(cols);
    let scales = m.scales().values();
    par_rows(rows, walk_work(m.nnz(), rows, n), n, y, |rs, out| {
        for (r, out_r) in rs.zip(out.chunks_exact_mut(n)) {
            let s = &scales[r * groups..(r + 1) * groups];
            for (j, o) in out_r.iter_mut().enumerate() {
                let xj = &x[j * cols..(j + 1) * cols];
                let (mut p, mut q) = m.cursors(r);
                let mut sum = 0f32;
                loop {
                    let c = p.pos().min(q.pos());
                    if c == usize::MAX {
                        break;
                    }
                    let g = c / glen;
                    let end = ((g + 1) * glen).min(cols);
                    // Two partial sums per sign halve the dependent-add chain.
                    let (mut a0, mut a1, mut b0, mut b1) = (0f32, 0f32, 0f32, 0f32);
                    loop {
                        let c = p.pos();
                        if c >= end {
                            break;
                        }
                        a0 += xj[c];
                        p.advance();
                        let c = p.pos();
                        if c >= end {
                            break;
                        }
                        a1 += xj[c];
                        p.advance();
                    }
                    loop {
                        let c = q.pos();
                        if c >= end {
                            break;
                        }
                        b0 += xj[c];
                        q.advance();
                        let c = q.pos();
                        if c >= end {
                            break;
                        }
                        b1 += xj[c];
                        q.advance();
                    }
                    sum += s[g] * ((a0 + a1) - (b0 + b1));
                }
                *o = sum;
            }
        }
    });
}

/// Scalar int8 GEMM over any walkable format: exact `i32` group sums, then the reference's
/// `f32` order; shapes are checked by the caller.
pub(super) fn gemm_i8<W: WalkRows>(m: &W, a: &QuantizedActivations, y: &mut [f32]) {
    let (rows, cols, n) = (m.rows(), m.cols(), a.n());
    let glen = group_len(m.scales(), cols);
    let groups = m.scales().layout().groups_per_row(cols);
    let scales = m.scales().values();
    par_rows(rows, walk_work(m.nnz(), rows, n), n, y, |rs, out| {
        for (r, out_r) in rs.zip(out.chunks_exact_mut(n)) {
            let s = &scales[r * groups..(r + 1) * groups];
            for (j, o) in out_r.iter_mut().enumerate() {
                let q8 = a.row(j);
                let (mut p, mut q) = m.cursors(r);
                let mut sum = 0f32;
                loop {
                    let c = p.pos().min(q.pos());
                    if c == usize::MAX {
                        break;
                    }
                    let g = c / glen;
                    let end = ((g + 1) * glen).min(cols);
                    let mut acc = 0i32;
                    while p.pos() < end {
                        acc += i32::from(q8[p.pos()]);
                        p.advance();
                    }
                    while q.pos() < end {
                        acc -= i32::from(q8[q.pos()]);
                        q.advance();
                    }
                    sum += s[g] * acc as f32;
                }
                *o = sum * a.scales()[j];
            }
        }
    });
}
