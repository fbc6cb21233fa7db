//! `sparse-cold [--calls N]`: what the sparsity suite's cold-cache column measures. The
//! 95%-unstructured 4096 × 4096 index-list product (as `bench-sparsity` builds it), one token,
//! `f32` and int8 activations, timed three ways per call: right after reading a buffer larger
//! than the L3 (*cold*, the suite's regime), again right after that (*warm*), and after 2 ms
//! asleep without the flush (*idle*: the workers and the cores come back from idle, the caches
//! stay warm). Prints the minimum and median of each over `N` calls (default 40).
//!
//! `[RAYON_NUM_THREADS=1] [TERNARY_SIMD=avx2] cargo run --release -p ternary-bench --bin sparse-cold`
//!
//! With one thread cold minus warm is what DRAM costs the lists; with more, the spread of the
//! cold and idle times is mostly waking the rayon workers (the caller sits outside the pool).

use std::time::{Duration, Instant};

use ternary_bench::data::{gaussian_vec, uniform_vec};
use ternary_bench::machine::Flusher;
use ternary_core::QuantizedActivations;
use ternary_core::kernels::Level;
use ternary_core::quant::{self, QuantConfig};
use ternary_sparsity::prune::{Pruning, prune_ternary};
use ternary_sparsity::{IndexLists, KernelConfig, TernaryGemm};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut calls = 40usize;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--calls" => {
                calls = args
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&c| c > 0)
                    .ok_or("--calls needs a positive count")?;
            }
            _ => {
                return Err(
                    format!("unknown argument {a:?}; usage: sparse-cold [--calls N]").into(),
                );
            }
        }
    }
    let (rows, cols) = (4096, 4096);
    let w = gaussian_vec(rows * cols, 0x5eed_0000);
    let (mut m, _) = quant::quantize(&w, rows, cols, &QuantConfig::default())?;
    prune_ternary(&mut m, Some(&w), Pruning::Magnitude { sparsity: 0.95 })?;
    let lists = IndexLists::from_matrix(&m)?;
    let x = uniform_vec(cols, 0xacc1);
    let a = QuantizedActivations::quantize(&x, 1, cols)?;
    let mut y = vec![0f32; rows];
    let flusher = Flusher::new();
    let cfg = KernelConfig::auto();
    println!(
        "95%-unstructured {rows}x{cols} index lists, n = 1, level {}, {} rayon threads, {calls} calls (µs: min / median)",
        Level::detect().name(),
        rayon::current_num_threads()
    );
    for int8 in [false, true] {
        let call = |y: &mut [f32]| -> f64 {
            let t0 = Instant::now();
            let r = if int8 {
                lists.gemm_i8_with(cfg, &a, y)
            } else {
                lists.gemm_f32_with(cfg, &x, 1, y)
            };
            r.expect("shapes are consistent");
            t0.elapsed().as_secs_f64() * 1e6
        };
        let (mut cold, mut warm, mut idle) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..calls {
            flusher.flush();
            cold.push(call(&mut y));
            warm.push(call(&mut y));
            std::thread::sleep(Duration::from_millis(2));
            idle.push(call(&mut y));
        }
        let stat = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            format!("{:.0} / {:.0}", v[0], v[v.len() / 2])
        };
        println!(
            "{}: cold {}, warm {}, idle {}",
            if int8 { "int8" } else { "f32 " },
            stat(&mut cold),
            stat(&mut warm),
            stat(&mut idle)
        );
    }
    Ok(())
}
