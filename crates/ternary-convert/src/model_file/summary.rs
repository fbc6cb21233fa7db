//! What a file holds, without building the model: [`FileSummary`], [`inspect`].

use std::fmt;
use std::path::{Path, PathBuf};

use ternary_layers::LinearWeights;
use ternary_models::LlamaConfig;

use super::schema::*;
use crate::error::Result;

/// One linear layer of a converted model.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerSummary {
    /// Hugging Face name without `.weight` (e.g. `model.layers.0.mlp.up_proj`).
    pub name: String,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Storage.
    pub format: StoredFormat,
    /// Fraction of zero trits (ternary layers only).
    pub zero_fraction: Option<f64>,
    /// Bytes the layer takes in the file (planes, scales, bias, input scale; or the weight).
    pub bytes: u64,
}

impl LayerSummary {
    /// `rows · cols`.
    pub fn weights(&self) -> u64 {
        self.rows as u64 * self.cols as u64
    }

    /// Whether the layer is ternary (one or two trit-planes).
    pub fn is_ternary(&self) -> bool {
        self.planes() > 0
    }

    /// Trit-planes: 0 for a float layer, 1 or 2.
    pub fn planes(&self) -> usize {
        match self.format {
            StoredFormat::Ternary { .. } => 1,
            StoredFormat::TwoPlanes { .. } => 2,
            StoredFormat::Float(_) => 0,
        }
    }

    /// Stored bits per weight, `8 · bytes / (rows · cols)` (planes with their row padding,
    /// scales and vectors included).
    pub fn bits_per_weight(&self) -> f64 {
        8.0 * self.bytes as f64 / self.weights().max(1) as f64
    }
}

/// What a converted-model file holds (see [`inspect`]).
#[derive(Debug, Clone, PartialEq)]
pub struct FileSummary {
    /// The file, when the summary came from one.
    pub path: Option<PathBuf>,
    /// Format version.
    pub format_version: String,
    /// The model's hyper-parameters.
    pub config: LlamaConfig,
    /// Every linear layer in model order (a tied float head is listed with the embedding's
    /// storage and counted once, under the embedding).
    pub layers: Vec<LayerSummary>,
    /// The other tensors (embedding, norms): name, shape, storage.
    pub others: Vec<(String, Vec<usize>, FloatDtype)>,
    /// Bytes of [`FileSummary::others`].
    pub other_bytes: u64,
    /// Size of the whole file (header and metadata included).
    pub file_bytes: u64,
}

impl FileSummary {
    fn stored_layers(&self) -> impl Iterator<Item = &LayerSummary> {
        self.layers.iter().filter(|l| l.bytes > 0)
    }

    /// Weights in all linear layers (a tied head is not counted: it is the embedding).
    pub fn linear_weights(&self) -> u64 {
        self.stored_layers().map(LayerSummary::weights).sum()
    }

    /// Weights in ternary linear layers.
    pub fn ternary_weights(&self) -> u64 {
        self.stored_layers()
            .filter(|l| l.is_ternary())
            .map(LayerSummary::weights)
            .sum()
    }

    /// Weights in linear layers on exactly `planes` trit-planes (0: float).
    pub fn weights_with_planes(&self, planes: usize) -> u64 {
        self.stored_layers()
            .filter(|l| l.planes() == planes)
            .map(LayerSummary::weights)
            .sum()
    }

    /// `ternary_weights / linear_weights` (0 for a model without linear weights).
    pub fn ternary_fraction(&self) -> f64 {
        self.ternary_weights() as f64 / self.linear_weights().max(1) as f64
    }

    /// Bytes of all linear layers.
    pub fn linear_bytes(&self) -> u64 {
        self.stored_layers().map(|l| l.bytes).sum()
    }

    /// Stored bits per linear weight, `8 · linear_bytes / linear_weights`.
    pub fn linear_bits_per_weight(&self) -> f64 {
        8.0 * self.linear_bytes() as f64 / self.linear_weights().max(1) as f64
    }

    /// Bytes of every weight (linear layers, embedding, norms).
    pub fn weight_bytes(&self) -> u64 {
        self.linear_bytes() + self.other_bytes
    }
}

/// `n` bytes as `12.3 MiB`.
pub fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", n / (1024.0 * 1024.0 * 1024.0))
    } else if n >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / (1024.0 * 1024.0))
    } else if n >= 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else {
        format!("{n} B")
    }
}

impl fmt::Display for FileSummary {
    /// A table of the layers, then the totals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = &self.path {
            writeln!(
                f,
                "{} ({FORMAT_NAME} v{})",
                p.display(),
                self.format_version
            )?;
        }
        let c = &self.config;
        writeln!(
            f,
            "llama: {} layers, hidden {}, ffn {}, heads {}/{} (kv), vocab {}{}",
            c.num_layers,
            c.hidden_size,
            c.intermediate_size,
            c.num_heads,
            c.num_kv_heads,
            c.vocab_size,
            if c.tie_word_embeddings {
                ", tied head"
            } else {
                ""
            }
        )?;
        writeln!(
            f,
            "{:<36} {:>11} {:<16} {:>7} {:>9} {:>10}",
            "layer", "shape", "format", "zeros", "bits/w", "bytes"
        )?;
        for l in &self.layers {
            let zeros = l
                .zero_fraction
                .map_or_else(|| "-".to_string(), |z| format!("{:.1}%", 100.0 * z));
            let (bits, bytes) = if l.bytes == 0 {
                ("tied".to_string(), "-".to_string())
            } else {
                (format!("{:.3}", l.bits_per_weight()), human_bytes(l.bytes))
            };
            writeln!(
                f,
                "{:<36} {:>11} {:<16} {:>7} {:>9} {:>10}",
                l.name,
                format!("{}x{}", l.rows, l.cols),
                l.format.to_string(),
                zeros,
                bits,
                bytes
            )?;
        }
        f.write_str(&self.totals())
    }
}

