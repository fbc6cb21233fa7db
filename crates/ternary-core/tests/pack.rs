//! Base-3 packing: bit-exact round trips against an independent encoder, and validation.

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use ternary_core::pack::{MAX_PACKED_BYTE, PackedTernary, bytes_per_row, pack};
use ternary_core::{Scales, TernaryError, TernaryMatrix};

const COLS: &[usize] = &[
    0, 1, 2, 3, 4, 5, 6, 9, 10, 31, 32, 33, 63, 64, 65, 127, 128, 576, 1536,
];
const ROWS: &[usize] = &[0, 1, 3, 7];

/// Random trits with `P(0) = zero_p`, the rest split evenly between ±1.
fn random_trits(rng: &mut StdRng, n: usize, zero_p: f64) -> Vec<i8> {
    (0..n)
        .map(|_| {
            if rng.random_bool(zero_p) {
                0
            } else if rng.random_bool(0.5) {
                1
            } else {
                -1
            }
        })
        .collect()
}

fn random_scales(rng: &mut StdRng, rows: usize, cols: usize, group: Option<usize>) -> Scales {
    match group {
        None => Scales::per_row((0..rows).map(|_| rng.random_range(0.01..2.0)).collect()),
        Some(g) => Scales::per_group(
            g,
            (0..rows * cols.div_ceil(g))
                .map(|_| rng.random_range(0.01..2.0))
                .collect(),
        ),
    }
}

/// The packing formula applied directly to row-major trits:
/// `byte[r, j] = Σ_{i<5} (t[r, 5j + i] + 1) · 3^i`, with `t = 0` past the row end.
fn reference_pack(rows: usize, cols: usize, trits: &[i8]) -> Vec<u8> {
    let bpr = cols.div_ceil(5);
    let mut out = Vec::with_capacity(rows * bpr);
    for r in 0..rows {
        for j in 0..bpr {
            let mut v = 0u32;
            for i in (0..5).rev() {
                let c = 5 * j + i;
                let t = if c < cols { trits[r * cols + c] } else { 0 };
                v = v * 3 + (t + 1) as u32;
            }
            out.push(v as u8);
        }
    }
    out
}

fn check_round_trip(rng: &mut StdRng, rows: usize, cols: usize, group: Option<usize>, zp: f64) {
    let trits = random_trits(rng, rows * cols, zp);
    let scales = random_scales(rng, rows, cols, group);
    let m = TernaryMatrix::from_trits(rows, cols, &trits, scales).unwrap();
    let p = pack(&m);
    assert_eq!(p.rows(), rows);
    assert_eq!(p.cols(), cols);
    assert_eq!(p.bytes_per_row(), bytes_per_row(cols));
    assert_eq!(
        p.bytes(),
        reference_pack(rows, cols, &trits).as_slice(),
        "{rows}x{cols} zero_p={zp}: packed bytes differ from the formula"
    );
    assert!(p.bytes().iter().all(|&b| b <= MAX_PACKED_BYTE));
    let back = p.unpack().unwrap();
    assert_eq!(back, m, "{rows}x{cols}: round trip is not bit-exact");
    assert_eq!(back.to_trits(), trits);
    for r in 0..rows {
        for c in 0..cols {
            assert_eq!(p.get(r, c).unwrap(), trits[r * cols + c], "get({r}, {c})");
        }
    }
    // The validating constructor accepts what `pack` produced.
    let (bytes, scales) = p.clone().into_parts();
    assert_eq!(
        PackedTernary::from_parts(rows, cols, bytes, scales).unwrap(),
        p
    );
}

#[test]
fn pack_should_match_formula_and_round_trip_bit_exactly() {
    let mut rng = StdRng::seed_from_u64(0x7ac4);
    for &rows in ROWS {
        for &cols in COLS {
            for zp in [0.0, 0.35, 1.0] {
                check_round_trip(&mut rng, rows, cols, None, zp);
            }
            for g in [32, 64, 128] {
                check_round_trip(&mut rng, rows, cols, Some(g), 0.3);
            }
        }
    }
}

#[test]
fn all_plus_and_all_minus_rows_round_trip() {
    for cols in [1, 4, 5, 64, 65, 577] {
        for t in [1i8, -1] {
            let trits = vec![t; 2 * cols];
            let m =
                TernaryMatrix::from_trits(2, cols, &trits, Scales::per_row(vec![1.0; 2])).unwrap();
            let p = pack(&m);
            assert_eq!(p.bytes(), reference_pack(2, cols, &trits).as_slice());
            assert_eq!(p.unpack().unwrap(), m);
        }
    }
}

#[test]
fn large_matrix_uses_parallel_path_and_round_trips() {
    // 300 × 1001 = 300,300 weights: above the rayon threshold.
    let mut rng = StdRng::seed_from_u64(99);
    let (rows, cols) = (300, 1001);
    let trits = random_trits(&mut rng, rows * cols, 0.3);
    let m = TernaryMatrix::from_trits(
        rows,
        cols,
        &trits,
        random_scales(&mut rng, rows, cols, None),
    )
    .unwrap();
    let p = pack(&m);
    assert_eq!(p.bytes(), reference_pack(rows, cols, &trits).as_slice());
    assert_eq!(p.unpack().unwrap(), m);
}

