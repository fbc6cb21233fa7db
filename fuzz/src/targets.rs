//! The parsers under test, their seed corpora, how an input is generated, and what "parsing"
//! runs for each.

use ternary_layers::Cpu;
use ternary_models::gguf::GgufFile;
use ternary_models::loader::SafetensorsWeights;
use ternary_models::weights::{GgufWeights, WeightSource};
use ternary_models::{LinearImpl, Llama, LlamaConfig, Logits, SafetensorsCheckpoint, Tokenizer};

use crate::gguf::Field;
use crate::rng::input_rng;
use crate::{bytes, gguf, json, safetensors, seeds};

/// A parser (a family of entry points reading one file format).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parser {
    /// GGUF: `GgufFile::from_bytes`, every tensor dequantized, `LlamaConfig::from_gguf`,
    /// `Tokenizer::from_gguf`, the weights as the model loader asks for them (`GgufWeights`,
    /// Q/K rows un-permuted, quantized rows), and the model built from them (block-quantized
    /// and host linears) with one forward step.
    Gguf,
    /// Safetensors: `ternary_core::io::{tensors_from_bytes, from_bytes, one_from_bytes}` and the
    /// Hugging Face weight reader `SafetensorsWeights` (every seed tensor name).
    Safetensors,
    /// Converted-model files: `ternary_convert::model_file::inspect_bytes`, then `load_bytes`
    /// on the CPU backend for every input `inspect_bytes` accepts, and one forward step.
    ModelFile,
    /// `config.json`: `LlamaConfig::from_hf_json` (plus a round trip through `to_hf_json`).
    ConfigJson,
    /// `tokenizer.json`: `Tokenizer::from_hf_json` and `Tokenizer::from_json`, then an encode
    /// and decode with every tokenizer that loads.
    TokenizerJson,
    /// A Hugging Face checkpoint file with transformers' packed BitNet weights (`uint8`
    /// `[out/4, in]` + `weight_scale`): `SafetensorsCheckpoint` (every tensor, float and
    /// ternary), then the BitNet model built from it (W1.58A8 host layers) and one forward step.
    Checkpoint,
    /// `model.safetensors.index.json` over two in-memory shards:
    /// `SafetensorsCheckpoint::from_index`, then the same reads and model as [`Parser::Checkpoint`].
    ShardIndex,
}

impl Parser {
    /// Every parser, in report order.
    pub const ALL: [Parser; 7] = [
        Self::Gguf,
        Self::Safetensors,
        Self::ModelFile,
        Self::ConfigJson,
        Self::TokenizerJson,
        Self::Checkpoint,
        Self::ShardIndex,
    ];

    /// The name used on the command line and for fixture directories.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gguf => "gguf",
            Self::Safetensors => "safetensors",
            Self::ModelFile => "model-file",
            Self::ConfigJson => "config-json",
            Self::TokenizerJson => "tokenizer-json",
            Self::Checkpoint => "hf-checkpoint",
            Self::ShardIndex => "hf-index",
        }
    }

    /// The parser called `name`.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.name() == name)
    }

    /// Position in [`Parser::ALL`] (mixed into every input's random stream).
    pub fn index(self) -> usize {
        Self::ALL.iter().position(|&p| p == self).unwrap_or(0)
    }
}

/// Whether the parser accepted the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Parsed (and, where the harness goes on, used) without error.
    Accepted,
    /// A clean error.
    Rejected,
}

/// A parser's seeds and what its mutators need.
#[derive(Debug)]
pub struct Corpus {
    /// The parser.
    pub parser: Parser,
    /// Valid files.
    pub seeds: Vec<Vec<u8>>,
    /// For GGUF seeds, the integer fields of each.
    fields: Vec<Vec<Field>>,
    /// Words for JSON edits: the format's vocabulary and everything harvested from the seeds.
    dict: Vec<String>,
    /// Inputs are cut to this length.
    max_len: usize,
}

