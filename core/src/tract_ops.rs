//! Where the runtime changes what tract makes of a graph, and why.
//!
//! * [`FusedElu`]: ELU as one in-place op for the CPU engine. tract-onnx expands ONNX `Elu` into
//!   five nodes (Exp, Sub, Mul, a comparison, Iff), each writing a fresh tensor: about a fifth of a
//!   streaming step of the default model (16 ELUs per step graph). This op computes the same
//!   expression, `0 < x ? x : alpha * (exp(x) - 1)`, with the same vectorised exp kernel, in one
//!   pass over the tensor it receives, so its results are bit-identical to the expansion's. The
//!   CUDA engine keeps the expansion (its ops are the ones it translates).
//! * [`keep_f64_mean_of_squares`]: exported GroupNorm reduces its statistics in float64. With a
//!   concrete input length, tract fuses `square → sum → × 1/n` into one `MeanOfSquares` reduction,
//!   which computes in float32 whatever its input type: the variance over a 10 s utterance then
//!   drifts as a float32 running sum does (decoder output 3.7e-4 off FunCodec instead of 8e-6).
//!   The pass puts the float64 chain back after decluttering, with a square op the fusion rule does
//!   not recognise.

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_onnx::tract_core::ops::element_wise::{self as core_ew, ElementWiseMiniOp};
use tract_onnx::tract_core::ops::math::mul;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};
use tract_onnx::tract_hir::internal::{InferenceOp, expand};
use tract_onnx::tract_hir::ops::element_wise::ElementWiseOp;

use tract_linalg::routines::Func;

thread_local! {
    static SCRATCH: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

#[derive(Debug, Clone, PartialEq)]
pub struct FusedElu {
    pub alpha: f32,
}

// alpha comes from the graph and is never NaN; tract's op equality needs Eq.
impl Eq for FusedElu {}

impl ElementWiseMiniOp for FusedElu {
    fn name(&self) -> String {
        "FusedElu".into()
    }

    fn eval_in_place(&self, t: &mut Tensor, out_dt: Option<DatumType>) -> TractResult<()> {
        if out_dt.unwrap_or(t.datum_type()) != f32::datum_type() {
            return Err(TractError::msg(format!(
                "FusedElu supports f32 only, got {:?}",
                t.datum_type()
            )));
        }
        let exp = Func::Exp.ew_f32()?;
        let mut plain = t.try_as_plain_ram_mut()?;
        let xs = plain.as_slice_mut::<f32>()?;
        // One kernel call over a copy (the kernel's per-call cost is high for small pieces); the
        // scratch is per thread and only grows, so the steady state does not allocate.
        SCRATCH.with(|scratch| -> TractResult<()> {
            let mut e = scratch.borrow_mut();
            e.clear();
            e.extend_from_slice(xs);
            exp.run(&mut e)?;
            // A select, not a branch: the sign of speech activations is unpredictable.
            for (x, &ex) in xs.iter_mut().zip(e.iter()) {
                let neg = self.alpha * (ex - 1.0);
                *x = if 0.0 < *x { *x } else { neg };
            }
            Ok(())
        })?;
        Ok(())
    }
}

fn elu(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let alpha = node.get_attr_opt("alpha")?.unwrap_or(1.0);
    Ok((expand(ElementWiseOp(Box::new(FusedElu { alpha }))), vec![]))
}

/// tract's ONNX front end with ELU fused (for graphs the CPU engine will run).
pub fn onnx_with_fused_elu() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register.insert("Elu", elu);
    onnx
}

/// `x²` in float64, in place: the same values as tract's `Square`, under a name its
/// mean-of-squares fusion does not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SquareF64;

impl ElementWiseMiniOp for SquareF64 {
    fn name(&self) -> String {
        "SquareF64".into()
    }

    fn eval_in_place(&self, t: &mut Tensor, out_dt: Option<DatumType>) -> TractResult<()> {
        if out_dt.unwrap_or(t.datum_type()) != f64::datum_type() {
            return Err(TractError::msg(format!(
                "SquareF64 supports f64 only, got {:?}",
                t.datum_type()
            )));
        }
        let mut plain = t.try_as_plain_ram_mut()?;
        for x in plain.as_slice_mut::<f64>()? {
            *x *= *x;
        }
        Ok(())
    }
}

