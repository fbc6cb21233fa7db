//! How well popcount attention scores agree with float `QKᵀ`, on random and structured data.
//!
//! ```text
//! cargo run --release -p ternary-kernels --example attention_agreement
//! ```
//!
//! Computes the scores with the host reference of [`ternary_kernels::attention::cpu`], which the
//! conformance suite checks the device kernels against (planes and dots bit-exact, scores within
//! `1e-6` relative), so the numbers hold for every runtime. Prints one markdown table.

use ternary_core::quant::AttentionQuant;
use ternary_core::rng::SplitMix64;
use ternary_kernels::attention::{QkQuant, cpu};

const HEADS: usize = 4;
const DIM: usize = 128;
const TOKENS: usize = 256;
const TOP_K: usize = 8;

/// `tokens × heads × dim` i.i.d. standard normal values.
fn gaussian(rng: &mut SplitMix64, tokens: usize) -> Vec<f32> {
    (0..tokens * HEADS * DIM).map(|_| rng.normal()).collect()
}

fn main() -> Result<(), ternary_kernels::KernelError> {
    let mut rng = SplitMix64::new(2024);
    let scale = 1.0 / (DIM as f32).sqrt();

    // 1. i.i.d. Gaussian queries and keys.
    let k_iid = gaussian(&mut rng, TOKENS);
    let q_iid = gaussian(&mut rng, TOKENS);

    // 2. Planted retrieval: query i is key (7i mod T) plus noise of half the signal's scale.
    let q_planted: Vec<f32> = (0..TOKENS * HEADS * DIM)
        .map(|idx| {
            let (t, rest) = (idx / (HEADS * DIM), idx % (HEADS * DIM));
            k_iid[((7 * t) % TOKENS) * HEADS * DIM + rest] + 0.5 * rng.normal()
        })
        .collect();

    // 3. Outlier channels (as in LLM activations): 4 of 128 dims ×10 in both Q and K.
    let outlier = |v: &[f32]| -> Vec<f32> {
        v.iter()
            .enumerate()
            .map(|(i, &x)| if i % DIM < 4 { 10.0 * x } else { x })
            .collect()
    };
    let (q_out, k_out) = (outlier(&q_iid), outlier(&k_iid));

    println!(
        "| data | quantization | correlation | top-{TOP_K} overlap | top-1 agreement | softmax TV distance |"
    );
    println!("|---|---|---|---|---|---|");
    for (name, q, k) in [
        ("i.i.d. Gaussian", &q_iid, &k_iid),
        ("planted match (noise 0.5)", &q_planted, &k_iid),
        ("4 outlier channels x10", &q_out, &k_out),
    ] {
        let exact = cpu::float_scores(q, k, TOKENS, TOKENS, HEADS, DIM, scale, false);
        for (label, quant) in [
            ("Ternary, TWN (0.7, refit)", QkQuant::TWN),
            (
                "Ternary, abs-mean (1/2)",
                QkQuant::Ternary(AttentionQuant::abs_mean()),
            ),
            ("Binary", QkQuant::Binary),
        ] {
            let qh = cpu::quantize_heads(q, TOKENS * HEADS, DIM, quant)?;
            let kh = cpu::quantize_heads(k, TOKENS * HEADS, DIM, quant)?;
            let approx = cpu::scores(&qh, &kh, TOKENS, TOKENS, HEADS, scale, false)?;
            let a = cpu::agreement(&approx, &exact, HEADS * TOKENS, TOKENS, TOP_K);
            println!(
                "| {name} | {label} | {:.3} | {:.3} | {:.3} | {:.3} |",
                a.correlation, a.top_k_overlap, a.top1, a.softmax_tv
            );
        }
    }
    println!(
        "\n{HEADS} heads x {TOKENS} queries x {TOKENS} keys, head dim {DIM}, scale 1/sqrt({DIM}), \
         no mask; metrics averaged over (head, query) rows."
    );
    Ok(())
}
