//! The workspace's seeded pseudo-random generators (one of each), small and self-contained, so
//! that every seed gives the same data on every platform and every version of the dependencies:
//! test inputs, benchmark data, sampling in generation, hypervector codebooks.
//!
//! - [`SplitMix64`] (Steele, Lea & Flood 2014) expands a `u64` seed;
//! - [`Rng`] is xoshiro256++ (Blackman & Vigna 2019) seeded by four SplitMix64 outputs;
//! - [`derive_seed`] gives independent streams `(seed, index)`, so item `i` of a codebook does
//!   not depend on how many items there are or in which order (or thread) they are made.
//!
//! All integer outputs are bit-exact across platforms. [`Rng::normal`] uses `ln`, `sqrt`,
//! `cos` from the platform's math library and is reproducible only up to their rounding.

/// The 64-bit golden-ratio increment of SplitMix64, `⌊2⁶⁴ / φ⌋` made odd.
pub const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 output function: a bijective 64-bit mixer (Stafford's variant 13).
#[inline]
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seed of stream `index` under `seed`: `mix64(seed ⊕ mix64(GOLDEN · (index + 1)))`.
#[inline]
pub fn derive_seed(seed: u64, index: u64) -> u64 {
    mix64(seed ^ mix64(GOLDEN.wrapping_mul(index.wrapping_add(1))))
}

/// SplitMix64: `state += GOLDEN; output mix64(state)`. Period 2⁶⁴.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator whose first output is `mix64(seed + GOLDEN)`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GOLDEN);
        mix64(self.state)
    }

    /// Uniform in `[0, 1)` with 24 random bits: `(x >> 40) · 2⁻²⁴`.
    #[inline]
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[−1, 1)` with 24 random bits: `(x >> 40) · 2⁻²³ − 1`.
    #[inline]
    pub fn signed_unit_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32) * (2.0 / (1u64 << 24) as f32) - 1.0
    }

    /// Uniform in `[lo, hi)`: `lo + (hi − lo) · u`, `u` from [`unit_f32`](Self::unit_f32).
    #[inline]
    pub fn range_f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit_f32()
    }

    /// Uniform in `[0, 1)` with 53 random bits: `(x >> 11) · 2⁻⁵³`.
    #[inline]
    pub fn unit_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform integer in `0..n` by multiply-shift (`⌊x · n / 2⁶⁴⌋`; bias below `n / 2⁶⁴`);
    /// `0` for `n = 0`.
    #[inline]
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Standard normal (Box–Muller with `f32` uniforms; platform `ln`/`cos`).
    pub fn normal(&mut self) -> f32 {
        let u1 = f64::from(self.unit_f32()).max(1e-12);
        let u2 = f64::from(self.unit_f32());
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// A trit: `0` with probability `zero_fraction`, else `±1` with equal odds.
    pub fn trit(&mut self, zero_fraction: f64) -> i8 {
        if self.unit_f64() < zero_fraction {
            0
        } else if self.next_u64() & 1 == 0 {
            1
        } else {
            -1
        }
    }
}

/// xoshiro256++: 256 bits of state, period 2²⁵⁶ − 1, seeded by SplitMix64.
#[derive(Debug, Clone)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// The generator for `seed` (its state is four SplitMix64 outputs, never all zero).
    pub fn new(seed: u64) -> Self {
        let mut sm = SplitMix64::new(seed);
        let s = [sm.next_u64(), sm.next_u64(), sm.next_u64(), sm.next_u64()];
        Self { s }
    }

    /// The generator of stream `index` under `seed`: `Rng::new(derive_seed(seed, index))`.
    pub fn stream(seed: u64, index: u64) -> Self {
        Self::new(derive_seed(seed, index))
    }

    /// The next 64 random bits: `rotl(s0 + s3, 23) + s0`, then the xoshiro state update.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let [s0, s1, s2, s3] = self.s;
        let result = s0.wrapping_add(s3).rotate_left(23).wrapping_add(s0);
        let t = s1 << 17;
        let mut s = [s0, s1, s2 ^ s0, s3 ^ s1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        self.s = s;
        result
    }

    /// The next 32 random bits (the high half of [`next_u64`](Self::next_u64)).
    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A uniform integer in `0..n` (Lemire's multiply-shift with rejection; exact, `n ≥ 1`).
    ///
    /// Returns `0` for `n = 0`.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }

    /// A uniform `f64` in `[0, 1)` with 53 random bits: `(x >> 11) · 2⁻⁵³`.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// A standard normal sample (Box–Muller, one of the pair; uses platform `ln`/`cos`).
    pub fn normal(&mut self) -> f64 {
        // u1 in (0, 1] so that ln(u1) is finite.
        let u1 = 1.0 - self.next_f64();
        let u2 = self.next_f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// Fisher–Yates shuffle of `items` (uses [`below`](Self::below), so it is bit-exact).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}
