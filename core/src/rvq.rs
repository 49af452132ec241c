//! Residual vector quantisation, done in Rust: greedy nearest codeword per stage on the residual.
//!
//! Each stage's search is in two passes. A coarse pass scores every codeword with integer
//! products: the codewords rounded to 8-bit integers (a scale per codeword), the residual to
//! 7-bit ones (a scale per stage), with a bound on each score's error that follows from the
//! rounding errors (Cauchy-Schwarz) plus a margin for float rounding. Only the codewords whose
//! score could still be the smallest (typically one to three of 1024) are then scored exactly,
//! in single precision and in the order a plain per-codeword loop sums, so the codes are those
//! of the exhaustive search, bit for bit. The coarse pass reads 2 MB per frame at 32
//! quantizers, where the exhaustive search read the codebooks in half precision (4 MB) and
//! converted each value, which was 15-20 % of a streaming frame at 8 kbit/s.

use crate::error::{Error, Result};

/// Codebooks of all quantizer stages, as given (`[n_q][size][dim]`, for the exact scores, the
/// residual update and decoding), with each codeword's squared norm, and rounded for the coarse
/// pass ([`Coarse`]).
pub struct Codebooks {
    pub n_q: usize,
    pub size: usize,
    pub dim: usize,
    embed: Vec<f32>,
    coarse: Coarse,
}

/// Codewords in the coarse pass's lanes: one codeword per 32-bit lane of a 256-bit register.
const LANES: usize = 8;

/// The codebooks rounded for the coarse pass. Codeword `k` of stage `q` is `scale[k] · ê[k] +
/// δ[k]` with `ê` 8-bit integers and `|δ[k]| ≤ err[k]`. Per-codeword values are laid out
/// `[n_q][size rounded up to LANES]`; padding codewords have infinite norms and never win.
struct Coarse {
    /// `[n_q][size / LANES rounded up][quads][LANES][4]`: for each group of eight codewords and
    /// each four dimensions, the four values of every codeword in turn, as the unsigned-by-signed
    /// byte product instruction (`vpmaddubsw`) reads them; zeros pad the last group and `dim`.
    words: Vec<i8>,
    /// Dimensions taken four at a time: `dim` rounded up to a multiple of four, over four.
    quads: usize,
    /// Each codeword's squared norm (summed as the exact scores sum), scale, rounding error
    /// bound and length (both rounded up), and the sum of its integers.
    norms: Vec<f32>,
    scale: Vec<f32>,
    err: Vec<f32>,
    len: Vec<f32>,
    sums: Vec<i32>,
}

/// The residual is rounded to integers in `-RANGE..=RANGE` and offset by `RANGE + 1` to be
/// unsigned: two products of at most 127 · 127 then fit `vpmaddubsw`'s 16-bit sums unsaturated.
/// The offset's share, `(RANGE + 1) · Σ ê`, is taken off with the codeword's integer sum.
const RANGE: i32 = 63;
// The vectorised pass multiplies the integer sums by RANGE + 1 as a shift by 6.
const _: () = assert!(RANGE + 1 == 1 << 6);

