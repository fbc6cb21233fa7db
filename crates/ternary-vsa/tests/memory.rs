//! Item memory and bit-sliced count dots against brute-force references.

use ternary_core::rng::Rng;
use ternary_vsa::cleanup::{self, ExplainAway};
use ternary_vsa::reference as r;
use ternary_vsa::{
    BinaryHv, CountBundle, ItemMemory, Match, SlicedCounts, TernaryHv, VsaError, basis,
};

const DIMS: [usize; 10] = [1, 31, 32, 33, 63, 64, 65, 576, 1536, 10_000];

/// Brute-force top-k: sort all `(similarity desc, index asc)`.
fn brute_top_k(sims: &[i64], k: usize) -> Vec<Match> {
    let mut all: Vec<Match> = sims
        .iter()
        .enumerate()
        .map(|(index, &similarity)| Match { index, similarity })
        .collect();
    all.sort_by(|a, b| b.similarity.cmp(&a.similarity).then(a.index.cmp(&b.index)));
    all.truncate(k);
    all
}

fn random_counts(dim: usize, spread: i32, seed: u64) -> Vec<i32> {
    let mut rng = Rng::new(seed);
    (0..dim)
        .map(|_| rng.below(2 * spread as u64 + 1) as i32 - spread)
        .collect()
}

#[test]
fn sliced_dots_are_exact_for_any_counts() {
    for (t, &dim) in DIMS.iter().enumerate() {
        let seed = 10 * t as u64;
        let mut cases = vec![
            random_counts(dim, 40, seed),
            random_counts(dim, 1, seed + 1),
            vec![7; dim],
            vec![-3; dim],
        ];
        let mut extreme = random_counts(dim, 5, seed + 2);
        extreme[0] = -i32::MAX;
        extreme[dim - 1] = i32::MAX;
        cases.push(extreme);
        let key = BinaryHv::random(dim, seed + 3).unwrap();
        let c = BinaryHv::random(dim, seed + 4).unwrap();
        let t3 = TernaryHv::random_sparse(dim, 0.6, seed + 5).unwrap();
        let (ci, ti) = (r::binary_to_i8(&c), r::ternary_to_i8(&t3));
        for values in cases {
            let s = SlicedCounts::from_values(&values).unwrap();
            for i in [0, dim / 2, dim - 1] {
                assert_eq!(s.get(i), Some(i64::from(values[i])));
            }
            assert_eq!(s.dot(&c).unwrap(), r::count_dot_i8(&values, &ci), "D={dim}");
            assert_eq!(
                s.dot(&t3).unwrap(),
                r::count_dot_i8(&values, &ti),
                "D={dim}"
            );
            // Key-bound form equals slicing the bound counts.
            let bound = CountBundle::from_sums(values.clone(), 1)
                .unwrap()
                .bind(&key)
                .unwrap();
            let sb = s.bind(&key).unwrap();
            assert_eq!(sb.get(dim - 1), Some(i64::from(bound.sums()[dim - 1])));
            assert_eq!(
                sb.dot(&c).unwrap(),
                r::count_dot_i8(bound.sums(), &ci),
                "D={dim}"
            );
            assert_eq!(
                sb.dot(&t3).unwrap(),
                r::count_dot_i8(bound.sums(), &ti),
                "D={dim}"
            );
            // Binding twice with different keys composes (signs XOR).
            let key2 = BinaryHv::random(dim, seed + 6).unwrap();
            let twice = bound.bind(&key2).unwrap();
            assert_eq!(
                sb.bind(&key2).unwrap().dot(&c).unwrap(),
                r::count_dot_i8(twice.sums(), &ci)
            );
        }
    }
    assert!(SlicedCounts::from_values(&[]).is_err());
    // i32::MIN slices exactly, but a count bundle refuses it (its negation overflows).
    let values = [i32::MIN, 0, i32::MAX];
    let c = BinaryHv::from_bits(&[true, false, false]).unwrap();
    let s = SlicedCounts::from_values(&values).unwrap();
    assert_eq!(
        s.dot(&c).unwrap(),
        i64::from(i32::MIN) - i64::from(i32::MAX)
    );
    assert_eq!(
        s.bind(&c).unwrap().dot(&c).unwrap(),
        -i64::from(i32::MIN) - i64::from(i32::MAX)
    );
    assert!(CountBundle::from_sums(values.to_vec(), 1).is_err());
    // Counts never overflow: a bundle at ±i32::MAX refuses another addition.
    let mut full = CountBundle::from_sums(vec![i32::MAX, 0], 1).unwrap();
    assert!(full.add(&BinaryHv::zeros(2).unwrap()).is_err());
    assert!(full.subtract(&BinaryHv::zeros(2).unwrap()).is_err());
    let other = CountBundle::from_sums(vec![0, 1], 1).unwrap();
    assert!(full.merge(&other).is_err());
}

