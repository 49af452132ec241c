//! Small convolutions, computed directly.
//!
//! tract runs every convolution as a matrix product whose kernel computes 16 output channels at
//! once, so a conv with 1 or 4 of them (the default model's last layer and its resblocks' first
//! convs at 640 samples) wastes most of each product: at 16 streams per run these three convs
//! took 84 µs per stream for 0.16 M multiply-adds, 1–2.5 G multiply-adds/s. Done directly, a row of
//! outputs per output channel with the time axis vectorised, they reach several times that. In a
//! single stream's step the same holds for the early unstrided convs with a few more channels
//! (see [`MAX_MACS_ONE_STREAM`]). Only step graphs (concrete lengths, no padding) are rewritten.

use std::collections::HashMap;

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{GraphProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

/// The op type the rewritten graphs name (not an ONNX op; only this runtime reads it).
pub(super) const OP_TYPE: &str = "FuncodecSmallConv";

/// Convs with at most this many output channels are computed directly.
const MAX_OUT_CHANNELS: i64 = 4;

/// In a single stream's graph, unstrided convs with at most this many multiply-adds per output
/// sample (`M·C·K`) are computed directly too: tract spends 15–20 µs on any of the default
/// model's early convs (packing a 160–640 sample input for a product with few rows), while
/// directly one with 512 takes about 10. Above it, and when several streams share a product,
/// tract's kernels win (measured per node with `funcodec bench --profile`).
const MAX_MACS_ONE_STREAM: i64 = 512;

/// Which graphs a rewrite is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Streams {
    One,
    Batched,
}

/// Rewrites each `Conv` with a `[M, C, K]` weight initializer, one group and no padding that is
/// small enough (at most [`MAX_OUT_CHANNELS`] outputs, or for one stream, unstrided with at most
/// [`MAX_MACS_ONE_STREAM`] multiply-adds per sample) into [`OP_TYPE`] (channels on axis 1).
/// Returns how many.
pub(crate) fn rewrite(graph: &mut GraphProto, streams: Streams) -> usize {
    let dims: HashMap<&str, Vec<i64>> = graph
        .initializer
        .iter()
        .map(|t| (t.name.as_str(), t.dims.clone()))
        .collect();
    let mut count = 0;
    for node in &mut graph.node {
        let weight = node.input.get(1).and_then(|w| dims.get(w.as_str()));
        let unstrided = node
            .attribute
            .iter()
            .all(|a| a.name != "strides" || a.ints.iter().all(|&s| s == 1));
        let small = weight.is_some_and(|d| {
            d.len() == 3
                && (d[0] <= MAX_OUT_CHANNELS
                    || (streams == Streams::One
                        && unstrided
                        && d.iter().product::<i64>() <= MAX_MACS_ONE_STREAM))
        });
        let plain = node.attribute.iter().all(|a| match a.name.as_str() {
            "auto_pad" => a.s.is_empty() || a.s == b"NOTSET",
            "pads" => a.ints.iter().all(|&p| p == 0),
            "group" => a.i == 1,
            "kernel_shape" | "strides" | "dilations" => a.ints.len() == 1,
            _ => false,
        });
        if node.op_type != "Conv" || !small || !plain || node.output.len() != 1 {
            continue;
        }
        let attr = |name: &str| {
            node.attribute
                .iter()
                .find(|a| a.name == name)
                .map_or(1, |a| a.ints[0])
        };
        let (stride, dilation) = (attr("strides"), attr("dilations"));
        node.op_type = OP_TYPE.into();
        node.attribute = vec![
            super::int_attr("stride", stride),
            super::int_attr("dilation", dilation),
            super::int_attr("channel_axis", 1),
        ];
        count += 1;
    }
    count
}

/// Sets the channel axis of a rewritten conv (0 for a stream-second `[C, N, L]` input).
pub(crate) fn set_channel_axis(node: &mut NodeProto, axis: i64) {
    for a in &mut node.attribute {
        if a.name == "channel_axis" {
            a.i = axis;
        }
    }
}

pub(super) fn build(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attr = |name: &str| -> TractResult<usize> {
        node.attribute
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.i as usize)
            .ok_or_else(|| format_err!("{OP_TYPE} without {name}"))
    };
    let op = SmallConvSpec {
        stride: attr("stride")?.max(1),
        dilation: attr("dilation")?.max(1),
        channel_axis: attr("channel_axis")?,
    };
    ensure!(
        op.channel_axis <= 1,
        "{OP_TYPE}: channel axis must be 0 or 1"
    );
    Ok((expand(op), vec![]))
}

