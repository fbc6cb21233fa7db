//! What a model path holds, decided by its content and never by its name.
//!
//! - a directory with `config.json`: a Hugging Face checkpoint ([`Format::HfDir`]);
//! - a file starting with the magic `GGUF`: [`Format::Gguf`];
//! - a file starting with a little-endian `u64` header length `n` followed by `n` bytes of a
//!   JSON object: safetensors. When its `__metadata__.format` is `"ternary-model"` it is a
//!   model written by `ternary quantize` ([`Format::ConvertedModel`]), otherwise a Hugging
//!   Face weight file ([`Format::Safetensors`]);
//! - a JSON object with a `weight_map`: the index of a sharded checkpoint
//!   (`model.safetensors.index.json`, [`Format::ShardedIndex`]).
//!
//! Anything else is an error that says what the file looked like.

use crate::error::{ModelError, Result};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The `__metadata__.format` value of models written by `ternary quantize`
/// (`ternary_convert::model_file::FORMAT_NAME`).
pub const CONVERTED_FORMAT_NAME: &str = "ternary-model";

/// Safetensors headers larger than this are not read when sniffing (real ones are < 10 MiB).
const MAX_HEADER: u64 = 100 << 20;

/// Index files larger than this are not parsed when sniffing.
const MAX_INDEX: u64 = 64 << 20;

/// A model file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Format {
    /// A GGUF file (llama.cpp).
    Gguf,
    /// One Hugging Face safetensors weight file.
    Safetensors,
    /// A ternary model file written by `ternary quantize` (safetensors with our metadata).
    ConvertedModel,
    /// A Hugging Face checkpoint directory (`config.json` and safetensors weights).
    HfDir,
    /// A sharded checkpoint's index (`model.safetensors.index.json`).
    ShardedIndex,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Gguf => "GGUF file",
            Self::Safetensors => "safetensors weight file",
            Self::ConvertedModel => "converted ternary model",
            Self::HfDir => "Hugging Face checkpoint directory",
            Self::ShardedIndex => "sharded checkpoint index",
        })
    }
}

impl Format {
    /// The Hugging Face checkpoint directory a path of this format belongs to: the directory
    /// itself, or the one holding the weight file or index (which must hold `config.json`).
    pub fn checkpoint_dir(self, path: &Path) -> Option<PathBuf> {
        match self {
            Self::HfDir => Some(path.to_path_buf()),
            Self::Safetensors | Self::ShardedIndex => {
                let parent = path.parent()?;
                let parent = if parent.as_os_str().is_empty() {
                    Path::new(".")
                } else {
                    parent
                };
                Some(parent.to_path_buf())
            }
            Self::Gguf | Self::ConvertedModel => None,
        }
    }
}

