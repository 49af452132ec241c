//! Where the runtime changes what tract makes of a graph, and why. The ops and the batch passes
//! are for the CPU engine (the CUDA engine gets tract's standard ops, which are the ones it
//! translates); the mean-of-squares pass runs for both.
//!
//! * [`elu`]: ELU as one in-place op. tract-onnx expands ONNX `Elu` into five nodes (Exp, Sub,
//!   Mul, a comparison, Iff), each writing a fresh tensor: about a fifth of a streaming step of
//!   the default model (16 ELUs per step graph). The op computes the same expression,
//!   `0 < x ? x : alpha * (exp(x) - 1)`, with the same vectorised exp kernel in one pass, so its
//!   results are bit-identical to the expansion's.
//! * [`group_stats`]: GroupNorm(1, C) statistics, which the exporter reduces in float64 (a float32
//!   running sum over a 10 s input drifts by ~1e-3), as one op reading the float32 tensor twice,
//!   instead of a float64 copy, a float64 difference and two reductions: about a third of FunCodec's
//!   full-size offline decoder.
//! * [`mean_squares`]: with a concrete input length, tract fuses `square → sum → × 1/n` into one
//!   `MeanOfSquares` reduction that computes in float32 whatever its input type; a float64 variance
//!   then drifts as a float32 sum does (decoder output 3.7e-4 off FunCodec instead of 8e-6 on 10 s).
//!   The pass puts the float64 chain back after decluttering. (It is the safety net for graphs whose
//!   statistics `group_stats` does not recognise.)
//! * [`small_conv`]: step graphs' convolutions with at most 4 output channels (in a single
//!   stream's graphs also unstrided ones with few multiply-adds per sample) computed directly
//!   instead of as matrix products that waste most of tract's 16-row kernel or its packing.
//! * [`overlap_add`]: in a single stream's step graphs, each transposed conv's streaming
//!   overlap-add (seven slice, add and concat nodes the exporter writes) as one op.
//! * [`mat_vec`]: a single stream's products of a matrix with one vector (LSTMs, the convs on
//!   one sample at the bottleneck) on a [`crate::block_matrix::BlockMatrix`], read as 8-bit
//!   integers or halves when the weights are exported so, with fused multiply-adds; and its
//!   other convolutions (up to 512 output samples, transposed: input samples) as products with
//!   windows read in place, without tract's im2col copy or separate overlap-add pass.
//! * [`row_pad`]: padding along the last axis (FunCodec's reflect padding before every conv of
//!   its offline graphs) as one pass per row, instead of tract's fill, strided copy and
//!   column-by-column reflection.
//! * [`batch_layout`]: step graphs that run several streams at once get their convolutions as
//!   batch-one 2-D convolutions over a stream-second layout.
//! * [`batch_bias`]: in plans that run several streams at once, per-channel constants tiled over
//!   the batch so tract adds them in place instead of through its generic broadcasting path.

mod batch_bias;
pub(crate) mod batch_layout;
mod elu;
mod group_stats;
pub(crate) mod mat_vec;
mod mean_squares;
pub(crate) mod overlap_add;
pub(crate) mod row_pad;
pub(crate) mod small_conv;

pub use batch_bias::tile_batch_broadcasts;
pub use mean_squares::keep_f64_mean_of_squares;

use tract_onnx::prelude::*;

/// tract's ONNX front end with this runtime's ops registered.
pub fn onnx_for_cpu() -> tract_onnx::Onnx {
    let mut onnx = tract_onnx::onnx();
    onnx.op_register.insert("Elu", elu::elu);
    onnx.op_register
        .insert(group_stats::OP_TYPE, group_stats::build);
    onnx.op_register
        .insert(small_conv::OP_TYPE, small_conv::build);
    onnx.op_register
        .insert(overlap_add::OP_TYPE, overlap_add::build);
    onnx
}

/// Reads an ONNX graph for the CPU engine: GroupNorm statistics rewritten, then `edit` (if any),
/// then parsed with [`onnx_for_cpu`].
pub fn read_for_cpu(
    bytes: &[u8],
    edit: Option<&dyn Fn(&mut tract_onnx::pb::GraphProto)>,
) -> TractResult<InferenceModel> {
    let onnx = onnx_for_cpu();
    let mut proto = onnx.proto_model_for_read(&mut &bytes[..])?;
    if let Some(graph) = proto.graph.as_mut() {
        group_stats::rewrite(graph);
        if let Some(edit) = edit {
            edit(graph);
        }
    }
    onnx.model_for_proto_model(&proto)
}

/// Refuses a tensor an element-wise op of this module cannot compute in place: its output type
/// must be `want`.
fn require_dt(op: &str, t: &Tensor, out_dt: Option<DatumType>, want: DatumType) -> TractResult<()> {
    if out_dt.unwrap_or(t.datum_type()) == want {
        Ok(())
    } else {
        Err(TractError::msg(format!(
            "{op} supports {want:?} only, got {:?}",
            t.datum_type()
        )))
    }
}

/// An integer attribute of a node this runtime writes into a graph.
fn int_attr(name: &str, i: i64) -> tract_onnx::pb::AttributeProto {
    tract_onnx::pb::AttributeProto {
        name: name.into(),
        r#type: 2, // INT
        i,
        ..Default::default()
    }
}

/// A tensor's values, in order (for the tests).
#[cfg(test)]
fn values<T: Datum + Copy>(t: &Tensor) -> Vec<T> {
    t.to_plain_array_view::<T>()
        .unwrap()
        .iter()
        .copied()
        .collect()
}
