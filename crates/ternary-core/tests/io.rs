//! safetensors I/O: round trips, every malformed-file case, and atomic writes.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use safetensors::{Dtype, SafeTensors, View};
use ternary_core::io::{
    self, FloatTensor, MAX_DIM, Storage, Tensor, TensorRef, from_bytes, load, load_one,
    load_tensors, one_from_bytes, save, save_tensors, tensors_from_bytes, to_bytes,
};
use ternary_core::pack::bytes_per_row;
use ternary_core::{Scales, TernaryError, TernaryMatrix, words_per_row};
use ternary_testkit::TempDir;

const STORAGES: [Storage; 2] = [Storage::Planes, Storage::Packed];

// ------------------------------------------------------------------------------------------
// Helpers
// ------------------------------------------------------------------------------------------

fn random_matrix(
    rng: &mut StdRng,
    rows: usize,
    cols: usize,
    group: Option<usize>,
) -> TernaryMatrix {
    let trits: Vec<i8> = (0..rows * cols).map(|_| rng.random_range(-1..=1)).collect();
    let scales = match group {
        None => Scales::per_row((0..rows).map(|_| rng.random_range(-2.0..2.0)).collect()),
        Some(g) => Scales::per_group(
            g,
            (0..rows * cols.div_ceil(g))
                .map(|_| rng.random_range(-2.0..2.0))
                .collect(),
        ),
    };
    TernaryMatrix::from_trits(rows, cols, &trits, scales).unwrap()
}

/// One raw tensor of a hand-built safetensors file.
#[derive(Clone)]
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    data: Vec<u8>,
}

impl View for &Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

type Parts = (BTreeMap<String, Raw>, Option<HashMap<String, String>>);

/// Splits a valid file into its tensors and metadata, to be altered and rebuilt.
fn parts(bytes: &[u8]) -> Parts {
    let (_, header) = SafeTensors::read_metadata(bytes).unwrap();
    let st = SafeTensors::deserialize(bytes).unwrap();
    let tensors = st
        .tensors()
        .into_iter()
        .map(|(n, v)| {
            let raw = Raw {
                dtype: v.dtype(),
                shape: v.shape().to_vec(),
                data: v.data().to_vec(),
            };
            (n, raw)
        })
        .collect();
    (tensors, header.metadata().clone())
}

fn build((tensors, meta): &Parts) -> Vec<u8> {
    safetensors::serialize(tensors.iter().map(|(k, v)| (k.clone(), v)), meta.clone()).unwrap()
}

/// Asserts that the bytes are rejected with a `Format` error whose reason contains `needle`.
fn expect_format(bytes: &[u8], needle: &str) {
    match from_bytes(bytes) {
        Err(TernaryError::Format { path: None, reason }) => {
            assert!(reason.contains(needle), "expected {needle:?} in {reason:?}")
        }
        Err(e) => panic!("expected a Format error containing {needle:?}, got {e:?}"),
        Ok(_) => panic!("expected a Format error containing {needle:?}, got Ok"),
    }
    // The other entry points must agree.
    assert!(tensors_from_bytes(bytes).is_err());
}

/// A valid file with one 3×65 matrix `m` (per-group, 32) in the given storage, plus its parts.
fn base(storage: Storage) -> (TernaryMatrix, Parts) {
    let mut rng = StdRng::seed_from_u64(5);
    let m = random_matrix(&mut rng, 3, 65, Some(32));
    let bytes = to_bytes(&[("m", &m)], storage).unwrap();
    let p = parts(&bytes);
    // Rebuilding unaltered parts gives a file that loads: the alterations below are the cause.
    assert_eq!(
        from_bytes(&build(&p)).unwrap(),
        vec![("m".to_owned(), m.clone())]
    );
    (m, p)
}