#[test]
fn top_k_matches_brute_force_for_binary_and_ternary() {
    for (t, &dim) in DIMS.iter().enumerate() {
        let m = if dim >= 1536 { 300 } else { 40 };
        let mut items = basis::random_binary(m, dim, 100 + t as u64).unwrap();
        // Duplicates exercise the tie order (lower index first).
        items[m - 1] = items[3].clone();
        let mem = ItemMemory::new(items.clone()).unwrap();
        let queries = basis::random_binary(9, dim, 200 + t as u64).unwrap();
        let batch = mem.top_k_batch(&queries, 5).unwrap();
        for (q, got_batch) in queries.iter().zip(&batch) {
            let sims: Vec<i64> = items
                .iter()
                .map(|c| r::dot_i8(&r::binary_to_i8(q), &r::binary_to_i8(c)))
                .collect();
            for k in [0, 1, 2, 5, m, m + 3] {
                assert_eq!(
                    mem.top_k(q, k).unwrap(),
                    brute_top_k(&sims, k),
                    "D={dim} k={k}"
                );
            }
            assert_eq!(got_batch, &brute_top_k(&sims, 5));
            assert_eq!(mem.nearest(q).unwrap(), brute_top_k(&sims, 1)[0]);
        }
        // An item is its own nearest neighbour (the lower index among duplicates).
        if dim >= 64 {
            assert_eq!(mem.nearest(&items[m - 1]).unwrap().index, 3);
        }

        let tern = basis::random_sparse(m, dim, 0.5, 300 + t as u64).unwrap();
        let tmem = ItemMemory::new(tern.clone()).unwrap();
        let q = TernaryHv::random_sparse(dim, 0.7, 7).unwrap();
        let sims: Vec<i64> = tern
            .iter()
            .map(|c| r::dot_i8(&r::ternary_to_i8(&q), &r::ternary_to_i8(c)))
            .collect();
        assert_eq!(tmem.top_k(&q, 4).unwrap(), brute_top_k(&sims, 4), "D={dim}");
    }
}

#[test]
fn count_queries_match_brute_force_serial_and_parallel() {
    // 4 threads whatever the host has: the parallel path needs more than one.
    let four = rayon::ThreadPoolBuilder::new()
        .num_threads(4)
        .build()
        .unwrap();
    four.install(count_queries_match_brute_force);
}

fn count_queries_match_brute_force() {
    // M·words large enough to take the parallel path, and small ones for the serial path.
    for &(dim, m) in &[(10_000usize, 2_000usize), (65, 30), (1, 3)] {
        let items = basis::random_binary(m, dim, 5).unwrap();
        let mem = ItemMemory::new(items.clone()).unwrap();
        let queries: Vec<CountBundle> = (0..3)
            .map(|s| CountBundle::from_sums(random_counts(dim, 30, s), 10).unwrap())
            .collect();
        let batch = mem.top_k_counts_batch(&queries, 3).unwrap();
        for (q, got_batch) in queries.iter().zip(&batch) {
            let sims: Vec<i64> = items
                .iter()
                .map(|c| r::count_dot_i8(q.sums(), &r::binary_to_i8(c)))
                .collect();
            assert_eq!(
                mem.top_k_counts(q, 3).unwrap(),
                brute_top_k(&sims, 3),
                "D={dim} M={m}"
            );
            assert_eq!(got_batch, &brute_top_k(&sims, 3));
        }
        // Ternary codebook with count queries.
        let tern = basis::random_bipolar(m.min(200), dim, 6).unwrap();
        let tmem = ItemMemory::new(tern.clone()).unwrap();
        let sims: Vec<i64> = tern
            .iter()
            .map(|c| r::count_dot_i8(queries[0].sums(), &r::ternary_to_i8(c)))
            .collect();
        assert_eq!(
            tmem.top_k_counts(&queries[0], 2).unwrap(),
            brute_top_k(&sims, 2)
        );
    }
}

