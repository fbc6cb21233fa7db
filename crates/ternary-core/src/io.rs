//! Ternary matrices (and plain `f32` tensors) in safetensors files.
//!
//! The layout is specified in `docs/format.md`. In short, a matrix `N` is stored as
//!
//! - [`Storage::Planes`]: `N.plus`, `N.minus` — `U32 [rows, words_per_row]`, the in-memory
//!   planes verbatim (little-endian words, column `c` in word `c / 32`, bit `c % 32`);
//! - [`Storage::Packed`]: `N.packed` — `U8 [rows, ⌈cols / 5⌉]`, base-3 (see [`crate::pack`]);
//!
//! plus `N.scales` — `F32 [rows, groups_per_row]` — and the metadata keys `format = "ternary"`,
//! `format_version = "1"`, `N.storage`, `N.rows`, `N.cols`, `N.scale_layout`, `N.group_size`.
//! A float tensor `N` is the `F32` tensor `N` with `N.storage = "f32"`.
//!
//! Reading validates everything: a truncated or garbage file, a wrong dtype, a shape that
//! disagrees with the metadata, a missing tensor or key, an unknown version, both planes
//! set, padding bits, a non-finite scale or a packed byte above 242 all give
//! [`TernaryError::Format`] (or [`TernaryError::Io`] when the file cannot be read), never a
//! panic. Writing is atomic: the bytes go to a fresh temporary file in the target's directory,
//! which is flushed to disk and then renamed over the target.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use safetensors::{Dtype, SafeTensors, View};

use crate::error::{Result, TernaryError, check_finite};
use crate::matrix::{ScaleLayout, Scales, TernaryMatrix, words_per_row};
use crate::pack::{PackedTernary, bytes_per_row, pack};

/// Value of the metadata key [`KEY_FORMAT`].
pub const FORMAT_NAME: &str = "ternary";
/// Value of the metadata key [`KEY_VERSION`] written by, and the only one accepted by, this
/// version of the crate.
pub const FORMAT_VERSION: &str = "1";
/// Metadata key naming the format.
pub const KEY_FORMAT: &str = "format";
/// Metadata key holding the format version.
pub const KEY_VERSION: &str = "format_version";
/// Largest `rows` or `cols` a file may declare (`2^24`); bounds the work a tiny file can demand.
pub const MAX_DIM: usize = 1 << 24;

/// How the trits of a ternary matrix are stored in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Storage {
    /// The two bit-planes as `U32` tensors (2 bits per weight plus row padding to 64 columns);
    /// loads without decoding.
    #[default]
    Planes,
    /// Base-3, 5 trits per byte, one `U8` tensor (`8 · ⌈cols / 5⌉ / cols` bits per weight).
    Packed,
}

impl Storage {
    /// The value of the `<name>.storage` metadata key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Planes => STORAGE_PLANES,
            Self::Packed => STORAGE_PACKED,
        }
    }
}

const STORAGE_PLANES: &str = "planes";
const STORAGE_PACKED: &str = "packed";
const STORAGE_F32: &str = "f32";
const LAYOUT_PER_ROW: &str = "per_row";
const LAYOUT_PER_GROUP: &str = "per_group";

/// A dense row-major `f32` tensor of any shape with finite values (a layer kept in float).
#[derive(Debug, Clone, PartialEq)]
pub struct FloatTensor {
    shape: Vec<usize>,
    values: Vec<f32>,
}

impl FloatTensor {
    /// Builds a tensor; `values.len()` must equal `Π shape` and every value must be finite.
    pub fn new(shape: Vec<usize>, values: Vec<f32>) -> Result<Self> {
        let n = shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .ok_or_else(|| TernaryError::Shape(format!("shape {shape:?} overflows usize")))?;
        if values.len() != n {
            return Err(TernaryError::Shape(format!(
                "shape {shape:?} needs {n} values, got {}",
                values.len()
            )));
        }
        check_finite("float tensor", &values)?;
        Ok(Self { shape, values })
    }

    /// The shape.
    #[inline]
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The values, row-major.
    #[inline]
    pub fn values(&self) -> &[f32] {
        &self.values
    }

    /// Consumes the tensor into `(shape, values)`.
    pub fn into_parts(self) -> (Vec<usize>, Vec<f32>) {
        (self.shape, self.values)
    }
}

/// A tensor read from a file.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    /// A ternary matrix (stored as planes or packed).
    Ternary(TernaryMatrix),
    /// A plain `f32` tensor.
    Float(FloatTensor),
}

