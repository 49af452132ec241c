//! Matrix products with one or a few vectors in one stream's step, on a [`BlockMatrix`].
//!
//! In one stream's step the largest layers act on a single vector: the LSTMs (`x·Wᵀ`, `h·Rᵀ`),
//! the encoder's last downsampling conv and the conv after its LSTM (one output sample each), and
//! the decoder's conv before its LSTM and its first transposed conv (one input sample). Their
//! weights, about 6.4 of each default-model step graph's 7 MiB in single precision, are read once
//! per frame and do not stay in the development machine's cache. What the op adds is the storage:
//! a matrix whose rows are all 8-bit integers times a power of two, or whose values are all
//! half-precision numbers (the project's models are exported so), is read in fewer bytes; and a
//! kernel that keeps twice the sums in flight with fused multiply-adds
//! ([`BlockMatrix::apply_fused`]): in half precision it still waits on memory, at a quarter of the
//! bytes it goes a quarter faster.
//!
//! The step's other convolutions act on 8 to 320 samples. tract runs each as an im2col copy and a
//! packed product (a transposed one as a product and a separate overlap-add pass), which for
//! these sizes costs as much as the multiply-adds. Here each is a product of the weights with
//! vectors read in place from the input ([`BlockMatrix::apply_gathered`]: a convolution's
//! windows, a transposed convolution's input samples), whose sums go straight to their output
//! samples: 7–9 % off a whole streaming round trip of the default model. Products with several
//! streams' vectors (batched graphs) and long inputs are left to tract, whose kernels then reuse
//! each weight for all of them.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::cnn::{Conv, Deconv, KernelFormat, PaddingSpec, PoolSpec};
use tract_onnx::tract_core::ops::einsum::EinSum;
use tract_onnx::tract_core::ops::nn::DataFormat;

use crate::block_matrix::{BLOCK, BlockMatrix, HALF};

/// Smaller products with one vector stay with tract: the gain is in streaming large weights.
const MIN_WEIGHTS: usize = 16 * 1024;

/// Convolutions with at most this many output samples (transposed ones: input samples) and
/// weights are computed here too, their windows read in place: a step's convs between the first
/// layers and the bottleneck (8 to 320 samples, 0.5 k to 82 k weights in the default model), where
/// tract's packing and its 16-row kernel's remainder tiles cost more than the products. Larger
/// ones (offline graphs specialised to a long input, the full-size model) stay with tract.
const MAX_VECTORS: usize = 512;
const MAX_GATHERED_WEIGHTS: usize = 128 * 1024;

/// Replaces every matrix-vector product of a decluttered model, found as an `EinSum` with a
/// constant matrix and one vector, a convolution with one output sample or a transposed
/// convolution of one input sample, and every other unpadded 1-D (transposed) convolution of at
/// most [`MAX_VECTORS`] output (input) samples and [`MAX_GATHERED_WEIGHTS`] weights, by
/// [`MatVec`]. Run it between decluttering and optimising. Returns how many were replaced.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    rewrite_from(model, MIN_WEIGHTS)
}

/// [`rewrite`] for products with at least `min_weights` weights.
fn rewrite_from(model: &mut TypedModel, min_weights: usize) -> TractResult<usize> {
    let mut found = vec![];
    for node in model.nodes() {
        // The op, and the input that carries the vector.
        let op = if let Some(op) = node.op_as::<EinSum>() {
            from_einsum(model, node, op)?
        } else if let Some(op) = node.op_as::<Conv>() {
            from_conv(model, node, op)?.map(|op| (op, node.inputs[0]))
        } else if let Some(op) = node.op_as::<Deconv>() {
            from_deconv(model, node, op)?.map(|op| (op, node.inputs[0]))
        } else {
            None
        };
        if let Some((op, input)) = op.filter(|(op, _)| {
            let weights = op.matrix.rows() * op.matrix.cols();
            match op.layout {
                Layout::Vector => weights >= min_weights,
                _ => weights <= MAX_GATHERED_WEIGHTS,
            }
        }) {
            found.push((node.id, op, input));
        }
    }
    let count = found.len();
    for (id, op, input) in found {
        let node = model.node(id);
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, input)?;
        let y = patch.wire_node(format!("{}.mat_vec", node.name), op, &[x])?;
        patch.shunt_outside(model, id.into(), y[0])?;
        patch.apply(model)?;
    }
    Ok(count)
}

