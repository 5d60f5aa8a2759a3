//! Errors of the core crate. One enum for whole-request failures, and [`SampleError`] for
//! failures of a single image, which travel inside a batch instead of failing it.

use std::path::PathBuf;

/// A failure that stops a whole operation (bad spec, unusable dataset, I/O on an index file).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A pipeline spec field is out of range or inconsistent. `field` is the dotted path.
    #[error("invalid pipeline spec: {field}: {message}")]
    InvalidSpec { field: String, message: String },

    /// A request parameter outside the spec (batch size, rank, thread count...) is invalid.
    #[error("invalid argument: {field}: {message}")]
    InvalidArgument { field: String, message: String },

    /// A dataset could not be opened or indexed.
    #[error("dataset {path}: {message}")]
    Dataset { path: PathBuf, message: String },

    /// A spec file could not be parsed (TOML or JSON); the message names the offending key.
    #[error("cannot parse pipeline spec: {0}")]
    SpecParse(String),

    /// The batch failed because an image failed and the policy is `fail`.
    #[error("batch failed: {0}")]
    SampleFailed(#[from] SampleError),

    /// A configured limit was exceeded.
    #[error("limit exceeded: {0}")]
    LimitExceeded(String),

    #[error(transparent)]
    Io(#[from] std::io::Error),

    #[error("thread pool: {0}")]
    ThreadPool(#[from] rayon::ThreadPoolBuildError),

    /// A batch-ops backend failed, or cannot do what was asked (e.g. device output on the CPU).
    #[error("batch ops: {0}")]
    Backend(String),

    /// Images whose decoding was deferred to the batch ops (GPU decoding) failed on every
    /// decoder: the batch is built again without them, and they are reported per image.
    #[error("{} deferred image(s) failed to decode", .0.len())]
    DeferredImagesFailed(Vec<SampleError>),
}

impl Error {
    pub(crate) fn spec(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidSpec {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn arg(field: impl Into<String>, message: impl Into<String>) -> Self {
        Error::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    pub(crate) fn dataset(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Dataset {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// Why one image failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SampleErrorKind {
    #[error("cannot read: {0}")]
    Read(String),
    #[error("file too large: {size} bytes, limit {limit}")]
    FileTooLarge { size: u64, limit: u64 },
    #[error("image too large: {width}x{height} = {pixels} pixels, limit {limit}")]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    /// Not JPEG, PNG or WebP (or, where only a JPEG will do, not a JPEG).
    #[error("unsupported image format: {0} (augserve decodes JPEG, PNG and WebP)")]
    UnsupportedFormat(String),
    /// A valid JPEG of a kind the decoder does not decode (lossless, arithmetic-coded,
    /// hierarchical, 12-bit): no damage, but no pixels either.
    #[error("unsupported JPEG: {0} (augserve decodes 8-bit baseline and progressive JPEGs)")]
    UnsupportedJpeg(String),
    #[error("corrupt image: {0}")]
    Decode(String),
    /// Decodes only in part: the data ends early (`truncated`) or is damaged after the
    /// headers. A lenient decoder gives pixels for it, made up where the data is missing, so
    /// such an image is reported, never trained on.
    #[error("damaged JPEG: {detail} (only part of the image decodes)")]
    Damaged { truncated: bool, detail: String },
}

impl SampleErrorKind {
    /// A short stable name for metrics and logs.
    pub fn reason_code(&self) -> &'static str {
        match self {
            SampleErrorKind::Read(_) => "read",
            SampleErrorKind::FileTooLarge { .. } => "file_too_large",
            SampleErrorKind::TooManyPixels { .. } => "too_many_pixels",
            SampleErrorKind::UnsupportedFormat(_) => "unsupported_format",
            SampleErrorKind::UnsupportedJpeg(_) => "unsupported_jpeg",
            SampleErrorKind::Decode(_) => "decode",
            SampleErrorKind::Damaged {
                truncated: true, ..
            } => "truncated",
            SampleErrorKind::Damaged { .. } => "damaged",
        }
    }
}

/// One image's failure: which sample, where it came from, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sample {sample_id} ({source_name}): {kind}")]
pub struct SampleError {
    pub sample_id: u64,
    /// The file path or tar member the sample came from (relative to the dataset root).
    pub source_name: String,
    pub kind: SampleErrorKind,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