/// A tensor to write.
#[derive(Debug, Clone, Copy)]
pub enum TensorRef<'a> {
    /// A ternary matrix, stored as the `storage` argument says.
    Ternary(&'a TernaryMatrix),
    /// A plain `f32` tensor.
    Float(&'a FloatTensor),
}

// ---------------------------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------------------------

/// Serializes named matrices to safetensors bytes.
pub fn to_bytes(matrices: &[(&str, &TernaryMatrix)], storage: Storage) -> Result<Vec<u8>> {
    tensors_to_bytes(&as_refs(matrices), storage)
}

/// Serializes named matrices and float tensors to safetensors bytes.
///
/// Names must be non-empty, distinct, and must not make two stored tensors or metadata keys
/// collide (e.g. a float tensor `"a.plus"` beside a matrix `"a"`).
pub fn tensors_to_bytes(tensors: &[(&str, TensorRef<'_>)], storage: Storage) -> Result<Vec<u8>> {
    let (blobs, meta) = prepare(tensors, storage)?;
    let bytes = safetensors::serialize(blobs, Some(meta))
        .map_err(|e| TernaryError::Config(format!("cannot serialize safetensors: {e}")))?;
    canonical_header(bytes)
}

/// Rewrites the JSON header of a file produced by `safetensors::serialize` with its keys in
/// sorted order (`__metadata__` first, its keys sorted, then tensors by name), so that equal
/// inputs give byte-identical files (the crate emits a `HashMap` in random order). The data
/// section and its offsets are unchanged; the header is re-padded with spaces to 8 bytes.
///
/// # Errors
/// Bytes that are not a file `safetensors::serialize` wrote (an internal error).
pub fn canonical_header(mut bytes: Vec<u8>) -> Result<Vec<u8>> {
    let internal = |what: &str| TernaryError::Config(format!("internal: serialized file {what}"));
    let n = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .and_then(|b| usize::try_from(u64::from_le_bytes(b)).ok())
        .ok_or_else(|| internal("has no header length"))?;
    let header = bytes
        .get(8..8 + n)
        .ok_or_else(|| internal("is shorter than its header"))?;
    let serde_json::Value::Object(map) =
        serde_json::from_slice(header).map_err(|_| internal("has an invalid header"))?
    else {
        return Err(internal("header is not an object"));
    };
    let mut meta = BTreeMap::new();
    let mut entries = BTreeMap::new();
    for (k, v) in map {
        if k == "__metadata__" {
            let serde_json::Value::Object(m) = v else {
                return Err(internal("metadata is not an object"));
            };
            for (mk, mv) in m {
                meta.insert(mk, mv);
            }
        } else {
            entries.insert(k, v);
        }
    }
    // `Value`'s `Display` is compact JSON; keys are quoted the same way.
    let key = |k: String| serde_json::Value::String(k).to_string();
    let mut out = String::with_capacity(n);
    out.push_str("{\"__metadata__\":{");
    for (i, (k, v)) in meta.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&key(k));
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    for (k, v) in entries {
        out.push(',');
        out.push_str(&key(k));
        out.push(':');
        out.push_str(&v.to_string());
    }
    out.push('}');
    while !out.len().is_multiple_of(8) {
        out.push(' ');
    }
    let new_header = out.into_bytes();
    if new_header.len() == n {
        bytes[8..8 + n].copy_from_slice(&new_header);
        Ok(bytes)
    } else {
        let mut rebuilt = Vec::with_capacity(bytes.len() - n + new_header.len());
        rebuilt.extend_from_slice(&(new_header.len() as u64).to_le_bytes());
        rebuilt.extend_from_slice(&new_header);
        rebuilt.extend_from_slice(&bytes[8 + n..]);
        Ok(rebuilt)
    }
}

/// Writes named matrices to `path` atomically (temp file in the same directory, fsync, rename).
///
/// On error the target is left as it was and no temporary file remains.
pub fn save(
    path: impl AsRef<Path>,
    matrices: &[(&str, &TernaryMatrix)],
    storage: Storage,
) -> Result<()> {
    save_tensors(path, &as_refs(matrices), storage)
}

/// Writes named matrices and float tensors to `path` atomically (see [`save`]).
pub fn save_tensors(
    path: impl AsRef<Path>,
    tensors: &[(&str, TensorRef<'_>)],
    storage: Storage,
) -> Result<()> {
    let bytes = tensors_to_bytes(tensors, storage)?;
    write_atomic(path.as_ref(), &bytes)
}

fn as_refs<'a>(matrices: &[(&'a str, &'a TernaryMatrix)]) -> Vec<(&'a str, TensorRef<'a>)> {
    matrices
        .iter()
        .map(|&(n, m)| (n, TensorRef::Ternary(m)))
        .collect()
}

/// One tensor's bytes for `safetensors::serialize`, converted to little-endian lazily (the one
/// safetensors writer view of the workspace; the converted-model files use it too).
#[derive(Debug)]
pub enum Blob<'a> {
    /// `U32` words.
    U32(Vec<usize>, &'a [u32]),
    /// `F32` values.
    F32(Vec<usize>, &'a [f32]),
    /// `F16`: each `f32` value rounded to nearest `f16` as it is written.
    F16(Vec<usize>, &'a [f32]),
    /// `U8` bytes, owned.
    U8(Vec<usize>, Vec<u8>),
}

impl View for Blob<'_> {
    fn dtype(&self) -> Dtype {
        match self {
            Self::U32(..) => Dtype::U32,
            Self::F32(..) => Dtype::F32,
            Self::F16(..) => Dtype::F16,
            Self::U8(..) => Dtype::U8,
        }
    }

    fn shape(&self) -> &[usize] {
        match self {
            Self::U32(s, _) | Self::F32(s, _) | Self::F16(s, _) | Self::U8(s, _) => s,
        }
    }

    fn data(&self) -> Cow<'_, [u8]> {
        match self {
            Self::U32(_, d) => Cow::Owned(d.iter().flat_map(|w| w.to_le_bytes()).collect()),
            Self::F32(_, d) => Cow::Owned(d.iter().flat_map(|v| v.to_le_bytes()).collect()),
            Self::F16(_, d) => Cow::Owned(
                d.iter()
                    .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                    .collect(),
            ),
            Self::U8(_, d) => Cow::Borrowed(d),
        }
    }

    fn data_len(&self) -> usize {
        match self {
            Self::U32(_, d) => d.len() * 4,
            Self::F32(_, d) => d.len() * 4,
            Self::F16(_, d) => d.len() * 2,
            Self::U8(_, d) => d.len(),
        }
    }
}

type Prepared<'a> = (Vec<(String, Blob<'a>)>, HashMap<String, String>);

fn prepare<'a>(tensors: &[(&str, TensorRef<'a>)], storage: Storage) -> Result<Prepared<'a>> {
    let mut meta = HashMap::new();
    meta.insert(KEY_FORMAT.to_owned(), FORMAT_NAME.to_owned());
    meta.insert(KEY_VERSION.to_owned(), FORMAT_VERSION.to_owned());
    let mut blobs: Vec<(String, Blob<'a>)> = Vec::new();
    let mut tensor_names = HashSet::new();

    let mut put_meta = |key: String, value: String| -> Result<()> {
        match meta.insert(key.clone(), value) {
            None => Ok(()),
            Some(_) => Err(TernaryError::Config(format!(
                "metadata key {key:?} would be written twice (tensor names collide)"
            ))),
        }
    };
    let mut put_blob = |name: String, blob: Blob<'a>| -> Result<()> {
        if name == "__metadata__" || !tensor_names.insert(name.clone()) {
            return Err(TernaryError::Config(format!(
                "tensor name {name:?} is reserved or used twice (tensor names collide)"
            )));
        }
        blobs.push((name, blob));
        Ok(())
    };

    for &(name, tensor) in tensors {
        if name.is_empty() {
            return Err(TernaryError::Config(
                "tensor names must not be empty".into(),
            ));
        }
        match tensor {
            TensorRef::Float(f) => {
                put_meta(format!("{name}.storage"), STORAGE_F32.into())?;
                put_blob(name.to_owned(), Blob::F32(f.shape.clone(), &f.values))?;
            }
            TensorRef::Ternary(m) => {
                let (rows, cols) = (m.rows(), m.cols());
                if rows > MAX_DIM || cols > MAX_DIM {
                    return Err(TernaryError::Config(format!(
                        "matrix {name:?} is {rows}x{cols}; the format allows at most {MAX_DIM} \
                         rows and columns"
                    )));
                }
                let layout = m.scales().layout();
                put_meta(format!("{name}.storage"), storage.as_str().into())?;
                put_meta(format!("{name}.rows"), rows.to_string())?;
                put_meta(format!("{name}.cols"), cols.to_string())?;
                match layout {
                    ScaleLayout::PerRow => {
                        put_meta(format!("{name}.scale_layout"), LAYOUT_PER_ROW.into())?;
                    }
                    ScaleLayout::PerGroup { group_size } => {
                        put_meta(format!("{name}.scale_layout"), LAYOUT_PER_GROUP.into())?;
                        put_meta(format!("{name}.group_size"), group_size.to_string())?;
                    }
                }
                match storage {
                    Storage::Planes => {
                        let shape = vec![rows, m.words_per_row()];
                        put_blob(format!("{name}.plus"), Blob::U32(shape.clone(), m.plus()))?;
                        put_blob(format!("{name}.minus"), Blob::U32(shape, m.minus()))?;
                    }
                    Storage::Packed => {
                        let (bytes, _) = pack(m).into_parts();
                        let shape = vec![rows, bytes_per_row(cols)];
                        put_blob(format!("{name}.packed"), Blob::U8(shape, bytes))?;
                    }
                }
                let gpr = layout.groups_per_row(cols);
                put_blob(
                    format!("{name}.scales"),
                    Blob::F32(vec![rows, gpr], m.scales().values()),
                )?;
            }
        }
    }
    Ok((blobs, meta))
}

