//! The conformance suite, stamped out once per runtime by `conformance_suite!`.
//!
//! Each test runs one suite of `ternary_kernels::conformance` (the case lists live there, so
//! the `gpu-bench` binary runs exactly the same checks). A suite the device cannot run must
//! report `Ran::Unsupported`, which the test checks against the device's capabilities.

/// Instantiates the suite; `$client` is an expression evaluating to a `ComputeClient<R>`.
#[macro_export]
macro_rules! conformance_suite {
    ($client:expr) => {
        use ternary_kernels::DeviceCaps;
        use ternary_kernels::conformance::{self as conf, Ran};
        use ternary_kernels::plan::GemmStrategy;

        fn passed(r: conf::SuiteResult) {
            match r {
                Ok(Ran::Passed(n)) => assert!(n > 0),
                other => panic!("{other:?}"),
            }
        }

        #[test]
        fn gemv_rows_plane_matches_reference() {
            let client = $client;
            let caps = DeviceCaps::of(&client);
            match conf::gemm_suite(&client, GemmStrategy::RowsPlane) {
                Ok(Ran::Passed(n)) => assert!(n > 0),
                Ok(Ran::Unsupported(msg)) => {
                    // Only acceptable when the device really has no usable fixed plane size.
                    assert!(
                        caps.fixed_plane_size()
                            .is_none_or(|p| !matches!(p, 4 | 8 | 16 | 32)),
                        "{msg}"
                    );
                }
                Err(e) => panic!("{e}"),
            }
        }

        #[test]
        fn gemv_rows_shared_matches_reference() {
            passed(conf::gemm_suite(&$client, GemmStrategy::RowsShared));
        }

        #[test]
        fn gemm_tiled_matches_reference() {
            passed(conf::gemm_suite(&$client, GemmStrategy::Tiled));
        }

        #[test]
        fn gemm_auto_handles_groups_and_empty_shapes() {
            passed(conf::gemm_groups_suite(&$client));
        }

        #[test]
        fn gemm_f16_matches_reference_or_is_unsupported() {
            let client = $client;
            match conf::f16_suite(&client) {
                Ok(Ran::Passed(n)) => assert!(n > 0),
                Ok(Ran::Unsupported(msg)) => assert!(!DeviceCaps::of(&client).f16, "{msg}"),
                Err(e) => panic!("{e}"),
            }
        }

        #[test]
        fn quantize_matches_host_exactly() {
            passed(conf::quantize_suite(&$client));
        }

        #[test]
        fn gemm_i8_matches_reference() {
            passed(conf::int8_suite(&$client));
        }

        #[test]
        fn edits_match_sequential_set() {
            passed(conf::edits_suite(&$client));
        }

        #[test]
        fn attention_matches_reference() {
            passed(conf::attention_suite(&$client));
        }

        #[test]
        fn gemv_skip_matches_reference() {
            passed(conf::skip_suite(&$client));
        }

        #[test]
        fn device_activations_match_reference() {
            passed(conf::device_activations_suite(&$client));
        }

        #[test]
        fn bad_shapes_are_errors() {
            conf::bad_shapes_are_errors(&$client).unwrap();
        }
    };
}