fn konst(model: &TypedModel, outlet: OutletId) -> Option<Arc<Tensor>> {
    let fact = model.outlet_fact(outlet).ok()?;
    fact.konst
        .clone()
        .filter(|_| fact.datum_type == f32::datum_type())
}

fn concrete(model: &TypedModel, outlet: OutletId) -> Option<TVec<usize>> {
    let fact = model.outlet_fact(outlet).ok()?;
    (fact.datum_type == f32::datum_type())
        .then(|| fact.shape.as_concrete().map(TVec::from))
        .flatten()
}

fn plain_values(t: &Tensor) -> TractResult<Vec<f32>> {
    Ok(t.try_as_plain_ram()?.as_slice::<f32>()?.to_vec())
}

/// `x·Wᵀ` (or `x·W`) with a constant `[n, k]` matrix and an input whose other axes are all 1;
/// with the op, the input that carries `x`.
fn from_einsum(
    model: &TypedModel,
    node: &TypedNode,
    op: &EinSum,
) -> TractResult<Option<(MatVec, OutletId)>> {
    if node.inputs.len() != 2 || op.q_params.is_some() || op.operating_dt != f32::datum_type() {
        return Ok(None);
    }
    let Some(w_slot) = (0..2).find(|&i| {
        konst(model, node.inputs[i]).is_some_and(|w| w.rank() == 2)
            && konst(model, node.inputs[1 - i]).is_none()
    }) else {
        return Ok(None);
    };
    let x_slot = 1 - w_slot;
    let w = konst(model, node.inputs[w_slot]).expect("found above");
    let (Some(x_shape), Some(out_shape)) = (
        concrete(model, node.inputs[x_slot]),
        concrete(model, node.id.into()),
    ) else {
        return Ok(None);
    };
    let (mut k_pos, mut n_pos) = (None, None);
    for axis in op.axes.iter_all_axes() {
        let (w_at, x_at, out_at) = (&axis.inputs[w_slot], &axis.inputs[x_slot], &axis.outputs[0]);
        if w_at.len() > 1 || x_at.len() > 1 || out_at.len() > 1 {
            return Ok(None);
        }
        match (w_at.first(), x_at.first(), out_at.first()) {
            (Some(&w), Some(_), None) if k_pos.is_none() => k_pos = Some(w),
            (Some(&w), None, Some(_)) if n_pos.is_none() => n_pos = Some(w),
            (None, x, out) => {
                // An axis the matrix does not have: the vector's and the output's must be 1.
                let one = |at: Option<&usize>, shape: &[usize]| at.is_none_or(|&p| shape[p] == 1);
                if !one(x, &x_shape) || !one(out, &out_shape) {
                    return Ok(None);
                }
            }
            _ => return Ok(None),
        }
    }
    let (Some(k_pos), Some(_)) = (k_pos, n_pos) else {
        return Ok(None);
    };
    let (rows, cols) = (w.shape()[1 - k_pos], w.shape()[k_pos]);
    let v = plain_values(&w)?;
    let matrix = BlockMatrix::new(rows, cols, |r, c| {
        if k_pos == 1 {
            v[r * cols + c]
        } else {
            v[c * rows + r]
        }
    });
    let op = MatVec {
        matrix: Arc::new(matrix),
        bias: None,
        layout: Layout::Vector,
        x_len: cols,
        out_shape,
    };
    Ok(Some((op, node.inputs[x_slot])))
}

/// A 1-D geometry with no padding, no dilation, one group, channels first and batch 1.
fn plain_1d(pool: &PoolSpec, group: usize) -> bool {
    let no_pad = match &pool.padding {
        PaddingSpec::Valid => true,
        PaddingSpec::Explicit(a, b) => a.iter().chain(b).all(|&p| p == 0),
        _ => false,
    };
    no_pad
        && group == 1
        && pool.data_format == DataFormat::NCHW
        && pool.kernel_shape.len() == 1
        && pool.dilations().iter().all(|&d| d == 1)
}

