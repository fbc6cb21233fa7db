//! Algebra of binary and ternary hypervectors against the naive `Vec<i8>` reference, on fresh
//! random inputs and edge dimensions.

use ternary_core::rng::{Rng, SplitMix64, derive_seed};
use ternary_vsa::reference as r;
use ternary_vsa::{BinaryHv, CountBundle, Hypervector, TernaryHv, VsaError, basis};

const DIMS: [usize; 11] = [1, 31, 32, 33, 63, 64, 65, 100, 576, 1536, 10_007];
const SHIFTS: [isize; 12] = [
    0,
    1,
    -1,
    5,
    31,
    32,
    33,
    63,
    64,
    -65,
    1_000_003,
    isize::MIN + 1,
];

fn padding_ok(words: &[u32], dim: usize) -> bool {
    BinaryHv::from_words(dim, words.to_vec()).is_ok()
}

fn ternary_ok(v: &TernaryHv) -> bool {
    TernaryHv::from_planes(v.dim(), v.plus().to_vec(), v.minus().to_vec()).is_ok()
}

#[test]
fn rng_streams_are_pinned_across_platforms() {
    // Reference values from an independent Python implementation of the same algorithms.
    let mut sm = SplitMix64::new(0);
    assert_eq!(
        [sm.next_u64(), sm.next_u64(), sm.next_u64()],
        [0xe220a8397b1dcdaf, 0x6e789e6aa1b965f4, 0x06c45d188009454f]
    );
    let mut x = Rng::new(0);
    assert_eq!(
        [x.next_u64(), x.next_u64(), x.next_u64()],
        [0x53175d61490b23df, 0x61da6f3dc380d507, 0x5c0fdf91ec9a7bfc]
    );
    assert_eq!(derive_seed(42, 0), 0x4579b960bb007f46);
    assert_eq!(derive_seed(42, 7), 0x993166b01c00de09);
    let mut x = Rng::new(5);
    let below: Vec<u64> = (0..8).map(|_| x.below(10)).collect();
    assert_eq!(below, [2, 6, 0, 0, 5, 7, 4, 0]);
    let v = BinaryHv::random(70, 42).unwrap();
    assert_eq!(v.words(), &[0x4476689f, 0xd0764d4f, 0x11]);
    // Codebook item i does not depend on the codebook size.
    let a = basis::random_binary(3, 100, 9).unwrap();
    let b = basis::random_binary(10, 100, 9).unwrap();
    assert_eq!(a[..], b[..3]);
    assert_ne!(a[0], a[1]);
}

#[test]
fn binary_bind_is_xor_self_inverse_and_matches_reference() {
    for (t, &dim) in DIMS.iter().enumerate() {
        let a = BinaryHv::random(dim, 2 * t as u64).unwrap();
        let b = BinaryHv::random(dim, 2 * t as u64 + 1).unwrap();
        let ab = a.bind(&b).unwrap();
        assert!(padding_ok(ab.words(), dim));
        assert_eq!(ab.bind(&b).unwrap(), a, "D={dim}");
        assert_eq!(ab, b.bind(&a).unwrap());
        let want = r::xor_bind_i8(&r::binary_to_i8(&a), &r::binary_to_i8(&b));
        assert_eq!(r::binary_to_i8(&ab), want, "D={dim}");
        // Bound vectors are dissimilar to their inputs (|cos| small for large D).
        if dim >= 1536 {
            assert!(ab.cosine(&a).unwrap().abs() < 0.1);
        }
    }
}

#[test]
fn ternary_bind_is_the_product_and_self_inverse_on_the_support() {
    for (t, &dim) in DIMS.iter().enumerate() {
        let a = TernaryHv::random_sparse(dim, 0.6, 10 + t as u64).unwrap();
        let b = TernaryHv::random_sparse(dim, 0.7, 50 + t as u64).unwrap();
        let ab = a.bind(&b).unwrap();
        assert!(ternary_ok(&ab));
        let (ai, bi) = (r::ternary_to_i8(&a), r::ternary_to_i8(&b));
        assert_eq!(r::ternary_to_i8(&ab), r::mul_i8(&ai, &bi), "D={dim}");
        // (a ⊙ b) ⊙ b = a ⊙ |b|.
        let abs_b: Vec<i8> = bi.iter().map(|x| x.abs()).collect();
        assert_eq!(
            r::ternary_to_i8(&ab.bind(&b).unwrap()),
            r::mul_i8(&ai, &abs_b)
        );
        // Bipolar keys are exactly self-inverse.
        let k = TernaryHv::random_bipolar(dim, 90 + t as u64).unwrap();
        assert_eq!(a.bind(&k).unwrap().bind(&k).unwrap(), a);
    }
}