/// Inference-side wrapper: types and shapes, then wires [`SmallConv`] with its weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct SmallConvSpec {
    stride: usize,
    dilation: usize,
    channel_axis: usize,
}

impl SmallConvSpec {
    fn out_len(&self, len: usize, kernel: usize) -> TractResult<usize> {
        let span = (kernel - 1) * self.dilation + 1;
        ensure!(
            len >= span,
            "{OP_TYPE}: input of {len} is shorter than the kernel span {span}"
        );
        Ok((len - span) / self.stride + 1)
    }
}

impl Expansion for SmallConvSpec {
    fn name(&self) -> StaticName {
        "SmallConv".into()
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        if inputs.len() != 2 && inputs.len() != 3 {
            bail!("{OP_TYPE} takes x, weight and an optional bias");
        }
        check_output_arity(outputs, 1)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&outputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].rank, 3)?;
        s.equals(&inputs[1].rank, 3)?;
        s.equals(&outputs[0].rank, 3)?;
        let (c, other) = (self.channel_axis, 1 - self.channel_axis);
        s.equals(&outputs[0].shape[other], &inputs[0].shape[other])?;
        s.equals(&outputs[0].shape[c], &inputs[1].shape[0])?;
        let spec = *self;
        s.given_2(
            &inputs[0].shape[2],
            &inputs[1].shape[2],
            move |s, len, kernel| {
                if let (Ok(len), Ok(kernel)) = (len.to_usize(), kernel.to_usize()) {
                    s.equals(&outputs[0].shape[2], spec.out_len(len, kernel)?.to_dim())?;
                }
                Ok(())
            },
        )
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let konst = |i: usize| -> TractResult<Arc<Tensor>> {
            model
                .outlet_fact(inputs[i])?
                .konst
                .clone()
                .ok_or_else(|| format_err!("{OP_TYPE}: input {i} must be a constant"))
        };
        let weight = konst(1)?;
        let (m, c, k) = match *weight.shape() {
            [m, c, k] => (m, c, k),
            ref s => bail!("{OP_TYPE}: weight of shape {s:?}"),
        };
        let values = |t: &Tensor| -> TractResult<Vec<f32>> {
            let t = t.cast_to::<f32>()?;
            Ok(t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
        };
        let w = values(&weight)?;
        let bias = if inputs.len() == 3 {
            values(&*konst(2)?)?
        } else {
            vec![0.0; m]
        };
        ensure!(
            bias.len() == m,
            "{OP_TYPE}: {} bias values for {m} outputs",
            bias.len()
        );
        let op = SmallConv {
            spec: *self,
            out_channels: m,
            in_channels: c,
            kernel: k,
            weight: Arc::new(w),
            bias: Arc::new(bias),
        };
        model.wire_node(prefix, op, &inputs[..1])
    }
}

/// `y[m, t] = bias[m] + Σ_c Σ_k weight[m, c, k] · x[c, t·stride + k·dilation]` for every stream
/// of a `[N, C, L]` (channel axis 1) or `[C, N, L]` (channel axis 0) input.
#[derive(Debug, Clone, PartialEq)]
pub struct SmallConv {
    spec: SmallConvSpec,
    out_channels: usize,
    in_channels: usize,
    kernel: usize,
    weight: Arc<Vec<f32>>,
    bias: Arc<Vec<f32>>,
}

impl Eq for SmallConv {}

impl std::hash::Hash for SmallConv {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        (self.spec, self.out_channels, self.in_channels, self.kernel).hash(h);
        self.weight.iter().for_each(|v| v.to_bits().hash(h));
    }
}

impl SmallConv {
    /// `(streams, length)` of an input, checking its channels.
    fn geometry(&self, shape: &[usize]) -> TractResult<(usize, usize)> {
        let [a, b, len] = *shape else {
            bail!("{OP_TYPE} needs rank 3, got {shape:?}")
        };
        let (c, n) = if self.spec.channel_axis == 0 {
            (a, b)
        } else {
            (b, a)
        };
        ensure!(
            c == self.in_channels,
            "{OP_TYPE}: {c} channels, expected {}",
            self.in_channels
        );
        Ok((n, len))
    }