/// Per-row bias of a conv whose bias input is a constant of one value or one per output channel
/// (`None` if it is all zeros).
fn conv_bias(
    model: &TypedModel,
    node: &TypedNode,
    channels: usize,
    per_channel: usize,
) -> TractResult<Option<Option<Vec<f32>>>> {
    let Some(b) = node.inputs.get(2).and_then(|&o| konst(model, o)) else {
        return Ok(None);
    };
    let b = plain_values(&b)?;
    if b.len() != 1 && b.len() != channels {
        return Ok(None);
    }
    if b.iter().all(|&v| v == 0.0) {
        return Ok(Some(None));
    }
    let rows = (0..channels * per_channel)
        .map(|r| b[if b.len() == 1 { 0 } else { r / per_channel }])
        .collect();
    Ok(Some(Some(rows)))
}

/// A convolution of few output samples: the product of the weights with each window, read in
/// place (one window, the whole input, is a plain matrix-vector product).
fn from_conv(model: &TypedModel, node: &TypedNode, op: &Conv) -> TractResult<Option<MatVec>> {
    if op.q_params.is_some()
        || op.kernel_fmt != KernelFormat::OIHW
        || !plain_1d(&op.pool_spec, op.group)
    {
        return Ok(None);
    }
    let Some(([1, c, len], [1, m, n_t], w, [wm, wc, k])) = conv_parts(model, node) else {
        return Ok(None);
    };
    let stride = op.pool_spec.strides()[0];
    if (wm, wc) != (m, c) || len < k || (len - k) / stride + 1 != n_t || n_t > MAX_VECTORS {
        return Ok(None);
    }
    let Some(bias) = conv_bias(model, node, m, 1)? else {
        return Ok(None);
    };
    let v = plain_values(&w)?;
    let cols = c * k;
    let layout = if n_t == 1 && len == k {
        Layout::Vector
    } else {
        Layout::Conv {
            bases: Arc::new((0..cols).map(|col| col / k * len + col % k).collect()),
            stride,
            n_t,
        }
    };
    Ok(Some(MatVec {
        matrix: Arc::new(BlockMatrix::new(m, cols, |r, col| v[r * cols + col])),
        bias: bias.map(Arc::new),
        layout,
        x_len: c * len,
        out_shape: tvec![1, m, n_t],
    }))
}

/// A transposed convolution of few input samples: output sample `t·stride + j` of channel `o`
/// gets `Σ_c W[o, c, j] · x[c, t]` from each input sample `t` (tract stores the kernel
/// `[O, I, K]`), as rows `o·K + j` of the product with each input sample.
fn from_deconv(model: &TypedModel, node: &TypedNode, op: &Deconv) -> TractResult<Option<MatVec>> {
    if op.kernel_format != KernelFormat::OIHW
        || op.adjustments.iter().any(|&a| a != 0)
        || !plain_1d(&op.pool_spec, op.group)
    {
        return Ok(None);
    }
    let Some(([1, c, n_t], [1, o, len], w, [wo, wc, k])) = conv_parts(model, node) else {
        return Ok(None);
    };
    let stride = op.pool_spec.strides()[0];
    if (wo, wc) != (o, c) || n_t == 0 || (n_t - 1) * stride + k != len || n_t > MAX_VECTORS {
        return Ok(None);
    }
    let per_row = if n_t == 1 { k } else { 1 };
    let Some(bias) = conv_bias(model, node, o, per_row)? else {
        return Ok(None);
    };
    let v = plain_values(&w)?;
    let layout = if n_t == 1 {
        Layout::Vector
    } else {
        Layout::Deconv {
            bases: Arc::new((0..c).map(|col| col * n_t).collect()),
            runs: Arc::new(deconv_runs(o, k, len)),
            stride,
            n_t,
        }
    };
    Ok(Some(MatVec {
        matrix: Arc::new(BlockMatrix::new(o * k, c, |r, col| {
            v[((r / k) * c + col) * k + r % k]
        })),
        bias: bias.map(Arc::new),
        layout,
        x_len: c * n_t,
        out_shape: tvec![1, o, len],
    }))
}