/// Scratch for the search, reused from frame to frame so that it does not allocate.
#[derive(Default)]
pub struct SearchScratch {
    /// The residual rounded to integers and offset to unsigned bytes, four dimensions per value
    /// (the first in the low byte).
    quads: Vec<u32>,
    /// Per codeword, the lower bound of its score (or, when every codeword is scored exactly,
    /// its dot product with the residual).
    lo: Vec<f32>,
    /// The codewords left to score exactly.
    candidates: Vec<u32>,
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
        let coarse = Coarse::new(&embed, n_q, size, dim);
        Ok(Codebooks {
            n_q,
            size,
            dim,
            embed,
            coarse,
        })
    }

    /// Scratch sized for these codebooks, so that the first search does not allocate either.
    pub fn scratch(&self) -> SearchScratch {
        SearchScratch {
            quads: vec![0; self.coarse.quads],
            lo: vec![0.0; padded(self.size)],
            candidates: Vec::with_capacity(self.size),
        }
    }

    /// Codeword `k` of quantizer `q`.
    fn word(&self, q: usize, k: usize) -> &[f32] {
        &self.embed[(q * self.size + k) * self.dim..][..self.dim]
    }

    /// Quantises one latent frame in place (it becomes the final residual); writes `n_q` codes.
    /// FunCodec picks argmax of -(|r|^2 - 2 r.e + |e|^2); |r|^2 is the same for every e, so the
    /// first index minimising |e|^2 - 2 r.e wins, as torch's argmax keeps the first maximum.
    /// (Summation order differs from torch's BLAS at float32 resolution: only exact ties can pick
    /// differently, as the parity tests check.)
    pub fn encode_frame(
        &self,
        residual: &mut [f32],
        codes: &mut [u16],
        scratch: &mut SearchScratch,
    ) {
        for (q, code) in codes.iter_mut().enumerate().take(self.n_q) {
            let best = self.nearest_word(q, residual, scratch);
            *code = best as u16;
            for (r, &e) in residual.iter_mut().zip(self.word(q, best)) {
                *r -= e;
            }
        }
    }

    /// [`Self::encode_frame`] for `n_qs.len()` frames: frame `j` is `residuals[j * dim..][..dim]`
    /// (quantised in place) with `n_qs[j]` quantizers, its codes go to
    /// `codes[j * stride..][..n_qs[j]]`. Stage by stage, so that a stage's coarse codewords
    /// (64 KB) are read from cache for every frame but the first.
    pub fn encode_frames(
        &self,
        residuals: &mut [f32],
        n_qs: &[usize],
        codes: &mut [u16],
        stride: usize,
        scratch: &mut SearchScratch,
    ) {
        let dim = self.dim;
        debug_assert!(residuals.len() >= n_qs.len() * dim && codes.len() >= n_qs.len() * stride);
        let stages = n_qs.iter().copied().max().unwrap_or(0).min(self.n_q);
        for q in 0..stages {
            for (j, _) in n_qs.iter().enumerate().filter(|(_, n)| **n > q) {
                let r = &mut residuals[j * dim..][..dim];
                let best = self.nearest_word(q, r, scratch);
                codes[j * stride + q] = best as u16;
                for (r, &e) in r.iter_mut().zip(self.word(q, best)) {
                    *r -= e;
                }
            }
        }
    }

    /// The first codeword `k` of stage `q` with the smallest `|e_k|^2 - 2 r.e_k` as a plain loop
    /// computes it (dot products summed dimension by dimension, then that expression): NaN never
    /// wins, and 0 when nothing is below infinity. See the module doc for the two passes.
    fn nearest_word(&self, q: usize, r: &[f32], scratch: &mut SearchScratch) -> usize {
        let (size, dim, c) = (self.size, self.dim, &self.coarse);
        let stage = c.stage(q, size);
        let norms = &stage.norms[..size];
        let max = r.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        // A residual of zeros, a tiny or huge one, NaN or infinity: score every codeword exactly
        // (the bounds below assume finite, representable products).
        if !(max > 1e-30 && max < 1e15) || r.iter().any(|v| !v.is_finite()) {
            scratch.lo.resize(size, 0.0);
            for (k, d) in scratch.lo.iter_mut().enumerate() {
                *d = exact_dot(self.word(q, k), r);
            }
            return nearest(norms, &scratch.lo[..size]);
        }
        // The residual as integers: r = s_r · r̂ + δr. Norms in f64, rounded up.
        let s_r = max / RANGE as f32;
        let inv = RANGE as f32 / max;
        let (mut r_hat2, mut dr2) = (0.0f64, 0.0f64);
        scratch.quads.clear();
        scratch.quads.resize(c.quads, 0);
        for (d, &v) in r.iter().enumerate() {
            // Rounded by hand: `round` is a library call without SSE4.1 (any rounding will do,
            // δr is measured from the integer chosen).
            let x = v * inv;
            let i = ((x + 0.5f32.copysign(x)) as i32).clamp(-RANGE, RANGE);
            r_hat2 += (i as f64) * (i as f64);
            let e = v as f64 - s_r as f64 * i as f64;
            dr2 += e * e;
            scratch.quads[d / 4] |= ((i + RANGE + 1) as u32) << (8 * (d % 4));
        }
        let up = |x: f64| (x * (1.0 + 1e-6)) as f32;
        let r_hat = up(r_hat2.sqrt() * s_r as f64);
        let dr = up(dr2.sqrt());
        let r_len = r_hat + dr;
        // The exact score of codeword k is a_k ± bound_k, with a_k = |e_k|^2 - 2 s_r s_k (r̂.ê_k)
        // and bound_k = 2 (|s_r r̂| err_k + |δr| len_k) + float rounding: of the exact score
        // (dim + 2 roundings of terms up to |r| len_k each) and of a_k (a few of |e_k|^2 and of
        // 2 |r| (len_k + err_k)), taken four times over.
        let u = f32::EPSILON / 2.0;
        let slack = Slack {
            two_s_r: 2.0 * s_r,
            err: 2.0 * r_hat + 40.0 * u * r_len,
            len: 2.0 * dr + 4.0 * (dim as f32 + 8.0) * u * 2.0 * r_len,
            norm: 16.0 * u,
        };
        scratch.lo.resize(padded(size), 0.0);
        candidates(
            &stage,
            &scratch.quads,
            &slack,
            &mut scratch.lo,
            &mut scratch.candidates,
        );
        // In index order: the first with the strictly smallest exact score is the plain
        // search's pick.
        let mut best = (f32::INFINITY, 0usize);
        for &k in scratch.candidates.iter().filter(|&&k| (k as usize) < size) {
            let k = k as usize;
            let score = norms[k] - 2.0 * exact_dot(self.word(q, k), r);
            if score < best.0 {
                best = (score, k);
            }
        }
        best.1
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

impl Coarse {
    fn new(embed: &[f32], n_q: usize, size: usize, dim: usize) -> Coarse {
        let quads = dim.div_ceil(4);
        let per = padded(size);
        let mut words = vec![0i8; n_q * per * quads * 4];
        let mut norms = vec![f32::INFINITY; n_q * per];
        let (mut scale, mut err, mut len) = (
            vec![0.0; n_q * per],
            vec![0.0; n_q * per],
            vec![0.0; n_q * per],
        );
        let mut sums = vec![0; n_q * per];
        for q in 0..n_q {
            for k in 0..size {
                let at = q * per + k;
                let e = &embed[(q * size + k) * dim..][..dim];
                // The order the exact scores' dot products sum in.
                norms[at] = e.iter().fold(0.0f32, |s, v| s + v * v);
                let max = e.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let s = max / 127.0;
                let (mut e2, mut d2) = (0.0f64, 0.0f64);
                let group = &mut words[(at - k % LANES) * quads * 4..];
                for (d, &v) in e.iter().enumerate() {
                    let i = if s > 0.0 {
                        (v / s).round().clamp(-127.0, 127.0)
                    } else {
                        0.0
                    };
                    let delta = v as f64 - s as f64 * i as f64;
                    (e2, d2) = (e2 + (v as f64).powi(2), d2 + delta * delta);
                    group[((d / 4) * LANES + k % LANES) * 4 + d % 4] = i as i8;
                    sums[at] += i as i32;
                }
                let up = |x: f64| (x * (1.0 + 1e-6)) as f32;
                (scale[at], err[at], len[at]) = (s, up(d2.sqrt()), up(e2.sqrt()));
            }
        }
        Coarse {
            words,
            quads,
            norms,
            scale,
            err,
            len,
            sums,
        }
    }

    fn stage(&self, q: usize, size: usize) -> Stage<'_> {
        let per = padded(size);
        let at = q * per..(q + 1) * per;
        Stage {
            words: &self.words[q * per * self.quads * 4..][..per * self.quads * 4],
            norms: &self.norms[at.clone()],
            scale: &self.scale[at.clone()],
            err: &self.err[at.clone()],
            len: &self.len[at.clone()],
            sums: &self.sums[at],
        }
    }
}

