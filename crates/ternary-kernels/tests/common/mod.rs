//! The conformance suite, stamped out once per runtime by `conformance_suite!`.
//!
//! Each test body is a generic function from `ternary_kernels::conformance`; this macro only
//! instantiates it for one runtime's client. Edge shapes: cols 0, 1, 31, 33, 576, 1536; rows
//! that are not multiples of any tile (1, 67, 130); n = 1, 3, 8 (rows kernel), 17, 70 (tiled).

/// Instantiates the suite; `$client` is an expression evaluating to a `ComputeClient<R>`.
#[macro_export]
macro_rules! conformance_suite {
    ($client:expr) => {
        use ternary_kernels::conformance::{self as conf, GemmCase};
        use ternary_kernels::plan::{self, Strategy};
        use ternary_kernels::{DeviceCaps, KernelError};

        const COLS: [usize; 5] = [1, 31, 33, 576, 1536];

        fn run_gemm_cases(strategy: Strategy, ns: &[usize], rows: &[usize], cols: &[usize]) {
            let client = $client;
            let mut seed = 1;
            for &n in ns {
                for &r in rows {
                    for &c in cols {
                        seed += 1;
                        let case = GemmCase::new(r, c, n, seed);
                        conf::gemm_matches_reference(&client, case, strategy).unwrap();
                        if c >= 64 {
                            conf::gemm_matches_reference(&client, case.per_group(64), strategy)
                                .unwrap();
                        }
                    }
                }
            }
        }

        #[test]
        fn gemv_rows_plane_matches_reference() {
            let client = $client;
            let caps = DeviceCaps::of(&client);
            match plan::plan(&caps, 1, Strategy::RowsPlane) {
                Ok(_) => run_gemm_cases(Strategy::RowsPlane, &[1, 3, 8], &[1, 67], &COLS),
                Err(e) => {
                    assert!(matches!(e, KernelError::Unsupported(_)), "{e}");
                    assert!(
                        caps.fixed_plane_size()
                            .is_none_or(|p| !matches!(p, 4 | 8 | 16 | 32))
                    );
                }
            }
        }

        #[test]
        fn gemv_rows_shared_matches_reference() {
            run_gemm_cases(Strategy::RowsShared, &[1, 3, 8], &[1, 67], &COLS);
        }

        #[test]
        fn gemm_tiled_matches_reference() {
            run_gemm_cases(Strategy::Tiled, &[1, 3, 8, 17], &[1, 67], &[1, 33, 576]);
            run_gemm_cases(Strategy::Tiled, &[70], &[130], &[31, 1536]);
        }

        #[test]
        fn gemm_auto_handles_groups_and_empty_shapes() {
            let client = $client;
            for (i, &(r, c, n, g)) in [
                (67, 576, 1, 128),
                (67, 576, 70, 128),
                (5, 33, 3, 32),
                (9, 1536, 8, 256),
                (3, 0, 2, 32),
                (0, 64, 3, 32),
                (4, 64, 0, 32),
            ]
            .iter()
            .enumerate()
            {
                let case = GemmCase::new(r, c, n, 100 + i as u64).per_group(g);
                conf::gemm_matches_reference(&client, case, Strategy::Auto).unwrap();
                conf::gemm_matches_reference(
                    &client,
                    GemmCase {
                        layout: ternary_core::ScaleLayout::PerRow,
                        ..case
                    },
                    Strategy::Auto,
                )
                .unwrap();
            }
        }

        #[test]
        fn gemm_f16_matches_reference_or_is_unsupported() {
            let client = $client;
            conf::gemm_f16_matches_reference(&client, GemmCase::new(67, 576, 3, 5), Strategy::Auto)
                .unwrap();
            conf::gemm_f16_matches_reference(
                &client,
                GemmCase::new(67, 576, 17, 6),
                Strategy::Tiled,
            )
            .unwrap();
        }

        #[test]
        fn quantize_matches_host_exactly() {
            let client = $client;
            for (i, &(n, c)) in [(1, 1), (3, 31), (8, 33), (2, 576), (5, 1536)]
                .iter()
                .enumerate()
            {
                conf::quantize_matches_reference(&client, n, c, 200 + i as u64).unwrap();
            }
        }

        #[test]
        fn gemm_i8_matches_reference() {
            let client = $client;
            let mut seed = 300;
            for &n in &[1, 3, 8, 70] {
                for &c in &COLS {
                    seed += 1;
                    let case = GemmCase::new(67, c, n, seed);
                    conf::gemm_i8_matches_reference(&client, case).unwrap();
                    if c >= 64 {
                        conf::gemm_i8_matches_reference(&client, case.per_group(64)).unwrap();
                    }
                }
            }
        }

        #[test]
        fn edits_match_sequential_set() {
            let client = $client;
            conf::edits_match_reference(&client, 7, 33, 1, 400).unwrap();
            conf::edits_match_reference(&client, 67, 576, 500, 401).unwrap();
            conf::edits_match_reference(&client, 3, 40, 300, 402).unwrap();
        }

        #[test]
        fn attention_matches_reference() {
            use ternary_kernels::attention::QkQuant;
            let client = $client;
            let mut seed = 500;
            for quant in [QkQuant::Ternary, QkQuant::Binary] {
                for causal in [false, true] {
                    for &(nq, nk, dim) in &[(1, 5, 64), (5, 37, 80), (17, 17, 128)] {
                        seed += 1;
                        conf::attention_matches_reference(
                            &client, nq, nk, 2, dim, quant, causal, seed,
                        )
                        .unwrap();
                    }
                }
            }
        }

        #[test]
        fn gemv_skip_matches_reference() {
            let client = $client;
            for (i, &(r, c, n)) in [(67, 33, 1), (67, 1536, 3), (130, 576, 8), (5, 4096, 1)]
                .iter()
                .enumerate()
            {
                let case = GemmCase::new(r, c, n, 600 + i as u64);
                conf::skip_matches_reference(&client, case).unwrap();
                conf::skip_matches_reference(&client, case.zeros(0.95)).unwrap();
            }
            conf::skip_matches_reference(&client, GemmCase::new(67, 576, 3, 610).per_group(128))
                .unwrap();
        }

        #[test]
        fn bad_shapes_are_errors() {
            conf::bad_shapes_are_errors(&$client).unwrap();
        }
    };
}
