//! A buffer whose first element lies on a 64-byte boundary (a cache line, one AVX-512 load), in
//! safe code: the vector is over-allocated and the view starts at the first aligned element.
//! A 64-byte load that straddles two cache lines costs two.

/// `len` elements of `T` from a 64-byte boundary (zero-initialised), resizable.
#[derive(Debug, Default)]
pub(crate) struct Aligned<T> {
    buf: Vec<T>,
    off: usize,
    len: usize,
}

const LINE: usize = 64;

impl<T: Copy + Default> Aligned<T> {
    /// `len` default elements.
    pub(crate) fn new(len: usize) -> Self {
        let mut a = Self {
            buf: Vec::new(),
            off: 0,
            len: 0,
        };
        a.reset(len);
        a
    }

    /// Empty (no allocation).
    pub(crate) const fn empty() -> Self {
        Self {
            buf: Vec::new(),
            off: 0,
            len: 0,
        }
    }

    /// `len` default elements again, reusing the allocation when it is large enough.
    pub(crate) fn reset(&mut self, len: usize) {
        let pad = LINE / std::mem::size_of::<T>().max(1);
        self.buf.clear();
        self.buf.resize(len + pad, T::default());
        // `off < pad`, so the view lies in the buffer. (An element size that does not divide
        // 64 would leave it unaligned: still correct, only not aligned.)
        let addr = self.buf.as_ptr() as usize;
        self.off = (LINE - addr % LINE) % LINE / std::mem::size_of::<T>().max(1);
        self.len = len;
    }

    /// The elements.
    pub(crate) fn as_slice(&self) -> &[T] {
        &self.buf[self.off..self.off + self.len]
    }

    /// The elements, mutably.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [T] {
        &mut self.buf[self.off..self.off + self.len]
    }
}

impl<T: Copy + Default + PartialEq> PartialEq for Aligned<T> {
    /// The same elements (wherever each allocation starts).
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl<T: Copy + Default> Clone for Aligned<T> {
    /// A copy aligned in its own allocation.
    fn clone(&self) -> Self {
        let mut a = Self::new(self.len);
        a.as_mut_slice().copy_from_slice(self.as_slice());
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_start_on_a_cache_line_and_keep_their_contents_when_cloned() {
        for len in [0, 1, 63, 64, 65, 1000] {
            let mut a = Aligned::<u32>::new(len);
            assert_eq!(a.as_slice().len(), len);
            assert_eq!(a.as_slice().as_ptr() as usize % LINE, 0, "len {len}");
            for (i, v) in a.as_mut_slice().iter_mut().enumerate() {
                *v = i as u32;
            }
            let b = a.clone();
            assert_eq!(b.as_slice(), a.as_slice());
            assert_eq!(b.as_slice().as_ptr() as usize % LINE, 0);
            let mut c = Aligned::<i8>::new(len);
            c.reset(len + 3);
            assert!(c.as_slice().iter().all(|&v| v == 0));
            assert_eq!(c.as_slice().as_ptr() as usize % LINE, 0);
        }
    }
}
