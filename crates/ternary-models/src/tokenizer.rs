//! Tokenizers from GGUF metadata: byte-level BPE (`tokenizer.ggml.model = "gpt2"`, with the
//! `tokenizers` crate) and SentencePiece (`"llama"`, llama.cpp's algorithm in `spm`).
//!
//! For BPE, GGUF keeps `tokenizer.ggml.tokens` (id → byte-level string, e.g. `"Ġthe"`),
//! `tokenizer.ggml.merges` (`"Ġ t"` pairs in rank order), `tokenizer.ggml.token_type`
//! (3 = control, 4 = user-defined: both are matched whole before BPE) and
//! `tokenizer.ggml.pre`, the pre-tokenizer: `gpt2`/`default` = the GPT-2 regex split,
//! `smollm` = every digit alone, then the GPT-2 split (llama.cpp's and Hugging Face's
//! definition for SmolLM).
//!
//! For SentencePiece, GGUF keeps `tokenizer.ggml.tokens` (`"▁the"`, `"<0x0A>"`),
//! `tokenizer.ggml.scores` (merge priority), `tokenizer.ggml.token_type` and
//! `tokenizer.ggml.add_space_prefix` (default true); a BOS is added unless
//! `tokenizer.ggml.add_bos_token` is false, and the ids of `<s>`/`</s>` default to 1/2 as in
//! llama.cpp. Both keep the chat template in `tokenizer.chat_template`.

use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::spm::Spm;
use crate::tokenizer_json::{
    check_added_token, check_document, guarded, without_truncation_and_padding,
};
use std::path::Path;
use tokenizers::AddedToken;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{BPE, Vocab};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;

/// A text ↔ token-id codec plus the model's special ids.
#[derive(Debug, Clone)]
pub struct Tokenizer {
    codec: Codec,
    /// Beginning-of-sequence id, when the model has one.
    pub bos_id: Option<u32>,
    /// End-of-sequence id, when the model has one.
    pub eos_id: Option<u32>,
    /// Whether [`Tokenizer::encode`] with `add_special = true` prepends `bos_id`.
    pub add_bos: bool,
    /// The model's Jinja chat template (GGUF `tokenizer.chat_template` or
    /// `tokenizer_config.json`'s `chat_template`), when it has one.
    pub chat_template: Option<String>,
}

/// The algorithm behind a [`Tokenizer`].
#[derive(Debug, Clone)]
enum Codec {
    /// Any `tokenizers` pipeline (byte-level BPE from GGUF, or a `tokenizer.json`).
    Hf(Box<tokenizers::Tokenizer>),
    /// SentencePiece with llama.cpp's rules.
    Spm(Box<Spm>),
}

fn tok_err(e: impl std::fmt::Display) -> ModelError {
    ModelError::Tokenizer(e.to_string())
}

