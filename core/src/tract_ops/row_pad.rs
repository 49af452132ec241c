//! Padding along the last axis as one pass per row.

use tract_onnx::prelude::*;
use tract_onnx::tract_core::internal::*;
use tract_onnx::tract_core::ops::array::{Pad, PadMode};

use crate::padding;

/// Pads the last axis of a float32 tensor by `before` and `after` values, reflected about the
/// row's ends (ONNX `reflect`: the end value itself is not repeated) or zeros, one row at a time
/// as the runtime pads a segment's input ([`padding::pad_rows`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RowPad {
    before: usize,
    after: usize,
    mode: padding::PadMode,
}

impl Op for RowPad {
    fn name(&self) -> StaticName {
        "RowPad".into()
    }
    op_as_typed_op!();
}

impl EvalOp for RowPad {
    op_out_of_plan!();

    fn eval(&self, _ctx: &EvalContext, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        let x = &inputs[0];
        let shape = x.shape();
        let n = *shape
            .last()
            .ok_or_else(|| TractError::msg("RowPad of a scalar"))?;
        if self.mode == padding::PadMode::Reflect && n <= self.before.max(self.after) {
            return Err(TractError::msg(format!(
                "reflect padding of {} and {} needs rows longer than that, got {n}",
                self.before, self.after
            )));
        }
        let width = n + self.before + self.after;
        let mut out_shape: TVec<usize> = shape.into();
        *out_shape.last_mut().expect("rank checked above") = width;
        // SAFETY: every value is written below, row by row.
        let mut out = unsafe { Tensor::uninitialized::<f32>(&out_shape)? };
        {
            let view = x.try_as_plain_ram()?;
            let xs = view.as_slice::<f32>()?;
            let mut plain = out.try_as_plain_ram_mut()?;
            let ys = plain.as_slice_mut::<f32>()?;
            padding::pad_rows(xs, n, ys, width, self.before, self.mode);
        }
        Ok(tvec!(out.into_tvalue()))
    }
}

impl TypedOp for RowPad {
    fn output_facts(&self, inputs: &[&TypedFact]) -> TractResult<TVec<TypedFact>> {
        let mut shape: TVec<TDim> = inputs[0].shape.iter().cloned().collect();
        let last = shape
            .last_mut()
            .ok_or_else(|| TractError::msg("RowPad of a scalar"))?;
        *last = last.clone() + (self.before + self.after).to_dim();
        Ok(tvec!(f32::fact(shape)))
    }
    as_op!();
}

/// Replaces every float32 `Pad` of a decluttered model that pads only the last axis, reflected
/// or with zeros, by [`RowPad`]. tract's `Pad` fills the output, assigns the input through a
/// strided view, then copies the padding one column at a time across all rows: 6–8 ms per
/// second of audio of FunCodec's full-size offline encoder (ten reflect pads). Returns how many
/// were replaced.
pub fn rewrite(model: &mut TypedModel) -> TractResult<usize> {
    let mut found = vec![];
    for node in model.nodes() {
        let Some(pad) = node.op_as::<Pad>() else {
            continue;
        };
        let fact = model.outlet_fact(node.inputs[0])?;
        let Some(((before, after), leading)) = pad.pads.split_last() else {
            continue;
        };
        let mode = match &pad.mode {
            PadMode::Reflect => padding::PadMode::Reflect,
            PadMode::Constant(c) if c.cast_to_scalar::<f32>().is_ok_and(|c| c == 0.0) => {
                padding::PadMode::Constant
            }
            _ => continue,
        };
        if fact.datum_type == f32::datum_type() && leading.iter().all(|&(a, b)| a == 0 && b == 0) {
            let op = RowPad {
                before: *before,
                after: *after,
                mode,
            };
            found.push((node.id, op));
        }
    }
    let count = found.len();
    for (id, op) in found {
        let node = model.node(id);
        let mut patch = TypedModelPatch::default();
        let x = patch.tap_model(model, node.inputs[0])?;
        let y = patch.wire_node(format!("{}.row_pad", node.name), op, &[x])?;
        patch.shunt_outside(model, id.into(), y[0])?;
        patch.apply(model)?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The op's rows equal tract's `Pad` for both modes, on pads shorter than and as long as the
    /// row allows, and a reflect pad longer than the row is an error, not a panic.
    #[test]
    fn row_pad_equals_tracts_pad() {
        let run = |model: TypedModel, x: &Tensor| -> TractResult<Vec<f32>> {
            let plan = model.into_optimized()?.into_runnable()?;
            let out = plan.run(tvec!(x.clone().into()))?;
            Ok(super::super::values::<f32>(&out[0]))
        };
        for (rows, n, before, after) in [(3, 9, 3, 3), (2, 5, 4, 1), (1, 4, 0, 2), (4, 7, 6, 6)] {
            let x = Tensor::from_shape(
                &[1, rows, n],
                &(0..rows * n)
                    .map(|i| (i as f32 * 0.37).sin())
                    .collect::<Vec<_>>(),
            )
            .unwrap();
            for mode in [PadMode::Reflect, PadMode::Constant(tensor0(0.0f32).into())] {
                let build = || {
                    let mut m = TypedModel::default();
                    let s = m.add_source("x", f32::fact([1, rows, n])).unwrap();
                    let pad = Pad::new(vec![(0, 0), (0, 0), (before, after)], mode.clone());
                    let y = m.wire_node("pad", pad, &[s]).unwrap();
                    m.select_output_outlets(&y).unwrap();
                    m.into_decluttered().unwrap()
                };
                let mut ours = build();
                assert_eq!(rewrite(&mut ours).unwrap(), 1);
                assert!(ours.nodes().iter().all(|n| !n.op_is::<Pad>()));
                assert_eq!(
                    run(ours, &x).unwrap(),
                    run(build(), &x).unwrap(),
                    "{rows}x{n} pad ({before}, {after}) {mode:?}"
                );
            }
        }
        let mut m = TypedModel::default();
        let s = m.add_source("x", f32::fact([1, 2, 3])).unwrap();
        let y = m
            .wire_node(
                "pad",
                Pad::new(vec![(0, 0), (0, 0), (3, 0)], PadMode::Reflect),
                &[s],
            )
            .unwrap();
        m.select_output_outlets(&y).unwrap();
        let mut m = m.into_decluttered().unwrap();
        rewrite(&mut m).unwrap();
        let x = Tensor::from_shape(&[1, 2, 3], &[0.0f32; 6]).unwrap();
        let err = run(m, &x).unwrap_err();
        assert!(format!("{err:#}").contains("longer"), "{err:#}");
    }
}
