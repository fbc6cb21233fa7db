//! The planner: which kernel and which tile sizes for a product of a given shape.
//!
//! Like CubeCL's matmul `setup(...) -> Result<Config, SetupError>`, an impossible
//! configuration is a typed error ([`KernelError::Unsupported`] / [`KernelError::Config`]),
//! never a launch that fails later.

use crate::device::DeviceCaps;
use crate::error::{KernelError, Result};

/// Which GEMV/GEMM kernel to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum GemmStrategy {
    /// Let the planner choose: [`GemmStrategy::RowsPlane`] (or [`GemmStrategy::RowsShared`] without
    /// plane operations) for up to 8 tokens, [`GemmStrategy::Tiled`] above.
    #[default]
    Auto,
    /// One row per plane (warp / subgroup), lanes reduced with `plane_sum`.
    RowsPlane,
    /// One row per 32 units, lanes reduced with a shared-memory tree.
    RowsShared,
    /// Tiled GEMM with shared-memory staging.
    Tiled,
}

/// Tile sizes of the tiled GEMM: a cube computes `bm × bn` outputs, stages `bk` plane words per
/// step, and each unit holds a `tm × tn` register block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TileConfig {
    /// Rows per cube.
    pub bm: u32,
    /// Tokens per cube.
    pub bn: u32,
    /// Plane words (32 columns each) staged per step.
    pub bk: u32,
    /// Rows per unit.
    pub tm: u32,
    /// Tokens per unit.
    pub tn: u32,
}

impl TileConfig {
    /// Units per cube: `(bm / tm) · (bn / tn)`.
    pub fn units(&self) -> u32 {
        (self.bm / self.tm) * (self.bn / self.tn)
    }

    /// Shared memory per cube in bytes (4-byte elements):
    /// `4 · (2 · bm · (bk + 1) + bn · (32 · bk + 1))`.
    pub fn shared_bytes(&self) -> usize {
        let (bm, bn, bk) = (self.bm as usize, self.bn as usize, self.bk as usize);
        4 * (2 * bm * (bk + 1) + bn * (32 * bk + 1))
    }

    /// Checks the configuration against the device: divisibility, units and shared memory.
    pub fn setup(self, caps: &DeviceCaps) -> Result<Self> {
        let TileConfig { bm, bn, bk, tm, tn } = self;
        if [bm, bn, bk, tm, tn].contains(&0) || bm % tm != 0 || bn % tn != 0 {
            return Err(KernelError::config(format!(
                "tile {self:?}: sizes must be positive with tm | bm and tn | bn"
            )));
        }
        if self.units() > caps.max_units_per_cube {
            return Err(KernelError::Unsupported(format!(
                "tile {self:?} needs {} units per cube, device allows {}",
                self.units(),
                caps.max_units_per_cube
            )));
        }
        if self.shared_bytes() > caps.max_shared_memory {
            return Err(KernelError::Unsupported(format!(
                "tile {self:?} needs {} bytes of shared memory, device allows {}",
                self.shared_bytes(),
                caps.max_shared_memory
            )));
        }
        Ok(self)
    }
}

/// Configuration of the row-parallel GEMV kernel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RowsConfig {
    /// Units per row (a power of two dividing 32).
    pub lanes: u32,
    /// Rows per cube.
    pub rows_per_cube: u32,
    /// Tokens per cube (1, 2, 4 or 8).
    pub tokens: u32,
    /// Reduce lanes with `plane_sum` (`lanes` equals the plane size) instead of shared memory.
    pub plane_reduce: bool,
}

/// A planned launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plan {
    /// The row-parallel kernel.
    Rows(RowsConfig),
    /// The tiled kernel.
    Tiled(TileConfig),
}

/// Tokens up to which [`GemmStrategy::Auto`] picks the row-parallel kernel.
pub const ROWS_MAX_TOKENS: usize = 8;

/// Plans the row-parallel kernel for `n` tokens.
pub fn plan_rows(caps: &DeviceCaps, n: usize, plane: bool) -> Result<RowsConfig> {
    let tokens = (n.clamp(1, ROWS_MAX_TOKENS)).next_power_of_two() as u32;
    let (lanes, plane_reduce) = if plane {
        match caps.fixed_plane_size() {
            Some(p @ (4 | 8 | 16 | 32)) => (p, true),
            Some(p) => {
                return Err(KernelError::Unsupported(format!(
                    "{}: plane size {p} is not 4, 8, 16 or 32",
                    caps.runtime
                )));
            }
            None => {
                return Err(KernelError::Unsupported(format!(
                    "{}: plane operations with a fixed plane size are not available \
                     (plane ops: {}, sizes {:?})",
                    caps.runtime, caps.plane_ops, caps.plane_size
                )));
            }
        }
    } else {
        (32, false)
    };
    let rows_per_cube = (128 / lanes).min(caps.max_units_per_cube / lanes).max(1);
    Ok(RowsConfig {
        lanes,
        rows_per_cube,
        tokens,
        plane_reduce,
    })
}