/// Distinguishes temporary files of concurrent writers in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `path` atomically: a new temporary file beside `path` (created with
/// `create_new`, so never an existing file), `write_all`, `fsync`, `rename` over `path`, then
/// a best-effort `fsync` of the directory. Any failure removes the temporary file and leaves
/// `path` untouched.
///
/// Errors are [`TernaryError::Io`] naming `path` (not the temporary file, which is gone by
/// then). The source keeps the [`std::io::ErrorKind`] of the cause (e.g.
/// [`std::io::ErrorKind::StorageFull`] on a full disk) and its message says which step failed,
/// that the file was left as it was, and the cause: `I/O error on out.safetensors: writing the
/// new contents failed (the file is unchanged): No space left on device (os error 28)`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic_with(path, bytes, |f| f, |from, to| std::fs::rename(from, to))
}

/// The temporary file of [`write_atomic_with`]: written with [`Write`], then flushed to disk.
pub(crate) trait TempFile: Write {
    /// Flushes the contents to the storage device (`fsync`).
    fn sync(&mut self) -> std::io::Result<()>;
}

impl TempFile for File {
    fn sync(&mut self) -> std::io::Result<()> {
        self.sync_all()
    }
}

/// [`write_atomic`] with its failure points exposed, the seam for fault-injection tests:
/// `wrap` turns the freshly created temporary file into the sink the bytes are written to and
/// synced through (a test wraps it in a writer that fails after `N` bytes), and `rename` moves
/// the complete temporary file over `path`. Production passes the identity and
/// [`std::fs::rename`].
pub(crate) fn write_atomic_with<W: TempFile>(
    path: &Path,
    bytes: &[u8],
    wrap: impl FnOnce(File) -> W,
    rename: impl FnOnce(&Path, &Path) -> std::io::Result<()>,
) -> Result<()> {
    let file_name = path.file_name().ok_or_else(|| TernaryError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "path has no file name"),
    })?;
    let failed = |step: &'static str| {
        move |cause: std::io::Error| TernaryError::Io {
            path: path.to_path_buf(),
            source: std::io::Error::new(cause.kind(), WriteFailed { step, cause }),
        }
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let (tmp, file) = create_temp(&dir, &file_name.to_string_lossy())
        .map_err(failed("creating a temporary file beside it"))?;
    let mut sink = wrap(file);
    let written = sink
        .write_all(bytes)
        .map_err(failed("writing the new contents"))
        .and_then(|()| {
            sink.sync()
                .map_err(failed("flushing the new contents to disk"))
        });
    drop(sink);
    let renamed =
        written.and_then(|()| rename(&tmp, path).map_err(failed("renaming the new file over it")));
    if let Err(e) = renamed {
        // Best effort: the temporary file is ours and must not be left behind.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // Make the rename itself durable. Some file systems refuse to fsync a directory; the data
    // is already complete and in place, so that is not an error.
    #[cfg(unix)]
    if let Ok(d) = File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The source of a failed [`write_atomic`]: which step failed, and why.
#[derive(Debug)]
struct WriteFailed {
    step: &'static str,
    cause: std::io::Error,
}

impl std::fmt::Display for WriteFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} failed (the file is unchanged): {}",
            self.step, self.cause
        )
    }
}

