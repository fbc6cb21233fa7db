//! Ternary matrices and activations on the device, in `ternary-core`'s layout.
//!
//! The planes are uploaded as-is: row-major `u32` words, column `c` of row `r` in word
//! `r · wpr + c / 32`, bit `c % 32`, `wpr = words_per_row(cols) = 2 · ⌈cols / 64⌉`, padding bits
//! zero, `plus & minus == 0`. Scales are `rows × groups` `f32` values, row-major.
//!
//! Activations live on the device zero-padded to `padded_cols = 32 · wpr = 64 · ⌈cols / 64⌉`
//! values per token, so a kernel can read the 32 values of any plane word without a bounds test.

use cubecl::prelude::*;
use ternary_core::matrix::WORD_BITS;
use ternary_core::{QuantizedActivations, ScaleLayout, Scales, TernaryMatrix, words_per_row};

use crate::buffer::{DeviceArray, DeviceElement};
use crate::error::{KernelError, Result};

/// `padded_cols(cols) = 64 · ⌈cols / 64⌉`: the device row stride of activations.
#[inline]
pub const fn padded_cols(cols: usize) -> usize {
    words_per_row(cols) * WORD_BITS
}

/// A [`TernaryMatrix`] uploaded to a device.
#[derive(Debug, Clone)]
pub struct DeviceMatrix<R: Runtime> {
    rows: usize,
    cols: usize,
    layout: ScaleLayout,
    pub(crate) plus: DeviceArray<R, u32>,
    pub(crate) minus: DeviceArray<R, u32>,
    pub(crate) scales: DeviceArray<R, f32>,
    /// One-element placeholders bound where a kernel variant ignores an argument, so launches
    /// allocate nothing.
    pub(crate) dummy_u32: DeviceArray<R, u32>,
    pub(crate) dummy_f32: DeviceArray<R, f32>,
}

/// Scalar shape parameters shared by the matrix kernels.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub rows: u32,
    pub wpr: u32,
    pub groups: u32,
    /// Words per scale group (`wpr` for per-row scales, at least 1).
    pub wpg: u32,
}

impl<R: Runtime> DeviceMatrix<R> {
    /// Uploads the planes and scales of `m`.
    ///
    /// Errors with [`KernelError::Shape`] if an index would not fit the kernels' 32-bit
    /// addressing (more than `2³¹` words per plane).
    pub fn upload(client: &ComputeClient<R>, m: &TernaryMatrix) -> Result<Self> {
        check_u32_range("plane words", m.plus().len())?;
        check_u32_range("scales", m.scales().values().len())?;
        check_u32_range("rows", m.rows())?;
        Ok(Self {
            rows: m.rows(),
            cols: m.cols(),
            layout: m.scales().layout(),
            plus: DeviceArray::from_slice(client, m.plus()),
            minus: DeviceArray::from_slice(client, m.minus()),
            scales: DeviceArray::from_slice(client, m.scales().values()),
            dummy_u32: DeviceArray::from_slice(client, &[0]),
            dummy_f32: DeviceArray::from_slice(client, &[0.0]),
        })
    }

    /// Reads the planes and scales back and validates every invariant of [`TernaryMatrix`].
    pub fn download(&self, client: &ComputeClient<R>) -> Result<TernaryMatrix> {
        let plus = self.plus.read(client)?;
        let minus = self.minus.read(client)?;
        let scales = Scales::new(self.layout, self.scales.read(client)?);
        Ok(TernaryMatrix::from_planes(
            self.rows, self.cols, plus, minus, scales,
        )?)
    }

    /// Output channels.
    #[inline]
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Input channels.
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `u32` words per row of each plane.
    #[inline]
    pub fn words_per_row(&self) -> usize {
        words_per_row(self.cols)
    }

    /// The scale layout.
    #[inline]
    pub fn layout(&self) -> ScaleLayout {
        self.layout
    }

    /// The `+1` plane on the device.
    #[inline]
    pub fn plus(&self) -> &DeviceArray<R, u32> {
        &self.plus
    }

    /// The `-1` plane on the device.
    #[inline]
    pub fn minus(&self) -> &DeviceArray<R, u32> {
        &self.minus
    }

