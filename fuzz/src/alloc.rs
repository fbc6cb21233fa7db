//! A counting global allocator: the peak of live heap bytes while one input is parsed, per
//! thread, and a hard cap on any single request made during a parse.
//!
//! Every binary that fuzzes installs it:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOC: ternary_fuzz::alloc::CountingAlloc = ternary_fuzz::alloc::CountingAlloc;
//! ```
//!
//! Counters are thread-local (`const`-initialised `Cell`s, which have no destructor and never
//! allocate), so several fuzzing threads measure their own parses. Memory freed on another
//! thread than the one that allocated it lowers the freeing thread's count; a parse is
//! single-threaded, so this only makes the measured peak smaller than the truth, never larger.
//!
//! While a [`Guard`] is active, a single request above [`HARD_CAP`] is refused (the allocator
//! returns null, which aborts the process) after printing which input made it, with the
//! command that regenerates it. A parser that trusts a header claiming `2^60` elements is
//! therefore a crash, found and named, instead of a machine running out of memory.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::io::Write;

/// The largest single allocation a parse may request (1 GiB); larger ones abort the process.
pub const HARD_CAP: usize = 1 << 30;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
    static TOTAL: Cell<u64> = const { Cell::new(0) };
    static ACTIVE: Cell<bool> = const { Cell::new(false) };
    /// `(parser name pointer, parser name length, seed, index)` of the input being parsed.
    static WHO: Cell<(usize, usize, u64, u64)> = const { Cell::new((0, 0, 0, 0)) };
}

/// [`System`] with per-thread counters; see the module documentation.
#[derive(Debug, Clone, Copy)]
pub struct CountingAlloc;

fn on_alloc(size: usize) {
    let _ = LIVE.try_with(|live| {
        let now = live.get().saturating_add(size);
        live.set(now);
        let _ = PEAK.try_with(|p| p.set(p.get().max(now)));
    });
    let _ = TOTAL.try_with(|t| t.set(t.get().saturating_add(size as u64)));
}

fn on_free(size: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(size)));
}

/// Whether a request of `size` bytes must be refused; says why on stderr first.
fn refuse(size: usize) -> bool {
    if size <= HARD_CAP || !ACTIVE.try_with(Cell::get).unwrap_or(false) {
        return false;
    }
    let (ptr, len, seed, index) = WHO.try_with(Cell::get).unwrap_or((0, 0, 0, 0));
    // The name is a `&'static str` stored by `Guard::new`.
    let name: &str = if ptr == 0 {
        "?"
    } else {
        // SAFETY: `ptr`/`len` were taken from a `&'static str` in `Guard::new`; the bytes
        // live for the whole program and are valid UTF-8.
        unsafe { std::str::from_utf8_unchecked(std::slice::from_raw_parts(ptr as *const u8, len)) }
    };
    let mut buf = FixedBuf::default();
    let _ = std::fmt::Write::write_fmt(
        &mut buf,
        format_args!(
            "\nternary-fuzz: ABORT: a single allocation of {size} bytes (over the {HARD_CAP}-byte \
             cap) while parsing {name} input #{index} of seed {seed}; save it with\n  \
             cargo xtask fuzz --seed {seed} --parser {name} --save-index {index}\n"
        ),
    );
    let _ = std::io::stderr().write_all(buf.as_bytes());
    true
}

/// A stack buffer for a message formatted without allocating.
struct FixedBuf {
    data: [u8; 512],
    len: usize,
}

impl Default for FixedBuf {
    fn default() -> Self {
        Self {
            data: [0; 512],
            len: 0,
        }
    }
}

impl FixedBuf {
    fn as_bytes(&self) -> &[u8] {
        &self.data[..self.len]
    }
}

impl std::fmt::Write for FixedBuf {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.data.len() - self.len);
        self.data[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged (or returns
// null, which callers must handle) and only updates thread-local counters besides.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if refuse(layout.size()) {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged; the caller upholds the contract.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            on_alloc(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was returned by `System` for `layout` (every path above forwards).
        unsafe { System.dealloc(ptr, layout) };
        on_free(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if refuse(new_size) {
            return std::ptr::null_mut();
        }
        // SAFETY: `ptr`/`layout` came from `System` (see `dealloc`); the caller upholds the
        // rest of `GlobalAlloc::realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            on_free(layout.size());
            on_alloc(new_size);
        }
        p
    }
}

/// Live heap bytes allocated and not yet freed by this thread.
pub fn live() -> usize {
    LIVE.try_with(Cell::get).unwrap_or(0)
}

/// Bytes ever allocated by this thread (a check that the allocator is installed).
pub fn total() -> u64 {
    TOTAL.try_with(Cell::get).unwrap_or(0)
}

/// Whether [`CountingAlloc`] is this program's global allocator.
pub fn installed() -> bool {
    let before = total();
    let v = std::hint::black_box(vec![0u8; 64]);
    drop(v);
    total() > before
}

/// Measures one parse: created before it, [`Guard::finish`]ed after it.
#[derive(Debug)]
pub struct Guard {
    base: usize,
}

impl Guard {
    /// Starts measuring on this thread; `parser`, `seed` and `index` name the input in the
    /// message printed if a request over [`HARD_CAP`] aborts the process.
    pub fn new(parser: &'static str, seed: u64, index: u64) -> Self {
        let _ = WHO.try_with(|w| w.set((parser.as_ptr() as usize, parser.len(), seed, index)));
        let base = live();
        let _ = PEAK.try_with(|p| p.set(base));
        let _ = ACTIVE.try_with(|a| a.set(true));
        Self { base }
    }

    /// Stops measuring; returns the peak of live bytes above the level at [`Guard::new`].
    pub fn finish(self) -> usize {
        let _ = ACTIVE.try_with(|a| a.set(false));
        PEAK.try_with(Cell::get)
            .unwrap_or(0)
            .saturating_sub(self.base)
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = ACTIVE.try_with(|a| a.set(false));
    }
}
