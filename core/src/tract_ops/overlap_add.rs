//! A streaming transposed conv's overlap-add as one op.
//!
//! The exporter writes each causal transposed conv of a step graph (`models/fcexport/stream.py`,
//! `StepConvTr`) as the conv without bias, then seven nodes: the first `tail` samples sliced off
//! and added to the state carried from the previous step, the rest sliced off, both concatenated
//! again, the first `n` samples sliced off and given the bias (the step's output), the remaining
//! `tail` sliced off (the next state). In a single stream's step each of those nodes costs about
//! a microsecond of tract bookkeeping and a fresh tensor for a few hundred values: 5–7 µs per
//! transposed conv, five of them in the default model's decoder step. [`rewrite`] replaces the
//! seven by one [`OverlapAdd`], which makes the same two additions per value in one pass, so the
//! same bits.

use std::collections::{HashMap, HashSet};

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{GraphProto, NodeProto, TensorProto};
use tract_onnx::tract_hir::internal::*;

/// The op type the rewritten graphs name (not an ONNX op; only this runtime reads it).
pub(super) const OP_TYPE: &str = "FuncodecOverlapAdd";

/// Slices' open end, as PyTorch exports `y[..., a:]`.
const OPEN_END: i64 = i64::MAX;

/// Rewrites every overlap-add of a step graph (see the module doc) into [`OP_TYPE`] with inputs
/// `(y, state, bias)` and outputs `(output, next state)`; returns how many. A pattern that
/// differs in any node, constant or consumer is left alone.
pub(crate) fn rewrite(graph: &mut GraphProto) -> usize {
    let mut count = 0;
    while let Some(found) = find(graph) {
        apply(graph, found);
        count += 1;
    }
    count
}

/// The nodes of one overlap-add, by index, and what the fused node needs.
struct Found {
    /// Slice, Add (state), Slice, Concat, Slice (head), Add (bias), Slice (tail).
    nodes: [usize; 7],
    y: String,
    state: String,
    bias: String,
    tail: i64,
    n: i64,
}