fn u32_bytes(words: &[u32]) -> Vec<u8> {
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

// ------------------------------------------------------------------------------------------
// Round trips
// ------------------------------------------------------------------------------------------

#[test]
fn round_trip_should_be_bit_exact_for_every_shape_layout_and_storage() {
    let mut rng = StdRng::seed_from_u64(0x10);
    for &cols in &[0usize, 1, 31, 33, 64, 65, 576, 1536] {
        for &rows in &[0usize, 1, 5] {
            for group in [None, Some(32), Some(64), Some(128)] {
                let a = random_matrix(&mut rng, rows, cols, group);
                let b = random_matrix(&mut rng, 2, cols, group);
                for storage in STORAGES {
                    let bytes =
                        to_bytes(&[("layers.0.q", &a), ("layers.0.k", &b)], storage).unwrap();
                    let got = from_bytes(&bytes).unwrap();
                    assert_eq!(
                        got,
                        vec![
                            ("layers.0.k".to_owned(), b.clone()),
                            ("layers.0.q".to_owned(), a.clone())
                        ],
                        "{rows}x{cols} {group:?} {storage:?}"
                    );
                    assert_eq!(one_from_bytes(&bytes, "layers.0.q").unwrap(), a);
                }
            }
        }
    }
}

#[test]
fn files_round_trip_many_named_matrices_and_float_tensors() {
    let dir = TempDir::new("io-files");
    let mut rng = StdRng::seed_from_u64(0x11);
    let mats: Vec<(String, TernaryMatrix)> = (0..6)
        .map(|i| {
            let cols = [64, 65, 576][i % 3];
            (
                format!("layers.{i}.mlp"),
                random_matrix(&mut rng, 4 + i, cols, Some(64)),
            )
        })
        .collect();
    let refs: Vec<(&str, &TernaryMatrix)> = mats.iter().map(|(n, m)| (n.as_str(), m)).collect();
    let embed = FloatTensor::new(
        vec![3, 2, 5],
        (0..30).map(|i| i as f32 * 0.5 - 3.0).collect(),
    )
    .unwrap();
    let norm = FloatTensor::new(vec![0], vec![]).unwrap();
    for storage in STORAGES {
        let path = dir.path(&format!("model-{storage:?}.safetensors"));
        save(&path, &refs, storage).unwrap();
        let got = load(&path).unwrap();
        let mut want = mats.clone();
        want.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(got, want);
        assert_eq!(load_one(&path, "layers.3.mlp").unwrap(), mats[3].1);

        let mut mixed: Vec<(&str, TensorRef<'_>)> = refs
            .iter()
            .map(|&(n, m)| (n, TensorRef::Ternary(m)))
            .collect();
        mixed.push(("embed", TensorRef::Float(&embed)));
        mixed.push(("norm", TensorRef::Float(&norm)));
        save_tensors(&path, &mixed, storage).unwrap();
        let all = load_tensors(&path).unwrap();
        assert_eq!(all.len(), 8);
        assert_eq!(all[0], ("embed".to_owned(), Tensor::Float(embed.clone())));
        assert!(all.contains(&("norm".to_owned(), Tensor::Float(norm.clone()))));
        assert!(all.contains(&(
            "layers.5.mlp".to_owned(),
            Tensor::Ternary(mats[5].1.clone())
        )));
        // `load` returns only the matrices; `load_one` refuses a float tensor by name.
        assert_eq!(load(&path).unwrap(), want);
        let e = load_one(&path, "embed").unwrap_err();
        assert!(e.to_string().contains("float tensor"), "{e}");
        let e = load_one(&path, "layers.9.mlp").unwrap_err();
        assert!(
            matches!(e, TernaryError::Format { path: Some(_), .. }),
            "{e}"
        );
    }
    assert_eq!(
        dir.entries().len(),
        2,
        "no temporary files left: {:?}",
        dir.entries()
    );
}

#[test]
fn file_layout_should_match_the_spec() {
    // 2 × 7, per-row: row 0 = (+1, 0, −1, 0, 0, +1, −1), row 1 = all zero.
    let trits = [1, 0, -1, 0, 0, 1, -1, 0, 0, 0, 0, 0, 0, 0];
    let m = TernaryMatrix::from_trits(2, 7, &trits, Scales::per_row(vec![0.5, 2.0])).unwrap();

    let bytes = to_bytes(&[("w", &m)], Storage::Planes).unwrap();
    let (tensors, meta) = parts(&bytes);
    let meta = meta.unwrap();
    let want: HashMap<String, String> = [
        ("format", "ternary"),
        ("format_version", "1"),
        ("w.storage", "planes"),
        ("w.rows", "2"),
        ("w.cols", "7"),
        ("w.scale_layout", "per_row"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(meta, want);
    assert_eq!(
        tensors.keys().collect::<Vec<_>>(),
        ["w.minus", "w.plus", "w.scales"]
    );
    let plus = &tensors["w.plus"];
    assert_eq!((plus.dtype, plus.shape.clone()), (Dtype::U32, vec![2, 2]));
    // Bits 0 and 5 of word 0 → 0b100001; minus: bits 2 and 6 → 0b1000100.
    assert_eq!(plus.data, u32_bytes(&[0b10_0001, 0, 0, 0]));
    assert_eq!(tensors["w.minus"].data, u32_bytes(&[0b100_0100, 0, 0, 0]));
    let scales = &tensors["w.scales"];
    assert_eq!(
        (scales.dtype, scales.shape.clone()),
        (Dtype::F32, vec![2, 1])
    );
    assert_eq!(
        scales.data,
        [0.5f32.to_le_bytes(), 2.0f32.to_le_bytes()].concat()
    );

    let m = TernaryMatrix::from_trits(2, 7, &trits, Scales::per_group(32, vec![0.5, 2.0])).unwrap();
    let bytes = to_bytes(&[("w", &m)], Storage::Packed).unwrap();
    let (tensors, meta) = parts(&bytes);
    let meta = meta.unwrap();
    assert_eq!(meta["w.storage"], "packed");
    assert_eq!(meta["w.scale_layout"], "per_group");
    assert_eq!(meta["w.group_size"], "32");
    assert_eq!(tensors.keys().collect::<Vec<_>>(), ["w.packed", "w.scales"]);
    let packed = &tensors["w.packed"];
    assert_eq!(
        (packed.dtype, packed.shape.clone()),
        (Dtype::U8, vec![2, 2])
    );
    // Row 0 byte 0: digits (2,1,0,1,1) → 2 + 3 + 0 + 27 + 81 = 113;
    // byte 1: (2,0) + three padding zeros (1,1,1) → 2 + 0 + 9 + 27 + 81 = 119; row 1: 121, 121.
    assert_eq!(packed.data, [113, 119, 121, 121]);
}

#[test]
fn empty_file_round_trips() {
    let bytes = to_bytes(&[], Storage::Planes).unwrap();
    assert!(from_bytes(&bytes).unwrap().is_empty());
}

// ------------------------------------------------------------------------------------------
// Malformed files
// ------------------------------------------------------------------------------------------

#[test]
fn every_truncation_is_a_format_error_not_a_panic() {
    let mut rng = StdRng::seed_from_u64(0x20);
    let m = random_matrix(&mut rng, 2, 40, Some(32));
    let f = FloatTensor::new(vec![3], vec![1.0, 2.0, 3.0]).unwrap();
    for storage in STORAGES {
        let bytes = io::tensors_to_bytes(
            &[("a", TensorRef::Ternary(&m)), ("f", TensorRef::Float(&f))],
            storage,
        )
        .unwrap();
        assert_eq!(tensors_from_bytes(&bytes).unwrap().len(), 2);
        for len in 0..bytes.len() {
            let cut = &bytes[..len];
            // The safetensors crate itself must not panic on truncated input either.
            assert!(SafeTensors::deserialize(cut).is_err(), "len {len}");
            assert!(SafeTensors::read_metadata(cut).is_err(), "len {len}");
            expect_format(cut, "");
        }
        // Extra trailing bytes are rejected too.
        let mut long = bytes.clone();
        long.push(0);
        expect_format(&long, "not a valid safetensors file");
    }
}

#[test]
fn garbage_and_invalid_header_json_are_format_errors() {
    let mut rng = StdRng::seed_from_u64(0x21);
    for len in [0usize, 1, 7, 8, 9, 16, 100, 1000] {
        for _ in 0..20 {
            let junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            expect_format(&junk, "");
        }
    }
    // A plausible header length followed by bytes that are not JSON / not UTF-8 / wrong JSON.
    for header in [
        &b"{not json}      "[..],
        &[0xff; 16][..],
        &b"[1, 2, 3]       "[..],
    ] {
        let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(header);
        expect_format(&bytes, "not a valid safetensors file");
    }
    // A header length beyond the file.
    let mut bytes = 1_000u64.to_le_bytes().to_vec();
    bytes.extend_from_slice(b"{}      ");
    expect_format(&bytes, "not a valid safetensors file");
    // A valid safetensors file from another tool: no metadata at all.
    let mut other: BTreeMap<String, Raw> = BTreeMap::new();
    other.insert(
        "x".into(),
        Raw {
            dtype: Dtype::F32,
            shape: vec![1],
            data: vec![0; 4],
        },
    );
    expect_format(&build(&(other, None)), "no __metadata__");
}

#[test]
fn metadata_errors_are_reported() {
    for storage in STORAGES {
        let (_, p) = base(storage);
        let with = |key: &str, value: Option<&str>| {
            let mut q = p.clone();
            let meta = q.1.as_mut().unwrap();
            match value {
                Some(v) => meta.insert(key.to_owned(), v.to_owned()),
                None => meta.remove(key),
            };
            build(&q)
        };
        expect_format(&with("format", None), "missing metadata key \"format\"");
        expect_format(&with("format", Some("pt")), "expected \"ternary\"");
        expect_format(
            &with("format_version", None),
            "missing metadata key \"format_version\"",
        );
        expect_format(
            &with("format_version", Some("2")),
            "unsupported format version \"2\"",
        );
        expect_format(
            &with("format_version", Some("1.0")),
            "unsupported format version",
        );
        expect_format(&with("m.rows", None), "missing metadata key \"m.rows\"");
        expect_format(&with("m.cols", None), "missing metadata key \"m.cols\"");
        expect_format(
            &with("m.scale_layout", None),
            "missing metadata key \"m.scale_layout\"",
        );
        expect_format(
            &with("m.group_size", None),
            "missing metadata key \"m.group_size\"",
        );
        for bad in [
            "",
            "-3",
            "+3",
            "03",
            "3.0",
            "three",
            " 3",
            "99999999999999999999999",
        ] {
            expect_format(
                &with("m.rows", Some(bad)),
                "expected an unsigned decimal integer",
            );
        }
        let too_big = (MAX_DIM + 1).to_string();
        expect_format(&with("m.cols", Some(&too_big)), "above the format limit");
        expect_format(&with("m.group_size", Some("48")), "multiple of 32");
        expect_format(&with("m.group_size", Some("0")), "multiple of 32");
        expect_format(
            &with("m.scale_layout", Some("per_col")),
            "expected \"per_row\"",
        );
        expect_format(&with("m.storage", Some("bits")), "expected \"planes\"");
        // Removing the storage key orphans the tensors.
        expect_format(&with("m.storage", None), "not described by the metadata");
        // The other storage kind needs tensors that are not there.
        let other = match storage {
            Storage::Planes => "packed",
            Storage::Packed => "planes",
        };
        expect_format(&with("m.storage", Some(other)), "missing tensor");
        // Per-row metadata with a group size present.
        let mut q = p.clone();
        q.1.as_mut()
            .unwrap()
            .insert("m.scale_layout".into(), "per_row".into());
        expect_format(&build(&q), "\"per_row\"");
        // Unknown extra keys are allowed.
        let ok = with("m.comment", Some("quantized with absmean"));
        assert_eq!(from_bytes(&ok).unwrap().len(), 1);
    }
}

#[test]
fn tensor_errors_are_reported() {
    for storage in STORAGES {
        let (m, p) = base(storage);
        let trit_tensor = match storage {
            Storage::Planes => "m.plus",
            Storage::Packed => "m.packed",
        };
        let alter = |name: &str, f: &dyn Fn(&mut Raw)| {
            let mut q = p.clone();
            f(q.0.get_mut(name).unwrap());
            build(&q)
        };
        // Missing tensors.
        for name in p.0.keys() {
            let mut q = p.clone();
            q.0.remove(name);
            expect_format(&build(&q), &format!("missing tensor \"{name}\""));
        }
        // Wrong dtypes with the right byte count.
        let wrong = match storage {
            Storage::Planes => Dtype::I32,
            Storage::Packed => Dtype::I8,
        };
        expect_format(
            &alter(trit_tensor, &|r| r.dtype = wrong),
            &format!("tensor \"{trit_tensor}\" has dtype {wrong}"),
        );
        expect_format(
            &alter("m.scales", &|r| r.dtype = Dtype::U32),
            "has dtype U32, expected F32",
        );
        // Shapes that disagree with the metadata (same bytes, other shape).
        let shape = p.0[trit_tensor].shape.clone();
        expect_format(
            &alter(trit_tensor, &|r| r.shape = vec![shape[1], shape[0]]),
            "expected [3,",
        );
        expect_format(
            &alter(trit_tensor, &|r| r.shape = vec![shape[0] * shape[1]]),
            "metadata says rows=3, cols=65",
        );
        expect_format(&alter("m.scales", &|r| r.shape = vec![9]), "m.scales");
        // Metadata that disagrees with the tensors.
        for (key, value) in [
            ("m.cols", "64"),
            ("m.cols", "200"),
            ("m.rows", "2"),
            ("m.group_size", "64"),
        ] {
            let mut q = p.clone();
            q.1.as_mut().unwrap().insert(key.into(), value.into());
            expect_format(&build(&q), "has shape");
        }
        // A stray tensor.
        let mut q = p.clone();
        q.0.insert(
            "m.extra".into(),
            Raw {
                dtype: Dtype::U8,
                shape: vec![1],
                data: vec![0],
            },
        );
        expect_format(&build(&q), "tensor \"m.extra\" is not described");
        // Non-finite scales.
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let b = alter("m.scales", &|r| {
                r.data[4..8].copy_from_slice(&bad.to_le_bytes())
            });
            expect_format(&b, "non-finite value in scales at index 1");
        }
        // Sanity: the matrix in the base file is what we think it is.
        assert_eq!(m.rows(), 3);
    }
}

#[test]
fn plane_content_errors_are_reported() {
    let (_, p) = base(Storage::Planes);
    let alter = |name: &str, word: usize, f: &dyn Fn(u32) -> u32| {
        let mut q = p.clone();
        let raw = q.0.get_mut(name).unwrap();
        let b = &mut raw.data[4 * word..4 * word + 4];
        let w = f(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        b.copy_from_slice(&w.to_le_bytes());
        build(&q)
    };
    // 65 columns → 4 words per row. Both planes set at row 1, column 40 (word 5, bit 8).
    let mut q = p.clone();
    for name in ["m.plus", "m.minus"] {
        let b = &mut q.0.get_mut(name).unwrap().data[20..24];
        let w = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) | 1 << 8;
        b.copy_from_slice(&w.to_le_bytes());
    }
    expect_format(&build(&q), "row 1, column 40 has both");
    // Padding bits: column 65 (word 2 of row 0, bit 1) and the all-padding word 3 of row 2.
    expect_format(
        &alter("m.plus", 2, &|w| w | 0b10),
        "padding bit set in row 0",
    );
    expect_format(
        &alter("m.minus", 11, &|w| w | 1 << 31),
        "padding bit set in row 2",
    );
}

#[test]
fn packed_content_errors_are_reported() {
    let (_, p) = base(Storage::Packed);
    // 65 columns → 13 bytes per row, the last byte holding exactly 5 columns (no padding trit).
    let alter = |i: usize, b: u8| {
        let mut q = p.clone();
        q.0.get_mut("m.packed").unwrap().data[i] = b;
        build(&q)
    };
    for bad in [243u8, 250, 255] {
        expect_format(
            &alter(14, bad),
            &format!("packed row 1, byte 1: value {bad} exceeds 242"),
        );
    }
    // Padding trits: a 1×3 matrix has two padding trits (digits 3 and 4) in its only byte.
    let m = TernaryMatrix::from_trits(1, 3, &[1, -1, 0], Scales::per_row(vec![1.0])).unwrap();
    let mut q = parts(&to_bytes(&[("m", &m)], Storage::Packed).unwrap());
    let data = &mut q.0.get_mut("m.packed").unwrap().data;
    // Digits (2, 0, 1, 1, 1): 2·1 + 0·3 + 1·9 + 1·27 + 1·81.
    assert_eq!(data[0], 119);
    data[0] += 27; // digit 3: 1 → 2, i.e. padding trit +1.
    expect_format(&build(&q), "non-zero padding trit");
}

#[test]
fn save_rejects_colliding_names_and_oversized_matrices() {
    let m = TernaryMatrix::zeros(1, 8, Scales::per_row(vec![1.0])).unwrap();
    let f = FloatTensor::new(vec![1], vec![1.0]).unwrap();
    for tensors in [
        vec![("a", TensorRef::Ternary(&m)), ("a", TensorRef::Ternary(&m))],
        vec![
            ("a", TensorRef::Ternary(&m)),
            ("a.plus", TensorRef::Float(&f)),
        ],
        vec![("a", TensorRef::Float(&f)), ("a", TensorRef::Float(&f))],
        vec![("", TensorRef::Float(&f))],
        vec![("__metadata__", TensorRef::Float(&f))],
    ] {
        let e = io::tensors_to_bytes(&tensors, Storage::Planes).unwrap_err();
        assert!(matches!(e, TernaryError::Config(_)), "{e}");
    }
    let wide = TernaryMatrix::zeros(0, MAX_DIM + 1, Scales::per_row(vec![])).unwrap();
    let e = to_bytes(&[("w", &wide)], Storage::Planes).unwrap_err();
    assert!(e.to_string().contains("at most"), "{e}");
    let e = FloatTensor::new(vec![2], vec![1.0, f32::NAN]).unwrap_err();
    assert!(matches!(e, TernaryError::NonFinite { index: 1, .. }), "{e}");
    let e = FloatTensor::new(vec![2, 2], vec![1.0]).unwrap_err();
    assert!(matches!(e, TernaryError::Shape(_)), "{e}");
}

#[test]
fn float_tensor_errors_are_reported() {
    let f = FloatTensor::new(vec![2], vec![1.0, 2.0]).unwrap();
    let bytes = io::tensors_to_bytes(&[("f", TensorRef::Float(&f))], Storage::Planes).unwrap();
    let p = parts(&bytes);
    let mut q = p.clone();
    q.0.get_mut("f").unwrap().dtype = Dtype::I32;
    assert!(
        tensors_from_bytes(&build(&q))
            .unwrap_err()
            .to_string()
            .contains("expected F32")
    );
    let mut q = p.clone();
    q.0.get_mut("f").unwrap().data[0..4].copy_from_slice(&f32::NAN.to_le_bytes());
    let e = tensors_from_bytes(&build(&q)).unwrap_err();
    assert!(e.to_string().contains("non-finite"), "{e}");
    // `from_bytes` (matrices only) still validates the header-level structure.
    let mut q = p.clone();
    q.0.remove("f");
    expect_format(&build(&q), "missing tensor \"f\"");
}

// ------------------------------------------------------------------------------------------
// Files and atomic writes
// ------------------------------------------------------------------------------------------

#[test]
fn file_errors_carry_the_path() {
    let dir = TempDir::new("io-errpath");
    let missing = dir.path("nope.safetensors");
    let e = load(&missing).unwrap_err();
    assert!(
        matches!(&e, TernaryError::Io { path, .. } if path == &missing),
        "{e}"
    );
    let junk = dir.path("junk.safetensors");
    std::fs::write(&junk, b"definitely not safetensors").unwrap();
    let e = load(&junk).unwrap_err();
    assert!(
        matches!(&e, TernaryError::Format { path: Some(p), .. } if p == &junk),
        "{e}"
    );
    assert!(e.to_string().contains("junk.safetensors"), "{e}");
}

#[test]
fn save_into_missing_directory_is_an_io_error_and_creates_nothing() {
    let dir = TempDir::new("io-nodir");
    let m = TernaryMatrix::zeros(1, 8, Scales::per_row(vec![1.0])).unwrap();
    let target = dir.path("missing/sub/m.safetensors");
    let e = save(&target, &[("m", &m)], Storage::Planes).unwrap_err();
    assert!(matches!(e, TernaryError::Io { .. }), "{e}");
    assert!(dir.entries().is_empty());
}

#[test]
fn failed_save_leaves_the_target_and_no_temporary_file() {
    let dir = TempDir::new("io-fail");
    let mut rng = StdRng::seed_from_u64(0x30);
    let a = random_matrix(&mut rng, 4, 100, None);
    let target = dir.path("m.safetensors");
    save(&target, &[("a", &a)], Storage::Packed).unwrap();
    let before = std::fs::read(&target).unwrap();

    // Fails before writing (invalid input).
    let e = save(&target, &[("a", &a), ("a", &a)], Storage::Planes).unwrap_err();
    assert!(matches!(e, TernaryError::Config(_)), "{e}");
    assert_eq!(std::fs::read(&target).unwrap(), before);

    // Fails at the rename (the target is a non-empty directory): the temporary file, fully
    // written by then, must be removed.
    let blocker = dir.path("blocker");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("keep"), b"x").unwrap();
    let e = save(&blocker, &[("a", &a)], Storage::Planes).unwrap_err();
    assert!(matches!(e, TernaryError::Io { .. }), "{e}");
    assert_eq!(dir.entries(), ["blocker", "m.safetensors"]);
    assert_eq!(std::fs::read(blocker.join("keep")).unwrap(), b"x");
    assert_eq!(std::fs::read(&target).unwrap(), before);

    // A path with no file name.
    let e = save(Path::new("/"), &[("a", &a)], Storage::Planes).unwrap_err();
    assert!(matches!(e, TernaryError::Io { .. }), "{e}");
}

#[test]
fn save_replaces_an_existing_file_completely_and_load_does_not_modify_it() {
    let dir = TempDir::new("io-replace");
    let mut rng = StdRng::seed_from_u64(0x31);
    let big = random_matrix(&mut rng, 64, 1536, Some(128));
    let small = random_matrix(&mut rng, 2, 33, None);
    let target = dir.path("m.safetensors");
    save(&target, &[("big", &big)], Storage::Planes).unwrap();
    save(&target, &[("small", &small)], Storage::Packed).unwrap();
    // No trace of the larger previous content (a truncating in-place write could leave some).
    let bytes = std::fs::read(&target).unwrap();
    assert_eq!(
        bytes,
        to_bytes(&[("small", &small)], Storage::Packed).unwrap()
    );
    assert_eq!(load(&target).unwrap(), vec![("small".to_owned(), small)]);
    assert_eq!(
        std::fs::read(&target).unwrap(),
        bytes,
        "load must not modify the file"
    );
    assert_eq!(dir.entries(), ["m.safetensors"]);
    // A relative path in the current directory also works (parent "" → ".").
    let rel = PathBuf::from(format!("ternary-io-rel-{}.safetensors", std::process::id()));
    save(&rel, &[("big", &big)], Storage::Packed).unwrap();
    let got = load_one(&rel, "big");
    std::fs::remove_file(&rel).unwrap();
    assert_eq!(got.unwrap(), big);
}

#[test]
fn concurrent_readers_never_see_a_partial_file() {
    let dir = TempDir::new("io-concurrent");
    let mut rng = StdRng::seed_from_u64(0x32);
    let a = random_matrix(&mut rng, 32, 1536, Some(64));
    let b = random_matrix(&mut rng, 8, 65, None);
    let target = dir.path("m.safetensors");
    save(&target, &[("a", &a)], Storage::Planes).unwrap();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            for i in 0..40 {
                let (m, st) = if i % 2 == 0 {
                    (&b, Storage::Packed)
                } else {
                    (&a, Storage::Planes)
                };
                save(&target, &[(if i % 2 == 0 { "b" } else { "a" }, m)], st).unwrap();
            }
        });
        let mut reads = 0;
        while !writer.is_finished() || reads == 0 {
            let got = load(&target).unwrap();
            assert!(
                got == vec![("a".to_owned(), a.clone())]
                    || got == vec![("b".to_owned(), b.clone())],
                "read a file that is neither version"
            );
            reads += 1;
        }
        writer.join().unwrap();
    });
    assert_eq!(dir.entries(), ["m.safetensors"]);
}

