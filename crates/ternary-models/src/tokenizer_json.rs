//! Checks on a Hugging Face `tokenizer.json` before the `tokenizers` crate sees it.
//!
//! `tokenizers` 0.22 (pinned in the workspace) deserializes parts of a `tokenizer.json` without
//! the validation its builders apply, then panics on them while loading or at the first
//! encode or decode. Fuzzing (`cargo xtask fuzz`, `docs/reliability.md`) found each case
//! below; [`check_document`] rejects them with an error, and [`guarded`] turns any panic left
//! inside the crate into an error instead of unwinding through the caller.

use serde_json::Value;

use crate::error::{ModelError, Result};

/// The largest worst-case growth of a text through a tokenizer's normalizer and pre-tokenizer
/// that [`check_document`] accepts. Real tokenizers stay far below it: byte-level BPE (GPT-2,
/// Llama 3, SmolLM2) 2, SentencePiece-style `Replace(" ", "▁")` 3, `Metaspace` 4.
pub const MAX_EXPANSION: f64 = 64.0;

/// The longest added (special) token accepted, in bytes. `tokenizers` 0.22 takes time
/// quadratic in an added token's length to register it (0.9 s for 8000 bytes, hours for a
/// megabyte); real special tokens are a few dozen bytes (`<|reserved_special_token_250|>`).
pub const MAX_ADDED_TOKEN_BYTES: usize = 256;

/// Rejects an added token longer than [`MAX_ADDED_TOKEN_BYTES`].
pub(crate) fn check_added_token(i: usize, content: &str) -> Result<()> {
    if content.len() > MAX_ADDED_TOKEN_BYTES {
        return bad(format!(
            "added token #{i} is {} bytes long (at most {MAX_ADDED_TOKEN_BYTES}: registering it \
             takes time quadratic in its length)",
            content.len()
        ));
    }
    Ok(())
}

fn bad<T>(m: String) -> Result<T> {
    Err(ModelError::Tokenizer(m))
}

/// Runs a call into `tokenizers`, turning a panic inside it into an error (the last line of
/// defence behind [`check_document`]).
pub(crate) fn guarded<T>(what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        bad(format!(
            "{what}: the tokenizers library panicked ({msg}): the tokenizer is malformed"
        ))
    })
}

/// The document with its `truncation` and `padding` settings removed.
///
/// This crate encodes whole prompts and evaluation texts one at a time; cutting them to a
/// length or padding them with pad tokens would silently change what the model sees. The
/// settings are also unchecked in `tokenizers`: a `stride` not below `max_length` fails an
/// assertion at encode, and a fixed padding length of `2^60` asks for that many ids.
pub(crate) fn without_truncation_and_padding(mut doc: Value) -> Value {
    if let Some(m) = doc.as_object_mut() {
        for k in ["truncation", "padding"] {
            if m.contains_key(k) {
                m.insert(k.into(), Value::Null);
            }
        }
    }
    doc
}

/// Rejects `tokenizer.json` documents that `tokenizers` 0.22 would panic on (or use to exhaust
/// memory) instead of returning an error:
///
/// - a BPE model with a `continuing_subword_prefix` slices that prefix off the second token of
///   every merge (`&b[prefix.len()..]`), out of bounds when the token is shorter;
/// - a `TemplateProcessing` post-processor (with or without its `type` tag) indexes its
///   special-token map with every special token its templates name and the encodings with
///   sequence `B` even for a single sequence, and assumes as many ids as tokens per special
///   token;
/// - a `Strip` decoder with `stop > 0` subtracts past zero (or slices a reversed range) on
///   tokens shorter than `start + stop`;
/// - a `Precompiled` normalizer whose `precompiled_charsmap` does not deserialize hits an
///   `expect`;
/// - a `FixedLength` pre-tokenizer of length 0 chunks by 0;
/// - a `Prepend` normalizer of an empty string indexes past the end of the text at encode;
/// - added tokens longer than [`MAX_ADDED_TOKEN_BYTES`] take quadratic time to load;
/// - a component given as an array is built positionally (`[""]` is `Prepend("")`): components
///   must be objects;
/// - normalizers and pre-tokenizers that can grow a text more than [`MAX_EXPANSION`] times
///   ([`expansion`]): chained, they grow it exponentially (a 12 KB file chaining two hundred
///   byte-level pre-tokenizers asks for gigabytes at the first encode).
pub(crate) fn check_document(doc: &Value) -> Result<()> {
    let added = doc.get("added_tokens").and_then(Value::as_array);
    for (i, t) in added.into_iter().flatten().enumerate() {
        check_added_token(i, t.get("content").and_then(Value::as_str).unwrap_or(""))?;
    }
    for key in ["normalizer", "pre_tokenizer", "post_processor", "decoder"] {
        if let Some(node) = doc.get(key) {
            component(key, node)?;
        }
    }
    if let Some(p) = doc.get("post_processor") {
        check_post_processor(p)?;
    }
    if let Some(d) = doc.get("decoder") {
        check_decoder(d)?;
    }
    if let Some(n) = doc.get("normalizer") {
        check_normalizer(n)?;
    }
    if let Some(p) = doc.get("pre_tokenizer") {
        check_pre_tokenizer(p)?;
    }
    let grow = doc.get("normalizer").map_or(1.0, expansion)
        * doc.get("pre_tokenizer").map_or(1.0, expansion);
    if grow > MAX_EXPANSION {
        return bad(format!(
            "the normalizer and pre-tokenizer can grow a text {grow:e} times (at most \
             {MAX_EXPANSION} allowed)"
        ));
    }
    if let Some(m) = doc.get("model") {
        check_bpe_merges(m)?;
    }
    Ok(())
}

