//! Residual vector quantisation, done in Rust: greedy nearest codeword per stage on the residual.

use crate::error::{Error, Result};

/// Codebooks of all quantizer stages, `[n_q][size][dim]`, with each codeword's squared norm cached.
pub struct Codebooks {
    pub n_q: usize,
    pub size: usize,
    pub dim: usize,
    embed: Vec<f32>,
    norms: Vec<f32>,
}

impl Codebooks {
    pub fn from_le_bytes(bytes: &[u8], n_q: usize, size: usize, dim: usize) -> Result<Self> {
        let want = n_q * size * dim * 4;
        if bytes.len() != want {
            return Err(Error::Codes(format!(
                "codebook file has {} bytes, expected {want}",
                bytes.len()
            )));
        }
        let embed: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        if embed.iter().any(|v| !v.is_finite()) {
            return Err(Error::Codes("codebooks contain NaN or infinity".into()));
        }
        let norms = embed
            .chunks_exact(dim)
            .map(|e| e.iter().map(|v| v * v).sum())
            .collect();
        Ok(Codebooks {
            n_q,
            size,
            dim,
            embed,
            norms,
        })
    }

    pub fn codeword(&self, q: usize, k: usize) -> &[f32] {
        let at = (q * self.size + k) * self.dim;
        &self.embed[at..at + self.dim]
    }

    /// Quantises one latent frame in place (it becomes the final residual); writes `n_q` codes.
    /// FunCodec picks argmax of -(|r|^2 - 2 r.e + |e|^2); |r|^2 is the same for every e, so the
    /// first index minimising |e|^2 - 2 r.e wins, as torch's argmax keeps the first maximum.
    pub fn encode_frame(&self, residual: &mut [f32], codes: &mut [u16]) {
        for (q, code) in codes.iter_mut().enumerate() {
            let mut best = (f32::INFINITY, 0usize);
            for k in 0..self.size {
                let e = self.codeword(q, k);
                let dot = dot(e, residual);
                let d = self.norms[q * self.size + k] - 2.0 * dot;
                if d < best.0 {
                    best = (d, k);
                }
            }
            *code = best.1 as u16;
            for (r, e) in residual.iter_mut().zip(self.codeword(q, best.1)) {
                *r -= e;
            }
        }
    }

    /// Sum of the codewords of the quantizers present (never padded with code 0: 0 is a real word).
    pub fn decode_frame(&self, codes: &[u16], out: &mut [f32]) -> Result<()> {
        if codes.len() > self.n_q {
            return Err(Error::Codes(format!(
                "{} quantizers given, model has {}",
                codes.len(),
                self.n_q
            )));
        }
        out.fill(0.0);
        for (q, &c) in codes.iter().enumerate() {
            if c as usize >= self.size {
                return Err(Error::Codes(format!(
                    "code {c} out of range for codebook size {}",
                    self.size
                )));
            }
            for (o, e) in out.iter_mut().zip(self.codeword(q, c as usize)) {
                *o += e;
            }
        }
        Ok(())
    }
}

/// Inner product with 8 independent partial sums: LLVM vectorises this, a single running f32 sum it
/// may not reorder. (Rounding then differs from torch's BLAS at float32 resolution: only exact ties
/// can pick differently, as the parity tests check.)
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ac, bc) = (a.chunks_exact(8), b.chunks_exact(8));
    let tail: f32 = ac
        .remainder()
        .iter()
        .zip(bc.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ac.zip(bc) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
