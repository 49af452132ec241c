//! Residual vector quantisation, done in Rust: greedy nearest codeword per stage on the residual.

use crate::block_matrix::{BLOCK, BlockMatrix};
use crate::error::{Error, Result};

/// Codebooks of all quantizer stages, with each codeword's squared norm cached. Kept twice: as
/// given, `[n_q][size][dim]`, for the residual update and decoding, and for the search as one
/// [`BlockMatrix`] per stage with the codewords as rows: a block's partial sums stay in registers
/// while its codewords stream from memory in order (a dot product per codeword did not vectorise
/// and was 40 % of a streaming frame at 32 quantizers), in half precision when every value is a
/// half (the project's own models), which halves the 8 MB read per frame at 32 quantizers.
pub struct Codebooks {
    pub n_q: usize,
    pub size: usize,
    pub dim: usize,
    embed: Vec<f32>,
    search: Vec<BlockMatrix>,
    /// `[n_q][padded size]`; padding codewords have infinite norm, so they never win.
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
        let padded = padded_size(size);
        let mut norms = vec![f32::INFINITY; n_q * padded];
        for q in 0..n_q {
            for k in 0..size {
                let e = &embed[(q * size + k) * dim..][..dim];
                norms[q * padded + k] = e.iter().map(|v| v * v).sum();
            }
        }
        let search = (0..n_q)
            .map(|q| BlockMatrix::new(size, dim, |k, d| embed[(q * size + k) * dim + d]))
            .collect();
        Ok(Codebooks {
            n_q,
            size,
            dim,
            embed,
            search,
            norms,
        })
    }

    /// Codeword `k` of quantizer `q`.
    fn word(&self, q: usize, k: usize) -> &[f32] {
        &self.embed[(q * self.size + k) * self.dim..][..self.dim]
    }

    /// Quantises one latent frame in place (it becomes the final residual); writes `n_q` codes.
    /// `dist` is scratch. FunCodec picks argmax of -(|r|^2 - 2 r.e + |e|^2); |r|^2
    /// is the same for every e, so the first index minimising |e|^2 - 2 r.e wins, as torch's argmax
    /// keeps the first maximum. (Summation order differs from torch's BLAS at float32 resolution:
    /// only exact ties can pick differently, as the parity tests check.)
    pub fn encode_frame(&self, residual: &mut [f32], codes: &mut [u16], dist: &mut Vec<f32>) {
        let n_q = codes.len();
        self.encode_frames(residual, &[n_q], codes, n_q, dist);
    }

    /// [`Self::encode_frame`] for `n_qs.len()` frames at once: frame `j` is
    /// `residuals[j * dim..][..dim]` (quantised in place) with `n_qs[j]` quantizers, its codes go to
    /// `codes[j * stride..][..n_qs[j]]`. Each block of codewords is read once for all frames (a
    /// single frame streams the whole 8 MB codebook set from memory), and every frame gets the bits
    /// `encode_frame` gives it alone: the same products are summed in the same order.
    pub fn encode_frames(
        &self,
        residuals: &mut [f32],
        n_qs: &[usize],
        codes: &mut [u16],
        stride: usize,
        dist: &mut Vec<f32>,
    ) {
        let (k, dim, padded) = (n_qs.len(), self.dim, padded_size(self.size));
        debug_assert!(residuals.len() >= k * dim && codes.len() >= k * stride);
        dist.resize(k * padded, 0.0);
        let stages = n_qs.iter().copied().max().unwrap_or(0).min(self.n_q);
        for q in 0..stages {
            // dist[j * padded + k] = e_k · r_j for the frames still quantising at stage q.
            self.search[q].apply_many(residuals, n_qs, q, dist, padded);
            let norms = &self.norms[q * padded..][..padded];
            for j in (0..k).filter(|&j| n_qs[j] > q) {
                let mut best = (f32::INFINITY, 0usize);
                for (i, (&n, &dot)) in norms.iter().zip(&dist[j * padded..]).enumerate() {
                    let d = n - 2.0 * dot;
                    if d < best.0 {
                        best = (d, i);
                    }
                }
                codes[j * stride + q] = best.1 as u16;
                let r = &mut residuals[j * dim..][..dim];
                for (r, &e) in r.iter_mut().zip(self.word(q, best.1)) {
                    *r -= e;
                }
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
            for (o, &e) in out.iter_mut().zip(self.word(q, c as usize)) {
                *o += e;
            }
        }
        Ok(())
    }
}

