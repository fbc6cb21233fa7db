//! Safetensors-aware mutation (our ternary files, Hugging Face weight files and converted-model
//! files are all safetensors): the JSON header is parsed and edited — dtypes, shapes (huge,
//! zero, overflowing, wrong rank), data offsets (past the end, reversed, overlapping),
//! metadata values (rows/cols/group sizes as boundary decimals, unknown storage kinds, missing
//! keys), the JSON documents embedded in metadata strings (config, tokenizer, layer table),
//! tensors dropped, renamed or duplicated — then the file is reassembled with a correct (or
//! sometimes a wrong) header length. The data section is edited where tensors live: NaN and
//! infinite floats, plane words with both bits or padding bits set, packed bytes above 242.

use serde_json::{Map, Value};

use crate::json;
use crate::rng::Rng;

/// A safetensors file split into its header (a JSON object) and its data section.
#[derive(Debug, Clone)]
pub struct Parts {
    /// The header.
    pub header: Map<String, Value>,
    /// The bytes after the header.
    pub data: Vec<u8>,
}

/// Splits a well-formed file; `None` when it is not one.
pub fn split(bytes: &[u8]) -> Option<Parts> {
    let n = usize::try_from(u64::from_le_bytes(bytes.get(..8)?.try_into().ok()?)).ok()?;
    let header = bytes.get(8..8usize.checked_add(n)?)?;
    let Value::Object(header) = serde_json::from_slice(header).ok()? else {
        return None;
    };
    Some(Parts {
        header,
        data: bytes[8 + n..].to_vec(),
    })
}

/// Reassembles a file: the header printed compactly and padded with spaces to 8 bytes.
pub fn join(header_text: &str, data: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut h = header_text.as_bytes().to_vec();
    if !rng.one_in(8) {
        while !h.len().is_multiple_of(8) {
            h.push(b' ');
        }
    }
    let mut len = h.len() as u64;
    if rng.one_in(16) {
        len = *rng.pick(&[
            0,
            1,
            len.wrapping_sub(1),
            len + 1,
            len + 8,
            (h.len() + data.len()) as u64,
            (h.len() + data.len() + 1) as u64,
            1 << 60,
            u64::MAX,
            u64::MAX - 7,
        ]);
    }
    let mut out = Vec::with_capacity(8 + h.len() + data.len());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(data);
    out
}

const DTYPES: &[&str] = &[
    "F32", "F16", "BF16", "U8", "I8", "U16", "I16", "U32", "I32", "U64", "I64", "F64", "BOOL",
    "F8_E4M3", "F8_E5M2", "F4", "F6_E2M3", "E8M0", "C64", "f32", "", "Q4",
];

/// Decimal strings for metadata values that should hold small unsigned integers.
const DECIMALS: &[&str] = &[
    "0",
    "1",
    "2",
    "31",
    "32",
    "33",
    "64",
    "16777216",
    "16777217",
    "4294967296",
    "1152921504606846976",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "01",
    "+1",
    " 1",
    "1e3",
    "",
    "0x10",
];

fn dim(rng: &mut Rng, v: u64) -> Value {
    match rng.below(12) {
        0 => Value::from(0u64),
        1 => Value::from(1u64),
        2 => Value::from(v.wrapping_add(1)),
        3 => Value::from(v.saturating_sub(1)),
        4 => Value::from(1u64 << 32),
        5 => Value::from(1u64 << 60),
        6 => Value::from(u64::MAX),
        7 => Value::from((1u64 << 24) + 1),
        8 => Value::from(-1i64),
        9 => Value::from(1.5),
        10 => Value::from("3"),
        _ => Value::from(v.wrapping_mul(2)),
    }
}

fn offset(rng: &mut Rng, v: u64, data_len: u64) -> Value {
    Value::from(*rng.pick(&[
        0,
        v.wrapping_add(1),
        v.saturating_sub(1),
        v.wrapping_add(4),
        v.saturating_sub(4),
        data_len,
        data_len.wrapping_add(1),
        data_len.saturating_sub(1),
        1 << 32,
        1 << 60,
        u64::MAX,
        u64::MAX - 8,
    ]))
}

fn tensor_names(h: &Map<String, Value>) -> Vec<String> {
    h.keys().filter(|k| *k != "__metadata__").cloned().collect()
}

