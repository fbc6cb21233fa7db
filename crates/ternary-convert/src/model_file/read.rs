//! Reading: safetensors bytes validated into [`Contents`], then a model on a Burn backend.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use half::f16;
use std::path::Path;

use safetensors::{Dtype, SafeTensors};
use ternary_core::io::{le_f32, le_u32};
use ternary_core::{ScaleLayout, Scales, TernaryMatrix, TwoPlaneMatrix, words_per_row};
use ternary_layers::{LinearWeights, TernaryBackend, TernaryLinear};
use ternary_models::weights::{HostTensor, WeightSource};
use ternary_models::{LinearImpl, Llama, LlamaConfig, LoadedModel, Tokenizer};

use super::schema::*;
use crate::error::{ConvertError, Result};

impl Contents {
    /// Parses and validates safetensors bytes; `path` names the file in errors.
    pub(super) fn from_bytes(bytes: &[u8], path: Option<&Path>) -> Result<Self> {
        Self::parse(bytes, path, &|_, b, visit| {
            visit(b);
            Ok(())
        })
    }

    /// Parses and validates the file at `path`, reading one tensor at a time: the header is
    /// read into a zero-filled buffer of the file's length (a zeroed allocation that large is
    /// fresh pages, never touched here, so it takes no memory), the safetensors checks run on
    /// it, and each tensor's bytes are read from the file at its offset when it is parsed.
    pub(super) fn from_file(path: &Path) -> Result<Self> {
        Self::from_file_in_chunks(path, 1 << 20)
    }

    /// [`Contents::from_file`] reading `chunk` bytes at a time, rounded down to a multiple of 4
    /// (at least 4): a chunk then never splits an f32, f16 or u32 element.
    fn from_file_in_chunks(path: &Path, chunk: usize) -> Result<Self> {
        use std::io::{Read, Seek, SeekFrom};
        let chunk = (chunk / 4).max(1) * 4;
        let io = |source| ConvertError::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = std::fs::File::open(path).map_err(io)?;
        let len = usize::try_from(file.metadata().map_err(io)?.len())
            .map_err(|_| ConvertError::Format(format!("{}: file too large", path.display())))?;
        let mut buf = vec![0u8; len];
        let head = len.min(8);
        file.read_exact(&mut buf[..head]).map_err(io)?;
        let header_len = buf
            .get(..8)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map_or(0, u64::from_le_bytes);
        // The JSON header; a claim longer than the file is left to the checks to report.
        let header_end = usize::try_from(header_len)
            .ok()
            .and_then(|n| n.checked_add(8))
            .map_or(len, |e| e.min(len));
        file.read_exact(&mut buf[head..header_end]).map_err(io)?;
        let file = RefCell::new(file);
        let base = buf.as_ptr() as usize;
        Self::parse(&buf, Some(path), &|name, view, visit| {
            let start = (view.as_ptr() as usize)
                .checked_sub(base)
                .filter(|s| s + view.len() <= len)
                .ok_or_else(|| {
                    ConvertError::Format(format!(
                        "{}: tensor {name:?} out of bounds",
                        path.display()
                    ))
                })?;
            let failed = |e: std::io::Error| {
                ConvertError::Format(format!("{}: reading tensor {name:?}: {e}", path.display()))
            };
            let mut f = file.borrow_mut();
            f.seek(SeekFrom::Start(start as u64)).map_err(failed)?;
            let mut chunk = vec![0u8; view.len().min(chunk)];
            let mut left = view.len();
            while left > 0 {
                let k = left.min(chunk.len());
                f.read_exact(&mut chunk[..k]).map_err(failed)?;
                visit(&chunk[..k]);
                left -= k;
            }
            Ok(())
        })
    }