/// The plain loop's dot product: dimension by dimension, multiply then add.
fn exact_dot(e: &[f32], r: &[f32]) -> f32 {
    e.iter().zip(r).fold(0.0f32, |s, (a, b)| s + a * b)
}

/// Codewords per stage in the coarse layout: `size` rounded up to whole groups of [`LANES`].
fn padded(size: usize) -> usize {
    size.div_ceil(LANES) * LANES
}

/// One stage of [`Coarse`]: its codewords and per-codeword values, padded to whole groups.
struct Stage<'a> {
    words: &'a [i8],
    norms: &'a [f32],
    scale: &'a [f32],
    err: &'a [f32],
    len: &'a [f32],
    sums: &'a [i32],
}

/// A stage's scale and error coefficients: codeword `k`'s coarse score is
/// `a = norm_k - two_s_r · scale_k · (r̂.ê_k)`, within `err · err_k + len · len_k + norm · |norm_k|`
/// of its exact score.
struct Slack {
    two_s_r: f32,
    err: f32,
    len: f32,
    norm: f32,
}

/// The codewords of `stage` whose exact score can be the smallest, in index order, into `out`:
/// those whose lower bound is at most the smallest upper bound. `lo` (one per padded codeword)
/// gets the lower bounds; `quads` is the residual's offset integers, four per value.
fn candidates(stage: &Stage, quads: &[u32], slack: &Slack, lo: &mut [f32], out: &mut Vec<u32>) {
    out.clear();
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2; the stage's slices hold whole groups (checked inside).
        let upper = unsafe { lower_bounds_avx2(stage, quads, slack, lo) };
        return unsafe { below_avx2(lo, upper, out) };
    }
    let upper = lower_bounds_plain(stage, quads, slack, lo);
    out.extend((0..lo.len() as u32).filter(|&k| lo[k as usize] <= upper));
}

