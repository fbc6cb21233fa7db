//! Hugging Face safetensors checkpoints: one `model.safetensors`, or the shards a
//! `model.safetensors.index.json` names, with transformers' packed BitNet weights.
//!
//! A packed weight (`quantization_config.quant_method = "bitnet"`) is `uint8 [out/4, in]`
//! holding 4 trits per byte ([`unpack_ternary`]) next to a one-element `<module>.weight_scale`;
//! [`WeightSource::ternary`] decodes it straight into bit planes. Every shard is read whole
//! and validated (header, offsets) before use: no allocation beyond the files' sizes except
//! the decoded tensors the model asks for.

use crate::bitnet::unpack_ternary;
use crate::error::{ModelError, Result};
use crate::loader::SafetensorsWeights;
use crate::weights::{HostTensor, TernaryWeight, WeightSource};
use safetensors::Dtype;
use std::collections::HashMap;
use std::path::Path;

/// The index file of a sharded checkpoint.
pub const INDEX_FILE: &str = "model.safetensors.index.json";
/// The single file of an unsharded checkpoint.
pub const SINGLE_FILE: &str = "model.safetensors";

/// The weights of a Hugging Face checkpoint, over one or more safetensors files.
#[derive(Debug)]
pub struct SafetensorsCheckpoint {
    /// `(file name, weights)` per shard.
    shards: Vec<(String, SafetensorsWeights)>,
    /// Tensor name → shard, from the index; `None` for a single file.
    map: Option<HashMap<String, usize>>,
}

impl SafetensorsCheckpoint {
    /// Opens the checkpoint in `dir`: the shards of [`INDEX_FILE`] when it exists, else
    /// [`SINGLE_FILE`].
    pub fn open_dir(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let index = dir.join(INDEX_FILE);
        if index.is_file() {
            let text = std::fs::read_to_string(&index).map_err(|source| ModelError::Io {
                path: index.clone(),
                source,
            })?;
            Self::from_index(&text, |file| {
                SafetensorsWeights::open(dir.join(file)).map_err(|e| match e {
                    ModelError::Safetensors(m) => ModelError::Safetensors(format!("{file}: {m}")),
                    e => e,
                })
            })
        } else {
            Ok(Self::single(
                SINGLE_FILE,
                SafetensorsWeights::open(dir.join(SINGLE_FILE))?,
            ))
        }
    }

    /// A checkpoint of one file (`name` is used in messages).
    pub fn single(name: &str, weights: SafetensorsWeights) -> Self {
        Self {
            shards: vec![(name.to_string(), weights)],
            map: None,
        }
    }

    /// A sharded checkpoint from the text of its index and a function opening a shard by file
    /// name. The index is `{"weight_map": {tensor: file, ...}, ...}`; every file must be a
    /// plain file name (no directories), and every tensor must be in the shard it is mapped to.
    pub fn from_index(
        index: &str,
        mut open: impl FnMut(&str) -> Result<SafetensorsWeights>,
    ) -> Result<Self> {
        let bad = |m: String| ModelError::Safetensors(format!("{INDEX_FILE}: {m}"));
        let doc: serde_json::Value =
            serde_json::from_str(index).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        let map = doc
            .get("weight_map")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| bad("no 'weight_map' object".into()))?;
        let mut files: Vec<&str> = Vec::new();
        let mut by_name = HashMap::with_capacity(map.len());
        for (tensor, file) in map {
            let file = file
                .as_str()
                .ok_or_else(|| bad(format!("'{tensor}' maps to {file}, not a file name")))?;
            if file.is_empty()
                || file.contains(['/', '\\'])
                || file == "."
                || file == ".."
                || !file.ends_with(".safetensors")
            {
                return Err(bad(format!(
                    "'{tensor}' maps to {file:?}, not a .safetensors file name in the directory"
                )));
            }
            let shard = match files.iter().position(|&f| f == file) {
                Some(i) => i,
                None => {
                    files.push(file);
                    files.len() - 1
                }
            };
            by_name.insert(tensor.clone(), shard);
        }
        if files.is_empty() {
            return Err(bad("the weight map is empty".into()));
        }
        let mut shards = Vec::with_capacity(files.len());
        for f in &files {
            shards.push((f.to_string(), open(f)?));
        }
        for (tensor, &i) in &by_name {
            let (file, w) = &shards[i];
            if !w.contains_raw(tensor) {
                return Err(bad(format!(
                    "the index puts '{tensor}' in {file}, which does not hold it"
                )));
            }
        }
        Ok(Self {
            shards,
            map: Some(by_name),
        })
    }

    /// Number of files.
    pub fn num_shards(&self) -> usize {
        self.shards.len()
    }

    fn shard(&self, name: &str) -> Option<&SafetensorsWeights> {
        match &self.map {
            Some(m) => m.get(name).map(|&i| &self.shards[i].1),
            None => self.shards.first().map(|(_, w)| w),
        }
    }

    fn shard_or_missing(&self, name: &str) -> Result<&SafetensorsWeights> {
        self.shard(name)
            .ok_or_else(|| ModelError::MissingTensor(name.to_string()))
    }
}

impl WeightSource for SafetensorsCheckpoint {
    fn tensor(&self, name: &str) -> Result<HostTensor> {
        self.shard_or_missing(name)?.tensor(name)
    }

    fn contains(&self, name: &str) -> bool {
        self.shard(name).is_some_and(|w| w.contains(name))
    }

    /// A `uint8` weight `[out/4, in]` is transformers' packed ternary layout; its
    /// `weight_scale` (one element, any float type) is returned alongside. Other types: `None`.
    fn ternary(&self, name: &str) -> Result<Option<TernaryWeight>> {
        let Some(w) = self.shard(name) else {
            return Ok(None);
        };
        w.ternary(name, |scale_name| self.tensor(scale_name))
    }
}

impl SafetensorsWeights {
    /// The packed ternary weight `name` (see [`SafetensorsCheckpoint`]'s `ternary`), its
    /// `weight_scale` read through `scale`.
    pub(crate) fn ternary(
        &self,
        name: &str,
        scale: impl Fn(&str) -> Result<HostTensor>,
    ) -> Result<Option<TernaryWeight>> {
        let Some((dtype, shape, bytes)) = self.raw(name)? else {
            return Ok(None);
        };
        if dtype != Dtype::U8 {
            return Ok(None);
        }
        let [p, cols] = shape[..] else {
            return Err(ModelError::Shape {
                name: name.to_string(),
                expected: vec![0, 0],
                found: shape,
            });
        };
        let rows = p.checked_mul(4).ok_or_else(|| ModelError::Shape {
            name: name.to_string(),
            expected: vec![p, cols],
            found: shape.clone(),
        })?;
        let matrix = unpack_ternary(name, bytes, rows, cols)?;
        let scale_name = name
            .strip_suffix("weight")
            .map(|p| format!("{p}weight_scale"))
            .ok_or_else(|| ModelError::MissingTensor(format!("{name}_scale")))?;
        let t = scale(&scale_name)?;
        let [v] = t.data[..] else {
            return Err(ModelError::Shape {
                name: scale_name,
                expected: vec![1],
                found: t.shape,
            });
        };
        Ok(Some(TernaryWeight {
            matrix,
            weight_scale: Some(v),
        }))
    }
}
