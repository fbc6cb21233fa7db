//! A small GGUF (v2/v3) reader with a bounds check on every count and offset, and a writer
//! for building test files.
//!
//! Layout: `"GGUF"`, `version: u32`, `n_tensors: u64`, `n_kv: u64`, then `n_kv` metadata
//! pairs (`key: string, type: u32, value`), then `n_tensors` infos
//! (`name: string, n_dims: u32, ne: [u64; n_dims], type: u32, offset: u64`), then padding to
//! `general.alignment` (default 32) and the tensor data; each tensor's bytes start at
//! `data_start + offset`. Strings are `len: u64` + UTF-8 bytes. `ne[0]` is the fastest
//! (innermost) dimension, so a PyTorch `[out, in]` weight has `ne = [in, out]`.

use crate::error::{ModelError, Result};
use crate::quant::{self, GgmlType};
use std::collections::BTreeMap;
use std::path::Path;

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: usize = 32;
/// GGML supports at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays deeper than this are rejected (no real file nests more than once).
const MAX_ARRAY_DEPTH: usize = 3;

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub enum GgufValue {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    F32(f32),
    Bool(bool),
    String(String),
    Array(Vec<GgufValue>),
    U64(u64),
    I64(i64),
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Self::U8(v) => Some(v.into()),
            Self::U16(v) => Some(v.into()),
            Self::U32(v) => Some(v.into()),
            Self::U64(v) => Some(v),
            Self::I8(v) => u64::try_from(v).ok(),
            Self::I16(v) => u64::try_from(v).ok(),
            Self::I32(v) => u64::try_from(v).ok(),
            Self::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, when it is a float or an integer.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Self::F32(v) => Some(v.into()),
            Self::F64(v) => Some(v),
            Self::I8(v) => Some(v.into()),
            Self::I16(v) => Some(v.into()),
            Self::I32(v) => Some(v.into()),
            Self::I64(v) => Some(v as f64),
            _ => self.as_u64().map(|v| v as f64),
        }
    }

    /// The value as a string slice.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value as a bool.
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Self::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            Self::Array(a) => Some(a),
            _ => None,
        }
    }

    fn type_id(&self) -> u32 {
        match self {
            Self::U8(_) => 0,
            Self::I8(_) => 1,
            Self::U16(_) => 2,
            Self::I16(_) => 3,
            Self::U32(_) => 4,
            Self::I32(_) => 5,
            Self::F32(_) => 6,
            Self::Bool(_) => 7,
            Self::String(_) => 8,
            Self::Array(_) => 9,
            Self::U64(_) => 10,
            Self::I64(_) => 11,
            Self::F64(_) => 12,
        }
    }
}

/// Where one tensor lives in the file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// Tensor name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// GGML dimensions, innermost first (`ne[0]` is contiguous).
    pub dims: Vec<usize>,
    /// Storage type.
    pub kind: GgmlType,
    /// Byte offset of the tensor's data, relative to the start of the data section.
    pub offset: usize,
}

impl GgufTensorInfo {
    /// Number of weights, `Π ne[i]`.
    pub fn n_elements(&self) -> usize {
        self.dims.iter().product()
    }

