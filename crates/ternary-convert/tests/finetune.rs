//! Fine-tuning (`ternary_convert::finetune`) on the tiny random Llama fixture (2 layers, hidden
//! 32): straight-through gradients against finite differences, loss lowered reproducibly by
//! each mode, resumption bit for bit, export equal to the trained layers, clear errors on bad
//! input. Runs without the real model.

use std::path::PathBuf;

use burn::backend::Autodiff;
use burn::backend::NdArray;
use burn::tensor::{Tensor, TensorData};
use ternary_convert::convert::Planes;
use ternary_convert::finetune::{
    Checkpointing, CurvePoint, EvalSet, FinetuneConfig, FinetuneReport, Mode, OptimConfig,
    SteParams, TeacherCache, Trainer, Windows, blockwise_blocks, finetune,
};
use ternary_convert::{ConvertConfig, GptqConfig, convert};
use ternary_core::quant::Method;
use ternary_core::rng::Rng;
use ternary_core::two_plane::exact_triple_scale;
use ternary_core::{ScaleLayout, Scales, TernaryMatrix, TwoPlaneMatrix};
use ternary_layers::{Cpu, Flex, LinearWeights, to_rows};
use ternary_models::{LoadedModel, Logits, load_safetensors_dir};

type Ad = Autodiff<Cpu>;

const TEXT: &str = include_str!("../../../fixtures/text/calibration.txt");

