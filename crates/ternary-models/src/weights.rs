//! Named host-side weights in Hugging Face naming, from GGUF or safetensors.
//!
//! Every loader presents its tensors under the Hugging Face Llama names
//! (`model.layers.3.self_attn.q_proj.weight`, ...) with PyTorch shapes (`[out, in]`), so the
//! model builder has one path for every file format.

use crate::config::{Architecture, LlamaConfig};
use crate::error::{ModelError, Result};
use crate::gguf::GgufFile;
use crate::quant::GgmlType;
use ternary_core::TernaryMatrix;

/// A dense f32 tensor in host memory, shape outermost first, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    /// Shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// Row-major values (`Π shape` of them).
    pub data: Vec<f32>,
}

/// Anything that can hand out weights by Hugging Face name.
pub trait WeightSource {
    /// The tensor called `name` (Hugging Face naming), as f32.
    fn tensor(&self, name: &str) -> Result<HostTensor>;
    /// Whether the source has a tensor called `name`.
    fn contains(&self, name: &str) -> bool;
    /// The still-quantized rows of a 2-D tensor stored in a block format the host multiplies
    /// (Q4_0/Q4_1/Q8_0/Q6_K), in Hugging Face row order; `None` for float tensors and sources
    /// without quantized storage.
    fn quantized(&self, _name: &str) -> Result<Option<QuantizedTensor>> {
        Ok(None)
    }
    /// The weight `name` when the file stores it ternary (transformers' packed BitNet `uint8`,
    /// GGUF ternary types), already in bit planes in Hugging Face row order; `None` for float
    /// tensors and sources without ternary storage.
    fn ternary(&self, _name: &str) -> Result<Option<TernaryWeight>> {
        Ok(None)
    }
    /// Whether the linear weight `name` is put in by the caller after the model is built: the
    /// builder then neither reads it nor copies the embedding for a tied head, and holds
    /// untouched zeros in its place.
    fn placeholder(&self, _name: &str) -> bool {
        false
    }
    /// The tensor `name` as the `f16` values the source stores (no widened copy), row-major, handed
    /// over (asked for once);
    /// `None` when the source holds it in another type or cannot hand it over so.
    fn half(&self, _name: &str) -> Result<Option<Vec<half::f16>>> {
        Ok(None)
    }
    /// Whether host float linear layers (a tied head included) take the `f16` values
    /// [`half`](Self::half) hands over, instead of widened `f32` copies.
    fn half_layers(&self) -> bool {
        false
    }
}

/// Weights held in memory by name: [`HostTensor`]s in Hugging Face naming (a model rebuilt
/// from transformed weights, tests).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MapWeights(pub std::collections::HashMap<String, HostTensor>);

impl WeightSource for MapWeights {
    fn tensor(&self, name: &str) -> Result<HostTensor> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }

    fn contains(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// A linear weight stored ternary in a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct TernaryWeight {
    /// The trits `[out, in]` with the scales the file gives per row or group (unit scales
    /// where it gives one per tensor).
    pub matrix: TernaryMatrix,
    /// The tensor's `weight_scale` as the checkpoint stores it (Hugging Face BitNet), whose
    /// meaning depends on [`BitNetLinear`](crate::config::BitNetLinear); `None` when the
    /// scales are all in `matrix`.
    pub weight_scale: Option<f32>,
}

/// A 2-D block-quantized tensor `[rows, cols]`: each row is whole blocks of `kind` (32
/// weights each, 256 for the K-quants).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedTensor {
    /// Block format.
    pub kind: GgmlType,
    /// Number of rows (output features).
    pub rows: usize,
    /// Number of columns (input features), a multiple of the block size.
    pub cols: usize,
    /// `rows · (cols / block) · block bytes` bytes, row after row.
    pub bytes: Vec<u8>,
}

