//! Float64 mean of squares kept in float64 (see the module above for why).

use tract_onnx::prelude::*;
use tract_onnx::tract_core::ops::change_axes::wire_with_rank_broadcast;
use tract_onnx::tract_core::ops::element_wise::{ElementWiseMiniOp, ElementWiseOp};
use tract_onnx::tract_core::ops::math::mul;
use tract_onnx::tract_core::ops::nn::{Reduce, Reducer};

/// `x²` in float64, in place: the same values as tract's `Square`, under a name its
/// mean-of-squares fusion does not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SquareF64;

impl ElementWiseMiniOp for SquareF64 {
    fn name(&self) -> String {
        "SquareF64".into()
    }

    fn eval_in_place(&self, t: &mut Tensor, out_dt: Option<DatumType>) -> TractResult<()> {
        super::require_dt("SquareF64", t, out_dt, f64::datum_type())?;
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
            ElementWiseOp(Box::new(SquareF64), None),
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
            super::super::values::<f64>(&out[0])[0]
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
