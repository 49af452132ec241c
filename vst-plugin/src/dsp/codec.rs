//! What the worker runs on each frame: the neural codec (encoder + decoder of the streaming core),
//! or the identity substitute used to check latency and alignment.

use std::sync::Arc;

use funcodec_core::{CodecModel, StreamDecoder, StreamEncoder};

/// Receives decoded audio at the model rate.
pub type Sink<'a> = dyn FnMut(&[f32]) -> funcodec_core::Result<()> + 'a;

/// One channel's codec: frames of `hop` samples in, decoded audio out (same frame grid).
pub trait FrameCodec: Send {
    /// Codes one frame; `lost`: the frame's packet is lost (the decoder conceals it).
    fn process(
        &mut self,
        frame: &[f32],
        n_q: usize,
        lost: bool,
        sink: &mut Sink<'_>,
    ) -> funcodec_core::Result<()>;
    fn reset(&mut self) -> funcodec_core::Result<()>;
}

/// What the plugin codes with.
#[derive(Clone)]
pub enum CodecSource {
    /// A loaded model (shared by all channels and instances).
    Model(Arc<CodecModel>),
    /// Identity "codec" at 16 kHz with 640-sample frames: the worker, rings and resamplers run,
    /// the audio is passed through unchanged (lost frames are silent). Diagnostics and tests.
    Identity,
}

pub const IDENTITY_RATE: u32 = 16_000;
pub const IDENTITY_HOP: usize = 640;

impl CodecSource {
    pub fn sample_rate(&self) -> u32 {
        match self {
            CodecSource::Model(m) => m.sample_rate(),
            CodecSource::Identity => IDENTITY_RATE,
        }
    }
    pub fn hop(&self) -> usize {
        match self {
            CodecSource::Model(m) => m.hop(),
            CodecSource::Identity => IDENTITY_HOP,
        }
    }
    pub fn num_quantizers(&self) -> usize {
        match self {
            CodecSource::Model(m) => m.num_quantizers(),
            CodecSource::Identity => 32,
        }
    }
    /// Quantizer count for a bitrate in bit/s (FunCodec's rule, clamped to the model).
    pub fn n_q_for_bitrate(&self, bitrate: f64) -> usize {
        match self {
            CodecSource::Model(m) => m.n_q_for_bitrate(bitrate.round() as i64),
            CodecSource::Identity => ((bitrate / 250.0).floor() as usize).clamp(1, 32),
        }
    }
    pub fn describe(&self) -> String {
        match self {
            CodecSource::Model(m) => format!("{} ({})", m.manifest.model_id, m.dir.display()),
            CodecSource::Identity => "identity (no codec)".into(),
        }
    }

    /// One channel's codec and its look-ahead (samples past a frame's end, at the model rate,
    /// before the frame's decoded audio comes out: 0 for causal models).
    pub fn make(&self, n_q: usize) -> funcodec_core::Result<(Box<dyn FrameCodec>, usize)> {
        match self {
            CodecSource::Model(m) => {
                let enc = StreamEncoder::new(m.clone(), n_q)?;
                let dec = StreamDecoder::new(m.clone())?;
                let lookahead = enc.latency_samples() - m.hop() + dec.latency_samples();
                Ok((Box::new(NeuralCodec { enc, dec }), lookahead))
            }
            CodecSource::Identity => Ok((Box::new(IdentityCodec), 0)),
        }
    }
}

struct NeuralCodec {
    enc: StreamEncoder,
    dec: StreamDecoder,
}

impl FrameCodec for NeuralCodec {
    fn process(
        &mut self,
        frame: &[f32],
        n_q: usize,
        lost: bool,
        sink: &mut Sink<'_>,
    ) -> funcodec_core::Result<()> {
        if self.enc.n_q() != n_q {
            self.enc.set_n_q(n_q)?;
        }
        let dec = &mut self.dec;
        // The sender encodes every frame (its state stays continuous); the network drops some.
        self.enc.push(frame, |codes| {
            if lost {
                dec.conceal(&mut *sink)
            } else {
                dec.push_frame(codes, &mut *sink)
            }
        })?;
        Ok(())
    }
    fn reset(&mut self) -> funcodec_core::Result<()> {
        self.enc.reset()?;
        self.dec.reset()
    }
}

struct IdentityCodec;

impl FrameCodec for IdentityCodec {
    fn process(
        &mut self,
        frame: &[f32],
        _n_q: usize,
        lost: bool,
        sink: &mut Sink<'_>,
    ) -> funcodec_core::Result<()> {
        if lost {
            let zeros = [0f32; IDENTITY_HOP];
            sink(&zeros[..frame.len().min(IDENTITY_HOP)])
        } else {
            sink(frame)
        }
    }
    fn reset(&mut self) -> funcodec_core::Result<()> {
        Ok(())
    }
}