#[test]
fn item_memory_rejects_bad_input() {
    assert!(matches!(
        ItemMemory::<BinaryHv>::new(vec![]),
        Err(VsaError::InvalidArgument(_))
    ));
    let mixed = vec![
        BinaryHv::random(64, 1).unwrap(),
        BinaryHv::random(65, 2).unwrap(),
    ];
    assert!(matches!(
        ItemMemory::new(mixed),
        Err(VsaError::DimensionMismatch { .. })
    ));
    let mem = ItemMemory::new(basis::random_binary(4, 64, 0).unwrap()).unwrap();
    let wrong = BinaryHv::random(63, 0).unwrap();
    assert!(mem.nearest(&wrong).is_err());
    assert!(mem.top_k_batch(std::slice::from_ref(&wrong), 1).is_err());
    assert!(mem.nearest_counts(&CountBundle::new(63).unwrap()).is_err());
    assert_eq!(
        mem.top_k(&BinaryHv::random(64, 9).unwrap(), 0).unwrap(),
        vec![]
    );
}

#[test]
fn decode_set_recovers_a_small_bundle_of_items() {
    let (dim, m) = (4096, 200);
    let mem = ItemMemory::new(basis::random_binary(m, dim, 8).unwrap()).unwrap();
    let chosen = [3usize, 17, 42, 99, 150, 151, 199, 0];
    let mut c = CountBundle::new(dim).unwrap();
    for &i in &chosen {
        let _ = c.add(mem.get(i).unwrap()).unwrap();
    }
    let mut found: Vec<usize> = cleanup::decode_set(&c, &mem, chosen.len())
        .unwrap()
        .iter()
        .map(|m| m.index)
        .collect();
    found.sort_unstable();
    let mut want = chosen.to_vec();
    want.sort_unstable();
    assert_eq!(found, want);
}

#[test]
fn explain_away_works_for_ternary_keys_and_validates_settings() {
    // MAP model: bipolar keys and values, small enough to decode exactly.
    let (dim, m, k) = (2048, 64, 40);
    let mem = ItemMemory::new(basis::random_bipolar(m, dim, 1).unwrap()).unwrap();
    let keys = basis::random_bipolar(k, dim, 2).unwrap();
    let mut rng = Rng::new(3);
    let values: Vec<usize> = (0..k).map(|_| rng.below(m as u64) as usize).collect();
    let mut s = CountBundle::new(dim).unwrap();
    for (key, &v) in keys.iter().zip(&values) {
        let _ = s.add(&key.bind(mem.get(v).unwrap()).unwrap()).unwrap();
    }
    let one_shot: Vec<usize> = cleanup::unbind_nearest(&s, &keys, &mem)
        .unwrap()
        .iter()
        .map(|m| m.index)
        .collect();
    assert_eq!(one_shot, values);
    let decoded = cleanup::explain_away(&s, &keys, &mem, &ExplainAway::default()).unwrap();
    let got: Vec<usize> = decoded.matches.iter().map(|m| m.index).collect();
    assert_eq!(got, values);
    assert!(decoded.rounds >= 1);
    let bad = ExplainAway {
        accept_fraction: 0.0,
        refine_sweeps: 1,
    };
    assert!(cleanup::explain_away(&s, &keys, &mem, &bad).is_err());
    let wrong_dim = basis::random_bipolar(1, dim + 1, 0).unwrap();
    assert!(cleanup::unbind_nearest(&s, &wrong_dim, &mem).is_err());
}
