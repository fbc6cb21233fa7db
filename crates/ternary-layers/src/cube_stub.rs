//! Stand-in for the `cube` module when neither the `wgpu` nor the `cuda` feature is on: no
//! backend implements the cube path, and [`LinearPath::Cube`](crate::LinearPath::Cube) reports
//! why.

/// What the cube path needs, for errors on other backends.
pub(crate) const CUBE_NEEDS: &str =
    "the cube path needs ternary-layers' `wgpu` or `cuda` feature and Burn's CubeBackend";

/// A layer's uploaded matrices (nothing to hold without a CubeCL runtime).
#[derive(Debug, Default, Clone)]
pub struct DeviceCache;
