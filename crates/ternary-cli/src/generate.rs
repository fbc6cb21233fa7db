//! `ternary generate`: stream a continuation of a prompt (or a chat answer) to stdout.

use std::io::Write;
use std::path::PathBuf;

use clap::Args;
use ternary_models::chat::{ChatMessage, render};
use ternary_models::{Sampling, Tokenizer, generate_with};

use crate::common::{CliError, Engine, PathArg, Res, decoder_owned, load_model, set_ternary_path};

/// Arguments of `ternary generate`.
#[derive(Debug, Clone, Args)]
pub struct GenerateArgs {
    /// The model, in any format `ternary` reads (told by content, not by name).
    #[arg(long)]
    pub model: PathBuf,
    /// The prompt (with `--chat`, the user's message).
    #[arg(long)]
    pub prompt: String,
    /// Most new tokens to generate (generation also stops at the end-of-sequence token).
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Softmax temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.8, allow_negative_numbers = true)]
    pub temperature: f32,
    /// Keep only the K most likely tokens (0: all; 1: greedy).
    #[arg(long, default_value_t = 40)]
    pub top_k: usize,
    /// Keep the most likely tokens up to this cumulative probability.
    #[arg(long, default_value_t = 0.95, allow_negative_numbers = true)]
    pub top_p: f32,
    /// Seed of the sampler (same seed and flags, same text).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Wrap the prompt in the model's chat template (GGUF `tokenizer.chat_template` or
    /// `tokenizer_config.json`) as one user turn, ready for the assistant's answer.
    #[arg(long)]
    pub chat: bool,
    /// With `--chat`: a system message before the user's turn.
    #[arg(long, requires = "chat")]
    pub system: Option<String>,
    /// The engine: the CPU runtime (default) or the Burn reference model.
    #[arg(long, value_enum, default_value_t = Engine::Runtime)]
    pub engine: Engine,
    /// How ternary layers compute (`cpu-int8`: int8 activations per token, the fastest
    /// kernels; converted models lose a little perplexity with it).
    #[arg(long, value_enum, default_value_t = PathArg::Auto)]
    pub ternary_path: PathArg,
}

/// The prompt's token ids: plain text with BOS when the model adds one, or the rendered chat
/// template (BOS added only when the template did not write it).
fn prompt_ids(tok: &Tokenizer, args: &GenerateArgs) -> Res<Vec<u32>> {
    if !args.chat {
        return Ok(tok.encode(&args.prompt, true)?);
    }
    let template = tok.chat_template.as_deref().ok_or_else(|| {
        CliError::new(format!(
            "{} has no chat template (GGUF 'tokenizer.chat_template' or \
             tokenizer_config.json 'chat_template'); run without --chat",
            args.model.display()
        ))
    })?;
    let text_of = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or_default();
    let bos = text_of(tok.bos_id);
    let eos = text_of(tok.eos_id);
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::new("system", s));
    }
    messages.push(ChatMessage::new("user", &args.prompt));
    let text = render(template, &messages, true, &bos, &eos)?;
    let wrote_bos = !bos.is_empty() && text.starts_with(&bos);
    Ok(tok.encode(&text, !wrote_bos)?)
}

/// Prints decoded text as tokens arrive, holding back an incomplete UTF-8 sequence (a
/// trailing U+FFFD from a partial byte sequence) until the next token completes it.
struct Streamer<'t> {
    tok: &'t Tokenizer,
    /// The last prompt token, decoded in front of the new ones so a SentencePiece
    /// tokenizer keeps the first new token's leading space.
    context: Vec<u32>,
    /// The text of `context` alone.
    context_text: String,
    /// Bytes of the new text already printed.
    printed: usize,
    out: std::io::Stdout,
}

impl<'t> Streamer<'t> {
    fn new(tok: &'t Tokenizer, prompt: &[u32]) -> Res<Self> {
        let context: Vec<u32> = prompt.last().copied().into_iter().collect();
        let context_text = tok.decode(&context)?;
        Ok(Self {
            tok,
            context,
            context_text,
            printed: 0,
            out: std::io::stdout(),
        })
    }

    /// The decoded text of `new` tokens.
    fn text(&self, new: &[u32]) -> Res<String> {
        let mut ids = self.context.clone();
        ids.extend_from_slice(new);
        let all = self.tok.decode(&ids)?;
        Ok(match all.strip_prefix(self.context_text.as_str()) {
            Some(rest) => rest.to_string(),
            None => self.tok.decode(new)?,
        })
    }

    /// Prints what is new in the text of `new`; `last` prints everything.
    fn show(&mut self, new: &[u32], last: bool) -> Res<()> {
        let text = self.text(new)?;
        let mut end = text.len();
        if !last {
            end = text.trim_end_matches('\u{FFFD}').len();
        }
        if end > self.printed && text.is_char_boundary(self.printed) {
            let mut lock = self.out.lock();
            lock.write_all(&text.as_bytes()[self.printed..end])?;
            lock.flush()?;
            self.printed = end;
        }
        Ok(())
    }
}

/// `ternary generate`.
pub fn run(args: &GenerateArgs) -> Res<()> {
    let sampling = Sampling::new(args.temperature, args.top_k, args.top_p, args.seed);
    sampling.validate()?;
    if args.max_tokens == 0 {
        return Err(CliError::new("--max-tokens must be at least 1"));
    }
    let (mut m, _) = load_model(&args.model)?;
    set_ternary_path(&mut m.model, args.ternary_path);
    let prompt = prompt_ids(&m.tokenizer, args)?;
    let max_ctx = m.model.config().max_position_embeddings;
    if prompt.len() + args.max_tokens > max_ctx {
        return Err(CliError::new(format!(
            "the prompt ({} tokens) plus --max-tokens {} exceeds the model's context of {max_ctx}",
            prompt.len(),
            args.max_tokens
        )));
    }
    let eos = m.tokenizer.eos_id;
    let mut streamer = Streamer::new(&m.tokenizer, &prompt)?;
    let mut new: Vec<u32> = Vec::with_capacity(args.max_tokens);
    let mut failed: Option<CliError> = None;
    let mut dec = decoder_owned(m.model, args.engine)?;
    let (_, stats) = generate_with(dec.as_mut(), &prompt, args.max_tokens, sampling, eos, |t| {
        if Some(t) == eos || failed.is_some() {
            return;
        }
        new.push(t);
        if let Err(e) = streamer.show(&new, false) {
            failed = Some(e);
        }
    })?;
    if let Some(e) = failed {
        return Err(e);
    }
    streamer.show(&new, true)?;
    println!();
    eprintln!(
        "prompt: {} tokens, {:.1} tokens/s; generation: {} tokens, {:.1} tokens/s",
        stats.prompt_tokens,
        stats.prefill_tokens_per_sec(),
        stats.generated_tokens,
        stats.decode_tokens_per_sec()
    );
    Ok(())
}
