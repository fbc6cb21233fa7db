//! A tiny deterministic generator (SplitMix64) for test inputs, so conformance checks need no
//! extra dependency and every run of a seed sees the same data.

/// SplitMix64: `z = (state += φ); z = (z ⊕ z ≫ 30) · c₁; z = (z ⊕ z ≫ 27) · c₂; z ⊕ z ≫ 31`.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 24 random bits.
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    /// Uniform in `[lo, hi)`.
    pub fn range_f32(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit_f32()
    }

    /// Uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        ((u128::from(self.next_u64()) * n as u128) >> 64) as usize
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = (self.unit_f32() as f64).max(1e-12);
        let u2 = self.unit_f32() as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    /// A trit: `0` with probability `zero_fraction`, else `±1` with equal odds.
    pub fn trit(&mut self, zero_fraction: f64) -> i8 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        if u < zero_fraction {
            0
        } else if self.next_u64() & 1 == 0 {
            1
        } else {
            -1
        }
    }
}