/// Candidate tiles for many tokens, best first.
const LARGE_TILES: [TileConfig; 3] = [
    TileConfig {
        bm: 64,
        bn: 64,
        bk: 2,
        tm: 4,
        tn: 4,
    },
    TileConfig {
        bm: 64,
        bn: 32,
        bk: 2,
        tm: 4,
        tn: 2,
    },
    TileConfig {
        bm: 32,
        bn: 32,
        bk: 1,
        tm: 2,
        tn: 2,
    },
];

/// Plans the tiled kernel for `n` tokens: the first candidate that fits the device.
///
/// For `n < 64` the token tile shrinks to `n` rounded up to a power of two, with one row per
/// unit along `bm`.
pub fn plan_tiled(caps: &DeviceCaps, n: usize) -> Result<TileConfig> {
    let mut candidates: Vec<TileConfig> = Vec::new();
    if n < 64 {
        let bn = n.max(1).next_power_of_two() as u32;
        let tn = bn.min(4);
        let ux = bn / tn;
        let bm = (256 / ux).min(128);
        candidates.push(TileConfig {
            bm,
            bn,
            bk: 4,
            tm: 1,
            tn,
        });
        candidates.push(TileConfig {
            bm: bm / 2,
            bn,
            bk: 2,
            tm: 1,
            tn,
        });
    }
    candidates.extend(LARGE_TILES);
    let mut last = None;
    for c in candidates {
        match c.setup(caps) {
            Ok(c) => return Ok(c),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| KernelError::Unsupported("no tile fits this device".into())))
}

/// Plans a product of `n` tokens with `strategy`.
pub fn plan(caps: &DeviceCaps, n: usize, strategy: GemmStrategy) -> Result<Plan> {
    match strategy {
        GemmStrategy::Auto if n <= ROWS_MAX_TOKENS => {
            let rows = plan_rows(caps, n, true).or_else(|_| plan_rows(caps, n, false))?;
            Ok(Plan::Rows(rows))
        }
        GemmStrategy::Auto | GemmStrategy::Tiled => Ok(Plan::Tiled(plan_tiled(caps, n)?)),
        GemmStrategy::RowsPlane => Ok(Plan::Rows(plan_rows(caps, n, true)?)),
        GemmStrategy::RowsShared => Ok(Plan::Rows(plan_rows(caps, n, false)?)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(plane: Option<u32>, shared: usize) -> DeviceCaps {
        DeviceCaps {
            runtime: "test",
            plane_ops: plane.is_some(),
            plane_size: plane.map_or((0, 0), |p| (p, p)),
            max_shared_memory: shared,
            max_units_per_cube: 256,
            max_cube_count: (65535, 65535, 65535),
            f16: false,
        }
    }

    #[test]
    fn auto_picks_rows_for_few_tokens_and_tiles_for_many() {
        let c = caps(Some(32), 32 * 1024);
        let Plan::Rows(r) = plan(&c, 3, GemmStrategy::Auto).unwrap() else {
            panic!("expected rows")
        };
        assert_eq!((r.lanes, r.tokens, r.plane_reduce), (32, 4, true));
        let Plan::Tiled(t) = plan(&c, 8192, GemmStrategy::Auto).unwrap() else {
            panic!("expected tiled")
        };
        assert_eq!(t, LARGE_TILES[0]);
    }

    #[test]
    fn planner_respects_shared_memory_and_plane_support() {
        let small = caps(None, 16 * 1024);
        let t = plan_tiled(&small, 8192).unwrap();
        assert!(t.shared_bytes() <= 16 * 1024, "{t:?}");
        assert!(matches!(
            plan(&small, 1, GemmStrategy::RowsPlane),
            Err(KernelError::Unsupported(_))
        ));
        let Plan::Rows(r) = plan(&small, 1, GemmStrategy::Auto).unwrap() else {
            panic!("expected rows")
        };
        assert!(!r.plane_reduce);
        assert!(matches!(
            plan_tiled(&caps(None, 64), 8),
            Err(KernelError::Unsupported(_))
        ));
    }

    #[test]
    fn every_small_tile_is_consistent() {
        let c = caps(Some(32), 48 * 1024);
        for n in 1..=64 {
            let t = plan_tiled(&c, n).unwrap();
            assert_eq!(t.bm % t.tm, 0);
            assert_eq!(t.bn % t.tn, 0);
            assert!(t.units() <= 256);
        }
    }
}
