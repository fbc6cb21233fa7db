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
const HUGE_PAGE: usize = 2 << 20;

/// Asks the kernel to back the whole 2 MiB pages inside `len` bytes from `ptr` (one live
/// allocation) with huge pages: marked with `MADV_HUGEPAGE`, then collapsed with
/// `MADV_COLLAPSE`. Best effort: returns the bytes collapsed (0 where the kernel declined,
/// e.g. transparent huge pages `never` or a kernel before 6.1). Contents never change.
pub(crate) fn advise_huge_pages(ptr: *const u8, len: usize) -> usize {
    let start = (ptr as usize).next_multiple_of(HUGE_PAGE);
    let end = (ptr as usize).saturating_add(len) / HUGE_PAGE * HUGE_PAGE;
    if end <= start {
        return 0;
    }
    // SAFETY: [start, end) lies inside the caller's allocation (aligned inwards), and both
    // advices change only how its pages are backed, never their contents or their mapping's
    // permissions; the kernel copies the data into a huge page atomically for readers.
    let collapsed = unsafe {
        madvise(start as *mut c_void, end - start, MADV_HUGEPAGE);
        madvise(start as *mut c_void, end - start, MADV_COLLAPSE)
    };
    if collapsed == 0 { end - start } else { 0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn huge_page_advice_should_keep_the_contents_and_stay_inside_the_buffer() {
        // 6 MiB of a pattern: at least one whole 2 MiB page lies inside it, whatever its start.
        let v: Vec<u32> = (0..(6 << 20) / 4)
            .map(|i: u32| i.wrapping_mul(2_654_435_761))
            .collect();
        let done = crate::kernels::advise_huge_pages(&v);
        eprintln!("collapsed {done} bytes (0 where the kernel declines)");
        assert!(done <= std::mem::size_of_val(v.as_slice()));
        assert_eq!(done % super::HUGE_PAGE, 0);
        assert!(
            v.iter()
                .enumerate()
                .all(|(i, &x)| x == (i as u32).wrapping_mul(2_654_435_761))
        );
        // Too small for a whole huge page: nothing is advised.
        assert_eq!(crate::kernels::advise_huge_pages(&v[..1000]), 0);
        assert_eq!(crate::kernels::advise_huge_pages::<u8>(&[]), 0);
    }
}