impl std::error::Error for WriteFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.cause)
    }
}

/// Creates a temporary file in `dir` that did not exist before; the error is the cause only
/// (the caller names the target).
fn create_temp(dir: &Path, file_name: &str) -> std::io::Result<(PathBuf, File)> {
    let pid = std::process::id();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let mut last_err = None;
    for _ in 0..16 {
        let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = dir.join(format!(".{file_name}.{pid}.{nanos:x}.{n}.tmp"));
        match OpenOptions::new().write(true).create_new(true).open(&tmp) {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.unwrap_or_else(|| std::io::Error::other("no free temporary file name")))
}

// ---------------------------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------------------------

/// Reads every ternary matrix from safetensors bytes, sorted by name. Float tensors in the file
/// are validated at the header level but skipped; see [`tensors_from_bytes`].
pub fn from_bytes(bytes: &[u8]) -> Result<Vec<(String, TernaryMatrix)>> {
    Ok(only_ternary(decode(bytes, None, Select::Ternary)?))
}

/// Reads every tensor (ternary and float) from safetensors bytes, sorted by name.
pub fn tensors_from_bytes(bytes: &[u8]) -> Result<Vec<(String, Tensor)>> {
    decode(bytes, None, Select::All)
}

/// Reads the ternary matrix `name` from safetensors bytes.
///
/// The header, the metadata and the tensor list of the whole file are validated; the contents
/// of other matrices are not decoded.
pub fn one_from_bytes(bytes: &[u8], name: &str) -> Result<TernaryMatrix> {
    one(decode(bytes, None, Select::One(name))?, name, None)
}

/// Reads every ternary matrix from the file at `path`, sorted by name (float tensors skipped).
pub fn load(path: impl AsRef<Path>) -> Result<Vec<(String, TernaryMatrix)>> {
    let path = path.as_ref();
    let bytes = read(path)?;
    Ok(only_ternary(decode(&bytes, Some(path), Select::Ternary)?))
}

/// Reads every tensor (ternary and float) from the file at `path`, sorted by name.
pub fn load_tensors(path: impl AsRef<Path>) -> Result<Vec<(String, Tensor)>> {
    let path = path.as_ref();
    let bytes = read(path)?;
    decode(&bytes, Some(path), Select::All)
}

/// Reads the ternary matrix `name` from the file at `path` (see [`one_from_bytes`]).
pub fn load_one(path: impl AsRef<Path>, name: &str) -> Result<TernaryMatrix> {
    let path = path.as_ref();
    let bytes = read(path)?;
    one(
        decode(&bytes, Some(path), Select::One(name))?,
        name,
        Some(path),
    )
}

fn read(path: &Path) -> Result<Vec<u8>> {
    std::fs::read(path).map_err(|source| TernaryError::Io {
        path: path.to_path_buf(),
        source,
    })
}

fn only_ternary(tensors: Vec<(String, Tensor)>) -> Vec<(String, TernaryMatrix)> {
    tensors
        .into_iter()
        .filter_map(|(n, t)| match t {
            Tensor::Ternary(m) => Some((n, m)),
            Tensor::Float(_) => None,
        })
        .collect()
}

fn one(tensors: Vec<(String, Tensor)>, name: &str, path: Option<&Path>) -> Result<TernaryMatrix> {
    match tensors.into_iter().next() {
        Some((_, Tensor::Ternary(m))) => Ok(m),
        Some((_, Tensor::Float(_))) => {
            Err(Ctx { path }.err(format!("{name:?} is a float tensor, not a ternary matrix")))
        }
        None => Err(Ctx { path }.err(format!("no ternary matrix named {name:?}"))),
    }
}

#[derive(Clone, Copy)]
enum Select<'a> {
    All,
    Ternary,
    One(&'a str),
}

/// Where the bytes came from, for error messages.
#[derive(Clone, Copy)]
struct Ctx<'a> {
    path: Option<&'a Path>,
}

