//! The CI slice of the fuzzing campaign (a fixed seed, 10,000 inputs per parser), the replay
//! of every regression fixture in `fixtures/fuzz/`, the seeds, and headers that claim `2^60`
//! elements. `cargo xtask fuzz --minutes N` runs the long campaign.

use std::time::Instant;

use ternary_fuzz::seeds;
use ternary_fuzz::{Budget, Corpus, Outcome, Parser, campaign, check, fixtures_root};

#[global_allocator]
static ALLOC: ternary_fuzz::alloc::CountingAlloc = ternary_fuzz::alloc::CountingAlloc;

/// The seed of the CI slice (`TERNARY_FUZZ_SEED` overrides it, to reproduce another run).
const CI_SEED: u64 = 20_240_601;
/// Inputs per parser in the CI slice.
const CI_INPUTS: u64 = 10_000;

fn seed() -> u64 {
    std::env::var("TERNARY_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(CI_SEED)
}

#[test]
fn ci_slice_has_no_panics_and_bounded_allocation() {
    let seed = seed();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .min(4);
    let mut report = Vec::new();
    let mut failed = Vec::new();
    let start = Instant::now();
    for p in Parser::ALL {
        let corpus = Corpus::new(p);
        let s = campaign(&corpus, seed, Budget::Inputs(CI_INPUTS), threads, None);
        assert_eq!(s.inputs, CI_INPUTS, "{}", p.name());
        report.push(format!(
            "{:>15}: {} inputs, {:.1}% accepted, {} failing, peak heap {} B, {:.2} s",
            p.name(),
            s.inputs,
            100.0 * s.accepted as f64 / s.inputs as f64,
            s.failures,
            s.max_peak.0,
            s.elapsed.as_secs_f64()
        ));
        // A slice that never gets past the first checks would prove little.
        assert!(s.accepted > 0, "{}: no input accepted", p.name());
        for f in &s.found {
            failed.push(format!(
                "{} input #{} (save it: cargo xtask fuzz --seed {seed} --parser {} --save-index {}): {}",
                p.name(),
                f.index,
                p.name(),
                f.index,
                f.failure
            ));
        }
    }
    eprintln!(
        "fuzz CI slice, seed {seed}, {threads} thread(s), {:.1} s:\n{}",
        start.elapsed().as_secs_f64(),
        report.join("\n")
    );
    assert!(failed.is_empty(), "failing inputs:\n{}", failed.join("\n"));
}

#[test]
fn every_regression_fixture_is_rejected_or_accepted_without_a_panic() {
    let all = ternary_fuzz::harness::fixtures(&fixtures_root());
    assert!(
        !all.is_empty(),
        "no fixtures under {}",
        fixtures_root().display()
    );
    let mut failed = Vec::new();
    for (p, path) in &all {
        let bytes = std::fs::read(path).unwrap();
        let v = check(*p, &bytes, 0, 0);
        if let Some(f) = v.failure {
            failed.push(format!("{}: {f}", path.display()));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

#[test]
fn every_seed_is_accepted() {
    for p in Parser::ALL {
        let corpus = Corpus::new(p);
        for (i, s) in corpus.seeds.iter().enumerate() {
            let v = check(p, s, 0, i as u64);
            assert!(
                v.failure.is_none(),
                "{} seed {i}: {:?}",
                p.name(),
                v.failure
            );
            // The GGUF zoo, v2 and quants seeds hold no model; every other seed is a complete file.
            if p != Parser::Gguf || i == 0 {
                assert_eq!(v.outcome, Outcome::Accepted, "{} seed {i}", p.name());
            }
        }
    }
}

#[test]
fn inputs_are_a_function_of_seed_and_index() {
    for p in Parser::ALL {
        let c = Corpus::new(p);
        for i in [0, 5, 100, 12_345] {
            assert_eq!(c.input(7, i), c.input(7, i), "{} #{i}", p.name());
        }
        assert!(
            (10..60).any(|i| c.input(7, i) != c.input(8, i)),
            "{}: the seed changes nothing",
            p.name()
        );
    }
}

/// A digest of the seeds and the first inputs of every parser.
fn inputs_digest() -> u64 {
    let mut all = Vec::new();
    for p in Parser::ALL {
        let c = Corpus::new(p);
        for i in 0..300 {
            all.extend_from_slice(&c.input(CI_SEED, i));
        }
    }
    ternary_fuzz::rng::fnv1a(&all)
}

/// Inputs must not depend on the process (hash-map order, addresses): `--save-index` in a new
/// process has to regenerate the input a run reported. This test runs itself again in a child
/// process and compares digests.
#[test]
fn inputs_are_the_same_in_another_process() {
    const CHILD: &str = "TERNARY_FUZZ_DIGEST_CHILD";
    let digest = inputs_digest();
    if std::env::var_os(CHILD).is_some() {
        println!("digest={digest}");
        return;
    }
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "inputs_are_the_same_in_another_process",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let child = stdout
        .lines()
        .find_map(|l| l.split("digest=").nth(1))
        .and_then(|d| d.split_whitespace().next())
        .unwrap_or_else(|| panic!("no digest from the child process: {stdout}"));
    assert_eq!(child, digest.to_string(), "inputs differ between processes");
}

/// `(parser, input)` pairs whose headers claim about `2^60` elements or bytes.
fn huge_claims() -> Vec<(Parser, &'static str, Vec<u8>)> {
    let huge = 1u64 << 60;
    let mut out = Vec::new();
    // GGUF: a tensor of 2^60 F32 weights, a metadata array of 2^60 items, a 2^60-byte string.
    let g = ternary_models::gguf::write_gguf(
        &[(
            "a",
            ternary_models::gguf::GgufValue::Array(vec![ternary_models::gguf::GgufValue::U8(1)]),
        )],
        &[ternary_models::gguf::GgufTensorData {
            name: "t".into(),
            dims: vec![1],
            kind: ternary_models::quant::GgmlType::F32,
            bytes: vec![0; 4],
        }],
    );
    let fields = ternary_fuzz::gguf::fields(&g);
    for kind in [
        ternary_fuzz::gguf::FieldKind::Dim,
        ternary_fuzz::gguf::FieldKind::ArrayLen,
        ternary_fuzz::gguf::FieldKind::StrLen,
        ternary_fuzz::gguf::FieldKind::TensorCount,
        ternary_fuzz::gguf::FieldKind::KvCount,
    ] {
        let f = fields.iter().find(|f| f.kind == kind).unwrap();
        let mut b = g.clone();
        b[f.at..f.at + 8].copy_from_slice(&huge.to_le_bytes());
        out.push((Parser::Gguf, "a GGUF count or dimension of 2^60", b));
    }
    // Safetensors: a tensor of shape [2^60], and ternary metadata rows = 2^60.
    let st = seeds::raw_safetensors(&[("f", "F32", vec![1 << 60], vec![0; 4])], None);
    out.push((Parser::Safetensors, "a safetensors shape [2^60]", st));
    let mut planes = seeds::safetensors()[0].clone();
    let text = String::from_utf8_lossy(&planes)
        .replace("\"a.rows\":\"3\"", "\"a.rows\":\"1152921504606846976\"");
    assert!(text.contains("1152921504606846976"));
    planes = text.into_bytes();
    out.push((Parser::Safetensors, "ternary rows = 2^60", planes));
    // Converted model, config.json: 2^60 layers, hidden size, vocabulary.
    for key in ["num_hidden_layers", "hidden_size", "vocab_size"] {
        let mut c: serde_json::Value = serde_json::from_str(seeds::TINY_CONFIG).unwrap();
        c[key] = serde_json::Value::from(huge);
        out.push((
            Parser::ConfigJson,
            "a config.json size of 2^60",
            c.to_string().into_bytes(),
        ));
        let file = &seeds::model_files()[0];
        let parts = ternary_fuzz::safetensors::split(file).unwrap();
        let mut header = parts.header;
        let meta = header["__metadata__"].as_object_mut().unwrap();
        let mut config: serde_json::Value =
            serde_json::from_str(meta["config"].as_str().unwrap()).unwrap();
        config[key] = serde_json::Value::from(huge);
        meta.insert("config".into(), config.to_string().into());
        let mut rng = ternary_fuzz::rng::Rng::new(0);
        let text = serde_json::Value::Object(header).to_string();
        let mut b = ternary_fuzz::safetensors::join(&text, &parts.data, &mut rng);
        // `join` may write a wrong header length one time in sixteen; this one must be right.
        let n = text.len().next_multiple_of(8) as u64;
        b[..8].copy_from_slice(&n.to_le_bytes());
        out.push((
            Parser::ModelFile,
            "a converted model's config size of 2^60",
            b,
        ));
    }
    // tokenizer.json: a vocabulary id of 2^60.
    let t = seeds::TINY_TOKENIZER.replacen(
        "\"<|endoftext|>\": 0",
        "\"<|endoftext|>\": 1152921504606846976",
        1,
    );
    out.push((Parser::TokenizerJson, "a token id of 2^60", t.into_bytes()));
    out
}

#[test]
fn headers_claiming_2_pow_60_elements_fail_before_allocating() {
    for (p, what, bytes) in huge_claims() {
        let v = check(p, &bytes, 0, 0);
        assert!(v.failure.is_none(), "{what}: {:?}", v.failure);
        assert_eq!(v.outcome, Outcome::Rejected, "{what} was accepted");
        // Parsing a small file that claims 2^60 elements allocates about what the file holds
        // (the tokenizer's scaffolding is the largest part), never in proportion to the claim.
        assert!(v.peak < 4 << 20, "{what}: {} bytes at the peak", v.peak);
    }
}
