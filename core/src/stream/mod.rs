//! The streaming core shared by the CLI, the GStreamer elements and the plugins.
//!
//! * [`StreamEncoder`]: push any number of samples (1 or 10 s, any split); whole frames of codes come
//!   out as soon as they are final; `flush` ends the stream with a zero-padded last frame and says
//!   how many of its samples were real; `reset` starts over (seek, discontinuity).
//! * [`StreamDecoder`]: push frames of codes (any quantizer count per frame), get PCM; `conceal`
//!   covers a lost frame.
//!
//! Both own their state; the model ([`CodecModel`]) is shared and immutable, so one loaded model
//! serves any number of streams. The per-frame work sits behind two small traits, [`LatentEncoder`]
//! and [`LatentDecoder`]: the exact causal path runs the model's step graphs.

mod causal;
mod decoder;
mod encoder;
pub mod step;

pub use causal::{CausalDecoder, CausalEncoder};
pub use decoder::StreamDecoder;
pub use encoder::{Flushed, StreamEncoder};

use crate::error::Result;

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
