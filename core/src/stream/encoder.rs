//! The chunk buffer in front of a [`LatentEncoder`]: any split of samples in, whole frames of codes out.

use std::sync::Arc;

use super::LatentEncoder;
use super::StreamMode;
use crate::error::{Error, Result};
use crate::model::CodecModel;
use crate::rvq::{Codebooks, SearchScratch};

/// What `flush` produced: frames emitted, and how many samples of the last frame were real input
/// (the rest was zero padding), so a container can trim the decoded tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Flushed {
    pub frames: usize,
    pub real_samples_in_last_frame: usize,
}

pub struct StreamEncoder {
    model: Arc<CodecModel>,
    inner: Box<dyn LatentEncoder>,
    pending: Vec<f32>,
    frame: Vec<f32>,
    rvq: RvqScratch,
    samples_in: u64,
}

/// The RVQ step applied to each latent frame; holds the buffers so `push` does not allocate.
struct RvqScratch {
    n_q: usize,
    residual: Vec<f32>,
    codes: Vec<u16>,
    search: SearchScratch,
    frames_out: u64,
}

impl RvqScratch {
    fn new(model: &CodecModel, n_q: usize) -> RvqScratch {
        RvqScratch {
            n_q,
            residual: vec![0.0; model.latent_dim()],
            codes: vec![0; model.num_quantizers()],
            search: model.codebooks.scratch(),
            frames_out: 0,
        }
    }

    fn emit(
        &mut self,
        books: &Codebooks,
        z: &[f32],
        sink: &mut dyn FnMut(&[u16]) -> Result<()>,
    ) -> Result<()> {
        self.residual.copy_from_slice(z);
        let codes = &mut self.codes[..self.n_q];
        books.encode_frame(&mut self.residual, codes, &mut self.search);
        self.frames_out += 1;
        sink(codes)
    }
}

impl StreamEncoder {
    /// A stream on `model` with `n_q` quantizers per frame (changeable with [`Self::set_n_q`]):
    /// exact for causal models, windowed for the others ([`StreamMode::Auto`]).
    pub fn new(model: Arc<CodecModel>, n_q: usize) -> Result<Self> {
        Self::with_mode(model, n_q, StreamMode::Auto)
    }

    pub fn with_mode(model: Arc<CodecModel>, n_q: usize, mode: StreamMode) -> Result<Self> {
        let inner = mode.encoder(&model)?;
        Self::with_backend(model, inner, n_q)
    }

    pub fn with_backend(
        model: Arc<CodecModel>,
        inner: Box<dyn LatentEncoder>,
        n_q: usize,
    ) -> Result<Self> {
        model.check_n_q(n_q)?;
        let hop = model.hop();
        Ok(StreamEncoder {
            rvq: RvqScratch::new(&model, n_q),
            model,
            inner,
            pending: Vec::with_capacity(hop),
            frame: vec![0.0; hop],
            samples_in: 0,
        })
    }

    pub fn model(&self) -> &Arc<CodecModel> {
        &self.model
    }
    pub fn n_q(&self) -> usize {
        self.rvq.n_q
    }
    /// Changes the quantizer count from the next frame emitted on (no state is lost: the RVQ is
    /// stateless and the decoder sums what each frame carries, so the switch is click-free).
    pub fn set_n_q(&mut self, n_q: usize) -> Result<()> {
        self.model.check_n_q(n_q)?;
        self.rvq.n_q = n_q;
        Ok(())
    }
    /// Algorithmic latency: one frame plus the model's look-ahead, in samples.
    pub fn latency_samples(&self) -> usize {
        self.model.hop() + self.inner.lookahead_samples()
    }
    pub fn samples_in(&self) -> u64 {
        self.samples_in
    }
    pub fn frames_out(&self) -> u64 {
        self.rvq.frames_out
    }
    /// Samples waiting for their frame to fill.
    pub fn pending_samples(&self) -> usize {
        self.pending.len()
    }
    pub fn state_bytes(&self) -> usize {
        self.inner.state_bytes()
            + (self.pending.capacity() + self.frame.len() + self.rvq.residual.len()) * 4
            + self.rvq.codes.len() * 2
    }

    /// Pushes samples (mono, model rate, nominally in [-1, 1]); calls `sink` with each finished frame
    /// of codes and returns how many frames were emitted. NaN or infinite input is rejected before
    /// anything is consumed, so the stream stays intact.
    pub fn push(
        &mut self,
        pcm: &[f32],
        mut sink: impl FnMut(&[u16]) -> Result<()>,
    ) -> Result<usize> {
        if let Some(i) = pcm.iter().position(|v| !v.is_finite()) {
            return Err(Error::Audio(format!(
                "sample {i} of this buffer is {} (NaN/inf audio cannot be encoded)",
                pcm[i]
            )));
        }
        let hop = self.model.hop();
        let before = self.rvq.frames_out;
        let books = &self.model.codebooks;
        let rvq = &mut self.rvq;
        let mut emit = |z: &[f32]| rvq.emit(books, z, &mut sink);
        let mut rest = pcm;
        while !rest.is_empty() {
            if self.pending.is_empty() && rest.len() >= hop {
                self.inner.push_frame(&rest[..hop], &mut emit)?;
                rest = &rest[hop..];
                self.samples_in += hop as u64;
                continue;
            }
            let take = (hop - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            self.samples_in += take as u64;
            if self.pending.len() == hop {
                self.inner.push_frame(&self.pending, &mut emit)?;
                self.pending.clear();
            }
        }
        Ok((self.rvq.frames_out - before) as usize)
    }

    /// End of stream: encodes the partial frame (zero-padded) and whatever the look-ahead holds, then
    /// resets so the stream can start again.
    pub fn flush(&mut self, mut sink: impl FnMut(&[u16]) -> Result<()>) -> Result<Flushed> {
        let before = self.rvq.frames_out;
        let real = self.pending.len();
        let books = &self.model.codebooks;
        let rvq = &mut self.rvq;
        let mut emit = |z: &[f32]| rvq.emit(books, z, &mut sink);
        if real > 0 {
            self.frame[..real].copy_from_slice(&self.pending);
            self.frame[real..].fill(0.0);
            self.inner.push_frame(&self.frame, &mut emit)?;
        }
        self.inner.drain(&mut emit)?;
        let frames = (self.rvq.frames_out - before) as usize;
        self.pending.clear();
        self.samples_in = 0;
        self.rvq.frames_out = 0;
        Ok(Flushed {
            frames,
            real_samples_in_last_frame: if real > 0 { real } else { self.model.hop() },
        })
    }

    /// Drops buffered input and all state (seek, flush, discontinuity).
    pub fn reset(&mut self) -> Result<()> {
        self.pending.clear();
        self.samples_in = 0;
        self.rvq.frames_out = 0;
        self.inner.reset()
    }
}
