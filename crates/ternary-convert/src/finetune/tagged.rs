//! The safetensors files of fine-tuning (checkpoints, teacher caches): tensors, plus a format
//! name and one JSON description in the metadata; written atomically with a canonical header.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{SafeTensors, TensorView};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{ConvertError, Result};

/// Writes `tensors` to `path` with `format` under `"format"` and `description` as JSON under
/// `key`; `what` names the file in errors ("checkpoint").
pub(super) fn write(
    path: &Path,
    what: &str,
    format: &str,
    key: &str,
    description: &impl Serialize,
    tensors: Vec<(String, TensorView<'_>)>,
) -> Result<()> {
    let json = serde_json::to_string(description)
        .map_err(|e| ConvertError::Invalid(format!("cannot encode the {what}: {e}")))?;
    let info: HashMap<String, String> = [
        ("format".to_string(), format.to_string()),
        (key.to_string(), json),
    ]
    .into_iter()
    .collect();
    let bytes = safetensors::serialize(tensors, Some(info))
        .map_err(|e| ConvertError::Invalid(format!("cannot serialize the {what}: {e}")))?;
    let bytes = ternary_core::io::canonical_header(bytes)?;
    ternary_core::io::write_atomic(path, &bytes)?;
    Ok(())
}

/// Reads a file [`write`] wrote: its bytes (for [`SafeTensors::deserialize`]) and its
/// description.
///
/// # Errors
/// I/O, not safetensors, another format, an unreadable description.
pub(super) fn read<M: DeserializeOwned>(
    path: &Path,
    what: &str,
    format: &str,
    key: &str,
) -> Result<(Vec<u8>, M)> {
    let bad = |m: String| ConvertError::Format(format!("{}: {m}", path.display()));
    let bytes = std::fs::read(path).map_err(|source| ConvertError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let (_, header) =
        SafeTensors::read_metadata(&bytes).map_err(|e| bad(format!("not a {what} ({e})")))?;
    let info = header.metadata().clone().unwrap_or_default();
    if info.get("format").map(String::as_str) != Some(format) {
        return Err(bad(format!("not a {format} {what}")));
    }
    let meta = serde_json::from_str(info.get(key).map_or("", String::as_str))
        .map_err(|e| bad(format!("unreadable {key} ({e})")))?;
    Ok((bytes, meta))
}