    /// The shape outermost first (the reverse of `dims`), as PyTorch and Burn write it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed GGUF file: its header, and its tensor data in memory ([`GgufFile::from_bytes`])
/// or read one tensor at a time from the file ([`GgufFile::open`]).
#[derive(Debug)]
pub struct GgufFile {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata key/value pairs.
    pub metadata: BTreeMap<String, GgufValue>,
    /// Tensor infos in file order.
    pub tensors: Vec<GgufTensorInfo>,
    data: Data,
    data_start: usize,
}

/// Where a [`GgufFile`]'s tensor bytes come from.
#[derive(Debug)]
enum Data {
    Bytes(Vec<u8>),
    File {
        path: std::path::PathBuf,
        file: std::sync::Mutex<std::fs::File>,
    },
}

/// The header fields of a GGUF file.
struct Header {
    version: u32,
    metadata: BTreeMap<String, GgufValue>,
    tensors: Vec<GgufTensorInfo>,
    data_start: usize,
}

/// Reads the header from `b`, the first bytes of a file of `total` bytes.
struct Cursor<'a> {
    b: &'a [u8],
    pos: usize,
    total: usize,
    /// Set when a read ran past `b` but not past the file: more of the file is needed.
    short: bool,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.total);
        let Some(end) = end.filter(|&e| e <= self.b.len()) else {
            self.short = end.is_some();
            return Err(ModelError::Gguf(format!(
                "truncated: {what} needs {n} bytes at offset {}, file has {}",
                self.pos, self.total
            )));
        };
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn remaining(&self) -> usize {
        self.total - self.pos
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count of items of at least `min_item` bytes each; rejects counts the rest of the
    /// file cannot hold, so a corrupt count never triggers a huge allocation.
    fn count(&mut self, min_item: usize, what: &str) -> Result<usize> {
        let at = self.pos;
        let n = self.u64(what)?;
        let fits = usize::try_from(n).ok().filter(|&n| {
            n.checked_mul(min_item)
                .is_some_and(|b| b <= self.remaining())
        });
        fits.ok_or_else(|| {
            ModelError::Gguf(format!(
                "{what} = {n} at offset {at} exceeds the {} bytes left in the file",
                self.remaining()
            ))
        })
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.count(1, what)?;
        let at = self.pos;
        let s = self.take(len, what)?;
        String::from_utf8(s.to_vec())
            .map_err(|_| ModelError::Gguf(format!("{what} at offset {at} is not valid UTF-8")))
    }

    fn value(&mut self, ty: u32, depth: usize, key: &str) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(key)?[0]),
            1 => GgufValue::I8(self.array::<1>(key)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(key)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(key)?)),
            4 => GgufValue::U32(self.u32(key)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(key)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(key)?)),
            7 => match self.array::<1>(key)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => {
                    return Err(ModelError::Gguf(format!(
                        "metadata '{key}': bool byte {b} is neither 0 nor 1"
                    )));
                }
            },
            8 => GgufValue::String(self.string(key)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(ModelError::Gguf(format!(
                        "metadata '{key}': arrays nested deeper than {MAX_ARRAY_DEPTH}"
                    )));
                }
                let item_ty = self.u32(key)?;
                let min_item = match item_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    t => {
                        return Err(ModelError::Gguf(format!(
                            "metadata '{key}': unknown array item type {t}"
                        )));
                    }
                };
                let n = self.count(min_item, key)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item_ty, depth + 1, key)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(key)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(key)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(key)?)),
            t => {
                return Err(ModelError::Gguf(format!(
                    "metadata '{key}': unknown value type {t}"
                )));
            }
        })
    }
}