impl Ctx<'_> {
    fn err(self, reason: impl Into<String>) -> TernaryError {
        TernaryError::Format {
            path: self.path.map(Path::to_path_buf),
            reason: reason.into(),
        }
    }
}

/// What the metadata says about one logical tensor.
enum Entry {
    Ternary {
        storage: Storage,
        rows: usize,
        cols: usize,
        layout: ScaleLayout,
    },
    Float,
}

impl Entry {
    fn tensor_names(&self, name: &str) -> Vec<String> {
        match self {
            Self::Float => vec![name.to_owned()],
            Self::Ternary { storage, .. } => {
                let planes: &[&str] = match storage {
                    Storage::Planes => &["plus", "minus"],
                    Storage::Packed => &["packed"],
                };
                planes
                    .iter()
                    .chain(&["scales"])
                    .map(|s| format!("{name}.{s}"))
                    .collect()
            }
        }
    }
}

fn decode(bytes: &[u8], path: Option<&Path>, select: Select<'_>) -> Result<Vec<(String, Tensor)>> {
    let ctx = Ctx { path };
    check_data_offsets(bytes).map_err(|reason| ctx.err(reason))?;
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| ctx.err(format!("not a valid safetensors file: {e}")))?;
    let st = SafeTensors::deserialize(bytes)
        .map_err(|e| ctx.err(format!("not a valid safetensors file: {e}")))?;
    let meta = header.metadata().as_ref().ok_or_else(|| {
        ctx.err("the header has no __metadata__ map: not a ternary file".to_owned())
    })?;
    match meta.get(KEY_FORMAT) {
        Some(f) if f == FORMAT_NAME => {}
        Some(f) => {
            return Err(ctx.err(format!(
                "metadata {KEY_FORMAT:?} is {f:?}, expected {FORMAT_NAME:?}"
            )));
        }
        None => return Err(ctx.err(format!("missing metadata key {KEY_FORMAT:?}"))),
    }
    match meta.get(KEY_VERSION) {
        Some(v) if v == FORMAT_VERSION => {}
        Some(v) => {
            return Err(ctx.err(format!(
                "unsupported format version {v:?} (this reader supports {FORMAT_VERSION:?})"
            )));
        }
        None => return Err(ctx.err(format!("missing metadata key {KEY_VERSION:?}"))),
    }

    // Logical tensors: one per `<name>.storage` key.
    let mut entries = BTreeMap::new();
    for (key, value) in meta {
        let Some(name) = key.strip_suffix(".storage") else {
            continue;
        };
        if name.is_empty() {
            return Err(ctx.err("metadata key \".storage\" names an empty tensor".to_owned()));
        }
        let entry = parse_entry(ctx, meta, name, value)?;
        entries.insert(name.to_owned(), entry);
    }

    // Every stored tensor belongs to exactly one logical tensor, and every one it needs exists.
    let mut claimed = HashSet::new();
    for (name, entry) in &entries {
        for t in entry.tensor_names(name) {
            if st.tensor(&t).is_err() {
                return Err(ctx.err(format!("missing tensor {t:?} (needed by {name:?})")));
            }
            if !claimed.insert(t.clone()) {
                return Err(ctx.err(format!("tensor {t:?} is claimed by two metadata entries")));
            }
        }
    }
    let mut names = st.names();
    names.sort_unstable();
    if let Some(stray) = names.iter().find(|n| !claimed.contains(**n)) {
        return Err(ctx.err(format!(
            "tensor {stray:?} is not described by the metadata (no matching \"<name>.storage\" key)"
        )));
    }

    let mut out = Vec::new();
    for (name, entry) in &entries {
        let wanted = match select {
            Select::All => true,
            Select::Ternary => matches!(entry, Entry::Ternary { .. }),
            Select::One(n) => n == name,
        };
        if wanted {
            out.push((name.clone(), decode_entry(ctx, &st, name, entry)?));
        }
    }
    Ok(out)
}

