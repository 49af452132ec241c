//! A matrix stored for products with vectors that read it once, in order: blocks of [`BLOCK`]
//! rows, each block column by column, so a block's [`BLOCK`] sums stay in registers while its
//! values stream from memory. The single-stream matrix-vector products of the step graphs
//! (`tract_ops::mat_vec`) use it; they are bound by how fast the values arrive from memory.
//!
//! Fewer bytes where the values allow it without changing a sum. A matrix whose every row is
//! made of 8-bit integers times a power of two (the project's own models are exported so, see
//! `models/fcexport`) is stored as those integers and one scale per row: a quarter of the bytes.
//! Scaling by a power of two commutes with rounding, so multiplying each row's sum of
//! `integer · x` by its scale gives the bits of the sum of `value · x` as long as no product or
//! sum is subnormal (a row's scale is kept at or above 2^-100, so scaling alone never makes one).
//! Otherwise, a matrix
//! whose every value is a half-precision number is stored in half precision where the CPU
//! converts it in hardware: half the bytes, the same values, so the same sums bit for bit.

use std::ops::Range;

/// Rows summed together: four AVX2 registers (eight SSE ones).
pub(crate) const BLOCK: usize = 32;

/// Half a block: [`BlockMatrix::apply_gathered`] may store a block's products half by half.
pub(crate) const HALF: usize = BLOCK / 2;

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
    /// The integers in the block layout, and each (padded) row's power-of-two scale.
    Int8 {
        values: Vec<i8>,
        scales: Vec<f32>,
    },
}

/// How a [`BlockMatrix`] keeps its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Storage {
    Single,
    Half,
    Int8,
}