/// Eight codewords' integer sums `r̂.ê_k` (`words`: one group of [`Coarse::words`], `sums` their
/// integer sums).
fn group_dots(words: &[i8], sums: &[i32], quads: &[u32]) -> [i32; LANES] {
    let mut dots = [0i32; LANES];
    for (p, &rq) in quads.iter().enumerate() {
        for (lane, o) in dots.iter_mut().enumerate() {
            let w = &words[(p * LANES + lane) * 4..][..4];
            for (j, &w) in w.iter().enumerate() {
                *o += ((rq >> (8 * j)) & 0xff) as i32 * w as i32;
            }
        }
    }
    for (o, &s) in dots.iter_mut().zip(sums) {
        *o -= (RANGE + 1) * s;
    }
    dots
}

/// Writes each codeword's lower bound; returns the smallest upper bound.
fn lower_bounds_plain(stage: &Stage, quads: &[u32], slack: &Slack, lo: &mut [f32]) -> f32 {
    let group = quads.len() * LANES * 4;
    let mut upper = f32::INFINITY;
    for (g, words) in stage.words.chunks_exact(group).enumerate() {
        let dots = group_dots(words, &stage.sums[g * LANES..][..LANES], quads);
        for (lane, &dot) in dots.iter().enumerate() {
            let k = g * LANES + lane;
            let n = stage.norms[k];
            let a = n - slack.two_s_r * stage.scale[k] * dot as f32;
            let b = slack.err * stage.err[k] + slack.len * stage.len[k] + slack.norm * n.abs();
            lo[k] = a - b;
            upper = upper.min(a + b);
        }
    }
    upper
}

