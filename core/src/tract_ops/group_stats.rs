//! GroupNorm(1, C) statistics as one float64 op (see the module above for why).

use std::collections::{HashMap, HashSet};

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::{GraphProto, NodeProto};
use tract_onnx::tract_hir::internal::*;

/// The op type the rewritten graphs name (not an ONNX op; only this runtime reads it).
pub(super) const OP_TYPE: &str = "FuncodecGroupStatsF64";

/// The chain the exporter writes for GroupNorm(1, C) statistics of `x` (float32, `[B, C, T]`):
/// `d = Cast<f64>(x); m = ReduceMean(d, axes [1, 2]); c = Sub(d, m); v = ReduceMean(Mul(c, c),
/// axes [1, 2])`. Each match whose intermediates nothing else reads becomes one node
/// `(m, v) = FuncodecGroupStatsF64(x)`. Returns how many were rewritten.
pub(super) fn rewrite(graph: &mut GraphProto) -> usize {
    let chains = find_chains(graph);
    let mut remove = HashSet::new();
    for (cast_ix, others, fused) in &chains {
        graph.node[*cast_ix] = fused.clone();
        remove.extend(others.iter().copied());
    }
    let mut ix = 0;
    graph.node.retain(|_| {
        ix += 1;
        !remove.contains(&(ix - 1))
    });
    chains.len()
}

fn attr_i(node: &NodeProto, name: &str) -> Option<i64> {
    node.attribute.iter().find(|a| a.name == name).map(|a| a.i)
}

fn attr_ints<'a>(node: &'a NodeProto, name: &str) -> Option<&'a [i64]> {
    node.attribute
        .iter()
        .find(|a| a.name == name)
        .map(|a| &a.ints[..])
}

/// A ReduceMean over axes 1 and 2 keeping dimensions, reading `input`.
fn is_mean_12(node: &NodeProto, input: &str) -> bool {
    node.op_type == "ReduceMean"
        && node.input.len() == 1
        && node.input[0] == input
        && attr_ints(node, "axes") == Some(&[1, 2])
        && attr_i(node, "keepdims").unwrap_or(1) == 1
}

/// Stands for "a graph output" among a value's readers: such a value must stay.
const GRAPH_OUTPUT: usize = usize::MAX;

/// Every chain to rewrite: (index of its Cast, indices of its other four nodes, the new node).
/// Chains never share a node: each intermediate has its chain's nodes as its only readers.
fn find_chains(graph: &GraphProto) -> Vec<(usize, [usize; 4], NodeProto)> {
    let mut readers: HashMap<&str, Vec<usize>> = HashMap::new();
    for (ix, n) in graph.node.iter().enumerate() {
        for i in &n.input {
            let r = readers.entry(i.as_str()).or_default();
            if r.last() != Some(&ix) {
                r.push(ix); // a node reading a value twice (Mul(c, c)) counts once
            }
        }
    }
    for o in &graph.output {
        readers
            .entry(o.name.as_str())
            .or_default()
            .push(GRAPH_OUTPUT);
    }
    let readers = |name: &str| readers.get(name).map_or(&[][..], |r| &r[..]);
    const DOUBLE: i64 = 11;
    let mut chains = Vec::new();
    for (cast_ix, cast) in graph.node.iter().enumerate() {
        if cast.op_type != "Cast" || attr_i(cast, "to") != Some(DOUBLE) || cast.output.len() != 1 {
            continue;
        }
        let d = &cast.output[0];
        let rd = readers(d);
        if rd.len() != 2 || rd.contains(&GRAPH_OUTPUT) {
            continue;
        }
        let Some(&mean_ix) = rd.iter().find(|&&ix| is_mean_12(&graph.node[ix], d)) else {
            continue;
        };
        let m = &graph.node[mean_ix].output[0];
        let Some(&sub_ix) = rd.iter().find(|&&ix| ix != mean_ix) else {
            continue;
        };
        let sub = &graph.node[sub_ix];
        if sub.op_type != "Sub" || sub.input[..] != [d.clone(), m.clone()] {
            continue;
        }
        let c = &sub.output[0];
        let &[mul_ix] = readers(c) else { continue };
        if mul_ix == GRAPH_OUTPUT {
            continue;
        }
        let mul = &graph.node[mul_ix];
        if mul.op_type != "Mul" || mul.input[..] != [c.clone(), c.clone()] {
            continue;
        }
        let s = &mul.output[0];
        let &[var_ix] = readers(s) else { continue };
        if var_ix == GRAPH_OUTPUT || !is_mean_12(&graph.node[var_ix], s) {
            continue;
        }
        let fused = NodeProto {
            name: format!("{}.group_stats_f64", cast.name),
            op_type: OP_TYPE.into(),
            input: vec![cast.input[0].clone()],
            output: vec![m.clone(), graph.node[var_ix].output[0].clone()],
            ..Default::default()
        };
        chains.push((cast_ix, [mean_ix, sub_ix, mul_ix, var_ix], fused));
    }
    chains
}

