//! Persistent workers and the barrier they meet at.
//!
//! The runtime starts `threads − 1` std threads once; the thread calling
//! [`Runtime::forward`](crate::Runtime::forward) is worker 0. A job starts when the caller
//! bumps [`Signal::generation`]; every worker then runs the same program on its share of each
//! product's rows and meets the others at a [`SpinBarrier`] after every phase. Idle workers
//! spin briefly, then yield, then sleep on a condition variable until the next job (the cores
//! may be shared with other work, so nobody spins for long).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

/// Busy-wait iterations before a waiter starts yielding its core.
const SPIN: u32 = 2_000;

/// A reusable barrier for `n` threads: the last to arrive bumps the generation the others
/// wait on. Waiters spin [`SPIN`] times, then call `yield_now` between checks.
/// Waiting returns early once `poisoned` is set (a worker panicked; the job is abandoned).
#[derive(Debug)]
pub(crate) struct SpinBarrier {
    n: usize,
    count: AtomicUsize,
    generation: AtomicUsize,
    pub poisoned: AtomicBool,
}

impl SpinBarrier {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            count: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            poisoned: AtomicBool::new(false),
        }
    }

    pub fn wait(&self) {
        if self.n <= 1 {
            return;
        }
        let g = self.generation.load(Ordering::Acquire);
        if self.count.fetch_add(1, Ordering::AcqRel) + 1 == self.n {
            self.count.store(0, Ordering::Relaxed);
            self.generation.fetch_add(1, Ordering::Release);
            return;
        }
        let mut spins = 0u32;
        while self.generation.load(Ordering::Acquire) == g {
            if self.poisoned.load(Ordering::Relaxed) {
                return;
            }
            if spins < SPIN {
                std::hint::spin_loop();
                spins += 1;
            } else {
                std::thread::yield_now();
            }
        }
    }
}

/// How the caller wakes the workers.
#[derive(Debug)]
pub(crate) struct Signal {
    /// Bumped once per job; `u64::MAX` asks the workers to exit.
    pub generation: AtomicU64,
    sleeping: Mutex<usize>,
    wake: Condvar,
}

/// How long an idle worker yields before sleeping.
const YIELD_FOR: Duration = Duration::from_millis(2);

impl Signal {
    pub fn new() -> Self {
        Self {
            generation: AtomicU64::new(0),
            sleeping: Mutex::new(0),
            wake: Condvar::new(),
        }
    }

    /// Starts job `g` (or, with `u64::MAX`, the exit).
    pub fn publish(&self, g: u64) {
        self.generation.store(g, Ordering::Release);
        let sleeping = self.sleeping.lock().unwrap_or_else(|e| e.into_inner());
        if *sleeping > 0 {
            self.wake.notify_all();
        }
    }

    /// Waits until the generation differs from `seen`; returns it.
    pub fn wait_for_change(&self, seen: u64) -> u64 {
        let mut spins = 0u32;
        let start = Instant::now();
        loop {
            let g = self.generation.load(Ordering::Acquire);
            if g != seen {
                return g;
            }
            if spins < SPIN {
                std::hint::spin_loop();
                spins += 1;
            } else if start.elapsed() < YIELD_FOR {
                std::thread::yield_now();
            } else {
                let mut sleeping = self.sleeping.lock().unwrap_or_else(|e| e.into_inner());
                *sleeping += 1;
                while self.generation.load(Ordering::Acquire) == seen {
                    sleeping = match self.wake.wait_timeout(sleeping, Duration::from_millis(100)) {
                        Ok((s, _)) => s,
                        Err(e) => e.into_inner().0,
                    };
                }
                *sleeping -= 1;
            }
        }
    }
}
