//! Repeated timing with warm-up: median and minimum of wall-clock times per call.

use std::time::Instant;

/// How many times to run a measured call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Budget {
    /// Untimed calls before timing.
    pub warmup: usize,
    /// Timed calls always made.
    pub min_reps: usize,
    /// Timed calls never exceeded.
    pub max_reps: usize,
    /// Stop adding calls beyond `min_reps` once this many seconds were spent timing.
    pub max_seconds: f64,
}

/// Seconds per call over the timed repetitions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Median (mean of the two middle values for an even count).
    pub median_s: f64,
    /// Fastest call.
    pub min_s: f64,
    /// Timed calls.
    pub reps: usize,
}

impl Stats {
    /// Stats of a non-empty list of per-call times (`None` if empty).
    pub fn from_times(times: &[f64]) -> Option<Self> {
        if times.is_empty() {
            return None;
        }
        let mut t = times.to_vec();
        t.sort_by(f64::total_cmp);
        let k = t.len();
        let median_s = if k % 2 == 1 {
            t[k / 2]
        } else {
            0.5 * (t[k / 2 - 1] + t[k / 2])
        };
        Some(Self {
            median_s,
            min_s: t[0],
            reps: k,
        })
    }
}

/// Calls `f(i)` for `i = 0, 1, …`: the first `budget.warmup` calls untimed, then timed calls
/// until `min_reps` are done and either `max_reps` or `max_seconds` is reached.
///
/// The index lets a streaming benchmark rotate among copies (`i % copies`).
/// Returns `None` only if `max_reps` is 0.
pub fn measure<F: FnMut(usize)>(budget: &Budget, mut f: F) -> Option<Stats> {
    for i in 0..budget.warmup {
        f(i);
    }
    let mut times = Vec::with_capacity(budget.max_reps.min(1024));
    let mut spent = 0.0;
    for k in 0..budget.max_reps {
        if k >= budget.min_reps && spent >= budget.max_seconds {
            break;
        }
        let t0 = Instant::now();
        f(budget.warmup + k);
        let dt = t0.elapsed().as_secs_f64();
        spent += dt;
        times.push(dt);
    }
    Stats::from_times(&times)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_median_and_min() {
        let s = Stats::from_times(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median_s, s.min_s, s.reps), (2.0, 1.0, 3));
        let s = Stats::from_times(&[4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!((s.median_s, s.min_s, s.reps), (2.5, 1.0, 4));
        assert!(Stats::from_times(&[]).is_none());
    }

    #[test]
    fn measure_respects_the_budget_and_passes_indices() {
        let mut seen = Vec::new();
        let b = Budget {
            warmup: 2,
            min_reps: 3,
            max_reps: 5,
            max_seconds: 0.0,
        };
        let s = measure(&b, |i| seen.push(i)).unwrap();
        assert_eq!(s.reps, 3);
        assert_eq!(seen, vec![0, 1, 2, 3, 4]);
        seen.clear();
        let b = Budget {
            max_seconds: 1e9,
            ..b
        };
        assert_eq!(measure(&b, |i| seen.push(i)).unwrap().reps, 5);
        assert_eq!(seen.len(), 7);
    }
}

/// The budget of [`best_time`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TimeBudget {
    /// Seconds of timed calls per measurement (after one untimed warm-up call).
    pub seconds: f64,
    /// Timed calls never exceeded.
    pub max_reps: usize,
    /// A first call this long is the whole measurement (long calls are not repeated).
    pub single_call_s: f64,
}

/// Seconds per call: the minimum over timed calls (the machine may be shared; the minimum is
/// the least disturbed). The first call is a warm-up, unless it alone takes at least
/// `single_call_s`, in which case it is the measurement.
pub fn best_time(b: TimeBudget, mut f: impl FnMut()) -> f64 {
    let t0 = Instant::now();
    f();
    let first = t0.elapsed().as_secs_f64();
    if first >= b.single_call_s {
        return first;
    }
    let mut best = f64::INFINITY;
    let (mut spent, mut reps) = (0.0, 0);
    while reps == 0 || (spent < b.seconds && reps < b.max_reps) {
        let t0 = Instant::now();
        f();
        let dt = t0.elapsed().as_secs_f64();
        spent += dt;
        reps += 1;
        best = best.min(dt);
    }
    best
}

/// Seconds per call with cold caches: the minimum over `reps` calls, each right after a
/// [`Flusher::flush`](crate::machine::Flusher::flush) (the weights come from memory, as in
/// token-by-token decoding of a model far larger than the cache).
pub fn best_cold_time(reps: usize, fl: &crate::machine::Flusher, mut f: impl FnMut()) -> f64 {
    let mut best = f64::INFINITY;
    for _ in 0..reps.max(1) {
        fl.flush();
        let t0 = Instant::now();
        f();
        best = best.min(t0.elapsed().as_secs_f64());
    }
    best
}