/// For each block of rows `o·k + j` (output `o`, kernel tap `j`), its runs of rows whose outputs
/// `o·len + j` are consecutive: a run ends at an output channel's end or a half block's (the
/// products may come half a block at a time).
fn deconv_runs(o: usize, k: usize, len: usize) -> Vec<Vec<(usize, usize, usize)>> {
    let rows = o * k;
    (0..rows.div_ceil(BLOCK))
        .map(|b| {
            let mut runs = vec![];
            let mut r = b * BLOCK;
            while r < rows.min((b + 1) * BLOCK) {
                let n = (k - r % k).min(HALF - r % HALF).min(rows - r);
                runs.push((r - b * BLOCK, n, r / k * len + r % k));
                r += n;
            }
            runs
        })
        .collect()
}

/// The input and output shapes of a 1-D (transposed) convolution with concrete rank-3 shapes and
/// a constant kernel, the kernel and its shape.
type ConvParts = ([usize; 3], [usize; 3], Arc<Tensor>, [usize; 3]);

fn conv_parts(model: &TypedModel, node: &TypedNode) -> Option<ConvParts> {
    let x = concrete(model, node.inputs[0])?;
    let out = concrete(model, node.id.into())?;
    let w = konst(model, node.inputs[1])?;
    let w_shape = w.shape().try_into().ok()?;
    Some((x[..].try_into().ok()?, out[..].try_into().ok()?, w, w_shape))
}

/// Products of a matrix `M` with the input's values, laid out by `layout`, plus `bias` (one per
/// row of `M`, or per output channel of a transposed convolution of several samples); the output
/// shaped `out_shape`.
#[derive(Debug, Clone, PartialEq)]
pub struct MatVec {
    matrix: Arc<BlockMatrix>,
    bias: Option<Arc<Vec<f32>>>,
    layout: Layout,
    /// The input's length.
    x_len: usize,
    out_shape: TVec<usize>,
}

/// How the input's values make the vectors, and the products the output.
#[derive(Debug, Clone, PartialEq, Hash)]
enum Layout {
    /// `y = M·x`, `x` the input's values in order.
    Vector,
    /// A convolution's `n_t` output samples: `y[r, t] = Σ_c M[r, c] · x[bases[c] + t·stride]`.
    Conv {
        bases: Arc<Vec<usize>>,
        stride: usize,
        n_t: usize,
    },
    /// A transposed convolution of `n_t` input samples (`x[c, t]` at `bases[c] + t`): row
    /// `o·K + j` of the product with sample `t` is added to output `o` at sample `t·stride + j`.
    /// `runs[b]` lists block `b`'s runs of rows whose outputs are consecutive, as (first row in
    /// the block, rows, output index at `t = 0`), none across half blocks.
    Deconv {
        bases: Arc<Vec<usize>>,
        runs: Arc<Vec<Vec<(usize, usize, usize)>>>,
        stride: usize,
        n_t: usize,
    },
}

impl Eq for MatVec {}

impl std::hash::Hash for MatVec {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.out_shape.hash(h);
        self.layout.hash(h);
        self.matrix.hash_values(h);
        (self.bias.iter().flat_map(|b| b.iter())).for_each(|v| v.to_bits().hash(h));
    }
}

impl Op for MatVec {
    fn name(&self) -> StaticName {
        match self.layout {
            Layout::Vector => "MatVec",
            Layout::Conv { .. } => "GatheredConv",
            Layout::Deconv { .. } => "GatheredDeconv",
        }
        .into()
    }

    fn info(&self) -> TractResult<Vec<String>> {
        Ok(vec![format!(
            "{}×{}, {}",
            self.matrix.rows(),
            self.matrix.cols(),
            self.matrix.storage().describe()
        )])
    }

