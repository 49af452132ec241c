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

pub struct WindowedEncoder {
    model: Arc<CodecModel>,
    cfg: WindowConfig,
    /// Samples from frame `buf_start` on.
    buf: Vec<f32>,
    buf_start: usize,
    frames_in: usize,
    next: usize,
    latent: Vec<f32>,
    scratch: Vec<f32>,
}

impl WindowedEncoder {
    pub fn new(model: Arc<CodecModel>, cfg: WindowConfig) -> Result<Self> {
        cfg.check(&model)?;
        let dim = model.latent_dim();
        Ok(WindowedEncoder {
            model,
            cfg,
            buf: Vec::new(),
            buf_start: 0,
            frames_in: 0,
            next: 0,
            latent: vec![0.0; dim],
            scratch: Vec::new(),
        })
    }

    /// Codes frames `next..next+count` from the window around them (ending at `end` frames).
    fn run(&mut self, count: usize, end: usize, emit: &mut Emit<'_>) -> Result<()> {
        let hop = self.model.hop();
        let start = self
            .next
            .saturating_sub(self.cfg.context)
            .max(self.buf_start);
        let mut x = self.buf[(start - self.buf_start) * hop..(end - self.buf_start) * hop].to_vec();
        let norm = &self.model.manifest.input_normalization;
        if norm.kind == "utterance_rms" {
            let ms = x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64;
            let scale = (ms as f32).sqrt() + norm.eps;
            x.iter_mut().for_each(|v| *v /= scale);
        }
        let z = self.model.encode_latent(
            Activation {
                data: x,
                channels: 1,
            },
            &mut self.scratch,
        )?;
        let frames = z.len();
        for t in self.next - start..self.next - start + count {
            for (c, v) in self.latent.iter_mut().enumerate() {
                *v = z.data[c * frames + t];
            }
            emit(&self.latent)?;
        }
        self.next += count;
        // Keep only what the next window's context needs.
        let keep_from = self
            .next
            .saturating_sub(self.cfg.context)
            .max(self.buf_start);
        self.buf.drain(..(keep_from - self.buf_start) * hop);
        self.buf_start = keep_from;
        Ok(())
    }
}

impl LatentEncoder for WindowedEncoder {
    fn push_frame(&mut self, frame: &[f32], emit: &mut Emit<'_>) -> Result<()> {
        self.buf.extend_from_slice(frame);
        self.frames_in += 1;
        let (b, la) = (self.cfg.block, self.cfg.lookahead);
        while self.frames_in >= self.next + b + la {
            self.run(b, self.next + b + la, emit)?;
        }
        Ok(())
    }
    fn drain(&mut self, emit: &mut Emit<'_>) -> Result<()> {
        while self.next < self.frames_in {
            let count = self.cfg.block.min(self.frames_in - self.next);
            self.run(count, self.frames_in, emit)?;
        }
        self.reset()
    }
    fn reset(&mut self) -> Result<()> {
        self.buf.clear();
        self.buf_start = 0;
        self.frames_in = 0;
        self.next = 0;
        Ok(())
    }
    fn lookahead_samples(&self) -> usize {
        self.cfg.lookahead_samples(self.model.hop())
    }
    fn state_bytes(&self) -> usize {
        let window = self.cfg.context + self.cfg.block + self.cfg.lookahead;
        (window * self.model.hop() + self.latent.len()) * 4
    }
}

/// Cross-fade length at block joins, in samples (10 ms at 16 kHz).
const CROSSFADE: usize = 160;

pub struct WindowedDecoder {
    model: Arc<CodecModel>,
    cfg: WindowConfig,
    /// Latent frames (frame-major, `dim` each) from frame `buf_start` on.
    buf: Vec<f32>,
    buf_start: usize,
    frames_in: usize,
    next: usize,
    /// The previous window's output just past its block, to cross-fade into.
    tail: Vec<f32>,
    scratch: Vec<f32>,
}

impl WindowedDecoder {
    pub fn new(model: Arc<CodecModel>, cfg: WindowConfig) -> Result<Self> {
        cfg.check(&model)?;
        Ok(WindowedDecoder {
            model,
            cfg,
            buf: Vec::new(),
            buf_start: 0,
            frames_in: 0,
            next: 0,
            tail: Vec::new(),
            scratch: Vec::new(),
        })
    }

    fn run(&mut self, count: usize, end: usize, emit: &mut Emit<'_>) -> Result<()> {
        let (hop, dim) = (self.model.hop(), self.model.latent_dim());
        let start = self
            .next
            .saturating_sub(self.cfg.context)
            .max(self.buf_start);
        let frames = end - start;
        let mut z = Activation {
            data: vec![0.0; dim * frames],
            channels: dim,
        };
        let base = (start - self.buf_start) * dim;
        for t in 0..frames {
            for c in 0..dim {
                z.data[c * frames + t] = self.buf[base + t * dim + c];
            }
        }
        let y = self.model.decode_latent(&z, &mut self.scratch)?;
        let from = (self.next - start) * hop;
        let mut block = y[from..from + count * hop].to_vec();
        let fade = CROSSFADE.min(self.tail.len()).min(block.len());
        for (i, v) in block[..fade].iter_mut().enumerate() {
            let w = (i as f32 + 0.5) / fade as f32;
            *v = w * *v + (1.0 - w) * self.tail[i];
        }
        self.tail.clear();
        self.tail.extend_from_slice(
            &y[from + count * hop..(from + count * hop + CROSSFADE).min(y.len())],
        );
        for f in block.chunks(hop) {
            emit(f)?;
        }
        self.next += count;
        let keep_from = self
            .next
            .saturating_sub(self.cfg.context)
            .max(self.buf_start);
        self.buf.drain(..(keep_from - self.buf_start) * dim);
        self.buf_start = keep_from;
        Ok(())
    }
}

impl LatentDecoder for WindowedDecoder {
    fn push_latent(&mut self, z: &[f32], emit: &mut Emit<'_>) -> Result<()> {
        self.buf.extend_from_slice(z);
        self.frames_in += 1;
        let (b, la) = (self.cfg.block, self.cfg.lookahead);
        while self.frames_in >= self.next + b + la {
            self.run(b, self.next + b + la, emit)?;
        }
        Ok(())
    }
    fn drain(&mut self, emit: &mut Emit<'_>) -> Result<()> {
        while self.next < self.frames_in {
            let count = self.cfg.block.min(self.frames_in - self.next);
            self.run(count, self.frames_in, emit)?;
        }
        self.reset()
    }
    fn reset(&mut self) -> Result<()> {
        self.buf.clear();
        self.tail.clear();
        self.buf_start = 0;
        self.frames_in = 0;
        self.next = 0;
        Ok(())
    }
    fn lookahead_samples(&self) -> usize {
        self.cfg.lookahead_samples(self.model.hop())
    }
    fn state_bytes(&self) -> usize {
        let window = self.cfg.context + self.cfg.block + self.cfg.lookahead;
        (window * self.model.latent_dim() + CROSSFADE) * 4
    }
}
