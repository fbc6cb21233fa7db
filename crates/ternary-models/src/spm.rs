//! SentencePiece tokenization as llama.cpp does it for `tokenizer.ggml.model = "llama"`.
//!
//! The vocabulary is `tokens[id]` with a score and a type each (1 normal, 2 unknown,
//! 3 control, 4 user-defined, 5 unused, 6 byte `<0xNN>`). Encoding a text:
//!
//! 1. control, user-defined and unknown tokens found in the text are cut out whole, longest
//!    token text first;
//! 2. each remaining piece gets a leading space when `add_space_prefix` is set and it starts
//!    the text or follows a special token, and every `' '` becomes `▁` (U+2581);
//! 3. the piece is split into UTF-8 characters and adjacent symbols are merged greedily: of
//!    all adjacent pairs whose concatenation is a token, the highest-scoring one (leftmost on
//!    ties) is merged, until no pair is a token;
//! 4. a final symbol that is not a token is written as its bytes `<0xNN>` (byte fallback).
//!
//! Decoding maps `▁` back to `' '`, byte tokens to their byte, and drops the space that the
//! prefix added before the first token.

use crate::error::{ModelError, Result};
use std::collections::{BinaryHeap, HashMap};

/// Token type values of `tokenizer.ggml.token_type`.
pub(crate) mod token_type {
    /// An ordinary piece.
    pub const NORMAL: u64 = 1;
    /// `<unk>`.
    pub const UNKNOWN: u64 = 2;
    /// `<s>`, `</s>`, chat markers.
    pub const CONTROL: u64 = 3;
    /// Added by the user; matched whole.
    pub const USER_DEFINED: u64 = 4;
    /// A byte-fallback token `<0xNN>`.
    pub const BYTE: u64 = 6;
}

const SPACE: &str = "\u{2581}";

/// A SentencePiece vocabulary with llama.cpp's encoding rules.
#[derive(Debug, Clone)]
pub(crate) struct Spm {
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<u64>,
    /// Text → id; a later duplicate replaces an earlier one (llama.cpp's map insertion).
    ids: HashMap<String, u32>,
    /// Control, user-defined and unknown tokens, longest text first.
    special: Vec<u32>,
    /// Byte value → its `<0xNN>` token.
    byte_ids: [Option<u32>; 256],
    /// Prepend a space to text at the start or after a special token.
    pub add_space_prefix: bool,
}

/// A pending merge of symbols `left` and `right` (indices into the symbol list).
#[derive(Debug, PartialEq)]
struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl Eq for Bigram {}

impl Ord for Bigram {
    /// Highest score first, then the leftmost pair (llama.cpp's `llm_bigram_spm::comparator`).
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}

/// One symbol of the merge list: a byte range of the text, linked to its neighbours.
#[derive(Debug, Clone, Copy)]
struct Symbol {
    start: usize,
    len: usize,
    prev: Option<usize>,
    next: Option<usize>,
}

impl Spm {
    /// Builds the vocabulary; `scores` and `types` must have one entry per token.
    pub fn new(
        mut tokens: Vec<String>,
        scores: Vec<f32>,
        types: Vec<u64>,
        add_space_prefix: bool,
    ) -> Result<Self> {
        if scores.len() != tokens.len() || types.len() != tokens.len() {
            return Err(ModelError::Tokenizer(format!(
                "SentencePiece vocabulary: {} tokens but {} scores and {} token types",
                tokens.len(),
                scores.len(),
                types.len()
            )));
        }
        let n = u32::try_from(tokens.len())
            .map_err(|_| ModelError::Tokenizer(format!("{} tokens is too many", tokens.len())))?;
        // Empty texts get a unique placeholder, as llama.cpp's loader does.
        for (i, t) in tokens.iter_mut().enumerate() {
            if t.is_empty() {
                *t = format!("[EMPTY_{i}]");
            }
        }
        let mut ids = HashMap::with_capacity(tokens.len());
        let mut byte_ids = [None; 256];
        let mut special = Vec::new();
        for (id, (t, &ty)) in (0..n).zip(tokens.iter().zip(&types)) {
            ids.insert(t.clone(), id);
            if matches!(
                ty,
                token_type::CONTROL | token_type::USER_DEFINED | token_type::UNKNOWN
            ) {
                special.push(id);
            }
        }
        // Byte tokens looked up by text as llama.cpp does (`<0xNN>`, else the byte itself).
        for (b, slot) in byte_ids.iter_mut().enumerate() {
            *slot = ids
                .get(&format!("<0x{b:02X}>"))
                .or_else(|| {
                    std::str::from_utf8(&[b as u8])
                        .ok()
                        .and_then(|s| ids.get(s))
                })
                .copied();
        }
        special.sort_by_key(|&id| std::cmp::Reverse(tokens[id as usize].len()));
        Ok(Self {
            tokens,
            scores,
            types,
            ids,
            special,
            byte_ids,
            add_space_prefix,
        })
    }

