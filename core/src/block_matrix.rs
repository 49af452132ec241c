//! A matrix stored for products with vectors that read it once, in order: blocks of [`BLOCK`]
//! rows, each block column by column, so a block's [`BLOCK`] sums stay in registers while its
//! values stream from memory. The RVQ search (codewords as rows) and the single-stream
//! matrix-vector products of the step graphs (`tract_ops::mat_vec`) use it; both are bound by
//! how fast the values arrive from memory.
//!
//! A matrix whose every value is a half-precision number (the project's own models are exported
//! so, see `models/fcexport`) is stored in half precision where the CPU converts it in hardware:
//! half the bytes to read, and, the values being the same, the same sums bit for bit.

/// Rows summed together: four AVX2 registers (eight SSE ones).
pub(crate) const BLOCK: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct BlockMatrix {
    rows: usize,
    cols: usize,
    values: Values,
}

#[derive(Debug, Clone, PartialEq)]
enum Values {
    Single(Vec<f32>),
    Half(Vec<u16>),
}

impl BlockMatrix {
    /// The `rows × cols` matrix whose value at `(r, c)` is `at(r, c)`; rows are padded with zeros to
    /// whole blocks.
    pub(crate) fn new(rows: usize, cols: usize, at: impl Fn(usize, usize) -> f32) -> BlockMatrix {
        let mut data = vec![0.0; rows.div_ceil(BLOCK) * BLOCK * cols];
        for (i, v) in data.iter_mut().enumerate() {
            let (block, c, lane) = (i / (BLOCK * cols), i / BLOCK % cols, i % BLOCK);
            let r = block * BLOCK + lane;
            if r < rows {
                *v = at(r, c);
            }
        }
        let half: Option<Vec<u16>> = if half::supported() {
            data.iter().map(|&v| half::exact(v)).collect()
        } else {
            None
        };
        let values = match half {
            Some(h) => Values::Half(h),
            None => Values::Single(data),
        };
        BlockMatrix { rows, cols, values }
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// Whether the values are stored in half precision.
    pub(crate) fn is_half(&self) -> bool {
        matches!(self.values, Values::Half(_))
    }

    /// `y = M·x`; `x` has `cols` values, `y` at most `rows` rounded up to whole blocks (rows past
    /// its end are not computed).
    pub(crate) fn apply(&self, x: &[f32], y: &mut [f32]) {
        let len = y.len();
        self.apply_many(x, &[1], 0, y, len);
    }

    /// `y_j = M·x_j` for each vector `j` with `stage < needs[j]`: `x_j = xs[j·cols..][..cols]`,
    /// `y_j = ys[j·y_len..][..y_len]`. Each block is read once for all vectors, and every vector gets
    /// the bits it gets alone: each sum starts at zero and adds the products in column order, with
    /// multiply and add separate (never fused), on every CPU.
    pub(crate) fn apply_many(
        &self,
        xs: &[f32],
        needs: &[usize],
        stage: usize,
        ys: &mut [f32],
        y_len: usize,
    ) {
        assert!(xs.len() >= needs.len() * self.cols && ys.len() >= needs.len() * y_len);
        assert!(y_len <= self.rows.div_ceil(BLOCK) * BLOCK);
        let geometry = Geometry {
            cols: self.cols,
            y_len,
            stage,
        };
        match &self.values {
            Values::Single(data) => products(data, xs, needs, ys, geometry),
            Values::Half(data) => half::products(data, xs, needs, ys, geometry),
        }
    }

    /// The stored values, bit for bit (for hashing an op that holds the matrix).
    pub(crate) fn hash_values<H: std::hash::Hasher>(&self, h: &mut H) {
        use std::hash::Hash;
        (self.rows, self.cols).hash(h);
        match &self.values {
            Values::Single(d) => d.iter().for_each(|v| v.to_bits().hash(h)),
            Values::Half(d) => d.hash(h),
        }
    }
}

/// Whether this CPU gets half-precision storage (for tests that check a model is stored so).
#[cfg(test)]
pub(crate) fn half_supported() -> bool {
    half::supported()
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    cols: usize,
    y_len: usize,
    stage: usize,
}

crate::simd::avx2_dispatch!(
    /// [`BlockMatrix::apply_many`] for single-precision storage.
    fn products(blocks: &[f32], xs: &[f32], needs: &[usize], ys: &mut [f32], g: Geometry)
        => products_portable
);

#[inline(always)]
fn products_portable(blocks: &[f32], xs: &[f32], needs: &[usize], ys: &mut [f32], g: Geometry) {
    let blocks_out = g.y_len.div_ceil(BLOCK);
    for (b, block) in blocks
        .chunks_exact(BLOCK * g.cols)
        .take(blocks_out)
        .enumerate()
    {
        for (j, _) in needs.iter().enumerate().filter(|(_, n)| **n > g.stage) {
            let mut acc = [0.0f32; BLOCK];
            for (column, &v) in block.chunks_exact(BLOCK).zip(&xs[j * g.cols..][..g.cols]) {
                let column: &[f32; BLOCK] = column.try_into().expect("chunks of BLOCK");
                for (a, &w) in acc.iter_mut().zip(column) {
                    *a += w * v;
                }
            }
            store(&acc, ys, j, b, g.y_len);
        }
    }
}

/// Block `b` of vector `j`'s sums into `ys`, as far as `y_len` goes.
#[inline(always)]
fn store(acc: &[f32; BLOCK], ys: &mut [f32], j: usize, b: usize, y_len: usize) {
    let n = (y_len - b * BLOCK).min(BLOCK);
    ys[j * y_len + b * BLOCK..][..n].copy_from_slice(&acc[..n]);
}

/// Half-precision storage: the exactness test, and the products with hardware conversion.
mod half {
    use super::{BLOCK, Geometry};