/// Maps a Hugging Face Llama tensor name to its llama.cpp GGUF name.
pub fn gguf_name(hf: &str) -> Option<String> {
    let fixed = match hf {
        "model.embed_tokens.weight" => Some("token_embd.weight"),
        "model.norm.weight" => Some("output_norm.weight"),
        "lm_head.weight" => Some("output.weight"),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let rest = hf.strip_prefix("model.layers.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let g = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.attn_sub_norm.weight" => "attn_sub_norm.weight",
        "mlp.ffn_sub_norm.weight" => "ffn_sub_norm.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        _ => return None,
    };
    Some(format!("blk.{layer}.{g}"))
}

/// Undoes llama.cpp's Q/K row permutation.
///
/// llama.cpp's converter reorders the rows of each head so RoPE rotates adjacent pairs:
/// HF row `h·d + s·d/2 + i` is stored at GGUF row `h·d + 2i + s` (`s ∈ {0, 1}`, `i < d/2`).
/// This puts them back in Hugging Face order (RoPE on the two halves, `rotate_half`).
pub fn unpermute_qk<T: Copy + Default>(
    rows: &[T],
    n_heads: usize,
    head_dim: usize,
    cols: usize,
) -> Vec<T> {
    let half = head_dim / 2;
    let mut out = vec![T::default(); rows.len()];
    for h in 0..n_heads {
        for i in 0..half {
            for s in 0..2 {
                let src = (h * head_dim + 2 * i + s) * cols;
                let dst = (h * head_dim + s * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&rows[src..src + cols]);
            }
        }
    }
    out
}

/// Whether llama.cpp stores the Q/K rows of an `architecture` model permuted
/// ([`unpermute_qk`]): its `llama` graph uses adjacent-pair RoPE (`LLAMA_ROPE_TYPE_NORM`), so
/// the converter permutes; its `bitnet` graph uses the half-split RoPE of Hugging Face
/// (`LLAMA_ROPE_TYPE_NEOX`), and the converter keeps the rows as they are.
pub fn qk_permuted(architecture: Architecture) -> bool {
    match architecture {
        Architecture::Llama => true,
        Architecture::BitNet => false,
    }
}

/// GGUF tensors presented under Hugging Face names, with Q/K rows un-permuted where the
/// architecture's converter permuted them ([`qk_permuted`]).
#[derive(Debug)]
pub struct GgufWeights<'a> {
    file: &'a GgufFile,
    config: LlamaConfig,
}

impl<'a> GgufWeights<'a> {
    /// Wraps a parsed file whose configuration is `config`.
    pub fn new(file: &'a GgufFile, config: LlamaConfig) -> Self {
        Self { file, config }
    }

    /// The head count of `name` when its rows are stored permuted (Q/K of a
    /// [`qk_permuted`] architecture), else `None`.
    fn permuted_heads(&self, name: &str) -> Option<usize> {
        if !qk_permuted(self.config.architecture) {
            None
        } else if name.ends_with("q_proj.weight") {
            Some(self.config.num_heads)
        } else if name.ends_with("k_proj.weight") {
            Some(self.config.num_kv_heads)
        } else {
            None
        }
    }
}

