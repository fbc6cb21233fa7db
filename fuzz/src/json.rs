//! JSON-aware mutation: parse a document, edit a few nodes, print it again.
//!
//! Edits: a node replaced by a value of another type or a boundary number (`0`, `-1`, `2^32`,
//! `2^60`, `u64::MAX`, `i64::MIN`, `1e308`, numbers no integer type holds such as `1e999` or
//! `18446744073709551616`), a dictionary word, a long string, deep nesting; object keys removed,
//! renamed or added; array items removed, duplicated, repeated or reordered; a node copied
//! over another. The dictionary holds the format's own words (type names, keys) so edits
//! reach other branches of the parser than the seed's.

use serde_json::{Map, Number, Value};

use crate::rng::Rng;

/// A placeholder string that [`to_text`] replaces by a raw number literal.
const RAW_PREFIX: &str = "\u{1}raw:";

/// Number literals that are valid JSON but that no Rust integer, or no finite `f64`, holds.
const RAW_NUMBERS: &[&str] = &[
    "1e999",
    "-1e999",
    "18446744073709551616",
    "-9223372036854775809",
    "340282366920938463463374607431768211456",
    "-0",
    "0.0",
    "1.0",
    "1e2",
    "4294967296.5",
    "1152921504606846976",
    "5e-324",
];

/// Integer boundary values.
pub const BOUNDARY_INTS: &[i128] = &[
    0,
    1,
    -1,
    2,
    3,
    7,
    8,
    31,
    32,
    33,
    63,
    64,
    255,
    256,
    65535,
    65536,
    (1 << 24) - 1,
    1 << 24,
    (1 << 24) + 1,
    i32::MAX as i128,
    i32::MIN as i128,
    u32::MAX as i128,
    1 << 32,
    (1 << 53) + 1,
    1 << 60,
    i64::MAX as i128,
    i64::MIN as i128,
    u64::MAX as i128,
];

const BOUNDARY_FLOATS: &[f64] = &[
    0.5,
    -0.5,
    1e-300,
    1e308,
    -1e308,
    f64::MAX,
    f64::MIN_POSITIVE,
    1e-45,
    3.4e38,
    -0.0,
];

fn boundary_number(rng: &mut Rng) -> Value {
    if rng.one_in(4) {
        return Value::from(*rng.pick(BOUNDARY_FLOATS));
    }
    let v = *rng.pick(BOUNDARY_INTS);
    if let Ok(u) = u64::try_from(v) {
        Value::from(u)
    } else {
        Value::from(i64::try_from(v).unwrap_or(i64::MIN))
    }
}

fn random_string(rng: &mut Rng, dict: &[String]) -> String {
    match rng.below(8) {
        0 => String::new(),
        1 => "A".repeat(rng.range(1, 5000)),
        2 => {
            let pieces = [
                "\u{0}", "\u{7f}", "é", "\u{fffd}", "😀", "Ġ", "▁", " ", "\\", "\"",
            ];
            (0..rng.range(1, 8)).map(|_| *rng.pick(&pieces)).collect()
        }
        3 => rng.below(1 << 20).to_string(),
        4 => BOUNDARY_INTS[rng.below(BOUNDARY_INTS.len())].to_string(),
        _ if !dict.is_empty() => rng.pick(dict).clone(),
        _ => "x".into(),
    }
}

/// A fresh value of a random type.
fn random_value(rng: &mut Rng, dict: &[String]) -> Value {
    match rng.below(10) {
        0 => Value::Null,
        1 => Value::Bool(rng.one_in(2)),
        2 | 3 => boundary_number(rng),
        4 => Value::String(format!("{RAW_PREFIX}{}", rng.pick(RAW_NUMBERS))),
        5 | 6 => Value::String(random_string(rng, dict)),
        7 => Value::Array(Vec::new()),
        8 => Value::Object(Map::new()),
        _ => {
            let mut m = Map::new();
            if !dict.is_empty() {
                m.insert(rng.pick(dict).clone(), random_value_flat(rng, dict));
            }
            Value::Object(m)
        }
    }
}

