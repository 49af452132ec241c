//! Step graphs: one frame in, one frame out, with every piece of history passed as explicit state.
//!
//! The graph (shared, immutable, one per model) is separate from the per-stream [`StepRunner`], which
//! owns the state tensors and tract's execution state, so one loaded model serves any number of streams.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tract_onnx::prelude::*;
use tract_onnx::tract_core::plan::eval;
use tract_onnx::tract_core::runtime::State;

use crate::backend::Engine;
use crate::error::{Error, Result};
use crate::manifest::{Manifest, StepGraphInfo};
use crate::model::{Plan, load_plan};

pub struct StepGraph {
    plan: Plan,
    states: Vec<Vec<usize>>,
    in_shape: Vec<usize>,
    in_len: usize,
    out_len: usize,
    stage: &'static str,
    /// Bytes of state one stream carries through this graph.
    pub state_bytes: usize,
}

impl StepGraph {
    pub(crate) fn load(
        manifest: &Manifest,
        dir: &Path,
        info: &StepGraphInfo,
        stage: &'static str,
        engine: Engine,
    ) -> Result<StepGraph> {
        let plan = load_plan(manifest, dir, &info.file, engine)?;
        let (n_in, n_out) = (plan.input_count(), plan.output_count());
        if n_in != 1 + info.states.len() || n_out != 1 + info.states.len() {
            return Err(Error::ModelFile {
                path: dir.to_path_buf(),
                file: info.file.clone(),
                msg: format!(
                    "graph has {n_in} inputs and {n_out} outputs, manifest lists {} states",
                    info.states.len()
                ),
            });
        }
        let states: Vec<Vec<usize>> = info.states.iter().map(|s| s.shape.clone()).collect();
        let state_bytes = states.iter().map(|s| s.iter().product::<usize>() * 4).sum();
        Ok(StepGraph {
            plan,
            in_len: info.in_shape.iter().product(),
            out_len: info.out_shape.iter().product(),
            in_shape: info.in_shape.clone(),
            states,
            stage,
            state_bytes,
        })
    }

    pub fn in_len(&self) -> usize {
        self.in_len
    }
    pub fn out_len(&self) -> usize {
        self.out_len
    }

    /// A fresh stream through this graph, starting from zero state (the stream start).
    pub fn start(&self) -> Result<StepRunner> {
        let exec = self.plan.spawn().map_err(|e| self.err(e))?;
        let mut r = StepRunner {
            exec,
            states: Vec::with_capacity(self.states.len()),
        };
        self.zero(&mut r)?;
        Ok(r)
    }

    fn zero(&self, r: &mut StepRunner) -> Result<()> {
        r.states.clear();
        for shape in &self.states {
            r.states
                .push(Tensor::zero::<f32>(shape).map_err(|e| self.err(e))?);
        }
        Ok(())
    }

    fn err(&self, e: TractError) -> Error {
        self.msg(format!("{e:#}"))
    }

    fn msg(&self, msg: String) -> Error {
        Error::Inference {
            stage: self.stage.into(),
            msg,
        }
    }

    /// Runs one step: `x` (in_len values) in, `out` (out_len values) out, state advanced.
    /// On failure the stream is reset to zero state so that it stays usable.
    pub fn step(&self, r: &mut StepRunner, x: &[f32], out: &mut [f32]) -> Result<()> {
        self.step_with(r, x, out, |exec, inputs| exec.run(inputs))
    }

    /// One step, like [`Self::step`], adding each graph node's run time to `profile` under its
    /// op's name (count, total). For `funcodec bench --profile`; CPU engine only.
    pub fn step_profiled(
        &self,
        r: &mut StepRunner,
        x: &[f32],
        out: &mut [f32],
        profile: &mut BTreeMap<String, (usize, Duration)>,
    ) -> Result<()> {
        self.step_with(r, x, out, |exec, inputs| {
            let Some(state) = exec.downcast_mut::<TypedSimpleState>() else {
                return Err(TractError::msg("profiling needs the CPU engine"));
            };
            state.run_plan_with_eval(inputs, |ctx, op_state, node, inputs| {
                let t = Instant::now();
                let out = eval(ctx, op_state, node, inputs);
                let e = profile.entry(node.op().name().to_string()).or_default();
                e.0 += 1;
                e.1 += t.elapsed();
                out
            })
        })
    }

    fn step_with(
        &self,
        r: &mut StepRunner,
        x: &[f32],
        out: &mut [f32],
        run: impl FnOnce(&mut dyn State, TVec<TValue>) -> TractResult<TVec<TValue>>,
    ) -> Result<()> {
        debug_assert_eq!(x.len(), self.in_len);
        debug_assert_eq!(out.len(), self.out_len);
        let result = self.try_step(r, x, out, run);
        if result.is_err() || r.states.len() != self.states.len() {
            self.zero(r)?;
        }
        result
    }

    fn try_step(
        &self,
        r: &mut StepRunner,
        x: &[f32],
        out: &mut [f32],
        run: impl FnOnce(&mut dyn State, TVec<TValue>) -> TractResult<TVec<TValue>>,
    ) -> Result<()> {
        let input = Tensor::from_shape(&self.in_shape, x).map_err(|e| self.err(e))?;
        let mut inputs: TVec<TValue> = TVec::with_capacity(1 + self.states.len());
        inputs.push(input.into());
        inputs.extend(r.states.drain(..).map(TValue::from));
        let outputs = run(r.exec.as_mut(), inputs).map_err(|e| self.err(e))?;
        let mut outputs = outputs.into_iter();
        let y = outputs.next().ok_or_else(|| self.msg("no output".into()))?;
        let view = y.try_as_plain_ram().map_err(|e| self.err(e))?;
        let y = view.as_slice::<f32>().map_err(|e| self.err(e))?;
        if y.len() != out.len() {
            return Err(self.msg(format!(
                "output has {} values, expected {}",
                y.len(),
                out.len()
            )));
        }
        out.copy_from_slice(y);
        r.states.extend(outputs.map(|t| t.into_tensor()));
        Ok(())
    }

    pub fn reset(&self, r: &mut StepRunner) -> Result<()> {
        self.zero(r)
    }
}

/// Per-stream execution state of one step graph.
pub struct StepRunner {
    exec: Box<dyn State>,
    states: Vec<Tensor>,
}