    pub(crate) fn geometry(&self) -> Geometry {
        let wpr = self.words_per_row();
        let (groups, wpg) = match self.layout {
            ScaleLayout::PerRow => (1, wpr.max(1)),
            ScaleLayout::PerGroup { group_size } => (
                self.layout.groups_per_row(self.cols),
                group_size / WORD_BITS,
            ),
        };
        // `upload` checked that rows, rows · wpr and rows · groups fit in 31 bits.
        Geometry {
            rows: self.rows as u32,
            wpr: wpr as u32,
            groups: groups.max(1) as u32,
            wpg: wpg.max(1) as u32,
        }
    }
}

pub(crate) fn check_u32_range(what: &str, n: usize) -> Result<()> {
    if n > i32::MAX as usize {
        return Err(KernelError::shape(format!(
            "{what}: {n} exceeds the 32-bit addressing of the kernels"
        )));
    }
    Ok(())
}

/// `n × cols` float activations on the device, each token zero-padded to
/// [`padded_cols(cols)`](padded_cols) values.
#[derive(Debug, Clone)]
pub struct DeviceActivations<R: Runtime, F = f32> {
    n: usize,
    cols: usize,
    pub(crate) data: DeviceArray<R, F>,
}

impl<R: Runtime> DeviceActivations<R, f32> {
    /// Uploads `n × cols` row-major activations. NaN/Inf is an error.
    pub fn upload(client: &ComputeClient<R>, x: &[f32], n: usize, cols: usize) -> Result<Self> {
        let data = pad_rows(x, n, cols)?;
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(KernelError::Core(ternary_core::TernaryError::NonFinite {
                what: "activations",
                index: i,
                value: x[i],
            }));
        }
        Ok(Self {
            n,
            cols,
            data: DeviceArray::from_slice(client, &data),
        })
    }
}

impl<R: Runtime> DeviceActivations<R, half::f16> {
    /// Uploads `n × cols` row-major `f16` activations. NaN/Inf is an error.
    pub fn upload_f16(
        client: &ComputeClient<R>,
        x: &[half::f16],
        n: usize,
        cols: usize,
    ) -> Result<Self> {
        if !crate::device::DeviceCaps::of(client).f16 {
            return Err(KernelError::Unsupported(format!(
                "{} cannot store f16 values",
                R::name(client)
            )));
        }
        let data = pad_rows(x, n, cols)?;
        if let Some(i) = x.iter().position(|v| !v.is_finite()) {
            return Err(KernelError::Core(ternary_core::TernaryError::NonFinite {
                what: "activations",
                index: i,
                value: x[i].to_f32(),
            }));
        }
        Ok(Self {
            n,
            cols,
            data: DeviceArray::from_slice(client, &data),
        })
    }
}

impl<R: Runtime, F: Numeric + DeviceElement> DeviceActivations<R, F> {
    /// Activations already on the device: `x` holds `n × cols` row-major values (no padding),
    /// e.g. the storage of a Burn tensor wrapped with [`DeviceArray::from_handle`].
    ///
    /// When `cols` is a multiple of 64 the buffer is used as it is (no copy); otherwise a
    /// kernel copies it into zero-padded rows of [`padded_cols(cols)`](padded_cols) values.
    /// Unlike [`upload`](DeviceActivations::upload), values are not checked for NaN/Inf (that
    /// would need a read-back); non-finite inputs give non-finite outputs, as a float matmul.
    /// Errors with [`KernelError::Shape`] when `x.len() != n · cols`.
    pub fn from_device(
        client: &ComputeClient<R>,
        x: DeviceArray<R, F>,
        n: usize,
        cols: usize,
    ) -> Result<Self> {
        let (pc, total) = padded_shape(x.len(), n, cols)?;
        if pc == cols {
            return Ok(Self { n, cols, data: x });
        }
        let data = DeviceArray::<R, F>::empty(client, total);
        if total > 0 {
            let caps = crate::device::DeviceCaps::of(client);
            let cubes = total.div_ceil(256);
            let gx = cubes.min(caps.max_cube_count.0 as usize);
            let count = crate::gemm::check_grid(&caps, gx, cubes.div_ceil(gx), 1)?;
            crate::kernels::pad_rows::launch::<F, R>(
                client,
                count,
                CubeDim::new_1d(256),
                x.arg(),
                data.arg(),
                cols as u32,
                pc as u32,
                total as u32,
            );
            crate::gemm::flush(client)?;
        }
        Ok(Self { n, cols, data })
    }
}

impl<R: Runtime, F> DeviceActivations<R, F> {
    /// Tokens.
    #[inline]
    pub fn n(&self) -> usize {
        self.n
    }