fn random_value_flat(rng: &mut Rng, dict: &[String]) -> Value {
    match rng.below(4) {
        0 => boundary_number(rng),
        1 => Value::Bool(rng.one_in(2)),
        2 => Value::Null,
        _ => Value::String(random_string(rng, dict)),
    }
}

fn count(v: &Value) -> usize {
    1 + match v {
        Value::Array(a) => a.iter().map(count).sum(),
        Value::Object(m) => m.values().map(count).sum(),
        _ => 0,
    }
}

/// The `k`-th node in pre-order (`k < count(v)`).
fn nth_mut<'a>(v: &'a mut Value, k: &mut usize) -> Option<&'a mut Value> {
    if *k == 0 {
        return Some(v);
    }
    *k -= 1;
    match v {
        Value::Array(a) => a.iter_mut().find_map(|c| nth_mut(c, k)),
        Value::Object(m) => m.values_mut().find_map(|c| nth_mut(c, k)),
        _ => None,
    }
}

fn nth(v: &Value, k: &mut usize) -> Option<Value> {
    if *k == 0 {
        return Some(v.clone());
    }
    *k -= 1;
    match v {
        Value::Array(a) => a.iter().find_map(|c| nth(c, k)),
        Value::Object(m) => m.values().find_map(|c| nth(c, k)),
        _ => None,
    }
}

fn tweak_number(n: &Number, rng: &mut Rng) -> Value {
    if let Some(u) = n.as_u64() {
        let v = match rng.below(6) {
            0 => u.wrapping_add(1),
            1 => u.wrapping_sub(1),
            2 => u.wrapping_mul(2),
            3 => u / 2,
            4 => u.wrapping_shl(rng.range(1, 40) as u32),
            _ => u ^ (1 << rng.below(64)),
        };
        if rng.one_in(4) {
            return Value::from(-(u as f64) - 1.0);
        }
        return Value::from(v);
    }
    if let Some(i) = n.as_i64() {
        return Value::from(i.wrapping_neg());
    }
    let f = n.as_f64().unwrap_or(0.0);
    Value::from(match rng.below(4) {
        0 => -f,
        1 => f * 1e300,
        2 => f.trunc(),
        _ => f / 1e300,
    })
}