    /// [`Contents::from_bytes`] with each tensor's bytes (a slice of `bytes`) visited through
    /// `data`: the slice itself, or the same bytes read from the file in chunks.
    fn parse(bytes: &[u8], path: Option<&Path>, data: &TensorData<'_>) -> Result<Self> {
        let err = |reason: String| match path {
            Some(p) => ConvertError::Format(format!("{}: {reason}", p.display())),
            None => ConvertError::Format(reason),
        };
        ternary_core::io::check_data_offsets(bytes).map_err(err)?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
        let st = SafeTensors::deserialize(bytes)
            .map_err(|e| err(format!("not a valid safetensors file: {e}")))?;
        let meta = header
            .metadata()
            .as_ref()
            .ok_or_else(|| err("no __metadata__ map: not a converted ternary model".into()))?;
        let key = |k: &str| {
            meta.get(k)
                .ok_or_else(|| err(format!("missing metadata key {k:?}")))
        };
        let format = key("format")?;
        if format != FORMAT_NAME {
            return Err(err(format!(
                "metadata \"format\" is {format:?}, expected {FORMAT_NAME:?}"
            )));
        }
        let version = match key("format_version")?.as_str() {
            FORMAT_VERSION => FORMAT_VERSION,
            FORMAT_VERSION_TWO_PLANES => FORMAT_VERSION_TWO_PLANES,
            other => {
                return Err(err(format!(
                    "unsupported format version {other:?} (this reader supports \
                     {FORMAT_VERSION:?} and {FORMAT_VERSION_TWO_PLANES:?})"
                )));
            }
        };
        let config = LlamaConfig::from_hf_json(key("config")?)
            .map_err(|e| err(format!("metadata \"config\": {e}")))?;
        // Every block stores at least nine tensors (two norms, seven linears): a config that
        // claims more blocks than the file holds is rejected before the list of expected
        // tensors (seven linears per claimed block) is built.
        let n_tensors = st.names().len();
        if config.num_layers > n_tensors / 9 {
            return Err(err(format!(
                "metadata \"config\" has {} layers, but the file holds only {n_tensors} tensors \
                 (at least 9 per layer)",
                config.num_layers
            )));
        }
        let tokenizer_json = key("tokenizer")?.clone();
        let table: BTreeMap<String, LayerMeta> =
            serde_json::from_str(key("layers")?).map_err(|e| {
                err(format!(
                    "metadata \"layers\" is not a valid layer table: {e}"
                ))
            })?;

        let mut claimed = BTreeSet::new();
        // A tensor's dtype and bytes, borrowed from the file (no copy until values are made).
        let mut fetch =
            |name: String, dtypes: &[Dtype], shape: &[usize]| -> Result<(Dtype, &[u8])> {
                let view = st
                    .tensor(&name)
                    .map_err(|_| err(format!("missing tensor {name:?}")))?;
                if !dtypes.contains(&view.dtype()) {
                    return Err(err(format!(
                        "tensor {name:?} has dtype {}, expected {}",
                        view.dtype(),
                        dtypes
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join(" or ")
                    )));
                }
                if view.shape() != shape {
                    return Err(err(format!(
                        "tensor {name:?} has shape {:?}, expected {shape:?}",
                        view.shape()
                    )));
                }
                claimed.insert(name);
                Ok((view.dtype(), view.data()))
            };
        // A tensor's values, converted chunk by chunk as its bytes are visited.
        let values = |name: &str, (dtype, view): (Dtype, &[u8])| -> Result<Vec<f32>> {
            let f16 = dtype == Dtype::F16;
            let mut out = Vec::with_capacity(view.len() / if f16 { 2 } else { 4 });
            data(name, view, &mut |c| {
                if f16 {
                    out.extend(
                        c.chunks_exact(2)
                            .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32()),
                    );
                } else {
                    out.extend(le_f32(c));
                }
            })?;
            Ok(out)
        };
        let words = |name: &str, (_, view): (Dtype, &[u8])| -> Result<Vec<u32>> {
            let mut out = Vec::with_capacity(view.len() / 4);
            data(name, view, &mut |c| out.extend(le_u32(c)))?;
            Ok(out)
        };
        let finite = |name: &str, v: Vec<f32>| -> Result<Vec<f32>> {
            match v.iter().position(|x| !x.is_finite()) {
                Some(i) => Err(err(format!(
                    "tensor {name:?} holds a non-finite value at index {i}"
                ))),
                None => Ok(v),
            }
        };

