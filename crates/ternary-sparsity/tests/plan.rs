//! Per-layer format choice: decisions, table, JSON, and the planned layers' results.

mod common;

use common::*;
use ternary_core::kernels as core_kernels;
use ternary_core::{ScaleLayout, TernaryError, reference};
use ternary_sparsity::plan::{DEFAULT_CHUNK_OCCUPANCY, DEFAULT_INDEX_DENSITY};
use ternary_sparsity::{
    Footprint, LayerFormat, LayerProfile, Plan, PlanRule, PlannedLayer, Planner,
};

fn profile(name: &str, density: f64, occupancy: f64, rel_error: Option<f64>) -> LayerProfile {
    LayerProfile {
        name: name.to_owned(),
        rows: 64,
        cols: 128,
        nnz: (density * 64.0 * 128.0) as usize,
        density,
        chunk_occupancy: occupancy,
        rel_error,
    }
}

#[test]
fn plan_should_pick_the_cheapest_format_by_the_thresholds() {
    let rule = PlanRule::default();
    let d = DEFAULT_INDEX_DENSITY;
    let o = DEFAULT_CHUNK_OCCUPANCY;
    // Dense weights: dense ternary.
    assert_eq!(
        rule.decide(&profile("a", 0.67, 1.0, None)).0,
        LayerFormat::DenseTernary
    );
    // Unstructured 99%: chunks stay mostly occupied, index lists win.
    assert_eq!(
        rule.decide(&profile("b", 0.01, 0.27, None)).0,
        LayerFormat::IndexSparse
    );
    // Chunk-structured 95%: few occupied chunks, packed chunks win.
    let (f, cost) = rule.decide(&profile("c", 0.05, 0.075, None));
    assert_eq!(f, LayerFormat::ChunkSparse);
    assert!((cost - 0.075 / o).abs() < 1e-12);
    // Exactly at the crossovers: dense (ties go to dense).
    assert_eq!(
        rule.decide(&profile("d", d, o, None)).0,
        LayerFormat::DenseTernary
    );
    // Float when the ternary error is too large, only if a limit is set.
    let strict = PlanRule {
        max_rel_error: Some(0.5),
        ..rule
    };
    assert_eq!(
        strict.decide(&profile("e", 0.01, 0.27, Some(0.6))).0,
        LayerFormat::Float
    );
    assert_eq!(
        strict.decide(&profile("e", 0.01, 0.27, Some(0.4))).0,
        LayerFormat::IndexSparse
    );
    assert_eq!(
        rule.decide(&profile("e", 0.01, 0.27, Some(0.6))).0,
        LayerFormat::IndexSparse
    );
    // Forced.
    let forced = PlanRule {
        force: Some(LayerFormat::DenseTernary),
        ..rule
    };
    assert_eq!(
        forced.decide(&profile("f", 0.001, 0.01, None)).0,
        LayerFormat::DenseTernary
    );
}

#[test]
fn per_layer_overrides_apply_by_name() {
    let planner = Planner::default()
        .with_override(
            "lm_head",
            PlanRule {
                force: Some(LayerFormat::Float),
                ..Default::default()
            },
        )
        .with_override(
            "q",
            PlanRule {
                index_density: 0.001,
                chunk_occupancy: 0.01,
                ..Default::default()
            },
        );
    let plan = planner
        .plan(&[
            profile("q", 0.01, 0.27, None),
            profile("k", 0.01, 0.27, None),
            profile("lm_head", 0.6, 1.0, None),
        ])
        .unwrap();
    assert_eq!(plan.get("q").unwrap().format, LayerFormat::DenseTernary);
    assert_eq!(plan.get("k").unwrap().format, LayerFormat::IndexSparse);
    assert_eq!(plan.get("lm_head").unwrap().format, LayerFormat::Float);
    let bad = Planner::new(PlanRule {
        chunk_occupancy: 0.0,
        ..Default::default()
    });
    assert!(matches!(
        bad.plan(&[profile("x", 0.1, 0.1, None)]),
        Err(TernaryError::Config(_))
    ));
}