impl GgufFile {
    /// Opens a GGUF file: reads and checks its header (every tensor range against the file's
    /// length); tensor bytes are read when asked for, one tensor at a time, so the file is
    /// never held whole in memory.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        use std::io::Read;
        let path = path.as_ref();
        let io = |source| ModelError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let total = usize::try_from(file.metadata().map_err(io)?.len())
            .map_err(|_| ModelError::Gguf(format!("{}: file too large", path.display())))?;
        // The header is read in growing prefixes until it parses (a Llama 3 vocabulary makes
        // it a few MB).
        let mut prefix = Vec::new();
        let mut want = total.min(1 << 20);
        let header = loop {
            let have = prefix.len();
            prefix.resize(want, 0);
            file.read_exact(&mut prefix[have..]).map_err(io)?;
            match Self::header(&prefix, total)? {
                Some(h) => break h,
                None => want = total.min(want.saturating_mul(4)),
            }
        };
        drop(prefix);
        Ok(Self {
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            data: Data::File {
                path: path.to_path_buf(),
                file: std::sync::Mutex::new(file),
            },
            data_start: header.data_start,
        })
    }

    /// Parses GGUF bytes; every count, dimension and tensor range is checked against the
    /// buffer, so a truncated or corrupt file is an error, never a panic.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        let header = Self::header(&bytes, bytes.len())?.ok_or_else(|| {
            ModelError::Gguf("truncated: the header runs past the end of the file".into())
        })?;
        Ok(Self {
            version: header.version,
            metadata: header.metadata,
            tensors: header.tensors,
            data: Data::Bytes(bytes),
            data_start: header.data_start,
        })
    }

    /// Parses the header from `bytes`, the first bytes of a file of `total` bytes; `None` when
    /// the header runs past `bytes` (but not past the file).
    fn header(bytes: &[u8], total: usize) -> Result<Option<Header>> {
        let mut c = Cursor {
            b: bytes,
            pos: 0,
            total,
            short: false,
        };
        match Self::parse_header(&mut c) {
            Err(_) if c.short => Ok(None),
            r => r.map(Some),
        }
    }

    fn parse_header(c: &mut Cursor<'_>) -> Result<Header> {
        let magic = c.take(4, "magic")?;
        if magic != MAGIC {
            return Err(ModelError::Gguf(format!(
                "bad magic {magic:?}, expected \"GGUF\""
            )));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(ModelError::Gguf(format!(
                "unsupported GGUF version {version} (2 and 3 are supported)"
            )));
        }
        // A tensor info takes at least 8 (name) + 4 + 4 + 8 bytes, a metadata pair 8 + 4 + 1.
        let n_tensors = c.count(24, "tensor count")?;
        let n_kv = c.count(13, "metadata count")?;
        let mut metadata = BTreeMap::new();
        for i in 0..n_kv {
            let key = c.string(&format!("metadata key #{i}"))?;
            let ty = c.u32(&key)?;
            let value = c.value(ty, 0, &key)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(ModelError::Gguf(format!("duplicate metadata key '{key}'")));
            }
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .and_then(|a| usize::try_from(a).ok())
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| {
                    ModelError::Gguf(format!("general.alignment = {v:?} is not a power of two"))
                })?,
        };
        let mut tensors = Vec::with_capacity(n_tensors);
        let mut names = std::collections::HashSet::new();
        for i in 0..n_tensors {
            let name = c.string(&format!("tensor #{i} name"))?;
            let n_dims = c.u32(&name)?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(ModelError::Gguf(format!(
                    "tensor '{name}': {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                let d = c.u64(&name)?;
                dims.push(usize::try_from(d).map_err(|_| {
                    ModelError::Gguf(format!("tensor '{name}': dimension {d} too large"))
                })?);
            }
            dims.iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| {
                    ModelError::Gguf(format!("tensor '{name}': element count {dims:?} overflows"))
                })?;
            let kind = GgmlType::from_id(c.u32(&name)?);
            let offset = c.u64(&name)?;
            let offset = usize::try_from(offset)
                .ok()
                .filter(|o| o % alignment == 0)
                .ok_or_else(|| {
                    ModelError::Gguf(format!(
                        "tensor '{name}': offset {offset} is not a multiple of the alignment {alignment}"
                    ))
                })?;
            if !names.insert(name.clone()) {
                return Err(ModelError::Gguf(format!("duplicate tensor '{name}'")));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                kind,
                offset,
            });
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let data_len = c.total.saturating_sub(data_start);
        if data_start > c.total && !tensors.is_empty() {
            return Err(ModelError::Gguf(format!(
                "truncated: data section would start at {data_start}, file has {} bytes",
                c.total
            )));
        }
        for t in &tensors {
            // Unsupported types are reported when the tensor is read; their size is unknown.
            let Some(size) = t.kind.byte_size(t.n_elements()) else {
                if t.kind.block_layout().is_some() {
                    return Err(ModelError::Gguf(format!(
                        "tensor '{}': {} weights of type {} is not a whole number of blocks",
                        t.name,
                        t.n_elements(),
                        t.kind.name()
                    )));
                }
                continue;
            };
            if t.offset.checked_add(size).is_none_or(|end| end > data_len) {
                return Err(ModelError::Gguf(format!(
                    "truncated: tensor '{}' needs bytes {}..{} of the data section, which has {data_len}",
                    t.name,
                    t.offset,
                    t.offset.saturating_add(size)
                )));
            }
        }
        Ok(Header {
            version,
            metadata,
            tensors,
            data_start,
        })
    }

    /// The info of the tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The raw (still quantized) bytes of a tensor: borrowed from the buffer of
    /// [`GgufFile::from_bytes`], read from the file of [`GgufFile::open`].
    pub fn tensor_bytes(&self, info: &GgufTensorInfo) -> Result<std::borrow::Cow<'_, [u8]>> {
        let size =
            info.kind
                .byte_size(info.n_elements())
                .ok_or_else(|| ModelError::UnsupportedType {
                    name: info.name.clone(),
                    kind: info.kind.name(),
                })?;
        let start = self.data_start + info.offset;
        let oob = || ModelError::Gguf(format!("tensor '{}' out of bounds", info.name));
        // In bounds: checked with the header for every tensor of a supported type.
        match &self.data {
            Data::Bytes(b) => b
                .get(start..start + size)
                .map(std::borrow::Cow::Borrowed)
                .ok_or_else(oob),
            Data::File { path, file } => {
                use std::io::{Read, Seek, SeekFrom};
                let io = |source| ModelError::Io {
                    path: path.clone(),
                    source,
                };
                let mut f = file.lock().map_err(|_| {
                    ModelError::Gguf(format!("{}: reader poisoned", path.display()))
                })?;
                f.seek(SeekFrom::Start(start as u64)).map_err(io)?;
                let mut out = vec![0u8; size];
                f.read_exact(&mut out).map_err(io)?;
                Ok(std::borrow::Cow::Owned(out))
            }
        }
    }

    /// Dequantizes the tensor `name` to f32; returns `(shape outermost first, values)`.
    pub fn dequantize(&self, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
        let info = self
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let bytes = self.tensor_bytes(info)?;
        let values = quant::dequantize(name, info.kind, &bytes, info.n_elements())?;
        Ok((info.shape(), values))
    }

    /// The ternary tensor `name` (`TQ1_0`, `TQ2_0` or `I2_S`) as bit-planes and scales,
    /// without a float detour ([`quant::decode_ternary`]); rows in file order (`ne[1..]`),
    /// columns `ne[0]`. Other types are [`ModelError::UnsupportedType`].
    pub fn ternary(&self, name: &str) -> Result<ternary_core::TernaryMatrix> {
        let info = self
            .tensor(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        if !info.kind.is_ternary() {
            return Err(ModelError::UnsupportedType {
                name: name.to_string(),
                kind: format!("{} (not ternary: TQ1_0, TQ2_0 or I2_S)", info.kind.name()),
            });
        }
        let cols = info.dims[0];
        let rows = info.dims[1..].iter().product();
        let bytes = self.tensor_bytes(info)?;
        quant::decode_ternary(info.kind, &bytes, rows, cols).map_err(|e| match e {
            ModelError::Gguf(m) => ModelError::Gguf(format!("tensor '{name}': {m}")),
            other => other,
        })
    }

    /// Metadata value `key`.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.metadata.get(key)
    }

    /// Metadata `key` as an unsigned integer, with a clear error when absent or mistyped.
    pub fn get_usize(&self, key: &str) -> Result<usize> {
        self.get(key)
            .and_then(GgufValue::as_u64)
            .and_then(|v| usize::try_from(v).ok())
            .ok_or_else(|| {
                ModelError::Config(format!(
                    "GGUF metadata '{key}' missing or not an unsigned integer"
                ))
            })
    }

    /// Metadata `key` as a float, with a clear error when absent or mistyped.
    pub fn get_f64(&self, key: &str) -> Result<f64> {
        self.get(key).and_then(GgufValue::as_f64).ok_or_else(|| {
            ModelError::Config(format!("GGUF metadata '{key}' missing or not a number"))
        })
    }

    /// Metadata `key` as a string, with a clear error when absent or mistyped.
    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get(key).and_then(GgufValue::as_str).ok_or_else(|| {
            ModelError::Config(format!("GGUF metadata '{key}' missing or not a string"))
        })
    }
}

