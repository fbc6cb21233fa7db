//! The chunk bitmap through edits and files.

mod common;

use common::*;
use rand::RngExt;
use rand::rngs::StdRng;
use ternary_core::ChunkBitmap;
use ternary_core::io::Storage;
use ternary_core::{ScaleLayout, TernaryError, TernaryMatrix, reference};
use ternary_sparsity::{BitmapMatrix, TernaryGemm};

/// Checks the bitmap bit of the chunk holding `(r, c)` against the planes.
fn check_chunk(m: &BitmapMatrix, r: usize, c: usize, what: &str) {
    let w = r * m.matrix().words_per_row() + c / 32;
    let nonempty = m.matrix().plus()[w] | m.matrix().minus()[w] != 0;
    assert_eq!(
        m.bitmap().is_set(r, c / 32).unwrap(),
        nonempty,
        "{what}: chunk ({r}, {}) after editing column {c}",
        c / 32
    );
}

/// One random edit, biased towards the cases that change a bitmap bit: emptying a chunk
/// (zeroing its last non-zero) and filling an empty one.
fn random_edit(rng: &mut StdRng, m: &BitmapMatrix) -> (usize, usize, i8) {
    let (rows, cols) = (m.rows(), m.cols());
    let r = rng.random_range(0..rows);
    let t = [-1i8, 0, 1][rng.random_range(0..3)];
    match rng.random_range(0..4) {
        // Zero a non-zero weight of a non-empty chunk of row r, if any.
        0 | 1 => {
            let chunks: Vec<usize> = m.bitmap().iter_row(r).collect();
            if chunks.is_empty() {
                return (r, rng.random_range(0..cols), t);
            }
            let w = chunks[rng.random_range(0..chunks.len())];
            let nz: Vec<usize> = (32 * w..(32 * w + 32).min(cols))
                .filter(|&c| m.get(r, c).unwrap() != 0)
                .collect();
            (r, nz[rng.random_range(0..nz.len())], 0)
        }
        // Any position, any trit (often a weight in an empty chunk at low density).
        _ => (r, rng.random_range(0..cols), t),
    }
}

#[test]
fn edits_should_keep_the_bitmap_consistent_over_1000_random_sequences() {
    let (mut rng, seed) = rng();
    for seq in 0..1000 {
        let rows = EDGE_ROWS[rng.random_range(0..2)];
        let cols = EDGE_COLS[rng.random_range(0..EDGE_COLS.len())];
        let d = [0.0, 0.01, 0.05, 0.3][rng.random_range(0..4)];
        let structure = if rng.random_bool(0.5) {
            Structure::Unstructured
        } else {
            Structure::Chunks
        };
        let m0 = random_matrix(&mut rng, rows, cols, d, structure, ScaleLayout::PerRow);
        let mut shadow = m0.to_trits();
        let mut m = BitmapMatrix::new(m0);
        let what = format!("sequence {seq} {rows}x{cols} d={d} (TERNARY_TEST_SEED={seed})");
        let edits = rng.random_range(1..60);
        for _ in 0..edits {
            let (r, c, t) = random_edit(&mut rng, &m);
            let old = m.modify_dim(r, c, t).unwrap();
            assert_eq!(old, shadow[r * cols + c], "{what}: old trit at ({r}, {c})");
            shadow[r * cols + c] = t;
            assert_eq!(m.get(r, c).unwrap(), t, "{what}");
            check_chunk(&m, r, c, &what);
        }
        m.check_consistency()
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(m.matrix().to_trits(), shadow, "{what}");
        assert_eq!(m.bitmap(), &ChunkBitmap::from_matrix(m.matrix()), "{what}");
        // The skip kernels see the edited weights.
        if seq % 50 == 0 {
            let a = random_q(&mut rng, 2, cols);
            let mut y = vec![f32::NAN; 2 * rows];
            m.gemm_i8(&a, &mut y).unwrap();
            check_exact(&y, &reference::gemm_i8(m.matrix(), &a).unwrap(), &what);
        }
    }
}

