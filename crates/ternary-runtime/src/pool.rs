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
/// wait on. Waiters spin [`SPIN`] times, then yield their core for up to [`BARRIER_YIELD`],
/// then sleep on a condition variable (on a shared, oversubscribed host the thread everyone
/// waits for may not be running; sleeping lets it run instead of a yielding waiter).
/// Waiting returns early once `poisoned` is set (a worker panicked; the job is abandoned).
#[derive(Debug)]
pub(crate) struct SpinBarrier {
    n: usize,
    count: AtomicUsize,
    generation: AtomicUsize,
    sleepers: AtomicUsize,
    lock: Mutex<()>,
    wake: Condvar,
    pub poisoned: AtomicBool,
}

/// How long a barrier waiter yields before it sleeps.
const BARRIER_YIELD: Duration = Duration::from_micros(200);

impl SpinBarrier {
    pub fn new(n: usize) -> Self {
        Self {
            n,
            count: AtomicUsize::new(0),
            generation: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            lock: Mutex::new(()),
            wake: Condvar::new(),
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
            self.generation.fetch_add(1, Ordering::SeqCst);
            if self.sleepers.load(Ordering::SeqCst) > 0 {
                // Taking the lock orders the bump before any sleeper's re-check.
                let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
                self.wake.notify_all();
            }
            return;
        }
        let mut spins = 0u32;
        let mut since: Option<Instant> = None;
        while self.generation.load(Ordering::Acquire) == g {
            if self.poisoned.load(Ordering::Relaxed) {
                return;
            }
            if spins < SPIN {
                std::hint::spin_loop();
                spins += 1;
                continue;
            }
            let start = *since.get_or_insert_with(Instant::now);
            if start.elapsed() < BARRIER_YIELD {
                std::thread::yield_now();
                continue;
            }
            let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
            self.sleepers.fetch_add(1, Ordering::SeqCst);
            // SeqCst pairs with the last arriver's bump and load of `sleepers` (either it
            // sees this sleeper and notifies, or this check sees the new generation); the
            // timeout bounds any other miss.
            while self.generation.load(Ordering::SeqCst) == g
                && !self.poisoned.load(Ordering::Relaxed)
            {
                guard = match self.wake.wait_timeout(guard, Duration::from_millis(50)) {
                    Ok((g, _)) => g,
                    Err(e) => e.into_inner().0,
                };
            }
            self.sleepers.fetch_sub(1, Ordering::SeqCst);
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
