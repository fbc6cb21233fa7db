//! The attention-score seam of the Llama model: installing, restricting and resetting a
//! [`ScoreFn`] (the float scores, the ternary popcount scores from `ternary-layers`, a host-side
//! float implementation) on the tiny fixture model.

use std::path::PathBuf;

use burn::tensor::{Tensor, TensorData};
use ternary_layers::{Cpu, FloatScores, ScoreFn, TernaryScores, to_rows};
use ternary_models::{Logits, load_safetensors_dir};

fn tiny_dir() -> PathBuf {
    ternary_testkit::fixture_path("tiny-llama")
}

#[test]
fn model_score_seam_should_switch_and_reset() {
    let mut m = load_safetensors_dir::<Cpu>(tiny_dir(), &Default::default())
        .unwrap()
        .model;
    let ids: Vec<u32> = (0..12).map(|i| (i * 7 + 3) % 100).collect();
    let run = |m: &ternary_models::Llama<Cpu>| {
        to_rows(m.forward(&ids, &mut m.new_cache(), Logits::All).unwrap()).unwrap()
    };
    assert_eq!(m.score_fn().name(), "float");
    let base = run(&m);
    // Installing the float scores explicitly changes nothing, bit for bit.
    m.set_score_fn(Box::new(FloatScores));
    assert_eq!(run(&m), base);
    m.set_score_fn(Box::new(TernaryScores::default()));
    assert_eq!(m.score_fn().name(), "ternary(absmean, vector, L=1)");
    let tern = run(&m);
    assert!(tern.iter().all(|v| v.is_finite()));
    assert_ne!(tern, base, "ternary scores should change the logits");
    // Incremental decoding with the KV cache gives the same last logits as the full pass.
    let mut cache = m.new_cache();
    m.forward(&ids[..7], &mut cache, Logits::Last).unwrap();
    let mut last = Vec::new();
    for &t in &ids[7..] {
        last = to_rows(m.forward(&[t], &mut cache, Logits::Last).unwrap()).unwrap();
    }
    let vocab = last.len();
    let full_last = &tern[tern.len() - vocab..];
    for (i, (&a, &b)) in last.iter().zip(full_last).enumerate() {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "[{i}] {a} vs {b}");
    }
    // Restricted to no block: the float scores, bit for bit; to one block: between the two.
    m.set_score_fn(Box::new(TernaryScores::default().only_layers(vec![])));
    assert_eq!(run(&m), base);
    m.set_score_fn(Box::new(TernaryScores::default().only_layers(vec![1])));
    assert_eq!(
        m.score_fn().name(),
        "ternary(absmean, vector, L=1) in layers [1]"
    );
    let one = run(&m);
    assert!(one != base && one != tern);
    m.reset_score_fn();
    assert_eq!(run(&m), base);
}

/// Float scores computed on the host from `into_data` of the seam's tensors: checks that the
/// host view of `q` and `k` (strided views in the model) is the logical `[heads, tokens, d]`.
#[derive(Debug)]
struct HostFloatScores;

impl ScoreFn<Cpu> for HostFloatScores {
    fn scores(&self, _layer: usize, q: Tensor<Cpu, 3>, k: Tensor<Cpu, 3>) -> Tensor<Cpu, 3> {
        let [nh, n, d] = q.dims();
        let [nkv, total, _] = k.dims();
        let q = q.into_data().into_vec::<f32>().unwrap();
        let k = k.into_data().into_vec::<f32>().unwrap();
        let mut s = vec![0f32; nh * n * total];
        for h in 0..nh {
            for i in 0..n {
                for j in 0..total {
                    let qv = &q[(h * n + i) * d..][..d];
                    let kv = &k[((h / (nh / nkv)) * total + j) * d..][..d];
                    s[(h * n + i) * total + j] = qv.iter().zip(kv).map(|(a, b)| a * b).sum();
                }
            }
        }
        Tensor::from_data(TensorData::new(s, [nh, n, total]), &Default::default())
    }

    fn name(&self) -> String {
        "host-float".into()
    }
}

#[test]
fn host_view_of_the_seam_tensors_should_be_logical_order() {
    let mut m = load_safetensors_dir::<Cpu>(tiny_dir(), &Default::default())
        .unwrap()
        .model;
    let ids: Vec<u32> = (0..12).map(|i| (i * 7 + 3) % 100).collect();
    let base = to_rows(m.forward(&ids, &mut m.new_cache(), Logits::All).unwrap()).unwrap();
    m.set_score_fn(Box::new(HostFloatScores));
    let host = to_rows(m.forward(&ids, &mut m.new_cache(), Logits::All).unwrap()).unwrap();
    for (i, (&a, &b)) in host.iter().zip(&base).enumerate() {
        assert!((a - b).abs() <= 1e-4 * (1.0 + b.abs()), "[{i}] {a} vs {b}");
    }
}
