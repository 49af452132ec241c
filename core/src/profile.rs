//! Per-node run times of tract plans, for `funcodec bench --profile`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::eval;
use tract_onnx::tract_core::runtime::State;

/// Node name → (op name, runs, total time).
pub type NodeTimes = BTreeMap<String, (String, usize, Duration)>;

/// Runs `exec` on `inputs`, adding each node's run time to `times` under `prefix` + its name (a
/// prefix keeps apart the nodes of graphs that share names, like the encoder's segments). CPU
/// engine only: other engines' states are not tract's simple state.
pub(crate) fn run_timed(
    exec: &mut dyn State,
    inputs: TVec<TValue>,
    times: &mut NodeTimes,
    prefix: &str,
) -> TractResult<TVec<TValue>> {
    let Some(state) = exec.downcast_mut::<TypedSimpleState>() else {
        return Err(TractError::msg("profiling needs the CPU engine"));
    };
    state.run_plan_with_eval(inputs, |ctx, op_state, node, inputs| {
        let t = Instant::now();
        let out = eval(ctx, op_state, node, inputs);
        let e = times
            .entry(format!("{prefix}{}", node.name))
            .or_insert_with(|| (node.op().name().to_string(), 0, Duration::ZERO));
        e.1 += 1;
        e.2 += t.elapsed();
        out
    })
}