fn find(graph: &GraphProto) -> Option<Found> {
    let producer: HashMap<&str, usize> = graph
        .node
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.output.iter().map(move |o| (o.as_str(), i)))
        .collect();
    let mut consumers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, n) in graph.node.iter().enumerate() {
        for input in &n.input {
            consumers.entry(input.as_str()).or_default().push(i);
        }
    }
    let graph_inputs: HashSet<&str> = graph.input.iter().map(|v| v.name.as_str()).collect();
    let graph_outputs: HashSet<&str> = graph.output.iter().map(|v| v.name.as_str()).collect();
    let constants: HashSet<&str> = graph
        .initializer
        .iter()
        .map(|t| t.name.as_str())
        .chain(
            graph
                .node
                .iter()
                .filter(|n| n.op_type == "Constant")
                .flat_map(|n| n.output.iter().map(|o| o.as_str())),
        )
        .collect();
    let ints = |name: &str| -> Option<Vec<i64>> {
        if let Some(t) = graph.initializer.iter().find(|t| t.name == name) {
            return int64s(t);
        }
        let node = &graph.node[*producer.get(name)?];
        (node.op_type == "Constant")
            .then(|| node.attribute.iter().find(|a| a.name == "value"))
            .flatten()
            .and_then(|a| a.t.as_ref())
            .and_then(int64s)
    };
    // A Slice of the last axis of a rank-3 tensor from `start` to `end`, with unit steps.
    let slice = |i: usize| -> Option<(i64, i64)> {
        let node = &graph.node[i];
        if node.op_type != "Slice" || node.input.len() < 4 || node.output.len() != 1 {
            return None;
        }
        let one = |k: usize| ints(&node.input[k]).filter(|v| v.len() == 1).map(|v| v[0]);
        let axis = one(3)?;
        let steps_ok = node.input.len() < 5 || node.input[4].is_empty() || one(4) == Some(1);
        ((axis == 2 || axis == -1) && steps_ok).then_some((one(1)?, one(2)?))
    };
    let only = |name: &str| -> Option<usize> {
        match consumers.get(name).map(|c| c.as_slice()) {
            Some([one]) if !graph_outputs.contains(name) => Some(*one),
            _ => None,
        }
    };
    // When exactly two nodes read `name`, one slicing `[0, k)` and one `[k, end)` with k > 0:
    // `(head, k, rest)`.
    let split = |name: &str| -> Option<(usize, i64, usize)> {
        let &[a, b] = consumers.get(name)?.as_slice() else {
            return None;
        };
        let (head, k, rest, range) = match (slice(a)?, slice(b)?) {
            ((0, k), r) => (a, k, b, r),
            (r, (0, k)) => (b, k, a, r),
            _ => return None,
        };
        (k > 0 && range == (k, OPEN_END) && !graph_outputs.contains(name))
            .then_some((head, k, rest))
    };
    // When the one reader of `known` is an Add of it and a value in `of`: the Add and that value.
    let added_to = |known: &str, of: &HashSet<&str>| -> Option<(usize, String)> {
        let i = only(known)?;
        let node = &graph.node[i];
        let other = match node.input.iter().map(|s| s.as_str()).collect::<Vec<_>>()[..] {
            [a, o] | [o, a] if a == known && of.contains(o) => o,
            _ => return None,
        };
        (node.op_type == "Add" && node.output.len() == 1).then(|| (i, other.to_string()))
    };
    for node in &graph.node {
        if node.op_type != "ConvTranspose" || node.output.len() != 1 {
            continue;
        }
        let y = node.output[0].as_str();
        // The head [0, tail), which the carried state is added to, and the rest [tail, end).
        let Some((head, tail, rest)) = split(y) else {
            continue;
        };
        let head_out = graph.node[head].output[0].as_str();
        let Some((add, state)) = added_to(head_out, &graph_inputs) else {
            continue;
        };
        let add_node = &graph.node[add];
        let (Some(concat), Some(concat2)) =
            (only(&add_node.output[0]), only(&graph.node[rest].output[0]))
        else {
            continue;
        };
        let cat = &graph.node[concat];
        let axis = cat.attribute.iter().find(|a| a.name == "axis").map(|a| a.i);
        if concat != concat2
            || cat.op_type != "Concat"
            || cat.input
                != [
                    add_node.output[0].clone(),
                    graph.node[rest].output[0].clone(),
                ]
            || !matches!(axis, Some(2) | Some(-1))
        {
            continue;
        }
        // The output [0, n), which gets the bias, and the next state [n, end).
        let Some((out_slice, n, state_slice)) = split(&cat.output[0]) else {
            continue;
        };
        let next_state = graph.node[state_slice].output[0].as_str();
        if !graph_outputs.contains(next_state) || consumers.contains_key(next_state) {
            continue;
        }
        let sliced = graph.node[out_slice].output[0].as_str();
        let Some((bias_add, bias)) = added_to(sliced, &constants) else {
            continue;
        };
        return Some(Found {
            nodes: [head, add, rest, concat, out_slice, bias_add, state_slice],
            y: y.to_string(),
            state,
            bias,
            tail,
            n,
        });
    }
    None
}

/// Replaces the pattern's bias Add by the fused node and drops the other six nodes (and the
/// Constant nodes only they used).
fn apply(graph: &mut GraphProto, f: Found) {
    let [_, _, _, _, _, bias_add, state_slice] = f.nodes;
    let output = graph.node[bias_add].output[0].clone();
    let next_state = graph.node[state_slice].output[0].clone();
    let name = graph.node[bias_add].name.clone();
    graph.node[bias_add] = NodeProto {
        name,
        op_type: OP_TYPE.into(),
        input: vec![f.y, f.state, f.bias],
        output: vec![output, next_state],
        attribute: vec![super::int_attr("tail", f.tail), super::int_attr("n", f.n)],
        ..Default::default()
    };
    let mut dropped: Vec<usize> = f.nodes.iter().copied().filter(|&i| i != bias_add).collect();
    dropped.sort_unstable();
    for &i in dropped.iter().rev() {
        graph.node.remove(i);
    }
    // Constants (slice bounds) nothing reads any more.
    let used: HashSet<String> = graph
        .node
        .iter()
        .flat_map(|n| n.input.iter().cloned())
        .chain(graph.output.iter().map(|o| o.name.clone()))
        .collect();
    graph
        .node
        .retain(|n| n.op_type != "Constant" || n.output.iter().any(|o| used.contains(o)));
}