impl Tokenizer {
    /// Builds the tokenizer stored in a GGUF file (`tokenizer.ggml.model` `gpt2` or `llama`).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let model = g.get_str("tokenizer.ggml.model")?;
        let mut t = match model {
            "gpt2" => Self::bpe_from_gguf(g)?,
            "llama" => Self::spm_from_gguf(g)?,
            other => {
                return Err(ModelError::Tokenizer(format!(
                    "tokenizer model '{other}' is not supported (byte-level BPE 'gpt2', \
                     SentencePiece 'llama')"
                )));
            }
        };
        t.chat_template = g
            .get("tokenizer.chat_template")
            .and_then(|v| v.as_str())
            .map(str::to_string);
        Ok(t)
    }

    /// The SentencePiece tokenizer of a GGUF file.
    fn spm_from_gguf(g: &GgufFile) -> Result<Self> {
        let tokens = gguf_strings(g, "tokenizer.ggml.tokens")?;
        let n = tokens.len();
        let scores = match g.get("tokenizer.ggml.scores") {
            None => vec![0.0; n],
            Some(v) => v
                .as_array()
                .ok_or_else(|| {
                    ModelError::Tokenizer("'tokenizer.ggml.scores' is not an array".into())
                })?
                .iter()
                .map(|x| {
                    x.as_f64().map(|f| f as f32).ok_or_else(|| {
                        ModelError::Tokenizer("'tokenizer.ggml.scores' holds a non-number".into())
                    })
                })
                .collect::<Result<Vec<f32>>>()?,
        };
        let types = gguf_token_types(g, n)?;
        let add_space_prefix = g
            .get("tokenizer.ggml.add_space_prefix")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        let spm = Spm::new(tokens, scores, types, add_space_prefix)?;
        let id = |key: &str, default: u32| -> Option<u32> {
            let v = match g.get(key) {
                Some(v) => v.as_u64().and_then(|v| u32::try_from(v).ok()),
                None => Some(default),
            };
            v.filter(|&v| (v as usize) < n)
        };
        Ok(Self {
            bos_id: id("tokenizer.ggml.bos_token_id", 1),
            eos_id: id("tokenizer.ggml.eos_token_id", 2),
            add_bos: g
                .get("tokenizer.ggml.add_bos_token")
                .and_then(|v| v.as_bool())
                .unwrap_or(true),
            codec: Codec::Spm(Box::new(spm)),
            chat_template: None,
        })
    }

    /// The byte-level BPE tokenizer of a GGUF file.
    fn bpe_from_gguf(g: &GgufFile) -> Result<Self> {
        let tokens = gguf_strings(g, "tokenizer.ggml.tokens")?;
        let merges = gguf_strings(g, "tokenizer.ggml.merges")?;
        let types = gguf_token_types(g, tokens.len())?;
        let pre = g
            .get("tokenizer.ggml.pre")
            .and_then(|v| v.as_str())
            .unwrap_or("default");
        let id = |key: &str| -> Option<u32> {
            g.get(key)
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok())
        };
        let mut t = Self::from_parts(&tokens, &merges, &types, pre)?;
        t.bos_id = id("tokenizer.ggml.bos_token_id");
        t.eos_id = id("tokenizer.ggml.eos_token_id");
        t.add_bos = g
            .get("tokenizer.ggml.add_bos_token")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        Ok(t)
    }

    /// Builds a byte-level BPE tokenizer from its parts: `tokens[id]`, merges `"a b"` in rank
    /// order, token types (3 and 4 are matched whole, and may be at most 256 bytes long), and
    /// the GGUF pre-tokenizer name.
    pub fn from_parts(
        tokens: &[String],
        merges: &[String],
        types: &[u64],
        pre: &str,
    ) -> Result<Self> {
        let mut vocab = Vocab::default();
        for (i, t) in tokens.iter().enumerate() {
            let id = u32::try_from(i).map_err(tok_err)?;
            // Duplicate strings keep their first id, as llama.cpp does.
            vocab.entry(t.clone()).or_insert(id);
        }
        let merges = merges
            .iter()
            .map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
                    .ok_or_else(|| ModelError::Tokenizer(format!("merge '{m}' is not two tokens")))
            })
            .collect::<Result<Vec<_>>>()?;
        let bpe = guarded("BPE", || {
            BPE::builder()
                .vocab_and_merges(vocab, merges)
                .build()
                .map_err(tok_err)
        })?;
        let byte_level = ByteLevel::new(false, true, true);
        let pre_tok: PreTokenizerWrapper = match pre {
            "gpt2" | "default" => byte_level.into(),
            "smollm" => Sequence::new(vec![Digits::new(true).into(), byte_level.into()]).into(),
            other => {
                return Err(ModelError::Tokenizer(format!(
                    "pre-tokenizer '{other}' is not supported (gpt2, default, smollm)"
                )));
            }
        };
        let mut inner = tokenizers::Tokenizer::new(bpe);
        inner.with_pre_tokenizer(Some(pre_tok));
        inner.with_decoder(Some(ByteLevelDecoder::default()));
        let special: Vec<AddedToken> = tokens
            .iter()
            .zip(types)
            .enumerate()
            .filter(|&(_, (_, &ty))| ty == 3 || ty == 4)
            .map(|(i, (t, _))| {
                check_added_token(i, t)?;
                Ok(AddedToken::from(t.clone(), true))
            })
            .collect::<Result<_>>()?;
        inner.add_special_tokens(&special);
        Ok(Self {
            codec: Codec::Hf(Box::new(inner)),
            bos_id: None,
            eos_id: None,
            add_bos: false,
            chat_template: None,
        })
    }

    /// Loads a Hugging Face `tokenizer.json` (special ids guessed from `<s>`,
    /// `<|endoftext|>`/`</s>`; [`load_safetensors_dir`](crate::load_safetensors_dir) takes
    /// them from `config.json` instead when it has them).
    pub fn from_hf_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_hf_json(&text).map_err(|e| match e {
            ModelError::Tokenizer(m) => ModelError::Tokenizer(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// [`Tokenizer::from_hf_file`] on the text of a `tokenizer.json`.
    ///
    /// Documents that the `tokenizers` crate would panic on (when loading or at the first
    /// encode or decode) are [`ModelError::Tokenizer`] errors. The file's `truncation` and
    /// `padding` settings are ignored: texts are encoded whole, one at a time.
    pub fn from_hf_json(text: &str) -> Result<Self> {
        // Syntax first: tokenizers 0.22 deserializes decoders through an untagged helper that
        // panics (`expect("Helper")`) when the JSON text itself is malformed inside it; from
        // an already parsed `Value` that step cannot fail.
        let doc: serde_json::Value = serde_json::from_str(text).map_err(tok_err)?;
        check_document(&doc)?;
        let doc = without_truncation_and_padding(doc);
        let inner: tokenizers::Tokenizer = guarded("tokenizer.json", || {
            serde_json::from_value(doc).map_err(tok_err)
        })?;
        let id = |s: &str| inner.token_to_id(s);
        let eos_id = id("<|endoftext|>").or_else(|| id("</s>"));
        Ok(Self {
            bos_id: id("<s>"),
            eos_id,
            add_bos: false,
            codec: Codec::Hf(Box::new(inner)),
            chat_template: None,
        })
    }

    /// Token ids of `text`; with `add_special` a BOS is prepended when the model wants one.
    /// Special-token strings in the text (e.g. `<|im_start|>`) map to their single ids.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let mut ids = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos_id);
        }
        match &self.codec {
            Codec::Hf(inner) => {
                let enc = guarded("encode", || inner.encode(text, false).map_err(tok_err))?;
                ids.extend_from_slice(enc.get_ids());
            }
            Codec::Spm(spm) => ids.extend(spm.encode(text)?),
        }
        Ok(ids)
    }

    /// The text of `ids` (special tokens included; invalid UTF-8 becomes U+FFFD). A
    /// SentencePiece tokenizer drops the space its prefix added before the first token,
    /// unless the ids start with BOS.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match &self.codec {
            Codec::Hf(inner) => guarded("decode", || inner.decode(ids, false).map_err(tok_err)),
            Codec::Spm(spm) => {
                let bos = self.bos_id.filter(|_| self.add_bos);
                Ok(String::from_utf8_lossy(&spm.decode_bytes(ids, bos)?).into_owned())
            }
        }
    }

    /// Vocabulary size including special tokens.
    pub fn vocab_size(&self) -> usize {
        match &self.codec {
            Codec::Hf(inner) => inner.get_vocab_size(true),
            Codec::Spm(spm) => spm.len(),
        }
    }

    /// The stored text of token `id` (`"Ġthe"`, `"▁the"`, `"<s>"`), if it exists.
    pub fn token_text(&self, id: u32) -> Option<String> {
        match &self.codec {
            Codec::Hf(inner) => inner.id_to_token(id),
            Codec::Spm(spm) => spm.token(id).map(str::to_string),
        }
    }

    /// The id of a token's stored text, if it is in the vocabulary.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        match &self.codec {
            Codec::Hf(inner) => inner.token_to_id(text),
            Codec::Spm(spm) => spm.id(text),
        }
    }

    /// The whole tokenizer as one JSON document: `{"tokenizer": <Hugging Face tokenizer.json>,
    /// "bos_id": …, "eos_id": …, "add_bos": …}` (SentencePiece: `"spm": {"tokens", "scores",
    /// "types", "add_space_prefix"}` instead of `"tokenizer"`), plus `"chat_template"` when
    /// there is one; [`Tokenizer::from_json`] reads it back.
    pub fn to_json(&self) -> Result<String> {
        let mut doc = serde_json::json!({
            "bos_id": self.bos_id,
            "eos_id": self.eos_id,
            "add_bos": self.add_bos,
        });
        match &self.codec {
            Codec::Hf(inner) => {
                let inner: serde_json::Value =
                    serde_json::from_str(&inner.to_string(false).map_err(tok_err)?)
                        .map_err(tok_err)?;
                doc["tokenizer"] = inner;
            }
            Codec::Spm(spm) => {
                let (tokens, scores, types) = spm.parts();
                doc["spm"] = serde_json::json!({
                    "tokens": tokens,
                    "scores": scores,
                    "types": types,
                    "add_space_prefix": spm.add_space_prefix,
                });
            }
        }
        if let Some(t) = &self.chat_template {
            doc["chat_template"] = serde_json::Value::String(t.clone());
        }
        Ok(doc.to_string())
    }

    /// Parses what [`Tokenizer::to_json`] wrote; malformed documents are
    /// [`ModelError::Tokenizer`] errors.
    pub fn from_json(text: &str) -> Result<Self> {
        let doc: serde_json::Value = serde_json::from_str(text)
            .map_err(|e| ModelError::Tokenizer(format!("tokenizer JSON: {e}")))?;
        let codec = match doc.get("spm") {
            Some(spm) => Codec::Spm(Box::new(spm_from_json(spm)?)),
            None => {
                let inner_doc = doc.get("tokenizer").ok_or_else(|| {
                    ModelError::Tokenizer("tokenizer JSON has no 'tokenizer' key".into())
                })?;
                check_document(inner_doc)?;
                let inner_doc = without_truncation_and_padding(inner_doc.clone());
                let inner: tokenizers::Tokenizer = guarded("tokenizer JSON", || {
                    serde_json::from_value(inner_doc)
                        .map_err(|e| ModelError::Tokenizer(format!("tokenizer JSON: {e}")))
                })?;
                Codec::Hf(Box::new(inner))
            }
        };
        let chat_template = match doc.get("chat_template") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => Some(
                v.as_str()
                    .ok_or_else(|| {
                        ModelError::Tokenizer(
                            "tokenizer JSON: 'chat_template' is not a string".into(),
                        )
                    })?
                    .to_string(),
            ),
        };
        let id = |k: &str| -> Result<Option<u32>> {
            match doc.get(k) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => v
                    .as_u64()
                    .and_then(|x| u32::try_from(x).ok())
                    .map(Some)
                    .ok_or_else(|| {
                        ModelError::Tokenizer(format!("tokenizer JSON: '{k}' is not a token id"))
                    }),
            }
        };
        let add_bos = match doc.get("add_bos") {
            None => false,
            Some(v) => v.as_bool().ok_or_else(|| {
                ModelError::Tokenizer("tokenizer JSON: 'add_bos' is not a boolean".into())
            })?,
        };
        let (bos_id, eos_id) = (id("bos_id")?, id("eos_id")?);
        Ok(Self {
            bos_id,
            eos_id,
            add_bos,
            codec,
            chat_template,
        })
    }
}