#[test]
fn plan_prints_a_table_and_round_trips_through_json() {
    let plan = Planner::new(PlanRule {
        max_rel_error: Some(0.9),
        ..Default::default()
    })
    .with_override(
        "o",
        PlanRule {
            force: Some(LayerFormat::ChunkSparse),
            ..Default::default()
        },
    )
    .plan(&[
        profile("q", 0.012, 0.3, Some(0.95)),
        profile("k", 0.05, 0.07, Some(0.4)),
        profile("o", 0.6, 1.0, None),
    ])
    .unwrap();
    let table = plan.to_string();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 5, "{table}");
    assert!(lines[0].starts_with("| layer | shape | density"));
    assert!(
        lines[2].contains("| q | 64x128 | 1.20% | 30.00% | 0.9500 | float |"),
        "{table}"
    );
    assert!(lines[3].contains("chunk-sparse"), "{table}");
    assert!(lines[4].contains("chunk-sparse (forced)"), "{table}");
    let json = plan.to_json();
    let back = Plan::from_json(&json).unwrap();
    assert_eq!(back.layers.len(), 3);
    for (a, b) in plan.layers.iter().zip(&back.layers) {
        assert_eq!(a.profile, b.profile);
        assert_eq!(a.rule, b.rule);
        assert_eq!(a.format, b.format);
        assert!(a.est_cost == b.est_cost || (a.est_cost.is_nan() && b.est_cost.is_nan()));
    }
    for bad in [
        "",
        "{}",
        "{\"layers\": [1]}",
        &json.replace("\"chunk-sparse\"", "\"sparse\""),
        &json.replace("\"rows\": 64", "\"rows\": -1"),
    ] {
        assert!(
            matches!(Plan::from_json(bad), Err(TernaryError::Format { .. })),
            "{bad}"
        );
    }
}

#[test]
fn planned_layers_should_match_the_reference() {
    let (mut rng, seed) = rng();
    let (rows, cols, n) = (40, 333, 9);
    for structure in [Structure::Unstructured, Structure::Chunks] {
        let m = random_matrix(
            &mut rng,
            rows,
            cols,
            0.05,
            structure,
            ScaleLayout::PerGroup { group_size: 64 },
        );
        let x = random_f32(&mut rng, n * cols);
        let a = random_q(&mut rng, n, cols);
        let want = F32Expect::new(&m, &x, n);
        let want_i8 = reference::gemm_i8(&m, &a).unwrap();
        for format in LayerFormat::ALL {
            let layer = PlannedLayer::build(format, m.clone(), None).unwrap();
            assert_eq!(layer.format(), format);
            let what = format!("{format} {structure:?} (TERNARY_TEST_SEED={seed})");
            let mut y = vec![f32::NAN; n * rows];
            layer.forward_f32(&x, n, &mut y).unwrap();
            want.check(&y, &what);
            let mut y = vec![f32::NAN; n * rows];
            layer.forward_i8(&a, &mut y).unwrap();
            if format == LayerFormat::Float {
                // Float layer: f32 product of the dequantized activations q · s_j.
                let xq: Vec<f32> = (0..n)
                    .flat_map(|j| {
                        a.row(j)[..cols]
                            .iter()
                            .map(move |&q| f32::from(q))
                            .collect::<Vec<_>>()
                    })
                    .enumerate()
                    .map(|(i, q)| q * a.scales()[i / cols])
                    .collect();
                F32Expect::new(&m, &xq, n).check(&y, &what);
            } else {
                check_exact(&y, &want_i8, &what);
            }
            assert!(layer.bits_per_weight() > 0.0);
        }
    }
}

#[test]
fn dense_layers_run_the_plain_dense_kernel() {
    let (mut rng, _) = rng();
    let m = random_matrix(
        &mut rng,
        64,
        576,
        0.67,
        Structure::Unstructured,
        ScaleLayout::PerRow,
    );
    let profile = LayerProfile::measure("dense", &m, None).unwrap();
    let plan = Planner::default().plan(&[profile]).unwrap();
    assert_eq!(plan.layers[0].format, LayerFormat::DenseTernary);
    let layer = PlannedLayer::build(plan.layers[0].format, m.clone(), None).unwrap();
    // No sparsity metadata: exactly the matrix's own bytes.
    assert_eq!(layer.storage_bytes(), m.storage_bytes());
    let PlannedLayer::DenseTernary(inner) = &layer else {
        panic!("dense layer is not plain planes");
    };
    assert_eq!(inner, &m);
    // Bit-identical to ternary_core's kernels: the same code runs.
    for n in [1, 8] {
        let x = random_f32(&mut rng, n * 576);
        let (mut a, mut b) = (vec![f32::NAN; n * 64], vec![f32::NAN; n * 64]);
        layer.forward_f32(&x, n, &mut a).unwrap();
        core_kernels::gemm_f32(&m, &x, n, &mut b).unwrap();
        check_exact(&a, &b, "dense f32");
    }
}

#[test]
fn measured_profiles_match_the_matrix() {
    let (mut rng, _) = rng();
    let m = random_matrix(
        &mut rng,
        10,
        320,
        0.05,
        Structure::Chunks,
        ScaleLayout::PerRow,
    );
    let w = m.dequantize();
    let p = LayerProfile::measure("x", &m, Some(&w)).unwrap();
    assert_eq!(p.nnz, m.nnz());
    assert_eq!(p.rel_error, Some(0.0));
    let occupied = (0..10 * m.words_per_row())
        .filter(|&i| m.plus()[i] | m.minus()[i] != 0)
        .count();
    assert!((p.chunk_occupancy - occupied as f64 / 100.0).abs() < 1e-12);
    assert!(LayerProfile::measure("x", &m, Some(&w[1..])).is_err());
}
