//! Naive `Vec<i8>` / `Vec<i32>` implementations: the test oracles and the benchmark baseline.
//!
//! One `i8` per component (`±1`, or `−1/0/+1`), one multiply or add per component — what a
//! straightforward dense implementation of the same operations does.

use crate::{BinaryHv, TernaryHv};

/// A binary vector as `±1` bytes (bit `1` = `+1`).
pub fn binary_to_i8(v: &BinaryHv) -> Vec<i8> {
    v.to_bits()
        .iter()
        .map(|&b| if b { 1 } else { -1 })
        .collect()
}

/// A ternary vector as `−1/0/+1` bytes.
pub fn ternary_to_i8(v: &TernaryHv) -> Vec<i8> {
    v.to_trits()
}

/// Elementwise product `aᵢ·bᵢ` (the ternary/MAP bind; the binary XOR bind is its negation).
pub fn mul_i8(a: &[i8], b: &[i8]) -> Vec<i8> {
    a.iter().zip(b).map(|(&x, &y)| x * y).collect()
}

/// The binary bind on `±1` bytes: `(a ⊕ b)^ = −âᵢ·b̂ᵢ`.
pub fn xor_bind_i8(a: &[i8], b: &[i8]) -> Vec<i8> {
    a.iter().zip(b).map(|(&x, &y)| -(x * y)).collect()
}

/// Dot product `Σ aᵢbᵢ`: `i32` partial sums over chunks of `2²⁴` (so they cannot overflow and
/// the loop vectorises), added in `i64`.
pub fn dot_i8(a: &[i8], b: &[i8]) -> i64 {
    a.chunks(1 << 24)
        .zip(b.chunks(1 << 24))
        .map(|(x, y)| {
            let s: i32 = x
                .iter()
                .zip(y)
                .map(|(&p, &q)| i32::from(p) * i32::from(q))
                .sum();
            i64::from(s)
        })
        .sum()
}

/// Count bundle `Cᵢ = Σⱼ xⱼ,ᵢ`.
pub fn bundle_i8(items: &[Vec<i8>], dim: usize) -> Vec<i32> {
    let mut acc = vec![0i32; dim];
    for x in items {
        for (a, &v) in acc.iter_mut().zip(x) {
            *a += i32::from(v);
        }
    }
    acc
}

/// Cyclic shift: output `(i + k) mod D` = input `i`.
pub fn permute_i8<T: Copy>(a: &[T], k: isize) -> Vec<T> {
    let d = a.len();
    if d == 0 {
        return Vec::new();
    }
    let shift = (k as i128).rem_euclid(d as i128) as usize;
    let mut out = a.to_vec();
    for (i, &v) in a.iter().enumerate() {
        out[(i + shift) % d] = v;
    }
    out
}

/// Majority of counts with ties taken from `ties` (`±1` bytes).
pub fn majority_i8(sums: &[i32], ties: &[i8]) -> Vec<i8> {
    sums.iter()
        .zip(ties)
        .map(|(&c, &t)| match c.signum() {
            1 => 1,
            -1 => -1,
            _ => t,
        })
        .collect()
}

/// `Σᵢ Cᵢ·vᵢ` of a count vector and a `±1/0` vector (in `i64`: counts may be as large as
/// `±i32::MAX`).
pub fn count_dot_i8(sums: &[i32], v: &[i8]) -> i64 {
    sums.iter()
        .zip(v)
        .map(|(&c, &x)| i64::from(c) * i64::from(x))
        .sum()
}
