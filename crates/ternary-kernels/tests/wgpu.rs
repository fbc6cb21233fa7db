//! The conformance suite on wgpu (Mesa's lavapipe in CI: `apt-get install mesa-vulkan-drivers`).
#![cfg(feature = "wgpu")]

mod common;

fn client()
-> ternary_kernels::cubecl::client::ComputeClient<ternary_kernels::cubecl::wgpu::WgpuRuntime> {
    ternary_kernels::device::wgpu_client()
        .expect("no wgpu adapter: install a Vulkan driver (mesa-vulkan-drivers for lavapipe)")
}

conformance_suite!(client());

#[test]
fn device_summary() {
    let caps = ternary_kernels::DeviceCaps::of(&client());
    eprintln!("wgpu device: {caps:?}");
    assert!(caps.max_units_per_cube >= 64);
}

/// The one attention-score quantizer (`ternary_core::quant::attention`): the `quantize_heads`
/// kernel's planes and scales equal the core host function bit for bit (`to_bits`), over both
/// thresholds and scale rules, groups, one and two levels, binary, dims 1, 63, 64, 65, 576 and
/// the empty cases. The seed is printed; replay with `TERNARY_TEST_SEED=<seed>`.
#[test]
fn attention_quantizer_matches_core_bit_for_bit() {
    let seed = std::env::var("TERNARY_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(9000);
    eprintln!("attention quantizer seed: {seed} (TERNARY_TEST_SEED={seed} replays it)");
    match ternary_kernels::conformance::attention_quantizer_suite_seeded(&client(), seed) {
        Ok(ternary_kernels::conformance::Ran::Passed(n)) => assert!(n > 0),
        other => panic!("seed {seed}: {other:?}"),
    }
}
