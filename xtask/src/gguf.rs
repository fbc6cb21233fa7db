//! The header of a GGUF file: scalar metadata and the tensor table (name, type, shape,
//! bytes), enough to count the weight bytes a decode step reads. Reads only the header.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// One tensor of the table.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub name: String,
    /// ggml type id (`GGML_TYPE_*`).
    pub ty: u32,
    /// Dimensions as GGUF stores them (innermost first).
    pub dims: Vec<u64>,
    /// Bytes in the file (from the type's block size; `None` for a type this table lacks).
    pub bytes: Option<u64>,
}

impl Tensor {
    pub fn type_name(&self) -> String {
        type_info(self.ty).map_or_else(|| format!("type{}", self.ty), |t| t.0.to_owned())
    }

    /// A linear layer's weight: a 2-D tensor of a block (`blk.N.*`).
    pub fn is_block_linear(&self) -> bool {
        self.name.starts_with("blk.") && self.name.ends_with(".weight") && self.dims.len() == 2
    }
}

/// The parts of a GGUF header the suite uses.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Metadata with scalar values (strings and numbers); arrays are skipped.
    pub meta: Vec<(String, Meta)>,
    pub tensors: Vec<Tensor>,
}

/// A scalar metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum Meta {
    Str(String),
    Num(f64),
    /// An array, with its length.
    Array(u64),
}