impl FileSummary {
    /// The two total lines that end the [`Display`](fmt::Display) table: layer counts and
    /// ternary share, then bytes and bits per weight.
    pub fn totals(&self) -> String {
        let ternary = self.stored_layers().filter(|l| l.is_ternary()).count();
        let two = self.stored_layers().filter(|l| l.planes() == 2).count();
        let planes = if two == 0 {
            String::new()
        } else {
            format!(
                " ({two} on two trit-planes: {:.1}% of the linear weights)",
                100.0 * self.weights_with_planes(2) as f64 / self.linear_weights().max(1) as f64
            )
        };
        format!(
            "linear layers: {} ternary{planes}, {} float; {:.1}% of {} linear weights ternary\n\
             linear weights: {} ({:.3} bits/weight); embedding and norms: {}; all weights: {}; \
             file: {}\n",
            ternary,
            self.stored_layers().count() - ternary,
            100.0 * self.ternary_fraction(),
            self.linear_weights(),
            human_bytes(self.linear_bytes()),
            self.linear_bits_per_weight(),
            human_bytes(self.other_bytes),
            human_bytes(self.weight_bytes()),
            human_bytes(self.file_bytes)
        )
    }
}

impl Contents {
    pub(super) fn summary(&self, path: Option<&Path>) -> FileSummary {
        let mut layers = Vec::with_capacity(self.linears.len() + 1);
        for (name, l) in &self.linears {
            layers.push(match l {
                StoredLinear::Ternary {
                    matrix: m,
                    bias,
                    input_scale,
                } => {
                    // Planes and scales of every plane pair, then the vectors.
                    let bytes = (m.storage_bytes()
                        + 4 * (bias.as_ref().map_or(0, Vec::len)
                            + input_scale.as_ref().map_or(0, Vec::len)))
                        as u64;
                    let (layout, bias, input_scale) =
                        (m.layout(), bias.is_some(), input_scale.is_some());
                    LayerSummary {
                        name: name.clone(),
                        rows: m.rows(),
                        cols: m.cols(),
                        format: match m {
                            LinearWeights::One(_) => StoredFormat::Ternary {
                                layout,
                                bias,
                                input_scale,
                            },
                            LinearWeights::Two(_) => StoredFormat::TwoPlanes {
                                layout,
                                bias,
                                input_scale,
                            },
                        },
                        zero_fraction: Some(zero_fraction(m)),
                        bytes,
                    }
                }
                StoredLinear::Float(t) => {
                    let dtype = float_dtype_for(&t.data);
                    LayerSummary {
                        name: name.clone(),
                        rows: t.shape[0],
                        cols: t.shape[1],
                        format: StoredFormat::Float(dtype),
                        zero_fraction: None,
                        bytes: dtype.bytes() * t.data.len() as u64,
                    }
                }
            });
        }
        let c = &self.config;
        let mut others = Vec::new();
        let mut other_bytes = 0;
        if let Some(w) = &self.embed_f16 {
            other_bytes += 2 * w.len() as u64;
            others.push((
                EMBED.to_string(),
                vec![c.vocab_size, c.hidden_size],
                FloatDtype::F16,
            ));
        }
        for (name, t) in &self.others {
            let dtype = if is_norm(name) {
                FloatDtype::F32
            } else {
                float_dtype_for(&t.data)
            };
            other_bytes += dtype.bytes() * t.data.len() as u64;
            others.push((name.clone(), t.shape.clone(), dtype));
        }
        if c.tie_word_embeddings && !self.linears.iter().any(|(n, _)| n == LM_HEAD) {
            let dtype = others
                .first()
                .map_or(FloatDtype::F32, |(_, _, dtype)| *dtype);
            layers.push(LayerSummary {
                name: LM_HEAD.to_string(),
                rows: c.vocab_size,
                cols: c.hidden_size,
                format: StoredFormat::Float(dtype),
                zero_fraction: None,
                bytes: 0,
            });
        }
        FileSummary {
            path: path.map(Path::to_path_buf),
            format_version: self.version.to_string(),
            config: c.clone(),
            layers,
            others,
            other_bytes,
            file_bytes: self.file_bytes,
        }
    }
}

/// Fraction of weights that are zero in every plane, `(n − nonzero) / n` (0 when empty).
fn zero_fraction(m: &LinearWeights) -> f64 {
    let planes = m.plane_matrices();
    let words = planes.first().map_or(0, |p| p.plus().len());
    let nonzero: u64 = (0..words)
        .map(|w| {
            let any = planes
                .iter()
                .fold(0u32, |a, p| a | p.plus()[w] | p.minus()[w]);
            u64::from(any.count_ones())
        })
        .sum();
    let n = (m.rows() * m.cols()) as u64;
    if n == 0 {
        0.0
    } else {
        (n - nonzero) as f64 / n as f64
    }
}

/// Reads and validates a converted-model file and says what it holds (layers, formats, bits
/// per weight, bytes) without building the model.
pub fn inspect(path: impl AsRef<Path>) -> Result<FileSummary> {
    let path = path.as_ref();
    Ok(Contents::from_file(path)?.summary(Some(path)))
}

/// [`inspect`] on bytes.
pub fn inspect_bytes(bytes: &[u8]) -> Result<FileSummary> {
    Ok(Contents::from_bytes(bytes, None)?.summary(None))
}