        let expected = expected_linears(&config);
        let expected_names: BTreeSet<&str> = expected.iter().map(|(n, ..)| n.as_str()).collect();
        if let Some(stray) = table.keys().find(|n| !expected_names.contains(n.as_str())) {
            return Err(err(format!(
                "the layer table names {stray:?}, which the model's config does not have"
            )));
        }
        let mut linears = Vec::with_capacity(expected.len());
        for (name, rows, cols) in expected {
            let Some(entry) = table.get(&name) else {
                if name == LM_HEAD && config.tie_word_embeddings {
                    continue; // the tied head is the embedding
                }
                return Err(err(format!("the layer table has no entry for {name:?}")));
            };
            let (r, c) = match entry {
                LayerMeta::Ternary { rows, cols, .. }
                | LayerMeta::TwoPlane { rows, cols, .. }
                | LayerMeta::Float { rows, cols } => (*rows, *cols),
            };
            if matches!(entry, LayerMeta::TwoPlane { .. }) && version == FORMAT_VERSION {
                return Err(err(format!(
                    "layer {name:?} has two trit-planes, which format version \
                     {FORMAT_VERSION:?} does not have (two-plane files are version \
                     {FORMAT_VERSION_TWO_PLANES:?})"
                )));
            }
            if (r, c) != (rows, cols) {
                return Err(err(format!(
                    "layer {name:?} is {r}x{c} in the layer table; the config says {rows}x{cols}"
                )));
            }
            let stored = match entry {
                LayerMeta::Float { .. } => {
                    let n = format!("{name}.weight");
                    let data = fetch(n.clone(), &[Dtype::F16, Dtype::F32], &[rows, cols])?;
                    StoredLinear::Float(HostTensor {
                        shape: vec![rows, cols],
                        data: finite(&n, values(&n, data)?)?,
                    })
                }
                LayerMeta::Ternary {
                    scale_layout,
                    group_size,
                    bias,
                    input_scale,
                    ..
                }
                | LayerMeta::TwoPlane {
                    scale_layout,
                    group_size,
                    bias,
                    input_scale,
                    ..
                } => {
                    let layout = match (scale_layout.as_str(), group_size) {
                        ("per_row", None) => ScaleLayout::PerRow,
                        ("per_group", Some(g)) => {
                            let l = ScaleLayout::PerGroup { group_size: *g };
                            l.validate()
                                .map_err(|e| err(format!("layer {name:?}: {e}")))?;
                            l
                        }
                        (other, g) => {
                            return Err(err(format!(
                                "layer {name:?}: scale layout {other:?} with group size {g:?} \
                                 (expected \"per_row\" without a group size or \"per_group\" \
                                 with one)"
                            )));
                        }
                    };
                    let wpr = words_per_row(cols);
                    let gpr = layout.groups_per_row(cols);
                    // Plane `suffix` ("" for the first, "2" for the second).
                    let mut plane = |suffix: &str| -> Result<TernaryMatrix> {
                        let (pn, mn) = (
                            format!("{name}.plus{suffix}"),
                            format!("{name}.minus{suffix}"),
                        );
                        let plus = words(&pn, fetch(pn.clone(), &[Dtype::U32], &[rows, wpr])?)?;
                        let minus = words(&mn, fetch(mn.clone(), &[Dtype::U32], &[rows, wpr])?)?;
                        let sn = format!("{name}.scales{suffix}");
                        let scales = finite(
                            &sn,
                            values(&sn, fetch(sn.clone(), &[Dtype::F32], &[rows, gpr])?)?,
                        )?;
                        TernaryMatrix::from_planes(
                            rows,
                            cols,
                            plus,
                            minus,
                            Scales::new(layout, scales),
                        )
                        .map_err(|e| {
                            let which = if suffix.is_empty() { "1" } else { suffix };
                            err(format!("layer {name:?}, plane {which}: {e}"))
                        })
                    };
                    let matrix: LinearWeights = match entry {
                        LayerMeta::TwoPlane { .. } => {
                            let high = plane("")?;
                            let low = plane("2")?;
                            TwoPlaneMatrix::new(high, low)
                                .map_err(|e| err(format!("layer {name:?}: {e}")))?
                                .into()
                        }
                        _ => plane("")?.into(),
                    };
                    let mut vector = |suffix: &str, len: usize, present: bool| -> Result<_> {
                        if !present {
                            return Ok(None);
                        }
                        let n = format!("{name}.{suffix}");
                        let v = values(&n, fetch(n.clone(), &[Dtype::F32], &[len])?)?;
                        Ok(Some(finite(&n, v)?))
                    };
                    let bias = vector("bias", rows, *bias)?;
                    let input_scale = vector("input_scale", cols, *input_scale)?;
                    StoredLinear::Ternary {
                        matrix,
                        bias,
                        input_scale,
                    }
                }
            };
            linears.push((name, stored));
        }
        let mut others = Vec::new();
        let mut embed_f16 = None;
        for (name, shape) in expected_others(&config) {
            let dtypes: &[Dtype] = if is_norm(&name) {
                &[Dtype::F32]
            } else {
                &[Dtype::F16, Dtype::F32]
            };
            let blob = fetch(name.clone(), dtypes, &shape)?;
            if name == EMBED && blob.0 == Dtype::F16 {
                let mut out = Vec::with_capacity(blob.1.len() / 2);
                data(&name, blob.1, &mut |c| {
                    out.extend(c.chunks_exact(2).map(|b| f16::from_le_bytes([b[0], b[1]])));
                })?;
                if let Some(i) = out.iter().position(|x| !x.is_finite()) {
                    return Err(err(format!(
                        "tensor {name:?} holds a non-finite value at index {i}"
                    )));
                }
                embed_f16 = Some(out);
                continue;
            }
            let data = finite(&name, values(&name, blob)?)?;
            others.push((name, HostTensor { shape, data }));
        }
        let mut names = st.names();
        names.sort_unstable();
        if let Some(stray) = names.into_iter().find(|n| !claimed.contains(*n)) {
            return Err(err(format!(
                "tensor {stray:?} is not part of the model the metadata describes"
            )));
        }
        Tokenizer::from_json(&tokenizer_json)
            .map_err(|e| err(format!("metadata \"tokenizer\": {e}")))?;
        Ok(Self {
            version,
            config,
            tokenizer_json,
            linears,
            others,
            embed_f16,
            file_bytes: bytes.len() as u64,
        })
    }
}

