//! AdamW (Loshchilov & Hutter 2019) with linear warm-up and cosine decay, and global-norm
//! gradient clipping, on plain tensors (the trainer owns the parameters; no `Module` needed).
//!
//! With gradient `g`, step `k ≥ 1` and learning rate `η_k`:
//!
//! ```text
//! m ← β₁m + (1 − β₁)g     v ← β₂v + (1 − β₂)g²
//! p ← p − η_k·( m/(1 − β₁ᵏ) / (sqrt(v/(1 − β₂ᵏ)) + ε) + λ·p )
//! η_k = η·k/W (k ≤ W),   η_k = η·(r + (1 − r)·(1 + cos(π·(k − W)/(K − W)))/2) (k > W)
//! ```
//!
//! for `W` warm-up steps of `K` in all and a floor ratio `r`. Clipping scales every gradient
//! by `min(1, c / ‖g‖)` with `‖g‖` the norm over all parameters together.

use burn::tensor::Tensor;
use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

/// The optimizer's hyper-parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OptimConfig {
    /// Peak learning rate `η`.
    pub lr: f64,
    /// Learning-rate multiplier for the scales (`η_s = scale_lr · η`).
    pub scale_lr: f64,
    /// Learning-rate multiplier for the RMSNorm weights (`η_n = norm_lr · η`); 0 keeps them
    /// frozen.
    #[serde(default)]
    pub norm_lr: f64,
    /// Fraction of the steps spent warming up (`W = ⌈fraction · K⌉`).
    pub warmup: f64,
    /// Floor of the cosine decay as a fraction of `η` (`r`).
    pub min_lr_ratio: f64,
    /// `β₁`.
    pub beta1: f64,
    /// `β₂`.
    pub beta2: f64,
    /// `ε`.
    pub eps: f64,
    /// Decoupled weight decay `λ` on the latent weights (never on scales).
    pub weight_decay: f64,
    /// Global gradient-norm limit `c`; `None`: no clipping.
    pub clip: Option<f64>,
}

impl Default for OptimConfig {
    /// `η = 2·10⁻⁴`, scales at the same rate, 5% warm-up, decay to 10%, `β = (0.9, 0.95)`,
    /// `ε = 10⁻⁸`, no weight decay, clipping at 1.
    fn default() -> Self {
        Self {
            lr: 2e-4,
            scale_lr: 1.0,
            norm_lr: 0.0,
            warmup: 0.05,
            min_lr_ratio: 0.1,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weight_decay: 0.0,
            clip: Some(1.0),
        }
    }
}

impl OptimConfig {
    /// `η_k` for step `k` (1-based) of `total`.
    pub fn lr_at(&self, k: usize, total: usize) -> f64 {
        let total = total.max(1);
        let warm = ((self.warmup * total as f64).ceil() as usize).min(total);
        if k <= warm && warm > 0 {
            return self.lr * k as f64 / warm as f64;
        }
        let span = (total - warm).max(1) as f64;
        let progress = ((k - warm) as f64 / span).clamp(0.0, 1.0);
        let r = self.min_lr_ratio;
        self.lr * (r + (1.0 - r) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos()))
    }

    /// Checks the values.
    pub(crate) fn validate(&self) -> Result<(), String> {
        let finite_pos = |v: f64| v.is_finite() && v > 0.0;
        let ratio = |v: f64| v.is_finite() && v >= 0.0;
        if !(finite_pos(self.lr) && ratio(self.scale_lr) && ratio(self.norm_lr)) {
            return Err(format!(
                "learning rates must be positive and finite (lr {}, scale_lr {}, norm_lr {})",
                self.lr, self.scale_lr, self.norm_lr
            ));
        }
        if !(0.0..=1.0).contains(&self.warmup) || !(0.0..=1.0).contains(&self.min_lr_ratio) {
            return Err("warm-up fraction and floor ratio must lie in [0, 1]".into());
        }
        if !(0.0..1.0).contains(&self.beta1) || !(0.0..1.0).contains(&self.beta2) {
            return Err("AdamW betas must lie in [0, 1)".into());
        }
        if !(finite_pos(self.eps) && self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return Err("eps must be positive, weight decay non-negative".into());
        }
        if self.clip.is_some_and(|c| !finite_pos(c)) {
            return Err("the clipping norm must be positive".into());
        }
        Ok(())
    }
}

/// AdamW's running moments of one parameter.
#[derive(Debug, Clone)]
pub struct Moments<B: Backend> {
    /// First moment `m`.
    pub m: Tensor<B, 2>,
    /// Second moment `v`.
    pub v: Tensor<B, 2>,
}

impl<B: Backend> Moments<B> {
    /// Zero moments shaped like `p`.
    pub fn zeros_like(p: &Tensor<B, 2>) -> Self {
        Self {
            m: p.zeros_like(),
            v: p.zeros_like(),
        }
    }
}

/// One AdamW update of `p` with gradient `g` at step `k` (1-based) and rate `lr`; `decay`
/// applies the weight decay.
pub fn adamw<B: Backend>(
    cfg: &OptimConfig,
    p: Tensor<B, 2>,
    g: Tensor<B, 2>,
    mom: &mut Moments<B>,
    k: usize,
    lr: f64,
    decay: bool,
) -> Tensor<B, 2> {
    let (b1, b2) = (cfg.beta1, cfg.beta2);
    mom.m = mom
        .m
        .clone()
        .mul_scalar(b1)
        .add(g.clone().mul_scalar(1.0 - b1));
    mom.v = mom
        .v
        .clone()
        .mul_scalar(b2)
        .add(g.clone().mul(g).mul_scalar(1.0 - b2));
    let c1 = 1.0 - b1.powi(k as i32);
    let c2 = 1.0 - b2.powi(k as i32);
    let step = mom
        .m
        .clone()
        .div_scalar(c1)
        .div(mom.v.clone().div_scalar(c2).sqrt().add_scalar(cfg.eps));
    let p = if decay && cfg.weight_decay > 0.0 {
        p.clone().sub(p.mul_scalar(lr * cfg.weight_decay))
    } else {
        p
    };
    p.sub(step.mul_scalar(lr))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_should_warm_up_then_decay_to_the_floor() {
        let c = OptimConfig {
            warmup: 0.1,
            ..OptimConfig::default()
        };
        assert!((c.lr_at(5, 100) - c.lr * 0.5).abs() < 1e-15);
        assert!((c.lr_at(10, 100) - c.lr).abs() < 1e-15);
        assert!((c.lr_at(100, 100) - c.lr * c.min_lr_ratio).abs() < 1e-15);
        let mid = c.lr_at(55, 100);
        let expect = c.lr * (0.1 + 0.9 * 0.5);
        assert!((mid - expect).abs() < 1e-12, "{mid} vs {expect}");
    }
}
