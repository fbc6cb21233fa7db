//! Perplexity exactly as llama.cpp's `llama-perplexity` computes it.
//!
//! The whole text is tokenized once (BOS first only if the model adds one), cut into
//! `⌊N / n_ctx⌋` non-overlapping chunks of `n_ctx` tokens (the tail is dropped); each chunk is
//! run from an empty cache with its first token replaced by BOS when the model adds one, and
//! only the second half is scored: positions `j = n_ctx/2 … n_ctx−2` predict token `j+1`.
//! Over all `M` scored tokens, with `ℓ = −log softmax(logits_j)[t_{j+1}]`:
//!
//! `NLL = mean ℓ`, `PPL = exp(NLL)`, `±PPL = PPL · sqrt((mean ℓ² − NLL²) / (M − 1))`.

use crate::decoder::{BurnDecoder, Decoder};
use crate::error::{ModelError, Result};
use crate::model::{Llama, Logits};
use burn::tensor::backend::Backend;

/// The outcome of a perplexity run.
#[derive(Debug, Clone, PartialEq)]
pub struct PerplexityReport {
    /// Context length (tokens per chunk).
    pub n_ctx: usize,
    /// Chunks evaluated.
    pub chunks: usize,
    /// Tokens scored, `chunks · (n_ctx − 1 − n_ctx/2)`.
    pub scored: usize,
    /// Mean negative log-likelihood (nats per token).
    pub mean_nll: f64,
    /// `exp(mean_nll)`.
    pub ppl: f64,
    /// llama.cpp's error estimate of `ppl`.
    pub ppl_stderr: f64,
    /// Running perplexity after each chunk (llama.cpp's `[i]value` printout).
    pub running_ppl: Vec<f64>,
}

impl PerplexityReport {
    /// llama.cpp's last line: `Final estimate: PPL = 12.3456 +/- 0.12345`.
    pub fn final_line(&self) -> String {
        format!(
            "Final estimate: PPL = {:.4} +/- {:.5}",
            self.ppl, self.ppl_stderr
        )
    }
}

/// `log softmax(logits)[tok]` as llama.cpp computes it: max-shifted, f32 exponentials summed
/// in f64.
pub fn log_softmax_at(logits: &[f32], tok: usize) -> f64 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| f64::from((l - max).exp())).sum();
    f64::from(logits[tok] - max) - sum.ln()
}

/// Runs llama.cpp's perplexity over `tokens` (the whole tokenized text) with chunks of
/// `n_ctx`; `bos` replaces each chunk's first token when given. At most `max_chunks` chunks
/// are run when set. `on_chunk(i, running_ppl)` is called after each chunk.
pub fn perplexity<B: Backend>(
    model: &Llama<B>,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    max_chunks: Option<usize>,
    on_chunk: impl FnMut(usize, f64),
) -> Result<PerplexityReport> {
    perplexity_with(
        &mut BurnDecoder::new(model),
        tokens,
        n_ctx,
        bos,
        max_chunks,
        on_chunk,
    )
}

/// [`perplexity`] on any [`Decoder`] (its cache is cleared before each chunk).
pub fn perplexity_with(
    model: &mut dyn Decoder,
    tokens: &[u32],
    n_ctx: usize,
    bos: Option<u32>,
    max_chunks: Option<usize>,
    mut on_chunk: impl FnMut(usize, f64),
) -> Result<PerplexityReport> {
    if n_ctx < 4 {
        return Err(ModelError::Input(format!(
            "context {n_ctx} is too short (at least 4)"
        )));
    }
    if tokens.len() < 2 * n_ctx {
        return Err(ModelError::Input(format!(
            "the text has {} tokens; perplexity with a context of {n_ctx} needs at least {}",
            tokens.len(),
            2 * n_ctx
        )));
    }
    let vocab = model.vocab_size();
    let mut chunks = tokens.len() / n_ctx;
    if let Some(m) = max_chunks {
        chunks = chunks.min(m.max(1));
    }
    let first = n_ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::with_capacity(chunks);
    for i in 0..chunks {
        let mut chunk = tokens[i * n_ctx..(i + 1) * n_ctx].to_vec();
        if let Some(b) = bos {
            chunk[0] = b;
        }
        model.clear();
        let logits = model.forward(&chunk, Logits::All)?;
        for j in first..n_ctx - 1 {
            let row = &logits[j * vocab..(j + 1) * vocab];
            let target = tokens[i * n_ctx + j + 1] as usize;
            let l = -log_softmax_at(row, target);
            nll += l;
            nll2 += l * l;
            count += 1;
        }
        let p = (nll / count as f64).exp();
        running.push(p);
        on_chunk(i, p);
    }
    let mean = nll / count as f64;
    let var = nll2 / count as f64 - mean * mean;
    let ppl = mean.exp();
    let stderr = if var > 0.0 && count > 1 {
        (var / (count - 1) as f64).sqrt() * ppl
    } else {
        0.0
    };
    Ok(PerplexityReport {
        n_ctx,
        chunks,
        scored: count,
        mean_nll: mean,
        ppl,
        ppl_stderr: stderr,
        running_ppl: running,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_should_match_f64_formula() {
        let l = [1.0f32, -2.0, 3.5, 0.25, 1000.0, 999.0];
        let m = 1000.0f64;
        let denom: f64 = l.iter().map(|&x| (f64::from(x) - m).exp()).sum();
        for t in 0..l.len() {
            let want = f64::from(l[t]) - m - denom.ln();
            assert!((log_softmax_at(&l, t) - want).abs() < 1e-6, "{t}");
        }
    }

    #[test]
    fn final_line_should_use_llama_cpp_wording() {
        let r = PerplexityReport {
            n_ctx: 512,
            chunks: 1,
            scored: 255,
            mean_nll: 2.0,
            ppl: 7.389056,
            ppl_stderr: 0.123456,
            running_ppl: vec![],
        };
        assert_eq!(r.final_line(), "Final estimate: PPL = 7.3891 +/- 0.12346");
    }
}
