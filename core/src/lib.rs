//! funcodec-core: run FunCodec neural speech codec models (exported to ONNX) with tract.
//!
//! * [`CodecModel`] loads an exported model folder and encodes/decodes whole utterances exactly as
//!   FunCodec does offline.
//! * [`stream`] is the streaming core: push samples, get frames of codes as soon as they are final.
//! * [`bitstream`] is the project's framed code-stream format; [`codecs_txt`] is FunCodec's text format.

pub mod backend;
pub mod bitstream;
mod block_matrix;
pub mod codec;
pub mod codecs_txt;
pub mod error;
pub mod manifest;
pub mod model;
pub mod padding;
pub mod profile;
pub mod rvq;
mod simd;
pub mod stream;
mod tract_ops;

pub use backend::Backend;
pub use codec::{Codes, Encoded, check_audio, peak_limit};
pub use error::{Error, Result};
pub use model::CodecModel;
pub use stream::{Flushed, StreamDecoder, StreamEncoder, StreamMode, WindowConfig};