    fn out_shape(&self, n: usize, t: usize) -> [usize; 3] {
        match self.spec.channel_axis {
            0 => [self.out_channels, n, t],
            _ => [n, self.out_channels, t],
        }
    }
}

impl Op for SmallConv {
    fn name(&self) -> StaticName {
        "SmallConv".into()
    }
    op_as_typed_op!();
}

impl EvalOp for SmallConv {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let (n, len) = self.geometry(x.shape())?;
        let t = self.spec.out_len(len, self.kernel)?;
        let view = x.try_as_plain_ram()?;
        let xs = view.as_slice::<f32>()?;
        let shape = self.out_shape(n, t);
        let mut y = vec![0.0f32; shape.iter().product()];
        // Row (stream s, channel c) of the input and row (s, m) of the output.
        let (ci, mi) = (self.in_channels, self.out_channels);
        let in_row = |s: usize, c: usize| match self.spec.channel_axis {
            0 => (c * n + s) * len,
            _ => (s * ci + c) * len,
        };
        let out_row = |s: usize, m: usize| match self.spec.channel_axis {
            0 => (m * n + s) * t,
            _ => (s * mi + m) * t,
        };
        // A stream's input rows, one per channel (for the unstrided path).
        let rows = Rows {
            channels: ci,
            stride: in_row(0, 1) - in_row(0, 0),
            len,
        };
        for s in 0..n {
            for m in 0..mi {
                let row = &mut y[out_row(s, m)..][..t];
                let w = &self.weight[m * ci * self.kernel..][..ci * self.kernel];
                if self.spec.stride == 1 {
                    direct_row(
                        row,
                        &xs[in_row(s, 0)..],
                        rows,
                        w,
                        self.bias[m],
                        self.spec.dilation,
                    );
                    continue;
                }
                row.fill(self.bias[m]);
                for c in 0..ci {
                    let x = &xs[in_row(s, c)..][..len];
                    let w = &w[c * self.kernel..][..self.kernel];
                    accumulate(row, x, w, self.spec.stride, self.spec.dilation);
                }
            }
        }
        Ok(tvec!(Tensor::from_shape(&shape, &y)?.into_tvalue()))
    }
}

/// Where a stream's input rows lie: `channels` rows of `len` values, `stride` apart.
#[derive(Debug, Clone, Copy)]
struct Rows {
    channels: usize,
    stride: usize,
    len: usize,
}

/// Outputs per block kept in registers by [`direct_row`] (four AVX2 registers).
const TILE: usize = 32;

/// One output row of an unstrided conv: `row[t] = bias + Σ_c Σ_k w[c·K + k] · x_c[t + k·dilation]`,
/// summed from the bias in the order c, then k, as [`accumulate`] sums it (so the same bits),
/// but [`TILE`] outputs at a time kept in registers across all of (c, k) instead of a pass
/// over the row per tap: one load per eight multiply-adds instead of two loads and a store.
fn direct_row(row: &mut [f32], x: &[f32], rows: Rows, w: &[f32], bias: f32, dilation: usize) {
    let kernel = w.len() / rows.channels;
    assert!(w.len() == rows.channels * kernel && kernel >= 1);
    assert!(row.len() + (kernel - 1) * dilation <= rows.len);
    assert!((rows.channels - 1) * rows.stride + rows.len <= x.len());
    let mut full = 0;
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        full = row.len() / TILE * TILE;
        // SAFETY: the CPU has AVX2, and the asserts above keep every tile's reads within `x`.
        unsafe { direct_tiles_avx2(&mut row[..full], x, rows, w, bias, dilation) };
    }
    if full == 0 {
        direct_row_portable(row, x, rows, w, bias, dilation);
        return;
    }
    // The last partial tile, one output at a time in the same order (the portable loop's
    // overhead per tap is several times a tile's work for a tail of one or two outputs).
    for (t, out) in row.iter_mut().enumerate().skip(full) {
        let mut sum = bias;
        for c in 0..rows.channels {
            let xc = &x[c * rows.stride + t..];
            for (k, &wk) in w[c * kernel..][..kernel].iter().enumerate() {
                sum += wk * xc[k * dilation];
            }
        }
        *out = sum;
    }
}