impl Storage {
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Storage::Single => "single precision",
            Storage::Half => "half precision",
            Storage::Int8 => "8-bit integers × a power of two per row",
        }
    }
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
        let values = if let Some((values, scales)) = int8::exact(&data, cols) {
            Values::Int8 { values, scales }
        } else if let Some(h) = half::supported()
            .then(|| {
                data.iter()
                    .map(|&v| half::exact(v))
                    .collect::<Option<Vec<u16>>>()
            })
            .flatten()
        {
            Values::Half(h)
        } else {
            Values::Single(data)
        };
        BlockMatrix { rows, cols, values }
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    pub(crate) fn storage(&self) -> Storage {
        match self.values {
            Values::Single(_) => Storage::Single,
            Values::Half(_) => Storage::Half,
            Values::Int8 { .. } => Storage::Int8,
        }
    }

    /// `y = M·x`; `x` has `cols` values, `y` at most `rows` rounded up to whole blocks (rows past
    /// its end are not computed).
    pub(crate) fn apply(&self, x: &[f32], y: &mut [f32]) {
        let len = y.len();
        self.apply_many(x, 1, y, len);
    }

    /// `y = M·x` as fast as this CPU goes, where only float rounding matters (a stream's step
    /// products): with AVX2 and FMA, two columns at a time into separate sums, with fused
    /// multiply-adds (the sums then differ from [`apply`](Self::apply)'s in rounding only);
    /// elsewhere as [`apply`](Self::apply).
    pub(crate) fn apply_fused(&self, x: &[f32], y: &mut [f32]) {
        assert!(x.len() >= self.cols && y.len() <= self.rows.div_ceil(BLOCK) * BLOCK);
        if fused::supported() {
            let g = Geometry {
                cols: self.cols,
                y_len: y.len(),
            };
            // SAFETY: the CPU has AVX2, FMA and F16C (checked above), and the asserts above keep
            // every read in bounds.
            unsafe {
                match &self.values {
                    Values::Single(d) => fused::products(d, None, x, y, g),
                    Values::Half(d) => fused::products(d, None, x, y, g),
                    Values::Int8 { values, scales } => {
                        fused::products(values, Some(scales), x, y, g)
                    }
                }
            }
        } else {
            self.apply(x, y);
        }
    }

    /// `M·x_t` for `n_t` vectors gathered from `x`: element `c` of vector `t` is
    /// `x[bases[c] + t·t_step]` (a convolution's windows, a transposed convolution's input
    /// samples, read in place). The products come a tile at a time: `store(row, lanes, t, sums)`
    /// receives rows `row + i` for `i` in `lanes` of the products with vectors `t..t + sums.len()`,
    /// `sums[j][i]` being that row of vector `t + j`; `row` is a block's first row, `lanes` is the
    /// whole block or one of its halves ([`HALF`] rows), and each part's tiles arrive in ascending
    /// `t`. With AVX2 and FMA each weight is read (and converted) once for up to [`fused::TILE`]
    /// vectors, with fused multiply-adds: the sums differ from [`apply`](Self::apply)'s in rounding
    /// only; elsewhere through `apply`.
    pub(crate) fn apply_gathered(
        &self,
        x: &[f32],
        bases: &[usize],
        t_step: usize,
        n_t: usize,
        mut store: impl FnMut(usize, Range<usize>, usize, &[[f32; BLOCK]]),
    ) {
        assert_eq!(bases.len(), self.cols);
        if n_t == 0 {
            return;
        }
        let last = bases.iter().max().map_or(0, |&b| b + (n_t - 1) * t_step);
        assert!(
            self.cols == 0 || last < x.len(),
            "gathered vectors reach past the input"
        );
        if fused::supported() {
            let g = Gather {
                rows: self.rows,
                bases,
                t_step,
                n_t,
            };
            // SAFETY: the CPU has AVX2, FMA and F16C (checked above), every gathered index is
            // inside `x` (asserted above), and the storage holds `rows` padded to whole blocks
            // of `cols` columns.
            unsafe {
                match &self.values {
                    Values::Single(d) => fused::gathered(d, None, x, g, &mut store),
                    Values::Half(d) => fused::gathered(d, None, x, g, &mut store),
                    Values::Int8 { values, scales } => {
                        fused::gathered(values, Some(scales), x, g, &mut store)
                    }
                }
            }
        } else {
            let (mut xt, mut yt) = (vec![0.0; self.cols], vec![0.0; self.rows]);
            for t in 0..n_t {
                for (v, &b) in xt.iter_mut().zip(bases) {
                    *v = x[b + t * t_step];
                }
                self.apply(&xt, &mut yt);
                for (b, rows) in yt.chunks(BLOCK).enumerate() {
                    let mut sums = [[0.0; BLOCK]];
                    sums[0][..rows.len()].copy_from_slice(rows);
                    store(b * BLOCK, 0..rows.len(), t, &sums);
                }
            }
        }
    }

    /// `y_j = M·x_j` for the `n` vectors `x_j = xs[j·cols..][..cols]`, into
    /// `y_j = ys[j·y_len..][..y_len]`. Each block is read once for all vectors, and every vector gets
    /// the bits it gets alone: each sum starts at zero and adds the products in column order, with
    /// multiply and add separate (never fused), on every CPU.
    fn apply_many(&self, xs: &[f32], n: usize, ys: &mut [f32], y_len: usize) {
        assert!(xs.len() >= n * self.cols && ys.len() >= n * y_len);
        assert!(y_len <= self.rows.div_ceil(BLOCK) * BLOCK);
        let geometry = Geometry {
            cols: self.cols,
            y_len,
        };
        match &self.values {
            Values::Single(data) => products(data, xs, n, ys, geometry),
            Values::Half(data) => half::products(data, xs, n, ys, geometry),
            Values::Int8 { values, scales } => int8::products(values, scales, xs, n, ys, geometry),
        }
    }

    /// The stored values, bit for bit (for hashing an op that holds the matrix).
    pub(crate) fn hash_values<H: std::hash::Hasher>(&self, h: &mut H) {
        use std::hash::Hash;
        (self.rows, self.cols).hash(h);
        match &self.values {
            Values::Single(d) => d.iter().for_each(|v| v.to_bits().hash(h)),
            Values::Half(d) => d.hash(h),
            Values::Int8 { values, scales } => {
                values.hash(h);
                scales.iter().for_each(|v| v.to_bits().hash(h));
            }
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    cols: usize,
    y_len: usize,
}

/// Where [`BlockMatrix::apply_gathered`]'s vectors are.
#[derive(Debug, Clone, Copy)]
struct Gather<'a> {
    rows: usize,
    bases: &'a [usize],
    t_step: usize,
    n_t: usize,
}

