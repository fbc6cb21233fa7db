//! The KV cache: per layer and key/value head, keys and values `[pos][head_dim]`, `f32` or
//! `f16` ([`KvType`]). Each `(layer, kv head)` is one lock, written by the worker that
//! computed that head's projection rows and read by the workers attending over it; the
//! barriers between phases keep the two apart, so the locks are never contended.

use half::f16;

use crate::options::KvType;

/// Keys and values of one `(layer, kv head)`: `len` positions of `d` values each.
#[derive(Debug)]
pub(crate) enum HeadCache {
    F32 { k: Vec<f32>, v: Vec<f32> },
    F16 { k: Vec<f16>, v: Vec<f16> },
}

/// Positions the cache grows by (so growing is rare, not per token).
const GROW: usize = 256;

impl HeadCache {
    pub fn new(kind: KvType) -> Self {
        match kind {
            KvType::F32 => Self::F32 {
                k: Vec::new(),
                v: Vec::new(),
            },
            KvType::F16 => Self::F16 {
                k: Vec::new(),
                v: Vec::new(),
            },
        }
    }

    /// Makes room for positions `< end` (`d` values each), growing in steps of [`GROW`]
    /// positions, never past `max` positions.
    pub fn reserve(&mut self, end: usize, d: usize, max: usize) {
        let want = end.div_ceil(GROW).saturating_mul(GROW).min(max).max(end) * d;
        match self {
            Self::F32 { k, v } => {
                if k.len() < want {
                    k.resize(want, 0.0);
                    v.resize(want, 0.0);
                }
            }
            Self::F16 { k, v } => {
                if k.len() < want {
                    k.resize(want, f16::ZERO);
                    v.resize(want, f16::ZERO);
                }
            }
        }
    }

    /// Stores the key (`value = false`) or value of position `pos`: `get(i)`, `i < d`.
    pub fn store(&mut self, value: bool, pos: usize, d: usize, get: impl Fn(usize) -> f32) {
        let r = pos * d..(pos + 1) * d;
        match self {
            Self::F32 { k, v } => {
                let dst = if value { &mut v[r] } else { &mut k[r] };
                for (i, x) in dst.iter_mut().enumerate() {
                    *x = get(i);
                }
            }
            Self::F16 { k, v } => {
                let dst = if value { &mut v[r] } else { &mut k[r] };
                for (i, x) in dst.iter_mut().enumerate() {
                    *x = f16::from_f32(get(i));
                }
            }
        }
    }

    /// Keys (`value = false`) or values of positions `0..len` as `[len, d]` `f32`: borrowed
    /// for an `f32` cache, converted into `buf` for `f16`.
    pub fn rows<'a>(
        &'a self,
        value: bool,
        len: usize,
        d: usize,
        buf: &'a mut Vec<f32>,
    ) -> &'a [f32] {
        match self {
            Self::F32 { k, v } => &(if value { v } else { k })[..len * d],
            Self::F16 { k, v } => {
                let src = &(if value { v } else { k })[..len * d];
                buf.resize(len * d, 0.0);
                half::slice::HalfFloatSliceExt::convert_to_f32_slice(src, buf);
                &buf[..len * d]
            }
        }
    }

    /// Bytes held.
    pub fn bytes(&self) -> usize {
        match self {
            Self::F32 { k, v } => 4 * (k.len() + v.len()),
            Self::F16 { k, v } => 2 * (k.len() + v.len()),
        }
    }
}