pub(super) fn build(
    _ctx: &ParsingContext,
    _node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    Ok((expand(GroupStats), vec![]))
}

/// Inference-side wrapper: types and shapes, then wires [`GroupStatsF64`].
#[derive(Debug, Clone)]
struct GroupStats;

impl Expansion for GroupStats {
    fn name(&self) -> StaticName {
        "GroupStats".into()
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
        check_input_arity(inputs, 1)?;
        check_output_arity(outputs, 2)?;
        s.equals(&inputs[0].datum_type, f32::datum_type())?;
        s.equals(&inputs[0].rank, 3)?;
        for o in outputs {
            s.equals(&o.datum_type, f64::datum_type())?;
            s.equals(&o.rank, 3)?;
            s.equals(&o.shape[0], &inputs[0].shape[0])?;
            s.equals(&o.shape[1], 1.to_dim())?;
            s.equals(&o.shape[2], 1.to_dim())?;
        }
        Ok(())
    }

    fn wire(
        &self,
        prefix: &str,
        model: &mut TypedModel,
        inputs: &[OutletId],
    ) -> TractResult<TVec<OutletId>> {
        model.wire_node(prefix, GroupStatsF64, inputs)
    }
}

/// Mean and (biased) variance of each batch item of a float32 `[B, C, T]` tensor over C and T,
/// accumulated in float64 in two passes, without a float64 copy of the tensor.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupStatsF64;

/// Independent partial sums: they vectorise, and keep each sum's rounding error small.
const LANES: usize = 8;

fn sum_f64(xs: &[f32], f: impl Fn(f64) -> f64) -> f64 {
    let mut acc = [0.0f64; LANES];
    let chunks = xs.chunks_exact(LANES);
    let rest = chunks.remainder();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += f(x as f64);
        }
    }
    let mut total: f64 = acc.iter().sum();
    for &x in rest {
        total += f(x as f64);
    }
    total
}

impl Op for GroupStatsF64 {
    fn name(&self) -> StaticName {
        "GroupStatsF64".into()
    }
    op_as_typed_op!();
}

impl EvalOp for GroupStatsF64 {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let shape = x.shape();
        if shape.len() != 3 {
            return Err(TractError::msg(format!(
                "GroupStatsF64 needs rank 3, got {shape:?}"
            )));
        }
        let (b, n) = (shape[0], shape[1] * shape[2]);
        let view = x.try_as_plain_ram()?;
        let xs = view.as_slice::<f32>()?;
        let (mut means, mut vars) = (Vec::with_capacity(b), Vec::with_capacity(b));
        for item in xs.chunks_exact(n.max(1)).take(b) {
            let mean = sum_f64(item, |v| v) / n as f64;
            let var = sum_f64(item, |v| (v - mean) * (v - mean)) / n as f64;
            means.push(mean);
            vars.push(var);
        }
        let mean = Tensor::from_shape(&[b, 1, 1], &means)?;
        let var = Tensor::from_shape(&[b, 1, 1], &vars)?;
        Ok(tvec!(mean.into_tvalue(), var.into_tvalue()))
    }
}