crate::simd::avx2_dispatch!(
    /// [`BlockMatrix::apply_many`] for single-precision storage.
    fn products(blocks: &[f32], xs: &[f32], n: usize, ys: &mut [f32], g: Geometry)
        => products_portable
);

#[inline(always)]
fn products_portable(blocks: &[f32], xs: &[f32], n: usize, ys: &mut [f32], g: Geometry) {
    let blocks_out = g.y_len.div_ceil(BLOCK);
    for (b, block) in blocks
        .chunks_exact(BLOCK * g.cols)
        .take(blocks_out)
        .enumerate()
    {
        for j in 0..n {
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

/// [`BlockMatrix::apply_fused`]'s and [`BlockMatrix::apply_gathered`]'s kernels, for each storage.
mod fused {
    #[cfg(target_arch = "x86_64")]
    use super::HALF;
    use super::{BLOCK, Geometry};
    #[cfg(target_arch = "x86_64")]
    use std::arch::x86_64::*;
    use std::ops::Range;

    pub(super) fn supported() -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            // F16C comes with every CPU that has both, and the kernel is compiled with it.
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    }

    /// A stored value type: eight of them at `p` as floats.
    pub(super) trait Load8: Copy {
        /// # Safety
        /// Eight values at `p` must be readable, and the CPU must have AVX2 (and F16C for halves).
        #[cfg(target_arch = "x86_64")]
        unsafe fn load8(p: *const Self) -> __m256;
    }

    impl Load8 for f32 {
        #[cfg(target_arch = "x86_64")]
        #[inline(always)]
        unsafe fn load8(p: *const f32) -> __m256 {
            unsafe { _mm256_loadu_ps(p) }
        }
    }

    impl Load8 for u16 {
        #[cfg(target_arch = "x86_64")]
        #[inline(always)]
        unsafe fn load8(p: *const u16) -> __m256 {
            unsafe { _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i)) }
        }
    }

    impl Load8 for i8 {
        #[cfg(target_arch = "x86_64")]
        #[inline(always)]
        unsafe fn load8(p: *const i8) -> __m256 {
            unsafe {
                _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i)))
            }
        }
    }

    /// # Safety
    /// The CPU has AVX2, FMA (and F16C for halves); `blocks` holds `y.len()` rows rounded up to
    /// whole blocks of `g.cols` columns, `x` at least `g.cols` values, `scales` (8-bit storage) a
    /// scale per padded row.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn products<T: Load8>(
        blocks: &[T],
        scales: Option<&[f32]>,
        x: &[f32],
        y: &mut [f32],
        g: Geometry,
    ) {
        let cols = g.cols;
        for b in 0..y.len().div_ceil(BLOCK) {
            let block = &blocks[b * BLOCK * cols..][..BLOCK * cols];
            let p = block.as_ptr();
            // Two sets of sums, one per column of a pair: twice the independent additions in
            // flight, so the loop waits on loads rather than on the previous addition.
            let mut even = [_mm256_setzero_ps(); BLOCK / 8];
            let mut odd = [_mm256_setzero_ps(); BLOCK / 8];
            let mut c = 0;
            while c + 1 < cols {
                let (v0, v1) = (_mm256_set1_ps(x[c]), _mm256_set1_ps(x[c + 1]));
                for i in 0..BLOCK / 8 {
                    // SAFETY: columns c and c + 1 of the block, eight values at 8·i of each.
                    unsafe {
                        even[i] = _mm256_fmadd_ps(T::load8(p.add(c * BLOCK + 8 * i)), v0, even[i]);
                        odd[i] =
                            _mm256_fmadd_ps(T::load8(p.add((c + 1) * BLOCK + 8 * i)), v1, odd[i]);
                    }
                }
                c += 2;
            }
            if c < cols {
                let v = _mm256_set1_ps(x[c]);
                for (i, e) in even.iter_mut().enumerate() {
                    // SAFETY: the last column of the block.
                    *e = _mm256_fmadd_ps(unsafe { T::load8(p.add(c * BLOCK + 8 * i)) }, v, *e);
                }
            }
            let mut sums = [0.0f32; BLOCK];
            for i in 0..BLOCK / 8 {
                let mut s = _mm256_add_ps(even[i], odd[i]);
                if let Some(scales) = scales {
                    // SAFETY: eight scales of the block's padded rows.
                    s = _mm256_mul_ps(s, unsafe {
                        _mm256_loadu_ps(scales.as_ptr().add(b * BLOCK + 8 * i))
                    });
                }
                // SAFETY: eight floats at 8·i of a BLOCK-long array.
                unsafe { _mm256_storeu_ps(sums.as_mut_ptr().add(8 * i), s) };
            }
            super::store(&sums, y, 0, b, g.y_len);
        }
    }

    /// Most vectors per tile of [`gathered`]. A tile keeps `R·N ≤ 12` sums in registers (`R`
    /// registers of eight rows each times `N` vectors), which with `min(R, N)` weights or
    /// broadcasts and one more fit the sixteen registers: `N` is 3 for a whole block, 6 for a
    /// half, 12 for eight rows.
    pub(super) const TILE: usize = 12;

    /// From this many vectors on, a whole block is taken half by half in tiles of six vectors
    /// (each weight converted once per six); below it (a step's convs of 8 samples) in tiles of
    /// three, whose last tile wastes fewer lanes.
    const HALVES_FROM: usize = 24;

    /// # Safety
    /// The CPU has AVX2, FMA (and F16C for halves); `blocks` holds `g.rows` rows rounded up to
    /// whole blocks of `g.bases.len()` columns, `scales` (8-bit storage) a scale per padded row,
    /// and `x` every `g.bases[c] + t·g.t_step` for `t < g.n_t`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    pub(super) unsafe fn gathered<T: Load8>(
        blocks: &[T],
        scales: Option<&[f32]>,
        x: &[f32],
        g: super::Gather,
        store: &mut impl FnMut(usize, Range<usize>, usize, &[[f32; BLOCK]]),
    ) {
        let cols = g.bases.len();
        let mut sums = [[0.0f32; BLOCK]; TILE];
        for b in 0..g.rows.div_ceil(BLOCK) {
            let rows = (g.rows - b * BLOCK).min(BLOCK);
            let part = |lanes: Range<usize>| Part {
                p: blocks[b * BLOCK * cols + lanes.start..][..BLOCK * cols - lanes.start].as_ptr(),
                scales: scales
                    .map(|s| s[b * BLOCK + lanes.start..][..BLOCK - lanes.start].as_ptr()),
                row: b * BLOCK,
                lanes,
            };
            let parts = if rows > HALF && g.n_t >= HALVES_FROM {
                [Some(part(0..HALF)), Some(part(HALF..rows))]
            } else {
                [Some(part(0..rows)), None]
            };
            for part in parts.into_iter().flatten() {
                // SAFETY: the part and its scales are in bounds (sliced above); the caller vouches
                // for the gathered indices.
                unsafe {
                    match part.lanes.len().div_ceil(8) {
                        1 => tiles::<T, 1, 12>(part, x, g, &mut sums, store),
                        2 => tiles::<T, 2, 6>(part, x, g, &mut sums, store),
                        3 => tiles::<T, 3, 4>(part, x, g, &mut sums, store),
                        _ => tiles::<T, 4, 3>(part, x, g, &mut sums, store),
                    }
                }
            }
        }
    }

    /// Rows of one block that [`gathered`] computes together: the block's first row, which of its
    /// rows (lanes), their first value in the block's first column and their scales.
    #[derive(Clone)]
    struct Part<T> {
        p: *const T,
        scales: Option<*const f32>,
        row: usize,
        lanes: Range<usize>,
    }

    /// A part's products with all vectors, `N` at a time (a last, partial tile repeats its last
    /// vector and stores only the real ones), `R` registers of rows.
    ///
    /// # Safety
    /// As [`gathered`], for a part of a block within `blocks`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tiles<T: Load8, const R: usize, const N: usize>(
        part: Part<T>,
        x: &[f32],
        g: super::Gather,
        sums: &mut [[f32; BLOCK]; TILE],
        store: &mut impl FnMut(usize, Range<usize>, usize, &[[f32; BLOCK]]),
    ) {
        let mut t = 0;
        while t < g.n_t {
            let n = (g.n_t - t).min(N);
            let offsets: [usize; N] = std::array::from_fn(|j| (t + j.min(n - 1)) * g.t_step);
            // SAFETY: vectors t..t + n exist (the caller's bounds), and the offsets repeat the
            // last of them past n.
            unsafe { tile::<T, R, N>(&part, x.as_ptr(), g.bases, &offsets, sums) };
            store(part.row, part.lanes.clone(), t, &sums[..n]);
            t += n;
        }
    }

    /// The part's rows (`8·R` from its first, padding included) times the `N` vectors at
    /// `offsets`, into `sums[..N]` at the part's lanes, scaled per row for 8-bit storage.
    ///
    /// # Safety
    /// As [`gathered`], every `bases[c] + offsets[j]` inside `x`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,f16c")]
    #[inline]
    unsafe fn tile<T: Load8, const R: usize, const N: usize>(
        part: &Part<T>,
        x: *const f32,
        bases: &[usize],
        offsets: &[usize; N],
        sums: &mut [[f32; BLOCK]; TILE],
    ) {
        let mut acc = [[_mm256_setzero_ps(); N]; R];
        for (c, &base) in bases.iter().enumerate() {
            // SAFETY (both orders): element c of each gathered vector is inside `x` (the caller's
            // bounds), and eight values at 8·i of the part's column c are inside the block.
            // Whichever of the weights (R) and the broadcasts (N) are fewer is held in registers
            // while the other streams through one at a time: R·N sums + min(R, N) + 1 registers.
            if R < N {
                let w: [__m256; R] =
                    std::array::from_fn(|i| unsafe { T::load8(part.p.add(c * BLOCK + 8 * i)) });
                for (j, &o) in offsets.iter().enumerate() {
                    let v = _mm256_set1_ps(unsafe { *x.add(base + o) });
                    for (acc, &w) in acc.iter_mut().zip(&w) {
                        acc[j] = _mm256_fmadd_ps(w, v, acc[j]);
                    }
                }
            } else {
                let v: [__m256; N] =
                    std::array::from_fn(|j| _mm256_set1_ps(unsafe { *x.add(base + offsets[j]) }));
                for (i, acc) in acc.iter_mut().enumerate() {
                    let w = unsafe { T::load8(part.p.add(c * BLOCK + 8 * i)) };
                    for (a, &v) in acc.iter_mut().zip(&v) {
                        *a = _mm256_fmadd_ps(w, v, *a);
                    }
                }
            }
        }
        let lane = part.lanes.start;
        for (i, acc) in acc.iter().enumerate() {
            // SAFETY: eight of the part's scales (padding rows have scales too).
            let scale = part
                .scales
                .map(|s| unsafe { _mm256_loadu_ps(s.add(8 * i)) });
            for (j, &a) in acc.iter().enumerate() {
                let a = scale.map_or(a, |s| _mm256_mul_ps(a, s));
                // SAFETY: eight floats at lane + 8·i ≤ BLOCK - 8 of a BLOCK-long array.
                unsafe { _mm256_storeu_ps(sums[j].as_mut_ptr().add(lane + 8 * i), a) };
            }
        }
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn gathered<T>(
        _: &[T],
        _: Option<&[f32]>,
        _: &[f32],
        _: super::Gather,
        _: &mut impl FnMut(usize, Range<usize>, usize, &[[f32; BLOCK]]),
    ) {
        unreachable!("only called where `supported()`")
    }

    #[cfg(not(target_arch = "x86_64"))]
    pub(super) unsafe fn products<T>(
        _: &[T],
        _: Option<&[f32]>,
        _: &[f32],
        _: &mut [f32],
        _: Geometry,
    ) {
        unreachable!("only called where `supported()`")
    }
}