    /// Values per token.
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }
}

/// Checks that `len = n · cols` values fit the kernels once padded; returns the padded row
/// length [`padded_cols(cols)`](padded_cols) and the padded total `n · padded_cols`.
fn padded_shape(len: usize, n: usize, cols: usize) -> Result<(usize, usize)> {
    if n.checked_mul(cols) != Some(len) {
        return Err(KernelError::shape(format!(
            "activations: expected n x cols = {n} x {cols} values, got {len}"
        )));
    }
    let pc = padded_cols(cols);
    let total = n
        .checked_mul(pc)
        .ok_or_else(|| KernelError::shape("activations overflow usize"))?;
    check_u32_range("activation values", total)?;
    Ok((pc, total))
}

/// Copies `n × cols` values into rows of [`padded_cols(cols)`](padded_cols), zero-padded.
fn pad_rows<T: Copy + Default>(x: &[T], n: usize, cols: usize) -> Result<Vec<T>> {
    let (pc, total) = padded_shape(x.len(), n, cols)?;
    let mut data = vec![T::default(); total];
    if cols > 0 {
        for (dst, src) in data.chunks_exact_mut(pc).zip(x.chunks_exact(cols)) {
            dst[..cols].copy_from_slice(src);
        }
    }
    Ok(data)
}

/// Int8 activations on the device: `n × padded_cols` values in `[-127, 127]` stored as `i32`
/// (zero in the padding), plus one `f32` scale per token: `x[j, c] ≈ s_j · q[j, c]`.
#[derive(Debug, Clone)]
pub struct DeviceQuantized<R: Runtime> {
    n: usize,
    cols: usize,
    pub(crate) q: DeviceArray<R, i32>,
    pub(crate) scales: DeviceArray<R, f32>,
}

impl<R: Runtime> DeviceQuantized<R> {
    /// Uploads activations quantized on the host by `ternary-core`.
    pub fn upload(client: &ComputeClient<R>, a: &QuantizedActivations) -> Result<Self> {
        // `a.data()` is already n × padded_cols (same padding rule as ours).
        debug_assert_eq!(a.padded_cols(), padded_cols(a.cols()));
        check_u32_range("activation values", a.data().len())?;
        let q: Vec<i32> = a.data().iter().map(|&v| i32::from(v)).collect();
        Ok(Self {
            n: a.n(),
            cols: a.cols(),
            q: DeviceArray::from_slice(client, &q),
            scales: DeviceArray::from_slice(client, a.scales()),
        })
    }

    /// Room for `n × cols` quantized activations with unspecified contents.
    pub fn empty(client: &ComputeClient<R>, n: usize, cols: usize) -> Result<Self> {
        let total = n
            .checked_mul(padded_cols(cols))
            .ok_or_else(|| KernelError::shape("activations overflow usize"))?;
        check_u32_range("activation values", total)?;
        Ok(Self {
            n,
            cols,
            q: DeviceArray::empty(client, total),
            scales: DeviceArray::empty(client, n),
        })
    }

    /// Room for `n × cols` quantized activations filled with poison (`i32::MIN`, NaN scales),
    /// so that a value the quantization kernel fails to write is caught.
    pub fn poisoned(client: &ComputeClient<R>, n: usize, cols: usize) -> Result<Self> {
        let total = n
            .checked_mul(padded_cols(cols))
            .ok_or_else(|| KernelError::shape("activations overflow usize"))?;
        check_u32_range("activation values", total)?;
        Ok(Self {
            n,
            cols,
            q: DeviceArray::filled(client, total, i32::MIN),
            scales: DeviceArray::filled(client, n, f32::NAN),
        })
    }

    /// Tokens.
    #[inline]
    pub fn n(&self) -> usize {
        self.n
    }

    /// Values per token.
    #[inline]
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Reads the quantized values back as `n × cols` `i8` (padding dropped) and the scales.
    pub fn read(&self, client: &ComputeClient<R>) -> Result<(Vec<i8>, Vec<f32>)> {
        let q = self.q.read(client)?;
        let pc = padded_cols(self.cols);
        let mut out = Vec::with_capacity(self.n * self.cols);
        for j in 0..self.n {
            for &v in &q[j * pc..j * pc + self.cols] {
                out.push(i8::try_from(v).map_err(|_| {
                    KernelError::Device(format!("quantized value {v} out of i8 range"))
                })?);
            }
        }
        Ok((out, self.scales.read(client)?))
    }
}