const TOKENIZER_WORDS: &[&str] = &[
    "BPE",
    "WordPiece",
    "WordLevel",
    "Unigram",
    "ByteLevel",
    "Whitespace",
    "WhitespaceSplit",
    "Split",
    "Punctuation",
    "Metaspace",
    "CharDelimiterSplit",
    "Digits",
    "BertPreTokenizer",
    "UnicodeScripts",
    "Sequence",
    "NFC",
    "NFD",
    "NFKC",
    "NFKD",
    "Lowercase",
    "Strip",
    "StripAccents",
    "Replace",
    "Prepend",
    "BertNormalizer",
    "Precompiled",
    "ByteFallback",
    "Fuse",
    "CTC",
    "BPEDecoder",
    "TemplateProcessing",
    "RobertaProcessing",
    "BertProcessing",
    "Removed",
    "Isolated",
    "MergedWithPrevious",
    "MergedWithNext",
    "Contiguous",
    "Regex",
    "String",
    "type",
    "vocab",
    "merges",
    "added_tokens",
    "id",
    "content",
    "special",
    "normalizer",
    "pre_tokenizer",
    "post_processor",
    "decoder",
    "model",
    "pattern",
    "behavior",
    "invert",
    "unk_token",
    "unk_id",
    "continuing_subword_prefix",
    "end_of_word_suffix",
    "fuse_unk",
    "byte_fallback",
    "ignore_merges",
    "dropout",
    "add_prefix_space",
    "trim_offsets",
    "use_regex",
    "single",
    "pair",
    "special_tokens",
    "ids",
    "tokens",
    "sep",
    "cls",
    "replacement",
    "prepend_scheme",
    "split",
    "first",
    "never",
    "always",
    "start",
    "stop",
    "precompiled_charsmap",
    "max_input_chars_per_word",
    "individual_digits",
    "delimiter",
    "normalizers",
    "pretokenizers",
    "decoders",
    "processors",
    "truncation",
    "padding",
    "SpecialToken",
    "A",
    "B",
    "type_id",
    "(",
    "[",
    "\\p{L}+",
    "a{100000}",
    "(?=a)",
    "\\",
    "<unk>",
    "[UNK]",
    "##",
    "▁",
    "FixedLength",
    "length",
    "max_length",
    "stride",
    "strategy",
    "LongestFirst",
    "OnlyFirst",
    "Fixed",
    "BatchLongest",
    "pad_to_multiple_of",
    "pad_id",
    "pad_token",
    "direction",
    "Right",
    "Left",
];

const CONFIG_WORDS: &[&str] = &[
    "llama",
    "gpt2",
    "mistral",
    "default",
    "llama3",
    "linear",
    "dynamic",
    "yarn",
    "rope_type",
    "type",
    "factor",
    "rope_theta",
    "rope_scaling",
    "rope_parameters",
    "head_dim",
    "num_key_value_heads",
    "num_attention_heads",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "vocab_size",
    "rms_norm_eps",
    "max_position_embeddings",
    "tie_word_embeddings",
    "model_type",
    "bos_token_id",
    "eos_token_id",
];

const CHECKPOINT_WORDS: &[&str] = &[
    "weight_map",
    "metadata",
    "total_size",
    "U8",
    "I8",
    "BF16",
    "F16",
    "F32",
    "weight_scale",
    "model.layers.0.self_attn.q_proj.weight",
    "model.layers.0.self_attn.q_proj.weight_scale",
    "model.layers.0.mlp.down_proj.weight",
    "model.layers.0.mlp.ffn_sub_norm.weight",
    "model-00001-of-00002.safetensors",
    "model-00002-of-00002.safetensors",
    "../model.safetensors",
    "model.safetensors",
];

const FILE_WORDS: &[&str] = &[
    "ternary",
    "ternary-model",
    "float",
    "per_row",
    "per_group",
    "kind",
    "rows",
    "cols",
    "scale_layout",
    "group_size",
    "bias",
    "input_scale",
    "planes",
    "packed",
    "f32",
    "storage",
    "format",
    "format_version",
    "config",
    "tokenizer",
    "layers",
    "1",
    "2",
    "lm_head",
    "model.embed_tokens.weight",
    "model.norm.weight",
    "model.layers.0.self_attn.q_proj",
    "model.layers.1.mlp.up_proj",
    "bos_id",
    "eos_id",
    "add_bos",
    "__metadata__",
    "dtype",
    "shape",
    "data_offsets",
];

