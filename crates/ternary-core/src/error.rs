//! The one error type of `ternary-core`.

use std::path::PathBuf;

/// Every fallible operation in `ternary-core` returns this error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TernaryError {
    /// A buffer or argument has a length or shape that disagrees with the matrix.
    #[error("shape mismatch: {0}")]
    Shape(String),
    /// Some position has both its `+1` bit and its `-1` bit set.
    #[error("invalid planes: row {row}, column {col} has both the +1 and the -1 bit set")]
    BothPlanesSet {
        /// Row of the first offending weight.
        row: usize,
        /// Column of the first offending weight.
        col: usize,
    },
    /// A bit beyond `cols` (in the padding of a row) is set.
    #[error("invalid planes: padding bit set in row {row} (word {word})")]
    PaddingBitSet {
        /// Row of the offending word.
        row: usize,
        /// Index of the offending word inside the row.
        word: usize,
    },
    /// A value that must be finite is NaN or infinite.
    #[error("non-finite value in {what} at index {index}: {value}")]
    NonFinite {
        /// Which input held the value (e.g. "weights", "scales").
        what: &'static str,
        /// Flat index of the first offending value.
        index: usize,
        /// The value itself.
        value: f32,
    },
    /// A trit outside `{-1, 0, +1}`.
    #[error("invalid trit {0}: a ternary weight must be -1, 0 or +1")]
    InvalidTrit(i64),
    /// A `(row, col)` outside the matrix.
    #[error("index ({row}, {col}) out of bounds for a {rows}x{cols} matrix")]
    OutOfBounds {
        /// Requested row.
        row: usize,
        /// Requested column.
        col: usize,
        /// Rows of the matrix.
        rows: usize,
        /// Columns of the matrix.
        cols: usize,
    },
    /// A configuration value that cannot work (group size, percentile, ...).
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A file or byte buffer that is not a valid ternary tensor file.
    #[error("malformed ternary file{}: {reason}", path.as_ref().map(|p| format!(" {}", p.display())).unwrap_or_default())]
    Format {
        /// The file, when the bytes came from one.
        path: Option<PathBuf>,
        /// What is wrong with it.
        reason: String,
    },
    /// An I/O error while reading or writing a file.
    #[error("I/O error on {}: {source}", path.display())]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

impl TernaryError {
    pub(crate) fn shape(msg: impl Into<String>) -> Self {
        Self::Shape(msg.into())
    }

    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Self::Config(msg.into())
    }
}

/// `Result` with [`TernaryError`].
pub type Result<T, E = TernaryError> = std::result::Result<T, E>;

/// Returns an error naming the first NaN/Inf in `values`.
pub(crate) fn check_finite(what: &'static str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(TernaryError::NonFinite {
            what,
            index,
            value: values[index],
        }),
        None => Ok(()),
    }
}
