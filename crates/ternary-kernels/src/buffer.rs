//! Typed device buffers: a CubeCL [`Handle`] plus its element count.
//!
//! This is the only module with `unsafe` code: CubeCL's `ArrayArg::from_raw_parts` is unsafe
//! because a wrong length lets a kernel read or write out of bounds. A [`DeviceArray`] is only
//! ever built by this module, from a buffer it allocated with exactly `len` elements or from a
//! foreign handle whose size it checked ([`DeviceArray::from_handle`]), so the length it passes
//! never exceeds the buffer.

use std::marker::PhantomData;

use cubecl::prelude::*;
use cubecl::server::Handle;

use crate::error::{KernelError, Result};

/// An element type that can live in a [`DeviceArray`]: `u32`, `i32`, `f32`, `f16`.
pub trait DeviceElement: CubeElement + CubePrimitive + Copy + Default {
    /// Decodes one little-endian element from exactly `size_of::<Self>()` bytes.
    fn decode(bytes: &[u8]) -> Self;
}

macro_rules! impl_device_element {
    ($($t:ty),*) => {$(
        impl DeviceElement for $t {
            #[inline]
            fn decode(bytes: &[u8]) -> Self {
                let mut raw = [0u8; size_of::<$t>()];
                raw.copy_from_slice(bytes);
                <$t>::from_le_bytes(raw)
            }
        }
    )*};
}
impl_device_element!(u32, i32, f32, half::f16);

/// A one-dimensional device buffer of `len` elements of `T`.
///
/// Cloning is cheap and aliases the same device memory (CubeCL handles are reference counted).
#[derive(Debug)]
pub struct DeviceArray<R: Runtime, T> {
    handle: Handle,
    len: usize,
    _marker: PhantomData<(R, T)>,
}

impl<R: Runtime, T> Clone for DeviceArray<R, T> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
            len: self.len,
            _marker: PhantomData,
        }
    }
}

impl<R: Runtime, T: DeviceElement> DeviceArray<R, T> {
    /// Uploads `data` to a new device buffer.
    ///
    /// An empty slice allocates one element (devices cannot bind empty buffers); [`len`]
    /// still reports `0`.
    ///
    /// [`len`]: Self::len
    pub fn from_slice(client: &ComputeClient<R>, data: &[T]) -> Self {
        let handle = if data.is_empty() {
            client.create_from_slice(T::as_bytes(&[T::default()]))
        } else {
            client.create_from_slice(T::as_bytes(data))
        };
        Self {
            handle,
            len: data.len(),
            _marker: PhantomData,
        }
    }

    /// Wraps a buffer allocated elsewhere on the same client (e.g. the storage of a Burn
    /// tensor on a CubeCL backend) as `len` elements of `T`, starting at the handle's offset.
    ///
    /// Errors with [`KernelError::Shape`] when the handle's bytes in use are fewer than
    /// `max(len, 1) · size_of::<T>()`, so a kernel bound to the result never reaches past it.
    /// The bytes are reinterpreted as `T` as they are: the caller states the element type.
    pub fn from_handle(handle: Handle, len: usize) -> Result<Self> {
        let need = len
            .max(1)
            .checked_mul(size_of::<T>())
            .ok_or_else(|| KernelError::shape("buffer length overflows usize"))?;
        let have = handle.size_in_used();
        if have < need as u64 {
            return Err(KernelError::shape(format!(
                "buffer holds {have} bytes, {len} elements of {} bytes need {need}",
                size_of::<T>()
            )));
        }
        Ok(Self {
            handle,
            len,
            _marker: PhantomData,
        })
    }

    /// The CubeCL handle of the buffer (for handing it to another CubeCL user, e.g. Burn).
    #[inline]
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Consumes the buffer and returns its handle.
    #[inline]
    pub fn into_handle(self) -> Handle {
        self.handle
    }

    /// A new buffer of `len` elements with unspecified contents (for outputs a kernel overwrites).
    pub fn empty(client: &ComputeClient<R>, len: usize) -> Self {
        Self {
            handle: client.empty(len.max(1) * size_of::<T>()),
            len,
            _marker: PhantomData,
        }
    }

    /// A new buffer of `len` copies of `value` (used to poison outputs in tests).
    pub fn filled(client: &ComputeClient<R>, len: usize, value: T) -> Self {
        Self::from_slice(client, &vec![value; len.max(1)]).with_len(len)
    }

    fn with_len(mut self, len: usize) -> Self {
        self.len = len;
        self
    }

    /// Elements in the buffer.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no elements.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the buffer back to the host (waits for every queued kernel that writes it).
    pub fn read(&self, client: &ComputeClient<R>) -> Result<Vec<T>> {
        if self.len == 0 {
            return Ok(Vec::new());
        }
        let bytes = client
            .read_one(self.handle.clone())
            .map_err(KernelError::device)?;
        let size = size_of::<T>();
        if bytes.len() < self.len * size {
            return Err(KernelError::Device(format!(
                "read back {} bytes, expected {}",
                bytes.len(),
                self.len * size
            )));
        }
        Ok(bytes[..self.len * size]
            .chunks_exact(size)
            .map(T::decode)
            .collect())
    }

    /// The kernel argument for this buffer.
    pub(crate) fn arg(&self) -> ArrayArg<R> {
        // SAFETY: `handle` was allocated by `from_slice` / `empty` with `max(len, 1)` elements of
        // `T`, or checked by `from_handle` to hold at least that many bytes in use, so the
        // buffer holds at least `alloc_len()` elements.
        unsafe { ArrayArg::from_raw_parts(self.handle.clone(), self.alloc_len()) }
    }

    #[inline]
    fn alloc_len(&self) -> usize {
        self.len.max(1)
    }
}
