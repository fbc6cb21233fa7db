//! Writes a cross-language fixture: the same tensors as a planes file and a packed file, plus a
//! JSON sidecar with the expected trits, scales and a reference matrix-vector product.
//!
//! ```text
//! cargo run -p ternary-core --example write_fixture -- target/fixture
//! python3 fixtures/check_safetensors.py target/fixture
//! ```
//!
//! Output (in the given directory, created if missing):
//! `ternary_planes.safetensors`, `ternary_packed.safetensors`, `expected.json`.

use std::path::PathBuf;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use ternary_core::io::{FloatTensor, Storage, TensorRef, save_tensors};
use ternary_core::{ScaleLayout, Scales, TernaryMatrix, reference};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "target/fixture".into()),
    );
    std::fs::create_dir_all(&dir)?;
    let mut rng = StdRng::seed_from_u64(2024);

    // (name, rows, cols, group size or per-row): odd widths exercise row padding.
    let shapes: [(&str, usize, usize, Option<usize>); 4] = [
        ("tiny", 3, 7, None),
        ("layers.0.attn.q", 5, 65, Some(32)),
        ("layers.0.mlp.up", 4, 1536, Some(128)),
        ("layers.1.mlp.down", 6, 576, None),
    ];
    let mut matrices = Vec::new();
    let mut expected = serde_json::Map::new();
    for (name, rows, cols, group) in shapes {
        let trits: Vec<i8> = (0..rows * cols).map(|_| rng.random_range(-1..=1)).collect();
        let layout = match group {
            None => ScaleLayout::PerRow,
            Some(group_size) => ScaleLayout::PerGroup { group_size },
        };
        let n_scales = rows * layout.groups_per_row(cols);
        let scales: Vec<f32> = (0..n_scales).map(|_| rng.random_range(0.01..1.0)).collect();
        let m = TernaryMatrix::from_trits(rows, cols, &trits, Scales::new(layout, scales.clone()))?;
        let x: Vec<f32> = (0..cols).map(|_| rng.random_range(-1.0..1.0)).collect();
        let y = reference::gemm_f32(&m, &x, 1)?;
        expected.insert(
            name.to_owned(),
            json!({
                "kind": "ternary",
                "rows": rows,
                "cols": cols,
                "group_size": group,
                "trits": trits,
                "scales": scales,
                "x": x,
                "y": y,
            }),
        );
        matrices.push((name, m));
    }
    let norm_values: Vec<f32> = (0..65).map(|_| rng.random_range(0.5..1.5)).collect();
    let norm = FloatTensor::new(vec![65], norm_values.clone())?;
    expected.insert(
        "norm".into(),
        json!({ "kind": "f32", "shape": [65], "values": norm_values }),
    );

    let mut tensors: Vec<(&str, TensorRef<'_>)> = matrices
        .iter()
        .map(|(n, m)| (*n, TensorRef::Ternary(m)))
        .collect();
    tensors.push(("norm", TensorRef::Float(&norm)));
    for (file, storage) in [
        ("ternary_planes.safetensors", Storage::Planes),
        ("ternary_packed.safetensors", Storage::Packed),
    ] {
        save_tensors(dir.join(file), &tensors, storage)?;
    }
    let sidecar = dir.join("expected.json");
    std::fs::write(&sidecar, serde_json::to_string(&Value::Object(expected))?)?;
    println!("wrote fixture to {}", dir.display());
    Ok(())
}
