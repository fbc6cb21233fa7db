//! The runtime on the real SmolLM2-135M (`cargo xtask fetch-model`): logits against the
//! reference (prefill, then decode steps) within `common::TOL` of the range, with the file's
//! weights dequantized to `f32` and kept in their Q4_1/Q8_0 blocks, and greedy tokens
//! identical to the reference's.

mod common;

use common::{TOL, assert_close, reference, runtime_steps};
use ternary_layers::Cpu;
use ternary_models::fetch::smollm2_for_test;
use ternary_models::{BurnDecoder, LinearImpl, Sampling, generate_with, load_gguf_with};
use ternary_runtime::{Runtime, RuntimeOptions};

#[test]
#[ignore = "needs the model: cargo xtask fetch-model"]
fn smollm2_should_match_reference() {
    for linear in [LinearImpl::Host, LinearImpl::Quantized] {
        let m = load_gguf_with::<Cpu>(&smollm2_for_test(), &Default::default(), linear).unwrap();
        let ids = m
            .tokenizer
            .encode(
                "The capital of France is Paris, and the capital of Italy is",
                true,
            )
            .unwrap();
        let want = reference(&m.model, &ids, ids.len() - 4);
        let mut rt = Runtime::from_model(&m.model, RuntimeOptions::with_threads(2)).unwrap();
        let got = runtime_steps(&mut rt, &ids, ids.len() - 4);
        let worst = assert_close(&want, &got, &format!("SmolLM2 {linear:?}"));
        eprintln!("SmolLM2 {linear:?}: worst {worst:.2e} of the range (tolerance {TOL:e})");
        let prompt = &ids[..ids.len() - 4];
        let (a, _) = generate_with(
            &mut BurnDecoder::new(&m.model),
            prompt,
            16,
            Sampling::Greedy,
            None,
            |_| {},
        )
        .unwrap();
        let (b, _) = generate_with(&mut rt, prompt, 16, Sampling::Greedy, None, |_| {}).unwrap();
        assert_eq!(a, b, "SmolLM2 {linear:?} greedy tokens");
    }
}
