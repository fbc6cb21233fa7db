//! Randomness for the fuzzer, on the workspace's one seeded generator
//! ([`ternary_core::rng::SplitMix64`]). Every input is a pure function of
//! `(seed, parser, index)` ([`input_rng`]), so any input can be regenerated from those three
//! numbers alone, on any thread, in any order.

use ternary_core::rng::{GOLDEN, SplitMix64};

/// [`SplitMix64`] with the helpers the mutators use.
#[derive(Debug, Clone)]
pub struct Rng(SplitMix64);

impl Rng {
    /// A generator starting from `seed`.
    pub fn new(seed: u64) -> Self {
        Self(SplitMix64::new(seed))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in `0..n` (`0` when `n == 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.below(n)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + self.below(hi - lo + 1)
    }

    /// `true` with probability `1 / n`.
    pub fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    /// A uniformly chosen element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    /// A small count, `1` most often: `1 + ` the number of leading successes of a coin that
    /// lands with probability `1/2`, capped at `max`.
    pub fn small_count(&mut self, max: usize) -> usize {
        let mut n = 1;
        while n < max && self.next_u64() & 1 == 1 {
            n += 1;
        }
        n
    }
}

/// The generator of input `index` of parser number `parser` in a run with `seed`.
pub fn input_rng(seed: u64, parser: usize, index: u64) -> Rng {
    let mut mix = SplitMix64::new(seed ^ (parser as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93));
    let a = mix.next_u64();
    Rng::new(a ^ index.wrapping_mul(GOLDEN))
}

/// FNV-1a 64 of `bytes` (names regression fixtures by content).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01B3);
    }
    h
}
