//! From float weights to a ternary matrix, products, an edit, and a file — the whole core API
//! in one screen. Run: `cargo run --release -p ternary-core --example quickstart`.

use ternary_core::io::{self, Storage};
use ternary_core::kernels::{self, Level};
use ternary_core::quant::{Method, QuantConfig, quantize};
use ternary_core::{QuantizedActivations, ScaleLayout};

fn main() -> ternary_core::Result<()> {
    // A 576 × 1536 layer (SmolLM2's MLP down-projection shape) with Gaussian-ish weights.
    let (rows, cols) = (576, 1536);
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32
    };
    let w: Vec<f32> = (0..rows * cols)
        .map(|_| (0..4).map(|_| uniform()).sum::<f32>() - 2.0)
        .collect();

    // 1. Quantize: TWN thresholds, one scale per group of 64 input columns.
    let cfg = QuantConfig {
        method: Method::twn(),
        layout: ScaleLayout::PerGroup { group_size: 64 },
    };
    let (m, stats) = quantize(&w, rows, cols, &cfg)?;
    println!(
        "quantized {rows}x{cols} with {}: relative error {:.3}, zeros {:.1}%, {:.2} bits/weight in memory",
        cfg.method,
        stats.rel_frobenius_error,
        100.0 * stats.zero_fraction,
        m.bits_per_weight()
    );

    // 2. Multiply: f32 activations and int8 activations, on the best SIMD level of this CPU.
    let x: Vec<f32> = (0..cols).map(|_| uniform() - 0.5).collect();
    let mut y = vec![0f32; rows];
    kernels::gemv_f32(&m, &x, &mut y)?;
    let a = QuantizedActivations::quantize(&x, 1, cols)?;
    let mut y8 = vec![0f32; rows];
    kernels::gemm_i8(&m, &a, &mut y8)?;
    let dense = m.dequantize();
    let y_ref: Vec<f32> = dense
        .chunks_exact(cols)
        .map(|row| row.iter().zip(&x).map(|(w, x)| w * x).sum())
        .collect();
    let err = |v: &[f32]| {
        let num: f32 = v.iter().zip(&y_ref).map(|(a, b)| (a - b) * (a - b)).sum();
        let den: f32 = y_ref.iter().map(|b| b * b).sum();
        (num / den).sqrt()
    };
    println!(
        "level {}: f32 path rel. error vs dequantized matmul {:.1e}, int8 path {:.1e}",
        Level::detect().name(),
        err(&y),
        err(&y8)
    );

    // 3. Edit one weight in O(1); the invariant plus & minus == 0 holds by construction.
    let mut m = m;
    let old = m.set(7, 100, -1)?;
    println!("edited (7, 100): {old} -> {}", m.get(7, 100)?);

    // 4. Save (atomically) and load back, as planes and as base-3 packed trits.
    let dir = std::env::temp_dir();
    for storage in [Storage::Planes, Storage::Packed] {
        let path = dir.join(format!(
            "ternary-quickstart-{}.safetensors",
            storage.as_str()
        ));
        io::save(&path, &[("mlp.down", &m)], storage)?;
        let back = io::load_one(&path, "mlp.down")?;
        assert_eq!(back, m);
        let bytes = std::fs::metadata(&path).map(|md| md.len()).unwrap_or(0);
        println!(
            "{:>6}: {} bytes on disk, {:.2} bits/weight",
            storage.as_str(),
            bytes,
            bytes as f64 * 8.0 / (rows * cols) as f64
        );
        let _ = std::fs::remove_file(&path);
    }
    Ok(())
}