fn fixture() -> PathBuf {
    ternary_testkit::fixture_path("tiny-llama")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("ternary-finetune-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn teacher() -> LoadedModel<Cpu> {
    load_safetensors_dir::<Cpu>(fixture(), &Default::default()).unwrap()
}

/// The tiny model with every linear layer ternary (GPTQ, groups of 32), on the autodiff backend.
fn student() -> LoadedModel<Ad> {
    student_with(Planes::One)
}

/// [`student`] with one or two trit-planes per layer.
fn student_with(planes: Planes) -> LoadedModel<Ad> {
    student_free(planes, false)
}

/// [`student_with`], optionally with free plane scales (two planes off the 9-level grid).
fn student_free(planes: Planes, free_plane_scales: bool) -> LoadedModel<Ad> {
    student_rotated(planes, free_plane_scales, None, None)
}

/// [`student_free`], converted after rotating the residual stream by `rotate`'s seed and the
/// FFN activations by `rotate_ffn`'s.
fn student_rotated(
    planes: Planes,
    free_plane_scales: bool,
    rotate: Option<u64>,
    rotate_ffn: Option<u64>,
) -> LoadedModel<Ad> {
    student_converted(planes, free_plane_scales, rotate, rotate_ffn, &[])
}

/// [`student_rotated`] with the layers matching `keep_float` left float.
fn student_converted(
    planes: Planes,
    free_plane_scales: bool,
    rotate: Option<u64>,
    rotate_ffn: Option<u64>,
    keep_float: &[&str],
) -> LoadedModel<Ad> {
    let mut m = teacher();
    let cfg = ConvertConfig {
        method: Method::ActivationAware,
        layout: ScaleLayout::PerGroup { group_size: 32 },
        gptq: Some(GptqConfig::default()),
        input_scale_alphas: vec![],
        budget: None,
        keep_float: keep_float.iter().map(|k| k.to_string()).collect(),
        calib_tokens: 256,
        ctx: 32,
        eval_chunks: 2,
        sensitivity_tokens: 32,
        measure: false,
        sequential: false,
        sequential_layers: false,
        planes,
        free_plane_scales,
        rotate,
        rotate_heads: None,
        rotate_ffn,
    };
    convert(&mut m.model, &m.tokenizer, TEXT, &cfg, &mut |_| {}).unwrap();
    let bytes = ternary_convert::model_file::to_bytes(&m.model, &m.tokenizer).unwrap();
    ternary_convert::model_file::load_bytes::<Ad>(&bytes, &Default::default()).unwrap()
}

/// [`student`] on another autodiff backend (the same file's layers).
fn student_on<B: burn::tensor::backend::AutodiffBackend + ternary_layers::TernaryBackend>()
-> LoadedModel<B> {
    let s = student();
    let bytes = ternary_convert::model_file::to_bytes(&s.model, &s.tokenizer).unwrap();
    ternary_convert::model_file::load_bytes::<B>(&bytes, &Default::default()).unwrap()
}

fn windows(seq: usize) -> Windows {
    let t = teacher();
    Windows::new(t.tokenizer.encode(TEXT, true).unwrap(), seq, 11).unwrap()
}

fn cfg(mode: Mode) -> FinetuneConfig {
    FinetuneConfig {
        mode,
        tokens: 6 * 32,
        seq_len: 32,
        accum: 1,
        optim: OptimConfig {
            lr: 2e-3,
            warmup: 0.0,
            ..OptimConfig::default()
        },
        ..FinetuneConfig::default()
    }
}

fn logits<B: ternary_layers::TernaryBackend>(
    m: &ternary_models::Llama<B>,
    ids: &[u32],
) -> Vec<f32> {
    let mut cache = m.new_cache();
    to_rows(m.forward(ids, &mut cache, Logits::All).unwrap()).unwrap()
}

/// A one-plane [`student`] trained on `w` with `c`; panics on error.
fn train(
    t: &LoadedModel<Cpu>,
    w: &Windows,
    c: &FinetuneConfig,
    eval: Option<&EvalSet>,
    ckpt: &Checkpointing,
) -> (FinetuneReport, LoadedModel<Ad>) {
    let mut s = student();
    let r = finetune(&t.model, &mut s.model, w, c, eval, ckpt, &mut |_| {}).unwrap();
    (r, s)
}

fn losses(curve: &[CurvePoint]) -> Vec<f64> {
    curve.iter().filter_map(|p| p.loss).collect()
}

#[test]
fn ste_gradients_should_match_finite_differences_of_the_surrogate() {
    // 80 columns: a partial last group (scales expanded); 96: whole groups (broadcast).
    // One trit-plane (levels −1..=1) and two (the 9-level grid −4..=4).
    for max_level in [1i8, 4] {
        for cols in [80, 96] {
            ste_case(cols, max_level);
        }
    }
}

fn ste_case(cols: usize, max_level: i8) {
    // y = x·Ŵᵀ, L = Σ y ⊙ r. With the rounding offset C = t − u frozen at the base point,
    // Ŵ(w, s) = s·(w/s + C) is smooth, and its finite differences must equal the STE gradients.
    type B = Autodiff<NdArray<f64>>;
    let dev = Default::default();
    let seed = 20261203u64;
    println!("seed {seed}");
    let mut rng = Rng::new(seed);
    let (rows, group, n) = (5usize, 32usize, 3usize);
    println!("cols {cols}, levels −{max_level}..={max_level}");
    let span = 2 * max_level as u64 + 1;
    let trits: Vec<i8> = (0..rows * cols)
        .map(|_| rng.below(span) as i8 - max_level)
        .collect();
    let scales: Vec<f32> = (0..rows * cols.div_ceil(group))
        .map(|_| exact_triple_scale(0.2 + 0.8 * rng.next_f64() as f32))
        .collect();
    let scales = Scales::per_group(group, scales);
    let weights: LinearWeights = if max_level == 1 {
        TernaryMatrix::from_trits(rows, cols, &trits, scales)
            .unwrap()
            .into()
    } else {
        TwoPlaneMatrix::from_levels(rows, cols, &trits, scales)
            .unwrap()
            .into()
    };
    let l = f32::from(max_level);
    let float: Vec<f32> = (0..rows * cols)
        .map(|_| l * (2.0 * rng.next_f64() as f32 - 1.0))
        .collect();
    let p = SteParams::<B>::from_weights(&weights, Some(&float), None, None, &dev).unwrap();
    let x: Vec<f64> = (0..n * cols).map(|_| 2.0 * rng.next_f64() - 1.0).collect();
    let r: Vec<f64> = (0..n * rows).map(|_| 2.0 * rng.next_f64() - 1.0).collect();
    let xt = Tensor::<B, 2>::from_data(TensorData::new(x.clone(), [n, cols]), &dev);
    let rt = Tensor::<B, 2>::from_data(TensorData::new(r.clone(), [n, rows]), &dev);
    let loss = xt.matmul(p.weight().transpose()).mul(rt).sum();
    let grads = loss.backward();
    let gw: Vec<f64> = p
        .latent
        .grad(&grads)
        .unwrap()
        .into_data()
        .convert::<f64>()
        .to_vec()
        .unwrap();
    let gs: Vec<f64> = p
        .scale
        .grad(&grads)
        .unwrap()
        .into_data()
        .convert::<f64>()
        .to_vec()
        .unwrap();
    let w0: Vec<f64> = p
        .latent
        .clone()
        .into_data()
        .convert::<f64>()
        .to_vec()
        .unwrap();
    let s0: Vec<f64> = p
        .scale
        .clone()
        .into_data()
        .convert::<f64>()
        .to_vec()
        .unwrap();
    let groups = cols.div_ceil(group);
    let c: Vec<f64> = (0..rows * cols)
        .map(|i| {
            let u = w0[i] / s0[(i / cols) * groups + (i % cols) / group];
            u.round().clamp(-f64::from(l), f64::from(l)) - u
        })
        .collect();
    // The surrogate loss in f64 on the host.
    let surrogate = |w: &[f64], s: &[f64]| -> f64 {
        let mut l = 0.0;
        for t in 0..n {
            for o in 0..rows {
                let mut y = 0.0;
                for i in 0..cols {
                    let k = o * cols + i;
                    let sc = s[o * groups + i / group];
                    y += x[t * cols + i] * sc * (w[k] / sc + c[k]);
                }
                l += y * r[t * rows + o];
            }
        }
        l
    };
    let h = 1e-6;
    // Parameters are f32: compare against the largest gradient (tolerance 1e-5 of it).
    let big = gw.iter().chain(&gs).fold(0f64, |a, &g| a.max(g.abs()));
    let rel = |a: f64, b: f64| (a - b).abs() / big;
    for k in 0..rows * cols {
        let (mut wp, mut wm) = (w0.clone(), w0.clone());
        wp[k] += h;
        wm[k] -= h;
        let fd = (surrogate(&wp, &s0) - surrogate(&wm, &s0)) / (2.0 * h);
        assert!(
            rel(fd, gw[k]) < 1e-5,
            "latent {k}: fd {fd} vs ste {}",
            gw[k]
        );
    }
    for k in 0..rows * groups {
        let (mut sp, mut sm) = (s0.clone(), s0.clone());
        sp[k] += h;
        sm[k] -= h;
        let fd = (surrogate(&w0, &sp) - surrogate(&w0, &sm)) / (2.0 * h);
        assert!(rel(fd, gs[k]) < 1e-5, "scale {k}: fd {fd} vs ste {}", gs[k]);
    }
    // The value of Ŵ is exactly s·t with t the levels the parameters export to, and the export
    // before any step is the converted layer itself.
    let back = p.to_weights().unwrap();
    assert_eq!(
        back, weights,
        "initial latent weights must round to the GPTQ levels"
    );
    let wv: Vec<f64> = p.weight().into_data().convert::<f64>().to_vec().unwrap();
    let deq = back.dequantize();
    for (a, b) in wv.iter().zip(&deq) {
        assert!(
            (a - f64::from(*b)).abs() <= 1e-6 * a.abs().max(1.0),
            "{a} vs {b}"
        );
    }
}

#[test]
fn exported_layers_should_give_the_trained_logits() {
    for planes in [Planes::One, Planes::Two] {
        exported_case(planes);
    }
}

fn exported_case(planes: Planes) {
    let t = teacher();
    let mut s = student_with(planes);
    let ids = t
        .tokenizer
        .encode("We hold these truths to be self-evident", true)
        .unwrap();
    let before = logits(&s.model, &ids);
    let trainer = Trainer::prepare(&mut s.model, &t.model).unwrap();
    assert_eq!(trainer.layers().len(), 2 * 7 + 1);
    let ste = logits(&s.model, &ids);
    trainer.finish(&mut s.model).unwrap();
    let after = logits(&s.model, &ids);
    let range = before.iter().fold(0f32, |a, &v| a.max(v.abs()));
    for ((a, b), c) in before.iter().zip(&ste).zip(&after) {
        assert!(
            (a - b).abs() <= 1e-4 * range,
            "STE layers changed the logits: {a} vs {b}"
        );
        assert!(
            (a - c).abs() <= 1e-4 * range,
            "export changed the logits: {a} vs {c}"
        );
    }
}

#[test]
fn each_mode_should_lower_its_loss_reproducibly() {
    let t = teacher();
    let w = windows(32);
    // Both modes on one-plane students, and distillation of a two-plane student.
    for (mode, planes) in [
        (Mode::Kd, Planes::One),
        (Mode::Blockwise, Planes::One),
        (Mode::Kd, Planes::Two),
    ] {
        let c = FinetuneConfig {
            tokens: if mode == Mode::Kd { 12 * 32 } else { 8 * 32 },
            ..cfg(mode)
        };
        let run = || {
            let mut s = student_with(planes);
            let r = finetune(
                &t.model,
                &mut s.model,
                &w,
                &c,
                None,
                &Checkpointing::default(),
                &mut |_| {},
            )
            .unwrap();
            (r, s)
        };
        let (a, sa) = run();
        let (b, sb) = run();
        let (la, lb) = (losses(&a.curve), losses(&b.curve));
        println!("{} ({planes:?}): losses {la:?}", mode.name());
        assert_eq!(
            la,
            lb,
            "{}: two runs with the same seed differ",
            mode.name()
        );
        let ids = t.tokenizer.encode("Rivers run to the sea", true).unwrap();
        assert_eq!(logits(&sa.model, &ids), logits(&sb.model, &ids));
        let per = c.steps_per_schedule();
        // The loss of the last steps of a schedule is below that of its first steps.
        for sched in la.chunks(per) {
            let head = sched[..2].iter().sum::<f64>();
            let tail = sched[sched.len() - 2..].iter().sum::<f64>();
            assert!(
                tail < head,
                "{}: loss did not go down: {sched:?}",
                mode.name()
            );
        }
        assert_eq!(a.steps, a.total_steps);
        // Every trained layer comes back with as many planes as it had; two planes stay on the
        // 9-level grid (scales 3s and s).
        let mut trained = 0;
        for (name, l) in sa.model.linears() {
            let Some(tl) = ternary_convert::model_file::as_ternary(l.as_ref()) else {
                continue;
            };
            trained += 1;
            match (planes, tl.weights()) {
                (Planes::One, LinearWeights::One(_)) => {}
                (Planes::Two, LinearWeights::Two(m)) => {
                    let (hi, lo) = (m.high().scales().values(), m.low().scales().values());
                    assert!(hi.iter().zip(lo).all(|(&h, &s)| h == 3.0 * s), "{name}");
                }
                (p, _) => panic!(
                    "{name}: {} planes after training a {p:?} student",
                    tl.planes()
                ),
            }
        }
        assert_eq!(trained, 2 * 7 + 1);
    }
}

#[test]
fn norms_should_train_only_when_asked_and_be_saved() {
    let t = teacher();
    let w = windows(32);
    let ids = t.tokenizer.encode("Rivers run to the sea", true).unwrap();
    let norms = |m: &ternary_models::Llama<Ad>| -> Vec<(String, Vec<f32>)> {
        m.norm_tensors()
            .unwrap()
            .into_iter()
            .map(|(n, h)| (n, h.data))
            .collect()
    };
    let original = norms(&student().model);
    assert_eq!(original.len(), 2 * 2 + 1);
    for mode in [Mode::Kd, Mode::Blockwise] {
        let mut frozen_params = None;
        for norm_lr in [0.0, 10.0] {
            let mut c = FinetuneConfig {
                tokens: 8 * 32,
                ..cfg(mode)
            };
            c.optim.norm_lr = norm_lr;
            let (r, s) = train(&t, &w, &c, None, &Checkpointing::default());
            let la = losses(&r.curve);
            println!("{} norm_lr {norm_lr}: losses {la:?}", mode.name());
            for sched in la.chunks(c.steps_per_schedule()) {
                assert!(sched[sched.len() - 1] < sched[0], "{sched:?}");
            }
            let after = norms(&s.model);
            for ((name, a), (_, b)) in after.iter().zip(&original) {
                // Frozen unless asked; in block-wise mode the final norm belongs to no block.
                let frozen =
                    norm_lr == 0.0 || (mode == Mode::Blockwise && name == "model.norm.weight");
                assert_eq!(a == b, frozen, "{} norm_lr {norm_lr}: {name}", mode.name());
                assert!(a.iter().all(|v| v.is_finite()), "{name}");
            }
            // Trained norms count as trainable values.
            let width: usize = original.iter().map(|(_, v)| v.len()).sum();
            match frozen_params {
                None => frozen_params = Some(r.params),
                Some(p) => assert_eq!(r.params, p + width),
            }
            // The saved file holds the trained norms: it gives the trained model's logits.
            let bytes = ternary_convert::model_file::to_bytes(&s.model, &s.tokenizer).unwrap();
            let back =
                ternary_convert::model_file::load_bytes::<Ad>(&bytes, &Default::default()).unwrap();
            assert_eq!(norms(&back.model), after);
            let (a, b) = (logits(&back.model, &ids), logits(&s.model, &ids));
            let range = b.iter().fold(0f32, |m, &v| m.max(v.abs()));
            let worst = a
                .iter()
                .zip(&b)
                .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
            assert!(
                worst <= 1e-4 * range,
                "saved logits differ by {worst} (range {range})"
            );
        }
    }
}

#[test]
fn kd_should_lower_held_out_perplexity_with_hidden_state_loss() {
    let t = teacher();
    let w = windows(32);
    let eval_text = include_str!("../../../fixtures/text/declaration-gettysburg.txt");
    let eval = EvalSet {
        tokens: t.tokenizer.encode(eval_text, true).unwrap(),
        ctx: 32,
        chunks: 4,
        every: 0,
        bos: None,
    };
    let c = FinetuneConfig {
        tokens: 16 * 32,
        hidden_mse: 1.0,
        ..cfg(Mode::Kd)
    };
    let mut s = student();
    let r = finetune(
        &t.model,
        &mut s.model,
        &w,
        &c,
        Some(&eval),
        &Checkpointing::default(),
        &mut |_| {},
    )
    .unwrap();
    let first = r.curve.first().and_then(|p| p.eval_ppl).unwrap();
    let last = r.curve.last().and_then(|p| p.eval_ppl).unwrap();
    println!("held-out ppl {first} -> {last}");
    assert!(last < first, "held-out perplexity {first} -> {last}");
    // The held-out figure is that of the exported model, the one a run saves.
    let saved = ternary_models::perplexity(&s.model, &eval.tokens, 32, None, Some(4), |_, _| {})
        .unwrap()
        .ppl;
    assert_eq!(
        saved, last,
        "evaluated during training vs the exported model"
    );
}

#[test]
fn a_time_limit_should_stop_at_a_checkpoint_that_resumes_exactly() {
    let t = teacher();
    let w = windows(32);
    let dir = scratch("time-limit");
    let eval_text = include_str!("../../../fixtures/text/declaration-gettysburg.txt");
    let eval = EvalSet {
        tokens: t.tokenizer.encode(eval_text, true).unwrap(),
        ctx: 32,
        chunks: 1,
        every: 0,
        bos: None,
    };
    let c = FinetuneConfig {
        tokens: 4 * 32,
        ..cfg(Mode::Kd)
    };
    let (full, _) = train(&t, &w, &c, None, &Checkpointing::default());
    assert!(!full.interrupted && full.steps == 4);
    // A limit of 0 s is reached by the first step: the run stops there, measures the held-out
    // perplexity and writes its checkpoint.
    let ck = dir.join("kd.ckpt");
    let limited = Checkpointing {
        path: Some(ck.clone()),
        stop_after_seconds: Some(0.0),
        ..Checkpointing::default()
    };
    let (first, _) = train(&t, &w, &c, Some(&eval), &limited);
    assert!(first.interrupted, "the time limit did not stop the run");
    assert_eq!(first.steps, 1);
    let end = first.curve.last().unwrap();
    assert_eq!(end.step, 1);
    assert!(end.eval_ppl.is_some_and(f64::is_finite), "{end:?}");
    let resume = Checkpointing {
        resume: Some(ck),
        ..Checkpointing::default()
    };
    let (second, _) = train(&t, &w, &c, None, &resume);
    assert_eq!(second.resumed_at, Some(1));
    assert!(!second.interrupted && second.steps == 4);
    assert_eq!(losses(&second.curve), losses(&full.curve));
    std::fs::remove_dir_all(dir).ok();
}

#[test]
fn resuming_should_reproduce_the_uninterrupted_run_exactly() {
    let t = teacher();
    let w = windows(32);
    let dir = scratch("resume");
    // Each mode with frozen and with trained norms (their values and moments checkpointed).
    for (mode, norm_lr) in [
        (Mode::Kd, 0.0),
        (Mode::Blockwise, 0.0),
        (Mode::Kd, 10.0),
        (Mode::Blockwise, 10.0),
    ] {
        let mut c = FinetuneConfig {
            accum: 2,
            tokens: 3 * 2 * 32,
            ..cfg(mode)
        };
        c.optim.norm_lr = norm_lr;
        let ids = t
            .tokenizer
            .encode("A government of the people", true)
            .unwrap();
        let (full, whole) = train(&t, &w, &c, None, &Checkpointing::default());
        let ck = dir.join(format!("{}-{norm_lr}.ckpt", mode.name()));
        let interrupted = Checkpointing {
            path: Some(ck.clone()),
            stop_after: Some(full.total_steps / 2),
            ..Checkpointing::default()
        };
        let (first, _) = train(&t, &w, &c, None, &interrupted);
        assert!(first.interrupted && first.steps == full.total_steps / 2);
        let resume = Checkpointing {
            resume: Some(ck.clone()),
            ..Checkpointing::default()
        };
        let (second, rest) = train(&t, &w, &c, None, &resume);
        assert_eq!(second.resumed_at, Some(full.total_steps / 2));
        assert_eq!(
            losses(&second.curve),
            losses(&full.curve),
            "{}",
            mode.name()
        );
        assert_eq!(
            logits(&rest.model, &ids),
            logits(&whole.model, &ids),
            "{}",
            mode.name()
        );
        // Another configuration cannot resume this checkpoint.
        let other = FinetuneConfig {
            seed: 99,
            ..c.clone()
        };
        let err = finetune(
            &t.model,
            &mut student().model,
            &w,
            &other,
            None,
            &Checkpointing {
                resume: Some(ck),
                ..Checkpointing::default()
            },
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("another configuration"), "{err}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// Block-wise reconstruction skips a block left float (nothing in it trains) unless its norms
/// train; the run over the remaining block lowers its loss, resumes exactly, and refuses a
/// checkpoint of a run that visited other blocks; a student with no ternary block layer gets a
/// clear error. (That skipping leaves the output bit for bit as before was checked on SmolLM2
/// against the previous binary, `docs/accuracy.md` §7l.)
#[test]
fn blockwise_should_skip_blocks_left_float() {
    let t = teacher();
    let w = windows(32);
    let dir = scratch("skip");
    let half_float = || student_converted(Planes::One, false, None, None, &["layers.0."]);
    let run = |s: &mut LoadedModel<Ad>, c: &FinetuneConfig, ck: &Checkpointing| {
        finetune(&t.model, &mut s.model, &w, c, None, ck, &mut |_| {})
    };
    let base = FinetuneConfig {
        tokens: 4 * 32,
        ..cfg(Mode::Blockwise)
    };
    let per = base.steps_per_schedule();
    let none = Checkpointing::default();
    for (norm_lr, visits) in [(0.0, vec![1]), (10.0, vec![0, 1])] {
        let mut c = base.clone();
        c.optim.norm_lr = norm_lr;
        let r = run(&mut half_float(), &c, &none).unwrap();
        let blocks: Vec<usize> = r.curve.iter().filter_map(|p| p.block).collect();
        let expected: Vec<usize> = visits
            .iter()
            .flat_map(|&b| std::iter::repeat_n(b, per))
            .collect();
        assert_eq!(blocks, expected, "norm_lr {norm_lr}");
        assert_eq!(blockwise_blocks(&half_float().model, &c), visits);
        assert_eq!((r.steps, r.total_steps), (expected.len(), expected.len()));
        let l = losses(&r.curve);
        println!("norm_lr {norm_lr}: blocks {blocks:?}, losses {l:?}");
        let last = &l[l.len() - per..];
        assert!(last[per - 1] < last[0], "loss did not go down: {last:?}");
    }
    // Interrupted after the first step and resumed: the same losses as in one go.
    let full = run(&mut half_float(), &base, &none).unwrap();
    let ck = dir.join("skip.ckpt");
    let stop = Checkpointing {
        path: Some(ck.clone()),
        stop_after: Some(1),
        ..Checkpointing::default()
    };
    run(&mut half_float(), &base, &stop).unwrap();
    let resume = Checkpointing {
        resume: Some(ck.clone()),
        ..Checkpointing::default()
    };
    let rest = run(&mut half_float(), &base, &resume).unwrap();
    assert_eq!(losses(&rest.curve), losses(&full.curve));
    // A checkpoint of the all-ternary student (both blocks) does not resume on this one.
    run(&mut student(), &base, &stop).unwrap();
    let err = run(&mut half_float(), &base, &resume)
        .unwrap_err()
        .to_string();
    assert!(err.contains("visits blocks [0, 1]"), "{err}");
    // Every block float (only `lm_head` ternary) and norms frozen: nothing for block-wise mode.
    let err = run(
        &mut student_converted(Planes::One, false, None, None, &["layers."]),
        &base,
        &none,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("no block has a ternary layer"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}

/// A student converted with a residual rotation records it, refuses an unrotated teacher
/// (their hidden states are in different bases), and distils (with the hidden-state loss)
/// from the teacher rotated the same way, lowering its loss. Seed 5.
#[test]
fn rotated_students_should_train_against_the_teacher_rotated_the_same_way() {
    let mut t = teacher();
    let mut s = student_rotated(Planes::One, false, Some(5), None);
    assert_eq!(s.model.config().residual_rotation, Some(5));
    let c = FinetuneConfig {
        tokens: 12 * 32,
        hidden_mse: 1.0,
        ..cfg(Mode::Kd)
    };
    let w = windows(32);
    let none = Checkpointing::default();
    let err = finetune(&t.model, &mut s.model, &w, &c, None, &none, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rotated by seed 5") && err.contains("not rotated"),
        "{err}"
    );
    ternary_convert::rotate::rotate_residual(&mut t.model, 5).unwrap();
    let r = finetune(&t.model, &mut s.model, &w, &c, None, &none, &mut |_| {}).unwrap();
    let l = losses(&r.curve);
    println!("distillation losses, rotated: {l:?}");
    let (head, tail) = (l[0] + l[1], l[l.len() - 2] + l[l.len() - 1]);
    assert!(tail < head, "loss did not go down: {l:?}");
}

/// A student whose FFN activations are rotated before `down_proj` (in its forward pass) trains
/// against the unrotated teacher, whose block outputs it matches: both modes lower their loss,
/// and the trained file keeps the rotation and gives the trained logits.
#[test]
fn ffn_rotated_students_should_train_and_keep_the_rotation() {
    let t = teacher();
    let none = Checkpointing::default();
    for mode in [Mode::Kd, Mode::Blockwise] {
        let mut s = student_rotated(Planes::One, false, None, Some(9));
        assert_eq!(s.model.config().ffn_rotation, Some(9));
        let c = FinetuneConfig {
            tokens: 12 * 32,
            hidden_mse: 1.0,
            ..cfg(mode)
        };
        let r = finetune(
            &t.model,
            &mut s.model,
            &windows(32),
            &c,
            None,
            &none,
            &mut |_| {},
        );
        let l = losses(&r.unwrap().curve);
        println!("{mode:?} losses, FFN rotated: {l:?}");
        let (head, tail) = (l[0] + l[1], l[l.len() - 2] + l[l.len() - 1]);
        assert!(tail < head, "{mode:?}: loss did not go down: {l:?}");
        let bytes = ternary_convert::model_file::to_bytes(&s.model, &s.tokenizer).unwrap();
        let back = ternary_convert::model_file::load_bytes::<Ad>(&bytes, &Default::default());
        let back = back.unwrap();
        assert_eq!(back.model.config().ffn_rotation, Some(9));
        let ids: Vec<u32> = (0..16).map(|i| (i * 11 + 2) % 300).collect();
        let logits = |m: &LoadedModel<Ad>| {
            let mut cache = m.model.new_cache();
            to_rows(m.model.forward(&ids, &mut cache, Logits::All).unwrap()).unwrap()
        };
        let (a, b) = (logits(&back), logits(&s));
        let worst = a
            .iter()
            .zip(&b)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        let range = b.iter().fold(0f32, |m, y| m.max(y.abs()));
        assert!(
            worst <= 1e-4 * range,
            "{mode:?}: saved logits moved by {worst}"
        );
    }
}

#[test]
fn bad_input_should_give_clear_errors() {
    let t = teacher();
    // Empty data.
    let err = Windows::new(Vec::new(), 32, 0).unwrap_err().to_string();
    assert!(err.contains("fewer than one window"), "{err}");
    // A float student.
    let mut float = load_safetensors_dir::<Ad>(fixture(), &Default::default()).unwrap();
    let err = Trainer::prepare(&mut float.model, &t.model)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no ternary layers"), "{err}");
    // Two planes with free plane scales (not on the 9-level grid).
    let mut free = student_free(Planes::Two, true);
    let err = Trainer::prepare(&mut free.model, &t.model)
        .unwrap_err()
        .to_string();
    assert!(err.contains("free plane scales"), "{err}");
    // A checkpoint that is not one.
    let dir = scratch("bad");
    let junk = dir.join("junk.ckpt");
    std::fs::write(&junk, b"not a checkpoint").unwrap();
    let err = finetune(
        &t.model,
        &mut student().model,
        &windows(32),
        &cfg(Mode::Kd),
        None,
        &Checkpointing {
            resume: Some(junk),
            ..Checkpointing::default()
        },
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not a checkpoint"), "{err}");
    // Bad hyper-parameters: a NaN rate, a negative or infinite norm-rate ratio.
    for optim in [
        OptimConfig {
            lr: f64::NAN,
            ..OptimConfig::default()
        },
        OptimConfig {
            norm_lr: -1.0,
            ..OptimConfig::default()
        },
        OptimConfig {
            norm_lr: f64::INFINITY,
            ..OptimConfig::default()
        },
    ] {
        let bad = FinetuneConfig {
            optim,
            ..cfg(Mode::Kd)
        };
        let err = finetune(
            &t.model,
            &mut student().model,
            &windows(32),
            &bad,
            None,
            &Checkpointing::default(),
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("learning rates"), "{err}");
    }
    std::fs::remove_dir_all(dir).ok();
}

/// `ternary finetune --device cpu` trains on Burn's flex backend: in both modes (distillation
/// with the hidden-state loss, block-wise) its losses follow the ndarray backend's step by step
/// (relative 1e-4: `f32` sums in another order, compounded over the updates; measured 2e-7 at
/// most), two runs agree bit for bit, and a run resumed from its checkpoint reproduces the
/// uninterrupted one. Before training, the student's logits on flex (its ternary layers on the
/// host kernels, the rest Burn's flex operations) equal ndarray's within 1e-4 of the largest.
#[test]
fn the_flex_backend_should_train_as_ndarray_does_and_resume_exactly() {
    type Fx = Autodiff<Flex>;
    let t = teacher();
    let tf = load_safetensors_dir::<Flex>(fixture(), &Default::default()).unwrap();
    let w = windows(32);
    let dir = scratch("flex");
    let ids = t.tokenizer.encode("Four score and seven", true).unwrap();
    let (on_nd, on_fx) = (
        logits(&student().model, &ids),
        logits(&student_on::<Fx>().model, &ids),
    );
    let top = on_nd.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert_eq!(on_nd.len(), on_fx.len());
    for (i, (a, b)) in on_fx.iter().zip(&on_nd).enumerate() {
        assert!(
            (a - b).abs() <= 1e-4 * top,
            "logit {i}: flex {a} vs ndarray {b}"
        );
    }
    for mode in [Mode::Kd, Mode::Blockwise] {
        let c = FinetuneConfig {
            tokens: 8 * 32,
            hidden_mse: if mode == Mode::Kd { 1.0 } else { 0.0 },
            ..cfg(mode)
        };
        let none = Checkpointing::default();
        let (reference, _) = train(&t, &w, &c, None, &none);
        let run = |ckpt: &Checkpointing| {
            let mut s = student_on::<Fx>();
            let r = finetune(&tf.model, &mut s.model, &w, &c, None, ckpt, &mut |_| {}).unwrap();
            (r, s)
        };
        let (a, sa) = run(&none);
        let (b, _) = run(&none);
        let (lr, la) = (losses(&reference.curve), losses(&a.curve));
        println!("{}: ndarray {lr:?}\n  flex {la:?}", mode.name());
        assert_eq!(la.len(), lr.len());
        for (i, (x, y)) in la.iter().zip(&lr).enumerate() {
            assert!(
                (x - y).abs() <= 1e-4 * y.abs(),
                "{}: step {}: flex {x} vs ndarray {y}",
                mode.name(),
                i + 1
            );
        }
        assert_eq!(
            la,
            losses(&b.curve),
            "{}: two flex runs differ",
            mode.name()
        );
        let ck = dir.join(format!("{}.ckpt", mode.name()));
        let half = Checkpointing {
            path: Some(ck.clone()),
            stop_after: Some(a.total_steps / 2),
            ..Checkpointing::default()
        };
        let (first, _) = run(&half);
        assert!(first.interrupted);
        let (second, rest) = run(&Checkpointing {
            resume: Some(ck),
            ..Checkpointing::default()
        });
        assert_eq!(second.resumed_at, Some(a.total_steps / 2));
        assert_eq!(losses(&second.curve), la, "{}: resumed", mode.name());
        assert_eq!(logits(&rest.model, &ids), logits(&sa.model, &ids));
    }
    std::fs::remove_dir_all(dir).ok();
}

/// The teacher cache: window 0's top k against the teacher's own full forward pass sorted in
/// f64 (the same ids, log-probabilities within 1e-5 nats); k = V distils exactly as the
/// teacher on the fly (first loss within 1e-5 relative, and the whole curve within 1e-3);
/// top-8 distillation lowers its loss, is reproducible and resumes exactly; the file round-trips
/// bit for bit.
#[test]
fn top_k_teacher_cache_should_match_the_teacher_and_distil() {
    let t = teacher();
    let w = windows(32);
    let vocab = t.model.config().vocab_size;
    let dir = scratch("topk");
    let tau = 1.5;
    let cache = TeacherCache::build(&t.model, &w, 8, tau, &mut |_, _| {}).unwrap();
    assert_eq!((cache.k(), cache.windows()), (8, w.len()));
    let (ids, logp) = cache.window(0).unwrap();
    let full = logits(&t.model, w.window(0));
    for (i, row) in full.chunks_exact(vocab).enumerate() {
        let z: Vec<f64> = row.iter().map(|&x| f64::from(x) / tau).collect();
        let lse = z.iter().map(|x| x.exp()).sum::<f64>().ln();
        let mut order: Vec<usize> = (0..vocab).collect();
        order.sort_by(|&a, &b| z[b].total_cmp(&z[a]).then(a.cmp(&b)));
        let got: Vec<usize> = ids[i * 8..(i + 1) * 8]
            .iter()
            .map(|&v| v as usize)
            .collect();
        assert_eq!(got, order[..8], "position {i}");
        for (j, &v) in got.iter().enumerate() {
            let d = (f64::from(logp[i * 8 + j]) - (z[v] - lse)).abs();
            assert!(d < 1e-5, "position {i} token {v}: {d}");
        }
    }
    cache.check_teacher(&t.model, &w, 3).unwrap();
    let path = dir.join("cache.safetensors");
    cache.save(&path).unwrap();
    assert_eq!(TeacherCache::load(&path).unwrap(), cache);

    // The whole vocabulary: the same loss as the teacher run at every step.
    let base = FinetuneConfig {
        tokens: 12 * 32,
        temperature: tau,
        ..cfg(Mode::Kd)
    };
    let none = Checkpointing::default();
    let (on_the_fly, _) = train(&t, &w, &base, None, &none);
    let all = TeacherCache::build(&t.model, &w, vocab, tau, &mut |_, _| {}).unwrap();
    let wv = w.clone().with_teacher_cache(all).unwrap();
    let cv = FinetuneConfig {
        top_k: Some(vocab),
        ..base.clone()
    };
    let (cached, _) = train(&t, &wv, &cv, None, &none);
    let (a, b) = (losses(&on_the_fly.curve), losses(&cached.curve));
    println!("on the fly {a:?}\ntop-V cache {b:?}");
    assert!((a[0] - b[0]).abs() <= 1e-5 * a[0], "{} vs {}", a[0], b[0]);
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() <= 1e-3 * x, "{x} vs {y}");
    }

    // Top 8: reproducible, lower at the end, below the full divergence, resumable.
    let w8 = w.clone().with_teacher_cache(cache).unwrap();
    let c8 = FinetuneConfig {
        top_k: Some(8),
        ..base.clone()
    };
    let (r1, s1) = train(&t, &w8, &c8, None, &none);
    let (r2, s2) = train(&t, &w8, &c8, None, &none);
    let l8 = losses(&r1.curve);
    println!("top-8 cache {l8:?}");
    assert_eq!(l8, losses(&r2.curve));
    let ids_probe = t.tokenizer.encode("Rivers run to the sea", true).unwrap();
    assert_eq!(logits(&s1.model, &ids_probe), logits(&s2.model, &ids_probe));
    assert!(
        l8[0] <= a[0] * (1.0 + 1e-5),
        "collapsed KL {} above full {}",
        l8[0],
        a[0]
    );
    let (head, tail) = (l8[0] + l8[1], l8[l8.len() - 2] + l8[l8.len() - 1]);
    assert!(tail < head, "loss did not go down: {l8:?}");
    let ck = dir.join("topk.ckpt");
    let (first, _) = train(
        &t,
        &w8,
        &c8,
        None,
        &Checkpointing {
            path: Some(ck.clone()),
            stop_after: Some(5),
            ..Checkpointing::default()
        },
    );
    assert!(first.interrupted);
    let (rest, s3) = train(
        &t,
        &w8,
        &c8,
        None,
        &Checkpointing {
            resume: Some(ck),
            ..Checkpointing::default()
        },
    );
    assert_eq!(losses(&rest.curve), l8);
    assert_eq!(logits(&s3.model, &ids_probe), logits(&s1.model, &ids_probe));
    std::fs::remove_dir_all(dir).ok();
}

/// Clear errors: a cache of other text or window length, another teacher, a damaged file,
/// top-k without a cache or with another k, top-k with block-wise mode or the hidden-state
/// loss, k of 0 or above the vocabulary.
#[test]
fn top_k_teacher_cache_should_refuse_what_does_not_match() {
    let t = teacher();
    let w = windows(32);
    let dir = scratch("topk-bad");
    let cache = TeacherCache::build(&t.model, &w, 4, 1.0, &mut |_, _| {}).unwrap();
    let none = Checkpointing::default();
    let err_of = |w: &Windows, c: &FinetuneConfig| {
        let mut s = student();
        finetune(&t.model, &mut s.model, w, c, None, &none, &mut |_| {})
            .unwrap_err()
            .to_string()
    };
    // Other windows: a shorter window length, other text.
    let err = windows(16)
        .with_teacher_cache(cache.clone())
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("another text"), "{err}");
    let other = Windows::new(t.tokenizer.encode(&TEXT[100..], true).unwrap(), 32, 11).unwrap();
    assert!(other.with_teacher_cache(cache.clone()).is_err());
    // Another teacher: the ternary student's logits are not the float model's.
    let s = student();
    let err = cache
        .check_teacher(&s.model, &w, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match this teacher"), "{err}");
    let w4 = w.clone().with_teacher_cache(cache.clone()).unwrap();
    let c4 = FinetuneConfig {
        top_k: Some(4),
        ..cfg(Mode::Kd)
    };
    let mut s2 = student();
    let err = finetune(&s.model, &mut s2.model, &w4, &c4, None, &none, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("does not match this teacher"), "{err}");
    // Configuration.
    assert!(err_of(&w, &c4).contains("no teacher cache is attached"));
    let c5 = FinetuneConfig {
        top_k: Some(5),
        ..c4.clone()
    };
    assert!(err_of(&w4, &c5).contains("top 4 at temperature 1"));
    let hot = FinetuneConfig {
        temperature: 2.0,
        ..c4.clone()
    };
    assert!(err_of(&w4, &hot).contains("temperature"));
    for (bad, says) in [
        (
            FinetuneConfig {
                hidden_mse: 1.0,
                ..c4.clone()
            },
            "hidden states",
        ),
        (
            FinetuneConfig {
                top_k: Some(4),
                ..cfg(Mode::Blockwise)
            },
            "block-wise",
        ),
        (
            FinetuneConfig {
                top_k: Some(0),
                ..c4.clone()
            },
            "top-k 0",
        ),
    ] {
        let err = err_of(&w4, &bad);
        assert!(err.contains(says), "{err}");
    }
    let vocab = t.model.config().vocab_size;
    for k in [0, vocab + 1] {
        let err = TeacherCache::build(&t.model, &w, k, 1.0, &mut |_, _| {})
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("vocabulary size"), "{err}");
    }
    // Damaged files: truncated, not a cache, a log-probability above 0.
    let path = dir.join("c.safetensors");
    cache.save(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
    assert!(TeacherCache::load(&path).is_err());
    let model = fixture().join("model.safetensors");
    let err = TeacherCache::load(&model).err().unwrap().to_string();
    assert!(err.contains("not a ternary-teacher-topk/1"), "{err}");
    // Where each tensor's values start in the file.
    let at = |name: &str| {
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        st.tensor(name).unwrap().data().as_ptr() as usize - bytes.as_ptr() as usize
    };
    let (ids_at, logp_at) = (at("ids"), at("logp"));
    let mut bad = bytes.clone();
    bad[logp_at..logp_at + 4].copy_from_slice(&1.0f32.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    let err = TeacherCache::load(&path).err().unwrap().to_string();
    assert!(err.contains("not a distribution"), "{err}");
    // A token kept twice at one position.
    let mut bad = bytes.clone();
    let second = bad[ids_at..ids_at + 4].to_vec();
    bad[ids_at + 4..ids_at + 8].copy_from_slice(&second);
    std::fs::write(&path, &bad).unwrap();
    let err = TeacherCache::load(&path).err().unwrap().to_string();
    assert!(err.contains("cached twice"), "{err}");
    // An id beyond the vocabulary loads, but the teacher check refuses it.
    let mut bad = bytes.clone();
    bad[ids_at..ids_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    let err = TeacherCache::load(&path)
        .unwrap()
        .check_teacher(&t.model, &w, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("beyond the teacher's vocabulary"), "{err}");
    std::fs::remove_dir_all(dir).ok();
}