/// The values of an INT64 tensor, from either of its encodings.
fn int64s(t: &TensorProto) -> Option<Vec<i64>> {
    const INT64: i32 = 7;
    if t.data_type != INT64 {
        return None;
    }
    if !t.int64_data.is_empty() {
        return Some(t.int64_data.clone());
    }
    t.raw_data.len().is_multiple_of(8).then(|| {
        t.raw_data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    })
}

pub(super) fn build(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let attr = |name: &str| -> TractResult<usize> {
        node.attribute
            .iter()
            .find(|a| a.name == name && a.i > 0)
            .map(|a| a.i as usize)
            .ok_or_else(|| format_err!("{OP_TYPE} without a positive {name}"))
    };
    Ok((
        expand(OverlapAddSpec {
            tail: attr("tail")?,
            n: attr("n")?,
        }),
        vec![],
    ))
}

/// Inference-side wrapper: types and shapes, then wires [`OverlapAdd`] with its bias.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct OverlapAddSpec {
    /// Samples carried from step to step.
    tail: usize,
    /// Samples output per step.
    n: usize,
}

impl Expansion for OverlapAddSpec {
    fn name(&self) -> StaticName {
        "OverlapAdd".into()
    }

    fn nboutputs(&self) -> TractResult<usize> {
        Ok(2)
    }

    fn rules<'r, 'p: 'r, 's: 'r>(
        &'s self,
        s: &mut Solver<'r>,
        inputs: &'p [TensorProxy],
        outputs: &'p [TensorProxy],
    ) -> InferenceResult {
        check_input_arity(inputs, 3)?;
        check_output_arity(outputs, 2)?;
        for t in inputs[..2].iter().chain(outputs) {
            s.equals(&t.datum_type, f32::datum_type())?;
            s.equals(&t.rank, 3)?;
        }
        for axis in 0..2 {
            s.equals(&outputs[0].shape[axis], &inputs[0].shape[axis])?;
            s.equals(&outputs[1].shape[axis], &inputs[0].shape[axis])?;
            s.equals(&inputs[1].shape[axis], &inputs[0].shape[axis])?;
        }
        s.equals(&inputs[0].shape[2], (self.n + self.tail).to_dim())?;
        s.equals(&inputs[1].shape[2], self.tail.to_dim())?;
        s.equals(&outputs[0].shape[2], self.n.to_dim())?;
        s.equals(&outputs[1].shape[2], self.tail.to_dim())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        let bias = model
            .outlet_fact(inputs[2])?
            .konst
            .clone()
            .ok_or_else(|| format_err!("{OP_TYPE}: the bias must be a constant"))?;
        let bias = bias.cast_to::<f32>()?;
        let bias = bias.try_as_plain_ram()?.as_slice::<f32>()?.to_vec();
        let channels = model.outlet_fact(inputs[0])?.shape[1]
            .to_usize()
            .map_err(|_| format_err!("{OP_TYPE} needs a concrete channel count"))?;
        ensure!(
            bias.len() == channels,
            "{OP_TYPE}: {} bias values for {channels} channels",
            bias.len()
        );
        let op = OverlapAdd {
            spec: *self,
            bias: Arc::new(bias),
        };
        model.wire_node(prefix, op, &inputs[..2])
    }
}

/// For `y` of `[N, C, n + tail]` and `state` of `[N, C, tail]`: `full = y` with `state` added to
/// its first `tail` samples; the output is `full[.., ..n] + bias[c]`, the next state
/// `full[.., n..]`.
#[derive(Debug, Clone, PartialEq)]
pub struct OverlapAdd {
    spec: OverlapAddSpec,
    bias: Arc<Vec<f32>>,
}