    /// Number of tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// The text of token `id`.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a token text.
    pub fn id(&self, text: &str) -> Option<u32> {
        self.ids.get(text).copied()
    }

    /// The parts, for serialization: tokens, scores, types.
    pub fn parts(&self) -> (&[String], &[f32], &[u64]) {
        (&self.tokens, &self.scores, &self.types)
    }

    /// Token ids of `text` (no BOS; special-token texts map to their ids).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let mut out = Vec::with_capacity(text.len() / 3 + 1);
        let mut prev_special = true;
        for frag in self.partition(text) {
            match frag {
                Fragment::Special(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text(s) => {
                    let mut piece = String::with_capacity(s.len() + 3);
                    if self.add_space_prefix && prev_special {
                        piece.push(' ');
                    }
                    piece.push_str(s);
                    let piece = piece.replace(' ', SPACE);
                    self.encode_piece(&piece, &mut out)?;
                    prev_special = false;
                }
            }
        }
        Ok(out)
    }

    /// Cuts `text` at every occurrence of a special token, longest token text first.
    fn partition<'t>(&self, text: &'t str) -> Vec<Fragment<'t>> {
        let mut frags = vec![Fragment::Text(text)];
        if text.is_empty() {
            return Vec::new();
        }
        for &id in &self.special {
            let needle = self.tokens[id as usize].as_str();
            if !frags
                .iter()
                .any(|f| matches!(f, Fragment::Text(s) if s.contains(needle)))
            {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                match f {
                    Fragment::Text(mut s) => {
                        while let Some(at) = s.find(needle) {
                            if at > 0 {
                                next.push(Fragment::Text(&s[..at]));
                            }
                            next.push(Fragment::Special(id));
                            s = &s[at + needle.len()..];
                        }
                        if !s.is_empty() {
                            next.push(Fragment::Text(s));
                        }
                    }
                    special => next.push(special),
                }
            }
            frags = next;
        }
        frags
    }

    /// llama.cpp's `llm_tokenizer_spm_session::tokenize` on one escaped piece.
    fn encode_piece(&self, text: &str, out: &mut Vec<u32>) -> Result<()> {
        let mut symbols: Vec<Symbol> = Vec::with_capacity(text.len());
        for (i, (start, c)) in text.char_indices().enumerate() {
            let end = start + c.len_utf8();
            symbols.push(Symbol {
                start,
                len: c.len_utf8(),
                prev: i.checked_sub(1),
                next: (end < text.len()).then_some(i + 1),
            });
        }
        if symbols.is_empty() {
            return Ok(());
        }
        let mut queue = BinaryHeap::new();
        let try_add = |symbols: &[Symbol], queue: &mut BinaryHeap<Bigram>, l: usize, r: usize| {
            let (a, b) = (symbols[l], symbols[r]);
            let size = a.len + b.len;
            if let Some(&id) = self.ids.get(&text[a.start..a.start + size]) {
                queue.push(Bigram {
                    score: self.scores[id as usize],
                    left: l,
                    right: r,
                    size,
                });
            }
        };
        for i in 1..symbols.len() {
            try_add(&symbols, &mut queue, i - 1, i);
        }
        while let Some(bg) = queue.pop() {
            let (l, r) = (symbols[bg.left], symbols[bg.right]);
            if l.len == 0 || r.len == 0 || l.len + r.len != bg.size {
                continue;
            }
            symbols[bg.left].len += r.len;
            symbols[bg.right].len = 0;
            symbols[bg.left].next = r.next;
            if let Some(n) = r.next {
                symbols[n].prev = Some(bg.left);
            }
            if let Some(p) = l.prev {
                try_add(&symbols, &mut queue, p, bg.left);
            }
            if let Some(n) = r.next {
                try_add(&symbols, &mut queue, bg.left, n);
            }
        }
        let mut i = Some(0);
        while let Some(k) = i {
            let s = symbols[k];
            let piece = &text[s.start..s.start + s.len];
            // A merged symbol is always a token; a lone character may not be.
            match self.ids.get(piece) {
                Some(&id) => out.push(id),
                None => {
                    for &b in piece.as_bytes() {
                        out.push(self.byte_ids[b as usize].ok_or_else(|| {
                            ModelError::Tokenizer(format!(
                                "byte 0x{b:02X} of {piece:?} has no token (no <0x{b:02X}> in the vocabulary)"
                            ))
                        })?);
                    }
                }
            }
            i = s.next;
        }
        Ok(())
    }

    /// The bytes token `id` stands for: `▁` → `' '`, `<0xNN>` → the byte, other special
    /// tokens as their text.
    pub fn piece_bytes(&self, id: u32, out: &mut Vec<u8>) -> Result<()> {
        let t = self
            .tokens
            .get(id as usize)
            .ok_or_else(|| ModelError::Tokenizer(format!("token id {id} is out of range")))?;
        match self.types[id as usize] {
            token_type::BYTE => match byte_value(t) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(t.as_bytes()),
            },
            token_type::NORMAL => out.extend_from_slice(t.replace(SPACE, " ").as_bytes()),
            _ => out.extend_from_slice(t.as_bytes()),
        }
        Ok(())
    }

    /// The bytes of `ids`, with the prefix space of the first token removed when
    /// `add_space_prefix` is set (llama.cpp's `detokenize`).
    pub fn decode_bytes(&self, ids: &[u32], skip_bos: Option<u32>) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(ids.len() * 4);
        let mut remove_space = self.add_space_prefix;
        let ids = match (ids.first(), skip_bos) {
            (Some(&first), Some(bos)) if first == bos => {
                remove_space = false;
                self.piece_bytes(bos, &mut out)?;
                &ids[1..]
            }
            _ => ids,
        };
        for &id in ids {
            let at = out.len();
            self.piece_bytes(id, &mut out)?;
            if remove_space && out.get(at) == Some(&b' ') {
                out.remove(at);
            }
            remove_space = false;
        }
        Ok(out)
    }
}

