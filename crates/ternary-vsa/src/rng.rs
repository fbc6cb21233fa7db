//! Small self-contained pseudo-random generators, so that every seed gives the same vectors on
//! every platform and every version of the dependencies.
//!
//! - [`SplitMix64`] (Steele, Lea & Flood 2014) expands a `u64` seed;
//! - [`Rng`] is xoshiro256++ (Blackman & Vigna 2019) seeded by four SplitMix64 outputs;
//! - [`derive_seed`] gives independent streams `(seed, index)`, so item `i` of a codebook does
//!   not depend on how many items there are or in which order (or thread) they are made.
//!
//! All integer outputs are bit-exact across platforms. [`Rng::normal`] uses `ln`, `sqrt`,
//! `cos` from the platform's math library and is reproducible only up to their rounding.

/// The 64-bit golden-ratio increment of SplitMix64, `⌊2⁶⁴ / φ⌋` made odd.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

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
