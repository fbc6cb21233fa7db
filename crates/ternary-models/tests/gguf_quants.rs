//! The GGUF block types added for ternary models, checked against llama.cpp's own gguf-py.
//!
//! - `fixtures/gguf-quants/` (from `scripts/make_gguf_quant_fixtures.py`): for every case our
//!   `dequantize` must give gguf-py's f32 values bit for bit (K-quants, TQ1_0, TQ2_0; Q8_K
//!   against the script's numpy reference, as gguf-py has none), our bit-plane decode must
//!   dequantize to the same bits, and our TQ encoder must reproduce gguf-py's quantized bytes:
//!   from the decoded matrix (`encode(decode(q)) == q`, q = gguf-py's quantization of random
//!   floats) and from the trits and scales of floats `s·t` that gguf-py quantized
//!   (`encode(matrix(t, s)) == quantize(s·t)`). I2_S is checked against the script's encoder,
//!   written from bitnet.cpp's source (unverified against a published file).
//! - Random matrices (fixed seed, printed): TQ1_0 / TQ2_0 / I2_S round trips are exact.
//! - Bad input: every truncation, every size mismatch, code 3 and non-finite scales are
//!   errors, never panics.

use std::path::PathBuf;

use half::f16;
use ternary_core::{ScaleLayout, Scales, TernaryMatrix};
use ternary_models::ModelError;
use ternary_models::gguf::{GgufFile, GgufTensorData, write_gguf};
use ternary_models::quant::{
    GgmlType, decode_ternary, dequantize, encode_ternary, select_rows, with_f16_scales,
};
use ternary_testkit::random_matrix;

fn fixtures() -> PathBuf {
    ternary_testkit::fixture_path("gguf-quants")
}