    /// Whether this CPU converts half precision in hardware (with AVX2 for the products).
    pub(super) fn supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// The IEEE half-precision bits of `v` if `v` is exactly a finite half-precision number.
    pub(super) fn exact(v: f32) -> Option<u16> {
        let bits = v.to_bits();
        let sign = ((bits >> 16) & 0x8000) as u16;
        if bits & 0x7fff_ffff == 0 {
            return Some(sign);
        }
        let exp = ((bits >> 23) & 0xff) as i32 - 127;
        let mant = bits & 0x7f_ffff;
        match exp {
            // Normal halves: 10 mantissa bits, exponents -14..=15.
            -14..=15 => (mant & 0x1fff == 0)
                .then(|| sign | (((exp + 15) as u16) << 10) | (mant >> 13) as u16),
            // Subnormal halves: multiples of 2^-24 below 2^-14. v = full · 2^(exp - 23) with the
            // implicit bit in `full`, so v / 2^-24 = full >> (-1 - exp) when no bit is shifted out.
            -24..=-15 => {
                let full = mant | 0x80_0000;
                let shift = (-1 - exp) as u32;
                (full & ((1 << shift) - 1) == 0).then_some(sign | (full >> shift) as u16)
            }
            _ => None,
        }
    }

    /// [`super::products`] for half-precision storage.
    pub(super) fn products(
        blocks: &[u16],
        xs: &[f32],
        needs: &[usize],
        ys: &mut [f32],
        g: Geometry,
    ) {
        #[cfg(target_arch = "x86_64")]
        {
            assert!(
                supported(),
                "half precision is only stored where the CPU has F16C"
            );
            assert!(blocks.len() >= g.y_len.div_ceil(BLOCK) * BLOCK * g.cols);
            // SAFETY: the CPU has AVX2 and F16C, and every block the product reads lies within
            // `blocks` (both asserted above).
            unsafe { products_f16c(blocks, xs, needs, ys, g) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (blocks, xs, needs, ys, g);
            unreachable!("half precision is only stored where the CPU has F16C")
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn products_f16c(
        blocks: &[u16],
        xs: &[f32],
        needs: &[usize],
        ys: &mut [f32],
        g: Geometry,
    ) {
        use std::arch::x86_64::*;
        for b in 0..g.y_len.div_ceil(BLOCK) {
            let block = &blocks[b * BLOCK * g.cols..][..BLOCK * g.cols];
            for (j, _) in needs.iter().enumerate().filter(|(_, n)| **n > g.stage) {
                let mut acc = [_mm256_setzero_ps(); BLOCK / 8];
                for (column, &v) in block.chunks_exact(BLOCK).zip(&xs[j * g.cols..][..g.cols]) {
                    let v = _mm256_set1_ps(v);
                    let column = column.as_ptr() as *const __m128i;
                    for (i, a) in acc.iter_mut().enumerate() {
                        // SAFETY: eight halves at 8·i of a BLOCK-long column; unaligned load.
                        let w = _mm256_cvtph_ps(unsafe { _mm_loadu_si128(column.add(i)) });
                        *a = _mm256_add_ps(*a, _mm256_mul_ps(w, v));
                    }
                }
                let mut sums = [0.0f32; BLOCK];
                for (i, a) in acc.iter().enumerate() {
                    // SAFETY: eight floats at 8·i of a BLOCK-long array.
                    unsafe { _mm256_storeu_ps(sums.as_mut_ptr().add(8 * i), *a) };
                }
                super::store(&sums, ys, j, b, g.y_len);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exact halves are recognised with the right bits (normal, subnormal, zero, extremes), and
    /// values between halves, or out of range, are not.
    #[test]
    fn half_exactness() {
        let cases: &[(f32, Option<u16>)] = &[
            (0.0, Some(0x0000)),
            (-0.0, Some(0x8000)),
            (1.0, Some(0x3c00)),
            (-2.0, Some(0xc000)),
            (0.5 + 1.0 / 2048.0, Some(0x3801)),
            (65504.0, Some(0x7bff)),
            (6.103_515_6e-5, Some(0x0400)), // 2^-14, the smallest normal
            (5.960_464_5e-8, Some(0x0001)), // 2^-24, the smallest subnormal
            (-1.788_139_3e-7, Some(0x8003)), // -3 · 2^-24
            (1.0 + 1.0 / 4096.0, None),
            (65520.0, None),
            (2.980_232_2e-8, None), // 2^-25
            (1.0e-3, None),
            (f32::INFINITY, None),
            (f32::NAN, None),
        ];
        for &(v, want) in cases {
            assert_eq!(half::exact(v), want, "{v:e}");
        }
        if half::supported() {
            // The hardware conversion agrees on every half that is a number.
            for h in (0..=0xffffu32)
                .map(|h| h as u16)
                .filter(|h| h & 0x7c00 != 0x7c00)
            {
                let v = hw_to_f32(h);
                assert_eq!(half::exact(v), Some(h), "{h:#06x}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    fn hw_to_f32(h: u16) -> f32 {
        #[target_feature(enable = "f16c")]
        unsafe fn cvt(h: u16) -> f32 {
            use std::arch::x86_64::*;
            _mm_cvtss_f32(_mm_cvtph_ps(_mm_set1_epi16(h as i16)))
        }
        // SAFETY: only called where `half::supported()` said the CPU has F16C.
        unsafe { cvt(h) }
    }

    #[cfg(not(target_arch = "x86_64"))]
    fn hw_to_f32(_: u16) -> f32 {
        unreachable!()
    }

    /// A plain loop in the same order: each sum from zero, products added column by column.
    fn plain(rows: usize, cols: usize, m: &dyn Fn(usize, usize) -> f32, x: &[f32]) -> Vec<f32> {
        (0..rows)
            .map(|r| (0..cols).fold(0.0f32, |s, c| s + m(r, c) * x[c]))
            .collect()
    }

    /// Products equal a plain loop bit for bit, in both storages, for sizes that do and do not
    /// fill whole blocks; half precision is chosen exactly when every value is a half.
    #[test]
    fn products_equal_a_plain_loop() {
        for (rows, cols) in [(64, 48), (70, 5), (1, 1), (33, 300)] {
            // Multiples of 1/64 below 4: exact halves. Adding 1e-4 makes some not.
            let exact = |r: usize, c: usize| ((r * 31 + c * 17) % 251) as f32 / 64.0 - 1.875;
            let inexact = |r: usize, c: usize| {
                exact(r, c) + if (r + c).is_multiple_of(7) { 1e-4 } else { 0.0 }
            };
            let x: Vec<f32> = (0..cols).map(|c| (c as f32 * 0.37).sin()).collect();
            for (m, is_half) in [
                (&exact as &dyn Fn(usize, usize) -> f32, half::supported()),
                (&inexact, false),
            ] {
                let bm = BlockMatrix::new(rows, cols, m);
                assert_eq!(bm.is_half(), is_half, "{rows}×{cols}");
                let mut y = vec![f32::NAN; rows];
                bm.apply(&x, &mut y);
                let want = plain(rows, cols, m, &x);
                let same = y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{rows}×{cols} half {is_half}: {y:?} vs {want:?}");
            }
        }
    }

    /// Several vectors at once: the selected ones get their own products, the others are untouched.
    #[test]
    fn many_vectors_at_once() {
        let (rows, cols) = (40, 9);
        let m = |r: usize, c: usize| ((r * 13 + c * 7) % 97) as f32 / 32.0 - 1.5;
        let bm = BlockMatrix::new(rows, cols, m);
        let needs = [2, 1, 3];
        let xs: Vec<f32> = (0..needs.len() * cols)
            .map(|i| (i as f32 * 0.53).cos())
            .collect();
        let y_len = 64; // padded rows, as the RVQ search keeps them
        let mut ys = vec![-7.0f32; needs.len() * y_len];
        bm.apply_many(&xs, &needs, 1, &mut ys, y_len);
        for (j, &n) in needs.iter().enumerate() {
            let y = &ys[j * y_len..][..rows];
            if n > 1 {
                let want = plain(rows, cols, &m, &xs[j * cols..][..cols]);
                assert!(
                    y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{j}"
                );
                assert!(
                    ys[j * y_len + rows..][..y_len - rows]
                        .iter()
                        .all(|&v| v == 0.0)
                );
            } else {
                assert!(
                    ys[j * y_len..][..y_len].iter().all(|&v| v == -7.0),
                    "{j} was written"
                );
            }
        }
    }
}