impl Header {
    pub fn read(path: &Path) -> Result<Header, String> {
        let f = File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        parse(&mut BufReader::new(f)).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn get(&self, key: &str) -> Option<&Meta> {
        self.meta.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[cfg(test)]
    pub fn get_num(&self, key: &str) -> Option<f64> {
        match self.get(key) {
            Some(Meta::Num(n)) => Some(*n),
            _ => None,
        }
    }

    pub fn get_str(&self, key: &str) -> Option<&str> {
        match self.get(key) {
            Some(Meta::Str(s)) => Some(s),
            _ => None,
        }
    }

    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The output matrix: `output.weight`, else the tied `token_embd.weight`.
    pub fn output(&self) -> Option<&Tensor> {
        self.tensor("output.weight")
            .or_else(|| self.tensor("token_embd.weight"))
    }

    /// Bytes of the weights one decode step reads as stored in the file: every linear
    /// layer of the blocks plus the output matrix (the embedding lookup reads one row).
    pub fn bytes_per_token(&self) -> Option<u64> {
        let mut sum = 0;
        for t in self.tensors.iter().filter(|t| t.is_block_linear()) {
            sum += t.bytes?;
        }
        Some(sum + self.output()?.bytes?)
    }

    /// `type name → count` of the linear layers and output matrix, e.g. `TQ2_0 ×210, F16 ×1`.
    pub fn type_summary(&self) -> String {
        let mut counts: Vec<(String, usize)> = Vec::new();
        let out = self.output().map(|t| t.name.clone());
        for t in &self.tensors {
            if t.is_block_linear() || Some(&t.name) == out.as_ref() {
                let n = t.type_name();
                match counts.iter_mut().find(|(k, _)| *k == n) {
                    Some(c) => c.1 += 1,
                    None => counts.push((n, 1)),
                }
            }
        }
        counts.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let parts: Vec<String> = counts.iter().map(|(n, c)| format!("{n} ×{c}")).collect();
        let out_ty = self.output().map(Tensor::type_name).unwrap_or_default();
        format!("{} (output {out_ty})", parts.join(", "))
    }
}

/// `(name, elements per block, bytes per block)` of a ggml type.
pub fn type_info(ty: u32) -> Option<(&'static str, u64, u64)> {
    Some(match ty {
        0 => ("F32", 1, 4),
        1 => ("F16", 1, 2),
        2 => ("Q4_0", 32, 18),
        3 => ("Q4_1", 32, 20),
        6 => ("Q5_0", 32, 22),
        7 => ("Q5_1", 32, 24),
        8 => ("Q8_0", 32, 34),
        9 => ("Q8_1", 32, 36),
        10 => ("Q2_K", 256, 84),
        11 => ("Q3_K", 256, 110),
        12 => ("Q4_K", 256, 144),
        13 => ("Q5_K", 256, 176),
        14 => ("Q6_K", 256, 210),
        15 => ("Q8_K", 256, 292),
        16 => ("IQ2_XXS", 256, 66),
        17 => ("IQ2_XS", 256, 74),
        18 => ("IQ3_XXS", 256, 98),
        19 => ("IQ1_S", 256, 50),
        20 => ("IQ4_NL", 32, 18),
        21 => ("IQ3_S", 256, 110),
        22 => ("IQ2_S", 256, 82),
        23 => ("IQ4_XS", 256, 136),
        24 => ("I8", 1, 1),
        25 => ("I16", 1, 2),
        26 => ("I32", 1, 4),
        27 => ("I64", 1, 8),
        28 => ("F64", 1, 8),
        29 => ("IQ1_M", 256, 56),
        30 => ("BF16", 1, 2),
        34 => ("TQ1_0", 256, 54),
        35 => ("TQ2_0", 256, 66),
        _ => return None,
    })
}

fn u32_of(r: &mut impl Read) -> Result<u32, String> {
    let mut b = [0u8; 4];
    r.read_exact(&mut b).map_err(|e| e.to_string())?;
    Ok(u32::from_le_bytes(b))
}

fn u64_of(r: &mut impl Read) -> Result<u64, String> {
    let mut b = [0u8; 8];
    r.read_exact(&mut b).map_err(|e| e.to_string())?;
    Ok(u64::from_le_bytes(b))
}

fn bytes_of(r: &mut impl Read, n: u64) -> Result<Vec<u8>, String> {
    if n > 1 << 30 {
        return Err(format!("implausible length {n}"));
    }
    let mut v = Vec::new();
    r.take(n).read_to_end(&mut v).map_err(|e| e.to_string())?;
    if v.len() as u64 != n {
        return Err("truncated header".into());
    }
    Ok(v)
}

fn string_of(r: &mut impl Read) -> Result<String, String> {
    let n = u64_of(r)?;
    Ok(String::from_utf8_lossy(&bytes_of(r, n)?).into_owned())
}

/// Size of a fixed-size GGUF value type, `None` for strings and arrays.
fn scalar_size(ty: u32) -> Result<Option<u64>, String> {
    Ok(match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        8 | 9 => None,
        _ => return Err(format!("unknown metadata type {ty}")),
    })
}

fn scalar(ty: u32, b: &[u8]) -> f64 {
    let a = |n: usize| -> [u8; 8] {
        let mut x = [0u8; 8];
        x[..n].copy_from_slice(&b[..n]);
        x
    };
    match ty {
        0 | 7 => f64::from(b[0]),
        1 => f64::from(b[0] as i8),
        2 => f64::from(u16::from_le_bytes([b[0], b[1]])),
        3 => f64::from(i16::from_le_bytes([b[0], b[1]])),
        4 => f64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        5 => f64::from(i32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        6 => f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        10 => u64::from_le_bytes(a(8)) as f64,
        11 => i64::from_le_bytes(a(8)) as f64,
        _ => f64::from_le_bytes(a(8)),
    }
}

/// Skips `n` values of type `ty` (arrays of arrays included).
fn skip_values(r: &mut impl Read, ty: u32, n: u64) -> Result<(), String> {
    match scalar_size(ty)? {
        Some(sz) => {
            let total = sz.checked_mul(n).ok_or("array too large")?;
            let got = std::io::copy(&mut r.take(total), &mut std::io::sink())
                .map_err(|e| e.to_string())?;
            if got != total {
                return Err("truncated header".into());
            }
        }
        None if ty == 8 => {
            for _ in 0..n {
                let len = u64_of(r)?;
                bytes_of(r, len)?;
            }
        }
        None => {
            for _ in 0..n {
                let sub = u32_of(r)?;
                let m = u64_of(r)?;
                skip_values(r, sub, m)?;
            }
        }
    }
    Ok(())
}

/// Parses a GGUF header from its first byte.
pub fn parse(r: &mut impl Read) -> Result<Header, String> {
    let mut magic = [0u8; 4];
    r.read_exact(&mut magic).map_err(|e| e.to_string())?;
    if &magic != b"GGUF" {
        return Err("not a GGUF file".into());
    }
    let version = u32_of(r)?;
    if !(2..=3).contains(&version) {
        return Err(format!("GGUF version {version} is not supported"));
    }
    let n_tensors = u64_of(r)?;
    let n_kv = u64_of(r)?;
    if n_tensors > 1 << 24 || n_kv > 1 << 24 {
        return Err("implausible tensor or key count".into());
    }
    let mut meta = Vec::new();
    for _ in 0..n_kv {
        let key = string_of(r)?;
        let ty = u32_of(r)?;
        let value = match ty {
            8 => Meta::Str(string_of(r)?),
            9 => {
                let sub = u32_of(r)?;
                let n = u64_of(r)?;
                skip_values(r, sub, n)?;
                Meta::Array(n)
            }
            _ => {
                let sz = scalar_size(ty)?.unwrap_or(0);
                Meta::Num(scalar(ty, &bytes_of(r, sz)?))
            }
        };
        meta.push((key, value));
    }
    let mut tensors = Vec::new();
    for _ in 0..n_tensors {
        let name = string_of(r)?;
        let nd = u32_of(r)?;
        if nd > 8 {
            return Err(format!("{name}: {nd} dimensions"));
        }
        let dims = (0..nd).map(|_| u64_of(r)).collect::<Result<Vec<_>, _>>()?;
        let ty = u32_of(r)?;
        let _offset = u64_of(r)?;
        let n: u64 = dims.iter().product();
        let bytes = type_info(ty).map(|(_, blk, b)| n.div_ceil(blk) * b);
        tensors.push(Tensor {
            name,
            ty,
            dims,
            bytes,
        });
    }
    Ok(Header { meta, tensors })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::util::root;

    #[test]
    fn reads_the_tiny_bitnet_fixtures() {
        let dir = root().join("fixtures/tiny-bitnet-gguf");
        let h = Header::read(&dir.join("tiny-bitnet-tq2_0.gguf")).unwrap();
        assert_eq!(h.get_str("general.architecture"), Some("bitnet"));
        let layers = h.get_num("bitnet.block_count").unwrap() as usize;
        let linears: Vec<_> = h.tensors.iter().filter(|t| t.is_block_linear()).collect();
        assert_eq!(linears.len(), 7 * layers);
        assert!(matches!(h.get("tokenizer.ggml.tokens"), Some(Meta::Array(n)) if *n > 0));
        // Every byte count agrees with the offsets' spacing: the sum fits in the file.
        let file = std::fs::metadata(dir.join("tiny-bitnet-tq2_0.gguf"))
            .unwrap()
            .len();
        let total: u64 = h.tensors.iter().map(|t| t.bytes.unwrap()).sum();
        assert!(total < file, "{total} vs {file}");
        let per_token = h.bytes_per_token().unwrap();
        assert!(per_token > 0 && per_token <= total);
        assert!(
            h.type_summary().contains("(output "),
            "{}",
            h.type_summary()
        );
    }

    #[test]
    fn parses_a_handmade_header() {
        let mut b = Vec::new();
        b.extend_from_slice(b"GGUF");
        b.extend_from_slice(&3u32.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes()); // tensors
        b.extend_from_slice(&3u64.to_le_bytes()); // kv
        let s = |b: &mut Vec<u8>, x: &str| {
            b.extend_from_slice(&(x.len() as u64).to_le_bytes());
            b.extend_from_slice(x.as_bytes());
        };
        s(&mut b, "general.architecture");
        b.extend_from_slice(&8u32.to_le_bytes());
        s(&mut b, "llama");
        s(&mut b, "llama.block_count");
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&30u32.to_le_bytes());
        s(&mut b, "tokenizer.ggml.scores");
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(&6u32.to_le_bytes());
        b.extend_from_slice(&2u64.to_le_bytes());
        b.extend_from_slice(&[0u8; 8]);
        for (name, dims, ty) in [
            ("blk.0.attn_q.weight", [256u64, 4], 35u32),
            ("token_embd.weight", [256, 10], 1),
        ] {
            s(&mut b, name);
            b.extend_from_slice(&2u32.to_le_bytes());
            for d in dims {
                b.extend_from_slice(&d.to_le_bytes());
            }
            b.extend_from_slice(&ty.to_le_bytes());
            b.extend_from_slice(&0u64.to_le_bytes());
        }
        let h = parse(&mut b.as_slice()).unwrap();
        assert_eq!(h.get_num("llama.block_count"), Some(30.0));
        assert_eq!(h.get("tokenizer.ggml.scores"), Some(&Meta::Array(2)));
        assert_eq!(h.tensors[0].bytes, Some(4 * 66));
        assert_eq!(h.tensors[1].bytes, Some(2560 * 2));
        assert_eq!(h.bytes_per_token(), Some(4 * 66 + 5120));
        assert_eq!(h.type_summary(), "F16 ×1, TQ2_0 ×1 (output F16)");
        assert!(parse(&mut &b[..40]).is_err());
        assert!(parse(&mut &b"GGUX"[..]).is_err());
    }
}