fn read(name: &str) -> Vec<u8> {
    let p = fixtures().join(name);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn le_f32(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn kind_named(name: &str) -> GgmlType {
    [
        GgmlType::Q4_K,
        GgmlType::Q5_K,
        GgmlType::Q6_K,
        GgmlType::Q8_K,
        GgmlType::TQ1_0,
        GgmlType::TQ2_0,
        GgmlType::I2_S,
    ]
    .into_iter()
    .find(|k| k.name() == name)
    .unwrap_or_else(|| panic!("unknown type {name}"))
}

/// Asserts `got == want` bit for bit (so `-0.0 ≠ 0.0` and NaN payloads count).
fn assert_bits(case: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{case}: length");
    if let Some(i) = (0..got.len()).find(|&i| got[i].to_bits() != want[i].to_bits()) {
        panic!(
            "{case}: weight {i} is {:e}, gguf-py says {:e}",
            got[i], want[i]
        );
    }
}

fn one_tensor_gguf(kind: GgmlType, rows: usize, cols: usize, bytes: Vec<u8>) -> Vec<u8> {
    write_gguf(
        &[],
        &[GgufTensorData {
            name: "blk.0.ffn_down.weight".into(),
            dims: vec![cols, rows],
            kind,
            bytes,
        }],
    )
}

#[test]
fn decode_and_encode_should_match_gguf_py_fixtures_bit_for_bit() {
    let index: serde_json::Value = serde_json::from_slice(&read("index.json")).unwrap();
    eprintln!(
        "fixtures: {} (gguf-py {}, seed {:#x})",
        fixtures().display(),
        index["gguf_py_version"],
        index["seed"].as_u64().unwrap()
    );
    let mut covered = std::collections::BTreeMap::<String, usize>::new();
    for case in index["cases"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let kind = kind_named(case["type"].as_str().unwrap());
        let (rows, cols) = (
            case["rows"].as_u64().unwrap() as usize,
            case["cols"].as_u64().unwrap() as usize,
        );
        let n = rows * cols;
        let q = read(&format!("{name}.q.bin"));
        let file = one_tensor_gguf(kind, rows, cols, q.clone());
        let g = GgufFile::from_bytes(file).unwrap();
        let want = case["f32"].as_str().map(|f| le_f32(&read(f)));
        if let Some(want) = &want {
            assert_bits(name, &dequantize(name, kind, &q, n).unwrap(), want);
            assert_bits(
                name,
                &g.dequantize("blk.0.ffn_down.weight").unwrap().1,
                want,
            );
        }
        if kind.is_ternary() {
            let m = decode_ternary(kind, &q, rows, cols).unwrap();
            assert_eq!(g.ternary("blk.0.ffn_down.weight").unwrap(), m, "{name}");
            if let Some(want) = &want {
                assert_bits(name, &m.dequantize(), want);
            }
            assert!(
                encode_ternary(kind, &m).unwrap() == q,
                "{name}: encode(decode(q)) != q"
            );
            if let Some(f) = case["trits"].as_str() {
                let trits: Vec<i8> = read(f).into_iter().map(|b| b as i8).collect();
                assert_eq!(m.to_trits(), trits, "{name}: trits");
                let scales = match case["scales"].as_str() {
                    Some(f) => Scales::per_group(256, le_f32(&read(f))),
                    None => Scales::per_row(vec![case["scale"].as_f64().unwrap() as f32; rows]),
                };
                let ours = TernaryMatrix::from_trits(rows, cols, &trits, scales).unwrap();
                assert_eq!(ours, m, "{name}: decoded matrix");
                assert!(
                    encode_ternary(kind, &ours).unwrap() == q,
                    "{name}: our encoding of (t, s) != the fixture's quantization of s·t"
                );
                let dense: Vec<f32> = ours.dequantize();
                assert_bits(name, &dequantize(name, kind, &q, n).unwrap(), &dense);
            }
        }
        *covered.entry(kind.name()).or_default() += 1;
    }
    eprintln!("cases per type: {covered:?}");
    for k in ["Q4_K", "Q5_K", "Q6_K", "Q8_K", "TQ1_0", "TQ2_0", "I2_S"] {
        assert!(covered.get(k).is_some_and(|&c| c >= 3), "{k}: {covered:?}");
    }
}

#[test]
fn ternary_round_trip_should_be_exact_on_random_matrices() {
    let (mut rng, seed) = ternary_testkit::seeded();
    for rows in [1, 63, 64, 65] {
        for cols in [256, 512, 768] {
            let g256 = ScaleLayout::PerGroup { group_size: 256 };
            let m = with_f16_scales(&random_matrix(&mut rng, rows, cols, g256)).unwrap();
            for kind in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
                let b = encode_ternary(kind, &m).unwrap();
                assert_eq!(b.len(), kind.byte_size(rows * cols).unwrap());
                let back = decode_ternary(kind, &b, rows, cols).unwrap();
                assert_eq!(back, m, "{kind:?} {rows}x{cols} seed {seed}");
                assert_bits(
                    "dequantize",
                    &dequantize("t", kind, &b, rows * cols).unwrap(),
                    &m.dequantize(),
                );
            }
            // Per-row scales: one scale per block still, same weights back.
            let m =
                with_f16_scales(&random_matrix(&mut rng, rows, cols, ScaleLayout::PerRow)).unwrap();
            for kind in [GgmlType::TQ1_0, GgmlType::TQ2_0] {
                let b = encode_ternary(kind, &m).unwrap();
                let back = decode_ternary(kind, &b, rows, cols).unwrap();
                assert_bits("per-row", &back.dequantize(), &m.dequantize());
            }
            // I2_S: one scale for the tensor.
            let t = random_matrix(&mut rng, rows, cols, ScaleLayout::PerRow);
            let s = t.scales().values()[0];
            let mut m = t.clone();
            m.set_scales(Scales::per_row(vec![s; rows])).unwrap();
            let b = encode_ternary(GgmlType::I2_S, &m).unwrap();
            assert_eq!(b.len(), rows * cols / 4 + 32);
            assert_eq!(decode_ternary(GgmlType::I2_S, &b, rows, cols).unwrap(), m);
        }
    }
}

#[test]
fn tq1_every_trit_combination_should_round_trip_and_every_byte_decode() {
    // Five trits in byte m of qs for m < 32: weights m, 32 + m, ..., 128 + m.
    for v in 0..243u32 {
        let digits: Vec<i8> = (0..5)
            .map(|n| ((v / 3u32.pow(4 - n)) % 3) as i8 - 1)
            .collect();
        let mut trits = vec![0i8; 256];
        for (n, &d) in digits.iter().enumerate() {
            trits[32 * n + 5] = d;
            trits[160 + 16 * n + 9] = d;
            if n < 4 {
                trits[240 + 4 * n + 2] = d;
            }
        }
        let m =
            TernaryMatrix::from_trits(1, 256, &trits, Scales::per_group(256, vec![1.0])).unwrap();
        let b = encode_ternary(GgmlType::TQ1_0, &m).unwrap();
        assert_eq!(
            decode_ternary(GgmlType::TQ1_0, &b, 1, 256).unwrap(),
            m,
            "v = {v}"
        );
    }
    // Any byte is some valid five-trit group (there is no invalid TQ1_0 code).
    let mut b = vec![0u8; 54];
    b[52..54].copy_from_slice(&f16::from_f32(0.5).to_bits().to_le_bytes());
    for x in 0..=255u8 {
        b[..52].fill(x);
        let m = decode_ternary(GgmlType::TQ1_0, &b, 1, 256).unwrap();
        assert_bits(
            "byte",
            &m.dequantize(),
            &dequantize("t", GgmlType::TQ1_0, &b, 256).unwrap(),
        );
    }
}

#[test]
fn encoder_should_refuse_what_the_type_cannot_hold() {
    let trits = vec![1i8; 2 * 576];
    let m = TernaryMatrix::from_trits(2, 576, &trits, Scales::per_row(vec![0.5, 0.25])).unwrap();
    let e = encode_ternary(GgmlType::TQ2_0, &m).unwrap_err().to_string();
    assert!(e.contains("576") && e.contains("256"), "{e}");
    // Groups of 128 with two different scales in one 256-block.
    let g = Scales::per_group(128, vec![0.5, 0.25, 0.5, 0.5]);
    let m = TernaryMatrix::from_trits(1, 512, &[1; 512], g).unwrap();
    let e = encode_ternary(GgmlType::TQ1_0, &m).unwrap_err().to_string();
    assert!(e.contains("vary") && e.contains("column 128"), "{e}");
    // Groups of 128 that agree inside each 256-block are fine.
    let g = Scales::per_group(128, vec![0.5, 0.5, 0.25, 0.25]);
    let m = TernaryMatrix::from_trits(1, 512, &[-1; 512], g).unwrap();
    let b = encode_ternary(GgmlType::TQ1_0, &m).unwrap();
    assert_bits(
        "g128",
        &decode_ternary(GgmlType::TQ1_0, &b, 1, 512)
            .unwrap()
            .dequantize(),
        &m.dequantize(),
    );
    // A scale f16 cannot hold exactly, then the same after rounding.
    let m = TernaryMatrix::from_trits(1, 256, &[1; 256], Scales::per_row(vec![0.1])).unwrap();
    let e = encode_ternary(GgmlType::TQ2_0, &m).unwrap_err().to_string();
    assert!(e.contains("f16") && e.contains("row 0"), "{e}");
    let r = with_f16_scales(&m).unwrap();
    assert_eq!(r.scales().values()[0], f16::from_f32(0.1).to_f32());
    assert!(encode_ternary(GgmlType::TQ2_0, &r).is_ok());
    let big = TernaryMatrix::from_trits(1, 256, &[1; 256], Scales::per_row(vec![1e6])).unwrap();
    assert!(with_f16_scales(&big).is_err());
    // I2_S: one scale per tensor, 128-column blocks.
    let m = TernaryMatrix::from_trits(2, 128, &[0; 256], Scales::per_row(vec![1.0, 2.0])).unwrap();
    let e = encode_ternary(GgmlType::I2_S, &m).unwrap_err().to_string();
    assert!(e.contains("one scale per tensor"), "{e}");
    let m = TernaryMatrix::from_trits(1, 64, &[0; 64], Scales::per_row(vec![1.0])).unwrap();
    assert!(encode_ternary(GgmlType::I2_S, &m).is_err());
    assert!(encode_ternary(GgmlType::Q8_0, &m).is_err());
}

/// A small valid tensor of every new type: (kind, rows, cols, bytes).
fn samples() -> Vec<(GgmlType, usize, usize, Vec<u8>)> {
    let mut rng = ternary_testkit::rng();
    let g = ScaleLayout::PerGroup { group_size: 256 };
    let m = with_f16_scales(&random_matrix(&mut rng, 2, 512, g)).unwrap();
    let mut i2 = random_matrix(&mut rng, 2, 256, ScaleLayout::PerRow);
    i2.set_scales(Scales::per_row(vec![0.75; 2])).unwrap();
    let mut out = vec![
        (
            GgmlType::TQ1_0,
            2,
            512,
            encode_ternary(GgmlType::TQ1_0, &m).unwrap(),
        ),
        (
            GgmlType::TQ2_0,
            2,
            512,
            encode_ternary(GgmlType::TQ2_0, &m).unwrap(),
        ),
        (
            GgmlType::I2_S,
            2,
            256,
            encode_ternary(GgmlType::I2_S, &i2).unwrap(),
        ),
    ];
    for k in ["q4_k", "q5_k", "q6_k", "q8_k"] {
        out.push((
            kind_named(&k.to_uppercase()),
            3,
            512,
            read(&format!("{k}_3x512.q.bin")),
        ));
    }
    out
}

#[test]
fn every_truncation_and_size_mismatch_should_be_an_error() {
    for (kind, rows, cols, b) in samples() {
        let n = rows * cols;
        for cut in 0..b.len() {
            assert!(
                dequantize("t", kind, &b[..cut], n).is_err(),
                "{kind:?} cut {cut}"
            );
            if kind.is_ternary() {
                assert!(decode_ternary(kind, &b[..cut], rows, cols).is_err());
            }
        }
        let mut long = b.clone();
        long.push(0);
        assert!(dequantize("t", kind, &long, n).is_err());
        assert!(dequantize("t", kind, &b, n + 1).is_err());
        assert!(dequantize("t", kind, &b, n - 256).is_err());
        if kind.is_ternary() {
            assert!(decode_ternary(kind, &long, rows, cols).is_err());
            assert!(decode_ternary(kind, &b, rows + 1, cols).is_err());
            let e = decode_ternary(kind, &b, 1, n - 64).unwrap_err().to_string();
            assert!(e.contains("blocks"), "{e}");
            let e = decode_ternary(kind, &b, usize::MAX, 256)
                .unwrap_err()
                .to_string();
            assert!(e.contains("overflow") || e.contains("bytes"), "{e}");
        }
        // The same tensor inside a GGUF file: every cut up to the tensor's last byte fails.
        let file = one_tensor_gguf(kind, rows, cols, b.clone());
        let end = file.len() - b.len().div_ceil(32) * 32 + b.len();
        for cut in 0..end {
            assert!(
                GgufFile::from_bytes(file[..cut].to_vec()).is_err(),
                "{kind:?}: GGUF cut at {cut} of {end} parsed"
            );
        }
        let g = GgufFile::from_bytes(file.clone()).unwrap();
        assert!(g.dequantize("blk.0.ffn_down.weight").is_ok());
        if !kind.is_ternary() {
            let e = g.ternary("blk.0.ffn_down.weight").unwrap_err();
            assert!(matches!(e, ModelError::UnsupportedType { .. }), "{e}");
        }
        // Claim one column fewer: not whole blocks, refused when the file is parsed.
        let dim_at = 24 + 8 + "blk.0.ffn_down.weight".len() + 4;
        let mut bad = file.clone();
        bad[dim_at..dim_at + 8].copy_from_slice(&((cols - 1) as u64).to_le_bytes());
        let e = GgufFile::from_bytes(bad).unwrap_err().to_string();
        assert!(e.contains("blk.0.ffn_down.weight"), "{e}");
        // Claim more rows than the data holds.
        let mut bad = file;
        bad[dim_at + 8..dim_at + 16].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let e = GgufFile::from_bytes(bad).unwrap_err().to_string();
        assert!(e.contains("truncated") || e.contains("overflow"), "{e}");
    }
}

#[test]
fn code_3_and_non_finite_scales_should_be_clear_errors() {
    // TQ2_0: code 3 at weight 130 (half 1, l 0, m 2). ggml's dequantize reads it as +2·d.
    let mut b = vec![0x55u8; 64];
    b[34] = 0x57;
    b.extend(f16::from_f32(0.5).to_bits().to_le_bytes());
    let e = decode_ternary(GgmlType::TQ2_0, &b, 1, 256)
        .unwrap_err()
        .to_string();
    assert!(e.contains("code 3") && e.contains("column 130"), "{e}");
    let x = dequantize("t", GgmlType::TQ2_0, &b, 256).unwrap();
    assert_eq!((x[130], x[0]), (1.0, 0.0));
    // Infinite and NaN block scales.
    for bits in [0x7C00u16, 0x7E00] {
        b[34] = 0x55;
        b[64..66].copy_from_slice(&bits.to_le_bytes());
        let e = decode_ternary(GgmlType::TQ2_0, &b, 1, 256)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not finite") && e.contains("block 0"), "{e}");
    }
    // I2_S: code 3 and a NaN tensor scale.
    let mut b = vec![0x55u8; 32];
    b.extend(1.0f32.to_le_bytes());
    b.extend([0u8; 28]);
    assert!(decode_ternary(GgmlType::I2_S, &b, 1, 128).is_ok());
    b[3] = 0x57; // weight 96 + 3 gets code 3
    let e = decode_ternary(GgmlType::I2_S, &b, 1, 128)
        .unwrap_err()
        .to_string();
    assert!(e.contains("code 3") && e.contains("column 99"), "{e}");
    assert!(
        dequantize("w", GgmlType::I2_S, &b, 128)
            .unwrap_err()
            .to_string()
            .contains("'w'")
    );
    b[3] = 0x55;
    b[32..36].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = decode_ternary(GgmlType::I2_S, &b, 1, 128)
        .unwrap_err()
        .to_string();
    assert!(e.contains("not finite"), "{e}");
    // Empty tensors: a huge dimension next to a zero one is refused before allocating.
    for kind in [GgmlType::TQ1_0, GgmlType::TQ2_0, GgmlType::I2_S] {
        let tail = if kind == GgmlType::I2_S { 32 } else { 0 };
        for (rows, cols) in [(0, 1usize << 45), (1usize << 45, 0), (0, 0)] {
            let e = decode_ternary(kind, &vec![0; tail], rows, cols).unwrap_err();
            assert!(e.to_string().contains("empty"), "{e}");
        }
        assert!(dequantize("t", kind, &vec![0; tail], 0).unwrap().is_empty());
    }
    // A non-ternary kind.
    assert!(decode_ternary(GgmlType::Q8_0, &[0; 34], 1, 32).is_err());
}

#[test]
fn select_rows_should_move_rows_with_their_scales() {
    let mut rng = ternary_testkit::rng();
    let m = random_matrix(&mut rng, 5, 320, ScaleLayout::PerGroup { group_size: 64 });
    let order = [4, 0, 0, 2];
    let s = select_rows(&m, &order).unwrap();
    let (dm, ds) = (m.dequantize(), s.dequantize());
    for (i, &r) in order.iter().enumerate() {
        assert_bits(
            "row",
            &ds[i * 320..(i + 1) * 320],
            &dm[r * 320..(r + 1) * 320],
        );
    }
    assert!(select_rows(&m, &[5]).is_err());
}

#[test]
fn q8_0_fallback_should_hold_ternary_weights_exactly() {
    let (mut rng, seed) = ternary_testkit::seeded();
    for (rows, cols, layout) in [
        (3, 576, ScaleLayout::PerRow),
        (65, 64, ScaleLayout::PerGroup { group_size: 32 }),
        (1, 1536, ScaleLayout::PerGroup { group_size: 128 }),
    ] {
        let m = with_f16_scales(&random_matrix(&mut rng, rows, cols, layout)).unwrap();
        let b = ternary_models::quant::encode_q8_0_exact(&m).unwrap();
        let x = dequantize("t", GgmlType::Q8_0, &b, rows * cols).unwrap();
        assert_bits(&format!("{rows}x{cols} seed {seed}"), &x, &m.dequantize());
    }
    let m = TernaryMatrix::from_trits(1, 64, &[1; 64], Scales::per_row(vec![0.1])).unwrap();
    assert!(ternary_models::quant::encode_q8_0_exact(&m).is_err());
}
