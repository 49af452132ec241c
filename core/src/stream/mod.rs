//! The streaming core shared by the CLI, the GStreamer elements and the plugins.
//!
//! * [`StreamEncoder`]: push any number of samples (1 or 10 s, any split); whole frames of codes come
//!   out as soon as they are final; `flush` ends the stream with a zero-padded last frame and says
//!   how many of its samples were real; `reset` starts over (seek, discontinuity).
//! * [`StreamDecoder`]: push frames of codes (any quantizer count per frame), get PCM; `conceal`
//!   covers a lost frame.
//!
//! * [`BatchEncoder`] / [`BatchDecoder`]: many causal streams stepped together, one batched graph
//!   run per tick ([`encode_batched`] / [`decode_batched`] for whole utterances).
//!
//! Both own their state; the model ([`CodecModel`]) is shared and immutable, so one loaded model
//! serves any number of streams. The per-frame work sits behind two small traits, [`LatentEncoder`]
//! and [`LatentDecoder`]: the exact causal path runs the model's step graphs; FunCodec's released
//! non-causal models stream approximately through windows of the offline graphs ([`StreamMode`]).

mod batch;
mod causal;
mod decoder;
mod encoder;
pub mod step;
mod windowed;

pub use batch::{BatchDecoder, BatchEncoder, decode_batched, encode_batched};
pub use causal::{CausalDecoder, CausalEncoder};
pub use decoder::StreamDecoder;
pub use encoder::{Flushed, StreamEncoder};
pub use windowed::{WindowConfig, WindowedDecoder, WindowedEncoder};

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::model::CodecModel;

/// How a stream runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StreamMode {
    /// Exact when the model has step graphs (causal), otherwise windowed with the default window.
    #[default]
    Auto,
    /// Step graphs only: identical to offline coding for any split of the input.
    Exact,
    /// Bounded look-ahead approximation through the offline graphs (FunCodec's released models).
    Windowed(WindowConfig),
}

impl StreamMode {
    fn resolve(self, model: &CodecModel) -> Result<StreamMode> {
        Ok(match self {
            StreamMode::Auto if model.encoder_step().is_some() => StreamMode::Exact,
            StreamMode::Auto => StreamMode::Windowed(WindowConfig::default()),
            StreamMode::Exact if model.manifest.input_normalization.kind != "none" => {
                return Err(Error::Argument(format!(
                    "model {} normalises by the whole-utterance RMS, which no exact stream can know",
                    model.manifest.model_id
                )));
            }
            m => m,
        })
    }

    pub(crate) fn encoder(self, model: &Arc<CodecModel>) -> Result<Box<dyn LatentEncoder>> {
        Ok(match self.resolve(model)? {
            StreamMode::Windowed(cfg) => Box::new(WindowedEncoder::new(model.clone(), cfg)?),
            _ => Box::new(CausalEncoder::new(model.clone())?),
        })
    }

    pub(crate) fn decoder(self, model: &Arc<CodecModel>) -> Result<Box<dyn LatentDecoder>> {
        Ok(match self.resolve(model)? {
            StreamMode::Windowed(cfg) => Box::new(WindowedDecoder::new(model.clone(), cfg)?),
            _ => Box::new(CausalDecoder::new(model.clone())?),
        })
    }
}

/// Receives finished frames (a latent vector, or a frame of PCM).
pub type Emit<'a> = dyn FnMut(&[f32]) -> Result<()> + 'a;

/// Audio frames in, latent frames out, with state owned by the implementor (one per stream).
pub trait LatentEncoder: Send {
    /// Consumes one frame of `hop` samples; emits the latent frames that are now final.
    fn push_frame(&mut self, frame: &[f32], emit: &mut Emit<'_>) -> Result<()>;
    /// End of stream: emits whatever the look-ahead still holds back, then resets.
    fn drain(&mut self, emit: &mut Emit<'_>) -> Result<()>;
    fn reset(&mut self) -> Result<()>;
    /// Input samples needed past a frame's end before its latent is final.
    fn lookahead_samples(&self) -> usize;
    /// Bytes of state this stream carries.
    fn state_bytes(&self) -> usize;
}

/// Latent frames in, audio frames out.
pub trait LatentDecoder: Send {
    fn push_latent(&mut self, z: &[f32], emit: &mut Emit<'_>) -> Result<()>;
    fn drain(&mut self, emit: &mut Emit<'_>) -> Result<()>;
    fn reset(&mut self) -> Result<()>;
    /// Latent frames needed past a frame before its audio is final, in samples.
    fn lookahead_samples(&self) -> usize;
    fn state_bytes(&self) -> usize;
}

/// Codes a whole buffer through a stream (push everything, flush): what a live stream produces.
pub fn encode_all(
    model: &CodecModel,
    pcm: &[f32],
    n_q: usize,
    mode: StreamMode,
) -> Result<crate::Codes> {
    let mut enc = StreamEncoder::with_mode(model.shared(), n_q, mode)?;
    let mut codes = crate::Codes::new(n_q);
    codes.data.reserve(pcm.len().div_ceil(model.hop()) * n_q);
    enc.push(pcm, |f| codes.push_frame(f))?;
    enc.flush(|f| codes.push_frame(f))?;
    Ok(codes)
}

/// Decodes codes through a stream decoder; returns `hop × frames` samples.
pub fn decode_all(model: &CodecModel, codes: &crate::Codes, mode: StreamMode) -> Result<Vec<f32>> {
    let mut dec = StreamDecoder::with_mode(model.shared(), mode)?;
    let mut out = Vec::with_capacity(codes.frames * model.hop());
    let mut sink = |pcm: &[f32]| {
        out.extend_from_slice(pcm);
        Ok(())
    };
    for t in 0..codes.frames {
        dec.push_frame(codes.frame(t), &mut sink)?;
    }
    dec.flush(&mut sink)?;
    Ok(out)
}