/// The component type a node names: its `type` as a string, or as the one key of an object
/// (`{"Precompiled": null}`, which serde also reads as the variant). `None` when there is no
/// usable tag: `tokenizers` then matches the node by its fields (its untagged fallback).
fn type_name(node: &Value) -> Option<&str> {
    match node.get("type")? {
        Value::String(s) => Some(s),
        Value::Object(m) if m.len() == 1 => m.keys().next().map(String::as_str),
        _ => None,
    }
}

/// A component must be an object (or `null` at the top level): serde would also build one
/// from an array, positionally (`[""]` becomes `Prepend("")`), which no real file does and the
/// checks below do not model.
fn component(what: &str, node: &Value) -> Result<()> {
    match node {
        Value::Object(_) | Value::Null => Ok(()),
        other => bad(format!("{what}: expected an object, found {other}")),
    }
}

/// The parts of a `Sequence` node under `key`, when `node` is one (tagged or not), each
/// checked to be an object.
fn parts<'a>(node: &'a Value, key: &str) -> Result<Option<&'a Vec<Value>>> {
    let Some(parts) = sequence(node, key) else {
        return Ok(None);
    };
    for p in parts {
        if !p.is_object() {
            return bad(format!("{key}: expected objects, found {p}"));
        }
    }
    Ok(Some(parts))
}

/// The parts of a `Sequence` node under `key`, when `node` is one (tagged or not).
fn sequence<'a>(node: &'a Value, key: &str) -> Option<&'a Vec<Value>> {
    node.get(key)
        .and_then(Value::as_array)
        .filter(|_| type_name(node).is_none_or(|t| t == "Sequence"))
}

fn check_bpe_merges(model: &Value) -> Result<()> {
    let is_bpe = type_name(model).is_none_or(|t| t == "BPE");
    let prefix = model
        .get("continuing_subword_prefix")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !is_bpe || prefix.is_empty() {
        return Ok(());
    }
    let merges = model.get("merges").and_then(Value::as_array);
    for (i, m) in merges.into_iter().flatten().enumerate() {
        let second = match m {
            Value::String(s) => s.split_once(' ').map(|(_, b)| b),
            Value::Array(pair) => pair.get(1).and_then(Value::as_str),
            _ => None,
        };
        if let Some(b) = second
            && b.get(prefix.len()..).is_none()
        {
            return bad(format!(
                "BPE merge #{i}: token {b:?} is shorter than the continuing-subword prefix \
                 {prefix:?} (or splits one of its characters)"
            ));
        }
    }
    Ok(())
}