impl Corpus {
    /// Builds the seeds of `parser` (deterministic, a fraction of a second).
    pub fn new(parser: Parser) -> Self {
        let seeds = match parser {
            Parser::Gguf => seeds::gguf(),
            Parser::Safetensors => seeds::safetensors(),
            Parser::ModelFile => seeds::model_files(),
            Parser::ConfigJson => seeds::configs(),
            Parser::TokenizerJson => seeds::tokenizers(),
            Parser::Checkpoint => seeds::checkpoints(),
            Parser::ShardIndex => seeds::indexes(),
        };
        let fields = match parser {
            Parser::Gguf => seeds.iter().map(|s| gguf::fields(s)).collect(),
            _ => Vec::new(),
        };
        let words: &[&[&str]] = match parser {
            Parser::Gguf => &[],
            Parser::Safetensors => &[FILE_WORDS],
            Parser::ModelFile => &[FILE_WORDS, CONFIG_WORDS, TOKENIZER_WORDS],
            Parser::ConfigJson => &[CONFIG_WORDS],
            Parser::TokenizerJson => &[TOKENIZER_WORDS],
            Parser::Checkpoint => &[FILE_WORDS, CHECKPOINT_WORDS],
            Parser::ShardIndex => &[CHECKPOINT_WORDS],
        };
        let mut dict: Vec<String> = words
            .iter()
            .flat_map(|w| w.iter())
            .map(|s| s.to_string())
            .collect();
        for s in &seeds {
            match parser {
                Parser::ConfigJson | Parser::TokenizerJson | Parser::ShardIndex => {
                    json::harvest(&String::from_utf8_lossy(s), &mut dict);
                }
                Parser::Safetensors | Parser::ModelFile | Parser::Checkpoint => {
                    if let Some(p) = safetensors::split(s) {
                        let header = serde_json::Value::Object(p.header).to_string();
                        json::harvest(&header, &mut dict);
                    }
                }
                Parser::Gguf => {}
            }
        }
        dict.sort();
        dict.dedup();
        dict.truncate(4096);
        let max_len = 2 * seeds.iter().map(Vec::len).max().unwrap_or(0) + 4096;
        Self {
            parser,
            seeds,
            fields,
            dict,
            max_len,
        }
    }

    /// Input `index` of the run with `seed`: the seeds themselves first, then mutants.
    pub fn input(&self, seed: u64, index: u64) -> Vec<u8> {
        if let Some(s) = usize::try_from(index).ok().and_then(|i| self.seeds.get(i)) {
            return s.clone();
        }
        let mut rng = input_rng(seed, self.parser.index(), index);
        let i = rng.below(self.seeds.len());
        let other = &self.seeds[rng.below(self.seeds.len())];
        let mut buf = self.seeds[i].clone();
        let r = rng.below(10);
        let generic = match self.parser {
            Parser::Gguf => match r {
                0 => {
                    gguf::reshape(&mut buf, &self.fields[i], &mut rng);
                    if rng.one_in(2) {
                        gguf::mutate_fields(&mut buf, &self.fields[i], &mut rng, 2);
                    }
                    rng.one_in(4)
                }
                1..=3 => {
                    gguf::mutate_fields(&mut buf, &self.fields[i], &mut rng, 4);
                    rng.one_in(3)
                }
                4 | 5 => {
                    buf = gguf::generate(&mut rng);
                    rng.one_in(3)
                }
                _ => true,
            },
            Parser::Safetensors | Parser::ModelFile | Parser::Checkpoint => match r {
                0..=5 => {
                    if let Some(m) = safetensors::mutate(&buf, &mut rng, &self.dict, 4) {
                        buf = m;
                    }
                    rng.one_in(4)
                }
                _ => true,
            },
            Parser::ConfigJson | Parser::TokenizerJson | Parser::ShardIndex => match r {
                0..=6 => {
                    let text = String::from_utf8_lossy(&buf).into_owned();
                    if let Some(m) = json::mutate_text(&text, &mut rng, &self.dict, 6) {
                        buf = m.into_bytes();
                    }
                    rng.one_in(8)
                }
                _ => true,
            },
        };
        if generic {
            bytes::mutate(&mut buf, &mut rng, other, 6, self.max_len);
        }
        buf.truncate(self.max_len);
        buf
    }
}