#[test]
fn dots_match_reference_on_edge_dimensions() {
    for (t, &dim) in DIMS.iter().enumerate() {
        let s = 100 * t as u64;
        let (a, b) = (
            BinaryHv::random(dim, s).unwrap(),
            BinaryHv::random(dim, s + 1).unwrap(),
        );
        let want = r::dot_i8(&r::binary_to_i8(&a), &r::binary_to_i8(&b));
        assert_eq!(a.dot(&b).unwrap(), want, "D={dim}");
        assert_eq!(a.hamming(&b).unwrap() as i64, (dim as i64 - want) / 2);
        assert_eq!(a.dot(&a).unwrap(), dim as i64);
        let (x, y) = (
            TernaryHv::random_sparse(dim, 0.5, s + 2).unwrap(),
            TernaryHv::random_sparse(dim, 0.8, s + 3).unwrap(),
        );
        let want = r::dot_i8(&r::ternary_to_i8(&x), &r::ternary_to_i8(&y));
        assert_eq!(x.dot(&y).unwrap(), want, "D={dim}");
        assert_eq!(x.dot(&x).unwrap(), x.nnz() as i64);
        // The bipolar view of a binary vector has the same dot.
        assert_eq!(
            a.to_bipolar().dot(&b.to_bipolar()).unwrap(),
            a.dot(&b).unwrap()
        );
        assert_eq!(
            Hypervector::sum(&a),
            r::binary_to_i8(&a)
                .iter()
                .map(|&v| i64::from(v))
                .sum::<i64>()
        );
    }
}

#[test]
fn permutation_matches_reference_round_trips_and_composes() {
    for (t, &dim) in DIMS.iter().enumerate() {
        let a = BinaryHv::random(dim, 7 + t as u64).unwrap();
        let x = TernaryHv::random_sparse(dim, 0.5, 70 + t as u64).unwrap();
        let c = {
            let mut c = CountBundle::new(dim).unwrap();
            let _ = c.add(&a).unwrap();
            let _ = c.add(&x.bind(&x).unwrap()).unwrap();
            c
        };
        for &k in &SHIFTS {
            let pa = a.permute(k);
            assert!(padding_ok(pa.words(), dim), "D={dim} k={k}");
            assert_eq!(
                r::binary_to_i8(&pa),
                r::permute_i8(&r::binary_to_i8(&a), k),
                "D={dim} k={k}"
            );
            assert_eq!(pa.inverse_permute(k), a, "D={dim} k={k}");
            let px = x.permute(k);
            assert!(ternary_ok(&px));
            assert_eq!(
                r::ternary_to_i8(&px),
                r::permute_i8(&r::ternary_to_i8(&x), k)
            );
            assert_eq!(px.inverse_permute(k), x);
            assert_eq!(c.permute(k).sums(), &r::permute_i8(c.sums(), k)[..]);
            // ρᵃ ρᵇ = ρᵃ⁺ᵇ, and ρᴰ = identity.
            assert_eq!(pa.permute(3), a.permute(k.wrapping_add(3)));
        }
        assert_eq!(a.permute(dim as isize), a);
    }
}

#[test]
fn permutation_distributes_over_bind_and_bundle() {
    let dim = 1000;
    let a = BinaryHv::random(dim, 1).unwrap();
    let b = BinaryHv::random(dim, 2).unwrap();
    assert_eq!(
        a.bind(&b).unwrap().permute(17),
        a.permute(17).bind(&b.permute(17)).unwrap()
    );
    let mut c = CountBundle::new(dim).unwrap();
    let mut cp = CountBundle::new(dim).unwrap();
    for v in basis::random_binary(9, dim, 3).unwrap() {
        let _ = c.add(&v).unwrap();
        let _ = cp.add(&v.permute(-5)).unwrap();
    }
    assert_eq!(c.permute(-5).sums(), cp.sums());
    // A permuted random vector is quasi-orthogonal to the original (|cos| < 5/√D w.h.p.).
    let big = BinaryHv::random(10_000, 4).unwrap();
    assert!(big.permute(1).cosine(&big).unwrap().abs() < 0.05);
}

