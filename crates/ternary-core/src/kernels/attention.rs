//! Causal attention of a block of query tokens of one head, with the tokens in SIMD lanes.
//!
//! Queries and outputs are laid out `[d, nt]` (feature-major: the layout in which a
//! projection's output rows arrive), keys and values `[len, d]` (the cache's layout). For each
//! tile of query tokens `t0..t1` (32 on AVX-512, 16 on AVX2), with `P = pos0 + t1` positions
//! visible to at least one of them:
//!
//! ```text
//! S[p, c] = scale · Σ_i K[p, i] · Qᵀ[i, t0 + c]                p < P
//! E[p, c] = exp(S[p, c] − max_p S[·, c])  if p ≤ pos0 + t0 + c, else 0
//! Oᵀ[i, t0 + c] = (Σ_p V[p, i] · E[p, c]) / Σ_p E[p, c]
//! ```
//!
//! Both products are register tiles of `R` rows × the tile's lanes with one broadcast of `K`
//! (or `V`) per row and step, so neither keys nor values are transposed, and no horizontal
//! reduction is needed; the softmax runs down each column, all tokens of the tile at once.
//! The scalar path computes the same quantities one token at a time.

use super::{Isa, Level};
use crate::error::{Result, TernaryError};

/// Buffers reused across calls of [`causal_attention_with`] (sized on first use).
#[derive(Debug, Default, Clone)]
pub struct AttentionScratch {
    /// Packed queries of one tile `[d, lanes]` (the x86 kernels' only).
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    pub(crate) q: Vec<f32>,
    /// Scores, then weights, of one tile `[P, lanes]`.
    pub(crate) s: Vec<f32>,
    /// Unnormalized outputs of one tile `[d, lanes]`.
    pub(crate) o: Vec<f32>,
}

/// The shapes of one call, checked by [`causal_attention_with`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Causal<'a> {
    /// Queries `[d, nt]`.
    pub q_t: &'a [f32],
    /// Keys and values of positions `0..pos0 + nt`, `[len, d]` each.
    pub keys: &'a [f32],
    pub values: &'a [f32],
    pub nt: usize,
    pub d: usize,
    pub pos0: usize,
    pub scale: f32,
}

/// Causal attention of `nt` consecutive query tokens of one head, the first at position `pos0`:
/// `o_t = Σ_{p ≤ pos0 + t} softmax_p(scale · q_t · k_p) · v_p`.
///
/// `q_t` and `out_t` are `[d, nt]` (`q_t[i · nt + t]`); `keys` and `values` hold at least the
/// `len = pos0 + nt` positions `[len, d]` (later rows are ignored). Scores, exponentials and
/// sums are `f32` (`exp` by a polynomial on AVX2/AVX-512, within about 2 ulp); the
/// normalization divides the weighted sum instead of each weight. Against the `f64`
/// reference ([`reference::causal_attention`](crate::reference::causal_attention)) the
/// results agree to about `(d + len)·ε` relative to `Σ_p w_p·|v_p|`.
///
/// A non-finite score makes its token's output NaN, as in the reference.
#[allow(clippy::too_many_arguments)]
pub fn causal_attention_with(
    level: Level,
    q_t: &[f32],
    nt: usize,
    keys: &[f32],
    values: &[f32],
    d: usize,
    pos0: usize,
    scale: f32,
    out_t: &mut [f32],
    scratch: &mut AttentionScratch,
) -> Result<()> {
    let len = pos0
        .checked_add(nt)
        .ok_or_else(|| TernaryError::shape("attention: position overflow"))?;
    let need = len.checked_mul(d);
    if d == 0 && nt > 0 {
        return Err(TernaryError::shape("attention: head dimension 0"));
    }
    if nt.checked_mul(d) != Some(q_t.len()) || q_t.len() != out_t.len() {
        return Err(TernaryError::shape(format!(
            "attention: queries and outputs need d x nt = {d} x {nt} values, got {} and {}",
            q_t.len(),
            out_t.len()
        )));
    }
    if need.is_none_or(|need| keys.len() < need || values.len() < need) {
        return Err(TernaryError::shape(format!(
            "attention: {len} positions of {d} need {} keys and values, got {} and {}",
            len.saturating_mul(d),
            keys.len(),
            values.len()
        )));
    }
    if nt == 0 {
        return Ok(());
    }
    let a = Causal {
        q_t,
        keys,
        values,
        nt,
        d,
        pos0,
        scale,
    };
    match Isa::of(level)? {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2(t) => t.causal_attention(&a, out_t, scratch),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512(t) => t.causal_attention(&a, out_t, scratch),
        _ => causal_scalar(&a, out_t, scratch),
    }
    Ok(())
}

/// One token at a time: scores, softmax (`f32::exp`), weighted sum of value rows.
fn causal_scalar(a: &Causal<'_>, out_t: &mut [f32], scratch: &mut AttentionScratch) {
    let (d, nt) = (a.d, a.nt);
    scratch.o.clear();
    scratch.o.resize(d, 0.0);
    for t in 0..nt {
        let visible = a.pos0 + t + 1;
        scratch.s.clear();
        scratch
            .s
            .extend(a.keys[..visible * d].chunks_exact(d).map(|k| {
                let dot: f32 = (0..d).map(|i| a.q_t[i * nt + t] * k[i]).sum();
                dot * a.scale
            }));
        let max = scratch.s.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let mut sum = 0f32;
        for v in &mut scratch.s {
            *v = (*v - max).exp();
            sum += *v;
        }
        scratch.o.fill(0.0);
        for (&w, v) in scratch.s.iter().zip(a.values.chunks_exact(d)) {
            for (o, &vi) in scratch.o.iter_mut().zip(v) {
                *o += w * vi;
            }
        }
        for (i, &o) in scratch.o.iter().enumerate() {
            out_t[i * nt + t] = o / sum;
        }
    }
}