/// A tensor to write with [`write_gguf`]: name, GGML dims (innermost first), type, raw bytes.
#[derive(Debug, Clone)]
pub struct GgufTensorData {
    /// Tensor name.
    pub name: String,
    /// GGML dimensions, innermost first.
    pub dims: Vec<usize>,
    /// Storage type.
    pub kind: GgmlType,
    /// The encoded bytes (`kind.byte_size(Π dims)` of them).
    pub bytes: Vec<u8>,
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, v: &GgufValue) {
    match v {
        GgufValue::U8(x) => out.push(*x),
        GgufValue::I8(x) => out.push(*x as u8),
        GgufValue::U16(x) => out.extend(x.to_le_bytes()),
        GgufValue::I16(x) => out.extend(x.to_le_bytes()),
        GgufValue::U32(x) => out.extend(x.to_le_bytes()),
        GgufValue::I32(x) => out.extend(x.to_le_bytes()),
        GgufValue::F32(x) => out.extend(x.to_le_bytes()),
        GgufValue::Bool(x) => out.push(u8::from(*x)),
        GgufValue::String(s) => put_str(out, s),
        GgufValue::Array(items) => {
            // An empty array is written as an array of u8.
            out.extend(items.first().map_or(0, GgufValue::type_id).to_le_bytes());
            out.extend((items.len() as u64).to_le_bytes());
            for it in items {
                put_value(out, it);
            }
        }
        GgufValue::U64(x) => out.extend(x.to_le_bytes()),
        GgufValue::I64(x) => out.extend(x.to_le_bytes()),
        GgufValue::F64(x) => out.extend(x.to_le_bytes()),
    }
}