/// Visits a tensor's bytes, given its name and its slice of the parsed buffer, in order and in
/// one or more chunks.
type TensorData<'f> = dyn Fn(&str, &[u8], &mut dyn FnMut(&[u8])) -> Result<()> + 'f;

/// Loads a file written by [`save`](super::save): the model (ternary layers as
/// [`TernaryLinear`], float
/// layers as the backend's default float linear) and its tokenizer.
pub fn load<B: TernaryBackend>(
    path: impl AsRef<Path>,
    device: &B::Device,
) -> Result<LoadedModel<B>> {
    // Tensors are read one at a time: the file is never held whole.
    build(Contents::from_file(path.as_ref())?, device)
}

/// [`load`] from bytes.
pub fn load_bytes<B: TernaryBackend>(bytes: &[u8], device: &B::Device) -> Result<LoadedModel<B>> {
    build(Contents::from_bytes(bytes, None)?, device)
}

/// Serves the file's float tensors under their Hugging Face names. Ternary layers, and a float
/// head stored under a tied config, are placeholders ([`WeightSource::placeholder`]): they are
/// put in right after building. The embedding and norms are handed over (moved, not copied):
/// each is asked for once.
struct FileWeights<'a> {
    linears: &'a [(String, StoredLinear)],
    others: RefCell<HashMap<String, Option<HostTensor>>>,
    /// The embedding as the file's `f16`, until handed over.
    embed_f16: RefCell<Option<Vec<f16>>>,
    config: &'a LlamaConfig,
    tied: bool,
}

impl FileWeights<'_> {
    fn linear(&self, name: &str) -> Option<&StoredLinear> {
        let layer = name.strip_suffix(".weight")?;
        self.linears
            .iter()
            .find(|(n, _)| n == layer)
            .map(|(_, l)| l)
    }
}

impl WeightSource for FileWeights<'_> {
    fn tensor(&self, name: &str) -> ternary_models::Result<HostTensor> {
        if name == EMBED
            && let Some(w) = self.embed_f16.borrow_mut().take()
        {
            return Ok(HostTensor {
                shape: vec![self.config.vocab_size, self.config.hidden_size],
                data: w.iter().map(|v| v.to_f32()).collect(),
            });
        }
        if let Some(slot) = self.others.borrow_mut().get_mut(name) {
            return slot.take().ok_or_else(|| {
                ternary_models::ModelError::Config(format!(
                    "tensor '{name}' was asked for twice while the model was built"
                ))
            });
        }
        match self.linear(name) {
            Some(StoredLinear::Float(t)) => Ok(t.clone()),
            Some(StoredLinear::Ternary { .. }) => Err(ternary_models::ModelError::Config(format!(
                "tensor '{name}' is stored ternary: it has no float weight to read"
            ))),
            None => Err(ternary_models::ModelError::MissingTensor(name.to_string())),
        }
    }

    fn contains(&self, name: &str) -> bool {
        self.others.borrow().contains_key(name)
            || self.linear(name).is_some()
            || (name == EMBED && self.embed_f16.borrow().is_some())
    }

    fn half(&self, name: &str) -> ternary_models::Result<Option<Vec<f16>>> {
        Ok(if name == EMBED {
            self.embed_f16.borrow_mut().take()
        } else {
            None
        })
    }

    fn placeholder(&self, name: &str) -> bool {
        match self.linear(name) {
            Some(StoredLinear::Ternary { .. }) => true,
            Some(StoredLinear::Float(_)) => self.tied && name == format!("{LM_HEAD}.weight"),
            None => false,
        }
    }
}

