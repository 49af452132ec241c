//! Bounded look-ahead streaming for FunCodec's released (non-causal) models: an approximation.
//!
//! Those models normalise by the whole utterance (input RMS, GroupNorm over time after every conv)
//! and pad symmetrically, so no finite look-ahead reproduces offline results. Here each block of
//! `block` frames is coded from a window `[context | block | lookahead]` run through the offline
//! graphs, which see that window as the whole utterance; only the block's frames are kept. Windows
//! near the 2.56 s training crops are in-distribution for the model's statistics. The decoder does
//! the same on latent frames and cross-fades each block into the previous window's continuation.
//! Cost: (context + block + lookahead) / block times the offline compute; latency: block - 1 +
//! lookahead frames past the frame's own end. `models/stream_fidelity.py` measures the trade-off.

use std::sync::Arc;

use super::{Emit, LatentDecoder, LatentEncoder};
use crate::error::{Error, Result};
use crate::model::{Activation, CodecModel};

/// Window geometry in frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowConfig {
    pub context: usize,
    pub block: usize,
    pub lookahead: usize,
}

impl Default for WindowConfig {
    /// 1.28 s windows (24 + 4 + 4 frames): 8x the offline compute, 280 ms of latency past the frame.
    fn default() -> Self {
        WindowConfig {
            context: 24,
            block: 4,
            lookahead: 4,
        }
    }
}

impl WindowConfig {
    fn check(&self, model: &CodecModel) -> Result<()> {
        if self.block == 0 {
            return Err(Error::Argument(
                "window block must be at least one frame".into(),
            ));
        }
        if !model.has_offline_graphs() {
            return Err(Error::Argument(
                "windowed streaming needs a model folder with offline graphs".into(),
            ));
        }
        Ok(())
    }
    fn lookahead_samples(&self, hop: usize) -> usize {
        (self.block - 1 + self.lookahead) * hop
    }
}

/// The frames a windowed coder holds and the scheduling both directions share: which window to run
/// next, and dropping what no later window's context needs.
struct FrameWindow {
    cfg: WindowConfig,
    /// Values per frame (samples per hop for the encoder, latent dimension for the decoder).
    width: usize,
    /// Frames from frame `buf_start` on, frame-major.
    buf: Vec<f32>,
    buf_start: usize,
    frames_in: usize,
    /// The first frame not coded yet.
    next: usize,
}

/// One window to run: frames `start..end` in, frames `next..next + count` of it kept.
struct Job {
    start: usize,
    end: usize,
    count: usize,
}

impl FrameWindow {
    fn new(cfg: WindowConfig, width: usize) -> Self {
        FrameWindow {
            cfg,
            width,
            buf: Vec::new(),
            buf_start: 0,
            frames_in: 0,
            next: 0,
        }
    }

    fn push(&mut self, frame: &[f32]) {
        self.buf.extend_from_slice(frame);
        self.frames_in += 1;
    }

    /// Frames in a window once the stream is past its start: every window then has this length,
    /// so its plans are worth specialising to it.
    fn full_len(&self) -> usize {
        self.cfg.context + self.cfg.block + self.cfg.lookahead
    }

    fn is_full(&self, job: &Job) -> bool {
        job.end - job.start == self.full_len()
    }

    fn job(&self, count: usize, end: usize) -> Job {
        let start = self
            .next
            .saturating_sub(self.cfg.context)
            .max(self.buf_start);
        Job { start, end, count }
    }

    /// The next full block whose look-ahead has arrived.
    fn ready(&self) -> Option<Job> {
        let end = self.next + self.cfg.block + self.cfg.lookahead;
        (self.frames_in >= end).then(|| self.job(self.cfg.block, end))
    }

    /// At end of stream: the next block, with whatever look-ahead there is.
    fn remaining(&self) -> Option<Job> {
        (self.next < self.frames_in).then(|| {
            self.job(
                self.cfg.block.min(self.frames_in - self.next),
                self.frames_in,
            )
        })
    }

    /// The window's frames, frame-major.
    fn frames(&self, job: &Job) -> &[f32] {
        &self.buf
            [(job.start - self.buf_start) * self.width..(job.end - self.buf_start) * self.width]
    }

    /// Marks the job's block coded and keeps only what the next window's context needs.
    fn done(&mut self, job: &Job) {
        self.next += job.count;
        let keep_from = self
            .next
            .saturating_sub(self.cfg.context)
            .max(self.buf_start);
        self.buf.drain(..(keep_from - self.buf_start) * self.width);
        self.buf_start = keep_from;
    }

    fn reset(&mut self) {
        self.buf.clear();
        self.buf_start = 0;
        self.frames_in = 0;
        self.next = 0;
    }

    fn state_bytes(&self) -> usize {
        (self.cfg.context + self.cfg.block + self.cfg.lookahead) * self.width * 4
    }
}

pub struct WindowedEncoder {
    model: Arc<CodecModel>,
    frames: FrameWindow,
    latent: Vec<f32>,
    scratch: Vec<f32>,
}