/// Serializes a GGUF v3 file (alignment 32). Array items must all have one type.
pub fn write_gguf(metadata: &[(&str, GgufValue)], tensors: &[GgufTensorData]) -> Vec<u8> {
    let align = DEFAULT_ALIGNMENT;
    let mut out = Vec::new();
    out.extend(MAGIC);
    out.extend(3u32.to_le_bytes());
    out.extend((tensors.len() as u64).to_le_bytes());
    out.extend((metadata.len() as u64).to_le_bytes());
    for (k, v) in metadata {
        put_str(&mut out, k);
        out.extend(v.type_id().to_le_bytes());
        put_value(&mut out, v);
    }
    let mut offset = 0usize;
    for t in tensors {
        put_str(&mut out, &t.name);
        out.extend((t.dims.len() as u32).to_le_bytes());
        for &d in &t.dims {
            out.extend((d as u64).to_le_bytes());
        }
        out.extend(t.kind.id().to_le_bytes());
        out.extend((offset as u64).to_le_bytes());
        offset = (offset + t.bytes.len()).div_ceil(align) * align;
    }
    out.resize(out.len().div_ceil(align) * align, 0);
    for t in tensors {
        out.extend(&t.bytes);
        out.resize(out.len().div_ceil(align) * align, 0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let f: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let mut q = half::f16::from_f32(1.0).to_bits().to_le_bytes().to_vec();
        q.extend((0..32).map(|i| i as u8));
        write_gguf(
            &[
                ("general.architecture", GgufValue::String("llama".into())),
                ("llama.block_count", GgufValue::U32(2)),
                ("llama.rope.freq_base", GgufValue::F32(1e4)),
                (
                    "tokenizer.ggml.tokens",
                    GgufValue::Array(vec![
                        GgufValue::String("a".into()),
                        GgufValue::String("b".into()),
                    ]),
                ),
            ],
            &[
                GgufTensorData {
                    name: "w".into(),
                    dims: vec![3, 2],
                    kind: GgmlType::F32,
                    bytes: f,
                },
                GgufTensorData {
                    name: "q".into(),
                    dims: vec![32],
                    kind: GgmlType::Q8_0,
                    bytes: q,
                },
            ],
        )
    }

    #[test]
    fn written_file_should_parse_back() {
        let g = GgufFile::from_bytes(sample()).unwrap();
        assert_eq!(g.version, 3);
        assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(g.get_usize("llama.block_count").unwrap(), 2);
        assert_eq!(g.get_f64("llama.rope.freq_base").unwrap(), 1e4);
        assert_eq!(
            g.get("tokenizer.ggml.tokens")
                .unwrap()
                .as_array()
                .unwrap()
                .len(),
            2
        );
        let (shape, w) = g.dequantize("w").unwrap();
        assert_eq!(shape, vec![2, 3]);
        assert_eq!(w, vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let (_, q) = g.dequantize("q").unwrap();
        assert_eq!(q, (0..32).map(|i| i as f32).collect::<Vec<_>>());
        assert!(matches!(
            g.dequantize("nope"),
            Err(ModelError::MissingTensor(_))
        ));
    }

    #[test]
    fn every_truncation_should_be_an_error_not_a_panic() {
        let full = sample();
        // The last tensor's 34 bytes end 30 bytes before the file (padding to 32 follows);
        // cutting anywhere before that end must fail.
        for cut in 0..full.len() - 30 {
            let r = GgufFile::from_bytes(full[..cut].to_vec());
            assert!(r.is_err(), "cut at {cut} of {} parsed", full.len());
        }
    }

    /// A file under the system's temporary directory, unique to this process and `name`.
    fn temp_file(name: &str, bytes: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("ternary-gguf-{}-{name}", std::process::id()));
        std::fs::write(&p, bytes).unwrap();
        p
    }

    #[test]
    fn opened_file_should_read_tensors_as_from_bytes_does() {
        // A header of about 3 MB (one long string) crosses the first 1 MiB prefix `open` reads.
        let mut big = sample();
        let long = "x".repeat(3 << 20);
        let g0 = GgufFile::from_bytes(big.clone()).unwrap();
        let tensors: Vec<GgufTensorData> = g0
            .tensors
            .iter()
            .map(|t| GgufTensorData {
                name: t.name.clone(),
                dims: t.dims.clone(),
                kind: t.kind,
                bytes: g0.tensor_bytes(t).unwrap().into_owned(),
            })
            .collect();
        let mut meta: Vec<(&str, GgufValue)> = g0
            .metadata
            .iter()
            .map(|(k, v)| (k.as_str(), v.clone()))
            .collect();
        meta.push(("general.description", GgufValue::String(long)));
        big = write_gguf(&meta, &tensors);
        for (name, bytes) in [("small", sample()), ("big", big)] {
            let path = temp_file(name, &bytes);
            let a = GgufFile::open(&path).unwrap();
            let b = GgufFile::from_bytes(bytes.clone()).unwrap();
            assert_eq!(a.metadata, b.metadata, "{name}");
            assert_eq!(a.tensors, b.tensors, "{name}");
            for t in &a.tensors {
                assert_eq!(a.tensor_bytes(t).unwrap(), b.tensor_bytes(t).unwrap());
            }
            assert_eq!(a.dequantize("w").unwrap(), b.dequantize("w").unwrap());
            // Truncated files fail at `open`, as they do from bytes.
            for cut in [0, 3, 24, bytes.len() / 2, bytes.len() - 31] {
                let p = temp_file(&format!("{name}-cut"), &bytes[..cut]);
                assert!(GgufFile::open(&p).is_err(), "{name}: cut at {cut} opened");
                std::fs::remove_file(p).unwrap();
            }
            std::fs::remove_file(path).unwrap();
        }
    }

    #[test]
    fn corrupt_counts_and_offsets_should_be_clear_errors() {
        let full = sample();
        // Tensor count (bytes 8..16) set huge.
        let mut b = full.clone();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        let e = GgufFile::from_bytes(b).unwrap_err().to_string();
        assert!(e.contains("tensor count"), "{e}");
        // Metadata count huge.
        let mut b = full.clone();
        b[16..24].copy_from_slice(&(1u64 << 40).to_le_bytes());
        assert!(
            GgufFile::from_bytes(b)
                .unwrap_err()
                .to_string()
                .contains("metadata count")
        );
        // Bad magic and version.
        let mut b = full.clone();
        b[0] = b'X';
        assert!(
            GgufFile::from_bytes(b)
                .unwrap_err()
                .to_string()
                .contains("magic")
        );
        let mut b = full.clone();
        b[4..8].copy_from_slice(&7u32.to_le_bytes());
        assert!(
            GgufFile::from_bytes(b)
                .unwrap_err()
                .to_string()
                .contains("version")
        );
        // First key length huge.
        let mut b = full.clone();
        b[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        assert!(GgufFile::from_bytes(b).is_err());
    }

    #[test]
    fn tensor_past_the_end_should_name_the_tensor() {
        let f: Vec<u8> = vec![0; 8];
        let mut bytes = write_gguf(
            &[],
            &[GgufTensorData {
                name: "blk.7.ffn_up.weight".into(),
                dims: vec![4],
                kind: GgmlType::F32,
                bytes: f,
            }],
        );
        // Claim 64 elements instead of 4 (dims start after header 24 + name 8+19 + n_dims 4).
        let dim_at = 24 + 8 + 19 + 4;
        bytes[dim_at..dim_at + 8].copy_from_slice(&64u64.to_le_bytes());
        let e = GgufFile::from_bytes(bytes.clone()).unwrap_err().to_string();
        assert!(
            e.contains("blk.7.ffn_up.weight") && e.contains("truncated"),
            "{e}"
        );
        // Too many dimensions.
        bytes[dim_at - 4..dim_at].copy_from_slice(&9u32.to_le_bytes());
        let e = GgufFile::from_bytes(bytes).unwrap_err().to_string();
        assert!(e.contains("dimensions"), "{e}");
    }

    #[test]
    fn unsupported_type_should_name_the_tensor_when_read() {
        let bytes = write_gguf(
            &[],
            &[GgufTensorData {
                name: "odd".into(),
                dims: vec![256],
                kind: GgmlType::Other(16),
                bytes: vec![0; 144],
            }],
        );
        let g = GgufFile::from_bytes(bytes).unwrap();
        let e = g.dequantize("odd").unwrap_err().to_string();
        assert!(e.contains("odd") && e.contains("unsupported"), "{e}");
    }
}