    op_as_typed_op!();
}

impl EvalOp for MatVec {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let input = inputs[0].try_as_plain_ram()?;
        let x = input.as_slice::<f32>()?;
        ensure!(
            x.len() == self.x_len,
            "{}: an input of {} values for {}",
            self.name(),
            x.len(),
            self.x_len
        );
        let mut out = Tensor::zero::<f32>(&self.out_shape)?;
        {
            let mut plain = out.try_as_plain_ram_mut()?;
            let y = plain.as_slice_mut::<f32>()?;
            let bias = self.bias.as_deref().map(|b| &b[..]);
            match &self.layout {
                Layout::Vector => {
                    self.matrix.apply_fused(x, y);
                    for (y, b) in y.iter_mut().zip(bias.into_iter().flatten()) {
                        *y += b;
                    }
                }
                Layout::Conv { bases, stride, n_t } => {
                    let n_t = *n_t;
                    self.matrix
                        .apply_gathered(x, bases, *stride, n_t, |row, lanes, t, sums| {
                            for i in lanes {
                                let b = bias.map_or(0.0, |b| b[row + i]);
                                let out = &mut y[(row + i) * n_t + t..][..sums.len()];
                                for (o, s) in out.iter_mut().zip(sums) {
                                    *o = s[i] + b;
                                }
                            }
                        });
                }
                Layout::Deconv {
                    bases,
                    runs,
                    stride,
                    n_t,
                } => {
                    let len = self.out_shape[2];
                    if let Some(bias) = bias {
                        for (y, &b) in y.chunks_exact_mut(len).zip(bias) {
                            y.fill(b);
                        }
                    }
                    self.matrix
                        .apply_gathered(x, bases, 1, *n_t, |row, lanes, t, sums| {
                            let runs = runs[row / BLOCK].iter();
                            for &(first, n, at) in runs.filter(|r| lanes.contains(&r.0)) {
                                for (j, s) in sums.iter().enumerate() {
                                    let out = &mut y[at + (t + j) * stride..][..n];
                                    for (o, &s) in out.iter_mut().zip(&s[first..][..n]) {
                                        *o += s;
                                    }
                                }
                            }
                        });
                }
            }
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for MatVec {
    fn output_facts(&self, _inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        Ok(tvec!(f32::fact(&*self.out_shape)))
    }
    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::block_matrix::Storage;

    /// A step graph's decluttered model, with `min_weights` products rewritten (`None`: none),
    /// made runnable; how many were rewritten, and each one's op name and storage.
    fn plan(
        bytes: &[u8],
        min_weights: Option<usize>,
    ) -> (crate::model::Plan, usize, Vec<(StaticName, Storage)>) {
        let model = super::super::read_for_cpu(bytes, None).unwrap();
        let mut typed = model.into_typed().unwrap().into_decluttered().unwrap();
        let n = min_weights.map_or(0, |m| rewrite_from(&mut typed, m).unwrap());
        let storage = typed
            .nodes()
            .iter()
            .filter_map(|node| node.op_as::<MatVec>())
            .map(|op| (op.name(), op.matrix.storage()))
            .collect();
        let plan: Arc<TypedRunnableModel> =
            typed.into_optimized().unwrap().into_runnable().unwrap();
        (Arc::new(plan), n, storage)
    }

    /// Runs both plans on the same inputs (the step's input and every state) and returns the
    /// largest difference over all outputs, relative to the outputs' largest value.
    fn compare(a: &crate::model::Plan, b: &crate::model::Plan) -> f32 {
        let inputs: TVec<TValue> = (0..a.input_count())
            .map(|i| {
                let fact = a.input_fact(i).unwrap();
                let shape = fact.shape.as_concrete().unwrap().to_vec();
                let len: usize = shape.iter().product();
                let v: Vec<f32> = (0..len)
                    .map(|j| ((j * 7 + i * 3) as f32 * 0.173).sin() * 0.8)
                    .collect();
                Tensor::from_shape(&shape, &v).unwrap().into_tvalue()
            })
            .collect();
        let (x, y) = (a.run(inputs.clone()).unwrap(), b.run(inputs).unwrap());
        let mut worst = 0.0f32;
        for (x, y) in x.iter().zip(&y) {
            let (x, y) = (
                super::super::values::<f32>(x),
                super::super::values::<f32>(y),
            );
            let scale = y.iter().fold(1e-6f32, |m, v| m.max(v.abs()));
            worst = x
                .iter()
                .zip(&y)
                .fold(worst, |m, (p, q)| m.max((p - q).abs() / scale));
        }
        worst
    }

    fn read(dir: &str, file: &str) -> Vec<u8> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::read(root.join(dir).join(file)).unwrap()
    }

    /// The default model's step graphs: the four LSTM products and the two convs on one sample
    /// (encoder: the last downsampling conv and the conv after the LSTM; decoder: the conv
    /// before the LSTM and the first transposed conv) become matrix-vector products; every conv
    /// of at most 512 output samples (transposed: input samples) and no padding becomes a
    /// gathered product; all are kept as 8-bit integers (the model is exported with
    /// `--weights int8`) on any CPU, and the graphs compute what tract computes to float rounding.
    #[test]
    fn default_model_products_rewritten_and_unchanged() {
        for (file, convs, deconvs) in [("encoder_step.onnx", 8, 0), ("decoder_step.onnx", 4, 4)] {
            let bytes = read("models/default", file);
            let (ours, n, ops) = plan(&bytes, Some(MIN_WEIGHTS));
            let (plain, _, _) = plan(&bytes, None);
            let count = |name: &str| ops.iter().filter(|(n, _)| n == name).count();
            assert_eq!(count("MatVec"), 6, "{file}");
            assert_eq!(count("GatheredConv"), convs, "{file}");
            assert_eq!(count("GatheredDeconv"), deconvs, "{file}");
            assert_eq!(n, ops.len(), "{file}");
            assert!(ops.iter().all(|(_, s)| *s == Storage::Int8), "{file}");
            // Float rounding only: the fused kernels sum in another order and with fused
            // multiply-adds, and the differences grow through the step (up to 1.1e-5 of the largest
            // output on cpu-r10's encoder, 0.4e-5 on cpu-r8's); a wrong weight or window moves the
            // outputs by far more.
            let d = compare(&ours, &plain);
            assert!(d < 5e-5, "{file}: {d}");
        }
    }

    /// Every product of the tiny test model, whatever its size: the same checks on other shapes.
    #[test]
    fn tiny_model_products_rewritten_and_unchanged() {
        for file in ["encoder_step.onnx", "decoder_step.onnx"] {
            let bytes = read("tests/data/tiny_causal_ds640/model_steps", file);
            let (ours, n, _) = plan(&bytes, Some(0));
            let (plain, _, _) = plan(&bytes, None);
            assert!(n >= 4, "{file}: {n}");
            let d = compare(&ours, &plain);
            assert!(d < 1e-5, "{file}: {d}");
        }
    }

    /// Several streams at once are left to tract: a batch of two has no product with one vector.
    #[test]
    fn batched_products_left_alone() {
        let bytes = read("models/default", "encoder_step.onnx");
        let mut model = super::super::read_for_cpu(&bytes, None).unwrap();
        for i in 0..model.inputs.len() {
            let fact = model.input_fact(i).unwrap().clone();
            let mut shape: Vec<usize> = fact.shape.as_concrete_finite().unwrap().unwrap().to_vec();
            // The input and conv states are [N, C, L], the LSTM states [layers, N, H].
            let axis = if shape.len() == 3 && shape[0] == 2 {
                1
            } else {
                0
            };
            shape[axis] = 2;
            model.set_input_fact(i, f32::fact(&shape).into()).unwrap();
        }
        for o in 0..model.outputs.len() {
            model.set_output_fact(o, InferenceFact::default()).unwrap();
        }
        let mut typed = model.into_typed().unwrap().into_decluttered().unwrap();
        assert_eq!(rewrite(&mut typed).unwrap(), 0);
    }
}
