//! SentencePiece tokenization against llama.cpp's own ids.
//!
//! `fixtures/tokenizer-spm/llama-spm.json` holds the ids llama.cpp's `llama-tokenize` gives
//! for LLaMA's 32k SentencePiece vocabulary (llama.cpp's `models/ggml-vocab-llama-spm.gguf`)
//! on llama.cpp's own tokenizer test texts, a few of ours and the perplexity text, written by
//! `scripts/spm_tokenizer_reference.py`. The vocabulary file (724 KB) is not committed: the
//! test reads it from the llama.cpp source that `scripts/llama_cpp.sh` unpacks (`.ci/run` calls
//! it with `--source-only` before the tests, so CI runs this test).

use std::path::PathBuf;
use ternary_models::Tokenizer;
use ternary_models::gguf::GgufFile;

fn llama_cpp_models_dir() -> PathBuf {
    let base = std::env::var_os("TERNARY_LLAMA_CPP_DIR").map_or_else(
        || {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/ternary/llama.cpp")
        },
        PathBuf::from,
    );
    base.join("0.3.36/llama_cpp_python-0.3.36/vendor/llama.cpp/models")
}

#[test]
#[ignore = "needs llama.cpp's vocabulary files: run scripts/llama_cpp.sh first"]
fn spm_should_tokenize_like_llama_cpp() {
    let gguf = llama_cpp_models_dir().join("ggml-vocab-llama-spm.gguf");
    let file = GgufFile::open(&gguf)
        .unwrap_or_else(|e| panic!("{}: {e} (run scripts/llama_cpp.sh)", gguf.display()));
    let tok = Tokenizer::from_gguf(&file).unwrap();
    assert!(tok.add_bos);
    let fixture = ternary_testkit::fixture_path("tokenizer-spm/llama-spm.json");
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture).unwrap()).unwrap();
    let cases = doc["cases"].as_array().unwrap();
    let mut same = 0;
    for c in cases {
        let text = c["text"].as_str().unwrap();
        let want: Vec<u32> = c["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        let got = tok.encode(text, true).unwrap();
        if got == want {
            same += 1;
        } else {
            eprintln!("differs on {text:?}:\n  ours      {got:?}\n  llama.cpp {want:?}");
        }
        // Decoding gives the text back (the prefix space is dropped again), unless the text
        // names special tokens (a space is added after them).
        if !text.contains('<') {
            assert_eq!(
                tok.decode(&got[1..]).unwrap(),
                text,
                "round trip of {text:?}"
            );
        }
    }
    assert_eq!(
        same,
        cases.len(),
        "{same}/{} texts tokenized identically",
        cases.len()
    );
}