/// A GGUF string array.
fn gguf_strings(g: &GgufFile, key: &str) -> Result<Vec<String>> {
    let arr = g
        .get(key)
        .and_then(|v| v.as_array())
        .ok_or_else(|| ModelError::Tokenizer(format!("GGUF metadata '{key}' missing")))?;
    arr.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| ModelError::Tokenizer(format!("'{key}' holds a non-string item")))
        })
        .collect()
}

/// `tokenizer.ggml.token_type` (all normal when absent), one per token.
fn gguf_token_types(g: &GgufFile, n: usize) -> Result<Vec<u64>> {
    match g
        .get("tokenizer.ggml.token_type")
        .and_then(|v| v.as_array())
    {
        None => Ok(vec![1; n]),
        Some(a) if a.len() != n => Err(ModelError::Tokenizer(format!(
            "'tokenizer.ggml.token_type' has {} entries for {n} tokens",
            a.len()
        ))),
        Some(a) => Ok(a.iter().map(|v| v.as_u64().unwrap_or(1)).collect()),
    }
}

/// The `"spm"` object of [`Tokenizer::to_json`].
fn spm_from_json(v: &serde_json::Value) -> Result<Spm> {
    let bad =
        |what: &str| ModelError::Tokenizer(format!("tokenizer JSON: 'spm.{what}' is malformed"));
    let arr = |k: &str| v.get(k).and_then(|a| a.as_array()).ok_or_else(|| bad(k));
    let tokens = arr("tokens")?
        .iter()
        .map(|t| t.as_str().map(str::to_string).ok_or_else(|| bad("tokens")))
        .collect::<Result<Vec<_>>>()?;
    let scores = arr("scores")?
        .iter()
        .map(|t| t.as_f64().map(|f| f as f32).ok_or_else(|| bad("scores")))
        .collect::<Result<Vec<_>>>()?;
    let types = arr("types")?
        .iter()
        .map(|t| t.as_u64().ok_or_else(|| bad("types")))
        .collect::<Result<Vec<_>>>()?;
    let add_space_prefix = v
        .get("add_space_prefix")
        .and_then(|b| b.as_bool())
        .ok_or_else(|| bad("add_space_prefix"))?;
    Spm::new(tokens, scores, types, add_space_prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy byte-level vocabulary: the 256 byte symbols, merges, and one control token.
    fn toy(pre: &str) -> Tokenizer {
        let bytes = tokenizers::pre_tokenizers::byte_level::ByteLevel::alphabet();
        let mut tokens: Vec<String> = vec!["<|endoftext|>".to_string()];
        let mut sorted: Vec<char> = bytes.into_iter().collect();
        sorted.sort();
        tokens.extend(sorted.iter().map(|c| c.to_string()));
        let merges: Vec<String> = ["Ġ t", "h e", "Ġt he", "1 2"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        for m in &merges {
            tokens.push(m.replace(' ', ""));
        }
        let mut types = vec![1u64; tokens.len()];
        types[0] = 3;
        Tokenizer::from_parts(&tokens, &merges, &types, pre).unwrap()
    }

    #[test]
    fn merges_and_special_tokens_should_apply() {
        let t = toy("gpt2");
        let the = t.token_id("Ġthe").unwrap();
        let ids = t.encode("<|endoftext|> the", false).unwrap();
        assert_eq!(ids, vec![0, the]);
        assert_eq!(t.decode(&ids).unwrap(), "<|endoftext|> the");
    }

    #[test]
    fn smollm_pre_tokenizer_should_split_digits() {
        let twelve = toy("gpt2").token_id("12").unwrap();
        assert!(toy("gpt2").encode("12", false).unwrap().contains(&twelve));
        assert!(!toy("smollm").encode("12", false).unwrap().contains(&twelve));
        assert_eq!(toy("smollm").encode("12", false).unwrap().len(), 2);
    }

    #[test]
    fn json_round_trip_should_keep_ids_and_special_tokens() {
        let mut t = toy("smollm");
        t.bos_id = Some(0);
        t.eos_id = Some(3);
        t.add_bos = true;
        let back = Tokenizer::from_json(&t.to_json().unwrap()).unwrap();
        let text = "<|endoftext|> the 12 thé";
        assert_eq!(
            back.encode(text, true).unwrap(),
            t.encode(text, true).unwrap()
        );
        assert_eq!(back.encode(text, true).unwrap()[0], 0);
        assert_eq!(
            (back.bos_id, back.eos_id, back.add_bos),
            (Some(0), Some(3), true)
        );
        assert_eq!(back.vocab_size(), t.vocab_size());
        for bad in ["", "{", "{}", r#"{"tokenizer": 3}"#] {
            assert!(Tokenizer::from_json(bad).is_err(), "{bad:?}");
        }
        let doc = t
            .to_json()
            .unwrap()
            .replace("\"add_bos\":true", "\"add_bos\":7");
        assert!(Tokenizer::from_json(&doc).is_err());
    }

    #[test]
    fn unknown_pre_tokenizer_and_bad_merges_should_be_errors() {
        let tokens = vec!["a".to_string(), "b".to_string()];
        assert!(Tokenizer::from_parts(&tokens, &[], &[1, 1], "qwen2-unknown").is_err());
        assert!(Tokenizer::from_parts(&tokens, &["ab".into()], &[1, 1], "gpt2").is_err());
    }
}