fn io_err(path: &Path, source: std::io::Error) -> ModelError {
    ModelError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn unknown(path: &Path, why: impl fmt::Display) -> ModelError {
    ModelError::Input(format!(
        "{}: not a model this program reads ({why}); expected a GGUF file, a Hugging Face \
         checkpoint directory (config.json + safetensors), a safetensors file, a \
         model.safetensors.index.json, or a model written by `ternary quantize`",
        path.display()
    ))
}

/// Decides the [`Format`] of `path` from its content.
pub fn sniff(path: impl AsRef<Path>) -> Result<Format> {
    let path = path.as_ref();
    let meta = std::fs::metadata(path).map_err(|e| io_err(path, e))?;
    if meta.is_dir() {
        return if path.join("config.json").is_file() {
            Ok(Format::HfDir)
        } else {
            Err(unknown(path, "a directory without config.json"))
        };
    }
    let len = meta.len();
    let mut f = std::fs::File::open(path).map_err(|e| io_err(path, e))?;
    let mut head = Vec::with_capacity(8);
    (&mut f)
        .take(8)
        .read_to_end(&mut head)
        .map_err(|e| io_err(path, e))?;
    if head.starts_with(b"GGUF") {
        return Ok(Format::Gguf);
    }
    if let Some(old) = [&b"lmgg"[..], b"fmgg", b"tjgg", b"ggml", b"ggjt", b"ggmf"]
        .iter()
        .find(|m| head.starts_with(m))
    {
        return Err(unknown(
            path,
            format!(
                "a pre-GGUF llama.cpp file (magic {:?}): convert it to GGUF with llama.cpp",
                String::from_utf8_lossy(old)
            ),
        ));
    }
    if head.len() == 8 {
        let n = u64::from_le_bytes(head[..8].try_into().unwrap_or([0; 8]));
        let next = {
            let mut b = Vec::with_capacity(1);
            (&mut f)
                .take(1)
                .read_to_end(&mut b)
                .map_err(|e| io_err(path, e))?;
            b.first().copied()
        };
        if (2..=MAX_HEADER).contains(&n) && n > len - 8 && matches!(next, None | Some(b'{')) {
            return Err(ModelError::Safetensors(format!(
                "{}: truncated: the header says {n} bytes of JSON, the file has {} after the \
                 length",
                path.display(),
                len - 8
            )));
        }
        if (2..=MAX_HEADER).contains(&n) && n <= len - 8 && next == Some(b'{') {
            let mut header = vec![b'{'];
            (&mut f)
                .take(n - 1)
                .read_to_end(&mut header)
                .map_err(|e| io_err(path, e))?;
            let doc: serde_json::Value = serde_json::from_slice(&header).map_err(|e| {
                ModelError::Safetensors(format!("{}: header is not JSON: {e}", path.display()))
            })?;
            let format = doc
                .get("__metadata__")
                .and_then(|m| m.get("format"))
                .and_then(|v| v.as_str());
            return Ok(if format == Some(CONVERTED_FORMAT_NAME) {
                Format::ConvertedModel
            } else {
                Format::Safetensors
            });
        }
    }
    if head.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{') {
        if len > MAX_INDEX {
            return Err(unknown(path, format!("a {len}-byte JSON file")));
        }
        let text = std::fs::read(path).map_err(|e| io_err(path, e))?;
        let doc: serde_json::Value = serde_json::from_slice(&text).map_err(|e| {
            unknown(
                path,
                format!("a file starting with '{{' that is not JSON: {e}"),
            )
        })?;
        if doc.get("weight_map").is_some_and(|m| m.is_object()) {
            return Ok(Format::ShardedIndex);
        }
        if doc.get("model_type").is_some() {
            return Err(unknown(
                path,
                "a config.json: pass the directory that holds it",
            ));
        }
        return Err(unknown(path, "a JSON file without a 'weight_map'"));
    }
    let shown: Vec<String> = head.iter().map(|b| format!("{b:02x}")).collect();
    Err(unknown(
        path,
        if head.is_empty() {
            "an empty file".to_string()
        } else {
            format!("it starts with the bytes {}", shown.join(" "))
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    use ternary_testkit::TempDir;

    fn tmp(dir: &TempDir, name: &str, bytes: &[u8]) -> PathBuf {
        let p = dir.path(name);
        std::fs::write(&p, bytes).unwrap();
        p
    }

    fn safetensors(meta: &str) -> Vec<u8> {
        let header = format!(
            r#"{{"__metadata__":{meta},"x":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}}"#
        );
        let mut b = (header.len() as u64).to_le_bytes().to_vec();
        b.extend_from_slice(header.as_bytes());
        b.extend_from_slice(&[0; 4]);
        b
    }

    #[test]
    fn formats_should_be_told_by_content_whatever_the_name() {
        let d = TempDir::new("sniff-formats");
        let gguf = tmp(&d, "model.safetensors", b"GGUF\x03\0\0\0rest");
        assert_eq!(sniff(&gguf).unwrap(), Format::Gguf);
        let conv = tmp(
            &d,
            "weights.gguf",
            &safetensors(r#"{"format":"ternary-model"}"#),
        );
        assert_eq!(sniff(&conv).unwrap(), Format::ConvertedModel);
        let hf = tmp(&d, "x.bin", &safetensors(r#"{"format":"pt"}"#));
        assert_eq!(sniff(&hf).unwrap(), Format::Safetensors);
        let idx = tmp(
            &d,
            "index.txt",
            br#" {"metadata":{},"weight_map":{"a":"b"}}"#,
        );
        assert_eq!(sniff(&idx).unwrap(), Format::ShardedIndex);
        let dir = d.path("hf");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("config.json"), "{}").unwrap();
        assert_eq!(sniff(&dir).unwrap(), Format::HfDir);
        assert_eq!(Format::HfDir.checkpoint_dir(&dir), Some(dir.clone()));
        assert_eq!(
            Format::ShardedIndex.checkpoint_dir(&idx).as_deref(),
            idx.parent()
        );
    }

    #[test]
    fn other_content_should_be_a_clear_error() {
        let d = TempDir::new("sniff-errors");
        for (name, bytes, says) in [
            ("empty", &b""[..], "an empty file"),
            ("text", b"hello world", "68 65 6c 6c"),
            ("old", b"tjggxxxx", "pre-GGUF"),
            ("cut", b"\x40\0\0\0\0\0\0\0{\"a\"", "truncated"),
            ("config", br#"{"model_type":"llama"}"#, "config.json"),
            ("json", b"{not json", "not JSON"),
        ] {
            let p = tmp(&d, name, bytes);
            let e = sniff(&p).unwrap_err().to_string();
            assert!(e.contains(says), "{name}: {e}");
        }
        let e = sniff("/nonexistent/model").unwrap_err().to_string();
        assert!(e.contains("/nonexistent/model"), "{e}");
        let empty_dir = d.path("empty-dir");
        std::fs::create_dir_all(&empty_dir).unwrap();
        assert!(
            sniff(&empty_dir)
                .unwrap_err()
                .to_string()
                .contains("config.json")
        );
    }
}
