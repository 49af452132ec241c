//! funcodec-core: run FunCodec neural speech codec models (exported to ONNX) with tract.
//!
//! * [`CodecModel`] loads an exported model folder and encodes/decodes whole utterances exactly as
//!   FunCodec does offline.
//! * [`bitstream`] is the project's framed code-stream format; [`codecs_txt`] is FunCodec's text format.

pub mod bitstream;
pub mod codec;
pub mod codecs_txt;
pub mod error;
pub mod manifest;
pub mod model;
pub mod padding;
pub mod rvq;

pub use codec::{Codes, Encoded, check_audio, peak_limit};
pub use error::{Error, Result};
pub use model::CodecModel;