impl Eq for OverlapAdd {}

impl std::hash::Hash for OverlapAdd {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.spec.hash(h);
        self.bias.iter().for_each(|v| v.to_bits().hash(h));
    }
}

impl Op for OverlapAdd {
    fn name(&self) -> StaticName {
        "OverlapAdd".into()
    }
    op_as_typed_op!();
}

impl EvalOp for OverlapAdd {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let (n, tail) = (self.spec.n, self.spec.tail);
        let [streams, channels, len] = *inputs[0].shape() else {
            bail!("{OP_TYPE}: y of shape {:?}", inputs[0].shape())
        };
        ensure!(
            len == n + tail && inputs[1].shape() == [streams, channels, tail],
            "{OP_TYPE}: y {:?} and state {:?} for {n} + {tail} samples",
            inputs[0].shape(),
            inputs[1].shape()
        );
        ensure!(
            channels == self.bias.len(),
            "{OP_TYPE}: {channels} channels"
        );
        let (y, state) = (inputs[0].try_as_plain_ram()?, inputs[1].try_as_plain_ram()?);
        let (y, state) = (y.as_slice::<f32>()?, state.as_slice::<f32>()?);
        let mut out = Tensor::zero::<f32>(&[streams, channels, n])?;
        let mut next = Tensor::zero::<f32>(&[streams, channels, tail])?;
        {
            let (mut o, mut x) = (out.try_as_plain_ram_mut()?, next.try_as_plain_ram_mut()?);
            let (out, next) = (o.as_slice_mut::<f32>()?, x.as_slice_mut::<f32>()?);
            // The state overlaps the first `tail` samples of `y`: of the output, and of the next
            // state where the output is shorter than the overlap. Each range is a plain loop
            // the compiler vectorises.
            let head = tail.min(n);
            for (row, ((out, next), (y, s))) in out
                .chunks_exact_mut(n)
                .zip(next.chunks_exact_mut(tail))
                .zip(y.chunks_exact(len).zip(state.chunks_exact(tail)))
                .enumerate()
            {
                let b = self.bias[row % channels];
                for ((o, &y), &s) in out[..head].iter_mut().zip(&y[..head]).zip(&s[..head]) {
                    *o = (y + s) + b;
                }
                for (o, &y) in out[head..].iter_mut().zip(&y[head..n]) {
                    *o = y + b;
                }
                let overlap = tail.saturating_sub(n);
                for ((o, &y), &s) in next[..overlap].iter_mut().zip(&y[n..]).zip(&s[head..]) {
                    *o = y + s;
                }
                next[overlap..].copy_from_slice(&y[n + overlap..]);
            }
        }
        Ok(tvec!(out.into_tvalue(), next.into_tvalue()))
    }
}