#[test]
fn edit_should_clear_and_set_exactly_one_chunk_bit() {
    let scales = ternary_core::Scales::per_row(vec![1.0; 2]);
    let mut m = BitmapMatrix::new(TernaryMatrix::zeros(2, 100, scales).unwrap());
    assert_eq!(m.bitmap().count_nonempty(), 0);
    m.modify_dim(1, 70, 1).unwrap();
    assert_eq!(m.bitmap().iter_row(1).collect::<Vec<_>>(), vec![2]);
    m.modify_dim(1, 71, -1).unwrap();
    m.modify_dim(1, 70, 0).unwrap();
    assert!(
        m.bitmap().is_set(1, 2).unwrap(),
        "one weight left in the chunk"
    );
    m.modify_dim(1, 71, 0).unwrap();
    assert_eq!(
        m.bitmap().count_nonempty(),
        0,
        "last weight gone: bit cleared"
    );
    // Overwriting a weight with another non-zero keeps the bit.
    m.modify_dim(0, 0, 1).unwrap();
    m.modify_dim(0, 0, -1).unwrap();
    assert!(m.bitmap().is_set(0, 0).unwrap());
    m.check_consistency().unwrap();
}

#[test]
fn bad_edits_are_errors_and_change_nothing() {
    let scales = ternary_core::Scales::per_row(vec![1.0; 3]);
    let mut m = BitmapMatrix::new(TernaryMatrix::zeros(3, 33, scales).unwrap());
    m.modify_dim(2, 32, 1).unwrap();
    let before = m.clone();
    assert!(matches!(
        m.modify_dim(3, 0, 1),
        Err(TernaryError::OutOfBounds { .. })
    ));
    assert!(matches!(
        m.modify_dim(0, 33, 1),
        Err(TernaryError::OutOfBounds { .. })
    ));
    assert!(matches!(
        m.modify_dim(0, 0, 2),
        Err(TernaryError::InvalidTrit(2))
    ));
    assert_eq!(m, before);
}

#[test]
fn a_foreign_bitmap_is_rejected() {
    let (mut rng, _) = rng();
    let a = random_matrix(
        &mut rng,
        3,
        100,
        0.05,
        Structure::Chunks,
        ScaleLayout::PerRow,
    );
    let mut b = a.clone();
    // Flip one weight into an empty chunk so the bitmaps differ.
    let w = (0..4).find(|&w| a.plus()[w] | a.minus()[w] == 0);
    if let Some(w) = w {
        b.set(0, (32 * w).min(99), 1).unwrap();
        let e = BitmapMatrix::from_parts(a.clone(), ChunkBitmap::from_matrix(&b)).unwrap_err();
        assert!(matches!(e, TernaryError::Config(_)), "{e}");
    }
    let other = random_matrix(
        &mut rng,
        3,
        200,
        0.05,
        Structure::Chunks,
        ScaleLayout::PerRow,
    );
    let e = BitmapMatrix::from_parts(a.clone(), ChunkBitmap::from_matrix(&other)).unwrap_err();
    assert!(matches!(e, TernaryError::Shape(_)), "{e}");
    BitmapMatrix::from_parts(a.clone(), ChunkBitmap::from_matrix(&a)).unwrap();
}

#[test]
fn files_round_trip_and_rebuild_the_bitmap() {
    let (mut rng, seed) = rng();
    let dir =
        std::env::temp_dir().join(format!("ternary-sparsity-io-{seed}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let layouts = [
        ScaleLayout::PerRow,
        ScaleLayout::PerGroup { group_size: 64 },
    ];
    for (i, storage) in [Storage::Planes, Storage::Packed].into_iter().enumerate() {
        let a = BitmapMatrix::new(random_matrix(
            &mut rng,
            5,
            333,
            0.05,
            Structure::Chunks,
            layouts[i],
        ));
        let mut b = BitmapMatrix::new(random_matrix(
            &mut rng,
            64,
            65,
            0.01,
            Structure::Unstructured,
            layouts[1 - i],
        ));
        b.modify_dim(63, 64, -1).unwrap();
        let path = dir.join(format!("m{i}.safetensors"));
        BitmapMatrix::save(&path, &[("a", &a), ("b", &b)], storage).unwrap();
        let loaded = BitmapMatrix::load(&path).unwrap();
        assert_eq!(loaded.len(), 2);
        assert_eq!((loaded[0].0.as_str(), &loaded[0].1), ("a", &a));
        assert_eq!((loaded[1].0.as_str(), &loaded[1].1), ("b", &b));
        for (_, m) in &loaded {
            m.check_consistency().unwrap();
        }
        assert_eq!(BitmapMatrix::load_one(&path, "b").unwrap(), b);
        let bytes = BitmapMatrix::to_bytes(&[("a", &a)], storage).unwrap();
        assert_eq!(BitmapMatrix::from_bytes(&bytes).unwrap()[0].1, a);
        // A damaged file is an error, not a panic.
        assert!(BitmapMatrix::from_bytes(&bytes[..bytes.len() / 2]).is_err());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