#[test]
fn count_bundle_readouts_match_reference() {
    for (t, &dim) in DIMS.iter().enumerate() {
        for n in [1usize, 2, 5, 6] {
            let items = basis::random_binary(n, dim, 300 + t as u64).unwrap();
            let mut c = CountBundle::new(dim).unwrap();
            let load = c.add_all(&items).unwrap();
            assert_eq!(load, ternary_vsa::Load::Within { items: n });
            let ref_items: Vec<Vec<i8>> = items.iter().map(r::binary_to_i8).collect();
            let sums = r::bundle_i8(&ref_items, dim);
            assert_eq!(c.sums(), &sums[..], "D={dim} n={n}");
            let ties = r::binary_to_i8(&BinaryHv::random(dim, 77).unwrap());
            let maj = c.majority(77);
            assert!(padding_ok(maj.words(), dim));
            assert_eq!(
                r::binary_to_i8(&maj),
                r::majority_i8(&sums, &ties),
                "D={dim} n={n}"
            );
            for theta in [0u32, 1, 2] {
                let tv = c.threshold(theta);
                assert!(ternary_ok(&tv));
                let want: Vec<i8> = sums
                    .iter()
                    .map(|&s| {
                        if s > theta as i32 {
                            1
                        } else if s < -(theta as i32) {
                            -1
                        } else {
                            0
                        }
                    })
                    .collect();
                assert_eq!(tv.to_trits(), want);
            }
            // Subtracting everything returns to zero.
            for v in &items {
                let _ = c.subtract(v).unwrap();
            }
            assert!(c.sums().iter().all(|&s| s == 0));
            assert_eq!(c.items(), 0);
        }
        // Ternary items bundle as their trits.
        let xs = basis::random_sparse(4, dim, 0.5, 900 + t as u64).unwrap();
        let mut c = CountBundle::new(dim).unwrap();
        let _ = c.add_all(&xs).unwrap();
        let ref_items: Vec<Vec<i8>> = xs.iter().map(r::ternary_to_i8).collect();
        assert_eq!(c.sums(), &r::bundle_i8(&ref_items, dim)[..]);
        let y = TernaryHv::random_sparse(dim, 0.9, 5).unwrap();
        assert_eq!(
            c.dot(&y).unwrap(),
            r::count_dot_i8(c.sums(), &r::ternary_to_i8(&y))
        );
        // Merging two bundles equals bundling everything; subtracting ternary items undoes them.
        let more = basis::random_binary(3, dim, 950 + t as u64).unwrap();
        let mut other = CountBundle::new(dim).unwrap();
        let _ = other.add_all(&more).unwrap();
        let mut merged = c.clone();
        assert_eq!(
            merged.merge(&other).unwrap(),
            ternary_vsa::Load::Within { items: 7 }
        );
        let mut all = c.clone();
        let _ = all.add_all(&more).unwrap();
        assert_eq!(merged.sums(), all.sums());
        for x in &xs {
            let _ = c.subtract(x).unwrap();
        }
        assert!(c.sums().iter().all(|&s| s == 0), "D={dim}");
    }
}

#[test]
fn bulk_bundling_equals_one_by_one() {
    for (t, &dim) in DIMS.iter().enumerate() {
        for n in [0usize, 1, 7, 8, 9, 16, 17, 63, 300] {
            let items = basis::random_binary(n, dim, 500 + t as u64).unwrap();
            let mut one = CountBundle::from_sums(vec![3; dim], 3).unwrap();
            let _ = one.add_all(&items).unwrap();
            let mut bulk = CountBundle::from_sums(vec![3; dim], 3).unwrap();
            let load = bulk.add_many(&items).unwrap();
            assert_eq!(load, ternary_vsa::Load::Within { items: n + 3 });
            assert_eq!(bulk.sums(), one.sums(), "D={dim} n={n}");
            let ref_items: Vec<Vec<i8>> = items.iter().map(r::binary_to_i8).collect();
            let want: Vec<i32> = r::bundle_i8(&ref_items, dim)
                .iter()
                .map(|c| c + 3)
                .collect();
            assert_eq!(bulk.sums(), &want[..]);
        }
        let xs = basis::random_sparse(9, dim, 0.5, 600 + t as u64).unwrap();
        let (mut one, mut bulk) = (
            CountBundle::new(dim).unwrap(),
            CountBundle::new(dim).unwrap(),
        );
        let _ = one.add_all(&xs).unwrap();
        let _ = bulk.add_many(&xs).unwrap();
        assert_eq!(bulk.sums(), one.sums());
    }
    // A strict cap is checked before anything is added.
    let limit = ternary_vsa::CapacityLimit {
        max_items: 10,
        on_exceed: ternary_vsa::OnExceed::Error,
    };
    let mut capped = CountBundle::with_limit(64, limit).unwrap();
    let items = basis::random_binary(11, 64, 1).unwrap();
    assert!(matches!(
        capped.add_many(&items),
        Err(VsaError::CapacityExceeded { items: 11, cap: 10 })
    ));
    assert!(capped.sums().iter().all(|&c| c == 0));
    assert!(capped.add_many(&items[..10]).is_ok());
}