/// `<0xNN>` → `NN`.
fn byte_value(t: &str) -> Option<u8> {
    let hex = t.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

#[derive(Debug, Clone, Copy)]
enum Fragment<'t> {
    Text(&'t str),
    Special(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `<unk> <s> </s>`, the 256 byte tokens, then pieces with scores.
    fn toy() -> Spm {
        let mut tokens = vec!["<unk>".to_string(), "<s>".into(), "</s>".into()];
        let mut types = vec![
            token_type::UNKNOWN,
            token_type::CONTROL,
            token_type::CONTROL,
        ];
        let mut scores = vec![0.0f32; 3];
        for b in 0..=255u8 {
            tokens.push(format!("<0x{b:02X}>"));
            types.push(token_type::BYTE);
            scores.push(0.0);
        }
        for (t, s) in [
            ("▁", -1.0),
            ("a", -2.0),
            ("b", -2.0),
            ("c", -2.0),
            ("▁a", -3.0),
            ("ab", -4.0),
            ("bc", -1.5),
            ("▁ab", -5.0),
            ("abc", -6.0),
            ("é", -2.0),
        ] {
            tokens.push(t.into());
            types.push(token_type::NORMAL);
            scores.push(s);
        }
        Spm::new(tokens, scores, types, true).unwrap()
    }

    fn ids(s: &Spm, words: &[&str]) -> Vec<u32> {
        words.iter().map(|w| s.id(w).unwrap()).collect()
    }

    #[test]
    fn merges_should_take_the_best_score_first() {
        let s = toy();
        // "▁abc": pairs ▁a (-3), ab (-4), bc (-1.5): bc first, then ▁a, then nothing merges
        // ("▁abc" is not a token).
        assert_eq!(s.encode("abc").unwrap(), ids(&s, &["▁a", "bc"]));
        // "▁ab": ▁a (-3) before ab (-4); then ▁ab.
        assert_eq!(s.encode("ab").unwrap(), ids(&s, &["▁ab"]));
    }

    #[test]
    fn unknown_characters_should_fall_back_to_bytes() {
        let s = toy();
        let got = s.encode("aü").unwrap();
        let ü = "ü".as_bytes();
        let want = [
            s.id("▁a").unwrap(),
            s.id(&format!("<0x{:02X}>", ü[0])).unwrap(),
            s.id(&format!("<0x{:02X}>", ü[1])).unwrap(),
        ];
        assert_eq!(got, want);
        assert_eq!(
            String::from_utf8(s.decode_bytes(&got, None).unwrap()).unwrap(),
            "aü"
        );
    }

    #[test]
    fn special_tokens_should_be_cut_out_and_reset_the_space_prefix() {
        let s = toy();
        let got = s.encode("a</s>b").unwrap();
        assert_eq!(got, ids(&s, &["▁a", "</s>", "▁", "b"]));
        assert_eq!(s.encode("").unwrap(), Vec::<u32>::new());
        assert_eq!(s.decode_bytes(&got, None).unwrap(), b"a</s> b".to_vec());
    }

    #[test]
    fn decoding_should_keep_the_space_after_bos() {
        let s = toy();
        let bos = s.id("<s>");
        let mut with_bos = vec![bos.unwrap()];
        with_bos.extend(s.encode("a b").unwrap());
        assert_eq!(s.decode_bytes(&with_bos, bos).unwrap(), b"<s> a b".to_vec());
    }

    #[test]
    fn mismatched_parts_should_be_an_error() {
        assert!(Spm::new(vec!["a".into()], vec![], vec![1], true).is_err());
    }
}