impl TypedOp for OverlapAdd {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let shape = &inputs[0].shape;
        let (n, c) = (shape[0].clone(), shape[1].clone());
        Ok(tvec!(
            f32::fact([n.clone(), c.clone(), self.spec.n.to_dim()]),
            f32::fact([n, c, self.spec.tail.to_dim()])
        ))
    }
    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Engine;
    use crate::model::plan_from_facts;

    fn step_graph(model: &str, file: &str) -> Vec<u8> {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(model);
        std::fs::read(dir.join(file)).unwrap()
    }

    /// Every transposed conv of the step graphs is rewritten (the default model's decoder has
    /// five, the test model's as many as its decoder has), and the rewritten graph gives the same
    /// bits as tract running the exporter's nodes, over several steps that carry the state.
    #[test]
    fn decoder_steps_rewritten_and_bit_identical() {
        for (model, want) in [
            ("../models/default", Some(5)),
            ("../tests/data/tiny_causal_ds640/model_steps", None),
        ] {
            let bytes = step_graph(model, "decoder_step.onnx");
            let mut proto = tract_onnx::onnx()
                .proto_model_for_read(&mut &bytes[..])
                .unwrap();
            let graph = proto.graph.as_mut().unwrap();
            let convs = graph
                .node
                .iter()
                .filter(|n| n.op_type == "ConvTranspose")
                .count();
            let n = rewrite(graph);
            assert_eq!(n, want.unwrap_or(convs), "{model}");
            assert!(n >= 1 && n == convs, "{model}: {n} of {convs}");
            let fused = graph.node.iter().filter(|n| n.op_type == OP_TYPE).count();
            assert_eq!(fused, n, "{model}");
            let edit = |g: &mut GraphProto| {
                rewrite(g);
            };
            let ours = plan_from_facts(&bytes, &[], Engine::CPU, Some(&edit)).unwrap();
            let plain = plan_from_facts(&bytes, &[], Engine::CPU, None).unwrap();
            let shapes: Vec<Vec<usize>> = (0..plain.input_count())
                .map(|i| {
                    let fact = plain.input_fact(i).unwrap();
                    fact.shape.as_concrete().unwrap().to_vec()
                })
                .collect();
            let fresh = |step: usize, i: usize| {
                let len: usize = shapes[i].iter().product();
                let v: Vec<f32> = (0..len)
                    .map(|j| ((j * 7 + i * 3 + step * 11) as f32 * 0.31).cos())
                    .collect();
                Tensor::from_shape(&shapes[i], &v).unwrap().into_tvalue()
            };
            let mut states_a: Vec<TValue> = (1..shapes.len()).map(|i| fresh(0, i)).collect();
            let mut states_b = states_a.clone();
            for step in 0..4 {
                let x = fresh(step + 1, 0);
                let a = ours
                    .run(std::iter::once(x.clone()).chain(states_a).collect())
                    .unwrap();
                let b = plain
                    .run(std::iter::once(x).chain(states_b).collect())
                    .unwrap();
                for (k, (p, q)) in a.iter().zip(&b).enumerate() {
                    let (p, q) = (
                        super::super::values::<f32>(p),
                        super::super::values::<f32>(q),
                    );
                    assert!(
                        p.iter().zip(&q).all(|(u, v)| u.to_bits() == v.to_bits()),
                        "{model} step {step} output {k}"
                    );
                }
                states_a = a[1..].to_vec();
                states_b = b[1..].to_vec();
            }
        }
    }

    /// The op against the exporter's formula on a case where the state is longer than the
    /// output (the head reaches into the next state), with two streams.
    #[test]
    fn op_matches_the_formula() {
        let (streams, channels, n, tail) = (2, 3, 2, 5);
        let len = n + tail;
        let y: Vec<f32> = (0..streams * channels * len)
            .map(|i| (i as f32 * 0.7).sin())
            .collect();
        let s: Vec<f32> = (0..streams * channels * tail)
            .map(|i| (i as f32 * 1.3).cos())
            .collect();
        let bias = vec![0.25, -1.5, 3.0];
        let op = OverlapAdd {
            spec: OverlapAddSpec { tail, n },
            bias: Arc::new(bias.clone()),
        };
        let out = op
            .eval(
                &EvalContext::out_of_plan(),
                tvec!(
                    Tensor::from_shape(&[streams, channels, len], &y)
                        .unwrap()
                        .into_tvalue(),
                    Tensor::from_shape(&[streams, channels, tail], &s)
                        .unwrap()
                        .into_tvalue()
                ),
            )
            .unwrap();
        let (got, next) = (
            super::super::values::<f32>(&out[0]),
            super::super::values::<f32>(&out[1]),
        );
        for r in 0..streams * channels {
            let mut full = y[r * len..][..len].to_vec();
            for t in 0..tail {
                full[t] += s[r * tail + t];
            }
            for t in 0..n {
                assert_eq!(
                    got[r * n + t],
                    full[t] + bias[r % channels],
                    "row {r} t {t}"
                );
            }
            assert_eq!(&next[r * tail..][..tail], &full[n..], "row {r}");
        }
    }
}
