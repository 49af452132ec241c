//! FunCodec's convolution padding (`SConv1d.forward` + `pad1d`), applied by the runtime between
//! graph segments because the amounts depend on the input length.

use serde::Deserialize;

/// How the conv that starts a segment pads its input; written by the exporter into the manifest.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct PadSpec {
    pub kernel: usize,
    pub stride: usize,
    #[serde(default = "one")]
    pub dilation: usize,
    pub causal: bool,
    pub mode: PadMode,
}

fn one() -> usize {
    1
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum PadMode {
    Reflect,
    Constant,
}

impl PadSpec {
    /// (left, right) for an input of `n` samples, including the `extra` right pad that makes the
    /// last strided window full.
    pub fn amounts(&self, n: usize) -> (usize, usize) {
        let total = (self.kernel - 1) * self.dilation + 1 - self.stride;
        let (left, right) = if self.causal {
            (total, 0)
        } else {
            (total - total / 2, total / 2)
        };
        // FunCodec: ideal = (ceil((n - k + total) / s + 1) - 1) * s + (k - total); extra = ideal - n.
        let span = n + total;
        let frames = if span >= self.kernel {
            (span - self.kernel).div_ceil(self.stride) + 1
        } else {
            1
        };
        let ideal = (frames - 1) * self.stride + self.kernel - total;
        (left, right + ideal.saturating_sub(n))
    }

    /// Number of conv outputs for `n` input samples.
    pub fn output_len(&self, n: usize) -> usize {
        let (l, r) = self.amounts(n);
        (n + l + r - (self.kernel - 1) * self.dilation - 1) / self.stride + 1
    }
}

/// Pads each of `channels` rows (row-major, `n` samples each) into `out` exactly like FunCodec's
/// `pad1d`, including its short-input guard: reflect padding of an input no longer than the pad
/// first appends zeros, reflects, then drops as many samples from the end.
pub fn pad1d(
    x: &[f32],
    channels: usize,
    left: usize,
    right: usize,
    mode: PadMode,
    out: &mut Vec<f32>,
) {
    let n = x.len() / channels;
    let m = n + left + right;
    out.clear();
    out.resize(channels * m, 0.0);
    pad_rows(x, n, out, m, left, mode);
}

/// Pads each `n`-sample row of `src` into the matching `width`-sample row of `dst`
/// ([`pad_row`]), so every value of `dst` is written, empty input rows included.
pub(crate) fn pad_rows(
    src: &[f32],
    n: usize,
    dst: &mut [f32],
    width: usize,
    left: usize,
    mode: PadMode,
) {
    for (i, row) in dst.chunks_exact_mut(width.max(1)).enumerate() {
        pad_row(&src[i * n..(i + 1) * n], row, left, mode);
    }
}

/// One row of [`pad1d`]: `src` padded by `left` values before it and the rest of `dst` after it.
/// Every value of `dst` is written.
fn pad_row(src: &[f32], dst: &mut [f32], left: usize, mode: PadMode) {
    let n = src.len();
    let right = dst.len() - n - left;
    dst[left..left + n].copy_from_slice(src);
    let (head, rest) = dst.split_at_mut(left);
    let tail = &mut rest[n..];
    if mode == PadMode::Constant {
        head.fill(0.0);
        tail.fill(0.0);
        return;
    }
    // Length of the zero-extended signal that the reflection runs over.
    let ext = if n <= left.max(right) {
        left.max(right) + 1
    } else {
        n
    };
    let at = |i: usize| if i < n { src[i] } else { 0.0 };
    for (j, d) in head.iter_mut().enumerate() {
        *d = at(left - j);
    }
    // Right part: positions n.. of the extended signal, then its reflection, cut to `right`.
    for (j, d) in tail.iter_mut().enumerate() {
        let p = n + j; // index into the reflected, extended signal
        *d = if p < ext { 0.0 } else { at(2 * (ext - 1) - p) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kernel: usize, stride: usize, causal: bool) -> PadSpec {
        PadSpec {
            kernel,
            stride,
            dilation: 1,
            causal,
            mode: PadMode::Reflect,
        }
    }

    #[test]
    fn extra_pad_makes_strided_windows_full() {
        // k = 2s: total = s, left = s - s/2, right = s/2, extra = ceil(n/s)*s - n.
        let s8 = spec(16, 8, false);
        assert_eq!(s8.amounts(16), (4, 4));
        assert_eq!(s8.amounts(17), (4, 4 + 7));
        assert_eq!(s8.output_len(17), 3);
        let s5 = spec(10, 5, false);
        assert_eq!(s5.amounts(11), (3, 2 + 4));
        assert_eq!(s5.output_len(11), 3);
        assert_eq!(spec(7, 1, false).amounts(5), (3, 3));
        assert_eq!(spec(7, 1, true).amounts(5), (6, 0));
        assert_eq!(spec(7, 1, false).output_len(1), 1);
    }

    #[test]
    fn reflect_matches_numpy_reflect_for_long_inputs() {
        let x = [1.0, 2.0, 3.0, 4.0, 5.0];
        let mut out = Vec::new();
        pad1d(&x, 1, 3, 2, PadMode::Reflect, &mut out);
        assert_eq!(out, vec![4.0, 3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 5.0, 4.0, 3.0]);
    }

    #[test]
    fn reflect_guard_matches_funcodec_for_short_inputs() {
        // Values computed with FunCodec's pad1d (torch) for these exact inputs.
        let mut out = Vec::new();
        pad1d(&[7.0, 8.0, 9.0], 1, 3, 3, PadMode::Reflect, &mut out);
        assert_eq!(out, vec![0.0, 9.0, 8.0, 7.0, 8.0, 9.0, 0.0, 9.0, 8.0]);
        pad1d(&[7.0], 1, 1, 1, PadMode::Reflect, &mut out);
        assert_eq!(out, vec![0.0, 7.0, 0.0]);
        pad1d(&[7.0, 8.0], 1, 2, 1, PadMode::Reflect, &mut out);
        assert_eq!(out, vec![0.0, 8.0, 7.0, 8.0, 0.0]);
    }

    #[test]
    fn constant_pads_zeros_per_channel() {
        let mut out = Vec::new();
        pad1d(&[1.0, 2.0, 3.0, 4.0], 2, 1, 2, PadMode::Constant, &mut out);
        assert_eq!(out, vec![0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 3.0, 4.0, 0.0, 0.0]);
    }

    #[test]
    fn pad_rows_writes_every_value_of_an_uninitialised_buffer() {
        // RowPad hands over an uninitialised tensor: stale values must not survive, even for
        // empty input rows.
        let mut dst = [f32::NAN; 6];
        pad_rows(&[], 0, &mut dst, 3, 1, PadMode::Constant);
        assert_eq!(dst, [0.0; 6]);
        let mut dst = [f32::NAN; 8];
        pad_rows(&[1.0, 2.0, 3.0, 4.0], 2, &mut dst, 4, 1, PadMode::Reflect);
        assert_eq!(dst, [2.0, 1.0, 2.0, 1.0, 4.0, 3.0, 4.0, 3.0]);
    }
}