#[test]
fn bind_distributes_over_bundle_as_the_model_says() {
    let dim = 2049;
    let key = BinaryHv::random(dim, 1).unwrap();
    for n in [7usize, 8] {
        let items = basis::random_binary(n, dim, 40 + n as u64).unwrap();
        let mut c = CountBundle::new(dim).unwrap();
        let mut bound = CountBundle::new(dim).unwrap();
        for v in &items {
            let _ = c.add(v).unwrap();
            let _ = bound.add(&v.bind(&key).unwrap()).unwrap();
        }
        // Counts: bind(k, Σ x̂ⱼ) = Σ bind(k, x̂ⱼ), exactly (negate where the key bit is 1).
        assert_eq!(c.bind(&key).unwrap().sums(), bound.sums());
        // Majority: maj(bind(k, xⱼ)) = bind(k, maj(xⱼ)) except at ties, where the seeded
        // tie-break bit is not bound.
        let lhs = bound.majority(9);
        let rhs = c.majority(9).bind(&key).unwrap();
        let ties = BinaryHv::random(dim, 9).unwrap();
        let mut tie_count = 0;
        for i in 0..dim {
            if c.sums()[i] == 0 {
                tie_count += 1;
                assert_eq!(lhs.get(i), ties.get(i));
                assert_eq!(rhs.get(i), Some(ties.get(i).unwrap() ^ key.get(i).unwrap()));
            } else {
                assert_eq!(lhs.get(i), rhs.get(i), "n={n} i={i}");
            }
        }
        assert_eq!(tie_count > 0, n % 2 == 0, "ties occur exactly for even n");
    }
    // Ternary keys: t ⊙ Σ xⱼ = Σ t ⊙ xⱼ.
    let t = TernaryHv::random_sparse(dim, 0.7, 3).unwrap();
    let xs = basis::random_sparse(5, dim, 0.8, 4).unwrap();
    let mut c = CountBundle::new(dim).unwrap();
    let mut bound = CountBundle::new(dim).unwrap();
    for x in &xs {
        let _ = c.add(x).unwrap();
        let _ = bound.add(&x.bind(&t).unwrap()).unwrap();
    }
    assert_eq!(c.bind(&t).unwrap().sums(), bound.sums());
    // Unbinding a count bundle recovers the stored value's similarity: ⟨bind(k, C), v⟩ = ⟨C, bind(k, v)⟩.
    let v = BinaryHv::random(dim, 5).unwrap();
    let mut c = CountBundle::new(dim).unwrap();
    let _ = c.add(&key.bind(&v).unwrap()).unwrap();
    assert_eq!(c.bind(&key).unwrap().dot(&v).unwrap(), dim as i64);
}

/// Dots of independent random vectors: mean 0, variance D (binary), D·d² (ternary density d).
/// 4000 pairs: the mean is checked at 5 standard errors, the variance at ±12% (5σ of the sample
/// variance, whose relative spread is √(2/n) ≈ 2.2%).
#[test]
fn similarity_of_random_vectors_concentrates_with_the_right_variance() {
    let n = 4000usize;
    for &(dim, density) in &[(10_000usize, 1.0f64), (1001, 1.0), (10_000, 0.3)] {
        let dots: Vec<f64> = (0..n as u64)
            .map(|i| {
                if density == 1.0 {
                    let a = BinaryHv::random(dim, derive_seed(1, i)).unwrap();
                    let b = BinaryHv::random(dim, derive_seed(2, i)).unwrap();
                    a.dot(&b).unwrap() as f64
                } else {
                    let a = TernaryHv::random_sparse(dim, density, derive_seed(3, i)).unwrap();
                    let b = TernaryHv::random_sparse(dim, density, derive_seed(4, i)).unwrap();
                    a.dot(&b).unwrap() as f64
                }
            })
            .collect();
        let var_model = dim as f64 * density * density;
        let mean = dots.iter().sum::<f64>() / n as f64;
        let var = dots.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        assert!(
            mean.abs() < 5.0 * (var_model / n as f64).sqrt(),
            "D={dim}: mean {mean}"
        );
        assert!(
            (var / var_model - 1.0).abs() < 0.12,
            "D={dim} d={density}: var {var} vs {var_model}"
        );
    }
}

