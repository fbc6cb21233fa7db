//! In-place weight edits on a [`DeviceMatrix`].
//!
//! Semantics: a batch has exactly the effect of calling
//! [`TernaryMatrix::set`](ternary_core::TernaryMatrix::set) on each edit in batch order, and
//! returns the trit each of those calls would have returned. Duplicate edits of one weight
//! are resolved on the host before launch (the last one wins; the earlier ones' "old" values
//! are the values the batch itself wrote), so no two device units touch the same bit. Units
//! editing different bits of one word use atomic `and`/`or`, which commute, so the result does
//! not depend on scheduling. `plus & minus == 0` holds after the launch.
//!
//! Edits change weights only; scales are left as they are, and a [chunk
//! bitmap](crate::skip) built earlier must be rebuilt.

use std::collections::HashMap;

use cubecl::prelude::*;
use ternary_core::TernaryError;
use ternary_core::matrix::WORD_BITS;

use crate::buffer::DeviceArray;
use crate::device::DeviceCaps;
use crate::error::{KernelError, Result};
use crate::gemm::{check_grid, flush};
use crate::kernels::apply_edits;
use crate::matrix::DeviceMatrix;

/// One weight edit: set `t[row, col] = value` (`value ∈ {-1, 0, +1}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Edit {
    /// Row of the weight.
    pub row: usize,
    /// Column of the weight.
    pub col: usize,
    /// New trit.
    pub value: i8,
}

/// Applies `edits` to `m` on the device; returns the previous trit of each edit, as sequential
/// [`TernaryMatrix::set`](ternary_core::TernaryMatrix::set) calls would (see the
/// [module docs](self)).
///
/// Errors (before anything is changed): [`TernaryError::OutOfBounds`] for a position outside
/// the matrix, [`TernaryError::InvalidTrit`] for a value outside `{-1, 0, +1}`.
pub fn launch_edits<R: Runtime>(
    client: &ComputeClient<R>,
    m: &DeviceMatrix<R>,
    edits: &[Edit],
) -> Result<Vec<i8>> {
    let wpr = m.words_per_row();
    for e in edits {
        if e.row >= m.rows() || e.col >= m.cols() {
            return Err(KernelError::Core(TernaryError::OutOfBounds {
                row: e.row,
                col: e.col,
                rows: m.rows(),
                cols: m.cols(),
            }));
        }
        if !(-1..=1).contains(&e.value) {
            return Err(KernelError::Core(TernaryError::InvalidTrit(e.value.into())));
        }
    }
    // Last edit of each position wins; remember where each position first appeared.
    let mut last: HashMap<(usize, usize), usize> = HashMap::with_capacity(edits.len());
    let mut first: Vec<usize> = Vec::new();
    for (i, e) in edits.iter().enumerate() {
        if last.insert((e.row, e.col), i).is_none() {
            first.push(i);
        }
    }
    let unique: Vec<usize> = first
        .iter()
        .map(|&i| last[&(edits[i].row, edits[i].col)])
        .collect();
    let words: Vec<u32> = unique
        .iter()
        .map(|&i| (edits[i].row * wpr + edits[i].col / WORD_BITS) as u32)
        .collect();
    let bits: Vec<u32> = unique
        .iter()
        .map(|&i| 1u32 << (edits[i].col % WORD_BITS))
        .collect();
    let values: Vec<i32> = unique.iter().map(|&i| i32::from(edits[i].value)).collect();

    let mut device_old = Vec::new();
    if !unique.is_empty() {
        let caps = DeviceCaps::of(client);
        let count = check_grid(&caps, unique.len().div_ceil(64), 1, 1)?;
        let old = DeviceArray::<R, i32>::filled(client, unique.len(), i32::MIN);
        apply_edits::launch::<R>(
            client,
            count,
            CubeDim::new_1d(64),
            m.plus.arg(),
            m.minus.arg(),
            DeviceArray::<R, u32>::from_slice(client, &words).arg(),
            DeviceArray::<R, u32>::from_slice(client, &bits).arg(),
            DeviceArray::<R, i32>::from_slice(client, &values).arg(),
            old.arg(),
            unique.len() as u32,
        );
        flush(client)?;
        device_old = old.read(client)?;
    }
    // The device returned the value before the batch for each position (indexed like
    // `first`); later edits of a position see the previous edit's value.
    let mut current: HashMap<(usize, usize), i8> = HashMap::with_capacity(first.len());
    for (k, &i) in first.iter().enumerate() {
        let v = device_old[k];
        let t = i8::try_from(v)
            .ok()
            .filter(|t| (-1..=1).contains(t))
            .ok_or_else(|| KernelError::Device(format!("edit kernel returned trit {v}")))?;
        current.insert((edits[i].row, edits[i].col), t);
    }
    let mut out = Vec::with_capacity(edits.len());
    for e in edits {
        let slot = current.entry((e.row, e.col)).or_insert(0);
        out.push(*slot);
        *slot = e.value;
    }
    Ok(out)
}
