//! Offline encode/decode, exactly as FunCodec does it for one whole utterance (batch size 1).

use crate::error::{Error, Result};
use crate::model::{Activation, CodecModel};
use crate::stream::{self, StreamMode};

/// Codes of a whole stream: `frames` frames of `n_q` codes each, stored frame-major so a frame is a
/// contiguous slice (what the bitstream and the streaming API move around).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Codes {
    pub n_q: usize,
    pub frames: usize,
    pub data: Vec<u16>,
}

impl Codes {
    pub fn new(n_q: usize) -> Codes {
        Codes {
            n_q,
            frames: 0,
            data: Vec::new(),
        }
    }
    pub fn frame(&self, t: usize) -> &[u16] {
        &self.data[t * self.n_q..(t + 1) * self.n_q]
    }
    pub fn push_frame(&mut self, codes: &[u16]) -> Result<()> {
        if codes.len() != self.n_q {
            return Err(Error::Codes(format!(
                "frame has {} codes, stream has {} quantizers",
                codes.len(),
                self.n_q
            )));
        }
        self.data.extend_from_slice(codes);
        self.frames += 1;
        Ok(())
    }
    /// FunCodec's layout (`codecs.txt`): one row per quantizer.
    pub fn to_rows(&self) -> Vec<Vec<u16>> {
        (0..self.n_q)
            .map(|q| {
                (0..self.frames)
                    .map(|t| self.data[t * self.n_q + q])
                    .collect()
            })
            .collect()
    }
    pub fn from_rows(rows: &[Vec<u16>]) -> Result<Codes> {
        let n_q = rows.len();
        let frames = rows.first().map_or(0, Vec::len);
        if n_q == 0 {
            return Err(Error::Codes("no quantizer rows".into()));
        }
        if rows.iter().any(|r| r.len() != frames) {
            return Err(Error::Codes("quantizer rows have different lengths".into()));
        }
        let data = (0..frames)
            .flat_map(|t| rows.iter().map(move |r| r[t]))
            .collect();
        Ok(Codes { n_q, frames, data })
    }
    /// Keeps the first `n_q` quantizers (a lower bit rate), as FunCodec's decoder does.
    pub fn truncated(&self, n_q: usize) -> Codes {
        let n_q = n_q.min(self.n_q);
        let data = (0..self.frames)
            .flat_map(|t| self.frame(t)[..n_q].iter().copied())
            .collect();
        Codes {
            n_q,
            frames: self.frames,
            data,
        }
    }
}

/// Result of encoding one utterance.
#[derive(Debug, Clone)]
pub struct Encoded {
    pub codes: Codes,
    /// Number of input samples (the decoder produces `hop × frames`; trim to this).
    pub samples: usize,
    /// The utterance RMS the input was divided by (FunCodec `scale`); multiply it back to restore
    /// the input level, which FunCodec's recipe does not do (`use_scale false`).
    pub scale: f32,
}

impl CodecModel {
    /// FunCodec's `bit_width` rule: `n_q = clamp(floor(bw / bits_per_quantizer), 1, N)`; `bw <= 0`
    /// means every quantizer.
    pub fn n_q_for_bitrate(&self, bit_width: i64) -> usize {
        let n = self.num_quantizers();
        if bit_width <= 0 {
            return n;
        }
        ((bit_width as f64 / self.bits_per_quantizer()).floor() as usize).clamp(1, n)
    }

    /// log2(codebook size) × rate / hop, from the quantizer's config values as FunCodec computes it.
    pub fn bits_per_quantizer(&self) -> f64 {
        let q = &self.manifest.quantizer;
        (q.codebook_size as f64).log2() * q.bitrate_sample_rate as f64 / q.bitrate_hop as f64
    }

    pub fn check_n_q(&self, n_q: usize) -> Result<()> {
        if n_q == 0 || n_q > self.num_quantizers() {
            return Err(Error::Argument(format!(
                "n_q must be 1..={}, got {n_q}",
                self.num_quantizers()
            )));
        }
        Ok(())
    }

