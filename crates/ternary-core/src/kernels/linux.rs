//! Linux memory advice for the weights the kernels stream: the only OS-specific code of the
//! kernels (a system call, so `unsafe`, like the arch modules).

use std::ffi::{c_int, c_void};

unsafe extern "C" {
    /// `madvise(2)` from the C library.
    fn madvise(addr: *mut c_void, len: usize, advice: c_int) -> c_int;
}

/// `MADV_HUGEPAGE`: the range may be backed by transparent huge pages.
const MADV_HUGEPAGE: c_int = 14;
/// `MADV_COLLAPSE` (Linux 6.1): back the range with huge pages now, copying its pages.
const MADV_COLLAPSE: c_int = 25;
/// The x86-64 and common aarch64 huge page.
pub(crate) const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the 2 MiB page at `page` (a multiple of [`HUGE_PAGE`]) with a huge
/// page: marked with `MADV_HUGEPAGE`, then collapsed with `MADV_COLLAPSE`. Best effort: false
/// where the kernel declined (transparent huge pages `never`, a kernel before 6.1, a page not
/// wholly mapped). Contents never change.
pub(crate) fn collapse(page: usize) -> bool {
    debug_assert_eq!(page % HUGE_PAGE, 0);
    // SAFETY: both advices change only how the range's pages are backed, never their contents,
    // mapping or permissions (the kernel copies each page into the huge one atomically for
    // concurrent readers and writers), so they are sound on any address range, ours or not; a
    // range not wholly mapped fails with an error and changes nothing.
    unsafe {
        madvise(page as *mut c_void, HUGE_PAGE, MADV_HUGEPAGE);
        madvise(page as *mut c_void, HUGE_PAGE, MADV_COLLAPSE) == 0
    }
}

#[cfg(test)]
mod tests {
    use crate::kernels::HugePages;

    #[test]
    fn huge_page_advice_should_keep_the_contents_and_count_only_pages_mostly_covered() {
        // 6 MiB of a pattern, in two buffers: at least two whole 2 MiB pages lie inside.
        let pattern = |i: u32| i.wrapping_mul(2_654_435_761);
        let v: Vec<u32> = (0..(6 << 20) / 4).map(pattern).collect();
        let (a, b) = v.split_at(v.len() / 3);
        let mut pages = HugePages::default();
        pages.add(a);
        pages.add(b);
        pages.add::<u8>(&[]);
        let done = pages.advise();
        eprintln!("{done} bytes on huge pages (0 where the kernel declines)");
        assert!(done <= std::mem::size_of_val(v.as_slice()));
        assert!(v.iter().enumerate().all(|(i, &x)| x == pattern(i as u32)));
        // A buffer covering less than half of any 2 MiB page is never collapsed.
        let mut small = HugePages::default();
        small.add(&v[..1000]);
        assert_eq!(small.advise(), 0);
        assert_eq!(HugePages::default().advise(), 0);
    }
}