/// Applies one random edit to `doc`.
pub fn mutate_once(doc: &mut Value, rng: &mut Rng, dict: &[String]) {
    let n = count(doc);
    let mut k = rng.below(n);
    // A node to copy from, taken before borrowing the target mutably.
    let donor = if rng.one_in(6) {
        let mut j = rng.below(n);
        nth(doc, &mut j)
    } else {
        None
    };
    let Some(node) = nth_mut(doc, &mut k) else {
        return;
    };
    if let Some(d) = donor {
        *node = d;
        return;
    }
    match rng.below(10) {
        0 | 1 => *node = random_value(rng, dict),
        2 => {
            // Deep nesting (beyond serde_json's default limit of 128 sometimes).
            let depth = if rng.one_in(2) {
                rng.range(1, 20)
            } else {
                rng.range(100, 300)
            };
            let mut v = std::mem::take(node);
            for _ in 0..depth {
                v = if rng.one_in(2) {
                    Value::Array(vec![v])
                } else {
                    let mut m = Map::new();
                    m.insert("a".into(), v);
                    Value::Object(m)
                };
            }
            *node = v;
        }
        _ => match node {
            Value::Object(m) => match rng.below(4) {
                0 if !m.is_empty() => {
                    let key = m
                        .keys()
                        .nth(rng.below(m.len()))
                        .cloned()
                        .unwrap_or_default();
                    m.remove(&key);
                }
                1 if !m.is_empty() && !dict.is_empty() => {
                    let key = m
                        .keys()
                        .nth(rng.below(m.len()))
                        .cloned()
                        .unwrap_or_default();
                    if let Some(v) = m.remove(&key) {
                        m.insert(rng.pick(dict).clone(), v);
                    }
                }
                _ => {
                    let key = if dict.is_empty() {
                        "k".to_string()
                    } else {
                        rng.pick(dict).clone()
                    };
                    let v = random_value(rng, dict);
                    m.insert(key, v);
                }
            },
            Value::Array(a) => match rng.below(6) {
                0 if !a.is_empty() => {
                    a.remove(rng.below(a.len()));
                }
                1 if !a.is_empty() => {
                    let i = rng.below(a.len());
                    let v = a[i].clone();
                    let times = if rng.one_in(4) { rng.range(2, 200) } else { 1 };
                    for _ in 0..times {
                        a.insert(i, v.clone());
                    }
                }
                2 => a.clear(),
                3 if a.len() > 1 => {
                    let (i, j) = (rng.below(a.len()), rng.below(a.len()));
                    a.swap(i, j);
                }
                4 => a.reverse(),
                _ => a.push(random_value(rng, dict)),
            },
            Value::Number(num) => {
                *node = if rng.one_in(3) {
                    boundary_number(rng)
                } else if rng.one_in(4) {
                    Value::String(num.to_string())
                } else {
                    tweak_number(num, rng)
                };
            }
            Value::String(s) => {
                *node = match rng.below(7) {
                    0 => Value::String(random_string(rng, dict)),
                    1 => {
                        let mut cut = rng.below(s.len() + 1);
                        while !s.is_char_boundary(cut) {
                            cut -= 1;
                        }
                        Value::String(s[..cut].to_string())
                    }
                    2 => Value::String(format!("{s}{}", random_string(rng, dict))),
                    3 => s
                        .parse::<u64>()
                        .map(Value::from)
                        .unwrap_or_else(|_| boundary_number(rng)),
                    4 => Value::String(s.repeat(rng.range(2, 50))),
                    5 => {
                        // `"X"` → `{"X": null}`: serde reads both as the enum variant `X`.
                        let mut m = Map::new();
                        m.insert(s.clone(), Value::Null);
                        Value::Object(m)
                    }
                    _ => Value::String(s.to_uppercase()),
                };
            }
            Value::Bool(b) => *node = Value::Bool(!*b),
            Value::Null => *node = random_value(rng, dict),
        },
    }
}

/// Prints `doc` (compact, or pretty one time in four) with the raw-number placeholders
/// replaced by their literals.
pub fn to_text(doc: &Value, rng: &mut Rng) -> String {
    let text = if rng.one_in(4) {
        serde_json::to_string_pretty(doc)
    } else {
        serde_json::to_string(doc)
    }
    .unwrap_or_default();
    if !text.contains("\\u0001raw:") {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    while let Some(at) = rest.find("\"\\u0001raw:") {
        out.push_str(&rest[..at]);
        let lit_start = at + "\"\\u0001raw:".len();
        let Some(len) = rest[lit_start..].find('"') else {
            break;
        };
        out.push_str(&rest[lit_start..lit_start + len]);
        rest = &rest[lit_start + len + 1..];
    }
    out.push_str(rest);
    out
}

/// `1..=max` edits of the JSON text `text`; `None` when it does not parse.
pub fn mutate_text(text: &str, rng: &mut Rng, dict: &[String], max: usize) -> Option<String> {
    let mut doc: Value = serde_json::from_str(text).ok()?;
    for _ in 0..rng.small_count(max) {
        mutate_once(&mut doc, rng, dict);
    }
    Some(to_text(&doc, rng))
}

/// Every object key and short string value of `text` (a dictionary harvested from a seed).
pub fn harvest(text: &str, out: &mut Vec<String>) {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, c) in m {
                    out.push(k.clone());
                    walk(c, out);
                }
            }
            Value::Array(a) => a.iter().take(64).for_each(|c| walk(c, out)),
            Value::String(s) if s.len() <= 64 => out.push(s.clone()),
            _ => {}
        }
    }
    if let Ok(v) = serde_json::from_str::<Value>(text) {
        walk(&v, out);
    }
}
