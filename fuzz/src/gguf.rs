//! GGUF-aware mutation. A valid seed is walked once to record where each integer field lives
//! (counts, string lengths, value and array item types, array lengths, dimension counts,
//! dimensions, tensor types and offsets); a mutation overwrites a few of those fields with
//! boundary values suited to their kind. A second strategy writes a fresh file with random
//! metadata (every value type, nested and mixed arrays, the keys the loaders read) and random
//! tensor infos (huge, zero or overflowing dimensions, unknown types, misaligned offsets).

use ternary_models::gguf::{GgufTensorData, GgufValue, write_gguf};
use ternary_models::quant::GgmlType;

use crate::rng::Rng;

/// What an integer field of a GGUF file means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// The format version (u32).
    Version,
    /// Number of tensor infos (u64).
    TensorCount,
    /// Number of metadata pairs (u64).
    KvCount,
    /// A string's byte length (u64).
    StrLen,
    /// A metadata value type (u32).
    ValueType,
    /// An array's item type (u32).
    ItemType,
    /// An array's length (u64).
    ArrayLen,
    /// A scalar metadata value of 1, 2, 4 or 8 bytes.
    Scalar,
    /// A tensor's number of dimensions (u32).
    NDims,
    /// One tensor dimension (u64).
    Dim,
    /// A tensor's GGML type (u32).
    TensorType,
    /// A tensor's data offset (u64).
    TensorOffset,
}

/// One integer field: where it is, how wide, what it means.
#[derive(Debug, Clone, Copy)]
pub struct Field {
    /// Byte offset in the file.
    pub at: usize,
    /// Width in bytes.
    pub width: usize,
    /// Meaning.
    pub kind: FieldKind,
}

struct Walk<'a> {
    b: &'a [u8],
    pos: usize,
    fields: Vec<Field>,
}

impl Walk<'_> {
    fn int(&mut self, width: usize, kind: FieldKind) -> Option<u64> {
        let s = self.b.get(self.pos..self.pos + width)?;
        let mut a = [0u8; 8];
        a[..width].copy_from_slice(s);
        self.fields.push(Field {
            at: self.pos,
            width,
            kind,
        });
        self.pos += width;
        Some(u64::from_le_bytes(a))
    }

    fn string(&mut self) -> Option<()> {
        let n = usize::try_from(self.int(8, FieldKind::StrLen)?).ok()?;
        self.b.get(self.pos..self.pos.checked_add(n)?)?;
        self.pos += n;
        Some(())
    }

    fn value(&mut self, ty: u64) -> Option<()> {
        let width = match ty {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            8 => return self.string(),
            9 => {
                let item = self.int(4, FieldKind::ItemType)?;
                let n = self.int(8, FieldKind::ArrayLen)?;
                for _ in 0..n.min(1 << 20) {
                    self.value(item)?;
                }
                return Some(());
            }
            _ => return None,
        };
        self.int(width, FieldKind::Scalar).map(|_| ())
    }
}

/// The integer fields of a well-formed GGUF file (as far as it parses).
pub fn fields(bytes: &[u8]) -> Vec<Field> {
    let mut w = Walk {
        b: bytes,
        pos: 4,
        fields: Vec::new(),
    };
    let _ = (|| -> Option<()> {
        w.int(4, FieldKind::Version)?;
        let nt = w.int(8, FieldKind::TensorCount)?;
        let nkv = w.int(8, FieldKind::KvCount)?;
        for _ in 0..nkv {
            w.string()?;
            let ty = w.int(4, FieldKind::ValueType)?;
            w.value(ty)?;
        }
        for _ in 0..nt {
            w.string()?;
            let nd = w.int(4, FieldKind::NDims)?;
            for _ in 0..nd.min(8) {
                w.int(8, FieldKind::Dim)?;
            }
            w.int(4, FieldKind::TensorType)?;
            w.int(8, FieldKind::TensorOffset)?;
        }
        Some(())
    })();
    w.fields
}

fn read(b: &[u8], f: Field) -> u64 {
    let mut a = [0u8; 8];
    a[..f.width].copy_from_slice(&b[f.at..f.at + f.width]);
    u64::from_le_bytes(a)
}