/// Hugging Face names the GGUF harness asks the weight view for (layers 0 and 1).
fn hf_names() -> Vec<String> {
    let mut v: Vec<String> = [
        "model.embed_tokens.weight",
        "model.norm.weight",
        "lm_head.weight",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for l in 0..2 {
        for p in [
            "input_layernorm",
            "self_attn.q_proj",
            "self_attn.k_proj",
            "self_attn.v_proj",
            "self_attn.o_proj",
            "post_attention_layernorm",
            "mlp.gate_proj",
            "mlp.up_proj",
            "mlp.down_proj",
        ] {
            v.push(format!("model.layers.{l}.{p}.weight"));
        }
    }
    v
}

fn use_tokenizer(t: &Tokenizer) {
    if let Ok(ids) = t.encode("Hello wörld 12 <s> ab\u{0}", true) {
        let _ = t.decode(&ids);
    }
    let _ = t.decode(&[0, 1, 2, 3, u32::MAX]);
    let _ = t.vocab_size();
}

/// One forward step of a model that loaded: a file that loads must not crash its first use.
fn use_model(model: &Llama<Cpu>) {
    let mut cache = model.new_cache();
    let _ = model.forward(&[0], &mut cache, Logits::Last);
}

fn gguf(bytes: &[u8]) -> Outcome {
    let Ok(g) = GgufFile::from_bytes(bytes.to_vec()) else {
        return Outcome::Rejected;
    };
    for t in &g.tensors {
        let _ = g.dequantize(&t.name);
        if t.kind.is_ternary() {
            let _ = g.ternary(&t.name);
        }
    }
    let config = LlamaConfig::from_gguf(&g);
    let tokenizer = Tokenizer::from_gguf(&g);
    if let Ok(t) = &tokenizer {
        use_tokenizer(t);
    }
    if let Ok(c) = &config {
        let w = GgufWeights::new(&g, c.clone());
        for n in hf_names() {
            if w.contains(&n) {
                let _ = w.tensor(&n);
                let _ = w.quantized(&n);
            }
        }
        for imp in [LinearImpl::Quantized, LinearImpl::Host] {
            if let Ok(m) = Llama::<Cpu>::from_weights_with(c.clone(), &w, &Default::default(), imp)
            {
                use_model(&m);
            }
        }
    }
    if config.is_ok() && tokenizer.is_ok() {
        Outcome::Accepted
    } else {
        Outcome::Rejected
    }
}

fn safetensors(bytes: &[u8]) -> Outcome {
    use ternary_core::io;
    let all = io::tensors_from_bytes(bytes);
    let _ = io::from_bytes(bytes);
    if let Ok(tensors) = &all
        && let Some((name, _)) = tensors.first()
    {
        let _ = io::one_from_bytes(bytes, name);
    }
    let _ = io::one_from_bytes(bytes, "m");
    let hf = SafetensorsWeights::from_bytes(bytes.to_vec());
    if let Ok(w) = &hf {
        for n in seeds::SAFETENSORS_NAMES {
            if w.contains(n) {
                let _ = w.tensor(n);
            }
        }
    }
    if all.is_ok() || hf.is_ok() {
        Outcome::Accepted
    } else {
        Outcome::Rejected
    }
}

/// Every tensor of a checkpoint read as the BitNet loader reads it, then the model built and run.
fn use_checkpoint(ckpt: &SafetensorsCheckpoint) {
    let names = hf_names()
        .into_iter()
        .chain(BITNET_EXTRA.iter().map(|s| s.to_string()));
    for n in names {
        if ckpt.contains(&n) {
            let _ = ckpt.tensor(&n);
            let _ = ckpt.ternary(&n);
        }
    }
    if let Ok(m) = Llama::<Cpu>::from_weights_with(
        seeds::bitnet_config(),
        ckpt,
        &Default::default(),
        LinearImpl::Host,
    ) {
        use_model(&m);
    }
}

/// BitNet tensor names beyond [`hf_names`].
const BITNET_EXTRA: &[&str] = &[
    "model.layers.0.self_attn.attn_sub_norm.weight",
    "model.layers.0.mlp.ffn_sub_norm.weight",
    "model.layers.0.self_attn.q_proj.weight_scale",
];

fn checkpoint(bytes: &[u8]) -> Outcome {
    let Ok(w) = SafetensorsWeights::from_bytes(bytes.to_vec()) else {
        return Outcome::Rejected;
    };
    use_checkpoint(&SafetensorsCheckpoint::single("model.safetensors", w));
    Outcome::Accepted
}

fn shard_index(bytes: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Outcome::Rejected;
    };
    let shards = seeds::shards();
    let open = |file: &str| {
        let (_, b) = shards.iter().find(|(f, _)| f == file).ok_or_else(|| {
            ternary_models::ModelError::Safetensors(format!("{file}: no such shard"))
        })?;
        SafetensorsWeights::from_bytes(b.clone())
    };
    match SafetensorsCheckpoint::from_index(text, open) {
        Ok(ckpt) => {
            use_checkpoint(&ckpt);
            Outcome::Accepted
        }
        Err(_) => Outcome::Rejected,
    }
}