/// [`direct_row`] for whole tiles, with the tile's sums held in four AVX2 registers, which the
/// compiler did not do for the portable loop: 7–11 G multiply-adds/s there against 13–19 here (a
/// throwaway timing loop on the default model's shapes); 22–25 µs per step graph for the direct
/// convs instead of 35–57 (`funcodec bench --profile`, four interleaved pairs).
///
/// # Safety
/// The CPU has AVX2; `row.len()` is a multiple of [`TILE`] and [`direct_row`]'s asserts hold.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn direct_tiles_avx2(
    row: &mut [f32],
    x: &[f32],
    rows: Rows,
    w: &[f32],
    bias: f32,
    dilation: usize,
) {
    use std::arch::x86_64::*;
    let kernel = w.len() / rows.channels;
    for (tile, out) in row.chunks_exact_mut(TILE).enumerate() {
        let mut acc = [_mm256_set1_ps(bias); TILE / 8];
        for c in 0..rows.channels {
            for (k, &wk) in w[c * kernel..][..kernel].iter().enumerate() {
                let wv = _mm256_set1_ps(wk);
                // SAFETY: x_c[tile·TILE + k·dilation ..][..TILE] lies within channel c's row.
                let p = unsafe { x.as_ptr().add(c * rows.stride + tile * TILE + k * dilation) };
                for (i, a) in acc.iter_mut().enumerate() {
                    let v = unsafe { _mm256_loadu_ps(p.add(8 * i)) };
                    *a = _mm256_add_ps(*a, _mm256_mul_ps(wv, v));
                }
            }
        }
        for (i, a) in acc.iter().enumerate() {
            // SAFETY: eight floats at 8·i of a TILE-long chunk.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr().add(8 * i), *a) };
        }
    }
}

#[inline(always)]
fn direct_row_portable(
    row: &mut [f32],
    x: &[f32],
    rows: Rows,
    w: &[f32],
    bias: f32,
    dilation: usize,
) {
    let kernel = w.len() / rows.channels;
    let mut t0 = 0;
    while t0 < row.len() {
        let n = (row.len() - t0).min(TILE);
        let mut acc = [bias; TILE];
        for c in 0..rows.channels {
            let xc = &x[c * rows.stride..][..rows.len];
            for (k, &wk) in w[c * kernel..][..kernel].iter().enumerate() {
                let xs = &xc[t0 + k * dilation..];
                if n == TILE {
                    let xs: &[f32; TILE] = xs[..TILE].try_into().expect("TILE values");
                    for (a, &v) in acc.iter_mut().zip(xs) {
                        *a += wk * v;
                    }
                } else {
                    for (a, &v) in acc[..n].iter_mut().zip(xs) {
                        *a += wk * v;
                    }
                }
            }
        }
        row[t0..t0 + n].copy_from_slice(&acc[..n]);
        t0 += n;
    }
}

crate::simd::avx2_dispatch!(
    /// `row[t] += Σ_k w[k] · x[t·stride + k·dilation]`.
    fn accumulate(row: &mut [f32], x: &[f32], w: &[f32], stride: usize, dilation: usize)
        => accumulate_portable
);

#[inline(always)]
fn accumulate_portable(row: &mut [f32], x: &[f32], w: &[f32], stride: usize, dilation: usize) {
    for (k, &wk) in w.iter().enumerate() {
        let x = &x[k * dilation..];
        if stride == 1 {
            for (r, &v) in row.iter_mut().zip(x) {
                *r += wk * v;
            }
        } else {
            for (r, v) in row.iter_mut().zip(x.iter().step_by(stride)) {
                *r += wk * v;
            }
        }
    }
}