/// Codewords per quantizer in the search's layout: `size` rounded up to whole blocks.
fn padded_size(size: usize) -> usize {
    size.div_ceil(BLOCK) * BLOCK
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_matrix::Storage;

    /// The blocked search against a plain per-codeword search, code for code and residual bit for
    /// bit, for sizes that do and do not fill whole blocks.
    #[test]
    fn blocked_search_equals_plain_search() {
        for (n_q, size, dim) in [(4, 1024, 64), (3, 40, 8), (2, 7, 3), (1, 32, 1)] {
            let embed: Vec<f32> = (0..n_q * size * dim)
                .map(|i| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * 1.7)
                .collect();
            let bytes: Vec<u8> = embed.iter().flat_map(|v| v.to_le_bytes()).collect();
            let cb = Codebooks::from_le_bytes(&bytes, n_q, size, dim).unwrap();
            for frame in 0..20 {
                let x: Vec<f32> = (0..dim)
                    .map(|d| ((d + frame * dim) as f32 * 0.37).sin() * 2.0)
                    .collect();
                let mut got_r = x.clone();
                let mut got = vec![0u16; n_q];
                cb.encode_frame(&mut got_r, &mut got, &mut Vec::new());
                let mut want_r = x.clone();
                for q in 0..n_q {
                    let mut best = (f32::INFINITY, 0usize);
                    for k in 0..size {
                        let e = &embed[(q * size + k) * dim..][..dim];
                        let (mut dot, mut n) = (0.0f32, 0.0f32);
                        for d in 0..dim {
                            dot += e[d] * want_r[d];
                            n += e[d] * e[d];
                        }
                        if n - 2.0 * dot < best.0 {
                            best = (n - 2.0 * dot, k);
                        }
                    }
                    assert_eq!(
                        got[q] as usize, best.1,
                        "size {size} dim {dim} frame {frame} q {q}"
                    );
                    for d in 0..dim {
                        want_r[d] -= embed[(q * size + best.1) * dim + d];
                    }
                }
                let same = got_r
                    .iter()
                    .zip(&want_r)
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same,
                    "residual differs: size {size} dim {dim} frame {frame}"
                );
            }
        }
    }

    /// The shipped default model's codebooks are half-precision values (exported with
    /// `--weights int8`, which rounds codebooks to halves), so the search keeps them in half
    /// precision where the CPU converts it.
    #[test]
    fn default_model_codebooks_searched_in_half_precision() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/default/codebooks.f32"
        );
        let cb = Codebooks::from_le_bytes(&std::fs::read(path).unwrap(), 32, 1024, 64).unwrap();
        let want = if crate::block_matrix::half_supported() {
            Storage::Half
        } else {
            Storage::Single
        };
        assert!(cb.search.iter().all(|m| m.storage() == want));
    }

    /// Several frames at once, each with its own quantizer count, give each frame's own bits.
    #[test]
    fn frames_at_once_equal_one_at_a_time() {
        let (n_q, size, dim) = (6, 100, 16);
        let embed: Vec<f32> = (0..n_q * size * dim)
            .map(|i| ((i * 104_729 % 4001) as f32 / 2000.0 - 1.0) * 0.9)
            .collect();
        let bytes: Vec<u8> = embed.iter().flat_map(|v| v.to_le_bytes()).collect();
        let cb = Codebooks::from_le_bytes(&bytes, n_q, size, dim).unwrap();
        let n_qs = [6, 1, 3, 6, 2];
        let frames: Vec<f32> = (0..n_qs.len() * dim)
            .map(|i| (i as f32 * 0.61).cos() * 1.5)
            .collect();
        let mut batch_r = frames.clone();
        let mut batch_codes = vec![u16::MAX; n_qs.len() * n_q];
        cb.encode_frames(&mut batch_r, &n_qs, &mut batch_codes, n_q, &mut Vec::new());
        for (j, &nq) in n_qs.iter().enumerate() {
            let mut r = frames[j * dim..][..dim].to_vec();
            let mut c = vec![0u16; nq];
            cb.encode_frame(&mut r, &mut c, &mut Vec::new());
            assert_eq!(&batch_codes[j * n_q..][..nq], &c[..], "frame {j}");
            assert!(
                batch_codes[j * n_q + nq..(j + 1) * n_q]
                    .iter()
                    .all(|&c| c == u16::MAX)
            );
            let same = r
                .iter()
                .zip(&batch_r[j * dim..])
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "frame {j}: residual differs");
        }
    }
}