/// Replaces every float64 `MeanOfSquares` reduction in a decluttered model by
/// `SquareF64 → Sum → × (1 / n)` in float64 (what the ONNX `ReduceMean(x * x)` says). Run it
/// between decluttering and optimising; the optimiser's own declutter pass leaves the chain alone.
pub fn keep_f64_mean_of_squares(model: &mut TypedModel) -> TractResult<()> {
    let targets: Vec<usize> = model
        .nodes()
        .iter()
        .filter(|n| {
            n.op_as::<Reduce>()
                .is_some_and(|r| r.reducer == Reducer::MeanOfSquares)
                && model
                    .outlet_fact(n.inputs[0])
                    .is_ok_and(|f| f.datum_type == f64::datum_type())
        })
        .map(|n| n.id)
        .collect();
    for id in targets {
        let node = model.node(id);
        let reduce = node.op_as::<Reduce>().expect("filtered above");
        let fact = model.outlet_fact(node.inputs[0])?;
        let mut n = 1usize;
        for &ax in &reduce.axes {
            let len = fact.shape[ax]
                .as_i64()
                .filter(|&l| l > 0)
                .ok_or_else(|| TractError::msg("mean of squares over a symbolic length"))?;
            n *= len as usize;
        }
        let name = node.name.clone();
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, node.inputs[0])?;
        let sq = patch.wire_node(
            format!("{name}.square_f64"),
            core_ew::ElementWiseOp(Box::new(SquareF64), None),
            &[x],
        )?;
        let sum = patch.wire_node(
            format!("{name}.sum_f64"),
            Reduce::new(reduce.axes.clone(), Reducer::Sum),
            &sq,
        )?;
        let inv_n = patch.add_const(format!("{name}.inv_n"), tensor0(1.0f64 / n as f64))?;
        let mean = wire_with_rank_broadcast(
            format!("{name}.mean_f64"),
            &mut patch,
            mul(),
            &[sum[0], inv_n],
        )?;
        patch.shunt_outside(model, id.into(), mean[0])?;
        patch.apply(model)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tract_onnx::tract_hir::ops::activations::Elu;

    fn run_op(op: Box<dyn InferenceOp>, xs: &[f32]) -> Vec<f32> {
        let mut model = InferenceModel::default();
        let x = model.add_source("x", f32::fact([xs.len()]).into()).unwrap();
        let y = model.wire_node("elu", op, &[x]).unwrap();
        model.select_output_outlets(&y).unwrap();
        let plan = model.into_optimized().unwrap().into_runnable().unwrap();
        let out = plan
            .run(tvec!(Tensor::from_shape(&[xs.len()], xs).unwrap().into()))
            .unwrap();
        out[0]
            .to_plain_array_view::<f32>()
            .unwrap()
            .iter()
            .copied()
            .collect()
    }

    fn same_bits(a: &[f32], b: &[f32]) -> bool {
        a.len() == b.len()
            && a.iter()
                .zip(b)
                .all(|(x, y)| x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()))
    }

    /// The fused op against tract's own five-node expansion, bit for bit, across chunk borders.
    #[test]
    fn matches_tracts_expansion_exactly() {
        let xs: Vec<f32> = (0..1000)
            .map(|i| (i as f32 - 500.0) * 0.037)
            .chain([
                0.0,
                -0.0,
                1e-30,
                -1e-30,
                -100.0,
                88.0,
                f32::NAN,
                f32::NEG_INFINITY,
            ])
            .collect();
        for alpha in [1.0, 0.7] {
            let fused = run_op(expand(ElementWiseOp(Box::new(FusedElu { alpha }))), &xs);
            let expanded = run_op(expand(Elu(alpha)), &xs);
            assert!(same_bits(&fused, &expanded), "alpha {alpha}");
        }
    }

    /// A whole step graph (16 ELUs) read through both front ends gives the same bits.
    #[test]
    fn step_graph_unchanged() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/data/tiny_causal_ds640/model_steps/decoder_step.onnx"
        );
        let outputs = |onnx: tract_onnx::Onnx| -> Vec<Vec<f32>> {
            let model = onnx.model_for_path(path).unwrap();
            let plan = model.into_optimized().unwrap().into_runnable().unwrap();
            let inputs: TVec<TValue> = (0..plan.input_count())
                .map(|i| {
                    let fact = plan.model().input_fact(i).unwrap();
                    let shape: Vec<usize> = fact.shape.as_concrete().unwrap().to_vec();
                    let n: usize = shape.iter().product();
                    let data: Vec<f32> = (0..n)
                        .map(|k| ((k * 7919 + i) % 997) as f32 / 300.0 - 1.6)
                        .collect();
                    Tensor::from_shape(&shape, &data).unwrap().into()
                })
                .collect();
            plan.run(inputs)
                .unwrap()
                .iter()
                .map(|t| {
                    t.to_plain_array_view::<f32>()
                        .unwrap()
                        .iter()
                        .copied()
                        .collect()
                })
                .collect()
        };
        let fused = outputs(onnx_with_fused_elu());
        let expanded = outputs(tract_onnx::onnx());
        assert_eq!(fused.len(), expanded.len());
        for (a, b) in fused.iter().zip(&expanded) {
            assert!(same_bits(a, b));
        }
    }

    /// A float64 mean of squares over a concrete length: tract fuses it into its float32
    /// reduction (the precondition, checked), and the pass restores float64.
    #[test]
    fn mean_of_squares_stays_f64() {
        use tract_onnx::tract_core::ops::math::square;
        let n = 200_000usize;
        // A large offset makes a float32 sum of squares lose digits.
        let xs: Vec<f64> = (0..n)
            .map(|i| 1000.0 + ((i * 7919) % 1001) as f64 * 1e-3)
            .collect();
        let exact = xs.iter().map(|x| x * x).sum::<f64>() / n as f64;
        let build = || -> TypedModel {
            let mut m = TypedModel::default();
            let x = m.add_source("x", f64::fact([1, n])).unwrap();
            let sq = m.wire_node("sq", square(), &[x]).unwrap();
            let sum = m
                .wire_node("sum", Reduce::new(tvec!(1), Reducer::Sum), &sq)
                .unwrap();
            let k = m.add_const("inv_n", tensor0(1.0f64 / n as f64)).unwrap();
            let mean = wire_with_rank_broadcast("mean", &mut m, mul(), &[sum[0], k]).unwrap();
            m.select_output_outlets(&mean).unwrap();
            m.into_decluttered().unwrap()
        };
        let run = |m: TypedModel| -> f64 {
            let plan = m.into_optimized().unwrap().into_runnable().unwrap();
            let x = Tensor::from_shape(&[1, n], &xs).unwrap();
            let out = plan.run(tvec!(x.into())).unwrap();
            *out[0]
                .to_plain_array_view::<f64>()
                .unwrap()
                .iter()
                .next()
                .unwrap()
        };
        let fused = build();
        let is_mos = |m: &TypedModel| {
            m.nodes().iter().any(|n| {
                n.op_as::<Reduce>()
                    .is_some_and(|r| r.reducer == Reducer::MeanOfSquares)
            })
        };
        assert!(
            is_mos(&fused),
            "tract no longer fuses: this pass may be unnecessary"
        );
        let lossy = ((run(fused) - exact) / exact).abs();
        assert!(
            lossy > 1e-9,
            "tract's fused reduction is exact now ({lossy:e})"
        );

        let mut fixed = build();
        keep_f64_mean_of_squares(&mut fixed).unwrap();
        assert!(!is_mos(&fixed));
        let err = ((run(fixed) - exact) / exact).abs();
        assert!(
            err < 1e-13,
            "relative error {err:e} (tract's float32 reduction: {lossy:e})"
        );
    }
}
