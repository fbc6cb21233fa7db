//! The `ternary` binary end to end: quantize → inspect → eval on the tiny Llama fixture (always)
//! and on a few layers of the real SmolLM2-135M with a short text (skipped with a message when
//! the model is not cached, failing when `CI` is set), plus the error paths: missing and
//! truncated files, bad flags, refusing to overwrite the input. Every failure must be a clean
//! `error: …` with a non-zero exit code, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ternary"));
    c.env("NO_COLOR", "1");
    c
}

fn root() -> PathBuf {
    ternary_testkit::fixture_path("").join("..")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ternary-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().unwrap()
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    let o = run(args);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{args:?} failed:\n{out}\n{err}");
    out
}

/// The command must fail cleanly and mention `needle` on stderr.
#[track_caller]
fn fails(args: &[&str], needle: &str) {
    let o = run(args);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{args:?} succeeded:\n{out}");
    assert!(!err.contains("panicked"), "{args:?} panicked:\n{err}");
    assert!(
        err.contains(needle),
        "{args:?}: expected {needle:?} in:\n{err}"
    );
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn tiny_model_should_quantize_inspect_and_eval() {
    let dir = scratch("tiny");
    let tiny = root().join("fixtures/tiny-llama");
    let out = dir.join("tiny-ternary.safetensors");
    let text = root().join("fixtures/text/declaration-gettysburg.txt");
    let plan = ok(&[
        "quantize",
        "--model",
        s(&tiny),
        "--out",
        s(&out),
        "--layers",
        "layers.0.,lm_head",
        "--keep-float",
        "q_proj",
        "--calib-tokens",
        "64",
        "--calib-ctx",
        "32",
        "--no-budget",
    ]);
    // 6 of layer 0's 7 projections and the head are ternary; q_proj and layer 1 stay float.
    assert!(plan.contains("7 ternary, 8 float"), "{plan}");
    let inspected = ok(&["inspect", s(&out)]);
    assert!(inspected.contains("7 ternary, 8 float"), "{inspected}");
    for line in inspected.lines().filter(|l| l.starts_with("model.layers.")) {
        let ternary = line.contains("layers.0.") && !line.contains("q_proj");
        assert_eq!(line.contains("ternary"), ternary, "{line}");
    }
    let report = ok(&[
        "eval",
        "--model",
        s(&out),
        "--reference",
        s(&tiny),
        "--text",
        s(&text),
        "--ctx",
        "32",
        "--chunks",
        "2",
        "--decode-tokens",
        "4",
    ]);
    for needle in [
        "perplexity",
        "decode tokens/s",
        "bits/weight",
        "ternary",
        "float",
    ] {
        assert!(report.contains(needle), "{needle:?} missing:\n{report}");
    }
    // The demo measures a given (fine-tuned) converted file as one more column, and refuses a
    // float one.
    let demo_out = dir.join("demo.safetensors");
    let recovered = format!("tuned={}", s(&out));
    let demo = ok(&[
        "demo",
        "--model",
        s(&tiny),
        "--out",
        s(&demo_out),
        "--no-all-ternary",
        "--no-two-planes",
        "--ctx",
        "32",
        "--chunks",
        "1",
        "--decode-tokens",
        "2",
        "--calib-tokens",
        "64",
        "--calib-ctx",
        "32",
        "--recovered",
        &recovered,
    ]);
    assert!(demo.contains("tuned / float"), "{demo}");
    let float_dir = format!("tuned={}", s(&tiny));
    fails(
        &[
            "demo",
            "--model",
            s(&tiny),
            "--out",
            s(&demo_out),
            "--recovered",
            &float_dir,
        ],
        "not a converted ternary model",
    );
    fails(
        &["demo", "--model", s(&tiny), "--recovered", "tuned"],
        "expected NAME=PATH",
    );
    // Refuses to overwrite its input, and leaves it intact.
    let before = std::fs::read(&out).unwrap();
    let copy = dir.join("copy.safetensors");
    std::fs::copy(&out, &copy).unwrap();
    fails(
        &["quantize", "--model", s(&copy), "--out", s(&copy)],
        "refusing to overwrite",
    );
    fails(
        &[
            "quantize",
            "--model",
            s(&copy),
            "--out",
            s(&dir.join("x.safetensors")),
        ],
        "already a converted",
    );
    assert_eq!(std::fs::read(&copy).unwrap(), before);
    // Nor a file of a checkpoint directory.
    let ckpt = dir.join("ckpt");
    std::fs::create_dir_all(&ckpt).unwrap();
    for f in ["config.json", "model.safetensors", "tokenizer.json"] {
        std::fs::copy(tiny.join(f), ckpt.join(f)).unwrap();
    }
    let weights = std::fs::read(ckpt.join("model.safetensors")).unwrap();
    fails(
        &[
            "quantize",
            "--model",
            s(&ckpt),
            "--out",
            s(&ckpt.join("model.safetensors")),
        ],
        "refusing to overwrite",
    );
    assert_eq!(
        std::fs::read(ckpt.join("model.safetensors")).unwrap(),
        weights
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_inputs_should_be_clean_errors() {
    let dir = scratch("errors");
    let tiny = root().join("fixtures/tiny-llama");
    let missing = dir.join("absent.gguf");
    let out = dir.join("out.safetensors");
    fails(&["inspect", s(&missing)], "absent.gguf");
    fails(
        &["quantize", "--model", s(&missing), "--out", s(&out)],
        "absent.gguf",
    );
    fails(
        &["eval", "--model", s(&missing), "--text", s(&missing)],
        "absent.gguf",
    );
    fails(
        &[
            "eval",
            "--model",
            s(&tiny),
            "--text",
            s(&dir.join("no.txt")),
        ],
        "no.txt",
    );
    // Flags clap or we reject.
    fails(&["quantize", "--model", s(&tiny)], "--out");
    fails(
        &[
            "quantize",
            "--model",
            s(&tiny),
            "--out",
            s(&out),
            "--group",
            "33",
        ],
        "multiple of 32",
    );
    fails(
        &[
            "quantize",
            "--model",
            s(&tiny),
            "--out",
            s(&out),
            "--budget",
            "0.5",
        ],
        "budget",
    );
    fails(
        &[
            "quantize",
            "--model",
            s(&tiny),
            "--out",
            s(&out),
            "--method",
            "magic",
        ],
        "magic",
    );
    fails(
        &["quantize", "--model", s(&tiny), "--out", s(&dir)],
        "directory",
    );
    fails(
        &[
            "quantize",
            "--model",
            s(&tiny),
            "--out",
            s(&out),
            "--planes",
            "auto",
            "--sequential-layers",
        ],
        "--sequential-layers",
    );
    fails(
        &[
            "eval",
            "--model",
            s(&tiny),
            "--text",
            s(&tiny),
            "--ctx",
            "2",
        ],
        "ctx",
    );
    fails(&["frobnicate"], "frobnicate");
    // A text too short for the context.
    let short = dir.join("short.txt");
    std::fs::write(&short, "a few words").unwrap();
    fails(
        &[
            "eval",
            "--model",
            s(&tiny),
            "--text",
            s(&short),
            "--ctx",
            "64",
        ],
        "tokens",
    );
    // Truncated and garbage model files.
    ok(&[
        "quantize",
        "--model",
        s(&tiny),
        "--out",
        s(&out),
        "--calib-tokens",
        "32",
    ]);
    let bytes = std::fs::read(&out).unwrap();
    for (i, cut) in [0, 7, 8, 100, bytes.len() / 2, bytes.len() - 1]
        .into_iter()
        .enumerate()
    {
        let t = dir.join(format!("cut{i}.safetensors"));
        std::fs::write(&t, &bytes[..cut]).unwrap();
        // Too short to hold a safetensors length: not recognised as any model.
        let needle = if cut < 8 { "not a model" } else { "malformed" };
        fails(&["inspect", s(&t)], needle);
        fails(&["eval", "--model", s(&t), "--text", s(&short)], needle);
    }
    let garbage = dir.join("garbage.gguf");
    std::fs::write(&garbage, b"GGUF\x03\x00\x00\x00garbage").unwrap();
    fails(
        &["eval", "--model", s(&garbage), "--text", s(&short)],
        "error",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
#[ignore = "needs the model: cargo xtask fetch-model"]
fn smollm2_few_layers_should_quantize_inspect_and_eval() {
    let model = ternary_models::fetch::smollm2_for_test();
    let dir = scratch("smollm2");
    let out = dir.join("smollm2-few.safetensors");
    let text = dir.join("short.txt");
    let full =
        std::fs::read_to_string(root().join("fixtures/text/declaration-gettysburg.txt")).unwrap();
    std::fs::write(&text, full.chars().take(3000).collect::<String>()).unwrap();
    let plan = ok(&[
        "quantize",
        "--model",
        s(&model),
        "--out",
        s(&out),
        "--layers",
        "layers.0.mlp,layers.1.self_attn.v_proj",
        "--calib",
        s(&text),
        "--calib-tokens",
        "128",
        "--calib-ctx",
        "64",
        "--no-budget",
    ]);
    assert!(plan.contains("4 ternary, 206 float"), "{plan}");
    let inspected = ok(&["inspect", s(&out)]);
    assert!(
        inspected.contains("model.layers.0.mlp.down_proj"),
        "{inspected}"
    );
    assert!(inspected.contains("4 ternary, 206 float"), "{inspected}");
    let report = ok(&[
        "eval",
        "--model",
        s(&out),
        "--reference",
        s(&model),
        "--text",
        s(&text),
        "--ctx",
        "64",
        "--chunks",
        "2",
        "--decode-tokens",
        "4",
    ]);
    // Perplexity of both, as numbers: the four ternary layers change the model's predictions.
    let ppl_line = report
        .lines()
        .find(|l| l.starts_with("perplexity"))
        .unwrap();
    let ppls: Vec<f64> = ppl_line
        .split_whitespace()
        .filter_map(|w| w.parse::<f64>().ok())
        .collect();
    assert!(ppls.len() >= 4, "{ppl_line}");
    let (float, ternary) = (ppls[0], ppls[2]);
    assert!(float > 1.0 && float < 200.0, "{report}");
    assert!(
        ternary.is_finite() && ternary > 1.0 && ternary != float,
        "{report}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The last line of `generate`'s stdout and `perplexity`'s final line, checked loosely.
fn final_line(out: &str) -> &str {
    out.lines().last().unwrap_or_default()
}

/// `perplexity` of `model` on `text`: 3 chunks of 32 tokens.
fn perplexity_args<'a>(model: &'a Path, text: &'a Path) -> Vec<&'a str> {
    vec![
        "perplexity",
        "--model",
        s(model),
        "--text",
        s(text),
        "--ctx",
        "32",
        "--chunks",
        "3",
    ]
}

#[test]
fn generate_and_perplexity_should_take_any_format_by_content() {
    let dir = scratch("gen");
    let tiny = root().join("fixtures/tiny-llama");
    let eval_text = root().join("fixtures/text/declaration-gettysburg.txt");
    // A converted model under a misleading name.
    let converted = dir.join("tiny-ternary.gguf");
    ok(&[
        "quantize",
        "--model",
        s(&tiny),
        "--out",
        s(&converted),
        "--calib-tokens",
        "64",
        "--calib-ctx",
        "32",
        "--no-budget",
    ]);
    let weights = tiny.join("model.safetensors");
    for model in [&tiny, &weights, &converted] {
        let o = run(&[
            "generate",
            "--model",
            s(model),
            "--prompt",
            "We hold these truths",
            "--max-tokens",
            "6",
            "--temperature",
            "0",
        ]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{model:?}: {err}");
        assert!(!out.trim().is_empty(), "{model:?}: no text");
        assert!(
            err.contains("prompt: ") && err.contains("generation: 6 tokens"),
            "{model:?}: {err}"
        );
        let out = ok(&perplexity_args(model, &eval_text));
        let last = final_line(&out);
        assert!(
            last.starts_with("Final estimate: PPL = ") && last.contains(" +/- "),
            "{model:?}: {out}"
        );
        assert!(out.contains("[1]") && out.contains("[3]"), "{out}");
    }
    // The converted model's perplexity on two int8 codes per token (runtime and Burn engine)
    // is the f32 path's; one code moves it more.
    let ppl = |extra: &[&str]| -> f64 {
        let mut a = perplexity_args(&converted, &eval_text);
        a.extend_from_slice(extra);
        let out = ok(&a);
        let last = final_line(&out);
        last["Final estimate: PPL = ".len()..]
            .split(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{last}"))
    };
    let f32_ppl = ppl(&["--ternary-path", "cpu-f32"]);
    let one = ppl(&["--ternary-path", "cpu-int8"]);
    for engine in ["runtime", "burn"] {
        let two = ppl(&["--ternary-path", "cpu-int8x2", "--engine", engine]);
        assert!(
            (two - f32_ppl).abs() <= 1e-4 * f32_ppl
                && (two - f32_ppl).abs() < (one - f32_ppl).abs(),
            "{engine}: int8x2 {two}, f32 {f32_ppl}, int8 {one}"
        );
    }
    eprintln!("tiny converted ppl: f32 {f32_ppl}, int8 {one}");
    // `bench` says which activations ran: two codes for converted layers at AVX2 by default.
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let o = bin()
            .env("TERNARY_SIMD", "avx2")
            .args([
                "--threads",
                "1",
                "bench",
                "--model",
                s(&converted),
                "--prompt-tokens",
                "8",
                "--gen-tokens",
                "2",
                "--reps",
                "1",
            ])
            .output()
            .unwrap();
        let (out, err) = text(&o);
        assert!(o.status.success(), "{err}");
        assert!(out.contains("ternary activations int8x2"), "{out}");
    }
    // A fixed seed gives the same sampled text; greedy equals temperature 0 and top-k 1.
    let sampled = |seed: &str| {
        ok(&[
            "generate",
            "--model",
            s(&tiny),
            "--prompt",
            "Four score",
            "--max-tokens",
            "12",
            "--temperature",
            "1.0",
            "--top-k",
            "0",
            "--top-p",
            "1.0",
            "--seed",
            seed,
        ])
    };
    assert_eq!(sampled("7"), sampled("7"));
    let greedy = |extra: &[&str]| {
        let mut a = vec![
            "generate",
            "--model",
            s(&tiny),
            "--prompt",
            "Four score",
            "--max-tokens",
            "12",
        ];
        a.extend_from_slice(extra);
        ok(&a)
    };
    assert_eq!(
        greedy(&["--temperature", "0"]),
        greedy(&["--top-k", "1", "--seed", "3"])
    );
}

#[test]
fn generate_and_perplexity_bad_inputs_should_be_clean_errors() {
    let dir = scratch("gen-errors");
    let tiny = root().join("fixtures/tiny-llama");
    let eval_text = root().join("fixtures/text/declaration-gettysburg.txt");
    let notes = dir.join("notes.gguf");
    std::fs::write(&notes, "just some text, not a model").unwrap();
    fails(
        &["generate", "--model", s(&notes), "--prompt", "x"],
        "not a model",
    );
    fails(
        &["perplexity", "--model", s(&notes), "--text", s(&eval_text)],
        "not a model",
    );
    fails(
        &["generate", "--model", s(&tiny), "--prompt", "x", "--chat"],
        "no chat template",
    );
    for (flag, value, says) in [
        ("--temperature", "-1", "temperature"),
        ("--top-p", "0", "top-p"),
        ("--top-p", "1.5", "top-p"),
        ("--max-tokens", "0", "max-tokens"),
    ] {
        fails(
            &[
                "generate",
                "--model",
                s(&tiny),
                "--prompt",
                "x",
                flag,
                value,
            ],
            says,
        );
    }
    fails(
        &[
            "generate",
            "--model",
            s(&tiny),
            "--prompt",
            "x",
            "--max-tokens",
            "100000",
        ],
        "context",
    );
    let short = dir.join("short.txt");
    std::fs::write(&short, "Too short.").unwrap();
    fails(
        &["perplexity", "--model", s(&tiny), "--text", s(&short)],
        "needs at least",
    );
    fails(
        &[
            "perplexity",
            "--model",
            s(&tiny),
            "--text",
            s(&eval_text),
            "--ctx",
            "2",
        ],
        "too short",
    );
    fails(&["inspect", s(&tiny)], "ternary quantize");
}

#[test]
fn finetune_should_train_resume_and_refuse_bad_input() {
    let dir = scratch("finetune");
    let tiny = root().join("fixtures/tiny-llama");
    let student = dir.join("student.safetensors");
    let data = root().join("fixtures/text/calibration.txt");
    let eval = root().join("fixtures/text/declaration-gettysburg.txt");
    ok(&[
        "quantize",
        "--model",
        s(&tiny),
        "--out",
        s(&student),
        "--calib-tokens",
        "64",
        "--calib-ctx",
        "32",
        "--group",
        "32",
        "--no-budget",
    ]);
    let out = dir.join("tuned.safetensors");
    let args = |mode: &str, out: &Path| -> Vec<String> {
        [
            "finetune",
            "--teacher",
            s(&tiny),
            "--student",
            s(&student),
            "--data",
            s(&data),
            "--tokens",
            "128",
            "--seq-len",
            "32",
            "--lr",
            "0.002",
            "--mode",
            mode,
            "--out",
            s(out),
            "--eval-text",
            s(&eval),
            "--eval-ctx",
            "32",
            "--checkpoint-every",
            "1",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let a: Vec<String> = args("kd", &out);
    let report = ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        report.contains("100.0% of linear weights ternary"),
        "{report}"
    );
    let curve: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("tuned.safetensors.curve.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(curve["steps"], 4, "{curve}");
    assert!(ok(&["inspect", s(&out)]).contains("ternary"));
    // The trained file is a model like any other.
    let ppl = ok(&[
        "perplexity",
        "--model",
        s(&out),
        "--text",
        s(&eval),
        "--ctx",
        "32",
        "--chunks",
        "2",
    ]);
    assert!(ppl.contains("Final estimate: PPL"), "{ppl}");
    // Resuming the finished run from its checkpoint changes nothing.
    let mut r = a.clone();
    r.push("--resume".into());
    let again = dir.join("again.safetensors");
    let pos = r.iter().position(|x| x == "--out").unwrap();
    r[pos + 1] = s(&again).to_string();
    r.push("--checkpoint".into());
    r.push(format!("{}.ckpt", s(&out)));
    ok(&r.iter().map(String::as_str).collect::<Vec<_>>());
    let ppl_again = ok(&[
        "perplexity",
        "--model",
        s(&again),
        "--text",
        s(&eval),
        "--ctx",
        "32",
        "--chunks",
        "2",
    ]);
    assert_eq!(final_line(&ppl_again), final_line(&ppl));
    // A time limit of 0 s stops after the first step and still writes the model and curve.
    let limited = dir.join("limited.safetensors");
    let mut l = args("kd", &limited);
    l.extend(["--max-seconds".to_string(), "0".to_string()]);
    let said = ok(&l.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(said.contains("wrote"), "{said}");
    let curve: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join("limited.safetensors.curve.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(curve["steps"], 1, "{curve}");
    assert_eq!(curve["interrupted"], true, "{curve}");
    let blockwise = dir.join("blockwise.safetensors");
    ok(&args("blockwise", &blockwise)
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    // Distillation from the teacher's top 8: the cache is built beside OUT, then reused by a
    // second run (the same trained model), and refused for another k or other text.
    let topk = dir.join("topk.safetensors");
    let cache = dir.join("topk.safetensors.teacher.safetensors");
    let with = |out: &Path, extra: &[&str]| -> Vec<String> {
        let mut v = args("kd", out);
        v.extend(extra.iter().map(|x| x.to_string()));
        v
    };
    let o = run(&with(&topk, &["--top-k", "8"])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let (_, err) = text(&o);
    assert!(o.status.success() && err.contains("built in"), "{err}");
    assert!(cache.is_file());
    let topk2 = dir.join("topk2.safetensors");
    let c = s(&cache).to_string();
    let o = run(&with(&topk2, &["--top-k", "8", "--teacher-cache", &c])
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>());
    let (_, err) = text(&o);
    assert!(o.status.success() && err.contains("reused"), "{err}");
    assert_eq!(
        std::fs::read(&topk).unwrap(),
        std::fs::read(&topk2).unwrap(),
        "the reused cache trained another model"
    );
    let y = dir.join("y.safetensors");
    let run_fails_with = |v: Vec<String>, needle: &str| {
        fails(&v.iter().map(String::as_str).collect::<Vec<_>>(), needle);
    };
    run_fails_with(
        with(&y, &["--top-k", "4", "--teacher-cache", &c]),
        "keeps the top 8",
    );
    let mut v = with(&y, &["--top-k", "8", "--teacher-cache", &c]);
    let pos = v.iter().position(|x| x == "--data").unwrap();
    v[pos + 1] = s(&eval).to_string();
    let pos = v.iter().position(|x| x == "--eval-text").unwrap();
    v[pos + 1] = s(&data).to_string();
    run_fails_with(v, "another text");
    run_fails_with(with(&y, &["--teacher-cache", &c]), "give --top-k K");
    run_fails_with(
        with(&y, &["--top-k", "8", "--hidden-mse", "1"]),
        "hidden states",
    );
    run_fails_with(
        with(&y, &["--top-k", "8", "--teacher-cache", s(&student)]),
        "would overwrite",
    );
    let ckpt = dir.join("y.safetensors.ckpt");
    for clash in [&ckpt, &y] {
        run_fails_with(
            with(&y, &["--top-k", "8", "--teacher-cache", s(clash)]),
            "also where this run writes",
        );
    }
    assert!(!y.exists() && !ckpt.exists());
    assert!(!dir.join("y.safetensors.teacher.safetensors").exists());

    // Bad input.
    let empty = dir.join("empty.txt");
    std::fs::write(&empty, "  \n").unwrap();
    let base = |student: &Path, data: &Path, out: &Path| -> Vec<String> {
        [
            "finetune",
            "--teacher",
            s(&tiny),
            "--student",
            s(student),
            "--data",
            s(data),
            "--out",
            s(out),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let run_fails = |v: Vec<String>, needle: &str| {
        fails(&v.iter().map(String::as_str).collect::<Vec<_>>(), needle);
    };
    let x = dir.join("x.safetensors");
    run_fails(base(&student, &empty, &x), "the training file is empty");
    run_fails(
        base(&tiny, &data, &x),
        "give a ternary model written by `ternary quantize`",
    );
    run_fails(base(&student, &data, &student), "would overwrite the input");
    for bad in ["nan", "-1"] {
        let mut v = base(&student, &data, &x);
        v.extend(["--max-seconds".to_string(), bad.to_string()]);
        run_fails(v, "--max-seconds");
    }
    // A GPU device in a binary built without it names the feature to build with.
    #[cfg(not(feature = "cuda"))]
    {
        let mut v = base(&student, &data, &x);
        v.extend(["--device".to_string(), "cuda".to_string()]);
        run_fails(v, "--features cuda");
    }
    assert!(!x.exists(), "a refused run wrote {}", x.display());
    let mut v = base(&student, &eval, &x);
    v.extend(["--eval-text".to_string(), s(&eval).to_string()]);
    run_fails(v, "both training data and the evaluation text");
    // A teacher whose tokenizer differs from the student's.
    let other_tok = dir.join("other-tokenizer");
    std::fs::create_dir_all(&other_tok).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny.join(f), other_tok.join(f)).unwrap();
    }
    let tok = std::fs::read_to_string(tiny.join("tokenizer.json")).unwrap();
    let changed = tok.replacen(
        "\"add_prefix_space\": false",
        "\"add_prefix_space\": true",
        1,
    );
    assert_ne!(tok, changed);
    std::fs::write(other_tok.join("tokenizer.json"), changed).unwrap();
    let mut v = base(&student, &data, &x);
    v[2] = s(&other_tok).to_string();
    run_fails(v, "tokenizer");
    // A converted BitNet model (sub-norms in the file) loads back.
    let bitnet = dir.join("bitnet.safetensors");
    ok(&[
        "quantize",
        "--model",
        s(&root().join("fixtures/tiny-bitnet/silu-bf16")),
        "--out",
        s(&bitnet),
        "--calib-tokens",
        "64",
        "--calib-ctx",
        "32",
        "--no-budget",
    ]);
    let p = ok(&[
        "perplexity",
        "--model",
        s(&bitnet),
        "--text",
        s(&eval),
        "--ctx",
        "32",
        "--chunks",
        "2",
    ]);
    assert!(p.contains("Final estimate"), "{p}");
    assert!(!x.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}
