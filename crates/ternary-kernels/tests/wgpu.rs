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