#[test]
fn bits_per_weight_is_eight_ceil_cols_over_five_over_cols() {
    for (cols, expected) in [
        (5usize, 1.6),
        (640, 1.6),
        (576, 8.0 * 116.0 / 576.0),
        (1536, 8.0 * 308.0 / 1536.0),
        (4096, 8.0 * 820.0 / 4096.0),
        (11008, 8.0 * 2202.0 / 11008.0),
    ] {
        let m = TernaryMatrix::zeros(3, cols, Scales::per_row(vec![1.0; 3])).unwrap();
        let p = pack(&m);
        assert_eq!(p.bytes().len(), 3 * cols.div_ceil(5));
        assert!((p.bits_per_weight() - expected).abs() < 1e-12, "{cols}");
        assert!(p.bits_per_weight() < 1.6 + 8.0 / cols as f64);
        let with_scales = (3 * cols.div_ceil(5) + 12) as f64 * 8.0 / (3 * cols) as f64;
        assert!((p.total_bits_per_weight() - with_scales).abs() < 1e-12);
    }
    let empty = pack(&TernaryMatrix::zeros(0, 7, Scales::per_row(vec![])).unwrap());
    assert_eq!(empty.bits_per_weight(), 0.0);
}

/// Independent validity rule for the last byte of a row with `used` real columns:
/// `b ≤ 242` and base-3 digits `used..5` all equal 1 (zero trits).
fn last_byte_is_valid(b: u8, used: usize) -> bool {
    if b > 242 {
        return false;
    }
    let mut v = u32::from(b);
    for i in 0..5 {
        if i >= used && v % 3 != 1 {
            return false;
        }
        v /= 3;
    }
    true
}

#[test]
fn from_parts_accepts_exactly_the_valid_bytes() {
    // Rows of 1..=5 columns are one byte: try every byte value in that byte.
    for cols in 1..=5 {
        for b in 0..=255u8 {
            let r = PackedTernary::from_parts(1, cols, vec![b], Scales::per_row(vec![1.0]));
            assert_eq!(
                r.is_ok(),
                last_byte_is_valid(b, cols),
                "cols={cols} byte={b}"
            );
            match r {
                Ok(p) => {
                    let m = p.unpack().unwrap();
                    let repacked = pack(&m);
                    assert_eq!(repacked.bytes(), &[b], "cols={cols} byte={b}");
                }
                Err(e) => assert!(matches!(e, TernaryError::Format { .. }), "{e}"),
            }
        }
    }
}

#[test]
fn from_parts_rejects_bad_bytes_with_their_position() {
    let scales = || Scales::per_row(vec![1.0; 3]);
    // 3 × 12: 3 bytes per row, the last holding 2 columns.
    let good = vec![121u8; 9];
    PackedTernary::from_parts(3, 12, good.clone(), scales()).unwrap();

    let mut bad = good.clone();
    bad[4] = 243;
    let e = PackedTernary::from_parts(3, 12, bad, scales()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, TernaryError::Format { .. }), "{msg}");
    assert!(
        msg.contains("row 1, byte 1") && msg.contains("243"),
        "{msg}"
    );

    let mut bad = good.clone();
    bad[8] = 255;
    let msg = PackedTernary::from_parts(3, 12, bad, scales())
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("row 2, byte 2") && msg.contains("255"),
        "{msg}"
    );

    // Padding trit (column 12, digit 2 of the last byte) set to +1: 121 + 9 = 130.
    let mut bad = good.clone();
    bad[5] = 130;
    let e = PackedTernary::from_parts(3, 12, bad, scales()).unwrap_err();
    assert!(matches!(e, TernaryError::Format { .. }), "{e}");
    assert!(e.to_string().contains("padding"), "{e}");
    // ... and to -1: 121 - 81 = 40 (digit 4).
    let mut bad = good.clone();
    bad[2] = 40;
    assert!(PackedTernary::from_parts(3, 12, bad, scales()).is_err());
    // A non-padding trit of the last byte may be anything: digit 1 set to -1 → 121 - 3.
    let mut ok = good.clone();
    ok[2] = 118;
    PackedTernary::from_parts(3, 12, ok, scales()).unwrap();

    // Wrong length and bad scales.
    let e = PackedTernary::from_parts(3, 12, vec![121; 8], scales()).unwrap_err();
    assert!(matches!(e, TernaryError::Shape(_)), "{e}");
    let e =
        PackedTernary::from_parts(3, 12, good.clone(), Scales::per_row(vec![1.0; 2])).unwrap_err();
    assert!(matches!(e, TernaryError::Shape(_)), "{e}");
    let e = PackedTernary::from_parts(
        3,
        12,
        good.clone(),
        Scales::per_row(vec![1.0, f32::NAN, 1.0]),
    )
    .unwrap_err();
    assert!(matches!(e, TernaryError::NonFinite { index: 1, .. }), "{e}");
    let e =
        PackedTernary::from_parts(3, 12, good, Scales::per_group(40, vec![1.0; 3])).unwrap_err();
    assert!(matches!(e, TernaryError::Config(_)), "{e}");
}

#[test]
fn get_is_bounds_checked() {
    let m = TernaryMatrix::from_trits(2, 3, &[1, 0, -1, -1, 1, 0], Scales::per_row(vec![1.0; 2]))
        .unwrap();
    let p = pack(&m);
    assert_eq!(p.get(1, 0).unwrap(), -1);
    assert!(matches!(p.get(2, 0), Err(TernaryError::OutOfBounds { .. })));
    assert!(matches!(p.get(0, 3), Err(TernaryError::OutOfBounds { .. })));
    // Row 1 = (-1, +1, 0) + two zero padding trits: 0·1 + 2·3 + 1·9 + 1·27 + 1·81.
    assert_eq!(p.row_bytes(1), &[123]);
}