/// [`lower_bounds_plain`] with `vpmaddubsw`: per four dimensions, the residual's four unsigned
/// bytes times each of eight codewords' four, added pairwise into 16-bit sums (at most
/// 2 · 127 · 127, so never saturated), then pairwise into eight 32-bit sums (`vpmaddwd` by ones);
/// then the bounds eight at a time. (Integer sums are exact; the bounds are the plain loop's
/// float operations in the same order.)
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn lower_bounds_avx2(stage: &Stage, quads: &[u32], slack: &Slack, lo: &mut [f32]) -> f32 {
    use std::arch::x86_64::*;
    let group = quads.len() * LANES * 4;
    let groups = stage.words.len() / group.max(1);
    let n = groups * LANES;
    assert!(lo.len() >= n && stage.norms.len() >= n && stage.sums.len() >= n);
    assert!(stage.scale.len() >= n && stage.err.len() >= n && stage.len.len() >= n);
    let (two_s_r, c_err) = (_mm256_set1_ps(slack.two_s_r), _mm256_set1_ps(slack.err));
    let (c_len, c_norm) = (_mm256_set1_ps(slack.len), _mm256_set1_ps(slack.norm));
    let abs = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
    let ones = _mm256_set1_epi16(1);
    let mut upper = _mm256_set1_ps(f32::INFINITY);
    for (g, words) in stage.words.chunks_exact(group).enumerate() {
        let (mut acc0, mut acc1) = (_mm256_setzero_si256(), _mm256_setzero_si256());
        let mut two_quads = words.chunks_exact(8 * LANES);
        let mut p = 0;
        for w in two_quads.by_ref() {
            // SAFETY: 64 bytes in `w`, read as two unaligned 32-byte halves.
            let (w0, w1) = unsafe {
                (
                    _mm256_loadu_si256(w.as_ptr() as *const __m256i),
                    _mm256_loadu_si256(w.as_ptr().add(32) as *const __m256i),
                )
            };
            let r0 = _mm256_set1_epi32(quads[p] as i32);
            let r1 = _mm256_set1_epi32(quads[p + 1] as i32);
            let s0 = _mm256_madd_epi16(_mm256_maddubs_epi16(r0, w0), ones);
            let s1 = _mm256_madd_epi16(_mm256_maddubs_epi16(r1, w1), ones);
            acc0 = _mm256_add_epi32(acc0, s0);
            acc1 = _mm256_add_epi32(acc1, s1);
            p += 2;
        }
        let rest = two_quads.remainder();
        if !rest.is_empty() {
            // SAFETY: one quad's 32 bytes remain.
            let w0 = unsafe { _mm256_loadu_si256(rest.as_ptr() as *const __m256i) };
            let r0 = _mm256_set1_epi32(quads[p] as i32);
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(_mm256_maddubs_epi16(r0, w0), ones));
        }
        let at = g * LANES;
        // SAFETY: `at + LANES` is within every slice (asserted above); unaligned loads.
        let (sums, n, scale, err, len) = unsafe {
            (
                _mm256_loadu_si256(stage.sums.as_ptr().add(at) as *const __m256i),
                _mm256_loadu_ps(stage.norms.as_ptr().add(at)),
                _mm256_loadu_ps(stage.scale.as_ptr().add(at)),
                _mm256_loadu_ps(stage.err.as_ptr().add(at)),
                _mm256_loadu_ps(stage.len.as_ptr().add(at)),
            )
        };
        // The offset's share: (RANGE + 1) = 64 times the codeword's integer sum.
        let offset = _mm256_slli_epi32::<6>(sums);
        let dots = _mm256_sub_epi32(_mm256_add_epi32(acc0, acc1), offset);
        let dots = _mm256_cvtepi32_ps(dots);
        let a = _mm256_sub_ps(n, _mm256_mul_ps(_mm256_mul_ps(two_s_r, scale), dots));
        let b = _mm256_add_ps(
            _mm256_add_ps(_mm256_mul_ps(c_err, err), _mm256_mul_ps(c_len, len)),
            _mm256_mul_ps(c_norm, _mm256_and_ps(n, abs)),
        );
        // SAFETY: as above.
        unsafe { _mm256_storeu_ps(lo.as_mut_ptr().add(at), _mm256_sub_ps(a, b)) };
        // Padding codewords: a and b are infinite, a + b too; min keeps the other operand.
        upper = _mm256_min_ps(upper, _mm256_add_ps(a, b));
    }
    let mut lanes = [0.0f32; LANES];
    // SAFETY: eight floats into an array of eight.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), upper) };
    lanes.iter().fold(f32::INFINITY, |m, &v| m.min(v))
}