/// Rejects a safetensors header whose tensors claim data beyond the end of the buffer (the
/// message is the reason, without a file name). Call it before `SafeTensors::deserialize`.
///
/// `safetensors` 0.8 computes `data_end + 8 + header_len` unchecked, which panics under
/// overflow checks (debug builds) for offsets near `u64::MAX`. Bounding every offset by the
/// buffer length first rules that out. Headers this check cannot parse are left to
/// `safetensors`, which reports them.
pub fn check_data_offsets(bytes: &[u8]) -> std::result::Result<(), String> {
    let Some(n) = bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .and_then(|b| usize::try_from(u64::from_le_bytes(b)).ok())
    else {
        return Ok(());
    };
    let Some(header) = bytes.get(8..).and_then(|rest| rest.get(..n)) else {
        return Ok(());
    };
    let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(header) else {
        return Ok(());
    };
    let len = bytes.len() as u64;
    for (name, info) in &map {
        let offsets = info.get("data_offsets").and_then(|o| o.as_array());
        for off in offsets.into_iter().flatten() {
            if off.as_u64().is_some_and(|o| o > len) {
                return Err(format!(
                    "not a valid safetensors file: tensor {name:?} has data offset {off}, \
                     beyond the {len}-byte file"
                ));
            }
        }
    }
    Ok(())
}

fn parse_entry(
    ctx: Ctx<'_>,
    meta: &HashMap<String, String>,
    name: &str,
    storage: &str,
) -> Result<Entry> {
    let storage = match storage {
        STORAGE_PLANES => Storage::Planes,
        STORAGE_PACKED => Storage::Packed,
        STORAGE_F32 => return Ok(Entry::Float),
        other => {
            return Err(ctx.err(format!(
                "{name}.storage is {other:?}, expected \"planes\", \"packed\" or \"f32\""
            )));
        }
    };
    let key = |k: &str| format!("{name}.{k}");
    let get = |k: &str| {
        meta.get(&key(k))
            .ok_or_else(|| ctx.err(format!("missing metadata key {:?}", key(k))))
    };
    let rows = parse_dim(ctx, &key("rows"), get("rows")?)?;
    let cols = parse_dim(ctx, &key("cols"), get("cols")?)?;
    let group_size = meta.get(&key("group_size"));
    let layout = match (get("scale_layout")?.as_str(), group_size) {
        (LAYOUT_PER_ROW, None) => ScaleLayout::PerRow,
        (LAYOUT_PER_ROW, Some(_)) => {
            return Err(ctx.err(format!(
                "{} is present but {} is \"per_row\"",
                key("group_size"),
                key("scale_layout")
            )));
        }
        (LAYOUT_PER_GROUP, Some(g)) => {
            let group_size = parse_dim(ctx, &key("group_size"), g)?;
            let layout = ScaleLayout::PerGroup { group_size };
            layout
                .validate()
                .map_err(|e| ctx.err(format!("{}: {e}", key("group_size"))))?;
            layout
        }
        (LAYOUT_PER_GROUP, None) => {
            return Err(ctx.err(format!("missing metadata key {:?}", key("group_size"))));
        }
        (other, _) => {
            return Err(ctx.err(format!(
                "{} is {other:?}, expected \"per_row\" or \"per_group\"",
                key("scale_layout")
            )));
        }
    };
    Ok(Entry::Ternary {
        storage,
        rows,
        cols,
        layout,
    })
}

/// Parses a canonical unsigned decimal (no sign, no leading zeros) no larger than [`MAX_DIM`].
fn parse_dim(ctx: Ctx<'_>, key: &str, s: &str) -> Result<usize> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    let value = if canonical {
        s.parse::<usize>().ok()
    } else {
        None
    };
    match value {
        Some(v) if v <= MAX_DIM => Ok(v),
        Some(v) => Err(ctx.err(format!("{key} is {v}, above the format limit {MAX_DIM}"))),
        None => Err(ctx.err(format!(
            "{key} is {s:?}, expected an unsigned decimal integer"
        ))),
    }
}