fn build<B: TernaryBackend>(contents: Contents, device: &B::Device) -> Result<LoadedModel<B>> {
    let tokenizer = Tokenizer::from_json(&contents.tokenizer_json)?;
    let linear_impl = LinearImpl::default_for::<B>();
    let mut model = Llama::<B>::from_weights_with(
        contents.config.clone(),
        &FileWeights {
            linears: &contents.linears,
            others: RefCell::new(
                contents
                    .others
                    .into_iter()
                    .map(|(n, t)| (n, Some(t)))
                    .collect(),
            ),
            embed_f16: RefCell::new(contents.embed_f16),
            config: &contents.config,
            tied: contents.config.tie_word_embeddings,
        },
        device,
        linear_impl,
    )?;
    let tied = contents.config.tie_word_embeddings;
    let mut stored: HashMap<String, StoredLinear> = contents.linears.into_iter().collect();
    for (name, slot) in model.linears_mut() {
        match stored.remove(&name) {
            Some(StoredLinear::Ternary {
                matrix,
                bias,
                input_scale,
            }) => {
                let mut layer = TernaryLinear::<B>::from_weights(matrix, device)?;
                if let Some(b) = bias {
                    layer = layer.with_bias(b)?;
                }
                if let Some(d) = input_scale {
                    layer = layer.with_input_scale(d)?;
                }
                *slot = Box::new(layer);
            }
            // The builder ignores `lm_head.weight` when the head is tied; a float head that
            // differs from the embedding was stored, so put it in.
            Some(StoredLinear::Float(t)) if name == LM_HEAD && tied => {
                let (rows, cols) = (t.shape[0], t.shape[1]);
                *slot = linear_impl.build::<B>("lm_head.weight", t.data, rows, cols, device)?;
            }
            Some(StoredLinear::Float(_)) | None => {}
        }
    }
    if let Some(name) = stored.keys().next() {
        return Err(ConvertError::Format(format!(
            "layer {name:?} is not a linear layer of the model"
        )));
    }
    Ok(LoadedModel { model, tokenizer })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ternary_core::quant::{QuantConfig, quantize};
    use ternary_layers::{Cpu, to_rows};

    #[test]
    fn chunked_file_reads_should_equal_the_bytes() {
        // The tiny fixture with its first layer ternary, read back in 12-byte chunks (every
        // tensor crosses chunk boundaries) and whole: the parsed contents are identical.
        let dir = ternary_testkit::fixture_path("tiny-llama");
        let mut m = ternary_models::load_safetensors_dir::<Cpu>(&dir, &Default::default()).unwrap();
        {
            let mut linears = m.model.linears_mut();
            let slot = &mut linears[0].1;
            let (rows, cols) = (slot.out_features(), slot.in_features());
            let w = to_rows(slot.weight()).unwrap();
            let (q, _) = quantize(&w, rows, cols, &QuantConfig::default()).unwrap();
            **slot = Box::new(TernaryLinear::<Cpu>::new(q, &Default::default()).unwrap());
        }
        let bytes = super::super::to_bytes(&m.model, &m.tokenizer).unwrap();
        let path = std::env::temp_dir().join(format!(
            "ternary-chunked-{}.safetensors",
            std::process::id()
        ));
        std::fs::write(&path, &bytes).unwrap();
        let whole = format!("{:?}", Contents::from_bytes(&bytes, None).unwrap());
        for chunk in [0, 4, 7, 12, 1 << 20] {
            let read = format!("{:?}", Contents::from_file_in_chunks(&path, chunk).unwrap());
            assert!(read == whole, "chunk {chunk}");
        }
        std::fs::remove_file(&path).unwrap();
    }
}