/// Indices of `lo` whose value is at most `upper`, in order (NaN never is).
///
/// # Safety
/// The CPU has AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn below_avx2(lo: &[f32], upper: f32, out: &mut Vec<u32>) {
    use std::arch::x86_64::*;
    let u = _mm256_set1_ps(upper);
    for (g, chunk) in lo.chunks_exact(LANES).enumerate() {
        // SAFETY: eight floats in the chunk.
        let v = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
        let mut mask = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_LE_OQ>(v, u)) as u32;
        while mask != 0 {
            out.push((g * LANES) as u32 + mask.trailing_zeros());
            mask &= mask - 1;
        }
    }
    let tail = lo.len() / LANES * LANES;
    out.extend(
        (tail..lo.len())
            .filter(|&k| lo[k] <= upper)
            .map(|k| k as u32),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The search against a plain per-codeword search, code for code and residual bit for bit,
    /// for sizes that do and do not fill whole groups.
    #[test]
    fn search_equals_plain_search() {
        for (n_q, size, dim) in [(4, 1024, 64), (3, 40, 8), (2, 7, 3), (1, 32, 1)] {
            let embed: Vec<f32> = (0..n_q * size * dim)
                .map(|i| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * 1.7)
                .collect();
            let cb = books(&embed, n_q, size, dim);
            for frame in 0..20 {
                let x: Vec<f32> = (0..dim)
                    .map(|d| ((d + frame * dim) as f32 * 0.37).sin() * 2.0)
                    .collect();
                let mut got_r = x.clone();
                let mut got = vec![0u16; n_q];
                cb.encode_frame(&mut got_r, &mut got, &mut SearchScratch::default());
                let mut want_r = x.clone();
                for q in 0..n_q {
                    let best = plain_pick(&cb, q, &want_r);
                    assert_eq!(
                        got[q] as usize, best,
                        "size {size} dim {dim} frame {frame} q {q}"
                    );
                    for d in 0..dim {
                        want_r[d] -= embed[(q * size + best) * dim + d];
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

    /// The plain search's pick: every codeword's `|e|^2 - 2 r.e`, summed as a loop sums, and
    /// the first strictly smallest (0 when nothing is below infinity).
    fn plain_pick(cb: &Codebooks, q: usize, r: &[f32]) -> usize {
        let mut best = (f32::INFINITY, 0usize);
        for k in 0..cb.size {
            let e = cb.word(q, k);
            let (mut dot, mut n) = (0.0f32, 0.0f32);
            for d in 0..cb.dim {
                dot += e[d] * r[d];
                n += e[d] * e[d];
            }
            if n - 2.0 * dot < best.0 {
                best = (n - 2.0 * dot, k);
            }
        }
        best.1
    }

    fn books(embed: &[f32], n_q: usize, size: usize, dim: usize) -> Codebooks {
        let bytes: Vec<u8> = embed.iter().flat_map(|v| v.to_le_bytes()).collect();
        Codebooks::from_le_bytes(&bytes, n_q, size, dim).unwrap()
    }

    /// Cases the coarse pass's bounds must hold in: codewords that tie exactly (the first wins)
    /// or differ by a rounding step, codewords of very different scales, residuals dominated by one
    /// value, of zeros, tiny, huge, NaN or infinite (scored exhaustively), odd dimensions.
    #[test]
    fn pruned_search_equals_plain_search_on_hard_cases() {
        for (size, dim) in [(64, 64), (37, 7), (9, 1), (200, 33)] {
            let mut embed: Vec<f32> = (0..size * dim)
                .map(|i| ((i * 7919 % 2003) as f32 / 1001.0 - 1.0) * 0.8)
                .collect();
            // Codeword 5 repeats codeword 3; codeword 8 is codeword 3 nudged by one ulp.
            let w3: Vec<f32> = embed[3 * dim..4 * dim].to_vec();
            embed[5 * dim..6 * dim].copy_from_slice(&w3);
            for (d, v) in embed[8 * dim..9 * dim].iter_mut().enumerate() {
                *v = if d == 0 {
                    f32::from_bits(w3[0].to_bits() + 1)
                } else {
                    w3[d]
                };
            }
            // Scales from 1e-6 to 1e6.
            for k in 10..size.min(20) {
                let s = 10f32.powi(k as i32 - 16);
                embed[k * dim..(k + 1) * dim]
                    .iter_mut()
                    .for_each(|v| *v *= s);
            }
            let cb = books(&embed, 1, size, dim);
            let mut residuals: Vec<Vec<f32>> = vec![
                w3.clone(),
                w3.iter().map(|v| v * 0.5).collect(),
                vec![0.0; dim],
                vec![1e-35; dim],
                vec![1e16; dim],
                (0..dim)
                    .map(|d| if d == dim / 2 { 1e4 } else { 1e-3 })
                    .collect(),
            ];
            for (t, v) in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY]
                .into_iter()
                .enumerate()
            {
                let mut r = w3.clone();
                r[t % dim] = v;
                residuals.push(r);
            }
            for frame in 0..50 {
                let scale = 10f32.powi(frame % 9 - 4);
                residuals.push(
                    (0..dim)
                        .map(|d| ((d * 31 + frame as usize * 17) as f32 * 0.71).sin() * scale)
                        .collect(),
                );
            }
            let mut scratch = SearchScratch::default();
            for (i, r) in residuals.iter().enumerate() {
                assert_eq!(
                    cb.nearest_word(0, r, &mut scratch),
                    plain_pick(&cb, 0, r),
                    "size {size} dim {dim} residual {i}"
                );
            }
        }
    }

    /// On the shipped model's codebooks the coarse pass leaves few codewords to score exactly
    /// (what makes it worth doing), and every pick is the plain search's.
    #[test]
    fn coarse_pass_leaves_few_candidates_on_the_default_model() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../models/default/codebooks.f32"
        );
        let cb = Codebooks::from_le_bytes(&std::fs::read(path).unwrap(), 32, 1024, 64).unwrap();
        let mut scratch = cb.scratch();
        let (mut searches, mut candidates) = (0usize, 0usize);
        for frame in 0..20 {
            // A residual built from codewords, as an encoder's latent is near their sums.
            let mut r: Vec<f32> = (0..64)
                .map(|d| ((d * 13 + frame * 7) as f32).sin() * 0.05)
                .collect();
            for q in 0..32 {
                let e = cb.word(q, (frame * 131 + q * 17) % 1024).to_vec();
                r.iter_mut().zip(e).for_each(|(r, e)| *r += e);
            }
            for q in 0..32 {
                let best = cb.nearest_word(q, &r, &mut scratch);
                assert_eq!(best, plain_pick(&cb, q, &r), "frame {frame} stage {q}");
                candidates += scratch.candidates.len();
                searches += 1;
                r.iter_mut()
                    .zip(cb.word(q, best))
                    .for_each(|(r, e)| *r -= e);
            }
        }
        let mean = candidates as f64 / searches as f64;
        assert!(mean < 4.0, "{mean} codewords scored exactly per search");
        eprintln!("{mean:.2} codewords scored exactly per search");
    }

    /// The vectorised coarse pass gives the plain loop's bounds bit for bit (the same integer
    /// sums, the same float operations in the same order), for odd dimensions too.
    #[test]
    fn vectorised_bounds_equal_the_plain_loop() {
        for (size, dim) in [(1024, 64), (37, 7), (9, 2)] {
            let embed: Vec<f32> = (0..size * dim)
                .map(|i| ((i * 104_729 % 4001) as f32 / 2000.0 - 1.0) * 0.9)
                .collect();
            let cb = books(&embed, 1, size, dim);
            let stage = cb.coarse.stage(0, size);
            let r: Vec<u32> = (0..cb.coarse.quads)
                .map(|p| {
                    u32::from_le_bytes([1 + (p * 37 % 127) as u8, 127, 1, (p * 91 % 128) as u8])
                })
                .collect();
            let slack = Slack {
                two_s_r: 1e-4,
                err: 0.3,
                len: 1e-3,
                norm: 1e-6,
            };
            let mut want = vec![0.0; padded(size)];
            let want_upper = lower_bounds_plain(&stage, &r, &slack, &mut want);
            let mut got = vec![0.0; padded(size)];
            let mut out = Vec::new();
            candidates(&stage, &r, &slack, &mut got, &mut out);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "size {size} dim {dim}");
            let below: Vec<u32> = (0..padded(size) as u32)
                .filter(|&k| want[k as usize] <= want_upper)
                .collect();
            assert_eq!(out, below, "size {size} dim {dim}");
            assert!(!out.is_empty());
        }
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
        let cb = books(&embed, n_q, size, dim);
        let n_qs = [6, 1, 3, 6, 2];
        let frames: Vec<f32> = (0..n_qs.len() * dim)
            .map(|i| (i as f32 * 0.61).cos() * 1.5)
            .collect();
        let mut batch_r = frames.clone();
        let mut batch_codes = vec![u16::MAX; n_qs.len() * n_q];
        cb.encode_frames(
            &mut batch_r,
            &n_qs,
            &mut batch_codes,
            n_q,
            &mut cb.scratch(),
        );
        for (j, &nq) in n_qs.iter().enumerate() {
            let mut r = frames[j * dim..][..dim].to_vec();
            let mut c = vec![0u16; nq];
            cb.encode_frame(&mut r, &mut c, &mut SearchScratch::default());
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
