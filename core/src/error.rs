//! The library's error type: every failure a user can cause maps to a variant with a clear message.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("model folder {path}: {msg}")]
    Model { path: PathBuf, msg: String },
    #[error("model folder {path}: file {file}: {msg}")]
    ModelFile {
        path: PathBuf,
        file: String,
        msg: String,
    },
    #[error("inference failed in {stage}: {msg}")]
    Inference { stage: String, msg: String },
    #[error("invalid audio: {0}")]
    Audio(String),
    #[error("invalid codes: {0}")]
    Codes(String),
    #[error("backend: {0}")]
    Backend(String),
    #[error("invalid argument: {0}")]
    Argument(String),
    #[error(transparent)]
    Bitstream(#[from] crate::bitstream::BitstreamError),
    #[error(transparent)]
    CodecsTxt(#[from] crate::codecs_txt::CodecsTxtError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