    /// Encodes a whole utterance of mono samples at the model rate with `n_q` quantizers.
    ///
    /// Models shipped with step graphs only (the project's causal default) run frame by frame, the
    /// last frame zero-padded: the same codes a stream produces for any split of the input.
    pub fn encode(&self, pcm: &[f32], n_q: usize) -> Result<Encoded> {
        self.check_n_q(n_q)?;
        check_audio(pcm)?;
        if !self.has_offline_graphs() {
            return self.encode_by_steps(pcm, n_q);
        }
        let mut scale = 1.0f32;
        let mut x = pcm.to_vec();
        if self.manifest.input_normalization.kind == "utterance_rms" {
            // FunCodec: x / (sqrt(mean(x^2)) + 1e-8), eps added after the root.
            let mean_sq =
                (x.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>() / x.len() as f64) as f32;
            scale = mean_sq.sqrt() + self.manifest.input_normalization.eps;
            x.iter_mut().for_each(|v| *v /= scale);
        }
        let mut scratch = Vec::new();
        let z = self.encode_latent(
            Activation {
                data: x,
                channels: 1,
            },
            &mut scratch,
        )?;
        let (dim, frames) = (z.channels, z.len());
        let mut codes = Codes {
            n_q,
            frames,
            data: vec![0; n_q * frames],
        };
        let mut residual = vec![0.0f32; dim];
        let mut scratch = self.codebooks.scratch();
        for t in 0..frames {
            residual
                .iter_mut()
                .enumerate()
                .for_each(|(c, r)| *r = z.data[c * frames + t]);
            self.codebooks.encode_frame(
                &mut residual,
                &mut codes.data[t * n_q..(t + 1) * n_q],
                &mut scratch,
            );
        }
        Ok(Encoded {
            codes,
            samples: pcm.len(),
            scale,
        })
    }

    /// Decodes codes to `hop × frames` samples at the model's own output level.
    pub fn decode(&self, codes: &Codes) -> Result<Vec<f32>> {
        self.check_n_q(codes.n_q)?;
        if codes.frames == 0 {
            return Ok(Vec::new());
        }
        if !self.has_offline_graphs() {
            return self.decode_by_steps(codes);
        }
        let dim = self.latent_dim();
        let mut z = Activation {
            data: vec![0.0; dim * codes.frames],
            channels: dim,
        };
        let mut frame = vec![0.0f32; dim];
        for t in 0..codes.frames {
            self.codebooks.decode_frame(codes.frame(t), &mut frame)?;
            frame
                .iter()
                .enumerate()
                .for_each(|(c, v)| z.data[c * codes.frames + t] = *v);
        }
        self.decode_latent(&z, &mut Vec::new())
    }
}

impl CodecModel {
    fn encode_by_steps(&self, pcm: &[f32], n_q: usize) -> Result<Encoded> {
        Ok(Encoded {
            codes: stream::encode_all(self, pcm, n_q, StreamMode::Exact)?,
            samples: pcm.len(),
            scale: 1.0,
        })
    }

    fn decode_by_steps(&self, codes: &Codes) -> Result<Vec<f32>> {
        stream::decode_all(self, codes, StreamMode::Exact)
    }
}

/// Rejects input FunCodec would turn into NaN codes: empty, NaN or infinite samples.
pub fn check_audio(pcm: &[f32]) -> Result<()> {
    if pcm.is_empty() {
        return Err(Error::Audio("no samples".into()));
    }
    if let Some(i) = pcm.iter().position(|v| !v.is_finite()) {
        return Err(Error::Audio(format!(
            "sample {i} is {} (NaN/inf audio cannot be encoded)",
            pcm[i]
        )));
    }
    Ok(())
}

/// FunCodec's `save_audio(rescale=True)`: scale so the peak is at most 0.99 (no clipping).
pub fn peak_limit(pcm: &mut [f32]) {
    let peak = pcm.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if peak > 0.99 {
        let g = 0.99 / peak;
        pcm.iter_mut().for_each(|v| *v *= g);
    }
}