/// One header edit.
fn edit_header(p: &mut Parts, rng: &mut Rng, dict: &[String]) {
    let names = tensor_names(&p.header);
    let data_len = p.data.len() as u64;
    let choice = rng.below(16);
    if names.is_empty() || choice >= 10 {
        // Metadata edits.
        let meta = p
            .header
            .entry("__metadata__")
            .or_insert_with(|| Value::Object(Map::new()));
        let Value::Object(m) = meta else {
            *meta = Value::Object(Map::new());
            return;
        };
        let keys: Vec<String> = m.keys().cloned().collect();
        match rng.below(7) {
            0 | 1 if !keys.is_empty() => {
                let k = rng.pick(&keys).clone();
                m.insert(k, Value::String((*rng.pick(DECIMALS)).to_string()));
            }
            2 if !keys.is_empty() => {
                let k = rng.pick(&keys).clone();
                m.remove(&k);
            }
            3 | 4 if !keys.is_empty() => {
                // Edit an embedded JSON document (config, tokenizer, layer table) or a word.
                let k = rng.pick(&keys).clone();
                if let Some(Value::String(s)) = m.get(&k) {
                    let new = json::mutate_text(s, rng, dict, 4).unwrap_or_else(|| {
                        if dict.is_empty() {
                            String::new()
                        } else {
                            rng.pick(dict).clone()
                        }
                    });
                    m.insert(k, Value::String(new));
                }
            }
            5 if !names.is_empty() => {
                // A key for a tensor that may not exist.
                let base = rng.pick(&names).clone();
                let base = base
                    .rsplit_once('.')
                    .map_or(base.as_str(), |(a, _)| a)
                    .to_string();
                let suffix = *rng.pick(&["storage", "rows", "cols", "scale_layout", "group_size"]);
                let value = if dict.is_empty() || rng.one_in(2) {
                    (*rng.pick(DECIMALS)).to_string()
                } else {
                    rng.pick(dict).clone()
                };
                m.insert(format!("{base}.{suffix}"), Value::String(value));
            }
            _ => {
                let mut v = Value::Object(std::mem::take(m));
                json::mutate_once(&mut v, rng, dict);
                *meta = v;
            }
        }
        return;
    }
    if choice == 9 && rng.one_in(4) {
        // A chain of contiguous tensors whose sizes are individually valid but whose offsets
        // add up to nearly 2^64 (the end offset plus the header overflows).
        let k = rng.range(9, 12) as u64;
        let base = data_len;
        let size = (u64::MAX - base - rng.below(64) as u64) / k;
        for i in 0..k {
            let (a, b) = (base + i * size, base + (i + 1) * size);
            p.header.insert(
                format!("chain{i}"),
                serde_json::json!({"dtype": "U8", "shape": [size], "data_offsets": [a, b]}),
            );
        }
        return;
    }
    let name = rng.pick(&names).clone();
    let Some(Value::Object(t)) = p.header.get_mut(&name) else {
        json::mutate_once(
            p.header.get_mut(&name).unwrap_or(&mut Value::Null),
            rng,
            dict,
        );
        return;
    };
    match choice {
        0 | 1 => {
            t.insert("dtype".into(), Value::from(*rng.pick(DTYPES)));
        }
        2 | 3 => {
            if let Some(Value::Array(shape)) = t.get_mut("shape") {
                match rng.below(5) {
                    0 => shape.push(Value::from(rng.range(0, 3) as u64)),
                    1 if !shape.is_empty() => {
                        shape.pop();
                    }
                    _ if !shape.is_empty() => {
                        let i = rng.below(shape.len());
                        let v = shape[i].as_u64().unwrap_or(1);
                        shape[i] = dim(rng, v);
                    }
                    _ => shape.push(dim(rng, 1)),
                }
            }
        }
        4 | 5 => {
            if let Some(Value::Array(off)) = t.get_mut("data_offsets")
                && off.len() == 2
            {
                match rng.below(3) {
                    0 => off.swap(0, 1),
                    _ => {
                        let i = rng.below(2);
                        let v = off[i].as_u64().unwrap_or(0);
                        off[i] = offset(rng, v, data_len);
                    }
                }
            }
        }
        6 => {
            p.header.remove(&name);
        }
        7 => {
            // Duplicate under another name (overlapping data) or rename.
            let v = Value::Object(t.clone());
            let other = if dict.is_empty() || rng.one_in(2) {
                format!("{name}x")
            } else {
                rng.pick(dict).clone()
            };
            if rng.one_in(2) {
                p.header.remove(&name);
            }
            p.header.insert(other, v);
        }
        _ => {
            let mut v = Value::Object(std::mem::take(t));
            json::mutate_once(&mut v, rng, dict);
            p.header.insert(name, v);
        }
    }
}

/// One data edit inside a tensor's range: a NaN or infinity in a float tensor, bits in a
/// plane word, a packed byte above 242, or random bytes.
fn edit_data(p: &mut Parts, rng: &mut Rng) {
    let names = tensor_names(&p.header);
    if names.is_empty() || p.data.is_empty() {
        return;
    }
    let name = rng.pick(&names);
    let Some(t) = p.header.get(name) else { return };
    let dtype = t.get("dtype").and_then(Value::as_str).unwrap_or("");
    let range = t
        .get("data_offsets")
        .and_then(Value::as_array)
        .and_then(|o| Some((o.first()?.as_u64()?, o.get(1)?.as_u64()?)));
    let Some((a, b)) = range else { return };
    let (a, b) = (a as usize, (b as usize).min(p.data.len()));
    if a >= b {
        return;
    }
    let at = a + rng.below(b - a);
    match dtype {
        "F32" if b - a >= 4 => {
            let at = a + 4 * rng.below((b - a) / 4);
            let v: f32 = *rng.pick(&[f32::NAN, f32::INFINITY, f32::NEG_INFINITY, 0.0, -0.0, 1e38]);
            p.data[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        "F16" | "BF16" if b - a >= 2 => {
            let at = a + 2 * rng.below((b - a) / 2);
            let v: u16 = *rng.pick(&[0x7c00u16, 0xfc00, 0x7e00, 0x7f80, 0xffff]);
            p.data[at..at + 2].copy_from_slice(&v.to_le_bytes());
        }
        "U32" if b - a >= 4 => {
            let at = a + 4 * rng.below((b - a) / 4);
            let v: u32 = *rng.pick(&[u32::MAX, 1 << 31, 1, 0x8000_0001]);
            p.data[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        "U8" => p.data[at] = *rng.pick(&[242u8, 243, 255, 0]),
        _ => p.data[at] = rng.below(256) as u8,
    }
}

/// `1..=max` structure-aware edits of a well-formed safetensors `seed`; `None` when it does
/// not split.
pub fn mutate(seed: &[u8], rng: &mut Rng, dict: &[String], max: usize) -> Option<Vec<u8>> {
    let mut p = split(seed)?;
    for _ in 0..rng.small_count(max) {
        if rng.one_in(4) {
            edit_data(&mut p, rng);
        } else {
            edit_header(&mut p, rng, dict);
        }
    }
    let text = json::to_text(&Value::Object(std::mem::take(&mut p.header)), rng);
    Some(join(&text, &p.data, rng))
}
