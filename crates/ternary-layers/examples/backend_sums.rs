//! How accurately Burn's two CPU backends reduce a distillation-sized tensor: the sum of a
//! `[256, 49152]` tensor and `Σ p·log p` of its row-wise softmax (what the distillation loss
//! sums), each against an `f64` reference (`docs/accuracy.md` §8o).
//!
//! `cargo run --release -p ternary-layers --example backend_sums`

use burn::tensor::activation::log_softmax;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use ternary_core::rng::Rng;
use ternary_layers::{Cpu, Flex};

const ROWS: usize = 256;
const COLS: usize = 49152;
const SEED: u64 = 20261206;

/// `(Σ x, Σ p·log p)` of `v` as `[ROWS, COLS]` on backend `B`, in `f32`.
fn on<B: Backend>(v: &[f32]) -> (f64, f64) {
    let t = Tensor::<B, 2>::from_data(
        TensorData::new(v.to_vec(), [ROWS, COLS]),
        &B::Device::default(),
    );
    let read = |x: Tensor<B, 1>| {
        let v = x.into_data().to_vec::<f32>().expect("an f32 sum");
        f64::from(v[0])
    };
    let lp = log_softmax(t.clone(), 1);
    (read(t.sum()), read(lp.clone().exp().mul(lp).sum()))
}

fn main() {
    println!("seed {SEED}: {ROWS} × {COLS} values uniform in [-2, 6)");
    let mut rng = Rng::new(SEED);
    let v: Vec<f32> = (0..ROWS * COLS)
        .map(|_| rng.next_f64() as f32 * 8.0 - 2.0)
        .collect();
    let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
    let mut plogp = 0.0;
    for row in v.chunks_exact(COLS) {
        let max = row.iter().fold(f64::MIN, |m, &x| m.max(f64::from(x)));
        let lse = max
            + row
                .iter()
                .map(|&x| (f64::from(x) - max).exp())
                .sum::<f64>()
                .ln();
        plogp += row
            .iter()
            .map(|&x| {
                let l = f64::from(x) - lse;
                l.exp() * l
            })
            .sum::<f64>();
    }
    println!(
        "{:<8} {:>18} {:>10} {:>18} {:>10}",
        "", "sum", "rel err", "Σ p·log p", "rel err"
    );
    println!(
        "{:<8} {sum:>18.4} {:>10} {plogp:>18.6} {:>10}",
        "f64", "—", "—"
    );
    for (name, (s, p)) in [("ndarray", on::<Cpu>(&v)), ("flex", on::<Flex>(&v))] {
        let (es, ep) = ((s - sum).abs() / sum.abs(), (p - plogp).abs() / plogp.abs());
        println!("{name:<8} {s:>18.4} {es:>10.2e} {p:>18.6} {ep:>10.2e}");
    }
}
