//! Residual vector quantisation, done in Rust: greedy nearest codeword per stage on the residual.

use crate::error::{Error, Result};

/// Codebooks of all quantizer stages, stored transposed, `[n_q][dim][size]`, with each codeword's
/// squared norm cached. Transposed, the nearest-codeword search is `dim` AXPYs over `size`
/// contiguous distances, which vectorises fully (a dot product per codeword did not: it was 40 % of
/// a streaming frame at 32 quantizers).
pub struct Codebooks {
    pub n_q: usize,
    pub size: usize,
    pub dim: usize,
    embed_t: Vec<f32>,
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
        let mut embed_t = vec![0.0f32; embed.len()];
        for q in 0..n_q {
            for k in 0..size {
                for d in 0..dim {
                    embed_t[(q * dim + d) * size + k] = embed[(q * size + k) * dim + d];
                }
            }
        }
        Ok(Codebooks {
            n_q,
            size,
            dim,
            embed_t,
            norms,
        })
    }

    /// Component `d` of codeword `k` of quantizer `q`.
    fn at(&self, q: usize, k: usize, d: usize) -> f32 {
        self.embed_t[(q * self.dim + d) * self.size + k]
    }

    /// Quantises one latent frame in place (it becomes the final residual); writes `n_q` codes.
    /// `dist` is scratch of `size` values. FunCodec picks argmax of -(|r|^2 - 2 r.e + |e|^2); |r|^2
    /// is the same for every e, so the first index minimising |e|^2 - 2 r.e wins, as torch's argmax
    /// keeps the first maximum. (Summation order differs from torch's BLAS at float32 resolution:
    /// only exact ties can pick differently, as the parity tests check.)
    pub fn encode_frame(&self, residual: &mut [f32], codes: &mut [u16], dist: &mut Vec<f32>) {
        dist.resize(self.size, 0.0);
        for (q, code) in codes.iter_mut().enumerate() {
            let rows = &self.embed_t[q * self.dim * self.size..(q + 1) * self.dim * self.size];
            dist.fill(0.0);
            for (row, &r) in rows.chunks_exact(self.size).zip(residual.iter()) {
                for (acc, &e) in dist.iter_mut().zip(row) {
                    *acc += e * r;
                }
            }
            let norms = &self.norms[q * self.size..(q + 1) * self.size];
            let mut best = (f32::INFINITY, 0usize);
            for (k, (&n, &dot)) in norms.iter().zip(dist.iter()).enumerate() {
                let d = n - 2.0 * dot;
                if d < best.0 {
                    best = (d, k);
                }
            }
            *code = best.1 as u16;
            for (d, r) in residual.iter_mut().enumerate() {
                *r -= self.at(q, best.1, d);
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
            for (d, o) in out.iter_mut().enumerate() {
                *o += self.at(q, c as usize, d);
            }
        }
        Ok(())
    }
}