impl TypedOp for SmallConv {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = inputs[0]
            .shape
            .as_concrete()
            .ok_or_else(|| format_err!("{OP_TYPE} needs a concrete input shape"))?;
        let (n, len) = self.geometry(shape)?;
        let t = self.spec.out_len(len, self.kernel)?;
        Ok(tvec!(f32::fact(self.out_shape(n, t))))
    }
    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Engine;
    use crate::model::plan_from_facts;

    /// The op against the plain formula, for both channel axes, strided (a pass per tap) and
    /// unstrided (outputs kept in registers), with dilation and outputs that do not fill whole
    /// tiles; unstrided, the bits equal those of a pass per tap.
    #[test]
    fn direct_conv_matches_the_formula() {
        let (m, c, k, n, len) = (3, 5, 4, 2, 80);
        let w: Vec<f32> = (0..m * c * k)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let b = vec![0.5, -1.0, 2.0];
        let x: Vec<f32> = (0..n * c * len).map(|i| (i as f32 * 0.77).sin()).collect();
        for (stride, dilation) in [(2, 3), (1, 3), (1, 1)] {
            let spec = |axis| SmallConvSpec {
                stride,
                dilation,
                channel_axis: axis,
            };
            let t = spec(1).out_len(len, k).unwrap();
            for axis in [1, 0] {
                let op = SmallConv {
                    spec: spec(axis),
                    out_channels: m,
                    in_channels: c,
                    kernel: k,
                    weight: Arc::new(w.clone()),
                    bias: Arc::new(b.clone()),
                };
                // x is [N, C, L]; the channel-first case gets the same values as [C, N, L].
                let shape = if axis == 1 { [n, c, len] } else { [c, n, len] };
                let at = |s: usize, ch: usize, i: usize| match axis {
                    1 => (s * c + ch) * len + i,
                    _ => (ch * n + s) * len + i,
                };
                let mut input = vec![0.0; x.len()];
                for s in 0..n {
                    for ch in 0..c {
                        for i in 0..len {
                            input[at(s, ch, i)] = x[(s * c + ch) * len + i];
                        }
                    }
                }
                let input = Tensor::from_shape(&shape, &input).unwrap();
                let out = op
                    .eval(&EvalContext::out_of_plan(), tvec!(input.into_tvalue()))
                    .unwrap();
                let got = super::super::values::<f32>(&out[0]);
                for s in 0..n {
                    for o in 0..m {
                        let mut pass = vec![b[o]; t];
                        for ch in 0..c {
                            let row = &x[(s * c + ch) * len..][..len];
                            accumulate(
                                &mut pass,
                                row,
                                &w[(o * c + ch) * k..][..k],
                                stride,
                                dilation,
                            );
                        }
                        for i in 0..t {
                            let mut want = b[o];
                            for ch in 0..c {
                                for j in 0..k {
                                    want += w[(o * c + ch) * k + j]
                                        * x[(s * c + ch) * len + i * stride + j * dilation];
                                }
                            }
                            let ix = if axis == 1 {
                                (s * m + o) * t + i
                            } else {
                                (o * n + s) * t + i
                            };
                            let what = format!("stride {stride} axis {axis} s {s} m {o} t {i}");
                            assert!((got[ix] - want).abs() < 1e-5, "{what}");
                            assert_eq!(got[ix].to_bits(), pass[i].to_bits(), "{what}");
                        }
                    }
                }
            }
        }
    }

    /// In the test model's decoder step graph, the small convs are found and the rewritten
    /// graph computes what tract's own convolutions compute.
    #[test]
    fn step_graph_rewritten_and_unchanged() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/data/tiny_causal_ds640/model_steps");
        let bytes = std::fs::read(dir.join("decoder_step.onnx")).unwrap();
        let mut proto = tract_onnx::onnx()
            .proto_model_for_read(&mut &bytes[..])
            .unwrap();
        let n = rewrite(proto.graph.as_mut().unwrap(), Streams::Batched);
        assert!(n >= 2, "{n} small convs");
        let edit = |g: &mut GraphProto| {
            rewrite(g, Streams::One);
        };
        let ours = plan_from_facts(&bytes, &[], Engine::CPU, Some(&edit)).unwrap();
        let plain = plan_from_facts(&bytes, &[], Engine::CPU, None).unwrap();
        let inputs: TVec<TValue> = (0..ours.input_count())
            .map(|i| {
                let fact = plain.input_fact(i).unwrap();
                let shape = fact.shape.as_concrete().unwrap().to_vec();
                let len: usize = shape.iter().product();
                let v: Vec<f32> = (0..len).map(|j| ((j + i) as f32 * 0.31).cos()).collect();
                Tensor::from_shape(&shape, &v).unwrap().into_tvalue()
            })
            .collect();
        let a = ours.run(inputs.clone()).unwrap();
        let b = plain.run(inputs).unwrap();
        for (x, y) in a.iter().zip(&b) {
            let (x, y) = (
                super::super::values::<f32>(x),
                super::super::values::<f32>(y),
            );
            let d = x
                .iter()
                .zip(&y)
                .fold(0.0f32, |m, (p, q)| m.max((p - q).abs()));
            assert!(d < 1e-5, "{d}");
        }
    }
}
