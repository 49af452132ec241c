//! Frames of codes in, PCM out, with packet-loss concealment.

use std::sync::Arc;

use super::LatentDecoder;
use super::StreamMode;
use crate::error::Result;
use crate::model::CodecModel;

/// Each consecutive lost frame repeats the last latent at this fraction of the previous level, so a
/// burst fades out instead of buzzing, and the decoder state stays continuous (no click on resume).
const PLC_DECAY: f32 = 0.6;

/// Packet-loss concealment of one stream: remembers the last good latent and fades it over a burst.
pub(crate) struct Concealer {
    last: Vec<f32>,
    lost_run: u32,
}

impl Concealer {
    pub(crate) fn new(dim: usize) -> Concealer {
        Concealer {
            last: vec![0.0; dim],
            lost_run: 0,
        }
    }

    /// A frame arrived: `z` is its latent.
    pub(crate) fn good(&mut self, z: &[f32]) {
        self.last.copy_from_slice(z);
        self.lost_run = 0;
    }

    /// A frame was lost: writes the latent to decode in its place.
    pub(crate) fn lost(&mut self, z: &mut [f32]) {
        self.lost_run += 1;
        let g = PLC_DECAY.powi(self.lost_run as i32);
        for (z, l) in z.iter_mut().zip(&self.last) {
            *z = l * g;
        }
    }

    pub(crate) fn reset(&mut self) {
        self.last.fill(0.0);
        self.lost_run = 0;
    }

    pub(crate) fn bytes(&self) -> usize {
        self.last.len() * 4
    }
}

pub struct StreamDecoder {
    model: Arc<CodecModel>,
    inner: Box<dyn LatentDecoder>,
    latent: Vec<f32>,
    plc: Concealer,
    frames_in: u64,
}

impl StreamDecoder {
    /// Exact for causal models, windowed for the others ([`StreamMode::Auto`]).
    pub fn new(model: Arc<CodecModel>) -> Result<Self> {
        Self::with_mode(model, StreamMode::Auto)
    }

    pub fn with_mode(model: Arc<CodecModel>, mode: StreamMode) -> Result<Self> {
        let inner = mode.decoder(&model)?;
        Ok(Self::with_backend(model, inner))
    }

    pub fn with_backend(model: Arc<CodecModel>, inner: Box<dyn LatentDecoder>) -> Self {
        let dim = model.latent_dim();
        StreamDecoder {
            model,
            inner,
            latent: vec![0.0; dim],
            plc: Concealer::new(dim),
            frames_in: 0,
        }
    }

    pub fn model(&self) -> &Arc<CodecModel> {
        &self.model
    }
    /// Samples of audio that come out per frame pushed (once the look-ahead is primed).
    pub fn frame_samples(&self) -> usize {
        self.model.hop()
    }
    pub fn latency_samples(&self) -> usize {
        self.inner.lookahead_samples()
    }
    pub fn frames_in(&self) -> u64 {
        self.frames_in
    }
    pub fn state_bytes(&self) -> usize {
        self.inner.state_bytes() + self.latent.len() * 4 + self.plc.bytes()
    }

    /// Decodes one frame carrying 1..=N codes (the quantizer count may change from frame to frame);
    /// `sink` receives the PCM that is now final.
    pub fn push_frame(
        &mut self,
        codes: &[u16],
        mut sink: impl FnMut(&[f32]) -> Result<()>,
    ) -> Result<()> {
        self.model.check_n_q(codes.len())?;
        self.model.codebooks.decode_frame(codes, &mut self.latent)?;
        self.plc.good(&self.latent);
        self.frames_in += 1;
        self.inner.push_latent(&self.latent, &mut |pcm| sink(pcm))
    }

    /// Conceals one lost frame: the last good latent again, fading by `PLC_DECAY` per lost frame.
    pub fn conceal(&mut self, mut sink: impl FnMut(&[f32]) -> Result<()>) -> Result<()> {
        self.plc.lost(&mut self.latent);
        self.frames_in += 1;
        self.inner.push_latent(&self.latent, &mut |pcm| sink(pcm))
    }

    /// End of stream: emits what the look-ahead holds, then resets.
    pub fn flush(&mut self, mut sink: impl FnMut(&[f32]) -> Result<()>) -> Result<()> {
        self.inner.drain(&mut |pcm| sink(pcm))?;
        self.reset_counters();
        Ok(())
    }

    pub fn reset(&mut self) -> Result<()> {
        self.reset_counters();
        self.inner.reset()
    }

    fn reset_counters(&mut self) {
        self.plc.reset();
        self.frames_in = 0;
    }
}