#[test]
fn level_and_thermometer_similarities_are_exact() {
    for &(levels, dim) in &[
        (2usize, 10usize),
        (5, 1000),
        (11, 10_000),
        (1, 64),
        (100, 33),
    ] {
        let lv = basis::level_binary(levels, dim, 5).unwrap();
        let th = basis::thermometer_binary(levels, dim).unwrap();
        assert_eq!(lv.len(), levels);
        let f = |i: usize| {
            if levels == 1 {
                0
            } else {
                i * (dim / 2) / (levels - 1)
            }
        };
        let t = |i: usize| {
            if levels == 1 {
                0
            } else {
                i * dim / (levels - 1)
            }
        };
        for i in 0..levels {
            assert!(padding_ok(lv[i].words(), dim));
            assert_eq!(th[i].count_ones() as usize, t(i));
            for j in 0..levels {
                assert_eq!(
                    lv[i].hamming(&lv[j]).unwrap() as usize,
                    f(i).abs_diff(f(j)),
                    "L={levels} D={dim}"
                );
                assert_eq!(
                    th[i].dot(&th[j]).unwrap(),
                    dim as i64 - 2 * t(i).abs_diff(t(j)) as i64
                );
            }
        }
        assert_eq!(
            lv,
            basis::level_binary(levels, dim, 5).unwrap(),
            "reproducible"
        );
    }
    assert_ne!(
        basis::level_binary(3, 100, 1).unwrap(),
        basis::level_binary(3, 100, 2).unwrap()
    );
}

#[test]
fn bad_input_gives_clear_errors() {
    assert!(matches!(
        BinaryHv::zeros(0),
        Err(VsaError::InvalidArgument(_))
    ));
    assert!(matches!(
        BinaryHv::from_bits(&[]),
        Err(VsaError::InvalidArgument(_))
    ));
    assert!(matches!(
        CountBundle::new(0),
        Err(VsaError::InvalidArgument(_))
    ));
    let (a, b) = (
        BinaryHv::random(64, 1).unwrap(),
        BinaryHv::random(65, 1).unwrap(),
    );
    assert!(matches!(
        a.bind(&b),
        Err(VsaError::DimensionMismatch {
            expected: 64,
            got: 65
        })
    ));
    assert!(matches!(a.dot(&b), Err(VsaError::DimensionMismatch { .. })));
    let mut c = CountBundle::new(64).unwrap();
    assert!(matches!(c.add(&b), Err(VsaError::DimensionMismatch { .. })));
    assert!(c.bind(&b).is_err());
    // Planes: wrong length, padding bit, both bits set.
    assert!(matches!(
        BinaryHv::from_words(33, vec![0]),
        Err(VsaError::InvalidPlanes(_))
    ));
    assert!(matches!(
        BinaryHv::from_words(33, vec![0, 2]),
        Err(VsaError::InvalidPlanes(_))
    ));
    assert!(BinaryHv::from_words(33, vec![u32::MAX, 1]).is_ok());
    assert!(matches!(
        TernaryHv::from_planes(40, vec![1, 0], vec![1, 0]),
        Err(VsaError::InvalidPlanes(_))
    ));
    assert!(matches!(
        TernaryHv::from_planes(40, vec![0, 1 << 8], vec![0, 0]),
        Err(VsaError::InvalidPlanes(_))
    ));
    assert!(matches!(
        TernaryHv::from_trits(&[1, 0, 2]),
        Err(VsaError::InvalidArgument(_))
    ));
    assert!(TernaryHv::random_sparse(10, 1.5, 0).is_err());
    assert!(TernaryHv::random_sparse(10, f64::NAN, 0).is_err());
    assert!(basis::level_binary(0, 10, 0).is_err());
    assert!(basis::thermometer_binary(0, 10).is_err());
    let mut v = BinaryHv::zeros(10).unwrap();
    assert!(v.set(10, true).is_err());
    assert_eq!(v.get(10), None);
    let mut t = TernaryHv::zeros(10).unwrap();
    assert!(t.set(3, -2).is_err());
    assert!(t.set(3, -1).is_ok());
    assert_eq!(t.get(3), Some(-1));
}