impl TypedOp for GroupStatsF64 {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let b = inputs[0].shape[0].clone();
        let shape = [b, 1.to_dim(), 1.to_dim()];
        Ok(tvec!(f64::fact(shape.clone()), f64::fact(shape)))
    }
    as_op!();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Engine;
    use crate::model::{Plan, plan_from_bytes};
    use tract_onnx::prelude::Framework;

    const GN_MODEL: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/tiny_gn_ds640/model"
    );

    fn run(plan: Plan, x: &Tensor) -> Vec<f32> {
        super::super::values(&plan.run(tvec!(x.clone().into())).unwrap()[0])
    }

    /// The exporter's GroupNorm graphs: every statistics chain is found, and the graph computes
    /// what tract's own ops compute (float64 either way, so only the last bits may differ).
    #[test]
    fn gn_graphs_rewritten_and_unchanged() {
        for (file, channels, len) in [("encoder_1.onnx", 4, 9000), ("decoder.onnx", 32, 150)] {
            let bytes = std::fs::read(format!("{GN_MODEL}/{file}")).unwrap();
            let mut proto = tract_onnx::onnx()
                .proto_model_for_read(&mut &bytes[..])
                .unwrap();
            let casts = |g: &GraphProto| g.node.iter().filter(|n| n.op_type == "Cast").count();
            let graph = proto.graph.as_mut().unwrap();
            let before = casts(graph);
            let n = rewrite(graph);
            assert!(n > 0, "{file}: no GroupNorm statistics found");
            assert_eq!(
                casts(graph),
                before - n,
                "{file}: one Cast<f64> per chain goes"
            );
            assert_eq!(rewrite(graph), 0, "{file}: a second pass finds nothing");

            let data: Vec<f32> = (0..channels * len)
                .map(|i| ((i * 7919 % 1009) as f32 / 500.0 - 1.0) + 3.0)
                .collect();
            let x = Tensor::from_shape(&[1, channels, len], &data).unwrap();
            for concrete in [false, true] {
                let shape = concrete.then_some(x.shape());
                // The runtime's own path, against tract's front end through the same engine.
                let ours = run(plan_from_bytes(&bytes, shape, Engine::CPU).unwrap(), &x);
                let mut plain = tract_onnx::onnx().model_for_read(&mut &bytes[..]).unwrap();
                if let Some(shape) = shape {
                    plain = plain.with_input_fact(0, f32::fact(shape).into()).unwrap();
                }
                let plain = run(Engine::CPU.prepare(plain).unwrap(), &x);
                assert_eq!(ours.len(), plain.len());
                let scale = plain.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let diff = ours
                    .iter()
                    .zip(&plain)
                    .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
                assert!(
                    diff <= 1e-6 * scale,
                    "{file} concrete={concrete}: {diff} (scale {scale})"
                );
            }
        }
    }

    /// The op against a direct float64 computation, with an offset that float32 sums would lose.
    #[test]
    fn stats_are_float64() {
        let (c, t) = (3, 50_001);
        let data: Vec<f32> = (0..2 * c * t)
            .map(|i| 1000.0 + (i % 977) as f32 * 0.01)
            .collect();
        let x = Tensor::from_shape(&[2, c, t], &data).unwrap();
        let out = GroupStatsF64
            .eval(&EvalContext::out_of_plan(), tvec!(x.into_tvalue()))
            .unwrap();
        let (got_mean, got_var) = (
            super::super::values::<f64>(&out[0]),
            super::super::values::<f64>(&out[1]),
        );
        for (b, item) in data.chunks(c * t).enumerate() {
            let n = item.len() as f64;
            let mean = item.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = item.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            assert!((got_mean[b] - mean).abs() <= 1e-12 * mean.abs(), "mean {b}");
            assert!(
                (got_var[b] - var).abs() <= 1e-9 * var,
                "var {b}: {} vs {var}",
                got_var[b]
            );
        }
    }
}