#[test]
fn planes_tensors_match_in_memory_words() {
    let mut rng = StdRng::seed_from_u64(0x33);
    for cols in [1, 64, 65, 576] {
        let m = random_matrix(&mut rng, 3, cols, Some(32));
        let (tensors, _) = parts(&to_bytes(&[("x", &m)], Storage::Planes).unwrap());
        assert_eq!(tensors["x.plus"].shape, vec![3, words_per_row(cols)]);
        assert_eq!(tensors["x.plus"].data, u32_bytes(m.plus()));
        assert_eq!(tensors["x.minus"].data, u32_bytes(m.minus()));
        let (tensors, _) = parts(&to_bytes(&[("x", &m)], Storage::Packed).unwrap());
        assert_eq!(tensors["x.packed"].shape, vec![3, bytes_per_row(cols)]);
        assert_eq!(
            tensors["x.packed"].data,
            ternary_core::pack::pack(&m).bytes()
        );
    }
}

#[test]
fn output_should_be_deterministic_with_a_sorted_header() {
    let mut rng = StdRng::seed_from_u64(0x34);
    let a = random_matrix(&mut rng, 3, 70, Some(32));
    let b = random_matrix(&mut rng, 2, 9, None);
    let f = FloatTensor::new(vec![2], vec![0.25, -1.0]).unwrap();
    let tensors = [
        ("zeta", TensorRef::Ternary(&a)),
        ("alpha", TensorRef::Ternary(&b)),
        ("mid", TensorRef::Float(&f)),
    ];
    for storage in STORAGES {
        let first = io::tensors_to_bytes(&tensors, storage).unwrap();
        // The safetensors crate emits its metadata map in random (per-HashMap) order; ours
        // must not depend on it.
        for _ in 0..20 {
            assert_eq!(io::tensors_to_bytes(&tensors, storage).unwrap(), first);
        }
        let n = u64::from_le_bytes(first[..8].try_into().unwrap()) as usize;
        assert_eq!(n % 8, 0);
        let header = std::str::from_utf8(&first[8..8 + n]).unwrap();
        let expected_start = format!(
            "{{\"__metadata__\":{{\"alpha.cols\":\"9\",\"alpha.rows\":\"2\",\
             \"alpha.scale_layout\":\"per_row\",\"alpha.storage\":\"{}\",\"format\":\"ternary\",\
             \"format_version\":\"1\",\"mid.storage\":\"f32\",",
            storage.as_str()
        );
        assert!(header.starts_with(&expected_start), "{header}");
        assert_eq!(tensors_from_bytes(&first).unwrap().len(), 3);
    }
}