/// 8-bit storage: the exactness test, and the products.
mod int8 {
    use super::{BLOCK, Geometry};

    /// The smallest scale kept: far above the subnormal range, so that scaling a row's sums by it
    /// never rounds.
    const MIN_SCALE_EXP: i32 = -100;

    /// The exponent of the lowest set bit of a finite nonzero `v` (v = odd integer · 2^e), or
    /// `None` for infinities and NaN.
    fn lowest_bit_exp(v: f32) -> Option<i32> {
        let bits = v.to_bits();
        let (exp, mant) = (((bits >> 23) & 0xff) as i32, bits & 0x7f_ffff);
        match exp {
            0xff => None,
            // Subnormal: mant · 2^-149.
            0 => Some(-149 + mant.trailing_zeros() as i32),
            _ => Some(exp - 150 + (mant | 0x80_0000).trailing_zeros() as i32),
        }
    }

    /// For a block-layout matrix of `cols` columns whose every row is `integer · 2^e` with
    /// integers in -127..=127 (each row its own e, at least [`MIN_SCALE_EXP`]): the integers in
    /// the same layout and each row's scale 2^e. `None` when a row is not so.
    pub(super) fn exact(data: &[f32], cols: usize) -> Option<(Vec<i8>, Vec<f32>)> {
        let padded_rows = data.len() / cols.max(1);
        let mut scales = vec![1.0f32; padded_rows];
        let at = |r: usize, c: usize| (r / BLOCK) * BLOCK * cols + c * BLOCK + r % BLOCK;
        // Row by row, so that a matrix that is not 8-bit is given up on at its first row rather
        // than after a pass over all of it.
        for (r, scale) in scales.iter_mut().enumerate() {
            let (mut e, mut peak) = (i32::MAX, 0.0f32);
            for c in 0..cols {
                let v = data[at(r, c)];
                if v != 0.0 {
                    e = e.min(lowest_bit_exp(v)?);
                    peak = peak.max(v.abs());
                }
            }
            if e == i32::MAX {
                continue; // all zeros
            }
            if e < MIN_SCALE_EXP {
                return None;
            }
            *scale = (e as f32).exp2();
            // Exact: a power-of-two division of a multiple of it.
            if peak / *scale > 127.0 {
                return None;
            }
        }
        let values = data
            .iter()
            .enumerate()
            .map(|(i, &v)| (v / scales[(i / (BLOCK * cols)) * BLOCK + i % BLOCK]) as i8)
            .collect();
        Some((values, scales))
    }