fn check_post_processor(p: &Value) -> Result<()> {
    if let Some(parts) = parts(p, "processors")? {
        return parts.iter().try_for_each(check_post_processor);
    }
    let ty = type_name(p);
    // Untagged, `tokenizers` tries Roberta and Bert (which need `sep` and `cls`), ByteLevel,
    // then TemplateProcessing.
    let template = match ty {
        Some(t) => t == "TemplateProcessing",
        None => {
            p.get("sep").is_none()
                && ["single", "pair", "special_tokens"]
                    .iter()
                    .any(|k| p.get(k).is_some())
        }
    };
    if !template {
        return Ok(());
    }
    let specials = p.get("special_tokens").and_then(Value::as_object);
    for (key, t) in specials.into_iter().flatten() {
        let len = |k: &str| t.get(k).and_then(Value::as_array).map(Vec::len);
        if len("ids") != len("tokens") {
            return bad(format!(
                "post-processor: special token {key:?} has {:?} ids but {:?} tokens",
                len("ids"),
                len("tokens")
            ));
        }
    }
    for which in ["single", "pair"] {
        let pieces = p.get(which).and_then(Value::as_array);
        for piece in pieces.into_iter().flatten() {
            if let Some(id) = piece
                .get("SpecialToken")
                .and_then(|t| t.get("id"))
                .and_then(Value::as_str)
                && !specials.is_some_and(|m| m.contains_key(id))
            {
                return bad(format!(
                    "post-processor: the {which} template names special token {id:?}, which \
                     is not among its special tokens"
                ));
            }
            let sequence = piece.get("Sequence").and_then(|t| t.get("id"));
            if which == "single" && sequence.and_then(Value::as_str) == Some("B") {
                return bad(
                    "post-processor: the single-sequence template uses sequence B".to_string(),
                );
            }
        }
    }
    Ok(())
}

fn check_decoder(d: &Value) -> Result<()> {
    if let Some(parts) = parts(d, "decoders")? {
        return parts.iter().try_for_each(check_decoder);
    }
    let ty = type_name(d);
    let stop = d.get("stop").and_then(Value::as_u64).unwrap_or(0);
    if ty.is_none_or(|t| t == "Strip") && stop > 0 {
        return bad(format!(
            "decoder: Strip with stop = {stop} is not supported (tokenizers 0.22 panics on \
             tokens shorter than start + stop)"
        ));
    }
    Ok(())
}

fn check_normalizer(n: &Value) -> Result<()> {
    if let Some(parts) = parts(n, "normalizers")? {
        return parts.iter().try_for_each(check_normalizer);
    }
    let ty = type_name(n);
    let prepend = n.get("prepend").and_then(Value::as_str);
    if ty.is_none_or(|t| t == "Prepend") && prepend == Some("") {
        return bad(
            "normalizer: Prepend of an empty string (tokenizers 0.22 indexes past the end of \
             the text with it)"
                .to_string(),
        );
    }
    if ty == Some("Precompiled") {
        // What `tokenizers` does (the tag rewritten as a string), minus its `expect`.
        let mut node = n.clone();
        node["type"] = Value::from("Precompiled");
        guarded("normalizer", || {
            serde_json::from_value::<tokenizers::normalizers::Precompiled>(node)
                .map(drop)
                .map_err(|e| ModelError::Tokenizer(format!("normalizer: Precompiled: {e}")))
        })?;
    }
    Ok(())
}

fn check_pre_tokenizer(p: &Value) -> Result<()> {
    if let Some(parts) = parts(p, "pretokenizers")? {
        return parts.iter().try_for_each(check_pre_tokenizer);
    }
    if type_name(p) == Some("FixedLength") && p.get("length").and_then(Value::as_u64) == Some(0) {
        return bad("pre-tokenizer: FixedLength of length 0".to_string());
    }
    Ok(())
}

/// Worst-case factor by which one normalizer or pre-tokenizer (a JSON node) can grow a text's
/// UTF-8 length: sequences multiply their parts; `ByteLevel` maps a byte to a character of up to
/// two bytes; `Metaspace` a space to a character of up to four; `Replace` a match of its
/// pattern (possibly empty, for a regex) to its content; the rest split, strip, or normalize
/// Unicode (idempotent: chaining them does not compound) and count 1. Nodes without a `type`
/// are classified by their fields.
fn expansion(node: &Value) -> f64 {
    let ty = type_name(node);
    if let Some(parts) = sequence(node, "normalizers").or_else(|| sequence(node, "pretokenizers")) {
        return parts.iter().map(expansion).product();
    }
    match ty {
        Some("ByteLevel") => 2.0,
        Some("Metaspace") => 4.0,
        Some("Replace") | None if node.get("content").is_some() => {
            let content = node
                .get("content")
                .and_then(Value::as_str)
                .map_or(0, str::len);
            let pattern = node
                .get("pattern")
                .and_then(|p| p.get("String"))
                .and_then(Value::as_str)
                .map_or(0, str::len);
            // A string pattern of `n` bytes becomes `content`; a regex may match nothing,
            // which inserts `content` before every character.
            if pattern > 0 {
                (content as f64 / pattern as f64).max(1.0)
            } else {
                1.0 + content as f64
            }
        }
        None if node.get("use_regex").is_some() || node.get("trim_offsets").is_some() => 2.0,
        None if node.get("replacement").is_some() => 4.0,
        _ => 1.0,
    }
}
