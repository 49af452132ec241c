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
                let best = nearest(norms, &dist[j * padded..][..padded]);
                codes[j * stride + q] = best as u16;
                let r = &mut residuals[j * dim..][..dim];
                for (r, &e) in r.iter_mut().zip(self.word(q, best)) {
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

/// The first index `i` with the smallest `norms[i] - 2 dots[i]`, as a scan that keeps the first
/// strictly smaller value finds it: NaN never wins, and 0 when no value is below infinity.
fn nearest(norms: &[f32], dots: &[f32]) -> usize {
    assert_eq!(norms.len(), dots.len());
    #[cfg(target_arch = "x86_64")]
    if norms.len().is_multiple_of(8) && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2, and both slices hold whole groups of eight.
        return unsafe { nearest_avx2(norms, dots) };
    }
    nearest_plain(norms, dots)
}

fn nearest_plain(norms: &[f32], dots: &[f32]) -> usize {
    let mut best = (f32::INFINITY, 0usize);
    for (i, (&n, &dot)) in norms.iter().zip(dots).enumerate() {
        let d = n - 2.0 * dot;
        if d < best.0 {
            best = (d, i);
        }
    }
    best.1
}

/// [`nearest_plain`] eight lanes at a time: each lane keeps the first strictly smaller value of
/// its indices (the same distances, computed with the same two roundings), then the smallest
/// value over the lanes wins, the lowest index among equal ones. The scalar scan cost 0.5–2.5 µs
/// of a 3.8–5.6 µs quantizer stage with the codebooks in cache (1024 codewords of 64).
///
/// # Safety
/// The CPU has AVX2; both slices have the same length, a multiple of eight.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn nearest_avx2(norms: &[f32], dots: &[f32]) -> usize {
    use std::arch::x86_64::*;
    let two = _mm256_set1_ps(2.0);
    let eight = _mm256_set1_epi32(8);
    let mut best = _mm256_set1_ps(f32::INFINITY);
    let mut best_i = _mm256_setzero_si256();
    let mut index = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (n, dot) in norms.chunks_exact(8).zip(dots.chunks_exact(8)) {
        // SAFETY: eight floats in each chunk; unaligned loads.
        let (n, dot) = unsafe { (_mm256_loadu_ps(n.as_ptr()), _mm256_loadu_ps(dot.as_ptr())) };
        let d = _mm256_sub_ps(n, _mm256_mul_ps(two, dot));
        // Ordered less-than: false for NaN, as in the scalar comparison.
        let smaller = _mm256_cmp_ps::<_CMP_LT_OQ>(d, best);
        best = _mm256_blendv_ps(best, d, smaller);
        best_i = _mm256_castps_si256(_mm256_blendv_ps(
            _mm256_castsi256_ps(best_i),
            _mm256_castsi256_ps(index),
            smaller,
        ));
        index = _mm256_add_epi32(index, eight);
    }
    let (mut values, mut indices) = ([0.0f32; 8], [0i32; 8]);
    // SAFETY: eight values into arrays of eight.
    unsafe {
        _mm256_storeu_ps(values.as_mut_ptr(), best);
        _mm256_storeu_si256(indices.as_mut_ptr() as *mut __m256i, best_i);
    }
    let mut out = (f32::INFINITY, 0usize);
    for (&v, &i) in values.iter().zip(&indices) {
        let i = i as usize;
        if v < out.0 || (v == out.0 && v < f32::INFINITY && i < out.1) {
            out = (v, i);
        }
    }
    out.1
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

    /// The vectorised nearest-codeword pick equals the plain scan: ties (the first index wins,
    /// including 0.0 against -0.0), NaN (never wins), infinities (padding; 0 when nothing is
    /// finite), and a minimum in any lane.
    #[test]
    fn nearest_equals_the_plain_scan() {
        let len = 64;
        let base: Vec<f32> = (0..len)
            .map(|i| ((i * 37 % 64) as f32 - 20.0) * 0.5)
            .collect();
        let mut cases: Vec<(Vec<f32>, Vec<f32>)> = vec![(vec![1.0; len], base.clone())];
        for at in [0, 5, 13, 40, 63] {
            let mut dots = base.clone();
            dots[at] = 100.0; // the unique minimum
            cases.push((vec![1.0; len], dots.clone()));
            dots[(at + 17) % len] = 100.0; // a tie with a later or earlier index
            cases.push((vec![1.0; len], dots.clone()));
            dots[at] = f32::NAN;
            cases.push((vec![1.0; len], dots));
        }
        // Distances 0.0 and -0.0 (norm -0.0 minus 2 · 0.0) are equal: the first index wins.
        for (a, b) in [(0.0f32, -0.0f32), (-0.0, 0.0)] {
            let mut norms = vec![1.0f32; len];
            (norms[3], norms[9]) = (a, b);
            cases.push((norms, vec![0.0; len]));
        }
        cases.push((vec![f32::INFINITY; len], base.clone()));
        cases.push((vec![1.0; len], vec![f32::NAN; len]));
        let mut padded = vec![f32::INFINITY; len];
        padded[..50].fill(1.0);
        cases.push((padded, base));
        for (k, (norms, dots)) in cases.iter().enumerate() {
            assert_eq!(nearest(norms, dots), nearest_plain(norms, dots), "case {k}");
        }
        assert_eq!(nearest(&cases[4].0, &cases[4].1), 5); // the unique minimum at 5
        assert_eq!(nearest(&cases[16].0, &cases[16].1), 3);
        assert_eq!(nearest(&cases[17].0, &cases[17].1), 3);
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