    crate::simd::avx2_dispatch!(
        /// [`super::products`] for 8-bit storage: each block's sums of `integer · x`, then
        /// scaled per row.
        pub(super) fn products(
            blocks: &[i8],
            scales: &[f32],
            xs: &[f32],
            n: usize,
            ys: &mut [f32],
            g: Geometry
        ) => products_portable
    );

    #[inline(always)]
    fn products_portable(
        blocks: &[i8],
        scales: &[f32],
        xs: &[f32],
        n: usize,
        ys: &mut [f32],
        g: Geometry,
    ) {
        let blocks_out = g.y_len.div_ceil(BLOCK);
        for (b, block) in blocks
            .chunks_exact(BLOCK * g.cols)
            .take(blocks_out)
            .enumerate()
        {
            let scales: &[f32; BLOCK] = scales[b * BLOCK..][..BLOCK]
                .try_into()
                .expect("a scale per padded row");
            for j in 0..n {
                let mut acc = [0.0f32; BLOCK];
                for (column, &v) in block.chunks_exact(BLOCK).zip(&xs[j * g.cols..][..g.cols]) {
                    let column: &[i8; BLOCK] = column.try_into().expect("chunks of BLOCK");
                    for (a, &q) in acc.iter_mut().zip(column) {
                        *a += f32::from(q) * v;
                    }
                }
                for (a, &s) in acc.iter_mut().zip(scales) {
                    *a *= s;
                }
                super::store(&acc, ys, j, b, g.y_len);
            }
        }
    }
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
    pub(super) fn products(blocks: &[u16], xs: &[f32], n: usize, ys: &mut [f32], g: Geometry) {
        #[cfg(target_arch = "x86_64")]
        {
            assert!(
                supported(),
                "half precision is only stored where the CPU has F16C"
            );
            assert!(blocks.len() >= g.y_len.div_ceil(BLOCK) * BLOCK * g.cols);
            // SAFETY: the CPU has AVX2 and F16C, and every block the product reads lies within
            // `blocks` (both asserted above).
            unsafe { products_f16c(blocks, xs, n, ys, g) }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (blocks, xs, n, ys, g);
            unreachable!("half precision is only stored where the CPU has F16C")
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,f16c")]
    unsafe fn products_f16c(blocks: &[u16], xs: &[f32], n: usize, ys: &mut [f32], g: Geometry) {
        use std::arch::x86_64::*;
        for b in 0..g.y_len.div_ceil(BLOCK) {
            let block = &blocks[b * BLOCK * g.cols..][..BLOCK * g.cols];
            for j in 0..n {
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

    /// Products equal a plain loop bit for bit in every storage, for sizes that do and do not fill
    /// whole blocks, and each storage is chosen exactly when the values allow it.
    #[test]
    fn products_equal_a_plain_loop() {
        for (rows, cols) in [(64, 48), (70, 5), (1, 1), (33, 300)] {
            // Integers in -127..=127 times a power of two that differs from row to row.
            let int8 = |r: usize, c: usize| {
                (((r * 31 + c * 17) % 255) as f32 - 127.0) * (-(((r % 5) + 3) as f32)).exp2()
            };
            // Odd multiples of 2^-11 up to 2001 of them: halves, but not 8-bit integers.
            let half = |r: usize, c: usize| (((r * 31 + c * 17) % 2001) as f32 - 1000.5) / 1024.0;
            // Adding 1e-4 makes some not halves either.
            let single = |r: usize, c: usize| {
                half(r, c) + if (r + c).is_multiple_of(7) { 1e-4 } else { 0.0 }
            };
            let half_storage = if half::supported() {
                Storage::Half
            } else {
                Storage::Single
            };
            let x: Vec<f32> = (0..cols).map(|c| (c as f32 * 0.37).sin()).collect();
            for (m, storage) in [
                (&int8 as &dyn Fn(usize, usize) -> f32, Storage::Int8),
                (&half, half_storage),
                (&single, Storage::Single),
            ] {
                let bm = BlockMatrix::new(rows, cols, m);
                assert_eq!(bm.storage(), storage, "{rows}×{cols}");
                let mut y = vec![f32::NAN; rows];
                bm.apply(&x, &mut y);
                let want = plain(rows, cols, m, &x);
                let same = y.iter().zip(&want).all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(same, "{rows}×{cols} {storage:?}: {y:?} vs {want:?}");
            }
        }
    }

    /// The fused products equal the plain loop to float rounding, in every storage, with odd
    /// column counts (a last unpaired column) and partial blocks.
    #[test]
    fn fused_products_equal_a_plain_loop_to_rounding() {
        let int8 = |r: usize, c: usize| ((((r * 7 + c * 3) % 255) as f32) - 127.0) / 256.0;
        let half = |r: usize, c: usize| (((r * 31 + c * 17) % 2001) as f32 - 1000.5) / 1024.0;
        let single = |r: usize, c: usize| ((r * 13 + c * 5) as f32 * 0.01).sin();
        for (rows, cols) in [(70, 5), (1, 1), (33, 300), (64, 48)] {
            let x: Vec<f32> = (0..cols).map(|c| (c as f32 * 0.37).sin()).collect();
            for m in [&int8 as &dyn Fn(usize, usize) -> f32, &half, &single] {
                let bm = BlockMatrix::new(rows, cols, m);
                let mut y = vec![f32::NAN; rows];
                bm.apply_fused(&x, &mut y);
                let want = plain(rows, cols, m, &x);
                let bound = 1e-5 * cols as f32;
                for (r, (a, b)) in y.iter().zip(&want).enumerate() {
                    assert!(
                        (a - b).abs() <= bound,
                        "{rows}×{cols} {:?} row {r}: {a} vs {b}",
                        bm.storage()
                    );
                }
            }
        }
    }

    /// Gathered products (a strided convolution's windows, overlapping) equal a plain loop over
    /// each gathered vector to rounding, in every storage, for every remainder of the tile; each
    /// block's tiles arrive in ascending vector order, each vector exactly once.
    #[test]
    fn gathered_products_equal_a_plain_loop_to_rounding() {
        let int8 = |r: usize, c: usize| ((((r * 7 + c * 3) % 255) as f32) - 127.0) / 256.0;
        let half = |r: usize, c: usize| (((r * 31 + c * 17) % 2001) as f32 - 1000.5) / 1024.0;
        let single = |r: usize, c: usize| ((r * 13 + c * 5) as f32 * 0.01).sin();
        // (rows, channels, kernel, stride, vectors)
        let shapes = [
            (16, 8, 4, 2, 7),
            (70, 3, 5, 1, 5),
            (33, 16, 3, 4, 1),
            (16, 4, 3, 1, 14),
            (40, 2, 2, 3, 13),
            (88, 5, 1, 1, 26),
        ];
        for (rows, ch, k, stride, n_t) in shapes {
            let len = (n_t - 1) * stride + k;
            let x: Vec<f32> = (0..ch * len).map(|i| (i as f32 * 0.37).sin()).collect();
            let bases: Vec<usize> = (0..ch * k).map(|col| col / k * len + col % k).collect();
            for m in [&int8 as &dyn Fn(usize, usize) -> f32, &half, &single] {
                let bm = BlockMatrix::new(rows, ch * k, m);
                let mut y = vec![f32::NAN; rows * n_t];
                // For each row, the next vector it expects.
                let mut next = vec![0; rows];
                bm.apply_gathered(&x, &bases, stride, n_t, |row, lanes, t, sums| {
                    assert_eq!(row % BLOCK, 0);
                    assert!(matches!(lanes.start, 0 | HALF) && lanes.start < lanes.end);
                    assert!(lanes.end <= BLOCK.min(rows - row));
                    for (j, s) in sums.iter().enumerate() {
                        for i in lanes.clone() {
                            assert_eq!(next[row + i], t + j, "row {}", row + i);
                            next[row + i] += 1;
                            y[(row + i) * n_t + t + j] = s[i];
                        }
                    }
                });
                assert!(next.iter().all(|&t| t == n_t));
                for t in 0..n_t {
                    let xt: Vec<f32> = bases.iter().map(|&b| x[b + t * stride]).collect();
                    let want = plain(rows, ch * k, m, &xt);
                    for (r, want) in want.iter().enumerate() {
                        let got = y[r * n_t + t];
                        assert!(
                            (got - want).abs() <= 1e-5 * (ch * k) as f32,
                            "{rows}×{ch}×{k} {:?} row {r} vector {t}: {got} vs {want}",
                            bm.storage()
                        );
                    }
                }
            }
        }
    }

    /// A row is 8-bit when all its values are integers in -127..=127 times one power of two (not
    /// below 2^-100); zero rows are; -128 times one, infinities, NaN and scales that small are not.
    #[test]
    fn int8_exactness() {
        let block = |row: &[f32]| -> Vec<f32> {
            // One column per value, the row first in a block of otherwise zero rows.
            row.iter()
                .flat_map(|&v| std::iter::once(v).chain(std::iter::repeat_n(0.0, BLOCK - 1)))
                .collect()
        };
        let scale_of = |row: &[f32]| int8::exact(&block(row), row.len()).map(|(_, s)| s[0]);
        assert_eq!(scale_of(&[0.0, -0.0]), Some(1.0));
        assert_eq!(scale_of(&[3.0, -127.0]), Some(1.0));
        assert_eq!(scale_of(&[0.75, -0.5]), Some(0.25));
        assert_eq!(scale_of(&[96.0, 64.0]), Some(32.0));
        assert_eq!(scale_of(&[127.0 * 2f32.powi(-100)]), Some(2f32.powi(-100)));
        assert_eq!(scale_of(&[2f32.powi(-101)]), None);
        assert_eq!(scale_of(&[1.0, 128.0 + 1.0]), None);
        assert_eq!(scale_of(&[-128.0, 1.0]), None);
        assert_eq!(scale_of(&[1.0, f32::INFINITY]), None);
        assert_eq!(scale_of(&[f32::NAN]), None);
        let (q, s) = int8::exact(&block(&[0.75, -0.5]), 2).unwrap();
        assert_eq!((q[0], q[BLOCK], s[1]), (3, -2, 1.0));
    }

    /// Several vectors at once: each gets the bits it gets alone, and the padded rows zeros.
    #[test]
    fn many_vectors_at_once() {
        let (rows, cols, n) = (40, 9, 3);
        let m = |r: usize, c: usize| ((r * 13 + c * 7) % 97) as f32 / 32.0 - 1.5;
        let bm = BlockMatrix::new(rows, cols, m);
        let xs: Vec<f32> = (0..n * cols).map(|i| (i as f32 * 0.53).cos()).collect();
        let y_len = 64; // rows padded to whole blocks
        let mut ys = vec![-7.0f32; n * y_len];
        bm.apply_many(&xs, n, &mut ys, y_len);
        for j in 0..n {
            let y = &ys[j * y_len..][..rows];
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
        }
    }
}