impl WeightSource for GgufWeights<'_> {
    fn tensor(&self, name: &str) -> Result<HostTensor> {
        let g = gguf_name(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let (shape, mut data) = self.file.dequantize(&g)?;
        let heads = self.permuted_heads(name);
        if let Some(n) = heads {
            let d = self.config.head_dim;
            if shape.len() != 2 || shape[0] != n * d {
                return Err(ModelError::Shape {
                    name: g,
                    expected: vec![n * d, self.config.hidden_size],
                    found: shape,
                });
            }
            data = unpermute_qk(&data, n, d, shape[1]);
        }
        Ok(HostTensor { shape, data })
    }

    fn contains(&self, name: &str) -> bool {
        gguf_name(name).is_some_and(|g| self.file.tensor(&g).is_some())
    }

    /// TQ1_0 / TQ2_0 / I2_S tensors ([`GgufFile::ternary`]), Q/K rows un-permuted (plane
    /// words and scale groups moved with their rows).
    fn ternary(&self, name: &str) -> Result<Option<TernaryWeight>> {
        let Some(g) = gguf_name(name) else {
            return Ok(None);
        };
        match self.file.tensor(&g) {
            Some(info) if info.kind.is_ternary() && info.dims.len() == 2 => {}
            _ => return Ok(None),
        }
        let m = self.file.ternary(&g)?;
        let heads = self.permuted_heads(name);
        let matrix = match heads {
            None => m,
            Some(n) => {
                let d = self.config.head_dim;
                let (rows, cols) = (m.rows(), m.cols());
                if rows != n * d {
                    return Err(ModelError::Shape {
                        name: g,
                        expected: vec![n * d, self.config.hidden_size],
                        found: vec![rows, cols],
                    });
                }
                let wpr = m.words_per_row();
                let (plus, minus, scales) = m.into_parts();
                let groups = scales.values().len() / rows.max(1);
                let values = unpermute_qk(scales.values(), n, d, groups);
                TernaryMatrix::from_planes(
                    rows,
                    cols,
                    unpermute_qk(&plus, n, d, wpr),
                    unpermute_qk(&minus, n, d, wpr),
                    ternary_core::Scales::new(scales.layout(), values),
                )?
            }
        };
        Ok(Some(TernaryWeight {
            matrix,
            weight_scale: None,
        }))
    }

    fn half(&self, name: &str) -> Result<Option<Vec<half::f16>>> {
        let Some(g) = gguf_name(name) else {
            return Ok(None);
        };
        let Some(info) = self.file.tensor(&g) else {
            return Ok(None);
        };
        if info.kind != GgmlType::F16 || info.dims.len() != 2 {
            return Ok(None);
        }
        let (cols, rows) = (info.dims[0], info.dims[1]);
        let bytes = self.file.tensor_bytes(info)?;
        let w: Vec<half::f16> = bytes
            .chunks_exact(2)
            .map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])))
            .collect();
        match self.permuted_heads(name) {
            Some(n) if rows == n * self.config.head_dim => {
                Ok(Some(unpermute_qk(&w, n, self.config.head_dim, cols)))
            }
            Some(n) => Err(ModelError::Shape {
                name: g,
                expected: vec![n * self.config.head_dim, cols],
                found: vec![rows, cols],
            }),
            None => Ok(Some(w)),
        }
    }

    fn half_layers(&self) -> bool {
        true
    }

    fn quantized(&self, name: &str) -> Result<Option<QuantizedTensor>> {
        let g = gguf_name(name).ok_or_else(|| ModelError::MissingTensor(name.to_string()))?;
        let info = self
            .file
            .tensor(&g)
            .ok_or_else(|| ModelError::MissingTensor(g.clone()))?;
        if !matches!(
            info.kind,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 | GgmlType::Q6_K
        ) || info.dims.len() != 2
        {
            return Ok(None);
        }
        let (cols, rows) = (info.dims[0], info.dims[1]);
        let bytes = self.file.tensor_bytes(info)?;
        let row_bytes = bytes.len() / rows.max(1);
        let heads = self.permuted_heads(name);
        let bytes = match heads {
            Some(n) if rows == n * self.config.head_dim => {
                unpermute_qk(&bytes, n, self.config.head_dim, row_bytes)
            }
            Some(_) => {
                return Err(ModelError::Shape {
                    name: g,
                    expected: vec![heads.unwrap_or(0) * self.config.head_dim, cols],
                    found: vec![rows, cols],
                });
            }
            None => bytes.into_owned(),
        };
        Ok(Some(QuantizedTensor {
            kind: info.kind,
            rows,
            cols,
            bytes,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// llama.cpp's `permute` (convert_hf_to_gguf.py): reshape to (heads, 2, d/2, cols), swap
    /// axes 1 and 2.
    fn permute(rows: &[f32], n_heads: usize, d: usize, cols: usize) -> Vec<f32> {
        let mut out = Vec::with_capacity(rows.len());
        for h in 0..n_heads {
            for i in 0..d / 2 {
                for s in 0..2 {
                    let src = (h * d + s * (d / 2) + i) * cols;
                    out.extend_from_slice(&rows[src..src + cols]);
                }
            }
        }
        out
    }

    #[test]
    fn unpermute_should_invert_llama_cpp_permute() {
        let (h, d, c) = (3, 8, 5);
        let x: Vec<f32> = (0..h * d * c).map(|v| v as f32).collect();
        assert_eq!(unpermute_qk(&permute(&x, h, d, c), h, d, c), x);
        assert_ne!(permute(&x, h, d, c), x);
    }

    #[test]
    fn names_should_map_to_llama_cpp() {
        assert_eq!(
            gguf_name("model.layers.12.mlp.down_proj.weight").unwrap(),
            "blk.12.ffn_down.weight"
        );
        assert_eq!(
            gguf_name("model.embed_tokens.weight").unwrap(),
            "token_embd.weight"
        );
        assert_eq!(
            gguf_name("model.layers.1.mlp.ffn_sub_norm.weight").unwrap(),
            "blk.1.ffn_sub_norm.weight"
        );
        assert!(gguf_name("model.layers.x.mlp.down_proj.weight").is_none());
        assert!(gguf_name("something.else").is_none());
    }
}