/// The raw bytes of tensor `name` after checking its dtype and shape.
fn tensor_bytes<'d>(
    ctx: Ctx<'_>,
    st: &SafeTensors<'d>,
    name: &str,
    dtype: Dtype,
    shape: &[usize],
    why: &str,
) -> Result<&'d [u8]> {
    let view = st
        .tensor(name)
        .map_err(|_| ctx.err(format!("missing tensor {name:?}")))?;
    if view.dtype() != dtype {
        return Err(ctx.err(format!(
            "tensor {name:?} has dtype {}, expected {dtype}",
            view.dtype()
        )));
    }
    if view.shape() != shape {
        return Err(ctx.err(format!(
            "tensor {name:?} has shape {:?}, expected {shape:?} ({why})",
            view.shape()
        )));
    }
    Ok(view.data())
}

/// Little-endian `u32` words of `bytes` (a trailing partial word is ignored).
pub fn le_u32(bytes: &[u8]) -> Vec<u32> {
    bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Little-endian `f32` values of `bytes` (a trailing partial value is ignored).
pub fn le_f32(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn decode_entry(ctx: Ctx<'_>, st: &SafeTensors<'_>, name: &str, entry: &Entry) -> Result<Tensor> {
    let &Entry::Ternary {
        storage,
        rows,
        cols,
        layout,
    } = entry
    else {
        let view = st
            .tensor(name)
            .map_err(|_| ctx.err(format!("missing tensor {name:?}")))?;
        if view.dtype() != Dtype::F32 {
            return Err(ctx.err(format!(
                "tensor {name:?} has dtype {}, expected F32",
                view.dtype()
            )));
        }
        let t = FloatTensor::new(view.shape().to_vec(), le_f32(view.data()))
            .map_err(|e| ctx.err(format!("float tensor {name:?}: {e}")))?;
        return Ok(Tensor::Float(t));
    };
    let why = format!("metadata says rows={rows}, cols={cols}");
    let gpr = layout.groups_per_row(cols);
    let scales = tensor_bytes(
        ctx,
        st,
        &format!("{name}.scales"),
        Dtype::F32,
        &[rows, gpr],
        &format!("{why}, {layout:?}"),
    )?;
    let scales = Scales::new(layout, le_f32(scales));
    let inner = |e: TernaryError| {
        let reason = match e {
            TernaryError::Format { reason, .. } => reason,
            other => other.to_string(),
        };
        ctx.err(format!("matrix {name:?}: {reason}"))
    };
    let m = match storage {
        Storage::Planes => {
            let shape = [rows, words_per_row(cols)];
            let plus = tensor_bytes(ctx, st, &format!("{name}.plus"), Dtype::U32, &shape, &why)?;
            let minus = tensor_bytes(ctx, st, &format!("{name}.minus"), Dtype::U32, &shape, &why)?;
            TernaryMatrix::from_planes(rows, cols, le_u32(plus), le_u32(minus), scales)
                .map_err(inner)?
        }
        Storage::Packed => {
            let shape = [rows, bytes_per_row(cols)];
            let packed = tensor_bytes(ctx, st, &format!("{name}.packed"), Dtype::U8, &shape, &why)?;
            PackedTernary::from_parts(rows, cols, packed.to_vec(), scales)
                .and_then(|p| p.unpack())
                .map_err(inner)?
        }
    };
    Ok(Tensor::Ternary(m))
}

/// Fault injection into [`write_atomic_with`]: a sink that fails after `N` bytes, a failing
/// `fsync`, a failing rename. The previous file must survive byte for byte, no temporary file
/// may remain, and the error must name the target, the failed step and the cause.
#[cfg(test)]
mod write_fault_tests {
    use std::cell::Cell;
    use std::io::ErrorKind;
    use std::rc::Rc;

    use super::*;

    use ternary_testkit::TempDir as Scratch;

    const CAUSE: &str = "injected fault";

    /// Passes the first `budget` bytes to the real temporary file (counting them in
    /// `written`), then fails every write with `kind`, like a disk that fills up after
    /// `budget` bytes. `sync` fails with `sync_fails` when set.
    struct FailAfter {
        file: File,
        budget: usize,
        kind: ErrorKind,
        sync_fails: Option<ErrorKind>,
        written: Rc<Cell<usize>>,
    }

    impl Write for FailAfter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            if self.budget == 0 && !buf.is_empty() {
                return Err(std::io::Error::new(self.kind, CAUSE));
            }
            let n = self.file.write(&buf[..buf.len().min(self.budget)])?;
            self.budget -= n;
            self.written.set(self.written.get() + n);
            Ok(n)
        }

        fn flush(&mut self) -> std::io::Result<()> {
            self.file.flush()
        }
    }

    impl TempFile for FailAfter {
        fn sync(&mut self) -> std::io::Result<()> {
            match self.sync_fails {
                Some(kind) => Err(std::io::Error::new(kind, CAUSE)),
                None => self.file.sync_all(),
            }
        }
    }

    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    /// `e` is an I/O error on `target` of kind `kind` whose message names the target, `step`
    /// and the injected cause, and says the file is unchanged.
    #[track_caller]
    fn check_error(e: &TernaryError, target: &Path, step: &str, kind: ErrorKind) {
        let msg = e.to_string();
        let TernaryError::Io { path, source } = e else {
            panic!("expected an I/O error, got {msg}");
        };
        assert_eq!(path, target, "{msg}");
        assert_eq!(source.kind(), kind, "{msg}");
        for needle in [&target.display().to_string(), step, CAUSE, "unchanged"] {
            assert!(msg.contains(needle), "{needle:?} missing from {msg:?}");
        }
    }

    #[test]
    fn a_write_failing_after_n_bytes_keeps_the_previous_file_and_leaves_no_temporary() {
        let dir = Scratch::new("write-fault-after-n");
        let target = dir.path("m.safetensors");
        let previous = b"the previous, complete file".to_vec();
        let new = payload(10_000);
        for kind in [ErrorKind::StorageFull, ErrorKind::Other] {
            for n in [0, 1, 7, 4096, new.len() - 1] {
                for has_previous in [true, false] {
                    if has_previous {
                        std::fs::write(&target, &previous).unwrap();
                    } else {
                        let _ = std::fs::remove_file(&target);
                    }
                    let written = Rc::new(Cell::new(0));
                    let w = Rc::clone(&written);
                    let wrap = |file| FailAfter {
                        file,
                        budget: n,
                        kind,
                        sync_fails: None,
                        written: w,
                    };
                    let e = write_atomic_with(&target, &new, wrap, |_, _| {
                        panic!("renamed an incomplete file (n = {n})")
                    })
                    .unwrap_err();
                    check_error(&e, &target, "writing the new contents", kind);
                    assert_eq!(written.get(), n, "the fault hit after {n} bytes");
                    if has_previous {
                        assert_eq!(std::fs::read(&target).unwrap(), previous, "n = {n}");
                        assert_eq!(dir.entries(), ["m.safetensors"], "n = {n}");
                    } else {
                        assert!(dir.entries().is_empty(), "n = {n}: {:?}", dir.entries());
                    }
                }
            }
        }
        // Control: with room for every byte the same sink succeeds and replaces the file.
        std::fs::write(&target, &previous).unwrap();
        let wrap = |file| FailAfter {
            file,
            budget: new.len(),
            kind: ErrorKind::StorageFull,
            sync_fails: None,
            written: Rc::new(Cell::new(0)),
        };
        write_atomic_with(&target, &new, wrap, |a, b| std::fs::rename(a, b)).unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), new);
        assert_eq!(dir.entries(), ["m.safetensors"]);
    }

    #[test]
    fn a_failing_fsync_keeps_the_previous_file_and_leaves_no_temporary() {
        let dir = Scratch::new("write-fault-fsync");
        let target = dir.path("m.safetensors");
        let previous = b"previous".to_vec();
        std::fs::write(&target, &previous).unwrap();
        let new = payload(5000);
        for kind in [ErrorKind::StorageFull, ErrorKind::Other] {
            let written = Rc::new(Cell::new(0));
            let w = Rc::clone(&written);
            let wrap = |file| FailAfter {
                file,
                budget: usize::MAX,
                kind: ErrorKind::Other,
                sync_fails: Some(kind),
                written: w,
            };
            let e = write_atomic_with(&target, &new, wrap, |_, _| {
                panic!("renamed a file whose fsync failed")
            })
            .unwrap_err();
            check_error(&e, &target, "flushing the new contents to disk", kind);
            assert_eq!(written.get(), new.len());
            assert_eq!(std::fs::read(&target).unwrap(), previous);
            assert_eq!(dir.entries(), ["m.safetensors"]);
        }
    }

    #[test]
    fn a_failing_rename_keeps_the_previous_file_and_removes_the_complete_temporary() {
        let dir = Scratch::new("write-fault-rename");
        let target = dir.path("m.safetensors");
        let previous = b"previous".to_vec();
        std::fs::write(&target, &previous).unwrap();
        let new = payload(3000);
        let seen = Cell::new(false);
        let e = write_atomic_with(
            &target,
            &new,
            |f| f,
            |from, to| {
                // The temporary file is complete and beside the target when the rename runs.
                assert_eq!(from.parent(), to.parent());
                assert_eq!(std::fs::read(from).unwrap(), new);
                seen.set(true);
                Err(std::io::Error::new(ErrorKind::PermissionDenied, CAUSE))
            },
        )
        .unwrap_err();
        assert!(seen.get());
        check_error(
            &e,
            &target,
            "renaming the new file over it",
            ErrorKind::PermissionDenied,
        );
        assert_eq!(std::fs::read(&target).unwrap(), previous);
        assert_eq!(dir.entries(), ["m.safetensors"]);
    }

    #[test]
    fn a_missing_directory_names_the_target_and_the_step() {
        let dir = Scratch::new("write-fault-nodir");
        let target = dir.path("missing").join("m.safetensors");
        let e = write_atomic(&target, b"x").unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(&e, TernaryError::Io { path, source } if path == &target
                && source.kind() == ErrorKind::NotFound),
            "{msg}"
        );
        assert!(msg.contains("creating a temporary file beside it"), "{msg}");
        assert!(dir.entries().is_empty());
    }
}