impl WindowedEncoder {
    pub fn new(model: Arc<CodecModel>, cfg: WindowConfig) -> Result<Self> {
        cfg.check(&model)?;
        let (dim, hop) = (model.latent_dim(), model.hop());
        let mut enc = WindowedEncoder {
            model,
            frames: FrameWindow::new(cfg, hop),
            latent: vec![0.0; dim],
            scratch: Vec::new(),
        };
        // Build the full window's plans now (one silent window), so that a live stream does not
        // stall at its first full window.
        let silence = Activation {
            data: vec![0.0; enc.frames.full_len() * hop],
            channels: 1,
        };
        enc.model
            .encode_latent_with(silence, &mut enc.scratch, true)?;
        Ok(enc)
    }

    /// Codes the job's block from its window of samples.
    fn run(&mut self, job: Job, emit: &mut Emit<'_>) -> Result<()> {
        let mut x = self.frames.frames(&job).to_vec();
        let norm = &self.model.manifest.input_normalization;
        if norm.kind == "utterance_rms" {
            let ms = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64;
            let scale = (ms as f32).sqrt() + norm.eps;
            x.iter_mut().for_each(|v| *v /= scale);
        }
        let z = self.model.encode_latent_with(
            Activation {
                data: x,
                channels: 1,
            },
            &mut self.scratch,
            self.frames.is_full(&job),
        )?;
        let frames = z.len();
        let first = self.frames.next - job.start;
        for t in first..first + job.count {
            for (c, v) in self.latent.iter_mut().enumerate() {
                *v = z.data[c * frames + t];
            }
            emit(&self.latent)?;
        }
        self.frames.done(&job);
        Ok(())
    }
}

impl LatentEncoder for WindowedEncoder {
    fn push_frame(&mut self, frame: &[f32], emit: &mut Emit<'_>) -> Result<()> {
        self.frames.push(frame);
        while let Some(job) = self.frames.ready() {
            self.run(job, emit)?;
        }
        Ok(())
    }
    fn drain(&mut self, emit: &mut Emit<'_>) -> Result<()> {
        while let Some(job) = self.frames.remaining() {
            self.run(job, emit)?;
        }
        self.reset()
    }
    fn reset(&mut self) -> Result<()> {
        self.frames.reset();
        Ok(())
    }
    fn lookahead_samples(&self) -> usize {
        self.frames.cfg.lookahead_samples(self.model.hop())
    }
    fn state_bytes(&self) -> usize {
        self.frames.state_bytes() + self.latent.len() * 4
    }
}

/// Cross-fade length at block joins, in samples (10 ms at 16 kHz).
const CROSSFADE: usize = 160;

pub struct WindowedDecoder {
    model: Arc<CodecModel>,
    /// Latent frames (`dim` values each).
    frames: FrameWindow,
    /// The previous window's output just past its block, to cross-fade into.
    tail: Vec<f32>,
    scratch: Vec<f32>,
}

impl WindowedDecoder {
    pub fn new(model: Arc<CodecModel>, cfg: WindowConfig) -> Result<Self> {
        cfg.check(&model)?;
        let dim = model.latent_dim();
        let mut dec = WindowedDecoder {
            model,
            frames: FrameWindow::new(cfg, dim),
            tail: Vec::new(),
            scratch: Vec::new(),
        };
        // As for the encoder: the full window's plan now, not at the first full window.
        let silence = Activation {
            data: vec![0.0; dim * dec.frames.full_len()],
            channels: dim,
        };
        dec.model
            .decode_latent_with(&silence, &mut dec.scratch, true)?;
        Ok(dec)
    }

    fn run(&mut self, job: Job, emit: &mut Emit<'_>) -> Result<()> {
        let (hop, dim) = (self.model.hop(), self.model.latent_dim());
        let frames = job.end - job.start;
        let mut z = Activation {
            data: vec![0.0; dim * frames],
            channels: dim,
        };
        for (t, frame) in self.frames.frames(&job).chunks_exact(dim).enumerate() {
            for (c, &v) in frame.iter().enumerate() {
                z.data[c * frames + t] = v;
            }
        }
        let y = self
            .model
            .decode_latent_with(&z, &mut self.scratch, self.frames.is_full(&job))?;
        let from = (self.frames.next - job.start) * hop;
        let to = from + job.count * hop;
        let mut block = y[from..to].to_vec();
        let fade = CROSSFADE.min(self.tail.len()).min(block.len());
        for (i, v) in block[..fade].iter_mut().enumerate() {
            let w = (i as f32 + 0.5) / fade as f32;
            *v = w * *v + (1.0 - w) * self.tail[i];
        }
        self.tail.clear();
        self.tail
            .extend_from_slice(&y[to..(to + CROSSFADE).min(y.len())]);
        for f in block.chunks(hop) {
            emit(f)?;
        }
        self.frames.done(&job);
        Ok(())
    }
}

impl LatentDecoder for WindowedDecoder {
    fn push_latent(&mut self, z: &[f32], emit: &mut Emit<'_>) -> Result<()> {
        self.frames.push(z);
        while let Some(job) = self.frames.ready() {
            self.run(job, emit)?;
        }
        Ok(())
    }
    fn drain(&mut self, emit: &mut Emit<'_>) -> Result<()> {
        while let Some(job) = self.frames.remaining() {
            self.run(job, emit)?;
        }
        self.reset()
    }
    fn reset(&mut self) -> Result<()> {
        self.frames.reset();
        self.tail.clear();
        Ok(())
    }
    fn lookahead_samples(&self) -> usize {
        self.frames.cfg.lookahead_samples(self.model.hop())
    }
    fn state_bytes(&self) -> usize {
        self.frames.state_bytes() + CROSSFADE * 4
    }
}