#[test]
fn huge_data_offsets_are_a_format_error_not_an_overflow_panic() {
    // 16 contiguous U8 tensors ending at 2^64 − 1: a header the safetensors crate alone sums
    // with an unchecked add (a panic under overflow checks, as in this test profile).
    let big: u64 = 1 << 60;
    let mut entries = Vec::new();
    let mut start = 0u64;
    for k in 0..16 {
        let size = if k == 15 { big - 1 } else { big };
        entries.push(format!(
            "\"t{k:02}\":{{\"dtype\":\"U8\",\"shape\":[{size}],\"data_offsets\":[{start},{}]}}",
            start + size
        ));
        start += size;
    }
    let mut header = format!("{{{}}}", entries.join(","));
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    expect_format(&bytes, "beyond the");
}

#[test]
fn random_corruptions_never_panic() {
    // Flip random bytes of valid files (header and data alike); every result must be a clean
    // `Ok` or `Format` error. Corruptions that land in a scale or a trit may still decode.
    let mut rng = StdRng::seed_from_u64(0x40);
    let m = random_matrix(&mut rng, 3, 70, Some(32));
    let f = FloatTensor::new(vec![2], vec![1.0, -1.0]).unwrap();
    let (mut ok, mut rejected) = (0, 0);
    for storage in STORAGES {
        let bytes = io::tensors_to_bytes(
            &[("m", TensorRef::Ternary(&m)), ("f", TensorRef::Float(&f))],
            storage,
        )
        .unwrap();
        for _ in 0..1500 {
            let mut b = bytes.clone();
            for _ in 0..rng.random_range(1..4) {
                let i = rng.random_range(0..b.len());
                b[i] = rng.random();
            }
            match tensors_from_bytes(&b) {
                Ok(_) => ok += 1,
                Err(TernaryError::Format { .. }) => rejected += 1,
                Err(e) => panic!("unexpected error kind: {e:?}"),
            }
        }
    }
    assert!(ok > 0 && rejected > 0, "ok={ok} rejected={rejected}");
}