fn model_file(bytes: &[u8]) -> Outcome {
    use ternary_convert::model_file::{inspect_bytes, load_bytes};
    let Ok(summary) = inspect_bytes(bytes) else {
        return Outcome::Rejected;
    };
    let _ = summary.to_string();
    // `load_bytes` validates exactly as `inspect_bytes` does before building the model, so
    // inputs that `inspect_bytes` rejects would only repeat that work.
    match load_bytes::<Cpu>(bytes, &Default::default()) {
        Ok(m) => {
            use_tokenizer(&m.tokenizer);
            use_model(&m.model);
            Outcome::Accepted
        }
        Err(_) => Outcome::Rejected,
    }
}

fn config_json(bytes: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Outcome::Rejected;
    };
    match LlamaConfig::from_hf_json(text) {
        Ok(c) => {
            // serde_json's default float parser (without its `float_roundtrip` feature) is
            // not correctly rounded for 17-digit mantissas or large exponents: floats may come
            // back a few ulps off (see docs/reliability.md). Everything else must be exact.
            let back = LlamaConfig::from_hf_json(&c.to_hf_json());
            let close = |a: f64, b: f64| (a - b).abs() <= 1e-14 * a.abs().max(b.abs());
            assert!(
                back.as_ref().is_ok_and(|b| {
                    let mut b = b.clone();
                    let floats =
                        close(b.rope_theta, c.rope_theta) && close(b.rms_norm_eps, c.rms_norm_eps);
                    (b.rope_theta, b.rms_norm_eps) = (c.rope_theta, c.rms_norm_eps);
                    floats && b == c
                }),
                "config.json round trip changed {c:?} into {back:?}"
            );
            Outcome::Accepted
        }
        Err(_) => Outcome::Rejected,
    }
}

fn tokenizer_json(bytes: &[u8]) -> Outcome {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Outcome::Rejected;
    };
    let mut accepted = false;
    for t in [Tokenizer::from_hf_json(text), Tokenizer::from_json(text)]
        .into_iter()
        .flatten()
    {
        use_tokenizer(&t);
        accepted = true;
    }
    if accepted {
        Outcome::Accepted
    } else {
        Outcome::Rejected
    }
}

/// Runs every entry point of `parser` on `bytes`. Errors are expected; a panic is a bug.
pub fn parse(parser: Parser, bytes: &[u8]) -> Outcome {
    match parser {
        Parser::Gguf => gguf(bytes),
        Parser::Safetensors => safetensors(bytes),
        Parser::ModelFile => model_file(bytes),
        Parser::ConfigJson => config_json(bytes),
        Parser::TokenizerJson => tokenizer_json(bytes),
        Parser::Checkpoint => checkpoint(bytes),
        Parser::ShardIndex => shard_index(bytes),
    }
}
