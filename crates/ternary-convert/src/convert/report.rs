//! What [`convert`](super::convert) reports: stages and progress events, the per-layer plan, the
//! [`ConversionReport`].

use std::fmt;

/// The stages of [`convert`](super::convert).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Running the float model on calibration chunks.
    Calibrate,
    /// Ternarizing layers.
    Quantize,
    /// Measuring each layer's sensitivity.
    Sensitivity,
    /// Bisecting the number of ternary layers against the budget.
    Search,
    /// Measuring perplexities for the report.
    Measure,
}

impl Stage {
    /// A short lowercase name (`"calibrate"`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Calibrate => "calibrate",
            Self::Quantize => "quantize",
            Self::Sensitivity => "sensitivity",
            Self::Search => "search",
            Self::Measure => "measure",
        }
    }
}

/// Progress of [`convert`](super::convert), for progress bars: each stage sends `Start`, then `Step`s with
/// `done` counting up to `total`, then `Finish`.
#[derive(Debug, Clone, PartialEq)]
pub enum Progress {
    /// A stage begins with `total` steps.
    Start {
        /// The stage.
        stage: Stage,
        /// Steps it will take (the search's count is an upper bound).
        total: usize,
    },
    /// One more step is done.
    Step {
        /// The stage.
        stage: Stage,
        /// Steps done so far.
        done: usize,
        /// Steps in the stage.
        total: usize,
        /// What the step was (a layer name, a perplexity, …).
        detail: String,
    },
    /// The stage ended.
    Finish {
        /// The stage.
        stage: Stage,
        /// A one-line summary.
        message: String,
    },
}

/// One layer of the conversion plan.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerReport {
    /// Hugging Face name (`model.layers.3.mlp.down_proj`, `lm_head`).
    pub name: String,
    /// Output channels.
    pub rows: usize,
    /// Input channels.
    pub cols: usize,
    /// Whether the layer is ternary in the converted model (`planes > 0`).
    pub ternary: bool,
    /// Trit-planes in the converted model: 0 (float), 1 or 2.
    pub planes: usize,
    /// How it was (or would have been) quantized; `"float (kept)"` when never quantized.
    pub method: String,
    /// Fraction of zero trits (0 for layers never quantized).
    pub zero_fraction: f64,
    /// Bits per weight as stored in memory: planes (2 bits per plane pair) + `f32` scales for
    /// ternary layers, 32 for float layers.
    pub bits_per_weight: f64,
    /// Relative output error of the ternary candidate on the calibration inputs,
    /// `sqrt(tr(ΔW H ΔWᵀ) / tr(W H Wᵀ))` (0 for layers never quantized).
    pub rel_error: f64,
    /// Mean KL divergence (nats/token) with only this layer ternary, when measured.
    pub sensitivity: Option<f64>,
}

/// What [`convert`](super::convert) did.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversionReport {
    /// Every linear layer of the model, in model order.
    pub layers: Vec<LayerReport>,
    /// Perplexity of the float model on the held-out calibration chunks.
    pub calib_ppl_float: Option<f64>,
    /// Perplexity of the converted model on the same chunks.
    pub calib_ppl_converted: Option<f64>,
    /// The budget that was applied.
    pub budget: Option<f64>,
    /// Calibration tokens used for statistics.
    pub calib_tokens: usize,
    /// Whether the perplexity chunks were disjoint from the statistics tokens.
    pub held_out: bool,
    /// Wall-clock seconds of each stage that ran, in order.
    pub stage_seconds: Vec<(Stage, f64)>,
}

impl ConversionReport {
    /// Fraction of linear weights (all layers, `lm_head` included) that are ternary.
    pub fn ternary_fraction(&self) -> f64 {
        let (t, all) = self.layers.iter().fold((0usize, 0usize), |(t, a), l| {
            let n = l.rows * l.cols;
            (t + if l.ternary { n } else { 0 }, a + n)
        });
        if all == 0 { 0.0 } else { t as f64 / all as f64 }
    }

    /// Mean bits per linear weight with float layers counted at `float_bits` (e.g. 16 for a
    /// bf16 checkpoint, 32 as held in memory) and ternary layers at their stored bits.
    pub fn bits_per_weight(&self, float_bits: f64) -> f64 {
        let (bits, all) = self.layers.iter().fold((0f64, 0usize), |(b, a), l| {
            let n = l.rows * l.cols;
            let per = if l.ternary {
                l.bits_per_weight
            } else {
                float_bits
            };
            (b + per * n as f64, a + n)
        });
        if all == 0 { 0.0 } else { bits / all as f64 }
    }

    /// Fraction of linear weights (all layers, `lm_head` included) on exactly `planes`
    /// trit-planes (0: float).
    pub fn planes_fraction(&self, planes: usize) -> f64 {
        let (t, all) = self.layers.iter().fold((0usize, 0usize), |(t, a), l| {
            let n = l.rows * l.cols;
            (t + if l.planes == planes { n } else { 0 }, a + n)
        });
        if all == 0 { 0.0 } else { t as f64 / all as f64 }
    }

    /// `calib_ppl_converted / calib_ppl_float`, when both were measured.
    pub fn ppl_ratio(&self) -> Option<f64> {
        Some(self.calib_ppl_converted? / self.calib_ppl_float?)
    }
}

impl fmt::Display for ConversionReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<34} {:>11} {:>8} {:<22} {:>6} {:>6} {:>8} {:>10}",
            "layer", "shape", "format", "method", "zeros", "bits", "rel.err", "KL"
        )?;
        for l in &self.layers {
            let sens = l
                .sensitivity
                .map_or_else(|| "-".to_string(), |s| format!("{s:.2e}"));
            writeln!(
                f,
                "{:<34} {:>11} {:>8} {:<22} {:>5.1}% {:>6.2} {:>8.4} {:>10}",
                l.name,
                format!("{}x{}", l.rows, l.cols),
                match l.planes {
                    0 => "float",
                    1 => "ternary",
                    _ => "2-plane",
                },
                l.method,
                100.0 * l.zero_fraction,
                l.bits_per_weight,
                l.rel_error,
                sens
            )?;
        }
        let n_t = self.layers.iter().filter(|l| l.ternary).count();
        let n_2 = self.layers.iter().filter(|l| l.planes == 2).count();
        if n_2 > 0 {
            writeln!(
                f,
                "{n_2} layers on two trit-planes ({:.1}% of linear weights), {} on one ({:.1}%)",
                100.0 * self.planes_fraction(2),
                n_t - n_2,
                100.0 * self.planes_fraction(1)
            )?;
        }
        write!(
            f,
            "{n_t}/{} layers ternary, {:.1}% of linear weights; {:.2} bits/weight (float at 16), \
             {:.2} (float at 32)",
            self.layers.len(),
            100.0 * self.ternary_fraction(),
            self.bits_per_weight(16.0),
            self.bits_per_weight(32.0)
        )?;
        if let (Some(a), Some(b)) = (self.calib_ppl_float, self.calib_ppl_converted) {
            write!(
                f,
                "\ncalibration perplexity: float {a:.3}, converted {b:.3} ({:.3}x{}){}",
                b / a,
                self.budget
                    .map_or_else(String::new, |x| format!(", budget {x}x")),
                if self.held_out { "" } else { " (not held out)" }
            )?;
        }
        if !self.stage_seconds.is_empty() {
            let parts: Vec<String> = self
                .stage_seconds
                .iter()
                .map(|(s, t)| format!("{} {t:.1} s", s.name()))
                .collect();
            write!(f, "\nstages: {}", parts.join(", "))?;
        }
        Ok(())
    }
}
