//! ELU as one in-place op (see the module above for why).

use tract_onnx::model::ParsingContext;
use tract_onnx::pb::NodeProto;
use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::element_wise::ElementWiseMiniOp;
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
        super::require_dt("FusedElu", t, out_dt, f32::datum_type())?;
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

pub(super) fn elu(
    _ctx: &ParsingContext,
    node: &NodeProto,
) -> TractResult<(Box<dyn InferenceOp>, Vec<String>)> {
    let alpha = node.get_attr_opt("alpha")?.unwrap_or(1.0);
    Ok((expand(ElementWiseOp(Box::new(FusedElu { alpha }))), vec![]))
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
        super::super::values(&out[0])
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
                .map(|t| super::super::values(t))
                .collect()
        };
        let fused = outputs(super::super::onnx_for_cpu());
        let expanded = outputs(tract_onnx::onnx());
        assert_eq!(fused.len(), expanded.len());
        for (a, b) in fused.iter().zip(&expanded) {
            assert!(same_bits(a, b));
        }
    }
}