/// A boundary value for a field of kind `kind` whose current value is `v` in a file of `len`
/// bytes.
fn boundary(kind: FieldKind, v: u64, len: u64, rng: &mut Rng) -> u64 {
    let common = [
        0,
        1,
        v.wrapping_add(1),
        v.wrapping_sub(1),
        v.wrapping_mul(2),
        u32::MAX as u64,
        1 << 32,
        1 << 60,
        u64::MAX,
        len,
        len / 2,
    ];
    match kind {
        FieldKind::Version => *rng.pick(&[0, 1, 2, 3, 4, u32::MAX as u64]),
        FieldKind::ValueType | FieldKind::ItemType => {
            if rng.one_in(4) {
                *rng.pick(&[13, 14, 255, u32::MAX as u64])
            } else {
                rng.below(13) as u64
            }
        }
        FieldKind::TensorType => {
            *rng.pick(&[0, 1, 2, 3, 8, 30, 6, 12, 39, 40, 1000, u32::MAX as u64])
        }
        FieldKind::NDims => *rng.pick(&[0, 1, 2, 3, 4, 5, 8, u32::MAX as u64]),
        FieldKind::Dim => *rng.pick(&[
            0,
            1,
            31,
            32,
            33,
            v.wrapping_add(1),
            v.wrapping_sub(1),
            v.wrapping_mul(32),
            1 << 31,
            1 << 32,
            1 << 60,
            (1 << 63) / 32 * 2,
            u64::MAX / 2 + 1,
            u64::MAX,
        ]),
        FieldKind::TensorOffset => *rng.pick(&[
            0,
            32,
            v.wrapping_add(32),
            v.wrapping_sub(32),
            v.wrapping_add(1),
            len,
            len.wrapping_add(32) & !31,
            1 << 60,
            u64::MAX - 31,
            u64::MAX,
        ]),
        _ => *rng.pick(&common),
    }
}

/// `1..=max` field edits of `buf` (a copy of the seed whose fields are `fields`).
pub fn mutate_fields(buf: &mut [u8], fields: &[Field], rng: &mut Rng, max: usize) {
    if fields.is_empty() {
        return;
    }
    let len = buf.len() as u64;
    for _ in 0..rng.small_count(max) {
        let f = *rng.pick(fields);
        if f.at + f.width > buf.len() {
            continue;
        }
        let v = if f.kind == FieldKind::Scalar {
            rng.next_u64()
        } else {
            boundary(f.kind, read(buf, f), len, rng)
        };
        buf[f.at..f.at + f.width].copy_from_slice(&v.to_le_bytes()[..f.width]);
    }
}

/// Gives one tensor another shape with the same number of elements (so the file stays
/// consistent): its dimensions swapped or refactored, e.g. `[32, 24]` → `[16, 48]`, which
/// reaches the shape logic behind the parser (block rows, Q/K un-permutation).
pub fn reshape(buf: &mut [u8], fields: &[Field], rng: &mut Rng) {
    let tensors: Vec<usize> = fields
        .iter()
        .enumerate()
        .filter(|(i, f)| {
            f.kind == FieldKind::NDims
                && fields.get(i + 2).is_some_and(|g| g.kind == FieldKind::Dim)
        })
        .map(|(i, _)| i)
        .collect();
    if tensors.is_empty() {
        return;
    }
    let at = *rng.pick(&tensors);
    let dims: Vec<Field> = fields[at + 1..]
        .iter()
        .take_while(|f| f.kind == FieldKind::Dim)
        .copied()
        .collect();
    if dims.len() < 2 || dims.iter().any(|f| f.at + 8 > buf.len()) {
        return;
    }
    let (d0, d1) = (dims[0], dims[1]);
    let (a, b) = (read(buf, d0), read(buf, d1));
    let Some(n) = a.checked_mul(b).filter(|&n| n > 0 && n < 1 << 24) else {
        return;
    };
    let divisors: Vec<u64> = (1..=n).filter(|k| n % k == 0).take(64).collect();
    let (x, y) = if rng.one_in(3) {
        (b, a)
    } else {
        let k = *rng.pick(&divisors);
        (k, n / k)
    };
    buf[d0.at..d0.at + 8].copy_from_slice(&x.to_le_bytes());
    buf[d1.at..d1.at + 8].copy_from_slice(&y.to_le_bytes());
}

/// Metadata keys the loaders read.
const KEYS: &[&str] = &[
    "general.architecture",
    "general.alignment",
    "general.name",
    "llama.block_count",
    "llama.context_length",
    "llama.embedding_length",
    "llama.feed_forward_length",
    "llama.attention.head_count",
    "llama.attention.head_count_kv",
    "llama.attention.key_length",
    "llama.rope.freq_base",
    "llama.attention.layer_norm_rms_epsilon",
    "llama.vocab_size",
    "tokenizer.ggml.model",
    "tokenizer.ggml.pre",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.merges",
    "tokenizer.ggml.token_type",
    "tokenizer.ggml.bos_token_id",
    "tokenizer.ggml.eos_token_id",
    "tokenizer.ggml.add_bos_token",
];

const STRINGS: &[&str] = &[
    "llama", "gpt2", "smollm", "default", "", "Ġ", "a b", "ab", "a", "b", "<s>", "Ġa Ġb", " ",
    "qwen2", "llama3",
];

fn random_scalar(rng: &mut Rng) -> GgufValue {
    let big = |rng: &mut Rng| -> u64 {
        *rng.pick(&[0, 1, 2, 4, 8, 32, 64, 1 << 24, 1 << 32, 1 << 60, u64::MAX])
    };
    match rng.below(13) {
        0 => GgufValue::U8(rng.below(256) as u8),
        1 => GgufValue::I8(rng.below(256) as u8 as i8),
        2 => GgufValue::U16(rng.below(65536) as u16),
        3 => GgufValue::I16(-(rng.below(3) as i16)),
        4 => GgufValue::U32(big(rng) as u32),
        5 => GgufValue::I32(*rng.pick(&[-1, 0, 1, 3, 4, i32::MIN, i32::MAX])),
        6 => GgufValue::F32(*rng.pick(&[0.0, 1e-5, -1.0, 1e4, f32::NAN, f32::INFINITY, 1e38])),
        7 => GgufValue::Bool(rng.one_in(2)),
        8 | 9 => GgufValue::String((*rng.pick(STRINGS)).to_string()),
        10 => GgufValue::U64(big(rng)),
        11 => GgufValue::I64(*rng.pick(&[-1, 0, 1, i64::MIN, i64::MAX])),
        _ => GgufValue::F64(*rng.pick(&[0.0, -0.0, 1e300, f64::NAN, -1e-300])),
    }
}

fn random_value(rng: &mut Rng, depth: usize) -> GgufValue {
    if depth < 4 && rng.one_in(3) {
        let n = if depth == 0 && rng.one_in(8) {
            rng.range(0, 300)
        } else {
            rng.range(0, 6)
        };
        let mixed = rng.one_in(6);
        let proto = random_value(rng, depth + 1);
        let items = (0..n)
            .map(|_| {
                if mixed {
                    random_value(rng, depth + 1)
                } else {
                    match &proto {
                        GgufValue::Array(_) => random_value(rng, depth + 1),
                        GgufValue::String(_) => GgufValue::String((*rng.pick(STRINGS)).into()),
                        p => p.clone(),
                    }
                }
            })
            .collect();
        return GgufValue::Array(items);
    }
    random_scalar(rng)
}

fn random_dims(rng: &mut Rng) -> Vec<usize> {
    let n = rng.range(0, 5);
    (0..n)
        .map(|_| {
            *rng.pick(&[
                0,
                1,
                2,
                3,
                8,
                31,
                32,
                64,
                1 << 20,
                1 << 32,
                1 << 60,
                usize::MAX,
            ])
        })
        .collect()
}

/// A fresh GGUF file with random metadata and tensor infos.
pub fn generate(rng: &mut Rng) -> Vec<u8> {
    let n_meta = rng.range(0, 12);
    let mut keys: Vec<String> = Vec::new();
    let mut meta = Vec::new();
    for _ in 0..n_meta {
        let key = if rng.one_in(5) {
            format!("k{}", rng.below(100))
        } else {
            (*rng.pick(KEYS)).to_string()
        };
        keys.push(key);
    }
    for k in &keys {
        meta.push((k.as_str(), random_value(rng, 0)));
    }
    let n_tensors = rng.range(0, 4);
    let tensors: Vec<GgufTensorData> = (0..n_tensors)
        .map(|i| {
            let dims = random_dims(rng);
            let kind = GgmlType::from_id(*rng.pick(&[0, 1, 2, 3, 8, 30, 12, 99]));
            let n: usize = dims
                .iter()
                .try_fold(1usize, |a, &d| a.checked_mul(d))
                .unwrap_or(usize::MAX);
            let size = kind.byte_size(n).unwrap_or(0).min(4096);
            let size = if rng.one_in(4) { rng.below(256) } else { size };
            GgufTensorData {
                name: if rng.one_in(3) {
                    (*rng.pick(&["token_embd.weight", "output.weight", "blk.0.attn_q.weight"]))
                        .to_string()
                } else {
                    format!("t{i}")
                },
                dims,
                kind,
                bytes: (0..size).map(|_| rng.below(256) as u8).collect(),
            }
        })
        .collect();
    write_gguf(&meta, &tensors)
}
